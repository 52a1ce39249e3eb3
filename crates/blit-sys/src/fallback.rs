//! Portable data copy: a positional read/write loop with a buffer sized to the file. Used where the
//! OS has no kernel copy call, and by the Linux path when the kernel refuses one (across
//! filesystems, e.g. into tmpfs).

use std::fs::File;
use std::io;

use super::{read_at, write_all_at, FastPaths, Method, BUFFER_MAX};
use crate::cancel::CancelToken;

/// Copies `len` bytes of `src` from `offset` to the same offset of `dst`. Returns the bytes copied,
/// which is less than `len` only when the source ended early (it shrank while being read).
///
/// Positional reads and writes: no seek calls, which were two of the thirteen system calls a
/// small file cost on this path, and neither file's position matters to the caller.
pub fn copy_range_rw(
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    cancel: &CancelToken,
) -> io::Result<u64> {
    let mut buf = vec![0u8; (len.min(BUFFER_MAX as u64) as usize).max(1)];
    let mut done = 0u64;
    while done < len {
        if cancel.is_cancelled() {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let want = buf.len().min((len - done) as usize);
        let n = match read_at(src, &mut buf[..want], offset + done) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        write_all_at(dst, &buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(done)
}

/// Copies the whole content; see the Linux version for the fast paths.
#[cfg_attr(
    any(target_os = "linux", target_vendor = "apple", windows),
    allow(dead_code)
)]
pub fn copy_data(
    src: &mut File,
    dst: &mut File,
    len: u64,
    _sparse: bool,
    _fast: &FastPaths,
    cancel: &CancelToken,
) -> io::Result<(u64, Method)> {
    if len == 0 {
        return Ok((0, Method::Empty));
    }
    let n = copy_range_rw(src, dst, 0, len, cancel)?;
    Ok((n, Method::ReadWrite))
}
