//! Quota sets (per project, with usage), quota classes and absolute limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ops::{DEFAULT_QUOTAS, effective_limits};
use super::requests;
use super::{
    VolumeError, VolumeResult, VolumeState, authorize, empty, own_target, project_of,
    project_target, query_map,
};
use crate::db::volume as store;
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

/// A quota value as given: a JSON integer or a string of digits (around
/// spaces) reads as its number, anything else as `None`, refused once the
/// resource it is for is known to exist (Cinder names an unknown resource
/// first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuotaValue(Option<i64>);

impl<'de> Deserialize<'de> for QuotaValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(QuotaValue(match Value::deserialize(d)? {
            Value::Number(n) => n.as_i64(),
            Value::String(t) => t.trim().parse::<i64>().ok(),
            _ => None,
        }))
    }
}

/// A `quota_set` or `quota_class_set`: resource names (the fixed ones and
/// the per-type `volumes_<type>` ones, so an open map) to limits; `id` and
/// `tenant_id` are taken and ignored.
type QuotaBody = BTreeMap<String, QuotaValue>;

/// The new limits in a `quota_set`/`quota_class_set` body: integers >= -1
/// for known resources.
fn parse_limits(
    body: &QuotaBody,
    limits: &BTreeMap<String, i64>,
) -> VolumeResult<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for (k, QuotaValue(n)) in body {
        if k == "id" || k == "tenant_id" {
            continue;
        }
        if !known(limits, k) {
            return Err(bad(format!("Bad key(s) in quota set: {k}")));
        }
        let n = n.ok_or_else(|| {
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
    let obj = requests::take(&bytes, "quota_set")?;
    let obj: QuotaBody = requests::member("quota_set", obj)?;
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
    let obj = requests::take(&bytes, "quota_class_set")?;
    let obj: QuotaBody = requests::member("quota_class_set", obj)?;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::volume::requests::refused;

    fn limits_of(body: Value) -> VolumeResult<Vec<(String, i64)>> {
        let current: BTreeMap<String, i64> =
            [("volumes".to_string(), 10), ("gigabytes".into(), 1000)].into();
        let Value::Object(obj) = body else {
            panic!("an object")
        };
        let body: QuotaBody = requests::member("quota_set", obj)?;
        parse_limits(&body, &current)
    }

    #[test]
    fn quota_values_are_integers_or_digit_strings_from_minus_one() {
        assert_eq!(
            limits_of(json!({"volumes": 5, "gigabytes": " 20 ", "id": "p", "tenant_id": 1}))
                .expect("accepted"),
            vec![("gigabytes".to_string(), 20), ("volumes".to_string(), 5)]
        );
        assert_eq!(
            limits_of(json!({"volumes": "-1"})).expect("unlimited"),
            vec![("volumes".to_string(), -1)]
        );
        for refused_value in [
            json!(1.5),
            json!("1.5"),
            json!(true),
            json!(null),
            json!("x"),
            json!([1]),
        ] {
            assert_eq!(
                refused(limits_of(json!({ "volumes": refused_value }))),
                "Invalid input received: Quota volumes must be an integer."
            );
        }
        assert_eq!(
            refused(limits_of(json!({"volumes": -2}))),
            "Invalid input received: Quota limit -2 for volumes must be -1 or more."
        );
        assert_eq!(
            refused(limits_of(json!({"nonsense": "x"}))),
            "Bad key(s) in quota set: nonsense"
        );
    }
}
