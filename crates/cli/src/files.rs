//! Client commands.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use swarmfs_client::{views, Client, Policy, PutOptions};
use swarmfs_proto::{EntryKind, RemotePath};

use crate::home::Home;
use crate::nodes::{parse_chunk_size, parse_inline_max, parse_replicas, parse_size};
use crate::progress::Bar;
use crate::Cli;

#[derive(Args)]
pub struct PutArgs {
    /// The local file; `-` reads standard input to its end.
    pub local: PathBuf,
    pub remote: String,
    /// Chunk size, 512 to 64M.
    #[arg(long, env = "SWARMFS_CHUNK_SIZE", default_value = "1M", value_parser = parse_chunk_size)]
    pub chunk_size: u32,
    /// Copies of each chunk, on distinct peers.
    #[arg(long, env = "SWARMFS_REPLICAS", default_value_t = PutOptions::DEFAULT_REPLICAS, value_parser = parse_replicas)]
    pub replicas: usize,
    /// Fewest copies of every chunk for the put to succeed (default: --replicas). With fewer
    /// live peers than --replicas, the put stores fewer copies (with a warning) down to this.
    #[arg(long, env = "SWARMFS_MIN_REPLICAS", value_parser = parse_replicas)]
    pub min_replicas: Option<usize>,
    /// Placement policy: rendezvous (default), least-used or lowest-latency.
    #[arg(long, env = "SWARMFS_PLACEMENT", default_value = "rendezvous")]
    pub placement: Policy,
    /// Chunks in flight at once (memory is about 2 × window × chunk size).
    #[arg(long, env = "SWARMFS_WINDOW", default_value_t = PutOptions::DEFAULT_WINDOW)]
    pub window: usize,
    /// Files up to this size are kept in their (sealed) manifest on the tracker instead of
    /// in chunks on the peers: one commit, no put (0 keeps none; at most 64K).
    #[arg(long, env = "SWARMFS_INLINE_MAX", default_value = "4K", value_parser = parse_inline_max)]
    pub inline_max: usize,
    /// Hide the progress bar.
    #[arg(long, short, env = "SWARMFS_QUIET")]
    pub quiet: bool,
    /// Keep the local file's modification time and permission bits (like `cp -p`).
    #[arg(long, short = 'p', env = "SWARMFS_PRESERVE")]
    pub preserve: bool,
    /// LOCAL is a directory: upload its whole tree as the directory REMOTE (made if missing;
    /// files of the same names in it are replaced), in this one process.
    #[arg(long, short = 'r', env = "SWARMFS_RECURSIVE")]
    pub recursive: bool,
    /// With -r: files uploaded at once.
    #[arg(long, env = "SWARMFS_JOBS", default_value_t = crate::tree::DEFAULT_JOBS)]
    pub jobs: usize,
}

#[derive(Args)]
pub struct GetArgs {
    pub remote: String,
    pub local: PathBuf,
    /// Hide the progress bar.
    #[arg(long, short, env = "SWARMFS_QUIET")]
    pub quiet: bool,
    /// REMOTE is a directory: download its whole tree as the local directory LOCAL (made if
    /// missing; files of the same names in it are replaced), in this one process.
    #[arg(long, short = 'r', env = "SWARMFS_RECURSIVE")]
    pub recursive: bool,
    /// With -r: files downloaded at once.
    #[arg(long, env = "SWARMFS_JOBS", default_value_t = crate::tree::DEFAULT_JOBS)]
    pub jobs: usize,
    /// Serve each chunk to other members as soon as it is verified, while downloading (a
    /// cached source: it speeds others up and never counts as a replica).
    #[arg(long, env = "SWARMFS_SERVE")]
    pub serve: bool,
    /// Like --serve, and keep serving after the download until Ctrl-C or SIGTERM.
    #[arg(long, env = "SWARMFS_SEED")]
    pub seed: bool,
    /// Address to serve on with --serve or --seed (port 0 picks a free port).
    #[arg(long, env = "SWARMFS_SERVE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address others dial to reach this node (default: the listen address).
    #[arg(long, env = "SWARMFS_ADVERTISE")]
    pub advertise: Option<String>,
}

