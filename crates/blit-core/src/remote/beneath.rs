//! Paths a client names, resolved strictly beneath a module's root. On Linux the kernel does it
//! (`openat2` with `RESOLVE_BENEATH`): `..`, absolute symlinks, and symlinks that climb out are
//! refused during the lookup itself, so no check-then-use race exists. Symlinks that stay inside
//! the module are followed, as a local user of the module would expect.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use super::server::fd_path;

const BENEATH: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// The module's root folder (its configured path is trusted and may itself be a symlink).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens `rel` beneath `root` (as an `O_PATH` handle: no permission needed, nothing triggered,
/// a fifo is not opened for reading).
pub fn open(root: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        BENEATH,
    )?)
}

/// Where a push writes: the path to give the engine, and the folder handles that path goes
/// through (held for the session, so the path keeps meaning the resolved folder).
pub struct Dest {
    pub path: PathBuf,
    _held: Vec<OwnedFd>,
}

/// Resolves a push's destination beneath the module's folder `root`: a folder source's contents
/// go into `rel`; a file goes to `rel`, or inside it when `rel` is a folder or was written with
/// a trailing slash. Missing parent folders are made (not in a dry run). The final name may not
/// be a symlink: the engine would follow it.
pub fn dest(
    root: &OwnedFd,
    rel: &Path,
    src_name: &[u8],
    src_is_dir: bool,
    into: bool,
    dry_run: bool,
) -> io::Result<Dest> {
    use std::os::unix::ffi::OsStrExt;
    let root = open(root, Path::new(""))?;
    let mut target = rel.to_path_buf();
    if !src_is_dir {
        let is_dir = !rel.as_os_str().is_empty()
            && open(&root, rel)
                .ok()
                .and_then(|fd| rustix::fs::fstat(&fd).ok())
                .is_some_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::Directory
                });
        // The module's root is a folder.
        if crate::landing::file_goes_inside(is_dir || rel.as_os_str().is_empty(), into) {
            target.push(OsStr::from_bytes(src_name));
        }
    }
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        // The module's folder itself, through its held handle (`.`: a last name that is no
        // link, for the engine, which opens the root without following one).
        return Ok(Dest {
            path: fd_path(&root).join("."),
            _held: vec![root],
        });
    };
    let name: OsString = name.to_os_string();
    let (parent_fd, missing) = make_parents(&root, parent, dry_run)?;
    let mut path = fd_path(&parent_fd);
    for m in &missing {
        path.push(m);
    }
    path.push(&name);
    if missing.is_empty() {
        if let Ok(st) = rustix::fs::statat(&parent_fd, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
        {
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the destination is a symlink; name the folder it points to",
                ));
            }
        }
    }
    Ok(Dest {
        path,
        _held: vec![root, parent_fd],
    })
}

/// Opens the folder `rel` beneath `root`, making missing folders on the way (each made inside the
/// folder resolved just before, then looked up again beneath the root). In a dry run nothing is
/// made: the deepest existing folder is returned with the names still missing.
fn make_parents(root: &OwnedFd, rel: &Path, dry_run: bool) -> io::Result<(OwnedFd, Vec<OsString>)> {
    let mut done = PathBuf::new();
    let mut cur = open(root, Path::new(""))?;
    let mut missing = Vec::new();
    for comp in rel.components() {
        let name = comp.as_os_str();
        if !missing.is_empty() {
            missing.push(name.to_os_string());
            continue;
        }
        let next = done.join(name);
        match open(root, &next) {
            Ok(fd) => {
                cur = fd;
                done = next;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && dry_run => {
                missing.push(name.to_os_string());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                cur = open(root, &next)?;
                done = next;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((cur, missing))
}
