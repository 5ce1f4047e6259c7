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

/// A new member of `c`'s swarm, registered by the tracker's home; returns its home.
fn add_member(c: &Cluster, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let mut args = vec!["member", "add", name, "--data-key-from"];
    let from = c.client_home().display().to_string();
    args.push(&from);
    args.extend_from_slice(extra);
    let out = run(&c.path("tracker"), &args);
    assert!(out.status.success(), "member add: {}", stderr(&out));
    let home = c.path(name);
    let token = String::from_utf8(out.stdout).unwrap();
    let out = run(&home, &["join", token.trim()]);
    assert!(out.status.success(), "{}", stderr(&out));
    home
}

fn listing(c: &Cluster) -> String {
    c.ok(&["ls", "/", "--json"])
}

#[test]
fn a_peer_token_may_store_chunks_and_nothing_else() {
    let c = Cluster::start(1);
    let local = c.path("f");
    std::fs::write(&local, common::pattern(10_000, 1)).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/secret.txt", "--replicas", "1"]);
    c.ok(&["mkdir", "/d"]);
    let before = listing(&c);
    let home = c.path("peer-only");
    assert!(run(&home, &["join", &c.peer_token]).status.success());
    let l = local.to_str().unwrap();
    let mp = c.path("peer-mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let m = mp.to_str().unwrap();
    for args in [
        vec!["ls", "/"],
        vec!["stat", "/secret.txt"],
        vec!["search", "secret"],
        vec!["put", l, "/x", "--replicas", "1"],
        vec!["rm", "/secret.txt"],
        vec!["mv", "/secret.txt", "/stolen"],
        vec!["mkdir", "/pwned"],
        vec!["get", "/secret.txt", "/tmp/never-written-by-swarmfs"],
        vec!["mount", m],
    ] {
        let out = run(&home, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.lines().count() == 1, "{args:?}: one line: {err}");
    }
    let out = run(&home, &["rm", "/secret.txt"]);
    assert!(
        stderr(&out).contains("this token can only store chunks; a member token is needed to remove files"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(&c), before, "the namespace is unchanged");
    let back = c.path("back");
    c.ok(&["get", "/secret.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), common::pattern(10_000, 1));
}

#[test]
fn a_read_only_member_reads_and_cannot_write() {
    let c = Cluster::start(1);
    let local = c.path("f");
    std::fs::write(&local, common::pattern(70_000, 2)).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/doc", "--replicas", "1"]);
    let reader = add_member(&c, "auditor", &["--read-only"]);
    let before = listing(&c);
    for args in [vec!["ls", "/"], vec!["stat", "/doc"], vec!["search", "doc"], vec!["cat", "/doc", "--length", "10"]] {
        let out = run(&reader, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    let back = c.path("back");
    assert!(run(&reader, &["get", "/doc", back.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&back).unwrap(), common::pattern(70_000, 2));
    let l = local.to_str().unwrap();
    for args in [
        vec!["put", l, "/new", "--replicas", "1"],
        vec!["rm", "/doc"],
        vec!["mv", "/doc", "/moved"],
        vec!["mkdir", "/d"],
    ] {
        let out = run(&reader, &args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("read-only"), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(listing(&c), before, "the namespace is unchanged");
    // Its mount is read-only: reads work, writes fail with EROFS.
    let m = common::Mount::start(&c, &reader, "ro-mnt", &[]);
    assert_eq!(std::fs::read(m.dir.join("doc")).unwrap(), common::pattern(70_000, 2));
    let err = std::fs::write(m.dir.join("new"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::remove_file(m.dir.join("doc")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn a_revoked_member_is_cut_off_and_others_are_not() {
    use std::io::Read;
    let c = Cluster::start(2);
    let big = common::pattern(64 << 20, 3);
    let local = c.path("big");
    std::fs::write(&local, &big).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/big"]);
    let bob = add_member(&c, "bob", &[]);
    let m = common::Mount::start(&c, &bob, "bob-mnt", &[]);
    assert_eq!(std::fs::read(m.dir.join("big")).unwrap().len(), big.len(), "bob's mount works");
    // A read under way: bob's `cat`, held up by a reader that has not read yet.
    let mut cat = std::process::Command::new(common::BIN)
        .args(["cat", "/big", "--home"])
        .arg(&bob)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = cat.stdout.take().unwrap();
    let mut first = [0u8; 4096];
    out.read_exact(&mut first).unwrap();
    let revoked = run(&c.path("tracker"), &["member", "revoke", "bob"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let status = cat.wait().unwrap();
    let mut err = String::new();
    cat.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(5), "the running cat fails: {err}");
    assert!(err.contains("revoked"), "{err}");
    assert!(4096 + rest.len() < big.len(), "it did not get the whole file");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "within moments: {:?}", started.elapsed());
    // The mount: the next open fails, and says why in its log.
    common::wait_for("bob's mount to be refused", std::time::Duration::from_secs(5), || {
        std::fs::read(m.dir.join("big")).is_err().then_some(())
    });
    assert!(c.log("bob-mnt").contains("revoked"), "{}", c.log("bob-mnt"));
    // New connections with the token are refused; other members carry on.
    let out = run(&bob, &["ls", "/"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("member \"bob\" was revoked"), "{}", stderr(&out));
    c.ok(&["ls", "/"]);
    let members: serde_json::Value =
        serde_json::from_slice(&run(&c.path("tracker"), &["member", "ls", "--json"]).stdout).unwrap();
    let bob_row = members.as_array().unwrap().iter().find(|m| m["name"] == "bob").unwrap();
    assert_eq!(bob_row["revoked"], true);
}

#[test]
fn only_the_tracker_may_delete_chunks_on_a_peer() {
    let c = Cluster::start(1);
    let data = common::pattern(200_000, 4);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--replicas", "1", "--chunk-size", "64K"]);
    let chunks: Vec<swarmfs_proto::ChunkId> =
        c.chunk_files(0).iter().map(|p| p.file_name().unwrap().to_str().unwrap().parse().unwrap()).collect();
    assert_eq!(chunks.len(), 4);
    let peer = &c.peers_json().unwrap()[0];
    let peer_id: swarmfs_proto::NodeId = peer["node_id"].as_str().unwrap().parse().unwrap();
    let addr = common::peer_addr(&c, 0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A node with the swarm secret and a member's credential, but not the tracker's key.
        let home = c.client_home();
        let swarm = swarmfs_net::Swarm {
            identity: swarmfs_net::Identity::load_or_create(&home.join("identity.key")).unwrap(),
            secret: common::home_secret(&home),
            member: None,
        };
        let (conn, _) = swarmfs_net::dial(&swarm, &addr, peer_id, swarmfs_proto::Role::Client).await.unwrap();
        for req in [
            swarmfs_proto::Request::DeleteChunks { chunks: chunks.clone() },
            swarmfs_proto::Request::CollectChunks { chunks: chunks.clone(), idle_ms: 0 },
        ] {
            let (resp, _) = conn.call(&req, bytes::Bytes::new()).await.unwrap();
            match resp {
                swarmfs_proto::Response::Error { code: swarmfs_proto::ErrorCode::Forbidden, message } => {
                    assert!(message.contains("only the swarm's tracker"), "{message}")
                }
                other => panic!("{} was not refused: {other:?}", req.name()),
            }
        }
    });
    assert_eq!(c.chunk_files(0).len(), 4, "every chunk is still there");
    let back = c.path("back");
    c.ok(&["get", "/f", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), data);
}
