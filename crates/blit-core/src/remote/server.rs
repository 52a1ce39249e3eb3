//! The daemon's half of a session: check the client (version, module, token), find the path it
//! names strictly beneath the module's root, then serve the module's tree (pull), run the engine
//! into it (push), or answer an admin verb.

use std::ffi::OsString;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::beneath;
use super::chan::Chan;
use super::gate::{Gate, Ticket};
use super::peer::{Handler, Peer};
use super::serve::{self, ServeTree};
use super::source::{RemoteSource, StreamSet};
use super::wire::{
    self, AdminRep, AdminReq, Finished, Hello, ModuleInfo, Msg, PushJob, Req, Role, WireEntry,
    WireError, WireEvent,
};
use super::wirepath;
use crate::budget::Charge;
use crate::dest::LocalDest;
use crate::entry::Kind;
use crate::error::Error;
use crate::job::Job;
use crate::report::{Event, Observer};
use crate::sync;
use crate::sys::creds::{self, Creds};
use crate::trust::Trust;

/// A folder the daemon serves under a name, and what its clients are trusted with.
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// Clients must present this secret.
    pub token: Option<String>,
    /// The user a session acts as in this module (`None`: the daemon's own). A daemon run as
    /// root gives every session of the module up to it before touching a file (see `creds`).
    pub user: Option<Creds>,
    /// What a push may set that only a privileged user could make (owners, setuid and setgid
    /// bits, devices, `security.`/`trusted.` xattrs).
    pub trust: Trust,
    /// Privileged metadata of pushed entries is kept in `user.blit.*` extended attributes of
    /// plain files (rsync's "fake super") and given back on pulls, so a daemon that is not
    /// root holds an exact system backup without making anything privileged.
    pub fake_super: bool,
    /// Shown by `list-modules`.
    pub listed: bool,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub modules: Vec<Module>,
    /// A session with nothing received for this long is closed.
    pub idle_timeout: Duration,
    /// Worker threads per session.
    pub workers: usize,
    /// TLS for every session (`None`: plain TCP, chosen explicitly).
    pub tls: Option<Arc<super::tls::Server>>,
    /// Pushes waiting for the client's extra connections.
    pub pushes: Arc<Pushes>,
    /// Connections that have not yet said hello (see `gate`).
    pub gate: Arc<Gate>,
    /// Sessions served at once; a client past it is told the daemon is busy.
    pub max_sessions: usize,
    /// Sessions running now.
    pub sessions: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long a connection may take to become a session (preamble, TLS handshake, hello): a
/// client does it in a few round trips; what takes longer holds a place for nothing.
pub const OPENING_DEADLINE: Duration = Duration::from_secs(5);

