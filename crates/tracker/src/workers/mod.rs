//! The tracker's background work, each a [`Worker`] on one [`swarmfs_net::task::Runner`]:
//! - [`Reaper`]: marks peers down that stopped sending heartbeats.
//! - [`Collector`]: deletes chunks no file uses any more, and orphans of failed uploads.
//! - [`repair::Repairer`]: restores every chunk to its file's R, and computes `health`.
//! - [`Prober`]: dials each peer back at its advertised address once it joins: direct or NAT.

pub mod repair;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmfs_net::task::{Step, Worker};
use swarmfs_proto::{ChunkId, NodeId, Request, Response};
use tracing::{info, warn};

use crate::Tracker;

pub struct Reaper(pub Arc<Tracker>);

impl Worker for Reaper {
    fn name(&self) -> String {
        "reaper".into()
    }
    fn idle_period(&self) -> Duration {
        (self.0.config.peer_timeout / 4).max(Duration::from_millis(100))
    }
    async fn step(&mut self) -> Result<Step, String> {
        self.0.registry.reap(self.0.config.peer_timeout);
        Ok(Step::Idle)
    }
}

/// Learns whether each peer can be dialled at the address it advertises, by dialling it
/// back (TLS and the hello, pinned to its NodeId) once it has joined, and again after every
/// re-join. A peer that cannot be is `Nat`: it keeps working through the connections it
/// opens (the tracker's orders use its session), and clients place on it last.
pub struct Prober {
    tracker: Arc<Tracker>,
    direct: u64,
    nat: u64,
}

/// How long a dial-back may take before the peer counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Peers tested at once.
const PROBES_AT_ONCE: usize = 8;

impl Prober {
    pub fn new(tracker: Arc<Tracker>) -> Prober {
        Prober { tracker, direct: 0, nat: 0 }
    }
}

impl Worker for Prober {
    fn name(&self) -> String {
        "reach".into()
    }

    fn idle_period(&self) -> Duration {
        Duration::from_millis(250)
    }

    fn detail(&self) -> String {
        format!("{} peers direct, {} behind NAT (as last tested)", self.direct, self.nat)
    }

    async fn step(&mut self) -> Result<Step, String> {
        let todo: Vec<_> = self.tracker.registry.unprobed().into_iter().take(PROBES_AT_ONCE).collect();
        if todo.is_empty() {
            return Ok(Step::Idle);
        }
        let swarm = self.tracker.pool.swarm().clone();
        let probes = todo.iter().map(|p| {
            let swarm = swarm.clone();
            async move {
                let mut last = String::from("it advertises no address");
                for addr in &p.addrs {
                    let dialled = tokio::time::timeout(
                        PROBE_TIMEOUT,
                        swarmfs_net::dial(&swarm, addr, p.node, swarmfs_proto::Role::Tracker),
                    )
                    .await;
                    match dialled {
                        Ok(Ok(_)) => return Ok(addr.clone()),
                        Ok(Err(e)) => last = e.to_string(),
                        Err(_) => last = format!("no answer within {PROBE_TIMEOUT:?}"),
                    }
                }
                Err(last)
            }
        });
        for (p, result) in todo.iter().zip(futures_util::future::join_all(probes).await) {
            let reach = match result {
                Ok(addr) => {
                    self.direct += 1;
                    tracing::debug!(node = %p.node.short(), %addr, "peer reachable at its advertised address");
                    swarmfs_proto::Reach::Direct
                }
                Err(why) => {
                    self.nat += 1;
                    info!(node = %p.node.short(), addrs = %p.addrs.join(","), "peer cannot be dialled back (behind NAT?): {why}");
                    swarmfs_proto::Reach::Nat
                }
            };
            self.tracker.registry.set_reach(&p.node, &p.addrs, reach);
        }
        Ok(Step::Busy)
    }

    fn done(&self) -> u64 {
        self.direct + self.nat
    }
}

/// The garbage collector: chunks no file version references any more are deleted from
/// their holders once `gc_delay` has passed (a grace period for uploads that will still
/// reference them), then forgotten. Chunks peers hold that no file ever referenced (an
/// upload that failed before its commit) are queued the same way, `orphan_delay` ahead.
pub struct Collector {
    tracker: Arc<Tracker>,
    last_orphan_scan: Option<Instant>,
    collected: u64,
    orphans_queued: u64,
}

