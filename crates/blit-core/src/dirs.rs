//! Open folder handles of one tree, found by relative path. The end of a run (hard links,
//! deletions, folder metadata, releasing moved sources) reaches entries long after their folder
//! was walked; the handle is opened again once, component by component from the root without
//! following links, and shared by all workers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Op, Result};
use crate::sys::Dir;

/// Past this many cached handles the cache starts over, so a tree with a million folders does
/// not hold a million descriptors. Handles in use stay valid (they are reference-counted).
const MAX_CACHED: usize = 4096;

pub struct DirCache {
    root: PathBuf,
    /// The root's handle as the run opened it, kept through every clearing of `map`: the root is
    /// never looked up by path again.
    pinned: OnceLock<Arc<Dir>>,
    map: Mutex<HashMap<PathBuf, Arc<Dir>>>,
    /// The folder holding the root itself (used when the root is a file).
    outer: OnceLock<Arc<Dir>>,
}

impl DirCache {
    pub fn new(root: PathBuf) -> Self {
        DirCache {
            root,
            pinned: OnceLock::new(),
            map: Mutex::new(HashMap::new()),
            outer: OnceLock::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps `root` as the root's handle for the rest of the run.
    pub fn pin_root(&self, root: Arc<Dir>) {
        let _ = self.pinned.set(root);
    }

    /// The handle of the folder at `rel` (`""` is the root).
    pub fn dir(&self, rel: &Path) -> Result<Arc<Dir>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(rel) {
            return Ok(Arc::clone(d));
        }
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        if let Some(root) = self.pinned.get() {
            map.entry(PathBuf::new())
                .or_insert_with(|| Arc::clone(root));
            if rel.as_os_str().is_empty() {
                return Ok(Arc::clone(root));
            }
        }
        // Start from the deepest folder already open, then open the rest one name at a time.
        let mut base: Option<(PathBuf, Arc<Dir>)> = None;
        for anc in rel.ancestors().skip(1) {
            if let Some(d) = map.get(anc) {
                base = Some((anc.to_path_buf(), Arc::clone(d)));
                break;
            }
        }
        let (mut at_rel, mut dir) = match base {
            Some(b) => b,
            None => {
                let d = Arc::new(Dir::open(&self.root)?);
                map.insert(PathBuf::new(), Arc::clone(&d));
                if rel.as_os_str().is_empty() {
                    return Ok(d);
                }
                (PathBuf::new(), d)
            }
        };
        let rest = rel.strip_prefix(&at_rel).unwrap_or(rel).to_path_buf();
        for comp in rest.components() {
            let name = comp.as_os_str();
            let child = Arc::new(dir.open_child(name)?);
            at_rel.push(name);
            map.insert(at_rel.clone(), Arc::clone(&child));
            dir = child;
        }
        Ok(dir)
    }

    /// Where a folder's own metadata is set: the root through its pinned handle as `.` (the root
    /// may be a link to the folder meant, and its parent's view of that name is the link), any
    /// other folder through its parent.
    /// (Unix only: Windows folders are reached by path, which refuses a trailing `.`.)
    pub fn finish_at(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        match self.pinned.get() {
            Some(root) if cfg!(unix) && rel.as_os_str().is_empty() => {
                Ok((Arc::clone(root), ".".into()))
            }
            _ => self.parent_of(rel),
        }
    }

    /// The folder holding the entry `rel`, and the entry's name in it. For the root itself that
    /// is the root's parent folder.
    pub fn parent_of(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => Ok((self.dir(parent)?, name.to_os_string())),
            _ => {
                let name = self
                    .root
                    .file_name()
                    .map(|n| n.to_os_string())
                    .ok_or_else(|| {
                        Error::io(
                            Op::Open,
                            &self.root,
                            std::io::Error::other("the filesystem root has no parent folder"),
                        )
                    })?;
                let outer = match self.outer.get() {
                    Some(d) => Arc::clone(d),
                    None => {
                        let parent = self.root.parent().unwrap_or(Path::new("/"));
                        let d = Arc::new(Dir::open(parent)?);
                        Arc::clone(self.outer.get_or_init(|| d))
                    }
                };
                Ok((outer, name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached handle is shared: listing it a second time (another request for the same folder)
    /// must see every name again, not the end the first listing left it at; an empty answer
    /// would read as an empty folder, and a mirror would delete to match.
    #[test]
    fn a_cached_folder_lists_every_name_each_time() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        for i in 0..300 {
            std::fs::write(root.path().join("sub").join(format!("f{i:03}")), b"x").unwrap();
        }
        let cache = DirCache::new(root.path().to_path_buf());
        let names = |d: &Dir| {
            let mut n: Vec<_> = d
                .read_names()
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            n.sort();
            n
        };
        let first = names(&cache.dir(Path::new("sub")).unwrap());
        let again = names(&cache.dir(Path::new("sub")).unwrap());
        assert_eq!(first.len(), 300);
        assert_eq!(first, again);
        // The handle also still reaches its entries after being listed.
        let (dir, name) = cache.parent_of(Path::new("sub/f007")).unwrap();
        assert_eq!(name, "f007");
        assert_eq!(names(&dir), first);
    }
}
