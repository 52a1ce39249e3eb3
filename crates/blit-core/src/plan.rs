//! Decides what to do: a merge of the two sorted listings into actions, with the few questions
//! that need more than `lstat` (checksums, link targets, xattrs) answered in parallel.
//!
//! Rules, in the order a user of rsync or robocopy expects them:
//! - size or mtime differing (either direction) rewrites the content; with `--checksum`, equal
//!   sizes are compared by BLAKE3 instead of by mtime;
//! - a type change replaces the entry (in `copy`, a non-empty folder is never removed for it);
//! - a difference only in mode, owner, xattrs (or mtime under `--checksum`) updates metadata in
//!   place, unless the destination inode is shared with a file the source does not link, which
//!   would then change too: such a file is rewritten instead;
//! - hard links inside the source are made again; the first name of a group (in path order) is
//!   written and the others are linked to it;
//! - a mirror deletes what the source lacks, but never beneath a source folder it could not read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dirs::DirCache;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op};
use crate::sys::{self, At};
use crate::walk::Tree;

/// Why an entry is acted on; printed by `--verbose`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    New,
    Size,
    Mtime,
    Checksum,
    Type,
    Target,
    Device,
    /// The destination inode is shared in a way the source's is not.
    Unlink,
    Link,
    Meta(MetaDiff),
    NotInSource,
    /// Folder whose contents changed; its times are restored silently.
    Contents,
}

impl Reason {
    pub fn label(self) -> String {
        match self {
            Reason::New => "new".into(),
            Reason::Size => "size".into(),
            Reason::Mtime => "mtime".into(),
            Reason::Checksum => "checksum".into(),
            Reason::Type => "type".into(),
            Reason::Target => "link target".into(),
            Reason::Device => "device".into(),
            Reason::Unlink => "hard link".into(),
            Reason::Link => "hard link".into(),
            Reason::Meta(m) => m.label(),
            Reason::NotInSource => "not in source".into(),
            Reason::Contents => "contents".into(),
        }
    }
}

/// Which metadata fields differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaDiff {
    pub perm: bool,
    pub owner: bool,
    pub mtime: bool,
    pub xattr: bool,
}

impl MetaDiff {
    pub fn any(self) -> bool {
        self.perm || self.owner || self.mtime || self.xattr
    }

    pub fn label(self) -> String {
        let mut parts = Vec::new();
        if self.perm {
            parts.push("mode");
        }
        if self.owner {
            parts.push("owner");
        }
        if self.mtime {
            parts.push("mtime");
        }
        if self.xattr {
            parts.push("xattr");
        }
        parts.join(",")
    }
}

/// One action on one entry. `src`/`dst` index the two trees' entries.
#[derive(Clone, Debug)]
pub struct Item {
    pub src: usize,
    pub dst: Option<usize>,
    pub reason: Reason,
}

/// A hard link to make: `src` (a later name of a group) linked to the written `leader`.
#[derive(Clone, Debug)]
pub struct LinkItem {
    pub src: usize,
    pub leader: usize,
    pub dst: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanMode {
    /// Add and update; never delete.
    Copy,
    /// Also delete what the source lacks.
    Mirror,
}

#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    pub mode: PlanMode,
    pub checksum: bool,
    pub owner: bool,
    pub xattrs: bool,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Folders to create, parents first (`dst` set when a non-folder must go first).
    pub mkdirs: Vec<Item>,
    /// Files, symlinks and specials to (re)write; `dst` set when something is replaced.
    pub writes: Vec<Item>,
    /// Hard links, made after all writes.
    pub links: Vec<LinkItem>,
    /// Non-folders whose metadata alone differs.
    pub metas: Vec<Item>,
    /// Folders whose metadata is set at the end, deepest first (root last).
    pub dir_metas: Vec<Item>,
    /// Destination entries to delete, children before parents.
    pub deletes: Vec<usize>,
    /// Destination entries kept although the source lacks them, because the source side could
    /// not be read there.
    pub kept: Vec<usize>,
    /// Source non-folders already right in the destination.
    pub unchanged: Vec<usize>,
    /// Entries that cannot be done in this mode, with the reason.
    pub refused: Vec<(usize, Error)>,
    /// Errors met while planning (unreadable files under `--checksum`, ...).
    pub errors: Vec<Error>,
    /// For a write replacing a destination folder: the end (exclusive) of that folder's subtree in
    /// the destination listing, to be cleared first.
    pub subtree_end: HashMap<usize, usize>,
    /// Bytes the writes will copy.
    pub bytes: u64,
}