#[derive(Args)]
pub struct CatArgs {
    pub remote: String,
    /// First byte to write.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub offset: u64,
    /// Bytes to write (default: to the end).
    #[arg(long, value_parser = parse_size)]
    pub length: Option<u64>,
}

#[derive(Args)]
#[command(disable_help_flag = true)]
pub struct LsArgs {
    #[arg(default_value = "/")]
    pub dir: String,
    /// Long listing: mode, size, modification time (UTC), name.
    #[arg(short = 'l', long = "long", env = "SWARMFS_LS_LONG")]
    pub long: bool,
    /// With -l: sizes in binary units (1.5 MiB) instead of bytes.
    #[arg(short = 'h', long = "human-readable", env = "SWARMFS_LS_HUMAN")]
    pub human: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Args)]
pub struct StatArgs {
    pub path: String,
    /// Also show each source's chunk map: which chunks each durable holder and each cached
    /// source has (`sources` in `--json`, `have` one character per chunk).
    #[arg(long, env = "SWARMFS_CHUNKS")]
    pub chunks: bool,
}

/// One source of a file's chunks and which of them it has.
struct SourceMap {
    node: String,
    cached: bool,
    state: &'static str,
    have: Vec<bool>,
}

/// Per source (durable holders first, then cached sources, each by node id), which chunks it
/// holds, from the per-chunk holder lists.
fn source_maps(holders: &[(String, Vec<(String, &'static str)>)], cached: &[Vec<String>]) -> Vec<SourceMap> {
    let n = holders.len();
    let mut maps: std::collections::BTreeMap<(bool, String), SourceMap> = Default::default();
    let mut mark = |node: &str, is_cached: bool, state: &'static str, i: usize| {
        let m = maps.entry((is_cached, node.to_string())).or_insert_with(|| SourceMap {
            node: node.to_string(),
            cached: is_cached,
            state,
            have: vec![false; n],
        });
        m.have[i] = true;
    };
    for (i, (_, hs)) in holders.iter().enumerate() {
        for (node, state) in hs {
            mark(node, false, state, i);
        }
        for node in &cached[i] {
            mark(node, true, "up", i);
        }
    }
    maps.into_values().collect()
}

/// A chunk map in at most 64 columns: `#` all chunks of the column held, `+` some, `.` none.
fn bitmap_line(have: &[bool]) -> String {
    let per = have.len().div_ceil(64).max(1);
    have.chunks(per)
        .map(|c| match c.iter().filter(|h| **h).count() {
            0 => '.',
            k if k == c.len() => '#',
            _ => '+',
        })
        .collect()
}

#[derive(Args)]
pub struct RmArgs {
    pub path: String,
    /// Remove a directory and everything below it.
    #[arg(short, long)]
    pub recursive: bool,
}

#[derive(Args)]
pub struct MvArgs {
    pub from: String,
    pub to: String,
}

#[derive(Args)]
pub struct MkdirArgs {
    pub path: String,
    /// Create missing parents; no error if it exists.
    #[arg(short, long)]
    pub parents: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    pub text: String,
}

pub async fn connect(cli: &Cli) -> Result<Client> {
    let home = Home::load(&cli.home_dir())?;
    let swarm = home.client_swarm()?;
    let t = &home.token;
    Client::connect(swarm, &t.tracker_addrs, t.tracker_id, t.data_key.clone())
        .await
        .with_context(|| format!("cannot reach the tracker at {}", t.tracker_addrs.join(" or ")))
}

fn remote(s: &str) -> Result<RemotePath> {
    Ok(RemotePath::parse(s)?)
}

/// A remote name as text output shows it: escaped on a terminal, raw into a pipe (where a
/// script reads it) and always raw in `--json`.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        crate::out::escaped(name)
    } else {
        name.into()
    }
}

pub use swarmfs_proto::human_bytes as human;

