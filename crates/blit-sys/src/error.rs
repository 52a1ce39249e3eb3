//! One error type for the library. Every error says which operation failed on which path, because
//! a user with a million files needs to know exactly which one and why; the cause is kept as the
//! `source` so callers can still inspect the OS error.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::names::escape;

/// The operation that failed, printed before the path (`open /a/b: ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Stat,
    Open,
    Read,
    ReadDir,
    Create,
    Write,
    Copy,
    Link,
    Symlink,
    Mkdir,
    Rename,
    Delete,
    Chmod,
    Chown,
    Utimes,
    Xattr,
    Sync,
    Checksum,
}

impl Op {
    const ALL: [Op; 18] = [
        Op::Stat,
        Op::Open,
        Op::Read,
        Op::ReadDir,
        Op::Create,
        Op::Write,
        Op::Copy,
        Op::Link,
        Op::Symlink,
        Op::Mkdir,
        Op::Rename,
        Op::Delete,
        Op::Chmod,
        Op::Chown,
        Op::Utimes,
        Op::Xattr,
        Op::Sync,
        Op::Checksum,
    ];

    /// The operation a peer named (as [`fmt::Display`] writes it); unknown names read as `copy`.
    pub fn from_name(name: &str) -> Op {
        Op::ALL
            .into_iter()
            .find(|op| op.to_string() == name)
            .unwrap_or(Op::Copy)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Op::Stat => "stat",
            Op::Open => "open",
            Op::Read => "read",
            Op::ReadDir => "read folder",
            Op::Create => "create",
            Op::Write => "write",
            Op::Copy => "copy",
            Op::Link => "link",
            Op::Symlink => "symlink",
            Op::Mkdir => "mkdir",
            Op::Rename => "rename",
            Op::Delete => "delete",
            Op::Chmod => "chmod",
            Op::Chown => "chown",
            Op::Utimes => "set times",
            Op::Xattr => "xattr",
            Op::Sync => "fsync",
            Op::Checksum => "checksum",
        };
        f.write_str(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OS call failed on a path.
    #[error("{op} {}: {source}", escape(.path))]
    Io {
        op: Op,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// One of Blit's rules left an entry as it was (nothing failed in the OS): what was being
    /// done, to which path, and which rule.
    #[error("{op} {}: {rule}", escape(.path))]
    Rule { op: Op, path: PathBuf, rule: Rule },
    /// The source changed while it was being read; the copy was discarded.
    #[error("copy {}: source changed while being copied", escape(.path))]
    Changed { path: PathBuf },
    /// The job was refused before anything was touched.
    #[error("{0}")]
    Refused(String),
    /// A filter pattern does not parse.
    #[error("bad pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    /// Cancelled by the user (Ctrl-C).
    #[error("interrupted")]
    Cancelled,
    /// A failure the other end of a remote run met and reported.
    #[error("{op} {}: {cause}", escape(.path))]
    Remote {
        op: String,
        path: PathBuf,
        cause: String,
    },
    /// Reaching `target` (a URL, as the user wrote it) failed, or the connection broke.
    #[error("{target}: {source}")]
    Network {
        target: String,
        #[source]
        source: io::Error,
    },
    /// The other end broke the protocol (a message that does not decode, a bound exceeded, an
    /// answer out of turn).
    #[error("{target}: {what}")]
    Protocol { target: String, what: String },
}

/// The rules by which Blit leaves an entry as it is rather than risk it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rule {
    /// Only regular files are hashed (a device or fifo would be read without end).
    #[error("not a regular file")]
    NotRegular,
    /// `move`: a source that changed after it was copied is not removed.
    #[error("changed during or after its copy; the source is kept")]
    ChangedAfterCopy,
    /// `--verify`: the copy read back differs from the source.
    #[error("written copy differs from the source (BLAKE3 mismatch)")]
    ChecksumMismatch,
    /// `copy` and `move` delete nothing, so a non-empty folder in the way of a file stays.
    #[error(
        "a non-empty folder stands where the source has a file; copy never deletes (use mirror)"
    )]
    CopyNeverDeletes,
    /// A folder in the way of a source entry still holds what must not be deleted.
    #[error("folder still holds excluded or unlisted entries")]
    HoldsExcluded,
    /// A folder was moved while the tree beneath it was walked.
    #[error("the folder was moved while its contents were walked")]
    MovedDuringWalk,
    /// The filesystem root has no folder around it to be reached through.
    #[error("the filesystem root has no parent folder")]
    NoParent,
    /// The admin verb `rm` never removes a module's own folder.
    #[error("will not remove the module's root")]
    ModuleRoot,
    /// An entry's extended attributes do not fit one message to the peer.
    #[error("its extended attributes are larger than one message carries")]
    XattrsTooLarge,
}

