//! TLS 1.3 both ways, no certificate authorities: each side pins the other's certificate to
//! a NodeId. The dialer knows which NodeId it wants (from the tracker or the token); the
//! listener accepts any ed25519 certificate and learns the dialer's NodeId from it. rustls
//! still checks the handshake signature, which proves the peer holds that key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use swarmfs_proto::NodeId;

use crate::Identity;

/// DER of an ed25519 SubjectPublicKeyInfo up to the key: SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The NodeId a certificate speaks for: its ed25519 public key. A certificate holding the
/// SPKI pattern more than once is refused rather than guessed at.
pub fn node_id_of_cert(der: &[u8]) -> Option<NodeId> {
    let mut found = None;
    for (i, w) in der.windows(ED25519_SPKI_PREFIX.len()).enumerate() {
        if w == ED25519_SPKI_PREFIX {
            if found.is_some() {
                return None;
            }
            let start = i + ED25519_SPKI_PREFIX.len();
            found = Some(NodeId::from_slice(der.get(start..start + 32)?).ok()?);
        }
    }
    found
}

/// ring's provider with AES-128-GCM first. Chunk payloads are already AES-256-GCM under the
/// data key end to end; the transport protects metadata and authenticity, for which AES-128
/// is ample, and it costs less CPU per byte on the hot path.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
}

#[derive(Debug)]
struct PinnedServer {
    expected: NodeId,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match node_id_of_cert(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General(WRONG_NODE.into())),
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Marker in the rustls error so the dialer can tell a pin mismatch from other failures.
pub(crate) const WRONG_NODE: &str = "certificate does not match the expected node id";

#[derive(Debug)]
struct AnyNode;

impl ClientCertVerifier for AnyNode {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_of_cert(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or_else(|| rustls::Error::General("client certificate is not an ed25519 node certificate".into()))
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

pub fn client_config(identity: &Identity, expected: NodeId) -> Arc<ClientConfig> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer { expected }))
        .with_client_auth_cert(vec![identity.cert()], identity.key())
        .expect("our own ed25519 key is valid");
    Arc::new(cfg)
}

pub fn server_config(identity: &Identity) -> Arc<ServerConfig> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(AnyNode))
        .with_single_cert(vec![identity.cert()], identity.key())
        .expect("our own ed25519 key is valid");
    Arc::new(cfg)
}
