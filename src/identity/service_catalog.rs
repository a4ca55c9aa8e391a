//! The service catalog as it goes into tokens and `/v3/auth/catalog`: the
//! enabled services, each with its enabled endpoints. For a project with
//! OS-EP-FILTER associations (endpoints, or endpoint groups whose filters
//! pick endpoints) only those endpoints appear, and services left without
//! one are dropped, as Keystone does; a project without associations sees
//! the whole catalog. A leaf: the catalog and endpoint-filter APIs edit
//! what this reads, the token code renders it.

use std::collections::BTreeSet;

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::db::DbResult;
use crate::db::identity::{self as store, Endpoint, extensions as ext};

/// The catalog, read from the state file, filtered for the token's project.
pub fn build(conn: &Connection, project_id: Option<&str>) -> DbResult<Value> {
    let endpoints = store::list_endpoints(conn)?;
    let allowed = match project_id {
        Some(project_id) => project_endpoint_ids(conn, &endpoints, project_id)?,
        None => BTreeSet::new(),
    };
    let catalog: Vec<Value> = store::list_services(conn)?
        .into_iter()
        .filter(|s| s.enabled)
        .filter_map(|s| {
            let eps: Vec<Value> = endpoints
                .iter()
                .filter(|e| e.service_id == s.id && e.enabled)
                .filter(|e| allowed.is_empty() || allowed.contains(&e.id))
                .map(|e| {
                    json!({"id": e.id, "interface": e.interface, "region": e.region_id,
                           "region_id": e.region_id, "url": e.url})
                })
                .collect();
            (allowed.is_empty() || !eps.is_empty())
                .then(|| json!({"id": s.id, "type": s.kind, "name": s.name, "endpoints": eps}))
        })
        .collect();
    Ok(Value::Array(catalog))
}

/// True when an endpoint has every attribute an endpoint group's filters name.
pub fn group_matches(filters: &Value, e: &Endpoint) -> bool {
    let Some(filters) = filters.as_object() else {
        return false;
    };
    filters.iter().all(|(key, wanted)| {
        let actual = match key.as_str() {
            "service_id" => Some(e.service_id.as_str()),
            "region_id" => e.region_id.as_deref(),
            "interface" => Some(e.interface.as_str()),
            _ => return false,
        };
        match wanted {
            Value::Null => actual.is_none(),
            Value::String(w) => actual == Some(w.as_str()),
            _ => false,
        }
    })
}

/// The endpoints associated with a project: directly, or through its
/// endpoint groups. Empty when the project has no associations.
pub fn project_endpoint_ids(
    conn: &Connection,
    endpoints: &[Endpoint],
    project_id: &str,
) -> DbResult<BTreeSet<String>> {
    let mut ids: BTreeSet<String> = ext::endpoints_of_project(conn, project_id)?
        .into_iter()
        .filter(|id| endpoints.iter().any(|e| &e.id == id))
        .collect();
    let group_ids = ext::endpoint_groups_of_project(conn, project_id)?;
    if !group_ids.is_empty() {
        for group in store::list_endpoint_groups(conn)?
            .into_iter()
            .filter(|g| group_ids.contains(&g.id))
        {
            ids.extend(
                endpoints
                    .iter()
                    .filter(|e| group_matches(&group.filters, e))
                    .map(|e| e.id.clone()),
            );
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, service: &str, interface: &str, region: Option<&str>) -> Endpoint {
        Endpoint {
            id: id.into(),
            service_id: service.into(),
            interface: interface.into(),
            url: format!("https://example.test/{id}"),
            region_id: region.map(str::to_string),
            enabled: true,
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn group_filters_match_every_named_attribute() {
        let e = endpoint("e1", "s1", "public", Some("RegionOne"));
        assert!(group_matches(&json!({"interface": "public"}), &e));
        assert!(group_matches(
            &json!({"service_id": "s1", "region_id": "RegionOne"}),
            &e
        ));
        assert!(!group_matches(
            &json!({"service_id": "s1", "interface": "admin"}),
            &e
        ));
        assert!(!group_matches(&json!({"color": "red"}), &e));
        assert!(group_matches(&json!({}), &e));
    }
}
