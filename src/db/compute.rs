//! Nova's tables: flavors (with extra specs and access lists), keypairs,
//! quotas and quota classes, server groups and the compute services.
//!
//! Rows are loaded and stored whole; validation, policy and the
//! per-microversion JSON shapes live in `crate::compute`. The DevStack
//! default flavors are part of the migration, so they appear exactly once,
//! on the first start, and stay deleted if an admin deletes them.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{DbError, DbResult};

/// The Nova tables (migration 3).
pub const SCHEMA: &str = r#"
CREATE TABLE compute_flavors (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ram INTEGER NOT NULL,
    vcpus INTEGER NOT NULL,
    disk INTEGER NOT NULL,
    ephemeral INTEGER NOT NULL DEFAULT 0,
    swap INTEGER NOT NULL DEFAULT 0,
    rxtx_factor REAL NOT NULL DEFAULT 1.0,
    is_public INTEGER NOT NULL DEFAULT 1,
    disabled INTEGER NOT NULL DEFAULT 0,
    description TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE compute_flavor_extra_specs (
    flavor_id TEXT NOT NULL REFERENCES compute_flavors(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (flavor_id, key)
);
CREATE TABLE compute_flavor_projects (
    flavor_id TEXT NOT NULL REFERENCES compute_flavors(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    PRIMARY KEY (flavor_id, project_id)
);
CREATE TABLE compute_keypairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, name)
);
-- user_id is '' for a project-wide limit, a user id for a per-user override.
CREATE TABLE compute_quotas (
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (project_id, user_id, resource)
);
CREATE TABLE compute_quota_classes (
    class_name TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (class_name, resource)
);
CREATE TABLE compute_server_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    policy TEXT NOT NULL,
    rules TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
CREATE TABLE compute_server_group_members (
    group_id TEXT NOT NULL REFERENCES compute_server_groups(id) ON DELETE CASCADE,
    instance_id TEXT NOT NULL,
    PRIMARY KEY (group_id, instance_id)
);
CREATE TABLE compute_services (
    id INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    binary TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    forced_down INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
INSERT INTO compute_services (id, uuid, binary, topic, updated_at) VALUES
    (1, lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), 'nova-scheduler', 'scheduler', unixepoch()),
    (2, lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))), 'nova-compute', 'compute', unixepoch());
CREATE TABLE compute_aggregates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    availability_zone TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER
);
CREATE TABLE compute_aggregate_hosts (
    aggregate_id INTEGER NOT NULL REFERENCES compute_aggregates(id) ON DELETE CASCADE,
    host TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, host)
);
CREATE TABLE compute_aggregate_metadata (
    aggregate_id INTEGER NOT NULL REFERENCES compute_aggregates(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (aggregate_id, key)
);
-- The flavors DevStack creates (lib/nova and lib/tempest).
INSERT INTO compute_flavors (id, name, ram, vcpus, disk, created_at) VALUES
    ('1', 'm1.tiny', 512, 1, 1, unixepoch()),
    ('2', 'm1.small', 2048, 1, 20, unixepoch()),
    ('3', 'm1.medium', 4096, 2, 40, unixepoch()),
    ('4', 'm1.large', 8192, 4, 80, unixepoch()),
    ('5', 'm1.xlarge', 16384, 8, 160, unixepoch()),
    ('42', 'm1.nano', 192, 1, 1, unixepoch()),
    ('84', 'm1.micro', 256, 1, 1, unixepoch()),
    ('c1', 'cirros256', 256, 1, 1, unixepoch()),
    ('d1', 'ds512M', 512, 1, 5, unixepoch()),
    ('d2', 'ds1G', 1024, 1, 10, unixepoch()),
    ('d3', 'ds2G', 2048, 2, 10, unixepoch()),
    ('d4', 'ds4G', 4096, 4, 20, unixepoch());
INSERT INTO compute_flavor_extra_specs (flavor_id, key, value) VALUES
    ('42', 'hw_rng:allowed', 'True'),
    ('84', 'hw_rng:allowed', 'True');
"#;

// ------------------------------------------------------------------ flavors

/// A flavor with its extra specs.
#[derive(Debug, Clone)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub ram: i64,
    pub vcpus: i64,
    pub disk: i64,
    pub ephemeral: i64,
    pub swap: i64,
    pub rxtx_factor: f64,
    pub is_public: bool,
    pub disabled: bool,
    pub description: Option<String>,
    pub created_at: i64,
    pub extra_specs: BTreeMap<String, String>,
}

