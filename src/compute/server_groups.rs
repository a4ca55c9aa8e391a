//! Server groups: create (with the quota), list (own or all projects), show,
//! delete. Policies affinity and anti-affinity, soft-* from 2.15, the
//! single `policy` with `rules` from 2.64. Membership is filled in by
//! server create.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, no_additional, parse_body,
    project_of, query_map, take_object,
};
use crate::db::compute::{self as store, ServerGroup};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-server-groups", get(list).post(create))
        .route("/v2.1/os-server-groups/{id}", get(show).delete(delete))
}

fn view(g: &ServerGroup, mv: Mv) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(g.id));
    obj.insert("name".into(), json!(g.name));
    if mv.at_least(64) {
        obj.insert("policy".into(), json!(g.policy));
        let rules = if g.rules.is_object() {
            g.rules.clone()
        } else {
            json!({})
        };
        obj.insert("rules".into(), rules);
    } else {
        obj.insert("policies".into(), json!([g.policy]));
        obj.insert("metadata".into(), json!({}));
    }
    obj.insert("members".into(), json!(g.members));
    if mv.at_least(13) {
        obj.insert("project_id".into(), json!(g.project_id));
        obj.insert("user_id".into(), json!(g.user_id));
    }
    Value::Object(obj)
}

fn allowed_policies(mv: Mv) -> &'static [&'static str] {
    if mv.at_least(15) {
        &[
            "affinity",
            "anti-affinity",
            "soft-affinity",
            "soft-anti-affinity",
        ]
    } else {
        &["affinity", "anti-affinity"]
    }
}

fn bad(field: &str, value: &Value) -> ComputeError {
    ComputeError::BadRequest(format!(
        "Invalid input for field/attribute {field}. Value: {value}."
    ))
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    body: Bytes,
) -> ComputeResult<Response> {
    let project = project_of(&ctx)?;
    let mut body = parse_body(&body)?;
    let g = take_object(&mut body, "server_group")?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-server-groups:create",
        &super::owner_target(&project, &ctx.user_id),
    )?;
    let name = match g.get("name") {
        Some(Value::String(n)) if !n.is_empty() && n.chars().count() <= 255 && n.trim() == n => {
            n.clone()
        }
        Some(v) => return Err(bad("name", v)),
        None => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server_group. 'name' is a required property"
                    .into(),
            ));
        }
    };
    let policies = allowed_policies(mv);
    let (policy, rules) = if mv.at_least(64) {
        no_additional(&g, &["name", "policy", "rules"])?;
        let policy = match g.get("policy") {
            Some(Value::String(p)) if policies.contains(&p.as_str()) => p.clone(),
            Some(v) => return Err(bad("policy", v)),
            None => {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute server_group. 'policy' is a required property"
                        .into(),
                ));
            }
        };
        let rules = match g.get("rules") {
            None => json!({}),
            Some(Value::Object(r)) => {
                no_additional(r, &["max_server_per_host"])?;
                if let Some(v) = r.get("max_server_per_host") {
                    if policy != "anti-affinity" {
                        return Err(ComputeError::BadRequest(format!(
                            "Only anti-affinity policy supports \"max_server_per_host\" rule. Policy given: {policy}"
                        )));
                    }
                    let n = super::int_field(v, "max_server_per_host", 1, i32::MAX as i64)?;
                    json!({"max_server_per_host": n})
                } else {
                    json!({})
                }
            }
            Some(v) => return Err(bad("rules", v)),
        };
        (policy, rules)
    } else {
        no_additional(&g, &["name", "policies"])?;
        let policy = match g.get("policies") {
            Some(Value::Array(list)) if list.len() == 1 => match &list[0] {
                Value::String(p) if policies.contains(&p.as_str()) => p.clone(),
                v => return Err(bad("policies", v)),
            },
            Some(v) => return Err(bad("policies", v)),
            None => {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute server_group. 'policies' is a required property"
                        .into(),
                ));
            }
        };
        (policy, json!({}))
    };
    let group = ServerGroup {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        project_id: project.clone(),
        user_id: ctx.user_id.clone(),
        policy,
        rules,
        created_at: now_unix(),
        members: Vec::new(),
    };
    let stored = group.clone();
    s.write(move |tx| {
        let used = store::count_server_groups(tx, &project)?;
        super::quotas::enforce_limit(
            tx,
            &project,
            Some(&stored.user_id),
            "server_groups",
            used,
            1,
        )
        .map_err(|e| match e {
            ComputeError::QuotaExceeded(_) => {
                ComputeError::Forbidden("Quota exceeded, too many server groups.".into())
            }
            other => other,
        })?;
        Ok(store::insert_server_group(tx, &stored)?)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server_group": view(&group, mv)}),
    ))
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let own = project_of(&ctx)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-server-groups:index",
        &Target::project(own.clone()),
    )?;
    let all = q
        .get("all_projects")
        .is_some_and(|v| !["false", "0", "no", "off"].contains(&v.to_ascii_lowercase().as_str()))
        && super::allows(
            &s,
            &ctx,
            "os_compute_api:os-server-groups:index:all_projects",
            &Target::project(own.clone()),
        );
    let project = if all { None } else { Some(own) };
    let groups = s
        .read(move |conn| Ok(store::list_server_groups(conn, project.as_deref())?))
        .await?;
    let parse = |key: &str, min: usize| -> ComputeResult<Option<usize>> {
        match q.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(ComputeError::BadRequest(format!(
                    "Invalid input for query parameters {key}. Value: {v}."
                ))),
            },
        }
    };
    let offset = parse("offset", 0)?.unwrap_or(0);
    let limit = parse("limit", 1)?;
    let views: Vec<Value> = groups
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|g| view(g, mv))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"server_groups": views}),
    ))
}

/// The group if the caller's context may read it (admin contexts read
/// every project's, as Nova's query does), then `rule` on its project.
async fn get_owned(s: &S, ctx: &AuthContext, id: String, rule: &str) -> ComputeResult<ServerGroup> {
    let wanted = id.clone();
    let group = s
        .read(move |conn| Ok(store::get_server_group(conn, &wanted)?))
        .await?;
    let admin = super::is_admin_context(s, ctx);
    match group {
        Some(g) if admin || ctx.project_id() == Some(g.project_id.as_str()) => {
            authorize(s, ctx, rule, &Target::project(g.project_id.clone()))?;
            Ok(g)
        }
        _ => Err(ComputeError::NotFound(format!(
            "Instance group {id} could not be found."
        ))),
    }
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let g = get_owned(&s, &ctx, id, "os_compute_api:os-server-groups:show").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server_group": view(&g, mv)}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let g = get_owned(&s, &ctx, id, "os_compute_api:os-server-groups:delete").await?;
    s.write(move |tx| Ok(store::delete_server_group(tx, &g.id)?))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
