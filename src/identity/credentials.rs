//! Application credentials and EC2-style credentials.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::context::Scope;
use super::requests::{Name, member, not_null, nullable, whole};
use super::views::strip_reserved;
use super::{
    Auth, AuthContext, IdentityError, IdentityResult, IdentityState, apply_filters, list_response,
    new_id,
};
use crate::db::identity::{self as store, AppCredential, Credential};
use crate::http::body::{BodyError, Object};
use crate::http::{json_response, no_content};
use crate::policy::{Service, Target};

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route(
            "/v3/users/{user_id}/application_credentials",
            get(list_app_creds).post(create_app_cred),
        )
        .route(
            "/v3/users/{user_id}/application_credentials/{id}",
            get(get_app_cred).delete(delete_app_cred),
        )
        .route(
            "/v3/users/{user_id}/credentials/OS-EC2",
            get(list_ec2).post(create_ec2),
        )
        .route(
            "/v3/users/{user_id}/credentials/OS-EC2/{access}",
            get(get_ec2).delete(delete_ec2),
        )
        .route(
            "/v3/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/v3/credentials/{id}",
            get(get_credential)
                .patch(update_credential)
                .delete(delete_credential),
        )
}

/// Parses an ISO 8601 time as clients send it, to microseconds since the epoch.
fn parse_time_micros(text: &str) -> IdentityResult<i64> {
    let trimmed = text.trim_end_matches('Z').trim_end_matches("+00:00");
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    Err(IdentityError::BadRequest(format!(
        "Invalid timestamp: {text:?}."
    )))
}

/// Formats microseconds since the epoch as Keystone returns times.
fn format_time_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

fn app_cred_json(c: &AppCredential, roles: &[Value], base: &str) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "expires_at": c.expires_at_micros.map(format_time_micros),
        "unrestricted": c.unrestricted,
        "project_id": c.project_id,
        "user_id": c.user_id,
        "roles": roles,
        "access_rules": c.access_rules,
        "links": {"self": format!("{base}/users/{}/application_credentials/{}", c.user_id, c.id)},
    })
}

fn role_values(conn: &rusqlite::Connection, ids: &[String]) -> IdentityResult<Vec<Value>> {
    Ok(store::list_roles(conn)?
        .into_iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| json!({"id": r.id, "name": r.name, "domain_id": r.domain_id}))
        .collect())
}

/// Keystone refuses tokens made from an application credential or a trust
/// (a delegation) access to credentials: a stolen app credential must not
/// mint EC2 keys or read other secrets.
fn primary_auth_only(ctx: &AuthContext, action: &str) -> IdentityResult<()> {
    if ctx.app_cred.is_some() || ctx.trust.is_some() {
        return Err(IdentityError::Forbidden(format!(
            "identity:{action} (delegated tokens cannot access credentials directly)"
        )));
    }
    Ok(())
}

/// Keystone: a trust-scoped token cannot manage application credentials
/// (one made from it would outlive the trust).
fn not_trust_scoped(ctx: &AuthContext, action: &str) -> IdentityResult<()> {
    if ctx.trust.is_some() {
        return Err(IdentityError::Forbidden(format!(
            "identity:{action} (Cannot manage application credentials with a token issued via delegation.)"
        )));
    }
    Ok(())
}

/// A restricted application credential (the default) cannot create or
/// delete application credentials, as in Keystone.
fn unrestricted_only(ctx: &AuthContext, action: &str) -> IdentityResult<()> {
    if ctx
        .app_cred
        .as_ref()
        .is_some_and(|(_, _, unrestricted)| !unrestricted)
    {
        return Err(IdentityError::Forbidden(format!(
            "identity:{action} (using method 'application_credential' is not allowed for managing additional application credentials)"
        )));
    }
    Ok(())
}

/// The target of the calls under `/v3/users/{user_id}/…`: the path's user
/// (Keystone's `owner` rule reads `%(user_id)s`).
fn path_user_target(user_id: &str) -> Target {
    Target::new().with("user_id", user_id)
}

/// Keystone's `target.credential.*` for a credential.
fn credential_target(user_id: &str, project_id: Option<&str>, kind: Option<&str>) -> Target {
    Target::new()
        .with("target.credential.user_id", user_id)
        .with_opt("target.credential.project_id", project_id)
        .with_opt("target.credential.type", kind)
}

