//! Folder listings from the peer: requested per folder as the engine enters it, page by page,
//! and the subfolders of every listing requested at once (a bounded number ahead), so the walk
//! does not pay one round trip per folder in sequence; memory holds at most that many listings
//! in flight, not the tree. Every listing is charged to its connection while it is held.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use super::{admitted, rel_bytes, unexpected, RemoteSource};
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Result};
use crate::remote::entries::to_entry;
use crate::remote::peer::{Incoming, Replies};
use crate::remote::wire::{Rep, Req, WireListed};
use crate::remote::wirepath;
use crate::source::Listed;

/// Listings requested ahead of the engine, at most.
const PREFETCH: usize = 64;
/// Folders waiting for their turn to be requested ahead, at most (more are listed when the
/// engine comes to them, without a head start).
const PREFETCH_WAITING: usize = 4096;
/// A listing asked for ahead comes as one page of about this many bytes (most folders whole);
/// the rest, if any, is asked for when the engine takes the listing...
const AHEAD_PAGE: u32 = 256 << 10;
/// ...in pages of about this many (each page makes the sender read the folder's names again).
const PAGE: u32 = 16 << 20;
/// No listing is asked for ahead while the peer's frames hold this much here already.
const AHEAD_HELD_MAX: usize = 16 << 20;

/// Folder listings requested ahead of the engine, and the folders still to be asked for.
#[derive(Default)]
pub(super) struct Prefetch {
    asked: HashMap<PathBuf, Replies>,
    /// In discovery order; `queued` says which of them are still wanted.
    waiting: std::collections::VecDeque<PathBuf>,
    queued: std::collections::HashSet<PathBuf>,
}

/// A listing as its pages arrive.
#[derive(Default)]
struct Gathered {
    listed: Listed,
    /// Its subfolders, to ask for ahead.
    subdirs: Vec<PathBuf>,
    /// The greatest name received (as the wire's bytes), to ask for what follows.
    last_name: Option<Vec<u8>>,
}

impl RemoteSource {
    /// The listing of the folder `rel`, whole (page after page), with its subfolders asked for
    /// ahead.
    pub(super) fn list_folder(
        &self,
        rel: &Path,
        keep: &dyn Fn(&Path, bool) -> bool,
        xattrs: bool,
    ) -> Result<Listed> {
        let ahead = {
            let mut p = self.prefetched.lock().unwrap();
            p.queued.remove(rel);
            p.asked.remove(rel)
        };
        let mut replies = match ahead {
            Some(r) => r,
            None => self
                .list_request(rel, xattrs, None, PAGE)
                .map_err(|e| self.lost(Op::ReadDir, rel, e))?,
        };
        let mut got = Gathered::default();
        // The name the last page was asked after.
        let mut asked_after: Option<Vec<u8>> = None;
        loop {
            // The frame's charge is given back once its entries are taken into the listing,
            // which is charged for what they take there, for as long as it is held.
            let (rep, _frame) = replies
                .next_charged()
                .map_err(|e| self.lost(Op::ReadDir, rel, e))?;
            let (entries, last, more) = match rep {
                Incoming::Rep(Rep::Entries {
                    entries,
                    last,
                    more,
                }) => (entries, last, more),
                Incoming::Rep(Rep::Err(e)) => return Err(self.wire_error(e)),
                _ => return Err(self.lost(Op::ReadDir, rel, unexpected())),
            };
            for item in entries {
                self.take_item(rel, item, keep, &mut got)?;
            }
            if !last {
                continue;
            }
            if !more {
                break;
            }
            // The rest of the folder, after the last name received; a page that did not get past
            // the one before would be asked for again and again.
            let after = got
                .last_name
                .clone()
                .filter(|l| asked_after.as_ref().is_none_or(|a| l > a))
                .ok_or_else(|| self.lost(Op::ReadDir, rel, out_of_order()))?;
            asked_after = Some(after.clone());
            replies = self
                .list_request(rel, xattrs, Some(after), PAGE)
                .map_err(|e| self.lost(Op::ReadDir, rel, e))?;
        }
        self.ask_subfolders(got.subdirs, xattrs);
        Ok(got.listed)
    }

