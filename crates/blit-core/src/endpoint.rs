//! Where a tree lives: a local path, or a module of a `blit-daemon` (`blit://HOST[:PORT]/MODULE/PATH`).
//! The job dispatches on the pair, so the walk/plan/report stages stay shared by all.

use std::path::PathBuf;

pub use crate::remote::url::RemoteUrl;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on this machine (file or folder).
    Local(PathBuf),
    Remote(RemoteUrl),
}

impl Endpoint {
    /// Parses a command-line argument: a `blit://` URL, or a local path.
    pub fn parse(arg: &str) -> Result<Self, String> {
        if let Some(url) = RemoteUrl::parse(arg) {
            return url.map(Endpoint::Remote);
        }
        Ok(Endpoint::Local(PathBuf::from(arg)))
    }
}
