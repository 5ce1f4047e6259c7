//! Peers behind NAT, in real network namespaces (the suite runs as root): a "public"
//! namespace with the tracker and two reachable peers, and a home network behind its own NAT
//! router namespace (nftables masquerade) with one peer. Only addresses inside namespaces
//! this test creates are used; they are removed when it ends.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{pattern, wait_for, BIN};

/// Runs a command that must succeed.
fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The namespaces of one test run; deleted (with their veths) when dropped. Tests in this
/// file share no names (each builds its own, prefixed with the process id and a counter).
struct Topology {
    prefix: String,
    processes: Vec<Child>,
}

const PUBLIC_ADDR: &str = "10.201.0.1";
const ROUTER_PUBLIC_ADDR: &str = "10.201.0.2";
const HOME_ADDR: &str = "192.168.201.2";

impl Topology {
    /// public <-> router (NAT) <-> home. The home namespace's default route is the router,
    /// which masquerades what leaves towards the public side; the public side has no route
    /// into the home network, so nothing there can dial the home peer.
    fn build() -> Topology {
        static BUILT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("sf{}x{n}", std::process::id() % 100_000);
        let t = Topology { prefix: prefix.clone(), processes: Vec::new() };
        let (public, router, home) = (t.ns("pub"), t.ns("nat"), t.ns("home"));
        for ns in [&public, &router, &home] {
            sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        }
        sh(&format!("ip link add {prefix}a netns {public} type veth peer name {prefix}b netns {router}"));
        sh(&format!("ip link add {prefix}c netns {router} type veth peer name {prefix}d netns {home}"));
        sh(&format!("ip -n {public} addr add {PUBLIC_ADDR}/24 dev {prefix}a && ip -n {public} link set {prefix}a up"));
        sh(&format!(
            "ip -n {router} addr add {ROUTER_PUBLIC_ADDR}/24 dev {prefix}b && ip -n {router} link set {prefix}b up"
        ));
        sh(&format!("ip -n {router} addr add 192.168.201.1/24 dev {prefix}c && ip -n {router} link set {prefix}c up"));
        sh(&format!("ip -n {home} addr add {HOME_ADDR}/24 dev {prefix}d && ip -n {home} link set {prefix}d up"));
        sh(&format!("ip -n {home} route add default via 192.168.201.1"));
        sh(&format!("ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1"));
        sh(&format!(
            "ip netns exec {router} nft 'add table ip nat; \
             add chain ip nat post {{ type nat hook postrouting priority 100; }}; \
             add rule ip nat post oifname {prefix}b masquerade'"
        ));
        t
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Starts `swarmfs ARGS` inside namespace `ns`, logging to `log`.
    fn spawn(&mut self, ns: &str, log: &Path, args: &[&str]) -> usize {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(ns), BIN])
            .args(args)
            .env("SWARMFS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.processes.push(child);
        self.processes.len() - 1
    }

    fn kill(&mut self, i: usize) {
        let _ = self.processes[i].kill();
        let _ = self.processes[i].wait();
    }

    /// Runs `swarmfs ARGS` inside namespace `ns` and waits for it.
    fn run(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.ns(ns), BIN]).args(args).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
        for ns in ["pub", "nat", "home"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(ns)]).status();
        }
    }
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A swarm on a [`Topology`]: the tracker in the public namespace at `PUBLIC_ADDR:7000`,
/// peers added on either side, and a member client that runs in the public namespace.
struct NatSwarm {
    t: Topology,
    dir: tempfile::TempDir,
    peer_token: String,
}

