//! Reading a file that has slices (small writes the mount stored without rewriting their
//! chunks; see `swarmfs_core::Slice`): every reader fetches chunk `i` as usual, then lays
//! its slices over it from the packs, through a bounded cache of packs (a `get` into a file
//! instead writes every slice after the chunks, each pack fetched once: Client::write_slices).

use std::sync::Arc;

use swarmfs_core::{lay_slice, Manifest, Slice};
use tokio::sync::OnceCell;

use crate::cache::ChunkCache;
use crate::get::Holders;
use crate::{Client, ClientError, Progress};

/// Where the packs of one manifest are (located on first use); their plaintext goes through
/// the cache each call is given. A reader keeps one per manifest it reads.
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
            if current.as_ref().is_none_or(|(p, _)| *p != s.pack) {
                current = Some((s.pack, self.pack(client, cache, manifest, s.pack, progress).await?));
            }
            let (_, pack) = current.as_ref().expect("just fetched");
            lay_slice(s, start, buf, pack);
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
