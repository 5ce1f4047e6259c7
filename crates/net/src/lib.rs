//! Connections between swarmfs nodes: identity, TLS 1.3 with NodeId pinning, proof of swarm
//! membership, and a multiplexed request/response channel with pushed events.
//!
//! # Layout
//! - [`identity`]: the node's persistent ed25519 key and its self-signed certificate.
//! - [`tls`]: rustls configs whose verifiers pin certificates to NodeIds.
//! - [`auth`]: the hello exchange that proves the swarm secret (or a link's), bound to the
//!   TLS session.
//! - [`io`]: reading and writing frames with the size cap checked before allocation.
//! - [`beside`]: sealed chunks sent beside the TLS records instead of inside them.
//! - [`rpc`]: [`Connection`] (dialer side) and [`serve`] (listener side).
//! - `admission`: bounds on connections still in their handshake, apart from members'.
//! - [`dialer`]: reaching a node by whichever path works (direct, hole punching, relay).
//! - [`metrics`]: request counters and latencies, the Prometheus text format and endpoint.
//! - [`pool`]: one shared connection per remote node.
//! - [`task`]: the background-worker runner (work / idle / back off / status / join).
//! - [`trackers`]: the swarm's tracker addresses, dialled in turn (failover).

mod admission;
pub mod auth;
pub mod beside;
pub mod dialer;
pub mod error;
pub mod identity;
pub mod io;
pub mod metrics;
pub mod pool;
pub mod rpc;
pub mod task;
pub mod tls;
pub mod trackers;

pub use auth::Secret;
pub use error::NetError;
pub use identity::Identity;
pub use pool::Pool;
pub use rpc::{
    answer_raw, dial, dial_over, dial_serving, serve, serve_over, ConnCtx, Connection, Dialer, FirstRequest, Limits,
    RawStream, Service, Swarm,
};
pub use trackers::Trackers;
