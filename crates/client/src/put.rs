//! Upload: read and seal chunks on blocking threads, store each on R distinct peers with a
//! bounded window in flight, then commit the manifest and locations in one tracker call. A
//! failure anywhere before the commit leaves nothing visible.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use swarmfs_core::{chunk_count, seal_chunk, ChunkRef, Manifest, MAX_CHUNKS_PER_FILE};
use swarmfs_proto::{ChunkPlacement, EntryInfo, FileId, NodeId, PeerInfo, RemotePath, Request, Response};

use crate::placement::{Placer, Policy};
use crate::{Client, ClientError, Progress};

#[derive(Clone, Debug)]
pub struct PutOptions {
    pub chunk_size: u32,
    pub replicas: usize,
    pub policy: Policy,
    /// Chunks in flight at once; bounds memory at about 2 × window × chunk size.
    pub window: usize,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions { chunk_size: swarmfs_core::DEFAULT_CHUNK_SIZE, replicas: 2, policy: Policy::default(), window: 8 }
    }
}

/// Stores chunks for one upload: placement state and the replica count it settled on.
pub struct Uploader<'a> {
    client: &'a Client,
    placer: Placer,
    pub replicas: usize,
    deriver: [u8; 32],
}

impl Uploader<'_> {
    /// Seals `plain` (on a blocking thread) and stores it on `replicas` peers.
    pub async fn store(
        &self,
        index: u64,
        plain: Vec<u8>,
        progress: &dyn Progress,
    ) -> Result<(ChunkRef, Vec<NodeId>), ClientError> {
        let deriver = self.deriver;
        let len = plain.len() as u32;
        let sealed = tokio::task::spawn_blocking(move || seal_chunk(&deriver, &plain))
            .await
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let holders = self
            .client
            .store_replicas(index, &sealed.id, Bytes::from(sealed.ciphertext), self.replicas, &self.placer, progress)
            .await?;
        Ok((ChunkRef { id: sealed.id, key: sealed.key, len }, holders))
    }
}

#[derive(Debug)]
pub struct PutReport {
    pub size: u64,
    pub chunks: u64,
    pub replicas: usize,
    pub elapsed: Duration,
}

/// Timeout for one chunk transfer: generous for slow disks, still bounded.
fn transfer_timeout(len: usize) -> Duration {
    Duration::from_secs(20) + Duration::from_millis(len as u64 / 10_000)
}

