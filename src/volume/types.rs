//! Volume types (the default `__DEFAULT__`, extra specs, private types and
//! their access list) and QoS specs with their type associations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::requests::{self, StrictBool, given, text};
use super::views;
use super::{
    VolumeError, VolumeResult, VolumeState, authorize, empty, is_admin, now_string, own_target,
    query_map,
};
use crate::db::volume::{self as store, QosSpecs, VolumeType};
use crate::http::body::{self, BodyError};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

/// Most volume types and QoS specs one cloud holds.
const MAX_TYPES: usize = 1000;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/types", get(list).post(create))
        .route("/v3/types/{id}", get(show).put(update).delete(delete))
        .route("/v3/types/{id}/action", post(access_action))
        .route("/v3/types/{id}/os-volume-type-access", get(access_list))
        .route(
            "/v3/types/{id}/extra_specs",
            get(specs_list).post(specs_create),
        )
        .route(
            "/v3/types/{id}/extra_specs/{key}",
            get(spec_show).put(spec_update).delete(spec_delete),
        )
        .route("/v3/qos-specs", get(qos_list).post(qos_create))
        .route(
            "/v3/qos-specs/{id}",
            get(qos_show).put(qos_update).delete(qos_delete),
        )
        .route("/v3/qos-specs/{id}/delete_keys", put(qos_delete_keys))
        .route("/v3/qos-specs/{id}/associations", get(qos_associations))
        .route("/v3/qos-specs/{id}/associate", get(qos_associate))
        .route("/v3/qos-specs/{id}/disassociate", get(qos_disassociate))
        .route(
            "/v3/qos-specs/{id}/disassociate_all",
            get(qos_disassociate_all),
        )
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

fn type_not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("Volume type {id} could not be found."))
}

/// A type the caller may see: public, or private with access (admins see all).
async fn load_type(s: &S, ctx: &AuthContext, id: &str) -> VolumeResult<VolumeType> {
    let wanted = id.to_string();
    let admin = is_admin(s, ctx);
    let project = ctx.project_id().map(str::to_string);
    s.read(move |conn| {
        let t = if wanted == "default" {
            store::get_type(conn, store::DEFAULT_TYPE_ID)?
        } else {
            match store::get_type(conn, &wanted)? {
                Some(t) => Some(t),
                None => store::get_type_by_name(conn, &wanted)?,
            }
        };
        let Some(t) = t else {
            return Err(type_not_found(&wanted));
        };
        if t.is_public || admin {
            return Ok(t);
        }
        let access = store::type_access(conn, &t.id)?;
        if project.is_some_and(|p| access.contains(&p)) {
            Ok(t)
        } else {
            Err(type_not_found(&wanted))
        }
    })
    .await
}

fn render(s: &S, ctx: &AuthContext, t: &VolumeType) -> Value {
    render_with(s, ctx, t, true)
}

/// Create answers without `qos_specs_id`, as Cinder.
fn render_with(s: &S, ctx: &AuthContext, t: &VolumeType, with_qos: bool) -> Value {
    let target = own_target(ctx);
    let specs = super::allows(s, ctx, "volume_extension:access_types_extra_specs", &target);
    let qos = with_qos
        && super::allows(
            s,
            ctx,
            "volume_extension:access_types_qos_specs_id",
            &target,
        );
    serde_json::to_value(views::volume_type(t, specs, qos)).unwrap_or(Value::Null)
}

fn truthy(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "t" | "y" | "on" => Some(true),
        "0" | "false" | "no" | "f" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// `POST /v3/types`'s `volume_type` (other members are ignored, as they
/// always were here).
#[derive(Debug, Deserialize)]
struct CreateType {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "os-volume-type-access:is_public")]
    is_public: Option<StrictBool>,
    #[serde(default)]
    extra_specs: Option<BTreeMap<String, String>>,
}

/// `PUT /v3/types/{id}`'s `volume_type`: a `null` name or visibility is
/// left as it is, a `null` description clears it.
#[derive(Debug, Deserialize)]
struct UpdateType {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "given")]
    description: Option<Option<String>>,
    #[serde(default)]
    is_public: Option<StrictBool>,
}

