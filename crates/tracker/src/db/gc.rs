//! Garbage collection state: which chunks each file version references, and the queue of
//! chunks that lost their last reference (see ARCHITECTURE.md, "Garbage collection").

use rusqlite::{params, Transaction};
use swarmfs_proto::{ChunkId, ChunkPlacement, NodeId, RemotePath};

use super::{now_ms, Db};
use crate::TrackerError;

impl Db {
    pub fn set_gc_delay(&mut self, delay: std::time::Duration) {
        self.gc_delay_ms = delay.as_millis() as i64;
    }

    /// Drops a file version's references; chunks left unreferenced are queued for deletion.
    pub(super) fn release(tx: &Transaction<'_>, file_id: &[u8], delay_ms: i64) -> Result<(), TrackerError> {
        let chunks: Vec<Vec<u8>> = tx
            .prepare_cached("SELECT chunk FROM refs WHERE file_id = ?1")?
            .query_map([file_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM refs WHERE file_id = ?1", [file_id])?;
        let due = now_ms() + delay_ms;
        for c in chunks {
            let used: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM refs WHERE chunk = ?1)", [&c], |r| r.get(0))?;
            if !used {
                tx.execute("INSERT OR REPLACE INTO gc_queue (chunk, due_ms) VALUES (?1, ?2)", params![c, due])?;
            }
        }
        Ok(())
    }

    /// Releases every file version at `path` or (for a directory) below it.
    pub(super) fn release_under(tx: &Transaction<'_>, path: &RemotePath, delay_ms: i64) -> Result<(), TrackerError> {
        let ids: Vec<Vec<u8>> = tx
            .prepare(
                "SELECT file_id FROM entries WHERE file_id IS NOT NULL
                 AND (path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/')",
            )?
            .query_map([path.as_str()], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            Self::release(tx, &id, delay_ms)?;
        }
        Ok(())
    }

    /// Chunks whose deletion is due and that nothing references again, with their holders.
    pub fn gc_due(&mut self, limit: usize) -> Result<Vec<(ChunkId, Vec<NodeId>)>, TrackerError> {
        let tx = self.conn.transaction()?;
        // Referenced again since (the same content was stored anew): not garbage any more.
        tx.execute("DELETE FROM gc_queue WHERE EXISTS (SELECT 1 FROM refs WHERE refs.chunk = gc_queue.chunk)", [])?;
        let due: Vec<Vec<u8>> = tx
            .prepare("SELECT chunk FROM gc_queue WHERE due_ms <= ?1 LIMIT ?2")?
            .query_map(params![now_ms(), limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        {
            let mut holders = tx.prepare_cached("SELECT node FROM locations WHERE chunk = ?1")?;
            for c in due {
                let Ok(id) = ChunkId::from_slice(&c) else { continue };
                let nodes = holders
                    .query_map([&c], |r| r.get::<_, Vec<u8>>(0))?
                    .filter_map(|b| b.ok().and_then(|b| NodeId::from_slice(&b).ok()))
                    .collect();
                out.push((id, nodes));
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// `node` deleted (or no longer has) `chunks`; a chunk held nowhere leaves the queue.
    /// The deletion is remembered until the node stores the chunk again, so a commit that
    /// still names that copy (an upload slower than the GC delay) cannot count it.
    pub fn gc_done(&mut self, node: &NodeId, chunks: &[ChunkId]) -> Result<(), TrackerError> {
        let tx = self.conn.transaction()?;
        let now = now_ms();
        for c in chunks {
            tx.execute(
                "DELETE FROM locations WHERE chunk = ?1 AND node = ?2",
                params![c.as_bytes().as_slice(), node.as_bytes().as_slice()],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO collected (chunk, node, at_ms) VALUES (?1, ?2, ?3)",
                params![c.as_bytes().as_slice(), node.as_bytes().as_slice(), now],
            )?;
            tx.execute(
                "DELETE FROM gc_queue WHERE chunk = ?1 AND NOT EXISTS (SELECT 1 FROM locations WHERE chunk = ?1)",
                [c.as_bytes().as_slice()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Placements without the holders whose copy the collector deleted; a chunk that named
    /// holders and has none left refuses the commit.
    pub(super) fn without_collected(
        tx: &Transaction<'_>,
        placements: &[ChunkPlacement],
    ) -> Result<Vec<ChunkPlacement>, TrackerError> {
        let mut gone = tx.prepare_cached("SELECT EXISTS (SELECT 1 FROM collected WHERE chunk = ?1 AND node = ?2)")?;
        let mut out = Vec::with_capacity(placements.len());
        for p in placements {
            let mut holders = Vec::with_capacity(p.holders.len());
            for n in &p.holders {
                let collected: bool =
                    gone.query_row(params![p.chunk.as_bytes().as_slice(), n.as_bytes().as_slice()], |r| r.get(0))?;
                if !collected {
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
    pub fn queue_orphans(&mut self, orphan_delay: std::time::Duration) -> Result<usize, TrackerError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO gc_queue (chunk, due_ms)
             SELECT DISTINCT l.chunk, ?1 FROM locations AS l
             WHERE NOT EXISTS (SELECT 1 FROM refs WHERE refs.chunk = l.chunk)",
            [now_ms() + orphan_delay.as_millis() as i64],
        )?;
        tx.execute("DELETE FROM collected WHERE at_ms < ?1", [now_ms() - 7 * 24 * 3600 * 1000])?;
        tx.commit()?;
        Ok(n)
    }

    /// A queued chunk with no known holder at all is simply dropped from the queue.
    pub fn gc_forget(&mut self, chunk: &ChunkId) -> Result<(), TrackerError> {
        self.conn.execute("DELETE FROM gc_queue WHERE chunk = ?1", [chunk.as_bytes().as_slice()])?;
        Ok(())
    }
}
