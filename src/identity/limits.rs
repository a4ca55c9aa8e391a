//! Keystone's unified limits (`/v3/registered_limits`, `/v3/limits`,
//! `/v3/limits/model`) with the flat enforcement model, and the Rust API
//! other services read their quotas through ([`project_limit`]).
//!
//! A registered limit is a service's default for one resource; a limit
//! overrides it for one project (or domain). Services enforce them as
//! oslo.limit's flat enforcer does: the project's limit, else the
//! registered default, else 0.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::requests::{not_null, nullable, whole};
use super::{
    Auth, AuthContext, IdentityError, IdentityState, apply_filters, list_response, new_id,
};
use crate::db::identity as identity_store;
use crate::db::limits::{self as store, Limit, RegisteredLimit};
use crate::db::{DbError, DbResult};
use crate::http::body::BodyError;
use crate::http::{json_response, no_content};
use crate::policy::Target;

/// Errors of the unified limits API, rendered as Keystone renders them.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The request body or query does not match Keystone's schema.
    #[error("Invalid input for field '{field}': {reason}")]
    Invalid { field: String, reason: String },
    /// A referenced service, region, project or domain does not exist.
    #[error(
        "Expecting to find {attribute} in {target}. The server could not comply with the request \
         since it is either malformed or otherwise incorrect. The client is assumed to be in error."
    )]
    MissingReference {
        attribute: &'static str,
        target: &'static str,
    },
    /// The caller's roles do not allow the operation (names the policy rule).
    #[error("You are not authorized to perform the requested action: {0}.")]
    Forbidden(String),
    /// A limit needs a registered limit for the same service, region and resource.
    #[error("Unable to create a limit that has no corresponding registered limit.")]
    NoLimitReference,
    /// A registered limit with limits below it cannot change or go.
    #[error(
        "Unable to update or delete registered limit {0} because there are project limits \
         associated with it."
    )]
    RegisteredLimitInUse(String),
    /// No registered limit has this id.
    #[error("Could not find registered limit for {0}.")]
    RegisteredLimitNotFound(String),
    /// No limit has this id.
    #[error("Could not find limit for {0}.")]
    LimitNotFound(String),
    /// The same limit exists already.
    #[error("Conflict occurred attempting to store {0} - Duplicate entry.")]
    Duplicate(&'static str),
    /// The identity service failed (authentication, the state file).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The state file failed.
    #[error("internal error: {0}")]
    Db(#[from] DbError),
}

type LimitResult<T> = Result<T, LimitError>;

impl LimitError {
    fn status(&self) -> (StatusCode, &'static str) {
        match self {
            LimitError::Invalid { .. } | LimitError::MissingReference { .. } => {
                (StatusCode::BAD_REQUEST, "Bad Request")
            }
            LimitError::Forbidden(_)
            | LimitError::NoLimitReference
            | LimitError::RegisteredLimitInUse(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            LimitError::RegisteredLimitNotFound(_) | LimitError::LimitNotFound(_) => {
                (StatusCode::NOT_FOUND, "Not Found")
            }
            LimitError::Duplicate(_) => (StatusCode::CONFLICT, "Conflict"),
            LimitError::Db(e) if e.is_unique_violation() => (StatusCode::CONFLICT, "Conflict"),
            LimitError::Identity(_) | LimitError::Db(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}

impl IntoResponse for LimitError {
    fn into_response(self) -> Response {
        // Identity's own errors (401 and the like) keep their rendering.
        if let LimitError::Identity(inner) = self {
            return inner.into_response();
        }
        let (status, title) = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "limits request failed");
        }
        let body = json!({"error": {"code": status.as_u16(), "title": title, "message": self.to_string()}});
        json_response(status, &body)
    }
}

/// The registered limits and limits routes, below `/v3`.
pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route(
            "/v3/registered_limits",
            get(list_registered_limits).post(create_registered_limits),
        )
        .route(
            "/v3/registered_limits/{id}",
            get(get_registered_limit)
                .patch(update_registered_limit)
                .delete(delete_registered_limit),
        )
        .route("/v3/limits", get(list_limits).post(create_limits))
        .route("/v3/limits/model", get(get_limit_model))
        .route(
            "/v3/limits/{id}",
            get(get_limit).patch(update_limit).delete(delete_limit),
        )
}

// ------------------------------------------------------------ Rust API

/// The limit of `resource_name` that applies to a project for the service
/// of `service_type` (e.g. `"image"`): the project's own limit, else the
/// registered default, else `None` (which oslo.limit treats as 0).
pub fn project_limit(
    conn: &Connection,
    service_type: &str,
    resource_name: &str,
    project_id: &str,
) -> DbResult<Option<i64>> {
    store::effective_limit(conn, service_type, resource_name, project_id)
}

/// Creates the given registered limits (resource, default, description) for
/// every service of `service_type`, once: when they were seeded before (and
/// an operator since deleted some) nothing is added back. Does nothing until
/// such a service exists.
pub fn seed_registered_limits(
    conn: &Connection,
    service_type: &str,
    defaults: &[(&str, i64, &str)],
) -> DbResult<()> {
    if store::seeded(conn, service_type)? {
        return Ok(());
    }
    let services = store::service_ids_of_type(conn, service_type)?;
    if services.is_empty() {
        return Ok(());
    }
    for service_id in &services {
        for (resource_name, default_limit, description) in defaults {
            if store::find_registered_limit(conn, service_id, None, resource_name)?.is_none() {
                store::insert_registered_limit(
                    conn,
                    &RegisteredLimit {
                        id: new_id(),
                        service_id: service_id.clone(),
                        region_id: None,
                        resource_name: (*resource_name).to_string(),
                        default_limit: *default_limit,
                        description: Some((*description).to_string()),
                    },
                )?;
            }
        }
    }
    store::mark_seeded(conn, service_type, crate::db::now_unix())
}

// ------------------------------------------------------------ helpers

/// Runs a write in one transaction, rolled back when `f` fails.
async fn write<F, T>(s: &IdentityState, f: F) -> LimitResult<T>
where
    F: FnOnce(&rusqlite::Transaction) -> LimitResult<T> + Send + 'static,
    T: Send + 'static,
{
    let slot: Arc<std::sync::Mutex<Option<LimitError>>> = Arc::default();
    let inner_slot = slot.clone();
    let result =
        s.db.write(move |tx| match f(tx) {
            Ok(value) => Ok(value),
            Err(LimitError::Db(e)) => Err(e),
            Err(other) => {
                if let Ok(mut held) = inner_slot.lock() {
                    *held = Some(other);
                }
                Err(DbError::Task("rolled back".into()))
            }
        })
        .await;
    match result {
        Ok(value) => Ok(value),
        Err(e) => match slot.lock().ok().and_then(|mut held| held.take()) {
            Some(other) => Err(other),
            None => Err(LimitError::Db(e)),
        },
    }
}

/// Runs a read.
async fn read<F, T>(s: &IdentityState, f: F) -> LimitResult<T>
where
    F: FnOnce(&Connection) -> LimitResult<T> + Send + 'static,
    T: Send + 'static,
{
    match s.db.read(move |conn| Ok(f(conn))).await {
        Ok(inner) => inner,
        Err(e) => Err(LimitError::Db(e)),
    }
}

/// Enforces `identity:<action>`, whose default needs no target
/// (`rule:admin_required` for every write).
fn admin_only(s: &IdentityState, ctx: &AuthContext, action: &str) -> LimitResult<()> {
    let rule = format!("identity:{action}");
    s.authorize(ctx, &rule, &Target::new())
        .map_err(|_| LimitError::Forbidden(rule))
}

fn invalid(field: &str, reason: impl Into<String>) -> LimitError {
    LimitError::Invalid {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Keystone's (jsonschema's) wording of what a declared limits request
/// refused; a body that is not a JSON object keeps identity's wording.
impl From<BodyError> for LimitError {
    fn from(e: BodyError) -> Self {
        let leaf = |path: &str| path.rsplit('.').next().unwrap_or(path).to_string();
        match e {
            BodyError::Missing(path) => {
                let reason = format!("'{}' is a required property", leaf(&path));
                invalid(&path, reason)
            }
            BodyError::WrongType { key, expected } => {
                invalid(&key, format!("not of type '{expected}'"))
            }
            BodyError::Unexpected(path) => {
                let field = path.rsplit_once('.').map_or(path.as_str(), |(p, _)| p);
                invalid(
                    field,
                    format!(
                        "Additional properties are not allowed ('{}' was unexpected)",
                        leaf(&path)
                    ),
                )
            }
            BodyError::Invalid { key, reason } => invalid(&key, reason),
            other => LimitError::Identity(other.into()),
        }
    }
}

/// A request body (a JSON object) read as `T`.
fn read_body<T: DeserializeOwned>(body: &[u8]) -> LimitResult<T> {
    // (A body that is not a JSON object keeps identity's wording: From<BodyError>.)
    Ok(whole(body)?)
}

/// `value`, when present, is `min..=max` characters long.
fn check_len(value: Option<&str>, key: &str, (min, max): (usize, usize)) -> LimitResult<()> {
    match value.map(|v| v.chars().count()) {
        Some(n) if n < min || n > max => Err(invalid(
            key,
            format!("must be {min} to {max} characters long"),
        )),
        _ => Ok(()),
    }
}

/// `resource_name`: 1–255 characters with at least one that is not a space.
fn check_resource_name(name: Option<&str>) -> LimitResult<()> {
    check_len(name, "resource_name", (1, 255))?;
    if name.is_some_and(|n| n.trim().is_empty()) {
        return Err(invalid("resource_name", "must not be blank"));
    }
    Ok(())
}

/// A project or domain id: 1–64 of `[a-zA-Z0-9-]`.
fn check_id(id: Option<&str>, key: &str) -> LimitResult<()> {
    check_len(id, key, (1, 64))?;
    if let Some(id) = id
        && !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(
            key,
            format!("'{id}' does not match '^[a-zA-Z0-9-]+$'"),
        ));
    }
    Ok(())
}

/// A limit value: an integer from -1 to 2147483647.
fn check_limit(value: Option<i64>, key: &str) -> LimitResult<()> {
    match value {
        Some(v) if !(-1..=0x7FFF_FFFF).contains(&v) => Err(invalid(
            key,
            format!("{v} is not between -1 and 2147483647"),
        )),
        _ => Ok(()),
    }
}

fn required<T>(value: Option<T>, key: &str) -> LimitResult<T> {
    value.ok_or_else(|| invalid(key, format!("'{key}' is a required property")))
}

/// A list of at least one item.
fn non_empty<T>(items: Vec<T>, key: &str) -> LimitResult<Vec<T>> {
    if items.is_empty() {
        return Err(invalid(key, "[] is too short"));
    }
    Ok(items)
}

/// The body of `POST /v3/registered_limits`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisteredLimitsBody {
    registered_limits: Vec<RegisteredLimitFields>,
}

