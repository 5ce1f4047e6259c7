//! init, join, tracker, peer.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use swarmfs_core::{DataKey, SwarmSecret, Token};
use swarmfs_net::Identity;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::home::Home;
use crate::Cli;

#[derive(Args)]
pub struct InitArgs {
    /// Address peers and clients will dial to reach the tracker (put in the tokens). Give it
    /// once per tracker for a swarm with several (they share one PostgreSQL database; see
    /// `swarmfs tracker --db`); clients and peers fail over between them.
    #[arg(long, env = "SWARMFS_TRACKER_ADDR", required = true, value_delimiter = ',')]
    pub tracker_addr: Vec<String>,
}

#[derive(Args)]
pub struct JoinArgs {
    /// A `swarmfs-peer-…` or `swarmfs-member-…` token from `swarmfs init`.
    pub token: String,
}

#[derive(Args)]
pub struct TrackerArgs {
    #[command(subcommand)]
    pub action: Option<TrackerAction>,
    /// Address to listen on (default: the tracker address in the tokens).
    #[arg(long, env = "SWARMFS_LISTEN")]
    pub listen: Option<String>,
    /// The database: HOME/tracker.db (SQLite, the default), or a PostgreSQL URL
    /// (`postgres://user[:password]@host:port/db`).
    #[arg(long, env = "SWARMFS_DB", hide_env_values = true)]
    pub db: Option<String>,
    /// Seconds without a heartbeat after which a peer is marked down.
    #[arg(long, env = "SWARMFS_PEER_TIMEOUT", default_value_t = 10.0)]
    pub peer_timeout: f64,
    /// Seconds a chunk no file uses any more waits before it is deleted from its peers
    /// (a grace period for uploads still in flight that will reference it).
    #[arg(long, env = "SWARMFS_GC_DELAY", default_value_t = 60.0)]
    pub gc_delay: f64,
    /// Seconds before a chunk no file ever used (an upload that failed or was abandoned
    /// before its commit) is deleted; also the longest an upload may take from storing a
    /// chunk to its commit (a slower one is refused at the commit, nothing lost).
    #[arg(long, env = "SWARMFS_ORPHAN_DELAY", default_value_t = 3600.0)]
    pub orphan_delay: f64,
    /// Seconds a peer may be down before the copies it held are made again on other peers
    /// (a peer that has left is replaced at once).
    #[arg(long, env = "SWARMFS_REPAIR_AFTER", default_value_t = 600.0)]
    pub repair_after: f64,
    /// Bytes per second all repair copies together may use, e.g. 50M; 0 for no limit.
    #[arg(long, env = "SWARMFS_REPAIR_RATE", default_value = "32M", value_parser = parse_size)]
    pub repair_rate: u64,
    /// Repair copies in flight at once.
    #[arg(long, env = "SWARMFS_REPAIR_CONCURRENCY", default_value_t = 4)]
    pub repair_concurrency: usize,
    /// Bytes per second all connections the tracker relays (to peers behind NAT that no
    /// other path reaches) may use together, e.g. 20M; 0 for no limit.
    #[arg(long, env = "SWARMFS_RELAY_RATE", default_value = "100M", value_parser = parse_size)]
    pub relay_rate: u64,
    /// Peers, clients and tools connected at once (each a TLS connection and a task; a
    /// 10,000-peer swarm needs more than the usual open-file limit, which the tracker raises).
    #[arg(long, env = "SWARMFS_MAX_CONNECTIONS", default_value_t = 16384)]
    pub max_connections: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100).
    #[arg(long, env = "SWARMFS_METRICS")]
    pub metrics: Option<String>,
}

