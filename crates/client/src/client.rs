//! The client handle: a tracker connection, the peer pool and the data key.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmfs_core::{DataKey, Manifest};
use swarmfs_net::{Connection, Dialer, NetError, Swarm, Trackers};
use swarmfs_proto::{EntryInfo, LinkId, LinkInfo, NodeId, PeerInfo, PeerState, RemotePath, Request, Response, Role};

use crate::ClientError;
use swarmfs_net::dialer::Rendezvous;
use swarmfs_net::Pool;

/// Longest a tracker call may take, so nothing built on the client (a mount) hangs forever.
pub(crate) const TRACKER_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Client {
    tracker: std::sync::Mutex<Connection>,
    swarm: Arc<Swarm>,
    trackers: Arc<Trackers>,
    /// Since when no tracker has answered (None while connected): reads that already know
    /// their chunks go on from the peers for OUTAGE_GRACE.
    outage: std::sync::Mutex<Option<Instant>>,
    last_redial: std::sync::Mutex<Option<Instant>>,
    pub(crate) pool: Pool,
    pub(crate) data_key: Option<DataKey>,
    /// Live peers as last fetched, for placement; refreshed after LIVE_PEERS_TTL so a
    /// stream of small uploads (a mount) does not ask the tracker every time.
    live_cache: std::sync::Mutex<Option<(std::time::Instant, Vec<PeerInfo>)>>,
    /// Peers that left a chunk store unanswered, and until when placement puts them last.
    slow: std::sync::Mutex<HashMap<NodeId, Instant>>,
    /// Where verified chunks go when this client also serves them (`get --seed`).
    pub(crate) sink: std::sync::OnceLock<Arc<dyn crate::ChunkSink>>,
    /// Chunk bytes held at once by all of this client's puts and gets.
    pub(crate) budget: crate::budget::Budget,
}

/// How long a peer that stalled a store is placed last: long enough that one frozen peer
/// costs one hedge per upload window, short enough that a recovered peer is used again soon.
const SLOW_FOR: Duration = Duration::from_secs(30);

const LIVE_PEERS_TTL: Duration = Duration::from_secs(2);

/// How long reads that already know which peers hold their chunks go on while no tracker
/// answers (a mount's open files, a running `get`). New opens need a tracker and fail at
/// once with the dial's error.
pub const OUTAGE_GRACE: Duration = Duration::from_secs(300);

/// How often a read retries the trackers during an outage (each retry costs a connect).
const OUTAGE_REDIAL: Duration = Duration::from_secs(2);

fn dialer(swarm: &Swarm) -> Dialer<'_> {
    Dialer { identity: &swarm.identity, secret: &swarm.secret, member: swarm.member.as_ref(), role: Role::Client }
}

/// The trackers could not be reached at all (as opposed to one refusing this node, or an
/// address answered by another node).
fn is_unreachable(e: &NetError) -> bool {
    !e.is_refusal() && !matches!(e, NetError::WrongNode { .. })
}

impl Client {
    /// Connects to whichever of `tracker_addrs` answers (see [`Trackers`]).
    pub async fn connect(
        swarm: Arc<Swarm>,
        tracker_addrs: &[String],
        tracker_id: NodeId,
        data_key: Option<DataKey>,
    ) -> Result<Client, ClientError> {
        let trackers = Arc::new(Trackers::new(tracker_addrs.to_vec(), tracker_id));
        let (tracker, _events, _addr) = trackers.dial(&dialer(&swarm)).await?;
        let rendezvous = tracker_addrs.first().cloned().unwrap_or_default();
        Ok(Client {
            tracker: std::sync::Mutex::new(tracker),
            // Peers behind NAT are reached through the tracker (hole punching, relay): the
            // first one, which such peers must be connected to (a relay joins two sessions
            // on one tracker).
            pool: Pool::new(swarm.clone(), Role::Client)
                .with_rendezvous(Rendezvous { addr: rendezvous, node: tracker_id }),
            swarm,
            trackers,
            outage: std::sync::Mutex::new(None),
            last_redial: std::sync::Mutex::new(None),
            data_key,
            live_cache: std::sync::Mutex::new(None),
            slow: std::sync::Mutex::new(HashMap::new()),
            sink: std::sync::OnceLock::new(),
            budget: crate::budget::Budget::new(crate::budget::TRANSFER_BUDGET),
        })
    }

