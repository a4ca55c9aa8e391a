//! Application credentials (with their access rules) and EC2-style credentials.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value};

use super::{Extra, extra_text, finish, unique_or};
use crate::db::DbResult;

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

/// Every application credential of every user.
pub fn list_all_app_creds(conn: &Connection) -> DbResult<Vec<AppCredential>> {
    let sql = format!("SELECT {APP_CRED_COLUMNS} FROM application_credentials ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], app_cred_from_row)?;
    rows.map(|r| finish_app_cred(r?)).collect()
}