const FLAVOR_COLUMNS: &str = "id, name, ram, vcpus, disk, ephemeral, swap, rxtx_factor, \
     is_public, disabled, description, created_at";

fn flavor_from_row(row: &Row) -> rusqlite::Result<Flavor> {
    Ok(Flavor {
        id: row.get(0)?,
        name: row.get(1)?,
        ram: row.get(2)?,
        vcpus: row.get(3)?,
        disk: row.get(4)?,
        ephemeral: row.get(5)?,
        swap: row.get(6)?,
        rxtx_factor: row.get(7)?,
        is_public: row.get(8)?,
        disabled: row.get(9)?,
        description: row.get(10)?,
        created_at: row.get(11)?,
        extra_specs: BTreeMap::new(),
    })
}

/// Every flavor, with extra specs, in no particular order.
pub fn list_flavors(conn: &Connection) -> DbResult<Vec<Flavor>> {
    let mut stmt = conn.prepare(&format!("SELECT {FLAVOR_COLUMNS} FROM compute_flavors"))?;
    let mut flavors: Vec<Flavor> = stmt
        .query_map([], flavor_from_row)?
        .collect::<Result<_, _>>()?;
    let mut specs: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut stmt = conn.prepare("SELECT flavor_id, key, value FROM compute_flavor_extra_specs")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (flavor, key, value) = row?;
        specs.entry(flavor).or_default().insert(key, value);
    }
    for flavor in &mut flavors {
        if let Some(s) = specs.remove(&flavor.id) {
            flavor.extra_specs = s;
        }
    }
    Ok(flavors)
}

pub fn get_flavor(conn: &Connection, id: &str) -> DbResult<Option<Flavor>> {
    let flavor = conn
        .query_row(
            &format!("SELECT {FLAVOR_COLUMNS} FROM compute_flavors WHERE id = ?1"),
            [id],
            flavor_from_row,
        )
        .optional()?;
    let Some(mut flavor) = flavor else {
        return Ok(None);
    };
    flavor.extra_specs = get_extra_specs(conn, id)?;
    Ok(Some(flavor))
}

/// Inserts a flavor; a taken id or name is a [`DbError::Conflict`].
pub fn insert_flavor(conn: &Connection, f: &Flavor) -> DbResult<()> {
    let taken: Option<String> = conn
        .query_row(
            "SELECT id FROM compute_flavors WHERE id = ?1 OR name = ?2",
            params![f.id, f.name],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(existing) = taken {
        return Err(DbError::Conflict(if existing == f.id {
            format!("Flavor with ID {} already exists.", f.id)
        } else {
            format!("Flavor with name {} already exists.", f.name)
        }));
    }
    conn.execute(
        &format!("INSERT INTO compute_flavors ({FLAVOR_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
        params![
            f.id,
            f.name,
            f.ram,
            f.vcpus,
            f.disk,
            f.ephemeral,
            f.swap,
            f.rxtx_factor,
            f.is_public,
            f.disabled,
            f.description,
            f.created_at
        ],
    )?;
    set_extra_specs(conn, &f.id, &f.extra_specs)?;
    Ok(())
}

/// Deletes a flavor; false when it did not exist.
pub fn delete_flavor(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM compute_flavors WHERE id = ?1", [id])? > 0)
}

pub fn update_flavor_description(
    conn: &Connection,
    id: &str,
    description: Option<&str>,
) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE compute_flavors SET description = ?2 WHERE id = ?1",
        params![id, description],
    )? > 0)
}

