//! RBAC policies (`/v2.0/rbac-policies`): sharing a network with one
//! project or all (`access_as_shared`), or offering it as external
//! (`access_as_external`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde_json::Value;

use super::model::*;
use super::store::{self, Kind, Std};
use super::{Caller, NetResult, NetworkError, NetworkState, attrs, body_member, query, quotas};
use crate::identity::Auth;
use crate::policy::Target;

const ACTIONS: &[&str] = &["access_as_shared", "access_as_external"];

impl Kind for RbacPolicy {
    const KIND: &'static str = "rbac_policy";
    const NOT_FOUND: &'static str = "RbacPolicyNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn parent(&self) -> Option<&str> {
        Some(&self.object_id)
    }
    fn not_found_message(id: &str) -> String {
        format!("RBAC policy of type network with ID {id} not found")
    }
}

/// The targets of an object's policies with one action.
pub fn targets(
    conn: &Connection,
    _object_type: &str,
    object_id: &str,
    action: &str,
) -> NetResult<Vec<String>> {
    let list: Vec<RbacPolicy> = store::children(conn, object_id)?;
    Ok(list
        .into_iter()
        .filter(|p| p.action == action)
        .map(|p| p.target_tenant)
        .collect())
}

/// Removes an object's policies (with the object).
pub fn delete_for_object(conn: &Connection, object_id: &str) -> NetResult<()> {
    let list: Vec<RbacPolicy> = store::children(conn, object_id)?;
    for p in list {
        store::remove::<RbacPolicy>(conn, &p.std.id)?;
    }
    Ok(())
}

fn view(p: &RbacPolicy) -> Value {
    serde_json::json!({
        "id": p.std.id,
        "project_id": p.std.project_id,
        "tenant_id": p.std.project_id,
        "object_type": p.object_type,
        "object_id": p.object_id,
        "action": p.action,
        "target_tenant": p.target_tenant,
        "target_project": p.target_tenant,
    })
}

fn visible(conn: &Connection, caller: &Caller, id: &str) -> NetResult<RbacPolicy> {
    let p: RbacPolicy = store::must(conn, id)?;
    if caller.admin || p.std.project_id == caller.project {
        Ok(p)
    } else {
        Err(store::not_found::<RbacPolicy>(id))
    }
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "rbac_policy")?;
    attrs::known(
        &body,
        &[
            "object_type",
            "object_id",
            "action",
            "target_tenant",
            "target_project",
            "project_id",
            "tenant_id",
        ],
    )?;
    let p = s
        .write(move |tx| {
            let project = caller.owner_for(&body)?;
            let object_type = attrs::string(&body, "object_type", 64)?.ok_or_else(|| {
                NetworkError::bad(
                    "Failed to parse request. Required attribute 'object_type' not specified",
                )
            })?;
            if object_type != "network" {
                return Err(NetworkError::invalid(
                    "object_type",
                    format!("'{object_type}' is not in ['network']"),
                ));
            }
            let object_id = attrs::string(&body, "object_id", 64)?.ok_or_else(|| {
                NetworkError::bad(
                    "Failed to parse request. Required attribute 'object_id' not specified",
                )
            })?;
            let action = attrs::string(&body, "action", 64)?.ok_or_else(|| {
                NetworkError::bad(
                    "Failed to parse request. Required attribute 'action' not specified",
                )
            })?;
            if !ACTIONS.contains(&action.as_str()) {
                return Err(NetworkError::invalid(
                    "action",
                    format!("'{action}' is not in {ACTIONS:?}"),
                ));
            }
            let target = attrs::string(&body, "target_tenant", 255)?
                .or(attrs::string(&body, "target_project", 255)?)
                .ok_or_else(|| {
                    NetworkError::bad(
                        "Failed to parse request. Required attribute 'target_tenant' not specified",
                    )
                })?;
            let t = Target::project(project.clone())
                .with("target_tenant", target.clone())
                .with("target_project", target.clone());
            caller.enforce("create_rbac_policy", &t)?;
            if target == "*" {
                caller.enforce("create_rbac_policy:target_tenant", &t)?;
            }
            let mut net: Network = store::load(tx, &object_id)?
                .filter(|n: &Network| caller.admin || n.std.project_id == caller.project)
                .ok_or_else(|| store::not_found::<Network>(&object_id))?;
            let existing: Vec<RbacPolicy> = store::children(tx, &object_id)?;
            if existing
                .iter()
                .any(|e| e.action == action && e.target_tenant == target)
            {
                return Err(NetworkError::conflict(
                    "DuplicateRbacPolicy",
                    "An RBAC policy already exists with those values.",
                ));
            }
            quotas::check(tx, &project, "rbac_policy", 1)?;
            let p = RbacPolicy {
                std: Std::new(&project, String::new()),
                object_type,
                object_id,
                action,
                target_tenant: target,
            };
            store::insert(tx, &p)?;
            if p.target_tenant == "*" {
                if p.action == "access_as_shared" && !net.shared {
                    net.shared = true;
                    store::save(tx, &mut net)?;
                } else if p.action == "access_as_external" && !net.external {
                    net.external = true;
                    store::save(tx, &mut net)?;
                }
            }
            Ok(p)
        })
        .await?;
    Ok(query::respond_one(
        view(&p),
        &Default::default(),
        "rbac_policy",
        StatusCode::CREATED,
    ))
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let items = s
        .read(move |conn| {
            let all: Vec<RbacPolicy> = store::all(conn)?;
            Ok(all
                .iter()
                .filter(|p| {
                    caller.admin
                        || p.std.project_id == caller.project
                        || p.target_tenant == caller.project
                })
                .map(view)
                .collect())
        })
        .await?;
    let base = format!("{}/network/v2.0/rbac-policies", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "rbac_policies", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let p = s.read(move |conn| visible(conn, &caller, &id)).await?;
    Ok(query::respond_one(
        view(&p),
        &query::ListQuery::new(raw),
        "rbac_policy",
        StatusCode::OK,
    ))
}

