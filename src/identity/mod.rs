//! Keystone v3 (`/identity`): tokens, the assignment model, the catalog.
//!
//! Layout. Handlers (axum routes, one file per resource group): `token`
//! issues tokens and answers the `/v3/auth/*` calls; `resources` domains
//! and projects; `users` users and groups; `roles` roles, implied roles and
//! assignments; `catalog` regions, services and endpoints; `credentials`
//! application and EC2-style credentials; `policies` policy blobs and
//! endpoint groups; `limits` unified limits; `trusts` OS-TRUST trusts.
//!
//! Leaves (shared by the handlers, which never import each other; no axum
//! in them but `throttle`'s client-address extractor): `context` the
//! caller ([`AuthContext`], `Scope`); `validation` token validation behind
//! the [`Auth`] extractor every service uses; `effective_roles` role
//! resolution (direct, group, inherited and implied assignments);
//! `targets` policy targets and the lookups handlers share;
//! `service_catalog` the catalog put into tokens; `trust_scope` what a
//! trust-scoped token may carry; `login` password and
//! secret checks; `access_rules`, `throttle`, `password` (the KDF), `views`
//! (the JSON shapes); `bootstrap` the first start. Request bodies are
//! declared serde types in each handler file, read through `requests`
//! (the resource member, names, null rules) and `crate::http::body`,
//! worded here (`From<BodyError>`).

mod access_rules;
pub mod bootstrap;
mod catalog;
pub mod context;
mod credentials;
mod domain_config;
pub mod effective_roles;
mod ep_filter;
mod federated_login;
mod federation;
mod hierarchy;
pub mod limits;
mod login;
mod mapping;
mod oidc;
pub mod password;
mod password_history;
mod policies;
mod requests;
mod resources;
mod roles;
mod service_catalog;
mod targets;
pub mod throttle;
pub mod token;
mod trust_scope;
mod trusts;
mod user_access_rules;
mod users;
mod validation;
mod views;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::db::{Db, DbError};
use crate::http::body::BodyError;
use crate::http::json_response;
use crate::http::ratelimit::ValidatedTokens;
use crate::policy::{Policy, Service, Target};

pub use context::AuthContext;

/// Errors of the identity service, rendered as Keystone renders them.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("You are not authorized to perform the requested action: {0}.")]
    Forbidden(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// The state file failed.
    #[error("internal error: {0}")]
    Db(#[from] DbError),
    /// Something else failed on our side.
    #[error("internal error: {0}")]
    Internal(String),
    /// The client must slow down (rate limit, or the password pool is full).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        /// Seconds to put into `Retry-After`.
        retry_after: u64,
    },
}

pub type IdentityResult<T> = Result<T, IdentityError>;

impl IdentityError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            IdentityError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad Request"),
            IdentityError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            IdentityError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            IdentityError::NotFound(_) => (StatusCode::NOT_FOUND, "Not Found"),
            IdentityError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            IdentityError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            }
            IdentityError::Db(e) if e.is_unique_violation() => (StatusCode::CONFLICT, "Conflict"),
            IdentityError::Db(_) | IdentityError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        let (status, title) = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "identity request failed");
        }
        let message = match &self {
            IdentityError::Db(DbError::Conflict(m)) => m.clone(),
            other => other.to_string(),
        };
        let body = json!({"error": {"code": status.as_u16(), "title": title, "message": message}});
        let mut response = json_response(status, &body);
        if let IdentityError::TooManyRequests { retry_after, .. } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        // (A 401 gets `WWW-Authenticate` from `http::www_authenticate`.)
        response
    }
}

/// Keystone's wording of a malformed request body.
impl From<BodyError> for IdentityError {
    fn from(e: BodyError) -> Self {
        IdentityError::BadRequest(match e {
            BodyError::Malformed(m) => format!("Malformed JSON in the request body: {m}"),
            BodyError::NotAnObject => "The request body must be a JSON object.".into(),
            BodyError::MemberNotAnObject(key) => format!("'{key}' must be an object."),
            BodyError::Missing(key) => format!("'{key}' is a required property."),
            BodyError::WrongType { key, expected } => {
                let article = if expected.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                format!("Invalid input for field '{key}': not {article} {expected}.")
            }
            BodyError::BadName(key) => format!(
                "Invalid input for field '{key}': must be 1 to 255 characters and not blank."
            ),
            BodyError::Unexpected(key) => {
                format!("Additional properties are not allowed ('{key}' was unexpected).")
            }
            BodyError::Invalid { key, reason } => {
                format!("Invalid input for field '{key}': {reason}.")
            }
        })
    }
}

