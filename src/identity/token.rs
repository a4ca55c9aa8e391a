//! Tokens: `POST/GET/HEAD/DELETE /v3/auth/tokens` and the `/v3/auth/*`
//! discovery calls (validation itself is `validation`'s).
//!
//! A token is 32 random bytes (base64url); only its SHA-256 is stored, with
//! the user, scope, methods and expiry. Roles are not frozen into the token:
//! validation recomputes them, so a token stops working as soon as the user
//! is disabled or deleted, loses the role, or the project goes away.
//! Validations are cached in memory and the cache is invalidated by any
//! identity write, so validating never hashes a password and usually never
//! touches the disk.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::Rng;
use rusqlite::Connection;
use serde_json::{Value, json};

pub use super::validation::{hash_token, validate};

use super::context::{AuthContext, Scope};
use super::requests::member;
use super::throttle::ClientAddr;
use super::trust_scope::{self, TrustScopeError};
use super::validation::build_context;
use super::{Auth, IdentityError, IdentityResult, IdentityState};
use super::{effective_roles, service_catalog, views};
use crate::db::identity::trusts;
use crate::db::identity::{self as store, TokenRecord, User};
use crate::db::now_unix;
use crate::http::body::{BodyError, Object, decode};
use crate::http::json_response;
use crate::policy::Target;

fn format_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn new_audit_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unauthorized() -> IdentityError {
    IdentityError::Unauthorized("The request you have made requires authentication.".into())
}

/// The `auth` member of `POST /v3/auth/tokens`. Keystone's schema lets
/// unknown members through, so these types do too.
#[derive(Debug, serde::Deserialize)]
struct AuthRequest {
    identity: IdentityRequest,
    /// `"unscoped"`, or an object naming one scope ([`RequestedScope::read`]).
    #[serde(default)]
    scope: Option<Value>,
}

/// How the caller authenticates: the `methods`, the first of which is
/// used, and each method's member.
#[derive(Debug, serde::Deserialize)]
struct IdentityRequest {
    methods: Option<Vec<String>>,
    password: Option<PasswordMethod>,
    token: Option<TokenMethod>,
    application_credential: Option<AppCredMethod>,
    /// The other methods' members (`totp`, a federated protocol's), by name.
    #[serde(flatten)]
    others: Object,
}

#[derive(Debug, serde::Deserialize)]
struct PasswordMethod {
    user: Option<UserSpec>,
}

/// A user as a client names one: `{"id": ...}` or `{"name": ..., "domain":
/// {...}}`, with the password of the `password` method.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct UserSpec {
    id: Option<String>,
    name: Option<String>,
    domain: Option<DomainSpec>,
    password: Option<String>,
}

/// A domain as a client names one: `{"id": ...}` or `{"name": ...}`.
#[derive(Debug, Clone, serde::Deserialize)]
struct DomainSpec {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct TokenMethod {
    id: Option<String>,
}

/// An application credential by id, or by name and user, with its secret.
#[derive(Debug, Clone, serde::Deserialize)]
struct AppCredMethod {
    id: Option<String>,
    name: Option<String>,
    user: Option<UserSpec>,
    secret: Option<String>,
}

/// The member of a federated method (`{"identity_provider": ..., "protocol": ...}`).
#[derive(Debug, serde::Deserialize)]
struct FederatedMethod {
    identity_provider: String,
    protocol: Option<String>,
}

/// The scope a token is asked for.
#[derive(Debug)]
enum RequestedScope {
    /// `"scope": "unscoped"`.
    Unscoped,
    Spec(ScopeSpec),
}

/// `{"project": ...}`, `{"domain": ...}`, `{"system": {"all": true}}` or
/// `{"OS-TRUST:trust": {"id": ...}}` (looked at in that order: trust first).
#[derive(Debug, serde::Deserialize)]
struct ScopeSpec {
    project: Option<ProjectSpec>,
    domain: Option<DomainSpec>,
    system: Option<SystemSpec>,
    #[serde(rename = "OS-TRUST:trust")]
    trust: Option<TrustSpec>,
}

/// A project by id, or by name and domain.
#[derive(Debug, serde::Deserialize)]
struct ProjectSpec {
    id: Option<String>,
    name: Option<String>,
    domain: Option<DomainSpec>,
}

#[derive(Debug, serde::Deserialize)]
struct SystemSpec {
    all: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
struct TrustSpec {
    id: Option<String>,
}

impl RequestedScope {
    /// The `scope` member: absent or `null` is none.
    fn read(value: Option<Value>) -> IdentityResult<Option<Self>> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s == "unscoped" => Ok(Some(RequestedScope::Unscoped)),
            Some(object @ Value::Object(_)) => Ok(Some(RequestedScope::Spec(decode(object)?))),
            Some(_) => Err(scope_not_known()),
        }
    }
}

