//! The manifest lists a file's chunks and their keys. It is sealed under a random per-file
//! key (a read capability is file id + that key); the key is wrapped under the data key.
//!
//! Versions: a manifest is sealed as `postcard(VersionedManifest)` with [`VERSIONED_AAD`] as
//! the AEAD's associated data, so the format is authenticated with the contents and a
//! versioned body can never be taken for an older one. Protocol 2 sealed a bare
//! `postcard(Manifest)` with empty associated data ("format 0"); such bodies still open.
//! A new layout (erasure coding) is a new `VersionedManifest` variant, appended. V2 added
//! slices (small writes over the chunks, see [`Slice`]); a manifest without slices is still
//! sealed as V1, which releases before V2 read.
//!
//! A file version may also be a base manifest followed by deltas ([`ManifestDelta`]): what a
//! flush that only added slices changed, sealed under the base's file key with
//! [`DELTA_AAD`]. The tracker keeps them in order after the base and hands them out with it
//! ([`SealedManifest::deltas`]); [`Manifest::open`] lays them over the base. A big file
//! fsynced often then commits (and the tracker writes) what changed, not its whole manifest.
//!
//! V3 (protocol 10) is a small file kept whole in its manifest ([`Manifest::inline`]): no
//! chunk on the peers, so creating one costs one tracker commit instead of a put to R peers
//! and the commit. Its bytes are sealed under the file key as a chunk's are under its own.

use rand::RngCore;
use ring::aead::{Aad, Nonce};
use serde::{Deserialize, Serialize};
use swarmfs_proto::{ChunkId, SealedDelta, SealedManifest};

use crate::chunk::{aead, TAG_LEN};
use crate::{CoreError, DataKey};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub key: [u8; 32],
    /// Plaintext length.
    pub len: u32,
}

/// Associated data of every versioned manifest body.
const VERSIONED_AAD: &[u8] = b"swarmfs manifest, versioned";
/// Associated data of every sealed delta: a delta can never be taken for a base or the
/// other way round.
const DELTA_AAD: &[u8] = b"swarmfs manifest delta, versioned";

/// What a sealed delta holds. Variants are only ever appended.
#[derive(Serialize, Deserialize)]
enum VersionedDelta {
    /// Protocol 7: a delta over a file whose size stayed.
    V1(DeltaV1),
    V2(ManifestDelta),
}

/// The layout of a V1 delta: no size, no appended chunks (the size stays the base's).
#[derive(Serialize, Deserialize)]
struct DeltaV1 {
    mode: u32,
    mtime_ms: i64,
    swaps: Vec<ChunkSwap>,
    slices: Vec<Slice>,
    packs: Vec<ChunkRef>,
}

/// What one flush changed when the file did not shrink: its size, chunks stored whole again
/// with the slices they fold in (a compaction, a whole rewrite), chunks appended, and slices
/// written in new packs. Everything else of the manifest
/// it follows stays, its packs included (see [`Manifest::apply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDelta {
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: i64,
    /// Chunks stored whole again, by index order.
    pub swaps: Vec<ChunkSwap>,
    /// Chunks after the last one of the manifest it follows (the file grew).
    pub appended: Vec<ChunkRef>,
    /// New slices, ordered by chunk index, naming packs by their index in the whole
    /// manifest (the base's packs first, then this delta's).
    pub slices: Vec<Slice>,
    pub packs: Vec<ChunkRef>,
}

/// Chunk `index` becomes `chunk`, which holds its first `folded` slices: those leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSwap {
    pub index: u32,
    pub chunk: ChunkRef,
    pub folded: u32,
}

impl ManifestDelta {
    /// Sealed under the file key of the base it follows (so whoever can open the base, a
    /// link's holder included, can open its deltas).
    pub fn seal(&self, file_key: &[u8; 32]) -> SealedDelta {
        /// [`VersionedDelta`] borrowed: the same variants in the same order, so the same bytes.
        #[derive(Serialize)]
        enum VersionedDeltaRef<'a> {
            #[allow(dead_code)]
            V1(()),
            V2(&'a ManifestDelta),
        }
        let plain = postcard::to_stdvec(&VersionedDeltaRef::V2(self)).expect("encodes");
        SealedDelta(seal_random_nonce(file_key, &plain, DELTA_AAD))
    }

    /// Opens a sealed delta laid over a version of `size` bytes (what a V1 delta keeps).
    fn open(sealed: &[u8], file_key: &[u8; 32], size: u64) -> Result<ManifestDelta, CoreError> {
        let plain = open_random_nonce(file_key, sealed, DELTA_AAD)?;
        match postcard::from_bytes::<VersionedDelta>(&plain).map_err(|e| CoreError::BadManifest(e.to_string()))? {
            VersionedDelta::V1(DeltaV1 { mode, mtime_ms, swaps, slices, packs }) => {
                Ok(ManifestDelta { size, mode, mtime_ms, swaps, appended: Vec::new(), slices, packs })
            }
            VersionedDelta::V2(d) => Ok(d),
        }
    }
}

/// What a sealed manifest body holds. Variants are only ever appended.
#[derive(Serialize, Deserialize)]
enum VersionedManifest {
    V1(ManifestV1),
    V2(Manifest),
    V3(InlineV3),
}