impl From<password::PasswordError> for IdentityError {
    fn from(e: password::PasswordError) -> Self {
        match e {
            password::PasswordError::Busy => IdentityError::TooManyRequests {
                message: e.to_string(),
                retry_after: 1,
            },
            other => IdentityError::Internal(other.to_string()),
        }
    }
}

/// Shared state of the identity service.
pub struct IdentityState {
    pub db: Db,
    /// Public URL of the whole server, without a trailing slash.
    pub public_url: String,
    /// Token lifetime in seconds.
    pub token_ttl: i64,
    /// Validated tokens by hash, with the epoch at which they were validated.
    token_cache: RwLock<HashMap<String, (u64, Arc<AuthContext>)>>,
    /// Bumped on every identity write: cached validations older than it are redone.
    epoch: AtomicU64,
    /// Bumped after every identity write, also those that keep the
    /// validation cache (a token issue may make a federated user): the
    /// rendered user list below is read again after any of them.
    generation: AtomicU64,
    /// `GET /v3/users`' rendered rows with the generation they were read
    /// at (the hot read of issue 17: no blocking-pool hop while nothing
    /// changed). Authorization and filters still run per request.
    users_view: RwLock<Option<(u64, Arc<Vec<Value>>)>>,
    /// Who may do what, for every service (src/policy).
    pub policy: Arc<Policy>,
    /// Rate limits, lockout and pool sizes for authentication.
    pub limits: throttle::AuthLimits,
    /// Per-source and per-user buckets of failed checks.
    pub throttle: throttle::AuthThrottle,
    /// The bounded Argon2 pool every password check and hash runs on.
    pub passwords: password::PasswordPool,
    /// Keystone's `[trust] max_redelegation_count` (`serve --trust-max-redelegation-count`).
    pub trust_max_redelegation_count: u64,
    /// OpenID Connect token checks: accepted audiences and the issuers' cached keys.
    pub oidc: oidc::OidcVerifier,
}

/// The identity service's settings from `yunhe serve`'s flags.
pub struct IdentityConfig {
    /// Lifetime of issued tokens, in seconds.
    pub token_ttl: i64,
    /// Rate limits, lockout and pool sizes for authentication.
    pub limits: throttle::AuthLimits,
    /// How deep a trust may be redelegated.
    pub trust_max_redelegation_count: u64,
    /// Audiences accepted in an OpenID Connect token's `aud` (none: `yunhe`).
    pub oidc_audiences: Vec<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            token_ttl: 3600,
            limits: throttle::AuthLimits::default(),
            trust_max_redelegation_count: trust_scope::DEFAULT_MAX_REDELEGATION_COUNT as u64,
            oidc_audiences: Vec::new(),
        }
    }
}

impl IdentityState {
    pub fn new(
        db: Db,
        public_url: String,
        policy: Arc<Policy>,
        config: IdentityConfig,
    ) -> IdentityResult<Arc<IdentityState>> {
        let IdentityConfig {
            token_ttl,
            limits,
            trust_max_redelegation_count,
            oidc_audiences,
        } = config;
        let passwords =
            password::PasswordPool::start(limits.hash_workers, limits.hash_queue_depth)?;
        Ok(Arc::new(IdentityState {
            db,
            public_url,
            token_ttl,
            token_cache: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(1),
            generation: AtomicU64::new(1),
            users_view: RwLock::new(None),
            policy,
            throttle: throttle::AuthThrottle::new(&limits),
            limits,
            passwords,
            trust_max_redelegation_count,
            oidc: oidc::OidcVerifier::new(&oidc_audiences),
        }))
    }

    /// Enforces an identity rule (`identity:…`) for the caller on the target.
    pub fn authorize(&self, ctx: &AuthContext, rule: &str, target: &Target) -> IdentityResult<()> {
        self.policy
            .enforce(Service::Identity, &ctx.credentials(), rule, target)
            .map_err(|e| IdentityError::Forbidden(e.rule().to_string()))
    }

