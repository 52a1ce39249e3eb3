//! Carries a plan out. Order matters for safety and is fixed:
//!
//! 1. leftover temporaries of an interrupted run are removed;
//! 2. folders are created, parents first (owner-only until filled);
//! 3. files, links and specials are written in parallel, each to a temporary in its target folder
//!    and renamed over the final name only when complete;
//! 4. hard links, then metadata-only updates;
//! 5. for `move`, sources are released only after their copies are flushed (file, then folder);
//! 6. deletions, only now that everything the source has is in place;
//! 7. folder metadata, deepest first, so writing a child never disturbs a parent's restored time.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rayon::prelude::*;

use crate::cancel::CancelToken;
use crate::dirs::DirCache;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Result};
use crate::plan::{Item, Plan, Reason};
use crate::report::{Action, Actions, Event, Observer, Stats};
use crate::sys::{self, At, CopyOutcome, Dir, FastPaths, MetaOpts, Method};
use crate::tempname;
use crate::walk::Tree;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    Copy,
    Mirror,
    Move,
}

#[derive(Clone, Debug)]
pub struct ExecOptions {
    pub mode: ExecMode,
    pub dry_run: bool,
    pub fsync: bool,
    pub verify: bool,
    pub workers: usize,
    pub meta: MetaOpts,
    pub umask: u32,
    pub max_delete: Option<u64>,
    pub cancel: CancelToken,
}

/// What execution produced, merged into the summary by the job.
#[derive(Debug, Default)]
pub struct Outcome {
    pub actions: Actions,
    pub failures: Vec<Error>,
    pub interrupted: bool,
    pub stats: Stats,
}

/// A temporary in a destination folder, removed on drop unless renamed into place, so an error or
/// a cancellation never leaves one behind.
struct TempGuard {
    dir: Arc<Dir>,
    name: OsString,
    armed: bool,
}

impl TempGuard {
    fn new(dir: &Arc<Dir>) -> Self {
        TempGuard {
            dir: Arc::clone(dir),
            name: tempname::next(),
            armed: true,
        }
    }

    fn at(&self) -> At<'_> {
        At::new(&self.dir, &self.name)
    }

    fn commit(mut self, final_name: &OsStr) -> Result<()> {
        sys::rename_at(self.at(), At::new(&self.dir, final_name))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = sys::unlink_at(At::new(&self.dir, &self.name));
        }
    }
}

/// The two trees' folder handles.
pub struct Dirs<'a> {
    pub src: &'a DirCache,
    pub dst: &'a DirCache,
}

pub fn execute(
    src: &Tree,
    dst: &Tree,
    dirs: Dirs<'_>,
    plan: &Plan,
    opts: &ExecOptions,
    observer: &dyn Observer,
) -> Outcome {
    let ex = Executor {
        src,
        dst,
        src_dirs: dirs.src,
        dst_dirs: dirs.dst,
        plan,
        opts,
        observer,
        actions: Mutex::new(Actions::default()),
        failures: Mutex::new(Vec::new()),
        methods: Mutex::new(Default::default()),
        fast: FastPaths::default(),
        failed_dirs: Mutex::new(HashSet::new()),
        failed_src: Mutex::new(HashSet::new()),
        released: Mutex::new(Vec::new()),
        cross_device: AtomicBool::new(false),
        setgid_dirs: dst
            .entries
            .iter()
            .filter(|e| e.kind == Kind::Dir && e.perm & 0o2000 != 0)
            .map(|e| e.rel.clone())
            .collect(),
        creator: sys::creator(),
    };
    ex.run()
}

