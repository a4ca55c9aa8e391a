//! Cinder's backups and volume transfers.
//!
//! Like the volume tables, a backup is one JSON document (`doc`) next to the
//! columns lookups and usage sums need. `data_id` names the backup's data in
//! the backup directory: its own id when it was made here, the exported
//! record's when it was imported (two records may then share the data, and
//! the data goes with the last of them).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::DbResult;

/// The backups and transfers tables (one migration).
pub const SCHEMA: &str = r#"
CREATE TABLE volume_transfers (
    id TEXT PRIMARY KEY,
    volume_id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX volume_transfers_by_project ON volume_transfers (project_id);
CREATE TABLE volume_backups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    status TEXT NOT NULL,
    size INTEGER NOT NULL,
    parent_id TEXT,
    data_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX volume_backups_by_volume ON volume_backups (volume_id);
CREATE INDEX volume_backups_by_project ON volume_backups (project_id);
CREATE INDEX volume_backups_by_parent ON volume_backups (parent_id);
"#;

/// A backup of a volume (or of one of its snapshots).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Backup {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// `creating`, `available`, `restoring`, `deleting`, `error`,
    /// `error_deleting` (Cinder's).
    pub status: String,
    #[serde(default)]
    pub fail_reason: Option<String>,
    /// GiB (the source volume's size).
    pub size: i64,
    /// Chunks stored by this backup (not those it shares with its parent).
    #[serde(default)]
    pub object_count: i64,
    pub availability_zone: String,
    #[serde(default)]
    pub container: Option<String>,
    pub is_incremental: bool,
    /// The backup an incremental one builds on.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// The directory of the data in the backup directory.
    pub data_id: String,
    /// When the data was taken (the snapshot's time for a snapshot backup).
    pub data_timestamp: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The source volume's metadata, image metadata and bootable flag, given
    /// back to a volume a restore creates.
    #[serde(default)]
    pub volume_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub volume_image_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub bootable: bool,
    /// The volume a running restore writes (reconciliation needs it).
    #[serde(default)]
    pub restore_volume_id: Option<String>,
    /// The volume's status before `backing-up` (given back after the
    /// backup, or by the reconciliation after a crash).
    #[serde(default)]
    pub volume_previous_status: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

pub fn put_backup(tx: &Connection, b: &Backup) -> DbResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO volume_backups
         (id, project_id, volume_id, status, size, parent_id, data_id, created_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            b.id,
            b.project_id,
            b.volume_id,
            b.status,
            b.size,
            b.parent_id,
            b.data_id,
            b.created_at,
            serde_json::to_string(b)?
        ],
    )?;
    Ok(())
}

pub fn get_backup(conn: &Connection, id: &str) -> DbResult<Option<Backup>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM volume_backups WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

/// Every backup of a project (`None`: of every project), oldest first.
pub fn list_backups(conn: &Connection, project: Option<&str>) -> DbResult<Vec<Backup>> {
    let mut stmt = conn.prepare(
        "SELECT doc FROM volume_backups WHERE ?1 IS NULL OR project_id = ?1
         ORDER BY created_at, id",
    )?;
    let docs = stmt
        .query_map([project], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter()
        .map(|d| Ok(serde_json::from_str(&d)?))
        .collect()
}

/// The backups of a volume, oldest first.
pub fn backups_of_volume(conn: &Connection, volume_id: &str) -> DbResult<Vec<Backup>> {
    let mut stmt = conn
        .prepare("SELECT doc FROM volume_backups WHERE volume_id = ?1 ORDER BY created_at, id")?;
    let docs = stmt
        .query_map([volume_id], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter()
        .map(|d| Ok(serde_json::from_str(&d)?))
        .collect()
}

/// Whether an incremental backup builds on this one.
pub fn has_dependents(conn: &Connection, id: &str) -> DbResult<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM volume_backups WHERE parent_id = ?1",
        [id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// How many records point at a data directory.
pub fn data_users(conn: &Connection, data_id: &str) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM volume_backups WHERE data_id = ?1",
        [data_id],
        |r| r.get(0),
    )?)
}

pub fn delete_backup(tx: &Connection, id: &str) -> DbResult<bool> {
    Ok(tx.execute("DELETE FROM volume_backups WHERE id = ?1", [id])? > 0)
}

