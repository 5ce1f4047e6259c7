//! Decrypted chunks by id. Chunks are immutable (content-addressed), so a cached chunk is
//! never stale; the cache only bounds memory. A chunk being fetched is fetched once, however
//! many readers ask for it meanwhile.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use swarmfs_proto::ChunkId;
use tokio::sync::OnceCell;

type Slot = Arc<OnceCell<Arc<Vec<u8>>>>;

pub struct ChunkCache {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Reads answered from the cache (or from a fetch another reader started), and fetches.
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner {
    slots: HashMap<ChunkId, Slot>,
    /// Oldest first; an id appears once per insertion.
    order: VecDeque<ChunkId>,
    bytes: usize,
}

impl ChunkCache {
    pub fn new(capacity: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Inner { slots: HashMap::new(), order: VecDeque::new(), bytes: 0 }),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub async fn get<E, F>(&self, id: ChunkId, fetch: F) -> Result<Arc<Vec<u8>>, E>
    where
        F: Future<Output = Result<Vec<u8>, E>>,
    {
        let slot = self.inner.lock().expect("cache lock").slots.entry(id).or_default().clone();
        let mut fetched = false;
        let data = slot
            .get_or_try_init(|| async {
                fetched = true;
                fetch.await.map(Arc::new)
            })
            .await?
            .clone();
        if fetched {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.admit(id, data.len());
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(data)
    }

    fn admit(&self, id: ChunkId, len: usize) {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.order.push_back(id);
        inner.bytes += len;
        while inner.bytes > self.capacity && inner.order.len() > 1 {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(slot) = inner.slots.remove(&old) {
                inner.bytes -= slot.get().map(|d| d.len()).unwrap_or(0);
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("cache lock").bytes
    }

    /// (hits, misses) since the cache was made.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn shares_fetches_and_stays_bounded() {
        let cache = Arc::new(ChunkCache::new(2500));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(ChunkId([1; 32]), async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok::<_, ()>(vec![7u8; 1000])
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().len(), 1000);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one fetch for eight readers");
        assert_eq!(cache.counts(), (7, 1));
        for b in 2..6u8 {
            cache.get(ChunkId([b; 32]), async { Ok::<_, ()>(vec![b; 1000]) }).await.unwrap();
        }
        assert!(cache.bytes() <= 2500);
    }
}
