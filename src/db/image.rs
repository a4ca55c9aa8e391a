//! Glance's tables: images (with their extra properties and tags) and image
//! members.
//!
//! Rows are loaded and stored whole; visibility rules, filters and sorting
//! live in `crate::image`. Extra properties that clients set (`kernel_id`,
//! `hw_*`, anything) are one JSON object in `properties`; tags are a JSON
//! array in `tags`.

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::{Db, DbResult};

/// The Glance tables (migration 2).
pub const SCHEMA: &str = r#"
CREATE TABLE images (
    id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL,
    visibility TEXT NOT NULL,
    protected INTEGER NOT NULL DEFAULT 0,
    os_hidden INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    disk_format TEXT,
    container_format TEXT,
    size INTEGER,
    virtual_size INTEGER,
    checksum TEXT,
    os_hash_algo TEXT,
    os_hash_value TEXT,
    min_disk INTEGER NOT NULL DEFAULT 0,
    min_ram INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX images_owner ON images(owner);
CREATE TABLE image_members (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    member_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (image_id, member_id)
);
CREATE INDEX image_members_member ON image_members(member_id);
-- Import tasks of an image (GET /v2/images/{id}/tasks).
CREATE TABLE image_tasks (
    id TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    input TEXT NOT NULL DEFAULT '{}',
    owner TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX image_tasks_image ON image_tasks(image_id);
-- Metadata definitions (metadefs): namespaces and, below them, objects,
-- properties, tags and resource type associations, each kept as JSON.
CREATE TABLE metadef_namespaces (
    namespace TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE metadef_items (
    namespace TEXT NOT NULL REFERENCES metadef_namespaces(namespace) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (namespace, kind, name)
);
"#;

/// Migration 5: deleted images keep their row (Glance's `deleted` flag), so
/// an id is never handed out twice; every read below skips deleted rows.
pub const SOFT_DELETE: &str = r#"
ALTER TABLE images ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN deleted_at TEXT;
CREATE INDEX images_owner_status ON images(owner, status) WHERE deleted = 0;
"#;

/// One image row.
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
    pub protected: bool,
    pub os_hidden: bool,
    pub owner: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub min_disk: i64,
    pub min_ram: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Extra (user-defined) properties.
    pub properties: Map<String, Value>,
    pub tags: Vec<String>,
}

/// One membership of a shared image.
#[derive(Debug, Clone)]
pub struct Member {
    pub image_id: String,
    pub member_id: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

const IMAGE_COLUMNS: &str = "id, name, status, visibility, protected, os_hidden, owner, \
    disk_format, container_format, size, virtual_size, checksum, os_hash_algo, os_hash_value, \
    min_disk, min_ram, created_at, updated_at, properties, tags";

fn image_from_row(row: &Row) -> rusqlite::Result<(Image, String, String)> {
    Ok((
        Image {
            id: row.get(0)?,
            name: row.get(1)?,
            status: row.get(2)?,
            visibility: row.get(3)?,
            protected: row.get(4)?,
            os_hidden: row.get(5)?,
            owner: row.get(6)?,
            disk_format: row.get(7)?,
            container_format: row.get(8)?,
            size: row.get(9)?,
            virtual_size: row.get(10)?,
            checksum: row.get(11)?,
            os_hash_algo: row.get(12)?,
            os_hash_value: row.get(13)?,
            min_disk: row.get(14)?,
            min_ram: row.get(15)?,
            created_at: row.get(16)?,
            updated_at: row.get(17)?,
            properties: Map::new(),
            tags: Vec::new(),
        },
        row.get(18)?,
        row.get(19)?,
    ))
}

fn decode((mut image, props, tags): (Image, String, String)) -> DbResult<Image> {
    image.properties = serde_json::from_str(&props)?;
    image.tags = serde_json::from_str(&tags)?;
    Ok(image)
}

/// Inserts a new image.
pub fn insert_image(conn: &Connection, image: &Image) -> DbResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO images ({IMAGE_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
        ),
        params![
            image.id,
            image.name,
            image.status,
            image.visibility,
            image.protected,
            image.os_hidden,
            image.owner,
            image.disk_format,
            image.container_format,
            image.size,
            image.virtual_size,
            image.checksum,
            image.os_hash_algo,
            image.os_hash_value,
            image.min_disk,
            image.min_ram,
            image.created_at,
            image.updated_at,
            serde_json::to_string(&image.properties)?,
            serde_json::to_string(&image.tags)?,
        ],
    )?;
    Ok(())
}

/// Rewrites every column of an existing image.
pub fn update_image(conn: &Connection, image: &Image) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE images SET name = ?2, status = ?3, visibility = ?4, protected = ?5, \
         os_hidden = ?6, owner = ?7, disk_format = ?8, container_format = ?9, size = ?10, \
         virtual_size = ?11, checksum = ?12, os_hash_algo = ?13, os_hash_value = ?14, \
         min_disk = ?15, min_ram = ?16, created_at = ?17, updated_at = ?18, properties = ?19, \
         tags = ?20 WHERE id = ?1 AND deleted = 0",
        params![
            image.id,
            image.name,
            image.status,
            image.visibility,
            image.protected,
            image.os_hidden,
            image.owner,
            image.disk_format,
            image.container_format,
            image.size,
            image.virtual_size,
            image.checksum,
            image.os_hash_algo,
            image.os_hash_value,
            image.min_disk,
            image.min_ram,
            image.created_at,
            image.updated_at,
            serde_json::to_string(&image.properties)?,
            serde_json::to_string(&image.tags)?,
        ],
    )?;
    Ok(n == 1)
}

