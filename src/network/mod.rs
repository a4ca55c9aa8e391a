//! Neutron v2.0 (`/network/v2.0`): networks, subnets, ports, security
//! groups, routers, floating IPs, subnet pools, RBAC policies, quotas and
//! the extensions list, in Neutron's formats and error bodies.
//!
//! Layout: `store` the records as they are kept (serde types, standard
//! attributes, the generic load/save over `db::network`); `query` filters,
//! `fields`, sorting and paging of lists; `ipam` address arithmetic and
//! allocation; one module per resource (`networks`, `subnets`, `ports`,
//! `security_groups`, `routers`, `floating_ips`, `subnet_pools`, `rbac`),
//! `tags`, `quotas` and `extensions`.
//!
//! The dataplane (src/dataplane) follows the records and sets ports'
//! `status`; `notifier` carries Neutron's `network-vif-plugged`/`-unplugged`
//! events to compute, and deleting a port bound to a server sends
//! `network-vif-deleted` (`NetworkState::server_events`) (docs/network.md, "Port status and VIF events").

mod attrs;
mod extensions;
mod floating_ips;
pub mod initial;
pub mod ipam;
mod lookup;
pub mod model;
mod networks;
mod ports;
mod query;
mod quotas;
mod rbac;
mod routers;
mod security_groups;
pub mod store;
mod subnet_pools;
mod subnets;
mod tags;

/// The seam compute uses to give servers their ports (Nova's side of
/// Neutron, `compute::networking`): making and deleting ports in the
/// caller's transaction, who may use a network, the default security group
/// and the port quota's headroom.
pub use lookup::rbac_targets;
pub use ports::{PortSpec, delete_port_in, new_port};
pub use quotas::headroom;
pub use security_groups::ensure_default;

/// The seam of Nova's proxy APIs and server actions
/// (`compute::network_proxy`): each runs in the caller's transaction with
/// Neutron's own checks, policy and quotas, for a [`Caller`] made from the
/// policy with [`Caller::with_policy`].
pub use floating_ips::{
    create_in as create_floating_ip_in, delete_in as delete_floating_ip_in,
    set_port_in as set_floating_ip_port_in, visible as visible_floating_ip,
};
pub use lookup::visible_network;
pub use security_groups::{
    create_group_in, create_rule_in, delete_group_in, delete_rule_in, update_group_in,
    visible_group,
};

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};

use crate::db::{Db, DbError};
use crate::http::body::{BodyError, Object};
use crate::http::{ApiVersion, json_response};
use crate::identity::{AuthContext, HasIdentity, IdentityState};
use crate::policy::{Credentials, Service, Target};

const VERSION: ApiVersion<'static> = ApiVersion {
    id: "v2.0",
    status: "CURRENT",
    path: "/network/v2.0/",
    min_version: "",
    version: "",
    media_type: "application/vnd.openstack.network+json",
    updated: "2024-01-01T00:00:00Z",
};

/// The largest request body accepted, in bytes (Neutron has no smaller cap
/// that clients rely on; this keeps a request's memory bounded).
pub const MAX_BODY: usize = 256 * 1024;

