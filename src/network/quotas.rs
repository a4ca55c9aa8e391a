//! Quotas (`/v2.0/quotas`): Neutron's default limits per project, the
//! operator's overrides, and the check every create makes inside its
//! transaction (so two racing creates cannot both pass).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{Caller, NetResult, NetworkError, NetworkState, body_member, reply};
use crate::db::network as db;
use crate::identity::Auth;
use crate::policy::Target;

/// Neutron's default quotas: (resource, stored kind, limit; -1 unlimited).
pub const DEFAULTS: &[(&str, &str, i64)] = &[
    ("network", "network", 100),
    ("subnet", "subnet", 100),
    ("port", "port", 500),
    ("router", "router", 10),
    ("floatingip", "floatingip", 50),
    ("security_group", "security_group", 10),
    ("security_group_rule", "security_group_rule", 100),
    ("subnetpool", "subnetpool", -1),
    ("rbac_policy", "rbac_policy", 10),
];

fn limits(conn: &Connection, project: &str) -> NetResult<Vec<(&'static str, &'static str, i64)>> {
    let overrides = db::quotas(conn, project)?;
    Ok(DEFAULTS
        .iter()
        .map(|(r, k, d)| {
            let limit = overrides
                .iter()
                .find(|(name, _)| name == r)
                .map(|(_, l)| *l)
                .unwrap_or(*d);
            (*r, *k, limit)
        })
        .collect())
}

/// Refuses to go over a project's quota of `resource` by `adding` more.
pub fn check(conn: &Connection, project: &str, resource: &str, adding: i64) -> NetResult<()> {
    let Some((_, kind, limit)) = limits(conn, project)?
        .into_iter()
        .find(|(r, _, _)| *r == resource)
    else {
        return Ok(());
    };
    if limit < 0 {
        return Ok(());
    }
    let used = db::count_for_project(conn, kind, project)?;
    if used + adding > limit {
        return Err(NetworkError::conflict(
            "OverQuota",
            format!("Quota exceeded for resources: ['{resource}']."),
        ));
    }
    Ok(())
}

/// How many more of `resource` the project may make (None: unlimited).
pub fn headroom(conn: &Connection, project: &str, resource: &str) -> NetResult<Option<i64>> {
    let Some((_, kind, limit)) = limits(conn, project)?
        .into_iter()
        .find(|(r, _, _)| *r == resource)
    else {
        return Ok(None);
    };
    if limit < 0 {
        return Ok(None);
    }
    let used = db::count_for_project(conn, kind, project)?;
    Ok(Some((limit - used).max(0)))
}

fn quota_doc(conn: &Connection, project: &str) -> NetResult<Value> {
    let mut map = Map::new();
    for (r, _, l) in limits(conn, project)? {
        map.insert(r.into(), json!(l));
    }
    Ok(Value::Object(map))
}

fn read_target(caller: &Caller, project: &str) -> NetResult<()> {
    caller.enforce("get_quota", &Target::project(project.to_string()))
}

pub async fn list(State(s): State<Arc<NetworkState>>, Auth(ctx): Auth) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    if !caller.admin {
        return Err(NetworkError::Forbidden(
            "rule:get_quota is disallowed by policy".into(),
        ));
    }
    let list = s
        .read(move |conn| {
            let mut out = Vec::new();
            for p in db::quota_projects(conn)? {
                let mut doc = quota_doc(conn, &p)?;
                if let Value::Object(m) = &mut doc {
                    m.insert("project_id".into(), json!(p));
                    m.insert("tenant_id".into(), json!(p));
                }
                out.push(doc);
            }
            Ok(out)
        })
        .await?;
    Ok(reply(StatusCode::OK, &json!({ "quotas": list })))
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    read_target(&caller, &project)?;
    let doc = s.read(move |conn| quota_doc(conn, &project)).await?;
    Ok(reply(StatusCode::OK, &json!({ "quota": doc })))
}

pub async fn show_defaults(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    read_target(&caller, &project)?;
    let mut map = Map::new();
    for (r, _, l) in DEFAULTS {
        map.insert((*r).into(), json!(l));
    }
    Ok(reply(StatusCode::OK, &json!({ "quota": map })))
}

pub async fn details(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    read_target(&caller, &project)?;
    let doc = s
        .read(move |conn| {
            let mut map = Map::new();
            for (r, k, l) in limits(conn, &project)? {
                let used = db::count_for_project(conn, k, &project)?;
                map.insert(r.into(), json!({"limit": l, "used": used, "reserved": 0}));
            }
            Ok(Value::Object(map))
        })
        .await?;
    Ok(reply(StatusCode::OK, &json!({ "quota": doc })))
}

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    caller.enforce("update_quota", &Target::project(project.clone()))?;
    let body = body_member(&bytes, "quota")?;
    let mut changes = Vec::new();
    // `check_limit` (the quota-check-limit extension openstackclient sends):
    // refuse a limit below what the project already uses.
    let check_limit = super::attrs::boolean(&body, "check_limit")?.unwrap_or(false);
    for (key, value) in &body {
        if key == "check_limit" || key == "force" {
            continue;
        }
        if !DEFAULTS.iter().any(|(r, _, _)| r == key) {
            return Err(NetworkError::bad(format!(
                "Unrecognized attribute(s) '{key}'"
            )));
        }
        let n = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(t) => t.parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= -1 && n <= i64::from(i32::MAX) => changes.push((key.clone(), n)),
            _ => {
                return Err(NetworkError::invalid(
                    key,
                    format!("'{value}' is not an integer"),
                ));
            }
        }
    }
    let doc = s
        .write(move |tx| {
            for (r, n) in &changes {
                if check_limit
                    && *n >= 0
                    && let Some((_, kind, _)) = DEFAULTS.iter().find(|(name, _, _)| name == r)
                {
                    let used = db::count_for_project(tx, kind, &project)?;
                    if used > *n {
                        return Err(NetworkError::bad(format!(
                            "Quota limit {n} for {r} must be greater than or equal to already used and reserved {used}."
                        )));
                    }
                }
                db::set_quota(tx, &project, r, *n)?;
            }
            quota_doc(tx, &project)
        })
        .await?;
    Ok(reply(StatusCode::OK, &json!({ "quota": doc })))
}

pub async fn reset(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    caller.enforce("delete_quota", &Target::project(project.clone()))?;
    s.write(move |tx| Ok(db::delete_quotas(tx, &project)?))
        .await?;
    Ok(crate::http::no_content())
}