async fn create_app_cred(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(user_id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        "identity:create_application_credential",
        &path_user_target(&user_id),
    )?;
    unrestricted_only(&ctx, "create_application_credential")?;
    not_trust_scoped(&ctx, "create_application_credential")?;
    let project_id = ctx
        .project_id()
        .map(str::to_string)
        .ok_or_else(|| IdentityError::BadRequest("A project-scoped token is required.".into()))?;
    let request: NewAppCredential = member(&body, "application_credential")?;
    let name = String::from(
        request
            .name
            .ok_or_else(|| BodyError::Missing("name".into()))?,
    );
    let secret = match request.secret {
        Some(secret) if !secret.is_empty() => secret,
        _ => {
            let mut bytes = [0u8; 48];
            rand::rng().fill_bytes(&mut bytes);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }
    };
    let expires_at_micros = request
        .expires_at
        .map(|t| parse_time_micros(&t))
        .transpose()?;
    let token_roles: Vec<(String, String)> = ctx.roles.clone();
    let requested: Vec<String> = match request.roles {
        Some(items) if !items.is_empty() => {
            let mut ids = Vec::new();
            for item in items {
                let found = token_roles.iter().find(|(id, name)| {
                    item.id.as_deref() == Some(id.as_str())
                        || item.name.as_deref() == Some(name.as_str())
                });
                match found {
                    Some((id, _)) => ids.push(id.clone()),
                    None => {
                        return Err(IdentityError::Forbidden(
                            "create_application_credential (a role that the token does not carry was asked for)".into(),
                        ));
                    }
                }
            }
            ids
        }
        _ => token_roles.iter().map(|(id, _)| id.clone()).collect(),
    };
    let cred = AppCredential {
        id: new_id(),
        name,
        user_id,
        project_id,
        secret_hash: String::new(),
        description: request.description,
        expires_at_micros,
        unrestricted: request.unrestricted.unwrap_or(false),
        roles: requested,
        access_rules: super::access_rules::parse_new(request.access_rules)?,
    };
    let secret_hash = super::login::hash_secret(&s, &secret).await?;
    let base = s.v3_url();
    let mut value = s
        .write(move |tx| {
            let access_rules =
                super::access_rules::bind_to_user(tx, &cred.user_id, &cred.access_rules)?;
            let cred = AppCredential {
                secret_hash,
                access_rules,
                ..cred
            };
            store::insert_app_cred(tx, &cred)?;
            let roles = role_values(tx, &cred.roles)?;
            Ok(app_cred_json(&cred, &roles, &base))
        })
        .await?;
    value["secret"] = Value::String(secret);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"application_credential": value}),
    ))
}

async fn list_app_creds(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(user_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        "identity:list_application_credentials",
        &path_user_target(&user_id),
    )?;
    not_trust_scoped(&ctx, "list_application_credentials")?;
    let base = s.v3_url();
    let self_url = format!("{}/users/{user_id}/application_credentials", s.v3_url());
    let items = s
        .read(move |conn| {
            let mut out = Vec::new();
            for cred in store::list_app_creds(conn, &user_id)? {
                let roles = role_values(conn, &cred.roles)?;
                out.push(app_cred_json(&cred, &roles, &base));
            }
            Ok(out)
        })
        .await?;
    let items = apply_filters(items, &q, &["name"]);
    Ok(list_response("application_credentials", items, self_url))
}

async fn get_app_cred(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((user_id, id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    // Keystone's target is the credential's owner, not the path's user.
    let lookup = id.clone();
    let owner = s
        .read(move |conn| Ok(store::get_app_cred(conn, &lookup)?.map(|c| c.user_id)))
        .await?;
    s.authorize(
        &ctx,
        "identity:get_application_credential",
        &path_user_target(owner.as_deref().unwrap_or(&user_id)),
    )?;
    not_trust_scoped(&ctx, "get_application_credential")?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let cred = store::get_app_cred(conn, &id)?
                .filter(|c| c.user_id == user_id)
                .ok_or_else(|| {
                    IdentityError::NotFound(format!("Could not find application credential: {id}."))
                })?;
            let roles = role_values(conn, &cred.roles)?;
            Ok(app_cred_json(&cred, &roles, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"application_credential": value}),
    ))
}