/// Errors of the network service, rendered as Neutron's
/// `{"NeutronError": {"type", "message", "detail"}}`.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The request is malformed (`HTTPBadRequest` and Neutron's 400s).
    #[error("{message}")]
    BadRequest { kind: &'static str, message: String },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist or is not visible to the caller.
    #[error("{message}")]
    NotFound { kind: &'static str, message: String },
    /// The request conflicts with the state (in use, taken, over quota).
    #[error("{message}")]
    Conflict { kind: &'static str, message: String },
    /// `If-Match: revision_number=N` did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The request body is larger than [`MAX_BODY`].
    #[error("Request body too large")]
    TooLarge,
    /// The token is missing or invalid.
    #[error("{0}")]
    Unauthorized(String),
    /// The state file failed.
    #[error("internal error: {0}")]
    Db(#[from] DbError),
    /// A stored record could not be decoded or encoded.
    #[error("internal error: corrupt network record: {0}")]
    Json(#[from] serde_json::Error),
}

pub type NetResult<T> = Result<T, NetworkError>;

impl NetworkError {
    /// A 400 with Neutron's generic type.
    pub fn bad(message: impl Into<String>) -> NetworkError {
        NetworkError::BadRequest {
            kind: "HTTPBadRequest",
            message: message.into(),
        }
    }

    /// Neutron's "Invalid input for X. Reason: Y." 400.
    pub fn invalid(attr: &str, reason: impl std::fmt::Display) -> NetworkError {
        NetworkError::bad(format!("Invalid input for {attr}. Reason: {reason}."))
    }

    pub fn conflict(kind: &'static str, message: impl Into<String>) -> NetworkError {
        NetworkError::Conflict {
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(kind: &'static str, message: impl Into<String>) -> NetworkError {
        NetworkError::NotFound {
            kind,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            NetworkError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            NetworkError::Forbidden(_) => StatusCode::FORBIDDEN,
            NetworkError::NotFound { .. } => StatusCode::NOT_FOUND,
            NetworkError::Conflict { .. } => StatusCode::CONFLICT,
            NetworkError::Db(e) if e.is_unique_violation() => StatusCode::CONFLICT,
            NetworkError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            NetworkError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            NetworkError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            NetworkError::Db(_) | NetworkError::Json(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            NetworkError::BadRequest { kind, .. }
            | NetworkError::NotFound { kind, .. }
            | NetworkError::Conflict { kind, .. } => kind,
            NetworkError::Forbidden(_) => "PolicyNotAuthorized",
            NetworkError::PreconditionFailed(_) => "RevisionNumberConstraintFailed",
            NetworkError::TooLarge => "HTTPRequestEntityTooLarge",
            NetworkError::Unauthorized(_) => "HTTPUnauthorized",
            NetworkError::Db(e) if e.is_unique_violation() => "Conflict",
            NetworkError::Db(_) | NetworkError::Json(_) => "HTTPInternalServerError",
        }
    }
}

impl IntoResponse for NetworkError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "network request failed");
        }
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "Request Failed: internal server error while processing your request.".to_string()
        } else {
            self.to_string()
        };
        let body = json!({"NeutronError": {"type": self.kind(), "message": message, "detail": ""}});
        json_response(status, &body)
    }
}

impl From<BodyError> for NetworkError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed(_) | BodyError::NotAnObject => {
                NetworkError::bad("Malformed request body")
            }
            BodyError::MemberNotAnObject(key) | BodyError::Missing(key) => {
                NetworkError::bad(format!("Resource body required: '{key}'"))
            }
            BodyError::WrongType { key, expected } => {
                NetworkError::invalid(&key, format!("'{key}' is not a valid {expected}"))
            }
            BodyError::BadName(key) => NetworkError::invalid(&key, "the name is too long"),
            BodyError::Unexpected(key) => {
                NetworkError::bad(format!("Unrecognized attribute(s) '{key}'"))
            }
            BodyError::Invalid { key, reason } => NetworkError::invalid(&key, reason),
        }
    }
}

impl From<crate::identity::IdentityError> for NetworkError {
    fn from(e: crate::identity::IdentityError) -> Self {
        use crate::identity::IdentityError as I;
        match e {
            I::Unauthorized(m) => NetworkError::Unauthorized(m),
            I::Forbidden(m) => NetworkError::Forbidden(m),
            I::NotFound(m) => NetworkError::not_found("HTTPNotFound", m),
            I::BadRequest(m) => NetworkError::bad(m),
            I::Conflict(m) => NetworkError::conflict("Conflict", m),
            I::Db(d) => NetworkError::Db(d),
            I::Internal(m) | I::TooManyRequests { message: m, .. } => {
                NetworkError::Db(DbError::Task(m))
            }
        }
    }
}

/// Shared state of the network service.
pub struct NetworkState {
    pub identity: Arc<IdentityState>,
    pub db: Db,
    /// Told after every committed write (the dataplane's seam: server.rs
    /// hands the same `Notify` to it; this module knows nothing more).
    pub changed: Arc<tokio::sync::Notify>,
    /// Told after every committed write too (the dashboard's live updates).
    pub events: crate::events::Bus,
    /// Server external events to compute (`network-vif-deleted` when a
    /// port bound to a server is deleted through this API).
    pub server_events: crate::server_events::ServerEvents,
}

impl HasIdentity for Arc<NetworkState> {
    fn identity(&self) -> &Arc<IdentityState> {
        &self.identity
    }
}

