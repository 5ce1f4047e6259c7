//! Live membership. Every change is broadcast as an [`Event`]; each subscribed peer's
//! connection forwards the broadcast, so a join reaches every peer in one hop.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use swarmfs_proto::{Event, NodeId, PeerInfo, PeerState, Reach, WorkerStatus};
use tokio::sync::broadcast;
use tracing::info;

struct Member {
    /// `info.state` is Up, Down or Left; Draining is shown from `draining` (see `view`).
    info: PeerInfo,
    last_seen: Instant,
    /// Since when the peer has been down or gone; None while it is up.
    down_since: Option<Instant>,
    /// Being emptied by `swarmfs peer drain` (persisted in the database too).
    draining: bool,
    /// The peer's background workers as of its last heartbeat.
    workers: Vec<WorkerStatus>,
    /// Identifies the connection the peer joined on, so a stale connection closing does not
    /// mark a peer down that has already reconnected.
    session: Option<usize>,
}

impl Member {
    fn view(&self) -> PeerInfo {
        let mut info = self.info.clone();
        if info.state == PeerState::Up && self.draining {
            info.state = PeerState::Draining;
        }
        info
    }

    fn went_down(&mut self, state: PeerState) {
        self.info.state = state;
        self.down_since.get_or_insert_with(Instant::now);
        self.workers.clear();
    }
}

/// A peer as repair and `health` see it.
#[derive(Clone, Debug)]
pub struct PeerView {
    pub info: PeerInfo,
    /// How long it has been down or gone.
    pub down_for: Option<Duration>,
}

/// What a heartbeat reports.
pub struct Beat {
    pub used: u64,
    pub chunks: u64,
    pub load: u32,
    pub capacity: u64,
    pub workers: Vec<WorkerStatus>,
}

pub struct Registry {
    members: Mutex<HashMap<NodeId, Member>>,
    events: broadcast::Sender<Event>,
}

impl Registry {
    /// `known`: peers from the database with whether each is draining. They count as down
    /// from now until they reconnect (liveness is not persisted).
    pub fn new(known: Vec<(PeerInfo, bool)>) -> Registry {
        let now = Instant::now();
        let members = known
            .into_iter()
            .map(|(info, draining)| {
                let m =
                    Member { info, last_seen: now, down_since: Some(now), draining, workers: vec![], session: None };
                (m.info.node, m)
            })
            .collect();
        Registry { members: Mutex::new(members), events: broadcast::channel(4096).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, ev: Event) {
        info!("membership change: {ev}");
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
                // Tested again at every join: a restarted NAT may map it differently.
                mem.info.reach = Reach::Unknown;
                mem.last_seen = now;
                mem.down_since = None;
                mem.session = Some(session);
                let ev = match (was_up, moved) {
                    (false, _) => Some(Event::PeerJoined(mem.view())),
                    (true, true) => Some(Event::PeerAddrChanged(mem.view())),
                    (true, false) => None,
                };
                (ev, mem.view())
            }
            None => {
                let info = PeerInfo {
                    node,
                    addrs,
                    capacity,
                    used: 0,
                    chunks: 0,
                    load: 0,
                    state: PeerState::Up,
                    link: None,
                    reach: Reach::Unknown,
                };
                let mem = Member {
                    info: info.clone(),
                    last_seen: now,
                    down_since: None,
                    draining: false,
                    workers: vec![],
                    session: Some(session),
                };
                m.insert(node, mem);
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
    pub fn heartbeat(&self, node: &NodeId, beat: Beat) -> bool {
        let mut m = self.members.lock().expect("registry lock");
        let Some(mem) = m.get_mut(node) else {
            return false;
        };
        mem.info.used = beat.used;
        mem.info.chunks = beat.chunks;
        mem.info.load = beat.load;
        mem.info.capacity = beat.capacity;
        mem.workers = beat.workers;
        mem.last_seen = Instant::now();
        if mem.info.state != PeerState::Up {
            mem.info.state = PeerState::Up;
            mem.down_since = None;
            let ev = Event::PeerJoined(mem.view());
            drop(m);
            self.emit(ev);
        }
        true
    }

    pub fn leave(&self, node: &NodeId) {
        let mut m = self.members.lock().expect("registry lock");
        if let Some(mem) = m.get_mut(node) {
            mem.went_down(PeerState::Left);
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
                mem.went_down(PeerState::Down);
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
                    mem.went_down(PeerState::Down);
                    down.push(*node);
                }
            }
        }
        for node in down {
            self.emit(Event::PeerDown(node));
        }
    }

    pub fn get(&self, node: &NodeId) -> Option<PeerInfo> {
        self.members.lock().expect("registry lock").get(node).map(Member::view)
    }

    pub fn snapshot(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self.members.lock().expect("registry lock").values().map(Member::view).collect();
        v.sort_by_key(|p| p.node);
        v
    }

    /// Every peer with how long it has been down, for repair and `health`.
    pub fn views(&self) -> Vec<PeerView> {
        let mut v: Vec<PeerView> = self
            .members
            .lock()
            .expect("registry lock")
            .values()
            .map(|m| PeerView { info: m.view(), down_for: m.down_since.map(|t| t.elapsed()) })
            .collect();
        v.sort_by_key(|p| p.info.node);
        v
    }

    /// Every live peer's workers, named `SHORTID/worker`.
    pub fn peer_workers(&self) -> Vec<WorkerStatus> {
        let m = self.members.lock().expect("registry lock");
        let mut out: Vec<WorkerStatus> = m
            .values()
            .flat_map(|mem| {
                mem.workers
                    .iter()
                    .map(|w| WorkerStatus { name: format!("{}/{}", mem.info.node.short(), w.name), ..w.clone() })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Starts or stops draining; the change reaches every peer as an address-change event
    /// (its state is what changed). False when the peer is unknown.
    /// Live peers whose reachability is not known yet (joined or moved since the last test).
    pub fn unprobed(&self) -> Vec<PeerInfo> {
        let m = self.members.lock().expect("registry lock");
        m.values()
            .filter(|mem| mem.info.state.is_live() && mem.info.reach == Reach::Unknown)
            .map(Member::view)
            .collect()
    }

    /// Records what dialling `node` back at `addrs` found, unless it has moved since.
    pub fn set_reach(&self, node: &NodeId, addrs: &[String], reach: Reach) {
        let mut m = self.members.lock().expect("registry lock");
        if let Some(mem) = m.get_mut(node).filter(|mem| mem.info.addrs == addrs) {
            mem.info.reach = reach;
        }
    }

    /// What the last hole punch to `node` showed: reached by punching or only by the relay.
    /// Only for a peer already known to be behind NAT: a dialer's report never makes a
    /// directly reachable peer look otherwise.
    pub fn set_nat_reach(&self, node: &NodeId, reach: Reach) {
        let mut m = self.members.lock().expect("registry lock");
        if let Some(mem) = m.get_mut(node).filter(|mem| mem.info.reach.behind_nat()) {
            mem.info.reach = reach;
        }
    }

    pub fn set_draining(&self, node: &NodeId, on: bool) -> bool {
        let mut m = self.members.lock().expect("registry lock");
        let Some(mem) = m.get_mut(node) else {
            return false;
        };
        if mem.draining == on {
            return true;
        }
        mem.draining = on;
        let ev = Event::PeerAddrChanged(mem.view());
        drop(m);
        self.emit(ev);
        true
    }
}
