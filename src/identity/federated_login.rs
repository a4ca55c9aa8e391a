//! A federated login, as Keystone's `mapped` method: the IdP's token checked
//! (`oidc`), its claims through the protocol's mapping (`mapping`), then
//! the user: an ephemeral one is a shadow user in the IdP's domain (made on
//! its first login) whose groups come from the mapping and stay valid for
//! the IdP's `authorization_ttl` (minutes; at least the token's lifetime),
//! with the mapping's projects made and granted; a local one must exist.
//! The answer is an unscoped token whose methods are the protocol's id.
//! A leaf: no HTTP; the auth handler and `/v3/auth/tokens` both call it.

use std::sync::Arc;

use base64::Engine;
use rand::Rng;
use rusqlite::Connection;

use super::context::AuthContext;
use super::mapping::{self, DomainRef, Mapped, UserType};
use super::validation::{build_context, hash_token};
use super::{IdentityError, IdentityResult, IdentityState, new_id, oidc};
use crate::db::identity::{self as store, IdentityProvider, TokenRecord, User};
use crate::db::now_unix;

fn unauthorized() -> IdentityError {
    IdentityError::Unauthorized("The request you have made requires authentication.".into())
}

fn format_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string()
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The token from an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> IdentityResult<String> {
    let value = header.ok_or_else(unauthorized)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthorized());
    }
    Ok(token.trim().to_string())
}

/// Logs in through identity provider `idp_id` and protocol `protocol_id`
/// with the IdP's token; the new unscoped token and its context.
pub async fn login(
    state: &Arc<IdentityState>,
    idp_id: String,
    protocol_id: String,
    idp_token: &str,
) -> IdentityResult<(String, AuthContext)> {
    let (idp, mapping) = {
        let (idp_id, protocol_id) = (idp_id.clone(), protocol_id.clone());
        state
            .read(move |conn| {
                let idp = store::get_idp(conn, &idp_id)?.ok_or_else(|| {
                    IdentityError::NotFound(format!("Could not find Identity Provider: {idp_id}."))
                })?;
                if !idp.enabled {
                    return Err(IdentityError::Forbidden(format!(
                        "the identity provider {idp_id} is disabled"
                    )));
                }
                let protocol = store::get_protocol(conn, &idp_id, &protocol_id)?.ok_or_else(|| {
                    IdentityError::NotFound(format!(
                        "Could not find federated protocol {protocol_id} for Identity Provider: {idp_id}."
                    ))
                })?;
                let mapping = store::get_mapping(conn, &protocol.mapping_id)?.ok_or_else(|| {
                    IdentityError::NotFound(format!(
                        "Could not find mapping: {}.",
                        protocol.mapping_id
                    ))
                })?;
                Ok((idp, mapping))
            })
            .await?
    };
    let now = now_unix();
    let claims = oidc::verify(&state.oidc, idp_token, &idp.remote_ids, now)
        .await
        .map_err(|e| {
            tracing::info!(idp = %idp.id, error = %e, "federated token refused");
            match e {
                oidc::OidcError::Fetch(_) => IdentityError::Unauthorized(e.to_string()),
                _ => unauthorized(),
            }
        })?;
    let attributes = mapping::attributes_from_claims(&claims);
    let mapped = mapping::process(&mapping.id, &mapping.rules, &attributes).map_err(|e| {
        tracing::info!(idp = %idp.id, error = %e, "federated login not mapped");
        IdentityError::Unauthorized(e.to_string())
    })?;
    let ttl = state.token_ttl;
    state
        .write(move |tx| {
            let user_id = match mapped.user.kind {
                UserType::Ephemeral => shadow_user(tx, &idp, &protocol_id, &mapped, now, ttl)?,
                UserType::Local => local_user(tx, &mapped)?,
            };
            let expires = now + ttl;
            let token = random_b64(32);
            let record = TokenRecord {
                token_hash: hash_token(&token),
                user_id,
                scope_type: "unscoped".into(),
                scope_id: String::new(),
                methods: vec![protocol_id],
                issued_at: format_time(now),
                expires_at: format_time(expires),
                expires_unix: expires,
                audit_ids: vec![random_b64(16)],
                app_cred_id: None,
                revoked: false,
            };
            let ctx = build_context(tx, &record, now).map_err(|e| match e {
                IdentityError::NotFound(_) => unauthorized(),
                other => other,
            })?;
            store::insert_token(tx, &record)?;
            Ok((token, ctx))
        })
        .await
}

fn find_domain(conn: &Connection, domain: &DomainRef) -> IdentityResult<store::Domain> {
    let found = match (&domain.id, &domain.name) {
        (Some(id), _) => store::get_domain(conn, id)?,
        (None, Some(name)) => store::get_domain_by_name(conn, name)?,
        (None, None) => None,
    };
    found.ok_or_else(|| {
        IdentityError::Unauthorized(format!(
            "Could not find the domain the mapping names: {}.",
            domain
                .id
                .as_deref()
                .or(domain.name.as_deref())
                .unwrap_or("")
        ))
    })
}

