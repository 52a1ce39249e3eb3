//! A tree held in memory, as a source and as a destination, so the engine's rules can be tested
//! without a filesystem, with failures a test injects (a folder that cannot be listed), and with
//! every entry's state compared exactly afterwards. Names map to inodes, so hard links are real:
//! two names of one inode share content and metadata.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Destination, Folder};
use crate::decide::Inside;
use crate::entry::{Entry, Kind, MTime};
use crate::error::{Error, Op, Result};
use crate::source::{Listed, Source};
use crate::sys::{At, CopyOutcome, MetaOpts, Method, Output, Writing, Xattrs};
use crate::tempname;

/// The owner and group of what the tree makes.
pub const CREATOR: (u32, u32) = (1000, 1000);

/// One inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: MTime,
    pub data: Vec<u8>,
    pub target: PathBuf,
    pub xattrs: Xattrs,
    pub rdev: u64,
}

impl Node {
    fn new(kind: Kind, perm: u32) -> Node {
        Node {
            kind,
            perm,
            uid: CREATOR.0,
            gid: CREATOR.1,
            mtime: MTime {
                sec: 1_700_000_000,
                nsec: 0,
            },
            data: Vec::new(),
            target: PathBuf::new(),
            xattrs: Xattrs::new(),
            rdev: 0,
        }
    }
}

#[derive(Default)]
struct State {
    /// Every name, by its path relative to the root (the root is `""`), and its inode.
    names: BTreeMap<PathBuf, u64>,
    /// Inodes and how many names each has.
    inodes: HashMap<u64, (Node, u64)>,
    next: u64,
}

/// A folder of the tree: its path relative to the root, or (`outer`) the folder holding the
/// root, in which the root is the one entry.
#[derive(Clone, Debug)]
pub struct MemDir {
    rel: PathBuf,
    outer: bool,
}

impl MemDir {
    fn at(rel: PathBuf) -> MemDir {
        MemDir { rel, outer: false }
    }
}

impl Folder for MemDir {
    fn id(&self) -> Result<(u64, u64)> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.rel, self.outer).hash(&mut h);
        Ok((1, h.finish()))
    }

    fn open_parent(&self) -> Result<MemDir> {
        Ok(match self.rel.parent() {
            Some(p) => MemDir::at(p.to_path_buf()),
            None => MemDir {
                rel: PathBuf::new(),
                outer: true,
            },
        })
    }
}

pub struct MemTree {
    /// How messages name the root.
    root: PathBuf,
    state: Mutex<State>,
    /// Folders whose listing fails, as an unreadable folder's would.
    unreadable: Mutex<HashSet<PathBuf>>,
}

fn child(dir: &MemDir, name: &OsStr) -> PathBuf {
    if dir.outer || name == "." {
        dir.rel.clone()
    } else {
        dir.rel.join(name)
    }
}

impl MemTree {
    /// An empty tree with no root folder yet; `root` names it in messages.
    pub fn new(root: &str) -> MemTree {
        MemTree {
            root: PathBuf::from(root),
            state: Mutex::default(),
            unreadable: Mutex::default(),
        }
    }

