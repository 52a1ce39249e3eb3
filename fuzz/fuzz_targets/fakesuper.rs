//! Fake super's records, as a daemon reads them back from a module's files: any `user.blit.stat`
//! value and any list of attributes presents an entry without panicking, and never as a kind its
//! storage cannot stand for (a plain file is never a folder or a link, a folder never anything
//! but a folder).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use blit_core::entry::{Entry, Kind, MTime};
use blit_core::fuzzing::{parse_stat, present};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_stat(data);
    if data.is_empty() {
        return;
    }
    // The first byte picks what is stored (a file or a folder); the rest is cut at NULs into
    // attribute names and values, the stat value among them.
    let stored = if data[0] & 1 == 0 { Kind::File } else { Kind::Dir };
    let mut xattrs: Vec<(OsString, Vec<u8>)> = Vec::new();
    let mut parts = data[1..].split(|&b| b == 0);
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        let name = if data[0] & 2 == 0 {
            name.to_vec()
        } else {
            [b"user.blit.".as_slice(), name].concat()
        };
        xattrs.push((OsString::from_vec(name), value.to_vec()));
    }
    xattrs.sort();
    let e = Entry {
        rel: PathBuf::from("e"),
        kind: stored,
        size: 3,
        mtime: MTime::default(),
        perm: 0o644,
        uid: 1,
        gid: 1,
        dev: 1,
        ino: 1,
        nlink: 1,
        blocks: 8,
        rdev: 0,
        xattrs: true,
        extra: None,
    };
    let (shown, attrs) = present(e, &xattrs);
    match stored {
        Kind::Dir => assert_eq!(shown.kind, Kind::Dir),
        _ => assert!(!matches!(shown.kind, Kind::Dir | Kind::Symlink)),
    }
    assert!(shown.perm <= 0o7777);
    for (n, _) in &attrs {
        assert!(!n.as_encoded_bytes().starts_with(b"user.blit."));
    }
});
