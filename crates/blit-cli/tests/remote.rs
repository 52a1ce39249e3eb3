//! Remote transfers: a real `blit-daemon` on the loopback serves modules (folders) and the real
//! `blit` pushes to and pulls from it. Every transfer is judged by the files on disk, with the same
//! field-by-field comparison as local runs (`assert_trees_equal`), and every refusal by the exit
//! code, the message and an untouched module. The protocol tests talk to the daemon through a raw
//! socket, as a broken or hostile client would.
//!
//! The daemon binary is the one `cargo test --workspace` builds next to `blit` (the daemon's own
//! test binary makes cargo build it). Every daemon here runs with TLS (its default) except those
//! the raw-protocol tests talk to, which run `--no-tls`.

#![cfg(target_os = "linux")]

mod common;
#[path = "support/remote.rs"]
mod fixture;

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::assert::Assert;
use blit_core::remote::wire::{self, Frame, Hello, Msg, Rep, Req, Role, WireError, WireListed};
use common::*;
use fixture::*;

fn assert_no_actions(j: &serde_json::Value) {
    for k in ["create", "update", "metadata", "delete", "link"] {
        assert_eq!(j["actions"][k]["count"], 0, "{k}: {j}");
    }
    assert_eq!(j["exit_code"], 0, "{j}");
}

/// A mirror that must find nothing to do: no `-v` change line, all JSON counts zero.
fn assert_idle(args_v: Vec<OsString>, args_json: Vec<OsString>) {
    let a = go(args_v);
    expect_code(&a, 0);
    let v = verbose_entries(&stdout_of(&a));
    assert!(v.is_empty(), "an idle run reported changes: {v:?}");
    let a = go(args_json);
    expect_code(&a, 0);
    assert_no_actions(&json_of(&a));
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Trees
// ---------------------------------------------------------------------------------------------

/// Everything `populate_rich` has (nested folders, empty/large/sparse files, symlinks, a
/// hard-link group, a fifo, xattrs, setuid/sticky/0600 modes, foreign owners, non-UTF-8 and
/// odd names, ns mtimes) plus a 0640 file and a 0750 folder.
fn rich(t: &Tree) {
    t.file("modes/group-read", b"0640")
        .chmod("modes/group-read", 0o640)
        .chmod("modes", 0o750);
    populate_rich(t);
}

/// Changes of every kind to a rich tree: content, deletions, additions, modes, xattrs, type
/// changes both ways, a new hard link, an mtime.
fn edit(t: &Tree) {
    t.file("big.bin", noise(3 << 20, 99))
        .remove("a/b/c/deep.txt")
        .remove("back\\slash")
        .file("added/deeper/new.txt", b"added file")
        .file("a/added.txt", b"added next to old ones")
        .chmod("private", 0o640)
        .chmod("a", 0o750)
        .remove("empty")
        .file("empty/now-a-folder", b"empty was a file")
        .remove("sticky")
        .file("sticky", b"sticky was a folder")
        .remove("dir-link")
        .dir("dir-link")
        .set_xattr("small.txt", "user.color", b"red")
        .hardlink("a/big-link", "big.bin")
        .set_mtime("setuid", 1_700_000_000, 123_456_789);
}

/// A few files and folders whose every byte is known.
fn small_tree(t: &Tree) {
    t.file("top.txt", b"top")
        .file("d/one.txt", b"one")
        .file("d/e/two.bin", noise(5000, 3))
        .dir("d/empty")
        .symlink("d/link", "one.txt")
        .chmod("d/one.txt", 0o640)
        .set_mtime("d/one.txt", 1_500_000_000, 42)
        .set_xattr("top.txt", "user.k", b"v");
}

// ---------------------------------------------------------------------------------------------
// 1-3. Push, pull, move of a rich tree
// ---------------------------------------------------------------------------------------------

/// Names (as `-v` shows plain ASCII names) of the hard-linked files in `t`: which name of a
/// group is copied and which are linked to it depends on the order the workers reach them, so
/// those lines may differ between two correct runs.
fn linked_names(t: &Tree) -> BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    t.rel_paths()
        .into_iter()
        .filter(|r| !r.as_os_str().is_empty())
        .filter(|r| {
            let md = t.meta(r);
            !md.is_dir() && md.nlink() > 1
        })
        .map(|r| r.to_string_lossy().into_owned())
        .collect()
}

/// The `-v` lines of a remote run equal those of the same local run (compared as sets, leaving
/// out the members of hard-link groups of the source `src`).
fn assert_same_report(remote: &Assert, local: &Assert, src: &Tree, what: &str) {
    expect_code(remote, 0);
    expect_code(local, 0);
    let linked = linked_names(src);
    let lines = |a: &Assert| -> BTreeSet<(String, String)> {
        verbose_entries(&stdout_of(a))
            .into_iter()
            .filter(|(_, p)| !linked.contains(p))
            .collect()
    };
    assert_eq!(
        lines(remote),
        lines(local),
        "{what}: remote -v lines differ from a local run's"
    );
}

/// Whether process `pid` holds a file open for writing beneath `root`: a named temporary, or an
/// unnamed one (`O_TMPFILE`, whose link reads `<folder>/#<inode> (deleted)`).
fn writing_beneath(pid: u32, root: &Path) -> bool {
    let root = std::fs::canonicalize(root).unwrap();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let unnamed = target.to_string_lossy().ends_with(" (deleted)");
            let temp = target.file_name().is_some_and(is_temp_name);
            target.starts_with(&root) && (unnamed || temp)
        })
    })
}

/// Ctrl-C in a pushing client: it exits 130 at once; the daemon, seeing the connection closed,
/// stops its run and removes what it was writing; nothing appears under a final name; and the
/// daemon serves the next client.
#[test]
fn an_interrupted_push_stops_the_daemons_run_and_leaves_nothing_half_written() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("big.bin", noise(512 << 20, 0x1c));
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve(&[("m", m.root())]);
    let mut child = client(argv(&[&"copy", &src.root(), &d.url("m", "in")]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blit");
    let caught = wait_for(Duration::from_secs(30), || {
        writing_beneath(d.pid(), m.root()) || child.try_wait().unwrap().is_some()
    });
    assert!(
        caught && child.try_wait().unwrap().is_none(),
        "the push ended before it could be interrupted"
    );
    // SAFETY: sending a signal to our own child by pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let asked = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the client took {:?} to stop",
        asked.elapsed()
    );
    let cleaned = wait_for(Duration::from_secs(10), || {
        !writing_beneath(d.pid(), m.root()) && temps_under(m.root()).is_empty()
    });
    assert!(cleaned, "the daemon left {:?}", temps_under(m.root()));
    assert!(
        !m.root().join("in/big.bin").exists(),
        "a half-written file under its final name"
    );
    src.file("small.txt", b"after");
    let a = finish_remote(client(argv(&[&"copy", &src.root(), &d.url("m", "again")])));
    expect_code(&a, 0);
    assert_eq!(
        std::fs::read(m.root().join("again/small.txt")).unwrap(),
        b"after"
    );
}

/// Many small pushes at once, each of which must finish. The daemon sends its first request (the
/// root's listing) right behind its Welcome; a client that buffers past the Welcome loses it, and
/// then both sides wait for each other forever.
#[test]
fn push_never_hangs_waiting_for_the_first_request() {
    const N: usize = 24;
    let sb = Sandbox::new();
    let src = sb.src();
    small_tree(&src);
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve(&[("m", m.root())]);
    let mut children: Vec<Child> = (0..N)
        .map(|i| {
            client(argv(&[&"copy", &src.root(), &d.url("m", &format!("p{i}"))]))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn blit")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut hung = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "push {i}: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                hung.push(i);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(
        hung.is_empty(),
        "{} of {N} pushes hung: {hung:?}",
        hung.len()
    );
    for i in 0..N {
        assert_trees_equal(src.root(), &m.p(format!("p{i}")));
    }
}

#[test]
fn push_copy_and_mirror_of_a_rich_tree_and_re_mirror_after_edits() {
    let sb = Sandbox::new();
    let src = sb.src();
    rich(&src);
    let (m, mm, twin) = (sb.tree("mod"), sb.tree("mirror-mod"), sb.tree("twin"));
    m.mkroot();
    // `twin` is the same destination mirrored locally: the remote report must match its report.
    for t in [&mm, &twin] {
        t.dir("stale/deep")
            .file("stale/deep/f", b"old")
            .file("big.bin", b"old")
            .symlink("small.txt", "elsewhere");
    }
    let d = Daemon::serve(&[("m", m.root()), ("mm", mm.root())]);

    // copy into a folder of the module (made on the way)
    let a = go(argv(&[
        &"copy",
        &"-v",
        &src.root(),
        &d.url("m", "copy/here"),
    ]));
    expect_code(&a, 0);
    assert_trees_equal(src.root(), &m.p("copy/here"));
    let v = verbose_entries_below_root(&stdout_of(&a));
    for e in [
        entry("+", "a/b/c/deep.txt"),
        entry("+", "pipe"),
        entry("+", "sparse.img"),
        entry("+", "caf\\xe9"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }

    // mirror onto a module's root, deleting what the source lacks
    let mirror_v = || argv(&[&"mirror", &"-v", &src.root(), &d.url("mm", "")]);
    let mirror_json = || argv(&[&"mirror", &"--json", &src.root(), &d.url("mm", "")]);
    let local_v = || argv(&[&"mirror", &"-v", &src.root(), &twin.root()]);
    let a = go(mirror_v());
    assert_same_report(&a, &go(local_v()), &src, "first mirror");
    assert_trees_equal(src.root(), mm.root());
    assert!(verbose_entries(&stdout_of(&a)).contains(&entry("-", "stale/")));

    edit(&src);
    let a = go(mirror_v());
    assert_same_report(&a, &go(local_v()), &src, "mirror after edits");
    assert_trees_equal(src.root(), mm.root());
    let v = verbose_entries(&stdout_of(&a));
    for e in [
        entry("+", "a/added.txt"),
        entry("-", "a/b/c/deep.txt"),
        entry("+", "added/deeper/new.txt"),
        entry("*", "empty/"),
        entry("*", "sticky"),
        entry(".", "private"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }

    assert_idle(mirror_v(), mirror_json());
    assert_trees_equal(src.root(), mm.root());
    assert!(temps_under(mm.root()).is_empty());
}

#[test]
fn pull_copy_and_mirror_of_a_rich_tree_and_re_mirror_after_edits() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    rich(&m);
    let d = Daemon::serve(&[("m", m.root())]);
    let (copy, mirror, twin) = (sb.tree("copy"), sb.tree("mirror"), sb.tree("twin"));

    let a = go(argv(&[&"copy", &"-v", &d.url("m", ""), &copy.root()]));
    expect_code(&a, 0);
    assert_trees_equal(m.root(), copy.root());
    let v = verbose_entries_below_root(&stdout_of(&a));
    for e in [
        entry("+", "big.bin"),
        entry("+", "caf\\xe9"),
        entry("+", "dir-link"),
        entry("+", "pipe"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }

    // `twin` gets the same mirror from the module's folder directly.
    for t in [&mirror, &twin] {
        t.file("junk/inside", b"j")
            .file("big.bin", b"stale")
            .symlink("small.txt", "nowhere");
    }
    let mirror_v = || argv(&[&"mirror", &"-v", &d.url("m", ""), &mirror.root()]);
    let mirror_json = || argv(&[&"mirror", &"--json", &d.url("m", ""), &mirror.root()]);
    let local_v = || argv(&[&"mirror", &"-v", &m.root(), &twin.root()]);
    let a = go(mirror_v());
    assert_same_report(&a, &go(local_v()), &m, "first mirror");
    assert_trees_equal(m.root(), mirror.root());
    assert!(verbose_entries(&stdout_of(&a)).contains(&entry("-", "junk/")));

    // The module changes on the daemon's side; the next mirror follows.
    edit(&m);
    let a = go(mirror_v());
    assert_same_report(&a, &go(local_v()), &m, "mirror after edits");
    assert_trees_equal(m.root(), mirror.root());
    let v = verbose_entries(&stdout_of(&a));
    for e in [
        entry("+", "a/added.txt"),
        entry("-", "back\\\\slash"),
        entry("*", "sticky"),
        entry("*", "setuid"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }

    assert_idle(mirror_v(), mirror_json());
    assert_trees_equal(m.root(), mirror.root());
    assert!(temps_under(mirror.root()).is_empty());
}

#[test]
fn move_push_transfers_everything_and_removes_the_source() {
    let sb = Sandbox::new();
    let src = sb.src();
    rich(&src);
    let snap = snapshot_into(&sb, src.root(), "snap");
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[&"move", &src.root(), &d.url("m", "moved")]));
    expect_code(&a, 0);
    assert_trees_equal(&snap, &m.p("moved"));
    assert!(
        !src.exists(""),
        "source left behind after a push move: {:?}",
        src.listing()
    );
}

/// What works of a pull `move` of a folder: every entry arrives intact and leaves the module.
#[test]
fn move_pull_transfers_every_entry_and_removes_it_from_the_module() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    rich(&Tree::at(m.p("tomove")));
    m.file("neighbour", b"stays");
    let snap = snapshot_into(&sb, &m.p("tomove"), "snap");
    let d = Daemon::serve(&[("m", m.root())]);
    let dst = sb.dst();
    let a = go(argv(&[&"move", &d.url("m", "tomove"), &dst.root()]));
    assert_trees_equal(&snap, dst.root());
    let left = Tree::at(m.p("tomove")).listing();
    assert!(
        left.is_empty(),
        "entries left in the module after a pull move: {left:?}\nstderr:\n{}",
        stderr_of(&a)
    );
    assert_eq!(m.read("neighbour"), b"stays");
    let rest = m.listing();
    assert!(
        rest == set(&["neighbour"]) || rest == set(&["neighbour", "tomove/"]),
        "{rest:?}"
    );
}

/// A pull `move` of a whole module moves its contents but never removes the module's own folder
/// (as `blit rm` refuses to).
#[test]
fn move_pull_of_a_whole_module_keeps_the_module_folder() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("a.txt", b"a")
        .file("sub/b", b"b")
        .symlink("l", "a.txt");
    let snap = snapshot_into(&sb, m.root(), "snap");
    let d = Daemon::serve(&[("m", m.root())]);
    let dst = sb.dst();
    let a = go(argv(&[&"move", &d.url("m", ""), &dst.root()]));
    assert!(
        m.exists("") && m.meta("").is_dir(),
        "the module's folder was removed:\n{}",
        stderr_of(&a)
    );
    assert!(m.listing().is_empty(), "{:?}", m.listing());
    assert_trees_equal(&snap, dst.root());
    // and the daemon still serves the (now empty) module
    expect_code(&go(argv(&[&"ls", &d.url("m", "")])), 0);
}

/// A pull `move` ends like a local one: exit 0, the source folder itself gone.
#[test]
fn move_pull_of_a_folder_removes_its_root_and_exits_0() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("tomove/a.txt", b"a").file("tomove/sub/b", b"b");
    let d = Daemon::serve(&[("m", m.root())]);
    let dst = sb.dst();
    let a = go(argv(&[&"move", &d.url("m", "tomove"), &dst.root()]));
    expect_code(&a, 0);
    assert!(!m.exists("tomove"), "{:?}", m.listing());
    assert_eq!(dst.listing(), set(&["a.txt", "sub/", "sub/b"]));
}

