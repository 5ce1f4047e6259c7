//! The tracker: membership, the namespace and chunk locations.
//!
//! # Layout
//! - [`db`]: SQLite (WAL, synchronous=FULL) holding entries, manifests, peers, locations.
//! - [`registry`]: live membership in memory and the broadcast of membership events.
//! - [`service`]: the request handler; one connection per peer, client or tool.
//!
//! What is acknowledged is committed to SQLite first, so a kill -9 loses nothing a client
//! was told succeeded. Liveness is not persisted: after a restart every peer counts as down
//! until it reconnects, which peers do on their own, re-sending their inventory.

pub mod db;
pub mod error;
pub mod registry;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use swarmfs_net::{serve, Limits, Swarm};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use error::TrackerError;
pub use service::Tracker;

pub struct TrackerConfig {
    pub db_path: PathBuf,
    pub peer_timeout: Duration,
    /// Grace period before a chunk no file references is deleted from its holders.
    pub gc_delay: Duration,
}

/// Runs the tracker on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    swarm: Arc<Swarm>,
    config: TrackerConfig,
    shutdown: CancellationToken,
) -> Result<(), TrackerError> {
    let db = db::Db::open(&config.db_path)?;
    let tracker = Arc::new(Tracker::new(db, swarm.identity.node_id(), config.peer_timeout, config.gc_delay)?);
    let reaper = tokio::spawn(tracker.clone().reap_silent_peers(shutdown.clone()));
    let collector = tokio::spawn(tracker.clone().collect_garbage(swarm.clone(), shutdown.clone()));
    info!(addr = %listener.local_addr()?, node = %swarm.identity.node_id().short(), "tracker listening");
    serve(listener, swarm, tracker, Limits::default(), shutdown).await;
    reaper.abort();
    collector.abort();
    Ok(())
}
