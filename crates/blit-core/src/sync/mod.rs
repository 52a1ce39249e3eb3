//! The engine. Both trees are walked folder by folder, in parallel; each pair of folder listings
//! is merged into actions that start at once, so copies run while the walk goes on, and memory
//! holds only the folders being merged (plus the few things that must wait for the end), not the
//! whole tree: a million-entry tree syncs in a few megabytes.
//!
//! The walk is Blit's own rather than a general-purpose walker's (such as `ignore`'s): it must
//! open every folder relative to its parent's descriptor without following links, `fstatat`
//! each name relative to its folder, and merge the two sides' listings folder by folder. That is
//! the cheapest syscall sequence per entry, the one that is safe against swapped-in symlinks, and
//! the one that works beyond `PATH_MAX`; no general walker offers it.
//!
//! Order, for safety:
//! 1. a destination folder's leftover temporaries (from a killed run) go when it is listed;
//! 2. a folder is created before anything in it (owner-only until filled);
//! 3. files, links and specials are written to a temporary in their folder and renamed over the
//!    final name only when complete;
//! 4. `mirror`: a destination entry the source lacks is deleted once its folder's source listing
//!    is complete (never beneath a source folder that could not be read, never an entry whose
//!    source could not be read); with `--delete-after` or `--max-delete`, only after step 6;
//! 5. once every folder is done: hard links, and rewrites of destination inodes shared in ways
//!    the source's are not;
//! 6. `move`: sources copied across filesystems are removed only after the copies are flushed
//!    (file, then folder);
//! 7. folder metadata, deepest first, so writing a child never disturbs a restored parent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cancel::CancelToken;
use crate::decide::{self, Decision, MetaDiff, Reason, Rules};
use crate::dest::{Destination, DryRun, LocalDest};
use crate::entry::{Entry, Kind, Version};
use crate::error::{Error, Op, Result, Rule};
use crate::filter::Filter;
use crate::options::{Mode, Options};
use crate::report::{Action, Actions, Event, Observer, Stats};
use crate::source::{self, Listed, Source};
use crate::sys::{self, CopyOutcome, MetaOpts, Method, Writing, Xattrs};
use crate::tempname;
use crate::tree::{Then, Visit};

mod delete;
mod finish;
mod links;
mod moves;
mod stats;
mod walk;
mod write;

use delete::*;
use links::*;
use moves::*;
use stats::*;
use write::*;

/// What the engine acts on: the transfer's [`Options`] and what this machine and caller decide
/// (what is compared and restored, workers, the umask, how a run is stopped).
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub job: Options,
    pub rules: Rules,
    pub meta: MetaOpts,
    pub umask: u32,
    pub workers: usize,
    pub cancel: CancelToken,
}

impl SyncOptions {
    /// The options for a source whose descriptions are taken as far as `trust` goes: owners
    /// restored only if trusted (and this thread may give files away), privileged xattrs left
    /// alone unless trusted.
    pub fn trusting(mut self, trust: crate::trust::Trust) -> Self {
        self.meta.owner &= trust.owner;
        self.rules.owner &= trust.owner;
        self.meta.system_xattrs = trust.system_xattrs;
        self.rules.system_xattrs = trust.system_xattrs;
        self
    }

    /// The destination keeps privileged metadata the fake-super way (see [`crate::fakesuper`]):
    /// entries are compared as what they stand for (owners and privileged xattrs included, and
    /// xattrs always, which hold the rest), and written as what this user can make.
    pub fn fake_super(mut self) -> Self {
        self.meta.fake_super = true;
        self.meta.owner = false;
        self.meta.xattrs = true;
        self.meta.system_xattrs = false;
        self.rules.owner = true;
        self.rules.link_owners = false;
        self.rules.xattrs = true;
        self.rules.system_xattrs = true;
        self
    }
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub actions: Actions,
    pub failures: Vec<Error>,
    pub interrupted: bool,
    pub unchanged: u64,
    pub kept: u64,
    pub stats: Stats,
}

