//! A peer's content-addressed chunk store on disk.
//!
//! # Layout
//! - [`fs`]: [`ChunkStore`], chunks as files; durable puts (temp file, fsync, rename, fsync
//!   dir); verified reads; quarantine for bad copies.
//! - [`layout`]: where in `chunks/` each chunk goes (`ab/<id>`, or `ab/cd/<id>` in a store
//!   made before layout 2), named in the store's `FORMAT`.
//! - [`spares`]: empty files in `tmp/` that puts write into instead of creating one each.
//!
//! The store is synchronous: callers run it on blocking threads (`spawn_blocking`).

pub mod error;
pub mod fs;
pub mod layout;
pub mod spares;

pub use error::StoreError;
pub use fs::ChunkStore;
