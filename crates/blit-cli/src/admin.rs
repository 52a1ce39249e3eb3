//! The remote admin verbs: one question to a daemon, its answer printed as a table or JSON.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use blit_core::names::escape_text;
use blit_core::remote::client::{self, shown_name};
use blit_core::remote::url::RemoteUrl;
use blit_core::remote::wire::{AdminRep, AdminReq};
use serde_json::json;

use crate::args::{AdminArgs, Command};

pub fn run(cmd: Command) -> ExitCode {
    match ask(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("blit: {e}");
            ExitCode::from(2)
        }
    }
}

fn ask(cmd: Command) -> anyhow::Result<ExitCode> {
    let (common, req) = match cmd {
        Command::ListModules(a) => (a, AdminReq::ListModules),
        Command::Ls(a) => (a, AdminReq::List { after: None }),
        Command::Du(a) => (a, AdminReq::Usage),
        Command::Df(a) => (a, AdminReq::Space),
        Command::Find { common, name } => (common, AdminReq::Find(name)),
        Command::Rm { common, yes } => {
            if !yes && !confirm(&common.url)? {
                eprintln!("blit: rm: nothing removed");
                return Ok(ExitCode::from(1));
            }
            (common, AdminReq::Remove)
        }
        _ => unreachable!("transfer verbs are handled in main"),
    };
    let url = parse(&common)?;
    if url.module.is_empty() && req != AdminReq::ListModules {
        anyhow::bail!("{}: name a module (blit://HOST/MODULE/PATH)", common.url);
    }
    let access = client::Access {
        token: crate::token(common.remote.token_file.as_deref())?,
        plain: common.remote.no_tls,
        fingerprint: common.remote.tls_fingerprint.clone(),
        notify: Some(crate::output::notices()),
        ..client::Access::default()
    };
    let rep = client::admin(&url, req, &access)?;
    print(&rep, common.json);
    if let AdminRep::Entries {
        entries,
        more: true,
    } = &rep
    {
        eprintln!(
            "blit: stopped after {} entries (the daemon's limit); narrow the search",
            entries.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse(a: &AdminArgs) -> anyhow::Result<RemoteUrl> {
    match RemoteUrl::parse(&a.url) {
        Some(r) => r.map_err(anyhow::Error::msg),
        None => anyhow::bail!("{}: expected blit://HOST[:PORT]/MODULE/PATH", a.url),
    }
}

fn confirm(url: &str) -> anyhow::Result<bool> {
    eprint!("blit: remove {url} and everything in it? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn print(rep: &AdminRep, as_json: bool) {
    let value = match rep {
        AdminRep::Modules(list) => {
            if !as_json {
                for m in list {
                    let mut flags = Vec::new();
                    if m.read_only {
                        flags.push("read-only");
                    }
                    if m.needs_token {
                        flags.push("token");
                    }
                    println!("{}\t{}", escape_text(&m.name), flags.join(","));
                }
                return;
            }
            json!(list
                .iter()
                .map(|m| json!({"name": m.name, "read_only": m.read_only, "needs_token": m.needs_token}))
                .collect::<Vec<_>>())
        }
        AdminRep::Entries { entries: list, .. } => {
            if !as_json {
                for (name, e) in list {
                    println!(
                        "{}\t{:o}\t{}\t{}.{:09}\t{}",
                        e.kind.label(),
                        e.perm,
                        e.size,
                        e.mtime_sec,
                        e.mtime_nsec,
                        shown_name(name)
                    );
                }
                return;
            }
            json!(list
                .iter()
                .map(|(name, e)| json!({
                    "name": shown_name(name),
                    "kind": e.kind.label(),
                    "size": e.size,
                    "mode": e.perm,
                    "mtime": e.mtime_sec,
                    "mtime_nsec": e.mtime_nsec,
                }))
                .collect::<Vec<_>>())
        }
        AdminRep::Usage { files, dirs, bytes } => {
            if !as_json {
                println!("{bytes} bytes\t{files} files\t{dirs} folders");
                return;
            }
            json!({"bytes": bytes, "files": files, "folders": dirs})
        }
        AdminRep::Space {
            total,
            free,
            available,
        } => {
            if !as_json {
                println!("total {total}\tfree {free}\tavailable {available}");
                return;
            }
            json!({"total": total, "free": free, "available": available})
        }
        AdminRep::Removed { entries } => {
            if !as_json {
                println!("removed {entries} entries");
                return;
            }
            json!({"removed": entries})
        }
        AdminRep::Error(e) => json!({"error": blit_core::names::escape_text(&e.message)}),
    };
    println!("{value}");
}
