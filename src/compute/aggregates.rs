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

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::request::{body as decode_body, present};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, nova_time, own_target,
};
use crate::db::compute::{self as store, Aggregate};
use crate::db::now_unix;
use crate::http::body::{BodyError, decode};
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

/// The body of `POST /os-aggregates` and `PUT /os-aggregates/{id}`; create
/// requires `name`, update one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateBody {
    aggregate: AggregateFields,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateFields {
    #[serde(default, deserialize_with = "present")]
    name: Option<AggregateName>,
    /// `Some(None)`: given as `null` (no zone).
    #[serde(default, deserialize_with = "present")]
    availability_zone: Option<Option<AggregateName>>,
}

/// An aggregate or zone name: 1 to 255 characters, not blank.
#[derive(Debug, Clone)]
struct AggregateName(String);

impl<'de> Deserialize<'de> for AggregateName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(n) if !n.trim().is_empty() && n.chars().count() <= 255 => {
                Ok(AggregateName(n))
            }
            v => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

/// `add_host`, `remove_host` or `set_metadata` (the first the body names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateAction {
    #[serde(default, deserialize_with = "present")]
    add_host: Option<HostMember>,
    #[serde(default, deserialize_with = "present")]
    remove_host: Option<HostMember>,
    #[serde(default, deserialize_with = "present")]
    set_metadata: Option<SetMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostMember {
    host: HostName,
}

/// A host name: 1 to 255 characters.
#[derive(Debug)]
struct HostName(String);

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(h) if !h.is_empty() && h.chars().count() <= 255 => Ok(HostName(h)),
            v => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

/// `set_metadata`: keys to values, `null` removing a key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMetadata {
    metadata: BTreeMap<String, Option<String>>,
}

impl SetMetadata {
    /// The changes to the metadata and the zone (when `availability_zone`
    /// is among the keys), every key and value checked.
    #[allow(clippy::type_complexity)]
    fn checked(self) -> ComputeResult<(Vec<(String, Option<String>)>, Option<Option<String>>)> {
        let mut changes = Vec::new();
        let mut zone = None;
        for (key, value) in self.metadata {
            if key.is_empty() || key.chars().count() > 255 {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid metadata key '{key}'."
                )));
            }
            if let Some(v) = value.as_ref().filter(|v| v.chars().count() > 255) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid metadata value for '{key}': {}.",
                    Value::String(v.clone())
                )));
            }
            if key == "availability_zone" {
                zone = Some(value);
            } else {
                changes.push((key, value));
            }
        }
        Ok((changes, zone))
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
    let obj = decode_body::<AggregateBody>(&body)?.aggregate;
    let name = obj
        .name
        .ok_or_else(|| BodyError::Missing("aggregate.name".into()))?
        .0;
    let mut aggregate = Aggregate {
        id: 0,
        uuid: uuid::Uuid::new_v4().to_string(),
        name,
        availability_zone: obj.availability_zone.flatten().map(|z| z.0),
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
    let obj = decode_body::<AggregateBody>(&body)?.aggregate;
    let name = obj.name.map(|n| n.0);
    let zone = obj.availability_zone.map(|z| z.map(|z| z.0));
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
    // `{action: argument}`, one member.
    let body: Map<String, Value> = decode_body(&body)?;
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
    let request: AggregateAction = decode(Value::Object(body))?;
    let this_host = super::hosts::hostname();
    let a = if let Some(set) = request.set_metadata.filter(|_| name == "set_metadata") {
        let (changes, zone) = set.checked()?;
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
        let add = name == "add_host";
        let member = if add {
            request.add_host
        } else {
            request.remove_host
        };
        let host = member
            .ok_or_else(|| BodyError::Missing(name.into()))?
            .host
            .0;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::compute::request::refused;

    fn fields(body: Value) -> ComputeResult<AggregateFields> {
        decode_body::<AggregateBody>(body.to_string().as_bytes()).map(|b| b.aggregate)
    }

    #[test]
    fn aggregate_bodies_tell_null_from_absent() {
        let f = fields(json!({"aggregate": {"name": "a", "availability_zone": null}}))
            .expect("accepted");
        assert_eq!(f.name.map(|n| n.0).as_deref(), Some("a"));
        assert!(matches!(f.availability_zone, Some(None)));
        let f = fields(json!({"aggregate": {"availability_zone": "z"}})).expect("accepted");
        assert!(f.name.is_none());
        assert_eq!(
            f.availability_zone.flatten().map(|z| z.0).as_deref(),
            Some("z")
        );
    }

    #[test]
    fn aggregate_bodies_refuse_with_novas_wording() {
        assert_eq!(
            refused(fields(json!({"aggregate": {"name": "  "}}))),
            "Invalid input for field/attribute name. Value: \"  \"."
        );
        assert_eq!(
            refused(fields(json!({"aggregate": {"name": "a", "x": 1}}))),
            "Invalid input for field/attribute aggregate. Additional properties are not allowed ('x' was unexpected)"
        );
        let action = |body: Value| -> ComputeResult<AggregateAction> { Ok(decode(body)?) };
        assert_eq!(
            refused(action(json!({"add_host": {"host": ""}}))),
            "Invalid input for field/attribute host. Value: \"\"."
        );
        let set =
            action(json!({"set_metadata": {"metadata": {"k": null, "availability_zone": "z"}}}))
                .expect("accepted")
                .set_metadata
                .expect("set_metadata");
        let (changes, zone) = set.checked().expect("valid");
        assert_eq!(changes, vec![("k".to_string(), None)]);
        assert_eq!(zone, Some(Some("z".to_string())));
        let long = "v".repeat(256);
        let set = action(json!({"set_metadata": {"metadata": {"k": long}}}))
            .expect("decoded")
            .set_metadata
            .expect("set_metadata");
        assert!(refused(set.checked()).starts_with("Invalid metadata value for 'k'"));
    }
}
