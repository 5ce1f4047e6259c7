//! Links (protocol 5): read capabilities for one file version each. The tracker records
//! which version a link names, who made it and whether it was revoked; it never holds the
//! file's key, which travels in the link alone.

use rusqlite::{params, OptionalExtension};
use swarmfs_proto::{ChunkId, EntryInfo, FileId, LinkId, LinkInfo, RemotePath, SealedManifest};

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
        let tx = self.conn.transaction()?;
        let e = Self::entry(&tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))?;
        if e.file_id != Some(file_id) {
            return Err(TrackerError::Invalid(format!(
                "{path} changed while the link was being made (it is another version now): try again"
            )));
        }
        let created_ms = now_ms();
        tx.execute(
            "INSERT INTO links (id, file_id, path, created_by, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id.0.as_slice(), file_id.as_bytes().as_slice(), path.as_str(), created_by, created_ms],
        )?;
        tx.commit()?;
        Ok(LinkInfo { id, file_id, path: path.to_string(), created_by: created_by.into(), created_ms, revoked: false })
    }

    pub fn links(&self) -> Result<Vec<LinkInfo>, TrackerError> {
        let mut st = self
            .conn
            .prepare("SELECT id, file_id, path, created_by, created_ms, revoked FROM links ORDER BY created_ms")?;
        let rows = st.query_map([], |r| {
            let (id, file): (Vec<u8>, Vec<u8>) = (r.get(0)?, r.get(1)?);
            Ok((id, file, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, file, path, created_by, created_ms, revoked) = row?;
            out.push(LinkInfo {
                id: LinkId::from_slice(&id)?,
                file_id: FileId::from_slice(&file)?,
                path,
                created_by,
                created_ms,
                revoked,
            });
        }
        Ok(out)
    }

    pub fn revoke_link(&mut self, id: &LinkId) -> Result<(), TrackerError> {
        if self.conn.execute("UPDATE links SET revoked = 1 WHERE id = ?1", [id.0.as_slice()])? == 0 {
            return Err(TrackerError::Missing(format!("no link {id} in this swarm")));
        }
        Ok(())
    }

    /// The file version `file_id`, wherever it is now, for a link: its entry with the bare
    /// name as path (the link tells nothing of the directories around it) and its manifest.
    pub fn open_file_id(&mut self, file_id: &FileId) -> Result<(EntryInfo, SealedManifest), TrackerError> {
        let tx = self.conn.transaction()?;
        let found = tx
            .query_row(
                &format!("SELECT {ENTRY_COLS}, wrapped_key, manifest FROM entries WHERE file_id = ?1 AND kind = 1"),
                [file_id.as_bytes().as_slice()],
                |r| {
                    // entry_from_row reads columns 0 to 12.
                    let n = 13;
                    let entry = entry_from_row(r)?;
                    let wrapped_key = r.get::<_, Option<Vec<u8>>>(n)?.unwrap_or_default();
                    let body = r.get::<_, Option<Vec<u8>>>(n + 1)?.unwrap_or_default();
                    Ok((entry, SealedManifest { wrapped_key, body }))
                },
            )
            .optional()?;
        let (mut entry, manifest) = found.ok_or_else(|| {
            TrackerError::Missing("the file this link names was removed or replaced by a newer version".into())
        })?;
        let name = RemotePath::parse(&entry.path).map(|p| p.name().to_string()).unwrap_or_default();
        entry.path = format!("/{name}");
        Ok((entry, manifest))
    }

    /// Whether every one of `chunks` belongs to file version `file_id`.
    pub fn file_has_chunks(&mut self, file_id: &FileId, chunks: &[ChunkId]) -> Result<bool, TrackerError> {
        let tx = self.conn.transaction()?;
        let mut st = tx.prepare_cached("SELECT 1 FROM refs WHERE file_id = ?1 AND chunk = ?2")?;
        for c in chunks {
            let found: Option<i64> = st
                .query_row(params![file_id.as_bytes().as_slice(), c.as_bytes().as_slice()], |r| r.get(0))
                .optional()?;
            if found.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
