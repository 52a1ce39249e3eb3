//! Walking everything beneath a folder, depth first, without recursion.
//!
//! Deleting a stale tree, counting what a deletion would remove, `du`, `find` and `rm` all go
//! down a tree of any depth. One call per level would overflow a thread's stack somewhere
//! between 4,000 and 5,000 levels (a daemon's session thread has 2 MiB), and a tree that deep
//! is one `mkdir -p` loop away for anyone who can write to a module. Here the levels are frames
//! on a heap stack instead, and only the deepest [`OPEN_LEVELS`] hold an open folder: going back
//! up past them, a folder is opened again as `..` of the one below, and must be the very folder
//! (device and inode) that was left, so a tree moved meanwhile is never walked into by mistake.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::dest::Folder;
use crate::entry::Kind;
use crate::error::{Error, Op, Result, Rule};
use crate::sys::Dir;

/// Levels whose folder stays open while the walk is below them.
const OPEN_LEVELS: usize = 32;

/// What the walk shows its caller.
pub enum Visit<'a, D = Dir> {
    /// One entry of the folder `dir` (never `.` or `..`), with the type its listing gave, if
    /// any; `rel` is its path relative to where the walk started.
    Entry {
        dir: &'a D,
        name: &'a OsStr,
        hint: Option<Kind>,
        rel: &'a Path,
    },
    /// Everything in the folder `name` of `dir` (which an earlier `Entry` descended into) has
    /// been visited.
    Left {
        dir: &'a D,
        name: &'a OsStr,
        rel: &'a Path,
    },
}

/// What the walk does after a visit.
pub enum Then<D = Dir> {
    /// Goes on with the next entry.
    Next,
    /// Goes into this folder (the entry just visited, opened), whose names are these, before the
    /// next entry.
    Descend(D, Vec<(OsString, Option<Kind>)>),
    /// Ends the walk (a `find` that has found enough: the daemon's, on Linux).
    #[cfg_attr(not(all(feature = "remote", target_os = "linux")), allow(dead_code))]
    Stop,
}

/// One level of the walk: a folder and the names of it still to visit.
struct Frame<D> {
    /// `None` once closed to spare descriptors; opened again on the way back up.
    dir: Option<D>,
    id: (u64, u64),
    names: std::vec::IntoIter<(OsString, Option<Kind>)>,
    /// The folder's name in its parent (unused for the top).
    name: OsString,
    rel: PathBuf,
}

