//! Download: locate every needed chunk in batched calls, fetch different chunks from all
//! their holders at once (least-loaded holder first), verify and decrypt each on a blocking
//! thread, fall back to the next holder on error, timeout or bad hash, and write in order.
//! At most `window` chunks are in flight, so memory does not grow with the file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use swarmfs_core::{open_chunk, ChunkRef, CoreError, Manifest};
use swarmfs_proto::{EntryInfo, ErrorCode, NodeId, PeerInfo, RemotePath, Request, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::cache::ChunkCache;
use crate::slices::{Packs, PACK_CACHE_BYTES};
use crate::{Client, ClientError, Progress};

const LOCATE_BATCH: usize = 16 * 1024;
/// How often a rarest-first download asks again who holds the chunks it has not started.
const RELOCATE_EVERY: Duration = Duration::from_millis(300);
/// Chunks one download asks of one cached source at a time. One: with six downloaders at
/// once, 2 made the sharer upload 2.1-2.3x the file, 1 made it 1.6x (sharing.rs); the cost
/// is one round trip per chunk from a lone sharer, which a rate-limited uplink hides.
const PER_CACHED_SOURCE: usize = 1;
/// Chunk writes a rarest-first download lets run beside its fetches. The output file is
/// preallocated (`direct::preallocate`), so ext4 runs its direct writes side by side under a
/// shared lock: 4 took a 512 MiB get from 560-610 to 620-700 MB/s at the same CPU. (Into a
/// sparse file, each write allocates and holds the inode lock alone: 4 gained nothing and
/// made the waiting writes spin, 11% of a get's CPU.)
const PENDING_WRITES: usize = 4;
/// How often a rarest-first download tries a chunk again after all its known sources
/// failed, as long as a new `Locate` names a live source.
const CHUNK_RETRIES: u32 = 3;
/// How long a chunk request may go unanswered before the next holder is asked as well.
const HEDGE_AFTER: Duration = Duration::from_millis(1500);

/// Counts a request in flight to one holder for as long as it lives (also when a hedged
/// request loses and is dropped).
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn new(c: &'a AtomicU32) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
const WINDOW: usize = 16;

#[derive(Debug, Default)]
pub struct GetReport {
    pub size: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Copies that failed verification and were reported to the tracker.
    pub bad_copies: usize,
    /// Chunk indices in the order their fetches started (rarest first; empty for reads in
    /// file order).
    pub order: Vec<u64>,
    /// End-game: requests duplicated to a second source once nothing was left to start,
    /// and how many of those answered first.
    pub endgame_requests: usize,
    pub endgame_wins: usize,
}

/// The end-game of one download, shared by its chunk fetches: whether it has begun, how
/// long chunks have taken so far (a chunk in flight much longer than that is on a slow
/// source), and what it did.
#[derive(Default)]
struct EndGame {
    on: std::sync::atomic::AtomicBool,
    started: tokio::sync::Notify,
    fetched: AtomicUsize,
    fetch_micros: std::sync::atomic::AtomicU64,
    requests: AtomicUsize,
    wins: AtomicUsize,
}

/// What one chunk fetch counts into: bad copies met, and the download's end-game (none for
/// reads in file order).
#[derive(Clone, Copy)]
struct Tally<'a> {
    bad: &'a AtomicUsize,
    endgame: Option<&'a EndGame>,
}

/// In the end-game, a chunk is asked of a second source once it has been in flight this many
/// times the mean time of the chunks fetched so far, and at least ENDGAME_MIN (so the last
/// few chunks of a fast download are not all asked twice).
const ENDGAME_SLOWER: u32 = 3;
const ENDGAME_MIN: Duration = Duration::from_millis(50);

impl EndGame {
    fn fetched_in(&self, took: Duration) {
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.fetch_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// How long a chunk may be in flight in the end-game before it is asked again.
    fn patience(&self) -> Duration {
        let n = self.fetched.load(Ordering::Relaxed) as u64;
        if n == 0 {
            return HEDGE_AFTER;
        }
        let mean = Duration::from_micros(self.fetch_micros.load(Ordering::Relaxed) / n);
        (mean * ENDGAME_SLOWER).max(ENDGAME_MIN)
    }

    fn begin(&self) {
        if !self.on.swap(true, Ordering::Relaxed) {
            self.started.notify_waiters();
        }
    }

    /// Returns once the end-game has begun (at once if it has).
    async fn begun(&self) {
        let notified = self.started.notified();
        if self.on.load(Ordering::Relaxed) {
            return;
        }
        notified.await;
    }
}

/// The manifest of a file created empty and never written (it has none yet).
fn empty_manifest(entry: &EntryInfo) -> Manifest {
    Manifest::whole(0, swarmfs_core::DEFAULT_CHUNK_SIZE, entry.mode, entry.mtime_ms, Vec::new())
}

/// Who holds which chunk, for the chunks of one read (from [`Client::locate`]).
pub struct Holders {
    peers: Vec<PeerInfo>,
    /// Every source of each chunk: its durable holders, then its cached sources.
    of_chunk: Vec<Vec<u32>>,
    /// How many of `of_chunk[i]` are durable holders.
    durable: Vec<usize>,
    in_flight: Vec<AtomicU32>,
}

impl Holders {
    /// The recorded durable holders of the `i`-th chunk located, with their state as the
    /// tracker last knew it.
    pub fn of(&self, i: usize) -> Vec<&PeerInfo> {
        let n = self.durable.get(i).copied().unwrap_or(0);
        self.of_chunk.get(i).map(|v| v[..n].iter().map(|&p| &self.peers[p as usize]).collect()).unwrap_or_default()
    }

    /// The cached sources of the `i`-th chunk (downloaders serving it).
    pub fn cached_of(&self, i: usize) -> Vec<&PeerInfo> {
        let n = self.durable.get(i).copied().unwrap_or(0);
        self.of_chunk.get(i).map(|v| v[n..].iter().map(|&p| &self.peers[p as usize]).collect()).unwrap_or_default()
    }

    /// How much a fetch prefers source `p`, lowest first: live before down ones (in case
    /// they are back), then ones the tracker could dial back before those behind NAT (likely
    /// out of this client's reach too: tried last, not first), then the least busy, then the
    /// one holding the fewest chunks (a downloader that has a few before the sharer everybody
    /// needs).
    fn preference(&self, p: u32) -> (bool, bool, u32, u64) {
        let peer = &self.peers[p as usize];
        let busy = self.in_flight[p as usize].load(Ordering::Relaxed);
        (!peer.state.is_live(), peer.reach == swarmfs_proto::Reach::Nat, busy, peer.chunks)
    }

    /// The source a fetch of the `i`-th chunk asks first (the live one `fetch_chunk` prefers),
    /// and whether it is a cached source.
    fn first_choice(&self, i: usize) -> Option<(NodeId, bool)> {
        let n = self.durable.get(i).copied().unwrap_or(0);
        self.of_chunk
            .get(i)?
            .iter()
            .enumerate()
            .filter(|(_, &p)| self.peers[p as usize].state.is_live())
            .min_by_key(|(_, &p)| self.preference(p))
            .map(|(k, &p)| (self.peers[p as usize].node, k >= n))
    }

    /// How many live sources (durable or cached) the `i`-th chunk has: rarest first.
    pub fn live_sources(&self, i: usize) -> usize {
        self.of_chunk.get(i).map(|v| v.iter().filter(|&&p| self.peers[p as usize].state.is_live()).count()).unwrap_or(0)
    }
}

impl Client {
    pub async fn open(&self, remote: &RemotePath) -> Result<(EntryInfo, Manifest), ClientError> {
        let data_key = self.data_key()?.clone();
        match self.call(&Request::OpenFile { path: remote.to_string() }).await? {
            Response::File { entry, manifest } if manifest.body.is_empty() => {
                let m = empty_manifest(&entry);
                Ok((entry, m))
            }
            Response::File { entry, manifest } => {
                let m = Manifest::open(&manifest, &data_key).map_err(|e| match e {
                    CoreError::Decrypt => ClientError::Invalid(format!(
                        "{remote}: cannot decrypt its manifest: this home's data key is not the one it was written with"
                    )),
                    e => e.into(),
                })?;
                Ok((entry, m))
            }
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    /// The file a link names (this client dialled with the link's secret), opened with the
    /// key the link carries. Every chunk is verified against the manifest as for any read.
    pub async fn open_link(&self, link: &swarmfs_core::Link) -> Result<(EntryInfo, Manifest), ClientError> {
        match self.call(&Request::OpenLink).await? {
            Response::File { entry, manifest } if entry.file_id == Some(link.file_id) => {
                let m = if manifest.body.is_empty() {
                    empty_manifest(&entry)
                } else {
                    Manifest::open_with_file_key(&manifest, &link.file_key).map_err(|e| match e {
                        CoreError::Decrypt => {
                            ClientError::Invalid("the link's key does not open its file: the link is damaged".into())
                        }
                        e => e.into(),
                    })?
                };
                Ok((entry, m))
            }
            Response::File { .. } => {
                Err(ClientError::Invalid("the tracker answered with another file than the link's".into()))
            }
            _ => Err(ClientError::Unexpected("tracker")),
        }
    }

    /// Downloads `remote` to `local`, via a temporary file renamed into place at the end, so
    /// a failed download never leaves a truncated file under the wanted name.
    pub async fn get(
        &self,
        remote: &RemotePath,
        local: &Path,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        let (_, manifest) = self.open(remote).await?;
        self.get_manifest(&manifest, remote.name(), local, progress).await
    }

    /// Downloads the file `manifest` describes to `local` (into it, as `name`, when it is a
    /// directory), via a temporary file renamed into place at the end.
    pub async fn get_manifest(
        &self,
        manifest: &Manifest,
        name: &str,
        local: &Path,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        // Like cp: into an existing directory, under the remote name.
        let joined;
        let local = if local.is_dir() {
            joined = local.join(name);
            joined.as_path()
        } else {
            local
        };
        let name = local.file_name().and_then(|n| n.to_str()).unwrap_or("download");
        let tmp = local.with_file_name(format!(".{name}.swarmfs-partial"));
        let out = std::fs::File::create(&tmp).map_err(|e| ClientError::io(tmp.display(), e))?;
        // Whole chunks go to the file past the page cache where its file system allows
        // (swarmfs_core::direct: the page-cache copy cost more CPU than decrypting and
        // hashing); tails and chunks at unaligned offsets through `out`.
        // (A small file kept in its manifest is one write: no second descriptor for it.)
        let direct = manifest.inline.is_none().then(|| swarmfs_core::direct::open_for_direct_writes(&tmp)).flatten();
        // No fsync: like cp and curl, durability of the local copy is the file system's job.
        let result = self.download_rarest_first(manifest, out, direct, progress).await;
        match result {
            Ok(r) => match tokio::fs::rename(&tmp, local).await {
                Ok(()) => Ok(r),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    Err(ClientError::io(local.display(), e))
                }
            },
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Writes `length` bytes (or to the end) of `remote` from `offset` to `out`, fetching
    /// only the chunks that range touches.
    pub async fn read_range<W: AsyncWrite + Unpin>(
        &self,
        remote: &RemotePath,
        offset: u64,
        length: Option<u64>,
        out: &mut W,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        let (_, manifest) = self.open(remote).await?;
        if offset > manifest.size {
            return Err(ClientError::OffsetPastEnd { offset, size: manifest.size });
        }
        let start = offset;
        let end = match length {
            Some(l) => start.saturating_add(l).min(manifest.size),
            None => manifest.size,
        };
        self.read_manifest(&manifest, start, end, out, progress).await
    }

    pub async fn read_manifest<W: AsyncWrite + Unpin>(
        &self,
        manifest: &Manifest,
        start: u64,
        end: u64,
        out: &mut W,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        let started = Instant::now();
        progress.start(end - start);
        let bad = AtomicUsize::new(0);
        if start >= end {
            out.flush().await.map_err(ClientError::Output)?;
            return Ok(GetReport { size: manifest.size, bytes: 0, elapsed: started.elapsed(), ..Default::default() });
        }
        if let Some(data) = &manifest.inline {
            // A small file kept in its manifest: its bytes are here already.
            let part = &data[start as usize..end as usize];
            out.write_all(part).await.map_err(ClientError::Output)?;
            out.flush().await.map_err(ClientError::Output)?;
            progress.advance(part.len() as u64);
            let (size, bytes, elapsed) = (manifest.size, part.len() as u64, started.elapsed());
            return Ok(GetReport { size, bytes, elapsed, ..Default::default() });
        }
        let cs = manifest.chunk_size as u64;
        let (first, last) = (start / cs, (end - 1) / cs);
        let refs = &manifest.chunks[first as usize..=last as usize];
        let holders = self.locate(refs).await?;
        let (packs, pack_cache) = (Packs::default(), ChunkCache::new(PACK_CACHE_BYTES));
        // Fetching and writing run concurrently in this task: while a write is pending the
        // fetch stream is still polled, so the network and the disk overlap. The channel holds
        // a few finished chunks; together with the window that bounds memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let fetch = async {
            let mut chunks = stream::iter(refs.iter().enumerate())
                .map(|(i, r)| {
                    let (holders, bad, packs, pack_cache) = (&holders, &bad, &packs, &pack_cache);
                    async move {
                        self.still_admitted().await?;
                        let index = first + i as u64;
                        let tally = Tally { bad, endgame: None };
                        let mut plain =
                            self.fetch_chunk(index, r, &holders.of_chunk[i], holders, tally, progress).await?;
                        manifest.pad(index, &mut plain);
                        packs.lay(self, pack_cache, manifest, index, 0, &mut plain, progress).await?;
                        Ok::<_, ClientError>(plain)
                    }
                })
                .buffered(WINDOW);
            while let Some(plain) = chunks.next().await {
                if tx.send(plain?).await.is_err() {
                    break;
                }
            }
            drop(tx);
            Ok::<_, ClientError>(())
        };
        // The receiver lives in the writer: when writing fails (a closed pipe) the fetcher's
        // send fails too, and try_join! drops both at the first error instead of waiting.
        let write = async {
            let mut rx = rx;
            let mut index = first;
            let mut written = 0u64;
            while let Some(plain) = rx.recv().await {
                let chunk_start = index * cs;
                let lo = start.saturating_sub(chunk_start) as usize;
                let hi = ((end - chunk_start) as usize).min(plain.len());
                out.write_all(&plain[lo..hi]).await.map_err(ClientError::Output)?;
                written += (hi - lo) as u64;
                progress.advance((hi - lo) as u64);
                index += 1;
            }
            Ok::<_, ClientError>(written)
        };
        let ((), written) = tokio::try_join!(fetch, write)?;
        out.flush().await.map_err(ClientError::Output)?;
        Ok(GetReport {
            size: manifest.size,
            bytes: written,
            elapsed: started.elapsed(),
            bad_copies: bad.load(Ordering::Relaxed),
            ..Default::default()
        })
    }

    /// Downloads a whole file into `file`, rarest chunk first: chunks are started in order
    /// of how many live sources (durable holders and cached sources) hold them, random among
    /// equals, with the counts refreshed every few seconds; each chunk is written at its
    /// offset as it arrives. Rare chunks first means a swarm of downloaders that serve what
    /// they fetch spreads every chunk early, and a source that leaves takes fewer last
    /// copies with it.
    pub async fn download_rarest_first(
        &self,
        manifest: &Manifest,
        file: std::fs::File,
        direct: Option<std::fs::File>,
        progress: &dyn Progress,
    ) -> Result<GetReport, ClientError> {
        let started = Instant::now();
        progress.start(manifest.size);
        if let Some(data) = &manifest.inline {
            // A small file kept in its manifest: its bytes are here already.
            use std::io::Write;
            (&file).write_all(data).map_err(ClientError::Output)?;
            progress.advance(manifest.size);
            let (size, elapsed) = (manifest.size, started.elapsed());
            return Ok(GetReport { size, bytes: size, elapsed, ..Default::default() });
        }
        let refs = &manifest.chunks;
        let bad = AtomicUsize::new(0);
        let endgame = EndGame::default();
        swarmfs_core::direct::preallocate(&file, manifest.size).map_err(ClientError::Output)?;
        let file = Arc::new((file, direct));
        let mut holders = Arc::new(self.locate(refs).await?);
        let mut queue: Vec<usize> = (0..refs.len()).collect();
        let rarest_last = |queue: &mut Vec<usize>, h: &Holders| {
            // Popped from the end: the rarest go last in the vector.
            queue.sort_by_cached_key(|&i| (std::cmp::Reverse(h.live_sources(i)), rand::random::<u32>()));
        };
        rarest_last(&mut queue, &holders);
        let mut order = Vec::with_capacity(refs.len());
        let mut in_flight = FuturesUnordered::new();
        // A big file's holder list is many tracker batches: ask less often.
        let every = if refs.len() <= 4096 { RELOCATE_EVERY } else { RELOCATE_EVERY * 10 };
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let cs = manifest.chunk_size as u64;
        let mut written = 0u64;
        // Chunks in flight per cached source this download asked first: a sharer or seeder
        // is usually a home uplink, so each downloader asks it for a few chunks at a time
        // and fetches the rest from whoever gets them first (storage peers are not capped).
        let mut asked: HashMap<NodeId, usize> = HashMap::new();
        let mut writes = FuturesUnordered::new();
        let mut retries = vec![0u32; refs.len()];
        loop {
            while in_flight.len() < WINDOW {
                // The rarest chunk whose first source has room (looking at the rarest 64).
                let pick = queue.iter().rev().take(64).position(|&i| {
                    holders
                        .first_choice(i)
                        .is_none_or(|(n, cached)| !cached || asked.get(&n).copied().unwrap_or(0) < PER_CACHED_SOURCE)
                });
                let Some(p) = pick else { break };
                // The chunk's bytes come out of the client's budget (shared with the other
                // files of a `get -r`) until written. Waited for only with nothing of this
                // download in flight, which could otherwise hold what it waits for.
                let len = refs[queue[queue.len() - 1 - p]].len as usize;
                let held = match self.budget.try_hold(len) {
                    Some(h) => h,
                    None if in_flight.is_empty() && writes.is_empty() => self.budget.hold(len).await,
                    None => break,
                };
                let i = queue.remove(queue.len() - 1 - p);
                let first = holders.first_choice(i).filter(|(_, cached)| *cached).map(|(n, _)| n);
                if let Some(n) = first {
                    *asked.entry(n).or_default() += 1;
                }
                order.push(i as u64);
                let (h, bad, endgame) = (holders.clone(), &bad, &endgame);
                in_flight.push(async move {
                    let got = async {
                        self.still_admitted().await?;
                        let tally = Tally { bad, endgame: Some(endgame) };
                        self.fetch_chunk(i as u64, &refs[i], &h.of_chunk[i], &h, tally, progress).await
                    };
                    (i, first, got.await, held)
                });
            }
            // End-game: nothing left to start, a few chunks in flight. One slow source must
            // not hold the tail: each of those still in flight after a few times the usual
            // chunk time asks a second source (rather than after the fixed hedge delay), and
            // the first good answer wins. Costs at most a window of duplicate chunks.
            if queue.is_empty() && !in_flight.is_empty() {
                endgame.begin();
            }
            if in_flight.is_empty() && writes.is_empty() {
                if queue.is_empty() {
                    break;
                }
                // Every source is busy with other downloaders' requests: wait for news.
                refresh.tick().await;
                if let Ok(h) = self.locate(refs).await {
                    holders = Arc::new(h);
                    rarest_last(&mut queue, &holders);
                }
                asked.clear();
                continue;
            }
            // Writes run beside the fetches (awaiting one here would stop every transfer
            // in flight meanwhile); a few at most, which bounds the memory they hold.
            tokio::select! {
                done = in_flight.next(), if !in_flight.is_empty() && writes.len() < PENDING_WRITES => {
                    let (i, first, got, held) = done.expect("not empty");
                    if let Some(n) = first {
                        if let Some(c) = asked.get_mut(&n) {
                            *c = c.saturating_sub(1);
                        }
                    }
                    let mut plain = match got {
                        Ok(p) => p,
                        // Every source this download knew of failed (a sharer or seeder that
                        // left): ask again who has it; if someone does, try again later.
                        Err(e @ ClientError::ChunkUnavailable { .. }) => {
                            retries[i] += 1;
                            if retries[i] > CHUNK_RETRIES {
                                return Err(e);
                            }
                            // Give the tracker a moment to notice a source that died.
                            refresh.tick().await;
                            holders = Arc::new(self.locate(refs).await?);
                            if holders.live_sources(i) == 0 {
                                return Err(e);
                            }
                            queue.push(i);
                            rarest_last(&mut queue, &holders);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    // Zeros past a chunk's end (it holds less than its span): the slices pass
                    // below writes over them.
                    manifest.pad(i as u64, &mut plain);
                    let f = file.clone();
                    writes.push(tokio::task::spawn_blocking(move || {
                        let _held = held;
                        let (buffered, direct) = &*f;
                        swarmfs_core::direct::write_at(direct.as_ref(), buffered, &plain, i as u64 * cs)
                            .map(|()| plain.len() as u64)
                    }));
                }
                w = writes.next(), if !writes.is_empty() => {
                    let len = w
                        .expect("not empty")
                        .map_err(|e| ClientError::Output(std::io::Error::other(e.to_string())))?
                        .map_err(ClientError::Output)?;
                    written += len;
                    progress.advance(len);
                }
                _ = refresh.tick(), if !queue.is_empty() => {
                    // New sources (downloaders that finished chunks) and departed ones.
                    if let Ok(h) = self.locate(refs).await {
                        holders = Arc::new(h);
                        rarest_last(&mut queue, &holders);
                    }
                }
            }
        }
        self.write_slices(manifest, &file.0, progress).await?;
        Ok(GetReport {
            size: manifest.size,
            bytes: written,
            elapsed: started.elapsed(),
            bad_copies: bad.load(Ordering::Relaxed),
            order,
            endgame_requests: endgame.requests.load(Ordering::Relaxed),
            endgame_wins: endgame.wins.load(Ordering::Relaxed),
        })
    }

    /// Writes a downloaded file's slices over its chunks, pack by pack in the manifest's
    /// order (which keeps every chunk's later writes after its earlier ones): each pack is
    /// fetched once, however many chunks its slices fall in.
    async fn write_slices(
        &self,
        manifest: &Manifest,
        file: &std::fs::File,
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        if manifest.slices.is_empty() {
            return Ok(());
        }
        let holders = self.locate(&manifest.packs).await?;
        let mut of_pack: Vec<Vec<swarmfs_core::Slice>> = vec![Vec::new(); manifest.packs.len()];
        for s in &manifest.slices {
            of_pack[s.pack as usize].push(*s);
        }
        let cs = manifest.chunk_size as u64;
        let file = Arc::new(file.try_clone().map_err(ClientError::Output)?);
        // Fetched a window ahead, written in order.
        let mut fetched = stream::iter(of_pack.into_iter().enumerate().filter(|(_, s)| !s.is_empty()))
            .map(|(p, slices)| {
                let holders = &holders;
                async move {
                    self.still_admitted().await?;
                    let plain = self.fetch(p as u64, &manifest.packs[p], holders, p, progress).await?;
                    Ok::<_, ClientError>((slices, plain))
                }
            })
            .buffered(WINDOW);
        while let Some(got) = fetched.next().await {
            let (slices, plain) = got?;
            let file = file.clone();
            tokio::task::spawn_blocking(move || {
                slices.iter().try_for_each(|s| {
                    let bytes = &plain[s.at as usize..(s.at + s.len) as usize];
                    std::os::unix::fs::FileExt::write_all_at(&*file, bytes, s.index as u64 * cs + s.offset as u64)
                })
            })
            .await
            .map_err(|e| ClientError::Output(std::io::Error::other(e.to_string())))?
            .map_err(ClientError::Output)?;
        }
        Ok(())
    }

    /// Fetches chunk `i` of a located set (`refs[i]` given to [`Client::locate`]): verified
    /// and decrypted, from the least busy holder that has a good copy.
    pub async fn fetch(
        &self,
        index: u64,
        r: &ChunkRef,
        holders: &Holders,
        i: usize,
        progress: &dyn Progress,
    ) -> Result<Vec<u8>, ClientError> {
        let bad = AtomicUsize::new(0);
        let mine = holders.of_chunk.get(i).map(|v| v.as_slice()).unwrap_or(&[]);
        self.fetch_chunk(index, r, mine, holders, Tally { bad: &bad, endgame: None }, progress).await
    }

    /// Holders of each chunk in `refs`, in batched tracker calls.
    pub async fn locate(&self, refs: &[ChunkRef]) -> Result<Holders, ClientError> {
        let mut peers: Vec<PeerInfo> = Vec::new();
        let mut index: HashMap<NodeId, u32> = HashMap::new();
        let mut of_chunk = Vec::with_capacity(refs.len());
        let mut durable = Vec::with_capacity(refs.len());
        for batch in refs.chunks(LOCATE_BATCH) {
            let req = Request::Locate { chunks: batch.iter().map(|r| r.id).collect() };
            let Response::Locations { peers: bp, holders, cached } = self.call(&req).await? else {
                return Err(ClientError::Unexpected("tracker"));
            };
            if holders.len() != batch.len() || cached.len() != batch.len() {
                return Err(ClientError::Unexpected("tracker"));
            }
            for (hs, cs) in holders.into_iter().zip(cached) {
                let mut map = |i: u32| {
                    bp.get(i as usize).map(|p| {
                        *index.entry(p.node).or_insert_with(|| {
                            peers.push(p.clone());
                            (peers.len() - 1) as u32
                        })
                    })
                };
                let mut mapped: Vec<u32> = hs.into_iter().filter_map(&mut map).collect();
                durable.push(mapped.len());
                for c in cs.into_iter().filter_map(&mut map) {
                    if !mapped.contains(&c) {
                        mapped.push(c);
                    }
                }
                of_chunk.push(mapped);
            }
        }
        let in_flight = peers.iter().map(|_| AtomicU32::new(0)).collect();
        Ok(Holders { peers, of_chunk, durable, in_flight })
    }

    async fn fetch_chunk(
        &self,
        index: u64,
        r: &ChunkRef,
        mine: &[u32],
        holders: &Holders,
        tally: Tally<'_>,
        progress: &dyn Progress,
    ) -> Result<Vec<u8>, ClientError> {
        let Tally { bad, endgame } = tally;
        // In the order `Holders::preference` gives, random among equals.
        let mut order: Vec<u32> = mine.to_vec();
        order.sort_by_cached_key(|&i| (holders.preference(i), rand::random::<u8>()));
        // One attempt: fetch from holder `i`, verify, decrypt. Bad copies are warned about
        // (and reported when we caught them) right here.
        let attempt = |i: u32| async move {
            let peer = &holders.peers[i as usize];
            let _busy = InFlight::new(&holders.in_flight[i as usize]);
            let bad_copy = |how: &str| {
                bad.fetch_add(1, Ordering::Relaxed);
                progress.warn(&format!(
                    "bad copy of chunk {index} ({}) on peer {}: {how}; using another replica",
                    r.id.short(),
                    peer.node.short()
                ));
                format!("peer {}: bad copy", peer.node.short())
            };
            let ciphertext = match self.get_one(peer, r).await {
                Ok(b) => b,
                // The peer caught its own bad copy, quarantined it and told the tracker.
                Err(ClientError::Remote { code: ErrorCode::Corrupt, .. }) => {
                    return Err(bad_copy("the peer found it corrupt"))
                }
                Err(e) => return Err(format!("peer {}: {e}", peer.node.short())),
            };
            let (id, key) = (r.id, r.key);
            // A client that serves what it fetched keeps the ciphertext (one copy) until the
            // chunk has verified.
            let kept = self.sink.get().map(|_| Bytes::copy_from_slice(&ciphertext));
            let opened = tokio::task::spawn_blocking(move || open_chunk(&id, &key, ciphertext))
                .await
                .map_err(|e| e.to_string())?;
            match opened {
                Ok(plain) if plain.len() == r.len as usize => {
                    if let (Some(sink), Some(c)) = (self.sink.get(), kept) {
                        sink.verified(id, c);
                    }
                    Ok(plain)
                }
                Ok(_) | Err(_) => {
                    let msg = bad_copy("failed verification, reported");
                    let _ = self.call(&Request::ReportBadChunk { chunk: r.id, node: peer.node }).await;
                    Err(msg)
                }
            }
        };
        let attempt = &attempt;
        let run = |i: u32, by_endgame: bool| async move { (by_endgame, attempt(i).await) };
        let mut last = String::from("the tracker knows no holder");
        let mut pending = FuturesUnordered::new();
        let mut next = 0;
        if let Some(&first) = order.first() {
            pending.push(run(first, false));
            next = 1;
        }
        // The attempt started by the end-game, if any (told apart to count its wins): once
        // the end-game has begun and this chunk has been in flight well beyond the usual.
        let mut duplicated = false;
        let asked_at = Instant::now();
        let endgame_begun = async {
            match endgame {
                Some(e) => {
                    e.begun().await;
                    // Patience shrinks as other chunks arrive: look again now and then.
                    loop {
                        let wait = e.patience().saturating_sub(asked_at.elapsed());
                        if wait.is_zero() {
                            break;
                        }
                        tokio::time::sleep(wait.min(ENDGAME_MIN)).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(endgame_begun);
        while !pending.is_empty() {
            tokio::select! {
                done = pending.next() => match done {
                    Some((by_endgame, Ok(plain))) => {
                        if let Some(e) = endgame {
                            e.fetched_in(asked_at.elapsed());
                            if by_endgame {
                                e.wins.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        return Ok(plain);
                    }
                    Some((_, Err(e))) => {
                        last = e;
                        if let Some(&i) = order.get(next) {
                            pending.push(run(i, false));
                            next += 1;
                        }
                    }
                    None => break,
                },
                _ = &mut endgame_begun, if !duplicated && next < order.len() => {
                    duplicated = true;
                    if let Some(e) = endgame {
                        e.requests.fetch_add(1, Ordering::Relaxed);
                    }
                    let i = order[next];
                    pending.push(run(i, true));
                    next += 1;
                },
                // A holder that neither answers nor fails (overloaded, frozen, a black-holed
                // link) would otherwise cost the whole transfer timeout: ask the next holder
                // too and keep whichever answers first.
                _ = tokio::time::sleep(HEDGE_AFTER), if next < order.len() => {
                    let i = order[next];
                    pending.push(run(i, false));
                    next += 1;
                }
            }
        }
        Err(ClientError::ChunkUnavailable { index, chunk: r.id.short(), tried: next, last })
    }

    async fn get_one(&self, peer: &PeerInfo, r: &ChunkRef) -> Result<Vec<u8>, ClientError> {
        let conn = self.pool.connect(peer).await?;
        let req = Request::GetChunk { chunk: r.id, offset: 0, len: u64::MAX };
        let timeout = crate::put::transfer_timeout(r.len as usize);
        match conn.call_timeout(&req, Bytes::new(), timeout).await? {
            (Response::Chunk, payload) => Ok(Vec::from(payload)),
            (Response::Error { code, message }, _) => Err(ClientError::Remote { code, message }),
            _ => Err(ClientError::Unexpected("peer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmfs_proto::{PeerState, Reach};

    fn peer(n: u8, chunks: u64, reach: Reach, state: PeerState) -> PeerInfo {
        PeerInfo {
            node: NodeId([n; 32]),
            addrs: vec![],
            capacity: 0,
            used: 0,
            chunks,
            load: 0,
            state,
            link: None,
            reach,
        }
    }

    fn holders(peers: Vec<PeerInfo>) -> Holders {
        let all: Vec<u32> = (0..peers.len() as u32).collect();
        let in_flight = peers.iter().map(|_| AtomicU32::new(0)).collect();
        Holders { durable: vec![peers.len()], of_chunk: vec![all], peers, in_flight }
    }

    #[test]
    fn a_holder_behind_nat_is_asked_last_and_a_down_one_never_first() {
        // The NAT'd one holds fewer chunks, which alone would make it the first choice.
        let h = holders(vec![
            peer(1, 1, Reach::Nat, PeerState::Up),
            peer(2, 9, Reach::Direct, PeerState::Up),
            peer(3, 0, Reach::Direct, PeerState::Down),
        ]);
        assert_eq!(h.first_choice(0), Some((NodeId([2; 32]), false)));
        let mut order: Vec<u32> = vec![0, 1, 2];
        order.sort_by_key(|&p| h.preference(p));
        assert_eq!(order, [1, 0, 2], "reachable, then behind NAT, then down");
        // Busy counts before chunk counts, but never before reachability.
        h.in_flight[1].store(5, Ordering::Relaxed);
        assert_eq!(h.first_choice(0), Some((NodeId([2; 32]), false)));
        let h = holders(vec![peer(1, 1, Reach::Unknown, PeerState::Up), peer(2, 9, Reach::Direct, PeerState::Up)]);
        assert_eq!(h.first_choice(0), Some((NodeId([1; 32]), false)), "not tested yet is not NAT'd");
    }
}