/// One of the daemon's session places, given back on drop.
struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    fn take(sessions: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Slot> {
        use std::sync::atomic::Ordering::SeqCst;
        if sessions.fetch_add(1, SeqCst) >= max {
            sessions.fetch_sub(1, SeqCst);
            return None;
        }
        Some(Slot(Arc::clone(sessions)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The most connections one push may stripe large files across.
const MAX_STREAMS: usize = 16;

/// Running pushes that invited the client to open more connections, by session number. An
/// attaching connection must name the session, show its secret (random, 256 bits, compared in
/// constant time) and come for the same module; each push takes at most as many as it asked.
#[derive(Default)]
pub struct Pushes {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, Invited>>,
}

struct Invited {
    secret: [u8; 32],
    module: String,
    left: usize,
    streams: StreamSet,
}

impl std::fmt::Debug for Pushes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pushes")
    }
}

impl Pushes {
    /// Registers a push that wants `count` more connections; `None` if no secret can be drawn.
    fn invite(&self, module: &str, count: usize, streams: StreamSet) -> Option<(u64, [u8; 32])> {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).ok()?;
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let invited = Invited {
            secret,
            module: module.to_string(),
            left: count,
            streams,
        };
        self.open.lock().unwrap().insert(id, invited);
        Some((id, secret))
    }

    /// The push an attaching connection may join, counted against what it asked for.
    fn admit(&self, id: u64, secret: &[u8; 32], module: &str) -> Option<StreamSet> {
        let mut open = self.open.lock().unwrap();
        let invited = open.get_mut(&id)?;
        if !token_matches(&invited.secret, secret) || invited.module != module || invited.left == 0
        {
            return None;
        }
        invited.left -= 1;
        Some(Arc::clone(&invited.streams))
    }

    fn end(&self, id: u64) {
        self.open.lock().unwrap().remove(&id);
    }
}

/// Runs one connection to its end: its opening (held at the gate, not counted as a session),
/// then, once it has said hello, its session, if the daemon has a place for one. Errors are
/// the connection's own (the client has been told about everything else).
pub fn session(stream: TcpStream, settings: &Settings) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let addr = stream.peer_addr()?.ip();
    let ticket = settings.gate.enter(addr, &stream)?;
    let Some(mut chan) = opening(stream, settings, &ticket)? else {
        return Ok(());
    };
    let hello = match chan.recv()? {
        Msg::Hello(h) => h,
        _ => return refuse(&mut chan, "expected a hello"),
    };
    drop(ticket);
    let Some(_slot) = Slot::take(&settings.sessions, settings.max_sessions) else {
        return refuse(
            &mut chan,
            "the daemon is busy (too many sessions); try again later",
        );
    };
    chan.stream()
        .set_read_timeout(Some(settings.idle_timeout))?;
    if let Role::Admin(AdminReq::ListModules) = &hello.role {
        let list = settings
            .modules
            .iter()
            .filter(|m| m.listed)
            .map(|m| ModuleInfo {
                name: m.name.clone(),
                read_only: m.read_only,
                needs_token: m.token.is_some(),
            })
            .collect();
        return chan.send(&Msg::Admin(AdminRep::Modules(list)));
    }
    let module = match admit(&hello, settings) {
        Ok(m) => m,
        Err(why) => return refuse(&mut chan, &why),
    };
    let rel = match wirepath::rel_from_peer(&hello.path) {
        Ok(r) => r,
        Err(e) => return refuse(&mut chan, &format!("the path: {e}")),
    };
    // The module's folder is opened with the daemon's rights (its configured path may lie
    // beneath folders the module's user cannot enter); everything after goes through this
    // handle, as the module's user.
    let root = match beneath::open_root(&module.path) {
        Ok(fd) => fd,
        Err(e) => return refuse(&mut chan, &format!("module {:?}: {e}", module.name)),
    };
    if let Some(user) = module.user {
        if let Err(e) = creds::become_user(user) {
            return refuse(
                &mut chan,
                &format!("module {:?}: cannot act as its user: {e}", module.name),
            );
        }
    }
    match hello.role {
        Role::Pull => pull(chan, settings, module, &root, &rel),
        Role::Push(job) => push(chan, settings, module, &root, &rel, *job),
        Role::Attach { session, secret } => attach(chan, settings, module, session, &secret),
        Role::Admin(req) => {
            let rep = super::admin::answer(module, &root, &rel, req);
            chan.send(&Msg::Admin(rep))
        }
    }
}

/// Preamble both ways, then TLS when on. `None` when the two sides cannot agree (no common
/// version, or one side wants TLS and the other not): the client reads why from the preamble.
fn opening(
    mut stream: TcpStream,
    settings: &Settings,
    ticket: &Ticket,
) -> io::Result<Option<Chan>> {
    stream.set_read_timeout(Some(settings.idle_timeout.min(OPENING_DEADLINE)))?;
    let (version, wants_tls) = wire::read_client_preamble(&mut stream)?;
    ticket.spoke();
    let tls = settings.tls.as_ref();
    wire::write_server_preamble(&mut stream, version, tls.is_some())?;
    if version.is_none() || wants_tls != tls.is_some() {
        return Ok(None);
    }
    Ok(Some(match tls {
        Some(t) => Chan::Tls(Box::new(t.accept(stream)?)),
        None => Chan::Plain(stream),
    }))
}

fn refuse(chan: &mut Chan, why: &str) -> io::Result<()> {
    chan.send(&Msg::Refused(why.to_string()))
}

