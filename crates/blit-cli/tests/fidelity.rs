//! What a copy preserves: every entry type and every metadata field the contract lists, checked
//! field by field through `assert_trees_equal`.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::*;

fn mirror(sb: &Sandbox) {
    expect_code(
        &run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]),
        0,
    );
}

#[test]
fn rich_tree_is_replicated_exactly() {
    let sb = Sandbox::new();
    populate_rich(&sb.src());
    expect_code(&run(["copy".as_ref(), sb.src().root(), sb.dst().root()]), 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn file_contents_are_byte_exact_at_awkward_sizes() {
    let sb = Sandbox::new();
    let t = sb.src();
    for (i, len) in [0usize, 1, 511, 4095, 4096, 4097, (1 << 20) + 3, 17 << 20]
        .into_iter()
        .enumerate()
    {
        t.file(format!("f{len}"), noise(len, i as u64 + 1));
    }
    // Zero-filled data must still be data when it was written, not turned into a wrong size.
    t.file("zeros", vec![0u8; 300_000]);
    mirror(&sb);
    assert_trees_equal(t.root(), sb.dst().root());
}

#[test]
fn symlinks_are_copied_as_links_and_never_followed() {
    let sb = Sandbox::new();
    let outside = sb.tree("outside");
    outside.file("secret.txt", b"outside data");
    sb.src()
        .file("real/file", b"f")
        .symlink("to-dir", "real")
        .symlink("to-outside-dir", outside.root())
        .symlink("to-outside-file", outside.p("secret.txt"))
        .symlink("dangling", "no/such/thing")
        .symlink("loop-a", "loop-b")
        .symlink("loop-b", "loop-a")
        .symlink("dots", "../../..")
        .chown("to-dir", 1001, 1002)
        .set_mtime("to-dir", 1_234_567_890, 987_654_321)
        .set_mtime("dangling", 1, 2);
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    for l in [
        "to-dir",
        "to-outside-dir",
        "to-outside-file",
        "dangling",
        "dots",
    ] {
        assert!(
            sb.dst().meta(l).file_type().is_symlink(),
            "{l} is not a symlink"
        );
    }
}

#[test]
fn hard_link_groups_inside_the_source_are_kept() {
    let sb = Sandbox::new();
    let outside = sb.tree("outside");
    outside.file("shared", b"linked from outside the source");
    sb.src()
        .file("g1/a", b"group one")
        .hardlink("g1/b", "g1/a")
        .hardlink("other/c", "g1/a")
        .file("g2/x", b"group two")
        .hardlink("g2/y", "g2/x")
        .file("single", b"not linked");
    std::fs::hard_link(outside.p("shared"), sb.src().p("half-outside")).unwrap();
    let a = run([
        "copy".as_ref(),
        "-v".as_ref(),
        sb.src().root(),
        sb.dst().root(),
    ]);
    expect_code(&a, 0);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    // A link whose other name is outside the tree is an ordinary file in the copy.
    assert_eq!(sb.dst().meta("half-outside").nlink(), 1);
    assert_eq!(sb.dst().meta("g1/a").nlink(), 3);

    let v = verbose_entries(&stdout_of(&a));
    let count =
        |sym: &str, names: &[&str]| names.iter().filter(|n| v.contains(&entry(sym, n))).count();
    assert_eq!(count("+", &["g1/a", "g1/b", "other/c"]), 1, "{v:?}");
    assert_eq!(count("=", &["g1/a", "g1/b", "other/c"]), 2, "{v:?}");
    assert_eq!(count("+", &["g2/x", "g2/y"]), 1, "{v:?}");
    assert_eq!(count("=", &["g2/x", "g2/y"]), 1, "{v:?}");
}

#[test]
fn mirror_joins_and_splits_hard_links_to_match_the_source() {
    let sb = Sandbox::new();
    sb.src()
        .file("join-a", b"same")
        .hardlink("join-b", "join-a")
        .file("split-a", b"twin")
        .file("split-b", b"twin")
        .set_mtime("join-a", 1_650_000_000, 0)
        .set_mtime("split-a", 1_650_000_000, 0)
        .set_mtime("split-b", 1_650_000_000, 0);
    sb.dst()
        .file("join-a", b"same")
        .file("join-b", b"same")
        .file("split-a", b"twin")
        .hardlink("split-b", "split-a")
        .set_mtime("join-a", 1_650_000_000, 0)
        .set_mtime("join-b", 1_650_000_000, 0)
        .set_mtime("split-a", 1_650_000_000, 0);
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn sparse_files_keep_their_holes() {
    let sb = Sandbox::new();
    sb.src()
        .sparse("all-hole", 256 << 20, &[])
        .sparse(
            "islands",
            64 << 20,
            &[
                (0, &noise(4096, 1)),
                (32 << 20, &noise(1 << 20, 2)),
                ((64 << 20) - 10, b"tail-bytes"),
            ],
        )
        .sparse("hole-at-end", 16 << 20, &[(0, b"only the start")]);
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    assert!(sb.dst().meta("all-hole").blocks() <= 16);
}

#[test]
fn fifos_are_recreated_without_being_opened() {
    let sb = Sandbox::new();
    sb.src()
        .fifo("pipe")
        .fifo("sub/pipe2")
        .file("after", b"still copied");
    sb.src().chmod("pipe", 0o600);
    mirror(&sb);
    assert!(sb.dst().meta("pipe").file_type().is_fifo());
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn special_permission_bits_survive() {
    let sb = Sandbox::new();
    let t = sb.src();
    t.file("suid", b"x")
        .chown("suid", 1000, 1000)
        .chmod("suid", 0o4755)
        .file("sgid", b"x")
        .chown("sgid", 1000, 2000)
        .chmod("sgid", 0o2711)
        .file("both", b"x")
        .chmod("both", 0o6750)
        .file("none", b"unreadable to others, readable to root")
        .chmod("none", 0o000)
        .file("ro-dir/inside", b"written before the folder went read-only")
        .chmod("ro-dir", 0o500)
        .file("sticky/x", b"x")
        .chmod("sticky", 0o1733)
        .file("sgid-dir/x", b"x")
        // Created inside a setgid folder, a copy would inherit its group and setgid bit unless
        // blit sets both explicitly.
        .dir("sgid-dir/plain-sub")
        .file("locked-dir/in", b"x")
        .chmod("locked-dir", 0o000)
        .chown("sgid-dir", 0, 3000)
        .chmod("sgid-dir", 0o2775);
    mirror(&sb);
    assert_trees_equal(t.root(), sb.dst().root());
}

#[test]
fn owners_and_groups_are_kept_as_root() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"f")
        .chown("f", 1234, 5678)
        .file("d/g", b"g")
        .chown("d", 4321, 8765)
        .chown("d/g", 0, 99)
        .symlink("l", "f")
        .chown("l", 1111, 2222)
        .fifo("p")
        .chown("p", 3333, 4444)
        .chown("", 5555, 6666);
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

/// A set-group-ID destination folder hands its group (and the bit, to subfolders) to what is
/// created inside it. Entries whose owner is Blit's own must still end with the source's group,
/// in the subfolders Blit makes there too, where `chown` might look unnecessary.
#[test]
fn a_setgid_destination_folder_does_not_give_its_group_to_copies() {
    let sb = Sandbox::new();
    let src = sb.src();
    let rels = roots_tree(&src);
    let dst = sb.dst();
    dst.mkroot()
        .dir("inbox")
        .chown("inbox", 0, 4321)
        .chmod("inbox", 0o2775);
    let inbox = dst.p("inbox");
    expect_code(&run(["copy".as_ref(), src.root(), inbox.as_path()]), 0);
    assert_roots(&inbox, &rels);
    assert_trees_equal(src.root(), &inbox);
    // A destination root made by the run inside such a folder inherits its group and bit.
    // (The copy above gave `inbox` the source root's owner and mode, so another folder.)
    dst.dir("drop").chown("drop", 0, 4321).chmod("drop", 0o2775);
    let fresh = dst.p("drop/new/deeper");
    expect_code(&run(["copy".as_ref(), src.root(), fresh.as_path()]), 0);
    assert_roots(&fresh, &rels);
    assert_trees_equal(src.root(), &fresh);
}

#[test]
fn nanosecond_mtimes_of_files_folders_and_links_are_kept() {
    let sb = Sandbox::new();
    let t = sb.src();
    t.file("d1/d2/f", b"deep")
        .file("d1/g", b"g")
        .symlink("d1/l", "g")
        .file("future", b"2100")
        .set_mtime("future", 4_102_444_800, 999_999_999)
        .set_mtime("d1/l", 1_000_000_000, 1)
        .set_mtime("d1/d2/f", 1_111_111_111, 111_111_111)
        .set_mtime("d1/g", 1_222_222_222, 222_222_222)
        // Folders last: their times must survive blit writing their contents afterwards.
        .set_mtime("d1/d2", 1_333_333_333, 333_333_333)
        .set_mtime("d1", 1_444_444_444, 444_444_444)
        .set_mtime("", 1_555_555_555, 555_555_555);
    expect_code(&run(["copy".as_ref(), t.root(), sb.dst().root()]), 0);
    assert_trees_equal(t.root(), sb.dst().root());
    assert_eq!(sb.dst().mtime("d1/d2"), (1_333_333_333, 333_333_333));
}

#[test]
fn existing_destination_root_takes_the_source_root_mode_and_mtime() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"x")
        .chmod("", 0o750)
        .set_mtime("", 1_300_000_000, 123);
    sb.dst().mkroot().chmod("", 0o755);
    expect_code(
        &run(["mirror".as_ref(), sb.src().root(), sb.dst().root()]),
        0,
    );
    assert_eq!(sb.dst().mode(""), 0o750);
    assert_eq!(sb.dst().mtime(""), (1_300_000_000, 123));
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn user_xattrs_are_copied_with_exact_values() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"x")
        .set_xattr("f", "user.text", b"hello")
        .set_xattr("f", "user.binary", &[0, 1, 2, 255, 0])
        .set_xattr("f", "user.empty", b"")
        .set_xattr("f", "user.large", &noise(3000, 9))
        .dir("d")
        .set_xattr("d", "user.on-dir", b"dir value")
        .set_xattr("", "user.on-root", b"root value");
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn mirror_updates_and_removes_xattrs_in_place() {
    let sb = Sandbox::new();
    sb.src()
        .file("f", b"x")
        .set_xattr("f", "user.keep", b"1")
        .set_xattr("f", "user.change", b"old");
    mirror(&sb);
    let ino = sb.dst().ino("f");
    sb.src().set_xattr("f", "user.change", b"new value");
    sb.dst().set_xattr("f", "user.stray", b"not in source");
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
    assert_eq!(sb.dst().ino("f"), ino, "xattr-only change rewrote the file");
}

#[test]
fn raw_byte_names_are_copied_unchanged() {
    let sb = Sandbox::new();
    sb.src()
        .file(bpath(b"caf\xe9"), b"latin-1")
        .file(bpath(b"dir\xff\xfe/inner\x01name"), b"control byte")
        .file("line\nbreak", b"newline")
        .file("tab\tname", b"tab")
        .file("back\\slash", b"backslash")
        .file(" leading and trailing space ", b"spaces")
        .file("-starts-with-dash", b"dash")
        .symlink(bpath(b"link\xe9"), bpath(b"caf\xe9"));
    mirror(&sb);
    assert_trees_equal(sb.src().root(), sb.dst().root());
}

#[test]
fn many_small_files_in_many_folders() {
    let sb = Sandbox::new();
    let t = sb.src();
    for d in 0..20 {
        for f in 0..50 {
            t.file(format!("d{d:02}/f{f:02}"), format!("{d}-{f}").repeat(f + 1));
        }
    }
    mirror(&sb);
    assert_trees_equal(t.root(), sb.dst().root());
}

/// A destination named through a symlink to a folder means that folder: the source root's
/// time, mode and xattrs land on it, not on the link, run after run.
#[test]
fn a_destination_root_named_by_a_link_gets_the_source_roots_metadata() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("f", b"x")
        .chmod("", 0o750)
        .set_xattr("", "user.k", b"v")
        .set_mtime("", 946_684_800, 7);
    let real = sb.tree("real");
    real.mkroot();
    let link = sb.join("link");
    std::os::unix::fs::symlink(real.root(), &link).unwrap();
    for _ in 0..2 {
        expect_code(&run(["copy".as_ref(), src.root(), link.as_path()]), 0);
        assert_eq!(real.mtime(""), (946_684_800, 7));
        assert_eq!(real.mode(""), 0o750);
        assert_eq!(
            xattr::get(real.root(), "user.k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_trees_equal(src.root(), real.root());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

/// A default ACL on a destination folder replaces the umask for what is created in it (the new
/// file's mode is masked by the ACL): modes must still come out as the source's, in the folder
/// itself, in one the run makes inside it, and in an existing one that has its own.
#[test]
fn a_default_acl_on_the_destination_does_not_change_copied_modes() {
    // u::rwx u:1234:r-x g::r-x m::r-x o::--- as the kernel stores it (version 2, then tag,
    // perm, id per entry). The named user makes what new files inherit a real access ACL.
    let mut acl = 2u32.to_le_bytes().to_vec();
    let entries = [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 5, 1234),
        (0x04, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ];
    for (tag, perm, id) in entries {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("f", b"f")
        .chmod("f", 0o644)
        .file("x", b"x")
        .chmod("x", 0o755)
        .file("new/g", b"g")
        .chmod("new/g", 0o604)
        .file("old/h", b"h")
        .chmod("old/h", 0o664)
        .file("old/l1", b"linked")
        .hardlink("old/l2", "old/l1")
        .chmod("old/l1", 0o640);
    let dst = sb.dst();
    dst.mkroot().dir("old");
    xattr::set(dst.root(), "system.posix_acl_default", &acl).unwrap();
    xattr::set(dst.p("old"), "system.posix_acl_default", &acl).unwrap();
    expect_code(&run(["copy".as_ref(), src.root(), dst.root()]), 0);
    let files = [
        ("f", 0o644),
        ("x", 0o755),
        ("new/g", 0o604),
        ("old/h", 0o664),
        ("old/l1", 0o640),
        ("old/l2", 0o640),
    ];
    for (rel, mode) in files {
        assert_eq!(dst.mode(rel), mode, "{rel}");
        assert_eq!(dst.read(rel), src.read(rel), "{rel}");
        // No access ACL the source lacks: the next run has nothing to change.
        let inherited = xattr::get(dst.p(rel), "system.posix_acl_access").unwrap();
        assert_eq!(inherited, None, "{rel}");
    }
    let ino = dst.ino("old/l1");
    for _ in 0..2 {
        let a = run(["copy".as_ref(), "--json".as_ref(), src.root(), dst.root()]);
        expect_code(&a, 0);
        let j = json_of(&a);
        assert_eq!(bytes_moved(&j), 0, "{j}");
        assert_eq!(j["actions"]["metadata"]["count"], 0, "{j}");
    }
    assert_eq!(dst.ino("old/l1"), ino);
    assert_eq!(dst.ino("old/l2"), ino);
}
