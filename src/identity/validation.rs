//! Token validation for every service: a token string to the caller's
//! [`AuthContext`], recomputed from the state file (user and domain still
//! enabled, scope still there, roles still held, application credential
//! still valid) and cached until the next identity write. No HTTP: the
//! `Auth` extractor and the token API both call it.

use std::sync::Arc;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::context::{AuthContext, Federation, Scope, TrustInfo};
use super::{
    IdentityError, IdentityResult, IdentityState, access_rules, effective_roles, trust_scope,
};
use crate::db::identity::{self as store, TokenRecord};
use crate::db::now_unix;

/// The SHA-256 under which a token is stored and cached.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub(super) fn not_found_token() -> IdentityError {
    IdentityError::NotFound("Could not recognize Fernet token".into())
}

/// Validates a token string, from the cache when nothing changed since.
pub async fn validate(state: &Arc<IdentityState>, token: &str) -> IdentityResult<Arc<AuthContext>> {
    let hash = hash_token(token);
    let epoch = state.epoch();
    let now = now_unix();
    if let Ok(cache) = state.token_cache.read()
        && let Some((seen, ctx)) = cache.get(&hash)
        && *seen == epoch
        && ctx.expires_unix > now
    {
        return Ok(ctx.clone());
    }
    let lookup = hash.clone();
    let ctx = state
        .read(move |conn| {
            let record = store::get_token(conn, &lookup)?.ok_or_else(not_found_token)?;
            build_context(conn, &record, now)
        })
        .await?;
    let ctx = Arc::new(ctx);
    if let Ok(mut cache) = state.token_cache.write() {
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(hash, (epoch, ctx.clone()));
    }
    Ok(ctx)
}

/// Rebuilds a token's context from the state file, checking it is still valid.
pub(super) fn build_context(
    conn: &Connection,
    record: &TokenRecord,
    now: i64,
) -> IdentityResult<AuthContext> {
    if record.revoked || record.expires_unix <= now {
        return Err(not_found_token());
    }
    let mut user = store::get_user(conn, &record.user_id)?.ok_or_else(not_found_token)?;
    let mut user_domain = store::get_domain(conn, &user.domain_id)?.ok_or_else(not_found_token)?;
    if !user.enabled || !user_domain.enabled {
        return Err(not_found_token());
    }
    let (scope, mut roles, trust) = if record.scope_type == "trust" {
        let (scope, roles, trust, trustor) = trust_scoped(conn, record, &user.id, now)?;
        if let Some((trustor, trustor_domain)) = trustor {
            user = trustor;
            user_domain = trustor_domain;
        }
        (scope, roles, Some(trust))
    } else {
        let scope = resolve_scope_by_id(conn, &record.scope_type, &record.scope_id)?;
        let roles = effective_roles::effective_roles_for_scope(conn, &user.id, &scope)?;
        (scope, roles, None)
    };
    let mut app_cred = None;
    let mut access_rules = Vec::new();
    if let Some(cred_id) = &record.app_cred_id {
        let cred = store::get_app_cred(conn, cred_id)?.ok_or_else(not_found_token)?;
        if cred.expires_at_micros.is_some_and(|t| t / 1_000_000 <= now) {
            return Err(not_found_token());
        }
        // The credential dies with any role it was made with.
        if !cred
            .roles
            .iter()
            .all(|wanted| roles.iter().any(|(id, _)| id == wanted))
        {
            return Err(not_found_token());
        }
        roles.retain(|(id, _)| cred.roles.contains(id));
        access_rules = access_rules::from_stored(&cred.access_rules);
        app_cred = Some((cred.id, cred.name, cred.unrestricted));
    }
    if scope != Scope::Unscoped && roles.is_empty() {
        return Err(not_found_token());
    }
    let federation = federation_of(conn, &user.id, &record.methods, now)?;
    Ok(AuthContext {
        token_hash: record.token_hash.clone(),
        user_id: user.id,
        user_name: user.name,
        user_domain_id: user_domain.id,
        user_domain_name: user_domain.name,
        scope,
        roles,
        methods: record.methods.clone(),
        issued_at: record.issued_at.clone(),
        expires_at: record.expires_at.clone(),
        expires_unix: record.expires_unix,
        audit_ids: record.audit_ids.clone(),
        app_cred,
        access_rules,
        federation,
        trust,
    })
}

/// The identity provider and protocol a token's user logged in through
/// (one of the token's methods), with the groups that login gave it.
fn federation_of(
    conn: &Connection,
    user_id: &str,
    methods: &[String],
    now: i64,
) -> IdentityResult<Option<Federation>> {
    for (idp_id, protocol_id) in store::federations_of_user(conn, user_id)? {
        if methods.contains(&protocol_id) {
            let group_ids = store::expiring_groups(conn, user_id, &idp_id, now)?;
            return Ok(Some(Federation {
                idp_id,
                protocol_id,
                group_ids,
            }));
        }
    }
    Ok(None)
}

/// A trust-scoped token (`scope_type = 'trust'`, the trust's id as
/// `scope_id`): its project, the roles delegated, the trust, and the
/// trustor with its domain when the trust impersonates. `user_id` is the
/// token's user, who must be the trustee.
#[allow(clippy::type_complexity)]
fn trust_scoped(
    conn: &Connection,
    record: &TokenRecord,
    user_id: &str,
    now: i64,
) -> IdentityResult<(
    Scope,
    Vec<(String, String)>,
    TrustInfo,
    Option<(store::User, store::Domain)>,
)> {
    let now_micros = now.saturating_mul(1_000_000);
    let trust = trust_scope::usable_trust(conn, &record.scope_id, now_micros, false)
        .map_err(|_| not_found_token())?;
    trust_scope::check_trustee(conn, &trust, user_id).map_err(|_| not_found_token())?;
    let scope = match &trust.project_id {
        Some(project) => resolve_scope_by_id(conn, "project", project)?,
        None => Scope::Unscoped,
    };
    let roles = trust_scope::delegated_roles(conn, &trust).map_err(|_| not_found_token())?;
    let trustor = if trust.impersonation {
        let trustor = store::get_user(conn, &trust.trustor_user_id)?.ok_or_else(not_found_token)?;
        let domain = store::get_domain(conn, &trustor.domain_id)?.ok_or_else(not_found_token)?;
        Some((trustor, domain))
    } else {
        None
    };
    let info = TrustInfo {
        id: trust.id,
        trustor_user_id: trust.trustor_user_id,
        trustee_user_id: trust.trustee_user_id,
        impersonation: trust.impersonation,
    };
    Ok((scope, roles, info, trustor))
}

fn resolve_scope_by_id(
    conn: &Connection,
    scope_type: &str,
    scope_id: &str,
) -> IdentityResult<Scope> {
    match scope_type {
        "project" => {
            let project = store::get_project(conn, scope_id)?.ok_or_else(not_found_token)?;
            let domain =
                store::get_domain(conn, &project.domain_id)?.ok_or_else(not_found_token)?;
            if !project.enabled || !domain.enabled {
                return Err(not_found_token());
            }
            Ok(Scope::Project {
                id: project.id,
                name: project.name,
                domain_id: domain.id,
                domain_name: domain.name,
            })
        }
        "domain" => {
            let domain = store::get_domain(conn, scope_id)?.ok_or_else(not_found_token)?;
            if !domain.enabled {
                return Err(not_found_token());
            }
            Ok(Scope::Domain {
                id: domain.id,
                name: domain.name,
            })
        }
        "system" => Ok(Scope::System),
        _ => Ok(Scope::Unscoped),
    }
}