struct Executor<'a> {
    src: &'a Tree,
    dst: &'a Tree,
    src_dirs: &'a DirCache,
    dst_dirs: &'a DirCache,
    plan: &'a Plan,
    opts: &'a ExecOptions,
    observer: &'a dyn Observer,
    actions: Mutex<Actions>,
    failures: Mutex<Vec<Error>>,
    methods: Mutex<std::collections::BTreeMap<String, u64>>,
    fast: FastPaths,
    /// Folders that could not be created: their contents are not attempted (one error suffices).
    failed_dirs: Mutex<HashSet<PathBuf>>,
    /// Source entries whose write failed (a move keeps them; their links are not made).
    failed_src: Mutex<HashSet<usize>>,
    /// Move: source entries copied across devices, to remove once flushed.
    released: Mutex<Vec<usize>>,
    /// Move: renames across devices failed once, so copy from now on.
    cross_device: AtomicBool,
    /// Destination folders that pass their group to new files.
    setgid_dirs: HashSet<PathBuf>,
    creator: (u32, u32),
}

impl Executor<'_> {
    fn run(self) -> Outcome {
        let mut phases = std::collections::BTreeMap::new();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.workers.max(1))
            .build()
            .expect("cannot start worker threads");

        let t = Instant::now();
        self.remove_leftovers();
        self.make_dirs();
        pool.install(|| {
            self.plan
                .writes
                .par_iter()
                .with_max_len(1)
                .for_each(|item| self.write(item))
        });
        self.make_links();
        pool.install(|| {
            self.plan
                .metas
                .par_iter()
                .for_each(|item| self.update_meta(item))
        });
        phases.insert("copy", t.elapsed().as_secs_f64());

        let t = Instant::now();
        if self.opts.mode == ExecMode::Move {
            self.release_sources();
        }
        if self.opts.mode == ExecMode::Mirror {
            self.delete_extras();
        }
        phases.insert("delete", t.elapsed().as_secs_f64());

        let t = Instant::now();
        self.finish_dirs();
        if self.opts.mode == ExecMode::Move {
            self.remove_source_dirs();
        }
        phases.insert("finish", t.elapsed().as_secs_f64());

        Outcome {
            actions: self.actions.into_inner().unwrap(),
            failures: self.failures.into_inner().unwrap(),
            interrupted: self.opts.cancel.is_cancelled(),
            stats: Stats {
                workers: self.opts.workers,
                phases,
                methods: self.methods.into_inner().unwrap(),
                ..Stats::default()
            },
        }
    }

    fn s(&self, i: usize) -> &Entry {
        &self.src.entries[i]
    }

    fn d(&self, j: usize) -> &Entry {
        &self.dst.entries[j]
    }

    /// The source entry's folder handle and name.
    fn src_loc(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        self.src_dirs.parent_of(rel)
    }

    /// The destination entry's folder handle and name.
    fn dst_loc(&self, rel: &Path) -> Result<(Arc<Dir>, OsString)> {
        self.dst_dirs.parent_of(rel)
    }

    fn emit(&self, action: Action, kind: Kind, rel: &Path, reason: &str, bytes: u64) {
        self.actions.lock().unwrap().add(action, bytes);
        self.observer.event(&Event {
            action,
            kind,
            rel,
            reason,
            bytes,
        });
    }

    fn fail(&self, err: Error) {
        if matches!(err, Error::Cancelled) {
            return;
        }
        self.observer.failure(&err);
        self.failures.lock().unwrap().push(err);
    }

    fn count_method(&self, m: &str) {
        *self
            .methods
            .lock()
            .unwrap()
            .entry(m.to_owned())
            .or_default() += 1;
    }

    /// The owner a new file in `rel`'s folder gets without `chown`: the process's, unless the
    /// destination folder is setgid (then the group is inherited and `chown` must run).
    fn default_owner(&self, rel: &Path) -> Option<(u32, u32)> {
        let parent = parent_rel(rel);
        if self.setgid_dirs.contains(&parent) {
            None
        } else {
            Some(self.creator)
        }
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.is_cancelled()
    }

    /// True when an ancestor folder of `rel` could not be made; its error was already reported.
    fn under_failed_dir(&self, rel: &Path) -> bool {
        let failed = self.failed_dirs.lock().unwrap();
        !failed.is_empty() && rel.ancestors().skip(1).any(|a| failed.contains(a))
    }

    fn remove_leftovers(&self) {
        if self.opts.dry_run {
            return;
        }
        for rel in &self.dst.leftovers {
            let removed = self
                .dst_loc(rel)
                .and_then(|(dir, name)| sys::unlink_at(At::new(&dir, &name)));
            if let Err(e) = removed {
                self.fail(e);
            }
        }
    }

    fn make_dirs(&self) {
        for item in &self.plan.mkdirs {
            if self.cancelled() {
                return;
            }
            let e = self.s(item.src);
            if self.under_failed_dir(&e.rel) {
                self.failed_dirs.lock().unwrap().insert(e.rel.clone());
                continue;
            }
            let result = if self.opts.dry_run {
                Ok(())
            } else if e.rel.as_os_str().is_empty() {
                let root = self.dst_dirs.root();
                std::fs::create_dir_all(root).map_err(|err| Error::io(Op::Mkdir, root, err))
            } else {
                // A non-folder standing there (a symlink included) is removed, never followed.
                self.dst_loc(&e.rel).and_then(|(dir, name)| {
                    let at = At::new(&dir, &name);
                    item.dst.map_or(Ok(()), |_| sys::unlink_at(at))?;
                    sys::mkdir_at(at)
                })
            };
            match result {
                Ok(()) => {
                    let action = if item.dst.is_some() {
                        Action::Update
                    } else {
                        Action::Create
                    };
                    self.emit(action, Kind::Dir, &e.rel, &item.reason.label(), 0);
                }
                Err(err) => {
                    self.failed_dirs.lock().unwrap().insert(e.rel.clone());
                    self.fail(err);
                }
            }
        }
    }

    fn write(&self, item: &Item) {
        if self.cancelled() {
            return;
        }
        let e = self.s(item.src);
        if e.kind == Kind::Socket || self.under_failed_dir(&e.rel) {
            return;
        }
        let action = if item.dst.is_none() {
            Action::Create
        } else {
            Action::Update
        };
        let bytes = if e.kind == Kind::File { e.size } else { 0 };
        if self.opts.dry_run {
            self.emit(action, e.kind, &e.rel, &item.reason.label(), bytes);
            return;
        }
        match self.write_entry(item) {
            Ok((bytes, method)) => {
                self.count_method(method);
                self.emit(action, e.kind, &e.rel, &item.reason.label(), bytes);
            }
            Err(err) => {
                self.failed_src.lock().unwrap().insert(item.src);
                self.fail(err);
            }
        }
    }

    /// Puts one non-folder entry in place; returns the bytes written and the method's name.
    fn write_entry(&self, item: &Item) -> Result<(u64, &'static str)> {
        let e = self.s(item.src);
        let (sdir, sname) = self.src_loc(&e.rel)?;
        let (ddir, dname) = self.dst_loc(&e.rel)?;
        let (src, dst) = (At::new(&sdir, &sname), At::new(&ddir, &dname));
        if self.opts.mode == ExecMode::Move && !self.cross_device.load(Ordering::Relaxed) {
            if let Some(r) = self.try_move_rename(item, src, dst) {
                return r.map(|()| (0, "rename"));
            }
        }
        let result = match e.kind {
            Kind::File => self
                .copy_file(item, src, &ddir, &dname)
                .map(|(n, m)| (n, method_name(m))),
            Kind::Symlink => {
                let target = sys::read_link_at(src)?;
                self.place(item, &ddir, &dname, |tmp| {
                    sys::symlink_at(&target, tmp, src)?;
                    sys::apply_meta_at(tmp, src, e, self.opts.meta)
                })
                .map(|()| (0, "symlink"))
            }
            _ => self
                .place(item, &ddir, &dname, |tmp| {
                    sys::make_special_at(tmp, e)?;
                    sys::apply_meta_at(tmp, src, e, self.opts.meta)
                })
                .map(|()| (0, "special")),
        }?;
        if self.opts.mode == ExecMode::Move {
            self.released.lock().unwrap().push(item.src);
        }
        Ok(result)
    }

    /// Move within one filesystem: one rename carries content and every piece of metadata.
    /// Returns `None` when the rename cannot apply (across devices), so the caller copies.
    fn try_move_rename(&self, item: &Item, src: At<'_>, dst: At<'_>) -> Option<Result<()>> {
        if let Some(j) = item.dst {
            if let Err(e) = self.clear_replaced(j) {
                return Some(Err(e));
            }
        }
        match sys::try_rename_at(src, dst) {
            Ok(()) => Some(Ok(())),
            Err(e) if sys::is_cross_device(&e) => {
                self.cross_device.store(true, Ordering::Relaxed);
                None
            }
            Err(e) => Some(Err(Error::io(Op::Rename, dst.path(), e))),
        }
    }

    /// Creates an entry at a temporary with `make`, clears what it replaces, renames it in place.
    fn place(
        &self,
        item: &Item,
        dir: &Arc<Dir>,
        name: &OsStr,
        make: impl FnOnce(At<'_>) -> Result<()>,
    ) -> Result<()> {
        let guard = TempGuard::new(dir);
        make(guard.at())?;
        if let Some(j) = item.dst {
            self.clear_replaced(j)?;
        }
        guard.commit(name)
    }

    /// When a folder in the destination is replaced by a non-folder, its contents go first.
    fn clear_replaced(&self, j: usize) -> Result<()> {
        let Some(&end) = self.plan.subtree_end.get(&j) else {
            return Ok(());
        };
        for k in (j + 1..end).rev() {
            self.delete_one(k)?;
        }
        let rel = &self.d(j).rel;
        let (dir, name) = self.dst_loc(rel)?;
        let at = At::new(&dir, &name);
        self.dst_dirs.forget(rel);
        match sys::rmdir_at(at) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::io(
                Op::Delete,
                at.path(),
                std::io::Error::other("folder still holds excluded or unlisted entries"),
            )),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn copy_file(
        &self,
        item: &Item,
        src: At<'_>,
        ddir: &Arc<Dir>,
        dname: &OsStr,
    ) -> Result<(u64, Method)> {
        let progress = |n: u64| self.observer.progress(n);
        // A source that changes while read is copied again; a third change is reported.
        for attempt in 0..3 {
            let guard = TempGuard::new(ddir);
            let req = sys::CopyRequest {
                src,
                expected: (attempt == 0).then(|| self.s(item.src)),
                tmp: guard.at(),
                meta: self.opts.meta,
                src_xattrs: self.s(item.src).xattrs || !cfg!(unix),
                umask: self.opts.umask,
                default_owner: self.default_owner(&self.s(item.src).rel),
                fsync: self.opts.fsync || self.opts.mode == ExecMode::Move,
                fast: &self.fast,
                cancel: &self.opts.cancel,
                progress: &progress,
            };
            match sys::copy_to_temp(&req)? {
                CopyOutcome::Changed => continue,
                CopyOutcome::Done { bytes, method } => {
                    if self.opts.verify {
                        verify_copy(src, guard.at())?;
                    }
                    if let Some(j) = item.dst {
                        self.clear_replaced(j)?;
                    }
                    guard.commit(dname)?;
                    return Ok((bytes, method));
                }
            }
        }
        Err(Error::Changed { path: src.path() })
    }

    fn make_links(&self) {
        for link in &self.plan.links {
            if self.cancelled() {
                return;
            }
            let e = self.s(link.src);
            if self.under_failed_dir(&e.rel) {
                continue;
            }
            let leader_rel = &self.s(link.leader).rel;
            let reason = format!("to {}", crate::names::escape_rel(leader_rel));
            if self.opts.dry_run {
                self.emit(Action::Link, Kind::File, &e.rel, &reason, 0);
                continue;
            }
            if self.failed_src.lock().unwrap().contains(&link.leader) {
                self.failed_src.lock().unwrap().insert(link.src);
                continue;
            }
            let item = Item {
                src: link.src,
                dst: link.dst,
                reason: Reason::Link,
            };
            let result = self.link_one(&item, &e.rel, leader_rel);
            match result {
                Ok(()) => self.emit(Action::Link, Kind::File, &e.rel, &reason, 0),
                Err(err) => {
                    self.failed_src.lock().unwrap().insert(link.src);
                    self.fail(err);
                }
            }
        }
    }

    fn link_one(&self, item: &Item, rel: &Path, leader_rel: &Path) -> Result<()> {
        let (sdir, sname) = self.src_loc(rel)?;
        let (ddir, dname) = self.dst_loc(rel)?;
        if self.opts.mode == ExecMode::Move && !self.cross_device.load(Ordering::Relaxed) {
            let (src, dst) = (At::new(&sdir, &sname), At::new(&ddir, &dname));
            if let Some(r) = self.try_move_rename(item, src, dst) {
                return r;
            }
        }
        let (ldir, lname) = self.dst_loc(leader_rel)?;
        self.place(item, &ddir, &dname, |tmp| {
            sys::hard_link_at(At::new(&ldir, &lname), tmp)
        })?;
        if self.opts.mode == ExecMode::Move {
            self.released.lock().unwrap().push(item.src);
        }
        Ok(())
    }

    fn update_meta(&self, item: &Item) {
        if self.cancelled() {
            return;
        }
        let e = self.s(item.src);
        if !self.opts.dry_run {
            if let Err(err) = self.apply_meta(&e.rel, e) {
                self.failed_src.lock().unwrap().insert(item.src);
                return self.fail(err);
            }
        }
        self.emit(Action::Metadata, e.kind, &e.rel, &item.reason.label(), 0);
    }

    fn apply_meta(&self, rel: &Path, e: &Entry) -> Result<()> {
        let (sdir, sname) = self.src_loc(rel)?;
        let (ddir, dname) = self.dst_loc(rel)?;
        sys::apply_meta_at(
            At::new(&ddir, &dname),
            At::new(&sdir, &sname),
            e,
            self.opts.meta,
        )
    }

    /// Move: removes each source entry whose destination is now complete and flushed. Entries
    /// renamed within one filesystem are already gone from the source.
    fn release_sources(&self) {
        if self.opts.dry_run || self.cancelled() {
            return;
        }
        let failed = self.failed_src.lock().unwrap().clone();
        let mut release: Vec<usize> = std::mem::take(&mut *self.released.lock().unwrap());
        // Entries that were already right, or only needed metadata: their destination may still
        // sit in cache from an earlier run, so flush it before the source goes.
        for &i in self
            .plan
            .unchanged
            .iter()
            .chain(self.plan.metas.iter().map(|m| &m.src))
        {
            let e = self.s(i);
            if failed.contains(&i) || e.kind == Kind::Dir {
                continue;
            }
            if e.kind == Kind::File {
                let flushed = self
                    .dst_loc(&e.rel)
                    .and_then(|(dir, name)| sys::fsync_at(At::new(&dir, &name)));
                if let Err(err) = flushed {
                    self.fail(err);
                    continue;
                }
            }
            release.push(i);
        }
        let parents: HashSet<PathBuf> = release
            .iter()
            .map(|&i| parent_rel(&self.s(i).rel))
            .collect();
        let mut unsynced = HashSet::new();
        for rel in &parents {
            if let Err(err) = self.dst_dirs.dir(rel).and_then(|d| sys::fsync_dir(&d)) {
                unsynced.insert(rel.clone());
                self.fail(err);
            }
        }
        for i in release {
            let rel = &self.s(i).rel;
            if unsynced.contains(&parent_rel(rel)) {
                continue;
            }
            let removed = self
                .src_loc(rel)
                .and_then(|(dir, name)| sys::unlink_at(At::new(&dir, &name)));
            if let Err(err) = removed {
                self.fail(err);
            }
        }
    }

    fn delete_one(&self, j: usize) -> Result<()> {
        let e = self.d(j);
        let (dir, name) = self.dst_loc(&e.rel)?;
        let at = At::new(&dir, &name);
        let removed = if e.kind == Kind::Dir {
            self.dst_dirs.forget(&e.rel);
            // `false`: it holds excluded entries, which a mirror leaves alone, so it stays too.
            sys::rmdir_at(at)
        } else {
            sys::unlink_at(at).map(|()| true)
        };
        match removed {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            // Already gone (removed by someone else meanwhile): the goal is reached.
            Err(err) if is_not_found(&err) => return Ok(()),
            Err(err) => return Err(err),
        }
        let bytes = if e.kind == Kind::File { e.size } else { 0 };
        self.emit(Action::Delete, e.kind, &e.rel, "not in source", bytes);
        Ok(())
    }

    fn delete_extras(&self) {
        if self.cancelled() {
            return;
        }
        let planned = self.plan.removals() as u64;
        if let Some(max) = self.opts.max_delete {
            if planned > max {
                self.fail(Error::Refused(format!(
                    "{planned} deletions planned, more than --max-delete {max}: nothing deleted"
                )));
                return;
            }
        }
        for &j in &self.plan.deletes {
            if self.opts.dry_run {
                let e = self.d(j);
                let bytes = if e.kind == Kind::File { e.size } else { 0 };
                self.emit(Action::Delete, e.kind, &e.rel, "not in source", bytes);
                continue;
            }
            if let Err(err) = self.delete_one(j) {
                self.fail(err);
            }
        }
    }

    fn finish_dirs(&self) {
        if self.cancelled() {
            return;
        }
        for item in &self.plan.dir_metas {
            let e = self.s(item.src);
            if self.under_failed_dir(&e.rel) || self.failed_dirs.lock().unwrap().contains(&e.rel) {
                continue;
            }
            if !self.opts.dry_run {
                if let Err(err) = self.apply_meta(&e.rel, e) {
                    self.fail(err);
                    continue;
                }
            }
            if let Reason::Meta(_) = item.reason {
                self.emit(Action::Metadata, Kind::Dir, &e.rel, &item.reason.label(), 0);
            }
        }
    }

    /// Move: source folders emptied by the move are removed, deepest first, the root included;
    /// one still holding something (an excluded or failed entry) stays.
    fn remove_source_dirs(&self) {
        if self.opts.dry_run || self.cancelled() {
            return;
        }
        for e in self.src.entries.iter().rev() {
            if e.kind != Kind::Dir {
                continue;
            }
            let removed = self
                .src_loc(&e.rel)
                .and_then(|(dir, name)| sys::rmdir_at(At::new(&dir, &name)));
            if let Err(err) = removed {
                self.fail(err);
            }
        }
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn parent_rel(rel: &Path) -> PathBuf {
    rel.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Reads back the written temporary and the source, and refuses the copy if their BLAKE3 differ.
fn verify_copy(src: At<'_>, tmp: At<'_>) -> Result<()> {
    let want = crate::plan::hash_at(src)?;
    let got = crate::plan::hash_at(tmp)?;
    if want == got {
        Ok(())
    } else {
        Err(Error::io(
            Op::Checksum,
            tmp.path(),
            std::io::Error::other("written copy differs from the source (BLAKE3 mismatch)"),
        ))
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Empty => "empty",
        Method::Native => "native",
        Method::Clone => "clone",
        Method::KernelCopy => "kernel_copy",
        Method::Sparse => "sparse",
        Method::ReadWrite => "read_write",
    }
}
