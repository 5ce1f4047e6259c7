//! A real swarm for tests: the `swarmfs` binary as tracker and peers on 127.0.0.1, each
//! with its own temp home and log file. Everything waits by polling with a deadline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod pg;

pub const BIN: &str = env!("CARGO_BIN_EXE_swarmfs");

/// A port for a daemon the test starts. Not one the kernel hands out for `bind(:0)` (32768 and
/// up by default): a port taken that way and released can go to another test's peer, which
/// listens on `:0`, before the tracker binds it — the tracker then fails and no peer comes up.
/// Each test process walks its own stretch of 10000..32000, skipping ports in use.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = 10_000 + (start.wrapping_add(n) % 22_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Polls `f` every 50 ms until it returns Some or `limit` passes.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub tracker_addr: String,
    pub member_token: String,
    pub peer_token: String,
    capacity: String,
    /// Flags every start of the tracker and of each peer gets.
    tracker_flags: Vec<String>,
    peer_flags: Vec<String>,
    tracker: Option<Child>,
    peers: Vec<Option<Child>>,
    /// Other processes a test started (sharers, seeders), killed with the cluster so a test
    /// that fails half-way leaves nothing serving behind.
    others: std::sync::Mutex<Vec<u32>>,
    /// Flags of one peer only, by index (e.g. an address nobody can dial).
    peer_extra: std::collections::HashMap<usize, Vec<String>>,
    /// The tracker's PostgreSQL cluster, when the suite runs on PostgreSQL
    /// (`SWARMFS_TEST_DB=postgres`); dropped after the tracker.
    pub pg: Option<pg::PgCluster>,
}

/// Starts `swarmfs ARGS` logging at info to `dir/NAME.log` (appended: restarts add to it).
pub fn spawn_logged(dir: &Path, name: &str, args: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))).unwrap();
    Command::new(BIN)
        .args(args)
        .env("SWARMFS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn run(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).arg("--home").arg(home).stdin(Stdio::null()).output().unwrap()
}

impl Cluster {
    /// A tracker and `peers` peers, all up.
    pub fn start(peers: usize) -> Cluster {
        Self::start_with_capacity(peers, "1G")
    }

    /// Like [`Cluster::start`] with every peer's `--capacity` set to `capacity`.
    pub fn start_with_capacity(peers: usize, capacity: &str) -> Cluster {
        Self::start_with(peers, capacity, &[], &[])
    }

