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

#[test]
fn a_peer_behind_nat_is_seen_as_such_and_takes_repaired_copies_over_its_own_session() {
    let mut t = Topology::build();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let home = |name: &str| d.join(name).display().to_string();
    let tracker_addr = format!("{PUBLIC_ADDR}:7000");
    let init = json(&common::run(&d.join("tracker"), &["init", "--tracker-addr", &tracker_addr, "--json"]));
    let (member, peer) = (init["member_token"].as_str().unwrap(), init["peer_token"].as_str().unwrap());
    for (h, token) in [("client", member), ("pub0", peer), ("pub1", peer), ("home0", peer)] {
        assert!(common::run(&d.join(h), &["join", token]).status.success());
    }
    t.spawn(
        "pub",
        &d.join("tracker.log"),
        &[
            "tracker",
            "--home",
            &home("tracker"),
            "--listen",
            &tracker_addr,
            "--repair-after",
            "2",
            "--peer-timeout",
            "2",
            "--repair-rate",
            "0",
        ],
    );
    let listen = format!("{PUBLIC_ADDR}:0");
    let mut public = Vec::new();
    for p in ["pub0", "pub1"] {
        let args = ["peer", "--home", &home(p), "--listen", &listen, "--heartbeat-ms", "300"];
        public.push(t.spawn("pub", &d.join(format!("{p}.log")), &args));
    }
    let home_listen = format!("{HOME_ADDR}:0");
    let home_peer = t.spawn(
        "home",
        &d.join("home0.log"),
        &["peer", "--home", &home("home0"), "--listen", &home_listen, "--heartbeat-ms", "300"],
    );
    let client = home("client");
    // None until the tracker answers (it may still be starting).
    let peers = || {
        let out = t.run("pub", &["peers", "--json", "--home", &client]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    };
    // Reachability is learned: the tracker dials every peer back at its advertised address.
    let reach = wait_for("three peers up, each one's reach tested", Duration::from_secs(30), || {
        let v = peers()?;
        let all = v.as_array()?;
        let done = all.len() == 3 && all.iter().all(|p| p["state"] == "up" && p["reach"] != "unknown");
        done.then(|| {
            all.iter()
                .map(|p| (p["addrs"][0].as_str().unwrap().to_string(), p["reach"].as_str().unwrap().to_string()))
                .collect::<Vec<_>>()
        })
    });
    for (addr, r) in &reach {
        let expected = if addr.starts_with(HOME_ADDR) { "nat" } else { "direct" };
        assert_eq!(r, expected, "{reach:?}");
    }
    // The peer learns the address the tracker sees: its router's public side.
    let home_log = std::fs::read_to_string(d.join("home0.log")).unwrap();
    assert!(home_log.contains(&format!("observed={ROUTER_PUBLIC_ADDR}:")), "{home_log}");

    // Files on the two public peers (placement puts the NAT'd peer last) ...
    let mut files = Vec::new();
    for i in 0..4u64 {
        let data = pattern(40_000 + i as usize * 9_000, 30 + i);
        let local = d.join(format!("f{i}"));
        std::fs::write(&local, &data).unwrap();
        let remote = format!("/f{i}");
        let out = t.run(
            "pub",
            &["put", local.to_str().unwrap(), &remote, "--chunk-size", "16K", "--replicas", "2", "--home", &client],
        );
        assert!(out.status.success(), "put: {}", String::from_utf8_lossy(&out.stderr));
        files.push((remote, data));
    }
    // ... then one public peer dies: its copies can only be made again behind the NAT, by
    // an order over the NAT'd peer's own session; it fetches from the other public peer.
    t.kill(public[0]);
    wait_for("every chunk back at two live copies", Duration::from_secs(60), || {
        let h = json(&t.run("pub", &["health", "--json", "--home", &client]));
        let ch = &h["chunks"];
        let done = ch["under_replicated"] == 0
            && ch["repairing"] == 0
            && ch["lost"] == 0
            && h["repair"]["repaired_chunks"].as_u64()? > 0;
        done.then_some(())
    });
    let mut stored = Vec::new();
    common::walk(&d.join("home0/store/chunks"), &mut stored);
    assert!(!stored.is_empty(), "the NAT'd peer holds the copies made again");
    for p in &stored {
        let id = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(blake3::hash(&std::fs::read(p).unwrap()).to_hex().as_str(), id, "a sound copy");
    }
    // Every file still reads back from the public side (the remaining public peer).
    let reads_back = |t: &Topology| {
        for (remote, data) in &files {
            let out = t.run("pub", &["cat", remote, "--home", &client]);
            assert!(out.status.success() && out.stdout == *data, "{remote}: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    reads_back(&t);

    // And back out: the other public peer dies too, a fresh one joins. Every chunk's only
    // live copy is behind the NAT, which the new peer cannot dial: the NAT'd peer is told to
    // push its copies to it (it dials out).
    t.kill(public[1]);
    assert!(common::run(&d.join("pub2"), &["join", peer]).status.success());
    let args = ["peer", "--home", &home("pub2"), "--listen", &listen, "--heartbeat-ms", "300"];
    t.spawn("pub", &d.join("pub2.log"), &args);
    wait_for("every chunk at two live copies again, one on the new peer", Duration::from_secs(60), || {
        let h = json(&t.run("pub", &["health", "--json", "--home", &client]));
        let ch = &h["chunks"];
        (ch["under_replicated"] == 0 && ch["repairing"] == 0 && ch["lost"] == 0).then_some(())
    });
    let mut pushed = Vec::new();
    common::walk(&d.join("pub2/store/chunks"), &mut pushed);
    assert_eq!(pushed.len(), stored.len(), "the new peer got every chunk from behind the NAT");
    // The NAT'd peer goes: everything reads back from the copies it pushed.
    t.kill(home_peer);
    reads_back(&t);
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
    let mut t = Topology::build();
    // Like a home router that restarts: every new mapping takes a random port, and the
    // mappings it had are forgotten (conntrack flushed) while the peer keeps running.
    let router = t.ns("nat");
    sh(&format!("ip netns exec {router} nft flush chain ip nat post"));
    sh(&format!("ip netns exec {router} nft 'add rule ip nat post oifname {}b masquerade random'", t.prefix));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let home = |name: &str| d.join(name).display().to_string();
    let tracker_addr = format!("{PUBLIC_ADDR}:7000");
    let init = json(&common::run(&d.join("tracker"), &["init", "--tracker-addr", &tracker_addr, "--json"]));
    let (member, peer) = (init["member_token"].as_str().unwrap(), init["peer_token"].as_str().unwrap());
    for (h, token) in [("client", member), ("pub0", peer), ("home0", peer)] {
        assert!(common::run(&d.join(h), &["join", token]).status.success());
    }
    let tracker_args =
        ["tracker", "--home", &home("tracker"), "--listen", &tracker_addr, "--peer-timeout", "2", "--gc-delay", "1"];
    t.spawn("pub", &d.join("tracker.log"), &tracker_args);
    let listen = format!("{PUBLIC_ADDR}:0");
    t.spawn(
        "pub",
        &d.join("pub0.log"),
        &["peer", "--home", &home("pub0"), "--listen", &listen, "--heartbeat-ms", "300"],
    );
    let home_listen = format!("{HOME_ADDR}:0");
    let home_args = ["peer", "--home", &home("home0"), "--listen", &home_listen, "--heartbeat-ms", "300"];
    t.spawn("home", &d.join("home0.log"), &home_args);
    let client = home("client");
    let peers = || {
        let out = t.run("pub", &["peers", "--json", "--home", &client]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    };
    let both_up = || {
        let v = peers()?;
        let all = v.as_array()?;
        (all.len() == 2 && all.iter().all(|p| p["state"] == "up" && p["reach"] != "unknown")).then_some(())
    };
    wait_for("both peers up and tested", Duration::from_secs(30), both_up);
    let log = || std::fs::read_to_string(d.join("home0.log")).unwrap();
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
    wait_for("both peers up again", Duration::from_secs(30), both_up);
    std::fs::write(d.join("f"), pattern(30_000, 40)).unwrap();
    let put = t.run("pub", &["put", d.join("f").to_str().unwrap(), "/f", "--replicas", "1", "--home", &client]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let v = peers().unwrap();
    let public_id =
        v.as_array().unwrap().iter().find(|p| p["reach"] == "direct").unwrap()["node_id"].as_str().unwrap().to_string();
    let drain = t.run("pub", &["peer", "drain", &public_id, "--json", "--home", &home("tracker")]);
    assert!(drain.status.success(), "drain: {}", String::from_utf8_lossy(&drain.stderr));
    let held = || {
        let mut files = Vec::new();
        common::walk(&d.join("home0/store/chunks"), &mut files);
        files
    };
    assert_eq!(held().len(), 1, "the drained peer's chunk was copied behind the NAT");
    let rm = t.run("pub", &["rm", "/f", "--home", &client]);
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    wait_for("the removed file's chunk collected behind the NAT", Duration::from_secs(30), || {
        held().is_empty().then_some(())
    });
}
