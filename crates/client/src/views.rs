//! JSON views of namespace entries and peers, the same for `--json` output and the HTTP API.

use serde_json::{json, Value};
use swarmfs_proto::{EntryInfo, EntryKind, PeerInfo};

/// An entry as `ls --json` and the gateway's listings show it.
pub fn entry_json(e: &EntryInfo) -> Value {
    json!({
        "path": e.path,
        "name": e.path.rsplit('/').next().unwrap_or(""),
        "kind": match e.kind { EntryKind::Dir => "dir", EntryKind::File => "file", EntryKind::Symlink => "symlink", EntryKind::Special => "special" },
        "mode": format!("{:o}", e.mode),
        "size": e.size,
        "mtime_ms": e.mtime_ms,
        "chunks": e.chunks,
        "replicas": e.replicas,
        "file_id": e.file_id.map(|f| f.to_string()),
    })
}

/// A peer as `peers --json` and the dashboard show it.
pub fn peer_json(p: &PeerInfo) -> Value {
    json!({
        "node_id": p.node.to_string(),
        "short_id": p.node.short(),
        "addrs": p.addrs,
        "state": p.state.as_str(),
        "reach": p.reach.as_str(),
        "capacity": p.capacity,
        "used": p.used,
        "chunks": p.chunks,
        "load": p.load,
    })
}
