//! Nova v2.1 (`/compute`): version discovery, microversions, flavors,
//! keypairs, limits and quotas, availability zones, hypervisors, services,
//! simple tenant usage, server groups, servers and their lifecycle.
//!
//! Layout: this file holds the shared pieces (state, errors in Nova's
//! format, URL normalisation, microversion negotiation, body helpers);
//! `flavors`, `keypairs`, `quotas` (limits, quota sets and classes, and the
//! enforcement helpers servers call), `hosts` (availability zones,
//! hypervisors, services, usage, extensions) and `server_groups` hold the
//! resources; `servers` (CRUD and sub-resources), `lifecycle` (actions and
//! the monitor), `consoles` and `configdrive` run servers.
//!
//! Leaves without HTTP, which the handler files import (and never each
//! other): `states` (vm/task/power states and the table of which action may
//! start where), `access` (finding a server for a caller), `build` (build,
//! delete, instance actions, state writes), `scheduler` (the fit check),
//! `locks` (per-server operation locks) and `driver`, the seam to what runs
//! servers: `virt` implements it with one VMM process per server over the
//! typed protocol of vmm/control.rs, `fake_driver` in memory for unit tests.
//! Settings ([`ComputeConfig`]) come from server.rs and live in [`ComputeState`].
//!
//! Every path works with and without the project id after the version:
//! before routing, `/v2.1/<project>/flavors` becomes `/v2.1/flavors` with the
//! project id kept in a request extension, and a path without a version is
//! sent to v2.1 when the `Accept` media type names it. `/v2` (the legacy v2
//! API) is served by the same handlers at microversion 2.1.

mod access;
mod aggregates;
mod block_devices;
mod build;
pub mod configdrive;
mod consoles;
mod create;
pub mod driver;
#[cfg(test)]
mod fake_driver;
mod flavors;
mod hosts;
mod hypervisors;
mod images;
mod instance_actions;
pub mod instance_events;
mod interfaces;
mod keypairs;
mod lifecycle;
mod locks;
pub mod metadata_source;
mod network_proxy;
pub mod networking;
pub mod quotas;
mod request;
mod scheduler;
mod server_cache;
mod server_groups;
mod server_list;
mod server_metadata;
mod server_subresources;
mod server_views;
mod servers;
mod services;
pub mod states;
mod tenant_usage;
mod validate;
pub mod virt;
mod volume_events;
mod volume_proxy;
mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;

use crate::policy::{Service, Target};
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::db::{Db, DbError};
use crate::http::json_response;
use crate::identity::{AuthContext, HasIdentity, IdentityState};

/// Lowest microversion (the minor number of 2.x).
pub const MIN_MICROVERSION: u16 = 1;
/// Highest microversion: every change up to it that touches the resources
/// served here (flavors, keypairs, quotas, limits, hypervisors, services,
/// server groups, availability zones, usage, servers and their actions) is
/// implemented, within what a cloud without networks and volumes can do.
pub const MAX_MICROVERSION: u16 = 96;

/// Errors of the compute service, rendered as Nova renders them:
/// `{"itemNotFound": {"code": 404, "message": ...}}`.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// Policy forbids the call.
    #[error("{0}")]
    Forbidden(String),
    /// A quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The requested API version is not served.
    #[error("{0}")]
    NotAcceptable(String),
    /// This host cannot do what was asked (e.g. host power actions).
    #[error("{0}")]
    NotImplemented(String),
    /// The API is gone for good (nova-network's admin actions).
    #[error("{0}")]
    Gone(String),
    /// The state file failed.
    #[error("Unexpected API Error: {0}")]
    Db(#[from] DbError),
    /// Something else failed on our side.
    #[error("Unexpected API Error: {0}")]
    Internal(String),
}

pub type ComputeResult<T> = Result<T, ComputeError>;

impl ComputeError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ComputeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "badRequest"),
            ComputeError::Forbidden(_) | ComputeError::QuotaExceeded(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            ComputeError::NotFound(_) => (StatusCode::NOT_FOUND, "itemNotFound"),
            ComputeError::Conflict(_) => (StatusCode::CONFLICT, "conflictingRequest"),
            ComputeError::Db(DbError::Conflict(_)) => (StatusCode::CONFLICT, "conflictingRequest"),
            ComputeError::NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "computeFault"),
            ComputeError::NotImplemented(_) => (StatusCode::NOT_IMPLEMENTED, "notImplemented"),
            ComputeError::Gone(_) => (StatusCode::GONE, "computeFault"),
            ComputeError::Db(_) | ComputeError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "computeFault")
            }
        }
    }
}

