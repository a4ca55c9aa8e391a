//! OS-FEDERATION (`/v3/OS-FEDERATION/...`): identity providers, their
//! protocols, mappings and service providers as Keystone stores and shows
//! them, the projects and domains a federated token may scope to, and the
//! federated login itself (`.../protocols/{protocol}/auth`, OpenID Connect
//! with the IdP's token as `Authorization: Bearer`; `federated_login` does
//! the work).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::requests::{member, not_null, nullable};
use super::{
    Auth, IdentityError, IdentityResult, IdentityState, admin_delete, admin_list, effective_roles,
    federated_login, list_response, mapping, new_id, token, views,
};
use crate::db::identity::{self as store, IdentityProvider, Mapping, Protocol, ServiceProvider};
use crate::http::body::{BodyError, parse_object, take_object};
use crate::http::json_response;
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/OS-FEDERATION/identity_providers", get(list_idps))
        .route(
            "/v3/OS-FEDERATION/identity_providers/{idp}",
            get(get_idp)
                .put(create_idp)
                .patch(update_idp)
                .delete(delete_idp),
        )
        .route(
            "/v3/OS-FEDERATION/identity_providers/{idp}/protocols",
            get(list_protocols),
        )
        .route(
            "/v3/OS-FEDERATION/identity_providers/{idp}/protocols/{protocol}",
            get(get_protocol)
                .put(create_protocol)
                .patch(update_protocol)
                .delete(delete_protocol),
        )
        .route(
            "/v3/OS-FEDERATION/identity_providers/{idp}/protocols/{protocol}/auth",
            get(federated_auth).post(federated_auth),
        )
        .route("/v3/OS-FEDERATION/mappings", get(list_mappings))
        .route(
            "/v3/OS-FEDERATION/mappings/{id}",
            get(get_mapping)
                .put(create_mapping)
                .patch(update_mapping)
                .delete(delete_mapping),
        )
        .route("/v3/OS-FEDERATION/service_providers", get(list_sps))
        .route(
            "/v3/OS-FEDERATION/service_providers/{id}",
            get(get_sp)
                .put(create_sp)
                .patch(update_sp)
                .delete(delete_sp),
        )
        .route("/v3/OS-FEDERATION/projects", get(federated_projects))
        .route("/v3/OS-FEDERATION/domains", get(federated_domains))
}

fn bad(message: impl Into<String>) -> IdentityError {
    IdentityError::BadRequest(message.into())
}

/// Keystone's `minProperties: 1` of an update.
fn not_empty(empty: bool) -> IdentityResult<()> {
    if empty {
        return Err(bad("{} does not have enough properties."));
    }
    Ok(())
}

// ------------------------------------------------------- identity providers

fn idp_json(idp: &IdentityProvider, base: &str) -> Value {
    let link = format!("{base}/OS-FEDERATION/identity_providers/{}", idp.id);
    let mut value = json!({
        "id": idp.id, "enabled": idp.enabled, "description": idp.description,
        "remote_ids": idp.remote_ids, "domain_id": idp.domain_id,
        "authorization_ttl": idp.authorization_ttl,
        "links": {"self": link, "protocols": format!("{link}/protocols")},
    });
    if let Some(map) = value.as_object_mut() {
        for (k, v) in &idp.extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    value
}

fn idp_not_found(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find Identity Provider: {id}."))
}

fn load_idp(conn: &rusqlite::Connection, id: &str) -> IdentityResult<IdentityProvider> {
    store::get_idp(conn, id)?.ok_or_else(|| idp_not_found(id))
}

/// The `identity_provider` member of `PUT
/// /v3/OS-FEDERATION/identity_providers/{id}` (Keystone's schema: no other
/// members).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewIdp {
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    remote_ids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    authorization_ttl: Option<Option<i64>>,
    domain_id: Option<String>,
}

impl NewIdp {
    /// What it sets besides its domain (serde's `flatten` cannot be
    /// combined with `deny_unknown_fields`).
    fn changes(&self) -> IdpChanges {
        IdpChanges {
            enabled: self.enabled,
            description: self.description.clone(),
            remote_ids: self.remote_ids.clone(),
            authorization_ttl: self.authorization_ttl,
        }
    }
}

