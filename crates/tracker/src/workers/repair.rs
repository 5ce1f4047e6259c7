//! Repair: every chunk a committed file references is kept at its file's R.
//!
//! Each step reads one snapshot (files, R, chunks, holders) and the live membership, and
//! sorts every chunk into healthy, under-replicated or lost ([`assess`], which `health`
//! uses too). A copy on a peer that has been down for less than `--repair-after` still
//! counts as coming back; after that, or once the peer has left, it is replaced. A copy on a
//! draining peer never counts, so draining moves exactly the chunks that would otherwise
//! fall below R. Orders go most endangered first (fewest copies left): the target peer
//! fetches the chunk from a surviving holder, verifies its hash and makes it durable before
//! it answers, and only then does the tracker record the new location. The tracker moves no
//! chunk bytes. Orders run a few at a time and are paced to `--repair-rate`, so users' reads
//! and writes keep most of the bandwidth.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use swarmfs_net::task::{RateLimiter, Step, Worker};
use swarmfs_proto::{ChunkId, HealthReport, NodeId, PeerHealth, PeerInfo, PeerState, Reach, Request, Response};
use tracing::{info, warn};

use crate::db::RepairView;
use crate::registry::PeerView;
use crate::Tracker;

/// Most lost files `health` names.
const LOST_FILES_SHOWN: usize = 1000;
/// Most orders one step issues before it looks at the swarm again.
const ORDERS_PER_STEP: usize = 256;
/// How long a target peer may take to copy one chunk.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// Repair counters shared with `health`.
#[derive(Default)]
pub struct RepairStats {
    pub in_flight: AtomicU64,
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    /// Bytes copied in the last few seconds, for the rate `health` shows.
    recent: Mutex<VecDeque<(Instant, u64)>>,
}

/// The window the repair rate is averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl RepairStats {
    fn copied(&self, bytes: u64) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut r = self.recent.lock().expect("rate window");
        r.push_back((Instant::now(), bytes));
        while r.front().is_some_and(|(t, _)| t.elapsed() > RATE_WINDOW) {
            r.pop_front();
        }
    }

    pub fn rate_bps(&self) -> u64 {
        let mut r = self.recent.lock().expect("rate window");
        while r.front().is_some_and(|(t, _)| t.elapsed() > RATE_WINDOW) {
            r.pop_front();
        }
        let bytes: u64 = r.iter().map(|(_, b)| b).sum();
        (bytes as f64 / RATE_WINDOW.as_secs_f64()) as u64
    }
}

/// How a holder's copy counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Holder {
    /// Up and not draining: counts towards R and serves.
    Counts,
    /// Draining: serves, does not count.
    Serves,
    /// Down for less than `--repair-after`: expected back, so not replaced yet.
    Expected,
    /// Down for longer, left, or unknown: replaced.
    Gone,
}

fn classify(peers: &[PeerView], repair_after: Duration) -> HashMap<NodeId, Holder> {
    peers
        .iter()
        .map(|p| {
            let h = match p.info.state {
                PeerState::Up => Holder::Counts,
                PeerState::Draining => Holder::Serves,
                PeerState::Down if p.down_for.unwrap_or_default() < repair_after => Holder::Expected,
                PeerState::Down | PeerState::Left => Holder::Gone,
            };
            (p.info.node, h)
        })
        .collect()
}

/// A chunk that needs more copies now.
#[derive(Clone, Debug)]
pub struct Need {
    pub chunk: ChunkId,
    /// Copies to add.
    pub copies: usize,
    pub approx_len: u64,
    /// Peers to fetch it from: those that count first, draining ones after.
    pub sources: Vec<PeerInfo>,
    /// Every recorded holder, never chosen as a target.
    pub holders: Vec<NodeId>,
    /// Copies that count or are expected back: the fewer, the sooner.
    pub left: usize,
}

