//! The BitTorrent baseline of `swarmfs bench`: when `rqbit` is installed (`cargo install
//! rqbit --locked`; not a Debian package, and the test suite never builds it), as many rqbit
//! processes as the bench swarm has peers seed a copy of the input file (`rqbit share`) and
//! one more downloads it from them (`rqbit download --initial-peers`, no DHT, no trackers):
//! a swarm of the same shape moving the same bytes over loopback, every piece SHA-1
//! verified, into a file the downloader writes through the page cache.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::local::free_port;
use crate::usage;

/// How long the seeders get to hash the file and answer on their HTTP API.
const SEED_READY: Duration = Duration::from_secs(120);
/// A download that takes longer than this has hung (the bench's files are a few GiB at most).
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(600);

/// rqbit seeders of one file, killed when dropped.
pub struct Rqbit {
    exe: PathBuf,
    seeders: Vec<Child>,
    ports: Vec<u16>,
    info_hash: String,
    size: u64,
    dir: PathBuf,
}

/// One download: wall seconds, the downloader's and the seeders' CPU seconds.
pub struct Download {
    pub secs: f64,
    pub cpu: f64,
    pub seeders_cpu: f64,
}

/// `rqbit` on PATH, if it is installed.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("rqbit")).find(|p| p.is_file())
}

/// Flags every rqbit process of the bench gets: loopback only, nothing announced.
fn quiet_args(port: u16) -> Vec<String> {
    let port = port.to_string();
    let args = ["--disable-dht", "--disable-dht-persistence", "--disable-upnp-port-forward", "--listen-ip"];
    args.iter().chain(&["127.0.0.1", "--listen-port", &port]).map(|s| s.to_string()).collect()
}

impl Rqbit {
    /// Starts `seeders` rqbit processes sharing a copy of `input` (the bench writes new bytes
    /// into `input` every round; the seeders keep this copy) and waits until each serves it.
    pub fn start(exe: PathBuf, input: &Path, seeders: usize, dir: &Path) -> Result<Rqbit> {
        let dir = dir.join("rqbit");
        std::fs::create_dir_all(&dir)?;
        let source = dir.join("source.bin");
        std::fs::copy(input, &source)?;
        let size = std::fs::metadata(&source)?.len();
        let mut r = Rqbit { exe, seeders: Vec::new(), ports: Vec::new(), info_hash: String::new(), size, dir };
        let mut apis = Vec::new();
        for i in 0..seeders.max(1) {
            let (port, api) = (free_port()?, free_port()?);
            let log = std::fs::File::create(r.dir.join(format!("seeder{i}.log")))?;
            let child = Command::new(&r.exe)
                .args(quiet_args(port))
                .args(["--http-api-listen-addr", &format!("127.0.0.1:{api}"), "share"])
                .arg(&source)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("running {}", r.exe.display()))?;
            r.seeders.push(child);
            r.ports.push(port);
            apis.push(api);
        }
        let deadline = Instant::now() + SEED_READY;
        for (i, api) in apis.iter().enumerate() {
            let hash = loop {
                if let Some(h) = served_hash(*api) {
                    break h;
                }
                if let Some(status) = r.seeders[i].try_wait()? {
                    bail!("rqbit share exited ({status}); see {}", r.dir.join(format!("seeder{i}.log")).display());
                }
                if Instant::now() > deadline {
                    bail!("rqbit share did not serve the file within {SEED_READY:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if !r.info_hash.is_empty() && r.info_hash != hash {
                bail!("rqbit seeders made different torrents of one file ({} and {hash})", r.info_hash);
            }
            r.info_hash = hash;
        }
        Ok(r)
    }

    /// Downloads the file from every seeder at once into a new directory, checks its size,
    /// and removes it again.
    pub fn download(&mut self) -> Result<Download> {
        let out = self.dir.join("download");
        let _ = std::fs::remove_dir_all(&out);
        let peers: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        // Its log and, last, what /usr/bin/time says.
        let err_path = self.dir.join("download.log");
        let before = self.seeders_cpu();
        let start = Instant::now();
        let mut child = Command::new("/usr/bin/time")
            .args(["-f", "%U %S"])
            .arg(&self.exe)
            .args(quiet_args(free_port()?))
            .args(["download", "--disable-http-api", "--exit-on-finish", "--initial-peers", &peers.join(",")])
            .arg("--output-folder")
            .arg(&out)
            .arg(format!("magnet:?xt=urn:btih:{}", self.info_hash))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .context("running rqbit download (scripts/install-deps installs time)")?;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if start.elapsed() > DOWNLOAD_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("rqbit download took longer than {DOWNLOAD_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let secs = start.elapsed().as_secs_f64();
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        let seeders_cpu = self.seeders_cpu() - before;
        if !status.success() {
            bail!("rqbit download failed ({status}): {}", err.lines().rev().take(3).collect::<Vec<_>>().join(" / "));
        }
        let cpu = err.lines().last().unwrap_or_default().split_whitespace().filter_map(|t| t.parse::<f64>().ok()).sum();
        let got = std::fs::metadata(out.join("source.bin")).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::remove_dir_all(&out);
        if got != self.size {
            bail!("rqbit downloaded {got} bytes of {}", self.size);
        }
        Ok(Download { secs, cpu, seeders_cpu })
    }

    fn seeders_cpu(&self) -> f64 {
        self.seeders.iter().filter_map(|c| usage::of(&c.id().to_string())).map(|u| u.cpu_seconds).sum()
    }
}

impl Drop for Rqbit {
    fn drop(&mut self) {
        for c in &mut self.seeders {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The info hash of the torrent the rqbit HTTP API on `port` serves, once it has checked
/// the whole file (a download started earlier would wait for that check).
fn served_hash(port: u16) -> Option<String> {
    let body = crate::bench::http_get(&format!("127.0.0.1:{port}"), "/torrents?with_stats=true").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let t = &v["torrents"][0];
    (t["stats"]["state"] == "live" && t["stats"]["finished"] == true)
        .then(|| t["info_hash"].as_str().map(String::from))?
}