fn scope_not_known() -> IdentityError {
    IdentityError::BadRequest("The scope is not one Keystone knows.".into())
}

impl IdentityRequest {
    /// The first authentication method, whose member must be there.
    fn first_method(&self) -> IdentityResult<&str> {
        let method = self
            .methods
            .as_ref()
            .and_then(|m| m.first())
            .ok_or_else(|| {
                IdentityError::BadRequest("'methods' is a required non-empty list.".into())
            })?;
        let present = match method.as_str() {
            "password" => self.password.is_some(),
            "token" => self.token.is_some(),
            "application_credential" => self.application_credential.is_some(),
            other => self.others.contains_key(other),
        };
        if !present {
            return Err(BodyError::Missing(method.clone()).into());
        }
        Ok(method)
    }

    /// The identity of a rescope with an unscoped token.
    fn with_token(id: String) -> Self {
        IdentityRequest {
            methods: Some(vec!["token".into()]),
            password: None,
            token: Some(TokenMethod { id: Some(id) }),
            application_credential: None,
            others: Object::new(),
        }
    }
}

/// Finds a domain from `{"id": ...}` or `{"name": ...}`.
fn find_domain(conn: &Connection, spec: &DomainSpec) -> IdentityResult<Option<store::Domain>> {
    if let Some(id) = &spec.id {
        return Ok(store::get_domain(conn, id)?);
    }
    if let Some(name) = &spec.name {
        return Ok(store::get_domain_by_name(conn, name)?);
    }
    Err(IdentityError::BadRequest(
        "A domain needs an id or a name.".into(),
    ))
}

/// Finds a user from `{"id": ...}` or `{"name": ..., "domain": {...}}`;
/// None when the domain or the user does not exist.
fn find_user(conn: &Connection, spec: &UserSpec) -> IdentityResult<Option<User>> {
    if let Some(id) = &spec.id {
        return Ok(store::get_user(conn, id)?);
    }
    let name = spec.name.as_deref().ok_or_else(|| {
        IdentityError::BadRequest("A user needs an id, or a name and a domain.".into())
    })?;
    let domain_spec = spec
        .domain
        .as_ref()
        .ok_or_else(|| IdentityError::BadRequest("A user given by name needs a domain.".into()))?;
    match find_domain(conn, domain_spec)? {
        Some(domain) => Ok(store::get_user_by_name(conn, &domain.id, name)?),
        None => Ok(None),
    }
}

/// The per-user rate-limit key of a user as the client named it.
fn user_key(spec: &UserSpec) -> String {
    if let Some(id) = &spec.id {
        return format!("id:{id}");
    }
    let domain = spec.domain.as_ref();
    format!(
        "name:{}|{}|{}",
        domain.and_then(|d| d.id.as_deref()).unwrap_or(""),
        domain.and_then(|d| d.name.as_deref()).unwrap_or(""),
        spec.name.as_deref().unwrap_or("")
    )
}

/// Finds the application credential an `application_credential` method names.
fn find_app_cred(
    conn: &Connection,
    payload: &AppCredMethod,
) -> IdentityResult<Option<store::AppCredential>> {
    if let Some(id) = &payload.id {
        return Ok(store::get_app_cred(conn, id)?);
    }
    let name = payload.name.as_deref().ok_or_else(|| {
        IdentityError::BadRequest(
            "An application credential needs an id or a name and a user.".into(),
        )
    })?;
    let user_spec = payload.user.as_ref().ok_or_else(|| {
        IdentityError::BadRequest("An application credential given by name needs a user.".into())
    })?;
    let Some(user) = find_user(conn, user_spec)? else {
        return Ok(None);
    };
    Ok(store::list_app_creds(conn, &user.id)?
        .into_iter()
        .find(|c| c.name == name))
}

