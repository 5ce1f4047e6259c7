//! `swarmfs share LOCAL REMOTE`: publish a file from the sharer's own disk. The file is
//! indexed once (each chunk sealed to learn its id, the ciphertext thrown away), committed
//! with no durable copy (R = 0: shared, not stored) unless `--replicas N` also stores N, and
//! served while the command runs: each chunk is read from the file and sealed again on
//! demand, and served only if it still hashes to its id. A file edited since it was shared
//! is never served wrong; its changed chunks are refused with a clear message.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use serde_json::json;
use swarmfs_client::PutOptions;
use swarmfs_core::{seal_chunk, ChunkRef, Manifest};
use swarmfs_net::{serve, ConnCtx, Limits, Service};
use swarmfs_proto::authz::Listener;
use swarmfs_proto::{ChunkId, ChunkPlacement, Credential, ErrorCode, Hello, NodeId, Request, Response};
use tokio::net::TcpListener;
use tracing::warn;

use crate::files::{connect, human};
use crate::home::Home;
use crate::nodes::{parse_chunk_size, parse_size};
use crate::Cli;

#[derive(Args)]
pub struct ShareArgs {
    pub local: PathBuf,
    pub remote: String,
    /// Also store this many durable copies (a normal put), so the file outlives the sharer.
    #[arg(long, env = "SWARMFS_REPLICAS", default_value_t = 0)]
    pub replicas: usize,
    /// Chunk size, 512 B to 64 MiB.
    #[arg(long, env = "SWARMFS_CHUNK_SIZE", default_value = "1M", value_parser = parse_chunk_size)]
    pub chunk_size: u32,
    /// Address to serve on (port 0 picks a free port).
    #[arg(long, env = "SWARMFS_SERVE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Address others dial to reach this node (default: the listen address).
    #[arg(long, env = "SWARMFS_ADVERTISE")]
    pub advertise: Option<String>,
    /// Most bytes per second to upload, e.g. 10M (a home uplink); 0 for no limit.
    #[arg(long, env = "SWARMFS_UPLOAD_RATE", default_value = "0", value_parser = parse_size)]
    pub upload_rate: u64,
}

/// Where each chunk of the shared file lives, by id.
struct Index {
    chunks: HashMap<ChunkId, (u64, u32)>,
}

struct ShareService {
    file: std::fs::File,
    index: Index,
    deriver: [u8; 32],
    tracker_id: NodeId,
    served: AtomicU64,
    pacer: swarmfs_net::task::RateLimiter,
    /// Set once a changed chunk was refused, so it is logged once.
    stale_logged: AtomicBool,
}

impl Service for ShareService {
    fn listener(&self) -> Listener {
        Listener::Peer
    }

    fn admit(&self, remote: NodeId, _hello: &Hello, _exporter: &[u8; 32]) -> Result<Credential, String> {
        Ok(if remote == self.tracker_id { Credential::Tracker } else { Credential::Peer })
    }

    async fn handle(&self, _ctx: &Arc<ConnCtx>, req: Request, _payload: Bytes) -> (Response, Bytes) {
        match req {
            Request::GetChunk { chunk, offset, len } => {
                let Some(&(at, plain_len)) = self.index.chunks.get(&chunk) else {
                    return (
                        Response::error(ErrorCode::NotFound, format!("chunk {} is not shared here", chunk.short())),
                        Bytes::new(),
                    );
                };
                let mut plain = vec![0u8; plain_len as usize];
                if let Err(e) = self.file.read_exact_at(&mut plain, at) {
                    return (
                        Response::error(ErrorCode::NotFound, format!("the shared file cannot be read: {e}")),
                        Bytes::new(),
                    );
                }
                let deriver = self.deriver;
                let sealed = match tokio::task::spawn_blocking(move || seal_chunk(&deriver, &plain)).await {
                    Ok(s) => s,
                    Err(e) => return (Response::error(ErrorCode::Internal, e.to_string()), Bytes::new()),
                };
                if sealed.id != chunk {
                    if !self.stale_logged.swap(true, Ordering::Relaxed) {
                        warn!("the shared file changed on disk since it was shared: its changed chunks are refused; share it again");
                    }
                    return (
                        Response::error(
                            ErrorCode::NotFound,
                            "the shared file changed on the sharer's disk since it was shared (its chunks are refused); ask the sharer to share it again",
                        ),
                        Bytes::new(),
                    );
                }
                let c = sealed.ciphertext;
                let end = if len == u64::MAX { c.len() as u64 } else { offset.saturating_add(len) };
                if offset > c.len() as u64 || end > c.len() as u64 {
                    return (Response::error(ErrorCode::InvalidArgument, "range past the chunk's end"), Bytes::new());
                }
                let bytes = Bytes::from(c).slice(offset as usize..end as usize);
                self.pacer.admit(bytes.len() as u64).await;
                self.served.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                (Response::Chunk, bytes)
            }
            Request::HasChunks { chunks } => {
                (Response::Has(chunks.iter().map(|c| self.index.chunks.contains_key(c)).collect()), Bytes::new())
            }
            Request::Ping => {
                (Response::Pong { used: 0, capacity: 0, chunks: self.index.chunks.len() as u64 }, Bytes::new())
            }
            other => (
                Response::error(ErrorCode::Unsupported, format!("a sharer does not answer {}", other.name())),
                Bytes::new(),
            ),
        }
    }
}

