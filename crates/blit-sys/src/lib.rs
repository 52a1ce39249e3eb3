//! Blit's platform primitives: the only crate that talks to the OS, and the only one with
//! `unsafe` code (system calls without a safe wrapper). Each platform file offers the same set of
//! functions (the list every platform implements is in `interface.rs`, checked by the compiler); the layers above never
//! see a `cfg`. With them live the few types every layer shares: [`entry::Entry`], the
//! [`error::Error`] that names operation and path, [`cancel::CancelToken`], and the display and
//! attribute-name rules they need.
//!
//! Fast paths report "not supported here" distinctly from "failed" (see [`copy_data`]'s cascade),
//! so a filesystem without reflink falls through to the kernel copy, and a real I/O error is never
//! swallowed by a fallback.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::cancel::CancelToken;

pub mod cancel;
pub mod entry;
pub mod error;
pub mod fakesuper;
pub mod names;
pub mod xattrname;

mod fallback;
mod interface;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::copy_data;

#[cfg(target_vendor = "apple")]
mod macos;
#[cfg(target_vendor = "apple")]
pub use macos::copy_data;

#[cfg(all(unix, not(target_os = "linux"), not(target_vendor = "apple")))]
pub use fallback::copy_data;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

#[cfg(target_os = "linux")]
pub mod creds;

/// What follows `prefix` in `name`, if `name` starts with it.
pub fn strip_name_prefix<'n>(name: &'n OsStr, prefix: &str) -> Option<&'n OsStr> {
    let rest = name.as_encoded_bytes().strip_prefix(prefix.as_bytes())?;
    // SAFETY: `rest` follows a prefix of valid UTF-8, so it starts at a character boundary of
    // the encoded string and is itself a valid encoding.
    Some(unsafe { OsStr::from_encoded_bytes_unchecked(rest) })
}

/// What a feed for `receive_to_temp` reports once it has written the content.
pub enum Fed {
    Done(u64),
    /// The sender saw its file change while reading it.
    Changed,
}

/// What metadata to restore besides mode (or attributes) and times.
#[derive(Clone, Copy, Debug)]
pub struct MetaOpts {
    /// Owner and group: only root may give files away.
    pub owner: bool,
    pub xattrs: bool,
    /// Extended attributes that only a privileged process sets (`security.`, `trusted.`, other
    /// `system.` than the POSIX ACLs) are managed too; without, those a destination entry has
    /// are left as they are (see `blit_core::trust`).
    pub system_xattrs: bool,
    /// Write privileged metadata as `user.blit.*` attributes of what an unprivileged user can
    /// make ([`crate::fakesuper`]).
    pub fake_super: bool,
}

/// An entry named by its folder's handle and its own name. Every operation inside a tree goes
/// through one: on Unix the folder is an open descriptor and the call is an `*at` call, so a
/// folder swapped for a symlink after it was opened can never redirect a write.
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub dir: &'a Dir,
    pub name: &'a OsStr,
}

impl<'a> At<'a> {
    pub fn new(dir: &'a Dir, name: &'a OsStr) -> Self {
        At { dir, name }
    }

    /// The full path, for messages only (never for access).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(self.name)
    }
}

/// One whole-file copy into a new temporary, as the executor asks for it.
pub struct CopyRequest<'a> {
    pub src: At<'a>,
    /// What the walk saw of the source, to stand in for a fresh `fstat` before the copy.
    pub expected: Option<&'a crate::entry::Entry>,
    /// The walk saw extended attributes on the source (else they are not even listed).
    pub src_xattrs: bool,
    pub out: Output<'a>,
}

/// Where a new file is written, and how (whatever feeds it: a local source or a peer's bytes).
#[derive(Clone, Copy)]
pub struct Output<'a> {
    /// Created by the copy; must not exist.
    pub tmp: At<'a>,
    pub fast: &'a FastPaths,
    pub how: Writing<'a>,
}

impl<'a> std::ops::Deref for Output<'a> {
    type Target = Writing<'a>;

    fn deref(&self) -> &Writing<'a> {
        &self.how
    }
}

/// How a new file is written, wherever it lands: what the engine decides for each file.
#[derive(Clone, Copy)]
pub struct Writing<'a> {
    /// The final name, when nothing stands there: the copy may then put the file in place itself
    /// (reported as `placed`).
    pub final_name: Option<&'a OsStr>,
    /// The folder is one this run made and has not yet named (see `sync::Fresh`): nothing in it
    /// can be seen under its final path, so a new file may be written under its final name
    /// directly, with no unnamed or temporary file and no link or rename to name it.
    pub direct: bool,
    pub meta: MetaOpts,
    /// The process umask, to know when a file can be created with its final mode.
    pub umask: u32,
    /// Created under a default ACL, which replaces the umask and hands the file an access ACL:
    /// its mode is always set, and an inherited access ACL the source lacks is removed (when
    /// xattrs are kept), so the next run finds nothing to change.
    pub under_acl: bool,
    /// Owner and group a new file gets here (the process's, unless the folder is setgid).
    pub default_owner: Option<(u32, u32)>,
    /// Flush the temporary to disk before returning.
    pub fsync: bool,
    pub cancel: &'a CancelToken,
    /// Called with each increment of bytes copied.
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// `tmp` is a fixed name that may hold part of an earlier, interrupted transfer, to be
    /// continued rather than restarted (`--resume`).
    pub resume: bool,
}

