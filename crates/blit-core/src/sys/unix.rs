//! Unix primitives shared by Linux and macOS: opening without following links, creating the
//! temporary, and restoring metadata in the order the kernel requires (owner before mode, because
//! `chown` clears setuid/setgid; times last, because every other change touches ctime/mtime).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid, CWD, UTIME_OMIT};
use xattr::FileExt;

use super::{copy_data, CopyOutcome, CopyRequest, MetaOpts, Method};
use crate::entry::{Entry, Kind, MTime};
use crate::error::{Error, IoContext, Op, Result};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Opens a source file for reading without following a symlink swapped in since the walk.
pub fn open_source(path: &Path) -> Result<File> {
    #[allow(unused_mut)]
    let mut flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    #[cfg(target_os = "linux")]
    if is_root() {
        // Reading for a copy is not a use of the file; keep atime as it was.
        flags |= OFlags::NOATIME;
    }
    rustix::fs::open(path, flags, Mode::empty())
        .map(File::from)
        .at(Op::Open, path)
}

/// Creates the temporary that will become a file; `EXCL` + `NOFOLLOW` so it can never land on
/// something that already exists, a planted symlink included.
pub fn create_temp(path: &Path) -> Result<File> {
    rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map(File::from)
    .at(Op::Create, path)
}

fn timestamps(mtime: MTime) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime.sec,
            tv_nsec: mtime.nsec as _,
        },
    }
}