impl IntoResponse for ComputeError {
    fn into_response(self) -> Response {
        let (status, name) = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "compute request failed");
        }
        let message = match &self {
            ComputeError::Db(DbError::Conflict(m)) => m.clone(),
            other => other.to_string(),
        };
        json_response(
            status,
            &json!({name: {"code": status.as_u16(), "message": message}}),
        )
    }
}

/// Shared state of the compute service.
pub struct ComputeState {
    pub identity: Arc<IdentityState>,
    pub db: Db,
    /// Public URL of the whole server, without a trailing slash.
    pub public_url: String,
    /// What runs the servers (one VMM process each; a fake in unit tests).
    pub driver: Arc<dyn driver::ComputeDriver>,
    /// One operation lock per server.
    pub locks: locks::ServerLocks,
    /// The settings `yunhe serve` was started with.
    pub config: ComputeConfig,
    /// Glance, as Nova asks it for images.
    pub images: crate::image::service::ImageService,
    /// Serial console tokens (single-use, see `consoles`).
    pub console_tokens: consoles::ConsoleTokens,
    /// Cinder, as Nova asks it to attach and detach volumes (`volume::ops`).
    pub volumes: Arc<crate::volume::VolumeState>,
    /// The flavors and the projects' flavor access as last read, with the state file's
    /// write generation they were read at (`flavors::load_visible`).
    pub flavor_cache: Mutex<Option<flavors::FlavorCache>>,
    /// Servers as last decoded and their rendered list views
    /// (`server_cache`, for `GET /servers/detail`).
    pub server_cache: server_cache::ServerCache,
    /// The server external events builds wait for (`network-vif-plugged`).
    pub instance_events: instance_events::InstanceEvents,
}

/// How far this host's resources may be overcommitted when scheduling.
#[derive(Debug, Clone, Copy)]
pub struct AllocationRatios {
    pub cpu: f64,
    pub ram: f64,
    pub disk: f64,
}

/// Compute settings of `yunhe serve`, fixed at start-up (built by
/// server.rs, held in [`ComputeState`]).
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    pub ratios: AllocationRatios,
    /// Attach a config drive to every server, asked for or not.
    pub force_config_drive: bool,
    /// Confine each VMM (namespaces, own uid, cgroup; vmm/jail.rs) when running as root.
    pub jail_vmms: bool,
    /// Boot the uncompressed PVH vmlinux inside bzImage kernels (vmm/unpack.rs).
    pub unpack_kernels: bool,
    /// The dataplane and the network service's change `Notify` (servers'
    /// NICs; see `networking`).
    pub network: networking::NetworkHooks,
    /// Told after a server's state is stored (the dashboard's live updates).
    pub events: crate::events::Bus,
    /// The volume service's settings: where attached volumes' files are
    /// (`os-volume_attachments`, through `volume::ops`).
    pub volume: crate::volume::VolumeConfig,
    /// Nova's `vif_plugging_timeout`: how long a build waits for
    /// `network-vif-plugged` of its ports (zero: it does not wait).
    pub vif_plugging_timeout: std::time::Duration,
    /// Nova's `vif_plugging_is_fatal`: a build whose wait times out (or
    /// gets `failed`) goes to ERROR; off: it goes on.
    pub vif_plugging_is_fatal: bool,
}

/// Nova's default `vif_plugging_timeout`, seconds.
pub const VIF_PLUGGING_TIMEOUT: u64 = 300;

impl Default for ComputeConfig {
    fn default() -> Self {
        ComputeConfig {
            ratios: AllocationRatios {
                cpu: 4.0,
                ram: 1.0,
                disk: 1.0,
            },
            force_config_drive: true,
            jail_vmms: true,
            unpack_kernels: true,
            network: Default::default(),
            events: Default::default(),
            volume: Default::default(),
            vif_plugging_timeout: std::time::Duration::from_secs(VIF_PLUGGING_TIMEOUT),
            vif_plugging_is_fatal: true,
        }
    }
}

impl HasIdentity for Arc<ComputeState> {
    fn identity(&self) -> &Arc<IdentityState> {
        &self.identity
    }
}

