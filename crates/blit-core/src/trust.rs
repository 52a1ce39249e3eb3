//! What the side that writes a tree takes from a peer that describes it.
//!
//! A local run copies the user's own tree and keeps everything. Across the network the tree is
//! described by another program: a daemon writing a push into a module runs as root while the
//! client may be anyone who can reach it, and a root client pulling from a daemon writes what
//! the daemon says. Metadata that only a privileged user could create (an owner other than
//! oneself, setuid and setgid bits, device nodes, extended attributes outside the unprivileged
//! namespaces) is therefore taken from a peer only where the receiving side was told to trust
//! it: a module's `keep` setting, a client's `--trust-metadata`. Everything else about an entry
//! (content, names, times, ordinary permission bits, `user.` xattrs, POSIX ACLs) is kept as
//! always.
//!
//! This is the one definition of those rules; the engine and the sessions only carry a
//! [`Trust`].

use std::ffi::OsStr;

use crate::entry::{Entry, Kind};
use crate::sys::xattrname;

/// What a writer takes from a peer's description of an entry. The default trusts nothing
/// privileged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Owner and group as described (else the writer's own, as for a non-root copy).
    pub owner: bool,
    /// The setuid and setgid bits.
    pub setid: bool,
    /// Character and block devices.
    pub devices: bool,
    /// Extended attributes outside `user.` and the POSIX ACLs: `security.*` (SELinux labels,
    /// file capabilities), `trusted.*`, other `system.*`.
    pub system_xattrs: bool,
}

impl Trust {
    /// Everything as described: a local run, a system backup's module, `--trust-metadata`.
    pub const ALL: Trust = Trust {
        owner: true,
        setid: true,
        devices: true,
        system_xattrs: true,
    };

    /// Nothing privileged.
    pub const NONE: Trust = Trust {
        owner: false,
        setid: false,
        devices: false,
        system_xattrs: false,
    };

    /// The names a daemon's `keep` setting accepts, each with what it turns on.
    pub const KEEP_NAMES: [&'static str; 5] = ["owner", "setid", "devices", "system-xattrs", "all"];

    /// Adds one `keep` name; `false` for a name that is not one of [`Trust::KEEP_NAMES`].
    pub fn keep(&mut self, name: &str) -> bool {
        match name {
            "owner" => self.owner = true,
            "setid" => self.setid = true,
            "devices" => self.devices = true,
            "system-xattrs" => self.system_xattrs = true,
            "all" => *self = Trust::ALL,
            _ => return false,
        }
        true
    }

    /// Whether anything privileged is kept.
    pub fn any(&self) -> bool {
        *self != Trust::NONE
    }

    /// A peer's entry as this writer takes it: special bits it does not keep are cleared, and
    /// its extended attributes are those it keeps. `Err` (why, for the user) for an entry it
    /// refuses whole: a device node it does not make.
    pub fn admit(&self, mut e: Entry) -> Result<Entry, &'static str> {
        if !self.devices && matches!(e.kind, Kind::CharDevice | Kind::BlockDevice) {
            return Err(
                "device node refused: the receiving side does not take devices from \
                        its peer (a daemon's `keep = [\"devices\"]`, a client's \
                        --trust-metadata)",
            );
        }
        if !self.setid {
            e.perm &= !setid_bits(e.kind);
        }
        if let Some(extra) = &e.extra {
            if let Some(x) = &extra.xattrs {
                if x.iter().any(|(n, _)| !self.takes_xattr(n)) {
                    let mut extra = (**extra).clone();
                    if let Some(x) = &mut extra.xattrs {
                        x.retain(|(n, _)| self.takes_xattr(n));
                        e.xattrs = !x.is_empty();
                    }
                    e.extra = Some(std::sync::Arc::new(extra));
                }
            }
        }
        Ok(e)
    }

    /// Whether a peer's extended attribute of this name is taken.
    pub fn takes_xattr(&self, name: &OsStr) -> bool {
        let n = name.as_encoded_bytes();
        !n.starts_with(xattrname::RESERVED_PREFIX)
            && (self.system_xattrs || !xattrname::privileged(name))
    }

