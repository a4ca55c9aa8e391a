//! OS-FEDERATION: identity providers and their remote ids, protocols,
//! mappings, service providers, the shadow users federated logins make and
//! their expiring group memberships (Keystone's
//! `expiring_user_group_membership`).

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::{Extra, extra_text, parse_extra, unique_or};
use crate::db::DbResult;

/// The federation tables (one migration).
pub const FEDERATION_SCHEMA: &str = r#"
CREATE TABLE identity_providers (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains(id),
    enabled INTEGER NOT NULL DEFAULT 0,
    description TEXT,
    authorization_ttl INTEGER,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE idp_remote_ids (
    remote_id TEXT PRIMARY KEY,
    idp_id TEXT NOT NULL REFERENCES identity_providers(id) ON DELETE CASCADE
);
CREATE TABLE federation_mappings (
    id TEXT PRIMARY KEY,
    rules TEXT NOT NULL,
    schema_version TEXT NOT NULL DEFAULT '1.0'
);
CREATE TABLE federation_protocols (
    idp_id TEXT NOT NULL REFERENCES identity_providers(id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    mapping_id TEXT NOT NULL,
    remote_id_attribute TEXT,
    PRIMARY KEY (idp_id, id)
);
CREATE TABLE service_providers (
    id TEXT PRIMARY KEY,
    auth_url TEXT NOT NULL,
    sp_url TEXT NOT NULL,
    description TEXT,
    enabled INTEGER NOT NULL DEFAULT 0,
    relay_state_prefix TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE federated_users (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    idp_id TEXT NOT NULL REFERENCES identity_providers(id) ON DELETE CASCADE,
    protocol_id TEXT NOT NULL,
    unique_id TEXT NOT NULL,
    display_name TEXT,
    PRIMARY KEY (idp_id, protocol_id, unique_id)
);
CREATE INDEX federated_users_by_user ON federated_users (user_id);
CREATE TABLE expiring_group_members (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    idp_id TEXT NOT NULL REFERENCES identity_providers(id) ON DELETE CASCADE,
    expires_unix INTEGER NOT NULL,
    PRIMARY KEY (user_id, group_id, idp_id)
);
"#;

// ------------------------------------------------------- identity providers

#[derive(Debug, Clone, PartialEq)]
pub struct IdentityProvider {
    pub id: String,
    pub domain_id: String,
    pub enabled: bool,
    pub description: Option<String>,
    /// Minutes a federated group membership stays valid (Keystone's unit).
    pub authorization_ttl: Option<i64>,
    pub remote_ids: Vec<String>,
    pub extra: Extra,
}

/// Inserts or replaces an identity provider and its remote ids; a remote id
/// another provider holds is a conflict.
pub fn upsert_idp(conn: &Connection, idp: &IdentityProvider) -> DbResult<()> {
    conn.execute(
        "INSERT INTO identity_providers (id, domain_id, enabled, description, authorization_ttl, extra)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET domain_id = ?2, enabled = ?3, description = ?4,
             authorization_ttl = ?5, extra = ?6",
        params![
            idp.id,
            idp.domain_id,
            idp.enabled,
            idp.description,
            idp.authorization_ttl,
            extra_text(&idp.extra)
        ],
    )?;
    conn.execute("DELETE FROM idp_remote_ids WHERE idp_id = ?1", [&idp.id])?;
    for remote in &idp.remote_ids {
        conn.execute(
            "INSERT INTO idp_remote_ids (remote_id, idp_id) VALUES (?1, ?2)",
            params![remote, idp.id],
        )
        .map_err(|e| unique_or(e, &format!("Duplicate remote ID: {remote}")))?;
    }
    Ok(())
}

fn remote_ids_of(conn: &Connection, idp_id: &str) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT remote_id FROM idp_remote_ids WHERE idp_id = ?1 ORDER BY remote_id",
    )?;
    let rows = stmt.query_map([idp_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

type IdpRow = (String, String, bool, Option<String>, Option<i64>, String);

fn idp_from_row(conn: &Connection, row: IdpRow) -> DbResult<IdentityProvider> {
    let (id, domain_id, enabled, description, authorization_ttl, extra) = row;
    Ok(IdentityProvider {
        remote_ids: remote_ids_of(conn, &id)?,
        id,
        domain_id,
        enabled,
        description,
        authorization_ttl,
        extra: parse_extra(extra)?,
    })
}

const IDP_COLUMNS: &str = "id, domain_id, enabled, description, authorization_ttl, extra";

fn idp_row(r: &rusqlite::Row) -> rusqlite::Result<IdpRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

pub fn get_idp(conn: &Connection, id: &str) -> DbResult<Option<IdentityProvider>> {
    let row = conn
        .query_row(
            &format!("SELECT {IDP_COLUMNS} FROM identity_providers WHERE id = ?1"),
            [id],
            idp_row,
        )
        .optional()?;
    row.map(|row| idp_from_row(conn, row)).transpose()
}

pub fn list_idps(conn: &Connection) -> DbResult<Vec<IdentityProvider>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {IDP_COLUMNS} FROM identity_providers ORDER BY id"
    ))?;
    let rows: Vec<IdpRow> = stmt.query_map([], idp_row)?.collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|row| idp_from_row(conn, row))
        .collect()
}

