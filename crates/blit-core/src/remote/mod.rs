//! Remote trees: a `blit-daemon` serves named folders (modules); the `blit` command reaches them
//! as `blit://HOST[:PORT]/MODULE/PATH`. The engine is the local one: on a pull it runs in the
//! client and reads through [`source::RemoteSource`]; on a push it runs in the daemon and reads
//! the client's tree the same way, while the client serves it ([`serve`]). docs/PROTOCOL.md
//! describes the design and the wire format.

pub mod budget;
mod chan;
pub mod client;
pub(crate) mod entries;
mod peer;
pub mod serve;
pub mod source;
pub mod url;
pub mod wire;
pub mod wirepath;

pub use client::Access;

#[cfg(target_os = "linux")]
pub mod admin;
#[cfg(target_os = "linux")]
mod beneath;
#[cfg(target_os = "linux")]
pub mod gate;
#[cfg(target_os = "linux")]
pub mod server;
#[cfg(any(target_os = "linux", target_os = "macos", windows))]
pub mod tls;
