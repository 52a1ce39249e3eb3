//! The client's half of a session: connect, say hello, then either run the engine against the
//! daemon's tree (pull) or serve the local tree to the daemon's engine (push), and in both cases
//! hand the caller the same [`Summary`] a local run gives.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chan::Chan;
use super::peer::{Handler, Peer};
use super::serve::{self, ServeTree};
use super::source::RemoteSource;
use super::url::RemoteUrl;
use super::wire::{self, AdminRep, AdminReq, Finished, Hello, Msg, PushJob, Req, Role, WireError};
use super::wirepath;
use crate::budget::Charge;
use crate::entry::Entry;
use crate::error::{Error, Op, Result};
use crate::job::Job;
use crate::names::escape_text;
use crate::options::Mode;
use crate::report::{Event, Failure, Observer, Stats, Summary};
use crate::sync;
use crate::trust::Trust;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The daemon must answer the hello within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Once running, a session in which nothing arrives for this long has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections a large file is striped across unless the user says otherwise, to a daemon on
/// another machine: a stripe per connection spreads each end's encryption and copies over more
/// cores, and a long or lossy path's per-connection limit (the TCP window) over more windows.
pub const DEFAULT_STREAMS: usize = 2;

/// The number of connections a job stripes large files across. To a daemon on this machine
/// (loopback) one, unless the user asks: both ends then share the same cores, which one stream
/// already keeps busy (bench/RESULTS-remote.md compares `--streams 2`).
pub fn streams_of(access: &Access, url: &RemoteUrl) -> usize {
    let default = || {
        let local = url
            .address()
            .to_socket_addrs()
            .is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()));
        if local {
            1
        } else {
            DEFAULT_STREAMS
        }
    };
    access.streams.unwrap_or_else(default).clamp(1, 16)
}

/// A connection's failure: the peer breaking the protocol (what it sent does not decode or
/// exceeds a bound), or the network's.
fn net_error(url: &RemoteUrl, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        protocol_error(url, &e.to_string())
    } else {
        Error::Network {
            target: url.to_string(),
            source: e,
        }
    }
}

fn protocol_error(url: &RemoteUrl, what: &str) -> Error {
    Error::Protocol {
        target: url.to_string(),
        what: escape_text(what),
    }
}

/// How to reach a module (its secret, how the connection is protected, how many connections a
/// large file may use) and what a pull takes from it.
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub token: Option<String>,
    /// Plain TCP (the daemon must run with TLS off too).
    pub plain: bool,
    /// The daemon's certificate fingerprint to insist on (else trust on first use).
    pub fingerprint: Option<String>,
    /// Connections a large file is striped across (`None`: Blit's default).
    pub streams: Option<usize>,
    /// Pull: take owners, setuid/setgid bits, device nodes and privileged xattrs from the daemon
    /// as it describes them (see `crate::trust`); otherwise only what any user could make.
    pub trust_metadata: bool,
    /// Hears what the user should know about a connection: a certificate trusted on first use.
    pub notify: Option<Notify>,
}

/// A receiver of notices (see [`Access::notify`]); the library prints nothing itself.
#[derive(Clone)]
pub struct Notify(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notify")
    }
}

impl Access {
    fn notice(&self, text: &str) {
        if let Some(n) = &self.notify {
            (n.0)(text);
        }
    }
}

