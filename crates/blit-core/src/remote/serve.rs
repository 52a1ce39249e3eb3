//! The side that holds the source tree: answers listing, read, hash and removal requests from the
//! engine on the other side. The daemon plays it on a pull, the client on a push.
//!
//! Requests are served on a pool, several at once, so reading many small files overlaps their
//! latency; every path from the wire is checked to be plain relative names before use, and
//! reached from the tree's root one folder descriptor at a time without following links.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::entries::{lossy, to_wire_entry};
use super::peer::{Handler, Peer};
use super::wire::{self, ErrorKind, Msg, Rep, Req, WireEntry, WireError, WireListed};
use super::wirepath;
use crate::budget::Charge;
use crate::dirs::DirCache;
use crate::entry::{Entry, Kind, Version};
use crate::error::{Error, Op, Result, Rule};
use crate::source::{self, RESUME_BLOCK};
use crate::sys::{self, At};

/// Hears the messages that are not requests, each with its charge (held until dropped).
pub type OnMessage = Box<dyn Fn(Msg, Charge) + Send + Sync>;

pub struct ServeTree {
    tree: Arc<Tree>,
    pool: Pool,
    /// Messages that are not requests go here (the push client hears the daemon's events).
    on_message: OnMessage,
    on_closed: Box<dyn Fn(&str) + Send + Sync>,
}

impl ServeTree {
    /// Serves the tree at `root`, whose own name the peer knows as `root_name`.
    pub fn new(
        root: PathBuf,
        root_name: std::ffi::OsString,
        read_only: bool,
        workers: usize,
        on_message: OnMessage,
        on_closed: Box<dyn Fn(&str) + Send + Sync>,
    ) -> io::Result<Self> {
        let pool = Pool::new(workers.max(1))?;
        Ok(ServeTree {
            tree: Arc::new(Tree {
                dirs: DirCache::new(root),
                root_name,
                read_only,
                root_folder: RootFolder::ByPath,
                fake_super: false,
            }),
            pool,
            on_message,
            on_closed,
        })
    }
}

/// The served tree itself, shared by the pool's workers.
struct Tree {
    dirs: DirCache,
    /// The root's name as the peer knows it (the path the tree is opened by may be a
    /// `/proc/self/fd/N` link, whose name says nothing to a peer).
    root_name: std::ffi::OsString,
    /// Entries are kept the fake-super way: they are described as what they stand for.
    fake_super: bool,
    /// Removals (a `move` from a read-only module) are refused.
    read_only: bool,
    /// How a `move` removes the root folder itself once it is empty.
    root_folder: RootFolder,
}

enum RootFolder {
    /// Through the root path's parent (a tree named by its path: the client's).
    ByPath,
    /// Through this parent folder's handle and the root's name (a daemon's served subfolder,
    /// which it reaches through a held descriptor whose path has no usable parent).
    In(PathBuf, std::ffi::OsString),
    /// Never (a module's own folder).
    Kept,
}

impl ServeTree {
    /// A daemon's served folder: removable through `outer` (its parent's handle and its name),
    /// or, without one, never (the module itself).
    pub fn with_outer(mut self, outer: Option<(PathBuf, std::ffi::OsString)>) -> Self {
        if let Some(t) = Arc::get_mut(&mut self.tree) {
            t.root_folder = match outer {
                Some((parent, name)) => RootFolder::In(parent, name),
                None => RootFolder::Kept,
            };
        }
        self
    }

    /// The tree keeps privileged metadata the fake-super way (see [`crate::fakesuper`]): each
    /// entry is described as the one it stands for.
    pub fn with_fake_super(mut self, on: bool) -> Self {
        if let Some(t) = Arc::get_mut(&mut self.tree) {
            t.fake_super = on;
        }
        self
    }
}

