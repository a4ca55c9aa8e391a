//! Keystone's unified limits: registered limits (a service's default for a
//! resource) and limits (a project's or domain's override of one).
//!
//! A limit names its registered limit; service, region and resource name
//! come from there, as in Keystone's schema.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::DbResult;

/// The unified limit tables (migration 6).
pub const SCHEMA: &str = r#"
CREATE TABLE registered_limits (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    region_id TEXT REFERENCES regions(id) ON DELETE CASCADE,
    resource_name TEXT NOT NULL,
    default_limit INTEGER NOT NULL,
    description TEXT
);
CREATE UNIQUE INDEX registered_limits_unique
    ON registered_limits(service_id, IFNULL(region_id, ''), resource_name);
CREATE TABLE limits (
    id TEXT PRIMARY KEY,
    registered_limit_id TEXT NOT NULL REFERENCES registered_limits(id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    domain_id TEXT REFERENCES domains(id) ON DELETE CASCADE,
    resource_limit INTEGER NOT NULL,
    description TEXT
);
CREATE UNIQUE INDEX limits_unique
    ON limits(registered_limit_id, IFNULL(project_id, ''), IFNULL(domain_id, ''));
CREATE INDEX limits_project ON limits(project_id);
-- Service types whose default registered limits bootstrap has created once
-- (an operator's later deletions stay deleted).
CREATE TABLE limit_seeds (
    service_type TEXT PRIMARY KEY,
    seeded_at INTEGER NOT NULL
);
"#;

/// A service's default limit for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredLimit {
    pub id: String,
    pub service_id: String,
    pub region_id: Option<String>,
    pub resource_name: String,
    pub default_limit: i64,
    pub description: Option<String>,
}

/// A project's (or domain's) limit for one registered resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub id: String,
    pub registered_limit_id: String,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub resource_limit: i64,
    pub description: Option<String>,
    /// From the registered limit.
    pub service_id: String,
    pub region_id: Option<String>,
    pub resource_name: String,
}

const REGISTERED_COLUMNS: &str =
    "id, service_id, region_id, resource_name, default_limit, description";

fn registered_from_row(row: &Row) -> rusqlite::Result<RegisteredLimit> {
    Ok(RegisteredLimit {
        id: row.get(0)?,
        service_id: row.get(1)?,
        region_id: row.get(2)?,
        resource_name: row.get(3)?,
        default_limit: row.get(4)?,
        description: row.get(5)?,
    })
}

const LIMIT_SELECT: &str = "SELECT l.id, l.registered_limit_id, l.project_id, l.domain_id, \
    l.resource_limit, l.description, r.service_id, r.region_id, r.resource_name \
    FROM limits l JOIN registered_limits r ON r.id = l.registered_limit_id";

fn limit_from_row(row: &Row) -> rusqlite::Result<Limit> {
    Ok(Limit {
        id: row.get(0)?,
        registered_limit_id: row.get(1)?,
        project_id: row.get(2)?,
        domain_id: row.get(3)?,
        resource_limit: row.get(4)?,
        description: row.get(5)?,
        service_id: row.get(6)?,
        region_id: row.get(7)?,
        resource_name: row.get(8)?,
    })
}

/// Every registered limit, in creation order.
pub fn list_registered_limits(conn: &Connection) -> DbResult<Vec<RegisteredLimit>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {REGISTERED_COLUMNS} FROM registered_limits ORDER BY rowid"
    ))?;
    let rows = stmt.query_map([], registered_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One registered limit by id.
pub fn get_registered_limit(conn: &Connection, id: &str) -> DbResult<Option<RegisteredLimit>> {
    Ok(conn
        .query_row(
            &format!("SELECT {REGISTERED_COLUMNS} FROM registered_limits WHERE id = ?1"),
            [id],
            registered_from_row,
        )
        .optional()?)
}

/// The registered limit for exactly this service, region (`None`: none) and resource.
pub fn find_registered_limit(
    conn: &Connection,
    service_id: &str,
    region_id: Option<&str>,
    resource_name: &str,
) -> DbResult<Option<RegisteredLimit>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {REGISTERED_COLUMNS} FROM registered_limits \
                 WHERE service_id = ?1 AND IFNULL(region_id, '') = IFNULL(?2, '') \
                 AND resource_name = ?3"
            ),
            params![service_id, region_id, resource_name],
            registered_from_row,
        )
        .optional()?)
}

/// Inserts a registered limit (a duplicate is a unique violation).
pub fn insert_registered_limit(conn: &Connection, limit: &RegisteredLimit) -> DbResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO registered_limits ({REGISTERED_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        ),
        params![
            limit.id,
            limit.service_id,
            limit.region_id,
            limit.resource_name,
            limit.default_limit,
            limit.description
        ],
    )?;
    Ok(())
}

