//! A swarm that heals itself: repair after a peer dies, scrub of copies nobody reads, drain,
//! and collection of what failed uploads leave behind. Real processes throughout.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{pattern, stderr, wait_for, Cluster};

/// Repair and liveness on a test's time scale: a dead peer is noticed within about 2 s and
/// replaced 2 s later.
const FAST_TRACKER: &[&str] = &["--repair-after", "2", "--peer-timeout", "2", "--repair-rate", "0"];
const FAST_PEER: &[&str] = &["--heartbeat-ms", "300"];

fn put_files(c: &Cluster, n: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            // 1 byte to ~120 KiB, in 16 KiB chunks: most files have several chunks.
            let len = 1 + (i * 7919 + seed as usize * 131) % (120 * 1024);
            let data = pattern(len, seed * 1000 + i as u64);
            let local = c.path(&format!("in-{seed}-{i}"));
            std::fs::write(&local, &data).unwrap();
            let remote = format!("/d{seed}/f{i}");
            c.ok(&["put", local.to_str().unwrap(), &remote, "--chunk-size", "16K", "--replicas", "2"]);
            (remote, data)
        })
        .collect()
}

fn reads_back(c: &Cluster, files: &[(String, Vec<u8>)]) {
    for (remote, data) in files {
        let out = c.cli(&["cat", remote]);
        assert!(out.status.success(), "cat {remote}: {}", stderr(&out));
        assert!(out.stdout == *data, "{remote} reads back byte-exact");
    }
}

/// Health once every chunk has its R live copies and nothing is queued.
fn wait_healthy(c: &Cluster, what: &str, limit: Duration) -> serde_json::Value {
    wait_for(what, limit, || {
        let h = c.health()?;
        let ch = &h["chunks"];
        let done = ch["under_replicated"] == 0 && ch["repairing"] == 0 && ch["lost"] == 0 && h["repair"]["queued"] == 0;
        done.then_some(h)
    })
}

#[test]
fn a_dead_peer_s_copies_are_made_again_so_a_second_death_loses_nothing() {
    let mut c = Cluster::start_with(4, "1G", FAST_TRACKER, FAST_PEER);
    let files = put_files(&c, 50, 1);
    let before = wait_healthy(&c, "a healthy swarm", Duration::from_secs(20));
    let chunks = before["chunks"]["healthy"].as_u64().unwrap();
    assert!(chunks > 50, "the files span many chunks ({chunks})");
    c.kill_peer(0);
    // Noticed (2 s), waited for (2 s), then repaired.
    let h = wait_for("peer 0 to be seen down", Duration::from_secs(15), || {
        let h = c.health()?;
        (h["peers"].as_array()?.iter().filter(|p| p["state"] == "down").count() == 1).then_some(h)
    });
    assert_eq!(h["status"], "degraded", "{h}");
    let h = wait_healthy(&c, "every chunk back at 2 live copies", Duration::from_secs(60));
    assert_eq!(h["chunks"]["healthy"].as_u64(), Some(chunks), "{h}");
    assert!(h["repair"]["repaired_chunks"].as_u64().unwrap() > 0, "{h}");
    // `stat` agrees: each chunk of a file has two live holders.
    let st: serde_json::Value = serde_json::from_str(&c.ok(&["stat", &files[10].0, "--json"])).unwrap();
    for ch in st["chunk_holders"].as_array().unwrap() {
        assert!(ch["live"].as_u64().unwrap() >= 2, "{ch}");
    }
    // A second peer dies for good before anything could be repaired again: no file is lost.
    c.kill_peer(1);
    reads_back(&c, &files);
}