/// What an identity provider body may set (an update: nothing else).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IdpChanges {
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    /// `null` is none; each at most 255 characters, duplicates dropped.
    #[serde(default, deserialize_with = "nullable")]
    remote_ids: Option<Option<Vec<String>>>,
    /// Non-negative; `null` is none.
    #[serde(default, deserialize_with = "nullable")]
    authorization_ttl: Option<Option<i64>>,
}

impl IdpChanges {
    /// Keystone's checks beyond the JSON types; the remote ids deduplicated.
    fn checked(mut self) -> IdentityResult<Self> {
        if let Some(ids) = self.remote_ids.take() {
            let mut unique: Vec<String> = Vec::new();
            for id in ids.unwrap_or_default() {
                if id.chars().count() > 255 {
                    return Err(bad(
                        "Invalid input for field 'remote_ids': each is a string of at most 255 characters.",
                    ));
                }
                if !unique.contains(&id) {
                    unique.push(id);
                }
            }
            self.remote_ids = Some(Some(unique));
        }
        if self.authorization_ttl.flatten().is_some_and(|n| n < 0) {
            return Err(bad(
                "Invalid input for field 'authorization_ttl': not a non-negative integer.",
            ));
        }
        Ok(self)
    }

    fn is_empty(&self) -> bool {
        self.enabled.is_none()
            && self.description.is_none()
            && self.remote_ids.is_none()
            && self.authorization_ttl.is_none()
    }
}

async fn list_idps(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_identity_providers", &Target::new()),
        ("identity_providers", "OS-FEDERATION/identity_providers"),
        store::list_idps,
        idp_json,
        (&q, &["id", "enabled"]),
    )
    .await
}

async fn get_idp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_identity_provider", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(idp_json(&load_idp(conn, &id)?, &base)))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"identity_provider": value}),
    ))
}

async fn create_idp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_identity_provider", &Target::new())?;
    let request: NewIdp = member(&body, "identity_provider")?;
    let changes = request.changes().checked()?;
    let domain_id = request.domain_id;
    if id.is_empty() || id.chars().count() > 64 {
        return Err(bad("An identity provider id is 1 to 64 characters."));
    }
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_idp(tx, &id)?.is_some() {
                return Err(IdentityError::Conflict(format!(
                    "Duplicate entry found with ID {id} at identity_provider."
                )));
            }
            let domain_id = match domain_id {
                Some(domain_id) => {
                    store::get_domain(tx, &domain_id)?.ok_or_else(|| {
                        IdentityError::NotFound(format!("Could not find domain: {domain_id}."))
                    })?;
                    domain_id
                }
                // As Keystone: a domain of its own, named by its id.
                None => {
                    let domain_id = new_id();
                    store::insert_domain(
                        tx,
                        &store::Domain {
                            id: domain_id.clone(),
                            name: domain_id.clone(),
                            description: format!(
                                "Auto generated federated domain for Identity Provider: {id}"
                            ),
                            enabled: true,
                            extra: Default::default(),
                        },
                    )?;
                    domain_id
                }
            };
            let idp = IdentityProvider {
                id,
                domain_id,
                enabled: changes.enabled.unwrap_or(false),
                description: changes.description.flatten(),
                authorization_ttl: changes.authorization_ttl.flatten(),
                remote_ids: changes.remote_ids.flatten().unwrap_or_default(),
                extra: Default::default(),
            };
            store::upsert_idp(tx, &idp)?;
            Ok(idp_json(&idp, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"identity_provider": value}),
    ))
}

async fn update_idp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_identity_provider", &Target::new())?;
    let changes: IdpChanges = member(&body, "identity_provider")?;
    not_empty(changes.is_empty())?;
    let changes = changes.checked()?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut idp = load_idp(tx, &id)?;
            if let Some(enabled) = changes.enabled {
                idp.enabled = enabled;
            }
            if let Some(description) = changes.description {
                idp.description = description;
            }
            if let Some(remote_ids) = changes.remote_ids {
                idp.remote_ids = remote_ids.unwrap_or_default();
            }
            if let Some(ttl) = changes.authorization_ttl {
                idp.authorization_ttl = ttl;
            }
            store::upsert_idp(tx, &idp)?;
            Ok(idp_json(&idp, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"identity_provider": value}),
    ))
}

