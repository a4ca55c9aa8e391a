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

use super::views::strip_reserved;
use super::{Auth, IdentityError, IdentityResult, IdentityState, admin_delete, admin_list, new_id};
use crate::db::identity::{self as store, EndpointGroup, Policy};
use crate::http::body::{
    check_name, opt_string, parse_object as parse_body, required_name, take_object,
};
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

async fn create_policy(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_policy", &Target::new())?;
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "policy")?;
    let policy = Policy {
        id: new_id(),
        kind: opt_string(&obj, "type")?
            .ok_or_else(|| IdentityError::BadRequest("'type' is a required property.".into()))?,
        blob: opt_string(&obj, "blob")?
            .ok_or_else(|| IdentityError::BadRequest("'blob' is a required property.".into()))?,
        extra: strip_reserved(obj, &["type", "blob"]),
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "policy")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut policy = find_policy(tx, &id)?;
            if let Some(kind) = opt_string(&obj, "type")? {
                policy.kind = kind;
            }
            if let Some(blob) = opt_string(&obj, "blob")? {
                policy.blob = blob;
            }
            policy.extra.extend(strip_reserved(obj, &["type", "blob"]));
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

fn parse_filters(value: Option<&Value>) -> IdentityResult<Option<Value>> {
    match value {
        None => Ok(None),
        Some(Value::Object(map)) => {
            for key in map.keys() {
                if !matches!(key.as_str(), "service_id" | "region_id" | "interface") {
                    return Err(IdentityError::BadRequest(format!(
                        "Unknown endpoint group filter {key:?}."
                    )));
                }
            }
            Ok(Some(Value::Object(map.clone())))
        }
        Some(_) => Err(IdentityError::BadRequest(
            "'filters' must be an object.".into(),
        )),
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "endpoint_group")?;
    let group = EndpointGroup {
        id: new_id(),
        name: required_name(&obj, "name")?,
        description: opt_string(&obj, "description")?.unwrap_or_default(),
        filters: parse_filters(obj.get("filters"))?
            .ok_or_else(|| IdentityError::BadRequest("'filters' is a required property.".into()))?,
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "endpoint_group")?;
    let filters = parse_filters(obj.get("filters"))?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut group = find_group(tx, &id)?;
            if let Some(name) = opt_string(&obj, "name")? {
                group.name = check_name(&name, "name")?;
            }
            if let Some(description) = opt_string(&obj, "description")? {
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
