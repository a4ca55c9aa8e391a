//! Cinder's tables: volumes, snapshots, volume types (with extra specs and
//! access), QoS specs and quotas.
//!
//! Volumes, snapshots, types and QoS specs are each one JSON document (`doc`)
//! next to the few columns lookups and usage sums need; the document is the
//! whole record, loaded and stored whole. Deleting removes the row (the
//! volume's file goes with it), so a deleted volume is simply not found.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::DbResult;

/// The id of Cinder's default volume type, `__DEFAULT__` (fixed, so every
/// state file names it the same).
pub const DEFAULT_TYPE_ID: &str = "2c9a9a6e-4b6e-4d6e-9c1e-0f2d6b7a0001";
/// The name of the default volume type.
#[cfg(test)]
pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";

/// The volume tables (one migration).
pub const SCHEMA: &str = r#"
CREATE TABLE volume_volumes (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    status TEXT NOT NULL,
    size INTEGER NOT NULL,
    type_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX volume_volumes_by_project ON volume_volumes (project_id);
CREATE TABLE volume_snapshots (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    status TEXT NOT NULL,
    size INTEGER NOT NULL,
    type_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX volume_snapshots_by_volume ON volume_snapshots (volume_id);
CREATE TABLE volume_types (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
CREATE TABLE volume_type_access (
    type_id TEXT NOT NULL REFERENCES volume_types (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    PRIMARY KEY (type_id, project_id)
);
CREATE TABLE volume_qos_specs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc TEXT NOT NULL
);
CREATE TABLE volume_quotas (
    scope TEXT NOT NULL,
    owner TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (scope, owner, resource)
);
INSERT INTO volume_types (id, name, doc) VALUES (
    '2c9a9a6e-4b6e-4d6e-9c1e-0f2d6b7a0001', '__DEFAULT__',
    '{"id":"2c9a9a6e-4b6e-4d6e-9c1e-0f2d6b7a0001","name":"__DEFAULT__","description":"Default Volume Type","is_public":true,"extra_specs":{},"qos_specs_id":null,"created_at":"2024-01-01T00:00:00.000000"}'
);
"#;

/// One attachment of a volume (os-attach or the attachments API).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Attachment {
    pub id: String,
    #[serde(default)]
    pub instance_uuid: Option<String>,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub mountpoint: Option<String>,
    /// `reserved`, `attaching`, `attached`, `detaching`.
    pub attach_status: String,
    #[serde(default)]
    pub attach_mode: String,
    #[serde(default)]
    pub connector: Option<serde_json::Value>,
    pub attached_at: Option<String>,
}

/// A volume (Cinder's `volumes` row with its metadata).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Volume {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// GiB.
    pub size: i64,
    pub status: String,
    /// `detached` or `attached`.
    pub attach_status: String,
    pub availability_zone: String,
    pub bootable: bool,
    pub readonly: Option<bool>,
    pub multiattach: bool,
    pub volume_type_id: String,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub image_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub image_metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    pub migration_status: Option<String>,
    pub created_at: String,
    pub updated_at: Option<String>,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Snapshot {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub volume_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: i64,
    pub status: String,
    pub volume_type_id: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub progress: String,
    pub created_at: String,
    pub updated_at: Option<String>,
}

/// A volume type.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
    pub qos_specs_id: Option<String>,
    pub created_at: String,
}

/// A QoS specs entity.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct QosSpecs {
    pub id: String,
    pub name: String,
    /// `front-end`, `back-end` or `both`.
    pub consumer: String,
    #[serde(default)]
    pub specs: BTreeMap<String, String>,
    pub created_at: String,
}

fn decode<T: DeserializeOwned>(doc: String) -> DbResult<T> {
    Ok(serde_json::from_str(&doc)?)
}

// ------------------------------------------------------------------ volumes

