//! A node's identity: an ed25519 key stored as PKCS#8 (0600) and a self-signed certificate
//! made from it at start-up. The NodeId is the raw public key.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use swarmfs_proto::NodeId;

use crate::NetError;

pub struct Identity {
    node_id: NodeId,
    key_pkcs8: Vec<u8>,
    cert_der: Vec<u8>,
}

impl Identity {
    pub fn generate() -> Result<Identity, NetError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| NetError::Identity { path: "(new)".into(), reason: e.to_string() })?;
        Self::from_pkcs8(kp.serialize_der(), "(new)")
    }

    /// Loads `path`, or creates it (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Identity, NetError> {
        let err = |reason: String| NetError::Identity { path: path.display().to_string(), reason };
        match std::fs::read(path) {
            Ok(der) => Self::from_pkcs8(der, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Self::generate()?;
                write_private(path, &id.key_pkcs8).map_err(|e| err(e.to_string()))?;
                Ok(id)
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn from_pkcs8(der: Vec<u8>, path: &str) -> Result<Identity, NetError> {
        let err = |reason: String| NetError::Identity { path: path.into(), reason };
        let kp = rcgen::KeyPair::try_from(der.as_slice()).map_err(|e| err(e.to_string()))?;
        let node_id = NodeId::from_slice(kp.public_key_raw()).map_err(|e| err(e.to_string()))?;
        let cert = rcgen::CertificateParams::new(vec!["swarmfs".to_string()])
            .and_then(|p| p.self_signed(&kp))
            .map_err(|e| err(e.to_string()))?;
        Ok(Identity { node_id, key_pkcs8: der, cert_der: cert.der().to_vec() })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub(crate) fn cert(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.cert_der.clone())
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// Writes a secret file readable by its owner only, created that way (no window where it is
/// world-readable), then fsynced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_reloads_with_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile_dir();
        let p = dir.join("identity.key");
        let a = Identity::load_or_create(&p).unwrap();
        let b = Identity::load_or_create(&p).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(crate::tls::node_id_of_cert(&a.cert_der), Some(a.node_id()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("swarmfs-id-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