#[derive(Args)]
pub struct PeerArgs {
    #[command(subcommand)]
    pub action: Option<PeerAction>,
    /// Address to listen on, e.g. 0.0.0.0:7101 (port 0 picks a free port).
    #[arg(long, env = "SWARMFS_LISTEN", required = true)]
    pub listen: Option<String>,
    /// Address other nodes should dial (default: the listen address).
    #[arg(long, env = "SWARMFS_ADVERTISE")]
    pub advertise: Option<String>,
    /// Most bytes this peer stores, e.g. 500G (suffixes K, M, G, T; powers of 1024).
    #[arg(long, env = "SWARMFS_CAPACITY", default_value = "10G", value_parser = parse_size)]
    pub capacity: u64,
    /// Milliseconds between heartbeats to the tracker.
    #[arg(long, env = "SWARMFS_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Also mount the swarm here (needs a member token in this home).
    #[arg(long, env = "SWARMFS_MOUNT")]
    pub mount: Option<std::path::PathBuf>,
    /// Bytes per second the scrubber re-reads and re-hashes stored chunks, e.g. 1M; 0 turns
    /// it off. Default: a full pass every 3 days at full capacity (at least 256K).
    #[arg(long, env = "SWARMFS_SCRUB_RATE", value_parser = parse_size)]
    pub scrub_rate: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101; port 0 picks
    /// one, logged at start).
    #[arg(long, env = "SWARMFS_METRICS")]
    pub metrics: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum TrackerAction {
    /// Add a tracker's address to this home (and, on the tracker's home, to the tokens it
    /// issues from now on). The new tracker runs from a copy of the tracker's home, on the
    /// same PostgreSQL database.
    #[command(
        after_help = "Example:\n  swarmfs tracker add 192.0.2.11:7000 --home /srv/swarm-tracker   # prints the new peer token\n  swarmfs tracker add 192.0.2.11:7000 --home ~/.swarmfs            # on each member's and peer's machine"
    )]
    Add(TrackerAddArgs),
}

#[derive(Args)]
pub struct TrackerAddArgs {
    /// The new tracker's address, HOST:PORT, as clients and peers will dial it.
    pub addr: String,
}

#[derive(clap::Subcommand)]
pub enum PeerAction {
    /// Move every chunk that would fall below its R off a peer, then say it can be switched
    /// off. Run with the tracker's home.
    #[command(
        after_help = "Example:\n  swarmfs peer drain 4da7e11a --home /srv/swarm-tracker\n  swarmfs peer drain 4da7e11a --undo --home /srv/swarm-tracker"
    )]
    Drain(crate::health::DrainArgs),
}

/// A chunk size within what the format allows (clap: a bad one is a usage error, exit 2).
pub fn parse_chunk_size(s: &str) -> Result<u32, String> {
    let n = parse_size(s)?;
    swarmfs_core::check_chunk_size(n).map_err(|e| e.to_string())
}

/// A replica count of at least 1 (clap: 0 is a usage error, exit 2).
pub fn parse_replicas(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of copies from 1 to 64")),
    }
}

/// `--inline-max`: a size from 0 (keep no file in its manifest) to [`swarmfs_core::MAX_INLINE`].
pub fn parse_inline_max(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if n <= swarmfs_core::MAX_INLINE as u64 => Ok(n as usize),
        _ => Err(format!("{s:?}: files kept in their manifest are at most {} bytes", swarmfs_core::MAX_INLINE)),
    }
}

/// Parses `123`, `4K`, `512M`, `1G`, `2T`, `1GiB`, `10MB` (all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 4096, 64K, 512M or 1G"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

pub fn init(cli: &Cli, a: &InitArgs) -> Result<()> {
    let dir = cli.home_dir();
    if Home::swarm_file(&dir).exists() {
        bail!("{} already holds a swarm; choose another --home", dir.display());
    }
    let member = create_swarm(&dir, &a.tracker_addr)?;
    let (peer_token, member_token) = (member.to_peer().encode(), member.encode());
    if cli.json {
        outln!(
            "{}",
            serde_json::json!({ "peer_token": peer_token, "member_token": member_token, "tracker_id": member.tracker_id.to_string() })
        );
    } else {
        outln!("peer token:   {peer_token}");
        outln!("member token: {member_token}");
        errln!();
        errln!("The member token is member `{OWNER}`'s (read-write) and holds the data key. Keep it safe:");
        errln!("without the data key nobody, not even the tracker, can read the files back. The peer token");
        errln!("only lets a machine store ciphertext.");
        errln!("Next: swarmfs tracker --home {}", dir.display());
        errln!("More members: swarmfs member add NAME --home {} --data-key-from YOUR_MEMBER_HOME", dir.display());
    }
    Ok(())
}

