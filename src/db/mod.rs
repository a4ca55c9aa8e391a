//! The state file: one SQLite database in WAL mode, the only source of truth.
//!
//! Every SQL statement of the project lives below this module. Callers get a
//! [`Db`] handle and run closures on a reader connection ([`Db::read`]) or on
//! the single writer inside one transaction ([`Db::write`]); both run on
//! tokio's blocking pool so the runtime never waits on disk.
//!
//! Writes that queue while the writer is busy are committed together (group commit): each
//! runs inside its own savepoint of one transaction, and the transaction's one commit (one
//! `fsync` of the WAL) makes them all durable before any of their callers hears back.

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

use std::collections::VecDeque;
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
    /// Writes waiting for the writer; whoever holds the writer next runs all of them in one
    /// transaction ([`DbInner::run_queued`]).
    queue: Mutex<VecDeque<Box<dyn Queued>>>,
    /// Bumped after every write transaction ends (see [`Db::write_generation`]).
    writes: AtomicU64,
}

/// The most writes committed by one transaction (the rest wait for the next one).
const MAX_BATCH: usize = 256;

/// A write waiting in [`DbInner::queue`].
trait Queued: Send {
    /// Runs the write inside the batch's transaction; true when it succeeded.
    fn run(&mut self, tx: &Transaction) -> bool;
    /// Tells the caller the outcome once the batch's fate is known: `failed` is set when
    /// the transaction did not commit (it overrides a success; a failed write keeps its
    /// own error).
    fn finish(self: Box<Self>, failed: Option<DbError>);
}

struct QueuedWrite<F, T> {
    write: Option<F>,
    result: Option<DbResult<T>>,
    reply: tokio::sync::oneshot::Sender<DbResult<T>>,
}

