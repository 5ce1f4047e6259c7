//! Upload: read the source to its end in order on a blocking thread, seal each chunk, store
//! it on R distinct peers with a bounded window in flight, then commit the manifest and
//! locations in one tracker call. A failure anywhere before the commit leaves nothing visible.
//!
//! A put is acknowledged only when every chunk is durable on at least `min_replicas` peers
//! (default: all R). A peer that fails is replaced by the next in the placement order; a
//! peer that has not answered within [`put_hedge_after`] is marked slow for a while and
//! another copy is started elsewhere, so one frozen peer costs seconds, not a timeout per
//! chunk. Problems are summed up once per upload, not warned about once per chunk.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, FuturesUnordered, StreamExt, TryStreamExt};
use swarmfs_core::{seal_chunk_in_place, ChunkRef, Manifest, ManifestDelta, MAX_CHUNKS_PER_FILE, TAG_LEN};
use swarmfs_proto::{ChunkPlacement, EntryInfo, ErrorCode, FileId, NodeId, PeerInfo, RemotePath, Request, Response};

use crate::budget::{Budget, Held};
use crate::placement::{Placer, Policy};
use crate::{Client, ClientError, Progress};

/// The mode and owner a file created by its commit takes (see [`Client::commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOwner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Debug)]
pub struct PutOptions {
    pub chunk_size: u32,
    pub replicas: usize,
    /// Fewest copies of every chunk for the put to succeed; `None` means all `replicas`.
    pub min_replicas: Option<usize>,
    pub policy: Policy,
    /// Chunks in flight at once; bounds memory at about 2 × window × chunk size.
    pub window: usize,
    /// Files up to this many bytes are kept in their manifest, not stored on peers (0: none;
    /// at most [`swarmfs_core::MAX_INLINE`]).
    pub inline_max: usize,
}

impl PutOptions {
    pub const DEFAULT_REPLICAS: usize = 2;
    pub const DEFAULT_WINDOW: usize = 8;
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            chunk_size: swarmfs_core::DEFAULT_CHUNK_SIZE,
            replicas: Self::DEFAULT_REPLICAS,
            min_replicas: None,
            policy: Policy::default(),
            window: Self::DEFAULT_WINDOW,
            inline_max: swarmfs_core::DEFAULT_INLINE_MAX,
        }
    }
}

/// How long the uploader waits for enough peers to be live (they re-join one by one after a
/// tracker restart) before it gives up.
const PEER_WAIT: Duration = Duration::from_secs(10);

/// How long a chunk store may go unanswered before another peer is asked too: well above a
/// healthy fsync of one chunk, well below the transfer timeout.
pub fn put_hedge_after(len: usize) -> Duration {
    Duration::from_secs(2) + Duration::from_millis(len as u64 / 20_000)
}

/// Timeout for one chunk transfer: generous for slow disks, still bounded.
pub(crate) fn transfer_timeout(len: usize) -> Duration {
    Duration::from_secs(20) + Duration::from_millis(len as u64 / 10_000)
}

/// What went wrong with one peer during an upload, for the summary.
#[derive(Default)]
struct PeerTrouble {
    failed: usize,
    slow: usize,
    last: String,
}

/// Stores chunks for one upload: placement state, the replica counts it settled on, and what
/// went wrong along the way.
pub struct Uploader<'a> {
    client: &'a Client,
    placer: Placer,
    /// Copies wanted per chunk (R, capped at the live peers).
    pub replicas: usize,
    /// Copies every chunk must have for the upload to count.
    pub min_replicas: usize,
    deriver: [u8; 32],
    trouble: Mutex<HashMap<NodeId, PeerTrouble>>,
    /// Chunks stored with fewer than `replicas` copies (but at least `min_replicas`).
    short: AtomicUsize,
    fewest: AtomicUsize,
}

