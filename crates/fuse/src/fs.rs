//! The mount's shared state and the helpers its operations use (`ops.rs` has the operations).
//! Each request is handed to a tokio task and answered from there, so requests run
//! concurrently; per-file state sits behind a per-file async lock, so one file's upload only
//! waits for that file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyEmpty};
use swarmfs_client::{Client, ClientError};
use swarmfs_core::Manifest;
use swarmfs_proto::{EntryInfo, EntryKind, ErrorCode, RemotePath};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tracing::{debug, info, warn};

use crate::attrs::DirAttrs;
use crate::creating::{Creating, Landing};
use crate::file::{FileError, FileState};
use crate::inodes::Inodes;
use crate::journal::Journal;
use crate::MountOptions;
use swarmfs_client::cache::ChunkCache;

pub(crate) const TTL: Duration = Duration::from_secs(1);

type OpenFile = Arc<AsyncMutex<FileState>>;
/// A directory listing taken at opendir: (inode, type, name, attributes and how long the
/// kernel may keep them). The attributes (none for `.` and `..`) answer readdirplus, so
/// `ls -l` costs one listing, not a lookup per entry.
type Listing = Vec<(u64, FileType, String, Option<(FileAttr, Duration)>)>;

/// A directory handle: its listing as of opendir, and its own entry then.
pub(crate) struct OpenDir {
    pub ino: u64,
    pub listing: Listing,
    pub entry: EntryInfo,
}

pub(crate) struct Inner {
    pub(crate) client: Arc<Client>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) opts: MountOptions,
    pub(crate) inodes: Mutex<Inodes>,
    /// Open files by inode; every handle on one inode shares its state.
    pub(crate) files: Mutex<HashMap<u64, OpenFile>>,
    /// Directory listings by handle, taken at opendir.
    pub(crate) dirs: Mutex<HashMap<u64, OpenDir>>,
    pub(crate) next_fh: AtomicU64,
    pub(crate) cache: Arc<ChunkCache>,
    /// Staged writes a previous mount of this home left, until `upload_left_over` takes them.
    left_over: Mutex<Vec<(std::path::PathBuf, crate::pending::PendingRecord)>>,
    /// Cancelled to cut the final flush short, keeping what is left for the next mount.
    stop_uploading: tokio_util::sync::CancellationToken,
    /// Files kept staged for the next mount: a later close of one gets EIO, not a success
    /// that would claim the writes are in the swarm.
    kept: Mutex<std::collections::HashSet<u64>>,
    /// Directory attributes as the tracker gave them, by inode, with when (see [`DirAttrs`]).
    pub(crate) dir_attrs: Mutex<DirAttrs>,
    /// Creates answered before their tracker call landed (see [`crate::creating`]).
    pub(crate) creating: Creating,
    /// Small staged writes (in memory) while their flush is under way, for the next mount.
    pub(crate) journal: Journal,
    /// Notifications to the kernel, once the session is up (see [`Inner::load`]).
    pub(crate) kernel: std::sync::OnceLock<fuser::Notifier>,
}

pub struct SwarmFs {
    pub(crate) inner: Arc<Inner>,
}

/// See [`SwarmFs::flusher`].
pub struct Flusher(Arc<Inner>);

impl Flusher {
    /// Uploads what every open file has staged, logging progress, until done or until
    /// [`Flusher::stop_uploading`]. Returns the remote paths whose writes were not uploaded:
    /// they are kept staged on disk for the next mount.
    pub async fn flush_all(&self) -> Vec<String> {
        self.0.flush_all().await
    }

    /// Cuts short a [`Flusher::flush_all`] under way (a second Ctrl-C).
    pub fn stop_uploading(&self) {
        self.0.stop_uploading.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stop_uploading.is_cancelled()
    }

    /// Uploads what a previous mount of this home left staged (see [`crate::pending`]).
    pub async fn upload_left_over(&self) {
        self.0.upload_left_over().await
    }
}

