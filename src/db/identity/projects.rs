//! Domains and projects (with their tags).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Map;

use super::roles::{delete_role, list_roles};
use super::users::{delete_group, delete_user, list_groups, list_users};
use super::{Extra, extra_text, finish, unique_or};
use crate::db::DbResult;

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