    /// Base of every identity link: `<public>/identity/v3`.
    pub fn v3_url(&self) -> String {
        format!("{}/identity/v3", self.public_url)
    }

    /// True when the token with this hash (`token::hash_token`) passed a
    /// validation and has not expired: a memory lookup, no database read
    /// (the API rate limits key requests by such tokens).
    pub fn token_was_validated(&self, token_hash: &str) -> bool {
        let now = crate::db::now_unix();
        self.token_cache.read().is_ok_and(|cache| {
            cache
                .get(token_hash)
                .is_some_and(|(_, ctx)| ctx.expires_unix > now)
        })
    }

    /// Runs an identity write in one transaction and invalidates cached token validations.
    pub async fn write<F, T>(&self, f: F) -> IdentityResult<T>
    where
        F: FnOnce(&rusqlite::Transaction) -> IdentityResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let result = self.write_keeping_cache(f).await;
        self.epoch.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// Like [`IdentityState::write`] for writes that cannot change any
    /// token's validity (issuing a token), so the validation cache stays warm.
    pub async fn write_keeping_cache<F, T>(&self, f: F) -> IdentityResult<T>
    where
        F: FnOnce(&rusqlite::Transaction) -> IdentityResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let result = self
            .db
            .write(move |tx| match f(tx) {
                Ok(value) => Ok(Ok(value)),
                Err(IdentityError::Db(e)) => Err(e),
                Err(other) => Ok(Err(other)),
            })
            .await;
        // After the commit: a read that began before it stored what it read
        // under the old generation, so it is read again.
        self.generation.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(inner) => inner,
            Err(e) => Err(IdentityError::Db(e)),
        }
    }

    /// Runs an identity read.
    pub async fn read<F, T>(&self, f: F) -> IdentityResult<T>
    where
        F: FnOnce(&rusqlite::Connection) -> IdentityResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match self.db.read(move |conn| Ok(f(conn))).await {
            Ok(inner) => inner,
            Err(e) => Err(IdentityError::Db(e)),
        }
    }

    /// Every user rendered with [`views::user`], in name order: from memory
    /// when no identity write happened since the last read (up to
    /// [`USERS_VIEW_MAX`] users are kept), else from the state file.
    pub async fn users_view(&self) -> IdentityResult<Arc<Vec<Value>>> {
        // Read before the rows: a write committed meanwhile moves it on.
        let generation = self.generation.load(Ordering::SeqCst);
        if let Ok(cached) = self.users_view.read()
            && let Some((seen, rows)) = cached.as_ref()
            && *seen == generation
        {
            return Ok(rows.clone());
        }
        let base = self.v3_url();
        let rows = self
            .read(move |conn| {
                Ok(crate::db::identity::list_users(conn)?
                    .iter()
                    .map(|user| views::user(user, &base))
                    .collect::<Vec<_>>())
            })
            .await?;
        let rows = Arc::new(rows);
        if rows.len() <= USERS_VIEW_MAX
            && let Ok(mut cached) = self.users_view.write()
        {
            *cached = Some((generation, rows.clone()));
        }
        Ok(rows)
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// The API rate limiter counts a request by its token once the token passed
/// a validation here (a memory lookup).
impl ValidatedTokens for IdentityState {
    fn validated_key(&self, token: &str) -> Option<[u8; 16]> {
        let hash = validation::hash_token(token);
        let mut key = [0u8; 16];
        let prefix = hash.get(..32)?;
        (hex::decode_to_slice(prefix, &mut key).is_ok() && self.token_was_validated(&hash))
            .then_some(key)
    }
}

/// The authenticated caller of a request, extracted from `X-Auth-Token`.
pub struct Auth(pub Arc<AuthContext>);

/// Types that hold the identity state (the server's shared state).
pub trait HasIdentity {
    fn identity(&self) -> &Arc<IdentityState>;
}

impl HasIdentity for Arc<IdentityState> {
    fn identity(&self) -> &Arc<IdentityState> {
        self
    }
}

impl<S> FromRequestParts<S> for Auth
where
    S: HasIdentity + Send + Sync,
{
    type Rejection = IdentityError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                IdentityError::Unauthorized(
                    "The request you have made requires authentication.".into(),
                )
            })?;
        let ctx = validation::validate(state.identity(), &token)
            .await
            .map_err(|e| match e {
                IdentityError::NotFound(_) | IdentityError::Unauthorized(_) => {
                    IdentityError::Unauthorized(
                        "The request you have made requires authentication.".into(),
                    )
                }
                other => other,
            })?;
        // An application credential's access rules bind every service: the
        // full path as the client sent it (services are nested, so the
        // router's own URI has lost its mount point).
        if !ctx.access_rules.is_empty() {
            let path = parts
                .extensions
                .get::<axum::extract::OriginalUri>()
                .map_or_else(|| parts.uri.path(), |original| original.0.path());
            if !access_rules::allows(&ctx.access_rules, parts.method.as_str(), path) {
                return Err(IdentityError::Unauthorized(
                    "The request you have made requires authentication.".into(),
                ));
            }
        }
        Ok(Auth(ctx))
    }
}

