//! Tokens carry what a home needs to join a swarm, as one copy-pasteable line.
//!
//! `swarmfs-peer-<base64url>` holds the tracker addresses, the tracker's NodeId (to pin its
//! certificate) and the swarm secret. A swarm with several trackers (one identity, one
//! PostgreSQL database) puts every tracker's address in its tokens: token version 3. A
//! token naming one tracker is still written as version 2, so a swarm with one tracker
//! keeps tokens that older builds read. `swarmfs-member-<base64url>` adds the data key and,
//! from token version 2 (protocol 3), the member's own credential. A version-1 member token
//! still decodes, with no credential: the tracker grants it no more than a peer token.
//!
//! `swarmfs-link-<base64url>` (protocol 5) is a read capability for one file version: the
//! tracker's address and NodeId, the link's id and secret (its proof of admission, in place
//! of the swarm secret), the file's id and the key its manifest is sealed with. It holds no
//! swarm secret and no data key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use swarmfs_proto::{FileId, LinkId, MemberKey, NodeId};

use crate::{CoreError, DataKey, SwarmSecret};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Peer,
    Member,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Every tracker's address, the one to try first first; never empty.
    pub tracker_addrs: Vec<String>,
    pub tracker_id: NodeId,
    pub swarm_secret: SwarmSecret,
    pub data_key: Option<DataKey>,
    /// The member's own credential (a member token of version 2).
    pub member: Option<MemberKey>,
}

/// Token version 1 (protocol 2).
#[derive(Serialize, Deserialize)]
struct WireV1 {
    version: u8,
    tracker_addr: String,
    tracker_id: NodeId,
    swarm_secret: [u8; 32],
    data_key: Option<[u8; 32]>,
}

/// Token version 2: version 1 and the member's credential.
#[derive(Serialize, Deserialize)]
struct WireV2 {
    version: u8,
    tracker_addr: String,
    tracker_id: NodeId,
    swarm_secret: [u8; 32],
    data_key: Option<[u8; 32]>,
    member: Option<MemberKey>,
}

/// Token version 3: version 2 with every tracker's address.
#[derive(Serialize, Deserialize)]
struct Wire {
    version: u8,
    tracker_addrs: Vec<String>,
    tracker_id: NodeId,
    swarm_secret: [u8; 32],
    data_key: Option<[u8; 32]>,
    member: Option<MemberKey>,
}

const PEER_PREFIX: &str = "swarmfs-peer-";
const MEMBER_PREFIX: &str = "swarmfs-member-";

impl Token {
    pub fn kind(&self) -> TokenKind {
        if self.data_key.is_some() {
            TokenKind::Member
        } else {
            TokenKind::Peer
        }
    }

    /// The same swarm without the data key or a member credential.
    pub fn to_peer(&self) -> Token {
        Token { data_key: None, member: None, ..self.clone() }
    }

    /// The tracker to try first (also the one that brokers NAT traversal).
    pub fn tracker_addr(&self) -> &str {
        self.tracker_addrs.first().map(String::as_str).unwrap_or("")
    }

    pub fn encode(&self) -> String {
        let (tracker_id, swarm_secret, data_key) =
            (self.tracker_id, self.swarm_secret.0, self.data_key.as_ref().map(|k| k.0));
        let bytes = match self.tracker_addrs.as_slice() {
            [one] => postcard::to_stdvec(&WireV2 {
                version: 2,
                tracker_addr: one.clone(),
                tracker_id,
                swarm_secret,
                data_key,
                member: self.member.clone(),
            }),
            many => postcard::to_stdvec(&Wire {
                version: 3,
                tracker_addrs: many.to_vec(),
                tracker_id,
                swarm_secret,
                data_key,
                member: self.member.clone(),
            }),
        };
        let prefix = if self.data_key.is_some() { MEMBER_PREFIX } else { PEER_PREFIX };
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes.expect("encodes")))
    }

    pub fn decode(s: &str) -> Result<Token, CoreError> {
        let s = s.trim();
        let (body, member) = if let Some(b) = s.strip_prefix(MEMBER_PREFIX) {
            (b, true)
        } else if let Some(b) = s.strip_prefix(PEER_PREFIX) {
            (b, false)
        } else {
            return Err(CoreError::BadToken("it must start with swarmfs-peer- or swarmfs-member-"));
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| CoreError::BadToken("not base64url"))?;
        let corrupt = |_| CoreError::BadToken("truncated or corrupted");
        let wire: Wire = match bytes.first() {
            Some(1) => {
                let v1: WireV1 = postcard::from_bytes(&bytes).map_err(corrupt)?;
                Wire {
                    version: 1,
                    tracker_addrs: vec![v1.tracker_addr],
                    tracker_id: v1.tracker_id,
                    swarm_secret: v1.swarm_secret,
                    data_key: v1.data_key,
                    member: None,
                }
            }
            Some(2) => {
                let v2: WireV2 = postcard::from_bytes(&bytes).map_err(corrupt)?;
                Wire {
                    version: 2,
                    tracker_addrs: vec![v2.tracker_addr],
                    tracker_id: v2.tracker_id,
                    swarm_secret: v2.swarm_secret,
                    data_key: v2.data_key,
                    member: v2.member,
                }
            }
            Some(3) => postcard::from_bytes(&bytes).map_err(corrupt)?,
            _ => return Err(CoreError::BadToken("unknown token version")),
        };
        if member != wire.data_key.is_some() {
            return Err(CoreError::BadToken("prefix does not match contents"));
        }
        if wire.tracker_addrs.is_empty() {
            return Err(CoreError::BadToken("it names no tracker"));
        }
        Ok(Token {
            tracker_addrs: wire.tracker_addrs,
            tracker_id: wire.tracker_id,
            swarm_secret: SwarmSecret(wire.swarm_secret),
            data_key: wire.data_key.map(DataKey),
            member: wire.member,
        })
    }
}