/// Walks everything beneath `top` (whose names are `names`; `rel` is where paths start),
/// calling `visit` for each entry, and once more after a folder it descended into is done.
pub fn walk<D: Folder>(
    top: D,
    names: Vec<(OsString, Option<Kind>)>,
    rel: &Path,
    visit: &mut dyn FnMut(Visit<'_, D>) -> Result<Then<D>>,
) -> Result<()> {
    let id = top.id()?;
    let mut stack = vec![Frame {
        dir: Some(top),
        id,
        names: names.into_iter(),
        name: OsString::new(),
        rel: rel.to_path_buf(),
    }];
    loop {
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        let Some((name, hint)) = frame.names.next() else {
            // This folder is done: back to its parent, reopened if it was closed.
            let done = stack.pop().expect("a frame");
            let Some(parent) = stack.last_mut() else {
                return Ok(());
            };
            if parent.dir.is_none() {
                let child = done.dir.as_ref().expect("the deepest level is open");
                parent.dir = Some(reopen_parent(child, parent.id, &parent.rel)?);
            }
            drop(done.dir);
            let dir = parent.dir.as_ref().expect("opened");
            let left = Visit::Left {
                dir,
                name: &done.name,
                rel: &done.rel,
            };
            if let Then::Stop = visit(left)? {
                return Ok(());
            }
            continue;
        };
        let child_rel = frame.rel.join(&name);
        let dir = frame.dir.as_ref().expect("the deepest level is open");
        let then = visit(Visit::Entry {
            dir,
            name: &name,
            hint,
            rel: &child_rel,
        })?;
        match then {
            Then::Next => {}
            Then::Stop => return Ok(()),
            Then::Descend(sub, names) => {
                let id = sub.id()?;
                stack.push(Frame {
                    dir: Some(sub),
                    id,
                    names: names.into_iter(),
                    name,
                    rel: child_rel,
                });
                if stack.len() > OPEN_LEVELS {
                    let closing = stack.len() - 1 - OPEN_LEVELS;
                    stack[closing].dir = None;
                }
            }
        }
    }
}

/// The parent of `child`, opened as its `..`, which must be the folder `id` the walk came down
/// from.
fn reopen_parent<D: Folder>(child: &D, id: (u64, u64), rel: &Path) -> Result<D> {
    let parent = child.open_parent()?;
    let now = parent.id()?;
    if now != id && id != (0, 0) {
        return Err(Error::rule(Op::Open, rel, Rule::MovedDuringWalk));
    }
    Ok(parent)
}

impl Folder for Dir {
    fn id(&self) -> Result<(u64, u64)> {
        Dir::id(self)
    }

    fn open_parent(&self) -> Result<Dir> {
        Dir::open_parent(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain far deeper than any recursion could go is walked to the bottom and back, with
    /// every folder left exactly once and in order, and no more descriptors held than the
    /// window allows.
    #[test]
    fn a_very_deep_chain_is_walked_down_and_back_up() {
        let t = tempfile::tempdir().unwrap();
        let depth = 3000;
        let top = Dir::open(t.path()).unwrap();
        // Built one level at a time through its folder (the full path outgrows PATH_MAX).
        let mut d = Dir::open(t.path()).unwrap();
        for _ in 0..depth {
            crate::sys::mkdir_at(crate::sys::At::new(&d, OsStr::new("d"))).unwrap();
            d = d.open_child(OsStr::new("d")).unwrap();
        }
        drop(d);
        let names = top.read_names().unwrap();
        let (mut entries, mut left) = (0, Vec::new());
        walk(top, names, Path::new(""), &mut |v| {
            Ok(match v {
                Visit::Entry { dir, name, .. } => {
                    entries += 1;
                    let sub = dir.open_child(name)?;
                    let names = sub.read_names()?;
                    Then::Descend(sub, names)
                }
                Visit::Left { rel, .. } => {
                    left.push(rel.components().count());
                    Then::Next
                }
            })
        })
        .unwrap();
        assert_eq!(entries, depth);
        assert_eq!(left, (1..=depth).rev().collect::<Vec<_>>());
    }

    /// A folder the walk has closed and then finds replaced by another (moved away and
    /// something else moved in) is not walked into: the walk fails instead.
    #[test]
    fn a_folder_swapped_above_the_open_window_stops_the_walk() {
        let t = tempfile::tempdir().unwrap();
        let top = Dir::open(t.path()).unwrap();
        let mut d = Dir::open(t.path()).unwrap();
        for _ in 0..(OPEN_LEVELS + 5) {
            crate::sys::mkdir_at(crate::sys::At::new(&d, OsStr::new("d"))).unwrap();
            d = d.open_child(OsStr::new("d")).unwrap();
        }
        let names = top.read_names().unwrap();
        let mut swapped = false;
        let r = walk(top, names, Path::new(""), &mut |v| {
            Ok(match v {
                Visit::Entry { dir, name, rel, .. } => {
                    if rel.components().count() == OPEN_LEVELS + 5 && !swapped {
                        // Everything is replaced by a copy at the second level.
                        let second = t.path().join("d/d");
                        std::fs::rename(&second, t.path().join("moved")).unwrap();
                        std::fs::create_dir(&second).unwrap();
                        swapped = true;
                    }
                    let sub = dir.open_child(name)?;
                    let names = sub.read_names()?;
                    Then::Descend(sub, names)
                }
                Visit::Left { .. } => Then::Next,
            })
        });
        assert!(swapped);
        let e = r.unwrap_err();
        assert!(e.to_string().contains("moved"), "{e}");
    }
}