impl<F, T> Queued for QueuedWrite<F, T>
where
    F: FnOnce(&Transaction) -> DbResult<T> + Send,
    T: Send,
{
    fn run(&mut self, tx: &Transaction) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        // A panicking write fails alone: the writer's lock is not poisoned for the others.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(tx)))
            .unwrap_or_else(|_| Err(DbError::Task("a write panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, failed: Option<DbError>) {
        let outcome = match (self.result, failed) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(e)) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(DbError::Task("the write was not run".into())),
        };
        // The caller may have gone (its request was cancelled): the write stands.
        let _ = self.reply.send(outcome);
    }
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
                queue: Mutex::new(VecDeque::new()),
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

    /// Runs `f` inside a write transaction: its changes are committed only if `f` succeeds,
    /// and this returns once they are durable. Writes that queue meanwhile share the
    /// transaction (each in its own savepoint: one that fails is rolled back alone).
    pub async fn write<F, T>(&self, f: F) -> DbResult<T>
    where
        F: FnOnce(&Transaction) -> DbResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        self.inner
            .queue
            .lock()
            .map_err(|_| DbError::Poisoned)?
            .push_back(Box::new(QueuedWrite {
                write: Some(f),
                result: None,
                reply,
            }));
        // One drain per queued write, so none is left behind; a drain that finds the queue
        // empty (an earlier one took its write into a batch) returns at once.
        let inner = self.inner.clone();
        let drain = tokio::task::spawn_blocking(move || inner.run_queued());
        match outcome.await {
            Ok(result) => result,
            Err(_) => Err(match drain.await {
                Err(e) => DbError::Task(e.to_string()),
                Ok(()) => DbError::Task("the write was dropped".into()),
            }),
        }
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

    /// Takes the writer, then up to [`MAX_BATCH`] queued writes, and runs them in one
    /// transaction: each in a savepoint (released when it succeeds, rolled back when it
    /// fails), then one commit. Every caller hears back after the commit: a success only
    /// once its changes are durable.
    fn run_queued(&self) {
        let mut conn = match self.writer.lock() {
            Ok(conn) => conn,
            Err(_) => {
                let jobs = self.take_queued();
                for job in jobs {
                    job.finish(Some(DbError::Poisoned));
                }
                return;
            }
        };
        let mut jobs = self.take_queued();
        if jobs.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let count = jobs.len();
        let mut transactions = 0;
        while !jobs.is_empty() {
            transactions += 1;
            let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            {
                Ok(tx) => tx,
                Err(e) => {
                    let message = e.to_string();
                    for job in jobs.drain(..) {
                        job.finish(Some(DbError::Task(message.clone())));
                    }
                    break;
                }
            };
            let mut ran: Vec<Box<dyn Queued>> = Vec::with_capacity(jobs.len());
            // Set when the transaction cannot go on (SQLite rolled it back after an I/O
            // error, or a savepoint statement failed): what ran in it is lost.
            let mut broken = None;
            while let Some(mut job) = jobs.pop_front() {
                if let Err(e) = tx.execute_batch("SAVEPOINT yunhe_write") {
                    broken = Some(e.to_string());
                    ran.push(job);
                    break;
                }
                let ok = job.run(&tx);
                ran.push(job);
                let end = if ok {
                    tx.execute_batch("RELEASE yunhe_write")
                } else {
                    tx.execute_batch("ROLLBACK TO yunhe_write; RELEASE yunhe_write")
                };
                if let Err(e) = end {
                    broken = Some(e.to_string());
                    break;
                }
                if tx.is_autocommit() {
                    broken = Some("the write transaction was rolled back".into());
                    break;
                }
            }
            let failed = match broken {
                Some(message) => {
                    drop(tx);
                    Some(message)
                }
                None => tx.commit().err().map(|e| e.to_string()),
            };
            // After the commit (or the rollback), still under the writer's lock: a reader
            // that saw the old generation reads again.
            self.writes.fetch_add(1, Ordering::SeqCst);
            for job in ran {
                job.finish(failed.clone().map(DbError::Task));
            }
        }
        tracing::debug!(
            writes = count,
            transactions,
            us = started.elapsed().as_micros() as u64,
            "state file: group commit"
        );
    }

    fn take_queued(&self) -> VecDeque<Box<dyn Queued>> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = queue.len().min(MAX_BATCH);
        queue.drain(..n).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> (Db, PathBuf) {
        let dir = std::env::temp_dir().join(format!("yunhe-db-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = Db::open(&dir.join("state.db")).expect("state file opens");
        db.write_blocking(|tx| {
            tx.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")?;
            Ok(())
        })
        .expect("table");
        (db, dir)
    }

    /// Concurrent writes share transactions, each still all or nothing: a failing write
    /// (a constraint error after its first insert) and a panicking one are rolled back
    /// alone, every other write is committed and visible, and the writer keeps working.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_keeps_each_write_all_or_nothing() {
        let (db, dir) = temp_db("group");
        let mut tasks = Vec::new();
        for k in 0..200i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |tx| {
                    tx.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])?;
                    if k % 10 == 3 {
                        // A second row with the same key: the whole write must go.
                        tx.execute("INSERT INTO t (k, v) VALUES (?1, 'y')", [k])?;
                    }
                    if k == 7 {
                        panic!("a write that panics");
                    }
                    Ok(k)
                })
                .await
            }));
        }
        let mut failed = Vec::new();
        for (k, task) in tasks.into_iter().enumerate() {
            match task.await.expect("task") {
                Ok(v) => assert_eq!(v, k as i64),
                Err(e) => {
                    if k != 7 {
                        assert!(e.is_unique_violation(), "{k}: {e}");
                    }
                    failed.push(k as i64);
                }
            }
        }
        let expected_failed: Vec<i64> = (0..200).filter(|k| k % 10 == 3 || *k == 7).collect();
        assert_eq!(failed, expected_failed);
        let stored: Vec<i64> = db
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .expect("read");
        let expected: Vec<i64> = (0..200).filter(|k| !expected_failed.contains(k)).collect();
        assert_eq!(stored, expected);
        // The writer still works after the panic.
        db.write(|tx| Ok(tx.execute("INSERT INTO t (k, v) VALUES (1000, 'z')", [])?))
            .await
            .expect("a write after the panic");
        let _ = std::fs::remove_dir_all(dir);
    }
}
