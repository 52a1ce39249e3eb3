//! The admin verbs a daemon answers (`ls`, `du`, `df`, `find`, `rm`), each beneath the module's
//! root, never following a symlink below the path the client named.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use super::beneath;
use super::serve;
use super::server::{fd_path, Module};
use super::wire::{self, AdminRep, AdminReq};
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Result, Rule};
use crate::sys::{self, At, Dir};
use crate::tree::{self, Then, Visit};

/// Entries `find` returns at most (the answer is one frame).
const FIND_MAX: usize = 4096;

/// The answer to `req` about `rel` (relative to the module's folder `root`); a failure is
/// named by its operation and its path in the module.
pub fn answer(module: &Module, root: &OwnedFd, rel: &Path, req: AdminReq) -> AdminRep {
    let r = match req {
        AdminReq::ListModules => Err(Error::Refused("not a module request".into())),
        AdminReq::List { after } => list(module, root, rel, after.as_deref()),
        AdminReq::Usage => usage(root, rel),
        AdminReq::Space => space(root),
        AdminReq::Find(glob) => find(module, root, rel, &glob),
        AdminReq::Remove => remove(root, rel),
    };
    r.unwrap_or_else(|e| {
        let rel = rel.as_os_str().as_bytes();
        AdminRep::Error(serve::error_to_wire(&e, rel))
    })
}

type R = Result<AdminRep>;

/// An OS failure on `rel`, named by its place in the module (never by the `/proc` path of the
/// descriptor it went through).
fn at(op: Op, rel: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(op, rel, e)
}

/// An error that names a descriptor's `/proc` path names `rel` instead.
fn named(rel: &Path) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Io { op, source, .. } => Error::io(op, rel, source),
        other => other,
    }
}

/// The folder (or file) at `rel` beneath the module's folder `root`, as an open folder plus
/// the entry of a file root.
fn open_at(root: &OwnedFd, rel: &Path) -> Result<(Dir, Option<Entry>)> {
    let fd = beneath::open(root, rel).map_err(at(Op::Open, rel))?;
    let md = std::fs::metadata(fd_path(&fd)).map_err(at(Op::Stat, rel))?;
    if md.is_dir() {
        return Ok((Dir::open(&fd_path(&fd)).map_err(named(rel))?, None));
    }
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let parent = beneath::open(root, parent_rel).map_err(at(Op::Open, parent_rel))?;
    let entry = Entry::from_metadata(PathBuf::new(), &md);
    Ok((
        Dir::open(&fd_path(&parent)).map_err(named(parent_rel))?,
        Some(entry),
    ))
}

/// An answer's entries stop at this many bytes, so it fits one frame.
const PAGE_BYTES: usize = wire::MAX_FRAME / 2;

fn list(module: &Module, root: &OwnedFd, rel: &Path, after: Option<&[u8]>) -> R {
    let (dir, file) = open_at(root, rel)?;
    if let Some(e) = file {
        let name = rel.file_name().unwrap_or_default();
        let w = serve::describe(&dir, name, &e, false, module.fake_super).map_err(named(rel))?;
        return Ok(AdminRep::Entries {
            entries: vec![(name.as_bytes().to_vec(), w)],
            more: false,
        });
    }
    let mut names: Vec<_> = dir
        .read_names()
        .map_err(named(rel))?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| match after {
            Some(a) => n.as_bytes() > a,
            None => true,
        })
        .collect();
    names.sort();
    let mut out = Vec::new();
    let mut size = 0;
    let mut more = false;
    for name in names {
        if size >= PAGE_BYTES {
            more = true;
            break;
        }
        let Ok(e) = sys::stat_at(At::new(&dir, &name), PathBuf::from(&name)) else {
            continue;
        };
        if let Ok(w) = serve::describe(&dir, &name, &e, false, module.fake_super) {
            size += 96 + name.len() + w.link.as_ref().map_or(0, Vec::len);
            out.push((name.as_bytes().to_vec(), w));
        }
    }
    Ok(AdminRep::Entries { entries: out, more })
}

