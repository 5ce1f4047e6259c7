//! Fixed-size identifiers. All are 32 bytes and print as lowercase hex.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::ProtoError;

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// First 8 hex digits: enough to tell nodes apart in logs and tables.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| ProtoError::InvalidId("expected 32 bytes"))?;
                Ok(Self(arr))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ProtoError;
            fn from_str(s: &str) -> Result<Self, ProtoError> {
                let v = hex::decode(s).map_err(|_| ProtoError::InvalidId("not hex"))?;
                Self::from_slice(&v)
            }
        }
    };
}

id32!(
    /// A node's ed25519 public key; TLS certificates are pinned to it.
    NodeId
);
id32!(
    /// BLAKE3 of a chunk's ciphertext: storage peers verify it without any key.
    ChunkId
);
id32!(
    /// Random id of a file version; with the manifest key it forms a read capability.
    FileId
);

/// A link's id (protocol 5): 16 random bytes, shorter than the others because a link is
/// pasted by hand. Prints as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LinkId(pub [u8; 16]);

impl LinkId {
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        Ok(LinkId(bytes.try_into().map_err(|_| ProtoError::InvalidId("expected 16 bytes"))?))
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkId({})", self.short())
    }
}

impl FromStr for LinkId {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Self, ProtoError> {
        Self::from_slice(&hex::decode(s).map_err(|_| ProtoError::InvalidId("not hex"))?)
    }
}
