//! The tracker on PostgreSQL (`tracker --db postgres://…`) with a real cluster of the test's
//! own. The rest of the end-to-end suite runs on PostgreSQL too (`SWARMFS_TEST_DB=postgres`,
//! scripts/test); these are what only PostgreSQL has: adopting a home's SQLite swarm, and a
//! database that cannot be used; and the mount's manifest deltas there (the mount suites run
//! on SQLite only).

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use common::pg::PgCluster;
use common::{stderr, Cluster, Mount, BIN};

#[test]
fn a_swarm_moves_from_sqlite_to_postgresql_whole_and_is_adopted_once() {
    let mut c = Cluster::start(2);
    let a = c.put_pattern("a", "/docs/a.bin", 300_000, 1, &[]);
    c.ok(&["mkdir", "/empty"]);
    let pg = PgCluster::start();
    let db = pg.url();

    c.start_tracker_with(&["--db", &db]);
    c.wait_up(2);
    let ls = c.ok(&["ls", "/"]);
    assert!(ls.contains("docs") && ls.contains("empty"), "{ls}");
    assert!(c.cli(&["cat", "/docs/a.bin"]).stdout == a, "a file put on SQLite reads back on PostgreSQL");
    let b = c.put_pattern("b", "/b.bin", 70_000, 2, &[]);

    // A restart finds the swarm in the database: nothing is copied again, and what was
    // written on PostgreSQL is there (the SQLite file was left behind).
    c.start_tracker_with(&["--db", &db]);
    c.wait_up(2);
    assert!(c.cli(&["cat", "/b.bin"]).stdout == b);
    assert!(c.cli(&["cat", "/docs/a.bin"]).stdout == a);
    let log = c.log("tracker");
    assert_eq!(log.matches("copied the swarm into the new PostgreSQL database").count(), 1, "{log}");

    // Back on SQLite, the file written on PostgreSQL is not there: two databases, not one.
    c.start_tracker();
    c.wait_up(2);
    assert!(!c.cli(&["stat", "/b.bin"]).status.success());
}

#[test]
fn a_database_the_tracker_cannot_use_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("t");
    let out = Command::new(BIN).args(["init", "--tracker-addr", "127.0.0.1:1", "--home"]).arg(&home).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tracker = |db: &str| {
        Command::new(BIN)
            .args(["tracker", "--listen", "127.0.0.1:0", "--db", db, "--home"])
            .arg(&home)
            .output()
            .unwrap()
    };
    let out = tracker("sqlite:///var/lib/t.db");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--db takes a PostgreSQL URL"), "{}", stderr(&out));

    // Nothing listens on port 1: refused at once, and the password stays out of the message.
    let out = tracker("postgres://ann:s3cret@127.0.0.1:1/swarm");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot connect to postgres://ann@127.0.0.1:1/swarm"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Fsynced small writes to `/s.bin` through the open file `f`, one per seed.
fn small_fsyncs(f: &std::fs::File, expected: &mut [u8], seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let (at, bytes) = (5000 + (seed % 4) as usize * 70_000, common::pattern(200, seed));
        f.write_all_at(&bytes, at as u64).unwrap();
        expected[at..at + 200].copy_from_slice(&bytes);
        f.sync_all().unwrap();
    }
}

#[test]
fn manifest_deltas_move_with_a_swarm_adopted_by_postgresql_and_are_committed_there() {
    let mut c = Cluster::start(2);
    let mut expected = c.put_pattern("s", "/s.bin", 300_000, 4, &["--chunk-size", "64K"]);
    // On SQLite, a file held open: the first fsync commits whole, the next two as deltas.
    let mut m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("s.bin")).unwrap();
    small_fsyncs(&f, &mut expected, 40..43);
    let pg = PgCluster::start();
    c.start_tracker_with(&["--db", &pg.url()]);
    c.wait_up(2);
    let deltas = || {
        let out = pg.psql(&["-At", "-c", "SELECT count(*) FROM manifest_deltas"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(deltas(), "2", "the deltas made on SQLite were copied");
    assert!(c.cli(&["cat", "/s.bin"]).stdout == expected, "and read back from PostgreSQL");
    // The mount goes on: its version is the file's on PostgreSQL too, so its next fsyncs
    // are deltas over it there.
    small_fsyncs(&f, &mut expected, 50..53);
    assert_eq!(deltas(), "5");
    assert!(c.cli(&["cat", "/s.bin"]).stdout == expected, "deltas committed on PostgreSQL read back");
    // The last close commits the file whole: its deltas go.
    drop(f);
    m.stop();
    assert_eq!(deltas(), "0");
    assert!(c.cli(&["cat", "/s.bin"]).stdout == expected);
}
