//! Roles, implied roles and role assignments.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Map;

use super::{Extra, extra_text, parse_extra, unique_or};
use crate::db::DbResult;

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
