//! A destination folder on this machine: each operation is one platform call on an open folder.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Destination;
use crate::decide::Inside;
use crate::dirs::DirCache;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Result};
use crate::source::{Listed, Source};
use crate::sys::{self, At, CopyOutcome, Dir, FastPaths, MetaOpts, Output, Writing, Xattrs};

pub struct LocalDest {
    dirs: DirCache,
    /// Never follow a symlink at the root's own name (a daemon's push: the name was checked
    /// beneath the module, and another session could swap a link in).
    root_nofollow: bool,
    /// The fast copy paths this run's filesystems refused, learnt once.
    fast: FastPaths,
}

impl LocalDest {
    pub fn new(root: PathBuf) -> Self {
        LocalDest {
            dirs: DirCache::new(root),
            root_nofollow: false,
            fast: FastPaths::default(),
        }
    }

    /// Never follows a link standing at the root's name.
    pub fn root_nofollow(mut self) -> Self {
        self.root_nofollow = true;
        self
    }
}

impl Destination for LocalDest {
    type Dir = Dir;

    const FRESH_FOLDERS: bool = sys::FRESH_FOLDERS;

    fn root_path(&self) -> &Path {
        self.dirs.root()
    }

    fn root_entry(&self, follow: bool) -> Result<Option<Entry>> {
        let root = self.dirs.root();
        let looked = if follow && !self.root_nofollow {
            std::fs::metadata(root)
        } else {
            std::fs::symlink_metadata(root)
        };
        match looked {
            Ok(md) => Ok(Some(Entry::from_metadata(PathBuf::new(), &md))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(Op::Stat, root, e)),
        }
    }

    fn make_root(&self) -> Result<()> {
        let root = self.dirs.root();
        std::fs::create_dir_all(root).map_err(|e| Error::io(Op::Mkdir, root, e))
    }

    fn open_root(&self) -> Result<Arc<Dir>> {
        let root = self.dirs.root();
        let d = Arc::new(if self.root_nofollow {
            Dir::open_nofollow(root)?
        } else {
            Dir::open(root)?
        });
        self.dirs.pin_root(Arc::clone(&d));
        Ok(d)
    }

    fn open_child(&self, dir: &Dir, name: &OsStr) -> Result<Dir> {
        dir.open_child(name)
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        self.dirs.parent_of(rel)
    }

    fn finish_at(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        self.dirs.finish_at(rel)
    }

    fn path(&self, dir: &Dir, name: &OsStr) -> PathBuf {
        dir.path().join(name)
    }

    fn creator(&self) -> (u32, u32) {
        sys::creator()
    }

    fn list(
        &self,
        dir: &Dir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed> {
        crate::source::list_local(dir, rel, keep, xattrs)
    }

    fn read_names(&self, dir: &Dir) -> Result<Vec<(OsString, Option<Kind>)>> {
        dir.read_names()
    }

    fn stat(&self, dir: &Dir, name: &OsStr, rel: PathBuf) -> Result<Entry> {
        sys::stat_at(At::new(dir, name), rel)
    }

    fn xattrs(&self, dir: &Dir, name: &OsStr) -> Result<Xattrs> {
        sys::xattrs_of(At::new(dir, name))
    }

    fn inside<'d>(&'d self, dir: &'d Dir, name: &'d OsStr) -> Box<dyn Inside + 'd> {
        Box::new(At::new(dir, name))
    }

    fn has_default_acl(&self, dir: &Dir, name: &OsStr) -> bool {
        sys::has_default_acl(At::new(dir, name))
    }

    fn write_file<S: Source>(
        &self,
        src: &S,
        sdir: &S::Dir,
        sname: &OsStr,
        a: &Entry,
        first: bool,
        dir: &Dir,
        tmp: &OsStr,
        how: Writing<'_>,
    ) -> Result<CopyOutcome> {
        let out = Output {
            tmp: At::new(dir, tmp),
            fast: &self.fast,
            how,
        };
        src.copy(sdir, sname, a, first, out)
    }

    fn symlink(&self, dir: &Dir, name: &OsStr, target: &Path, dir_link: bool) -> Result<()> {
        sys::symlink_at(target, At::new(dir, name), dir_link)
    }

    fn make_special(&self, dir: &Dir, name: &OsStr, a: &Entry, meta: MetaOpts) -> Result<()> {
        sys::make_special_at(At::new(dir, name), a, meta)
    }

    fn hard_link(&self, from: (&Dir, &OsStr), to: (&Dir, &OsStr)) -> Result<()> {
        sys::hard_link_at(At::new(from.0, from.1), At::new(to.0, to.1))
    }

    fn mkdir(&self, dir: &Dir, name: &OsStr) -> Result<()> {
        sys::mkdir_at(At::new(dir, name))
    }

    fn rename_from<S: Source>(
        &self,
        src: &S,
        sdir: &S::Dir,
        sname: &OsStr,
        dir: &Dir,
        name: &OsStr,
    ) -> Option<std::io::Result<()>> {
        src.rename_into(sdir, sname, At::new(dir, name))
    }

    fn rename(&self, dir: &Dir, from: &OsStr, to: &OsStr) -> Result<()> {
        sys::rename_at(At::new(dir, from), At::new(dir, to))
    }

    fn publish_dir(&self, dir: &Dir, from: &OsStr, to: &OsStr) -> Result<()> {
        sys::publish_dir(At::new(dir, from), At::new(dir, to))
    }

    fn hold_dir(&self, dir: &Dir) -> bool {
        sys::hold_dir(dir)
    }

    fn dir_held(&self, dir: &Dir) -> bool {
        sys::dir_held(dir)
    }

    fn unlink(&self, dir: &Dir, name: &OsStr) -> Result<()> {
        sys::unlink_at(At::new(dir, name))
    }

    fn rmdir(&self, dir: &Dir, name: &OsStr) -> Result<bool> {
        sys::rmdir_at(At::new(dir, name))
    }

    fn apply_meta(
        &self,
        dir: &Dir,
        name: &OsStr,
        e: &Entry,
        meta: MetaOpts,
        xattrs: Option<&Xattrs>,
    ) -> Result<()> {
        sys::apply_meta_at(At::new(dir, name), e, meta, xattrs)
    }

    fn set_mtime(&self, dir: &Dir, name: &OsStr, e: &Entry) -> Result<()> {
        sys::set_mtime_at(At::new(dir, name), e)
    }

    fn chmod(&self, dir: &Dir, name: &OsStr, perm: u32) -> Result<()> {
        sys::chmod_at(At::new(dir, name), perm)
    }

    fn fsync(&self, dir: &Dir, name: &OsStr) -> Result<()> {
        sys::fsync_at(At::new(dir, name))
    }

    fn fsync_dir(&self, dir: &Dir) -> Result<()> {
        sys::fsync_dir(dir)
    }
}
