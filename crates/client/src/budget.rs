//! The chunk bytes one client holds at once across all its transfers.
//!
//! One transfer's memory is bounded by its window, but `put -r` and `get -r` run 16 files at
//! once, each with a window of its own: 16 files of 48 MiB held 210 MiB (put) and 190-290
//! MiB (get) at the peak. Every chunk a put reads and every chunk a get fetches first takes
//! its size from this budget and gives it back once stored or written, so the files of one
//! command share what a single transfer uses: the same tree then peaked at 49-55 MiB (put,
//! as fast as unbounded) and 55-59 MiB (get, about 15 % slower: fewer writes at once).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Chunk bytes in flight per client. A single put (a window of 8 and 2 read ahead) never
/// waits for it; a single get keeps 16 chunks moving instead of 20 (16 fetches and 4 writes):
/// 0.77 s for 512 MiB against 0.65-0.80 unbounded in alternated runs. 24 MiB let 16 files
/// reach 65-70 MiB of RSS, past the client's 64 MiB.
pub const TRANSFER_BUDGET: usize = 16 << 20;
/// The budget is counted in KiB.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total: u32,
}

/// Chunk bytes taken from the budget, given back when dropped.
pub struct Held {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(bytes: usize) -> Budget {
        let total = (bytes / UNIT).clamp(1, u32::MAX as usize) as u32;
        Budget { units: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// A chunk larger than the whole budget takes all of it: one at a time.
    fn units(&self, bytes: usize) -> u32 {
        (bytes.div_ceil(UNIT).max(1).min(self.total as usize)) as u32
    }

    pub async fn hold(&self, bytes: usize) -> Held {
        let permit = self.units.clone().acquire_many_owned(self.units(bytes)).await;
        Held { _permit: permit.expect("the budget is never closed") }
    }

    pub fn try_hold(&self, bytes: usize) -> Option<Held> {
        let permit = self.units.clone().try_acquire_many_owned(self.units(bytes)).ok()?;
        Some(Held { _permit: permit })
    }

    /// Bytes not taken now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.units.available_permits() * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_add_up_to_the_budget_and_a_huge_chunk_takes_all_of_it() {
        let b = Budget::new(4 << 20);
        let one = b.hold(1 << 20).await;
        let rest = b.try_hold(3 << 20).expect("room for the rest");
        assert!(b.try_hold(1).is_none(), "all taken");
        drop(one);
        assert_eq!(b.free(), 1 << 20);
        drop(rest);
        let huge = b.hold(64 << 20).await;
        assert_eq!(b.free(), 0, "a chunk past the budget takes all of it, not forever");
        drop(huge);
        assert_eq!(b.free(), 4 << 20);
    }
}
