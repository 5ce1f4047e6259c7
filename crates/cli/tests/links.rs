//! Links: a read capability for one file, usable on a machine with no token, refused for
//! everything else, and refused altogether once revoked.

mod common;

use std::sync::Arc;

use common::{run, stderr, Cluster};
use swarmfs_client::{Client, ClientError};
use swarmfs_core::Link;
use swarmfs_proto::{ChunkId, ErrorCode, Request, Response, Role};

/// `swarmfs get LINK OUT` with a home that does not exist: no token anywhere.
fn get_with_link(c: &Cluster, link: &str, out: &std::path::Path) -> std::process::Output {
    run(&c.path("no-home-here"), &["get", link, out.to_str().unwrap(), "-q"])
}

fn refused(r: Result<Response, ClientError>) -> String {
    match r {
        Err(ClientError::Remote { code: ErrorCode::Forbidden, message }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_link_fetches_its_file_and_nothing_else() {
    let c = Cluster::start(2);
    let data = c.put_pattern("f.bin", "/private/f.bin", 700_000, 21, &["--chunk-size", "64K"]);
    // Past 4 KiB, so that it has chunks on the peers (a smaller file has none).
    std::fs::write(c.path("other"), b"not for link holders ".repeat(300)).unwrap();
    c.ok(&["put", c.path("other").to_str().unwrap(), "/other.txt"]);
    let link = c.ok(&["link", "/private/f.bin"]).trim().to_string();
    assert!(link.starts_with("swarmfs-link-") && !link.contains(' '), "one pasteable word: {link}");

    let out = c.path("got.bin");
    let o = get_with_link(&c, &link, &out);
    assert!(o.status.success(), "get LINK: {}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == data, "the link's file reads back byte-exact");
    assert!(!c.path("no-home-here").exists(), "a link's holder needs no home");
    // Into a directory: under the file's own name.
    let dir = c.path("downloads");
    std::fs::create_dir(&dir).unwrap();
    assert!(get_with_link(&c, &link, &dir).status.success());
    assert!(std::fs::read(dir.join("f.bin")).unwrap() == data);

    // Everything else, asked with the link's credential directly.
    let l = Link::decode(&link).unwrap();
    let other_chunks: Vec<ChunkId> = {
        let all: Vec<ChunkId> = c
            .chunk_files(0)
            .iter()
            .chain(c.chunk_files(1).iter())
            .map(|p| p.file_name().unwrap().to_str().unwrap().parse().unwrap())
            .collect();
        all
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let swarm = Arc::new(swarmfs_net::Swarm {
            identity: swarmfs_net::Identity::generate().unwrap(),
            secret: swarmfs_net::Secret::Link { id: l.id, secret: l.secret },
            member: None,
        });
        let client =
            Client::connect(swarm.clone(), std::slice::from_ref(&l.tracker_addr), l.tracker_id, None).await.unwrap();
        let (entry, manifest) = client.open_link(&l).await.unwrap();
        assert_eq!(entry.path, "/f.bin", "the link shows the file's name, not its directories");
        let own: Vec<ChunkId> = manifest.chunks.iter().map(|r| r.id).collect();
        let foreign: Vec<ChunkId> = other_chunks.into_iter().filter(|c| !own.contains(c)).collect();
        assert!(!foreign.is_empty(), "the other file's chunks are on the peers");
        assert!(matches!(client.call(&Request::Locate { chunks: own.clone() }).await, Ok(Response::Locations { .. })));

        for req in [
            Request::List { path: "/".into() },
            Request::Stat { path: "/other.txt".into() },
            Request::OpenFile { path: "/other.txt".into() },
            Request::OpenFile { path: "/private/f.bin".into() },
            Request::Search { text: "other".into() },
            Request::ListPeers,
            Request::Mkdir { path: "/x".into(), parents: false },
            Request::Remove { path: "/other.txt".into(), recursive: false },
            Request::LinkCreate { path: "/other.txt".into(), file_id: l.file_id },
            Request::LinkList,
            Request::Health,
            Request::Join { addrs: vec!["127.0.0.1:1".into()], capacity: 1 << 30 },
        ] {
            let name = req.name();
            let msg = refused(client.call(&req).await);
            assert!(msg.contains("a link reads one file and nothing else"), "{name}: {msg}");
        }
        // Another file's chunks, by id: refused, alone or mixed with its own.
        let msg = refused(client.call(&Request::Locate { chunks: vec![foreign[0]] }).await);
        assert!(msg.contains("not its file's"), "{msg}");
        let mixed = vec![own[0], foreign[0]];
        refused(client.call(&Request::Locate { chunks: mixed }).await);

        // At a peer: reading its own chunks by id works; storing does not.
        let peers = match client.call(&Request::Locate { chunks: vec![own[0]] }).await.unwrap() {
            Response::Locations { peers, .. } => peers,
            other => panic!("{other:?}"),
        };
        let p = &peers[0];
        let (conn, _) = swarmfs_net::dial(&swarm, &p.addrs[0], p.node, Role::Client).await.unwrap();
        let get = Request::GetChunk { chunk: own[0], offset: 0, len: u64::MAX };
        assert!(matches!(conn.call(&get, bytes::Bytes::new()).await.unwrap().0, Response::Chunk));
        let put = Request::PutChunk { chunk: ChunkId(*blake3::hash(b"x").as_bytes()) };
        match conn.call(&put, bytes::Bytes::from_static(b"x")).await.unwrap().0 {
            Response::Error { code: ErrorCode::Forbidden, message } => {
                assert!(message.contains("a link reads one file and nothing else"), "{message}")
            }
            other => panic!("a link stored a chunk: {other:?}"),
        }
    });
    assert_eq!(c.ok(&["cat", "/other.txt"]), "not for link holders ".repeat(300), "the member still reads everything");
}

#[test]
fn a_revoked_link_is_refused_and_stays_refused_after_a_tracker_restart() {
    let mut c = Cluster::start(1);
    std::fs::write(c.path("a"), b"version one").unwrap();
    c.ok(&["put", c.path("a").to_str().unwrap(), "/a.txt", "--replicas", "1"]);
    let first = c.ok(&["link", "/a.txt"]).trim().to_string();
    let second = c.ok(&["link", "/a.txt", "--json"]);
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    let second = second["link"].as_str().unwrap().to_string();
    let out = c.path("out");
    assert!(get_with_link(&c, &first, &out).status.success());

    let id = Link::decode(&first).unwrap().id.to_string();
    c.ok(&["link", "--revoke", &id[..8]]);
    let o = get_with_link(&c, &first, &out);
    assert_eq!(o.status.code(), Some(5), "a revoked link: {}", stderr(&o));
    assert!(stderr(&o).contains("revoked"), "{}", stderr(&o));
    let o = get_with_link(&c, &second, &out);
    assert!(o.status.success(), "another link to the same file still works: {}", stderr(&o));

    let list: serde_json::Value = serde_json::from_str(&c.ok(&["link", "--list", "--json"])).unwrap();
    let revoked: Vec<bool> = list.as_array().unwrap().iter().map(|l| l["revoked"].as_bool().unwrap()).collect();
    assert_eq!(revoked, [true, false]);

    c.kill_tracker();
    c.start_tracker();
    c.wait_up(1);
    assert_eq!(get_with_link(&c, &first, &out).status.code(), Some(5), "revocation is kept by the tracker");
    assert!(get_with_link(&c, &second, &out).status.success());

    // A link names one version: after an overwrite it says so, and a new link reads the new one.
    std::fs::write(c.path("a"), b"version two").unwrap();
    c.ok(&["put", c.path("a").to_str().unwrap(), "/a.txt", "--replicas", "1"]);
    let o = get_with_link(&c, &second, &out);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("replaced"), "{}", stderr(&o));
    let third = c.ok(&["link", "/a.txt"]).trim().to_string();
    assert!(get_with_link(&c, &third, &out).status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"version two");

    // Damaged or mistyped links are bad usage, not a crash or a hang.
    let o = get_with_link(&c, &third[..third.len() - 20], &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Who may make and revoke links: not a read-only member.
    let token = run(
        &c.path("tracker"),
        &["member", "add", "ro", "--read-only", "--data-key-from", c.client_home().to_str().unwrap()],
    );
    assert!(token.status.success(), "{}", stderr(&token));
    let ro = c.path("ro");
    assert!(run(&ro, &["join", String::from_utf8(token.stdout).unwrap().trim()]).status.success());
    let o = run(&ro, &["link", "/a.txt"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
}

#[test]
fn a_link_s_holder_seeds_to_members_and_to_holders_of_that_link_only() {
    let mut c = Cluster::start(1);
    let data = c.put_pattern("f", "/f", 1 << 20, 22, &["--chunk-size", "128K", "--replicas", "1"]);
    let link = c.ok(&["link", "/f"]).trim().to_string();
    let other_link = c.ok(&["link", "/f"]).trim().to_string();
    // A holder with no home fetches and keeps serving.
    let seeded = c.path("seeded");
    let log = std::fs::File::create(c.path("link-seeder.log")).unwrap();
    let mut seeder = std::process::Command::new(common::BIN)
        .args(["get", &link, seeded.to_str().unwrap(), "--seed", "--json", "--home"])
        .arg(c.path("no-home"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    c.kill_on_drop(seeder.id());
    c.wait_cached_sources("/f", 1, "every chunk offered by the link's holder");
    assert!(std::fs::read(&seeded).unwrap() == data);
    // The only durable copy goes away: what is left is the link holder's cached copy.
    c.kill_peer(0);
    let out = c.path("member-got");
    c.ok(&["get", "/f", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data, "a member reads from the link's holder");
    let out = c.path("holder-got");
    let o = get_with_link(&c, &link, &out);
    assert!(o.status.success(), "another holder of the same link: {}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == data);
    // A holder of another link to the same file cannot dial it (it admits its own link
    // only), so the tracker does not offer it: nothing is left to read from.
    let o = get_with_link(&c, &other_link, &c.path("other-got"));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    common::sh(&format!("kill -TERM {}", seeder.id()), c.dir.path());
    assert!(common::wait_for_exit(&mut seeder, std::time::Duration::from_secs(10)));
    let mut report = String::new();
    std::io::Read::read_to_string(seeder.stdout.as_mut().unwrap(), &mut report).unwrap();
    let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert!(v["served_bytes"].as_u64().unwrap() >= 2 * data.len() as u64, "{v}");
}
