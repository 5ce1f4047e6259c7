//! Request handling for the tracker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use swarmfs_net::task::Statuses;
use swarmfs_net::{ConnCtx, Pool, Service, Swarm};
use swarmfs_proto::authz::Listener;
use swarmfs_proto::{
    ChunkId, ChunkPlacement, Credential, ErrorCode, FileId, HealthReport, Hello, LinkId, LinkInfo, NodeId, PeerInfo,
    PeerState, Reach, RemotePath, Request, Response, Role,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::db::{Db, MemberRow, NewDelta, NewEntry, NewFile, Owner, StoredPeer};
use crate::registry::{Beat, Registry};
use crate::workers::repair::{assess, RepairStats};
use crate::{TrackerConfig, TrackerError};

/// Most results a search returns.
const SEARCH_LIMIT: usize = 1000;

pub struct Tracker {
    db: Arc<Mutex<Db>>,
    /// Short reads run on the task that asks when the database is free (see [`Tracker::db_read`]).
    reads_inline: bool,
    pub(crate) registry: Registry,
    pub(crate) config: TrackerConfig,
    /// Connections to peers, for collect and repair orders.
    pub(crate) pool: Pool,
    pub(crate) repair: RepairStats,
    /// The tracker's workers, for `health`; set once they are started.
    workers: std::sync::OnceLock<Statuses>,
    /// Whether this tracker runs the work done once for all trackers (collector, repair).
    pub leadership: crate::mesh::Leadership,
    /// Told when members or links change here, for the other trackers (see mesh.rs).
    pub(crate) credentials_changed: tokio::sync::broadcast::Sender<()>,
    /// Told when the collector has answered for the chunks it claimed, so a commit waiting
    /// on one tries again at once (see [`Tracker::commit`]).
    pub(crate) collect_answered: tokio::sync::Notify,
    /// Members serving chunks they downloaded; never counted as replicas.
    cached: crate::sources::CachedSources,
    /// The tracker's own NodeId: a connection proving it is the admin (`swarmfs member`).
    own_id: NodeId,
    /// Members by name, as in the database; read on every hello, so kept in memory.
    members: Mutex<HashMap<String, MemberRow>>,
    /// Open connections of each member, closed when it is revoked.
    member_conns: Mutex<HashMap<String, Vec<(usize, CancellationToken)>>>,
    /// Each peer's session (the connection it opened to join), over which orders go: it
    /// works whether or not the tracker can dial the peer (behind NAT). By node, with the
    /// session it belongs to.
    sessions: Mutex<HashMap<NodeId, (usize, swarmfs_net::Connection)>>,
    /// Punches and relays to peers behind NAT.
    pub(crate) rendezvous: crate::rendezvous::Rendezvous,
    /// What it answered, for `--metrics`.
    pub metrics: swarmfs_net::metrics::Metrics,
    /// Links by id, as in the database; read on every hello and link request.
    links: Mutex<HashMap<LinkId, LinkInfo>>,
    /// Open connections of each link's holders, closed when it is revoked.
    link_conns: Mutex<HashMap<LinkId, Vec<(usize, CancellationToken)>>>,
}

/// Chunks with holders a commit may name for its collected-copies check to run inline.
const SHORT_RECHECK: usize = 16;

/// A CommitFile, CommitNewFile or CommitDelta request's fields.
enum CommitArgs {
    Whole {
        size: u64,
        file_id: swarmfs_proto::FileId,
        manifest: swarmfs_proto::SealedManifest,
        placements: Vec<ChunkPlacement>,
        mtime_ms: Option<i64>,
        replicas: u8,
        /// CommitNewFile's mode and owner for a path without an entry.
        created: Option<Owner>,
    },
    Delta {
        size: u64,
        parent: swarmfs_proto::FileId,
        file_id: swarmfs_proto::FileId,
        delta: swarmfs_proto::SealedDelta,
        placements: Vec<ChunkPlacement>,
        mtime_ms: Option<i64>,
    },
}

impl CommitArgs {
    fn placements(&self) -> &[ChunkPlacement] {
        match self {
            CommitArgs::Whole { placements, .. } | CommitArgs::Delta { placements, .. } => placements,
        }
    }
}

fn session_of(ctx: &Arc<ConnCtx>) -> usize {
    Arc::as_ptr(ctx) as usize
}

impl Tracker {
    pub fn new(mut db: Db, swarm: Arc<Swarm>, config: TrackerConfig) -> Result<Tracker, TrackerError> {
        db.set_gc_delay(config.gc_delay);
        let own_id = swarm.identity.node_id();
        let members = db.members()?.into_iter().map(|m| (m.name.clone(), m)).collect();
        let links = db.links()?.into_iter().map(|l| (l.id, l)).collect();
        let known = db
            .load_peers()?
            .into_iter()
            .map(|p| {
                let info = PeerInfo {
                    node: p.node,
                    addrs: p.addrs,
                    capacity: p.capacity,
                    used: p.used,
                    chunks: p.chunks,
                    load: 0,
                    state: PeerState::Down,
                    link: None,
                    reach: Reach::Unknown,
                };
                (info, p.draining)
            })
            .collect();
        Ok(Tracker {
            reads_inline: db.reads_locally(),
            db: Arc::new(Mutex::new(db)),
            registry: Registry::new(known),
            pool: Pool::new(swarm, Role::Tracker),
            repair: RepairStats::default(),
            workers: std::sync::OnceLock::new(),
            collect_answered: tokio::sync::Notify::new(),
            leadership: crate::mesh::Leadership::default(),
            credentials_changed: tokio::sync::broadcast::channel(16).0,
            cached: Default::default(),
            own_id,
            members: Mutex::new(members),
            member_conns: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            rendezvous: crate::rendezvous::Rendezvous::new(config.relay_rate),
            metrics: Default::default(),
            links: Mutex::new(links),
            link_conns: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// Members and links as the database has them now (another tracker changed them): the
    /// open connections of any revoked since end, as they would have on that tracker.
    pub(crate) async fn reload_credentials(&self) -> Result<(), TrackerError> {
        let (members, links) = self.db(|db| Ok((db.members()?, db.links()?))).await?;
        let mut closed = 0;
        for m in &members {
            if m.revoked {
                for (_, c) in self.member_conns.lock().expect("member conns").remove(&m.name).unwrap_or_default() {
                    c.cancel();
                    closed += 1;
                }
            }
        }
        for l in &links {
            if l.revoked {
                for (_, c) in self.link_conns.lock().expect("link conns").remove(&l.id).unwrap_or_default() {
                    c.cancel();
                    closed += 1;
                }
            }
        }
        *self.members.lock().expect("members") = members.into_iter().map(|m| (m.name.clone(), m)).collect();
        *self.links.lock().expect("links") = links.into_iter().map(|l| (l.id, l)).collect();
        tracing::info!(closed, "members and links reloaded (changed at another tracker)");
        Ok(())
    }

    pub(crate) fn set_workers(&self, statuses: Statuses) {
        let _ = self.workers.set(statuses);
    }

    /// The tracker's metrics: what it answered, peers by state, repair and relay counters,
    /// its workers.
    pub fn render_metrics(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = swarmfs_net::metrics::Exposition::default();
        self.metrics.render(&mut out);
        let peers = self.registry.snapshot();
        out.family("swarmfs_peers", "gauge", "Peers the tracker knows, by state.");
        for state in [PeerState::Up, PeerState::Down, PeerState::Left, PeerState::Draining] {
            let n = peers.iter().filter(|p| p.state == state).count();
            out.sample("swarmfs_peers", &[("state", state.as_str())], n as f64);
        }
        out.counter(
            "swarmfs_repair_copied_chunks_total",
            "Chunks repair copied since start.",
            self.repair.chunks.load(Relaxed) as f64,
        );
        out.counter(
            "swarmfs_repair_copied_bytes_total",
            "Bytes repair copied since start.",
            self.repair.bytes.load(Relaxed) as f64,
        );
        out.gauge("swarmfs_repair_in_flight", "Repair orders out now.", self.repair.in_flight.load(Relaxed) as f64);
        let relay = self.rendezvous.status();
        out.counter(
            "swarmfs_relay_bytes_total",
            "Bytes relayed to and from peers behind NAT since start.",
            relay.done as f64,
        );
        let mut workers = self.workers.get().map(Statuses::snapshot).unwrap_or_default();
        workers.extend(self.registry.peer_workers());
        out.workers(&workers);
        out.into_string()
    }

    /// The swarm's health, computed now from the database and the live membership.
    pub async fn health(&self) -> Result<HealthReport, TrackerError> {
        let view = self.db(|db| db.repair_view()).await?;
        let (mut report, _) = assess(&view, &self.registry.views(), self.config.repair_after);
        let in_flight = self.repair.in_flight.load(std::sync::atomic::Ordering::Relaxed);
        // Orders in flight are for under-replicated chunks: show them as being repaired.
        let repairing = in_flight.min(report.chunks.under_replicated);
        report.chunks.under_replicated -= repairing;
        report.chunks.repairing = repairing;
        report.repair_in_flight = in_flight;
        report.repaired_chunks = self.repair.chunks.load(std::sync::atomic::Ordering::Relaxed);
        report.repaired_bytes = self.repair.bytes.load(std::sync::atomic::Ordering::Relaxed);
        report.repair_rate_bps = self.repair.rate_bps();
        report.workers = self.workers.get().map(Statuses::snapshot).unwrap_or_default();
        report.workers.push(self.rendezvous.status());
        report.workers.extend(self.registry.peer_workers());
        Ok(report)
    }

    /// Commits a file version so that it never counts a copy the collector deletes: the
    /// collector claims the chunks it deletes in the database, and a commit naming a claimed
    /// chunk is refused there (`BeingCollected`) and tried again once the collector has
    /// answered (or the claim lapsed). So either the commit lands first and the chunk is no
    /// longer garbage, or the deletion is recorded first and the commit does not count that
    /// copy — whichever tracker runs the collector (see `Db::gc_due`).
    async fn commit(&self, path: RemotePath, file: CommitArgs) -> Result<swarmfs_proto::EntryInfo, TrackerError> {
        if matches!(&file, CommitArgs::Whole { manifest, .. } if !manifest.deltas.is_empty()) {
            return Err(TrackerError::Invalid("a whole commit carries no deltas".into()));
        }
        let file = Arc::new(file);
        loop {
            let answered = self.collect_answered.notified();
            self.recheck_collected(file.placements()).await?;
            let (path2, f) = (path.clone(), file.clone());
            let entry = self
                .db(move |db| match &*f {
                    CommitArgs::Whole { size, file_id, manifest, placements, mtime_ms, replicas, created } => {
                        let new = NewFile {
                            size: *size,
                            file_id: *file_id,
                            manifest,
                            placements,
                            mtime_ms: *mtime_ms,
                            replicas: *replicas,
                            created: *created,
                        };
                        db.commit_file(&path2, &new)
                    }
                    CommitArgs::Delta { size, parent, file_id, delta, placements, mtime_ms } => {
                        let new = NewDelta {
                            size: *size,
                            parent: *parent,
                            file_id: *file_id,
                            delta,
                            placements,
                            mtime_ms: *mtime_ms,
                        };
                        db.commit_delta(&path2, &new)
                    }
                })
                .await;
            match entry {
                // This tracker's collector wakes it; another tracker's is polled for.
                Err(TrackerError::BeingCollected(_)) => {
                    let _ = tokio::time::timeout(Duration::from_millis(250), answered).await;
                }
                other => return other,
            }
        }
    }

    /// Before a commit: a holder the collector deleted the chunk from may have stored it
    /// again since (a new upload of the same content) without having told the tracker yet.
    /// Ask it; copies it has are recorded, so the commit counts them.
    async fn recheck_collected(&self, placements: &[ChunkPlacement]) -> Result<(), TrackerError> {
        // Only chunks stored by this upload have holders to check (a mount's flush names
        // every chunk of the file, most of them unchanged).
        let p: Vec<ChunkPlacement> = placements.iter().filter(|p| !p.holders.is_empty()).cloned().collect();
        if p.is_empty() {
            return Ok(());
        }
        // A flush's few new chunks are a short read, done here (no hand-over to a blocking
        // thread and back, as for any short read); a big put's thousands are not.
        let gone = if p.len() <= SHORT_RECHECK {
            self.db_read(move |db| db.collected_among(&p)).await?
        } else {
            self.db(move |db| db.collected_among(&p)).await?
        };
        let mut by_node: HashMap<NodeId, Vec<swarmfs_proto::ChunkId>> = HashMap::new();
        for (chunk, node) in gone {
            by_node.entry(node).or_default().push(chunk);
        }
        for (node, chunks) in by_node {
            let Some(peer) = self.registry.get(&node).filter(|p| p.state.is_live()) else { continue };
            let asked = async {
                let conn = self.peer_conn(node, &peer.addrs).await?;
                conn.call_timeout(&Request::HasChunks { chunks: chunks.clone() }, Bytes::new(), Duration::from_secs(10))
                    .await
            }
            .await;
            if let Ok((Response::Has(has), _)) = asked {
                let present: Vec<_> = chunks.iter().zip(has).filter(|(_, h)| *h).map(|(c, _)| *c).collect();
                self.db(move |db| db.add_locations(&node, &present, false)).await?;
            }
        }
        Ok(())
    }

    /// Runs `f` on the database on a blocking thread: SQLite calls fsync.
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, TrackerError> + Send + 'static,
    ) -> Result<T, TrackerError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&mut db.lock().expect("db lock")))
            .await
            .map_err(|e| TrackerError::Invalid(format!("database task failed: {e}")))?
    }

    /// Runs a short read (one entry, one manifest) on the database. On an embedded database
    /// that nobody holds, it runs here and now: a few tens of microseconds of CPU, less than
    /// handing it to a blocking thread and back costs (a stat took 47 µs that way, most of it
    /// the two thread switches). Otherwise it waits its turn on a blocking thread, as
    /// [`Tracker::db`] does, so a long commit never holds up this task's worker.
    pub(crate) async fn db_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, TrackerError> + Send + 'static,
    ) -> Result<T, TrackerError> {
        if self.reads_inline {
            if let Ok(mut db) = self.db.try_lock() {
                return f(&mut db);
            }
        }
        self.db(f).await
    }

    /// Peer `node`'s open session, if it has one.
    pub(crate) fn session(&self, node: &NodeId) -> Option<swarmfs_net::Connection> {
        self.sessions.lock().expect("sessions").get(node).map(|(_, c)| c.clone()).filter(|c| !c.is_closed())
    }

    /// A connection to peer `node` for an order: its own session when it has one open, else
    /// a dialled one (a peer from before, or between sessions).
    pub(crate) async fn peer_conn(
        &self,
        node: NodeId,
        addrs: &[String],
    ) -> Result<swarmfs_net::Connection, swarmfs_net::NetError> {
        let session = self.sessions.lock().expect("sessions").get(&node).map(|(_, c)| c.clone());
        match session {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.pool.get(node, addrs).await,
        }
    }

    /// The file version a link connection may read; refused once the link is revoked (its
    /// connections are closed then too, but a request may already be on its way).
    fn linked_file(&self, id: &LinkId) -> Result<FileId, TrackerError> {
        match self.links.lock().expect("links").get(id) {
            Some(l) if !l.revoked => Ok(l.file_id),
            _ => Err(TrackerError::Forbidden("this link was revoked".into())),
        }
    }

    /// For a link's holder: every one of `chunks` must be its file's.
    async fn check_link_scope(&self, ctx: &ConnCtx, chunks: &[ChunkId]) -> Result<(), TrackerError> {
        let Credential::Link { id } = &ctx.credential else { return Ok(()) };
        let file = self.linked_file(id)?;
        let chunks = chunks.to_vec();
        if self.db(move |db| db.file_has_chunks(&file, &chunks)).await? {
            Ok(())
        } else {
            Err(TrackerError::Forbidden("a link reads one file and nothing else: that chunk is not its file's".into()))
        }
    }

    async fn dispatch(&self, ctx: &Arc<ConnCtx>, req: Request) -> Result<Response, TrackerError> {
        let node = ctx.remote;
        Ok(match req {
            Request::Join { addrs, capacity } => {
                let info = self.registry.join(node, addrs.clone(), capacity, session_of(ctx));
                self.sessions.lock().expect("sessions").insert(node, (session_of(ctx), ctx.conn.clone()));
                let draining = info.state == PeerState::Draining;
                self.db(move |db| {
                    db.save_peer(&StoredPeer { node, addrs, capacity, used: info.used, chunks: info.chunks, draining })
                })
                .await?;
                Response::Joined { peers: self.registry.snapshot(), observed_addr: ctx.remote_addr.to_string() }
            }
            Request::Heartbeat { used, chunks, load, capacity, workers } => {
                if !self.registry.heartbeat(&node, Beat { used, chunks, load, capacity, workers }) {
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
                self.check_link_scope(ctx, &[chunk]).await?;
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
                Response::Entry(self.db_read(move |db| db.stat(&path)).await?)
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
            Request::CommitFile { path, size, file_id, manifest, placements, mtime_ms, replicas } => {
                let file = CommitArgs::Whole { size, file_id, manifest, placements, mtime_ms, replicas, created: None };
                Response::Entry(self.commit(RemotePath::parse(&path)?, file).await?)
            }
            Request::CommitNewFile {
                path,
                size,
                file_id,
                manifest,
                placements,
                mtime_ms,
                replicas,
                mode,
                uid,
                gid,
            } => {
                let created = Some(Owner { mode, uid, gid });
                let file = CommitArgs::Whole { size, file_id, manifest, placements, mtime_ms, replicas, created };
                Response::Entry(self.commit(RemotePath::parse(&path)?, file).await?)
            }
            Request::CommitDelta { path, size, parent, file_id, delta, placements, mtime_ms } => {
                let path = RemotePath::parse(&path)?;
                let file = CommitArgs::Delta { size, parent, file_id, delta, placements, mtime_ms };
                Response::Entry(self.commit(path, file).await?)
            }
            Request::Health => Response::Health(Box::new(self.health().await?)),
            Request::Drain { node: target, on } => {
                if !self.db(move |db| db.set_draining(&target, on)).await? || !self.registry.set_draining(&target, on) {
                    return Err(TrackerError::NotFound(format!("no peer {} in this swarm", target.short())));
                }
                tracing::info!(node = %target.short(), on, "drain {}", if on { "started" } else { "stopped" });
                Response::Ok
            }
            Request::OpenFile { path } => {
                let path = RemotePath::parse(&path)?;
                let (entry, manifest) = self.db_read(move |db| db.open_file(&path)).await?;
                Response::File { entry, manifest }
            }
            Request::Search { text } => Response::Entries(self.db(move |db| db.search(&text, SEARCH_LIMIT)).await?),
            Request::Locate { chunks } => {
                self.check_link_scope(ctx, &chunks).await?;
                // A link's holder can dial members' sources and those of its own link only.
                let dialable = |p: &PeerInfo| match (&ctx.credential, p.link) {
                    (Credential::Link { id }, Some(theirs)) => *id == theirs,
                    _ => true,
                };
                let cached: Vec<Vec<PeerInfo>> =
                    chunks.iter().map(|c| self.cached.of(c).into_iter().filter(dialable).collect()).collect();
                let holders = self.db(move |db| db.locate(&chunks)).await?;
                let mut index: HashMap<NodeId, u32> = HashMap::new();
                let mut peers = Vec::new();
                let mut slot = |info: PeerInfo| -> u32 {
                    *index.entry(info.node).or_insert_with(|| {
                        peers.push(info);
                        (peers.len() - 1) as u32
                    })
                };
                let holders: Vec<Vec<u32>> = holders
                    .into_iter()
                    .map(|nodes| nodes.into_iter().filter_map(|n| self.registry.get(&n)).map(&mut slot).collect())
                    .collect();
                let cached = cached.into_iter().map(|srcs| srcs.into_iter().map(&mut slot).collect()).collect();
                Response::Locations { peers, holders, cached }
            }
            Request::Offer { addrs, chunks, replace } => {
                self.check_link_scope(ctx, &chunks).await?;
                let link = match &ctx.credential {
                    Credential::Link { id } => Some(*id),
                    _ => None,
                };
                let offer = crate::sources::Offered { addrs, link };
                self.cached.offer(node, session_of(ctx), offer, chunks, replace);
                Response::Ok
            }
            Request::SetAttr { path, mode, uid, gid, mtime_ms } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(self.db(move |db| db.set_attr(&path, mode, uid, gid, mtime_ms)).await?)
            }
            Request::Create { path, kind, mode, uid, gid, rdev, target, time_ms } => {
                let path = RemotePath::parse(&path)?;
                Response::Entry(
                    self.db(move |db| {
                        let new = NewEntry { kind, mode, uid, gid, rdev, target: target.as_deref(), time_ms };
                        db.create(&path, &new)
                    })
                    .await?,
                )
            }
            Request::ReadLink { path } => {
                let path = RemotePath::parse(&path)?;
                Response::Target(self.db_read(move |db| db.read_link(&path)).await?)
            }
            Request::PutChunk { .. }
            | Request::GetChunk { .. }
            | Request::HasChunks { .. }
            | Request::DeleteChunks { .. }
            | Request::CollectChunks { .. }
            | Request::ReplicateChunk { .. }
            | Request::PushChunk { .. }
            | Request::Rendezvous { .. }
            | Request::Ping => Response::error(ErrorCode::Unsupported, "the tracker stores no chunks"),
            Request::Punch { to } => self.punch(node, ctx.remote_addr, to).await?,
            Request::PunchReady { token } => self.punch_ready(node, ctx.remote_addr, token)?,
            Request::Punched { to, ok } => {
                self.registry.set_nat_reach(&to, if ok { Reach::Punch } else { Reach::Relay });
                Response::Ok
            }
            Request::Relay { .. } | Request::RelayJoin { .. } => {
                Response::error(ErrorCode::InvalidArgument, "a relay request must come first on a fresh connection")
            }
            Request::LinkCreate { path, file_id } => {
                let path = RemotePath::parse(&path)?;
                let by = match &ctx.credential {
                    Credential::Member { name, .. } => name.clone(),
                    _ => "admin".to_string(),
                };
                let id = LinkId(rand::random());
                let info = self.db(move |db| db.add_link(id, &path, file_id, &by)).await?;
                tracing::info!(link = %id.short(), path = %info.path, by = %info.created_by, "link made");
                self.links.lock().expect("links").insert(id, info.clone());
                let _ = self.credentials_changed.send(());
                Response::Link(info)
            }
            Request::LinkList => {
                let mut links: Vec<LinkInfo> = self.links.lock().expect("links").values().cloned().collect();
                links.sort_by_key(|l| l.created_ms);
                Response::Links(links)
            }
            Request::LinkRevoke { id } => {
                self.db(move |db| db.revoke_link(&id)).await?;
                if let Some(l) = self.links.lock().expect("links").get_mut(&id) {
                    l.revoked = true;
                }
                let open = self.link_conns.lock().expect("link conns").remove(&id).unwrap_or_default();
                for (_, closed) in &open {
                    closed.cancel();
                }
                tracing::info!(link = %id.short(), connections = open.len(), "link revoked");
                let _ = self.credentials_changed.send(());
                Response::Ok
            }
            Request::OpenLink => {
                let Credential::Link { id } = &ctx.credential else {
                    return Err(TrackerError::Forbidden("only a link's holder may open a link".into()));
                };
                let file = self.linked_file(id)?;
                let (entry, manifest) = self.db(move |db| db.open_file_id(&file)).await?;
                Response::File { entry, manifest }
            }
            Request::MemberAdd { name, read_only } => {
                let secret: [u8; 32] = rand::random();
                let row = self.db(move |db| db.add_member(&name, &secret, read_only)).await?;
                tracing::info!(member = %row.name, read_only, "member added");
                self.members.lock().expect("members").insert(row.name.clone(), row);
                let _ = self.credentials_changed.send(());
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
                let _ = self.credentials_changed.send(());
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

    fn metrics(&self) -> Option<&swarmfs_net::metrics::Metrics> {
        Some(&self.metrics)
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

    fn admit_link(&self, _remote: NodeId, id: LinkId) -> Result<(), String> {
        match self.links.lock().expect("links").get(&id) {
            Some(l) if !l.revoked => Ok(()),
            Some(_) => Err("this link was revoked: ask whoever gave it to you for a new one".into()),
            None => Err("this swarm has no such link".into()),
        }
    }

    fn on_open(&self, ctx: &Arc<ConnCtx>) {
        let session = (session_of(ctx), ctx.closed.clone());
        match &ctx.credential {
            Credential::Member { name, .. } => {
                self.member_conns.lock().expect("member conns").entry(name.clone()).or_default().push(session)
            }
            Credential::Link { id } => {
                self.link_conns.lock().expect("link conns").entry(*id).or_default().push(session)
            }
            _ => {}
        }
    }

    fn takes_over(&self) -> bool {
        true
    }

    async fn take_over(
        &self,
        first: swarmfs_net::FirstRequest,
        stream: swarmfs_net::RawStream,
        shutdown: CancellationToken,
    ) {
        self.relay_leg(first, stream, shutdown).await
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
            let mut sessions = self.sessions.lock().expect("sessions");
            if sessions.get(&ctx.remote).is_some_and(|(s, _)| *s == session_of(ctx)) {
                sessions.remove(&ctx.remote);
            }
        }
        self.cached.connection_closed(&ctx.remote, session_of(ctx));
        match &ctx.credential {
            Credential::Member { name, .. } => {
                if let Some(v) = self.member_conns.lock().expect("member conns").get_mut(name) {
                    v.retain(|(s, _)| *s != session_of(ctx));
                }
            }
            Credential::Link { id } => {
                if let Some(v) = self.link_conns.lock().expect("link conns").get_mut(id) {
                    v.retain(|(s, _)| *s != session_of(ctx));
                }
            }
            _ => {}
        }
    }
}
