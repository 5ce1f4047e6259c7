use thiserror::Error;

/// What can go wrong turning bytes into typed messages.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("frame is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("invalid id: {0}")]
    InvalidId(&'static str),
}
