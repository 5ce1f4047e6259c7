//! `swarmfs bench`: put and get a random file through a local swarm of real processes, next
//! to baselines measured in the same run (an `nc` pipe, the disk, raw TCP loopback copy,
//! BLAKE3 on one core, and a BitTorrent swarm of the same shape when rqbit is installed:
//! see `rqbit.rs`), so the ratios mean something on a noisy machine.

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
    /// Also measure through a FUSE mount, next to the same on local disk: sequential write
    /// and read with dd (bs=1M); 1,000 files of 4 KiB created, written and closed; a log of
    /// 1,000 lines of 4 KiB appended and fsynced; fio 4 KiB random writes with an fsync every
    /// 32 (then verified), the bytes uploaded and the peers' stores after; `ls -l` of 10,000
    /// entries; a repeated stat.
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
    /// Rounds of nc pipe, put and get (and an rqbit download, when rqbit is installed),
    /// alternated; each figure is the median round's.
    #[arg(long, default_value_t = 3, env = "SWARMFS_BENCH_ROUNDS")]
    pub rounds: usize,
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
    // Whatever the bench discarded goes now, also when it failed part-way (see [`Discard`]).
    let _ = std::fs::remove_dir_all(dir.join(Discard::DIR));
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// The same-run baseline for moving a file over loopback: one `nc` sends the input file, another
/// writes what it receives to a file. Returns wall seconds and both processes' CPU seconds.
fn nc_pipe(input: &Path, output: &Path) -> Result<(f64, f64)> {
    let port = crate::local::free_port()?;
    let timed = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%U %S", "nc"]).args(args).stderr(std::process::Stdio::piped());
        c
    };
    let out = std::fs::File::create(output)?;
    let mut receiver = timed(&["-l", "127.0.0.1", &port.to_string()])
        .stdout(out)
        .spawn()
        .context("running nc (scripts/install-deps installs netcat-openbsd and time)")?;
    // Connecting to see whether it listens would be the one connection it accepts: read
    // the kernel's table of listening sockets instead.
    let listening = format!(":{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/net/tcp")?.contains(&listening) {
        if Instant::now() > deadline {
            bail!("nc -l did not listen on port {port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let start = Instant::now();
    let sender = timed(&["-N", "127.0.0.1", &port.to_string()])
        .stdin(std::fs::File::open(input)?)
        .stdout(std::process::Stdio::null())
        .output();
    // A sender that never connected would leave the listener waiting forever.
    if !sender.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = receiver.kill();
    }
    let (sender, received) = (sender?, receiver.wait_with_output()?);
    let secs = start.elapsed().as_secs_f64();
    let cpu = |o: &std::process::Output, who: &str| -> Result<f64> {
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            bail!("nc ({who}) failed: {}", err.trim());
        }
        let last = err.lines().last().unwrap_or_default();
        Ok(last.split_whitespace().filter_map(|t| t.parse::<f64>().ok()).sum())
    };
    let cpu = cpu(&sender, "sender")? + cpu(&received, "receiver")?;
    if std::fs::metadata(output)?.len() != std::fs::metadata(input)?.len() {
        bail!("the nc pipe moved a different number of bytes than the input holds");
    }
    Ok((secs, cpu))
}

