//! Windows primitives. Whole-file copies go through `CopyFileExW`, the call robocopy uses: the
//! project's origin is a measured 2.16x loss to robocopy by a Blit that copied through a userspace
//! buffer instead. The fallback, for when the OS call refuses, is a sequential-scan read/write
//! loop with a large buffer.
//!
//! Windows has no mode bits or owners to restore here; an entry's `perm` holds its
//! read-only/hidden/system attributes, and times are kept at the 100 ns NTFS resolution.

use std::ffi::{c_void, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use windows_sys::Win32::Foundation::{ERROR_REQUEST_ABORTED, HANDLE};
use windows_sys::Win32::Storage::FileSystem::{
    CopyFileExW, GetFileAttributesW, SetFileAttributesW, COPY_FILE_FAIL_IF_EXISTS,
    FILE_ATTRIBUTE_ARCHIVE, FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_SYSTEM, FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT,
    FILE_FLAG_SEQUENTIAL_SCAN, FILE_WRITE_ATTRIBUTES, INVALID_FILE_ATTRIBUTES, PROGRESS_CANCEL,
    PROGRESS_CONTINUE,
};

use super::fallback::copy_range_rw;
use super::{At, CopyOutcome, CopyRequest, Fed, MetaOpts, Method, Output};
use crate::entry::{Entry, Kind, MTime};
use crate::error::{Error, IoContext, Op, Result};

/// The attribute bits Blit restores.
pub const KEPT_ATTRIBUTES: u32 =
    FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM;

pub fn is_root() -> bool {
    false
}

/// A folder of a tree. Windows resolves by path here; the descriptor-relative discipline of the
/// Unix side has no cheap equivalent in the Win32 API.
#[derive(Debug)]
pub struct Dir {
    path: PathBuf,
}

impl Dir {
    pub fn open(path: &Path) -> Result<Dir> {
        let md = std::fs::metadata(path).at(Op::Open, path)?;
        if !md.is_dir() {
            return Err(Error::io(
                Op::Open,
                path,
                io::Error::new(io::ErrorKind::NotADirectory, "not a folder"),
            ));
        }
        Ok(Dir {
            path: path.to_path_buf(),
        })
    }

    /// A root that is not itself a link or junction.
    pub fn open_nofollow(path: &Path) -> Result<Dir> {
        let md = std::fs::symlink_metadata(path).at(Op::Open, path)?;
        if md.file_type().is_symlink() {
            return Err(Error::io(
                Op::Open,
                path,
                io::Error::new(io::ErrorKind::NotADirectory, "not a folder (a link?)"),
            ));
        }
        Dir::open(path)
    }

    /// Refuses (rather than follows) a link or junction standing where a folder was.
    pub fn open_child(&self, name: &OsStr) -> Result<Dir> {
        let path = self.path.join(name);
        let md = std::fs::symlink_metadata(&path).at(Op::Open, &path)?;
        if !md.is_dir() || md.file_type().is_symlink() {
            return Err(Error::io(
                Op::Open,
                path,
                io::Error::new(io::ErrorKind::NotADirectory, "not a folder (a link?)"),
            ));
        }
        Ok(Dir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// No identity is read here (folders are reached by path); `(0, 0)` checks nothing.
    pub fn id(&self) -> Result<(u64, u64)> {
        Ok((0, 0))
    }

    /// The folder holding this one.
    pub fn open_parent(&self) -> Result<Dir> {
        let parent = self.path.parent().unwrap_or(&self.path);
        Dir::open(parent)
    }

    pub fn read_names(&self) -> Result<Vec<(OsString, Option<Kind>)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.path).at(Op::ReadDir, &self.path)? {
            let e = e.at(Op::ReadDir, &self.path)?;
            let hint = e.file_type().ok().map(|t| {
                if t.is_symlink() {
                    Kind::Symlink
                } else if t.is_dir() {
                    Kind::Dir
                } else {
                    Kind::File
                }
            });
            out.push((e.file_name(), hint));
        }
        Ok(out)
    }
}

pub fn stat_at(at: At<'_>, rel: PathBuf) -> Result<Entry> {
    let p = at.path();
    std::fs::symlink_metadata(&p)
        .map(|md| Entry::from_metadata(rel, &md))
        .at(Op::Stat, &p)
}

/// No POSIX default ACLs here.
pub fn has_default_acl(_at: At<'_>) -> bool {
    false
}

/// Windows has no extended attributes in the POSIX sense.
pub fn has_xattrs(_at: At<'_>) -> Result<bool> {
    Ok(false)
}

pub fn creator() -> (u32, u32) {
    (0, 0)
}

pub fn current_umask() -> u32 {
    0
}

/// Nothing to raise: Windows has no per-process descriptor limit of that kind.
pub fn raise_fd_limit() {}

/// A NUL-terminated wide path for the Win32 `W` calls, in `\\?\` form when absolute, so paths
/// beyond 260 characters work (std does the same for its own calls).
fn wide(path: &Path) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    let s = path.as_os_str();
    let raw: Vec<u16> = s.encode_wide().collect();
    let is_drive_abs = raw.len() >= 3 && raw[1] == b':' as u16 && (raw[2] == b'\\' as u16);
    let verbatim = raw.starts_with(&[b'\\' as u16, b'\\' as u16, b'?' as u16, b'\\' as u16]);
    if is_drive_abs && !verbatim {
        out.extend(r"\\?\".encode_utf16());
    }
    out.extend(
        raw.iter()
            .map(|&c| if c == b'/' as u16 { b'\\' as u16 } else { c }),
    );
    out.push(0);
    out
}

pub fn open_source(at: At<'_>) -> Result<File> {
    open_source_path(&at.path())
}

fn open_source_path(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_SEQUENTIAL_SCAN | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
        .at(Op::Open, path)
}

fn create_temp(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .at(Op::Create, path)
}

struct Progress<'a> {
    req: &'a CopyRequest<'a>,
    last: u64,
}

