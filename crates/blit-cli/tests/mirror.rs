//! `blit mirror`: the destination becomes an exact replica, extra entries included, with the
//! guards that stop a mistaken mirror from wiping a destination.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;

use common::*;

fn args(mode: &str, extra: &[&str], sb: &Sandbox) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![mode.into()];
    v.extend(extra.iter().map(OsString::from));
    v.push(sb.src().root().into());
    v.push(sb.dst().root().into());
    v
}

#[test]
fn mirror_deletes_entries_the_source_lacks() {
    let sb = Sandbox::new();
    sb.src().file("keep.txt", b"k").file("sub/keep2", b"k2");
    sb.dst()
        .file("keep.txt", b"old")
        .file("stale.txt", b"s")
        .file("sub/stale2", b"s2")
        .file("old-dir/deeper/f", b"f")
        .symlink("stale-link", "keep.txt")
        .fifo("stale-pipe");
    let a = run(args("mirror", &["-v"], &sb));
    expect_code(&a, 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    let v = verbose_entries(&stdout_of(&a));
    for e in [
        entry("-", "stale.txt"),
        entry("-", "sub/stale2"),
        entry("-", "old-dir/"),
        entry("-", "stale-link"),
        entry("-", "stale-pipe"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }
}

/// Deletions run as tasks of the walk (and, with `--max-delete`, after it): across many
/// folders and workers, next to files being replaced and added in the same folders, both ways
/// leave the same exact replica, report every deletion once, and keep what a filter protects.
#[test]
fn deletions_during_the_walk_and_after_it_leave_the_same_replica() {
    for extra in [
        &["--workers", "8"][..],
        &["--workers", "8", "--max-delete", "100000"],
    ] {
        let sb = Sandbox::new();
        let (src, dst) = (sb.src(), sb.dst());
        let mut stale = BTreeSet::new();
        for d in 0..30 {
            for f in 0..6 {
                src.file(format!("d{d}/f{f}"), format!("new {d} {f}"));
            }
            dst.file(format!("d{d}/f0"), b"old contents")
                .file(format!("d{d}/f1"), b"old contents")
                .file(format!("d{d}/stale-a"), b"s")
                .file(format!("d{d}/zz-stale"), b"s")
                .file(format!("d{d}/old-sub/deep/x"), b"x")
                .file(format!("d{d}/old-sub/keep.bak"), b"protected")
                // A stale name sharing its inode with a name that is rewritten.
                .hardlink(format!("d{d}/stale-link"), format!("d{d}/f1"));
            for name in [
                "stale-a",
                "zz-stale",
                "stale-link",
                "old-sub/deep/x",
                "old-sub/deep",
            ] {
                stale.insert(format!("d{d}/{name}"));
            }
        }
        let mut argv: Vec<OsString> = vec!["mirror".into(), "-v".into()];
        argv.extend(extra.iter().map(OsString::from));
        argv.extend(["--exclude".into(), "*.bak".into()]);
        argv.extend([src.root().into(), dst.root().into()]);
        let a = run(argv);
        expect_code(&a, 0);
        let deleted: BTreeSet<String> = verbose_entries(&stdout_of(&a))
            .into_iter()
            .filter(|(sym, _)| sym == "-")
            .map(|(_, p)| p.trim_end_matches('/').to_string())
            .collect();
        assert_eq!(deleted, stale, "with {extra:?}");
        for d in 0..30 {
            assert_eq!(dst.read(format!("d{d}/old-sub/keep.bak")), b"protected");
            // The protected folder stays; without it (and the time its removal gave the
            // folder) the trees must be equal.
            dst.remove(format!("d{d}/old-sub"));
            let (sec, nsec) = src.mtime(format!("d{d}"));
            dst.set_mtime(format!("d{d}"), sec, nsec);
        }
        assert_trees_equal(src.root(), dst.root());
    }
}

#[test]
fn mirror_replaces_entries_whose_type_changed() {
    let sb = Sandbox::new();
    sb.src()
        .file("was-full-dir", b"file now")
        .file("was-file/child", b"c")
        .symlink("was-dir", "somewhere")
        .dir("was-link")
        .file("was-pipe", b"regular");
    sb.dst()
        .file("was-full-dir/a/b", b"deep")
        .file("was-full-dir/c", b"c")
        .file("was-file", b"f")
        .file("was-dir/x", b"x")
        .symlink("was-link", "was-file")
        .fifo("was-pipe");
    let a = run(args("mirror", &[], &sb));
    expect_code(&a, 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn mirror_converges_after_damage_to_the_destination() {
    let sb = Sandbox::new();
    populate_rich(&sb.src());
    expect_code(&run(args("mirror", &[], &sb)), 0);
    let d = sb.dst();
    d.remove("a/b/c/deep.txt")
        .chmod("private", 0o644)
        .file("stray", b"x")
        .remove("sticky")
        .file("sticky", b"not a folder any more")
        .remove("rel-link")
        .symlink("rel-link", "elsewhere")
        .remove("a/hard-2")
        .file("a/hard-2", b"hello blit\n")
        .file("big.bin", b"truncated")
        .chown("a/sib.txt", 1, 1)
        .set_mtime("empty", 1, 1);
    expect_code(&run(args("mirror", &[], &sb)), 0);
    assert_trees_equal(sb.src().root(), d.root());
}

#[test]
fn max_delete_over_the_limit_deletes_nothing_but_still_copies() {
    let sb = Sandbox::new();
    sb.src().file("new.txt", b"n").file("keep", b"k");
    sb.dst()
        .file("keep", b"k")
        .file("x1", b"1")
        .file("x2", b"2")
        .file("x3", b"3");
    let a = run(args("mirror", &["--max-delete", "2"], &sb));
    expect_code(&a, 1);
    assert!(!stderr_of(&a).is_empty(), "no explanation on stderr");
    for x in ["x1", "x2", "x3"] {
        assert!(sb.dst().exists(x), "{x} was deleted despite --max-delete");
    }
    assert_entry_equal(&sb.src().p("new.txt"), &sb.dst().p("new.txt"), "new.txt");
    assert_entry_equal(&sb.src().p("keep"), &sb.dst().p("keep"), "keep");
}

#[test]
fn max_delete_at_the_limit_deletes() {
    let sb = Sandbox::new();
    sb.src().file("keep", b"k");
    sb.dst().file("x1", b"1").file("x2", b"2").file("x3", b"3");
    expect_code(&run(args("mirror", &["--max-delete", "3"], &sb)), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn max_delete_zero_forbids_any_deletion() {
    let sb = Sandbox::new();
    sb.src().file("keep", b"k");
    sb.dst().file("x1", b"1");
    expect_code(&run(args("mirror", &["--max-delete", "0"], &sb)), 1);
    assert!(sb.dst().exists("x1"));
    assert!(sb.dst().exists("keep"));
}

/// An empty source usually means a wrong path or an unmounted disk; mirroring it would wipe the
/// destination, so that takes `--force`.
#[test]
fn empty_source_onto_non_empty_destination_needs_force() {
    let sb = Sandbox::new();
    sb.src().mkroot();
    sb.dst().file("precious", b"p").file("dir/more", b"m");
    let snap = snapshot_into(&sb, sb.dst().root(), "before");
    let a = run(args("mirror", &[], &sb));
    expect_code(&a, 2);
    assert!(!stderr_of(&a).is_empty());
    assert_trees_equal(&snap, sb.dst().root());

    expect_code(&run(args("mirror", &["--force"], &sb)), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn empty_source_onto_missing_or_empty_destination_is_fine() {
    let sb = Sandbox::new();
    sb.src().mkroot().chmod("", 0o700);
    expect_code(&run(args("mirror", &[], &sb)), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    expect_code(&run(args("mirror", &[], &sb)), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn mirror_removes_leftover_temporary_files() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a").file("sub/b", b"b");
    expect_code(&run(args("mirror", &[], &sb)), 0);
    // What a killed run leaves behind, next to the files it was writing.
    sb.dst()
        .file(".~blit-1f2e-0.tmp", b"partial")
        .file("sub/.~blit-abc-12.tmp", b"partial too");
    expect_code(&run(args("mirror", &[], &sb)), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn dry_run_changes_nothing_and_reports_what_a_real_run_does() {
    let sb = Sandbox::new();
    sb.src()
        .file("new", b"n")
        .file("changed", b"new content")
        .file("meta", b"m")
        .chmod("meta", 0o600)
        .file("newdir/f", b"f");
    sb.dst()
        .file("changed", b"old")
        .file("meta", b"m")
        .file("stale", b"s")
        .set_mtime("meta", sb.src().mtime("meta").0, sb.src().mtime("meta").1);
    let snap = snapshot_into(&sb, sb.dst().root(), "before");
    for flag in ["-n", "--dry-run"] {
        let a = run(args("mirror", &[flag, "-v"], &sb));
        expect_code(&a, 0);
        assert_trees_equal(&snap, sb.dst().root());
        let planned = verbose_entries_below_root(&stdout_of(&a));
        for e in [
            entry("+", "new"),
            entry("*", "changed"),
            entry(".", "meta"),
            entry("-", "stale"),
            entry("+", "newdir/"),
            entry("+", "newdir/f"),
        ] {
            assert!(planned.contains(&e), "{flag}: missing {e:?} in {planned:?}");
        }
    }
    let planned = verbose_entries(&stdout_of(&run(args("mirror", &["-n", "-v"], &sb))));
    let a = run(args("mirror", &["-v"], &sb));
    expect_code(&a, 0);
    assert_eq!(
        planned,
        verbose_entries(&stdout_of(&a)),
        "dry run and real run disagree"
    );
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn dry_run_does_not_create_the_destination() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a");
    for mode in ["copy", "mirror", "move"] {
        let a = run(args(mode, &["-n", "--json"], &sb));
        expect_code(&a, 0);
        assert!(!sb.dst().exists(""), "{mode} -n created the destination");
        assert!(sb.src().exists("a"), "{mode} -n touched the source");
        let j = json_of(&a);
        assert_eq!(j["dry_run"], true);
        assert_eq!(j["mode"], mode);
        assert!(
            j["actions"]["create"]["count"].as_u64().unwrap() >= 1,
            "{j}"
        );
    }
}

#[test]
fn newer_destination_file_is_replaced_by_the_source_version() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"source")
        .set_mtime("f", 1_000_000_000, 0);
    sb.dst()
        .file("f", b"DSTDST")
        .set_mtime("f", 2_000_000_000, 0);
    expect_code(&run(args("mirror", &[], &sb)), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

/// A hard-linked copy whose destination inode has a name outside the tree: a change of mode in
/// the source group reaches the group's copies, never that other name.
#[test]
fn a_mode_change_in_a_link_group_never_reaches_names_outside_the_tree() {
    let sb = Sandbox::new();
    sb.src()
        .file("h1", b"linked")
        .hardlink("h2", "h1")
        .chmod("h1", 0o644);
    expect_code(&run(args("mirror", &[], &sb)), 0);
    let outside = sb.join("outside-name");
    std::fs::hard_link(sb.dst().p("h1"), &outside).unwrap();
    sb.src().chmod("h1", 0o600);
    expect_code(&run(args("mirror", &[], &sb)), 0);
    assert_eq!(sb.dst().mode("h1"), 0o600);
    assert_eq!(sb.dst().ino("h1"), sb.dst().ino("h2"));
    assert_trees_equal(sb.src().root(), sb.dst().root());
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(&outside).unwrap();
    assert_eq!(
        md.permissions().mode() & 0o7777,
        0o644,
        "the outside name changed"
    );
    assert_eq!(std::fs::read(&outside).unwrap(), b"linked");
}