/// The body of `PATCH /v3/registered_limits/{id}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisteredLimitBody {
    registered_limit: RegisteredLimitFields,
}

/// A registered limit as sent (Keystone's schema: no other members).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisteredLimitFields {
    #[serde(default, deserialize_with = "not_null")]
    service_id: Option<String>,
    /// `null` is no region.
    #[serde(default, deserialize_with = "nullable")]
    region_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    resource_name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    default_limit: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
}

impl RegisteredLimitFields {
    /// The checks of Keystone's schema beyond the JSON types.
    fn check(&self) -> LimitResult<()> {
        check_len(self.service_id.as_deref(), "service_id", (1, 64))?;
        check_len(
            self.region_id.clone().flatten().as_deref(),
            "region_id",
            (1, 255),
        )?;
        check_resource_name(self.resource_name.as_deref())?;
        check_limit(self.default_limit, "default_limit")?;
        check_len(
            self.description.clone().flatten().as_deref(),
            "description",
            (0, 255),
        )
    }
}

/// The body of `POST /v3/limits`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    limits: Vec<LimitFields>,
}

/// A limit as sent (Keystone's schema: no other members; exactly one of
/// `project_id` and `domain_id`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitFields {
    #[serde(default, deserialize_with = "not_null")]
    service_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    region_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    resource_name: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    resource_limit: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    project_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    domain_id: Option<Option<String>>,
}

