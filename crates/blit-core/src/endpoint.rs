//! Where a tree lives. Only local folders exist today; the remote protocol adds a variant here, and
//! the job dispatches on it, so the walk/plan/report stages stay shared between both.

use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A path on this machine (file or folder).
    Local(PathBuf),
}

impl Endpoint {
    /// Parses a command-line argument. Today every argument is a local path.
    pub fn parse(arg: &str) -> Self {
        Endpoint::Local(PathBuf::from(arg))
    }
}