impl Uploader<'_> {
    /// Seals `plain` (on a blocking thread) and stores it on `replicas` peers.
    pub async fn store(&self, index: u64, plain: Vec<u8>) -> Result<(ChunkRef, Vec<NodeId>), ClientError> {
        let deriver = self.deriver;
        let len = plain.len() as u32;
        let sealed = tokio::task::spawn_blocking(move || seal_chunk_in_place(&deriver, plain))
            .await
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let holders = self.store_replicas(index, &sealed.id, Bytes::from(sealed.ciphertext)).await?;
        Ok((ChunkRef { id: sealed.id, key: sealed.key, len }, holders))
    }

    /// The fewest copies any chunk got so far (`replicas` when nothing was stored).
    pub fn fewest_copies(&self) -> usize {
        self.fewest.load(Ordering::Relaxed).min(self.replicas)
    }

    /// Warns once about every peer that failed or stalled, and about chunks stored with
    /// fewer copies than wanted.
    pub fn summarize(&self, progress: &dyn Progress) {
        let trouble = std::mem::take(&mut *self.trouble.lock().expect("trouble lock"));
        let mut peers: Vec<_> = trouble.into_iter().collect();
        peers.sort_by_key(|(n, _)| *n);
        for (node, t) in peers {
            if t.failed > 0 {
                progress.warn(&format!(
                    "peer {} failed to store {} chunk(s) ({}); they were stored on other peers",
                    node.short(),
                    t.failed,
                    t.last
                ));
            }
            if t.slow > 0 {
                progress.warn(&format!(
                    "peer {} did not answer in time for {} chunk(s); they were stored on other peers and it is avoided for a while",
                    node.short(),
                    t.slow
                ));
            }
        }
        let short = self.short.load(Ordering::Relaxed);
        if short > 0 {
            progress.warn(&format!(
                "{short} chunk(s) have only {} of {} copies (allowed by --min-replicas {})",
                self.fewest_copies(),
                self.replicas,
                self.min_replicas
            ));
        }
    }

    /// Stores one chunk on `replicas` distinct peers, walking down the placement order past
    /// peers that fail or stall. Returns who acknowledged it durable.
    async fn store_replicas(
        &self,
        index: u64,
        chunk: &swarmfs_proto::ChunkId,
        bytes: Bytes,
    ) -> Result<Vec<NodeId>, ClientError> {
        let len = bytes.len() as u64;
        let hedge = put_hedge_after(bytes.len());
        let mut tried: Vec<NodeId> = Vec::new();
        let mut holders = Vec::with_capacity(self.replicas);
        // Attempts not yet answered and not yet deemed slow: they count towards the copies
        // under way. Slow ones keep running and still count if they answer first.
        let mut waiting: Vec<(NodeId, Instant)> = Vec::new();
        let mut attempts = FuturesUnordered::new();
        let mut last_err = String::from("no peer available");
        let mut last_code = None;
        loop {
            while holders.len() + waiting.len() < self.replicas {
                let slow = |n: &NodeId| self.client.is_slow(n);
                let Some(p) = self.placer.pick_one(chunk, &tried, len, &slow) else { break };
                tried.push(p.node);
                waiting.push((p.node, Instant::now()));
                let bytes = bytes.clone();
                attempts.push(async move {
                    let r = self.client.put_one(&p, chunk, bytes).await;
                    (p, r)
                });
            }
            if holders.len() >= self.replicas || attempts.is_empty() {
                break;
            }
            let hedge_at = waiting.iter().map(|(_, t)| *t + hedge).min();
            tokio::select! {
                Some((p, r)) = attempts.next() => {
                    waiting.retain(|(n, _)| *n != p.node);
                    match r {
                        Ok(()) => holders.push(p.node),
                        Err(e) => {
                            self.placer.release(p.node, len);
                            if e.code() == Some(ErrorCode::NoSpace) {
                                self.placer.avoid(p.node);
                            }
                            last_err = e.to_string();
                            last_code = e.code();
                            let mut t = self.trouble.lock().expect("trouble lock");
                            let t = t.entry(p.node).or_default();
                            t.failed += 1;
                            t.last = last_err.clone();
                        }
                    }
                }
                _ = tokio::time::sleep_until(hedge_at.unwrap_or_else(Instant::now).into()), if hedge_at.is_some() => {
                    let now = Instant::now();
                    waiting.retain(|(node, started)| {
                        if now.duration_since(*started) < hedge {
                            return true;
                        }
                        self.client.mark_slow(*node);
                        self.trouble.lock().expect("trouble lock").entry(*node).or_default().slow += 1;
                        false
                    });
                }
            }
        }
        self.fewest.fetch_min(holders.len(), Ordering::Relaxed);
        if holders.len() >= self.replicas {
            Ok(holders)
        } else if holders.len() >= self.min_replicas {
            self.short.fetch_add(1, Ordering::Relaxed);
            Ok(holders)
        } else {
            Err(ClientError::PlacementFailed {
                index,
                have: holders.len(),
                min: self.min_replicas,
                last: last_err,
                code: last_code,
            })
        }
    }
}

