//! A dry run: the same engine, over a destination and a source that look but change nothing.
//! What the run would create is remembered as planned, so the walk goes on into folders it
//! would have made (empty ones: everything in them is new) and reports each action as a real
//! run would.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Destination, Folder};
use crate::decide::Inside;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Result};
use crate::source::{Listed, Source};
use crate::sys::{At, CopyOutcome, MetaOpts, Method, Output, Writing, Xattrs};

/// Wraps a [`Destination`] or a [`Source`]; as either, it reads through and never writes.
pub struct DryRun<T> {
    inner: T,
    /// Folders the run would have made in existing ones (and the root, if it would be made), by
    /// their paths as messages show them.
    planned: Mutex<HashSet<PathBuf>>,
}

impl<T> DryRun<T> {
    pub fn new(inner: T) -> Self {
        DryRun {
            inner,
            planned: Mutex::default(),
        }
    }

    /// The wrapped destination or source, as it was.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn plan(&self, path: PathBuf) {
        self.planned.lock().unwrap().insert(path);
    }

    fn is_planned(&self, path: &Path) -> bool {
        self.planned.lock().unwrap().contains(path)
    }
}

/// A destination folder in a dry run: one that exists, or one the run would have made.
pub enum DryDir<D> {
    Real(Arc<D>),
    Planned(PathBuf),
}

impl<D: Folder> Folder for DryDir<D> {
    fn id(&self) -> Result<(u64, u64)> {
        match self {
            DryDir::Real(d) => d.id(),
            DryDir::Planned(_) => Ok((0, 0)),
        }
    }

    fn open_parent(&self) -> Result<Self> {
        match self {
            DryDir::Real(d) => d.open_parent().map(|p| DryDir::Real(Arc::new(p))),
            DryDir::Planned(p) => Ok(DryDir::Planned(
                p.parent().map(Path::to_path_buf).unwrap_or_default(),
            )),
        }
    }
}

fn not_there(path: PathBuf) -> Error {
    Error::io(Op::Stat, path, io::Error::from(io::ErrorKind::NotFound))
}

/// What a planned entry holds: nothing yet.
struct Nothing(PathBuf);

impl Inside for Nothing {
    fn hash(&self) -> Result<blake3::Hash> {
        Err(not_there(self.0.clone()))
    }

    fn link_target(&self) -> Result<PathBuf> {
        Err(not_there(self.0.clone()))
    }

    fn xattrs(&self) -> Result<Xattrs> {
        Ok(Xattrs::new())
    }
}

impl<D: Destination> DryRun<D> {
    fn wrap(&self, (dir, name): (Arc<D::Dir>, OsString)) -> (Arc<DryDir<D::Dir>>, OsString) {
        (Arc::new(DryDir::Real(dir)), name)
    }

    /// Where `rel` would be, in a folder the run would have made (which cannot be opened).
    fn planned_at(&self, rel: &Path) -> (Arc<DryDir<D::Dir>>, OsString) {
        let path = self.inner.root_path().join(rel);
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_os_string();
        (Arc::new(DryDir::Planned(parent)), name)
    }

    /// The folder holding `rel` as the inner destination `found` it, or, where a folder on the
    /// way does not exist, where it would be: the run would have made it.
    fn or_planned(
        &self,
        rel: &Path,
        found: Result<(Arc<D::Dir>, OsString)>,
    ) -> Result<(Arc<DryDir<D::Dir>>, OsString)> {
        match found {
            Ok(f) => Ok(self.wrap(f)),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(self.planned_at(rel))
            }
            Err(e) => Err(e),
        }
    }
}

impl<D: Destination> Destination for DryRun<D> {
    type Dir = DryDir<D::Dir>;

    const FRESH_FOLDERS: bool = false;
    const KEEPS_CONTENT: bool = false;

    fn root_path(&self) -> &Path {
        self.inner.root_path()
    }

    fn root_entry(&self, follow: bool) -> Result<Option<Entry>> {
        self.inner.root_entry(follow)
    }

    fn make_root(&self) -> Result<()> {
        self.plan(self.inner.root_path().to_path_buf());
        Ok(())
    }

