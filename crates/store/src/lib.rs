//! A peer's content-addressed chunk store on disk.
//!
//! # Layout
//! - [`fs`]: [`ChunkStore`], chunks as files under `chunks/ab/cd/<id>`; durable puts
//!   (temp file, fsync, rename, fsync dir); verified reads; quarantine for bad copies.
//!
//! The store is synchronous: callers run it on blocking threads (`spawn_blocking`).

pub mod error;
pub mod fs;

pub use error::StoreError;
pub use fs::ChunkStore;