impl NetworkState {
    /// Runs a read on the state file.
    pub async fn read<F, T>(&self, f: F) -> NetResult<T>
    where
        F: FnOnce(&rusqlite::Connection) -> NetResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match self.db.read(move |conn| Ok(f(conn))).await {
            Ok(inner) => inner,
            Err(e) => Err(NetworkError::Db(e)),
        }
    }

    /// Runs a write in one transaction, rolled back when `f` fails: an API
    /// call that fails leaves nothing half-made.
    pub async fn write<F, T>(&self, f: F) -> NetResult<T>
    where
        F: FnOnce(&rusqlite::Transaction) -> NetResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let slot: Arc<std::sync::Mutex<Option<NetworkError>>> = Arc::default();
        let inner_slot = slot.clone();
        let result = self
            .db
            .write(move |tx| match f(tx) {
                Ok(value) => Ok(value),
                Err(NetworkError::Db(e)) => Err(e),
                Err(other) => {
                    if let Ok(mut s) = inner_slot.lock() {
                        *s = Some(other);
                    }
                    Err(DbError::Task("rolled back".into()))
                }
            })
            .await;
        match result {
            Ok(value) => {
                self.changed.notify_one();
                self.events.publish(crate::events::Kind::Network, "", None);
                Ok(value)
            }
            Err(e) => match slot.lock().ok().and_then(|mut s| s.take()) {
                Some(other) => Err(other),
                None => Err(NetworkError::Db(e)),
            },
        }
    }
}

/// Who is calling, with what the policy needs, cheap to move into a
/// database closure.
#[derive(Clone)]
pub struct Caller {
    pub creds: Credentials,
    /// The token's project ('' without a project scope).
    pub project: String,
    /// Neutron's `context.is_admin` (the `context_is_admin` rule).
    pub admin: bool,
    policy: Arc<crate::policy::Policy>,
}

impl Caller {
    pub fn new(s: &NetworkState, ctx: &AuthContext) -> Caller {
        Caller::with_policy(s.identity.policy.clone(), ctx)
    }

    /// The caller as Neutron sees it, for another service calling this
    /// one's domain functions with the same policy.
    pub fn with_policy(policy: Arc<crate::policy::Policy>, ctx: &AuthContext) -> Caller {
        let creds = ctx.credentials();
        let project = ctx.project_id().unwrap_or_default().to_string();
        let admin = policy.allows(
            Service::Network,
            &creds,
            "context_is_admin",
            &Target::project(project.clone()),
        );
        Caller {
            creds,
            project,
            admin,
            policy,
        }
    }

    /// yunhe itself acting as the cloud's admin in `project` (first-start
    /// records; no token): the admin role and what it implies, project
    /// scoped, checked by the same policy as any caller.
    pub fn operator(policy: Arc<crate::policy::Policy>, project: &str) -> Caller {
        let creds = Credentials {
            user_id: String::new(),
            user_domain_id: "default".into(),
            project_id: Some(project.to_string()),
            project_domain_id: Some("default".into()),
            domain_id: None,
            system: false,
            roles: ["admin", "manager", "member", "reader"]
                .map(String::from)
                .to_vec(),
        };
        let admin = policy.allows(
            Service::Network,
            &creds,
            "context_is_admin",
            &Target::project(project.to_string()),
        );
        Caller {
            creds,
            project: project.to_string(),
            admin,
            policy,
        }
    }

    /// Whether a Neutron rule allows the caller on the target.
    pub fn allows(&self, rule: &str, target: &Target) -> bool {
        self.policy
            .allows(Service::Network, &self.creds, rule, target)
    }

    /// Enforces a Neutron rule: 403 as Neutron words it.
    pub fn enforce(&self, rule: &str, target: &Target) -> NetResult<()> {
        if self.allows(rule, target) {
            Ok(())
        } else {
            Err(NetworkError::Forbidden(format!(
                "rule:{rule} is disallowed by policy"
            )))
        }
    }

