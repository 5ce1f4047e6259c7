//! Choosing peers for a chunk.
//!
//! Every policy produces a full preference order over the live peers; the uploader takes
//! the first R and, when one fails, the next in line. So replacement needs no extra logic.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use swarmfs_proto::{ChunkId, NodeId, PeerInfo};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// Weighted rendezvous hashing on (chunk, node), weighted by free space: deterministic,
    /// spreads evenly, and moves little when peers come and go.
    #[default]
    Rendezvous,
    /// Fewest stored bytes first, counting what this upload has already placed.
    LeastUsed,
    /// Lowest measured round-trip time first.
    LowestLatency,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rendezvous" => Ok(Policy::Rendezvous),
            "least-used" => Ok(Policy::LeastUsed),
            "lowest-latency" => Ok(Policy::LowestLatency),
            _ => Err(format!("unknown placement policy {s:?}: use rendezvous, least-used or lowest-latency")),
        }
    }
}

/// The name `FromStr` reads.
impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Rendezvous => "rendezvous",
            Policy::LeastUsed => "least-used",
            Policy::LowestLatency => "lowest-latency",
        })
    }
}

pub struct Placer {
    policy: Policy,
    peers: Vec<PeerInfo>,
    /// Bytes this upload has assigned to each peer (least-used).
    assigned: Mutex<HashMap<NodeId, u64>>,
    rtt: HashMap<NodeId, Duration>,
    /// Peers that said they are full during this upload: placed last from then on.
    full: Mutex<Vec<NodeId>>,
}

impl Placer {
    pub fn new(policy: Policy, peers: Vec<PeerInfo>, rtt: HashMap<NodeId, Duration>) -> Placer {
        Placer { policy, peers, assigned: Mutex::new(HashMap::new()), rtt, full: Mutex::new(Vec::new()) }
    }

    pub fn peers(&self) -> &[PeerInfo] {
        &self.peers
    }

    /// All live peers in order of preference for `chunk`.
    pub fn order(&self, chunk: &ChunkId) -> Vec<PeerInfo> {
        self.order_with(chunk, &self.assigned.lock().expect("lock"))
    }

    fn order_with(&self, chunk: &ChunkId, assigned: &HashMap<NodeId, u64>) -> Vec<PeerInfo> {
        let mut v = self.peers.clone();
        match self.policy {
            Policy::Rendezvous => {
                let score = |p: &PeerInfo| {
                    let mut h = blake3::Hasher::new();
                    h.update(chunk.as_bytes());
                    h.update(p.node.as_bytes());
                    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
                    // Uniform in (0,1); -w/ln(u) is the weighted rendezvous score.
                    let u = (x as f64 + 1.0) / (u64::MAX as f64 + 2.0);
                    let weight = (p.capacity.saturating_sub(p.used).max(1)) as f64;
                    -weight / u.ln()
                };
                v.sort_by(|a, b| score(b).total_cmp(&score(a)));
            }
            Policy::LeastUsed => {
                v.sort_by_key(|p| p.used + assigned.get(&p.node).copied().unwrap_or(0));
            }
            Policy::LowestLatency => {
                v.sort_by_key(|p| self.rtt.get(&p.node).copied().unwrap_or(Duration::MAX));
            }
        }
        v
    }

    /// The best peer for `chunk` not in `exclude`, counted as holding `len` more bytes from
    /// now on. Peers that are full (reported, or said so during this upload) or for which
    /// `slow` holds come after every other peer, keeping the policy's order among each group.
    pub fn pick_one(
        &self,
        chunk: &ChunkId,
        exclude: &[NodeId],
        len: u64,
        slow: &dyn Fn(&NodeId) -> bool,
    ) -> Option<PeerInfo> {
        let mut assigned = self.assigned.lock().expect("lock");
        let full = self.full.lock().expect("lock").clone();
        let has_room = |p: &PeerInfo| {
            let taken = p.used.saturating_add(assigned.get(&p.node).copied().unwrap_or(0));
            !full.contains(&p.node) && p.capacity.saturating_sub(taken) >= len
        };
        let chosen = self
            .order_with(chunk, &assigned)
            .into_iter()
            .filter(|p| !exclude.contains(&p.node))
            // A peer the tracker could not dial back (behind NAT) is likely out of this
            // client's reach too: after every peer known to be reachable.
            .min_by_key(|p| (!has_room(p), p.reach == swarmfs_proto::Reach::Nat, slow(&p.node)))?;
        *assigned.entry(chosen.node).or_default() += len;
        Some(chosen)
    }

