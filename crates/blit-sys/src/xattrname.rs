//! Extended attribute names by who may set them: the one definition used by the platform layer
//! (which attributes a copy manages), fake super, and what a writer takes from a peer.

use std::ffi::OsStr;

/// Extended attribute names under this prefix are Blit's own (`fake super` keeps privileged
/// metadata there): never taken from a peer, which could otherwise forge them.
pub const RESERVED_PREFIX: &[u8] = b"user.blit.";

/// An extended attribute that only a privileged process may set: anything outside the `user.`
/// namespace but the POSIX ACLs, which a file's owner sets.
pub fn privileged(name: &OsStr) -> bool {
    let n = name.as_encoded_bytes();
    if n.starts_with(b"user.") {
        return false;
    }
    if n == b"system.posix_acl_access" || n == b"system.posix_acl_default" {
        return false;
    }
    n.starts_with(b"security.") || n.starts_with(b"trusted.") || n.starts_with(b"system.")
}
