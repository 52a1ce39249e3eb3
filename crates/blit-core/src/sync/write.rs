//! Writing one entry: decided against what stands there, written to a temporary in its folder,
//! and renamed over the final name only when complete ([`TempGuard`]).

use super::*;

/// A destination entry under fake super, as a decision looks inside it.
pub(super) struct Stored<'d, D: Destination> {
    pub(super) dst: &'d D,
    pub(super) dir: &'d D::Dir,
    pub(super) name: &'d OsStr,
}

impl<D: Destination> decide::Inside for Stored<'_, D> {
    fn hash(&self) -> Result<blake3::Hash> {
        self.dst.inside(self.dir, self.name).hash()
    }

    fn link_target(&self) -> Result<PathBuf> {
        self.dst.inside(self.dir, self.name).link_target()
    }

    fn xattrs(&self) -> Result<Xattrs> {
        let stored = self.dst.xattrs(self.dir, self.name)?;
        Ok(crate::fakesuper::present_xattrs(&stored))
    }
}

/// A temporary in a destination folder, removed on drop unless renamed into place, so an error or
/// a cancellation never leaves one behind.
pub(super) struct TempGuard<'d, D: Destination> {
    pub(super) dst: &'d D,
    pub(super) dir: Arc<D::Dir>,
    pub(super) name: OsString,
    pub(super) armed: bool,
}

impl<'d, D: Destination> TempGuard<'d, D> {
    pub(super) fn new(dst: &'d D, dir: &Arc<D::Dir>) -> Self {
        TempGuard {
            dst,
            dir: Arc::clone(dir),
            name: tempname::next(),
            armed: true,
        }
    }

    /// The fixed temporary of a resumable transfer: kept when the transfer fails, so the next
    /// run with `--resume` continues it.
    pub(super) fn partial(dst: &'d D, dir: &Arc<D::Dir>, final_name: &OsStr) -> Self {
        TempGuard {
            dst,
            dir: Arc::clone(dir),
            name: tempname::partial(final_name),
            armed: false,
        }
    }

    /// The copy named the file itself; there is no temporary to remove.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }

    pub(super) fn commit(mut self, final_name: &OsStr) -> Result<()> {
        self.dst.rename(&self.dir, &self.name, final_name)?;
        self.armed = false;
        Ok(())
    }
}

impl<D: Destination> Drop for TempGuard<'_, D> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dst.unlink(&self.dir, &self.name);
        }
    }
}

pub(super) fn file_bytes(e: &Entry) -> u64 {
    if e.kind == Kind::File {
        e.size
    } else {
        0
    }
}

