//! BitTorrent-style sharing: downloads fetch the rarest chunks first, downloaders serve what
//! they fetched as cached sources, and cached sources never count as replicas. Real
//! processes throughout.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{pattern, stderr, wait_for, Cluster, BIN};

fn stat_json(c: &Cluster, path: &str) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["stat", path, "--json"])).unwrap()
}

#[test]
fn a_download_starts_with_the_chunks_fewest_sources_hold() {
    let c = Cluster::start(3);
    // 16 chunks with one copy each; the first 4 also belong to a file stored three times
    // (same content at the same offsets: the same chunks).
    let data = pattern(16 * 16384, 7);
    let (a, b) = (c.path("a"), c.path("b"));
    std::fs::write(&a, &data).unwrap();
    std::fs::write(&b, &data[..4 * 16384]).unwrap();
    c.ok(&["put", a.to_str().unwrap(), "/a", "--chunk-size", "16K", "--replicas", "1"]);
    c.ok(&["put", b.to_str().unwrap(), "/b", "--chunk-size", "16K", "--replicas", "3"]);
    let st = stat_json(&c, "/a");
    let live: Vec<u64> = st["chunk_holders"].as_array().unwrap().iter().map(|h| h["live"].as_u64().unwrap()).collect();
    assert_eq!(&live[..4], [3, 3, 3, 3], "{live:?}");
    let out = c.path("out");
    let report: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "/a", out.to_str().unwrap(), "--json"])).unwrap();
    assert!(std::fs::read(&out).unwrap() == data, "byte-exact");
    let order: Vec<u64> = report["fetch_order"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(order.len(), 16);
    assert!(order[..12].iter().all(|&i| i >= 4), "the 12 rare chunks go first: {order:?}");
    assert!(order[..12].windows(2).any(|w| w[1] != w[0] + 1), "random among equals, not file order: {order:?}");
}

fn seeding_get(c: &Cluster, home: &std::path::Path, remote: &str, out: &std::path::Path) -> Child {
    let log =
        std::fs::File::create(c.path(&format!("{}.seed.log", home.file_name().unwrap().to_str().unwrap()))).unwrap();
    Command::new(BIN)
        .args(["get", remote, out.to_str().unwrap(), "--seed", "--json", "--home"])
        .arg(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .inspect(|child| c.kill_on_drop(child.id()))
        .unwrap()
}

#[test]
fn a_downloader_serves_what_it_fetched_even_with_the_only_replica_gone_and_is_forgotten_when_it_leaves() {
    let mut c = Cluster::start(1);
    let data = c.put_pattern("f", "/f", 3 << 20, 8, &["--chunk-size", "256K", "--replicas", "1"]);
    let seeder_home = common::member_home(&c, "seeder");
    let seeded = c.path("seeded");
    let mut seeder = seeding_get(&c, &seeder_home, "/f", &seeded);
    // Every chunk shows the downloader as a cached source, next to its one durable copy.
    c.wait_cached_sources("/f", 1, "every chunk offered by the downloader");
    assert!(std::fs::read(&seeded).unwrap() == data);
    // The chunk map: the peer's durable copies and the downloader's cached ones, apart.
    let map: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "--chunks", "/f", "--json"])).unwrap();
    let sources = map["sources"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> =
        sources.iter().map(|s| (s["kind"].as_str().unwrap(), s["have"].as_str().unwrap())).collect();
    assert_eq!(kinds, [("durable", "111111111111"), ("cached", "111111111111")], "{map}");
    // The only durable copy goes away: health says lost (a cached copy is no replica) ...
    c.kill_peer(0);
    wait_for("the peer seen down", Duration::from_secs(20), || {
        let h = c.health()?;
        (h["chunks"]["lost"].as_u64()? == 12).then_some(())
    });
    // ... yet a download still completes, from the downloader that serves it.
    let out = c.path("second");
    c.ok(&["get", "/f", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data, "byte-exact from the cached source");
    // The seeder stops: it reports what it served, and the tracker forgets it.
    common::sh(&format!("kill -TERM {}", seeder.id()), c.dir.path());
    assert!(common::wait_for_exit(&mut seeder, Duration::from_secs(10)), "the seeder stops on SIGTERM");
    let mut stdout = String::new();
    std::io::Read::read_to_string(seeder.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"));
    assert!(v["served_bytes"].as_u64().unwrap() >= data.len() as u64, "{v}");
    let st = stat_json(&c, "/f");
    assert!(st["chunk_holders"].as_array().unwrap().iter().all(|h| h["cached"].as_array().unwrap().is_empty()), "{st}");
    let again = c.cli(&["get", "/f", c.path("third").to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(4), "no source left: {}", stderr(&again));
    assert!(!seeder_home.join("serving").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false), "store removed");
}

#[test]
fn a_slow_source_does_not_hold_the_tail_of_a_download() {
    let c = Cluster::start(1);
    // Stored once on the (fast) peer; the same file shared from a disk at 16 KiB/s: the
    // same chunks, so the sharer is a second, very slow source of every one of them.
    let data = c.put_pattern("f.bin", "/stored.bin", 8 * 65536, 12, &["--chunk-size", "64K", "--replicas", "1"]);
    let sharer = spawn_share(&c, &c.path("f.bin"), "/shared.bin", &["--chunk-size", "64K", "--upload-rate", "16K"]);
    wait_shared(&c, "/stored.bin");
    let out = c.path("out");
    // A first download uses up the sharer's allowance (its first chunk goes at once, each
    // next one 4 s after the one before); the second is the one measured.
    c.ok(&["get", "/stored.bin", out.to_str().unwrap()]);
    let started = std::time::Instant::now();
    let report: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "/stored.bin", out.to_str().unwrap(), "--json"])).unwrap();
    let took = started.elapsed();
    eprintln!("end-game: {report} in {took:?}");
    assert!(std::fs::read(&out).unwrap() == data, "byte-exact");
    // The download asks the idle sharer for a chunk (each chunk's first request goes to its
    // least busy source); at 16 KiB/s that chunk takes seconds. Once nothing is left to start
    // and it has been in flight a few times longer than the others took, the end-game asks
    // the peer for it too, and the peer answers first (not after the 1.5 s hedge).
    let (requests, wins) = (report["endgame_requests"].as_u64().unwrap(), report["endgame_wins"].as_u64().unwrap());
    assert!(requests >= 1 && wins >= 1, "the tail was duplicated and the duplicate won: {report}");
    assert!(took < Duration::from_millis(1500), "the slow source held the download for {took:?}: {report}");
    stop_reporting(&c, sharer);
}