/// The swarm's health, and what to repair, most endangered first.
pub fn assess(view: &RepairView, peers: &[PeerView], repair_after: Duration) -> (HealthReport, Vec<Need>) {
    let class = classify(peers, repair_after);
    let info: HashMap<NodeId, &PeerInfo> = peers.iter().map(|p| (p.info.node, &p.info)).collect();
    let mut report = HealthReport { repair_after_ms: repair_after.as_millis() as u64, ..Default::default() };
    let mut sole: HashMap<NodeId, u64> = HashMap::new();
    // Per chunk: 0 healthy, 1 under-replicated, 2 lost.
    let mut state = Vec::with_capacity(view.chunks.len());
    let mut needs = Vec::new();
    for (i, chunk) in view.chunks.iter().enumerate() {
        if view.wanted[i] == 0 {
            // Only shared files use it: served by their sharers, nothing to repair.
            report.chunks.shared += 1;
            state.push(0);
            continue;
        }
        let wanted = view.wanted[i] as usize;
        let holders = &view.holders[i];
        let of = |h: Holder| holders.iter().filter(|n| class.get(n).copied().unwrap_or(Holder::Gone) == h).count();
        let (counts, serves, expected) = (of(Holder::Counts), of(Holder::Serves), of(Holder::Expected));
        let s = if counts + serves == 0 {
            report.chunks.lost += 1;
            2
        } else if counts >= wanted {
            report.chunks.healthy += 1;
            0
        } else {
            report.chunks.under_replicated += 1;
            1
        };
        state.push(s);
        for n in holders {
            let c = class.get(n).copied().unwrap_or(Holder::Gone);
            let others = counts - usize::from(c == Holder::Counts);
            if matches!(c, Holder::Counts | Holder::Serves) && others < wanted {
                *sole.entry(*n).or_default() += 1;
            }
        }
        let copies = wanted.saturating_sub(counts + expected);
        if copies > 0 && counts + serves > 0 {
            let mut sources: Vec<(Holder, PeerInfo)> = holders
                .iter()
                .filter_map(|n| {
                    let c = class.get(n).copied()?;
                    let p = info.get(n)?;
                    matches!(c, Holder::Counts | Holder::Serves).then(|| (c, (*p).clone()))
                })
                .collect();
            sources.sort_by_key(|(c, _)| *c != Holder::Counts);
            needs.push(Need {
                chunk: *chunk,
                copies,
                approx_len: view.approx_len[i],
                sources: sources.into_iter().map(|(_, p)| p).collect(),
                holders: holders.clone(),
                left: counts + expected,
            });
        }
    }
    for f in &view.files {
        if f.replicas == 0 {
            report.files.shared += 1;
            continue;
        }
        let worst = f.chunks.iter().map(|&c| state[c as usize]).max().unwrap_or(0);
        match worst {
            0 => report.files.healthy += 1,
            1 => report.files.under_replicated += 1,
            _ => {
                report.files.lost += 1;
                if report.lost_files.len() < LOST_FILES_SHOWN {
                    report.lost_files.push(f.path.clone());
                }
            }
        }
        if worst > 0 {
            report.bytes_at_risk += f.size;
        }
    }
    report.lost_files.sort();
    report.peers = peers
        .iter()
        .map(|p| PeerHealth {
            node: p.info.node,
            state: p.info.state,
            down_for_ms: p.down_for.map(|d| d.as_millis() as u64),
            sole_copies: sole.get(&p.info.node).copied().unwrap_or(0),
        })
        .collect();
    needs.sort_by_key(|n| (n.left, std::cmp::Reverse(n.copies)));
    report.repair_queued = needs.iter().map(|n| n.copies as u64).sum();
    (report, needs)
}

/// Picks `n` targets for `need`: peers that count, hold no copy, and have room, the most
/// free space first (after what this step already sent their way); equal room is broken by
/// a hash of chunk and node, so concurrent repairs of many chunks spread out.
fn targets(need: &Need, peers: &[PeerView], assigned: &HashMap<NodeId, u64>, n: usize) -> Vec<PeerInfo> {
    let mut candidates: Vec<(u64, [u8; 32], &PeerInfo)> = peers
        .iter()
        .filter(|p| p.info.state == PeerState::Up && !need.holders.contains(&p.info.node))
        .filter_map(|p| {
            let used = p.info.used + assigned.get(&p.info.node).copied().unwrap_or(0);
            let free = p.info.capacity.saturating_sub(used);
            (free >= need.approx_len).then(|| {
                let mut h = blake3::Hasher::new();
                h.update(need.chunk.as_bytes());
                h.update(p.info.node.as_bytes());
                (free, *h.finalize().as_bytes(), &p.info)
            })
        })
        .collect();
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates.into_iter().take(n).map(|(_, _, p)| p.clone()).collect()
}

pub struct Repairer {
    tracker: Arc<Tracker>,
    pacer: Arc<RateLimiter>,
    failed: u64,
    /// When "no peer can take a copy" was last logged, so it is said once a minute at most.
    no_target_logged: Option<Instant>,
    last: String,
}

