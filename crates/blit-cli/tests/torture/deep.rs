//! Building and comparing trees deeper than `PATH_MAX` (4096 bytes), where no full path works.
//!
//! Everything goes through an open folder and `/proc/self/fd/<fd>/<name>`: the kernel resolves
//! the `/proc` link to the held folder, so each call's path stays short however deep the folder
//! is, and the test process never changes its working folder (tests run on parallel threads).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An open folder.
pub struct DirFd(File);

impl DirFd {
    pub fn open(path: &Path) -> std::io::Result<DirFd> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map(DirFd)
    }

    /// A short path that reaches `name` inside this folder.
    pub fn p(&self, name: impl AsRef<OsStr>) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()));
        p.push(name.as_ref());
        p
    }

    /// This folder itself, as a short path.
    pub fn me(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }

    pub fn child(&self, name: impl AsRef<OsStr>) -> std::io::Result<DirFd> {
        DirFd::open(&self.p(name))
    }

    /// Creates (if missing) and opens a subfolder.
    pub fn mkdir(&self, name: impl AsRef<OsStr>) -> DirFd {
        let p = self.p(&name);
        match fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir {:?}: {e}", name.as_ref()),
        }
        self.child(name).unwrap()
    }

    pub fn names(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = fs::read_dir(self.me())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    }
}

/// Sets the mtime of `name` in `dir` without following a symlink.
pub fn set_mtime_in(dir: &DirFd, name: &OsStr, sec: i64, nsec: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(name.as_bytes()).unwrap();
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: valid descriptor, NUL-terminated name, two timespecs.
    let rc = unsafe {
        libc::utimensat(
            dir.0.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat: {}", std::io::Error::last_os_error());
}

/// A chain of folders below `root`, one per name, returning the deepest one opened.
pub fn mkdir_chain(root: &Path, names: &[OsString]) -> DirFd {
    let mut d = DirFd::open(root).expect("open chain root");
    for n in names {
        d = d.mkdir(n);
    }
    d
}

/// One entry's comparable state.
#[derive(Debug, PartialEq)]
struct Facts {
    kind: &'static str,
    perm: u32,
    mtime: (i64, i64),
    size: u64,
    target: Option<PathBuf>,
    xattrs: BTreeMap<OsString, Vec<u8>>,
}

fn facts(dir: &DirFd, name: &OsStr) -> Facts {
    let p = dir.p(name);
    let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {name:?}: {e}"));
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "folder"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    };
    let xattrs = xattr::list(&p)
        .unwrap()
        .map(|n| {
            let v = xattr::get(&p, &n).unwrap().unwrap_or_default();
            (n, v)
        })
        .collect();
    Facts {
        kind,
        perm: if ft.is_symlink() {
            0
        } else {
            m.permissions().mode() & 0o7777
        },
        mtime: (m.mtime(), m.mtime_nsec()),
        size: if ft.is_file() { m.len() } else { 0 },
        target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
        xattrs,
    }
}

/// Compares two trees of any depth (names, types, content, mode, mtime, link targets, xattrs);
/// returns the differences, each with its path relative to the roots, and the number of entries
/// compared.
pub fn compare_deep(a: &Path, b: &Path) -> (Vec<String>, u64) {
    let (da, db) = (DirFd::open(a).unwrap(), DirFd::open(b).unwrap());
    let mut diffs = Vec::new();
    let mut n = 0;
    walk_pair(&da, &db, &mut PathBuf::new(), &mut diffs, &mut n);
    (diffs, n)
}

fn walk_pair(a: &DirFd, b: &DirFd, rel: &mut PathBuf, diffs: &mut Vec<String>, n: &mut u64) {
    let (na, nb) = (a.names(), b.names());
    if na != nb {
        let only_a: Vec<_> = na.iter().filter(|x| !nb.contains(x)).collect();
        let only_b: Vec<_> = nb.iter().filter(|x| !na.contains(x)).collect();
        diffs.push(format!(
            "{} (depth {} bytes): only in source {only_a:?}, only in destination {only_b:?}",
            short(rel),
            rel.as_os_str().len()
        ));
    }
    for name in na.iter().filter(|x| nb.contains(x)) {
        *n += 1;
        rel.push(name);
        let (fa, fb) = (facts(a, name), facts(b, name));
        if fa != fb {
            diffs.push(format!("{}: {fa:?} vs {fb:?}", short(rel)));
        } else if fa.kind == "file" {
            let (ca, cb) = (fs::read(a.p(name)).unwrap(), fs::read(b.p(name)).unwrap());
            if ca != cb {
                diffs.push(format!("{}: content differs", short(rel)));
            }
        } else if fa.kind == "folder" {
            let (ca, cb) = (a.child(name).unwrap(), b.child(name).unwrap());
            walk_pair(&ca, &cb, rel, diffs, n);
        }
        rel.pop();
    }
}

/// A long relative path shortened for messages: its length and last component.
fn short(rel: &Path) -> String {
    let s = rel.to_string_lossy();
    if s.len() <= 120 {
        s.into_owned()
    } else {
        format!(
            "<{} bytes>/{}",
            s.len(),
            rel.file_name().unwrap_or_default().to_string_lossy()
        )
    }
}
