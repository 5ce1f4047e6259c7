//! The manifest lists a file's chunks and their keys. It is sealed under a random per-file
//! key (a read capability is file id + that key); the key is wrapped under the data key.
//!
//! Versions: a manifest is sealed as `postcard(VersionedManifest)` with [`VERSIONED_AAD`] as
//! the AEAD's associated data, so the format is authenticated with the contents and a
//! versioned body can never be taken for an older one. Protocol 2 sealed a bare
//! `postcard(Manifest)` with empty associated data ("format 0"); such bodies still open.
//! A new layout (erasure coding) is a new `VersionedManifest` variant, appended.

use rand::RngCore;
use ring::aead::{Aad, Nonce};
use serde::{Deserialize, Serialize};
use swarmfs_proto::{ChunkId, SealedManifest};

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

/// What a sealed manifest body holds. Variants are only ever appended.
#[derive(Serialize, Deserialize)]
enum VersionedManifest {
    V1(Manifest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub size: u64,
    pub chunk_size: u32,
    pub mode: u32,
    pub mtime_ms: i64,
    pub chunks: Vec<ChunkRef>,
}

impl Manifest {
    /// Seals with a fresh per-file key; returns the sealed form and that key.
    pub fn seal(&self, data_key: &DataKey) -> (SealedManifest, [u8; 32]) {
        let mut file_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut file_key);
        let plain = postcard::to_stdvec(&VersionedManifest::V1(self.clone())).expect("encodes");
        let body = seal_random_nonce(&file_key, &plain, VERSIONED_AAD);
        let wrapped_key = seal_random_nonce(&data_key.manifest_wrap_key(), &file_key, b"");
        (SealedManifest { wrapped_key, body }, file_key)
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
                VersionedManifest::V1(m) => m,
            },
            // Format 0 (protocol 2): no associated data, no version tag.
            Err(_) => {
                postcard::from_bytes::<Manifest>(&open_random_nonce(file_key, &sealed.body, b"")?).map_err(bad)?
            }
        };
        m.validate()?;
        Ok(m)
    }

    /// A decrypted manifest is still checked: sizes must add up before anyone trusts them.
    fn validate(&self) -> Result<(), CoreError> {
        crate::check_chunk_size(self.chunk_size as u64)?;
        let expected = crate::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != expected {
            return Err(CoreError::BadManifest("chunk count does not match size".into()));
        }
        let total: u64 = self.chunks.iter().map(|c| c.len as u64).sum();
        if total != self.size || self.chunks.iter().any(|c| c.len > self.chunk_size) {
            return Err(CoreError::BadManifest("chunk lengths do not add up".into()));
        }
        Ok(())
    }
}

fn seal_random_nonce(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let mut buf = plain.to_vec();
    aead(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .expect("small input");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
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
        let m = Manifest {
            size: 1500,
            chunk_size: 1024,
            mode: 0o644,
            mtime_ms: 5,
            chunks: vec![
                ChunkRef { id: ChunkId([1; 32]), key: [2; 32], len: 1024 },
                ChunkRef { id: ChunkId([3; 32]), key: [4; 32], len: 476 },
            ],
        };
        let dk = DataKey([9; 32]);
        let (sealed, file_key) = m.seal(&dk);
        assert_eq!(Manifest::open(&sealed, &dk).unwrap(), m);
        assert_eq!(Manifest::open_with_file_key(&sealed, &file_key).unwrap(), m);
        assert!(matches!(Manifest::open(&sealed, &DataKey([8; 32])), Err(CoreError::Decrypt)));
    }

    #[test]
    fn a_format_0_manifest_from_protocol_2_still_opens() {
        let m = Manifest {
            size: 3,
            chunk_size: 512,
            mode: 0o644,
            mtime_ms: 1,
            chunks: vec![ChunkRef { id: ChunkId([5; 32]), key: [6; 32], len: 3 }],
        };
        let dk = DataKey([9; 32]);
        // Sealed exactly as protocol 2 did: bare postcard, no associated data.
        let file_key = [7u8; 32];
        let legacy = SealedManifest {
            wrapped_key: seal_random_nonce(&dk.manifest_wrap_key(), &file_key, b""),
            body: seal_random_nonce(&file_key, &postcard::to_stdvec(&m).unwrap(), b""),
        };
        assert_eq!(Manifest::open(&legacy, &dk).unwrap(), m);
        // And today's body is tagged: opening it as format 0 fails authentication.
        let (sealed, file_key) = m.seal(&dk);
        assert!(open_random_nonce(&file_key, &sealed.body, b"").is_err());
        let plain = open_random_nonce(&file_key, &sealed.body, VERSIONED_AAD).unwrap();
        assert_eq!(plain[0], 0, "variant V1");
    }
}
