//! The command line itself: argument shapes, usage errors, change detection and the auxiliary
//! commands. Fidelity of what is copied lives in fidelity.rs.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;

use common::*;

#[test]
fn version_prints_name_and_version() {
    let a = run(["--version"]);
    expect_code(&a, 0);
    assert_eq!(
        stdout_of(&a),
        format!("blit {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef blit"),
        ("fish", "complete -c blit"),
    ] {
        let a = run(["completions", shell]);
        expect_code(&a, 0);
        let out = stdout_of(&a);
        assert!(out.contains(marker), "{shell} completion lacks {marker:?}");
        // A completion script that does not know the subcommands is useless.
        for sub in ["copy", "mirror", "move"] {
            assert!(out.contains(sub), "{shell} completion lacks {sub:?}");
        }
    }
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    expect_code(&run(["completions", "no-such-shell"]), 2);
}

#[test]
fn man_prints_a_roff_page() {
    let a = run(["man"]);
    expect_code(&a, 0);
    let out = stdout_of(&a);
    // The contract says the page starts with `.TH`; generators commonly emit roff requests
    // (`.ie`/`.el` string definitions) before it, which man(1) treats the same, so only roff
    // requests may precede the title line.
    let th = out
        .lines()
        .position(|l| l.starts_with(".TH"))
        .unwrap_or_else(|| panic!("no .TH line in man output:\n{out}"));
    assert!(
        out.lines()
            .take(th)
            .all(|l| l.starts_with('.') || l.starts_with('\'')),
        "text before .TH:\n{out}"
    );
    assert!(
        out.lines().nth(th).unwrap().to_lowercase().contains("blit"),
        "title does not name blit"
    );
    for word in ["copy", "mirror", "move"] {
        assert!(out.contains(word), "man page does not mention {word:?}");
    }
}

#[test]
fn usage_errors_exit_2_and_touch_nothing() {
    let sb = Sandbox::new();
    sb.src().file("f", b"x");
    let src = sb.src().root().as_os_str().to_owned();
    let dst = sb.dst().root().as_os_str().to_owned();
    let cases: Vec<Vec<OsString>> = vec![
        vec!["copy".into(), src.clone()],
        vec!["frobnicate".into(), src.clone(), dst.clone()],
        vec![
            "copy".into(),
            "--no-such-option".into(),
            src.clone(),
            dst.clone(),
        ],
        vec![
            "mirror".into(),
            "--max-delete".into(),
            "lots".into(),
            src.clone(),
            dst.clone(),
        ],
        vec!["copy".into(), "--workers".into(), "x".into(), src, dst],
    ];
    for args in cases {
        let a = run(&args);
        expect_code(&a, 2);
        assert!(!stderr_of(&a).is_empty(), "{args:?}: no message on stderr");
        assert!(!sb.dst().exists(""), "{args:?}: destination was created");
    }
}