    fn open_root(&self) -> Result<Arc<Self::Dir>> {
        let root = self.inner.root_path();
        if self.is_planned(root) {
            return Ok(Arc::new(DryDir::Planned(root.to_path_buf())));
        }
        self.inner.open_root().map(|d| Arc::new(DryDir::Real(d)))
    }

    fn open_child(&self, dir: &Self::Dir, name: &OsStr) -> Result<Self::Dir> {
        let path = self.path(dir, name);
        match dir {
            DryDir::Real(d) if !self.is_planned(&path) => {
                Ok(DryDir::Real(Arc::new(self.inner.open_child(d, name)?)))
            }
            _ => Ok(DryDir::Planned(path)),
        }
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<Self::Dir>, OsString)> {
        self.or_planned(rel, self.inner.parent_of(rel))
    }

    fn finish_at(&self, rel: &Path) -> Result<(Arc<Self::Dir>, OsString)> {
        if rel.as_os_str().is_empty() && self.is_planned(self.inner.root_path()) {
            let root = self.inner.root_path().to_path_buf();
            return Ok((Arc::new(DryDir::Planned(root)), ".".into()));
        }
        self.or_planned(rel, self.inner.finish_at(rel))
    }

    fn path(&self, dir: &Self::Dir, name: &OsStr) -> PathBuf {
        match dir {
            DryDir::Real(d) => self.inner.path(d, name),
            DryDir::Planned(p) => p.join(name),
        }
    }

    fn creator(&self) -> (u32, u32) {
        self.inner.creator()
    }

    fn list(
        &self,
        dir: &Self::Dir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed> {
        match dir {
            DryDir::Real(d) => self.inner.list(d, rel, keep, xattrs),
            DryDir::Planned(_) => Ok(Listed::default()),
        }
    }

    fn read_names(&self, dir: &Self::Dir) -> Result<Vec<(OsString, Option<Kind>)>> {
        match dir {
            DryDir::Real(d) => self.inner.read_names(d),
            DryDir::Planned(_) => Ok(Vec::new()),
        }
    }

    fn stat(&self, dir: &Self::Dir, name: &OsStr, rel: PathBuf) -> Result<Entry> {
        match dir {
            DryDir::Real(d) => self.inner.stat(d, name, rel),
            DryDir::Planned(p) => Err(not_there(p.join(name))),
        }
    }

    fn xattrs(&self, dir: &Self::Dir, name: &OsStr) -> Result<Xattrs> {
        match dir {
            DryDir::Real(d) => self.inner.xattrs(d, name),
            DryDir::Planned(_) => Ok(Xattrs::new()),
        }
    }

    fn inside<'d>(&'d self, dir: &'d Self::Dir, name: &'d OsStr) -> Box<dyn Inside + 'd> {
        match dir {
            DryDir::Real(d) => self.inner.inside(d, name),
            DryDir::Planned(p) => Box::new(Nothing(p.join(name))),
        }
    }

    fn has_default_acl(&self, dir: &Self::Dir, name: &OsStr) -> bool {
        match dir {
            DryDir::Real(d) => self.inner.has_default_acl(d, name),
            DryDir::Planned(_) => false,
        }
    }

    fn write_file<S: Source>(
        &self,
        _src: &S,
        _sdir: &S::Dir,
        _sname: &OsStr,
        a: &Entry,
        _first: bool,
        _dir: &Self::Dir,
        _tmp: &OsStr,
        _how: Writing<'_>,
    ) -> Result<CopyOutcome> {
        Ok(CopyOutcome::Done {
            bytes: a.size,
            method: Method::Planned,
            placed: true,
        })
    }

    fn symlink(&self, _: &Self::Dir, _: &OsStr, _: &Path, _: bool) -> Result<()> {
        Ok(())
    }

    fn make_special(&self, _: &Self::Dir, _: &OsStr, _: &Entry, _: MetaOpts) -> Result<()> {
        Ok(())
    }

    fn hard_link(&self, _: (&Self::Dir, &OsStr), _: (&Self::Dir, &OsStr)) -> Result<()> {
        Ok(())
    }

    /// Only a folder made in one that exists is remembered: everything beneath a planned folder
    /// is planned already, so what is held grows with the new subtrees' tops, not their size.
    fn mkdir(&self, dir: &Self::Dir, name: &OsStr) -> Result<()> {
        if let DryDir::Real(_) = dir {
            self.plan(self.path(dir, name));
        }
        Ok(())
    }

    fn rename_from<S: Source>(
        &self,
        _: &S,
        _: &S::Dir,
        _: &OsStr,
        _: &Self::Dir,
        _: &OsStr,
    ) -> Option<io::Result<()>> {
        None
    }

    fn rename(&self, _: &Self::Dir, _: &OsStr, _: &OsStr) -> Result<()> {
        Ok(())
    }

    fn publish_dir(&self, _: &Self::Dir, _: &OsStr, _: &OsStr) -> Result<()> {
        Ok(())
    }

    fn hold_dir(&self, _: &Self::Dir) -> bool {
        false
    }

    fn dir_held(&self, dir: &Self::Dir) -> bool {
        match dir {
            DryDir::Real(d) => self.inner.dir_held(d),
            DryDir::Planned(_) => false,
        }
    }

    fn unlink(&self, _: &Self::Dir, _: &OsStr) -> Result<()> {
        Ok(())
    }

    fn rmdir(&self, _: &Self::Dir, _: &OsStr) -> Result<bool> {
        Ok(true)
    }

    fn apply_meta(
        &self,
        _: &Self::Dir,
        _: &OsStr,
        _: &Entry,
        _: MetaOpts,
        _: Option<&Xattrs>,
    ) -> Result<()> {
        Ok(())
    }

    fn set_mtime(&self, _: &Self::Dir, _: &OsStr, _: &Entry) -> Result<()> {
        Ok(())
    }

    fn chmod(&self, _: &Self::Dir, _: &OsStr, _: u32) -> Result<()> {
        Ok(())
    }

    fn fsync(&self, _: &Self::Dir, _: &OsStr) -> Result<()> {
        Ok(())
    }

    fn fsync_dir(&self, _: &Self::Dir) -> Result<()> {
        Ok(())
    }
}

