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

use super::{copy_data, At, CopyOutcome, CopyRequest, Fed, MetaOpts, Method, Output, Xattrs};
use crate::entry::{Entry, Kind, MTime};
use crate::error::{Error, IoContext, Op, Result};

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

/// An open folder, plus its path for messages.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

impl Dir {
    /// Opens a tree's root. The root is the one path the user named, so a symlink there is
    /// followed; nothing below it ever is.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS, Mode::empty()).at(Op::Open, path)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a tree's root without following a symlink at its last name (a daemon's push: the
    /// name was checked beneath the module, and may not be swapped for a link since).
    pub fn open_nofollow(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(path, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
            .at(Op::Open, path)?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens a subfolder; fails (rather than following) if `name` is now a symlink.
    pub fn open_child(&self, name: &OsStr) -> Result<Dir> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty())
            .at(Op::Open, &path)?;
        Ok(Dir { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder's device and inode: what identifies it whatever its name.
    pub fn id(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::fstat(&self.fd).at(Op::Stat, &self.path)?;
        #[allow(clippy::unnecessary_cast)]
        Ok((st.st_dev as u64, st.st_ino as u64))
    }

    /// The folder holding this one, opened as its `..` (the caller checks it is the one it
    /// expects: a folder moved elsewhere has another `..`).
    pub fn open_parent(&self) -> Result<Dir> {
        let path = self.path.parent().unwrap_or(&self.path).to_path_buf();
        let fd =
            rustix::fs::openat(&self.fd, "..", DIR_FLAGS, Mode::empty()).at(Op::Open, &path)?;
        Ok(Dir { fd, path })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The names in this folder (without `.` and `..`), with their type when the filesystem
    /// reports it, so folders can be told without a stat.
    pub fn read_names(&self) -> Result<Vec<(OsString, Option<Kind>)>> {
        let mut out = Vec::new();
        read_names_into(self, &mut out).at(Op::ReadDir, &self.path)?;
        Ok(out)
    }
}

/// Adds one directory entry to the listing, skipping `.` and `..`.
fn push_name(out: &mut Vec<(OsString, Option<Kind>)>, name: &[u8], t: FileType) {
    if name != b"." && name != b".." {
        out.push((OsString::from_vec(name.to_vec()), kind_of_type(t)));
    }
}

/// Reads through a descriptor of its own (`.` opened relative to the folder's), as
/// `rustix::fs::Dir` does elsewhere: a handle shared from a cache may have been read to its end
/// already, and would list nothing, which a mirror would take for an empty folder. Closing it
/// at once also frees the kernel's per-reader state (ext4 keeps a sorted copy of a hashed
/// folder's names) in the worker that listed the folder, not all at the end of the run.
#[cfg(target_os = "linux")]
fn read_names_into(dir: &Dir, out: &mut Vec<(OsString, Option<Kind>)>) -> io::Result<()> {
    use rustix::fs::RawDir;
    let own = rustix::fs::openat(
        &dir.fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf: Vec<u8> = Vec::with_capacity(32 * 1024);
    let mut iter = RawDir::new(&own, buf.spare_capacity_mut());
    while let Some(entry) = iter.next() {
        let entry = entry?;
        push_name(out, entry.file_name().to_bytes(), entry.file_type());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn read_names_into(dir: &Dir, out: &mut Vec<(OsString, Option<Kind>)>) -> io::Result<()> {
    let mut d = rustix::fs::Dir::read_from(&dir.fd)?;
    while let Some(entry) = d.read() {
        let entry = entry?;
        push_name(out, entry.file_name().to_bytes(), entry.file_type());
    }
    Ok(())
}

fn kind_of_type(t: FileType) -> Option<Kind> {
    Some(match t {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::CharacterDevice => Kind::CharDevice,
        FileType::BlockDevice => Kind::BlockDevice,
        FileType::Socket => Kind::Socket,
        _ => return None,
    })
}

// `stat`'s field types differ between platforms and architectures; the casts are no-ops on some.
#[allow(clippy::unnecessary_cast)]
fn entry_from_stat(rel: PathBuf, st: &rustix::fs::Stat) -> Entry {
    let kind = kind_of_type(FileType::from_raw_mode(st.st_mode as _)).unwrap_or(Kind::File);
    Entry {
        rel,
        kind,
        size: st.st_size as u64,
        mtime: MTime {
            sec: st.st_mtime as i64,
            nsec: st.st_mtime_nsec as u32,
        },
        perm: (st.st_mode as u32) & 0o7777,
        uid: st.st_uid as u32,
        gid: st.st_gid as u32,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        nlink: st.st_nlink as u64,
        blocks: st.st_blocks as u64,
        rdev: st.st_rdev as u64,
        xattrs: false,
        extra: None,
    }
}

/// `lstat` of an entry, relative to its folder.
pub fn stat_at(at: At<'_>, rel: PathBuf) -> Result<Entry> {
    let st = rustix::fs::statat(&at.dir.fd, at.name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| Error::io(Op::Stat, at.path(), e.into()))?;
    Ok(entry_from_stat(rel, &st))
}

/// `fstat` of an open file (`at` names it in messages).
pub fn stat_fd(f: &File, at: At<'_>) -> Result<Entry> {
    fstat(f, at)
}

/// The status of a source file that has just been read (`before`: its status when opened), once
/// any truncate under way on it has completed (for files from `AWAIT_TRUNCATE_MIN` up): the
/// status the check after a copy compares.
pub fn stat_settled(f: &File, at: At<'_>, before: &Entry) -> Result<Entry> {
    fstat_settled(f, at, large(before)).map(|st| entry_from_stat(PathBuf::new(), &st))
}

/// Large enough to wait for a truncate under way: by size, or by the blocks still allocated
/// (a truncate's torn status shows the new, smaller size while the old blocks are not yet freed).
fn large(e: &Entry) -> bool {
    e.size.max(e.blocks.saturating_mul(512)) >= AWAIT_TRUNCATE_MIN
}

/// Files from this size up (or holding this many bytes of blocks) wait out a truncate under way
/// before the check after their copy.
///
/// The wait costs two system calls, 4% of the time of copying 4 KiB files into tmpfs (20,000
/// files: 0.283 s against 0.271 s, medians of 11). Smaller files are checked without it unless
/// their copy is a retry. What a small file risks without it is narrow: a status torn by one
/// truncate both when the walk read it and after the copy, which gives the right content (the
/// truncated version) under the old mtime; the next run sees the mtime differ and copies it
/// again.
const AWAIT_TRUNCATE_MIN: u64 = 1 << 20;

fn fstat_settled(f: &File, at: At<'_>, wait: bool) -> Result<rustix::fs::Stat> {
    #[cfg(target_os = "linux")]
    if wait {
        super::linux::await_truncate(f);
    }
    let _ = wait;
    rustix::fs::fstat(f).map_err(|e| Error::io(Op::Stat, at.path(), e.into()))
}

fn fstat(f: &File, at: At<'_>) -> Result<Entry> {
    let st = rustix::fs::fstat(f).map_err(|e| Error::io(Op::Stat, at.path(), e.into()))?;
    Ok(entry_from_stat(PathBuf::new(), &st))
}

/// Opens a source file for reading; `NOFOLLOW` so a symlink swapped in since the walk is refused,
/// and `NONBLOCK` so a fifo swapped in (or named by a peer) cannot hang the open waiting for a
/// writer; it has no effect on regular files, and callers check the kind they opened.
pub fn open_source(at: At<'_>) -> Result<File> {
    #[allow(unused_mut)]
    let mut flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    #[cfg(target_os = "linux")]
    if is_root() {
        // Reading for a copy is not a use of the file; keep atime as it was.
        flags |= OFlags::NOATIME;
    }
    let opened = match rustix::fs::openat(&at.dir.fd, at.name, flags, Mode::empty()) {
        // A regular file under another's write lease (Samba's oplocks, an NFS delegation):
        // non-blocking, the open would fail instead of waiting for the lease to be given back.
        // (A fifo opened to read never answers this.)
        Err(rustix::io::Errno::AGAIN) => {
            rustix::fs::openat(&at.dir.fd, at.name, flags - OFlags::NONBLOCK, Mode::empty())
        }
        other => other,
    };
    opened
        .map(File::from)
        .map_err(|e| Error::io(Op::Open, at.path(), e.into()))
}

/// Creates the temporary that will become a file; `EXCL` + `NOFOLLOW` so it can never land on
/// something that already exists, a planted symlink included.
fn create_temp(at: At<'_>, mode: u32) -> Result<File> {
    rustix::fs::openat(
        &at.dir.fd,
        at.name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode as _),
    )
    .map(File::from)
    .map_err(|e| Error::io(Op::Create, at.path(), e.into()))
}

fn timestamps(mtime: MTime) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: Timespec {
            tv_sec: mtime.sec as _,
            tv_nsec: mtime.nsec as _,
        },
    }
}

/// Copies `req.src` into a new temporary `req.out.tmp`, with its metadata, through descriptors: the
/// source is `fstat`ed before and after, and a source that changed meanwhile gives
/// [`CopyOutcome::Changed`] so the caller can discard the temporary and try again.
pub fn copy_to_temp(req: &CopyRequest<'_>) -> Result<CopyOutcome> {
    if let Some(e) = req.expected {
        if e.kind == Kind::File && e.size == 0 && !req.src_xattrs {
            return make_empty(req, e);
        }
    }
    let mut input = open_source(req.src)?;
    // The walk's `lstat` serves as the "before" snapshot when given: the check after the copy
    // (same inode, size and mtime) catches any change since the walk as surely as a fresh
    // `fstat` would, one syscall cheaper.
    let before = match req.expected {
        Some(e) if e.kind == Kind::File => Cow::Borrowed(e),
        // A retry: the file was changing moments ago, so its status is read settled too.
        _ => Cow::Owned(entry_from_stat(
            PathBuf::new(),
            &fstat_settled(&input, req.src, true)?,
        )),
    };
    if before.kind != Kind::File {
        return Ok(CopyOutcome::Changed);
    }
    #[cfg(target_vendor = "apple")]
    if super::macos::try_clone(&input, req.out.tmp, req.out.fast)
        .at(Op::Copy, &req.out.tmp.path())?
    {
        // The clone carries the data; owner, mode, times and xattrs are set below as usual.
        let out = rustix::fs::openat(
            &req.out.tmp.dir.fd,
            req.out.tmp.name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| Error::io(Op::Open, req.out.tmp.path(), e.into()))?;
        return finish_copy(
            req,
            &input,
            (out, Made::Temp),
            &before,
            before.size,
            Method::Clone,
            false,
        );
    }
    // Created with its final mode when the kernel will keep it exactly (no special bits, none
    // masked by the umask, and writable for the xattrs still to come): one `fchmod` less per file.
    let final_mode = before.perm & 0o7000 == 0
        && before.perm & req.out.umask == 0
        && !req.out.under_acl
        && (!req.src_xattrs || before.perm & 0o200 != 0 || req.out.meta.owner);
    let mode = if final_mode { before.perm } else { 0o600 };
    let (mut out, made) = create_output(&req.out, mode)?;
    let (n, method) = match copy_data(
        &mut input,
        &mut out,
        before.size,
        before.is_sparse(),
        req.out.fast,
        req.out.cancel,
    ) {
        Ok(r) => r,
        Err(_) if req.out.cancel.is_cancelled() => return Err(Error::Cancelled),
        Err(e) => return Err(Error::io(Op::Copy, req.out.tmp.path(), e)),
    };
    finish_copy(req, &input, (out, made), &before, n, method, final_mode)
}

/// An empty file has no content to read: it is made from the walk's `lstat` alone, without
/// opening the source (a source that grew since has another size, which the next run sees).
fn make_empty(req: &CopyRequest<'_>, e: &Entry) -> Result<CopyOutcome> {
    let final_mode = e.perm & 0o7000 == 0 && e.perm & req.out.umask == 0 && !req.out.under_acl;
    let mode = if final_mode { e.perm } else { 0o600 };
    if let Some(placed) = make_empty_in_place(req, e, mode, final_mode)? {
        return Ok(placed);
    }
    let (out, made) = create_output(&req.out, mode)?;
    apply_file_meta(&out, &req.out, XattrFrom::None, e, final_mode)?;
    if req.out.fsync {
        out.sync_all().at(Op::Sync, &req.out.tmp.path())?;
    }
    Ok(CopyOutcome::Done {
        bytes: 0,
        method: Method::Empty,
        placed: publish(&out, made, &req.out)?,
    })
}

/// A new empty file is created under its final name at once: it has no content that could be
/// seen half-written, and this saves the unnamed file's orphan bookkeeping and the `linkat`
/// (about a sixth of the cost of each file in a tree of empty files, measured on ext4). Its
/// metadata follows on the open descriptor; if that fails, the file is removed again, so the
/// destination is left as it was. `None` when the name is taken meanwhile (or when the copy is
/// not of a new file): the usual path then takes over.
fn make_empty_in_place(
    req: &CopyRequest<'_>,
    e: &Entry,
    mode: u32,
    final_mode: bool,
) -> Result<Option<CopyOutcome>> {
    let Some(name) = req.out.final_name else {
        return Ok(None);
    };
    let o = &req.out;
    let at = At::new(o.tmp.dir, name);
    let out = match rustix::fs::openat(
        &o.tmp.dir.fd,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode as _),
    ) {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::EXIST) => return Ok(None),
        Err(e) => return Err(Error::io(Op::Create, at.path(), e.into())),
    };
    let done = apply_file_meta(&out, o, XattrFrom::None, e, final_mode).and_then(|()| {
        if o.fsync {
            out.sync_all().at(Op::Sync, &at.path())?;
        }
        Ok(())
    });
    if let Err(err) = done {
        let _ = rustix::fs::unlinkat(&o.tmp.dir.fd, name, AtFlags::empty());
        return Err(err);
    }
    Ok(Some(CopyOutcome::Done {
        bytes: 0,
        method: Method::Empty,
        placed: true,
    }))
}

/// How the file a copy writes into was made, which decides how it gets its final name.
enum Made<'a> {
    /// Unnamed (`O_TMPFILE`): linked in when complete.
    #[cfg(target_os = "linux")]
    Unnamed,
    /// At the named temporary, which the caller renames (or removes).
    Temp,
    /// Under its final name inside a folder not yet named (`Output::direct`): already in
    /// place once complete, and removed again if the copy fails.
    Direct(RemoveOnDrop<'a>),
}

/// A file created under its final name is removed again unless the copy completes, so a failed
/// or changed copy leaves nothing behind and a retry can create the name anew.
struct RemoveOnDrop<'a>(Option<At<'a>>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(at) = self.0 {
            let _ = rustix::fs::unlinkat(&at.dir.fd, at.name, AtFlags::empty());
        }
    }
}

