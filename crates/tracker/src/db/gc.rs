//! Garbage collection state: which chunks each file references, and the queue of chunks
//! that lost their last reference (see ARCHITECTURE.md, "Garbage collection").
//!
//! A file's references are kept under its lineage (the id of its first version, kept by
//! every later one and by renames), so a commit changes only the references that differ
//! from the last version's: a small write to a large file costs a few rows, not one per
//! chunk.

use swarmfs_proto::{ChunkId, ChunkPlacement, NodeId, RemotePath};

use super::sql::{vals, Dialect, Tx, Value};
use super::{now_ms, placeholders, Db, GROUP};
use crate::TrackerError;

/// How long the collector's claim on the chunks it is deleting holds if it is never
/// answered (its tracker died mid-round): then another tracker's collector takes them up,
/// and commits naming them stop waiting.
const CLAIM_MS: i64 = 60_000;

impl Db {
    pub fn set_gc_delay(&mut self, delay: std::time::Duration) {
        self.gc_delay_ms = delay.as_millis() as i64;
    }

    /// Drops every reference of the file at `lineage` (removed, or replaced by a rename over
    /// it); chunks left unreferenced are queued for deletion.
    pub(super) fn release(tx: &mut dyn Tx, lineage: &[u8], delay_ms: i64) -> Result<(), TrackerError> {
        let chunks = tx.query("SELECT chunk FROM refs WHERE lineage = ?1", vals![lineage])?;
        tx.exec("DELETE FROM refs WHERE lineage = ?1", vals![lineage])?;
        tx.exec("DELETE FROM manifest_deltas WHERE lineage = ?1", vals![lineage])?;
        let chunks: Vec<Vec<u8>> = chunks.into_iter().map(|c| c.blob(0)).collect::<Result<_, _>>()?;
        Self::queue_unreferenced(tx, chunks, delay_ms)
    }

    /// Drops the references of the file at `lineage` to `chunks` only (what a new version no
    /// longer uses); those left unreferenced are queued for deletion.
    pub(super) fn release_chunks(
        tx: &mut dyn Tx,
        lineage: &[u8],
        chunks: &[ChunkId],
        delay_ms: i64,
    ) -> Result<(), TrackerError> {
        for group in chunks.chunks(GROUP) {
            let mut params = vec![Value::Blob(lineage.to_vec())];
            params.extend(group.iter().map(|c| Value::Blob(c.as_bytes().to_vec())));
            tx.exec(
                &format!("DELETE FROM refs WHERE lineage = ?1 AND chunk IN ({})", placeholders(2, group.len())),
                &params,
            )?;
        }
        Self::queue_unreferenced(tx, chunks.iter().map(|c| c.as_bytes().to_vec()).collect(), delay_ms)
    }

    /// Queues those of `chunks` that no file references any more, due `delay_ms` from now.
    fn queue_unreferenced(tx: &mut dyn Tx, chunks: Vec<Vec<u8>>, delay_ms: i64) -> Result<(), TrackerError> {
        let due = now_ms() + delay_ms;
        for c in chunks {
            let used = tx.query_opt("SELECT 1 FROM refs WHERE chunk = ?1 LIMIT 1", vals![c.as_slice()])?.is_some();
            if !used {
                tx.exec(
                    "INSERT INTO gc_queue (chunk, due_ms) VALUES (?1, ?2)
                     ON CONFLICT (chunk) DO UPDATE SET due_ms = excluded.due_ms",
                    vals![c, due],
                )?;
            }
        }
        Ok(())
    }

