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
    #[error("could not store chunk {index} on enough peers ({have} of at least {min}): {last}")]
    PlacementFailed { index: u64, have: usize, min: usize, last: String, code: Option<ErrorCode> },
    #[error(
        "{path} changed while it was being uploaded; nothing was stored (try again once it is no longer being written)"
    )]
    Changed { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// Writing the downloaded bytes failed (a full disk, a closed pipe).
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    #[error("offset {offset} is past the end of the file ({size} bytes)")]
    OffsetPastEnd { offset: u64, size: u64 },
    #[error("only {live} live peer(s), and every chunk must be stored on at least {min} (--min-replicas); waited {waited_s} s for more to join")]
    NotEnoughPeers { live: usize, min: usize, waited_s: u64 },
    #[error("{0}")]
    Usage(String),
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