/// `SCHEME://` that Blit does not know is a usage error naming it, on either side; taken as a
/// path it would make a local folder `s3:` in the working folder.
#[test]
fn an_unknown_scheme_is_a_usage_error_not_a_folder() {
    let sb = Sandbox::new();
    sb.src().file("f", b"x");
    for mode in ["copy", "mirror", "move"] {
        for (src, dst) in [
            (
                sb.src().root().as_os_str().to_owned(),
                OsString::from("s3://bucket/x"),
            ),
            (
                OsString::from("ftp://host/x"),
                sb.dst().root().as_os_str().to_owned(),
            ),
        ] {
            let mut cmd = blit();
            cmd.args([OsString::from(mode), src.clone(), dst.clone()])
                .current_dir(sb.path());
            let a = finish(cmd);
            expect_code(&a, 2);
            let err = stderr_of(&a);
            assert!(err.contains("unknown scheme"), "{mode}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(!sb.path().join("s3:").exists(), "a folder `s3:` was made");
        assert!(!sb.dst().exists(""), "the destination was created");
        assert!(sb.src().exists("f"), "the source was moved");
    }
}

#[test]
fn missing_source_exits_2_without_creating_destination() {
    let sb = Sandbox::new();
    for mode in ["copy", "mirror", "move"] {
        let a = run([
            mode.as_ref(),
            sb.join("nope").as_os_str(),
            sb.dst().root().as_os_str(),
        ]);
        expect_code(&a, 2);
        assert!(
            stderr_of(&a).contains("nope"),
            "{mode}: error does not name the missing source: {}",
            stderr_of(&a)
        );
        assert!(!sb.dst().exists(""), "{mode}: destination was created");
    }
}

#[test]
fn copy_creates_missing_destination_and_its_parents() {
    let sb = Sandbox::new();
    populate_rich(&sb.src());
    let dst = sb.join("x/y/z");
    expect_code(&run(["copy".as_ref(), sb.src().root(), dst.as_path()]), 0);
    assert_trees_equal(sb.src().root(), &dst);
}

/// The contents of SRC land in DST whichever argument has a trailing slash (unlike rsync), so a
/// stray slash can never nest the tree one level deeper.
#[test]
fn trailing_slashes_do_not_change_where_contents_land() {
    let sb = Sandbox::new();
    sb.src().file("a.txt", b"a").file("d/b.txt", b"b");
    let src = sb.src();
    for (i, (s, d)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let dst = sb.tree(format!("dst{i}"));
        let sarg = if s { src.slash() } else { src.root().into() };
        let darg = if d { dst.slash() } else { dst.root().into() };
        expect_code(&run([OsString::from("copy"), sarg, darg]), 0);
        assert_trees_equal(src.root(), dst.root());
    }
}

#[test]
fn relative_paths_are_resolved_against_the_working_folder() {
    let sb = Sandbox::new();
    sb.src().file("a.txt", b"a").file("d/b.txt", b"b");
    let mut cmd = blit();
    cmd.current_dir(sb.path())
        .args(["mirror", "src", "out/dst"]);
    expect_code(&finish(cmd), 0);
    assert_trees_equal(sb.src().root(), &sb.join("out/dst"));
}

#[test]
fn file_source_onto_a_file_path_writes_that_file() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"payload")
        .chmod("a.txt", 0o640)
        .set_mtime("a.txt", 1_500_000_000, 42);
    sb.dst().mkroot();
    let target = sb.dst().p("renamed.txt");
    expect_code(
        &run([
            "copy".as_ref(),
            sb.src().p("a.txt").as_os_str(),
            target.as_os_str(),
        ]),
        0,
    );
    assert_entry_equal(&sb.src().p("a.txt"), &target, "renamed.txt");
    assert_eq!(sb.dst().listing(), ["renamed.txt".to_string()].into());
}

#[test]
fn file_source_into_an_existing_folder_keeps_its_name() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"payload")
        .set_mtime("a.txt", 1_500_000_000, 7);
    sb.dst().file("other", b"o");
    expect_code(
        &run([
            "copy".as_ref(),
            sb.src().p("a.txt").as_os_str(),
            sb.dst().root().as_os_str(),
        ]),
        0,
    );
    assert_entry_equal(&sb.src().p("a.txt"), &sb.dst().p("a.txt"), "a.txt");
    assert_eq!(
        sb.dst().listing(),
        ["a.txt".to_string(), "other".to_string()].into()
    );
}

#[test]
fn file_source_onto_a_new_path_with_trailing_slash_makes_a_folder() {
    let sb = Sandbox::new();
    sb.src().file("a.txt", b"payload");
    let mut d = sb.join("newdir").into_os_string();
    d.push("/");
    expect_code(
        &run([OsString::from("copy"), sb.src().p("a.txt").into(), d]),
        0,
    );
    assert!(sb.join("newdir").is_dir());
    assert_entry_equal(&sb.src().p("a.txt"), &sb.join("newdir/a.txt"), "a.txt");
}

#[test]
fn copy_adds_and_updates_but_never_deletes() {
    let sb = Sandbox::new();
    sb.src()
        .file("new.txt", b"new")
        .file("changed.txt", b"version 2, longer");
    sb.dst()
        .file("changed.txt", b"version 1")
        .file("extra.txt", b"only in dst")
        .file("extra-dir/inner", b"only in dst");
    expect_code(&run(["copy".as_ref(), sb.src().root(), sb.dst().root()]), 0);
    for f in ["new.txt", "changed.txt"] {
        assert_entry_equal(&sb.src().p(f), &sb.dst().p(f), f);
    }
    assert_eq!(sb.dst().read("extra.txt"), b"only in dst");
    assert_eq!(sb.dst().read("extra-dir/inner"), b"only in dst");
}

