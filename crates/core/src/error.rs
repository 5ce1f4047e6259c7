use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("chunk size {0} is outside 512 B ..= 64 MiB")]
    InvalidChunkSize(u64),
    #[error("chunk {0} failed verification: its bytes do not hash to its id")]
    HashMismatch(swarmfs_proto::ChunkId),
    #[error("decryption failed: wrong data key or tampered data")]
    Decrypt,
    #[error("not a valid swarmfs token: {0}")]
    BadToken(&'static str),
    #[error("manifest is malformed: {0}")]
    BadManifest(String),
    #[error("file needs {chunks} chunks at this chunk size (at most {max}); use a larger --chunk-size")]
    TooManyChunks { chunks: u64, max: u64 },
}
