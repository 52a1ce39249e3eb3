//! Data safety: crashes and interrupts never leave a partial file under a real name, writes never
//! escape the destination through a symlink, unreadable sources never cause deletions, and
//! mistaken invocations are refused before anything changes.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use common::*;

const BIG: usize = 300 << 20;

fn args(mode: &str, extra: &[&str], src: &Path, dst: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![mode.into()];
    v.extend(extra.iter().map(OsString::from));
    v.push(src.into());
    v.push(dst.into());
    v
}

/// A source with one large file (so a run can be caught mid-copy) and some small ones.
fn big_source(sb: &Sandbox) {
    let t = sb.src();
    t.file("big.bin", noise(BIG, 0xb16));
    for i in 0..20 {
        t.file(format!("small/{i:02}"), noise(1000 + i, i as u64));
    }
}

/// Waits until blit is really mid-copy: it has a file being written in the destination, either a
/// named temporary or an unnamed (`O_TMPFILE`) one, which shows only among its open descriptors.
fn wait_for_temp(child: &mut Child, dst: &Path) -> bool {
    let pid = child.id();
    wait_for(Duration::from_secs(30), || {
        temps_under(dst)
            .iter()
            .any(|t| t.file_name().is_some_and(is_temp_name))
            || writing_unnamed_file_in(pid, dst)
            || child.try_wait().unwrap().is_some()
    }) && child.try_wait().unwrap().is_none()
}

/// True when process `pid` holds an unnamed file open in a folder under `dst` (its descriptor's
/// link reads `<folder>/#<inode> (deleted)`).
fn writing_unnamed_file_in(pid: u32, dst: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            target.starts_with(dst) && t.ends_with(" (deleted)") && t.contains("/#")
        })
    })
}

