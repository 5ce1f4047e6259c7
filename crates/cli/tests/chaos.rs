//! The chaos test: 5 peers, R=2, random puts (0 B to 8 MiB), overwrites, gets compared with
//! what was acknowledged, rm and mv, while a fault loop kills -9 and restarts peers, stops
//! them (SIGSTOP), corrupts stored chunks and kills -9 the tracker, never more than one peer
//! down at once, with repair at a short --repair-after. Once the faults stop and the swarm
//! has healed, every acknowledged file must read back byte-exact: one byte lost fails it.
//!
//! The suite runs it for `SWARMFS_CHAOS_SECS` (default 150 s); `scripts/chaos --minutes N`
//! runs it longer. `SWARMFS_CHAOS_SEED` replays a run's choices (the seed is printed).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pattern, stderr, wait_for, Cluster};

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A file's content, regenerated from its recipe when needed (the model holds no bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Content {
    len: usize,
    seed: u64,
}

impl Content {
    fn bytes(self) -> Vec<u8> {
        pattern(self.len, self.seed)
    }
}

/// What a path may hold. A command that failed may or may not have taken effect (the
/// tracker may have committed before it was killed), so each path holds every state it may
/// be in; `None` is "absent". A successful read narrows it to what was read.
#[derive(Default)]
struct Model {
    paths: HashMap<String, Vec<Option<Content>>>,
}

impl Model {
    fn set(&mut self, path: &str, c: Option<Content>, certain: bool) {
        let states = self.paths.entry(path.to_string()).or_insert_with(|| vec![None]);
        if certain {
            *states = vec![c];
        } else if !states.contains(&c) {
            states.push(c);
        }
    }

    fn existing(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.paths.iter().filter(|(_, s)| s.iter().any(Option::is_some)).map(|(p, _)| p.clone()).collect();
        v.sort();
        v
    }
}

#[derive(Default)]
struct Faults {
    peer_kills: AtomicU64,
    peer_stops: AtomicU64,
    corruptions: AtomicU64,
    tracker_kills: AtomicU64,
}

