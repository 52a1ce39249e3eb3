//! `blit`: the command line. It parses arguments, wires Ctrl-C to cancellation, prints what the
//! engine reports, and maps the outcome to an exit code. All logic lives in `blit-core`.

#![forbid(unsafe_code)]

mod admin;
mod args;
mod output;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use args::{Cli, Command, TransferArgs};
use blit_core::remote::Access;
use blit_core::{CancelToken, Endpoint, Job, Mode, Options};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Copy(a) => transfer(Mode::Copy, a),
        Command::Mirror(a) => transfer(Mode::Mirror, a),
        Command::Move(a) => transfer(Mode::Move, a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "blit", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match render_man(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("blit: man: {e}");
                ExitCode::from(2)
            }
        },
        other => admin::run(other),
    }
}

/// A command-line path: a `blit://` URL, or a local path (any bytes).
fn endpoint(arg: &std::path::Path) -> anyhow::Result<Endpoint> {
    match arg.to_str() {
        Some(s) => Endpoint::parse(s).map_err(anyhow::Error::msg),
        // Not UTF-8: no URL, a local path.
        None => Ok(Endpoint::Local(arg.to_path_buf())),
    }
}

/// A remote module's secret: `--token-file`, else `BLIT_TOKEN`.
pub fn token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(f) = file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("token file {}: {e}", f.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    Ok(std::env::var("BLIT_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The main page, then the synopsis and options of each transfer verb, so that every option is
/// documented in one page.
fn render_man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = Cli::command();
    clap_mangen::Man::new(cmd.clone()).render(out)?;
    for (name, title) in [
        ("copy", "blit copy"),
        ("mirror", "blit mirror"),
        ("move", "blit move"),
    ] {
        if let Some(sub) = cmd.find_subcommand(name) {
            let sub = sub.clone().name(title);
            let man = clap_mangen::Man::new(sub);
            man.render_synopsis_section(out)?;
            man.render_options_section(out)?;
        }
    }
    Ok(())
}

fn transfer(mode: Mode, a: TransferArgs) -> ExitCode {
    match run_transfer(mode, a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("blit: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_transfer(mode: Mode, a: TransferArgs) -> anyhow::Result<u8> {
    let cancel = CancelToken::new();
    install_interrupt_handler(cancel.clone());
    blit_sys::raise_fd_limit();
    if let Some(mib) = a.max_memory {
        blit_core::budget::set_process_cap((mib as usize) << 20);
    }

    let mut excludes = a.exclude.clone();
    for file in &a.exclude_from {
        excludes.extend(blit_core::filter::Filter::read_pattern_file(file)?);
    }
    let opts = Options::new(mode)
        .dry_run(a.dry_run)
        .checksum(a.checksum)
        .excludes(excludes)
        .includes(a.include.clone())
        .max_delete(a.max_delete)
        .delete_after(a.delete_after)
        .workers(a.workers.map(|w| w as u32))
        .fsync(a.fsync)
        .verify(a.verify)
        .no_xattrs(a.no_xattrs)
        .force(a.force)
        .resume(a.resume);
    let access = Access {
        token: token(a.remote.token_file.as_deref())?,
        plain: a.remote.no_tls,
        fingerprint: a.remote.tls_fingerprint.clone(),
        streams: a.streams.map(usize::from),
        trust_metadata: a.trust_metadata,
        notify: Some(output::notices()),
    };
    let printer = output::Printer::new(&a);
    let (src, dst) = (endpoint(&a.src)?, endpoint(&a.dst)?);
    if a.trust_metadata && !matches!(src, Endpoint::Remote(_)) {
        anyhow::bail!(
            "--trust-metadata applies to a pull from a daemon (a push keeps what the daemon's \
             module allows; a local run keeps everything)"
        );
    }
    let job = Job::new(src, dst, opts)
        .with_access(access)
        .with_cancel(cancel);
    let summary = job.run(&printer)?;
    printer.finish(&summary);
    Ok(output::exit_code(&summary))
}

/// First Ctrl-C (or SIGTERM) asks the engine to stop cleanly, removing its temporaries; a second
/// one exits at once (temporaries left then are removed by the next run).
fn install_interrupt_handler(cancel: CancelToken) {
    let _ = ctrlc::set_handler(move || {
        if cancel.is_cancelled() {
            std::process::exit(130);
        }
        cancel.cancel();
    });
}