impl NatSwarm {
    fn start(t: Topology, tracker_flags: &[&str]) -> NatSwarm {
        let dir = tempfile::tempdir().unwrap();
        let tracker_addr = format!("{PUBLIC_ADDR}:7000");
        let init =
            json(&common::run(&dir.path().join("tracker"), &["init", "--tracker-addr", &tracker_addr, "--json"]));
        let member = init["member_token"].as_str().unwrap();
        assert!(common::run(&dir.path().join("client"), &["join", member]).status.success());
        let mut s = NatSwarm { t, dir, peer_token: init["peer_token"].as_str().unwrap().to_string() };
        let tracker = s.home("tracker");
        let mut args = vec!["tracker", "--home", &tracker, "--listen", &tracker_addr];
        args.extend_from_slice(tracker_flags);
        let log = s.path("tracker.log");
        s.t.spawn("pub", &log, &args);
        s
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn home(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Joins and starts peer `name` in namespace `ns` ("pub" or "home"), listening on `ip`.
    fn add_peer(&mut self, name: &str, ns: &str, ip: &str) -> usize {
        assert!(common::run(&self.path(name), &["join", &self.peer_token]).status.success());
        let (home, listen, log) = (self.home(name), format!("{ip}:0"), self.path(&format!("{name}.log")));
        self.t.spawn(ns, &log, &["peer", "--home", &home, "--listen", &listen, "--heartbeat-ms", "300"])
    }

    /// A client command, in the public namespace, with the member's home.
    fn cli(&self, args: &[&str]) -> Output {
        let home = self.home("client");
        let mut all = args.to_vec();
        all.extend_from_slice(&["--home", &home]);
        self.t.run("pub", &all)
    }

    /// `peers --json`, or None while the tracker does not answer yet.
    fn peers(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["peers", "--json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Waits until `n` peers are up and each one's reach has been tested.
    fn wait_tested(&self, n: usize) -> serde_json::Value {
        wait_for(&format!("{n} peers up, each one's reach tested"), Duration::from_secs(30), || {
            let v = self.peers()?;
            let all = v.as_array()?;
            let done = all.len() == n && all.iter().all(|p| p["state"] == "up" && p["reach"] != "unknown");
            done.then_some(v)
        })
    }

    /// Waits until no chunk is under-replicated, being repaired or lost.
    fn wait_healthy(&self, what: &str) -> serde_json::Value {
        wait_for(what, Duration::from_secs(60), || {
            let h = json(&self.cli(&["health", "--json"]));
            let ch = &h["chunks"];
            (ch["under_replicated"] == 0 && ch["repairing"] == 0 && ch["lost"] == 0).then_some(h)
        })
    }

    /// The chunk files in peer `name`'s store.
    fn stored(&self, name: &str) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        common::walk(&self.path(name).join("store/chunks"), &mut files);
        files
    }
}

#[test]
fn a_peer_behind_nat_is_seen_as_such_and_takes_repaired_copies_over_its_own_session() {
    let fast = ["--repair-after", "2", "--peer-timeout", "2", "--repair-rate", "0"];
    let mut s = NatSwarm::start(Topology::build(), &fast);
    let public = [s.add_peer("pub0", "pub", PUBLIC_ADDR), s.add_peer("pub1", "pub", PUBLIC_ADDR)];
    let home_peer = s.add_peer("home0", "home", HOME_ADDR);
    // Reachability is learned: the tracker dials every peer back at its advertised address.
    let peers = s.wait_tested(3);
    for p in peers.as_array().unwrap() {
        let expected = if p["addrs"][0].as_str().unwrap().starts_with(HOME_ADDR) { "nat" } else { "direct" };
        assert_eq!(p["reach"], expected, "{peers}");
    }
    // The peer learns the address the tracker sees: its router's public side.
    let home_log = std::fs::read_to_string(s.path("home0.log")).unwrap();
    assert!(home_log.contains(&format!("observed={ROUTER_PUBLIC_ADDR}:")), "{home_log}");

    // Files on the two public peers (placement puts the NAT'd peer last) ...
    let mut files = Vec::new();
    for i in 0..4u64 {
        let data = pattern(40_000 + i as usize * 9_000, 30 + i);
        let local = s.path(&format!("f{i}"));
        std::fs::write(&local, &data).unwrap();
        let remote = format!("/f{i}");
        let out = s.cli(&["put", local.to_str().unwrap(), &remote, "--chunk-size", "16K", "--replicas", "2"]);
        assert!(out.status.success(), "put: {}", String::from_utf8_lossy(&out.stderr));
        files.push((remote, data));
    }
    // ... then one public peer dies: its copies can only be made again behind the NAT, by
    // an order over the NAT'd peer's own session; it fetches from the other public peer.
    s.t.kill(public[0]);
    let h = s.wait_healthy("every chunk back at two live copies");
    assert!(h["repair"]["repaired_chunks"].as_u64().unwrap() > 0, "{h}");
    let stored = s.stored("home0");
    assert!(!stored.is_empty(), "the NAT'd peer holds the copies made again");
    for p in &stored {
        let id = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(blake3::hash(&std::fs::read(p).unwrap()).to_hex().as_str(), id, "a sound copy");
    }
    // Every file still reads back from the public side (the remaining public peer).
    let reads_back = |s: &NatSwarm| {
        for (remote, data) in &files {
            let out = s.cli(&["cat", remote]);
            assert!(out.status.success() && out.stdout == *data, "{remote}: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    reads_back(&s);

    // And back out: the other public peer dies too, a fresh one joins. Every chunk's only
    // live copy is behind the NAT, which the new peer cannot dial: the NAT'd peer is told to
    // push its copies to it (it dials out).
    s.t.kill(public[1]);
    s.add_peer("pub2", "pub", PUBLIC_ADDR);
    s.wait_healthy("every chunk at two live copies again, one on the new peer");
    assert_eq!(s.stored("pub2").len(), stored.len(), "the new peer got every chunk from behind the NAT");
    // The NAT'd peer goes: everything reads back from the copies it pushed.
    s.t.kill(home_peer);
    reads_back(&s);
}

/// The port the tracker last saw `log`'s peer connect from, and how many joins it logged.
fn observed_ports(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("the tracker sees this peer connect from"))
        .filter_map(|l| l.split("observed=").nth(1)?.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn a_peer_whose_nat_mapping_changes_joins_again_and_keeps_taking_part() {
    let t = Topology::build();
    // Like a home router that restarts: every new mapping takes a random port, and the
    // mappings it had are forgotten (conntrack flushed) while the peer keeps running.
    let router = t.ns("nat");
    sh(&format!("ip netns exec {router} nft flush chain ip nat post"));
    sh(&format!("ip netns exec {router} nft 'add rule ip nat post oifname {}b masquerade random'", t.prefix));
    let mut s = NatSwarm::start(t, &["--peer-timeout", "2", "--gc-delay", "1"]);
    s.add_peer("pub0", "pub", PUBLIC_ADDR);
    s.add_peer("home0", "home", HOME_ADDR);
    s.wait_tested(2);
    let log = || std::fs::read_to_string(s.path("home0.log")).unwrap();
    let before = observed_ports(&log());
    assert_eq!(before.len(), 1, "{}", log());
    // The router forgets every mapping.
    sh(&format!("ip netns exec {router} conntrack -F 2>/dev/null"));
    let after = wait_for("the NAT'd peer to join again from a new mapping", Duration::from_secs(30), || {
        let ports = observed_ports(&log());
        (ports.len() >= 2).then_some(ports)
    });
    assert_ne!(after.last(), before.last(), "a new public port: {after:?}");
    // It is up again, and still takes the tracker's orders over its new session: draining
    // the public peer copies its chunk to the NAT'd one, and removing the file collects it
    // there, both by orders that can only travel over the session the NAT'd peer opened.
    let peers = s.wait_tested(2);
    std::fs::write(s.path("f"), pattern(30_000, 40)).unwrap();
    let put = s.cli(&["put", s.path("f").to_str().unwrap(), "/f", "--replicas", "1"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let public = peers.as_array().unwrap().iter().find(|p| p["reach"] == "direct").unwrap();
    let public_id = public["node_id"].as_str().unwrap();
    let drain = s.t.run("pub", &["peer", "drain", public_id, "--json", "--home", &s.home("tracker")]);
    assert!(drain.status.success(), "drain: {}", String::from_utf8_lossy(&drain.stderr));
    assert_eq!(s.stored("home0").len(), 1, "the drained peer's chunk was copied behind the NAT");
    let rm = s.cli(&["rm", "/f"]);
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    wait_for("the removed file's chunk collected behind the NAT", Duration::from_secs(30), || {
        s.stored("home0").is_empty().then_some(())
    });
}
