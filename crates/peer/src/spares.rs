//! The worker that makes spare files for the store's puts: a small reserve while puts
//! arrive, the rest while none is (see `swarmfs_store::spares` for why a put should not
//! create its own file).

use std::sync::Arc;
use std::time::Duration;

use swarmfs_net::task::{Step, Worker};
use swarmfs_store::ChunkStore;

/// Spares made per step: a step stays short, and a put that arrives meanwhile stops the
/// next one (the store then wants none until it is quiet again).
const BATCH: usize = 32;

pub struct SpareMaker {
    store: Arc<ChunkStore>,
    made: u64,
}

impl SpareMaker {
    pub fn new(store: Arc<ChunkStore>) -> SpareMaker {
        SpareMaker { store, made: 0 }
    }
}

impl Worker for SpareMaker {
    fn name(&self) -> String {
        "spares".into()
    }

    fn idle_period(&self) -> Duration {
        self.store.spares_recheck()
    }

    async fn step(&mut self) -> Result<Step, String> {
        let wanted = self.store.spares_wanted();
        if wanted == 0 && self.store.spares_unnamed() == 0 {
            return Ok(Step::Idle);
        }
        let store = self.store.clone();
        let made = tokio::task::spawn_blocking(move || store.make_spares(wanted.min(BATCH)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot make spare files: {e}"))?;
        self.made += made as u64;
        Ok(if wanted > made { Step::Busy } else { Step::Idle })
    }

    fn detail(&self) -> String {
        format!("{} spare files ready, {} made", self.store.spares_ready(), self.made)
    }

    fn done(&self) -> u64 {
        self.made
    }
}
