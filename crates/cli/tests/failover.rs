//! Several trackers on one PostgreSQL database: clients and peers fail over when theirs is
//! killed, membership reaches peers whichever tracker they are on, and the collector and
//! repair run once across trackers. Real processes, a real PostgreSQL cluster of the test's
//! own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg::PgCluster;
use common::{free_port, pattern, run, stderr, wait_for, BIN};

/// A swarm of several trackers on one database, and its peers; every process is killed
/// when it is dropped.
struct Swarm {
    dir: tempfile::TempDir,
    addrs: Vec<String>,
    member_token: String,
    peer_token: String,
    pg: PgCluster,
    trackers: Vec<Option<Child>>,
    peers: Vec<Option<Child>>,
    peer_metrics: Vec<String>,
    tracker_flags: Vec<String>,
}

impl Swarm {
    /// `swarmfs init` with one `--tracker-addr` per tracker; each tracker gets a copy of the
    /// tracker home (one identity), none started yet.
    fn new(trackers: usize, tracker_flags: &[&str]) -> Swarm {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..trackers).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut args = vec!["init", "--json"];
        for a in &addrs {
            args.extend(["--tracker-addr", a.as_str()]);
        }
        let home0 = dir.path().join("tracker0");
        let out = run(&home0, &args);
        assert!(out.status.success(), "init: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for i in 1..trackers {
            let st = Command::new("cp").arg("-a").arg(&home0).arg(dir.path().join(format!("tracker{i}"))).status();
            assert!(st.unwrap().success());
        }
        let s = Swarm {
            addrs,
            member_token: v["member_token"].as_str().unwrap().into(),
            peer_token: v["peer_token"].as_str().unwrap().into(),
            pg: PgCluster::start(),
            trackers: (0..trackers).map(|_| None).collect(),
            peers: Vec::new(),
            peer_metrics: Vec::new(),
            tracker_flags: tracker_flags.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        let out = run(&s.client(), &["join", &s.member_token]);
        assert!(out.status.success(), "{}", stderr(&out));
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn client(&self) -> PathBuf {
        self.path("client")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Child {
        common::spawn_logged(self.dir.path(), name, args)
    }

    fn start_tracker(&mut self, i: usize) {
        let home = self.path(&format!("tracker{i}")).display().to_string();
        let url = self.pg.url();
        let mut args = vec!["tracker", "--home", &home, "--listen", &self.addrs[i], "--db", &url];
        args.extend(self.tracker_flags.iter().map(String::as_str));
        let child = self.spawn(&format!("tracker{i}"), &args);
        self.trackers[i] = Some(child);
        // Listening before anyone is told to try it first (else a peer starting now would
        // find it closed and, rightly, go to the next tracker).
        let addr = &self.addrs[i];
        wait_for(&format!("tracker {i} to listen"), Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        });
    }

    fn kill_tracker(&mut self, i: usize) {
        if let Some(mut c) = self.trackers[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// A new peer; `first` is the tracker it tries first (its swarm.json lists that one
    /// first, as a peer near that tracker would be set up).
    fn add_peer(&mut self, first: usize) -> usize {
        let i = self.peers.len();
        let home = self.path(&format!("peer{i}"));
        let out = run(&home, &["join", &self.peer_token]);
        assert!(out.status.success(), "{}", stderr(&out));
        prefer_tracker(&home, &self.addrs, first);
        let metrics = format!("127.0.0.1:{}", free_port());
        let h = home.display().to_string();
        let args = [
            "peer",
            "--home",
            &h,
            "--listen",
            "127.0.0.1:0",
            "--capacity",
            "1G",
            "--heartbeat-ms",
            "300",
            "--metrics",
            &metrics,
        ];
        let child = self.spawn(&format!("peer{i}"), &args);
        self.peers.push(Some(child));
        self.peer_metrics.push(metrics);
        i
    }

    fn stop_peer(&mut self, i: usize) {
        if let Some(mut c) = self.peers[i].take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            c.wait().unwrap();
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        run(&self.client(), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "swarmfs {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Peers up as the tracker the client reaches sees them.
    fn up(&self) -> usize {
        let out = self.cli(&["peers", "--json"]);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return 0 };
        v.as_array().map(|a| a.iter().filter(|p| p["state"] == "up").count()).unwrap_or(0)
    }

    fn peer_id(&self, i: usize) -> String {
        let out = run(&self.path(&format!("peer{i}")), &["join", &self.peer_token, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["node_id"].as_str().unwrap().to_string()
    }

    /// How many requests of `kind` peer `i` answered successfully (its metrics endpoint).
    fn answered(&self, i: usize, kind: &str) -> u64 {
        let body = common::scrape(&self.peer_metrics[i]);
        common::sum(&body, "swarmfs_requests_total", &[&format!("kind=\"{kind}\""), "result=\"ok\""]) as u64
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for c in self.peers.iter_mut().chain(self.trackers.iter_mut()).flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Rewrites a home's swarm.json so that it tries tracker `first` first.
fn prefer_tracker(home: &Path, addrs: &[String], first: usize) {
    let path = home.join("swarm.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut order = vec![addrs[first].clone()];
    order.extend(addrs.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, a)| a.clone()));
    v["tracker_addr"] = order[0].clone().into();
    v["tracker_addrs"] = order.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

/// A put the client was told succeeded: where, what, when.
type Acked = (String, Vec<u8>, Instant);

#[test]
fn killing_a_tracker_moves_clients_and_peers_to_the_other_and_no_acknowledged_put_is_lost() {
    let mut s = Swarm::new(2, &["--peer-timeout", "3"]);
    s.start_tracker(0);
    s.start_tracker(1);
    let (a, b) = (0, 1);
    // Peers 0 and 1 on tracker A (the client's too), peer 2 on tracker B.
    for first in [a, a, b] {
        s.add_peer(first);
    }
    wait_for("3 peers up as tracker A sees them", Duration::from_secs(30), || (s.up() == 3).then_some(()));
    wait_for("peer 2 to join at B", Duration::from_secs(30), || {
        s.log("peer2").contains(&format!("tracker={}", s.addrs[b])).then_some(())
    });

    // A peer joining at B reaches the peers on A as a membership event.
    let joined_at = Instant::now();
    let p3 = s.add_peer(b);
    let id3 = s.peer_id(p3);
    let short3 = &id3[..8];
    wait_for("peer 0 (on A) hears of peer 3 (joined at B)", Duration::from_secs(10), || {
        s.log("peer0").lines().any(|l| l.contains("member joined") && l.contains(short3)).then_some(())
    });
    eprintln!("a join at B reached a peer on A in {:?}", joined_at.elapsed());
    assert!(joined_at.elapsed() < Duration::from_secs(5), "{:?}", joined_at.elapsed());

    // A client putting files in a loop, each put a process of its own (as scripts do).
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let putter = {
        let (stop, acked, client, dir) = (stop.clone(), acked.clone(), s.client(), s.path("puts"));
        std::fs::create_dir_all(&dir).unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let data = pattern(150_000 + n as usize * 7, n);
                let local = dir.join(format!("f{n}"));
                std::fs::write(&local, &data).unwrap();
                let remote = format!("/loop-f{n}");
                let out = run(&client, &["put", local.to_str().unwrap(), &remote, "--replicas", "2"]);
                if out.status.success() {
                    acked.lock().unwrap().push((remote, data, Instant::now()));
                }
            }
        })
    };
    wait_for("a few puts through tracker A", Duration::from_secs(30), || {
        (acked.lock().unwrap().len() >= 3).then_some(())
    });

    // kill -9 the tracker the client and peers 0 and 1 are on.
    s.kill_tracker(a);
    let killed = Instant::now();
    wait_for("a put acknowledged after tracker A died", Duration::from_secs(20), || {
        acked.lock().unwrap().iter().any(|(_, _, at)| *at > killed).then_some(())
    });
    eprintln!("first put acknowledged {:?} after tracker A was killed", killed.elapsed());
    // Peers 0 and 1 rejoin at B (B counted them up all along, from A's notices, until
    // A's lease would have lapsed: what counts is their session).
    let rejoined = format!("tracker={}", s.addrs[b]);
    wait_for("peers 0 and 1 rejoin at tracker B", Duration::from_secs(20), || {
        [0, 1]
            .iter()
            .all(|i| {
                s.log(&format!("peer{i}")).lines().any(|l| l.contains("joined the swarm") && l.contains(&rejoined))
            })
            .then_some(())
    });
    eprintln!("peers 0 and 1 rejoined at tracker B {:?} after tracker A was killed", killed.elapsed());
    // Once B has taken A for dead (its lease lapsed), nothing A owned is left down.
    wait_for("tracker B to see A's lease lapse", Duration::from_secs(20), || {
        s.log("tracker1").contains("stopped renewing its lease").then_some(())
    });
    assert_eq!(s.up(), 4, "every peer up at B after A's lease lapsed");
    wait_for("more puts through tracker B", Duration::from_secs(30), || {
        (acked.lock().unwrap().iter().filter(|(_, _, at)| *at > killed).count() >= 3).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    putter.join().unwrap();

    // Every acknowledged put reads back whole, through B.
    let acked = acked.lock().unwrap();
    for (remote, data, _) in acked.iter() {
        let out = s.cli(&["cat", remote]);
        assert!(out.status.success(), "{remote}: {}", stderr(&out));
        assert!(out.stdout == *data, "{remote} reads back different bytes");
    }
    eprintln!("{} acknowledged puts, all read back", acked.len());

    // Tracker A comes back and serves the same swarm: a client reaching it sees B's puts.
    s.start_tracker(a);
    let last = &acked.last().unwrap().0;
    wait_for("tracker A serves again", Duration::from_secs(20), || {
        let out = s.cli(&["stat", last]);
        out.status.success().then_some(())
    });
}

#[test]
fn with_two_trackers_a_lost_copy_is_ordered_once_and_garbage_deleted_once() {
    let mut s = Swarm::new(2, &["--gc-delay", "1", "--repair-after", "1", "--peer-timeout", "3"]);
    s.start_tracker(0);
    s.start_tracker(1);
    for first in [0, 0, 1, 1] {
        s.add_peer(first);
    }
    wait_for("4 peers up", Duration::from_secs(30), || (s.up() == 4).then_some(()));
    let data = pattern(6 << 20, 7);
    let local = s.path("big");
    std::fs::write(&local, &data).unwrap();
    s.ok(&["put", local.to_str().unwrap(), "/big", "--replicas", "2"]);
    let stat: serde_json::Value = serde_json::from_str(&s.ok(&["stat", "/big", "--json"])).unwrap();
    let holders = stat["chunk_holders"].as_array().unwrap();
    let chunks = holders.len();
    assert!(chunks >= 6, "{stat}");
    // The peer that holds the most copies leaves: each of its copies is made once elsewhere.
    let ids: Vec<String> = (0..4).map(|i| s.peer_id(i)).collect();
    let held = |id: &str| {
        holders
            .iter()
            .filter(|h| h["holders"].as_array().unwrap().iter().any(|n| n["node"].as_str() == Some(id)))
            .count()
    };
    let leaver = (0..4).max_by_key(|&i| held(&ids[i])).unwrap();
    let lost = held(&ids[leaver]);
    assert!(lost > 0);
    s.stop_peer(leaver);
    let others: Vec<usize> = (0..4).filter(|&i| i != leaver).collect();
    wait_for("repair makes every lost copy again", Duration::from_secs(60), || {
        let h = s.cli(&["health", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&h.stdout).ok()?;
        let c = &v["chunks"];
        (c["under_replicated"] == 0 && c["repairing"] == 0 && c["healthy"].as_u64()? >= chunks as u64).then_some(())
    });
    let ordered: u64 = others.iter().map(|&i| s.answered(i, "replicate_chunk") + s.answered(i, "push_chunk")).sum();
    assert_eq!(ordered as usize, lost, "each lost copy ordered exactly once across both trackers");
    let repairing: Vec<usize> =
        (0..2).filter(|t| s.log(&format!("tracker{t}")).contains("repair: ordering copies")).collect();
    assert_eq!(repairing.len(), 1, "one tracker repairs for both");

    // Deleted: every remaining copy is collected by one collector, one order per holder.
    s.ok(&["rm", "/big"]);
    wait_for("the file's chunks deleted from every peer", Duration::from_secs(60), || {
        others.iter().all(|&i| common::count_chunk_files(&s.path(&format!("peer{i}"))) == 0).then_some(())
    });
    let orders: u64 = others.iter().map(|&i| s.answered(i, "collect_chunks")).sum();
    let holding = others.len() as u64;
    assert!(orders <= holding, "{orders} collect orders for {holding} holders: collected twice");
    let collecting: Vec<usize> =
        (0..2).filter(|t| s.log(&format!("tracker{t}")).contains("garbage collected")).collect();
    assert_eq!(collecting.len(), 1, "one tracker collects for both");

    // The tracker doing the work stops cleanly: it leaves the database at once and the
    // other takes the work over.
    let (leader, other) = (repairing[0], 1 - repairing[0]);
    let child = s.trackers[leader].take().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(common::wait_for_exit(&mut { child }, Duration::from_secs(20)), "the tracker stops on SIGTERM");
    assert!(s.log(&format!("tracker{leader}")).contains("left the trackers sharing the database"));
    wait_for("the other tracker to take the work over", Duration::from_secs(20), || {
        s.log(&format!("tracker{other}")).contains("now runs the collector and repair").then_some(())
    });
}

#[test]
fn a_running_cat_finishes_from_the_peers_when_every_tracker_dies() {
    use std::io::Read;
    let mut c = common::Cluster::start(2);
    let data = c.put_pattern("big", "/big.bin", 32 << 20, 31, &[]);
    let mut cat = Command::new(BIN)
        .args(["cat", "/big.bin", "--home"])
        .arg(c.client_home())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    // The pipe holds it back: it has located every chunk and fetched a few.
    let mut got = vec![0u8; 1 << 20];
    out.read_exact(&mut got).unwrap();
    c.kill_tracker();
    // Long enough for the client to find its tracker connection gone and fail to redial.
    std::thread::sleep(Duration::from_secs(3));
    out.read_to_end(&mut got).unwrap();
    let status = cat.wait().unwrap();
    let mut err = String::new();
    cat.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "cat failed: {err}");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the bytes read with no tracker are the file's");
}

#[test]
fn tracker_add_puts_a_new_tracker_in_a_home_and_in_the_peer_tokens_it_issues() {
    let dir = tempfile::tempdir().unwrap();
    let (tracker, client, peer) = (dir.path().join("t"), dir.path().join("c"), dir.path().join("p"));
    let out = run(&tracker, &["init", "--tracker-addr", "192.0.2.10:7000", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let member: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(run(&client, &["join", member["member_token"].as_str().unwrap()]).status.success());
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let added = json(run(&tracker, &["tracker", "add", "192.0.2.11:7000", "--json"]));
    assert_eq!(added["added"], true);
    assert_eq!(added["tracker_addrs"], serde_json::json!(["192.0.2.10:7000", "192.0.2.11:7000"]));
    // The tracker's home issues the new peer token; a peer joining it knows both trackers.
    let token = added["peer_token"].as_str().unwrap();
    assert!(run(&peer, &["join", token]).status.success());
    let swarm: serde_json::Value = serde_json::from_slice(&std::fs::read(peer.join("swarm.json")).unwrap()).unwrap();
    assert_eq!(swarm["tracker_addrs"], added["tracker_addrs"]);
    // Adding it again changes nothing; a member's home learns it the same way, and has no
    // peer token to issue.
    let again = json(run(&tracker, &["tracker", "add", "192.0.2.11:7000", "--json"]));
    assert_eq!(again["added"], false);
    let m = json(run(&client, &["tracker", "add", "192.0.2.11:7000", "--json"]));
    assert_eq!((m["added"].clone(), m["peer_token"].clone()), (serde_json::json!(true), serde_json::Value::Null));
    let out = run(&client, &["tracker", "add", "not an address"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
