//! Faults injected on purpose: killed peers and trackers, corrupt disks, garbage on the wire.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{home_secret, home_tracker_id, pattern, peer_addr, stderr, wait_for, Cluster, BIN};

#[test]
fn every_file_reads_back_after_a_peer_is_killed() {
    let mut c = Cluster::start(3);
    let mut files = Vec::new();
    for (i, size) in [1usize, 300_000, 2_000_001].into_iter().enumerate() {
        let data = pattern(size, i as u64);
        let local = c.path(&format!("in{i}"));
        std::fs::write(&local, &data).unwrap();
        c.ok(&["put", local.to_str().unwrap(), &format!("/f{i}"), "--chunk-size", "64K", "--replicas", "2"]);
        files.push(data);
    }
    c.kill_peer(1);
    for (i, data) in files.iter().enumerate() {
        let back = c.path(&format!("out{i}"));
        c.ok(&["get", &format!("/f{i}"), back.to_str().unwrap()]);
        assert_eq!(&std::fs::read(&back).unwrap(), data, "file {i} after peer 1 died");
    }
    wait_for("the dead peer shown down", Duration::from_secs(10), || (c.up_count() == 2).then_some(()));
}

#[test]
fn killing_a_peer_during_a_put_completes_on_the_others_or_leaves_nothing() {
    let mut c = Cluster::start(3);
    let data = pattern(48 << 20, 7);
    let local = c.path("big");
    std::fs::write(&local, &data).unwrap();
    let put = Command::new(BIN)
        .args(["put", local.to_str().unwrap(), "/big", "--chunk-size", "256K", "--replicas", "2", "--window", "2"])
        .arg("--home")
        .arg(c.client_home())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill peer 0 once the upload is visibly under way on it.
    wait_for("upload under way", Duration::from_secs(30), || (c.chunk_files(0).len() >= 4).then_some(()));
    c.kill_peer(0);
    let out = put.wait_with_output().unwrap();
    if out.status.success() {
        let back = c.path("back");
        c.ok(&["get", "/big", back.to_str().unwrap()]);
        assert!(std::fs::read(&back).unwrap() == data, "completed put reads back byte-exact");
    } else {
        assert_eq!(c.cli(&["stat", "/big"]).status.code(), Some(3), "failed put is not visible: {}", stderr(&out));
    }
}

#[test]
fn tracker_kill_9_and_restart_keeps_namespace_and_locations() {
    let mut c = Cluster::start(2);
    let data = pattern(700_000, 3);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["mkdir", "/kept"]);
    c.ok(&["put", local.to_str().unwrap(), "/kept/f", "--chunk-size", "64K"]);
    c.kill_tracker();
    c.start_tracker();
    // Peers reconnect by themselves. (On PostgreSQL the new tracker counts them up from the
    // first's shared rows until that one's lease lapses, so `wait_up` alone proves nothing.)
    for i in 0..2 {
        wait_for(&format!("peer {i} to rejoin on its own"), Duration::from_secs(30), || {
            (c.log(&format!("peer{i}")).matches("joined the swarm").count() >= 2).then_some(())
        });
    }
    c.wait_up(2);
    let ls = c.ok(&["ls", "/kept"]);
    assert!(ls.contains('f'), "{ls}");
    let back = c.path("back");
    c.ok(&["get", "/kept/f", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

#[test]
fn corrupt_chunk_on_one_peer_is_reported_and_read_from_the_other() {
    let c = Cluster::start(2);
    let data = pattern(400_000, 11);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--chunk-size", "64K", "--replicas", "2"]);
    let files = c.chunk_files(0);
    assert_eq!(files.len(), 7, "every chunk has a replica on each of the two peers");
    for f in &files {
        let mut bytes = std::fs::read(f).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(f, bytes).unwrap();
    }
    // Whichever holder each chunk is asked of first, the result is right.
    for round in 0..2 {
        let back = c.path(&format!("back{round}"));
        let out = c.cli(&["get", "/f", back.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read(&back).unwrap(), data);
        if round == 0 {
            assert!(stderr(&out).contains("bad copy"), "the bad copy is reported: {}", stderr(&out));
        }
    }
    // The peer quarantined what it found corrupt.
    let quarantined = std::fs::read_dir(c.peer_home(0).join("store").join("quarantine")).unwrap().count();
    assert!(quarantined >= 1);
}

#[test]
fn garbage_and_oversized_frames_close_that_connection_only() {
    let c = Cluster::start(1);
    let local = c.path("f");
    std::fs::write(&local, pattern(10_000, 1)).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--replicas", "1"]);
    let targets = [c.tracker_addr.clone(), peer_addr(&c, 0)];
    for addr in &targets {
        for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0xff; 4096][..], &[0x16, 0x03, 0x01, 0xff, 0xff][..]]
        {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let _ = s.write_all(junk);
            let mut buf = [0u8; 256];
            // The daemon answers with at most a TLS alert, then closes.
            let mut total = 0;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
                assert!(total < 4096, "daemon keeps talking to garbage");
            }
        }
    }
    // Oversized and malformed frames after a valid handshake, from a real member.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let home = c.client_home();
        let swarm = swarmfs_net::Swarm {
            identity: swarmfs_net::Identity::load_or_create(&home.join("identity.key")).unwrap(),
            secret: home_secret(&home),
            member: None,
        };
        let tracker_id = home_tracker_id(&home);
        for frame in [u32::MAX.to_be_bytes().to_vec(), vec![0, 0, 0, 14, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xee]] {
            let mut s = swarmfs_net::rpc::dial_raw(&swarm, &c.tracker_addr, tracker_id).await.unwrap();
            s.write_all(&frame).await.unwrap();
            s.flush().await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await.unwrap().unwrap_or(0);
            assert_eq!(n, 0, "tracker closes a connection that sent a bad frame");
        }
    });
    // Both daemons still serve.
    let back = c.path("back");
    c.ok(&["get", "/f", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), pattern(10_000, 1));
}

#[test]
fn a_frozen_holder_does_not_stall_a_read() {
    let c = Cluster::start(2);
    let data = pattern(16 * 65536, 31);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--chunk-size", "64K", "--replicas", "2"]);
    // SIGSTOP: the peer's sockets stay open but nothing answers — worse than a crash, which
    // refuses connections at once.
    let pid = common::peer_pid_of(&c, 0);
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let started = std::time::Instant::now();
    let back = c.path("back");
    let out = c.cli(&["get", "/f", back.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // Each chunk request times out after 20 s; asking the other holder after 1.5 s is what
    // keeps this well under that.
    assert!(took < Duration::from_secs(10), "get took {took:?} with one holder frozen");
}
