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
use serde_json::{Map, Value, json};

use super::{
    Auth, IdentityError, IdentityResult, IdentityState, admin_delete, admin_list, effective_roles,
    federated_login, list_response, mapping, new_id, token, views,
};
use crate::db::identity::{self as store, IdentityProvider, Mapping, Protocol, ServiceProvider};
use crate::http::body::{opt_bool, opt_string, parse_object as parse_body, take_object};
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

/// Keystone's `additionalProperties: false`.
fn only_keys(obj: &Map<String, Value>, allowed: &[&str]) -> IdentityResult<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(bad(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        ))),
        None => Ok(()),
    }
}

/// A `string or null` member: Some(None) when it is null.
fn nullable_string(obj: &Map<String, Value>, key: &str) -> IdentityResult<Option<Option<String>>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(bad(format!(
            "Invalid input for field '{key}': not a string."
        ))),
    }
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

/// The members an identity provider body may set (create: also `domain_id`).
struct IdpChanges {
    enabled: Option<bool>,
    description: Option<Option<String>>,
    remote_ids: Option<Vec<String>>,
    authorization_ttl: Option<Option<i64>>,
}

fn parse_idp(obj: &Map<String, Value>) -> IdentityResult<IdpChanges> {
    let remote_ids = match obj.get("remote_ids") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let mut ids: Vec<String> = Vec::new();
            for item in items {
                let id = item
                    .as_str()
                    .filter(|s| s.chars().count() <= 255)
                    .ok_or_else(|| {
                        bad("Invalid input for field 'remote_ids': each is a string.")
                    })?;
                if !ids.iter().any(|i| i == id) {
                    ids.push(id.to_string());
                }
            }
            Some(ids)
        }
        Some(_) => return Err(bad("Invalid input for field 'remote_ids': not an array.")),
    };
    let authorization_ttl = match obj.get("authorization_ttl") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(value) => Some(Some(value.as_i64().filter(|n| *n >= 0).ok_or_else(
            || bad("Invalid input for field 'authorization_ttl': not a non-negative integer."),
        )?)),
    };
    Ok(IdpChanges {
        enabled: opt_bool(obj, "enabled")?,
        description: nullable_string(obj, "description")?,
        remote_ids,
        authorization_ttl,
    })
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "identity_provider")?;
    only_keys(
        &obj,
        &[
            "enabled",
            "description",
            "remote_ids",
            "domain_id",
            "authorization_ttl",
        ],
    )?;
    let changes = parse_idp(&obj)?;
    let domain_id = opt_string(&obj, "domain_id")?;
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
                remote_ids: changes.remote_ids.unwrap_or_default(),
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "identity_provider")?;
    only_keys(
        &obj,
        &["enabled", "description", "remote_ids", "authorization_ttl"],
    )?;
    if obj.is_empty() {
        return Err(bad("{} does not have enough properties."));
    }
    let changes = parse_idp(&obj)?;
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
                idp.remote_ids = remote_ids;
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

/// `mapping_id` and `remote_id_attribute` of a protocol body.
fn parse_protocol(
    obj: &Map<String, Value>,
) -> IdentityResult<(Option<String>, Option<Option<String>>)> {
    only_keys(obj, &["mapping_id", "remote_id_attribute"])?;
    let attribute = nullable_string(obj, "remote_id_attribute")?;
    if attribute
        .as_ref()
        .and_then(Option::as_ref)
        .is_some_and(|a| a.chars().count() > 64)
    {
        return Err(bad("'remote_id_attribute' is at most 64 characters."));
    }
    Ok((opt_string(obj, "mapping_id")?, attribute))
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "protocol")?;
    let (mapping_id, attribute) = parse_protocol(&obj)?;
    let mapping_id = mapping_id.ok_or_else(|| bad("'mapping_id' is a required property."))?;
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "protocol")?;
    let (mapping_id, attribute) = parse_protocol(&obj)?;
    if obj.is_empty() {
        return Err(bad("{} does not have enough properties."));
    }
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
fn parse_mapping(body: &Bytes) -> IdentityResult<(Value, String)> {
    let mut body = parse_body(body)?;
    let obj = take_object(&mut body, "mapping")?;
    let version = opt_string(&obj, "schema_version")?
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

const SP_KEYS: [&str; 5] = [
    "auth_url",
    "sp_url",
    "description",
    "enabled",
    "relay_state_prefix",
];

/// A URL as Keystone's `parameter_types.url` takes it: a scheme, `:`, more.
fn url_member(obj: &Map<String, Value>, key: &str) -> IdentityResult<Option<String>> {
    let Some(url) = opt_string(obj, key)? else {
        return Ok(None);
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
        Ok(Some(url))
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "service_provider")?;
    only_keys(&obj, &SP_KEYS)?;
    let auth_url =
        url_member(&obj, "auth_url")?.ok_or_else(|| bad("'auth_url' is a required property."))?;
    let sp_url =
        url_member(&obj, "sp_url")?.ok_or_else(|| bad("'sp_url' is a required property."))?;
    let sp = ServiceProvider {
        id,
        auth_url,
        sp_url,
        description: nullable_string(&obj, "description")?.flatten(),
        enabled: opt_bool(&obj, "enabled")?.unwrap_or(false),
        relay_state_prefix: nullable_string(&obj, "relay_state_prefix")?
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
    let mut body = parse_body(&body)?;
    let obj = take_object(&mut body, "service_provider")?;
    only_keys(&obj, &SP_KEYS)?;
    if obj.is_empty() {
        return Err(bad("{} does not have enough properties."));
    }
    let auth_url = url_member(&obj, "auth_url")?;
    let sp_url = url_member(&obj, "sp_url")?;
    let description = nullable_string(&obj, "description")?;
    let enabled = opt_bool(&obj, "enabled")?;
    let prefix = nullable_string(&obj, "relay_state_prefix")?;
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