/// A single file moved either way arrives whole and is gone from where it was.
#[test]
fn move_of_a_single_file_pull_and_push() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("d/f.txt", b"move me")
        .chmod("d/f.txt", 0o604)
        .set_mtime("d/f.txt", 1_400_000_000, 5)
        .file("d/other", b"stays");
    let snap = snapshot_into(&sb, &m.p("d/f.txt"), "snap.txt");
    let d = Daemon::serve(&[("m", m.root())]);
    let target = sb.join("out.txt");
    expect_code(&go(argv(&[&"move", &d.url("m", "d/f.txt"), &target])), 0);
    assert_entry_equal(&snap, &target, "pulled out.txt");
    assert!(!m.exists("d/f.txt"));
    assert_eq!(m.read("d/other"), b"stays");
    // and back
    expect_code(&go(argv(&[&"move", &target, &d.url("m", "d/back.txt")])), 0);
    assert_entry_equal(&snap, &m.p("d/back.txt"), "pushed back.txt");
    assert!(!target.exists());
}

/// The transferred root's own extended attributes travel like every other entry's, as they do
/// in a local copy: a folder root's, and a single file's.
#[test]
fn root_xattrs_survive_push_and_pull() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("tree/f", b"f")
        .set_xattr("tree", "user.root", b"on the root")
        .file("one.txt", b"single")
        .set_xattr("one.txt", "user.single", b"file xattr");
    let d = Daemon::serve(&[("m", m.root())]);
    // pulls first, so that the push hang cannot hide this bug
    let pulled = sb.tree("pulled");
    expect_code(
        &go(argv(&[&"copy", &d.url("m", "tree"), &pulled.root()])),
        0,
    );
    assert_trees_equal(&m.p("tree"), pulled.root());
    let one = sb.join("one.txt");
    expect_code(&go(argv(&[&"copy", &d.url("m", "one.txt"), &one])), 0);
    assert_entry_equal(&m.p("one.txt"), &one, "pulled one.txt");

    expect_code(
        &go(argv(&[&"copy", &pulled.root(), &d.url("m", "pushed")])),
        0,
    );
    assert_trees_equal(pulled.root(), &m.p("pushed"));
    expect_code(
        &go(argv(&[&"copy", &one, &d.url("m", "pushed-one.txt")])),
        0,
    );
    assert_entry_equal(&one, &m.p("pushed-one.txt"), "pushed one.txt");
}

// ---------------------------------------------------------------------------------------------
// 4. Single files
// ---------------------------------------------------------------------------------------------

fn single_source(sb: &Sandbox) -> PathBuf {
    sb.src()
        .file("file.txt", b"one file")
        .chmod("file.txt", 0o640)
        .set_mtime("file.txt", 1_300_000_000, 987_654_321);
    sb.src().p("file.txt")
}

#[test]
fn single_file_push() {
    let sb = Sandbox::new();
    let f = single_source(&sb);
    let m = sb.tree("mod");
    m.dir("existing");
    let d = Daemon::serve(&[("m", m.root())]);

    // trailing slash: inside that folder (made if missing)
    expect_code(&go(argv(&[&"copy", &f, &d.url("m", "dir/")])), 0);
    assert_entry_equal(&f, &m.p("dir/file.txt"), "dir/file.txt");
    assert_eq!(m.listing(), set(&["dir/", "dir/file.txt", "existing/"]));
    // an existing folder without a slash: inside it
    expect_code(&go(argv(&[&"copy", &f, &d.url("m", "existing")])), 0);
    assert_entry_equal(&f, &m.p("existing/file.txt"), "existing/file.txt");
    // a new name: that file
    expect_code(&go(argv(&[&"copy", &f, &d.url("m", "renamed.txt")])), 0);
    assert_entry_equal(&f, &m.p("renamed.txt"), "renamed.txt");
    // the module's root: inside it
    expect_code(&go(argv(&[&"copy", &f, &d.url("m", "")])), 0);
    assert_entry_equal(&f, &m.p("file.txt"), "file.txt");
    // an update of a file already there
    sb.src()
        .file("file.txt", b"changed content")
        .set_mtime("file.txt", 1_300_000_001, 1);
    let a = go(argv(&[&"copy", &"-v", &f, &d.url("m", "dir/")]));
    expect_code(&a, 0);
    assert_eq!(
        verbose_entries(&stdout_of(&a)),
        [entry("*", ".")].into_iter().collect()
    );
    assert_entry_equal(&f, &m.p("dir/file.txt"), "dir/file.txt (updated)");
    assert_eq!(
        m.listing(),
        set(&[
            "dir/",
            "dir/file.txt",
            "existing/",
            "existing/file.txt",
            "file.txt",
            "renamed.txt"
        ])
    );
}

#[test]
fn single_file_pull() {
    let sb = Sandbox::new();
    let f = single_source(&sb);
    let m = sb.tree("mod");
    snapshot(&f, &m.p("dir/file.txt"));
    let d = Daemon::serve(&[("m", m.root())]);
    let out = sb.tree("out");
    out.mkroot();
    // to a new local name
    let a = go(argv(&[
        &"copy",
        &"-v",
        &d.url("m", "dir/file.txt"),
        &out.p("got.txt"),
    ]));
    expect_code(&a, 0);
    assert_entry_equal(&f, &out.p("got.txt"), "got.txt");
    // into an existing folder
    expect_code(
        &go(argv(&[&"copy", &d.url("m", "dir/file.txt"), &out.root()])),
        0,
    );
    assert_entry_equal(&f, &out.p("file.txt"), "file.txt");
    // into a folder named with a trailing slash, made on the way
    let mut slash = out.p("new/dir").into_os_string();
    slash.push("/");
    expect_code(
        &go(argv(&[&"copy", &d.url("m", "dir/file.txt"), &slash])),
        0,
    );
    assert_entry_equal(&f, &out.p("new/dir/file.txt"), "new/dir/file.txt");
    assert_eq!(
        out.listing(),
        set(&[
            "file.txt",
            "got.txt",
            "new/",
            "new/dir/",
            "new/dir/file.txt"
        ])
    );
    // an update in place, then nothing to do
    m.file("dir/file.txt", b"newer content")
        .set_mtime("dir/file.txt", 1_300_000_002, 2);
    let a = go(argv(&[
        &"copy",
        &"-v",
        &d.url("m", "dir/file.txt"),
        &out.p("got.txt"),
    ]));
    expect_code(&a, 0);
    assert_eq!(
        verbose_entries(&stdout_of(&a)),
        [entry("*", ".")].into_iter().collect()
    );
    assert_entry_equal(&m.p("dir/file.txt"), &out.p("got.txt"), "got.txt (updated)");
    let a = go(argv(&[
        &"copy",
        &"-v",
        &d.url("m", "dir/file.txt"),
        &out.p("got.txt"),
    ]));
    expect_code(&a, 0);
    assert!(
        verbose_entries(&stdout_of(&a)).is_empty(),
        "{}",
        stdout_of(&a)
    );
    assert_eq!(m.listing(), set(&["dir/", "dir/file.txt"]));
}

// ---------------------------------------------------------------------------------------------
// 5-6. Tokens and read-only modules
// ---------------------------------------------------------------------------------------------