/// As a source, a dry run reads everything and removes nothing (`move` leaves its sources).
impl<S: Source> Source for DryRun<&S> {
    type Dir = S::Dir;

    const HINTS: bool = S::HINTS;

    fn root(&self) -> Result<Entry> {
        self.inner.root()
    }

    fn open_root(&self) -> Result<S::Dir> {
        self.inner.open_root()
    }

    fn open_child(&self, dir: &S::Dir, name: &OsStr) -> Result<S::Dir> {
        self.inner.open_child(dir, name)
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<S::Dir>, OsString)> {
        self.inner.parent_of(rel)
    }

    fn list(
        &self,
        dir: &S::Dir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed> {
        self.inner.list(dir, rel, keep, xattrs)
    }

    fn copy(
        &self,
        dir: &S::Dir,
        name: &OsStr,
        entry: &Entry,
        first: bool,
        out: Output<'_>,
    ) -> Result<CopyOutcome> {
        self.inner.copy(dir, name, entry, first, out)
    }

    fn inside<'s>(
        &'s self,
        dir: &'s S::Dir,
        name: &'s OsStr,
        entry: &'s Entry,
    ) -> Box<dyn Inside + 's> {
        self.inner.inside(dir, name, entry)
    }

    fn link_is_dir(&self, dir: &S::Dir, name: &OsStr, entry: &Entry) -> bool {
        self.inner.link_is_dir(dir, name, entry)
    }

    fn rename_into(&self, _: &S::Dir, _: &OsStr, _: At<'_>) -> Option<io::Result<()>> {
        None
    }

    fn stat(&self, dir: &S::Dir, name: &OsStr, rel: &Path) -> Result<Entry> {
        self.inner.stat(dir, name, rel)
    }

    fn remove(&self, _: &S::Dir, _: &OsStr) -> Result<()> {
        Ok(())
    }

    fn remove_dir(&self, _: &S::Dir, _: &OsStr) -> Result<bool> {
        Ok(true)
    }

    fn path(&self, dir: &S::Dir, name: &OsStr) -> PathBuf {
        self.inner.path(dir, name)
    }

    fn root_path(&self) -> PathBuf {
        self.inner.root_path()
    }

    fn resumes(&self) -> bool {
        self.inner.resumes()
    }

    fn prefetch(&self, dir: &S::Dir, files: &[&Entry]) {
        self.inner.prefetch(dir, files)
    }
}
