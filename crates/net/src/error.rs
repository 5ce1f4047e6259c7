use swarmfs_proto::ProtoError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("{addr} is not the node we expected ({expected}): wrong address or another swarm's token")]
    WrongNode { addr: String, expected: String },
    #[error("not a member of this swarm: {0}")]
    NotMember(String),
    #[error("protocol version mismatch: we speak {ours}, the other side {theirs}")]
    Version { ours: u16, theirs: u16 },
    #[error("malformed traffic: {0}")]
    Proto(#[from] ProtoError),
    #[error("connection closed")]
    Closed,
    #[error("closed in its handshake to make room for newer connections")]
    Evicted,
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("cannot reach node {node}: {tried}")]
    Unreachable { node: String, tried: String },
    #[error("no tracker answers: {0}")]
    NoTracker(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("identity file {path}: {reason}")]
    Identity { path: String, reason: String },
}

impl NetError {
    /// The other side refused this node (not a member, revoked, another protocol version),
    /// as opposed to not being reached at all: asking again, or another tracker of the same
    /// swarm, would get the same answer.
    pub fn is_refusal(&self) -> bool {
        matches!(self, NetError::NotMember(_) | NetError::Refused(_) | NetError::Version { .. })
    }
}
