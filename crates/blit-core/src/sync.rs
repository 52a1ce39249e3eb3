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
use crate::dirs::DirCache;
use crate::entry::{Entry, Kind, MTime};
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::options::{Mode, Options};
use crate::report::{Action, Actions, Event, Observer, Stats};
use crate::source::{self, Listed, Source};
use crate::sys::{self, At, CopyOutcome, Dir, FastPaths, MetaOpts, Method, Xattrs};
use crate::tempname;
use crate::tree::{Then, Visit};

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
    /// Never follow a symlink at the destination root's own name (a daemon's push: the name was
    /// checked beneath the module, and another session could swap a link in).
    pub root_nofollow: bool,
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
    _charge: crate::remote::budget::Charge,
}

/// A folder pair being merged.
struct Node<D> {
    src: Arc<D>,
    /// `None` in a dry run when the folder does not exist yet.
    dst: Option<Arc<Dir>>,
    /// New entries in the destination folder may get a group other than ours: it is
    /// set-group-ID, or its group is not ours (which a `grpid` mount passes on too). Then an
    /// owner that looks like ours is still set explicitly.
    dst_setgid: bool,
    /// The destination folder has a default ACL (or was made inside one), which replaces the
    /// umask for what is created in it: no mode is certain to be kept, so it is always set.
    dst_acl: bool,
    /// Made by this run and not yet named: its new files are written under their final names.
    fresh: Option<Arc<Fresh>>,
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
struct Fresh {
    parent: Arc<Dir>,
    temp: OsString,
    name: OsString,
    rel: PathBuf,
    /// The folder itself, locked while open.
    dir: Arc<Dir>,
    /// Tasks still writing into it: the one that lists and merges it, and one per entry that
    /// merge hands to a worker.
    pending: AtomicUsize,
}

/// One task's claim on a [`Fresh`] folder; dropping the last claim names the folder, on every
/// way out of a task (done, failed or cancelled: what stands in it then is complete).
struct Hold<'s, 'a, S: Source> {
    sx: &'s Syncer<'a, S>,
    fresh: Arc<Fresh>,
}

impl<'s, 'a, S: Source> Hold<'s, 'a, S> {
    fn another(sx: &'s Syncer<'a, S>, fresh: &Arc<Fresh>) -> Self {
        fresh.pending.fetch_add(1, Ordering::AcqRel);
        Hold {
            sx,
            fresh: Arc::clone(fresh),
        }
    }
}

impl<S: Source> Drop for Hold<'_, '_, S> {
    fn drop(&mut self) {
        if self.fresh.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let f = &self.fresh;
            let named = sys::publish_dir(At::new(&f.parent, &f.temp), At::new(&f.parent, &f.name));
            if let Err(e) = named {
                // Whatever stands at the name now is not this folder: the end phase leaves it
                // alone.
                let shown = self.sx.dst_dirs.root().join(&f.rel);
                self.sx.fail_src(&f.rel, naming_the_file(e, &shown));
            }
        }
    }
}

/// Later names of a hard-link group wait for the end, when the first name is surely written.
struct Group {
    leader: PathBuf,
    written: bool,
    followers: Vec<(Entry, Option<Entry>)>,
}

/// A `move`'s source to remove at the end, once its copy is flushed.
struct Release {
    rel: PathBuf,
    /// The copy is a file written by this run, to flush first.
    flush: bool,
    /// A file's size, mtime and inode when it was copied: it is removed only if still so.
    seen: Option<(u64, MTime, u64)>,
}

impl Release {
    fn of(a: &Entry, flush: bool) -> Release {
        Release {
            rel: a.rel.clone(),
            flush,
            seen: (a.kind == Kind::File).then_some((a.size, a.mtime, a.ino)),
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

/// Worker time per activity of the sync phase, for `--stats`: walk, plan and copy overlap in
/// wall time (each worker takes whatever is next), so only their sums say where the time went.
#[derive(Default)]
struct Busy {
    walk: AtomicU64,
    plan: AtomicU64,
    copy: AtomicU64,
    delete: AtomicU64,
}

impl Busy {
    fn seconds(&self) -> BTreeMap<&'static str, f64> {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        BTreeMap::from([
            ("walk", s(&self.walk)),
            ("plan", s(&self.plan)),
            ("copy", s(&self.copy)),
            ("delete", s(&self.delete)),
        ])
    }
}

/// Adds the time until it is dropped to its counter.
struct Clock<'c>(&'c AtomicU64, Instant);

impl<'c> Clock<'c> {
    fn start(counter: &'c AtomicU64) -> Self {
        Clock(counter, Instant::now())
    }
}

