//! Include/exclude globs: what they match, and that excluded entries are neither copied nor
//! deleted.

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

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Copies with `filter_args` and returns what landed in the destination.
fn copy_with(sb: &Sandbox, filter_args: &[&str]) -> BTreeSet<String> {
    let a = run(args("copy", filter_args, sb));
    expect_code(&a, 0);
    sb.dst().listing()
}

#[test]
fn name_pattern_matches_at_any_depth() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.log", b"")
        .file("keep.txt", b"")
        .file("d/b.log", b"")
        .file("d/e/c.log", b"")
        .file("d/e/keep.txt", b"")
        .file("d/not.log.txt", b"");
    assert_eq!(
        copy_with(&sb, &["--exclude", "*.log"]),
        set(&["d/", "d/e/", "d/e/keep.txt", "d/not.log.txt", "keep.txt"])
    );
}

#[test]
fn slash_patterns_are_anchored_at_the_source_root() {
    for pattern in ["/build", "build/out.bin"] {
        let sb = Sandbox::new();
        sb.src()
            .file("build/out.bin", b"")
            .file("sub/build/out.bin", b"")
            .file("keep", b"");
        let got = copy_with(&sb, &["--exclude", pattern]);
        assert!(got.contains("sub/build/out.bin"), "{pattern}: {got:?}");
        assert!(!got.contains("build/out.bin"), "{pattern}: {got:?}");
        assert!(got.contains("keep"), "{pattern}: {got:?}");
    }
}

#[test]
fn leading_slash_is_optional_for_path_patterns() {
    let mut results = Vec::new();
    for pattern in ["d/e/c.txt", "/d/e/c.txt"] {
        let sb = Sandbox::new();
        sb.src()
            .file("d/e/c.txt", b"")
            .file("d/e/k.txt", b"")
            .file("x/d/e/c.txt", b"");
        results.push(copy_with(&sb, &["--exclude", pattern]));
    }
    assert_eq!(results[0], results[1]);
    assert_eq!(
        results[0],
        set(&[
            "d/",
            "d/e/",
            "d/e/k.txt",
            "x/",
            "x/d/",
            "x/d/e/",
            "x/d/e/c.txt"
        ])
    );
}

#[test]
fn single_star_stays_in_one_folder_and_double_star_crosses_folders() {
    let sb = Sandbox::new();
    sb.src()
        .file("docs/a.md", b"")
        .file("docs/x/b.md", b"")
        .file("docs/x/y/c.md", b"")
        .file("docs/x/keep.txt", b"")
        .file("other/d.md", b"");
    assert_eq!(
        copy_with(&sb, &["--exclude", "/docs/*.md"]),
        set(&[
            "docs/",
            "docs/x/",
            "docs/x/b.md",
            "docs/x/keep.txt",
            "docs/x/y/",
            "docs/x/y/c.md",
            "other/",
            "other/d.md"
        ])
    );
    let sb = Sandbox::new();
    sb.src()
        .file("docs/x/b.md", b"")
        .file("docs/x/y/c.md", b"")
        .file("docs/x/keep.txt", b"")
        .file("other/d.md", b"");
    assert_eq!(
        copy_with(&sb, &["--exclude", "docs/**/*.md"]),
        set(&[
            "docs/",
            "docs/x/",
            "docs/x/keep.txt",
            "docs/x/y/",
            "other/",
            "other/d.md"
        ])
    );
}

#[test]
fn trailing_slash_matches_folders_only() {
    let sb = Sandbox::new();
    sb.src()
        .file("cache/big", b"")
        .file("a/cache/big", b"")
        .file("b/cache", b"a file named cache")
        .symlink("c/cache", "../b");
    assert_eq!(
        copy_with(&sb, &["--exclude", "cache/"]),
        set(&["a/", "b/", "b/cache", "c/", "c/cache"])
    );
}

#[test]
fn include_overrides_exclude() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"")
        .file("keep.txt", b"")
        .file("d/keep.txt", b"")
        .file("d/b.txt", b"")
        .file("d/c.rs", b"");
    assert_eq!(
        copy_with(&sb, &["--exclude", "*.txt", "--include", "keep.txt"]),
        set(&["d/", "d/c.rs", "d/keep.txt", "keep.txt"])
    );
}