/// `POST /v3/types/{id}/action`: one of the two access changes.
#[derive(Debug, Deserialize)]
struct AccessAction {
    #[serde(default, rename = "addProjectAccess")]
    add: Option<ProjectArg>,
    #[serde(default, rename = "removeProjectAccess")]
    remove: Option<ProjectArg>,
}

#[derive(Debug, Deserialize)]
struct ProjectArg {
    #[serde(default)]
    project: Option<String>,
}

/// `POST /v3/types/{id}/extra_specs`.
#[derive(Debug, Deserialize)]
struct SpecsBody {
    #[serde(default)]
    extra_specs: Option<BTreeMap<String, String>>,
}

/// `PUT /v3/qos-specs/{id}/delete_keys`.
#[derive(Debug, Deserialize)]
struct DeleteKeys {
    #[serde(default)]
    keys: Option<Vec<String>>,
}

/// A `qos_specs` member: Cinder's schema leaves it open (`name`,
/// `consumer` and the specs themselves, all strings), so it is read as a
/// map of strings and the two named members taken out of it; `null` reads
/// as absent for `consumer` and is refused for a spec.
type QosBody = BTreeMap<String, Option<String>>;

/// The specs left in a [`QosBody`] once `name` and `consumer` are taken.
fn qos_specs(body: QosBody) -> VolumeResult<BTreeMap<String, String>> {
    let mut specs = BTreeMap::new();
    for (k, v) in body {
        let v = v.ok_or_else(|| {
            bad(format!(
                "Invalid input for field/attribute metadata. Value of {k} is not a string."
            ))
        })?;
        specs.insert(k, v);
    }
    requests::metadata(specs)
}

/// A QoS consumer, when one of Cinder's three.
fn qos_consumer(c: &str) -> bool {
    ["front-end", "back-end", "both"].contains(&c)
}

// ------------------------------------------------------------------ types

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    authorize(&s, &ctx, "volume_extension:type_get_all", &own_target(&ctx))?;
    let q = query_map(q);
    let admin = is_admin(&s, &ctx);
    let project = ctx.project_id().map(str::to_string);
    // Admins see every type unless they filter; others see public ones and
    // private ones shared with their project.
    let want_public = match q.get("is_public") {
        Some(v) if v.eq_ignore_ascii_case("none") => None,
        Some(v) => Some(truthy(v).unwrap_or(true)),
        None if admin => None,
        None => Some(true),
    };
    let types = s
        .read(move |conn| {
            let mut out = Vec::new();
            for t in store::list_types(conn)? {
                let access = if t.is_public {
                    true
                } else {
                    admin
                        || project.as_ref().is_some_and(|p| {
                            store::type_access(conn, &t.id).is_ok_and(|a| a.contains(p))
                        })
                };
                let matches = match want_public {
                    None => access,
                    Some(true) => t.is_public || (!admin && access),
                    Some(false) => !t.is_public && access,
                };
                if matches {
                    out.push(t);
                }
            }
            Ok(out)
        })
        .await?;
    let mut types = types;
    if let Some(extra) = q.get("extra_specs") {
        let wanted = parse_dict(extra)?;
        types.retain(|t| wanted.iter().all(|(k, v)| t.extra_specs.get(k) == Some(v)));
    }
    let (page, _) = super::volume_list::page(types, &q, |t| t.id.as_str(), "types")?;
    let rendered: Vec<Value> = page.iter().map(|t| render(&s, &ctx, t)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume_types": rendered}),
    ))
}

fn parse_dict(text: &str) -> VolumeResult<BTreeMap<String, String>> {
    match serde_json::from_str::<Value>(&text.replace('\'', "\"")) {
        Ok(Value::Object(map)) => Ok(map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect()),
        _ => Err(bad(format!(
            "Invalid input received: Invalid filter value {text}."
        ))),
    }
}