impl ComputeState {
    /// Runs a read on the state file.
    pub async fn read<F, T>(&self, f: F) -> ComputeResult<T>
    where
        F: FnOnce(&rusqlite::Connection) -> ComputeResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match self.db.read(move |conn| Ok(f(conn))).await {
            Ok(inner) => inner,
            Err(e) => Err(ComputeError::Db(e)),
        }
    }

    /// Runs a write in one transaction. A database error rolls it back;
    /// other errors commit what `f` did, so handlers validate before writing.
    pub async fn write<F, T>(&self, f: F) -> ComputeResult<T>
    where
        F: FnOnce(&rusqlite::Transaction) -> ComputeResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let result = self
            .db
            .write(move |tx| match f(tx) {
                Ok(value) => Ok(Ok(value)),
                Err(ComputeError::Db(e)) => Err(e),
                Err(other) => Ok(Err(other)),
            })
            .await;
        match result {
            Ok(inner) => inner,
            Err(e) => Err(ComputeError::Db(e)),
        }
    }

    /// `<public>/compute/v2.1`.
    pub fn v21_url(&self) -> String {
        format!("{}/compute/v2.1", self.public_url)
    }

    /// `self` and `bookmark` links of a resource below v2.1.
    pub fn links(&self, collection: &str, id: &str) -> Value {
        json!([
            {"rel": "self", "href": format!("{}/{collection}/{id}", self.v21_url())},
            {"rel": "bookmark", "href": format!("{}/compute/{collection}/{id}", self.public_url)},
        ])
    }
}

// ------------------------------------------------------- request extensions

/// The negotiated microversion (minor number of 2.x), set by [`negotiate`].
#[derive(Clone, Copy, Debug)]
pub struct Mv(pub u16);

impl Mv {
    /// True when the request's microversion is at least 2.`minor`.
    pub fn at_least(self, minor: u16) -> bool {
        self.0 >= minor
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Mv {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Mv>()
            .copied()
            .unwrap_or(Mv(MIN_MICROVERSION)))
    }
}

/// Set on requests that came in below `/v2` (the legacy API): microversion
/// headers are ignored and none are returned.
#[derive(Clone, Copy)]
struct LegacyV2;

/// The project id that was in the URL after the version, if any.
#[derive(Clone)]
pub struct UrlProject(pub String);

/// First path segments below the version that name a resource, not a project.
const RESOURCES: &[&str] = &[
    "flavors",
    "os-keypairs",
    "limits",
    "os-quota-sets",
    "os-quota-class-sets",
    "os-availability-zone",
    "os-hypervisors",
    "os-services",
    "os-simple-tenant-usage",
    "os-server-groups",
    "extensions",
    "servers",
    "images",
    "os-aggregates",
    "os-instance-actions",
    "os-migrations",
    "os-volumes",
    "os-volumes_boot",
    "os-snapshots",
    "os-networks",
    "os-tenant-networks",
    "os-floating-ips",
    "os-floating-ip-pools",
    "os-security-groups",
    "os-security-group-rules",
    "os-hosts",
    "os-cells",
    "os-assisted-volume-snapshots",
    "os-server-external-events",
    "os-instance_usage_audit_log",
];

/// Normalises the URI before routing (see the module comment).
fn normalise(mut req: Request) -> Request {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut legacy = false;
    match segments.first().copied() {
        Some("v2.1") => {}
        Some("v2") => {
            legacy = true;
            segments[0] = "v2.1";
        }
        Some("") | None => return req,
        Some(_) => {
            // No version in the URI: take it from the Accept media type.
            let accept = req
                .headers()
                .get(axum::http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if accept.contains("application/vnd.openstack.compute.v2.1+json")
                || accept.contains("application/vnd.openstack.compute+json;version=2.1")
            {
                segments.insert(0, "v2.1");
            } else if accept.contains("application/vnd.openstack.compute.v2+json") {
                legacy = true;
                segments.insert(0, "v2.1");
            } else {
                return req;
            }
        }
    }
    if let Some(second) = segments.get(1).copied()
        && !second.is_empty()
        && !RESOURCES.contains(&second)
    {
        req.extensions_mut().insert(UrlProject(second.to_string()));
        segments.remove(1);
    }
    if legacy {
        req.extensions_mut().insert(LegacyV2);
    }
    let mut new_path = format!("/{}", segments.join("/"));
    if let Some(q) = query {
        new_path.push('?');
        new_path.push_str(&q);
    }
    if let Ok(uri) = new_path.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    req
}

/// Parses `X.Y` into the minor number, or `latest`.
fn parse_version(text: &str) -> ComputeResult<u16> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX_MICROVERSION);
    }
    let invalid = || {
        ComputeError::BadRequest(format!(
            "API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum."
        ))
    };
    let (major, minor) = text.split_once('.').ok_or_else(invalid)?;
    let major: u16 = major.parse().map_err(|_| invalid())?;
    let minor: u16 = minor.parse().map_err(|_| invalid())?;
    if major != 2 || !(MIN_MICROVERSION..=MAX_MICROVERSION).contains(&minor) {
        return Err(ComputeError::NotAcceptable(format!(
            "Version {text} is not supported by the API. Minimum is 2.{MIN_MICROVERSION} and maximum is 2.{MAX_MICROVERSION}."
        )));
    }
    Ok(minor)
}

