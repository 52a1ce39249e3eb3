//! `blit move`: a copy after which each source entry is removed, and only once its copy is
//! complete, so a failure never loses data.

mod common;

use std::ffi::OsString;

use common::*;

fn args(extra: &[&str], src: &std::path::Path, dst: &std::path::Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["move".into()];
    v.extend(extra.iter().map(OsString::from));
    v.push(src.into());
    v.push(dst.into());
    v
}

fn set(items: &[&str]) -> std::collections::BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn move_transfers_everything_and_removes_the_source_root() {
    let sb = Sandbox::new();
    populate_rich(&sb.src());
    let snap = snapshot_into(&sb, sb.src().root(), "snap");
    let a = run(args(&[], sb.src().root(), sb.dst().root()));
    expect_code(&a, 0);
    assert!(
        !sb.src().exists(""),
        "source root left behind: {:?}",
        sb.src().listing()
    );
    assert_trees_equal(&snap, sb.dst().root());
}

#[test]
fn move_of_a_single_file() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"move me")
        .chmod("a.txt", 0o604)
        .set_mtime("a.txt", 1_400_000_000, 5)
        .set_xattr("a.txt", "user.x", b"y")
        .file("neighbour", b"stays");
    let snap = snapshot_into(&sb, &sb.src().p("a.txt"), "snap.txt");
    sb.dst().mkroot();
    let target = sb.dst().p("b.txt");
    expect_code(&run(args(&[], &sb.src().p("a.txt"), &target)), 0);
    assert!(!sb.src().exists("a.txt"));
    assert_eq!(sb.src().read("neighbour"), b"stays");
    assert_entry_equal(&snap, &target, "b.txt");
}

#[test]
fn move_into_existing_destination_keeps_its_other_entries() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a").file("d/b", b"b");
    sb.dst().file("mine", b"m").file("d/mine-too", b"m2");
    expect_code(&run(args(&[], sb.src().root(), sb.dst().root())), 0);
    assert!(!sb.src().exists(""));
    assert_eq!(
        sb.dst().listing(),
        set(&["a", "d/", "d/b", "d/mine-too", "mine"])
    );
    assert_eq!(sb.dst().read("d/b"), b"b");
    assert_eq!(sb.dst().read("mine"), b"m");
}

#[test]
fn move_removes_sources_that_the_destination_already_had() {
    let sb = Sandbox::new();
    sb.src().file("same", b"identical").file("other", b"o");
    expect_code(&run(["copy".as_ref(), sb.src().root(), sb.dst().root()]), 0);
    let snap = snapshot_into(&sb, sb.src().root(), "snap");
    expect_code(&run(args(&[], sb.src().root(), sb.dst().root())), 0);
    assert!(!sb.src().exists(""), "{:?}", sb.src().listing());
    assert_trees_equal(&snap, sb.dst().root());
}

#[test]
fn move_leaves_excluded_entries_and_their_folders() {
    let sb = Sandbox::new();
    sb.src()
        .file("a.txt", b"a")
        .file("logs/x.log", b"x")
        .file("logs/y.txt", b"y")
        .file("deep/er/z.log", b"z")
        .file("deep/w.txt", b"w")
        .file("gone/entirely.txt", b"g");
    let a = run(args(
        &["--exclude", "*.log"],
        sb.src().root(),
        sb.dst().root(),
    ));
    expect_code(&a, 0);
    assert_eq!(
        sb.src().listing(),
        set(&["deep/", "deep/er/", "deep/er/z.log", "logs/", "logs/x.log"])
    );
    assert_eq!(
        sb.dst().listing(),
        set(&[
            "a.txt",
            "deep/",
            "deep/er/",
            "deep/w.txt",
            "gone/",
            "gone/entirely.txt",
            "logs/",
            "logs/y.txt"
        ])
    );
    assert_eq!(sb.src().read("logs/x.log"), b"x");
}

#[test]
fn move_across_filesystems_copies_then_deletes() {
    let sb = Sandbox::new();
    let shm = Sandbox::new_in("/dev/shm");
    let src = sb.src();
    src.file("f", noise(2 << 20, 3))
        .file("d/g", b"g")
        .hardlink("d/g-link", "d/g")
        .symlink("l", "d/g")
        .sparse("sparse", 8 << 20, &[(4 << 20, b"data")])
        .chown("d/g", 321, 654)
        .chmod("f", 0o640)
        .set_xattr("f", "user.across", b"fs")
        .set_mtime("l", 1_100_000_000, 7)
        .set_mtime("d", 1_200_000_000, 8)
        .set_mtime("", 1_300_000_000, 9);
    let snap = snapshot_into(&sb, src.root(), "snap");
    let dst = shm.join("dst");
    expect_code(&run(args(&[], src.root(), &dst)), 0);
    assert!(!src.exists(""), "{:?}", src.listing());
    assert_trees_equal(&snap, &dst);
}

#[test]
fn a_failing_entry_keeps_its_source() {
    let sb = Sandbox::new();
    sb.src()
        .file("x", b"cannot land")
        .file("ok.txt", b"fine")
        .file("sub/y", b"cannot land either")
        .file("sub/z", b"fine too");
    sb.dst()
        .file("x/precious", b"non-empty folder in the way")
        .file("sub/y/in", b"in the way");
    let a = run(args(&[], sb.src().root(), sb.dst().root()));
    expect_code(&a, 1);
    assert!(stderr_of(&a).contains('x'), "{}", stderr_of(&a));
    assert_eq!(sb.src().read("x"), b"cannot land");
    assert_eq!(sb.src().read("sub/y"), b"cannot land either");
    // The folder that still holds a failed entry stays; the moved entries are gone.
    assert_eq!(sb.src().listing(), set(&["sub/", "sub/y", "x"]));
    assert_eq!(sb.dst().read("sub/z"), b"fine too");
    assert_eq!(sb.dst().read("ok.txt"), b"fine");
    assert_eq!(sb.dst().read("x/precious"), b"non-empty folder in the way");
}

#[test]
fn move_reports_its_mode_in_json() {
    let sb = Sandbox::new();
    sb.src().file("a", b"12345").file("b", b"123");
    let a = run(args(&["--json"], sb.src().root(), sb.dst().root()));
    expect_code(&a, 0);
    let j = json_of(&a);
    assert_eq!(j["mode"], "move");
    assert_eq!(j["dry_run"], false);
    // Two files (the destination root may count too). Bytes are left open: a same-filesystem
    // move renames instead of copying data.
    let created = j["actions"]["create"]["count"].as_u64().unwrap();
    assert!((2..=3).contains(&created), "{j}");
    assert_eq!(j["exit_code"], 0, "{j}");
    assert!(!sb.src().exists(""));
}

#[test]
fn a_failing_entry_keeps_its_source_across_filesystems() {
    let sb = Sandbox::new();
    let shm = Sandbox::new_in("/dev/shm");
    sb.src()
        .file("x", b"cannot land")
        .file("ok.txt", b"fine")
        .file("d/also-ok", b"fine too");
    let dst = shm.dst();
    dst.file("x/precious", b"non-empty folder in the way");
    let a = run(args(&[], sb.src().root(), dst.root()));
    expect_code(&a, 1);
    assert!(stderr_of(&a).contains('x'), "{}", stderr_of(&a));
    assert_eq!(sb.src().read("x"), b"cannot land");
    assert_eq!(sb.src().listing(), set(&["x"]));
    assert_eq!(dst.read("ok.txt"), b"fine");
    assert_eq!(dst.read("d/also-ok"), b"fine too");
    assert_eq!(dst.read("x/precious"), b"non-empty folder in the way");
}
