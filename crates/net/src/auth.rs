//! Proof of membership after TLS. Each side sends `BLAKE3-keyed(secret, label || exporter)`
//! where `exporter` is the TLS keying-material exporter of this session: a proof seen on one
//! connection is worthless on any other, and the labels stop a proof being reflected back.
//!
//! A link's holder (protocol 5) has no swarm secret: it proves the link's secret instead,
//! `BLAKE3-keyed(derive_key("swarmfs 2026 link", swarm secret), link id)`, which every node
//! that knows the swarm secret can compute from the id alone, so peers check links without
//! asking the tracker. Only the tracker knows which file a link grants, and whether it was
//! revoked.

use swarmfs_proto::{
    Frame, FrameKind, Hello, HelloReply, HelloVersion, LinkId, MemberKey, MemberProof, Role, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::io::{read_frame_within, write_frame, HANDSHAKE_FRAME_MAX};
use crate::NetError;

pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-swarmfs-membership";

pub(crate) fn proof(secret: &[u8; 32], label: &[u8], exporter: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(secret);
    h.update(label);
    h.update(exporter);
    *h.finalize().as_bytes()
}

/// A member's proof for this TLS session: its own secret, bound the same way.
pub fn member_proof(member_secret: &[u8; 32], exporter: &[u8; 32]) -> [u8; 32] {
    proof(member_secret, b"member", exporter)
}

/// What a node proves in its hello: the swarm secret, or one link's secret.
#[derive(Clone)]
pub enum Secret {
    Swarm([u8; 32]),
    Link { id: LinkId, secret: [u8; 32] },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Swarm(_) => f.write_str("Secret::Swarm(..)"),
            Secret::Link { id, .. } => write!(f, "Secret::Link({id:?})"),
        }
    }
}

/// The secret of link `id` in the swarm whose secret is `swarm_secret`.
pub fn link_secret(swarm_secret: &[u8; 32], id: &LinkId) -> [u8; 32] {
    let key = blake3::derive_key("swarmfs 2026 link", swarm_secret);
    *blake3::keyed_hash(&key, &id.0).as_bytes()
}

pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Dialer side: prove (with the member's own credential when there is one), then check the
/// listener's proof.
pub(crate) async fn hello_dialer<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &Secret,
    member: Option<&MemberKey>,
    exporter: &[u8; 32],
    role: Role,
) -> Result<(), NetError> {
    let (secret, link) = match secret {
        Secret::Swarm(k) => (k, None),
        Secret::Link { id, secret } => (secret, Some(*id)),
    };
    let member = member
        .filter(|_| link.is_none())
        .map(|m| MemberProof { name: m.name.clone(), proof: member_proof(&m.secret, exporter) });
    let hello = Hello { version: PROTOCOL_VERSION, role, proof: proof(secret, b"dialer", exporter), member, link };
    write_frame(s, &Frame::new(FrameKind::Hello, 0, &hello, Default::default())).await?;
    s.flush().await?;
    let f = read_frame_within(s, HANDSHAKE_FRAME_MAX)
        .await?
        .ok_or(NetError::NotMember("the other side closed the connection".into()))?;
    if f.kind != FrameKind::HelloReply {
        return Err(NetError::Proto(swarmfs_proto::ProtoError::Malformed("expected a hello reply")));
    }
    match f.decode_meta::<HelloReply>()? {
        HelloReply::Refused { reason } => Err(NetError::NotMember(reason)),
        HelloReply::Welcome { version, .. } if version != PROTOCOL_VERSION => {
            Err(NetError::Version { ours: PROTOCOL_VERSION, theirs: version })
        }
        HelloReply::Welcome { proof: p, .. } => {
            if ct_eq(&p, &proof(secret, b"listener", exporter)) {
                Ok(())
            } else {
                Err(NetError::NotMember("the other side could not prove it belongs to this swarm".into()))
            }
        }
    }
}

/// Listener side: check the dialer's proof before anything else is read, then let `admit`
/// decide what the dialer has proven (or refuse it with a reason the dialer sees). The hello
/// is read under [`HANDSHAKE_FRAME_MAX`]: before the proof, a stranger's frame costs a few
/// KiB at most. Its version is read first, alone, so a node of another protocol version is
/// told which one this node speaks whatever else its hello holds.
pub(crate) async fn hello_listener<S: AsyncRead + AsyncWrite + Unpin, T>(
    s: &mut S,
    secret: &Secret,
    exporter: &[u8; 32],
    admit: impl FnOnce(&Hello) -> Result<T, String>,
) -> Result<(Hello, T), NetError> {
    let f = read_frame_within(s, HANDSHAKE_FRAME_MAX).await?.ok_or(NetError::Closed)?;
    if f.kind != FrameKind::Hello {
        return Err(NetError::Proto(swarmfs_proto::ProtoError::Malformed("expected a hello")));
    }
    let refuse = |reason: &str| {
        Frame::new(FrameKind::HelloReply, 0, &HelloReply::Refused { reason: reason.into() }, Default::default())
    };
    let version = f.decode_meta::<HelloVersion>()?.version;
    if version != PROTOCOL_VERSION {
        let msg = format!("protocol version {version} is not supported (this node speaks {PROTOCOL_VERSION})");
        write_frame(s, &refuse(&msg)).await?;
        s.flush().await?;
        return Err(NetError::Version { ours: PROTOCOL_VERSION, theirs: version });
    }
    let hello: Hello = f.decode_meta()?;
    let key = match (secret, hello.link) {
        (Secret::Swarm(k), None) => Some(*k),
        (Secret::Swarm(k), Some(id)) => Some(link_secret(k, &id)),
        (Secret::Link { id, secret }, Some(theirs)) if *id == theirs => Some(*secret),
        (Secret::Link { .. }, _) => None,
    };
    let Some(secret) = key.filter(|k| ct_eq(&hello.proof, &proof(k, b"dialer", exporter))) else {
        let (reason, log) = match hello.link {
            Some(_) => ("not a link of this swarm", "dialer gave a wrong link proof"),
            None => ("not a member of this swarm", "dialer gave a wrong swarm proof"),
        };
        write_frame(s, &refuse(reason)).await?;
        s.flush().await?;
        return Err(NetError::NotMember(log.into()));
    };
    let secret = &secret;
    let admitted = match admit(&hello) {
        Ok(t) => t,
        Err(reason) => {
            write_frame(s, &refuse(&reason)).await?;
            s.flush().await?;
            return Err(NetError::NotMember(reason));
        }
    };
    let reply = HelloReply::Welcome { version: PROTOCOL_VERSION, proof: proof(secret, b"listener", exporter) };
    write_frame(s, &Frame::new(FrameKind::HelloReply, 0, &reply, Default::default())).await?;
    s.flush().await?;
    Ok((hello, admitted))
}
