//! Request handling for the tracker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use swarmfs_net::{ConnCtx, Service};
use swarmfs_proto::authz::Listener;
use swarmfs_proto::{Credential, ErrorCode, Hello, NodeId, PeerInfo, PeerState, RemotePath, Request, Response, Role};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::db::{Db, MemberRow, NewEntry, StoredPeer};
use crate::registry::Registry;
use crate::TrackerError;

/// Most results a search returns.
const SEARCH_LIMIT: usize = 1000;

pub struct Tracker {
    db: Arc<Mutex<Db>>,
    registry: Registry,
    peer_timeout: Duration,
    gc_delay: Duration,
    /// The tracker's own NodeId: a connection proving it is the admin (`swarmfs member`).
    own_id: NodeId,
    /// Members by name, as in the database; read on every hello, so kept in memory.
    members: Mutex<HashMap<String, MemberRow>>,
    /// Open connections of each member, closed when it is revoked.
    member_conns: Mutex<HashMap<String, Vec<(usize, CancellationToken)>>>,
}

fn session_of(ctx: &Arc<ConnCtx>) -> usize {
    Arc::as_ptr(ctx) as usize
}

impl Tracker {
    pub fn new(
        mut db: Db,
        own_id: NodeId,
        peer_timeout: Duration,
        gc_delay: Duration,
    ) -> Result<Tracker, TrackerError> {
        db.set_gc_delay(gc_delay);
        let members = db.members()?.into_iter().map(|m| (m.name.clone(), m)).collect();
        let known = db
            .load_peers()?
            .into_iter()
            .map(|p| PeerInfo {
                node: p.node,
                addrs: p.addrs,
                capacity: p.capacity,
                used: p.used,
                chunks: p.chunks,
                load: 0,
                state: PeerState::Down,
            })
            .collect();
        Ok(Tracker {
            db: Arc::new(Mutex::new(db)),
            registry: Registry::new(known),
            peer_timeout,
            gc_delay,
            own_id,
            members: Mutex::new(members),
            member_conns: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `f` on the database on a blocking thread: SQLite calls fsync.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, TrackerError> + Send + 'static,
    ) -> Result<T, TrackerError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&mut db.lock().expect("db lock")))
            .await
            .map_err(|e| TrackerError::Invalid(format!("database task failed: {e}")))?
    }

    pub async fn reap_silent_peers(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = (self.peer_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => self.registry.reap(self.peer_timeout),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// The garbage collector: chunks no file version references any more are deleted from
    /// their holders once `gc_delay` has passed (a grace period for uploads that will still
    /// reference them), then forgotten.
    pub async fn collect_garbage(self: Arc<Self>, swarm: Arc<swarmfs_net::Swarm>, shutdown: CancellationToken) {
        let tick = (self.gc_delay / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = self.gc_round(&swarm).await {
                warn!("garbage collection round failed: {e}");
            }
        }
    }

    async fn gc_round(&self, swarm: &swarmfs_net::Swarm) -> Result<(), TrackerError> {
        let due = self.db(|db| db.gc_due(4096)).await?;
        let mut by_node: HashMap<swarmfs_proto::NodeId, Vec<swarmfs_proto::ChunkId>> = HashMap::new();
        for (chunk, holders) in due {
            if holders.is_empty() {
                self.db(move |db| db.gc_forget(&chunk)).await?;
            }
            for n in holders {
                by_node.entry(n).or_default().push(chunk);
            }
        }
        for (node, chunks) in by_node {
            // Down peers keep their garbage queued until they are back.
            let Some(peer) = self.registry.get(&node).filter(|p| p.state == PeerState::Up) else { continue };
            let Some(addr) = peer.addrs.first() else { continue };
            let req = Request::CollectChunks { chunks: chunks.clone(), idle_ms: self.gc_delay.as_millis() as u64 };
            let reply = async {
                let (conn, _) = swarmfs_net::dial(swarm, addr, node, Role::Tracker).await?;
                conn.call_timeout(&req, Bytes::new(), Duration::from_secs(60)).await
            }
            .await;
            match reply {
                Ok((Response::Collected(gone), _)) if gone.len() == chunks.len() => {
                    let collected: Vec<_> = chunks.iter().zip(gone).filter(|(_, g)| *g).map(|(c, _)| *c).collect();
                    if !collected.is_empty() {
                        tracing::info!(node = %node.short(), chunks = collected.len(), "garbage collected");
                        self.db(move |db| db.gc_done(&node, &collected)).await?;
                    }
                }
                Ok(other) => warn!(node = %node.short(), "unexpected answer to collect: {:?}", other.0),
                Err(e) => warn!(node = %node.short(), "could not collect garbage: {e}"),
            }
        }
        Ok(())
    }

    async fn dispatch(&self, ctx: &Arc<ConnCtx>, req: Request) -> Result<Response, TrackerError> {
        let node = ctx.remote;
        Ok(match req {
            Request::Join { addrs, capacity } => {
                let info = self.registry.join(node, addrs.clone(), capacity, session_of(ctx));
                self.db(move |db| {
                    db.save_peer(&StoredPeer { node, addrs, capacity, used: info.used, chunks: info.chunks })
                })
                .await?;
                Response::Joined { peers: self.registry.snapshot() }
            }
            Request::Heartbeat { used, chunks, load, capacity } => {
                if !self.registry.heartbeat(&node, used, chunks, load, capacity) {
                    return Err(TrackerError::Invalid("heartbeat before join".into()));
                }
                Response::Ok
            }
            Request::Leave => {
                self.registry.leave(&node);
                Response::Ok
            }
            Request::Subscribe => {
                let rx = self.registry.subscribe();
                tokio::spawn(forward_events(ctx.clone(), rx));
                Response::Ok
            }
            Request::Inventory { chunks, first } => {
                self.db(move |db| db.add_locations(&node, &chunks, first)).await?;
                Response::Ok
            }
            Request::RegisterChunks { chunks } => {
                self.db(move |db| db.add_locations(&node, &chunks, false)).await?;
                Response::Ok
            }
            Request::UnregisterChunks { chunks } => {
                self.db(move |db| db.remove_locations(&node, &chunks)).await?;
                Response::Ok
            }
            Request::ReportBadChunk { chunk, node: holder } => {
                warn!(chunk = %chunk.short(), holder = %holder.short(), reporter = %node.short(), "bad chunk copy reported");
                self.db(move |db| db.remove_locations(&holder, &[chunk])).await?;
                Response::Ok
            }
            Request::ListPeers => Response::Peers(self.registry.snapshot()),
            Request::Mkdir { path, parents } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(self.db(move |db| db.mkdir(&path, parents)).await?)
            }
            Request::List { path } => {
                let path = RemotePath::parse(&path)?;
                Response::Entries(self.db(move |db| db.list(&path)).await?)
            }
            Request::Stat { path } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(self.db(move |db| db.stat(&path)).await?)
            }
            Request::Rename { from, to } => {
                let (from, to) = (RemotePath::parse(&from)?, RemotePath::parse(&to)?);
                self.db(move |db| db.rename(&from, &to)).await?;
                Response::Ok
            }
            Request::Remove { path, recursive } => {
                let path = RemotePath::parse(&path)?;
                self.db(move |db| db.remove(&path, recursive)).await?;
                Response::Ok
            }
            Request::CommitFile { path, size, file_id, manifest, placements, mtime_ms } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(
                    self.db(move |db| db.commit_file(&path, size, file_id, &manifest, &placements, mtime_ms)).await?,
                )
            }
            Request::OpenFile { path } => {
                let path = RemotePath::parse(&path)?;
                let (entry, manifest) = self.db(move |db| db.open_file(&path)).await?;
                Response::File { entry, manifest }
            }
            Request::Search { text } => Response::Entries(self.db(move |db| db.search(&text, SEARCH_LIMIT)).await?),
            Request::Locate { chunks } => {
                let holders = self.db(move |db| db.locate(&chunks)).await?;
                let mut index: HashMap<_, u32> = HashMap::new();
                let mut peers = Vec::new();
                let holders = holders
                    .into_iter()
                    .map(|nodes| {
                        nodes
                            .into_iter()
                            .filter_map(|n| {
                                if let Some(i) = index.get(&n) {
                                    return Some(*i);
                                }
                                let info = self.registry.get(&n)?;
                                let i = peers.len() as u32;
                                peers.push(info);
                                index.insert(n, i);
                                Some(i)
                            })
                            .collect()
                    })
                    .collect();
                Response::Locations { peers, holders }
            }
            Request::SetAttr { path, mode, uid, gid, mtime_ms } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(self.db(move |db| db.set_attr(&path, mode, uid, gid, mtime_ms)).await?)
            }
            Request::Create { path, kind, mode, uid, gid, rdev, target } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(
                    self.db(move |db| {
                        let new = NewEntry { kind, mode, uid, gid, rdev, target: target.as_deref() };
                        db.create(&path, &new)
                    })
                    .await?,
                )
            }
            Request::ReadLink { path } => {
                let path = RemotePath::parse(&path)?;
                Response::Target(self.db(move |db| db.read_link(&path)).await?)
            }
            Request::PutChunk { .. }
            | Request::GetChunk { .. }
            | Request::HasChunks { .. }
            | Request::DeleteChunks { .. }
            | Request::CollectChunks { .. }
            | Request::Ping => Response::error(ErrorCode::Unsupported, "the tracker stores no chunks"),
            Request::MemberAdd { name, read_only } => {
                let secret: [u8; 32] = rand::random();
                let row = self.db(move |db| db.add_member(&name, &secret, read_only)).await?;
                tracing::info!(member = %row.name, read_only, "member added");
                self.members.lock().expect("members").insert(row.name.clone(), row);
                Response::MemberSecret(secret)
            }
            Request::MemberList => {
                Response::Members(self.members.lock().expect("members").values().map(MemberRow::info).collect())
            }
            Request::MemberRevoke { name } => {
                let n = name.clone();
                self.db(move |db| db.revoke_member(&n)).await?;
                if let Some(m) = self.members.lock().expect("members").get_mut(&name) {
                    m.revoked = true;
                }
                // Its open connections end now: the next request on them fails, and a
                // reconnect is refused in the hello.
                let open = self.member_conns.lock().expect("member conns").remove(&name).unwrap_or_default();
                for (_, closed) in &open {
                    closed.cancel();
                }
                tracing::info!(member = %name, connections = open.len(), "member revoked");
                Response::Ok
            }
        })
    }
}

