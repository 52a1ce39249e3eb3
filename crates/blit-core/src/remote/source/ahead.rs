//! Small files requested ahead of the engine: a folder's new files are asked for all at once
//! when its listings are merged, so their data is on its way while the copies are queued.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{rel_bytes, RemoteDir, RemoteSource};
use crate::entry::Entry;
use crate::remote::peer::Replies;
use crate::remote::wire::{self, Req};

/// Files requested ahead of the engine: only small ones (their whole reply fits the bounded
/// queue of a transfer, so an unread one never holds up the connection), at most this many
/// bytes in flight.
const AHEAD_FILE_MAX: u64 = 256 << 10;
const AHEAD_BYTES: u64 = 16 << 20;
/// And at most this many (empty files weigh nothing against the bytes).
const AHEAD_FILES: usize = 1024;

/// Small files requested ahead, with their sizes, and the bytes they hold in flight.
#[derive(Default)]
pub(super) struct Ahead {
    files: HashMap<PathBuf, (Replies, u64)>,
    bytes: u64,
}

impl RemoteSource {
    /// Asks for the small ones among a folder's files to copy, within the bounds above.
    pub(super) fn ask_ahead(&self, dir: &RemoteDir, files: &[&Entry]) {
        let mut ahead = self.ahead.lock().unwrap();
        for e in files {
            if ahead.files.len() >= AHEAD_FILES {
                break;
            }
            if e.size > AHEAD_FILE_MAX || ahead.bytes + e.size > AHEAD_BYTES {
                continue;
            }
            let Some(name) = e.rel.file_name() else {
                continue;
            };
            let rel = Self::rel_of(dir, name);
            let req = Req::Read {
                rel: rel_bytes(&rel),
                expect: Some(e.version()),
                have: Vec::new(),
            };
            let frames = (e.size.div_ceil(wire::DATA_CHUNK as u64) as usize).max(1);
            if let Ok(r) = self.peer.request_ahead(req, frames) {
                ahead.bytes += e.size;
                ahead.files.insert(rel, (r, e.size));
            }
        }
    }

    /// A file requested ahead, if it was.
    pub(super) fn take_ahead(&self, rel: &Path) -> Option<Replies> {
        let mut ahead = self.ahead.lock().unwrap();
        let (replies, size) = ahead.files.remove(rel)?;
        ahead.bytes -= size;
        Some(replies)
    }
}
