//! An open file. Reads come from staged chunks, the cache, or the swarm; writes go to
//! [`Staging`], laid out like the real file (chunk i at offset i × chunk size), and
//! mark their chunks dirty. A flush uploads only the dirty chunks and commits a manifest
//! that reuses every other chunk (copy-on-write by chunk). A chunk that only took small
//! writes is not uploaded again: the bytes written go into one pack per flush and the
//! manifest lays them over the chunk as slices, until its slices grow past a share of the
//! chunk and it is uploaded whole again (compacted), in the background (see
//! [`crate::compaction`]).
//!
//! Invariant: staging is exactly `size` bytes long, and every chunk that is neither
//! dirty nor in the base manifest reads as zeros there (it is a hole or was zeroed by
//! `set_len`), so extending a file never resurrects old bytes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use swarmfs_client::{Client, ClientError, Holders, Progress};
use swarmfs_core::{chunk_count, inline_limit, ChunkRef, Manifest, Slice};
use swarmfs_proto::{ChunkId, ChunkPlacement, EntryInfo, FileId, RemotePath};

use crate::compaction::{Compaction, Fold, Job};
use crate::creating::Landing;
use crate::journal::Journal;
use crate::pending::PendingRecord;
use crate::staging::Staging;
use crate::MountOptions;
use swarmfs_client::budget::Held;
use swarmfs_client::cache::ChunkCache;
use swarmfs_client::slices::Packs;

/// Warnings from the client end up in the mount's log.
pub struct LogProgress;

impl Progress for LogProgress {
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("staging file: {0}")]
    Io(#[from] std::io::Error),
    #[error("file is too large for its chunk size")]
    TooLarge,
}

pub struct FileState {
    /// The manifest committed last (or opened), with what was swapped in since (a landed
    /// compaction, a cut). A landed compaction keeps the committed version in `chain`
    /// first; a cut drops `chain`.
    pub base: Manifest,
    holders: Option<Arc<Holders>>,
    pub size: u64,
    pub mode: u32,
    pub mtime: SystemTime,
    /// The tracker's entry as of open; ownership and ctime come from here.
    pub entry: swarmfs_proto::EntryInfo,
    staging: Staging,
    dirty: BTreeSet<u64>,
    /// For dirty chunks of the base that took only partial writes since the last flush: the
    /// byte ranges within the chunk written. A dirty chunk not here is uploaded whole.
    written: HashMap<u64, Vec<(u32, u32)>>,
    /// Base chunks whose current content (slices laid) is in staging though they are clean:
    /// flushed by this mount. A partial write into one needs no fetch.
    staged: BTreeSet<u64>,
    packs: Packs,
    /// Chunks being stored whole in the background, to replace their slices.
    compaction: Option<Compaction>,
    /// Base chunks a landed compaction replaced, with the peers that hold them, until a
    /// commit records them.
    compacted: HashMap<u64, Vec<swarmfs_proto::NodeId>>,
    /// Size or times changed without a chunk changing; still needs a commit.
    meta_dirty: bool,
    /// The version this mount committed last, while it is the file's: a flush of a file
    /// not cut shorter commits as a delta over it.
    chain: Option<Chain>,
    pub opens: usize,
    /// End of the last read, to spot sequential access for read-ahead.
    last_read_end: u64,
    pub unlinked: bool,
}

impl Drop for FileState {
    fn drop(&mut self) {
        // A staging file whose upload was cut short keeps its record and stays for the next
        // mount to finish (see `pending`).
        if self.staging.on_disk() && !crate::pending::record_path(self.staging.path()).exists() {
            let _ = std::fs::remove_file(self.staging.path());
        }
    }
}

impl FileState {
    pub fn new(base: Manifest, entry: swarmfs_proto::EntryInfo, opts: &MountOptions) -> Result<FileState, FileError> {
        let mode = entry.mode;
        let mtime = crate::fs::time_of(entry.mtime_ms);
        let seq = STAGING_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staging_path = opts.staging_dir.join(format!("open-{}-{seq}", std::process::id()));
        let mut staging = Staging::new(staging_path, base.size);
        // A small file kept in its manifest has no chunk to fetch: its bytes go to staging,
        // as a clean chunk flushed by this mount would be (see `staged`).
        let mut staged = BTreeSet::new();
        if let Some(data) = base.inline.as_ref().filter(|d| !d.is_empty()) {
            staging.write_all_at(data, 0)?;
            staged.insert(0);
        }
        Ok(FileState {
            size: base.size,
            base,
            holders: None,
            mode,
            mtime,
            entry,
            staging,
            dirty: BTreeSet::new(),
            written: HashMap::new(),
            staged,
            packs: Packs::default(),
            compaction: None,
            compacted: HashMap::new(),
            meta_dirty: false,
            chain: None,
            opens: 0,
            last_read_end: u64::MAX,
            unlinked: false,
        })
    }

