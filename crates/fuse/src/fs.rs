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
use swarmfs_proto::{EntryInfo, EntryKind, ErrorCode, RemotePath};
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, warn};

use crate::cache::ChunkCache;
use crate::file::{FileError, FileState};
use crate::inodes::Inodes;
use crate::MountOptions;

pub(crate) const TTL: Duration = Duration::from_secs(1);

type OpenFile = Arc<AsyncMutex<FileState>>;
/// A directory listing taken at opendir: (inode, type, name).
type Listing = Vec<(u64, FileType, String)>;

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
}

pub struct SwarmFs {
    pub(crate) inner: Arc<Inner>,
}

/// See [`SwarmFs::flusher`].
pub struct Flusher(Arc<Inner>);

impl Flusher {
    pub async fn flush_all(&self) {
        self.0.flush_all().await
    }
}

pub(crate) fn errno_of(e: &ClientError) -> Errno {
    match e {
        ClientError::Remote { code, .. } | ClientError::PlacementFailed { code: Some(code), .. } => match code {
            ErrorCode::NotFound => Errno::ENOENT,
            ErrorCode::AlreadyExists => Errno::EEXIST,
            ErrorCode::NotADirectory => Errno::ENOTDIR,
            ErrorCode::IsADirectory => Errno::EISDIR,
            ErrorCode::NotEmpty => Errno::ENOTEMPTY,
            ErrorCode::InvalidArgument => Errno::EINVAL,
            ErrorCode::NoSpace => Errno::ENOSPC,
            _ => Errno::EIO,
        },
        ClientError::NoPeers => Errno::ENOSPC,
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

pub(crate) fn log_err(op: &str, e: &dyn std::fmt::Display, errno: Errno) -> Errno {
    if errno == Errno::EIO {
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
        // Staging files of a previous run that crashed hold nothing committed; start clean.
        for e in std::fs::read_dir(&opts.staging_dir)?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
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
            }),
        })
    }

    pub fn allow_other(&self) -> bool {
        self.inner.opts.allow_other
    }

    /// A handle that flushes every open file, usable after the filesystem is handed to FUSE.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.inner.clone())
    }

    pub(crate) fn upload_then_reply(&self, ino: INodeNo, reply: ReplyEmpty) {
        self.run(|fs| async move {
            let r = match fs.open_file(ino.0) {
                Some(f) => fs.flush_file(ino.0, &f).await,
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

    /// Attributes of `path`, with an open file's local size, mode and time taking precedence.
    pub(crate) async fn stat(&self, path: &RemotePath) -> Result<FileAttr, Errno> {
        let ino = self.inodes.lock().expect("inodes").ino(path);
        if let Some(f) = self.open_file(ino) {
            let st = f.lock().await;
            if !st.unlinked {
                return Ok(self.open_attr(ino, &st));
            }
        }
        let e = self.client.stat(path).await.map_err(|e| log_err("stat", &e, errno_of(&e)))?;
        Ok(self.attr(ino, &e))
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
        let st = FileState::new(manifest, entry, &self.opts).map_err(|e| log_err("staging", &e, file_errno(&e)))?;
        let f = Arc::new(AsyncMutex::new(st));
        // Another task may have loaded it meanwhile: keep the first.
        Ok(self.files.lock().expect("files").entry(ino).or_insert(f).clone())
    }

    pub(crate) async fn flush_file(&self, ino: u64, f: &OpenFile) -> Result<(), Errno> {
        let path = self.inodes.lock().expect("inodes").path(ino);
        let mut st = f.lock().await;
        st.flush(&self.client, &self.cache, path.as_ref(), &self.opts)
            .await
            .map_err(|e| log_err("flush", &e, file_errno(&e)))
    }

    /// Called when the last handle closes (or a setattr on a closed file is done).
    pub(crate) fn close_if_unused(&self, ino: u64) {
        let mut files = self.files.lock().expect("files");
        let unused = files.get(&ino).is_some_and(|f| f.try_lock().is_ok_and(|st| st.opens == 0 && !st.is_dirty()));
        if unused {
            files.remove(&ino);
        }
    }

    /// Flushes every open file: on unmount, nothing written is lost.
    pub(crate) async fn flush_all(&self) {
        let files: Vec<(u64, OpenFile)> =
            self.files.lock().expect("files").iter().map(|(i, f)| (*i, f.clone())).collect();
        for (ino, f) in files {
            if let Err(e) = self.flush_file(ino, &f).await {
                warn!(ino, "could not flush on unmount: {e:?}");
            }
        }
    }

    pub(crate) fn mark_unlinked(&self, inos: &[u64]) {
        for ino in inos {
            if let Some(f) = self.open_file(*ino) {
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
