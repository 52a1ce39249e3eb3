//! Lists a tree: every entry's `lstat`, sorted by relative path, with the filter applied while
//! walking so excluded folders are never even opened.
//!
//! The walk is `ignore`'s work-stealing parallel walker with all of its ignore-file logic turned
//! off. What matters beyond the listing is what could *not* be listed: a folder whose listing failed
//! is recorded in [`Tree::unreadable`], and the planner never deletes beneath it, because "I could
//! not read it" must never look like "it is not there".

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::{WalkBuilder, WalkState};

use crate::entry::{Entry, Kind};
use crate::error::{Error, Op};
use crate::filter::Filter;
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
            .any(|u| u.as_os_str().is_empty() || rel.starts_with(u) || u == rel)
    }
}

/// Walks `root` with up to `threads` threads. The root is followed if it is a symlink (the user
/// named it); nothing below it is. A missing root gives an empty tree; any other failure to stat
/// the root is an error.
pub fn walk(root: &Path, filter: &Filter, threads: usize) -> Result<Tree, Error> {
    let mut tree = Tree {
        root: root.to_path_buf(),
        ..Tree::default()
    };
    let md = match fs::metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tree),
        Err(e) => return Err(Error::io(Op::Stat, root, e)),
    };
    let root_entry = Entry::from_metadata(PathBuf::new(), &md);
    let is_dir = root_entry.kind == Kind::Dir;
    tree.entries.push(root_entry);
    if !is_dir {
        return Ok(tree);
    }

    let shared = Arc::new(Mutex::new(Shared::default()));
    WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .threads(threads.max(1))
        .build_parallel()
        .run(|| {
            Box::new(Visitor {
                root,
                filter,
                local: Shared::default(),
                shared: Arc::clone(&shared),
            })
            .into_fn()
        });
    let shared = Arc::try_unwrap(shared)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_else(|arc| std::mem::take(&mut *arc.lock().unwrap()));

    let mut entries = shared.entries;
    entries.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
    tree.entries.extend(entries);
    tree.unreadable = shared.unreadable;
    tree.unknown = shared.unknown;
    tree.leftovers = shared.leftovers;
    tree.errors = shared.errors;
    Ok(tree)
}

#[derive(Debug, Default)]
struct Shared {
    entries: Vec<Entry>,
    unreadable: Vec<PathBuf>,
    unknown: Vec<PathBuf>,
    leftovers: Vec<PathBuf>,
    errors: Vec<Error>,
}

impl Shared {
    fn append(&mut self, other: &mut Shared) {
        self.entries.append(&mut other.entries);
        self.unreadable.append(&mut other.unreadable);
        self.unknown.append(&mut other.unknown);
        self.leftovers.append(&mut other.leftovers);
        self.errors.append(&mut other.errors);
    }
}

/// One per walker thread: collects locally and hands everything over once, when the walker drops
/// it, so threads do not contend on a lock per entry.
struct Visitor<'a> {
    root: &'a Path,
    filter: &'a Filter,
    local: Shared,
    shared: Arc<Mutex<Shared>>,
}

impl Drop for Visitor<'_> {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.append(&mut self.local);
        }
    }
}

impl<'a> Visitor<'a> {
    fn into_fn(
        mut self: Box<Self>,
    ) -> Box<dyn FnMut(Result<ignore::DirEntry, ignore::Error>) -> WalkState + Send + 'a> {
        Box::new(move |result| self.visit(result))
    }

    fn rel(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.root).unwrap_or(path).to_path_buf()
    }

    fn visit(&mut self, result: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        let dent = match result {
            Ok(d) => d,
            Err(err) => {
                let (path, io) = split_error(err);
                let path = path.unwrap_or_else(|| self.root.to_path_buf());
                let rel = self.rel(&path);
                self.local.errors.push(Error::io(Op::ReadDir, path, io));
                self.local.unreadable.push(rel);
                return WalkState::Continue;
            }
        };
        if dent.depth() == 0 {
            return WalkState::Continue;
        }
        let rel = self.rel(dent.path());
        let is_dir = dent.file_type().is_some_and(|t| t.is_dir());
        if self.filter.excludes(&rel, is_dir) {
            return if is_dir {
                WalkState::Skip
            } else {
                WalkState::Continue
            };
        }
        if !is_dir && tempname::is_temp(dent.file_name()) {
            self.local.leftovers.push(rel);
            return WalkState::Continue;
        }
        match fs::symlink_metadata(dent.path()) {
            Ok(md) => self.local.entries.push(Entry::from_metadata(rel, &md)),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    self.local
                        .errors
                        .push(Error::io(Op::Stat, dent.path().to_path_buf(), e));
                }
                // Gone or unreadable: either way, its counterpart must not be judged on it.
                self.local.unknown.push(rel);
            }
        }
        WalkState::Continue
    }
}

/// Digs the path and OS error out of `ignore`'s nested error.
fn split_error(err: ignore::Error) -> (Option<PathBuf>, std::io::Error) {
    match err {
        ignore::Error::WithPath { path, err } => {
            let (_, io) = split_error(*err);
            (Some(path), io)
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            split_error(*err)
        }
        ignore::Error::Io(io) => (None, io),
        ignore::Error::Loop { child, .. } => {
            (Some(child), std::io::Error::other("filesystem loop"))
        }
        other => (None, std::io::Error::other(other.to_string())),
    }
}
