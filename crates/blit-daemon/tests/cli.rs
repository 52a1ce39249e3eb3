//! `blit-daemon`'s command line and configuration: what it refuses to start with, and the
//! listening line it prints. (Sessions are tested end to end from the client, in
//! `crates/blit-cli/tests/remote.rs`; this test binary also makes `cargo test --workspace` build
//! the daemon those tests run.)

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const DAEMON: &str = env!("CARGO_BIN_EXE_blit-daemon");

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "blit-daemon-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.join(rel);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let p = self.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a daemon that must refuse to start; kills it if it starts anyway.
fn refused(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(DAEMON)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "blit-daemon {args:?} started instead of refusing; stdout:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn expect_refusal(args: &[&std::ffi::OsStr], needle: &str) {
    let out = refused(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: {}\n{err}",
        out.status
    );
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{err}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed a listening line");
}

fn config(s: &Scratch, text: &str) -> PathBuf {
    s.write("blit-daemon.toml", text)
}

fn os(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

#[test]
fn refuses_to_start_without_modules() {
    expect_refusal(&["--listen".as_ref(), "127.0.0.1:0".as_ref()], "no modules");
}

#[test]
fn refuses_bad_module_arguments() {
    let s = Scratch::new();
    let file = s.write("a-file", "x");
    let missing = s.join("missing");
    expect_refusal(
        &["--module".as_ref(), "no-equals-sign".as_ref()],
        "NAME=PATH",
    );
    let arg = format!("m={}", missing.display());
    expect_refusal(&["--module".as_ref(), arg.as_ref()], "\"m\"");
    let arg = format!("m={}", file.display());
    expect_refusal(&["--module".as_ref(), arg.as_ref()], "not a folder");
    let dir = s.dir("d");
    let arg = format!("m={}", dir.display());
    expect_refusal(
        &[
            "--module".as_ref(),
            arg.as_ref(),
            "--module".as_ref(),
            arg.as_ref(),
        ],
        "defined twice",
    );
    let arg = format!("a/b={}", dir.display());
    expect_refusal(&["--module".as_ref(), arg.as_ref()], "no '/'");
    let arg = format!("={}", dir.display());
    expect_refusal(&["--module".as_ref(), arg.as_ref()], "non-empty");
}

#[test]
fn refuses_bad_configurations() {
    let s = Scratch::new();
    let dir = s.dir("served");
    let empty_token = s.write("empty-token", "  \n");
    let cases = [
        (
            format!("[[module]]\nname = \"m\"\npath = {:?}\nsurprise = 1\n", dir),
            "surprise",
        ),
        (
            format!(
                "[[module]]\nname = \"m\"\npath = {:?}\ntoken_file = {:?}\n",
                dir, empty_token
            ),
            "is empty",
        ),
        (
            format!(
                "[[module]]\nname = \"m\"\npath = {:?}\ntoken_file = {:?}\n",
                dir,
                s.join("no-such-token")
            ),
            "token file",
        ),
        (
            "listen = [\"not toml for an address\"\n".to_string(),
            "config",
        ),
        ("max_connections = 4\n".to_string(), "no modules"),
    ];
    for (text, needle) in cases {
        let cfg = config(&s, &text);
        expect_refusal(&["--config".as_ref(), os(&cfg)], needle);
    }
    expect_refusal(
        &["--config".as_ref(), os(&s.join("no-such-config.toml"))],
        "reading config",
    );
}

#[test]
fn refuses_an_address_it_cannot_listen_on() {
    let s = Scratch::new();
    let dir = s.dir("served");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let arg = format!("m={}", dir.display());
    expect_refusal(
        &[
            "--listen".as_ref(),
            addr.as_ref(),
            "--module".as_ref(),
            arg.as_ref(),
            "--no-tls".as_ref(),
        ],
        "listen on",
    );
}

#[test]
fn prints_where_it_listens_first() {
    let s = Scratch::new();
    let dir = s.dir("served");
    let cfg = config(
        &s,
        &format!(
            "listen = \"127.0.0.1:1\"\nidle_timeout = 5\nmax_connections = 2\n\
             [[module]]\nname = \"m\"\npath = {dir:?}\nread_only = true\n"
        ),
    );
    // --listen overrides the file's address.
    let mut child = Command::new(DAEMON)
        .args([
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--config".as_ref(),
            os(&cfg),
            "--tls-dir".as_ref(),
            os(&s.join("tls")),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no listening line");
    let port = line
        .trim_end()
        .strip_prefix("blit-daemon listening on 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = port.parse().unwrap();
    assert!(
        line.contains("TLS, certificate fingerprint "),
        "the listening line does not give the fingerprint: {line:?}"
    );
    assert_ne!(port, 0);
    assert_ne!(port, 1);
}

/// What a module trusts clients with is checked before the daemon starts: a session run as
/// root, or a module keeping privileged metadata, needs a token; owners, devices and system
/// xattrs can only be kept by root sessions (or in attributes, with fake super); `keep` takes
/// known names only.
#[test]
fn refuses_modules_that_would_trust_anyone_with_root() {
    let s = Scratch::new();
    let dir = s.dir("served");
    let token = s.write("token", "secret\n");
    let module = |lines: &str| format!("[[module]]\nname = \"m\"\npath = {dir:?}\n{lines}\n");
    let cases = [
        ("uid = \"root\"", "needs a token_file"),
        ("keep = [\"setid\"]", "needs a token_file"),
        ("keep = [\"all\"]", "needs sessions run as root"),
        ("keep = [\"everything\"]", "not one of"),
        (
            &format!("keep = [\"owner\"]\ntoken_file = {token:?}") as &str,
            "needs sessions run as root",
        ),
        (
            &format!("keep = [\"devices\"]\nuid = \"nobody\"\ntoken_file = {token:?}"),
            "needs sessions run as root",
        ),
        ("fake_super = true\nkeep = [\"setid\"]", "drop `keep`"),
        ("uid = \"no-such-user-here\"", "no user named"),
        ("gid = \"no-such-group-here\"", "no group named"),
    ];
    for (lines, needle) in cases {
        let cfg = config(&s, &module(lines));
        expect_refusal(&["--config".as_ref(), os(&cfg)], needle);
    }
    // Allowed: root sessions keeping everything behind a token; fake super without one.
    for lines in [
        format!("uid = \"root\"\nkeep = [\"all\"]\ntoken_file = {token:?}"),
        "fake_super = true".to_string(),
        "uid = \"nobody\"\ngid = \"nogroup\"\nkeep = [\"setid\"]\ntoken_file = ".to_string()
            + &format!("{token:?}"),
    ] {
        let cfg = config(&s, &module(&lines));
        let mut child = Command::new(DAEMON)
            .args(["--listen", "127.0.0.1:0", "--no-tls", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        assert!(
            line.starts_with("blit-daemon listening on"),
            "{lines}: did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A daemon that is not root cannot act as another user, and says so instead of serving as
/// itself under another's name.
#[test]
fn a_daemon_not_run_as_root_refuses_another_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !runs_as_root() {
        return;
    }
    let s = Scratch::new();
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = s.dir("served");
    let bin = s.join("blit-daemon-bin");
    // A link, not a copy: a copy's open descriptor, inherited by a process another test thread
    // forks at that moment, would make starting it fail as "text file busy".
    if std::fs::hard_link(DAEMON, &bin).is_err() {
        std::fs::copy(DAEMON, &bin).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config(
        &s,
        &format!("[[module]]\nname = \"m\"\npath = {dir:?}\nuid = \"root\"\n"),
    );
    let out = (0..20)
        .find_map(|_| {
            let run = Command::new(&bin)
                .args(["--listen", "127.0.0.1:0", "--no-tls", "--config"])
                .arg(&cfg)
                .uid(65534)
                .gid(65534)
                .stdin(Stdio::null())
                .output();
            match run {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(50));
                    None
                }
                other => Some(other.unwrap()),
            }
        })
        .expect("the daemon's copy stayed busy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("only a daemon run as root"), "{err}");
}

/// Whether this test runs as root (the test above needs to drop to `nobody`).
fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