/// The body of `PATCH /v3/limits/{id}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    limit: LimitUpdate,
}

/// What of a limit may change.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitUpdate {
    #[serde(default, deserialize_with = "not_null")]
    resource_limit: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
}

fn registered_limit_json(r: &RegisteredLimit, base: &str) -> Value {
    json!({
        "id": r.id,
        "service_id": r.service_id,
        "region_id": r.region_id,
        "resource_name": r.resource_name,
        "default_limit": r.default_limit,
        "description": r.description,
        "links": {"self": format!("{base}/registered_limits/{}", r.id)},
    })
}

fn limit_json(l: &Limit, base: &str) -> Value {
    json!({
        "id": l.id,
        "project_id": l.project_id,
        "domain_id": l.domain_id,
        "service_id": l.service_id,
        "region_id": l.region_id,
        "resource_name": l.resource_name,
        "resource_limit": l.resource_limit,
        "description": l.description,
        "links": {"self": format!("{base}/limits/{}", l.id)},
    })
}

/// Service and region must exist (Keystone answers 400 naming the field).
fn check_references(
    conn: &Connection,
    service_id: &str,
    region_id: Option<&str>,
    target: &'static str,
) -> LimitResult<()> {
    if !store::service_exists(conn, service_id)? {
        return Err(LimitError::MissingReference {
            attribute: "service_id",
            target,
        });
    }
    if let Some(region) = region_id
        && !store::region_exists(conn, region)?
    {
        return Err(LimitError::MissingReference {
            attribute: "region_id",
            target,
        });
    }
    Ok(())
}

