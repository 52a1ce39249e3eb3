//! The listener: accepts clients, enforces the session limit, and runs each session.

use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::Arc;

use clap::Parser;

use crate::config;

#[derive(Parser, Debug)]
#[command(
    name = "blit-daemon",
    version,
    about = "Serve folders (modules) to remote blit clients"
)]
struct Args {
    /// TOML configuration (listen address, limits, [[module]] tables)
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on (default 127.0.0.1:9031; port 0 picks a free port)
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,
    /// Serve PATH as module NAME, writable and without a token; as root, its sessions act as
    /// nobody:nogroup (so PATH must be theirs to write). Repeatable; other options need --config
    /// (see docs/SECURITY.md)
    #[arg(long, value_name = "NAME=PATH", value_parser = config::parse_module)]
    module: Vec<config::ModuleFile>,
    /// Serve plain TCP, without TLS (clients then need --no-tls)
    #[arg(long)]
    no_tls: bool,
    /// PEM certificate (chain) for TLS; without it a self-signed one is made and kept
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Folder keeping the self-signed identity (default /var/lib/blit-daemon as root)
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<std::path::PathBuf>,
}

pub fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut file = match &args.config {
        Some(p) => config::load(p)?,
        None => config::File::default(),
    };
    file.modules.extend(args.module);
    if args.no_tls {
        file.tls = Some(false);
    }
    if args.tls_cert.is_some() {
        (file.tls_cert, file.tls_key) = (args.tls_cert, args.tls_key);
    }
    if args.tls_dir.is_some() {
        file.tls_dir = args.tls_dir;
    }
    let cfg = config::build(file, args.listen)?;
    // Deep trees and many sessions hold many folders open at once.
    blit_sys::raise_fd_limit();
    let listener = TcpListener::bind(&cfg.listen)
        .map_err(|e| anyhow::anyhow!("listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    warn_if_exposed(addr.ip(), &cfg.settings.modules);
    // The first line on stdout says where to connect (tests and scripts read it).
    match &cfg.settings.tls {
        Some(t) => println!(
            "blit-daemon listening on {addr} (TLS, certificate fingerprint {})",
            t.fingerprint
        ),
        None => println!("blit-daemon listening on {addr} (plain TCP, no TLS)"),
    }
    let settings = Arc::new(cfg.settings);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("blit-daemon: accept: {e}");
                continue;
            }
        };
        let settings = Arc::clone(&settings);
        // A thread per connection: what an opening connection may hold is capped by the gate
        // (per address and in all), what a session may, by `max_connections`.
        let spawned = std::thread::Builder::new()
            .name("session".into())
            .spawn(move || serve(stream, &settings));
        if let Err(e) = spawned {
            // Out of threads: this connection is dropped; the daemon goes on.
            eprintln!("blit-daemon: cannot start a session: {e}");
        }
    }
    Ok(())
}

fn serve(stream: TcpStream, settings: &blit_core::remote::server::Settings) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    if let Err(e) = blit_core::remote::server::session(stream, settings) {
        eprintln!(
            "blit-daemon: {peer}: {}",
            blit_core::names::escape_text(&e.to_string())
        );
    }
}

/// An open, writable module lets anyone who can connect write there: on the loopback, every
/// local user.
fn warn_if_exposed(ip: IpAddr, modules: &[blit_core::remote::server::Module]) {
    let who = if ip.is_loopback() {
        "every local user".to_string()
    } else {
        format!("anyone who can reach {ip}")
    };
    for m in modules {
        if m.token.is_none() && !m.read_only {
            eprintln!(
                "blit-daemon: warning: module {:?} is writable by {who} (no token_file)",
                m.name
            );
        }
    }
}