#[derive(Debug)]
pub struct PutReport {
    pub size: u64,
    pub chunks: u64,
    /// The fewest copies any chunk has.
    pub replicas: usize,
    pub elapsed: Duration,
    /// A file was there before and this put replaced it.
    pub replaced: bool,
}

/// A file's chunks stored on peers, not yet visible: what [`Client::commit`] makes a file.
pub struct Uploaded {
    pub manifest: Manifest,
    pub placements: Vec<ChunkPlacement>,
    pub replicas: usize,
}

/// The version of an open local file (size and mtime, by fstat of the same descriptor), to
/// notice that it changed during an upload.
#[derive(PartialEq, Eq, Debug)]
struct Version {
    len: u64,
    mtime_ns: i128,
}

impl Version {
    fn of(m: &std::fs::Metadata) -> Version {
        Version { len: m.len(), mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128 }
    }
}

/// Opens a local file for upload, refusing anything but a regular file without blocking on
/// it: a FIFO with no writer must not hang the put.
fn open_regular(local: &Path) -> Result<(File, std::fs::Metadata), ClientError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(local)
        .map_err(|e| ClientError::io(local.display(), e))?;
    let meta = file.metadata().map_err(|e| ClientError::io(local.display(), e))?;
    if !meta.is_file() {
        let what = match meta.file_type() {
            t if t.is_dir() => "a directory",
            t if std::os::unix::fs::FileTypeExt::is_fifo(&t) => "a FIFO",
            t if std::os::unix::fs::FileTypeExt::is_socket(&t) => "a socket",
            _ => "a device",
        };
        return Err(ClientError::Usage(format!(
            "{}: is {what}, not a regular file (to upload a stream: swarmfs put - REMOTE < {0})",
            local.display()
        )));
    }
    Ok((file, meta))
}

impl Uploaded {
    fn report(&self, started: Instant, replaced: bool) -> PutReport {
        PutReport {
            size: self.manifest.size,
            chunks: self.manifest.chunks.len() as u64,
            replicas: self.replicas,
            elapsed: started.elapsed(),
            replaced,
        }
    }
}

