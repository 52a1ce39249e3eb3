//! Deleting destination entries: what a mirror's source lacks and what a new type replaces,
//! walked without recursion, never past what the listing saw.

use super::*;

/// Why a destination entry is deleted.
#[derive(Clone, Copy)]
pub(super) enum Deleting<'e> {
    /// `mirror`: it was listed, and the source has no entry of its name.
    Extra(&'e Entry),
    /// A source entry of another type takes its name: it must go, even a folder holding
    /// excluded entries (which is then an error).
    InTheWay,
}

/// Whether the entry found now at a listed name is the one listed: the same inode where the
/// platform gives inode numbers, else the same type, and for a file the same size and mtime.
pub(super) fn still_the_listed(listed: &Entry, now: &Entry) -> bool {
    if listed.kind != now.kind {
        return false;
    }
    if listed.ino != 0 && now.ino != 0 {
        return (listed.dev, listed.ino) == (now.dev, now.ino);
    }
    listed.kind != Kind::File || (listed.size == now.size && listed.mtime == now.mtime)
}

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    /// A folder (`sub`, open) and all it holds, links unlinked, never followed, children first
    /// and without recursion.
    pub(super) fn remove_dir_tree(&self, dir: &D::Dir, name: &OsStr, sub: D::Dir) -> Result<()> {
        let names = self.dst.read_names(&sub)?;
        crate::tree::walk(sub, names, Path::new(""), &mut |v| {
            match v {
                Visit::Entry { dir, name, .. } => {
                    if self.dst.stat(dir, name, PathBuf::new())?.kind == Kind::Dir {
                        let child = self.dst.open_child(dir, name)?;
                        let names = self.dst.read_names(&child)?;
                        return Ok(Then::Descend(child, names));
                    }
                    self.dst.unlink(dir, name)?;
                }
                Visit::Left { dir, name, .. } => {
                    self.dst.rmdir(dir, name)?;
                }
            }
            Ok(Then::Next)
        })?;
        self.dst.rmdir(dir, name).map(|_| ())
    }

    /// Deletes the destination entry `name` in `dir` and, for a folder, everything in it that the
    /// filter does not protect, children first, reporting each. A folder still holding excluded
    /// entries stays; one in the way of a source entry cannot, and that is an error.
    pub(super) fn delete_tree(
        &self,
        dir: &Arc<D::Dir>,
        name: &OsStr,
        rel: &Path,
        why: Deleting<'_>,
    ) -> Result<()> {
        let now = self.dst.stat(dir, name, rel.to_path_buf());
        let e = match self.presented(dir, name, now) {
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
            let _ = self.remove_temp(dir, name);
            return Ok(());
        }
        if e.kind != Kind::Dir {
            match self.dst.unlink(dir, name) {
                Ok(()) => {}
                Err(err) if is_not_found(&err) => return Ok(()),
                Err(err) => return Err(err),
            }
            self.emit(Action::Delete, e.kind, rel, "not in source", file_bytes(&e));
            return Ok(());
        }
        let sub = self.dst.open_child(dir, name)?;
        let names = self.dst.read_names(&sub)?;
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
                    match self.dst.rmdir(dir, name) {
                        Ok(true) => self.emit(Action::Delete, Kind::Dir, rel, "not in source", 0),
                        Ok(false) => {}
                        Err(e) => self.fail(e),
                    }
                    Ok(Then::Next)
                }
            }
        })?;
        if self.dst.rmdir(dir, name)? {
            self.emit(Action::Delete, Kind::Dir, rel, "not in source", 0);
        } else if matches!(why, Deleting::InTheWay) {
            return Err(Error::rule(
                Op::Delete,
                self.dst.path(dir, name),
                Rule::HoldsExcluded,
            ));
        }
        Ok(())
    }

    /// One entry inside a folder being deleted: a file, link or special goes at once (a
    /// leftover temporary without a report); a folder is gone into, unless the filter protects
    /// it. Failures are reported and the rest goes on.
    pub(super) fn delete_inside(&self, dir: &D::Dir, name: &OsStr, rel: &Path) -> Then<D::Dir> {
        let now = self.dst.stat(dir, name, rel.to_path_buf());
        let e = match self.presented(dir, name, now) {
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
            let _ = self.remove_temp(dir, name);
            return Then::Next;
        }
        if !is_dir {
            match self.dst.unlink(dir, name) {
                Ok(()) => {}
                Err(err) if is_not_found(&err) => return Then::Next,
                Err(err) => {
                    self.fail(err);
                    return Then::Next;
                }
            }
            self.emit(Action::Delete, e.kind, rel, "not in source", file_bytes(&e));
            return Then::Next;
        }
        let listed = self.dst.open_child(dir, name).and_then(|sub| {
            let names = self.dst.read_names(&sub)?;
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
    pub(super) fn count_tree(&self, dir: &D::Dir, name: &OsStr, rel: &Path) -> u64 {
        let Ok(sub) = self.dst.open_child(dir, name) else {
            return 1;
        };
        let names = self.dst.read_names(&sub).unwrap_or_default();
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
                None => self
                    .dst
                    .stat(dir, name, rel.to_path_buf())
                    .is_ok_and(|e| e.kind == Kind::Dir),
            };
            if self.filter.excludes(rel, is_dir) || tempname::is_leftover(name, is_dir) {
                return Ok(Then::Next);
            }
            n += 1;
            if !is_dir {
                return Ok(Then::Next);
            }
            Ok(match self.dst.open_child(dir, name) {
                Ok(sub) => {
                    let names = self.dst.read_names(&sub).unwrap_or_default();
                    Then::Descend(sub, names)
                }
                Err(_) => Then::Next,
            })
        });
        n
    }

    /// The deletions held back for `--max-delete` or `--delete-after` (see `dst_only`): all
    /// counted, then all or none.
    pub(super) fn delete_extras(&self, pool: Option<&rayon::ThreadPool>) {
        let deletes = std::mem::take(&mut *self.deletes.lock().unwrap());
        if deletes.is_empty() {
            return;
        }
        if let Some(max) = self.opts.job.max_delete {
            let mut planned = 0u64;
            for b in &deletes {
                planned += match (b.kind, self.dst.parent_of(&b.rel)) {
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
                .dst
                .parent_of(&b.rel)
                .and_then(|(d, n)| self.delete_tree(&d, &n, &b.rel, Deleting::Extra(&b)));
            if let Err(e) = r {
                self.fail(e);
            }
        });
    }
}
