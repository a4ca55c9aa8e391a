//! Host aggregates (`/os-aggregates`): admin CRUD, hosts (this host is the
//! only one there is), metadata, and the availability zone an aggregate
//! names.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, no_additional, nova_time,
    own_target, parse_body, take_object,
};
use crate::db::compute::{self as store, Aggregate};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-aggregates", get(list).post(create))
        .route(
            "/v2.1/os-aggregates/{id}",
            get(show).put(update).delete(delete),
        )
        .route("/v2.1/os-aggregates/{id}/action", post(action))
}

fn view(a: &Aggregate, mv: Mv, full: bool) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(a.id));
    if mv.at_least(41) {
        obj.insert("uuid".into(), json!(a.uuid));
    }
    obj.insert("name".into(), json!(a.name));
    obj.insert("availability_zone".into(), json!(a.availability_zone));
    obj.insert("created_at".into(), json!(nova_time(a.created_at)));
    obj.insert("updated_at".into(), json!(a.updated_at.map(nova_time)));
    obj.insert("deleted".into(), json!(false));
    obj.insert("deleted_at".into(), Value::Null);
    if full {
        obj.insert("hosts".into(), json!(a.hosts));
        let mut metadata = a.metadata.clone();
        if let Some(zone) = &a.availability_zone {
            metadata.insert("availability_zone".into(), zone.clone());
        }
        obj.insert("metadata".into(), json!(metadata));
    }
    Value::Object(obj)
}

fn not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Aggregate {id} could not be found."))
}

fn parse_id(id: &str) -> ComputeResult<i64> {
    id.parse::<i64>().map_err(|_| not_found(id))
}

fn name_field(obj: &Map<String, Value>, key: &str) -> ComputeResult<Option<String>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 255 => {
            Ok(Some(n.clone()))
        }
        Some(v) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {v}."
        ))),
    }
}

fn zone_field(obj: &Map<String, Value>) -> ComputeResult<Option<Option<String>>> {
    match obj.get("availability_zone") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(z)) if !z.trim().is_empty() && z.chars().count() <= 255 => {
            Ok(Some(Some(z.clone())))
        }
        Some(v) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute availability_zone. Value: {v}."
        ))),
    }
}

