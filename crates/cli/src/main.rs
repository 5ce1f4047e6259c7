//! The `swarmfs` binary: argument parsing, homes, progress, exit codes.
//!
//! # Layout
//! - `home`: the home directory (identity, swarm membership).
//! - `config`: `HOME/config.toml`, settings below flags and `SWARMFS_*` variables.
//! - `nodes`: init, join, tracker, peer.
//! - `files`: the client commands (put, get, cat, ls, ...).
//! - `gateway`: the HTTP gateway and dashboard (`swarmfs_http`).
//! - `local`: a tracker and peers as child processes on loopback (demo, bench, tests).
//! - `bench`: the benchmark.
//! - `progress`: progress bars.
//! - `out`: stdout/stderr/log writes that never panic (closed pipes), name escaping.
//! - `mount`: the FUSE mount command.
//! - `members`: member add/ls/revoke (the tracker's home).
//! - `health`: health (repair, scrub, lost files) and peer drain.
//! - `usage`: peak RSS and CPU time of this process (bench).
//! - `seed`: serving what a download fetched (`get --serve`, `get --seed`).
//! - `share`: publishing a file from the sharer's own disk (`share`).

#[macro_use]
mod out;
mod bench;
mod config;
mod files;
mod gateway;
mod health;
mod home;
mod links;
mod local;
mod members;
mod mount;
mod nodes;
mod progress;
mod rqbit;
mod seed;
mod share;
mod tree;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// swarmfs: an encrypted, replicated file store on the disks of many machines.
#[derive(Parser)]
#[command(name = "swarmfs", version, about, long_about = None, after_help = "\
Quick start on one machine:
  swarmfs demo                      # tracker + 3 peers on loopback, prints what to run next

