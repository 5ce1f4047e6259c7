//! The FUSE mount, driven by ordinary programs.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{member_home, pattern, sh, stderr, wait_for, Cluster, Mount};

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn two_mounts_see_closed_files_and_renames() {
    let c = Cluster::start(2);
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    let data = pattern(3 * 1024 * 1024 + 123, 1);
    std::fs::write(a.dir.join("shared.bin"), &data).unwrap();
    assert_eq!(std::fs::read(b.dir.join("shared.bin")).unwrap(), data, "closed in A, read in B");
    // Overwrite in place at an offset in B; A sees it when it opens the file again.
    {
        let f = std::fs::OpenOptions::new().write(true).open(b.dir.join("shared.bin")).unwrap();
        f.write_all_at(b"PATCH", 2 * 1024 * 1024 - 2).unwrap();
    }
    let mut expected = data.clone();
    expected[2 * 1024 * 1024 - 2..2 * 1024 * 1024 + 3].copy_from_slice(b"PATCH");
    assert_eq!(std::fs::read(a.dir.join("shared.bin")).unwrap(), expected);
    std::fs::create_dir(a.dir.join("dir")).unwrap();
    std::fs::rename(a.dir.join("shared.bin"), a.dir.join("dir/moved.bin")).unwrap();
    wait_for("B sees the rename", Duration::from_secs(10), || {
        (b.dir.join("dir/moved.bin").exists() && !b.dir.join("shared.bin").exists()).then_some(())
    });
    assert_eq!(std::fs::read(b.dir.join("dir/moved.bin")).unwrap(), expected);
}

#[test]
fn posix_operations_and_errnos() {
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &["--chunk-size", "4K"]);
    let d = &m.dir;
    // Sparse writes past the end, unaligned, across chunk boundaries.
    let mut f =
        std::fs::OpenOptions::new().create(true).read(true).write(true).truncate(true).open(d.join("f")).unwrap();
    f.write_all_at(b"tail", 20_000).unwrap();
    f.write_all_at(b"head", 4094).unwrap();
    let mut model = vec![0u8; 20_004];
    model[20_000..].copy_from_slice(b"tail");
    model[4094..4098].copy_from_slice(b"head");
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, model, "reads see unflushed writes");
    // Truncate down mid-chunk, then extend: the cut bytes must read back as zeros.
    f.set_len(4096).unwrap();
    f.set_len(10_000).unwrap();
    drop(f);
    model.truncate(4096);
    model.resize(10_000, 0);
    assert_eq!(std::fs::read(d.join("f")).unwrap(), model);
    assert_eq!(std::fs::metadata(d.join("f")).unwrap().len(), 10_000);
    // Append and chmod, symlinks.
    let mut f = std::fs::OpenOptions::new().append(true).open(d.join("f")).unwrap();
    f.write_all(b"appended").unwrap();
    drop(f);
    assert_eq!(std::fs::metadata(d.join("f")).unwrap().len(), 10_008);
    std::fs::set_permissions(d.join("f"), std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o777, 0o750);
    std::os::unix::fs::symlink("f", d.join("link")).unwrap();
    assert_eq!(std::fs::read_link(d.join("link")).unwrap().to_str().unwrap(), "f");
    assert_eq!(std::fs::read(d.join("link")).unwrap().len(), 10_008);
    // Errnos.
    std::fs::create_dir(d.join("dir")).unwrap();
    std::fs::write(d.join("dir/x"), b"x").unwrap();
    assert_eq!(errno(std::fs::metadata(d.join("nope"))), libc::ENOENT);
    assert_eq!(errno(std::fs::create_dir(d.join("dir"))), libc::EEXIST);
    assert_eq!(errno(std::fs::metadata(d.join("f/x"))), libc::ENOTDIR);
    assert_eq!(errno(std::fs::remove_file(d.join("dir"))), libc::EISDIR);
    assert_eq!(errno(std::fs::remove_dir(d.join("dir"))), libc::ENOTEMPTY);
    assert_eq!(errno(std::fs::remove_dir(d.join("f"))), libc::ENOTDIR);
    // Rename replacing a target, across directories.
    std::fs::write(d.join("g"), b"new").unwrap();
    std::fs::rename(d.join("g"), d.join("dir/x")).unwrap();
    assert_eq!(std::fs::read(d.join("dir/x")).unwrap(), b"new");
    std::fs::remove_file(d.join("dir/x")).unwrap();
    std::fs::remove_dir(d.join("dir")).unwrap();
    let names: Vec<String> =
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // statfs reports the swarm's usable capacity: 2 peers × 1 GiB at 2 replicas.
    let df = sh(&format!("stat -f -c '%b %S' {}", d.display()), d);
    let mut it = df.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (blocks, bsize) = (it.next().unwrap(), it.next().unwrap());
    assert_eq!(blocks * bsize, 1 << 30);
}

#[test]
fn cp_r_and_diff_also_after_a_replica_holder_dies() {
    let mut c = Cluster::start(3);
    let src = c.path("src");
    for i in 0..1000 {
        let dir = src.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), pattern(i * 37 % 9000 + 1, i as u64)).unwrap();
    }
    std::fs::write(src.join("large1"), pattern(9 << 20, 1)).unwrap();
    std::fs::write(src.join("large2"), pattern(3 << 20, 2)).unwrap();
    let mut m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    sh(&format!("cp -r {} {}/tree", src.display(), m.dir.display()), &m.dir);
    sh(&format!("diff -r {} {}/tree", src.display(), m.dir.display()), &m.dir);
    m.stop();
    c.kill_peer(1);
    // A fresh mount: nothing comes from a cache.
    let m = Mount::start(&c, &c.client_home(), "mnt2", &[]);
    sh(&format!("diff -r {} {}/tree", src.display(), m.dir.display()), &m.dir);
}

#[test]
fn git_and_sqlite_work_inside_the_mount() {
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let repo = m.dir.join("repo");
    std::fs::create_dir(&repo).unwrap();
    sh("git init -q . && echo one > a.txt && git add a.txt", &repo);
    sh("git -c user.email=t@example.com -c user.name=t commit -qm first", &repo);
    sh("echo two >> a.txt && git -c user.email=t@example.com -c user.name=t commit -qam second", &repo);
    let log = sh("git log --oneline", &repo);
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(sh("git status --porcelain", &repo).is_empty());
    let db = m.dir.join("app.db");
    let q = |sql: &str| sh(&format!("sqlite3 {} \"{sql}\"", db.display()), &m.dir);
    q("create table t(id integer primary key, v text); insert into t(v) values ('a'),('b'),('c');");
    q("begin; update t set v = 'B' where id = 2; delete from t where id = 3; commit;");
    assert_eq!(q("select group_concat(v) from t order by id;").trim(), "a,B");
    assert_eq!(q("pragma integrity_check;").trim(), "ok");
}

#[test]
fn fsx_20000_random_operations() {
    let c = Cluster::start(2);
    // 4 KiB chunks: fsx's 256 KiB file spans 64 chunks, exercising partial-chunk logic.
    let m = Mount::start(&c, &c.client_home(), "mnt", &["--chunk-size", "4K"]);
    let cfg = c.path("fsx.toml");
    std::fs::write(
        &cfg,
        "flen = 262144\n[opsize]\nmax = 65536\n[weights]\nclose_open = 2\nread = 10\nwrite = 10\nmapread = 5\n\
         mapwrite = 5\ninvalidate = 1\ntruncate = 3\nfsync = 1\nfdatasync = 1\nsendfile = 1\ncopy_file_range = 1\n",
    )
    .unwrap();
    let out = std::process::Command::new("fsx")
        .args(["-N", "20000", "-S", "2026", "-f"])
        .arg(&cfg)
        .arg("-P")
        .arg(c.path(""))
        .arg(m.dir.join("fsx.data"))
        .output()
        .expect("fsx not found: `cargo install fsx` (.ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("All operations completed A-OK"), "{text}");
}

#[test]
fn fio_random_4k_writes_with_fsyncs_verify_on_the_mount_and_after_a_remount() {
    let c = Cluster::start(2);
    let mut m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let file = m.dir.join("fio.data");
    // The benchmark's job, smaller: 4 KiB random writes into a laid-out file with an fsync
    // every 32, then every block read back against its checksum.
    let job = |extra: &[&str]| {
        let out = std::process::Command::new("fio")
            .args(["--name=randwrite", "--rw=randwrite", "--bs=4k", "--size=2M", "--fsync=32", "--ioengine=psync"])
            .args(["--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", "--randseed=2026"])
            .arg(format!("--filename={}", file.display()))
            .args(extra)
            .output()
            .expect("fio not found: scripts/install-deps installs it");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !text.contains("verify: bad"), "{text}");
        text
    };
    let text = job(&[]);
    assert!(text.contains("err= 0"), "{text}");
    m.stop();
    // What was fsynced is in the swarm: a new mount verifies the same blocks (same seed).
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    job(&["--verify_only"]);
    drop(m);
}

