//! Receiving one file: its data frames written at their offsets into the engine's temporary,
//! from a request made now, one made ahead, or the blocks an interrupted run left (`--resume`).

use std::ffi::OsStr;
use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::stripes::Stripe;
use super::{rel_bytes, unexpected, RemoteDir, RemoteSource};
use crate::entry::{Entry, Version};
use crate::error::{Error, Op, Result};
use crate::remote::peer::{Incoming, Replies};
use crate::remote::wire::{self, Rep, Req};
use crate::source::RESUME_BLOCK;
use crate::sys::{self, At, CopyOutcome, Fed, Output};

impl RemoteSource {
    /// One file into `out`: striped, taken from a request made ahead, or requested now (from
    /// where an interrupted run stopped, with `--resume`).
    pub(super) fn receive(
        &self,
        dir: &RemoteDir,
        name: &OsStr,
        entry: &Entry,
        first: bool,
        out: Output<'_>,
    ) -> Result<CopyOutcome> {
        let rel = Self::rel_of(dir, name);
        // After a change, the file is looked at again: the next attempt is held to what it is
        // now and stamped with it. The listing's size and times no longer describe it (a file
        // that shrank would be padded to its old size, one that grew refused).
        let now;
        let entry = if first {
            entry
        } else {
            match self.restat(&rel, entry, out.meta.xattrs)? {
                Some(e) => {
                    now = e;
                    &now
                }
                None => return Ok(CopyOutcome::Changed),
            }
        };
        let expect = entry.version();
        let xattrs = entry.extra.as_ref().and_then(|x| x.xattrs.as_ref());
        // A first attempt of a large file, with other connections to carry stripes: split it.
        // Every stripe is held to the same `expect`, so all come from one version of the file.
        if first && !out.resume {
            let streams = self.streams_for(entry.size);
            if !streams.is_empty() {
                return self.copy_striped(&rel, entry, expect, &streams, xattrs, out);
            }
        }
        let ahead = if first && !out.resume {
            self.take_ahead(&rel)
        } else {
            None
        };
        let replies = match ahead {
            Some(r) => r,
            None => {
                let have = if out.resume {
                    partial_blocks(out.tmp)?
                } else {
                    Vec::new()
                };
                self.read_request(&rel, expect, have)
                    .map_err(|e| self.lost(Op::Copy, &rel, e))?
            }
        };
        let mut feed = |f: &std::fs::File| self.drain(&replies, &rel, 0..entry.size, f, &out, None);
        sys::receive_to_temp(&out, entry, xattrs, &mut feed)
    }

    fn read_request(
        &self,
        rel: &Path,
        expect: Version,
        have: Vec<[u8; wire::HAVE_HASH]>,
    ) -> io::Result<Replies> {
        self.peer.request_data(Req::Read {
            rel: rel_bytes(rel),
            expect: Some(expect),
            have,
        })
    }

    /// Writes one request's data frames at their offsets until its end; every byte must fall
    /// within `allowed` (the file, or the stripe asked for).
    pub(super) fn drain(
        &self,
        replies: &Replies,
        rel: &Path,
        allowed: Range<u64>,
        f: &std::fs::File,
        out: &Output<'_>,
        stripe: Option<&Stripe<'_>>,
    ) -> Result<Fed> {
        loop {
            if out.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if stripe.is_some_and(|s| s.abort.load(Ordering::Relaxed)) {
                // Another stripe failed or saw a change: its outcome is the file's.
                return Ok(Fed::Changed);
            }
            let next = match replies.next() {
                Ok(n) => n,
                // An extra connection lost while the main one lives: the file goes again, as one
                // stream on the main connection, rather than failing.
                Err(_) if stripe.is_some_and(|s| s.spare) && !self.peer.is_closed() => {
                    return Ok(Fed::Changed)
                }
                Err(e) => return Err(self.lost(Op::Copy, rel, e)),
            };
            match next {
                Incoming::Data { offset, data } => {
                    let end = offset.saturating_add(data.len() as u64);
                    if offset < allowed.start || end > allowed.end {
                        return Err(self.lost(Op::Copy, rel, unexpected()));
                    }
                    let held = stripe.map(|s| s.turn.lock().unwrap_or_else(|p| p.into_inner()));
                    sys::write_all_at(f, &data, offset)
                        .map_err(|e| Error::io(Op::Write, out.tmp.path(), e))?;
                    drop(held);
                    (out.progress)(data.len() as u64);
                    wire::recycle(data);
                }
                Incoming::Rep(Rep::ReadDone(n)) => return Ok(Fed::Done(n)),
                Incoming::Rep(Rep::Changed) => return Ok(Fed::Changed),
                Incoming::Rep(Rep::Err(e)) => return Err(self.wire_error(e)),
                Incoming::Rep(_) => return Err(self.lost(Op::Copy, rel, unexpected())),
            }
        }
    }
}

/// Hashes the whole blocks an interrupted transfer left in its fixed temporary, and cuts off the
/// incomplete rest (so nothing unverified remains past them). Opened the way the transfer will
/// write it ([`sys::open_partial`]): whatever else stands under the name is removed first, so
/// the blocks described are the file's own.
fn partial_blocks(tmp: At<'_>) -> Result<Vec<[u8; wire::HAVE_HASH]>> {
    let file = sys::open_partial(tmp)?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(Op::Stat, tmp.path(), e))?
        .len();
    // The hashes travel in one request frame (the blocks past them are sent again).
    let max = (wire::MAX_FRAME - 4096) / (wire::HAVE_HASH + 1);
    let blocks = ((len / RESUME_BLOCK) as usize).min(max);
    let mut out = Vec::with_capacity(blocks);
    let mut buf = vec![0u8; RESUME_BLOCK as usize];
    for i in 0..blocks {
        read_exact_at(&file, &mut buf, i as u64 * RESUME_BLOCK)
            .map_err(|e| Error::io(Op::Read, tmp.path(), e))?;
        let h = blake3::hash(&buf);
        out.push(
            h.as_bytes()[..wire::HAVE_HASH]
                .try_into()
                .expect("a prefix"),
        );
    }
    let keep = blocks as u64 * RESUME_BLOCK;
    if len > keep {
        file.set_len(keep)
            .map_err(|e| Error::io(Op::Write, tmp.path(), e))?;
    }
    Ok(out)
}

/// Fills `buf` from `off`.
fn read_exact_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match sys::read_at(f, &mut buf[done..], off + done as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