    /// Releases every file at `path` or (for a directory) below it.
    pub(super) fn release_under(tx: &mut dyn Tx, path: &RemotePath, delay_ms: i64) -> Result<(), TrackerError> {
        let ids = tx.query(
            "SELECT lineage FROM entries WHERE lineage IS NOT NULL
             AND (path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/')",
            vals![path.as_str()],
        )?;
        for id in ids {
            Self::release(tx, &id.blob(0)?, delay_ms)?;
        }
        Ok(())
    }

    /// Chunks whose deletion is due and that nothing references again, with their holders,
    /// claimed for this collector until answered ([`Db::gc_release`]) or CLAIM_MS.
    ///
    /// With several trackers, a commit naming one of these chunks and this pick exclude each
    /// other through the queue's rows: the commit locks the rows of its chunks (see
    /// `refuse_claimed`) and waits out a claim; this pick skips rows a commit holds, and
    /// checks for references after it has the lock, so either the commit lands first (the
    /// chunk is referenced and leaves the queue) or the claim does (the commit waits for the
    /// deletion to be recorded, and does not count deleted copies).
    pub fn gc_due(&mut self, limit: usize) -> Result<Vec<(ChunkId, Vec<NodeId>)>, TrackerError> {
        let mut tx = self.begin()?;
        let now = now_ms();
        let lock = if tx.dialect() == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let due = tx.query(
            &format!(
                "SELECT chunk FROM gc_queue WHERE due_ms <= ?1 AND claimed_until_ms <= ?1 ORDER BY due_ms LIMIT ?2{lock}"
            ),
            vals![now, limit as i64],
        )?;
        let mut out = Vec::new();
        for c in due {
            let c = c.blob(0)?;
            // Referenced again since (the same content was stored anew): not garbage any more.
            if tx.query_opt("SELECT 1 FROM refs WHERE chunk = ?1 LIMIT 1", vals![c.as_slice()])?.is_some() {
                tx.exec("DELETE FROM gc_queue WHERE chunk = ?1", vals![c.as_slice()])?;
                continue;
            }
            let Ok(id) = ChunkId::from_slice(&c) else { continue };
            tx.exec("UPDATE gc_queue SET claimed_until_ms = ?2 WHERE chunk = ?1", vals![c.as_slice(), now + CLAIM_MS])?;
            out.push((id, Self::holders(&mut *tx, &c)?));
        }
        tx.commit()?;
        Ok(out)
    }

    /// The collector is done with `chunks` (deleted or not): commits naming them go on, and
    /// those still queued (a holder was down) are picked again when due.
    pub fn gc_release(&mut self, chunks: &[ChunkId]) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        for group in chunks.chunks(GROUP) {
            let ids: Vec<Value> = group.iter().map(|c| Value::Blob(c.as_bytes().to_vec())).collect();
            tx.exec(
                &format!("UPDATE gc_queue SET claimed_until_ms = 0 WHERE chunk IN ({})", placeholders(1, ids.len())),
                &ids,
            )?;
        }
        tx.commit()
    }

    /// Locks the queue rows of the chunks a commit adds to a file (PostgreSQL; SQLite's
    /// writer lock does the same) and refuses while the collector has any of them claimed.
    /// Chunks the file's last version already referenced need no check: the collector never
    /// claims a referenced chunk.
    pub(super) fn refuse_claimed(tx: &mut dyn Tx, chunks: &[ChunkId]) -> Result<(), TrackerError> {
        let lock = if tx.dialect() == Dialect::Postgres { " FOR UPDATE" } else { "" };
        let now = now_ms();
        for group in chunks.chunks(GROUP) {
            let ids: Vec<Value> = group.iter().map(|c| Value::Blob(c.as_bytes().to_vec())).collect();
            let rows = tx.query(
                &format!(
                    "SELECT chunk, claimed_until_ms FROM gc_queue WHERE chunk IN ({}){lock}",
                    placeholders(1, ids.len())
                ),
                &ids,
            )?;
            for r in rows {
                if r.int(1)? > now {
                    let chunk = ChunkId::from_slice(&r.blob(0)?).map(|c| c.short()).unwrap_or_default();
                    return Err(TrackerError::BeingCollected(chunk));
                }
            }
        }
        Ok(())
    }