/// True when the credential's user still holds every role it was made with.
fn app_cred_roles_held(conn: &Connection, cred: &store::AppCredential) -> IdentityResult<bool> {
    let held =
        effective_roles::effective_role_ids(conn, &cred.user_id, "project", &cred.project_id)?;
    Ok(cred.roles.iter().all(|role| held.contains(role)))
}

/// What was proved before the token write: the secret that matched.
enum Verified {
    /// The method carries no secret (`token`).
    Nothing,
    Password {
        user_id: String,
        hash: String,
    },
    AppCred {
        cred_id: String,
        hash: String,
    },
}

/// Checks a password or secret, outside any transaction, on the bounded pool.
async fn verify_secret(
    state: &Arc<IdentityState>,
    client: &ClientAddr,
    identity: &IdentityRequest,
) -> IdentityResult<Verified> {
    match identity.first_method()? {
        "password" => {
            let user_spec = identity
                .password
                .as_ref()
                .and_then(|p| p.user.clone())
                .ok_or_else(|| BodyError::Missing("user".into()))?;
            let password = user_spec
                .password
                .clone()
                .ok_or_else(|| BodyError::Missing("password".into()))?;
            let key = user_key(&user_spec);
            let verified = super::login::check_password(
                state,
                client,
                key,
                move |conn| find_user(conn, &user_spec),
                &password,
            )
            .await?;
            Ok(Verified::Password {
                user_id: verified.user.id,
                hash: verified.password_hash,
            })
        }
        "application_credential" => {
            let Some(payload) = identity.application_credential.clone() else {
                return Err(BodyError::Missing("application_credential".into()).into());
            };
            let secret = payload
                .secret
                .clone()
                .ok_or_else(|| BodyError::Missing("secret".into()))?;
            let key = match &payload.id {
                Some(id) => format!("app_cred:{id}"),
                None => format!(
                    "app_cred:{}|{}",
                    user_key(payload.user.as_ref().unwrap_or(&UserSpec::default())),
                    payload.name.as_deref().unwrap_or("")
                ),
            };
            let cred = super::login::check_app_cred_secret(
                state,
                client,
                key,
                move |conn| find_app_cred(conn, &payload),
                &secret,
            )
            .await?;
            Ok(Verified::AppCred {
                cred_id: cred.id,
                hash: cred.secret_hash,
            })
        }
        _ => Ok(Verified::Nothing),
    }
}

/// Who authenticated, and what the methods carried over from an earlier token.
struct Authenticated {
    user: User,
    methods: Vec<String>,
    expires_unix: Option<i64>,
    audit_ids: Vec<String>,
    app_cred: Option<store::AppCredential>,
    /// The scope of the token used for a `token` authentication.
    previous_scope: Option<(String, String)>,
}

