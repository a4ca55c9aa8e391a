//! The records as they are kept: one serde type per resource, each with
//! Neutron's standard attributes, loaded and saved through `db::network`.

use rusqlite::Connection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize as SerializeDerive};

use super::{NetResult, NetworkError};
use crate::db::network as db;

/// Neutron's standard attributes, shared by every resource.
#[derive(Debug, Clone, SerializeDerive, Deserialize, PartialEq)]
pub struct Std {
    pub id: String,
    pub project_id: String,
    pub tenant_id: String,
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub revision_number: i64,
}

impl Std {
    /// The attributes of a new record of `project_id`.
    pub fn new(project_id: &str, description: String) -> Std {
        let now = now();
        Std {
            id: uuid::Uuid::new_v4().to_string(),
            project_id: project_id.to_string(),
            tenant_id: project_id.to_string(),
            description,
            tags: Vec::new(),
            created_at: now.clone(),
            updated_at: now,
            revision_number: 0,
        }
    }
}

/// Neutron's timestamps: ISO 8601 in UTC, seconds, `Z`.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A kind of record.
pub trait Kind: Serialize + DeserializeOwned + Send + 'static {
    /// The stored kind (`network`).
    const KIND: &'static str;
    /// Neutron's type of the 404 (`NetworkNotFound`).
    const NOT_FOUND: &'static str;
    fn std(&self) -> &Std;
    fn std_mut(&mut self) -> &mut Std;
    /// The record it belongs to (a subnet's network, a rule's group).
    fn parent(&self) -> Option<&str> {
        None
    }
    /// Neutron's wording of the 404.
    fn not_found_message(id: &str) -> String;
}

/// The 404 of a kind.
pub fn not_found<R: Kind>(id: &str) -> NetworkError {
    NetworkError::not_found(R::NOT_FOUND, R::not_found_message(id))
}

/// One record, if it exists.
pub fn load<R: Kind>(conn: &Connection, id: &str) -> NetResult<Option<R>> {
    match db::get(conn, R::KIND, id)? {
        Some(rec) => Ok(Some(serde_json::from_str(&rec.doc)?)),
        None => Ok(None),
    }
}

/// One record, or the kind's 404.
pub fn must<R: Kind>(conn: &Connection, id: &str) -> NetResult<R> {
    load(conn, id)?.ok_or_else(|| not_found::<R>(id))
}

/// Every record of a kind, oldest first.
pub fn all<R: Kind>(conn: &Connection) -> NetResult<Vec<R>> {
    db::list(conn, R::KIND)?
        .into_iter()
        .map(|rec| serde_json::from_str(&rec.doc).map_err(NetworkError::from))
        .collect()
}

/// The records of a kind below a parent, oldest first.
pub fn children<R: Kind>(conn: &Connection, parent: &str) -> NetResult<Vec<R>> {
    db::list_by_parent(conn, R::KIND, parent)?
        .into_iter()
        .map(|rec| serde_json::from_str(&rec.doc).map_err(NetworkError::from))
        .collect()
}

/// Stores a new record.
pub fn insert<R: Kind>(conn: &Connection, record: &R) -> NetResult<()> {
    let std = record.std();
    db::insert(
        conn,
        R::KIND,
        &std.id,
        &std.project_id,
        record.parent(),
        &serde_json::to_string(record)?,
    )?;
    Ok(())
}

/// Stores a changed record: its revision goes up and `updated_at` moves.
pub fn save<R: Kind>(conn: &Connection, record: &mut R) -> NetResult<()> {
    let std = record.std_mut();
    std.revision_number += 1;
    std.updated_at = now();
    let id = std.id.clone();
    db::update(conn, R::KIND, &id, &serde_json::to_string(record)?)?;
    Ok(())
}

/// Removes a record.
pub fn remove<R: Kind>(conn: &Connection, id: &str) -> NetResult<()> {
    db::delete(conn, R::KIND, id)?;
    Ok(())
}

/// The JSON of a record (for filters and `fields`).
pub fn to_value<R: Serialize>(record: &R) -> NetResult<serde_json::Value> {
    Ok(serde_json::to_value(record)?)
}
