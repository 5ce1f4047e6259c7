//! What repair and `health` read: every committed file with its R, its chunks and their
//! holders, in one consistent snapshot.

use std::collections::HashMap;

use swarmfs_proto::{ChunkId, ChunkPlacement, NodeId};

use super::sql::Row;
use super::Db;
use crate::TrackerError;

/// One committed file version.
pub struct ViewFile {
    pub path: String,
    pub size: u64,
    /// Durable copies wanted (R); 0 for a file shared from a member's disk, not stored.
    pub replicas: u8,
    /// Indices into [`RepairView::chunks`].
    pub chunks: Vec<u32>,
}

/// Files, the chunks they reference (each once), and each chunk's recorded holders.
#[derive(Default)]
pub struct RepairView {
    pub files: Vec<ViewFile>,
    pub chunks: Vec<ChunkId>,
    /// Per chunk: the most copies any file referencing it wants.
    pub wanted: Vec<u8>,
    /// Per chunk: about how many bytes it is (its file's size over its chunk count).
    pub approx_len: Vec<u64>,
    pub holders: Vec<Vec<NodeId>>,
}

impl Db {
    /// The snapshot repair plans from. Memory is proportional to the number of chunk
    /// references; fine for the swarms this tracker serves (see ARCHITECTURE.md, "Repair").
    pub fn repair_view(&mut self) -> Result<RepairView, TrackerError> {
        let mut tx = self.begin()?;
        let mut view = RepairView::default();
        let mut index: HashMap<ChunkId, u32> = HashMap::new();
        let mut current: Option<Vec<u8>> = None;
        tx.each(
            "SELECT e.lineage, e.path, e.size, e.replicas, e.chunks, r.chunk
             FROM entries AS e JOIN refs AS r ON r.lineage = e.lineage ORDER BY e.lineage",
            &[],
            &mut |row: Row| {
                let file_id = row.blob(0)?;
                let size = row.int(2)?.max(0) as u64;
                let replicas = row.int(3)?.clamp(0, u8::MAX as i64) as u8;
                let count = row.int(4)?.max(1) as u64;
                if current.as_ref() != Some(&file_id) {
                    view.files.push(ViewFile { path: row.text(1)?, size, replicas, chunks: Vec::new() });
                    current = Some(file_id);
                }
                let Ok(chunk) = ChunkId::from_slice(&row.blob(5)?) else { return Ok(()) };
                let i = *index.entry(chunk).or_insert_with(|| {
                    view.chunks.push(chunk);
                    view.wanted.push(0);
                    view.approx_len.push(0);
                    view.holders.push(Vec::new());
                    (view.chunks.len() - 1) as u32
                });
                view.wanted[i as usize] = view.wanted[i as usize].max(replicas);
                view.approx_len[i as usize] = view.approx_len[i as usize].max(size.div_ceil(count));
                view.files.last_mut().expect("pushed above").chunks.push(i);
                Ok(())
            },
        )?;
        tx.each("SELECT chunk, node FROM locations", &[], &mut |row: Row| {
            if let (Ok(chunk), Ok(node)) = (ChunkId::from_slice(&row.blob(0)?), NodeId::from_slice(&row.blob(1)?)) {
                if let Some(&i) = index.get(&chunk) {
                    view.holders[i as usize].push(node);
                }
            }
            Ok(())
        })?;
        Ok(view)
    }

    /// The (chunk, holder) pairs among `placements` whose copy the collector deleted.
    pub fn collected_among(&mut self, placements: &[ChunkPlacement]) -> Result<Vec<(ChunkId, NodeId)>, TrackerError> {
        let mut tx = self.begin()?;
        let mut out = Vec::new();
        for p in placements {
            for n in &p.holders {
                if Self::was_collected(&mut *tx, &p.chunk, n)? {
                    out.push((p.chunk, *n));
                }
            }
        }
        Ok(out)
    }
}
