//! The wire format (described for people in docs/PROTOCOL.md).
//!
//! A connection starts with a preamble each way (`BLIT`, then the lowest and highest protocol
//! versions the client speaks; the server answers `BLIT` and the version it chose, 0 for none).
//! Then both sides send frames: a 4-byte little-endian length, a 1-byte type, and the body.
//! - type 0, a message: a [`Msg`] in postcard (compact, serde-derived, decoding bounded by the
//!   frame it reads from);
//! - type 1, file data: request id (u32 LE), offset (u64 LE), then the raw bytes, so bulk data
//!   costs no encoding at all.
//!
//! Every length is checked before anything is allocated: a message frame longer than
//! [`MAX_FRAME`] (or a data frame with more than [`DATA_CHUNK`] bytes) is an error, and so is any
//! body that does not decode completely. What a message decodes into is bounded too: each list
//! in it is counted as it is read, at the size its items take in memory (see `bounded`), so a
//! frame of a megabyte cannot become a hundred megabytes of tiny structures.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::entry::Version;

pub const MAGIC: &[u8; 4] = b"BLIT";
/// Version 2 added striped transfers of large files (`ReadRange`, `Role::Attach`,
/// `Msg::Streams`, `PushJob::streams`); version 3 added `Stat` (a file that changed while read is
/// looked at again before it is read again) and `Msg::Cancel`; version 4 added
/// `PushJob::delete_after`; version 5 bounds what a peer can make the other side hold: listings
/// come in pages asked for one at a time (`List::after`, `List::max_bytes`, `Entries::more`),
/// carry no temporaries, messages are at most 1 MiB, and resume hashes are 16 bytes; version 6 embeds `options::Options` in the push job and encodes every
/// enum by derive (an unknown value is an error); version 7 types admin errors
/// (`AdminRep::Error` carries a `WireError`, with operation, path and cause). Older
/// encodings of these messages differ, so an older peer is refused at the preamble rather than
/// misread.
pub const VERSION: u16 = 7;
/// A message frame's body may not exceed this (a data frame's: [`DATA_CHUNK`] bytes and its
/// 12-byte header). A listing larger than this is cut into frames by its sender.
pub const MAX_FRAME: usize = 1 << 20;
/// File data per frame: large enough that the per-frame cost vanishes, small enough that one
/// big file does not hold the connection for long.
pub const DATA_CHUNK: usize = 1 << 20;
/// Listing entries per reply frame are limited by this many bytes of names and attributes (a
/// generous estimate of their encoding, below [`MAX_FRAME`]).
pub const LISTING_BUDGET: usize = MAX_FRAME - (64 << 10);
/// Bytes of resume hash per block (a BLAKE3 prefix: what tells a block already held from one that
/// differs; 128 bits put a mistaken match beyond reach).
pub const HAVE_HASH: usize = 16;
/// What one message may decode into beyond its own bytes: the memory of the items of its lists.
/// Twice what an honest sender puts in a frame (see [`LISTING_BUDGET`]).
pub const DECODE_BUDGET: usize = 2 << 20;

const TYPE_MSG: u8 = 0;
const TYPE_DATA: u8 = 1;

/// Data buffers are reused: a fresh 1 MiB allocation is a fresh mapping whose every page faults
/// on first touch, which cost more than the copy itself. Buffers go back here once written
/// (sender) or once their bytes are on disk (receiver).
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
const POOL_MAX: usize = 48;

/// A pooled buffer with room for `cap` bytes, if one is free.
fn pooled(cap: usize) -> Option<Vec<u8>> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    let i = pool.iter().position(|b| b.capacity() >= cap)?;
    Some(pool.swap_remove(i))
}

/// An empty buffer with room for at least `cap` bytes.
pub fn buffer(cap: usize) -> Vec<u8> {
    match pooled(cap) {
        Some(mut b) => {
            b.clear();
            b
        }
        None => Vec::with_capacity(cap.max(DATA_CHUNK + 32)),
    }
}