/// The microversion a request asks for: `OpenStack-API-Version: compute X.Y`
/// first, then the legacy `X-OpenStack-Nova-API-Version`, else 2.1.
fn requested_version(parts: &axum::http::HeaderMap) -> ComputeResult<u16> {
    for value in parts.get_all("openstack-api-version") {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut words = item.split_whitespace();
            if words
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case("compute"))
            {
                return parse_version(words.next().unwrap_or(""));
            }
        }
    }
    if let Some(value) = parts.get("x-openstack-nova-api-version")
        && let Ok(text) = value.to_str()
    {
        return parse_version(text);
    }
    Ok(MIN_MICROVERSION)
}

/// Middleware: negotiates the microversion and echoes it on the response;
/// refuses a project id in the URL that is not the token's, as Nova does.
async fn negotiate(State(s): State<Arc<ComputeState>>, mut req: Request, next: Next) -> Response {
    let legacy = req.extensions().get::<LegacyV2>().is_some();
    if let Some(UrlProject(url_project)) = req.extensions().get::<UrlProject>().cloned()
        && let Some(token) = req
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        && let Ok(ctx) = crate::identity::token::validate(&s.identity, &token).await
        && ctx.project_id() != Some(url_project.as_str())
    {
        let error = ComputeError::BadRequest(format!(
            "Malformed request URL: URL's project_id '{url_project}' doesn't match Context's project_id '{}'",
            ctx.project_id().unwrap_or("None")
        ));
        return with_version_headers(error.into_response(), None);
    }
    let minor = if legacy {
        MIN_MICROVERSION
    } else {
        match requested_version(req.headers()) {
            Ok(minor) => minor,
            Err(e) => return with_version_headers(e.into_response(), None),
        }
    };
    req.extensions_mut().insert(Mv(minor));
    let response = next.run(req).await;
    if legacy {
        response
    } else {
        with_version_headers(response, Some(minor))
    }
}

fn with_version_headers(mut response: Response, minor: Option<u16>) -> Response {
    let headers = response.headers_mut();
    if let Some(minor) = minor {
        if let Ok(v) = HeaderValue::from_str(&format!("compute 2.{minor}")) {
            headers.insert("openstack-api-version", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("2.{minor}")) {
            headers.insert("x-openstack-nova-api-version", v);
        }
    }
    headers.insert(
        axum::http::header::VARY,
        HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
    );
    response
}

// ---------------------------------------------------------------- versions

fn version_v21(public_url: &str) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": format!("2.{MAX_MICROVERSION}"),
        "min_version": format!("2.{MIN_MICROVERSION}"),
        "updated": "2013-07-23T11:33:21Z",
        "links": [
            {"rel": "self", "href": format!("{public_url}/compute/v2.1/")},
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

fn version_v20(public_url: &str) -> Value {
    json!({
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [
            {"rel": "self", "href": format!("{public_url}/compute/v2/")},
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}],
    })
}

async fn root_versions(State(s): State<Arc<ComputeState>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"versions": [version_v20(&s.public_url), version_v21(&s.public_url)]}),
    )
}

async fn v21_version(State(s): State<Arc<ComputeState>>, req: Request) -> Response {
    let doc = if req.extensions().get::<LegacyV2>().is_some() {
        version_v20(&s.public_url)
    } else {
        version_v21(&s.public_url)
    };
    json_response(StatusCode::OK, &json!({"version": doc}))
}

