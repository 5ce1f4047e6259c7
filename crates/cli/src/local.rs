//! A whole swarm on loopback: a tracker and peers as child processes of this binary, each
//! with its own home under one directory. `demo` and `bench` use it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use swarmfs_client::{Client, PutOptions};
use swarmfs_core::Token;
use swarmfs_proto::RemotePath;

use crate::home::Home;
use crate::Cli;

pub struct LocalSwarm {
    pub dir: PathBuf,
    pub tracker_addr: String,
    pub client_home: PathBuf,
    pub tracker: Child,
    pub peers: Vec<Child>,
    /// Each peer's short node id, as `swarmfs peers` shows it (`peer_ids[i]` is peer i+1's).
    pub peer_ids: Vec<String>,
}

/// A free loopback port (bound, then released: good enough on a machine we control).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn_logged(dir: &Path, name: &str, args: &[&str]) -> Result<Child> {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    Command::new(std::env::current_exe().context("locating the swarmfs binary")?)
        .args(args)
        .env_remove("SWARMFS_HOME")
        .env_remove("SWARMFS_USAGE_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: Ctrl-C in the terminal reaches this process only, which
        // stops the children in order (peers first) instead of all of them racing it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// SIGTERM to `child` if it still runs; quiet if it has just exited.
pub fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_child(child), rustix::process::Signal::TERM);
    }
}

impl LocalSwarm {
    /// Starts (or restarts, reusing the homes) a swarm under `dir` and waits until every
    /// peer is up.
    pub async fn start(dir: &Path, peers: usize, capacity: &str) -> Result<LocalSwarm> {
        let tracker_home = dir.join("tracker");
        let member: Token = if Home::swarm_file(&tracker_home).exists() {
            Home::load(&dir.join("client"))?.token
        } else {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let member = crate::nodes::create_swarm(&tracker_home, std::slice::from_ref(&addr))?;
            Home::create(&dir.join("client"), &member)?;
            let tok = dir.join("member-token.txt");
            swarmfs_net::identity::write_private(&tok, format!("{}\n", member.encode()).as_bytes())?;
            member
        };
        for i in 1..=peers {
            let h = dir.join(format!("peer{i}"));
            if !Home::swarm_file(&h).exists() {
                Home::create(&h, &member.to_peer())?;
            }
        }
        let th = tracker_home.display().to_string();
        let tracker = spawn_logged(dir, "tracker", &["tracker", "--home", &th, "--peer-timeout", "5"])?;
        let mut swarm = LocalSwarm {
            dir: dir.to_path_buf(),
            tracker_addr: member.tracker_addr().to_string(),
            client_home: dir.join("client"),
            tracker,
            peers: Vec::new(),
            peer_ids: Vec::new(),
        };
        for i in 1..=peers {
            let home = dir.join(format!("peer{i}"));
            swarm.peer_ids.push(Home::load(&home)?.swarm()?.identity.node_id().short());
            let h = home.display().to_string();
            let child = spawn_logged(
                dir,
                &format!("peer{i}"),
                // Metrics on a port of their own: the benchmark counts what peers received.
                &["peer", "--home", &h, "--listen", "127.0.0.1:0", "--capacity", capacity, "--metrics", "127.0.0.1:0"],
            )?;
            swarm.peers.push(child);
        }
        swarm.wait_for_peers(peers, Duration::from_secs(30)).await?;
        Ok(swarm)
    }

    /// Where peer `i` (from 1) serves its metrics, from the line its log starts with.
    pub fn peer_metrics_addr(&self, i: usize) -> Option<String> {
        let log = std::fs::read_to_string(self.dir.join("logs").join(format!("peer{i}.log"))).ok()?;
        let line = log.lines().find(|l| l.contains("metrics at http://"))?;
        Some(line.split("http://").nth(1)?.split('/').next()?.to_string())
    }

    pub async fn client(&self) -> Result<Client> {
        let home = Home::load(&self.client_home)?;
        let t = &home.token;
        Ok(Client::connect(home.client_swarm()?, &t.tracker_addrs, t.tracker_id, t.data_key.clone()).await?)
    }