const LIST_FILTERS: &[&str] = &["service_id", "region_id", "resource_name"];
const LIMIT_FILTERS: &[&str] = &[
    "service_id",
    "region_id",
    "resource_name",
    "project_id",
    "domain_id",
];

// ------------------------------------------------------ registered limits

async fn list_registered_limits(
    State(s): State<Arc<IdentityState>>,
    Auth(_ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> LimitResult<Response> {
    // policy: identity:list_registered_limits ("": any token)
    let base = s.v3_url();
    let items = read(&s, move |conn| {
        Ok(store::list_registered_limits(conn)?
            .iter()
            .map(|r| registered_limit_json(r, &base))
            .collect())
    })
    .await?;
    let items = apply_filters(items, &q, LIST_FILTERS);
    Ok(list_response(
        "registered_limits",
        items,
        format!("{}/registered_limits", s.v3_url()),
    ))
}

async fn create_registered_limits(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> LimitResult<Response> {
    // policy: identity:create_registered_limits (rule:admin_required)
    admin_only(&s, &ctx, "create_registered_limits")?;
    let request: RegisteredLimitsBody = read_body(&body)?;
    let mut new = Vec::new();
    for fields in non_empty(request.registered_limits, "registered_limits")? {
        fields.check()?;
        new.push(RegisteredLimit {
            id: new_id(),
            service_id: required(fields.service_id, "service_id")?,
            region_id: fields.region_id.flatten(),
            resource_name: required(fields.resource_name, "resource_name")?,
            default_limit: required(fields.default_limit, "default_limit")?,
            description: fields.description.flatten(),
        });
    }
    let base = s.v3_url();
    let created = write(&s, move |tx| {
        let mut out = Vec::new();
        for r in new {
            check_references(
                tx,
                &r.service_id,
                r.region_id.as_deref(),
                "registered_limit",
            )?;
            if store::find_registered_limit(
                tx,
                &r.service_id,
                r.region_id.as_deref(),
                &r.resource_name,
            )?
            .is_some()
            {
                return Err(LimitError::Duplicate("registered_limit"));
            }
            store::insert_registered_limit(tx, &r)?;
            out.push(registered_limit_json(&r, &base));
        }
        Ok(out)
    })
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"registered_limits": created}),
    ))
}

async fn get_registered_limit(
    State(s): State<Arc<IdentityState>>,
    Auth(_ctx): Auth,
    Path(id): Path<String>,
) -> LimitResult<Response> {
    // policy: identity:get_registered_limit ("": any token)
    let base = s.v3_url();
    let value = read(&s, move |conn| {
        let r = store::get_registered_limit(conn, &id)?
            .ok_or(LimitError::RegisteredLimitNotFound(id))?;
        Ok(registered_limit_json(&r, &base))
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"registered_limit": value}),
    ))
}