impl Collector {
    pub fn new(tracker: Arc<Tracker>) -> Collector {
        Collector { tracker, last_orphan_scan: None, collected: 0, orphans_queued: 0 }
    }

    fn orphan_scan_every(&self) -> Duration {
        (self.tracker.config.orphan_delay / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Worker for Collector {
    fn name(&self) -> String {
        "collector".into()
    }

    /// A sixteenth of the delay (at most 5 s): garbage goes soon after it is due, which is
    /// what a burst of small writes into a big file leaves behind (superseded packs and
    /// chunks); one indexed query per wake-up.
    fn idle_period(&self) -> Duration {
        (self.tracker.config.gc_delay / 16).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    async fn step(&mut self) -> Result<Step, String> {
        let t = self.tracker.clone();
        // With several trackers, one collects for all (see mesh.rs).
        if !t.leadership.leads() {
            return Ok(Step::Idle);
        }
        if self.last_orphan_scan.is_none_or(|at| at.elapsed() >= self.orphan_scan_every()) {
            self.last_orphan_scan = Some(Instant::now());
            let delay = t.config.orphan_delay;
            let n = t.db(move |db| db.queue_orphans(delay)).await.map_err(|e| e.to_string())?;
            if n > 0 {
                info!(chunks = n, "chunks no file references queued for collection");
                self.orphans_queued += n as u64;
            }
        }
        // Claimed in the database, so a commit naming one of them waits for the answer
        // (see Tracker::commit), on whichever tracker it arrives.
        let due = t.db(|db| db.gc_due(4096)).await.map_err(|e| e.to_string())?;
        let claimed: Vec<ChunkId> = due.iter().map(|(c, _)| *c).collect();
        let result = self.collect(due).await;
        let released = t.db(move |db| db.gc_release(&claimed)).await.map_err(|e| e.to_string());
        t.collect_answered.notify_waiters();
        result?;
        released?;
        Ok(Step::Idle)
    }

    fn detail(&self) -> String {
        format!("{} chunks collected, {} orphans queued", self.collected, self.orphans_queued)
    }

    fn done(&self) -> u64 {
        self.collected
    }
}

impl Collector {
    /// Sends the collect orders for `due` and records what was deleted.
    async fn collect(&mut self, due: Vec<(ChunkId, Vec<NodeId>)>) -> Result<(), String> {
        let t = self.tracker.clone();
        let mut by_node: HashMap<NodeId, Vec<ChunkId>> = HashMap::new();
        for (chunk, holders) in due {
            if holders.is_empty() {
                t.db(move |db| db.gc_forget(&chunk)).await.map_err(|e| e.to_string())?;
            }
            for n in holders {
                by_node.entry(n).or_default().push(chunk);
            }
        }
        for (node, chunks) in by_node {
            // Down peers keep their garbage queued until they are back.
            let Some(peer) = t.registry.get(&node).filter(|p| p.state.is_live()) else { continue };
            let req = Request::CollectChunks { chunks: chunks.clone(), idle_ms: t.config.gc_delay.as_millis() as u64 };
            let reply = async {
                let conn = t.peer_conn(node, &peer.addrs).await?;
                conn.call_timeout(&req, Bytes::new(), Duration::from_secs(60)).await
            }
            .await;
            match reply {
                Ok((Response::Collected(gone), _)) if gone.len() == chunks.len() => {
                    let collected: Vec<_> = chunks.iter().zip(gone).filter(|(_, g)| *g).map(|(c, _)| *c).collect();
                    if !collected.is_empty() {
                        info!(node = %node.short(), chunks = collected.len(), "garbage collected");
                        self.collected += collected.len() as u64;
                        t.db(move |db| db.gc_done(&node, &collected)).await.map_err(|e| e.to_string())?;
                    }
                }
                Ok(other) => warn!(node = %node.short(), "unexpected answer to collect: {:?}", other.0),
                Err(e) => warn!(node = %node.short(), "could not collect garbage: {e}"),
            }
        }
        Ok(())
    }
}