    /// A client with no home: a fresh identity, the link's secret as its only credential
    /// (it can open the link's file and nothing else). The same credentials serve what it
    /// fetched (`get LINK --seed`), to members and to holders of the same link.
    pub async fn connect_link(link: &swarmfs_core::Link) -> Result<(Client, Arc<Swarm>), ClientError> {
        let swarm = Arc::new(Swarm {
            identity: swarmfs_net::Identity::generate()?,
            secret: swarmfs_net::Secret::Link { id: link.id, secret: link.secret },
            member: None,
        });
        let client =
            Client::connect(swarm.clone(), std::slice::from_ref(&link.tracker_addr), link.tracker_id, None).await?;
        Ok((client, swarm))
    }

    /// Connections to peers this client opened by each path since it started: (direct,
    /// hole-punched, relayed).
    pub fn paths(&self) -> (u64, u64, u64) {
        self.pool.paths().get()
    }

    /// Hands every chunk this client verifies from now on (get, cat, a mount's reads) to
    /// `sink`, as ciphertext, so the caller can serve it to others. Set once.
    pub fn set_chunk_sink(&self, sink: Arc<dyn crate::ChunkSink>) {
        let _ = self.sink.set(sink);
    }

    /// The tracker connection, redialled if it has closed (a restarted tracker, or a dead
    /// one: then another of the swarm's trackers): a long-lived client such as a mount
    /// recovers by itself.
    async fn tracker(&self) -> Result<Connection, ClientError> {
        let current = self.tracker.lock().expect("tracker lock").clone();
        if !current.is_closed() {
            return Ok(current);
        }
        match self.trackers.dial(&dialer(&self.swarm)).await {
            Ok((fresh, _events, addr)) => {
                if self.outage.lock().expect("outage lock").take().is_some() {
                    tracing::info!(tracker = %addr, "a tracker answers again");
                }
                *self.tracker.lock().expect("tracker lock") = fresh.clone();
                Ok(fresh)
            }
            Err(e) => {
                self.outage.lock().expect("outage lock").get_or_insert_with(Instant::now);
                Err(e.into())
            }
        }
    }

    /// The address of the tracker this client talks to (the last that answered).
    pub fn tracker_addr(&self) -> &str {
        self.trackers.current()
    }

