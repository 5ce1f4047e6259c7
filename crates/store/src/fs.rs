//! Chunks as files. A put is acknowledged only after the data and a durable name for it are
//! on disk, so an acknowledged chunk survives a crash or power loss: the chunk's own name
//! (its directory fsynced), or the name of the spare it was written into, from which the
//! store puts it back in place when it opens (see [`crate::spares`]).
//!
//! Put, delete, collect and quarantine of one chunk run one at a time (a striped lock on
//! the id's first byte), so "already here" can never be answered for a copy that a
//! concurrent collect is deleting, and `used`/`count` stay exact under concurrent puts.
//!
//! Reads: a whole-chunk read is hashed against the id unless this store hashed the same
//! file since it last changed (its inode, length and ctime are what they were then: a put
//! hashes what it writes, a read or a scrub what it reads). Every reader verifies every
//! chunk again anyway and reports a bad copy to the tracker; hashing an unchanged file on
//! every serve caught only silent rot, which the scrubber (which always hashes) finds, and it
//! was 14 % of a serving peer's CPU in a profile of a get. A file changed by a write (a person, a program, a
//! bad disk controller going through the file system) gets a new ctime and is hashed on its
//! next read. Kernels before 6.13 stamp ctime at a clock tick, so a change within the tick
//! of the last hash goes unseen until the scrub or a reader finds it.
//!
//! Space: a put is refused when it would pass the configured capacity or the disk's real
//! free space (re-read at most once a second, and at once after the disk said ENOSPC), so a
//! full disk is reported as "no space" before any byte is written.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use swarmfs_proto::ChunkId;
use tracing::{info, warn};

use crate::layout::Layout;
use crate::spares::Spares;
use crate::StoreError;

const LOCK_STRIPES: usize = 256;
/// How stale the disk's free-space reading may get before a put re-reads it.
const FREE_SPACE_TTL: Duration = Duration::from_secs(1);
/// Chunk files remembered as hashed since they last changed (about 80 bytes each); past
/// this, one is forgotten for each new one and is hashed again on its next read.
const VERIFIED_MAX: usize = 16_384;

/// One state of a chunk file: a write, a truncation or a replacement changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    ctime: i64,
    ctime_nsec: i64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp { ino: m.ino(), len: m.len(), ctime: m.ctime(), ctime_nsec: m.ctime_nsec() }
    }
}

pub struct ChunkStore {
    root: PathBuf,
    capacity: u64,
    used: AtomicU64,
    count: AtomicU64,
    /// The value of `used` at which the disk is full: `used + free` as of the last reading.
    disk_limit: AtomicU64,
    disk_read_at: Mutex<Instant>,
    /// Set once "disk full" has been logged; cleared when the disk has room again.
    full_logged: AtomicBool,
    locks: Vec<Mutex<()>>,
    /// Where in `chunks/` each chunk goes (see [`Layout`]).
    layout: Layout,
    /// Whether a put is on disk before it returns (fsync of file and directory). A store
    /// of cached copies (`get --seed`) skips that: it is removed when serving stops anyway.
    durable: bool,
    /// Chunk files hashed since they last changed (see the module's notes on reads).
    verified: Mutex<HashMap<ChunkId, Stamp>>,
    /// Empty files that puts write into instead of creating one each (see [`crate::spares`]).
    spares: Spares,
}

impl ChunkStore {
    /// Opens (creating if needed) a store under `root`, counting what it already holds and
    /// removing temp files a crash left behind.
    pub fn open(root: &Path, capacity: u64) -> Result<ChunkStore, StoreError> {
        Self::open_with(root, capacity, true)
    }

    /// A store of cached copies: like [`ChunkStore::open`], but puts are not fsynced. What
    /// it holds is served while a download seeds and thrown away after; a crash loses
    /// nothing anyone relies on (reads still verify every chunk).
    pub fn open_cache(root: &Path, capacity: u64) -> Result<ChunkStore, StoreError> {
        Self::open_with(root, capacity, false)
    }

