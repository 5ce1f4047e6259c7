//! Upgrades: what earlier releases wrote (tests/fixtures/protocol2, protocol3, protocol4, protocol5, protocol6,
//! protocol7, protocol8,
//! and the previous release's PostgreSQL database, postgres-schema5.sql) opens with today's
//! binary, and every file reads back byte-exact.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{pattern, stderr, wait_for, BIN};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol2");
const FIXTURE_3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol3");
const FIXTURE_4: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol4");
const FIXTURE_5: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol5");
const FIXTURE_6: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol6");
const FIXTURE_7: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol7");
const FIXTURE_8: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/protocol8");
/// The protocol-5 fixture's swarm as the previous release (protocol 6, schema 5) kept it on
/// PostgreSQL: `pg_dump` of the database its tracker made adopting the fixture's tracker.db.
const PG_SCHEMA_5: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/postgres-schema5.sql");

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The fixture's homes in `dir`, with the tracker address in each swarm file moved to a free
/// port (the only edit: the fixture's port may be taken on this machine).
fn fixture_in(dir: &Path) -> String {
    copy_fixture(FIXTURE, &["tracker", "client", "peer0", "peer1"], "127.0.0.1:47311", dir)
}

fn copy_fixture(fixture: &str, homes: &[&str], old_addr: &str, dir: &Path) -> String {
    let addr = format!("127.0.0.1:{}", common::free_port());
    for home in homes {
        copy_dir(&Path::new(fixture).join(home), &dir.join(home));
        let swarm = dir.join(home).join("swarm.json");
        let text = std::fs::read_to_string(&swarm).unwrap().replace(old_addr, &addr);
        std::fs::write(&swarm, text).unwrap();
    }
    addr
}

struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(dir: &Path, name: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(BIN).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).arg("--home").arg(home).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn a_protocol_2_swarm_upgrades_in_place_and_every_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fixture_in(d);
    let home = |h: &str| -> PathBuf { d.join(h) };
    let s = |p: PathBuf| p.display().to_string();
    let mut daemons = Daemons(vec![spawn(d, "tracker", &["tracker", "--home", &s(home("tracker"))])]);
    for peer in ["peer0", "peer1"] {
        daemons.0.push(spawn(d, peer, &["peer", "--home", &s(home(peer)), "--listen", "127.0.0.1:0"]));
    }
    let client = home("client");
    // A protocol-2 member token carries no member credential: refused, with the way out,
    // rather than quietly given more (or fewer) rights than it had.
    let out = cli(&client, &["ls", "/"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("from before per-member credentials"), "{}", stderr(&out));
    let out = wait_for("the upgraded tracker to register a member", Duration::from_secs(30), || {
        let out = cli(&home("tracker"), &["member", "add", "alice", "--data-key-from", &s(client.clone())]);
        out.status.success().then_some(out)
    });
    let token = String::from_utf8(out.stdout).unwrap();
    let out = cli(&client, &["join", token.trim()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("both upgraded peers up", Duration::from_secs(30), || {
        let out = cli(&client, &["peers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.iter().filter(|p| p["state"] == "up").count() == 2).then_some(())
    });
    let expected: [(&str, Vec<u8>); 4] = [
        ("/a.txt", b"hello from protocol 2\n".to_vec()),
        ("/dir/b.bin", pattern(70000, 2)),
        ("/dir/sub/c.bin", pattern(9000, 3)),
        ("/same-as-c.bin", pattern(9000, 3)),
    ];
    for (remote, data) in &expected {
        let back = d.join("back");
        let out = cli(&client, &["get", remote, back.to_str().unwrap()]);
        assert!(out.status.success(), "get {remote}: {}", stderr(&out));
        assert!(std::fs::read(&back).unwrap() == *data, "{remote} reads back byte-exact after the upgrade");
    }
    let out = cli(&client, &["ls", "/", "--json"]);
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["/a.txt", "/dir", "/empty-dir", "/same-as-c.bin"]);
    // Every persisted format now says which version it is.
    for peer in ["peer0", "peer1"] {
        let format = std::fs::read_to_string(home(peer).join("store/FORMAT")).unwrap();
        assert_eq!(format, "swarmfs chunk store 1\n");
    }
    let out =
        Command::new("sqlite3").arg(home("tracker").join("tracker.db")).arg("PRAGMA user_version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8", "the schema version is recorded");
    // The upgraded swarm takes new files too.
    let local = d.join("new");
    std::fs::write(&local, pattern(5000, 4)).unwrap();
    let out = cli(&client, &["put", local.to_str().unwrap(), "/new"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&client, &["cat", "/new"]);
    assert_eq!(out.stdout, pattern(5000, 4));
}

#[test]
fn a_protocol_3_swarm_upgrades_in_place_and_every_file_gets_a_replica_count() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_fixture(FIXTURE_3, &["tracker", "client", "peer0", "peer1", "peer2"], "127.0.0.1:47313", d);
    let s = |h: &str| d.join(h).display().to_string();
    let mut daemons = Daemons(vec![spawn(d, "tracker", &["tracker", "--home", &s("tracker")])]);
    for peer in ["peer0", "peer1", "peer2"] {
        daemons.0.push(spawn(d, peer, &["peer", "--home", &s(peer), "--listen", "127.0.0.1:0"]));
    }
    let client = d.join("client");
    // A protocol-3 member token is still a member token: no new token needed.
    wait_for("the upgraded swarm to answer with three peers up", Duration::from_secs(30), || {
        let out = cli(&client, &["peers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.iter().filter(|p| p["state"] == "up").count() == 3).then_some(())
    });
    let replicas = |remote: &str| -> u64 {
        let out = cli(&client, &["stat", remote, "--json"]);
        assert!(out.status.success(), "stat {remote}: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["replicas"].as_u64().unwrap()
    };
    // R is what each file verifiably had: the fewest copies of any of its chunks. /three.bin
    // was put with R=3; /dir/b.bin (R=2) shares its chunks, so it has three copies too.
    assert_eq!(replicas("/a.txt"), 2);
    assert_eq!(replicas("/three.bin"), 3);
    assert_eq!(replicas("/dir/b.bin"), 3);
    assert!((1..=3).contains(&replicas("/dir/sub/c.bin")));
    let expected: [(&str, Vec<u8>); 5] = [
        ("/a.txt", b"hello from protocol 3\n".to_vec()),
        ("/dir/b.bin", pattern(70000, 2)),
        ("/dir/sub/c.bin", pattern(9000, 3)),
        ("/same-as-c.bin", pattern(9000, 3)),
        ("/three.bin", pattern(70000, 2)),
    ];
    for (remote, data) in &expected {
        let out = cli(&client, &["cat", remote]);
        assert!(out.status.success(), "cat {remote}: {}", stderr(&out));
        assert!(out.stdout == *data, "{remote} reads back byte-exact after the upgrade");
    }
    let out = cli(&client, &["health", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["files"]["healthy"], 5, "{h}");
    let out = Command::new("sqlite3").arg(d.join("tracker/tracker.db")).arg("PRAGMA user_version").output().unwrap();
    // Schema 8: references kept under each file's lineage, and manifest deltas.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
}

/// A fixture swarm of three peers and two members (read-write `client`, read-only `reader`)
/// started with today's binary: every file of the fixture's script reads back byte-exact
/// with both tokens and keeps its R, and the reader stays read-only. The daemons and the
/// tracker's address, for more checks.
fn upgraded_swarm_reads_everything(fixture: &str, old_addr: &str, protocol: u32, d: &Path) -> (Daemons, String) {
    upgraded_swarm_on(fixture, old_addr, protocol, d, None)
}

/// [`upgraded_swarm_reads_everything`], the tracker on the PostgreSQL database `db` if given
/// (and the home's SQLite file removed, so everything read comes from that database).
fn upgraded_swarm_on(fixture: &str, old_addr: &str, protocol: u32, d: &Path, db: Option<&str>) -> (Daemons, String) {
    let homes = ["tracker", "client", "reader", "peer0", "peer1", "peer2"];
    let addr = copy_fixture(fixture, &homes, old_addr, d);
    let s = |h: &str| d.join(h).display().to_string();
    let home = s("tracker");
    let mut args = vec!["tracker", "--home", &home];
    if let Some(db) = db {
        std::fs::remove_file(d.join("tracker/tracker.db")).unwrap();
        args.extend(["--db", db]);
    }
    let mut daemons = Daemons(vec![spawn(d, "tracker", &args)]);
    for peer in ["peer0", "peer1", "peer2"] {
        daemons.0.push(spawn(d, peer, &["peer", "--home", &s(peer), "--listen", "127.0.0.1:0"]));
    }
    let (client, reader) = (d.join("client"), d.join("reader"));
    wait_for("the upgraded swarm to answer with three peers up", Duration::from_secs(30), || {
        let out = cli(&client, &["peers", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v.as_array()?.iter().filter(|p| p["state"] == "up").count() == 3).then_some(())
    });
    let expected: [(&str, Vec<u8>, u64); 6] = [
        ("/a.txt", format!("hello from protocol {protocol}\n").into_bytes(), 2),
        ("/dir/b.bin", pattern(70000, 2), 2),
        ("/dir/sub/c.bin", pattern(9000, 3), 1),
        ("/same-as-c.bin", pattern(9000, 3), 2),
        ("/three.bin", pattern(70000, 2), 3),
        ("/d.bin", pattern(300000, 5), 2),
    ];
    for (remote, data, r) in &expected {
        for home in [&client, &reader] {
            let out = cli(home, &["cat", remote]);
            assert!(out.status.success(), "cat {remote}: {}", stderr(&out));
            assert!(out.stdout == *data, "{remote} reads back byte-exact after the upgrade");
        }
        let out = cli(&client, &["stat", remote, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["replicas"].as_u64(), Some(*r), "{remote} keeps the R it was written with");
    }
    let out = cli(&reader, &["mkdir", "/nope"]);
    assert_eq!(out.status.code(), Some(5), "the read-only member stays read-only: {}", stderr(&out));
    (daemons, addr)
}

/// The link the fixture kept (`link.txt`), its tracker address moved to `addr` as the
/// homes' were.
fn fixture_link(fixture: &str, addr: &str) -> String {
    let text = std::fs::read_to_string(Path::new(fixture).join("link.txt")).unwrap();
    let mut link = swarmfs_core::Link::decode(text.trim()).unwrap();
    link.tracker_addr = addr.to_string();
    link.encode()
}

/// Fetches `link` with no home and checks it is /d.bin of the fixtures; then the swarm's
/// health and the tracker's schema version.
fn link_health_and_schema(d: &Path, link: &str) {
    let got = d.join("got");
    let out = cli(&d.join("nobody"), &["get", link, got.to_str().unwrap()]);
    assert!(out.status.success(), "get LINK: {}", stderr(&out));
    assert!(std::fs::read(&got).unwrap() == pattern(300000, 5));
    let out = cli(&d.join("client"), &["health", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["status"], "healthy", "{h}");
    let out = Command::new("sqlite3").arg(d.join("tracker/tracker.db")).arg("PRAGMA user_version").output().unwrap();
    // Schema 8: references kept under each file's lineage, and manifest deltas.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
}

#[test]
fn a_protocol_4_swarm_upgrades_in_place_and_both_member_tokens_read_and_link() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _daemons = upgraded_swarm_reads_everything(FIXTURE_4, "127.0.0.1:47314", 4, d);
    // Links, new in protocol 5, to files written before.
    let out = cli(&d.join("client"), &["link", "/d.bin"]);
    assert!(out.status.success(), "link: {}", stderr(&out));
    link_health_and_schema(d, String::from_utf8(out.stdout).unwrap().trim());
}

#[test]
fn a_protocol_5_swarm_upgrades_in_place_and_its_members_and_link_read_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_daemons, addr) = upgraded_swarm_reads_everything(FIXTURE_5, "127.0.0.1:47315", 5, d);
    // The link made before the upgrade still opens its file (its tracker address moved to
    // this test's port, as the homes' did). Protocol 6 kept schema 5; this build's schemas 6
    // (the collector's claims) and 7 (references under lineages) are migrated here.
    link_health_and_schema(d, &fixture_link(FIXTURE_5, &addr));
}

/// `/sliced.bin` of the protocol-6 fixture: written whole, then two small writes through
/// that release's mount (see its README).
fn sliced_fixture() -> Vec<u8> {
    written_over(&[(69_632, 4096, 61), (131_122, 100, 62)])
}

/// `pattern(200000, 6)` (the fixtures' `/sliced.bin` as put) with `writes` (offset, length,
/// seed of the pattern written) made over it in order.
fn written_over(writes: &[(usize, usize, u64)]) -> Vec<u8> {
    let mut data = pattern(200_000, 6);
    for &(at, len, seed) in writes {
        data[at..at + len].copy_from_slice(&pattern(len, seed));
    }
    data
}

#[test]
fn a_protocol_6_swarm_upgrades_in_place_and_its_sliced_file_reads_back_and_takes_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_daemons, addr) = upgraded_swarm_reads_everything(FIXTURE_6, "127.0.0.1:47316", 6, d);
    let (client, reader) = (d.join("client"), d.join("reader"));
    let mut expected = sliced_fixture();
    for home in [&client, &reader] {
        reads_back(home, "/sliced.bin", &expected, "the previous release's slices read back");
    }
    link_health_and_schema(d, &fixture_link(FIXTURE_6, &addr));
    // Today's mount writes over that manifest: the first fsync commits it whole, the next
    // ones as deltas over it; another member reads every byte back.
    let mut m = common::Mount::start_in(d, &client, "mnt", &[]);
    let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("sliced.bin")).unwrap();
    for k in 0..4u64 {
        let (at, bytes) = (1000 + k as usize * 40_000, pattern(300, 70 + k));
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes, at as u64).unwrap();
        expected[at..at + 300].copy_from_slice(&bytes);
        f.sync_all().unwrap();
        reads_back(&reader, "/sliced.bin", &expected, &format!("read back after fsync {k}"));
    }
    assert_eq!(deltas_in(d), "3", "fsyncs 2 to 4 committed as deltas");
    drop(f);
    m.stop();
    assert_eq!(deltas_in(d), "0", "the last close committed the file whole");
    let out = cli(&reader, &["cat", "/sliced.bin"]);
    assert!(out.stdout == expected, "read back after the unmount");
}

/// `remote` as the member of `home` reads it with `cat`: the command succeeds and prints
/// `expected`.
fn reads_back(home: &Path, remote: &str, expected: &[u8], what: &str) {
    let out = cli(home, &["cat", remote]);
    assert!(out.status.success() && out.stdout == expected, "{what}: {}", stderr(&out));
}

/// How many manifest deltas the tracker in `d` keeps.
fn deltas_in(d: &Path) -> String {
    let db = d.join("tracker/tracker.db");
    let out = Command::new("sqlite3").arg(db).arg("SELECT count(*) FROM manifest_deltas").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `/sliced.bin` of the protocol-7 fixture: written whole, then three small writes through
/// that release's mount, each fsynced: a whole commit and two V1 deltas (see its README).
fn delta_fixture() -> Vec<u8> {
    written_over(&[(69_632, 4096, 61), (131_122, 100, 62), (10, 300, 63)])
}

#[test]
fn a_protocol_7_swarm_upgrades_in_place_its_v1_deltas_open_and_its_file_grows_by_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_daemons, addr) = upgraded_swarm_reads_everything(FIXTURE_7, "127.0.0.1:47317", 7, d);
    let (client, reader) = (d.join("client"), d.join("reader"));
    assert_eq!(deltas_in(d), "2", "the fixture's file is a manifest and two V1 deltas");
    let mut expected = delta_fixture();
    for home in [&client, &reader] {
        reads_back(home, "/sliced.bin", &expected, "the V1 deltas read back");
    }
    link_health_and_schema(d, &fixture_link(FIXTURE_7, &addr));
    // Today's mount reads the old version through its deltas, then appends to it: the first
    // fsync commits it whole, the next ones as deltas that grow it (past a 64 KiB chunk).
    let mut m = common::Mount::start_in(d, &client, "mnt", &[]);
    let mut via_mount = Vec::new();
    std::fs::File::open(m.dir.join("sliced.bin")).unwrap().read_to_end(&mut via_mount).unwrap();
    assert!(via_mount == expected, "the mount reads the V1 deltas");
    let mut f = std::fs::OpenOptions::new().append(true).open(m.dir.join("sliced.bin")).unwrap();
    for k in 0..3u64 {
        let bytes = pattern(30_000, 80 + k);
        f.write_all(&bytes).unwrap();
        expected.extend_from_slice(&bytes);
        f.sync_all().unwrap();
        reads_back(&reader, "/sliced.bin", &expected, &format!("read back after append {k}"));
    }
    // At least: a write spanning pages may reach the mount as two requests, and a flush
    // between them (a forked child of another test closing its copy of `f`) commits too.
    let open_deltas: u32 = deltas_in(d).parse().unwrap();
    assert!(open_deltas >= 2, "appends 2 and 3 committed as deltas: {open_deltas}");
    drop(f);
    m.stop();
    assert_eq!(deltas_in(d), "0", "the last close committed the file whole");
    let out = cli(&reader, &["cat", "/sliced.bin"]);
    assert!(out.stdout == expected, "read back after the unmount");
}

#[test]
fn a_protocol_8_swarm_upgrades_to_chunks_beside_tls_and_its_v2_deltas_and_grown_file_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_daemons, addr) = upgraded_swarm_reads_everything(FIXTURE_8, "127.0.0.1:47318", 8, d);
    assert_eq!(deltas_in(d), "2", "the fixture's /sliced.bin is a manifest and two V2 deltas");
    let grown: Vec<u8> = [pattern(200_000, 6), pattern(30_000, 80), pattern(30_000, 81), pattern(30_000, 82)].concat();
    for home in [d.join("client"), d.join("reader")] {
        reads_back(&home, "/sliced.bin", &delta_fixture(), "the V2 deltas read back");
        reads_back(&home, "/grown.bin", &grown, "the file grown through the mount reads back");
    }
    link_health_and_schema(d, &fixture_link(FIXTURE_8, &addr));
    // Today's mount reads it through its deltas (its chunks beside TLS), and its close
    // commits it whole.
    let mut m = common::Mount::start_in(d, &d.join("client"), "mnt", &[]);
    let mut via_mount = Vec::new();
    std::fs::File::open(m.dir.join("sliced.bin")).unwrap().read_to_end(&mut via_mount).unwrap();
    assert!(via_mount == delta_fixture(), "the mount reads the V2 deltas");
    m.stop();
}

#[test]
fn a_postgresql_database_of_the_previous_release_upgrades_in_place_and_every_file_reads_back() {
    let pg = common::pg::PgCluster::start();
    let out = pg.psql(&["-f", PG_SCHEMA_5]);
    assert!(out.status.success(), "loading the schema-5 dump: {}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = pg.url();
    let (_daemons, addr) = upgraded_swarm_on(FIXTURE_5, "127.0.0.1:47315", 5, d, Some(&url));
    let out = pg.psql(&["-At", "-c", "SELECT version FROM swarmfs_schema"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8", "migrated to schema 8: {}", stderr(&out));
    let out = pg.psql(&["-At", "-c", "SELECT count(*) FROM trackers"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "the tracker registered itself: {}", stderr(&out));
    // The link made before, and the swarm's health, from the database alone.
    let link = fixture_link(FIXTURE_5, &addr);
    let got = d.join("got");
    let out = cli(&d.join("nobody"), &["get", &link, got.to_str().unwrap()]);
    assert!(out.status.success(), "get LINK: {}", stderr(&out));
    assert!(std::fs::read(&got).unwrap() == pattern(300000, 5));
    let out = cli(&d.join("client"), &["health", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["status"], "healthy", "{h}");
}
