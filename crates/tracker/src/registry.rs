//! Live membership. Every change is broadcast as an [`Event`]; each subscribed peer's
//! connection forwards the broadcast, so a join reaches every peer in one hop.
//!
//! With several trackers (PostgreSQL), each peer is *owned* by the tracker its session is
//! on: that tracker alone decides it is up or down, and publishes every change of its own
//! peers ([`Registry::published`]) for the others, which apply it ([`Registry::apply_remote`])
//! and forward it to their own subscribers. See `mesh.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    /// The other tracker whose session the peer is on; None when it is this one's (or down).
    owner: Option<Arc<str>>,
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

/// A change to publish to the other trackers: the event, and which tracker owns the peer
/// (None: this one).
pub type Published = (Option<Arc<str>>, Event);

pub struct Registry {
    members: Mutex<HashMap<NodeId, Member>>,
    events: broadcast::Sender<Event>,
    published: broadcast::Sender<Published>,
}

impl Registry {
    /// `known`: peers from the database with whether each is draining. They count as down
    /// from now until they reconnect (liveness is not persisted).
    pub fn new(known: Vec<(PeerInfo, bool)>) -> Registry {
        let now = Instant::now();
        let members = known
            .into_iter()
            .map(|(info, draining)| {
                let m = Member {
                    info,
                    last_seen: now,
                    down_since: Some(now),
                    draining,
                    workers: vec![],
                    session: None,
                    owner: None,
                };
                (m.info.node, m)
            })
            .collect();
        Registry {
            members: Mutex::new(members),
            events: broadcast::channel(4096).0,
            published: broadcast::channel(4096).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Changes this tracker made, for the other trackers.
    pub fn published(&self) -> broadcast::Receiver<Published> {
        self.published.subscribe()
    }

    /// A change of a peer this tracker owns: to its subscribers and to the other trackers.
    fn emit(&self, ev: Event) {
        info!("membership change: {ev}");
        // Only a tracker sharing its database with others (PostgreSQL) listens.
        if self.published.receiver_count() > 0 {
            let _ = self.published.send((None, ev.clone()));
        }
        let _ = self.events.send(ev);
    }

    /// A change learnt from another tracker: to this one's subscribers only.
    fn emit_local(&self, ev: Event) {
        info!("membership change (at another tracker): {ev}");
        let _ = self.events.send(ev);
    }

    /// Applies a change another tracker published about a peer `owner` owns. A down or
    /// leave from a tracker that no longer owns the peer (it moved on) is stale and ignored.
    pub fn apply_remote(&self, owner: &str, ev: Event) {
        let mut m = self.members.lock().expect("registry lock");
        let local = match ev {
            Event::PeerJoined(info) | Event::PeerAddrChanged(info) if !info.state.is_live() => {
                // Drained or not while down: the flag only.
                if let Some(mem) = m.get_mut(&info.node) {
                    mem.draining = info.state == PeerState::Draining;
                }
                None
            }
            Event::PeerJoined(info) | Event::PeerAddrChanged(info) => {
                let draining = info.state == PeerState::Draining;
                let node = info.node;
                let mem = m.entry(node).or_insert_with(|| Member {
                    info: PeerInfo { state: PeerState::Down, ..info.clone() },
                    last_seen: Instant::now(),
                    down_since: Some(Instant::now()),
                    draining,
                    workers: vec![],
                    session: None,
                    owner: None,
                });
                let was_up = mem.info.state == PeerState::Up;
                let changed = mem.info.addrs != info.addrs || mem.draining != draining;
                mem.info = PeerInfo { state: PeerState::Up, ..info };
                mem.draining = draining;
                mem.down_since = None;
                mem.last_seen = Instant::now();
                mem.session = None;
                mem.owner = Some(Arc::from(owner));
                match (was_up, changed) {
                    (false, _) => Some(Event::PeerJoined(mem.view())),
                    (true, true) => Some(Event::PeerAddrChanged(mem.view())),
                    (true, false) => None,
                }
            }
            Event::PeerDown(node) | Event::PeerLeft(node) => match m.get_mut(&node) {
                Some(mem) if mem.owner.as_deref() == Some(owner) && mem.info.state == PeerState::Up => {
                    let left = matches!(ev, Event::PeerLeft(_));
                    mem.went_down(if left { PeerState::Left } else { PeerState::Down });
                    mem.owner = None;
                    Some(ev)
                }
                _ => None,
            },
        };
        drop(m);
        if let Some(ev) = local {
            self.emit_local(ev);
        }
    }

    /// Trackers stopped renewing their lease (they died): every peer owned by one that
    /// `gone` says is down until it reconnects to a tracker that lives.
    pub fn owners_gone(&self, gone: impl Fn(&str) -> bool) {
        let mut down = Vec::new();
        {
            let mut m = self.members.lock().expect("registry lock");
            for (node, mem) in m.iter_mut() {
                if mem.owner.as_deref().is_some_and(&gone) && mem.info.state == PeerState::Up {
                    mem.went_down(PeerState::Down);
                    mem.owner = None;
                    down.push(*node);
                }
            }
        }
        for node in down {
            self.emit_local(Event::PeerDown(node));
        }
    }

    /// Load figures of a peer another tracker owns (its heartbeats go there); no event.
    pub fn remote_stats(&self, owner: &str, info: &PeerInfo) {
        let mut m = self.members.lock().expect("registry lock");
        if let Some(mem) = m.get_mut(&info.node).filter(|mem| mem.owner.as_deref() == Some(owner)) {
            mem.info.used = info.used;
            mem.info.chunks = info.chunks;
            mem.info.load = info.load;
            mem.info.capacity = info.capacity;
            mem.info.reach = info.reach;
            mem.last_seen = Instant::now();
        }
    }

    /// The peers this tracker owns that are up, as published (for the shared table).
    pub fn owned_up(&self) -> Vec<PeerInfo> {
        let m = self.members.lock().expect("registry lock");
        m.values()
            .filter(|mem| mem.owner.is_none() && mem.session.is_some() && mem.info.state == PeerState::Up)
            .map(Member::view)
            .collect()
    }

    /// Which other tracker owns each peer that is up at another tracker.
    pub fn remote_owners(&self) -> Vec<(NodeId, Arc<str>)> {
        let m = self.members.lock().expect("registry lock");
        m.iter()
            .filter(|(_, mem)| mem.info.state == PeerState::Up)
            .filter_map(|(n, mem)| mem.owner.clone().map(|o| (*n, o)))
            .collect()
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
                let moved_here = mem.owner.take().is_some();
                let ev = match (was_up, moved) {
                    (false, _) => Some(Event::PeerJoined(mem.view())),
                    (true, true) => Some(Event::PeerAddrChanged(mem.view())),
                    (true, false) => None,
                };
                if ev.is_none() && moved_here {
                    // Nothing changed for subscribers here; the other trackers learn who owns it.
                    let _ = self.published.send((None, Event::PeerJoined(mem.view())));
                }
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
                    owner: None,
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
        let Some(mem) = m.get_mut(node).filter(|mem| mem.owner.is_none()) else {
            // Never joined here, or its session is on another tracker now.
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
        if let Some(mem) = m.get_mut(node).filter(|mem| mem.owner.is_none()) {
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
                if mem.owner.is_none() && mem.info.state == PeerState::Up && mem.last_seen.elapsed() > timeout {
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

    /// Live peers of this tracker's whose reachability is not known yet (joined or moved
    /// since the last test); another tracker's peers are tested by it.
    pub fn unprobed(&self) -> Vec<PeerInfo> {
        let m = self.members.lock().expect("registry lock");
        m.values()
            .filter(|mem| mem.owner.is_none() && mem.info.state.is_live() && mem.info.reach == Reach::Unknown)
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

    /// Starts or stops draining; the change reaches every peer as an address-change event
    /// (its state is what changed). False when the peer is unknown.
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
        let owner = mem.owner.clone();
        drop(m);
        info!("membership change: {ev}");
        // Published as its owner's (it may be another tracker's peer): only the owner says
        // whether a peer is up.
        let _ = self.published.send((owner, ev.clone()));
        let _ = self.events.send(ev);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(n: u8, addr: &str) -> PeerInfo {
        PeerInfo {
            node: NodeId([n; 32]),
            addrs: vec![addr.into()],
            capacity: 1,
            used: 0,
            chunks: 0,
            load: 0,
            state: PeerState::Up,
            link: None,
            reach: Reach::Unknown,
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Event>) -> Vec<Event> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn a_peer_moving_between_trackers_is_never_taken_down_by_its_old_tracker() {
        let r = Registry::new(vec![]);
        let mut events = r.subscribe();
        let mut published = r.published();
        let p = info(1, "10.0.0.1:7001");
        // Up at tracker A: subscribers here hear of it once; nothing is published back.
        r.apply_remote("a", Event::PeerJoined(p.clone()));
        r.apply_remote("a", Event::PeerJoined(p.clone()));
        assert_eq!(drain(&mut events), vec![Event::PeerJoined(p.clone())]);
        assert!(published.try_recv().is_err(), "what another tracker said is not said again");
        // It moves to tracker B; A's late notice that it went down is stale.
        r.apply_remote("b", Event::PeerJoined(p.clone()));
        r.apply_remote("a", Event::PeerDown(p.node));
        assert_eq!(r.get(&p.node).unwrap().state, PeerState::Up);
        // A dies: nothing of B's is touched. B dies: the peer is down here.
        r.owners_gone(|o| o == "a");
        assert_eq!(r.get(&p.node).unwrap().state, PeerState::Up);
        r.owners_gone(|o| o == "b");
        assert_eq!(r.get(&p.node).unwrap().state, PeerState::Down);
        assert_eq!(drain(&mut events), vec![Event::PeerDown(p.node)]);
        // It rejoins here: this tracker owns it and publishes it; reaping and heartbeats are
        // this tracker's business only for its own peers.
        r.join(p.node, p.addrs.clone(), 1, 7);
        assert!(matches!(published.try_recv(), Ok((None, Event::PeerJoined(_)))));
        assert_eq!(r.owned_up().len(), 1);
        let q = info(2, "10.0.0.2:7001");
        r.apply_remote("b", Event::PeerJoined(q.clone()));
        let beat = || Beat { used: 0, chunks: 0, load: 0, capacity: 1, workers: vec![] };
        assert!(!r.heartbeat(&q.node, beat()), "another tracker's peer heartbeats there");
        r.reap(Duration::ZERO);
        assert_eq!(r.get(&q.node).unwrap().state, PeerState::Up, "not reaped by a tracker it does not beat to");
        assert_eq!(r.get(&p.node).unwrap().state, PeerState::Down, "its own silent peer is");
    }
}