/// What kind of failure an [`Error`] is, for a caller deciding what to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Refused before anything changed (a guard, a bad argument, the daemon said no).
    Refused,
    /// A connection could not be made or broke.
    Network,
    /// The other end broke the protocol.
    Protocol,
    /// An operation on a path failed (see the error's op and path).
    Io,
    /// Stopped by the user.
    Cancelled,
    /// A rule of Blit's left an entry as it was ([`Rule`]).
    Rule,
}

impl Error {
    pub fn io(op: Op, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn rule(op: Op, path: impl Into<PathBuf>, rule: Rule) -> Self {
        Error::Rule {
            op,
            path: path.into(),
            rule,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Rule { .. } => ErrorKind::Rule,
            Error::Refused(_) | Error::Pattern { .. } => ErrorKind::Refused,
            Error::Network { .. } => ErrorKind::Network,
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Io { .. } | Error::Changed { .. } | Error::Remote { .. } => ErrorKind::Io,
        }
    }

    /// Whether trying again may succeed: a connection that broke or timed out, a file that
    /// changed while it was read. Not: a refusal, a protocol violation, a missing file or a
    /// denied permission, an interrupt.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Network { source, .. } | Error::Io { source, .. } => transient(source),
            Error::Changed { .. } => true,
            Error::Rule { rule, .. } => *rule == Rule::ChangedAfterCopy,
            _ => false,
        }
    }

    /// Name of the operation for reports (`"copy"` for a changed source).
    pub fn op_name(&self) -> String {
        match self {
            Error::Io { op, .. } | Error::Rule { op, .. } => op.to_string(),
            Error::Changed { .. } => "copy".into(),
            Error::Refused(_) | Error::Pattern { .. } => "refused".into(),
            Error::Cancelled => "cancel".into(),
            Error::Remote { op, .. } => op.clone(),
            Error::Network { .. } => "connect".into(),
            Error::Protocol { .. } => "protocol".into(),
        }
    }

    /// Path the error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. }
            | Error::Rule { path, .. }
            | Error::Changed { path }
            | Error::Remote { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The cause without the op and path, for structured output.
    pub fn cause(&self) -> String {
        match self {
            Error::Io { source, .. } => source.to_string(),
            Error::Rule { rule, .. } => rule.to_string(),
            Error::Changed { .. } => "source changed while being copied".into(),
            Error::Remote { cause, .. } => cause.clone(),
            Error::Network { source, .. } => source.to_string(),
            Error::Protocol { what, .. } => what.clone(),
            other => other.to_string(),
        }
    }
}

/// A failure of the moment (the network's, or a call cut short), not of the request itself.
fn transient(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::AddrNotAvailable
            | K::BrokenPipe
            | K::TimedOut
            | K::UnexpectedEof
            | K::Interrupted
            | K::WouldBlock
    )
}

/// Attaches an operation and path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, op: Op, path: &std::path::Path) -> Result<T, Error>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: Op, path: &std::path::Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for Result<T, rustix_errno::Errno> {
    fn at(self, op: Op, path: &std::path::Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}

#[cfg(unix)]
mod rustix_errno {
    pub use rustix::io::Errno;
}

#[cfg(not(unix))]
mod rustix_errno {
    /// Stand-in so the trait impl above compiles on platforms without rustix.
    #[derive(Debug)]
    pub struct Errno;
    impl From<Errno> for std::io::Error {
        fn from(_: Errno) -> Self {
            std::io::Error::other("os error")
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule's error names the operation, the path and the rule, is a kind of its own, and is
    /// worth retrying only where the rule is about a change in progress.
    #[test]
    fn a_rule_is_typed_and_says_what_it_kept() {
        let e = Error::rule(Op::Delete, "/d/x", Rule::CopyNeverDeletes);
        assert_eq!(e.kind(), ErrorKind::Rule);
        assert!(!e.retryable());
        assert_eq!(e.op_name(), "delete");
        assert_eq!(e.path(), Some(std::path::Path::new("/d/x")));
        assert!(
            e.to_string().starts_with("delete /d/x: a non-empty folder"),
            "{e}"
        );
        let moved = Error::rule(Op::Delete, "/s/f", Rule::ChangedAfterCopy);
        assert!(moved.retryable());
    }
}