/// A module with a token file, and the sandbox files holding a right and a wrong token.
fn token_setup(sb: &Sandbox) -> (Tree, Daemon, PathBuf, PathBuf) {
    let m = sb.tree("mod");
    m.file("already/there", b"untouched")
        .file("already/deeper/x", b"x");
    let token_file = sb.join("daemon-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let d = Daemon::with_config(&[module("sec", m.root()).token_file(&token_file)], "");
    let right = sb.join("client-token");
    std::fs::write(&right, "s3cret-token\n").unwrap();
    let wrong = sb.join("wrong-token");
    std::fs::write(&wrong, "S3CRET-TOKEN").unwrap();
    (m, d, right, wrong)
}

#[test]
fn token_protected_module_refuses_without_the_token_and_serves_with_it() {
    let sb = Sandbox::new();
    let src = sb.src();
    small_tree(&src);
    let (m, d, right, wrong) = token_setup(&sb);
    let before = snapshot_into(&sb, m.root(), "before");
    let push = || argv(&[&"mirror", &src.root(), &d.url("sec", "already")]);
    let pull = |to: &str| argv(&[&"copy", &d.url("sec", "already"), &sb.join(to)]);
    let with_file = |mut a: Vec<OsString>, f: &Path| {
        a.insert(1, "--token-file".into());
        a.insert(2, f.into());
        a
    };

    // no token
    expect_refused(&go(push()), "token");
    expect_refused(&go(pull("p0")), "token");
    for verb in ["ls", "du", "df"] {
        expect_refused(&go(argv(&[&verb, &d.url("sec", "")])), "token");
    }
    expect_refused(
        &go(argv(&[&"rm", &"--yes", &d.url("sec", "already")])),
        "token",
    );
    expect_refused(&go_with_token(push(), ""), "token");
    // wrong tokens: other text, a prefix, a longer one, other case
    for t in [
        "wrong",
        "s3cret-toke",
        "s3cret-token-and-more",
        "S3CRET-TOKEN",
    ] {
        expect_refused(&go_with_token(push(), t), "wrong token");
        expect_refused(&go_with_token(pull("p1"), t), "wrong token");
    }
    expect_refused(&go(with_file(push(), &wrong)), "wrong token");
    expect_refused(&go(with_file(pull("p1"), &wrong)), "wrong token");
    expect_refused(
        &go(argv(&[
            &"rm",
            &"--yes",
            &"--token-file",
            &wrong,
            &d.url("sec", "already"),
        ])),
        "wrong token",
    );
    assert_trees_equal(&before, m.root());
    assert!(!sb.join("p0").exists() && !sb.join("p1").exists());

    // the right token, from BLIT_TOKEN and from --token-file
    expect_code(&go_with_token(pull("p2"), "s3cret-token"), 0);
    assert_trees_equal(&m.p("already"), &sb.join("p2"));
    expect_code(&go(with_file(pull("p3"), &right)), 0);
    assert_trees_equal(&m.p("already"), &sb.join("p3"));
    let ls = go(argv(&[&"ls", &"--token-file", &right, &d.url("sec", "")]));
    expect_code(&ls, 0);
    assert!(stdout_of(&ls).contains("already"), "{}", stdout_of(&ls));
    // --token-file wins over BLIT_TOKEN
    expect_code(&go_with_token(with_file(pull("p4"), &right), "wrong"), 0);
    assert_trees_equal(&before, m.root());

    // list-modules needs no token and says which modules ask for one
    let a = go(argv(&[&"list-modules", &"--json", &d.base()]));
    expect_code(&a, 0);
    let v: serde_json::Value = serde_json::from_str(stdout_of(&a).trim()).unwrap();
    assert_eq!(v[0]["name"], "sec");
    assert_eq!(v[0]["needs_token"], true);
}

#[test]
fn token_protected_module_accepts_a_push_with_the_token() {
    let sb = Sandbox::new();
    let src = sb.src();
    small_tree(&src);
    let (m, d, right, _) = token_setup(&sb);
    expect_code(
        &go_with_token(
            argv(&[&"copy", &src.root(), &d.url("sec", "up")]),
            "s3cret-token",
        ),
        0,
    );
    assert_trees_equal(src.root(), &m.p("up"));
    let a = go(argv(&[
        &"mirror",
        &"--token-file",
        &right,
        &src.root(),
        &d.url("sec", "already"),
    ]));
    expect_code(&a, 0);
    assert_trees_equal(src.root(), &m.p("already"));
}

#[test]
fn read_only_module_refuses_writes_and_serves_reads() {
    let sb = Sandbox::new();
    let src = sb.src();
    small_tree(&src);
    let ro = sb.tree("ro");
    rich(&ro);
    let d = Daemon::with_config(&[module("ro", ro.root()).read_only()], "");
    let snap = snapshot_into(&sb, ro.root(), "snap");

    for mode in ["copy", "mirror", "move"] {
        let a = go(argv(&[&mode, &src.root(), &d.url("ro", "")]));
        expect_refused(&a, "read-only");
        let a = go(argv(&[&mode, &src.root(), &d.url("ro", "new/sub")]));
        expect_refused(&a, "read-only");
        let a = go(argv(&[&mode, &"-n", &src.root(), &d.url("ro", "a")]));
        expect_refused(&a, "read-only");
    }
    expect_refused(
        &go(argv(&[&"copy", &src.p("top.txt"), &d.url("ro", "a/")])),
        "read-only",
    );
    expect_refused(
        &go(argv(&[&"rm", &"--yes", &d.url("ro", "a")])),
        "read-only",
    );
    expect_refused(
        &go(argv(&[&"rm", &"--yes", &d.url("ro", "small.txt")])),
        "read-only",
    );
    assert_trees_equal(&snap, ro.root());
    assert!(src.exists("top.txt"), "a refused move touched its source");

    // reads work
    let pulled = sb.tree("pulled");
    expect_code(&go(argv(&[&"copy", &d.url("ro", ""), &pulled.root()])), 0);
    assert_trees_equal(ro.root(), pulled.root());
    let a = go(argv(&[&"du", &"--json", &d.url("ro", "a")]));
    expect_code(&a, 0);

    // a pull move copies everything but deletes nothing in the module, and says so
    let moved = sb.tree("moved");
    let a = go(argv(&[&"move", &d.url("ro", ""), &moved.root()]));
    assert_trees_equal(&snap, ro.root());
    assert_trees_equal(&snap, moved.root());
    expect_code(&a, 1);
    assert!(
        stderr_of(&a).contains("read-only"),
        "the failures do not say why:\n{}",
        stderr_of(&a)
    );
    let moved_file = sb.join("moved-file");
    let a = go(argv(&[&"move", &d.url("ro", "small.txt"), &moved_file]));
    assert_ne!(
        code_of(&a),
        0,
        "a move out of a read-only module claims success"
    );
    assert_trees_equal(&snap, ro.root());
    assert_eq!(std::fs::read(&moved_file).unwrap(), b"hello blit\n");

    let a = go(argv(&[&"list-modules", &d.base()]));
    expect_code(&a, 0);
    assert!(
        stdout_of(&a).lines().any(|l| l == "ro\tread-only,token"),
        "{}",
        stdout_of(&a)
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Containment
// ---------------------------------------------------------------------------------------------

/// A read the client cancels (`Msg::Cancel`) stops at the daemon's next frame: only what was
/// queued and in the sockets arrives, the request ends, and the session goes on.
#[test]
fn a_cancelled_read_stops_the_daemon_sending() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    let len = 128usize << 20;
    m.file("big.bin", vec![0x5a; len])
        .file("small.txt", b"still here");
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let (mut s, answer) = raw_hello(&d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
    let req = Req::Read {
        rel: b"big.bin".to_vec(),
        expect: None,
        have: Vec::new(),
    };
    s.write_all(&wire::encode_msg(&Msg::Req { id: 1, req }).unwrap())
        .unwrap();
    let mut got = 0usize;
    let mut cancelled = false;
    let end = loop {
        match wire::read_frame(&mut s).expect("read a reply") {
            Some(Frame::Data { id: 1, data, .. }) => {
                got += data.len();
                if !cancelled && got >= 2 << 20 {
                    s.write_all(&wire::encode_msg(&Msg::Cancel(1)).unwrap())
                        .unwrap();
                    cancelled = true;
                }
            }
            Some(Frame::Msg(m)) => match *m {
                Msg::Rep { id: 1, rep } => break rep,
                Msg::Ping => {}
                other => panic!("unexpected message {other:?}"),
            },
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(
        got < len / 2,
        "{} MiB of {} MiB sent after the cancel (reply {end:?})",
        got >> 20,
        len >> 20
    );
    let (data, rep) = raw_request(
        &mut s,
        2,
        Req::Read {
            rel: b"small.txt".to_vec(),
            expect: None,
            have: Vec::new(),
        },
    );
    assert_eq!(
        (data.as_slice(), rep),
        (&b"still here"[..], Rep::ReadDone(10))
    );
}

#[test]
fn paths_cannot_leave_the_module() {
    let sb = Sandbox::new();
    let outside = sb.tree("outside");
    outside
        .file("secret.txt", b"TOP SECRET outside the module")
        .file("sub/deeper.txt", b"TOP SECRET too");
    let out_snap = snapshot_into(&sb, outside.root(), "outside-snap");
    let m = sb.tree("mod");
    m.file("real/inner.txt", b"inside")
        .symlink("escape", outside.root())
        .symlink("rel-escape", "../outside")
        .symlink("alias", "real");
    let src = sb.src();
    src.file("x.txt", b"pushed").file("y/z.txt", b"pushed too");
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let mod_snap = snapshot_into(&sb, m.root(), "mod-snap");

    // `..` in the URL
    for url in [
        d.url("m", "../x"),
        d.url("m", "a/../../x"),
        d.url("m", ".."),
        d.url("..", "x"),
    ] {
        expect_refused(&go(argv(&[&"copy", &src.root(), &url])), "..");
        expect_refused(&go(argv(&[&"copy", &url, &sb.join("pulled-dots")])), "..");
    }
    // ... and said directly to the daemon, past the client's own check
    for path in [&b"../outside"[..], b"a/../../outside", b"/etc", b"x\0y"] {
        let (_s, answer) = raw_hello(&d, pull_hello("m", path));
        assert!(
            matches!(answer, Msg::Refused(_)),
            "{:?}: {answer:?}",
            String::from_utf8_lossy(path)
        );
    }

    // pushes through symlinks that leave the module
    for link in ["escape", "rel-escape"] {
        for (mode, what, dst) in [
            ("copy", src.root().to_path_buf(), format!("{link}/x")),
            ("mirror", src.root().to_path_buf(), link.to_string()),
            ("copy", src.root().to_path_buf(), link.to_string()),
            ("copy", src.p("x.txt"), format!("{link}/")),
            ("copy", src.p("x.txt"), link.to_string()),
            ("copy", src.p("x.txt"), format!("{link}/secret.txt")),
            ("mirror", src.root().to_path_buf(), format!("{link}/sub")),
        ] {
            let a = go(argv(&[&mode, &what, &d.url("m", &dst)]));
            expect_code(&a, 2);
            assert_trees_equal(&out_snap, outside.root());
        }
        // pulls through them
        for path in [
            link.to_string(),
            format!("{link}/secret.txt"),
            format!("{link}/sub"),
        ] {
            let to = sb.join("pulled");
            let a = go(argv(&[&"copy", &d.url("m", &path), &to]));
            expect_code(&a, 2);
            assert!(!to.exists(), "a refused pull created {to:?}");
        }
        // admin verbs through them
        for verb in ["ls", "du", "find", "rm"] {
            let mut args = argv(&[&verb, &d.url("m", &format!("{link}/secret.txt"))]);
            match verb {
                "find" => args.extend(argv(&[&"--name", &"*"])),
                "rm" => args.push("--yes".into()),
                _ => {}
            }
            let a = go(args);
            expect_code(&a, 2);
            assert!(!stdout_of(&a).contains("secret"), "{}", stdout_of(&a));
        }
        for verb in ["ls", "du"] {
            let a = go(argv(&[&verb, &d.url("m", link)]));
            assert!(
                !stdout_of(&a).contains("secret") && !stdout_of(&a).contains("deeper"),
                "{verb} {link} shows the outside: {}",
                stdout_of(&a)
            );
        }
    }
    assert_trees_equal(&out_snap, outside.root());
    assert_trees_equal(&mod_snap, m.root());

    // a pull of the whole module copies the links as links, never what they point to
    let whole = sb.tree("whole");
    expect_code(&go(argv(&[&"copy", &d.url("m", ""), &whole.root()])), 0);
    assert_trees_equal(m.root(), whole.root());
    for rel in whole.rel_paths() {
        if whole.meta(&rel).is_file() {
            assert!(
                !whole.read(&rel).starts_with(b"TOP SECRET"),
                "{rel:?} leaked from outside the module"
            );
        }
    }

    // requests on an open session that try to reach outside
    let (mut s, answer) = raw_hello(&d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
    let reqs = [
        Req::List {
            rel: b"escape".to_vec(),
            xattrs: false,
            after: None,
            max_bytes: 1 << 20,
        },
        Req::List {
            rel: b"rel-escape/sub".to_vec(),
            xattrs: true,
            after: None,
            max_bytes: 1 << 20,
        },
        Req::List {
            rel: b"..".to_vec(),
            xattrs: false,
            after: None,
            max_bytes: 1 << 20,
        },
        Req::Read {
            rel: b"escape/secret.txt".to_vec(),
            expect: None,
            have: Vec::new(),
        },
        Req::Read {
            rel: b"../outside/secret.txt".to_vec(),
            expect: None,
            have: Vec::new(),
        },
        Req::Read {
            rel: b"rel-escape/secret.txt".to_vec(),
            expect: None,
            have: Vec::new(),
        },
        Req::Stat {
            rel: b"escape/secret.txt".to_vec(),
            xattrs: true,
        },
        Req::Stat {
            rel: b"../outside/secret.txt".to_vec(),
            xattrs: false,
        },
        Req::Hash(b"escape/secret.txt".to_vec()),
        Req::Hash(b"../outside/secret.txt".to_vec()),
        Req::Remove(b"escape/secret.txt".to_vec()),
        Req::Remove(b"../outside/secret.txt".to_vec()),
        Req::RemoveDir(b"rel-escape/sub".to_vec()),
        Req::Read {
            rel: b"/etc/hostname".to_vec(),
            expect: None,
            have: Vec::new(),
        },
    ];
    for (i, req) in reqs.into_iter().enumerate() {
        let shown = format!("{req:?}");
        let (data, rep) = raw_request(&mut s, i as u32 + 1, req);
        assert!(data.is_empty(), "{shown}: file data sent: {data:?}");
        assert!(matches!(rep, Rep::Err(_)), "{shown}: answered {rep:?}");
    }
    // the same session still reads inside the module, through an inside symlink too
    let (data, rep) = raw_request(
        &mut s,
        100,
        Req::Read {
            rel: b"real/inner.txt".to_vec(),
            expect: None,
            have: Vec::new(),
        },
    );
    assert_eq!((data.as_slice(), rep), (&b"inside"[..], Rep::ReadDone(6)));
    drop(s);
    assert_trees_equal(&out_snap, outside.root());
    assert_trees_equal(&mod_snap, m.root());

    // a symlink that stays inside the module is followed
    let via = sb.tree("via-alias");
    expect_code(&go(argv(&[&"copy", &d.url("m", "alias"), &via.root()])), 0);
    assert_trees_equal(&m.p("real"), via.root());
    let one = sb.join("via-alias.txt");
    expect_code(
        &go(argv(&[&"copy", &d.url("m", "alias/inner.txt"), &one])),
        0,
    );
    assert_entry_equal(&m.p("real/inner.txt"), &one, "alias/inner.txt");
    assert_trees_equal(&out_snap, outside.root());
}

#[test]
fn push_through_a_symlink_inside_the_module_is_followed() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("real/inner.txt", b"inside")
        .symlink("alias", "real")
        .symlink("nested/deeper-alias", "../real");
    let src = sb.src();
    src.file("x.txt", b"pushed").file("y/z.txt", b"pushed too");
    let d = Daemon::serve(&[("m", m.root())]);
    expect_code(
        &go(argv(&[&"copy", &src.root(), &d.url("m", "alias/x")])),
        0,
    );
    assert_trees_equal(src.root(), &m.p("real/x"));
    expect_code(
        &go(argv(&[
            &"copy",
            &src.p("x.txt"),
            &d.url("m", "nested/deeper-alias/"),
        ])),
        0,
    );
    assert_entry_equal(&src.p("x.txt"), &m.p("real/x.txt"), "real/x.txt");
    assert_eq!(std::fs::read_link(m.p("alias")).unwrap(), Path::new("real"));
    assert_eq!(m.read("real/inner.txt"), b"inside");
}

/// A file that changes between its listing and its read is read again as it has become: the
/// daemon asks for the entry anew (`Stat`), holds the next read to it, and stamps the copy with
/// it. Never the listing's size (a shrunk file padded with zeros, a grown one refused) or times.
#[test]
fn a_file_changed_while_read_is_copied_as_it_has_become() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let listed_len: u64 = 2 << 20;
    // It shrank, then (another run) it grew past the listing's size.
    for (round, now_len) in [(0u64, 1000usize), (1, (3 << 20) + 77)] {
        let now_data = noise(now_len, 40 + round);
        let mut now = wire_entry(b"f.bin", Kind::File, now_len as u64, 9);
        now.mtime_sec = 1_700_000_000;
        now.mtime_nsec = 123;
        let mut s = raw_push(&d, Mode::Copy, 1);
        let mut asked = Vec::new();
        let finished = serve_push(&mut s, |s, id, req| match req {
            Req::List { rel, .. } if rel.is_empty() => Rep::Entries {
                entries: vec![WireListed::Ok(wire_entry(
                    b"f.bin",
                    Kind::File,
                    listed_len,
                    8,
                ))],
                more: false,
                last: true,
            },
            Req::Read { rel, expect, .. } if rel == b"f.bin" => {
                let x = expect.expect("every read is held to an entry");
                asked.push(format!("read {} {}", x.size, x.ino));
                if x.ino == 8 {
                    // What the listing saw is gone.
                    Rep::Changed
                } else {
                    assert_eq!(
                        (x.size, x.mtime.sec, x.mtime.nsec, x.ino),
                        (now_len as u64, 1_700_000_000, 123, 9)
                    );
                    send_data(s, id, 0, &now_data);
                    Rep::ReadDone(now_len as u64)
                }
            }
            Req::Stat { rel, .. } if rel == b"f.bin" => {
                asked.push("stat".to_string());
                Rep::Entries {
                    entries: vec![WireListed::Ok(now.clone())],
                    more: false,
                    last: true,
                }
            }
            other => panic!("round {round}: unexpected request {other:?}"),
        });
        assert!(
            finished.is_some(),
            "round {round}: the daemon hung up without finishing"
        );
        assert_eq!(
            asked,
            [
                format!("read {listed_len} 8"),
                "stat".to_string(),
                format!("read {now_len} 9")
            ],
            "round {round}"
        );
        let got = m.p("landing/f.bin");
        assert!(
            m.read("landing/f.bin") == now_data,
            "round {round}: content differs"
        );
        assert_eq!(
            m.mtime("landing/f.bin"),
            (1_700_000_000, 123),
            "round {round}"
        );
        assert_eq!(std::fs::metadata(&got).unwrap().len(), now_len as u64);
        assert!(temps_under(m.root()).is_empty());
        m.remove("landing");
    }
}

/// Plays a hostile push client whose listings name entries outside the folder being written:
/// the daemon must write nothing but the one honest file, and only inside the module.
#[test]
fn a_push_client_cannot_name_entries_outside_the_module() {
    let sb = Sandbox::new();
    let outside = sb.tree("outside");
    outside.file("victim", b"must survive");
    let out_snap = snapshot_into(&sb, outside.root(), "outside-snap");
    let m = sb.tree("mod");
    m.file("landing/keep", b"k");
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let bad_names: [&[u8]; 7] = [
        b"../../outside/victim",
        b"../escaped",
        b"a/b",
        b"..",
        b".",
        b"",
        b"x\0y",
    ];
    for (round, bad) in bad_names.iter().enumerate() {
        let mut s = raw_push(&d, Mode::Mirror, 1);
        let finished = serve_push(&mut s, |s, id, req| match req {
            Req::List { rel, .. } if rel.is_empty() => Rep::Entries {
                entries: vec![
                    WireListed::Ok(wire_entry(bad, Kind::File, 5, 2)),
                    WireListed::Ok(wire_entry(b"ok.txt", Kind::File, 5, 3)),
                ],
                more: false,
                last: true,
            },
            Req::Read { rel, .. } => {
                send_data(s, id, 0, if rel == b"ok.txt" { b"hello" } else { b"owned" });
                Rep::ReadDone(5)
            }
            other => Rep::Err(WireError {
                op: "open".into(),
                path: format!("{other:?}").into_bytes(),
                kind: wire::ErrorKind::NotFound,
                message: "no".into(),
            }),
        });
        assert!(
            finished.is_some(),
            "round {round}: the daemon hung up without finishing"
        );
        assert_trees_equal(&out_snap, outside.root());
        let listing = m.listing();
        assert!(
            listing
                .iter()
                .all(|p| ["landing/", "landing/keep", "landing/ok.txt"].contains(&p.as_str())),
            "round {round} ({:?}): unexpected entries {listing:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(
            m.exists("landing/keep"),
            "a mirror with a broken listing deleted"
        );
        if m.exists("landing/ok.txt") {
            assert_eq!(m.read("landing/ok.txt"), b"hello");
        }
        assert!(!sb.join("escaped").exists() && !m.exists("escaped"));
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Protocol robustness
// ---------------------------------------------------------------------------------------------

type Attack = Box<dyn Fn(&Daemon)>;

/// Broken and hostile connections, each of which the daemon must survive.
fn attacks() -> Vec<(&'static str, Attack)> {
    let attacks: Vec<(&str, Attack)> = vec![
        (
            "garbage instead of a preamble",
            Box::new(|d| {
                let mut s = raw_connect(d);
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let got = until_hangup(&mut s, "garbage");
                assert!(got.is_empty(), "answered garbage with {got:?}");
            }),
        ),
        (
            "binary noise instead of a preamble",
            Box::new(|d| {
                let mut s = raw_connect(d);
                let _ = s.write_all(&noise(64 << 10, 5));
                until_hangup(&mut s, "noise");
            }),
        ),
        (
            "a preamble with no common version",
            Box::new(|d| {
                let mut s = raw_connect(d);
                // Versions past this build's, only.
                let (lo, hi) = (wire::VERSION + 1, wire::VERSION + 3);
                let mut preamble = b"BLIT".to_vec();
                preamble.extend(lo.to_le_bytes());
                preamble.extend(hi.to_le_bytes());
                preamble.push(0);
                s.write_all(&preamble).unwrap();
                let got = until_hangup(&mut s, "versions past ours");
                assert_eq!(got, b"BLIT\x00\x00\x00");
            }),
        ),
        (
            "a 1 GiB message frame",
            Box::new(|d| {
                let mut s = preamble(d);
                s.write_all(&frame_header(1 << 30, 0)).unwrap();
                let _ = s.write_all(&[0u8; 1024]);
                until_hangup(&mut s, "1 GiB message");
            }),
        ),
        (
            "a 4 GiB - 1 data frame",
            Box::new(|d| {
                let mut s = preamble(d);
                s.write_all(&frame_header(u32::MAX, 1)).unwrap();
                until_hangup(&mut s, "4 GiB data");
            }),
        ),
        (
            "a frame of type 7",
            Box::new(|d| {
                let mut s = preamble(d);
                s.write_all(&frame_header(3, 7)).unwrap();
                s.write_all(b"abc").unwrap();
                until_hangup(&mut s, "type 7");
            }),
        ),
        (
            "a message body that is not a message",
            Box::new(|d| {
                let mut s = preamble(d);
                s.write_all(&frame_header(16, 0)).unwrap();
                s.write_all(&[0xff; 16]).unwrap();
                let got = until_hangup(&mut s, "bad body");
                assert!(
                    got.is_empty() || wire::decode_msg(&got[5..]).is_ok(),
                    "{got:?}"
                );
            }),
        ),
        (
            "a truncated frame, then close",
            Box::new(|d| {
                let mut s = preamble(d);
                s.write_all(&frame_header(100, 0)).unwrap();
                s.write_all(&[0u8; 10]).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                until_hangup(&mut s, "truncated");
            }),
        ),
        (
            "a truncated header, then close",
            Box::new(|d| {
                let mut s = preamble(d);
                s.write_all(&[5, 0]).unwrap();
                drop(s);
            }),
        ),
        (
            "a valid pull hello, then a hang-up",
            Box::new(|d| {
                let mut s = raw_connect(d);
                wire::write_client_preamble(&mut s, false).unwrap();
                wire::read_server_preamble(&mut s).unwrap();
                let hello = pull_hello("m", b"precious");
                s.write_all(&wire::encode_msg(&Msg::Hello(hello)).unwrap())
                    .unwrap();
                drop(s);
            }),
        ),
        (
            "a data frame as the hello",
            Box::new(|d| {
                let mut s = preamble(d);
                let mut f = wire::data_header(1, 0, 4).to_vec();
                f.extend_from_slice(b"data");
                s.write_all(&f).unwrap();
                until_hangup(&mut s, "data as hello");
            }),
        ),
        (
            "an opening dribbled a byte at a time (its deadline closes it)",
            Box::new(|d| {
                let mut s = raw_connect(d);
                s.set_read_timeout(Some(Duration::from_millis(400)))
                    .unwrap();
                let mut bytes = Vec::new();
                wire::write_client_preamble(&mut bytes, false).unwrap();
                // Then the start of a hello (a 1 MiB message frame) that never ends.
                bytes.extend_from_slice(&[0, 0, 0x10, 0, 0]);
                bytes.resize(4096, 7);
                let start = Instant::now();
                let mut buf = [0u8; 64];
                for b in &bytes {
                    // Every byte comes well within the 2 s a read may wait.
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                        Ok(_) => {}
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(8),
                        "a dribbled opening held its connection past its deadline"
                    );
                }
            }),
        ),
        (
            "silence (the idle timeout closes it)",
            Box::new(|d| {
                let mut s = raw_connect(d);
                until_hangup(&mut s, "silence");
            }),
        ),
    ];

    attacks
}

/// Runs every attack on a daemon serving a module with a `precious` tree; after each, the daemon
/// must be alive and `serve_ok` (a real transfer, which may add top-level `after-*` entries) must
/// work. At the end `precious` must be untouched and nothing else may have appeared.
fn survive_attacks(serve_ok: impl Fn(&Sandbox, &Daemon, &Tree, usize, &str)) {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    rich(&Tree::at(m.p("precious")));
    let snap = snapshot_into(&sb, &m.p("precious"), "snap");
    let mut d = Daemon::with_config_plain(&[module("m", m.root())], "idle_timeout = 2");
    let attacks = attacks();
    for (i, (name, attack)) in attacks.iter().enumerate() {
        attack(&d);
        d.assert_healthy();
        serve_ok(&sb, &d, &m, i, name);
    }
    d.assert_healthy();
    assert_trees_equal(&snap, &m.p("precious"));
    let mut want: Vec<String> = m
        .listing()
        .into_iter()
        .filter(|p| p.starts_with("after-") && !p.trim_end_matches('/').contains('/'))
        .collect();
    want.push("precious/".into());
    let top: Vec<String> = m
        .listing()
        .into_iter()
        .filter(|p| !p.trim_end_matches('/').contains('/'))
        .collect();
    want.sort();
    assert_eq!(top, want, "stray entries in the module");
}

#[test]
fn daemon_survives_malformed_connections_and_still_serves_pulls() {
    survive_attacks(|sb, d, m, i, name| {
        let to = sb.join(format!("pulled-{i}"));
        let a = go(argv(&[&"copy", &d.url("m", "precious/a/b"), &to]));
        assert_eq!(
            code_of(&a),
            0,
            "after {name}: pull failed:\n{}",
            stderr_of(&a)
        );
        assert_trees_equal(&m.p("precious/a/b"), &to);
    });
}

#[test]
fn daemon_survives_malformed_connections_and_still_serves_pushes() {
    survive_attacks(|sb, d, m, i, name| {
        let src = sb.tree(format!("src-{i}"));
        small_tree(&src);
        let dst = format!("after-{i}");
        let a = go(argv(&[&"copy", &src.root(), &d.url("m", &dst)]));
        assert_eq!(
            code_of(&a),
            0,
            "after {name}: push failed:\n{}",
            stderr_of(&a)
        );
        assert_trees_equal(src.root(), &m.p(&dst));
    });
}

// ---------------------------------------------------------------------------------------------
// 9. The daemon dies mid-transfer
// ---------------------------------------------------------------------------------------------

/// True when process `pid` holds an unnamed file open in a folder under `dst`.
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

/// A file of `len` random bytes (from the kernel: much quicker than `noise` in a debug build).
fn random_file(path: &Path, len: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut rnd = std::fs::File::open("/dev/urandom").unwrap().take(len);
    let mut out = std::fs::File::create(path).unwrap();
    assert_eq!(std::io::copy(&mut rnd, &mut out).unwrap(), len);
}

/// Every entry of `dst` is one of blit's temporaries or is in `src`, and every file under its
/// final name is complete.
fn assert_no_partial_files(src: &Tree, dst: &Tree) {
    for rel in dst.rel_paths() {
        if in_temporary(&rel) {
            continue;
        }
        assert!(src.exists(&rel), "{rel:?} is not in the source");
        if dst.meta(&rel).is_file() {
            assert!(
                same_content(&src.p(&rel), &dst.p(&rel)),
                "{rel:?} exists under its final name but is partial"
            );
        }
    }
}

fn wait_child(child: &mut Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("blit did not exit within {limit:?} after the daemon died");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = std::process::Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut out.stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut out.stderr)
        .unwrap();
    out
}

#[test]
fn daemon_killed_mid_push_leaves_no_partial_file_and_a_rerun_converges() {
    let sb = Sandbox::new();
    let src = sb.src();
    for i in 0..3 {
        random_file(&src.p(format!("big-{i}.bin")), 64 << 20);
    }
    for i in 0..10u64 {
        src.file(format!("small/{i:02}.txt"), noise(100 + i as usize, i));
    }
    let m = sb.tree("mod");
    m.mkroot();
    let dst = m.p("backup");
    let mut d = Daemon::serve(&[("m", m.root())]);
    // Two streams: the large files travel in stripes, each cut off by the kill.
    let mut child = client(argv(&[
        &"mirror",
        &"--streams",
        &"2",
        &src.root(),
        &d.url("m", "backup"),
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = d.pid();
    let landing = wait_for(Duration::from_secs(30), || {
        !temps_under(m.root()).is_empty()
            || writing_unnamed_file_in(pid, m.root())
            || child.try_wait().unwrap().is_some()
    });
    assert!(landing, "the push never started writing");
    std::thread::sleep(Duration::from_millis(30));
    d.kill9();
    let out = wait_child(&mut child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the push succeeded although the daemon was killed (was it too quick?)\n{stderr}"
    );
    assert!(
        stderr.contains("blit:"),
        "no error message after the daemon died:\n{stderr}"
    );
    assert_no_partial_files(&src, &Tree::at(&dst));

    // A new daemon on the same module finishes the job and clears the leftovers.
    let d2 = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[&"mirror", &src.root(), &d2.url("m", "backup")]));
    expect_code(&a, 0);
    assert_trees_equal(src.root(), &dst);
    let left = temps_under(m.root());
    assert!(left.is_empty(), "temporaries left: {left:?}");
}

#[test]
fn daemon_killed_mid_pull_leaves_no_partial_file_and_a_rerun_converges() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    let big = Tree::at(m.p("big"));
    for i in 0..3 {
        random_file(&big.p(format!("big-{i}.bin")), 64 << 20);
    }
    for i in 0..10u64 {
        big.file(format!("small/{i:02}.txt"), noise(100 + i as usize, i));
    }
    let mut d = Daemon::serve(&[("m", m.root())]);
    let dst = sb.dst();
    let mut child = client(argv(&[
        &"mirror",
        &"--streams",
        &"2",
        &d.url("m", "big"),
        &dst.root(),
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = child.id();
    let landing = wait_for(Duration::from_secs(30), || {
        !temps_under(dst.root()).is_empty()
            || writing_unnamed_file_in(pid, dst.root())
            || child.try_wait().unwrap().is_some()
    });
    assert!(landing, "the pull never started writing");
    std::thread::sleep(Duration::from_millis(30));
    d.kill9();
    let out = wait_child(&mut child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the pull succeeded although the daemon was killed (was it too quick?)\n{stderr}"
    );
    assert!(
        stderr.contains("blit:"),
        "no error message after the daemon died:\n{stderr}"
    );
    assert_no_partial_files(&big, &dst);
    let left = temps_under(dst.root());
    assert!(left.is_empty(), "the client left temporaries: {left:?}");

    let d2 = Daemon::serve(&[("m", m.root())]);
    expect_code(&go(argv(&[&"mirror", &d2.url("m", "big"), &dst.root()])), 0);
    assert_trees_equal(big.root(), dst.root());
}

// ---------------------------------------------------------------------------------------------
// 10. Admin verbs
// ---------------------------------------------------------------------------------------------

/// (non-folder entries, folders, bytes of regular files) below `t`'s root.
fn usage_of(t: &Tree) -> (u64, u64, u64) {
    let (mut files, mut dirs, mut bytes) = (0, 0, 0);
    for rel in t.rel_paths() {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let md = t.meta(&rel);
        if md.is_dir() {
            dirs += 1;
        } else {
            files += 1;
            if md.is_file() {
                bytes += md.len();
            }
        }
    }
    (files, dirs, bytes)
}

fn json_value(a: &Assert) -> serde_json::Value {
    let s = stdout_of(a);
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

#[test]
fn admin_verbs() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("top.txt", b"top level")
        .file("docs/a.txt", b"aaaaa")
        .file("docs/b.md", b"markdown")
        .file("docs/sub/c.txt", noise(1234, 1))
        .file("docs/sub/not-txt.txt.bak", b"x")
        .file("bin/data.bin", noise(100_000, 2))
        .dir("empty-dir")
        .symlink("link.txt", "top.txt")
        .fifo("bin/pipe");
    let other = sb.tree("other");
    other.mkroot();
    let d = Daemon::with_config(
        &[
            module("m", m.root()),
            module("other", other.root()).read_only(),
        ],
        "",
    );

    // list-modules
    let a = go(argv(&[&"list-modules", &d.base()]));
    expect_code(&a, 0);
    let names: Vec<String> = stdout_of(&a)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["m", "other"]);
    let a = go(argv(&[&"list-modules", &"--json", &d.base()]));
    expect_code(&a, 0);
    let v = json_value(&a);
    assert_eq!(
        v,
        serde_json::json!([
            {"name": "m", "read_only": false, "needs_token": true},
            {"name": "other", "read_only": true, "needs_token": true},
        ])
    );

    // ls
    let a = go(argv(&[&"ls", &d.url("m", "")]));
    expect_code(&a, 0);
    let listed: Vec<String> = stdout_of(&a)
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["bin", "docs", "empty-dir", "link.txt", "top.txt"]);
    let a = go(argv(&[&"ls", &"--json", &d.url("m", "docs")]));
    expect_code(&a, 0);
    let v = json_value(&a);
    let entries: Vec<(String, String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
                e["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("a.txt".to_string(), "file".to_string(), 5),
            ("b.md".to_string(), "file".to_string(), 8),
            (
                "sub".to_string(),
                "folder".to_string(),
                m.meta("docs/sub").len()
            ),
        ],
        "{v}"
    );
    let a = go(argv(&[&"ls", &"--json", &d.url("m", "")]));
    let kinds: Vec<(String, String)> = json_value(&a)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("link.txt".into(), "symlink".into())),
        "{kinds:?}"
    );
    let a = go(argv(&[&"ls", &"--json", &d.url("m", "top.txt")]));
    expect_code(&a, 0);
    let v = json_value(&a);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["name"], "top.txt");
    assert_eq!(v[0]["size"], 9);
    assert_eq!(v[0]["mode"], m.mode("top.txt"));
    assert_eq!(v[0]["mtime"], m.mtime("top.txt").0);
    assert_eq!(v[0]["mtime_nsec"], m.mtime("top.txt").1);
    // A failure names its operation and the path as the user wrote it, with the OS's cause.
    let a = go(argv(&[&"ls", &d.url("m", "docs/missing")]));
    expect_code(&a, 2);
    let err = stderr_of(&a);
    let wanted = format!("open {}: ", d.url("m", "docs/missing"));
    assert!(err.contains(&wanted), "{err}");
    assert!(err.contains("No such file"), "{err}");
    expect_code(&go(argv(&[&"ls", &d.url("nope", "")])), 2);

    // du
    for rel in ["", "docs", "bin"] {
        let a = go(argv(&[&"du", &"--json", &d.url("m", rel)]));
        expect_code(&a, 0);
        let (files, dirs, bytes) = usage_of(&Tree::at(m.p(rel)));
        assert_eq!(
            json_value(&a),
            serde_json::json!({"files": files, "folders": dirs, "bytes": bytes}),
            "du {rel:?}"
        );
    }
    let a = go(argv(&[&"du", &d.url("m", "docs")]));
    expect_code(&a, 0);
    assert_eq!(
        stdout_of(&a).trim(),
        format!("{} bytes\t4 files\t1 folders", 5 + 8 + 1234 + 1)
    );

    // df
    let a = go(argv(&[&"df", &"--json", &d.url("m", "")]));
    expect_code(&a, 0);
    let v = json_value(&a);
    let (total, free, avail) = (
        v["total"].as_u64().unwrap(),
        v["free"].as_u64().unwrap(),
        v["available"].as_u64().unwrap(),
    );
    assert!(total > 0 && free <= total && avail <= free, "{v}");

    // find
    let found = |rel: &str, glob: &str| -> Vec<String> {
        let a = go(argv(&[
            &"find",
            &"--json",
            &"--name",
            &glob,
            &d.url("m", rel),
        ]));
        expect_code(&a, 0);
        json_value(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        found("", "*.txt"),
        ["docs/a.txt", "docs/sub/c.txt", "link.txt", "top.txt"]
    );
    assert_eq!(found("docs", "*.txt"), ["a.txt", "sub/c.txt"]);
    assert_eq!(found("", "sub"), ["docs/sub"]);
    assert!(found("", "*.nothing").is_empty());
    let a = go(argv(&[&"find", &"--name", &"*.md", &d.url("m", "")]));
    expect_code(&a, 0);
    assert!(
        stdout_of(&a).trim_end().ends_with("docs/b.md"),
        "{}",
        stdout_of(&a)
    );
    expect_code(&go(argv(&[&"find", &"--name", &"[", &d.url("m", "")])), 2);

    // rm: asks first; "n" or no answer removes nothing
    let before = snapshot_into(&sb, m.root(), "before");
    for answer in ["n\n", "", "no\n"] {
        let a = go_with_stdin(argv(&[&"rm", &d.url("m", "docs")]), answer);
        expect_code(&a, 1);
        assert_trees_equal(&before, m.root());
    }
    let a = go_with_stdin(argv(&[&"rm", &d.url("m", "bin/data.bin")]), "y\n");
    expect_code(&a, 0);
    assert!(!m.exists("bin/data.bin") && m.exists("bin/pipe"));
    let a = go(argv(&[&"rm", &"--yes", &"--json", &d.url("m", "docs")]));
    expect_code(&a, 0);
    assert_eq!(json_value(&a), serde_json::json!({"removed": 6}));
    assert!(!m.exists("docs"));
    assert_eq!(
        m.listing(),
        set(&["bin/", "bin/pipe", "empty-dir/", "link.txt", "top.txt"])
    );
    // rm of a symlink removes the link, not its target
    expect_code(&go(argv(&[&"rm", &"--yes", &d.url("m", "link.txt")])), 0);
    assert_eq!(m.read("top.txt"), b"top level");
    // not the module's root, not a missing path
    expect_refused(&go(argv(&[&"rm", &"--yes", &d.url("m", "")])), "root");
    expect_code(&go(argv(&[&"rm", &"--yes", &d.url("m", "missing")])), 2);
    assert_eq!(
        m.listing(),
        set(&["bin/", "bin/pipe", "empty-dir/", "top.txt"])
    );
}

// ---------------------------------------------------------------------------------------------
// 11. Dry runs
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_push_changes_nothing_and_lists_what_would_be_done() {
    let sb = Sandbox::new();
    let src = sb.src();
    small_tree(&src);
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve(&[("m", m.root())]);
    expect_code(&go(argv(&[&"mirror", &src.root(), &d.url("m", "d")])), 0);
    assert_trees_equal(src.root(), &m.p("d"));

    src.file("top.txt", b"changed!")
        .file("new/file", b"new")
        .remove("d/e")
        .chmod("d/one.txt", 0o600);
    let snap = snapshot_into(&sb, m.root(), "snap");
    let a = go(argv(&[
        &"mirror",
        &"-n",
        &"-v",
        &src.root(),
        &d.url("m", "d"),
    ]));
    expect_code(&a, 0);
    assert_trees_equal(&snap, m.root());
    let v = verbose_entries(&stdout_of(&a));
    for e in [
        entry("*", "top.txt"),
        entry("+", "new/"),
        entry("+", "new/file"),
        entry("-", "d/e/"),
        entry(".", "d/one.txt"),
    ] {
        assert!(v.contains(&e), "missing {e:?} in {v:?}");
    }
    assert!(stderr_of(&a).contains("dry run"), "{}", stderr_of(&a));

    // what the dry run listed is what a real run does
    let dry = json_of(&go(argv(&[
        &"mirror",
        &"-n",
        &"--json",
        &src.root(),
        &d.url("m", "d"),
    ])));
    assert_trees_equal(&snap, m.root());
    assert_eq!(dry["dry_run"], true);
    let real = json_of(&go(argv(&[
        &"mirror",
        &"--json",
        &src.root(),
        &d.url("m", "d"),
    ])));
    assert_eq!(dry["actions"], real["actions"]);
    assert_trees_equal(src.root(), &m.p("d"));

    // a dry run into folders that do not exist makes none of them
    let a = go(argv(&[
        &"copy",
        &"-n",
        &"-v",
        &src.root(),
        &d.url("m", "x/y/z"),
    ]));
    expect_code(&a, 0);
    assert!(!m.exists("x"), "a dry run made {:?}", m.listing());
    assert!(verbose_entries(&stdout_of(&a)).contains(&entry("+", "top.txt")));
    let a = go(argv(&[
        &"copy",
        &"-n",
        &src.p("top.txt"),
        &d.url("m", "f/g/"),
    ]));
    expect_code(&a, 0);
    assert!(!m.exists("f"), "a dry run made {:?}", m.listing());
    let a = go(argv(&[&"move", &"-n", &src.root(), &d.url("m", "moved")]));
    expect_code(&a, 0);
    assert!(!m.exists("moved"));
    assert!(src.exists("top.txt"), "a dry-run move removed its source");
}

#[test]
fn dry_run_pull_changes_nothing_and_lists_what_would_be_done() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    small_tree(&Tree::at(m.p("d")));
    let d = Daemon::serve(&[("m", m.root())]);
    let msnap = snapshot_into(&sb, m.root(), "msnap");
    let local = sb.tree("local");
    local
        .file("junk", b"j")
        .file("top.txt", b"other")
        .file("d/one.txt", b"one")
        .set_mtime("d/one.txt", 1_500_000_000, 42);
    let lsnap = snapshot_into(&sb, local.root(), "lsnap");
    for mode in ["copy", "mirror", "move"] {
        let a = go(argv(&[
            &mode,
            &"-n",
            &"-v",
            &d.url("m", "d"),
            &local.root(),
        ]));
        expect_code(&a, 0);
        assert_trees_equal(&lsnap, local.root());
        assert_trees_equal(&msnap, m.root());
        let v = verbose_entries(&stdout_of(&a));
        for e in [
            entry("*", "top.txt"),
            entry("+", "d/e/two.bin"),
            entry(".", "d/one.txt"),
        ] {
            assert!(v.contains(&e), "{mode}: missing {e:?} in {v:?}");
        }
        assert_eq!(
            v.contains(&entry("-", "junk")),
            mode == "mirror",
            "{mode}: {v:?}"
        );
    }
    // what the dry run listed is what a real run does
    let dry = json_of(&go(argv(&[
        &"mirror",
        &"-n",
        &"--json",
        &d.url("m", "d"),
        &local.root(),
    ])));
    assert_eq!(dry["dry_run"], true);
    assert_trees_equal(&lsnap, local.root());
    let real = json_of(&go(argv(&[
        &"mirror",
        &"--json",
        &d.url("m", "d"),
        &local.root(),
    ])));
    assert_eq!(dry["actions"], real["actions"]);
    assert_trees_equal(&m.p("d"), local.root());
    // a dry run does not make the destination
    let a = go(argv(&[
        &"copy",
        &"-n",
        &d.url("m", "d"),
        &sb.join("new/deeper"),
    ]));
    expect_code(&a, 0);
    assert!(!sb.join("new").exists());
    let a = go(argv(&[
        &"copy",
        &"-n",
        &d.url("m", "d/top.txt"),
        &sb.join("new2/"),
    ]));
    expect_code(&a, 0);
    assert!(!sb.join("new2").exists());
}

#[test]
fn ls_of_a_folder_with_many_entries() {
    const N: usize = 40_000;
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.dir("huge");
    for i in 0..N {
        std::fs::File::create(m.p(format!("huge/an-entry-with-a-rather-long-name-{i:06}.txt")))
            .unwrap();
    }
    let d = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[&"ls", &d.url("m", "huge")]));
    expect_code(&a, 0);
    assert_eq!(stdout_of(&a).lines().count(), N);
    let a = go(argv(&[&"du", &"--json", &d.url("m", "huge")]));
    expect_code(&a, 0);
    assert_eq!(json_value(&a)["files"], N);
}

