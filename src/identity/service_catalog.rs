//! The service catalog as it goes into tokens and `/v3/auth/catalog`: the
//! enabled services, each with its enabled endpoints. A leaf: the catalog
//! API (`catalog`) edits what this reads, the token code renders it.

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::db::DbResult;
use crate::db::identity as store;

/// The catalog, read from the state file.
pub fn build(conn: &Connection) -> DbResult<Value> {
    let endpoints = store::list_endpoints(conn)?;
    let catalog: Vec<Value> = store::list_services(conn)?
        .into_iter()
        .filter(|s| s.enabled)
        .map(|s| {
            let eps: Vec<Value> = endpoints
                .iter()
                .filter(|e| e.service_id == s.id && e.enabled)
                .map(|e| {
                    json!({"id": e.id, "interface": e.interface, "region": e.region_id,
                           "region_id": e.region_id, "url": e.url})
                })
                .collect();
            json!({"id": s.id, "type": s.kind, "name": s.name, "endpoints": eps})
        })
        .collect();
    Ok(Value::Array(catalog))
}
