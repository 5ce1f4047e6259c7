//! The dashboard: a static page (in the binary, no build step) that polls `/api/state`
//! every second, and the watcher that keeps that state: the swarm's peers and health as
//! the tracker last reported them, and the events seen between two reports.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use swarmfs_client::views;
use swarmfs_net::task::{Step, Worker};
use swarmfs_proto::{HealthReport, NodeId, PeerInfo, PeerState, RemotePath, Request};

use crate::server::{json, query_param, whole, Body, Gateway, HttpError};

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// The version of `/api/state` and `/api/chunks`: a field's meaning changing or one going
/// away bumps it; fields are added without a bump (readers ignore what they do not know).
pub const API_VERSION: u32 = 1;

/// Events kept for the page.
const EVENTS: usize = 200;
/// Chunks drawn in one file's map; a larger file's map shows its first chunks.
const MAP_CHUNKS: usize = 4096;

/// The page and its code and style, which hold no data: served without the token.
pub fn asset(path: &str) -> Option<Response<Body>> {
    let (content_type, body) = match path {
        "/dashboard" => ("text/html; charset=utf-8", PAGE),
        "/dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut r = whole(StatusCode::OK, content_type, body);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'"),
    );
    Some(r)
}

#[derive(Default)]
pub struct Board(Mutex<Snapshot>);

#[derive(Default)]
struct Snapshot {
    peers: Vec<PeerInfo>,
    health: Option<HealthReport>,
    /// Newest last: (when, what).
    events: VecDeque<(u64, String)>,
    updated_ms: u64,
    /// Why the last refresh failed, until one succeeds.
    error: Option<String>,
    seen_once: bool,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn state_word(s: PeerState) -> &'static str {
    match s {
        PeerState::Up => "is up",
        PeerState::Down => "is down",
        PeerState::Left => "left",
        PeerState::Draining => "is draining",
    }
}

impl Board {
    /// What `/api/state` answers.
    pub fn state(&self) -> Value {
        let s = self.0.lock().expect("board");
        let health = s.health.as_ref();
        let peers: Vec<Value> = s
            .peers
            .iter()
            .map(|p| {
                let mut v = views::peer_json(p);
                if let Some(h) = health.and_then(|h| h.peers.iter().find(|h| h.node == p.node)) {
                    v["down_for_ms"] = json!(h.down_for_ms);
                    v["sole_copies"] = json!(h.sole_copies);
                }
                v
            })
            .collect();
        let health = health.map(|h| {
            json!({
                "files": h.files, "chunks": h.chunks, "bytes_at_risk": h.bytes_at_risk,
                "lost_files": h.lost_files, "repair_queued": h.repair_queued,
                "repair_in_flight": h.repair_in_flight, "repaired_chunks": h.repaired_chunks,
                "repaired_bytes": h.repaired_bytes, "repair_rate_bps": h.repair_rate_bps,
                "repair_after_ms": h.repair_after_ms, "workers": h.workers,
            })
        });
        let events: Vec<Value> = s.events.iter().rev().map(|(at, text)| json!({ "at_ms": at, "text": text })).collect();
        json!({
            "api_version": API_VERSION,
            "updated_ms": s.updated_ms, "error": s.error, "peers": peers, "health": health, "events": events,
        })
    }

    fn failed(&self, error: String) {
        let mut s = self.0.lock().expect("board");
        if s.error.is_none() {
            push(&mut s.events, format!("the tracker does not answer: {error}"));
        }
        s.error = Some(error);
    }

    /// Takes a new report and records what changed since the last one as events.
    fn update(&self, peers: Vec<PeerInfo>, health: Option<HealthReport>) {
        let mut s = self.0.lock().expect("board");
        let mut news = Vec::new();
        if s.error.take().is_some() {
            news.push("the tracker answers again".to_string());
        }
        if !s.seen_once {
            let up = peers.iter().filter(|p| p.state.is_live()).count();
            news.push(format!("watching {} peers, {up} live", peers.len()));
        } else {
            for p in &peers {
                match s.peers.iter().find(|o| o.node == p.node) {
                    None => news.push(format!("peer {} joined at {}", p.node.short(), p.addrs.join(","))),
                    Some(o) if o.state != p.state => {
                        news.push(format!("peer {} {}", p.node.short(), state_word(p.state)))
                    }
                    Some(o) if o.addrs != p.addrs => {
                        news.push(format!("peer {} moved to {}", p.node.short(), p.addrs.join(",")))
                    }
                    Some(_) => {}
                }
            }
            let gone: Vec<NodeId> =
                s.peers.iter().filter(|o| !peers.iter().any(|p| p.node == o.node)).map(|o| o.node).collect();
            news.extend(gone.iter().map(|n| format!("peer {} was removed", n.short())));
            if let (Some(old), Some(new)) = (&s.health, &health) {
                news.extend(health_news(old, new));
            }
        }
        for n in news {
            push(&mut s.events, n);
        }
        s.peers = peers;
        s.health = health;
        s.updated_ms = now_ms();
        s.seen_once = true;
    }
}