async fn delete_app_cred(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((user_id, id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    // Keystone's target is the credential's owner, not the path's user.
    let lookup = id.clone();
    let owner = s
        .read(move |conn| Ok(store::get_app_cred(conn, &lookup)?.map(|c| c.user_id)))
        .await?;
    s.authorize(
        &ctx,
        "identity:delete_application_credential",
        &path_user_target(owner.as_deref().unwrap_or(&user_id)),
    )?;
    unrestricted_only(&ctx, "delete_application_credential")?;
    not_trust_scoped(&ctx, "delete_application_credential")?;
    s.write(move |tx| {
        store::get_app_cred(tx, &id)?
            .filter(|c| c.user_id == user_id)
            .ok_or_else(|| {
                IdentityError::NotFound(format!("Could not find application credential: {id}."))
            })?;
        store::delete_app_cred(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ credentials

fn credential_json(c: &Credential, base: &str) -> Value {
    let mut value = json!({
        "id": c.id,
        "user_id": c.user_id,
        "project_id": c.project_id,
        "type": c.kind,
        "blob": c.blob,
        "links": {"self": format!("{base}/credentials/{}", c.id)},
    });
    if let Some(map) = value.as_object_mut() {
        for (k, v) in &c.extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    value
}

/// EC2 credentials are keyed by the SHA-256 of their access key, as Keystone does.
fn credential_id(kind: &str, blob: &str) -> IdentityResult<String> {
    if kind != "ec2" {
        return Ok(new_id());
    }
    let parsed: Value = serde_json::from_str(blob)
        .map_err(|_| IdentityError::BadRequest("An ec2 credential's blob must be JSON.".into()))?;
    let access = parsed
        .get("access")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            IdentityError::BadRequest("An ec2 credential's blob needs 'access'.".into())
        })?;
    Ok(hex::encode(Sha256::digest(access.as_bytes())))
}

/// The `application_credential` member of `POST
/// /v3/users/{id}/application_credentials`.
#[derive(Debug, serde::Deserialize)]
struct NewAppCredential {
    name: Option<Name>,
    /// Generated when absent or empty.
    secret: Option<String>,
    /// An ISO 8601 time.
    expires_at: Option<String>,
    description: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    unrestricted: Option<bool>,
    /// Roles of the token, by id or name; all of them when absent or empty.
    roles: Option<Vec<RoleRef>>,
    /// Checked by `access_rules::parse_new`.
    access_rules: Option<Vec<super::access_rules::NewAccessRule>>,
}

#[derive(Debug, serde::Deserialize)]
struct RoleRef {
    id: Option<String>,
    name: Option<String>,
}

/// The `credential` member of `POST /v3/credentials` and `PATCH
/// /v3/credentials/{id}` (unknown attributes are kept as extra).
#[derive(Debug, serde::Deserialize)]
struct CredentialRequest {
    /// Required on create.
    user_id: Option<String>,
    /// Required on create.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Required on create.
    blob: Option<String>,
    /// `null` clears it on update.
    #[serde(default, deserialize_with = "nullable")]
    project_id: Option<Option<String>>,
    #[serde(flatten)]
    extra: Object,
}

/// The body of `POST /v3/users/{id}/credentials/OS-EC2` (unknown members
/// are ignored, as before).
#[derive(Debug, serde::Deserialize)]
struct Ec2Request {
    tenant_id: Option<String>,
}

async fn create_credential(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    let request: CredentialRequest = member(&body, "credential")?;
    let user_id = request
        .user_id
        .ok_or_else(|| BodyError::Missing("user_id".into()))?;
    primary_auth_only(&ctx, "create_credential")?;
    let kind = request
        .kind
        .ok_or_else(|| BodyError::Missing("type".into()))?;
    let blob = request
        .blob
        .ok_or_else(|| BodyError::Missing("blob".into()))?;
    let project_id = request.project_id.flatten();
    s.authorize(
        &ctx,
        "identity:create_credential",
        &credential_target(&user_id, project_id.as_deref(), Some(&kind)),
    )?;
    if kind == "ec2" && project_id.is_none() {
        return Err(IdentityError::BadRequest(
            "An ec2 credential needs a project_id.".into(),
        ));
    }
    let credential = Credential {
        id: credential_id(&kind, &blob)?,
        user_id,
        project_id,
        kind,
        blob,
        extra: strip_reserved(request.extra, &[]),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_credential(tx, &credential.id)?.is_some() {
                return Err(IdentityError::Conflict(
                    "A credential with that access key exists.".into(),
                ));
            }
            store::upsert_credential(tx, &credential)?;
            Ok(credential_json(&credential, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"credential": value}),
    ))
}

async fn list_credentials(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let target = if matches!(ctx.scope, Scope::System) {
        Target::new()
    } else {
        credential_target(&ctx.user_id, None, None)
    };
    s.authorize(&ctx, "identity:list_credentials", &target)?;
    // Only those the caller may get, as Keystone filters the list.
    let base = s.v3_url();
    primary_auth_only(&ctx, "list_credentials")?;
    let creds = ctx.credentials();
    let all = s.read(|conn| Ok(store::list_credentials(conn)?)).await?;
    let items = all
        .iter()
        .filter(|c| {
            s.policy.allows(
                Service::Identity,
                &creds,
                "identity:get_credential",
                &credential_target(&c.user_id, c.project_id.as_deref(), Some(&c.kind)),
            )
        })
        .map(|c| credential_json(c, &base))
        .collect();
    let items = apply_filters(items, &q, &["user_id", "type"]);
    Ok(list_response(
        "credentials",
        items,
        format!("{}/credentials", s.v3_url()),
    ))
}

/// Loads a credential for `rule`, enforced on the credential (a missing one
/// gives an empty target, so the caller is refused before learning whether
/// it exists).
async fn load_authorized(
    s: &Arc<IdentityState>,
    ctx: &AuthContext,
    rule: &str,
    id: String,
) -> IdentityResult<Credential> {
    primary_auth_only(ctx, "get_credential")?;
    let found = s
        .read(move |conn| Ok(store::get_credential(conn, &id)?))
        .await?;
    let target = match &found {
        Some(c) => credential_target(&c.user_id, c.project_id.as_deref(), Some(&c.kind)),
        None => Target::new(),
    };
    s.authorize(ctx, rule, &target)?;
    found.ok_or_else(|| IdentityError::NotFound("Could not find credential.".into()))
}

async fn get_credential(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let credential = load_authorized(&s, &ctx, "identity:get_credential", id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"credential": credential_json(&credential, &s.v3_url())}),
    ))
}

async fn update_credential(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let mut credential = load_authorized(&s, &ctx, "identity:update_credential", id).await?;
    let request: CredentialRequest = member(&body, "credential")?;
    if let Some(blob) = request.blob {
        credential.blob = blob;
    }
    if let Some(kind) = request.kind {
        credential.kind = kind;
    }
    if let Some(project_id) = request.project_id {
        credential.project_id = project_id;
    }
    if let Some(user_id) = request.user_id {
        credential.user_id = user_id;
    }
    // As Keystone: the changed credential must still be the caller's to update.
    s.authorize(
        &ctx,
        "identity:update_credential",
        &credential_target(
            &credential.user_id,
            credential.project_id.as_deref(),
            Some(&credential.kind),
        ),
    )?;
    credential.extra.extend(strip_reserved(request.extra, &[]));
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            store::upsert_credential(tx, &credential)?;
            Ok(credential_json(&credential, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"credential": value})))
}

