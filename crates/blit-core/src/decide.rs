//! What to do with one entry present on both sides: the rules a user of rsync or robocopy
//! expects, as pure functions of the two `lstat`s (plus, only where needed, a look inside).
//!
//! - size or mtime differing (either direction) rewrites the content; with `--checksum`, equal
//!   sizes are compared by BLAKE3 instead of by mtime;
//! - a type change replaces the entry;
//! - a difference only in mode, owner, xattrs (or mtime under `--checksum`) updates metadata in
//!   place.

use std::path::PathBuf;

use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Rule};
use crate::sys::{self, At};

/// Why an entry is acted on; printed by `--verbose`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    New,
    Size,
    Mtime,
    Checksum,
    Type,
    Target,
    Device,
    /// The destination inode is shared in a way the source's is not.
    Unlink,
    Meta(MetaDiff),
}

impl Reason {
    pub fn label(self) -> String {
        match self {
            Reason::New => "new".into(),
            Reason::Size => "size".into(),
            Reason::Mtime => "mtime".into(),
            Reason::Checksum => "checksum".into(),
            Reason::Type => "type".into(),
            Reason::Target => "link target".into(),
            Reason::Device => "device".into(),
            Reason::Unlink => "hard link".into(),
            Reason::Meta(m) => m.label(),
        }
    }
}

/// Which metadata fields differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaDiff {
    pub perm: bool,
    pub owner: bool,
    pub mtime: bool,
    pub xattr: bool,
}

impl MetaDiff {
    pub fn any(self) -> bool {
        self.perm || self.owner || self.mtime || self.xattr
    }