Exit codes: 0 ok, 1 error, 2 bad usage, 3 not found, 4 cannot reach the swarm, 5 refused (wrong swarm or key)")]
pub struct Cli {
    /// Where this node or client keeps its identity, membership and data.
    #[arg(long, global = true, env = "SWARMFS_HOME", default_value = "~/.swarmfs")]
    home: String,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true, env = "SWARMFS_JSON")]
    json: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `swarmfs_net=debug`.
    #[arg(long, global = true, env = "SWARMFS_LOG")]
    log: Option<String>,
    /// Append log lines to FILE instead of stderr (daemons: survives a closed terminal or pipe).
    #[arg(long, global = true, env = "SWARMFS_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// Write this process's peak RSS and CPU seconds as JSON to FILE on exit (used by bench).
    #[arg(long, global = true, hide = true, env = "SWARMFS_USAGE_FILE")]
    usage_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new swarm; the home becomes the tracker's. Prints a peer token and a member token.
    #[command(after_help = "Examples:\n  swarmfs init --home /srv/swarm-tracker --tracker-addr 192.0.2.10:7000\n  \
                  # two trackers sharing one PostgreSQL database (copy the home to the second):\n  \
                  swarmfs init --home /srv/swarm-tracker --tracker-addr 192.0.2.10:7000 --tracker-addr 192.0.2.11:7000")]
    Init(nodes::InitArgs),
    /// Prepare a home for an existing swarm from a peer or member token.
    #[command(after_help = "Example:\n  swarmfs join swarmfs-member-AbC... --home ~/.swarmfs")]
    Join(nodes::JoinArgs),
    /// Run the tracker in the foreground until SIGINT/SIGTERM; `tracker add` adds another.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  swarmfs tracker --home /srv/swarm-tracker --listen 0.0.0.0:7000\n  \
                  swarmfs tracker --home /srv/swarm-tracker --listen 0.0.0.0:7000 --db postgres://swarmfs@db.example/swarmfs\n  \
                  swarmfs tracker add 192.0.2.11:7000 --home /srv/swarm-tracker"
    )]
    Tracker(nodes::TrackerArgs),
    /// Run a storage peer in the foreground until SIGINT/SIGTERM; `peer drain` empties one.
    #[command(
        subcommand_negates_reqs = true,
        args_conflicts_with_subcommands = true,
        after_help = "Examples:\n  swarmfs peer --home /srv/peer1 --listen 0.0.0.0:7101 --advertise 192.0.2.11:7101 --capacity 500G\n  swarmfs peer drain 4da7e11a --home /srv/swarm-tracker   # then switch it off"
    )]
    Peer(nodes::PeerArgs),
    /// The swarm's health: files and chunks by state, lost files, peers down, repair, workers.
    #[command(after_help = "Example:\n  swarmfs health\n  swarmfs health --json | jq .chunks")]
    Health,
    /// Upload a local file, or with -r a directory tree.
    #[command(
        after_help = "Examples:\n  swarmfs put ./holiday.mp4 /videos/holiday.mp4 --replicas 3\n  swarmfs put -r ./photos /photos   # ./photos/a/b.jpg becomes /photos/a/b.jpg"
    )]
    Put(files::PutArgs),
    /// Download a file (rarest chunks first), or the file a link names; --serve/--seed also serve it to others.
    #[command(
        after_help = "Examples:\n  swarmfs get /videos/holiday.mp4 ./holiday.mp4\n  swarmfs get -r /photos ./photos   # /photos/a/b.jpg becomes ./photos/a/b.jpg\n  swarmfs get swarmfs-link-AgExMj... ./talk.mp4   # no home or token needed\n  swarmfs get /videos/holiday.mp4 ./holiday.mp4 --seed --listen 0.0.0.0:7200 --advertise 192.0.2.20:7200"
    )]
    Get(files::GetArgs),
    /// Publish a local file without uploading it: serve it from this disk until Ctrl-C.
    #[command(
        after_help = "Examples:\n  swarmfs share ./talk.mp4 /talks/talk.mp4\n  swarmfs share ./talk.mp4 /talks/talk.mp4 --listen 0.0.0.0:7300 --advertise 192.0.2.30:7300 --upload-rate 5M"
    )]
    Share(share::ShareArgs),
    /// Write a file, or a byte range of it, to stdout.
    #[command(after_help = "Example:\n  swarmfs cat /logs/app.log --offset 1048576 --length 4096")]
    Cat(files::CatArgs),
    /// List a directory.
    #[command(after_help = "Example:\n  swarmfs ls /videos --json")]
    Ls(files::LsArgs),
    /// Show one file or directory.
    #[command(
        after_help = "Examples:\n  swarmfs stat /videos/holiday.mp4\n  swarmfs stat --chunks /videos/holiday.mp4   # which source holds which chunk"
    )]
    Stat(files::StatArgs),
    /// Remove a file, or a directory (-r for a non-empty one).
    #[command(after_help = "Example:\n  swarmfs rm -r /old")]
    Rm(files::RmArgs),
    /// Rename or move a file or directory.
    #[command(after_help = "Example:\n  swarmfs mv /a.txt /archive/a.txt")]
    Mv(files::MvArgs),
    /// Create a directory.
    #[command(after_help = "Example:\n  swarmfs mkdir -p /photos/2026")]
    Mkdir(files::MkdirArgs),
    /// Find files and directories whose name contains TEXT (case-insensitive).
    #[command(after_help = "Example:\n  swarmfs search holiday")]
    Search(files::SearchArgs),
    /// Make a link to one file (a read capability to paste anywhere), list links, revoke one.
    #[command(
        after_help = "Examples:\n  swarmfs link /talks/talk.mp4            # prints swarmfs-link-...\n  swarmfs get swarmfs-link-... ./talk.mp4  # on any machine, no token needed\n  swarmfs link --list\n  swarmfs link --revoke 3f9a0c1e"
    )]
    Link(links::LinkArgs),
    /// Manage members: add (prints a token), ls, revoke. Run with the tracker's home.
    #[command(
        after_help = "Example:\n  swarmfs member add alice --home /srv/swarm-tracker --data-key-from ~/.swarmfs"
    )]
    Member(members::MemberArgs),
    /// List the swarm's peers and their state.
    #[command(after_help = "Example:\n  swarmfs peers --json")]
    Peers,
    /// Mount the swarm as a read-write filesystem; runs until unmounted or SIGINT/SIGTERM.
    #[command(
        after_help = "Example:\n  swarmfs mount /mnt/swarm --home ~/.swarmfs\n  fusermount3 -u /mnt/swarm   # or Ctrl-C: staged writes are flushed first"
    )]
    Mount(mount::MountArgs),
    /// Serve the swarm over HTTP until SIGINT/SIGTERM: files (ranges, listings, PUT/DELETE), links, a live dashboard, metrics.
    #[command(
        after_help = "Examples:\n  swarmfs gateway                                   # http://127.0.0.1:8080/dashboard\n  curl -r 0-1023 http://127.0.0.1:8080/files/videos/holiday.mp4\n  curl -T notes.txt http://127.0.0.1:8080/files/notes.txt\n  swarmfs gateway --listen 0.0.0.0:8080 --token s3cret --read-only   # other hosts: Authorization: Bearer s3cret"
    )]
    Gateway(gateway::GatewayArgs),
    /// Run a tracker and peers on loopback until Ctrl-C: a whole swarm in one command.
    #[command(after_help = "Example:\n  swarmfs demo --dir ./swarmfs-demo --peers 3")]
    Demo(local::DemoArgs),
    /// Measure put/get throughput on a local swarm next to a raw TCP copy.
    #[command(after_help = "Example:\n  swarmfs bench --size 1G --peers 3 --replicas 2 --json")]
    Bench(bench::BenchArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Examples:\n  swarmfs completions bash > /etc/bash_completion.d/swarmfs\n  swarmfs completions zsh > \"${fpath[1]}/_swarmfs\"\n  swarmfs completions fish > ~/.config/fish/completions/swarmfs.fish"
    )]
    Completions { shell: clap_complete::Shell },
}