async fn update_registered_limit(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> LimitResult<Response> {
    // policy: identity:update_registered_limit (rule:admin_required)
    admin_only(&s, &ctx, "update_registered_limit")?;
    let fields = read_body::<RegisteredLimitBody>(&body)?.registered_limit;
    fields.check()?;
    let service_id = fields.service_id;
    let region_given = fields.region_id.is_some();
    let region_id = fields.region_id.flatten();
    let resource_name = fields.resource_name;
    let default_limit = fields.default_limit;
    let description = fields.description;
    let base = s.v3_url();
    let value = write(&s, move |tx| {
        let mut r = store::get_registered_limit(tx, &id)?
            .ok_or_else(|| LimitError::RegisteredLimitNotFound(id.clone()))?;
        if store::registered_limit_in_use(tx, &id)? {
            return Err(LimitError::RegisteredLimitInUse(id));
        }
        let identity_changes = service_id.is_some() || region_given || resource_name.is_some();
        if let Some(v) = service_id {
            r.service_id = v;
        }
        if region_given {
            r.region_id = region_id;
        }
        if let Some(v) = resource_name {
            r.resource_name = v;
        }
        if let Some(v) = default_limit {
            r.default_limit = v;
        }
        if let Some(v) = description {
            r.description = v;
        }
        check_references(
            tx,
            &r.service_id,
            r.region_id.as_deref(),
            "registered_limit",
        )?;
        if identity_changes
            && store::find_registered_limit(
                tx,
                &r.service_id,
                r.region_id.as_deref(),
                &r.resource_name,
            )?
            .is_some_and(|other| other.id != r.id)
        {
            return Err(LimitError::Duplicate("registered_limit"));
        }
        store::update_registered_limit(tx, &r)?;
        Ok(registered_limit_json(&r, &base))
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"registered_limit": value}),
    ))
}

