//! Chunk requests. Disk work runs on blocking threads so a slow fsync never stalls the
//! connection tasks.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use swarmfs_net::dialer::{Rendezvous, RendezvousOrder};
use swarmfs_net::{ConnCtx, Pool, Service, Swarm};
use swarmfs_proto::authz::Listener;
use swarmfs_proto::{ChunkId, Credential, ErrorCode, Hello, NodeId, PeerInfo, Request, Response, Role};
use swarmfs_store::{ChunkStore, StoreError};
use tokio::sync::mpsc;
use tracing::warn;

pub struct PeerService {
    store: Arc<ChunkStore>,
    /// The swarm's tracker: the only node whose orders to delete chunks are followed.
    tracker_id: NodeId,
    in_flight: AtomicU32,
    /// Chunks found corrupt, for the session to unregister at the tracker.
    corrupt_tx: mpsc::UnboundedSender<ChunkId>,
    corrupt_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<ChunkId>>>,
    /// Chunks newly written, for the session to register at the tracker in batches: the
    /// tracker then knows every copy, committed or not, and collects those no file uses.
    stored_tx: mpsc::UnboundedSender<ChunkId>,
    stored_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<ChunkId>>>,
    /// Connections to other peers, for repair copies.
    pool: Pool,
    own_id: NodeId,
    /// Chunk bytes sent to others (GetChunk answers), for logs and `get --seed`.
    served_bytes: std::sync::atomic::AtomicU64,
    /// The tracker's rendezvous orders (a node wants to reach this one behind NAT), for the
    /// task that opens their legs (`swarmfs_net::dialer::serve_rendezvous`).
    rendezvous_tx: mpsc::Sender<RendezvousOrder>,
    rendezvous_rx: std::sync::Mutex<Option<mpsc::Receiver<RendezvousOrder>>>,
    /// What it answered, for `--metrics`.
    pub metrics: swarmfs_net::metrics::Metrics,
}

/// Rendezvous orders waiting for their leg to be opened; more are answered `Busy`.
const RENDEZVOUS_QUEUE: usize = 64;

/// How long one repair copy may take from one source before the next is tried: a stopped
/// source must not hold the order (the tracker gives it 90 s in all) for long.
const REPLICATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn store_error(e: StoreError) -> Response {
    let code = match &e {
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::NoSpace { .. } => ErrorCode::NoSpace,
        StoreError::HashMismatch(_) | StoreError::BadRange { .. } => ErrorCode::InvalidArgument,
        StoreError::Corrupt(_) => ErrorCode::Corrupt,
        _ => ErrorCode::Internal,
    };
    Response::error(code, e.to_string())
}

impl PeerService {
    /// `rendezvous`: the tracker, through which this peer reaches others behind NAT (a
    /// cached source that is no storage peer has none).
    pub fn new(
        store: Arc<ChunkStore>,
        tracker_id: NodeId,
        swarm: Arc<Swarm>,
        rendezvous: Option<Rendezvous>,
    ) -> PeerService {
        let (corrupt_tx, rx) = mpsc::unbounded_channel();
        let (rendezvous_tx, rendezvous_rx) = mpsc::channel(RENDEZVOUS_QUEUE);
        let pool = match rendezvous {
            Some(rv) => Pool::new(swarm.clone(), Role::Peer).with_rendezvous(rv),
            None => Pool::new(swarm.clone(), Role::Peer),
        };
        let (stored_tx, stored_rx) = mpsc::unbounded_channel();
        PeerService {
            store,
            tracker_id,
            in_flight: AtomicU32::new(0),
            corrupt_tx,
            corrupt_rx: std::sync::Mutex::new(Some(rx)),
            stored_tx,
            stored_rx: std::sync::Mutex::new(Some(stored_rx)),
            own_id: swarm.identity.node_id(),
            pool,
            served_bytes: Default::default(),
            rendezvous_tx,
            rendezvous_rx: std::sync::Mutex::new(Some(rendezvous_rx)),
            metrics: Default::default(),
        }
    }