#[test]
fn the_daemon_refuses_sessions_past_max_connections() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("f", b"f");
    let mut d = Daemon::with_config_plain(&[module("m", m.root())], "max_connections = 1");
    // A session that said hello and stays holds the only place (one that says nothing holds
    // none: `security.rs`, idle connections).
    let (hog, answer) = raw_hello(&d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
    let a = go(argv(&[&"ls", &d.url("m", "")]));
    expect_refused(&a, "busy");
    let a = go(argv(&[&"copy", &d.url("m", ""), &sb.join("pulled")]));
    expect_refused(&a, "busy");
    assert!(!sb.join("pulled").exists());
    drop(hog);
    // Its slot is free again once it hangs up.
    let ok = wait_for(Duration::from_secs(10), || {
        code_of(&go(argv(&[&"ls", &d.url("m", "")]))) == 0
    });
    assert!(ok, "the session slot was not released");
    expect_code(
        &go(argv(&[&"copy", &d.url("m", ""), &sb.join("pulled")])),
        0,
    );
    assert_trees_equal(m.root(), &sb.join("pulled"));
    d.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// Options carried to the daemon, and connection errors
// ---------------------------------------------------------------------------------------------

/// `--delete-after` reaches the daemon: its deletions come after every copy it makes.
#[test]
fn push_mirror_with_delete_after_deletes_last() {
    let sb = Sandbox::new();
    let src = sb.src();
    let m = sb.tree("mod");
    for d in 0..20 {
        src.file(format!("d{d}/new"), b"n");
        m.file(format!("t/d{d}/old"), b"o");
    }
    let d = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[
        &"mirror",
        &"-v",
        &"--delete-after",
        &src.root(),
        &d.url("m", "t"),
    ]));
    expect_code(&a, 0);
    assert_eq!(assert_deletions_come_last(&stdout_of(&a)), 20);
    assert_trees_equal(src.root(), &m.p("t"));
}

