//! Writing a file: a temporary (or an unnamed file) filled by the kernel's copy or by a feed,
//! checked against what was listed, and published under its final name only when complete.

use super::*;

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
pub(super) fn create_temp(at: At<'_>, mode: u32) -> Result<File> {
    rustix::fs::openat(
        &at.dir.fd,
        at.name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode as _),
    )
    .map(File::from)
    .map_err(|e| Error::io(Op::Create, at.path(), e.into()))
}

pub(super) fn timestamps(mtime: MTime) -> Timestamps {
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
    if crate::macos::try_clone(&input, req.out.tmp, req.out.fast)
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
    let final_mode = req.out.creates_final_mode(before.perm, req.src_xattrs);
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
pub(super) fn make_empty(req: &CopyRequest<'_>, e: &Entry) -> Result<CopyOutcome> {
    let final_mode = req.out.creates_final_mode(e.perm, false);
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
pub(super) fn make_empty_in_place(
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
pub(super) enum Made<'a> {
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
pub(super) struct RemoveOnDrop<'a>(Option<At<'a>>);

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
pub(super) fn create_output<'a>(o: &Output<'a>, mode: u32) -> Result<(File, Made<'a>)> {
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
pub(super) fn publish(out: &File, made: Made<'_>, o: &Output<'_>) -> Result<bool> {
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
pub(super) fn link_fd(f: &File, dir: &Dir, name: &OsStr) -> rustix::io::Result<()> {
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
pub(super) fn finish_copy(
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
pub(super) const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The file's status changed after `started` and within the last second (or its ctime is ahead
/// of our clock).
pub(super) fn changed_since(st: &rustix::fs::Stat, started: std::time::SystemTime) -> bool {
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
pub(super) fn open_own_file(at: At<'_>) -> rustix::io::Result<Option<File>> {
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
pub(super) enum XattrFrom<'a> {
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
    let final_mode = o.creates_final_mode(meta.perm, xattrs.is_some());
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