    /// The rendezvous orders, for the task that answers them; taken once.
    pub fn take_rendezvous_orders(&self) -> Option<mpsc::Receiver<RendezvousOrder>> {
        self.rendezvous_rx.lock().expect("rendezvous orders").take()
    }

    /// Chunk bytes this node has sent to others since it started.
    pub fn served_bytes(&self) -> u64 {
        self.served_bytes.load(Ordering::Relaxed)
    }

    /// Where the scrubber reports bad copies (the same queue as bad copies found by reads).
    pub fn corrupt_reports(&self) -> mpsc::UnboundedSender<ChunkId> {
        self.corrupt_tx.clone()
    }

    /// Taken once by the tracker session.
    pub fn take_stored_reports(&self) -> Option<mpsc::UnboundedReceiver<ChunkId>> {
        self.stored_rx.lock().expect("lock").take()
    }

    /// A repair order: copy `chunk` from the first source that has a sound copy. The store
    /// verifies the hash and makes the copy durable before this answers.
    async fn replicate(&self, chunk: ChunkId, sources: Vec<PeerInfo>) -> Response {
        let mut why = Vec::new();
        for src in sources.into_iter().filter(|s| s.node != self.own_id) {
            let fetched = async {
                let conn = self.pool.connect(&src).await.map_err(|e| e.to_string())?;
                let req = Request::GetChunk { chunk, offset: 0, len: u64::MAX };
                match conn.call_timeout(&req, Bytes::new(), REPLICATE_TIMEOUT).await.map_err(|e| e.to_string())? {
                    (Response::Chunk, bytes) => Ok(bytes),
                    (Response::Error { message, .. }, _) => Err(message),
                    _ => Err("unexpected answer".to_string()),
                }
            }
            .await;
            let bytes = match fetched {
                Ok(b) => b,
                Err(e) => {
                    why.push(format!("{}: {e}", src.node.short()));
                    continue;
                }
            };
            let len = bytes.len() as u64;
            match self.blocking(move |s| s.put(&chunk, &bytes)).await {
                Ok(wrote) => {
                    if wrote {
                        let _ = self.stored_tx.send(chunk);
                    }
                    return Response::Replicated { bytes: len };
                }
                Err(StoreError::HashMismatch(_)) => why.push(format!("{}: sent a bad copy", src.node.short())),
                Err(e) => return store_error(e),
            }
        }
        Response::error(
            ErrorCode::NotFound,
            format!("no source had a sound copy of {}: {}", chunk.short(), why.join("; ")),
        )
    }