    fn open_with(root: &Path, capacity: u64, durable: bool) -> Result<ChunkStore, StoreError> {
        for sub in ["chunks", "tmp", "quarantine"] {
            fs::create_dir_all(root.join(sub))?;
        }
        let layout = Layout::open(root)?;
        // Removes the temp files a crash left behind, keeps the spares.
        let (spares, filled) = Spares::open(&root.join("tmp"))?;
        let store = ChunkStore {
            root: root.to_path_buf(),
            capacity,
            used: AtomicU64::new(0),
            count: AtomicU64::new(0),
            disk_limit: AtomicU64::new(u64::MAX),
            disk_read_at: Mutex::new(Instant::now()),
            full_logged: AtomicBool::new(false),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            layout,
            durable,
            verified: Mutex::new(HashMap::new()),
            spares,
        };
        store.put_back(&filled)?;
        let (mut used, mut count) = (0, 0);
        store.walk(|_, len| {
            used += len;
            count += 1;
        })?;
        store.used.store(used, Ordering::Relaxed);
        store.count.store(count, Ordering::Relaxed);
        store.read_free_space();
        info!(chunks = count, bytes = used, "chunk store opened");
        let room = store.disk_limit.load(Ordering::Relaxed);
        if room < capacity {
            warn!(
                capacity,
                usable = room,
                "--capacity is more than this disk can hold ({} MiB free): reporting {} MiB as the capacity",
                room.saturating_sub(used) >> 20,
                room >> 20
            );
        }
        Ok(store)
    }

    /// Puts spares that hold bytes back under the hash of what they hold: a put acknowledged
    /// before a crash whose rename out of the spare did not reach the disk (or part of an
    /// unacknowledged one, which no file refers to and the tracker collects).
    fn put_back(&self, filled: &[PathBuf]) -> Result<(), StoreError> {
        for spare in filled {
            let bytes = fs::read(spare)?;
            let id = ChunkId(*blake3::hash(&bytes).as_bytes());
            let path = self.path_of(&id);
            if path.exists() {
                fs::remove_file(spare)?;
                continue;
            }
            let dir = path.parent().expect("chunk paths have parents");
            self.make_dirs_durably(dir)?;
            fs::rename(spare, &path)?;
            File::open(dir)?.sync_all()?;
            info!(chunk = %id, bytes = bytes.len(), "put back a chunk a crash left in a spare file");
        }
        Ok(())
    }

    /// What this store can really hold: the configured capacity, or less when the disk has
    /// less free space than that. This is what the peer reports and placement plans with.
    pub fn capacity(&self) -> u64 {
        self.capacity.min(self.disk_limit.load(Ordering::Relaxed))
    }

    /// Re-reads the disk's free space (statvfs). A failed reading leaves the disk unbounded
    /// (the capacity still holds) rather than refusing every put.
    pub fn read_free_space(&self) {
        *self.disk_read_at.lock().expect("free-space lock") = Instant::now();
        let limit = match rustix::fs::statvfs(&self.root) {
            Ok(st) => self.used().saturating_add(st.f_bavail.saturating_mul(st.f_frsize)),
            Err(e) => {
                warn!("cannot read the free space of {}: {e}", self.root.display());
                u64::MAX
            }
        };
        self.disk_limit.store(limit, Ordering::Relaxed);
        if limit > self.used() && self.full_logged.swap(false, Ordering::Relaxed) {
            info!(free = limit - self.used(), "the disk has room again; accepting chunks");
        }
    }

    fn lock(&self, id: &ChunkId) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding a stripe leaves nothing half-done that the lock protects.
        self.locks[id.as_bytes()[0] as usize % LOCK_STRIPES].lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn path_of(&self, id: &ChunkId) -> PathBuf {
        self.layout.chunk_path(&self.root.join("chunks"), id)
    }