impl Cli {
    pub fn home_dir(&self) -> PathBuf {
        expand_home(&self.home)
    }
}

pub fn expand_home(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")).join(rest),
        None => PathBuf::from(s),
    }
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let daemon = match &cli.command {
        Command::Mount(_) | Command::Gateway(_) => true,
        Command::Tracker(a) => a.action.is_none(),
        Command::Peer(a) => a.action.is_none(),
        _ => false,
    };
    // fuser warns when it finds the mount already gone after our own unmount: not news.
    let default = if daemon { "info,fuser=error" } else { "warn,fuser=error" };
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let (sink, ansi) = match &cli.log_file {
        Some(path) => (
            out::LogSink::file(path)
                .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?,
            false,
        ),
        None => (out::LogSink::Stderr, std::io::IsTerminal::is_terminal(&std::io::stderr())),
    };
    // The sink swallows write errors, and tracing must not report them through eprintln!
    // (which panics on a closed stderr and would kill whichever task was logging).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .with_ansi(ansi)
        .with_target(false)
        .log_internal_errors(false)
        .init();
    Ok(())
}

/// glibc hands memory back to the kernel as soon as 128 KiB lie free at the top of a heap,
/// and serves buffers of 128 KiB and up (the first few chunk payloads) with mmaps of their
/// own: every chunk a client or peer moves then lands in freshly mapped pages, and faulting
/// and zeroing those was 17 % of a `get`'s CPU. Keeping up to 32 MiB freed per heap lets the
/// next chunk reuse the pages the last one used. The peak, which the memory bound is about,
/// does not change; memory freed after a peak is kept for reuse rather than returned.
#[allow(unsafe_code)] // mallopt takes two integers and touches no memory of ours
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match mount::helper_args(&args) {
        None => {}
        Some(Ok(Some(translated))) => args = translated,
        Some(Ok(None)) => return ExitCode::SUCCESS,
        Some(Err(e)) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = config::apply(&args, &<Cli as clap::CommandFactory>::command()) {
        errln!("error: {e}");
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // --help and --version print as clap renders them.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            errln!("{} (see --help)", usage_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&cli) {
        errln!("error: {e}");
        return ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = rt.block_on(run(&cli));
    // Dropping the runtime would wait for every blocking thread: a FUSE session still
    // serving a file some program keeps open, a read of stdin that will never end. Once the
    // command's work is done, those get a moment, not forever.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(path) = &cli.usage_file {
        usage::write_self_usage(path);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if stdout_closed(&e) => ExitCode::from(out::EXIT_STDOUT_CLOSED),
        Err(e) => {
            errln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init(a) => nodes::init(cli, a),
        Command::Join(a) => nodes::join(cli, a),
        Command::Tracker(a) => match &a.action {
            Some(nodes::TrackerAction::Add(add)) => nodes::tracker_add(cli, add),
            None => nodes::tracker(cli, a).await,
        },
        Command::Peer(a) => match &a.action {
            Some(nodes::PeerAction::Drain(d)) => health::drain(cli, d).await,
            None => nodes::peer(cli, a).await,
        },
        Command::Health => health::health(cli).await,
        Command::Put(a) => files::put(cli, a).await,
        Command::Get(a) => files::get(cli, a).await,
        Command::Share(a) => share::share(cli, a).await,
        Command::Cat(a) => files::cat(cli, a).await,
        Command::Ls(a) => files::ls(cli, a).await,
        Command::Stat(a) => files::stat(cli, a).await,
        Command::Rm(a) => files::rm(cli, a).await,
        Command::Mv(a) => files::mv(cli, a).await,
        Command::Mkdir(a) => files::mkdir(cli, a).await,
        Command::Search(a) => files::search(cli, a).await,
        Command::Peers => files::peers(cli).await,
        Command::Member(a) => members::run(cli, a).await,
        Command::Link(a) => links::run(cli, a).await,
        Command::Mount(a) => mount::run(cli, a).await,
        Command::Gateway(a) => gateway::run(cli, a).await,
        Command::Demo(a) => local::demo(cli, a).await,
        Command::Bench(a) => bench::run(cli, a).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "swarmfs", &mut out);
            outln!("{}", String::from_utf8_lossy(&out).trim_end());
            Ok(())
        }
    }
}