/// One image by id (deleted images are not found).
pub fn get_image(conn: &Connection, id: &str) -> DbResult<Option<Image>> {
    let row = conn
        .query_row(
            &format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1 AND deleted = 0"),
            [id],
            image_from_row,
        )
        .optional()?;
    row.map(decode).transpose()
}

/// Every image that is not deleted (visibility is applied by the caller).
pub fn list_images(conn: &Connection) -> DbResult<Vec<Image>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {IMAGE_COLUMNS} FROM images WHERE deleted = 0"
    ))?;
    let rows = stmt.query_map([], image_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row?)?);
    }
    Ok(out)
}

/// Ids of the images in a given status.
pub fn image_ids_with_status(conn: &Connection, status: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare("SELECT id FROM images WHERE status = ?1 AND deleted = 0")?;
    let rows = stmt.query_map([status], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets the status of an image only if it currently has `from`; true when it did.
pub fn transition_status(
    conn: &Connection,
    id: &str,
    from: &str,
    to: &str,
    now: &str,
) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE images SET status = ?3, updated_at = ?4 WHERE id = ?1 AND status = ?2 \
         AND deleted = 0",
        params![id, from, to, now],
    )?;
    Ok(n == 1)
}

/// Puts an image whose upload or import failed back to `queued` (only if it
/// is still in `from`), forgetting the size a stage recorded; true when it did.
pub fn requeue_image(conn: &Connection, id: &str, from: &str, now: &str) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE images SET status = 'queued', size = NULL, virtual_size = NULL, updated_at = ?3 \
         WHERE id = ?1 AND status = ?2 AND deleted = 0",
        params![id, from, now],
    )?;
    Ok(n == 1)
}

/// Records the size of data staged for an image in `uploading`.
pub fn set_staged_size(conn: &Connection, id: &str, size: i64, now: &str) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE images SET size = ?2, updated_at = ?3 \
         WHERE id = ?1 AND status = 'uploading' AND deleted = 0",
        params![id, size, now],
    )?;
    Ok(n == 1)
}

/// True when an image with this id exists or ever existed: ids are never reused.
pub fn image_id_taken(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM images WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Deletes an image as Glance does: the row stays (status `deleted`,
/// `deleted = 1`) so its id can never be taken again; its members and tasks
/// go. True when a live image was deleted.
pub fn delete_image(conn: &Connection, id: &str, now: &str) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE images SET status = 'deleted', deleted = 1, deleted_at = ?2, updated_at = ?2 \
         WHERE id = ?1 AND deleted = 0",
        params![id, now],
    )?;
    conn.execute("DELETE FROM image_members WHERE image_id = ?1", [id])?;
    conn.execute("DELETE FROM image_tasks WHERE image_id = ?1", [id])?;
    Ok(n == 1)
}

/// What a project's images use, as Glance counts it for its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageUsage {
    /// Bytes of every image that holds data (`image_size_total`).
    pub stored_bytes: i64,
    /// Bytes of data staged for import (`image_stage_total`).
    pub staged_bytes: i64,
    /// Images that are not deleted (`image_count_total`).
    pub images: i64,
    /// Images taking data right now (`image_count_uploading`).
    pub uploading: i64,
}

/// The quota usage of one owner.
pub fn usage_of(conn: &Connection, owner: &str) -> DbResult<ImageUsage> {
    Ok(conn.query_row(
        "SELECT \
           COALESCE(SUM(CASE WHEN size > 0 AND status NOT IN ('killed', 'pending_delete') \
                             THEN size ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN size > 0 AND status IN ('uploading', 'importing') \
                             THEN size ELSE 0 END), 0), \
           COUNT(CASE WHEN status NOT IN ('killed', 'pending_delete') THEN 1 END), \
           COUNT(CASE WHEN status IN ('saving', 'uploading', 'importing') THEN 1 END) \
         FROM images WHERE owner = ?1 AND deleted = 0",
        [owner],
        |row| {
            Ok(ImageUsage {
                stored_bytes: row.get(0)?,
                staged_bytes: row.get(1)?,
                images: row.get(2)?,
                uploading: row.get(3)?,
            })
        },
    )?)
}

