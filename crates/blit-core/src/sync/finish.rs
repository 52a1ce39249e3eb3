//! The end of a run: hard links, moves' sources, deferred deletions, then folder metadata,
//! deepest first.

use super::*;

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    /// The end of a run, in order; each step's wall time goes into `phases`.
    pub(super) fn finish(&self, phases: &mut BTreeMap<&'static str, f64>) {
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
        if self.is_move() {
            step("remove", &|| self.remove_source_dirs());
        }
    }

    /// Folder metadata, deepest first (the root last), after everything inside is done: a
    /// folder's mode may take away the access its subfolders' changes need. Folders of one depth
    /// never contain each other, so each depth goes in parallel.
    pub(super) fn finish_dirs(&self, pool: Option<&rayon::ThreadPool>) {
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

    pub(super) fn finish_dir(&self, d: &DirRecord, failed: &HashSet<PathBuf>) {
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
        let r = self.dst.finish_at(rel).and_then(|(dd, dn)| {
            if d.existed && d.reason.is_none() {
                // Matched when paired (xattrs included); what the run did inside may have
                // moved its mtime since. One stat tells, where rewriting owner, mode and
                // times on every folder would dirty each inode (and its ctime) for nothing.
                let now = self.dst.stat(&dd, &dn, rel.clone());
                let now = self.presented(&dd, &dn, now)?;
                return match decide::meta_only(&d.entry, &now, &self.opts.rules, false) {
                    Decision::Same => Ok(()),
                    // The usual case after a change inside: only the time moved.
                    Decision::Meta(m) if !m.perm && !m.owner => {
                        self.dst.set_mtime(&dd, &dn, &d.entry)
                    }
                    _ => self
                        .dst
                        .apply_meta(&dd, &dn, &d.entry, self.opts.meta, None),
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
            self.dst
                .apply_meta(&dd, &dn, &d.entry, meta, xattrs.as_ref())
        });
        if let Err(e) = r {
            self.fail(e);
            return;
        }
        if let Some(reason) = d.reason {
            self.emit(Action::Metadata, Kind::Dir, rel, &reason.label(), 0);
        }
    }
}