/// Refuses to withdraw access that other projects' ports rely on.
fn check_unused(conn: &Connection, p: &RbacPolicy, new_target: Option<&str>) -> NetResult<()> {
    if p.action != "access_as_shared" {
        return Ok(());
    }
    let Some(net) = store::load::<Network>(conn, &p.object_id)? else {
        return Ok(());
    };
    let others: Vec<RbacPolicy> = store::children(conn, &p.object_id)?;
    let ports: Vec<Port> = store::children(conn, &p.object_id)?;
    let still = |project: &str| {
        new_target.is_some_and(|t| t == "*" || t == project)
            || others.iter().any(|o| {
                o.std.id != p.std.id
                    && o.action == "access_as_shared"
                    && (o.target_tenant == "*" || o.target_tenant == project)
            })
    };
    for port in ports {
        let pr = port.std.project_id.as_str();
        let covered = p.target_tenant == "*" || p.target_tenant == pr;
        if pr != net.std.project_id && covered && !still(pr) {
            return Err(NetworkError::conflict(
                "RbacPolicyInUse",
                format!(
                    "RBAC policy on object {} cannot be removed because other objects depend on it.\nDetails: Callback neutron.plugins.ml2.plugin.Ml2Plugin.validate_network_rbac_policy_change failed with \"Unable to reconfigure sharing settings for network {}. Multiple tenants are using it.\"",
                    p.object_id, p.object_id
                ),
            ));
        }
    }
    Ok(())
}

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "rbac_policy")?;
    attrs::known(&body, &["target_tenant", "target_project"])?;
    let p = s
        .write(move |tx| {
            let mut p = visible(tx, &caller, &id)?;
            caller.enforce(
                "update_rbac_policy",
                &Target::project(p.std.project_id.clone()),
            )?;
            if let Some(t) = attrs::string(&body, "target_tenant", 255)?.or(attrs::string(
                &body,
                "target_project",
                255,
            )?) {
                if t == "*" {
                    caller.enforce(
                        "update_rbac_policy:target_tenant",
                        &Target::project(p.std.project_id.clone()).with("target_tenant", "*"),
                    )?;
                }
                check_unused(tx, &p, Some(&t))?;
                p.target_tenant = t;
            }
            store::save(tx, &mut p)?;
            Ok(p)
        })
        .await?;
    Ok(query::respond_one(
        view(&p),
        &Default::default(),
        "rbac_policy",
        StatusCode::OK,
    ))
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let p = visible(tx, &caller, &id)?;
        caller.enforce(
            "delete_rbac_policy",
            &Target::project(p.std.project_id.clone()),
        )?;
        check_unused(tx, &p, None)?;
        store::remove::<RbacPolicy>(tx, &p.std.id)?;
        if p.target_tenant == "*"
            && let Some(mut net) = store::load::<Network>(tx, &p.object_id)?
        {
            let rest = targets(tx, "network", &p.object_id, &p.action)?;
            if !rest.iter().any(|t| t == "*") {
                if p.action == "access_as_shared" {
                    net.shared = false;
                } else {
                    net.external = false;
                }
                store::save(tx, &mut net)?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(crate::http::no_content())
}
