//! One test per bug or shortcut that could regress: each pins down a case where a cheaper
//! syscall sequence in the engine must still give the exact result.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{assert_trees_equal, expect_code, run, Sandbox};

/// Files are created with their final mode when the umask cannot alter it; modes the umask
/// would mask (group/other write) and special bits must still come out exact.
#[test]
fn modes_the_umask_would_mask_are_still_exact() {
    let sb = Sandbox::new();
    let src = sb.src();
    for (name, mode) in [
        ("rw-all", 0o666),
        ("rwx-all", 0o777),
        ("read-only", 0o444),
        ("none", 0o000),
        ("setuid", 0o4755),
        ("setgid", 0o2750),
        ("sticky", 0o1644),
        ("plain", 0o644),
    ] {
        src.file(name, name.as_bytes()).chmod(name, mode);
    }
    let dst = sb.join("out");
    copy_under_umask_027(src.root(), &dst);
    assert_trees_equal(src.root(), &dst);
}

/// `blit copy SRC DST` with the creation mask 027, which masks group write and all of other's.
fn copy_under_umask_027(src: &std::path::Path, dst: &std::path::Path) {
    let mut cmd = common::blit();
    cmd.args(["copy", src.to_str().unwrap(), dst.to_str().unwrap()]);
    // SAFETY: umask only changes the child's creation mask before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::umask(0o027);
            Ok(())
        });
    }
    expect_code(&common::finish(cmd), 0);
}

/// `chown` is skipped when a new file already gets the right owner, but a setgid destination
/// folder hands its own group to new files: there the group must still be set.
#[test]
fn a_setgid_destination_folder_does_not_leak_its_group() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("sub/f.txt", b"content").chown("sub/f.txt", 0, 0);
    let dst = sb.dst();
    dst.dir("sub").chown("sub", 0, 4321).chmod("sub", 0o2775);
    expect_code(
        &run([
            "copy",
            src.root().to_str().unwrap(),
            dst.root().to_str().unwrap(),
        ]),
        0,
    );
    let md = dst.meta("sub/f.txt");
    assert_eq!(
        (md.uid(), md.gid()),
        (0, 0),
        "file took the setgid folder's group"
    );
}

/// A file whose owner differs from the process's is still given its owner.
#[test]
fn files_of_other_owners_keep_their_owner() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("theirs", b"x").chown("theirs", 1234, 5678);
    let dst = sb.join("out");
    expect_code(
        &run(["copy", src.root().to_str().unwrap(), dst.to_str().unwrap()]),
        0,
    );
    let md = std::fs::metadata(dst.join("theirs")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
}

/// `--no-xattrs` neither copies the source's extended attributes nor removes the destination's.
#[test]
fn no_xattrs_leaves_extended_attributes_alone() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("a", b"same").set_xattr("a", "user.src", b"1");
    let dst = sb.join("out");
    expect_code(
        &run([
            "copy",
            "--no-xattrs",
            src.root().to_str().unwrap(),
            dst.to_str().unwrap(),
        ]),
        0,
    );
    assert!(xattr::get(dst.join("a"), "user.src").unwrap().is_none());
    xattr::set(dst.join("a"), "user.dst", b"2").unwrap();
    expect_code(
        &run([
            "mirror",
            "--no-xattrs",
            src.root().to_str().unwrap(),
            dst.to_str().unwrap(),
        ]),
        0,
    );
    assert_eq!(
        xattr::get(dst.join("a"), "user.dst").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    // Without the option, the replica becomes exact again.
    expect_code(
        &run([
            "mirror",
            src.root().to_str().unwrap(),
            dst.to_str().unwrap(),
        ]),
        0,
    );
    assert_trees_equal(src.root(), &dst);
}

