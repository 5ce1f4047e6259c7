//! Links (protocol 5): read capabilities for one file version each. The tracker records
//! which version a link names, who made it and whether it was revoked; it never holds the
//! file's key, which travels in the link alone.

use swarmfs_proto::{ChunkId, EntryInfo, FileId, LinkId, LinkInfo, RemotePath, SealedManifest};

use super::sql::vals;
use super::{entry_from_row, now_ms, Db, ENTRY_COLS};
use crate::TrackerError;

impl Db {
    /// Records link `id` to the file at `path`, which must still be version `file_id`.
    pub fn add_link(
        &mut self,
        id: LinkId,
        path: &RemotePath,
        file_id: FileId,
        created_by: &str,
    ) -> Result<LinkInfo, TrackerError> {
        let mut tx = self.begin()?;
        let e = Self::entry(&mut *tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))?;
        if e.file_id != Some(file_id) {
            return Err(TrackerError::Invalid(format!(
                "{path} changed while the link was being made (it is another version now): try again"
            )));
        }
        let created_ms = now_ms();
        tx.exec(
            "INSERT INTO links (id, file_id, path, created_by, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            vals![id.0.as_slice(), file_id.as_bytes().as_slice(), path.as_str(), created_by, created_ms],
        )?;
        tx.commit()?;
        Ok(LinkInfo { id, file_id, path: path.to_string(), created_by: created_by.into(), created_ms, revoked: false })
    }

    pub fn links(&mut self) -> Result<Vec<LinkInfo>, TrackerError> {
        let mut tx = self.begin()?;
        let rows =
            tx.query("SELECT id, file_id, path, created_by, created_ms, revoked FROM links ORDER BY created_ms", &[])?;
        let mut out = Vec::new();
        for r in rows {
            out.push(LinkInfo {
                id: LinkId::from_slice(&r.blob(0)?)?,
                file_id: FileId::from_slice(&r.blob(1)?)?,
                path: r.text(2)?,
                created_by: r.text(3)?,
                created_ms: r.int(4)?,
                revoked: r.bool(5)?,
            });
        }
        Ok(out)
    }

    pub fn revoke_link(&mut self, id: &LinkId) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        if tx.exec("UPDATE links SET revoked = 1 WHERE id = ?1", vals![id.0.as_slice()])? == 0 {
            return Err(TrackerError::Missing(format!("no link {id} in this swarm")));
        }
        tx.commit()
    }

    /// The file version `file_id`, wherever it is now, for a link: its entry with the bare
    /// name as path (the link tells nothing of the directories around it) and its manifest.
    pub fn open_file_id(&mut self, file_id: &FileId) -> Result<(EntryInfo, SealedManifest), TrackerError> {
        let mut tx = self.begin()?;
        let found = tx.query_opt(
            &format!(
                "SELECT {ENTRY_COLS}, wrapped_key, manifest, lineage FROM entries WHERE file_id = ?1 AND kind = 1"
            ),
            vals![file_id.as_bytes().as_slice()],
        )?;
        let found = match found {
            Some(r) => {
                // entry_from_row reads columns 0 to 12.
                let entry = entry_from_row(&r)?;
                let (wrapped_key, body) = (r.opt_blob(13)?.unwrap_or_default(), r.opt_blob(14)?.unwrap_or_default());
                let deltas = Self::deltas(&mut *tx, r.opt_blob(15)?)?;
                Some((entry, SealedManifest { wrapped_key, body, deltas }))
            }
            None => None,
        };
        let (mut entry, manifest) = found.ok_or_else(|| {
            TrackerError::Missing("the file this link names was removed or replaced by a newer version".into())
        })?;
        let name = RemotePath::parse(&entry.path).map(|p| p.name().to_string()).unwrap_or_default();
        entry.path = format!("/{name}");
        Ok((entry, manifest))
    }

    /// Whether every one of `chunks` belongs to file version `file_id`.
    pub fn file_has_chunks(&mut self, file_id: &FileId, chunks: &[ChunkId]) -> Result<bool, TrackerError> {
        let mut tx = self.begin()?;
        for c in chunks {
            let found = tx.query_opt(
                "SELECT 1 FROM entries AS e JOIN refs AS r ON r.lineage = e.lineage
                 WHERE e.file_id = ?1 AND r.chunk = ?2",
                vals![file_id.as_bytes().as_slice(), c.as_bytes().as_slice()],
            )?;
            if found.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