/// An error met while writing an entry is about that entry: when it names the temporary (or the
/// folder holding an unnamed one, or anything in a folder not yet named), name the file the user
/// knows instead.
pub(super) fn naming_the_file(e: Error, final_path: &Path) -> Error {
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

impl<'a, S: Source, D: Destination> Syncer<'a, S, D> {
    /// Removes a temporary an interrupted run left: a file, or a folder it was still filling,
    /// with everything in it (never following a link: each folder is opened as itself, and
    /// anything that is not a folder is unlinked). A folder that another run is still filling
    /// (it holds the folder's lock) is left alone.
    pub(super) fn remove_temp(&self, dir: &D::Dir, name: &OsStr) -> Result<()> {
        // Listings set a name aside as a leftover only with its kind
        // ([`tempname::is_leftover`]), so a `.dir` name here is a folder; opened as one, never
        // followed.
        if !tempname::is_temp_dir(name) {
            return self.dst.unlink(dir, name);
        }
        let sub = self.dst.open_child(dir, name)?;
        if self.dst.dir_held(&sub) {
            return Ok(());
        }
        self.remove_dir_tree(dir, name, sub)
    }

    /// Reads back the written temporary and the source, and refuses the copy if their BLAKE3
    /// differ.
    pub(super) fn verify_copy(
        &self,
        src: &dyn decide::Inside,
        dir: &D::Dir,
        tmp: &OsStr,
    ) -> Result<()> {
        if src.hash()? == self.dst.inside(dir, tmp).hash()? {
            Ok(())
        } else {
            Err(Error::rule(
                Op::Checksum,
                self.dst.path(dir, tmp),
                Rule::ChecksumMismatch,
            ))
        }
    }

    pub(super) fn both_non_dir(&self, pair: &Pair<'_, S::Dir, D::Dir>, a: &Entry, b: &Entry) {
        let decision = match decide::quick(a, b, &self.opts.rules) {
            Some(d) => Ok(d),
            None => decide::full(
                a,
                b,
                &*self.src.inside(pair.src, pair.sname, a),
                &*self.dst_inside(pair.dst, pair.dname),
                &self.opts.rules,
            ),
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

    pub(super) fn update_meta(&self, pair: &Pair<'_, S::Dir, D::Dir>, a: &Entry, m: MetaDiff) {
        let d = pair.dst;
        let r = self.xattrs_of(pair.src, pair.sname, a).and_then(|x| {
            self.dst
                .apply_meta(d, pair.dname, a, self.opts.meta, x.as_ref())
        });
        if let Err(e) = r {
            return self.fail_src(&a.rel, e);
        }
        self.emit(Action::Metadata, a.kind, &a.rel, &m.label(), 0);
        if self.is_move() {
            self.move_unchanged(pair, a);
        }
    }

    /// Puts a non-folder entry in place (new, changed, or replacing something else).
    pub(super) fn write(
        &self,
        pair: &Pair<'_, S::Dir, D::Dir>,
        a: &Entry,
        b: Option<&Entry>,
        reason: Reason,
    ) {
        let action = if b.is_none() {
            Action::Create
        } else {
            Action::Update
        };
        let dst = pair.dst;
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
                    self.dst.root_path().join(&a.rel)
                } else {
                    self.dst.path(dst, pair.dname)
                };
                self.fail_src(&a.rel, naming_the_file(e, &shown))
            }
        }
    }

    /// `copy` and `move` never delete: a folder standing where the source has something else
    /// may go only if it is empty. (`mirror` clears it when the entry is put in place.)
    pub(super) fn make_way(&self, dst: &D::Dir, name: &OsStr) -> Result<()> {
        if self.opts.job.mode == Mode::Mirror || self.dst.rmdir(dst, name)? {
            return Ok(());
        }
        Err(Error::rule(
            Op::Delete,
            self.dst.path(dst, name),
            Rule::CopyNeverDeletes,
        ))
    }

    pub(super) fn mark_written(&self, a: &Entry) {
        if let Some(g) = self.groups.lock().unwrap().get_mut(&(a.dev, a.ino)) {
            if g.leader == a.rel {
                g.written = true;
            }
        }
    }

    /// Writes the entry; returns the bytes written and the method's name.
    pub(super) fn put(
        &self,
        pair: &Pair<'_, S::Dir, D::Dir>,
        dst: &Arc<D::Dir>,
        a: &Entry,
        replaces_dir: bool,
        fresh: bool,
    ) -> Result<(u64, &'static str)> {
        if self.is_move() && !self.cross_device.load(Ordering::Relaxed) {
            if replaces_dir {
                self.delete_tree(dst, pair.dname, &a.rel, Deleting::InTheWay)?;
            }
            if let Some(r) = self.rename_move(pair.src, pair.sname, dst, pair.dname) {
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
                self.place(dst, pair.dname, &a.rel, direct, |dir, tmp| {
                    match &link {
                        Some((target, dir_link)) => {
                            self.dst.symlink(dir, tmp, target, *dir_link)?
                        }
                        None => self.dst.make_special(dir, tmp, a, meta)?,
                    }
                    self.dst.apply_meta(dir, tmp, a, meta, xattrs.as_ref())
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
    pub(super) fn place(
        &self,
        dir: &Arc<D::Dir>,
        name: &OsStr,
        rel: &Path,
        (replaces_dir, direct): (bool, bool),
        make: impl FnOnce(&D::Dir, &OsStr) -> Result<()>,
    ) -> Result<()> {
        if direct && !replaces_dir {
            return make(dir, name).inspect_err(|e| {
                // Made, then failed (its metadata): removed. A name that was taken is not ours.
                let taken = matches!(e, Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::AlreadyExists);
                if !taken {
                    let _ = self.dst.unlink(dir, name);
                }
            });
        }
        let guard = TempGuard::new(self.dst, dir);
        make(dir, &guard.name)?;
        if replaces_dir {
            self.delete_tree(dir, name, rel, Deleting::InTheWay)?;
        }
        guard.commit(name)
    }

    /// What to set on an entry this run creates in `pair`'s folder: no `chown` when it is
    /// certainly made with the owner and group it should have (ours, in a folder that gives no
    /// other group), as for files.
    pub(super) fn meta_for_new(&self, pair: &Pair<'_, S::Dir, D::Dir>, a: &Entry) -> MetaOpts {
        let mut meta = self.opts.meta;
        if !pair.setgid && self.creator == (a.uid, a.gid) {
            meta.owner = false;
        }
        meta
    }

    pub(super) fn copy_file(
        &self,
        pair: &Pair<'_, S::Dir, D::Dir>,
        dst: &Arc<D::Dir>,
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
                TempGuard::partial(self.dst, dst, pair.dname)
            } else {
                TempGuard::new(self.dst, dst)
            };
            let how = Writing {
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
                cancel: &self.opts.cancel,
                progress: &progress,
                resume,
            };
            let first = attempt == 0;
            let wrote = self.dst.write_file(
                self.src,
                pair.src,
                pair.sname,
                a,
                first,
                dst,
                &guard.name,
                how,
            )?;
            match wrote {
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
                        let sa = self.src.inside(pair.src, pair.sname, a);
                        self.verify_copy(&*sa, dst, &guard.name)?;
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
}
