//! Prometheus metrics on the tracker and the peers (`--metrics ADDR`), checked with promtool.

mod common;

use common::{http, metrics_addr, pattern, promtool_accepts, scrape, sum, Cluster};

#[test]
fn tracker_and_peers_serve_metrics_promtool_accepts_and_a_put_moves_the_byte_counters_exactly() {
    let flags = ["--metrics", "127.0.0.1:0"];
    let c = Cluster::start_with(2, "1G", &flags, &flags);
    let tracker = metrics_addr(&c, "tracker");
    let peers = [metrics_addr(&c, "peer0"), metrics_addr(&c, "peer1")];
    let data = pattern(3 * 65536 + 100, 5);
    let local = c.path("f");
    std::fs::write(&local, &data).unwrap();
    let put: serde_json::Value = serde_json::from_str(&c.ok(&[
        "put",
        local.to_str().unwrap(),
        "/f",
        "--chunk-size",
        "64K",
        "--replicas",
        "2",
        "--json",
    ]))
    .unwrap();
    let chunks = put["chunks"].as_u64().unwrap() as f64;
    // Every stored byte came in with a PutChunk, and nothing else did.
    let mut stored = 0u64;
    for i in 0..2 {
        let mut files = Vec::new();
        common::walk(&c.peer_home(i).join("store/chunks"), &mut files);
        stored += files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>();
    }
    let bodies: Vec<String> = peers.iter().map(|a| scrape(a)).collect();
    let received: f64 = bodies.iter().map(|b| sum(b, "swarmfs_received_bytes_total", &["kind=\"put_chunk\""])).sum();
    assert_eq!(received, stored as f64, "bytes received by PutChunk = bytes stored on the peers");
    let ok: f64 =
        bodies.iter().map(|b| sum(b, "swarmfs_requests_total", &["kind=\"put_chunk\"", "result=\"ok\""])).sum();
    assert_eq!(ok, chunks * 2.0, "one PutChunk per chunk and copy");
    let used: f64 = bodies.iter().map(|b| sum(b, "swarmfs_store_used_bytes", &[])).sum();
    assert_eq!(used, stored as f64);
    for b in &bodies {
        assert!(sum(b, "swarmfs_request_duration_seconds_count", &["kind=\"put_chunk\""]) >= 1.0, "{b}");
        promtool_accepts(b);
    }
    let t = scrape(&tracker);
    assert_eq!(sum(&t, "swarmfs_peers", &["state=\"up\""]), 2.0, "{t}");
    assert_eq!(sum(&t, "swarmfs_requests_total", &["kind=\"commit_file\"", "result=\"ok\""]), 1.0, "{t}");
    promtool_accepts(&t);
    // Anything but GET /metrics gets a plain refusal; the endpoint goes on serving.
    assert_eq!(http(&tracker, "GET / HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
    assert_eq!(http(&tracker, "POST /metrics HTTP/1.1\r\n\r\n").0, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(http(&tracker, "garbage\r\n\r\n").0, "HTTP/1.1 405 Method Not Allowed");
    scrape(&tracker);
}
