//! Everything `blit` prints: itemized lines (`-v`), errors as they happen, a progress bar on a
//! terminal, and the closing summary (a line, or one JSON object with `--json`).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use blit_core::entry::Kind;
use blit_core::names::escape_rel;
use blit_core::report::{Event, Observer, Summary};
use blit_core::Error;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::TransferArgs;

pub struct Printer {
    verbose: u8,
    quiet: bool,
    json: bool,
    stats: bool,
    bar: Option<ProgressBar>,
    /// Serialises stdout lines from worker threads.
    out: Mutex<()>,
}

impl Printer {
    pub fn new(a: &TransferArgs) -> Self {
        let show_bar = !a.quiet
            && !a.no_progress
            && (a.progress || std::io::stderr().is_terminal())
            && !a.dry_run;
        let bar = show_bar.then(|| {
            let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb
        });
        Printer {
            verbose: a.verbose,
            quiet: a.quiet,
            json: a.json,
            stats: a.stats || a.verbose >= 2,
            bar,
            out: Mutex::new(()),
        }
    }

    fn line(&self, to_stderr: bool, text: &str) {
        let _guard = self.out.lock();
        let print = || {
            if to_stderr {
                eprintln!("{text}");
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        };
        match &self.bar {
            Some(pb) => pb.suspend(print),
            None => print(),
        }
    }

    pub fn finish(&self, s: &Summary) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
        if self.json {
            /// The summary and the exit code the run ends with, as one JSON object.
            #[derive(serde::Serialize)]
            struct Report<'s> {
                #[serde(flatten)]
                summary: &'s Summary,
                exit_code: u8,
            }
            let report = Report {
                summary: s,
                exit_code: exit_code(s),
            };
            let text =
                serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            println!("{text}");
        } else if !self.quiet {
            let a = &s.actions;
            let mib = (a.create.bytes + a.update.bytes) as f64 / (1024.0 * 1024.0);
            eprintln!(
                "{}{}: {} created, {} updated, {} metadata, {} deleted, {} linked, {} unchanged; {:.1} MiB in {:.2} s{}{}",
                s.mode,
                if s.dry_run { " (dry run)" } else { "" },
                a.create.count,
                a.update.count,
                a.metadata.count,
                a.delete.count,
                a.link.count,
                s.unchanged,
                mib,
                s.elapsed_secs,
                if s.failures.is_empty() {
                    String::new()
                } else {
                    format!("; {} failed", s.failures.len())
                },
                if s.interrupted { "; interrupted" } else { "" },
            );
        }
        if self.stats {
            eprint!("{}", stats_text(&s.stats));
        }
    }
}

impl Observer for Printer {
    /// Per-entry events are printed with `-v` only.
    fn wants_events(&self) -> bool {
        self.verbose > 0 && !self.quiet
    }

    /// Byte counts feed the progress bar only.
    fn wants_progress(&self) -> bool {
        self.bar.is_some()
    }

    fn found(&self, bytes: u64) {
        if let Some(pb) = &self.bar {
            pb.inc_length(bytes);
        }
    }

    fn event(&self, e: &Event<'_>) {
        if self.verbose == 0 {
            return;
        }
        let slash = if e.kind == Kind::Dir && !e.rel.as_os_str().is_empty() {
            "/"
        } else {
            ""
        };
        let path = if e.rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            escape_rel(e.rel)
        };
        let text = format!("{} {}{} [{}]", e.action.symbol(), path, slash, e.reason);
        // With --json, stdout carries only the JSON object.
        self.line(self.json, &text);
    }

    fn failure(&self, error: &Error) {
        self.line(true, &format!("blit: {error}"));
    }

    fn progress(&self, bytes: u64) {
        if let Some(pb) = &self.bar {
            pb.inc(bytes);
        }
    }
}

/// `--stats`: workers, wall time per phase, worker time per activity, copy paths per class of
/// entry, and the copy's buffer sizes.
fn stats_text(st: &blit_core::report::Stats) -> String {
    let seconds = |m: &std::collections::BTreeMap<&'static str, f64>, order: &[&str]| {
        let mut parts: Vec<String> = order
            .iter()
            .filter_map(|k| m.get(k).map(|v| format!("{k} {v:.3}s")))
            .collect();
        if parts.is_empty() {
            parts.push("not reported (a push: the daemon ran this part)".into());
        }
        parts.join(", ")
    };
    let paths: Vec<String> = st.methods.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut out = format!(
        "stats: workers {}; entries src {} dst {}\n",
        st.workers, st.source_entries, st.dest_entries
    );
    out += &format!(
        "stats: phases (wall): {}\n",
        seconds(
            &st.phases,
            &["sync", "links", "release", "delete", "metadata", "remove"]
        )
    );
    out += &format!(
        "stats: sync phase (worker seconds): {}\n",
        seconds(&st.busy, &["walk", "plan", "copy", "delete"])
    );
    out += &format!(
        "stats: copy paths: {}\n",
        if paths.is_empty() {
            "none".into()
        } else {
            paths.join(", ")
        }
    );
    if st.read_buffer > 0 {
        out += &format!(
            "stats: buffers: userspace copy up to {} KiB, in-kernel copy calls of {} MiB; a file \
             is copied by one worker\n",
            st.read_buffer >> 10,
            st.kernel_chunk >> 20
        );
    }
    out
}

/// Notices about a connection (a certificate trusted on first use), on stderr.
pub fn notices() -> blit_core::remote::client::Notify {
    blit_core::remote::client::Notify(std::sync::Arc::new(|text: &str| eprintln!("blit: {text}")))
}

/// 0 all done, 1 some entries failed, 130 interrupted (as a shell reports SIGINT); a run refused
/// before it started exits 2 (see `main`).
pub fn exit_code(s: &Summary) -> u8 {
    if s.interrupted {
        130
    } else if s.failures.is_empty() {
        0
    } else {
        1
    }
}