    /// Stores `ciphertext` under `id` after checking that it hashes to `id`. Returns false
    /// when a sound copy was already here (nothing written).
    ///
    /// A copy already on disk counts only once it has been read back and hashed now: the
    /// caller is about to be told "durable", and a copy that rotted since it was written
    /// (or was damaged by hand) must not be counted. Re-reading costs one chunk read on the
    /// dedup path only, which is far cheaper than the write it saves. A bad copy is
    /// quarantined and replaced by the bytes just sent.
    pub fn put(&self, id: &ChunkId, ciphertext: &[u8]) -> Result<bool, StoreError> {
        if blake3::hash(ciphertext).as_bytes() != id.as_bytes() {
            return Err(StoreError::HashMismatch(*id));
        }
        let path = self.path_of(id);
        let _guard = self.lock(id);
        match self.read_whole(&path) {
            Ok(existing) if blake3::hash(&existing).as_bytes() == id.as_bytes() => {
                // Stored again (dedup): mark it fresh so a pending garbage collection of the
                // same content, released by another file moments ago, leaves it alone. The
                // stripe lock keeps a collect from running between this and the answer.
                File::options().write(true).open(&path)?.set_modified(std::time::SystemTime::now())?;
                self.remember_verified(id, &path);
                return Ok(false);
            }
            Ok(_) => {
                warn!(chunk = %id, "a put found the stored copy corrupt; replacing it");
                self.quarantine_locked(id);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let len = ciphertext.len() as u64;
        self.reserve(len)?;
        let result = self.write_file(&path, ciphertext);
        match result {
            Ok(()) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                self.remember_verified(id, &path);
                Ok(true)
            }
            Err(e) => {
                self.used.fetch_sub(len, Ordering::Relaxed);
                match e {
                    StoreError::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => Err(self.disk_full(len)),
                    e => Err(e),
                }
            }
        }
    }

    /// The disk said ENOSPC: from now on the store counts as full until a reading of the free
    /// space shows room. Logged once, not once per refused chunk.
    fn disk_full(&self, need: u64) -> StoreError {
        self.read_free_space();
        // statvfs may still show a few blocks that the file system keeps for itself.
        self.disk_limit.fetch_min(self.used(), Ordering::Relaxed);
        if !self.full_logged.swap(true, Ordering::Relaxed) {
            warn!(
                used = self.used(),
                "the disk under {} is full (ENOSPC): refusing chunks until space is freed",
                self.root.display()
            );
        }
        StoreError::NoSpace { need, free: 0, capacity: self.capacity() }
    }

    fn reserve(&self, len: u64) -> Result<(), StoreError> {
        let stale = self.disk_read_at.lock().expect("free-space lock").elapsed() >= FREE_SPACE_TTL;
        if stale {
            self.read_free_space();
        }
        let limit = self.capacity();
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| (u + len <= limit).then_some(u + len))
            .map(|_| ())
            .map_err(|u| StoreError::NoSpace { need: len, free: limit.saturating_sub(u), capacity: limit })
    }

