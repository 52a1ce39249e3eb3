//! The remote tests' fixture: a real `blit-daemon` on the loopback with modules in a sandbox, the
//! real `blit` aimed at it, and a raw protocol peer (client or daemon) that speaks the wire format
//! frame by frame, as a broken or hostile peer would. Shared by `remote.rs` and `security.rs`.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::assert::Assert;
pub use blit_core::entry::Kind;
use blit_core::remote::wire::{
    self, Finished, Frame, Hello, Msg, PushJob, Rep, Req, Role, WireEntry,
};
pub use blit_core::{Mode, Options};

use crate::common::*;

/// Upper bound for one client run against the daemon: far above what any run here needs, far
/// below what would stall the suite.
pub const REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// A raw socket waits this long for the daemon to answer or hang up.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The daemon fixture
// ---------------------------------------------------------------------------------------------

/// One module of a daemon's configuration.
#[derive(Clone)]
pub struct Module {
    name: String,
    path: PathBuf,
    read_only: bool,
    token_file: Option<PathBuf>,
    /// Sessions run as root and keep everything (`uid = "root"`, `keep = ["all"]`), behind the
    /// fixture's token unless the module has its own: what the fidelity tests need, trees owned
    /// by anyone with every kind of entry. Else the daemon's defaults.
    trusted: bool,
    /// More lines of the module's table, as TOML (`uid = "root"`).
    lines: Vec<String>,
}

/// A module trusted with everything (see [`Module::trusted`]).
pub fn module(name: &str, path: impl Into<PathBuf>) -> Module {
    Module {
        name: name.into(),
        path: path.into(),
        read_only: false,
        token_file: None,
        trusted: true,
        lines: Vec::new(),
    }
}

/// The token of the fixture's trusted modules; clients aimed at a daemon that has them send it.
pub const FIXTURE_TOKEN: &str = "fixture-token-for-trusted-modules";

/// The file holding [`FIXTURE_TOKEN`].
fn fixture_token_file() -> PathBuf {
    let f = tls_dir().join("fixture-token");
    if !f.exists() {
        std::fs::create_dir_all(tls_dir()).unwrap();
        let tmp = tls_dir().join(format!("fixture-token.{}", std::process::id()));
        std::fs::write(&tmp, FIXTURE_TOKEN).unwrap();
        std::fs::rename(&tmp, &f).unwrap();
    }
    f
}

impl Module {
    /// With the daemon's defaults (sessions as `nobody` under a root daemon, no token, nothing
    /// privileged kept), as an operator's plain `[[module]]` would be.
    pub fn defaults(mut self) -> Self {
        self.trusted = false;
        self
    }

    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    pub fn token_file(mut self, f: impl Into<PathBuf>) -> Self {
        self.token_file = Some(f.into());
        self
    }

    /// One more setting of the module (a line of TOML).
    pub fn with(mut self, line: &str) -> Self {
        self.lines.push(line.to_string());
        self
    }

    /// Served, but left out of `list-modules`.
    pub fn unlisted(self) -> Self {
        self.with("list = false")
    }
}

/// Where every TLS daemon of this test binary keeps its (shared) self-signed identity, and where
/// clients record what they trust: all daemons show the same certificate, so a port reused by a
/// later daemon is still trusted.
pub fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("remote-tests-tls")
}

pub fn known_hosts() -> PathBuf {
    tls_dir().join("known_hosts")
}

/// Ports of daemons started without TLS (for the raw-protocol tests); clients pointed at them
/// get `--no-tls`.
/// Ports of the plain (`--no-tls`) daemons running now, each with its daemon's number. A port
/// leaves the list when its daemon is dropped, or when another daemon is given it: the kernel
/// hands ports out again, and a TLS daemon on a stale entry's port was once spoken to in plain.
static PLAIN_PORTS: Mutex<Vec<(u16, u64)>> = Mutex::new(Vec::new());
/// Ports of the daemons running now that serve trusted modules (see [`Module::trusted`]):
/// clients aimed at them send the fixture's token and, pulling, `--trust-metadata`.
static TRUSTED_PORTS: Mutex<Vec<(u16, u64)>> = Mutex::new(Vec::new());
static NEXT_DAEMON: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A running `blit-daemon` on 127.0.0.1 with a port the kernel chose; killed on drop. TLS is on
/// (the default) unless it was started `plain`.
pub struct Daemon {
    child: Child,
    port: u16,
    id: u64,
    stderr: Arc<Mutex<Vec<u8>>>,
    _config: tempfile::TempDir,
}

