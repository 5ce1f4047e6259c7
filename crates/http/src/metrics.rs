//! What the gateway counts, served at `/metrics` beside its chunk cache's figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use swarmfs_client::cache::ChunkCache;
use swarmfs_net::metrics::{Exposition, Histogram};

#[derive(Default)]
pub struct GatewayMetrics {
    /// (route, method, status) -> answered.
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    /// Time to the response head, by route (a long download's body is not in it).
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Time to fetch, verify and decrypt one chunk that was not cached.
    chunk_fetch: Mutex<Histogram>,
    sent: AtomicU64,
    received: AtomicU64,
    chunks_fetched: AtomicU64,
    chunk_bytes_fetched: AtomicU64,
}

impl GatewayMetrics {
    pub fn request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        *self.requests.lock().expect("metrics").entry((route, method.to_string(), status)).or_default() += 1;
        self.latency.lock().expect("metrics").entry(route).or_default().observe(took);
    }

    /// File bytes sent in response bodies (not headers or multipart separators).
    pub fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// File bytes received in PUT bodies.
    pub fn received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn chunk_fetched(&self, len: usize, took: Duration) {
        self.chunks_fetched.fetch_add(1, Ordering::Relaxed);
        self.chunk_bytes_fetched.fetch_add(len as u64, Ordering::Relaxed);
        self.chunk_fetch.lock().expect("metrics").observe(took);
    }

    pub fn render(&self, cache: &ChunkCache) -> String {
        let mut out = Exposition::default();
        out.family("swarmfs_http_requests_total", "counter", "HTTP requests answered, by route, method and status.");
        for ((route, method, status), n) in self.requests.lock().expect("metrics").iter() {
            let status = status.to_string();
            out.sample(
                "swarmfs_http_requests_total",
                &[("route", route), ("method", method), ("status", &status)],
                *n as f64,
            );
        }
        out.family(
            "swarmfs_http_request_duration_seconds",
            "histogram",
            "Time from an HTTP request's arrival to its response head, by route.",
        );
        for (route, h) in self.latency.lock().expect("metrics").iter() {
            h.render(&mut out, "swarmfs_http_request_duration_seconds", &[("route", route)]);
        }
        out.counter(
            "swarmfs_http_sent_bytes_total",
            "File bytes sent in HTTP response bodies.",
            self.sent.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "swarmfs_http_received_bytes_total",
            "File bytes received in HTTP PUT bodies.",
            self.received.load(Ordering::Relaxed) as f64,
        );
        out.family(
            "swarmfs_chunk_fetch_duration_seconds",
            "histogram",
            "Time to fetch, verify and decrypt one chunk from a peer.",
        );
        self.chunk_fetch.lock().expect("metrics").render(&mut out, "swarmfs_chunk_fetch_duration_seconds", &[]);
        out.counter(
            "swarmfs_chunks_fetched_total",
            "Chunks fetched from peers (cache misses).",
            self.chunks_fetched.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "swarmfs_chunk_fetched_bytes_total",
            "Plaintext bytes of the chunks fetched from peers.",
            self.chunk_bytes_fetched.load(Ordering::Relaxed) as f64,
        );
        let (hits, misses) = cache.counts();
        out.family("swarmfs_chunk_cache_lookups_total", "counter", "Chunk cache lookups, by result.");
        out.sample("swarmfs_chunk_cache_lookups_total", &[("result", "hit")], hits as f64);
        out.sample("swarmfs_chunk_cache_lookups_total", &[("result", "miss")], misses as f64);
        out.gauge("swarmfs_chunk_cache_bytes", "Decrypted chunk bytes held in the cache.", cache.bytes() as f64);
        out.into_string()
    }
}
