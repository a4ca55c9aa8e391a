//! The image cache's table: which images are queued for caching and which
//! are cached, where, and how often they were read from there.
//!
//! The files themselves live in the cache directory (`crate::image::cache`);
//! a row in state `cached` names its file, so other services (compute boots
//! from it) find a cached copy without knowing the image service's settings.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::DbResult;

/// The image cache table (one migration).
pub const SCHEMA: &str = r#"
CREATE TABLE image_cache (
    image_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('queued', 'cached')),
    path TEXT,
    size INTEGER NOT NULL DEFAULT 0,
    hits INTEGER NOT NULL DEFAULT 0,
    last_accessed REAL NOT NULL DEFAULT 0,
    last_modified REAL NOT NULL DEFAULT 0,
    queued_at REAL NOT NULL
);
"#;

/// Where an image stands in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Waiting for the prefetcher.
    Queued,
    /// A complete copy is in the cache directory.
    Cached,
}

impl CacheState {
    fn as_str(self) -> &'static str {
        match self {
            CacheState::Queued => "queued",
            CacheState::Cached => "cached",
        }
    }
}

/// One row of the cache table.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEntry {
    pub image_id: String,
    pub state: CacheState,
    /// The cached file (state `cached` only).
    pub path: Option<String>,
    pub size: i64,
    pub hits: i64,
    /// Seconds since the epoch (Glance reports them as floats).
    pub last_accessed: f64,
    pub last_modified: f64,
    pub queued_at: f64,
}

const COLUMNS: &str = "image_id, state, path, size, hits, last_accessed, last_modified, queued_at";

fn entry_from_row(row: &Row) -> rusqlite::Result<CacheEntry> {
    let state: String = row.get(1)?;
    Ok(CacheEntry {
        image_id: row.get(0)?,
        state: if state == "cached" {
            CacheState::Cached
        } else {
            CacheState::Queued
        },
        path: row.get(2)?,
        size: row.get(3)?,
        hits: row.get(4)?,
        last_accessed: row.get(5)?,
        last_modified: row.get(6)?,
        queued_at: row.get(7)?,
    })
}

/// Queues an image; an image already queued or cached is left as it is.
/// Returns whether a new row was made.
pub fn queue(conn: &Connection, image_id: &str, now: f64) -> DbResult<bool> {
    let changed = conn.execute(
        "INSERT OR IGNORE INTO image_cache (image_id, state, queued_at) VALUES (?1, 'queued', ?2)",
        params![image_id, now],
    )?;
    Ok(changed > 0)
}

/// Records a finished copy of a queued image. Returns false when the row is
/// gone (the queue was cleared while copying): the caller removes the file.
pub fn mark_cached(
    conn: &Connection,
    image_id: &str,
    path: &str,
    size: i64,
    now: f64,
) -> DbResult<bool> {
    let changed = conn.execute(
        "UPDATE image_cache SET state = 'cached', path = ?2, size = ?3, last_modified = ?4, \
         last_accessed = ?4 WHERE image_id = ?1",
        params![image_id, path, size, now],
    )?;
    Ok(changed > 0)
}

/// Counts one read served from the cache.
pub fn record_hit(conn: &Connection, image_id: &str, now: f64) -> DbResult<()> {
    conn.execute(
        "UPDATE image_cache SET hits = hits + 1, last_accessed = ?2 \
         WHERE image_id = ?1 AND state = 'cached'",
        params![image_id, now],
    )?;
    Ok(())
}

/// One image's row.
pub fn get(conn: &Connection, image_id: &str) -> DbResult<Option<CacheEntry>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM image_cache WHERE image_id = ?1"),
            [image_id],
            entry_from_row,
        )
        .optional()?)
}