#[test]
fn what_a_mount_reads_it_serves_to_others_while_mounted() {
    let mut c = Cluster::start(1);
    let data = c.put_pattern("f", "/f", 1 << 20, 13, &["--chunk-size", "128K", "--replicas", "1"]);
    let home = common::member_home(&c, "reader");
    let mut mount = common::Mount::start(&c, &home, "mnt", &["--serve"]);
    assert!(std::fs::read(mount.dir.join("f")).unwrap() == data, "read through the mount");
    c.wait_cached_sources("/f", 1, "every chunk read through the mount offered");
    // The only durable copy goes: the mount's node still serves every chunk it read.
    c.kill_peer(0);
    let out = c.path("out");
    c.ok(&["get", "/f", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data, "byte-exact from the mount's node");
    mount.stop();
    let gone = c.cli(&["get", "/f", out.to_str().unwrap()]);
    assert_eq!(gone.status.code(), Some(4), "unmounted, it serves nothing: {}", stderr(&gone));
    assert!(c.log("mnt").contains("stopped serving"), "{}", c.log("mnt"));
}

fn spawn_share(c: &Cluster, local: &std::path::Path, remote: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(c.path("share.log")).unwrap();
    Command::new(BIN)
        .args(["share", local.to_str().unwrap(), remote, "--json", "--home"])
        .arg(c.client_home())
        .args(extra)
        .env("SWARMFS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .inspect(|child| c.kill_on_drop(child.id()))
        .unwrap()
}

/// Stops a `share` or `get --seed` with SIGTERM and returns its `--json` report.
fn stop_reporting(c: &Cluster, mut child: Child) -> serde_json::Value {
    common::sh(&format!("kill -TERM {}", child.id()), c.dir.path());
    assert!(common::wait_for_exit(&mut child, Duration::from_secs(10)), "stops on SIGTERM");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

fn wait_shared(c: &Cluster, remote: &str) {
    wait_for("the shared file offered", Duration::from_secs(20), || {
        let out = c.cli(&["stat", remote, "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        st["chunk_holders"]
            .as_array()?
            .iter()
            .all(|h| h["cached"].as_array().is_some_and(|v| !v.is_empty()))
            .then_some(())
    });
}

#[test]
fn a_shared_file_is_read_from_the_sharers_disk_and_an_edit_there_is_refused_never_mixed() {
    let c = Cluster::start(1);
    let data = pattern(2 << 20, 9);
    let local = c.path("shared.bin");
    std::fs::write(&local, &data).unwrap();
    let sharer = spawn_share(&c, &local, "/pub/shared.bin", &["--chunk-size", "256K"]);
    wait_shared(&c, "/pub/shared.bin");
    // Nothing was uploaded: no durable copy, and health counts it as shared, not lost.
    assert!(c.chunk_files(0).is_empty(), "no chunk stored on the peer");
    let h = c.health().unwrap();
    assert_eq!((h["files"]["shared"].as_u64(), h["files"]["lost"].as_u64()), (Some(1), Some(0)), "{h}");
    let out = c.path("out");
    c.ok(&["get", "/pub/shared.bin", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data, "byte-exact from the sharer's disk");
    // The sharer edits the file in place: the changed chunk is refused, with the reason.
    let mut edited = data.clone();
    edited[300_000] ^= 1;
    std::fs::write(&local, &edited).unwrap();
    let out2 = c.path("out2");
    let bad = c.cli(&["get", "/pub/shared.bin", out2.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(4), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("changed on the sharer's disk"), "{}", stderr(&bad));
    assert!(!out2.exists(), "no file made of two versions");
    let v = stop_reporting(&c, sharer);
    assert!(v["served_bytes"].as_u64().unwrap() >= data.len() as u64, "{v}");
    // The sharer has left: its offers are gone.
    let gone = c.cli(&["get", "/pub/shared.bin", out2.to_str().unwrap()]);
    assert_eq!(gone.status.code(), Some(4), "{}", stderr(&gone));
}

#[test]
fn six_downloaders_at_once_get_most_of_a_shared_file_from_each_other() {
    let c = Cluster::start(1);
    let size = 64 << 20;
    let data = pattern(size, 10);
    let local = c.path("big.bin");
    std::fs::write(&local, &data).unwrap();
    // A home uplink: 32 MiB/s.
    let sharer = spawn_share(&c, &local, "/big.bin", &["--upload-rate", "32M"]);
    wait_shared(&c, "/big.bin");
    let downloaders: Vec<_> = (0..6)
        .map(|i| {
            let home = common::member_home(&c, &format!("d{i}"));
            let out = c.path(&format!("out{i}"));
            (seeding_get(&c, &home, "/big.bin", &out), out)
        })
        .collect();
    for (_, out) in &downloaders {
        wait_for("every download done", Duration::from_secs(120), || {
            std::fs::metadata(out).ok().filter(|m| m.len() == size as u64).map(|_| ())
        });
    }
    for (_, out) in &downloaders {
        assert!(std::fs::read(out).unwrap() == data, "{} byte-exact", out.display());
    }
    let shared = stop_reporting(&c, sharer)["served_bytes"].as_u64().unwrap();
    let mut from_downloaders = 0;
    for (child, _) in downloaders {
        from_downloaders += stop_reporting(&c, child)["served_bytes"].as_u64().unwrap();
    }
    eprintln!(
        "sharer uploaded {:.2}x the file; downloaders served {:.2}x to each other",
        shared as f64 / size as f64,
        from_downloaders as f64 / size as f64
    );
    assert!(shared <= 2 * size as u64, "the sharer uploaded {:.2}x the file size", shared as f64 / size as f64);
    assert!(shared + from_downloaders >= 6 * size as u64, "six copies were served in all");
}

#[test]
fn downloads_complete_after_the_sharer_dies_once_every_chunk_is_on_some_downloader() {
    let c = Cluster::start(1);
    let size = 16 << 20;
    let data = pattern(size, 11);
    let local = c.path("gone.bin");
    std::fs::write(&local, &data).unwrap();
    // A slow uplink, so the downloads are still running when the sharer dies.
    let mut sharer = spawn_share(&c, &local, "/gone.bin", &["--upload-rate", "4M", "--chunk-size", "256K"]);
    wait_shared(&c, "/gone.bin");
    let sharer_id = {
        let st: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "--chunks", "/gone.bin", "--json"])).unwrap();
        st["sources"][0]["node"].as_str().unwrap().to_string()
    };
    let downloaders: Vec<_> = (0..3)
        .map(|i| {
            let home = common::member_home(&c, &format!("g{i}"));
            let out = c.path(&format!("gone{i}"));
            (seeding_get(&c, &home, "/gone.bin", &out), out)
        })
        .collect();
    // Once the downloaders together hold every chunk, the sharer is killed (no goodbye).
    wait_for("every chunk on some downloader", Duration::from_secs(60), || {
        let out = c.cli(&["stat", "--chunks", "/gone.bin", "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let mut union = [false; 64];
        for s in st["sources"].as_array()?.iter().filter(|s| s["node"] != sharer_id.as_str()) {
            for (i, ch) in s["have"].as_str()?.chars().enumerate() {
                union[i] |= ch == '1';
            }
        }
        union.iter().all(|h| *h).then_some(())
    });
    sharer.kill().unwrap();
    sharer.wait().unwrap();
    for (_, out) in &downloaders {
        wait_for("every download done without the sharer", Duration::from_secs(60), || {
            std::fs::metadata(out).ok().filter(|m| m.len() == size as u64).map(|_| ())
        });
        assert!(std::fs::read(out).unwrap() == data, "{} byte-exact", out.display());
    }
    for (child, _) in downloaders {
        stop_reporting(&c, child);
    }
}