/// Opens what the copy writes into: in a folder not yet named, the file under its final name;
/// for another new file on Linux, an unnamed inode (`O_TMPFILE`) that gets its final name only
/// when complete (so no temporary ever shows, even after a crash, and one directory update is
/// saved); otherwise a named temporary.
fn create_output<'a>(o: &Output<'a>, mode: u32) -> Result<(File, Made<'a>)> {
    if let Some(name) = o.final_name.filter(|_| o.direct) {
        let at = At::new(o.tmp.dir, name);
        match rustix::fs::openat(
            &o.tmp.dir.fd,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        ) {
            Ok(fd) => return Ok((File::from(fd), Made::Direct(RemoveOnDrop(Some(at))))),
            // Taken meanwhile: not ours to remove; the usual way puts the copy over it.
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io(Op::Create, at.path(), e.into())),
        }
    }
    #[cfg(target_os = "linux")]
    if o.final_name.is_some() && !o.fast.no_tmpfile.load(std::sync::atomic::Ordering::Relaxed) {
        use rustix::io::Errno;
        match rustix::fs::openat(
            &o.tmp.dir.fd,
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        ) {
            Ok(fd) => return Ok((File::from(fd), Made::Unnamed)),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => o
                .fast
                .no_tmpfile
                .store(true, std::sync::atomic::Ordering::Relaxed),
            Err(e) => return Err(Error::io(Op::Create, o.tmp.dir.path(), e.into())),
        }
    }
    Ok((create_temp(o.tmp, mode)?, Made::Temp))
}