pub fn get_extra_specs(conn: &Connection, flavor_id: &str) -> DbResult<BTreeMap<String, String>> {
    let mut stmt =
        conn.prepare("SELECT key, value FROM compute_flavor_extra_specs WHERE flavor_id = ?1")?;
    let rows = stmt.query_map([flavor_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds or replaces the given extra specs (others are kept).
pub fn set_extra_specs(
    conn: &Connection,
    flavor_id: &str,
    specs: &BTreeMap<String, String>,
) -> DbResult<()> {
    let mut stmt = conn.prepare(
        "INSERT INTO compute_flavor_extra_specs (flavor_id, key, value) VALUES (?1, ?2, ?3) \
         ON CONFLICT (flavor_id, key) DO UPDATE SET value = excluded.value",
    )?;
    for (key, value) in specs {
        stmt.execute(params![flavor_id, key, value])?;
    }
    Ok(())
}

pub fn delete_extra_spec(conn: &Connection, flavor_id: &str, key: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM compute_flavor_extra_specs WHERE flavor_id = ?1 AND key = ?2",
        params![flavor_id, key],
    )? > 0)
}

/// Projects that may use a private flavor.
pub fn flavor_projects(conn: &Connection, flavor_id: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT project_id FROM compute_flavor_projects WHERE flavor_id = ?1 ORDER BY project_id",
    )?;
    let rows = stmt.query_map([flavor_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Flavor ids a project was given access to.
pub fn flavors_of_project(conn: &Connection, project_id: &str) -> DbResult<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT flavor_id FROM compute_flavor_projects WHERE project_id = ?1")?;
    let rows = stmt.query_map([project_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Grants access; false when the project already had it.
pub fn add_flavor_project(conn: &Connection, flavor_id: &str, project_id: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "INSERT OR IGNORE INTO compute_flavor_projects (flavor_id, project_id) VALUES (?1, ?2)",
        params![flavor_id, project_id],
    )? > 0)
}

/// Revokes access; false when the project did not have it.
pub fn remove_flavor_project(
    conn: &Connection,
    flavor_id: &str,
    project_id: &str,
) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM compute_flavor_projects WHERE flavor_id = ?1 AND project_id = ?2",
        params![flavor_id, project_id],
    )? > 0)
}

// ----------------------------------------------------------------- keypairs

#[derive(Debug, Clone)]
pub struct Keypair {
    pub id: i64,
    pub user_id: String,
    pub name: String,
    /// `ssh` or `x509`.
    pub kind: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: i64,
}

fn keypair_from_row(row: &Row) -> rusqlite::Result<Keypair> {
    Ok(Keypair {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        kind: row.get(3)?,
        public_key: row.get(4)?,
        fingerprint: row.get(5)?,
        created_at: row.get(6)?,
    })
}

const KEYPAIR_COLUMNS: &str = "id, user_id, name, type, public_key, fingerprint, created_at";

/// A user's keypairs, ordered by name.
pub fn list_keypairs(conn: &Connection, user_id: &str) -> DbResult<Vec<Keypair>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {KEYPAIR_COLUMNS} FROM compute_keypairs WHERE user_id = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([user_id], keypair_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get_keypair(conn: &Connection, user_id: &str, name: &str) -> DbResult<Option<Keypair>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {KEYPAIR_COLUMNS} FROM compute_keypairs WHERE user_id = ?1 AND name = ?2"
            ),
            params![user_id, name],
            keypair_from_row,
        )
        .optional()?)
}

pub fn count_keypairs(conn: &Connection, user_id: &str) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM compute_keypairs WHERE user_id = ?1",
        [user_id],
        |r| r.get(0),
    )?)
}

/// Inserts a keypair and returns its id; a taken name is a [`DbError::Conflict`].
pub fn insert_keypair(conn: &Connection, k: &Keypair) -> DbResult<i64> {
    if get_keypair(conn, &k.user_id, &k.name)?.is_some() {
        return Err(DbError::Conflict(format!(
            "Key pair '{}' already exists.",
            k.name
        )));
    }
    conn.execute(
        "INSERT INTO compute_keypairs (user_id, name, type, public_key, fingerprint, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            k.user_id,
            k.name,
            k.kind,
            k.public_key,
            k.fingerprint,
            k.created_at
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

pub fn delete_keypair(conn: &Connection, user_id: &str, name: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM compute_keypairs WHERE user_id = ?1 AND name = ?2",
        params![user_id, name],
    )? > 0)
}

