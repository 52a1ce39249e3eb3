//! A source tree on the other end of a connection, as the engine sees it ([`Source`]).
//!
//! Listings are requested per folder as the engine enters it, and the subfolders of every listing
//! are requested at once (a bounded number ahead), so the walk does not pay one round trip per
//! folder in sequence; memory holds at most that many listings in flight, not the tree.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};

use super::peer::{Incoming, Peer, Replies};
use super::wire::{self, Rep, Req, WireEntry, WireError, WireListed};
use super::wirepath;
use crate::decide::Inside;
use crate::entry::{Entry, Extra, Kind, MTime, Version};
use crate::error::{Error, Op, Result};
use crate::source::{Listed, Source, RESUME_BLOCK};
use crate::sys::{self, At, CopyOutcome, Fed, Output, Xattrs};
use crate::trust::Trust;

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
/// Files requested ahead of the engine: only small ones (their whole reply fits the bounded
/// queue of a transfer, so an unread one never holds up the connection), at most this many
/// bytes in flight.
const AHEAD_FILE_MAX: u64 = 256 << 10;
const AHEAD_BYTES: u64 = 16 << 20;
/// And at most this many (empty files weigh nothing against the bytes).
const AHEAD_FILES: usize = 1024;
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

    fn wake(&self) {
        let _peers = self.peers.lock().unwrap();
        self.changed.notify_all();
    }
}

pub struct RemoteSource {
    peer: Arc<Peer>,
    /// How to get the extra connections, asked once, by the first file large enough to stripe
    /// (a pull opens them then); a push's arrive by themselves.
    open_streams: Option<OpenStreams>,
    opened: Once,
    streams: StreamSet,
    /// A push's connections still on their way: how many, and how long a large file waits for
    /// them (an opening takes a round trip and a TLS handshake; one that fails is not waited
    /// for past this).
    awaited: Option<(usize, std::time::Instant)>,
    root: Entry,
    root_name: OsString,
    /// How paths of this tree are shown (`blit://host:port/module/path`).
    shown: String,
    /// What this side takes from the peer's descriptions (see `crate::trust`).
    trust: Trust,
    prefetched: Mutex<Prefetch>,
    ahead: Mutex<Ahead>,
}

/// Folder listings requested ahead of the engine, and the folders still to be asked for.
#[derive(Default)]
struct Prefetch {
    asked: HashMap<PathBuf, Replies>,
    /// In discovery order; `queued` says which of them are still wanted.
    waiting: std::collections::VecDeque<PathBuf>,
    queued: std::collections::HashSet<PathBuf>,
}

/// Small files requested ahead, with their sizes, and the bytes they hold in flight.
#[derive(Default)]
struct Ahead {
    files: HashMap<PathBuf, (Replies, u64)>,
    bytes: u64,
}

/// A folder of the remote tree: its path relative to the root; `None` for the folder holding a
/// root that is a file.
pub struct RemoteDir(Option<PathBuf>);

