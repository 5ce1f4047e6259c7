//! The tracker's schema and how a database of any earlier version is brought up to it.
//!
//! The schema version is SQLite's `PRAGMA user_version`. Databases written before it was
//! kept (protocols 1 and 2) have version 0 and are recognised by their tables: protocol 1's
//! lacks the entry columns protocol 2 added. From schema 2 on, each step is a numbered
//! migration run in one transaction with the version bump, so a crash leaves the database
//! at one version or the next. A database from a newer swarmfs is refused, not guessed at.

use rusqlite::Connection;

use crate::TrackerError;

/// The schema this build writes and expects.
pub const SCHEMA_VERSION: u32 = 8;

/// Schema 2, protocol 2's tables, as a fresh database gets them.
const SCHEMA_2: &str = "
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    parent TEXT NOT NULL,
    kind INTEGER NOT NULL,          -- 0 dir, 1 file, 2 symlink, 3 special
    size INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL,
    file_id BLOB,
    chunks INTEGER NOT NULL DEFAULT 0,
    wrapped_key BLOB,
    manifest BLOB,
    mode INTEGER NOT NULL DEFAULT 420,   -- 0644
    target TEXT,                         -- symlinks
    uid INTEGER NOT NULL DEFAULT 0,
    gid INTEGER NOT NULL DEFAULT 0,
    rdev INTEGER NOT NULL DEFAULT 0,
    ctime_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_parent ON entries(parent);
-- Directory link counts count subdirectories: an index on (parent, kind) keeps that cheap
-- in directories with many files.
CREATE INDEX IF NOT EXISTS entries_parent_kind ON entries(parent, kind);
CREATE TABLE IF NOT EXISTS peers (
    node BLOB PRIMARY KEY,
    addrs TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    used INTEGER NOT NULL,
    chunks INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locations (
    chunk BLOB NOT NULL,
    node BLOB NOT NULL,
    PRIMARY KEY (chunk, node)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locations_node ON locations(node);
-- Which chunks each committed file version uses; a chunk no version uses is garbage.
CREATE TABLE IF NOT EXISTS refs (
    file_id BLOB NOT NULL,
    chunk BLOB NOT NULL,
    PRIMARY KEY (file_id, chunk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_chunk ON refs(chunk);
-- Chunks that lost their last reference, to delete from their holders once due.
CREATE TABLE IF NOT EXISTS gc_queue (
    chunk BLOB PRIMARY KEY,
    due_ms INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Steps after schema 2: `(version it brings the database to, SQL)`, in order.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        3,
        // Protocol 3: members with credentials of their own, revocable one by one.
        "CREATE TABLE members (
            name TEXT PRIMARY KEY,
            secret BLOB NOT NULL,
            read_only INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0,
            created_ms INTEGER NOT NULL
        );",
    ),
    (
        4,
        // Protocol 4: each file version records its R, so repair knows what to restore.
        // Files from before did not say; they get the fewest copies any of their chunks has
        // now (at least 1): what they verifiably had, so nothing is flagged that was fine.
        // Peers remember being drained; copies the collector deleted are remembered, so a
        // commit cannot name them (see Db::commit_file).
        "ALTER TABLE entries ADD COLUMN replicas INTEGER NOT NULL DEFAULT 0;
        UPDATE entries SET replicas = max(1, coalesce((
            SELECT min(n) FROM (
                SELECT count(l.node) AS n FROM refs AS r LEFT JOIN locations AS l ON l.chunk = r.chunk
                WHERE r.file_id = entries.file_id GROUP BY r.chunk)), 1))
        WHERE kind = 1 AND file_id IS NOT NULL;
        ALTER TABLE peers ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE collected (
            chunk BLOB NOT NULL,
            node BLOB NOT NULL,
            at_ms INTEGER NOT NULL,
            PRIMARY KEY (chunk, node)
        );",
    ),
    (
        5,
        // Protocol 5: links, each a read capability for one file version. The tracker keeps
        // which version a link names (to refuse anything else) and whether it was revoked;
        // the file's key is in the link only. A link is opened by file id: index it.
        "CREATE TABLE links (
            id BLOB PRIMARY KEY,
            file_id BLOB NOT NULL,
            path TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_ms INTEGER NOT NULL,
            revoked INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX entries_file_id ON entries(file_id);",
    ),
    (
        6,
        // Several trackers on one database: the collector claims the chunks it is deleting
        // in the database (a commit naming one waits until the claim is answered or lapses),
        // not in one tracker's memory. PostgreSQL's schema 6 adds the trackers' shared
        // membership tables as well (see postgres.rs); SQLite serves one tracker.
        "ALTER TABLE gc_queue ADD COLUMN claimed_until_ms INTEGER NOT NULL DEFAULT 0;",
    ),
    (
        7,
        // A file's references are kept under its lineage, the id of its first version, which
        // later versions keep: a commit then writes only the references that changed (see
        // db/gc.rs). Every file's lineage starts as its current version's id, under which its
        // references already are.
        "ALTER TABLE entries ADD COLUMN lineage BLOB;
        UPDATE entries SET lineage = file_id WHERE file_id IS NOT NULL;
        ALTER TABLE refs RENAME COLUMN file_id TO lineage;",
    ),
    (
        8,
        // A file's manifest deltas (CommitDelta, protocol 7), in order after the manifest in
        // its entry, under its lineage (which renames keep); a whole commit or the file's
        // removal drops them.
        "CREATE TABLE manifest_deltas (
            lineage BLOB NOT NULL,
            seq INTEGER NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (lineage, seq)
        );",
    ),
];

pub fn migrate(conn: &Connection) -> Result<(), TrackerError> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(TrackerError::Invalid(format!(
            "tracker.db has schema {version}, written by a newer swarmfs; this one knows up to {SCHEMA_VERSION}"
        )));
    }
    let version = if version == 0 {
        upgrade_unversioned(conn)?;
        2
    } else {
        version
    };
    for (to, sql) in MIGRATIONS.iter().filter(|(to, _)| *to > version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
    }
    Ok(())
}

