//! Users (with Keystone's lockout counters), groups and group membership.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Map;

use super::tokens::revoke_user_tokens;
use super::{Extra, extra_text, finish, parse_extra, unique_or};
use crate::db::DbResult;

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

// ---------------------------------------------------------------- lockout

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

/// The groups a user is in: its memberships and the unexpired ones an
/// identity provider gave it at its last federated login.
pub fn groups_of_user(conn: &Connection, user_id: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT group_id FROM group_members WHERE user_id = ?1
         UNION SELECT group_id FROM expiring_group_members WHERE user_id = ?1 AND expires_unix > ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![user_id, crate::db::now_unix()], |r| {
        r.get(0)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