async fn not_found(_req: Request) -> ComputeError {
    ComputeError::NotFound("The resource could not be found.".into())
}

async fn bad_method(_req: Request) -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"badMethod": {"code": 405, "message": "The method specified is not allowed for this resource."}}),
    )
}

impl ComputeState {
    /// The compute state over `driver` (which reports its VMMs' exits on
    /// the receiver the monitor follows).
    pub fn new(
        identity: Arc<IdentityState>,
        config: ComputeConfig,
        driver: Arc<dyn driver::ComputeDriver>,
    ) -> Arc<ComputeState> {
        let receivers = [
            config.network.notifier.take_receiver(),
            config.volume.compute_events.take_receiver(),
        ];
        let state = Arc::new(ComputeState {
            instance_events: Default::default(),
            db: identity.db.clone(),
            public_url: identity.public_url.clone(),
            driver,
            locks: locks::ServerLocks::default(),
            images: crate::image::service::ImageService::new(identity.db.clone()),
            console_tokens: consoles::ConsoleTokens::default(),
            flavor_cache: Mutex::new(None),
            server_cache: Default::default(),
            volumes: crate::volume::VolumeState::new(identity.clone(), &config.volume),
            config,
            identity,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            for rx in receivers.into_iter().flatten() {
                tokio::spawn(servers::receive_events(Arc::downgrade(&state), rx));
            }
        }
        state
    }
}

/// Routes of this service, at `/compute`: servers run as VMM processes
/// (`virt`), with the settings `config`.
pub fn router(identity: Arc<IdentityState>, config: ComputeConfig) -> Router {
    let (virt, exits) = virt::Virt::new(
        &identity.db.state_dir(),
        config.jail_vmms,
        config.unpack_kernels,
    );
    if let Some(dataplane) = &config.network.dataplane {
        virt.set_dataplane(dataplane.clone());
    }
    let state = ComputeState::new(identity, config, virt);
    if tokio::runtime::Handle::try_current().is_ok() {
        lifecycle::start_monitor(state.clone(), exits);
    }
    let api: Router = Router::new()
        .route("/", get(root_versions))
        .route("/v2.1", get(v21_version))
        .route("/v2.1/", get(v21_version))
        .merge(aggregates::routes())
        .merge(flavors::routes())
        .merge(keypairs::routes())
        .merge(quotas::routes())
        .merge(hosts::routes())
        .merge(hypervisors::routes())
        .merge(services::routes())
        .merge(tenant_usage::routes())
        .merge(images::routes())
        .merge(network_proxy::routes())
        .merge(volume_proxy::routes())
        .merge(server_groups::routes())
        .merge(servers::routes())
        .merge(server_list::routes())
        .merge(server_metadata::routes())
        .merge(server_subresources::routes())
        .merge(instance_actions::routes())
        .route(
            "/v2.1/servers/{id}/action",
            axum::routing::post(lifecycle::action),
        )
        .route(
            "/v2.1/servers/{id}/remote-consoles",
            axum::routing::post(consoles::remote_console),
        )
        .route("/serial-console", get(consoles::serial_websocket))
        .fallback(not_found)
        .method_not_allowed_fallback(bad_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            negotiate,
        ))
        .with_state(state);
    let service = tower::ServiceBuilder::new()
        .map_request(normalise)
        .service(api);
    Router::new().nest_service("/compute", service)
}

// ------------------------------------------------------------ body helpers