impl Faults {
    fn total(&self) -> u64 {
        [&self.peer_kills, &self.peer_stops, &self.corruptions, &self.tracker_kills]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

fn sleep_ms(rng: &mut Rng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(lo + rng.below(hi - lo)));
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Corrupts one chunk file on peer `i`, only when another running peer holds a sound copy
/// of it (two bad copies of one chunk is a double fault, which R=2 does not promise to
/// survive).
fn corrupt_one(c: &Cluster, i: usize, rng: &mut Rng) -> bool {
    let files = c.chunk_files(i);
    if files.is_empty() {
        return false;
    }
    let victim = &files[rng.below(files.len() as u64) as usize];
    let name = victim.file_name().unwrap().to_owned();
    let sound_elsewhere = (0..c.peer_count()).filter(|&j| j != i).any(|j| {
        let p =
            c.peer_home(j).join("store/chunks").join(victim.strip_prefix(c.peer_home(i).join("store/chunks")).unwrap());
        c.peer_running(j)
            && std::fs::read(&p).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == name.to_str().unwrap())
    });
    if !sound_elsewhere {
        return false;
    }
    let Ok(mut bytes) = std::fs::read(victim) else { return false };
    if bytes.is_empty() {
        return false;
    }
    let at = rng.below(bytes.len() as u64) as usize;
    bytes[at] ^= 0x5a;
    std::fs::write(victim, &bytes).is_ok()
}

fn fault_loop(c: Arc<Mutex<Cluster>>, stop: Arc<AtomicBool>, faults: Arc<Faults>, seed: u64) {
    let mut rng = Rng(seed ^ 0xfa17);
    while !stop.load(Ordering::Relaxed) {
        sleep_ms(&mut rng, 1500, 3500);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let peers = c.lock().unwrap().peer_count();
        let i = rng.below(peers as u64) as usize;
        match rng.below(10) {
            // kill -9 a peer, restart it a few seconds later (sometimes past --repair-after).
            0..=3 => {
                c.lock().unwrap().kill_peer(i);
                faults.peer_kills.fetch_add(1, Ordering::Relaxed);
                sleep_ms(&mut rng, 1000, 6000);
                c.lock().unwrap().start_peer(i);
            }
            // SIGSTOP: a peer that hangs without closing its connections.
            4..=5 => {
                let pid = c.lock().unwrap().peer_pid(i);
                signal(pid, "STOP");
                faults.peer_stops.fetch_add(1, Ordering::Relaxed);
                sleep_ms(&mut rng, 500, 4000);
                signal(pid, "CONT");
            }
            6..=7 => {
                if corrupt_one(&c.lock().unwrap(), i, &mut rng) {
                    faults.corruptions.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                c.lock().unwrap().kill_tracker();
                faults.tracker_kills.fetch_add(1, Ordering::Relaxed);
                sleep_ms(&mut rng, 300, 2500);
                c.lock().unwrap().start_tracker();
            }
        }
    }
}

/// Runs a client command without holding the cluster lock for its duration.
fn client(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(common::BIN)
        .args(args)
        .arg("--home")
        .arg(home)
        .env("SWARMFS_LOG", "error")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[derive(Default, Debug)]
struct Ops {
    done: u64,
    failed: u64,
    bytes_put: u64,
    bytes_checked: u64,
    /// Why commands failed (their message, without paths and ids), most common first at the end.
    why: HashMap<String, u64>,
}

impl Ops {
    fn count(&mut self, out: &std::process::Output) -> bool {
        if out.status.success() {
            self.done += 1;
            return true;
        }
        self.failed += 1;
        // Mostly the tracker being down: give it a moment rather than spin on refusals.
        std::thread::sleep(Duration::from_millis(100));
        let msg = stderr(out);
        let line = msg.lines().last().unwrap_or("").to_string();
        // Group by the message's shape: digits and paths vary.
        let shape: String = line.chars().filter(|c| !c.is_ascii_digit()).take(90).collect();
        *self.why.entry(shape).or_default() += 1;
        false
    }
}

#[test]
fn chaos_no_acknowledged_byte_is_lost() {
    let secs: u64 = std::env::var("SWARMFS_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let seed: u64 = std::env::var("SWARMFS_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("chaos: {secs} s, seed {seed} (SWARMFS_CHAOS_SEED={seed} replays the choices)");
    let tracker_flags =
        ["--repair-after", "3", "--peer-timeout", "2", "--gc-delay", "5", "--orphan-delay", "8", "--repair-rate", "0"];
    let peer_flags = ["--heartbeat-ms", "300", "--scrub-rate", "20M"];
    let cluster = Cluster::start_with(5, "4G", &tracker_flags, &peer_flags);
    let home = cluster.client_home();
    let scratch = cluster.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let c = Arc::new(Mutex::new(cluster));
    let (stop, faults) = (Arc::new(AtomicBool::new(false)), Arc::new(Faults::default()));
    let chaos = {
        let (c, stop, faults) = (c.clone(), stop.clone(), faults.clone());
        std::thread::Builder::new().name("faults".into()).spawn(move || fault_loop(c, stop, faults, seed)).unwrap()
    };
    let mut rng = Rng(seed);
    let mut model = Model::default();
    let mut ops = Ops::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let local = scratch.join("in");
    let back = scratch.join("back");
    while Instant::now() < deadline {
        let existing = model.existing();
        let pick = |rng: &mut Rng| existing[rng.below(existing.len() as u64) as usize].clone();
        let op = if existing.len() < 3 { 0 } else { rng.below(10) };
        match op {
            // put a new file, or overwrite one (0 B to 8 MiB, some on chunk boundaries).
            0..=3 => {
                let path =
                    if op == 3 && !existing.is_empty() { pick(&mut rng) } else { format!("/f{}", rng.below(60)) };
                let len = match rng.below(4) {
                    0 => rng.below(4096) as usize,
                    1 => (rng.below(8) as usize + 1) << 20,
                    _ => rng.below(8 << 20) as usize,
                };
                let content = Content { len, seed: rng.next() };
                std::fs::write(&local, content.bytes()).unwrap();
                let out = client(&home, &["put", local.to_str().unwrap(), &path, "--chunk-size", "256K"]);
                let ok = ops.count(&out);
                model.set(&path, Some(content), ok);
                if ok {
                    ops.bytes_put += len as u64;
                }
            }
            // get and compare with what may be there.
            4..=6 => {
                let path = pick(&mut rng);
                let out = client(&home, &["get", &path, back.to_str().unwrap()]);
                let absent = out.status.code() == Some(3);
                if absent && model.paths.get(&path).is_some_and(|s| s.contains(&None)) {
                    // A failed rm or mv had taken effect after all.
                    model.set(&path, None, true);
                }
                if ops.count(&out) {
                    let got = std::fs::read(&back).unwrap();
                    let states = model.paths.get(&path).unwrap();
                    let matched = states.iter().flatten().find(|c| c.len == got.len() && c.bytes() == got).copied();
                    assert!(
                        matched.is_some(),
                        "{path}: read {} bytes that match no version ever acknowledged or attempted ({states:?}); seed {seed}",
                        got.len()
                    );
                    ops.bytes_checked += got.len() as u64;
                    model.set(&path, matched, true);
                }
            }
            7..=8 => {
                let (from, to) = (pick(&mut rng), format!("/f{}", rng.below(60)));
                let out = client(&home, &["mv", &from, &to]);
                let moved = model.paths.get(&from).cloned().unwrap_or_default();
                if ops.count(&out) {
                    if from != to {
                        model.paths.insert(to, moved);
                        model.paths.insert(from, vec![None]);
                    }
                } else {
                    // Either moved or not: each path may hold what either did.
                    for s in moved {
                        model.set(&to, s, false);
                    }
                    model.set(&from, None, false);
                }
            }
            _ => {
                let path = pick(&mut rng);
                let out = client(&home, &["rm", &path]);
                let absent = out.status.code() == Some(3) && model.paths.get(&path).is_some_and(|s| s.contains(&None));
                let ok = ops.count(&out);
                model.set(&path, None, ok || absent);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    chaos.join().unwrap();
    let c = Arc::try_unwrap(c).ok().expect("the fault loop has ended").into_inner().unwrap();
    // Every peer runs again; the swarm heals; then every file is checked.
    for i in 0..c.peer_count() {
        signal(c.peer_pid(i), "CONT");
    }
    c.wait_up(5);
    let healed = Instant::now();
    let h = wait_for("the swarm to heal after the chaos", Duration::from_secs(120), || {
        let h = c.health()?;
        let ch = &h["chunks"];
        (ch["under_replicated"] == 0 && ch["repairing"] == 0 && ch["lost"] == 0).then_some(h)
    });
    let mut lost_bytes = 0u64;
    let mut checked = 0u64;
    for path in model.existing() {
        let states = &model.paths[&path];
        let out = client(&home, &["get", &path, back.to_str().unwrap()]);
        if !out.status.success() {
            // Absent is fine only where a failed rm or mv may have taken effect.
            let absent_allowed = states.contains(&None) && out.status.code() == Some(3);
            if !absent_allowed {
                lost_bytes += states.iter().flatten().map(|c| c.len as u64).max().unwrap_or(0);
                eprintln!("LOST {path}: {}", stderr(&out));
            }
            continue;
        }
        let got = std::fs::read(&back).unwrap();
        if !states.iter().flatten().any(|c| c.len == got.len() && c.bytes() == got) {
            lost_bytes += got.len() as u64;
            eprintln!("WRONG {path}: {} bytes match no version ({states:?})", got.len());
        }
        checked += got.len() as u64;
    }
    eprintln!(
        "chaos: {} ops ({} more failed under faults), {:.1} MiB put, {:.1} MiB compared during the run; {} faults \
         ({} peer kills, {} peer stops, {} corruptions, {} tracker kills); healed in {:.1} s ({} chunks repaired since the last tracker start); \
         {} files, {:.1} MiB verified at the end; {lost_bytes} bytes lost",
        ops.done,
        ops.failed,
        ops.bytes_put as f64 / 1048576.0,
        ops.bytes_checked as f64 / 1048576.0,
        faults.total(),
        faults.peer_kills.load(Ordering::Relaxed),
        faults.peer_stops.load(Ordering::Relaxed),
        faults.corruptions.load(Ordering::Relaxed),
        faults.tracker_kills.load(Ordering::Relaxed),
        healed.elapsed().as_secs_f64(),
        h["repair"]["repaired_chunks"],
        model.existing().len(),
        checked as f64 / 1048576.0,
    );
    let mut why: Vec<_> = ops.why.iter().collect();
    why.sort_by(|a, b| b.1.cmp(a.1));
    for (msg, n) in why.iter().take(6) {
        eprintln!("  {n:>5} × {msg}");
    }
    assert_eq!(lost_bytes, 0, "acknowledged bytes were lost; seed {seed}");
    assert!(faults.total() > 0 && ops.done > 0, "the run did something");
}
