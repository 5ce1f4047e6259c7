//! Prometheus metrics: what a listener counts for every request it answers, rendered in the
//! text exposition format (version 0.0.4), and the HTTP endpoint that serves it
//! (`--metrics ADDR`). Names follow Prometheus conventions: `swarmfs_` prefix, base units
//! (seconds, bytes), `_total` on counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Upper bounds of the request latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with the buckets above.
#[derive(Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    /// Its `_bucket`, `_sum` and `_count` samples under `name` (the family is the caller's).
    pub fn render(&self, out: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let bounds = BUCKETS.iter().map(|le| le.to_string()).chain(["+Inf".to_string()]);
        let counts = self.counts.iter().chain([&self.count]);
        for (le, n) in bounds.zip(counts) {
            let mut l = labels.to_vec();
            l.push(("le", &le));
            out.sample(&bucket, &l, *n as f64);
        }
        out.sample(&format!("{name}_sum"), labels, self.sum);
        out.sample(&format!("{name}_count"), labels, self.count as f64);
    }
}

/// What one listener counts. Cheap to update: a mutex per request, never held across await.
#[derive(Default)]
pub struct Metrics {
    /// (request kind, result) -> answered.
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Payload bytes received with requests (chunks stored) and sent with answers (chunks
    /// served), by request kind.
    bytes_in: Mutex<BTreeMap<&'static str, u64>>,
    bytes_out: Mutex<BTreeMap<&'static str, u64>>,
    connections: AtomicI64,
    connections_opened: AtomicU64,
}

impl Metrics {
    /// One answered request: its kind, result (`ok` or the error code), time to answer, and
    /// the payload bytes that came with it and went back.
    pub fn request(&self, kind: &'static str, result: &'static str, took: Duration, bytes_in: usize, bytes_out: usize) {
        *self.requests.lock().expect("metrics").entry((kind, result)).or_default() += 1;
        {
            let mut latency = self.latency.lock().expect("metrics");
            latency.entry(kind).or_default().observe(took);
        }
        if bytes_in > 0 {
            *self.bytes_in.lock().expect("metrics").entry(kind).or_default() += bytes_in as u64;
        }
        if bytes_out > 0 {
            *self.bytes_out.lock().expect("metrics").entry(kind).or_default() += bytes_out as u64;
        }
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The exposition text of what this listener counted.
    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "swarmfs_requests_total",
            "counter",
            "Requests answered, by kind and result (ok or the error code).",
        );
        for ((kind, result), n) in self.requests.lock().expect("metrics").iter() {
            out.sample("swarmfs_requests_total", &[("kind", kind), ("result", result)], *n as f64);
        }
        out.family("swarmfs_request_duration_seconds", "histogram", "Time from a request's arrival to its answer.");
        for (kind, h) in self.latency.lock().expect("metrics").iter() {
            h.render(out, "swarmfs_request_duration_seconds", &[("kind", kind)]);
        }
        out.family(
            "swarmfs_received_bytes_total",
            "counter",
            "Payload bytes received with requests (chunks stored), by kind.",
        );
        for (kind, n) in self.bytes_in.lock().expect("metrics").iter() {
            out.sample("swarmfs_received_bytes_total", &[("kind", kind)], *n as f64);
        }
        out.family("swarmfs_sent_bytes_total", "counter", "Payload bytes sent with answers (chunks served), by kind.");
        for (kind, n) in self.bytes_out.lock().expect("metrics").iter() {
            out.sample("swarmfs_sent_bytes_total", &[("kind", kind)], *n as f64);
        }
        out.gauge(
            "swarmfs_connections",
            "Authenticated connections open now.",
            self.connections.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "swarmfs_connections_opened_total",
            "Authenticated connections opened since start.",
            self.connections_opened.load(Ordering::Relaxed) as f64,
        );
    }
}

/// Text in the Prometheus exposition format, one family at a time.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    /// Starts a metric family: its HELP and TYPE lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample; label values are escaped as the format requires.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A family with one unlabelled counter (`name` ends in `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    /// Each background worker's work done and failed steps (`health` shows the same).
    pub fn workers(&mut self, workers: &[swarmfs_proto::WorkerStatus]) {
        self.family(
            "swarmfs_worker_done_total",
            "counter",
            "Units of work each background worker has done since start.",
        );
        for w in workers {
            self.sample("swarmfs_worker_done_total", &[("worker", &w.name)], w.done as f64);
        }
        self.family("swarmfs_worker_errors_total", "counter", "Failed steps of each background worker since start.");
        for w in workers {
            self.sample("swarmfs_worker_errors_total", &[("worker", &w.name)], w.errors as f64);
        }
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// What a daemon exposes: called on every scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Scrapes served at once; more wait.
const MAX_SCRAPES: usize = 16;

/// Serves `GET /metrics` over plain HTTP/1.1 on `listener` until `shutdown`: one request per
/// connection, its head at most 8 KiB and 5 s, everything else 404 or 400.
pub async fn serve_metrics(listener: TcpListener, render: Render, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut scrapes = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
            Some(_) = scrapes.join_next(), if !scrapes.is_empty() => continue,
        };
        let Ok((mut tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let render = render.clone();
        scrapes.spawn(async move {
            let _slot = slot;
            let answer = match tokio::time::timeout(Duration::from_secs(5), read_head(&mut tcp)).await {
                Ok(Some(head)) => respond(&head, &render),
                _ => response("400 Bad Request", "text/plain", "bad request\n".into()),
            };
            if let Err(e) = tcp.write_all(answer.as_bytes()).await {
                debug!("metrics scrape: {e}");
            }
            let _ = tcp.shutdown().await;
        });
    }
    scrapes.shutdown().await;
}

async fn read_head(tcp: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > 8192 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

fn respond(head: &str, render: &Render) -> String {
    let mut first = head.lines().next().unwrap_or("").split(' ');
    match (first.next(), first.next()) {
        (Some("GET"), Some("/metrics")) => response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render()),
        (Some("GET"), Some(_)) => response("404 Not Found", "text/plain", "metrics are at /metrics\n".into()),
        _ => response("405 Method Not Allowed", "text/plain", "only GET /metrics\n".into()),
    }
}

fn response(status: &str, content_type: &str, body: String) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_histograms_are_cumulative() {
        let m = Metrics::default();
        m.request("get_chunk", "ok", Duration::from_millis(3), 0, 100);
        m.request("get_chunk", "not_found", Duration::from_millis(700), 0, 0);
        let mut out = Exposition::default();
        m.render(&mut out);
        out.sample("x", &[("worker", "a\"b\\c\nd")], 1.0);
        let text = out.into_string();
        assert!(text.contains(r#"x{worker="a\"b\\c\nd"} 1"#), "{text}");
        assert!(text.contains(r#"swarmfs_request_duration_seconds_bucket{kind="get_chunk",le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"swarmfs_request_duration_seconds_bucket{kind="get_chunk",le="1"} 2"#), "{text}");
        assert!(text.contains(r#"swarmfs_request_duration_seconds_bucket{kind="get_chunk",le="+Inf"} 2"#), "{text}");
        assert!(text.contains(r#"swarmfs_requests_total{kind="get_chunk",result="not_found"} 1"#), "{text}");
        assert!(text.contains(r#"swarmfs_sent_bytes_total{kind="get_chunk"} 100"#), "{text}");
    }
}