    /// Fails once the tracker has closed this client's connection and refuses a new one (a
    /// revoked member): long reads check this per chunk, so they stop within moments
    /// instead of going on with the peers alone. Costs nothing while connected. While no
    /// tracker answers at all, reads go on from the peers they know for OUTAGE_GRACE,
    /// retrying the trackers every OUTAGE_REDIAL: losing every tracker for a while must not
    /// stop the reads that need none.
    pub(crate) async fn still_admitted(&self) -> Result<(), ClientError> {
        let closed = self.tracker.lock().expect("tracker lock").is_closed();
        if !closed {
            return Ok(());
        }
        let outage = *self.outage.lock().expect("outage lock");
        if let Some(since) = outage {
            if since.elapsed() < OUTAGE_GRACE && self.last_redial_recent() {
                return Ok(());
            }
        }
        match self.tracker().await {
            Ok(_) => Ok(()),
            Err(ClientError::Net(e)) if is_unreachable(&e) => {
                let since = self.outage.lock().expect("outage lock").unwrap_or_else(Instant::now);
                if since.elapsed() < OUTAGE_GRACE {
                    if outage.is_none() {
                        tracing::warn!("no tracker answers ({e}); reading on from the peers");
                    }
                    Ok(())
                } else {
                    Err(ClientError::Net(e))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// True if a redial was tried within OUTAGE_REDIAL; otherwise records one now.
    fn last_redial_recent(&self) -> bool {
        let mut last = self.last_redial.lock().expect("redial lock");
        if last.is_some_and(|t| t.elapsed() < OUTAGE_REDIAL) {
            return true;
        }
        *last = Some(Instant::now());
        false
    }

    /// Makes a link to the file at `path` as it is now (that version): the tracker records
    /// it, and the returned link carries the file's key and the link's secret.
    pub async fn make_link(&self, path: &RemotePath) -> Result<(swarmfs_core::Link, LinkInfo), ClientError> {
        let data_key = self.data_key()?.clone();
        let swarmfs_net::Secret::Swarm(swarm_secret) = &self.swarm.secret else {
            return Err(ClientError::Invalid("a link's holder cannot make links".into()));
        };
        let (entry, sealed) = match self.call(&Request::OpenFile { path: path.to_string() }).await? {
            Response::File { entry, manifest } => (entry, manifest),
            _ => return Err(ClientError::Unexpected("tracker")),
        };
        let (Some(file_id), false) = (entry.file_id, sealed.body.is_empty()) else {
            return Err(ClientError::Invalid(format!("{path} has no content yet to link to")));
        };
        let file_key = Manifest::file_key(&sealed, &data_key)?;
        let info = match self.call(&Request::LinkCreate { path: path.to_string(), file_id }).await? {
            Response::Link(info) => info,
            _ => return Err(ClientError::Unexpected("tracker")),
        };
        let link = swarmfs_core::Link {
            tracker_addr: self.trackers.addrs().first().cloned().unwrap_or_default(),
            tracker_id: self.trackers.node(),
            id: info.id,
            secret: swarmfs_net::auth::link_secret(swarm_secret, &info.id),
            file_id,
            file_key,
        };
        Ok((link, info))
    }

    pub async fn links(&self) -> Result<Vec<LinkInfo>, ClientError> {
        match self.call(&Request::LinkList).await? {
            Response::Links(l) => Ok(l),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    pub async fn revoke_link(&self, id: LinkId) -> Result<(), ClientError> {
        self.call(&Request::LinkRevoke { id }).await.map(|_| ())
    }

    /// The chunk bytes this client holds at once, for callers that hold chunks of their own.
    pub fn budget(&self) -> &crate::budget::Budget {
        &self.budget
    }

    pub fn data_key(&self) -> Result<&DataKey, ClientError> {
        self.data_key.as_ref().ok_or(ClientError::NoDataKey)
    }

    /// One tracker request; an error reply becomes [`ClientError::Remote`].
    pub async fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let tracker = self.tracker().await?;
        match tracker.call_timeout(req, Bytes::new(), TRACKER_TIMEOUT).await?.0 {
            Response::Error { code, message } => Err(ClientError::Remote { code, message }),
            r => Ok(r),
        }
    }

    pub async fn peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        match self.call(&Request::ListPeers).await? {
            Response::Peers(p) => Ok(p),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    pub async fn live_peers(&self) -> Result<Vec<PeerInfo>, ClientError> {
        let live: Vec<PeerInfo> = self.peers().await?.into_iter().filter(|p| p.state == PeerState::Up).collect();
        *self.live_cache.lock().expect("cache lock") = Some((Instant::now(), live.clone()));
        Ok(live)
    }

    /// Live peers, possibly up to LIVE_PEERS_TTL old: a peer that died since is skipped by
    /// the uploader's replacement logic like any failing peer.
    pub async fn live_peers_cached(&self) -> Result<Vec<PeerInfo>, ClientError> {
        if let Some((at, peers)) = self.live_cache.lock().expect("cache lock").as_ref() {
            if at.elapsed() < LIVE_PEERS_TTL && !peers.is_empty() {
                return Ok(peers.clone());
            }
        }
        self.live_peers().await
    }

    pub(crate) fn mark_slow(&self, node: NodeId) {
        self.slow.lock().expect("slow lock").insert(node, Instant::now() + SLOW_FOR);
    }

    pub(crate) fn is_slow(&self, node: &NodeId) -> bool {
        let mut slow = self.slow.lock().expect("slow lock");
        match slow.get(node) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                slow.remove(node);
                false
            }
            None => false,
        }
    }

    /// Round-trip time to each peer, for the lowest-latency policy.
    pub async fn measure_rtt(&self, peers: &[PeerInfo]) -> HashMap<NodeId, Duration> {
        let mut out = HashMap::new();
        for p in peers {
            let Ok(conn) = self.pool.connect(p).await else {
                continue;
            };
            let t = Instant::now();
            if conn.call_timeout(&Request::Ping, Bytes::new(), Duration::from_secs(5)).await.is_ok() {
                out.insert(p.node, t.elapsed());
            }
        }
        out
    }

    async fn entry(&self, req: Request) -> Result<EntryInfo, ClientError> {
        match self.call(&req).await? {
            Response::Entry(e) => Ok(e),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    async fn entries(&self, req: Request) -> Result<Vec<EntryInfo>, ClientError> {
        match self.call(&req).await? {
            Response::Entries(e) => Ok(e),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    pub async fn mkdir(&self, path: &RemotePath, parents: bool) -> Result<EntryInfo, ClientError> {
        self.entry(Request::Mkdir { path: path.to_string(), parents }).await
    }

    pub async fn list(&self, path: &RemotePath) -> Result<Vec<EntryInfo>, ClientError> {
        self.entries(Request::List { path: path.to_string() }).await
    }

    pub async fn stat(&self, path: &RemotePath) -> Result<EntryInfo, ClientError> {
        self.entry(Request::Stat { path: path.to_string() }).await
    }

    pub async fn search(&self, text: &str) -> Result<Vec<EntryInfo>, ClientError> {
        self.entries(Request::Search { text: text.to_string() }).await
    }

    pub async fn rename(&self, from: &RemotePath, to: &RemotePath) -> Result<(), ClientError> {
        self.call(&Request::Rename { from: from.to_string(), to: to.to_string() }).await.map(|_| ())
    }

    pub async fn set_attr(
        &self,
        path: &RemotePath,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        mtime_ms: Option<i64>,
    ) -> Result<EntryInfo, ClientError> {
        self.entry(Request::SetAttr { path: path.to_string(), mode, uid, gid, mtime_ms }).await
    }

    /// Creates an empty file, a directory, a symlink or a special file; fails if the name exists.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        path: &RemotePath,
        kind: swarmfs_proto::EntryKind,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u32,
        target: Option<String>,
    ) -> Result<EntryInfo, ClientError> {
        self.entry(Request::Create { path: path.to_string(), kind, mode, uid, gid, rdev, target, time_ms: None }).await
    }

    /// Creates an empty file whose mtime and ctime are `time_ms`: what a mount that answered
    /// the create before asking told the program (see `Request::Create`).
    pub async fn create_file_at(
        &self,
        path: &RemotePath,
        mode: u32,
        uid: u32,
        gid: u32,
        time_ms: i64,
    ) -> Result<EntryInfo, ClientError> {
        let kind = swarmfs_proto::EntryKind::File;
        let req = Request::Create {
            path: path.to_string(),
            kind,
            mode,
            uid,
            gid,
            rdev: 0,
            target: None,
            time_ms: Some(time_ms),
        };
        self.entry(req).await
    }

    pub async fn read_link(&self, path: &RemotePath) -> Result<String, ClientError> {
        match self.call(&Request::ReadLink { path: path.to_string() }).await? {
            Response::Target(t) => Ok(t),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    pub async fn remove(&self, path: &RemotePath, recursive: bool) -> Result<(), ClientError> {
        self.call(&Request::Remove { path: path.to_string(), recursive }).await.map(|_| ())
    }
}
