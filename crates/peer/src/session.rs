//! The peer's session with the tracker: join, send the inventory, subscribe to membership,
//! heartbeat. Any failure drops the session and a new one starts after a short backoff, so a
//! restarted tracker gets every peer back, with its inventory, within seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use swarmfs_net::task::Statuses;
use swarmfs_net::{Dialer, Swarm, Trackers};
use swarmfs_proto::{ChunkId, Event, NodeId, PeerInfo, Request, Response, Role};
use swarmfs_store::ChunkStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{PeerConfig, PeerError, PeerService};

const INVENTORY_BATCH: usize = 16 * 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the session forwards to the tracker besides its own requests.
pub struct Reports {
    /// Copies found corrupt (by reads or the scrubber): unregistered.
    pub corrupt: mpsc::UnboundedReceiver<ChunkId>,
    /// Chunks newly written: registered in batches with the next heartbeat.
    pub stored: mpsc::UnboundedReceiver<ChunkId>,
    /// The peer's background workers, sent with every heartbeat.
    pub workers: Statuses,
}

pub async fn run(
    swarm: Arc<Swarm>,
    config: PeerConfig,
    advertise: String,
    store: Arc<ChunkStore>,
    service: Arc<PeerService>,
    mut reports: Reports,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let mut members: HashMap<NodeId, PeerInfo> = HashMap::new();
    // Kept across sessions: a new session starts with the tracker that answered last.
    let trackers = Trackers::new(config.tracker_addrs.clone(), config.tracker_id);
    loop {
        let r =
            session(&swarm, &config, &trackers, &advertise, &store, &service, &mut reports, &mut members, &shutdown)
                .await;
        match r {
            Ok(()) => return,
            Err(e) => warn!("tracker session ended: {e}; reconnecting in {backoff:?}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn call(conn: &swarmfs_net::Connection, req: &Request) -> Result<Response, PeerError> {
    call_within(conn, req, CALL_TIMEOUT).await
}

async fn call_within(conn: &swarmfs_net::Connection, req: &Request, timeout: Duration) -> Result<Response, PeerError> {
    match conn.call_timeout(req, Bytes::new(), timeout).await?.0 {
        Response::Error { message, .. } => Err(PeerError::Refused(message)),
        r => Ok(r),
    }
}

fn log_event(members: &mut HashMap<NodeId, PeerInfo>, ev: Event) {
    match ev {
        Event::PeerJoined(p) => {
            info!(node = %p.node.short(), addrs = %p.addrs.join(","), "member joined");
            members.insert(p.node, p);
        }
        Event::PeerAddrChanged(p) => {
            info!(node = %p.node.short(), addrs = %p.addrs.join(","), "member address changed");
            members.insert(p.node, p);
        }
        Event::PeerLeft(n) => {
            info!(node = %n.short(), "member left");
            members.remove(&n);
        }
        Event::PeerDown(n) => {
            info!(node = %n.short(), "member down");
            members.remove(&n);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    swarm: &Swarm,
    config: &PeerConfig,
    trackers: &Trackers,
    advertise: &str,
    store: &Arc<ChunkStore>,
    service: &Arc<PeerService>,
    reports: &mut Reports,
    members: &mut HashMap<NodeId, PeerInfo>,
    shutdown: &CancellationToken,
) -> Result<(), PeerError> {
    // The tracker's orders (collect, repair) come back over this same connection.
    let dialer = Dialer { identity: &swarm.identity, secret: &swarm.secret, member: None, role: Role::Peer };
    let (conn, mut events, tracker) = trackers.dial_serving(&dialer, Some(service.clone())).await?;
    // Subscribe first so no membership change between join and subscribe is missed.
    call(&conn, &Request::Subscribe).await?;
    let joined = call(&conn, &Request::Join { addrs: vec![advertise.to_string()], capacity: store.capacity() }).await?;
    if let Response::Joined { peers, observed_addr } = joined {
        info!(observed = %observed_addr, advertised = %advertise, "the tracker sees this peer connect from");
        members.clear();
        for p in peers.into_iter().filter(|p| p.state == swarmfs_proto::PeerState::Up) {
            members.insert(p.node, p);
        }
        info!(members = members.len(), %tracker, "joined the swarm");
    }
    // Chunks written so far will be in the inventory; chunks written from now on are
    // registered with the heartbeats (a few may be sent twice, which is harmless).
    while reports.stored.try_recv().is_ok() {}
    let st = store.clone();
    let inventory =
        tokio::task::spawn_blocking(move || st.list()).await.map_err(|e| PeerError::Task(e.to_string()))??;
    let mut first = true;
    for batch in inventory.chunks(INVENTORY_BATCH) {
        call(&conn, &Request::Inventory { chunks: batch.to_vec(), first }).await?;
        first = false;
    }
    if first {
        call(&conn, &Request::Inventory { chunks: vec![], first: true }).await?;
    }
    info!(chunks = inventory.len(), "inventory sent");

    let mut tick = tokio::time::interval(config.heartbeat);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let mut stored = Vec::new();
                while let Ok(id) = reports.stored.try_recv() {
                    stored.push(id);
                }
                // Only what is still here: a copy written and then found corrupt before this
                // tick was unregistered already, and registering it now would make the tracker
                // count a copy that is gone (so nothing would repair it). A copy quarantined
                // after this check is unregistered after this batch, by this same loop.
                let st = store.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    stored.retain(|id| st.has(id));
                    stored
                })
                .await
                .map_err(|e| PeerError::Task(e.to_string()))?;
                for batch in stored.chunks(INVENTORY_BATCH) {
                    call(&conn, &Request::RegisterChunks { chunks: batch.to_vec() }).await?;
                }
                let heartbeat = Request::Heartbeat {
                    used: store.used(),
                    chunks: store.count(),
                    load: service.load(),
                    capacity: store.capacity(),
                    workers: reports.workers.snapshot(),
                };
                // A tracker that stopped answering (its machine died) is left for another
                // within a few heartbeats rather than the long call timeout.
                call_within(&conn, &heartbeat, (config.heartbeat * 3).max(Duration::from_secs(5))).await?;
            }
            ev = events.recv() => match ev {
                Some(ev) => log_event(members, ev),
                None => return Err(PeerError::Net(swarmfs_net::NetError::Closed)),
            },
            Some(id) = reports.corrupt.recv() => {
                call(&conn, &Request::UnregisterChunks { chunks: vec![id] }).await?;
            }
            _ = conn.closed() => return Err(PeerError::Net(swarmfs_net::NetError::Closed)),
            _ = shutdown.cancelled() => {
                let _ = conn.call_timeout(&Request::Leave, Bytes::new(), Duration::from_secs(2)).await;
                info!("left the swarm");
                return Ok(());
            }
        }
    }
}
