//! Where a sync reads from. The engine ([`crate::sync`]) needs from its source only folder
//! listings, file contents, and the few looks inside an entry that a decision or a metadata
//! update takes; this trait is that list. A local tree answers through folder descriptors
//! ([`LocalSource`]); a tree on another machine answers through its peer (`remote`), so one
//! engine, with one set of rules and tests, serves local and remote runs alike. Where it writes
//! is a [`crate::dest::Destination`]: on a push, the daemon runs the engine into its own.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decide::Inside;
use crate::dirs::DirCache;
use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::sys::{self, At, CopyOutcome, CopyRequest, Dir, Output};
use crate::tempname;

/// One folder's names as the source lists them: each with its entry, or why it could not be
/// stat'ed; temporaries of an interrupted run (files, and folders still being filled) set
/// aside.
#[derive(Default)]
pub struct Listed {
    pub entries: Vec<(OsString, Result<Entry>)>,
    pub temps: Vec<OsString>,
    /// What holding a listing that came from a peer costs against the connection's memory
    /// budget; given back when the listing is dropped (nothing for a local one).
    pub charge: crate::budget::Charge,
}

pub trait Source: Sync {
    /// An open folder of the source tree.
    type Dir: Send + Sync;

    /// The root's entry (the root path itself is followed if it is a symlink).
    fn root(&self) -> Result<Entry>;
    /// The root folder.
    fn open_root(&self) -> Result<Self::Dir>;
    fn open_child(&self, dir: &Self::Dir, name: &OsStr) -> Result<Self::Dir>;
    /// The folder holding the entry `rel`, and its name there; for the root, the root's parent.
    fn parent_of(&self, rel: &Path) -> Result<(Arc<Self::Dir>, OsString)>;
    /// Lists a folder, leaving out the entries `keep(rel, is_dir)` refuses (they need no further
    /// look, and the engine does not ask again); `xattrs` asks whether each kept entry carries
    /// extended attributes.
    fn list(
        &self,
        dir: &Self::Dir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed>;
    /// Writes the file's content and metadata into `out`. `first` is the first attempt, when the
    /// listing's entry still stands for the file as it was seen.
    fn copy(
        &self,
        dir: &Self::Dir,
        name: &OsStr,
        entry: &Entry,
        first: bool,
        out: Output<'_>,
    ) -> Result<CopyOutcome>;
    /// Content hash, link target and xattrs, for [`crate::decide::full`].
    fn inside<'s>(
        &'s self,
        dir: &'s Self::Dir,
        name: &'s OsStr,
        entry: &'s Entry,
    ) -> Box<dyn Inside + 's>;
    /// Whether a symlink is a folder link (Windows).
    fn link_is_dir(&self, dir: &Self::Dir, name: &OsStr, entry: &Entry) -> bool;
    /// `move` by renaming into `to`; `None` when the source cannot be renamed there at all
    /// (another machine): the entry is then copied and released later.
    fn rename_into(&self, dir: &Self::Dir, name: &OsStr, to: At<'_>) -> Option<io::Result<()>>;
    /// An entry as it is now (not followed if a link), named `rel` in the result.
    fn stat(&self, dir: &Self::Dir, name: &OsStr, rel: &Path) -> Result<Entry>;
    /// `move`: removes a released source entry.
    fn remove(&self, dir: &Self::Dir, name: &OsStr) -> Result<()>;
    /// `move`: removes an emptied source folder; `false` when it still holds something.
    fn remove_dir(&self, dir: &Self::Dir, name: &OsStr) -> Result<bool>;
    /// How the entry is named in messages.
    fn path(&self, dir: &Self::Dir, name: &OsStr) -> PathBuf;
    /// How the root is named in messages.
    fn root_path(&self) -> PathBuf;
    /// Whether an interrupted file can be continued from what already arrived (`--resume`):
    /// worth it only where bytes are dear, across a network.
    fn resumes(&self) -> bool {
        false
    }

    /// The source wants [`Source::prefetch`] hints (each costs the engine a pass over the
    /// folder's listings).
    const HINTS: bool = false;

    /// The files of one folder the engine is about to copy: a remote source asks for all of them
    /// at once, so their data is on its way while the copies are queued, instead of one round
    /// trip after another.
    fn prefetch(&self, _dir: &Self::Dir, _files: &[&Entry]) {}
}

/// Files at least this large are received resumably with `--resume`, block by block of this
/// size.
pub const RESUME_BLOCK: u64 = 1 << 20;

/// A tree on this machine.
pub struct LocalSource {
    dirs: DirCache,
}

impl LocalSource {
    pub fn new(root: PathBuf) -> Self {
        LocalSource {
            dirs: DirCache::new(root),
        }
    }
}

/// Lists a local folder: one `fstatat` per name, plus an xattr-presence probe for kept entries.
/// Shared by both trees of a local run (the destination's listing is the same walk).
pub fn list_local(
    dir: &Dir,
    rel: &Path,
    keep: &dyn Fn(&Path, bool) -> bool,
    xattrs: bool,
) -> Result<Listed> {
    let names = dir.read_names()?;
    let mut out = Listed {
        entries: Vec::with_capacity(names.len()),
        temps: Vec::new(),
        charge: Default::default(),
    };
    for (name, hint) in names {
        if hint.is_some_and(|k| tempname::is_leftover(&name, k == Kind::Dir)) {
            out.temps.push(name);
            continue;
        }
        let at = At::new(dir, &name);
        // `rel.join(name)` would allocate, then grow: one allocation of the final size instead.
        let mut child = PathBuf::with_capacity(rel.as_os_str().len() + 1 + name.len());
        child.push(rel);
        child.push(&name);
        let entry = match sys::stat_at(at, child) {
            Ok(e) => e,
            Err(e) => {
                out.entries.push((name, Err(e)));
                continue;
            }
        };
        // Without a type from the listing, the stat tells.
        if hint.is_none() && tempname::is_leftover(&name, entry.kind == Kind::Dir) {
            out.temps.push(name);
            continue;
        }
        if !keep(&entry.rel, entry.kind == Kind::Dir) {
            continue;
        }
        let entry = with_xattr_probe(at, entry, xattrs);
        out.entries.push((name, entry));
    }
    Ok(out)
}

/// `entry` (of `at`), with whether it has xattrs when they are kept (`xattrs`): the walk's look
/// at one entry after its `fstatat`.
pub fn with_xattr_probe(at: At<'_>, entry: Entry, xattrs: bool) -> Result<Entry> {
    if !xattrs {
        return Ok(entry);
    }
    sys::has_xattrs(at).map(|has| Entry {
        xattrs: has,
        ..entry
    })
}

impl Source for LocalSource {
    type Dir = Dir;

