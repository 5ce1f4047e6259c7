//! PostgreSQL as the tracker's engine (`tracker --db postgres://...`), through tokio-postgres
//! on the tracker's own runtime: the tracker calls the database from blocking threads, which
//! wait on the queries' futures (no second runtime, no thread per connection).
//!
//! The schema is the SQLite one in PostgreSQL's types (BIGINT, BYTEA, TEXT with the "C"
//! collation so that names sort bytewise, as SQLite sorts them), except that entries are
//! keyed by the SHA-256 of their path (`path_key`), as a 4 KiB path does not fit a btree entry. Its version is kept in
//! `swarmfs_schema`; migrations run under an advisory lock, so trackers starting together
//! migrate once.

use std::error::Error;
use std::future::Future;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::sql::{Dialect, Durability, Engine, Row, Tx, Value};
use crate::TrackerError;

/// The schema this build writes and expects (the same number as SQLite's).
const SCHEMA_VERSION: i64 = super::migrations::SCHEMA_VERSION as i64;

/// Steps: `(version it brings the database to, SQL)`. PostgreSQL support starts at schema 5,
/// so its first step makes schema 5 whole; later versions add steps here and in SQLite's list.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        5,
        r#"
-- A path's key: a btree index entry holds at most about 2.7 KB and paths go up to 4 KiB, so
-- uniqueness is kept on the path's SHA-256 and lookups by path go through hash indexes.
-- (IMMUTABLE holds: the conversion is from the database's fixed encoding.)
CREATE FUNCTION swarmfs_path_key(p TEXT) RETURNS BYTEA IMMUTABLE STRICT PARALLEL SAFE
    LANGUAGE sql AS 'SELECT sha256(convert_to(p, ''UTF8''))';
CREATE TABLE entries (
    path TEXT COLLATE "C" NOT NULL,
    path_key BYTEA GENERATED ALWAYS AS (swarmfs_path_key(path)) STORED PRIMARY KEY,
    parent TEXT COLLATE "C" NOT NULL,
    kind BIGINT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ms BIGINT NOT NULL,
    file_id BYTEA,
    chunks BIGINT NOT NULL DEFAULT 0,
    wrapped_key BYTEA,
    manifest BYTEA,
    mode BIGINT NOT NULL DEFAULT 420,
    target TEXT,
    uid BIGINT NOT NULL DEFAULT 0,
    gid BIGINT NOT NULL DEFAULT 0,
    rdev BIGINT NOT NULL DEFAULT 0,
    ctime_ms BIGINT NOT NULL DEFAULT 0,
    replicas BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX entries_path ON entries USING hash (path);
CREATE INDEX entries_parent ON entries USING hash (parent);
CREATE INDEX entries_file_id ON entries(file_id);
CREATE TABLE peers (
    node BYTEA PRIMARY KEY,
    addrs TEXT NOT NULL,
    capacity BIGINT NOT NULL,
    used BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    draining BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE locations (
    chunk BYTEA NOT NULL,
    node BYTEA NOT NULL,
    PRIMARY KEY (chunk, node)
);
CREATE INDEX locations_node ON locations(node);
CREATE TABLE refs (
    file_id BYTEA NOT NULL,
    chunk BYTEA NOT NULL,
    PRIMARY KEY (file_id, chunk)
);
CREATE INDEX refs_chunk ON refs(chunk);
CREATE TABLE gc_queue (
    chunk BYTEA PRIMARY KEY,
    due_ms BIGINT NOT NULL
);
CREATE TABLE members (
    name TEXT PRIMARY KEY,
    secret BYTEA NOT NULL,
    read_only BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL
);
CREATE TABLE collected (
    chunk BYTEA NOT NULL,
    node BYTEA NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (chunk, node)
);
CREATE TABLE links (
    id BYTEA PRIMARY KEY,
    file_id BYTEA NOT NULL,
    path TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
"#,
    ),
    (
        6,
        r#"
-- See SQLite's migration 6: the collector's claims live in the database.
ALTER TABLE gc_queue ADD COLUMN claimed_until_ms BIGINT NOT NULL DEFAULT 0;
-- Trackers sharing this database, each renewing its lease every second (see mesh.rs).
CREATE TABLE trackers (
    instance TEXT PRIMARY KEY,
    addr TEXT NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL
);
-- Peers up now, by the tracker whose session they joined on; `info` is the PeerInfo
-- (postcard). A tracker starting reads it; changes travel by NOTIFY swarmfs_membership.
CREATE TABLE live_peers (
    node BYTEA PRIMARY KEY,
    tracker TEXT NOT NULL,
    info BYTEA NOT NULL
);
-- Work one tracker does for all (collector, repair): who holds it, until when.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL
);
"#,
    ),
    (
        7,
        r#"
-- See SQLite's migration 7: a file's references are kept under its lineage.
ALTER TABLE entries ADD COLUMN lineage BYTEA;
UPDATE entries SET lineage = file_id WHERE file_id IS NOT NULL;
ALTER TABLE refs RENAME COLUMN file_id TO lineage;
"#,
    ),
    (
        8,
        r#"
-- See SQLite's migration 8: a file's manifest deltas, under its lineage.
CREATE TABLE manifest_deltas (
    lineage BYTEA NOT NULL,
    seq BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (lineage, seq)
);
"#,
    ),
];

/// Any number that identifies swarmfs's migration lock among a database's advisory locks.
const MIGRATION_LOCK: i64 = 0x7377_6172_6d66_7301;

pub struct Postgres {
    client: tokio_postgres::Client,
    handle: tokio::runtime::Handle,
    /// The task doing the connection's I/O: it ends when `client` is dropped, and is
    /// aborted with it in any case.
    io: tokio::task::JoinHandle<()>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.io.abort();
    }
}