/// Names a finished file. `Ok(true)`: it now stands under its final name. `Ok(false)`: it is at
/// the temporary, for the caller to rename over the final name as usual (an unnamed file is
/// named so when something appeared at its final name meanwhile).
fn publish(out: &File, made: Made<'_>, o: &Output<'_>) -> Result<bool> {
    // Only the unnamed kind (Linux) needs the file and the names.
    let _ = (out, o);
    match made {
        Made::Temp => Ok(false),
        Made::Direct(mut remove) => {
            remove.0 = None;
            Ok(true)
        }
        #[cfg(target_os = "linux")]
        Made::Unnamed => {
            let Some(name) = o.final_name else {
                return Ok(false);
            };
            match link_fd(out, o.tmp.dir, name) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::EXIST) => {
                    link_fd(out, o.tmp.dir, o.tmp.name)
                        .map_err(|e| Error::io(Op::Link, o.tmp.path(), e.into()))?;
                    Ok(false)
                }
                Err(e) => Err(Error::io(Op::Link, o.tmp.dir.path().join(name), e.into())),
            }
        }
    }
}

/// Links an open (unnamed) file into `dir` as `name`.
#[cfg(target_os = "linux")]
fn link_fd(f: &File, dir: &Dir, name: &OsStr) -> rustix::io::Result<()> {
    if is_root() {
        rustix::fs::linkat(f, "", &dir.fd, name, AtFlags::EMPTY_PATH)
    } else {
        // Without CAP_DAC_READ_SEARCH, the /proc link of the descriptor is the way in.
        use std::os::fd::AsRawFd;
        let proc = format!("/proc/self/fd/{}", f.as_raw_fd());
        rustix::fs::linkat(
            rustix::fs::CWD,
            proc.as_str(),
            &dir.fd,
            name,
            AtFlags::SYMLINK_FOLLOW,
        )
    }
}

