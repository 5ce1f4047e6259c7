//! How the tracker's database scales with chunk locations (scripts/bench-tracker runs it):
//! fills a database with `LOCATIONS` synthetic locations over `PEERS` peers (each chunk on 2
//! of them), then times `Db::locate` for 1,000-chunk files (random existing chunks, as a
//! get asks) and reports p50/p99, and the bytes each location takes on disk.
//!
//! Usage: locate_scale SQLITE_PATH|postgres://... LOCATIONS [PEERS]

use std::time::Instant;

use swarmfs_proto::{ChunkId, NodeId};
use swarmfs_tracker::db::Db;

fn chunk(i: u64) -> ChunkId {
    ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes())
}

fn node(i: u64) -> NodeId {
    NodeId(*blake3::hash(&(u64::MAX - i).to_le_bytes()).as_bytes())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, locations, ..] = args.as_slice() else {
        return Err("usage: locate_scale SQLITE_PATH|postgres://... LOCATIONS [PEERS]".into());
    };
    let locations: u64 = locations.parse()?;
    let peers: u64 = args.get(3).map(|p| p.parse()).transpose()?.unwrap_or(10_000);
    let mut db = if target.starts_with("postgres") { Db::postgres(target).await? } else { Db::open(target.as_ref())? };
    let chunks = locations / 2;
    let started = Instant::now();
    // Peer by peer, as inventories arrive when peers join: chunk c is on peers c and c+1
    // (mod PEERS), so peer p holds the chunks c = p and c = p - 1 (mod PEERS).
    tokio::task::block_in_place(|| -> Result<(), swarmfs_tracker::TrackerError> {
        for p in 0..peers {
            let mine: Vec<ChunkId> = (0..chunks)
                .step_by(peers as usize)
                .flat_map(|base| [base + p, base + (p + peers - 1) % peers])
                .filter(|&c| c < chunks)
                .map(chunk)
                .collect();
            db.add_locations(&node(p), &mine, false)?;
        }
        Ok(())
    })?;
    // As autovacuum (PostgreSQL) would after such a load; without it the planner, blind to
    // the table's size, scans it whole for every lookup.
    tokio::task::block_in_place(|| db.analyze())?;
    let fill = started.elapsed().as_secs_f64();
    let mut rng = blake3::Hasher::new();
    let mut times = Vec::new();
    for round in 0..200u64 {
        rng.update(&round.to_le_bytes());
        let seed = u64::from_le_bytes(rng.finalize().as_bytes()[..8].try_into()?);
        let ids: Vec<ChunkId> = (0..1000).map(|k| chunk((seed.wrapping_add(k * 7919)) % chunks)).collect();
        let t = Instant::now();
        let found = tokio::task::block_in_place(|| db.locate(&ids))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(found.iter().all(|h| h.len() == 2), "every chunk has its two holders");
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
    println!(
        "{{\"locations\": {locations}, \"peers\": {peers}, \"fill_s\": {fill:.1}, \"locate_1000_p50_ms\": {p50:.2}, \"locate_1000_p99_ms\": {p99:.2}}}"
    );
    Ok(())
}
