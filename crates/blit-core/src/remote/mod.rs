//! Remote trees: a `blit-daemon` serves named folders (modules); the `blit` command reaches them
//! as `blit://HOST[:PORT]/MODULE/PATH`. The engine is the local one: on a pull it runs in the
//! client and reads through `source::RemoteSource`; on a push it runs in the daemon and reads
//! the client's tree the same way, while the client serves it (`serve`). docs/PROTOCOL.md
//! describes the design and the wire format. Everything here but the URL syntax is the `remote`
//! cargo feature (on by default): a build without it copies locally only and links no TLS.

pub mod url;

#[cfg(feature = "remote")]
mod chan;
#[cfg(feature = "remote")]
pub mod client;
#[cfg(feature = "remote")]
pub(crate) mod entries;
#[cfg(feature = "remote")]
// Parts serve only the daemon, which runs on Linux.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod peer;
#[cfg(feature = "remote")]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) mod serve;
#[cfg(feature = "remote")]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) mod source;
#[cfg(feature = "remote")]
pub mod wire;
#[cfg(feature = "remote")]
pub(crate) mod wirepath;

#[cfg(feature = "remote")]
pub use client::Access;

#[cfg(all(feature = "remote", target_os = "linux"))]
pub mod admin;
#[cfg(all(feature = "remote", target_os = "linux"))]
mod beneath;
#[cfg(all(feature = "remote", target_os = "linux"))]
pub mod gate;
#[cfg(all(feature = "remote", target_os = "linux"))]
pub mod server;
#[cfg(all(
    feature = "remote",
    any(target_os = "linux", target_os = "macos", windows)
))]
pub mod tls;
