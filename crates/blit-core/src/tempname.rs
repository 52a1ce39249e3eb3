//! Names for files being written. Every file is written as `.~blit-<pid>-<n>.tmp` in its target
//! folder and renamed over its final name only when complete, so a crash can leave a temporary
//! behind but never a half-written file under a real name. The next run recognises these names,
//! never treats them as data, and removes them.
//!
//! A folder the run makes is likewise made as `.~blit-<pid>-<n>.dir` and renamed into place
//! once the files inside it are complete (see `sync::Fresh`); the next run removes such a folder
//! with all it holds.

use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const PREFIX: &str = ".~blit-";
const SUFFIX: &str = ".tmp";
const DIR_SUFFIX: &str = ".dir";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name, unique within this process; the pid keeps concurrent runs apart.
pub fn next() -> OsString {
    fresh(SUFFIX)
}

/// A fresh temporary name for a folder being filled, unique within this process.
pub fn next_dir() -> OsString {
    fresh(DIR_SUFFIX)
}

fn fresh(suffix: &str) -> OsString {
    static PID: OnceLock<u32> = OnceLock::new();
    let pid = *PID.get_or_init(std::process::id);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{pid:x}-{n:x}{suffix}").into()
}

/// The fixed temporary of a file being received with `--resume`: the same name on every run (pid
/// field 0, which no process has), so an interrupted transfer's data is found again.
pub fn partial(final_name: &OsStr) -> OsString {
    let h = blake3::hash(final_name.as_encoded_bytes());
    let hex: String = h.as_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{PREFIX}0-{hex}{SUFFIX}").into()
}

/// True for names made by [`partial`].
pub fn is_partial(name: &OsStr) -> bool {
    is_temp(name) && name.as_encoded_bytes().starts_with(b".~blit-0-")
}

/// True for names made by [`next`] or [`partial`] (by this or an earlier run).
pub fn is_temp(name: &OsStr) -> bool {
    shaped(name, SUFFIX)
}

/// True for names made by [`next_dir`] (by this or an earlier run).
pub fn is_temp_dir(name: &OsStr) -> bool {
    shaped(name, DIR_SUFFIX)
}

/// Whether an entry is a leftover of an interrupted run: a file with a [`next`]-shaped name, or
/// a folder with a [`next_dir`]-shaped one. An entry of the other kind with such a name is data.
pub fn is_leftover(name: &OsStr, is_dir: bool) -> bool {
    if is_dir {
        is_temp_dir(name)
    } else {
        is_temp(name)
    }
}

fn shaped(name: &OsStr, suffix: &str) -> bool {
    let Some(s) = name.to_str() else {
        return false;
    };
    s.len() > PREFIX.len() + suffix.len()
        && s.starts_with(PREFIX)
        && s.ends_with(suffix)
        && s[PREFIX.len()..s.len() - suffix.len()]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_recognised_and_others_are_not() {
        let a = next();
        let b = next();
        assert_ne!(a, b);
        assert!(is_temp(&a));
        assert!(!is_temp(OsStr::new(".~blit-notes.tmp")));
        assert!(!is_temp(OsStr::new("report.tmp")));
        let p = partial(OsStr::new("big.iso"));
        assert!(is_temp(&p) && is_partial(&p) && !is_partial(&a));
        assert_eq!(p, partial(OsStr::new("big.iso")));
        let d = next_dir();
        assert!(is_temp_dir(&d) && !is_temp(&d) && !is_temp_dir(&a));
        assert!(!is_temp_dir(OsStr::new(".~blit-photos.dir")));
        assert!(is_leftover(&d, true) && !is_leftover(&d, false));
        assert!(is_leftover(&a, false) && !is_leftover(&a, true));
    }
}
