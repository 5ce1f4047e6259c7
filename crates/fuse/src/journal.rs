//! Staged writes held in memory (see `staging`), kept on disk while their flush is under
//! way, so that a mount killed in the middle of a close's upload loses nothing: the next
//! mount uploads them as it does a staging file with a record (see `pending`).
//!
//! One file per mount, `STAGING_DIR/journal`, appended to without fsync (like the records
//! of staging files: it is there for a crash of the mount, not of the machine). A flush
//! appends an entry with the record and the staged bytes before its upload and a done mark
//! after its commit; the file is cut back to its header whenever no flush it holds is
//! under way, so it stays small. What the entries cost is a write to an open file, where a
//! record file of its own costs two inodes (the record and its temp file) per small file.
//!
//! Format, version 1: the header `swarmfs-journal 1\n`, then entries, little-endian:
//! `1u8, seq u64, record length u32, record (JSON, as in pending), data length u64, data`
//! (the staged bytes from offset 0; the rest up to the record's size is zeros), or
//! `2u8, seq u64` (that flush committed, or failed and left its writes with the open file).
//! A torn last entry (the mount died writing it) is ignored: its flush had not started. An
//! entry the disk had no room for is cut off again at once (its flush fails with the disk's
//! error), so a torn entry is only ever the last.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::pending::PendingRecord;

const HEADER: &[u8] = b"swarmfs-journal 1\n";
const NAME: &str = "journal";
/// Where a journal of a version this build does not know is kept, untouched.
pub const UNKNOWN: &str = "journal.unknown";
const BEGIN: u8 = 1;
const DONE: u8 = 2;

pub struct Journal {
    state: Mutex<State>,
}

struct State {
    file: File,
    next_seq: u64,
    /// Flushes begun and not yet done.
    under_way: usize,
}

impl State {
    /// Appends a whole entry or nothing: a write that fails part-way (a full disk) is cut
    /// off again, so the entries after it are still read by a replay (a torn entry ends it).
    fn append(&mut self, entry: &[u8]) -> std::io::Result<()> {
        let before = self.file.metadata()?.len();
        self.file.write_all(entry).inspect_err(|_| {
            let _ = self.file.set_len(before);
        })
    }
}

impl Journal {
    /// A new, empty journal in `dir` (a previous one must have been replayed first).
    pub fn create(dir: &Path) -> std::io::Result<Journal> {
        let path = dir.join(NAME);
        std::fs::write(&path, HEADER)?;
        // Appending: after a cut back to the header, the next entry goes right after it.
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Journal { state: Mutex::new(State { file, next_seq: 1, under_way: 0 }) })
    }

    /// Notes that a flush of `record` with these staged bytes is starting; returns the
    /// entry's number for [`Journal::done`].
    pub fn begin(&self, record: &PendingRecord, data: &[u8]) -> std::io::Result<u64> {
        let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut st = self.state.lock().expect("journal");
        let seq = st.next_seq;
        let mut entry = Vec::with_capacity(1 + 8 + 4 + json.len() + 8 + data.len());
        entry.push(BEGIN);
        entry.extend_from_slice(&seq.to_le_bytes());
        entry.extend_from_slice(&(json.len() as u32).to_le_bytes());
        entry.extend_from_slice(&json);
        entry.extend_from_slice(&(data.len() as u64).to_le_bytes());
        entry.extend_from_slice(data);
        st.append(&entry)?;
        st.next_seq += 1;
        st.under_way += 1;
        Ok(seq)
    }

    /// The flush `seq` is over: committed, or failed with its writes still in the open file.
    pub fn done(&self, seq: u64) {
        let mut st = self.state.lock().expect("journal");
        st.under_way = st.under_way.saturating_sub(1);
        let r = if st.under_way == 0 {
            st.file.set_len(HEADER.len() as u64)
        } else {
            let mut entry = [0u8; 9];
            entry[0] = DONE;
            entry[1..].copy_from_slice(&seq.to_le_bytes());
            st.append(&entry)
        };
        if let Err(e) = r {
            // A replay would upload that flush's bytes again; last writer wins, as always.
            tracing::warn!("staging journal: {e}");
        }
    }

    /// Turns what a previous mount's journal in `dir` holds of flushes it never finished
    /// into staging files with records (see `pending`), then removes the journal. Returns
    /// how many.
    pub fn replay(dir: &Path) -> std::io::Result<usize> {
        let path = dir.join(NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let Some(mut rest) = bytes.strip_prefix(HEADER) else {
            tracing::warn!(journal = %path.display(), "staging journal of an unknown version; left alone");
            std::fs::rename(&path, dir.join(UNKNOWN))?;
            return Ok(0);
        };
        let mut begun: Vec<(u64, PendingRecord, &[u8])> = Vec::new();
        let mut done = std::collections::HashSet::new();
        while let Some((&kind, tail)) = rest.split_first() {
            let Some((seq, tail)) = split_u64(tail) else { break };
            match kind {
                DONE => {
                    done.insert(seq);
                    rest = tail;
                }
                BEGIN => {
                    let Some((record, data, after)) = begin_entry(tail) else { break };
                    begun.push((seq, record, data));
                    rest = after;
                }
                _ => break,
            }
        }
        let mut n = 0;
        for (seq, record, data) in begun.into_iter().filter(|(s, ..)| !done.contains(s)) {
            let staging = write_staging(dir, seq, &record, data)?;
            record.write(&staging, false)?;
            n += 1;
        }
        std::fs::remove_file(&path)?;
        Ok(n)
    }
}

