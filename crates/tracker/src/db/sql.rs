//! What the tracker's queries need of a SQL engine, so that one set of queries serves
//! SQLite (embedded, the default) and PostgreSQL (several trackers on one database).
//!
//! Queries are written once, in the SQL both SQLite and PostgreSQL speak: `?N` placeholders
//! (an engine that numbers them otherwise rewrites them), upserts as `INSERT ... ON CONFLICT`,
//! integers as 64-bit, booleans as 0/1 integers, byte strings as blobs. The few statements
//! that cannot be shared ask [`Tx::dialect`]. Values cross the interface as [`Value`]s, so
//! no engine's types leak into the queries.

use crate::TrackerError;

/// One SQL value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}

impl From<u8> for Value {
    fn from(v: u8) -> Value {
        Value::Int(v.into())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(v.into())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Blob(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// `[a, b, c]` as `&[Value]`.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::db::sql::Value::from($v)),*][..] };
}
pub(crate) use vals;

/// One result row.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, TrackerError> {
        self.0.get(i).ok_or_else(|| TrackerError::Store(format!("a query returned no column {i}")))
    }

    fn mismatch(&self, i: usize, want: &str) -> TrackerError {
        TrackerError::Store(format!("column {i} is {:?}, not {want}", self.0.get(i)))
    }

    pub fn int(&self, i: usize) -> Result<i64, TrackerError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            _ => Err(self.mismatch(i, "an integer")),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, TrackerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool, TrackerError> {
        Ok(self.int(i)? != 0)
    }

    pub fn text(&self, i: usize) -> Result<String, TrackerError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, TrackerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    pub fn blob(&self, i: usize) -> Result<Vec<u8>, TrackerError> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "a blob")),
        }
    }

    pub fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, TrackerError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.blob(i).map(Some),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How much a transaction's commit promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk before the commit returns (power loss cannot undo it).
    Full,
    /// Survives the process dying, not necessarily the machine: for what POSIX does not
    /// promise durable before an fsync (creating a name).
    Process,
}

/// One transaction. Dropped without [`Tx::commit`], it rolls back.
pub trait Tx {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; the rows it changed.
    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, TrackerError>;
    /// Runs a query and hands each row to `f` as it comes (large results are not held).
    fn each(
        &mut self,
        sql: &str,
        params: &[Value],
        f: &mut dyn FnMut(Row) -> Result<(), TrackerError>,
    ) -> Result<(), TrackerError>;
    fn commit(self: Box<Self>) -> Result<(), TrackerError>;

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, TrackerError> {
        let mut rows = Vec::new();
        self.each(sql, params, &mut |r| {
            rows.push(r);
            Ok(())
        })?;
        Ok(rows)
    }

    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, TrackerError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, TrackerError> {
        self.query_opt(sql, params)?.ok_or_else(|| TrackerError::Store(format!("no row from {sql}")))
    }
}

/// A database the tracker can open transactions on.
pub trait Engine: Send {
    fn begin(&mut self, durability: Durability) -> Result<Box<dyn Tx + '_>, TrackerError>;
    /// Whether a short read is only CPU on this machine (an embedded database), not a
    /// network round trip.
    fn reads_locally(&self) -> bool;
}

/// SQLite through rusqlite: WAL, `synchronous=FULL` (NORMAL for [`Durability::Process`]).
pub struct Sqlite(pub rusqlite::Connection);

/// A transaction by hand (`BEGIN` / `COMMIT`, `ROLLBACK` on drop), so that its end can also
/// set `synchronous` back, which SQLite allows only outside a transaction.
struct SqliteTx<'c> {
    conn: &'c rusqlite::Connection,
    committed: bool,
    /// `synchronous` was relaxed for this transaction: set it back to FULL after.
    relaxed: bool,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Result<Value, TrackerError> {
    use rusqlite::types::ValueRef;
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(_) => return Err(TrackerError::Store("a query returned a floating-point value".into())),
    })
}

impl Engine for Sqlite {
    fn reads_locally(&self) -> bool {
        true
    }

    fn begin(&mut self, durability: Durability) -> Result<Box<dyn Tx + '_>, TrackerError> {
        let relaxed = durability == Durability::Process;
        if relaxed {
            self.0.pragma_update(None, "synchronous", "NORMAL")?;
        }
        // The transaction owns the reset from here on, whatever happens.
        let tx = SqliteTx { conn: &self.0, committed: false, relaxed };
        tx.conn.execute_batch("BEGIN")?;
        Ok(Box::new(tx))
    }
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.committed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if self.relaxed {
            let _ = self.conn.pragma_update(None, "synchronous", "FULL");
        }
    }
}

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Value]) -> Result<u64, TrackerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn each(
        &mut self,
        sql: &str,
        params: &[Value],
        f: &mut dyn FnMut(Row) -> Result<(), TrackerError>,
    ) -> Result<(), TrackerError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        while let Some(r) = rows.next()? {
            let row = (0..columns).map(|i| from_sqlite(r.get_ref(i)?)).collect::<Result<Vec<_>, _>>()?;
            f(Row(row))?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<(), TrackerError> {
        self.conn.execute_batch("COMMIT")?;
        self.committed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BLOB)").unwrap();
        (dir, Sqlite(conn))
    }

    #[test]
    fn a_dropped_transaction_rolls_back_and_a_relaxed_one_restores_full_durability() {
        let (_dir, mut db) = engine();
        {
            let mut tx = db.begin(Durability::Full).unwrap();
            tx.exec("INSERT INTO t (k, n, b) VALUES (?1, ?2, ?3)", vals!["a", 1i64, vec![1u8, 2]]).unwrap();
        }
        let mut tx = db.begin(Durability::Process).unwrap();
        assert!(tx.query_opt("SELECT k FROM t", &[]).unwrap().is_none(), "rolled back");
        tx.exec("INSERT INTO t (k, n, b) VALUES (?1, ?2, ?3)", vals!["b", None::<i64>, vec![7u8]]).unwrap();
        tx.commit().unwrap();
        let sync: i64 = db.0.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL again after a Process transaction");
        let mut tx = db.begin(Durability::Full).unwrap();
        let row = tx.query_one("SELECT k, n, b FROM t", &[]).unwrap();
        assert_eq!((row.text(0).unwrap(), row.opt_int(1).unwrap(), row.blob(2).unwrap()), ("b".into(), None, vec![7]));
        assert!(row.int(0).is_err(), "text is not read as an integer");
    }
}