    /// Polls the tracker until `n` peers are up or the deadline passes.
    pub async fn wait_for_peers(&self, n: usize, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(c) = self.client().await {
                if let Ok(live) = c.live_peers().await {
                    if live.len() >= n {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the local swarm did not come up within {limit:?}; see the logs in {}",
                    self.dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the tracker and starts it again with `flags` (peers reconnect by themselves).
    pub async fn restart_tracker(&mut self, flags: &[&str]) -> Result<()> {
        terminate(&mut self.tracker);
        let _ = self.tracker.wait();
        let th = self.dir.join("tracker").display().to_string();
        let mut args = vec!["tracker", "--home", &th, "--peer-timeout", "5"];
        args.extend_from_slice(flags);
        self.tracker = spawn_logged(&self.dir, "tracker", &args)?;
        let mut live = 0;
        for c in &mut self.peers {
            if matches!(c.try_wait(), Ok(None)) {
                live += 1;
            }
        }
        self.wait_for_peers(live, Duration::from_secs(30)).await
    }

    /// SIGKILL to peer `i` (an index into `peers`); it stays in the list, dead.
    pub fn kill_peer(&mut self, i: usize) {
        let _ = self.peers[i].kill();
        let _ = self.peers[i].wait();
    }

    /// Stops the peers (each tells the tracker it leaves), then the tracker: SIGTERM, up to
    /// 5 s each round, then SIGKILL.
    pub fn stop(&mut self) {
        fn stop_all(children: &mut [Child]) {
            for c in children.iter_mut() {
                terminate(c);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            for c in children.iter_mut() {
                while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        stop_all(&mut self.peers);
        stop_all(std::slice::from_mut(&mut self.tracker));
    }
}

impl Drop for LocalSwarm {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the homes, logs and the member token.
    #[arg(long, env = "SWARMFS_DEMO_DIR", default_value = "./swarmfs-demo")]
    pub dir: PathBuf,
    /// Number of peers.
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    /// Store and read back a sample file, kill a peer, read it back again, then exit
    /// instead of running until Ctrl-C.
    #[arg(long)]
    pub check: bool,
}

pub async fn demo(_cli: &Cli, a: &DemoArgs) -> Result<()> {
    if a.peers < 2 {
        bail!("the demo needs at least 2 peers to show replication");
    }
    std::fs::create_dir_all(&a.dir)?;
    let dir = a.dir.canonicalize()?;
    let mut swarm = LocalSwarm::start(&dir, a.peers, "1G").await?;
    outln!(
        "swarmfs demo: tracker {} and {} peers up; homes and logs in {}",
        swarm.tracker_addr,
        a.peers,
        dir.display()
    );
    // Named as `swarmfs peers` shows them, with the pid to kill one by.
    let named: Vec<String> = (0..swarm.peers.len())
        .map(|i| format!("peer{} = {} (pid {})", i + 1, swarm.peer_ids[i], swarm.peers[i].id()))
        .collect();
    outln!("  {}", named.join(", "));

    // Show the main job working before handing over: store, read back, survive a peer loss.
    let sample = dir.join("sample.bin");
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 7).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&sample, &data)?;
    let client = swarm.client().await?;
    let remote = RemotePath::parse("/demo/sample.bin")?;
    let opts = PutOptions { replicas: 2, ..PutOptions::default() };
    client.put(&sample, &remote, &opts, &swarmfs_client::Quiet).await?;
    let back = dir.join("sample.back");
    client.get(&remote, &back, &swarmfs_client::Quiet).await?;
    if std::fs::read(&back)? != data {
        bail!("read-back mismatch");
    }
    outln!("  stored /demo/sample.bin (5 MiB, 2 replicas) and read it back byte-exact");
    if a.check {
        let victim = swarm.peers.remove(0);
        let pid = victim.id();
        let mut victim = victim;
        victim.kill()?;
        victim.wait()?;
        let client = swarm.client().await?;
        client.get(&remote, &back, &swarmfs_client::Quiet).await?;
        if std::fs::read(&back)? != data {
            bail!("read-back after killing a peer mismatched");
        }
        outln!(
            "  killed peer1 = {} (pid {pid}) with SIGKILL; read it back byte-exact from the other replicas",
            swarm.peer_ids[0]
        );
        outln!("demo check passed");
        return Ok(());
    }
    let exe = std::env::current_exe()?.display().to_string();
    outln!();
    outln!("In another terminal:");
    outln!("  export SWARMFS_HOME={}", swarm.client_home.display());
    outln!("  {exe} put /etc/services /docs/services");
    outln!("  {exe} ls /docs");
    outln!("  {exe} get /docs/services /tmp/services && cmp /etc/services /tmp/services");
    outln!(
        "  kill -9 {}      # peer1 = {} dies; reads keep working from the replicas",
        swarm.peers[0].id(),
        swarm.peer_ids[0]
    );
    outln!("  {exe} cat /docs/services --offset 100 --length 200");
    outln!("  {exe} peers                     # peer1 = {} and the others, by id", swarm.peer_ids[0]);
    outln!("  mkdir -p /tmp/swarm && {exe} mount /tmp/swarm   # the swarm as a file system (needs fuse3)");
    outln!("  {exe} gateway                   # then open http://127.0.0.1:8080/dashboard, or /files/ to browse");
    outln!("Member token (reads and writes): {}", dir.join("member-token.txt").display());
    outln!("Ctrl-C stops the swarm; its data stays in {} for the next run.", dir.display());
    // SIGTERM too (kill, systemd, timeout): it reaches only this process, and the tracker and
    // peers must not outlive it.
    crate::nodes::shutdown_on_signal().cancelled().await;
    outln!("stopping");
    swarm.stop();
    Ok(())
}