async fn create(State(s): State<S>, Auth(ctx): Auth, bytes: Bytes) -> VolumeResult<Response> {
    authorize(&s, &ctx, "volume_extension:type_create", &own_target(&ctx))?;
    let obj = requests::take(&bytes, "volume_type")?;
    let req: CreateType = requests::member("volume_type", obj)?;
    let name = req.name.ok_or_else(|| BodyError::Missing("name".into()))?;
    let name = body::check_name(&name, "name")?.trim().to_string();
    let description = text("description", req.description, 255)?;
    let is_public = req.is_public.is_none_or(|StrictBool(b)| b);
    let extra_specs = requests::metadata(req.extra_specs.unwrap_or_default())?;
    let t = VolumeType {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        description,
        is_public,
        extra_specs,
        qos_specs_id: None,
        created_at: now_string(),
    };
    let stored = t.clone();
    s.write(move |tx| {
        if store::get_type_by_name(tx, &stored.name)?.is_some() {
            return Err(VolumeError::Conflict(format!(
                "Volume Type {} already exists.",
                stored.name
            )));
        }
        if store::list_types(tx)?.len() >= MAX_TYPES {
            return Err(bad("Invalid input received: too many volume types."));
        }
        store::put_type(tx, &stored)?;
        Ok(())
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume_type": render_with(&s, &ctx, &t, false)}),
    ))
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(&s, &ctx, "volume_extension:type_get", &own_target(&ctx))?;
    let t = load_type(&s, &ctx, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume_type": render(&s, &ctx, &t)}),
    ))
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    authorize(&s, &ctx, "volume_extension:type_update", &own_target(&ctx))?;
    let obj = requests::take(&bytes, "volume_type")?;
    let t = load_type(&s, &ctx, &id).await?;
    let req: UpdateType = requests::member("volume_type", obj)?;
    let name = req
        .name
        .map(|n| body::check_name(&n, "name").map(|n| n.trim().to_string()))
        .transpose()?;
    let description = req
        .description
        .map(|d| text("description", d, 255))
        .transpose()?;
    let is_public = req.is_public.map(|StrictBool(b)| b);
    if name.is_none() && description.is_none() && is_public.is_none() {
        return Err(bad(
            "Specify volume type name, description, is_public or a combination thereof.",
        ));
    }
    if t.id == store::DEFAULT_TYPE_ID && name.as_deref().is_some_and(|n| n != t.name) {
        return Err(bad("The default volume type cannot be renamed."));
    }
    let tid = t.id.clone();
    let updated = s
        .write(move |tx| {
            let mut t = store::get_type(tx, &tid)?.ok_or_else(|| type_not_found(&tid))?;
            if let Some(n) = name {
                if n != t.name && store::get_type_by_name(tx, &n)?.is_some() {
                    return Err(VolumeError::Conflict(format!(
                        "Volume Type {n} already exists."
                    )));
                }
                t.name = n;
            }
            if let Some(d) = description {
                t.description = d;
            }
            if let Some(p) = is_public {
                t.is_public = p;
            }
            store::put_type(tx, &t)?;
            Ok(t)
        })
        .await?;
    // Cinder's update answers with the plain view: no access flag, no qos_specs_id.
    let mut view = render_with(&s, &ctx, &updated, false);
    if let Value::Object(map) = &mut view {
        map.remove("os-volume-type-access:is_public");
    }
    Ok(json_response(StatusCode::OK, &json!({"volume_type": view})))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(&s, &ctx, "volume_extension:type_delete", &own_target(&ctx))?;
    let t = load_type(&s, &ctx, &id).await?;
    if t.id == store::DEFAULT_TYPE_ID {
        return Err(bad("Default volume type can not be deleted."));
    }
    let tid = t.id.clone();
    s.write(move |tx| {
        if store::type_in_use(tx, &tid)? {
            return Err(bad(format!(
                "Target volume type is still in use. Volume Type {tid} deletion is not allowed with volumes present with the type."
            )));
        }
        store::delete_type(tx, &tid)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ------------------------------------------------------------ type access

async fn access_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:volume_type_access:get_all_for_type",
        &own_target(&ctx),
    )?;
    let t = load_type(&s, &ctx, &id).await?;
    if t.is_public {
        return Err(VolumeError::NotFound(
            "Access list not available for public volume types.".into(),
        ));
    }
    let tid = t.id.clone();
    let projects = s
        .read(move |conn| Ok(store::type_access(conn, &tid)?))
        .await?;
    let list: Vec<Value> = projects
        .iter()
        .map(|p| json!({"volume_type_id": t.id, "project_id": p}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume_type_access": list}),
    ))
}