/// The error and its causes on one line, without repeating a cause already in the message.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Clap's multi-line usage error as one line: its text up to the usage hint, joined.
fn usage_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reader of our stdout went away (`| head`): not an error worth a line.
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<out::StdoutClosed>().is_some()
            || matches!(c.downcast_ref::<swarmfs_client::ClientError>(),
                Some(swarmfs_client::ClientError::Output(io)) if io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Refused by rule rather than by the swarm: a credential that is not enough (exit 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Bad usage that clap cannot see (a value checked against others, a malformed remote path).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Something named that does not exist, found out by the CLI itself (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

fn exit_code(e: &anyhow::Error) -> u8 {
    use swarmfs_client::ClientError;
    use swarmfs_net::NetError;
    use swarmfs_proto::{ErrorCode, ProtoError};
    for cause in e.chain() {
        if cause.downcast_ref::<Refused>().is_some() {
            return 5;
        }
        if cause.downcast_ref::<NotFound>().is_some() {
            return 3;
        }
        if cause
            .downcast_ref::<swarmfs_core::CoreError>()
            .is_some_and(|c| matches!(c, swarmfs_core::CoreError::BadToken(_)))
        {
            return 2;
        }
        if cause.downcast_ref::<UsageError>().is_some()
            || matches!(cause.downcast_ref::<ProtoError>(), Some(ProtoError::InvalidPath { .. }))
        {
            return 2;
        }
        if let Some(ce) = cause.downcast_ref::<ClientError>() {
            match ce {
                ClientError::Remote { code: ErrorCode::NotFound, .. } => return 3,
                ClientError::Remote { code: ErrorCode::Forbidden, .. } => return 5,
                ClientError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => return 3,
                ClientError::OffsetPastEnd { .. } | ClientError::Usage(_) => return 2,
                ClientError::NotEnoughPeers { .. } => return 4,
                ClientError::NoPeers | ClientError::ChunkUnavailable { .. } => return 4,
                ClientError::Net(n) => return net_code(n),
                ClientError::NoDataKey => return 5,
                _ => {}
            }
        }
        if let Some(n) = cause.downcast_ref::<NetError>() {
            return net_code(n);
        }
    }
    1
}

fn net_code(n: &swarmfs_net::NetError) -> u8 {
    use swarmfs_net::NetError;
    match n {
        NetError::NotMember(_) | NetError::WrongNode { .. } | NetError::Version { .. } => 5,
        _ => 4,
    }
}