/// Copies `req.src` into a new temporary at `req.tmp`, with its metadata, through descriptors:
/// the source is `fstat`ed before and after the copy, and a source that changed meanwhile gives
/// [`CopyOutcome::Changed`] so the caller can discard the temporary and try again.
pub fn copy_to_temp(req: &CopyRequest<'_>) -> Result<CopyOutcome> {
    let mut input = open_source(req.src)?;
    let stat = |f: &File| {
        f.metadata()
            .map(|md| Entry::from_metadata(std::path::PathBuf::new(), &md))
            .at(Op::Stat, req.src)
    };
    let before = stat(&input)?;
    if before.kind != Kind::File {
        return Ok(CopyOutcome::Changed);
    }
    #[cfg(target_vendor = "apple")]
    if super::macos::try_clone(&input, req.tmp, req.fast).at(Op::Copy, req.tmp)? {
        let out = rustix::fs::open(
            req.tmp,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .at(Op::Open, req.tmp)?;
        return finish_copy(req, &input, out, &before, before.size, Method::Clone);
    }
    let mut out = create_temp(req.tmp)?;
    let (n, method) = match copy_data(
        &mut input,
        &mut out,
        before.size,
        before.is_sparse(),
        req.fast,
        req.cancel,
    ) {
        Ok(r) => r,
        Err(_) if req.cancel.is_cancelled() => return Err(Error::Cancelled),
        Err(e) => return Err(Error::io(Op::Copy, req.tmp, e)),
    };
    finish_copy(req, &input, out, &before, n, method)
}

/// Checks that the source did not change during the copy, then restores metadata and flushes.
fn finish_copy(
    req: &CopyRequest<'_>,
    input: &File,
    out: File,
    before: &Entry,
    n: u64,
    method: Method,
) -> Result<CopyOutcome> {
    let after = input
        .metadata()
        .map(|md| Entry::from_metadata(std::path::PathBuf::new(), &md))
        .at(Op::Stat, req.src)?;
    if n != before.size || after.size != before.size || after.mtime != before.mtime {
        return Ok(CopyOutcome::Changed);
    }
    apply_file_meta(&out, req.tmp, input, req.src, before, req.meta)?;
    if req.fsync {
        out.sync_all().at(Op::Sync, req.tmp)?;
    }
    (req.progress)(n);
    Ok(CopyOutcome::Done { bytes: n, method })
}

/// Restores metadata on a freshly written file through its descriptor.
pub fn apply_file_meta(
    dst: &File,
    dst_path: &Path,
    src: &File,
    src_path: &Path,
    meta: &Entry,
    opts: MetaOpts,
) -> Result<()> {
    if opts.owner {
        rustix::fs::fchown(
            dst,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .at(Op::Chown, dst_path)?;
    }
    if opts.xattrs {
        let names = src.list_xattr().at(Op::Xattr, src_path)?;
        for name in names {
            if let Some(value) = src.get_xattr(&name).at(Op::Xattr, src_path)? {
                dst.set_xattr(&name, &value).at(Op::Xattr, dst_path)?;
            }
        }
    }
    rustix::fs::fchmod(dst, Mode::from_raw_mode(meta.perm as _)).at(Op::Chmod, dst_path)?;
    rustix::fs::futimens(dst, &timestamps(meta.mtime)).at(Op::Utimes, dst_path)?;
    Ok(())
}

/// Brings the metadata of an existing entry at `dst` in line with `meta` (read from `src`),
/// without following a symlink at `dst`. Used for folders, links, specials and metadata-only
/// updates of files.
pub fn apply_path_meta(dst: &Path, src: &Path, meta: &Entry, opts: MetaOpts) -> Result<()> {
    if opts.owner {
        rustix::fs::chownat(
            CWD,
            dst,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .at(Op::Chown, dst)?;
    }
    if opts.xattrs {
        sync_xattrs(src, dst)?;
    }
    if meta.kind != Kind::Symlink {
        rustix::fs::chmodat(
            CWD,
            dst,
            Mode::from_raw_mode(meta.perm as _),
            AtFlags::empty(),
        )
        .at(Op::Chmod, dst)?;
    }
    rustix::fs::utimensat(CWD, dst, &timestamps(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
        .at(Op::Utimes, dst)?;
    Ok(())
}

fn xattr_map(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in xattr::list(path).at(Op::Xattr, path)? {
        if let Some(v) = xattr::get(path, &name).at(Op::Xattr, path)? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

/// True when both entries carry the same extended attributes (names and values).
pub fn xattrs_equal(a: &Path, b: &Path) -> Result<bool> {
    // Most files have none: one cheap list call each settles it.
    let la = xattr::list(a).at(Op::Xattr, a)?.count();
    let lb = xattr::list(b).at(Op::Xattr, b)?.count();
    if la == 0 && lb == 0 {
        return Ok(true);
    }
    if la != lb {
        return Ok(false);
    }
    Ok(xattr_map(a)? == xattr_map(b)?)
}

fn sync_xattrs(src: &Path, dst: &Path) -> Result<()> {
    let want = xattr_map(src)?;
    let have = xattr_map(dst)?;
    for (name, _) in &have {
        if !want.iter().any(|(n, _)| n == name) {
            xattr::remove(dst, name).at(Op::Xattr, dst)?;
        }
    }
    for (name, value) in &want {
        if !have.iter().any(|(n, v)| n == name && v == value) {
            xattr::set(dst, name, value).at(Op::Xattr, dst)?;
        }
    }
    Ok(())
}

pub fn read_link(path: &Path) -> Result<std::path::PathBuf> {
    std::fs::read_link(path).at(Op::Read, path)
}

/// Creates a symlink at `at` like the one at `_src` (whose kind matters only on Windows).
pub fn make_symlink(target: &Path, at: &Path, _src: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at).at(Op::Symlink, at)
}

/// Recreates a fifo or device node (devices need root).
pub fn make_special(at: &Path, meta: &Entry) -> Result<()> {
    use rustix::fs::FileType;
    let ft = match meta.kind {
        Kind::Fifo => FileType::Fifo,
        Kind::CharDevice => FileType::CharacterDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        _ => {
            return Err(Error::io(
                Op::Create,
                at,
                io::Error::new(io::ErrorKind::Unsupported, "sockets are not copied"),
            ))
        }
    };
    mknod(at, ft, meta)
}

#[cfg(not(target_vendor = "apple"))]
fn mknod(at: &Path, ft: rustix::fs::FileType, meta: &Entry) -> Result<()> {
    rustix::fs::mknodat(CWD, at, ft, Mode::from_raw_mode(0o600), meta.rdev as _).at(Op::Create, at)
}

#[cfg(target_vendor = "apple")]
fn mknod(at: &Path, ft: rustix::fs::FileType, meta: &Entry) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(at.as_os_str().as_bytes())
        .map_err(|e| Error::io(Op::Create, at, io::Error::other(e)))?;
    let mode = (ft.as_raw_mode() | 0o600) as libc::mode_t;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, meta.rdev as libc::dev_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(Op::Create, at, io::Error::last_os_error()))
    }
}

pub fn hard_link(existing: &Path, new: &Path) -> Result<()> {
    std::fs::hard_link(existing, new).at(Op::Link, new)
}

/// Atomically puts `from` in place of `to` (replacing a non-folder there).
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).at(Op::Rename, to)
}

/// Renames without the error wrapping, so the caller can tell a cross-device refusal.
pub fn try_rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

pub fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).at(Op::Delete, path)
}

/// Removes an empty folder; `Ok(false)` when it still holds something (an excluded entry).
pub fn remove_dir(path: &Path) -> Result<bool> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(Error::io(Op::Delete, path, e)),
    }
}

pub fn make_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    // Owner-only until its contents are in; the real mode is set last, so a read-only source
    // folder can still be filled.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .at(Op::Mkdir, path)
}

/// Flushes an existing file (opened read-only: `fsync` needs no write access).
pub fn fsync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .at(Op::Sync, path)
}

pub fn fsync_dir(path: &Path) -> Result<()> {
    let d = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at(Op::Open, path)?;
    rustix::fs::fsync(&d).at(Op::Sync, path)
}