    /// Takes over a staging file a previous mount left with `record`, on top of the file's
    /// current manifest `base`: flushing it finishes that mount's upload.
    pub fn recover(
        staging_path: std::path::PathBuf,
        record: &PendingRecord,
        base: Manifest,
        entry: swarmfs_proto::EntryInfo,
    ) -> Result<FileState, FileError> {
        let staging = Staging::open(staging_path)?;
        if staging.len() != record.size {
            return Err(FileError::Io(std::io::Error::other("staging file and record disagree on the size")));
        }
        Ok(FileState {
            size: record.size,
            base,
            holders: None,
            mode: record.mode,
            mtime: crate::fs::time_of(record.mtime_ms),
            entry,
            staging,
            dirty: record.dirty.iter().copied().collect(),
            written: HashMap::new(),
            staged: BTreeSet::new(),
            packs: Packs::default(),
            compaction: None,
            compacted: HashMap::new(),
            meta_dirty: true,
            chain: None,
            opens: 0,
            last_read_end: u64::MAX,
            unlinked: false,
        })
    }

    /// What a flush of this file would commit, as a record for a later mount.
    fn record(&self, path: &RemotePath) -> PendingRecord {
        PendingRecord {
            version: crate::pending::RECORD_VERSION,
            path: path.to_string(),
            size: self.size,
            mode: self.mode,
            mtime_ms: crate::fs::ms_of(self.mtime),
            chunk_size: self.base.chunk_size,
            dirty: self.dirty.iter().copied().collect(),
        }
    }

    /// Leaves this file's staged writes for the next mount (durably): the mount is stopping
    /// before they could be uploaded.
    pub fn keep_for_next_mount(&mut self, path: &RemotePath) -> std::io::Result<()> {
        self.staging.to_disk()?;
        self.record(path).write(self.staging.path(), true)
    }

    pub fn staged_bytes(&self) -> u64 {
        self.dirty.len() as u64 * self.cs()
    }

    fn cs(&self) -> u64 {
        self.base.chunk_size as u64
    }

    fn chunk_len(&self, i: u64) -> usize {
        let start = i * self.cs();
        self.cs().min(self.size.saturating_sub(start)) as usize
    }