impl Writing<'_> {
    /// Whether a new file of mode `perm` can be created with that mode at once, saving an
    /// `fchmod`: the kernel keeps it exactly (no special bits, none masked by the umask, no
    /// default ACL to replace the umask), and it stays writable for the `xattrs` still to be
    /// set (unless root writes them). Not for a resumed partial (it exists already), nor under
    /// fake super (the mode stored differs from the mode made).
    pub fn creates_final_mode(&self, perm: u32, xattrs: bool) -> bool {
        !self.resume
            && !self.meta.fake_super
            && perm & 0o7000 == 0
            && perm & self.umask == 0
            && !self.under_acl
            && (!xattrs || perm & 0o200 != 0 || self.meta.owner)
    }

    /// `chown` is needed unless the new file is certainly owned right already.
    pub fn needs_chown(&self, meta: &crate::entry::Entry) -> bool {
        self.default_owner != Some((meta.uid, meta.gid))
    }
}

/// Extended attributes of one entry, sorted by name.
pub type Xattrs = Vec<(std::ffi::OsString, Vec<u8>)>;

pub enum CopyOutcome {
    Done {
        bytes: u64,
        method: Method,
        /// Already under its final name (else it is at the temporary, for the caller to rename).
        placed: bool,
    },
    /// The source changed while being read; the temporary holds no trustworthy copy.
    Changed,
}

/// Names Windows reserves for devices, in any case and with any extension (`nul.txt` too).
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Why a name cannot be created on this platform, if it cannot.
pub fn unsupported_name(name: &std::ffi::OsStr) -> Option<&'static str> {
    if !cfg!(windows) {
        return None;
    }
    let s = name.to_string_lossy();
    let stem = s.split('.').next().unwrap_or("").trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return Some("reserved device name on Windows");
    }
    if s.ends_with('.') || s.ends_with(' ') {
        return Some("Windows does not allow names ending in a dot or space");
    }
    if s.chars()
        .any(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') || (c as u32) < 32)
    {
        return Some("character not allowed in Windows names");
    }
    None
}

/// True when a rename failed only because source and destination are on different devices.
pub fn is_cross_device(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::CrossesDevices
}

/// How a file's bytes were moved, for `--stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Nothing to copy (empty file).
    Empty,
    /// The OS's own whole-file copy (`CopyFileExW` on Windows).
    Native,
    /// Shared extents (reflink / clone): no bytes moved at all.
    Clone,
    /// In-kernel copy (`copy_file_range`): bytes never enter userspace.
    KernelCopy,
    /// Only the data regions, holes left as holes.
    Sparse,
    /// Userspace buffer loop, when nothing better applies.
    ReadWrite,
    /// Bytes received from a peer.
    Network,
    /// Bytes received from a peer in stripes, over several connections at once.
    NetworkStriped,
    /// Nothing written: what a dry run reports it would have copied.
    Planned,
}

/// Per-run knowledge of which fast paths the filesystems refused, so each file does not pay a
/// failing syscall to learn it again.
#[derive(Debug)]
pub struct FastPaths {
    pub no_clone: AtomicBool,
    pub no_kernel_copy: AtomicBool,
    /// Unnamed temporary files (`O_TMPFILE`) refused by the filesystem.
    pub no_tmpfile: AtomicBool,
    /// When the run began: a source file whose status changed after it is being changed while
    /// the run copies, and gets a second look before its copy counts (see `copy_to_temp`).
    pub started: std::time::SystemTime,
}

impl Default for FastPaths {
    fn default() -> Self {
        FastPaths {
            no_clone: AtomicBool::new(false),
            no_kernel_copy: AtomicBool::new(false),
            no_tmpfile: AtomicBool::new(false),
            started: std::time::SystemTime::now(),
        }
    }
}

/// Largest buffer for the userspace loop: big enough to amortise syscalls on large files, small
/// enough that many workers together stay modest in memory.
pub const BUFFER_MAX: usize = 1 << 20;

/// Size of one in-kernel copy call; between calls the copy checks for cancellation.
pub const KERNEL_CHUNK: usize = 64 << 20;
