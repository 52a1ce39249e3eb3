//! Large files in stripes: one per connection, each requested at once and written at its
//! offsets by its own thread as it arrives; the extra connections are opened (a pull) or
//! arrive (a push) while the engine goes on.

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{rel_bytes, RemoteSource};
use crate::entry::{Entry, Version};
use crate::error::{Op, Result};
use crate::remote::peer::{Peer, Replies};
use crate::remote::wire::{self, Req};
use crate::sys::{self, CopyOutcome, Fed, Output, Xattrs};

/// A stripe of a large file is at least this long, so the per-stripe cost (a request, an
/// `open` and two `fstat`s at the sender, a thread here) stays negligible next to its data.
const STRIPE_MIN: u64 = 16 << 20;

/// Opens the connections that carry stripes besides the main one (none if they cannot be had).
pub type OpenStreams = Box<dyn Fn() -> Vec<Arc<Peer>> + Send + Sync>;
/// The connections that carry stripes besides the main one, as they become available.
pub type StreamSet = Arc<Streams>;

/// Connections added by whoever accepts them, and waited for by the files to stripe.
#[derive(Default)]
pub struct Streams {
    peers: Mutex<Vec<Arc<Peer>>>,
    /// Signalled when connections are added (or the wait should end).
    changed: Condvar,
}

impl Streams {
    pub fn add(&self, peers: impl IntoIterator<Item = Arc<Peer>>) {
        self.peers.lock().unwrap().extend(peers);
        self.changed.notify_all();
    }

    /// The connections so far.
    pub fn all(&self) -> Vec<Arc<Peer>> {
        self.peers.lock().unwrap().clone()
    }

    /// Removes and returns them all (to be finished).
    pub fn take(&self) -> Vec<Arc<Peer>> {
        std::mem::take(&mut *self.peers.lock().unwrap())
    }

    /// Waits until `n` connections are here, `until` passes, or `stop` says to give up (checked
    /// whenever the set is signalled).
    fn wait_for(&self, n: usize, until: std::time::Instant, stop: impl Fn() -> bool) {
        let mut peers = self.peers.lock().unwrap();
        while peers.len() < n && !stop() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            peers = self.changed.wait_timeout(peers, left).unwrap().0;
        }
    }

    pub(super) fn wake(&self) {
        let _peers = self.peers.lock().unwrap();
        self.changed.notify_all();
    }
}

impl RemoteSource {
    /// The extra connections for a file of `size` (those still open); none when it is not
    /// worth striping.
    pub(super) fn streams_for(&self, size: u64) -> Vec<Arc<Peer>> {
        if size < 2 * STRIPE_MIN {
            return Vec::new();
        }
        if let Some(open) = &self.open_streams {
            // Opened before the lock is taken: connecting may take a while.
            self.opened.call_once(|| {
                let opened = open();
                self.streams.add(opened);
            });
        }
        if let Some((expected, until)) = self.awaited {
            self.streams
                .wait_for(expected, until, || self.peer.is_closed());
        }
        let want = (size / STRIPE_MIN) as usize - 1;
        let all = self.streams.all();
        all.iter()
            .filter(|p| !p.is_closed())
            .take(want)
            .cloned()
            .collect()
    }

