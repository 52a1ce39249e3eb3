//! The user a daemon's session acts as (Linux).
//!
//! A daemon started as root serves each module as the user its configuration names (`nobody` by
//! default), so the kernel itself refuses whatever that user could not do: make a device node,
//! give a file away, set a file capability or a `trusted.` attribute, write where the module's
//! user may not.
//!
//! Why per-thread credentials rather than a process per session: a session is already a thread
//! of its own, and every thread it starts afterwards (its peer's reader and writer, its serving
//! pool, the engine's workers, a striped file's writers) is created by it and so inherits its
//! credentials; nothing of a session ever runs on a thread the daemon made before. A process
//! per session would need the TLS state handed across (the handshake runs first, as root, with
//! the daemon's key) and a broker for the extra connections a striped push attaches to a running
//! session, which lives in the daemon's memory. The credentials are changed with the raw
//! system calls (`setresuid`, `setresgid`, `setgroups`), which on Linux act on the calling
//! thread only; the C library's wrappers would change every thread of the daemon.

use std::ffi::CString;
use std::io;

/// A user and group a session acts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// Makes the calling thread act as `creds`, with no supplementary groups, for good: from a
/// root thread, every capability is dropped with the change of user. Nothing to do when the
/// thread already is that user (a daemon not run as root serves as itself).
pub fn become_user(creds: Creds) -> io::Result<()> {
    use rustix::process::{Gid, Uid};
    let euid = rustix::process::geteuid().as_raw();
    if euid == creds.uid && rustix::process::getegid().as_raw() == creds.gid {
        return Ok(());
    }
    let gid = Gid::from_raw(creds.gid);
    let uid = Uid::from_raw(creds.uid);
    rustix::thread::set_thread_groups(&[])?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    crate::identity_changed();
    // A change that did not take (or that could be undone) must never go unnoticed.
    if rustix::process::geteuid() != uid
        || rustix::process::getuid() != uid
        || rustix::process::getegid() != gid
        || (creds.uid != 0
            && rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok())
    {
        return Err(io::Error::other(
            "the session's user could not be set for good",
        ));
    }
    Ok(())
}

/// Who the calling thread acts as.
pub fn current() -> Creds {
    Creds {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    }
}

/// A user given by name or number: its uid and primary group.
pub fn user(name: &str) -> io::Result<Creds> {
    if let Ok(uid) = name.parse::<u32>() {
        // A number need not have an entry; its group is then the same number.
        return Ok(passwd_by_uid(uid).unwrap_or(Creds { uid, gid: uid }));
    }
    let c = CString::new(name).map_err(io::Error::other)?;
    lookup(|pwd, buf, out| {
        // SAFETY: valid NUL-terminated name, output structs and a buffer of the given length.
        unsafe { libc::getpwnam_r(c.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), out) }
    })
    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user named {name:?}")))
}

/// A group given by name or number.
pub fn group(name: &str) -> io::Result<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `group` is plain data; all-zero is a valid value for it.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated name, output struct and a buffer of the given length.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() {
        return Ok(grp.gr_gid);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no group named {name:?}"),
    ))
}

/// The group the daemon's sessions default to as root: `nogroup` (Debian), else `nobody`.
pub fn default_group() -> io::Result<u32> {
    group("nogroup").or_else(|_| group("nobody"))
}

fn passwd_by_uid(uid: u32) -> Option<Creds> {
    lookup(|pwd, buf, out| {
        // SAFETY: output structs and a buffer of the given length.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), out) }
    })
}

fn lookup(
    call: impl Fn(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> libc::c_int,
) -> Option<Creds> {
    // SAFETY: `passwd` is plain data; all-zero is a valid value for it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pwd, &mut buf, &mut out);
    (rc == 0 && !out.is_null()).then_some(Creds {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that becomes `nobody` can no longer do what root can, and the threads it starts
    /// are `nobody` too; the rest of the process stays as it was.
    #[test]
    fn a_thread_acts_as_the_session_user_and_so_do_its_children() {
        if !rustix::process::geteuid().is_root() {
            return;
        }
        let nobody = user("nobody").unwrap();
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().to_path_buf();
        let (mine, child) = std::thread::spawn(move || {
            become_user(nobody).unwrap();
            let node = path.join("dev");
            let c = CString::new(node.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(8, 0)) };
            let rc = (rc, io::Error::last_os_error().raw_os_error());
            let child = std::thread::spawn(|| rustix::process::geteuid().as_raw())
                .join()
                .unwrap();
            (rc, child)
        })
        .join()
        .unwrap();
        assert_eq!(
            mine,
            (-1, Some(libc::EPERM)),
            "a nobody thread made a device node"
        );
        assert_eq!(child, nobody.uid);
        assert!(
            rustix::process::geteuid().is_root(),
            "the test's own thread changed"
        );
    }
}