/// One kind of transfer over the rounds of a run. Figures are the median round's, so one
/// round disturbed by the machine (on a VM, page-cache writes into memory the host has not
/// backed yet cost several times more in some rounds than in others) does not move them.
#[derive(Default)]
struct Rounds {
    secs: Vec<f64>,
    cpu: Vec<f64>,
    peers_cpu: Vec<f64>,
    bytes: f64,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Rounds {
    fn add(&mut self, secs: f64, cpu: f64, peers_cpu: f64, bytes: u64) {
        self.secs.push(secs);
        self.cpu.push(cpu);
        self.peers_cpu.push(peers_cpu);
        self.bytes = bytes as f64;
    }
    fn gib(&self) -> f64 {
        (self.bytes / (1u64 << 30) as f64).max(1e-12)
    }
    fn mb_s(&self) -> f64 {
        self.bytes / median(&self.secs).max(1e-9) / 1e6
    }
    fn cpu_per_gib(&self) -> f64 {
        median(&self.cpu) / self.gib()
    }
    fn peers_per_gib(&self) -> f64 {
        median(&self.peers_cpu) / self.gib()
    }
    /// Client and peers together, the median of the rounds' sums.
    fn total_per_gib(&self) -> f64 {
        let sums: Vec<f64> = self.cpu.iter().zip(&self.peers_cpu).map(|(c, p)| c + p).collect();
        median(&sums) / self.gib()
    }
    fn last_mb_s(&self) -> f64 {
        self.bytes / self.secs.last().copied().unwrap_or(0.0).max(1e-9) / 1e6
    }
}

/// One line of the report: what swarmfs did, the same-run baseline, their ratio and the goal.
struct Row {
    name: &'static str,
    value: String,
    baseline: String,
    ratio: f64,
    goal: &'static str,
}

fn row(name: &'static str, value: String, baseline: String, ratio: f64, goal: &'static str) -> Row {
    Row { name, value, baseline, ratio, goal }
}

fn print_rows(rows: &[Row]) -> Result<()> {
    outln!("{:<34} {:>20}  {:<34} {:>8}  goal", "", "swarmfs", "baseline (same run)", "ratio");
    for r in rows {
        // A baseline too small to measure (CPU time comes in 10 ms ticks) has no ratio.
        let ratio = if r.ratio.is_finite() { format!("{:>7.2}x", r.ratio) } else { format!("{:>8}", "n/a") };
        outln!("{:<34} {:>20}  {:<34} {ratio}  {}", r.name, r.value, r.baseline, r.goal);
    }
    Ok(())
}

async fn bench(cli: &Cli, a: &BenchArgs, dir: &Path) -> Result<()> {
    let say = |s: &str| {
        if !cli.json {
            errln!("{s}");
        }
    };
    say(&format!(
        "bench: {} bytes, {} peers, {} replicas, chunk {}, {} rounds",
        a.size, a.peers, a.replicas, a.chunk_size, a.rounds
    ));
    let input = dir.join("input.bin");
    write_random(&input, a.size)?;
    let raw = raw_tcp_copy(a.size)?;
    say(&format!("  raw TCP loopback copy (in process, no file): {raw:.0} MB/s"));
    let b3 = blake3_speed();
    say(&format!("  BLAKE3, one core: {b3:.0} MB/s"));

    let rounds = a.rounds.max(1);
    let capacity = format!("{}", a.size * (rounds as u64 + 2) * 2 + (1 << 30));
    let swarm = LocalSwarm::start(&dir.join("swarm"), a.peers, &capacity).await?;
    let (chunk, replicas) = (a.chunk_size.to_string(), a.replicas.to_string());
    let output = dir.join("output.bin");
    let (input_s, output_s) = (input.display().to_string(), output.display().to_string());
    let (mut nc, mut put, mut get) = (Rounds::default(), Rounds::default(), Rounds::default());
    let (mut put_rss, mut get_rss) = (0u64, 0u64);
    // The BitTorrent baseline when rqbit is installed: as many seeders as the swarm has peers.
    let mut rqbit = match crate::rqbit::find() {
        Some(exe) => {
            say(&format!("  rqbit: {} seeders of the same file, one downloader", a.peers));
            Some(crate::rqbit::Rqbit::start(exe, &input, a.peers, dir)?)
        }
        None => None,
    };
    let mut bt = Rounds::default();
    // Alternated rounds (nc, put, get, nc, ...): a slow spell of the machine hits all three.
    for round in 0..rounds {
        let (secs, cpu) = nc_pipe(&input, &output)?;
        nc.add(secs, cpu, 0.0, a.size);
        std::fs::remove_file(&output)?;
        // Fresh random bytes every round: a second put of the same file would only be
        // deduplicated by the peers (convergent encryption), not stored again. The last
        // round's file stays as /bench/file for the gateway and repair parts.
        if round > 0 {
            write_random(&input, a.size)?;
        }
        let remote = if round + 1 == rounds { "/bench/file".to_string() } else { format!("/bench/file{round}") };
        let before = peers_usage(&swarm);
        let (secs, u) = timed_client(
            dir,
            &swarm.client_home,
            &["put", &input_s, &remote, "--quiet", "--chunk-size", &chunk, "--replicas", &replicas],
            "put",
        )?;
        let mid = peers_usage(&swarm);
        put.add(secs, u.cpu_seconds, cpu_between(&before, &mid), a.size);
        put_rss = put_rss.max(u.peak_rss_bytes);
        let (secs, u) = timed_client(dir, &swarm.client_home, &["get", &remote, &output_s, "--quiet"], "get")?;
        let after = peers_usage(&swarm);
        get.add(secs, u.cpu_seconds, cpu_between(&mid, &after), a.size);
        get_rss = get_rss.max(u.peak_rss_bytes);
        if file_hash(&input)? != file_hash(&output)? {
            bail!("downloaded file differs from the input");
        }
        std::fs::remove_file(&output)?;
        let bt_text = match rqbit.as_mut() {
            Some(r) => {
                let d = r.download()?;
                bt.add(d.secs, d.cpu, d.seeders_cpu, a.size);
                format!("; rqbit {:.0} MB/s {:.2}+{:.2} CPU-s", bt.last_mb_s(), d.cpu, d.seeders_cpu)
            }
            None => String::new(),
        };
        say(&format!(
            "  round {}: nc pipe {:.0} MB/s {:.2} CPU-s; put {:.0} MB/s {:.2}+{:.2} CPU-s; get {:.0} MB/s {:.2}+{:.2} CPU-s{bt_text}",
            round + 1,
            nc.last_mb_s(),
            nc.cpu.last().copied().unwrap_or(0.0),
            put.last_mb_s(),
            put.cpu.last().copied().unwrap_or(0.0),
            put.peers_cpu.last().copied().unwrap_or(0.0),
            get.last_mb_s(),
            get.cpu.last().copied().unwrap_or(0.0),
            get.peers_cpu.last().copied().unwrap_or(0.0),
        ));
    }
    drop(rqbit);
    let disk = disk_write_while_reading(&input, dir, a.size);
    let disk_text = disk.map_or_else(|| "no fio".to_string(), |d| format!("{d:.0}"));
    say(&format!("  disk: 1 MiB direct writes while reading as much: {disk_text} MB/s"));
    let (put_total, get_total) = (put.total_per_gib(), get.total_per_gib());
    let peer_peak = peers_usage(&swarm).iter().map(|u| u.peak_rss_bytes).max().unwrap_or(0);
    let nc_cpu = nc.cpu_per_gib();
    let mut rows = vec![
        row(
            "get CPU-s/GiB (client + peers)",
            format!("{:.2} + {:.2} = {get_total:.2}", get.cpu_per_gib(), get.peers_per_gib()),
            format!("nc pipe {nc_cpu:.2}"),
            get_total / nc_cpu,
            "<= 1.4x",
        ),
        row(
            "get MB/s",
            format!("{:.0}", get.mb_s()),
            format!("nc pipe {:.0}; disk w+r {disk_text}", nc.mb_s()),
            get.mb_s() / nc.mb_s(),
            ">= 0.8x",
        ),
        row(
            "put CPU-s/GiB (client + peers)",
            format!("{:.2} + {:.2} = {put_total:.2}", put.cpu_per_gib(), put.peers_per_gib()),
            format!("nc pipe {nc_cpu:.2}"),
            put_total / nc_cpu,
            "<= 3x (R=2)",
        ),
        row(
            "put MB/s",
            format!("{:.0}", put.mb_s()),
            format!("nc pipe {:.0}", nc.mb_s()),
            put.mb_s() / nc.mb_s(),
            ">= 0.5x (R=2)",
        ),
    ];
    let mut report = json!({
        "size": a.size,
        "peers": a.peers,
        "replicas": a.replicas,
        "chunk_size": a.chunk_size,
        "rounds": rounds,
        "raw_tcp_mb_s": raw,
        "blake3_one_core_mb_s": b3,
        "nc_pipe_mb_s": nc.mb_s(),
        "nc_pipe_cpu_s_per_gib": nc_cpu,
        "disk_write_while_reading_mb_s": disk,
        "put_mb_s": put.mb_s(),
        "get_mb_s": get.mb_s(),
        "put_vs_nc": put.mb_s() / nc.mb_s(),
        "get_vs_nc": get.mb_s() / nc.mb_s(),
        "put_client_cpu_s_per_gib": put.cpu_per_gib(),
        "get_client_cpu_s_per_gib": get.cpu_per_gib(),
        "put_peers_cpu_s_per_gib": put.peers_per_gib(),
        "get_peers_cpu_s_per_gib": get.peers_per_gib(),
        "put_cpu_vs_nc": put_total / nc_cpu,
        "get_cpu_vs_nc": get_total / nc_cpu,
        "client_peak_rss_bytes": put_rss.max(get_rss),
        "put_client_peak_rss_bytes": put_rss,
        "get_client_peak_rss_bytes": get_rss,
        "peer_peak_rss_bytes": peer_peak,
        "verified": true,
    });
    if !bt.secs.is_empty() {
        let bt_total = bt.total_per_gib();
        let shape = format!("rqbit {}->1", a.peers);
        rows.push(row(
            "get CPU-s/GiB vs BitTorrent",
            format!("{get_total:.2}"),
            format!("{shape} {:.2} + {:.2} = {bt_total:.2}", bt.cpu_per_gib(), bt.peers_per_gib()),
            get_total / bt_total,
            "",
        ));
        rows.push(row(
            "get MB/s vs BitTorrent",
            format!("{:.0}", get.mb_s()),
            format!("{shape} {:.0}", bt.mb_s()),
            get.mb_s() / bt.mb_s(),
            "",
        ));
        report["rqbit"] = json!({
            "seeders": a.peers,
            "mb_s": bt.mb_s(),
            "cpu_s_per_gib": bt_total,
            "downloader_cpu_s_per_gib": bt.cpu_per_gib(),
            "seeders_cpu_s_per_gib": bt.peers_per_gib(),
            "get_cpu_vs_rqbit": get_total / bt_total,
            "get_vs_rqbit": get.mb_s() / bt.mb_s(),
        });
    } else {
        report["rqbit"] = serde_json::Value::Null;
    }
    let discard = Discard::new(dir)?;
    let many = bench_many_files(dir, &swarm, &discard).await?;
    rows.extend(many.rows);
    report["many_files"] = many.json;
    if a.mount {
        let m = bench_mount(cli, a, dir, &swarm, &discard).await?;
        rows.extend(m.rows);
        report["mount"] = m.json;
    }
    if a.gateway {
        let g = bench_gateway(cli, a, dir, &swarm, &input).await?;
        rows.push(row(
            "gateway GET MB/s",
            format!("{:.0}", g["gateway_mb_s"].as_f64().unwrap_or(0.0)),
            format!("get {:.0}", g["get_mb_s"].as_f64().unwrap_or(0.0)),
            g["gateway_vs_get"].as_f64().unwrap_or(0.0),
            "",
        ));
        report["gateway"] = g;
    }
    if a.repair {
        let mut swarm = swarm;
        let r = bench_repair(cli, a, dir, &mut swarm, get.mb_s()).await;
        drop(swarm);
        let r = r?;
        rows.push(row(
            "repair MB/s (no rate limit)",
            format!("{:.0}", r["unlimited_mb_s"].as_f64().unwrap_or(0.0)),
            format!("get {:.0}", get.mb_s()),
            r["unlimited_vs_get"].as_f64().unwrap_or(0.0),
            "",
        ));
        rows.push(row(
            "get MB/s while repairing",
            format!("{:.0}", r["get_during_repair_mb_s"].as_f64().unwrap_or(0.0)),
            format!("a peer down, idle {:.0}", r["get_peer_down_mb_s"].as_f64().unwrap_or(0.0)),
            r["get_during_repair_vs_idle"].as_f64().unwrap_or(0.0),
            "",
        ));
        report["repair"] = r;
    }
    if cli.json {
        outln!("{report}");
    } else {
        outln!(
            "size {} B, {} peers, R={}, {rounds} alternated rounds; raw TCP {raw:.0} MB/s, BLAKE3 {b3:.0} MB/s (one core)",
            a.size,
            a.peers,
            a.replicas
        );
        print_rows(&rows)?;
        outln!(
            "peak RSS: client put {} MiB, get {} MiB; largest peer {} MiB",
            put_rss >> 20,
            get_rss >> 20,
            peer_peak >> 20
        );
    }
    Ok(())
}

/// Trees of files the bench is done with, removed when it ends (or fails) rather than as it goes. On a
/// file system that pays for recent deletions when it next allocates an inode (ext4 without a
/// journal, this project's VM: it skips, reading each one's inode block, every inode freed in
/// the last minutes), the 3,000 files the many-files rows deleted made every mount row after
/// them (creates, fio, and their local baselines) measure the deletions instead.
struct Discard {
    dir: PathBuf,
    next: std::sync::atomic::AtomicUsize,
}

impl Discard {
    /// Where, under the bench's directory; `run` removes it when the bench is over.
    const DIR: &'static str = "discarded";