    /// One item of a page: checked, kept if the filter keeps it, and charged to the connection.
    fn take_item(
        &self,
        rel: &Path,
        item: WireListed,
        keep: &dyn Fn(&Path, bool) -> bool,
        got: &mut Gathered,
    ) -> Result<()> {
        let raw = match &item {
            WireListed::Ok(w) => &w.name,
            WireListed::Err(raw, _) => raw,
        };
        wirepath::plain(raw).map_err(|e| self.lost(Op::ReadDir, rel, e))?;
        if got.last_name.as_ref().is_none_or(|l| raw > l) {
            got.last_name = Some(raw.clone());
        }
        let Some((name, entry)) = self.listed_entry(rel, item) else {
            return Ok(());
        };
        if let Ok(e) = &entry {
            let is_dir = e.kind == Kind::Dir;
            if !keep(&e.rel, is_dir) {
                return Ok(());
            }
            if is_dir {
                got.subdirs.push(e.rel.clone());
            }
        }
        let held = self
            .peer
            .charge(held_size(&name, &entry))
            .map_err(|e| self.lost(Op::ReadDir, rel, e))?;
        got.listed.charge.absorb(held);
        got.listed.entries.push((name, entry));
        Ok(())
    }

    /// Asks for the subfolders of a listing now, so their listings travel while it is merged;
    /// those beyond the window wait their turn and are asked as listings are taken.
    fn ask_subfolders(&self, subdirs: Vec<PathBuf>, xattrs: bool) {
        let mut ahead = self.prefetched.lock().unwrap();
        for sub in subdirs {
            if ahead.waiting.len() >= PREFETCH_WAITING {
                break;
            }
            ahead.queued.insert(sub.clone());
            ahead.waiting.push_back(sub);
        }
        while ahead.asked.len() < PREFETCH && self.peer.held() < AHEAD_HELD_MAX {
            let Some(sub) = ahead.waiting.pop_front() else {
                break;
            };
            if !ahead.queued.remove(&sub) {
                // The engine listed it already, without waiting for its turn here.
                continue;
            }
            if let Ok(r) = self.list_request(&sub, xattrs, None, AHEAD_PAGE) {
                ahead.asked.insert(sub, r);
            }
        }
    }

    /// Asks for a page of a folder's listing: the names after `after`, about `max_bytes`.
    fn list_request(
        &self,
        rel: &Path,
        xattrs: bool,
        after: Option<Vec<u8>>,
        max_bytes: u32,
    ) -> io::Result<Replies> {
        self.peer.request(Req::List {
            rel: rel_bytes(rel),
            xattrs,
            after,
            max_bytes,
        })
    }

    /// One item of a listing of the folder `rel`, as the engine takes it: its local name and
    /// entry (or why it failed); `None` for a name reserved for Blit's temporaries, which is
    /// passed over.
    fn listed_entry(&self, rel: &Path, item: WireListed) -> Option<(OsString, Result<Entry>)> {
        match item {
            WireListed::Ok(mut w) => {
                let raw = std::mem::take(&mut w.name);
                if wirepath::reserved(&raw, w.kind == Kind::Dir) {
                    return None;
                }
                Some(match wirepath::from_wire_or_lossy(raw) {
                    Ok(name) => {
                        let child = to_entry(rel.join(&name), &w)
                            .map_err(|e| self.lost(Op::ReadDir, rel, e))
                            .and_then(|e| {
                                admitted(&self.trust, e).map_err(|e| {
                                    Error::io(Op::Create, self.shown_path(&rel.join(&name)), e)
                                })
                            });
                        (name, child)
                    }
                    // A name this OS cannot hold: that entry fails, by its shown name.
                    Err((e, shown)) => {
                        let path = self.shown_path(&rel.join(&shown));
                        (shown, Err(Error::io(Op::ReadDir, path, e)))
                    }
                })
            }
            WireListed::Err(raw, e) => {
                let name = wirepath::from_wire_or_lossy(raw).unwrap_or_else(|(_, shown)| shown);
                Some((name, Err(self.wire_error(e))))
            }
        }
    }
}

/// A listing page that does not go past the one before: the folder would be asked for again
/// and again.
fn out_of_order() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the peer's listing does not advance",
    )
}

/// What one entry of a gathered listing takes in memory: the item itself, its name, its path
/// and what it carries (a link's target, xattrs), each allocation at least a small block.
fn held_size(name: &OsStr, entry: &Result<Entry>) -> usize {
    fn alloc(n: usize) -> usize {
        if n == 0 {
            0
        } else {
            n.max(24).next_multiple_of(16) + 16
        }
    }
    let mut n = std::mem::size_of::<(OsString, Result<Entry>)>() + alloc(name.len());
    match entry {
        Ok(e) => {
            n += alloc(e.rel.as_os_str().len());
            if let Some(x) = &e.extra {
                n += 64 + x.link.as_ref().map_or(0, |l| alloc(l.as_os_str().len()));
                for (k, v) in x.xattrs.iter().flatten() {
                    n += 48 + alloc(k.len()) + alloc(v.len());
                }
            }
        }
        Err(e) => n += 128 + e.to_string().len(),
    }
    n
}