    /// Chunks of this file are being compacted in the background.
    pub fn compacting(&self) -> bool {
        self.compaction.is_some()
    }

    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || self.meta_dirty
    }

    async fn holders(&mut self, client: &Client) -> Result<Arc<Holders>, FileError> {
        if let Some(h) = &self.holders {
            return Ok(h.clone());
        }
        let h = Arc::new(client.locate(&self.base.chunks).await?);
        self.holders = Some(h.clone());
        Ok(h)
    }

    /// Whether staging holds chunk `i`'s current content.
    fn in_staging(&self, i: u64) -> bool {
        self.dirty.contains(&i) || self.staged.contains(&i)
    }

    /// The current plaintext of chunk `i`, exactly `chunk_len(i)` bytes.
    async fn chunk(&mut self, client: &Client, cache: &ChunkCache, i: u64) -> Result<Vec<u8>, FileError> {
        let len = self.chunk_len(i);
        if self.in_staging(i) {
            let mut buf = vec![0u8; len];
            self.staging.read_exact_at(&mut buf, i * self.cs())?;
            return Ok(buf);
        }
        let Some(r) = self.base.chunks.get(i as usize).cloned() else {
            return Ok(vec![0u8; len]);
        };
        let holders = self.holders(client).await?;
        let data = cache.get(r.id, async { client.fetch(i, &r, &holders, i as usize, &LogProgress).await }).await?;
        // A chunk holding less than its span (appended to by slices) reads as zeros past its
        // end, under its slices.
        let mut v = data[..len.min(data.len())].to_vec();
        v.resize(len, 0);
        self.packs.lay(client, cache, &self.base, i, 0, &mut v, &LogProgress).await?;
        Ok(v)
    }

    /// Marks chunk `i` dirty, to be uploaded whole at the next flush (not as slices).
    async fn make_whole(&mut self, client: &Client, cache: &ChunkCache, i: u64) -> Result<(), FileError> {
        self.written.remove(&i);
        self.materialize(client, cache, i).await
    }

    /// Copies chunk `i`'s current content into staging (unless it is there) and marks it
    /// dirty.
    async fn materialize(&mut self, client: &Client, cache: &ChunkCache, i: u64) -> Result<(), FileError> {
        if self.dirty.contains(&i) {
            return Ok(());
        }
        if (i as usize) < self.base.chunks.len() && !self.staged.contains(&i) {
            let data = self.chunk(client, cache, i).await?;
            self.staging.write_all_at(&data, i * self.cs())?;
        }
        self.dirty.insert(i);
        Ok(())
    }

    pub async fn read(
        &mut self,
        client: &Arc<Client>,
        cache: &Arc<ChunkCache>,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, FileError> {
        let end = offset.saturating_add(len as u64).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let cs = self.cs();
        let sequential = offset == self.last_read_end;
        self.last_read_end = end;
        let mut out = Vec::with_capacity((end - offset) as usize);
        for i in offset / cs..=(end - 1) / cs {
            let lo = offset.saturating_sub(i * cs) as usize;
            let hi = ((end - i * cs) as usize).min(self.chunk_len(i));
            let base = self.base.chunks.get(i as usize).cloned();
            match base {
                // Clean base chunk: slice the cached copy instead of copying the whole chunk
                // for every (often 128 KiB) kernel read, and lay its slices over that part.
                Some(r) if !self.in_staging(i) => {
                    let holders = self.holders(client).await?;
                    let data = cache
                        .get(r.id, async { client.fetch(i, &r, &holders, i as usize, &LogProgress).await })
                        .await?;
                    let start = out.len();
                    let avail = hi.min(data.len());
                    if lo < avail {
                        out.extend_from_slice(&data[lo..avail]);
                    }
                    // Past the base chunk's end (the file grew): zeros, under its slices.
                    out.resize(start + (hi - lo), 0);
                    self.packs.lay(client, cache, &self.base, i, lo as u64, &mut out[start..], &LogProgress).await?;
                }
                _ => {
                    let start = out.len();
                    out.resize(start + (hi - lo), 0);
                    if self.in_staging(i) {
                        self.staging.read_exact_at(&mut out[start..], i * cs + lo as u64)?;
                    }
                }
            }
        }
        if sequential {
            self.read_ahead(client, cache, (end - 1) / cs + 1).await;
        }
        Ok(out)
    }

    /// Starts fetching the next few base chunks into the cache, without waiting.
    async fn read_ahead(&mut self, client: &Arc<Client>, cache: &Arc<ChunkCache>, from: u64) {
        const AHEAD: u64 = 8;
        let Ok(holders) = self.holders(client).await else { return };
        for i in from..(from + AHEAD).min(self.base.chunks.len() as u64) {
            if self.in_staging(i) {
                continue;
            }
            let r = self.base.chunks[i as usize].clone();
            let (client, cache, holders) = (client.clone(), cache.clone(), holders.clone());
            tokio::spawn(async move {
                let _ = cache.get(r.id, async { client.fetch(i, &r, &holders, i as usize, &LogProgress).await }).await;
            });
        }
    }

    pub async fn write(
        &mut self,
        client: &Client,
        cache: &ChunkCache,
        offset: u64,
        data: &[u8],
    ) -> Result<(), FileError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or(FileError::TooLarge)?;
        if chunk_count(end, self.base.chunk_size) > swarmfs_core::MAX_CHUNKS_PER_FILE {
            return Err(FileError::TooLarge);
        }
        let cs = self.cs();
        for i in offset / cs..=(end - 1) / cs {
            let (lo, hi) = (offset.max(i * cs) - i * cs, end.min((i + 1) * cs) - i * cs);
            if lo == 0 && hi == cs {
                self.written.remove(&i);
                self.dirty.insert(i);
                continue;
            }
            // A base chunk's first partial write since the last flush may become slices.
            let sliceable = !self.dirty.contains(&i) && (i as usize) < self.base.chunks.len();
            self.materialize(client, cache, i).await?;
            if sliceable {
                self.written.insert(i, Vec::new());
            }
            if let Some(ranges) = self.written.get_mut(&i) {
                ranges.push((lo as u32, hi as u32));
            }
        }
        self.staging.write_all_at(data, offset)?;
        if end > self.size {
            self.size = end;
        }
        self.mtime = SystemTime::now();
        self.meta_dirty = true;
        Ok(())
    }

    pub async fn truncate(&mut self, client: &Client, cache: &ChunkCache, size: u64) -> Result<(), FileError> {
        if chunk_count(size, self.base.chunk_size) > swarmfs_core::MAX_CHUNKS_PER_FILE {
            return Err(FileError::TooLarge);
        }
        let cs = self.cs();
        if size < self.size && !size.is_multiple_of(cs) {
            // The chunk the new end falls in keeps only its head: stage it so the cut bytes
            // cannot come back from the base chunk if the file grows again.
            self.make_whole(client, cache, size / cs).await?;
        }
        let keep = chunk_count(size, self.base.chunk_size);
        if let Some(c) = &mut self.compaction {
            (keep..self.base.chunks.len() as u64).for_each(|i| c.forget(i));
        }
        self.compacted.retain(|&i, _| i < keep);
        self.dirty.retain(|&i| i < keep);
        self.staged.retain(|&i| i < keep);
        self.written.retain(|&i, _| i < keep);
        if (self.base.chunks.len() as u64) > keep {
            self.base.chunks.truncate(keep as usize);
            self.base.slices.retain(|s| (s.index as u64) < keep);
            self.holders = None;
            // The base is no longer the version committed last: no delta over it.
            self.chain = None;
        }
        self.size = size;
        self.staging.set_len(size)?;
        self.mtime = SystemTime::now();
        self.meta_dirty = true;
        Ok(())
    }

    /// Uploads dirty chunks and commits the new manifest at `path`. Nothing is committed for
    /// an unlinked file; its staged data is simply dropped when the last handle closes.
    /// `settle` (the last close, the unmount) also waits for a compaction under way and
    /// commits it, and starts none: the file is left compact. `landed` lands before the
    /// commit, or before returning without one while the file has a name: the file's entry
    /// exists on the tracker once it is done (see `crate::creating`; a create still held is
    /// made by the commit itself); the upload runs meanwhile.
    #[allow(clippy::too_many_arguments)] // what a flush needs from the mount, passed as it is
    pub(crate) async fn flush(
        &mut self,
        client: &Arc<Client>,
        cache: &ChunkCache,
        path: Option<&RemotePath>,
        opts: &MountOptions,
        journal: &Journal,
        settle: bool,
        landed: Landing<'_>,
    ) -> Result<(), FileError> {
        let compaction_to_settle = settle && self.compaction.is_some();
        // A file left as a manifest and deltas is committed whole once more when it settles,
        // so what its deltas kept referenced (chunks swapped out, packs no slice uses) is
        // released.
        if settle && self.chain.as_ref().is_some_and(|c| c.deltas > 0) {
            self.meta_dirty = true;
        }
        if !self.is_dirty() && !compaction_to_settle {
            return Ok(landed.land().await?);
        }
        let Some(path) = path.filter(|_| !self.unlinked) else {
            self.dirty.clear();
            self.written.clear();
            self.compaction = None;
            self.compacted.clear();
            self.meta_dirty = false;
            return Ok(());
        };
        let count = chunk_count(self.size, self.base.chunk_size);
        // The old last chunk of a grown file stays as it is: it may hold less than its span
        // (the rest reads as zeros), and what was appended into it is in slices. Only a
        // chunk holding more than its span is rewritten (a cut does that itself).
        for i in 0..count.min(self.base.chunks.len() as u64) {
            if self.base.chunks[i as usize].len as usize > self.chunk_len(i) {
                self.make_whole(client, cache, i).await?;
            }
        }
        for i in self.base.chunks.len() as u64..count {
            self.dirty.insert(i);
        }
        // A small file is kept in its manifest: its content goes whole into the commit, and
        // nothing to the peers (chunks and slices it had before are left to collection).
        let inline = self.size > 0 && self.size <= inline_limit(opts.inline_max, self.base.chunk_size) as u64;
        let background = if inline {
            self.make_whole(client, cache, 0).await?;
            self.compaction = None;
            Vec::new()
        } else {
            self.compact(client, cache, settle).await?
        };
        if !self.is_dirty() {
            return Ok(landed.land().await?);
        }
        // Until the commit, the staged writes are worth keeping if this mount stops or dies:
        // beside their staging file, or in the journal while they are in memory.
        let _journaled = match self.staging.in_memory() {
            None => {
                self.record(path).write(self.staging.path(), false)?;
                None
            }
            Some(held) => Some(Journaled { journal, seq: journal.begin(&self.record(path), held)? }),
        };
        // The time programs set (futimens before close: tar, cp -p) is part of what commits.
        let mtime_ms = crate::fs::ms_of(self.mtime);
        let (manifest, placements) = if inline {
            let mut data = vec![0u8; self.size as usize];
            self.staging.read_exact_at(&mut data, 0)?;
            (Manifest::inline(self.base.chunk_size, self.mode, mtime_ms, data), Vec::new())
        } else {
            self.store_dirty(client, opts, count, settle, mtime_ms).await?
        };
        self.chain = match landed.before_commit().await? {
            // The file's create is still held: this commit makes its entry (and is whole).
            Some(created) => {
                let (entry, file_key) = created.commit(client, path, &manifest, placements, opts.replicas).await?;
                Chain::first(&entry, file_key)
            }
            None => self.commit(client, path, &manifest, placements, opts.replicas, settle).await?,
        };
        if self.staging.on_disk() {
            PendingRecord::remove(self.staging.path());
        }
        self.base = manifest;
        self.holders = None;
        self.packs = Packs::default();
        // What was uploaded stays in staging: the next partial write there needs no fetch.
        self.staged.extend(std::mem::take(&mut self.dirty));
        self.written.clear();
        self.compacted.clear();
        self.meta_dirty = false;
        self.start_compaction(client, opts, background);
        Ok(())
    }

    /// Stores the dirty chunks (whole, or their small writes as slices in a pack) and
    /// returns the manifest of the file's `count` chunks that a flush commits, with the
    /// placements of every chunk it names.
    async fn store_dirty(
        &mut self,
        client: &Client,
        opts: &MountOptions,
        count: u64,
        settle: bool,
        mtime_ms: i64,
    ) -> Result<(Manifest, Vec<ChunkPlacement>), FileError> {
        let whole: Vec<u64> = self.dirty.iter().copied().filter(|i| !self.written.contains_key(i)).collect();
        // A compacted copy of a chunk stored whole now would, landing later, drop the slices
        // written over this new chunk.
        whole.iter().for_each(|&i| self.forget_compaction(i));
        let (slices, pack_bytes) = self.pack_written()?;
        let up = client
            .uploader(opts.replicas, opts.min_replicas, opts.policy, !self.dirty.is_empty(), &LogProgress)
            .await?;
        let cs = self.cs();
        let staging = &self.staging;
        let jobs: Vec<(u64, usize)> = whole.iter().map(|&i| (i, self.chunk_len(i))).collect();
        let stored: Vec<_> = stream::iter(jobs)
            .map(|(i, len)| {
                let up = &up;
                async move {
                    let mut buf = vec![0u8; len];
                    staging.read_exact_at(&mut buf, i * cs)?;
                    Ok::<_, FileError>((i, up.store(i, buf).await?))
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let mut new_packs = Vec::with_capacity(pack_bytes.len());
        for (k, bytes) in pack_bytes.into_iter().enumerate() {
            new_packs.push(up.store(count + k as u64, bytes).await?);
        }
        up.summarize(&LogProgress);
        // Every chunk index below `count` is either rewritten whole (just stored) or a base
        // chunk, with its old slices and this flush's.
        let mut fresh: HashMap<u64, _> = stored.into_iter().collect();
        let mut chunks = Vec::with_capacity(count as usize);
        let mut placements = Vec::new();
        for i in 0..count {
            let r = match fresh.remove(&i) {
                Some((r, holders)) => {
                    placements.push(ChunkPlacement { chunk: r.id, holders });
                    r
                }
                None => {
                    let r = self.base.chunks[i as usize].clone();
                    let holders = self.compacted.get(&i).cloned().unwrap_or_default();
                    placements.push(ChunkPlacement { chunk: r.id, holders });
                    r
                }
            };
            chunks.push(r);
        }
        // A delta keeps every pack the version before had (packs are named by their place).
        let keep_packs = !settle && self.size >= self.base.size && self.chain.as_ref().is_some_and(Chain::continues);
        let (slices, packs) = self.merge_slices(&whole, count, slices, new_packs, keep_packs, &mut placements);
        let manifest =
            Manifest { slices, packs, ..Manifest::whole(self.size, self.base.chunk_size, self.mode, mtime_ms, chunks) };
        Ok((manifest, placements))
    }

    /// Commits `manifest`: as a delta over the version this mount committed last unless the
    /// file got shorter (what the tracker writes is then what this flush changed, not the whole
    /// manifest of a big file fsynced often), whole otherwise, when the tracker wants it
    /// whole, or when `settle` (the last close, the unmount: a closed file's manifest is
    /// whole, so what its deltas kept referenced is released). Returns the chain the next
    /// flush continues.
    async fn commit(
        &self,
        client: &Client,
        path: &RemotePath,
        manifest: &Manifest,
        placements: Vec<ChunkPlacement>,
        replicas: usize,
        settle: bool,
    ) -> Result<Option<Chain>, FileError> {
        let mtime_ms = Some(manifest.mtime_ms);
        let chain = self.chain.as_ref().filter(|c| !settle && c.continues());
        let delta = chain.and_then(|c| Some((c, manifest.delta_from(c.committed.as_ref().unwrap_or(&self.base))?)));
        if let Some((chain, delta)) = delta {
            let added: HashSet<ChunkId> = (delta.packs.iter().chain(&delta.appended))
                .map(|r| r.id)
                .chain(delta.swaps.iter().map(|s| s.chunk.id))
                .collect();
            let adds = placements.iter().filter(|p| added.contains(&p.chunk)).cloned().collect();
            let committed = client.commit_delta(path, chain.version, &chain.file_key, &delta, adds, mtime_ms).await?;
            if let Some(version) = committed.and_then(|e| e.file_id) {
                let deltas = chain.deltas + 1;
                return Ok(Some(Chain { version, file_key: chain.file_key, deltas, committed: None }));
            }
        }
        let (entry, file_key) = client.commit(path, manifest, placements, mtime_ms, replicas, None).await?;
        Ok(Chain::first(&entry, file_key))
    }

    /// Stores `chunks` whole in the background, their content as committed just now.
    fn start_compaction(&mut self, client: &Arc<Client>, opts: &MountOptions, chunks: Vec<(u64, Held)>) {
        if chunks.is_empty() {
            return;
        }
        let mut jobs = Vec::with_capacity(chunks.len());
        for (index, held) in chunks {
            let mut content = vec![0u8; self.chunk_len(index)];
            // Staging holds every chunk this flush committed; a read that fails only
            // leaves that chunk's slices where they are.
            if let Err(e) = self.staging.read_exact_at(&mut content, index * self.cs()) {
                tracing::warn!("reading chunk {index} to compact it: {e}");
                continue;
            }
            let fold = Fold { base: self.base.chunks[index as usize].id, slices: self.base.slices_of(index).len() };
            jobs.push(Job { index, content, held, fold });
        }
        self.compaction = Some(Compaction::start(client.clone(), opts, jobs));
    }

    /// Swaps in what a finished compaction stored (waiting for it when `wait`): each chunk
    /// still as it was read (the same base, not rewritten whole since) becomes the base
    /// chunk and drops the slices it folds in.
    async fn land_compaction(&mut self, wait: bool) {
        let Some(c) = self.compaction.take_if(|c| wait || c.is_finished()) else { return };
        for (done, fold) in c.finish().await {
            let i = done.index as usize;
            let whole = self.dirty.contains(&done.index) && !self.written.contains_key(&done.index);
            if whole
                || self.base.chunks.get(i).is_none_or(|r| r.id != fold.base)
                || done.chunk.len as usize != self.chunk_len(done.index)
            {
                continue;
            }
            // The version committed last is what the next delta follows: kept as it was.
            if let Some(chain) = self.chain.as_mut().filter(|c| c.committed.is_none()) {
                chain.committed = Some(self.base.clone());
            }
            self.base.chunks[i] = done.chunk;
            let lo = self.base.slices.partition_point(|s| (s.index as usize) < i);
            let n = fold.slices.min(self.base.slices_of(done.index).len());
            self.base.slices.drain(lo..lo + n);
            self.compacted.insert(done.index, done.holders);
            self.holders = None;
            self.meta_dirty = true;
        }
    }

    /// Chunk `i` is stored whole or cut off: a compaction of it under way is of no use.
    fn forget_compaction(&mut self, i: u64) {
        if let Some(c) = &mut self.compaction {
            c.forget(i);
        }
    }

    /// Decides which chunks that took only small writes are stored whole again (compacted):
    /// those whose slices pass [`MAX_SLICES_PER_CHUNK`] or half the chunk, then, while the
    /// file's slices pass [`MAX_SLICES_PER_FILE`] (the manifest is sent whole at every
    /// commit), the chunks with the most slices, clean ones included. Those staging holds
    /// are returned, with their budget, to be stored in the background after the commit
    /// (one batch per file at a time); the others are uploaded whole by this flush. While a
    /// batch is under way, nothing else is compacted unless the file passes the hard limits
    /// (twice the chunk's slices, three quarters of it, [`FILE_SLACK`] more slices): then
    /// this flush waits for the batch first.
    async fn compact(
        &mut self,
        client: &Client,
        cache: &ChunkCache,
        settle: bool,
    ) -> Result<Vec<(u64, Held)>, FileError> {
        for ranges in self.written.values_mut() {
            *ranges = coalesce(std::mem::take(ranges));
        }
        self.land_compaction(settle).await;
        let cs = self.cs();
        let hard = |n: usize, bytes: u64| n > 2 * MAX_SLICES_PER_CHUNK || bytes > cs * 3 / 4;
        let mut load = self.slice_load();
        let total: usize = load.iter().map(|&(_, n, _)| n).sum();
        if self.compaction.is_some()
            && (total > MAX_SLICES_PER_FILE + FILE_SLACK || load.iter().any(|&(_, n, b)| hard(n, b)))
        {
            self.land_compaction(true).await;
            load = self.slice_load();
        }
        let mut total: usize = load.iter().map(|&(_, n, _)| n).sum();
        let may_start = !settle && self.compaction.is_none();
        let mut background = Vec::new();
        for (i, n, bytes) in load {
            if n <= MAX_SLICES_PER_CHUNK && bytes <= cs / 2 && total <= MAX_SLICES_PER_FILE {
                continue;
            }
            // The last chunk while the file grows into it (a log appended to) is stored whole
            // once it is full, or past the hard limits by this flush: a copy stored in the
            // background would no longer fit by the time it landed.
            let growing = (self.chunk_len(i) as u64) < cs;
            if growing && !hard(n, bytes) {
                continue;
            }
            if !growing && may_start && self.in_staging(i) && background.len() < crate::compaction::MAX_BATCH {
                if let Some(held) = client.budget().try_hold(self.chunk_len(i)) {
                    background.push((i, held));
                    total -= n;
                    continue;
                }
            }
            // Nothing under way to wait for, or past the hard limits: now, as part of this flush.
            if self.compaction.is_none() || hard(n, bytes) || total > MAX_SLICES_PER_FILE + FILE_SLACK {
                self.make_whole(client, cache, i).await?;
                total -= n;
            }
        }
        Ok(background)
    }

    /// Per chunk that has slices or took small writes since the last flush: how many slices
    /// the next manifest would give it and their bytes, most slices first. Slices a
    /// compaction under way folds in are not counted; chunks uploaded whole at this flush
    /// and chunks past the end drop theirs.
    fn slice_load(&self) -> Vec<(u64, usize, u64)> {
        let mut load: HashMap<u64, (usize, u64)> = HashMap::new();
        for same in self.base.slices.chunk_by(|a, b| a.index == b.index) {
            let i = same[0].index as u64;
            let folded = self.compaction.as_ref().map_or(0, |c| c.folded(i)).min(same.len());
            let e = load.entry(i).or_default();
            for s in &same[folded..] {
                *e = (e.0 + 1, e.1 + s.len as u64);
            }
        }
        for (&i, ranges) in &self.written {
            let e = load.entry(i).or_default();
            *e = (e.0 + ranges.len(), e.1 + ranges.iter().map(|&(lo, hi)| (hi - lo) as u64).sum::<u64>());
        }
        load.retain(|i, (n, _)| {
            *n > 0
                && (self.written.contains_key(i) || (!self.dirty.contains(i) && (*i as usize) < self.base.chunks.len()))
        });
        let mut load: Vec<(u64, usize, u64)> = load.into_iter().map(|(i, (n, b))| (i, n, b)).collect();
        load.sort_by_key(|&(i, n, _)| (std::cmp::Reverse(n), i));
        load
    }

    /// This flush's slices (their `pack` counts from 0 within this flush) and the packs that
    /// hold their bytes, read from staging: each pack at most a chunk.
    fn pack_written(&self) -> Result<(Vec<Slice>, Vec<Vec<u8>>), FileError> {
        let cs = self.cs() as usize;
        let mut indices: Vec<u64> = self.written.keys().copied().collect();
        indices.sort_unstable();
        let (mut slices, mut packs) = (Vec::new(), vec![Vec::new()]);
        for i in indices {
            for &(lo, hi) in &self.written[&i] {
                let len = (hi - lo) as usize;
                if packs.last().expect("one").len() + len > cs {
                    packs.push(Vec::new());
                }
                let pack = packs.last_mut().expect("one");
                let at = pack.len();
                pack.resize(at + len, 0);
                self.staging.read_exact_at(&mut pack[at..], i * cs as u64 + lo as u64)?;
                slices.push(Slice {
                    index: i as u32,
                    offset: lo,
                    len: hi - lo,
                    pack: (packs.len() - 1) as u32,
                    at: at as u32,
                });
            }
        }
        packs.retain(|p| !p.is_empty());
        Ok((slices, packs))
    }

    /// The new manifest's slices and packs: the base's slices of chunks that were neither
    /// rewritten whole nor cut off, then this flush's, per chunk in that order; the packs
    /// still referenced (every one of the base's with `keep_packs`), in their order, then
    /// this flush's. Adds the packs to `placements`.
    fn merge_slices(
        &self,
        whole: &[u64],
        count: u64,
        new: Vec<Slice>,
        new_packs: Vec<(ChunkRef, Vec<swarmfs_proto::NodeId>)>,
        keep_packs: bool,
        placements: &mut Vec<ChunkPlacement>,
    ) -> (Vec<Slice>, Vec<ChunkRef>) {
        let whole: BTreeSet<u64> = whole.iter().copied().collect();
        let kept = |s: &&Slice| (s.index as u64) < count && !whole.contains(&(s.index as u64));
        // Packs keep their order (oldest first), so a later write is always in a later pack.
        // Renumbered through a table, not a map: a manifest holds thousands of slices and
        // this runs at every fsync.
        const UNUSED: u32 = u32::MAX;
        let mut renumber = vec![if keep_packs { 0 } else { UNUSED }; self.base.packs.len()];
        for s in self.base.slices.iter().filter(kept) {
            renumber[s.pack as usize] = 0;
        }
        let mut packs = Vec::with_capacity(renumber.len() + new_packs.len());
        for (p, to) in renumber.iter_mut().enumerate().filter(|(_, to)| **to != UNUSED) {
            let r = self.base.packs[p].clone();
            placements.push(ChunkPlacement { chunk: r.id, holders: Vec::new() });
            *to = packs.len() as u32;
            packs.push(r);
        }
        let first_new = packs.len() as u32;
        for (r, holders) in new_packs {
            placements.push(ChunkPlacement { chunk: r.id, holders });
            packs.push(r);
        }
        let mut slices: Vec<Slice> = Vec::with_capacity(self.base.slices.len() + new.len());
        slices.extend(self.base.slices.iter().filter(kept).map(|s| Slice { pack: renumber[s.pack as usize], ..*s }));
        slices.extend(new.into_iter().map(|s| Slice { pack: s.pack + first_new, ..s }));
        // Stable: within a chunk the base's slices stay before this flush's.
        slices.sort_by_key(|s| s.index);
        (slices, packs)
    }
}

/// A version this mount committed, as the next delta over it needs it.
struct Chain {
    version: FileId,
    /// What the version's manifest was sealed with; its deltas are sealed with it too.
    file_key: [u8; 32],
    /// Deltas committed over that manifest so far.
    deltas: usize,
    /// The version as committed, once a landed compaction changed the open file's base.
    committed: Option<Manifest>,
}

impl Chain {
    /// The chain a whole commit starts (none if the entry has no version).
    fn first(entry: &EntryInfo, file_key: [u8; 32]) -> Option<Chain> {
        entry.file_id.map(|version| Chain { version, file_key, deltas: 0, committed: None })
    }

    /// Whether the tracker takes another delta over this version.
    fn continues(&self) -> bool {
        self.deltas < swarmfs_proto::MAX_MANIFEST_DELTAS
    }
}

/// A chunk whose slices would pass this many is uploaded whole at the next flush.
const MAX_SLICES_PER_CHUNK: usize = 128;
/// A file's manifest holds about this many slices at most (about 100 KiB of manifest).
const MAX_SLICES_PER_FILE: usize = 8192;
/// Slices a file may pass [`MAX_SLICES_PER_FILE`] by while a compaction is under way.
const FILE_SLACK: usize = 2048;

/// Sorted, overlapping and touching ranges merged.
fn coalesce(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// A flush's entry in the journal, marked done however the flush ends: committed, failed
/// (its writes stay with the open file), or cut short by a stop (which keeps them with a
/// record of their own).
struct Journaled<'a> {
    journal: &'a Journal,
    seq: u64,
}

impl Drop for Journaled<'_> {
    fn drop(&mut self) {
        self.journal.done(self.seq);
    }
}

/// Names staging files; the staging directory is emptied when a mount starts.
static STAGING_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
