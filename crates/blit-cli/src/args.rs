//! The command-line contract, in one place; completions and the man page are generated from it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "blit",
    version,
    about = "Copy, mirror and move file trees exactly and fast",
    long_about = "Copy, mirror and move file trees exactly and fast.\n\n\
        When SRC is a folder, its contents land in DST (created if missing); trailing slashes \
        change nothing. When SRC is a file, DST is the target file, or DST/name when DST is an \
        existing folder or ends with '/'.\n\n\
        Exit codes: 0 all done; 1 some entries failed (the rest done); 2 usage error or refused \
        before anything changed; 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Add new and changed entries to DST; never delete anything in DST
    Copy(TransferArgs),
    /// Make DST an exact replica of SRC, deleting what SRC lacks (excluded entries are kept)
    Mirror(TransferArgs),
    /// Copy, then remove each source entry once its copy is complete and flushed to disk
    Move(TransferArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
    /// List the modules a daemon serves: blit list-modules blit://HOST[:PORT]
    ListModules(AdminArgs),
    /// List a remote folder: blit ls blit://HOST/MODULE/PATH
    Ls(AdminArgs),
    /// Total files, folders and bytes beneath a remote path
    Du(AdminArgs),
    /// Size and free space of the filesystem holding a module
    Df(AdminArgs),
    /// Find remote entries whose name matches a glob
    Find {
        #[command(flatten)]
        common: AdminArgs,
        /// Glob matched against each entry's name (e.g. '*.jpg')
        #[arg(long, value_name = "GLOB")]
        name: String,
    },
    /// Delete a remote file or folder (with everything in it)
    Rm {
        #[command(flatten)]
        common: AdminArgs,
        /// Do not ask for confirmation
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// blit://HOST[:PORT]/MODULE/PATH
    pub url: String,
    /// Print the answer as JSON on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// How to reach a daemon: shared by the transfer verbs and the admin verbs.
#[derive(Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Read a remote module's token from FILE (default: the BLIT_TOKEN environment variable)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect in the clear (the daemon must run with TLS off)
    #[arg(long)]
    pub no_tls: bool,
    /// Accept only the daemon certificate with this SHA-256 fingerprint (hex); without it, the
    /// first certificate seen is trusted and recorded in ~/.config/blit/known_hosts
    #[arg(long, value_name = "HEX")]
    pub tls_fingerprint: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Source folder or file (or blit://HOST[:PORT]/MODULE/PATH)
    pub src: PathBuf,
    /// Destination folder, or file when SRC is a file (or blit://HOST[:PORT]/MODULE/PATH)
    pub dst: PathBuf,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Remote: continue large files an interrupted run left half-transferred (blocks already
    /// received are checked by BLAKE3 and kept)
    #[arg(long)]
    pub resume: bool,
    /// Remote: the most memory (MiB) what the other side sends may take here: listings being
    /// gathered (about 350 bytes per entry; one connection may use half), data not yet
    /// written (default 320)
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(64..))]
    pub max_memory: Option<u64>,
    /// Pull: restore owners, setuid/setgid bits, device nodes and security./trusted. xattrs
    /// exactly as the daemon describes them (a restore of a system backup, as root). Without
    /// it, what a daemon sends is kept only as far as any user could make it: files belong to
    /// you, special bits are cleared, devices are refused
    #[arg(long)]
    pub trust_metadata: bool,
    /// Remote: connections a large file (32 MiB or more) is striped across, each stripe read,
    /// sent, encrypted and written in parallel (default 2, or 1 to a daemon on this machine;
    /// 1 never stripes)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub streams: Option<u8>,
    /// Report what would be done; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// One line per created/updated/deleted entry with the reason (-vv adds statistics)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print nothing but errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print the final summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Show a progress bar even when stderr is not a terminal
    #[arg(long, overrides_with = "no_progress")]
    pub progress: bool,
    /// Never show a progress bar
    #[arg(long)]
    pub no_progress: bool,
    /// Compare content by BLAKE3 instead of size and modification time
    #[arg(short, long)]
    pub checksum: bool,
    /// Leave out entries matching GLOB (relative to SRC; `**` crosses folders; repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Keep entries matching GLOB even when an exclude matches them (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Read exclude globs from FILE, one per line (`#` starts a comment)
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Delete nothing (and exit 1) when more than N deletions would be needed
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// mirror: delete only after every copy is done (default: during the walk, as rsync does)
    #[arg(long)]
    pub delete_after: bool,
    /// Worker threads (default: chosen by Blit)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub workers: Option<usize>,
    /// Flush each file to disk before it is renamed into place
    #[arg(long)]
    pub fsync: bool,
    /// Re-read each written file and compare its BLAKE3 with the source's before it is put in
    /// place
    #[arg(long)]
    pub verify: bool,
    /// Neither copy nor compare extended attributes (faster on trees that have none)
    #[arg(long)]
    pub no_xattrs: bool,
    /// Allow a mirror from an empty SRC to empty a non-empty DST
    #[arg(long)]
    pub force: bool,
    /// Print statistics: copy paths taken, workers, time per phase
    #[arg(long)]
    pub stats: bool,
}
