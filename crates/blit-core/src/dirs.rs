//! Open folder handles of one tree, found by relative path. The end of a run (hard links,
//! deletions, folder metadata, releasing moved sources) reaches entries long after their folder
//! was walked; the handle is opened again once, component by component from the root without
//! following links, and shared by all workers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Op, Result, Rule};
use crate::sys::Dir;

/// Past this many cached handles the cache starts over, so a tree with a million folders does
/// not hold a million descriptors. Handles in use stay valid (they are reference-counted).
const MAX_CACHED: usize = 4096;

/// A folder's relative path as a cache key: two 64-bit SipHash values under keys drawn at random
/// for the cache (so no peer can aim two paths at one key), over the path's bytes. A key costs
/// 16 bytes however deep the folder (a path 10,000 folders deep is 20 KB, and 4,096 such keys
/// as paths would be 80 MB), and the keys of all its ancestors come from one pass.
type Key = (u64, u64);

pub struct DirCache {
    root: PathBuf,
    /// The root's handle as the run opened it, kept through every clearing of `map`: the root is
    /// never looked up by path again.
    pinned: OnceLock<Arc<Dir>>,
    map: Mutex<HashMap<Key, Arc<Dir>>>,
    /// The folder holding the root itself (used when the root is a file).
    outer: OnceLock<Arc<Dir>>,
    hashers: (RandomState, RandomState),
}

/// The key of a path's bytes, and of each of its ancestors, as one pass over them.
struct Keys<'a> {
    hashers: &'a (RandomState, RandomState),
}

impl Keys<'_> {
    fn of(&self, rel: &Path) -> Key {
        let bytes = rel.as_os_str().as_encoded_bytes();
        let (mut a, mut b) = (self.hashers.0.build_hasher(), self.hashers.1.build_hasher());
        a.write(bytes);
        b.write(bytes);
        (a.finish(), b.finish())
    }

    /// `out[i]`: the key of the path made of `rel`'s first `i` names (`out[0]`, the root's).
    fn ancestors(&self, rel: &Path) -> Vec<Key> {
        let bytes = rel.as_os_str().as_encoded_bytes();
        let (mut a, mut b) = (self.hashers.0.build_hasher(), self.hashers.1.build_hasher());
        let mut out = vec![(a.finish(), b.finish())];
        let mut from = 0;
        for (i, &c) in bytes.iter().enumerate() {
            if c == std::path::MAIN_SEPARATOR as u8 && i > from {
                a.write(&bytes[from..i]);
                b.write(&bytes[from..i]);
                out.push((a.finish(), b.finish()));
                from = i;
            }
        }
        if from < bytes.len() {
            a.write(&bytes[from..]);
            b.write(&bytes[from..]);
            out.push((a.finish(), b.finish()));
        }
        out
    }
}

impl DirCache {
    pub fn new(root: PathBuf) -> Self {
        DirCache {
            root,
            pinned: OnceLock::new(),
            map: Mutex::new(HashMap::new()),
            outer: OnceLock::new(),
            hashers: (RandomState::new(), RandomState::new()),
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
    ///
    /// It is opened from its deepest cached ancestor, one name at a time. Besides the folder
    /// itself, the folders 1, 2, 4, 8... levels above it that were opened on the way are kept:
    /// the end of a run visits folders deepest first, and each next one is then found at most a
    /// few levels below a cached one, where caching only the folder asked for would open a
    /// 10,000-level chain again from the root for every level.
    pub fn dir(&self, rel: &Path) -> Result<Arc<Dir>> {
        let keys = Keys {
            hashers: &self.hashers,
        };
        let key = keys.of(rel);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&key) {
            return Ok(Arc::clone(d));
        }
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        let root_key = keys.of(Path::new(""));
        if let Some(root) = self.pinned.get() {
            map.entry(root_key).or_insert_with(|| Arc::clone(root));
            if rel.as_os_str().is_empty() {
                return Ok(Arc::clone(root));
            }
        }
        // The usual miss, a walk going one level down: the parent is open. Else every
        // ancestor's key, from one pass.
        if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
            if let Some(p) = map.get(&keys.of(parent)).cloned() {
                let d = Arc::new(p.open_child(name)?);
                map.insert(key, Arc::clone(&d));
                return Ok(d);
            }
        }
        let ancestors = keys.ancestors(rel);
        let names: Vec<&std::ffi::OsStr> = rel.components().map(|c| c.as_os_str()).collect();
        let target = names.len();
        debug_assert_eq!(ancestors.len(), target + 1);
        // Start from the deepest folder already open, then open the rest one name at a time.
        let base = (0..target)
            .rev()
            .find_map(|i| map.get(&ancestors[i]).map(|d| (i, Arc::clone(d))));
        let (start, mut dir) = match base {
            Some(b) => b,
            None => {
                let d = Arc::new(Dir::open(&self.root)?);
                map.insert(root_key, Arc::clone(&d));
                if target == 0 {
                    return Ok(d);
                }
                (0, d)
            }
        };
        for (level, name) in names.iter().enumerate().skip(start) {
            let child = Arc::new(dir.open_child(name)?);
            let depth = level + 1;
            let above = target - depth;
            if above == 0 || above.is_power_of_two() {
                map.insert(ancestors[depth], Arc::clone(&child));
            }
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
                    .ok_or_else(|| Error::rule(Op::Open, &self.root, Rule::NoParent))?;
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