/// The cached file of an image, if it has one.
pub fn cached_path(conn: &Connection, image_id: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT path FROM image_cache WHERE image_id = ?1 AND state = 'cached'",
            [image_id],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// Every row in one state (all when `state` is None), by image id; queued
/// rows in the order they were queued.
pub fn list(conn: &Connection, state: Option<CacheState>) -> DbResult<Vec<CacheEntry>> {
    let (sql, arg) = match state {
        Some(s) => (
            format!(
                "SELECT {COLUMNS} FROM image_cache WHERE state = ?1 ORDER BY queued_at, image_id"
            ),
            Some(s.as_str()),
        ),
        None => (
            format!("SELECT {COLUMNS} FROM image_cache ORDER BY queued_at, image_id"),
            None,
        ),
    };
    let mut stmt = conn.prepare(&sql)?;
    let rows = match arg {
        Some(a) => stmt.query_map([a], entry_from_row)?,
        None => stmt.query_map([], entry_from_row)?,
    };
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Removes one image's row; returns it.
pub fn remove(conn: &Connection, image_id: &str) -> DbResult<Option<CacheEntry>> {
    let entry = get(conn, image_id)?;
    conn.execute("DELETE FROM image_cache WHERE image_id = ?1", [image_id])?;
    Ok(entry)
}

/// Removes every row in one state; returns them.
pub fn remove_all(conn: &Connection, state: CacheState) -> DbResult<Vec<CacheEntry>> {
    let entries = list(conn, Some(state))?;
    conn.execute("DELETE FROM image_cache WHERE state = ?1", [state.as_str()])?;
    Ok(entries)
}

/// Cached images, least recently used first (the order pruning takes them).
pub fn least_recently_used(conn: &Connection) -> DbResult<Vec<CacheEntry>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM image_cache WHERE state = 'cached' \
         ORDER BY last_accessed, last_modified, image_id"
    ))?;
    let rows = stmt.query_map([], entry_from_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory SQLite");
        conn.execute_batch(SCHEMA).expect("schema");
        conn
    }

    #[test]
    fn queue_cache_hit_and_remove() {
        let c = conn();
        assert!(queue(&c, "a", 1.0).unwrap());
        assert!(!queue(&c, "a", 2.0).unwrap(), "queued twice");
        assert!(queue(&c, "b", 3.0).unwrap());
        assert_eq!(cached_path(&c, "a").unwrap(), None);
        assert!(mark_cached(&c, "a", "/cache/a", 10, 5.0).unwrap());
        assert!(!mark_cached(&c, "gone", "/cache/gone", 1, 5.0).unwrap());
        assert!(
            !queue(&c, "a", 6.0).unwrap(),
            "a cached image is not queued again"
        );
        assert_eq!(cached_path(&c, "a").unwrap().as_deref(), Some("/cache/a"));
        record_hit(&c, "a", 7.0).unwrap();
        record_hit(&c, "b", 7.0).unwrap();
        let a = get(&c, "a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.hits, a.last_accessed),
            (CacheState::Cached, 1, 7.0)
        );
        assert_eq!(
            get(&c, "b").unwrap().unwrap().hits,
            0,
            "queued rows count no hits"
        );
        let queued = list(&c, Some(CacheState::Queued)).unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(remove_all(&c, CacheState::Cached).unwrap().len(), 1);
        assert_eq!(list(&c, None).unwrap().len(), 1);
        assert_eq!(
            remove(&c, "b").unwrap().map(|e| e.image_id).as_deref(),
            Some("b")
        );
        assert!(list(&c, None).unwrap().is_empty());
    }

    #[test]
    fn lru_order() {
        let c = conn();
        for (id, at) in [("x", 1.0), ("y", 2.0), ("z", 3.0)] {
            queue(&c, id, at).unwrap();
            mark_cached(&c, id, id, 1, at).unwrap();
        }
        record_hit(&c, "x", 10.0).unwrap();
        let order: Vec<_> = least_recently_used(&c)
            .unwrap()
            .into_iter()
            .map(|e| e.image_id)
            .collect();
        assert_eq!(order, ["y", "z", "x"]);
    }
}