async fn access_action(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req: AccessAction = requests::whole(&bytes)?;
    let (add, arg) = match (req.add, req.remove) {
        (Some(arg), _) => (true, arg),
        (None, Some(arg)) => (false, arg),
        (None, None) => return Err(bad("Invalid request body")),
    };
    let rule = if add {
        "volume_extension:volume_type_access:addProjectAccess"
    } else {
        "volume_extension:volume_type_access:removeProjectAccess"
    };
    authorize(&s, &ctx, rule, &own_target(&ctx))?;
    let project = arg
        .project
        .filter(|p| !p.is_empty() && p.len() <= 64)
        .ok_or_else(|| bad("Missing required element 'project' in request body."))?;
    let t = load_type(&s, &ctx, &id).await?;
    if t.is_public {
        return Err(bad("Invalid volume type: Type access modification is not applicable to public volume type.".to_string()));
    }
    let tid = t.id.clone();
    s.write(move |tx| {
        if add {
            if !store::add_type_access(tx, &tid, &project)? {
                return Err(VolumeError::Conflict(format!(
                    "Volume type access for {tid} / {project} combination already exists."
                )));
            }
        } else if !store::remove_type_access(tx, &tid, &project)? {
            return Err(VolumeError::NotFound(format!(
                "Volume type access not found for {tid} / {project} combination."
            )));
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ------------------------------------------------------------ extra specs

async fn specs_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:types_extra_specs:index",
        &own_target(&ctx),
    )?;
    let t = load_type(&s, &ctx, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"extra_specs": t.extra_specs}),
    ))
}

async fn write_specs(
    s: &S,
    id: String,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> VolumeResult<()> + Send + 'static,
) -> VolumeResult<()> {
    s.write(move |tx| {
        let mut t = store::get_type(tx, &id)?.ok_or_else(|| type_not_found(&id))?;
        change(&mut t.extra_specs)?;
        if t.extra_specs.len() > 128 {
            return Err(bad("Invalid input received: at most 128 extra specs."));
        }
        store::put_type(tx, &t)?;
        Ok(())
    })
    .await
}

async fn specs_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:types_extra_specs:create",
        &own_target(&ctx),
    )?;
    let req: SpecsBody = requests::whole(&bytes)?;
    let specs = requests::metadata(
        req.extra_specs
            .ok_or_else(|| bad("Missing required element 'extra_specs' in request body."))?,
    )?;
    let t = load_type(&s, &ctx, &id).await?;
    let echo = specs.clone();
    write_specs(&s, t.id, move |m| {
        m.extend(specs);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"extra_specs": echo})))
}

async fn spec_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:types_extra_specs:show",
        &own_target(&ctx),
    )?;
    let t = load_type(&s, &ctx, &id).await?;
    let value = t.extra_specs.get(&key).ok_or_else(|| {
        VolumeError::NotFound(format!(
            "Volume Type {id} has no extra specs with key {key}."
        ))
    })?;
    Ok(json_response(StatusCode::OK, &json!({key: value})))
}

async fn spec_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:types_extra_specs:update",
        &own_target(&ctx),
    )?;
    // The body is the one spec itself: `{key: value}`.
    let spec = requests::metadata(requests::whole::<BTreeMap<String, String>>(&bytes)?)?;
    if spec.len() != 1 || !spec.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let t = load_type(&s, &ctx, &id).await?;
    let echo = spec.clone();
    write_specs(&s, t.id, move |m| {
        m.extend(spec);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &echo))
}

async fn spec_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:types_extra_specs:delete",
        &own_target(&ctx),
    )?;
    let t = load_type(&s, &ctx, &id).await?;
    let tid = t.id.clone();
    write_specs(&s, t.id, move |m| {
        m.remove(&key).map(|_| ()).ok_or_else(|| {
            VolumeError::NotFound(format!(
                "Volume Type {tid} has no extra specs with key {key}."
            ))
        })
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// -------------------------------------------------------------- QoS specs

fn qos_not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("QoS Specs {id} could not be found."))
}

async fn load_qos(s: &S, id: &str) -> VolumeResult<QosSpecs> {
    let wanted = id.to_string();
    s.read(move |conn| store::get_qos(conn, &wanted)?.ok_or_else(|| qos_not_found(&wanted)))
        .await
}

fn qos_links(s: &S, ctx: &AuthContext, id: &str) -> Value {
    s.links(ctx.project_id().unwrap_or_default(), "qos-specs", id)
}