    pub fn label(self) -> String {
        let parts: Vec<&str> = [
            (self.perm, "mode"),
            (self.owner, "owner"),
            (self.mtime, "mtime"),
            (self.xattr, "xattr"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        parts.join(",")
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub checksum: bool,
    /// Compare owners (only root can restore them).
    pub owner: bool,
    pub xattrs: bool,
    /// Compare privileged extended attributes too (see [`crate::sys::MetaOpts::system_xattrs`]).
    pub system_xattrs: bool,
    /// Compare the owners of symlinks too (with `owner`): not where a link's owner cannot be
    /// kept (fake super keeps owners in attributes, which no link can carry).
    pub link_owners: bool,
}

/// The outcome for a pair of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Same,
    Meta(MetaDiff),
    Write(Reason),
}

/// Decides from the two `lstat`s alone, or says that a look inside is needed (`None`): a
/// checksum, a link target, or xattrs that one side has.
pub fn quick(a: &Entry, b: &Entry, rules: &Rules) -> Option<Decision> {
    if a.kind != b.kind {
        return Some(Decision::Write(Reason::Type));
    }
    if a.kind == Kind::File {
        if a.size != b.size {
            return Some(Decision::Write(Reason::Size));
        }
        if a.mtime != b.mtime && !rules.checksum {
            return Some(Decision::Write(Reason::Mtime));
        }
    }
    if matches!(a.kind, Kind::CharDevice | Kind::BlockDevice) && a.rdev != b.rdev {
        return Some(Decision::Write(Reason::Device));
    }
    let look = (a.kind == Kind::File && rules.checksum)
        || a.kind == Kind::Symlink
        || (rules.xattrs && (a.xattrs || b.xattrs));
    if look {
        return None;
    }
    Some(meta_only(a, b, rules, false))
}

/// The metadata `b` lacks to match `a`, contents aside.
pub fn meta_only(a: &Entry, b: &Entry, rules: &Rules, xattr: bool) -> Decision {
    let m = MetaDiff {
        perm: a.kind != Kind::Symlink && a.perm != b.perm,
        owner: rules.owner
            && (a.kind != Kind::Symlink || rules.link_owners)
            && (a.uid != b.uid || a.gid != b.gid),
        mtime: a.mtime != b.mtime,
        xattr,
    };
    if m.any() {
        Decision::Meta(m)
    } else {
        Decision::Same
    }
}

/// What [`full`] may need to read inside an entry, on either side (a local entry, or one a peer
/// describes).
pub trait Inside {
    fn hash(&self) -> Result<blake3::Hash, Error>;
    fn link_target(&self) -> Result<PathBuf, Error>;
    fn xattrs(&self) -> Result<sys::Xattrs, Error>;
    /// The whole content, for the in-memory destination of the engine's tests.
    #[cfg(test)]
    fn content(&self) -> Result<Vec<u8>, Error> {
        let unsupported = std::io::Error::from(std::io::ErrorKind::Unsupported);
        Err(Error::io(
            crate::error::Op::Read,
            PathBuf::new(),
            unsupported,
        ))
    }
}

impl Inside for At<'_> {
    fn hash(&self) -> Result<blake3::Hash, Error> {
        hash_at(*self)
    }

    fn link_target(&self) -> Result<PathBuf, Error> {
        sys::read_link_at(*self)
    }

    fn xattrs(&self) -> Result<sys::Xattrs, Error> {
        sys::xattrs_of(*self)
    }
}

/// The full decision, looking inside the entries where [`quick`] could not decide.
pub fn full(
    a: &Entry,
    b: &Entry,
    sa: &dyn Inside,
    sb: &dyn Inside,
    rules: &Rules,
) -> Result<Decision, Error> {
    if let Some(d) = quick(a, b, rules) {
        return Ok(d);
    }
    let rewrite = match a.kind {
        Kind::File if rules.checksum && sa.hash()? != sb.hash()? => Some(Reason::Checksum),
        Kind::Symlink if sa.link_target()? != sb.link_target()? => Some(Reason::Target),
        _ => None,
    };
    if let Some(r) = rewrite {
        return Ok(Decision::Write(r));
    }
    let xattr = rules.xattrs && (a.xattrs || b.xattrs) && {
        let managed = |mut x: sys::Xattrs| {
            if !rules.system_xattrs {
                x.retain(|(n, _)| !crate::sys::xattrname::privileged(n));
            }
            x
        };
        managed(sa.xattrs()?) != managed(sb.xattrs()?)
    };
    Ok(meta_only(a, b, rules, xattr))
}

/// BLAKE3 of a file's content, read without following a symlink.
pub fn hash_at(at: At<'_>) -> Result<blake3::Hash, Error> {
    let file = sys::open_source(at)?;
    // A device or fifo in its place would be read without end.
    if sys::stat_fd(&file, at)?.kind != Kind::File {
        return Err(Error::rule(Op::Checksum, at.path(), Rule::NotRegular));
    }
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .map_err(|e| Error::io(Op::Checksum, at.path(), e))?;
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::MTime;
    use std::path::PathBuf;

    fn file(size: u64, sec: i64) -> Entry {
        Entry {
            rel: PathBuf::from("f"),
            kind: Kind::File,
            size,
            mtime: MTime { sec, nsec: 0 },
            perm: 0o644,
            uid: 0,
            gid: 0,
            dev: 1,
            ino: 1,
            nlink: 1,
            blocks: 8,
            rdev: 0,
            xattrs: false,
            extra: None,
        }
    }

    const PLAIN: Rules = Rules {
        checksum: false,
        owner: true,
        xattrs: true,
        system_xattrs: true,
        link_owners: true,
    };

    #[test]
    fn size_then_mtime_in_either_direction_rewrite() {
        assert_eq!(
            quick(&file(1, 5), &file(2, 5), &PLAIN),
            Some(Decision::Write(Reason::Size))
        );
        assert_eq!(
            quick(&file(1, 5), &file(1, 9), &PLAIN),
            Some(Decision::Write(Reason::Mtime))
        );
        assert_eq!(
            quick(&file(1, 9), &file(1, 5), &PLAIN),
            Some(Decision::Write(Reason::Mtime))
        );
        assert_eq!(
            quick(&file(1, 5), &file(1, 5), &PLAIN),
            Some(Decision::Same)
        );
    }

    #[test]
    fn mode_and_owner_are_metadata_only() {
        let mut b = file(1, 5);
        b.perm = 0o600;
        b.uid = 7;
        let Some(Decision::Meta(m)) = quick(&file(1, 5), &b, &PLAIN) else {
            panic!("expected a metadata update");
        };
        assert!(m.perm && m.owner && !m.mtime);
    }

    #[test]
    fn checksum_mode_looks_inside_and_treats_mtime_as_metadata() {
        let rules = Rules {
            checksum: true,
            ..PLAIN
        };
        assert_eq!(quick(&file(1, 5), &file(1, 9), &rules), None);
        assert_eq!(
            quick(&file(1, 5), &file(2, 9), &rules),
            Some(Decision::Write(Reason::Size))
        );
    }

    #[test]
    fn a_type_change_rewrites() {
        let mut b = file(1, 5);
        b.kind = Kind::Symlink;
        assert_eq!(
            quick(&file(1, 5), &b, &PLAIN),
            Some(Decision::Write(Reason::Type))
        );
    }
}
