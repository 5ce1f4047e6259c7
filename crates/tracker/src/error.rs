use swarmfs_proto::{ErrorCode, Response};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrackerError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error("{0}")]
    Invalid(String),
    /// Not found, with the whole message given (a link's file).
    #[error("{0}")]
    Missing(String),
    /// The credential does not allow this (a link asking about another file's chunks).
    #[error("{0}")]
    Forbidden(String),
    /// A peer the request needs cannot be reached now (not connected, did not answer).
    #[error("{0}")]
    Unavailable(String),
    /// A chunk the commit names is being deleted by the collector right now: the commit
    /// waits for the answer and tries again (never seen by clients unless it lasts).
    #[error("chunk {0} is being collected as garbage; try again")]
    BeingCollected(String),
    /// A delta the tracker does not take; the client commits the version whole.
    #[error("{0}")]
    CommitWhole(String),
    /// The database failed (in words: no engine's error type crosses this crate's API).
    #[error("tracker database: {0}")]
    Store(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<rusqlite::Error> for TrackerError {
    fn from(e: rusqlite::Error) -> Self {
        TrackerError::Store(e.to_string())
    }
}

impl From<swarmfs_proto::ProtoError> for TrackerError {
    fn from(e: swarmfs_proto::ProtoError) -> Self {
        TrackerError::Invalid(e.to_string())
    }
}

impl From<swarmfs_net::NetError> for TrackerError {
    fn from(e: swarmfs_net::NetError) -> Self {
        TrackerError::Unavailable(e.to_string())
    }
}

impl TrackerError {
    pub fn to_response(&self) -> Response {
        let code = match self {
            TrackerError::NotFound(_) => ErrorCode::NotFound,
            TrackerError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            TrackerError::NotADirectory(_) => ErrorCode::NotADirectory,
            TrackerError::IsADirectory(_) => ErrorCode::IsADirectory,
            TrackerError::NotEmpty(_) => ErrorCode::NotEmpty,
            TrackerError::Invalid(_) => ErrorCode::InvalidArgument,
            TrackerError::Missing(_) => ErrorCode::NotFound,
            TrackerError::Forbidden(_) => ErrorCode::Forbidden,
            TrackerError::CommitWhole(_) => ErrorCode::CommitWhole,
            TrackerError::Unavailable(_) | TrackerError::BeingCollected(_) => ErrorCode::Busy,
            TrackerError::Store(_) | TrackerError::Io(_) => ErrorCode::Internal,
        };
        Response::error(code, self.to_string())
    }
}