    /// Creates the fan-out directories of a chunk path. A directory made here is only durable
    /// once its parent is fsynced too, so each one created is followed by that.
    fn make_dirs_durably(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().expect("below the store root");
        self.make_dirs_durably(parent)?;
        match fs::create_dir(dir) {
            Ok(()) if self.durable => File::open(parent)?.sync_all()?,
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Writes a chunk file whole (a spare or a new temp file, renamed into place), fsynced in
    /// a durable store: its data, and its directory unless a named spare holds the data under
    /// a durable name until then (see [`crate::spares`]).
    fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = path.parent().expect("chunk paths have parents");
        self.make_dirs_durably(dir)?;
        let spare = self.spares.take().and_then(|s| Some((File::options().write(true).open(&s.path).ok()?, s)));
        let named = spare.as_ref().is_some_and(|(_, s)| s.named);
        let (mut f, tmp) = match spare {
            Some((f, s)) => (f, s.path),
            None => {
                let tmp = self.root.join("tmp").join(format!(
                    "{}.{}",
                    path.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
                    rand::random::<u32>()
                ));
                (File::create(&tmp)?, tmp)
            }
        };
        let r = match self.durable {
            true => swarmfs_core::direct::write_all(&f, bytes).and_then(|_| f.sync_data()),
            false => f.write_all(bytes),
        };
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        fs::rename(&tmp, path)?;
        if self.durable && !named {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Reads a whole chunk (verified against its id, unless this file was since it last
    /// changed) or, with a range, just those bytes. A whole-chunk read that fails
    /// verification quarantines the copy.
    pub fn get(&self, id: &ChunkId, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        self.spares.busy();
        self.read(id, offset, len, false)
    }

    fn read(&self, id: &ChunkId, offset: u64, len: u64, rehash: bool) -> Result<Bytes, StoreError> {
        let path = self.path_of(id);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound(*id)),
            Err(e) => return Err(e.into()),
        };
        let meta = f.metadata()?;
        let size = meta.len();
        if offset == 0 && (len == u64::MAX || len == size) {
            let buf = self.read_file(&mut f, size)?;
            let stamp = Stamp::of(&meta);
            if !rehash && self.verified.lock().unwrap().get(id) == Some(&stamp) {
                return Ok(buf);
            }
            if blake3::hash(&buf).as_bytes() != id.as_bytes() {
                drop(f);
                self.quarantine(id);
                return Err(StoreError::Corrupt(*id));
            }
            self.remember(id, stamp);
            return Ok(buf);
        }
        let end = if len == u64::MAX { size } else { offset.saturating_add(len) };
        if offset > size || end > size {
            return Err(StoreError::BadRange { id: *id, offset, len, size });
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
        Ok(buf.into())
    }

    /// A whole chunk file; past the page cache in a durable store (see `direct`), into a
    /// buffer the answer's bytes point into.
    fn read_file(&self, f: &mut File, size: u64) -> std::io::Result<Bytes> {
        if self.durable {
            return swarmfs_core::direct::read_all_shared(f, size as usize);
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf)?;
        Ok(buf.into())
    }

    /// The file at `path` was just hashed (or written from bytes that were): remembered
    /// until it changes.
    fn remember_verified(&self, id: &ChunkId, path: &Path) {
        if let Ok(m) = fs::metadata(path) {
            self.remember(id, Stamp::of(&m));
        }
    }

    fn remember(&self, id: &ChunkId, stamp: Stamp) {
        let mut verified = self.verified.lock().unwrap();
        if verified.len() >= VERIFIED_MAX && !verified.contains_key(id) {
            if let Some(other) = verified.keys().next().copied() {
                verified.remove(&other);
            }
        }
        verified.insert(*id, stamp);
    }

    fn read_whole(&self, path: &Path) -> std::io::Result<Bytes> {
        let mut f = File::open(path)?;
        let size = f.metadata()?.len();
        self.read_file(&mut f, size)
    }

    /// How many spare files to make now (only a reserve while puts or reads are arriving).
    pub fn spares_wanted(&self) -> usize {
        self.spares.wanted()
    }

    /// Recycled spares waiting for [`ChunkStore::make_spares`] to make their names durable.
    pub fn spares_unnamed(&self) -> usize {
        self.spares.unnamed()
    }

    /// How soon the spare maker should look again.
    pub fn spares_recheck(&self) -> Duration {
        self.spares.recheck()
    }

    /// Makes up to `n` spare files and names the recycled ones; returns how many were made.
    pub fn make_spares(&self, n: usize) -> Result<usize, StoreError> {
        Ok(self.spares.make(n)?)
    }

    pub fn spares_ready(&self) -> usize {
        self.spares.ready()
    }

    pub fn has(&self, id: &ChunkId) -> bool {
        self.path_of(id).exists()
    }

    /// Removes a chunk; false when it was not here.
    pub fn delete(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let _guard = self.lock(id);
        self.delete_locked(id)
    }

    fn delete_locked(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let path = self.path_of(id);
        let len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        // Kept as a spare for a later put when there are not enough (see crate::spares).
        if !self.spares.recycle(&path).unwrap_or(false) {
            match fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
        self.verified.lock().unwrap().remove(id);
        self.used.fetch_sub(len, Ordering::Relaxed);
        self.count.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Deletes `id` if it was not stored within `idle`; true when the chunk is gone (deleted
    /// now or absent), false when it was stored too recently to be garbage.
    pub fn collect(&self, id: &ChunkId, idle: std::time::Duration) -> Result<bool, StoreError> {
        let _guard = self.lock(id);
        let path = self.path_of(id);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        let age = meta.modified()?.elapsed().unwrap_or_default();
        if age < idle {
            return Ok(false);
        }
        self.delete_locked(id).map(|_| true)
    }

    /// Moves a bad copy aside (kept for inspection) so it is neither served nor counted.
    pub fn quarantine(&self, id: &ChunkId) {
        let _guard = self.lock(id);
        self.quarantine_locked(id)
    }

    fn quarantine_locked(&self, id: &ChunkId) {
        let path = self.path_of(id);
        let Ok(meta) = fs::metadata(&path) else {
            return;
        };
        self.verified.lock().unwrap().remove(id);
        let dest = self.root.join("quarantine").join(id.to_string());
        match fs::rename(&path, &dest) {
            Ok(()) => {
                self.used.fetch_sub(meta.len(), Ordering::Relaxed);
                self.count.fetch_sub(1, Ordering::Relaxed);
                warn!(chunk = %id, "quarantined a corrupt chunk");
            }
            Err(e) => warn!(chunk = %id, "could not quarantine: {e}"),
        }
    }

    /// Re-reads a chunk and checks its hash (the scrubber), whether or not it was hashed
    /// since it last changed. `Ok(Some(len))`: sound; `Ok(None)`: not here (deleted
    /// meanwhile); `Err(Corrupt)`: the copy was bad and is now quarantined.
    pub fn verify(&self, id: &ChunkId) -> Result<Option<u64>, StoreError> {
        match self.read(id, 0, u64::MAX, true) {
            Ok(bytes) => Ok(Some(bytes.len() as u64)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Number of buckets [`ChunkStore::list_bucket`] walks: one per fan-out directory.
    pub fn buckets(&self) -> u32 {
        self.layout.buckets()
    }

    /// The chunks in fan-out directory `bucket` (those whose ids start with its one or two
    /// bytes), so a slow walk over the whole store never holds every id in memory.
    pub fn list_bucket(&self, bucket: u32) -> Result<Vec<ChunkId>, StoreError> {
        let dir = self.layout.bucket_dir(&self.root.join("chunks"), bucket);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut ids = Vec::new();
        for e in entries {
            if let Some(id) = e?.file_name().to_str().and_then(|n| n.parse::<ChunkId>().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Every chunk id held, for the inventory sent to the tracker.
    pub fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids = Vec::new();
        self.walk(|id, _| ids.push(id))?;
        Ok(ids)
    }

    fn walk(&self, mut f: impl FnMut(ChunkId, u64)) -> Result<(), StoreError> {
        self.layout.walk(&self.root.join("chunks"), &mut f)
    }

    /// Path of a stored chunk, for tools and fault-injection tests.
    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.path_of(id)
    }
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore").field("root", &self.root).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(b: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(b).as_bytes())
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("swarmfs-store-{}", rand::random::<u64>()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn put_get_range_delete_and_reopen() {
        let dir = temp();
        let s = ChunkStore::open(&dir, 1 << 20).unwrap();
        let data = b"hello chunk".to_vec();
        let id = id_of(&data);
        assert!(s.put(&id, &data).unwrap());
        assert!(!s.put(&id, &data).unwrap(), "second put is a no-op");
        assert_eq!(s.get(&id, 0, u64::MAX).unwrap(), data);
        assert_eq!(s.get(&id, 6, 5).unwrap(), &b"chunk"[..]);
        assert!(matches!(s.get(&id, 6, 50), Err(StoreError::BadRange { .. })));
        assert!(matches!(s.put(&id_of(b"x"), b"y"), Err(StoreError::HashMismatch(_))));
        drop(s);
        let s = ChunkStore::open(&dir, 1 << 20).unwrap();
        assert_eq!((s.count(), s.used()), (1, data.len() as u64), "reopen counts what is on disk");
        assert_eq!(s.list().unwrap(), vec![id]);
        assert!(s.delete(&id).unwrap());
        assert!(matches!(s.get(&id, 0, u64::MAX), Err(StoreError::NotFound(_))));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn puts_write_into_spare_files_and_deleted_chunk_files_become_spares() {
        let dir = tempfile::tempdir().unwrap();
        let tmp_files = || fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let s = ChunkStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(s.make_spares(2).unwrap(), 2);
        assert_eq!(tmp_files(), 2);
        // Large enough for the direct write, and a small one through the page cache.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (a, b) = (id_of(&big), id_of(b"small"));
        assert!(s.put(&a, &big).unwrap());
        assert!(s.put(&b, b"small").unwrap());
        assert_eq!(tmp_files(), 0, "both puts wrote into a spare");
        assert_eq!(s.get(&a, 0, u64::MAX).unwrap(), big);
        assert_eq!(s.verify(&b).unwrap(), Some(5));
        assert!(s.put(&id_of(b"third"), b"third").unwrap(), "no spare left: a new file");
        assert!(s.delete(&a).unwrap());
        assert!(s.collect(&b, Duration::ZERO).unwrap());
        assert_eq!((s.count(), s.used()), (1, 5));
        assert_eq!(s.spares_ready(), 2, "the deleted chunk files are spares now");
        for e in fs::read_dir(dir.path().join("tmp")).unwrap() {
            assert_eq!(e.unwrap().metadata().unwrap().len(), 0, "a spare holds no bytes");
        }
        drop(s);
        fs::write(dir.path().join("tmp").join("x.1234"), b"a crash's temp file").unwrap();
        let s = ChunkStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(
            (s.count(), s.spares_ready(), tmp_files()),
            (1, 2, 2),
            "spares outlive a restart, temp files do not"
        );
        assert!(s.put(&a, &big).unwrap());
        assert_eq!(s.get(&a, 0, u64::MAX).unwrap(), big, "a recycled file holds exactly the new chunk");
    }

    #[test]
    fn a_put_into_a_named_spare_survives_a_crash_that_loses_its_rename() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(s.make_spares(1).unwrap(), 1);
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let id = id_of(&data);
        assert!(s.put(&id, &data).unwrap());
        let stored = s.chunk_path(&id);
        drop(s);
        // The put was acknowledged without fsyncing the chunk's directory; a crash may undo
        // its rename, leaving the bytes under the spare's (durable) name.
        let spare = dir.path().join("tmp").join("spare.1");
        fs::rename(&stored, &spare).unwrap();
        // And a crash in the middle of another put: part of a chunk in a spare.
        fs::write(dir.path().join("tmp").join("spare.2"), &data[..1000]).unwrap();
        let s = ChunkStore::open(dir.path(), 16 << 20).unwrap();
        assert_eq!(s.get(&id, 0, u64::MAX).unwrap(), data, "the acknowledged chunk is back under its id");
        let torn = id_of(&data[..1000]);
        assert_eq!(s.get(&torn, 0, u64::MAX).unwrap(), &data[..1000], "the torn one under its own hash");
        assert_eq!((s.count(), s.spares_ready()), (2, 0), "nothing left in tmp/");
    }

    #[test]
    fn collect_spares_recently_stored_chunks() {
        let dir = temp();
        let s = ChunkStore::open(&dir, 1 << 20).unwrap();
        let id = id_of(b"garbage");
        s.put(&id, b"garbage").unwrap();
        assert!(!s.collect(&id, std::time::Duration::from_secs(60)).unwrap(), "fresh chunk survives");
        assert!(s.has(&id));
        assert!(s.collect(&id, std::time::Duration::ZERO).unwrap());
        assert!(!s.has(&id));
        assert_eq!(s.used(), 0);
        assert!(s.collect(&id, std::time::Duration::ZERO).unwrap(), "absent counts as gone");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_rotten_copy_is_not_counted_by_a_second_put() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        let id = id_of(b"payload");
        assert!(s.put(&id, b"payload").unwrap());
        fs::write(s.chunk_path(&id), b"paYload").unwrap();
        assert!(s.put(&id, b"payload").unwrap(), "the bad copy is replaced, not counted");
        assert_eq!(s.get(&id, 0, u64::MAX).unwrap(), &b"payload"[..]);
        assert_eq!((s.count(), s.used()), (1, 7));
        assert!(dir.path().join("quarantine").join(id.to_string()).exists(), "the bad copy is kept aside");
    }

    #[test]
    fn concurrent_puts_of_one_chunk_count_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(ChunkStore::open(dir.path(), 1 << 20).unwrap());
        let data = vec![7u8; 4096];
        let id = id_of(&data);
        let written: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| s.put(&id, &data).unwrap() as usize)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(written, 1, "exactly one put writes");
        assert_eq!((s.count(), s.used()), (1, 4096));
    }

    #[test]
    fn the_store_layout_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let s = ChunkStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("FORMAT")).unwrap(), "swarmfs chunk store 2\n");
        let id = id_of(b"new layout");
        s.put(&id, b"new layout").unwrap();
        let h = id.to_string();
        assert!(dir.path().join("chunks").join(&h[..2]).join(&h).is_file(), "one fan-out level");
        assert_eq!(s.list_bucket(u32::from(id.as_bytes()[0])).unwrap(), vec![id]);
        drop(s);
        fs::write(dir.path().join("FORMAT"), "swarmfs chunk store 3\n").unwrap();
        let err = ChunkStore::open(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(err.contains("knows store formats 1 to 2"), "{err}");
    }

    #[test]
    fn a_store_in_the_first_layout_keeps_it() {
        for marker in [Some("swarmfs chunk store 1\n"), None] {
            let dir = tempfile::tempdir().unwrap();
            // As the previous release (or, without a marker, protocol 2) left it.
            let old = id_of(b"old chunk");
            let h = old.to_string();
            let at = dir.path().join("chunks").join(&h[..2]).join(&h[2..4]);
            fs::create_dir_all(&at).unwrap();
            fs::write(at.join(&h), b"old chunk").unwrap();
            if let Some(m) = marker {
                fs::write(dir.path().join("FORMAT"), m).unwrap();
            }
            let s = ChunkStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!((s.count(), s.used()), (1, 9), "{marker:?}");
            assert_eq!(s.get(&old, 0, u64::MAX).unwrap(), &b"old chunk"[..]);
            let bucket = u32::from(old.as_bytes()[0]) << 8 | u32::from(old.as_bytes()[1]);
            assert_eq!((s.buckets(), s.list_bucket(bucket).unwrap()), (1 << 16, vec![old]));
            let new = id_of(b"new chunk");
            s.put(&new, b"new chunk").unwrap();
            let n = new.to_string();
            assert!(dir.path().join("chunks").join(&n[..2]).join(&n[2..4]).join(&n).is_file(), "{marker:?}");
            assert_eq!(fs::read_to_string(dir.path().join("FORMAT")).unwrap(), "swarmfs chunk store 1\n");
            drop(s);
            let s = ChunkStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(s.count(), 2, "both found again after a restart");
        }
    }

    #[test]
    fn capacity_is_enforced() {
        let dir = temp();
        let s = ChunkStore::open(&dir, 10).unwrap();
        assert!(s.put(&id_of(b"12345678"), b"12345678").unwrap());
        assert!(matches!(s.put(&id_of(b"abc"), b"abc"), Err(StoreError::NoSpace { .. })));
        assert_eq!(s.used(), 8, "a refused put reserves nothing");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_copy_is_quarantined() {
        let dir = temp();
        let s = ChunkStore::open(&dir, 1 << 20).unwrap();
        let id = id_of(b"payload");
        s.put(&id, b"payload").unwrap();
        assert_eq!(s.get(&id, 0, u64::MAX).unwrap(), &b"payload"[..]);
        // Changed in place after the put and a read had hashed it: the write gives the file
        // a new ctime (fine-grained after a stat, on this kernel), so the next read hashes.
        fs::write(s.chunk_path(&id), b"paYload").unwrap();
        assert!(matches!(s.get(&id, 0, u64::MAX), Err(StoreError::Corrupt(_))));
        assert!(!s.has(&id));
        assert_eq!(s.count(), 0);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_scrub_hashes_a_copy_even_when_it_looks_unchanged_since_its_last_hash() {
        let dir = temp();
        let s = ChunkStore::open(&dir, 1 << 20).unwrap();
        let id = id_of(b"payload");
        s.put(&id, b"payload").unwrap();
        // Silent rot: the bytes change and the file's stamp does not (made here by
        // remembering the rotten file's stamp as hashed).
        let path = s.chunk_path(&id);
        fs::write(&path, b"paYload").unwrap();
        s.remember_verified(&id, &path);
        assert_eq!(s.get(&id, 0, u64::MAX).unwrap(), &b"paYload"[..], "a read trusts the stamp (the reader verifies)");
        assert!(matches!(s.verify(&id), Err(StoreError::Corrupt(_))), "the scrub does not");
        assert!(!s.has(&id), "and quarantines it");
        fs::remove_dir_all(dir).unwrap();
    }
}