#[test]
fn push_honours_excludes_max_delete_and_checksum() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("keep.txt", b"k")
        .file("skip.log", b"s")
        .file("sub/also.log", b"s2");
    let m = sb.tree("mod");
    m.file("d/stale1", b"1")
        .file("d/stale2", b"2")
        .file("d/mine.log", b"excluded, kept");
    let d = Daemon::serve(&[("m", m.root())]);
    let url = d.url("m", "d");

    let a = go(argv(&[
        &"mirror",
        &"--max-delete",
        &"1",
        &"--exclude",
        &"**/*.log",
        &src.root(),
        &url,
    ]));
    expect_code(&a, 1);
    assert!(
        m.exists("d/stale1") && m.exists("d/stale2"),
        "{:?}",
        m.listing()
    );
    let a = go(argv(&[
        &"mirror",
        &"--exclude",
        &"**/*.log",
        &src.root(),
        &url,
    ]));
    expect_code(&a, 0);
    assert_eq!(
        m.listing(),
        set(&["d/", "d/keep.txt", "d/mine.log", "d/sub/"])
    );
    assert_eq!(m.read("d/mine.log"), b"excluded, kept");

    // same size and mtime, other bytes: only --checksum sees it
    let (s, n) = src.mtime("keep.txt");
    src.file("keep.txt", b"K").set_mtime("keep.txt", s, n);
    expect_code(&go(argv(&[&"copy", &src.root(), &url])), 0);
    assert_eq!(m.read("d/keep.txt"), b"k");
    expect_code(&go(argv(&[&"copy", &"--checksum", &src.root(), &url])), 0);
    assert_eq!(m.read("d/keep.txt"), b"K");
}

