//! Cached sources: members that serve chunks they downloaded and verified (`get --seed`).
//! Kept in memory only and tied to the connection that offered them: when it closes, the
//! node and everything it offered are forgotten. They speed downloads up; they are never
//! recorded as locations, so repair and `health` never count them towards any file's R.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use swarmfs_proto::{ChunkId, LinkId, NodeId, PeerInfo, PeerState, Reach};

struct Source {
    addrs: Vec<String>,
    /// Set for a link's holder: it serves under that link only.
    link: Option<LinkId>,
    chunks: HashSet<ChunkId>,
    /// The connection that offered them.
    session: usize,
}

/// Where an offering node serves, and under which link if it is a link's holder.
pub struct Offered {
    pub addrs: Vec<String>,
    pub link: Option<LinkId>,
}

#[derive(Default)]
pub struct CachedSources {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sources: HashMap<NodeId, Source>,
    by_chunk: HashMap<ChunkId, HashSet<NodeId>>,
}

impl Inner {
    fn drop_chunks(&mut self, node: &NodeId, chunks: impl IntoIterator<Item = ChunkId>) {
        for c in chunks {
            if let Some(set) = self.by_chunk.get_mut(&c) {
                set.remove(node);
                if set.is_empty() {
                    self.by_chunk.remove(&c);
                }
            }
        }
    }
}

impl CachedSources {
    /// Most chunks one node may offer: bounds the tracker's memory per member.
    pub const MAX_PER_NODE: usize = 1 << 20;

    pub fn offer(&self, node: NodeId, session: usize, offer: Offered, chunks: Vec<ChunkId>, replace: bool) {
        let mut g = self.inner.lock().expect("sources");
        let inner = &mut *g;
        let stale = match inner.sources.get(&node) {
            Some(s) if replace || s.session != session => Some(s.chunks.iter().copied().collect::<Vec<_>>()),
            _ => None,
        };
        if let Some(old) = stale {
            inner.drop_chunks(&node, old);
            inner.sources.remove(&node);
        }
        let src = inner.sources.entry(node).or_insert_with(|| Source {
            addrs: vec![],
            link: None,
            chunks: HashSet::new(),
            session,
        });
        src.addrs = offer.addrs;
        src.link = offer.link;
        for c in chunks {
            if src.chunks.len() >= Self::MAX_PER_NODE {
                break;
            }
            if src.chunks.insert(c) {
                inner.by_chunk.entry(c).or_default().insert(node);
            }
        }
    }

    /// The connection `session` of `node` closed: it is no source any more.
    pub fn connection_closed(&self, node: &NodeId, session: usize) {
        let mut g = self.inner.lock().expect("sources");
        if g.sources.get(node).is_some_and(|s| s.session == session) {
            let src = g.sources.remove(node).expect("checked");
            g.drop_chunks(node, src.chunks);
        }
    }

    /// The cached sources of `chunk`, as peers a client can dial.
    pub fn of(&self, chunk: &ChunkId) -> Vec<PeerInfo> {
        let g = self.inner.lock().expect("sources");
        let Some(nodes) = g.by_chunk.get(chunk) else { return Vec::new() };
        let mut out: Vec<PeerInfo> = nodes
            .iter()
            .filter_map(|n| {
                let s = g.sources.get(n)?;
                Some(PeerInfo {
                    node: *n,
                    addrs: s.addrs.clone(),
                    capacity: 0,
                    used: 0,
                    chunks: s.chunks.len() as u64,
                    load: 0,
                    state: PeerState::Up,
                    link: s.link,
                    // A source is dialled by whoever wants its chunks; not tested.
                    reach: Reach::Unknown,
                })
            })
            .collect();
        out.sort_by_key(|p| p.node);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(addr: &str) -> Offered {
        Offered { addrs: vec![addr.into()], link: None }
    }

    #[test]
    fn a_source_is_forgotten_with_its_connection_and_replace_drops_old_offers() {
        let s = CachedSources::default();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let (c1, c2) = (ChunkId([10; 32]), ChunkId([11; 32]));
        s.offer(a, 7, at("127.0.0.1:1"), vec![c1, c2], false);
        s.offer(b, 8, at("127.0.0.1:2"), vec![c1], false);
        assert_eq!(s.of(&c1).len(), 2);
        s.connection_closed(&a, 99);
        assert_eq!(s.of(&c2).len(), 1, "another connection of the node closing changes nothing");
        s.connection_closed(&a, 7);
        assert!(s.of(&c2).is_empty());
        assert_eq!(s.of(&c1).iter().map(|p| p.node).collect::<Vec<_>>(), [b]);
        s.offer(b, 8, at("127.0.0.1:2"), vec![c2], true);
        assert!(s.of(&c1).is_empty(), "replace drops what was offered before");
        assert_eq!(s.of(&c2).len(), 1);
    }
}