fn push(events: &mut VecDeque<(u64, String)>, text: String) {
    if events.len() == EVENTS {
        events.pop_front();
    }
    events.push_back((now_ms(), text));
}

/// "1 file is" / "2 files are".
fn files(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 file {one}")
    } else {
        format!("{n} files {many}")
    }
}

fn health_news(old: &HealthReport, new: &HealthReport) -> Vec<String> {
    let mut news = Vec::new();
    let copied = new.repaired_chunks.saturating_sub(old.repaired_chunks);
    if copied > 0 {
        let bytes = new.repaired_bytes.saturating_sub(old.repaired_bytes);
        news.push(format!("repair copied {copied} chunks ({})", swarmfs_proto::human_bytes(bytes)));
    }
    let at_risk = |h: &HealthReport| h.files.under_replicated + h.files.repairing;
    match (at_risk(old), at_risk(new)) {
        (0, n) if n > 0 => news.push(format!("{} fewer copies than they should", files(n, "has", "have"))),
        (n, 0) if n > 0 => news.push("every file has all its copies again".into()),
        _ => {}
    }
    if new.files.lost != old.files.lost {
        news.push(match new.files.lost {
            0 => "no file is lost any more".into(),
            n => format!("{} lost (no live copy): {}", files(n, "is", "are"), new.lost_files.join(", ")),
        });
    }
    news
}

/// Keeps the board fresh: one peers and one health call a second, whatever the number of
/// pages open.
pub struct Watcher {
    gw: Arc<Gateway>,
    refreshes: u64,
}

impl Watcher {
    pub fn new(gw: Arc<Gateway>) -> Watcher {
        Watcher { gw, refreshes: 0 }
    }
}

impl Worker for Watcher {
    fn name(&self) -> String {
        "dashboard".into()
    }

    fn idle_period(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn step(&mut self) -> Result<Step, String> {
        let client = &self.gw.client;
        let peers = match client.peers().await {
            Ok(p) => p,
            Err(e) => {
                // Recorded for the page, and retried in a second rather than after a
                // back-off: the page should come back as soon as the tracker does.
                self.gw.board.failed(e.to_string());
                return Ok(Step::Idle);
            }
        };
        // A read-only member may not be allowed health everywhere; the page then shows peers.
        let health = match client.call(&Request::Health).await {
            Ok(swarmfs_proto::Response::Health(h)) => Some(*h),
            _ => None,
        };
        self.gw.board.update(peers, health);
        self.refreshes += 1;
        Ok(Step::Idle)
    }

    fn detail(&self) -> String {
        format!("{} refreshes", self.refreshes)
    }

    fn done(&self) -> u64 {
        self.refreshes
    }
}

/// `/api/chunks?path=/x`: which peer holds which chunk of one file, for the page's picture.
pub async fn chunk_map(gw: &Arc<Gateway>, query: Option<&str>) -> Result<Response<Body>, HttpError> {
    let path = query
        .and_then(|q| query_param(q, "path"))
        .ok_or_else(|| HttpError::new(StatusCode::BAD_REQUEST, "say which file: /api/chunks?path=/some/file"))?;
    let remote = RemotePath::parse(&path).map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let (entry, manifest) = gw.client.open(&remote).await?;
    let shown = manifest.chunks.len().min(MAP_CHUNKS);
    let holders = gw.client.locate(&manifest.chunks[..shown]).await?;
    // Rows: every peer the swarm knows, in the board's order, then any other holder.
    let mut rows: Vec<PeerInfo> = gw.board.0.lock().expect("board").peers.clone();
    let index_of = |rows: &mut Vec<PeerInfo>, p: &PeerInfo| match rows.iter().position(|r| r.node == p.node) {
        Some(i) => i,
        None => {
            rows.push(p.clone());
            rows.len() - 1
        }
    };
    let mut durable = Vec::with_capacity(shown);
    let mut cached = Vec::with_capacity(shown);
    for i in 0..shown {
        durable.push(holders.of(i).into_iter().map(|p| index_of(&mut rows, p)).collect::<Vec<_>>());
        cached.push(holders.cached_of(i).into_iter().map(|p| index_of(&mut rows, p)).collect::<Vec<_>>());
    }
    Ok(json(&json!({
        "api_version": API_VERSION,
        "path": remote.to_string(),
        "size": manifest.size,
        "chunk_size": manifest.chunk_size,
        "replicas": entry.replicas,
        "chunks": manifest.chunks.len(),
        "shown": shown,
        "peers": rows.iter().map(|p| json!({ "short_id": p.node.short(), "state": p.state.as_str() })).collect::<Vec<_>>(),
        "holders": durable,
        "cached": cached,
    })))
}