    /// Whether the writer manages (compares, sets, removes) the destination's extended attribute
    /// of this name. One it does not manage is left as it is: a `security.selinux` label the
    /// destination's kernel gave a file is neither removed nor counted as a difference.
    pub fn manages_xattr(&self, name: &OsStr) -> bool {
        self.system_xattrs || !xattrname::privileged(name)
    }
}

/// The special bits a writer without `setid` clears: setuid and setgid of anything but a
/// folder. A folder's setgid bit only passes its group on to what is made in it, and a folder's
/// setuid bit means nothing on Linux; both stay.
fn setid_bits(kind: Kind) -> u32 {
    if kind == Kind::Dir {
        0
    } else {
        0o6000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Extra, MTime};
    use std::ffi::OsString;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn entry(kind: Kind, perm: u32, xattrs: &[&str]) -> Entry {
        let x: Vec<(OsString, Vec<u8>)> = xattrs
            .iter()
            .map(|n| (OsString::from(n), b"v".to_vec()))
            .collect();
        Entry {
            rel: PathBuf::from("e"),
            kind,
            size: 0,
            mtime: MTime::default(),
            perm,
            uid: 0,
            gid: 0,
            dev: 1,
            ino: 2,
            nlink: 1,
            blocks: 0,
            rdev: 0x0803,
            xattrs: !x.is_empty(),
            extra: (!x.is_empty()).then(|| {
                Arc::new(Extra {
                    xattrs: Some(x),
                    ..Extra::default()
                })
            }),
        }
    }

    fn names(e: &Entry) -> Vec<String> {
        e.extra
            .as_ref()
            .and_then(|x| x.xattrs.as_ref())
            .map(|x| {
                x.iter()
                    .map(|(n, _)| n.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn nothing_privileged_is_taken_by_default() {
        let t = Trust::default();
        assert_eq!(t.admit(entry(Kind::File, 0o4755, &[])).unwrap().perm, 0o755);
        assert_eq!(t.admit(entry(Kind::File, 0o2711, &[])).unwrap().perm, 0o711);
        assert_eq!(
            t.admit(entry(Kind::File, 0o1777, &[])).unwrap().perm,
            0o1777
        );
        // A folder's setgid bit hands on its group, no privilege: kept.
        assert_eq!(t.admit(entry(Kind::Dir, 0o2775, &[])).unwrap().perm, 0o2775);
        assert!(t.admit(entry(Kind::BlockDevice, 0o666, &[])).is_err());
        assert!(t.admit(entry(Kind::CharDevice, 0o600, &[])).is_err());
        assert!(t.admit(entry(Kind::Fifo, 0o644, &[])).is_ok());
        let e = t
            .admit(entry(
                Kind::File,
                0o644,
                &[
                    "security.capability",
                    "trusted.x",
                    "system.nfs4_acl",
                    "system.posix_acl_access",
                    "user.blit.stat",
                    "user.color",
                ],
            ))
            .unwrap();
        assert_eq!(names(&e), ["system.posix_acl_access", "user.color"]);
        let e = t
            .admit(entry(Kind::File, 0o644, &["security.selinux"]))
            .unwrap();
        assert!(!e.xattrs && names(&e).is_empty());
    }

    #[test]
    fn kept_items_come_through_and_blits_own_names_never_do() {
        let t = Trust::ALL;
        assert_eq!(
            t.admit(entry(Kind::File, 0o6755, &[])).unwrap().perm,
            0o6755
        );
        assert!(t.admit(entry(Kind::BlockDevice, 0o660, &[])).is_ok());
        let e = t
            .admit(entry(
                Kind::File,
                0o644,
                &["security.capability", "user.blit.stat"],
            ))
            .unwrap();
        assert_eq!(names(&e), ["security.capability"]);
        let mut some = Trust::default();
        assert!(some.keep("setid") && some.keep("devices") && !some.keep("everything"));
        assert_eq!(
            some.admit(entry(Kind::File, 0o4755, &[])).unwrap().perm,
            0o4755
        );
        assert!(!some.manages_xattr(OsStr::new("security.selinux")));
        assert!(some.manages_xattr(OsStr::new("user.x")));
    }
}