impl Tree {
    fn serve(&self, peer: &Peer, id: u32, req: Req) -> io::Result<()> {
        let rep = match req {
            Req::List {
                rel,
                xattrs,
                after,
                max_bytes,
            } => {
                let page = Page {
                    after: after.as_deref(),
                    max_bytes: (max_bytes as usize).clamp(PAGE_MIN, PAGE_MAX),
                };
                return self.list(peer, id, &rel, xattrs, page);
            }
            Req::Read { rel, expect, have } => {
                return self.read(peer, id, &rel, expect, &have, None)
            }
            Req::ReadRange {
                rel,
                expect,
                start,
                end,
            } => return self.read(peer, id, &rel, expect, &[], Some(start..end)),
            Req::Stat { rel, xattrs } => self.stat(&rel, xattrs),
            Req::Hash(rel) => self.hash(&rel),
            Req::Remove(rel) => self.remove(&rel, false),
            Req::RemoveDir(rel) => self.remove(&rel, true),
        };
        peer.send(&Msg::Rep { id, rep })
    }

    fn stat(&self, rel: &[u8], xattrs: bool) -> Rep {
        let looked = wire_rel(rel).and_then(|r| {
            if let Some(w) = self.root_folder(&r, xattrs) {
                return Ok(w);
            }
            let (dir, name) = self.dirs.parent_of(&r)?;
            let at = At::new(&dir, &name);
            let e = source::with_xattr_probe(at, sys::stat_at(at, r)?, xattrs)?;
            describe(&dir, &name, &e, xattrs, self.fake_super)
        });
        match looked {
            Ok(w) => Rep::Entries {
                entries: vec![WireListed::Ok(w)],
                last: true,
                more: false,
            },
            Err(e) => Rep::Err(error_to_wire(&e, rel)),
        }
    }

    /// The root, when it is a folder, described through its own path: a daemon serves it as
    /// `/proc/self/fd/N`, whose "parent folder and name" would be `/proc/self/fd` and a link
    /// whose target is the module's real location, not for a client to learn.
    fn root_folder(&self, rel: &Path, xattrs: bool) -> Option<WireEntry> {
        if !rel.as_os_str().is_empty() {
            return None;
        }
        let md = std::fs::metadata(self.dirs.root()).ok()?;
        if !md.is_dir() {
            return None;
        }
        let root = self.dirs.root();
        Some(describe_root(
            root,
            &self.root_name,
            &md,
            xattrs,
            self.fake_super,
        ))
    }

    /// Sends one page of a folder's listing: the names after `page.after`, in byte order, as
    /// many as about `page.max_bytes` of entries take (at least one), in frames of at most
    /// [`wire::LISTING_BUDGET`]; the last frame says whether names remain.
    fn list(
        &self,
        peer: &Peer,
        id: u32,
        rel: &[u8],
        xattrs: bool,
        page: Page<'_>,
    ) -> io::Result<()> {
        let names = wire_rel(rel).and_then(|rel| {
            let dir = self.dirs.dir(&rel)?;
            let names = page_names(&dir, page.after)?;
            Ok((dir, names))
        });
        let (dir, names) = match names {
            Ok(x) => x,
            Err(e) => {
                let rep = Rep::Err(error_to_wire(&e, rel));
                return peer.send(&Msg::Rep { id, rep });
            }
        };
        let dir_rel = wirepath::rel_from_wire(rel).unwrap_or_default();
        let mut batch = Vec::new();
        let (mut in_frame, mut in_page) = (0usize, 0usize);
        let mut names = names.into_iter().peekable();
        for (name, hint) in names.by_ref() {
            let Some(item) = self.listed(&dir, &dir_rel, rel, &name, hint, xattrs) else {
                continue;
            };
            let size = listed_size(&item);
            if !batch.is_empty() && in_frame + size > wire::LISTING_BUDGET {
                let rep = Rep::Entries {
                    entries: std::mem::take(&mut batch),
                    last: false,
                    more: false,
                };
                peer.send(&Msg::Rep { id, rep })?;
                in_frame = 0;
            }
            in_frame += size;
            in_page += size;
            batch.push(item);
            if in_page >= page.max_bytes {
                break;
            }
        }
        let rep = Rep::Entries {
            entries: batch,
            last: true,
            more: names.peek().is_some(),
        };
        peer.send(&Msg::Rep { id, rep })
    }

