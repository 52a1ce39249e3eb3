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
