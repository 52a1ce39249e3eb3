//! Attacks on a daemon run as root and on clients, replayed by a raw protocol peer (a client or a
//! daemon written frame by frame here, not the real `blit`): each test plays one attack from
//! docs/SECURITY.md and asserts that it is refused, that the daemon lives on, and that the module
//! holds exactly what it should.
//!
//! The daemons run as root, as CI does, and as the README's quick start would on a server;
//! where it matters, the attacker's own process runs as `nobody`.

#![cfg(target_os = "linux")]

mod common;
#[path = "torture/deep.rs"]
#[allow(dead_code)]
mod deep;
#[path = "support/remote.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use blit_core::remote::wire::{
    self, ErrorKind, Frame, Hello, Msg, PushJob, Rep, Req, Role, WireEntry, WireListed,
};
use blit_core::report::Action;
use common::*;
use fixture::*;

// ---------------------------------------------------------------------------------------------
// A hostile push client: a fake source tree described entry by entry
// ---------------------------------------------------------------------------------------------

/// What a raw push client claims its tree holds: per folder (relative path, `/`-joined) its
/// entries, and per file its bytes. Nothing here needs to exist anywhere.
#[derive(Default, Clone)]
struct FakeTree {
    folders: BTreeMap<Vec<u8>, Vec<WireEntry>>,
    contents: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl FakeTree {
    fn folder(mut self, rel: &str) -> Self {
        self.folders.entry(rel.as_bytes().to_vec()).or_default();
        if let Some((parent, name)) = split(rel) {
            let mut e = wire_entry(name.as_bytes(), Kind::Dir, 4096, ino_of(rel));
            e.uid = NOBODY;
            e.gid = NOBODY;
            self.folders.entry(parent.into()).or_default().push(e);
        }
        self
    }

    /// Adds an entry; a file's `content` is what reading it gives.
    fn entry(mut self, rel: &str, mut e: WireEntry, content: &[u8]) -> Self {
        let (parent, name) = split(rel).unwrap_or(("", rel));
        e.name = name.as_bytes().to_vec();
        if e.kind == Kind::File {
            e.size = content.len() as u64;
            self.contents
                .insert(rel.as_bytes().to_vec(), content.to_vec());
        }
        self.folders.entry(parent.into()).or_default().push(e);
        self
    }

    fn file(self, rel: &str, content: &[u8]) -> Self {
        let mut e = wire_entry(b"", Kind::File, 0, ino_of(rel));
        (e.uid, e.gid) = (NOBODY, NOBODY);
        self.entry(rel, e, content)
    }

    /// Answers one request of the daemon's engine as an honest source of this tree would.
    fn answer(&self, s: &mut TcpStream, id: u32, req: Req) -> Rep {
        match req {
            Req::List { rel, .. } => Rep::Entries {
                entries: self
                    .folders
                    .get(&rel)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(WireListed::Ok)
                    .collect(),
                more: false,
                last: true,
            },
            Req::Read { rel, .. } | Req::ReadRange { rel, .. } => {
                let data = self.contents.get(&rel).cloned().unwrap_or_default();
                send_data(s, id, 0, &data);
                Rep::ReadDone(data.len() as u64)
            }
            Req::Stat { rel, .. } => {
                let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
                    Some(i) => (rel[..i].to_vec(), rel[i + 1..].to_vec()),
                    None => (Vec::new(), rel.clone()),
                };
                let found = self.folders.get(&parent).and_then(|f| {
                    f.iter()
                        .find(|e| e.name == name)
                        .cloned()
                        .map(WireListed::Ok)
                });
                Rep::Entries {
                    entries: found.into_iter().collect(),
                    more: false,
                    last: true,
                }
            }
            Req::Hash(rel) => {
                let data = self.contents.get(&rel).cloned().unwrap_or_default();
                Rep::Hash(*blake3::hash(&data).as_bytes())
            }
            Req::Remove(_) | Req::RemoveDir(_) => Rep::Removed(false),
        }
    }
}

fn split(rel: &str) -> Option<(&str, &str)> {
    rel.rsplit_once('/')
}

/// A distinct inode number per path (hard links share one on purpose).
fn ino_of(rel: &str) -> u64 {
    1000 + rel
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        % 1_000_000
}

/// What a raw push ended with: the daemon's totals (`None`: it hung up first) and the failures
/// it reported on the way.
#[derive(Debug)]
struct Pushed {
    finished: Option<wire::Finished>,
    failures: Vec<String>,
}

/// Pushes `tree` into `m/<into>` as a raw client, answering every request until the daemon
/// finishes.
fn push_fake(addr: &str, into: &str, job: PushJob, tree: &FakeTree) -> Pushed {
    let hello = Hello {
        module: "m".into(),
        path: into.as_bytes().to_vec(),
        token: None,
        role: Role::Push(Box::new(job)),
    };
    let (mut s, answer) = raw_hello_to(addr, hello);
    assert_eq!(answer, Msg::Welcome(None), "the push was not welcomed");
    let mut failures = Vec::new();
    while let Some(frame) = wire::read_frame(&mut s).expect("read from the daemon") {
        let Frame::Msg(msg) = frame else {
            panic!("the daemon sent file data on a push")
        };
        match *msg {
            Msg::Req { id, req } => {
                let rep = tree.answer(&mut s, id, req);
                s.write_all(&wire::encode_msg(&Msg::Rep { id, rep }).unwrap())
                    .unwrap();
            }
            Msg::Failure(f) => failures.push(format!(
                "{} {}: {}",
                f.op,
                String::from_utf8_lossy(&f.path),
                f.message
            )),
            Msg::Finished(f) => {
                return Pushed {
                    finished: Some(f),
                    failures,
                }
            }
            _ => {}
        }
    }
    Pushed {
        finished: None,
        failures,
    }
}

/// A module folder owned by `nobody`, in a sandbox `nobody` can enter, as an operator would
/// prepare one for a daemon that runs its sessions as `nobody`.
fn nobody_module(sb: &Sandbox) -> Tree {
    let m = sb.tree("mod");
    m.mkroot();
    sb.give_to_nobody();
    m
}

// ---------------------------------------------------------------------------------------------
// The attacker as an unprivileged local user
// ---------------------------------------------------------------------------------------------

