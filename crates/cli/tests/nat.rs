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
    homes: usize,
    processes: Vec<Child>,
}

const PUBLIC_ADDR: &str = "10.201.0.1";

/// Home network `i`'s router, on the public side.
fn router_addr(i: usize) -> String {
    format!("10.201.0.{}", 2 + i)
}

/// The one address in home network `i` (its router is .1).
fn home_addr(i: usize) -> String {
    format!("192.168.{}.2", 201 + i)
}

/// How a home router maps connections.
#[derive(Clone, Copy, PartialEq)]
enum Nat {
    /// Keeps each connection's source port where it can (Linux masquerade's default): the
    /// address the tracker sees is the one a punch comes from.
    Keeping,
    /// Picks a random public port for every connection (`masquerade random`): punches miss.
    Random,
}

impl Topology {
    /// A public namespace and, for each of `homes`, a home network behind its own NAT router:
    /// public <-> router i (NAT) <-> home i. A home's default route is its router, which
    /// masquerades what leaves towards the public side and, like a home router's firewall,
    /// drops connections from outside that match no mapping; the public side has no route
    /// into any home network, so nothing outside can dial a home directly.
    fn build(homes: &[Nat]) -> Topology {
        static BUILT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("sf{}x{n}", std::process::id() % 100_000);
        let t = Topology { prefix: prefix.clone(), homes: homes.len(), processes: Vec::new() };
        let public = t.ns("pub");
        sh(&format!("ip netns add {public} && ip -n {public} link set lo up"));
        sh(&format!(
            "ip netns exec {public} ip link add {prefix}br type bridge && ip -n {public} link set {prefix}br up"
        ));
        sh(&format!("ip -n {public} addr add {PUBLIC_ADDR}/24 dev {prefix}br"));
        for (i, nat) in homes.iter().enumerate() {
            let (router, home) = (t.ns(&format!("nat{i}")), t.ns(&format!("home{i}")));
            for ns in [&router, &home] {
                sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
            }
            let (wan, up, lan, inside) =
                (format!("{prefix}w{i}"), format!("{prefix}u{i}"), format!("{prefix}l{i}"), format!("{prefix}i{i}"));
            sh(&format!("ip link add {up} netns {public} type veth peer name {wan} netns {router}"));
            sh(&format!("ip -n {public} link set {up} master {prefix}br && ip -n {public} link set {up} up"));
            sh(&format!("ip link add {lan} netns {router} type veth peer name {inside} netns {home}"));
            sh(&format!("ip -n {router} addr add {}/24 dev {wan} && ip -n {router} link set {wan} up", router_addr(i)));
            sh(&format!(
                "ip -n {router} addr add 192.168.{}.1/24 dev {lan} && ip -n {router} link set {lan} up",
                201 + i
            ));
            sh(&format!("ip -n {home} addr add {}/24 dev {inside} && ip -n {home} link set {inside} up", home_addr(i)));
            sh(&format!("ip -n {home} route add default via 192.168.{}.1", 201 + i));
            sh(&format!("ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1"));
            let random = if *nat == Nat::Random { " random" } else { "" };
            sh(&format!(
                "ip netns exec {router} nft 'add table ip nat; \
                 add chain ip nat post {{ type nat hook postrouting priority 100; }}; \
                 add rule ip nat post oifname {wan} masquerade{random}; \
                 add table ip fw; \
                 add chain ip fw inbound {{ type filter hook input priority 0; }}; \
                 add rule ip fw inbound iifname {wan} ct state new drop; \
                 add chain ip fw through {{ type filter hook forward priority 0; }}; \
                 add rule ip fw through iifname {wan} ct state new drop'"
            ));
        }
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
        let mut names = vec!["pub".to_string()];
        for i in 0..self.homes {
            names.extend([format!("nat{i}"), format!("home{i}")]);
        }
        for ns in names {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(&ns)]).status();
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

    /// Joins and starts peer `name` in namespace `ns` ("pub" or "home0", ...), listening on `ip`.
    fn add_peer(&mut self, name: &str, ns: &str, ip: &str) -> usize {
        assert!(common::run(&self.path(name), &["join", &self.peer_token]).status.success());
        let (home, listen, log) = (self.home(name), format!("{ip}:0"), self.path(&format!("{name}.log")));
        self.t.spawn(ns, &log, &["peer", "--home", &home, "--listen", &listen, "--heartbeat-ms", "300"])
    }

