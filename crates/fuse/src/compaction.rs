//! Compaction off the fsync path. A chunk whose slices pass their budget is stored whole
//! again (compacted). Done inside the flush that crossed the budget, it made that flush the
//! slowest: in a random 4 KiB write job with an fsync every 32 writes, a third of the
//! flushes also stored a whole chunk (twice, R=2) and took 53 % of all flush time, while
//! the machine's two cores were half idle.
//!
//! Now the flush commits the chunk's new slices like any other, and right after the commit
//! the chunk's current content (which staging holds) is stored on a task of its own. A later
//! flush swaps it in: the chunk's entry becomes the new chunk and the slices it folds in
//! (the first `slices` of that chunk's slices when it was read) leave the manifest; slices
//! written since stay, laid over it. Nothing waits for the task but a flush whose file is
//! past the hard limits, and the last close (which commits it, so a closed file is left
//! compact). One task per open file at a time, its chunks counted in the client's transfer
//! budget; dropping the file aborts it (what it stored is then an orphan the tracker
//! collects).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use swarmfs_client::budget::Held;
use swarmfs_client::{Client, ClientError};
use swarmfs_core::ChunkRef;
use swarmfs_proto::{ChunkId, NodeId};
use tracing::Instrument;

use crate::file::LogProgress;
use crate::MountOptions;

/// A stored chunk older than this is not swapped in: the tracker refuses a commit naming a
/// chunk stored longer than its orphan delay ago (an hour by default; seconds in tests).
const MAX_AGE: Duration = Duration::from_secs(30);

/// Chunks one compaction stores at most (each held in memory until stored).
pub(crate) const MAX_BATCH: usize = 4;

/// What a compacted chunk replaces: chunk `index` as it was when read.
pub(crate) struct Fold {
    /// The chunk the slices were laid over.
    pub base: ChunkId,
    /// How many of the chunk's slices (its oldest) the compacted chunk holds.
    pub slices: usize,
}

/// A chunk stored by the task.
pub(crate) struct Compacted {
    pub index: u64,
    pub chunk: ChunkRef,
    pub holders: Vec<NodeId>,
}

/// One chunk to compact: its index, current content, and the budget it holds.
pub(crate) struct Job {
    pub index: u64,
    pub content: Vec<u8>,
    pub held: Held,
    pub fold: Fold,
}

pub(crate) struct Compaction {
    task: tokio::task::JoinHandle<Result<Vec<Compacted>, ClientError>>,
    /// Chunks still worth swapping in (one rewritten whole or cut off since is dropped).
    folds: HashMap<u64, Fold>,
    started: Instant,
}

impl Drop for Compaction {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Compaction {
    pub fn start(client: Arc<Client>, opts: &MountOptions, jobs: Vec<Job>) -> Compaction {
        let mut folds = HashMap::with_capacity(jobs.len());
        let mut contents = Vec::with_capacity(jobs.len());
        for Job { index, content, held, fold } in jobs {
            folds.insert(index, fold);
            contents.push((index, content, held));
        }
        let (replicas, min_replicas, policy) = (opts.replicas, opts.min_replicas, opts.policy);
        let span = tracing::debug_span!("compaction", chunks = ?folds.keys().collect::<Vec<_>>());
        let task = tokio::spawn(
            async move {
                let up = client.uploader(replicas, min_replicas, policy, true, &LogProgress).await?;
                let stored = stream::iter(contents)
                    .map(|(index, content, held)| {
                        let up = &up;
                        async move {
                            let (chunk, holders) = up.store(index, content).await?;
                            drop(held);
                            Ok::<_, ClientError>(Compacted { index, chunk, holders })
                        }
                    })
                    .buffered(2)
                    .try_collect()
                    .await;
                up.summarize(&LogProgress);
                stored
            }
            .instrument(span),
        );
        Compaction { task, folds, started: Instant::now() }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// How many of chunk `index`'s slices this compaction folds in (0 if none).
    pub fn folded(&self, index: u64) -> usize {
        self.folds.get(&index).map_or(0, |f| f.slices)
    }

    /// Chunk `index` is rewritten whole or cut off: its compacted copy is of no use.
    pub fn forget(&mut self, index: u64) {
        self.folds.remove(&index);
    }

    /// Waits for the task; what it stored that is still worth swapping in. A failure only
    /// leaves the slices where they are (logged): compaction is an economy, not a duty.
    pub async fn finish(mut self) -> Vec<(Compacted, Fold)> {
        let stored = match (&mut self.task).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                tracing::warn!("compacting {} chunk(s) in the background: {e}; their slices stay", self.folds.len());
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!("compaction task: {e}");
                return Vec::new();
            }
        };
        if self.started.elapsed() > MAX_AGE {
            tracing::debug!("a compaction finished {:?} ago is not swapped in", self.started.elapsed());
            return Vec::new();
        }
        stored.into_iter().filter_map(|c| self.folds.remove(&c.index).map(|f| (c, f))).collect()
    }
}