async fn list(State(s): State<S>, Auth(ctx): Auth, mv: Mv) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-aggregates:index",
        &own_target(&ctx),
    )?;
    let all = s.read(|conn| Ok(store::list_aggregates(conn)?)).await?;
    let views: Vec<Value> = all.iter().map(|a| view(a, mv, true)).collect();
    Ok(json_response(StatusCode::OK, &json!({"aggregates": views})))
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-aggregates:create",
        &own_target(&ctx),
    )?;
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "aggregate")?;
    no_additional(&obj, &["name", "availability_zone"])?;
    let name = name_field(&obj, "name")?.ok_or_else(|| {
        ComputeError::BadRequest(
            "Invalid input for field/attribute aggregate. 'name' is a required property".into(),
        )
    })?;
    let mut aggregate = Aggregate {
        id: 0,
        uuid: uuid::Uuid::new_v4().to_string(),
        name,
        availability_zone: zone_field(&obj)?.flatten(),
        created_at: now_unix(),
        updated_at: None,
        hosts: Vec::new(),
        metadata: BTreeMap::new(),
    };
    let stored = aggregate.clone();
    aggregate.id = s
        .write(move |tx| Ok(store::insert_aggregate(tx, &stored)?))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"aggregate": view(&aggregate, mv, false)}),
    ))
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-aggregates:show",
        &own_target(&ctx),
    )?;
    let number = parse_id(&id)?;
    let a = s
        .read(move |conn| Ok(store::get_aggregate(conn, number)?))
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"aggregate": view(&a, mv, true)}),
    ))
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-aggregates:update",
        &own_target(&ctx),
    )?;
    let number = parse_id(&id)?;
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "aggregate")?;
    no_additional(&obj, &["name", "availability_zone"])?;
    let name = name_field(&obj, "name")?;
    let zone = zone_field(&obj)?;
    if name.is_none() && zone.is_none() {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute aggregate. Nothing to update.".into(),
        ));
    }
    let a = s
        .write(move |tx| {
            let mut a = store::get_aggregate(tx, number)?.ok_or_else(|| not_found(&id))?;
            if let Some(name) = name {
                a.name = name;
            }
            if let Some(zone) = zone {
                a.availability_zone = zone;
            }
            a.updated_at = Some(now_unix());
            store::update_aggregate(tx, &a)?;
            Ok(a)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"aggregate": view(&a, mv, true)}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-aggregates:delete",
        &own_target(&ctx),
    )?;
    let number = parse_id(&id)?;
    s.write(move |tx| {
        let a = store::get_aggregate(tx, number)?.ok_or_else(|| not_found(&id))?;
        if !a.hosts.is_empty() {
            return Err(ComputeError::BadRequest(format!(
                "Cannot remove aggregate {id}: it still has hosts."
            )));
        }
        store::delete_aggregate(tx, number)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let mut body = parse_body(&body)?;
    let (name, rule) = if body.contains_key("add_host") {
        ("add_host", "os_compute_api:os-aggregates:add_host")
    } else if body.contains_key("remove_host") {
        ("remove_host", "os_compute_api:os-aggregates:remove_host")
    } else if body.contains_key("set_metadata") {
        ("set_metadata", "os_compute_api:os-aggregates:set_metadata")
    } else {
        return Err(ComputeError::BadRequest("There is no such action.".into()));
    };
    authorize(&s, &ctx, rule, &own_target(&ctx))?;
    let number = parse_id(&id)?;
    let obj = take_object(&mut body, name)?;
    let this_host = super::hosts::hostname();
    let a = if name == "set_metadata" {
        no_additional(&obj, &["metadata"])?;
        let Some(Value::Object(metadata)) = obj.get("metadata") else {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute metadata.".into(),
            ));
        };
        let mut changes = Vec::new();
        let mut zone = None;
        for (key, value) in metadata {
            if key.is_empty() || key.chars().count() > 255 {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid metadata key '{key}'."
                )));
            }
            let value = match value {
                Value::Null => None,
                Value::String(v) if v.chars().count() <= 255 => Some(v.clone()),
                other => {
                    return Err(ComputeError::BadRequest(format!(
                        "Invalid metadata value for '{key}': {other}."
                    )));
                }
            };
            if key == "availability_zone" {
                zone = Some(value);
            } else {
                changes.push((key.clone(), value));
            }
        }
        s.write(move |tx| {
            let mut a = store::get_aggregate(tx, number)?.ok_or_else(|| not_found(&id))?;
            store::set_aggregate_metadata(tx, number, &changes)?;
            if let Some(zone) = zone {
                a.availability_zone = zone;
            }
            a.updated_at = Some(now_unix());
            store::update_aggregate(tx, &a)?;
            store::get_aggregate(tx, number)?.ok_or_else(|| not_found(&id))
        })
        .await?
    } else {
        no_additional(&obj, &["host"])?;
        let host = match obj.get("host") {
            Some(Value::String(h)) if !h.is_empty() && h.chars().count() <= 255 => h.clone(),
            _ => {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute host.".into(),
                ));
            }
        };
        let add = name == "add_host";
        s.write(move |tx| {
            store::get_aggregate(tx, number)?.ok_or_else(|| not_found(&id))?;
            if add {
                if host != this_host {
                    return Err(ComputeError::NotFound(format!(
                        "Compute host {host} could not be found."
                    )));
                }
                if !store::add_aggregate_host(tx, number, &host)? {
                    return Err(ComputeError::Conflict(format!(
                        "Aggregate {id} already has host {host}."
                    )));
                }
            } else if !store::remove_aggregate_host(tx, number, &host)? {
                return Err(ComputeError::NotFound(format!(
                    "Cannot remove host {host} in aggregate {id}: not found."
                )));
            }
            store::get_aggregate(tx, number)?.ok_or_else(|| not_found(&id))
        })
        .await?
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"aggregate": view(&a, mv, true)}),
    ))
}