impl RemoteSource {
    pub fn new(peer: Arc<Peer>, root: &WireEntry, shown: String, trust: Trust) -> Result<Self> {
        // The root's name is the peer's word, like every listed name: a pull of a single file
        // writes it beneath the destination, so a name with a separator or `..` would send the
        // copy elsewhere, and one of Blit's temporary names would be taken for a temporary.
        let is_dir = root.kind == Kind::Dir;
        let root_name = wirepath::plain(&root.name)
            .and_then(|()| {
                if wirepath::reserved(&root.name, is_dir) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer named its root like one of Blit's temporaries",
                    ));
                }
                wirepath::from_wire(root.name.clone())
            })
            .map_err(|e| Error::io(Op::Stat, &shown, e))?;
        let entry = to_entry(PathBuf::new(), root)
            .and_then(|e| admitted(&trust, e))
            .map_err(|e| Error::io(Op::Stat, &shown, e))?;
        Ok(RemoteSource {
            peer,
            root: entry,
            root_name,
            shown,
            trust,
            prefetched: Mutex::new(Prefetch::default()),
            ahead: Mutex::new(Ahead::default()),
            open_streams: None,
            opened: Once::new(),
            streams: StreamSet::default(),
            awaited: None,
        })
    }

    /// Large files are striped across the main connection and the ones `open` gives, opened
    /// when the first such file comes.
    pub fn with_streams(mut self, open: OpenStreams) -> Self {
        self.open_streams = Some(open);
        self
    }

    /// Large files are striped across the main connection and those in `set`, which others
    /// fill as the `expected` connections arrive.
    pub fn with_stream_set(mut self, set: StreamSet, expected: usize) -> Self {
        // A lost main connection ends the wait for the others.
        let woken = Arc::clone(&set);
        self.peer.on_close(move || woken.wake());
        self.streams = set;
        self.awaited = (expected > 0).then(|| {
            let wait = std::time::Duration::from_secs(2);
            (expected, std::time::Instant::now() + wait)
        });
        self
    }

    /// The extra connections opened so far (to be finished with the session).
    pub fn streams(&self) -> Vec<Arc<Peer>> {
        self.streams.all()
    }

    /// The extra connections for a file of `size` (those still open); none when it is not
    /// worth striping.
    fn streams_for(&self, size: u64) -> Vec<Arc<Peer>> {
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

    fn rel_of(dir: &RemoteDir, name: &OsStr) -> PathBuf {
        match &dir.0 {
            Some(d) => d.join(name),
            None => PathBuf::new(),
        }
    }

    fn shown_path(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            PathBuf::from(&self.shown)
        } else {
            let mut s = OsString::from(&self.shown);
            s.push("/");
            s.push(rel);
            PathBuf::from(s)
        }
    }

    fn lost(&self, op: Op, rel: &Path, e: io::Error) -> Error {
        Error::io(op, self.shown_path(rel), e)
    }

    fn wire_error(&self, e: WireError) -> Error {
        let kind = e.kind.io();
        let rel = wirepath::shown(&e.path);
        Error::io(
            Op::from_name(&e.op),
            self.shown_path(&rel),
            io::Error::new(kind, crate::names::escape_text(&e.message)),
        )
    }

    /// One reply (for requests answered in one frame).
    fn ask(&self, req: Req, rel: &Path, op: Op) -> Result<Rep> {
        let replies = self.peer.request(req).map_err(|e| self.lost(op, rel, e))?;
        match replies.next().map_err(|e| self.lost(op, rel, e))? {
            Incoming::Rep(Rep::Err(e)) => Err(self.wire_error(e)),
            Incoming::Rep(rep) => Ok(rep),
            Incoming::Data { .. } => Err(self.lost(op, rel, unexpected())),
        }
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

    /// A file requested ahead, if it was.
    fn take_ahead(&self, rel: &Path) -> Option<Replies> {
        let mut ahead = self.ahead.lock().unwrap();
        let (replies, size) = ahead.files.remove(rel)?;
        ahead.bytes -= size;
        Some(replies)
    }

    /// The file at `rel` as it is now, or `None` if it is no longer a regular file.
    fn restat(&self, rel: &Path, was: &Entry, xattrs: bool) -> Result<Option<Entry>> {
        let now = self.stat_rel(rel, &was.rel, xattrs)?;
        Ok((now.kind == Kind::File).then_some(now))
    }

    /// The entry at `rel` (of the served tree) as it is now, named `named` in the result.
    fn stat_rel(&self, rel: &Path, named: &Path, xattrs: bool) -> Result<Entry> {
        let req = Req::Stat {
            rel: rel_bytes(rel),
            xattrs,
        };
        let replies = self
            .peer
            .request(req)
            .map_err(|e| self.lost(Op::Stat, rel, e))?;
        let rep = replies.next().map_err(|e| self.lost(Op::Stat, rel, e))?;
        let w = match rep {
            Incoming::Rep(Rep::Entries { mut entries, .. }) if entries.len() == 1 => {
                match entries.pop() {
                    Some(WireListed::Ok(w)) => w,
                    Some(WireListed::Err(_, e)) => return Err(self.wire_error(e)),
                    None => return Err(self.lost(Op::Stat, rel, unexpected())),
                }
            }
            Incoming::Rep(Rep::Err(e)) => return Err(self.wire_error(e)),
            _ => return Err(self.lost(Op::Stat, rel, unexpected())),
        };
        to_entry(named.to_path_buf(), &w)
            .map_err(|e| self.lost(Op::Stat, rel, e))
            .and_then(|e| admitted(&self.trust, e).map_err(|e| self.lost(Op::Stat, rel, e)))
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

    /// Writes one request's data frames at their offsets until its end; every byte must fall
    /// within `allowed` (the file, or the stripe asked for).
    fn drain(
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

    /// A large file in stripes, one per connection, each requested at once and written at its
    /// offsets by its own thread as it arrives. Every stripe is held to what the listing saw
    /// (`expect`), so all come from the same unchanged file; one that saw a change voids all.
    fn copy_striped(
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
struct Stripe<'a> {
    /// Stripes take turns at the write call. ext4 writes a file under an exclusive inode lock
    /// anyway, and when a write is slow (page-cache pages the host must fault in) the kernel's
    /// waiter spins on that lock (`rwsem_spin_on_owner`: 22% of a striped pull's samples); here
    /// it sleeps instead.
    turn: &'a Mutex<()>,
    /// Set by the first stripe that fails or sees a change; the others stop at their next frame
    /// instead of writing a file that is void already.
    abort: &'a AtomicBool,
    /// On an extra connection (whose loss sends the file again on the main one).
    spare: bool,
}

fn unexpected() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "unexpected reply from the peer")
}

/// A relative path (made of names that came from the wire) for a request.
fn rel_bytes(rel: &Path) -> Vec<u8> {
    wirepath::rel_to_wire(rel).unwrap_or_else(|_| rel.to_string_lossy().into_owned().into_bytes())
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

/// An entry from the wire, named `rel` here.
pub fn to_entry(rel: PathBuf, w: &WireEntry) -> io::Result<Entry> {
    let xattrs: Option<Xattrs> = match &w.xattrs {
        Some(x) => Some(
            x.iter()
                .map(|(n, v)| Ok((wirepath::attr_from_wire(n.clone())?, v.clone())))
                .collect::<io::Result<_>>()?,
        ),
        None => None,
    };
    let has_xattrs = xattrs.as_ref().is_some_and(|x| !x.is_empty());
    let link = w
        .link
        .as_ref()
        .map(|l| wirepath::link_from_wire(l.clone()))
        .transpose()?;
    let extra = (link.is_some() || has_xattrs).then(|| Arc::new(Extra { link, xattrs }));
    if w.mtime_nsec >= 1_000_000_000 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "entry with an impossible mtime",
        ));
    }
    // No filesystem holds a file larger than `i64::MAX` (`off_t`); a larger size is a lie that
    // would only overflow offset arithmetic.
    if w.size > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "entry with an impossible size",
        ));
    }
    let kind = w.kind;
    Ok(Entry {
        rel,
        kind,
        size: w.size,
        mtime: MTime {
            sec: w.mtime_sec,
            nsec: w.mtime_nsec,
        },
        perm: sys::perm_from_wire(w.perm, kind),
        uid: w.uid,
        gid: w.gid,
        dev: w.dev,
        ino: w.ino,
        nlink: w.nlink,
        blocks: w.blocks,
        rdev: w.rdev,
        xattrs: has_xattrs,
        extra,
    })
}

