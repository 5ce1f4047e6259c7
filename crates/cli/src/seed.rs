//! Serving what a download fetched (`get --serve`, `get --seed`, `mount --serve`): a listener with a
//! `PeerService` over a store of its own under the home, fed with every chunk the client
//! verifies, each offered to the tracker as a cached source as soon as it is stored. The
//! tracker forgets the offers when this client's connection closes; the store is removed
//! when serving stops.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use swarmfs_client::{ChunkSink, Client};
use swarmfs_net::{serve, Limits, Swarm};
use swarmfs_peer::PeerService;
use swarmfs_proto::{ChunkId, NodeId, Request};
use swarmfs_store::ChunkStore;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How often newly stored chunks are offered, and how often the whole set is offered again
/// (a reconnected tracker connection starts with none).
const OFFER_EVERY: Duration = Duration::from_millis(100);
const REOFFER_EVERY: Duration = Duration::from_secs(10);

struct Sink {
    store: Arc<ChunkStore>,
    stored: mpsc::UnboundedSender<ChunkId>,
    /// The stores under way (off the fetching task; at most a download window at once),
    /// joined before the store is removed.
    writes: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl ChunkSink for Sink {
    fn verified(&self, id: ChunkId, ciphertext: Bytes) {
        let (store, stored) = (self.store.clone(), self.stored.clone());
        let mut writes = self.writes.lock().expect("sink writes");
        while writes.try_join_next().is_some() {}
        writes.spawn_blocking(move || match store.put(&id, &ciphertext) {
            Ok(_) => {
                let _ = stored.send(id);
            }
            Err(e) => debug!(chunk = %id.short(), "not kept for serving: {e}"),
        });
    }
}

pub struct Seeder {
    service: Arc<PeerService>,
    dir: PathBuf,
    pub addr: String,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writes: Arc<std::sync::Mutex<JoinSet<()>>>,
}

impl Seeder {
    /// Starts serving on `listen` (advertised as `advertise`, or the bound address) and hooks
    /// the client so every chunk it verifies is kept and offered.
    pub async fn start(
        client: Arc<Client>,
        swarm: Arc<Swarm>,
        home: &std::path::Path,
        tracker_id: NodeId,
        listen: &str,
        advertise: Option<&str>,
        capacity: Option<u64>,
    ) -> Result<Seeder> {
        let root = home.join("serving");
        remove_abandoned(&root);
        let dir = root.join(format!("{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // By default as much as the disk holds: what is kept is what one download fetched.
        // A mount reads without end, so it gives a cap; once full, later chunks are not kept.
        let free = rustix::fs::statvfs(&dir).map(|st| st.f_bavail.saturating_mul(st.f_frsize)).unwrap_or(u64::MAX);
        let free = capacity.map_or(free, |c| c.min(free));
        let store = {
            let d = dir.clone();
            Arc::new(tokio::task::spawn_blocking(move || ChunkStore::open_cache(&d, free)).await??)
        };
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let addr = match advertise {
            Some(a) => a.to_string(),
            None => listener.local_addr()?.to_string(),
        };
        let service = Arc::new(PeerService::new(store.clone(), tracker_id, swarm.clone(), None));
        let (tx, rx) = mpsc::unbounded_channel();
        let writes = Arc::new(std::sync::Mutex::new(JoinSet::new()));
        client.set_chunk_sink(Arc::new(Sink { store, stored: tx, writes: writes.clone() }));
        let stop = CancellationToken::new();
        let serving = tokio::spawn(serve(listener, swarm, service.clone(), Limits::default(), stop.clone()));
        let offering = tokio::spawn(offer_loop(client, addr.clone(), rx, stop.clone()));
        Ok(Seeder { service, dir, addr, stop, tasks: vec![serving, offering], writes })
    }

    /// Stops serving, waits for the tasks, and removes the store.
    pub async fn stop(self) -> u64 {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let mut writes = std::mem::take(&mut *self.writes.lock().expect("sink writes"));
        while writes.join_next().await.is_some() {}
        let _ = std::fs::remove_dir_all(&self.dir);
        self.service.served_bytes()
    }
}

async fn offer_loop(
    client: Arc<Client>,
    addr: String,
    mut rx: mpsc::UnboundedReceiver<ChunkId>,
    stop: CancellationToken,
) {
    let mut all: Vec<ChunkId> = Vec::new();
    let mut tick = tokio::time::interval(OFFER_EVERY);
    let mut last_full = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut new = Vec::new();
        while let Ok(id) = rx.try_recv() {
            new.push(id);
        }
        all.extend_from_slice(&new);
        let full = last_full.elapsed() >= REOFFER_EVERY;
        if new.is_empty() && !full {
            continue;
        }
        let chunks = if full { all.clone() } else { new };
        if full {
            last_full = tokio::time::Instant::now();
        }
        let req = Request::Offer { addrs: vec![addr.clone()], chunks, replace: full };
        if let Err(e) = client.call(&req).await {
            warn!("cannot offer chunks to the tracker: {e}");
            // Everything again next time, on whatever connection there is then.
            last_full = tokio::time::Instant::now() - REOFFER_EVERY;
        }
    }
}

/// Removes serving stores left by processes that are gone (killed while serving).
fn remove_abandoned(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
