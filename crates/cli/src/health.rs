//! `swarmfs health` and `swarmfs peer drain`: what the tracker's repair worker sees, and
//! retiring a peer without losing a copy.

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use swarmfs_client::Client;
use swarmfs_proto::{HealthReport, NodeId, PeerState, Request, Response, StateCounts};

use crate::home::Home;
use crate::{Cli, UsageError};

#[derive(Args)]
pub struct DrainArgs {
    /// The peer: its node id or a unique prefix of it (as `swarmfs peers` shows).
    pub node: String,
    /// Stop draining: the peer takes new chunks again and its copies count again.
    #[arg(long, env = "SWARMFS_UNDO")]
    pub undo: bool,
    /// Start draining and return at once, without waiting until the peer can be switched off.
    #[arg(long, env = "SWARMFS_NO_WAIT")]
    pub no_wait: bool,
}

/// A client of the tracker: as the admin from the tracker's home, as a member otherwise.
async fn connect(cli: &Cli) -> Result<Client> {
    let home = Home::load(&cli.home_dir())?;
    if home.identity()?.node_id() == home.token.tracker_id {
        return Ok(crate::members::admin(cli).await?.1);
    }
    crate::files::connect(cli).await
}

async fn fetch(client: &Client) -> Result<HealthReport> {
    match client.call(&Request::Health).await? {
        Response::Health(r) => Ok(*r),
        _ => anyhow::bail!("unexpected answer from the tracker"),
    }
}

fn counts_json(c: &StateCounts) -> serde_json::Value {
    json!({ "healthy": c.healthy, "under_replicated": c.under_replicated, "repairing": c.repairing, "lost": c.lost,
            "shared": c.shared })
}

pub fn report_json(r: &HealthReport) -> serde_json::Value {
    json!({
        "status": status(r),
        "files": counts_json(&r.files),
        "chunks": counts_json(&r.chunks),
        "bytes_at_risk": r.bytes_at_risk,
        "lost_files": r.lost_files,
        "peers": r.peers.iter().map(|p| json!({
            "node": p.node.to_string(),
            "state": p.state.as_str(),
            "down_for_ms": p.down_for_ms,
            "sole_copies": p.sole_copies,
        })).collect::<Vec<_>>(),
        "repair": {
            "queued": r.repair_queued,
            "in_flight": r.repair_in_flight,
            "repaired_chunks": r.repaired_chunks,
            "repaired_bytes": r.repaired_bytes,
            "rate_bytes_per_sec": r.repair_rate_bps,
            "repair_after_ms": r.repair_after_ms,
        },
        "workers": r.workers.iter().map(|w| json!({
            "name": w.name, "state": w.state, "detail": w.detail, "done": w.done,
            "errors": w.errors, "last_error": w.last_error,
        })).collect::<Vec<_>>(),
    })
}

/// One word for the whole swarm.
fn status(r: &HealthReport) -> &'static str {
    if r.chunks.lost > 0 {
        "lost"
    } else if r.chunks.under_replicated + r.chunks.repairing > 0 {
        "degraded"
    } else {
        "healthy"
    }
}

fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