pub(crate) fn errno_of(e: &ClientError) -> Errno {
    match e {
        ClientError::Remote { code, .. } | ClientError::PlacementFailed { code: Some(code), .. } => match code {
            ErrorCode::NotFound => Errno::ENOENT,
            ErrorCode::Forbidden => Errno::EACCES,
            ErrorCode::AlreadyExists => Errno::EEXIST,
            ErrorCode::NotADirectory => Errno::ENOTDIR,
            ErrorCode::IsADirectory => Errno::EISDIR,
            ErrorCode::NotEmpty => Errno::ENOTEMPTY,
            ErrorCode::InvalidArgument => Errno::EINVAL,
            ErrorCode::NoSpace => Errno::ENOSPC,
            _ => Errno::EIO,
        },
        ClientError::NoPeers => Errno::ENOSPC,
        // Refused by the swarm (a revoked member): a permission problem, not an I/O error.
        ClientError::Net(swarmfs_net::NetError::NotMember(_)) => Errno::EACCES,
        ClientError::Core(swarmfs_core::CoreError::TooManyChunks { .. }) => Errno::EFBIG,
        _ => Errno::EIO,
    }
}

pub(crate) fn file_errno(e: &FileError) -> Errno {
    match e {
        FileError::Client(c) => errno_of(c),
        FileError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => Errno::ENOSPC,
        FileError::Io(_) => Errno::EIO,
        FileError::TooLarge => Errno::EFBIG,
    }
}

/// Logs a failed operation: I/O errors and refusals (a revoked member, a forbidden request)
/// are news for whoever reads the log; ENOENT and friends are everyday answers.
pub(crate) fn log_err(op: &str, e: &dyn std::fmt::Display, errno: Errno) -> Errno {
    if errno == Errno::EIO || errno == Errno::EACCES {
        warn!("{op}: {e}");
    } else {
        debug!("{op}: {e}");
    }
    errno
}

/// Milliseconds since the epoch, negative before 1970 (tar archives and `touch -d` carry such
/// times; they must not become 1970).
pub(crate) fn time_of(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

pub(crate) fn ms_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        // Round towards minus infinity, so a time and its millisecond agree on the second.
        Err(e) => -(e.duration().as_nanos().div_ceil(1_000_000) as i64),
    }
}

pub(crate) fn file_type(e: &EntryInfo) -> FileType {
    match e.kind {
        EntryKind::Special => match e.mode & libc::S_IFMT {
            libc::S_IFIFO => FileType::NamedPipe,
            libc::S_IFCHR => FileType::CharDevice,
            libc::S_IFBLK => FileType::BlockDevice,
            libc::S_IFSOCK => FileType::Socket,
            _ => FileType::RegularFile,
        },
        k => kind_of(k),
    }
}

fn kind_of(k: EntryKind) -> FileType {
    match k {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Special => FileType::NamedPipe,
    }
}

impl SwarmFs {
    pub fn new(client: Arc<Client>, rt: tokio::runtime::Handle, opts: MountOptions) -> std::io::Result<SwarmFs> {
        std::fs::create_dir_all(&opts.staging_dir)?;
        // A previous run's staged writes with a record (or in its journal) are uploaded after
        // mounting; staging files without one never started a flush and hold nothing anyone
        // was promised.
        Journal::replay(&opts.staging_dir)?;
        let left_over = crate::pending::collect_left_over(&opts.staging_dir)?;
        let journal = Journal::create(&opts.staging_dir)?;
        let cache = Arc::new(ChunkCache::new(opts.cache_bytes));
        Ok(SwarmFs {
            inner: Arc::new(Inner {
                client,
                rt,
                opts,
                inodes: Mutex::new(Inodes::default()),
                files: Mutex::new(HashMap::new()),
                dirs: Mutex::new(HashMap::new()),
                next_fh: AtomicU64::new(1),
                cache,
                left_over: Mutex::new(left_over),
                stop_uploading: tokio_util::sync::CancellationToken::new(),
                kept: Mutex::new(std::collections::HashSet::new()),
                dir_attrs: Mutex::new(DirAttrs::default()),
                creating: Creating::default(),
                journal,
                kernel: std::sync::OnceLock::new(),
            }),
        })
    }

