//! Where a tree lives: a local path, or a module of a `blit-daemon` (`blit://HOST[:PORT]/MODULE/PATH`).
//! The job dispatches on the pair, so the walk/plan/report stages stay shared by all.

use std::path::PathBuf;

#[cfg(unix)]
pub use crate::remote::url::RemoteUrl;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on this machine (file or folder).
    Local(PathBuf),
    #[cfg(unix)]
    Remote(RemoteUrl),
}

impl Endpoint {
    /// Parses a command-line argument: a `blit://` URL, or a local path.
    pub fn parse(arg: &str) -> Result<Self, String> {
        #[cfg(unix)]
        if let Some(url) = RemoteUrl::parse(arg) {
            return url.map(Endpoint::Remote);
        }
        #[cfg(not(unix))]
        if arg.starts_with("blit://") {
            return Err(format!(
                "{arg}: remote endpoints are not supported in this build"
            ));
        }
        Ok(Endpoint::Local(PathBuf::from(arg)))
    }
}