/// Checks that the source did not change during the copy, then restores metadata and flushes.
fn finish_copy(
    req: &CopyRequest<'_>,
    input: &File,
    (out, made): (File, Made<'_>),
    before: &Entry,
    n: u64,
    method: Method,
    mode_set: bool,
) -> Result<CopyOutcome> {
    // A retry (given no status from the walk) means the file was changing moments ago.
    let wait = large(before) || req.expected.is_none();
    let st = fstat_settled(input, req.src, wait)?;
    let changed = |after: &Entry| n != before.size || after.version() != before.version();
    if changed(&entry_from_stat(PathBuf::new(), &st)) {
        return Ok(CopyOutcome::Changed);
    }
    // A change still in progress can show its new size with the old times. On Linux
    // `fstat_settled` waits out the one case known on local filesystems (a truncate) for large
    // files. For every other case (small files, macOS, network and FUSE filesystems, changes
    // not yet known), a file changed during this run and in the last moments is looked at once
    // more, after a pause long enough for such a change to finish. Files that were quiet when
    // the run began never wait.
    if changed_since(&st, req.out.fast.started) {
        std::thread::sleep(SETTLE);
        if changed(&fstat(input, req.src)?) {
            return Ok(CopyOutcome::Changed);
        }
    }
    let xattrs = if req.src_xattrs {
        XattrFrom::File(input, req.src)
    } else {
        XattrFrom::None
    };
    apply_file_meta(&out, &req.out, xattrs, before, mode_set)?;
    if req.out.fsync {
        out.sync_all().at(Op::Sync, &req.out.tmp.path())?;
    }
    (req.out.progress)(n);
    Ok(CopyOutcome::Done {
        bytes: n,
        method,
        placed: publish(&out, made, &req.out)?,
    })
}

/// How long a change in progress is given to finish (see [`finish_copy`]).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The file's status changed after `started` and within the last second (or its ctime is ahead
/// of our clock).
fn changed_since(st: &rustix::fs::Stat, started: std::time::SystemTime) -> bool {
    if st.st_ctime < 0 {
        return false;
    }
    let epoch =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ctime = std::time::Duration::new(st.st_ctime as u64, st.st_ctime_nsec as u32);
    // Nearly every file was quiet before the run: decided without reading the clock.
    ctime >= epoch(started)
        && epoch(std::time::SystemTime::now()).saturating_sub(ctime)
            < std::time::Duration::from_secs(1)
}

/// Where POSIX ACLs keep a file's access ACL.
const ACCESS_ACL: &str = "system.posix_acl_access";

/// Restores metadata on a freshly written file through its descriptor.
fn apply_file_meta(
    dst: &File,
    o: &Output<'_>,
    xattrs: XattrFrom<'_>,
    meta: &Entry,
    mode_set: bool,
) -> Result<()> {
    let (dst_at, opts) = (o.tmp, o.meta);
    if opts.fake_super {
        // What is stored in its place: no chown, modes without special bits (always set), the
        // privileged rest in attributes.
        let values = match xattrs {
            XattrFrom::None => Xattrs::new(),
            XattrFrom::Values(v) => v.clone(),
            XattrFrom::File(_, src_at) => xattrs_of(src_at)?,
        };
        let (stored, values) = crate::fakesuper::store(meta, Some(&values));
        let o = Output {
            meta: MetaOpts {
                fake_super: false,
                owner: false,
                xattrs: true,
                ..o.meta
            },
            ..*o
        };
        return apply_file_meta(dst, &o, XattrFrom::Values(&values), &stored, false);
    }
    if opts.owner && o.needs_chown(meta) {
        rustix::fs::fchown(
            dst,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| Error::io(Op::Chown, dst_at.path(), e.into()))?;
    }
    // The walk saw no xattrs on this source: skip the listing (one syscall per file).
    let mut acl_kept = false;
    match xattrs {
        _ if !opts.xattrs => {}
        XattrFrom::None => {}
        XattrFrom::File(src, src_at) => {
            let names = src.list_xattr().at(Op::Xattr, &src_at.path())?;
            for name in names {
                if let Some(value) = src.get_xattr(&name).at(Op::Xattr, &src_at.path())? {
                    acl_kept |= name == ACCESS_ACL;
                    dst.set_xattr(&name, &value).at(Op::Xattr, &dst_at.path())?;
                }
            }
        }
        XattrFrom::Values(values) => {
            for (name, value) in values {
                acl_kept |= name == ACCESS_ACL;
                dst.set_xattr(name, value).at(Op::Xattr, &dst_at.path())?;
            }
        }
    }
    if o.under_acl && opts.xattrs && !acl_kept {
        match dst.remove_xattr(ACCESS_ACL) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(Error::io(Op::Xattr, dst_at.path(), e)),
        }
    }
    if !mode_set {
        rustix::fs::fchmod(dst, Mode::from_raw_mode(meta.perm as _))
            .map_err(|e| Error::io(Op::Chmod, dst_at.path(), e.into()))?;
    }
    rustix::fs::futimens(dst, &timestamps(meta.mtime))
        .map_err(|e| Error::io(Op::Utimes, dst_at.path(), e.into()))?;
    Ok(())
}

