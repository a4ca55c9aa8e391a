//! Keystone's tables: domains, projects, users, groups, roles, assignments,
//! application credentials, credentials, the catalog and tokens.
//!
//! Rows are loaded and stored whole; filtering and policy live in
//! `crate::identity`. Arbitrary extra attributes that clients send
//! (Keystone keeps them) are kept as a JSON object in `extra`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::{DbError, DbResult};

/// The Keystone tables (migration 1).
pub const SCHEMA: &str = r#"
CREATE TABLE domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES domains(id),
    parent_id TEXT REFERENCES projects(id),
    description TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    is_domain INTEGER NOT NULL DEFAULT 0,
    extra TEXT NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);
CREATE TABLE project_tags (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (project_id, tag)
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES domains(id),
    enabled INTEGER NOT NULL DEFAULT 1,
    password_hash TEXT,
    password_changed_at INTEGER,
    password_expires_at INTEGER,
    default_project_id TEXT,
    created_at INTEGER NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    extra TEXT NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);
CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL REFERENCES domains(id),
    description TEXT NOT NULL DEFAULT '',
    extra TEXT NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);
CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    options TEXT NOT NULL DEFAULT '{}',
    extra TEXT NOT NULL DEFAULT '{}',
    UNIQUE (domain_id, name)
);
CREATE TABLE implied_roles (
    prior_role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    implied_role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (prior_role_id, implied_role_id)
);
-- actor_type: 'user' | 'group'; target_type: 'project' | 'domain' | 'system'
-- (target_id is 'all' for the system).
CREATE TABLE assignments (
    actor_type TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    role_id TEXT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    inherited INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (actor_type, actor_id, target_type, target_id, role_id, inherited)
);
CREATE INDEX assignments_by_target ON assignments (target_type, target_id);
CREATE TABLE application_credentials (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    description TEXT,
    expires_at_micros INTEGER,
    unrestricted INTEGER NOT NULL DEFAULT 0,
    roles TEXT NOT NULL DEFAULT '[]',
    access_rules TEXT NOT NULL DEFAULT '[]',
    UNIQUE (user_id, name)
);
CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    project_id TEXT,
    type TEXT NOT NULL,
    blob TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    blob TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE endpoint_groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    filters TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE regions (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    parent_region_id TEXT REFERENCES regions(id),
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE services (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    interface TEXT NOT NULL,
    url TEXT NOT NULL,
    region_id TEXT REFERENCES regions(id),
    enabled INTEGER NOT NULL DEFAULT 1,
    extra TEXT NOT NULL DEFAULT '{}'
);
-- Tokens are random strings; only their SHA-256 is stored.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    scope_type TEXT NOT NULL,
    scope_id TEXT NOT NULL DEFAULT '',
    methods TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    expires_unix INTEGER NOT NULL,
    audit_ids TEXT NOT NULL,
    app_cred_id TEXT,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_by_user ON tokens (user_id);
CREATE INDEX tokens_by_expiry ON tokens (expires_unix);
"#;

pub type Extra = Map<String, Value>;

fn parse_extra(text: String) -> DbResult<Extra> {
    match serde_json::from_str::<Value>(&text)? {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

fn extra_text(extra: &Extra) -> String {
    Value::Object(extra.clone()).to_string()
}

fn unique_or(e: rusqlite::Error, what: &str) -> DbError {
    let err = DbError::Sqlite(e);
    if err.is_unique_violation() {
        DbError::Conflict(what.to_string())
    } else {
        err
    }
}

// ---------------------------------------------------------------- domains

#[derive(Debug, Clone)]
pub struct Domain {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub extra: Extra,
}

const DOMAIN_COLUMNS: &str = "id, name, description, enabled, extra";

fn domain_from_row(row: &Row) -> rusqlite::Result<(Domain, String)> {
    Ok((
        Domain {
            id: row.get(0)?,
            name: row.get(1)?,
            description: row.get(2)?,
            enabled: row.get(3)?,
            extra: Map::new(),
        },
        row.get(4)?,
    ))
}

fn finish<T>(pair: (T, String), set: impl FnOnce(&mut T, Extra)) -> DbResult<T> {
    let (mut item, text) = pair;
    set(&mut item, parse_extra(text)?);
    Ok(item)
}

pub fn insert_domain(conn: &Connection, d: &Domain) -> DbResult<()> {
    conn.execute(
        "INSERT INTO domains (id, name, description, enabled, extra) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![d.id, d.name, d.description, d.enabled, extra_text(&d.extra)],
    )
    .map_err(|e| unique_or(e, &format!("a domain named {} already exists", d.name)))?;
    Ok(())
}

pub fn update_domain(conn: &Connection, d: &Domain) -> DbResult<()> {
    conn.execute(
        "UPDATE domains SET name = ?2, description = ?3, enabled = ?4, extra = ?5 WHERE id = ?1",
        params![d.id, d.name, d.description, d.enabled, extra_text(&d.extra)],
    )
    .map_err(|e| unique_or(e, &format!("a domain named {} already exists", d.name)))?;
    Ok(())
}

pub fn get_domain(conn: &Connection, id: &str) -> DbResult<Option<Domain>> {
    let sql = format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE id = ?1");
    let pair = conn.query_row(&sql, [id], domain_from_row).optional()?;
    pair.map(|p| finish(p, |d, e| d.extra = e)).transpose()
}

pub fn get_domain_by_name(conn: &Connection, name: &str) -> DbResult<Option<Domain>> {
    let sql = format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE name = ?1");
    let pair = conn.query_row(&sql, [name], domain_from_row).optional()?;
    pair.map(|p| finish(p, |d, e| d.extra = e)).transpose()
}

pub fn list_domains(conn: &Connection) -> DbResult<Vec<Domain>> {
    let sql = format!("SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], domain_from_row)?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

/// Deletes a domain and everything it owns (projects, users, groups, roles).
pub fn delete_domain(conn: &Connection, id: &str) -> DbResult<bool> {
    for project in list_projects(conn)?
        .into_iter()
        .filter(|p| p.domain_id == id)
    {
        delete_project(conn, &project.id)?;
    }
    let users: Vec<String> = list_users(conn)?
        .into_iter()
        .filter(|u| u.domain_id == id)
        .map(|u| u.id)
        .collect();
    for user in users {
        delete_user(conn, &user)?;
    }
    for group in list_groups(conn)?.into_iter().filter(|g| g.domain_id == id) {
        delete_group(conn, &group.id)?;
    }
    for role in list_roles(conn)?
        .into_iter()
        .filter(|r| r.domain_id.as_deref() == Some(id))
    {
        delete_role(conn, &role.id)?;
    }
    conn.execute(
        "DELETE FROM assignments WHERE target_type = 'domain' AND target_id = ?1",
        [id],
    )?;
    Ok(conn.execute("DELETE FROM domains WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- projects

#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub parent_id: Option<String>,
    pub description: String,
    pub enabled: bool,
    /// A project acting as a domain (it has a domain row with the same id).
    pub is_domain: bool,
    pub extra: Extra,
}

const PROJECT_COLUMNS: &str =
    "id, name, domain_id, parent_id, description, enabled, extra, is_domain";

fn project_from_row(row: &Row) -> rusqlite::Result<(Project, String)> {
    Ok((
        Project {
            id: row.get(0)?,
            name: row.get(1)?,
            domain_id: row.get(2)?,
            parent_id: row.get(3)?,
            description: row.get(4)?,
            enabled: row.get(5)?,
            is_domain: row.get(7)?,
            extra: Map::new(),
        },
        row.get(6)?,
    ))
}

pub fn insert_project(conn: &Connection, p: &Project) -> DbResult<()> {
    conn.execute(
        "INSERT INTO projects (id, name, domain_id, parent_id, description, enabled, extra, is_domain)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            p.id,
            p.name,
            p.domain_id,
            p.parent_id,
            p.description,
            p.enabled,
            extra_text(&p.extra),
            p.is_domain
        ],
    )
    .map_err(|e| {
        unique_or(
            e,
            &format!("a project named {} already exists in its domain", p.name),
        )
    })?;
    Ok(())
}

pub fn update_project(conn: &Connection, p: &Project) -> DbResult<()> {
    conn.execute(
        "UPDATE projects SET name = ?2, description = ?3, enabled = ?4, extra = ?5, parent_id = ?6
         WHERE id = ?1",
        params![
            p.id,
            p.name,
            p.description,
            p.enabled,
            extra_text(&p.extra),
            p.parent_id
        ],
    )
    .map_err(|e| {
        unique_or(
            e,
            &format!("a project named {} already exists in its domain", p.name),
        )
    })?;
    Ok(())
}

pub fn get_project(conn: &Connection, id: &str) -> DbResult<Option<Project>> {
    let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1");
    let pair = conn.query_row(&sql, [id], project_from_row).optional()?;
    pair.map(|p| finish(p, |d, e| d.extra = e)).transpose()
}

pub fn get_project_by_name(
    conn: &Connection,
    domain_id: &str,
    name: &str,
) -> DbResult<Option<Project>> {
    let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE domain_id = ?1 AND name = ?2");
    let pair = conn
        .query_row(&sql, [domain_id, name], project_from_row)
        .optional()?;
    pair.map(|p| finish(p, |d, e| d.extra = e)).transpose()
}

pub fn list_projects(conn: &Connection) -> DbResult<Vec<Project>> {
    let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], project_from_row)?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_project(conn: &Connection, id: &str) -> DbResult<bool> {
    conn.execute(
        "DELETE FROM assignments WHERE target_type = 'project' AND target_id = ?1",
        [id],
    )?;
    conn.execute(
        "DELETE FROM application_credentials WHERE project_id = ?1",
        [id],
    )?;
    conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE scope_type = 'project' AND scope_id = ?1",
        [id],
    )?;
    Ok(conn.execute("DELETE FROM projects WHERE id = ?1", [id])? > 0)
}

pub fn project_tags(conn: &Connection, project_id: &str) -> DbResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT tag FROM project_tags WHERE project_id = ?1 ORDER BY tag")?;
    let rows = stmt.query_map([project_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn set_project_tags(conn: &Connection, project_id: &str, tags: &[String]) -> DbResult<()> {
    conn.execute(
        "DELETE FROM project_tags WHERE project_id = ?1",
        [project_id],
    )?;
    for tag in tags {
        conn.execute(
            "INSERT OR IGNORE INTO project_tags (project_id, tag) VALUES (?1, ?2)",
            [project_id, tag],
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------- users

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub password_hash: Option<String>,
    pub password_changed_at: Option<i64>,
    pub password_expires_at: Option<i64>,
    pub default_project_id: Option<String>,
    pub created_at: i64,
    pub options: Extra,
    pub extra: Extra,
}

const USER_COLUMNS: &str = "id, name, domain_id, enabled, password_hash, password_changed_at, \
     password_expires_at, default_project_id, created_at, options, extra";

fn user_from_row(row: &Row) -> rusqlite::Result<(User, String, String)> {
    Ok((
        User {
            id: row.get(0)?,
            name: row.get(1)?,
            domain_id: row.get(2)?,
            enabled: row.get(3)?,
            password_hash: row.get(4)?,
            password_changed_at: row.get(5)?,
            password_expires_at: row.get(6)?,
            default_project_id: row.get(7)?,
            created_at: row.get(8)?,
            options: Map::new(),
            extra: Map::new(),
        },
        row.get(9)?,
        row.get(10)?,
    ))
}

fn finish_user(triple: (User, String, String)) -> DbResult<User> {
    let (mut user, options, extra) = triple;
    user.options = parse_extra(options)?;
    user.extra = parse_extra(extra)?;
    Ok(user)
}

pub fn insert_user(conn: &Connection, u: &User) -> DbResult<()> {
    conn.execute(
        &format!("INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
        params![
            u.id,
            u.name,
            u.domain_id,
            u.enabled,
            u.password_hash,
            u.password_changed_at,
            u.password_expires_at,
            u.default_project_id,
            u.created_at,
            extra_text(&u.options),
            extra_text(&u.extra)
        ],
    )
    .map_err(|e| unique_or(e, &format!("a user named {} already exists in its domain", u.name)))?;
    Ok(())
}

pub fn update_user(conn: &Connection, u: &User) -> DbResult<()> {
    conn.execute(
        "UPDATE users SET name = ?2, domain_id = ?3, enabled = ?4, password_hash = ?5,
            password_changed_at = ?6, password_expires_at = ?7, default_project_id = ?8,
            options = ?9, extra = ?10 WHERE id = ?1",
        params![
            u.id,
            u.name,
            u.domain_id,
            u.enabled,
            u.password_hash,
            u.password_changed_at,
            u.password_expires_at,
            u.default_project_id,
            extra_text(&u.options),
            extra_text(&u.extra)
        ],
    )
    .map_err(|e| {
        unique_or(
            e,
            &format!("a user named {} already exists in its domain", u.name),
        )
    })?;
    Ok(())
}

pub fn get_user(conn: &Connection, id: &str) -> DbResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
    let triple = conn.query_row(&sql, [id], user_from_row).optional()?;
    triple.map(finish_user).transpose()
}

pub fn get_user_by_name(conn: &Connection, domain_id: &str, name: &str) -> DbResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE domain_id = ?1 AND name = ?2");
    let triple = conn
        .query_row(&sql, [domain_id, name], user_from_row)
        .optional()?;
    triple.map(finish_user).transpose()
}

pub fn list_users(conn: &Connection) -> DbResult<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], user_from_row)?;
    rows.map(|r| finish_user(r?)).collect()
}

pub fn delete_user(conn: &Connection, id: &str) -> DbResult<bool> {
    conn.execute(
        "DELETE FROM assignments WHERE actor_type = 'user' AND actor_id = ?1",
        [id],
    )?;
    conn.execute("DELETE FROM credentials WHERE user_id = ?1", [id])?;
    revoke_user_tokens(conn, id)?;
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- groups

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub extra: Extra,
}

const GROUP_COLUMNS: &str = "id, name, domain_id, description, extra";

fn group_from_row(row: &Row) -> rusqlite::Result<(Group, String)> {
    Ok((
        Group {
            id: row.get(0)?,
            name: row.get(1)?,
            domain_id: row.get(2)?,
            description: row.get(3)?,
            extra: Map::new(),
        },
        row.get(4)?,
    ))
}

pub fn insert_group(conn: &Connection, g: &Group) -> DbResult<()> {
    conn.execute(
        &format!("INSERT INTO groups ({GROUP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            g.id,
            g.name,
            g.domain_id,
            g.description,
            extra_text(&g.extra)
        ],
    )
    .map_err(|e| {
        unique_or(
            e,
            &format!("a group named {} already exists in its domain", g.name),
        )
    })?;
    Ok(())
}

pub fn update_group(conn: &Connection, g: &Group) -> DbResult<()> {
    conn.execute(
        "UPDATE groups SET name = ?2, description = ?3, extra = ?4 WHERE id = ?1",
        params![g.id, g.name, g.description, extra_text(&g.extra)],
    )
    .map_err(|e| {
        unique_or(
            e,
            &format!("a group named {} already exists in its domain", g.name),
        )
    })?;
    Ok(())
}

pub fn get_group(conn: &Connection, id: &str) -> DbResult<Option<Group>> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1");
    let pair = conn.query_row(&sql, [id], group_from_row).optional()?;
    pair.map(|p| finish(p, |d, e| d.extra = e)).transpose()
}

pub fn list_groups(conn: &Connection) -> DbResult<Vec<Group>> {
    let sql = format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], group_from_row)?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_group(conn: &Connection, id: &str) -> DbResult<bool> {
    conn.execute(
        "DELETE FROM assignments WHERE actor_type = 'group' AND actor_id = ?1",
        [id],
    )?;
    Ok(conn.execute("DELETE FROM groups WHERE id = ?1", [id])? > 0)
}

pub fn add_group_member(conn: &Connection, group_id: &str, user_id: &str) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)",
        [group_id, user_id],
    )?;
    Ok(())
}