impl Repairer {
    pub fn new(tracker: Arc<Tracker>) -> Repairer {
        let rate = tracker.config.repair_rate;
        Repairer {
            tracker,
            pacer: Arc::new(RateLimiter::new(rate)),
            failed: 0,
            no_target_logged: None,
            last: "no repair needed yet".into(),
        }
    }
}

impl Worker for Repairer {
    fn name(&self) -> String {
        "repair".into()
    }

    fn idle_period(&self) -> Duration {
        (self.tracker.config.repair_after / 4).clamp(Duration::from_millis(500), Duration::from_secs(5))
    }

    async fn step(&mut self) -> Result<Step, String> {
        let t = self.tracker.clone();
        // With several trackers, one repairs for all (see mesh.rs).
        if !t.leadership.leads() {
            self.last = "standby: another tracker repairs".into();
            return Ok(Step::Idle);
        }
        let view = t.db(|db| db.repair_view()).await.map_err(|e| e.to_string())?;
        let peers = t.registry.views();
        let (_, needs) = assess(&view, &peers, t.config.repair_after);
        if needs.is_empty() {
            return Ok(Step::Idle);
        }
        // One order per (chunk, target), planned before any is sent.
        let mut assigned: HashMap<NodeId, u64> = HashMap::new();
        let mut orders = Vec::new();
        let mut stuck = 0usize;
        for need in &needs {
            if orders.len() >= ORDERS_PER_STEP {
                break;
            }
            let chosen = targets(need, &peers, &assigned, need.copies);
            if chosen.len() < need.copies {
                stuck += 1;
            }
            for target in chosen {
                *assigned.entry(target.node).or_default() += need.approx_len;
                orders.push((need.chunk, need.approx_len, target, need.sources.clone()));
            }
        }
        if stuck > 0 && self.no_target_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
            self.no_target_logged = Some(Instant::now());
            warn!(
                chunks = stuck,
                "under-replicated chunks have no peer that can take another copy (too few live peers with room)"
            );
        }
        if orders.is_empty() {
            self.last = format!("{} chunks need copies; no peer can take one", needs.len());
            return Ok(Step::Idle);
        }
        let started = Instant::now();
        let (count, concurrency) = (orders.len(), t.config.repair_concurrency.max(1));
        info!(orders = count, under_replicated = needs.len(), "repair: ordering copies");
        let pacer = self.pacer.clone();
        let failures: HashSet<String> = stream::iter(orders)
            .map(|(chunk, len, target, sources)| {
                let (t, pacer) = (t.clone(), pacer.clone());
                async move {
                    pacer.admit(len).await;
                    t.repair.in_flight.fetch_add(1, Ordering::Relaxed);
                    let r = order(&t, chunk, &target, sources).await;
                    t.repair.in_flight.fetch_sub(1, Ordering::Relaxed);
                    r.err().map(|e| format!("{} to {}: {e}", chunk.short(), target.node.short()))
                }
            })
            .buffer_unordered(concurrency)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        self.failed += failures.len() as u64;
        let done = count - failures.len();
        self.last = format!("last round: {done} of {count} copies made in {:.1} s", started.elapsed().as_secs_f64());
        if let Some(example) = failures.iter().next() {
            warn!(failed = failures.len(), "repair orders failed (retried next round), e.g. {example}");
        }
        if done == 0 {
            return Err(format!("every repair order failed, e.g. {}", failures.iter().next().expect("non-empty")));
        }
        info!(copies = done, secs = started.elapsed().as_secs_f64(), "repair round finished");
        Ok(Step::Busy)
    }

    fn detail(&self) -> String {
        self.last.clone()
    }

    fn done(&self) -> u64 {
        self.tracker.repair.chunks.load(Ordering::Relaxed)
    }
}

