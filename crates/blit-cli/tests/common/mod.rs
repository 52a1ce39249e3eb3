//! Fixtures shared by every integration test binary.
//!
//! Tests build real trees on disk (one line per entry), run the real `blit` binary on them and
//! then compare the result with [`assert_trees_equal`], which checks every field blit promises to
//! keep. Keeping that comparison in one place means a new fidelity promise is enforced by every
//! test at once, and a lax comparison cannot hide in a single test.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use assert_cmd::assert::Assert;
use assert_cmd::cargo::CommandCargoExt;

/// uid/gid of `nobody`: permission tests must run blit unprivileged, since root reads anything.
pub const NOBODY: u32 = 65534;

/// Upper bound for one blit run; a hang (say, opening a fifo) must fail the test, not stall CI.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// A path from raw bytes, for names that are not UTF-8.
pub fn bpath(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// A temporary folder that holds the trees of one test (usually `src` and `dst`) side by side, so
/// both vanish together and a test can also name paths that must *not* be created.
pub struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A sandbox on /tmp (ext4 on CI).
    pub fn new() -> Self {
        Self::new_in(std::env::temp_dir())
    }

    /// A sandbox on another filesystem, e.g. /dev/shm for cross-filesystem moves.
    pub fn new_in(base: impl AsRef<Path>) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("blit-test-")
            .tempdir_in(base)
            .expect("create sandbox");
        Sandbox { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A tree rooted at `rel`; nothing is created until an entry is added.
    pub fn tree(&self, rel: impl AsRef<Path>) -> Tree {
        Tree::at(self.join(rel))
    }

    pub fn src(&self) -> Tree {
        self.tree("src")
    }

    pub fn dst(&self) -> Tree {
        self.tree("dst")
    }

    /// Hands the whole sandbox to `nobody`, so an unprivileged blit can work in it and only the
    /// entries a test deliberately locks are out of its reach.
    pub fn give_to_nobody(&self) {
        Tree::at(self.path()).chown_all(NOBODY, NOBODY);
        fs::set_permissions(self.path(), fs::Permissions::from_mode(0o777)).unwrap();
    }

    /// The blit binary at a path `nobody` can execute: the build tree may sit under a folder that
    /// only root may enter.
    pub fn nobody_binary(&self) -> PathBuf {
        self.nobody_executable(&assert_cmd::cargo::cargo_bin("blit"), "blit-bin")
    }

    /// `built` as `name` in the sandbox, where `nobody` can execute it. Call after
    /// [`Sandbox::give_to_nobody`]: it may be a hard link of `built`, which that would give away.
    pub fn nobody_executable(&self, built: &Path, name: &str) -> PathBuf {
        let bin = self.join(name);
        if !bin.exists() {
            if fs::hard_link(built, &bin).is_err() {
                fs::copy(built, &bin).expect("copy a binary into the sandbox");
            }
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        }
        bin
    }
}

/// A folder being built or inspected; all paths given to its methods are relative to its root.
#[derive(Clone, Debug)]
pub struct Tree {
    root: PathBuf,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

impl Tree {
    pub fn at(root: impl Into<PathBuf>) -> Tree {
        Tree { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute path of `rel`; an empty `rel` is the root itself.
    pub fn p(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// The root as an argument string with a trailing slash.
    pub fn slash(&self) -> OsString {
        let mut s = self.root.as_os_str().to_os_string();
        s.push("/");
        s
    }

    fn parent_dirs(&self, rel: &Path) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
    }

    /// Creates the root folder (and its parents) if missing.
    pub fn mkroot(&self) -> &Self {
        fs::create_dir_all(&self.root).unwrap();
        self
    }

    /// Writes a regular file (truncating an existing one in place), creating parent folders.
    pub fn file(&self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> &Self {
        let rel = rel.as_ref();
        self.parent_dirs(rel);
        fs::write(self.p(rel), bytes).unwrap_or_else(|e| panic!("write {rel:?}: {e}"));
        self
    }

    pub fn dir(&self, rel: impl AsRef<Path>) -> &Self {
        fs::create_dir_all(self.p(rel)).unwrap();
        self
    }

    pub fn symlink(&self, rel: impl AsRef<Path>, target: impl AsRef<Path>) -> &Self {
        let rel = rel.as_ref();
        self.parent_dirs(rel);
        std::os::unix::fs::symlink(target, self.p(rel)).unwrap();
        self
    }

    /// Adds `rel` as a second name of the existing entry `existing` (both relative to the root).
    pub fn hardlink(&self, rel: impl AsRef<Path>, existing: impl AsRef<Path>) -> &Self {
        let rel = rel.as_ref();
        self.parent_dirs(rel);
        fs::hard_link(self.p(existing), self.p(rel)).unwrap();
        self
    }

    pub fn fifo(&self, rel: impl AsRef<Path>) -> &Self {
        let rel = rel.as_ref();
        self.parent_dirs(rel);
        let c = cstr(&self.p(rel));
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(rc, 0, "mkfifo {rel:?}: {}", std::io::Error::last_os_error());
        self
    }

    /// A file of `size` bytes that is a hole everywhere except at the given offsets.
    pub fn sparse(&self, rel: impl AsRef<Path>, size: u64, data: &[(u64, &[u8])]) -> &Self {
        let rel = rel.as_ref();
        self.parent_dirs(rel);
        let f = fs::File::create(self.p(rel)).unwrap();
        f.set_len(size).unwrap();
        for (off, bytes) in data {
            f.write_all_at(bytes, *off).unwrap();
        }
        self
    }

    /// Sets atime and mtime of `rel` itself (a symlink is not followed).
    pub fn set_mtime(&self, rel: impl AsRef<Path>, sec: i64, nsec: i64) -> &Self {
        set_times(&self.p(rel), sec, nsec);
        self
    }

    pub fn chmod(&self, rel: impl AsRef<Path>, mode: u32) -> &Self {
        fs::set_permissions(self.p(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    /// Changes owner of `rel` itself (a symlink is not followed).
    pub fn chown(&self, rel: impl AsRef<Path>, uid: u32, gid: u32) -> &Self {
        std::os::unix::fs::lchown(self.p(rel), Some(uid), Some(gid)).unwrap();
        self
    }

    /// Gives every entry of the tree, the root included, to `uid:gid`.
    pub fn chown_all(&self, uid: u32, gid: u32) -> &Self {
        for rel in self.rel_paths() {
            self.chown(&rel, uid, gid);
        }
        self
    }

    pub fn set_xattr(&self, rel: impl AsRef<Path>, name: &str, value: &[u8]) -> &Self {
        xattr::set(self.p(rel), name, value).unwrap();
        self
    }

    /// Removes `rel` whatever it is (a folder with all its contents).
    pub fn remove(&self, rel: impl AsRef<Path>) -> &Self {
        let p = self.p(rel);
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
        self
    }

    pub fn read(&self, rel: impl AsRef<Path>) -> Vec<u8> {
        let rel = rel.as_ref();
        fs::read(self.p(rel)).unwrap_or_else(|e| panic!("read {:?}: {e}", self.p(rel)))
    }

    /// True if `rel` exists (a dangling symlink counts).
    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        fs::symlink_metadata(self.p(rel)).is_ok()
    }

    pub fn meta(&self, rel: impl AsRef<Path>) -> fs::Metadata {
        let p = self.p(rel);
        fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"))
    }

    pub fn ino(&self, rel: impl AsRef<Path>) -> u64 {
        self.meta(rel).ino()
    }

    pub fn mode(&self, rel: impl AsRef<Path>) -> u32 {
        self.meta(rel).mode() & 0o7777
    }

    pub fn mtime(&self, rel: impl AsRef<Path>) -> (i64, i64) {
        let m = self.meta(rel);
        (m.mtime(), m.mtime_nsec())
    }

    /// Every entry below the root (the root itself included as ""), sorted.
    pub fn rel_paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if fs::symlink_metadata(&self.root).is_ok() {
            out.push(PathBuf::new());
            collect(&self.root, Path::new(""), &mut out);
        }
        out.sort();
        out
    }

    /// Entries below the root as `/`-separated strings, folders with a trailing `/`; the root is
    /// left out. This is the quickest way to state which entries a run must leave.
    pub fn listing(&self) -> BTreeSet<String> {
        self.rel_paths()
            .into_iter()
            .filter(|r| !r.as_os_str().is_empty())
            .map(|r| {
                let mut s = r.to_string_lossy().into_owned();
                if self.meta(&r).is_dir() {
                    s.push('/');
                }
                s
            })
            .collect()
    }
}

fn collect(abs: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let md = fs::symlink_metadata(abs).unwrap();
    if !md.is_dir() {
        return;
    }
    let mut names: Vec<OsString> = fs::read_dir(abs)
        .unwrap_or_else(|e| panic!("read_dir {abs:?}: {e}"))
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        out.push(r.clone());
        collect(&abs.join(&name), &r, out);
    }
}

/// Sets atime and mtime of `path` without following a symlink.
pub fn set_times(path: &Path, sec: i64, nsec: i64) {
    let c = cstr(path);
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: `c` is NUL-terminated and `times` holds the two timespecs utimensat reads.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// True for blit's temporary names (`.~blit-<something>.tmp`).
pub fn is_temp_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() > ".~blit-.tmp".len() && b.starts_with(b".~blit-") && b.ends_with(b".tmp")
}

/// True for the temporary names of folders blit is still filling (`.~blit-<something>.dir`).
pub fn is_temp_dir_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() > ".~blit-.dir".len() && b.starts_with(b".~blit-") && b.ends_with(b".dir")
}

/// True when `rel` is one of blit's temporaries or lies inside a folder still being filled:
/// nothing there is under its final path.
pub fn in_temporary(rel: &Path) -> bool {
    rel.file_name().is_some_and(is_temp_name) || rel.iter().any(is_temp_dir_name)
}

/// Every temporary of blit's anywhere under `root` (relative paths): files, and folders still
/// being filled (not looked into). Safe to call while blit is running: entries that vanish
/// during the walk are skipped.
pub fn temps_under(root: &Path) -> Vec<PathBuf> {
    fn walk(abs: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(abs) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let r = rel.join(&name);
            if is_temp_name(&name) || is_temp_dir_name(&name) {
                out.push(r.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) && !is_temp_dir_name(&name) {
                walk(&abs.join(&name), &r, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Running blit
// ---------------------------------------------------------------------------------------------

/// A command for the blit binary under test: `BLIT_BIN` when set (e.g. `scripts/wine/blit`, which
/// runs the Windows build under Wine), else the binary cargo built.
pub fn blit() -> std::process::Command {
    let mut cmd = match std::env::var_os("BLIT_BIN") {
        Some(bin) => std::process::Command::new(bin),
        None => std::process::Command::cargo_bin("blit").expect("blit binary"),
    };
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs blit with `args` to completion (or [`RUN_TIMEOUT`]).
pub fn run<I, S>(args: I) -> Assert
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = blit();
    cmd.args(args);
    finish(cmd)
}

/// Runs blit as `nobody` (from a copy of the binary that `nobody` can execute).
pub fn run_as_nobody<I, S>(sandbox: &Sandbox, args: I) -> Assert
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = std::process::Command::new(sandbox.nobody_binary());
    cmd.stdin(Stdio::null())
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir(sandbox.path());
    // std drops root's supplementary groups itself when it switches uid.
    finish(cmd)
}

/// Runs a prepared command with the test timeout.
pub fn finish(cmd: std::process::Command) -> Assert {
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(RUN_TIMEOUT);
    cmd.assert()
}

pub fn stdout_of(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

pub fn stderr_of(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// Exit code, or a panic naming the signal if blit died from one.
pub fn code_of(a: &Assert) -> i32 {
    let out = a.get_output();
    out.status.code().unwrap_or_else(|| {
        panic!(
            "blit was killed ({:?}); stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts an exit code and shows both streams on failure.
pub fn expect_code(a: &Assert, code: i32) {
    let got = code_of(a);
    assert_eq!(
        got,
        code,
        "exit code {got}, want {code}\nstdout:\n{}\nstderr:\n{}",
        stdout_of(a),
        stderr_of(a)
    );
}

/// The `(symbol, path)` pairs of `-v` output. Every line that starts like an entry line must have
/// the full `<sym> <path> [<reason>]` shape with a non-empty reason; other lines (a summary, if
/// any) are ignored.
pub fn verbose_entries(stdout: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for line in stdout.lines() {
        let mut chars = line.chars();
        let sym = match chars.next() {
            Some(c @ ('+' | '*' | '.' | '-' | '=')) => c,
            _ => continue,
        };
        if chars.next() != Some(' ') {
            continue;
        }
        let rest = &line[2..];
        let open = rest
            .rfind(" [")
            .unwrap_or_else(|| panic!("verbose line without [reason]: {line:?}"));
        let reason = &rest[open + 2..];
        assert!(
            reason.ends_with(']') && reason.len() > 1,
            "verbose line with empty or unterminated reason: {line:?}"
        );
        out.insert((sym.to_string(), rest[..open].to_string()));
    }
    out
}

/// [`verbose_entries`] without the lines about the destination root itself, whose spelling the
/// contract leaves open.
pub fn verbose_entries_below_root(stdout: &str) -> BTreeSet<(String, String)> {
    verbose_entries(stdout)
        .into_iter()
        .filter(|(_, p)| !matches!(p.as_str(), "" | "." | "./" | "/"))
        .collect()
}

/// Asserts that in `-v` output every deletion comes after every copy, and counts the deletions.
pub fn assert_deletions_come_last(stdout: &str) -> usize {
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(['+', '-']))
        .collect();
    let first_delete = lines.iter().position(|l| l.starts_with('-'));
    let last_copy = lines.iter().rposition(|l| l.starts_with('+'));
    if let (Some(d), Some(c)) = (first_delete, last_copy) {
        assert!(c < d, "a deletion before a copy:\n{stdout}");
    }
    lines.iter().filter(|l| l.starts_with('-')).count()
}

pub fn entry(sym: &str, path: &str) -> (String, String) {
    (sym.to_string(), path.to_string())
}

/// Parses `--json` output, which must be exactly one JSON object.
/// Files a remote run's `--json` statistics say went in stripes over several connections.
pub fn striped_files(a: &Assert) -> u64 {
    let v = json_of(a);
    v["stats"]["methods"]
        .as_object()
        .unwrap_or_else(|| panic!("no copy paths in {v}"))
        .iter()
        .filter(|(k, _)| k.ends_with("network_striped"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum()
}

/// Files, nested folders and a symlink, all root's (Blit's own owner in the tests), for the
/// tests of folders that hand their group on; returns the entries' relative paths.
pub fn roots_tree(t: &Tree) -> [&'static str; 6] {
    t.file("f", b"f")
        .file("d/g", b"g")
        .file("d/e/h", b"h")
        .symlink("d/l", "g")
        .chown_all(0, 0);
    ["f", "d", "d/g", "d/e", "d/e/h", "d/l"]
}

/// Panics unless each of `rels` under `root` (links not followed) is owned by root:root.
pub fn assert_roots(root: &Path, rels: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    for rel in rels {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        assert_eq!((md.uid(), md.gid()), (0, 0), "{rel}");
    }
}

/// Bytes a JSON summary says were created or updated.
pub fn bytes_moved(j: &serde_json::Value) -> u64 {
    j["actions"]["create"]["bytes"].as_u64().unwrap()
        + j["actions"]["update"]["bytes"].as_u64().unwrap()
}

pub fn json_of(a: &Assert) -> serde_json::Value {
    let s = stdout_of(a);
    let v: serde_json::Value = serde_json::from_str(s.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{s}"));
    assert!(v.is_object(), "JSON output is not an object: {v}");
    v
}

/// Spawns blit without waiting, for tests that signal it mid-run.
pub fn spawn<I, S>(args: I) -> std::process::Child
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    blit()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn blit")
}

/// Waits until `cond` holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Deterministic, incompressible bytes (xorshift), so copies cannot be faked by holes or by
/// compression and every offset is distinguishable.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------------
// Comparing trees
// ---------------------------------------------------------------------------------------------

fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "folder"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "unknown"
    }
}

/// All extended attributes of `path` itself (not followed through a symlink), with values.
pub fn xattrs_of(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let names = xattr::list(path).unwrap_or_else(|e| panic!("listxattr {path:?}: {e}"));
    names
        .map(|n| {
            let v = xattr::get(path, &n)
                .unwrap_or_else(|e| panic!("getxattr {path:?} {n:?}: {e}"))
                .unwrap_or_default();
            (n, v)
        })
        .collect()
}

/// Compares two files' bytes in chunks (files can be hundreds of MiB) and returns the first
/// differing offset, if any.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut ra = BufReader::with_capacity(1 << 20, fs::File::open(a).unwrap());
    let mut rb = BufReader::with_capacity(1 << 20, fs::File::open(b).unwrap());
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut ra, &mut ba);
        let nb = read_full(&mut rb, &mut bb);
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Some(off + i as u64);
        }
        if na != nb {
            return Some(off + n as u64);
        }
        if na == 0 {
            return None;
        }
        off += na as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// True when the file at `a` has the same bytes as the file at `b`.
pub fn same_content(a: &Path, b: &Path) -> bool {
    first_difference(a, b).is_none()
}

/// Compares one entry of each tree (not what is below it) on every field blit preserves.
/// `label` names the entry in the panic message.
pub fn assert_entry_equal(a: &Path, b: &Path, label: &str) {
    let ma = fs::symlink_metadata(a).unwrap_or_else(|e| panic!("{label}: lstat {a:?}: {e}"));
    let mb = fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{label}: lstat {b:?}: {e}"));
    let fail = |field: &str, va: String, vb: String| -> ! {
        panic!("{label}: {field} differs: {va} (in {a:?}) vs {vb} (in {b:?})")
    };
    let (ka, kb) = (kind_of(ma.file_type()), kind_of(mb.file_type()));
    if ka != kb {
        fail("type", ka.into(), kb.into());
    }
    if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        fail(
            "permission bits",
            format!("{:#o}", ma.mode() & 0o7777),
            format!("{:#o}", mb.mode() & 0o7777),
        );
    }
    if ma.uid() != mb.uid() {
        fail("uid", ma.uid().to_string(), mb.uid().to_string());
    }
    if ma.gid() != mb.gid() {
        fail("gid", ma.gid().to_string(), mb.gid().to_string());
    }
    if matches!(ka, "file" | "folder" | "symlink")
        && (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec())
    {
        fail(
            "mtime",
            format!("{}.{:09}", ma.mtime(), ma.mtime_nsec()),
            format!("{}.{:09}", mb.mtime(), mb.mtime_nsec()),
        );
    }
    match ka {
        "file" => {
            if ma.len() != mb.len() {
                fail("size", ma.len().to_string(), mb.len().to_string());
            }
            if let Some(off) = first_difference(a, b) {
                fail(
                    "content",
                    format!("byte {off} of {}", ma.len()),
                    "a different byte".into(),
                );
            }
            if ma.blocks() * 512 < ma.len() && mb.blocks() > ma.blocks() + 16 {
                fail(
                    "allocation of a sparse file (512-byte blocks)",
                    ma.blocks().to_string(),
                    mb.blocks().to_string(),
                );
            }
        }
        "symlink" => {
            let (ta, tb) = (fs::read_link(a).unwrap(), fs::read_link(b).unwrap());
            if ta != tb {
                fail("symlink target", format!("{ta:?}"), format!("{tb:?}"));
            }
        }
        _ => {}
    }
    let (xa, xb) = (xattrs_of(a), xattrs_of(b));
    if xa != xb {
        fail("xattrs", format!("{xa:?}"), format!("{xb:?}"));
    }
}

/// Asserts that `b` is an exact replica of `a`: same entries, and for each the same type,
/// content, permission bits, owner, mtime (ns), xattrs, symlink target, sparseness and hard-link
/// grouping. The roots are compared too. Nothing is ignored: a stray temporary file fails it.
pub fn assert_trees_equal(a: &Path, b: &Path) {
    let (ta, tb) = (Tree::at(a), Tree::at(b));
    assert!(ta.exists(""), "tree {a:?} does not exist");
    assert!(tb.exists(""), "tree {b:?} does not exist");
    let (la, lb) = (ta.rel_paths(), tb.rel_paths());
    let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (la.iter().collect(), lb.iter().collect());
    let only_a: Vec<_> = sa.difference(&sb).collect();
    let only_b: Vec<_> = sb.difference(&sa).collect();
    if !only_a.is_empty() || !only_b.is_empty() {
        panic!(
            "trees differ in entries:\n  only in {a:?}: {only_a:?}\n  only in {b:?}: {only_b:?}"
        );
    }
    for rel in &la {
        let label = if rel.as_os_str().is_empty() {
            "<root>".to_string()
        } else {
            format!("{rel:?}")
        };
        assert_entry_equal(&ta.p(rel), &tb.p(rel), &label);
    }
    assert_same_link_groups(&ta, &tb, &la);
}

fn assert_same_link_groups(ta: &Tree, tb: &Tree, rels: &[PathBuf]) {
    let groups = |t: &Tree| {
        let mut by_inode: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
        let mut of: HashMap<PathBuf, (u64, u64)> = HashMap::new();
        for rel in rels {
            let m = t.meta(rel);
            if m.is_dir() {
                continue;
            }
            let key = (m.dev(), m.ino());
            by_inode.entry(key).or_default().insert(rel.clone());
            of.insert(rel.clone(), key);
        }
        of.into_iter()
            .map(|(rel, key)| (rel, by_inode[&key].clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let (ga, gb) = (groups(ta), groups(tb));
    for (rel, group_a) in &ga {
        let group_b = &gb[rel];
        assert_eq!(
            group_a,
            group_b,
            "hard links differ at {rel:?}: shares an inode with {group_a:?} in {:?} but with \
             {group_b:?} in {:?}",
            ta.root(),
            tb.root()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

/// Copies the tree at `from` to `to` (which must not exist) with full fidelity, independently of
/// blit, then checks the copy with [`assert_trees_equal`]. Tests use it to remember a tree before
/// blit touches it (a move's source, a dry run's destination) and to compare afterwards.
pub fn snapshot(from: &Path, to: &Path) {
    let (tf, tt) = (Tree::at(from), Tree::at(to));
    let rels = tf.rel_paths();
    let mut first_name: HashMap<(u64, u64), PathBuf> = HashMap::new();
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    for rel in &rels {
        let (src, dst) = (tf.p(rel), tt.p(rel));
        let m = tf.meta(rel);
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&dst).unwrap();
        } else if let Some(first) = first_name.get(&(m.dev(), m.ino())) {
            fs::hard_link(tt.p(first), &dst).unwrap();
        } else {
            first_name.insert((m.dev(), m.ino()), rel.clone());
            if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&src).unwrap(), &dst).unwrap();
            } else if ft.is_fifo() {
                tt.fifo(rel);
            } else if ft.is_file() {
                copy_sparse(&src, &dst, m.len());
            } else {
                panic!("snapshot: unsupported entry type at {src:?}");
            }
        }
    }
    // Metadata children first, so writing into a folder cannot disturb its restored mtime.
    for rel in rels.iter().rev() {
        let (src, dst) = (tf.p(rel), tt.p(rel));
        let m = tf.meta(rel);
        std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid())).unwrap();
        if !m.file_type().is_symlink() {
            fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777)).unwrap();
            for (name, value) in xattrs_of(&src) {
                xattr::set(&dst, &name, &value).unwrap();
            }
        }
        set_times(&dst, m.mtime(), m.mtime_nsec());
    }
    assert_trees_equal(from, to);
}

/// Copies only the data extents of `src`, so a snapshot of a sparse file stays sparse.
fn copy_sparse(src: &Path, dst: &Path, len: u64) {
    use std::os::fd::AsRawFd;
    let fin = fs::File::open(src).unwrap();
    let fout = fs::File::create(dst).unwrap();
    fout.set_len(len).unwrap();
    let fd = fin.as_raw_fd();
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while (pos as u64) < len {
        // SAFETY: plain lseek on a descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: only a hole remains
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut off = data;
        while off < end {
            let want = ((end - off) as usize).min(buf.len());
            let n = fin.read_at(&mut buf[..want], off as u64).unwrap();
            assert!(n > 0, "short read in snapshot of {src:?}");
            fout.write_all_at(&buf[..n], off as u64).unwrap();
            off += n as i64;
        }
        pos = end;
    }
}

/// A fresh sandbox path holding a snapshot of `from`.
pub fn snapshot_into(sb: &Sandbox, from: &Path, name: &str) -> PathBuf {
    let to = sb.join(name);
    snapshot(from, &to);
    to
}

// ---------------------------------------------------------------------------------------------
// A tree with one of everything
// ---------------------------------------------------------------------------------------------

/// Fills `t` with one of every kind of entry and metadata blit must carry over: nested folders,
/// empty/small/large files, symlinks (relative, absolute, dangling, to a folder), a hard-link
/// group, a fifo, a sparse file, unusual modes, foreign owners, xattrs, non-UTF-8 names and
/// explicit nanosecond mtimes on everything, folders last so their times stick.
pub fn populate_rich(t: &Tree) {
    t.mkroot()
        .file("empty", b"")
        .file("small.txt", b"hello blit\n")
        .file("big.bin", noise(3 << 20, 7))
        .file("a/b/c/deep.txt", b"deep")
        .file("a/sib.txt", b"sibling")
        .dir("a/empty-dir")
        .symlink("rel-link", "a/b/c/deep.txt")
        .symlink("abs-dangling", "/nonexistent/blit/target")
        .symlink("dir-link", "a/b")
        .hardlink("a/hard-2", "small.txt")
        .hardlink("a/b/hard-3", "small.txt")
        .fifo("pipe")
        .sparse(
            "sparse.img",
            24 << 20,
            &[(0, b"head"), (12 << 20, b"middle")],
        )
        .file(bpath(b"caf\xe9"), b"latin-1 name")
        .file("new\nline", b"newline in name")
        .file("back\\slash", b"backslash in name")
        .file("setuid", b"#!/bin/sh\n")
        .chown("setuid", 1234, 5678)
        .chmod("setuid", 0o4755)
        .dir("sticky")
        .file("sticky/inside", b"x")
        .chmod("sticky", 0o1777)
        .file("private", b"secret")
        .chmod("private", 0o600)
        .chown("a/sib.txt", 4242, 4343)
        .chown("rel-link", 1111, 2222)
        .set_xattr("small.txt", "user.color", b"blue")
        .set_xattr("a", "user.bin", &[0, 255, 1, 2])
        .set_xattr("a/sib.txt", "user.empty", b"");
    let mut n = 0;
    for rel in t.rel_paths().into_iter().rev() {
        n += 1;
        let m = t.meta(&rel);
        if !m.file_type().is_fifo() {
            t.set_mtime(
                &rel,
                1_600_000_000 + n * 1000,
                n * 1_000_003 % 1_000_000_000,
            );
        }
    }
}