/// Called by `CopyFileExW` between chunks: feeds Blit's progress, and cancels on Ctrl-C.
unsafe extern "system" fn on_progress(
    _total: i64,
    transferred: i64,
    _stream_size: i64,
    _stream_transferred: i64,
    _stream: u32,
    _reason: u32,
    _src: HANDLE,
    _dst: HANDLE,
    data: *const c_void,
) -> u32 {
    // SAFETY: `data` is the `Progress` passed to `CopyFileExW` below, alive for the whole call.
    let p = unsafe { &mut *(data as *mut Progress<'_>) };
    let now = transferred.max(0) as u64;
    if now > p.last {
        (p.req.out.progress)(now - p.last);
        p.last = now;
    }
    if p.req.out.cancel.is_cancelled() {
        PROGRESS_CANCEL
    } else {
        PROGRESS_CONTINUE
    }
}

fn stat(path: &Path) -> Result<Entry> {
    std::fs::symlink_metadata(path)
        .map(|md| Entry::from_metadata(PathBuf::new(), &md))
        .at(Op::Stat, path)
}

pub fn copy_to_temp(req: &CopyRequest<'_>) -> Result<CopyOutcome> {
    let (src, tmp) = (req.src.path(), req.out.tmp.path());
    let before = stat(&src)?;
    if before.kind != Kind::File {
        return Ok(CopyOutcome::Changed);
    }
    let mut progress = Progress { req, last: 0 };
    let (src_w, tmp_w) = (wide(&src), wide(&tmp));
    // SAFETY: both strings are NUL-terminated and outlive the call; `progress` outlives it too.
    let ok = unsafe {
        CopyFileExW(
            src_w.as_ptr(),
            tmp_w.as_ptr(),
            Some(on_progress),
            &mut progress as *mut Progress<'_> as *const c_void,
            std::ptr::null_mut(),
            COPY_FILE_FAIL_IF_EXISTS,
        )
    };
    let (bytes, method) = if ok != 0 {
        (before.size, Method::Native)
    } else {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(ERROR_REQUEST_ABORTED as i32) || req.out.cancel.is_cancelled()
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Cancelled);
        }
        // The OS call refused (a filesystem or filter that cannot do it): copy by hand.
        let _ = std::fs::remove_file(&tmp);
        let input = open_source_path(&src)?;
        let out = create_temp(&tmp)?;
        let n = copy_range_rw(&input, &out, 0, before.size, req.out.cancel).map_err(|e| {
            if req.out.cancel.is_cancelled() {
                Error::Cancelled
            } else {
                Error::io(Op::Copy, &tmp, e)
            }
        })?;
        (req.out.progress)(n);
        (n, Method::ReadWrite)
    };
    let after = stat(&src)?;
    if bytes != before.size || after.size != before.size || after.mtime != before.mtime {
        return Ok(CopyOutcome::Changed);
    }
    set_attributes(&tmp, FILE_ATTRIBUTE_NORMAL)?;
    set_mtime(&tmp, before.mtime, false)?;
    if req.out.fsync {
        OpenOptions::new()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.sync_all())
            .at(Op::Sync, &tmp)?;
    }
    set_attributes(&tmp, before.perm | FILE_ATTRIBUTE_ARCHIVE)?;
    Ok(CopyOutcome::Done {
        bytes,
        method,
        placed: false,
    })
}

