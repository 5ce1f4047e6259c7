//! The peer daemon: serves its chunk store and keeps a session with the tracker.
//!
//! # Layout
//! - [`service`]: answers chunk requests (put, get, has, delete, ping).
//! - [`session`]: join, inventory, heartbeat and the membership subscription, reconnecting
//!   with backoff whenever the tracker goes away.

pub mod error;
pub mod service;
pub mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use swarmfs_net::{serve, Limits, Swarm};
use swarmfs_proto::NodeId;
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
    pub tracker_addr: String,
    pub tracker_id: NodeId,
    pub heartbeat: Duration,
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
    let service = Arc::new(PeerService::new(store.clone(), config.tracker_id));
    let session =
        tokio::spawn(session::run(swarm.clone(), config, advertise, store, service.clone(), shutdown.clone()));
    serve(listener, swarm, service, Limits::default(), shutdown).await;
    let _ = session.await;
    Ok(())
}
