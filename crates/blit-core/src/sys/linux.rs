//! Linux data path, fastest first: reflink (`FICLONE`, instant on XFS/btrfs), then
//! `copy_file_range` (bytes stay in the kernel), then the userspace loop. Sparse files copy only
//! their data regions (`SEEK_DATA`/`SEEK_HOLE`), since every generic path would fill the holes.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use super::fallback::copy_range_rw;
use super::{FastPaths, Method, KERNEL_CHUNK};
use crate::cancel::CancelToken;

/// Errors by which a fast path says "not here" rather than "failed".
fn unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::NOSYS | Errno::XDEV | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOTTY | Errno::PERM
    )
}

/// Copies the content of `src` (`len` bytes as stat'ed) into the empty `dst`. Returns the bytes
/// copied, fewer than `len` if the source shrank meanwhile.
pub fn copy_data(
    src: &mut File,
    dst: &mut File,
    len: u64,
    sparse: bool,
    fast: &FastPaths,
    cancel: &CancelToken,
) -> io::Result<(u64, Method)> {
    if len == 0 {
        return Ok((0, Method::Empty));
    }
    if !fast.no_clone.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(&*dst, &*src) {
            Ok(()) => return Ok((len, Method::Clone)),
            Err(e) if unsupported(e) => fast.no_clone.store(true, Ordering::Relaxed),
            Err(e) => return Err(e.into()),
        }
    }
    if sparse {
        let n = copy_sparse(src, dst, len, fast, cancel)?;
        return Ok((n, Method::Sparse));
    }
    if !fast.no_kernel_copy.load(Ordering::Relaxed) {
        match kernel_copy(src, dst, 0, len, cancel) {
            Ok(n) => return Ok((n, Method::KernelCopy)),
            Err(KernelCopyError::Unsupported) => fast.no_kernel_copy.store(true, Ordering::Relaxed),
            Err(KernelCopyError::Io(e)) => return Err(e),
        }
    }
    let n = copy_range_rw(src, dst, 0, len, cancel)?;
    Ok((n, Method::ReadWrite))
}

enum KernelCopyError {
    /// The kernel or filesystem cannot do it; nothing was written.
    Unsupported,
    Io(io::Error),
}

/// `copy_file_range` over `[offset, offset+len)`, in chunks so cancellation is noticed.
fn kernel_copy(
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    cancel: &CancelToken,
) -> Result<u64, KernelCopyError> {
    let (mut off_in, mut off_out) = (offset, offset);
    let end = offset + len;
    while off_in < end {
        if cancel.is_cancelled() {
            return Err(KernelCopyError::Io(io::ErrorKind::Interrupted.into()));
        }
        let want = ((end - off_in) as usize).min(KERNEL_CHUNK);
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) if off_in == offset && unsupported(e) => {
                return Err(KernelCopyError::Unsupported)
            }
            Err(e) => return Err(KernelCopyError::Io(e.into())),
        }
    }
    Ok(off_in - offset)
}

/// Copies data regions only and sets the length, leaving holes unallocated in `dst`.
fn copy_sparse(
    src: &mut File,
    dst: &mut File,
    len: u64,
    fast: &FastPaths,
    cancel: &CancelToken,
) -> io::Result<u64> {
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&*src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break, // only a hole remains
            Err(e) => return Err(e.into()),
        };
        if data >= len {
            break;
        }
        let hole = match rustix::fs::seek(&*src, SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(e) => return Err(e.into()),
        };
        let span = hole - data;
        let n = if fast.no_kernel_copy.load(Ordering::Relaxed) {
            copy_range_rw(src, dst, data, span, cancel)?
        } else {
            match kernel_copy(src, dst, data, span, cancel) {
                Ok(n) => n,
                Err(KernelCopyError::Unsupported) => {
                    fast.no_kernel_copy.store(true, Ordering::Relaxed);
                    copy_range_rw(src, dst, data, span, cancel)?
                }
                Err(KernelCopyError::Io(e)) => return Err(e),
            }
        };
        if n < span {
            // The source shrank under us; report how far it really went.
            rustix::fs::ftruncate(&*dst, data + n)?;
            return Ok(data + n);
        }
        pos = hole;
    }
    rustix::fs::ftruncate(&*dst, len)?;
    Ok(len)
}
