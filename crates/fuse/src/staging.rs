//! Where an open file's writes wait for their upload: a sparse buffer laid out like the real
//! file (chunk i at offset i × chunk size), held in memory while what it holds is small and
//! moved to a file in the staging directory once it grows or must outlive the mount.
//!
//! Why memory first: most files opened on a mount are read, or written small and closed.
//! A staging file for each cost an inode, a truncate and an unlink per open (a fifth of a
//! small file's create-write-close on the mount, measured), and on ext4 freshly freed inodes
//! slow later allocations for minutes. A file's staged bytes stay in memory up to
//! [`MEMORY_PER_FILE`], and all open files' together up to [`MEMORY_IN_ALL`]; past either,
//! the buffer goes to disk and stays there.
//!
//! While a flush of staged bytes in memory is under way, they are also in the mount's
//! journal (see `journal`), so a mount killed during that upload loses nothing; when the
//! mount is told to stop uploading, they are written to a file with a record like any other
//! ([`Staging::to_disk`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Most bytes one open file stages in memory (up to its highest staged byte).
pub const MEMORY_PER_FILE: u64 = 64 * 1024;
/// Most bytes all open files stage in memory together.
pub const MEMORY_IN_ALL: u64 = 32 * 1024 * 1024;

/// Bytes staged in memory by every open file of this process.
static IN_MEMORY: AtomicU64 = AtomicU64::new(0);

pub struct Staging {
    /// The file this staging lives in, or will once it moves to disk.
    path: PathBuf,
    /// The staged file's length: reads past what memory holds, below it, are zeros.
    len: u64,
    place: Place,
}

enum Place {
    /// Bytes from offset 0; everything past them up to `len` reads as zeros.
    Memory(Vec<u8>),
    Disk(File),
}

impl Staging {
    /// Empty staging `len` bytes long (all zeros), in memory; `path` is where it goes if it
    /// moves to disk, and must not exist.
    pub fn new(path: PathBuf, len: u64) -> Staging {
        Staging { path, len, place: Place::Memory(Vec::new()) }
    }

    /// The staging file a previous mount left at `path`.
    pub fn open(path: PathBuf) -> std::io::Result<Staging> {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let len = f.metadata()?.len();
        Ok(Staging { path, len, place: Place::Disk(f) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn on_disk(&self) -> bool {
        matches!(self.place, Place::Disk(_))
    }

    /// What memory holds, from offset 0 (the rest up to the length is zeros); `None` on disk.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match &self.place {
            Place::Memory(v) => Some(v),
            Place::Disk(_) => None,
        }
    }

    /// Fills `buf` from `offset`; the range must lie within the staged length.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|&e| e <= self.len);
        if end.is_none() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past the staged length"));
        }
        match &self.place {
            Place::Disk(f) => f.read_exact_at(buf, offset),
            Place::Memory(v) => {
                let held = (v.len() as u64).saturating_sub(offset).min(buf.len() as u64) as usize;
                if held > 0 {
                    buf[..held].copy_from_slice(&v[offset as usize..offset as usize + held]);
                }
                buf[held..].fill(0);
                Ok(())
            }
        }
    }

    /// Writes `data` at `offset`, growing the staged length as a file would.
    pub fn write_all_at(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let end = offset + data.len() as u64;
        if let Place::Memory(v) = &self.place {
            if end > MEMORY_PER_FILE || !reserve(end.saturating_sub(v.len() as u64)) {
                self.to_disk()?;
            }
        }
        match &mut self.place {
            Place::Disk(f) => f.write_all_at(data, offset)?,
            Place::Memory(v) => {
                if v.len() < end as usize {
                    v.resize(end as usize, 0);
                }
                v[offset as usize..end as usize].copy_from_slice(data);
            }
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Cuts or extends the staged length; bytes past a cut read as zeros if it grows again.
    pub fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        match &mut self.place {
            Place::Disk(f) => f.set_len(len)?,
            Place::Memory(v) => {
                if (v.len() as u64) > len {
                    release(v.len() as u64 - len);
                    v.truncate(len as usize);
                }
            }
        }
        self.len = len;
        Ok(())
    }

    /// Moves what memory holds into a new file at `path` (nothing if it is there already).
    pub fn to_disk(&mut self) -> std::io::Result<()> {
        let Place::Memory(v) = &self.place else {
            return Ok(());
        };
        let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&self.path)?;
        f.set_len(self.len)?;
        f.write_all_at(v, 0)?;
        release(v.len() as u64);
        self.place = Place::Disk(f);
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Place::Memory(v) = &self.place {
            release(v.len() as u64);
        }
    }
}

