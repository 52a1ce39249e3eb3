//! `blit-daemon`: serves modules (named folders) to `blit` clients over TCP. One thread per
//! session; each session's work runs on its own small pool (see `blit_core::remote`). It runs on
//! Linux, where the kernel resolves client paths beneath a module (`openat2`).

#![forbid(unsafe_code)]

#[cfg(target_os = "linux")]
mod config;
#[cfg(target_os = "linux")]
mod daemon;

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blit-daemon: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(target_os = "linux")]
fn run() -> anyhow::Result<()> {
    daemon::run()
}

#[cfg(not(target_os = "linux"))]
fn run() -> anyhow::Result<()> {
    anyhow::bail!("blit-daemon runs on Linux only (clients run everywhere)")
}
