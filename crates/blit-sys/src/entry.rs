//! What the walk records about each entry: exactly the fields the planner compares and the
//! executor restores, taken from one `lstat`, so no second stat is needed per file.

use std::fs::Metadata;
use std::path::PathBuf;

/// The type of an entry; symlinks are never followed, so a link is its own kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "folder",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::CharDevice => "char device",
            Kind::BlockDevice => "block device",
            Kind::Socket => "socket",
        }
    }
}

/// Modification time to the nanosecond.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct MTime {
    pub sec: i64,
    pub nsec: u32,
}

/// Which version of a file a look at it saw. Two looks that agree on size, mtime and inode saw
/// the same file unchanged, as far as anything short of reading it can tell: a copy is held to
/// the version its listing saw, and a moved source is removed only if still at its copied
/// version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub size: u64,
    pub mtime: MTime,
    pub ino: u64,
}

/// One entry of a walked tree. `rel` is relative to the walked root; the root itself is `""`.
#[derive(Clone, Debug)]
pub struct Entry {
    pub rel: PathBuf,
    pub kind: Kind,
    pub size: u64,
    pub mtime: MTime,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`); on Windows the
    /// read-only, hidden and system attribute bits.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// Allocated 512-byte blocks, to tell sparse files.
    pub blocks: u64,
    /// Device number for device nodes.
    pub rdev: u64,
    /// Carries extended attributes (as far as the walk looked; `false` when it did not).
    pub xattrs: bool,
    /// What a peer sent along with an entry it describes, which a local tree would be asked for
    /// only when needed. `None` for local entries.
    pub extra: Option<std::sync::Arc<Extra>>,
}

/// The parts of a remote entry that cannot be read later through a descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// A symlink's target.
    pub link: Option<PathBuf>,
    /// Extended attributes, sorted by name (when the entry has any).
    pub xattrs: Option<crate::Xattrs>,
}

impl Entry {
    pub fn version(&self) -> Version {
        Version {
            size: self.size,
            mtime: self.mtime,
            ino: self.ino,
        }
    }

    /// The order of entries within one folder's listing, in which the source and destination
    /// listings are merged. Entries of one folder share their parent's path exactly, so raw
    /// byte order is name order; `Path`'s own ordering gives the same answer component by
    /// component, and on a no-op mirror of 50,000 files was a tenth of the daemon's time.
    pub fn listing_cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.rel
            .as_os_str()
            .as_encoded_bytes()
            .cmp(other.rel.as_os_str().as_encoded_bytes())
    }

    #[cfg(unix)]
    pub fn from_metadata(rel: PathBuf, md: &Metadata) -> Self {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else if ft.is_block_device() {
            Kind::BlockDevice
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        };
        Entry {
            rel,
            kind,
            size: md.size(),
            mtime: MTime {
                sec: md.mtime(),
                nsec: md.mtime_nsec() as u32,
            },
            perm: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            blocks: md.blocks(),
            rdev: md.rdev(),
            xattrs: false,
            extra: None,
        }
    }

    #[cfg(windows)]
    pub fn from_metadata(rel: PathBuf, md: &Metadata) -> Self {
        use std::os::windows::fs::MetadataExt;
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        };
        // FILETIME counts 100 ns ticks since 1601; Unix time starts 11,644,473,600 s later.
        let ticks = md.last_write_time() as i64 - 116_444_736_000_000_000;
        let mtime = MTime {
            sec: ticks.div_euclid(10_000_000),
            nsec: (ticks.rem_euclid(10_000_000) * 100) as u32,
        };
        Entry {
            rel,
            kind,
            size: if kind == Kind::File { md.len() } else { 0 },
            mtime,
            perm: md.file_attributes() & crate::KEPT_ATTRIBUTES,
            uid: 0,
            gid: 0,
            dev: 0,
            ino: 0,
            nlink: 1,
            blocks: md.len().div_ceil(512),
            rdev: 0,
            xattrs: false,
            extra: None,
        }
    }

    /// True when the file has fewer blocks allocated than its size needs: it has holes worth
    /// keeping.
    pub fn is_sparse(&self) -> bool {
        self.kind == Kind::File && self.blocks.saturating_mul(512) < self.size
    }
}
