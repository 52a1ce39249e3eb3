//! Hard links: names of one source inode are written once and linked at the end; destination
//! inodes shared in ways the source's are not are split.

use super::*;

/// Later names of a hard-link group wait for the end, when the first name is surely written.
pub(super) struct Group {
    pub(super) leader: PathBuf,
    pub(super) written: bool,
    pub(super) followers: Vec<(Entry, Option<Entry>)>,
}

/// A destination file with other names while the source has one: changing it in place would
/// change those names too.
pub(super) fn shared_dst(a: &Entry, b: &Entry) -> bool {
    let lone_src = a.kind != Kind::File || a.nlink <= 1;
    b.kind == Kind::File && b.nlink > 1 && lone_src
}

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    /// Records `a` in its hard-link group; `true` when it is a later name (linked at the end).
    pub(super) fn join_group(&self, a: &Entry, b: Option<&Entry>) -> bool {
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

    pub(super) fn link_followers(&self) {
        let groups = std::mem::take(&mut *self.groups.lock().unwrap());
        for (_, g) in groups {
            for (a, b) in g.followers {
                if self.cancelled() {
                    return;
                }
                if let Err(e) = self.link_one(&g.leader, g.written, &a, b.as_ref()) {
                    let path = self.dst.root_path().join(&a.rel);
                    self.fail_src(&a.rel, naming_the_file(e, &path));
                }
            }
        }
    }

    pub(super) fn link_one(
        &self,
        leader: &Path,
        written: bool,
        a: &Entry,
        b: Option<&Entry>,
    ) -> Result<()> {
        if self.failed_src.lock().unwrap().contains(leader) {
            return Ok(());
        }
        let reason = format!("to {}", crate::names::escape_rel(leader));
        let (ldir, lname) = self.dst.parent_of(leader)?;
        let (ddir, dname) = self.dst.parent_of(&a.rel)?;
        if !written {
            if let Some(b) = b.filter(|b| b.kind == Kind::File) {
                let l = self.dst.stat(&ldir, &lname, leader.to_path_buf());
                if l.is_ok_and(|l| l.ino == b.ino && l.dev == b.dev) {
                    self.unchanged.fetch_add(1, Ordering::Relaxed);
                    if self.is_move() {
                        let (sdir, sname) = self.src.parent_of(&a.rel)?;
                        let pair = Pair {
                            src: &sdir,
                            sname: &sname,
                            dst: &ddir,
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
        let replaces_dir = b.is_some_and(|b| b.kind == Kind::Dir);
        if replaces_dir {
            self.make_way(&ddir, &dname)?;
        }
        let (sdir, sname) = self.src.parent_of(&a.rel)?;
        if self.is_move() && !self.cross_device.load(Ordering::Relaxed) {
            if replaces_dir {
                self.delete_tree(&ddir, &dname, &a.rel, Deleting::InTheWay)?;
            }
            if let Some(r) = self.rename_move(&sdir, &sname, &ddir, &dname) {
                r?;
                self.emit(Action::Link, Kind::File, &a.rel, &reason, 0);
                return Ok(());
            }
        }
        self.place(&ddir, &dname, &a.rel, (replaces_dir, false), |dir, tmp| {
            self.dst.hard_link((&ldir, &lname), (dir, tmp))
        })?;
        if self.is_move() {
            self.release.lock().unwrap().push(Release::of(a, false));
        }
        self.emit(Action::Link, Kind::File, &a.rel, &reason, 0);
        Ok(())
    }

    /// Destination files sharing an inode inside the tree while their sources are separate files
    /// are rewritten, so each gets its own inode again.
    pub(super) fn split_shared(&self) {
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
                .and_then(|s| self.dst.parent_of(&a.rel).map(|d| (s, d)));
            match located {
                Ok(((sdir, sname), (ddir, dname))) => {
                    let pair = Pair::looked_up(&sdir, &sname, &ddir, &dname);
                    self.unchanged.fetch_sub(1, Ordering::Relaxed);
                    self.write(&pair, &a, Some(&b), Reason::Unlink);
                }
                Err(e) => self.fail_src(&a.rel, e),
            }
        }
    }
}
