//! Keystone's tables: domains, projects, users, groups, roles, assignments,
//! application credentials, credentials, the catalog and tokens.
//!
//! Rows are loaded and stored whole; filtering and policy live in
//! `crate::identity`. Arbitrary extra attributes that clients send
//! (Keystone keeps them) are kept as a JSON object in `extra`.
//!
//! Layout, by resource group (all re-exported here, so callers write
//! `db::identity::get_user`): `projects` domains, projects and tags;
//! `users` users, lockout counters, groups and membership; `roles` roles,
//! implied roles and assignments; `credentials` application and EC2-style
//! credentials; `catalog` regions, services, endpoints, endpoint groups and
//! policy blobs; `tokens` tokens and revocation. The schema (migrations 1
//! and 7) stays here: a released migration is never split or edited.

mod catalog;
mod credentials;
pub mod extensions;
mod federation;
mod projects;
mod roles;
mod tokens;
pub mod trusts;
mod users;

pub use catalog::*;
pub use credentials::*;
pub use federation::*;
pub use projects::*;
pub use roles::*;
pub use tokens::*;
pub use users::*;

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

/// Keystone's lockout columns on the users table (migration 7).
pub const LOCKOUT_SCHEMA: &str = r#"
ALTER TABLE users ADD COLUMN failed_auth_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN failed_auth_at INTEGER;
"#;

/// Sets a row's `extra` from its stored JSON text.
fn finish<T>(pair: (T, String), set: impl FnOnce(&mut T, Extra)) -> DbResult<T> {
    let (mut item, text) = pair;
    set(&mut item, parse_extra(text)?);
    Ok(item)
}

/// A fresh in-memory database with every migration applied, for unit tests.
#[cfg(test)]
pub fn test_connection() -> rusqlite::Connection {
    let mut conn = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
    conn.pragma_update(None, "foreign_keys", "ON")
        .expect("foreign keys on");
    super::migrations::migrate(&mut conn).expect("migrations apply");
    conn
}
