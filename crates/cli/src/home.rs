//! A home directory: one node's or client's identity, swarm membership and data.
//!
//! ```text
//! HOME/identity.key   ed25519 private key (PKCS#8), mode 0600
//! HOME/swarm.json     tracker address and id, swarm secret, data key if a member; 0600
//! HOME/tracker.db     the tracker's database (tracker homes)
//! HOME/store/         the chunk store (peer homes)
//! ```
//!
//! `swarm.json` carries `"version"`: 1 today; a file without one was written by protocol 2
//! and has the same fields. A swarm with several trackers also lists them all in
//! `tracker_addrs` (`tracker_addr` stays the first, so an older build still finds one). A version this build does not know is refused, not guessed at.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use swarmfs_core::{DataKey, SwarmSecret, Token};
use swarmfs_net::{Identity, Swarm};
use swarmfs_proto::{MemberKey, NodeId};

/// The `swarm.json` layout this build writes.
const SWARM_FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SwarmFile {
    /// 0 (absent) for files written by protocol 2; same fields as 1.
    #[serde(default)]
    version: u32,
    tracker_addr: String,
    /// Every tracker, when there are several (the first is `tracker_addr`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tracker_addrs: Vec<String>,
    tracker_id: String,
    swarm_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_key: Option<String>,
    /// A member's own credential (member tokens of version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<MemberFile>,
}

#[derive(Serialize, Deserialize)]
struct MemberFile {
    name: String,
    secret: String,
    read_only: bool,
}

pub struct Home {
    pub dir: PathBuf,
    pub token: Token,
}

impl Home {
    pub fn swarm_file(dir: &Path) -> PathBuf {
        dir.join("swarm.json")
    }

    /// Writes the membership of `token` into `dir` (creating it) and makes an identity.
    pub fn create(dir: &Path, token: &Token) -> Result<Home> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = SwarmFile {
            version: SWARM_FILE_VERSION,
            tracker_addr: token.tracker_addr().to_string(),
            tracker_addrs: if token.tracker_addrs.len() > 1 { token.tracker_addrs.clone() } else { vec![] },
            tracker_id: token.tracker_id.to_string(),
            swarm_secret: hex::encode(token.swarm_secret.0),
            data_key: token.data_key.as_ref().map(|k| hex::encode(k.0)),
            member: token.member.as_ref().map(|m| MemberFile {
                name: m.name.clone(),
                secret: hex::encode(m.secret),
                read_only: m.read_only,
            }),
        };
        let json = serde_json::to_vec_pretty(&file)?;
        swarmfs_net::identity::write_private(&Self::swarm_file(dir), &json)
            .with_context(|| format!("writing {}", Self::swarm_file(dir).display()))?;
        Identity::load_or_create(&dir.join("identity.key"))?;
        Ok(Home { dir: dir.to_path_buf(), token: token.clone() })
    }

    pub fn load(dir: &Path) -> Result<Home> {
        let path = Self::swarm_file(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} is not a swarmfs home (no swarm.json): run `swarmfs join TOKEN --home {}` first",
                dir.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let f: SwarmFile = serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))?;
        if f.version > SWARM_FILE_VERSION {
            bail!(
                "{} has version {}, written by a newer swarmfs; this one reads up to {SWARM_FILE_VERSION}",
                path.display(),
                f.version
            );
        }
        let key32 = |s: &str, what: &str| -> Result<[u8; 32]> {
            hex::decode(s)
                .ok()
                .and_then(|v| v.try_into().ok())
                .with_context(|| format!("{}: {what} is not 32 hex bytes", path.display()))
        };
        let token = Token {
            tracker_addrs: if f.tracker_addrs.is_empty() { vec![f.tracker_addr] } else { f.tracker_addrs },
            tracker_id: f
                .tracker_id
                .parse::<NodeId>()
                .with_context(|| format!("{}: bad tracker_id", path.display()))?,
            swarm_secret: SwarmSecret(key32(&f.swarm_secret, "swarm_secret")?),
            data_key: f.data_key.as_deref().map(|k| key32(k, "data_key").map(DataKey)).transpose()?,
            member: f
                .member
                .map(|m| {
                    Ok::<_, anyhow::Error>(MemberKey {
                        secret: key32(&m.secret, "member secret")?,
                        name: m.name,
                        read_only: m.read_only,
                    })
                })
                .transpose()?,
        };
        Ok(Home { dir: dir.to_path_buf(), token })
    }

    pub fn identity(&self) -> Result<Identity> {
        Ok(Identity::load_or_create(&self.dir.join("identity.key"))?)
    }

    pub fn swarm(&self) -> Result<Arc<Swarm>> {
        Ok(Arc::new(Swarm {
            identity: self.identity()?,
            secret: swarmfs_net::Secret::Swarm(self.token.swarm_secret.0),
            member: self.token.member.clone(),
        }))
    }

    /// The credentials a client uses: refuses a member home from before per-member
    /// credentials, which would otherwise connect with no more than a peer's rights.
    pub fn client_swarm(&self) -> Result<Arc<Swarm>> {
        if self.token.data_key.is_some() && self.token.member.is_none() {
            return Err(crate::Refused(format!(
                "{} holds a member token from before per-member credentials (protocol 2); get a new one: \
                 on the tracker, `swarmfs member add NAME --home TRACKER_HOME --data-key-from {}`, then \
                 `swarmfs join TOKEN --home {}`",
                self.dir.display(),
                self.dir.display(),
                self.dir.display()
            ))
            .into());
        }
        self.swarm()
    }
}