impl RemoteSource {
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

/// A peer's entry as this side takes it (see `crate::trust`).
fn admitted(trust: &Trust, e: Entry) -> io::Result<Entry> {
    trust
        .admit(e)
        .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))
}

impl Source for RemoteSource {
    type Dir = RemoteDir;

    fn root(&self) -> Result<Entry> {
        Ok(self.root.clone())
    }

    fn open_root(&self) -> Result<RemoteDir> {
        Ok(RemoteDir(Some(PathBuf::new())))
    }

    fn open_child(&self, dir: &RemoteDir, name: &OsStr) -> Result<RemoteDir> {
        Ok(RemoteDir(Some(Self::rel_of(dir, name))))
    }

    fn parent_of(&self, rel: &Path) -> Result<(Arc<RemoteDir>, OsString)> {
        match (rel.parent(), rel.file_name()) {
            (Some(p), Some(n)) => {
                Ok((Arc::new(RemoteDir(Some(p.to_path_buf()))), n.to_os_string()))
            }
            _ => Ok((Arc::new(RemoteDir(None)), self.root_name.clone())),
        }
    }

    fn list(
        &self,
        _dir: &RemoteDir,
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
        let mut out = Listed::default();
        let mut subdirs = Vec::new();
        // The greatest name received (as the wire's bytes), to ask for what follows, and the
        // one the last page was asked after.
        let mut last_name: Option<Vec<u8>> = None;
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
                let raw = match &item {
                    WireListed::Ok(w) => &w.name,
                    WireListed::Err(raw, _) => raw,
                };
                wirepath::plain(raw).map_err(|e| self.lost(Op::ReadDir, rel, e))?;
                if last_name.as_ref().is_none_or(|l| raw > l) {
                    last_name = Some(raw.clone());
                }
                let Some((name, entry)) = self.listed_entry(rel, item) else {
                    continue;
                };
                if let Ok(e) = &entry {
                    let is_dir = e.kind == Kind::Dir;
                    if !keep(&e.rel, is_dir) {
                        continue;
                    }
                    if is_dir {
                        subdirs.push(e.rel.clone());
                    }
                }
                let held = self
                    .peer
                    .charge(held_size(&name, &entry))
                    .map_err(|e| self.lost(Op::ReadDir, rel, e))?;
                out.charge.absorb(held);
                out.entries.push((name, entry));
            }
            if !last {
                continue;
            }
            if !more {
                break;
            }
            // The rest of the folder, after the last name received; a page that did not get past
            // the one before would be asked for again and again.
            let after = last_name
                .clone()
                .filter(|l| asked_after.as_ref().is_none_or(|a| l > a))
                .ok_or_else(|| self.lost(Op::ReadDir, rel, out_of_order()))?;
            asked_after = Some(after.clone());
            replies = self
                .list_request(rel, xattrs, Some(after), PAGE)
                .map_err(|e| self.lost(Op::ReadDir, rel, e))?;
        }
        // Ask for the subfolders now, so their listings travel while this one is merged; those
        // beyond the window wait their turn and are asked as listings are taken.
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
        Ok(out)
    }

    fn copy(
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

    fn inside<'s>(
        &'s self,
        dir: &'s RemoteDir,
        name: &'s OsStr,
        entry: &'s Entry,
    ) -> Box<dyn Inside + 's> {
        Box::new(RemoteInside {
            src: self,
            rel: Self::rel_of(dir, name),
            entry,
        })
    }

    /// The wire does not say whether a link's target is a folder (which matters on Windows
    /// only): links from a remote source are file links.
    fn link_is_dir(&self, _dir: &RemoteDir, _name: &OsStr, _entry: &Entry) -> bool {
        false
    }

    fn rename_into(&self, _: &RemoteDir, _: &OsStr, _: At<'_>) -> Option<io::Result<()>> {
        None
    }

    fn stat(&self, dir: &RemoteDir, name: &OsStr, rel: &Path) -> Result<Entry> {
        self.stat_rel(&Self::rel_of(dir, name), rel, false)
    }

    fn remove(&self, dir: &RemoteDir, name: &OsStr) -> Result<()> {
        let rel = Self::rel_of(dir, name);
        let req = Req::Remove(rel_bytes(&rel));
        match self.ask(req, &rel, Op::Delete)? {
            Rep::Removed(_) => Ok(()),
            _ => Err(self.lost(Op::Delete, &rel, unexpected())),
        }
    }

    fn remove_dir(&self, dir: &RemoteDir, name: &OsStr) -> Result<bool> {
        let rel = Self::rel_of(dir, name);
        let req = Req::RemoveDir(rel_bytes(&rel));
        match self.ask(req, &rel, Op::Delete)? {
            Rep::Removed(gone) => Ok(gone),
            _ => Err(self.lost(Op::Delete, &rel, unexpected())),
        }
    }

    fn path(&self, dir: &RemoteDir, name: &OsStr) -> PathBuf {
        self.shown_path(&Self::rel_of(dir, name))
    }

    fn root_path(&self) -> PathBuf {
        PathBuf::from(&self.shown)
    }

    fn resumes(&self) -> bool {
        true
    }

    const HINTS: bool = true;

    fn prefetch(&self, dir: &RemoteDir, files: &[&Entry]) {
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

struct RemoteInside<'s> {
    src: &'s RemoteSource,
    rel: PathBuf,
    entry: &'s Entry,
}

