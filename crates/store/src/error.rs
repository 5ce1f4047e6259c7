use swarmfs_proto::ChunkId;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("chunk {0} is not stored here")]
    NotFound(ChunkId),
    #[error("store is full: {need} more bytes wanted, {free} free of {capacity}")]
    NoSpace { need: u64, free: u64, capacity: u64 },
    #[error("bytes sent for chunk {0} do not hash to its id")]
    HashMismatch(ChunkId),
    #[error("stored copy of chunk {0} is corrupt; it has been quarantined")]
    Corrupt(ChunkId),
    #[error("range {offset}+{len} is outside chunk {id} of {size} bytes")]
    BadRange { id: ChunkId, offset: u64, len: u64, size: u64 },
    #[error("unknown chunk store format: {0}")]
    Format(String),
    #[error("chunk store I/O: {0}")]
    Io(#[from] std::io::Error),
}