/// The group ids a mapping gives, each checked to exist.
fn mapped_groups(
    conn: &Connection,
    mapped: &Mapped,
    mapping_user: &str,
) -> IdentityResult<Vec<String>> {
    let missing = |g: &str| {
        IdentityError::Unauthorized(format!(
            "Group {g} returned by mapping for {mapping_user} was not found in the backend."
        ))
    };
    let mut ids = Vec::new();
    for id in &mapped.group_ids {
        store::get_group(conn, id)?.ok_or_else(|| missing(id))?;
        ids.push(id.clone());
    }
    if !mapped.group_names.is_empty() {
        let groups = store::list_groups(conn)?;
        for wanted in &mapped.group_names {
            let domain = find_domain(conn, &wanted.domain)?;
            let group = groups
                .iter()
                .find(|g| g.name == wanted.name && g.domain_id == domain.id)
                .ok_or_else(|| missing(&wanted.name))?;
            ids.push(group.id.clone());
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Finds or makes the shadow user of an ephemeral login; sets its groups
/// and the projects the mapping grants.
fn shadow_user(
    tx: &Connection,
    idp: &IdentityProvider,
    protocol_id: &str,
    mapped: &Mapped,
    now: i64,
    token_ttl: i64,
) -> IdentityResult<String> {
    let name = mapped
        .user
        .name
        .clone()
        .or_else(|| mapped.user.id.clone())
        .ok_or_else(|| IdentityError::Unauthorized(mapping::MappingError::NoMatch.to_string()))?;
    let unique_id = mapped.user.id.clone().unwrap_or_else(|| quote(&name));
    let domain_id = match &mapped.user.domain {
        Some(domain) => find_domain(tx, domain)?.id,
        None => idp.domain_id.clone(),
    };
    let group_ids = mapped_groups(tx, mapped, &name)?;
    let user_id = match store::federated_user_id(tx, &idp.id, protocol_id, &unique_id)? {
        Some(id) => id,
        None => {
            let user = User {
                id: new_id(),
                name: name.clone(),
                domain_id: domain_id.clone(),
                enabled: true,
                password_hash: None,
                password_changed_at: None,
                password_expires_at: None,
                default_project_id: None,
                created_at: now,
                options: Default::default(),
                extra: match &mapped.user.email {
                    Some(email) => [("email".to_string(), serde_json::json!(email))]
                        .into_iter()
                        .collect(),
                    None => Default::default(),
                },
            };
            store::insert_user(tx, &user)?;
            store::insert_federated_user(tx, &user.id, (&idp.id, protocol_id), &unique_id, &name)?;
            user.id
        }
    };
    let lifetime = (idp.authorization_ttl.unwrap_or(0) * 60).max(token_ttl);
    store::set_expiring_groups(tx, &user_id, &idp.id, &group_ids, now + lifetime)?;
    grant_projects(tx, mapped, &domain_id, &user_id)?;
    Ok(user_id)
}

/// Makes the mapping's projects (in the IdP's domain unless it names one)
/// and gives the user the roles it lists there.
fn grant_projects(
    tx: &Connection,
    mapped: &Mapped,
    default_domain: &str,
    user_id: &str,
) -> IdentityResult<()> {
    if mapped.projects.is_empty() {
        return Ok(());
    }
    let roles = store::list_roles(tx)?;
    for wanted in &mapped.projects {
        let domain_id = match &wanted.domain {
            Some(domain) => find_domain(tx, domain)?.id,
            None => default_domain.to_string(),
        };
        let project = match store::get_project_by_name(tx, &domain_id, &wanted.name)? {
            Some(project) => project,
            None => {
                let project = store::Project {
                    id: new_id(),
                    name: wanted.name.clone(),
                    domain_id: domain_id.clone(),
                    parent_id: None,
                    description: String::new(),
                    enabled: true,
                    is_domain: false,
                    extra: Default::default(),
                };
                store::insert_project(tx, &project)?;
                project
            }
        };
        for role_name in &wanted.roles {
            let role = roles
                .iter()
                .find(|r| {
                    r.name == *role_name
                        && r.domain_id
                            .as_deref()
                            .is_none_or(|d| d.is_empty() || d == domain_id)
                })
                .ok_or_else(|| {
                    IdentityError::Unauthorized(format!("Could not find role: {role_name}."))
                })?;
            store::insert_assignment(
                tx,
                &store::Assignment {
                    actor_type: "user".into(),
                    actor_id: user_id.to_string(),
                    target_type: "project".into(),
                    target_id: project.id.clone(),
                    role_id: role.id.clone(),
                    inherited: false,
                },
            )?;
        }
    }
    Ok(())
}

/// The existing user a `local` mapping names.
fn local_user(tx: &Connection, mapped: &Mapped) -> IdentityResult<String> {
    let user = if let Some(id) = &mapped.user.id {
        store::get_user(tx, id)?
    } else {
        let name = mapped.user.name.as_deref().ok_or_else(unauthorized)?;
        let domain = mapped.user.domain.as_ref().ok_or_else(|| {
            IdentityError::Unauthorized("A local user given by name needs a domain.".into())
        })?;
        let domain = find_domain(tx, domain)?;
        store::get_user_by_name(tx, &domain.id, name)?
    };
    let user = user.ok_or_else(unauthorized)?;
    if !user.enabled {
        return Err(unauthorized());
    }
    Ok(user.id)
}

/// `urllib.parse.quote`, which Keystone makes a user's unique id with.
fn quote(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"_.-~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(Some("Bearer abc")).expect("token"), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).expect("token"), "abc");
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer")).is_err());
        assert!(bearer(None).is_err());
    }

    #[test]
    fn unique_ids_are_quoted_as_keystone_does() {
        assert_eq!(quote("bob smith@x"), "bob%20smith%40x");
        assert_eq!(quote("a/b_c.d-e~"), "a/b_c.d-e~");
    }
}