/// One folder's entries, sorted by name.
#[derive(Default)]
struct Listing {
    entries: Vec<Entry>,
    /// Temporaries of an interrupted run.
    temps: Vec<OsString>,
    /// Names that were listed but could not be stat'ed: their counterparts are left alone.
    unknown: HashSet<OsString>,
    /// A peer's listing stays charged to its connection until merged.
    _charge: crate::budget::Charge,
}

/// A folder pair being merged.
struct Node<SD, DD> {
    src: Arc<SD>,
    dst: Arc<DD>,
    /// New entries in the destination folder may get a group other than ours: it is
    /// set-group-ID, or its group is not ours (which a `grpid` mount passes on too). Then an
    /// owner that looks like ours is still set explicitly.
    dst_setgid: bool,
    /// The destination folder has a default ACL (or was made inside one), which replaces the
    /// umask for what is created in it: no mode is certain to be kept, so it is always set.
    dst_acl: bool,
    /// Made by this run and not yet named: its new files are written under their final names.
    fresh: Option<Arc<Fresh<DD>>>,
}

/// A folder this run made under a temporary name (`tempname::next_dir`). Nothing in it can be
/// seen under its final path yet, so its new files are written under their final names at once,
/// with no unnamed file to link in and no temporary to rename: on 4 KiB files that is about a
/// seventh of the kernel's time per file (`bench/floor.c`, `blit` against `blitdir`). The folder
/// is renamed into place when the last task writing into it ends (its subfolders are made the
/// same way and named on their own). A run killed meanwhile leaves it under its temporary name,
/// which the next run removes with all it holds: a half-written file is never seen under its
/// final path. While it is being filled its handle holds a lock on it (`sys::hold_dir`), by
/// which another run tells it from a leftover.
struct Fresh<DD> {
    parent: Arc<DD>,
    temp: OsString,
    name: OsString,
    rel: PathBuf,
    /// The folder itself, locked while open.
    dir: Arc<DD>,
    /// Tasks still writing into it: the one that lists and merges it, and one per entry that
    /// merge hands to a worker.
    pending: AtomicUsize,
}

/// A folder pair to walk into: the source folder `a` named `name` in `src_parent`, and its
/// destination in `dst_parent` (which stood there before the run if `existing`).
struct Descent<SD, DD> {
    src_parent: Arc<SD>,
    dst_parent: Arc<DD>,
    name: OsString,
    a: Entry,
    existing: Option<Entry>,
    dst_setgid: bool,
    dst_acl: bool,
}

/// One task's claim on a [`Fresh`] folder; dropping the last claim names the folder, on every
/// way out of a task (done, failed or cancelled: what stands in it then is complete).
struct Hold<'s, 'a, S: Source, D: Destination> {
    sx: &'s Syncer<'a, S, D>,
    fresh: Arc<Fresh<D::Dir>>,
}

impl<'s, 'a, S: Source, D: Destination> Hold<'s, 'a, S, D> {
    fn another(sx: &'s Syncer<'a, S, D>, fresh: &Arc<Fresh<D::Dir>>) -> Self {
        fresh.pending.fetch_add(1, Ordering::AcqRel);
        Hold {
            sx,
            fresh: Arc::clone(fresh),
        }
    }
}

impl<S: Source, D: Destination> Drop for Hold<'_, '_, S, D> {
    fn drop(&mut self) {
        if self.fresh.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let f = &self.fresh;
            let named = self.sx.dst.publish_dir(&f.parent, &f.temp, &f.name);
            if let Err(e) = named {
                // Whatever stands at the name now is not this folder: the end phase leaves it
                // alone.
                let shown = self.sx.dst.root_path().join(&f.rel);
                self.sx.fail_src(&f.rel, naming_the_file(e, &shown));
            }
        }
    }
}