/// The member `swarmfs init` creates.
pub const OWNER: &str = "owner";

/// Makes `dir` a tracker home for a new swarm and returns the first member's token.
pub fn create_swarm(dir: &std::path::Path, tracker_addrs: &[String]) -> Result<Token> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let identity = Identity::load_or_create(&dir.join("identity.key"))?;
    // The first member, `owner`, is registered before the tracker ever runs.
    let secret: [u8; 32] = rand::random();
    swarmfs_tracker::db::Db::open(&dir.join("tracker.db"))?.add_member(OWNER, &secret, false)?;
    let member = Token {
        tracker_addrs: tracker_addrs.to_vec(),
        tracker_id: identity.node_id(),
        swarm_secret: SwarmSecret::generate(),
        data_key: Some(DataKey::generate()),
        member: Some(swarmfs_proto::MemberKey { name: OWNER.into(), secret, read_only: false }),
    };
    // The tracker's home gets the peer token only: the tracker never holds the data key.
    Home::create(dir, &member.to_peer())?;
    Ok(member)
}

pub fn join(cli: &Cli, a: &JoinArgs) -> Result<()> {
    let dir = cli.home_dir();
    let token = Token::decode(&a.token)?;
    if let Ok(existing) = Home::load(&dir) {
        if existing.token.tracker_id != token.tracker_id || existing.token.swarm_secret != token.swarm_secret {
            bail!("{} already belongs to another swarm; choose another --home", dir.display());
        }
    }
    let home = Home::create(&dir, &token)?;
    let id = home.identity()?.node_id();
    let read_only = token.member.as_ref().is_some_and(|m| m.read_only);
    let kind = match (token.data_key.is_some(), read_only) {
        (true, true) => "read-only member (can read files)",
        (true, false) => "member (can read and write files)",
        (false, _) => "peer (stores ciphertext only)",
    };
    if cli.json {
        let member = token.data_key.is_some();
        outln!(
            "{}",
            serde_json::json!({ "home": dir, "node_id": id.to_string(), "member": member, "read_only": read_only })
        );
    } else {
        outln!("{} joined as {kind}; node {}", dir.display(), id.short());
    }
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard limit, as a daemon serving up to
/// 1,024 members plus a bounded number of connections in their handshake needs more than the
/// usual soft limit of 1,024.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit: {e}");
        }
    }
}

/// Cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    shutdown_on_signals().0
}

/// The first token is cancelled on the first SIGINT or SIGTERM (stop, finishing what must be
/// finished), the second on the next one (stop now).
pub fn shutdown_on_signals() -> (CancellationToken, CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let (f, s) = (first.clone(), second.clone());
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::spawn(async move {
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        // Cancel first, log after: if the log cannot be written (a closed pipe), shutting
        // down must already be under way.
        f.cancel();
        info!("shutting down");
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        s.cancel();
        info!("second signal: stopping now");
    });
    (first, second)
}

/// `tracker add ADDR`: one more tracker in this home's list (tried after the others).
pub fn tracker_add(cli: &Cli, a: &TrackerAddArgs) -> Result<()> {
    let mut home = Home::load(&cli.home_dir())?;
    if a.addr.parse::<std::net::SocketAddr>().is_err()
        && !a.addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Err(crate::UsageError(format!("{:?} is not HOST:PORT", a.addr)).into());
    }
    let added = !home.token.tracker_addrs.contains(&a.addr);
    if added {
        home.token.tracker_addrs.push(a.addr.clone());
        home = Home::create(&home.dir, &home.token)?;
    }
    let is_tracker = home.swarm()?.identity.node_id() == home.token.tracker_id;
    let peer_token = is_tracker.then(|| home.token.to_peer().encode());
    if cli.json {
        outln!(
            "{}",
            serde_json::json!({ "tracker_addrs": home.token.tracker_addrs, "added": added, "peer_token": peer_token })
        );
        return Ok(());
    }
    let verb = if added { "now reaches" } else { "already reached" };
    outln!("{} {verb} the trackers at {}", home.dir.display(), home.token.tracker_addrs.join(", "));
    if let Some(t) = peer_token {
        outln!("peer token:   {t}");
        errln!(
            "Copy this home to the new tracker's machine and run `swarmfs tracker --home COPY --listen {} --db URL`",
            a.addr
        );
        errln!("on the same PostgreSQL database. Tokens `member add` prints from now on name every tracker;");
        errln!("existing homes learn the new tracker with `swarmfs tracker add {}` in each.", a.addr);
    }
    Ok(())
}