impl Client {
    /// Uploads a local file (or standard input, for `-`) to `remote`. The file is read to
    /// its end, whatever size it announced (files in /proc announce 0); a file that changes
    /// while it is being read is refused, and nothing becomes visible.
    pub async fn put(
        &self,
        local: &Path,
        remote: &RemotePath,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<PutReport, ClientError> {
        let started = Instant::now();
        self.data_key()?;
        let stdin = local == Path::new("-");
        let (reader, before): (Box<dyn Read + Send>, _) = if stdin {
            (Box::new(std::io::stdin()), None)
        } else {
            let (file, meta) = open_regular(local)?;
            let v = Version::of(&meta);
            (Box::new(file.try_clone().map_err(|e| ClientError::io(local.display(), e))?), Some((file, v)))
        };
        let replaced = self.prepare_destination(remote).await?;
        let hint = before.as_ref().map(|(_, v)| v.len);
        let up = self.upload(reader, hint, opts, progress).await?;
        if let Some((file, v)) = before {
            let after = file.metadata().map_err(|e| ClientError::io(local.display(), e))?;
            let after = Version::of(&after);
            // A file that reports no size (procfs) reads longer than its length; anything
            // else that grew, shrank or was rewritten meanwhile is not one consistent version.
            let read_other_len = up.manifest.size != after.len && after.len != 0;
            if after != v || read_other_len {
                return Err(ClientError::Changed { path: local.display().to_string() });
            }
        }
        self.commit_upload(remote, up, opts, started, replaced).await
    }

    /// Uploads what `reader` yields to `remote` and commits it (the HTTP gateway's PUT). A
    /// reader that fails part-way (a client that hung up) commits nothing.
    pub async fn put_reader(
        &self,
        reader: Box<dyn Read + Send>,
        size_hint: Option<u64>,
        remote: &RemotePath,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<PutReport, ClientError> {
        let started = Instant::now();
        self.data_key()?;
        let replaced = self.prepare_destination(remote).await?;
        let up = self.upload(reader, size_hint, opts, progress).await?;
        self.commit_upload(remote, up, opts, started, replaced).await
    }

    async fn commit_upload(
        &self,
        remote: &RemotePath,
        mut up: Uploaded,
        opts: &PutOptions,
        started: Instant,
        replaced: bool,
    ) -> Result<PutReport, ClientError> {
        let placements = std::mem::take(&mut up.placements);
        self.commit(remote, &up.manifest, placements, None, opts.replicas, None).await?;
        Ok(up.report(started, replaced))
    }

    /// Refuses a bad destination before anything is uploaded (`/`, a directory) and makes
    /// its parent directories; whether a file is there now (the put will replace it).
    async fn prepare_destination(&self, remote: &RemotePath) -> Result<bool, ClientError> {
        if remote.is_root() {
            return Err(ClientError::Usage("cannot put a file at /".into()));
        }
        let existing = self.stat(remote).await.ok();
        if let Some(e) = &existing {
            if e.kind == swarmfs_proto::EntryKind::Dir {
                return Err(ClientError::Remote {
                    code: swarmfs_proto::ErrorCode::IsADirectory,
                    message: format!("{remote}: is a directory"),
                });
            }
        }
        if !remote.parent().is_root() {
            self.mkdir(&remote.parent(), true).await?;
        }
        Ok(existing.is_some())
    }

    /// Reads `reader` to its end in chunks, and stores them; nothing is committed. `size_hint`
    /// only drives the progress bar.
    pub async fn upload(
        &self,
        reader: Box<dyn Read + Send>,
        size_hint: Option<u64>,
        opts: &PutOptions,
        progress: &dyn Progress,
    ) -> Result<Uploaded, ClientError> {
        let chunk_size = opts.chunk_size as usize;
        let window = opts.window.max(1);
        // The reader thread stays at most two chunks ahead of the pipeline, and takes each
        // chunk's bytes from the client's budget before reading it.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<(Vec<u8>, Held)>>(2);
        let budget = Budget::clone(&self.budget);
        let handle = tokio::runtime::Handle::current();
        let reading = tokio::task::spawn_blocking(move || {
            read_chunks(reader, chunk_size, size_hint, tx, |len| handle.block_on(budget.hold(len)))
        });
        let mut first = rx.recv().await.transpose().map_err(|e| ClientError::io("reading the input", e))?;
        // A file that ends within the first chunk and is small enough is kept in its
        // manifest: nothing goes to the peers.
        let mut second = None;
        let limit = swarmfs_core::inline_limit(opts.inline_max, opts.chunk_size);
        if first.as_ref().is_some_and(|(p, _)| p.len() <= limit) {
            second = rx.recv().await;
            if let Some((plain, _held)) = first.take_if(|_| second.is_none()) {
                progress.start(plain.len() as u64);
                progress.advance(plain.len() as u64);
                let manifest = Manifest::inline(opts.chunk_size, 0o644, now_ms(), plain);
                return Ok(Uploaded { manifest, placements: Vec::new(), replicas: opts.replicas });
            }
        }
        let up = self.uploader(opts.replicas, opts.min_replicas, opts.policy, first.is_some(), progress).await?;
        progress.start(size_hint.unwrap_or(0));
        let rest = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let chunks = stream::iter(first.map(Ok).into_iter().chain(second)).chain(rest);
        let placed: Vec<(ChunkRef, Vec<NodeId>)> = chunks
            .enumerate()
            .map(|(index, plain)| {
                let up = &up;
                async move {
                    if index as u64 >= MAX_CHUNKS_PER_FILE {
                        return Err(swarmfs_core::CoreError::TooManyChunks {
                            chunks: index as u64 + 1,
                            max: MAX_CHUNKS_PER_FILE,
                        }
                        .into());
                    }
                    let (plain, _held) = plain.map_err(|e| ClientError::io("reading the input", e))?;
                    let len = plain.len() as u64;
                    let placed = up.store(index as u64, plain).await?;
                    progress.advance(len);
                    Ok::<_, ClientError>(placed)
                }
            })
            .buffered(window)
            .try_collect()
            .await?;
        // The reader has finished: the stream only ends when it dropped its sender.
        let _ = reading.await;
        up.summarize(progress);
        let size = placed.iter().map(|(r, _)| r.len as u64).sum();
        let chunks = placed.iter().map(|(r, _)| r.clone()).collect();
        let manifest = Manifest::whole(size, opts.chunk_size, 0o644, now_ms(), chunks);
        let placements = placed.into_iter().map(|(r, holders)| ChunkPlacement { chunk: r.id, holders }).collect();
        Ok(Uploaded { manifest, placements, replicas: up.fewest_copies() })
    }

    /// Prepares to store chunks. Needs at least `min_replicas` (default: all `replicas`) live
    /// peers, waiting up to [`PEER_WAIT`] for them to join; caps the copies at the live peers
    /// (with a warning) when fewer than `replicas` are live. `need_peers` false allows an
    /// empty swarm, for files with no chunks.
    pub async fn uploader(
        &self,
        replicas: usize,
        min_replicas: Option<usize>,
        policy: Policy,
        need_peers: bool,
        progress: &dyn Progress,
    ) -> Result<Uploader<'_>, ClientError> {
        let deriver = self.data_key()?.chunk_key_deriver();
        let replicas = replicas.max(1);
        let min = min_replicas.unwrap_or(replicas).clamp(1, replicas);
        let mut live = self.live_peers_cached().await?;
        if need_peers && live.len() < min {
            let deadline = Instant::now() + PEER_WAIT;
            while live.len() < min && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                live = self.live_peers().await?;
            }
            if live.is_empty() {
                return Err(ClientError::NoPeers);
            }
            if live.len() < min {
                return Err(ClientError::NotEnoughPeers { live: live.len(), min, waited_s: PEER_WAIT.as_secs() });
            }
        }
        let capped = replicas.min(live.len().max(1));
        if capped < replicas && need_peers {
            progress.warn(&format!(
                "only {} live peer(s): storing {capped} copies instead of {replicas} (--min-replicas {min} allows it)",
                live.len()
            ));
        }
        let rtt = if policy == Policy::LowestLatency { self.measure_rtt(&live).await } else { Default::default() };
        Ok(Uploader {
            client: self,
            placer: Placer::new(policy, live, rtt),
            replicas: capped,
            min_replicas: min.min(capped),
            deriver,
            trouble: Mutex::new(HashMap::new()),
            short: AtomicUsize::new(0),
            fewest: AtomicUsize::new(usize::MAX),
        })
    }