/// A folder whose metadata is restored at the end.
struct DirRecord {
    entry: Entry,
    reason: Option<Reason>,
    /// The folder stood in the destination before the run.
    existed: bool,
    /// Made by this run, with this owner and group (ours; a set-group-ID parent would have
    /// given its group, so then unknown): a `chown` to the same is skipped.
    made_as: Option<(u32, u32)>,
}

struct Syncer<'a, S: Source, D: Destination> {
    opts: &'a SyncOptions,
    filter: &'a Filter,
    observer: &'a dyn Observer,
    src: &'a S,
    dst: &'a D,
    creator: (u32, u32),
    actions: Mutex<Actions>,
    failures: Mutex<Vec<Error>>,
    methods: Mutex<BTreeMap<String, u64>>,
    busy: Busy,
    unchanged: AtomicU64,
    kept: AtomicU64,
    entries_seen: AtomicU64,
    dst_seen: AtomicU64,
    dirs: Mutex<Vec<DirRecord>>,
    deletes: Mutex<Vec<Entry>>,
    groups: Mutex<HashMap<(u64, u64), Group>>,
    /// Destination files with other names (`nlink > 1`) whose source is a single file: if two of
    /// them share an inode inside the tree, they must be split.
    shared: Mutex<Vec<(Entry, Entry)>>,
    /// `move`: sources to remove at the end (copied across filesystems, or already right);
    /// `true` when the destination still needs a flush.
    release: Mutex<Vec<Release>>,
    failed_src: Mutex<HashSet<PathBuf>>,
    cross_device: AtomicBool,
    /// Copy and deletion tasks handed out and not yet started (see [`Syncer::task`]).
    queued: AtomicUsize,
}

/// Tasks that may wait for a worker at once; past it, a merge does the work itself.
const QUEUED_TASKS: usize = 16_384;

/// Runs the sync of `source` into the local folder of `dest`; a dry run (the options say)
/// goes through [`DryRun`] on both sides, which is the one place that asks.
pub fn run_local<S: Source>(
    source: &S,
    dest: LocalDest,
    filter: &Filter,
    opts: &SyncOptions,
    observer: &dyn Observer,
) -> Result<Outcome> {
    if opts.job.dry_run {
        run(
            &DryRun::new(source),
            &DryRun::new(dest),
            filter,
            opts,
            observer,
        )
    } else {
        run(source, &dest, filter, opts, observer)
    }
}