    /// A client command, in the public namespace, with the member's home.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_in("pub", args)
    }

    /// A client command in namespace `ns`, with the member's home.
    fn cli_in(&self, ns: &str, args: &[&str]) -> Output {
        let home = self.home("client");
        let mut all = args.to_vec();
        all.extend_from_slice(&["--home", &home]);
        self.t.run(ns, &all)
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
    let mut s = NatSwarm::start(Topology::build(&[Nat::Keeping]), &fast);
    let public = [s.add_peer("pub0", "pub", PUBLIC_ADDR), s.add_peer("pub1", "pub", PUBLIC_ADDR)];
    let home_peer = s.add_peer("home0", "home0", &home_addr(0));
    // Reachability is learned: the tracker dials every peer back at its advertised address.
    let peers = s.wait_tested(3);
    for p in peers.as_array().unwrap() {
        let expected = if p["addrs"][0].as_str().unwrap().starts_with(&home_addr(0)) { "nat" } else { "direct" };
        assert_eq!(p["reach"], expected, "{peers}");
    }
    // The peer learns the address the tracker sees: its router's public side.
    let home_log = std::fs::read_to_string(s.path("home0.log")).unwrap();
    assert!(home_log.contains(&format!("observed={}:", router_addr(0))), "{home_log}");

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
    // Like a home router that restarts: every new mapping takes a random port, and the
    // mappings it had are forgotten (conntrack flushed) while the peer keeps running.
    let t = Topology::build(&[Nat::Random]);
    let router = t.ns("nat0");
    let mut s = NatSwarm::start(t, &["--peer-timeout", "2", "--gc-delay", "1"]);
    s.add_peer("pub0", "pub", PUBLIC_ADDR);
    s.add_peer("home0", "home0", &home_addr(0));
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

/// `put`/`get --json`'s count of connections opened by `path`.
fn connections(v: &serde_json::Value, path: &str) -> u64 {
    v["connections"][path].as_u64().unwrap_or_else(|| panic!("no connection counts in {v}"))
}

/// The bytes the tracker's relay has carried, as `health --json` shows them.
fn relayed_bytes(s: &NatSwarm) -> u64 {
    let h = json(&s.cli(&["health", "--json"]));
    let relay = h["workers"].as_array().unwrap().iter().find(|w| w["name"] == "relay").cloned();
    relay.unwrap_or_else(|| panic!("no relay in {h}"))["done"].as_u64().unwrap()
}

#[test]
fn peers_behind_different_nats_store_serve_and_repair_by_hole_punching() {
    let fast = ["--repair-after", "2", "--peer-timeout", "2", "--repair-rate", "0"];
    let t = Topology::build(&[Nat::Keeping, Nat::Keeping, Nat::Keeping]);
    let mut s = NatSwarm::start(t, &fast);
    let public = s.add_peer("pub0", "pub", PUBLIC_ADDR);
    s.add_peer("h0", "home0", &home_addr(0));
    s.wait_tested(2);
    // The client sits behind a third NAT: it reaches the NAT'd peer only by punching.
    let client = "home2";
    let put = |s: &NatSwarm, name: &str, len: usize, replicas: &str| {
        let data = pattern(len, len as u64);
        let local = s.path(name);
        std::fs::write(&local, &data).unwrap();
        let remote = format!("/{name}");
        let args = ["put", local.to_str().unwrap(), &remote, "--chunk-size", "64K", "--replicas", replicas, "--json"];
        let out = json(&s.cli_in(client, &args));
        (remote, data, out)
    };
    let (a, a_data, out) = put(&s, "a", 1 << 20, "2");
    assert!(connections(&out, "punch") >= 1 && connections(&out, "relay") == 0, "{out}");
    let a_chunks = out["chunks"].as_u64().unwrap() as usize;
    assert_eq!(s.stored("h0").len(), a_chunks, "the NAT'd peer holds a copy of every chunk");

    // A second NAT'd peer joins, behind its own NAT; a put with R=3 places on both.
    s.add_peer("h1", "home1", &home_addr(1));
    s.wait_tested(3);
    let (b, b_data, out) = put(&s, "b", 700_000, "3");
    assert!(connections(&out, "punch") >= 2 && connections(&out, "relay") == 0, "{out}");
    let b_chunks = out["chunks"].as_u64().unwrap() as usize;
    assert_eq!(s.stored("h1").len(), b_chunks);

    // The public peer dies: /a's second copy is made on h1, which fetches it from h0 —
    // two peers behind different NATs, connected by a hole punch.
    s.t.kill(public);
    wait_for("/a's chunks copied from one NAT'd peer to the other", Duration::from_secs(60), || {
        (s.stored("h1").len() == a_chunks + b_chunks).then_some(())
    });
    for p in s.stored("h1") {
        let id = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(blake3::hash(&std::fs::read(&p).unwrap()).to_hex().as_str(), id, "a sound copy");
    }
    let h1_log = std::fs::read_to_string(s.path("h1.log")).unwrap();
    assert!(h1_log.contains("path=punch"), "h1 says it reached h0 by a punch: {h1_log}");

    // Both files read back from behind the client's NAT, from the NAT'd peers only.
    for (remote, data) in [(&a, &a_data), (&b, &b_data)] {
        let local = s.path(&format!("back{}", remote.replace('/', "_")));
        let out = json(&s.cli_in(client, &["get", remote, local.to_str().unwrap(), "--json"]));
        assert_eq!(std::fs::read(&local).unwrap(), *data, "{remote} reads back byte-exact");
        assert!(connections(&out, "punch") >= 1 && connections(&out, "relay") == 0, "{out}");
    }
    assert_eq!(relayed_bytes(&s), 0, "every byte went over punched connections, none through the relay");
    // `peers` shows what the punches found.
    let peers = s.peers().unwrap();
    for p in peers.as_array().unwrap().iter().filter(|p| p["state"] == "up") {
        assert_eq!(p["reach"], "nat-punch", "{peers}");
    }
}

#[test]
fn a_nat_that_maps_each_connection_to_a_new_port_is_reached_through_the_relay() {
    // The peer's router picks a new public port for every connection, so the address the
    // tracker saw is not the one a punch would come from: only the relay gets through.
    let t = Topology::build(&[Nat::Random, Nat::Keeping]);
    let mut s = NatSwarm::start(t, &["--relay-rate", "0"]);
    s.add_peer("h0", "home0", &home_addr(0));
    s.wait_tested(1);
    let data = pattern(900_000, 77);
    let local = s.path("f");
    std::fs::write(&local, &data).unwrap();
    let client = "home1";
    let put = json(&s.cli_in(client, &["put", local.to_str().unwrap(), "/f", "--replicas", "1", "--json"]));
    assert!(connections(&put, "relay") >= 1 && connections(&put, "punch") == 0, "{put}");
    let after_put = relayed_bytes(&s);
    assert!(after_put > data.len() as u64, "the relay carried the upload: {after_put} bytes");
    let back = s.path("back");
    let get = json(&s.cli_in(client, &["get", "/f", back.to_str().unwrap(), "--json"]));
    assert_eq!(std::fs::read(&back).unwrap(), data, "reads back byte-exact through the relay");
    assert!(connections(&get, "relay") >= 1, "{get}");
    assert!(relayed_bytes(&s) > after_put + data.len() as u64, "the relay carried the download too");
    // `peers` shows the peer as reached through the relay only (the punch was reported failed).
    wait_for("the failed punch reported", Duration::from_secs(10), || {
        let peers = s.peers()?;
        (peers[0]["reach"] == "nat-relay").then_some(())
    });
}

#[test]
fn rendezvous_requests_for_unknown_tokens_or_unconnected_peers_are_refused_and_the_tracker_keeps_serving() {
    use bytes::Bytes;
    use swarmfs_proto::{ErrorCode, Frame, FrameKind, NodeId, Request, Response, Role};
    use tokio::io::AsyncWriteExt;
    let c = common::Cluster::start(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let home = c.client_home();
        let swarm = swarmfs_net::Swarm {
            identity: swarmfs_net::Identity::generate().unwrap(),
            secret: common::home_secret(&home),
            member: None,
        };
        let tracker = common::home_tracker_id(&home);
        let nobody = NodeId([5; 32]);
        // A relay leg with a made-up token, a relay to a node that is not connected: one
        // clear refusal each, then the connection ends.
        for (req, says) in [
            (Request::RelayJoin { token: 42 }, "no such relay"),
            (Request::Relay { to: nobody }, "is not connected to the tracker"),
        ] {
            let mut s = swarmfs_net::rpc::dial_raw(&swarm, &c.tracker_addr, tracker).await.unwrap();
            swarmfs_net::io::write_frame(&mut s, &Frame::new(FrameKind::Request, 1, &req, Bytes::new())).await.unwrap();
            s.flush().await.unwrap();
            let answer = swarmfs_net::io::read_frame(&mut s).await.unwrap().unwrap();
            match answer.decode_meta::<Response>().unwrap() {
                Response::Error { message, .. } => assert!(message.contains(says), "{message}"),
                other => panic!("{req:?} answered {other:?}"),
            }
        }
        let (conn, _events) = swarmfs_net::dial(&swarm, &c.tracker_addr, tracker, Role::Client).await.unwrap();
        let refusal = |r: Response| match r {
            Response::Error { code, message } => (code, message),
            other => panic!("not refused: {other:?}"),
        };
        let (_, m) = refusal(conn.call(&Request::Punch { to: nobody }, Bytes::new()).await.unwrap().0);
        assert!(m.contains("is not connected to the tracker"), "{m}");
        let (_, m) = refusal(conn.call(&Request::PunchReady { token: 42 }, Bytes::new()).await.unwrap().0);
        assert!(m.contains("no such punch"), "{m}");
        // A relay request in the middle of a connection cannot take it over.
        let (code, m) = refusal(conn.call(&Request::Relay { to: nobody }, Bytes::new()).await.unwrap().0);
        assert_eq!(code, ErrorCode::InvalidArgument, "{m}");
        assert!(
            matches!(conn.call(&Request::ListPeers, Bytes::new()).await.unwrap().0, Response::Peers(p) if p.len() == 1)
        );
    });
    // And everyone else is still served.
    assert!(c.peers_json().is_some());
}
