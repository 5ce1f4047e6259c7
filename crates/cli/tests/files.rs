//! Storing and reading files through real processes.

mod common;

use common::{pattern, stderr, Cluster};

#[test]
fn put_get_is_byte_exact_at_chunk_boundaries() {
    let c = Cluster::start(3);
    for cs in [4096usize, 65536] {
        for (k, size) in [0, 1, cs - 1, cs, cs + 1, 5 * cs + 7].into_iter().enumerate() {
            let data = pattern(size, (cs + k) as u64);
            let local = c.path(&format!("in-{cs}-{size}"));
            std::fs::write(&local, &data).unwrap();
            let remote = format!("/sizes/{cs}/f{size}");
            c.ok(&["put", local.to_str().unwrap(), &remote, "--chunk-size", &cs.to_string()]);
            let back = c.path(&format!("out-{cs}-{size}"));
            c.ok(&["get", &remote, back.to_str().unwrap()]);
            assert_eq!(std::fs::read(&back).unwrap(), data, "size {size} chunk {cs}");
            let st: serde_json::Value = serde_json::from_str(&c.ok(&["stat", &remote, "--json"])).unwrap();
            assert_eq!(st["size"], size as u64);
            // Up to 4 KiB (and one chunk), a file is kept in its manifest: no chunks.
            let inline = size > 0 && size <= 4096.min(cs);
            assert_eq!(st["inline"], inline, "size {size} chunk {cs}");
            assert_eq!(st["chunks"], if inline { 0 } else { size.div_ceil(cs) as u64 });
        }
    }
}