async fn delete_idp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_identity_provider", &Target::new()),
        id,
        |tx, id| {
            if store::delete_idp(tx, id)? {
                Ok(())
            } else {
                Err(idp_not_found(id))
            }
        },
    )
    .await
}

// ---------------------------------------------------------------- protocols

fn protocol_json(p: &Protocol, base: &str) -> Value {
    let idp_link = format!("{base}/OS-FEDERATION/identity_providers/{}", p.idp_id);
    let mut value = json!({
        "id": p.id, "mapping_id": p.mapping_id,
        "links": {"self": format!("{idp_link}/protocols/{}", p.id), "identity_provider": idp_link},
    });
    if let Some(attribute) = &p.remote_id_attribute {
        value["remote_id_attribute"] = json!(attribute);
    }
    value
}

fn protocol_not_found(idp: &str, id: &str) -> IdentityError {
    IdentityError::NotFound(format!(
        "Could not find federated protocol {id} for Identity Provider: {idp}."
    ))
}

/// The `protocol` member of `PUT` and `PATCH
/// .../identity_providers/{idp}/protocols/{id}` (no other members).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolRequest {
    /// Required on create.
    mapping_id: Option<String>,
    /// At most 64 characters; `null` is none.
    #[serde(default, deserialize_with = "nullable")]
    remote_id_attribute: Option<Option<String>>,
}

impl ProtocolRequest {
    fn read(body: &[u8]) -> IdentityResult<Self> {
        let request: Self = member(body, "protocol")?;
        if request
            .remote_id_attribute
            .as_ref()
            .and_then(Option::as_ref)
            .is_some_and(|a| a.chars().count() > 64)
        {
            return Err(bad("'remote_id_attribute' is at most 64 characters."));
        }
        Ok(request)
    }
}

fn require_mapping(conn: &rusqlite::Connection, id: &str) -> IdentityResult<()> {
    store::get_mapping(conn, id)?
        .map(|_| ())
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find mapping: {id}.")))
}

async fn list_protocols(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(idp): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_protocols", &Target::new())?;
    let base = s.v3_url();
    let path = format!(
        "{}/OS-FEDERATION/identity_providers/{idp}/protocols",
        s.v3_url()
    );
    let items = s
        .read(move |conn| {
            load_idp(conn, &idp)?;
            Ok(store::list_protocols(conn, &idp)?
                .iter()
                .map(|p| protocol_json(p, &base))
                .collect())
        })
        .await?;
    Ok(list_response("protocols", items, path))
}

async fn get_protocol(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((idp, id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_protocol", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let p = store::get_protocol(conn, &idp, &id)?
                .ok_or_else(|| protocol_not_found(&idp, &id))?;
            Ok(protocol_json(&p, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"protocol": value})))
}

async fn create_protocol(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((idp, id)): Path<(String, String)>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_protocol", &Target::new())?;
    let request = ProtocolRequest::read(&body)?;
    let attribute = request.remote_id_attribute;
    let mapping_id = request
        .mapping_id
        .ok_or_else(|| BodyError::Missing("mapping_id".into()))?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            load_idp(tx, &idp)?;
            if store::get_protocol(tx, &idp, &id)?.is_some() {
                return Err(IdentityError::Conflict(format!(
                    "Duplicate entry found with ID {id} at federation_protocol."
                )));
            }
            require_mapping(tx, &mapping_id)?;
            let p = Protocol {
                idp_id: idp,
                id,
                mapping_id,
                remote_id_attribute: attribute.flatten(),
            };
            store::upsert_protocol(tx, &p)?;
            Ok(protocol_json(&p, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"protocol": value}),
    ))
}

async fn update_protocol(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((idp, id)): Path<(String, String)>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_protocol", &Target::new())?;
    let request = ProtocolRequest::read(&body)?;
    not_empty(request.mapping_id.is_none() && request.remote_id_attribute.is_none())?;
    let (mapping_id, attribute) = (request.mapping_id, request.remote_id_attribute);
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut p =
                store::get_protocol(tx, &idp, &id)?.ok_or_else(|| protocol_not_found(&idp, &id))?;
            if let Some(mapping_id) = mapping_id {
                require_mapping(tx, &mapping_id)?;
                p.mapping_id = mapping_id;
            }
            if let Some(attribute) = attribute {
                p.remote_id_attribute = attribute;
            }
            store::upsert_protocol(tx, &p)?;
            Ok(protocol_json(&p, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"protocol": value})))
}

