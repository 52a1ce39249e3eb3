//! The daemon's settings: a TOML file, or the quick form on the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<String>,
    /// Sessions served at once; more are refused with a message.
    pub max_connections: Option<usize>,
    /// Seconds a session may stay silent before it is closed.
    pub idle_timeout: Option<u64>,
    /// Worker threads per session.
    pub workers: Option<usize>,
    /// TLS on every session (default true); `false` serves plain TCP.
    pub tls: Option<bool>,
    /// PEM certificate chain and private key; without them a self-signed certificate is made
    /// once and kept in `tls_dir`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_dir: Option<PathBuf>,
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleFile {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    pub token_file: Option<PathBuf>,
}

pub struct Config {
    pub listen: String,
    pub max_connections: usize,
    pub settings: blit_core::remote::server::Settings,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9031";

pub fn load(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

/// Checks every module (a readable folder, a unique name, a non-empty token) before serving.
pub fn build(file: File, listen: Option<String>) -> anyhow::Result<Config> {
    let mut modules = Vec::new();
    for m in file.modules {
        if m.name.is_empty() || m.name.contains('/') {
            bail!(
                "module name {:?}: must be non-empty and hold no '/'",
                m.name
            );
        }
        if modules
            .iter()
            .any(|x: &blit_core::remote::server::Module| x.name == m.name)
        {
            bail!("module {:?} is defined twice", m.name);
        }
        let path = std::fs::canonicalize(&m.path)
            .with_context(|| format!("module {:?}: path {}", m.name, m.path.display()))?;
        if !path.is_dir() {
            bail!("module {:?}: {} is not a folder", m.name, path.display());
        }
        let token = match &m.token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .with_context(|| format!("module {:?}: token file {}", m.name, f.display()))?;
                let t = t.trim().to_string();
                if t.is_empty() {
                    bail!("module {:?}: token file {} is empty", m.name, f.display());
                }
                Some(t)
            }
            None => None,
        };
        modules.push(blit_core::remote::server::Module {
            name: m.name,
            path,
            read_only: m.read_only,
            token,
        });
    }
    if modules.is_empty() {
        bail!("no modules to serve (give --module NAME=PATH or a config with [[module]])");
    }
    Ok(Config {
        listen: listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        max_connections: file.max_connections.unwrap_or(64).max(1),
        settings: blit_core::remote::server::Settings {
            modules,
            idle_timeout: Duration::from_secs(file.idle_timeout.unwrap_or(600).max(1)),
            workers: file
                .workers
                .unwrap_or_else(blit_core::job::default_workers)
                .clamp(1, 64),
            tls: tls(&file.tls, &file.tls_cert, &file.tls_key, &file.tls_dir)?,
            pushes: Default::default(),
        },
    })
}

fn tls(
    on: &Option<bool>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    dir: &Option<PathBuf>,
) -> anyhow::Result<Option<std::sync::Arc<blit_core::remote::tls::Server>>> {
    use blit_core::remote::tls::Server;
    if *on == Some(false) {
        return Ok(None);
    }
    let server = match (cert, key) {
        (Some(c), Some(k)) => Server::from_files(c, k)?,
        (None, None) => {
            let dir = dir.clone().unwrap_or_else(default_tls_dir);
            Server::self_signed(&dir)
                .with_context(|| format!("self-signed certificate in {}", dir.display()))?
        }
        _ => bail!("tls_cert and tls_key go together"),
    };
    Ok(Some(std::sync::Arc::new(server)))
}

/// Where a self-signed identity is kept: /var/lib/blit-daemon as root, else the user's state
/// folder.
fn default_tls_dir() -> PathBuf {
    if rustix_is_root() {
        return PathBuf::from("/var/lib/blit-daemon");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("blit-daemon")
}

fn rustix_is_root() -> bool {
    blit_core::sys::is_root()
}

/// `NAME=PATH` from the command line.
pub fn parse_module(arg: &str) -> Result<ModuleFile, String> {
    let (name, path) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?}: expected NAME=PATH"))?;
    Ok(ModuleFile {
        name: name.to_string(),
        path: PathBuf::from(path),
        read_only: false,
        token_file: None,
    })
}