/// Every entry under `dst` is either one of blit's temporaries or a complete copy of its source.
fn assert_no_partial_files(src: &Path, dst: &Path) {
    let (s, d) = (Tree::at(src), Tree::at(dst));
    for rel in d.rel_paths() {
        if in_temporary(&rel) {
            continue;
        }
        assert!(
            s.exists(&rel),
            "{rel:?} in destination is not in the source"
        );
        if d.meta(&rel).is_file() {
            assert!(
                same_content(&s.p(&rel), &d.p(&rel)),
                "{rel:?} exists under its final name but is not a complete copy"
            );
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child by pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

#[test]
fn sigkill_mid_copy_leaves_no_partial_file_and_a_rerun_converges() {
    let sb = Sandbox::new();
    big_source(&sb);
    let (src, dst) = (sb.src(), sb.dst());
    for delay_ms in [0u64, 60] {
        let mut child = spawn(args("mirror", &[], src.root(), dst.root()));
        wait_for_temp(&mut child, dst.root());
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        assert_no_partial_files(src.root(), dst.root());
        // Start the next round from scratch so it is caught inside big.bin again.
        dst.remove("").mkroot();
    }
    let mut child = spawn(args("mirror", &[], src.root(), dst.root()));
    wait_for_temp(&mut child, dst.root());
    std::thread::sleep(Duration::from_millis(50));
    let _ = child.kill();
    child.wait().unwrap();
    expect_code(&run(args("mirror", &[], src.root(), dst.root())), 0);
    assert_trees_equal(src.root(), dst.root());
}

fn interrupt_mid_copy(sig: i32) {
    let sb = Sandbox::new();
    big_source(&sb);
    let (src, dst) = (sb.src(), sb.dst());
    let mut child = spawn(args("copy", &[], src.root(), dst.root()));
    assert!(
        wait_for_temp(&mut child, dst.root()),
        "blit finished before it could be interrupted"
    );
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        temps_under(dst.root()),
        Vec::<std::path::PathBuf>::new(),
        "temporaries left"
    );
    assert_no_partial_files(src.root(), dst.root());
}

#[test]
fn sigint_mid_copy_exits_130_and_cleans_up() {
    interrupt_mid_copy(libc::SIGINT);
}

#[test]
fn sigterm_mid_copy_exits_130_and_cleans_up() {
    interrupt_mid_copy(libc::SIGTERM);
}

#[test]
fn destination_symlink_in_place_of_a_folder_is_replaced_not_followed() {
    let sb = Sandbox::new();
    let outside = sb.tree("outside");
    outside
        .file("victim.txt", b"must not change")
        .file("sub/v2", b"v2");
    let before = snapshot_into(&sb, outside.root(), "outside-before");
    sb.src()
        .file("sub/victim.txt", b"would overwrite")
        .file("sub/new.txt", b"would add")
        .file("sub/sub/v2", b"deeper");
    sb.dst().symlink("sub", outside.root());
    for mode in ["copy", "mirror"] {
        let a = run(args(mode, &[], sb.src().root(), sb.dst().root()));
        expect_code(&a, 0);
        assert_trees_equal(&before, outside.root());
        assert!(sb.dst().meta("sub").is_dir(), "{mode}: sub is still a link");
        assert_eq!(sb.dst().read("sub/victim.txt"), b"would overwrite");
        sb.dst().remove("sub").symlink("sub", outside.root());
    }
}

#[test]
fn destination_symlink_in_place_of_a_file_is_replaced_not_written_through() {
    let sb = Sandbox::new();
    let outside = sb.tree("outside");
    outside.file("victim", b"must not change");
    sb.src().file("f", b"new data for f");
    sb.dst().symlink("f", outside.p("victim"));
    expect_code(&run(args("copy", &[], sb.src().root(), sb.dst().root())), 0);
    assert_eq!(outside.read("victim"), b"must not change");
    assert!(sb.dst().meta("f").is_file());
    assert_entry_equal(&sb.src().p("f"), &sb.dst().p("f"), "f");
}

#[test]
fn refuses_overlapping_source_and_destination() {
    let sb = Sandbox::new();
    sb.src().file("a", b"a").file("inner/b", b"b");
    std::os::unix::fs::symlink(sb.src().root(), sb.join("alias")).unwrap();
    let snap = snapshot_into(&sb, sb.src().root(), "snap");
    let src = sb.src().root().to_path_buf();
    let cases: Vec<(&str, std::path::PathBuf, std::path::PathBuf)> = vec![
        ("same", src.clone(), src.clone()),
        ("same via symlink", src.clone(), sb.join("alias")),
        ("dst inside src", src.clone(), src.join("inner/nested-dst")),
        ("dst inside src (new)", src.clone(), src.join("brand-new")),
        ("src inside dst", src.join("inner"), src.clone()),
        ("same file", src.join("a"), src.join("a")),
        // A file source into an existing folder targets folder/name: here, itself.
        ("file into its own folder", src.join("a"), src.clone()),
    ];
    for (what, s, d) in cases {
        for mode in ["copy", "mirror", "move"] {
            let a = run(args(mode, &[], &s, &d));
            assert_eq!(
                code_of(&a),
                2,
                "{mode} {what}: not refused; stderr: {}",
                stderr_of(&a)
            );
            assert_trees_equal(&snap, sb.src().root());
        }
    }
}

// ----- unprivileged runs: root can read and write anything, so these run blit as nobody -----

#[test]
fn mirror_never_deletes_under_an_unreadable_source_folder() {
    let sb = Sandbox::new();
    sb.src().file("locked/hidden", b"h").file("ok.txt", b"ok");
    sb.dst()
        .file("locked/keep-me", b"must survive")
        .file("locked/hidden", b"h")
        .file("stale.txt", b"stale");
    sb.give_to_nobody();
    sb.src().chmod("locked", 0o000);
    let a = run_as_nobody(&sb, args("mirror", &[], sb.src().root(), sb.dst().root()));
    expect_code(&a, 1);
    assert!(stderr_of(&a).contains("locked"), "{}", stderr_of(&a));
    assert_eq!(sb.dst().read("locked/keep-me"), b"must survive");
    assert_eq!(sb.dst().read("locked/hidden"), b"h");
    assert_eq!(sb.dst().read("ok.txt"), b"ok");
    assert!(
        !sb.dst().exists("stale.txt"),
        "the readable part was not mirrored"
    );
}

#[test]
fn unreadable_source_file_fails_alone() {
    let sb = Sandbox::new();
    sb.src()
        .file("secret", b"no access")
        .file("ok1", b"1")
        .file("d/ok2", b"2");
    sb.give_to_nobody();
    sb.src().chmod("secret", 0o000);
    let a = run_as_nobody(&sb, args("copy", &[], sb.src().root(), sb.dst().root()));
    expect_code(&a, 1);
    let err = stderr_of(&a);
    let line = err
        .lines()
        .find(|l| l.contains("secret"))
        .unwrap_or_else(|| panic!("no error names the file: {err}"));
    assert!(line.starts_with("blit: "), "{line}");
    assert!(!sb.dst().exists("secret"));
    assert_eq!(sb.dst().read("ok1"), b"1");
    assert_eq!(sb.dst().read("d/ok2"), b"2");
    assert!(temps_under(sb.dst().root()).is_empty());
}

#[test]
fn read_only_destination_folder_fails_alone() {
    let sb = Sandbox::new();
    sb.src().file("ro/new.txt", b"n").file("top.txt", b"t");
    sb.dst().dir("ro");
    sb.give_to_nobody();
    // Owned by root, so nobody cannot lift the restriction by chmod either.
    sb.dst().chown("ro", 0, 0).chmod("ro", 0o555);
    let a = run_as_nobody(&sb, args("copy", &[], sb.src().root(), sb.dst().root()));
    expect_code(&a, 1);
    let ro = sb.dst().p("ro");
    assert!(
        stderr_of(&a).contains(ro.to_str().unwrap()),
        "error does not name {ro:?}: {}",
        stderr_of(&a)
    );
    assert_eq!(sb.dst().read("top.txt"), b"t");
    assert!(!sb.dst().exists("ro/new.txt"));
}

#[test]
fn json_lists_failures_with_path_op_and_error() {
    let sb = Sandbox::new();
    sb.src().file("secret", b"s").file("fine", b"f");
    sb.give_to_nobody();
    sb.src().chmod("secret", 0o000);
    let a = run_as_nobody(
        &sb,
        args("copy", &["--json"], sb.src().root(), sb.dst().root()),
    );
    expect_code(&a, 1);
    let j = json_of(&a);
    assert_eq!(j["exit_code"], 1);
    let failures = j["failures"].as_array().expect("failures array");
    assert_eq!(failures.len(), 1, "{j}");
    let f = &failures[0];
    assert!(f["path"].as_str().unwrap().contains("secret"), "{f}");
    assert!(!f["op"].as_str().unwrap().is_empty(), "{f}");
    assert!(!f["error"].as_str().unwrap().is_empty(), "{f}");
    assert_eq!(sb.dst().read("fine"), b"f");
}

/// A move across filesystems copies before it deletes; an interrupt in between must leave the
/// source whole.
#[test]
fn sigint_during_a_cross_filesystem_move_keeps_the_source() {
    let sb = Sandbox::new();
    let shm = Sandbox::new_in("/dev/shm");
    big_source(&sb);
    let (src, dst) = (sb.src(), shm.dst());
    let mut child = spawn(args("move", &[], src.root(), dst.root()));
    assert!(
        wait_for_temp(&mut child, dst.root()),
        "blit finished before it could be interrupted"
    );
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert!(temps_under(dst.root()).is_empty(), "temporaries left");
    // Every file is complete in at least one place, and nothing partial sits under a final name.
    let mut expected = vec![("big.bin".to_string(), noise(BIG, 0xb16))];
    expected.extend((0..20).map(|i| (format!("small/{i:02}"), noise(1000 + i, i as u64))));
    let whole = |t: &Tree, rel: &str, want: &[u8]| t.exists(rel) && t.read(rel) == want;
    for (rel, want) in &expected {
        assert!(
            whole(&src, rel, want) || whole(&dst, rel, want),
            "{rel} lost"
        );
        assert!(
            !dst.exists(rel) || whole(&dst, rel, want),
            "{rel} partial in destination"
        );
    }
}

/// A folder the run makes is filled under a temporary name and named only once its files are
/// complete: while a large file in it is still being written, the folder's final name does not
/// exist, and what shows is the temporary.
#[test]
fn a_new_folder_appears_under_its_name_only_when_its_files_are_complete() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("sub/big.bin", noise(BIG, 0x5b));
    for i in 0..5 {
        src.file(format!("sub/{i}"), noise(100 + i, i as u64));
    }
    let dst = sb.dst();
    dst.mkroot();
    let mut child = spawn(args("copy", &[], src.root(), dst.root()));
    let mut seen = Vec::new();
    let caught = wait_for(Duration::from_secs(30), || {
        seen = std::fs::read_dir(dst.root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        seen.iter().any(|n| is_temp_dir_name(n)) || child.try_wait().unwrap().is_some()
    });
    let running = child.try_wait().unwrap().is_none();
    assert!(
        caught && running,
        "blit finished before its folder was seen"
    );
    assert!(
        !seen.iter().any(|n| n == "sub"),
        "the folder showed under its final name while being filled: {seen:?}"
    );
    // The moment it shows, its large file is whole.
    assert!(
        wait_for(Duration::from_secs(60), || dst.exists("sub")),
        "the folder never appeared"
    );
    let len = std::fs::metadata(dst.p("sub/big.bin")).map_or(0, |m| m.len());
    assert_eq!(
        len, BIG as u64,
        "the folder was named before its files were complete"
    );
    expect_code_of_child(child, 0);
    assert_trees_equal(src.root(), dst.root());
    assert!(temps_under(dst.root()).is_empty());
}

fn expect_code_of_child(child: Child, code: i32) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a killed run left of a folder it was filling (under its temporary name) is the run's
/// own: the next run removes it with everything in it, never following a link inside out of
/// the destination. A source holding such a folder does not pass it on. A dry run changes
/// nothing.
#[test]
fn a_folder_a_killed_run_was_filling_is_removed_by_the_next_run() {
    let sb = Sandbox::new();
    let (src, dst, outside) = (sb.src(), sb.dst(), sb.tree("outside"));
    src.file("a/f", "data").file("top", "x");
    src.file(
        ".~blit-5-5.dir/stray",
        "of an interrupted run into the source",
    );
    outside.file("keep/precious", "not blit's");
    let left = ".~blit-77-1.dir";
    dst.file(format!("{left}/f"), "par")
        .file(format!("{left}/g/h"), "partial")
        .symlink(format!("{left}/out"), outside.p("keep"));
    // Only a folder is a leftover by that name: a file so named is data.
    src.file(".~blit-9-9.dir", "a file");

    expect_code(
        &run(args("copy", &["--dry-run"], src.root(), dst.root())),
        0,
    );
    assert!(dst.exists(left), "a dry run removed a leftover");

    expect_code(&run(args("copy", &[], src.root(), dst.root())), 0);
    assert!(!dst.exists(left), "the leftover folder survived");
    assert_eq!(outside.read("keep/precious"), b"not blit's");
    let rels: Vec<PathBuf> = ["", ".~blit-9-9.dir", "a", "a/f", "top"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(
        dst.rel_paths(),
        rels,
        "a source's leftover was copied, or more"
    );
    for rel in &rels[1..] {
        assert_entry_equal(&src.p(rel), &dst.p(rel), &rel.to_string_lossy());
    }
}

/// Another run (or another session of a daemon) that finds a folder this run is still filling
/// leaves it alone: the folder's lock tells it from a killed run's leftover. Without that, the
/// second run removed the files written so far and the first named the folder without them.
#[test]
fn a_second_run_leaves_a_folder_another_run_is_filling_alone() {
    let sb = Sandbox::new();
    let (src, other, dst) = (sb.src(), sb.tree("other"), sb.dst());
    src.file("sub/big.bin", noise(BIG, 0x5c));
    for i in 0..5 {
        src.file(format!("sub/{i}"), noise(100 + i, i as u64));
    }
    other.file("o/x", "other run");
    dst.mkroot();
    let mut child = spawn(args("copy", &[], src.root(), dst.root()));
    let caught = wait_for(Duration::from_secs(30), || {
        temps_under(dst.root())
            .iter()
            .any(|t| is_temp_dir_name(t.as_os_str()))
            || child.try_wait().unwrap().is_some()
    });
    assert!(
        caught && child.try_wait().unwrap().is_none(),
        "blit finished before its folder was seen"
    );
    expect_code(&run(args("copy", &[], other.root(), dst.root())), 0);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first run ended before the second was done"
    );
    expect_code_of_child(child, 0);
    assert_entry_equal(&src.p("sub"), &dst.p("sub"), "sub");
    assert!(same_content(&src.p("sub/big.bin"), &dst.p("sub/big.bin")));
    for i in 0..5 {
        let rel = format!("sub/{i}");
        assert!(same_content(&src.p(&rel), &dst.p(&rel)), "{rel}");
    }
    assert_eq!(dst.read("o/x"), b"other run");
    assert!(temps_under(dst.root()).is_empty());
}
