//! Metadata: modes, owners, times, extended attributes and ACLs, restored on what was written.

use super::*;

/// Where POSIX ACLs keep a file's access ACL.
pub(super) const ACCESS_ACL: &str = "system.posix_acl_access";

/// Restores metadata on a freshly written file through its descriptor.
pub(super) fn apply_file_meta(
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
            how: Writing {
                meta: MetaOpts {
                    fake_super: false,
                    owner: false,
                    xattrs: true,
                    ..o.meta
                },
                ..o.how
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
pub(super) fn apply_stored_meta_at(
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
pub(super) fn xattr_path(at: At<'_>) -> PathBuf {
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
pub(super) fn read_path(at: At<'_>) -> PathBuf {
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
pub(super) fn listxattr_size_at(at: At<'_>) -> Option<io::Result<usize>> {
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
/// are left alone (see `blit_core::trust`).
pub(super) fn sync_xattrs(want: &Xattrs, dst: At<'_>, system_xattrs: bool) -> Result<()> {
    // The usual case, nothing wanted and nothing there, costs one size query relative to the
    // folder instead of a listing through the whole path (a deep tree's folders paid ~15 µs).
    if want.is_empty() && !has_xattrs(dst)? {
        return Ok(());
    }
    let have = xattrs_of(dst)?;
    let p = xattr_path(dst);
    for (name, _) in &have {
        let managed = system_xattrs || !crate::xattrname::privileged(name);
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

/// Sets permission bits only (no other metadata), never through a symlink: an entry swapped
/// for a link during the run (by another user, or another session of a daemon running as root)
/// must not hand the source's mode to whatever the link points at. A link found there fails.
pub fn chmod_at(at: At<'_>, perm: u32) -> Result<()> {
    chmod_nofollow(at, perm).map_err(|e| Error::io(Op::Chmod, at.path(), e))
}

#[cfg(target_os = "linux")]
pub(super) fn chmod_nofollow(at: At<'_>, perm: u32) -> io::Result<()> {
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
pub(super) fn chmod_nofollow(at: At<'_>, perm: u32) -> io::Result<()> {
    rustix::fs::chmodat(
        &at.dir.fd,
        at.name,
        Mode::from_raw_mode(perm as _),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

/// The xattrs of the entry a path names, following it (a tree's root, resolved already), sorted
/// by name; none where they cannot be read.
pub fn path_xattrs(path: &Path) -> Xattrs {
    use std::os::unix::fs::OpenOptionsExt;
    use xattr::FileExt;
    // Through an open descriptor: the path may be a `/proc/self/fd/N` link, whose own
    // attributes (what the path-based calls would read) are not the entry's. Not blocking: a
    // fifo's open would wait for a writer.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let Ok(f) = opened else {
        return Xattrs::new();
    };
    let mut out = Xattrs::new();
    for name in f.list_xattr().into_iter().flatten() {
        if let Ok(Some(v)) = f.get_xattr(&name) {
            out.push((name, v));
        }
    }
    out.sort();
    out
}