/// A link: read one file version, nothing else (see the module's documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Link {
    pub tracker_addr: String,
    pub tracker_id: NodeId,
    pub id: LinkId,
    pub secret: [u8; 32],
    pub file_id: FileId,
    pub file_key: [u8; 32],
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("tracker_addr", &self.tracker_addr).field("id", &self.id).finish()
    }
}

/// Link version 1 (protocol 5).
#[derive(Serialize, Deserialize)]
struct LinkWire {
    version: u8,
    tracker_addr: String,
    tracker_id: NodeId,
    id: LinkId,
    secret: [u8; 32],
    file_id: FileId,
    file_key: [u8; 32],
}

const LINK_PREFIX: &str = "swarmfs-link-";

impl Link {
    /// Whether `s` is meant as a link (it may still fail to decode).
    pub fn looks_like(s: &str) -> bool {
        s.trim().starts_with(LINK_PREFIX)
    }

    pub fn encode(&self) -> String {
        let wire = LinkWire {
            version: 1,
            tracker_addr: self.tracker_addr.clone(),
            tracker_id: self.tracker_id,
            id: self.id,
            secret: self.secret,
            file_id: self.file_id,
            file_key: self.file_key,
        };
        format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(postcard::to_stdvec(&wire).expect("encodes")))
    }

    pub fn decode(s: &str) -> Result<Link, CoreError> {
        let body = s.trim().strip_prefix(LINK_PREFIX).ok_or(CoreError::BadToken("a link starts with swarmfs-link-"))?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| CoreError::BadToken("not base64url"))?;
        if bytes.first() != Some(&1) {
            return Err(CoreError::BadToken("unknown link version"));
        }
        let w: LinkWire = postcard::from_bytes(&bytes).map_err(|_| CoreError::BadToken("truncated or corrupted"))?;
        Ok(Link {
            tracker_addr: w.tracker_addr,
            tracker_id: w.tracker_id,
            id: w.id,
            secret: w.secret,
            file_id: w.file_id,
            file_key: w.file_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_round_trips_and_stays_short_enough_to_paste() {
        let l = Link {
            tracker_addr: "203.0.113.7:7000".into(),
            tracker_id: NodeId([5; 32]),
            id: LinkId([6; 16]),
            secret: [7; 32],
            file_id: FileId([8; 32]),
            file_key: [9; 32],
        };
        let s = l.encode();
        assert!(s.starts_with("swarmfs-link-") && Link::looks_like(&s));
        assert_eq!(Link::decode(&format!("  {s}\n")).unwrap(), l);
        assert!(s.len() < 260, "{} characters", s.len());
        assert!(Link::decode(&s[..s.len() - 10]).is_err(), "a truncated link is refused");
        assert!(Link::decode("swarmfs-member-AAAA").is_err());
    }

    #[test]
    fn round_trip_both_kinds() {
        let t = Token {
            tracker_addrs: vec!["127.0.0.1:7000".into()],
            tracker_id: NodeId([5; 32]),
            swarm_secret: SwarmSecret([6; 32]),
            data_key: Some(DataKey([7; 32])),
            member: Some(MemberKey { name: "ann".into(), secret: [8; 32], read_only: true }),
        };
        let m = t.encode();
        assert!(m.starts_with("swarmfs-member-"));
        assert_eq!(Token::decode(&m).unwrap(), t);
        let p = t.to_peer().encode();
        assert!(p.starts_with("swarmfs-peer-"));
        assert_eq!(Token::decode(&p).unwrap().kind(), TokenKind::Peer);
        assert!(Token::decode("swarmfs-peer-AAAA").is_err());
        assert!(Token::decode("hello").is_err());
    }

    #[test]
    fn a_version_1_member_token_decodes_without_a_credential() {
        let v1 = WireV1 {
            version: 1,
            tracker_addr: "127.0.0.1:7000".into(),
            tracker_id: NodeId([5; 32]),
            swarm_secret: [6; 32],
            data_key: Some([7; 32]),
        };
        let s = format!("{MEMBER_PREFIX}{}", URL_SAFE_NO_PAD.encode(postcard::to_stdvec(&v1).unwrap()));
        let t = Token::decode(&s).unwrap();
        assert_eq!((t.kind(), t.member), (TokenKind::Member, None));
    }

    #[test]
    fn a_token_naming_several_trackers_is_version_3_and_one_tracker_stays_version_2() {
        let one = Token {
            tracker_addrs: vec!["10.0.0.1:7000".into()],
            tracker_id: NodeId([5; 32]),
            swarm_secret: SwarmSecret([6; 32]),
            data_key: None,
            member: None,
        };
        let body = |t: &Token| URL_SAFE_NO_PAD.decode(t.encode().strip_prefix(PEER_PREFIX).unwrap()).unwrap();
        assert_eq!(body(&one)[0], 2, "older builds still read a one-tracker token");
        let two = Token { tracker_addrs: vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()], ..one.clone() };
        assert_eq!(body(&two)[0], 3);
        let back = Token::decode(&two.encode()).unwrap();
        assert_eq!(back.tracker_addrs, two.tracker_addrs);
        assert_eq!(back.tracker_addr(), "10.0.0.1:7000");
        assert_eq!(Token::decode(&one.encode()).unwrap(), one);
    }
}