    /// Places `node` last for the rest of this upload (it answered "no space").
    pub fn avoid(&self, node: NodeId) {
        self.full.lock().expect("lock").push(node);
    }

    /// Gives back what [`Placer::pick`] counted, for a peer that then failed.
    pub fn release(&self, node: NodeId, len: u64) {
        let mut assigned = self.assigned.lock().expect("lock");
        let a = assigned.entry(node).or_default();
        *a = a.saturating_sub(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmfs_proto::{PeerState, Reach};

    fn peer(b: u8, used: u64) -> PeerInfo {
        PeerInfo {
            node: NodeId([b; 32]),
            addrs: vec![],
            capacity: 1 << 40,
            used,
            chunks: 0,
            load: 0,
            state: PeerState::Up,
            link: None,
            reach: Reach::Unknown,
        }
    }

    #[test]
    fn least_used_spreads_within_an_upload() {
        let p = Placer::new(Policy::LeastUsed, vec![peer(1, 0), peer(2, 10), peer(3, 20)], HashMap::new());
        let mut counts = HashMap::new();
        for i in 0..30u8 {
            let first = p.pick_one(&ChunkId([i; 32]), &[], 10, &|_| false).unwrap().node;
            *counts.entry(first).or_insert(0) += 1;
        }
        // 0, 10 and 20 bytes used to start with: the first two absorb the head start.
        assert_eq!(counts.values().sum::<i32>(), 30);
        assert!(counts.values().all(|&c| (9..=11).contains(&c)), "{counts:?}");
        let exclude = [NodeId([1; 32]), NodeId([2; 32])];
        assert_eq!(p.pick_one(&ChunkId([0; 32]), &exclude, 0, &|_| false).unwrap().node, NodeId([3; 32]));
        let all = [NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32])];
        assert!(p.pick_one(&ChunkId([0; 32]), &all, 0, &|_| false).is_none(), "excluded peers are never picked");
    }

    #[test]
    fn rendezvous_is_deterministic_and_spreads() {
        let peers = vec![peer(1, 0), peer(2, 0), peer(3, 0)];
        let p = Placer::new(Policy::Rendezvous, peers.clone(), HashMap::new());
        let q = Placer::new(Policy::Rendezvous, peers, HashMap::new());
        let mut counts = HashMap::new();
        for i in 0..300u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let a = p.order(&ChunkId(id));
            assert_eq!(a, q.order(&ChunkId(id)));
            *counts.entry(a[0].node).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&c| c > 60), "{counts:?}");
    }

    #[test]
    fn full_and_slow_peers_come_last() {
        let mut tight = peer(1, 0);
        tight.capacity = 100;
        let p = Placer::new(Policy::LeastUsed, vec![tight, peer(2, 50), peer(3, 60)], HashMap::new());
        let pick = |slow: &dyn Fn(&NodeId) -> bool| p.pick_one(&ChunkId([0; 32]), &[], 200, slow).unwrap().node.0[0];
        assert_eq!(pick(&|_| false), 2, "peer 1 has no room for 200 bytes, though it is least used");
        assert_eq!(pick(&|n| n.0[0] == 2), 3, "a slow peer comes after a healthy one");
        p.avoid(NodeId([3; 32]));
        assert_eq!(pick(&|n| n.0[0] == 2), 2, "a slow peer still beats one that said it is full");
    }

    #[test]
    fn lowest_latency_prefers_fast_peers() {
        let rtt = HashMap::from([
            (NodeId([1; 32]), Duration::from_millis(30)),
            (NodeId([2; 32]), Duration::from_millis(1)),
            (NodeId([3; 32]), Duration::from_millis(9)),
        ]);
        let p = Placer::new(Policy::LowestLatency, vec![peer(1, 0), peer(2, 0), peer(3, 0)], rtt);
        let order: Vec<u8> = p.order(&ChunkId([0; 32])).iter().map(|p| p.node.0[0]).collect();
        assert_eq!(order, vec![2, 3, 1]);
    }
}