/// Nova's wording of the shared body parser's errors.
impl From<crate::http::body::BodyError> for ComputeError {
    fn from(e: crate::http::body::BodyError) -> Self {
        use crate::http::body::BodyError;
        ComputeError::BadRequest(match e {
            BodyError::Malformed(_) => "Malformed request body".into(),
            BodyError::NotAnObject => "The request body must be a JSON object.".into(),
            BodyError::MemberNotAnObject(key) => {
                format!("Invalid input for field/attribute {key}. Value is not an object.")
            }
            // A member of a member (`keypair.name`) is named as Nova's schema
            // errors name it: the object, then the property it lacks.
            BodyError::Missing(key) => match key.rsplit_once('.') {
                Some((object, member)) => format!(
                    "Invalid input for field/attribute {}. '{member}' is a required property",
                    parent(object)
                ),
                None => format!(
                    "Invalid input for field/attribute {key}: '{key}' is a required property"
                ),
            },
            // Nova names a member by the last step of its path (`ram`, not
            // `flavor.ram`), and an unexpected member by the object it is in.
            BodyError::WrongType { key, expected } => {
                let key = leaf(&key);
                let article = if expected.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                format!(
                    "Invalid input for field/attribute {key}. Value is not {article} {expected}."
                )
            }
            BodyError::BadName(key) => format!(
                "Invalid input for field/attribute {}. Value must be 1 to 255 characters and not blank.",
                leaf(&key)
            ),
            BodyError::Unexpected(key) => match key.rsplit_once('.') {
                Some((object, extra)) => format!(
                    "Invalid input for field/attribute {}. Additional properties are not allowed ('{extra}' was unexpected)",
                    parent(object)
                ),
                None => format!("Additional properties are not allowed ('{key}' was unexpected)"),
            },
            BodyError::Invalid { key, reason } => {
                format!(
                    "Invalid input for field/attribute {}. Value: {reason}",
                    leaf(&key)
                )
            }
        })
    }
}

/// The last member of a body path (`flavor.ram` -> `ram`).
fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// An object of a body path named as the parent of a missing or unexpected
/// member: its last member without the index of a list item
/// (`server.networks[0]` -> `networks`).
fn parent(path: &str) -> &str {
    let last = leaf(path);
    last.split('[').next().unwrap_or(last)
}

/// Query string as a map (the last value of a repeated key wins).
pub fn query_map(query: Vec<(String, String)>) -> HashMap<String, String> {
    query.into_iter().collect()
}

/// Enforces a Nova rule (`os_compute_api:…`) for the caller on the target:
/// 403 "Policy doesn't allow … to be performed." as Nova answers.
pub fn authorize(
    s: &ComputeState,
    ctx: &AuthContext,
    rule: &str,
    target: &Target,
) -> ComputeResult<()> {
    s.identity
        .policy
        .enforce(Service::Compute, &ctx.credentials(), rule, target)
        .map_err(|e| policy_forbids(e.rule()))
}

/// The target of most Nova rules: the project (and user) a thing belongs to.
pub fn owner_target(project_id: &str, user_id: &str) -> Target {
    Target::project(project_id).with("user_id", user_id)
}

/// Whether the caller's context is an admin context (Nova's
/// `context.is_admin`, set from the `context_is_admin` rule): such contexts
/// read other projects' servers and groups and pass instance locks.
pub fn is_admin_context(s: &ComputeState, ctx: &AuthContext) -> bool {
    allows(s, ctx, "context_is_admin", &Target::new())
}

/// Whether a Nova rule allows the caller, for views that show more to
/// those it allows (extended attributes, host status, all projects).
pub fn allows(s: &ComputeState, ctx: &AuthContext, rule: &str, target: &Target) -> bool {
    s.identity
        .policy
        .allows(Service::Compute, &ctx.credentials(), rule, target)
}

/// The last microversion with Nova's proxy APIs (images, networks,
/// security groups, floating IPs); Nova removed them at 2.36.
const LAST_PROXY_MICROVERSION: u16 = 35;

/// A proxy API at `mv`: 404 with `gone` (which service to use instead) from
/// 2.36 on, as Nova.
pub fn proxy_available(mv: Mv, gone: &str) -> ComputeResult<()> {
    if mv.at_least(LAST_PROXY_MICROVERSION + 1) {
        return Err(ComputeError::NotFound(gone.into()));
    }
    Ok(())
}

/// The target Nova builds for calls on no particular object: the caller's
/// own project and user.
pub fn own_target(ctx: &AuthContext) -> Target {
    Target::new()
        .with_opt("project_id", ctx.project_id())
        .with("user_id", ctx.user_id.clone())
}

pub fn policy_forbids(rule: &str) -> ComputeError {
    ComputeError::Forbidden(format!("Policy doesn't allow {rule} to be performed."))
}

/// The caller's project; a token without one cannot use Nova.
pub fn project_of(ctx: &AuthContext) -> ComputeResult<String> {
    ctx.project_id()
        .map(str::to_string)
        .ok_or_else(|| ComputeError::Forbidden("A project-scoped token is required.".into()))
}