/// Chunk bytes the peers of `c` received with PutChunk so far.
fn stored_bytes(peers: &[String]) -> u64 {
    peers
        .iter()
        .map(|a| common::sum(&common::scrape(a), "swarmfs_received_bytes_total", &["kind=\"put_chunk\""]))
        .sum::<f64>() as u64
}

#[test]
fn small_writes_upload_about_what_they_wrote_and_every_reader_sees_them() {
    let flags = ["--metrics", "127.0.0.1:0"];
    let c = Cluster::start_with(2, "1G", &flags, &flags);
    let peers = [common::metrics_addr(&c, "peer0"), common::metrics_addr(&c, "peer1")];
    let tracker = common::metrics_addr(&c, "tracker");
    let commits = |kind: &str| {
        let kind = format!("kind=\"{kind}\"");
        common::sum(&common::scrape(&tracker), "swarmfs_requests_total", &[&kind, "result=\"ok\""]) as u64
    };
    const MIB: usize = 1 << 20;
    let mut expected = c.put_pattern("big.bin", "/big.bin", 8 * MIB + 5000, 7, &["--chunk-size", "1M"]);
    let whole_before = commits("commit_file");
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    // The HTTP gateway reads through the same slices.
    let gateway = common::Gateway::start(&c, &c.client_home(), &[]);
    let url = format!("{}/files/big.bin", gateway.url);
    let etag = || {
        let head = String::from_utf8(common::curl(&["-I", &url]).stdout).unwrap();
        head.lines().find(|l| l.to_ascii_lowercase().starts_with("etag:")).unwrap().to_string()
    };
    let etag_before = etag();
    let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("big.bin")).unwrap();
    let write = |expected: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        f.write_all_at(bytes, at as u64).unwrap();
        expected[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // Eight flushes into a different chunk each: 4 KiB, and 8 KiB over a chunk boundary.
    // Page-aligned, so the kernel sends each write as one request: an unaligned one comes as
    // two, and a process another test thread spawns in between closes its inherited copy of
    // `f` at exec, which the mount takes as a close and uploads (one write, two packs).
    let before = stored_bytes(&peers);
    for k in 0..8 {
        let (at, len) = if k == 3 { (4 * MIB - 4096, 8192) } else { (k * MIB + (k + 1) * 4096, 4096) };
        write(&mut expected, at, &pattern(len, 100 + k as u64));
        f.sync_all().unwrap();
    }
    let sent = stored_bytes(&peers) - before;
    // The first fsync commits the manifest whole; the next ones commit what they added
    // over the version before (a manifest delta), which every reader below lays over it.
    assert_eq!((commits("commit_file") - whole_before, commits("commit_delta")), (1, 7), "whole and delta commits");
    // Whole chunks again would be 8 x 1 MiB x 2 copies; slices are what was written (9 x
    // 4 KiB), twice, plus each pack's AES-GCM tag.
    assert!(sent <= 9 * 4096 * 2 + 8 * 2 * 64, "8 fsynced writes of 36 KiB in all cost {sent} bytes uploaded");
    assert!(sent >= 9 * 4096 * 2, "{sent}");
    // Another process (no mount, no cache) and this mount read the same bytes.
    let back = |expected: &[u8], what: &str| {
        let got = c.path("back.bin");
        c.ok(&["get", "/big.bin", got.to_str().unwrap()]);
        assert!(std::fs::read(&got).unwrap() == expected, "get after {what}");
        let mut via_mount = Vec::new();
        std::fs::File::open(m.dir.join("big.bin")).unwrap().read_to_end(&mut via_mount).unwrap();
        assert!(via_mount == expected, "the mount after {what}");
        // A range across the chunk boundary the fourth write straddles.
        let out = c.cli(&["cat", "/big.bin", "--offset", &(4 * MIB - 5000).to_string(), "--length", "10000"]);
        assert!(out.status.success() && out.stdout == expected[4 * MIB - 5000..4 * MIB + 5000], "cat after {what}");
        assert!(common::curl(&[&url]).stdout == expected, "the gateway after {what}");
        let range = common::curl(&["-H", &format!("Range: bytes={}-{}", 4 * MIB - 5000, 4 * MIB + 4999), &url]);
        assert!(range.stdout == expected[4 * MIB - 5000..4 * MIB + 5000], "a range from the gateway after {what}");
    };
    back(&expected, "slices");
    // A link's holder opens the deltas with the key the link carries, as any reader.
    let link = c.ok(&["link", "/big.bin"]).trim().to_string();
    let got = c.path("via-link.bin");
    let out = common::run(&c.path("nobody"), &["get", &link, got.to_str().unwrap()]);
    assert!(out.status.success(), "get LINK: {}", common::stderr(&out));
    assert!(std::fs::read(&got).unwrap() == expected, "a link to a version committed as a delta");
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/big.bin", "--json"])).unwrap();
    assert_eq!((v["slices"].as_u64(), v["packs"].as_u64()), (Some(9), Some(8)), "one pack per flush: {v}");
    let text = c.ok(&["stat", "/big.bin"]);
    assert!(
        text.contains("chunks: 9\n") && text.contains("slices: 9 small writes over the chunks, in 8 packs"),
        "{text}"
    );
    assert_ne!(etag(), etag_before, "the gateway's ETag follows the slices");
    // Small writes into one chunk until it passes its slice budget: it is stored whole
    // once (compacted) in the background, the fsyncs go on meanwhile, and the last close
    // swaps it in: the manifest loses the slices it folds in and reads stay exact.
    let before = stored_bytes(&peers);
    for k in 0..140u64 {
        // Each odd write lands 50 bytes into the even one before it (a later flush wins).
        let at = 2 * MIB + (k as usize / 2 * 7919) % (MIB - 200) + (k as usize % 2) * 50;
        write(&mut expected, at, &pattern(100, 1000 + k));
        f.sync_all().unwrap();
        if k == 100 {
            back(&expected, "100 overlapping slices in one chunk");
        }
    }
    wait_for("the compacted chunk's upload", Duration::from_secs(30), || {
        Some(stored_bytes(&peers) - before).filter(|&sent| sent > 2 * MIB as u64)
    });
    back(&expected, "a compaction under way");
    // A later fsync swaps the compacted chunk in, as a delta (the chunk and the slices it
    // folds in): other readers lay that over the version before.
    let (wholes, deltas) = (commits("commit_file"), commits("commit_delta"));
    let slices_of = || {
        let v: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/big.bin", "--json"])).unwrap();
        v["slices"].as_u64().unwrap()
    };
    let mut k = 0;
    wait_for("an fsync to swap the compacted chunk in", Duration::from_secs(30), || {
        k += 1;
        write(&mut expected, 7 * MIB + 64 * k, &pattern(50, 3000 + k as u64));
        f.sync_all().unwrap();
        (slices_of() < 100).then_some(())
    });
    assert_eq!(commits("commit_file"), wholes, "the swap was committed as a delta");
    assert_eq!(commits("commit_delta"), deltas + k as u64);
    back(&expected, "a compaction swapped in by a delta");
    drop(f);
    let slices = wait_for("the last close to commit the compaction", Duration::from_secs(30), || {
        let v: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/big.bin", "--json"])).unwrap();
        v["slices"].as_u64().filter(|&n| n < 40)
    });
    // The other chunks' 8 slices, chunk 2's writes since it was read to compact (12) and
    // chunk 7's written to swap it in.
    assert!(slices >= 20, "{slices} slices");
    let sent = stored_bytes(&peers) - before;
    assert!(sent < 3 * MIB as u64, "compacted once ({sent} bytes)");
    back(&expected, "compaction");
    let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("big.bin")).unwrap();
    // A truncate into a sliced chunk and growing again: the cut bytes do not come back.
    f.set_len((6 * MIB + 1500) as u64).unwrap();
    f.set_len((6 * MIB + 9000) as u64).unwrap();
    f.sync_all().unwrap();
    drop(f);
    expected.truncate(6 * MIB + 1500);
    expected.resize(6 * MIB + 9000, 0);
    back(&expected, "truncate");
}