/// Deletes an identity provider with its protocols and remote ids, and the
/// users it made (as Keystone does). False when there was none.
pub fn delete_idp(conn: &Connection, id: &str) -> DbResult<bool> {
    let users: Vec<String> = {
        let mut stmt =
            conn.prepare_cached("SELECT DISTINCT user_id FROM federated_users WHERE idp_id = ?1")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let found = conn.execute("DELETE FROM identity_providers WHERE id = ?1", [id])? > 0;
    for user in users {
        conn.execute("DELETE FROM users WHERE id = ?1", [&user])?;
    }
    Ok(found)
}

// ----------------------------------------------------------------- mappings

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub id: String,
    pub rules: Value,
    pub schema_version: String,
}

pub fn upsert_mapping(conn: &Connection, m: &Mapping) -> DbResult<()> {
    conn.execute(
        "INSERT INTO federation_mappings (id, rules, schema_version) VALUES (?1, ?2, ?3)
         ON CONFLICT(id) DO UPDATE SET rules = ?2, schema_version = ?3",
        params![m.id, m.rules.to_string(), m.schema_version],
    )?;
    Ok(())
}

fn mapping_row(r: &rusqlite::Row) -> rusqlite::Result<(String, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn mapping_from((id, rules, schema_version): (String, String, String)) -> DbResult<Mapping> {
    Ok(Mapping {
        id,
        rules: serde_json::from_str(&rules)?,
        schema_version,
    })
}

pub fn get_mapping(conn: &Connection, id: &str) -> DbResult<Option<Mapping>> {
    conn.query_row(
        "SELECT id, rules, schema_version FROM federation_mappings WHERE id = ?1",
        [id],
        mapping_row,
    )
    .optional()?
    .map(mapping_from)
    .transpose()
}

pub fn list_mappings(conn: &Connection) -> DbResult<Vec<Mapping>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, rules, schema_version FROM federation_mappings ORDER BY id")?;
    let rows: Vec<_> = stmt.query_map([], mapping_row)?.collect::<Result<_, _>>()?;
    rows.into_iter().map(mapping_from).collect()
}

pub fn delete_mapping(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM federation_mappings WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- protocols

#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub idp_id: String,
    pub id: String,
    pub mapping_id: String,
    pub remote_id_attribute: Option<String>,
}

pub fn upsert_protocol(conn: &Connection, p: &Protocol) -> DbResult<()> {
    conn.execute(
        "INSERT INTO federation_protocols (idp_id, id, mapping_id, remote_id_attribute)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(idp_id, id) DO UPDATE SET mapping_id = ?3, remote_id_attribute = ?4",
        params![p.idp_id, p.id, p.mapping_id, p.remote_id_attribute],
    )?;
    Ok(())
}

fn protocol_row(r: &rusqlite::Row) -> rusqlite::Result<Protocol> {
    Ok(Protocol {
        idp_id: r.get(0)?,
        id: r.get(1)?,
        mapping_id: r.get(2)?,
        remote_id_attribute: r.get(3)?,
    })
}

pub fn get_protocol(conn: &Connection, idp_id: &str, id: &str) -> DbResult<Option<Protocol>> {
    Ok(conn
        .query_row(
            "SELECT idp_id, id, mapping_id, remote_id_attribute FROM federation_protocols
             WHERE idp_id = ?1 AND id = ?2",
            [idp_id, id],
            protocol_row,
        )
        .optional()?)
}

pub fn list_protocols(conn: &Connection, idp_id: &str) -> DbResult<Vec<Protocol>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idp_id, id, mapping_id, remote_id_attribute FROM federation_protocols
         WHERE idp_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([idp_id], protocol_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn delete_protocol(conn: &Connection, idp_id: &str, id: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "DELETE FROM federation_protocols WHERE idp_id = ?1 AND id = ?2",
        [idp_id, id],
    )? > 0)
}

// -------------------------------------------------------- service providers

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceProvider {
    pub id: String,
    pub auth_url: String,
    pub sp_url: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub relay_state_prefix: String,
    pub extra: Extra,
}

pub fn upsert_sp(conn: &Connection, sp: &ServiceProvider) -> DbResult<()> {
    conn.execute(
        "INSERT INTO service_providers (id, auth_url, sp_url, description, enabled, relay_state_prefix, extra)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET auth_url = ?2, sp_url = ?3, description = ?4,
             enabled = ?5, relay_state_prefix = ?6, extra = ?7",
        params![
            sp.id,
            sp.auth_url,
            sp.sp_url,
            sp.description,
            sp.enabled,
            sp.relay_state_prefix,
            extra_text(&sp.extra)
        ],
    )?;
    Ok(())
}