impl Inside for RemoteInside<'_> {
    fn hash(&self) -> Result<blake3::Hash> {
        let req = Req::Hash(rel_bytes(&self.rel));
        match self.src.ask(req, &self.rel, Op::Checksum)? {
            Rep::Hash(h) => Ok(blake3::Hash::from_bytes(h)),
            _ => Err(self.src.lost(Op::Checksum, &self.rel, unexpected())),
        }
    }

    fn link_target(&self) -> Result<PathBuf> {
        self.entry
            .extra
            .as_ref()
            .and_then(|x| x.link.clone())
            .ok_or_else(|| self.src.lost(Op::Read, &self.rel, unexpected()))
    }

    fn xattrs(&self) -> Result<Xattrs> {
        Ok(self
            .entry
            .extra
            .as_ref()
            .and_then(|x| x.xattrs.clone())
            .unwrap_or_default())
    }
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

    #[test]
    fn a_listed_size_beyond_any_file_is_refused() {
        let mut w = WireEntry {
            name: b"f".to_vec(),
            size: i64::MAX as u64,
            ..WireEntry::default()
        };
        assert!(to_entry(PathBuf::from("f"), &w).is_ok());
        w.size = i64::MAX as u64 + 1;
        let e = to_entry(PathBuf::from("f"), &w).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