#[test]
fn second_run_changes_nothing() {
    let sb = Sandbox::new();
    populate_rich(&sb.src());
    expect_code(
        &run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]),
        0,
    );
    let inodes: Vec<_> = sb
        .dst()
        .rel_paths()
        .iter()
        .map(|r| (r.clone(), sb.dst().ino(r)))
        .collect();
    let a = run([
        "mirror".as_ref(),
        "-v".as_ref(),
        sb.src().root(),
        sb.dst().root(),
    ]);
    expect_code(&a, 0);
    assert_eq!(
        verbose_entries(&stdout_of(&a)),
        Default::default(),
        "second run acted"
    );
    for (rel, ino) in inodes {
        assert_eq!(
            sb.dst().ino(&rel),
            ino,
            "{rel:?} was rewritten by an idle run"
        );
    }
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn mtime_difference_alone_rewrites_content_in_both_directions() {
    let sb = Sandbox::new();
    // Same size, different bytes: only the mtime tells blit that the file changed.
    sb.src()
        .file("older-in-dst", b"AAAA")
        .set_mtime("older-in-dst", 1_700_000_000, 500)
        .file("newer-in-dst", b"BBBB")
        .set_mtime("newer-in-dst", 1_700_000_000, 500);
    sb.dst()
        .file("older-in-dst", b"aaaa")
        .set_mtime("older-in-dst", 1_700_000_000, 499)
        .file("newer-in-dst", b"bbbb")
        .set_mtime("newer-in-dst", 1_800_000_000, 0);
    let a = run([
        "copy".as_ref(),
        "-v".as_ref(),
        sb.src().root(),
        sb.dst().root(),
    ]);
    expect_code(&a, 0);
    for f in ["older-in-dst", "newer-in-dst"] {
        assert_entry_equal(&sb.src().p(f), &sb.dst().p(f), f);
    }
    let v = verbose_entries(&stdout_of(&a));
    assert!(v.contains(&entry("*", "older-in-dst")), "{v:?}");
    assert!(v.contains(&entry("*", "newer-in-dst")), "{v:?}");
}

#[test]
fn size_difference_rewrites_even_with_equal_mtime() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"longer content")
        .set_mtime("f", 1_700_000_000, 1);
    sb.dst()
        .file("f", b"short")
        .set_mtime("f", 1_700_000_000, 1);
    expect_code(&run(["copy".as_ref(), sb.src().root(), sb.dst().root()]), 0);
    assert_entry_equal(&sb.src().p("f"), &sb.dst().p("f"), "f");
}

#[test]
fn checksum_mode_catches_same_size_same_mtime_changes() {
    let sb = Sandbox::new();
    sb.src().file("f", b"hello").file("same", b"equal bytes");
    expect_code(
        &run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]),
        0,
    );
    let (sec, nsec) = sb.dst().mtime("f");
    sb.dst().file("f", b"jello").set_mtime("f", sec, nsec);
    let same_ino = sb.dst().ino("same");

    // Without -c, size and mtime agree, so the file is (by design) left alone.
    let a = run([
        "copy".as_ref(),
        "-v".as_ref(),
        sb.src().root(),
        sb.dst().root(),
    ]);
    expect_code(&a, 0);
    assert_eq!(sb.dst().read("f"), b"jello");
    assert!(!verbose_entries(&stdout_of(&a))
        .iter()
        .any(|(_, p)| p == "f"));

    let a = run([
        "copy".as_ref(),
        "-c".as_ref(),
        "-v".as_ref(),
        sb.src().root(),
        sb.dst().root(),
    ]);
    expect_code(&a, 0);
    assert_eq!(sb.dst().read("f"), b"hello");
    assert_trees_equal(sb.src().root(), sb.dst().root());
    let v = verbose_entries(&stdout_of(&a));
    assert!(v.contains(&entry("*", "f")), "{v:?}");
    assert!(!v.iter().any(|(_, p)| p == "same"), "{v:?}");
    assert_eq!(
        sb.dst().ino("same"),
        same_ino,
        "-c rewrote an identical file"
    );
}

