//! `move`: sources removed only once their copies are safely in place (renamed across, or
//! copied, flushed and checked unchanged).

use super::*;

/// A `move`'s source to remove at the end, once its copy is flushed.
pub(super) struct Release {
    pub(super) rel: PathBuf,
    /// The copy is a file written by this run, to flush first.
    pub(super) flush: bool,
    /// A file's size, mtime and inode when it was copied: it is removed only if still so.
    pub(super) seen: Option<Version>,
}

impl Release {
    pub(super) fn of(a: &Entry, flush: bool) -> Release {
        Release {
            rel: a.rel.clone(),
            flush,
            seen: (a.kind == Kind::File).then_some(a.version()),
        }
    }
}

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    /// `move` of an entry already right in the destination: within one filesystem, a rename over
    /// it (atomic, and the source is gone); otherwise remove the source at the end, once the
    /// destination is flushed.
    pub(super) fn move_unchanged(&self, pair: &Pair<'_, S::Dir, D::Dir>, a: &Entry) {
        let d = pair.dst;
        match self.rename_move(pair.src, pair.sname, d, pair.dname) {
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
    pub(super) fn rename_move(
        &self,
        sdir: &S::Dir,
        sname: &OsStr,
        dir: &D::Dir,
        name: &OsStr,
    ) -> Option<Result<()>> {
        if self.cross_device.load(Ordering::Relaxed) {
            return None;
        }
        match self.dst.rename_from(self.src, sdir, sname, dir, name) {
            Some(Ok(())) => Some(Ok(())),
            Some(Err(e)) if !sys::is_cross_device(&e) => {
                Some(Err(Error::io(Op::Rename, self.dst.path(dir, name), e)))
            }
            _ => {
                self.cross_device.store(true, Ordering::Relaxed);
                None
            }
        }
    }

    /// `move` across filesystems: flush the copies (file, then folder), then remove the sources.
    pub(super) fn release_sources(&self) {
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
                    .dst
                    .parent_of(rel)
                    .and_then(|(d, n)| self.dst.fsync(&d, &n));
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
                        .dst
                        .parent_of(&rel)
                        .and_then(|(d, _)| self.dst.fsync_dir(&d));
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
    pub(super) fn still_as_copied(
        &self,
        dir: &S::Dir,
        name: &OsStr,
        rel: &Path,
        seen: Option<Version>,
    ) -> Result<()> {
        let Some(seen) = seen else {
            return Ok(());
        };
        let now = self.src.stat(dir, name, rel)?;
        if now.kind == Kind::File && now.version() == seen {
            return Ok(());
        }
        Err(Error::rule(
            Op::Delete,
            self.src.path(dir, name),
            Rule::ChangedAfterCopy,
        ))
    }

    /// `move`: source folders emptied by the move go, deepest first, the root included; one
    /// still holding something (an excluded or failed entry) stays.
    pub(super) fn remove_source_dirs(&self) {
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
