//! yunhe's own settings: one-time facts about a state file that are no
//! service's resource (whether the first-start networks were made, so they
//! are never made again once the operator deleted them).

use rusqlite::{Connection, OptionalExtension, params};

use super::DbResult;

/// The settings table (one migration).
pub const SCHEMA: &str = r#"
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
"#;

/// A setting's value, or none.
pub fn get(conn: &Connection, key: &str) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT value FROM settings WHERE key = ?1",
            params![key],
            |row| row.get(0),
        )
        .optional()?)
}

/// Sets a setting (inserted or replaced).
pub fn set(conn: &Connection, key: &str, value: &str) -> DbResult<()> {
    conn.execute(
        "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, value, super::now_unix()],
    )?;
    Ok(())
}