pub fn remove_group_member(conn: &Connection, group_id: &str, user_id: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
        [group_id, user_id],
    )? > 0)
}

/// Every (group_id, user_id) membership.
pub fn list_group_members(conn: &Connection) -> DbResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT group_id, user_id FROM group_members")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn groups_of_user(conn: &Connection, user_id: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT group_id FROM group_members WHERE user_id = ?1")?;
    let rows = stmt.query_map([user_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- roles

#[derive(Debug, Clone)]
pub struct Role {
    pub id: String,
    pub name: String,
    pub domain_id: Option<String>,
    pub description: String,
    pub options: Extra,
    pub extra: Extra,
}

const ROLE_COLUMNS: &str = "id, name, domain_id, description, options, extra";

fn role_from_row(row: &Row) -> rusqlite::Result<(Role, String, String)> {
    let domain: String = row.get(2)?;
    Ok((
        Role {
            id: row.get(0)?,
            name: row.get(1)?,
            domain_id: if domain.is_empty() {
                None
            } else {
                Some(domain)
            },
            description: row.get(3)?,
            options: Map::new(),
            extra: Map::new(),
        },
        row.get(4)?,
        row.get(5)?,
    ))
}

fn finish_role(triple: (Role, String, String)) -> DbResult<Role> {
    let (mut role, options, extra) = triple;
    role.options = parse_extra(options)?;
    role.extra = parse_extra(extra)?;
    Ok(role)
}

pub fn insert_role(conn: &Connection, r: &Role) -> DbResult<()> {
    conn.execute(
        &format!("INSERT INTO roles ({ROLE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            r.id,
            r.name,
            r.domain_id.clone().unwrap_or_default(),
            r.description,
            extra_text(&r.options),
            extra_text(&r.extra)
        ],
    )
    .map_err(|e| unique_or(e, &format!("a role named {} already exists", r.name)))?;
    Ok(())
}

pub fn update_role(conn: &Connection, r: &Role) -> DbResult<()> {
    conn.execute(
        "UPDATE roles SET name = ?2, description = ?3, options = ?4, extra = ?5 WHERE id = ?1",
        params![
            r.id,
            r.name,
            r.description,
            extra_text(&r.options),
            extra_text(&r.extra)
        ],
    )
    .map_err(|e| unique_or(e, &format!("a role named {} already exists", r.name)))?;
    Ok(())
}

pub fn get_role(conn: &Connection, id: &str) -> DbResult<Option<Role>> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE id = ?1");
    let triple = conn.query_row(&sql, [id], role_from_row).optional()?;
    triple.map(finish_role).transpose()
}

pub fn list_roles(conn: &Connection) -> DbResult<Vec<Role>> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles ORDER BY name");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], role_from_row)?;
    rows.map(|r| finish_role(r?)).collect()
}