    /// One name of a folder as its listing describes it; `None` for one of Blit's temporaries.
    fn listed(
        &self,
        dir: &sys::Dir,
        dir_rel: &Path,
        rel: &[u8],
        name: &OsStr,
        hint: Option<Kind>,
        xattrs: bool,
    ) -> Option<WireListed> {
        if hint.is_some_and(|k| crate::tempname::is_leftover(name, k == Kind::Dir)) {
            return None;
        }
        let at = At::new(dir, name);
        let described = sys::stat_at(at, dir_rel.join(name)).and_then(|e| {
            if hint.is_none() && crate::tempname::is_leftover(name, e.kind == Kind::Dir) {
                return Ok(None);
            }
            let e = source::with_xattr_probe(at, e, xattrs)?;
            describe(dir, name, &e, xattrs, self.fake_super).map(Some)
        });
        let item = match described {
            Ok(None) => return None,
            Ok(Some(w)) => WireListed::Ok(w),
            Err(e) => WireListed::Err(lossy(name), error_to_wire(&e, &child_rel(rel, name))),
        };
        if listed_size(&item) > wire::LISTING_BUDGET {
            // Attributes too large for one message: that entry fails, the listing goes on.
            let e = Error::rule(Op::Xattr, dir.path().join(name), Rule::XattrsTooLarge);
            return Some(WireListed::Err(
                lossy(name),
                error_to_wire(&e, &child_rel(rel, name)),
            ));
        }
        Some(item)
    }

    fn read(
        &self,
        peer: &Peer,
        id: u32,
        rel: &[u8],
        expect: Option<Version>,
        have: &[[u8; wire::HAVE_HASH]],
        range: Option<std::ops::Range<u64>>,
    ) -> io::Result<()> {
        match self.send_file(peer, id, rel, expect, have, range) {
            Ok(rep) => peer.send(&Msg::Rep { id, rep }),
            Err(e) => peer.send(&Msg::Rep {
                id,
                rep: Rep::Err(error_to_wire(&e, rel)),
            }),
        }
    }

    /// Streams the file's data regions as data frames; holes are skipped (the receiver leaves
    /// them as holes), and so are leading blocks the receiver already holds (`have`). The file
    /// is `fstat`ed before and after: a change in between voids it. With `range`, only those
    /// bytes are sent (one stripe of a file whose other stripes go by other connections).
    fn send_file(
        &self,
        peer: &Peer,
        id: u32,
        rel: &[u8],
        expect: Option<Version>,
        have: &[[u8; wire::HAVE_HASH]],
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Rep> {
        // Cancelled while it waited for a worker (a copy that failed before its data came).
        if peer.is_cancelled(id) {
            return Ok(Rep::Changed);
        }
        let rel = wire_rel(rel)?;
        let (dir, name) = self.dirs.parent_of(&rel)?;
        let at = At::new(&dir, &name);
        let file = sys::open_source(at)?;
        let before = sys::stat_fd(&file, at)?;
        if before.kind != Kind::File || expect.is_some_and(|x| before.version() != x) {
            return Ok(Rep::Changed);
        }
        if have.len() as u64 > before.size.div_ceil(RESUME_BLOCK) {
            return Err(Error::io(
                Op::Read,
                at.path(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "more resume hashes than the file has blocks",
                ),
            ));
        }
        let Some(mut sent) = send_differing_blocks(peer, id, &file, at, before.size, have)? else {
            return Ok(Rep::Changed);
        };
        let resume_from = (have.len() as u64 * RESUME_BLOCK).min(before.size);
        let range = range.unwrap_or(0..u64::MAX);
        for (start, end) in data_regions(&file, &before) {
            let (start, end) = (start.max(resume_from).max(range.start), end.min(range.end));
            if start >= end {
                continue;
            }
            match send_region(peer, id, &file, at, start..end)? {
                Some(n) => sent += n,
                None => return Ok(Rep::Changed),
            }
        }
        let after = sys::stat_settled(&file, at, &before)?;
        if after.version() != before.version() {
            return Ok(Rep::Changed);
        }
        Ok(Rep::ReadDone(sent))
    }

    fn hash(&self, rel: &[u8]) -> Rep {
        let r = wire_rel(rel).and_then(|rel| {
            let (dir, name) = self.dirs.parent_of(&rel)?;
            crate::decide::hash_at(At::new(&dir, &name))
        });
        match r {
            Ok(h) => Rep::Hash(*h.as_bytes()),
            Err(e) => Rep::Err(error_to_wire(&e, rel)),
        }
    }

    fn remove(&self, rel: &[u8], dir_too: bool) -> Rep {
        if self.read_only {
            return Rep::Err(WireError {
                op: Op::Delete.to_string(),
                path: rel.to_vec(),
                kind: ErrorKind::PermissionDenied,
                message: "removal refused: the tree is read-only (or this is not a move)".into(),
            });
        }
        let r = wire_rel(rel).and_then(|rel| {
            let root = rel.as_os_str().is_empty() && dir_too;
            let (dir, name) = match &self.root_folder {
                RootFolder::In(parent, name) if root => {
                    (Arc::new(sys::Dir::open(parent)?), name.clone())
                }
                RootFolder::Kept if root => return Ok(false),
                _ => self.dirs.parent_of(&rel)?,
            };
            let at = At::new(&dir, &name);
            if dir_too {
                sys::rmdir_at(at)
            } else {
                sys::unlink_at(at).map(|()| true)
            }
        });
        match r {
            Ok(gone) => Rep::Removed(gone),
            Err(e) => Rep::Err(error_to_wire(&e, rel)),
        }
    }
}

/// What a listing request asks for (see `Req::List`).
#[derive(Clone, Copy)]
struct Page<'a> {
    after: Option<&'a [u8]>,
    max_bytes: usize,
}