/// `backups` and `backup_gigabytes` a project uses.
pub fn usage(conn: &Connection, project: &str) -> DbResult<(i64, i64)> {
    Ok(conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM volume_backups WHERE project_id = ?1",
        [project],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

// ---------------------------------------------------------------- transfers

/// A volume offered to another project (`awaiting-transfer` until it is
/// accepted or the offer deleted). The auth key itself is never stored:
/// only an HMAC-SHA1 of it under a random salt, as Cinder keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Transfer {
    pub id: String,
    pub volume_id: String,
    /// The giving project (the volume's at the time of the offer).
    pub project_id: String,
    pub name: Option<String>,
    pub salt: String,
    pub crypt_hash: String,
    /// Whether the volume's snapshots stay behind (3.55).
    #[serde(default)]
    pub no_snapshots: bool,
    pub created_at: String,
}

pub fn put_transfer(tx: &Connection, t: &Transfer) -> DbResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO volume_transfers (id, volume_id, project_id, created_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            t.id,
            t.volume_id,
            t.project_id,
            t.created_at,
            serde_json::to_string(t)?
        ],
    )?;
    Ok(())
}

pub fn get_transfer(conn: &Connection, id: &str) -> DbResult<Option<Transfer>> {
    let doc: Option<String> = conn
        .query_row(
            "SELECT doc FROM volume_transfers WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
}

/// The transfers of a project (`None`: of every project), oldest first.
pub fn list_transfers(conn: &Connection, project: Option<&str>) -> DbResult<Vec<Transfer>> {
    let mut stmt = conn.prepare(
        "SELECT doc FROM volume_transfers WHERE ?1 IS NULL OR project_id = ?1
         ORDER BY created_at, id",
    )?;
    let docs = stmt
        .query_map([project], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter()
        .map(|d| Ok(serde_json::from_str(&d)?))
        .collect()
}

pub fn delete_transfer(tx: &Connection, id: &str) -> DbResult<bool> {
    Ok(tx.execute("DELETE FROM volume_transfers WHERE id = ?1", [id])? > 0)
}

/// Drops the offer of a volume that is being deleted (force-delete).
pub fn delete_transfers_of_volume(tx: &Connection, volume_id: &str) -> DbResult<()> {
    tx.execute(
        "DELETE FROM volume_transfers WHERE volume_id = ?1",
        [volume_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_round_trip_with_dependents_and_usage() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(SCHEMA).expect("schema");
        let full = Backup {
            id: "b1".into(),
            project_id: "p".into(),
            volume_id: "v".into(),
            status: "available".into(),
            size: 2,
            data_id: "b1".into(),
            created_at: "1".into(),
            ..Backup::default()
        };
        let incr = Backup {
            id: "b2".into(),
            parent_id: Some("b1".into()),
            is_incremental: true,
            data_id: "b2".into(),
            created_at: "2".into(),
            ..full.clone()
        };
        put_backup(&conn, &full).expect("put");
        put_backup(&conn, &incr).expect("put");
        assert_eq!(get_backup(&conn, "b2").expect("get"), Some(incr));
        assert!(has_dependents(&conn, "b1").expect("deps"));
        assert!(!has_dependents(&conn, "b2").expect("deps"));
        assert_eq!(usage(&conn, "p").expect("usage"), (2, 4));
        assert_eq!(backups_of_volume(&conn, "v").expect("list").len(), 2);
        assert_eq!(data_users(&conn, "b1").expect("users"), 1);
        assert!(delete_backup(&conn, "b2").expect("delete"));
        assert_eq!(list_backups(&conn, Some("p")).expect("list").len(), 1);
    }

    #[test]
    fn transfers_round_trip_one_per_volume() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(SCHEMA).expect("schema");
        let t = Transfer {
            id: "t1".into(),
            volume_id: "v".into(),
            project_id: "p".into(),
            created_at: "1".into(),
            ..Transfer::default()
        };
        put_transfer(&conn, &t).expect("put");
        assert_eq!(get_transfer(&conn, "t1").expect("get"), Some(t.clone()));
        let again = Transfer {
            id: "t2".into(),
            ..t
        };
        assert!(put_transfer(&conn, &again).is_ok(), "replaces by volume");
        assert_eq!(list_transfers(&conn, Some("p")).expect("list").len(), 1);
        assert!(delete_transfer(&conn, "t2").expect("delete"));
        assert!(list_transfers(&conn, None).expect("list").is_empty());
    }
}