#[test]
fn scrub_finds_a_corrupt_copy_nobody_reads_and_repair_replaces_it() {
    let peer_flags: Vec<&str> = FAST_PEER.iter().copied().chain(["--scrub-rate", "20M"]).collect();
    let c = Cluster::start_with(3, "1G", FAST_TRACKER, &peer_flags);
    let files = put_files(&c, 3, 2);
    wait_healthy(&c, "a healthy swarm", Duration::from_secs(20));
    let holder = (0..3).find(|&i| !c.chunk_files(i).is_empty()).expect("some peer holds a chunk");
    let victim = c.chunk_files(holder).into_iter().next().unwrap();
    let id = victim.file_name().unwrap().to_str().unwrap().to_string();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    // Nobody reads the file: the scrubber finds the bad copy and sets it aside.
    let quarantined = c.peer_home(holder).join("store/quarantine").join(&id);
    wait_for("scrub to quarantine the corrupt copy", Duration::from_secs(30), || quarantined.exists().then_some(()));
    let log = c.log(&format!("peer{holder}"));
    assert!(log.contains("scrub found a corrupt copy"), "{log}");
    // Repair makes a second sound copy again, somewhere.
    let sound = || {
        (0..3)
            .flat_map(|i| c.chunk_files(i))
            .filter(|p| p.file_name().unwrap().to_str() == Some(id.as_str()))
            .filter(|p| blake3::hash(&std::fs::read(p).unwrap_or_default()).to_hex().as_str() == id)
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sound() < 2 {
        if std::time::Instant::now() > deadline {
            let stat: Vec<String> = files.iter().map(|(name, _)| c.ok(&["stat", name, "--json"])).collect();
            panic!(
                "no second sound copy of {id} after 30 s (holder {holder})\nhealth: {:?}\nstat: {stat:?}\ntracker: {}\npeer0: {}\npeer1: {}\npeer2: {}",
                c.health(),
                c.log("tracker"),
                c.log("peer0"),
                c.log("peer1"),
                c.log("peer2")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_healthy(&c, "a healthy swarm again", Duration::from_secs(20));
    reads_back(&c, &files);
}

#[test]
fn a_drained_peer_can_be_switched_off_without_anything_falling_below_r() {
    let mut c = Cluster::start_with(4, "1G", FAST_TRACKER, FAST_PEER);
    let files = put_files(&c, 20, 3);
    wait_healthy(&c, "a healthy swarm", Duration::from_secs(20));
    let held = c.chunk_files(0).len();
    assert!(held > 10, "peer 0 holds a good share of the chunks ({held})");
    let id = c.peer_id(0);
    // Wrong uses get one line and their exit code, and drain nothing.
    let refused = c.cli(&["peer", "drain", &id[..10]]);
    assert_eq!(refused.status.code(), Some(5), "a member cannot drain: {}", stderr(&refused));
    assert!(stderr(&refused).contains("not the tracker's home"), "{}", stderr(&refused));
    let bad = common::run(&c.path("tracker"), &["peer", "drain", "not-hex"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let unknown = common::run(&c.path("tracker"), &["peer", "drain", "0000000000ffff"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("no peer 0000000000ffff"), "{}", stderr(&unknown));
    let out = common::run(&c.path("tracker"), &["peer", "drain", &id[..10], "--json"]);
    assert!(out.status.success(), "drain: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["safe_to_remove"], true, "{v}");
    let peers = c.peers_json().unwrap();
    let me = peers.iter().find(|p| p["node_id"] == id.as_str()).unwrap();
    assert_eq!(me["state"], "draining");
    c.kill_peer(0);
    // Nothing to wait for: no chunk depended on that copy.
    let h = c.health().unwrap();
    assert_eq!((h["chunks"]["under_replicated"].as_u64(), h["chunks"]["lost"].as_u64()), (Some(0), Some(0)), "{h}");
    reads_back(&c, &files);
    // New files do not go to a draining peer, even once it is back.
    c.start_peer(0);
    wait_for("peer 0 back, still draining", Duration::from_secs(20), || {
        c.peers_json()?.iter().any(|p| p["node_id"] == id.as_str() && p["state"] == "draining").then_some(())
    });
    let before = c.chunk_files(0).len();
    put_files(&c, 5, 4);
    assert_eq!(c.chunk_files(0).len(), before, "no new chunk lands on a draining peer");
}

fn all_chunk_files(c: &Cluster) -> usize {
    (0..c.peer_count()).map(|i| c.chunk_files(i).len()).sum()
}

/// Starts `swarmfs put` of `local` and kills it with SIGKILL once the peers hold at least
/// `chunks` more chunk files than before.
fn interrupted_put(c: &Cluster, local: &Path, remote: &str, chunks: usize) {
    let before = all_chunk_files(c);
    let mut put = std::process::Command::new(common::BIN)
        .args(["put", local.to_str().unwrap(), remote, "--chunk-size", "64K", "--home"])
        .arg(c.client_home())
        .env("SWARMFS_LOG", "off")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the put to store some chunks", Duration::from_secs(30), || {
        (all_chunk_files(c) >= before + chunks).then_some(())
    });
    put.kill().unwrap();
    put.wait().unwrap();
}

#[test]
fn chunks_of_an_interrupted_put_are_collected_and_a_concurrent_put_of_the_same_content_is_unharmed() {
    let tracker: Vec<&str> = FAST_TRACKER.iter().copied().chain(["--gc-delay", "2", "--orphan-delay", "2"]).collect();
    let c = Cluster::start_with(3, "1G", &tracker, FAST_PEER);
    let local = c.path("big");
    std::fs::write(&local, pattern(24 << 20, 5)).unwrap();
    interrupted_put(&c, &local, "/big", 20);
    assert!(c.cli(&["stat", "/big"]).status.code() == Some(3), "nothing was committed");
    wait_for("the orphaned chunks to be collected", Duration::from_secs(30), || {
        (all_chunk_files(&c) == 0).then_some(())
    });
    // Again, and while those orphans wait for collection, the same content is put in full,
    // several times over as collection rounds come and go: every put commits and reads back.
    interrupted_put(&c, &local, "/big", 20);
    for round in 0..4 {
        let remote = format!("/again-{round}");
        c.ok(&["put", local.to_str().unwrap(), &remote, "--chunk-size", "64K"]);
        std::thread::sleep(Duration::from_millis(700));
    }
    // Past several GC delays: whatever was collected, the committed files are whole.
    std::thread::sleep(Duration::from_secs(5));
    for round in 0..4 {
        let back = c.path("back");
        c.ok(&["get", &format!("/again-{round}"), back.to_str().unwrap()]);
        assert!(std::fs::read(&back).unwrap() == std::fs::read(&local).unwrap(), "/again-{round} is whole");
    }
    wait_healthy(&c, "every committed chunk at R", Duration::from_secs(30));
}

#[test]
fn a_peer_nobody_can_dial_takes_repair_and_collect_orders_over_the_session_it_opened() {
    let mut c = Cluster::start_with(2, "1G", &[FAST_TRACKER, &["--gc-delay", "1"]].concat(), FAST_PEER);
    let files = put_files(&c, 6, 5);
    wait_healthy(&c, "a healthy swarm", Duration::from_secs(20));
    // A third peer that cannot be dialled, as behind a NAT: it advertises an address where
    // nothing listens. Only the connection it opens to the tracker reaches it.
    let hidden = c.add_peer_with(&["--advertise", "127.0.0.1:1"]);
    c.wait_up(3);
    let hidden_id = c.peer_id(hidden);
    // The tracker learns it by dialling each peer back: `peers` shows which is which.
    let reach = wait_for("every peer's reach tested", Duration::from_secs(20), || {
        let peers = c.peers_json()?;
        let r: Vec<(String, String)> = peers
            .iter()
            .map(|p| (p["node_id"].as_str().unwrap().to_string(), p["reach"].as_str().unwrap().to_string()))
            .collect();
        r.iter().all(|(_, reach)| reach != "unknown").then_some(r)
    });
    for (node, r) in &reach {
        assert_eq!(r, if *node == hidden_id { "nat" } else { "direct" }, "{reach:?}");
    }
    // Peer 0 dies: its copies can only be made again on the hidden peer, by an order that
    // must travel over the hidden peer's own session (it fetches from peer 1 itself).
    c.kill_peer(0);
    let h = wait_healthy(&c, "every chunk back at two live copies", Duration::from_secs(30));
    assert!(h["repair"]["repaired_chunks"].as_u64().unwrap() > 0, "{h}");
    let held = c.chunk_files(hidden);
    assert!(!held.is_empty(), "the hidden peer holds the copies made again");
    for p in &held {
        let id = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(blake3::hash(&std::fs::read(p).unwrap()).to_hex().as_str(), id, "a sound copy");
    }
    for (remote, _) in &files {
        let st: serde_json::Value = serde_json::from_str(&c.ok(&["stat", remote, "--json"])).unwrap();
        for h in st["chunk_holders"].as_array().unwrap() {
            let holders = h["holders"].to_string();
            assert!(holders.contains(&hidden_id[..8]), "{remote}: {h}");
        }
    }
    reads_back(&c, &files);
    // Removed files: their chunks are collected from the hidden peer too, by order over
    // its session.
    c.ok(&["rm", "-r", "/d5"]);
    wait_for("the hidden peer's copies collected", Duration::from_secs(30), || {
        c.chunk_files(hidden).is_empty().then_some(())
    });
}