    /// A repair order the other way round: this peer (behind NAT, which `to` cannot dial)
    /// dials `to` and stores its sound copy of `chunk` there.
    async fn push(&self, chunk: ChunkId, to: PeerInfo) -> Response {
        let bytes = match self.blocking(move |s| s.get(&chunk, 0, u64::MAX)).await {
            Ok(b) => b,
            Err(e) => return store_error(e),
        };
        let len = bytes.len() as u64;
        let stored = async {
            let conn = self.pool.connect(&to).await.map_err(|e| e.to_string())?;
            match conn
                .call_timeout(&Request::PutChunk { chunk }, bytes, REPLICATE_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?
            {
                (Response::Ok, _) => Ok(()),
                (Response::Error { message, .. }, _) => Err(message),
                _ => Err("unexpected answer".to_string()),
            }
        }
        .await;
        match stored {
            Ok(()) => Response::Replicated { bytes: len },
            Err(e) => Response::error(
                ErrorCode::Unsupported,
                format!("cannot store {} on {}: {e}", chunk.short(), to.node.short()),
            ),
        }
    }

    pub fn load(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Taken once by the tracker session.
    pub fn take_corrupt_reports(&self) -> Option<mpsc::UnboundedReceiver<ChunkId>> {
        self.corrupt_rx.lock().expect("lock").take()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ChunkStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e.to_string()))))
    }

    async fn dispatch(&self, req: Request, payload: Bytes) -> (Response, Bytes) {
        match req {
            Request::PutChunk { chunk } => match self.blocking(move |s| s.put(&chunk, &payload)).await {
                Ok(wrote) => {
                    if wrote {
                        let _ = self.stored_tx.send(chunk);
                    }
                    (Response::Ok, Bytes::new())
                }
                Err(e) => (store_error(e), Bytes::new()),
            },
            Request::GetChunk { chunk, offset, len } => {
                match self.blocking(move |s| s.get(&chunk, offset, len)).await {
                    Ok(bytes) => {
                        self.served_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        (Response::Chunk, bytes)
                    }
                    Err(e) => {
                        if let StoreError::Corrupt(id) = &e {
                            warn!(chunk = %id.short(), "served request hit a corrupt copy");
                            let _ = self.corrupt_tx.send(*id);
                        }
                        (store_error(e), Bytes::new())
                    }
                }
            }
            Request::HasChunks { chunks } => {
                let has = self.blocking(move |s| Ok(chunks.iter().map(|c| s.has(c)).collect())).await;
                match has {
                    Ok(v) => (Response::Has(v), Bytes::new()),
                    Err(e) => (store_error(e), Bytes::new()),
                }
            }
            Request::DeleteChunks { chunks } => {
                let r = self
                    .blocking(move |s| {
                        for c in &chunks {
                            s.delete(c)?;
                        }
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(()) => (Response::Ok, Bytes::new()),
                    Err(e) => (store_error(e), Bytes::new()),
                }
            }
            Request::CollectChunks { chunks, idle_ms } => {
                let idle = std::time::Duration::from_millis(idle_ms);
                let gone = self.blocking(move |s| chunks.iter().map(|c| s.collect(c, idle)).collect()).await;
                match gone {
                    Ok(v) => (Response::Collected(v), Bytes::new()),
                    Err(e) => (store_error(e), Bytes::new()),
                }
            }
            Request::ReplicateChunk { chunk, sources } => (self.replicate(chunk, sources).await, Bytes::new()),
            Request::PushChunk { chunk, to } => (self.push(chunk, to).await, Bytes::new()),
            Request::Rendezvous { token, from, path } => {
                let resp = match self.rendezvous_tx.try_send(RendezvousOrder { token, from, path }) {
                    Ok(()) => Response::Ok,
                    Err(_) => Response::error(ErrorCode::Busy, "too many connections being opened to this peer"),
                };
                (resp, Bytes::new())
            }
            Request::Ping => (
                Response::Pong { used: self.store.used(), capacity: self.store.capacity(), chunks: self.store.count() },
                Bytes::new(),
            ),
            other => (
                Response::error(ErrorCode::Unsupported, format!("a peer does not answer {}", other.name())),
                Bytes::new(),
            ),
        }
    }
}

impl Service for PeerService {
    fn listener(&self) -> Listener {
        Listener::Peer
    }

    fn metrics(&self) -> Option<&swarmfs_net::metrics::Metrics> {
        Some(&self.metrics)
    }

    /// A peer cannot check member credentials (the tracker keeps them) and needs none:
    /// everyone with the swarm secret may store and fetch ciphertext. Only the tracker's
    /// pinned identity may order deletions.
    fn admit(&self, remote: NodeId, _hello: &Hello, _exporter: &[u8; 32]) -> Result<Credential, String> {
        Ok(self.dialed_credential(remote))
    }

    /// The tracker sends its orders over the session this peer opened (it may not be able
    /// to dial the peer at all): the tracker's pinned identity is the tracker, as above.
    fn dialed_credential(&self, remote: NodeId) -> Credential {
        if remote == self.tracker_id {
            Credential::Tracker
        } else {
            Credential::Peer
        }
    }

    async fn handle(&self, _ctx: &Arc<ConnCtx>, req: Request, payload: Bytes) -> (Response, Bytes) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let out = self.dispatch(req, payload).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        out
    }
}