/// The page sizes a listing request may ask for: at least this (each page reads the folder's
/// names again, so tiny pages would make a large folder cost its square)...
const PAGE_MIN: usize = 64 << 10;
/// ...and at most this (what the requester holds of one page at once).
const PAGE_MAX: usize = 16 << 20;

/// A folder's names after `after`, in byte order (the order of the wire and of the
/// receiver's merge), each with its type when the listing gives it.
fn page_names(
    dir: &sys::Dir,
    after: Option<&[u8]>,
) -> Result<Vec<(std::ffi::OsString, Option<Kind>)>> {
    // Compared as their encoded bytes: a name's wire bytes on Unix, and on Windows too for
    // every name the wire can carry (valid Unicode).
    let mut names = dir.read_names()?;
    if let Some(a) = after {
        names.retain(|(n, _)| n.as_encoded_bytes() > a);
    }
    names.sort_unstable_by(|(a, _), (b, _)| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names)
}

type Job = Box<dyn FnOnce() + Send>;

/// Requests waiting for a worker, at most. Past it the connection's reader waits for room, so a
/// peer that sends requests without reading the replies stops being read (its socket fills)
/// instead of queueing without end in this process. Far above what the engine keeps in flight
/// (64 listings and 1,024 small files ahead, plus one request per worker).
const QUEUED_REQUESTS: usize = 4096;

/// Threads that wait for requests blocked on a channel. Not rayon: its idle workers spin (yield
/// in a loop) looking for work, which on a small machine takes the CPU from the threads moving
/// the data; these sleep until a request comes.
struct Pool {
    tx: Option<std::sync::mpsc::SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    fn new(n: usize) -> io::Result<Pool> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUED_REQUESTS);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut threads = Vec::with_capacity(n);
        for _ in 0..n {
            let rx = Arc::clone(&rx);
            threads.push(std::thread::Builder::new().spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            })?);
        }
        Ok(Pool {
            tx: Some(tx),
            threads,
        })
    }

    fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Handler for ServeTree {
    fn request(&self, peer: &Arc<Peer>, id: u32, req: Req, charge: Charge) {
        // Marked now, on the reader's thread, so a cancel read after it is heard.
        peer.serving(id);
        let peer = Arc::clone(peer);
        let tree = Arc::clone(&self.tree);
        self.pool.spawn(move || {
            // The request stays charged while it waits for a worker and is served.
            let _charge = charge;
            if let Err(e) = tree.serve(&peer, id, req) {
                peer.close(&format!("send failed: {e}"));
            }
            peer.served(id);
        });
    }

    fn message(&self, _peer: &Arc<Peer>, msg: Msg, charge: Charge) {
        (self.on_message)(msg, charge);
    }

    fn closed(&self, why: &str) {
        (self.on_closed)(why);
    }
}

