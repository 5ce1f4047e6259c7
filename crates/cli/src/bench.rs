//! `swarmfs bench`: put and get a random file through a local swarm of real processes, next
//! to baselines measured in the same run (raw TCP loopback copy, BLAKE3 on one core), so the
//! ratios mean something on a noisy machine.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::RngCore;
use serde_json::json;

use crate::local::LocalSwarm;
use crate::nodes::parse_size;
use crate::usage::{self, Usage};
use crate::Cli;

#[derive(Args)]
pub struct BenchArgs {
    /// File size.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub size: u64,
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Working directory (default: a new directory under the system temp dir, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also measure through a FUSE mount: sequential write and read with dd (bs=1M), and
    /// 1,000 files of 4 KiB created, written and closed; next to the same on local disk.
    #[arg(long)]
    pub mount: bool,
    /// Also measure repair (needs --peers 4 or more): a peer dies; a get while repair runs at
    /// the default --repair-rate next to a get with the peer down and no repair; then another
    /// peer dies and repair runs unlimited: time to full redundancy, as MB/s next to the get.
    #[arg(long)]
    pub repair: bool,
    /// Also measure the HTTP gateway: a sequential GET of the whole file with curl, next to
    /// `swarmfs get` of the same file, in alternated rounds of the same run.
    #[arg(long)]
    pub gateway: bool,
}

const BUF: usize = 1 << 20;

fn raw_tcp_copy(size: u64) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; BUF];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    let buf = vec![7u8; BUF];
    let mut left = size;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    drop(s);
    let got = reader.join().map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    if got != size {
        bail!("raw TCP copy moved {got} of {size} bytes");
    }
    Ok(size as f64 / start.elapsed().as_secs_f64() / 1e6)
}