pub fn delete_role(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM roles WHERE id = ?1", [id])? > 0)
}

pub fn insert_implied_role(conn: &Connection, prior: &str, implied: &str) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO implied_roles (prior_role_id, implied_role_id) VALUES (?1, ?2)",
        [prior, implied],
    )?;
    Ok(())
}

pub fn delete_implied_role(conn: &Connection, prior: &str, implied: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM implied_roles WHERE prior_role_id = ?1 AND implied_role_id = ?2",
        [prior, implied],
    )? > 0)
}

/// Every (prior_role_id, implied_role_id) rule.
pub fn list_implied_roles(conn: &Connection) -> DbResult<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT prior_role_id, implied_role_id FROM implied_roles")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- assignments

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// "user" or "group".
    pub actor_type: String,
    pub actor_id: String,
    /// "project", "domain" or "system".
    pub target_type: String,
    /// A project or domain id, or "all" for the system.
    pub target_id: String,
    pub role_id: String,
    pub inherited: bool,
}

pub fn insert_assignment(conn: &Connection, a: &Assignment) -> DbResult<()> {
    conn.execute(
        "INSERT OR IGNORE INTO assignments (actor_type, actor_id, target_type, target_id, role_id, inherited)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![a.actor_type, a.actor_id, a.target_type, a.target_id, a.role_id, a.inherited],
    )?;
    Ok(())
}