/// Where the attacker process finds the daemon, and which attack it plays.
const ATTACK_ADDR: &str = "BLIT_TEST_ATTACK_ADDR";
const ATTACK: &str = "BLIT_TEST_ATTACK";

/// What the attacker prints once it has played its attack: proof that it ran, and as whom.
const ATTACKED: &str = "attack played as uid";

/// Plays `attack` against `d` from a process of its own dropped to `nobody` (this test binary
/// again, running [`attacker`]; the standard library drops root's supplementary groups with
/// it): what an unprivileged local user can do, not root in disguise.
/// Panics with the attacker's output if it failed.
fn attack_as_nobody(sb: &Sandbox, d: &Daemon, attack: &str) {
    let exe = sb.nobody_executable(&std::env::current_exe().unwrap(), "attacker");
    let out = loop {
        let run = std::process::Command::new(&exe)
            .args(["attacker", "--exact", "--ignored", "--nocapture"])
            .env(ATTACK_ADDR, d.addr())
            .env(ATTACK, attack)
            .uid(NOBODY)
            .gid(NOBODY)
            .output();
        match run {
            // Another test thread's child may still hold a copied binary open for writing
            // between its fork and its exec.
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => break other.expect("start the attacker"),
        }
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.contains(&format!("{ATTACKED} {NOBODY}")),
        "the attack {attack:?} as nobody failed:\n{said}"
    );
}

/// The attacker's process (see [`attack_as_nobody`]); does nothing when run by hand.
#[test]
#[ignore = "the attacker process of the tests in this file, started by them as nobody"]
fn attacker() {
    let (Ok(addr), Ok(attack)) = (std::env::var(ATTACK_ADDR), std::env::var(ATTACK)) else {
        return;
    };
    // SAFETY: no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_ne!(uid, 0, "the attacker must not be root");
    match attack.split_once(':') {
        None if attack == "privileged" => plant_privileged_files(&addr),
        None if attack == "partial" => plant_a_partial(&addr),
        Some(("resume", len)) => {
            let big = victim_bytes(len.parse().unwrap());
            let tree = FakeTree::default().folder("").file("victim", &big);
            let pushed = push_fake(&addr, "landing", raw_push_job(Mode::Copy, true), &tree);
            assert!(pushed.finished.is_some(), "{pushed:?}");
        }
        _ => panic!("no attack {attack:?}"),
    }
    println!("{ATTACKED} {uid}");
}

// ---------------------------------------------------------------------------------------------
// 1. Privileged metadata from a client
// ---------------------------------------------------------------------------------------------

/// A file capability granting CAP_SETUID (`vfs_cap_data` revision 2, effective).
fn setuid_capability() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 7).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&[0; 8]);
    v
}

/// The attacker's push of a setuid-root copy of `id`, a setgid file, a world-writable block
/// device of the disk holding `/`, a file carrying `security.capability`, and one owned by root.
fn plant_privileged_files(addr: &str) {
    let id_bin = std::fs::read("/usr/bin/id").unwrap();
    let mut suid = wire_entry(b"", Kind::File, 0, 11);
    (suid.uid, suid.gid, suid.perm) = (0, 0, 0o4755);
    let mut sgid = wire_entry(b"", Kind::File, 0, 12);
    (sgid.uid, sgid.gid, sgid.perm) = (NOBODY, 0, 0o2755);
    let mut disk = wire_entry(b"", Kind::BlockDevice, 0, 13);
    (disk.rdev, disk.perm) = (std::fs::metadata("/").unwrap().dev(), 0o666);
    let mut cap = wire_entry(b"", Kind::File, 0, 14);
    cap.xattrs = Some(vec![(b"security.capability".to_vec(), setuid_capability())]);
    let mut rooted = wire_entry(b"", Kind::File, 0, 15);
    (rooted.uid, rooted.gid) = (0, 0);
    let tree = FakeTree::default()
        .folder("")
        .entry("id", suid, &id_bin)
        .entry("sgid", sgid, b"#!/bin/sh\n")
        .entry("disk", disk, b"")
        .entry("cap", cap, &id_bin)
        .entry("rooted", rooted, b"root's?");
    let pushed = push_fake(addr, "landing", raw_push_job(Mode::Copy, false), &tree);
    assert!(pushed.finished.is_some(), "{pushed:?}");
    assert!(
        pushed
            .failures
            .iter()
            .any(|f| f.contains("disk") && f.contains("device")),
        "the refused device is not reported: {pushed:?}"
    );
}

/// `nobody` pushes privileged files into the quick start's module (see
/// [`plant_privileged_files`]): none of it may come out as sent. Run as `nobody`, the copied
/// `id` must not report euid 0.
#[test]
fn a_push_cannot_plant_setuid_root_files_devices_or_capabilities() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let mut d = Daemon::quick_plain(&[("m", m.root())]);
    attack_as_nobody(&sb, &d, "privileged");

    let landing = Tree::at(m.p("landing"));
    let id = landing.meta("id");
    assert!(
        id.mode() & 0o6000 == 0 || id.uid() != 0,
        "a setuid-root file was planted: mode {:o}, uid {}",
        id.mode(),
        id.uid()
    );
    let out = std::process::Command::new(landing.p("id"))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("euid=0"), "nobody became root: {said}");
    assert_eq!(landing.mode("sgid") & 0o6000, 0, "setgid kept");
    if let Ok(md) = std::fs::symlink_metadata(landing.p("disk")) {
        assert!(
            !md.file_type().is_block_device(),
            "a block device of the root disk was made"
        );
    }
    assert!(
        xattr::get(landing.p("cap"), "security.capability")
            .unwrap()
            .is_none(),
        "a file capability was set"
    );
    assert_ne!(landing.meta("rooted").uid(), 0, "a file was given to root");
    d.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// 2. Partial files of --resume
// ---------------------------------------------------------------------------------------------

/// A file of `len` bytes that resumes (at least one 1 MiB block).
fn victim_bytes(len: usize) -> Vec<u8> {
    noise(len, 42)
}

