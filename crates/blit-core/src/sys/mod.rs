//! Platform primitives: the only place that talks to the OS. Each platform file offers the same
//! small set of functions; the layers above never see a `cfg`.
//!
//! Fast paths report "not supported here" distinctly from "failed" (see [`copy_data`]'s cascade),
//! so a filesystem without reflink falls through to the kernel copy, and a real I/O error is never
//! swallowed by a fallback.

use std::sync::atomic::AtomicBool;

mod fallback;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::copy_data;

#[cfg(not(target_os = "linux"))]
pub use fallback::copy_data;

/// How a file's bytes were moved, for `--stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Nothing to copy (empty file).
    Empty,
    /// Shared extents (reflink / clone): no bytes moved at all.
    Clone,
    /// In-kernel copy (`copy_file_range`): bytes never enter userspace.
    KernelCopy,
    /// Only the data regions, holes left as holes.
    Sparse,
    /// Userspace buffer loop, when nothing better applies.
    ReadWrite,
}

/// Per-run knowledge of which fast paths the filesystems refused, so each file does not pay a
/// failing syscall to learn it again.
#[derive(Debug, Default)]
pub struct FastPaths {
    pub no_clone: AtomicBool,
    pub no_kernel_copy: AtomicBool,
}

/// Largest buffer for the userspace loop: big enough to amortise syscalls on large files, small
/// enough that many workers together stay modest in memory.
pub const BUFFER_MAX: usize = 1 << 20;

/// Size of one in-kernel copy call; between calls the copy checks for cancellation.
pub const KERNEL_CHUNK: usize = 64 << 20;