/// A little-endian u64 and what follows it, or `None` if `b` is shorter.
fn split_u64(b: &[u8]) -> Option<(u64, &[u8])> {
    let (n, rest) = b.split_at_checked(8)?;
    Some((u64::from_le_bytes(n.try_into().ok()?), rest))
}

/// A begin entry after its kind and seq: the record, the data and what follows, or `None`
/// if it is torn.
fn begin_entry(b: &[u8]) -> Option<(PendingRecord, &[u8], &[u8])> {
    let (json_len, b) = b.split_at_checked(4)?;
    let (json, b) = b.split_at_checked(u32::from_le_bytes(json_len.try_into().ok()?) as usize)?;
    let record = serde_json::from_slice(json).ok()?;
    let (data_len, b) = split_u64(b)?;
    let (data, after) = b.split_at_checked(usize::try_from(data_len).ok()?)?;
    Some((record, data, after))
}

/// A new staging file in `dir` holding `data` and zeros up to the record's size; never one
/// an earlier replay left that is still waiting for its upload.
fn write_staging(dir: &Path, seq: u64, record: &PendingRecord, data: &[u8]) -> std::io::Result<PathBuf> {
    for attempt in 0u32.. {
        let path = dir.join(format!("journal-{}-{seq}-{attempt}", std::process::id()));
        let mut f = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        f.write_all(data)?;
        f.set_len(record.size)?;
        return Ok(path);
    }
    unreachable!("some name is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, size: u64) -> PendingRecord {
        PendingRecord {
            version: crate::pending::RECORD_VERSION,
            path: path.into(),
            size,
            mode: 0o644,
            mtime_ms: 1,
            chunk_size: 1 << 20,
            dirty: vec![0],
        }
    }

    #[test]
    fn a_flush_cut_short_is_replayed_as_a_staging_file_with_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        let finished = j.begin(&record("/done", 3), b"old").unwrap();
        let cut = j.begin(&record("/cut", 10), b"abc").unwrap();
        j.done(finished);
        let _ = cut; // the mount dies here
        drop(j);
        assert_eq!(Journal::replay(dir.path()).unwrap(), 1);
        let left = crate::pending::collect_left_over(dir.path()).unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        let (staging, r) = &left[0];
        assert_eq!(r, &record("/cut", 10));
        assert_eq!(std::fs::read(staging).unwrap(), b"abc\0\0\0\0\0\0\0");
        assert!(!dir.path().join(NAME).exists(), "the journal is gone once replayed");
    }

    #[test]
    fn the_journal_is_cut_back_when_no_flush_is_under_way_and_a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path()).unwrap();
        let a = j.begin(&record("/a", 1), b"a").unwrap();
        j.done(a);
        assert_eq!(std::fs::metadata(dir.path().join(NAME)).unwrap().len(), HEADER.len() as u64);
        j.begin(&record("/b", 1), b"b").unwrap();
        drop(j);
        // The mount died while writing a second entry: its first bytes only.
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join(NAME)).unwrap();
        f.write_all(&[BEGIN, 9, 0, 0]).unwrap();
        assert_eq!(Journal::replay(dir.path()).unwrap(), 1);
        let left = crate::pending::collect_left_over(dir.path()).unwrap();
        assert_eq!(left.iter().map(|(_, r)| r.path.as_str()).collect::<Vec<_>>(), ["/b"]);
    }

    #[test]
    fn a_journal_of_another_version_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NAME), b"swarmfs-journal 9\nwhatever").unwrap();
        assert_eq!(Journal::replay(dir.path()).unwrap(), 0);
        crate::pending::collect_left_over(dir.path()).unwrap();
        assert!(dir.path().join(UNKNOWN).exists());
    }

    /// A tmpfs of `size` mounted on a new directory, unmounted on drop (needs root, as the
    /// mount tests do).
    struct SmallDisk(tempfile::TempDir);

    impl SmallDisk {
        fn new(size: &str) -> SmallDisk {
            let dir = tempfile::tempdir().unwrap();
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "mounting a tmpfs (the fuse crate's tests run as root)");
            SmallDisk(dir)
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    #[test]
    fn an_entry_the_disk_had_no_room_for_leaves_no_torn_bytes_before_the_next() {
        let disk = SmallDisk::new("64k");
        let dir = disk.0.path();
        let j = Journal::create(dir).unwrap();
        let first = j.begin(&record("/first", 3), b"one").unwrap();
        let err = j.begin(&record("/big", 200_000), &vec![7u8; 200_000]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        let third = j.begin(&record("/third", 5), b"three").unwrap();
        assert_eq!((first, third), (1, 2), "the failed entry took no number");
        drop(j); // the mount dies with both flushes under way
        assert_eq!(Journal::replay(dir).unwrap(), 2, "both whole entries are read back");
        let left = crate::pending::collect_left_over(dir).unwrap();
        let mut paths: Vec<&str> = left.iter().map(|(_, r)| r.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["/first", "/third"]);
    }
}