/// Inserts or replaces a volume.
pub fn put_volume(tx: &Connection, v: &Volume) -> DbResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO volume_volumes (id, project_id, status, size, type_id, created_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            v.id,
            v.project_id,
            v.status,
            v.size,
            v.volume_type_id,
            v.created_at,
            serde_json::to_string(v)?
        ],
    )?;
    Ok(())
}

pub fn get_volume(conn: &Connection, id: &str) -> DbResult<Option<Volume>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM volume_volumes WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    doc.map(decode).transpose()
}

/// Every volume of a project (`None`: of every project), oldest first.
pub fn list_volumes(conn: &Connection, project: Option<&str>) -> DbResult<Vec<Volume>> {
    let mut stmt = conn.prepare(
        "SELECT doc FROM volume_volumes WHERE ?1 IS NULL OR project_id = ?1
         ORDER BY created_at, id",
    )?;
    let docs = stmt
        .query_map([project], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

/// The volume that holds an attachment (attachments live in the volume's
/// document).
pub fn volume_with_attachment(conn: &Connection, attachment_id: &str) -> DbResult<Option<Volume>> {
    let doc: Option<String> = conn
        .query_row(
            "SELECT doc FROM volume_volumes WHERE EXISTS (
                 SELECT 1 FROM json_each(volume_volumes.doc, '$.attachments')
                 WHERE json_extract(value, '$.id') = ?1)",
            [attachment_id],
            |r| r.get(0),
        )
        .optional()?;
    doc.map(decode).transpose()
}

pub fn delete_volume(tx: &Connection, id: &str) -> DbResult<bool> {
    Ok(tx.execute("DELETE FROM volume_volumes WHERE id = ?1", [id])? > 0)
}

/// Every volume id with its status (start-up reconciliation).
pub fn volume_statuses(conn: &Connection) -> DbResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT id, status FROM volume_volumes")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// GiB provisioned on the backend: every volume and snapshot.
pub fn provisioned_gb(conn: &Connection) -> DbResult<i64> {
    let volumes: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM volume_volumes",
        [],
        |r| r.get(0),
    )?;
    let snapshots: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size), 0) FROM volume_snapshots",
        [],
        |r| r.get(0),
    )?;
    Ok(volumes + snapshots)
}