/// Nova's timestamp format: `2013-04-25T11:21:43.000000`.
pub fn nova_time(unix: i64) -> String {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000000",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2012-08-20T21:11:09Z`, as Nova writes server timestamps.
pub fn iso_time(unix: i64) -> String {
    use chrono::{Datelike, Timelike};
    // Written by hand: chrono's format machinery is the slowest part of a
    // 1,000-server listing.
    let t = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `limit`/`marker` pagination over items sorted already; `key` gives an
/// item's marker. Returns the page and whether a `next` link is due.
pub fn paginate<T>(
    items: Vec<T>,
    query: &HashMap<String, String>,
    key: impl Fn(&T) -> String,
) -> ComputeResult<(Vec<T>, bool)> {
    let limit = match query.get("limit") {
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| ComputeError::BadRequest("limit param must be an integer".into()))?,
        ),
        None => None,
    };
    let start = match query.get("marker") {
        Some(marker) => {
            let position = items
                .iter()
                .position(|item| key(item) == *marker)
                .ok_or_else(|| ComputeError::BadRequest(format!("marker [{marker}] not found")))?;
            position + 1
        }
        None => 0,
    };
    let rest: Vec<T> = items.into_iter().skip(start).collect();
    match limit {
        Some(limit) if rest.len() >= limit => {
            let more = limit > 0;
            Ok((rest.into_iter().take(limit).collect(), more))
        }
        _ => Ok((rest, false)),
    }
}

