//! Lists a tree: every entry's `lstat`, sorted by relative path, with the filter applied while
//! walking so excluded folders are never even opened.
//!
//! Blit walks with its own parallel walker rather than a general-purpose one: every folder is
//! opened relative to its parent's descriptor without following links and every entry is
//! `fstatat`-ed relative to its folder, which is both the cheapest syscall sequence per entry and
//! the one that works in trees deeper than `PATH_MAX`. Folders are read by a work-stealing pool,
//! one task per folder.
//!
//! What could *not* be listed matters as much as what was: a folder whose listing failed is
//! recorded in [`Tree::unreadable`], and the planner never deletes beneath it, because "I could
//! not read it" must never look like "it is not there".

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::entry::{Entry, Kind};
use crate::error::{Error, Op};
use crate::filter::Filter;
use crate::sys::{self, At, Dir};
use crate::tempname;

/// A listed tree. `entries` is sorted by `rel`; when the root exists, the root itself is the first
/// entry (with an empty `rel`).
#[derive(Debug, Default)]
pub struct Tree {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
    /// Folders (relative) that could not be listed completely.
    pub unreadable: Vec<PathBuf>,
    /// Entries (relative) that were listed but could not be stat'ed; their counterparts are kept.
    pub unknown: Vec<PathBuf>,
    /// Temporary files left by an interrupted run (relative), to be removed.
    pub leftovers: Vec<PathBuf>,
    pub errors: Vec<Error>,
}

impl Tree {
    pub fn exists(&self) -> bool {
        !self.entries.is_empty()
    }

    pub fn root_entry(&self) -> Option<&Entry> {
        self.entries
            .first()
            .filter(|e| e.rel.as_os_str().is_empty())
    }

    /// True when something under `rel` (or `rel` itself) could not be read, so nothing there may
    /// be judged absent.
    pub fn is_incomplete_at(&self, rel: &Path) -> bool {
        self.unreadable
            .iter()
            .chain(&self.unknown)
            .any(|u| u.as_os_str().is_empty() || rel.starts_with(u))
    }
}

/// Walks `root` with up to `threads` threads. The root is followed if it is a symlink (the user
/// named it); nothing below it is. A missing root gives an empty tree; any other failure to stat
/// or open the root is an error.
/// With `xattrs`, each entry's `xattrs` flag is filled in (one extra query per entry, made here
/// in parallel rather than later one by one).
pub fn walk(root: &Path, filter: &Filter, threads: usize, xattrs: bool) -> Result<Tree, Error> {
    let mut tree = Tree {
        root: root.to_path_buf(),
        ..Tree::default()
    };
    let md = match std::fs::metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tree),
        Err(e) => return Err(Error::io(Op::Stat, root, e)),
    };
    let mut root_entry = Entry::from_metadata(PathBuf::new(), &md);
    // The root is not listed in a folder; rather than query it here, let the planner compare it.
    root_entry.xattrs = xattrs;
    let is_dir = root_entry.kind == Kind::Dir;
    tree.entries.push(root_entry);
    if !is_dir {
        return Ok(tree);
    }

    let shared = Mutex::new(Found::default());
    match Dir::open(root) {
        Ok(dir) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads.max(1))
                .build()
                .map_err(|e| Error::io(Op::ReadDir, root, std::io::Error::other(e)))?;
            let walker = Walker {
                filter,
                xattrs,
                found: &shared,
            };
            pool.scope(|s| walker.visit(s, dir, PathBuf::new()));
        }
        Err(e) => {
            let mut f = shared.lock().unwrap();
            f.errors.push(e);
            f.unreadable.push(PathBuf::new());
        }
    }
    let found = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut entries = found.entries;
    entries.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    tree.entries.extend(entries);
    tree.unreadable = found.unreadable;
    tree.unknown = found.unknown;
    tree.leftovers = found.leftovers;
    tree.errors = found.errors;
    Ok(tree)
}

#[derive(Debug, Default)]
struct Found {
    entries: Vec<Entry>,
    unreadable: Vec<PathBuf>,
    unknown: Vec<PathBuf>,
    leftovers: Vec<PathBuf>,
    errors: Vec<Error>,
}

impl Found {
    fn append(&mut self, other: &mut Found) {
        self.entries.append(&mut other.entries);
        self.unreadable.append(&mut other.unreadable);
        self.unknown.append(&mut other.unknown);
        self.leftovers.append(&mut other.leftovers);
        self.errors.append(&mut other.errors);
    }
}

#[derive(Clone, Copy)]
struct Walker<'a> {
    filter: &'a Filter,
    xattrs: bool,
    found: &'a Mutex<Found>,
}

impl<'a> Walker<'a> {
    /// Lists one folder, then hands each subfolder to the pool. Results are gathered locally and
    /// merged under the lock once per folder.
    fn visit<'s>(self, scope: &rayon::Scope<'s>, dir: Dir, rel: PathBuf)
    where
        'a: 's,
    {
        let mut local = Found::default();
        let names = match dir.read_names() {
            Ok(n) => n,
            Err(e) => {
                local.errors.push(e);
                local.unreadable.push(rel);
                self.found.lock().unwrap().append(&mut local);
                return;
            }
        };
        let dir = Arc::new(dir);
        for (name, hint) in names {
            let child_rel = rel.join(&name);
            if hint != Some(Kind::Dir) && tempname::is_temp(&name) {
                local.leftovers.push(child_rel);
                continue;
            }
            let at = At::new(&dir, &name);
            let mut entry = match sys::stat_at(at, child_rel.clone()) {
                Ok(e) => e,
                Err(e) => {
                    let gone = matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
                    if !gone {
                        local.errors.push(e);
                    }
                    // Gone or unreadable: either way, its counterpart must not be judged on it.
                    local.unknown.push(child_rel);
                    continue;
                }
            };
            let is_dir = entry.kind == Kind::Dir;
            if self.filter.excludes(&child_rel, is_dir) {
                continue;
            }
            if self.xattrs {
                match sys::has_xattrs(at) {
                    Ok(has) => entry.xattrs = has,
                    Err(e) => {
                        local.errors.push(e);
                        local.unknown.push(child_rel);
                        continue;
                    }
                }
            }
            local.entries.push(entry);
            if is_dir {
                let parent = Arc::clone(&dir);
                scope.spawn(move |s| match parent.open_child(&name) {
                    Ok(child) => {
                        drop(parent);
                        self.visit(s, child, child_rel);
                    }
                    Err(e) => {
                        let mut f = self.found.lock().unwrap();
                        f.errors.push(e);
                        f.unreadable.push(child_rel);
                    }
                });
            }
        }
        self.found.lock().unwrap().append(&mut local);
    }
}
