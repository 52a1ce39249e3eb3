//! Unix primitives shared by Linux and macOS. Everything inside a tree is reached through an open
//! folder descriptor and `*at` calls with a single-component name and `NOFOLLOW`, never through a
//! full path, so a folder swapped for a symlink mid-run cannot redirect a write (the class of bug
//! behind most of rsync's recent CVEs), and trees deeper than `PATH_MAX` work.
//!
//! Metadata is restored in the order the kernel requires: owner before mode (`chown` clears
//! setuid/setgid), times last (every other change touches them).

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, UTIME_OMIT};
use xattr::FileExt;

use super::{
    copy_data, At, CopyOutcome, CopyRequest, Fed, MetaOpts, Method, Output, Writing, Xattrs,
};
use crate::entry::{Entry, Kind, MTime};
use crate::error::{Error, IoContext, Op, Result};

mod copy;
mod dir;
mod meta;
mod names;
mod stat;

pub use copy::*;
pub use dir::*;
pub use meta::*;
pub use names::*;
pub use stat::*;

thread_local! {
    /// Whether this thread acts as root, once asked. Per thread: a daemon's session thread gives
    /// up root for the module's user (`sys::creds`), and so do the threads it starts, while
    /// the rest of the process stays root.
    static ROOT: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the calling thread acts as root.
pub fn is_root() -> bool {
    ROOT.with(|r| {
        r.get().unwrap_or_else(|| {
            let root = rustix::process::geteuid().is_root();
            r.set(Some(root));
            root
        })
    })
}

/// The calling thread now acts as another user: [`is_root`] asks again.
pub fn identity_changed() {
    ROOT.with(|r| r.set(None));
}

/// The owner a new file gets by default, so `chown` can be skipped when it is already right.
pub fn creator() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// The process's file-creation mask (read by setting and restoring it, the only way POSIX offers;
/// done once, before any worker starts).
pub fn current_umask() -> u32 {
    let old = rustix::process::umask(Mode::empty());
    rustix::process::umask(old);
    old.bits() as u32
}

/// Lets the process hold as many folder descriptors as the hard limit allows; deep or wide
/// trees keep many open at once.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum {
        let want = max.min(1 << 20);
        if lim.current.is_some_and(|c| c < want) {
            let _ = setrlimit(
                Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(want),
                    maximum: lim.maximum,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A filled folder is named only where nothing stands: an (empty) folder that appeared at
    /// the final name meanwhile is neither replaced nor merged, and the filled one stays put.
    #[test]
    fn a_filled_folder_never_replaces_what_appeared_at_its_name() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join(".~blit-1-1.dir")).unwrap();
        std::fs::write(t.path().join(".~blit-1-1.dir/f"), b"copied").unwrap();
        std::fs::create_dir(t.path().join("name")).unwrap();
        let dir = Dir::open(t.path()).unwrap();
        let (from, to) = (
            At::new(&dir, OsStr::new(".~blit-1-1.dir")),
            At::new(&dir, OsStr::new("name")),
        );
        let e = publish_dir(from, to).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        assert!(t.path().join(".~blit-1-1.dir/f").exists());
        assert_eq!(std::fs::read_dir(t.path().join("name")).unwrap().count(), 0);
        std::fs::remove_dir(t.path().join("name")).unwrap();
        publish_dir(from, to).unwrap();
        assert_eq!(std::fs::read(t.path().join("name/f")).unwrap(), b"copied");
    }

    /// A folder swapped for a symlink after it was looked at: restoring the folder's metadata
    /// must fail on the link, and leave what the link points at untouched.
    #[test]
    fn metadata_is_never_applied_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        let dir = Dir::open(t.path()).unwrap();
        // The folder's metadata, as the walk saw it.
        let mut meta = stat_at(At::new(&dir, OsStr::new("real")), PathBuf::from("d")).unwrap();
        meta.perm = 0o777;
        std::fs::remove_dir(t.path().join("real")).unwrap();
        std::os::unix::fs::symlink(&target, t.path().join("real")).unwrap();
        let at = At::new(&dir, OsStr::new("real"));
        let opts = MetaOpts {
            owner: false,
            xattrs: false,
            system_xattrs: true,
            fake_super: false,
        };
        assert!(apply_meta_at(at, &meta, opts, None).is_err());
        assert!(chmod_at(at, 0o777).is_err());
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // A real entry is changed as asked.
        std::fs::create_dir(t.path().join("plain")).unwrap();
        chmod_at(At::new(&dir, OsStr::new("plain")), 0o751).unwrap();
        let mode = std::fs::metadata(t.path().join("plain"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o751);
    }
}