/// The Keystone router, to be nested at `/identity`.
pub fn router(state: Arc<IdentityState>) -> Router {
    Router::new()
        .route("/", get(root_versions))
        .route("/v3", get(v3_version))
        .route("/v3/", get(v3_version))
        .route(
            "/v3/auth/tokens",
            post(token::issue)
                .get(token::show)
                .head(token::check)
                .delete(token::revoke),
        )
        .route("/v3/auth/catalog", get(token::auth_catalog))
        .route("/v3/auth/projects", get(token::auth_projects))
        .route("/v3/auth/domains", get(token::auth_domains))
        .route("/v3/auth/system", get(token::auth_system))
        .merge(resources::routes())
        .merge(users::routes())
        .merge(roles::routes())
        .merge(catalog::routes())
        .merge(credentials::routes())
        .merge(policies::routes())
        .merge(limits::routes())
        .merge(user_access_rules::routes())
        .merge(ep_filter::routes())
        .merge(domain_config::routes())
        .merge(federation::routes())
        .merge(trusts::routes())
        .route(
            "/v3/{*rest}",
            get(not_found)
                .post(not_found)
                .put(not_found)
                .patch(not_found),
        )
        .fallback(not_found_any)
        .with_state(state)
}

async fn not_found() -> IdentityError {
    IdentityError::NotFound("The resource could not be found.".into())
}

async fn not_found_any(_req: Request) -> IdentityError {
    IdentityError::NotFound("The resource could not be found.".into())
}

fn version_json(public_url: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{public_url}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

pub async fn root_versions(
    axum::extract::State(s): axum::extract::State<Arc<IdentityState>>,
) -> Response {
    json_response(
        StatusCode::MULTIPLE_CHOICES,
        &json!({"versions": {"values": [version_json(&s.public_url)]}}),
    )
}

async fn v3_version(axum::extract::State(s): axum::extract::State<Arc<IdentityState>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"version": version_json(&s.public_url)}),
    )
}

// ------------------------------------------------------------ helpers

/// A new resource id: 32 lowercase hex digits, as Keystone makes them.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Applies `?attr[__op]=value` filters to a list of JSON entities.
pub fn apply_filters(
    items: Vec<Value>,
    query: &HashMap<String, String>,
    allowed: &[&str],
) -> Vec<Value> {
    let filters: Vec<(&str, &str, &str)> = query
        .iter()
        .filter_map(|(k, v)| {
            let (attr, op) = crate::http::split_filter_key(k);
            allowed.contains(&attr).then_some((attr, op, v.as_str()))
        })
        .collect();
    items
        .into_iter()
        .filter(|item| {
            filters
                .iter()
                .all(|(attr, op, wanted)| crate::http::filter_matches(item.get(*attr), op, wanted))
        })
        .collect()
}