    /// Like [`Cluster::start_with_capacity`], with extra flags for every start of the
    /// tracker and of each peer (`--repair-after 2`, `--heartbeat-ms 300`, ...).
    pub fn start_with(peers: usize, capacity: &str, tracker_flags: &[&str], peer_flags: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let tracker_addr = format!("127.0.0.1:{}", free_port());
        let out = run(&dir.path().join("tracker"), &["init", "--tracker-addr", &tracker_addr, "--json"]);
        assert!(out.status.success(), "init: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let member_token = v["member_token"].as_str().unwrap().to_string();
        let peer_token = v["peer_token"].as_str().unwrap().to_string();
        // The same test bodies run on SQLite (the default) and on PostgreSQL.
        let pg = (std::env::var("SWARMFS_TEST_DB").as_deref() == Ok("postgres")).then(pg::PgCluster::start);
        let mut tracker_flags: Vec<String> = tracker_flags.iter().map(|s| s.to_string()).collect();
        if let Some(pg) = &pg {
            tracker_flags.extend(["--db".to_string(), pg.url()]);
        }
        let mut c = Cluster {
            dir,
            tracker_addr,
            member_token,
            peer_token,
            capacity: capacity.to_string(),
            tracker_flags,
            peer_flags: peer_flags.iter().map(|s| s.to_string()).collect(),
            tracker: None,
            peers: Vec::new(),
            others: Default::default(),
            peer_extra: Default::default(),
            pg,
        };
        let client = c.client_home();
        assert!(run(&client, &["join", &c.member_token.clone()]).status.success());
        c.start_tracker();
        for _ in 0..peers {
            c.add_peer();
        }
        c.wait_up(peers);
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn client_home(&self) -> PathBuf {
        self.path("client")
    }

    pub fn peer_home(&self, i: usize) -> PathBuf {
        self.path(&format!("peer{i}"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Child {
        spawn_logged(self.dir.path(), name, args)
    }

    pub fn start_tracker(&mut self) {
        self.start_tracker_with(&[]);
    }

    pub fn start_tracker_with(&mut self, extra: &[&str]) {
        self.kill_tracker();
        let home = self.path("tracker").display().to_string();
        let mut args = vec!["tracker", "--home", &home];
        args.extend(self.tracker_flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        self.tracker = Some(self.spawn("tracker", &args));
    }

    pub fn peer_pid(&self, i: usize) -> u32 {
        self.peers[i].as_ref().expect("peer running").id()
    }

    pub fn tracker_pid(&self) -> u32 {
        self.tracker.as_ref().expect("tracker running").id()
    }

    pub fn kill_tracker(&mut self) {
        if let Some(mut t) = self.tracker.take() {
            t.kill().unwrap();
            t.wait().unwrap();
        }
    }

    /// Creates and starts a new peer; returns its index.
    pub fn add_peer(&mut self) -> usize {
        self.add_peer_prepared(|_| {})
    }

    /// Like [`Cluster::add_peer`], with flags for this peer only, at every start.
    pub fn add_peer_with(&mut self, extra: &[&str]) -> usize {
        self.peer_extra.insert(self.peers.len(), extra.iter().map(|s| s.to_string()).collect());
        self.add_peer()
    }

    /// Like [`Cluster::add_peer`], running `prepare` on the peer's home before it starts
    /// (e.g. to mount a small file system as its store).
    pub fn add_peer_prepared(&mut self, prepare: impl FnOnce(&Path)) -> usize {
        let i = self.peers.len();
        let home = self.peer_home(i);
        let out = run(&home, &["join", &self.peer_token]);
        assert!(out.status.success(), "join: {}", String::from_utf8_lossy(&out.stderr));
        prepare(&home);
        self.peers.push(None);
        self.start_peer(i);
        i
    }

    pub fn start_peer(&mut self, i: usize) {
        let home = self.peer_home(i).display().to_string();
        let mut args = vec!["peer", "--home", &home, "--listen", "127.0.0.1:0", "--capacity", &self.capacity];
        args.extend(self.peer_flags.iter().map(String::as_str));
        args.extend(self.peer_extra.get(&i).into_iter().flatten().map(String::as_str));
        let child = self.spawn(&format!("peer{i}"), &args);
        self.peers[i] = Some(child);
    }

    /// Whether peer `i` runs (was started and not killed by the test).
    pub fn peer_running(&self, i: usize) -> bool {
        self.peers.get(i).is_some_and(Option::is_some)
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The tracker's view of the swarm's health (`health --json`), if it answers.
    pub fn health(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["health", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The node id of peer `i` (full hex).
    pub fn peer_id(&self, i: usize) -> String {
        // Joining again with the same token changes nothing and prints the node id.
        let out = run(&self.peer_home(i), &["join", &self.peer_token, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["node_id"].as_str().unwrap().to_string()
    }

    /// SIGKILL: no goodbye, no flush.
    pub fn kill_peer(&mut self, i: usize) {
        if let Some(mut p) = self.peers[i].take() {
            p.kill().unwrap();
            p.wait().unwrap();
        }
    }

    /// Runs a client command with the member home.
    pub fn cli(&self, args: &[&str]) -> Output {
        run(&self.client_home(), args)
    }

    /// Runs a client command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "swarmfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn peers_json(&self) -> Option<Vec<serde_json::Value>> {
        let out = self.cli(&["peers", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?.as_array().cloned()
    }

    pub fn up_count(&self) -> usize {
        self.peers_json().map(|v| v.iter().filter(|p| p["state"] == "up").count()).unwrap_or(0)
    }

    /// Waits until `n` peers are up; on a timeout the panic carries the end of the tracker's
    /// and the peers' logs (the test's directory is gone once it fails).
    pub fn wait_up(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.up_count() != n {
            if Instant::now() >= deadline {
                let mut logs = String::new();
                for name in
                    std::iter::once("tracker".to_string()).chain((0..self.peers.len()).map(|i| format!("peer{i}")))
                {
                    let text = std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(8).collect();
                    logs += &format!(
                        "\n--- {name}.log (last lines) ---\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                panic!("timed out after 30s waiting for {n} peers up (up: {}){logs}", self.up_count());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every chunk file in peer `i`'s store.
    pub fn chunk_files(&self, i: usize) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.peer_home(i).join("store").join("chunks"), &mut out);
        out
    }
}

/// How many chunk files the peer home `home` stores.
pub fn count_chunk_files(home: &Path) -> usize {
    let mut out = Vec::new();
    walk(&home.join("store").join("chunks"), &mut out);
    out.len()
}

pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

impl Cluster {
    /// Writes `len` bytes of `pattern(len, seed)` to the local file `name` in the test's
    /// directory and puts it at `remote` with `flags`; returns the bytes.
    pub fn put_pattern(&self, name: &str, remote: &str, len: usize, seed: u64, flags: &[&str]) -> Vec<u8> {
        let data = pattern(len, seed);
        let local = self.path(name);
        std::fs::write(&local, &data).unwrap();
        let mut args = vec!["put", local.to_str().unwrap(), remote];
        args.extend_from_slice(flags);
        self.ok(&args);
        data
    }

    /// Waits until every chunk of `remote` lists exactly `n` cached sources (downloaders or
    /// mounts serving what they fetched).
    pub fn wait_cached_sources(&self, remote: &str, n: usize, what: &str) {
        wait_for(what, Duration::from_secs(20), || {
            let out = self.cli(&["stat", remote, "--json"]);
            let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            st["chunk_holders"]
                .as_array()?
                .iter()
                .all(|h| h["cached"].as_array().is_some_and(|v| v.len() == n))
                .then_some(())
        });
    }

    /// Kills process `pid` (if still running) when the cluster is dropped.
    pub fn kill_on_drop(&self, pid: u32) {
        self.others.lock().unwrap().push(pid);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ours = self.dir.path().display().to_string();
        for pid in self.others.lock().unwrap().drain(..) {
            // Only if it is still ours: a process the test already reaped may have left its
            // pid to another test's process. Every such command names a path in our dir.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&ours) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
        for p in self.peers.iter_mut().chain(std::iter::once(&mut self.tracker)) {
            if let Some(mut c) = p.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The pid of peer `i`, as a string for kill(1).
pub fn peer_pid_of(c: &Cluster, i: usize) -> String {
    c.peer_pid(i).to_string()
}

/// Sends `signal` (`-STOP`, `-CONT`, ...) to each of `pids` with kill(1).
pub fn signal(pids: &[String], signal: &str) {
    for pid in pids {
        assert!(Command::new("kill").args([signal, pid]).status().unwrap().success(), "kill {signal} {pid}");
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One HTTP request; the status line and the body.
pub fn http(addr: &str, request: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The address a daemon's log says its metrics are served at.
pub fn metrics_addr(c: &Cluster, name: &str) -> String {
    wait_for(&format!("{name} to serve metrics"), Duration::from_secs(20), || {
        let log = c.log(name);
        let line = log.lines().find(|l| l.contains("metrics at http://"))?;
        Some(line.split("http://").nth(1)?.split('/').next()?.to_string())
    })
}

/// A daemon's Prometheus metrics (`--metrics ADDR`).
pub fn scrape(addr: &str) -> String {
    let (status, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn sum(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `swarmfs mount` process; unmounted (SIGTERM, then waited for) on drop.
pub struct Mount {
    pub dir: PathBuf,
    child: Option<Child>,
}

pub fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let d = dir.display().to_string();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(d.as_str()))
}

impl Mount {
    pub fn start(c: &Cluster, home: &Path, name: &str, extra: &[&str]) -> Mount {
        Self::start_in(c.dir.path(), home, name, extra)
    }

    /// Mounts with `env` set in the mount's environment (an injected fault).
    pub fn start_with_env(c: &Cluster, home: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        Self::start_in_env(c.dir.path(), home, name, extra, env)
    }

    /// Mounts at `name` in `dir` (its log beside it), for a swarm no [`Cluster`] runs.
    pub fn start_in(dir: &Path, home: &Path, name: &str, extra: &[&str]) -> Mount {
        Self::start_in_env(dir, home, name, extra, &[])
    }

    fn start_in_env(dir: &Path, home: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        let (log, dir) = (dir.join(format!("{name}.log")), dir.join(name));
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .arg("mount")
            .arg(&dir)
            .arg("--home")
            .arg(home)
            .args(extra)
            .env("SWARMFS_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Generous: a mount starting while the rest of the suite loads both cores once took
        // longer than 20 s; a wait that is not needed costs nothing.
        wait_for("the mount to appear", Duration::from_secs(60), || is_mounted(&dir).then_some(()));
        Mount { dir, child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits up to `limit` for the mount process to exit by itself.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        self.child.as_mut().is_some_and(|c| wait_for_exit(c, limit))
    }

    /// SIGKILL (no flush, no unmount of its own), then the dead mount is detached.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.dir).stderr(Stdio::null()).status();
        }
    }

    /// SIGTERM, then wait for the process to flush, unmount and exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let exited = wait_for_exit(&mut c, Duration::from_secs(30));
            if !exited {
                let _ = c.kill();
                let _ = c.wait();
                let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.dir).status();
                panic!("mount process did not exit after SIGTERM");
            }
        }
        assert!(!is_mounted(&self.dir), "still mounted after the mount process exited");
    }
}

pub fn wait_for_exit(c: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if matches!(c.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            if !wait_for_exit(&mut c, Duration::from_secs(20)) {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = Command::new("fusermount3").args(["-u", "-z"]).arg(&self.dir).stderr(Stdio::null()).status();
        }
    }
}

/// A second member home for the same swarm (another user, another machine).
pub fn member_home(c: &Cluster, name: &str) -> PathBuf {
    let home = c.path(name);
    let out = run(&home, &["join", &c.member_token]);
    assert!(out.status.success(), "{}", stderr(&out));
    home
}

/// Runs a shell command that must succeed; returns stdout.
pub fn sh(cmd: &str, cwd: &Path) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The address peer `i` advertises (from the tracker's peer list).
pub fn peer_addr(c: &Cluster, i: usize) -> String {
    let home = c.peer_home(i);
    let id = {
        let out = run(&home, &["join", &c.peer_token, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["node_id"].as_str().unwrap().to_string()
    };
    let peers = c.peers_json().unwrap();
    let p = peers.iter().find(|p| p["node_id"] == id.as_str()).unwrap();
    p["addrs"][0].as_str().unwrap().to_string()
}

pub fn home_json(home: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("swarm.json")).unwrap()).unwrap()
}

pub fn home_secret(home: &std::path::Path) -> swarmfs_net::Secret {
    swarmfs_net::Secret::Swarm(
        hex::decode(home_json(home)["swarm_secret"].as_str().unwrap()).unwrap().try_into().unwrap(),
    )
}

pub fn home_tracker_id(home: &std::path::Path) -> swarmfs_proto::NodeId {
    home_json(home)["tracker_id"].as_str().unwrap().parse().unwrap()
}

/// Resident memory of a process in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Asserts that `promtool check metrics` accepts `body` (Prometheus text format).
pub fn promtool_accepts(body: &str) {
    use std::io::Write as _;
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps installs the prometheus package)");
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}\n{body}", String::from_utf8_lossy(&out.stdout), stderr(&out));
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub url: String,
}

impl Gateway {
    pub fn start(c: &Cluster, home: &Path, extra: &[&str]) -> Gateway {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(c.path("gateway.log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["gateway", "--home"])
            .arg(home)
            .args(["--listen", "127.0.0.1:0", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("gateway printed {line:?}; log:\n{}", c.log("gateway")));
        Gateway { child, url: v["url"].as_str().unwrap().trim_end_matches('/').to_string() }
    }

    pub fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "60"]).args(args).output().expect("curl (install-deps installs it)")
}