/// Finishes an authentication inside the token write: the secret was
/// checked before (`verified`); here the user or credential is loaded again
/// and must still carry the hash that matched.
fn authenticate(
    conn: &Connection,
    identity: &IdentityRequest,
    now: i64,
    verified: &Verified,
) -> IdentityResult<Authenticated> {
    let authenticated = match identity.first_method()? {
        "password" => {
            let Verified::Password { user_id, hash } = verified else {
                return Err(unauthorized());
            };
            let user = store::get_user(conn, user_id)?.ok_or_else(unauthorized)?;
            if user.password_hash.as_deref() != Some(hash.as_str()) {
                return Err(unauthorized());
            }
            Authenticated {
                user,
                methods: vec!["password".into()],
                expires_unix: None,
                audit_ids: vec![new_audit_id()],
                app_cred: None,
                previous_scope: None,
            }
        }
        "token" => {
            let token = identity
                .token
                .as_ref()
                .and_then(|t| t.id.as_deref())
                .ok_or_else(|| BodyError::Missing("id".into()))?;
            // Keystone: a token that does not validate is not found (404), not 401.
            let not_found = || IdentityError::NotFound("Could not find token.".into());
            let record = store::get_token(conn, &hash_token(token))?.ok_or_else(not_found)?;
            let previous = build_context(conn, &record, now).map_err(|_| not_found())?;
            if previous.trust.is_some() {
                return Err(IdentityError::Forbidden(
                    "Using trust-scoped token to create another token. Create a new trust-scoped token instead".into(),
                ));
            }
            if previous.app_cred.is_some() {
                return Err(IdentityError::Forbidden(
                    "identity:rescope_application_credential_token".into(),
                ));
            }
            let user = store::get_user(conn, &previous.user_id)?.ok_or_else(unauthorized)?;
            let mut methods = previous.methods.clone();
            if !methods.iter().any(|m| m == "token") {
                methods.push("token".into());
            }
            let original_audit = previous
                .audit_ids
                .last()
                .cloned()
                .unwrap_or_else(new_audit_id);
            Authenticated {
                user,
                methods,
                expires_unix: Some(previous.expires_unix),
                audit_ids: vec![new_audit_id(), original_audit],
                app_cred: None,
                previous_scope: Some((record.scope_type.clone(), record.scope_id.clone())),
            }
        }
        "application_credential" => {
            let Verified::AppCred { cred_id, hash } = verified else {
                return Err(unauthorized());
            };
            let cred = store::get_app_cred(conn, cred_id)?.ok_or_else(unauthorized)?;
            if cred.expires_at_micros.is_some_and(|t| t / 1_000_000 <= now)
                || cred.secret_hash != *hash
                || !app_cred_roles_held(conn, &cred)?
            {
                return Err(unauthorized());
            }
            let user = store::get_user(conn, &cred.user_id)?.ok_or_else(unauthorized)?;
            Authenticated {
                user,
                methods: vec!["application_credential".into()],
                expires_unix: cred.expires_at_micros.map(|t| t / 1_000_000),
                audit_ids: vec![new_audit_id()],
                app_cred: Some(cred),
                previous_scope: None,
            }
        }
        other => {
            return Err(IdentityError::Unauthorized(format!(
                "Attempted to authenticate with an unsupported method: {other}."
            )));
        }
    };
    let domain =
        store::get_domain(conn, &authenticated.user.domain_id)?.ok_or_else(unauthorized)?;
    if !authenticated.user.enabled || !domain.enabled {
        return Err(unauthorized());
    }
    if matches!(verified, Verified::Password { .. }) {
        super::login::clear_failures(conn, &authenticated.user.id)?;
    }
    Ok(authenticated)
}

/// Checks that the authenticated user may get a token from the trust a
/// scope names (`{"OS-TRUST:trust": {"id": ...}}`), as Keystone: an
/// unknown, expired or used-up trust is 401; not being its trustee, a
/// disabled trustor or a trustor without the delegated roles is 403.
fn requested_trust(
    conn: &Connection,
    spec: &TrustSpec,
    who: &Authenticated,
    now: i64,
) -> IdentityResult<String> {
    let id = spec.id.as_deref().ok_or_else(|| {
        IdentityError::BadRequest("'id' is a required property of 'OS-TRUST:trust'.".into())
    })?;
    let refused = |e: TrustScopeError| match e {
        TrustScopeError::NotFound(_) => IdentityError::Unauthorized(e.to_string()),
        TrustScopeError::Db(db) => IdentityError::Db(db),
        other => IdentityError::Forbidden(other.to_string()),
    };
    let trust = trust_scope::usable_trust(conn, id, now.saturating_mul(1_000_000), true)
        .map_err(refused)?;
    trust_scope::check_trustee(conn, &trust, &who.user.id).map_err(refused)?;
    trust_scope::delegated_roles(conn, &trust).map_err(refused)?;
    Ok(trust.id)
}