/// A list as most Keystone collections have it, behind the rule `action`
/// (`identity:list_…`) on `target`: every row, rendered, filtered by the
/// allowed query attributes. `path` is the collection's path below `/v3`
/// (for its `self` link).
pub async fn admin_list<T, L, V>(
    state: &Arc<IdentityState>,
    ctx: &AuthContext,
    (action, target): (&str, &Target),
    (collection, path): (&'static str, &str),
    load: L,
    view: V,
    (query, allowed): (&HashMap<String, String>, &[&str]),
) -> IdentityResult<Response>
where
    T: Send + 'static,
    L: FnOnce(&rusqlite::Connection) -> crate::db::DbResult<Vec<T>> + Send + 'static,
    V: Fn(&T, &str) -> Value + Send + 'static,
{
    state.authorize(ctx, action, target)?;
    let base = state.v3_url();
    let items = state
        .read(move |conn| Ok(load(conn)?.iter().map(|item| view(item, &base)).collect()))
        .await?;
    let items = apply_filters(items, query, allowed);
    Ok(list_response(
        collection,
        items,
        format!("{}/{path}", state.v3_url()),
    ))
}

/// A delete behind the rule `action` (`identity:delete_…`) on `target`:
/// `remove` runs in one write transaction and fails with NotFound when the
/// id names nothing; the answer is 204.
pub async fn admin_delete<F>(
    state: &Arc<IdentityState>,
    ctx: &AuthContext,
    (action, target): (&str, &Target),
    id: String,
    remove: F,
) -> IdentityResult<Response>
where
    F: FnOnce(&rusqlite::Connection, &str) -> IdentityResult<()> + Send + 'static,
{
    state.authorize(ctx, action, target)?;
    state.write(move |tx| remove(tx, &id)).await?;
    Ok(crate::http::no_content())
}

/// The most users [`IdentityState::users_view`] keeps in memory.
pub const USERS_VIEW_MAX: usize = 2000;

/// The items matching the allowed query filters, as [`apply_filters`]
/// picks them, borrowed.
pub fn matching<'a>(
    items: &'a [Value],
    query: &HashMap<String, String>,
    allowed: &[&str],
) -> Vec<&'a Value> {
    let filters: Vec<(&str, &str, &str)> = query
        .iter()
        .filter_map(|(k, v)| {
            let (attr, op) = crate::http::split_filter_key(k);
            allowed.contains(&attr).then_some((attr, op, v.as_str()))
        })
        .collect();
    items
        .iter()
        .filter(|item| {
            filters
                .iter()
                .all(|(attr, op, wanted)| crate::http::filter_matches(item.get(*attr), op, wanted))
        })
        .collect()
}

/// `{"<collection>": [...], "links": {...}}` as Keystone lists things.
pub fn list_response(collection: &str, items: Vec<Value>, self_url: String) -> Response {
    json_response(
        StatusCode::OK,
        &json!({collection: items, "links": {"self": self_url, "previous": null, "next": null}}),
    )
}

#[cfg(test)]
mod tests {
    use crate::policy::{Policy, Service};

    /// The identity sources, scanned for the rule names their handlers pass.
    const SOURCES: [(&str, &str); 13] = [
        ("mod.rs", include_str!("mod.rs")),
        ("resources.rs", include_str!("resources.rs")),
        ("users.rs", include_str!("users.rs")),
        ("roles.rs", include_str!("roles.rs")),
        ("catalog.rs", include_str!("catalog.rs")),
        ("policies.rs", include_str!("policies.rs")),
        ("credentials.rs", include_str!("credentials.rs")),
        ("token.rs", include_str!("token.rs")),
        ("user_access_rules.rs", include_str!("user_access_rules.rs")),
        ("ep_filter.rs", include_str!("ep_filter.rs")),
        ("domain_config.rs", include_str!("domain_config.rs")),
        ("federation.rs", include_str!("federation.rs")),
        ("trusts.rs", include_str!("trusts.rs")),
    ];

    /// Every quoted `"identity:<rule>"` in the sources.
    fn rule_names(source: &str) -> Vec<String> {
        let mut names = Vec::new();
        for (start, _) in source.match_indices("\"identity:") {
            let rest = &source[start + 1..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            if len > "identity:".len() && rest[len..].starts_with('"') {
                names.push(rest[..len].to_string());
            }
        }
        names
    }

    /// Quoted names that are messages, not rules handlers pass.
    const NOT_RULES: [&str; 1] = ["identity:rescope_application_credential_token"];

    #[test]
    fn every_rule_a_handler_passes_is_a_keystone_default() {
        let policy = Policy::defaults().expect("defaults parse");
        let mut seen = 0;
        for (file, source) in SOURCES {
            for name in rule_names(source) {
                if NOT_RULES.contains(&name.as_str()) {
                    continue;
                }
                assert!(
                    policy.has_rule(Service::Identity, &name),
                    "{file}: {name} is not one of Keystone's rules"
                );
                seen += 1;
            }
        }
        assert!(seen > 90, "only {seen} rule names found");
    }
}