#[test]
fn unreachable_daemon_and_unknown_module_are_refused() {
    let sb = Sandbox::new();
    let src = sb.src();
    small_tree(&src);
    let m = sb.tree("mod");
    m.mkroot();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("blit://127.0.0.1:{port}/m");
    expect_code(&go(argv(&[&"copy", &src.root(), &dead])), 2);
    expect_code(&go(argv(&[&"copy", &dead, &sb.join("x")])), 2);
    expect_code(&go(argv(&[&"ls", &dead])), 2);
    let d = Daemon::serve(&[("m", m.root())]);
    expect_refused(
        &go(argv(&[&"copy", &src.root(), &d.url("nope", "")])),
        "no module",
    );
    expect_refused(
        &go(argv(&[&"copy", &d.url("m", "missing"), &sb.join("x")])),
        "missing",
    );
    expect_refused(
        &go(argv(&[&"copy", &d.url("m", ""), &d.url("m", "x")])),
        "remote",
    );
    assert!(!sb.join("x").exists());
    assert!(m.listing().is_empty());
}

// ---------------------------------------------------------------------------------------------
// TLS trust and plain TCP
// ---------------------------------------------------------------------------------------------

/// The fingerprint a daemon printed on its listening line.
fn fingerprint_of(tls_dir: &Path) -> String {
    // The shared identity's certificate is what every TLS daemon here shows; ask a fresh daemon.
    let sb = Sandbox::new();
    sb.tree("m").mkroot();
    let mut child = std::process::Command::new(daemon_binary())
        .args(["--listen", "127.0.0.1:0", "--module"])
        .arg(format!("m={}", sb.join("m").display()))
        .arg("--tls-dir")
        .arg(tls_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line.split("fingerprint ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no fingerprint on {line:?}"))
        .to_string()
}

#[test]
fn tls_trust_on_first_use_then_pinning() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("f.txt", b"secret bytes");
    let d = Daemon::serve(&[("m", m.root())]);
    let fp = fingerprint_of(&tls_dir());
    // A client with its own, empty known_hosts: trusts on first use and records the host.
    let kh = sb.join("kh");
    let mut cmd = client(argv(&[&"copy", &d.url("m", ""), &sb.join("first")]));
    cmd.env("BLIT_KNOWN_HOSTS", &kh);
    let a = finish_remote(cmd);
    expect_code(&a, 0);
    assert!(stderr_of(&a).contains("trusting"), "{}", stderr_of(&a));
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(recorded.trim(), format!("{} {fp}", d.addr()));
    assert_eq!(
        std::fs::read(sb.join("first/f.txt")).unwrap(),
        b"secret bytes"
    );
    // The recorded host no longer asks.
    let mut cmd = client(argv(&[&"copy", &d.url("m", ""), &sb.join("second")]));
    cmd.env("BLIT_KNOWN_HOSTS", &kh);
    let a = finish_remote(cmd);
    expect_code(&a, 0);
    assert!(!stderr_of(&a).contains("trusting"));
    // A different recorded fingerprint for this host (the daemon's certificate "changed"):
    // refused, nothing written.
    std::fs::write(&kh, format!("{} {}\n", d.addr(), "ab".repeat(32))).unwrap();
    let mut cmd = client(argv(&[&"copy", &d.url("m", ""), &sb.join("third")]));
    cmd.env("BLIT_KNOWN_HOSTS", &kh);
    let a = finish_remote(cmd);
    expect_refused(&a, "fingerprint");
    assert!(!sb.join("third").exists());
    // An explicit pin: the right one works, a wrong one is refused.
    let a = go(argv(&[
        &"copy",
        &"--tls-fingerprint",
        &fp,
        &d.url("m", ""),
        &sb.join("pinned"),
    ]));
    expect_code(&a, 0);
    let a = go(argv(&[
        &"copy",
        &"--tls-fingerprint",
        &"00".repeat(32),
        &d.url("m", ""),
        &sb.join("wrong-pin"),
    ]));
    expect_refused(&a, "fingerprint");
    assert!(!sb.join("wrong-pin").exists());
}

