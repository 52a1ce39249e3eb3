//! `lstat` as entries, and waiting out a change still under way before a file is trusted.

use super::*;

// `stat`'s field types differ between platforms and architectures; the casts are no-ops on some.
#[allow(clippy::unnecessary_cast)]
pub(super) fn entry_from_stat(rel: PathBuf, st: &rustix::fs::Stat) -> Entry {
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
pub(super) fn large(e: &Entry) -> bool {
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
pub(super) const AWAIT_TRUNCATE_MIN: u64 = 1 << 20;

pub(super) fn fstat_settled(f: &File, at: At<'_>, wait: bool) -> Result<rustix::fs::Stat> {
    #[cfg(target_os = "linux")]
    if wait {
        crate::linux::await_truncate(f);
    }
    let _ = wait;
    rustix::fs::fstat(f).map_err(|e| Error::io(Op::Stat, at.path(), e.into()))
}

pub(super) fn fstat(f: &File, at: At<'_>) -> Result<Entry> {
    let st = rustix::fs::fstat(f).map_err(|e| Error::io(Op::Stat, at.path(), e.into()))?;
    Ok(entry_from_stat(PathBuf::new(), &st))
}