#[test]
fn a_chunk_rewritten_while_its_compaction_is_stored_keeps_the_writes_made_over_it() {
    let c = Cluster::start(2);
    const MIB: usize = 1 << 20;
    let mut expected = c.put_pattern("f.bin", "/f.bin", 3 * MIB, 5, &["--chunk-size", "1M"]);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(m.dir.join("f.bin")).unwrap();
    let write = |expected: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        f.write_all_at(bytes, at as u64).unwrap();
        expected[at..at + bytes.len()].copy_from_slice(bytes);
        f.sync_all().unwrap();
    };
    // Past chunk 1's slice budget: the last fsync starts its compaction.
    for k in 0..130 {
        write(&mut expected, MIB + k * 4000, &pattern(100, k as u64));
    }
    // Chunk 1 stored whole again with the same bytes (the same chunk, the compaction's copy
    // of it still under way or landed), then small writes over it: those must survive
    // whatever the compaction swaps in later.
    let mut same = vec![0u8; MIB];
    f.read_exact_at(&mut same, MIB as u64).unwrap();
    assert!(same == expected[MIB..2 * MIB], "the mount reads chunk 1 as written");
    write(&mut expected, MIB, &same);
    for k in 0..5 {
        write(&mut expected, MIB + 300_000 + k * 5000, &pattern(200, 900 + k as u64));
    }
    drop(f);
    let mut via_mount = Vec::new();
    std::fs::File::open(m.dir.join("f.bin")).unwrap().read_to_end(&mut via_mount).unwrap();
    assert!(via_mount == expected, "the mount reads the file as written");
    // Unmounted, every commit (the last close's too) is done.
    drop(m);
    assert!(read_back(&c, "/f.bin") == expected, "the file as written, from another client");
}

/// The file at `remote` as another client reads it (`swarmfs get`).
fn read_back(c: &Cluster, remote: &str) -> Vec<u8> {
    let back = c.path("back.bin");
    c.ok(&["get", remote, back.to_str().unwrap()]);
    std::fs::read(&back).unwrap()
}

#[test]
fn sigterm_commits_a_compaction_under_way_of_a_file_still_open() {
    let c = Cluster::start(2);
    const MIB: usize = 1 << 20;
    let mut expected = c.put_pattern("f.bin", "/f.bin", 2 * MIB, 6, &["--chunk-size", "1M"]);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("f.bin")).unwrap();
    // Past chunk 1's slice budget: the last fsync starts its compaction, and nothing else
    // is written, so only the unmount can swap it in.
    for k in 0..129 {
        let at = MIB + k * 4000;
        f.write_all_at(&pattern(100, k as u64), at as u64).unwrap();
        expected[at..at + 100].copy_from_slice(&pattern(100, k as u64));
        f.sync_all().unwrap();
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &m.pid().to_string()]).status();
    let slices = wait_for("the unmount to commit the compaction", Duration::from_secs(20), || {
        let v: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/f.bin", "--json"])).unwrap();
        v["slices"].as_u64().filter(|&n| n < 129)
    });
    assert_eq!(slices, 0, "chunk 1's slices are all in its compacted copy");
    drop(f);
    drop(m);
    assert!(read_back(&c, "/f.bin") == expected, "the file as written");
}

#[test]
fn a_small_writes_pack_no_holder_has_fails_reads_of_its_bytes_with_exit_4() {
    let c = Cluster::start(2);
    const MIB: usize = 1 << 20;
    let expected = c.put_pattern("f.bin", "/f.bin", 3 * MIB, 9, &["--chunk-size", "1M"]);
    let before: std::collections::HashSet<_> = (0..2).flat_map(|i| c.chunk_files(i)).collect();
    {
        let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
        let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("f.bin")).unwrap();
        f.write_all_at(&[0xAB; 4096], (MIB + 10) as u64).unwrap();
        f.sync_all().unwrap();
    }
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/f.bin", "--json"])).unwrap();
    // One pack with one slice, as a rule. But the kernel sends this unaligned write as two
    // requests, and a process another test thread spawns in between closes its inherited
    // copy of `f` at exec: the mount sees a close, uploads the first part, and the fsync
    // the second (two packs; seen in CI). Either way every pack the write added goes.
    let packs = v["packs"].as_u64().unwrap_or(0);
    assert!(v["slices"].as_u64() >= Some(1) && packs >= 1, "{v}\nmount log:\n{}", c.log("mnt"));
    // The packs are the chunks the write added, on both peers (R=2): every copy goes.
    let added: Vec<_> = (0..2).flat_map(|i| c.chunk_files(i)).filter(|p| !before.contains(p)).collect();
    assert_eq!(added.len() as u64, 2 * packs, "{added:?}");
    added.iter().for_each(|p| std::fs::remove_file(p).unwrap());
    let back = c.path("back.bin");
    let out = c.cli(&["get", "/f.bin", back.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "get: {}", stderr(&out));
    assert!(stderr(&out).contains("could not be read from any of its 2 holders"), "{}", stderr(&out));
    // A range over the written bytes needs the pack; one the write did not touch does not.
    let out = c.cli(&["cat", "/f.bin", "--offset", &MIB.to_string(), "--length", "8192"]);
    assert_eq!(out.status.code(), Some(4), "cat: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "no bytes of a chunk whose slices could not be laid");
    let out = c.cli(&["cat", "/f.bin", "--offset", "0", "--length", "4096"]);
    assert!(out.status.success() && out.stdout == expected[..4096], "chunk 0 has no slices: {}", stderr(&out));
}

#[test]
fn ls_l_of_a_big_directory_is_one_listing_and_shows_what_this_mount_has_not_flushed() {
    let c = Cluster::start_with(2, "1G", &["--metrics", "127.0.0.1:0"], &[]);
    let tracker = common::metrics_addr(&c, "tracker");
    let tree = c.path("tree");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..300 {
        std::fs::write(tree.join(format!("f{i:03}")), vec![b'x'; i]).unwrap();
    }
    c.ok(&["put", "-r", tree.to_str().unwrap(), "/many"]);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let dir = m.dir.join("many");
    // Written here, not flushed: only this mount knows the size.
    let mut open = std::fs::File::create(dir.join("open.txt")).unwrap();
    open.write_all(&[7u8; 12345]).unwrap();
    let stats = || common::sum(&common::scrape(&tracker), "swarmfs_requests_total", &["kind=\"stat\""]);
    let before = stats();
    // What `ls -l` does: read the directory, then lstat every name.
    let mut sizes = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        sizes.insert(e.file_name().into_string().unwrap(), std::fs::symlink_metadata(e.path()).unwrap().len());
    }
    let asked = stats() - before;
    assert_eq!(sizes.len(), 301);
    assert!((0..300).all(|i| sizes[&format!("f{i:03}")] == i as u64), "sizes as put");
    assert_eq!(sizes["open.txt"], 12345, "a file open here shows its unflushed size");
    assert!(asked < 20.0, "the tracker was asked {asked} stats for one ls -l of 301 entries");
    drop(open);
}