pub async fn health(cli: &Cli) -> Result<()> {
    let client = connect(cli).await?;
    let r = fetch(&client).await?;
    if cli.json {
        outln!("{}", report_json(&r));
        return Ok(());
    }
    let row = |what: &str, c: &StateCounts| {
        format!(
            "{what:<7} {:>8} healthy  {:>6} under-replicated  {:>6} repairing  {:>6} lost  {:>6} shared (not stored)",
            c.healthy, c.under_replicated, c.repairing, c.lost, c.shared
        )
    };
    outln!("swarm:  {}", status(&r));
    outln!("{}", row("files:", &r.files));
    outln!("{}", row("chunks:", &r.chunks));
    outln!("at risk: {}", crate::files::human(r.bytes_at_risk));
    let down: Vec<_> = r.peers.iter().filter(|p| !p.state.is_live()).collect();
    let live = r.peers.len() - down.len();
    outln!("peers:  {live} live, {} down or gone", down.len());
    for p in &down {
        let since = p.down_for_ms.map(ago).unwrap_or_else(|| "?".into());
        outln!("  {} {} for {since}", p.node.short(), p.state.as_str());
    }
    for p in r.peers.iter().filter(|p| p.state == PeerState::Draining) {
        outln!("  {} draining: {} chunks still need a copy elsewhere", p.node.short(), p.sole_copies);
    }
    outln!(
        "repair: {} copies queued, {} in flight, {} chunks ({}) repaired, {}/s now; peers down longer than {} are replaced",
        r.repair_queued,
        r.repair_in_flight,
        r.repaired_chunks,
        crate::files::human(r.repaired_bytes),
        crate::files::human(r.repair_rate_bps),
        ago(r.repair_after_ms)
    );
    if !r.lost_files.is_empty() {
        outln!("lost files (no live copy of some chunk; readable again if a holder comes back):");
        for f in &r.lost_files {
            outln!("  {}", crate::files::shown(f));
        }
    }
    outln!("workers:");
    for w in &r.workers {
        let err = w.last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default();
        outln!("  {:<22} {:<11} {}{err}", w.name, w.state, w.detail);
    }
    Ok(())
}

/// The peer `prefix` names, among the peers the tracker knows.
async fn resolve(client: &Client, prefix: &str) -> Result<NodeId> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(UsageError(format!("{prefix:?} is not a node id (hex, as `swarmfs peers` shows)")).into());
    }
    let peers = client.peers().await?;
    let found: Vec<_> = peers.iter().filter(|p| p.node.to_string().starts_with(&prefix)).collect();
    match found.as_slice() {
        [one] => Ok(one.node),
        [] => Err(swarmfs_client::ClientError::Remote {
            code: swarmfs_proto::ErrorCode::NotFound,
            message: format!("no peer {prefix} in this swarm"),
        }
        .into()),
        _ => Err(UsageError(format!("{prefix} names {} peers: give more of the id", found.len())).into()),
    }
}

pub async fn drain(cli: &Cli, a: &DrainArgs) -> Result<()> {
    let (_, client) = crate::members::admin(cli).await?;
    let node = resolve(&client, &a.node).await?;
    match client.call(&Request::Drain { node, on: !a.undo }).await.context("drain")? {
        Response::Ok => {}
        _ => anyhow::bail!("unexpected answer from the tracker"),
    }
    if a.undo || a.no_wait {
        if cli.json {
            outln!("{}", json!({ "node": node.to_string(), "draining": !a.undo }));
        } else if a.undo {
            outln!("peer {} is no longer draining", node.short());
        } else {
            outln!("peer {} is draining; `swarmfs health` shows what is left", node.short());
        }
        return Ok(());
    }
    // Wait until no chunk depends on this peer's copy, showing what is left.
    let mut last = None;
    let started = std::time::Instant::now();
    loop {
        let r = fetch(&client).await?;
        let Some(me) = r.peers.iter().find(|p| p.node == node) else {
            anyhow::bail!("peer {} is no longer known to the tracker", node.short());
        };
        // Only a live draining peer's count means anything: a down one's copies count for
        // nothing now, yet may be the last ones.
        match me.state {
            PeerState::Draining if me.sole_copies == 0 => break,
            PeerState::Draining => {}
            PeerState::Up => anyhow::bail!("peer {} is no longer draining (undone elsewhere?)", node.short()),
            PeerState::Down | PeerState::Left => {
                if last != Some(u64::MAX) && !cli.json {
                    errln!(
                        "draining {}: the peer is down; waiting for it to come back to move its copies",
                        node.short()
                    );
                    last = Some(u64::MAX);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        let left = me.sole_copies;
        if last != Some(left) && !cli.json {
            errln!(
                "draining {}: {left} chunks still need a copy elsewhere ({} copied so far, {}/s)",
                node.short(),
                r.repaired_chunks,
                crate::files::human(r.repair_rate_bps)
            );
            last = Some(left);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if cli.json {
        outln!(
            "{}",
            json!({ "node": node.to_string(), "draining": true, "safe_to_remove": true, "secs": started.elapsed().as_secs_f64() })
        );
    } else {
        outln!("peer {} can be switched off without loss: every chunk it holds has its copies elsewhere", node.short());
    }
    Ok(())
}
