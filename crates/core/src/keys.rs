//! Secrets. Both are 32 random bytes; what they unlock differs.

use rand::RngCore;

/// Lets a client encrypt and decrypt files. Never leaves the users' clients.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub [u8; 32]);

/// Proves membership of a swarm; enough to store and serve ciphertext, not to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmSecret(pub [u8; 32]);

impl DataKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        DataKey(k)
    }
    /// Key for the keyed hash that makes per-chunk keys (convergent encryption).
    pub fn chunk_key_deriver(&self) -> [u8; 32] {
        blake3::derive_key("swarmfs 2026 chunk key", &self.0)
    }
    /// Key that wraps per-file manifest keys.
    pub fn manifest_wrap_key(&self) -> [u8; 32] {
        blake3::derive_key("swarmfs 2026 manifest wrap", &self.0)
    }
}

impl SwarmSecret {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        SwarmSecret(k)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl std::fmt::Debug for SwarmSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmSecret(..)")
    }
}