type SpRow = (String, String, String, Option<String>, bool, String, String);

fn sp_row(r: &rusqlite::Row) -> rusqlite::Result<SpRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn sp_from(row: SpRow) -> DbResult<ServiceProvider> {
    let (id, auth_url, sp_url, description, enabled, relay_state_prefix, extra) = row;
    Ok(ServiceProvider {
        id,
        auth_url,
        sp_url,
        description,
        enabled,
        relay_state_prefix,
        extra: parse_extra(extra)?,
    })
}

const SP_COLUMNS: &str = "id, auth_url, sp_url, description, enabled, relay_state_prefix, extra";

pub fn get_sp(conn: &Connection, id: &str) -> DbResult<Option<ServiceProvider>> {
    conn.query_row(
        &format!("SELECT {SP_COLUMNS} FROM service_providers WHERE id = ?1"),
        [id],
        sp_row,
    )
    .optional()?
    .map(sp_from)
    .transpose()
}

pub fn list_sps(conn: &Connection) -> DbResult<Vec<ServiceProvider>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SP_COLUMNS} FROM service_providers ORDER BY id"
    ))?;
    let rows: Vec<SpRow> = stmt.query_map([], sp_row)?.collect::<Result<_, _>>()?;
    rows.into_iter().map(sp_from).collect()
}

pub fn delete_sp(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM service_providers WHERE id = ?1", [id])? > 0)
}

// ------------------------------------------------ shadow users, memberships

/// The user a federated identity maps to, if it logged in before.
pub fn federated_user_id(
    conn: &Connection,
    idp_id: &str,
    protocol_id: &str,
    unique_id: &str,
) -> DbResult<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM federated_users
             WHERE idp_id = ?1 AND protocol_id = ?2 AND unique_id = ?3",
            [idp_id, protocol_id, unique_id],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn insert_federated_user(
    conn: &Connection,
    user_id: &str,
    (idp_id, protocol_id): (&str, &str),
    unique_id: &str,
    display_name: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO federated_users (user_id, idp_id, protocol_id, unique_id, display_name)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, idp_id, protocol_id, unique_id, display_name],
    )?;
    Ok(())
}

/// The (idp, protocol) pairs a user was made by; empty for a local user.
pub fn federations_of_user(conn: &Connection, user_id: &str) -> DbResult<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idp_id, protocol_id FROM federated_users WHERE user_id = ?1 ORDER BY idp_id",
    )?;
    let rows = stmt.query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces the groups an identity provider gives a user, valid until `expires_unix`.
pub fn set_expiring_groups(
    conn: &Connection,
    user_id: &str,
    idp_id: &str,
    group_ids: &[String],
    expires_unix: i64,
) -> DbResult<()> {
    conn.execute(
        "DELETE FROM expiring_group_members WHERE user_id = ?1 AND idp_id = ?2",
        [user_id, idp_id],
    )?;
    for group in group_ids {
        conn.execute(
            "INSERT OR REPLACE INTO expiring_group_members (user_id, group_id, idp_id, expires_unix)
             VALUES (?1, ?2, ?3, ?4)",
            params![user_id, group, idp_id, expires_unix],
        )?;
    }
    Ok(())
}

/// The groups an identity provider gave a user that are still valid at `now`.
pub fn expiring_groups(
    conn: &Connection,
    user_id: &str,
    idp_id: &str,
    now: i64,
) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT group_id FROM expiring_group_members
         WHERE user_id = ?1 AND idp_id = ?2 AND expires_unix > ?3 ORDER BY group_id",
    )?;
    let rows = stmt.query_map(params![user_id, idp_id, now], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::super::{Domain, insert_domain, test_connection};
    use super::*;

    fn idp(id: &str, remotes: &[&str]) -> IdentityProvider {
        IdentityProvider {
            id: id.into(),
            domain_id: "default".into(),
            enabled: true,
            description: None,
            authorization_ttl: None,
            remote_ids: remotes.iter().map(|r| r.to_string()).collect(),
            extra: Extra::new(),
        }
    }

    #[test]
    fn providers_keep_their_remote_ids_unique() {
        let conn = test_connection();
        let default = Domain {
            id: "default".into(),
            name: "Default".into(),
            description: String::new(),
            enabled: true,
            extra: Extra::new(),
        };
        insert_domain(&conn, &default).expect("domain");
        upsert_idp(&conn, &idp("a", &["https://a"])).expect("a");
        assert!(upsert_idp(&conn, &idp("b", &["https://a"])).is_err());
        upsert_idp(&conn, &idp("b", &["https://b"])).expect("b");
        assert_eq!(
            get_idp(&conn, "a").expect("read").expect("a").remote_ids,
            ["https://a"]
        );
        assert_eq!(list_idps(&conn).expect("list").len(), 2);
        assert!(delete_idp(&conn, "a").expect("delete"));
        assert!(get_idp(&conn, "a").expect("read").is_none());
    }
}
