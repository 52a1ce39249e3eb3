//! Names and relative paths as the wire carries them: bytes, with `/` between components.
//!
//! On Unix a name is any bytes and crosses unchanged. Windows names are UTF-16; they cross as
//! UTF-8, so a Windows name that is not valid Unicode (a lone surrogate) cannot be sent and is
//! refused by name rather than altered, and a name from a Unix peer that is not UTF-8 cannot be
//! made on Windows.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

#[cfg(not(unix))]
fn not_unicode(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} is not valid Unicode, which names crossing to or from Windows must be"),
    )
}

/// Whether `raw` is one plain name (any bytes but `/` and NUL, not empty, `.` or `..`): the one
/// check every name a peer sends passes before it is used.
pub fn plain(raw: &[u8]) -> io::Result<()> {
    let bad =
        raw.is_empty() || raw == b"." || raw == b".." || raw.contains(&b'/') || raw.contains(&0);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the peer sent an invalid name",
        ));
    }
    Ok(())
}

/// Whether a peer's entry bears a name Blit reserves for its temporaries (a `.tmp` file, a
/// `.dir` folder): an honest peer never sends one (its listings set them aside), and one made
/// here would be taken for this side's own temporary, which `--resume` writes into.
pub fn reserved(raw: &[u8], is_dir: bool) -> bool {
    std::str::from_utf8(raw).is_ok_and(|s| crate::tempname::is_leftover(OsStr::new(s), is_dir))
}

/// A local name for the wire.
pub fn to_wire(name: &OsStr) -> io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(name.as_bytes().to_vec())
    }
    #[cfg(not(unix))]
    {
        name.to_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| not_unicode("the name"))
    }
}

/// A name from the wire, as a local name.
pub fn from_wire(raw: Vec<u8>) -> io::Result<OsString> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(OsString::from_vec(raw))
    }
    #[cfg(not(unix))]
    {
        let s = String::from_utf8(raw).map_err(|_| not_unicode("a name the peer sent"))?;
        windows_name(&s)?;
        Ok(OsString::from(s))
    }
}

/// An extended attribute's name from the wire: not a path component, so characters a Windows
/// file name may not hold (`:` in Samba's stream names) are no reason to refuse it.
pub fn attr_from_wire(raw: Vec<u8>) -> io::Result<OsString> {
    #[cfg(unix)]
    {
        from_wire(raw)
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(raw)
            .map(OsString::from)
            .map_err(|_| not_unicode("an attribute name the peer sent"))
    }
}

/// A name Windows can hold as one component. `\` would be a separator here (a Unix peer's
/// `..\x` would climb out of the destination) and `:` names a drive or a stream.
#[cfg(not(unix))]
fn windows_name(s: &str) -> io::Result<()> {
    if s.contains(['\\', ':', '<', '>', '"', '|', '?', '*']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the name {s:?} cannot be made on Windows"),
        ));
    }
    Ok(())
}

/// [`from_wire`], or on failure the error and the name with invalid bytes replaced, to report
/// the entry under.
pub fn from_wire_or_lossy(raw: Vec<u8>) -> Result<OsString, (io::Error, OsString)> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Ok(OsString::from_vec(raw))
    }
    #[cfg(not(unix))]
    {
        let s = String::from_utf8(raw).map_err(|e| {
            let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
            (not_unicode("a name the peer sent"), OsString::from(shown))
        })?;
        match windows_name(&s) {
            Ok(()) => Ok(OsString::from(s)),
            Err(e) => Err((e, OsString::from(s.replace(['\\', ':'], "_")))),
        }
    }
}

/// A name from the wire for messages only: never fails (invalid bytes are shown replaced).
pub fn shown(raw: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(OsStr::from_bytes(raw))
    }
    #[cfg(not(unix))]
    {
        rel_from_wire_lossy(raw)
    }
}

/// A symlink's target for the wire, with `/` as separator (a Windows target's `\` become `/`).
pub fn link_to_wire(target: &Path) -> io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(target.as_os_str().as_bytes().to_vec())
    }
    #[cfg(not(unix))]
    {
        target
            .to_str()
            .map(|s| s.replace('\\', "/").into_bytes())
            .ok_or_else(|| not_unicode("the link target"))
    }
}

/// A symlink's target from the wire, as a local path.
pub fn link_from_wire(raw: Vec<u8>) -> io::Result<PathBuf> {
    #[cfg(unix)]
    {
        Ok(PathBuf::from(from_wire(raw)?))
    }
    #[cfg(not(unix))]
    {
        let s = String::from_utf8(raw).map_err(|_| not_unicode("a link target the peer sent"))?;
        Ok(PathBuf::from(s.replace('/', "\\")))
    }
}

/// A relative path for the wire: its components joined by `/`.
pub fn rel_to_wire(rel: &Path) -> io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(rel.as_os_str().as_bytes().to_vec())
    }
    #[cfg(not(unix))]
    {
        let mut out = Vec::new();
        for c in rel.components() {
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend(to_wire(c.as_os_str())?);
        }
        Ok(out)
    }
}

/// A path a peer names beneath the tree it reaches, as a local path: `/`-separated plain names
/// (see [`plain`]), with empty components and `.` skipped. The one check of every such path:
/// one that starts at a root or climbs with `..` is refused, never cleaned up.
pub fn rel_from_peer(raw: &[u8]) -> io::Result<PathBuf> {
    let refused = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why.to_string());
    if raw.first() == Some(&b'/') {
        return Err(refused("the path must be relative (it starts at a root)"));
    }
    let mut out = PathBuf::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(refused("`..` is not allowed in a path")),
            name => {
                plain(name)?;
                out.push(from_wire(name.to_vec())?);
            }
        }
    }
    Ok(out)
}

/// A relative path from the wire, checked already (or only shown), as a local path.
pub fn rel_from_wire(raw: &[u8]) -> io::Result<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(OsStr::from_bytes(raw)))
    }
    #[cfg(not(unix))]
    {
        let s = std::str::from_utf8(raw).map_err(|_| not_unicode("a path the peer sent"))?;
        Ok(s.split('/').filter(|c| !c.is_empty()).collect())
    }
}

#[cfg(not(unix))]
fn rel_from_wire_lossy(raw: &[u8]) -> PathBuf {
    String::from_utf8_lossy(raw)
        .split('/')
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_path_stays_beneath_its_tree() {
        assert_eq!(rel_from_peer(b"a/./b//c/").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(rel_from_peer(b"").unwrap(), PathBuf::new());
        for bad in [&b"a/../b"[..], b"..", b"/etc", b"a\0b", b"a/b\0"] {
            assert!(rel_from_peer(bad).is_err(), "{bad:?}");
        }
    }
}