pub fn daemon_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_blit")).with_file_name("blit-daemon");
    assert!(
        bin.exists(),
        "{bin:?} is missing: build it with `cargo test --workspace` (or `cargo build -p \
         blit-daemon`) before running these tests"
    );
    bin
}

/// The quick start's command line: each module as `--module NAME=PATH`, on a free port.
fn quick_args(modules: &[(&str, &Path)]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
    for (name, path) in modules {
        let mut m = OsString::from(format!("{name}="));
        m.push(path.as_os_str());
        args.push("--module".into());
        args.push(m);
    }
    args
}

impl Daemon {
    /// Serves writable modules trusted with everything (see [`Module::trusted`]).
    pub fn serve(modules: &[(&str, &Path)]) -> Daemon {
        let m: Vec<Module> = modules.iter().map(|(n, p)| module(n, p)).collect();
        Self::with_config(&m, "")
    }

    /// The same without TLS, for tests that speak the protocol through a raw socket.
    pub fn serve_plain(modules: &[(&str, &Path)]) -> Daemon {
        let m: Vec<Module> = modules.iter().map(|(n, p)| module(n, p)).collect();
        Self::with_config_plain(&m, "")
    }

    /// Serves modules given on the command line (`--module NAME=PATH`): the README's quick
    /// start, with every default.
    pub fn quick(modules: &[(&str, &Path)]) -> Daemon {
        Self::serve_with(modules, false)
    }

    /// The same without TLS.
    pub fn quick_plain(modules: &[(&str, &Path)]) -> Daemon {
        Self::serve_with(modules, true)
    }

    fn serve_with(modules: &[(&str, &Path)], plain: bool) -> Daemon {
        Self::spawn(quick_args(modules), tempfile::tempdir().unwrap(), plain)
    }

    /// Serves the modules through a TOML configuration (`--config`), with `extra` top-level
    /// settings such as `idle_timeout = 2`.
    pub fn with_config(modules: &[Module], extra: &str) -> Daemon {
        Self::with_config_tls(modules, extra, false)
    }

    /// The same without TLS, for tests that speak the protocol through a raw socket.
    pub fn with_config_plain(modules: &[Module], extra: &str) -> Daemon {
        Self::with_config_tls(modules, extra, true)
    }

    pub fn with_config_tls(modules: &[Module], extra: &str, plain: bool) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("listen = \"127.0.0.1:0\"\n{extra}\n");
        for m in modules {
            text.push_str(&format!(
                "\n[[module]]\nname = {:?}\npath = {:?}\nread_only = {}\n",
                m.name,
                m.path.to_str().expect("UTF-8 module path"),
                m.read_only
            ));
            let token = match (&m.token_file, m.trusted) {
                (Some(t), _) => Some(t.clone()),
                (None, true) => Some(fixture_token_file()),
                (None, false) => None,
            };
            if let Some(t) = token {
                text.push_str(&format!("token_file = {:?}\n", t.to_str().unwrap()));
            }
            if m.trusted {
                text.push_str("uid = \"root\"\nkeep = [\"all\"]\n");
            }
            for line in &m.lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        let cfg = dir.path().join("blit-daemon.toml");
        std::fs::write(&cfg, text).unwrap();
        let d = Self::spawn(vec!["--config".into(), cfg.into()], dir, plain);
        if modules.iter().any(|m| m.trusted) {
            TRUSTED_PORTS.lock().unwrap().push((d.port, d.id));
        }
        d
    }

    pub fn spawn(args: Vec<OsString>, config: tempfile::TempDir, plain: bool) -> Daemon {
        let tls = (!plain).then(tls_dir);
        Self::spawn_with_identity(args, config, tls)
    }

    /// Serves the modules with TLS and the identity kept in `identity` (another certificate
    /// than the shared one: an impostor, as far as clients that trusted the shared one know).
    pub fn serve_as(modules: &[(&str, &Path)], identity: &Path) -> Daemon {
        let args = quick_args(modules);
        Self::spawn_with_identity(args, tempfile::tempdir().unwrap(), Some(identity.into()))
    }