/// Runs the whole sync of `source` into `dest`. `Err` only for refusals before anything
/// changed.
pub fn run<S: Source, D: Destination>(
    source: &S,
    dest: &D,
    filter: &Filter,
    opts: &SyncOptions,
    observer: &dyn Observer,
) -> Result<Outcome> {
    let started = Instant::now();
    let sx = Syncer::new(source, dest, filter, opts, observer);
    let src_entry = source.root()?;
    if src_entry.kind == Kind::Dir {
        sx.run_tree(src_entry)?;
    } else {
        sx.run_file(src_entry)?;
    }
    let mut phases = BTreeMap::from([("sync", started.elapsed().as_secs_f64())]);
    sx.finish(&mut phases);
    Ok(sx.into_outcome(phases))
}

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    fn new(
        src: &'a S,
        dst: &'a D,
        filter: &'a Filter,
        opts: &'a SyncOptions,
        observer: &'a dyn Observer,
    ) -> Self {
        Syncer {
            opts,
            filter,
            observer,
            src,
            dst,
            creator: dst.creator(),
            actions: Mutex::default(),
            failures: Mutex::default(),
            methods: Mutex::default(),
            busy: Busy::default(),
            unchanged: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            entries_seen: AtomicU64::new(0),
            dst_seen: AtomicU64::new(0),
            dirs: Mutex::default(),
            deletes: Mutex::default(),
            groups: Mutex::default(),
            shared: Mutex::default(),
            release: Mutex::default(),
            failed_src: Mutex::default(),
            cross_device: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        }
    }

    fn into_outcome(self, phases: BTreeMap<&'static str, f64>) -> Outcome {
        Outcome {
            actions: self.actions.into_inner().unwrap_or_default(),
            failures: self.failures.into_inner().unwrap_or_default(),
            interrupted: self.opts.cancel.is_cancelled(),
            unchanged: self.unchanged.into_inner(),
            kept: self.kept.into_inner(),
            stats: Stats {
                workers: self.opts.workers,
                phases,
                busy: self.busy.seconds(),
                methods: self.methods.into_inner().unwrap_or_default(),
                read_buffer: sys::BUFFER_MAX,
                kernel_chunk: sys::KERNEL_CHUNK,
                source_entries: self.entries_seen.into_inner(),
                dest_entries: self.dst_seen.into_inner(),
            },
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reporting
    // -----------------------------------------------------------------------------------------

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

    fn fail_src(&self, rel: &Path, err: Error) {
        self.failed_src.lock().unwrap().insert(rel.to_path_buf());
        self.fail(err);
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.is_cancelled()
    }

    fn is_move(&self) -> bool {
        self.opts.job.mode == Mode::Move
    }

    /// Whether new folders are filled under a temporary name ([`Fresh`]). Not for `move`: a
    /// source renamed into a folder that a killed run left unnamed would be removed with it by
    /// the next run. Not with `--resume`: its partial files must outlive a killed run.
    fn fresh_folders(&self) -> bool {
        D::FRESH_FOLDERS && !self.is_move() && !self.opts.job.resume
    }

    // -----------------------------------------------------------------------------------------
    // Listing
    // -----------------------------------------------------------------------------------------

    /// Lists and stats one destination folder's entries, filtered and sorted by name.
    fn list(&self, dir: &D::Dir, rel: &Path) -> Result<Listing> {
        let _clock = Clock::start(&self.busy.walk);
        let mut listed =
            self.dst
                .list(dir, rel, &|r, d| self.keep(r, d), self.opts.rules.xattrs)?;
        if self.opts.meta.fake_super {
            for (name, entry) in &mut listed.entries {
                let e = std::mem::replace(entry, Err(Error::Cancelled));
                *entry = self.presented(dir, name, e);
            }
        }
        Ok(self.listing(listed))
    }

    /// A destination entry as the entry it stands for: under fake super, what its attributes
    /// say (see [`crate::fakesuper`]); otherwise itself.
    fn presented(&self, dir: &D::Dir, name: &OsStr, e: Result<Entry>) -> Result<Entry> {
        match e {
            Ok(e) if self.opts.meta.fake_super && matches!(e.kind, Kind::File | Kind::Dir) => {
                let stored = self.dst.xattrs(dir, name)?;
                Ok(crate::fakesuper::present(e, &stored).0)
            }
            other => other,
        }
    }

    /// Lists one source folder, the same way.
    fn list_src(&self, dir: &S::Dir, rel: &Path) -> Result<Listing> {
        let _clock = Clock::start(&self.busy.walk);
        let listed = self
            .src
            .list(dir, rel, &|r, d| self.keep(r, d), self.opts.rules.xattrs)?;
        Ok(self.listing(listed))
    }

    fn keep(&self, rel: &Path, is_dir: bool) -> bool {
        !self.filter.excludes(rel, is_dir)
    }

    /// Sorts a listing by name; entries that could not be looked at become "unknown" (their
    /// counterparts are left alone), reported unless they simply vanished.
    fn listing(&self, listed: Listed) -> Listing {
        let mut unknown = HashSet::new();
        // Collected in place (the standard library reuses the source vector's buffer for a
        // `filter_map` into smaller items): a folder's listing never exists twice at once, which
        // on wide folders was most of each worker's memory.
        let mut entries: Vec<Entry> = listed
            .entries
            .into_iter()
            .filter_map(|(name, entry)| match entry {
                Ok(e) => Some(e),
                Err(e) => {
                    if !is_not_found(&e) {
                        self.fail(e);
                    }
                    unknown.insert(name);
                    None
                }
            })
            .collect();
        entries.sort_unstable_by(Entry::listing_cmp);
        Listing {
            entries,
            unknown,
            temps: listed.temps,
            _charge: listed.charge,
        }
    }

    /// Whether the destination folder `name` in `dir` has a default ACL. `b` is the walk's
    /// entry for it, whose xattr probe (when xattrs are kept) already tells a folder without
    /// any.
    fn default_acl(&self, dir: &D::Dir, name: &OsStr, b: Option<&Entry>) -> bool {
        if self.opts.rules.xattrs && b.is_some_and(|b| !b.xattrs) {
            return false;
        }
        self.dst.has_default_acl(dir, name)
    }

    /// Whether new entries in the destination folder `d` may get a group other than ours.
    fn gives_group(&self, d: &Entry) -> bool {
        d.perm & 0o2000 != 0 || d.gid != self.creator.1
    }

    /// The xattrs a destination entry should get, when xattrs are kept.
    fn xattrs_of(&self, dir: &S::Dir, name: &OsStr, a: &Entry) -> Result<Option<Xattrs>> {
        self.wanted_xattrs(a, || self.src.inside(dir, name, a).xattrs())
    }

    /// As [`Self::xattrs_of`], with `read` reaching the source entry only when it must.
    fn wanted_xattrs(
        &self,
        a: &Entry,
        read: impl FnOnce() -> Result<Xattrs>,
    ) -> Result<Option<Xattrs>> {
        if !self.opts.meta.xattrs {
            return Ok(None);
        }
        if !a.xattrs {
            // The walk looked and saw none (roots, never looked at, say "maybe"): no need to
            // read them again.
            return Ok(Some(Xattrs::new()));
        }
        read().map(Some)
    }
}

/// Runs `f` on every item, on the pool when there is one. The end of a run (deletions, folder
/// metadata) touches hundreds of entries after a small change; done one by one it was a
/// quarter of an incremental mirror.
fn in_parallel<T: Send>(
    pool: Option<&rayon::ThreadPool>,
    items: Vec<T>,
    f: impl Fn(T) + Send + Sync,
) {
    use rayon::prelude::*;
    match pool {
        Some(pool) if items.len() > 1 => pool.install(|| items.into_par_iter().for_each(f)),
        _ => items.into_iter().for_each(f),
    }
}

/// A source entry's folder and name, and its destination folder (if it exists) and name.
struct Pair<'p, SD, DD> {
    src: &'p Arc<SD>,
    sname: &'p OsStr,
    dst: &'p Arc<DD>,
    dname: &'p OsStr,
    /// New files in the destination folder may get a group other than ours (see
    /// `Node::dst_setgid`), so `chown` must run.
    setgid: bool,
    /// See `Node::dst_acl`.
    acl: bool,
    /// The folder is `Fresh`: a new entry goes straight under its final name.
    direct: bool,
}

impl<'p, SD, DD> Pair<'p, SD, DD> {
    /// An entry reached by path at the end of a run, or as a lone file: its destination folder
    /// was not looked at, so nothing is assumed about the group and ACL it gives.
    fn looked_up(src: &'p Arc<SD>, sname: &'p OsStr, dst: &'p Arc<DD>, dname: &'p OsStr) -> Self {
        Pair {
            src,
            sname,
            dst,
            dname,
            setgid: true,
            acl: true,
            direct: false,
        }
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// How many folders deep `rel` lies: its separators, counted in one pass over its bytes (a tree
/// 10,000 folders deep has as many records, each with a path of 20 KB).
fn depth(rel: &Path) -> usize {
    let bytes = rel.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return 0;
    }
    1 + bytes
        .iter()
        .filter(|&&b| b == std::path::MAIN_SEPARATOR as u8)
        .count()
}

fn parent_rel(rel: &Path) -> PathBuf {
    rel.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests;
