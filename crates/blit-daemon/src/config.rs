//! The daemon's settings: a TOML file, or the quick form on the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use blit_core::trust::Trust;
use blit_sys::creds::{self, Creds};
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
    /// MiB that what clients send may take in the daemon's memory, all sessions together (each
    /// session up to half of it); a client past it has its session ended.
    pub max_memory: Option<usize>,
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
    /// The user (name or number) a session acts as in the module: `nobody` when the daemon runs
    /// as root, else the daemon's own user (which it cannot leave).
    pub uid: Option<String>,
    /// Its group: `nogroup` (or `nobody`) as root, else the user's primary group.
    pub gid: Option<String>,
    /// What a push may set that only a privileged user could make: any of `owner`, `setid`,
    /// `devices`, `system-xattrs`, or `all`. Needs a token.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Keep owners, special bits, devices and privileged xattrs in `user.blit.*` attributes
    /// of plain files, and give them back on pulls (rsync's "fake super").
    #[serde(default)]
    pub fake_super: bool,
    /// Shown by `list-modules` (default true).
    pub list: Option<bool>,
}

pub struct Config {
    pub listen: String,
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
        let user = session_user(&m).with_context(|| format!("module {:?}", m.name))?;
        let trust =
            trusted(&m, user, token.is_some()).with_context(|| format!("module {:?}", m.name))?;
        modules.push(blit_core::remote::server::Module {
            name: m.name,
            path,
            read_only: m.read_only,
            token,
            user,
            trust,
            fake_super: m.fake_super,
            listed: m.list.unwrap_or(true),
        });
    }
    if modules.is_empty() {
        bail!("no modules to serve (give --module NAME=PATH or a config with [[module]])");
    }
    if let Some(mib) = file.max_memory {
        if mib < 64 {
            bail!("max_memory = {mib}: at least 64 (MiB)");
        }
        blit_core::budget::set_process_cap(mib << 20);
    }
    let idle_timeout = Duration::from_secs(file.idle_timeout.unwrap_or(600).max(1));
    let opening = idle_timeout.min(blit_core::remote::server::OPENING_DEADLINE);
    Ok(Config {
        listen: listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
        settings: blit_core::remote::server::Settings {
            modules,
            idle_timeout,
            gate: blit_core::remote::gate::Gate::new(opening)?,
            max_sessions: file.max_connections.unwrap_or(64).max(1),
            sessions: Default::default(),
            workers: file
                .workers
                .unwrap_or_else(blit_core::job::default_workers)
                .clamp(1, 64),
            tls: tls(&file.tls, &file.tls_cert, &file.tls_key, &file.tls_dir)?,
            pushes: Default::default(),
        },
    })
}

/// The user a module's sessions act as (`None`: the daemon's own, which is then that user).
fn session_user(m: &ModuleFile) -> anyhow::Result<Option<Creds>> {
    let root = blit_sys::is_root();
    let me = creds::current();
    let named = match &m.uid {
        Some(u) => Some(creds::user(u).with_context(|| format!("uid = {u:?}"))?),
        None if root => Some(creds::user("nobody").context("the default user `nobody`")?),
        None => None,
    };
    let gid = match &m.gid {
        Some(g) => Some(creds::group(g).with_context(|| format!("gid = {g:?}"))?),
        None if root && m.uid.is_none() => {
            Some(creds::default_group().context("the default group `nogroup`")?)
        }
        None => None,
    };
    let user = match (named, gid) {
        (Some(c), Some(gid)) => Some(Creds { gid, ..c }),
        (Some(c), None) => Some(c),
        (None, Some(gid)) => Some(Creds { gid, ..me }),
        (None, None) => None,
    };
    if let Some(u) = user {
        if !root && u != me {
            bail!(
                "sessions cannot act as uid {} gid {}: only a daemon run as root can change \
                 user (this one runs as uid {})",
                u.uid,
                u.gid,
                me.uid
            );
        }
    }
    Ok(user.filter(|&u| u != me || root))
}

/// What the module trusts a push with, checked against who its sessions are and whether it has
/// a token.
fn trusted(m: &ModuleFile, user: Option<Creds>, has_token: bool) -> anyhow::Result<Trust> {
    let mut trust = Trust::NONE;
    for k in &m.keep {
        if !trust.keep(k) {
            bail!(
                "keep = {k:?}: not one of {}",
                Trust::KEEP_NAMES.map(|n| format!("{n:?}")).join(", ")
            );
        }
    }
    let as_root = match user {
        Some(u) => u.uid == 0,
        None => blit_sys::is_root(),
    };
    if m.fake_super && trust.any() {
        bail!("fake_super keeps everything privileged in attributes already; drop `keep`");
    }
    if !as_root && (trust.owner || trust.devices || trust.system_xattrs) {
        bail!(
            "keep owners, devices or system xattrs needs sessions run as root (uid = \"root\"), \
             or fake_super = true to keep them in attributes"
        );
    }
    if (as_root || trust.any()) && !has_token {
        bail!(
            "a module whose sessions run as root, or that keeps privileged metadata, needs a \
             token_file: anyone who can connect could otherwise write as root"
        );
    }
    Ok(trust)
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
            let dir = match dir.clone().or_else(default_tls_dir) {
                Some(d) => d,
                None => bail!(
                    "no folder to keep the daemon's TLS identity in (not root, and neither \
                     XDG_STATE_HOME nor HOME is set): give --tls-dir, or tls_cert and tls_key"
                ),
            };
            Server::self_signed(&dir)
                .with_context(|| format!("self-signed identity in {}", dir.display()))?
        }
        _ => bail!("tls_cert and tls_key go together"),
    };
    Ok(Some(std::sync::Arc::new(server)))
}

/// Where a self-signed identity is kept: /var/lib/blit-daemon as root, else the user's state
/// folder; `None` when there is none (never the working folder: a private key does not belong
/// wherever the daemon happened to be started).
fn default_tls_dir() -> Option<PathBuf> {
    if blit_sys::is_root() {
        return Some(PathBuf::from("/var/lib/blit-daemon"));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("blit-daemon"))
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
        uid: None,
        gid: None,
        keep: Vec::new(),
        fake_super: false,
        list: None,
    })
}