/// `drwxr-xr-x`, as ls(1) shows an entry's type and permission bits.
pub fn mode_string(kind: EntryKind, mode: u32) -> String {
    let kind = match kind {
        EntryKind::Dir => 'd',
        EntryKind::File => '-',
        EntryKind::Symlink => 'l',
        EntryKind::Special => match mode & 0o170000 {
            0o010000 => 'p',
            0o020000 => 'c',
            0o060000 => 'b',
            0o140000 => 's',
            _ => '?',
        },
    };
    let mut s = String::from(kind);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set_char,
            (false, true) => set_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `2026-11-24 02:40:12 UTC` for milliseconds since the epoch (no time zone database here:
/// always UTC, and said so).
pub fn utc_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `1 chunk`, `3 chunks`.
pub fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The rate of a transfer for a summary line, in the progress bar's units; none for a
/// transfer too small or quick to give a meaningful one.
pub fn rate(bytes: u64, secs: f64) -> Option<String> {
    (bytes >= 1 << 20 && secs >= 0.05).then(|| format!("{}/s", human((bytes as f64 / secs) as u64)))
}

impl PutArgs {
    /// The upload options these flags ask for.
    pub fn options(&self) -> Result<PutOptions> {
        if self.min_replicas.is_some_and(|m| m > self.replicas) {
            return Err(crate::UsageError(format!(
                "--min-replicas {} is more than --replicas {}",
                self.min_replicas.unwrap_or(0),
                self.replicas
            ))
            .into());
        }
        Ok(PutOptions {
            chunk_size: self.chunk_size,
            replicas: self.replicas,
            min_replicas: self.min_replicas,
            policy: self.placement,
            window: self.window,
            inline_max: self.inline_max,
        })
    }
}

pub async fn put(cli: &Cli, a: &PutArgs) -> Result<()> {
    if a.recursive {
        return crate::tree::put(cli, a).await;
    }
    let opts = a.options()?;
    let dest = remote(&a.remote)?;
    // Read before the upload: what the file was when it was read is what is kept.
    let preserved = match (a.preserve, a.local == std::path::Path::new("-")) {
        (false, _) => None,
        (true, true) => return Err(crate::UsageError("--preserve needs a file, not stdin".into()).into()),
        (true, false) => {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&a.local).with_context(|| format!("put {}", a.local.display()))?;
            Some((m.mode() & 0o7777, m.mtime() * 1000 + m.mtime_nsec() / 1_000_000))
        }
    };
    let client = connect(cli).await?;
    let bar = Bar::new("put", !a.quiet && !cli.json);
    let report = client.put(&a.local, &dest, &opts, &bar).await;
    bar.finish();
    let report = report.with_context(|| format!("put {} -> {dest}", a.local.display()))?;
    if let Some((mode, mtime_ms)) = preserved {
        client
            .set_attr(&dest, Some(mode), None, None, Some(mtime_ms))
            .await
            .with_context(|| format!("put {dest}: stored, but keeping its mode and time failed"))?;
    }
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    if cli.json {
        let (direct, punch, relay) = client.paths();
        outln!(
            "{}",
            json!({ "path": dest.to_string(), "size": report.size, "chunks": report.chunks, "replicas": report.replicas,
                    "seconds": secs, "mb_s": report.size as f64 / secs / 1e6,
                    "connections": { "direct": direct, "punch": punch, "relay": relay } })
        );
    } else if !a.quiet && report.chunks == 0 && report.size > 0 {
        errln!("stored {dest}: {} in its manifest, on the tracker (a small file)", human(report.size));
    } else if !a.quiet {
        errln!(
            "stored {dest}: {} in {} × {}{}",
            human(report.size),
            count(report.chunks as u64, "chunk"),
            count(report.replicas as u64, "replica"),
            rate(report.size, secs).map(|r| format!(", {r}")).unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn get(cli: &Cli, a: &GetArgs) -> Result<()> {
    if a.recursive {
        return crate::tree::get(cli, a).await;
    }
    // A link needs no home: it is its own credential, for its one file. What it serves
    // (--seed) it keeps under the temp directory.
    let (client, src, manifest, serving) = if swarmfs_core::Link::looks_like(&a.remote) {
        let link = swarmfs_core::Link::decode(&a.remote)?;
        let (client, swarm) = crate::links::connect_link(&link).await?;
        let client = Arc::new(client);
        let (entry, manifest) = client.open_link(&link).await.context("open the link")?;
        let serving = (swarm, std::env::temp_dir().join("swarmfs-link"), link.tracker_id);
        (client, RemotePath::parse(&entry.path)?, manifest, Some(serving))
    } else {
        let src = remote(&a.remote)?;
        let client = Arc::new(connect(cli).await?);
        let (_, manifest) = client.open(&src).await.with_context(|| format!("get {src}"))?;
        let serving = match a.serve || a.seed {
            true => {
                let home = Home::load(&cli.home_dir())?;
                Some((home.client_swarm()?, home.dir, home.token.tracker_id))
            }
            false => None,
        };
        (client, src, manifest, serving)
    };
    let seeder = if let Some((swarm, root, tracker_id)) = serving.filter(|_| a.serve || a.seed) {
        let s = crate::seed::Seeder::start(
            client.clone(),
            swarm,
            &root,
            tracker_id,
            &a.listen,
            a.advertise.as_deref(),
            None,
        )
        .await?;
        Some(s)
    } else {
        None
    };
    let bar = Bar::new("get", !a.quiet && !cli.json);
    let report = client.get_manifest(&manifest, src.name(), &a.local, &bar).await;
    bar.finish();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            if let Some(s) = seeder {
                s.stop().await;
            }
            return Err(anyhow::Error::from(e).context(format!("get {src}")));
        }
    };
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    if !cli.json && !a.quiet {
        let rate = rate(report.size, secs).map(|r| format!(", {r}")).unwrap_or_default();
        errln!("fetched {src}: {}{rate}", human(report.size));
    }
    let mut served = None;
    if let Some(s) = seeder {
        if a.seed {
            if !cli.json {
                errln!("seeding {src} on {} until Ctrl-C", s.addr);
            }
            crate::nodes::shutdown_on_signal().cancelled().await;
        }
        served = Some(s.stop().await);
    }
    if cli.json {
        let (direct, punch, relay) = client.paths();
        outln!(
            "{}",
            json!({ "path": src.to_string(), "size": report.size, "seconds": secs,
                    "mb_s": report.size as f64 / secs / 1e6, "bad_copies": report.bad_copies,
                    "fetch_order": report.order, "served_bytes": served,
                    "endgame_requests": report.endgame_requests, "endgame_wins": report.endgame_wins,
                    "connections": { "direct": direct, "punch": punch, "relay": relay } })
        );
    } else if let Some(b) = served {
        errln!("served {} to others", human(b));
    }
    Ok(())
}

pub async fn cat(cli: &Cli, a: &CatArgs) -> Result<()> {
    let src = remote(&a.remote)?;
    let client = connect(cli).await?;
    let mut out = tokio::io::stdout();
    client
        .read_range(&src, a.offset, a.length, &mut out, &swarmfs_client::Quiet)
        .await
        .with_context(|| format!("cat {src}"))?;
    Ok(())
}

pub async fn ls(cli: &Cli, a: &LsArgs) -> Result<()> {
    let dir = remote(&a.dir)?;
    let client = connect(cli).await?;
    let entries = client.list(&dir).await?;
    if cli.json {
        outln!("{}", serde_json::Value::Array(entries.iter().map(views::entry_json).collect()));
    } else {
        for e in entries {
            let name = shown(e.path.rsplit('/').next().unwrap_or(""));
            let suffix = match e.kind {
                EntryKind::Dir => "/",
                EntryKind::File => "",
                EntryKind::Symlink => "@",
                EntryKind::Special => "|",
            };
            let size = match e.kind {
                EntryKind::File if a.human => human(e.size),
                EntryKind::File => e.size.to_string(),
                _ => "-".to_string(),
            };
            if a.long {
                outln!("{} {size:>12}  {}  {name}{suffix}", mode_string(e.kind, e.mode), utc_time(e.mtime_ms));
            } else {
                outln!("{size:>12}  {name}{suffix}");
            }
        }
    }
    Ok(())
}

pub async fn stat(cli: &Cli, a: &StatArgs) -> Result<()> {
    let p = remote(&a.path)?;
    let client = connect(cli).await?;
    let e = client.stat(&p).await?;
    // Each chunk's holders, as the tracker knows them now (a file with content only).
    let mut holders: Vec<(String, Vec<(String, &'static str)>)> = Vec::new();
    let mut cached: Vec<Vec<String>> = Vec::new();
    // Small writes the mount stored as slices, and the packs holding them (listed after the
    // chunks: their copies count as much).
    let mut slices = (0, 0);
    // A small file kept in its manifest (on the tracker), not in chunks.
    let mut inline = false;
    if e.kind == EntryKind::File && e.file_id.is_some() {
        let (_, manifest) = client.open(&p).await?;
        slices = (manifest.slices.len(), manifest.packs.len());
        inline = manifest.inline.is_some();
        let refs: Vec<_> = manifest.referenced().cloned().collect();
        let located = client.locate(&refs).await?;
        for (i, c) in refs.iter().enumerate() {
            let hs = located.of(i).into_iter().map(|h| (h.node.to_string(), h.state.as_str())).collect();
            holders.push((c.id.to_string(), hs));
            cached.push(located.cached_of(i).into_iter().map(|h| h.node.to_string()).collect());
        }
    }
    if cli.json {
        let mut v = views::entry_json(&e);
        (v["slices"], v["packs"]) = (json!(slices.0), json!(slices.1));
        v["inline"] = json!(inline);
        v["chunk_holders"] = holders
            .iter()
            .enumerate()
            .map(|(i, (id, hs))| {
                json!({
                    "index": i,
                    "chunk": id,
                    "live": hs.iter().filter(|(_, st)| *st == "up" || *st == "draining").count(),
                    "holders": hs.iter().map(|(n, st)| json!({"node": n, "state": st})).collect::<Vec<_>>(),
                    "cached": cached[i],
                })
            })
            .collect();
        if a.chunks {
            v["sources"] = source_maps(&holders, &cached)
                .iter()
                .map(|m| {
                    json!({
                        "node": m.node,
                        "kind": if m.cached { "cached" } else { "durable" },
                        "state": m.state,
                        "chunks": m.have.iter().filter(|h| **h).count(),
                        "have": m.have.iter().map(|h| if *h { '1' } else { '0' }).collect::<String>(),
                    })
                })
                .collect();
        }
        outln!("{v}");
    } else {
        outln!("path:   {}", shown(&e.path));
        let kind = match e.kind {
            EntryKind::Dir => "directory",
            EntryKind::File => "file",
            EntryKind::Symlink => "symbolic link",
            EntryKind::Special => "special file",
        };
        outln!("kind:   {kind}");
        outln!("mode:   {} ({:o}), owner {}:{}", mode_string(e.kind, e.mode), e.mode & 0o7777, e.uid, e.gid);
        if e.kind == EntryKind::File {
            outln!("size:   {} ({})", e.size, human(e.size));
            // The tracker counts every chunk id the commit placed, packs included.
            if inline {
                outln!("chunks: none: kept in its manifest, on the tracker (a small file)");
            } else {
                outln!("chunks: {}", (e.chunks as usize).saturating_sub(slices.1));
            }
            if slices.0 > 0 {
                outln!("slices: {} small writes over the chunks, in {} packs", slices.0, slices.1);
            }
            if e.replicas > 0 {
                let fewest = holders
                    .iter()
                    .map(|(_, hs)| hs.iter().filter(|(_, st)| *st == "up" || *st == "draining").count())
                    .min()
                    .unwrap_or(0);
                let mut nodes: Vec<&str> = holders.iter().flat_map(|(_, hs)| hs.iter().map(|(n, _)| &n[..8])).collect();
                nodes.sort_unstable();
                nodes.dedup();
                outln!("copies: {} wanted per chunk, at least {fewest} live for each", e.replicas);
                outln!("holders: {}", nodes.join(" "));
            }
        }
        outln!("mtime:  {}", utc_time(e.mtime_ms));
        outln!("ctime:  {}", utc_time(e.ctime_ms));
        if a.chunks {
            outln!("chunk map ({} chunks; # held, + partly, . not held):", holders.len());
            for m in source_maps(&holders, &cached) {
                let kind = if m.cached { "cached" } else { "durable" };
                let held = m.have.iter().filter(|h| **h).count();
                outln!(
                    "  {} {kind:<7} {:<8} {held:>6}/{:<6} {}",
                    &m.node[..8],
                    m.state,
                    holders.len(),
                    bitmap_line(&m.have)
                );
            }
            return Ok(());
        }
        for (i, (id, hs)) in holders.iter().enumerate() {
            let live = hs.iter().filter(|(_, st)| *st == "up" || *st == "draining").count();
            let list: Vec<String> = hs.iter().map(|(n, st)| format!("{}({st})", &n[..8])).collect();
            let extra = if cached[i].is_empty() {
                String::new()
            } else {
                format!("; cached on {}", cached[i].iter().map(|n| &n[..8]).collect::<Vec<_>>().join(" "))
            };
            outln!("  chunk {i:>4} {}  {live} live: {}{extra}", &id[..8], list.join(" "));
        }
    }
    Ok(())
}

pub async fn rm(cli: &Cli, a: &RmArgs) -> Result<()> {
    let p = remote(&a.path)?;
    connect(cli).await?.remove(&p, a.recursive).await?;
    Ok(())
}

pub async fn mv(cli: &Cli, a: &MvArgs) -> Result<()> {
    let (from, to) = (remote(&a.from)?, remote(&a.to)?);
    let client = connect(cli).await?;
    // `mv a /dir` moves into an existing directory, like mv(1).
    let to = match client.stat(&to).await {
        Ok(e) if e.kind == EntryKind::Dir => to.join(from.name())?,
        _ => to,
    };
    client.rename(&from, &to).await?;
    Ok(())
}

pub async fn mkdir(cli: &Cli, a: &MkdirArgs) -> Result<()> {
    let p = remote(&a.path)?;
    connect(cli).await?.mkdir(&p, a.parents).await?;
    Ok(())
}

pub async fn search(cli: &Cli, a: &SearchArgs) -> Result<()> {
    let client = connect(cli).await?;
    let found = client.search(&a.text).await?;
    if cli.json {
        outln!("{}", serde_json::Value::Array(found.iter().map(views::entry_json).collect()));
    } else {
        for e in found {
            outln!("{}{}", shown(&e.path), if e.kind == EntryKind::Dir { "/" } else { "" });
        }
    }
    Ok(())
}

pub async fn peers(cli: &Cli) -> Result<()> {
    let client = connect(cli).await?;
    let peers = client.peers().await?;
    if cli.json {
        outln!("{}", serde_json::Value::Array(peers.iter().map(views::peer_json).collect()));
    } else {
        outln!(
            "{:<10} {:<8} {:<9} {:>10} {:>10} {:>8}  ADDRESS",
            "NODE",
            "STATE",
            "REACH",
            "USED",
            "CAPACITY",
            "CHUNKS"
        );
        for p in peers {
            outln!(
                "{:<10} {:<8} {:<9} {:>10} {:>10} {:>8}  {}",
                p.node.short(),
                p.state.as_str(),
                p.reach.as_str(),
                human(p.used),
                human(p.capacity),
                p.chunks,
                p.addrs.join(",")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(mode_string(EntryKind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o640), "-rw-r-----");
        assert_eq!(mode_string(EntryKind::File, 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(EntryKind::File, 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(EntryKind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(EntryKind::Special, 0o010644), "prw-r--r--");
        assert_eq!(mode_string(EntryKind::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn times_are_calendar_dates_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_709_210_096_000), "2024-02-29 12:34:56 UTC");
        assert_eq!(utc_time(-1000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn a_tiny_or_instant_transfer_shows_no_rate() {
        assert_eq!(rate(22, 0.01), None);
        assert_eq!(rate(10 << 20, 0.001), None);
        assert_eq!(rate(10 << 20, 2.0).as_deref(), Some("5.0 MiB/s"));
    }

    #[test]
    fn a_chunk_map_folds_into_64_columns() {
        assert_eq!(bitmap_line(&[true, false, true]), "#.#");
        let mut have = vec![true; 128];
        have[1] = false;
        have[64..66].fill(false);
        let line = bitmap_line(&have);
        assert_eq!(line.len(), 64);
        assert_eq!(&line[..2], "+#", "two chunks per column");
        assert_eq!(&line[32..33], ".");
    }

    #[test]
    fn source_maps_keep_durable_and_cached_apart() {
        let holders = vec![
            ("c0".to_string(), vec![("aaaaaaaa".to_string(), "up")]),
            ("c1".to_string(), vec![("aaaaaaaa".to_string(), "up")]),
        ];
        let cached = vec![vec!["bbbbbbbb".to_string()], vec![]];
        let maps = source_maps(&holders, &cached);
        assert_eq!(maps.len(), 2);
        assert!(!maps[0].cached && maps[0].have == [true, true]);
        assert!(maps[1].cached && maps[1].have == [true, false]);
    }
}