impl Plan {
    /// Number of destination entries this plan removes (deletes and replaced subtrees).
    pub fn removals(&self) -> usize {
        self.deletes.len()
            + self
                .subtree_end
                .iter()
                .map(|(d, end)| end - d - 1)
                .sum::<usize>()
    }

    pub fn is_noop(&self) -> bool {
        self.mkdirs.is_empty()
            && self.writes.is_empty()
            && self.links.is_empty()
            && self.metas.is_empty()
            && self.deletes.is_empty()
            && self.dir_metas.iter().all(|i| i.reason == Reason::Contents)
    }
}

/// What the parallel pass found for a pair of entries of the same kind.
enum Verdict {
    Same,
    Meta(MetaDiff),
    Rewrite(Reason),
    Error(Error),
}

/// Plans the run. The folder caches give the few checks that must look inside entries (link
/// targets, checksums, xattrs) descriptor-relative access to both trees.
pub fn plan(
    src: &Tree,
    dst: &Tree,
    opts: &PlanOptions,
    src_dirs: &DirCache,
    dst_dirs: &DirCache,
) -> Plan {
    Planner::new(src, dst, opts, src_dirs, dst_dirs).run()
}

struct Planner<'a> {
    src: &'a Tree,
    dst: &'a Tree,
    opts: &'a PlanOptions,
    src_dirs: &'a DirCache,
    dst_dirs: &'a DirCache,
    plan: Plan,
    /// Source file index → leader of its hard-link group (leaders map to themselves).
    leader_of: HashMap<usize, usize>,
    group_size: HashMap<usize, usize>,
    /// Destination (dev, ino) → number of names inside the destination tree.
    dst_links: HashMap<(u64, u64), usize>,
    /// Pairs needing the parallel pass.
    checks: Vec<(usize, usize)>,
    /// Later names of link groups, resolved once leaders are decided.
    followers: Vec<(usize, Option<usize>)>,
    leader_dst: HashMap<usize, usize>,
    dirty: HashSet<PathBuf>,
    /// Source entries the destination cannot hold (see [`Planner::find_unplaceable`]).
    skip: HashSet<usize>,
}

impl<'a> Planner<'a> {
    fn new(
        src: &'a Tree,
        dst: &'a Tree,
        opts: &'a PlanOptions,
        src_dirs: &'a DirCache,
        dst_dirs: &'a DirCache,
    ) -> Self {
        let mut groups: HashMap<(u64, u64), usize> = HashMap::new();
        let mut leader_of = HashMap::new();
        let mut group_size: HashMap<usize, usize> = HashMap::new();
        for (i, e) in src.entries.iter().enumerate() {
            if e.kind == Kind::File && e.nlink > 1 {
                let leader = *groups.entry((e.dev, e.ino)).or_insert(i);
                leader_of.insert(i, leader);
                *group_size.entry(leader).or_default() += 1;
            }
        }
        // A "group" of one (its other names live outside the tree) is just a file.
        leader_of.retain(|_, l| group_size.get(l).copied().unwrap_or(0) > 1);
        let mut dst_links = HashMap::new();
        for e in &dst.entries {
            if e.kind == Kind::File && e.nlink > 1 {
                *dst_links.entry((e.dev, e.ino)).or_default() += 1;
            }
        }
        Planner {
            src,
            dst,
            opts,
            src_dirs,
            dst_dirs,
            plan: Plan::default(),
            leader_of,
            group_size,
            dst_links,
            checks: Vec::new(),
            followers: Vec::new(),
            leader_dst: HashMap::new(),
            dirty: HashSet::new(),
            skip: HashSet::new(),
        }
    }