// ------------------------------------------------------------------- quotas

/// Limits set for a project (`user_id` None) or for one user in it.
pub fn get_quotas(
    conn: &Connection,
    project_id: &str,
    user_id: Option<&str>,
) -> DbResult<HashMap<String, i64>> {
    let mut stmt = conn.prepare(
        "SELECT resource, hard_limit FROM compute_quotas WHERE project_id = ?1 AND user_id = ?2",
    )?;
    let rows = stmt.query_map(params![project_id, user_id.unwrap_or("")], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_quota(
    conn: &Connection,
    project_id: &str,
    user_id: Option<&str>,
    resource: &str,
    limit: i64,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO compute_quotas (project_id, user_id, resource, hard_limit) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (project_id, user_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        params![project_id, user_id.unwrap_or(""), resource, limit],
    )?;
    Ok(())
}

/// Removes a project's limits (and its users' overrides), or one user's overrides.
pub fn delete_quotas(conn: &Connection, project_id: &str, user_id: Option<&str>) -> DbResult<()> {
    match user_id {
        Some(user) => conn.execute(
            "DELETE FROM compute_quotas WHERE project_id = ?1 AND user_id = ?2",
            params![project_id, user],
        )?,
        None => conn.execute(
            "DELETE FROM compute_quotas WHERE project_id = ?1",
            [project_id],
        )?,
    };
    Ok(())
}

pub fn get_quota_class(conn: &Connection, class_name: &str) -> DbResult<HashMap<String, i64>> {
    let mut stmt = conn
        .prepare("SELECT resource, hard_limit FROM compute_quota_classes WHERE class_name = ?1")?;
    let rows = stmt.query_map([class_name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_quota_class(
    conn: &Connection,
    class_name: &str,
    resource: &str,
    limit: i64,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO compute_quota_classes (class_name, resource, hard_limit) VALUES (?1, ?2, ?3) \
         ON CONFLICT (class_name, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        params![class_name, resource, limit],
    )?;
    Ok(())
}

// ------------------------------------------------------------ server groups

#[derive(Debug, Clone)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    pub policy: String,
    /// JSON object, e.g. `{"max_server_per_host": 2}`.
    pub rules: Value,
    pub created_at: i64,
    pub members: Vec<String>,
}

fn group_from_row(row: &Row) -> rusqlite::Result<(ServerGroup, String)> {
    Ok((
        ServerGroup {
            id: row.get(0)?,
            name: row.get(1)?,
            project_id: row.get(2)?,
            user_id: row.get(3)?,
            policy: row.get(4)?,
            rules: Value::Null,
            created_at: row.get(6)?,
            members: Vec::new(),
        },
        row.get(5)?,
    ))
}

fn finish_group(
    conn: &Connection,
    (mut group, rules): (ServerGroup, String),
) -> DbResult<ServerGroup> {
    group.rules = serde_json::from_str(&rules)?;
    let mut stmt = conn.prepare(
        "SELECT instance_id FROM compute_server_group_members WHERE group_id = ?1 ORDER BY instance_id",
    )?;
    group.members = stmt
        .query_map([&group.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(group)
}

const GROUP_COLUMNS: &str = "id, name, project_id, user_id, policy, rules, created_at";

/// Server groups of one project, or of every project when `project_id` is None.
pub fn list_server_groups(
    conn: &Connection,
    project_id: Option<&str>,
) -> DbResult<Vec<ServerGroup>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {GROUP_COLUMNS} FROM compute_server_groups \
         WHERE ?1 IS NULL OR project_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows: Vec<_> = stmt
        .query_map([project_id], group_from_row)?
        .collect::<Result<_, _>>()?;
    rows.into_iter().map(|r| finish_group(conn, r)).collect()
}

pub fn get_server_group(conn: &Connection, id: &str) -> DbResult<Option<ServerGroup>> {
    let row = conn
        .query_row(
            &format!("SELECT {GROUP_COLUMNS} FROM compute_server_groups WHERE id = ?1"),
            [id],
            group_from_row,
        )
        .optional()?;
    row.map(|r| finish_group(conn, r)).transpose()
}

pub fn insert_server_group(conn: &Connection, g: &ServerGroup) -> DbResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO compute_server_groups ({GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ),
        params![
            g.id,
            g.name,
            g.project_id,
            g.user_id,
            g.policy,
            g.rules.to_string(),
            g.created_at
        ],
    )?;
    Ok(())
}

pub fn delete_server_group(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM compute_server_groups WHERE id = ?1", [id])? > 0)
}

pub fn count_server_groups(conn: &Connection, project_id: &str) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM compute_server_groups WHERE project_id = ?1",
        [project_id],
        |r| r.get(0),
    )?)
}

/// Adds an instance to a group (used by server create).
#[allow(dead_code)] // server create lands with the VMM work
pub fn add_server_group_member(
    conn: &Connection,
    group_id: &str,
    instance_id: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO compute_server_group_members (group_id, instance_id) VALUES (?1, ?2)",
        params![group_id, instance_id],
    )?;
    Ok(())
}