/// [`VersionedManifest`] borrowed, for sealing without copying the manifest: the same
/// variants in the same order, so the same bytes.
#[derive(Serialize)]
enum VersionedManifestRef<'a> {
    V1(ManifestV1Ref<'a>),
    V2(&'a Manifest),
    V3(InlineV3Ref<'a>),
}

/// The layout of V3: a file whose content is in its manifest (its size is the content's).
#[derive(Serialize, Deserialize)]
struct InlineV3 {
    chunk_size: u32,
    mode: u32,
    mtime_ms: i64,
    data: Vec<u8>,
}

#[derive(Serialize)]
struct InlineV3Ref<'a> {
    chunk_size: u32,
    mode: u32,
    mtime_ms: i64,
    data: &'a [u8],
}

impl From<InlineV3> for Manifest {
    fn from(m: InlineV3) -> Manifest {
        let InlineV3 { chunk_size, mode, mtime_ms, data } = m;
        Manifest::inline(chunk_size, mode, mtime_ms, data)
    }
}

#[derive(Serialize)]
struct ManifestV1Ref<'a> {
    size: u64,
    chunk_size: u32,
    mode: u32,
    mtime_ms: i64,
    chunks: &'a [ChunkRef],
}

/// The layout of V1 and format 0: chunks only.
#[derive(Serialize, Deserialize)]
struct ManifestV1 {
    size: u64,
    chunk_size: u32,
    mode: u32,
    mtime_ms: i64,
    chunks: Vec<ChunkRef>,
}

impl From<ManifestV1> for Manifest {
    fn from(m: ManifestV1) -> Manifest {
        let ManifestV1 { size, chunk_size, mode, mtime_ms, chunks } = m;
        Manifest::whole(size, chunk_size, mode, mtime_ms, chunks)
    }
}

/// Bytes written over part of a chunk since the chunk was last stored whole: `len` bytes at
/// `offset` within chunk `index`, found at `at` in pack `pack`. A small write into a big file
/// uploads its bytes once as a slice instead of its whole chunk again (the mount writes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    pub index: u32,
    pub offset: u32,
    pub len: u32,
    pub pack: u32,
    pub at: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub size: u64,
    pub chunk_size: u32,
    pub mode: u32,
    pub mtime_ms: i64,
    /// Chunk `i` covers the file from `i * chunk_size` for [`Manifest::span`] bytes. It may
    /// hold fewer (protocol 8: a file appended to by small writes keeps its old last chunk
    /// and puts what was appended in slices); the rest of its span reads as zeros, under
    /// its slices.
    pub chunks: Vec<ChunkRef>,
    /// Writes over `chunks`, ordered by chunk index and, within one chunk, oldest first: a
    /// later slice wins where two overlap. Chunk `i`'s content is `chunks[i]`, padded with
    /// zeros to its span, with its slices laid over it in order.
    pub slices: Vec<Slice>,
    /// Chunks holding the slices' bytes (each is what one flush wrote), oldest first: within
    /// one chunk a later slice is never in an earlier pack, so laying every slice pack by
    /// pack (each pack fetched once) gives the same bytes as laying them chunk by chunk.
    pub packs: Vec<ChunkRef>,
    /// A small file's whole content (protocol 10, sealed as V3), when it is kept in the
    /// manifest instead of in a chunk; `chunks`, `slices` and `packs` are then empty. Not
    /// part of the V2 layout (skipped: a V2 body never has it).
    #[serde(skip)]
    pub inline: Option<Vec<u8>>,
}

/// Most bytes a file kept in its manifest may hold: the tracker stores and sends manifests
/// whole, so what goes in them stays small. Clients choose a limit up to this
/// ([`DEFAULT_INLINE_MAX`] unless told otherwise).
pub const MAX_INLINE: usize = 64 * 1024;
/// Files up to this size are kept in their manifest by default: one page, what most small
/// files of a source tree or a mail spool are under, at most 4 KiB more per file in the
/// tracker's database.
pub const DEFAULT_INLINE_MAX: usize = 4096;

/// The largest file kept in its manifest when a client allows `inline_max` bytes (0: none)
/// and writes chunks of `chunk_size`: such a file is within one chunk.
pub fn inline_limit(inline_max: usize, chunk_size: u32) -> usize {
    inline_max.min(MAX_INLINE).min(chunk_size as usize)
}

impl Manifest {
    /// A file stored as whole chunks (no slices).
    pub fn whole(size: u64, chunk_size: u32, mode: u32, mtime_ms: i64, chunks: Vec<ChunkRef>) -> Manifest {
        Manifest { size, chunk_size, mode, mtime_ms, chunks, slices: Vec::new(), packs: Vec::new(), inline: None }
    }

    /// A file kept whole in its manifest: `data` is its content.
    pub fn inline(chunk_size: u32, mode: u32, mtime_ms: i64, data: Vec<u8>) -> Manifest {
        let size = data.len() as u64;
        Manifest { inline: Some(data), ..Manifest::whole(size, chunk_size, mode, mtime_ms, Vec::new()) }
    }