    /// A tree whose root folder exists.
    pub fn with_root(root: &str) -> MemTree {
        let t = MemTree::new(root);
        t.add(Path::new(""), Node::new(Kind::Dir, 0o755)).unwrap();
        t
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn err(&self, op: Op, rel: &Path, kind: io::ErrorKind) -> Error {
        Error::io(op, self.root.join(rel), io::Error::from(kind))
    }

    /// Adds `node` at `rel`, whose folder must exist and whose name must be free.
    fn add(&self, rel: &Path, node: Node) -> Result<u64> {
        let mut st = self.state();
        if st.names.contains_key(rel) {
            return Err(self.err(Op::Create, rel, io::ErrorKind::AlreadyExists));
        }
        if let Some(parent) = rel.parent() {
            let is_dir = st
                .names
                .get(parent)
                .is_some_and(|i| st.inodes[i].0.kind == Kind::Dir);
            if !is_dir {
                return Err(self.err(Op::Create, rel, io::ErrorKind::NotFound));
            }
        }
        st.next += 1;
        let ino = st.next;
        st.inodes.insert(ino, (node, 1));
        st.names.insert(rel.to_path_buf(), ino);
        Ok(ino)
    }

    /// Sets up a folder (its parents must exist).
    pub fn dir(&self, rel: &str) -> &Self {
        self.add(Path::new(rel), Node::new(Kind::Dir, 0o755))
            .unwrap();
        self
    }

    /// Sets up a file.
    pub fn file(&self, rel: &str, data: &[u8]) -> &Self {
        let mut n = Node::new(Kind::File, 0o644);
        n.data = data.to_vec();
        self.add(Path::new(rel), n).unwrap();
        self
    }

    /// Sets up a symlink.
    pub fn symlink(&self, rel: &str, target: &str) -> &Self {
        let mut n = Node::new(Kind::Symlink, 0o777);
        n.target = target.into();
        self.add(Path::new(rel), n).unwrap();
        self
    }

    /// Gives the inode of `existing` the further name `new`.
    pub fn link(&self, existing: &str, new: &str) -> &Self {
        let mut st = self.state();
        let ino = st.names[Path::new(existing)];
        st.inodes.get_mut(&ino).unwrap().1 += 1;
        st.names.insert(new.into(), ino);
        self
    }

    /// Changes what is stored at `rel`.
    pub fn change(&self, rel: &str, f: impl FnOnce(&mut Node)) -> &Self {
        let mut st = self.state();
        let ino = st.names[Path::new(rel)];
        f(&mut st.inodes.get_mut(&ino).unwrap().0);
        self
    }

    /// Makes listing the folder `rel` fail.
    pub fn unreadable(&self, rel: &str) -> &Self {
        self.unreadable.lock().unwrap().insert(rel.into());
        self
    }

    /// Every name with what it holds and its inode number.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, (Node, u64)> {
        let st = self.state();
        st.names
            .iter()
            .map(|(p, i)| (p.clone(), (st.inodes[i].0.clone(), *i)))
            .collect()
    }

    /// Every name with what it holds: two trees with equal contents give equal contents.
    pub fn contents(&self) -> BTreeMap<PathBuf, Node> {
        self.snapshot()
            .into_iter()
            .map(|(p, (n, _))| (p, n))
            .collect()
    }

    fn entry(&self, rel: &Path, as_rel: PathBuf) -> Result<Entry> {
        let st = self.state();
        let Some(ino) = st.names.get(rel) else {
            return Err(self.err(Op::Stat, rel, io::ErrorKind::NotFound));
        };
        let (n, links) = &st.inodes[ino];
        Ok(Entry {
            rel: as_rel,
            kind: n.kind,
            size: if n.kind == Kind::File {
                n.data.len() as u64
            } else {
                0
            },
            mtime: n.mtime,
            perm: n.perm,
            uid: n.uid,
            gid: n.gid,
            dev: 1,
            ino: *ino,
            nlink: *links,
            blocks: (n.data.len() as u64).div_ceil(512),
            rdev: n.rdev,
            xattrs: !n.xattrs.is_empty(),
            extra: None,
        })
    }

    fn node(&self, rel: &Path) -> Result<Node> {
        let st = self.state();
        match st.names.get(rel) {
            Some(i) => Ok(st.inodes[i].0.clone()),
            None => Err(self.err(Op::Stat, rel, io::ErrorKind::NotFound)),
        }
    }

    fn update(&self, rel: &Path, f: impl FnOnce(&mut Node)) -> Result<()> {
        let mut st = self.state();
        let Some(ino) = st.names.get(rel).copied() else {
            return Err(self.err(Op::Chmod, rel, io::ErrorKind::NotFound));
        };
        f(&mut st.inodes.get_mut(&ino).unwrap().0);
        Ok(())
    }

    fn children(&self, dir: &MemDir) -> Vec<(OsString, Kind)> {
        let st = self.state();
        if dir.outer {
            let root = self.root.file_name().unwrap_or_default().to_os_string();
            return st
                .names
                .get(Path::new(""))
                .map(|i| (root, st.inodes[i].0.kind))
                .into_iter()
                .collect();
        }
        st.names
            .iter()
            .filter(|(p, _)| !p.as_os_str().is_empty() && p.parent() == Some(&dir.rel))
            .map(|(p, i)| (p.file_name().unwrap().to_os_string(), st.inodes[i].0.kind))
            .collect()
    }

    fn open(&self, rel: PathBuf) -> Result<MemDir> {
        match self.node(&rel)?.kind {
            Kind::Dir => Ok(MemDir::at(rel)),
            _ => Err(self.err(Op::Open, &rel, io::ErrorKind::NotADirectory)),
        }
    }