fn member_from_row(row: &Row) -> rusqlite::Result<Member> {
    Ok(Member {
        image_id: row.get(0)?,
        member_id: row.get(1)?,
        status: row.get(2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

/// The members of one image.
pub fn list_members(conn: &Connection, image_id: &str) -> DbResult<Vec<Member>> {
    let mut stmt = conn.prepare(
        "SELECT image_id, member_id, status, created_at, updated_at FROM image_members \
         WHERE image_id = ?1 ORDER BY created_at, member_id",
    )?;
    let rows = stmt.query_map([image_id], member_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every membership of one project (member), as (image id, status).
pub fn memberships_of(conn: &Connection, member_id: &str) -> DbResult<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare("SELECT image_id, status FROM image_members WHERE member_id = ?1")?;
    let rows = stmt.query_map([member_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One membership.
pub fn get_member(conn: &Connection, image_id: &str, member_id: &str) -> DbResult<Option<Member>> {
    Ok(conn
        .query_row(
            "SELECT image_id, member_id, status, created_at, updated_at FROM image_members \
             WHERE image_id = ?1 AND member_id = ?2",
            [image_id, member_id],
            member_from_row,
        )
        .optional()?)
}

/// Adds a membership (a duplicate is a unique violation).
pub fn insert_member(conn: &Connection, member: &Member) -> DbResult<()> {
    conn.execute(
        "INSERT INTO image_members (image_id, member_id, status, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            member.image_id,
            member.member_id,
            member.status,
            member.created_at,
            member.updated_at
        ],
    )?;
    Ok(())
}

/// Sets a membership's status; true when it existed.
pub fn update_member_status(
    conn: &Connection,
    image_id: &str,
    member_id: &str,
    status: &str,
    now: &str,
) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE image_members SET status = ?3, updated_at = ?4 WHERE image_id = ?1 AND member_id = ?2",
        params![image_id, member_id, status, now],
    )? == 1)
}

/// Removes a membership; true when it existed.
pub fn delete_member(conn: &Connection, image_id: &str, member_id: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM image_members WHERE image_id = ?1 AND member_id = ?2",
        [image_id, member_id],
    )? == 1)
}

/// An import task of an image.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub image_id: String,
    pub status: String,
    pub message: String,
    pub input: Value,
    pub owner: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Records a new task.
pub fn insert_task(conn: &Connection, task: &Task) -> DbResult<()> {
    conn.execute(
        "INSERT INTO image_tasks (id, image_id, status, message, input, owner, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            task.id,
            task.image_id,
            task.status,
            task.message,
            serde_json::to_string(&task.input)?,
            task.owner,
            task.created_at,
            task.updated_at
        ],
    )?;
    Ok(())
}

/// Sets a task's outcome (a task of a deleted image is gone: no error).
pub fn finish_task(
    conn: &Connection,
    id: &str,
    status: &str,
    message: &str,
    now: &str,
) -> DbResult<()> {
    conn.execute(
        "UPDATE image_tasks SET status = ?2, message = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, status, message, now],
    )?;
    Ok(())
}

/// The tasks of one image, oldest first.
pub fn list_tasks(conn: &Connection, image_id: &str) -> DbResult<Vec<Task>> {
    let mut stmt = conn.prepare(
        "SELECT id, image_id, status, message, input, owner, created_at, updated_at \
         FROM image_tasks WHERE image_id = ?1 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([image_id], |row| {
        Ok((
            Task {
                id: row.get(0)?,
                image_id: row.get(1)?,
                status: row.get(2)?,
                message: row.get(3)?,
                input: Value::Null,
                owner: row.get(5)?,
                created_at: row.get(6)?,
                updated_at: row.get(7)?,
            },
            row.get::<_, String>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut task, input) = row?;
        task.input = serde_json::from_str(&input)?;
        out.push(task);
    }
    Ok(out)
}

const TASK_COLUMNS: &str = "id, image_id, status, message, input, owner, created_at, updated_at";

fn task_from_row(row: &Row) -> rusqlite::Result<(Task, String)> {
    Ok((
        Task {
            id: row.get(0)?,
            image_id: row.get(1)?,
            status: row.get(2)?,
            message: row.get(3)?,
            input: Value::Null,
            owner: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
        },
        row.get::<_, String>(4)?,
    ))
}

fn with_input((mut task, input): (Task, String)) -> DbResult<Task> {
    task.input = serde_json::from_str(&input)?;
    Ok(task)
}

/// Every task (`/v2/tasks`), or those of one owner, oldest first.
pub fn all_tasks(conn: &Connection, owner: Option<&str>) -> DbResult<Vec<Task>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {TASK_COLUMNS} FROM image_tasks WHERE ?1 IS NULL OR owner = ?1 \
         ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([owner], task_from_row)?;
    rows.map(|row| with_input(row?)).collect()
}

/// One task by id.
pub fn get_task(conn: &Connection, id: &str) -> DbResult<Option<Task>> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} FROM image_tasks WHERE id = ?1"),
        [id],
        task_from_row,
    )
    .optional()?
    .map(with_input)
    .transpose()
}