#[test]
fn creates_in_a_directory_ask_the_tracker_for_it_once_and_its_attributes_stay_true() {
    use std::os::unix::fs::MetadataExt;
    let c = Cluster::start_with(2, "1G", &["--metrics", "127.0.0.1:0"], &[]);
    let tracker = common::metrics_addr(&c, "tracker");
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    let dir = a.dir.join("d");
    std::fs::create_dir(&dir).unwrap();
    let before = std::fs::metadata(&dir).unwrap();
    let found =
        || common::sum(&common::scrape(&tracker), "swarmfs_requests_total", &["kind=\"stat\"", "result=\"ok\""]);
    let asked_before = found();
    let started = std::time::Instant::now();
    for i in 0..100 {
        std::fs::write(dir.join(format!("f{i:03}")), [7u8; 4096]).unwrap();
    }
    let asked = found() - asked_before;
    // The kernel asks for the directory's attributes before every create (it dropped them
    // after the last one); each used to be a tracker request. Now one per second at most.
    let seconds = started.elapsed().as_secs_f64().ceil();
    assert!(asked <= seconds + 2.0, "{asked} stats of existing entries for 100 creates in {seconds} s");
    // What this mount did shows at once: the directory's times moved, its links did not.
    let after = std::fs::metadata(&dir).unwrap();
    assert!(after.mtime_nsec() != before.mtime_nsec() || after.mtime() > before.mtime(), "creates move mtime");
    assert_eq!(after.nlink(), 2);
    std::fs::create_dir(dir.join("sub")).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().nlink(), 3, "a subdirectory made here counts at once");
    std::fs::remove_dir(dir.join("sub")).unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().nlink(), 2, "and its removal");
    // What another mount did shows within the one-second promise.
    std::fs::create_dir(b.dir.join("d/from-b")).unwrap();
    let made = std::time::Instant::now();
    wait_for("A sees B's mkdir in the link count", Duration::from_secs(10), || {
        (std::fs::metadata(&dir).unwrap().nlink() == 3).then_some(())
    });
    assert!(made.elapsed() < Duration::from_millis(2500), "B's change took {:?} to show in A", made.elapsed());
}

#[test]
fn a_program_probing_files_with_ioctls_gets_not_a_tty_and_the_mount_log_stays_quiet() {
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let path = m.dir.join("f");
    std::fs::write(&path, b"hello").unwrap();
    for _ in 0..3 {
        let f = std::fs::File::open(&path).unwrap();
        // What isatty(3) asks, as Python's open does of every file.
        let err = rustix::termios::tcgetattr(&f).expect_err("a file on the mount is not a terminal");
        assert_eq!(err, rustix::io::Errno::NOTTY, "the answer a local file system gives");
    }
    let log = c.log("mnt");
    assert!(!log.contains("Not Implemented"), "the mount logged the probes:\n{log}");
}

#[test]
fn sigterm_flushes_files_still_open_then_unmounts() {
    let c = Cluster::start(2);
    let mut m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let mut f = std::fs::File::create(m.dir.join("open.txt")).unwrap();
    f.write_all(b"written, never closed").unwrap();
    let _ = std::process::Command::new("kill").args(["-TERM", &m.pid().to_string()]).status();
    // The staged bytes reach the swarm while the file is still open.
    wait_for("staged write flushed", Duration::from_secs(20), || {
        (c.cli(&["cat", "/open.txt"]).stdout == b"written, never closed").then_some(())
    });
    drop(f);
    m.stop();
}

#[test]
fn unreachable_tracker_gives_eio_not_a_hang() {
    let mut c = Cluster::start(1);
    let m = Mount::start(&c, &c.client_home(), "mnt", &["--replicas", "1"]);
    std::fs::write(m.dir.join("before"), b"x").unwrap();
    c.kill_tracker();
    let path = m.dir.join("after-the-tracker-died");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(&path, b"y"));
    });
    let r = rx.recv_timeout(Duration::from_secs(60)).expect("the call must not hang");
    assert_eq!(errno(r), libc::EIO);
    // With the tracker back, the same mount works again.
    c.start_tracker();
    c.wait_up(1);
    wait_for("mount recovers", Duration::from_secs(20), || std::fs::write(m.dir.join("again"), b"z").ok());
}

#[test]
fn pjdfstest_passes_except_the_documented_cases() {
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &["--allow-other"]);
    let dir = m.dir.join("pjd");
    std::fs::create_dir(&dir).unwrap();
    // The suite switches to unprivileged users, who must be able to work in its directory.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let secondary = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pjdfstest.toml");
    let out = std::process::Command::new("pjdfstest")
        .args(["-c", config, "-p"])
        .arg(&dir)
        .arg("-s")
        .arg(secondary.path())
        .current_dir(&dir)
        .output()
        .expect("pjdfstest not found: `cargo install pjdfstest` (.ci/run does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text.lines().find(|l| l.starts_with("Summary:")).unwrap_or("no summary");
    // The failing cases first: CI shows only the start of a long message.
    let lines: Vec<&str> = text.lines().collect();
    let failed: Vec<String> =
        lines.windows(2).filter(|w| w[0].trim_end().ends_with("FAILED")).map(|w| w.join("\n")).collect();
    assert!(out.status.success() && summary.contains(" 0 failed"), "{summary}\n{}\n{text}", failed.join("\n"));
}

#[test]
fn a_peer_dying_under_a_read_does_not_fail_it() {
    let mut c = Cluster::start(3);
    let data = pattern(24 << 20, 5);
    let local = c.path("big");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/big", "--replicas", "2"]);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let mut f = std::fs::File::open(m.dir.join("big")).unwrap();
    let mut first = vec![0u8; 8 << 20];
    f.read_exact(&mut first).unwrap();
    c.kill_peer(0);
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert!(first == data, "the read completed byte-exact from the surviving replicas");
}

#[test]
fn one_files_upload_does_not_stall_the_rest_of_the_mount() {
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    std::fs::write(m.dir.join("small"), b"small file").unwrap();
    let big = m.dir.join("big");
    let (written_tx, written_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&big).unwrap();
        // Distinct blocks: equal ones would dedup into a single chunk.
        for i in 0..160 {
            f.write_all(&pattern(1 << 20, i)).unwrap();
        }
        written_tx.send(()).unwrap();
        // close = upload of 160 MiB to two peers
        drop(f);
        std::time::Instant::now()
    });
    written_rx.recv().unwrap();
    // Once the upload is visibly under way on a peer, other files must still answer.
    wait_for("upload under way", Duration::from_secs(30), || (c.chunk_files(0).len() >= 5).then_some(()));
    // The upload cannot finish while one of its two peers is frozen (a fast upload used to
    // finish before the reads below, and the test lost a race it was not about). The read
    // of `small` goes to the other holder when the frozen one does not answer.
    let frozen = [common::peer_pid_of(&c, 1)];
    common::signal(&frozen, "-STOP");
    let small = std::fs::read(m.dir.join("small")).unwrap();
    let listed = std::fs::read_dir(&m.dir).unwrap().count();
    let served_at = std::time::Instant::now();
    common::signal(&frozen, "-CONT");
    let closed_at = writer.join().unwrap();
    assert_eq!(small, b"small file");
    assert_eq!(listed, 2);
    assert!(served_at < closed_at, "reads and listings were answered before the upload finished");
}

