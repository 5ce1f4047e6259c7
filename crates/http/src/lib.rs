//! The swarm over HTTP (`swarmfs gateway`): the namespace as files a browser or curl can
//! read (ranges, conditional requests, listings) and a member can write; one file by a link;
//! the dashboard and its JSON API; Prometheus metrics.
//!
//! # Layout
//! - `server`: the listener, who may ask (token, or a loopback host), routing, errors.
//! - `files`: `/files/PATH` (GET/HEAD/PUT/DELETE, listings) and `/link/LINK`.
//! - [`range`]: the Range header.
//! - `body`: response bodies that stream only the chunks a range touches, through the
//!   shared chunk cache, with memory bounded whatever the file's size.
//! - `dashboard`: the page (assets in the binary), `/api/state`, `/api/chunks`, and the
//!   watcher worker that keeps the state and turns its changes into events.
//! - `metrics`: what the gateway counts, at `/metrics`.

mod body;
mod dashboard;
mod files;
mod metrics;
pub mod range;
mod server;

pub use dashboard::Watcher;
pub use server::{serve, Gateway, GatewayOptions};