/// Marks tasks interrupted by a restart as failed.
pub fn fail_processing_tasks(conn: &Connection, now: &str) -> DbResult<usize> {
    Ok(conn.execute(
        "UPDATE image_tasks SET status = 'failure', message = 'interrupted by a restart', \
         updated_at = ?1 WHERE status IN ('pending', 'processing')",
        [now],
    )?)
}

/// One metadefs namespace (its JSON body).
pub fn get_namespace(conn: &Connection, namespace: &str) -> DbResult<Option<Value>> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM metadef_namespaces WHERE namespace = ?1",
            [namespace],
            |row| row.get(0),
        )
        .optional()?;
    Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
}

/// Every metadefs namespace, by name.
pub fn list_namespaces(conn: &Connection) -> DbResult<Vec<Value>> {
    let mut stmt = conn.prepare("SELECT body FROM metadef_namespaces ORDER BY namespace")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?)?);
    }
    Ok(out)
}

/// Inserts or replaces a namespace; a rename moves its items along.
pub fn put_namespace(
    conn: &Connection,
    old: Option<&str>,
    namespace: &str,
    body: &Value,
) -> DbResult<()> {
    let text = serde_json::to_string(body)?;
    match old {
        Some(old) if old != namespace => {
            conn.execute(
                "INSERT INTO metadef_namespaces (namespace, body) VALUES (?1, ?2)",
                params![namespace, text],
            )?;
            conn.execute(
                "UPDATE metadef_items SET namespace = ?2 WHERE namespace = ?1",
                params![old, namespace],
            )?;
            conn.execute("DELETE FROM metadef_namespaces WHERE namespace = ?1", [old])?;
        }
        Some(_) => {
            conn.execute(
                "UPDATE metadef_namespaces SET body = ?2 WHERE namespace = ?1",
                params![namespace, text],
            )?;
        }
        None => {
            conn.execute(
                "INSERT INTO metadef_namespaces (namespace, body) VALUES (?1, ?2)",
                params![namespace, text],
            )?;
        }
    }
    Ok(())
}

/// Deletes a namespace and everything below it; true when it existed.
pub fn delete_namespace(conn: &Connection, namespace: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM metadef_namespaces WHERE namespace = ?1",
        [namespace],
    )? == 1)
}

/// The items of one kind in a namespace.
pub fn list_items(
    conn: &Connection,
    namespace: &str,
    kind: &str,
) -> DbResult<Vec<(String, Value)>> {
    let mut stmt = conn.prepare(
        "SELECT name, body FROM metadef_items WHERE namespace = ?1 AND kind = ?2 ORDER BY name",
    )?;
    let rows = stmt.query_map([namespace, kind], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, body) = row?;
        out.push((name, serde_json::from_str(&body)?));
    }
    Ok(out)
}

/// One item.
pub fn get_item(
    conn: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
) -> DbResult<Option<Value>> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM metadef_items WHERE namespace = ?1 AND kind = ?2 AND name = ?3",
            [namespace, kind, name],
            |row| row.get(0),
        )
        .optional()?;
    Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
}

/// Inserts an item (a duplicate is a unique violation).
pub fn insert_item(
    conn: &Connection,
    namespace: &str,
    kind: &str,
    name: &str,
    body: &Value,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO metadef_items (namespace, kind, name, body) VALUES (?1, ?2, ?3, ?4)",
        params![namespace, kind, name, serde_json::to_string(body)?],
    )?;
    Ok(())
}

/// Deletes one item (`name = None`: every item of the kind); the count removed.
pub fn delete_items(
    conn: &Connection,
    namespace: &str,
    kind: &str,
    name: Option<&str>,
) -> DbResult<usize> {
    Ok(match name {
        Some(name) => conn.execute(
            "DELETE FROM metadef_items WHERE namespace = ?1 AND kind = ?2 AND name = ?3",
            [namespace, kind, name],
        )?,
        None => conn.execute(
            "DELETE FROM metadef_items WHERE namespace = ?1 AND kind = ?2",
            [namespace, kind],
        )?,
    })
}

impl Db {
    /// The directory that holds the state file (image data lives below it).
    pub fn state_dir(&self) -> PathBuf {
        self.inner
            .path
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}
