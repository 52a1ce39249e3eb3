//! "Fake super" (rsync's name): how a writer that is not root keeps what only root could make.
//!
//! A daemon module with `fake_super = true` stores each pushed entry as something its own
//! unprivileged user can create, and the privileged rest in extended attributes of its own
//! namespace, which it reads back on pulls and when it compares:
//!
//! - `user.blit.stat` holds the entry's real type, permission bits (setuid, setgid and sticky
//!   included), owner, group and device number, as ASCII: `<mode in octal> <uid> <gid> <rdev>`,
//!   where the mode carries the type bits (`20660 0 6 2049`: a character device, mode 0660,
//!   root:disk, 8,1). It is written on every file and folder.
//! - an extended attribute only root may set (`security.capability`, `trusted.*`) is kept as
//!   `user.blit.x.<its name>`.
//! - device nodes and fifos are kept as empty regular files; folders and files get their
//!   permission bits without the special ones, and with the owner's read and write (and a
//!   folder's search) bits, so the daemon's user can always read them back.
//! - symlinks are real symlinks; the kernel lets no one set a `user.` attribute on one, so a
//!   link's owner is not kept: it is given back as its folder's (rsync gives the daemon's user),
//!   which is right for the usual tree, where a link belongs to whoever owns its folder.
//!
//! A peer can never set a `user.blit.` attribute itself: `blit_core::trust` drops that namespace
//! from everything a peer sends, so a client cannot forge the stored metadata.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use crate::entry::{Entry, Extra, Kind};
use crate::Xattrs;

/// The attribute holding an entry's real type, mode, owner, group and device number.
pub const STAT: &str = "user.blit.stat";
/// The prefix under which privileged attributes are kept.
pub const XATTR_PREFIX: &str = "user.blit.x.";

/// The longest `user.blit.stat` value [`parse_stat`] reads: four numbers in ASCII.
const STAT_MAX: usize = 64;

/// How `e` (with extended attributes `xattrs`) is stored: the entry to write with the writer's
/// own rights, and the attributes to give it. (Written only where a daemon runs: Unix.)
#[cfg_attr(not(unix), allow(dead_code))]
pub fn store(e: &Entry, xattrs: Option<&Xattrs>) -> (Entry, Xattrs) {
    let mut stored = e.clone();
    let mut out = Xattrs::new();
    let plain_file = matches!(
        e.kind,
        Kind::CharDevice | Kind::BlockDevice | Kind::Fifo | Kind::Socket
    );
    if plain_file {
        stored.kind = Kind::File;
        stored.size = 0;
        stored.blocks = 0;
        stored.rdev = 0;
    }
    stored.perm = match stored.kind {
        Kind::Dir => (e.perm & 0o777) | 0o700,
        Kind::Symlink => e.perm,
        _ => (e.perm & 0o777) | 0o600,
    };
    for (name, value) in xattrs.into_iter().flatten() {
        if crate::xattrname::privileged(name) {
            let mut kept = OsString::from(XATTR_PREFIX);
            kept.push(name);
            out.push((kept, value.clone()));
        } else if !is_own(name) {
            out.push((name.clone(), value.clone()));
        }
    }
    if e.kind != Kind::Symlink {
        out.push((OsString::from(STAT), stat_value(e)));
    }
    out.sort();
    stored.xattrs = !out.is_empty();
    stored.extra = Some(Arc::new(Extra {
        xattrs: Some(out.clone()),
        ..e.extra.as_deref().cloned().unwrap_or_default()
    }));
    (stored, out)
}

/// The entry a stored one stands for, given the attributes read from it: its real type, mode,
/// owner, group and device number, and its attributes as they were sent (privileged ones under
/// their own names, Blit's own hidden, and privileged ones the destination's kernel put there
/// itself left out).
pub fn present(mut stored: Entry, xattrs: &Xattrs) -> (Entry, Xattrs) {
    let out = present_xattrs(xattrs);
    let stat = xattrs
        .iter()
        .find(|(n, _)| n == STAT)
        .and_then(|(_, v)| parse_stat(v));
    // A folder stands only for a folder; a plain file for a file or anything stored as one.
    let believable = |s: &Stat| match stored.kind {
        Kind::Dir => s.kind == Kind::Dir,
        Kind::File => !matches!(s.kind, Kind::Dir | Kind::Symlink),
        _ => false,
    };
    if let Some(s) = stat.filter(believable) {
        if stored.kind == Kind::File && s.kind != Kind::File {
            stored.size = 0;
            stored.blocks = 0;
        }
        stored.kind = s.kind;
        stored.perm = s.perm;
        stored.uid = s.uid;
        stored.gid = s.gid;
        stored.rdev = s.rdev;
    }
    stored.xattrs = !out.is_empty();
    stored.extra = match stored.extra.take() {
        Some(x) => Some(Arc::new(Extra {
            xattrs: Some(out.clone()),
            ..(*x).clone()
        })),
        None if !out.is_empty() => Some(Arc::new(Extra {
            xattrs: Some(out.clone()),
            ..Extra::default()
        })),
        None => None,
    };
    (stored, out)
}