impl Client {
    pub async fn put(
        &self,
        local: &Path,
        remote: &RemotePath,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<PutReport, ClientError> {
        let started = Instant::now();
        self.data_key()?;
        if remote.is_root() {
            return Err(ClientError::Invalid("cannot put a file at /".into()));
        }
        let file = File::open(local).map_err(|e| ClientError::io(local.display(), e))?;
        let meta = file.metadata().map_err(|e| ClientError::io(local.display(), e))?;
        if !meta.is_file() {
            return Err(ClientError::Invalid(format!("{}: not a regular file", local.display())));
        }
        let size = meta.len();
        let n = chunk_count(size, opts.chunk_size);
        if n > MAX_CHUNKS_PER_FILE {
            return Err(swarmfs_core::CoreError::TooManyChunks { chunks: n, max: MAX_CHUNKS_PER_FILE }.into());
        }
        // Fail early on a bad destination rather than after uploading everything.
        match self.stat(remote).await {
            Ok(e) if e.kind == swarmfs_proto::EntryKind::Dir => {
                return Err(ClientError::Remote {
                    code: swarmfs_proto::ErrorCode::IsADirectory,
                    message: format!("{remote}: is a directory"),
                })
            }
            _ => {}
        }
        if !remote.parent().is_root() {
            self.mkdir(&remote.parent(), true).await?;
        }

        let up = self.uploader(opts.replicas, opts.policy, n > 0, progress).await?;
        let replicas = up.replicas;
        let file = Arc::new(file);
        let chunk_size = opts.chunk_size as u64;
        progress.start(size);

        let placed: Vec<(ChunkRef, Vec<NodeId>)> = stream::iter(0..n)
            .map(|index| {
                let (file, up) = (file.clone(), &up);
                async move {
                    let offset = index * chunk_size;
                    let len = chunk_size.min(size - offset) as usize;
                    let plain = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; len];
                        file.read_exact_at(&mut buf, offset).map(|_| buf)
                    })
                    .await
                    .map_err(|e| ClientError::Invalid(e.to_string()))?
                    .map_err(|e| ClientError::io("reading the local file", e))?;
                    let placed = up.store(index, plain, progress).await?;
                    progress.advance(len as u64);
                    Ok::<_, ClientError>(placed)
                }
            })
            .buffered(opts.window.max(1))
            .try_collect()
            .await?;

        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let manifest = Manifest {
            size,
            chunk_size: opts.chunk_size,
            mode: 0o644,
            mtime_ms,
            chunks: placed.iter().map(|(r, _)| r.clone()).collect(),
        };
        let placements = placed.into_iter().map(|(r, holders)| ChunkPlacement { chunk: r.id, holders }).collect();
        self.commit(remote, &manifest, placements).await?;
        Ok(PutReport { size, chunks: n, replicas, elapsed: started.elapsed() })
    }

    /// Prepares to store chunks: fetches the live peers and caps the replica count at them
    /// (warning through `progress` when it does). `need_peers` false allows an empty swarm,
    /// for files with no chunks.
    pub async fn uploader(
        &self,
        replicas: usize,
        policy: Policy,
        need_peers: bool,
        progress: &dyn Progress,
    ) -> Result<Uploader<'_>, ClientError> {
        let deriver = self.data_key()?.chunk_key_deriver();
        let live = self.live_peers_cached().await?;
        if live.is_empty() && need_peers {
            return Err(ClientError::NoPeers);
        }
        let capped = replicas.max(1).min(live.len().max(1));
        if capped < replicas && need_peers {
            progress
                .warn(&format!("only {} live peer(s): storing {capped} replica(s) instead of {replicas}", live.len()));
        }
        let rtt = if policy == Policy::LowestLatency { self.measure_rtt(&live).await } else { Default::default() };
        Ok(Uploader { client: self, placer: Placer::new(policy, live, rtt), replicas: capped, deriver })
    }

    /// Makes a file visible: seals `manifest` and records it with the chunk placements in
    /// one tracker transaction. Placements may list chunks stored earlier with no holders.
    pub async fn commit(
        &self,
        remote: &RemotePath,
        manifest: &Manifest,
        placements: Vec<ChunkPlacement>,
    ) -> Result<EntryInfo, ClientError> {
        let (sealed, _file_key) = manifest.seal(self.data_key()?);
        let req = Request::CommitFile {
            path: remote.to_string(),
            size: manifest.size,
            file_id: FileId(rand::random()),
            manifest: sealed,
            placements,
        };
        match self.call(&req).await? {
            Response::Entry(e) => Ok(e),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    /// Stores one chunk on `replicas` distinct peers, walking down the placement order past
    /// peers that fail. Returns who acknowledged it durable.
    async fn store_replicas(
        &self,
        index: u64,
        chunk: &swarmfs_proto::ChunkId,
        bytes: Bytes,
        replicas: usize,
        placer: &Placer,
        progress: &dyn Progress,
    ) -> Result<Vec<NodeId>, ClientError> {
        let len = bytes.len() as u64;
        let mut tried: Vec<NodeId> = Vec::new();
        let mut holders = Vec::with_capacity(replicas);
        let mut last_err = String::from("no peer available");
        let mut last_code = None;
        while holders.len() < replicas {
            let batch = placer.pick(chunk, replicas - holders.len(), &tried, len);
            if batch.is_empty() {
                return Err(ClientError::PlacementFailed { index, last: last_err, code: last_code });
            }
            tried.extend(batch.iter().map(|p| p.node));
            let results =
                futures_util::future::join_all(batch.iter().map(|p| self.put_one(p, chunk, bytes.clone()))).await;
            for (p, r) in batch.into_iter().zip(results) {
                match r {
                    Ok(()) => holders.push(p.node),
                    Err(e) => {
                        placer.release(p.node, len);
                        progress.warn(&format!(
                            "peer {} failed to store chunk {index}: {e}; trying another",
                            p.node.short()
                        ));
                        last_err = e.to_string();
                        last_code = e.code();
                    }
                }
            }
        }
        Ok(holders)
    }

    async fn put_one(&self, peer: &PeerInfo, chunk: &swarmfs_proto::ChunkId, bytes: Bytes) -> Result<(), ClientError> {
        let conn = self.pool.get(peer.node, &peer.addrs).await?;
        let timeout = transfer_timeout(bytes.len());
        match conn.call_timeout(&Request::PutChunk { chunk: *chunk }, bytes, timeout).await?.0 {
            Response::Ok => Ok(()),
            Response::Error { code, message } => Err(ClientError::Remote { code, message }),
            _ => Err(ClientError::Unexpected("peer")),
        }
    }
}
