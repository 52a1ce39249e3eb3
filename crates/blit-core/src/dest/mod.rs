//! Where a sync writes. The engine ([`crate::sync`]) decides; a [`Destination`] carries out
//! each decision on one tree. The trait is that list of operations, each on an entry named by
//! an open folder and a name (never by a path looked up again, so a folder swapped for a link
//! after it was opened cannot redirect a write):
//!
//! - [`LocalDest`]: a folder on this machine, through the platform layer ([`crate::sys`]);
//! - [`DryRun`]: any destination (and source) that looks but never changes anything, which is
//!   all a dry run is, so the engine never asks whether it is one;
//! - an in-memory tree (tests only), with which the engine's rules get unit tests.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::decide::Inside;
use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::source::{Listed, Source};
use crate::sys::{CopyOutcome, MetaOpts, Writing, Xattrs};

mod dryrun;
mod local;
#[cfg(test)]
pub(crate) mod memory;

pub use dryrun::DryRun;
pub use local::LocalDest;

/// The operations the engine performs on the tree it writes. Errors carry the operation and
/// the entry's path as the user knows it.
pub trait Destination: Sync {
    /// An open folder of the destination tree.
    type Dir: Folder + Send + Sync;

    /// New folders may be filled under a temporary name and named when complete (see
    /// `sync::Fresh`): where folder locks exist to tell them from a killed run's leftovers.
    const FRESH_FOLDERS: bool;

    /// Whether content written here is kept: a source that fetches ahead (a peer) is asked to
    /// only when it is.
    const KEEPS_CONTENT: bool = true;

    /// The root as the user named it, for messages.
    fn root_path(&self) -> &Path;
    /// The root's entry, `None` if nothing stands there. `follow`: a link at the root's name is
    /// followed (unless this destination never follows one there).
    fn root_entry(&self, follow: bool) -> Result<Option<Entry>>;
    /// Makes the root folder and any missing parents.
    fn make_root(&self) -> Result<()>;
    /// Opens the root folder; every later look at the root goes through this handle.
    fn open_root(&self) -> Result<Arc<Self::Dir>>;
    fn open_child(&self, dir: &Self::Dir, name: &OsStr) -> Result<Self::Dir>;
    /// The folder holding the entry `rel`, and its name there; for the root, the root's parent.
    fn parent_of(&self, rel: &Path) -> Result<(Arc<Self::Dir>, OsString)>;
    /// Where a folder's own metadata is set: the root as `.` of its own handle (where the
    /// platform allows), any other folder through its parent.
    fn finish_at(&self, rel: &Path) -> Result<(Arc<Self::Dir>, OsString)>;
    /// The path of an entry, for messages only.
    fn path(&self, dir: &Self::Dir, name: &OsStr) -> PathBuf;
    /// The user and group new entries get by default.
    fn creator(&self) -> (u32, u32);

    /// Lists a folder as [`Source::list`] does.
    fn list(
        &self,
        dir: &Self::Dir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed>;
    /// A folder's names, with their types where the listing gives them.
    fn read_names(&self, dir: &Self::Dir) -> Result<Vec<(OsString, Option<Kind>)>>;
    /// An entry as it is now (not followed if a link), named `rel` in the result.
    fn stat(&self, dir: &Self::Dir, name: &OsStr, rel: PathBuf) -> Result<Entry>;
    fn xattrs(&self, dir: &Self::Dir, name: &OsStr) -> Result<Xattrs>;
    /// Content hash, link target and xattrs of an entry, for [`crate::decide::full`].
    fn inside<'d>(&'d self, dir: &'d Self::Dir, name: &'d OsStr) -> Box<dyn Inside + 'd>;
    /// Whether the folder has a default ACL (which replaces the umask for what is made in it).
    fn has_default_acl(&self, dir: &Self::Dir, name: &OsStr) -> bool;

    /// Writes a new file from `src`'s entry `a` as `tmp` in `dir` (see [`Source::copy`]).
    #[allow(clippy::too_many_arguments)]
    fn write_file<S: Source>(
        &self,
        src: &S,
        sdir: &S::Dir,
        sname: &OsStr,
        a: &Entry,
        first: bool,
        dir: &Self::Dir,
        tmp: &OsStr,
        how: Writing<'_>,
    ) -> Result<CopyOutcome>;
    fn symlink(&self, dir: &Self::Dir, name: &OsStr, target: &Path, dir_link: bool) -> Result<()>;
    /// A device, fifo or socket (as far as the metadata options allow).
    fn make_special(&self, dir: &Self::Dir, name: &OsStr, a: &Entry, meta: MetaOpts) -> Result<()>;
    fn hard_link(&self, from: (&Self::Dir, &OsStr), to: (&Self::Dir, &OsStr)) -> Result<()>;
    fn mkdir(&self, dir: &Self::Dir, name: &OsStr) -> Result<()>;
    /// `move`: renames `src`'s entry here; `None` when it cannot be renamed here at all
    /// (another filesystem or machine): the entry is then copied.
    fn rename_from<S: Source>(
        &self,
        src: &S,
        sdir: &S::Dir,
        sname: &OsStr,
        dir: &Self::Dir,
        name: &OsStr,
    ) -> Option<std::io::Result<()>>;
    /// Renames within one folder, replacing what stands at `to`.
    fn rename(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> Result<()>;
    /// Names a folder made under a temporary name, refusing to replace anything.
    fn publish_dir(&self, dir: &Self::Dir, from: &OsStr, to: &OsStr) -> Result<()>;
    /// Locks a folder this run is filling; `false` where that is not possible.
    fn hold_dir(&self, dir: &Self::Dir) -> bool;
    /// Whether another run holds the folder's lock.
    fn dir_held(&self, dir: &Self::Dir) -> bool;
    fn unlink(&self, dir: &Self::Dir, name: &OsStr) -> Result<()>;
    /// Removes an empty folder; `false` when it still holds something.
    fn rmdir(&self, dir: &Self::Dir, name: &OsStr) -> Result<bool>;
    /// Sets mode, owner, times and xattrs (as far as `meta` says).
    fn apply_meta(
        &self,
        dir: &Self::Dir,
        name: &OsStr,
        e: &Entry,
        meta: MetaOpts,
        xattrs: Option<&Xattrs>,
    ) -> Result<()>;
    fn set_mtime(&self, dir: &Self::Dir, name: &OsStr, e: &Entry) -> Result<()>;
    fn chmod(&self, dir: &Self::Dir, name: &OsStr, perm: u32) -> Result<()>;
    fn fsync(&self, dir: &Self::Dir, name: &OsStr) -> Result<()>;
    fn fsync_dir(&self, dir: &Self::Dir) -> Result<()>;
}

/// The folder operations a tree walk needs (`tree::walk`).
pub trait Folder: Sized {
    /// Device and inode, or another identity that tells two folders apart.
    fn id(&self) -> Result<(u64, u64)>;
    /// The folder's parent, opened as its `..`.
    fn open_parent(&self) -> Result<Self>;
}