pub async fn tracker(cli: &Cli, a: &TrackerArgs) -> Result<()> {
    let home = Home::load(&cli.home_dir())?;
    let swarm = home.swarm()?;
    if swarm.identity.node_id() != home.token.tracker_id {
        bail!(
            "{} is not a tracker home (its identity is not the swarm's tracker); use the home made by `swarmfs init`",
            home.dir.display()
        );
    }
    if let Some(url) = &a.db {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(crate::UsageError(format!(
                "--db takes a PostgreSQL URL (postgres://user@host:port/db), not {url:?}; without --db the tracker uses \
                 SQLite in {}",
                home.dir.join("tracker.db").display()
            ))
            .into());
        }
    }
    raise_fd_limit();
    let several = home.token.tracker_addrs.len() > 1;
    if several && a.db.is_none() {
        tracing::warn!(
            "the tokens name {} trackers but this one uses its own SQLite database: trackers of one swarm must share \
             one PostgreSQL database (--db postgres://…), or clients see different swarms at each",
            home.token.tracker_addrs.len()
        );
    }
    let listen = a.listen.clone().unwrap_or_else(|| home.token.tracker_addr().to_string());
    let listener = TcpListener::bind(&listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let config = swarmfs_tracker::TrackerConfig {
        db_path: home.dir.join("tracker.db"),
        db_url: a.db.clone(),
        peer_timeout: Duration::from_secs_f64(a.peer_timeout.max(0.1)),
        gc_delay: Duration::from_secs_f64(a.gc_delay.max(0.0)),
        orphan_delay: Duration::from_secs_f64(a.orphan_delay.max(0.0)),
        repair_after: Duration::from_secs_f64(a.repair_after.max(0.0)),
        repair_rate: a.repair_rate,
        repair_concurrency: a.repair_concurrency.max(1),
        relay_rate: a.relay_rate,
        max_connections: a.max_connections.max(1),
        metrics: a.metrics.clone(),
    };
    swarmfs_tracker::run(listener, swarm, config, shutdown_on_signal()).await?;
    Ok(())
}

pub async fn peer(cli: &Cli, a: &PeerArgs) -> Result<()> {
    let home = Home::load(&cli.home_dir())?;
    let swarm = home.swarm()?;
    raise_fd_limit();
    let listen = a.listen.as_deref().ok_or_else(|| crate::UsageError("--listen is required".into()))?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let config = swarmfs_peer::PeerConfig {
        store_dir: home.dir.join("store"),
        capacity: a.capacity,
        advertise: a.advertise.clone(),
        tracker_addrs: home.token.tracker_addrs.clone(),
        tracker_id: home.token.tracker_id,
        heartbeat: Duration::from_millis(a.heartbeat_ms.max(50)),
        scrub_rate: a.scrub_rate.unwrap_or_else(|| swarmfs_peer::scrub::default_rate(a.capacity)),
        metrics: a.metrics.clone(),
    };
    let (shutdown, again) = shutdown_on_signals();
    let mounted = match &a.mount {
        Some(mp) => {
            if home.token.data_key.is_none() {
                bail!(
                    "--mount needs a member token in {}: this home can store ciphertext but not read files",
                    home.dir.display()
                );
            }
            let (home_dir, mp, stop) = (home.dir.clone(), mp.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                // The mount is an ordinary client of the swarm, with its own connections.
                let args = crate::mount::MountArgs::defaults(mp.clone());
                crate::mount::serve(&home_dir, &mp, &args, stop, again).await
            }))
        }
        None => None,
    };
    swarmfs_peer::run(listener, swarm, config, shutdown.clone()).await?;
    if let Some(m) = mounted {
        shutdown.cancel();
        m.await.context("mount task")??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
    }
}
