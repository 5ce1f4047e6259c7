//! Peer behaviour seen from a client: capacity, restarts, placement.

mod common;

use common::{pattern, stderr, Cluster};

#[test]
fn a_full_swarm_refuses_the_put_clearly_and_loses_nothing() {
    let c = Cluster::start_with_capacity(2, "300K");
    let small = c.path("small");
    std::fs::write(&small, pattern(100_000, 6)).unwrap();
    c.ok(&["put", small.to_str().unwrap(), "/small", "--chunk-size", "64K"]);
    let big = c.path("big");
    std::fs::write(&big, pattern(1 << 20, 5)).unwrap();
    let out = c.cli(&["put", big.to_str().unwrap(), "/big", "--chunk-size", "64K"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.lines().last().unwrap().starts_with("error: "), "{err}");
    assert!(err.lines().last().unwrap().contains("store is full"), "{err}");
    assert_eq!(c.cli(&["stat", "/big"]).status.code(), Some(3), "nothing visible after a failed put");
    let back = c.path("back");
    c.ok(&["get", "/small", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), pattern(100_000, 6), "what was stored before is intact");
}

#[test]
fn a_restarted_peer_keeps_its_chunks_and_announces_them() {
    let mut c = Cluster::start(2);
    let data = pattern(1_000_000, 8);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--chunk-size", "64K", "--replicas", "2"]);
    c.kill_peer(0);
    c.start_peer(0);
    c.wait_up(2);
    // Only the restarted peer is left: the file must come from what it kept on disk.
    c.kill_peer(1);
    common::wait_for("peer 1 down", std::time::Duration::from_secs(10), || (c.up_count() == 1).then_some(()));
    let back = c.path("back");
    c.ok(&["get", "/f", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let peers = c.peers_json().unwrap();
    let up = peers.iter().find(|p| p["state"] == "up").unwrap();
    assert_eq!(up["chunks"], 16, "heartbeat reports the chunks kept across the restart");
}

#[test]
fn least_used_placement_spreads_chunks_over_all_peers() {
    let c = Cluster::start(3);
    let local = c.path("f");
    std::fs::write(&local, pattern(30 * 4096, 9)).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--chunk-size", "4K", "--replicas", "1", "--placement", "least-used"]);
    let counts: Vec<usize> = (0..3).map(|i| c.chunk_files(i).len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 30);
    assert!(counts.iter().all(|&n| n == 10), "even spread: {counts:?}");
    // lowest-latency works too and reads back.
    c.ok(&["put", local.to_str().unwrap(), "/g", "--chunk-size", "4K", "--placement", "lowest-latency"]);
    let back = c.path("back");
    c.ok(&["get", "/g", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&local).unwrap());
}

#[test]
fn a_silent_peer_is_marked_down_after_the_timeout_and_back_up_when_it_speaks() {
    let mut c = Cluster::start(2);
    c.start_tracker_with(&["--peer-timeout", "1"]);
    c.wait_up(2);
    let pid = c.peer_pid(0).to_string();
    // SIGSTOP keeps the peer's connection open but silences its heartbeats.
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    common::wait_for("frozen peer marked down", std::time::Duration::from_secs(10), || {
        (c.up_count() == 1).then_some(())
    });
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    c.wait_up(2);
}

#[test]
fn chunks_no_file_uses_are_collected_and_shared_ones_kept() {
    let mut c = Cluster::start(2);
    c.start_tracker_with(&["--gc-delay", "0.3"]);
    c.wait_up(2);
    let shared = pattern(200_000, 21);
    let only_b = pattern(300_000, 22);
    let (a, b) = (c.path("a"), c.path("b"));
    std::fs::write(&a, &shared).unwrap();
    std::fs::write(&b, &only_b).unwrap();
    let put = |local: &std::path::Path, remote: &str| {
        c.ok(&["put", local.to_str().unwrap(), remote, "--chunk-size", "64K", "--replicas", "2"]);
    };
    put(&a, "/a");
    put(&a, "/a-copy"); // same content: the same chunks, referenced twice
    put(&b, "/b");
    let count = |c: &Cluster| c.chunk_files(0).len() + c.chunk_files(1).len();
    assert_eq!(count(&c), 2 * (4 + 5));
    c.ok(&["rm", "/a"]);
    c.ok(&["rm", "/b"]);
    // b's five chunks go from both peers; a's four stay, /a-copy still uses them.
    common::wait_for("b's chunks collected", std::time::Duration::from_secs(20), || (count(&c) == 2 * 4).then_some(()));
    let back = c.path("back");
    c.ok(&["get", "/a-copy", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), shared);
    // Overwriting a file releases the old version's chunks.
    c.ok(&["put", b.to_str().unwrap(), "/a-copy", "--chunk-size", "64K", "--replicas", "2"]);
    common::wait_for("old version collected", std::time::Duration::from_secs(20), || {
        (count(&c) == 2 * 5).then_some(())
    });
    let peers = c.peers_json().unwrap();
    assert!(peers.iter().all(|p| p["state"] == "up"));
}

#[test]
fn a_peer_makes_spare_files_once_puts_pause_and_later_puts_write_into_them() {
    let c = Cluster::start(1);
    let spares = || {
        std::fs::read_dir(c.peer_home(0).join("store").join("tmp"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().starts_with("spare."))
            .count()
    };
    let first = c.path("first");
    std::fs::write(&first, pattern(5 * 65_536, 31)).unwrap();
    c.ok(&["put", first.to_str().unwrap(), "/first", "--chunk-size", "64K", "--replicas", "1"]);
    // As many as the recent puts wanted, made once they paused.
    common::wait_for("spares made", std::time::Duration::from_secs(10), || (spares() == 5).then_some(()));
    let second = c.path("second");
    std::fs::write(&second, pattern(3 * 65_536, 32)).unwrap();
    c.ok(&["put", second.to_str().unwrap(), "/second", "--chunk-size", "64K", "--replicas", "1"]);
    assert_eq!(c.chunk_files(0).len(), 8);
    for (remote, data) in [("/first", pattern(5 * 65_536, 31)), ("/second", pattern(3 * 65_536, 32))] {
        let back = c.path("back");
        c.ok(&["get", remote, back.to_str().unwrap()]);
        assert_eq!(std::fs::read(&back).unwrap(), data, "{remote} reads back");
    }
}
