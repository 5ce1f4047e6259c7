//! Convergent chunk encryption.
//!
//! `key = BLAKE3-keyed(derive(data_key), plaintext)`: the key is unique per content, so
//! the fixed all-zero nonce never repeats under one key. Equal plaintexts give equal
//! ciphertexts (dedup), yet nobody without the data key can confirm a guessed plaintext.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use swarmfs_proto::ChunkId;

use crate::CoreError;

pub const TAG_LEN: usize = 16;

pub struct SealedChunk {
    pub id: ChunkId,
    pub key: [u8; 32],
    /// Ciphertext followed by the 16-byte GCM tag.
    pub ciphertext: Vec<u8>,
}

/// Encrypts one chunk. `deriver` is [`crate::DataKey::chunk_key_deriver`].
pub fn seal_chunk(deriver: &[u8; 32], plaintext: &[u8]) -> SealedChunk {
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    seal_chunk_in_place(deriver, buf)
}

/// [`seal_chunk`] in the plaintext's own buffer: no copy when it has room for the tag
/// ([`TAG_LEN`] bytes of spare capacity).
pub fn seal_chunk_in_place(deriver: &[u8; 32], mut buf: Vec<u8>) -> SealedChunk {
    let key = *blake3::keyed_hash(deriver, &buf).as_bytes();
    aead(&key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut buf)
        .expect("AES-GCM sealing only fails past 2^36 bytes");
    let id = ChunkId(*blake3::hash(&buf).as_bytes());
    SealedChunk { id, key, ciphertext: buf }
}

/// Verifies `ciphertext` against `id`, then decrypts it in place and returns the plaintext.
pub fn open_chunk(id: &ChunkId, key: &[u8; 32], mut ciphertext: Vec<u8>) -> Result<Vec<u8>, CoreError> {
    verify_chunk(id, &ciphertext)?;
    let len = aead(key)
        .open_in_place(Nonce::assume_unique_for_key([0; 12]), Aad::empty(), &mut ciphertext)
        .map_err(|_| CoreError::Decrypt)?
        .len();
    ciphertext.truncate(len);
    Ok(ciphertext)
}

pub fn verify_chunk(id: &ChunkId, ciphertext: &[u8]) -> Result<(), CoreError> {
    if blake3::hash(ciphertext).as_bytes() != id.as_bytes() {
        return Err(CoreError::HashMismatch(*id));
    }
    Ok(())
}

pub(crate) fn aead(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("32-byte key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DataKey;

    #[test]
    fn round_trip_convergence_and_tamper() {
        let dk = DataKey([7; 32]);
        let d = dk.chunk_key_deriver();
        for size in [0usize, 1, 511, 512, 513, 100_000] {
            let pt: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let a = seal_chunk(&d, &pt);
            let b = seal_chunk(&d, &pt);
            assert_eq!(a.id, b.id, "same plaintext and key give the same chunk");
            let c = seal_chunk_in_place(&d, pt.clone());
            assert_eq!((c.id, c.key, &c.ciphertext), (a.id, a.key, &a.ciphertext), "in place, the same chunk");
            assert_eq!(a.ciphertext.len(), size + TAG_LEN);
            assert_eq!(open_chunk(&a.id, &a.key, a.ciphertext.clone()).unwrap(), pt);
            let mut bad = a.ciphertext.clone();
            bad[0] ^= 1;
            assert!(matches!(open_chunk(&a.id, &a.key, bad), Err(CoreError::HashMismatch(_))));
        }
        let other = DataKey([8; 32]).chunk_key_deriver();
        assert_ne!(seal_chunk(&d, b"x").id, seal_chunk(&other, b"x").id, "other swarms cannot confirm content");
    }

    #[test]
    fn ciphertext_hides_plaintext_marker() {
        let marker = b"SWARMFS-PLAINTEXT-MARKER-0123456789";
        let c = seal_chunk(&DataKey([1; 32]).chunk_key_deriver(), marker);
        assert!(!c.ciphertext.windows(marker.len()).any(|w| w == marker));
    }
}