/// Connects and says hello; the daemon's answer is the served root's entry (pull), nothing
/// (push), or a refusal, which becomes this run's refusal.
pub fn open(url: &RemoteUrl, role: Role, access: &Access) -> Result<(Chan, Msg)> {
    let addrs = url
        .address()
        .to_socket_addrs()
        .map_err(|e| net_error(url, e))?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| net_error(url, last))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| net_error(url, e))?;
    let hello = Msg::Hello(Hello {
        module: url.module.clone(),
        path: url.path.as_bytes().to_vec(),
        token: access.token.clone(),
        role,
    });
    let tls = wire::write_client_preamble(&mut stream, !access.plain)
        .and_then(|()| wire::read_server_preamble(&mut stream))
        .map_err(|e| net_error(url, e))?
        .1;
    let mismatch = |why: &str| Err(Error::Refused(format!("{url}: {why}")));
    let mut chan = match (tls, access.plain) {
        (true, true) => return mismatch("the daemon requires TLS; drop --no-tls"),
        (false, false) => return mismatch(
            "the daemon does not offer TLS (it runs with TLS off); pass --no-tls to connect in the clear",
        ),
        (false, true) => Chan::Plain(stream),
        (true, false) => secure(stream, url, access).map_err(|e| net_error(url, e))?,
    };
    let answer = chan
        .send(&hello)
        .and_then(|()| chan.recv())
        .map_err(|e| net_error(url, e))?;
    if let Msg::Refused(why) = answer {
        return Err(Error::Refused(format!("{url}: {}", escape_text(&why))));
    }
    // A daemon silent this long has stalled: the run fails instead of hanging.
    chan.stream()
        .set_read_timeout(Some(STALL_TIMEOUT))
        .map_err(|e| net_error(url, e))?;
    Ok((chan, answer))
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn secure(stream: TcpStream, url: &RemoteUrl, access: &Access) -> io::Result<Chan> {
    let session = super::tls::connect(
        stream,
        &url.address(),
        access.fingerprint.as_deref(),
        &|text| access.notice(text),
    )?;
    Ok(Chan::Tls(Box::new(session)))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn secure(_stream: TcpStream, _url: &RemoteUrl, _access: &Access) -> io::Result<Chan> {
    Err(io::Error::other(
        "TLS is built only on Linux, macOS and Windows in this version; use --no-tls (and a daemon with TLS off)",
    ))
}

/// Replies nothing: on a pull the daemon sends no requests.
struct Quiet;

impl Handler for Quiet {
    fn request(&self, peer: &Arc<Peer>, _id: u32, _req: Req, _charge: Charge) {
        peer.close("the daemon sent a request during a pull");
    }
    fn message(&self, _peer: &Arc<Peer>, _msg: Msg, _charge: Charge) {}
}

/// `blit copy|mirror|move blit://… LOCAL`: the engine runs here, reading through the daemon.
pub fn pull(
    job: &Job,
    url: &RemoteUrl,
    dst_arg: &Path,
    observer: &dyn Observer,
) -> Result<Summary> {
    let started = Instant::now();
    let (chan, answer) = open(url, Role::Pull, &job.access)?;
    let Msg::Welcome(Some(root)) = answer else {
        return Err(protocol_error(url, "unexpected answer to the hello"));
    };
    let peer = Peer::start(chan, Arc::new(Quiet)).map_err(|e| net_error(url, e))?;
    let extra = streams_of(&job.access, url) - 1;
    // What the daemon says of owners, special bits, devices and privileged xattrs is taken only
    // when the user says so (rsync's root receiver takes it all, always).
    let trust = if job.access.trust_metadata {
        Trust::ALL
    } else {
        Trust::NONE
    };
    let mut source = RemoteSource::new(Arc::clone(&peer), &root, url.to_string(), trust)?;
    if extra > 0 {
        // More pull sessions of the same path: each serves stripes of large files.
        let (url2, access) = (url.clone(), job.access.clone());
        source = source.with_streams(Box::new(move || {
            (0..extra)
                .map_while(|_| match open(&url2, Role::Pull, &access) {
                    Ok((chan, Msg::Welcome(Some(_)))) => Peer::start(chan, Arc::new(Quiet)).ok(),
                    _ => None,
                })
                .collect()
        }));
    }
    let is_dir = root.kind == crate::entry::Kind::Dir;
    let name = wirepath::from_wire(root.name.clone()).map_err(|e| net_error(url, e))?;
    let dst_root = crate::landing::resolve_dest(is_dir, &name, dst_arg)?;
    let filter = job.filter(is_dir)?;
    if !is_dir && !job.opts.dry_run {
        crate::landing::make_parent(&dst_root)?;
    }
    let opts = job.sync_options().trusting(trust);
    let dest = crate::dest::LocalDest::new(dst_root);
    let outcome = sync::run_local(&source, dest, &filter, &opts, observer);
    peer.finish();
    for p in source.streams() {
        p.finish();
    }
    Ok(job.summary(outcome?, started))
}

/// `blit copy|mirror|move LOCAL blit://…`: this side serves its tree; the daemon runs the engine
/// and reports each change, which is shown here as if it happened locally.
pub fn push(
    job: &Job,
    src_arg: &Path,
    url: &RemoteUrl,
    observer: &dyn Observer,
) -> Result<Summary> {
    let started = Instant::now();
    let md = std::fs::metadata(src_arg).map_err(|e| Error::io(Op::Stat, src_arg, e))?;
    let src_root = std::fs::canonicalize(src_arg).map_err(|e| Error::io(Op::Stat, src_arg, e))?;
    // Refuse a bad filter here, before the daemon is bothered.
    job.filter(md.is_dir())?;
    let push = push_job(job, url, observer, &src_root, &md);
    let (chan, answer) = open(url, Role::Push(Box::new(push)), &job.access)?;
    if !matches!(answer, Msg::Welcome(None)) {
        return Err(protocol_error(url, "unexpected answer to the hello"));
    }
    // The daemon's reports, each held (and charged) until shown; `None` ends them.
    let (tx, rx) = mpsc::channel::<Option<(Msg, Charge)>>();
    let peer = serve_push(job, url, chan, &src_root, tx)?;
    let mut heard = Heard::default();
    let mut streams: Option<std::thread::JoinHandle<Vec<Arc<Peer>>>> = None;
    // Ends when the connection does (closed by the daemon, or by an interrupt).
    while let Ok(Some((msg, _charge))) = rx.recv() {
        match msg {
            Msg::Finished(f) => {
                heard.finished = Some(f);
                break;
            }
            Msg::Streams {
                session,
                secret,
                count,
            } if streams.is_none() => {
                let count = usize::from(count).min(streams_of(&job.access, url) - 1);
                let (url, access, root) = (url.clone(), job.access.clone(), src_root.clone());
                streams = Some(std::thread::spawn(move || {
                    attach(&url, &access, &root, session, secret, count)
                }));
            }
            other => heard.report(other, observer),
        }
    }
    peer.finish();
    if let Some(opening) = streams {
        for p in opening.join().unwrap_or_default() {
            p.finish();
        }
    }
    heard.summary(job, url, observer, started)
}

/// What the daemon is asked to run: the user's options, and the source's root as it stands.
fn push_job(
    job: &Job,
    url: &RemoteUrl,
    observer: &dyn Observer,
    src_root: &Path,
    md: &std::fs::Metadata,
) -> PushJob {
    let name = src_root.file_name().unwrap_or_default();
    let entry = Entry::from_metadata(PathBuf::new(), md);
    let mut src = super::entries::to_wire_entry(name, &entry);
    if !job.opts.no_xattrs {
        src.xattrs = serve::path_xattrs(src_root);
    }
    PushJob {
        opts: job.opts.clone(),
        events: observer.wants_events(),
        progress: observer.wants_progress(),
        src,
        into: url.trailing_slash,
        src_shown: crate::names::escape(src_root),
        dst_shown: url.to_string(),
        streams: streams_of(&job.access, url) as u8,
    }
}

/// Serves the source tree to the daemon's engine on `chan`; its other messages (reports) go to
/// `reports`, and `None` when the connection ends or the user interrupts (which closes it: the
/// daemon then stops and removes its temporaries).
fn serve_push(
    job: &Job,
    url: &RemoteUrl,
    chan: Chan,
    src_root: &Path,
    reports: mpsc::Sender<Option<(Msg, Charge)>>,
) -> Result<Arc<Peer>> {
    let (ended, interrupted) = (reports.clone(), reports.clone());
    // Only a move may remove anything here; a daemon asking otherwise is refused.
    let tree = ServeTree::new(
        src_root.to_path_buf(),
        src_root.file_name().unwrap_or_default().to_os_string(),
        job.opts.mode != Mode::Move,
        job.workers(),
        Box::new(move |m, charge| {
            let _ = reports.send(Some((m, charge)));
        }),
        Box::new(move |_| {
            let _ = ended.send(None);
        }),
    )
    .map_err(|e| net_error(url, e))?;
    let peer = Peer::start(chan, Arc::new(tree)).map_err(|e| net_error(url, e))?;
    let closing = Arc::clone(&peer);
    job.cancel.on_cancel(move || {
        closing.close("interrupted");
        let _ = interrupted.send(None);
    });
    Ok(peer)
}

/// What the daemon reported of a push.
#[derive(Default)]
struct Heard {
    failures: Vec<Failure>,
    finished: Option<Finished>,
}

impl Heard {
    /// Shows one report as if the change happened here.
    fn report(&mut self, msg: Msg, observer: &dyn Observer) {
        match msg {
            Msg::Event(ev) => {
                let rel = wirepath::shown(&ev.rel);
                observer.event(&Event {
                    action: ev.action,
                    kind: ev.kind,
                    rel: &rel,
                    reason: &escape_text(&ev.reason),
                    bytes: ev.bytes,
                });
            }
            Msg::Failure(w) => self.failed(
                Error::Remote {
                    op: escape_text(&w.op),
                    path: wirepath::shown(&w.path),
                    cause: escape_text(&w.message),
                },
                observer,
            ),
            Msg::Found(n) => observer.found(n),
            Msg::Progress(n) => observer.progress(n),
            _ => {}
        }
    }

    fn failed(&mut self, err: Error, observer: &dyn Observer) {
        observer.failure(&err);
        self.failures.push(Failure::from(&err));
    }

    /// The run's summary from the daemon's totals. Cut off mid-run, whatever the daemon reported
    /// stands and the rest is one failure: the next run (with --resume for large files) picks
    /// up from there.
    fn summary(
        mut self,
        job: &Job,
        url: &RemoteUrl,
        observer: &dyn Observer,
        started: Instant,
    ) -> Result<Summary> {
        let interrupted = job.cancel.is_cancelled();
        let Some(f) = self.finished.take() else {
            if !interrupted {
                let err = Error::Remote {
                    op: "connect".into(),
                    path: PathBuf::from(url.to_string()),
                    cause: "the connection ended before the daemon finished".into(),
                };
                self.failed(err, observer);
            }
            let mut s = job.summary(sync::Outcome::default(), started);
            s.failures = self.failures;
            s.interrupted = interrupted;
            return Ok(s);
        };
        if let Some(why) = f.refused {
            return Err(Error::Refused(escape_text(&why)));
        }
        let outcome = sync::Outcome {
            actions: f.actions,
            unchanged: f.unchanged,
            kept: f.kept,
            interrupted: f.interrupted || interrupted,
            stats: Stats {
                workers: f.workers as usize,
                methods: f.methods.into_iter().collect(),
                source_entries: f.source_entries,
                dest_entries: f.dest_entries,
                ..Stats::default()
            },
            ..sync::Outcome::default()
        };
        let mut s = job.summary(outcome, started);
        s.failures = self.failures;
        Ok(s)
    }
}

/// Opens the connections the daemon asked for to carry stripes of large files: on each, this
/// side serves its tree (reads only: removals stay on the main connection).
fn attach(
    url: &RemoteUrl,
    access: &Access,
    root: &Path,
    session: u64,
    secret: [u8; 32],
    count: usize,
) -> Vec<Arc<Peer>> {
    (0..count)
        .map_while(|_| {
            let (chan, answer) = open(url, Role::Attach { session, secret }, access).ok()?;
            if !matches!(answer, Msg::Welcome(None)) {
                return None;
            }
            let tree = ServeTree::new(
                root.to_path_buf(),
                root.file_name().unwrap_or_default().to_os_string(),
                true,
                1,
                Box::new(|_, _| {}),
                Box::new(|_| {}),
            )
            .ok()?;
            Peer::start(chan, Arc::new(tree)).ok()
        })
        .collect()
}

/// An admin verb: one request, one answer (an `ls` of a big folder: one per page, joined).
pub fn admin(url: &RemoteUrl, req: AdminReq, access: &Access) -> Result<AdminRep> {
    if !matches!(req, AdminReq::List { .. }) {
        return admin_once(url, req, access);
    }
    let mut all = Vec::new();
    let mut after = None;
    loop {
        match admin_once(
            url,
            AdminReq::List {
                after: after.clone(),
            },
            access,
        )? {
            AdminRep::Entries { entries, more } => {
                let last = entries.last().map(|(n, _)| n.clone());
                // Pages follow the names' order: one that does not move past the last name
                // would be asked for again and again.
                if more && last.is_some() && last <= after {
                    return Err(Error::Refused(format!(
                        "{url}: the daemon's listing does not advance"
                    )));
                }
                after = last;
                all.extend(entries);
                if !more || after.is_none() {
                    return Ok(AdminRep::Entries {
                        entries: all,
                        more: false,
                    });
                }
            }
            other => return Ok(other),
        }
    }
}

fn admin_once(url: &RemoteUrl, req: AdminReq, access: &Access) -> Result<AdminRep> {
    let (_chan, answer) = open(url, Role::Admin(req), access)?;
    match answer {
        Msg::Admin(AdminRep::Error(e)) => Err(admin_error(url, e)),
        Msg::Admin(rep) => Ok(rep),
        _ => Err(protocol_error(url, "unexpected answer")),
    }
}

/// A daemon's admin failure, named by the URL of the path it was about.
fn admin_error(url: &RemoteUrl, e: WireError) -> Error {
    let rel = wirepath::shown(&e.path);
    let mut path = std::ffi::OsString::from(format!("blit://{}/{}", url.address(), url.module));
    if !rel.as_os_str().is_empty() {
        path.push("/");
        path.push(rel);
    }
    Error::Remote {
        op: escape_text(&e.op),
        path: path.into(),
        cause: escape_text(&e.message),
    }
}

/// A listed name for display.
pub fn shown_name(raw: &[u8]) -> String {
    crate::names::escape(&wirepath::shown(raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::{Endpoint, NullObserver, Options};

    fn run(src: Endpoint, dst: Endpoint) -> Error {
        let job = Job::new(src, dst, Options::default()).with_access(Access {
            plain: true,
            ..Access::default()
        });
        job.run(&NullObserver).expect_err("nothing to connect to")
    }

    /// A port nobody listens on: the failure is the network's, and worth another try.
    #[test]
    fn a_refused_connection_is_a_retryable_network_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("blit://127.0.0.1:{port}/m/x");
        let local = Endpoint::Local(dir.path().to_path_buf());
        for e in [
            run(local.clone(), Endpoint::parse(&url).unwrap()),
            run(Endpoint::parse(&url).unwrap(), local.clone()),
        ] {
            assert_eq!(e.kind(), ErrorKind::Network, "{e}");
            assert!(e.retryable(), "{e}");
            assert!(e.to_string().starts_with(&url), "{e}");
        }
    }

    /// Something that answers but is no Blit daemon breaks the protocol: not worth retrying.
    #[test]
    fn a_peer_that_is_no_daemon_is_a_protocol_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let answer = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = io::Write::write_all(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let dir = tempfile::tempdir().unwrap();
        let url = format!("blit://127.0.0.1:{port}/m/x");
        let e = run(
            Endpoint::parse(&url).unwrap(),
            Endpoint::Local(dir.path().into()),
        );
        answer.join().unwrap();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
        assert!(!e.retryable(), "{e}");
    }
}