    /// A large file in stripes, one per connection, each requested at once and written at its
    /// offsets by its own thread as it arrives. Every stripe is held to what the listing saw
    /// (`expect`), so all come from the same unchanged file; one that saw a change voids all.
    pub(super) fn copy_striped(
        &self,
        rel: &Path,
        entry: &Entry,
        expect: Version,
        streams: &[Arc<Peer>],
        xattrs: Option<&Xattrs>,
        out: Output<'_>,
    ) -> Result<CopyOutcome> {
        let stripes = stripes(entry.size, streams.len() + 1);
        let mut asked = Vec::with_capacity(stripes.len());
        for (i, r) in stripes.iter().enumerate() {
            let peer = if i == 0 { &self.peer } else { &streams[i - 1] };
            let req = Req::ReadRange {
                rel: rel_bytes(rel),
                expect: Some(expect),
                start: r.start,
                end: r.end,
            };
            match peer.request_data(req) {
                Ok(replies) => asked.push((replies, r.clone())),
                // An extra connection that died since it was chosen: go again as one stream.
                Err(_) if i > 0 && !self.peer.is_closed() => return Ok(CopyOutcome::Changed),
                Err(e) => return Err(self.lost(Op::Copy, rel, e)),
            }
        }
        let mut asked = Some(asked);
        let out_ref = &out;
        let turn = Mutex::new(());
        let abort = AtomicBool::new(false);
        let mut feed = |f: &std::fs::File| -> Result<Fed> {
            let asked = asked.take().unwrap_or_default();
            // Each stripe's outcome; the first that is not a clean end stops the others.
            let run = |replies: Replies, r: Range<u64>, spare: bool| {
                let stripe = Stripe {
                    turn: &turn,
                    abort: &abort,
                    spare,
                };
                let got = self.drain(&replies, rel, r, f, out_ref, Some(&stripe));
                if !matches!(got, Ok(Fed::Done(_))) {
                    abort.store(true, Ordering::Relaxed);
                }
                got
            };
            let run = &run;
            let results: Vec<Result<Fed>> = std::thread::scope(|s| {
                let mut it = asked.into_iter();
                let first = it.next();
                let others: Vec<_> = it
                    .map(|(replies, r)| s.spawn(move || run(replies, r, true)))
                    .collect();
                let mut results = Vec::with_capacity(others.len() + 1);
                if let Some((replies, r)) = first {
                    results.push(run(replies, r, false));
                }
                for h in others {
                    results.push(h.join().unwrap_or_else(|_| {
                        Err(self.lost(Op::Copy, rel, io::Error::other("a stripe's thread failed")))
                    }));
                }
                results
            });
            let mut total = 0u64;
            let mut changed = false;
            for r in results {
                match r? {
                    Fed::Done(n) => total += n,
                    Fed::Changed => changed = true,
                }
            }
            Ok(if changed {
                Fed::Changed
            } else {
                Fed::Done(total)
            })
        };
        Ok(
            match sys::receive_to_temp(&out, entry, xattrs, &mut feed)? {
                CopyOutcome::Done { bytes, placed, .. } => CopyOutcome::Done {
                    bytes,
                    method: sys::Method::NetworkStriped,
                    placed,
                },
                other => other,
            },
        )
    }
}

/// `size` bytes cut into `n` contiguous stripes, each a whole number of data frames but the last.
fn stripes(size: u64, n: usize) -> Vec<Range<u64>> {
    let chunk = wire::DATA_CHUNK as u64;
    // Saturating: a size near `u64::MAX` (from a hostile peer) must not wrap into a stripe
    // that starts again at 0 and never ends.
    let each = size
        .div_ceil(n as u64)
        .div_ceil(chunk)
        .saturating_mul(chunk);
    let mut out = Vec::with_capacity(n);
    let mut start = 0u64;
    while start < size {
        let end = start.saturating_add(each).min(size);
        out.push(start..end);
        start = end;
    }
    out
}

/// What the stripes of one file share while they are written.
pub(super) struct Stripe<'a> {
    /// Stripes take turns at the write call. ext4 writes a file under an exclusive inode lock
    /// anyway, and when a write is slow (page-cache pages the host must fault in) the kernel's
    /// waiter spins on that lock (`rwsem_spin_on_owner`: 22% of a striped pull's samples); here
    /// it sleeps instead.
    pub(super) turn: &'a Mutex<()>,
    /// Set by the first stripe that fails or sees a change; the others stop at their next frame
    /// instead of writing a file that is void already.
    pub(super) abort: &'a AtomicBool,
    /// On an extra connection (whose loss sends the file again on the main one).
    pub(super) spare: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stripes cover the file exactly, in order, each a whole number of data frames but the
    /// last, and never more of them than asked.
    #[test]
    fn stripes_cover_the_file_exactly() {
        let mib = wire::DATA_CHUNK as u64;
        for (size, n) in [
            (32 * mib, 2),
            (40 * mib + 12_345, 2),
            (56 * mib, 3),
            (64 * mib - 1, 3),
            (33 * mib, 16),
            (1 << 30, 4),
            // Sizes no file has, as a hostile listing could claim: still finite and exact.
            (i64::MAX as u64, 16),
            (u64::MAX, 2),
            (u64::MAX - 1, 3),
        ] {
            let s = stripes(size, n);
            assert!(!s.is_empty() && s.len() <= n, "{size} in {n}: {s:?}");
            assert_eq!(s[0].start, 0);
            assert_eq!(s.last().unwrap().end, size);
            for w in s.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{s:?}");
                assert_eq!((w[0].end - w[0].start) % mib, 0, "{s:?}");
            }
        }
        assert_eq!(
            stripes(56 * mib, 3),
            vec![0..19 * mib, 19 * mib..38 * mib, 38 * mib..56 * mib]
        );
    }
}