    /// Seals with a fresh per-file key; returns the sealed form and that key.
    pub fn seal(&self, data_key: &DataKey) -> (SealedManifest, [u8; 32]) {
        let mut file_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut file_key);
        let Manifest { chunk_size, mode, mtime_ms, .. } = *self;
        let versioned = if let Some(data) = &self.inline {
            VersionedManifestRef::V3(InlineV3Ref { chunk_size, mode, mtime_ms, data })
        } else if self.slices.is_empty() && self.packs.is_empty() {
            VersionedManifestRef::V1(ManifestV1Ref {
                size: self.size,
                chunk_size,
                mode,
                mtime_ms,
                chunks: &self.chunks,
            })
        } else {
            VersionedManifestRef::V2(self)
        };
        let plain = postcard::to_stdvec(&versioned).expect("encodes");
        let body = seal_random_nonce(&file_key, &plain, VERSIONED_AAD);
        let wrapped_key = seal_random_nonce(&data_key.manifest_wrap_key(), &file_key, b"");
        (SealedManifest { wrapped_key, body, deltas: Vec::new() }, file_key)
    }

    pub fn open(sealed: &SealedManifest, data_key: &DataKey) -> Result<Manifest, CoreError> {
        Self::open_with_file_key(sealed, &Self::file_key(sealed, data_key)?)
    }

    /// The per-file key `sealed` was sealed with: with the file's id, a read capability for
    /// that one file version (what a link carries).
    pub fn file_key(sealed: &SealedManifest, data_key: &DataKey) -> Result<[u8; 32], CoreError> {
        open_random_nonce(&data_key.manifest_wrap_key(), &sealed.wrapped_key, b"")?
            .try_into()
            .map_err(|_| CoreError::BadManifest("wrapped key has the wrong length".into()))
    }

    pub fn open_with_file_key(sealed: &SealedManifest, file_key: &[u8; 32]) -> Result<Manifest, CoreError> {
        let bad = |e: postcard::Error| CoreError::BadManifest(e.to_string());
        let m = match open_random_nonce(file_key, &sealed.body, VERSIONED_AAD) {
            Ok(plain) => match postcard::from_bytes::<VersionedManifest>(&plain).map_err(bad)? {
                VersionedManifest::V1(m) => m.into(),
                VersionedManifest::V2(m) => m,
                VersionedManifest::V3(m) => m.into(),
            },
            // Format 0 (protocol 2): no associated data, no version tag.
            Err(_) => postcard::from_bytes::<ManifestV1>(&open_random_nonce(file_key, &sealed.body, b"")?)
                .map_err(bad)?
                .into(),
        };
        let mut m: Manifest = m;
        for d in &sealed.deltas {
            let size = m.size;
            m.apply(ManifestDelta::open(&d.0, file_key, size)?)?;
        }
        m.validate()?;
        Ok(m)
    }

    /// Lays `d` over this manifest: its size, its swapped chunks in (each dropping the
    /// slices it folds in), its appended chunks after these, its packs after these, each of
    /// its slices after this manifest's slices of the same chunk (so, within a chunk, still
    /// oldest first).
    pub fn apply(&mut self, d: ManifestDelta) -> Result<(), CoreError> {
        if self.inline.is_some() {
            return Err(CoreError::BadManifest("a delta over a file kept in its manifest".into()));
        }
        let ManifestDelta { size, mode, mtime_ms, swaps, appended, slices, packs } = d;
        (self.size, self.mode, self.mtime_ms) = (size, mode, mtime_ms);
        for swap in swaps {
            let i = swap.index as usize;
            let have = self.slices_of(i as u64).len();
            let Some(entry) = self.chunks.get_mut(i).filter(|_| swap.folded as usize <= have) else {
                return Err(CoreError::BadManifest("a delta swaps a chunk or folds slices that are not there".into()));
            };
            *entry = swap.chunk;
            let lo = self.slices.partition_point(|s| (s.index as usize) < i);
            self.slices.drain(lo..lo + swap.folded as usize);
        }
        self.chunks.extend(appended);
        self.packs.extend(packs);
        let old = std::mem::take(&mut self.slices);
        let mut merged = Vec::with_capacity(old.len() + slices.len());
        let (mut a, mut b) = (old.into_iter().peekable(), slices.into_iter().peekable());
        loop {
            let take_old = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.index <= y.index,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            merged.extend(if take_old { a.next() } else { b.next() });
        }
        self.slices = merged;
        Ok(())
    }

    /// What changed from `base` to this manifest, when the file did not shrink, every pack
    /// of `base` is still here in its place, and each of `base`'s chunks is either the same
    /// with all its slices kept or stored whole again with its first slices folded in (any
    /// further chunks are appended): the delta that [`Manifest::apply`] turns `base` into
    /// this (checked by applying it). `None` for any other change (the file cut shorter, a
    /// pack dropped, a slice dropped out of order): that version is committed whole.
    pub fn delta_from(&self, base: &Manifest) -> Option<ManifestDelta> {
        let old_packs = base.packs.len();
        if self.inline.is_some()
            || base.inline.is_some()
            || self.size < base.size
            || self.chunk_size != base.chunk_size
            || self.chunks.len() < base.chunks.len()
            || self.packs.len() < old_packs
            || self.packs[..old_packs] != base.packs[..]
        {
            return None;
        }
        let mut swaps = Vec::new();
        for (i, (new, old)) in self.chunks.iter().zip(&base.chunks).enumerate() {
            if new != old {
                let kept = self.slices_of(i as u64).iter().filter(|s| (s.pack as usize) < old_packs).count();
                let folded = base.slices_of(i as u64).len().checked_sub(kept)?;
                swaps.push(ChunkSwap { index: i as u32, chunk: new.clone(), folded: folded as u32 });
            }
        }
        let slices: Vec<Slice> = self.slices.iter().filter(|s| (s.pack as usize) >= old_packs).copied().collect();
        let delta = ManifestDelta {
            size: self.size,
            mode: self.mode,
            mtime_ms: self.mtime_ms,
            swaps,
            appended: self.chunks[base.chunks.len()..].to_vec(),
            slices,
            packs: self.packs[old_packs..].to_vec(),
        };
        let mut check = base.clone();
        (check.apply(delta.clone()).is_ok() && check == *self).then_some(delta)
    }

    /// A decrypted manifest is still checked: sizes must add up before anyone trusts them.
    fn validate(&self) -> Result<(), CoreError> {
        crate::check_chunk_size(self.chunk_size as u64)?;
        if let Some(data) = &self.inline {
            if data.len() > MAX_INLINE || data.len() as u64 != self.size {
                return Err(CoreError::BadManifest("a file kept in its manifest has the wrong size".into()));
            }
            if !(self.chunks.is_empty() && self.slices.is_empty() && self.packs.is_empty()) {
                return Err(CoreError::BadManifest("a file kept in its manifest also names chunks".into()));
            }
            return Ok(());
        }
        let expected = crate::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != expected {
            return Err(CoreError::BadManifest("chunk count does not match size".into()));
        }
        // A chunk may hold fewer bytes than it covers (the rest is zeros), never more.
        if self.chunks.iter().enumerate().any(|(i, c)| c.len as usize > self.span(i as u64)) {
            return Err(CoreError::BadManifest("a chunk is longer than the part of the file it covers".into()));
        }
        if self.packs.iter().any(|p| p.len > self.chunk_size) {
            return Err(CoreError::BadManifest("a pack is larger than a chunk".into()));
        }
        let mut last = (0, 0);
        for s in &self.slices {
            let (Some(_), Some(pack)) = (self.chunks.get(s.index as usize), self.packs.get(s.pack as usize)) else {
                return Err(CoreError::BadManifest("a slice names a chunk or pack that is not there".into()));
            };
            let fits = |start: u32, whole: u32| start.checked_add(s.len).is_some_and(|end| end <= whole);
            // Ordered by chunk, then (within a chunk) by pack.
            let span = self.span(s.index as u64) as u32;
            if s.len == 0 || !fits(s.offset, span) || !fits(s.at, pack.len) || (s.index, s.pack) < last {
                return Err(CoreError::BadManifest("a slice is out of place".into()));
            }
            last = (s.index, s.pack);
        }
        Ok(())
    }

    /// How many bytes of the file chunk `index` covers: the chunk size, less for the last.
    pub fn span(&self, index: u64) -> usize {
        let cs = self.chunk_size as u64;
        self.size.saturating_sub(index * cs).min(cs) as usize
    }

    /// Chunk `index`'s stored bytes `plain` made its whole span: padded with zeros when the
    /// chunk holds fewer (see [`Manifest::chunks`]).
    pub fn pad(&self, index: u64, plain: &mut Vec<u8>) {
        let span = self.span(index);
        if plain.len() < span {
            plain.resize(span, 0);
        }
    }

    /// Chunk `index`'s slices, oldest first.
    pub fn slices_of(&self, index: u64) -> &[Slice] {
        let lo = self.slices.partition_point(|s| (s.index as u64) < index);
        let hi = self.slices.partition_point(|s| (s.index as u64) <= index);
        &self.slices[lo..hi]
    }

    /// Every chunk the file's content needs: its chunks, then its packs.
    pub fn referenced(&self) -> impl Iterator<Item = &ChunkRef> {
        self.chunks.iter().chain(&self.packs)
    }
}