#[test]
fn long_checksum_flag_is_accepted() {
    let sb = Sandbox::new();
    sb.src().file("f", b"12345678");
    expect_code(
        &run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]),
        0,
    );
    let (sec, nsec) = sb.dst().mtime("f");
    sb.dst().file("f", b"87654321").set_mtime("f", sec, nsec);
    expect_code(
        &run([
            "mirror".as_ref(),
            "--checksum".as_ref(),
            sb.src().root(),
            sb.dst().root(),
        ]),
        0,
    );
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

/// Metadata-only differences must be fixed in place: rewriting content would be slow and would
/// break other hard links to the destination file.
#[test]
fn metadata_only_changes_keep_the_inode() {
    let sb = Sandbox::new();
    sb.src()
        .file("mode", b"m")
        .file("owner", b"o")
        .file("xattr", b"x")
        .file("content", b"c");
    expect_code(
        &run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]),
        0,
    );
    let ino = |r: &str| sb.dst().ino(r);
    let before: Vec<u64> = ["mode", "owner", "xattr", "content"].map(ino).into();

    let t = sb.src();
    let (sec, nsec) = t.mtime("");
    t.chmod("mode", 0o751)
        .chown("owner", 777, 888)
        .set_xattr("xattr", "user.k", b"v")
        .file("content", b"changed content");
    t.set_mtime("", sec, nsec);
    let a = run(["mirror".as_ref(), "-v".as_ref(), t.root(), sb.dst().root()]);
    expect_code(&a, 0);
    assert_trees_equal(t.root(), sb.dst().root());
    let after: Vec<u64> = ["mode", "owner", "xattr", "content"].map(ino).into();
    assert_eq!(
        before[..3],
        after[..3],
        "metadata-only update rewrote a file"
    );
    assert_ne!(
        before[3], after[3],
        "content change was not written via a new file"
    );
    assert_eq!(
        verbose_entries_below_root(&stdout_of(&a)),
        [
            entry(".", "mode"),
            entry(".", "owner"),
            entry(".", "xattr"),
            entry("*", "content")
        ]
        .into()
    );
}

#[test]
fn copy_refuses_to_replace_a_non_empty_folder_with_a_file() {
    let sb = Sandbox::new();
    sb.src().file("x", b"now a file").file("ok.txt", b"fine");
    sb.dst().file("x/precious", b"keep me");
    let a = run(["copy".as_ref(), sb.src().root(), sb.dst().root()]);
    expect_code(&a, 1);
    assert!(stderr_of(&a).contains("x"), "{}", stderr_of(&a));
    assert_eq!(sb.dst().read("x/precious"), b"keep me");
    assert_entry_equal(&sb.src().p("ok.txt"), &sb.dst().p("ok.txt"), "ok.txt");
}

/// The same holds for the later names of a hard-link group, which are linked at the end of the
/// run rather than written with the other files: for `copy` and `move` alike.
#[test]
fn a_hard_link_never_replaces_a_non_empty_folder_unless_mirroring() {
    for verb in ["copy", "move"] {
        let sb = Sandbox::new();
        sb.src().file("h1", b"linked").hardlink("h2", "h1");
        sb.dst().file("h2/precious", b"keep me");
        let a = run([verb.as_ref(), sb.src().root(), sb.dst().root()]);
        expect_code(&a, 1);
        assert!(stderr_of(&a).contains("h2"), "{verb}: {}", stderr_of(&a));
        assert_eq!(sb.dst().read("h2/precious"), b"keep me", "{verb}");
        assert_eq!(sb.dst().read("h1"), b"linked", "{verb}");
        // A move keeps the source of the entry that could not land.
        assert!(sb.src().exists("h2"), "{verb}");
    }
    let sb = Sandbox::new();
    sb.src().file("h1", b"linked").hardlink("h2", "h1");
    sb.dst().file("h2/extra", b"goes");
    let a = run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]);
    expect_code(&a, 0);
    assert_eq!(sb.dst().ino("h1"), sb.dst().ino("h2"));
}