#[test]
fn mount_refuses_a_peer_token_and_a_missing_mountpoint() {
    let c = Cluster::start(1);
    let peer_home = c.peer_home(0);
    let dir = c.path("mp");
    std::fs::create_dir(&dir).unwrap();
    let out = common::run(&peer_home, &["mount", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("mounting needs a member token"), "{}", common::stderr(&out));
    let out = c.cli(&["mount", c.path("no-such-dir").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("not a directory"), "{}", common::stderr(&out));
    assert!(!common::is_mounted(&dir));
}

#[test]
fn times_set_on_open_files_survive_close_tar_x_then_tar_d_is_clean() {
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let src = c.path("src");
    for d in ["a", "a/b", "c"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    for i in 0..40 {
        let dir = ["a", "a/b", "c"][i % 3];
        std::fs::write(src.join(dir).join(format!("f{i}")), common::pattern(i * 997, i as u64)).unwrap();
    }
    sh("touch -d '2001-02-03 04:05:06 UTC' a/f0 c/f2 && touch -d '1960-01-01 00:00:00 UTC' a/b/f1", &src);
    std::fs::create_dir(m.dir.join("dst")).unwrap();
    // tar x writes, sets the time through the open descriptor (futimens), then closes.
    sh(&format!("tar cf - . | tar xf - -C {}", m.dir.join("dst").display()), &src);
    // Read back through a second mount, whose kernel has cached nothing: what was committed.
    let other = Mount::start(&c, &common::member_home(&c, "other"), "mnt2", &[]);
    let diff = sh(&format!("tar cf - . | tar df - -C {} 2>&1 || true", other.dir.join("dst").display()), &src);
    assert!(diff.trim().is_empty(), "tar d after tar x: {diff}");
    let out = c.ok(&["stat", "/dst/a/b/f1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mtime_ms"], -315_619_200_000i64, "a time before 1970 is kept, not 0");
    // cp -p sets the time the same way.
    sh(&format!("cp -p a/f0 {}", m.dir.join("copied").display()), &src);
    let out = c.ok(&["stat", "/copied", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mtime_ms"], 981_173_106_000i64);
}

#[test]
fn atime_only_changes_move_ctime_and_an_open_directory_outlives_a_rename_over_it() {
    use std::os::unix::fs::MetadataExt;
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let f = m.dir.join("f");
    std::fs::write(&f, b"x").unwrap();
    let before = std::fs::metadata(&f).unwrap().ctime_nsec() + std::fs::metadata(&f).unwrap().ctime() * 1_000_000_000;
    std::thread::sleep(Duration::from_millis(20)); // ctime has millisecond resolution
    sh("touch -a f", &m.dir);
    let meta = std::fs::metadata(&f).unwrap();
    assert!(meta.ctime() * 1_000_000_000 + meta.ctime_nsec() > before, "touch -a moves ctime");
    std::fs::create_dir(m.dir.join("d1")).unwrap();
    std::fs::create_dir(m.dir.join("d2")).unwrap();
    let open_dir = std::fs::File::open(m.dir.join("d2")).unwrap();
    std::fs::rename(m.dir.join("d1"), m.dir.join("d2")).unwrap();
    let meta = open_dir.metadata().expect("fstat on a directory renamed over while open");
    assert!(meta.is_dir());
    assert_eq!(meta.nlink(), 0, "no name links to it any more");
}

#[test]
fn a_second_signal_cuts_the_final_upload_short_and_the_next_mount_finishes_it() {
    let c = Cluster::start(2);
    let mut m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    // Frozen peers: no upload can finish. (Frozen before the file is opened: a fork+exec
    // while it is open would close an inherited descriptor, and that close uploads.)
    let pids = [common::peer_pid_of(&c, 0), common::peer_pid_of(&c, 1)];
    common::signal(&pids, "-STOP");
    let data = pattern(24 << 20, 12);
    let mut open = std::fs::File::create(m.dir.join("big")).unwrap();
    open.write_all(&data).unwrap();
    let mount = rustix::process::Pid::from_raw(m.pid() as i32).unwrap();
    let term = || rustix::process::kill_process(mount, rustix::process::Signal::TERM).unwrap();
    term();
    // Two signals close together are one (pending signals do not queue): the second is sent
    // only once the mount has acted on the first.
    wait_for("the unmount to start", Duration::from_secs(20), || {
        c.log("mnt").contains("unmounting: uploading staged writes").then_some(())
    });
    let staging = c.client_home().join("staging");
    wait_for("the unmount's upload to start", Duration::from_secs(20), || {
        let mut found = Vec::new();
        common::walk(&staging, &mut found);
        found.iter().any(|p| p.extension().is_some_and(|x| x == "pending")).then_some(())
    });
    // The writer closes its file, as tar or cp would at the end: its close waits for the
    // upload, which waits on the frozen peers (the reported hang), until a second signal.
    let closer = std::thread::spawn(move || drop(open));
    term();
    let exited = m.exited_within(Duration::from_secs(30));
    common::signal(&pids, "-CONT");
    assert!(exited, "a second SIGTERM stops the mount: {}", c.log("mnt"));
    closer.join().unwrap();
    let log = c.log("mnt");
    assert!(log.contains("kept staged for the next mount of this home: /big"), "{log}");
    assert!(log.contains("mount this home again to upload them: /big"), "{log}");
    // The next mount of the same home uploads what was left, by itself.
    let _again = next_mount_uploads_what_was_left(&c, "/big", &data);
}

/// Mounts the client home again and waits until `path` holds exactly `data`, uploaded by
/// that mount from what the last one left staged.
fn next_mount_uploads_what_was_left(c: &Cluster, path: &str, data: &[u8]) -> Mount {
    let again = Mount::start(c, &c.client_home(), "mnt-again", &[]);
    wait_for("the left-over upload", Duration::from_secs(60), || {
        let out = c.cli(&["stat", path, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["size"] == data.len()).then_some(())
    });
    let back = c.path("back");
    c.ok(&["get", path, back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "what the last mount staged arrives whole");
    let log = c.log("mnt-again");
    assert!(log.contains(&format!("uploaded {path} (left staged by the last mount)")), "{log}");
    again
}

#[test]
fn a_small_file_whose_close_was_uploading_when_the_mount_was_killed_arrives_with_the_next_mount() {
    let c = Cluster::start(2);
    let mut m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let pids = [common::peer_pid_of(&c, 0), common::peer_pid_of(&c, 1)];
    common::signal(&pids, "-STOP");
    // Small enough to be staged in memory (no staging file): only the journal keeps it.
    let data = pattern(5000, 21);
    let path = m.dir.join("small");
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || std::fs::write(path, data))
    };
    let journal = c.client_home().join("staging").join("journal");
    wait_for("the close's upload to start", Duration::from_secs(20), || {
        (std::fs::metadata(&journal).ok()?.len() > 5000).then_some(())
    });
    m.kill();
    common::signal(&pids, "-CONT");
    // Its close failed (the mount is gone), which `fs::write` does not report.
    writer.join().unwrap().unwrap();
    let _again = next_mount_uploads_what_was_left(&c, "/small", &data);
}

/// Unmounts `dir` lazily when dropped, in case a test fails with a background mount up.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn mount_helper_for_fstab_and_mount_d_run_in_the_background_with_options() {
    let c = Cluster::start(1);
    let local = c.path("f");
    std::fs::write(&local, b"in the swarm\n").unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f.txt", "--replicas", "1"]);
    // As mount(8) runs it for `mount -t fuse.swarmfs HOME DIR -o ro,...` (the binary
    // installed as /sbin/mount.fuse.swarmfs): it returns once mounted.
    let helper = c.path("mount.fuse.swarmfs");
    std::os::unix::fs::symlink(common::BIN, &helper).unwrap();
    let mp = c.path("mp");
    std::fs::create_dir(&mp).unwrap();
    let _unmount = Unmount(mp.clone());
    let home = c.client_home();
    let out = std::process::Command::new(&helper)
        .arg(&home)
        .arg(&mp)
        .args(["-o", "ro,noauto,_netdev,cache=16M"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::is_mounted(&mp), "mounted when the helper returns");
    let line = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(mp.to_str().unwrap()))
        .map(str::to_string)
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], format!("swarmfs:{}", home.display()), "the source names the swarm's home: {line}");
    assert!(fields[2] == "fuse" || fields[2] == "fuse.swarmfs", "{line}");
    assert!(fields[3].split(',').any(|o| o == "ro"), "{line}");
    assert_eq!(std::fs::read(mp.join("f.txt")).unwrap(), b"in the swarm\n");
    assert_eq!(errno(std::fs::write(mp.join("new.txt"), b"x")), 30, "EROFS on a read-only mount");
    sh(&format!("fusermount3 -u {}", mp.display()), &c.path(""));
    wait_for("the background mount to end", Duration::from_secs(20), || {
        let log = std::fs::read_to_string(home.join("mount.log")).unwrap_or_default();
        log.contains("unmounted").then_some(())
    });
    // `swarmfs mount -d`, read-write: a file written through it reaches the swarm.
    let out = c.cli(&["mount", "-d", mp.to_str().unwrap(), "-o", "allow_other,replicas=1"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(common::is_mounted(&mp));
    std::fs::write(mp.join("new.txt"), b"written in the background\n").unwrap();
    wait_for("the file written through the mount to reach the swarm", Duration::from_secs(20), || {
        (c.ok(&["cat", "/new.txt"]) == "written in the background\n").then_some(())
    });
    sh(&format!("fusermount3 -u {}", mp.display()), &c.path(""));
    // An option it does not know is a usage error, before anything is mounted.
    let out = c.cli(&["mount", "-d", mp.to_str().unwrap(), "-o", "rw,turbo"]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("unknown mount option \"turbo\""), "{}", common::stderr(&out));
    // A background mount that cannot start says why, from the mount's own last words.
    let peer_home = c.peer_home(0);
    let out = common::run(&peer_home, &["mount", "-d", mp.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("ended before it was ready") && err.contains("mounting needs a member token"), "{err}");
    // mount(8)'s -f (fake): nothing happens.
    let out = std::process::Command::new(&helper).arg(&home).arg(&mp).arg("-f").output().unwrap();
    assert!(out.status.success());
    wait_for("the second background mount to end", Duration::from_secs(20), || {
        (!common::is_mounted(&mp)).then_some(())
    });
}

#[test]
fn an_open_file_keeps_reading_for_a_minute_with_no_tracker_and_new_opens_fail_clearly() {
    let mut c = Cluster::start(2);
    let data = c.put_pattern("big", "/big.bin", 24 << 20, 21, &[]);
    c.put_pattern("other", "/other.bin", 1000, 22, &[]);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let f = std::fs::File::open(m.dir.join("big.bin")).unwrap();
    let check = |off: usize, len: usize| {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap_or_else(|e| panic!("read at {off}: {e}"));
        assert!(buf == data[off..off + len], "bytes at {off} differ");
    };
    check(0, 65536);
    c.kill_tracker();
    let down = std::time::Instant::now();
    // Scattered reads (no read-ahead to lean on): every one fetches chunks from the peers,
    // for more than a minute with no tracker at all.
    let mut i = 0usize;
    while down.elapsed() < Duration::from_secs(62) {
        let chunk = (i * 7 + 3) % 24;
        check(chunk * (1 << 20) + 4096 * (i % 200), 200_000);
        i += 1;
        std::thread::sleep(Duration::from_secs(3));
    }
    eprintln!("{i} scattered reads of an open file over {:?} with no tracker", down.elapsed());
    // A file not opened before needs the tracker: a clear error, soon.
    let t = std::time::Instant::now();
    let e = std::fs::read(m.dir.join("other.bin")).expect_err("no tracker to open it with");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "the open failed after {:?}", t.elapsed());
    let log = std::fs::read_to_string(c.path("mnt.log")).unwrap();
    assert!(log.contains("cannot connect to"), "the mount says why: {log}");
    // The tracker comes back: the same mount opens files again, no restart.
    c.start_tracker();
    wait_for("the mount to open files again", Duration::from_secs(30), || {
        std::fs::read(m.dir.join("other.bin")).ok().filter(|b| b.len() == 1000)
    });
}

/// A mount commits its fsyncs as deltas over the version it committed last; when another
/// writer replaced the file in between, the tracker refuses the delta and the mount commits
/// its version whole: last writer wins, as for any two writers, and every reader sees one
/// whole version, never a delta laid over the wrong manifest.
#[test]
fn a_delta_over_a_version_another_writer_replaced_falls_back_to_a_whole_commit() {
    const MIB: usize = 1 << 20;
    let c = Cluster::start(2);
    let mut expected = c.put_pattern("f.bin", "/f.bin", 3 * MIB, 8, &["--chunk-size", "1M"]);
    let m = Mount::start(&c, &c.client_home(), "mnt", &[]);
    let f = std::fs::OpenOptions::new().write(true).open(m.dir.join("f.bin")).unwrap();
    let write = |expected: &mut Vec<u8>, at: usize, seed: u64| {
        let bytes = pattern(300, seed);
        f.write_all_at(&bytes, at as u64).unwrap();
        expected[at..at + 300].copy_from_slice(&bytes);
        f.sync_all().unwrap();
    };
    write(&mut expected, 1000, 80); // whole
    write(&mut expected, MIB + 1000, 81); // a delta over it
    assert!(c.cli(&["cat", "/f.bin"]).stdout == expected);
    let other = c.put_pattern("g.bin", "/f.bin", 3 * MIB, 9, &["--chunk-size", "1M"]);
    assert!(c.cli(&["cat", "/f.bin"]).stdout == other, "the other writer's version");
    write(&mut expected, 2 * MIB + 1000, 82);
    let got = c.cli(&["cat", "/f.bin"]).stdout;
    assert!(got == expected, "the mount's version, committed whole after the refused delta");
    drop(f);
    assert!(c.cli(&["cat", "/f.bin"]).stdout == expected);
}

/// A close's release commits what the last handle leaves (here a compaction under way)
/// while the program goes on: an unlink or a rename over the file right after the close
/// must win. Before the mount held open files for unlink and rename, the release's commit
/// landed after the rename and wrote the old version over the file renamed onto its path.
#[test]
fn a_rename_over_or_unlink_right_after_a_close_is_not_undone_by_the_close_committing_later() {
    const KIB: usize = 1 << 10;
    let c = Cluster::start(2);
    let m = Mount::start(&c, &c.client_home(), "mnt", &["--chunk-size", "16K"]);
    let rounds = 6;
    let mut renamed = Vec::new();
    for round in 0..rounds {
        let path = m.dir.join(format!("r{round}.db"));
        std::fs::write(&path, pattern(64 * KIB, round)).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // Three 4 KiB slices in one 16 KiB chunk pass half of it: the fsync starts the
        // chunk's compaction, which the release then waits for and commits.
        for k in 0..3 {
            f.write_all_at(&pattern(4 * KIB, 100 + k), k * 5000).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        if round % 2 == 0 {
            std::fs::remove_file(&path).unwrap();
        } else {
            let new = pattern(20 * KIB, 200 + round);
            let tmp = m.dir.join(format!("r{round}.tmp"));
            std::fs::write(&tmp, &new).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            renamed.push((round, new));
        }
    }
    // Unmounted, every release has run.
    drop(m);
    for round in (0..rounds).step_by(2) {
        let o = c.cli(&["stat", &format!("/r{round}.db")]);
        assert!(!o.status.success(), "/r{round}.db was removed and stays removed");
    }
    for (round, new) in renamed {
        assert!(read_back(&c, &format!("/r{round}.db")) == new, "/r{round}.db is the file renamed onto it");
    }
}

/// An appending log fsynced after every line: each fsync uploads about the line (a slice
/// over the old last chunk, which stays as it was: a chunk may hold less than its span) and
/// commits a delta (the new size, its slices, a chunk appended), and every reader (cat, get,
/// the gateway, the mount after the close) reads the log as written.
#[test]
fn a_log_appended_to_and_fsynced_uploads_about_its_lines_and_every_reader_follows() {
    let flags = ["--metrics", "127.0.0.1:0"];
    let c = Cluster::start_with(2, "1G", &flags, &flags);
    let tracker = common::metrics_addr(&c, "tracker");
    let peers = [common::metrics_addr(&c, "peer0"), common::metrics_addr(&c, "peer1")];
    let commits = |kind: &str| {
        let kind = format!("kind=\"{kind}\"");
        common::sum(&common::scrape(&tracker), "swarmfs_requests_total", &[&kind, "result=\"ok\""]) as u64
    };
    let m = Mount::start(&c, &c.client_home(), "mnt", &["--chunk-size", "64K"]);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(m.dir.join("app.log")).unwrap();
    let mut expected = Vec::new();
    let before = stored_bytes(&peers);
    // 40 lines of 3,000 bytes: the log crosses the 64 KiB chunk boundary once.
    for k in 0..40u64 {
        let line = pattern(3000, 500 + k);
        f.write_all(&line).unwrap();
        expected.extend_from_slice(&line);
        f.sync_all().unwrap();
        // After every line: the one that crosses into a new chunk commits it appended.
        assert!(c.cli(&["cat", "/app.log"]).stdout == expected, "another reader after line {k}");
    }
    // A flush commits too: the kernel sends one whenever a copy of the descriptor closes, as
    // the copies other tests' forked children hold do at their exec, and may do so in the
    // middle of a line (a write whose source page faults goes in two requests). So at least
    // one delta per fsync after the second, and no whole commit: the first fsync commits
    // the log (3,000 bytes) whole in its manifest, the second whole again, grown out of it
    // into a chunk.
    let deltas = commits("commit_delta");
    // The first fsync may also make the entry (see crates/fuse/src/creating.rs).
    let wholes = || commits("commit_file") + commits("commit_new_file");
    assert_eq!(wholes(), 2, "the first two fsyncs whole, then only deltas");
    assert!(deltas >= 38, "every fsync after the second commits a delta: {deltas}");
    // Storing the last chunk whole at every fsync was about 40 x 30 KB x 2 copies; slices
    // are the lines, with a chunk stored whole again now and then (past 3/4 of it in
    // slices, or when a chunk fills up).
    let sent = stored_bytes(&peers) - before;
    let written = 2 * expected.len() as u64;
    assert!(sent <= 4 * written, "120,000 bytes appended, 2 copies: {sent} bytes uploaded");
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["stat", "/app.log", "--json"])).unwrap();
    assert_eq!(v["size"].as_u64(), Some(120_000), "the entry's size follows the deltas: {v}");
    assert!(c.cli(&["cat", "/app.log"]).stdout == expected);
    drop(f);
    // The last close commits the log whole once more: its deltas' leftovers are released.
    wait_for("the last close's whole commit", Duration::from_secs(10), || (wholes() == 3).then_some(()));
    assert_eq!(commits("commit_delta"), deltas, "the close commits whole");
    assert!(c.cli(&["cat", "/app.log"]).stdout == expected, "after the last close's whole commit");
    assert!(read_back(&c, "/app.log") == expected, "get: the chunks that hold less than they cover, padded");
    let gateway = common::Gateway::start(&c, &c.client_home(), &[]);
    let via_http = common::curl(&[&format!("{}/files/app.log", gateway.url)]).stdout;
    assert!(via_http == expected, "the gateway reads the log as written");
    let range = common::curl(&["-r", "60000-70000", &format!("{}/files/app.log", gateway.url)]).stdout;
    assert!(range == expected[60_000..70_001], "a range across the chunk boundary");
    assert!(std::fs::read(m.dir.join("app.log")).unwrap() == expected, "the mount, opening it again");
}

// A create answers before its tracker call lands (crates/fuse/src/creating.rs): what this
// mount does next must still happen after it, and another mount must see the file by the
// close.
#[test]
fn a_file_just_created_is_listed_renamed_and_removed_in_order_and_another_mount_sees_it_by_its_close() {
    let c = Cluster::start(2);
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    std::fs::write(a.dir.join("first"), b"the tracker confirms this mount's first create").unwrap();
    for i in 0..20u64 {
        let name = format!("new{i}");
        let mut f = std::fs::File::create(a.dir.join(&name)).unwrap();
        let listed: Vec<_> = std::fs::read_dir(&a.dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(listed.iter().any(|n| *n == *name), "{name} is listed right after its open: {listed:?}");
        let moved = format!("moved{i}");
        std::fs::rename(a.dir.join(&name), a.dir.join(&moved)).unwrap();
        f.write_all(&pattern(5000, i)).unwrap();
        drop(f);
        assert_eq!(std::fs::read(b.dir.join(&moved)).unwrap(), pattern(5000, i), "B reads {moved} after A's close");
        assert!(!b.dir.join(&name).exists(), "the name it was created under is gone");
        // Created and unlinked before its close: nothing is left.
        let gone = a.dir.join(format!("gone{i}"));
        let mut g = std::fs::File::create(&gone).unwrap();
        std::fs::remove_file(&gone).unwrap();
        g.write_all(b"written after the unlink").unwrap();
        drop(g);
        // Created and closed with nothing written: an empty file, there for B.
        drop(std::fs::File::create(a.dir.join(format!("empty{i}"))).unwrap());
        assert_eq!(std::fs::metadata(b.dir.join(format!("empty{i}"))).unwrap().len(), 0);
    }
    let listing = c.ok(&["ls", "/"]);
    assert!(!listing.contains("gone") && !listing.contains("new"), "{listing}");
    assert_eq!(listing.matches("moved").count(), 20, "{listing}");
}

// A create answered early holds its call for a moment (crates/fuse/src/creating.rs): a small
// file closed within it makes its entry in its commit, one tracker call instead of two after
// one another; a file held open longer has its entry made without waiting for the close.
#[test]
fn a_small_file_closed_right_after_its_open_makes_its_entry_with_its_commit_and_one_left_open_shows_at_once() {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let flags = ["--metrics", "127.0.0.1:0"];
    let c = Cluster::start_with(2, "1G", &flags, &[]);
    let tracker = common::metrics_addr(&c, "tracker");
    let calls = |kind: &str| {
        let kind = format!("kind=\"{kind}\"");
        common::sum(&common::scrape(&tracker), "swarmfs_requests_total", &[&kind, "result=\"ok\""]) as u64
    };
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    std::fs::write(a.dir.join("first"), b"the tracker confirms this mount's first create").unwrap();
    let (creates, merged) = (calls("create"), calls("commit_new_file"));
    for i in 0..50u64 {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(a.dir.join(format!("s{i}")))
            .unwrap();
        f.write_all(&pattern(1000 + i as usize, i)).unwrap();
    }
    let (creates, merged) = (calls("create") - creates, calls("commit_new_file") - merged);
    // Each file's entry was made once: by its create's call, or by its close's commit (all of
    // them here unless this machine took longer than the hold between an open and its close).
    assert_eq!(creates + merged, 50, "{creates} creates, {merged} made by their commit");
    assert!(merged > 0, "no close made its file's entry: {creates} creates");
    for i in 0..50u64 {
        let name = b.dir.join(format!("s{i}"));
        assert_eq!(std::fs::read(&name).unwrap(), pattern(1000 + i as usize, i), "B reads s{i}");
        let mode = std::fs::metadata(&name).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "s{i} has the mode its create asked for");
    }
    // Left open: the entry is made when the hold is up, not at the close. (Or by the commit
    // of a flush the kernel sends when a copy of the descriptor closes, as a child forked
    // meanwhile does at its exec: so nothing here forks until B sees the file.)
    let made = || calls("create") + calls("commit_new_file");
    let before = made();
    let mut held = std::fs::File::create(a.dir.join("held")).unwrap();
    held.write_all(b"still open").unwrap();
    let seen = || b.dir.join("held").exists().then_some(());
    wait_for("the held-open file's entry, seen by B", Duration::from_secs(5), seen);
    assert_eq!(made(), before + 1, "one call made the entry");
    drop(held);
    assert_eq!(std::fs::read(b.dir.join("held")).unwrap(), b"still open");
}

#[test]
fn a_mount_opening_a_file_right_after_another_mounts_close_reads_all_of_the_new_version() {
    let c = Cluster::start(2);
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    // Sizes that grow and shrink, small (kept in the manifest) and chunked.
    for (k, len) in [100usize, 105, 90_000, 5000, 200_000, 3000, 3001].into_iter().enumerate() {
        let data = pattern(len, k as u64);
        std::fs::write(b.dir.join("f"), &data).unwrap();
        // A's kernel holds the attributes A gave it a moment ago (cached for a second);
        // A's open must not let the old size cut the new version short.
        assert_eq!(std::fs::read(a.dir.join("f")).unwrap(), data, "version {k}, {len} bytes");
        assert_eq!(std::fs::metadata(a.dir.join("f")).unwrap().len(), len as u64);
    }
}

#[test]
fn a_small_file_lives_in_its_manifest_until_it_grows_and_every_mount_reads_each_version() {
    let c = Cluster::start(2);
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    let chunk_files = || (0..2).map(|i| c.chunk_files(i).len()).sum::<usize>();
    let inline = |name: &str| -> bool {
        let st: serde_json::Value = serde_json::from_str(&c.ok(&["stat", &format!("/{name}"), "--json"])).unwrap();
        st["inline"].as_bool().unwrap()
    };
    // 200 small files created, written and closed: none puts a chunk on a peer.
    for i in 0..200u64 {
        std::fs::write(a.dir.join(format!("s{i}")), pattern(100 + i as usize * 20, i)).unwrap();
    }
    assert_eq!(chunk_files(), 0, "small files are kept in their manifests");
    for i in (0..200u64).step_by(37) {
        assert_eq!(std::fs::read(b.dir.join(format!("s{i}"))).unwrap(), pattern(100 + i as usize * 20, i));
    }
    // A write into the middle, then an append past 4 KiB: chunked from then on.
    let mut want = pattern(3000, 7);
    std::fs::write(a.dir.join("f"), &want).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(a.dir.join("f")).unwrap();
    f.write_all_at(b"MIDDLE", 1000).unwrap();
    drop(f);
    want[1000..1006].copy_from_slice(b"MIDDLE");
    assert_eq!(std::fs::read(b.dir.join("f")).unwrap(), want, "B reads the write into the middle");
    assert!(inline("f"));
    let mut f = std::fs::OpenOptions::new().append(true).open(a.dir.join("f")).unwrap();
    f.write_all(&pattern(10_000, 8)).unwrap();
    drop(f);
    want.extend(pattern(10_000, 8));
    assert_eq!(std::fs::read(b.dir.join("f")).unwrap(), want, "B reads the grown file");
    assert!(!inline("f"), "grown past 4 KiB: stored in chunks");
    assert!(chunk_files() > 0);
    // Cut back to 100 bytes: kept in its manifest again; B reads it, and a write from B.
    let f = std::fs::OpenOptions::new().write(true).open(a.dir.join("f")).unwrap();
    f.set_len(100).unwrap();
    drop(f);
    want.truncate(100);
    assert_eq!(std::fs::read(b.dir.join("f")).unwrap(), want, "B reads the cut file");
    assert!(inline("f"));
    let f = std::fs::OpenOptions::new().write(true).open(b.dir.join("f")).unwrap();
    f.write_all_at(b"B was here", 95).unwrap();
    drop(f);
    want.truncate(95);
    want.extend_from_slice(b"B was here");
    assert_eq!(std::fs::read(a.dir.join("f")).unwrap(), want, "A reads B's write");
    // A mount told to keep none stores even a small file in a chunk.
    let before = chunk_files();
    let none = Mount::start(&c, &member_home(&c, "client-c"), "mnt-c", &["--inline-max", "0"]);
    std::fs::write(none.dir.join("chunked"), b"a small file in a chunk").unwrap();
    assert!(!inline("chunked"));
    assert_eq!(chunk_files(), before + 2, "one chunk, two copies");
    assert_eq!(std::fs::read(a.dir.join("chunked")).unwrap(), b"a small file in a chunk");
}

#[test]
fn a_file_whose_create_call_failed_can_be_renamed_and_unlinked_before_its_close() {
    // The tracker going away between the kernel's lookup and the create call is a window
    // too narrow to hit: the mount fails its first two early calls on purpose.
    let c = Cluster::start(2);
    let env = [("SWARMFS_TEST_FAIL_EARLY_CREATES", "2")];
    let a = Mount::start_with_env(&c, &c.client_home(), "mnt", &[], &env);
    std::fs::write(a.dir.join("first"), b"the tracker confirms this mount's first create").unwrap();
    let mut f = std::fs::File::create(a.dir.join("made-late")).unwrap();
    f.write_all(b"renamed before the close").unwrap();
    std::fs::rename(a.dir.join("made-late"), a.dir.join("renamed")).expect("the rename makes the entry first");
    drop(f);
    assert_eq!(c.cli(&["cat", "/renamed"]).stdout, b"renamed before the close");
    let mut g = std::fs::File::create(a.dir.join("unlinked")).unwrap();
    std::fs::remove_file(a.dir.join("unlinked")).expect("the unlink of a file the tracker never had");
    g.write_all(b"written after the unlink").unwrap();
    drop(g);
    let listing = c.ok(&["ls", "/"]);
    assert!(
        listing.contains("renamed") && !listing.contains("unlinked") && !listing.contains("made-late"),
        "{listing}"
    );
    assert!(c.log("mnt").contains("an injected failure"), "both faults were used");
}

#[test]
fn a_small_file_whose_commit_making_its_entry_failed_lands_at_its_last_close_with_its_mode() {
    // The close's commit that makes a new file's entry (crates/fuse/src/creating.rs) failing
    // is as narrow a window as the create's call failing: the mount fails it on purpose.
    use std::os::unix::fs::OpenOptionsExt;
    let c = Cluster::start(2);
    let env = [("SWARMFS_TEST_FAIL_EARLY_CREATES", "1")];
    let a = Mount::start_with_env(&c, &c.client_home(), "mnt", &[], &env);
    std::fs::write(a.dir.join("first"), b"the tracker confirms this mount's first create").unwrap();
    let mut options = std::fs::OpenOptions::new();
    let mut f = options.write(true).create(true).truncate(true).mode(0o600).open(a.dir.join("kept")).unwrap();
    f.write_all(b"written before a failed close").unwrap();
    drop(f);
    // The last handle's release flushes again: the entry is made first, as the create asked.
    let landed = || {
        let out = c.cli(&["stat", "/kept", "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (st["size"].as_u64() == Some(29)).then_some(st)
    };
    let st = wait_for("the file after its last close", Duration::from_secs(10), landed);
    assert_eq!(st["mode"].as_str(), Some("600"), "the mode its create asked for: {st}");
    assert_eq!(c.cli(&["cat", "/kept"]).stdout, b"written before a failed close");
    assert!(c.log("mnt").contains("an injected failure"), "the fault was used");
}

#[test]
fn a_file_created_in_a_loop_shows_the_trackers_times_from_its_open_on_and_on_every_mount() {
    // pjdfstest's truncate::unchanged_ctime_failed caught a create answered early with the
    // mount's clock, its stats changing to the tracker's a second later.
    let c = Cluster::start(2);
    let a = Mount::start(&c, &c.client_home(), "mnt-a", &[]);
    let b = Mount::start(&c, &member_home(&c, "client-b"), "mnt-b", &[]);
    std::fs::write(a.dir.join("first"), b"the tracker confirms this mount's first create").unwrap();
    use std::os::unix::fs::MetadataExt;
    let times = |m: &std::fs::Metadata| (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    for i in 0..40 {
        let name = format!("t{i}");
        let f = std::fs::File::create(a.dir.join(&name)).unwrap();
        let open = times(&f.metadata().unwrap());
        drop(f);
        let closed = times(&std::fs::metadata(a.dir.join(&name)).unwrap());
        let elsewhere = times(&std::fs::metadata(b.dir.join(&name)).unwrap());
        assert_eq!(open, elsewhere, "{name}: stat while open on A, then on B");
        assert_eq!(closed, elsewhere, "{name}: stat after close on A, then on B");
    }
}

// The other side of answering a create early: its tracker call can fail after the open
// succeeded. Here another client removes the directory while A's kernel still holds its
// entry (for a second), so A's create of a name in it goes ahead; the close must fail,
// not claim a file the swarm does not have.
#[test]
fn a_create_in_a_directory_removed_meanwhile_fails_its_close_and_leaves_nothing() {
    let c = Cluster::start(1);
    let a = Mount::start(&c, &c.client_home(), "mnt", &["--replicas", "1"]);
    std::fs::write(a.dir.join("first"), b"the tracker confirms this mount's first create").unwrap();
    for attempt in 0..3 {
        let dir = format!("d{attempt}");
        std::fs::create_dir(a.dir.join(&dir)).unwrap();
        let made = std::time::Instant::now();
        c.ok(&["rm", &format!("/{dir}")]);
        if made.elapsed() > Duration::from_millis(700) {
            continue; // A's kernel may have dropped the directory's entry: try again
        }
        // Python's os.close reports what close(2) returns (Rust's File drops it).
        let script = "import os, sys\n\
                      fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)\n\
                      os.write(fd, b'x' * 4096)\n\
                      try:\n    os.close(fd)\nexcept OSError as e:\n    sys.exit(e.errno)\n";
        let out = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(a.dir.join(&dir).join("new"))
            .output()
            .expect("python3 (install-deps installs it)");
        assert_eq!(
            out.status.code(),
            Some(libc::ENOENT),
            "open and write succeed, the close fails with ENOENT: {}",
            stderr(&out)
        );
        let listing = c.ok(&["ls", "/"]);
        assert!(!listing.contains(&dir), "{listing}");
        return;
    }
    panic!("removing a directory took over 700 ms three times; the kernel's entry for it may have expired");
}