pub fn delete_assignment(conn: &Connection, a: &Assignment) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM assignments WHERE actor_type = ?1 AND actor_id = ?2 AND target_type = ?3
            AND target_id = ?4 AND role_id = ?5 AND inherited = ?6",
        params![
            a.actor_type,
            a.actor_id,
            a.target_type,
            a.target_id,
            a.role_id,
            a.inherited
        ],
    )? > 0)
}

pub fn list_assignments(conn: &Connection) -> DbResult<Vec<Assignment>> {
    let mut stmt = conn.prepare_cached(
        "SELECT actor_type, actor_id, target_type, target_id, role_id, inherited FROM assignments",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Assignment {
            actor_type: r.get(0)?,
            actor_id: r.get(1)?,
            target_type: r.get(2)?,
            target_id: r.get(3)?,
            role_id: r.get(4)?,
            inherited: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---------------------------------------------------------------- application credentials

#[derive(Debug, Clone)]
pub struct AppCredential {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub project_id: String,
    pub secret_hash: String,
    pub description: Option<String>,
    /// Expiry in microseconds since the epoch (clients send microseconds).
    pub expires_at_micros: Option<i64>,
    pub unrestricted: bool,
    /// Role ids delegated by the credential.
    pub roles: Vec<String>,
    pub access_rules: Value,
}

const APP_CRED_COLUMNS: &str = "id, name, user_id, project_id, secret_hash, description, expires_at_micros, unrestricted, roles, access_rules";

fn app_cred_from_row(row: &Row) -> rusqlite::Result<(AppCredential, String, String)> {
    Ok((
        AppCredential {
            id: row.get(0)?,
            name: row.get(1)?,
            user_id: row.get(2)?,
            project_id: row.get(3)?,
            secret_hash: row.get(4)?,
            description: row.get(5)?,
            expires_at_micros: row.get(6)?,
            unrestricted: row.get(7)?,
            roles: Vec::new(),
            access_rules: Value::Null,
        },
        row.get(8)?,
        row.get(9)?,
    ))
}

fn finish_app_cred(triple: (AppCredential, String, String)) -> DbResult<AppCredential> {
    let (mut cred, roles, rules) = triple;
    cred.roles = serde_json::from_str(&roles)?;
    cred.access_rules = serde_json::from_str(&rules)?;
    Ok(cred)
}

pub fn insert_app_cred(conn: &Connection, c: &AppCredential) -> DbResult<()> {
    conn.execute(
        &format!("INSERT INTO application_credentials ({APP_CRED_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            c.id,
            c.name,
            c.user_id,
            c.project_id,
            c.secret_hash,
            c.description,
            c.expires_at_micros,
            c.unrestricted,
            serde_json::to_string(&c.roles)?,
            c.access_rules.to_string()
        ],
    )
    .map_err(|e| unique_or(e, &format!("an application credential named {} already exists", c.name)))?;
    Ok(())
}

pub fn get_app_cred(conn: &Connection, id: &str) -> DbResult<Option<AppCredential>> {
    let sql = format!("SELECT {APP_CRED_COLUMNS} FROM application_credentials WHERE id = ?1");
    let triple = conn.query_row(&sql, [id], app_cred_from_row).optional()?;
    triple.map(finish_app_cred).transpose()
}

pub fn list_app_creds(conn: &Connection, user_id: &str) -> DbResult<Vec<AppCredential>> {
    let sql = format!(
        "SELECT {APP_CRED_COLUMNS} FROM application_credentials WHERE user_id = ?1 ORDER BY name"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([user_id], app_cred_from_row)?;
    rows.map(|r| finish_app_cred(r?)).collect()
}

pub fn delete_app_cred(conn: &Connection, id: &str) -> DbResult<bool> {
    conn.execute("UPDATE tokens SET revoked = 1 WHERE app_cred_id = ?1", [id])?;
    Ok(conn.execute("DELETE FROM application_credentials WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- credentials

#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    pub user_id: String,
    pub project_id: Option<String>,
    pub kind: String,
    pub blob: String,
    pub extra: Extra,
}

const CREDENTIAL_COLUMNS: &str = "id, user_id, project_id, type, blob, extra";

fn credential_from_row(row: &Row) -> rusqlite::Result<(Credential, String)> {
    Ok((
        Credential {
            id: row.get(0)?,
            user_id: row.get(1)?,
            project_id: row.get(2)?,
            kind: row.get(3)?,
            blob: row.get(4)?,
            extra: Map::new(),
        },
        row.get(5)?,
    ))
}

pub fn upsert_credential(conn: &Connection, c: &Credential) -> DbResult<()> {
    conn.execute(
        &format!("INSERT OR REPLACE INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![c.id, c.user_id, c.project_id, c.kind, c.blob, extra_text(&c.extra)],
    )?;
    Ok(())
}

pub fn get_credential(conn: &Connection, id: &str) -> DbResult<Option<Credential>> {
    let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE id = ?1");
    let pair = conn.query_row(&sql, [id], credential_from_row).optional()?;
    pair.map(|p| finish(p, |d, e| d.extra = e)).transpose()
}

pub fn list_credentials(conn: &Connection) -> DbResult<Vec<Credential>> {
    let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], credential_from_row)?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_credential(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM credentials WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- policies and endpoint groups

#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub kind: String,
    pub blob: String,
    pub extra: Extra,
}

pub fn upsert_policy(conn: &Connection, p: &Policy) -> DbResult<()> {
    conn.execute(
        "INSERT INTO policies (id, type, blob, extra) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET type = ?2, blob = ?3, extra = ?4",
        params![p.id, p.kind, p.blob, extra_text(&p.extra)],
    )?;
    Ok(())
}

pub fn list_policies(conn: &Connection) -> DbResult<Vec<Policy>> {
    let mut stmt = conn.prepare_cached("SELECT id, type, blob, extra FROM policies ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Policy {
                id: r.get(0)?,
                kind: r.get(1)?,
                blob: r.get(2)?,
                extra: Map::new(),
            },
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_policy(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM policies WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone)]
pub struct EndpointGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub filters: Value,
}

pub fn upsert_endpoint_group(conn: &Connection, g: &EndpointGroup) -> DbResult<()> {
    conn.execute(
        "INSERT INTO endpoint_groups (id, name, description, filters) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET name = ?2, description = ?3, filters = ?4",
        params![g.id, g.name, g.description, g.filters.to_string()],
    )?;
    Ok(())
}

pub fn list_endpoint_groups(conn: &Connection) -> DbResult<Vec<EndpointGroup>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, name, description, filters FROM endpoint_groups ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            EndpointGroup {
                id: r.get(0)?,
                name: r.get(1)?,
                description: r.get(2)?,
                filters: Value::Null,
            },
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| {
        let (mut group, filters) = r?;
        group.filters = serde_json::from_str(&filters)?;
        Ok(group)
    })
    .collect()
}

pub fn delete_endpoint_group(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM endpoint_groups WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- catalog

#[derive(Debug, Clone)]
pub struct Region {
    pub id: String,
    pub description: String,
    pub parent_region_id: Option<String>,
    pub extra: Extra,
}

pub fn upsert_region(conn: &Connection, r: &Region) -> DbResult<()> {
    conn.execute(
        "INSERT INTO regions (id, description, parent_region_id, extra) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET description = ?2, parent_region_id = ?3, extra = ?4",
        params![
            r.id,
            r.description,
            r.parent_region_id,
            extra_text(&r.extra)
        ],
    )?;
    Ok(())
}

pub fn list_regions(conn: &Connection) -> DbResult<Vec<Region>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, description, parent_region_id, extra FROM regions ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Region {
                id: r.get(0)?,
                description: r.get(1)?,
                parent_region_id: r.get(2)?,
                extra: Map::new(),
            },
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_region(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM regions WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub extra: Extra,
}

pub fn upsert_service(conn: &Connection, s: &Service) -> DbResult<()> {
    conn.execute(
        "INSERT INTO services (id, type, name, description, enabled, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET type = ?2, name = ?3, description = ?4, enabled = ?5, extra = ?6",
        params![s.id, s.kind, s.name, s.description, s.enabled, extra_text(&s.extra)],
    )?;
    Ok(())
}

pub fn list_services(conn: &Connection) -> DbResult<Vec<Service>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, name, description, enabled, extra FROM services ORDER BY type, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Service {
                id: r.get(0)?,
                kind: r.get(1)?,
                name: r.get(2)?,
                description: r.get(3)?,
                enabled: r.get(4)?,
                extra: Map::new(),
            },
            r.get::<_, String>(5)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_service(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM services WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub url: String,
    pub region_id: Option<String>,
    pub enabled: bool,
    pub extra: Extra,
}

pub fn upsert_endpoint(conn: &Connection, e: &Endpoint) -> DbResult<()> {
    conn.execute(
        "INSERT INTO endpoints (id, service_id, interface, url, region_id, enabled, extra)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET service_id = ?2, interface = ?3, url = ?4, region_id = ?5,
            enabled = ?6, extra = ?7",
        params![
            e.id,
            e.service_id,
            e.interface,
            e.url,
            e.region_id,
            e.enabled,
            extra_text(&e.extra)
        ],
    )?;
    Ok(())
}

pub fn list_endpoints(conn: &Connection) -> DbResult<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, service_id, interface, url, region_id, enabled, extra FROM endpoints ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Endpoint {
                id: r.get(0)?,
                service_id: r.get(1)?,
                interface: r.get(2)?,
                url: r.get(3)?,
                region_id: r.get(4)?,
                enabled: r.get(5)?,
                extra: Map::new(),
            },
            r.get::<_, String>(6)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_endpoint(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM endpoints WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub token_hash: String,
    pub user_id: String,
    /// "project", "domain", "system" or "unscoped".
    pub scope_type: String,
    pub scope_id: String,
    pub methods: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    pub expires_unix: i64,
    pub audit_ids: Vec<String>,
    pub app_cred_id: Option<String>,
    pub revoked: bool,
}

pub fn insert_token(conn: &Connection, t: &TokenRecord) -> DbResult<()> {
    conn.execute(
        "INSERT INTO tokens (token_hash, user_id, scope_type, scope_id, methods, issued_at, expires_at,
            expires_unix, audit_ids, app_cred_id, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            t.token_hash,
            t.user_id,
            t.scope_type,
            t.scope_id,
            serde_json::to_string(&t.methods)?,
            t.issued_at,
            t.expires_at,
            t.expires_unix,
            serde_json::to_string(&t.audit_ids)?,
            t.app_cred_id,
            t.revoked
        ],
    )?;
    Ok(())
}

pub fn get_token(conn: &Connection, token_hash: &str) -> DbResult<Option<TokenRecord>> {
    let row = conn
        .query_row(
            "SELECT token_hash, user_id, scope_type, scope_id, methods, issued_at, expires_at,
                expires_unix, audit_ids, app_cred_id, revoked FROM tokens WHERE token_hash = ?1",
            [token_hash],
            |r| {
                Ok((
                    TokenRecord {
                        token_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        scope_type: r.get(2)?,
                        scope_id: r.get(3)?,
                        methods: Vec::new(),
                        issued_at: r.get(5)?,
                        expires_at: r.get(6)?,
                        expires_unix: r.get(7)?,
                        audit_ids: Vec::new(),
                        app_cred_id: r.get(9)?,
                        revoked: r.get(10)?,
                    },
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(8)?,
                ))
            },
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((mut token, methods, audit)) => {
            token.methods = serde_json::from_str(&methods)?;
            token.audit_ids = serde_json::from_str(&audit)?;
            Ok(Some(token))
        }
    }
}

pub fn revoke_token(conn: &Connection, token_hash: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE token_hash = ?1",
        [token_hash],
    )? > 0)
}

pub fn revoke_user_tokens(conn: &Connection, user_id: &str) -> DbResult<()> {
    conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE user_id = ?1",
        [user_id],
    )?;
    Ok(())
}