    /// `tls`: the folder of the identity, or `None` for plain TCP.
    fn spawn_with_identity(
        mut args: Vec<OsString>,
        config: tempfile::TempDir,
        tls: Option<PathBuf>,
    ) -> Daemon {
        let plain = tls.is_none();
        match tls {
            None => args.push("--no-tls".into()),
            Some(dir) => {
                args.push("--tls-dir".into());
                args.push(dir.into());
            }
        }
        let mut child = std::process::Command::new(daemon_binary())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn blit-daemon");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let mut err = child.stderr.take().unwrap();
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the daemon never writes into a closed pipe.
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "blit-daemon {args:?} printed no listening line; stderr:\n{}",
                    String::from_utf8_lossy(&stderr.lock().unwrap())
                );
            }
        };
        let port = first
            .strip_prefix("blit-daemon listening on 127.0.0.1:")
            .and_then(|p| p.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("unexpected first line from blit-daemon: {first:?}"));
        let id = NEXT_DAEMON.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut ports = PLAIN_PORTS.lock().unwrap();
            ports.retain(|&(p, _)| p != port);
            if plain {
                ports.push((port, id));
            }
        }
        TRUSTED_PORTS.lock().unwrap().retain(|&(p, _)| p != port);
        Daemon {
            child,
            port,
            id,
            stderr,
            _config: config,
        }
    }

    /// `blit://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("blit://127.0.0.1:{}", self.port)
    }

    /// `blit://127.0.0.1:PORT/MODULE[/PATH]`; a `path` ending in `/` keeps its slash.
    pub fn url(&self, module: &str, path: &str) -> String {
        if path.is_empty() {
            format!("{}/{module}", self.base())
        } else {
            format!("{}/{module}/{path}", self.base())
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The daemon is still running and has not panicked in any session.
    pub fn assert_healthy(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(50));
            panic!("blit-daemon exited ({status}); stderr:\n{}", self.stderr());
        }
        let err = self.stderr();
        assert!(!err.contains("panicked"), "blit-daemon panicked:\n{err}");
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for ports in [&PLAIN_PORTS, &TRUSTED_PORTS] {
            ports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|&(_, id)| id != self.id);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running the client
// ---------------------------------------------------------------------------------------------

/// Arguments from a mix of strings, URLs and (possibly non-UTF-8) paths.
pub fn argv(parts: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

/// A blit command trusting the tests' daemons through the shared known_hosts, with `--no-tls`
/// when it talks to a plain daemon. Aimed at a daemon serving trusted modules (see
/// [`Module::trusted`]) it sends the fixture's token and, pulling from one, takes its metadata
/// as sent (`--trust-metadata`), as a root restore would; otherwise no token unless a test
/// sets one.
pub fn client<I, S>(args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut args: Vec<OsString> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let aimed_at = |ports: &Mutex<Vec<(u16, u64)>>, a: &OsString| {
        ports.lock().unwrap().iter().any(|(p, _)| {
            let url = format!("blit://127.0.0.1:{p}");
            a.to_str()
                .is_some_and(|s| s == url || s.starts_with(&format!("{url}/")))
        })
    };
    let to_plain = args.iter().any(|a| aimed_at(&PLAIN_PORTS, a));
    let to_trusted = args.iter().any(|a| aimed_at(&TRUSTED_PORTS, a));
    let transfer = args
        .first()
        .is_some_and(|v| ["copy", "mirror", "move"].iter().any(|t| v == t));
    let pull_from_trusted =
        transfer && args.len() >= 3 && aimed_at(&TRUSTED_PORTS, &args[args.len() - 2]);
    if to_plain && !args.is_empty() {
        args.insert(1, "--no-tls".into());
    }
    if pull_from_trusted {
        args.insert(1, "--trust-metadata".into());
    }
    let mut cmd = blit();
    cmd.args(args).env("BLIT_KNOWN_HOSTS", known_hosts());
    if to_trusted {
        cmd.env("BLIT_TOKEN", FIXTURE_TOKEN);
    } else {
        cmd.env_remove("BLIT_TOKEN");
    }
    cmd
}

pub fn finish_remote(cmd: std::process::Command) -> Assert {
    let mut cmd = assert_cmd::Command::from_std(cmd);
    cmd.timeout(REMOTE_TIMEOUT);
    cmd.assert()
}

/// Runs blit to completion (or [`REMOTE_TIMEOUT`]).
pub fn go(args: Vec<OsString>) -> Assert {
    finish_remote(client(args))
}

/// Runs blit with `BLIT_TOKEN` set.
pub fn go_with_token(args: Vec<OsString>, token: &str) -> Assert {
    let mut cmd = client(args);
    cmd.env("BLIT_TOKEN", token);
    finish_remote(cmd)
}

/// Runs blit with `input` on its standard input.
pub fn go_with_stdin(args: Vec<OsString>, input: &str) -> Assert {
    let mut cmd = assert_cmd::Command::from_std(client(args));
    cmd.timeout(REMOTE_TIMEOUT).write_stdin(input.as_bytes());
    cmd.assert()
}

/// Exit 2 (refused before anything changed) with `needle` in the message.
pub fn expect_refused(a: &Assert, needle: &str) {
    expect_code(a, 2);
    let err = stderr_of(a);
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "stderr does not mention {needle:?}:\n{err}"
    );
}

/// A raw session: preamble, then a hello; returns the stream and the daemon's answer.
pub fn raw_hello(d: &Daemon, hello: Hello) -> (TcpStream, Msg) {
    raw_hello_to(&d.addr(), hello)
}

/// [`raw_hello`] to a daemon known only by its address (from a process of its own).
pub fn raw_hello_to(addr: &str, hello: Hello) -> (TcpStream, Msg) {
    let mut s = raw_connect_to(addr);
    wire::write_client_preamble(&mut s, false).unwrap();
    assert_eq!(
        wire::read_server_preamble(&mut s).unwrap(),
        (wire::VERSION, false)
    );
    s.write_all(&wire::encode_msg(&Msg::Hello(hello)).unwrap())
        .unwrap();
    let answer = match wire::read_frame(&mut s).unwrap() {
        Some(Frame::Msg(m)) => *m,
        other => panic!("no answer to the hello: {other:?}"),
    };
    (s, answer)
}

/// A pull's hello, with the fixture's token (which a module without a token ignores).
pub fn pull_hello(module: &str, path: &[u8]) -> Hello {
    Hello {
        module: module.into(),
        path: path.to_vec(),
        token: Some(FIXTURE_TOKEN.into()),
        role: Role::Pull,
    }
}

/// Sends one request on a pull session and collects the data frames and the final reply.
pub fn raw_request(s: &mut TcpStream, id: u32, req: Req) -> (Vec<u8>, Rep) {
    s.write_all(&wire::encode_msg(&Msg::Req { id, req }).unwrap())
        .unwrap();
    let mut data = Vec::new();
    loop {
        match wire::read_frame(s).expect("read a reply") {
            Some(Frame::Data { id: i, data: d, .. }) if i == id => data.extend_from_slice(&d),
            Some(Frame::Msg(m)) if matches!(&*m, Msg::Rep { id: i, .. } if *i == id) => {
                let Msg::Rep { rep, .. } = *m else {
                    unreachable!()
                };
                if let Rep::Entries { last: false, .. } = rep {
                    continue;
                }
                return (data, rep);
            }
            Some(other) => panic!("unexpected frame: {other:?}"),
            None => panic!("the daemon hung up instead of replying"),
        }
    }
}

pub fn wire_entry(name: &[u8], kind: Kind, size: u64, ino: u64) -> WireEntry {
    WireEntry {
        name: name.to_vec(),
        kind,
        size,
        mtime_sec: 1_600_000_000,
        mtime_nsec: 7,
        perm: if kind == Kind::Dir { 0o755 } else { 0o644 },
        dev: 1,
        ino,
        nlink: 1,
        ..WireEntry::default()
    }
}

/// The job of a raw client's push of a folder `src` into `m/landing`, over one connection,
/// without events.
pub fn raw_push_job(mode: Mode, resume: bool) -> PushJob {
    PushJob {
        opts: Options::new(mode).force(true).resume(resume),
        events: false,
        progress: false,
        src: wire_entry(b"src", Kind::Dir, 4096, 1),
        into: false,
        src_shown: "src".into(),
        dst_shown: "m/landing".into(),
        streams: 1,
    }
}

/// Opens a push of a source folder into `m/landing` as a raw client
/// would, striped over `streams` connections, and returns the socket once it is welcomed; the
/// caller answers the daemon's requests.
pub fn raw_push(d: &Daemon, mode: Mode, streams: u8) -> TcpStream {
    let job = PushJob {
        events: true,
        streams,
        ..raw_push_job(mode, false)
    };
    let hello = Hello {
        module: "m".into(),
        path: b"landing".to_vec(),
        token: Some(FIXTURE_TOKEN.into()),
        role: Role::Push(Box::new(job)),
    };
    let (s, answer) = raw_hello(d, hello);
    assert_eq!(answer, Msg::Welcome(None));
    s
}

/// Plays the source side of a raw push: answers each of the daemon's requests with `answer`
/// (which may send data frames first) until the daemon finishes. Returns its totals, or `None`
/// if it hung up without finishing.
pub fn serve_push(
    s: &mut TcpStream,
    mut answer: impl FnMut(&mut TcpStream, u32, Req) -> Rep,
) -> Option<Finished> {
    while let Some(frame) = wire::read_frame(s).expect("read from the daemon") {
        let Frame::Msg(msg) = frame else {
            panic!("the daemon sent file data on a push")
        };
        match *msg {
            Msg::Req { id, req } => {
                let rep = answer(s, id, req);
                s.write_all(&wire::encode_msg(&Msg::Rep { id, rep }).unwrap())
                    .unwrap();
            }
            Msg::Finished(f) => return Some(f),
            _ => {}
        }
    }
    None
}

/// Sends `data` as the file data of request `id`, from offset `at`.
pub fn send_data(s: &mut TcpStream, id: u32, at: u64, data: &[u8]) {
    for (i, chunk) in data.chunks(wire::DATA_CHUNK).enumerate() {
        let mut f = wire::data_header(id, at + (i * wire::DATA_CHUNK) as u64, chunk.len()).to_vec();
        f.extend_from_slice(chunk);
        s.write_all(&f).unwrap();
    }
}

pub fn raw_connect(d: &Daemon) -> TcpStream {
    raw_connect_to(&d.addr())
}

pub fn raw_connect_to(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the daemon");
    s.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
    s
}

/// Reads until the daemon hangs up; panics if it neither hangs up nor stops within the timeout.
/// Returns what it sent before.
pub fn until_hangup(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                return got
            }
            Err(e) => panic!(
                "{what}: the daemon kept the connection open ({e} after {:?})",
                start.elapsed()
            ),
        }
    }
}