async fn delete_protocol(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((idp, id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:delete_protocol", &Target::new())?;
    s.write(move |tx| {
        if store::delete_protocol(tx, &idp, &id)? {
            Ok(())
        } else {
            Err(protocol_not_found(&idp, &id))
        }
    })
    .await?;
    Ok(crate::http::no_content())
}

// ----------------------------------------------------------------- mappings

fn mapping_json(m: &Mapping, base: &str) -> Value {
    json!({
        "id": m.id, "rules": m.rules, "schema_version": m.schema_version,
        "links": {"self": format!("{base}/OS-FEDERATION/mappings/{}", m.id)},
    })
}

fn mapping_not_found(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find mapping: {id}."))
}

/// The rules and schema version of a mapping body, validated as Keystone does.
/// The mapping is a document of rules stored and shown as sent, so it stays
/// JSON: `mapping::validate` checks it against Keystone's mapping schema.
fn parse_mapping(body: &Bytes) -> IdentityResult<(Value, String)> {
    let mut body = parse_object(body)?;
    let obj = take_object(&mut body, "mapping")?;
    let version = match obj.get("schema_version") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v.clone()),
        Some(_) => {
            return Err(BodyError::WrongType {
                key: "schema_version".into(),
                expected: "string",
            }
            .into());
        }
    }
    .filter(|v| !v.is_empty())
    .unwrap_or_else(|| "1.0".to_string());
    let value = Value::Object(obj);
    mapping::validate(&value, &version).map_err(|e| bad(e.to_string()))?;
    let rules = value.get("rules").cloned().unwrap_or(Value::Null);
    Ok((rules, version))
}

async fn list_mappings(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_mappings", &Target::new()),
        ("mappings", "OS-FEDERATION/mappings"),
        store::list_mappings,
        mapping_json,
        (&q, &["id"]),
    )
    .await
}

async fn get_mapping(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_mapping", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let m = store::get_mapping(conn, &id)?.ok_or_else(|| mapping_not_found(&id))?;
            Ok(mapping_json(&m, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"mapping": value})))
}

async fn create_mapping(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_mapping", &Target::new())?;
    let (rules, schema_version) = parse_mapping(&body)?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_mapping(tx, &id)?.is_some() {
                return Err(IdentityError::Conflict(format!(
                    "Duplicate entry found with ID {id} at mapping."
                )));
            }
            let m = Mapping {
                id,
                rules,
                schema_version,
            };
            store::upsert_mapping(tx, &m)?;
            Ok(mapping_json(&m, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"mapping": value}),
    ))
}

async fn update_mapping(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_mapping", &Target::new())?;
    let (rules, schema_version) = parse_mapping(&body)?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            store::get_mapping(tx, &id)?.ok_or_else(|| mapping_not_found(&id))?;
            let m = Mapping {
                id,
                rules,
                schema_version,
            };
            store::upsert_mapping(tx, &m)?;
            Ok(mapping_json(&m, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"mapping": value})))
}

async fn delete_mapping(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_mapping", &Target::new()),
        id,
        |tx, id| {
            if store::delete_mapping(tx, id)? {
                Ok(())
            } else {
                Err(mapping_not_found(id))
            }
        },
    )
    .await
}

// -------------------------------------------------------- service providers

fn sp_json(sp: &ServiceProvider, base: &str) -> Value {
    let mut value = json!({
        "id": sp.id, "auth_url": sp.auth_url, "sp_url": sp.sp_url,
        "description": sp.description, "enabled": sp.enabled,
        "relay_state_prefix": sp.relay_state_prefix,
        "links": {"self": format!("{base}/OS-FEDERATION/service_providers/{}", sp.id)},
    });
    if let Some(map) = value.as_object_mut() {
        for (k, v) in &sp.extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    value
}

fn sp_not_found(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find Service Provider: {id}."))
}

/// The `service_provider` member of `PUT` and `PATCH
/// /v3/OS-FEDERATION/service_providers/{id}` (no other members).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpRequest {
    /// Required on create.
    auth_url: Option<String>,
    /// Required on create.
    sp_url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    /// `null` is the default, `ss:mem:`.
    #[serde(default, deserialize_with = "nullable")]
    relay_state_prefix: Option<Option<String>>,
}

