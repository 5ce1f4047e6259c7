//! The tracker: membership, the namespace and chunk locations.
//!
//! # Layout
//! - [`db`]: SQLite (WAL, synchronous=FULL) holding entries, manifests, peers, locations.
//! - [`registry`]: live membership in memory and the broadcast of membership events.
//! - [`service`]: the request handler; one connection per peer, client or tool.
//! - [`rendezvous`]: brokering punches and relaying for peers behind NAT.
//! - [`sources`]: cached sources (members serving what they downloaded), in memory only.
//! - [`workers`]: background work (reaper, collector, repair), on one task runner.
//! - [`mesh`]: several trackers on one PostgreSQL database (shared membership, work done once).
//!
//! What is acknowledged is committed to SQLite first, so a kill -9 loses nothing a client
//! was told succeeded. Liveness is not persisted: after a restart every peer counts as down
//! until it reconnects, which peers do on their own, re-sending their inventory.

pub mod db;
pub mod error;
pub mod mesh;
pub mod registry;
pub mod rendezvous;
pub mod service;
pub mod sources;
pub mod workers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use swarmfs_net::task::Runner;
use swarmfs_net::{serve, Limits, Swarm};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::TrackerError;
pub use service::Tracker;

pub struct TrackerConfig {
    /// The SQLite database, unless `db_url` names another.
    pub db_path: PathBuf,
    /// A PostgreSQL database (`postgres://user@host:port/db`) instead of `db_path`.
    pub db_url: Option<String>,
    pub peer_timeout: Duration,
    /// Grace period before a chunk no file references any more is deleted from its holders.
    pub gc_delay: Duration,
    /// Grace period before a chunk no file ever referenced (a failed upload) is deleted: the
    /// longest an upload may take from storing a chunk to its commit.
    pub orphan_delay: Duration,
    /// How long a peer may be down before its copies are replaced elsewhere.
    pub repair_after: Duration,
    /// Bytes per second repair copies may use in all (0: no limit).
    pub repair_rate: u64,
    /// Repair orders in flight at once.
    pub repair_concurrency: usize,
    /// Bytes per second all relayed connections together may use (0: no limit).
    pub relay_rate: u64,
    /// Authenticated connections at once (peers, clients, tools).
    pub max_connections: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<String>,
}

/// Runs the tracker on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    swarm: Arc<Swarm>,
    config: TrackerConfig,
    shutdown: CancellationToken,
) -> Result<(), TrackerError> {
    let db = match &config.db_url {
        Some(url) => {
            let mut db = db::Db::postgres(url).await?;
            if config.db_path.exists() {
                let mut local = db::Db::open(&config.db_path)?;
                if let Some(rows) = db.adopt(&mut local)? {
                    info!(rows, from = %config.db_path.display(), "copied the swarm into the new PostgreSQL database");
                    // The planner would otherwise take the fresh tables for empty ones.
                    db.analyze()?;
                }
            }
            db
        }
        None => db::Db::open(&config.db_path)?,
    };
    let tracker = Arc::new(Tracker::new(db, swarm.clone(), config)?);
    let mut runner = Runner::new(shutdown.clone());
    let mut instance = None;
    if let Some(url) = tracker.config.db_url.clone() {
        let mesh = mesh::Mesh::new(tracker.clone(), url, listener.local_addr()?.to_string());
        info!(instance = %mesh.instance(), "sharing the database with any other trackers of this swarm");
        instance = Some(mesh.instance().to_string());
        runner.spawn(mesh);
    }
    runner.spawn(workers::Reaper(tracker.clone()));
    runner.spawn(workers::Collector::new(tracker.clone()));
    runner.spawn(workers::repair::Repairer::new(tracker.clone()));
    runner.spawn(workers::Prober::new(tracker.clone()));
    tracker.set_workers(runner.statuses());
    let metrics = match &tracker.config.metrics {
        Some(addr) => {
            let l = TcpListener::bind(addr).await?;
            info!(addr = %l.local_addr()?, "metrics at http://{}/metrics", l.local_addr()?);
            let t = tracker.clone();
            let render: swarmfs_net::metrics::Render = Arc::new(move || t.render_metrics());
            Some(tokio::spawn(swarmfs_net::metrics::serve_metrics(l, render, shutdown.clone())))
        }
        None => None,
    };
    info!(addr = %listener.local_addr()?, node = %swarm.identity.node_id().short(), "tracker listening");
    // Peers' sessions carry small messages; 10,000 of them with chunk-sized buffers would
    // hold gigabytes once an event storm (everyone rejoining) has filled them.
    let limits = Limits { max_connections: tracker.config.max_connections, io_buffer: 16 * 1024, ..Limits::default() };
    serve(listener, swarm, tracker.clone(), limits, shutdown).await;
    runner.shutdown().await;
    if let (Some(url), Some(instance)) = (&tracker.config.db_url, &instance) {
        mesh::leave(url, instance).await;
    }
    if let Some(m) = metrics {
        let _ = m.await;
    }
    Ok(())
}