    fn new(dir: &Path) -> Result<Discard> {
        let dir = dir.join(Self::DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Discard { dir, next: std::sync::atomic::AtomicUsize::new(0) })
    }

    /// Moves `path` out of the way (a rename: nothing is freed yet).
    fn put(&self, path: &Path) -> Result<()> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::fs::rename(path, self.dir.join(format!("{}-{n}", std::process::id())))?;
        Ok(())
    }
}

fn cpu_between(a: &[Usage], b: &[Usage]) -> f64 {
    a.iter().zip(b).map(|(x, y)| y.cpu_seconds - x.cpu_seconds).sum()
}

/// Rows and JSON of one part of the benchmark.
struct Part {
    rows: Vec<Row>,
    json: serde_json::Value,
}

/// Files of the many-files rows, and their size.
const MANY_FILES: usize = 1000;
const SMALL_FILE: usize = 4096;

/// Writes `n` files of 4 KiB under `dir` (distinct contents: no dedup).
fn make_small_files(dir: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut data = vec![0u8; SMALL_FILE];
    for i in 0..n {
        rand::thread_rng().fill_bytes(&mut data);
        std::fs::write(dir.join(format!("f{i:05}")), &data)?;
    }
    Ok(())
}

/// `put -r` and `get -r` of 1,000 files of 4 KiB, each one process, next to `cp -r` of the same
/// tree on local disk.
async fn bench_many_files(dir: &Path, swarm: &LocalSwarm, discard: &Discard) -> Result<Part> {
    let tree = dir.join("many");
    make_small_files(&tree, MANY_FILES)?;
    let copy = dir.join("many-copy");
    let start = Instant::now();
    let out = Command::new("cp").arg("-r").arg(&tree).arg(&copy).output().context("running cp")?;
    if !out.status.success() {
        bail!("cp -r failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let cp_rate = MANY_FILES as f64 / start.elapsed().as_secs_f64();
    discard.put(&copy)?;
    let tree_s = tree.display().to_string();
    let (secs, _) = timed_client(dir, &swarm.client_home, &["put", "-r", &tree_s, "/bench/many", "--quiet"], "put-r")?;
    let put_rate = MANY_FILES as f64 / secs;
    let copy_s = copy.display().to_string();
    let (secs, _) = timed_client(dir, &swarm.client_home, &["get", "-r", "/bench/many", &copy_s, "--quiet"], "get-r")?;
    let get_rate = MANY_FILES as f64 / secs;
    for i in 0..MANY_FILES {
        let name = format!("f{i:05}");
        if std::fs::read(tree.join(&name))? != std::fs::read(copy.join(&name))? {
            bail!("get -r: {name} differs from the file put");
        }
    }
    discard.put(&copy)?;
    discard.put(&tree)?;
    Ok(Part {
        rows: vec![
            row(
                "put -r, 1,000 x 4 KiB: files/s",
                format!("{put_rate:.0}"),
                format!("cp -r local {cp_rate:.0}"),
                put_rate / cp_rate,
                ">= 500 files/s",
            ),
            row(
                "get -r, 1,000 x 4 KiB: files/s",
                format!("{get_rate:.0}"),
                format!("cp -r local {cp_rate:.0}"),
                get_rate / cp_rate,
                ">= 500 files/s",
            ),
        ],
        json: json!({ "files": MANY_FILES, "put_r_files_per_s": put_rate, "get_r_files_per_s": get_rate,
                      "cp_r_files_per_s": cp_rate }),
    })
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

/// Lines of the log-append row: 4 MiB, across a few chunks of the default size.
const LOG_LINES: usize = 1000;

/// A log written as programs write theirs: `LOG_LINES` lines of 4 KiB appended to a new
/// file, each fsynced. Lines per second.
fn log_appends(file: &Path) -> Result<f64> {
    let mut f = std::fs::OpenOptions::new().create_new(true).append(true).open(file)?;
    // Random lines: equal ones could be stored once.
    let mut line = vec![0u8; 4096];
    let mut rng = rand::thread_rng();
    let start = Instant::now();
    for _ in 0..LOG_LINES {
        rng.fill_bytes(&mut line);
        f.write_all(&line)?;
        f.sync_data()?;
    }
    Ok(LOG_LINES as f64 / start.elapsed().as_secs_f64())
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

/// Chunk bytes the peers received with PutChunk so far (their `swarmfs_received_bytes_total`):
/// what clients uploaded, without the reads a peer does to serve fetches.
fn peers_received_bytes(swarm: &LocalSwarm) -> Result<u64> {
    let mut total = 0.0;
    for i in 1..=swarm.peers.len() {
        let addr = swarm.peer_metrics_addr(i).with_context(|| format!("peer{i} serves no metrics"))?;
        total += http_get(&addr, "/metrics")?
            .lines()
            .filter(|l| l.starts_with("swarmfs_received_bytes_total{") && l.contains("kind=\"put_chunk\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total as u64)
}

/// The body of `GET path` from the HTTP server at `addr` (on this machine). Bounded: a
/// server that stopped answering fails the caller instead of hanging it.
pub(crate) fn http_get(addr: &str, path: &str) -> Result<String> {
    let limit = std::time::Duration::from_secs(10);
    let mut conn = std::net::TcpStream::connect_timeout(&addr.parse()?, limit)?;
    conn.set_read_timeout(Some(limit))?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response.find("\r\n\r\n").map_or(String::new(), |i| response[i + 4..].to_string()))
}

/// Bytes the swarm's files should take on the peers: every file's size times its R.
async fn live_bytes(swarm: &LocalSwarm) -> Result<u64> {
    let client = swarm.client().await?;
    let (mut total, mut dirs) = (0u64, vec![swarmfs_proto::RemotePath::root()]);
    while let Some(dir) = dirs.pop() {
        for e in client.list(&dir).await? {
            match e.kind {
                swarmfs_proto::EntryKind::Dir => dirs.push(swarmfs_proto::RemotePath::parse(&e.path)?),
                // A small file kept in its manifest (no chunks) takes nothing on the peers.
                swarmfs_proto::EntryKind::File if e.chunks > 0 => total += e.size * e.replicas as u64,
                _ => {}
            }
        }
    }
    Ok(total)
}

fn stores_bytes(swarm: &LocalSwarm) -> u64 {
    (1..=swarm.peers.len()).map(|i| dir_bytes(&swarm.dir.join(format!("peer{i}")).join("store/chunks"))).sum()
}

/// The disk's speed for what a get on this machine makes it do: 1 MiB direct writes into a
/// preallocated file while the same bytes are read back direct elsewhere (the peers' chunk
/// files live on the same disk when the whole swarm runs here). The `nc` pipe touches no disk
/// at all, so this is the second baseline for get MB/s. MB/s of the writes; None without fio.
fn disk_write_while_reading(input: &Path, dir: &Path, size: u64) -> Option<f64> {
    let target = dir.join("disk-baseline.bin");
    let out = Command::new("fio")
        .args(["--output-format=json", "--ioengine=libaio", "--direct=1", "--bs=1M", "--fallocate=native"])
        .args(["--name=write", "--rw=randwrite", "--iodepth=4"])
        .arg(format!("--size={size}"))
        .arg(format!("--filename={}", target.display()))
        .args(["--name=read", "--rw=randread", "--iodepth=8"])
        .arg(format!("--size={size}"))
        .arg(format!("--filename={}", input.display()))
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&target);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text[text.find('{')?..]).ok()?;
    let bytes = v["jobs"][0]["write"]["io_bytes"].as_f64()?;
    let ms = v["jobs"][0]["write"]["runtime"].as_f64()?;
    (out.status.success() && ms > 0.0).then(|| bytes / ms / 1e3)
}

/// File data the fio job writes (a file of this size, 4 KiB random writes).
const FIO_FILE: &str = "128M";
const FIO_FILE_BYTES: u64 = 128 << 20;
const FIO_SECONDS: u32 = 20;

/// What one fio run of the small-writes job measured.
struct FioRun {
    iops: f64,
    written: u64,
    /// The fsyncs' latency, median and 99th percentile, in ms (what a program waits).
    fsync_ms: (f64, f64),
}

/// The fio job of the issue: 4 KiB random writes with an fsync every 32, for a fixed time,
/// then a read-back of every block written with checksums.
fn fio(file: &Path, create_only: bool) -> Result<FioRun> {
    let out = Command::new("fio")
        .arg(format!("--create_only={}", create_only as u8))
        .args(["--name=randwrite", "--rw=randwrite", "--bs=4k", "--fsync=32", "--ioengine=psync"])
        .args(["--verify=crc32c", "--do_verify=1", "--verify_state_save=0", "--output-format=json"])
        .arg(format!("--size={FIO_FILE}"))
        .arg(format!("--runtime={FIO_SECONDS}"))
        .arg(format!("--filename={}", file.display()))
        .output()
        .context("running fio (scripts/install-deps installs it)")?;
    if !out.status.success() {
        bail!("fio failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // fio may print notes before its JSON.
    let v: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap_or(0)..]).context("fio's JSON")?;
    let job = &v["jobs"][0];
    if job["error"].as_i64().unwrap_or(0) != 0 {
        bail!("fio reported error {} (verify errors count here)", job["error"]);
    }
    let fsync = |p: &str| job["sync"]["lat_ns"]["percentile"][p].as_f64().unwrap_or(0.0) / 1e6;
    Ok(FioRun {
        iops: job["write"]["iops"].as_f64().unwrap_or(0.0),
        written: job["write"]["io_bytes"].as_u64().unwrap_or(0),
        fsync_ms: (fsync("50.000000"), fsync("99.000000")),
    })
}

/// Seconds `ls -l DIR` takes (output discarded).
fn ls_l(dir: &Path) -> Result<f64> {
    let start = Instant::now();
    let out = Command::new("ls").arg("-l").arg(dir).stdout(std::process::Stdio::null()).output()?;
    if !out.status.success() {
        bail!("ls -l {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Mean microseconds of a stat of one file, repeated.
fn stat_micros(file: &Path) -> Result<f64> {
    const N: u32 = 2000;
    let start = Instant::now();
    for _ in 0..N {
        std::fs::metadata(file)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / N as f64)
}

/// Entries of the listing rows.
const LISTING: usize = 10_000;

async fn bench_mount(cli: &Cli, a: &BenchArgs, dir: &Path, swarm: &LocalSwarm, discard: &Discard) -> Result<Part> {
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
    let result = async {
        let mb = a.size as f64 / 1e6;
        // Bytes the swarm does not hold yet: writing the put's file again would only be
        // deduplicated.
        let fresh = dir.join("mount-input.bin");
        write_random(&fresh, a.size)?;
        let local = dir.join("local.bin");
        let local_write = mb / dd(&fresh, &local, &["conv=fsync"])?;
        let local_read = mb / dd(&local, Path::new("/dev/null"), &[])?;
        std::fs::remove_file(&local)?;
        let write = mb / dd(&fresh, &mp.join("seq.bin"), &["conv=fsync"])?;
        std::fs::remove_file(&fresh)?;
        say(&format!("  mount sequential write: {write:.0} MB/s"));
        let read = mb / dd(&mp.join("seq.bin"), Path::new("/dev/null"), &[])?;
        say(&format!("  mount sequential read:  {read:.0} MB/s"));
        std::fs::remove_file(mp.join("seq.bin"))?;
        let local_small = small_files(&dir.join("local-small"))?;
        let small = small_files(&mp.join("small"))?;
        say(&format!("  mount small files:      {small:.0} files/s"));
        let local_log = log_appends(&dir.join("local.log"))?;
        std::fs::remove_file(dir.join("local.log"))?;
        let received0 = peers_received_bytes(swarm)?;
        let log = log_appends(&mp.join("app.log"))?;
        let log_uploaded = peers_received_bytes(swarm)?.saturating_sub(received0);
        let log_bytes = (LOG_LINES * 4096) as u64 * a.replicas as u64;
        std::fs::remove_file(mp.join("app.log"))?;
        say(&format!("  mount log appends:      {log:.0} lines/s (local {local_log:.0})"));

        // fio: random small writes with fsyncs, then the store a minute later.
        // The file is laid out (written whole once) first, outside the figures: what is
        // measured is small writes into an existing file.
        fio(&dir.join("fio-local"), true)?;
        let local = fio(&dir.join("fio-local"), false)?;
        std::fs::remove_file(dir.join("fio-local"))?;
        fio(&mp.join("fio"), true)?;
        let received0 = peers_received_bytes(swarm)?;
        let mounted = fio(&mp.join("fio"), false)?;
        let uploaded = peers_received_bytes(swarm)?.saturating_sub(received0);
        let (iops, written, local_iops) = (mounted.iops, mounted.written, local.iops);
        say(&format!(
            "  fio 4 KiB random writes, fsync every 32: {iops:.0} IOPS (local {local_iops:.0}); \
             fsync p50 {:.2} ms, p99 {:.2} ms (local {:.2}, {:.2})",
            mounted.fsync_ms.0, mounted.fsync_ms.1, local.fsync_ms.0, local.fsync_ms.1
        ));
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        // What the peers hold beyond the swarm's live data is garbage not collected yet. By
        // now everything released before the burst is past the GC delay, so that excess is
        // what the burst left; it is set against the fio file's own live bytes.
        let excess = stores_bytes(swarm).saturating_sub(live_bytes(swarm).await?);
        let live = FIO_FILE_BYTES * a.replicas as u64;
        let stores_later = live + excess;

        // Listing: 10,000 entries, ls -l on the mount (after the kernel's cache expired) and
        // on local disk; then a repeated stat of one file.
        let local_list = dir.join("local-list");
        make_small_files_empty(&local_list, LISTING)?;
        let list = mp.join("list");
        make_small_files_empty(&list, LISTING)?;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let ls_mount = ls_l(&list)?;
        let ls_local = ls_l(&local_list)?;
        let stat_mount = stat_micros(&list.join("f00000"))?;
        let stat_local = stat_micros(&local_list.join("f00000"))?;
        say(&format!("  ls -l of {LISTING} entries: {ls_mount:.2} s (local {ls_local:.2} s)"));
        discard.put(&local_list)?;
        std::fs::remove_dir_all(&list)?;
        let rows = vec![
            row(
                "mount: dd write 1M, fsync MB/s",
                format!("{write:.0}"),
                format!("local disk {local_write:.0}"),
                write / local_write,
                "",
            ),
            row(
                "mount: dd read 1M MB/s",
                format!("{read:.0}"),
                format!("local page cache {local_read:.0}"),
                read / local_read,
                "",
            ),
            row(
                "mount: 1,000 x 4 KiB create files/s",
                format!("{small:.0}"),
                format!("local disk {local_small:.0}"),
                small / local_small,
                ">= 1,000 files/s",
            ),
            row(
                "mount: log, 4 KiB appends + fsync /s",
                format!("{log:.0}"),
                format!("local disk {local_log:.0}"),
                log / local_log,
                "",
            ),
            row(
                "  bytes uploaded / appended x R",
                format!("{:.1}", log_uploaded as f64 / log_bytes as f64),
                format!("{:.1} MiB appended", (LOG_LINES * 4096) as f64 / (1 << 20) as f64),
                log_uploaded as f64 / log_bytes as f64,
                "<= 4x",
            ),
            row(
                "mount: fio 4K randwrite IOPS",
                format!("{iops:.0}"),
                format!("local disk {local_iops:.0}"),
                iops / local_iops,
                ">= 0.25x, 0 verify errors",
            ),
            row(
                "  bytes uploaded / written x R",
                format!("{:.1}", uploaded as f64 / (written.max(1) * a.replicas as u64) as f64),
                format!("{} MiB written", written >> 20),
                uploaded as f64 / (written.max(1) * a.replicas as u64) as f64,
                "<= 4x",
            ),
            row(
                "  peers' stores, a minute after",
                format!("{} MiB", stores_later >> 20),
                format!("live {} MiB (R={})", live >> 20, a.replicas),
                stores_later as f64 / live as f64,
                "<= 2x",
            ),
            row(
                "mount: ls -l of 10,000 entries, s",
                format!("{ls_mount:.2}"),
                format!("local disk {ls_local:.2}"),
                ls_mount / ls_local,
                "<= 2x",
            ),
            row(
                "mount: repeated stat, µs",
                format!("{stat_mount:.1}"),
                format!("local disk {stat_local:.1}"),
                stat_mount / stat_local,
                "",
            ),
        ];
        Ok::<_, anyhow::Error>(Part {
            rows,
            json: json!({
                "write_mb_s": write,
                "read_mb_s": read,
                "small_files_per_s": small,
                "log_lines_per_s": log,
                "log_local_lines_per_s": local_log,
                "log_uploaded_bytes": log_uploaded,
                "local_write_mb_s": local_write,
                "local_read_mb_s": local_read,
                "local_small_files_per_s": local_small,
                "fio_iops": iops,
                "fio_local_iops": local_iops,
                "fio_fsync_ms_p50": mounted.fsync_ms.0,
                "fio_fsync_ms_p99": mounted.fsync_ms.1,
                "fio_local_fsync_ms_p50": local.fsync_ms.0,
                "fio_local_fsync_ms_p99": local.fsync_ms.1,
                "fio_written_bytes": written,
                "fio_uploaded_bytes": uploaded,
                "fio_stores_bytes_a_minute_after": stores_later,
                "fio_garbage_bytes_a_minute_after": excess,
                "ls_l_seconds": ls_mount,
                "ls_l_local_seconds": ls_local,
                "stat_micros": stat_mount,
                "stat_local_micros": stat_local,
            }),
        })
    }
    .await;
    crate::local::terminate(&mut child);
    let _ = child.wait();
    result
}

/// Creates `n` empty files under `dir`.
fn make_small_files_empty(dir: &Path, n: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        std::fs::File::create(dir.join(format!("f{i:05}")))?;
    }
    Ok(())
}