    /// The project a new record belongs to: the body's `project_id` or
    /// `tenant_id` (admins may name another project), else the caller's.
    pub fn owner_for(&self, body: &Object) -> NetResult<String> {
        let named = match (body.get("project_id"), body.get("tenant_id")) {
            (Some(Value::String(p)), Some(Value::String(t))) if p != t => {
                return Err(NetworkError::bad(
                    "'project_id' and 'tenant_id' do not match",
                ));
            }
            (Some(Value::String(p)), _) | (None, Some(Value::String(p))) => Some(p.clone()),
            (None, None) => None,
            _ => return Err(NetworkError::invalid("project_id", "not a string")),
        };
        match named {
            Some(p) if p.len() > 255 => Err(NetworkError::invalid(
                "project_id",
                "'project_id' exceeds maximum length of 255",
            )),
            Some(p) if p != self.project && !self.admin => Err(NetworkError::bad(
                "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges",
            )),
            Some(p) => Ok(p),
            None if self.project.is_empty() => Err(NetworkError::bad(
                "Running without keystone AuthN requires that tenant_id is specified",
            )),
            None => Ok(self.project.clone()),
        }
    }
}

/// Parses a request body: bounded, a JSON object, holding the object
/// `key` (`{"network": {...}}`).
pub fn body_member(bytes: &Bytes, key: &str) -> NetResult<Object> {
    if bytes.len() > MAX_BODY {
        return Err(NetworkError::TooLarge);
    }
    let mut body = crate::http::body::parse_object(bytes)?;
    match body.remove(key) {
        Some(Value::Object(map)) => Ok(map),
        Some(_) | None => Err(NetworkError::bad(format!(
            "Unable to find '{key}' in request body"
        ))),
    }
}

/// A create request's body: one resource (`{"network": {...}}`) or Neutron's
/// bulk form (`{"networks": [{...}, ...]}`), which makes all or none.
pub enum CreateBody {
    One(Object),
    Bulk(Vec<Object>),
}

/// Parses a create body in either form; `key` is the member name, `plural`
/// the collection's.
pub fn create_body(bytes: &Bytes, key: &str, plural: &str) -> NetResult<CreateBody> {
    if bytes.len() > MAX_BODY {
        return Err(NetworkError::TooLarge);
    }
    let mut body = crate::http::body::parse_object(bytes)?;
    if let Some(Value::Object(map)) = body.remove(key) {
        return Ok(CreateBody::One(map));
    }
    match body.remove(plural) {
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .map(|item| match item {
                Value::Object(map) => Ok(map),
                _ => Err(NetworkError::bad(format!(
                    "Invalid input: each of '{plural}' must be an object"
                ))),
            })
            .collect::<NetResult<Vec<_>>>()
            .map(CreateBody::Bulk),
        Some(Value::Array(_)) => Err(NetworkError::bad(format!(
            "Resources required: '{plural}' is empty"
        ))),
        _ => Err(NetworkError::bad(format!(
            "Unable to find '{key}' in request body"
        ))),
    }
}

/// The `If-Match: revision_number=N` constraint of a request, if any.
pub fn revision_constraint(headers: &HeaderMap) -> NetResult<Option<i64>> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| NetworkError::bad("If-Match header is not text"))?;
    for part in text.split(',') {
        let part = part.trim().trim_matches('"');
        if let Some(n) = part.strip_prefix("revision_number=") {
            return n
                .parse()
                .map(Some)
                .map_err(|_| NetworkError::bad(format!("Invalid If-Match revision_number: {n}")));
        }
    }
    Ok(None)
}

/// Fails with 412 when a constraint was given and the record moved on.
pub fn check_revision(expected: Option<i64>, current: i64) -> NetResult<()> {
    match expected {
        Some(n) if n != current => Err(NetworkError::PreconditionFailed(format!(
            "Constrained to {n}, but current revision is {current}"
        ))),
        _ => Ok(()),
    }
}

/// A JSON response from a serializable view.
pub fn reply<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    json_response(status, body)
}

async fn v2_root(axum::extract::State(url): axum::extract::State<Arc<str>>) -> Response {
    let resources: Vec<Value> = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("subnetpool", "subnetpools"),
    ]
    .iter()
    .map(|(name, collection)| {
        json!({
            "name": name,
            "collection": collection,
            "links": [{"rel": "self", "href": format!("{url}/network/v2.0/{collection}")}],
        })
    })
    .collect();
    json_response(StatusCode::OK, &json!({ "resources": resources }))
}

async fn not_found() -> NetworkError {
    NetworkError::not_found("HTTPNotFound", "The resource could not be found.")
}

