//! The client: chunking, encryption, placement, parallel upload, multi-source download.
//!
//! # Layout
//! - [`client`]: [`Client`], the tracker connection and namespace operations.
//! - [`placement`]: which peers get each chunk (rendezvous, least-used, lowest-latency).
//! - [`put`]: the upload pipeline (read, seal, store on R peers, commit).
//! - [`cache`]: decrypted chunks shared by readers (the mount, the HTTP gateway).
//! - [`views`]: JSON views of entries and peers (CLI `--json`, HTTP API).
//! - [`get`]: the download pipeline (locate, fetch from all holders, verify, decrypt):
//!   in file order for streams, rarest chunk first for `get` into a file.
//! - [`slices`]: laying a chunk's slices (small writes) over it, for every reader.
//!
//! - [`budget`]: the chunk bytes one client holds at once, shared by all its transfers.
//!
//! Memory is bounded by the window (at most `window` chunks are in flight at once, whatever
//! the file size) and, across the files `put -r` and `get -r` move at once, by the budget.

pub mod budget;
pub mod cache;
pub mod client;
pub mod error;
pub mod get;
pub mod placement;
pub mod put;
pub mod slices;
pub mod views;

pub use client::Client;
pub use error::ClientError;
pub use get::GetReport;
pub use get::Holders;
pub use placement::Policy;
pub use put::{NewOwner, PutOptions, PutReport, Uploader};

/// Receives progress and warnings from long operations (the CLI draws a bar).
pub trait Progress: Send + Sync {
    fn start(&self, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn warn(&self, message: &str);
}

/// Receives every chunk a client verified, as the ciphertext peers store, so that the
/// caller can serve it to others as a cached source (`get --seed`).
pub trait ChunkSink: Send + Sync {
    fn verified(&self, id: swarmfs_proto::ChunkId, ciphertext: bytes::Bytes);
}

/// Progress that prints warnings to stderr and nothing else.
pub struct Quiet;

impl Progress for Quiet {
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}