/// A fresh database, or one from protocol 1 or 2 (no version kept): to schema 2.
fn upgrade_unversioned(conn: &Connection) -> Result<(), TrackerError> {
    let tx = conn.unchecked_transaction()?;
    // Creates what is missing: everything for a fresh database, `refs` and `gc_queue` for
    // protocol 1's.
    tx.execute_batch(SCHEMA_2)?;
    // Protocol 1's entries lack the columns protocol 2 added.
    let cols: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('entries')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let added = [
        ("mode", "mode INTEGER NOT NULL DEFAULT 420"),
        ("target", "target TEXT"),
        ("uid", "uid INTEGER NOT NULL DEFAULT 0"),
        ("gid", "gid INTEGER NOT NULL DEFAULT 0"),
        ("rdev", "rdev INTEGER NOT NULL DEFAULT 0"),
        ("ctime_ms", "ctime_ms INTEGER NOT NULL DEFAULT 0"),
    ];
    for (name, ddl) in added {
        if !cols.iter().any(|c| c == name) {
            tx.execute_batch(&format!("ALTER TABLE entries ADD COLUMN {ddl}"))?;
            if name == "mode" {
                tx.execute_batch("UPDATE entries SET mode = 493 WHERE kind = 0")?;
            }
        }
    }
    tx.pragma_update(None, "user_version", 2)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_gets_the_current_schema_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        migrate(&conn).unwrap();
        let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        migrate(&conn).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let err = migrate(&conn).unwrap_err().to_string();
        assert!(err.contains("newer swarmfs"), "{err}");
    }

    #[test]
    fn a_protocol_1_database_gains_the_protocol_2_columns() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE entries (path TEXT PRIMARY KEY, parent TEXT NOT NULL, kind INTEGER NOT NULL,
                size INTEGER NOT NULL, mtime_ms INTEGER NOT NULL, file_id BLOB, chunks INTEGER NOT NULL DEFAULT 0,
                wrapped_key BLOB, manifest BLOB);
             INSERT INTO entries (path, parent, kind, size, mtime_ms) VALUES ('/d', '/', 0, 0, 1);",
        )
        .unwrap();
        migrate(&conn).unwrap();
        let mode: u32 = conn.query_row("SELECT mode FROM entries WHERE path = '/d'", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, 0o755, "directories get 0755");
        let v: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.execute("INSERT INTO members (name, secret, read_only, created_ms) VALUES ('m', x'00', 0, 1)", [])
            .unwrap();
    }
}