/// The `next` link of a paginated collection.
pub fn next_link(
    s: &ComputeState,
    path: &str,
    query: &HashMap<String, String>,
    marker: &str,
) -> Value {
    let mut params: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k.as_str() != "marker")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort();
    params.push(("marker".into(), marker.to_string()));
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    json!([{"rel": "next", "href": format!("{}/{path}?{}", s.v21_url(), qs.join("&"))}])
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An empty 202/204/200 response.
pub fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn body_errors_keep_novas_wording() {
        use request::{body, refused};
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)] // read by Debug only
        struct Server {
            server: Map<String, Value>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Flavor {
            flavor: Map<String, Value>,
        }
        assert_eq!(refused(body::<Server>(b"{")), "Malformed request body");
        assert_eq!(
            refused(body::<Server>(b"[1]")),
            "The request body must be a JSON object."
        );
        assert_eq!(
            refused(body::<Server>(br#"{"server": 1}"#)),
            "Invalid input for field/attribute server. Value is not an object."
        );
        assert_eq!(
            refused(body::<Flavor>(br#"{"server": {}}"#)),
            "Invalid input for field/attribute flavor: 'flavor' is a required property"
        );
        assert_eq!(
            refused(
                body::<Server>(br#"{"server": {"networks": [{"x": 1}]}}"#).and_then(|_| {
                    #[derive(Debug, serde::Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Item {}
                    #[derive(Debug, serde::Deserialize)]
                    #[allow(dead_code)]
                    struct Networks {
                        networks: Vec<Item>,
                    }
                    request::action_arg::<Networks>("server", json!({"networks": [{"x": 1}]}))
                })
            ),
            "Invalid input for field/attribute networks. Additional properties are not allowed ('x' was unexpected)"
        );
    }

    fn normalised(path: &str, accept: Option<&str>) -> (String, Option<String>, bool) {
        let mut builder = Request::builder().uri(path);
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        let req = normalise(builder.body(Body::empty()).expect("request"));
        (
            req.uri().to_string(),
            req.extensions().get::<UrlProject>().map(|p| p.0.clone()),
            req.extensions().get::<LegacyV2>().is_some(),
        )
    }

    #[test]
    fn project_ids_are_lifted_out_of_the_path() {
        assert_eq!(
            normalised("/v2.1/abc123/flavors/detail?limit=1", None),
            (
                "/v2.1/flavors/detail?limit=1".into(),
                Some("abc123".into()),
                false
            )
        );
        assert_eq!(
            normalised("/v2.1/os-keypairs", None),
            ("/v2.1/os-keypairs".into(), None, false)
        );
        assert_eq!(
            normalised("/v2/p1/servers", None),
            ("/v2.1/servers".into(), Some("p1".into()), true)
        );
    }

    #[test]
    fn media_type_selects_the_version_and_the_uri_wins() {
        let mime = Some("application/vnd.openstack.compute.v2.1+json");
        assert_eq!(
            normalised("/214412/flavors", mime),
            ("/v2.1/flavors".into(), Some("214412".into()), false)
        );
        assert_eq!(normalised("/flavors", None).0, "/flavors");
        let old = Some("application/vnd.openstack.compute.v2+json");
        assert!(!normalised("/v2.1/flavors", old).2);
    }

    #[test]
    fn versions_parse_and_range_check() {
        assert_eq!(parse_version("2.10").ok(), Some(10));
        assert_eq!(parse_version("latest").ok(), Some(MAX_MICROVERSION));
        assert!(matches!(
            parse_version("2"),
            Err(ComputeError::BadRequest(_))
        ));
        assert!(matches!(
            parse_version("3.0"),
            Err(ComputeError::NotAcceptable(_))
        ));
        assert!(matches!(
            parse_version("2.0"),
            Err(ComputeError::NotAcceptable(_))
        ));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "openstack-api-version",
            HeaderValue::from_static("volume 3.5, compute 2.53"),
        );
        assert_eq!(requested_version(&headers).ok(), Some(53));
    }

    /// The sources of every handler file, for the rule-name check.
    const HANDLER_SOURCES: &[(&str, &str)] = &[
        ("aggregates.rs", include_str!("aggregates.rs")),
        ("consoles.rs", include_str!("consoles.rs")),
        ("flavors.rs", include_str!("flavors.rs")),
        ("hosts.rs", include_str!("hosts.rs")),
        ("images.rs", include_str!("images.rs")),
        ("keypairs.rs", include_str!("keypairs.rs")),
        ("hypervisors.rs", include_str!("hypervisors.rs")),
        ("instance_actions.rs", include_str!("instance_actions.rs")),
        ("lifecycle/mod.rs", include_str!("lifecycle/mod.rs")),
        ("lifecycle/admin.rs", include_str!("lifecycle/admin.rs")),
        ("lifecycle/console.rs", include_str!("lifecycle/console.rs")),
        ("lifecycle/image.rs", include_str!("lifecycle/image.rs")),
        ("lifecycle/power.rs", include_str!("lifecycle/power.rs")),
        ("lifecycle/rebuild.rs", include_str!("lifecycle/rebuild.rs")),
        ("lifecycle/rescue.rs", include_str!("lifecycle/rescue.rs")),
        ("lifecycle/resize.rs", include_str!("lifecycle/resize.rs")),
        ("lifecycle/shelve.rs", include_str!("lifecycle/shelve.rs")),
        ("mod.rs", include_str!("mod.rs")),
        ("quotas.rs", include_str!("quotas.rs")),
        ("server_groups.rs", include_str!("server_groups.rs")),
        ("server_list.rs", include_str!("server_list.rs")),
        ("server_metadata.rs", include_str!("server_metadata.rs")),
        (
            "server_subresources.rs",
            include_str!("server_subresources.rs"),
        ),
        ("server_views.rs", include_str!("server_views.rs")),
        ("servers.rs", include_str!("servers.rs")),
        ("services.rs", include_str!("services.rs")),
        ("tenant_usage.rs", include_str!("tenant_usage.rs")),
    ];

    /// Every string literal in `text` that starts with a Nova rule prefix
    /// (`os_compute_api:…`, `compute:…`) and names a rule.
    fn nova_rule_names(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        for prefix in ["\"os_compute_api:", "\"compute:"] {
            for (at, _) in text.match_indices(prefix) {
                let rest = &text[at + 1..];
                let name = rest.split('"').next().unwrap_or_default();
                if name.len() > prefix.len()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_:-".contains(c))
                {
                    names.push(name.to_string());
                }
            }
        }
        names
    }

    #[test]
    fn every_rule_the_handlers_name_is_a_nova_default() {
        let policy = crate::policy::Policy::defaults().expect("defaults");
        let mut seen = 0;
        for (file, text) in HANDLER_SOURCES {
            for name in nova_rule_names(text) {
                seen += 1;
                assert!(
                    policy.has_rule(Service::Compute, &name),
                    "{file} names {name}, which Nova does not define"
                );
            }
        }
        assert!(seen > 100, "only {seen} rule names found");
        for glance in ["get_images", "get_image", "delete_image", "modify_image"] {
            assert!(policy.has_rule(Service::Image, glance), "{glance}");
        }
        assert!(policy.has_rule(Service::Compute, "context_is_admin"));
        assert!(policy.has_rule(Service::Image, "context_is_admin"));
    }
}
