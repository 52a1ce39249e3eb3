//! One run from arguments to summary: resolve what SRC and DST mean, refuse what would be
//! dangerous before touching anything, then walk → plan → execute.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cancel::CancelToken;
use crate::decide::Rules;
use crate::endpoint::Endpoint;
use crate::error::{Error, Op, Result};
use crate::filter::Filter;
use crate::landing::{make_parent, resolve_dest};
use crate::options::Options;
#[cfg(feature = "remote")]
use crate::remote::Access;
use crate::report::{Failure, Observer, Summary};
use crate::sync::{self, SyncOptions};
use crate::sys::{self, MetaOpts};

/// A run: what to copy where, how, and what stops it.
pub struct Job {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub opts: Options,
    /// How to reach a remote end, and what to take from it.
    #[cfg(feature = "remote")]
    pub access: Access,
    /// Asks the run to stop cleanly (Ctrl-C).
    pub cancel: CancelToken,
}

/// Workers when the user does not say: copying small files waits on the filesystem more than on
/// the CPU, so a few more threads than cores keep both busy.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(2, 16)
}

impl Job {
    pub fn new(src: Endpoint, dst: Endpoint, opts: Options) -> Self {
        Job {
            src,
            dst,
            opts,
            #[cfg(feature = "remote")]
            access: Access::default(),
            cancel: CancelToken::default(),
        }
    }

    #[must_use]
    #[cfg(feature = "remote")]
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    #[must_use]
    pub fn with_cancel(mut self, cancel: CancelToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Runs the job. `Err` means it was refused or failed before anything changed (exit 2);
    /// per-entry failures are in the summary.
    pub fn run(&self, observer: &dyn Observer) -> Result<Summary> {
        match (&self.src, &self.dst) {
            (Endpoint::Local(src), Endpoint::Local(dst)) => self.run_local(src, dst, observer),
            #[cfg(feature = "remote")]
            (Endpoint::Local(src), Endpoint::Remote(url)) => {
                crate::remote::client::push(self, src, url, observer)
            }
            #[cfg(feature = "remote")]
            (Endpoint::Remote(url), Endpoint::Local(dst)) => {
                crate::remote::client::pull(self, url, dst, observer)
            }
            #[cfg(not(feature = "remote"))]
            (Endpoint::Local(_), Endpoint::Remote(_))
            | (Endpoint::Remote(_), Endpoint::Local(_)) => Err(Error::Refused(
                "this build of Blit copies locally only (built without the `remote` feature)"
                    .into(),
            )),
            (Endpoint::Remote(_), Endpoint::Remote(_)) => Err(Error::Refused(
                "both ends are remote; one must be a local path".into(),
            )),
        }
    }

    fn run_local(
        &self,
        src_arg: &Path,
        dst_arg: &Path,
        observer: &dyn Observer,
    ) -> Result<Summary> {
        let started = Instant::now();
        let src_md = std::fs::metadata(src_arg).map_err(|e| Error::io(Op::Stat, src_arg, e))?;
        let src_root =
            std::fs::canonicalize(src_arg).map_err(|e| Error::io(Op::Stat, src_arg, e))?;
        let name = src_root.file_name().unwrap_or_default();
        let dst_root = resolve_dest(src_md.is_dir(), name, dst_arg)?;
        refuse_overlap(&src_root, &dst_root)?;
        let filter = self.filter(src_md.is_dir())?;
        if !src_md.is_dir() && !self.opts.dry_run {
            make_parent(&dst_root)?;
        }
        let opts = self.sync_options();
        let source = crate::source::LocalSource::new(src_root.clone());
        let dest = crate::dest::LocalDest::new(dst_root);
        let outcome = sync::run_local(&source, dest, &filter, &opts, observer)?;
        Ok(self.summary(outcome, started))
    }

    /// The filter for a folder source (a single file is never filtered out).
    pub fn filter(&self, src_is_dir: bool) -> Result<Filter> {
        if src_is_dir {
            let mut excludes = self.opts.excludes.clone();
            excludes.retain(|p| !p.is_empty());
            Filter::new(&excludes, &self.opts.includes)
        } else {
            Ok(Filter::default())
        }
    }

    /// The engine's options for this job, on this machine (owner kept only as root).
    pub fn sync_options(&self) -> SyncOptions {
        let owner = sys::is_root();
        SyncOptions {
            job: self.opts.clone(),
            rules: Rules {
                checksum: self.opts.checksum,
                owner,
                xattrs: cfg!(unix) && !self.opts.no_xattrs,
                system_xattrs: true,
                link_owners: true,
            },
            meta: MetaOpts {
                owner,
                xattrs: cfg!(unix) && !self.opts.no_xattrs,
                system_xattrs: true,
                fake_super: false,
            },
            umask: sys::current_umask(),
            workers: self.workers(),
            cancel: self.cancel.clone(),
        }
    }

    /// Worker threads for this run.
    pub fn workers(&self) -> usize {
        self.opts
            .workers
            .map_or_else(default_workers, |w| w as usize)
            .max(1)
    }

    pub fn summary(&self, outcome: sync::Outcome, started: Instant) -> Summary {
        let failures: Vec<Failure> = outcome.failures.iter().map(Failure::from).collect();
        Summary {
            mode: self.opts.mode.name(),
            dry_run: self.opts.dry_run,
            actions: outcome.actions,
            unchanged: outcome.unchanged,
            kept: outcome.kept,
            failures,
            interrupted: outcome.interrupted,
            elapsed_secs: started.elapsed().as_secs_f64(),
            stats: outcome.stats,
        }
    }
}

/// The real location of `p`, which may not exist yet: its deepest existing ancestor is resolved
/// (symlinks included) and the rest appended.
fn real_location(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            let mut out = real;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Copying a tree into itself (or over its own parent) would recurse or destroy the source.
fn refuse_overlap(src: &Path, dst: &Path) -> Result<()> {
    let d = real_location(dst);
    let shown = |p: &Path| crate::names::escape(p);
    if d == src {
        return Err(Error::Refused(format!(
            "source and destination are the same: {}",
            shown(src)
        )));
    }
    if d.starts_with(src) {
        return Err(Error::Refused(format!(
            "destination {} is inside the source {}",
            shown(dst),
            shown(src)
        )));
    }
    if src.starts_with(&d) {
        return Err(Error::Refused(format!(
            "source {} is inside the destination {}",
            shown(src),
            shown(dst)
        )));
    }
    Ok(())
}
