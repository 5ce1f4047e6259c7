//! Wire types shared by every swarmfs node. No sockets, no tasks.
//!
//! # Layout
//! - [`ids`]: `NodeId`, `ChunkId`, `FileId` — fixed 32-byte identifiers — and `LinkId`.
//! - [`msg`]: the request, response and event enums carried in frames.
//! - [`frame`]: length-prefixed framing with a size cap checked before allocation.
//! - [`path`]: validated remote paths (`/a/b`), the only form the inside sees.
//! - [`authz`]: the authorization table: which credential may send which request where.
//!
//! The byte layout is documented in `docs/wire.md` and pinned by the golden tests in
//! `frame.rs`: variants are only ever appended, never reordered.

pub mod authz;
pub mod error;
pub mod frame;
pub mod ids;
pub mod msg;
pub mod path;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod props;

pub use error::ProtoError;
pub use frame::{Frame, FrameKind, FIXED_HEADER_LEN, MAX_FRAME_LEN, PAYLOAD_BESIDE};
pub use ids::{ChunkId, FileId, LinkId, NodeId};
pub use msg::*;
pub use path::RemotePath;

/// Bumped whenever a change is not purely additive. Checked in the hello.
pub const PROTOCOL_VERSION: u16 = 11;

/// Deltas a file's manifest may have (`CommitDelta`) before the tracker wants the next
/// version committed whole: bounds what every open of the file reads and lays over.
pub const MAX_MANIFEST_DELTAS: usize = 64;

/// A byte count for people, in binary units: `512 B`, `1.5 MiB`. Shared by the CLI and the
/// status lines daemons put in `health`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
