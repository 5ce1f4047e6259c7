//! Client-side data handling: everything that turns plaintext into what the swarm stores.
//!
//! # Layout
//! - [`keys`]: the data key and swarm secret, and the keys derived from them.
//! - [`chunk`]: convergent AES-256-GCM per chunk; `ChunkId = BLAKE3(ciphertext)`.
//! - [`manifest`]: the per-file chunk list, sealed under a random per-file key.
//! - [`token`]: peer and member tokens (`swarmfs-peer-…`, `swarmfs-member-…`).

pub mod chunk;
pub mod direct;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod token;

pub use chunk::{open_chunk, seal_chunk, seal_chunk_in_place, SealedChunk, TAG_LEN};
pub use error::CoreError;
pub use keys::{DataKey, SwarmSecret};
pub use manifest::{
    inline_limit, lay_slice, ChunkRef, ChunkSwap, Manifest, ManifestDelta, Slice, DEFAULT_INLINE_MAX, MAX_INLINE,
};
pub use token::{Link, Token, TokenKind};

pub const DEFAULT_CHUNK_SIZE: u32 = 1024 * 1024;
pub const MIN_CHUNK_SIZE: u32 = 512;
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;
/// A manifest must fit in one frame; 2^20 chunks is 1 TiB at the default chunk size.
pub const MAX_CHUNKS_PER_FILE: u64 = 1 << 20;

pub fn check_chunk_size(size: u64) -> Result<u32, CoreError> {
    if !(MIN_CHUNK_SIZE as u64..=MAX_CHUNK_SIZE as u64).contains(&size) {
        return Err(CoreError::InvalidChunkSize(size));
    }
    Ok(size as u32)
}

/// Number of chunks a file of `size` bytes is cut into (0 for the empty file).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(chunk_size as u64)
}
