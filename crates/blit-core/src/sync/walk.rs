//! Walking and merging: the roots, then each pair of folder listings merged into tasks (copies,
//! deletions, folders to walk next) that start at once.

use super::*;

/// The destination root folder as it stood before the run.
struct DstRoot<DD> {
    dir: Arc<DD>,
    list: Listing,
    entry: Entry,
}

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    pub(super) fn run_tree(&self, mut src_entry: Entry) -> Result<()> {
        src_entry.xattrs = self.opts.rules.xattrs;
        let src = Arc::new(self.src.open_root()?);
        let src_list = self.list_src(&src, Path::new(""));
        let existing = self.open_dst_tree()?;
        if let (Ok(sl), Some(root)) = (&src_list, &existing) {
            self.refuse_emptying(sl, &root.list)?;
        }
        let (dst, dst_list, dst_setgid) = match existing {
            Some(root) => {
                self.record_dir_pair(&src_entry, &root.entry, &src, &root.dir);
                let setgid = self.gives_group(&root.entry);
                (root.dir, Some(root.list), setgid)
            }
            None => {
                let (d, setgid) = self.make_dst_root(&src_entry)?;
                (d, None, setgid)
            }
        };
        let dst_acl = match self.dst.finish_at(Path::new("")) {
            Ok((dd, dn)) => self.default_acl(&dd, &dn, None),
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
            .map_err(|e| Error::io(Op::ReadDir, self.dst.root_path(), std::io::Error::other(e)))?;
        pool.scope(|s| match src_list {
            Ok(sl) => self.merge(s, &node, sl, dst_list),
            // The source root cannot be listed: nothing may be judged absent.
            Err(e) => self.fail(e),
        });
        Ok(())
    }

    /// The destination root folder, if it exists: its handle, listing and entry.
    fn open_dst_tree(&self) -> Result<Option<DstRoot<D::Dir>>> {
        let dst_root = self.dst.root_path();
        let root_entry = match self.dst.root_entry(true)? {
            None => return Ok(None),
            Some(e) if e.kind != Kind::Dir => {
                return Err(Error::Refused(format!(
                    "destination {} is not a folder, but the source is",
                    crate::names::escape(dst_root)
                )))
            }
            Some(e) => e,
        };
        // Changed through its own handle: the root may be a link to the folder the user means,
        // which its parent's handle and name would not follow.
        let d = match self.dst.open_root() {
            Ok(d) => d,
            Err(e) => {
                // Perhaps unreadable even to its owner: opened up by name, then again.
                let Ok((outer, name)) = self.dst.parent_of(Path::new("")) else {
                    return Err(e);
                };
                self.open_up(&outer, &name, &root_entry);
                self.dst.open_root()?
            }
        };
        if let Ok((dd, dn)) = self.dst.finish_at(Path::new("")) {
            self.open_up(&dd, &dn, &root_entry);
        }
        let list = self.list(&d, Path::new(""))?;
        let mut e = root_entry;
        e.xattrs = self.opts.rules.xattrs;
        let e = self.presented(&d, OsStr::new("."), Ok(e))?;
        Ok(Some(DstRoot {
            dir: d,
            list,
            entry: e,
        }))
    }

    /// A mirror from an empty source would empty the destination: refused without `--force`.
    fn refuse_emptying(&self, src: &Listing, dst: &Listing) -> Result<()> {
        if self.opts.job.mode == Mode::Mirror
            && !self.opts.job.force
            && src.entries.is_empty()
            && src.unknown.is_empty()
            && !dst.entries.is_empty()
        {
            return Err(Error::Refused(format!(
                "source {} is empty and would empty the destination {}; use --force if that is meant",
                crate::names::escape(&self.src.root_path()),
                crate::names::escape(self.dst.root_path())
            )));
        }
        Ok(())
    }

    /// Makes the destination root (and its parents); returns it, and whether what goes in it
    /// may get a group other than ours.
    fn make_dst_root(&self, src_entry: &Entry) -> Result<(Arc<D::Dir>, bool)> {
        self.dst.make_root()?;
        let d = self.dst.open_root()?;
        // Made where its parent may hand it a group (set-group-ID, `grpid`): what goes in it is
        // judged by what it got.
        let made = self
            .dst
            .finish_at(Path::new(""))
            .and_then(|(dd, dn)| self.dst.stat(&dd, &dn, PathBuf::new()));
        let setgid = made.map_or(true, |e| self.gives_group(&e));
        self.emit(Action::Create, Kind::Dir, Path::new(""), "new", 0);
        self.dirs.lock().unwrap().push(DirRecord {
            entry: src_entry.clone(),
            reason: None,
            existed: false,
            made_as: None,
        });
        Ok((d, setgid))
    }

    /// SRC is a file: one entry, whose destination is a file path (its folder exists or is made
    /// by the caller).
    pub(super) fn run_file(&self, mut a: Entry) -> Result<()> {
        a.xattrs = self.opts.rules.xattrs;
        let (sdir, sname) = self.src.parent_of(Path::new(""))?;
        let (ddir, dname) = self.dst.parent_of(Path::new(""))?;
        let b = match self.dst.root_entry(false)? {
            Some(mut e) => {
                e.xattrs = self.opts.rules.xattrs;
                Some(self.presented(&ddir, &dname, Ok(e))?)
            }
            None => None,
        };
        let pair = Pair::looked_up(&sdir, &sname, &ddir, &dname);
        match b {
            None => self.write(&pair, &a, None, Reason::New),
            Some(b) => self.both_non_dir(&pair, &a, &b),
        }
        Ok(())
    }

    pub(super) fn merge<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir, D::Dir>,
        src: Listing,
        dst: Option<Listing>,
    ) {
        let _clock = Clock::start(&self.busy.plan);
        let dst = dst.unwrap_or_default();
        for t in &dst.temps {
            if self.opts.job.resume && tempname::is_partial(t) {
                // Kept for this run to continue; a run without --resume removes it.
                continue;
            }
            if let Err(e) = self.remove_temp(&node.dst, t) {
                self.fail(e);
            }
        }
        if S::HINTS && D::KEEPS_CONTENT {
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
    pub(super) fn hint(&self, node: &Node<S::Dir, D::Dir>, src: &Listing, dst: &Listing) {
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
    pub(super) fn dst_only<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir, D::Dir>,
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
        if self.opts.job.max_delete.is_some() || self.opts.job.delete_after {
            return self.deletes.lock().unwrap().push(b);
        }
        let dir = Arc::clone(&node.dst);
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

    /// Runs `f` (a copy or a deletion the merge of a folder hands out) as a task of the walk,
    /// or at once, on the merging thread, when [`QUEUED_TASKS`] tasks already wait: each holds
    /// its entries, and a folder of a million new files (or a peer's listing of them) would
    /// otherwise queue a million before the first is done. Folders are always tasks (they
    /// walk on; run in place they would recurse).
    pub(super) fn task<'s>(&'s self, s: &rayon::Scope<'s>, f: impl FnOnce() + Send + 's) {
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
    pub(super) fn entry<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir, D::Dir>,
        a: Entry,
        b: Option<Entry>,
    ) {
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
                        dst: &dst,
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
    pub(super) fn same_at_a_glance(&self, a: &Entry, b: &Entry) -> bool {
        // `move` still has work for an unchanged entry; a destination with other names may need
        // splitting (see `both_non_dir`).
        !self.is_move()
            && !shared_dst(a, b)
            && matches!(decide::quick(a, b, &self.opts.rules), Some(Decision::Same))
    }

    /// A source folder `a`, with its destination counterpart `b` if any: the destination folder
    /// is made now if it is missing (before anything in it), and walked into as a task.
    pub(super) fn dir_entry<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        node: &Node<S::Dir, D::Dir>,
        a: Entry,
        b: Option<Entry>,
        name: OsString,
    ) {
        let parent = Arc::clone(&node.dst);
        let replaces = b.is_some();
        let existing = b.filter(|b| b.kind == Kind::Dir);
        let (dst_setgid, dst_acl, hold) = match &existing {
            Some(b) => {
                self.open_up(&parent, &name, b);
                let acl = self.default_acl(&parent, &name, Some(b));
                (self.gives_group(b), acl, None)
            }
            // A folder made here got its group from its parent if the parent gives one (and
            // with it, on Linux, the set-group-ID bit), and its parent's default ACL: it gives
            // them on in turn.
            None => match self.make_dir(node, &a, &name, replaces) {
                Ok(hold) => (node.dst_setgid, node.dst_acl, hold),
                Err(()) => return,
            },
        };
        let into = Descent {
            src_parent: Arc::clone(&node.src),
            dst_parent: parent,
            name,
            a,
            existing,
            dst_setgid,
            dst_acl,
        };
        s.spawn(move |s| self.descend(s, into, hold));
    }

    /// Makes the destination folder for `a` (replacing a non-folder standing there), under a
    /// temporary name when it is new and that may be; `Err` when it could not be made
    /// (reported: nothing inside can be written).
    fn make_dir(
        &self,
        node: &Node<S::Dir, D::Dir>,
        a: &Entry,
        name: &OsStr,
        replaces: bool,
    ) -> std::result::Result<Option<Hold<'_, 'a, S, D>>, ()> {
        let pd = &node.dst;
        let mut hold = None;
        let made = if !replaces && self.fresh_folders() {
            self.make_fresh(pd, name, &a.rel).map(|fresh| {
                hold = fresh.map(|f| Hold {
                    sx: self,
                    fresh: Arc::new(f),
                });
            })
        } else {
            let cleared = if replaces {
                self.dst.unlink(pd, name)
            } else {
                Ok(())
            };
            cleared.and_then(|()| self.dst.mkdir(pd, name))
        };
        if let Err(e) = made {
            let shown = self.dst.root_path().join(&a.rel);
            self.fail_src(&a.rel, naming_the_file(e, &shown));
            return Err(());
        }
        let (action, reason) = if replaces {
            (Action::Update, Reason::Type)
        } else {
            (Action::Create, Reason::New)
        };
        self.emit(action, Kind::Dir, &a.rel, &reason.label(), 0);
        self.dirs.lock().unwrap().push(DirRecord {
            entry: a.clone(),
            reason: None,
            existed: false,
            made_as: (!node.dst_setgid).then_some(self.creator),
        });
        Ok(hold)
    }

    /// The task that walks into a folder pair: opens both sides, lists them, merges.
    fn descend<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        into: Descent<S::Dir, D::Dir>,
        hold: Option<Hold<'s, 'a, S, D>>,
    ) {
        if self.cancelled() {
            return;
        }
        let Descent {
            src_parent,
            dst_parent,
            name,
            a,
            existing,
            dst_setgid,
            dst_acl,
        } = into;
        let rel = &a.rel;
        let src = match self.src.open_child(&src_parent, &name) {
            Ok(d) => Arc::new(d),
            Err(e) => return self.fail(e),
        };
        let dst = match &hold {
            // Made under a temporary name, and already open (and locked).
            Some(h) => Arc::clone(&h.fresh.dir),
            None => match self.dst.open_child(&dst_parent, &name) {
                Ok(d) => Arc::new(d),
                Err(e) => return self.fail_src(rel, e),
            },
        };
        if let Some(b) = &existing {
            self.record_dir_pair(&a, b, &src, &dst);
        }
        let src_list = match self.list_src(&src, rel) {
            Ok(l) => l,
            // Unreadable: its destination side is left exactly as it is.
            Err(e) => return self.fail(e),
        };
        let dst_list = match existing {
            Some(_) => match self.list(&dst, rel) {
                Ok(l) => Some(l),
                Err(e) => {
                    self.fail(e);
                    None
                }
            },
            None => None,
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
    }

    /// Makes a new destination folder under a temporary name, open and locked ([`Fresh`]).
    /// `None` when it cannot be locked: it is then named at once and filled as usual.
    pub(super) fn make_fresh(
        &self,
        parent: &Arc<D::Dir>,
        name: &OsStr,
        rel: &Path,
    ) -> Result<Option<Fresh<D::Dir>>> {
        let temp = tempname::next_dir();
        self.dst.mkdir(parent, &temp)?;
        let dir = match self.dst.open_child(parent, &temp) {
            Ok(d) => d,
            Err(e) => {
                let _ = self.dst.rmdir(parent, &temp);
                return Err(e);
            }
        };
        if !self.dst.hold_dir(&dir) {
            drop(dir);
            self.dst.publish_dir(parent, &temp, name)?;
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
    pub(super) fn open_up(&self, dir: &D::Dir, name: &OsStr, b: &Entry) {
        if self.opts.meta.owner || b.perm & 0o700 == 0o700 {
            return;
        }
        if b.uid == self.creator.0 {
            if let Err(e) = self.dst.chmod(dir, name, b.perm | 0o700) {
                self.fail(e);
            }
        }
    }

    /// A folder present on both sides: its metadata is compared now, restored at the end.
    pub(super) fn record_dir_pair(
        &self,
        a: &Entry,
        b: &Entry,
        src: &Arc<S::Dir>,
        dst: &Arc<D::Dir>,
    ) {
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
    pub(super) fn full_decision_of_dirs(
        &self,
        a: &Entry,
        b: &Entry,
        src: &Arc<S::Dir>,
        dst: &Arc<D::Dir>,
    ) -> Result<Decision> {
        let dot = OsStr::new(".");
        let sa = self.src.inside(src, dot, a);
        decide::full(a, b, &*sa, &*self.dst_inside(dst, dot), &self.opts.rules)
    }

    /// What [`decide::full`] reads inside a destination entry: under fake super, its attributes
    /// as the entry it stands for.
    pub(super) fn dst_inside<'d>(
        &'d self,
        dir: &'d D::Dir,
        name: &'d OsStr,
    ) -> Box<dyn decide::Inside + 'd> {
        if self.opts.meta.fake_super {
            Box::new(Stored {
                dst: self.dst,
                dir,
                name,
            })
        } else {
            self.dst.inside(dir, name)
        }
    }
}