/// The module named, if the client may use it.
fn admit<'s>(hello: &Hello, settings: &'s Settings) -> Result<&'s Module, String> {
    let module = settings
        .modules
        .iter()
        .find(|m| m.name == hello.module)
        .ok_or_else(|| format!("no module named {:?}", hello.module))?;
    if let Some(want) = &module.token {
        let given = hello.token.as_deref().unwrap_or("");
        if !token_matches(want.as_bytes(), given.as_bytes()) {
            return Err(if hello.token.is_none() {
                format!(
                    "module {:?} needs a token (set BLIT_TOKEN or use --token-file)",
                    module.name
                )
            } else {
                format!("wrong token for module {:?}", module.name)
            });
        }
    }
    if let Role::Push(_) = hello.role {
        if module.read_only {
            return Err(format!("module {:?} is read-only", module.name));
        }
    }
    if let Role::Admin(AdminReq::Remove) = hello.role {
        if module.read_only {
            return Err(format!("module {:?} is read-only", module.name));
        }
    }
    Ok(module)
}

/// Constant-time comparison, so the time a refusal takes says nothing about the secret.
fn token_matches(want: &[u8], given: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let same_len = want.len() == given.len();
    // Compare against itself when the lengths differ, to spend the same time.
    let other = if same_len { given } else { want };
    bool::from(want.ct_eq(other)) && same_len
}

/// A path the rest of Blit can open, which reaches exactly the held descriptor's folder (the
/// kernel resolves `/proc/self/fd/N` to the open file itself, never by name again).
pub(super) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The served tree's root, resolved beneath the module.
struct Served {
    /// Descriptors the paths below go through, held for the session.
    _held: Vec<OwnedFd>,
    /// The path the serving side opens the tree by.
    root: PathBuf,
    /// The root's name as the client knows it: the module's, or the last name of its path.
    name: OsString,
    /// Where the root folder can be removed (its parent's handle and its name) once a `move`
    /// emptied it; `None` for the module's own folder, which stays.
    outer: Option<(PathBuf, OsString)>,
    entry: WireEntry,
}

/// Resolves the served root beneath the module's folder (`root`, held by the session). A folder
/// is reached through its held descriptor; a file is named inside its held parent folder.
fn served_root(module: &Module, root: &OwnedFd, rel: &Path) -> io::Result<Served> {
    let fd = beneath::open(root, rel)?;
    let md = std::fs::metadata(fd_path(&fd))?;
    let name = rel
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| OsString::from(&module.name));
    let entry = serve::describe_root(&fd_path(&fd), &name, &md, true, module.fake_super);
    let parent = match rel.parent() {
        Some(p) if !rel.as_os_str().is_empty() => Some(beneath::open(root, p)?),
        _ => None,
    };
    if md.is_dir() {
        let outer = parent.as_ref().map(|p| (fd_path(p), name.clone()));
        let path = fd_path(&fd);
        let held = [Some(fd), parent].into_iter().flatten().collect();
        return Ok(Served {
            _held: held,
            root: path,
            name,
            outer,
            entry,
        });
    }
    let parent = parent.ok_or_else(|| io::Error::other("the module's root is not a folder"))?;
    let path = fd_path(&parent).join(&name);
    Ok(Served {
        _held: vec![fd, parent],
        root: path,
        name,
        outer: None,
        entry,
    })
}

fn pull(
    mut chan: Chan,
    settings: &Settings,
    module: &Module,
    root: &OwnedFd,
    rel: &Path,
) -> io::Result<()> {
    let served = match served_root(module, root, rel) {
        Ok(x) => x,
        Err(e) => return refuse(&mut chan, &format!("{}: {e}", shown(module, rel))),
    };
    chan.send(&Msg::Welcome(Some(served.entry.clone())))?;
    let (tx, rx) = mpsc::channel::<()>();
    let tree = ServeTree::new(
        served.root.clone(),
        served.name.clone(),
        module.read_only,
        settings.workers,
        Box::new(|_, _| {}),
        Box::new(move |_| {
            let _ = tx.send(());
        }),
    )?
    .with_outer(served.outer.clone())
    .with_fake_super(module.fake_super);
    let peer = Peer::start(chan, Arc::new(tree))?;
    let _ = rx.recv();
    peer.finish();
    peer.outcome()
}