#[test]
fn small_files_kept_in_their_manifest_read_back_with_every_peer_gone() {
    let mut c = Cluster::start(2);
    let put =
        |name: &str, len: usize, flags: &[&str]| c.put_pattern(name, &format!("/small/{name}"), len, len as u64, flags);
    let chunk_files = |c: &Cluster| (0..2).map(|i| c.chunk_files(i).len()).sum::<usize>();
    let tiny = put("tiny", 100, &[]);
    let page = put("page", 4096, &[]);
    assert_eq!(chunk_files(&c), 0, "files up to 4 KiB put nothing on the peers");
    put("over", 4097, &[]);
    put("chunked", 100, &["--inline-max", "0"]);
    put("bigger-limit", 10_000, &["--inline-max", "16K"]);
    let stat = |remote: &str| -> serde_json::Value {
        serde_json::from_str(&c.ok(&["stat", &format!("/small/{remote}"), "--json"])).unwrap()
    };
    for (name, inline, chunks) in
        [("tiny", true, 0), ("page", true, 0), ("over", false, 1), ("chunked", false, 1), ("bigger-limit", true, 0)]
    {
        let st = stat(name);
        assert_eq!((st["inline"].clone(), st["chunks"].clone()), (inline.into(), chunks.into()), "{name}: {st}");
    }
    assert_eq!(chunk_files(&c), 4, "two chunked files, two copies each");
    let human = c.ok(&["stat", "/small/tiny"]);
    assert!(human.contains("kept in its manifest"), "{human}");
    let out = c.cli(&["put", c.path("tiny").to_str().unwrap(), "/small/again"]);
    assert!(stderr(&out).contains("in its manifest"), "the put says where it went: {}", stderr(&out));
    let refused = c.cli(&["put", c.path("tiny").to_str().unwrap(), "/small/x", "--inline-max", "65K"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("at most 65536 bytes"), "{}", stderr(&refused));
    // The small files need no peer at all: every peer gone, they still read back.
    c.kill_peer(0);
    c.kill_peer(1);
    for (name, want) in [("tiny", &tiny), ("page", &page)] {
        let back = c.path(&format!("{name}.back"));
        c.ok(&["get", &format!("/small/{name}"), back.to_str().unwrap()]);
        assert_eq!(&std::fs::read(&back).unwrap(), want, "{name}");
    }
    let part = c.cli(&["cat", "/small/page", "--offset", "4000", "--length", "200"]);
    assert_eq!(part.stdout, &page[4000..], "{}", stderr(&part));
}

#[test]
fn cat_ranges_cross_chunk_boundaries() {
    let c = Cluster::start(2);
    let cs = 4096usize;
    let data = pattern(5 * cs + 7, 99);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/f", "--chunk-size", "4096"]);
    // An offset past the end is an error (outside.rs, usage_mistakes_exit_2...).
    let cases: [(usize, Option<usize>); 5] =
        [(0, None), (cs - 10, Some(20)), (3 * cs + 5, Some(2 * cs)), (5 * cs, None), (5 * cs + 7, Some(10))];
    for (off, len) in cases {
        let mut args = vec!["cat".to_string(), "/f".into(), "--offset".into(), off.to_string()];
        if let Some(l) = len {
            args.extend(["--length".into(), l.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = c.cli(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let start = off.min(data.len());
        let end = len.map(|l| (start + l).min(data.len())).unwrap_or(data.len());
        assert_eq!(out.stdout, &data[start..end], "offset {off} length {len:?}");
    }
}

#[test]
fn namespace_commands_and_json() {
    let c = Cluster::start(2);
    let local = c.path("note.txt");
    std::fs::write(&local, b"hello swarm\n").unwrap();
    c.ok(&["mkdir", "-p", "/docs/2026"]);
    c.ok(&["put", local.to_str().unwrap(), "/docs/2026/note.txt"]);
    let ls: serde_json::Value = serde_json::from_str(&c.ok(&["ls", "/docs", "--json"])).unwrap();
    assert_eq!(ls[0]["name"], "2026");
    assert_eq!(ls[0]["kind"], "dir");
    c.ok(&["mv", "/docs/2026", "/archive"]);
    assert_eq!(c.ok(&["cat", "/archive/note.txt"]), "hello swarm\n");
    let found: serde_json::Value = serde_json::from_str(&c.ok(&["search", "NOTE", "--json"])).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["path"], "/archive/note.txt");
    // get into an existing local directory keeps the remote name, like cp.
    let into = c.path("into");
    std::fs::create_dir(&into).unwrap();
    c.ok(&["get", "/archive/note.txt", into.to_str().unwrap()]);
    assert_eq!(std::fs::read(into.join("note.txt")).unwrap(), b"hello swarm\n");
    assert_eq!(std::fs::read_dir(&into).unwrap().count(), 1, "no partial file left behind");
    // A non-empty directory needs -r.
    let out = c.cli(&["rm", "/archive"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    c.ok(&["rm", "-r", "/archive"]);
    let out = c.cli(&["stat", "/archive/note.txt"]);
    assert_eq!(out.status.code(), Some(3), "unknown path exits 3");
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("no such file or directory"), "{err}");
}

#[test]
fn bad_input_gives_one_clear_line_and_nonzero_exit() {
    let c = Cluster::start(1);
    let local = c.path("x");
    std::fs::write(&local, b"x").unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["get", "/nope", "/tmp/never-written"], "no such file"),
        (&["put", "/definitely/not/here", "/a"], "No such file"),
        (&["put", local.to_str().unwrap(), "/a/../b"], "not allowed"),
        (&["put", local.to_str().unwrap(), "/a", "--chunk-size", "100"], "chunk size"),
        (&["cat", "/"], "is a directory"),
    ];
    for (args, want) in cases {
        let out = c.cli(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        assert!(err.starts_with("error: ") && err.lines().count() == 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // More replicas than peers: refused, unless --min-replicas allows fewer copies (for a
    // file past 4 KiB: a smaller one is kept in its manifest and needs no peer).
    let chunked = c.path("chunked");
    std::fs::write(&chunked, pattern(5000, 1)).unwrap();
    let out = c.cli(&["put", chunked.to_str().unwrap(), "/r", "--replicas", "3"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(c.cli(&["put", local.to_str().unwrap(), "/r", "--replicas", "3"]).status.success(), "a small file");
    let out = c.cli(&["put", chunked.to_str().unwrap(), "/r", "--replicas", "3", "--min-replicas", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("only 1 live peer"), "{}", stderr(&out));
}

#[test]
fn no_live_peers_and_unreachable_tracker_fail_clearly() {
    let mut c = Cluster::start(1);
    let local = c.path("x");
    std::fs::write(&local, pattern(5000, 2)).unwrap();
    c.kill_peer(0);
    common::wait_for("peer down", std::time::Duration::from_secs(10), || (c.up_count() == 0).then_some(()));
    let out = c.cli(&["put", local.to_str().unwrap(), "/x"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("no live peers"), "{}", stderr(&out));
    assert_eq!(c.cli(&["stat", "/x"]).status.code(), Some(3), "a failed put leaves nothing visible");
    // A file small enough to be kept in its manifest needs no peer.
    std::fs::write(&local, b"data").unwrap();
    c.ok(&["put", local.to_str().unwrap(), "/small"]);
    assert_eq!(c.ok(&["cat", "/small"]), "data");
    c.kill_tracker();
    let out = c.cli(&["ls"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains("cannot reach the tracker"), "{}", stderr(&out));
}

#[test]
fn ls_long_shows_mode_size_time_and_name_like_ls_and_tiny_puts_show_no_rate() {
    let c = Cluster::start(1);
    let (big, small) = (c.path("big.bin"), c.path("small.txt"));
    std::fs::write(&big, pattern(3 << 19, 8)).unwrap();
    std::fs::write(&small, b"hi\n").unwrap();
    c.ok(&["mkdir", "/dir"]);
    c.ok(&["put", big.to_str().unwrap(), "/big.bin", "--replicas", "1"]);
    let out = c.cli(&["put", small.to_str().unwrap(), "/small.txt", "--replicas", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains("stored /small.txt: 3 B in its manifest, on the tracker (a small file)\n"),
        "no rate: {said}"
    );
    let out = c.cli(&["put", small.to_str().unwrap(), "/dir/chunked.txt", "--replicas", "1", "--inline-max", "0"]);
    assert!(stderr(&out).contains("stored /dir/chunked.txt: 3 B in 1 chunk × 1 replica\n"), "{}", stderr(&out));
    let is_time = |t: &str| {
        let b = t.as_bytes();
        t.len() == 23 && t.ends_with(" UTC") && b[4] == b'-' && b[7] == b'-' && b[13] == b':' && b[16] == b':'
    };
    let long = c.ok(&["ls", "-l", "/"]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 3, "{long}");
    for (line, mode, size, name) in [
        (lines[0], "-rw-r--r--", "1572864", "big.bin"),
        (lines[1], "drwxr-xr-x", "-", "dir/"),
        (lines[2], "-rw-r--r--", "3", "small.txt"),
    ] {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((fields[0], fields[1], fields[5]), (mode, size, name), "{line}");
        assert!(is_time(&fields[2..5].join(" ")), "{line}");
    }
    let human = c.ok(&["ls", "-lh", "/"]);
    assert!(human.lines().next().unwrap().contains(" 1.5 MiB "), "{human}");
    // -h means human-readable here, as in ls; --help still helps.
    assert!(c.ok(&["ls", "--help"]).contains("--long"));
    let stat = c.ok(&["stat", "/big.bin"]);
    assert!(stat.contains("mode:   -rw-r--r-- (644)"), "{stat}");
    assert!(stat.lines().any(|l| l.starts_with("mtime:  ") && is_time(&l[8..])), "{stat}");
    assert!(stat.contains("copies: 1 wanted per chunk, at least 1 live for each"), "{stat}");
}

#[test]
fn config_toml_sits_below_env_and_flags_and_a_bad_line_is_named() {
    let c = Cluster::start(1);
    let home = c.client_home();
    let with_env = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(args).arg("--home").arg(&home).envs(env.iter().copied());
        cmd.output().unwrap()
    };
    std::fs::write(home.join("config.toml"), "# this member's defaults\njson = true  # for scripts\n").unwrap();
    // From the file: JSON without the flag.
    let out = with_env(&[], &["peers"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from the config file");
    assert_eq!(v.as_array().unwrap().len(), 1);
    // The environment wins over the file.
    let out = with_env(&[("SWARMFS_JSON", "false")], &["peers"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NODE"), "{}", stderr(&out));
    // A setting no flag has is refused, naming the file and the line; nothing runs.
    std::fs::write(home.join("config.toml"), "json = true\nlisten-everywhere = 1\n").unwrap();
    let out = with_env(&[], &["peers"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("config.toml line 2") && err.contains("no setting \"listen-everywhere\""), "{err}");
    std::fs::remove_file(home.join("config.toml")).unwrap();
    // Shell completions and the version.
    for shell in ["bash", "zsh", "fish"] {
        let script = c.ok(&["completions", shell]);
        assert!(script.contains("swarmfs") && script.contains("mount"), "{shell}: {script}");
    }
    let version = c.ok(&["--version"]);
    assert_eq!(version.trim(), format!("swarmfs {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn put_preserve_keeps_the_local_files_mode_and_modification_time() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(1);
    let local = c.path("old.txt");
    std::fs::write(&local, b"kept as it was\n").unwrap();
    std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o640)).unwrap();
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_577_836_800_123); // 2020-01-01
    std::fs::File::options().write(true).open(&local).unwrap().set_modified(then).unwrap();
    c.ok(&["put", "--preserve", local.to_str().unwrap(), "/kept.txt", "--replicas", "1"]);
    c.ok(&["put", local.to_str().unwrap(), "/plain.txt", "--replicas", "1"]);
    let stat = |p: &str| serde_json::from_str::<serde_json::Value>(&c.ok(&["stat", p, "--json"])).unwrap();
    let (kept, plain) = (stat("/kept.txt"), stat("/plain.txt"));
    assert_eq!(kept["mtime_ms"], 1_577_836_800_123i64, "{kept}");
    assert_eq!(kept["mode"], "640", "{kept}");
    assert!(plain["mtime_ms"].as_i64().unwrap() > 1_700_000_000_000, "without -p: the time of the put");
    assert_eq!(plain["mode"], "644", "without -p: the default mode");
    // From stdin there is nothing to keep: a usage error.
    let out = c.cli(&["put", "--preserve", "-", "/stdin.txt"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn put_r_and_get_r_copy_a_whole_tree_in_one_process_and_name_what_failed() {
    let c = Cluster::start(2);
    let tree = c.path("tree");
    let mut want = Vec::new();
    for (i, rel) in ["a.bin", "empty", "sub/b.bin", "sub/deeper/c.bin", "sub/deeper/d.bin"].into_iter().enumerate() {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let data = if rel == "empty" { Vec::new() } else { pattern(3000 + 5000 * i, i as u64) };
        std::fs::write(&p, &data).unwrap();
        want.push((rel, data));
    }
    std::fs::create_dir_all(tree.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("a.bin", tree.join("link")).unwrap();
    let out = c.cli(&["put", "-r", tree.to_str().unwrap(), "/t", "--chunk-size", "4096", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["files"], 5, "regular files only: {summary}");
    assert_eq!(summary["ok"], 5);
    assert!(stderr(&out).contains("skipping") && stderr(&out).contains("link"), "{}", stderr(&out));
    let ls: serde_json::Value = serde_json::from_str(&c.ok(&["ls", "/t", "--json"])).unwrap();
    let names: Vec<&str> = ls.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.bin", "empty", "empty-dir", "sub"], "directories are made, empty ones too");

    let back = c.path("back");
    c.ok(&["get", "-r", "/t", back.to_str().unwrap()]);
    for (rel, data) in &want {
        assert_eq!(&std::fs::read(back.join(rel)).unwrap(), data, "{rel}");
    }
    assert!(back.join("empty-dir").is_dir());

    // A file that cannot be written locally fails alone, by name; the others still arrive.
    let partial = c.path("partial");
    std::fs::create_dir_all(partial.join("sub/b.bin")).unwrap();
    let out = c.cli(&["get", "-r", "/t", partial.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 of 5 files failed") && stderr(&out).contains("/t/sub/b.bin"), "{}", stderr(&out));
    assert_eq!(std::fs::read(partial.join("sub/deeper/c.bin")).unwrap(), want[3].1);
    // Not a directory on either side: a usage error.
    let out = c.cli(&["put", "-r", tree.join("a.bin").to_str().unwrap(), "/x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = c.cli(&["get", "-r", "/t/a.bin", partial.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn bench_prints_every_row_next_to_its_same_run_baseline() {
    // The short variant of `swarmfs bench` (README, "Benchmark"): a small file, one round.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let work = dir.path().join("work");
    let args = ["bench", "--size", "8M", "--rounds", "1", "--peers", "3", "--json", "--dir", work.to_str().unwrap()];
    let out = common::run(&home, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["nc_pipe_mb_s", "put_mb_s", "get_mb_s", "put_vs_nc", "get_vs_nc"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {r}");
    }
    // CPU time is counted in 10 ms ticks: 8 MiB through nc may take none, and a ratio to
    // nothing is null rather than infinite.
    for key in ["nc_pipe_cpu_s_per_gib", "get_client_cpu_s_per_gib", "put_peers_cpu_s_per_gib"] {
        assert!(r[key].as_f64().is_some_and(|v| v >= 0.0), "{key} in {r}");
    }
    for key in ["get_cpu_vs_nc", "put_cpu_vs_nc"] {
        assert!(r[key].is_null() || r[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {r}");
    }
    assert_eq!(r["verified"], true);
    // The BitTorrent baseline: its figures when rqbit is installed, null when it is not.
    match r["rqbit"].as_object() {
        Some(bt) => assert!(bt["mb_s"].as_f64().is_some_and(|v| v > 0.0), "rqbit in {r}"),
        None => assert!(r.get("rqbit").is_some_and(|v| v.is_null()), "rqbit in {r}"),
    }
    let many = &r["many_files"];
    assert_eq!(many["files"], 1000);
    assert!(many["put_r_files_per_s"].as_f64().unwrap() > 0.0 && many["cp_r_files_per_s"].as_f64().unwrap() > 0.0);
    // The text form is one table: a header, then each row with its ratio and goal.
    let out = common::run(&home, &args[..args.len() - 3]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("baseline (same run)") && text.contains("nc pipe"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("get MB/s") && l.contains("x  >= 0.8x")), "{text}");
}

#[test]
fn put_r_and_get_r_of_many_big_files_stay_within_the_clients_memory_bound() {
    let c = Cluster::start(2);
    let tree = c.path("big-tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..16u64 {
        std::fs::write(tree.join(format!("f{i}")), pattern(8 << 20, 40 + i)).unwrap();
    }
    // 16 files at once (the default --jobs), each one 8 chunks: every file's window full
    // at once would hold about 160 MiB.
    let peak = |cmd: &str, args: &[&str]| {
        let usage = c.path(&format!("{cmd}-usage.json"));
        let mut all = args.to_vec();
        all.extend(["--usage-file", usage.to_str().unwrap()]);
        c.ok(&all);
        let u: serde_json::Value = serde_json::from_slice(&std::fs::read(&usage).unwrap()).unwrap();
        u["peak_rss_bytes"].as_u64().unwrap()
    };
    let put = peak("put", &["put", "-r", tree.to_str().unwrap(), "/big-tree", "--quiet"]);
    let back = c.path("big-back");
    let get = peak("get", &["get", "-r", "/big-tree", back.to_str().unwrap(), "--quiet"]);
    for i in 0..16u64 {
        assert!(std::fs::read(back.join(format!("f{i}"))).unwrap() == pattern(8 << 20, 40 + i), "f{i} reads back");
    }
    for (what, bytes) in [("put -r", put), ("get -r", get)] {
        assert!(bytes <= 64 << 20, "{what} of 16 files of 8 MiB peaked at {} MiB of RSS", bytes >> 20);
    }
}