/// Removes an instance from every group (used by server delete).
#[allow(dead_code)] // server delete lands with the VMM work
pub fn remove_server_group_member(conn: &Connection, instance_id: &str) -> DbResult<()> {
    conn.execute(
        "DELETE FROM compute_server_group_members WHERE instance_id = ?1",
        [instance_id],
    )?;
    Ok(())
}

// --------------------------------------------------------------- aggregates

#[derive(Debug, Clone)]
pub struct Aggregate {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub availability_zone: Option<String>,
    pub created_at: i64,
    pub updated_at: Option<i64>,
    pub hosts: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

fn finish_aggregate(conn: &Connection, mut a: Aggregate) -> DbResult<Aggregate> {
    let mut stmt = conn.prepare(
        "SELECT host FROM compute_aggregate_hosts WHERE aggregate_id = ?1 ORDER BY host",
    )?;
    a.hosts = stmt
        .query_map([a.id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare("SELECT key, value FROM compute_aggregate_metadata WHERE aggregate_id = ?1")?;
    a.metadata = stmt
        .query_map([a.id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(a)
}

fn aggregate_from_row(row: &Row) -> rusqlite::Result<Aggregate> {
    Ok(Aggregate {
        id: row.get(0)?,
        uuid: row.get(1)?,
        name: row.get(2)?,
        availability_zone: row.get(3)?,
        created_at: row.get(4)?,
        updated_at: row.get(5)?,
        hosts: Vec::new(),
        metadata: BTreeMap::new(),
    })
}

const AGGREGATE_COLUMNS: &str = "id, uuid, name, availability_zone, created_at, updated_at";

pub fn list_aggregates(conn: &Connection) -> DbResult<Vec<Aggregate>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {AGGREGATE_COLUMNS} FROM compute_aggregates ORDER BY id"
    ))?;
    let rows: Vec<Aggregate> = stmt
        .query_map([], aggregate_from_row)?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|a| finish_aggregate(conn, a))
        .collect()
}

pub fn get_aggregate(conn: &Connection, id: i64) -> DbResult<Option<Aggregate>> {
    let row = conn
        .query_row(
            &format!("SELECT {AGGREGATE_COLUMNS} FROM compute_aggregates WHERE id = ?1"),
            [id],
            aggregate_from_row,
        )
        .optional()?;
    row.map(|a| finish_aggregate(conn, a)).transpose()
}

fn aggregate_name_taken(conn: &Connection, name: &str, except: i64) -> DbResult<bool> {
    Ok(conn
        .query_row(
            "SELECT id FROM compute_aggregates WHERE name = ?1 AND id != ?2",
            params![name, except],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
}

/// Inserts an aggregate and returns its id; a taken name is a [`DbError::Conflict`].
pub fn insert_aggregate(conn: &Connection, a: &Aggregate) -> DbResult<i64> {
    if aggregate_name_taken(conn, &a.name, -1)? {
        return Err(DbError::Conflict(format!(
            "Aggregate {} already exists.",
            a.name
        )));
    }
    conn.execute(
        "INSERT INTO compute_aggregates (uuid, name, availability_zone, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![a.uuid, a.name, a.availability_zone, a.created_at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Stores name, zone and update time; a taken name is a [`DbError::Conflict`].
pub fn update_aggregate(conn: &Connection, a: &Aggregate) -> DbResult<()> {
    if aggregate_name_taken(conn, &a.name, a.id)? {
        return Err(DbError::Conflict(format!(
            "Aggregate {} already exists.",
            a.name
        )));
    }
    conn.execute(
        "UPDATE compute_aggregates SET name = ?2, availability_zone = ?3, updated_at = ?4 WHERE id = ?1",
        params![a.id, a.name, a.availability_zone, a.updated_at],
    )?;
    Ok(())
}

pub fn delete_aggregate(conn: &Connection, id: i64) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM compute_aggregates WHERE id = ?1", [id])? > 0)
}

/// Adds a host; false when it was already there.
pub fn add_aggregate_host(conn: &Connection, id: i64, host: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "INSERT OR IGNORE INTO compute_aggregate_hosts (aggregate_id, host) VALUES (?1, ?2)",
        params![id, host],
    )? > 0)
}

/// Removes a host; false when it was not there.
pub fn remove_aggregate_host(conn: &Connection, id: i64, host: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM compute_aggregate_hosts WHERE aggregate_id = ?1 AND host = ?2",
        params![id, host],
    )? > 0)
}

