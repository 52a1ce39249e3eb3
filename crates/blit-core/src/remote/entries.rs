//! Entries as they cross the wire: a local entry described for the peer, and a peer's
//! description checked and taken as an entry here. One place for both directions, so a field
//! added to [`Entry`] is carried (or deliberately not) here alone.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::wire::WireEntry;
use super::wirepath;
use crate::entry::{Entry, Extra, MTime};
use crate::sys::{self, Xattrs};

/// An entry from the wire, named `rel` here.
pub fn to_entry(rel: PathBuf, w: &WireEntry) -> io::Result<Entry> {
    let xattrs: Option<Xattrs> = match &w.xattrs {
        Some(x) => Some(
            x.iter()
                .map(|(n, v)| Ok((wirepath::attr_from_wire(n.clone())?, v.clone())))
                .collect::<io::Result<_>>()?,
        ),
        None => None,
    };
    let has_xattrs = xattrs.as_ref().is_some_and(|x| !x.is_empty());
    let link = w
        .link
        .as_ref()
        .map(|l| wirepath::link_from_wire(l.clone()))
        .transpose()?;
    let extra = (link.is_some() || has_xattrs).then(|| Arc::new(Extra { link, xattrs }));
    if w.mtime_nsec >= 1_000_000_000 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "entry with an impossible mtime",
        ));
    }
    // No filesystem holds a file larger than `i64::MAX` (`off_t`); a larger size is a lie that
    // would only overflow offset arithmetic.
    if w.size > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "entry with an impossible size",
        ));
    }
    let kind = w.kind;
    Ok(Entry {
        rel,
        kind,
        size: w.size,
        mtime: MTime {
            sec: w.mtime_sec,
            nsec: w.mtime_nsec,
        },
        perm: sys::perm_from_wire(w.perm, kind),
        uid: w.uid,
        gid: w.gid,
        dev: w.dev,
        ino: w.ino,
        nlink: w.nlink,
        blocks: w.blocks,
        rdev: w.rdev,
        xattrs: has_xattrs,
        extra,
    })
}

/// A local entry described for the peer, named `name` (no link target or xattrs yet).
pub fn to_wire_entry(name: &OsStr, e: &Entry) -> WireEntry {
    WireEntry {
        name: lossy(name),
        kind: e.kind,
        size: e.size,
        mtime_sec: e.mtime.sec,
        mtime_nsec: e.mtime.nsec,
        perm: sys::mode_for_wire(e),
        uid: e.uid,
        gid: e.gid,
        dev: e.dev,
        ino: e.ino,
        nlink: e.nlink,
        blocks: e.blocks,
        rdev: e.rdev,
        xattrs: None,
        link: None,
    }
}

/// A local name for the wire, lossy only where a name cannot cross exactly (Windows names that
/// are not valid Unicode), for names already refused or only shown.
pub fn lossy(name: &OsStr) -> Vec<u8> {
    wirepath::to_wire(name).unwrap_or_else(|_| name.to_string_lossy().into_owned().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_size_beyond_any_file_is_refused() {
        let mut w = WireEntry {
            name: b"f".to_vec(),
            size: i64::MAX as u64,
            ..WireEntry::default()
        };
        assert!(to_entry(PathBuf::from("f"), &w).is_ok());
        w.size = i64::MAX as u64 + 1;
        let e = to_entry(PathBuf::from("f"), &w).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