/// The attributes a stored entry stands for, given those read from it.
pub fn present_xattrs(xattrs: &Xattrs) -> Xattrs {
    let mut out = Xattrs::new();
    for (name, value) in xattrs {
        if let Some(real) = crate::strip_name_prefix(name, XATTR_PREFIX) {
            // Only a privileged attribute is kept this way; anything else under the prefix was
            // not written by Blit, and stands for nothing.
            if crate::xattrname::privileged(real) {
                out.push((real.to_os_string(), value.clone()));
            }
        } else if !is_own(name) && !crate::xattrname::privileged(name) {
            out.push((name.clone(), value.clone()));
        }
    }
    out.sort();
    out
}

/// The owner and group `user.blit.stat` gives, among a stored entry's attributes.
pub fn owner_in(xattrs: &Xattrs) -> Option<(u32, u32)> {
    let (_, v) = xattrs.iter().find(|(n, _)| n == STAT)?;
    parse_stat(v).map(|s| (s.uid, s.gid))
}

/// Whether the attribute is one of Blit's own.
fn is_own(name: &OsStr) -> bool {
    name.as_encoded_bytes()
        .starts_with(crate::xattrname::RESERVED_PREFIX)
}

/// What `user.blit.stat` says of an entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
}

const S_IFMT: u32 = 0o170000;

#[cfg_attr(not(unix), allow(dead_code))]
fn type_bits(kind: Kind) -> u32 {
    match kind {
        Kind::Fifo => 0o010000,
        Kind::CharDevice => 0o020000,
        Kind::Dir => 0o040000,
        Kind::BlockDevice => 0o060000,
        Kind::File => 0o100000,
        Kind::Symlink => 0o120000,
        Kind::Socket => 0o140000,
    }
}

fn kind_of_bits(bits: u32) -> Option<Kind> {
    Some(match bits {
        0o010000 => Kind::Fifo,
        0o020000 => Kind::CharDevice,
        0o040000 => Kind::Dir,
        0o060000 => Kind::BlockDevice,
        0o100000 => Kind::File,
        0o120000 => Kind::Symlink,
        0o140000 => Kind::Socket,
        _ => return None,
    })
}

/// The `user.blit.stat` value of `e`.
#[cfg_attr(not(unix), allow(dead_code))]
pub fn stat_value(e: &Entry) -> Vec<u8> {
    let mode = type_bits(e.kind) | (e.perm & 0o7777);
    format!("{mode:o} {} {} {}", e.uid, e.gid, e.rdev).into_bytes()
}

