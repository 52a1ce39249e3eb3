//! A source tree on the other end of a connection, as the engine sees it ([`Source`]): its
//! folder listings ([`listing`]), small files asked for ahead ([`ahead`]), one file received
//! ([`receive`]), large files in stripes over several connections ([`stripes`]).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use super::entries::to_entry;
use super::peer::{Incoming, Peer};
use super::wire::{Rep, Req, WireEntry, WireError, WireListed};
use super::wirepath;
use crate::decide::Inside;
use crate::entry::{Entry, Kind};
use crate::error::{Error, Op, Result};
use crate::source::{Listed, Source};
use crate::sys::{At, CopyOutcome, Output, Xattrs};
use crate::trust::Trust;

mod ahead;
mod listing;
mod receive;
mod stripes;

use ahead::Ahead;
use listing::Prefetch;
pub use stripes::{OpenStreams, StreamSet};

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
}

fn unexpected() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "unexpected reply from the peer")
}

/// A relative path (made of names that came from the wire) for a request.
fn rel_bytes(rel: &Path) -> Vec<u8> {
    wirepath::rel_to_wire(rel).unwrap_or_else(|_| rel.to_string_lossy().into_owned().into_bytes())
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
        self.list_folder(rel, keep, xattrs)
    }

    fn copy(
        &self,
        dir: &RemoteDir,
        name: &OsStr,
        entry: &Entry,
        first: bool,
        out: Output<'_>,
    ) -> Result<CopyOutcome> {
        self.receive(dir, name, entry, first, out)
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
        self.ask_ahead(dir, files)
    }
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
