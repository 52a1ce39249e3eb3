//! What a run tells its caller: an [`Observer`] hears each action as it happens (for `-v` lines
//! and the progress bar), and a [`Summary`] holds the totals at the end (for `--json` and the exit
//! code). The library prints nothing itself.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::entry::Kind;
use crate::error::Error;
use crate::names::escape;

/// The kind of change made to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Metadata,
    Delete,
    Link,
}

impl Action {
    /// One-character tag used by `--verbose`.
    pub fn symbol(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '*',
            Action::Metadata => '.',
            Action::Delete => '-',
            Action::Link => '=',
        }
    }
}

/// One change, as it is made (or, in a dry run, as it would be).
#[derive(Debug)]
pub struct Event<'a> {
    pub action: Action,
    pub kind: Kind,
    /// Relative to the destination root.
    pub rel: &'a Path,
    pub reason: &'a str,
    pub bytes: u64,
}

/// Hears about a run as it goes. All methods have empty defaults; calls come from worker threads.
pub trait Observer: Sync {
    /// More work was found: `bytes` more to copy (the total grows as the walk goes on).
    fn found(&self, _bytes: u64) {}
    fn event(&self, _event: &Event<'_>) {}
    fn failure(&self, _error: &Error) {}
    /// `bytes` more were copied.
    fn progress(&self, _bytes: u64) {}
    /// Whether [`Observer::event`] does anything: a daemon running a push sends events to the
    /// client only if it does.
    fn wants_events(&self) -> bool {
        true
    }
    /// Whether [`Observer::found`] and [`Observer::progress`] do anything (likewise).
    fn wants_progress(&self) -> bool {
        true
    }
}

/// An observer that ignores everything.
pub struct NullObserver;
impl Observer for NullObserver {
    fn wants_events(&self) -> bool {
        false
    }
    fn wants_progress(&self) -> bool {
        false
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub count: u64,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Actions {
    pub create: Count,
    pub update: Count,
    pub metadata: Count,
    pub delete: Count,
    pub link: Count,
}

impl Actions {
    pub fn add(&mut self, action: Action, bytes: u64) {
        let c = match action {
            Action::Create => &mut self.create,
            Action::Update => &mut self.update,
            Action::Metadata => &mut self.metadata,
            Action::Delete => &mut self.delete,
            Action::Link => &mut self.link,
        };
        c.count += 1;
        c.bytes += bytes;
    }

    pub fn total(&self) -> u64 {
        self.create.count
            + self.update.count
            + self.metadata.count
            + self.delete.count
            + self.link.count
    }
}

/// A failed entry: path escaped losslessly, operation, and the OS's words.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub path: String,
    pub op: String,
    pub error: String,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        Failure {
            path: e.path().map(escape).unwrap_or_default(),
            op: e.op_name(),
            error: e.cause(),
        }
    }
}

/// Where the time went and how, for `--stats`: the seed of the speed work.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub workers: usize,
    /// Wall seconds per phase, in order: `sync` (walk, plan and copy, overlapped across the
    /// workers), then the end of the run: `links`, `release` (move), `delete` (mirror),
    /// `metadata` (folders), `remove` (move).
    pub phases: BTreeMap<&'static str, f64>,
    /// Worker seconds spent in each activity of the sync phase: `walk` (listing both trees),
    /// `plan` (merging the listings, deciding, creating folders), `copy` (writing entries).
    pub busy: BTreeMap<&'static str, f64>,
    /// Entries written per class and copy path, as "files under 1 MiB: kernel_copy" (paths:
    /// clone, kernel_copy, sparse, read_write, native, network, rename, empty, symlink, special).
    pub methods: BTreeMap<String, u64>,
    /// Largest buffer of the userspace copy loop, in bytes (it is sized to the file below that).
    pub read_buffer: usize,
    /// Bytes per in-kernel copy call; a file is copied by one worker, call after call.
    pub kernel_chunk: usize,
    pub source_entries: u64,
    pub dest_entries: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub dry_run: bool,
    pub actions: Actions,
    /// Entries already right.
    pub unchanged: u64,
    /// Destination entries a mirror kept because the source side could not be read there.
    pub kept: u64,
    pub failures: Vec<Failure>,
    pub interrupted: bool,
    pub elapsed_secs: f64,
    pub stats: Stats,
}
