//! macOS data path: `clonefile` on APFS (an instant copy-on-write clone), else `fcopyfile`
//! (the kernel-assisted copy, sparse-aware), else the portable loop.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use super::fallback::copy_range_rw;
use super::{At, FastPaths, Method};
use crate::cancel::CancelToken;

/// `<sys/clonefile.h>` flags, not exported by the libc crate.
const CLONE_NOFOLLOW: u32 = 0x0001;
const CLONE_NOOWNERCOPY: u32 = 0x0002;

/// Clones `src` to the new path `tmp`. `Ok(false)` when the volume cannot clone (not APFS, or
/// another volume), so the caller creates the file and copies instead.
pub fn try_clone(src: &File, tmp: At<'_>, fast: &FastPaths) -> io::Result<bool> {
    if fast.no_clone.load(Ordering::Relaxed) {
        return Ok(false);
    }
    let c = CString::new(tmp.name.as_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid descriptor and NUL-terminated path for the duration of the call.
    let rc = unsafe {
        libc::fclonefileat(
            src.as_raw_fd(),
            tmp.dir.fd().as_raw_fd(),
            c.as_ptr(),
            CLONE_NOFOLLOW | CLONE_NOOWNERCOPY,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTSUP) | Some(libc::EXDEV) | Some(libc::EINVAL) => {
            fast.no_clone.store(true, Ordering::Relaxed);
            Ok(false)
        }
        _ => Err(e),
    }
}

pub fn copy_data(
    src: &mut File,
    dst: &mut File,
    len: u64,
    _sparse: bool,
    fast: &FastPaths,
    cancel: &CancelToken,
) -> io::Result<(u64, Method)> {
    if len == 0 {
        return Ok((0, Method::Empty));
    }
    if !fast.no_kernel_copy.load(Ordering::Relaxed) {
        // SAFETY: both descriptors are open for the call; a null state is allowed.
        let rc = unsafe {
            libc::fcopyfile(
                src.as_raw_fd(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                libc::COPYFILE_DATA | libc::COPYFILE_DATA_SPARSE,
            )
        };
        if rc == 0 {
            let n = dst.metadata()?.len();
            return Ok((n, Method::KernelCopy));
        }
        fast.no_kernel_copy.store(true, Ordering::Relaxed);
    }
    let n = copy_range_rw(src, dst, 0, len, cancel)?;
    Ok((n, Method::ReadWrite))
}