/// A single file moved across filesystems (tmpfs to the sandbox's disk): the copy is flushed in
/// the folder that holds it (the destination's parent, not the destination itself, which is a
/// file), and the source goes. This once failed with "Not a directory" and kept the source.
#[test]
fn a_single_file_moved_across_filesystems_leaves_its_source() {
    let shm = tempfile::tempdir_in("/dev/shm").expect("tmpfs at /dev/shm");
    let sb = Sandbox::new();
    let src = shm.path().join("one.txt");
    std::fs::write(&src, b"moved across").unwrap();
    let dst = sb.join("landed.txt");
    assert_ne!(
        std::fs::metadata(shm.path()).unwrap().dev(),
        std::fs::metadata(sb.path()).unwrap().dev(),
        "the test needs /dev/shm and the sandbox on different filesystems"
    );
    expect_code(
        &run(["move", src.to_str().unwrap(), dst.to_str().unwrap()]),
        0,
    );
    assert_eq!(std::fs::read(&dst).unwrap(), b"moved across");
    assert!(!src.exists(), "the source is still there");
}

/// New empty files are created under their final name at once (no unnamed temporary): every
/// field must still come out exact (modes the umask would mask, special bits, other owners,
/// ns times), in a setgid folder too, and a second run finds nothing to do.
#[test]
fn empty_files_made_in_place_are_exact() {
    let sb = Sandbox::new();
    let src = sb.src();
    for (i, (name, mode)) in [
        ("plain", 0o644),
        ("rw-all", 0o666),
        ("none", 0o000),
        ("setuid", 0o4755),
        ("sticky", 0o1600),
    ]
    .into_iter()
    .enumerate()
    {
        src.file(name, b"")
            .chmod(name, mode)
            .chown(name, 1000 + i as u32, 2000 + i as u32)
            .set_mtime(name, 1_600_000_000 + i as i64, 123_456_789);
    }
    src.dir("g")
        .chmod("g", 0o2775)
        .file("g/empty", b"")
        .chown("g/empty", 7, 8)
        .set_mtime("g/empty", 5, 6);
    let dst = sb.join("out");
    copy_under_umask_027(src.root(), &dst);
    assert_trees_equal(src.root(), &dst);
    let again = run([
        "mirror",
        "--json",
        src.root().to_str().unwrap(),
        dst.to_str().unwrap(),
    ]);
    expect_code(&again, 0);
    let v = common::json_of(&again);
    for action in ["create", "update", "metadata", "delete"] {
        assert_eq!(
            v["actions"][action]["count"], 0,
            "a second run did {action}: {v}"
        );
    }
}

/// The ctime of every entry under `root`, by relative path.
fn ctimes(root: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, (i64, i64)> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<std::path::PathBuf, (i64, i64)>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                (md.ctime(), md.ctime_nsec()),
            );
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Folder metadata is restored at the end of a run only where it differs: a no-op mirror
/// writes nothing at all (every ctime stays), and a folder whose contents changed gets its
/// mtime back while its mode, owner and xattrs stay exact.
#[test]
fn folders_are_touched_only_where_they_differ() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.dir("plain")
        .file("plain/f", b"one")
        .dir("odd")
        .chmod("odd", 0o2751)
        .chown("odd", 123, 456)
        .set_xattr("odd", "user.tag", b"kept")
        .file("odd/f", b"two")
        .dir("odd/deep")
        .file("odd/deep/g", b"three")
        .set_mtime("odd/deep", 1_500_000_000, 1)
        .set_mtime("odd", 1_500_000_001, 2)
        .set_mtime("plain", 1_500_000_002, 3);
    let dst = sb.join("out");
    let mirror = || {
        expect_code(
            &run([
                "mirror",
                src.root().to_str().unwrap(),
                dst.to_str().unwrap(),
            ]),
            0,
        )
    };
    mirror();
    assert_trees_equal(src.root(), &dst);
    let before = ctimes(&dst);
    std::thread::sleep(std::time::Duration::from_millis(50));
    mirror();
    assert_eq!(
        ctimes(&dst),
        before,
        "a no-op mirror changed the destination"
    );

    // A change inside moves each touched folder's mtime; the mirror must put it back.
    src.file("odd/deep/new", b"four")
        .set_mtime("odd/deep", 1_500_000_000, 1);
    std::fs::remove_file(src.root().join("odd/f")).unwrap();
    src.set_mtime("odd", 1_500_000_001, 2);
    mirror();
    assert_trees_equal(src.root(), &dst);
    let after = ctimes(&dst);
    assert_eq!(
        after[std::path::Path::new("plain")],
        before[std::path::Path::new("plain")],
        "an untouched folder was written"
    );
}