    /// `node` deleted (or no longer has) `chunks`; a chunk held nowhere leaves the queue.
    /// The deletion is remembered until the node stores the chunk again, so a commit that
    /// still names that copy (an upload slower than the GC delay) cannot count it.
    pub fn gc_done(&mut self, node: &NodeId, chunks: &[ChunkId]) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        let now = now_ms();
        for c in chunks {
            let (c, n) = (c.as_bytes().as_slice(), node.as_bytes().as_slice());
            tx.exec("DELETE FROM locations WHERE chunk = ?1 AND node = ?2", vals![c, n])?;
            tx.exec(
                "INSERT INTO collected (chunk, node, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (chunk, node) DO UPDATE SET at_ms = excluded.at_ms",
                vals![c, n, now],
            )?;
            tx.exec(
                "DELETE FROM gc_queue WHERE chunk = ?1 AND NOT EXISTS (SELECT 1 FROM locations WHERE chunk = ?1)",
                vals![c],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Placements without the holders whose copy the collector deleted; a chunk that named
    /// holders and has none left refuses the commit.
    pub(super) fn without_collected(
        tx: &mut dyn Tx,
        placements: &[ChunkPlacement],
    ) -> Result<Vec<ChunkPlacement>, TrackerError> {
        let mut out = Vec::with_capacity(placements.len());
        for p in placements {
            let mut holders = Vec::with_capacity(p.holders.len());
            for n in &p.holders {
                if !Self::was_collected(tx, &p.chunk, n)? {
                    holders.push(*n);
                }
            }
            if holders.is_empty() && !p.holders.is_empty() {
                return Err(TrackerError::Invalid(format!(
                    "chunk {} was collected as garbage before this commit (the upload took longer than the \
                     tracker's --gc-delay); nothing was committed: put the file again",
                    p.chunk.short()
                )));
            }
            out.push(ChunkPlacement { chunk: p.chunk, holders });
        }
        Ok(out)
    }

    /// Queues every chunk a peer holds that no file version references (an upload that
    /// failed or was abandoned before its commit), due `orphan_delay` from now: an upload
    /// still in progress has that long, at least, from storing a chunk to its commit. (A
    /// slower one is refused at its commit rather than made visible without its data.)
    /// Forgets deletions older than a week. Returns how many chunks were queued.
    /// Whether the collector deleted `node`'s copy of `chunk` (and it was not stored again).
    pub(super) fn was_collected(tx: &mut dyn Tx, chunk: &ChunkId, node: &NodeId) -> Result<bool, TrackerError> {
        Ok(tx
            .query_opt(
                "SELECT 1 FROM collected WHERE chunk = ?1 AND node = ?2",
                vals![chunk.as_bytes().as_slice(), node.as_bytes().as_slice()],
            )?
            .is_some())
    }

    pub fn queue_orphans(&mut self, orphan_delay: std::time::Duration) -> Result<usize, TrackerError> {
        let mut tx = self.begin()?;
        let n = tx.exec(
            "INSERT INTO gc_queue (chunk, due_ms)
             SELECT DISTINCT l.chunk, CAST(?1 AS BIGINT) FROM locations AS l
             WHERE NOT EXISTS (SELECT 1 FROM refs WHERE refs.chunk = l.chunk)
             ON CONFLICT DO NOTHING",
            vals![now_ms() + orphan_delay.as_millis() as i64],
        )?;
        tx.exec("DELETE FROM collected WHERE at_ms < ?1", vals![now_ms() - 7 * 24 * 3600 * 1000])?;
        tx.commit()?;
        Ok(n as usize)
    }

    /// A queued chunk with no known holder at all is simply dropped from the queue.
    pub fn gc_forget(&mut self, chunk: &ChunkId) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        tx.exec("DELETE FROM gc_queue WHERE chunk = ?1", vals![chunk.as_bytes().as_slice()])?;
        tx.commit()
    }
}
