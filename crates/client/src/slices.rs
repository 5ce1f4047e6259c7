//! Reading a file that has slices (small writes the mount stored without rewriting their
//! chunks; see `swarmfs_core::Slice`): every reader fetches chunk `i` as usual, then lays
//! its slices over it from the packs, through a bounded cache of packs (a `get` into a file
//! instead writes every slice after the chunks, each pack fetched once: Client::write_slices).

use std::sync::Arc;

use swarmfs_core::{lay_slices, Manifest, Slice};
use tokio::sync::OnceCell;

use crate::cache::ChunkCache;
use crate::get::Holders;
use crate::{Client, ClientError, Progress};

/// The packs of one manifest: where they are (located on first use) and a cache of their
/// plaintext. A reader keeps one per manifest it reads.
#[derive(Default)]
pub struct Packs {
    holders: OnceCell<Holders>,
}

/// Packs cached by a one-off reader (a `get`, a stream): packs are small, a few suffice.
pub const PACK_CACHE_BYTES: usize = 16 << 20;

impl Packs {
    /// Lays chunk `index`'s slices over `buf`, which holds that chunk's bytes from `start`
    /// on. Nothing to do (and nothing fetched) for a chunk without slices.
    #[allow(clippy::too_many_arguments)]
    pub async fn lay(
        &self,
        client: &Client,
        cache: &ChunkCache,
        manifest: &Manifest,
        index: u64,
        start: u64,
        buf: &mut [u8],
        progress: &dyn Progress,
    ) -> Result<(), ClientError> {
        let end = start + buf.len() as u64;
        let touching = |s: &&Slice| (s.offset as u64) < end && s.offset as u64 + s.len as u64 > start;
        // In order, one pack held at a time: within a chunk, slices are ordered by pack.
        let mut current: Option<(u32, Arc<Vec<u8>>)> = None;
        for s in manifest.slices_of(index).iter().filter(touching) {
            let pack = match &current {
                Some((p, bytes)) if *p == s.pack => bytes.clone(),
                _ => self.pack(client, cache, manifest, s.pack, progress).await?,
            };
            lay_slices(std::slice::from_ref(s), start, buf, |_| pack.as_slice());
            current = Some((s.pack, pack));
        }
        Ok(())
    }

    async fn pack(
        &self,
        client: &Client,
        cache: &ChunkCache,
        manifest: &Manifest,
        p: u32,
        progress: &dyn Progress,
    ) -> Result<Arc<Vec<u8>>, ClientError> {
        let holders = self.holders.get_or_try_init(|| client.locate(&manifest.packs)).await?;
        let r = &manifest.packs[p as usize];
        cache.get(r.id, client.fetch(p as u64, r, holders, p as usize, progress)).await
    }
}
