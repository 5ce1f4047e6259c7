//! Live membership. Every change is broadcast as an [`Event`]; each subscribed peer's
//! connection forwards the broadcast, so a join reaches every peer in one hop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use swarmfs_proto::{Event, NodeId, PeerInfo, PeerState};
use tokio::sync::broadcast;
use tracing::info;

struct Member {
    info: PeerInfo,
    last_seen: Instant,
    /// Identifies the connection the peer joined on, so a stale connection closing does not
    /// mark a peer down that has already reconnected.
    session: Option<usize>,
}

pub struct Registry {
    members: Mutex<HashMap<NodeId, Member>>,
    events: broadcast::Sender<Event>,
}

impl Registry {
    pub fn new(known: Vec<PeerInfo>) -> Registry {
        let now = Instant::now();
        let members =
            known.into_iter().map(|info| (info.node, Member { info, last_seen: now, session: None })).collect();
        Registry { members: Mutex::new(members), events: broadcast::channel(4096).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, ev: Event) {
        info!(event = ?ev, "membership change");
        let _ = self.events.send(ev);
    }

    pub fn join(&self, node: NodeId, addrs: Vec<String>, capacity: u64, session: usize) -> PeerInfo {
        let mut m = self.members.lock().expect("registry lock");
        let now = Instant::now();
        let (ev, info) = match m.get_mut(&node) {
            Some(mem) => {
                let was_up = mem.info.state == PeerState::Up;
                let moved = mem.info.addrs != addrs;
                mem.info.addrs = addrs;
                mem.info.capacity = capacity;
                mem.info.state = PeerState::Up;
                mem.last_seen = now;
                mem.session = Some(session);
                let ev = match (was_up, moved) {
                    (false, _) => Some(Event::PeerJoined(mem.info.clone())),
                    (true, true) => Some(Event::PeerAddrChanged(mem.info.clone())),
                    (true, false) => None,
                };
                (ev, mem.info.clone())
            }
            None => {
                let info = PeerInfo { node, addrs, capacity, used: 0, chunks: 0, load: 0, state: PeerState::Up };
                m.insert(node, Member { info: info.clone(), last_seen: now, session: Some(session) });
                (Some(Event::PeerJoined(info.clone())), info)
            }
        };
        drop(m);
        if let Some(ev) = ev {
            self.emit(ev);
        }
        info
    }

    /// Records a heartbeat; false when the node never joined (it must join first).
    pub fn heartbeat(&self, node: &NodeId, used: u64, chunks: u64, load: u32, capacity: u64) -> bool {
        let mut m = self.members.lock().expect("registry lock");
        let Some(mem) = m.get_mut(node) else {
            return false;
        };
        mem.info.used = used;
        mem.info.chunks = chunks;
        mem.info.load = load;
        mem.info.capacity = capacity;
        mem.last_seen = Instant::now();
        if mem.info.state != PeerState::Up {
            mem.info.state = PeerState::Up;
            let ev = Event::PeerJoined(mem.info.clone());
            drop(m);
            self.emit(ev);
        }
        true
    }

    pub fn leave(&self, node: &NodeId) {
        let mut m = self.members.lock().expect("registry lock");
        if let Some(mem) = m.get_mut(node) {
            mem.info.state = PeerState::Left;
            mem.session = None;
            drop(m);
            self.emit(Event::PeerLeft(*node));
        }
    }

    /// The connection a peer joined on has closed: it is down, unless it already reconnected.
    pub fn connection_closed(&self, node: &NodeId, session: usize) {
        let mut m = self.members.lock().expect("registry lock");
        if let Some(mem) = m.get_mut(node) {
            if mem.session == Some(session) && mem.info.state == PeerState::Up {
                mem.info.state = PeerState::Down;
                mem.session = None;
                drop(m);
                self.emit(Event::PeerDown(*node));
            }
        }
    }

    /// Marks down every up peer silent for longer than `timeout`.
    pub fn reap(&self, timeout: Duration) {
        let mut down = Vec::new();
        {
            let mut m = self.members.lock().expect("registry lock");
            for (node, mem) in m.iter_mut() {
                if mem.info.state == PeerState::Up && mem.last_seen.elapsed() > timeout {
                    mem.info.state = PeerState::Down;
                    down.push(*node);
                }
            }
        }
        for node in down {
            self.emit(Event::PeerDown(node));
        }
    }

    pub fn get(&self, node: &NodeId) -> Option<PeerInfo> {
        self.members.lock().expect("registry lock").get(node).map(|m| m.info.clone())
    }

    pub fn snapshot(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> =
            self.members.lock().expect("registry lock").values().map(|m| m.info.clone()).collect();
        v.sort_by_key(|p| p.node);
        v
    }
}