    fn root(&self) -> Result<Entry> {
        let root = self.dirs.root();
        std::fs::metadata(root)
            .map(|md| Entry::from_metadata(PathBuf::new(), &md))
            .map_err(|e| crate::Error::io(crate::Op::Stat, root, e))
    }

    fn open_root(&self) -> Result<Dir> {
        Dir::open(self.dirs.root())
    }

    fn stat(&self, dir: &Dir, name: &OsStr, rel: &Path) -> Result<Entry> {
        sys::stat_at(At::new(dir, name), rel.to_path_buf())
    }

    fn open_child(&self, dir: &Dir, name: &OsStr) -> Result<Dir> {
        dir.open_child(name)
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        self.dirs.parent_of(rel)
    }

    fn list(
        &self,
        dir: &Dir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed> {
        list_local(dir, rel, keep, xattrs)
    }

    fn copy(
        &self,
        dir: &Dir,
        name: &OsStr,
        entry: &Entry,
        first: bool,
        out: Output<'_>,
    ) -> Result<CopyOutcome> {
        sys::copy_to_temp(&CopyRequest {
            src: At::new(dir, name),
            expected: first.then_some(entry),
            src_xattrs: entry.xattrs || !cfg!(unix),
            out,
        })
    }

    fn inside<'s>(&'s self, dir: &'s Dir, name: &'s OsStr, _: &'s Entry) -> Box<dyn Inside + 's> {
        Box::new(At::new(dir, name))
    }

    fn link_is_dir(&self, dir: &Dir, name: &OsStr, _: &Entry) -> bool {
        sys::link_is_dir(At::new(dir, name))
    }

    fn rename_into(&self, dir: &Dir, name: &OsStr, to: At<'_>) -> Option<io::Result<()>> {
        Some(sys::try_rename_at(At::new(dir, name), to))
    }

    fn remove(&self, dir: &Dir, name: &OsStr) -> Result<()> {
        sys::unlink_at(At::new(dir, name))
    }

    fn remove_dir(&self, dir: &Dir, name: &OsStr) -> Result<bool> {
        sys::rmdir_at(At::new(dir, name))
    }

    fn path(&self, dir: &Dir, name: &OsStr) -> PathBuf {
        dir.path().join(name)
    }

    fn root_path(&self) -> PathBuf {
        self.dirs.root().to_path_buf()
    }
}