#[test]
fn tls_and_plain_must_be_chosen_on_both_sides() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("f.txt", b"f");
    let tls = Daemon::serve(&[("m", m.root())]);
    let plain = Daemon::serve_plain(&[("m", m.root())]);
    // `client` adds --no-tls for the plain daemon only; say it explicitly for the TLS one.
    let a = go(argv(&[
        &"copy",
        &"--no-tls",
        &tls.url("m", ""),
        &sb.join("a"),
    ]));
    expect_refused(&a, "requires TLS");
    let mut cmd = blit();
    cmd.args(argv(&[&"copy", &plain.url("m", ""), &sb.join("b")]))
        .env("BLIT_KNOWN_HOSTS", known_hosts());
    let a = finish_remote(cmd);
    expect_refused(&a, "--no-tls");
    assert!(!sb.join("a").exists() && !sb.join("b").exists());
    // Both plain: works.
    expect_code(&go(argv(&[&"copy", &plain.url("m", ""), &sb.join("c")])), 0);
    assert_trees_equal(m.root(), &sb.join("c"));
}

// ---------------------------------------------------------------------------------------------
// Resume
// ---------------------------------------------------------------------------------------------

#[test]
fn resume_after_the_daemon_is_killed_sends_only_what_is_missing() {
    let sb = Sandbox::new();
    let src = sb.src();
    let size: u64 = 192 << 20;
    random_file(&src.p("big.bin"), size);
    let m = sb.tree("mod");
    m.mkroot();
    let mut d = Daemon::serve(&[("m", m.root())]);
    let mut child = client(argv(&[
        &"copy",
        &"--resume",
        &src.root(),
        &d.url("m", "dst"),
    ]))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Kill the daemon once part of the file has landed in its fixed temporary.
    let partial = || {
        temps_under(m.root())
            .into_iter()
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".~blit-0-")
            })
            .map(|p| m.root().join(p))
    };
    let landed = wait_for(Duration::from_secs(30), || {
        partial()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|md| md.len() >= 2 << 20)
    });
    assert!(landed, "no partial file appeared");
    d.kill9();
    let out = wait_child(&mut child, Duration::from_secs(30));
    assert!(!out.status.success(), "the copy finished before the kill");
    let kept = std::fs::metadata(partial().expect("the partial file is kept"))
        .unwrap()
        .len();
    assert!(kept < size, "partial is {kept} bytes");
    assert!(
        !m.exists("dst/big.bin"),
        "a partial file stands under the final name"
    );

    // Corrupt one kept block: resuming must notice it by hash and send it again.
    {
        use std::os::unix::fs::FileExt;
        let p = partial().unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(b"CORRUPTED BLOCK", 1 << 20).unwrap();
    }
    let d2 = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[
        &"copy",
        &"--resume",
        &"--json",
        &src.root(),
        &d2.url("m", "dst"),
    ]));
    expect_code(&a, 0);
    assert_trees_equal(src.root(), &m.p("dst"));
    let sent = bytes_moved(&json_of(&a));
    let whole_blocks = kept / (1 << 20) * (1 << 20);
    assert_eq!(
        sent,
        size - whole_blocks + (1 << 20),
        "resume sent {sent} bytes; {kept} were kept ({whole_blocks} in whole blocks, one corrupted)"
    );
    assert!(temps_under(m.root()).is_empty());
}

#[test]
fn without_resume_a_leftover_partial_is_removed_and_never_used() {
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("big.bin", noise(3 << 20, 1));
    let m = sb.tree("mod");
    // A partial from an earlier interrupted --resume run, holding wrong data.
    let name = blit_core::tempname::partial(OsStr::new("big.bin"));
    m.file(Path::new("dst").join(&name), noise(2 << 20, 2));
    let d = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[&"copy", &"--json", &src.root(), &d.url("m", "dst")]));
    expect_code(&a, 0);
    assert_eq!(bytes_moved(&json_of(&a)), 3 << 20);
    assert_trees_equal(src.root(), &m.p("dst"));
    assert!(temps_under(m.root()).is_empty());
}

/// A tree wider than the 64 listings a remote source asks for ahead: the rest are queued and
/// asked for as listings are taken, each exactly once, and the copy is whole both ways.
#[test]
fn trees_wider_than_the_listing_window_copy_whole() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    for d in 0..150 {
        m.file(format!("wide/d{d:03}/a"), format!("a{d}"))
            .file(format!("wide/d{d:03}/sub/b"), format!("b{d}"));
    }
    let d = Daemon::serve(&[("m", m.root())]);
    let pulled = sb.tree("pulled");
    expect_code(
        &go(argv(&[&"mirror", &d.url("m", "wide"), &pulled.root()])),
        0,
    );
    assert_trees_equal(&m.p("wide"), pulled.root());
    expect_code(
        &go(argv(&[&"mirror", &pulled.root(), &d.url("m", "back")])),
        0,
    );
    assert_trees_equal(pulled.root(), &m.p("back"));
}

/// `find` stops at its limit, prints what it found, says so, and exits 1.
#[test]
fn find_says_when_it_stopped_at_its_limit() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.mkroot();
    let many = m.p("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..4_150 {
        std::fs::File::create(many.join(format!("f{i:05}.txt"))).unwrap();
    }
    let d = Daemon::serve(&[("m", m.root())]);
    let a = go(argv(&[&"find", &d.url("m", "many"), &"--name", &"*.txt"]));
    expect_code(&a, 1);
    assert_eq!(stdout_of(&a).lines().count(), 4096);
    assert!(
        stderr_of(&a).contains("stopped after 4096 entries"),
        "{}",
        stderr_of(&a)
    );
    let a = go(argv(&[
        &"find",
        &d.url("m", "many"),
        &"--name",
        &"f0000?.txt",
    ]));
    expect_code(&a, 0);
    assert_eq!(stdout_of(&a).lines().count(), 10);
}

// ---------------------------------------------------------------------------------------------
// 13. Large files striped across connections
// ---------------------------------------------------------------------------------------------