fn read_at_most(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match sys::read_at(f, &mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The blocks the receiver holds from an interrupted transfer (`have`: a hash prefix of each),
/// sent again only where the file's differ (read whole, holes included, since the receiver's
/// copy may hold anything there). The bytes sent; `None` when the file changed or the request
/// was cancelled.
fn send_differing_blocks(
    peer: &Peer,
    id: u32,
    file: &std::fs::File,
    at: At<'_>,
    size: u64,
    have: &[[u8; wire::HAVE_HASH]],
) -> Result<Option<u64>> {
    let mut sent = 0u64;
    let mut buf = Vec::new();
    for (i, want) in have.iter().enumerate() {
        let off = i as u64 * RESUME_BLOCK;
        if off >= size {
            break;
        }
        let len = (size - off).min(RESUME_BLOCK) as usize;
        buf.resize(len, 0);
        let n = read_at_most(file, &mut buf, off).map_err(|e| Error::io(Op::Read, at.path(), e))?;
        if n < len || peer.is_cancelled(id) {
            return Ok(None);
        }
        if blake3::hash(&buf).as_bytes()[..wire::HAVE_HASH] != want[..] {
            let mut frame = wire::buffer(17 + len);
            frame.extend_from_slice(&wire::data_header(id, off, len));
            frame.extend_from_slice(&buf);
            peer.send_frame(frame)
                .map_err(|e| Error::io(Op::Copy, at.path(), e))?;
            sent += len as u64;
        }
    }
    Ok(Some(sent))
}

/// One data region of the file as data frames. The bytes sent; `None` when the file turned out
/// shorter than it said (it changed) or the request was cancelled (nobody reads the reply then;
/// it only ends the request).
fn send_region(
    peer: &Peer,
    id: u32,
    file: &std::fs::File,
    at: At<'_>,
    region: std::ops::Range<u64>,
) -> Result<Option<u64>> {
    let mut off = region.start;
    let mut sent = 0u64;
    while off < region.end {
        if peer.is_cancelled(id) {
            return Ok(None);
        }
        let want = ((region.end - off) as usize).min(wire::DATA_CHUNK);
        let mut frame = wire::buffer_len(17 + want);
        frame[..17].copy_from_slice(&wire::data_header(id, off, want));
        let n = read_at_most(file, &mut frame[17..], off)
            .map_err(|e| Error::io(Op::Read, at.path(), e))?;
        if n == 0 {
            return Ok(None);
        }
        if n < want {
            frame.truncate(17 + n);
            frame[..4].copy_from_slice(&((n + 12) as u32).to_le_bytes());
        }
        peer.send_frame(frame)
            .map_err(|e| Error::io(Op::Copy, at.path(), e))?;
        off += n as u64;
        sent += n as u64;
    }
    Ok(Some(sent))
}

/// The byte ranges holding data: the whole file, or for a sparse one only its data extents.
fn data_regions(f: &File, e: &Entry) -> Vec<(u64, u64)> {
    #[cfg(target_os = "linux")]
    if e.is_sparse() {
        use rustix::fs::SeekFrom;
        let mut out = Vec::new();
        let mut off = 0u64;
        while off < e.size {
            let Ok(start) = rustix::fs::seek(f, SeekFrom::Data(off)) else {
                break;
            };
            let end = rustix::fs::seek(f, SeekFrom::Hole(start)).unwrap_or(e.size);
            let end = end.min(e.size);
            if end > start {
                out.push((start, end));
            }
            off = end.max(start + 1);
        }
        return out;
    }
    let _ = f;
    vec![(0, e.size)]
}

/// What an item takes once decoded by the receiver: the measure frames are filled to, so that
/// an honest frame decodes well within [`wire::DECODE_BUDGET`] (and its encoding, never larger,
/// within [`wire::MAX_FRAME`]).
fn listed_size(l: &WireListed) -> usize {
    const PAIR: usize = std::mem::size_of::<(Vec<u8>, Vec<u8>)>();
    std::mem::size_of::<WireListed>()
        + match l {
            WireListed::Ok(w) => {
                w.name.len()
                    + w.link.as_ref().map_or(0, Vec::len)
                    + w.xattrs
                        .as_ref()
                        .map_or(0, |x| x.iter().map(|(n, v)| PAIR + n.len() + v.len()).sum())
            }
            WireListed::Err(n, e) => n.len() + e.op.len() + e.path.len() + e.message.len(),
        }
}

/// A served root as the wire describes it, looked at through `path` (which it was resolved to),
/// named `name`, with its xattr values when asked; `fake_super`: as the entry it stands for.
pub fn describe_root(
    path: &Path,
    name: &OsStr,
    md: &std::fs::Metadata,
    xattrs: bool,
    fake_super: bool,
) -> WireEntry {
    let e = Entry::from_metadata(PathBuf::new(), md);
    if fake_super {
        let stored = path_xattrs(path).unwrap_or_default();
        let stored: sys::Xattrs = stored
            .into_iter()
            .filter_map(|(n, v)| wirepath::attr_from_wire(n).ok().map(|n| (n, v)))
            .collect();
        let (e, values) = crate::fakesuper::present(e, &stored);
        let mut w = to_wire_entry(name, &e);
        if xattrs && !values.is_empty() {
            w.xattrs = Some(values.into_iter().map(|(n, v)| (lossy(&n), v)).collect());
        }
        return w;
    }
    let mut w = to_wire_entry(name, &e);
    if xattrs {
        w.xattrs = path_xattrs(path);
    }
    w
}

/// An entry as the wire describes it, with its link target and xattr values read now;
/// `fake_super`: as the entry it stands for.
pub fn describe(
    dir: &sys::Dir,
    name: &OsStr,
    e: &Entry,
    xattrs: bool,
    fake_super: bool,
) -> Result<WireEntry> {
    let at = At::new(dir, name);
    // A name the wire cannot carry exactly is refused, never sent altered.
    wirepath::to_wire(name).map_err(|e| Error::io(Op::ReadDir, at.path(), e))?;
    let presented;
    let (e, values) = if fake_super && matches!(e.kind, Kind::File | Kind::Dir) {
        let (p, values) = crate::fakesuper::present(e.clone(), &sys::xattrs_of(at)?);
        presented = p;
        (&presented, Some(values))
    } else if fake_super && e.kind == Kind::Symlink {
        // A link's owner could not be kept: its folder's stands in for it.
        let folder = sys::xattrs_of(At::new(dir, OsStr::new(".")))?;
        let mut p = e.clone();
        if let Some((uid, gid)) = crate::fakesuper::owner_in(&folder) {
            (p.uid, p.gid) = (uid, gid);
        }
        presented = p;
        (&presented, None)
    } else if xattrs && e.xattrs {
        (e, Some(sys::xattrs_of(at)?))
    } else {
        (e, None)
    };
    let mut w = to_wire_entry(name, e);
    if e.kind == Kind::Symlink {
        let target = sys::read_link_at(at)?;
        w.link =
            Some(wirepath::link_to_wire(&target).map_err(|e| Error::io(Op::Read, at.path(), e))?);
    }
    if let Some(values) = values.filter(|v| xattrs && !v.is_empty()) {
        w.xattrs = Some(values.into_iter().map(|(n, v)| (lossy(&n), v)).collect());
    }
    Ok(w)
}

/// The xattrs of the entry a path names (following it: used for a tree's root, which is
/// resolved already), for the wire; `None` when it has none.
pub fn path_xattrs(path: &Path) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let found = sys::path_xattrs(path);
    (!found.is_empty()).then(|| found.into_iter().map(|(n, v)| (lossy(&n), v)).collect())
}

fn child_rel(dir_rel: &[u8], name: &OsStr) -> Vec<u8> {
    let mut out = dir_rel.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend(lossy(name));
    out
}

/// A relative path a request names (see `wirepath::rel_from_peer`).
pub fn wire_rel(raw: &[u8]) -> Result<PathBuf> {
    wirepath::rel_from_peer(raw).map_err(|e| Error::io(Op::Open, wirepath::shown(raw), e))
}

/// An error for the wire, named by its path relative to the served tree.
pub fn error_to_wire(e: &Error, rel: &[u8]) -> WireError {
    let (kind, message) = match e {
        Error::Io { source, .. } => (ErrorKind::of(source), source.to_string()),
        other => (ErrorKind::Other, other.cause()),
    };
    WireError {
        op: e.op_name(),
        path: rel.to_vec(),
        kind,
        message,
    }
}