    pub fn allow_other(&self) -> bool {
        self.inner.opts.allow_other
    }

    pub fn read_only(&self) -> bool {
        self.inner.opts.read_only
    }

    pub fn fs_name(&self) -> String {
        self.inner.opts.fs_name.clone()
    }

    /// A handle that flushes every open file, usable after the filesystem is handed to FUSE.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.inner.clone())
    }

    pub(crate) fn upload_then_reply(&self, ino: INodeNo, reply: ReplyEmpty) {
        self.run(|fs| async move {
            let r = match fs.open_file(ino.0) {
                Some(f) => fs.flush_file(ino.0, &f, false).await,
                None if fs.kept.lock().expect("kept").contains(&ino.0) => Err(Errno::EIO),
                None => Ok(()),
            };
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    pub(crate) fn run<F>(&self, f: impl FnOnce(Arc<Inner>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.rt.spawn(f(self.inner.clone()));
    }
    /// Like [`SwarmFs::run`], but first takes the request as far as it goes without waiting,
    /// here on the FUSE thread: an answer the mount has at hand (attributes it keeps, a
    /// write into staging, a directory listing it holds) goes back at once, and a request to
    /// the tracker is on the wire before any other thread wakes. Only what would wait moves
    /// to a runtime task, which polls it again with a real waker. Each hand-over between
    /// threads costs tens of microseconds on a small VM, several per small file created.
    /// For operations whose first steps are short only: not for a flush, whose first steps
    /// read whole chunks from staging.
    pub(crate) fn run_here_first<F>(&self, f: impl FnOnce(Arc<Inner>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut task = Box::pin(f(self.inner.clone()));
        let _in_runtime = self.inner.rt.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_pending() {
            self.inner.rt.spawn(task);
        }
    }
}

impl Inner {
    pub(crate) fn path(&self, ino: INodeNo) -> Result<RemotePath, Errno> {
        self.inodes.lock().expect("inodes").path(ino.0).ok_or(Errno::ENOENT)
    }

    pub(crate) fn child(&self, parent: INodeNo, name: &OsStr) -> Result<RemotePath, Errno> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        if name.len() > swarmfs_proto::path::MAX_NAME_LEN {
            return Err(Errno::ENAMETOOLONG);
        }
        self.path(parent)?.join(name).map_err(|_| Errno::EINVAL)
    }

    pub(crate) fn open_file(&self, ino: u64) -> Option<OpenFile> {
        self.files.lock().expect("files").get(&ino).cloned()
    }

    pub(crate) fn attr(&self, ino: u64, e: &EntryInfo) -> FileAttr {
        let (m, c) = (time_of(e.mtime_ms), time_of(e.ctime_ms.max(e.mtime_ms)));
        let kind = file_type(e);
        FileAttr {
            ino: INodeNo(ino),
            size: e.size,
            blocks: e.size.div_ceil(512),
            atime: m,
            mtime: m,
            ctime: c,
            crtime: c,
            kind,
            perm: (e.mode & 0o7777) as u16,
            nlink: e.nlink.max(1),
            uid: e.uid,
            gid: e.gid,
            rdev: e.rdev,
            blksize: self.opts.chunk_size.min(1 << 20),
            flags: 0,
        }
    }

    /// Attributes of an open file: the tracker's entry with the local size and times.
    /// Attributes of a directory removed (or renamed over) while a handle on it is open: as
    /// it was when opened, with no links. (The kernel sends no handle with a directory's
    /// getattr, so the handle is found by inode.)
    pub(crate) fn removed_dir_attr(&self, ino: u64) -> Option<FileAttr> {
        let dirs = self.dirs.lock().expect("dirs");
        let dir = dirs.values().find(|d| d.ino == ino)?;
        let mut a = self.attr(ino, &dir.entry);
        a.nlink = 0;
        Some(a)
    }

    pub(crate) fn open_attr(&self, ino: u64, st: &FileState) -> FileAttr {
        let e = EntryInfo {
            size: st.size,
            mtime_ms: ms_of(st.mtime),
            mode: st.mode,
            ctime_ms: st.entry.ctime_ms.max(ms_of(st.mtime)),
            // Unlinked but still open: no name links to it any more.
            nlink: if st.unlinked { 0 } else { st.entry.nlink },
            ..st.entry.clone()
        };
        let mut a = self.attr(ino, &e);
        a.nlink = e.nlink;
        a
    }

    /// What a change to the entry at `path` (an unlink, a rename, a setattr) waits for first:
    /// the creates in flight, then, if this is a file whose create answered early failed,
    /// that create made again, so the change reaches an entry the tracker has. A failure to
    /// make it is the change's (see `crate::creating`).
    pub(crate) async fn settled_at(&self, path: &RemotePath) -> Result<(), Errno> {
        self.creating.settled().await;
        let Some(ino) = self.inodes.lock().expect("inodes").known(path).filter(|&i| self.creating.failed(i)) else {
            return Ok(());
        };
        self.creating.ensure(&self.client, ino, Some(path)).await.map_err(|e| log_err("create", &e, errno_of(&e)))
    }

    /// Attributes of `path` and how long the kernel may keep them, with an open file's local
    /// size, mode and time taking precedence and a directory's answered from [`DirAttrs`]
    /// while fresh.
    pub(crate) async fn stat(&self, path: &RemotePath) -> Result<(FileAttr, Duration), Errno> {
        let ino = self.inodes.lock().expect("inodes").ino(path);
        if let Some(f) = self.open_file(ino) {
            let st = f.lock().await;
            if !st.unlinked {
                return Ok((self.open_attr(ino, &st), TTL));
            }
        }
        let asked_at = {
            let dirs = self.dir_attrs.lock().expect("dir attrs");
            if let Some((e, left)) = dirs.fresh(ino) {
                return Ok((self.attr(ino, &e), left));
            }
            dirs.changes
        };
        let e = self.client.stat(path).await.map_err(|e| log_err("stat", &e, errno_of(&e)))?;
        if e.kind == EntryKind::Dir {
            self.dir_attrs.lock().expect("dir attrs").keep(ino, &e, asked_at);
        }
        Ok((self.attr(ino, &e), TTL))
    }

    /// The open state of `ino`, loading the manifest (close-to-open: a fresh copy) when no
    /// handle has it open yet.
    pub(crate) async fn load(&self, ino: u64) -> Result<OpenFile, Errno> {
        if let Some(f) = self.open_file(ino) {
            return Ok(f);
        }
        let path = self.path(INodeNo(ino))?;
        let (entry, manifest) = match self.client.open(&path).await {
            Ok(x) => x,
            Err(e) => return Err(log_err("open", &e, errno_of(&e))),
        };
        let st = FileState::new(manifest, entry, &self.opts).map_err(|e| log_err("open", &e, file_errno(&e)))?;
        let f = Arc::new(AsyncMutex::new(st));
        // Close-to-open: the kernel may still hold attributes it was given before another
        // mount's close, for up to TTL, and a read stops at the size they say. Dropped here,
        // they are asked for again and answered from the state just loaded (no tracker call).
        if let Some(kernel) = self.kernel.get() {
            if let Err(e) = kernel.inval_inode(INodeNo(ino), -1, 0) {
                tracing::debug!("dropping the kernel's attributes of inode {ino}: {e}");
            }
        }
        // Another task may have loaded it meanwhile: keep the first.
        Ok(self.files.lock().expect("files").entry(ino).or_insert(f).clone())
    }

    /// Uploads and commits what `f` has staged. Once the mount is told to stop uploading (a
    /// second Ctrl-C), a flush under way is cut short and its writes kept for the next mount;
    /// the caller (a close, an fsync) gets EIO. `settle`: see [`FileState::flush`].
    pub(crate) async fn flush_file(&self, ino: u64, f: &OpenFile, settle: bool) -> Result<(), Errno> {
        let flushed = tokio::select! {
            r = async {
                let mut st = f.lock().await;
                // Read under the file's lock, which an unlink or rename holds (see
                // `hold_open_files`): the flush commits where the file is now.
                let path = self.inodes.lock().expect("inodes").path(ino);
                // A create answered early lands before its file commits (or its close returns).
                let landed = self.creating.landing(&self.client, ino, path.as_ref());
                st.flush(&self.client, &self.cache, path.as_ref(), &self.opts, &self.journal, settle, landed)
                    .await
                    .map_err(|e| log_err("flush", &e, file_errno(&e)))
            } => Some(r),
            _ = self.stop_uploading.cancelled() => None,
        };
        match flushed {
            Some(r) => r,
            None => {
                self.keep_staged(ino, f).await;
                Err(Errno::EIO)
            }
        }
    }

    /// Keeps what `f` has staged on disk, with its record, for the next mount of this home.
    /// Returns the remote path when there was something to keep.
    async fn keep_staged(&self, ino: u64, f: &OpenFile) -> Option<String> {
        let mut st = f.lock().await;
        let path = self.inodes.lock().expect("inodes").path(ino);
        // Another caller (a close and the unmount's flush, both cut short) kept it already.
        if !self.files.lock().expect("files").contains_key(&ino) {
            return None;
        }
        let kept = match path {
            Some(path) if st.is_dirty() && !st.unlinked => match st.keep_for_next_mount(&path) {
                Ok(()) => {
                    warn!("not uploaded, kept staged for the next mount of this home: {path}");
                    Some(path.to_string())
                }
                Err(e) => {
                    warn!("could not keep {path} staged: {e}; its writes are lost");
                    None
                }
            },
            _ => None,
        };
        drop(st);
        // Out of the open-file table: the staging file stays for the next mount.
        self.files.lock().expect("files").remove(&ino);
        if kept.is_some() {
            self.kept.lock().expect("kept").insert(ino);
        }
        kept
    }

    /// Called when the last handle closes (or a setattr on a closed file is done).
    pub(crate) fn close_if_unused(&self, ino: u64) {
        let mut files = self.files.lock().expect("files");
        let unused = files.get(&ino).is_some_and(|f| f.try_lock().is_ok_and(|st| st.opens == 0 && !st.is_dirty()));
        if unused {
            files.remove(&ino);
        }
    }

    /// Flushes every open file on the way out, one at a time with a progress line each,
    /// until told to stop uploading; what is left is kept staged for the next mount.
    pub(crate) async fn flush_all(&self) -> Vec<String> {
        // Creates answered early land first: they are this mount's to finish.
        self.creating.settled().await;
        let files: Vec<(u64, OpenFile)> =
            self.files.lock().expect("files").iter().map(|(i, f)| (*i, f.clone())).collect();
        let mut staged = Vec::new();
        for (ino, f) in &files {
            // A file whose flush is under way (a close) has its lock taken: it is counted in.
            // A compaction under way is waited for and committed too (it is not data).
            let bytes = f
                .try_lock()
                .map(|st| if st.is_dirty() || st.compacting() { st.staged_bytes().max(1) } else { 0 })
                .unwrap_or(1);
            if bytes > 0 {
                staged.push((*ino, f.clone(), bytes));
            }
        }
        let total: u64 = staged.iter().map(|(_, _, b)| b).sum();
        info!(
            files = staged.len(),
            "unmounting: uploading staged writes ({} MiB) first; signal again to stop and keep them for the next mount",
            total.div_ceil(1 << 20)
        );
        let mut kept = Vec::new();
        for (n, (ino, f, bytes)) in staged.iter().enumerate() {
            let path = self.inodes.lock().expect("inodes").path(*ino);
            let name = path.as_ref().map(|p| p.to_string()).unwrap_or_else(|| format!("inode {ino}"));
            if self.stop_uploading.is_cancelled() {
                kept.extend(self.keep_staged(*ino, f).await);
                continue;
            }
            match self.flush_file(*ino, f, true).await {
                Ok(()) => {
                    info!("uploaded {name} ({} of {} files, {} MiB)", n + 1, staged.len(), bytes.div_ceil(1 << 20))
                }
                // Cut short: flush_file kept it.
                Err(_) if self.stop_uploading.is_cancelled() => kept.push(name),
                Err(e) => {
                    warn!("could not upload {name} on unmount: {e:?}");
                    kept.extend(self.keep_staged(*ino, f).await);
                }
            }
        }
        kept
    }

    /// Finishes the uploads a previous mount of this home left staged.
    pub(crate) async fn upload_left_over(&self) {
        let left_over = std::mem::take(&mut *self.left_over.lock().expect("left over"));
        if left_over.is_empty() {
            return;
        }
        info!(files = left_over.len(), "uploading writes the last mount of this home left staged");
        for (staging, record) in left_over {
            let r = async {
                let path = RemotePath::parse(&record.path).map_err(|e| FileError::Io(std::io::Error::other(e)))?;
                let (entry, base) = self.client.open(&path).await?;
                if base.chunk_size != record.chunk_size && !base.chunks.is_empty() {
                    return Err(FileError::Io(std::io::Error::other(
                        "the file was rewritten with another chunk size since; left staged",
                    )));
                }
                let base =
                    if base.chunks.is_empty() { Manifest { chunk_size: record.chunk_size, ..base } } else { base };
                let mut st = FileState::recover(staging.clone(), &record, base, entry)?;
                st.flush(&self.client, &self.cache, Some(&path), &self.opts, &self.journal, true, Landing::none()).await
            }
            .await;
            match r {
                Ok(()) => info!("uploaded {} (left staged by the last mount)", record.path),
                Err(e) => {
                    warn!("could not upload {} left staged by the last mount: {e}; kept for the next", record.path)
                }
            }
        }
    }

    /// Takes the locks of the open files at `paths` and below them (in inode order), for an
    /// unlink or rename to hold while it changes the namespace: a flush under way (a
    /// close's, which may commit a compaction or a whole manifest) finishes first, at the
    /// path it had, and one that starts later reads the path after the change or finds its
    /// file unlinked. Otherwise a close's commit could land after the change and bring a
    /// removed file back (a database's journal, and with it a rollback), or write the old
    /// version over the file renamed onto its path.
    pub(crate) async fn hold_open_files(&self, paths: &[&RemotePath]) -> Vec<(u64, OwnedMutexGuard<FileState>)> {
        let mut inos: Vec<u64> = {
            let inodes = self.inodes.lock().expect("inodes");
            paths.iter().flat_map(|p| inodes.within(p)).collect()
        };
        inos.sort_unstable();
        inos.dedup();
        let mut held = Vec::new();
        for ino in inos {
            if let Some(f) = self.open_file(ino) {
                held.push((ino, f.lock_owned().await));
            }
        }
        held
    }

    /// Marks the open files among `inos` unlinked: their writes are dropped, not committed.
    /// Those in `held` are marked through their guards.
    pub(crate) fn mark_unlinked(&self, inos: &[u64], held: &mut [(u64, OwnedMutexGuard<FileState>)]) {
        for ino in inos {
            if let Some((_, st)) = held.iter_mut().find(|(i, _)| i == ino) {
                st.unlinked = true;
            } else if let Some(f) = self.open_file(*ino) {
                if let Ok(mut st) = f.try_lock() {
                    st.unlinked = true;
                } else {
                    let f = f.clone();
                    self.rt.spawn(async move { f.lock().await.unlinked = true });
                }
            }
        }
    }

    pub(crate) fn new_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}
