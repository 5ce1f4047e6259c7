//! Staged writes that have not reached the swarm yet, kept across a stop of the mount.
//!
//! When a flush starts, the open file writes a record beside its staging file
//! (`STAGING.pending`, JSON): the remote path, size, mode, mtime, chunk size and which chunks
//! are dirty. The record is removed once the commit succeeds. A mount that stops before that
//! (a second Ctrl-C while flushing, a crash, kill -9) leaves the staging file and its record;
//! the next mount on the same home uploads them (`upload_left_over`), so nothing written is
//! lost. The staging file holds exactly the file's bytes at their offsets for dirty chunks
//! (and zeros past the old end), so the record plus the file's current manifest is enough to
//! finish the commit.
//!
//! The record's `version` is checked: a record of an unknown version is left alone, with a
//! warning, rather than misread.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped when the record's meaning changes.
pub const RECORD_VERSION: u32 = 1;
const SUFFIX: &str = "pending";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PendingRecord {
    pub version: u32,
    pub path: String,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: i64,
    pub chunk_size: u32,
    pub dirty: Vec<u64>,
}

/// Where the record of `staging` lives.
pub fn record_path(staging: &Path) -> PathBuf {
    let mut name = staging.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(SUFFIX);
    staging.with_file_name(name)
}

impl PendingRecord {
    /// Writes the record (temp + rename, so a reader never sees half of one); `durable`
    /// also fsyncs the record and the staging data, for a stop that must survive power loss.
    pub fn write(&self, staging: &Path, durable: bool) -> std::io::Result<()> {
        let path = record_path(staging);
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &json)?;
            if durable {
                f.sync_all()?;
                std::fs::File::open(staging)?.sync_data()?;
            }
        }
        std::fs::rename(&tmp, &path)?;
        if durable {
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }

    pub fn remove(staging: &Path) {
        let _ = std::fs::remove_file(record_path(staging));
    }
}

/// What a previous run left in the staging directory: records with their staging files.
/// Everything else there (staging files of flushes that never started, temp files) holds
/// nothing that was ever meant to be committed, and is deleted.
pub fn collect_left_over(dir: &Path) -> std::io::Result<Vec<(PathBuf, PendingRecord)>> {
    let mut records = Vec::new();
    let mut keep = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == SUFFIX) {
            let staging = p.with_extension("");
            let record = std::fs::read(&p).ok().and_then(|b| serde_json::from_slice::<PendingRecord>(&b).ok());
            match record {
                Some(r) if r.version == RECORD_VERSION && staging.exists() => {
                    keep.push(staging.clone());
                    keep.push(p);
                    records.push((staging, r));
                }
                Some(r) if r.version != RECORD_VERSION => {
                    tracing::warn!(record = %p.display(), version = r.version, "staged write of an unknown record version; left alone");
                    keep.push(staging);
                    keep.push(p);
                }
                _ => tracing::warn!(record = %p.display(), "unreadable staged-write record; discarded"),
            }
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        if !keep.contains(&e.path()) && e.file_name() != crate::journal::UNKNOWN {
            let _ = std::fs::remove_file(e.path());
        }
    }
    records.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> PendingRecord {
        PendingRecord {
            version: RECORD_VERSION,
            path: path.into(),
            size: 10,
            mode: 0o100644,
            mtime_ms: -5,
            chunk_size: 4096,
            dirty: vec![0],
        }
    }

    #[test]
    fn left_over_records_are_found_and_everything_else_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let kept = dir.path().join("open-1-1");
        std::fs::write(&kept, b"0123456789").unwrap();
        record("/a").write(&kept, true).unwrap();
        std::fs::write(dir.path().join("open-1-2"), b"never flushed").unwrap();
        let found = collect_left_over(dir.path()).unwrap();
        assert_eq!(found, vec![(kept.clone(), record("/a"))]);
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        assert_eq!(names, vec!["open-1-1", "open-1-1.pending"]);
        PendingRecord::remove(&kept);
        assert!(collect_left_over(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_record_of_another_version_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("open-1-1");
        std::fs::write(&staging, b"x").unwrap();
        PendingRecord { version: RECORD_VERSION + 1, ..record("/b") }.write(&staging, false).unwrap();
        assert!(collect_left_over(dir.path()).unwrap().is_empty());
        assert!(staging.exists() && record_path(&staging).exists(), "kept for a newer swarmfs");
    }
}