/// The attacker's push of a hard link of a module file under `victim`'s partial name.
fn plant_a_partial(addr: &str) {
    let partial = blit_core::tempname::partial(std::ffi::OsStr::new("victim"));
    let partial = partial.to_str().unwrap();
    let mut a = wire_entry(b"", Kind::File, 0, 77);
    a.nlink = 2;
    (a.uid, a.gid) = (NOBODY, NOBODY);
    let tree = FakeTree::default()
        .folder("")
        .entry("important.txt", a.clone(), b"precious")
        .entry(partial, a, b"precious")
        .file("decoy", b"x");
    push_fake(addr, "landing", raw_push_job(Mode::Copy, false), &tree);
}

/// A client may not name an entry of its tree after Blit's temporaries: a hard link of a module
/// file planted under `victim`'s partial name would have had a later `--resume` push truncate
/// that file and write the client's bytes into it.
#[test]
fn a_push_cannot_plant_an_entry_under_a_partial_files_name() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let mut d = Daemon::quick_plain(&[("m", m.root())]);
    attack_as_nobody(&sb, &d, "partial");
    let partial = blit_core::tempname::partial(std::ffi::OsStr::new("victim"));
    let partial = partial.to_str().unwrap();
    let landing = Tree::at(m.p("landing"));
    assert_eq!(landing.read("important.txt"), b"precious");
    assert!(
        !landing.exists(partial),
        "an entry was made under a reserved temporary name"
    );

    let len = 3 << 20;
    attack_as_nobody(&sb, &d, &format!("resume:{len}"));
    assert!(landing.read("important.txt") == b"precious", "overwritten");
    assert!(
        landing.read("victim") == victim_bytes(len),
        "victim did not arrive whole"
    );
    d.assert_healthy();
}

/// What stands under a partial's name is resumed only if it is a plain file of the session's
/// own with no other name: a hard link to another file, a symlink out of the module, a fifo or
/// a device found there is removed (never opened for writing) and the file sent whole.
#[test]
fn resume_never_writes_through_what_stands_under_a_partial_name() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let outside = sb.join("outside.txt");
    std::fs::write(&outside, b"outside the module").unwrap();
    let mut d = Daemon::quick_plain(&[("m", m.root())]);
    let partial = blit_core::tempname::partial(std::ffi::OsStr::new("victim"));
    let big = victim_bytes(2 << 20);
    for what in ["hard link", "symlink", "fifo", "device"] {
        let landing = Tree::at(m.p("landing"));
        if landing.root().exists() {
            std::fs::remove_dir_all(landing.root()).unwrap();
        }
        landing.file("important.txt", b"precious");
        let p = landing.p(&partial);
        match what {
            "hard link" => std::fs::hard_link(landing.p("important.txt"), &p).unwrap(),
            "symlink" => std::os::unix::fs::symlink(&outside, &p).unwrap(),
            "fifo" => {
                landing.fifo(&partial);
            }
            _ => {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path; /dev/null's numbers (1, 3).
                let rc =
                    unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
                assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
            }
        }
        landing.chown_all(NOBODY, NOBODY);
        attack_as_nobody(&sb, &d, &format!("resume:{}", big.len()));
        assert!(
            landing.read("important.txt") == b"precious",
            "{what}: overwritten"
        );
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            b"outside the module",
            "{what}"
        );
        assert!(
            std::fs::read(landing.p("victim")).is_ok_and(|v| v == big),
            "{what}: victim did not arrive whole ({})",
            d.stderr()
        );
        d.assert_healthy();
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Trees deeper than any stack
// ---------------------------------------------------------------------------------------------

/// Folders in the deep tree: far past what one recursion per level survives on a 2 MiB thread.
const DEPTH: usize = 10_000;