    fn listed(
        &self,
        dir: &MemDir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
    ) -> Result<Listed> {
        if self.unreadable.lock().unwrap().contains(&dir.rel) {
            return Err(self.err(Op::ReadDir, &dir.rel, io::ErrorKind::PermissionDenied));
        }
        let mut out = Listed::default();
        for (name, kind) in self.children(dir) {
            let is_dir = kind == Kind::Dir;
            if tempname::is_leftover(&name, is_dir) {
                out.temps.push(name);
                continue;
            }
            let entry_rel = rel.join(&name);
            if !keep(&entry_rel, is_dir) {
                continue;
            }
            let e = self.entry(&child(dir, &name), entry_rel);
            out.entries.push((name, e));
        }
        Ok(out)
    }

    fn unlink_rel(&self, rel: &Path) -> Result<()> {
        let mut st = self.state();
        let Some(ino) = st.names.get(rel).copied() else {
            return Err(self.err(Op::Delete, rel, io::ErrorKind::NotFound));
        };
        if st.inodes[&ino].0.kind == Kind::Dir {
            return Err(self.err(Op::Delete, rel, io::ErrorKind::IsADirectory));
        }
        st.names.remove(rel);
        let links = &mut st.inodes.get_mut(&ino).unwrap().1;
        *links -= 1;
        if *links == 0 {
            st.inodes.remove(&ino);
        }
        Ok(())
    }

    fn rmdir_rel(&self, rel: &Path) -> Result<bool> {
        if self.node(rel)?.kind != Kind::Dir {
            return Err(self.err(Op::Delete, rel, io::ErrorKind::NotADirectory));
        }
        if !self.children(&MemDir::at(rel.to_path_buf())).is_empty() {
            return Ok(false);
        }
        let mut st = self.state();
        let ino = st.names.remove(rel).unwrap();
        st.inodes.remove(&ino);
        Ok(true)
    }

    /// Renames `from` to `to`, with everything beneath a folder; what stands at `to` is
    /// replaced unless `replace` is false.
    fn rename_rel(&self, from: &Path, to: &Path, replace: bool) -> Result<()> {
        let moving = self.node(from)?;
        if let Ok(there) = self.node(to) {
            if !replace || there.kind == Kind::Dir || moving.kind == Kind::Dir {
                return Err(self.err(Op::Rename, to, io::ErrorKind::AlreadyExists));
            }
            self.unlink_rel(to)?;
        }
        let mut st = self.state();
        let beneath: Vec<PathBuf> = st
            .names
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in beneath {
            let ino = st.names.remove(&p).unwrap();
            let rest = p.strip_prefix(from).unwrap();
            let new = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
            st.names.insert(new, ino);
        }
        Ok(())
    }
}

/// What a decision reads inside one entry of the tree.
struct MemInside<'t> {
    tree: &'t MemTree,
    rel: PathBuf,
}

impl Inside for MemInside<'_> {
    fn hash(&self) -> Result<blake3::Hash> {
        Ok(blake3::hash(&self.tree.node(&self.rel)?.data))
    }

    fn link_target(&self) -> Result<PathBuf> {
        Ok(self.tree.node(&self.rel)?.target)
    }

    fn xattrs(&self) -> Result<Xattrs> {
        Ok(self.tree.node(&self.rel)?.xattrs)
    }

    fn content(&self) -> Result<Vec<u8>> {
        Ok(self.tree.node(&self.rel)?.data)
    }
}

impl Destination for MemTree {
    type Dir = MemDir;

    const FRESH_FOLDERS: bool = false;

    fn root_path(&self) -> &Path {
        &self.root
    }

    fn root_entry(&self, _follow: bool) -> Result<Option<Entry>> {
        match self.entry(Path::new(""), PathBuf::new()) {
            Ok(e) => Ok(Some(e)),
            Err(_) => Ok(None),
        }
    }

    fn make_root(&self) -> Result<()> {
        self.add(Path::new(""), Node::new(Kind::Dir, 0o755))
            .map(|_| ())
    }

    fn open_root(&self) -> Result<Arc<MemDir>> {
        self.open(PathBuf::new()).map(Arc::new)
    }