/// Resolves the requested scope to (scope_type, scope_id).
fn requested_scope(
    conn: &Connection,
    scope: Option<&RequestedScope>,
    who: &Authenticated,
    now: i64,
) -> IdentityResult<(String, String)> {
    if let Some(cred) = &who.app_cred {
        if scope.is_some() {
            return Err(unauthorized());
        }
        return Ok(("project".into(), cred.project_id.clone()));
    }
    let Some(scope) = scope else {
        if let Some(previous) = &who.previous_scope {
            // Re-authenticating with a token and no scope keeps it unscoped
            // only if it was; a scoped token cannot be unscoped.
            if previous.0 != "unscoped" {
                return Ok(previous.clone());
            }
            return Ok(("unscoped".into(), String::new()));
        }
        // Default project, when the user still has a role on it.
        if let Some(project_id) = &who.user.default_project_id
            && let Some(project) = store::get_project(conn, project_id)?
        {
            let roles =
                effective_roles::effective_role_ids(conn, &who.user.id, "project", &project.id)?;
            if project.enabled && !roles.is_empty() {
                return Ok(("project".into(), project.id));
            }
        }
        return Ok(("unscoped".into(), String::new()));
    };
    let scope = match scope {
        RequestedScope::Unscoped => return Ok(("unscoped".into(), String::new())),
        RequestedScope::Spec(spec) => spec,
    };
    if let Some(trust) = &scope.trust {
        return Ok(("trust".into(), requested_trust(conn, trust, who, now)?));
    }
    if let Some(project) = &scope.project {
        let found = if let Some(id) = &project.id {
            store::get_project(conn, id)?
        } else {
            let name = project.name.as_deref().ok_or_else(|| {
                IdentityError::BadRequest("A project scope needs an id or a name.".into())
            })?;
            let domain_spec = project.domain.as_ref().ok_or_else(|| {
                IdentityError::BadRequest("A project given by name needs a domain.".into())
            })?;
            match find_domain(conn, domain_spec)? {
                Some(domain) => store::get_project_by_name(conn, &domain.id, name)?,
                None => None,
            }
        };
        let project = found.ok_or_else(unauthorized)?;
        return Ok(("project".into(), project.id));
    }
    if let Some(domain) = &scope.domain {
        let domain = find_domain(conn, domain)?.ok_or_else(unauthorized)?;
        return Ok(("domain".into(), domain.id));
    }
    if scope.system.as_ref().and_then(|s| s.all) == Some(true) {
        return Ok(("system".into(), "all".into()));
    }
    Err(scope_not_known())
}

/// The identity provider and protocol of a federated first method: one
/// that is none of the local methods and names an `identity_provider`.
fn federated_method(identity: &IdentityRequest) -> Option<(String, String)> {
    let method = identity.first_method().ok()?;
    if matches!(
        method,
        "password" | "token" | "application_credential" | "totp"
    ) {
        return None;
    }
    let payload: FederatedMethod = decode(identity.others.get(method)?.clone()).ok()?;
    let protocol = payload.protocol.unwrap_or_else(|| method.to_string());
    Some((payload.identity_provider, protocol))
}