/// Lays slice `s` over `buf`, which holds its chunk's bytes from `start` on (only the part
/// of `s` inside `buf`); `pack` is the plaintext of `s`'s pack. A chunk's slices are laid
/// in their order.
pub fn lay_slice(s: &Slice, start: u64, buf: &mut [u8], pack: &[u8]) {
    let end = start + buf.len() as u64;
    let (lo, hi) = ((s.offset as u64).max(start), (s.offset as u64 + s.len as u64).min(end));
    if lo < hi {
        let from = s.at as usize + (lo - s.offset as u64) as usize;
        buf[(lo - start) as usize..(hi - start) as usize].copy_from_slice(&pack[from..from + (hi - lo) as usize]);
    }
}

/// The nonce, then `plain` sealed (in one buffer: a big file's manifest is sealed at every
/// fsync of it).
fn seal_random_nonce(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(12 + plain.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = aead(key)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut out[12..])
        .expect("small input");
    out.extend_from_slice(tag.as_ref());
    out
}

fn open_random_nonce(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CoreError> {
    if sealed.len() < 12 + TAG_LEN {
        return Err(CoreError::Decrypt);
    }
    let nonce: [u8; 12] = sealed[..12].try_into().expect("12 bytes");
    let mut buf = sealed[12..].to_vec();
    let len = aead(key)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| CoreError::Decrypt)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_wrong_key() {
        let m = Manifest::whole(
            1500,
            1024,
            0o644,
            5,
            vec![
                ChunkRef { id: ChunkId([1; 32]), key: [2; 32], len: 1024 },
                ChunkRef { id: ChunkId([3; 32]), key: [4; 32], len: 476 },
            ],
        );
        let dk = DataKey([9; 32]);
        let (sealed, file_key) = m.seal(&dk);
        assert_eq!(Manifest::open(&sealed, &dk).unwrap(), m);
        assert_eq!(Manifest::open_with_file_key(&sealed, &file_key).unwrap(), m);
        assert!(matches!(Manifest::open(&sealed, &DataKey([8; 32])), Err(CoreError::Decrypt)));
    }

    #[test]
    fn a_format_0_manifest_from_protocol_2_still_opens() {
        let m = Manifest::whole(3, 512, 0o644, 1, vec![ChunkRef { id: ChunkId([5; 32]), key: [6; 32], len: 3 }]);
        let dk = DataKey([9; 32]);
        // Sealed exactly as protocol 2 did: bare postcard, no associated data.
        let file_key = [7u8; 32];
        let legacy = SealedManifest {
            deltas: Vec::new(),
            wrapped_key: seal_random_nonce(&dk.manifest_wrap_key(), &file_key, b""),
            body: seal_random_nonce(
                &file_key,
                &postcard::to_stdvec(&(3u64, 512u32, 0o644u32, 1i64, &m.chunks)).unwrap(),
                b"",
            ),
        };
        assert_eq!(Manifest::open(&legacy, &dk).unwrap(), m);
        // And today's body is tagged: opening it as format 0 fails authentication.
        let (sealed, file_key) = m.seal(&dk);
        assert!(open_random_nonce(&file_key, &sealed.body, b"").is_err());
        let plain = open_random_nonce(&file_key, &sealed.body, VERSIONED_AAD).unwrap();
        assert_eq!(plain[0], 0, "variant V1");
    }

    fn sliced() -> Manifest {
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        let mut m = Manifest::whole(2048 + 10, 1024, 0o644, 1, vec![r(1, 1024), r(2, 1024), r(3, 10)]);
        m.packs = vec![r(8, 6), r(9, 4)];
        m.slices = vec![
            Slice { index: 0, offset: 1020, len: 4, pack: 0, at: 0 },
            Slice { index: 2, offset: 0, len: 2, pack: 0, at: 4 },
            Slice { index: 2, offset: 1, len: 4, pack: 1, at: 0 },
        ];
        m
    }

    #[test]
    fn slices_seal_as_v2_and_a_manifest_without_them_stays_v1() {
        let dk = DataKey([9; 32]);
        let m = sliced();
        let (sealed, file_key) = m.seal(&dk);
        assert_eq!(Manifest::open(&sealed, &dk).unwrap(), m);
        assert_eq!(open_random_nonce(&file_key, &sealed.body, VERSIONED_AAD).unwrap()[0], 1, "variant V2");
        let plain = Manifest { slices: vec![], packs: vec![], ..m };
        let (sealed, file_key) = plain.seal(&dk);
        assert_eq!(open_random_nonce(&file_key, &sealed.body, VERSIONED_AAD).unwrap()[0], 0, "still V1");
        assert_eq!(Manifest::open(&sealed, &dk).unwrap(), plain);
    }

    #[test]
    fn a_slice_out_of_its_chunk_or_pack_is_refused() {
        let dk = DataKey([9; 32]);
        let bad = |f: fn(&mut Manifest)| {
            let mut m = sliced();
            f(&mut m);
            let (sealed, _) = m.seal(&dk);
            assert!(matches!(Manifest::open(&sealed, &dk), Err(CoreError::BadManifest(_))), "{m:?}");
        };
        bad(|m| m.slices[0].offset = 1021); // past its chunk's end
        bad(|m| m.slices[1].len = 7); // past its pack's end
        bad(|m| m.slices[1].pack = 2); // no such pack
        bad(|m| m.slices[2].index = 3); // no such chunk
        bad(|m| m.slices.swap(0, 1)); // not ordered by chunk
        bad(|m| {
            // A later write of chunk 2 in an earlier pack (both fit their packs).
            (m.slices[1].pack, m.slices[1].at) = (1, 0);
            (m.slices[2].pack, m.slices[2].at) = (0, 0);
        });
        bad(|m| m.slices[0].len = 0);
        bad(|m| m.packs[0].len = 2000); // larger than a chunk
    }

    #[test]
    fn later_slices_win_and_a_range_sees_only_its_part() {
        let m = sliced();
        let packs = [b"abcdef".to_vec(), b"WXYZ".to_vec()];
        let lay = |index: u64, start: u64, buf: &mut [u8]| {
            for s in m.slices_of(index) {
                lay_slice(s, start, buf, &packs[s.pack as usize]);
            }
        };
        assert_eq!(m.slices_of(1), &[]);
        assert_eq!(m.slices_of(2).len(), 2);
        let mut chunk = vec![b'.'; 10];
        lay(2, 0, &mut chunk);
        assert_eq!(&chunk, b"eWXYZ.....");
        // The same chunk read from byte 3 on, three bytes.
        let mut part = vec![b'.'; 3];
        lay(2, 3, &mut part);
        assert_eq!(&part, b"YZ.");
        let mut tail = vec![b'.'; 8];
        lay(0, 1016, &mut tail);
        assert_eq!(&tail, b"....abcd");
    }

    /// The bytes a V2 body holds, pinned: reordering a field or a variant breaks every
    /// manifest already stored. A new layout is a new variant.
    #[test]
    fn sealing_borrows_the_manifest_and_writes_the_bytes_the_owned_form_would() {
        let m = sliced();
        let owned = postcard::to_stdvec(&VersionedManifest::V2(m.clone())).unwrap();
        assert_eq!(postcard::to_stdvec(&VersionedManifestRef::V2(&m)).unwrap(), owned);
        let Manifest { size, chunk_size, mode, mtime_ms, .. } = m;
        let v1 = ManifestV1 { size, chunk_size, mode, mtime_ms, chunks: m.chunks.clone() };
        let borrowed = ManifestV1Ref { size, chunk_size, mode, mtime_ms, chunks: &m.chunks };
        assert_eq!(
            postcard::to_stdvec(&VersionedManifestRef::V1(borrowed)).unwrap(),
            postcard::to_stdvec(&VersionedManifest::V1(v1)).unwrap()
        );
    }

    #[test]
    fn deltas_sealed_under_the_base_key_open_into_the_version_they_describe() {
        let dk = DataKey([9; 32]);
        let base = sliced();
        let (mut sealed, file_key) = base.seal(&dk);
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        // Two flushes' worth: each a new pack with slices in chunks 0 and 2.
        let mut want = base.clone();
        for (k, pack) in [(2u32, r(10, 8)), (3, r(11, 3))] {
            let mut next = want.clone();
            next.mtime_ms += 1;
            next.packs.push(pack);
            next.slices.push(Slice { index: 2, offset: 0, len: 3, pack: k, at: 0 });
            let after_chunk_0 = next.slices.partition_point(|s| s.index == 0);
            next.slices.insert(after_chunk_0, Slice { index: 0, offset: 0, len: 1, pack: k, at: 0 });
            let d = next.delta_from(&want).expect("only slices added");
            assert_eq!(d.packs.len(), 1);
            sealed.deltas.push(d.seal(&file_key));
            want = next;
        }
        assert_eq!(Manifest::open(&sealed, &dk).unwrap(), want);
        assert_eq!(Manifest::open_with_file_key(&sealed, &file_key).unwrap(), want);
        // A delta is not a base, nor a base a delta.
        assert!(open_random_nonce(&file_key, &sealed.deltas[0].0, VERSIONED_AAD).is_err());
        let mut swapped = sealed.clone();
        swapped.deltas[0] = SealedDelta(swapped.body.clone());
        assert!(Manifest::open(&swapped, &dk).is_err());
        // Sealed under another key: refused, not skipped.
        // A delta naming a chunk that is not there is refused, not laid over anything.
        let mut bad = sealed.clone();
        let swap = ChunkSwap { index: 7, chunk: r(12, 5), folded: 0 };
        let (size, swaps) = (base.size, vec![swap]);
        let d =
            ManifestDelta { size, mode: 0o644, mtime_ms: 1, swaps, appended: vec![], slices: vec![], packs: vec![] };
        bad.deltas.push(d.seal(&file_key));
        assert!(matches!(Manifest::open(&bad, &dk), Err(CoreError::BadManifest(_))));
        let mut foreign = sealed.clone();
        foreign.deltas.push(want.delta_from(&base).expect("slices added").seal(&[1; 32]));
        assert!(Manifest::open(&foreign, &dk).is_err());
    }

    #[test]
    fn a_delta_is_made_only_for_a_change_it_says_exactly() {
        let base = sliced();
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        let mut added = base.clone();
        added.packs.push(r(10, 4));
        added.slices.push(Slice { index: 2, offset: 0, len: 4, pack: 2, at: 0 });
        assert!(added.delta_from(&base).is_some());
        let touched = Manifest { mtime_ms: 9, ..base.clone() };
        let d = touched.delta_from(&base).expect("only the time changed");
        assert!(d.slices.is_empty() && d.packs.is_empty() && d.swaps.is_empty() && d.mtime_ms == 9);
        // A compaction landed: chunk 2 stored whole with its first slice folded in; the
        // pack that slice was in stays (other slices use it, and a delta never drops one).
        let mut compacted = added.clone();
        compacted.chunks[2] = r(21, 10);
        compacted.slices.remove(1);
        let d = compacted.delta_from(&base).expect("a swap and a slice");
        assert_eq!(d.swaps, vec![ChunkSwap { index: 2, chunk: r(21, 10), folded: 1 }]);
        let mut applied = base.clone();
        applied.apply(d).unwrap();
        assert_eq!(applied, compacted);
        let mut dropped = added.clone();
        dropped.slices.remove(0);
        assert!(dropped.delta_from(&base).is_none(), "a slice dropped from a chunk that was not swapped");
        let mut out_of_order = compacted.clone();
        out_of_order.slices.retain(|s| !(s.index == 2 && s.pack == 1));
        out_of_order.slices.insert(1, Slice { index: 2, offset: 0, len: 2, pack: 0, at: 4 });
        assert!(out_of_order.delta_from(&base).is_none(), "a later slice folded while an earlier one stays");
        let mut renumbered = added.clone();
        renumbered.packs.swap(0, 1);
        assert!(renumbered.delta_from(&base).is_none(), "the packs renumbered");
        // The file grew: its old last chunk stored whole again (its slices folded in) at
        // full length, and a new chunk after it.
        let mut grown = added.clone();
        grown.size = 3 * 1024 + 5;
        grown.chunks[2] = r(22, 1024);
        grown.chunks.push(r(23, 5));
        grown.slices.retain(|s| s.index != 2);
        let d = grown.delta_from(&base).expect("a swap and an appended chunk");
        assert_eq!((d.size, d.swaps.len(), d.appended.clone()), (grown.size, 1, vec![r(23, 5)]));
        let mut applied = base.clone();
        applied.apply(d).unwrap();
        assert_eq!(applied, grown);
        let mut shrunk = base.clone();
        shrunk.size = 2048;
        shrunk.chunks.pop();
        shrunk.slices.retain(|s| s.index != 2);
        assert!(shrunk.delta_from(&base).is_none(), "a file cut shorter");
    }

    /// A delta's bytes, pinned like a V2 body's: a stored delta must keep opening.
    #[test]
    fn the_delta_v2_layout_is_pinned() {
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        let d = ManifestDelta {
            size: 300,
            mode: 0o644,
            mtime_ms: 7,
            swaps: vec![ChunkSwap { index: 1, chunk: r(3, 5), folded: 2 }],
            appended: vec![r(4, 6)],
            slices: vec![Slice { index: 1, offset: 200, len: 4, pack: 0, at: 0 }],
            packs: vec![r(2, 4)],
        };
        let plain = postcard::to_stdvec(&VersionedDelta::V2(d.clone())).unwrap();
        let hex: String = plain.iter().map(|b| format!("{b:02x}")).collect();
        let header = "01ac02a4030e"; // V2, size 300, mode 0o644, mtime 7 (zigzag)
        let swap = format!("0101{}0502", "03".repeat(64)); // one swap: chunk 1 becomes (id, key, len 5), folds 2
        let appended = format!("01{}06", "04".repeat(64)); // one chunk appended: id, key, len 6
        let slice = "0101c801040000"; // one slice: chunk 1, offset 200, len 4, pack 0, at 0
        let pack = format!("01{}04", "02".repeat(64)); // one pack: id, key, len 4
        assert_eq!(hex, format!("{header}{swap}{appended}{slice}{pack}"));
        // Sealing borrows and writes the same bytes.
        let sealed = d.seal(&[5; 32]);
        assert_eq!(open_random_nonce(&[5; 32], &sealed.0, DELTA_AAD).unwrap(), plain);
    }

    /// What protocol 7 stored (a V1 delta: no size, no appended chunks) still opens, as a
    /// delta keeping the size of the version it follows.
    #[test]
    fn a_v1_delta_of_protocol_7_opens_keeping_the_size_it_follows() {
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        // The bytes protocol 7 pinned: V1, mode 0o644, mtime 7 (zigzag); one swap (chunk 1
        // becomes (id, key, len 5), folds 2); one slice (chunk 1, offset 200, len 4, pack 0,
        // at 0); one pack (id, key, len 4).
        let swap = format!("0101{}0502", "03".repeat(64));
        let pack = format!("01{}04", "02".repeat(64));
        let hex = format!("00a4030e{swap}0101c801040000{pack}");
        let plain: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let sealed = seal_random_nonce(&[5; 32], &plain, DELTA_AAD);
        let want = ManifestDelta {
            size: 300,
            mode: 0o644,
            mtime_ms: 7,
            swaps: vec![ChunkSwap { index: 1, chunk: r(3, 5), folded: 2 }],
            appended: vec![],
            slices: vec![Slice { index: 1, offset: 200, len: 4, pack: 0, at: 0 }],
            packs: vec![r(2, 4)],
        };
        assert_eq!(ManifestDelta::open(&sealed, &[5; 32], 300).unwrap(), want);
    }

    /// A log appended to by small writes keeps its old last chunk and puts what was appended
    /// in slices: a chunk may hold less than the part of the file it covers (read as zeros
    /// under its slices), never more, and slices may reach past its end within that part.
    #[test]
    fn a_chunk_may_hold_less_than_it_covers_never_more() {
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        let mut m = Manifest::whole(2 * 1024 + 700, 1024, 0o644, 1, vec![r(1, 300), r(2, 1024), r(3, 10)]);
        m.packs = vec![r(9, 1000)];
        m.slices = vec![
            Slice { index: 0, offset: 300, len: 724, pack: 0, at: 0 },
            Slice { index: 2, offset: 10, len: 276, pack: 0, at: 724 },
        ];
        assert_eq!((m.span(0), m.span(2), m.span(3)), (1024, 700, 0));
        m.validate().expect("short chunks, slices past their ends");
        let (sealed, _) = m.seal(&DataKey([4; 32]));
        assert_eq!(Manifest::open(&sealed, &DataKey([4; 32])).unwrap(), m);
        let mut plain = vec![7u8; 10];
        m.pad(2, &mut plain);
        assert_eq!((plain.len(), plain[9], plain[10]), (700, 7, 0), "padded with zeros to its span");
        let mut long = m.clone();
        long.chunks[2].len = 701;
        assert!(long.validate().is_err(), "a chunk longer than what it covers");
        let mut past = m.clone();
        past.slices[1].len = 691;
        assert!(past.validate().is_err(), "a slice past the end of the file");
    }

    #[test]
    fn the_v2_layout_is_pinned() {
        let r = |b: u8, len: u32| ChunkRef { id: ChunkId([b; 32]), key: [b; 32], len };
        let mut m = Manifest::whole(300, 512, 0o644, 7, vec![r(1, 300)]);
        m.packs = vec![r(2, 4)];
        m.slices = vec![Slice { index: 0, offset: 200, len: 4, pack: 0, at: 0 }];
        let plain = postcard::to_stdvec(&VersionedManifest::V2(m)).unwrap();
        let hex: String = plain.iter().map(|b| format!("{b:02x}")).collect();
        let header = "01ac028004a4030e"; // V2, size 300, chunk size 512, mode 0o644, mtime 7 (zigzag)
        let chunk = format!("01{}ac02", "01".repeat(64)); // one chunk: id, key, len 300
        let slice = "0100c801040000"; // one slice: chunk 0, offset 200, len 4, pack 0, at 0
        let pack = format!("01{}04", "02".repeat(64)); // one pack: id, key, len 4
        assert_eq!(hex, format!("{header}{chunk}{slice}{pack}"));
    }

    /// A small file kept in its manifest seals as V3, with these bytes: a stored one must
    /// keep opening. Files that are not kept inline still seal as V1 or V2, which protocol 9
    /// reads.
    #[test]
    fn a_file_kept_in_its_manifest_seals_as_v3_in_a_pinned_layout() {
        let dk = DataKey([9; 32]);
        let m = Manifest::inline(512, 0o644, 7, b"hello".to_vec());
        assert_eq!((m.size, m.referenced().count()), (5, 0));
        let (sealed, file_key) = m.seal(&dk);
        assert_eq!(Manifest::open(&sealed, &dk).unwrap(), m);
        let plain = open_random_nonce(&file_key, &sealed.body, VERSIONED_AAD).unwrap();
        let hex: String = plain.iter().map(|b| format!("{b:02x}")).collect();
        // V3, chunk size 512, mode 0o644, mtime 7 (zigzag), 5 bytes of data.
        assert_eq!(hex, format!("028004a4030e05{}", "68656c6c6f"));
        let empty = Manifest::inline(512, 0o600, 1, Vec::new());
        assert_eq!(Manifest::open(&empty.seal(&dk).0, &dk).unwrap(), empty);
    }

    #[test]
    fn a_file_kept_in_its_manifest_takes_no_delta_and_names_no_chunks() {
        let dk = DataKey([9; 32]);
        let m = Manifest::inline(512, 0o644, 7, b"hello".to_vec());
        let grown = Manifest::inline(512, 0o644, 8, b"hello, world".to_vec());
        assert!(grown.delta_from(&m).is_none(), "committed whole");
        let r = ChunkRef { id: ChunkId([1; 32]), key: [1; 32], len: 600 };
        let chunked = Manifest::whole(600, 512, 0o644, 8, vec![r.clone(), r.clone()]);
        assert!(chunked.delta_from(&m).is_none(), "grown out of its manifest: committed whole");
        let mut opened = m.clone();
        let d = ManifestDelta {
            size: 600,
            mode: 0o644,
            mtime_ms: 8,
            swaps: vec![],
            appended: vec![r.clone(), r],
            slices: vec![],
            packs: vec![],
        };
        assert!(matches!(opened.apply(d), Err(CoreError::BadManifest(_))));
        let bad = |f: fn(&mut Manifest)| {
            let mut m = m.clone();
            f(&mut m);
            assert!(matches!(m.validate(), Err(CoreError::BadManifest(_))), "{m:?}");
        };
        bad(|m| m.size = 6);
        bad(|m| m.chunks.push(ChunkRef { id: ChunkId([1; 32]), key: [1; 32], len: 5 }));
        let huge = Manifest::inline(512, 0o644, 7, vec![0; MAX_INLINE + 1]);
        assert!(matches!(Manifest::open(&huge.seal(&dk).0, &dk), Err(CoreError::BadManifest(_))));
    }
}