async fn forward_events(ctx: Arc<ConnCtx>, mut rx: broadcast::Receiver<swarmfs_proto::Event>) {
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = ctx.closed.cancelled() => return,
        };
        match ev {
            Ok(ev) => {
                if ctx.push_event(&ev).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(remote = %ctx.remote.short(), "subscriber lagged; {n} events dropped")
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Service for Tracker {
    fn listener(&self) -> Listener {
        Listener::Tracker
    }

    fn admit(&self, remote: NodeId, hello: &Hello, exporter: &[u8; 32]) -> Result<Credential, String> {
        if remote == self.own_id {
            return Ok(Credential::Tracker);
        }
        let Some(claim) = &hello.member else {
            return Ok(Credential::Peer);
        };
        let members = self.members.lock().expect("members");
        let Some(m) = members.get(&claim.name) else {
            return Err(format!("{:?} is not a member of this swarm: ask its admin for a member token", claim.name));
        };
        if !swarmfs_net::auth::ct_eq(&claim.proof, &swarmfs_net::auth::member_proof(&m.secret, exporter)) {
            return Err(format!("the credential of member {:?} does not match", claim.name));
        }
        if m.revoked {
            return Err(format!("member {:?} was revoked: ask the swarm's admin for a new member token", claim.name));
        }
        Ok(Credential::Member { name: m.name.clone(), read_only: m.read_only })
    }

    fn on_open(&self, ctx: &Arc<ConnCtx>) {
        if let Credential::Member { name, .. } = &ctx.credential {
            let mut conns = self.member_conns.lock().expect("member conns");
            conns.entry(name.clone()).or_default().push((session_of(ctx), ctx.closed.clone()));
        }
    }

    async fn handle(&self, ctx: &Arc<ConnCtx>, req: Request, _payload: Bytes) -> (Response, Bytes) {
        let name = req.name();
        let resp = match self.dispatch(ctx, req).await {
            Ok(r) => r,
            Err(e) => {
                debug!(request = name, "refused: {e}");
                e.to_response()
            }
        };
        (resp, Bytes::new())
    }

    async fn on_close(&self, ctx: &Arc<ConnCtx>) {
        if ctx.role == Role::Peer {
            self.registry.connection_closed(&ctx.remote, session_of(ctx));
        }
        if let Credential::Member { name, .. } = &ctx.credential {
            let mut conns = self.member_conns.lock().expect("member conns");
            if let Some(v) = conns.get_mut(name) {
                v.retain(|(s, _)| *s != session_of(ctx));
            }
        }
    }
}