    fn open_child(&self, dir: &MemDir, name: &OsStr) -> Result<MemDir> {
        self.open(child(dir, name))
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<MemDir>, OsString)> {
        match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => Ok((
                Arc::new(self.open(parent.to_path_buf())?),
                name.to_os_string(),
            )),
            _ => {
                let outer = MemDir {
                    rel: PathBuf::new(),
                    outer: true,
                };
                let name = self.root.file_name().unwrap_or_default().to_os_string();
                Ok((Arc::new(outer), name))
            }
        }
    }

    fn finish_at(&self, rel: &Path) -> Result<(Arc<MemDir>, OsString)> {
        if rel.as_os_str().is_empty() {
            return Ok((Arc::new(MemDir::at(PathBuf::new())), ".".into()));
        }
        Destination::parent_of(self, rel)
    }

    fn path(&self, dir: &MemDir, name: &OsStr) -> PathBuf {
        self.root.join(child(dir, name))
    }

    fn creator(&self) -> (u32, u32) {
        CREATOR
    }

    fn list(
        &self,
        dir: &MemDir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        _xattrs: bool,
    ) -> Result<Listed> {
        self.listed(dir, rel, keep)
    }

    fn read_names(&self, dir: &MemDir) -> Result<Vec<(OsString, Option<Kind>)>> {
        Ok(self
            .children(dir)
            .into_iter()
            .map(|(n, k)| (n, Some(k)))
            .collect())
    }

    fn stat(&self, dir: &MemDir, name: &OsStr, rel: PathBuf) -> Result<Entry> {
        self.entry(&child(dir, name), rel)
    }

    fn xattrs(&self, dir: &MemDir, name: &OsStr) -> Result<Xattrs> {
        Ok(self.node(&child(dir, name))?.xattrs)
    }

    fn inside<'d>(&'d self, dir: &'d MemDir, name: &'d OsStr) -> Box<dyn Inside + 'd> {
        Box::new(MemInside {
            tree: self,
            rel: child(dir, name),
        })
    }

    fn has_default_acl(&self, _: &MemDir, _: &OsStr) -> bool {
        false
    }

    fn write_file<S: Source>(
        &self,
        src: &S,
        sdir: &S::Dir,
        sname: &OsStr,
        a: &Entry,
        _first: bool,
        dir: &MemDir,
        tmp: &OsStr,
        how: Writing<'_>,
    ) -> Result<CopyOutcome> {
        if how.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let inside = src.inside(sdir, sname, a);
        let mut n = Node::new(Kind::File, a.perm);
        n.data = inside.content()?;
        n.mtime = a.mtime;
        if how.meta.owner {
            (n.uid, n.gid) = (a.uid, a.gid);
        } else if let Some((u, g)) = how.default_owner {
            (n.uid, n.gid) = (u, g);
        }
        if how.meta.xattrs && a.xattrs {
            n.xattrs = inside.xattrs()?;
        }
        let bytes = n.data.len() as u64;
        let name = how.final_name.unwrap_or(tmp);
        self.add(&child(dir, name), n)?;
        (how.progress)(bytes);
        Ok(CopyOutcome::Done {
            bytes,
            method: Method::ReadWrite,
            placed: how.final_name.is_some(),
        })
    }

    fn symlink(&self, dir: &MemDir, name: &OsStr, target: &Path, _: bool) -> Result<()> {
        let mut n = Node::new(Kind::Symlink, 0o777);
        n.target = target.to_path_buf();
        self.add(&child(dir, name), n).map(|_| ())
    }

    fn make_special(&self, dir: &MemDir, name: &OsStr, a: &Entry, _: MetaOpts) -> Result<()> {
        let mut n = Node::new(a.kind, a.perm);
        n.rdev = a.rdev;
        self.add(&child(dir, name), n).map(|_| ())
    }

    fn hard_link(&self, from: (&MemDir, &OsStr), to: (&MemDir, &OsStr)) -> Result<()> {
        let (from, to) = (child(from.0, from.1), child(to.0, to.1));
        let mut st = self.state();
        if st.names.contains_key(&to) {
            return Err(self.err(Op::Link, &to, io::ErrorKind::AlreadyExists));
        }
        let Some(ino) = st.names.get(&from).copied() else {
            return Err(self.err(Op::Link, &from, io::ErrorKind::NotFound));
        };
        st.inodes.get_mut(&ino).unwrap().1 += 1;
        st.names.insert(to, ino);
        Ok(())
    }

    fn mkdir(&self, dir: &MemDir, name: &OsStr) -> Result<()> {
        self.add(&child(dir, name), Node::new(Kind::Dir, 0o755))
            .map(|_| ())
    }

    fn rename_from<S: Source>(
        &self,
        _: &S,
        _: &S::Dir,
        _: &OsStr,
        _: &MemDir,
        _: &OsStr,
    ) -> Option<io::Result<()>> {
        None
    }

    fn rename(&self, dir: &MemDir, from: &OsStr, to: &OsStr) -> Result<()> {
        self.rename_rel(&child(dir, from), &child(dir, to), true)
    }

    fn publish_dir(&self, dir: &MemDir, from: &OsStr, to: &OsStr) -> Result<()> {
        self.rename_rel(&child(dir, from), &child(dir, to), false)
    }

    fn hold_dir(&self, _: &MemDir) -> bool {
        false
    }

    fn dir_held(&self, _: &MemDir) -> bool {
        false
    }

    fn unlink(&self, dir: &MemDir, name: &OsStr) -> Result<()> {
        self.unlink_rel(&child(dir, name))
    }

    fn rmdir(&self, dir: &MemDir, name: &OsStr) -> Result<bool> {
        self.rmdir_rel(&child(dir, name))
    }

    fn apply_meta(
        &self,
        dir: &MemDir,
        name: &OsStr,
        e: &Entry,
        meta: MetaOpts,
        xattrs: Option<&Xattrs>,
    ) -> Result<()> {
        self.update(&child(dir, name), |n| {
            if n.kind != Kind::Symlink {
                n.perm = e.perm;
            }
            n.mtime = e.mtime;
            if meta.owner {
                (n.uid, n.gid) = (e.uid, e.gid);
            }
            if let Some(x) = xattrs {
                n.xattrs = x.clone();
            }
        })
    }

    fn set_mtime(&self, dir: &MemDir, name: &OsStr, e: &Entry) -> Result<()> {
        self.update(&child(dir, name), |n| n.mtime = e.mtime)
    }

    fn chmod(&self, dir: &MemDir, name: &OsStr, perm: u32) -> Result<()> {
        self.update(&child(dir, name), |n| n.perm = perm)
    }

    fn fsync(&self, dir: &MemDir, name: &OsStr) -> Result<()> {
        self.node(&child(dir, name)).map(|_| ())
    }

    fn fsync_dir(&self, _: &MemDir) -> Result<()> {
        Ok(())
    }
}

