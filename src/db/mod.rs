//! The state file: one SQLite database in WAL mode, the only source of truth.
//!
//! Every SQL statement of the project lives below this module. Callers get a
//! [`Db`] handle and run closures on a reader connection ([`Db::read`]) or on
//! the single writer inside one transaction ([`Db::write`]); both run on
//! tokio's blocking pool so the runtime never waits on disk.

pub mod compute;
pub mod identity;
pub mod image;
pub mod image_cache;
pub mod limits;
mod migrations;
pub mod network;
pub mod server_states;
pub mod servers;
pub mod settings;
pub mod volume;
pub mod volume_records;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction};

/// Errors of the state file.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored JSON column could not be decoded.
    #[error("corrupt JSON in the state file: {0}")]
    Json(#[from] serde_json::Error),
    /// The state file was written by a newer yunhe.
    #[error("the state file has schema version {found}, newer than this binary's {supported}")]
    TooNew { found: i64, supported: i64 },
    /// A unique constraint was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A blocking task failed to complete.
    #[error("database task failed: {0}")]
    Task(String),
    /// A lock was poisoned by a panic in another thread.
    #[error("database connection lock poisoned")]
    Poisoned,
}

impl DbError {
    /// True when the error is a UNIQUE or PRIMARY KEY constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Conflict(_) => true,
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            _ => false,
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// Handle to the state file, cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Bumped after every write transaction ends (see [`Db::write_generation`]).
    writes: AtomicU64,
}

fn open_connection(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL keeps readers off the writer's back; synchronous=FULL makes every
    // committed transaction survive a kill -9 or a power cut.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

impl Db {
    /// Opens (creating if needed) the state file and brings its schema up to date.
    pub fn open(path: &Path) -> DbResult<Db> {
        let mut writer = open_connection(path)?;
        migrations::migrate(&mut writer)?;
        Ok(Db {
            inner: Arc::new(DbInner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                writes: AtomicU64::new(1),
            }),
        })
    }

    /// Runs `f` on a reader connection.
    pub async fn read<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Connection) -> DbResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.read_blocking(f))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Runs `f` inside one write transaction, committed only if `f` succeeds.
    pub async fn write<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Transaction) -> DbResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.write_blocking(f))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// Synchronous form of [`Db::write`] for start-up code.
    pub fn write_blocking<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Transaction) -> DbResult<T>,
    {
        self.inner.write_blocking(f)
    }

    /// A counter bumped after every write transaction ends (committed or not). The state
    /// file is only written through this handle (serve is its one process), so a value read
    /// *before* a read of the state file, and unchanged later, means nothing has been written
    /// since: what that read returned may be served again from memory.
    pub fn write_generation(&self) -> u64 {
        self.inner.writes.load(Ordering::SeqCst)
    }

    /// Synchronous form of [`Db::read`] for start-up code.
    pub fn read_blocking<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Connection) -> DbResult<T>,
    {
        self.inner.read_blocking(f)
    }
}

impl DbInner {
    fn read_blocking<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Connection) -> DbResult<T>,
    {
        let pooled = self.readers.lock().map_err(|_| DbError::Poisoned)?.pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path)?;
                conn.pragma_update(None, "query_only", "ON")?;
                conn
            }
        };
        let result = f(&conn);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < 16
        {
            pool.push(conn);
        }
        result
    }

    fn write_blocking<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Transaction) -> DbResult<T>,
    {
        let mut conn = self.writer.lock().map_err(|_| DbError::Poisoned)?;
        let result = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(DbError::from)
            .and_then(|tx| {
                let value = f(&tx)?;
                tx.commit()?;
                Ok(value)
            });
        // After the commit (or the rollback), still under the writer's lock: a reader that
        // saw the old generation reads again.
        self.writes.fetch_add(1, Ordering::SeqCst);
        result
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}
