//! The tracker's durable state. Every method is one transaction, written once against the
//! [`sql`] interface; the engine is SQLite (embedded, the default) or PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use swarmfs_proto::{
    ChunkId, ChunkPlacement, EntryInfo, EntryKind, FileId, NodeId, RemotePath, SealedDelta, SealedManifest,
    MAX_MANIFEST_DELTAS,
};

use crate::TrackerError;

use sql::{vals, Durability, Engine, Row, Tx, Value};

mod gc;
mod links;
mod members;
mod migrations;
mod postgres;
mod repair;
pub mod sql;

pub use repair::{RepairView, ViewFile};

pub use members::MemberRow;

pub struct Db {
    engine: Box<dyn Engine>,
    /// How long an unreferenced chunk waits before it is deleted.
    gc_delay_ms: i64,
}

/// What [`Db::create`] makes.
pub struct NewEntry<'a> {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// A symlink's target; ignored for other kinds.
    pub target: Option<&'a str>,
    /// The entry's mtime and ctime when the creator chose them (see `Request::Create`).
    pub time_ms: Option<i64>,
}

/// A peer as remembered across restarts (liveness is not remembered; draining is).
pub struct StoredPeer {
    pub node: NodeId,
    pub addrs: Vec<String>,
    pub capacity: u64,
    pub used: u64,
    pub chunks: u64,
    pub draining: bool,
}

/// A file version as [`Db::commit_file`] records it.
pub struct NewFile<'a> {
    pub size: u64,
    pub file_id: FileId,
    pub manifest: &'a SealedManifest,
    pub placements: &'a [ChunkPlacement],
    pub mtime_ms: Option<i64>,
    /// Durable copies wanted of each chunk (R).
    pub replicas: u8,
    /// The mode and owner the entry takes if `path` has none yet: a create and its first
    /// commit in one (`CommitNewFile`). A new entry otherwise takes 0644 and root.
    pub created: Option<Owner>,
}

/// A new entry's mode and owner.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A version committed as a delta over the file's current one, as [`Db::commit_delta`]
/// records it.
pub struct NewDelta<'a> {
    pub size: u64,
    /// The version it follows: still the file's, or the delta is refused.
    pub parent: FileId,
    pub file_id: FileId,
    pub delta: &'a SealedDelta,
    /// The chunks it adds.
    pub placements: &'a [ChunkPlacement],
    pub mtime_ms: Option<i64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn entry_from_row(row: &Row) -> Result<EntryInfo, TrackerError> {
    let kind = match row.int(1)? {
        0 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        3 => EntryKind::Special,
        _ => EntryKind::File,
    };
    Ok(EntryInfo {
        path: row.text(0)?,
        kind,
        size: row.int(2)? as u64,
        mtime_ms: row.int(3)?,
        file_id: row.opt_blob(4)?.and_then(|b| FileId::from_slice(&b).ok()),
        chunks: row.int(5)? as u32,
        mode: row.int(6)? as u32,
        uid: row.int(7)? as u32,
        gid: row.int(8)? as u32,
        rdev: row.int(9)? as u32,
        ctime_ms: row.int(10)?,
        nlink: row.int(11)? as u32,
        replicas: row.int(12)?.clamp(0, u8::MAX as i64) as u8,
    })
}

const ENTRY_COLS: &str = "path, kind, size, mtime_ms, file_id, chunks, mode, uid, gid, rdev, ctime_ms, \
    CASE kind WHEN 0 THEN 2 + (SELECT count(*) FROM entries AS c WHERE c.parent = entries.path AND c.kind = 0) ELSE 1 END, \
    replicas";

/// Rows or ids per statement when many go at once: one round trip per group on a database
/// server, and far below every engine's limit on parameters.
const GROUP: usize = 500;

/// `?first, ?first+1, ...`, `n` of them.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

/// Inserts two-column rows into `table (a, b)`, [`GROUP`] per statement; rows already there
/// are left as they are.
fn insert_pairs(tx: &mut dyn Tx, table: &str, rows: impl Iterator<Item = [Vec<u8>; 2]>) -> Result<(), TrackerError> {
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let group: Vec<Value> = rows.by_ref().take(GROUP).flatten().map(Value::Blob).collect();
        let values: Vec<String> = (0..group.len() / 2).map(|i| format!("({})", placeholders(2 * i + 1, 2))).collect();
        tx.exec(&format!("INSERT INTO {table} VALUES {} ON CONFLICT DO NOTHING", values.join(", ")), &group)?;
    }
    Ok(())
}