/// Opens (or creates) the fixed temporary of a resumable transfer, keeping what it holds.
///
/// Its name is fixed, so anything may stand there: a file a peer planted under it, a hard link
/// to another file, a symlink, a fifo or a device. What stands there is written into only if
/// it is a plain file of this user's with no other name; anything else is removed (never
/// opened for writing: a device's open alone can act) and the transfer starts afresh.
pub fn open_partial(at: At<'_>) -> Result<File> {
    let fail = |e: rustix::io::Errno| Error::io(Op::Create, at.path(), e.into());
    match open_own_file(at) {
        Ok(Some(f)) => return Ok(f),
        Ok(None) => match rustix::fs::unlinkat(&at.dir.fd, at.name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            // A folder under the name: left alone, and this transfer cannot be resumed.
            Err(e) => return Err(fail(e)),
        },
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(fail(e)),
    }
    rustix::fs::openat(
        &at.dir.fd,
        at.name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map(File::from)
    .map_err(fail)
}

/// The existing plain file at `at`, opened for reading and writing, if it is one of this user's
/// with no other name; `None` if something else stands there.
fn open_own_file(at: At<'_>) -> rustix::io::Result<Option<File>> {
    let own = |st: &rustix::fs::Stat| {
        FileType::from_raw_mode(st.st_mode as _) == FileType::RegularFile
            && st.st_nlink == 1
            && st.st_uid == rustix::process::geteuid().as_raw()
    };
    // Linux: pinned first without opening it (`O_PATH` opens nothing, a device included),
    // looked at, and only then opened for writing through the pin, which reaches the same inode
    // whatever happened to the name meanwhile.
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let pin = rustix::fs::openat(
            &at.dir.fd,
            at.name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let pin = match pin {
            Ok(p) => p,
            // A symlink under the name (`O_PATH | O_NOFOLLOW` opens the link itself; some
            // kernels refuse instead).
            Err(rustix::io::Errno::LOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !own(&rustix::fs::fstat(&pin)?) {
            return Ok(None);
        }
        let again = format!("/proc/self/fd/{}", pin.as_raw_fd());
        let f = rustix::fs::open(
            again.as_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Some(File::from(f)))
    }
    // Elsewhere: opened without blocking and without a controlling terminal, then looked at.
    #[cfg(not(target_os = "linux"))]
    {
        let f = match rustix::fs::openat(
            &at.dir.fd,
            at.name,
            OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(f) => f,
            Err(rustix::io::Errno::LOOP) | Err(rustix::io::Errno::ISDIR) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !own(&rustix::fs::fstat(&f)?) {
            return Ok(None);
        }
        let flags = rustix::fs::fcntl_getfl(&f)? - OFlags::NONBLOCK;
        rustix::fs::fcntl_setfl(&f, flags)?;
        Ok(Some(File::from(f)))
    }
}

/// Where a new file's extended attributes come from.
enum XattrFrom<'a> {
    None,
    /// The open local source (named for messages).
    File(&'a File, At<'a>),
    /// Values a peer sent.
    Values(&'a Xattrs),
}

/// Writes a file whose content arrives from elsewhere (a peer over the network) the way a local
/// copy is written: into an unnamed or temporary file, content first (by `feed`, which may leave
/// holes by writing at offsets), then owner, xattrs, mode and times, then named.
pub fn receive_to_temp(
    o: &Output<'_>,
    meta: &Entry,
    xattrs: Option<&Xattrs>,
    feed: &mut dyn FnMut(&File) -> Result<Fed>,
) -> Result<CopyOutcome> {
    // As for a local copy: created with its final mode when the kernel keeps it exactly.
    let final_mode = !o.resume
        && !o.meta.fake_super
        && meta.perm & 0o7000 == 0
        && meta.perm & o.umask == 0
        && !o.under_acl
        && (xattrs.is_none() || meta.perm & 0o200 != 0 || o.meta.owner);
    let (out, made) = if o.resume {
        (open_partial(o.tmp)?, Made::Temp)
    } else {
        create_output(o, if final_mode { meta.perm } else { 0o600 })?
    };
    let n = match feed(&out)? {
        Fed::Done(n) => n,
        Fed::Changed => {
            drop(out);
            if matches!(made, Made::Temp) {
                let _ = unlink_at(o.tmp);
            }
            return Ok(CopyOutcome::Changed);
        }
    };
    // A fresh file written whole already has its length; holes at the end (sparse) or a longer
    // partial (resume) need it set.
    if o.resume || n != meta.size {
        out.set_len(meta.size).at(Op::Write, &o.tmp.path())?;
    }
    let from = xattrs.map_or(XattrFrom::None, XattrFrom::Values);
    apply_file_meta(&out, o, from, meta, final_mode)?;
    if o.fsync {
        out.sync_all().at(Op::Sync, &o.tmp.path())?;
    }
    Ok(CopyOutcome::Done {
        bytes: n,
        method: Method::Network,
        placed: publish(&out, made, o)?,
    })
}

/// Brings the metadata of an existing entry `dst` in line with `meta` (read from `src`), never
/// following a symlink at `dst`. Used for folders, links, specials and metadata-only updates.
pub fn apply_meta_at(
    dst: At<'_>,
    meta: &Entry,
    opts: MetaOpts,
    xattrs: Option<&Xattrs>,
) -> Result<()> {
    if opts.fake_super {
        return apply_stored_meta_at(dst, meta, opts, xattrs);
    }
    let fd = &dst.dir.fd;
    if opts.owner {
        rustix::fs::chownat(
            fd,
            dst.name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io(Op::Chown, dst.path(), e.into()))?;
    }
    if let Some(want) = xattrs.filter(|_| opts.xattrs) {
        sync_xattrs(want, dst, opts.system_xattrs)?;
    }
    if meta.kind != Kind::Symlink {
        chmod_at(dst, meta.perm)?;
    }
    set_mtime_at(dst, meta)
}

/// [`apply_meta_at`] under fake super: what is stored in the entry's place gets the stored mode,
/// and its attributes (all of them, or, when the caller brings none, `user.blit.stat` alone)
/// say the rest. A symlink can hold no `user.` attribute: only its time is set.
fn apply_stored_meta_at(
    dst: At<'_>,
    meta: &Entry,
    opts: MetaOpts,
    xattrs: Option<&Xattrs>,
) -> Result<()> {
    let (stored, values) = crate::fakesuper::store(meta, xattrs);
    if stored.kind != Kind::Symlink {
        // Writable by its owner first: `user.` attributes need write access.
        chmod_at(dst, stored.perm)?;
        match xattrs {
            Some(_) => sync_xattrs(&values, dst, false)?,
            None => xattr::set(
                xattr_path(dst),
                crate::fakesuper::STAT,
                &crate::fakesuper::stat_value(meta),
            )
            .at(Op::Xattr, &dst.path())?,
        }
    }
    let _ = opts;
    set_mtime_at(dst, meta)
}

/// Reads at `off` without moving a shared position (one file is read by several requests).
pub fn read_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    f.read_at(buf, off)
}

/// Writes all of `buf` at `off`.
pub fn write_all_at(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(buf, off)
}

/// The mode bits the wire carries for an entry: POSIX modes, as they are here.
pub fn mode_for_wire(e: &Entry) -> u32 {
    e.perm
}

/// The local permission bits for a mode from the wire.
pub fn perm_from_wire(mode: u32, _kind: Kind) -> u32 {
    mode & 0o7777
}

/// Sets only the modification time (the entry's other metadata is known to be right).
pub fn set_mtime_at(dst: At<'_>, meta: &Entry) -> Result<()> {
    rustix::fs::utimensat(
        &dst.dir.fd,
        dst.name,
        &timestamps(meta.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::io(Op::Utimes, dst.path(), e.into()))
}

/// A path that reaches `at` through its folder's descriptor (`/proc/self/fd/N/name` on Linux), for
/// the few calls that have no `*at` form (the `l*xattr` family). Elsewhere, the full path.
fn xattr_path(at: At<'_>) -> PathBuf {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", at.dir.fd().as_raw_fd()));
        p.push(at.name);
        p
    }
    #[cfg(not(target_os = "linux"))]
    {
        at.path()
    }
}

/// The path for read-only xattr queries: the full path resolves faster than the `/proc` form,
/// and reading cannot be redirected into harm; only near `PATH_MAX` is the `/proc` form needed.
fn read_path(at: At<'_>) -> PathBuf {
    if at.name == "." {
        // A pinned root, reached through its own handle: its path is not looked up again.
        return xattr_path(at);
    }
    let full = at.path();
    if full.as_os_str().len() < 3800 {
        full
    } else {
        xattr_path(at)
    }
}

/// Whether the entry carries any extended attribute: one size query, made during the walk so the
/// planner compares attributes only where some exist.
pub fn has_xattrs(at: At<'_>) -> Result<bool> {
    #[cfg(target_os = "linux")]
    let n = match listxattr_size_at(at) {
        Some(r) => r,
        None => rustix::fs::llistxattr_query(read_path(at)).map_err(io::Error::from),
    };
    #[cfg(not(target_os = "linux"))]
    let n = xattr::list(read_path(at)).map(|l| l.count());
    match n {
        Ok(n) => Ok(n > 0),
        Err(e)
            if e.kind() == io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(libc::ENOTSUP) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::io(Op::Xattr, at.path(), e)),
    }
}

/// Whether a folder has a default ACL, which then replaces the umask for what is created in it.
/// Only Linux's POSIX ACLs work that way; failures read as "no".
pub fn has_default_acl(at: At<'_>) -> bool {
    #[cfg(target_os = "linux")]
    {
        let mut buf = [0u8; 256];
        match rustix::fs::lgetxattr(xattr_path(at), "system.posix_acl_default", &mut buf[..]) {
            Ok(n) => n > 0,
            // Longer than the buffer: there is one.
            Err(e) => e == rustix::io::Errno::RANGE,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = at;
        false
    }
}

/// `listxattrat(2)` (Linux 6.13): the size of an entry's xattr list, looked up relative to its
/// folder, which costs one name lookup instead of a whole path's. `None` where the kernel lacks
/// it (remembered, so the probe happens once).
#[cfg(target_os = "linux")]
fn listxattr_size_at(at: At<'_>) -> Option<io::Result<usize>> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        const SYS_LISTXATTRAT: libc::c_long = 465;
        static MISSING: AtomicBool = AtomicBool::new(false);
        if MISSING.load(Ordering::Relaxed) {
            return None;
        }
        use rustix::path::Arg;
        // The name made C-terminated on the stack (rustix's small-path buffer): this runs for
        // every entry of both trees.
        let called = at.name.into_with_c_str(|name| {
            // SAFETY: a valid folder descriptor and NUL-terminated name; a null buffer of size
            // 0 asks only for the size.
            Ok(unsafe {
                libc::syscall(
                    SYS_LISTXATTRAT,
                    at.dir.fd().as_raw_fd(),
                    name.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                    std::ptr::null_mut::<libc::c_char>(),
                    0usize,
                )
            })
        });
        let r = match called {
            Ok(r) => r,
            Err(e) => return Some(Err(e.into())),
        };
        if r >= 0 {
            return Some(Ok(r as usize));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            MISSING.store(true, Ordering::Relaxed);
            return None;
        }
        Some(Err(e))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = at;
        None
    }
}

/// An entry's extended attributes, sorted by name.
pub fn xattrs_of(at: At<'_>) -> Result<Xattrs> {
    let p = read_path(at);
    let mut out = Vec::new();
    for name in xattr::list(&p).at(Op::Xattr, &at.path())? {
        if let Some(v) = xattr::get(&p, &name).at(Op::Xattr, &at.path())? {
            out.push((name, v));
        }
    }
    out.sort();
    Ok(out)
}

/// Makes `dst`'s extended attributes `want`. Without `system_xattrs`, privileged ones it has
/// are left alone (see `crate::trust`).
fn sync_xattrs(want: &Xattrs, dst: At<'_>, system_xattrs: bool) -> Result<()> {
    // The usual case, nothing wanted and nothing there, costs one size query relative to the
    // folder instead of a listing through the whole path (a deep tree's folders paid ~15 µs).
    if want.is_empty() && !has_xattrs(dst)? {
        return Ok(());
    }
    let have = xattrs_of(dst)?;
    let p = xattr_path(dst);
    for (name, _) in &have {
        let managed = system_xattrs || !crate::trust::privileged_xattr(name);
        if managed && !want.iter().any(|(n, _)| n == name) {
            xattr::remove(&p, name).at(Op::Xattr, &dst.path())?;
        }
    }
    for (name, value) in want {
        if !have.iter().any(|(n, v)| n == name && v == value) {
            xattr::set(&p, name, value).at(Op::Xattr, &dst.path())?;
        }
    }
    Ok(())
}

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
fn mknod(at: At<'_>, ft: FileType, meta: &Entry) -> Result<()> {
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
fn mknod(at: At<'_>, ft: FileType, meta: &Entry) -> Result<()> {
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

/// Sets permission bits only (no other metadata), never through a symlink: an entry swapped
/// for a link during the run (by another user, or another session of a daemon running as root)
/// must not hand the source's mode to whatever the link points at. A link found there fails.
pub fn chmod_at(at: At<'_>, perm: u32) -> Result<()> {
    chmod_nofollow(at, perm).map_err(|e| Error::io(Op::Chmod, at.path(), e))
}

#[cfg(target_os = "linux")]
fn chmod_nofollow(at: At<'_>, perm: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    // `fchmodat2` (Linux 6.6) takes `AT_SYMLINK_NOFOLLOW`; plain `fchmodat` ignores it.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        const SYS_FCHMODAT2: libc::c_long = 452;
        static MISSING: AtomicBool = AtomicBool::new(false);
        if !MISSING.load(Ordering::Relaxed) {
            let name = std::ffi::CString::new(at.name.as_bytes()).map_err(io::Error::other)?;
            // SAFETY: a valid folder descriptor and a NUL-terminated name.
            let r = unsafe {
                libc::syscall(
                    SYS_FCHMODAT2,
                    at.dir.fd().as_raw_fd(),
                    name.as_ptr(),
                    (perm & 0o7777) as libc::c_uint,
                    libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOSYS) {
                return Err(e);
            }
            MISSING.store(true, Ordering::Relaxed);
        }
    }
    // Older kernels: pin the entry without following it, refuse a link, and change the pinned
    // inode through its `/proc` name.
    let pinned = rustix::fs::openat(
        &at.dir.fd,
        at.name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if FileType::from_raw_mode(rustix::fs::fstat(&pinned)?.st_mode) == FileType::Symlink {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let path = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    rustix::fs::chmod(path.as_str(), Mode::from_raw_mode(perm as _))?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn chmod_nofollow(at: At<'_>, perm: u32) -> io::Result<()> {
    rustix::fs::chmodat(
        &at.dir.fd,
        at.name,
        Mode::from_raw_mode(perm as _),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
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
