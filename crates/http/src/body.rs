//! Response bodies that stream parts of a file: only the chunks a range touches are
//! fetched, through the shared cache, a few at a time ahead of the socket. Nothing else is
//! held, so memory is bounded by the window and the cache whatever the file's size; a client
//! that hangs up drops the body and with it the fetches in flight.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use swarmfs_client::{Client, Holders, Progress};
use swarmfs_core::Manifest;

use crate::server::{Body, Gateway};

/// Chunks fetched ahead of the one being sent.
const WINDOW: usize = 8;

/// A piece of a response body.
pub enum Part {
    /// Bytes of the response itself (a multipart boundary and part head).
    Literal(Bytes),
    /// File bytes `[start, end)`.
    File { start: u64, end: u64 },
}

/// What one file read needs: the client that may read it (the gateway's own, or a link's),
/// its manifest, and the holders of chunks `first..` as located before the response head.
pub struct Source {
    pub client: Arc<Client>,
    pub manifest: Manifest,
    pub holders: Holders,
    pub first: u64,
    pub packs: swarmfs_client::slices::Packs,
}

/// The chunk indices a byte range touches.
pub fn chunks_of(manifest: &Manifest, start: u64, end: u64) -> std::ops::RangeInclusive<u64> {
    let cs = manifest.chunk_size as u64;
    start / cs..=(end.max(start + 1) - 1) / cs
}

enum Piece {
    Literal(Bytes),
    Chunk { index: u64, lo: usize, hi: usize },
}

pub fn stream(gw: Arc<Gateway>, source: Arc<Source>, parts: Vec<Part>) -> Body {
    let cs = source.manifest.chunk_size as u64;
    let pieces = parts.into_iter().flat_map(move |part| -> Box<dyn Iterator<Item = Piece> + Send> {
        match part {
            Part::Literal(b) => Box::new(std::iter::once(Piece::Literal(b))),
            Part::File { start, end } if start >= end => Box::new(std::iter::empty()),
            Part::File { start, end } => Box::new((start / cs..=(end - 1) / cs).map(move |index| {
                let lo = start.saturating_sub(index * cs) as usize;
                let hi = (end - index * cs).min(cs) as usize;
                Piece::Chunk { index, lo, hi }
            })),
        }
    });
    let frames = stream::iter(pieces)
        .map(move |piece| {
            let (gw, source) = (gw.clone(), source.clone());
            async move {
                match piece {
                    Piece::Literal(b) => Ok(b),
                    Piece::Chunk { index, lo, hi } => {
                        let plain = chunk(&gw, &source, index).await?;
                        let hi = hi.min(plain.len());
                        let lo = lo.min(hi);
                        gw.metrics.sent(hi - lo);
                        Ok(Bytes::from_owner(Shared(plain)).slice(lo..hi))
                    }
                }
            }
        })
        .buffered(WINDOW)
        .inspect_err(|e: &std::io::Error| tracing::warn!("a download stopped part-way: {e}"))
        .map_ok(Frame::data);
    StreamBody::new(frames).boxed_unsync()
}

/// Chunk `index` of the source's file, decrypted and verified, from the cache or a peer.
async fn chunk(gw: &Gateway, source: &Source, index: u64) -> std::io::Result<Arc<Vec<u8>>> {
    if let Some(data) = source.manifest.inline.as_ref().filter(|_| index == 0) {
        // A small file kept in its manifest (it spans one chunk).
        return Ok(Arc::new(data.clone()));
    }
    let r = source.manifest.chunks.get(index as usize).ok_or_else(|| std::io::Error::other("chunk out of range"))?;
    let i = (index - source.first) as usize;
    let base = gw
        .cache
        .get(r.id, async {
            let started = Instant::now();
            let plain = source.client.fetch(index, r, &source.holders, i, &LogWarnings).await?;
            gw.metrics.chunk_fetched(plain.len(), started.elapsed());
            Ok::<_, swarmfs_client::ClientError>(plain)
        })
        .await
        .map_err(std::io::Error::other)?;
    if source.manifest.slices_of(index).is_empty() && base.len() >= source.manifest.span(index) {
        return Ok(base);
    }
    // The cache holds chunks by id, shared by every file that has them: the slices (and the
    // zeros past the end of a chunk holding less than its span) go on a copy.
    let mut plain = base.to_vec();
    source.manifest.pad(index, &mut plain);
    source
        .packs
        .lay(&source.client, &gw.cache, &source.manifest, index, 0, &mut plain, &LogWarnings)
        .await
        .map_err(std::io::Error::other)?;
    Ok(Arc::new(plain))
}

/// A cached chunk shared by the bodies that send it, without a copy.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A fetch's warnings (a bad copy, a slow peer) go to the log.
pub(crate) struct LogWarnings;

impl Progress for LogWarnings {
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}