/// Walks everything beneath `dir` without following links, calling `visit` with each entry
/// (its folder, name and entry); `visit` says whether to go on. Folders that cannot be opened
/// or listed, and entries that vanish, are passed over.
fn walk(dir: Dir, rel: &Path, visit: &mut dyn FnMut(&Dir, &OsStr, &Entry) -> bool) -> Result<()> {
    let names = dir.read_names().map_err(named(rel))?;
    tree::walk(dir, names, Path::new(""), &mut |v| {
        let Visit::Entry { dir, name, rel, .. } = v else {
            return Ok(Then::Next);
        };
        let Ok(e) = sys::stat_at(At::new(dir, name), rel.to_path_buf()) else {
            return Ok(Then::Next);
        };
        if !visit(dir, name, &e) {
            return Ok(Then::Stop);
        }
        if e.kind != Kind::Dir {
            return Ok(Then::Next);
        }
        Ok(match dir.open_child(name) {
            Ok(sub) => match sub.read_names() {
                Ok(names) => Then::Descend(sub, names),
                Err(_) => Then::Next,
            },
            Err(_) => Then::Next,
        })
    })
}

fn usage(root: &OwnedFd, rel: &Path) -> R {
    let (dir, file) = open_at(root, rel)?;
    if let Some(e) = file {
        return Ok(AdminRep::Usage {
            files: 1,
            dirs: 0,
            bytes: e.size,
        });
    }
    let (mut files, mut dirs, mut bytes) = (0, 0, 0);
    walk(dir, rel, &mut |_, _, e| {
        match e.kind {
            Kind::Dir => dirs += 1,
            Kind::File => {
                files += 1;
                bytes += e.size;
            }
            _ => files += 1,
        }
        true
    })?;
    Ok(AdminRep::Usage { files, dirs, bytes })
}

fn space(root: &OwnedFd) -> R {
    let st = rustix::fs::fstatvfs(root).map_err(|e| Error::io(Op::Stat, "", e.into()))?;
    let unit = st.f_frsize;
    Ok(AdminRep::Space {
        total: st.f_blocks * unit,
        free: st.f_bfree * unit,
        available: st.f_bavail * unit,
    })
}

fn find(module: &Module, root: &OwnedFd, rel: &Path, glob: &str) -> R {
    let matcher = globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::Pattern {
            pattern: glob.to_string(),
            reason: e.kind().to_string(),
        })?
        .compile_matcher();
    let (dir, _) = open_at(root, rel)?;
    let mut out = Vec::new();
    let mut size = 0;
    let mut more = false;
    walk(dir, rel, &mut |d, name, e| {
        if matcher.is_match(Path::new(name)) {
            if out.len() >= FIND_MAX || size >= PAGE_BYTES {
                more = true;
                return false;
            }
            if let Ok(w) = serve::describe(d, name, e, false, module.fake_super) {
                let rel = e.rel.as_os_str().as_bytes().to_vec();
                size += 96 + rel.len() + w.link.as_ref().map_or(0, Vec::len);
                out.push((rel, w));
            }
        }
        true
    })?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(AdminRep::Entries { entries: out, more })
}

fn remove(root: &OwnedFd, rel: &Path) -> R {
    if rel.as_os_str().is_empty() {
        return Err(Error::rule(Op::Delete, rel, Rule::ModuleRoot));
    }
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let parent = beneath::open(root, parent_rel).map_err(at(Op::Open, parent_rel))?;
    let dir = Dir::open(&fd_path(&parent)).map_err(named(parent_rel))?;
    let name = rel.file_name().unwrap_or_default();
    let e = sys::stat_at(At::new(&dir, name), rel.to_path_buf()).map_err(named(rel))?;
    if e.kind != Kind::Dir {
        sys::unlink_at(At::new(&dir, name)).map_err(named(rel))?;
        return Ok(AdminRep::Removed { entries: 1 });
    }
    let top = dir.open_child(name).map_err(named(rel))?;
    let names = top.read_names().map_err(named(rel))?;
    let mut entries = 0u64;
    // Children first: a folder goes once everything in it is gone.
    tree::walk(top, names, Path::new(""), &mut |v| {
        match v {
            Visit::Entry {
                dir, name, hint, ..
            } => {
                let is_dir = match hint {
                    Some(k) => k == Kind::Dir,
                    None => sys::stat_at(At::new(dir, name), PathBuf::new())?.kind == Kind::Dir,
                };
                if is_dir {
                    let sub = dir.open_child(name)?;
                    let names = sub.read_names()?;
                    return Ok(Then::Descend(sub, names));
                }
                sys::unlink_at(At::new(dir, name))?;
            }
            Visit::Left { dir, name, .. } => {
                sys::rmdir_at(At::new(dir, name))?;
            }
        }
        entries += 1;
        Ok(Then::Next)
    })?;
    sys::rmdir_at(At::new(&dir, name)).map_err(named(rel))?;
    Ok(AdminRep::Removed {
        entries: entries + 1,
    })
}