/// `POST /v3/auth/tokens`.
pub async fn issue(
    State(state): State<Arc<IdentityState>>,
    client: ClientAddr,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> IdentityResult<Response> {
    let auth: AuthRequest = member(&body, "auth")?;
    let mut identity = auth.identity;
    let scope = RequestedScope::read(auth.scope)?;
    // A federated method (`{"methods": ["openid"], "openid": {"identity_provider": …}}`)
    // with the IdP's token as `Authorization: Bearer`: the login gives an
    // unscoped token, which a requested scope is then reached from.
    if let Some((idp, protocol)) = federated_method(&identity) {
        let bearer = super::federated_login::bearer(
            headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )?;
        let (token, ctx) = super::federated_login::login(&state, idp, protocol, &bearer).await?;
        if scope.is_none() {
            let with_catalog = !query.contains_key("nocatalog");
            return token_response(&state, StatusCode::CREATED, &token, &ctx, with_catalog).await;
        }
        identity = IdentityRequest::with_token(token);
    }
    let ttl = state.token_ttl;
    // The password or secret is checked first, on the bounded Argon2 pool
    // and outside any transaction; the write below only issues the token.
    let verified = verify_secret(&state, &client, &identity).await?;
    let now = now_unix();
    let (token, ctx) = state
        .write_keeping_cache(move |tx| {
            let who = authenticate(tx, &identity, now, &verified)?;
            let (scope_type, scope_id) = requested_scope(tx, scope.as_ref(), &who, now)?;
            let mut expires = match who.expires_unix {
                Some(limit) => limit.min(now + ttl),
                None => now + ttl,
            };
            // A trust's token ends with the trust.
            if scope_type == "trust"
                && let Some(trust) = trusts::get_trust(tx, &scope_id)?
                && let Some(limit) = trust.expires_at_micros
            {
                expires = expires.min(limit / 1_000_000);
            }
            let token = random_token();
            let record = TokenRecord {
                token_hash: hash_token(&token),
                user_id: who.user.id.clone(),
                scope_type,
                scope_id,
                methods: who.methods.clone(),
                issued_at: format_time(now),
                expires_at: format_time(expires),
                expires_unix: expires,
                audit_ids: who.audit_ids.clone(),
                app_cred_id: who.app_cred.as_ref().map(|c| c.id.clone()),
                revoked: false,
            };
            let ctx = build_context(tx, &record, now).map_err(|e| match e {
                IdentityError::NotFound(_) => unauthorized(),
                other => other,
            })?;
            // ... and takes one of its uses, last, once everything else
            // passed (nothing has been written when none is left).
            if record.scope_type == "trust" && !trusts::consume_trust_use(tx, &record.scope_id)? {
                return Err(unauthorized());
            }
            store::insert_token(tx, &record)?;
            Ok((token, ctx))
        })
        .await?;
    let with_catalog = !query.contains_key("nocatalog");
    token_response(&state, StatusCode::CREATED, &token, &ctx, with_catalog).await
}

pub(super) async fn token_response(
    state: &Arc<IdentityState>,
    status: StatusCode,
    token: &str,
    ctx: &AuthContext,
    with_catalog: bool,
) -> IdentityResult<Response> {
    let catalog = if with_catalog && ctx.scope != Scope::Unscoped {
        let project = ctx.project_id().map(str::to_string);
        Some(
            state
                .read(move |conn| Ok(service_catalog::build(conn, project.as_deref())?))
                .await?,
        )
    } else {
        None
    };
    let body = token_body(ctx, catalog);
    let mut response = json_response(status, &json!({"token": body}));
    let value = HeaderValue::from_str(token).map_err(|e| IdentityError::Internal(e.to_string()))?;
    response.headers_mut().insert("x-subject-token", value);
    Ok(response)
}

/// The `token` object of a token response.
pub fn token_body(ctx: &AuthContext, catalog: Option<Value>) -> Value {
    let roles: Vec<Value> = ctx
        .roles
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    let mut body = json!({
        "methods": ctx.methods,
        "user": {
            "id": ctx.user_id,
            "name": ctx.user_name,
            "domain": {"id": ctx.user_domain_id, "name": ctx.user_domain_name},
            "password_expires_at": null,
        },
        "audit_ids": ctx.audit_ids,
        "expires_at": ctx.expires_at,
        "issued_at": ctx.issued_at,
    });
    let Some(map) = body.as_object_mut() else {
        return body;
    };
    match &ctx.scope {
        Scope::Project {
            id,
            name,
            domain_id,
            domain_name,
        } => {
            map.insert(
                "project".into(),
                json!({"id": id, "name": name, "domain": {"id": domain_id, "name": domain_name}}),
            );
            map.insert("is_domain".into(), Value::Bool(false));
        }
        Scope::Domain { id, name } => {
            map.insert("domain".into(), json!({"id": id, "name": name}));
        }
        Scope::System => {
            map.insert("system".into(), json!({"all": true}));
        }
        Scope::Unscoped => {}
    }
    if ctx.scope != Scope::Unscoped {
        map.insert("roles".into(), Value::Array(roles));
    }
    if let Some(federation) = &ctx.federation
        && let Some(user) = map.get_mut("user")
    {
        user["OS-FEDERATION"] = json!({
            "identity_provider": {"id": federation.idp_id},
            "protocol": {"id": federation.protocol_id},
            "groups": federation.group_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
        });
    }
    if let Some((id, name, unrestricted)) = &ctx.app_cred {
        let mut cred = json!({"id": id, "name": name, "restricted": !unrestricted});
        if !ctx.access_rules.is_empty() {
            cred["access_rules"] = ctx
                .access_rules
                .iter()
                .map(|r| json!({"service": r.service, "method": r.method, "path": r.path}))
                .collect();
        }
        map.insert("application_credential".into(), cred);
    }
    if let Some(trust) = &ctx.trust {
        map.insert(
            "OS-TRUST:trust".into(),
            json!({
                "id": trust.id,
                "trustor_user": {"id": trust.trustor_user_id},
                "trustee_user": {"id": trust.trustee_user_id},
                "impersonation": trust.impersonation,
            }),
        );
    }
    if let Some(catalog) = catalog {
        map.insert("catalog".into(), catalog);
    }
    body
}

fn subject_token(headers: &HeaderMap) -> IdentityResult<String> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| IdentityError::BadRequest("X-Subject-Token is required.".into()))
}

/// Validates `X-Subject-Token` and enforces `rule` on it. As Keystone: the
/// target is the subject token (`target.token.user_id`, its user's domain),
/// and a token that does not validate is 404 for every caller.
async fn validated_subject(
    state: &Arc<IdentityState>,
    caller: &AuthContext,
    headers: &HeaderMap,
    rule: &str,
) -> IdentityResult<(String, Arc<AuthContext>)> {
    let subject = subject_token(headers)?;
    let ctx = validate(state, &subject).await?;
    let target = Target::new()
        .with("target.token.user_id", &ctx.user_id)
        .with("target.token.user.domain.id", &ctx.user_domain_id);
    state.authorize(caller, rule, &target)?;
    Ok((subject, ctx))
}