/// Files large enough to stripe (stripes are at least 16 MiB): 40 MiB (two stripes at most),
/// 56 MiB (three), a 64 MiB sparse file with data at its start, its middle and its end, and a
/// small file, never striped.
fn striped_tree(t: &Tree) {
    use std::os::unix::fs::FileExt;
    random_file(&t.p("two.bin"), 40 << 20);
    random_file(&t.p("d/three.bin"), 56 << 20);
    let f = std::fs::File::create(t.p("d/sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    for (i, off) in [0u64, (31 << 20) + 12_345, (64 << 20) - 4096]
        .into_iter()
        .enumerate()
    {
        f.write_all_at(&noise(4096, i as u64), off).unwrap();
    }
    t.file("small.txt", b"small");
}

#[test]
fn large_files_are_striped_across_connections_both_ways() {
    let sb = Sandbox::new();
    let src = sb.src();
    striped_tree(&src);
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve(&[("m", m.root())]);

    let push = go(argv(&[
        &"copy",
        &"--json",
        &"--streams",
        &"3",
        &src.root(),
        &d.url("m", "pushed"),
    ]));
    expect_code(&push, 0);
    assert_trees_equal(src.root(), &m.p("pushed"));
    assert_eq!(striped_files(&push), 3, "{}", stdout_of(&push));

    let dst = sb.dst();
    let pull = go(argv(&[
        &"copy",
        &"--json",
        &"--streams",
        &"3",
        &d.url("m", "pushed"),
        &dst.root(),
    ]));
    expect_code(&pull, 0);
    assert_trees_equal(src.root(), dst.root());
    assert_eq!(striped_files(&pull), 3, "{}", stdout_of(&pull));

    // The daemon is on this machine: by default one stream, nothing striped, same result.
    let one = sb.tree("one");
    let a = go(argv(&[
        &"copy",
        &"--json",
        &d.url("m", "pushed"),
        &one.root(),
    ]));
    expect_code(&a, 0);
    assert_trees_equal(src.root(), one.root());
    assert_eq!(striped_files(&a), 0);

    // A mirror after edits inside the large files (same sizes, new times) sends them again,
    // striped, and converges.
    random_file(&src.p("two.bin"), 40 << 20);
    random_file(&src.p("d/three.bin"), 56 << 20);
    let a = go(argv(&[
        &"mirror",
        &"--json",
        &"--streams",
        &"2",
        &src.root(),
        &d.url("m", "pushed"),
    ]));
    expect_code(&a, 0);
    assert_trees_equal(src.root(), &m.p("pushed"));
    assert_eq!(striped_files(&a), 2, "{}", stdout_of(&a));
    assert!(temps_under(m.root()).is_empty());
}

fn attach_hello(module: &str, session: u64, secret: [u8; 32]) -> Hello {
    Hello {
        module: module.into(),
        path: Vec::new(),
        token: Some(FIXTURE_TOKEN.into()),
        role: Role::Attach { session, secret },
    }
}

/// An extra connection lost in the middle of a striped file does not fail the file: it goes
/// again, as one stream on the main connection, held to the file as it is then.
#[test]
fn a_lost_extra_connection_sends_the_file_again_on_the_main_one() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let len = 40usize << 20;
    let data = noise(len, 77);
    let mut s = raw_push(&d, Mode::Copy, 2);
    let (session, secret) = match wire::read_frame(&mut s).unwrap() {
        Some(Frame::Msg(m)) => match *m {
            Msg::Streams {
                session, secret, ..
            } => (session, secret),
            other => panic!("expected the invitation first, got {other:?}"),
        },
        other => panic!("expected the invitation first, got {other:?}"),
    };
    let (mut spare, answer) = raw_hello(&d, attach_hello("m", session, secret));
    assert_eq!(answer, Msg::Welcome(None));
    // The extra connection takes its stripe's request and dies.
    let spare = std::thread::spawn(move || loop {
        match wire::read_frame(&mut spare).expect("read on the extra connection") {
            Some(Frame::Msg(m)) if matches!(*m, Msg::Req { .. }) => {
                let Msg::Req { req, .. } = *m else {
                    unreachable!()
                };
                return req;
            }
            Some(_) => continue,
            None => panic!("the daemon asked nothing on the extra connection"),
        }
    });
    let mut spare = Some(spare);
    let mut asked = Vec::new();
    let finished = serve_push(&mut s, |s, id, req| match req {
        Req::List { rel, .. } if rel.is_empty() => Rep::Entries {
            entries: vec![WireListed::Ok(wire_entry(
                b"big.bin",
                Kind::File,
                len as u64,
                8,
            ))],
            more: false,
            last: true,
        },
        Req::ReadRange { start, end, .. } => {
            // Answered only once the other stripe's connection is gone.
            let theirs = spare.take().expect("one stripe here").join().unwrap();
            assert!(
                matches!(theirs, Req::ReadRange { start: 0, .. }) || start == 0,
                "the stripes do not start the file: {theirs:?}"
            );
            asked.push("stripe".to_string());
            send_data(s, id, start, &data[start as usize..end as usize]);
            Rep::ReadDone(end - start)
        }
        Req::Stat { .. } => {
            asked.push("stat".to_string());
            Rep::Entries {
                entries: vec![WireListed::Ok(wire_entry(
                    b"big.bin",
                    Kind::File,
                    len as u64,
                    8,
                ))],
                more: false,
                last: true,
            }
        }
        Req::Read { expect, .. } => {
            asked.push("read".to_string());
            assert_eq!(expect.map(|x| (x.size, x.ino)), Some((len as u64, 8)));
            send_data(s, id, 0, &data);
            Rep::ReadDone(len as u64)
        }
        other => panic!("unexpected request {other:?}"),
    });
    let f = finished.expect("the daemon hung up without finishing");
    assert_eq!(f.refused, None);
    assert_eq!(
        (f.actions.create.count, f.actions.create.bytes),
        (2, len as u64),
        "the folder and the whole file created"
    );
    assert_eq!(asked, ["stripe", "stat", "read"]);
    assert!(m.read("landing/big.bin") == data, "content differs");
    assert!(temps_under(m.root()).is_empty());
}

/// A push's extra connections are admitted only with its session number, its secret and its
/// module, only as many as it asked for, and only while it runs.
#[test]
fn extra_connections_need_the_push_sessions_secret() {
    let sb = Sandbox::new();
    let (m, other) = (sb.tree("mod"), sb.tree("other"));
    m.mkroot();
    other.mkroot();
    let d = Daemon::serve_plain(&[("m", m.root()), ("other", other.root())]);
    let mut s = raw_push(&d, Mode::Copy, 3);
    let (session, secret, count) = match wire::read_frame(&mut s).unwrap() {
        Some(Frame::Msg(m)) => match *m {
            Msg::Streams {
                session,
                secret,
                count,
            } => (session, secret, count),
            other => panic!("expected the invitation first, got {other:?}"),
        },
        other => panic!("expected the invitation first, got {other:?}"),
    };
    assert_eq!(count, 2);
    let mut wrong = secret;
    wrong[31] ^= 1;
    for (hello, what) in [
        (attach_hello("m", session, wrong), "a wrong secret"),
        (attach_hello("m", session + 1, secret), "another session"),
        (attach_hello("other", session, secret), "another module"),
    ] {
        let (_s, answer) = raw_hello(&d, hello);
        assert!(
            matches!(&answer, Msg::Refused(why) if why.contains("no push is waiting")),
            "{what} was let in: {answer:?}"
        );
    }
    let (a1, answer) = raw_hello(&d, attach_hello("m", session, secret));
    assert_eq!(answer, Msg::Welcome(None));
    let (a2, answer) = raw_hello(&d, attach_hello("m", session, secret));
    assert_eq!(answer, Msg::Welcome(None));
    let (_a3, answer) = raw_hello(&d, attach_hello("m", session, secret));
    assert!(
        matches!(&answer, Msg::Refused(_)),
        "a third connection was let in: {answer:?}"
    );

    // Finish the push: an empty source folder.
    let finished = serve_push(&mut s, |_, _, req| match req {
        Req::List { .. } => Rep::Entries {
            entries: Vec::new(),
            more: false,
            last: true,
        },
        other => panic!("unexpected request {other:?}"),
    });
    let f = finished.expect("the daemon hung up without finishing");
    assert_eq!(f.refused, None);
    s.shutdown(Shutdown::Write).unwrap();
    // The attached connections end with the push.
    for mut a in [a1, a2] {
        a.shutdown(Shutdown::Write).unwrap();
        until_hangup(&mut a, "an attached connection after its push ended");
    }
    // Once the push is over, its session admits nobody.
    let (_s, answer) = raw_hello(&d, attach_hello("m", session, secret));
    assert!(matches!(&answer, Msg::Refused(_)), "{answer:?}");
    assert!(m.exists("landing"));
}

/// Version negotiation: a client that speaks only version 1 (before striping) hears at the
/// preamble that the daemon shares no version with it, and the daemon hangs up.
#[test]
fn a_client_speaking_only_an_older_version_is_told_so() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let mut s = raw_connect(&d);
    let mut p = b"BLIT".to_vec();
    p.extend_from_slice(&1u16.to_le_bytes());
    p.extend_from_slice(&1u16.to_le_bytes());
    p.push(0);
    s.write_all(&p).unwrap();
    let err = wire::read_server_preamble(&mut s).unwrap_err();
    assert!(err.to_string().contains("no protocol version"), "{err}");
    until_hangup(&mut s, "a client of an older version");
    // The daemon still serves current clients.
    let (_s, answer) = raw_hello(&d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
}

/// A pull writes only beneath its destination, whatever the daemon names the root it serves:
/// a single file's name is the daemon's word, and one with `..` or a separator is refused
/// before anything is made.
#[test]
fn a_hostile_daemon_cannot_name_a_pulled_file_outside_the_destination() {
    let sb = Sandbox::new();
    let dst = sb.dst();
    dst.mkroot();
    let outside = sb.join("escaped");
    let absolute = outside.join("abs");
    for name in [
        b"../escaped".to_vec(),
        b"..".to_vec(),
        b"".to_vec(),
        b"x/../../escaped".to_vec(),
        absolute.as_os_str().as_encoded_bytes().to_vec(),
    ] {
        let root = wire_entry(&name, Kind::File, 5, 9);
        let (port, t) = fake_daemon(1, Msg::Welcome(Some(root)), |s, id, req| match req {
            Req::Read { .. } => {
                send_data(s, id, 0, b"owned");
                Some(Rep::ReadDone(5))
            }
            _ => None,
        });
        let a = fake_client(&["copy", "--no-progress"], port, "/f", &[&dst.slash()]);
        expect_refused(&a, "invalid name");
        assert!(
            !outside.exists(),
            "name {name:?} wrote outside the destination"
        );
        let made: Vec<_> = std::fs::read_dir(dst.root()).unwrap().collect();
        assert!(made.is_empty(), "name {name:?} made {made:?}");
        t.join().unwrap();
    }
}

/// `move` across machines removes a source only if it is still what was copied: a file written
/// to after its copy (its size or time no longer those the copy carries) stays where it is.
#[test]
fn a_moved_file_changed_after_its_copy_is_not_removed() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.mkroot();
    let d = Daemon::serve_plain(&[("m", m.root())]);
    for changed in [false, true] {
        let copied = wire_entry(b"f", Kind::File, 5, 8);
        let mut now = copied.clone();
        if changed {
            now.size = 9;
            now.mtime_sec += 1;
        }
        let mut s = raw_push(&d, Mode::Move, 1);
        let mut asked = Vec::new();
        let finished = serve_push(&mut s, |s, id, req| match req {
            Req::List { rel, .. } if rel.is_empty() => Rep::Entries {
                entries: vec![WireListed::Ok(copied.clone())],
                more: false,
                last: true,
            },
            Req::Read { rel, .. } if rel == b"f" => {
                send_data(s, id, 0, b"hello");
                Rep::ReadDone(5)
            }
            Req::Stat { rel, .. } if rel == b"f" => {
                asked.push("stat");
                Rep::Entries {
                    entries: vec![WireListed::Ok(now.clone())],
                    more: false,
                    last: true,
                }
            }
            Req::Remove(rel) if rel == b"f" => {
                asked.push("remove");
                Rep::Removed(true)
            }
            Req::RemoveDir(_) => Rep::Removed(false),
            other => panic!("unexpected request {other:?}"),
        });
        assert!(finished.is_some(), "the daemon hung up without finishing");
        let want: &[&str] = if changed {
            &["stat"]
        } else {
            &["stat", "remove"]
        };
        assert_eq!(asked, want, "changed after the copy: {changed}");
        assert_eq!(m.read("landing/f"), b"hello");
        m.remove("landing");
    }
}

/// A fifo in a module (pushed there by a client, say) never hangs the daemon: reading it,
/// hashing it or pulling it as a root each get an answer, and the session goes on. An open for
/// reading would otherwise wait for a writer that never comes, holding a session slot forever.
#[test]
fn a_fifo_in_the_module_never_hangs_a_session() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("ok.txt", b"fine").fifo("p");
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let (mut s, answer) = raw_hello(&d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
    let read = Req::Read {
        rel: b"p".to_vec(),
        expect: None,
        have: Vec::new(),
    };
    let (data, rep) = raw_request(&mut s, 1, read);
    assert!(data.is_empty());
    assert!(matches!(rep, Rep::Changed | Rep::Err(_)), "{rep:?}");
    let (_, rep) = raw_request(&mut s, 2, Req::Hash(b"p".to_vec()));
    assert!(matches!(rep, Rep::Err(_)), "{rep:?}");
    let ok = Req::Read {
        rel: b"ok.txt".to_vec(),
        expect: None,
        have: Vec::new(),
    };
    let (data, rep) = raw_request(&mut s, 3, ok);
    assert_eq!((data.as_slice(), rep), (&b"fine"[..], Rep::ReadDone(4)));
    // The fifo as the root of a pull: described, not opened.
    let (_s2, answer) = raw_hello(&d, pull_hello("m", b"p"));
    let Msg::Welcome(Some(root)) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(root.kind, Kind::Fifo);
}

/// `Stat` of a pulled folder's root describes that folder, and never says where the module
/// lives on the daemon's machine.
#[test]
fn stat_of_a_served_root_folder_describes_it_and_hides_its_location() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("d/f", b"x")
        .chmod("d", 0o751)
        .set_mtime("d", 1_500_000_000, 5);
    let d = Daemon::serve_plain(&[("m", m.root())]);
    for (path, want_mode) in [(&b""[..], None), (&b"d"[..], Some(0o751))] {
        let (mut s, answer) = raw_hello(&d, pull_hello("m", path));
        assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
        let stat = Req::Stat {
            rel: Vec::new(),
            xattrs: true,
        };
        let (_, rep) = raw_request(&mut s, 1, stat);
        let Rep::Entries { entries, .. } = &rep else {
            panic!("{rep:?}")
        };
        let [WireListed::Ok(w)] = entries.as_slice() else {
            panic!("{rep:?}")
        };
        assert_eq!(w.kind, Kind::Dir, "{w:?}");
        assert_eq!(w.link, None);
        if let Some(mode) = want_mode {
            assert_eq!(w.perm & 0o7777, mode);
            assert_eq!((w.mtime_sec, w.mtime_nsec), (1_500_000_000, 5));
        }
        let shown = format!("{rep:?}");
        let location = m.root().to_string_lossy().into_owned();
        assert!(!shown.contains(&location), "{shown}");
    }
}

/// `blit ls` pages through a big folder; a daemon whose pages never move past the last name is
/// an error, not an endless loop.
#[test]
fn ls_refuses_a_listing_that_does_not_advance() {
    let page = Msg::Admin(wire::AdminRep::Entries {
        entries: vec![(b"a".to_vec(), wire_entry(b"a", Kind::File, 1, 2))],
        more: true,
    });
    let (port, t) = fake_daemon(2, page, |_, _, _| None);
    let a = fake_client(&["ls"], port, "/", &[]);
    expect_refused(&a, "does not advance");
    t.join().unwrap();
}

/// A push's destination is checked beneath the module when the push starts; a symlink put at
/// its name afterwards (by another session, say) while the engine waits for the source's first
/// listing must not lead the writes out of the module.
#[test]
fn a_link_swapped_in_for_a_push_destination_is_not_followed() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.mkroot();
    let outside = sb.tree("outside");
    outside.mkroot();
    let d = Daemon::serve_plain(&[("m", m.root())]);
    let mut s = raw_push(&d, Mode::Mirror, 1);
    let (landing, target) = (m.p("landing"), outside.root().to_path_buf());
    let finished = serve_push(&mut s, |s, id, req| match req {
        Req::List { rel, .. } if rel.is_empty() => {
            if !landing.exists() {
                std::os::unix::fs::symlink(&target, &landing).unwrap();
            }
            Rep::Entries {
                entries: vec![WireListed::Ok(wire_entry(b"planted", Kind::File, 5, 8))],
                more: false,
                last: true,
            }
        }
        Req::Read { .. } => {
            send_data(s, id, 0, b"owned");
            Rep::ReadDone(5)
        }
        other => panic!("unexpected request {other:?}"),
    });
    assert!(finished.is_some(), "the daemon hung up without finishing");
    let leaked: Vec<_> = std::fs::read_dir(outside.root()).unwrap().collect();
    assert!(leaked.is_empty(), "written outside the module: {leaked:?}");
    assert!(std::fs::symlink_metadata(m.p("landing"))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// A client that sends requests without ever reading the replies is stopped being read once
/// the daemon has a bounded number waiting: its requests wait in its own socket, not in the
/// daemon's memory.
#[test]
fn a_request_flood_without_reading_replies_keeps_the_daemon_bounded() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    m.file("f", b"x");
    let mut d = Daemon::serve_plain(&[("m", m.root())]);
    let before = rss_mib(d.pid());
    let (mut s, answer) = raw_hello(&d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut batch = Vec::new();
    for id in 0..4096u32 {
        let req = Req::Hash(b"no-such-file".to_vec());
        batch.extend(wire::encode_msg(&Msg::Req { id, req }).unwrap());
    }
    // Up to 2 million requests (about 40 MiB); a daemon reading them all would hold each.
    let mut sent = 0;
    while sent < 2_000_000 && s.write_all(&batch).is_ok() {
        sent += 4096;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_mib(d.pid());
    assert!(
        after < before + 120,
        "daemon grew from {before} to {after} MiB after {sent} requests"
    );
    drop(s);
    d.assert_healthy();
}