/// Orders `target` to copy `chunk` from `sources` (those it can dial first); records the new
/// location once the target says the copy is durable. When every source is behind NAT and
/// the target is not, the target could not dial any of them: a source pushes the copy
/// instead, dialling out to the target.
async fn order(t: &Tracker, chunk: ChunkId, target: &PeerInfo, mut sources: Vec<PeerInfo>) -> Result<(), String> {
    sources.sort_by_key(|s| s.reach == Reach::Nat);
    let (conn, req) = if sources.iter().all(|s| s.reach == Reach::Nat) && target.reach != Reach::Nat {
        let from = sources.first().ok_or("no source")?;
        let conn = t.peer_conn(from.node, &from.addrs).await.map_err(|e| e.to_string())?;
        (conn, Request::PushChunk { chunk, to: target.clone() })
    } else {
        let conn = t.peer_conn(target.node, &target.addrs).await.map_err(|e| e.to_string())?;
        (conn, Request::ReplicateChunk { chunk, sources })
    };
    match conn.call_timeout(&req, Bytes::new(), ORDER_TIMEOUT).await.map_err(|e| e.to_string())? {
        (Response::Replicated { bytes }, _) => {
            let node = target.node;
            t.db(move |db| db.add_locations(&node, &[chunk], false)).await.map_err(|e| e.to_string())?;
            t.repair.copied(bytes);
            Ok(())
        }
        (Response::Error { message, .. }, _) => Err(message),
        _ => Err("unexpected answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ViewFile;

    fn peer(n: u8, state: PeerState, down_for: Option<u64>) -> PeerView {
        PeerView {
            info: PeerInfo {
                node: NodeId([n; 32]),
                addrs: vec![],
                capacity: 1 << 30,
                used: n as u64,
                chunks: 0,
                load: 0,
                state,
                link: None,
                reach: Reach::Unknown,
            },
            down_for: down_for.map(Duration::from_secs),
        }
    }

    /// Three chunks of one R=2 file: on (1, 2), on (1, 3), on (3) only.
    fn view() -> RepairView {
        let c = |b: u8| ChunkId([b; 32]);
        RepairView {
            files: vec![ViewFile { path: "/f".into(), size: 30, replicas: 2, chunks: vec![0, 1, 2] }],
            chunks: vec![c(10), c(11), c(12)],
            wanted: vec![2, 2, 2],
            approx_len: vec![10, 10, 10],
            holders: vec![
                vec![NodeId([1; 32]), NodeId([2; 32])],
                vec![NodeId([1; 32]), NodeId([3; 32])],
                vec![NodeId([3; 32])],
            ],
        }
    }

    #[test]
    fn a_copy_counts_until_repair_after_has_passed_then_it_is_replaced_most_endangered_first() {
        let after = Duration::from_secs(60);
        let up = |n| peer(n, PeerState::Up, None);
        // Peer 3 down for 10 s: chunk 12 has no live copy (lost for now) and nothing is
        // ordered for copies expected back.
        let peers = [up(1), up(2), peer(3, PeerState::Down, Some(10)), up(4)];
        let (r, needs) = assess(&view(), &peers, after);
        assert_eq!((r.chunks.healthy, r.chunks.under_replicated, r.chunks.lost), (1, 1, 1));
        assert_eq!(r.lost_files, ["/f"]);
        assert!(needs.is_empty(), "{needs:?}");
        // Down for longer than repair-after: chunk 11 gets one copy; chunk 12 cannot (no source).
        let peers = [up(1), up(2), peer(3, PeerState::Down, Some(61)), up(4)];
        let (_, needs) = assess(&view(), &peers, after);
        assert_eq!(needs.len(), 1);
        assert_eq!((needs[0].chunk, needs[0].copies), (ChunkId([11; 32]), 1));
        assert_eq!(needs[0].sources.iter().map(|p| p.node).collect::<Vec<_>>(), [NodeId([1; 32])]);
        let t = targets(&needs[0], &peers, &HashMap::new(), 1);
        assert!(t[0].node == NodeId([2; 32]) || t[0].node == NodeId([4; 32]), "never a holder or a down peer");
        // Peer 1 left and 3 is up again: chunk 10 (one copy left) comes before nothing else.
        let peers = [peer(1, PeerState::Left, Some(1)), up(2), up(3), up(4)];
        let (r, needs) = assess(&view(), &peers, after);
        assert_eq!(r.files.under_replicated, 1);
        assert_eq!(
            needs.iter().map(|n| n.chunk).collect::<Vec<_>>(),
            [ChunkId([10; 32]), ChunkId([11; 32]), ChunkId([12; 32])]
        );
    }

    #[test]
    fn a_draining_peer_serves_but_does_not_count_and_says_what_it_still_holds_alone() {
        let peers = [
            peer(1, PeerState::Draining, None),
            peer(2, PeerState::Up, None),
            peer(3, PeerState::Up, None),
            peer(4, PeerState::Up, None),
        ];
        let (r, needs) = assess(&view(), &peers, Duration::from_secs(60));
        let sole = |n: u8| r.peers.iter().find(|p| p.node == NodeId([n; 32])).unwrap().sole_copies;
        assert_eq!(sole(1), 2, "both chunks on the draining peer would fall below R without it");
        assert_eq!(needs.len(), 3);
        assert!(needs.iter().all(|n| !n.sources.is_empty()));
    }
}
