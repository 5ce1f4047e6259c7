//! Membership changes pushed by the tracker to every peer.

mod common;

use std::time::Duration;

use common::{wait_for, Cluster};

/// Seconds since midnight of a log line's RFC 3339 timestamp.
fn log_time(line: &str) -> f64 {
    let ts = line.split_whitespace().next().unwrap();
    let t = ts.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

fn line_with<'a>(log: &'a str, needle: &str, node: &str) -> Option<&'a str> {
    log.lines().find(|l| l.contains(needle) && l.contains(node))
}

#[test]
fn a_join_and_a_death_reach_existing_peers_within_a_second() {
    let mut c = Cluster::start(2);
    let i = c.add_peer();
    let out = common::run(&c.peer_home(i), &["join", &c.peer_token, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let short = v["node_id"].as_str().unwrap()[..8].to_string();
    let joined_at = wait_for("tracker records the join", Duration::from_secs(10), || {
        let t = c.log("tracker");
        line_with(&t, "joined at", &short).map(log_time)
    });
    for p in 0..2 {
        let seen = wait_for("existing peer sees the join", Duration::from_secs(10), || {
            line_with(&c.log(&format!("peer{p}")), "member joined", &short).map(log_time)
        });
        let lag = (seen - joined_at).rem_euclid(86_400.0);
        assert!(lag < 1.0, "peer{p} saw the join {lag:.3}s after the tracker");
    }
    c.kill_peer(i);
    let down_at = wait_for("tracker notices the death", Duration::from_secs(10), || {
        line_with(&c.log("tracker"), "is down", &short).map(log_time)
    });
    for p in 0..2 {
        let seen = wait_for("existing peer sees the death", Duration::from_secs(10), || {
            line_with(&c.log(&format!("peer{p}")), "member down", &short).map(log_time)
        });
        assert!((seen - down_at).rem_euclid(86_400.0) < 1.0);
    }
}
