//! Nova's network proxies: the server actions `addSecurityGroup`,
//! `removeSecurityGroup`, `addFloatingIp`, `removeFloatingIp` (and the
//! refused `addFixedIp`/`removeFixedIp`), `GET /servers/{id}/os-security-groups`,
//! and the proxy APIs Nova removed at 2.36 (`os-security-groups`,
//! `os-security-group-rules`, `os-floating-ips`, `os-floating-ip-pools`,
//! `os-networks`, `os-tenant-networks`).
//!
//! Each call goes to the network service's domain functions in one of
//! compute's transactions, as the caller (`network::Caller::with_policy`),
//! so Neutron's own checks, policy and quotas hold; Nova's rule is checked
//! first, and Nova's formats and error codes are answered. After a
//! committed change the network's `changed` notifier is told, so the
//! dataplane reconciles.

mod floating_ips;
mod networks;
mod security_groups;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::networking::notify;
use super::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::identity::AuthContext;
use crate::network::{Caller, NetworkError};

type S = Arc<ComputeState>;

pub(crate) use floating_ips::{add_floating_ip, fixed_ip_action, remove_floating_ip};
pub(crate) use security_groups::{security_group_action, server_groups};

/// The last microversion with `addFloatingIp`/`removeFloatingIp` and
/// `addFixedIp`/`removeFixedIp` (removed at 2.44).
pub const LAST_FLOATING_ACTION_MICROVERSION: u16 = 43;

pub fn routes() -> Router<S> {
    use floating_ips::*;
    use networks::*;
    use security_groups::*;
    Router::new()
        .route(
            "/v2.1/os-security-groups",
            get(group_list).post(group_create),
        )
        .route(
            "/v2.1/os-security-groups/{id}",
            get(group_show).put(group_update).delete(group_delete),
        )
        .route("/v2.1/os-security-group-rules", post(rule_create))
        .route(
            "/v2.1/os-security-group-rules/{id}",
            axum::routing::delete(rule_delete),
        )
        .route(
            "/v2.1/os-floating-ips",
            get(floating_list).post(floating_create),
        )
        .route(
            "/v2.1/os-floating-ips/{id}",
            get(floating_show).delete(floating_delete),
        )
        .route("/v2.1/os-floating-ip-pools", get(pools))
        .route("/v2.1/os-networks", get(network_list).post(network_gone))
        .route("/v2.1/os-networks/add", post(network_gone))
        .route(
            "/v2.1/os-networks/{id}",
            get(network_show).delete(network_gone_id),
        )
        .route("/v2.1/os-networks/{id}/action", post(network_gone_id))
        .route(
            "/v2.1/os-tenant-networks",
            get(tenant_network_list).post(network_gone),
        )
        .route(
            "/v2.1/os-tenant-networks/{id}",
            get(tenant_network_show).delete(network_gone_id),
        )
}

/// 404 from 2.36 on, as Nova's removed proxies.
fn proxy_available(mv: Mv) -> ComputeResult<()> {
    super::proxy_available(
        mv,
        "The network proxy APIs are gone from microversion 2.36 on; use the Network service.",
    )
}

/// The start of every proxy call: 404 from 2.36 on, then Nova's `rule` on the
/// caller's own project.
fn proxy_allowed(s: &ComputeState, ctx: &AuthContext, mv: Mv, rule: &str) -> ComputeResult<()> {
    proxy_available(mv)?;
    super::authorize(s, ctx, rule, &super::own_target(ctx))
}

fn caller(s: &ComputeState, ctx: &AuthContext) -> Caller {
    Caller::with_policy(s.identity.policy.clone(), ctx)
}

/// The network service's errors as Nova's proxies answer them: its 409s
/// (in use, duplicates) are Nova's 400s, over quota Nova's 403.
fn from_network(e: NetworkError) -> ComputeError {
    match e {
        NetworkError::Db(d) => ComputeError::Db(d),
        NetworkError::Json(j) => ComputeError::Internal(j.to_string()),
        NetworkError::NotFound { message, .. } => ComputeError::NotFound(message),
        NetworkError::Forbidden(m) => ComputeError::Forbidden(m),
        NetworkError::Conflict {
            kind: "OverQuota",
            message,
        } => ComputeError::QuotaExceeded(message),
        other => ComputeError::BadRequest(other.to_string()),
    }
}

/// [`from_network`], with the network service's over-quota refusal in Nova's
/// words for this resource (`message`, a 403).
fn over_quota(message: &'static str) -> impl FnOnce(NetworkError) -> ComputeError {
    move |e| match e {
        NetworkError::Conflict {
            kind: "OverQuota", ..
        } => ComputeError::QuotaExceeded(message.into()),
        other => from_network(other),
    }
}

/// Tells the dataplane and the dashboard that network records changed.
fn changed(s: &ComputeState) {
    notify(s);
    s.config
        .events
        .publish(crate::events::Kind::Network, "", None);
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// The object under `key` of a body (`{"security_group": {...}}`) read
/// into its declared type, else Nova's 400 for a missing or non-object
/// member. Nova's proxy schemas leave other members of the body free.
fn member<T: serde::de::DeserializeOwned>(bytes: &Bytes, key: &str) -> ComputeResult<T> {
    let mut body: Envelope = super::request::body(bytes)?;
    match body.members.remove(key) {
        Some(inner @ Value::Object(_)) => super::request::action_arg(key, inner),
        _ => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. '{key}' is a required property of type 'object'"
        ))),
    }
}

/// A proxy body: one named member, the rest ignored.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(flatten)]
    members: std::collections::HashMap<String, Value>,
}