impl SpRequest {
    /// The body with its URLs checked.
    fn read(body: &[u8]) -> IdentityResult<Self> {
        let request: Self = member(body, "service_provider")?;
        check_url(request.auth_url.as_deref(), "auth_url")?;
        check_url(request.sp_url.as_deref(), "sp_url")?;
        Ok(request)
    }

    fn is_empty(&self) -> bool {
        self.auth_url.is_none()
            && self.sp_url.is_none()
            && self.description.is_none()
            && self.enabled.is_none()
            && self.relay_state_prefix.is_none()
    }
}

/// A URL as Keystone's `parameter_types.url` takes it: a scheme, `:`, more.
fn check_url(url: Option<&str>, key: &str) -> IdentityResult<()> {
    let Some(url) = url else {
        return Ok(());
    };
    let valid = url.chars().count() <= 225
        && url.split_once(':').is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                && !rest.is_empty()
        });
    if valid {
        Ok(())
    } else {
        Err(bad(format!("Invalid input for field '{key}': not a URL.")))
    }
}

async fn list_sps(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_service_providers", &Target::new()),
        ("service_providers", "OS-FEDERATION/service_providers"),
        store::list_sps,
        sp_json,
        (&q, &["id", "enabled"]),
    )
    .await
}

async fn get_sp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_service_provider", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let sp = store::get_sp(conn, &id)?.ok_or_else(|| sp_not_found(&id))?;
            Ok(sp_json(&sp, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"service_provider": value}),
    ))
}

async fn create_sp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_service_provider", &Target::new())?;
    let request = SpRequest::read(&body)?;
    let auth_url = request
        .auth_url
        .ok_or_else(|| BodyError::Missing("auth_url".into()))?;
    let sp_url = request
        .sp_url
        .ok_or_else(|| BodyError::Missing("sp_url".into()))?;
    let sp = ServiceProvider {
        id,
        auth_url,
        sp_url,
        description: request.description.flatten(),
        enabled: request.enabled.unwrap_or(false),
        relay_state_prefix: request
            .relay_state_prefix
            .flatten()
            .unwrap_or_else(|| "ss:mem:".to_string()),
        extra: Default::default(),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_sp(tx, &sp.id)?.is_some() {
                return Err(IdentityError::Conflict(format!(
                    "Duplicate entry found with ID {} at service_provider.",
                    sp.id
                )));
            }
            store::upsert_sp(tx, &sp)?;
            Ok(sp_json(&sp, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"service_provider": value}),
    ))
}

async fn update_sp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_service_provider", &Target::new())?;
    let request = SpRequest::read(&body)?;
    not_empty(request.is_empty())?;
    let SpRequest {
        auth_url,
        sp_url,
        description,
        enabled,
        relay_state_prefix: prefix,
    } = request;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut sp = store::get_sp(tx, &id)?.ok_or_else(|| sp_not_found(&id))?;
            if let Some(url) = auth_url {
                sp.auth_url = url;
            }
            if let Some(url) = sp_url {
                sp.sp_url = url;
            }
            if let Some(description) = description {
                sp.description = description;
            }
            if let Some(enabled) = enabled {
                sp.enabled = enabled;
            }
            if let Some(prefix) = prefix {
                sp.relay_state_prefix = prefix.unwrap_or_else(|| "ss:mem:".to_string());
            }
            store::upsert_sp(tx, &sp)?;
            Ok(sp_json(&sp, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"service_provider": value}),
    ))
}

async fn delete_sp(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_service_provider", &Target::new()),
        id,
        |tx, id| {
            if store::delete_sp(tx, id)? {
                Ok(())
            } else {
                Err(sp_not_found(id))
            }
        },
    )
    .await
}

// ----------------------------------------------- federated tokens' targets

