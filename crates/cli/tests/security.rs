//! Membership, keys and what storage nodes can see.

mod common;

use common::{run, stderr, walk, Cluster};

#[test]
fn another_swarms_token_is_refused() {
    let c = Cluster::start(1);
    // Same tracker address and identity, another swarm secret: a forged or stale token.
    let mut forged = swarmfs_core::Token::decode(&c.member_token).unwrap();
    forged.swarm_secret = swarmfs_core::SwarmSecret([42; 32]);
    let home = c.path("intruder");
    assert!(run(&home, &["join", &forged.encode()]).status.success());
    let out = run(&home, &["ls"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("not a member of this swarm"), "{err}");
    assert!(!err.to_lowercase().contains("alert") && err.lines().count() == 1, "no TLS dump: {err}");

    // A real second swarm's token pointed at this tracker's address: the pin does not match.
    let other = c.path("other-tracker");
    let out = run(&other, &["init", "--tracker-addr", &c.tracker_addr, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let home = c.path("other-client");
    assert!(run(&home, &["join", v["member_token"].as_str().unwrap()]).status.success());
    let out = run(&home, &["ls"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("another swarm"), "{}", stderr(&out));

    // A peer of another swarm cannot join this one: the tracker never lists it.
    let mut forged_peer = forged.to_peer();
    forged_peer.swarm_secret = swarmfs_core::SwarmSecret([43; 32]);
    let ph = c.path("intruder-peer");
    assert!(run(&ph, &["join", &forged_peer.encode()]).status.success());
    let mut p = std::process::Command::new(common::BIN)
        .args(["peer", "--listen", "127.0.0.1:0", "--home"])
        .arg(&ph)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = common::wait_for("the intruder's refusal", std::time::Duration::from_secs(10), || {
        let t = c.log("tracker");
        t.contains("wrong swarm proof").then_some(t)
    });
    assert!(log.contains("wrong swarm proof"));
    assert_eq!(c.peers_json().unwrap().len(), 1, "the intruder is not a member");
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn a_peer_token_cannot_read_files() {
    let c = Cluster::start(1);
    let local = c.path("f");
    std::fs::write(&local, b"secret").unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--replicas", "1"]);
    let home = c.path("peer-only");
    assert!(run(&home, &["join", &c.peer_token]).status.success());
    let out = run(&home, &["cat", "/f"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("peer token"), "{}", stderr(&out));
}

#[test]
fn no_plaintext_reaches_peers_or_tracker_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(2);
    let marker = b"SWARMFS-KNOWN-PLAINTEXT-MARKER-7f3a";
    let mut data = Vec::new();
    for i in 0..5000 {
        data.extend_from_slice(marker);
        data.extend_from_slice(format!("{i:08}").as_bytes());
    }
    let local = c.path("plain.txt");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/plain.txt", "--chunk-size", "4K"]);
    let mut files = Vec::new();
    for dir in [c.peer_home(0), c.peer_home(1), c.path("tracker")] {
        walk(&dir, &mut files);
    }
    assert!(files.len() > 10);
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.windows(marker.len()).any(|w| w == marker), "plaintext marker found in {}", f.display());
    }
    let tracker_swarm = std::fs::read_to_string(c.path("tracker").join("swarm.json")).unwrap();
    assert!(!tracker_swarm.contains("data_key"), "the tracker's home holds no data key");
    for home in [c.client_home(), c.peer_home(0), c.path("tracker")] {
        for name in ["identity.key", "swarm.json"] {
            let mode = std::fs::metadata(home.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}/{name}", home.display());
        }
    }
}