/// Another connection for a running push: it joins the push's set of stripe carriers and
/// lives until the push ends it.
fn attach(
    mut chan: Chan,
    settings: &Settings,
    module: &Module,
    session: u64,
    secret: &[u8; 32],
) -> io::Result<()> {
    let Some(streams) = settings.pushes.admit(session, secret, &module.name) else {
        return refuse(&mut chan, "no push is waiting for that connection");
    };
    chan.send(&Msg::Welcome(None))?;
    let peer = Peer::start(chan, Arc::new(RepliesOnly))?;
    streams.add([Arc::clone(&peer)]);
    // The push finishes this connection with its own end; the other side's end closes it.
    peer.wait_closed();
    Ok(())
}

fn shown(module: &Module, rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        format!("module {:?}", module.name)
    } else {
        format!("{}/{}", module.name, crate::names::escape(rel))
    }
}

/// No requests come from the client on a push; only replies, routed by the peer.
struct RepliesOnly;

impl Handler for RepliesOnly {
    fn request(&self, peer: &Arc<Peer>, _id: u32, _req: Req, _charge: Charge) {
        peer.close("the client sent a request during a push");
    }
    fn message(&self, _peer: &Arc<Peer>, _msg: Msg, _charge: Charge) {}
}

fn push(
    mut chan: Chan,
    settings: &Settings,
    module: &Module,
    root: &OwnedFd,
    rel: &Path,
    push: PushJob,
) -> io::Result<()> {
    let src_is_dir = push.src.kind == Kind::Dir;
    let dst = match push_dest(root, rel, &push) {
        Ok(d) => d,
        Err(why) => return refuse(&mut chan, &why),
    };
    chan.send(&Msg::Welcome(None))?;
    let peer = Peer::start(chan, Arc::new(RepliesOnly))?;
    let (streams, invited) = invite_streams(settings, module, &peer, &push);
    let job = Job::new(
        crate::Endpoint::Local(PathBuf::new()),
        crate::Endpoint::Local(PathBuf::new()),
        push.opts
            .clone()
            .workers(Some(push_workers(settings, &push))),
    );
    let dst_path = dst.path.clone();
    let forward = Forward {
        events: push.events,
        progress: push.progress,
        peer: Arc::clone(&peer),
        local: crate::names::escape(&dst_path),
        local_path: dst_path.clone(),
        shown: push.dst_shown.clone(),
    };
    let ran = run_push(
        &job, module, &peer, &push, &dst_path, src_is_dir, &forward, &streams,
    );
    if let Some(session) = invited {
        settings.pushes.end(session);
    }
    let finished = match ran {
        Ok(outcome) => Finished {
            actions: outcome.actions,
            unchanged: outcome.unchanged,
            kept: outcome.kept,
            interrupted: outcome.interrupted || peer.is_closed(),
            methods: outcome.stats.methods.into_iter().collect(),
            source_entries: outcome.stats.source_entries,
            dest_entries: outcome.stats.dest_entries,
            workers: outcome.stats.workers as u32,
            refused: None,
        },
        Err(e) => Finished {
            refused: Some(forward.words(&e.to_string())),
            ..Finished::default()
        },
    };
    let _ = peer.send(&Msg::Finished(finished));
    peer.finish();
    for p in streams.0.take() {
        p.finish();
    }
    drop(dst);
    peer.outcome()
}

/// Where a push lands beneath the module, or why it may not: the source's name must be a plain
/// name Blit does not reserve for its temporaries.
fn push_dest(root: &OwnedFd, rel: &Path, push: &PushJob) -> Result<beneath::Dest, String> {
    let src_is_dir = push.src.kind == Kind::Dir;
    if let Err(e) = wirepath::plain(&push.src.name) {
        return Err(format!("the source's name: {e}"));
    }
    if wirepath::reserved(&push.src.name, src_is_dir) {
        return Err("the source's name is one Blit reserves for its temporaries".into());
    }
    beneath::dest(
        root,
        rel,
        &push.src.name,
        src_is_dir,
        push.into,
        push.opts.dry_run,
    )
    .map_err(|e| format!("{}: {e}", push.dst_shown))
}