async fn delete_registered_limit(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> LimitResult<Response> {
    // policy: identity:delete_registered_limit (rule:admin_required)
    admin_only(&s, &ctx, "delete_registered_limit")?;
    write(&s, move |tx| {
        if store::get_registered_limit(tx, &id)?.is_none() {
            return Err(LimitError::RegisteredLimitNotFound(id));
        }
        if store::registered_limit_in_use(tx, &id)? {
            return Err(LimitError::RegisteredLimitInUse(id));
        }
        store::delete_registered_limit(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ limits

async fn list_limits(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> LimitResult<Response> {
    // identity:list_limits is open to any token; the list holds the limits
    // identity:get_limit allows the caller to see, as Keystone filters it.
    let base = s.v3_url();
    let policy = s.clone();
    let items = read(&s, move |conn| {
        let mut visible = Vec::new();
        for limit in store::list_limits(conn)? {
            if may_read_limit(conn, &policy, &ctx, Some(&limit))? {
                visible.push(limit);
            }
        }
        Ok(visible.iter().map(|l| limit_json(l, &base)).collect())
    })
    .await?;
    let items = apply_filters(items, &q, LIMIT_FILTERS);
    Ok(list_response(
        "limits",
        items,
        format!("{}/limits", s.v3_url()),
    ))
}

/// A limit to create, before its registered limit is looked up.
struct NewLimit {
    service_id: String,
    region_id: Option<String>,
    resource_name: String,
    resource_limit: i64,
    description: Option<String>,
    project_id: Option<String>,
    domain_id: Option<String>,
}

async fn create_limits(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> LimitResult<Response> {
    // policy: identity:create_limits (rule:admin_required)
    admin_only(&s, &ctx, "create_limits")?;
    let request: LimitsBody = read_body(&body)?;
    let mut new = Vec::new();
    for fields in non_empty(request.limits, "limits")? {
        // Keystone's schema: exactly one of project_id and domain_id.
        if fields.project_id.is_some() == fields.domain_id.is_some() {
            return Err(invalid(
                "limits",
                "exactly one of 'project_id' and 'domain_id' is required",
            ));
        }
        let project_id = fields.project_id.flatten();
        let domain_id = fields.domain_id.flatten();
        check_id(project_id.as_deref(), "project_id")?;
        check_id(domain_id.as_deref(), "domain_id")?;
        if project_id.is_none() && domain_id.is_none() {
            return Err(invalid(
                "limits",
                "'project_id' or 'domain_id' must not be null",
            ));
        }
        let region_id = fields.region_id.flatten();
        let description = fields.description.flatten();
        check_len(fields.service_id.as_deref(), "service_id", (1, 64))?;
        check_len(region_id.as_deref(), "region_id", (1, 255))?;
        check_resource_name(fields.resource_name.as_deref())?;
        check_limit(fields.resource_limit, "resource_limit")?;
        check_len(description.as_deref(), "description", (0, 255))?;
        new.push(NewLimit {
            service_id: required(fields.service_id, "service_id")?,
            region_id,
            resource_name: required(fields.resource_name, "resource_name")?,
            resource_limit: required(fields.resource_limit, "resource_limit")?,
            description,
            project_id,
            domain_id,
        });
    }
    let base = s.v3_url();
    let created = write(&s, move |tx| {
        let mut out = Vec::new();
        for n in new {
            check_references(tx, &n.service_id, n.region_id.as_deref(), "limit")?;
            let (mut project_id, mut domain_id) = (n.project_id, n.domain_id);
            if let Some(p) = project_id.clone() {
                let project =
                    identity_store::get_project(tx, &p)?.ok_or(LimitError::MissingReference {
                        attribute: "project_id",
                        target: "limit",
                    })?;
                // A project that is a domain gets a domain limit, as in Keystone.
                if project.is_domain {
                    domain_id = project_id.take();
                }
            }
            if let Some(d) = &domain_id
                && identity_store::get_domain(tx, d)?.is_none()
            {
                return Err(LimitError::MissingReference {
                    attribute: "domain_id",
                    target: "limit",
                });
            }
            let registered = store::find_registered_limit(
                tx,
                &n.service_id,
                n.region_id.as_deref(),
                &n.resource_name,
            )?
            .ok_or(LimitError::NoLimitReference)?;
            if store::limit_exists(
                tx,
                &registered.id,
                project_id.as_deref(),
                domain_id.as_deref(),
            )? {
                return Err(LimitError::Duplicate("limit"));
            }
            let limit = Limit {
                id: new_id(),
                registered_limit_id: registered.id,
                project_id,
                domain_id,
                resource_limit: n.resource_limit,
                description: n.description,
                service_id: registered.service_id,
                region_id: registered.region_id,
                resource_name: registered.resource_name,
            };
            store::insert_limit(tx, &limit)?;
            out.push(limit_json(&limit, &base));
        }
        Ok(out)
    })
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"limits": created}),
    ))
}

/// Keystone's `identity:get_limit` default: admin, a system reader, a
/// domain-scoped caller of the limit's domain (or its project's domain), or
/// a project-scoped caller of the limit's project.
/// Whether `identity:get_limit` allows the caller to read a limit (or, for
/// `None`, a limit that does not exist: Keystone checks the rule against an
/// empty target first). The target is Keystone's: the limit's project, its
/// domain, or the project's domain.
fn may_read_limit(
    conn: &Connection,
    s: &IdentityState,
    ctx: &AuthContext,
    limit: Option<&Limit>,
) -> DbResult<bool> {
    let mut target = Target::new();
    if let Some(limit) = limit {
        target = target
            .with(
                "target.limit.project_id",
                limit.project_id.clone().unwrap_or_else(|| "None".into()),
            )
            .with_opt("target.limit.domain.id", limit.domain_id.clone());
        if let Some(project) = &limit.project_id
            && let Some(p) = identity_store::get_project(conn, project)?
        {
            target = target.with("target.limit.project.domain_id", p.domain_id);
        }
    }
    Ok(s.authorize(ctx, "identity:get_limit", &target).is_ok())
}

async fn get_limit(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> LimitResult<Response> {
    let base = s.v3_url();
    let policy = s.clone();
    let value = read(&s, move |conn| {
        let limit = store::get_limit(conn, &id)?;
        // As Keystone: the rule is checked first, against an empty target
        // when the limit does not exist.
        let allowed = may_read_limit(conn, &policy, &ctx, limit.as_ref())?;
        if !allowed {
            return Err(LimitError::Forbidden("identity:get_limit".into()));
        }
        let limit = limit.ok_or(LimitError::LimitNotFound(id))?;
        Ok(limit_json(&limit, &base))
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"limit": value})))
}

async fn update_limit(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> LimitResult<Response> {
    // policy: identity:update_limit (rule:admin_required)
    admin_only(&s, &ctx, "update_limit")?;
    let fields = read_body::<LimitBody>(&body)?.limit;
    check_limit(fields.resource_limit, "resource_limit")?;
    check_len(
        fields.description.clone().flatten().as_deref(),
        "description",
        (0, 255),
    )?;
    let resource_limit = fields.resource_limit;
    let description = fields.description;
    let base = s.v3_url();
    let value = write(&s, move |tx| {
        let mut limit = store::get_limit(tx, &id)?.ok_or_else(|| LimitError::LimitNotFound(id))?;
        if let Some(v) = resource_limit {
            limit.resource_limit = v;
        }
        if let Some(v) = description {
            limit.description = v;
        }
        store::update_limit(
            tx,
            &limit.id,
            limit.resource_limit,
            limit.description.as_deref(),
        )?;
        Ok(limit_json(&limit, &base))
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"limit": value})))
}

async fn delete_limit(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> LimitResult<Response> {
    // policy: identity:delete_limit (rule:admin_required)
    admin_only(&s, &ctx, "delete_limit")?;
    write(&s, move |tx| {
        if !store::delete_limit(tx, &id)? {
            return Err(LimitError::LimitNotFound(id));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn get_limit_model(Auth(_ctx): Auth) -> Response {
    // policy: identity:get_limit_model ("": any token)
    json_response(
        StatusCode::OK,
        &json!({"model": {
            "name": "flat",
            "description": "Limit enforcement and validation does not take project hierarchy into consideration.",
        }}),
    )
}

#[cfg(test)]
mod request_tests {
    use super::*;

    fn refused<T: DeserializeOwned + std::fmt::Debug>(body: &str) -> String {
        match read_body::<T>(body.as_bytes()) {
            Ok(accepted) => panic!("{body} was accepted: {accepted:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn registered_limit_bodies() {
        let body: RegisteredLimitsBody = read_body(
            br#"{"registered_limits": [{"service_id": "s", "resource_name": "cores",
                "default_limit": 10, "region_id": null}]}"#,
        )
        .expect("accepted");
        let fields = &body.registered_limits[0];
        assert!(fields.check().is_ok());
        assert_eq!(fields.region_id, Some(None));
        assert_eq!(
            refused::<RegisteredLimitsBody>(r#"{"registered_limits": [{"colour": 1}]}"#),
            "Invalid input for field 'registered_limits[0]': Additional properties are not allowed ('colour' was unexpected)"
        );
        assert_eq!(
            refused::<RegisteredLimitsBody>(r#"{}"#),
            "Invalid input for field 'registered_limits': 'registered_limits' is a required property"
        );
        assert_eq!(
            refused::<RegisteredLimitBody>(r#"{"registered_limit": {"default_limit": "5"}}"#),
            "Invalid input for field 'registered_limit.default_limit': not of type 'integer'"
        );
        let too_big: RegisteredLimitBody =
            read_body(br#"{"registered_limit": {"default_limit": 2147483648}}"#).expect("typed");
        assert!(too_big.registered_limit.check().is_err());
    }

    #[test]
    fn limit_bodies() {
        let body: LimitsBody = read_body(
            br#"{"limits": [{"service_id": "s", "resource_name": "cores", "resource_limit": 5,
                "project_id": "p1"}]}"#,
        )
        .expect("accepted");
        assert_eq!(body.limits[0].project_id, Some(Some("p1".into())));
        assert_eq!(body.limits[0].domain_id, None);
        assert_eq!(
            refused::<LimitBody>(r#"{"limit": {"resource_name": "x"}}"#),
            "Invalid input for field 'limit': Additional properties are not allowed ('resource_name' was unexpected)"
        );
        assert!(check_id(Some("a_b"), "project_id").is_err());
        assert!(check_limit(Some(-2), "resource_limit").is_err());
        assert!(check_resource_name(Some(" ")).is_err());
    }
}