async fn qos_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:get_all",
        &own_target(&ctx),
    )?;
    let q = query_map(q);
    let all = s.read(|conn| Ok(store::list_qos(conn)?)).await?;
    let (page, _) = super::volume_list::page(all, &q, |x| x.id.as_str(), "qos_specs")?;
    let list: Vec<_> = page.iter().map(views::qos).collect();
    Ok(json_response(StatusCode::OK, &json!({"qos_specs": list})))
}

async fn qos_create(State(s): State<S>, Auth(ctx): Auth, bytes: Bytes) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:create",
        &own_target(&ctx),
    )?;
    let obj = requests::take(&bytes, "qos_specs")?;
    let mut req: QosBody = requests::member("qos_specs", obj)?;
    let name = req
        .remove("name")
        .flatten()
        .ok_or_else(|| BodyError::Missing("name".into()))?;
    let name = body::check_name(&name, "name")?.trim().to_string();
    let consumer = match req.remove("consumer").flatten() {
        None => "back-end".to_string(),
        Some(c) if qos_consumer(&c) => c,
        Some(other) => {
            return Err(bad(format!(
                "Invalid input received: Value {} is not a valid QoS consumer: front-end, back-end or both.",
                Value::String(other)
            )));
        }
    };
    let specs = qos_specs(req)?;
    let qos = QosSpecs {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        consumer,
        specs,
        created_at: now_string(),
    };
    let stored = qos.clone();
    s.write(move |tx| {
        if store::list_qos(tx)?.iter().any(|x| x.name == stored.name) {
            return Err(VolumeError::Conflict(format!(
                "QoS Specs {} already exists.",
                stored.name
            )));
        }
        if store::list_qos(tx)?.len() >= MAX_TYPES {
            return Err(bad("Invalid input received: too many QoS specs."));
        }
        store::put_qos(tx, &stored)?;
        Ok(())
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"qos_specs": views::qos(&qos), "links": qos_links(&s, &ctx, &qos.id)}),
    ))
}

async fn qos_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:get",
        &own_target(&ctx),
    )?;
    let qos = load_qos(&s, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"qos_specs": views::qos(&qos), "links": qos_links(&s, &ctx, &qos.id)}),
    ))
}

async fn qos_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:update",
        &own_target(&ctx),
    )?;
    let obj = requests::take(&bytes, "qos_specs")?;
    let mut req: QosBody = requests::member("qos_specs", obj)?;
    let consumer = match req.remove("consumer").flatten() {
        None => None,
        Some(c) if qos_consumer(&c) => Some(c),
        Some(other) => {
            return Err(bad(format!(
                "Invalid input received: Value {} is not a valid QoS consumer.",
                Value::String(other)
            )));
        }
    };
    let specs = qos_specs(req)?;
    let qos = load_qos(&s, &id).await?;
    let mut echo = specs.clone();
    if let Some(c) = &consumer {
        echo.insert("consumer".into(), c.clone());
    }
    let qid = qos.id.clone();
    s.write(move |tx| {
        let mut q = store::get_qos(tx, &qid)?.ok_or_else(|| qos_not_found(&qid))?;
        q.specs.extend(specs);
        if let Some(c) = consumer {
            q.consumer = c;
        }
        store::put_qos(tx, &q)?;
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"qos_specs": echo})))
}