/// `GET /v3/OS-FEDERATION/projects`: the projects the caller may scope to.
async fn federated_projects(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_projects_for_user", &Target::new())?;
    let user_id = ctx.user_id.clone();
    let base = s.v3_url();
    let projects = s
        .read(move |conn| {
            effective_roles::user_projects(conn, &user_id)?
                .iter()
                .map(|p| Ok(views::project(p, store::project_tags(conn, &p.id)?, &base)))
                .collect::<IdentityResult<Vec<Value>>>()
        })
        .await?;
    Ok(list_response(
        "projects",
        projects,
        format!("{}/OS-FEDERATION/projects", s.v3_url()),
    ))
}

/// `GET /v3/OS-FEDERATION/domains`: the domains the caller may scope to.
async fn federated_domains(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_domains_for_user", &Target::new())?;
    let user_id = ctx.user_id.clone();
    let base = s.v3_url();
    let domains = s
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
    Ok(list_response(
        "domains",
        domains,
        format!("{}/OS-FEDERATION/domains", s.v3_url()),
    ))
}

// ------------------------------------------------------------ federated login

/// `POST|GET /v3/OS-FEDERATION/identity_providers/{idp}/protocols/{protocol}/auth`
/// with `Authorization: Bearer <IdP token>`: an unscoped token (201).
async fn federated_auth(
    State(s): State<Arc<IdentityState>>,
    Path((idp, protocol)): Path<(String, String)>,
    headers: HeaderMap,
) -> IdentityResult<Response> {
    let idp_token = federated_login::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    let (token, ctx) = federated_login::login(&s, idp, protocol, &idp_token).await?;
    token::token_response(&s, StatusCode::CREATED, &token, &ctx, true).await
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::identity::requests::refusal;

    #[test]
    fn identity_provider_bodies() {
        let idp: NewIdp = member(
            br#"{"identity_provider": {"enabled": true, "remote_ids": ["a", "a", "b"],
                "authorization_ttl": null, "domain_id": "d"}}"#,
            "identity_provider",
        )
        .expect("accepted");
        let changes = idp.changes().checked().expect("valid");
        assert_eq!(
            changes.remote_ids,
            Some(Some(vec!["a".to_string(), "b".to_string()]))
        );
        assert_eq!(changes.authorization_ttl, Some(None));
        let refused = |body: &str| refusal::<IdpChanges>(body, "identity_provider");
        assert_eq!(
            refused(r#"{"identity_provider": {"domain_id": "d"}}"#),
            "Additional properties are not allowed ('domain_id' was unexpected)."
        );
        assert_eq!(
            refused(r#"{"identity_provider": {"remote_ids": "a"}}"#),
            "Invalid input for field 'remote_ids': not an array."
        );
        let negative: IdpChanges = member(
            br#"{"identity_provider": {"authorization_ttl": -1}}"#,
            "identity_provider",
        )
        .expect("typed");
        assert!(negative.checked().is_err());
        let empty: IdpChanges =
            member(br#"{"identity_provider": {}}"#, "identity_provider").expect("typed");
        assert!(empty.is_empty());
    }

    #[test]
    fn protocol_and_service_provider_bodies() {
        let protocol =
            ProtocolRequest::read(br#"{"protocol": {"mapping_id": "m"}}"#).expect("accepted");
        assert_eq!(protocol.mapping_id.as_deref(), Some("m"));
        assert!(ProtocolRequest::read(br#"{"protocol": {"mapping": "m"}}"#).is_err());
        let long = format!(
            r#"{{"protocol": {{"remote_id_attribute": "{}"}}}}"#,
            "a".repeat(65)
        );
        assert!(ProtocolRequest::read(long.as_bytes()).is_err());
        let sp = SpRequest::read(
            br#"{"service_provider": {"auth_url": "https://a/v3", "sp_url": "https://b",
                "relay_state_prefix": null}}"#,
        )
        .expect("accepted");
        assert_eq!(sp.relay_state_prefix, Some(None));
        assert!(!sp.is_empty());
        let bad_url = SpRequest::read(br#"{"service_provider": {"auth_url": "nope"}}"#);
        assert_eq!(
            bad_url.err().map(|e| e.to_string()).as_deref(),
            Some("Invalid input for field 'auth_url': not a URL.")
        );
    }
}