async fn delete_credential(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let credential = load_authorized(&s, &ctx, "identity:delete_credential", id).await?;
    s.write(move |tx| {
        store::delete_credential(tx, &credential.id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ OS-EC2

fn ec2_json(c: &Credential, base: &str) -> Option<Value> {
    let blob: Value = serde_json::from_str(&c.blob).ok()?;
    let access = blob.get("access")?.as_str()?.to_string();
    Some(json!({
        "access": access,
        "secret": blob.get("secret").cloned().unwrap_or(Value::Null),
        "user_id": c.user_id,
        "tenant_id": c.project_id,
        "trust_id": blob.get("trust_id").cloned().unwrap_or(Value::Null),
        "links": {"self": format!("{base}/users/{}/credentials/OS-EC2/{access}", c.user_id)},
    }))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

async fn create_ec2(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(user_id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        "identity:ec2_create_credential",
        &credential_target(&user_id, None, Some("ec2")),
    )?;
    primary_auth_only(&ctx, "ec2_create_credential")?;
    let request: Ec2Request = whole(&body)?;
    let project_id = request
        .tenant_id
        .ok_or_else(|| BodyError::Missing("tenant_id".into()))?;
    let access = random_hex(16);
    let blob = json!({"access": access, "secret": random_hex(16), "trust_id": null}).to_string();
    let credential = Credential {
        id: credential_id("ec2", &blob)?,
        user_id,
        project_id: Some(project_id),
        kind: "ec2".into(),
        blob,
        extra: Default::default(),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_user(tx, &credential.user_id)?.is_none() {
                return Err(IdentityError::NotFound(format!(
                    "Could not find user: {}.",
                    credential.user_id
                )));
            }
            if let Some(project) = &credential.project_id
                && store::get_project(tx, project)?.is_none()
            {
                return Err(IdentityError::NotFound(format!(
                    "Could not find project: {project}."
                )));
            }
            store::upsert_credential(tx, &credential)?;
            ec2_json(&credential, &base)
                .ok_or_else(|| IdentityError::Internal("an ec2 blob did not round-trip".into()))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"credential": value}),
    ))
}

async fn list_ec2(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(user_id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        "identity:ec2_list_credentials",
        &path_user_target(&user_id),
    )?;
    primary_auth_only(&ctx, "ec2_list_credentials")?;
    let base = s.v3_url();
    let self_url = format!("{}/users/{user_id}/credentials/OS-EC2", s.v3_url());
    let items = s
        .read(move |conn| {
            Ok(store::list_credentials(conn)?
                .iter()
                .filter(|c| c.kind == "ec2" && c.user_id == user_id)
                .filter_map(|c| ec2_json(c, &base))
                .collect())
        })
        .await?;
    Ok(list_response("credentials", items, self_url))
}

async fn find_ec2(
    s: &Arc<IdentityState>,
    user_id: String,
    access: &str,
) -> IdentityResult<Credential> {
    let id = hex::encode(Sha256::digest(access.as_bytes()));
    let found = s
        .read(move |conn| Ok(store::get_credential(conn, &id)?))
        .await?;
    found
        .filter(|c| c.kind == "ec2" && c.user_id == user_id)
        .ok_or_else(|| IdentityError::NotFound("Could not find credential.".into()))
}

async fn get_ec2(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((user_id, access)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        "identity:ec2_get_credential",
        &credential_target(&user_id, None, Some("ec2")),
    )?;
    primary_auth_only(&ctx, "ec2_get_credential")?;
    let credential = find_ec2(&s, user_id, &access).await?;
    let value = ec2_json(&credential, &s.v3_url())
        .ok_or_else(|| IdentityError::Internal("an ec2 blob did not round-trip".into()))?;
    Ok(json_response(StatusCode::OK, &json!({"credential": value})))
}

async fn delete_ec2(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((user_id, access)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        "identity:ec2_delete_credential",
        &credential_target(&user_id, None, Some("ec2")),
    )?;
    primary_auth_only(&ctx, "ec2_delete_credential")?;
    let credential = find_ec2(&s, user_id, &access).await?;
    s.write(move |tx| {
        store::delete_credential(tx, &credential.id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::identity::requests::refusal;

    #[test]
    fn application_credential_bodies() {
        let body = br#"{"application_credential": {"name": "a", "roles": [{"name": "member"}],
            "access_rules": [{"service": "compute", "method": "GET", "path": "/v2.1/servers"}]}}"#;
        let cred: NewAppCredential = member(body, "application_credential").expect("accepted");
        assert_eq!(cred.roles.map(|r| r.len()), Some(1));
        assert_eq!(cred.access_rules.map(|r| r.len()), Some(1));
        let refused = |body: &str| refusal::<NewAppCredential>(body, "application_credential");
        assert_eq!(
            refused(r#"{"application_credential": {"name": "a", "unrestricted": "yes"}}"#),
            "Invalid input for field 'unrestricted': not a boolean."
        );
        assert_eq!(
            refused(
                r#"{"application_credential": {"name": "a", "access_rules":
                    [{"service": "s", "method": "GET", "path": "/", "x": 1}]}}"#
            ),
            "Additional properties are not allowed ('access_rules[0].x' was unexpected)."
        );
    }

    #[test]
    fn credential_and_ec2_bodies() {
        let cred: CredentialRequest = member(
            br#"{"credential": {"user_id": "u", "type": "ec2", "blob": "{}", "project_id": null, "x": 1}}"#,
            "credential",
        )
        .expect("accepted");
        assert_eq!(cred.kind.as_deref(), Some("ec2"));
        assert_eq!(cred.project_id, Some(None));
        assert_eq!(cred.extra.len(), 1);
        assert_eq!(
            refusal::<CredentialRequest>(r#"{"credential": {"blob": {}}}"#, "credential"),
            "Invalid input for field 'blob': not a string."
        );
        let ec2: Ec2Request =
            whole(br#"{"tenant_id": "p", "other": 1}"#).expect("unknown members ignored");
        assert_eq!(ec2.tenant_id.as_deref(), Some("p"));
    }
}