/// Takes `bytes` from the shared memory budget, or says there is not enough left.
fn reserve(bytes: u64) -> bool {
    IN_MEMORY
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            held.checked_add(bytes).filter(|&total| total <= MEMORY_IN_ALL)
        })
        .is_ok()
}

fn release(bytes: u64) {
    IN_MEMORY.fetch_sub(bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory budget is one per process: these tests take turns with it.
    static BUDGET: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn dir() -> (tempfile::TempDir, std::sync::MutexGuard<'static, ()>) {
        (tempfile::tempdir().unwrap(), BUDGET.lock().unwrap_or_else(|e| e.into_inner()))
    }

    #[test]
    fn small_staging_stays_in_memory_and_reads_like_a_sparse_file() {
        let (d, _turn) = dir();
        let mut s = Staging::new(d.path().join("s"), 10_000);
        s.write_all_at(b"abc", 100).unwrap();
        let mut buf = vec![7u8; 200];
        s.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[100..103], b"abc");
        assert!(buf[..100].iter().chain(&buf[103..]).all(|&b| b == 0));
        // Past what memory holds, up to the length: zeros; past the length: an error.
        let mut tail = vec![7u8; 100];
        s.read_exact_at(&mut tail, 9_900).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
        assert!(s.read_exact_at(&mut tail, 9_901).is_err());
        assert!(!s.on_disk() && !d.path().join("s").exists(), "no file for a small staging");
        // A cut forgets the bytes past it, even if the length grows again.
        s.set_len(101).unwrap();
        s.set_len(500).unwrap();
        s.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[100..103], b"a\0\0");
    }

    #[test]
    fn staging_past_the_per_file_share_moves_to_disk_with_what_it_held() {
        let (d, _turn) = dir();
        let path = d.path().join("s");
        let mut s = Staging::new(path.clone(), 0);
        s.write_all_at(b"head", 0).unwrap();
        s.write_all_at(b"tail", MEMORY_PER_FILE).unwrap();
        assert!(s.on_disk() && path.exists());
        assert_eq!(s.len(), MEMORY_PER_FILE + 4);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MEMORY_PER_FILE + 4);
        let mut buf = [0u8; 4];
        s.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"head");
        s.read_exact_at(&mut buf, MEMORY_PER_FILE).unwrap();
        assert_eq!(&buf, b"tail");
        let again = Staging::open(path).unwrap();
        assert_eq!(again.len(), MEMORY_PER_FILE + 4);
    }

    #[test]
    fn memory_staging_is_bounded_across_open_files() {
        let (d, _turn) = dir();
        // Each holds its whole share; past the shared budget the rest go to disk.
        let n = (MEMORY_IN_ALL / MEMORY_PER_FILE) as usize + 8;
        let mut all = Vec::new();
        for i in 0..n {
            let mut s = Staging::new(d.path().join(format!("s{i}")), 0);
            s.write_all_at(&vec![1u8; MEMORY_PER_FILE as usize], 0).unwrap();
            all.push(s);
        }
        let on_disk = all.iter().filter(|s| s.on_disk()).count();
        assert_eq!(on_disk, 8, "past the budget, staging goes to disk");
        assert!(IN_MEMORY.load(Ordering::Relaxed) <= MEMORY_IN_ALL);
        drop(all);
        let mut s = Staging::new(d.path().join("after"), 0);
        s.write_all_at(b"x", 0).unwrap();
        assert!(!s.on_disk(), "the budget comes back when staging is dropped");
    }
}