/// Records every holder a commit names for each of its chunks.
fn insert_locations(tx: &mut dyn Tx, placements: &[ChunkPlacement]) -> Result<(), TrackerError> {
    let locations =
        placements.iter().flat_map(|p| p.holders.iter().map(|n| [p.chunk.as_bytes().to_vec(), n.as_bytes().to_vec()]));
    insert_pairs(tx, "locations (chunk, node)", locations)
}

/// Every table and its columns, for [`Db::adopt`].
const TABLES: &[(&str, &str)] = &[
    (
        "entries",
        "path, parent, kind, size, mtime_ms, file_id, chunks, wrapped_key, manifest, mode, target, uid, gid, rdev, \
         ctime_ms, replicas, lineage",
    ),
    ("peers", "node, addrs, capacity, used, chunks, draining"),
    ("locations", "chunk, node"),
    ("refs", "lineage, chunk"),
    ("gc_queue", "chunk, due_ms"),
    ("members", "name, secret, read_only, revoked, created_ms"),
    ("collected", "chunk, node, at_ms"),
    ("links", "id, file_id, path, created_by, created_ms, revoked"),
    ("manifest_deltas", "lineage, seq, body"),
];

/// Any number that names the adoption among a database's advisory locks.
const ADOPT_LOCK: i64 = 0x7377_6172_6d66_7302;

fn kind_code(k: EntryKind) -> i64 {
    match k {
        EntryKind::Dir => 0,
        EntryKind::File => 1,
        EntryKind::Symlink => 2,
        EntryKind::Special => 3,
    }
}