/// Sets (Some) or removes (None) metadata keys.
pub fn set_aggregate_metadata(
    conn: &Connection,
    id: i64,
    changes: &[(String, Option<String>)],
) -> DbResult<()> {
    for (key, value) in changes {
        match value {
            Some(v) => conn.execute(
                "INSERT INTO compute_aggregate_metadata (aggregate_id, key, value) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (aggregate_id, key) DO UPDATE SET value = excluded.value",
                params![id, key, v],
            )?,
            None => conn.execute(
                "DELETE FROM compute_aggregate_metadata WHERE aggregate_id = ?1 AND key = ?2",
                params![id, key],
            )?,
        };
    }
    Ok(())
}

// ----------------------------------------------------------------- services

#[derive(Debug, Clone)]
pub struct ComputeService {
    pub id: i64,
    pub uuid: String,
    pub binary: String,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub forced_down: bool,
    pub updated_at: i64,
}

fn service_from_row(row: &Row) -> rusqlite::Result<ComputeService> {
    Ok(ComputeService {
        id: row.get(0)?,
        uuid: row.get(1)?,
        binary: row.get(2)?,
        disabled: row.get(3)?,
        disabled_reason: row.get(4)?,
        forced_down: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

pub fn list_services(conn: &Connection) -> DbResult<Vec<ComputeService>> {
    let mut stmt = conn.prepare(
        "SELECT id, uuid, binary, disabled, disabled_reason, forced_down, updated_at \
         FROM compute_services ORDER BY id",
    )?;
    let rows = stmt.query_map([], service_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a service's administrative state.
pub fn update_service(conn: &Connection, s: &ComputeService) -> DbResult<()> {
    conn.execute(
        "UPDATE compute_services SET disabled = ?2, disabled_reason = ?3, forced_down = ?4, \
         updated_at = ?5 WHERE id = ?1",
        params![
            s.id,
            s.disabled,
            s.disabled_reason,
            s.forced_down,
            s.updated_at
        ],
    )?;
    Ok(())
}

/// The path of the state file (its directory is the state directory).
pub fn state_file_path(conn: &Connection) -> Option<String> {
    conn.path().map(str::to_string)
}