fn blake3_speed() -> f64 {
    let buf = vec![1u8; 64 << 20];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_millis() < 300 {
        std::hint::black_box(blake3::hash(&buf));
        n += buf.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn write_random(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; BUF];
    let mut left = size;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn file_hash(path: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize())
}

/// Runs a client command as its own process; returns wall seconds and its usage.
fn timed_client(dir: &Path, home: &Path, args: &[&str], name: &str) -> Result<(f64, Usage)> {
    let usage_file = dir.join(format!("{name}-usage.json"));
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(args)
        .arg("--home")
        .arg(home)
        .arg("--usage-file")
        .arg(&usage_file)
        .output()
        .with_context(|| format!("running {name}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let u: Usage = serde_json::from_slice(&std::fs::read(&usage_file)?)?;
    Ok((secs, u))
}

fn peers_usage(swarm: &LocalSwarm) -> Vec<Usage> {
    swarm.peers.iter().map(|c| usage::of(&c.id().to_string()).unwrap_or_default()).collect()
}

pub async fn run(cli: &Cli, a: &BenchArgs) -> Result<()> {
    swarmfs_core::check_chunk_size(a.chunk_size)?;
    let (dir, cleanup) = match &a.dir {
        Some(d) => (d.clone(), false),
        None => (std::env::temp_dir().join(format!("swarmfs-bench-{}", std::process::id())), true),
    };
    std::fs::create_dir_all(&dir)?;
    let result = bench(cli, a, &dir).await;
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench(cli: &Cli, a: &BenchArgs, dir: &Path) -> Result<()> {
    let gib = a.size as f64 / (1u64 << 30) as f64;
    let say = |s: &str| {
        if !cli.json {
            errln!("{s}");
        }
    };
    say(&format!("bench: {} bytes, {} peers, {} replicas, chunk {}", a.size, a.peers, a.replicas, a.chunk_size));
    let input = dir.join("input.bin");
    write_random(&input, a.size)?;
    let raw = raw_tcp_copy(a.size)?;
    say(&format!("  raw TCP loopback copy: {raw:.0} MB/s"));
    let b3 = blake3_speed();
    say(&format!("  BLAKE3, one core:      {b3:.0} MB/s"));

    let capacity = format!("{}", a.size * 4 + (1 << 30));
    let swarm = LocalSwarm::start(&dir.join("swarm"), a.peers, &capacity).await?;
    let before = peers_usage(&swarm);
    let input_s = input.display().to_string();
    let (chunk, replicas) = (a.chunk_size.to_string(), a.replicas.to_string());
    let (put_secs, put_usage) = timed_client(
        dir,
        &swarm.client_home,
        &["put", &input_s, "/bench/file", "--quiet", "--chunk-size", &chunk, "--replicas", &replicas],
        "put",
    )?;
    let mid = peers_usage(&swarm);
    let put_mb_s = a.size as f64 / put_secs / 1e6;
    say(&format!("  put: {put_mb_s:.0} MB/s ({:.2}x raw TCP)", put_mb_s / raw));

    let output = dir.join("output.bin");
    let output_s = output.display().to_string();
    let (get_secs, get_usage) =
        timed_client(dir, &swarm.client_home, &["get", "/bench/file", &output_s, "--quiet"], "get")?;
    let after = peers_usage(&swarm);
    let get_mb_s = a.size as f64 / get_secs / 1e6;
    say(&format!("  get: {get_mb_s:.0} MB/s ({:.2}x raw TCP)", get_mb_s / raw));
    if file_hash(&input)? != file_hash(&output)? {
        bail!("downloaded file differs from the input");
    }
    let mount_report = if a.mount { Some(bench_mount(cli, a, dir, &swarm, &input).await?) } else { None };
    let gateway_report = if a.gateway { Some(bench_gateway(cli, a, dir, &swarm, &input).await?) } else { None };
    let repair_report = if a.repair {
        let mut swarm = swarm;
        let r = bench_repair(cli, a, dir, &mut swarm, get_mb_s).await;
        drop(swarm);
        Some(r?)
    } else {
        drop(swarm);
        None
    };

    let cpu = |a: &[Usage], b: &[Usage]| a.iter().zip(b).map(|(x, y)| y.cpu_seconds - x.cpu_seconds).sum::<f64>();
    let peers_put_cpu = cpu(&before, &mid);
    let peers_get_cpu = cpu(&mid, &after);
    let peer_peak = after.iter().map(|u| u.peak_rss_bytes).max().unwrap_or(0);
    let per_gib = |s: f64| if gib > 0.0 { s / gib } else { 0.0 };
    let report = json!({
        "size": a.size,
        "peers": a.peers,
        "replicas": a.replicas,
        "chunk_size": a.chunk_size,
        "raw_tcp_mb_s": raw,
        "blake3_one_core_mb_s": b3,
        "put_mb_s": put_mb_s,
        "get_mb_s": get_mb_s,
        "put_vs_raw_tcp": put_mb_s / raw,
        "get_vs_raw_tcp": get_mb_s / raw,
        "put_client_cpu_s_per_gib": per_gib(put_usage.cpu_seconds),
        "get_client_cpu_s_per_gib": per_gib(get_usage.cpu_seconds),
        "put_peers_cpu_s_per_gib": per_gib(peers_put_cpu),
        "get_peers_cpu_s_per_gib": per_gib(peers_get_cpu),
        "client_peak_rss_bytes": put_usage.peak_rss_bytes.max(get_usage.peak_rss_bytes),
        "put_client_peak_rss_bytes": put_usage.peak_rss_bytes,
        "get_client_peak_rss_bytes": get_usage.peak_rss_bytes,
        "peer_peak_rss_bytes": peer_peak,
        "verified": true,
    });
    let mut report = report;
    if let Some(m) = &mount_report {
        report["mount"] = m.clone();
        report["mount_write_vs_put"] = json!(m["write_mb_s"].as_f64().unwrap_or(0.0) / put_mb_s);
        report["mount_read_vs_get"] = json!(m["read_mb_s"].as_f64().unwrap_or(0.0) / get_mb_s);
    }
    if let Some(r) = &repair_report {
        report["repair"] = r.clone();
    }
    if let Some(g) = &gateway_report {
        report["gateway"] = g.clone();
    }
    if cli.json {
        outln!("{report}");
    } else {
        outln!("size {} B, {} peers, R={}", a.size, a.peers, a.replicas);
        outln!("raw TCP      {raw:>8.0} MB/s   BLAKE3 {b3:.0} MB/s (one core)");
        outln!(
            "put          {put_mb_s:>8.0} MB/s   {:.2}x raw   client {:.2} CPU-s/GiB, peers {:.2} CPU-s/GiB",
            put_mb_s / raw,
            per_gib(put_usage.cpu_seconds),
            per_gib(peers_put_cpu)
        );
        outln!(
            "get          {get_mb_s:>8.0} MB/s   {:.2}x raw   client {:.2} CPU-s/GiB, peers {:.2} CPU-s/GiB",
            get_mb_s / raw,
            per_gib(get_usage.cpu_seconds),
            per_gib(peers_get_cpu)
        );
        outln!(
            "peak RSS     client put {} MiB, get {} MiB; largest peer {} MiB",
            put_usage.peak_rss_bytes >> 20,
            get_usage.peak_rss_bytes >> 20,
            peer_peak >> 20
        );
        if let Some(m) = &mount_report {
            let f = |k: &str| m[k].as_f64().unwrap_or(0.0);
            outln!(
                "mount write  {:>8.0} MB/s   {:.2}x put    (local disk, fsync at end: {:.0} MB/s)",
                f("write_mb_s"),
                f("write_mb_s") / put_mb_s,
                f("local_write_mb_s")
            );
            outln!(
                "mount read   {:>8.0} MB/s   {:.2}x get    (local disk, page cache: {:.0} MB/s)",
                f("read_mb_s"),
                f("read_mb_s") / get_mb_s,
                f("local_read_mb_s")
            );
            outln!(
                "small files  {:>8.0} files/s (1,000 × 4 KiB create+write+close; local disk {:.0} files/s)",
                f("small_files_per_s"),
                f("local_small_files_per_s")
            );
        }
        if let Some(g) = &gateway_report {
            let f = |k: &str| g[k].as_f64().unwrap_or(0.0);
            outln!(
                "gateway GET  {:>8.0} MB/s   {:.2}x get    (same rounds: get {:.0} MB/s; gateway {:.2} CPU-s/GiB, curl {:.2}, peers {:.2}; gateway peak RSS {} MiB)",
                f("gateway_mb_s"),
                f("gateway_vs_get"),
                f("get_mb_s"),
                f("gateway_cpu_s_per_gib"),
                f("curl_cpu_s_per_gib"),
                f("peers_cpu_s_per_gib"),
                g["gateway_peak_rss_bytes"].as_u64().unwrap_or(0) >> 20
            );
        }
        if let Some(r) = &repair_report {
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            outln!(
                "repair       {:>8.0} MB/s   {:.2}x get    ({:.0} MiB made again in {:.1} s, no rate limit)",
                f("unlimited_mb_s"),
                f("unlimited_vs_get"),
                f("unlimited_bytes") / 1048576.0,
                f("unlimited_secs")
            );
            outln!(
                "get, repairing {:>6.0} MB/s   {:.2}x the same get with the peer down and no repair ({:.0} MB/s); repair at the default limit: {:.0} MB/s",
                f("get_during_repair_mb_s"),
                f("get_during_repair_vs_idle"),
                f("get_peer_down_mb_s"),
                f("limited_mb_s")
            );
        }
    }
    Ok(())
}

/// Health as the tracker reports it now.
async fn health(swarm: &LocalSwarm) -> Result<swarmfs_proto::HealthReport> {
    let client = swarm.client().await?;
    match client.call(&swarmfs_proto::Request::Health).await? {
        swarmfs_proto::Response::Health(h) => Ok(*h),
        _ => bail!("unexpected answer to Health"),
    }
}

/// Waits until no chunk is under-replicated (or repairing); returns the seconds waited.
async fn wait_repaired(swarm: &LocalSwarm, limit: std::time::Duration) -> Result<f64> {
    let start = Instant::now();
    loop {
        if let Ok(h) = health(swarm).await {
            if h.chunks.under_replicated + h.chunks.repairing == 0 && h.repair_queued == 0 && h.chunks.lost == 0 {
                return Ok(start.elapsed().as_secs_f64());
            }
        }
        if start.elapsed() > limit {
            bail!("repair did not finish within {limit:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Bytes of chunk files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// The running peer holding the most bytes on disk, by index into `swarm.peers`.
fn fullest_peer(swarm: &mut LocalSwarm) -> Result<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    for i in 0..swarm.peers.len() {
        if !matches!(swarm.peers[i].try_wait(), Ok(None)) {
            continue;
        }
        let held = dir_bytes(&swarm.dir.join(format!("peer{}", i + 1)).join("store/chunks"));
        if best.is_none_or(|(_, b)| held > b) {
            best = Some((i, held));
        }
    }
    best.context("no live peer")
}

async fn bench_repair(
    cli: &Cli,
    a: &BenchArgs,
    dir: &Path,
    swarm: &mut LocalSwarm,
    get_mb_s: f64,
) -> Result<serde_json::Value> {
    let say = |s: &str| {
        if !cli.json {
            errln!("{s}");
        }
    };
    if swarm.peers.len() < 4 {
        bail!("--repair needs --peers 4 or more (two peers die, R copies must still fit)");
    }
    let mb = a.size as f64 / 1e6;
    let output_s = dir.join("repair-get.bin").display().to_string();
    let client_home = swarm.client_home.clone();
    let get = |name: &str| timed_client(dir, &client_home, &["get", "/bench/file", &output_s, "--quiet"], name);
    // 1. The default rate limit, repair after 20 s: first a get with a peer down and no
    //    repair yet, then one while repair runs.
    swarm.restart_tracker(&["--repair-after", "20"]).await?;
    let (victim, _) = fullest_peer(swarm)?;
    swarm.kill_peer(victim);
    let killed = Instant::now();
    let (idle_secs, _) = get("get-peer-down")?;
    let idle_mb_s = mb / idle_secs;
    say(&format!("  get, a peer down, no repair yet: {idle_mb_s:.0} MB/s"));
    while killed.elapsed() < std::time::Duration::from_secs(21) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    loop {
        let h = health(swarm).await?;
        if h.repair_in_flight > 0 || h.repaired_chunks > 0 {
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            bail!("repair did not start");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (busy_secs, _) = get("get-during-repair")?;
    let busy_mb_s = mb / busy_secs;
    let still_repairing = health(swarm).await?.chunks.under_replicated > 0;
    say(&format!(
        "  get while repair runs at the default limit: {busy_mb_s:.0} MB/s{}",
        if still_repairing { "" } else { " (repair finished during the get)" }
    ));
    wait_repaired(swarm, std::time::Duration::from_secs(600)).await?;
    let limited = health(swarm).await?;
    let limited_secs = started.elapsed().as_secs_f64();
    // 2. No rate limit: another peer dies; time from its death (minus the 1 s wait) to full
    //    redundancy.
    swarm.restart_tracker(&["--repair-after", "1", "--repair-rate", "0"]).await?;
    let (victim, held) = fullest_peer(swarm)?;
    let before = health(swarm).await?.repaired_bytes;
    swarm.kill_peer(victim);
    let t0 = Instant::now();
    wait_repaired(swarm, std::time::Duration::from_secs(600)).await?;
    let secs = (t0.elapsed().as_secs_f64() - 1.0).max(0.001);
    let bytes = health(swarm).await?.repaired_bytes.saturating_sub(before);
    let unlimited_mb_s = bytes as f64 / secs / 1e6;
    say(&format!(
        "  repair without limit: {:.0} MiB (of {:.0} MiB the dead peer held) in {secs:.1} s: {unlimited_mb_s:.0} MB/s",
        bytes as f64 / 1048576.0,
        held as f64 / 1048576.0
    ));
    Ok(json!({
        "unlimited_mb_s": unlimited_mb_s,
        "unlimited_vs_get": unlimited_mb_s / get_mb_s,
        "unlimited_bytes": bytes,
        "unlimited_secs": secs,
        "get_peer_down_mb_s": idle_mb_s,
        "get_during_repair_mb_s": busy_mb_s,
        "get_during_repair_vs_idle": busy_mb_s / idle_mb_s,
        "repair_finished_during_the_get": !still_repairing,
        "limited_mb_s": limited.repaired_bytes as f64 / limited_secs / 1e6,
    }))
}

fn dd(input: &Path, output: &Path, extra: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let out = Command::new("dd")
        .arg(format!("if={}", input.display()))
        .arg(format!("of={}", output.display()))
        .arg("bs=1M")
        .args(extra)
        .output()
        .context("running dd")?;
    if !out.status.success() {
        bail!("dd failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(start.elapsed().as_secs_f64())
}

fn small_files(dir: &Path) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let data = vec![5u8; 4096];
    let start = Instant::now();
    for i in 0..1000 {
        std::fs::write(dir.join(format!("f{i:04}")), &data)?;
    }
    Ok(1000.0 / start.elapsed().as_secs_f64())
}

/// Rounds of each side in the gateway comparison, alternated (get, gateway, get, ...).
const GATEWAY_ROUNDS: usize = 2;

async fn bench_gateway(
    cli: &Cli,
    a: &BenchArgs,
    dir: &Path,
    swarm: &LocalSwarm,
    input: &Path,
) -> Result<serde_json::Value> {
    let say = |s: &str| {
        if !cli.json {
            errln!("{s}");
        }
    };
    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["gateway", "--listen", "127.0.0.1:0", "--json", "--home"])
        .arg(&swarm.client_home)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting swarmfs gateway")?;
    let result = async {
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().context("gateway stdout")?),
            &mut line,
        )?;
        let started: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the gateway did not start; see {}", dir.join("gateway.log").display()))?;
        let url = format!("{}files/bench/file", started["url"].as_str().unwrap_or_default());
        let gateway_pid = child.id().to_string();
        let output = dir.join("output.bin");
        let output_s = output.display().to_string();
        let (mut get_secs, mut gw_secs, mut gw_cpu, mut curl_cpu, mut peers_cpu) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for round in 0..GATEWAY_ROUNDS {
            let (secs, _) =
                timed_client(dir, &swarm.client_home, &["get", "/bench/file", &output_s, "--quiet"], "get")?;
            get_secs += secs;
            std::fs::remove_file(&output)?;
            let before = (usage::of(&gateway_pid).unwrap_or_default(), peers_usage(swarm));
            let start = Instant::now();
            let curl = Command::new("/usr/bin/time")
                .args(["-f", "%U %S", "curl", "-sS", "--fail", "-o", &output_s, &url])
                .output()
                .context("running curl (scripts/install-deps installs it)")?;
            let secs = start.elapsed().as_secs_f64();
            if !curl.status.success() {
                bail!("curl {url} failed: {}", String::from_utf8_lossy(&curl.stderr).trim());
            }
            let after = (usage::of(&gateway_pid).unwrap_or_default(), peers_usage(swarm));
            gw_secs += secs;
            gw_cpu += after.0.cpu_seconds - before.0.cpu_seconds;
            peers_cpu += after.1.iter().zip(&before.1).map(|(y, x)| y.cpu_seconds - x.cpu_seconds).sum::<f64>();
            let times = String::from_utf8_lossy(&curl.stderr);
            curl_cpu += times.split_whitespace().filter_map(|t| t.parse::<f64>().ok()).sum::<f64>();
            if file_hash(input)? != file_hash(&output)? {
                bail!("the file read through the gateway differs from the input");
            }
            std::fs::remove_file(&output)?;
            say(&format!(
                "  gateway round {}: get {:.0} MB/s, gateway GET {:.0} MB/s",
                round + 1,
                a.size as f64 * (round + 1) as f64 / get_secs / 1e6,
                a.size as f64 * (round + 1) as f64 / gw_secs / 1e6
            ));
        }
        let bytes = a.size as f64 * GATEWAY_ROUNDS as f64;
        let gib = bytes / (1u64 << 30) as f64;
        let (get_mb_s, gw_mb_s) = (bytes / get_secs / 1e6, bytes / gw_secs / 1e6);
        Ok(json!({
            "rounds": GATEWAY_ROUNDS,
            "get_mb_s": get_mb_s,
            "gateway_mb_s": gw_mb_s,
            "gateway_vs_get": gw_mb_s / get_mb_s,
            "gateway_cpu_s_per_gib": gw_cpu / gib,
            "curl_cpu_s_per_gib": curl_cpu / gib,
            "peers_cpu_s_per_gib": peers_cpu / gib,
            "gateway_peak_rss_bytes": usage::of(&gateway_pid).unwrap_or_default().peak_rss_bytes,
        }))
    }
    .await;
    crate::local::terminate(&mut child);
    let _ = child.wait();
    result
}

async fn bench_mount(
    cli: &Cli,
    a: &BenchArgs,
    dir: &Path,
    swarm: &LocalSwarm,
    input: &Path,
) -> Result<serde_json::Value> {
    let say = |s: &str| {
        if !cli.json {
            errln!("{s}");
        }
    };
    let mp = dir.join("mnt");
    std::fs::create_dir_all(&mp)?;
    let chunk = a.chunk_size.to_string();
    let replicas = a.replicas.to_string();
    let log = std::fs::File::create(dir.join("mount.log"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("mount")
        .arg(&mp)
        .arg("--home")
        .arg(&swarm.client_home)
        .args(["--chunk-size", &chunk, "--replicas", &replicas])
        .stderr(log)
        .spawn()
        .context("starting swarmfs mount")?;
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string("/proc/mounts")?.contains(&format!(" {} ", mp.display())) {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the mount did not appear; see {}", dir.join("mount.log").display());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let result = (|| -> Result<serde_json::Value> {
        let mb = a.size as f64 / 1e6;
        let local = dir.join("local.bin");
        let local_write = mb / dd(input, &local, &["conv=fsync"])?;
        let local_read = mb / dd(&local, Path::new("/dev/null"), &[])?;
        std::fs::remove_file(&local)?;
        let write = mb / dd(input, &mp.join("seq.bin"), &[])?;
        say(&format!("  mount sequential write: {write:.0} MB/s"));
        let read = mb / dd(&mp.join("seq.bin"), Path::new("/dev/null"), &[])?;
        say(&format!("  mount sequential read:  {read:.0} MB/s"));
        let local_small = small_files(&dir.join("local-small"))?;
        let small = small_files(&mp.join("small"))?;
        say(&format!("  mount small files:      {small:.0} files/s"));
        Ok(json!({
            "write_mb_s": write,
            "read_mb_s": read,
            "small_files_per_s": small,
            "local_write_mb_s": local_write,
            "local_read_mb_s": local_read,
            "local_small_files_per_s": local_small,
        }))
    })();
    crate::local::terminate(&mut child);
    let _ = child.wait();
    result
}