    /// On Windows, names that are reserved there, or that collide with another only by case,
    /// cannot be created; each gets its own error (with everything beneath it skipped) instead
    /// of a confusing failure or, worse, one file silently overwriting another.
    fn find_unplaceable(&mut self) {
        if !cfg!(windows) {
            return;
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut bad: Vec<PathBuf> = Vec::new();
        for (i, e) in self.src.entries.iter().enumerate() {
            if bad.iter().any(|b| e.rel.starts_with(b)) {
                self.skip.insert(i);
                continue;
            }
            let why = if let Some(why) = e.rel.file_name().and_then(sys::unsupported_name) {
                Some(why.to_string())
            } else {
                let key = e.rel.to_string_lossy().to_lowercase();
                seen.insert(key, i).map(|other| {
                    format!(
                        "name differs only by case from {}",
                        crate::names::escape(&self.src.entries[other].rel)
                    )
                })
            };
            if let Some(why) = why {
                self.skip.insert(i);
                bad.push(e.rel.clone());
                let path = self.src.root.join(&e.rel);
                self.plan
                    .refused
                    .push((i, Error::io(Op::Create, path, std::io::Error::other(why))));
            }
        }
    }

    fn run(mut self) -> Plan {
        self.find_unplaceable();
        let (s, d) = (&self.src.entries, &self.dst.entries);
        let (mut i, mut j) = (0, 0);
        // Destination entries below this index belong to a folder being replaced wholesale.
        let mut skip_until = 0usize;
        while i < s.len() || j < d.len() {
            if j < d.len() && j < skip_until {
                j += 1;
                continue;
            }
            let order = match (s.get(i), d.get(j)) {
                (Some(a), Some(b)) => a.rel.cmp(&b.rel),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => break,
            };
            if order != std::cmp::Ordering::Greater && self.skip.contains(&i) {
                // Not placeable here: neither written nor, for its counterpart, deleted.
                if order == std::cmp::Ordering::Equal {
                    j += 1;
                }
                i += 1;
                continue;
            }
            match order {
                std::cmp::Ordering::Less => {
                    self.only_in_source(i);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.only_in_dest(j);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if let Some(end) = self.both(i, j) {
                        skip_until = end;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        self.run_checks();
        self.resolve_followers();
        self.finish_dirs();
        self.plan
    }

    fn mark_dirty(&mut self, rel: &Path) {
        if let Some(parent) = rel.parent() {
            self.dirty.insert(parent.to_path_buf());
        }
    }

    fn write(&mut self, src: usize, dst: Option<usize>, reason: Reason) {
        let e = &self.src.entries[src];
        if e.kind == Kind::File {
            self.plan.bytes += e.size;
        }
        self.mark_dirty(&e.rel.clone());
        self.plan.writes.push(Item { src, dst, reason });
    }

    fn only_in_source(&mut self, i: usize) {
        let e = &self.src.entries[i];
        if e.kind == Kind::Dir {
            self.mark_dirty(&e.rel.clone());
            self.plan.mkdirs.push(Item {
                src: i,
                dst: None,
                reason: Reason::New,
            });
            self.plan.dir_metas.push(Item {
                src: i,
                dst: None,
                reason: Reason::New,
            });
        } else if self.is_follower(i) {
            self.followers.push((i, None));
        } else {
            self.write(i, None, Reason::New);
        }
    }

    fn only_in_dest(&mut self, j: usize) {
        if self.opts.mode != PlanMode::Mirror {
            return;
        }
        let rel = &self.dst.entries[j].rel;
        if self.src.is_incomplete_at(rel) {
            self.plan.kept.push(j);
        } else {
            self.mark_dirty(&rel.clone());
            self.plan.deletes.push(j);
        }
    }

    fn is_follower(&self, i: usize) -> bool {
        self.leader_of.get(&i).is_some_and(|&l| l != i)
    }

    /// End of the destination subtree under folder `j` (exclusive).
    fn subtree_end(&self, j: usize) -> usize {
        let d = &self.dst.entries;
        let root = &d[j].rel;
        let mut k = j + 1;
        while k < d.len() && (root.as_os_str().is_empty() || d[k].rel.starts_with(root)) {
            k += 1;
        }
        k
    }

    /// Handles an entry present on both sides; returns the end of a destination subtree to skip
    /// when a folder is being replaced by a non-folder.
    fn both(&mut self, i: usize, j: usize) -> Option<usize> {
        let (a, b) = (&self.src.entries[i], &self.dst.entries[j]);
        if self.leader_of.get(&i) == Some(&i) {
            self.leader_dst.insert(i, j);
        }
        match (a.kind, b.kind) {
            (Kind::Dir, Kind::Dir) => {
                self.checks.push((i, j));
                None
            }
            (Kind::Dir, _) => {
                self.mark_dirty(&a.rel.clone());
                self.plan.mkdirs.push(Item {
                    src: i,
                    dst: Some(j),
                    reason: Reason::Type,
                });
                self.plan.dir_metas.push(Item {
                    src: i,
                    dst: None,
                    reason: Reason::Type,
                });
                None
            }
            (_, Kind::Dir) => {
                let end = self.subtree_end(j);
                if end > j + 1 && self.opts.mode != PlanMode::Mirror {
                    let path = self.dst.root.join(&b.rel);
                    self.plan.refused.push((
                        i,
                        Error::io(
                            Op::Delete,
                            path,
                            std::io::Error::other(
                                "a non-empty folder stands where the source has a file; copy never deletes (use mirror)",
                            ),
                        ),
                    ));
                    return Some(end);
                }
                self.plan.subtree_end.insert(j, end);
                if self.is_follower(i) {
                    self.followers.push((i, Some(j)));
                } else {
                    self.write(i, Some(j), Reason::Type);
                }
                Some(end)
            }
            (ka, kb) if ka != kb => {
                if self.is_follower(i) {
                    self.followers.push((i, Some(j)));
                } else {
                    self.write(i, Some(j), Reason::Type);
                }
                None
            }
            (Kind::File, Kind::File) => {
                if self.is_follower(i) {
                    self.followers.push((i, Some(j)));
                    return None;
                }
                let shared_wrongly = {
                    let in_tree = self.dst_links.get(&(b.dev, b.ino)).copied().unwrap_or(0);
                    let src_group = match self.leader_of.get(&i) {
                        Some(l) => self.group_size[l],
                        None => 1,
                    };
                    in_tree > src_group
                };
                if a.size != b.size {
                    self.write(i, Some(j), Reason::Size);
                } else if shared_wrongly {
                    self.write(i, Some(j), Reason::Unlink);
                } else if a.mtime != b.mtime && !self.opts.checksum {
                    self.write(i, Some(j), Reason::Mtime);
                } else {
                    self.checks.push((i, j));
                }
                None
            }
            _ => {
                self.checks.push((i, j));
                None
            }
        }
    }

    fn run_checks(&mut self) {
        let checks = std::mem::take(&mut self.checks);
        let verdicts: Vec<Verdict> = checks
            .par_iter()
            .map(|&(i, j)| self.check(&self.src.entries[i], &self.dst.entries[j]))
            .collect();
        for (&(i, j), verdict) in checks.iter().zip(verdicts) {
            let a = &self.src.entries[i];
            let b = &self.dst.entries[j];
            match (a.kind, verdict) {
                (Kind::Dir, Verdict::Meta(m)) => self.plan.dir_metas.push(Item {
                    src: i,
                    dst: Some(j),
                    reason: Reason::Meta(m),
                }),
                (Kind::Dir, Verdict::Error(e)) => self.plan.errors.push(e),
                (Kind::Dir, _) => {}
                (_, Verdict::Same) => self.plan.unchanged.push(i),
                (_, Verdict::Rewrite(r)) => self.write(i, Some(j), r),
                (_, Verdict::Meta(m)) => {
                    let grouped = self.leader_of.contains_key(&i);
                    if a.kind == Kind::File && b.nlink > 1 && !grouped {
                        // chmod would reach names outside the tree too.
                        self.write(i, Some(j), Reason::Unlink);
                    } else {
                        self.mark_dirty(&a.rel.clone());
                        self.plan.metas.push(Item {
                            src: i,
                            dst: Some(j),
                            reason: Reason::Meta(m),
                        });
                    }
                }
                (_, Verdict::Error(e)) => self.plan.errors.push(e),
            }
        }
    }

    fn check(&self, a: &Entry, b: &Entry) -> Verdict {
        let mut m = MetaDiff {
            perm: a.kind != Kind::Symlink && a.perm != b.perm,
            owner: self.opts.owner && (a.uid != b.uid || a.gid != b.gid),
            // Folder times are compared here but always restored at the end anyway.
            mtime: a.mtime != b.mtime,
            xattr: false,
        };
        let look_inside = (a.kind == Kind::File && self.opts.checksum)
            || a.kind == Kind::Symlink
            || (self.opts.xattrs && (a.xattrs || b.xattrs));
        if !look_inside {
            // Everything needed is in the two `lstat`s: no syscall for the common no-op case.
            if a.kind != b.kind
                || (matches!(a.kind, Kind::CharDevice | Kind::BlockDevice) && a.rdev != b.rdev)
            {
                return Verdict::Rewrite(Reason::Device);
            }
            return if m.any() {
                Verdict::Meta(m)
            } else {
                Verdict::Same
            };
        }
        let located = self
            .src_dirs
            .parent_of(&a.rel)
            .and_then(|s| self.dst_dirs.parent_of(&b.rel).map(|d| (s, d)));
        let ((sdir, sname), (ddir, dname)) = match located {
            Ok(x) => x,
            Err(e) => return Verdict::Error(e),
        };
        let sp = At::new(&sdir, &sname);
        let dp = At::new(&ddir, &dname);
        match a.kind {
            Kind::File if self.opts.checksum => match (hash_at(sp), hash_at(dp)) {
                (Ok(x), Ok(y)) if x != y => return Verdict::Rewrite(Reason::Checksum),
                (Ok(_), Ok(_)) => {}
                (Err(e), _) | (_, Err(e)) => return Verdict::Error(e),
            },
            Kind::Symlink => match (sys::read_link_at(sp), sys::read_link_at(dp)) {
                (Ok(x), Ok(y)) if x != y => return Verdict::Rewrite(Reason::Target),
                (Ok(_), Ok(_)) => {}
                (Err(e), _) | (_, Err(e)) => return Verdict::Error(e),
            },
            Kind::CharDevice | Kind::BlockDevice if a.rdev != b.rdev => {
                return Verdict::Rewrite(Reason::Device)
            }
            _ => {}
        }
        if self.opts.xattrs && (a.xattrs || b.xattrs) {
            match sys::xattrs_equal(sp, dp) {
                Ok(eq) => m.xattr = !eq,
                Err(e) => return Verdict::Error(e),
            }
        }
        if m.any() {
            Verdict::Meta(m)
        } else {
            Verdict::Same
        }
    }

    fn resolve_followers(&mut self) {
        let rewritten: HashSet<usize> = self.plan.writes.iter().map(|w| w.src).collect();
        for (f, dst) in std::mem::take(&mut self.followers) {
            let leader = self.leader_of[&f];
            let linked = !rewritten.contains(&leader)
                && match (dst, self.leader_dst.get(&leader)) {
                    (Some(d), Some(&ld)) => {
                        let (x, y) = (&self.dst.entries[d], &self.dst.entries[ld]);
                        x.kind == Kind::File
                            && y.kind == Kind::File
                            && x.ino == y.ino
                            && x.dev == y.dev
                    }
                    _ => false,
                };
            if linked {
                self.plan.unchanged.push(f);
            } else {
                self.mark_dirty(&self.src.entries[f].rel.clone());
                self.plan.links.push(LinkItem {
                    src: f,
                    leader,
                    dst,
                });
            }
        }
    }

    /// Every folder whose contents changed gets its times restored at the end, deepest first.
    fn finish_dirs(&mut self) {
        let listed: HashSet<usize> = self.plan.dir_metas.iter().map(|i| i.src).collect();
        for (i, e) in self.src.entries.iter().enumerate() {
            if e.kind == Kind::Dir && !listed.contains(&i) && self.dirty.contains(&e.rel) {
                self.plan.dir_metas.push(Item {
                    src: i,
                    dst: None,
                    reason: Reason::Contents,
                });
            }
        }
        let src = &self.src.entries;
        self.plan
            .dir_metas
            .sort_by(|x, y| src[y.src].rel.cmp(&src[x.src].rel));
        self.plan.deletes.reverse();
    }
}

/// BLAKE3 of a file's content, read without following a symlink.
pub fn hash_at(at: At<'_>) -> Result<blake3::Hash, Error> {
    let file = sys::open_source(at)?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .map_err(|e| Error::io(Op::Checksum, at.path(), e))?;
    Ok(hasher.finalize())
}