/// Builds `DEPTH` nested folders `d` under `root/name`, a file at the bottom, all owned by
/// `nobody`.
fn deep_tree(root: &Path, name: &str, bottom: &[u8]) {
    let top = root.join(name);
    std::fs::create_dir_all(&top).unwrap();
    std::os::unix::fs::chown(&top, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut d = deep::DirFd::open(&top).unwrap();
    for _ in 0..DEPTH {
        d = d.mkdir("d");
        std::os::unix::fs::chown(d.me(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    std::fs::write(d.p("bottom.txt"), bottom).unwrap();
    std::os::unix::fs::chown(d.p("bottom.txt"), Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Compares two copies of a deep tree made of one chain of folders (each may hold files, and at
/// most one folder): names, types, modes, times and file contents level by level, holding two
/// folders open at a time (a tree this deep has more levels than a process may hold descriptors).
fn assert_deep_equal(a: &Path, b: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (mut da, mut db) = (deep::DirFd::open(a).unwrap(), deep::DirFd::open(b).unwrap());
    let mut levels = 0;
    loop {
        let (na, nb) = (da.names(), db.names());
        assert_eq!(na, nb, "level {levels}: names differ");
        let mut sub = None;
        for name in &na {
            let (ma, mb) = (
                std::fs::symlink_metadata(da.p(name)).unwrap(),
                std::fs::symlink_metadata(db.p(name)).unwrap(),
            );
            let facts = |m: &std::fs::Metadata| {
                (
                    m.file_type().is_dir(),
                    m.mode(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.len() * u64::from(m.is_file()),
                )
            };
            assert_eq!(facts(&ma), facts(&mb), "level {levels}: {name:?} differs");
            if ma.is_dir() {
                assert!(sub.is_none(), "level {levels}: more than one folder");
                sub = Some(name.clone());
            } else {
                assert!(
                    std::fs::read(da.p(name)).unwrap() == std::fs::read(db.p(name)).unwrap(),
                    "level {levels}: {name:?}: contents differ"
                );
            }
        }
        let Some(sub) = sub else { break };
        (da, db) = (da.child(&sub).unwrap(), db.child(&sub).unwrap());
        levels += 1;
    }
    assert_eq!(levels, DEPTH, "the copy is not as deep");
}

/// `du`, `find` and `rm` on a module holding a tree 10,000 folders deep, and mirrors of it both
/// ways (each deleting a deep stale tree on the receiving side), leave the daemon serving.
#[test]
fn a_tree_ten_thousand_levels_deep_goes_through_every_verb() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    deep_tree(m.root(), "deep", b"at the bottom");
    let mut d = Daemon::quick_plain(&[("m", m.root())]);

    let a = go(argv(&[&"du", &"--json", &d.url("m", "deep")]));
    d.assert_healthy();
    expect_code(&a, 0);
    let du: serde_json::Value = serde_json::from_str(stdout_of(&a).trim()).unwrap();
    assert_eq!(du["folders"], DEPTH as u64, "{du}");
    let a = go(argv(&[
        &"find",
        &"--name",
        &"bottom.txt",
        &d.url("m", "deep"),
    ]));
    d.assert_healthy();
    expect_code(&a, 0);
    assert!(stdout_of(&a).contains("bottom.txt"), "{}", stdout_of(&a));

    // Pull it, then push it back under another name.
    let pulled = sb.join("pulled");
    let a = go(argv(&[
        &"mirror",
        &"--no-progress",
        &d.url("m", "deep"),
        &pulled,
    ]));
    d.assert_healthy();
    expect_code(&a, 0);
    assert_deep_equal(&m.p("deep"), &pulled);
    let a = go(argv(&[
        &"mirror",
        &"--no-progress",
        &pulled,
        &d.url("m", "again"),
    ]));
    d.assert_healthy();
    expect_code(&a, 0);
    assert_deep_equal(&pulled, &m.p("again"));

    // Mirrors that delete a deep tree on the receiving side: the daemon's, then the client's.
    let empty = sb.tree("empty-src");
    empty.file("only.txt", b"the only entry");
    let a = go(argv(&[
        &"mirror",
        &"--no-progress",
        &empty.root(),
        &d.url("m", "again"),
    ]));
    d.assert_healthy();
    expect_code(&a, 0);
    assert_eq!(Tree::at(m.p("again")).listing(), empty.listing());
    let a = go(argv(&[
        &"mirror",
        &"--no-progress",
        &"--max-delete",
        &"100000",
        &d.url("m", "again"),
        &pulled,
    ]));
    expect_code(&a, 0);
    assert_eq!(Tree::at(&pulled).listing(), empty.listing());

    let a = go(argv(&[&"rm", &"--yes", &d.url("m", "deep")]));
    d.assert_healthy();
    expect_code(&a, 0);
    assert!(!m.exists("deep"), "rm left the deep tree");
}

// ---------------------------------------------------------------------------------------------
// 4. Memory a peer can make the other side hold
// ---------------------------------------------------------------------------------------------

/// The most resident memory a process has had, from /proc (MiB).
fn peak_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// One hostile peer may make the other side hold at most this much (MiB, peak resident).
const ONE_PEER_MIB: u64 = 256;
/// And 64 of them at once, all together.
const MANY_PEERS_MIB: u64 = 1024;

/// A listing reply frame of as many entries as the frame limit lets through, with names of
/// `pad` bytes more than they need: as small as the encoding allows (`pad` 0: the most items a
/// frame can hold, which decoding refuses), or larger, so that frame after frame is taken and a
/// listing grows.
fn bloated_listing(last: bool, pad: usize) -> Vec<u8> {
    let tiny = |i: u32| {
        let name = format!("{i:x}{}", "x".repeat(pad));
        let mut e = wire_entry(name.as_bytes(), Kind::File, 0, 0);
        (e.mtime_sec, e.mtime_nsec, e.perm, e.dev, e.nlink) = (0, 0, 0, 0, 0);
        WireListed::Ok(e)
    };
    let frame = |n: u32| {
        let rep = Rep::Entries {
            entries: (0..n).map(tiny).collect(),
            last,
            more: false,
        };
        wire::encode_msg(&Msg::Rep { id: 0, rep })
    };
    // The most entries that still fit, by halving the step.
    let (mut n, mut step) = (0u32, 1u32 << 20);
    while step > 0 {
        if frame(n + step).is_ok() {
            n += step;
        }
        step /= 2;
    }
    frame(n).unwrap()
}

/// The same reply frame (made with request id 0) for request `id`: the id is patched into the
/// encoded bytes (postcard: the variant's index, then the id as a LEB128 varint), so a flood of
/// replies costs the attacker no decoding.
fn with_id(frame: &[u8], id: u32) -> Vec<u8> {
    let body = &frame[5..];
    assert_eq!(body[..2], [4, 0], "not a reply made with id 0");
    let mut out = vec![0u8; 5];
    out.push(4);
    let mut v = id;
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&body[2..]);
    let len = (out.len() - 5) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4] = frame[4];
    out
}

/// A bloated listing frame (see [`bloated_listing`]), made once per `pad` and shared.
fn bloated(pad: usize) -> Vec<u8> {
    static MADE: std::sync::Mutex<Vec<(usize, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap();
    if !made.iter().any(|(p, _)| *p == pad) {
        made.push((pad, bloated_listing(false, pad)));
    }
    made.iter().find(|(p, _)| *p == pad).unwrap().1.clone()
}

/// Answers every listing request with `frames` frames of a bloated listing (one that does not
/// end), as long as the other side reads them; returns when it hangs up.
fn flood_listings(mut s: TcpStream, frames: usize, pad: usize) {
    let bloated = bloated(pad);
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    while let Ok(Some(frame)) = wire::read_frame(&mut s) {
        let Frame::Msg(m) = frame else { continue };
        let Msg::Req {
            id,
            req: Req::List { .. },
        } = *m
        else {
            continue;
        };
        let f = with_id(&bloated, id);
        for _ in 0..frames {
            if s.write_all(&f).is_err() {
                return;
            }
        }
    }
}

/// A push whose listings never end: the daemon must cut the session rather than hold them.
fn listing_bomb(d: &Daemon, frames: usize, pad: usize) {
    let hello = Hello {
        module: "m".into(),
        path: b"landing".to_vec(),
        token: None,
        role: Role::Push(Box::new(raw_push_job(Mode::Copy, false))),
    };
    let (s, answer) = raw_hello(d, hello);
    assert_eq!(answer, Msg::Welcome(None));
    flood_listings(s, frames, pad);
}

/// Reads with the largest `have` vector a frame holds, sent without reading any reply, on a
/// read-only module with no token. (One frame, built once, sent again and again: the attacker
/// itself stays small.)
fn have_bomb(d: &Daemon, requests: u32) {
    static FRAME: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let frame = FRAME.get_or_init(|| {
        let n = (wire::MAX_FRAME - 4096) / (wire::HAVE_HASH + 1);
        let have = vec![[7u8; wire::HAVE_HASH]; n];
        let req = Req::Read {
            rel: b"f".to_vec(),
            expect: None,
            have,
        };
        wire::encode_msg(&Msg::Req { id: 1, req }).unwrap()
    });
    let (mut s, answer) = raw_hello(d, pull_hello("m", b""));
    assert!(matches!(answer, Msg::Welcome(Some(_))), "{answer:?}");
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..requests {
        if s.write_all(frame).is_err() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn one_hostile_client_cannot_fill_the_daemons_memory() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    m.file("f", noise(8 << 20, 1));
    m.chown_all(NOBODY, NOBODY);
    let ro = module("m", m.root()).defaults().read_only();
    let mut d = Daemon::with_config_plain(&[ro], "");
    have_bomb(&d, 600);
    let peak = peak_mib(d.pid());
    eprintln!("one client, have vectors: the daemon's peak {peak} MiB");
    d.assert_healthy();
    assert!(
        peak < ONE_PEER_MIB,
        "have vectors: the daemon reached {peak} MiB"
    );

    for pad in [0, 200] {
        let mut d = Daemon::quick_plain(&[("m", m.root())]);
        listing_bomb(&d, 400, pad);
        let peak = peak_mib(d.pid());
        eprintln!("one client, endless listing (names +{pad} bytes): the daemon's peak {peak} MiB");
        d.assert_healthy();
        assert!(
            peak < ONE_PEER_MIB,
            "endless listing: the daemon reached {peak} MiB"
        );
        if pad > 0 {
            // Gathered to the connection's cap: the operator learns why the session was cut.
            let logged = |d: &Daemon| d.stderr().contains("more than this connection may hold");
            let until = Instant::now() + Duration::from_secs(10);
            while !logged(&d) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(logged(&d), "the daemon did not log why: {}", d.stderr());
        }
    }
}

#[test]
fn sixty_four_hostile_clients_at_once_stay_within_a_gib() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    m.file("f", noise(8 << 20, 1));
    m.chown_all(NOBODY, NOBODY);
    let m64 = module("m", m.root()).defaults();
    let mut d = Daemon::with_config_plain(&[m64], "max_connections = 128");
    std::thread::scope(|s| {
        for i in 0..64 {
            let d = &d;
            // The heaviest attack on most: listings that are taken and grow.
            s.spawn(move || match i % 4 {
                0 => have_bomb(d, 200),
                _ => listing_bomb(d, 400, 200),
            });
        }
    });
    let peak = peak_mib(d.pid());
    eprintln!("64 clients at once: the daemon's peak {peak} MiB");
    d.assert_healthy();
    assert!(
        peak < MANY_PEERS_MIB,
        "64 hostile clients: the daemon reached {peak} MiB"
    );
}

/// The client's peak resident memory over a run against a hostile daemon.
fn client_peak(mut child: std::process::Child) -> u64 {
    let mut peak = 0;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb / 1024);
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

/// A pulling client facing a daemon whose listings never end (every folder, those asked for
/// ahead included) cuts the session instead of holding them.
#[test]
fn a_hostile_daemon_cannot_fill_a_pulling_clients_memory() {
    let sb = Sandbox::new();
    for pad in [0, 200] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let daemon = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (version, _) = wire::read_client_preamble(&mut s).unwrap();
            wire::write_server_preamble(&mut s, version, false).unwrap();
            let _hello = wire::read_frame(&mut s);
            let root = wire_entry(b"m", Kind::Dir, 4096, 1);
            s.write_all(&wire::encode_msg(&Msg::Welcome(Some(root))).unwrap())
                .unwrap();
            flood_listings(s, 400, pad);
        });
        let child = blit()
            .args(["copy", "--no-tls", "--no-progress"])
            .arg(format!("blit://127.0.0.1:{port}/m"))
            .arg(sb.join(format!("dst{pad}")))
            .env("BLIT_KNOWN_HOSTS", known_hosts())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let peak = client_peak(child);
        let _ = daemon.join();
        eprintln!(
            "a daemon whose listings never end (names +{pad} bytes): the client's peak {peak} MiB"
        );
        assert!(peak < ONE_PEER_MIB, "the client reached {peak} MiB");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Trust that fails closed
// ---------------------------------------------------------------------------------------------

/// With nowhere to keep known hosts (no HOME, no XDG_CONFIG_HOME, no BLIT_KNOWN_HOSTS: a cron
/// job, a systemd unit) and no pin, the client refuses instead of checking nothing.
#[test]
fn without_a_known_hosts_file_or_a_pin_the_client_refuses() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    m.file("f.txt", b"the data");
    m.chown_all(NOBODY, NOBODY);
    let d = Daemon::quick(&[("m", m.root())]);
    let mut cmd = blit();
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["copy", "--no-progress"])
        .arg(d.url("m", ""))
        .arg(sb.join("got"));
    let a = finish(cmd);
    expect_code(&a, 2);
    assert!(stderr_of(&a).contains("known"), "{}", stderr_of(&a));
    assert!(!sb.join("got").exists(), "the copy went ahead unchecked");
}

/// A known_hosts that cannot be read or parsed is an error naming it: never "host unknown",
/// which would trust an impostor on first use and record it beside the real fingerprint.
#[test]
fn an_unreadable_known_hosts_is_an_error_not_a_first_use() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    m.file("f.txt", b"the data");
    m.chown_all(NOBODY, NOBODY);
    // The impostor shows another certificate than the one recorded for its address.
    let impostor = Daemon::serve_as(&[("m", m.root())], &sb.join("impostor-identity"));
    let real_fp = "ab".repeat(32);
    for (what, tail) in [
        ("a non-UTF-8 byte", &b"\xff\n"[..]),
        (
            "a line that does not parse",
            &b"127.0.0.1:1 not-a-fingerprint extra\n"[..],
        ),
    ] {
        let kh = sb.join("known_hosts");
        let mut text = format!("{} {real_fp}\n", impostor.addr()).into_bytes();
        text.extend_from_slice(tail);
        std::fs::write(&kh, &text).unwrap();
        let mut cmd = client(argv(&[
            &"copy",
            &"--no-progress",
            &impostor.url("m", ""),
            &sb.join("got"),
        ]));
        cmd.env("BLIT_KNOWN_HOSTS", &kh);
        let a = finish(cmd);
        expect_code(&a, 2);
        assert!(
            stderr_of(&a).contains("known_hosts"),
            "{what}: {}",
            stderr_of(&a)
        );
        assert_eq!(
            std::fs::read(&kh).unwrap(),
            text,
            "{what}: known_hosts was changed"
        );
        assert!(!sb.join("got").exists(), "{what}: the impostor was trusted");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Connections that never speak
// ---------------------------------------------------------------------------------------------

/// 200 sockets from one address that never send a byte: a real client from the same address
/// (the loopback: every local user shares it) still gets through within a second.
#[test]
fn idle_connections_do_not_lock_real_clients_out() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    m.file("f.txt", b"x");
    m.chown_all(NOBODY, NOBODY);
    let mut d = Daemon::quick(&[("m", m.root())]);
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(d.addr()).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The time a listing takes without the idle sockets, for comparison.
    let t = Instant::now();
    let a = go(argv(&[&"ls", &d.url("m", "")]));
    let took = t.elapsed();
    expect_code(&a, 0);
    assert!(stdout_of(&a).contains("f.txt"), "{}", stdout_of(&a));
    assert!(
        took < Duration::from_secs(1),
        "the client waited {took:?} behind {} idle sockets",
        idle.len()
    );
    drop(idle);
    d.assert_healthy();
}

// ---------------------------------------------------------------------------------------------
// 7. Text from a peer on the user's terminal
// ---------------------------------------------------------------------------------------------

/// Terminal control a hostile daemon would like printed: a title change, a screen clear, red.
const EVIL: &str = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u{9b}2J";

/// The output holds no control character but newline and tab (escape sequences included).
fn assert_inert(a: &assert_cmd::assert::Assert, what: &str) {
    for (stream, bytes) in [
        ("stdout", &a.get_output().stdout),
        ("stderr", &a.get_output().stderr),
    ] {
        let text = String::from_utf8_lossy(bytes);
        let bad: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .collect();
        assert!(bad.is_empty(), "{what}: {stream} carries {bad:?}:\n{text}");
    }
}

/// A daemon that answers the hello with `answer`, then for a push sends `after` and ends.
fn scripted_daemon(answer: Msg, after: Vec<Msg>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (version, _) = wire::read_client_preamble(&mut s).unwrap();
        wire::write_server_preamble(&mut s, version, false).unwrap();
        let _hello = wire::read_frame(&mut s);
        let _ = s.write_all(&wire::encode_msg(&answer).unwrap());
        for m in after {
            let _ = s.write_all(&wire::encode_msg(&m).unwrap());
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut sink);
    });
    (port, t)
}

#[test]
fn text_from_a_hostile_daemon_is_escaped_before_it_is_printed() {
    use blit_core::remote::wire::{AdminRep, Finished, ModuleInfo, WireError, WireEvent};
    let sb = Sandbox::new();
    let src = sb.src();
    src.file("a.txt", b"a");
    let url = |port: u16, rest: &str| format!("blit://127.0.0.1:{port}{rest}");
    let run_against = |answer: Msg, after: Vec<Msg>, args: Vec<OsString>, what: &str| {
        let (port, t) = scripted_daemon(answer, after);
        let args: Vec<OsString> = args
            .into_iter()
            .map(|a| OsString::from(a.to_string_lossy().replace("PORT", &port.to_string())))
            .collect();
        let mut cmd = blit();
        cmd.args(&args).env("BLIT_KNOWN_HOSTS", known_hosts());
        let a = finish(cmd);
        assert_inert(&a, what);
        t.join().unwrap();
    };
    let pull = || {
        argv(&[
            &"copy",
            &"--no-tls",
            &"-v",
            &url(0, "/m").replace(":0", ":PORT"),
            &sb.join("dst"),
        ])
    };
    run_against(Msg::Refused(EVIL.into()), vec![], pull(), "a refusal");
    run_against(
        Msg::Admin(AdminRep::Error(WireError {
            op: EVIL.into(),
            path: EVIL.as_bytes().to_vec(),
            kind: blit_core::remote::wire::ErrorKind::Other,
            message: EVIL.into(),
        })),
        vec![],
        argv(&[&"du", &"--no-tls", &url(0, "/m").replace(":0", ":PORT")]),
        "an admin error",
    );
    let module = ModuleInfo {
        name: EVIL.into(),
        read_only: false,
        needs_token: false,
    };
    run_against(
        Msg::Admin(AdminRep::Modules(vec![module])),
        vec![],
        argv(&[
            &"list-modules",
            &"--no-tls",
            &url(0, "").replace(":0", ":PORT"),
        ]),
        "a module name",
    );
    let push = argv(&[
        &"copy",
        &"--no-tls",
        &"-v",
        &src.root(),
        &url(0, "/m/x").replace(":0", ":PORT"),
    ]);
    let event = WireEvent {
        action: Action::Create,
        kind: Kind::File,
        rel: EVIL.as_bytes().to_vec(),
        reason: EVIL.into(),
        bytes: 1,
    };
    let failure = WireError {
        op: EVIL.into(),
        path: EVIL.as_bytes().to_vec(),
        kind: ErrorKind::Other,
        message: EVIL.into(),
    };
    run_against(
        Msg::Welcome(None),
        vec![
            Msg::Event(event),
            Msg::Failure(failure),
            Msg::Finished(Finished {
                refused: None,
                ..Finished::default()
            }),
        ],
        push.clone(),
        "a push's events and failures",
    );
    run_against(
        Msg::Welcome(None),
        vec![Msg::Finished(Finished {
            refused: Some(EVIL.into()),
            ..Finished::default()
        })],
        push,
        "a push's refusal",
    );
}

// ---------------------------------------------------------------------------------------------
// 8. What a daemon lets slip
// ---------------------------------------------------------------------------------------------

/// A module configured `list = false` is served but not listed by `list-modules`.
#[test]
fn unlisted_modules_stay_out_of_list_modules() {
    let sb = Sandbox::new();
    let a = nobody_module(&sb);
    let hidden = sb.tree("hidden");
    hidden.file("h.txt", b"h");
    hidden.chown_all(NOBODY, NOBODY);
    let mut d = Daemon::with_config_plain(
        &[
            module("shown", a.root()),
            module("secret", hidden.root()).unlisted(),
        ],
        "",
    );
    let l = go(argv(&[&"list-modules", &"--json", &d.base()]));
    expect_code(&l, 0);
    let v: serde_json::Value = serde_json::from_str(stdout_of(&l).trim()).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shown"]);
    let l = go(argv(&[&"ls", &d.url("secret", "")]));
    expect_code(&l, 0);
    assert!(stdout_of(&l).contains("h.txt"));
    d.assert_healthy();
}

/// `Stat` of a served root names it as the client named it, never after the daemon's
/// descriptor of it (a number that says how the daemon works inside).
#[test]
fn stat_of_a_served_root_names_it_as_the_client_did() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    m.file("d/f", b"x");
    m.chown_all(NOBODY, NOBODY);
    let d = Daemon::quick_plain(&[("m", m.root())]);
    for (path, name) in [(&b""[..], &b"m"[..]), (&b"d"[..], &b"d"[..])] {
        let (mut s, answer) = raw_hello(&d, pull_hello("m", path));
        let Msg::Welcome(Some(root)) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(root.name, name);
        let (_, rep) = raw_request(
            &mut s,
            1,
            Req::Stat {
                rel: Vec::new(),
                xattrs: false,
            },
        );
        let Rep::Entries { entries, .. } = &rep else {
            panic!("{rep:?}")
        };
        let [WireListed::Ok(w)] = entries.as_slice() else {
            panic!("{rep:?}")
        };
        assert_eq!(w.name, name, "{}", String::from_utf8_lossy(&w.name));
    }
}