/// Reads a `user.blit.stat` value; `None` for anything that is not exactly four numbers of the
/// right form (it was not written by Blit, so it says nothing).
pub fn parse_stat(v: &[u8]) -> Option<Stat> {
    if v.len() > STAT_MAX {
        return None;
    }
    let text = std::str::from_utf8(v).ok()?;
    let mut parts = text.split(' ');
    fn digits(s: &str, radix: u32) -> Option<&str> {
        let ok = !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
        ok.then_some(s)
    }
    let mode = u32::from_str_radix(digits(parts.next()?, 8)?, 8).ok()?;
    let uid = digits(parts.next()?, 10)?.parse().ok()?;
    let gid = digits(parts.next()?, 10)?.parse().ok()?;
    let rdev = digits(parts.next()?, 10)?.parse().ok()?;
    if parts.next().is_some() || mode & !(S_IFMT | 0o7777) != 0 {
        return None;
    }
    Some(Stat {
        kind: kind_of_bits(mode & S_IFMT)?,
        perm: mode & 0o7777,
        uid,
        gid,
        rdev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::MTime;
    use std::path::PathBuf;

    fn entry(kind: Kind, perm: u32, uid: u32, rdev: u64) -> Entry {
        Entry {
            rel: PathBuf::from("e"),
            kind,
            size: 5,
            mtime: MTime { sec: 7, nsec: 9 },
            perm,
            uid,
            gid: uid + 1,
            dev: 1,
            ino: 2,
            nlink: 1,
            blocks: 8,
            rdev,
            xattrs: false,
            extra: None,
        }
    }

    fn x(pairs: &[(&str, &[u8])]) -> Xattrs {
        let mut v: Xattrs = pairs
            .iter()
            .map(|(n, v)| (OsString::from(n), v.to_vec()))
            .collect();
        v.sort();
        v
    }

    /// Every kind of entry round-trips: stored as what an unprivileged user can make, and
    /// presented again exactly as it was.
    #[test]
    fn entries_round_trip_through_what_is_stored() {
        let attrs = x(&[
            ("security.capability", b"\x01\x00"),
            ("trusted.t", b"t"),
            ("user.color", b"blue"),
            ("system.posix_acl_access", b"acl"),
        ]);
        for e in [
            entry(Kind::File, 0o4755, 0, 0),
            entry(Kind::File, 0o444, 1000, 0),
            entry(Kind::Dir, 0o3555, 0, 0),
            entry(Kind::BlockDevice, 0o660, 0, 0x0801),
            entry(Kind::CharDevice, 0o600, 0, 0x0103),
            entry(Kind::Fifo, 0o640, 33, 0),
        ] {
            let (stored, kept) = store(&e, Some(&attrs));
            assert!(matches!(stored.kind, Kind::File | Kind::Dir), "{e:?}");
            assert_eq!(
                stored.perm & 0o7000,
                0,
                "{e:?}: special bits stored as such"
            );
            let owner = if stored.kind == Kind::Dir {
                0o700
            } else {
                0o600
            };
            assert_eq!(stored.perm & owner, owner, "{e:?}");
            assert!(kept.iter().all(|(n, _)| {
                let n = n.to_string_lossy();
                n.starts_with("user.") || n == "system.posix_acl_access"
            }));
            // What the destination's kernel adds by itself is no part of the entry.
            let mut on_disk = kept.clone();
            on_disk.push((OsString::from("security.selinux"), b"label".to_vec()));
            on_disk.sort();
            let (back, attrs_back) = present(stored, &on_disk);
            assert_eq!(attrs_back, attrs, "{e:?}");
            assert_eq!(
                (back.kind, back.perm, back.uid, back.gid, back.rdev),
                (e.kind, e.perm, e.uid, e.gid, e.rdev),
                "{e:?}"
            );
            assert_eq!(back.mtime, e.mtime);
        }
    }

    #[test]
    fn a_stat_value_is_read_only_when_exact() {
        let ok = parse_stat(b"20660 0 6 2049").unwrap();
        assert_eq!(
            ok,
            Stat {
                kind: Kind::CharDevice,
                perm: 0o660,
                uid: 0,
                gid: 6,
                rdev: 2049
            }
        );
        for bad in [
            &b""[..],
            b"20660 0 6",
            b"20660 0 6 2049 9",
            b"20660  0 6 2049",
            b"2066x 0 6 2049",
            b"20690 0 6 2049",
            b"770660 0 6 2049",
            b"20660 -1 6 2049",
            b"20660 4294967296 6 2049",
            b"20660 0 6 18446744073709551616",
            b"00660 0 6 0",
            b"\xff",
        ] {
            assert_eq!(parse_stat(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_stat(&[b'1'; 65]), None);
    }

    /// A stored plain file whose attribute claims a folder (or the reverse) is not believed: a
    /// folder cannot be presented as a file or a file as a folder.
    #[test]
    fn a_claim_of_another_storage_type_is_ignored() {
        let dir = entry(Kind::Dir, 0o755, 5, 0);
        let claims_file = x(&[(STAT, b"100644 0 0 0")]);
        let (back, _) = present(dir, &claims_file);
        assert_eq!((back.kind, back.uid), (Kind::Dir, 5));
        let file = entry(Kind::File, 0o644, 5, 0);
        for claim in [&b"40755 0 0 0"[..], b"120777 0 0 0"] {
            let (back, _) = present(file.clone(), &x(&[(STAT, claim)]));
            assert_eq!((back.kind, back.uid), (Kind::File, 5));
        }
    }
}
