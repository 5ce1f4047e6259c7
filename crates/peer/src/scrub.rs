//! The scrubber: re-reads every stored chunk, bucket by bucket, at a bounded rate, and
//! checks its hash. A bad copy is quarantined by the store and reported to the tracker,
//! which then repairs it like any lost replica. A copy nobody reads is checked all the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmfs_net::task::{Step, Worker};
use swarmfs_proto::ChunkId;
use swarmfs_store::{ChunkStore, StoreError};
use tokio::sync::mpsc;

/// A full pass every three days on a full disk, and never slower than this floor.
pub const PASS_TARGET: Duration = Duration::from_secs(3 * 24 * 3600);
pub const MIN_DEFAULT_RATE: u64 = 256 * 1024;

/// The default `--scrub-rate` for a store of `capacity` bytes.
pub fn default_rate(capacity: u64) -> u64 {
    (capacity / PASS_TARGET.as_secs()).max(MIN_DEFAULT_RATE)
}

pub struct Scrubber {
    store: Arc<ChunkStore>,
    /// Bytes per second.
    rate: u64,
    corrupt: mpsc::UnboundedSender<ChunkId>,
    /// The next bucket to walk.
    bucket: u32,
    passes: u64,
    pass_bytes: u64,
    pass_started: Instant,
    verified: u64,
    bad: u64,
}

impl Scrubber {
    pub fn new(store: Arc<ChunkStore>, rate: u64, corrupt: mpsc::UnboundedSender<ChunkId>) -> Scrubber {
        Scrubber {
            store,
            rate: rate.max(1),
            corrupt,
            bucket: 0,
            passes: 0,
            pass_bytes: 0,
            pass_started: Instant::now(),
            verified: 0,
            bad: 0,
        }
    }
}

impl Worker for Scrubber {
    fn name(&self) -> String {
        "scrub".into()
    }

    /// The rest between passes, so a small store is not re-read over and over.
    fn idle_period(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// The next non-empty bucket (one fan-out directory: a few chunks on most stores), or up
    /// to `SKIP` empty ones. The pace is kept across the pass: after each chunk the step
    /// sleeps until the pass's bytes so far fit the rate.
    async fn step(&mut self) -> Result<Step, String> {
        if self.bucket == 0 {
            self.pass_started = Instant::now();
            self.pass_bytes = 0;
        }
        const SKIP: u32 = 4096;
        let store = self.store.clone();
        let first = self.bucket;
        let (ids, last) = tokio::task::spawn_blocking(move || {
            let end = (first + SKIP).min(store.buckets());
            for b in first..end {
                let ids = store.list_bucket(b)?;
                if !ids.is_empty() {
                    return Ok((ids, b));
                }
            }
            Ok::<_, StoreError>((Vec::new(), end - 1))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot list the store: {e}"))?;
        self.bucket = last;
        for id in ids {
            let store = self.store.clone();
            let r = tokio::task::spawn_blocking(move || store.verify(&id)).await.map_err(|e| e.to_string())?;
            match r {
                Ok(Some(len)) => {
                    self.verified += 1;
                    self.pass_bytes += len;
                }
                Ok(None) => {}
                Err(StoreError::Corrupt(_)) => {
                    self.bad += 1;
                    tracing::warn!(chunk = %id.short(), "scrub found a corrupt copy; quarantined and reported");
                    let _ = self.corrupt.send(id);
                }
                Err(e) => return Err(format!("cannot verify chunk {}: {e}", id.short())),
            }
            let due = Duration::from_secs_f64(self.pass_bytes as f64 / self.rate as f64);
            if let Some(wait) = due.checked_sub(self.pass_started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        self.bucket += 1;
        if self.bucket < self.store.buckets() {
            return Ok(Step::Busy);
        }
        self.bucket = 0;
        self.passes += 1;
        tracing::info!(pass = self.passes, bytes = self.pass_bytes, bad = self.bad, "scrub pass finished");
        Ok(Step::Idle)
    }

    fn detail(&self) -> String {
        format!(
            "pass {}, {:.0}% through, {} chunks verified, {} bad",
            self.passes + 1,
            self.bucket as f64 * 100.0 / self.store.buckets() as f64,
            self.verified,
            self.bad
        )
    }

    fn done(&self) -> u64 {
        self.verified
    }
}