async fn qos_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:delete",
        &own_target(&ctx),
    )?;
    let force = query_map(q)
        .get("force")
        .and_then(|f| truthy(f))
        .unwrap_or(false);
    let qos = load_qos(&s, &id).await?;
    let qid = qos.id.clone();
    s.write(move |tx| {
        let users: Vec<VolumeType> = store::list_types(tx)?
            .into_iter()
            .filter(|t| t.qos_specs_id.as_deref() == Some(qid.as_str()))
            .collect();
        if !users.is_empty() && !force {
            return Err(bad(format!(
                "QoS Specs {qid} is still associated with entities."
            )));
        }
        for mut t in users {
            t.qos_specs_id = None;
            store::put_type(tx, &t)?;
        }
        store::delete_qos(tx, &qid)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn qos_delete_keys(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:update",
        &own_target(&ctx),
    )?;
    let req: DeleteKeys = requests::whole(&bytes)?;
    let keys = req
        .keys
        .ok_or_else(|| bad("Missing required element 'keys' in request body."))?;
    let qos = load_qos(&s, &id).await?;
    let qid = qos.id.clone();
    s.write(move |tx| {
        let mut q = store::get_qos(tx, &qid)?.ok_or_else(|| qos_not_found(&qid))?;
        for k in &keys {
            if q.specs.remove(k).is_none() {
                return Err(VolumeError::NotFound(format!(
                    "QoS spec {k} not found in QoS specs {qid}."
                )));
            }
        }
        store::put_qos(tx, &q)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn qos_associations(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:get",
        &own_target(&ctx),
    )?;
    let qos = load_qos(&s, &id).await?;
    let types = s.read(|conn| Ok(store::list_types(conn)?)).await?;
    let list: Vec<Value> = types
        .iter()
        .filter(|t| t.qos_specs_id.as_deref() == Some(qos.id.as_str()))
        .map(|t| json!({"association_type": "volume_type", "name": t.name, "id": t.id}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"qos_associations": list}),
    ))
}

async fn set_association(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    q: HashMap<String, String>,
    associate: bool,
) -> VolumeResult<Response> {
    authorize(
        s,
        ctx,
        "volume_extension:qos_specs_manage:update",
        &own_target(ctx),
    )?;
    let type_id = q
        .get("vol_type_id")
        .cloned()
        .ok_or_else(|| bad("Volume Type id must not be None."))?;
    let qos = load_qos(s, id).await?;
    s.write(move |tx| {
        let mut t = store::get_type(tx, &type_id)?.ok_or_else(|| type_not_found(&type_id))?;
        if associate {
            if t.qos_specs_id.is_some() && t.qos_specs_id.as_deref() != Some(qos.id.as_str()) {
                return Err(bad(format!(
                    "Type {type_id} is already associated with another qos specs"
                )));
            }
            t.qos_specs_id = Some(qos.id.clone());
        } else if t.qos_specs_id.as_deref() == Some(qos.id.as_str()) {
            t.qos_specs_id = None;
        }
        store::put_type(tx, &t)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn qos_associate(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    set_association(&s, &ctx, &id, query_map(q), true).await
}

async fn qos_disassociate(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    set_association(&s, &ctx, &id, query_map(q), false).await
}

async fn qos_disassociate_all(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:qos_specs_manage:update",
        &own_target(&ctx),
    )?;
    let qos = load_qos(&s, &id).await?;
    s.write(move |tx| {
        for mut t in store::list_types(tx)? {
            if t.qos_specs_id.as_deref() == Some(qos.id.as_str()) {
                t.qos_specs_id = None;
                store::put_type(tx, &t)?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::volume::requests::refused;

    #[test]
    fn type_and_qos_bodies() {
        let Value::Object(obj) =
            json!({"name": "t", "os-volume-type-access:is_public": "f", "other": 1})
        else {
            panic!("an object")
        };
        let req: CreateType = requests::member("volume_type", obj).expect("accepted");
        assert_eq!(req.is_public, Some(StrictBool(false)));
        let Value::Object(obj) = json!({"is_public": "perhaps"}) else {
            panic!("an object")
        };
        assert_eq!(
            refused(requests::member::<UpdateType>("volume_type", obj)),
            "Invalid input for field/attribute is_public. Value: perhaps. is not a boolean"
        );
        let Value::Object(obj) = json!({"name": "q", "consumer": null, "read_iops_sec": "100"})
        else {
            panic!("an object")
        };
        let mut qos: QosBody = requests::member("qos_specs", obj).expect("accepted");
        assert_eq!(qos.remove("consumer"), Some(None));
        qos.remove("name");
        assert_eq!(
            qos_specs(qos).expect("specs"),
            [("read_iops_sec".to_string(), "100".to_string())].into()
        );
        let spare: QosBody = [("k".to_string(), None)].into();
        assert!(refused(qos_specs(spare)).contains("Value of k is not a string"));
        let req: AccessAction =
            serde_json::from_value(json!({"removeProjectAccess": {"project": "p"}}))
                .expect("accepted");
        assert!(
            req.add.is_none()
                && req
                    .remove
                    .is_some_and(|r| r.project.as_deref() == Some("p"))
        );
    }
}