fn pg(e: tokio_postgres::Error) -> TrackerError {
    // The server's own message (with its detail) says more than the client's summary.
    match e.as_db_error() {
        Some(db) => TrackerError::Store(match db.detail() {
            Some(d) => format!("{}: {d}", db.message()),
            None => db.message().to_string(),
        }),
        None => TrackerError::Store(e.to_string()),
    }
}

impl Postgres {
    /// Connects to `url` (`postgres://user@host:port/db`), and brings its schema up to date.
    /// Runs on the tracker's runtime; the connection's I/O is a task on it, which ends when
    /// the client is dropped.
    pub async fn connect(url: &str) -> Result<Postgres, TrackerError> {
        let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| TrackerError::Store(format!("cannot connect to {}: {e}", redact(url))))?;
        let io = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("the PostgreSQL connection ended: {e}");
            }
        });
        migrate(&mut client).await?;
        Ok(Postgres { client, handle: tokio::runtime::Handle::current(), io })
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), TrackerError> {
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    // "already exists, skipping" is not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning").await.map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS swarmfs_schema (version BIGINT NOT NULL)").await.map_err(pg)?;
    let version: i64 = match tx.query_opt("SELECT version FROM swarmfs_schema", &[]).await.map_err(pg)? {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO swarmfs_schema (version) VALUES (0)", &[]).await.map_err(pg)?;
            0
        }
    };
    if version > SCHEMA_VERSION {
        return Err(TrackerError::Invalid(format!(
            "the database has schema {version}, written by a newer swarmfs; this one knows up to {SCHEMA_VERSION}"
        )));
    }
    for (to, sql) in MIGRATIONS.iter().filter(|(to, _)| *to > version) {
        tx.batch_execute(sql).await.map_err(pg)?;
        tx.execute("UPDATE swarmfs_schema SET version = $1", &[to]).await.map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}

/// Waits on a query's future from a blocking thread of the tracker's runtime (or from one
/// of its workers, which then hands its other tasks on meanwhile).
fn block<F: Future>(handle: &tokio::runtime::Handle, f: F) -> F::Output {
    tokio::task::block_in_place(|| handle.block_on(f))
}

struct PgTx<'c> {
    tx: tokio_postgres::Transaction<'c>,
    handle: &'c tokio::runtime::Handle,
}

impl Engine for Postgres {
    fn reads_locally(&self) -> bool {
        false
    }

    fn begin(&mut self, durability: Durability) -> Result<Box<dyn Tx + '_>, TrackerError> {
        let handle = &self.handle;
        let tx = block(handle, self.client.transaction()).map_err(pg)?;
        if durability == Durability::Process {
            block(handle, tx.batch_execute("SET LOCAL synchronous_commit = off")).map_err(pg)?;
        }
        Ok(Box::new(PgTx { tx, handle }))
    }
}

/// `?N` placeholders as PostgreSQL's `$N`.
fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

/// A [`Value`] as a query parameter, converted to the type PostgreSQL inferred for it.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::BOOL) => (*v != 0).to_sql(ty, out),
            (Value::Text(v), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN) => {
                v.as_str().to_sql(ty, out)
            }
            (Value::Blob(v), &Type::BYTEA) => v.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("a parameter {v:?} where PostgreSQL expects {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn row(r: &tokio_postgres::Row) -> Result<Row, TrackerError> {
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => r.try_get::<_, Option<i32>>(i).map(|v| v.map(|v| Value::Int(v.into()))),
            Type::INT2 => r.try_get::<_, Option<i16>>(i).map(|v| v.map(|v| Value::Int(v.into()))),
            Type::BOOL => r.try_get::<_, Option<bool>>(i).map(|v| v.map(|v| Value::Int(v.into()))),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i).map(|v| v.map(Value::Blob)),
            _ => r.try_get::<_, Option<String>>(i).map(|v| v.map(Value::Text)),
        }
        .map_err(pg)?;
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

impl Tx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, TrackerError> {
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        block(self.handle, self.tx.execute(numbered(sql).as_str(), &refs)).map_err(pg)
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Value],
        f: &mut dyn FnMut(Row) -> Result<(), TrackerError>,
    ) -> Result<(), TrackerError> {
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = block(self.handle, self.tx.query(numbered(sql).as_str(), &refs)).map_err(pg)?;
        for r in &rows {
            f(row(r)?)?;
        }
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<(), TrackerError> {
        let PgTx { tx, handle } = *self;
        block(handle, tx.commit()).map_err(pg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_and_passwords_stay_out_of_messages() {
        assert_eq!(numbered("SELECT ?1 || ?2 WHERE a = ?1"), "SELECT $1 || $2 WHERE a = $1");
        assert_eq!(redact("postgres://ann:s3cret@db:5432/swarm"), "postgres://ann@db:5432/swarm");
        assert_eq!(redact("postgres://db/swarm"), "postgres://db/swarm");
    }
}