/// A buffer of exactly `len` bytes whose contents are whatever it held before (it is about to
/// be overwritten whole): reusing one costs no zeroing.
pub fn buffer_len(len: usize) -> Vec<u8> {
    // A spare byte: a frame sealed in place over TLS borrows one past its end.
    let mut b = pooled(len).unwrap_or_else(|| Vec::with_capacity(len + 1));
    if b.len() >= len {
        b.truncate(len);
    } else {
        b.resize(len, 0);
    }
    b
}

/// Gives a buffer back for reuse (small ones are simply dropped).
pub fn recycle(b: Vec<u8>) {
    if b.capacity() >= DATA_CHUNK {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(b);
        }
    }
}

/// Everything that is not file data.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    Hello(Hello),
    /// The session is open; for a pull, with the served root's entry.
    Welcome(Option<WireEntry>),
    /// The session is refused; the text says why, for the user.
    Refused(String),
    Req {
        id: u32,
        req: Req,
    },
    Rep {
        id: u32,
        rep: Rep,
    },
    /// Push: the daemon reports each change it makes, for the client's output.
    Event(WireEvent),
    Failure(WireError),
    Found(u64),
    Progress(u64),
    /// Push: the daemon's totals; the session ends after it.
    Finished(Finished),
    /// Admin: the answer.
    Admin(AdminRep),
    /// Nothing, sent now and then by both sides so a session busy elsewhere (a long local phase)
    /// is not taken for a dead one by the other side's timeouts.
    Ping,
    /// Push: the daemon asks the client for `count` more connections to carry stripes of large
    /// files; each presents `session` and `secret` in a `Role::Attach` hello.
    Streams {
        session: u64,
        secret: [u8; 32],
        count: u8,
    },
    /// The requester no longer wants the replies to its request `id` (a file whose write
    /// failed, a stripe of a file already void): the server stops sending its data at the next
    /// frame, instead of sending the rest of a file that would only be dropped.
    Cancel(u32),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub module: String,
    /// The path inside the module, raw bytes, `/`-separated, relative.
    pub path: Vec<u8>,
    pub token: Option<String>,
    pub role: Role,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Role {
    /// The client reads the module's tree (the daemon serves requests).
    Pull,
    /// The client's tree is written into the module (the daemon runs the engine and asks).
    Push(Box<PushJob>),
    Admin(AdminReq),
    /// Another connection for a running push (after its `Msg::Streams`): the client serves
    /// its tree on it too. The module and token are checked as for any hello.
    Attach {
        session: u64,
        secret: [u8; 32],
    },
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
pub struct PushJob {
    /// The transfer, as the client's user asked for it.
    pub opts: crate::options::Options,
    /// What the client shows: per-entry events (`-v`), byte counts (a progress bar). The
    /// daemon sends only those; failures and the totals always.
    pub events: bool,
    pub progress: bool,
    /// The client's root entry (its name included), so the daemon can place a single file.
    pub src: WireEntry,
    /// The destination was written with a trailing slash (a file goes inside it).
    pub into: bool,
    /// How the client names its source and the destination, so the daemon's messages use the
    /// user's own words rather than the daemon's paths.
    pub src_shown: String,
    pub dst_shown: String,
    /// Connections a large file may be striped across (1: never striped).
    pub streams: u8,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum AdminReq {
    ListModules,
    /// `ls`: one folder (or a file's own entry), in pages: the entries after the name given.
    List {
        after: Option<Vec<u8>>,
    },
    /// `du`: totals beneath the path.
    Usage,
    /// `df`: the filesystem holding the module.
    Space,
    /// `find`: entries whose name matches the glob.
    Find(String),
    /// `rm`: delete the path (a folder with everything in it).
    Remove,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum AdminRep {
    Modules(#[serde(deserialize_with = "bounded::vec")] Vec<ModuleInfo>),
    /// `more`: the answer was cut to fit a frame (`ls`: ask again after the last name; `find`:
    /// it stopped at its limit).
    Entries {
        #[serde(deserialize_with = "bounded::vec")]
        entries: Vec<(Vec<u8>, WireEntry)>,
        more: bool,
    },
    Usage {
        files: u64,
        dirs: u64,
        bytes: u64,
    },
    Space {
        total: u64,
        free: u64,
        available: u64,
    },
    Removed {
        entries: u64,
    },
    Error(WireError),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ModuleInfo {
    pub name: String,
    pub read_only: bool,
    pub needs_token: bool,
}

/// Requests from the side running the engine to the side holding the source tree.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Req {
    /// A page of a folder's entries, in name order (bytes): those after `after` (from the
    /// first if `None`), about `max_bytes` of them (at least one); with `xattrs`, each entry's
    /// extended attributes too. The last reply says whether more follow (ask again after the
    /// last name), so a receiver holds only what it asked for.
    List {
        rel: Vec<u8>,
        xattrs: bool,
        after: Option<Vec<u8>>,
        max_bytes: u32,
    },
    /// Send a file's content; `expect` is what the listing saw (a differing file is "changed").
    /// `have`: the first [`HAVE_HASH`] bytes of the BLAKE3 of each of the first blocks (of
    /// `source::RESUME_BLOCK` bytes) the receiver already holds from an interrupted run;
    /// blocks that match are not sent again. At most as many as the file has blocks.
    Read {
        rel: Vec<u8>,
        expect: Option<Version>,
        #[serde(deserialize_with = "bounded::vec")]
        have: Vec<[u8; HAVE_HASH]>,
    },
    Hash(Vec<u8>),
    Remove(Vec<u8>),
    RemoveDir(Vec<u8>),
    /// The bytes `start..end` of a file (one stripe of a large file; the other stripes travel
    /// on other connections), answered like `Read`.
    ReadRange {
        rel: Vec<u8>,
        expect: Option<Version>,
        start: u64,
        end: u64,
    },
    /// One entry as a listing would describe it now (`rel` empty: the tree's root itself),
    /// answered by `Entries` holding it alone. Asked when a file changed while it was read, so
    /// that the next attempt is held to, and stamped with, what the file has become.
    Stat {
        rel: Vec<u8>,
        xattrs: bool,
    },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Rep {
    /// Part of a listing (or a `Stat`'s entry); `last` ends the reply, and with `more` says the
    /// folder has names after the last one sent.
    Entries {
        #[serde(deserialize_with = "bounded::vec")]
        entries: Vec<WireListed>,
        last: bool,
        more: bool,
    },
    /// A `Read` is complete (its data frames came before): this many bytes.
    ReadDone(u64),
    /// The file changed while being read; the data sent is void.
    Changed,
    Hash([u8; 32]),
    Removed(bool),
    Err(WireError),
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum WireListed {
    Ok(WireEntry),
    Err(Vec<u8>, WireError),
}

/// An entry as the wire carries it: the `lstat` fields, plus what cannot be fetched later.
#[derive(Debug, Serialize, Deserialize, PartialEq, Clone, Default)]
pub struct WireEntry {
    pub name: Vec<u8>,
    pub kind: crate::entry::Kind,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub blocks: u64,
    pub rdev: u64,
    #[serde(deserialize_with = "bounded::option_vec")]
    pub xattrs: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    pub link: Option<Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
pub struct WireError {
    pub op: String,
    pub path: Vec<u8>,
    pub kind: ErrorKind,
    pub message: String,
}

/// The causes of a failure that the other side acts on; the rest is `Other` and the message.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone, Copy)]
pub enum ErrorKind {
    Other,
    NotFound,
    PermissionDenied,
    AlreadyExists,
}

impl ErrorKind {
    pub fn of(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            _ => ErrorKind::Other,
        }
    }

    pub fn io(self) -> io::ErrorKind {
        match self {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::Other => io::ErrorKind::Other,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct WireEvent {
    pub action: crate::report::Action,
    pub kind: crate::entry::Kind,
    pub rel: Vec<u8>,
    pub reason: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Finished {
    pub actions: crate::report::Actions,
    pub unchanged: u64,
    pub kept: u64,
    pub interrupted: bool,
    #[serde(deserialize_with = "bounded::vec")]
    pub methods: Vec<(String, u64)>,
    pub source_entries: u64,
    pub dest_entries: u64,
    pub workers: u32,
    /// The job was refused before anything changed (the text says why).
    pub refused: Option<String>,
}

/// One frame read off the wire.
#[derive(Debug)]
pub enum Frame {
    Msg(Box<Msg>),
    Data { id: u32, offset: u64, data: Vec<u8> },
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Encodes a message as one frame.
pub fn encode_msg(msg: &Msg) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; 5];
    let body = postcard::to_extend(msg, out).map_err(|e| invalid(e.to_string()))?;
    out = body;
    let len = out.len() - 5;
    if len > MAX_FRAME {
        return Err(invalid(format!(
            "message of {len} bytes exceeds the frame limit"
        )));
    }
    out[..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4] = TYPE_MSG;
    Ok(out)
}

/// Encodes a data frame header; the caller writes `data` right after it.
pub fn data_header(id: u32, offset: u64, len: usize) -> [u8; 17] {
    let mut h = [0u8; 17];
    h[..4].copy_from_slice(&((len + 12) as u32).to_le_bytes());
    h[4] = TYPE_DATA;
    h[5..9].copy_from_slice(&id.to_le_bytes());
    h[9..17].copy_from_slice(&offset.to_le_bytes());
    h
}

/// Reads one frame; `Ok(None)` at a clean end of stream (between frames).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    read_frame_weighed(r).map(|f| f.map(|(f, _)| f))
}

/// [`read_frame`], with the memory the frame takes once decoded (see [`decode_weighed`]).
pub fn read_frame_weighed(r: &mut impl Read) -> io::Result<Option<(Frame, usize)>> {
    let mut head = [0u8; 5];
    match r.read(&mut head[..1])? {
        0 => return Ok(None),
        _ => r.read_exact(&mut head[1..])?,
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    match head[4] {
        TYPE_MSG if len > MAX_FRAME => Err(invalid(format!(
            "message of {len} bytes exceeds the limit of {MAX_FRAME}"
        ))),
        TYPE_MSG => {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)?;
            decode_weighed(&body).map(|(m, w)| Some((Frame::Msg(Box::new(m)), w)))
        }
        TYPE_DATA => {
            if len < 12 {
                return Err(invalid("data frame too short"));
            }
            // Senders cut data at DATA_CHUNK; bigger frames would multiply what a peer can
            // park in the queues of its requests.
            if len - 12 > DATA_CHUNK {
                return Err(invalid(format!(
                    "data frame of {} bytes exceeds the limit of {DATA_CHUNK}",
                    len - 12
                )));
            }
            let mut h = [0u8; 12];
            r.read_exact(&mut h)?;
            let id = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let offset = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
            let mut data = buffer_len(len - 12);
            r.read_exact(&mut data)?;
            let weight = data.capacity();
            Ok(Some((Frame::Data { id, offset, data }, weight)))
        }
        t => Err(invalid(format!("unknown frame type {t}"))),
    }
}

/// Decodes a message body, which must be consumed exactly.
pub fn decode_msg(body: &[u8]) -> io::Result<Msg> {
    decode_weighed(body).map(|(m, _)| m)
}

/// Decodes a message body, and says how much memory the message takes: its bytes and what its
/// lists decoded into (the measure a receiver charges for holding it).
pub fn decode_weighed(body: &[u8]) -> io::Result<(Msg, usize)> {
    bounded::DECODED.with(|d| d.set(0));
    let decoded = postcard::take_from_bytes::<Msg>(body);
    let extra = bounded::DECODED.with(|d| d.replace(0));
    let (msg, rest) = decoded.map_err(|e| {
        // The codec keeps no text of its own errors: the budget's is told apart here.
        if extra > DECODE_BUDGET {
            invalid(format!(
                "bad message: it decodes into more than {} MiB",
                DECODE_BUDGET >> 20
            ))
        } else {
            invalid(format!("bad message: {e}"))
        }
    })?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes after a message"));
    }
    Ok((msg, body.len() + extra))
}

/// Deserializers for the lists of a message that count each item, at its size in memory,
/// against [`DECODE_BUDGET`] as it is read: decoding stops at the budget, not at the end of
/// memory. (A list of bytes needs none: its items take what the frame holds.)
pub(crate) mod bounded {
    use std::cell::Cell;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    thread_local! {
        /// Bytes of list items decoded for the message being decoded on this thread.
        pub(super) static DECODED: Cell<usize> = const { Cell::new(0) };
    }

    /// Counts `n` more bytes; past the budget the count is left above it, which is how the
    /// caller tells this error from the codec's own.
    fn charge<E: Error>(n: usize) -> Result<(), E> {
        DECODED.with(|d| {
            let now = d.get().saturating_add(n);
            d.set(now);
            if now > super::DECODE_BUDGET {
                return Err(E::custom("past the decoding budget"));
            }
            Ok(())
        })
    }

    struct Items<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            loop {
                charge::<A::Error>(std::mem::size_of::<T>().max(1))?;
                match seq.next_element()? {
                    Some(item) => out.push(item),
                    None => return Ok(out),
                }
            }
        }
    }

    pub fn vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(Items(PhantomData))
    }

    pub fn option_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Vec<T>>, D::Error> {
        struct Opt<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Opt<T> {
            type Value = Option<Vec<T>>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an optional list")
            }

            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
                vec(d).map(Some)
            }
        }
        d.deserialize_option(Opt(PhantomData))
    }
}

/// Writes the client's preamble: the versions it speaks, and whether it wants TLS.
pub fn write_client_preamble(w: &mut impl Write, tls: bool) -> io::Result<()> {
    let mut p = [0u8; 9];
    p[..4].copy_from_slice(MAGIC);
    p[4..6].copy_from_slice(&VERSION.to_le_bytes());
    p[6..8].copy_from_slice(&VERSION.to_le_bytes());
    p[8] = tls as u8;
    w.write_all(&p)?;
    w.flush()
}

/// Reads the client's preamble: the version to speak (`None`: no common version), and whether
/// the client wants TLS.
pub fn read_client_preamble(r: &mut impl Read) -> io::Result<(Option<u16>, bool)> {
    let mut p = [0u8; 9];
    r.read_exact(&mut p)?;
    if &p[..4] != MAGIC {
        return Err(invalid("not a blit client (bad preamble)"));
    }
    let lo = u16::from_le_bytes([p[4], p[5]]);
    let hi = u16::from_le_bytes([p[6], p[7]]);
    Ok((
        (lo..=hi).contains(&VERSION).then_some(VERSION),
        p[8] & 1 == 1,
    ))
}

/// The server's answer: the chosen version (0 for none) and whether TLS follows.
pub fn write_server_preamble(
    w: &mut impl Write,
    version: Option<u16>,
    tls: bool,
) -> io::Result<()> {
    let mut p = [0u8; 7];
    p[..4].copy_from_slice(MAGIC);
    p[4..6].copy_from_slice(&version.unwrap_or(0).to_le_bytes());
    p[6] = tls as u8;
    w.write_all(&p)?;
    w.flush()
}

pub fn read_server_preamble(r: &mut impl Read) -> io::Result<(u16, bool)> {
    let mut p = [0u8; 7];
    r.read_exact(&mut p)?;
    if &p[..4] != MAGIC {
        return Err(invalid("not a blit daemon (bad preamble)"));
    }
    match u16::from_le_bytes([p[4], p[5]]) {
        0 => Err(invalid(format!(
            "the daemon speaks no protocol version this client knows ({VERSION})"
        ))),
        v => Ok((v, p[6] & 1 == 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push job carries `Options`, whose encoding has no field names: a field added, removed
    /// or retyped would be misread by a peer of the same version. This fails until `VERSION` is
    /// bumped with the shape it pins.
    #[test]
    fn a_change_to_the_options_bumps_the_protocol_version() {
        let pinned = (
            7,
            "mode: Mode; dry_run: bool; checksum: bool; excludes: Vec<String>; \
             includes: Vec<String>; max_delete: Option<u64>; delete_after: bool; \
             workers: Option<u32>; fsync: bool; verify: bool; no_xattrs: bool; force: bool; \
             resume: bool; ",
        );
        assert_eq!(
            (VERSION, crate::options::SHAPE),
            pinned,
            "Options changed: bump wire::VERSION and pin the new shape here"
        );
    }
    use crate::entry::Kind;
    use crate::options::{Mode, Options};

    /// An enum's value past its last variant is refused, never read as a default: a mode of 3
    /// once became `Copy`.
    #[test]
    fn an_unknown_enum_value_is_an_error() {
        let move_job = postcard::to_stdvec(&Options::new(Mode::Move)).unwrap();
        assert_eq!(move_job[0], 2, "the mode leads the options");
        let back: Options = postcard::from_bytes(&move_job).unwrap();
        assert_eq!(back.mode, Mode::Move);
        let mut unknown = move_job.clone();
        unknown[0] = 3;
        assert!(postcard::from_bytes::<Options>(&unknown).is_err());

        let entry = WireEntry {
            kind: Kind::Socket,
            ..WireEntry::default()
        };
        let mut bytes = postcard::to_stdvec(&entry).unwrap();
        // No name: the kind follows the name's zero length.
        assert_eq!(bytes[1], 6);
        bytes[1] = 7;
        assert!(postcard::from_bytes::<WireEntry>(&bytes).is_err());
    }

    #[test]
    fn a_message_round_trips_through_a_frame() {
        let msg = Msg::Req {
            id: 7,
            req: Req::Read {
                rel: b"a/b".to_vec(),
                expect: None,
                have: vec![[7; HAVE_HASH]],
            },
        };
        let bytes = encode_msg(&msg).unwrap();
        match read_frame(&mut &bytes[..]).unwrap() {
            Some(Frame::Msg(m)) => assert_eq!(*m, msg),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut big = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
        big.push(0);
        assert!(read_frame(&mut &big[..]).is_err());
        let garbage = [3u8, 0, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &garbage[..]).is_err());
        let bad_type = [0u8, 0, 0, 0, 9];
        assert!(read_frame(&mut &bad_type[..]).is_err());
        // Data beyond DATA_CHUNK in one frame is refused before its bytes are read.
        let mut fat = data_header(1, 0, DATA_CHUNK + 1).to_vec();
        fat.resize(fat.len() + DATA_CHUNK + 1, 0);
        assert!(read_frame(&mut &fat[..]).is_err());
        let mut full = data_header(1, 0, DATA_CHUNK).to_vec();
        full.resize(full.len() + DATA_CHUNK, 0);
        assert!(read_frame(&mut &full[..]).is_ok());
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
    }

    /// A frame of a megabyte of tiny list items is refused while being decoded, once its items
    /// would take more than the budget in memory; a frame of ordinary size decodes.
    #[test]
    fn a_message_cannot_decode_into_more_than_its_budget() {
        let tiny = |i: usize| {
            WireListed::Ok(WireEntry {
                name: vec![b'a' + (i % 26) as u8],
                ..WireEntry::default()
            })
        };
        let entries: Vec<WireListed> = (0..60_000).map(tiny).collect();
        let msg = Msg::Rep {
            id: 1,
            rep: Rep::Entries {
                entries,
                last: true,
                more: false,
            },
        };
        let frame = encode_msg(&msg).unwrap();
        assert!(frame.len() < MAX_FRAME, "{} bytes", frame.len());
        let e = decode_msg(&frame[5..]).unwrap_err();
        assert!(e.to_string().contains("decodes into more than"), "{e}");
        let few: Vec<WireListed> = (0..1000).map(tiny).collect();
        let ok = Msg::Rep {
            id: 1,
            rep: Rep::Entries {
                entries: few,
                last: true,
                more: false,
            },
        };
        let frame = encode_msg(&ok).unwrap();
        let (back, weight) = decode_weighed(&frame[5..]).unwrap();
        assert_eq!(back, ok);
        assert!(weight > frame.len() * 5, "weighed only {weight}");
    }

    #[test]
    fn a_data_frame_carries_raw_bytes() {
        let mut bytes = data_header(3, 4096, 5).to_vec();
        bytes.extend_from_slice(b"hello");
        match read_frame(&mut &bytes[..]).unwrap() {
            Some(Frame::Data { id, offset, data }) => {
                assert_eq!((id, offset, &data[..]), (3, 4096, &b"hello"[..]));
            }
            other => panic!("{other:?}"),
        }
    }
}