/// Invites the extra connections a push may stripe large files across, now, so they are there
/// by the time a large file comes: the set they join and how many are expected, and the
/// invitation to withdraw at the end (if any was made).
fn invite_streams(
    settings: &Settings,
    module: &Module,
    peer: &Peer,
    push: &PushJob,
) -> ((StreamSet, usize), Option<u64>) {
    let streams = StreamSet::default();
    let extra = usize::from(push.streams).clamp(1, MAX_STREAMS) - 1;
    let invited = (extra > 0)
        .then(|| {
            settings
                .pushes
                .invite(&module.name, extra, Arc::clone(&streams))
        })
        .flatten();
    let Some((session, secret)) = invited else {
        return ((streams, 0), None);
    };
    // A failed send means a dead connection, which the run notices; the invitation is
    // withdrawn at its end either way.
    let _ = peer.send(&Msg::Streams {
        session,
        secret,
        count: extra as u8,
    });
    ((streams, extra), Some(session))
}

/// The workers a push runs with: what the client asks, bounded by the daemon's setting (each
/// worker copying a file holds a few of its frames).
fn push_workers(settings: &Settings, push: &PushJob) -> u32 {
    push.opts
        .workers
        .map_or(settings.workers, |w| w as usize)
        .clamp(1, settings.workers.max(1)) as u32
}

#[allow(clippy::too_many_arguments)]
fn run_push(
    job: &Job,
    module: &Module,
    peer: &Arc<Peer>,
    push: &PushJob,
    dst_path: &Path,
    src_is_dir: bool,
    forward: &Forward,
    (streams, expected): &(StreamSet, usize),
) -> crate::error::Result<sync::Outcome> {
    // With fake super every privileged detail is kept, as xattrs the session's user may set.
    let trust = if module.fake_super {
        Trust::ALL
    } else {
        module.trust
    };
    let source = RemoteSource::new(Arc::clone(peer), &push.src, push.src_shown.clone(), trust)?
        .with_stream_set(Arc::clone(streams), *expected);
    let filter = job.filter(src_is_dir)?;
    let mut opts = job.sync_options().trusting(trust);
    if module.fake_super {
        opts = opts.fake_super();
    }
    // The client's Ctrl-C closes the connection; stop then, as a local run stops on Ctrl-C.
    let cancel = opts.cancel.clone();
    peer.on_close(move || cancel.cancel());
    // The name was checked beneath the module, and another session could swap a link in.
    let dest = LocalDest::new(dst_path.to_path_buf()).root_nofollow();
    sync::run_local(&source, dest, &filter, &opts, forward)
}

/// Sends the engine's reports to the client, in the client's words for paths.
struct Forward {
    /// The client shows per-entry events / byte counts (else they are not sent).
    events: bool,
    progress: bool,
    peer: Arc<Peer>,
    /// The destination root as the daemon's messages spell it, and as the client named it.
    local: String,
    local_path: PathBuf,
    shown: String,
}

impl Forward {
    fn words(&self, text: &str) -> String {
        text.replace(&self.local, &self.shown)
    }

    fn path(&self, p: &Path) -> Vec<u8> {
        match p.strip_prefix(&self.local_path) {
            Ok(rel) if rel.as_os_str().is_empty() => self.shown.as_bytes().to_vec(),
            Ok(rel) => {
                let mut out = OsString::from(&self.shown);
                out.push("/");
                out.push(rel);
                out.into_vec()
            }
            Err(_) => p.as_os_str().as_bytes().to_vec(),
        }
    }
}

impl Observer for Forward {
    fn found(&self, bytes: u64) {
        if self.progress {
            let _ = self.peer.send(&Msg::Found(bytes));
        }
    }

    fn event(&self, e: &Event<'_>) {
        if !self.events {
            return;
        }
        let _ = self.peer.send(&Msg::Event(WireEvent {
            action: e.action,
            kind: e.kind,
            rel: e.rel.as_os_str().as_bytes().to_vec(),
            reason: e.reason.to_string(),
            bytes: e.bytes,
        }));
    }

    fn failure(&self, e: &Error) {
        let w = WireError {
            op: e.op_name(),
            path: e.path().map(|p| self.path(p)).unwrap_or_default(),
            kind: wire::ErrorKind::Other,
            message: self.words(&e.cause()),
        };
        let _ = self.peer.send(&Msg::Failure(w));
    }

    fn progress(&self, bytes: u64) {
        if self.progress {
            let _ = self.peer.send(&Msg::Progress(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secret", b"secreT"));
        assert!(!token_matches(b"secret", b"secret2"));
        assert!(!token_matches(b"secret", b""));
    }
}