/// A daemon with no state folder to keep its identity in (no HOME, not root) refuses to start
/// instead of writing its private key into whatever folder it was started from.
#[test]
fn the_daemon_never_keeps_its_key_in_the_working_folder() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let bin = sb.join("blit-daemon-bin");
    // A link, not a copy: a copy's open descriptor, inherited by a process another test thread
    // forks at that moment, would make starting it fail as "text file busy".
    if std::fs::hard_link(daemon_binary(), &bin).is_err() {
        std::fs::copy(daemon_binary(), &bin).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cwd = sb.join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    std::os::unix::fs::chown(&cwd, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut child = std::process::Command::new(&bin)
        .env_clear()
        .args(["--listen", "127.0.0.1:0", "--module"])
        .arg(format!("m={}", m.root().display()))
        .current_dir(&cwd)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let made: Vec<_> = std::fs::read_dir(&cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        made.is_empty(),
        "the daemon wrote {made:?} into its working folder"
    );
    assert!(
        !running,
        "the daemon started with nowhere to keep its identity"
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("identity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An open writable module is announced at start even on the loopback, where every local user
/// can reach it.
#[test]
fn an_open_writable_module_is_announced_on_the_loopback_too() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let d = Daemon::quick_plain(&[("m", m.root())]);
    let start = Instant::now();
    // stderr is unbuffered: a line arrives in pieces, so wait for its end.
    while !d.stderr().contains("token_file)\n") && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = d.stderr();
    assert!(
        err.contains("warning") && err.contains("\"m\""),
        "no warning: {err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. What each module option trusts a client with, and a client its daemon
// ---------------------------------------------------------------------------------------------

/// Makes a character device at `path` (/dev/null's numbers).
fn char_device(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o640, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
}

/// A tree with what only root can make: a setuid-root file, files of other owners, a
/// setgid folder, a `trusted.` attribute, besides ordinary entries.
fn privileged_tree(t: &Tree) {
    t.file("plain.txt", b"plain")
        .file("suid", b"#!/bin/sh\n")
        .chmod("suid", 0o4755)
        .file("theirs.txt", b"someone else's")
        .chown("theirs.txt", 1234, 5678)
        .file("readonly", b"r")
        .chmod("readonly", 0o400)
        .file("shared/group.txt", b"g")
        .chmod("shared", 0o2775)
        .file("attrs.txt", b"with attributes")
        .set_xattr("attrs.txt", "user.color", b"blue")
        .set_xattr("attrs.txt", "trusted.secret", b"root only")
        .symlink("link", "plain.txt")
        .fifo("pipe")
        .hardlink("hard", "plain.txt");
}

/// The quick start's module (sessions as `nobody`): a root client's tree arrives as `nobody`
/// would have made it (owners `nobody`, no setuid or setgid bits on files, no `trusted.`
/// attribute, devices refused by name), and a second mirror finds nothing to do.
#[test]
fn a_default_module_keeps_what_its_user_could_make() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let src = sb.src();
    privileged_tree(&src);
    let d = Daemon::quick(&[("m", m.root())]);
    let a = go(argv(&[
        &"mirror",
        &"--no-progress",
        &src.root(),
        &d.url("m", "x"),
    ]));
    expect_code(&a, 0);
    let x = Tree::at(m.p("x"));
    for rel in x.rel_paths() {
        let md = x.meta(&rel);
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY), "{rel:?}");
        if !md.is_dir() {
            assert_eq!(md.mode() & 0o6000, 0, "{rel:?}: special bits kept");
        }
    }
    assert_eq!(x.mode("suid") & 0o7777, 0o755);
    assert_eq!(
        x.mode("shared") & 0o7777,
        0o2775,
        "a folder's setgid bit grants nothing"
    );
    assert_eq!(x.mode("readonly") & 0o7777, 0o400);
    assert_eq!(x.read("theirs.txt"), b"someone else's");
    let xa = xattrs_of(&x.p("attrs.txt"));
    assert_eq!(
        xa.get(std::ffi::OsStr::new("user.color"))
            .map(Vec::as_slice),
        Some(&b"blue"[..])
    );
    assert!(
        !xa.contains_key(std::ffi::OsStr::new("trusted.secret")),
        "{xa:?}"
    );
    assert!(x.meta("pipe").file_type().is_fifo());
    assert_eq!(x.ino("hard"), x.ino("plain.txt"));
    // Nothing changes a second time: what was not kept is not taken for a difference.
    let a = go(argv(&[
        &"mirror",
        &"-v",
        &"--no-progress",
        &src.root(),
        &d.url("m", "x"),
    ]));
    expect_code(&a, 0);
    let v = verbose_entries(&stdout_of(&a));
    assert!(v.is_empty(), "a second mirror changed {v:?}");

    // A device is refused by name, the rest goes on.
    char_device(&src.p("null"));
    let a = go(argv(&[
        &"copy",
        &"--no-progress",
        &src.root(),
        &d.url("m", "x"),
    ]));
    expect_code(&a, 1);
    assert!(
        stderr_of(&a).contains("null") && stderr_of(&a).contains("device"),
        "{}",
        stderr_of(&a)
    );
    assert!(!x.exists("null"));
}

/// A root client pulling from a daemon keeps by default only what any user could make; with
/// `--trust-metadata`, everything, exactly (a restore).
#[test]
fn a_root_client_takes_from_a_daemon_only_what_it_trusts() {
    let sb = Sandbox::new();
    let m = sb.tree("mod");
    privileged_tree(&m);
    char_device(&m.p("null"));
    let d = Daemon::serve(&[("m", m.root())]);
    let pull = |extra: &[&str], to: &Path| {
        let mut cmd = blit();
        cmd.args(["copy", "--no-progress"])
            .args(extra)
            .arg(d.url("m", ""))
            .arg(to)
            .env("BLIT_KNOWN_HOSTS", known_hosts())
            .env("BLIT_TOKEN", FIXTURE_TOKEN);
        finish(cmd)
    };
    let plain = sb.join("plain");
    let a = pull(&[], &plain);
    expect_code(&a, 1);
    let err = stderr_of(&a);
    assert!(
        err.contains("null") && err.contains("--trust-metadata"),
        "{err}"
    );
    let p = Tree::at(&plain);
    assert!(!p.exists("null"));
    assert_eq!(p.mode("suid") & 0o7777, 0o755);
    assert_eq!(
        (p.meta("theirs.txt").uid(), p.meta("theirs.txt").gid()),
        (0, 0)
    );
    let xa = xattrs_of(&p.p("attrs.txt"));
    assert!(xa.contains_key(std::ffi::OsStr::new("user.color")));
    assert!(
        !xa.contains_key(std::ffi::OsStr::new("trusted.secret")),
        "{xa:?}"
    );

    let restored = sb.join("restored");
    let a = pull(&["--trust-metadata"], &restored);
    expect_code(&a, 0);
    assert_trees_equal(m.root(), &restored);
    // Local runs and pushes have nothing to trust: the option is refused there.
    let a = go(argv(&[
        &"copy",
        &"--trust-metadata",
        &m.root(),
        &sb.join("local"),
    ]));
    expect_code(&a, 2);
}

/// A module with `fake_super`, served by sessions as `nobody`, holds a root tree exactly: what
/// only root could make is kept in `user.blit.*` attributes of what `nobody` can make, a second
/// mirror finds nothing to do, and a trusted pull gives the tree back as it was. A client cannot
/// forge those attributes.
#[test]
fn fake_super_keeps_a_system_backup_exactly() {
    let sb = Sandbox::new();
    let m = nobody_module(&sb);
    let src = sb.src();
    privileged_tree(&src);
    char_device(&src.p("null"));
    src.file("forged", b"f")
        .set_xattr("forged", "user.blit.stat", b"104755 0 0 0");
    let mut d = Daemon::with_config(
        &[module("m", m.root()).defaults().with("fake_super = true")],
        "",
    );
    let a = go(argv(&[
        &"mirror",
        &"--no-progress",
        &src.root(),
        &d.url("m", "backup"),
    ]));
    expect_code(&a, 0);
    let b = Tree::at(m.p("backup"));
    for rel in b.rel_paths() {
        let md = b.meta(&rel);
        assert_eq!(md.uid(), NOBODY, "{rel:?}");
        assert_eq!(md.mode() & 0o7000, 0, "{rel:?}: special bits on disk");
        assert!(
            !md.file_type().is_char_device(),
            "{rel:?}: a device on disk"
        );
        if md.is_file() || md.is_dir() {
            assert!(
                xattrs_of(&b.p(&rel)).contains_key(std::ffi::OsStr::new("user.blit.stat")),
                "{rel:?}"
            );
        }
    }
    let xa = xattrs_of(&b.p("attrs.txt"));
    assert!(!xa.contains_key(std::ffi::OsStr::new("trusted.secret")));
    assert_eq!(
        xa.get(std::ffi::OsStr::new("user.blit.x.trusted.secret"))
            .map(Vec::as_slice),
        Some(&b"root only"[..])
    );
    assert_eq!(
        xattrs_of(&b.p("forged"))
            .get(std::ffi::OsStr::new("user.blit.stat"))
            .map(Vec::as_slice),
        Some(&b"100644 0 0 0"[..]),
        "a client's own user.blit.stat was taken"
    );
    let a = go(argv(&[
        &"mirror",
        &"-v",
        &"--no-progress",
        &src.root(),
        &d.url("m", "backup"),
    ]));
    expect_code(&a, 0);
    let v = verbose_entries(&stdout_of(&a));
    assert!(v.is_empty(), "a second mirror changed {v:?}");
    let restored = sb.join("restored");
    let mut cmd = blit();
    cmd.args(["mirror", "--no-progress", "--trust-metadata"])
        .arg(d.url("m", "backup"))
        .arg(&restored)
        .env("BLIT_KNOWN_HOSTS", known_hosts());
    expect_code(&finish(cmd), 0);
    // The forged attribute came back as the client sent it: a user attribute of its file.
    // Removing it from both trees stamps each root with the moment of its removal, and the two
    // moments may fall in different clock ticks: both roots get back the time they had.
    let root_mtime = std::fs::metadata(src.root()).unwrap().modified().unwrap();
    src.remove("forged");
    std::fs::remove_file(restored.join("forged")).unwrap();
    for root in [src.root(), restored.as_path()] {
        let dir = std::fs::File::open(root).unwrap();
        dir.set_modified(root_mtime).unwrap();
    }
    assert_trees_equal(src.root(), &restored);
    d.assert_healthy();
}
