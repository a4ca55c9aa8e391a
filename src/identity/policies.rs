//! Policy blobs (`/v3/policies`) and endpoint groups (`/v3/OS-EP-FILTER`):
//! stored and returned as Keystone does; yunhe's own policy is built in.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::requests::{Name, member};
use super::views::strip_reserved;
use super::{Auth, IdentityError, IdentityResult, IdentityState, admin_delete, admin_list, new_id};
use crate::db::identity::{self as store, EndpointGroup, Policy};
use crate::http::body::{BodyError, Object};
use crate::http::json_response;
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/policies", get(list_policies).post(create_policy))
        .route(
            "/v3/policies/{id}",
            get(get_policy).patch(update_policy).delete(delete_policy),
        )
        .route(
            "/v3/OS-EP-FILTER/endpoint_groups",
            get(list_groups).post(create_group),
        )
        .route(
            "/v3/OS-EP-FILTER/endpoint_groups/{id}",
            get(get_group).patch(update_group).delete(delete_group),
        )
}

fn policy_json(p: &Policy, base: &str) -> Value {
    let mut value = json!({"id": p.id, "type": p.kind, "blob": p.blob,
        "links": {"self": format!("{base}/policies/{}", p.id)}});
    if let Some(map) = value.as_object_mut() {
        for (k, v) in &p.extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    value
}

fn find_policy(conn: &rusqlite::Connection, id: &str) -> IdentityResult<Policy> {
    store::list_policies(conn)?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find policy: {id}.")))
}

async fn list_policies(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_policies", &Target::new()),
        ("policies", "policies"),
        store::list_policies,
        policy_json,
        (&q, &["type", "id"]),
    )
    .await
}

/// The `policy` member of `POST /v3/policies` and `PATCH
/// /v3/policies/{id}` (unknown attributes are kept as extra).
#[derive(Debug, serde::Deserialize)]
struct PolicyRequest {
    /// Required on create.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Required on create.
    blob: Option<String>,
    #[serde(flatten)]
    extra: Object,
}

async fn create_policy(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_policy", &Target::new())?;
    let request: PolicyRequest = member(&body, "policy")?;
    let policy = Policy {
        id: new_id(),
        kind: request
            .kind
            .ok_or_else(|| BodyError::Missing("type".into()))?,
        blob: request
            .blob
            .ok_or_else(|| BodyError::Missing("blob".into()))?,
        extra: strip_reserved(request.extra, &[]),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            store::upsert_policy(tx, &policy)?;
            Ok(policy_json(&policy, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"policy": value}),
    ))
}

async fn get_policy(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_policy", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(policy_json(&find_policy(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"policy": value})))
}

async fn update_policy(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_policy", &Target::new())?;
    let request: PolicyRequest = member(&body, "policy")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut policy = find_policy(tx, &id)?;
            if let Some(kind) = request.kind {
                policy.kind = kind;
            }
            if let Some(blob) = request.blob {
                policy.blob = blob;
            }
            policy.extra.extend(strip_reserved(request.extra, &[]));
            store::upsert_policy(tx, &policy)?;
            Ok(policy_json(&policy, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"policy": value})))
}

async fn delete_policy(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_policy", &Target::new()),
        id,
        |tx, id| {
            find_policy(tx, id)?;
            store::delete_policy(tx, id)?;
            Ok(())
        },
    )
    .await
}

// ------------------------------------------------------------ endpoint groups

fn group_json(g: &EndpointGroup, base: &str) -> Value {
    json!({"id": g.id, "name": g.name, "description": g.description, "filters": g.filters,
        "links": {"self": format!("{base}/OS-EP-FILTER/endpoint_groups/{}", g.id)}})
}

fn find_group(conn: &rusqlite::Connection, id: &str) -> IdentityResult<EndpointGroup> {
    store::list_endpoint_groups(conn)?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find endpoint group: {id}.")))
}

/// The `endpoint_group` member of `POST` and `PATCH
/// /v3/OS-EP-FILTER/endpoint_groups[/{id}]` (other members are ignored, as
/// before).
#[derive(Debug, serde::Deserialize)]
struct EndpointGroupRequest {
    /// Required on create.
    name: Option<Name>,
    description: Option<String>,
    /// Required on create.
    filters: Option<EndpointFilters>,
}

/// What an endpoint group selects endpoints by: no other members.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct EndpointFilters {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<String>,
}

impl EndpointFilters {
    /// As stored (`EndpointGroup::filters`).
    fn into_value(self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({}))
    }
}

async fn list_groups(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_endpoint_groups", &Target::new()),
        ("endpoint_groups", "OS-EP-FILTER/endpoint_groups"),
        store::list_endpoint_groups,
        group_json,
        (&q, &["name"]),
    )
    .await
}

async fn create_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_endpoint_group", &Target::new())?;
    let request: EndpointGroupRequest = member(&body, "endpoint_group")?;
    let group = EndpointGroup {
        id: new_id(),
        name: request
            .name
            .ok_or_else(|| BodyError::Missing("name".into()))?
            .into(),
        description: request.description.unwrap_or_default(),
        filters: request
            .filters
            .ok_or_else(|| BodyError::Missing("filters".into()))?
            .into_value(),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            store::upsert_endpoint_group(tx, &group)?;
            Ok(group_json(&group, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"endpoint_group": value}),
    ))
}

async fn get_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_endpoint_group", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(group_json(&find_group(conn, &id)?, &base)))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"endpoint_group": value}),
    ))
}

async fn update_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_endpoint_group", &Target::new())?;
    let request: EndpointGroupRequest = member(&body, "endpoint_group")?;
    let filters = request.filters.map(EndpointFilters::into_value);
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut group = find_group(tx, &id)?;
            if let Some(name) = request.name {
                group.name = name.into();
            }
            if let Some(description) = request.description {
                group.description = description;
            }
            if let Some(filters) = filters {
                group.filters = filters;
            }
            store::upsert_endpoint_group(tx, &group)?;
            Ok(group_json(&group, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"endpoint_group": value}),
    ))
}

async fn delete_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_endpoint_group", &Target::new()),
        id,
        |tx, id| {
            find_group(tx, id)?;
            store::delete_endpoint_group(tx, id)?;
            Ok(())
        },
    )
    .await
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::identity::requests::refusal;

    #[test]
    fn policy_and_endpoint_group_bodies() {
        let policy: PolicyRequest = member(
            br#"{"policy": {"type": "json", "blob": "{}", "x": 1}}"#,
            "policy",
        )
        .expect("accepted");
        assert_eq!(policy.kind.as_deref(), Some("json"));
        assert_eq!(policy.extra.len(), 1);
        let group: EndpointGroupRequest = member(
            br#"{"endpoint_group": {"name": "g", "filters": {"interface": "public"}}}"#,
            "endpoint_group",
        )
        .expect("accepted");
        assert_eq!(
            group.filters.map(EndpointFilters::into_value),
            Some(json!({"interface": "public"}))
        );
        let refused = |body: &str| refusal::<EndpointGroupRequest>(body, "endpoint_group");
        assert_eq!(
            refused(r#"{"endpoint_group": {"name": "g", "filters": {"colour": "red"}}}"#),
            "Additional properties are not allowed ('filters.colour' was unexpected)."
        );
        assert_eq!(
            refused(r#"{"endpoint_group": {"name": "g", "filters": []}}"#),
            "Invalid input for field 'filters': not an object."
        );
    }
}