fn system_time(m: MTime) -> SystemTime {
    if m.sec >= 0 {
        UNIX_EPOCH + Duration::new(m.sec as u64, m.nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(m.sec.unsigned_abs()) + Duration::from_nanos(m.nsec as u64)
    }
}

fn set_mtime(path: &Path, m: MTime, no_follow: bool) -> Result<()> {
    let mut flags = FILE_FLAG_BACKUP_SEMANTICS;
    if no_follow {
        flags |= FILE_FLAG_OPEN_REPARSE_POINT;
    }
    let f = OpenOptions::new()
        .access_mode(FILE_WRITE_ATTRIBUTES)
        .custom_flags(flags)
        .open(path)
        .at(Op::Utimes, path)?;
    f.set_times(std::fs::FileTimes::new().set_modified(system_time(m)))
        .at(Op::Utimes, path)
}

fn get_attributes(path: &Path) -> Result<u32> {
    let w = wide(path);
    // SAFETY: NUL-terminated wide string alive for the call.
    let a = unsafe { GetFileAttributesW(w.as_ptr()) };
    if a == INVALID_FILE_ATTRIBUTES {
        return Err(Error::io(Op::Stat, path, io::Error::last_os_error()));
    }
    Ok(a)
}

/// Replaces the kept attribute bits, leaving the others (directory, reparse point...) alone.
fn set_attributes(path: &Path, kept: u32) -> Result<()> {
    let current = get_attributes(path)?;
    let mut want = (current & !KEPT_ATTRIBUTES) | (kept & KEPT_ATTRIBUTES);
    if kept & FILE_ATTRIBUTE_ARCHIVE != 0 {
        want |= FILE_ATTRIBUTE_ARCHIVE;
    }
    if want == 0 {
        want = FILE_ATTRIBUTE_NORMAL;
    }
    if want == current {
        return Ok(());
    }
    let w = wide(path);
    // SAFETY: NUL-terminated wide string alive for the call.
    if unsafe { SetFileAttributesW(w.as_ptr(), want) } == 0 {
        return Err(Error::io(Op::Chmod, path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets times and attributes of an existing entry, never through a symlink.
pub fn apply_meta_at(
    dst: At<'_>,
    meta: &Entry,
    _opts: MetaOpts,
    _xattrs: Option<&super::Xattrs>,
) -> Result<()> {
    let dst = &dst.path();
    let is_link = meta.kind == Kind::Symlink;
    if !is_link {
        // Read-only entries refuse attribute writes' companion, the time change: lift it first.
        set_attributes(dst, 0)?;
    }
    set_mtime(dst, meta.mtime, true)?;
    if !is_link {
        set_attributes(dst, meta.perm)?;
    }
    Ok(())
}

/// Sets the modification time; the attributes are lifted around it, as in [`apply_meta_at`].
pub fn set_mtime_at(dst: At<'_>, meta: &Entry) -> Result<()> {
    let opts = MetaOpts {
        owner: false,
        xattrs: false,
        system_xattrs: true,
        fake_super: false,
    };
    apply_meta_at(dst, meta, opts, None)
}

/// `fstat` of an open file (`at` names it in messages).
pub fn stat_fd(f: &File, at: At<'_>) -> Result<Entry> {
    f.metadata()
        .map(|md| Entry::from_metadata(PathBuf::new(), &md))
        .at(Op::Stat, &at.path())
}

/// The status of a source file that has just been read. The Unix version first waits out a
/// truncate under way; no such window between size and times is known on Windows (none was
/// measured here), so this is a plain status read.
pub fn stat_settled(f: &File, at: At<'_>, _before: &Entry) -> Result<Entry> {
    stat_fd(f, at)
}

/// Reads at `off` (the file's own position moves too, which nothing here relies on).
pub fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    use std::os::windows::fs::FileExt;
    f.seek_read(buf, off)
}

/// Writes all of `buf` at `off`.
pub fn write_all_at(f: &File, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_write(buf, off) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The POSIX mode the wire carries for a Windows entry: the usual modes, without write
/// permission when the entry is read-only. Hidden and system have no POSIX meaning and stay here.
pub fn mode_for_wire(e: &Entry) -> u32 {
    let base = match e.kind {
        Kind::Dir => 0o755,
        Kind::Symlink => 0o777,
        _ => 0o644,
    };
    if e.perm & FILE_ATTRIBUTE_READONLY != 0 {
        base & !0o222
    } else {
        base
    }
}

/// The attributes for a mode from the wire: read-only when the owner may not write.
pub fn perm_from_wire(mode: u32, kind: Kind) -> u32 {
    if kind != Kind::Symlink && mode & 0o200 == 0 {
        FILE_ATTRIBUTE_READONLY
    } else {
        0
    }
}

/// Opens (or creates) the fixed temporary of a resumable transfer, keeping what it holds.
pub fn open_partial(at: At<'_>) -> Result<File> {
    let p = at.path();
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .at(Op::Create, &p)
}

/// Writes a file whose content arrives from a peer the way a local copy is written: into the
/// temporary `o.tmp` (content by `feed`, at offsets), then times and attributes; the caller
/// renames it into place.
pub fn receive_to_temp(
    o: &Output<'_>,
    meta: &Entry,
    _xattrs: Option<&super::Xattrs>,
    feed: &mut dyn FnMut(&File) -> Result<Fed>,
) -> Result<CopyOutcome> {
    let tmp = o.tmp.path();
    let out = if o.resume {
        open_partial(o.tmp)?
    } else {
        create_temp(&tmp)?
    };
    let n = match feed(&out)? {
        Fed::Done(n) => n,
        Fed::Changed => {
            drop(out);
            let _ = std::fs::remove_file(&tmp);
            return Ok(CopyOutcome::Changed);
        }
    };
    if o.resume || n != meta.size {
        out.set_len(meta.size).at(Op::Write, &tmp)?;
    }
    if o.fsync {
        out.sync_all().at(Op::Sync, &tmp)?;
    }
    drop(out);
    set_attributes(&tmp, FILE_ATTRIBUTE_NORMAL)?;
    set_mtime(&tmp, meta.mtime, false)?;
    set_attributes(&tmp, meta.perm | FILE_ATTRIBUTE_ARCHIVE)?;
    Ok(CopyOutcome::Done {
        bytes: n,
        method: Method::Network,
        placed: false,
    })
}

/// Windows has no extended attributes in the POSIX sense (alternate streams are not copied).
/// No xattrs on Windows.
pub fn path_xattrs(_path: &Path) -> super::Xattrs {
    Vec::new()
}

pub fn xattrs_of(_at: At<'_>) -> Result<super::Xattrs> {
    Ok(Vec::new())
}

pub fn read_link_at(at: At<'_>) -> Result<PathBuf> {
    let p = at.path();
    std::fs::read_link(&p).at(Op::Read, &p)
}

/// Whether a symlink is a folder link (Windows links are either file or folder links).
pub fn link_is_dir(at: At<'_>) -> bool {
    std::fs::symlink_metadata(at.path())
        .map(|m| m.file_type().is_symlink_dir())
        .unwrap_or(false)
}

/// Makes a file or a folder link, as `is_dir` says (the same kind as the source's).
pub fn symlink_at(target: &Path, at: At<'_>, is_dir: bool) -> Result<()> {
    let path = at.path();
    let r = if is_dir {
        std::os::windows::fs::symlink_dir(target, &path)
    } else {
        std::os::windows::fs::symlink_file(target, &path)
    };
    r.map_err(|e| {
        if e.raw_os_error() == Some(1314) {
            io::Error::new(
                e.kind(),
                "creating symlinks needs Developer Mode or the SeCreateSymbolicLink privilege",
            )
        } else {
            e
        }
    })
    .at(Op::Symlink, &path)
}

pub fn make_special_at(at: At<'_>, _meta: &Entry, _opts: MetaOpts) -> Result<()> {
    Err(Error::io(
        Op::Create,
        at.path(),
        io::Error::new(
            io::ErrorKind::Unsupported,
            "fifos and devices do not exist on Windows",
        ),
    ))
}

pub fn hard_link_at(existing: At<'_>, new: At<'_>) -> Result<()> {
    let new = new.path();
    std::fs::hard_link(existing.path(), &new).at(Op::Link, &new)
}

/// A read-only file can be neither replaced nor deleted on Windows: lift the flag and retry.
fn retry_read_only<T>(path: &Path, f: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match f() {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if let Ok(a) = get_attributes(path) {
                if a & FILE_ATTRIBUTE_READONLY != 0
                    && set_attributes(path, a & !FILE_ATTRIBUTE_READONLY).is_ok()
                {
                    return f();
                }
            }
            Err(e)
        }
        r => r,
    }
}

/// Off: Windows refuses to rename a folder while handles into it are open, which the engine
/// holds while it fills subfolders, so every new file gets its own temporary instead.
pub const FRESH_FOLDERS: bool = false;

/// Renames a filled folder into place; a folder standing there already makes it fail.
pub fn publish_dir(from: At<'_>, to: At<'_>) -> Result<()> {
    let to_path = to.path();
    if std::fs::symlink_metadata(&to_path).is_ok() {
        return Err(Error::io(
            Op::Rename,
            to_path,
            io::Error::from(io::ErrorKind::AlreadyExists),
        ));
    }
    std::fs::rename(from.path(), &to_path).at(Op::Rename, &to_path)
}

/// Folders are never filled under a temporary name here (see [`FRESH_FOLDERS`]).
pub fn hold_dir(_d: &Dir) -> bool {
    false
}

/// A leftover folder from another system is never in use by a run here.
pub fn dir_held(_d: &Dir) -> bool {
    false
}

pub fn rename_at(from: At<'_>, to: At<'_>) -> Result<()> {
    try_rename_at(from, to).at(Op::Rename, &to.path())
}

pub fn try_rename_at(from: At<'_>, to: At<'_>) -> io::Result<()> {
    let (from, to) = (from.path(), to.path());
    retry_read_only(&to, || std::fs::rename(&from, &to))
}

pub fn unlink_at(at: At<'_>) -> Result<()> {
    let path = at.path();
    let dir_link = std::fs::symlink_metadata(&path)
        .map(|m| m.file_type().is_symlink_dir())
        .unwrap_or(false);
    retry_read_only(&path, || {
        if dir_link {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        }
    })
    .at(Op::Delete, &path)
}

pub fn rmdir_at(at: At<'_>) -> Result<bool> {
    let path = at.path();
    match retry_read_only(&path, || std::fs::remove_dir(&path)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(Error::io(Op::Delete, path, e)),
    }
}

/// Windows folders have no permission bits to lift.
pub fn chmod_at(_at: At<'_>, _perm: u32) -> Result<()> {
    Ok(())
}

pub fn mkdir_at(at: At<'_>) -> Result<()> {
    let path = at.path();
    std::fs::create_dir(&path).at(Op::Mkdir, &path)
}

pub fn fsync_at(at: At<'_>) -> Result<()> {
    let path = at.path();
    match OpenOptions::new().write(true).open(&path) {
        Ok(f) => f.sync_all().at(Op::Sync, &path),
        // A read-only file cannot be opened for the flush; its data was flushed when written.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(Error::io(Op::Sync, path, e)),
    }
}

/// NTFS journals folder changes itself, and a folder cannot be opened for flushing.
pub fn fsync_dir(_dir: &Dir) -> Result<()> {
    Ok(())
}