impl Db {
    /// Opens (creating and migrating as needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Db, TrackerError> {
        let conn = rusqlite::Connection::open(path)?;
        // WAL + FULL: a commit is on disk before the client hears "ok", kill -9 or not.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&conn)?;
        Db::on(Box::new(sql::Sqlite(conn)))
    }

    /// Connects to the PostgreSQL database at `url` and brings its schema up to date.
    pub async fn postgres(url: &str) -> Result<Db, TrackerError> {
        Db::on(Box::new(postgres::Postgres::connect(url).await?))
    }

    /// Copies `from` into this database if this one holds no swarm yet (no member): the first
    /// tracker started on an empty PostgreSQL database takes over the swarm its home's SQLite
    /// file holds (the owner `init` registered, and everything since). Several trackers
    /// starting at once copy it once. The rows copied, or `None` if this database already
    /// held a swarm.
    pub fn adopt(&mut self, from: &mut Db) -> Result<Option<u64>, TrackerError> {
        let mut tx = self.begin()?;
        if tx.dialect() == sql::Dialect::Postgres {
            tx.exec("SELECT pg_advisory_xact_lock(?1)", vals![ADOPT_LOCK])?;
        }
        if tx.query_opt("SELECT 1 FROM members LIMIT 1", &[])?.is_some() {
            return Ok(None);
        }
        // Only the root so far, made on open; the copy brings the swarm's own.
        tx.exec("DELETE FROM entries", &[])?;
        let mut src = from.begin()?;
        let mut copied = 0;
        for (table, cols) in TABLES {
            let placeholders: Vec<String> = (1..=cols.split(',').count()).map(|i| format!("?{i}")).collect();
            let insert = format!("INSERT INTO {table} ({cols}) VALUES ({})", placeholders.join(", "));
            src.each(&format!("SELECT {cols} FROM {table}"), &[], &mut |row| {
                tx.exec(&insert, &row.0)?;
                copied += 1;
                Ok(())
            })?;
        }
        drop(src);
        tx.commit()?;
        Ok(Some(copied))
    }

    /// The tracker's state on an engine whose schema is current.
    fn on(mut engine: Box<dyn Engine>) -> Result<Db, TrackerError> {
        // The root is a row too, so its permissions and times behave like any directory's.
        let mut tx = engine.begin(Durability::Full)?;
        tx.exec(
            "INSERT INTO entries (path, parent, kind, size, mtime_ms, mode, ctime_ms) VALUES ('/', '', 0, 0, ?1, 493, ?1)
             ON CONFLICT DO NOTHING",
            vals![now_ms()],
        )?;
        tx.commit()?;
        Ok(Db { engine, gc_delay_ms: 60_000 })
    }

    fn begin(&mut self) -> Result<Box<dyn Tx + '_>, TrackerError> {
        self.engine.begin(Durability::Full)
    }

    /// Whether a short read is only CPU on this machine (SQLite), not a network round trip.
    pub fn reads_locally(&self) -> bool {
        self.engine.reads_locally()
    }

    /// A directory's entries changed: its mtime and ctime move, as POSIX wants.
    fn touch_dir(tx: &mut dyn Tx, dir: &RemotePath) -> Result<(), TrackerError> {
        tx.exec("UPDATE entries SET mtime_ms = ?2, ctime_ms = ?2 WHERE path = ?1", vals![dir.as_str(), now_ms()])?;
        Ok(())
    }

    fn entry(tx: &mut dyn Tx, path: &RemotePath) -> Result<Option<EntryInfo>, TrackerError> {
        tx.query_opt(&format!("SELECT {ENTRY_COLS} FROM entries WHERE path = ?1"), vals![path.as_str()])?
            .map(|r| entry_from_row(&r))
            .transpose()
    }

    /// The lineage of the file at `path` (None for anything else, or a file never committed),
    /// its row locked until the transaction ends on PostgreSQL: a commit computes which
    /// references change from it, and two commits to one file must not both start from the
    /// same old set.
    fn lineage(tx: &mut dyn Tx, path: &RemotePath) -> Result<Option<Vec<u8>>, TrackerError> {
        let lock = if tx.dialect() == sql::Dialect::Postgres { " FOR UPDATE" } else { "" };
        match tx.query_opt(&format!("SELECT lineage FROM entries WHERE path = ?1{lock}"), vals![path.as_str()])? {
            Some(row) => row.opt_blob(0),
            None => Ok(None),
        }
    }

    fn require_dir(tx: &mut dyn Tx, path: &RemotePath) -> Result<(), TrackerError> {
        match Self::entry(tx, path)? {
            Some(e) if e.kind == EntryKind::Dir => Ok(()),
            Some(_) => Err(TrackerError::NotADirectory(path.to_string())),
            None => Err(TrackerError::NotFound(path.to_string())),
        }
    }

    pub fn stat(&mut self, path: &RemotePath) -> Result<EntryInfo, TrackerError> {
        let mut tx = self.begin()?;
        Self::entry(&mut *tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))
    }

    /// Makes directories with mode 0755 (a mount creates with other modes through `create`).
    pub fn mkdir(&mut self, path: &RemotePath, parents: bool) -> Result<EntryInfo, TrackerError> {
        let mut tx = self.begin()?;
        let mut todo = vec![path.clone()];
        if parents {
            let mut p = path.parent();
            while !p.is_root() {
                todo.push(p.clone());
                p = p.parent();
            }
            todo.reverse();
        }
        for dir in &todo {
            match Self::entry(&mut *tx, dir)? {
                Some(e) if e.kind == EntryKind::Dir => {
                    if dir == path && !parents {
                        return Err(TrackerError::AlreadyExists(dir.to_string()));
                    }
                    continue;
                }
                Some(_) => {
                    return Err(if dir == path {
                        TrackerError::AlreadyExists(dir.to_string())
                    } else {
                        TrackerError::NotADirectory(dir.to_string())
                    })
                }
                None => {}
            }
            Self::require_dir(&mut *tx, &dir.parent())?;
            tx.exec(
                "INSERT INTO entries (path, parent, kind, size, mtime_ms, mode, ctime_ms) VALUES (?1, ?2, 0, 0, ?3, 493, ?3)",
                vals![dir.as_str(), dir.parent().as_str(), now_ms()],
            )?;
            Self::touch_dir(&mut *tx, &dir.parent())?;
        }
        let e = Self::entry(&mut *tx, path)?.expect("just created");
        tx.commit()?;
        Ok(e)
    }

    pub fn list(&mut self, path: &RemotePath) -> Result<Vec<EntryInfo>, TrackerError> {
        let mut tx = self.begin()?;
        match Self::entry(&mut *tx, path)? {
            None => return Err(TrackerError::NotFound(path.to_string())),
            Some(e) if e.kind == EntryKind::File => return Ok(vec![e]),
            Some(_) => {}
        }
        tx.query(&format!("SELECT {ENTRY_COLS} FROM entries WHERE parent = ?1 ORDER BY path"), vals![path.as_str()])?
            .iter()
            .map(entry_from_row)
            .collect()
    }

    pub fn search(&mut self, text: &str, limit: usize) -> Result<Vec<EntryInfo>, TrackerError> {
        let needle = text.to_lowercase();
        let mut tx = self.begin()?;
        let contains = match tx.dialect() {
            sql::Dialect::Sqlite => "instr(lower(path), ?1) > 0",
            sql::Dialect::Postgres => "strpos(lower(path), ?1) > 0",
        };
        let rows = tx.query(
            &format!("SELECT {ENTRY_COLS} FROM entries WHERE {contains} ORDER BY path"),
            vals![needle.as_str()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let e = entry_from_row(&row)?;
            let name = e.path.rsplit('/').next().unwrap_or("").to_lowercase();
            if name.contains(&needle) {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&mut self, path: &RemotePath, recursive: bool) -> Result<(), TrackerError> {
        if path.is_root() {
            return Err(TrackerError::Invalid("cannot remove the root directory".into()));
        }
        let delay = self.gc_delay_ms;
        let mut tx = self.begin()?;
        let e = Self::entry(&mut *tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))?;
        if e.kind == EntryKind::Dir {
            let children =
                tx.query_one("SELECT count(*) FROM entries WHERE parent = ?1", vals![path.as_str()])?.int(0)?;
            if children > 0 && !recursive {
                return Err(TrackerError::NotEmpty(path.to_string()));
            }
        }
        Self::release_under(&mut *tx, path, delay)?;
        if e.kind == EntryKind::Dir {
            tx.exec("DELETE FROM entries WHERE substr(path, 1, length(?1) + 1) = ?1 || '/'", vals![path.as_str()])?;
        }
        tx.exec("DELETE FROM entries WHERE path = ?1", vals![path.as_str()])?;
        Self::touch_dir(&mut *tx, &path.parent())?;
        tx.commit()?;
        Ok(())
    }

    pub fn rename(&mut self, from: &RemotePath, to: &RemotePath) -> Result<(), TrackerError> {
        if from.is_root() || to.is_root() {
            return Err(TrackerError::Invalid("cannot rename the root directory".into()));
        }
        if from == to {
            return Ok(());
        }
        let delay = self.gc_delay_ms;
        let mut tx = self.begin()?;
        let src = Self::entry(&mut *tx, from)?.ok_or_else(|| TrackerError::NotFound(from.to_string()))?;
        if src.kind == EntryKind::Dir && to.starts_with(from) {
            return Err(TrackerError::Invalid(format!("cannot move {from} into itself")));
        }
        Self::require_dir(&mut *tx, &to.parent())?;
        if let Some(dst) = Self::entry(&mut *tx, to)? {
            let (sk, dk) = (src.kind == EntryKind::Dir, dst.kind == EntryKind::Dir);
            match (sk, dk) {
                (false, false) => {}
                (true, true) => {
                    let n =
                        tx.query_one("SELECT count(*) FROM entries WHERE parent = ?1", vals![to.as_str()])?.int(0)?;
                    if n > 0 {
                        return Err(TrackerError::NotEmpty(to.to_string()));
                    }
                }
                (false, true) => return Err(TrackerError::IsADirectory(to.to_string())),
                (true, false) => return Err(TrackerError::NotADirectory(to.to_string())),
            }
            Self::release_under(&mut *tx, to, delay)?;
            tx.exec("DELETE FROM entries WHERE path = ?1", vals![to.as_str()])?;
        }
        tx.exec(
            "UPDATE entries SET path = ?2, parent = ?3, ctime_ms = ?4 WHERE path = ?1",
            vals![from.as_str(), to.as_str(), to.parent().as_str(), now_ms()],
        )?;
        Self::touch_dir(&mut *tx, &from.parent())?;
        Self::touch_dir(&mut *tx, &to.parent())?;
        if src.kind == EntryKind::Dir {
            // Descendants: swap the prefix in both path and parent.
            tx.exec(
                "UPDATE entries SET path = ?2 || substr(path, length(?1) + 1), parent = ?2 || substr(parent, length(?1) + 1)
                 WHERE substr(path, 1, length(?1) + 1) = ?1 || '/'",
                vals![from.as_str(), to.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes a file visible (or replaces it) together with its chunk locations: both or
    /// neither, so a reader never sees a file whose chunks cannot be found.
    ///
    /// A holder whose copy the collector deleted since (an upload that took longer than the
    /// GC delay, its chunks collected as orphans) is not recorded; a chunk left with no
    /// holder at all refuses the commit, so a file is never made visible without its data.
    pub fn commit_file(&mut self, path: &RemotePath, file: &NewFile<'_>) -> Result<EntryInfo, TrackerError> {
        let NewFile { size, file_id, manifest, placements, mtime_ms, replicas, created } = *file;
        if path.is_root() {
            return Err(TrackerError::IsADirectory("/".into()));
        }
        let delay = self.gc_delay_ms;
        let mut tx = self.begin()?;
        Self::require_dir(&mut *tx, &path.parent())?;
        let Owner { mut mode, mut uid, mut gid } = created.unwrap_or(Owner { mode: 0o644, uid: 0, gid: 0 });
        let existing = Self::entry(&mut *tx, path)?;
        if let Some(e) = &existing {
            if e.kind == EntryKind::Dir {
                return Err(TrackerError::IsADirectory(path.to_string()));
            }
            // Overwriting a file keeps its permissions and owner, as writing to it would.
            (mode, uid, gid) = (e.mode, e.uid, e.gid);
        }
        // A new version keeps the file's lineage and the references under it: only those
        // that differ change (see db/gc.rs). A file's first version starts its lineage.
        let held = match &existing {
            Some(_) => Self::lineage(&mut *tx, path)?,
            None => None,
        };
        let old: HashSet<ChunkId> = match &held {
            Some(lineage) => tx
                .query("SELECT chunk FROM refs WHERE lineage = ?1", vals![lineage.as_slice()])?
                .into_iter()
                .filter_map(|r| r.blob(0).ok().and_then(|b| ChunkId::from_slice(&b).ok()))
                .collect(),
            None => HashSet::new(),
        };
        let lineage = held.unwrap_or_else(|| file_id.as_bytes().to_vec());
        let new: HashSet<ChunkId> = placements.iter().map(|p| p.chunk).collect();
        let added: Vec<ChunkId> = new.difference(&old).copied().collect();
        let dropped: Vec<ChunkId> = old.difference(&new).copied().collect();
        Self::refuse_claimed(&mut *tx, &added)?;
        let placements = Self::without_collected(&mut *tx, placements)?;
        // Every column is set, as a fresh row would have it (a symlink replaced by a file
        // loses its target).
        // PostgreSQL keys entries by the path's hash (see db/postgres.rs).
        let key = match tx.dialect() {
            sql::Dialect::Sqlite => "path",
            sql::Dialect::Postgres => "path_key",
        };
        tx.exec(
            &format!(
                "INSERT INTO entries
                 (path, parent, kind, size, mtime_ms, file_id, chunks, wrapped_key, manifest, mode, uid, gid, ctime_ms,
                  replicas, lineage, target, rdev)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL, 0)
             ON CONFLICT ({key}) DO UPDATE SET parent = excluded.parent, kind = excluded.kind, size = excluded.size,
                 mtime_ms = excluded.mtime_ms, file_id = excluded.file_id, chunks = excluded.chunks,
                 wrapped_key = excluded.wrapped_key, manifest = excluded.manifest, mode = excluded.mode,
                 uid = excluded.uid, gid = excluded.gid, ctime_ms = excluded.ctime_ms, replicas = excluded.replicas,
                 lineage = excluded.lineage, target = NULL, rdev = 0"
            ),
            vals![
                path.as_str(),
                path.parent().as_str(),
                size as i64,
                mtime_ms.unwrap_or_else(now_ms),
                file_id.as_bytes().as_slice(),
                placements.len() as i64,
                manifest.wrapped_key.as_slice(),
                manifest.body.as_slice(),
                mode,
                uid,
                gid,
                now_ms(),
                replicas,
                lineage.as_slice()
            ],
        )?;
        if existing.is_none() {
            Self::touch_dir(&mut *tx, &path.parent())?;
        }
        // Only what changed: chunks this version adds go in, chunks it no longer uses come
        // out (and are queued as garbage if no other file references them).
        let refs = added.iter().map(|c| [lineage.clone(), c.as_bytes().to_vec()]);
        insert_pairs(&mut *tx, "refs (lineage, chunk)", refs)?;
        Self::release_chunks(&mut *tx, &lineage, &dropped, delay)?;
        // The manifest is whole again: the deltas laid over the one it replaces go (a new
        // file's lineage has none).
        if existing.is_some() {
            tx.exec("DELETE FROM manifest_deltas WHERE lineage = ?1", vals![lineage.as_slice()])?;
        }
        insert_locations(&mut *tx, &placements)?;
        let e = Self::entry(&mut *tx, path)?.expect("just written");
        tx.commit()?;
        Ok(e)
    }

    /// Makes a version that only adds to the file's current one visible: its delta after
    /// the file's manifest and earlier deltas, the chunks it adds with their locations, all
    /// or nothing. Refused (`CommitWhole`) when `parent` is no longer the file's version or
    /// the file has [`MAX_MANIFEST_DELTAS`] already; the client then commits the version
    /// whole. A holder the collector deleted a copy from is not counted, as in
    /// [`Db::commit_file`].
    pub fn commit_delta(&mut self, path: &RemotePath, new: &NewDelta<'_>) -> Result<EntryInfo, TrackerError> {
        let NewDelta { size, parent, file_id, delta, placements, mtime_ms } = *new;
        let mut tx = self.begin()?;
        // Locks the row on PostgreSQL until the commit: two deltas to one file are ordered.
        let lineage = Self::lineage(&mut *tx, path)?;
        let e = Self::entry(&mut *tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))?;
        if e.kind != EntryKind::File {
            return Err(TrackerError::Invalid(format!("{path} is not a regular file")));
        }
        if size < e.size {
            return Err(TrackerError::Invalid(format!("a delta cannot make {path} shorter")));
        }
        let (Some(lineage), true) = (lineage, e.file_id == Some(parent)) else {
            return Err(TrackerError::CommitWhole(format!(
                "{path} changed since the version this delta follows: commit it whole"
            )));
        };
        let r = tx.query_one(
            "SELECT count(*), coalesce(max(seq), -1) FROM manifest_deltas WHERE lineage = ?1",
            vals![lineage.as_slice()],
        )?;
        let (count, last) = (r.int(0)?, r.int(1)?);
        if count >= MAX_MANIFEST_DELTAS as i64 {
            return Err(TrackerError::CommitWhole(format!(
                "{path} has {count} manifest deltas, as many as a file keeps: commit it whole"
            )));
        }
        let chunks: Vec<ChunkId> = placements.iter().map(|p| p.chunk).collect();
        let held = Self::referenced_by(&mut *tx, &lineage, &chunks)?;
        let added: Vec<ChunkId> = chunks.iter().copied().filter(|c| !held.contains(c)).collect();
        Self::refuse_claimed(&mut *tx, &added)?;
        let placements = Self::without_collected(&mut *tx, placements)?;
        tx.exec(
            "INSERT INTO manifest_deltas (lineage, seq, body) VALUES (?1, ?2, ?3)",
            vals![lineage.as_slice(), last + 1, delta.0.as_slice()],
        )?;
        tx.exec(
            "UPDATE entries SET file_id = ?2, mtime_ms = ?3, chunks = chunks + ?4, ctime_ms = ?5, size = ?6
             WHERE path = ?1",
            vals![
                path.as_str(),
                file_id.as_bytes().as_slice(),
                mtime_ms.unwrap_or_else(now_ms),
                added.len() as i64,
                now_ms(),
                size as i64
            ],
        )?;
        let refs = added.iter().map(|c| [lineage.clone(), c.as_bytes().to_vec()]);
        insert_pairs(&mut *tx, "refs (lineage, chunk)", refs)?;
        insert_locations(&mut *tx, &placements)?;
        let e = Self::entry(&mut *tx, path)?.expect("just written");
        tx.commit()?;
        Ok(e)
    }

    /// Those of `chunks` the file at `lineage` references already.
    fn referenced_by(tx: &mut dyn Tx, lineage: &[u8], chunks: &[ChunkId]) -> Result<HashSet<ChunkId>, TrackerError> {
        let mut held = HashSet::new();
        for group in chunks.chunks(GROUP) {
            let mut params = vec![Value::Blob(lineage.to_vec())];
            params.extend(group.iter().map(|c| Value::Blob(c.as_bytes().to_vec())));
            let rows = tx.query(
                &format!("SELECT chunk FROM refs WHERE lineage = ?1 AND chunk IN ({})", placeholders(2, group.len())),
                &params,
            )?;
            for r in rows {
                held.extend(ChunkId::from_slice(&r.blob(0)?).ok());
            }
        }
        Ok(held)
    }

    /// The deltas laid over the manifest of the file at `lineage`, oldest first.
    fn deltas(tx: &mut dyn Tx, lineage: Option<Vec<u8>>) -> Result<Vec<SealedDelta>, TrackerError> {
        let Some(lineage) = lineage else { return Ok(Vec::new()) };
        tx.query("SELECT body FROM manifest_deltas WHERE lineage = ?1 ORDER BY seq", vals![lineage.as_slice()])?
            .into_iter()
            .map(|r| r.blob(0).map(SealedDelta))
            .collect()
    }

    pub fn set_attr(
        &mut self,
        path: &RemotePath,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        mtime_ms: Option<i64>,
    ) -> Result<EntryInfo, TrackerError> {
        let mut tx = self.begin()?;
        let e = Self::entry(&mut *tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))?;
        if let Some(m) = mode {
            // Permission bits change; a special file's type bits stay.
            let m = (e.mode & 0o170000) | (m & 0o7777);
            tx.exec("UPDATE entries SET mode = ?2 WHERE path = ?1", vals![path.as_str(), m])?;
        }
        if let Some(u) = uid {
            tx.exec("UPDATE entries SET uid = ?2 WHERE path = ?1", vals![path.as_str(), u])?;
        }
        if let Some(g) = gid {
            tx.exec("UPDATE entries SET gid = ?2 WHERE path = ?1", vals![path.as_str(), g])?;
        }
        if let Some(t) = mtime_ms {
            tx.exec("UPDATE entries SET mtime_ms = ?2 WHERE path = ?1", vals![path.as_str(), t])?;
        }
        tx.exec("UPDATE entries SET ctime_ms = ?2 WHERE path = ?1", vals![path.as_str(), now_ms()])?;
        let e = Self::entry(&mut *tx, path)?.expect("exists");
        tx.commit()?;
        Ok(e)
    }

    /// Creates an empty file, directory, symlink or special file; the name must be free.
    pub fn create(&mut self, path: &RemotePath, new: &NewEntry<'_>) -> Result<EntryInfo, TrackerError> {
        if path.is_root() {
            return Err(TrackerError::AlreadyExists("/".into()));
        }
        if new.kind == EntryKind::Symlink
            && !new.target.is_some_and(|t| !t.is_empty() && t.len() <= 4096 && !t.contains('\0'))
        {
            return Err(TrackerError::Invalid("a symlink target must be 1 to 4096 bytes without NUL".into()));
        }
        // Creating a name promises no durability until the directory is fsynced (POSIX), so
        // this commit skips the WAL fsync; it still survives kill -9 (the WAL is in the OS), and
        // the next FULL commit (the file's data) makes it durable against power loss too.
        let target = new.target.filter(|_| new.kind == EntryKind::Symlink);
        let size = target.map(|t| t.len() as i64).unwrap_or(0);
        let mut tx = self.engine.begin(Durability::Process)?;
        Self::require_dir(&mut *tx, &path.parent())?;
        if Self::entry(&mut *tx, path)?.is_some() {
            return Err(TrackerError::AlreadyExists(path.to_string()));
        }
        let now = new.time_ms.unwrap_or_else(now_ms);
        tx.exec(
            "INSERT INTO entries (path, parent, kind, size, mtime_ms, mode, uid, gid, rdev, target, ctime_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?5)",
            vals![
                path.as_str(),
                path.parent().as_str(),
                kind_code(new.kind),
                size,
                now,
                new.mode,
                new.uid,
                new.gid,
                new.rdev,
                target
            ],
        )?;
        Self::touch_dir(&mut *tx, &path.parent())?;
        let e = Self::entry(&mut *tx, path)?.expect("just created");
        tx.commit()?;
        Ok(e)
    }

    pub fn read_link(&mut self, path: &RemotePath) -> Result<String, TrackerError> {
        let mut tx = self.begin()?;
        let target =
            match tx.query_opt("SELECT target FROM entries WHERE path = ?1 AND kind = 2", vals![path.as_str()])? {
                Some(r) => Some(r.opt_text(0)?),
                None => None,
            };
        match target {
            Some(Some(t)) => Ok(t),
            _ => match Self::entry(&mut *tx, path)? {
                Some(_) => Err(TrackerError::Invalid(format!("{path} is not a symbolic link"))),
                None => Err(TrackerError::NotFound(path.to_string())),
            },
        }
    }

    pub fn open_file(&mut self, path: &RemotePath) -> Result<(EntryInfo, SealedManifest), TrackerError> {
        let mut tx = self.begin()?;
        let e = Self::entry(&mut *tx, path)?.ok_or_else(|| TrackerError::NotFound(path.to_string()))?;
        match e.kind {
            EntryKind::Dir => return Err(TrackerError::IsADirectory(path.to_string())),
            EntryKind::Symlink | EntryKind::Special => {
                return Err(TrackerError::Invalid(format!("{path} is not a regular file")))
            }
            EntryKind::File => {}
        }
        // A file made by Create and never written has no manifest yet: empty vectors say so.
        let r =
            tx.query_one("SELECT wrapped_key, manifest, lineage FROM entries WHERE path = ?1", vals![path.as_str()])?;
        let (wrapped_key, body) = (r.opt_blob(0)?.unwrap_or_default(), r.opt_blob(1)?.unwrap_or_default());
        let deltas = Self::deltas(&mut *tx, r.opt_blob(2)?)?;
        Ok((e, SealedManifest { wrapped_key, body, deltas }))
    }

    /// Refreshes the query planner's statistics (after a bulk load; both engines otherwise
    /// keep them current on their own schedule).
    pub fn analyze(&mut self) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        tx.exec("ANALYZE", &[])?;
        tx.commit()
    }

    /// Holders of each chunk, in request order: one query per [`GROUP`] chunks, not one per
    /// chunk (a round trip each on a database server).
    pub fn locate(&mut self, chunks: &[ChunkId]) -> Result<Vec<Vec<NodeId>>, TrackerError> {
        let mut tx = self.begin()?;
        let mut found: HashMap<ChunkId, Vec<NodeId>> = HashMap::with_capacity(chunks.len());
        // Each chunk once, however often it is asked (a file of identical chunks).
        let mut seen = std::collections::HashSet::with_capacity(chunks.len());
        let unique: Vec<ChunkId> = chunks.iter().copied().filter(|c| seen.insert(*c)).collect();
        for group in unique.chunks(GROUP) {
            let sql = format!("SELECT chunk, node FROM locations WHERE chunk IN ({})", placeholders(1, group.len()));
            let ids: Vec<Value> = group.iter().map(|c| Value::from(c.as_bytes().as_slice())).collect();
            tx.each(&sql, &ids, &mut |r| {
                if let (Ok(c), Ok(n)) = (ChunkId::from_slice(&r.blob(0)?), NodeId::from_slice(&r.blob(1)?)) {
                    found.entry(c).or_default().push(n);
                }
                Ok(())
            })?;
        }
        Ok(chunks
            .iter()
            .map(|c| {
                let mut holders = found.get(c).cloned().unwrap_or_default();
                holders.sort();
                holders
            })
            .collect())
    }

    /// The nodes recorded as holding `chunk`.
    fn holders(tx: &mut dyn Tx, chunk: &[u8]) -> Result<Vec<NodeId>, TrackerError> {
        let rows = tx.query("SELECT node FROM locations WHERE chunk = ?1", vals![chunk])?;
        Ok(rows.iter().filter_map(|r| r.blob(0).ok().and_then(|b| NodeId::from_slice(&b).ok())).collect())
    }

    /// `node` holds `chunks` (and, with `replace`, nothing else). A copy stored again after
    /// the collector deleted it is a copy again.
    /// Records that `node` holds `chunks` (all it holds, if `replace`). Durable against a
    /// crash of the tracker's process, not of its machine (no fsync per call): every peer
    /// re-sends its whole inventory at each session, so a location lost with the machine
    /// comes back when the peer reconnects, and 10,000 peers rejoining are not 10,000 fsyncs.
    /// (An acknowledged put's locations are committed with the file, fully durable.)
    pub fn add_locations(&mut self, node: &NodeId, chunks: &[ChunkId], replace: bool) -> Result<(), TrackerError> {
        let mut tx = self.engine.begin(Durability::Process)?;
        if replace {
            tx.exec("DELETE FROM locations WHERE node = ?1", vals![node.as_bytes().as_slice()])?;
        }
        let pairs = chunks.iter().map(|c| [c.as_bytes().to_vec(), node.as_bytes().to_vec()]);
        insert_pairs(&mut *tx, "locations (chunk, node)", pairs)?;
        // Copies the collector had deleted count again now that they are stored again.
        for group in chunks.chunks(GROUP) {
            let mut params = vec![Value::from(node.as_bytes().as_slice())];
            params.extend(group.iter().map(|c| Value::from(c.as_bytes().as_slice())));
            tx.exec(
                &format!("DELETE FROM collected WHERE node = ?1 AND chunk IN ({})", placeholders(2, group.len())),
                &params,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn remove_locations(&mut self, node: &NodeId, chunks: &[ChunkId]) -> Result<(), TrackerError> {
        let mut tx = self.begin()?;
        for c in chunks {
            tx.exec(
                "DELETE FROM locations WHERE chunk = ?1 AND node = ?2",
                vals![c.as_bytes().as_slice(), node.as_bytes().as_slice()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Starts or stops draining a peer the tracker knows; false when it does not know it.
    pub fn set_draining(&mut self, node: &NodeId, on: bool) -> Result<bool, TrackerError> {
        let mut tx = self.begin()?;
        let n = tx.exec("UPDATE peers SET draining = ?2 WHERE node = ?1", vals![node.as_bytes().as_slice(), on])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Remembers a peer as it joined; like [`Db::add_locations`], durable against a crash of
    /// the process only: the peer says it all again when it next joins.
    pub fn save_peer(&mut self, p: &StoredPeer) -> Result<(), TrackerError> {
        let mut tx = self.engine.begin(Durability::Process)?;
        tx.exec(
            "INSERT INTO peers (node, addrs, capacity, used, chunks, draining) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (node) DO UPDATE SET addrs = excluded.addrs, capacity = excluded.capacity,
                 used = excluded.used, chunks = excluded.chunks, draining = excluded.draining",
            vals![
                p.node.as_bytes().as_slice(),
                p.addrs.join(","),
                p.capacity as i64,
                p.used as i64,
                p.chunks as i64,
                p.draining
            ],
        )?;
        tx.commit()
    }

    pub fn load_peers(&mut self) -> Result<Vec<StoredPeer>, TrackerError> {
        let mut tx = self.begin()?;
        let rows = tx.query("SELECT node, addrs, capacity, used, chunks, draining FROM peers", &[])?;
        let mut out = Vec::new();
        for r in rows {
            let Ok(node) = NodeId::from_slice(&r.blob(0)?) else {
                continue;
            };
            out.push(StoredPeer {
                node,
                addrs: r.text(1)?.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
                capacity: r.int(2)? as u64,
                used: r.int(3)? as u64,
                chunks: r.int(4)? as u64,
                draining: r.bool(5)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
