use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error(transparent)]
    Store(#[from] swarmfs_store::StoreError),
    #[error(transparent)]
    Net(#[from] swarmfs_net::NetError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("tracker refused: {0}")]
    Refused(String),
    #[error("background task failed: {0}")]
    Task(String),
}