/// `GET /v3/auth/tokens`: validates `X-Subject-Token`.
pub async fn show(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> IdentityResult<Response> {
    let (subject, ctx) =
        validated_subject(&state, &caller, &headers, "identity:validate_token").await?;
    token_response(
        &state,
        StatusCode::OK,
        &subject,
        &ctx,
        !query.contains_key("nocatalog"),
    )
    .await
}

/// `HEAD /v3/auth/tokens`.
pub async fn check(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
    headers: HeaderMap,
) -> IdentityResult<Response> {
    let (subject, _) = validated_subject(&state, &caller, &headers, "identity:check_token").await?;
    let mut response = StatusCode::OK.into_response();
    if let Ok(value) = HeaderValue::from_str(&subject) {
        response.headers_mut().insert("x-subject-token", value);
    }
    Ok(response)
}

/// `DELETE /v3/auth/tokens`: revokes `X-Subject-Token`.
pub async fn revoke(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
    headers: HeaderMap,
) -> IdentityResult<Response> {
    let (_, ctx) = validated_subject(&state, &caller, &headers, "identity:revoke_token").await?;
    let hash = ctx.token_hash.clone();
    state
        .write(move |tx| {
            store::revoke_token(tx, &hash)?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v3/auth/catalog`.
pub async fn auth_catalog(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
) -> IdentityResult<Response> {
    state.authorize(&caller, "identity:get_auth_catalog", &Target::new())?;
    if caller.scope == Scope::Unscoped {
        return Err(IdentityError::Forbidden(
            "identity:get_auth_catalog (a scoped token is required)".into(),
        ));
    }
    let project = caller.project_id().map(str::to_string);
    let catalog = state
        .read(move |conn| Ok(service_catalog::build(conn, project.as_deref())?))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"catalog": catalog, "links": {"self": format!("{}/auth/catalog", state.v3_url()), "previous": null, "next": null}}),
    ))
}

/// `GET /v3/auth/projects`: projects the caller has a role on.
pub async fn auth_projects(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
) -> IdentityResult<Response> {
    state.authorize(&caller, "identity:get_auth_projects", &Target::new())?;
    let user_id = caller.user_id.clone();
    let base = state.v3_url();
    let projects = state
        .read(move |conn| {
            effective_roles::user_projects(conn, &user_id)?
                .iter()
                .map(|p| Ok(views::project(p, store::project_tags(conn, &p.id)?, &base)))
                .collect::<IdentityResult<Vec<Value>>>()
        })
        .await?;
    Ok(super::list_response(
        "projects",
        projects,
        format!("{}/auth/projects", state.v3_url()),
    ))
}

/// `GET /v3/auth/domains`: domains the caller has a role on.
pub async fn auth_domains(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
) -> IdentityResult<Response> {
    state.authorize(&caller, "identity:get_auth_domains", &Target::new())?;
    let user_id = caller.user_id.clone();
    let base = state.v3_url();
    let domains = state
        .read(move |conn| {
            let mut out = Vec::new();
            for domain in store::list_domains(conn)? {
                if domain.enabled
                    && !effective_roles::effective_role_ids(conn, &user_id, "domain", &domain.id)?
                        .is_empty()
                {
                    out.push(views::domain(&domain, &base));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(super::list_response(
        "domains",
        domains,
        format!("{}/auth/domains", state.v3_url()),
    ))
}

/// `GET /v3/auth/system`.
pub async fn auth_system(
    State(state): State<Arc<IdentityState>>,
    Auth(caller): Auth,
) -> IdentityResult<Response> {
    state.authorize(&caller, "identity:get_auth_system", &Target::new())?;
    let user_id = caller.user_id.clone();
    let has_system = state
        .read(move |conn| {
            Ok(!effective_roles::effective_role_ids(conn, &user_id, "system", "all")?.is_empty())
        })
        .await?;
    let system: Vec<Value> = if has_system {
        vec![json!({"all": true})]
    } else {
        vec![]
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"system": system, "links": {"self": format!("{}/auth/system", state.v3_url()), "previous": null, "next": null}}),
    ))
}

/// Deletes expired token rows now and then every `interval` seconds (0:
/// only now), and forgets their cached validations, so the table does not
/// grow by one row per login for as long as the server runs.
pub fn start_purger(state: Arc<IdentityState>, interval: u64) {
    tokio::spawn(async move {
        loop {
            let now = now_unix();
            match state
                .db
                .write(move |tx| store::purge_expired_tokens(tx, now))
                .await
            {
                Ok(purged) if purged > 0 => tracing::info!(purged, "expired tokens purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging expired tokens failed"),
            }
            if let Ok(mut cache) = state.token_cache.write() {
                cache.retain(|_, (_, ctx)| ctx.expires_unix > now);
            }
            if interval == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
        }
    });
}

#[cfg(test)]
mod request_tests {
    use super::*;

    fn auth(body: &str) -> IdentityResult<AuthRequest> {
        Ok(member(body.as_bytes(), "auth")?)
    }

    fn refused(body: &str) -> String {
        let outcome = auth(body).and_then(|a| {
            a.identity.first_method()?;
            RequestedScope::read(a.scope)
        });
        match outcome {
            Ok(_) => panic!("{body} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn password_and_token_bodies() {
        let a = auth(
            r#"{"auth": {"identity": {"methods": ["password"], "password": {"user":
                {"name": "admin", "domain": {"name": "Default"}, "password": "s"}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}"#,
        )
        .expect("accepted");
        assert_eq!(a.identity.first_method().expect("method"), "password");
        let user = a.identity.password.and_then(|p| p.user).expect("user");
        assert_eq!(user_key(&user), "name:|Default|admin");
        assert_eq!(user.password.as_deref(), Some("s"));
        match RequestedScope::read(a.scope).expect("scope") {
            Some(RequestedScope::Spec(spec)) => {
                assert_eq!(spec.project.and_then(|p| p.name).as_deref(), Some("admin"));
            }
            other => panic!("{other:?}"),
        }
        let a = auth(
            r#"{"auth": {"identity": {"methods": ["token"], "token": {"id": "t"}},
            "scope": "unscoped"}}"#,
        )
        .expect("accepted");
        assert!(matches!(
            RequestedScope::read(a.scope),
            Ok(Some(RequestedScope::Unscoped))
        ));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert_eq!(refused(r#"{}"#), "'auth' is a required property.");
        assert_eq!(
            refused(r#"{"auth": {}}"#),
            "'identity' is a required property."
        );
        assert_eq!(
            refused(r#"{"auth": {"identity": {"methods": []}}}"#),
            "'methods' is a required non-empty list."
        );
        assert_eq!(
            refused(r#"{"auth": {"identity": {"methods": ["password"]}}}"#),
            "'password' is a required property."
        );
        assert_eq!(
            refused(r#"{"auth": {"identity": {"methods": [1]}}}"#),
            "Invalid input for field 'identity.methods[0]': not a string."
        );
        assert_eq!(
            refused(
                r#"{"auth": {"identity": {"methods": ["token"], "token": {"id": "t"}},
                    "scope": 3}}"#
            ),
            "The scope is not one Keystone knows."
        );
        assert_eq!(
            refused(
                r#"{"auth": {"identity": {"methods": ["token"], "token": {"id": "t"}},
                    "scope": {"project": {"id": 3}}}}"#
            ),
            "Invalid input for field 'project.id': not a string."
        );
    }

    #[test]
    fn federated_and_application_credential_methods() {
        let a = auth(
            r#"{"auth": {"identity": {"methods": ["openid"],
                "openid": {"identity_provider": "idp", "access_token": "x"}}}}"#,
        )
        .expect("accepted");
        assert_eq!(
            federated_method(&a.identity),
            Some(("idp".to_string(), "openid".to_string()))
        );
        let a = auth(
            r#"{"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"name": "c", "user": {"id": "u"}, "secret": "s"}}}}"#,
        )
        .expect("accepted");
        assert_eq!(federated_method(&a.identity), None);
        let cred = a.identity.application_credential.expect("member");
        assert_eq!(cred.user.map(|u| user_key(&u)).as_deref(), Some("id:u"));
        let rescope = IdentityRequest::with_token("t".into());
        assert_eq!(rescope.first_method().expect("method"), "token");
    }
}