/// Rewrites a registered limit; true when it existed.
pub fn update_registered_limit(conn: &Connection, limit: &RegisteredLimit) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE registered_limits SET service_id = ?2, region_id = ?3, resource_name = ?4, \
         default_limit = ?5, description = ?6 WHERE id = ?1",
        params![
            limit.id,
            limit.service_id,
            limit.region_id,
            limit.resource_name,
            limit.default_limit,
            limit.description
        ],
    )? == 1)
}

/// Deletes a registered limit; true when it existed.
pub fn delete_registered_limit(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM registered_limits WHERE id = ?1", [id])? == 1)
}

/// True when some limit overrides this registered limit.
pub fn registered_limit_in_use(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM limits WHERE registered_limit_id = ?1 LIMIT 1",
            [id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Every limit, in creation order.
pub fn list_limits(conn: &Connection) -> DbResult<Vec<Limit>> {
    let mut stmt = conn.prepare(&format!("{LIMIT_SELECT} ORDER BY l.rowid"))?;
    let rows = stmt.query_map([], limit_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One limit by id.
pub fn get_limit(conn: &Connection, id: &str) -> DbResult<Option<Limit>> {
    Ok(conn
        .query_row(
            &format!("{LIMIT_SELECT} WHERE l.id = ?1"),
            [id],
            limit_from_row,
        )
        .optional()?)
}

/// True when this project or domain already has a limit on the registered limit.
pub fn limit_exists(
    conn: &Connection,
    registered_limit_id: &str,
    project_id: Option<&str>,
    domain_id: Option<&str>,
) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM limits WHERE registered_limit_id = ?1 \
             AND IFNULL(project_id, '') = IFNULL(?2, '') AND IFNULL(domain_id, '') = IFNULL(?3, '')",
            params![registered_limit_id, project_id, domain_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Inserts a limit (a duplicate is a unique violation).
pub fn insert_limit(conn: &Connection, limit: &Limit) -> DbResult<()> {
    conn.execute(
        "INSERT INTO limits (id, registered_limit_id, project_id, domain_id, resource_limit, \
         description) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            limit.id,
            limit.registered_limit_id,
            limit.project_id,
            limit.domain_id,
            limit.resource_limit,
            limit.description
        ],
    )?;
    Ok(())
}

/// Sets a limit's value and description; true when it existed.
pub fn update_limit(
    conn: &Connection,
    id: &str,
    resource_limit: i64,
    description: Option<&str>,
) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE limits SET resource_limit = ?2, description = ?3 WHERE id = ?1",
        params![id, resource_limit, description],
    )? == 1)
}

/// Deletes a limit; true when it existed.
pub fn delete_limit(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM limits WHERE id = ?1", [id])? == 1)
}

/// True when a service with this id exists.
pub fn service_exists(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM services WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// True when a region with this id exists.
pub fn region_exists(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn
        .query_row("SELECT 1 FROM regions WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The limit that applies to a project for a resource of every service of
/// `service_type` (any region): the project's own limit, else the registered
/// default, else `None`. When several services or regions match, the
/// smallest value wins.
pub fn effective_limit(
    conn: &Connection,
    service_type: &str,
    resource_name: &str,
    project_id: &str,
) -> DbResult<Option<i64>> {
    let project_limit: Option<i64> = conn.query_row(
        "SELECT MIN(l.resource_limit) FROM limits l \
         JOIN registered_limits r ON r.id = l.registered_limit_id \
         JOIN services s ON s.id = r.service_id \
         WHERE s.type = ?1 AND r.resource_name = ?2 AND l.project_id = ?3",
        params![service_type, resource_name, project_id],
        |row| row.get(0),
    )?;
    if project_limit.is_some() {
        return Ok(project_limit);
    }
    Ok(conn.query_row(
        "SELECT MIN(r.default_limit) FROM registered_limits r \
         JOIN services s ON s.id = r.service_id \
         WHERE s.type = ?1 AND r.resource_name = ?2",
        params![service_type, resource_name],
        |row| row.get(0),
    )?)
}

/// The services of a type, by id.
pub fn service_ids_of_type(conn: &Connection, service_type: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare("SELECT id FROM services WHERE type = ?1 ORDER BY id")?;
    let rows = stmt.query_map([service_type], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// True when the defaults of this service type were seeded before.
pub fn seeded(conn: &Connection, service_type: &str) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM limit_seeds WHERE service_type = ?1",
            [service_type],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Records that the defaults of this service type were seeded.
pub fn mark_seeded(conn: &Connection, service_type: &str, now: i64) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO limit_seeds (service_type, seeded_at) VALUES (?1, ?2)",
        params![service_type, now],
    )?;
    Ok(())
}