/// What a project uses: per resource name (`volumes`, `gigabytes`,
/// `snapshots`, and `volumes_<type>`, `gigabytes_<type>`, `snapshots_<type>`).
pub fn usage(conn: &Connection, project: &str) -> DbResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let names = type_names(conn)?;
    for (table, count_key) in [
        ("volume_volumes", "volumes"),
        ("volume_snapshots", "snapshots"),
    ] {
        let sql = format!(
            "SELECT type_id, COUNT(*), COALESCE(SUM(size), 0) FROM {table}
             WHERE project_id = ?1 GROUP BY type_id"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt
            .query_map([project], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (type_id, count, gb) in rows {
            *out.entry(count_key.to_string()).or_insert(0) += count;
            *out.entry("gigabytes".to_string()).or_insert(0) += gb;
            if let Some(name) = names.get(&type_id) {
                *out.entry(format!("{count_key}_{name}")).or_insert(0) += count;
                *out.entry(format!("gigabytes_{name}")).or_insert(0) += gb;
            }
        }
    }
    let (backups, backup_gb) = super::volume_records::usage(conn, project)?;
    out.insert("backups".into(), backups);
    out.insert("backup_gigabytes".into(), backup_gb);
    Ok(out)
}

fn type_names(conn: &Connection) -> DbResult<BTreeMap<String, String>> {
    let mut stmt = conn.prepare("SELECT id, name FROM volume_types")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

// ---------------------------------------------------------------- snapshots

pub fn put_snapshot(tx: &Connection, s: &Snapshot) -> DbResult<()> {
    tx.execute(
        "INSERT OR REPLACE INTO volume_snapshots
         (id, project_id, status, size, type_id, created_at, volume_id, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            s.id,
            s.project_id,
            s.status,
            s.size,
            s.volume_type_id,
            s.created_at,
            s.volume_id,
            serde_json::to_string(s)?
        ],
    )?;
    Ok(())
}

pub fn get_snapshot(conn: &Connection, id: &str) -> DbResult<Option<Snapshot>> {
    let doc: Option<String> = conn
        .query_row(
            "SELECT doc FROM volume_snapshots WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    doc.map(decode).transpose()
}

pub fn list_snapshots(conn: &Connection, project: Option<&str>) -> DbResult<Vec<Snapshot>> {
    let mut stmt = conn.prepare(
        "SELECT doc FROM volume_snapshots WHERE ?1 IS NULL OR project_id = ?1
         ORDER BY created_at, id",
    )?;
    let docs = stmt
        .query_map([project], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

pub fn delete_snapshot(tx: &Connection, id: &str) -> DbResult<bool> {
    Ok(tx.execute("DELETE FROM volume_snapshots WHERE id = ?1", [id])? > 0)
}

pub fn snapshot_statuses(conn: &Connection) -> DbResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare("SELECT id, status FROM volume_snapshots")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

// ------------------------------------------------------------- volume types

pub fn put_type(tx: &Connection, t: &VolumeType) -> DbResult<()> {
    tx.execute(
        "INSERT INTO volume_types (id, name, doc) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
        params![t.id, t.name, serde_json::to_string(t)?],
    )?;
    Ok(())
}

pub fn get_type(conn: &Connection, id: &str) -> DbResult<Option<VolumeType>> {
    let doc: Option<String> = conn
        .query_row("SELECT doc FROM volume_types WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    doc.map(decode).transpose()
}

pub fn get_type_by_name(conn: &Connection, name: &str) -> DbResult<Option<VolumeType>> {
    let doc: Option<String> = conn
        .query_row(
            "SELECT doc FROM volume_types WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?;
    doc.map(decode).transpose()
}

pub fn list_types(conn: &Connection) -> DbResult<Vec<VolumeType>> {
    let mut stmt = conn.prepare("SELECT doc FROM volume_types ORDER BY name")?;
    let docs = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

/// Deletes a type; false when it did not exist.
pub fn delete_type(tx: &Connection, id: &str) -> DbResult<bool> {
    Ok(tx.execute("DELETE FROM volume_types WHERE id = ?1", [id])? > 0)
}

/// Whether any volume or snapshot uses the type.
pub fn type_in_use(conn: &Connection, id: &str) -> DbResult<bool> {
    let n: i64 = conn.query_row(
        "SELECT (SELECT COUNT(*) FROM volume_volumes WHERE type_id = ?1)
              + (SELECT COUNT(*) FROM volume_snapshots WHERE type_id = ?1)",
        [id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

pub fn type_access(conn: &Connection, type_id: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT project_id FROM volume_type_access WHERE type_id = ?1 ORDER BY project_id",
    )?;
    let rows = stmt
        .query_map([type_id], |r| r.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Adds access; false when the project had it already.
pub fn add_type_access(tx: &Connection, type_id: &str, project: &str) -> DbResult<bool> {
    Ok(tx.execute(
        "INSERT OR IGNORE INTO volume_type_access (type_id, project_id) VALUES (?1, ?2)",
        params![type_id, project],
    )? > 0)
}

/// Removes access; false when the project did not have it.
pub fn remove_type_access(tx: &Connection, type_id: &str, project: &str) -> DbResult<bool> {
    Ok(tx.execute(
        "DELETE FROM volume_type_access WHERE type_id = ?1 AND project_id = ?2",
        params![type_id, project],
    )? > 0)
}

// ---------------------------------------------------------------- QoS specs

pub fn put_qos(tx: &Connection, q: &QosSpecs) -> DbResult<()> {
    tx.execute(
        "INSERT INTO volume_qos_specs (id, name, doc) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
        params![q.id, q.name, serde_json::to_string(q)?],
    )?;
    Ok(())
}

pub fn get_qos(conn: &Connection, id: &str) -> DbResult<Option<QosSpecs>> {
    let doc: Option<String> = conn
        .query_row(
            "SELECT doc FROM volume_qos_specs WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    doc.map(decode).transpose()
}

pub fn list_qos(conn: &Connection) -> DbResult<Vec<QosSpecs>> {
    let mut stmt = conn.prepare("SELECT doc FROM volume_qos_specs ORDER BY name")?;
    let docs = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.into_iter().map(decode).collect()
}

pub fn delete_qos(tx: &Connection, id: &str) -> DbResult<bool> {
    Ok(tx.execute("DELETE FROM volume_qos_specs WHERE id = ?1", [id])? > 0)
}

// ------------------------------------------------------------------- quotas

/// The limits set for a project (`scope` "project") or a quota class
/// (`scope` "class"), by resource.
pub fn quotas(conn: &Connection, scope: &str, owner: &str) -> DbResult<BTreeMap<String, i64>> {
    let mut stmt = conn.prepare(
        "SELECT resource, hard_limit FROM volume_quotas WHERE scope = ?1 AND owner = ?2",
    )?;
    let rows = stmt
        .query_map(params![scope, owner], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    Ok(rows)
}

pub fn set_quota(
    tx: &Connection,
    scope: &str,
    owner: &str,
    resource: &str,
    limit: i64,
) -> DbResult<()> {
    tx.execute(
        "INSERT INTO volume_quotas (scope, owner, resource, hard_limit) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (scope, owner, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        params![scope, owner, resource, limit],
    )?;
    Ok(())
}

/// Drops every limit set for the owner (back to the class defaults).
pub fn delete_quotas(tx: &Connection, scope: &str, owner: &str) -> DbResult<()> {
    tx.execute(
        "DELETE FROM volume_quotas WHERE scope = ?1 AND owner = ?2",
        params![scope, owner],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(SCHEMA).expect("schema");
        conn.execute_batch(super::super::volume_records::SCHEMA)
            .expect("backups");
        conn
    }

    #[test]
    fn volumes_round_trip_and_count_per_type() {
        let conn = conn();
        let v = Volume {
            id: "v1".into(),
            project_id: "p".into(),
            size: 3,
            status: "available".into(),
            volume_type_id: DEFAULT_TYPE_ID.into(),
            created_at: "2024".into(),
            ..Volume::default()
        };
        put_volume(&conn, &v).expect("put");
        assert_eq!(get_volume(&conn, "v1").expect("get"), Some(v.clone()));
        assert_eq!(volume_with_attachment(&conn, "a1").expect("find"), None);
        let mut attached = v.clone();
        attached.attachments.push(Attachment {
            id: "a1".into(),
            attach_status: "reserved".into(),
            ..Attachment::default()
        });
        put_volume(&conn, &attached).expect("put");
        assert_eq!(
            volume_with_attachment(&conn, "a1")
                .expect("find")
                .map(|x| x.id),
            Some("v1".to_string())
        );
        put_volume(&conn, &v).expect("put");
        assert_eq!(list_volumes(&conn, Some("q")).expect("list").len(), 0);
        let used = usage(&conn, "p").expect("usage");
        assert_eq!(used.get("volumes"), Some(&1));
        assert_eq!(used.get("gigabytes___DEFAULT__"), Some(&3));
        assert_eq!(provisioned_gb(&conn).expect("sum"), 3);
        assert!(type_in_use(&conn, DEFAULT_TYPE_ID).expect("in use"));
        assert!(delete_volume(&conn, "v1").expect("delete"));
        assert_eq!(get_volume(&conn, "v1").expect("get"), None);
    }

    #[test]
    fn the_default_type_exists() {
        let conn = conn();
        let t = get_type_by_name(&conn, DEFAULT_TYPE_NAME)
            .expect("read")
            .expect("present");
        assert_eq!(t.id, DEFAULT_TYPE_ID);
        assert!(t.is_public);
    }
}
