//! Writing one entry: decided against what stands there, written to a temporary in its folder,
//! and renamed over the final name only when complete ([`TempGuard`]).

use super::*;

/// A destination entry under fake super, as a decision looks inside it.
pub(super) struct Stored<'a>(pub(super) At<'a>);

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

/// A temporary in a destination folder, removed on drop unless renamed into place, so an error or
/// a cancellation never leaves one behind.
pub(super) struct TempGuard {
    pub(super) dir: Arc<Dir>,
    pub(super) name: OsString,
    pub(super) armed: bool,
}

impl TempGuard {
    pub(super) fn new(dir: &Arc<Dir>) -> Self {
        TempGuard {
            dir: Arc::clone(dir),
            name: tempname::next(),
            armed: true,
        }
    }

    /// The fixed temporary of a resumable transfer: kept when the transfer fails, so the next
    /// run with `--resume` continues it.
    pub(super) fn partial(dir: &Arc<Dir>, final_name: &OsStr) -> Self {
        TempGuard {
            dir: Arc::clone(dir),
            name: tempname::partial(final_name),
            armed: false,
        }
    }

    pub(super) fn at(&self) -> At<'_> {
        At::new(&self.dir, &self.name)
    }

    /// The copy named the file itself; there is no temporary to remove.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }

    pub(super) fn commit(mut self, final_name: &OsStr) -> Result<()> {
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

/// Removes a temporary an interrupted run left: a file, or a folder it was still filling, with
/// everything in it (never following a link: each folder is opened as itself, and anything
/// that is not a folder is unlinked).
/// A folder that another run is still filling (it holds the folder's lock) is left alone.
pub(super) fn remove_temp(dir: &Dir, name: &OsStr) -> Result<()> {
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

/// Reads back the written temporary and the source, and refuses the copy if their BLAKE3 differ.
pub(super) fn verify_copy(src: &dyn decide::Inside, tmp: At<'_>) -> Result<()> {
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

impl<'a, S: Source> Syncer<'a, S> {
    pub(super) fn both_non_dir(&self, pair: &Pair<'_, S::Dir>, a: &Entry, b: &Entry) {
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

    pub(super) fn update_meta(&self, pair: &Pair<'_, S::Dir>, a: &Entry, m: MetaDiff) {
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

    /// Puts a non-folder entry in place (new, changed, or replacing something else).
    pub(super) fn write(
        &self,
        pair: &Pair<'_, S::Dir>,
        a: &Entry,
        b: Option<&Entry>,
        reason: Reason,
    ) {
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
    pub(super) fn make_way(&self, dst: &Dir, name: &OsStr) -> Result<()> {
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
    pub(super) fn place(
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
    pub(super) fn meta_for_new(&self, pair: &Pair<'_, S::Dir>, a: &Entry) -> sys::MetaOpts {
        let mut meta = self.opts.meta;
        if !pair.setgid && self.creator == (a.uid, a.gid) {
            meta.owner = false;
        }
        meta
    }

    pub(super) fn copy_file(
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
}
