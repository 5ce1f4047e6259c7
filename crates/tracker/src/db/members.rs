//! Members and their credentials (protocol 3). The secret is what the tracker checks a
//! member's hello proof against; it is not the data key, which the tracker never holds.

use swarmfs_proto::MemberInfo;

use super::sql::vals;
use super::{now_ms, Db};
use crate::TrackerError;

#[derive(Clone)]
pub struct MemberRow {
    pub name: String,
    pub secret: [u8; 32],
    pub read_only: bool,
    pub revoked: bool,
    pub created_ms: i64,
}

impl MemberRow {
    pub fn info(&self) -> MemberInfo {
        MemberInfo {
            name: self.name.clone(),
            read_only: self.read_only,
            revoked: self.revoked,
            created_ms: self.created_ms,
        }
    }
}

/// A member name: 1 to 64 of `A-Z a-z 0-9 . _ -`, so it shows and types safely everywhere.
pub fn check_member_name(name: &str) -> Result<(), TrackerError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TrackerError::Invalid(format!("{name:?} is not a member name (1-64 of A-Z a-z 0-9 . _ -)")))
    }
}

impl Db {
    /// Registers a member; a name is never reused, even once revoked.
    pub fn add_member(&mut self, name: &str, secret: &[u8; 32], read_only: bool) -> Result<MemberRow, TrackerError> {
        check_member_name(name)?;
        let mut tx = self.begin()?;
        if tx.query_opt("SELECT 1 FROM members WHERE name = ?1", vals![name])?.is_some() {
            return Err(TrackerError::AlreadyExists(format!("member {name}")));
        }
        let created_ms = now_ms();
        tx.exec(
            "INSERT INTO members (name, secret, read_only, revoked, created_ms) VALUES (?1, ?2, ?3, 0, ?4)",
            vals![name, secret.as_slice(), read_only, created_ms],
        )?;
        tx.commit()?;
        Ok(MemberRow { name: name.into(), secret: *secret, read_only, revoked: false, created_ms })
    }

    pub fn members(&mut self) -> Result<Vec<MemberRow>, TrackerError> {
        let mut tx = self.begin()?;
        let rows = tx.query("SELECT name, secret, read_only, revoked, created_ms FROM members ORDER BY name", &[])?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    name: r.text(0)?,
                    secret: r.blob(1)?.try_into().unwrap_or([0; 32]),
                    read_only: r.bool(2)?,
                    revoked: r.bool(3)?,
                    created_ms: r.int(4)?,
                })
            })
            .collect()
    }

    pub fn revoke_member(&mut self, name: &str) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        if tx.exec("UPDATE members SET revoked = 1 WHERE name = ?1", vals![name])? == 0 {
            return Err(TrackerError::NotFound(format!("member {name}")));
        }
        tx.commit()
    }
}
