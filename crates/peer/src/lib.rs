//! The peer daemon: serves its chunk store and keeps a session with the tracker.
//!
//! # Layout
//! - [`service`]: answers chunk requests (put, get, has, delete, ping).
//! - [`session`]: join, inventory, heartbeat and the membership subscription, reconnecting
//!   with backoff whenever the tracker goes away.
//! - [`scrub`]: the worker that re-verifies every stored chunk at a bounded rate.
//! - [`spares`]: the worker that makes spare files for puts while none is arriving.

pub mod error;
pub mod scrub;
pub mod service;
pub mod session;
pub mod spares;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use swarmfs_net::dialer::{self, Rendezvous};
use swarmfs_net::task::Runner;
use swarmfs_net::{serve, Limits, Swarm};
use swarmfs_proto::{NodeId, Role};
use swarmfs_store::ChunkStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::PeerError;
pub use service::PeerService;

pub struct PeerConfig {
    pub store_dir: PathBuf,
    pub capacity: u64,
    /// Address other nodes dial; defaults to the listener's address.
    pub advertise: Option<String>,
    /// Every tracker's address, tried in turn (the first also brokers NAT traversal).
    pub tracker_addrs: Vec<String>,
    pub tracker_id: NodeId,
    pub heartbeat: Duration,
    /// Bytes per second the scrubber re-reads; 0 turns scrubbing off.
    pub scrub_rate: u64,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<String>,
}

/// Runs a peer until `shutdown` is cancelled; tells the tracker it leaves on the way out.
pub async fn run(
    listener: TcpListener,
    swarm: Arc<Swarm>,
    config: PeerConfig,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    let (dir, cap) = (config.store_dir.clone(), config.capacity);
    let store = Arc::new(
        tokio::task::spawn_blocking(move || ChunkStore::open(&dir, cap))
            .await
            .map_err(|e| PeerError::Task(e.to_string()))??,
    );
    let local = listener.local_addr()?;
    let advertise = config.advertise.clone().unwrap_or_else(|| {
        if local.ip().is_unspecified() {
            warn!("listening on {local}; advertising 127.0.0.1 — pass --advertise HOST:PORT for other machines");
            format!("127.0.0.1:{}", local.port())
        } else {
            local.to_string()
        }
    });
    info!(node = %swarm.identity.node_id().short(), listen = %local, %advertise, "peer listening");
    let rendezvous =
        Rendezvous { addr: config.tracker_addrs.first().cloned().unwrap_or_default(), node: config.tracker_id };
    let service = Arc::new(PeerService::new(store.clone(), config.tracker_id, swarm.clone(), Some(rendezvous.clone())));
    // Connections to this peer that came through the tracker (it is behind NAT), served as
    // accepted ones are.
    let rendezvous = tokio::spawn(dialer::serve_rendezvous(
        service.take_rendezvous_orders().expect("taken once"),
        swarm.clone(),
        rendezvous,
        service.clone(),
        Role::Peer,
        shutdown.clone(),
    ));
    let mut workers = Runner::new(shutdown.clone());
    if config.scrub_rate > 0 {
        workers.spawn(scrub::Scrubber::new(store.clone(), config.scrub_rate, service.corrupt_reports()));
    }
    workers.spawn(spares::SpareMaker::new(store.clone()));
    let reports = session::Reports {
        corrupt: service.take_corrupt_reports().expect("taken once"),
        stored: service.take_stored_reports().expect("taken once"),
        workers: workers.statuses(),
    };
    let metrics = match &config.metrics {
        Some(addr) => {
            let l = TcpListener::bind(addr).await?;
            info!(addr = %l.local_addr()?, "metrics at http://{}/metrics", l.local_addr()?);
            let render = peer_metrics(service.clone(), store.clone(), config.store_dir.clone(), workers.statuses());
            Some(tokio::spawn(swarmfs_net::metrics::serve_metrics(l, render, shutdown.clone())))
        }
        None => None,
    };
    let session =
        tokio::spawn(session::run(swarm.clone(), config, advertise, store, service.clone(), reports, shutdown.clone()));
    serve(listener, swarm, service.clone(), Limits::default(), shutdown).await;
    workers.shutdown().await;
    let _ = session.await;
    let _ = rendezvous.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    info!(served_bytes = service.served_bytes(), "peer stopped");
    Ok(())
}

/// A peer's metrics: what it answered, its store, its workers.
fn peer_metrics(
    service: Arc<PeerService>,
    store: Arc<ChunkStore>,
    dir: PathBuf,
    workers: swarmfs_net::task::Statuses,
) -> swarmfs_net::metrics::Render {
    Arc::new(move || {
        let mut out = swarmfs_net::metrics::Exposition::default();
        service.metrics.render(&mut out);
        out.gauge("swarmfs_store_used_bytes", "Bytes of chunks stored.", store.used() as f64);
        out.gauge("swarmfs_store_chunks", "Chunks stored.", store.count() as f64);
        out.gauge("swarmfs_store_capacity_bytes", "Bytes this peer may store.", store.capacity() as f64);
        let quarantined = std::fs::read_dir(dir.join("quarantine")).map(|d| d.count()).unwrap_or(0);
        out.gauge("swarmfs_store_quarantined_chunks", "Copies found corrupt and set aside.", quarantined as f64);
        out.workers(&workers.snapshot());
        out.into_string()
    })
}