/// A valid preamble, answered with the daemon's.
pub fn preamble(d: &Daemon) -> TcpStream {
    let mut s = raw_connect(d);
    wire::write_client_preamble(&mut s, false).unwrap();
    let mut answer = [0u8; 7];
    s.read_exact(&mut answer).unwrap();
    let mut want = b"BLIT".to_vec();
    want.extend_from_slice(&wire::VERSION.to_le_bytes());
    want.push(0);
    assert_eq!(&answer[..], &want[..]);
    s
}

pub fn frame_header(len: u32, kind: u8) -> Vec<u8> {
    let mut h = len.to_le_bytes().to_vec();
    h.push(kind);
    h
}

/// Plays a hostile daemon for `conns` connections, one after the other: takes each hello and
/// welcomes it with `welcome`, then answers every request with `answer` until the client hangs
/// up. Later connections are refused.
pub fn fake_daemon(
    conns: usize,
    welcome: Msg,
    mut answer: impl FnMut(&mut TcpStream, u32, Req) -> Option<Rep> + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        for _ in 0..conns {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(REMOTE_TIMEOUT)).unwrap();
            let (version, _) = wire::read_client_preamble(&mut s).unwrap();
            wire::write_server_preamble(&mut s, version, false).unwrap();
            let Ok(Some(Frame::Msg(_hello))) = wire::read_frame(&mut s) else {
                return;
            };
            s.write_all(&wire::encode_msg(&welcome).unwrap()).unwrap();
            while let Ok(Some(Frame::Msg(m))) = wire::read_frame(&mut s) {
                if let Msg::Req { id, req } = *m {
                    if let Some(rep) = answer(&mut s, id, req) {
                        let _ = s.write_all(&wire::encode_msg(&Msg::Rep { id, rep }).unwrap());
                    }
                }
            }
        }
    });
    (port, t)
}

/// A blit command aimed at a fake daemon (`m{path}` on it, then `after`): plain TCP, no token.
pub fn fake_client(args: &[&str], port: u16, path: &str, after: &[&OsStr]) -> Assert {
    let mut c = blit();
    c.args(args)
        .arg("--no-tls")
        .arg(format!("blit://127.0.0.1:{port}/m{path}"))
        .args(after)
        .env_remove("BLIT_TOKEN")
        .env("BLIT_KNOWN_HOSTS", known_hosts());
    finish_remote(c)
}

/// The daemon's resident memory, from /proc.
pub fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}