/// Revokes the tokens of a user scoped to one project or domain.
pub fn revoke_user_scope_tokens(conn: &Connection, user_id: &str, scope_id: &str) -> DbResult<()> {
    conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE user_id = ?1 AND scope_id = ?2",
        [user_id, scope_id],
    )?;
    Ok(())
}

/// Forgets tokens whose expiry has passed. An expired token fails
/// validation whether its row exists or not, and a revoked one stays
/// (with its `revoked` flag) until it expires.
pub fn purge_expired_tokens(conn: &Connection, now: i64) -> DbResult<usize> {
    Ok(conn.execute("DELETE FROM tokens WHERE expires_unix <= ?1", [now])?)
}

// ---------------------------------------------------------------- lockout

/// Keystone's lockout columns on the users table (migration 5).
pub const LOCKOUT_SCHEMA: &str = r#"
ALTER TABLE users ADD COLUMN failed_auth_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_auth_at INTEGER;
"#;

/// A user's failed password checks in a row and the time of the last one.
pub fn auth_failures(conn: &Connection, user_id: &str) -> DbResult<(u32, Option<i64>)> {
    Ok(conn
        .query_row(
            "SELECT failed_auth_count, failed_auth_at FROM users WHERE id = ?1",
            [user_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, None)))
}

/// Sets a user's failure count and the time of the last failure.
pub fn set_auth_failures(
    conn: &Connection,
    user_id: &str,
    count: u32,
    at: Option<i64>,
) -> DbResult<()> {
    conn.execute(
        "UPDATE users SET failed_auth_count = ?2, failed_auth_at = ?3 WHERE id = ?1",
        params![user_id, count, at],
    )?;
    Ok(())
}

/// Every application credential of every user.
pub fn list_all_app_creds(conn: &Connection) -> DbResult<Vec<AppCredential>> {
    let sql = format!("SELECT {APP_CRED_COLUMNS} FROM application_credentials ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], app_cred_from_row)?;
    rows.map(|r| finish_app_cred(r?)).collect()
}
