use swarmfs_proto::ErrorCode;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] swarmfs_net::NetError),
    #[error(transparent)]
    Core(#[from] swarmfs_core::CoreError),
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    #[error("no live peers in the swarm: start a peer with `swarmfs peer`")]
    NoPeers,
    #[error("chunk {index} ({chunk}) could not be read from any of its {tried} holders (last error: {last})")]
    ChunkUnavailable { index: u64, chunk: String, tried: usize, last: String },
    #[error("could not store chunk {index} on enough peers: {last}")]
    PlacementFailed { index: u64, last: String, code: Option<ErrorCode> },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("this home holds a peer token, not a member token: it cannot read or write files")]
    NoDataKey,
    #[error("{0}")]
    Invalid(String),
    #[error("unexpected reply from {0}")]
    Unexpected(&'static str),
}

impl ClientError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> ClientError {
        ClientError::Io { path: path.to_string(), source }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<swarmfs_proto::ProtoError> for ClientError {
    fn from(e: swarmfs_proto::ProtoError) -> Self {
        ClientError::Invalid(e.to_string())
    }
}