/// Routes of this service, at `/network`.
/// `changed` is told after every committed write; `server_events` carries
/// Neutron's notifications to compute.
pub fn router(
    identity: Arc<IdentityState>,
    changed: Arc<tokio::sync::Notify>,
    events: crate::events::Bus,
    server_events: crate::server_events::ServerEvents,
) -> Router {
    let public_url = identity.public_url.clone();
    let doc = json!({"versions": [VERSION.to_json(&public_url)]});
    let body = doc.clone();
    let db = identity.db.clone();
    let state = Arc::new(NetworkState {
        identity,
        db,
        changed,
        events,
        server_events,
    });
    let url: Arc<str> = public_url.into();
    let api = Router::new()
        .route("/networks", get(networks::list).post(networks::create))
        .route(
            "/networks/{id}",
            get(networks::show)
                .put(networks::update)
                .delete(networks::delete),
        )
        .route("/subnets", get(subnets::list).post(subnets::create))
        .route(
            "/subnets/{id}",
            get(subnets::show)
                .put(subnets::update)
                .delete(subnets::delete),
        )
        .route("/ports", get(ports::list).post(ports::create))
        .route(
            "/ports/{id}",
            get(ports::show).put(ports::update).delete(ports::delete),
        )
        .route(
            "/security-groups",
            get(security_groups::list).post(security_groups::create),
        )
        .route(
            "/security-groups/{id}",
            get(security_groups::show)
                .put(security_groups::update)
                .delete(security_groups::delete),
        )
        .route(
            "/security-group-rules",
            get(security_groups::list_rules).post(security_groups::create_rule),
        )
        .route(
            "/security-group-rules/{id}",
            get(security_groups::show_rule).delete(security_groups::delete_rule),
        )
        .route("/routers", get(routers::list).post(routers::create))
        .route(
            "/routers/{id}",
            get(routers::show)
                .put(routers::update)
                .delete(routers::delete),
        )
        .route(
            "/routers/{id}/add_router_interface",
            put(routers::add_interface),
        )
        .route(
            "/routers/{id}/remove_router_interface",
            put(routers::remove_interface),
        )
        .route("/routers/{id}/add_extraroutes", put(routers::add_routes))
        .route(
            "/routers/{id}/remove_extraroutes",
            put(routers::remove_routes),
        )
        .route(
            "/floatingips",
            get(floating_ips::list).post(floating_ips::create),
        )
        .route(
            "/floatingips/{id}",
            get(floating_ips::show)
                .put(floating_ips::update)
                .delete(floating_ips::delete),
        )
        .route(
            "/subnetpools",
            get(subnet_pools::list).post(subnet_pools::create),
        )
        .route(
            "/subnetpools/{id}",
            get(subnet_pools::show)
                .put(subnet_pools::update)
                .delete(subnet_pools::delete),
        )
        .route("/rbac-policies", get(rbac::list).post(rbac::create))
        .route(
            "/rbac-policies/{id}",
            get(rbac::show).put(rbac::update).delete(rbac::delete),
        )
        .route("/quotas", get(quotas::list))
        .route("/quotas/project/{id}", get(quotas::show_defaults))
        .route("/quotas/{id}/default", get(quotas::show_defaults))
        .route("/quotas/{id}/details", get(quotas::details))
        .route(
            "/quotas/{id}",
            get(quotas::show).put(quotas::update).delete(quotas::reset),
        )
        .route("/extensions", get(extensions::list))
        .route("/extensions/{alias}", get(extensions::show))
        .route(
            "/network-ip-availabilities",
            get(networks::list_availability),
        )
        .route(
            "/network-ip-availabilities/{id}",
            get(networks::show_availability),
        )
        .route("/availability_zones", get(extensions::availability_zones))
        .route("/agents", get(extensions::agents))
        .route("/agents/{id}", get(extensions::agent))
        .route(
            "/{collection}/{id}/tags",
            get(tags::list).put(tags::replace).delete(tags::clear),
        )
        .route(
            "/{collection}/{id}/tags/{tag}",
            get(tags::check).put(tags::add).delete(tags::remove),
        )
        .fallback(not_found)
        .with_state(state);
    Router::new()
        .route(
            "/network",
            get(move || async move { json_response(StatusCode::OK, &doc) }),
        )
        .route(
            "/network/",
            get(move || async move { json_response(StatusCode::OK, &body) }),
        )
        .route("/network/v2.0", get(v2_root).with_state(url.clone()))
        .route("/network/v2.0/", get(v2_root).with_state(url))
        .nest("/network/v2.0", api)
}