impl Source for MemTree {
    type Dir = MemDir;

    fn root(&self) -> Result<Entry> {
        self.entry(Path::new(""), PathBuf::new())
    }

    fn open_root(&self) -> Result<MemDir> {
        self.open(PathBuf::new())
    }

    fn open_child(&self, dir: &MemDir, name: &OsStr) -> Result<MemDir> {
        self.open(child(dir, name))
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<MemDir>, OsString)> {
        Destination::parent_of(self, rel)
    }

    fn list(
        &self,
        dir: &MemDir,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        _xattrs: bool,
    ) -> Result<Listed> {
        self.listed(dir, rel, keep)
    }

    /// A tree in memory feeds only a destination in memory, which reads it through
    /// [`Inside::content`].
    fn copy(
        &self,
        dir: &MemDir,
        name: &OsStr,
        _: &Entry,
        _: bool,
        _: Output<'_>,
    ) -> Result<CopyOutcome> {
        Err(self.err(Op::Read, &child(dir, name), io::ErrorKind::Unsupported))
    }

    fn inside<'s>(
        &'s self,
        dir: &'s MemDir,
        name: &'s OsStr,
        _: &'s Entry,
    ) -> Box<dyn Inside + 's> {
        Destination::inside(self, dir, name)
    }

    fn link_is_dir(&self, _: &MemDir, _: &OsStr, _: &Entry) -> bool {
        false
    }

    fn rename_into(&self, _: &MemDir, _: &OsStr, _: At<'_>) -> Option<io::Result<()>> {
        None
    }

    fn stat(&self, dir: &MemDir, name: &OsStr, rel: &Path) -> Result<Entry> {
        self.entry(&child(dir, name), rel.to_path_buf())
    }

    fn remove(&self, dir: &MemDir, name: &OsStr) -> Result<()> {
        self.unlink_rel(&child(dir, name))
    }

    fn remove_dir(&self, dir: &MemDir, name: &OsStr) -> Result<bool> {
        self.rmdir_rel(&child(dir, name))
    }

    fn path(&self, dir: &MemDir, name: &OsStr) -> PathBuf {
        self.root.join(child(dir, name))
    }

    fn root_path(&self) -> PathBuf {
        self.root.clone()
    }
}