#[test]
fn copy_replaces_entries_whose_type_changed() {
    let sb = Sandbox::new();
    sb.src()
        .file("dir-to-file", b"file now")
        .file("file-to-dir/child", b"child")
        .symlink("file-to-link", "target")
        .file("link-to-file", b"real");
    sb.dst()
        .dir("dir-to-file")
        .file("file-to-dir", b"was a file")
        .file("file-to-link", b"was a file")
        .symlink("link-to-file", "elsewhere");
    let a = run(["copy".as_ref(), sb.src().root(), sb.dst().root()]);
    expect_code(&a, 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn workers_fsync_and_progress_options_give_the_same_result() {
    let sb = Sandbox::new();
    populate_rich(&sb.src());
    let variants: [&[&str]; 5] = [
        &["--workers", "1"],
        &["--workers", "7"],
        &["--fsync"],
        &["--progress"],
        &["--no-progress"],
    ];
    for (i, extra) in variants.iter().enumerate() {
        let dst = sb.join(format!("dst{i}"));
        let mut args: Vec<OsString> = vec!["mirror".into()];
        args.extend(extra.iter().map(OsString::from));
        args.push(sb.src().root().into());
        args.push(dst.clone().into());
        expect_code(&run(&args), 0);
        assert_trees_equal(sb.src().root(), &dst);
    }
}

#[test]
fn quiet_prints_nothing_on_success() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a").file("b/c", b"c");
    sb.dst().file("stale", b"s");
    for q in ["-q", "--quiet"] {
        sb.src().file("a", format!("a {q}"));
        let a = run([
            "mirror".as_ref(),
            q.as_ref(),
            sb.src().root(),
            sb.dst().root(),
        ]);
        expect_code(&a, 0);
        assert_eq!(stdout_of(&a), "", "{q} printed on stdout");
        assert_eq!(stderr_of(&a), "", "{q} printed on stderr");
        assert_trees_equal(sb.src().root(), sb.dst().root());
    }
}

#[test]
fn content_change_leaves_other_hard_links_of_the_old_file_alone() {
    // Writing via temp + rename means a destination file's other names (outside the tree the
    // copy manages) keep the old bytes instead of being clobbered through the shared inode.
    let sb = Sandbox::new();
    sb.src().file("f", b"old");
    expect_code(&run(["copy".as_ref(), sb.src().root(), sb.dst().root()]), 0);
    std::fs::hard_link(sb.dst().p("f"), sb.join("outside-name")).unwrap();
    sb.src().file("f", b"new and longer");
    expect_code(&run(["copy".as_ref(), sb.src().root(), sb.dst().root()]), 0);
    assert_eq!(sb.dst().read("f"), b"new and longer");
    assert_eq!(std::fs::read(sb.join("outside-name")).unwrap(), b"old");
    assert_eq!(sb.dst().meta("f").nlink(), 1);
}

#[test]
fn file_source_replaces_an_existing_different_file() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"new version")
        .set_mtime("a.txt", 1_500_000_000, 0);
    sb.dst().file("a.txt", b"old").chmod("a.txt", 0o600);
    let target = sb.dst().p("a.txt");
    expect_code(
        &run([
            "copy".as_ref(),
            sb.src().p("a.txt").as_os_str(),
            target.as_os_str(),
        ]),
        0,
    );
    assert_entry_equal(&sb.src().p("a.txt"), &target, "a.txt");
}

/// With -c, content is judged by hash alone: equal bytes with a different mtime are a
/// metadata-only difference, fixed in place.
#[test]
fn checksum_mode_fixes_mtime_of_identical_content_in_place() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"identical")
        .set_mtime("f", 1_500_000_000, 1);
    sb.dst()
        .file("f", b"identical")
        .set_mtime("f", 1_600_000_000, 2);
    sb.dst().mkroot();
    let ino = sb.dst().ino("f");
    let a = run([
        "mirror".as_ref(),
        "-c".as_ref(),
        "-v".as_ref(),
        sb.src().root(),
        sb.dst().root(),
    ]);
    expect_code(&a, 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    assert_eq!(sb.dst().ino("f"), ino, "identical content was rewritten");
    assert!(verbose_entries(&stdout_of(&a)).contains(&entry(".", "f")));
}