/// Reads the file once, sealing each chunk to learn its id (the ciphertext is dropped).
fn index_file(file: &std::fs::File, chunk_size: u32, deriver: &[u8; 32]) -> Result<(Manifest, Index)> {
    let meta = file.metadata()?;
    let size = meta.len();
    let mut chunks = Vec::new();
    let mut index = HashMap::new();
    let mut at = 0u64;
    let mut buf = vec![0u8; chunk_size as usize];
    while at < size {
        let n = (size - at).min(chunk_size as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        let sealed = seal_chunk(deriver, &buf[..n]);
        index.insert(sealed.id, (at, n as u32));
        chunks.push(ChunkRef { id: sealed.id, key: sealed.key, len: n as u32 });
        at += n as u64;
    }
    let mtime_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok((Manifest::whole(size, chunk_size, 0o644, mtime_ms, chunks), Index { chunks: index }))
}

pub async fn share(cli: &Cli, a: &ShareArgs) -> Result<()> {
    let remote = swarmfs_proto::RemotePath::parse(&a.remote)?;
    if remote.is_root() {
        return Err(crate::UsageError("cannot share a file at /".into()).into());
    }
    let home = Home::load(&cli.home_dir())?;
    let client = Arc::new(connect(cli).await?);
    let deriver = client.data_key().map_err(anyhow::Error::from)?.chunk_key_deriver();
    let file = std::fs::File::open(&a.local).map_err(|e| swarmfs_client::ClientError::io(a.local.display(), e))?;
    if !file.metadata()?.is_file() {
        return Err(crate::UsageError(format!("{} is not a regular file", a.local.display())).into());
    }
    let f = file.try_clone()?;
    let chunk_size = a.chunk_size;
    let (manifest, index) = tokio::task::spawn_blocking(move || index_file(&f, chunk_size, &deriver)).await??;
    if a.replicas > 0 {
        // Stored as the chunks this share serves (never kept in its manifest instead).
        let opts = PutOptions { replicas: a.replicas, chunk_size: a.chunk_size, inline_max: 0, ..Default::default() };
        client
            .put(&a.local, &remote, &opts, &swarmfs_client::Quiet)
            .await
            .with_context(|| format!("share {remote}"))?;
    } else {
        if !remote.parent().is_root() {
            client.mkdir(&remote.parent(), true).await?;
        }
        let placements = manifest.chunks.iter().map(|c| ChunkPlacement { chunk: c.id, holders: vec![] }).collect();
        client.commit(&remote, &manifest, placements, Some(manifest.mtime_ms), 0, None).await?;
    }
    let listener = TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = match &a.advertise {
        Some(x) => x.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let ids: Vec<ChunkId> = manifest.chunks.iter().map(|c| c.id).collect();
    let service = Arc::new(ShareService {
        file,
        index,
        deriver,
        tracker_id: home.token.tracker_id,
        served: AtomicU64::new(0),
        pacer: swarmfs_net::task::RateLimiter::new(a.upload_rate),
        stale_logged: AtomicBool::new(false),
    });
    let stop = crate::nodes::shutdown_on_signal();
    let swarm = home.client_swarm()?;
    let serving = tokio::spawn(serve(listener, swarm, service.clone(), Limits::default(), stop.clone()));
    if !cli.json {
        errln!(
            "sharing {} as {remote} ({}, {} chunks) on {addr} until Ctrl-C",
            a.local.display(),
            human(manifest.size),
            ids.len()
        );
    }
    // The offer lasts as long as this connection: offered again every 10 s, so a tracker
    // that restarted (or a connection that was redialled) learns it again.
    loop {
        let req = Request::Offer { addrs: vec![addr.clone()], chunks: ids.clone(), replace: true };
        if let Err(e) = client.call(&req).await {
            warn!("cannot offer the shared chunks to the tracker: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => break,
        }
    }
    let _ = serving.await;
    let served = service.served.load(Ordering::Relaxed);
    if cli.json {
        outln!("{}", json!({ "path": remote.to_string(), "size": manifest.size, "served_bytes": served }));
    } else {
        errln!("stopped sharing {remote}: served {} to others", human(served));
    }
    Ok(())
}
