//! Entries by name in an open folder: links, specials, renames, removals, folders and flushes.

use super::*;

pub fn read_link_at(at: At<'_>) -> Result<PathBuf> {
    rustix::fs::readlinkat(&at.dir.fd, at.name, Vec::new())
        .map(|c| PathBuf::from(OsString::from_vec(c.into_bytes())))
        .map_err(|e| Error::io(Op::Read, at.path(), e.into()))
}

/// Creates a symlink (`_dir_link`, the kind of link, matters only on Windows).
pub fn symlink_at(target: &Path, at: At<'_>, _dir_link: bool) -> Result<()> {
    rustix::fs::symlinkat(target, &at.dir.fd, at.name)
        .map_err(|e| Error::io(Op::Symlink, at.path(), e.into()))
}

/// Whether a symlink is a folder link (a Windows notion; never on Unix).
pub fn link_is_dir(_at: At<'_>) -> bool {
    false
}

/// Recreates a fifo or device node (devices need root). Under fake super it is an empty plain
/// file instead, which its attributes describe (see [`crate::fakesuper`]).
pub fn make_special_at(at: At<'_>, meta: &Entry, opts: MetaOpts) -> Result<()> {
    if opts.fake_super {
        return create_temp(at, 0o600).map(drop);
    }
    let ft = match meta.kind {
        Kind::Fifo => FileType::Fifo,
        Kind::CharDevice => FileType::CharacterDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        _ => {
            return Err(Error::io(
                Op::Create,
                at.path(),
                io::Error::new(io::ErrorKind::Unsupported, "sockets are not copied"),
            ))
        }
    };
    mknod(at, ft, meta)
}

#[cfg(not(target_vendor = "apple"))]
pub(super) fn mknod(at: At<'_>, ft: FileType, meta: &Entry) -> Result<()> {
    rustix::fs::mknodat(
        &at.dir.fd,
        at.name,
        ft,
        Mode::from_raw_mode(0o600),
        meta.rdev as _,
    )
    .map_err(|e| Error::io(Op::Create, at.path(), e.into()))
}

#[cfg(target_vendor = "apple")]
pub(super) fn mknod(at: At<'_>, ft: FileType, meta: &Entry) -> Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(at.name.as_bytes())
        .map_err(|e| Error::io(Op::Create, at.path(), io::Error::other(e)))?;
    let mode = (ft.as_raw_mode() | 0o600) as libc::mode_t;
    // SAFETY: valid descriptor and NUL-terminated name for the duration of the call.
    let rc = unsafe {
        libc::mknodat(
            at.dir.fd().as_raw_fd(),
            c.as_ptr(),
            mode,
            meta.rdev as libc::dev_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(Op::Create, at.path(), io::Error::last_os_error()))
    }
}

pub fn hard_link_at(existing: At<'_>, new: At<'_>) -> Result<()> {
    rustix::fs::linkat(
        &existing.dir.fd,
        existing.name,
        &new.dir.fd,
        new.name,
        AtFlags::empty(),
    )
    .map_err(|e| Error::io(Op::Link, new.path(), e.into()))
}

/// Atomically puts `from` in place of `to` (replacing a non-folder there).
pub fn rename_at(from: At<'_>, to: At<'_>) -> Result<()> {
    try_rename_at(from, to).map_err(|e| Error::io(Op::Rename, to.path(), e))
}

/// Renames without the error wrapping, so the caller can tell a cross-device refusal.
pub fn try_rename_at(from: At<'_>, to: At<'_>) -> io::Result<()> {
    rustix::fs::renameat(&from.dir.fd, from.name, &to.dir.fd, to.name).map_err(Into::into)
}

/// Folders are filled under a temporary name and then renamed into place (`sync::Fresh`):
/// renaming a folder while descriptors into it are open is fine here.
pub const FRESH_FOLDERS: bool = true;

/// Names a folder this run filled under a temporary name, never over something that appeared
/// at the final name meanwhile (a plain rename would silently replace an empty folder there).
pub fn publish_dir(from: At<'_>, to: At<'_>) -> Result<()> {
    let fail = |e: rustix::io::Errno| Error::io(Op::Rename, to.path(), e.into());
    #[cfg(any(target_os = "linux", target_vendor = "apple"))]
    match rustix::fs::renameat_with(
        &from.dir.fd,
        from.name,
        &to.dir.fd,
        to.name,
        rustix::fs::RenameFlags::NOREPLACE,
    ) {
        Ok(()) => return Ok(()),
        // A filesystem without the flag (Linux says EINVAL, macOS ENOTSUP): looked at first
        // instead, which only a race defeats.
        Err(e)
            if e == rustix::io::Errno::INVAL
                || e == rustix::io::Errno::NOSYS
                || e == rustix::io::Errno::NOTSUP
                || e == rustix::io::Errno::OPNOTSUPP => {}
        Err(e) => return Err(fail(e)),
    }
    match rustix::fs::statat(&to.dir.fd, to.name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Err(fail(rustix::io::Errno::EXIST)),
        Err(rustix::io::Errno::NOENT) => {
            rustix::fs::renameat(&from.dir.fd, from.name, &to.dir.fd, to.name).map_err(fail)
        }
        Err(e) => Err(fail(e)),
    }
}

/// Marks a folder this run is filling as in use for as long as `d` stays open (an exclusive
/// `flock`), so that another run, or another session of the same daemon, finding it leaves it
/// alone instead of removing it as a killed run's leftover. `false` where the filesystem cannot
/// lock.
pub fn hold_dir(d: &Dir) -> bool {
    rustix::fs::flock(&d.fd, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Whether a running process holds the folder (see [`hold_dir`]). When it does not, the lock is
/// now ours until `d` is closed.
pub fn dir_held(d: &Dir) -> bool {
    rustix::fs::flock(&d.fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        == Err(rustix::io::Errno::WOULDBLOCK)
}

pub fn unlink_at(at: At<'_>) -> Result<()> {
    rustix::fs::unlinkat(&at.dir.fd, at.name, AtFlags::empty())
        .map_err(|e| Error::io(Op::Delete, at.path(), e.into()))
}

/// Removes an empty folder; `Ok(false)` when it still holds something (an excluded entry).
pub fn rmdir_at(at: At<'_>) -> Result<bool> {
    match rustix::fs::unlinkat(&at.dir.fd, at.name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(Error::io(Op::Delete, at.path(), e.into())),
    }
}

/// Owner-only until its contents are in; the real mode is set last, so a read-only source
/// folder can still be filled.
pub fn mkdir_at(at: At<'_>) -> Result<()> {
    rustix::fs::mkdirat(&at.dir.fd, at.name, Mode::from_raw_mode(0o700))
        .map_err(|e| Error::io(Op::Mkdir, at.path(), e.into()))
}

/// Flushes an existing file (opened read-only: `fsync` needs no write access).
pub fn fsync_at(at: At<'_>) -> Result<()> {
    let f = rustix::fs::openat(
        &at.dir.fd,
        at.name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(Op::Open, at.path(), e.into()))?;
    rustix::fs::fsync(&f).map_err(|e| Error::io(Op::Sync, at.path(), e.into()))
}

pub fn fsync_dir(dir: &Dir) -> Result<()> {
    rustix::fs::fsync(&dir.fd).map_err(|e| Error::io(Op::Sync, dir.path.clone(), e.into()))
}