impl Drop for Clock<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_add(self.1.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

struct Syncer<'a, S: Source> {
    opts: &'a SyncOptions,
    filter: &'a Filter,
    observer: &'a dyn Observer,
    src: &'a S,
    dst_dirs: DirCache,
    fast: FastPaths,
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

/// Runs the whole sync of `source` into `dst_root`. `Err` only for refusals before anything
/// changed.
pub fn run<S: Source>(
    source: &S,
    dst_root: &Path,
    filter: &Filter,
    opts: &SyncOptions,
    observer: &dyn Observer,
) -> Result<Outcome> {
    let started = Instant::now();
    let sx = Syncer::new(source, dst_root, filter, opts, observer);
    let src_entry = source.root()?;
    if src_entry.kind == Kind::Dir {
        sx.run_tree(dst_root, src_entry)?;
    } else {
        sx.run_file(src_entry)?;
    }
    let mut phases = BTreeMap::from([("sync", started.elapsed().as_secs_f64())]);
    sx.finish(&mut phases);
    Ok(sx.into_outcome(phases))
}

impl<'a, S: Source> Syncer<'a, S> {
    fn new(
        src: &'a S,
        dst_root: &Path,
        filter: &'a Filter,
        opts: &'a SyncOptions,
        observer: &'a dyn Observer,
    ) -> Self {
        Syncer {
            opts,
            filter,
            observer,
            src,
            dst_dirs: DirCache::new(dst_root.to_path_buf()),
            fast: FastPaths::default(),
            creator: sys::creator(),
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
        sys::FRESH_FOLDERS && !self.is_move() && !self.opts.job.resume
    }

    // -----------------------------------------------------------------------------------------
    // Listing
    // -----------------------------------------------------------------------------------------

    /// Lists and stats one destination folder's entries, filtered and sorted by name.
    fn list(&self, dir: &Dir, rel: &Path) -> Result<Listing> {
        let _clock = Clock::start(&self.busy.walk);
        let mut listed =
            source::list_local(dir, rel, &|r, d| self.keep(r, d), self.opts.rules.xattrs)?;
        if self.opts.meta.fake_super {
            for (name, entry) in &mut listed.entries {
                let e = std::mem::replace(entry, Err(Error::Cancelled));
                *entry = self.presented(At::new(dir, name), e);
            }
        }
        Ok(self.listing(listed))
    }

    /// A destination entry as the entry it stands for: under fake super, what its attributes
    /// say (see [`crate::fakesuper`]); otherwise itself.
    fn presented(&self, at: At<'_>, e: Result<Entry>) -> Result<Entry> {
        match e {
            Ok(e) if self.opts.meta.fake_super && matches!(e.kind, Kind::File | Kind::Dir) => {
                let stored = sys::xattrs_of(at)?;
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

    /// Whether the destination folder `at` has a default ACL. `b` is the walk's entry for it,
    /// whose xattr probe (when xattrs are kept) already tells a folder without any.
    fn default_acl(&self, at: At<'_>, b: Option<&Entry>) -> bool {
        if self.opts.rules.xattrs && b.is_some_and(|b| !b.xattrs) {
            return false;
        }
        sys::has_default_acl(at)
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

    // -----------------------------------------------------------------------------------------
    // Roots
    // -----------------------------------------------------------------------------------------

    fn run_tree(&self, dst_root: &Path, mut src_entry: Entry) -> Result<()> {
        src_entry.xattrs = self.opts.rules.xattrs;
        let src = Arc::new(self.src.open_root()?);
        let src_list = self.list_src(&src, Path::new(""));
        let looked = if self.opts.root_nofollow {
            std::fs::symlink_metadata(dst_root)
        } else {
            std::fs::metadata(dst_root)
        };
        let dst_md = match looked {
            Ok(md) => Some(md),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(Op::Stat, dst_root, e)),
        };
        let (dst, dst_list, dst_entry) = match dst_md {
            Some(md) if !md.is_dir() => {
                return Err(Error::Refused(format!(
                    "destination {} is not a folder, but the source is",
                    crate::names::escape(dst_root)
                )))
            }
            Some(md) => {
                let root_entry = Entry::from_metadata(PathBuf::new(), &md);
                // Changed through its own handle: the root may be a link to the folder the
                // user means, which its parent's handle and name would not follow.
                let d = match self.open_dst_root(dst_root) {
                    Ok(d) => d,
                    Err(e) => {
                        // Perhaps unreadable even to its owner: opened up by name, then again.
                        let Ok((outer, name)) = self.dst_dirs.parent_of(Path::new("")) else {
                            return Err(e);
                        };
                        self.open_up(At::new(&outer, &name), &root_entry);
                        self.open_dst_root(dst_root)?
                    }
                };
                if let Ok((dd, dn)) = self.dst_dirs.finish_at(Path::new("")) {
                    self.open_up(At::new(&dd, &dn), &root_entry);
                }
                let list = self.list(&d, Path::new(""))?;
                let mut e = Entry::from_metadata(PathBuf::new(), &md);
                e.xattrs = self.opts.rules.xattrs;
                let e = self.presented(At::new(&d, OsStr::new(".")), Ok(e))?;
                (Some(d), Some(list), Some(e))
            }
            None => (None, None, None),
        };
        if let Ok(sl) = &src_list {
            let dst_has_any = dst_list.as_ref().is_some_and(|l| !l.entries.is_empty());
            if self.opts.job.mode == Mode::Mirror
                && !self.opts.job.force
                && sl.entries.is_empty()
                && sl.unknown.is_empty()
                && dst_has_any
            {
                return Err(Error::Refused(format!(
                    "source {} is empty and would empty the destination {}; use --force if that is meant",
                    crate::names::escape(&self.src.root_path()),
                    crate::names::escape(dst_root)
                )));
            }
        }

        // The root folder itself.
        let mut dst_setgid = dst_entry.as_ref().is_some_and(|e| self.gives_group(e));
        let dst = match (dst, &dst_entry) {
            (Some(d), Some(de)) => {
                self.record_dir_pair(&src_entry, de, &src, &d);
                Some(d)
            }
            _ => {
                let made = if self.opts.job.dry_run {
                    Ok(None)
                } else {
                    std::fs::create_dir_all(dst_root)
                        .map_err(|e| Error::io(Op::Mkdir, dst_root, e))
                        .and_then(|()| self.open_dst_root(dst_root).map(Some))
                };
                match made {
                    Ok(d) => {
                        // Made where its parent may hand it a group (set-group-ID, `grpid`):
                        // what goes in it is judged by what it got.
                        let made = self
                            .dst_dirs
                            .finish_at(Path::new(""))
                            .and_then(|(dd, dn)| sys::stat_at(At::new(&dd, &dn), PathBuf::new()));
                        dst_setgid = made.map_or(true, |e| self.gives_group(&e));
                        self.emit(Action::Create, Kind::Dir, Path::new(""), "new", 0);
                        self.dirs.lock().unwrap().push(DirRecord {
                            entry: src_entry.clone(),
                            reason: None,
                            existed: false,
                            made_as: None,
                        });
                        d
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let dst_acl = match self.dst_dirs.finish_at(Path::new("")) {
            Ok((dd, dn)) if dst.is_some() => self.default_acl(At::new(&dd, &dn), None),
            _ => false,
        };
        let node = Node {
            src,
            dst,
            dst_setgid,
            dst_acl,
            fresh: None,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.workers.max(1))
            .build()
            .map_err(|e| Error::io(Op::ReadDir, dst_root, std::io::Error::other(e)))?;
        pool.scope(|s| match src_list {
            Ok(sl) => self.merge(s, &node, sl, dst_list),
            // The source root cannot be listed: nothing may be judged absent.
            Err(e) => self.fail(e),
        });
        Ok(())
    }

    /// The destination root's handle, which every later look at the root goes through: a path
    /// looked up again could meet a link swapped in meanwhile.
    fn open_dst_root(&self, dst_root: &Path) -> Result<Arc<Dir>> {
        let d = Arc::new(if self.opts.root_nofollow {
            Dir::open_nofollow(dst_root)?
        } else {
            Dir::open(dst_root)?
        });
        self.dst_dirs.pin_root(Arc::clone(&d));
        Ok(d)
    }

    /// SRC is a file: one entry, whose destination is a file path (its folder exists or is made
    /// by the caller).
    fn run_file(&self, mut a: Entry) -> Result<()> {
        a.xattrs = self.opts.rules.xattrs;
        let (sdir, sname) = self.src.parent_of(Path::new(""))?;
        let b = match std::fs::symlink_metadata(self.dst_dirs.root()) {
            Ok(md) => {
                let mut e = Entry::from_metadata(PathBuf::new(), &md);
                e.xattrs = self.opts.rules.xattrs;
                let (dir, name) = self.dst_dirs.parent_of(Path::new(""))?;
                Some(self.presented(At::new(&dir, &name), Ok(e))?)
            }
            Err(_) => None,
        };
        let (ddir, dname) = if self.opts.job.dry_run && b.is_none() {
            // Nothing exists to open; report what would be done.
            self.emit(Action::Create, a.kind, Path::new(""), "new", a.size);
            return Ok(());
        } else {
            self.dst_dirs.parent_of(Path::new(""))?
        };
        let pair = Pair {
            src: &sdir,
            sname: &sname,
            dst: Some(&ddir),
            dname: &dname,
            // The folder it lands in was not looked at: assume nothing about what it gives.
            setgid: true,
            acl: true,
            direct: false,
        };
        match b {
            None => self.write(&pair, &a, None, Reason::New),
            Some(b) => self.both_non_dir(&pair, &a, &b),
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Merging one folder
    // -----------------------------------------------------------------------------------------

    fn merge<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir>,
        src: Listing,
        dst: Option<Listing>,
    ) {
        let _clock = Clock::start(&self.busy.plan);
        let dst = dst.unwrap_or_default();
        if !self.opts.job.dry_run {
            if let Some(d) = &node.dst {
                for t in &dst.temps {
                    if self.opts.job.resume && tempname::is_partial(t) {
                        // Kept for this run to continue; a run without --resume removes it.
                        continue;
                    }
                    if let Err(e) = remove_temp(d, t) {
                        self.fail(e);
                    }
                }
            }
        }
        if S::HINTS && !self.opts.job.dry_run && node.dst.is_some() {
            self.hint(node, &src, &dst);
        }
        self.entries_seen
            .fetch_add(src.entries.len() as u64, Ordering::Relaxed);
        self.dst_seen
            .fetch_add(dst.entries.len() as u64, Ordering::Relaxed);
        let mut di = dst.entries.into_iter().peekable();
        for a in src.entries {
            if self.cancelled() {
                return;
            }
            // Destination entries sorting before this one are not in the source.
            while let Some(b) = di.peek() {
                if b.listing_cmp(&a).is_lt() {
                    let b = di.next().expect("peeked");
                    self.dst_only(s, node, b, &src.unknown);
                } else {
                    break;
                }
            }
            let b = di.next_if(|b| b.listing_cmp(&a).is_eq());
            self.entry(s, node, a, b);
        }
        for b in di {
            self.dst_only(s, node, b, &src.unknown);
        }
    }

    /// Tells the source which files of this folder will surely be copied: new ones, and those
    /// whose size or mtime differ (hard-linked ones are left out: most of their names become
    /// links, not copies).
    fn hint(&self, node: &Node<S::Dir>, src: &Listing, dst: &Listing) {
        let mut want = Vec::new();
        let mut di = dst.entries.iter().peekable();
        for a in &src.entries {
            while di.next_if(|b| b.listing_cmp(a).is_lt()).is_some() {}
            let b = di.next_if(|b| b.listing_cmp(a).is_eq());
            if a.kind != Kind::File || a.nlink > 1 {
                continue;
            }
            let needed = match b {
                None => true,
                Some(b) => matches!(
                    decide::quick(a, b, &self.opts.rules),
                    Some(Decision::Write(_))
                ),
            };
            if needed {
                want.push(a);
            }
        }
        if !want.is_empty() {
            self.src.prefetch(&node.src, &want);
        }
    }

    /// A destination entry of a folder whose source listing succeeded, with no source entry of
    /// its name: `mirror` deletes it. At once, as a task of the walk, like rsync's default
    /// `--delete-during`: an unlink waits on the disk (on a `discard` mount it trims the freed
    /// blocks before returning), and done after the walk those waits were a sixth of an
    /// incremental mirror's wall time, where during the walk they overlap the other workers'
    /// looks. Safe per folder: a folder only gets here once its source listing is complete, and
    /// a name whose source entry could not be read is kept. With `--max-delete` every deletion
    /// is counted first, so they wait for the end; so they do with `--delete-after`, for those
    /// who want a run cut short to have deleted nothing.
    fn dst_only<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir>,
        b: Entry,
        unknown: &HashSet<OsString>,
    ) {
        if self.opts.job.mode != Mode::Mirror {
            return;
        }
        let name = b.rel.file_name().unwrap_or_default();
        if unknown.contains(name) {
            self.kept.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match &node.dst {
            Some(dir) if self.opts.job.max_delete.is_none() && !self.opts.job.delete_after => {
                let dir = Arc::clone(dir);
                self.task(s, move || {
                    if self.cancelled() {
                        return;
                    }
                    let _clock = Clock::start(&self.busy.delete);
                    let name = b.rel.file_name().unwrap_or_default();
                    if let Err(e) = self.delete_tree(&dir, name, &b.rel, Deleting::Extra(&b)) {
                        self.fail(e);
                    }
                });
            }
            _ => self.deletes.lock().unwrap().push(b),
        }
    }

    /// Runs `f` (a copy or a deletion the merge of a folder hands out) as a task of the walk,
    /// or at once, on the merging thread, when [`QUEUED_TASKS`] tasks already wait: each holds
    /// its entries, and a folder of a million new files (or a peer's listing of them) would
    /// otherwise queue a million before the first is done. Folders are always tasks (they
    /// walk on; run in place they would recurse).
    fn task<'s>(&'s self, s: &rayon::Scope<'s>, f: impl FnOnce() + Send + 's) {
        if self.queued.load(Ordering::Relaxed) >= QUEUED_TASKS {
            return f();
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        s.spawn(move |_| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            f()
        });
    }

    /// One source entry `a`, with its destination counterpart `b` if any.
    fn entry<'s>(&'s self, s: &rayon::Scope<'s>, node: &Node<S::Dir>, a: Entry, b: Option<Entry>) {
        let name = a.rel.file_name().unwrap_or_default().to_os_string();
        match (a.kind, b) {
            (Kind::Dir, b) => self.dir_entry(s, node, a, b, name),
            (Kind::Socket, _) => {}
            (_, b) => {
                if a.kind == Kind::File && a.nlink > 1 && self.join_group(&a, b.as_ref()) {
                    return;
                }
                if a.kind == Kind::File {
                    self.observer.found(a.size);
                }
                if let Some(b) = &b {
                    if self.same_at_a_glance(&a, b) {
                        self.unchanged.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                let (src, dst) = (Arc::clone(&node.src), node.dst.clone());
                let (setgid, acl) = (node.dst_setgid, node.dst_acl);
                let hold = node.fresh.as_ref().map(|f| Hold::another(self, f));
                self.task(s, move || {
                    // Held to the end of the task: the folder is named only after this write.
                    let hold = hold;
                    if self.cancelled() {
                        return;
                    }
                    let _clock = Clock::start(&self.busy.copy);
                    let pair = Pair {
                        src: &src,
                        sname: &name,
                        dst: dst.as_ref(),
                        dname: &name,
                        setgid,
                        acl,
                        direct: hold.is_some(),
                    };
                    match b {
                        None => self.write(&pair, &a, None, Reason::New),
                        Some(b) => self.both_non_dir(&pair, &a, &b),
                    }
                });
            }
        }
    }

    /// An entry the listings alone show to be unchanged, with nothing to do for it. Decided
    /// here, not in a task of its own: on a no-op run that is every entry, and a task each
    /// (its allocation, queueing and theft by another worker) cost more than the comparison and
    /// held every pending entry of a wide folder in memory at once.
    fn same_at_a_glance(&self, a: &Entry, b: &Entry) -> bool {
        // `move` still has work for an unchanged entry; a destination with other names may need
        // splitting (see `both_non_dir`).
        !self.is_move()
            && !shared_dst(a, b)
            && matches!(decide::quick(a, b, &self.opts.rules), Some(Decision::Same))
    }

    /// Records `a` in its hard-link group; `true` when it is a later name (linked at the end).
    fn join_group(&self, a: &Entry, b: Option<&Entry>) -> bool {
        let mut groups = self.groups.lock().unwrap();
        match groups.get_mut(&(a.dev, a.ino)) {
            Some(g) => {
                g.followers.push((a.clone(), b.cloned()));
                true
            }
            None => {
                groups.insert(
                    (a.dev, a.ino),
                    Group {
                        leader: a.rel.clone(),
                        written: false,
                        followers: Vec::new(),
                    },
                );
                false
            }
        }
    }

    fn dir_entry<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir>,
        a: Entry,
        b: Option<Entry>,
        name: OsString,
    ) {
        let child_src = Arc::clone(&node.src);
        let parent_dst = node.dst.clone();
        let rel = a.rel.clone();
        let (dst_setgid, dst_acl, existing_dir) = match (&b, &parent_dst) {
            (Some(b), Some(pd)) if b.kind == Kind::Dir => (
                self.gives_group(b),
                self.default_acl(At::new(pd, &name), Some(b)),
                true,
            ),
            // A folder made here got its group from its parent if the parent gives one (and
            // with it, on Linux, the set-group-ID bit), and its parent's default ACL: it gives
            // them on in turn.
            _ => (node.dst_setgid, node.dst_acl, false),
        };
        // The merging task's claim on the folder, when it is made under a temporary name.
        let mut hold = None;
        if !existing_dir {
            // Create it (replacing a non-folder standing there), before anything inside.
            let reason = if b.is_some() {
                Reason::Type
            } else {
                Reason::New
            };
            let action = if b.is_some() {
                Action::Update
            } else {
                Action::Create
            };
            if !self.opts.job.dry_run {
                let Some(pd) = &parent_dst else { return };
                let made = if b.is_none() && self.fresh_folders() {
                    self.make_fresh(pd, &name, &rel).map(|fresh| {
                        hold = fresh.map(|f| Hold {
                            sx: self,
                            fresh: Arc::new(f),
                        });
                    })
                } else {
                    let at = At::new(pd, &name);
                    b.as_ref()
                        .map_or(Ok(()), |_| sys::unlink_at(at))
                        .and_then(|()| sys::mkdir_at(at))
                };
                if let Err(e) = made {
                    // Nothing inside can be written; the one error says so.
                    let shown = self.dst_dirs.root().join(&rel);
                    return self.fail_src(&rel, naming_the_file(e, &shown));
                }
            }
            self.emit(action, Kind::Dir, &rel, &reason.label(), 0);
            self.dirs.lock().unwrap().push(DirRecord {
                entry: a.clone(),
                reason: None,
                existed: false,
                made_as: (!node.dst_setgid).then_some(self.creator),
            });
        }
        if existing_dir {
            if let (Some(pd), Some(b)) = (&parent_dst, &b) {
                self.open_up(At::new(pd, &name), b);
            }
        }
        s.spawn(move |s| {
            let hold = hold;
            if self.cancelled() {
                return;
            }
            let src = match self.src.open_child(&child_src, &name) {
                Ok(d) => Arc::new(d),
                Err(e) => return self.fail(e),
            };
            let dst = match (&hold, &parent_dst) {
                // Made under a temporary name, and already open (and locked).
                (Some(h), _) => Some(Arc::clone(&h.fresh.dir)),
                (None, Some(pd)) if !self.opts.job.dry_run || existing_dir => {
                    match pd.open_child(&name) {
                        Ok(d) => Some(Arc::new(d)),
                        Err(e) => return self.fail_src(&rel, e),
                    }
                }
                _ => None,
            };
            if existing_dir {
                if let (Some(d), Some(b)) = (&dst, &b) {
                    self.record_dir_pair(&a, b, &src, d);
                }
            }
            let src_list = match self.list_src(&src, &rel) {
                Ok(l) => l,
                // Unreadable: its destination side is left exactly as it is.
                Err(e) => return self.fail(e),
            };
            let dst_list = match (&dst, existing_dir) {
                (Some(d), true) => match self.list(d, &rel) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        self.fail(e);
                        None
                    }
                },
                _ => None,
            };
            let node = Node {
                src,
                dst,
                dst_setgid,
                dst_acl,
                fresh: hold.as_ref().map(|h| Arc::clone(&h.fresh)),
            };
            self.merge(s, &node, src_list, dst_list);
            // The folder may be named once the tasks merge handed out are done too.
            drop(hold);
        });
    }

    /// Makes a new destination folder under a temporary name, open and locked ([`Fresh`]).
    /// `None` when it cannot be locked: it is then named at once and filled as usual.
    fn make_fresh(&self, parent: &Arc<Dir>, name: &OsStr, rel: &Path) -> Result<Option<Fresh>> {
        let temp = tempname::next_dir();
        let at = At::new(parent, &temp);
        sys::mkdir_at(at)?;
        let dir = match parent.open_child(&temp) {
            Ok(d) => d,
            Err(e) => {
                let _ = sys::rmdir_at(at);
                return Err(e);
            }
        };
        if !sys::hold_dir(&dir) {
            drop(dir);
            sys::publish_dir(at, At::new(parent, name))?;
            return Ok(None);
        }
        Ok(Some(Fresh {
            parent: Arc::clone(parent),
            temp,
            name: name.to_os_string(),
            rel: rel.to_path_buf(),
            dir: Arc::new(dir),
            pending: AtomicUsize::new(1),
        }))
    }

    /// Without root, a destination folder whose replicated mode denies its owner (say 0555) could
    /// be neither entered nor written, so a mirror could never update it: the owner's bits are
    /// lifted for the run; the folder's real mode is restored at the end like every folder's.
    fn open_up(&self, at: At<'_>, b: &Entry) {
        if self.opts.job.dry_run || self.opts.meta.owner || b.perm & 0o700 == 0o700 {
            return;
        }
        if b.uid == self.creator.0 {
            if let Err(e) = sys::chmod_at(at, b.perm | 0o700) {
                self.fail(e);
            }
        }
    }

    /// A folder present on both sides: its metadata is compared now, restored at the end.
    fn record_dir_pair(&self, a: &Entry, b: &Entry, src: &Arc<S::Dir>, dst: &Arc<Dir>) {
        let decision = match decide::quick(a, b, &self.opts.rules) {
            Some(d) => Ok(d),
            None => self.full_decision_of_dirs(a, b, src, dst),
        };
        let reason = match decision {
            Ok(Decision::Meta(m)) => Some(Reason::Meta(m)),
            Ok(_) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        };
        self.dirs.lock().unwrap().push(DirRecord {
            entry: a.clone(),
            reason,
            existed: true,
            made_as: None,
        });
    }

    /// Only xattrs need a look for folders; the folder's own handles reach it as `.`.
    fn full_decision_of_dirs(
        &self,
        a: &Entry,
        b: &Entry,
        src: &Arc<S::Dir>,
        dst: &Arc<Dir>,
    ) -> Result<Decision> {
        let dot = OsStr::new(".");
        let sa = self.src.inside(src, dot, a);
        decide::full(
            a,
            b,
            &*sa,
            &*self.dst_inside(At::new(dst, dot)),
            &self.opts.rules,
        )
    }

    /// What [`decide::full`] reads inside a destination entry: under fake super, its attributes
    /// as the entry it stands for.
    fn dst_inside<'d>(&self, at: At<'d>) -> Box<dyn decide::Inside + 'd> {
        if self.opts.meta.fake_super {
            Box::new(Stored(at))
        } else {
            Box::new(at)
        }
    }

    // -----------------------------------------------------------------------------------------
    // Non-folders
    // -----------------------------------------------------------------------------------------

    fn both_non_dir(&self, pair: &Pair<'_, S::Dir>, a: &Entry, b: &Entry) {
        let decision = match decide::quick(a, b, &self.opts.rules) {
            Some(d) => Ok(d),
            None => match pair.dst {
                Some(d) => decide::full(
                    a,
                    b,
                    &*self.src.inside(pair.src, pair.sname, a),
                    &*self.dst_inside(At::new(d, pair.dname)),
                    &self.opts.rules,
                ),
                None => Ok(Decision::Write(Reason::New)),
            },
        };
        let decision = match decision {
            Ok(d) => d,
            Err(e) => return self.fail_src(&a.rel, e),
        };
        let shared_dst = shared_dst(a, b);
        match decision {
            Decision::Write(r) => self.write(pair, a, Some(b), r),
            // A destination file with other names (beyond the source's group, outside the tree
            // even) would pass a metadata change in place on to them: it is rewritten instead,
            // and a group linked to it anew.
            Decision::Meta(_) if b.kind == Kind::File && b.nlink > 1 => {
                self.write(pair, a, Some(b), Reason::Unlink)
            }
            Decision::Meta(m) => self.update_meta(pair, a, m),
            Decision::Same => {
                if shared_dst {
                    self.shared.lock().unwrap().push((a.clone(), b.clone()));
                }
                self.unchanged.fetch_add(1, Ordering::Relaxed);
                if self.is_move() {
                    self.move_unchanged(pair, a);
                }
            }
        }
    }

    fn update_meta(&self, pair: &Pair<'_, S::Dir>, a: &Entry, m: MetaDiff) {
        if !self.opts.job.dry_run {
            let Some(d) = pair.dst else { return };
            let r = self.xattrs_of(pair.src, pair.sname, a).and_then(|x| {
                sys::apply_meta_at(At::new(d, pair.dname), a, self.opts.meta, x.as_ref())
            });
            if let Err(e) = r {
                return self.fail_src(&a.rel, e);
            }
        }
        self.emit(Action::Metadata, a.kind, &a.rel, &m.label(), 0);
        if self.is_move() {
            self.move_unchanged(pair, a);
        }
    }

    /// `move` of an entry already right in the destination: within one filesystem, a rename over
    /// it (atomic, and the source is gone); otherwise remove the source at the end, once the
    /// destination is flushed.
    fn move_unchanged(&self, pair: &Pair<'_, S::Dir>, a: &Entry) {
        if self.opts.job.dry_run {
            return;
        }
        let Some(d) = pair.dst else { return };
        match self.rename_move(pair.src, pair.sname, At::new(d, pair.dname)) {
            Some(Ok(())) => return,
            Some(Err(e)) => return self.fail_src(&a.rel, e),
            None => {}
        }
        self.release
            .lock()
            .unwrap()
            .push(Release::of(a, a.kind == Kind::File));
    }

    /// `move` within one filesystem: one rename carries the content and every piece of metadata.
    /// `None` once renames are known to cross devices (remembered), so the caller copies.
    fn rename_move(&self, dir: &S::Dir, name: &OsStr, dst: At<'_>) -> Option<Result<()>> {
        if self.cross_device.load(Ordering::Relaxed) {
            return None;
        }
        match self.src.rename_into(dir, name, dst) {
            Some(Ok(())) => Some(Ok(())),
            Some(Err(e)) if !sys::is_cross_device(&e) => {
                Some(Err(Error::io(Op::Rename, dst.path(), e)))
            }
            _ => {
                self.cross_device.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// Puts a non-folder entry in place (new, changed, or replacing something else).
    fn write(&self, pair: &Pair<'_, S::Dir>, a: &Entry, b: Option<&Entry>, reason: Reason) {
        let action = if b.is_none() {
            Action::Create
        } else {
            Action::Update
        };
        let bytes = if a.kind == Kind::File { a.size } else { 0 };
        if self.opts.job.dry_run {
            if a.kind == Kind::File && a.nlink > 1 {
                self.mark_written(a);
            }
            return self.emit(action, a.kind, &a.rel, &reason.label(), bytes);
        }
        let Some(dst) = pair.dst else { return };
        let replaces_dir = b.is_some_and(|b| b.kind == Kind::Dir);
        if replaces_dir {
            if let Err(e) = self.make_way(dst, pair.dname) {
                return self.fail_src(&a.rel, e);
            }
        }
        match self.put(pair, dst, a, replaces_dir, b.is_none()) {
            Ok((n, method)) => {
                *self
                    .methods
                    .lock()
                    .unwrap()
                    .entry(format!("{}: {method}", class_of(a)))
                    .or_default() += 1;
                if a.kind == Kind::File && a.nlink > 1 {
                    self.mark_written(a);
                }
                self.emit(action, a.kind, &a.rel, &reason.label(), n);
            }
            Err(e) => {
                // In a folder not yet named, the handle's path is the temporary one.
                let shown = if pair.direct {
                    self.dst_dirs.root().join(&a.rel)
                } else {
                    dst.path().join(pair.dname)
                };
                self.fail_src(&a.rel, naming_the_file(e, &shown))
            }
        }
    }

    /// `copy` and `move` never delete: a folder standing where the source has something else
    /// may go only if it is empty. (`mirror` clears it when the entry is put in place.)
    fn make_way(&self, dst: &Dir, name: &OsStr) -> Result<()> {
        if self.opts.job.mode == Mode::Mirror || sys::rmdir_at(At::new(dst, name))? {
            return Ok(());
        }
        Err(Error::io(
            Op::Delete,
            dst.path().join(name),
            std::io::Error::other(
                "a non-empty folder stands where the source has a file; copy never deletes (use mirror)",
            ),
        ))
    }

    fn mark_written(&self, a: &Entry) {
        if let Some(g) = self.groups.lock().unwrap().get_mut(&(a.dev, a.ino)) {
            if g.leader == a.rel {
                g.written = true;
            }
        }
    }

    /// Writes the entry; returns the bytes written and the method's name.
    fn put(
        &self,
        pair: &Pair<'_, S::Dir>,
        dst: &Arc<Dir>,
        a: &Entry,
        replaces_dir: bool,
        fresh: bool,
    ) -> Result<(u64, &'static str)> {
        let to = At::new(dst, pair.dname);
        if self.is_move() && !self.cross_device.load(Ordering::Relaxed) {
            if replaces_dir {
                self.delete_tree(dst, pair.dname, &a.rel, Deleting::InTheWay)?;
            }
            if let Some(r) = self.rename_move(pair.src, pair.sname, to) {
                return r.map(|()| (0, "rename"));
            }
        }
        let result = match a.kind {
            Kind::File => self
                .copy_file(pair, dst, a, replaces_dir, fresh)
                .map(|(n, m)| (n, method_name(m))),
            // A symlink or a special file: made whole by one call, then its metadata.
            _ => {
                let link = if a.kind == Kind::Symlink {
                    let target = self.src.inside(pair.src, pair.sname, a).link_target()?;
                    Some((target, self.src.link_is_dir(pair.src, pair.sname, a)))
                } else {
                    None
                };
                let xattrs = self.xattrs_of(pair.src, pair.sname, a)?;
                let meta = self.meta_for_new(pair, a);
                let direct = (replaces_dir, pair.direct);
                self.place(dst, pair.dname, &a.rel, direct, |tmp| {
                    match &link {
                        Some((target, dir_link)) => sys::symlink_at(target, tmp, *dir_link)?,
                        None => sys::make_special_at(tmp, a, meta)?,
                    }
                    sys::apply_meta_at(tmp, a, meta, xattrs.as_ref())
                })
                .map(|()| (0, if link.is_some() { "symlink" } else { "special" }))
            }
        }?;
        if self.is_move() {
            self.release.lock().unwrap().push(Release::of(a, false));
        }
        Ok(result)
    }

    /// Creates an entry at a temporary with `make`, clears a folder it replaces, renames it in.
    /// In a folder not yet named (`direct`), it is made under its final name, and removed again
    /// if `make` fails.
    fn place(
        &self,
        dir: &Arc<Dir>,
        name: &OsStr,
        rel: &Path,
        (replaces_dir, direct): (bool, bool),
        make: impl FnOnce(At<'_>) -> Result<()>,
    ) -> Result<()> {
        if direct && !replaces_dir {
            let at = At::new(dir, name);
            return make(at).inspect_err(|e| {
                // Made, then failed (its metadata): removed. A name that was taken is not ours.
                let taken = matches!(e, Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists);
                if !taken {
                    let _ = sys::unlink_at(at);
                }
            });
        }
        let guard = TempGuard::new(dir);
        make(guard.at())?;
        if replaces_dir {
            self.delete_tree(dir, name, rel, Deleting::InTheWay)?;
        }
        guard.commit(name)
    }

    /// What to set on an entry this run creates in `pair`'s folder: no `chown` when it is
    /// certainly made with the owner and group it should have (ours, in a folder that gives no
    /// other group), as for files.
    fn meta_for_new(&self, pair: &Pair<'_, S::Dir>, a: &Entry) -> sys::MetaOpts {
        let mut meta = self.opts.meta;
        if !pair.setgid && self.creator == (a.uid, a.gid) {
            meta.owner = false;
        }
        meta
    }

    fn copy_file(
        &self,
        pair: &Pair<'_, S::Dir>,
        dst: &Arc<Dir>,
        a: &Entry,
        replaces_dir: bool,
        fresh: bool,
    ) -> Result<(u64, Method)> {
        let progress = |n: u64| self.observer.progress(n);
        let default_owner = (!pair.setgid).then_some(self.creator);
        let resume = self.opts.job.resume
            && self.src.resumes()
            && a.kind == Kind::File
            && a.size >= source::RESUME_BLOCK;
        // A source that changes while read is copied again; a third change is reported.
        for attempt in 0..3 {
            let guard = if resume {
                TempGuard::partial(dst, pair.dname)
            } else {
                TempGuard::new(dst)
            };
            let out = sys::Output {
                tmp: guard.at(),
                // Nothing stands at the destination: a new file may be put in place directly
                // (not with `--verify`, which reads the copy back by name before it goes live,
                // nor when resuming, which needs the data under a name that survives a crash).
                final_name: (fresh && !self.opts.job.verify && !resume).then_some(pair.dname),
                direct: pair.direct,
                meta: self.opts.meta,
                umask: self.opts.umask,
                under_acl: pair.acl,
                default_owner,
                fsync: self.opts.job.fsync || self.is_move(),
                fast: &self.fast,
                cancel: &self.opts.cancel,
                progress: &progress,
                resume,
            };
            match self.src.copy(pair.src, pair.sname, a, attempt == 0, out)? {
                CopyOutcome::Changed => continue,
                CopyOutcome::Done {
                    bytes,
                    method,
                    placed,
                } => {
                    if placed {
                        guard.disarm();
                        return Ok((bytes, method));
                    }
                    if self.opts.job.verify {
                        verify_copy(&*self.src.inside(pair.src, pair.sname, a), guard.at())?;
                    }
                    if replaces_dir {
                        self.delete_tree(dst, pair.dname, &a.rel, Deleting::InTheWay)?;
                    }
                    guard.commit(pair.dname)?;
                    return Ok((bytes, method));
                }
            }
        }
        Err(Error::Changed {
            path: self.src.path(pair.src, pair.sname),
        })
    }

    // -----------------------------------------------------------------------------------------
    // Deleting
    // -----------------------------------------------------------------------------------------

    /// Deletes the destination entry `name` in `dir` and, for a folder, everything in it that the
    /// filter does not protect, children first, reporting each. A folder still holding excluded
    /// entries stays; one in the way of a source entry cannot, and that is an error.
    fn delete_tree(
        &self,
        dir: &Arc<Dir>,
        name: &OsStr,
        rel: &Path,
        why: Deleting<'_>,
    ) -> Result<()> {
        let at = At::new(dir, name);
        let e = match self.presented(at, sys::stat_at(at, rel.to_path_buf())) {
            Ok(e) => e,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Deleting::Extra(listed) = why {
            if !still_the_listed(listed, &e) {
                // Replaced since it was listed: by another program, or, where names are
                // compared without case, by this run writing the source's `README` over the
                // destination's `readme`. Not the entry judged to be extra.
                return Ok(());
            }
        }
        if tempname::is_leftover(name, e.kind == Kind::Dir) {
            // A leftover of a killed run is housekeeping, not the user's entry: no report.
            if !self.opts.job.dry_run {
                let _ = remove_temp(dir, name);
            }
            return Ok(());
        }
        if e.kind != Kind::Dir {
            if !self.opts.job.dry_run {
                match sys::unlink_at(at) {
                    Ok(()) => {}
                    Err(err) if is_not_found(&err) => return Ok(()),
                    Err(err) => return Err(err),
                }
            }
            self.emit(Action::Delete, e.kind, rel, "not in source", file_bytes(&e));
            return Ok(());
        }
        let sub = dir.open_child(name)?;
        let names = sub.read_names()?;
        // Everything inside, children first, without recursion (a stale tree may be deeper than
        // any stack): what the filter protects stays, and so does each folder holding it.
        crate::tree::walk(sub, names, rel, &mut |v| {
            if self.cancelled() {
                // A large stale tree must not hold up a Ctrl-C, nor go on being deleted after it.
                return Err(Error::Cancelled);
            }
            match v {
                Visit::Entry { dir, name, rel, .. } => Ok(self.delete_inside(dir, name, rel)),
                Visit::Left { dir, name, rel } => {
                    let gone = if self.opts.job.dry_run {
                        Ok(true)
                    } else {
                        sys::rmdir_at(At::new(dir, name))
                    };
                    match gone {
                        Ok(true) => self.emit(Action::Delete, Kind::Dir, rel, "not in source", 0),
                        Ok(false) => {}
                        Err(e) => self.fail(e),
                    }
                    Ok(Then::Next)
                }
            }
        })?;
        let gone = if self.opts.job.dry_run {
            true
        } else {
            sys::rmdir_at(at)?
        };
        if gone {
            self.emit(Action::Delete, Kind::Dir, rel, "not in source", 0);
        } else if matches!(why, Deleting::InTheWay) {
            return Err(Error::io(
                Op::Delete,
                at.path(),
                std::io::Error::other("folder still holds excluded or unlisted entries"),
            ));
        }
        Ok(())
    }

    /// One entry inside a folder being deleted: a file, link or special goes at once (a
    /// leftover temporary without a report); a folder is gone into, unless the filter protects
    /// it. Failures are reported and the rest goes on.
    fn delete_inside(&self, dir: &Dir, name: &OsStr, rel: &Path) -> Then {
        let at = At::new(dir, name);
        let e = match self.presented(at, sys::stat_at(at, rel.to_path_buf())) {
            Ok(e) => e,
            Err(e) if is_not_found(&e) => return Then::Next,
            Err(e) => {
                self.fail(e);
                return Then::Next;
            }
        };
        let is_dir = e.kind == Kind::Dir;
        if self.filter.excludes(rel, is_dir) {
            return Then::Next;
        }
        if tempname::is_leftover(name, is_dir) {
            if !self.opts.job.dry_run {
                let _ = remove_temp(dir, name);
            }
            return Then::Next;
        }
        if !is_dir {
            if !self.opts.job.dry_run {
                match sys::unlink_at(at) {
                    Ok(()) => {}
                    Err(err) if is_not_found(&err) => return Then::Next,
                    Err(err) => {
                        self.fail(err);
                        return Then::Next;
                    }
                }
            }
            self.emit(Action::Delete, e.kind, rel, "not in source", file_bytes(&e));
            return Then::Next;
        }
        let listed = dir.open_child(name).and_then(|sub| {
            let names = sub.read_names()?;
            Ok((sub, names))
        });
        match listed {
            Ok((sub, names)) => Then::Descend(sub, names),
            Err(e) => {
                self.fail(e);
                Then::Next
            }
        }
    }

    /// Counts what deleting `name` would remove (for `--max-delete`).
    fn count_tree(&self, dir: &Dir, name: &OsStr, rel: &Path) -> u64 {
        let Ok(sub) = dir.open_child(name) else {
            return 1;
        };
        let names = sub.read_names().unwrap_or_default();
        let mut n = 1;
        let _ = crate::tree::walk(sub, names, rel, &mut |v| {
            let Visit::Entry {
                dir,
                name,
                hint,
                rel,
            } = v
            else {
                return Ok(Then::Next);
            };
            let is_dir = match hint {
                Some(kind) => kind == Kind::Dir,
                // The listing did not say (a filesystem without entry types): look.
                None => sys::stat_at(At::new(dir, name), rel.to_path_buf())
                    .is_ok_and(|e| e.kind == Kind::Dir),
            };
            if self.filter.excludes(rel, is_dir) || tempname::is_leftover(name, is_dir) {
                return Ok(Then::Next);
            }
            n += 1;
            if !is_dir {
                return Ok(Then::Next);
            }
            Ok(match dir.open_child(name) {
                Ok(sub) => {
                    let names = sub.read_names().unwrap_or_default();
                    Then::Descend(sub, names)
                }
                Err(_) => Then::Next,
            })
        });
        n
    }

    // -----------------------------------------------------------------------------------------
    // The end
    // -----------------------------------------------------------------------------------------

    /// The end of a run, in order; each step's wall time goes into `phases`.
    fn finish(&self, phases: &mut BTreeMap<&'static str, f64>) {
        if self.cancelled() {
            return;
        }
        let mut step = |name: &'static str, f: &dyn Fn()| {
            let t = Instant::now();
            f();
            phases.insert(name, t.elapsed().as_secs_f64());
        };
        step("links", &|| {
            self.link_followers();
            self.split_shared();
        });
        if self.is_move() {
            step("release", &|| self.release_sources());
        }
        // One pool for the whole end phase (a deep tree has many levels of folders).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.opts.workers.max(1))
            .build()
            .ok()
            .filter(|_| self.opts.workers > 1);
        if self.opts.job.mode == Mode::Mirror {
            step("delete", &|| self.delete_extras(pool.as_ref()));
        }
        step("metadata", &|| self.finish_dirs(pool.as_ref()));
        if self.is_move() && !self.opts.job.dry_run {
            step("remove", &|| self.remove_source_dirs());
        }
    }

    fn link_followers(&self) {
        let groups = std::mem::take(&mut *self.groups.lock().unwrap());
        for (_, g) in groups {
            for (a, b) in g.followers {
                if self.cancelled() {
                    return;
                }
                if let Err(e) = self.link_one(&g.leader, g.written, &a, b.as_ref()) {
                    let path = self.dst_dirs.root().join(&a.rel);
                    self.fail_src(&a.rel, naming_the_file(e, &path));
                }
            }
        }
    }

    fn link_one(&self, leader: &Path, written: bool, a: &Entry, b: Option<&Entry>) -> Result<()> {
        if self.failed_src.lock().unwrap().contains(leader) {
            return Ok(());
        }
        let reason = format!("to {}", crate::names::escape_rel(leader));
        let located = self
            .dst_dirs
            .parent_of(leader)
            .and_then(|l| self.dst_dirs.parent_of(&a.rel).map(|d| (l, d)));
        let ((ldir, lname), (ddir, dname)) = match located {
            Ok(x) => x,
            Err(_) if self.opts.job.dry_run => {
                // The folders do not exist yet: the link would be made.
                self.emit(Action::Link, Kind::File, &a.rel, &reason, 0);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if !written {
            if let Some(b) = b.filter(|b| b.kind == Kind::File) {
                let l = sys::stat_at(At::new(&ldir, &lname), leader.to_path_buf());
                if l.is_ok_and(|l| l.ino == b.ino && l.dev == b.dev) {
                    self.unchanged.fetch_add(1, Ordering::Relaxed);
                    if self.is_move() && !self.opts.job.dry_run {
                        let (sdir, sname) = self.src.parent_of(&a.rel)?;
                        let pair = Pair {
                            src: &sdir,
                            sname: &sname,
                            dst: Some(&ddir),
                            dname: &dname,
                            setgid: false,
                            acl: false,
                            direct: false,
                        };
                        self.move_unchanged(&pair, a);
                    }
                    return Ok(());
                }
            }
        }
        if self.opts.job.dry_run {
            self.emit(Action::Link, Kind::File, &a.rel, &reason, 0);
            return Ok(());
        }
        let replaces_dir = b.is_some_and(|b| b.kind == Kind::Dir);
        if replaces_dir {
            self.make_way(&ddir, &dname)?;
        }
        let (sdir, sname) = self.src.parent_of(&a.rel)?;
        if self.is_move() && !self.cross_device.load(Ordering::Relaxed) {
            if replaces_dir {
                self.delete_tree(&ddir, &dname, &a.rel, Deleting::InTheWay)?;
            }
            if let Some(r) = self.rename_move(&sdir, &sname, At::new(&ddir, &dname)) {
                r?;
                self.emit(Action::Link, Kind::File, &a.rel, &reason, 0);
                return Ok(());
            }
        }
        self.place(&ddir, &dname, &a.rel, (replaces_dir, false), |tmp| {
            sys::hard_link_at(At::new(&ldir, &lname), tmp)
        })?;
        if self.is_move() {
            self.release.lock().unwrap().push(Release::of(a, false));
        }
        self.emit(Action::Link, Kind::File, &a.rel, &reason, 0);
        Ok(())
    }

    /// Destination files sharing an inode inside the tree while their sources are separate files
    /// are rewritten, so each gets its own inode again.
    fn split_shared(&self) {
        let shared = std::mem::take(&mut *self.shared.lock().unwrap());
        let mut count: HashMap<(u64, u64), usize> = HashMap::new();
        for (_, b) in &shared {
            *count.entry((b.dev, b.ino)).or_default() += 1;
        }
        for (a, b) in shared {
            if count[&(b.dev, b.ino)] < 2 || self.cancelled() {
                continue;
            }
            let located = self
                .src
                .parent_of(&a.rel)
                .and_then(|s| self.dst_dirs.parent_of(&a.rel).map(|d| (s, d)));
            match located {
                Ok(((sdir, sname), (ddir, dname))) => {
                    let pair = Pair {
                        src: &sdir,
                        sname: &sname,
                        dst: Some(&ddir),
                        dname: &dname,
                        setgid: true,
                        acl: true,
                        direct: false,
                    };
                    self.unchanged.fetch_sub(1, Ordering::Relaxed);
                    self.write(&pair, &a, Some(&b), Reason::Unlink);
                }
                Err(e) => self.fail_src(&a.rel, e),
            }
        }
    }

    /// `move` across filesystems: flush the copies (file, then folder), then remove the sources.
    fn release_sources(&self) {
        if self.opts.job.dry_run {
            return;
        }
        let release = std::mem::take(&mut *self.release.lock().unwrap());
        let failed = self.failed_src.lock().unwrap().clone();
        let mut ready = Vec::new();
        for r in release {
            let rel = &r.rel;
            if failed.contains(rel) {
                continue;
            }
            if r.flush {
                let flushed = self
                    .dst_dirs
                    .parent_of(rel)
                    .and_then(|(d, n)| sys::fsync_at(At::new(&d, &n)));
                if let Err(e) = flushed {
                    self.fail(e);
                    continue;
                }
            }
            ready.push(r);
        }
        // Each destination folder that gained a name is flushed once (for a single-file run,
        // the folder holding the root).
        let mut flushed: HashMap<PathBuf, bool> = HashMap::new();
        for Release { rel, seen, .. } in ready {
            let parent = parent_rel(&rel);
            let ok = match flushed.get(&parent) {
                Some(ok) => *ok,
                None => {
                    let r = self
                        .dst_dirs
                        .parent_of(&rel)
                        .and_then(|(d, _)| sys::fsync_dir(&d));
                    let ok = match r {
                        Ok(()) => true,
                        Err(e) => {
                            self.fail(e);
                            false
                        }
                    };
                    flushed.insert(parent, ok);
                    ok
                }
            };
            if !ok {
                continue;
            }
            let removed = self.src.parent_of(&rel).and_then(|(d, n)| {
                self.still_as_copied(&d, &n, &rel, seen)?;
                self.src.remove(&d, &n)
            });
            if let Err(e) = removed {
                self.fail(e);
            }
        }
    }

    /// A released source file is removed only if it is still as it was seen when copied (size,
    /// mtime, inode): one written to meanwhile stays, and says so. Compared with the source's
    /// own earlier look, not with the copy, whose times another filesystem may have rounded.
    fn still_as_copied(
        &self,
        dir: &S::Dir,
        name: &OsStr,
        rel: &Path,
        seen: Option<(u64, MTime, u64)>,
    ) -> Result<()> {
        let Some(seen) = seen else {
            return Ok(());
        };
        let now = self.src.stat(dir, name, rel)?;
        if now.kind == Kind::File && (now.size, now.mtime, now.ino) == seen {
            return Ok(());
        }
        Err(Error::io(
            Op::Delete,
            self.src.path(dir, name),
            std::io::Error::other("changed during or after its copy; the source is kept"),
        ))
    }

    /// The deletions held back for `--max-delete` or `--delete-after` (see `dst_only`): all
    /// counted, then all or none.
    fn delete_extras(&self, pool: Option<&rayon::ThreadPool>) {
        let deletes = std::mem::take(&mut *self.deletes.lock().unwrap());
        if deletes.is_empty() {
            return;
        }
        if let Some(max) = self.opts.job.max_delete {
            let mut planned = 0u64;
            for b in &deletes {
                planned += match (b.kind, self.dst_dirs.parent_of(&b.rel)) {
                    (Kind::Dir, Ok((d, n))) => self.count_tree(&d, &n, &b.rel),
                    _ => 1,
                };
            }
            if planned > max {
                return self.fail(Error::Refused(format!(
                    "{planned} deletions needed, more than --max-delete {max}: nothing deleted"
                )));
            }
        }
        // Entries to delete never nest (a folder to delete goes whole, its contents are not
        // listed apart), so they go in parallel.
        in_parallel(pool, deletes, |b| {
            if self.cancelled() {
                return;
            }
            let r = self
                .dst_dirs
                .parent_of(&b.rel)
                .and_then(|(d, n)| self.delete_tree(&d, &n, &b.rel, Deleting::Extra(&b)));
            if let Err(e) = r {
                self.fail(e);
            }
        });
    }

    /// Folder metadata, deepest first (the root last), after everything inside is done: a
    /// folder's mode may take away the access its subfolders' changes need. Folders of one depth
    /// never contain each other, so each depth goes in parallel.
    fn finish_dirs(&self, pool: Option<&rayon::ThreadPool>) {
        let dirs = std::mem::take(&mut *self.dirs.lock().unwrap());
        let mut by_depth: Vec<(usize, &DirRecord)> =
            dirs.iter().map(|d| (depth(&d.entry.rel), d)).collect();
        by_depth.sort_by_key(|&(depth, _)| std::cmp::Reverse(depth));
        let failed = self.failed_src.lock().unwrap().clone();
        for level in by_depth.chunk_by(|a, b| a.0 == b.0) {
            if self.cancelled() {
                return;
            }
            let level = level.iter().map(|&(_, d)| d).collect();
            in_parallel(pool, level, |d| self.finish_dir(d, &failed));
        }
        if self.is_move() {
            *self.dirs.lock().unwrap() = dirs;
        }
    }

    fn finish_dir(&self, d: &DirRecord, failed: &HashSet<PathBuf>) {
        if self.cancelled() {
            return;
        }
        let rel = &d.entry.rel;
        if failed
            .iter()
            .any(|f| rel.starts_with(f) && !f.as_os_str().is_empty())
        {
            return;
        }
        if !self.opts.job.dry_run {
            let r = self.dst_dirs.finish_at(rel).and_then(|(dd, dn)| {
                let at = At::new(&dd, &dn);
                if d.existed && d.reason.is_none() {
                    // Matched when paired (xattrs included); what the run did inside may have
                    // moved its mtime since. One stat tells, where rewriting owner, mode and
                    // times on every folder would dirty each inode (and its ctime) for nothing.
                    let now = self.presented(at, sys::stat_at(at, rel.clone()))?;
                    return match decide::meta_only(&d.entry, &now, &self.opts.rules, false) {
                        Decision::Same => Ok(()),
                        // The usual case after a change inside: only the time moved.
                        Decision::Meta(m) if !m.perm && !m.owner => sys::set_mtime_at(at, &d.entry),
                        _ => sys::apply_meta_at(at, &d.entry, self.opts.meta, None),
                    };
                }
                // The source folder is reached only if its xattrs must be read.
                let xattrs = self.wanted_xattrs(&d.entry, || {
                    let (sd, sn) = self.src.parent_of(rel)?;
                    let read = self.src.inside(&sd, &sn, &d.entry).xattrs();
                    read
                })?;
                let mut meta = self.opts.meta;
                if d.made_as == Some((d.entry.uid, d.entry.gid)) {
                    meta.owner = false;
                }
                sys::apply_meta_at(at, &d.entry, meta, xattrs.as_ref())
            });
            if let Err(e) = r {
                self.fail(e);
                return;
            }
        }
        if let Some(reason) = d.reason {
            self.emit(Action::Metadata, Kind::Dir, rel, &reason.label(), 0);
        }
    }

    /// `move`: source folders emptied by the move go, deepest first, the root included; one
    /// still holding something (an excluded or failed entry) stays.
    fn remove_source_dirs(&self) {
        let dirs = std::mem::take(&mut *self.dirs.lock().unwrap());
        let mut rels: Vec<PathBuf> = dirs.into_iter().map(|d| d.entry.rel).collect();
        rels.sort_by(|x, y| y.cmp(x));
        for rel in rels {
            let removed = self
                .src
                .parent_of(&rel)
                .and_then(|(d, n)| self.src.remove_dir(&d, &n));
            if let Err(e) = removed {
                self.fail(e);
            }
        }
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

/// A destination entry under fake super, as a decision looks inside it.
struct Stored<'a>(At<'a>);

impl decide::Inside for Stored<'_> {
    fn hash(&self) -> Result<blake3::Hash> {
        decide::hash_at(self.0)
    }

    fn link_target(&self) -> Result<PathBuf> {
        sys::read_link_at(self.0)
    }

    fn xattrs(&self) -> Result<Xattrs> {
        Ok(crate::fakesuper::present_xattrs(&sys::xattrs_of(self.0)?))
    }
}

/// Why a destination entry is deleted.
#[derive(Clone, Copy)]
enum Deleting<'e> {
    /// `mirror`: it was listed, and the source has no entry of its name.
    Extra(&'e Entry),
    /// A source entry of another type takes its name: it must go, even a folder holding
    /// excluded entries (which is then an error).
    InTheWay,
}

/// Whether the entry found now at a listed name is the one listed: the same inode where the
/// platform gives inode numbers, else the same type, and for a file the same size and mtime.
fn still_the_listed(listed: &Entry, now: &Entry) -> bool {
    if listed.kind != now.kind {
        return false;
    }
    if listed.ino != 0 && now.ino != 0 {
        return (listed.dev, listed.ino) == (now.dev, now.ino);
    }
    listed.kind != Kind::File || (listed.size == now.size && listed.mtime == now.mtime)
}

/// A source entry's folder and name, and its destination folder (if it exists) and name.
struct Pair<'p, D> {
    src: &'p Arc<D>,
    sname: &'p OsStr,
    dst: Option<&'p Arc<Dir>>,
    dname: &'p OsStr,
    /// New files in the destination folder may get a group other than ours (see
    /// `Node::dst_setgid`), so `chown` must run.
    setgid: bool,
    /// See `Node::dst_acl`.
    acl: bool,
    /// The folder is `Fresh`: a new entry goes straight under its final name.
    direct: bool,
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

    /// The fixed temporary of a resumable transfer: kept when the transfer fails, so the next
    /// run with `--resume` continues it.
    fn partial(dir: &Arc<Dir>, final_name: &OsStr) -> Self {
        TempGuard {
            dir: Arc::clone(dir),
            name: tempname::partial(final_name),
            armed: false,
        }
    }

    fn at(&self) -> At<'_> {
        At::new(&self.dir, &self.name)
    }

    /// The copy named the file itself; there is no temporary to remove.
    fn disarm(mut self) {
        self.armed = false;
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

/// A destination file with other names while the source has one: changing it in place would
/// change those names too.
fn shared_dst(a: &Entry, b: &Entry) -> bool {
    let lone_src = a.kind != Kind::File || a.nlink <= 1;
    b.kind == Kind::File && b.nlink > 1 && lone_src
}

/// The class of entry a copy path is reported for (`--stats`): the fastest path depends on it.
fn class_of(a: &Entry) -> &'static str {
    match a.kind {
        Kind::File if a.size == 0 => "empty files",
        Kind::File if a.size < sys::BUFFER_MAX as u64 => "files under 1 MiB",
        Kind::File => "files of 1 MiB or more",
        Kind::Symlink => "symlinks",
        _ => "specials",
    }
}

fn file_bytes(e: &Entry) -> u64 {
    if e.kind == Kind::File {
        e.size
    } else {
        0
    }
}

/// An error met while writing an entry is about that entry: when it names the temporary (or the
/// folder holding an unnamed one, or anything in a folder not yet named), name the file the user
/// knows instead.
fn naming_the_file(e: Error, final_path: &Path) -> Error {
    match e {
        Error::Io { op, path, source }
            if path.file_name().is_some_and(tempname::is_temp)
                || Some(path.as_path()) == final_path.parent()
                || path.iter().any(tempname::is_temp_dir) =>
        {
            Error::Io {
                op,
                path: final_path.to_path_buf(),
                source,
            }
        }
        other => other,
    }
}

/// Removes a temporary an interrupted run left: a file, or a folder it was still filling, with
/// everything in it (never following a link: each folder is opened as itself, and anything
/// that is not a folder is unlinked).
/// A folder that another run is still filling (it holds the folder's lock) is left alone.
fn remove_temp(dir: &Dir, name: &OsStr) -> Result<()> {
    // Listings set a name aside as a leftover only with its kind ([`tempname::is_leftover`]),
    // so a `.dir` name here is a folder; opened as one, never followed.
    if !tempname::is_temp_dir(name) {
        return sys::unlink_at(At::new(dir, name));
    }
    let sub = dir.open_child(name)?;
    if sys::dir_held(&sub) {
        return Ok(());
    }
    remove_dir_tree(dir, name, sub)
}

/// A folder (`sub`, open) and all it holds, links unlinked, never followed, children first
/// and without recursion.
fn remove_dir_tree(dir: &Dir, name: &OsStr, sub: Dir) -> Result<()> {
    let names = sub.read_names()?;
    crate::tree::walk(sub, names, Path::new(""), &mut |v| {
        match v {
            Visit::Entry { dir, name, .. } => {
                let at = At::new(dir, name);
                if sys::stat_at(at, PathBuf::new())?.kind == Kind::Dir {
                    let child = dir.open_child(name)?;
                    let names = child.read_names()?;
                    return Ok(Then::Descend(child, names));
                }
                sys::unlink_at(at)?;
            }
            Visit::Left { dir, name, .. } => {
                sys::rmdir_at(At::new(dir, name))?;
            }
        }
        Ok(Then::Next)
    })?;
    sys::rmdir_at(At::new(dir, name)).map(|_| ())
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

/// Reads back the written temporary and the source, and refuses the copy if their BLAKE3 differ.
fn verify_copy(src: &dyn decide::Inside, tmp: At<'_>) -> Result<()> {
    if src.hash()? == decide::hash_at(tmp)? {
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
        Method::Network => "network",
        Method::NetworkStriped => "network_striped",
    }
}
