//! Simulated peers for the tracker's load benchmark (scripts/bench-tracker runs it): N
//! peers, each a real TLS connection with an identity of its own, that subscribe to
//! membership, join, send an empty inventory and then heartbeat once per PERIOD (at a random
//! phase) for SECS seconds, reading every membership event pushed to them, as peers do.
//! Prints one JSON line: how many joined, how long joining took, heartbeats sent, errors.
//!
//! Usage: peer_swarm PEER_TOKEN TRACKER_ADDR N SECS [PERIOD_MS]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmfs_core::Token;
use swarmfs_net::{dial_serving, Dialer, Identity, Secret};
use swarmfs_proto::{Request, Role};

#[derive(Default)]
struct Counts {
    joined: AtomicU64,
    beats: AtomicU64,
    errors: AtomicU64,
    events: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, token, addr, n, secs, ..] = args.as_slice() else {
        return Err("usage: peer_swarm PEER_TOKEN TRACKER_ADDR N SECS [PERIOD_MS]".into());
    };
    let token = Token::decode(token)?;
    let n: usize = n.parse()?;
    let run_for = Duration::from_secs(secs.parse()?);
    let period = Duration::from_millis(args.get(5).map(|p| p.parse()).transpose()?.unwrap_or(1000));
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    // Handshakes a few at a time, as peers of a real swarm start at different moments.
    let gate = Arc::new(tokio::sync::Semaphore::new(32));
    // Heartbeats go on for SECS after the last peer has joined.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut peers = tokio::task::JoinSet::new();
    for i in 0..n {
        let (counts, gate, addr, tracker, secret, stop) =
            (counts.clone(), gate.clone(), addr.clone(), token.tracker_id, token.swarm_secret.0, stop.clone());
        peers.spawn(async move {
            let identity = Identity::generate().expect("key");
            let secret = Secret::Swarm(secret);
            let dialer = Dialer { identity: &identity, secret: &secret, member: None, role: Role::Peer };
            let permit = gate.acquire().await.expect("open");
            let dialled = dial_serving::<swarmfs_net::rpc::NoService>(&dialer, &addr, tracker, None).await;
            let Ok((conn, mut events)) = dialled else {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let call = |req: Request| {
                let conn = conn.clone();
                async move { conn.call_timeout(&req, Bytes::new(), Duration::from_secs(60)).await }
            };
            // Nobody listens at port 1: the tracker's reach test fails fast (behind NAT).
            let joined = async {
                call(Request::Subscribe).await?;
                call(Request::Join { addrs: vec!["127.0.0.1:1".to_string()], capacity: 1 << 40 }).await?;
                call(Request::Inventory { chunks: vec![], first: true }).await
            }
            .await;
            drop(permit);
            if joined.is_err() {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            counts.joined.fetch_add(1, Ordering::Relaxed);
            let phase = period.mul_f64(rand::random::<f64>());
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let beat = Request::Heartbeat {
                            used: i as u64,
                            chunks: 0,
                            load: 0,
                            capacity: 1 << 40,
                            workers: vec![],
                        };
                        match call(beat).await {
                            Ok(_) => counts.beats.fetch_add(1, Ordering::Relaxed),
                            Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                    ev = events.recv() => if ev.is_some() { counts.events.fetch_add(1, Ordering::Relaxed); },
                    _ = stop.cancelled() => break,
                }
            }
        });
    }
    // Joining is over when every peer has joined or failed; then SECS of heartbeats.
    let mut join_s = None;
    let mut report = tokio::time::interval(Duration::from_millis(100));
    let mut stop_at = None;
    while !peers.is_empty() {
        tokio::select! {
            _ = report.tick() => {
                let done = counts.joined.load(Ordering::Relaxed) + counts.errors.load(Ordering::Relaxed);
                if join_s.is_none() && done >= n as u64 {
                    join_s = Some(started.elapsed().as_secs_f64());
                    eprintln!("all {n} joined in {:.1} s; heartbeating", started.elapsed().as_secs_f64());
                    stop_at = Some(Instant::now() + run_for);
                } else if join_s.is_none() && started.elapsed().as_secs().is_multiple_of(10) && started.elapsed().subsec_millis() < 100 {
                    eprintln!("{done} of {n} joined after {:.0} s", started.elapsed().as_secs_f64());
                }
                if stop_at.is_some_and(|t| Instant::now() >= t) {
                    stop.cancel();
                }
            }
            r = peers.join_next() => { r.expect("not empty")?; }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "peers": n,
            "joined": counts.joined.load(Ordering::Relaxed),
            "join_s": join_s,
            "heartbeats": counts.beats.load(Ordering::Relaxed),
            "events": counts.events.load(Ordering::Relaxed),
            "errors": counts.errors.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
