//! Quota sets (per project, with usage), quota classes and absolute limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::ops::{DEFAULT_QUOTAS, effective_limits};
use super::{
    VolumeError, VolumeResult, VolumeState, authorize, empty, own_target, project_of,
    project_target, query_map,
};
use crate::db::volume as store;
use crate::http::body;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<VolumeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route(
            "/v3/os-quota-sets/{project}",
            get(show).put(update).delete(delete),
        )
        .route("/v3/os-quota-sets/{project}/defaults", get(defaults))
        .route(
            "/v3/os-quota-class-sets/{class}",
            get(class_show).put(class_update),
        )
        .route("/v3/limits", get(limits))
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

/// The resources a quota set names: the fixed ones and the per-type ones.
fn known(limits: &BTreeMap<String, i64>, key: &str) -> bool {
    limits.contains_key(key)
}

fn check_project_id(project: &str) -> VolumeResult<()> {
    if project.is_empty() || project.len() > 64 {
        return Err(bad("Invalid project id."));
    }
    Ok(())
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    check_project_id(&project)?;
    authorize(
        &s,
        &ctx,
        "volume_extension:quotas:show",
        &project_target(&project),
    )?;
    let usage = query_map(q)
        .get("usage")
        .is_some_and(|u| matches!(u.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    let p = project.clone();
    let (limits, used) = s
        .read(move |conn| Ok((effective_limits(conn, &p)?, store::usage(conn, &p)?)))
        .await?;
    let mut out = Map::new();
    out.insert("id".into(), json!(project));
    for (k, limit) in &limits {
        if usage {
            out.insert(
                k.clone(),
                json!({"limit": limit, "in_use": used.get(k).copied().unwrap_or(0), "reserved": 0, "allocated": 0}),
            );
        } else {
            out.insert(k.clone(), json!(limit));
        }
    }
    Ok(json_response(StatusCode::OK, &json!({"quota_set": out})))
}

async fn defaults(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
) -> VolumeResult<Response> {
    check_project_id(&project)?;
    authorize(
        &s,
        &ctx,
        "volume_extension:quotas:show",
        &project_target(&project),
    )?;
    let limits = s
        .read(|conn| effective_limits(conn, "\u{0}no-project"))
        .await?;
    let mut out = Map::new();
    out.insert("id".into(), json!(project));
    for (k, v) in limits {
        out.insert(k, json!(v));
    }
    Ok(json_response(StatusCode::OK, &json!({"quota_set": out})))
}

/// The new limits in a `quota_set`/`quota_class_set` body: integers >= -1
/// for known resources.
fn parse_limits(
    obj: &Map<String, Value>,
    limits: &BTreeMap<String, i64>,
) -> VolumeResult<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for (k, v) in obj {
        if k == "id" || k == "tenant_id" {
            continue;
        }
        if !known(limits, k) {
            return Err(bad(format!("Bad key(s) in quota set: {k}")));
        }
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(t) => t.trim().parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "Invalid input received: Quota {k} must be an integer."
            ))
        })?;
        if !(-1..=i32::MAX as i64).contains(&n) {
            return Err(bad(format!(
                "Invalid input received: Quota limit {n} for {k} must be -1 or more."
            )));
        }
        out.push((k.clone(), n));
    }
    Ok(out)
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    check_project_id(&project)?;
    authorize(
        &s,
        &ctx,
        "volume_extension:quotas:update",
        &project_target(&project),
    )?;
    let mut req = body::parse_object(&bytes)?;
    let obj = body::take_object(&mut req, "quota_set")?;
    let p = project.clone();
    let limits = s
        .write(move |tx| {
            let current = effective_limits(tx, &p)?;
            let used = store::usage(tx, &p)?;
            for (k, n) in parse_limits(&obj, &current)? {
                let in_use = used.get(&k).copied().unwrap_or(0);
                if n >= 0 && n < in_use && !k.starts_with("per_volume") {
                    return Err(bad(format!(
                        "Invalid input received: Quota {k} limit must be equal or greater than existing resources. Current usage is {in_use} and the requested limit is {n}."
                    )));
                }
                store::set_quota(tx, "project", &p, &k, n)?;
            }
            effective_limits(tx, &p)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"quota_set": limits})))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
) -> VolumeResult<Response> {
    check_project_id(&project)?;
    authorize(
        &s,
        &ctx,
        "volume_extension:quotas:delete",
        &project_target(&project),
    )?;
    s.write(move |tx| Ok(store::delete_quotas(tx, "project", &project)?))
        .await?;
    Ok(empty(StatusCode::OK))
}

async fn class_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(class): Path<String>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:quota_classes:get",
        &own_target(&ctx),
    )?;
    if class.is_empty() || class.len() > 255 {
        return Err(bad("Invalid quota class name."));
    }
    let c = class.clone();
    let limits = s
        .read(move |conn| {
            let mut out = effective_limits(conn, "\u{0}no-project")?;
            out.extend(store::quotas(conn, "class", &c)?);
            Ok(out)
        })
        .await?;
    let mut out = Map::new();
    out.insert("id".into(), json!(class));
    for (k, v) in limits {
        out.insert(k, json!(v));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_class_set": out}),
    ))
}

async fn class_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(class): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:quota_classes:update",
        &own_target(&ctx),
    )?;
    if class.is_empty() || class.len() > 255 {
        return Err(bad("Invalid quota class name."));
    }
    let mut req = body::parse_object(&bytes)?;
    let obj = body::take_object(&mut req, "quota_class_set")?;
    let limits = s
        .write(move |tx| {
            let current = effective_limits(tx, "\u{0}no-project")?;
            for (k, n) in parse_limits(&obj, &current)? {
                store::set_quota(tx, "class", &class, &k, n)?;
            }
            let mut out = effective_limits(tx, "\u{0}no-project")?;
            out.extend(store::quotas(tx, "class", &class)?);
            Ok(out)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_class_set": limits}),
    ))
}

async fn limits(State(s): State<S>, Auth(ctx): Auth) -> VolumeResult<Response> {
    let project = project_of(&ctx)?;
    let p = project.clone();
    let (limits, used) = s
        .read(move |conn| Ok((effective_limits(conn, &p)?, store::usage(conn, &p)?)))
        .await?;
    let limit = |k: &str| limits.get(k).copied().unwrap_or(-1);
    let in_use = |k: &str| used.get(k).copied().unwrap_or(0);
    let _ = DEFAULT_QUOTAS;
    let absolute = json!({
        "maxTotalVolumes": limit("volumes"),
        "maxTotalSnapshots": limit("snapshots"),
        "maxTotalVolumeGigabytes": limit("gigabytes"),
        "maxTotalBackups": limit("backups"),
        "maxTotalBackupGigabytes": limit("backup_gigabytes"),
        "totalVolumesUsed": in_use("volumes"),
        "totalSnapshotsUsed": in_use("snapshots"),
        "totalGigabytesUsed": in_use("gigabytes"),
        "totalBackupsUsed": 0,
        "totalBackupGigabytesUsed": 0,
    });
    Ok(json_response(
        StatusCode::OK,
        &json!({"limits": {"rate": [], "absolute": absolute}}),
    ))
}