    /// Makes a file visible: seals `manifest` and records it with the chunk placements in
    /// one tracker transaction. Placements may list chunks stored earlier with no holders.
    /// `mtime_ms` sets the entry's modification time (a mount keeps what programs set);
    /// `None` means the time of the commit. `replicas` is the file's R, which the tracker's
    /// repair restores when copies are lost; 0 for a file that is shared, not stored.
    /// Returns the new entry and the key the manifest was sealed with, which a delta over
    /// this version is sealed with ([`Client::commit_delta`]). `created`: a file this client
    /// created and has not made the entry for yet, one call where a create and a commit
    /// were two (`CommitNewFile`): if `remote` has no entry, the new one takes its mode and
    /// owner; an entry made meanwhile keeps its own.
    pub async fn commit(
        &self,
        remote: &RemotePath,
        manifest: &Manifest,
        placements: Vec<ChunkPlacement>,
        mtime_ms: Option<i64>,
        replicas: usize,
        created: Option<NewOwner>,
    ) -> Result<(EntryInfo, [u8; 32]), ClientError> {
        let (sealed, file_key) = manifest.seal(self.data_key()?);
        let (path, size, file_id) = (remote.to_string(), manifest.size, FileId(rand::random()));
        let replicas = replicas.min(u8::MAX as usize) as u8;
        let req = match created {
            None => Request::CommitFile { path, size, file_id, manifest: sealed, placements, mtime_ms, replicas },
            Some(NewOwner { mode, uid, gid }) => Request::CommitNewFile {
                path,
                size,
                file_id,
                manifest: sealed,
                placements,
                mtime_ms,
                replicas,
                mode,
                uid,
                gid,
            },
        };
        match self.call(&req).await? {
            Response::Entry(e) => Ok((e, file_key)),
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    /// Makes a version that only adds to `parent` (the file's current version) visible by
    /// committing what it adds: `delta`, sealed with `file_key` (the key `parent`'s manifest
    /// was sealed with, which its deltas share), and the chunks it adds. `None` when the
    /// tracker wants the version committed whole instead (the file changed since `parent`,
    /// or has as many deltas as it keeps).
    pub async fn commit_delta(
        &self,
        remote: &RemotePath,
        parent: FileId,
        file_key: &[u8; 32],
        delta: &ManifestDelta,
        placements: Vec<ChunkPlacement>,
        mtime_ms: Option<i64>,
    ) -> Result<Option<EntryInfo>, ClientError> {
        let req = Request::CommitDelta {
            path: remote.to_string(),
            size: delta.size,
            parent,
            file_id: FileId(rand::random()),
            delta: delta.seal(file_key),
            placements,
            mtime_ms,
        };
        match self.call(&req).await {
            Ok(Response::Entry(e)) => Ok(Some(e)),
            Ok(_) => Err(ClientError::Unexpected("tracker")),
            Err(ClientError::Remote { code: ErrorCode::CommitWhole, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_one(&self, peer: &PeerInfo, chunk: &swarmfs_proto::ChunkId, bytes: Bytes) -> Result<(), ClientError> {
        let conn = self.pool.connect(peer).await?;
        let timeout = transfer_timeout(bytes.len());
        match conn.call_timeout(&Request::PutChunk { chunk: *chunk }, bytes, timeout).await?.0 {
            Response::Ok => Ok(()),
            Response::Error { code, message } => Err(ClientError::Remote { code, message }),
            _ => Err(ClientError::Unexpected("peer")),
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Reads `reader` in chunks of `chunk_size` (the last one shorter) until its end, sending
/// each with the budget `hold` gave for it (as much as the chunk can hold, or what is left of
/// `size_hint` when that is less); stops early when the receiver has gone.
fn read_chunks(
    mut reader: Box<dyn Read + Send>,
    chunk_size: usize,
    size_hint: Option<u64>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<(Vec<u8>, Held)>>,
    hold: impl Fn(usize) -> Held,
) {
    let mut read = 0u64;
    loop {
        let expected = size_hint.filter(|&h| h > read).map_or(chunk_size, |h| ((h - read) as usize).min(chunk_size));
        let held = hold(expected);
        // Room for the tag: the chunk is sealed in this buffer. read_to_end fills it without
        // zeroing it first.
        let mut buf = Vec::with_capacity(chunk_size + TAG_LEN);
        if let Err(e) = (&mut reader).take(chunk_size as u64).read_to_end(&mut buf) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let filled = buf.len();
        if filled == 0 {
            return;
        }
        read += filled as u64;
        let last = filled < chunk_size;
        if tx.blocking_send(Ok((buf, held))).is_err() || last {
            return;
        }
    }
}