#[test]
fn include_alone_excludes_nothing() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"")
        .file("b.rs", b"")
        .file("d/c.md", b"");
    assert_eq!(
        copy_with(&sb, &["--include", "*.txt"]),
        set(&["a.txt", "b.rs", "d/", "d/c.md"])
    );
}

#[test]
fn excluded_folder_is_not_descended_into() {
    let sb = Sandbox::new();
    sb.src()
        .file("vendor/lib.keep", b"")
        .file("vendor/deep/x.keep", b"")
        .file("top.keep", b"");
    // The include matches files inside, but the folder itself is excluded and never opened.
    assert_eq!(
        copy_with(&sb, &["--exclude", "vendor/", "--include", "*.keep"]),
        set(&["top.keep"])
    );
}

#[test]
fn excluded_unreadable_folder_causes_no_error() {
    let sb = Sandbox::new();
    sb.src().file("locked/x", b"x").file("ok", b"ok");
    sb.give_to_nobody();
    sb.src().chmod("locked", 0o000);
    let a = run_as_nobody(&sb, args("mirror", &["--exclude", "locked/"], &sb));
    expect_code(&a, 0);
    assert_eq!(sb.dst().listing(), set(&["ok"]));
}

#[test]
fn exclude_from_reads_patterns_and_skips_comments_and_blank_lines() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.log", b"")
        .file("b.txt", b"")
        .file("#literal", b"")
        .file("tmp/x", b"")
        .file("d/tmp/y", b"")
        .file("d/c.bak", b"");
    let list = sb.join("excludes");
    std::fs::write(&list, "# comment line\n\n*.log\n/tmp/\n#*.txt\n*.bak\n").unwrap();
    let a = run(args(
        "copy",
        &["--exclude-from", list.to_str().unwrap()],
        &sb,
    ));
    expect_code(&a, 0);
    assert_eq!(
        sb.dst().listing(),
        set(&["#literal", "b.txt", "d/", "d/tmp/", "d/tmp/y"])
    );
}

#[test]
fn several_excludes_combine() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.o", b"")
        .file("b.tmp", b"")
        .file("c.rs", b"")
        .file("target/x", b"");
    assert_eq!(
        copy_with(
            &sb,
            &[
                "--exclude",
                "*.o",
                "--exclude",
                "*.tmp",
                "--exclude",
                "target/"
            ]
        ),
        set(&["c.rs"])
    );
}

#[test]
fn mirror_neither_copies_nor_deletes_excluded_entries() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"a")
        .file("src-only.log", b"not copied")
        .file("cache/src-cache", b"not copied");
    sb.dst()
        .file("dst-only.log", b"kept")
        .file("cache/dst-cache", b"kept")
        .file("d/deep.log", b"kept")
        .file("stale.txt", b"deleted");
    let a = run(args(
        "mirror",
        &["--exclude", "*.log", "--exclude", "cache/"],
        &sb,
    ));
    expect_code(&a, 0);
    assert_eq!(
        sb.dst().listing(),
        set(&[
            "a.txt",
            "cache/",
            "cache/dst-cache",
            "d/",
            "d/deep.log",
            "dst-only.log"
        ])
    );
    assert_eq!(sb.dst().read("dst-only.log"), b"kept");
}

#[test]
fn excluded_entries_do_not_appear_in_verbose_output() {
    let sb = Sandbox::new();
    sb.src().file("a.txt", b"a").file("b.log", b"b");
    sb.dst().mkroot();
    let a = run(args("copy", &["-v", "--exclude", "*.log"], &sb));
    expect_code(&a, 0);
    assert_eq!(
        verbose_entries_below_root(&stdout_of(&a)),
        [entry("+", "a.txt")].into()
    );
}

#[test]
fn invalid_pattern_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a");
    let a = run(args("copy", &["--exclude", "a["], &sb));
    expect_code(&a, 2);
    assert!(stderr_of(&a).contains("a["), "{}", stderr_of(&a));
    assert!(!sb.dst().exists(""));
}

#[test]
fn missing_exclude_from_file_is_a_usage_error() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a");
    let missing = sb.join("no-such-list");
    let a = run(args(
        "copy",
        &["--exclude-from", missing.to_str().unwrap()],
        &sb,
    ));
    expect_code(&a, 2);
    assert!(stderr_of(&a).contains("no-such-list"), "{}", stderr_of(&a));
    assert!(!sb.dst().exists(""));
}
