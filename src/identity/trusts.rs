//! Trusts (`/v3/OS-TRUST/trusts`): a trustor delegates some of its roles on
//! a project to a trustee, who then gets trust-scoped tokens
//! (`token`/`trust_scope`). Keystone's validation: the caller must be the
//! trustor, every role must be one the trustor holds on the project, an
//! expiry in the past is refused, and a trust created with a trust-scoped
//! token is a redelegation (its depth counts down from Keystone's
//! `max_redelegation_count`, `serve --trust-max-redelegation-count`, its
//! roles are a subset of its parent's).
//! Tokens made from an application credential cannot manage trusts.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::requests::{member, not_null};
use super::trust_scope::{self, TrustScopeError};
use super::{Auth, AuthContext, IdentityError, IdentityResult, IdentityState, new_id, views};
use crate::db::identity::trusts::{self as store, Trust, TrustFilter};
use crate::db::identity::{self as identity_store};
use crate::db::now_unix;
use crate::http::body::BodyError;
use crate::http::{json_response, no_content};
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/OS-TRUST/trusts", get(list_trusts).post(create_trust))
        .route("/v3/OS-TRUST/trusts/", get(list_trusts).post(create_trust))
        .route(
            "/v3/OS-TRUST/trusts/{trust_id}",
            get(get_trust).delete(delete_trust),
        )
        .route(
            "/v3/OS-TRUST/trusts/{trust_id}/roles",
            get(list_trust_roles),
        )
        .route(
            "/v3/OS-TRUST/trusts/{trust_id}/roles/{role_id}",
            get(get_trust_role),
        )
}

fn trust_not_found(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find trust: {id}."))
}

fn role_not_found(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find role: {id}."))
}

fn forbidden(why: &str) -> IdentityError {
    IdentityError::Forbidden(why.to_string())
}

/// Keystone: delegated tokens (here: from application credentials) cannot
/// manage trusts; trust-scoped tokens can (that is redelegation).
fn not_delegated(ctx: &AuthContext) -> IdentityResult<()> {
    if ctx.app_cred.is_some() {
        return Err(forbidden("Delegated tokens cannot manage trusts."));
    }
    Ok(())
}

/// Keystone's `target.trust.*`.
fn trust_target(t: &Trust) -> Target {
    Target::new()
        .with("target.trust.id", &t.id)
        .with("target.trust.trustor_user_id", &t.trustor_user_id)
        .with("target.trust.trustee_user_id", &t.trustee_user_id)
        .with_opt("target.trust.project_id", t.project_id.as_deref())
}

/// Keystone's times: microseconds, `Z`.
fn format_expiry(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Parses `expires_at` as Keystone does (ISO 8601, UTC when no offset);
/// a bad timestamp or one in the past is a 400.
fn parse_expiry(text: &str, now_micros: i64) -> IdentityResult<i64> {
    let bad = || {
        IdentityError::BadRequest(format!(
            "Invalid input for field 'expires_at': {text:?} is not an ISO 8601 timestamp."
        ))
    };
    let micros = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.timestamp_micros(),
        Err(_) => {
            let trimmed = text.trim_end_matches('Z');
            // Python clients may send `str(datetime)`: a space, no `T`.
            [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S",
            ]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(trimmed, f).ok())
            .ok_or_else(bad)?
            .and_utc()
            .timestamp_micros()
        }
    };
    if micros < now_micros {
        return Err(IdentityError::BadRequest(
            "The 'expires_at' must not be before now.".into(),
        ));
    }
    Ok(micros)
}

/// An optional count of at least `min`.
fn at_least(value: Option<i64>, key: &str, min: i64) -> IdentityResult<Option<i64>> {
    match value {
        Some(n) if n < min => Err(IdentityError::BadRequest(format!(
            "Invalid input for field '{key}': must be an integer of at least {min}."
        ))),
        other => Ok(other),
    }
}

/// The trust document; `roles` (full role documents) only where Keystone
/// shows them (not in listings).
fn trust_json(t: &Trust, roles: Option<Vec<Value>>, base: &str) -> Value {
    let self_url = format!("{base}/OS-TRUST/trusts/{}", t.id);
    let mut body = json!({
        "id": t.id,
        "trustor_user_id": t.trustor_user_id,
        "trustee_user_id": t.trustee_user_id,
        "project_id": t.project_id,
        "impersonation": t.impersonation,
        "expires_at": t.expires_at_micros.map(format_expiry),
        "remaining_uses": t.remaining_uses,
        "redelegation_count": t.redelegation_count,
        "redelegated_trust_id": t.redelegated_trust_id,
        "deleted_at": null,
        "links": {"self": self_url},
    });
    if let Some(roles) = roles {
        body["roles"] = Value::Array(roles);
        body["roles_links"] =
            json!({"self": format!("{self_url}/roles"), "previous": null, "next": null});
    }
    body
}

/// The full role documents of a trust's roles (roles deleted since are left out).
fn role_docs(conn: &Connection, t: &Trust, base: &str) -> IdentityResult<Vec<Value>> {
    Ok(identity_store::list_roles(conn)?
        .iter()
        .filter(|r| t.roles.contains(&r.id))
        .map(|r| views::role(r, base))
        .collect())
}

/// The requested roles as ids: `{"id": ...}` or `{"name": ...}` (a global role).
fn role_ids(conn: &Connection, requested: &[TrustRole]) -> IdentityResult<Vec<String>> {
    let roles = identity_store::list_roles(conn)?;
    let mut ids = BTreeSet::new();
    for item in requested {
        if let Some(id) = &item.id {
            ids.insert(id.clone());
        } else if let Some(name) = &item.name {
            let role = roles
                .iter()
                .find(|r| r.domain_id.is_none() && r.name == *name)
                .ok_or_else(|| role_not_found(name))?;
            ids.insert(role.id.clone());
        } else {
            return Err(IdentityError::BadRequest(
                "A trust role needs an id or a name.".into(),
            ));
        }
    }
    Ok(ids.into_iter().collect())
}

/// The `trust` member of `POST /v3/OS-TRUST/trusts` (other members are
/// ignored, as Keystone's schema allows them).
#[derive(Debug, serde::Deserialize)]
struct TrustRequest {
    trustor_user_id: Option<String>,
    trustee_user_id: Option<String>,
    /// Required.
    #[serde(default, deserialize_with = "not_null")]
    impersonation: Option<bool>,
    roles: Option<Vec<TrustRole>>,
    allow_redelegation: Option<bool>,
    /// An ISO 8601 time, not in the past.
    expires_at: Option<String>,
    /// Empty counts as absent.
    project_id: Option<String>,
    /// At least 1.
    remaining_uses: Option<i64>,
    /// At least 0.
    redelegation_count: Option<i64>,
}

/// A role of a new trust: by id, or by name (a global role).
#[derive(Debug, serde::Deserialize)]
struct TrustRole {
    id: Option<String>,
    name: Option<String>,
}

/// What the caller asked for, parsed and typed.
struct NewTrust {
    trust: Trust,
    requested_roles: Vec<TrustRole>,
    allow_redelegation: bool,
    requested_count: Option<i64>,
}

fn parse_new_trust(body: &Bytes, now_micros: i64) -> IdentityResult<NewTrust> {
    let request: TrustRequest = member(body, "trust")?;
    let required = |value: Option<String>, key: &str| {
        value.ok_or_else(|| IdentityError::from(BodyError::Missing(key.into())))
    };
    let trustor_user_id = required(request.trustor_user_id, "trustor_user_id")?;
    let trustee_user_id = required(request.trustee_user_id, "trustee_user_id")?;
    let impersonation = request
        .impersonation
        .ok_or_else(|| BodyError::Missing("impersonation".into()))?;
    let expires_at_micros = request
        .expires_at
        .map(|t| parse_expiry(&t, now_micros))
        .transpose()?;
    Ok(NewTrust {
        trust: Trust {
            id: new_id(),
            trustor_user_id,
            trustee_user_id,
            project_id: request.project_id.filter(|p| !p.is_empty()),
            impersonation,
            expires_at_micros,
            remaining_uses: at_least(request.remaining_uses, "remaining_uses", 1)?,
            redelegation_count: 0,
            redelegated_trust_id: None,
            roles: Vec::new(),
        },
        requested_roles: request.roles.unwrap_or_default(),
        allow_redelegation: request.allow_redelegation.unwrap_or(false),
        requested_count: at_least(request.redelegation_count, "redelegation_count", 0)?,
    })
}

/// Keystone's checks of a trust against one it is redelegated from.
fn check_redelegation(parent: &Trust, trust: &mut Trust, max: i64) -> IdentityResult<()> {
    let depth = parent.redelegation_count;
    if !(0 < depth && depth <= max) {
        return Err(forbidden(&format!(
            "Remaining redelegation depth of {depth} out of allowed range of [0..{max}]"
        )));
    }
    if let Some(uses) = trust.remaining_uses {
        return Err(forbidden(&format!(
            "Field \"remaining_uses\" is set to {uses} while it must not be set in order to redelegate a trust"
        )));
    }
    match (trust.expires_at_micros, parent.expires_at_micros) {
        (Some(wanted), Some(limit)) if limit < wanted => {
            return Err(forbidden(
                "Requested expiration time is more than redelegated trust can provide",
            ));
        }
        (None, limit) => trust.expires_at_micros = limit,
        _ => {}
    }
    if !trust.roles.iter().all(|r| parent.roles.contains(r)) {
        return Err(forbidden(
            "Some of requested roles are not in redelegated trust",
        ));
    }
    if !parent.impersonation && trust.impersonation {
        return Err(forbidden(&format!(
            "Impersonation is not allowed because redelegated trust does not specify impersonation. Redelegated trust id: {}",
            parent.id
        )));
    }
    if trust.project_id != parent.project_id {
        return Err(forbidden(
            "A redelegated trust must be on the project of the trust it comes from",
        ));
    }
    Ok(())
}

fn scope_error(e: TrustScopeError, id: &str) -> IdentityError {
    match e {
        TrustScopeError::NotFound(_) => trust_not_found(id),
        TrustScopeError::Db(db) => IdentityError::Db(db),
        other => IdentityError::Forbidden(other.to_string()),
    }
}

/// Everything `POST` checks against the state file, then the insert.
fn create_in(
    conn: &Connection,
    new: NewTrust,
    via_trust: Option<String>,
    now_micros: i64,
    max: i64,
) -> IdentityResult<Trust> {
    let NewTrust {
        mut trust,
        requested_roles,
        allow_redelegation,
        requested_count,
    } = new;
    identity_store::get_user(conn, &trust.trustee_user_id)?.ok_or_else(|| {
        IdentityError::NotFound(format!("Could not find user: {}.", trust.trustee_user_id))
    })?;
    trust.roles = role_ids(conn, &requested_roles)?;
    let parent = via_trust
        .map(|id| {
            trust_scope::usable_trust(conn, &id, now_micros, false).map_err(|e| scope_error(e, &id))
        })
        .transpose()?;
    // The roles must be held by the trustor whose roles are delegated: the
    // root of the chain when redelegating.
    let original_trustor = match &parent {
        Some(p) => trust_scope::original_trustor(conn, p).map_err(|e| scope_error(e, &p.id))?,
        None => trust.trustor_user_id.clone(),
    };
    if let Some(project_id) = &trust.project_id {
        identity_store::get_project(conn, project_id)?.ok_or_else(|| {
            IdentityError::NotFound(format!("Could not find project: {project_id}."))
        })?;
    }
    let held = trust_scope::trustor_role_ids(conn, &original_trustor, trust.project_id.as_deref())
        .map_err(|e| scope_error(e, &trust.id))?;
    if let Some(missing) = trust.roles.iter().find(|r| !held.contains(r)) {
        return Err(role_not_found(missing));
    }
    let redelegatable = allow_redelegation && requested_count != Some(0);
    // As Keystone: the requested depth, 0 when not redelegatable, the
    // parent's minus one when redelegating, else the maximum.
    let mut count = requested_count;
    if !redelegatable {
        count = Some(0);
    } else {
        if let Some(requested) = requested_count
            && requested > max
        {
            return Err(forbidden(&format!(
                "Requested redelegation depth of {requested} is greater than allowed {max}"
            )));
        }
        if trust.remaining_uses.is_some() {
            return Err(IdentityError::BadRequest(
                "remaining_uses must not be set if redelegation is allowed".into(),
            ));
        }
    }
    if let Some(parent) = &parent {
        trust.redelegated_trust_id = Some(parent.id.clone());
        let remaining = parent.redelegation_count - 1;
        if redelegatable && requested_count.is_some_and(|c| c != remaining) {
            return Err(forbidden(
                "Modifying \"redelegation_count\" upon redelegation is forbidden. Omitting this parameter is advised.",
            ));
        }
        count.get_or_insert(remaining);
        for ancestor in
            trust_scope::pedigree(conn, parent).map_err(|e| scope_error(e, &parent.id))?
        {
            check_redelegation(&ancestor, &mut trust, max)?;
        }
    }
    trust.redelegation_count = count.unwrap_or(max);
    store::insert_trust(conn, &trust, now_micros)?;
    Ok(trust)
}

/// `POST /v3/OS-TRUST/trusts`.
async fn create_trust(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    let now_micros = now_unix().saturating_mul(1_000_000);
    let new = parse_new_trust(&body, now_micros)?;
    let target = Target::new()
        .with("target.trust.trustor_user_id", &new.trust.trustor_user_id)
        .with("target.trust.trustee_user_id", &new.trust.trustee_user_id)
        .with_opt("target.trust.project_id", new.trust.project_id.as_deref());
    s.authorize(&ctx, "identity:create_trust", &target)?;
    not_delegated(&ctx)?;
    if new.trust.project_id.is_some() && new.requested_roles.is_empty() {
        return Err(forbidden("At least one role should be specified"));
    }
    if ctx.user_id != new.trust.trustor_user_id {
        return Err(forbidden("The authenticated user should match the trustor"));
    }
    let via_trust = ctx.trust.as_ref().map(|t| t.id.clone());
    let max = i64::try_from(s.trust_max_redelegation_count).unwrap_or(i64::MAX);
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let trust = create_in(tx, new, via_trust, now_micros, max)?;
            let roles = role_docs(tx, &trust, &base)?;
            Ok(trust_json(&trust, Some(roles), &base))
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &json!({"trust": value})))
}

/// `GET /v3/OS-TRUST/trusts[?trustor_user_id=|trustee_user_id=]`.
async fn list_trusts(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(query): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let trustor = query
        .get("trustor_user_id")
        .filter(|v| !v.is_empty())
        .cloned();
    let trustee = query
        .get("trustee_user_id")
        .filter(|v| !v.is_empty())
        .cloned();
    match (&trustor, &trustee) {
        (Some(id), _) => s.authorize(
            &ctx,
            "identity:list_trusts_for_trustor",
            &Target::new().with("target.trust.trustor_user_id", id),
        )?,
        (None, Some(id)) => s.authorize(
            &ctx,
            "identity:list_trusts_for_trustee",
            &Target::new().with("target.trust.trustee_user_id", id),
        )?,
        (None, None) => s.authorize(&ctx, "identity:list_trusts", &Target::new())?,
    }
    not_delegated(&ctx)?;
    let base = s.v3_url();
    let trusts = s
        .read(move |conn| {
            let filter = match (&trustor, &trustee) {
                (Some(id), _) => TrustFilter::Trustor(id),
                (None, Some(id)) => TrustFilter::Trustee(id),
                (None, None) => TrustFilter::All,
            };
            Ok(store::list_trusts(conn, filter)?
                .iter()
                .map(|t| trust_json(t, None, &base))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(super::list_response(
        "trusts",
        trusts,
        format!("{}/OS-TRUST/trusts", s.v3_url()),
    ))
}

/// Loads a trust as Keystone's `get_trust` does (gone, expired or used up:
/// 404), then enforces `rule` on it.
async fn authorized_trust(
    s: &Arc<IdentityState>,
    ctx: &AuthContext,
    id: String,
    rule: &str,
) -> IdentityResult<Trust> {
    let now_micros = now_unix().saturating_mul(1_000_000);
    let lookup = id.clone();
    let trust = s
        .read(move |conn| {
            trust_scope::usable_trust(conn, &lookup, now_micros, true)
                .map_err(|e| scope_error(e, &lookup))
        })
        .await?;
    s.authorize(ctx, rule, &trust_target(&trust))?;
    not_delegated(ctx)?;
    Ok(trust)
}

/// `GET /v3/OS-TRUST/trusts/{trust_id}`.
async fn get_trust(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let trust = authorized_trust(&s, &ctx, id, "identity:get_trust").await?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let roles = role_docs(conn, &trust, &base)?;
            Ok(trust_json(&trust, Some(roles), &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"trust": value})))
}

/// `DELETE /v3/OS-TRUST/trusts/{trust_id}`: the trust, the trusts
/// redelegated from it, and their tokens.
async fn delete_trust(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let lookup = id.clone();
    let trust = s
        .read(move |conn| store::get_trust(conn, &lookup)?.ok_or_else(|| trust_not_found(&lookup)))
        .await?;
    s.authorize(&ctx, "identity:delete_trust", &trust_target(&trust))?;
    not_delegated(&ctx)?;
    s.write(move |tx| {
        if !store::delete_trust(tx, &id)? {
            return Err(trust_not_found(&id));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

/// `GET /v3/OS-TRUST/trusts/{trust_id}/roles`.
async fn list_trust_roles(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let trust = authorized_trust(&s, &ctx, id, "identity:list_roles_for_trust").await?;
    let base = s.v3_url();
    let self_url = format!("{base}/OS-TRUST/trusts/{}/roles", trust.id);
    let roles = s.read(move |conn| role_docs(conn, &trust, &base)).await?;
    Ok(super::list_response("roles", roles, self_url))
}

/// `GET/HEAD /v3/OS-TRUST/trusts/{trust_id}/roles/{role_id}`.
async fn get_trust_role(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((id, role_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let trust = authorized_trust(&s, &ctx, id, "identity:get_role_for_trust").await?;
    if !trust.roles.contains(&role_id) {
        return Err(role_not_found(&role_id));
    }
    let base = s.v3_url();
    let role = s
        .read(move |conn| {
            identity_store::get_role(conn, &role_id)?
                .map(|r| views::role(&r, &base))
                .ok_or_else(|| role_not_found(&role_id))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"role": role})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Trust {
        Trust {
            id: "p".into(),
            trustor_user_id: "alice".into(),
            trustee_user_id: "bob".into(),
            project_id: Some("p1".into()),
            impersonation: false,
            expires_at_micros: Some(1_000),
            remaining_uses: None,
            redelegation_count: 2,
            redelegated_trust_id: None,
            roles: vec!["r1".into(), "r2".into()],
        }
    }

    fn child() -> Trust {
        Trust {
            id: "c".into(),
            trustor_user_id: "bob".into(),
            trustee_user_id: "carol".into(),
            roles: vec!["r1".into()],
            expires_at_micros: None,
            ..parent()
        }
    }

    #[test]
    fn redelegation_inherits_expiry_and_narrows_roles() {
        let mut c = child();
        check_redelegation(&parent(), &mut c, 3).expect("allowed");
        assert_eq!(c.expires_at_micros, Some(1_000));
        let mut wider = child();
        wider.roles.push("r3".into());
        assert!(check_redelegation(&parent(), &mut wider, 3).is_err());
        let mut later = child();
        later.expires_at_micros = Some(2_000);
        assert!(check_redelegation(&parent(), &mut later, 3).is_err());
        let mut impersonating = child();
        impersonating.impersonation = true;
        assert!(check_redelegation(&parent(), &mut impersonating, 3).is_err());
        let mut used = child();
        used.remaining_uses = Some(1);
        assert!(check_redelegation(&parent(), &mut used, 3).is_err());
    }

    #[test]
    fn redelegation_depth_must_remain() {
        let mut spent = parent();
        spent.redelegation_count = 0;
        assert!(check_redelegation(&spent, &mut child(), 3).is_err());
        let mut too_deep = parent();
        too_deep.redelegation_count = 4;
        assert!(check_redelegation(&too_deep, &mut child(), 3).is_err());
    }

    #[test]
    fn expiry_parsing() {
        let now = 1_700_000_000_000_000;
        assert!(parse_expiry("bad.123Z", now).is_err());
        assert!(parse_expiry("2000-01-01T00:00:00Z", now).is_err());
        let t = parse_expiry("2099-01-01T00:00:00Z", now).expect("future");
        assert_eq!(format_expiry(t), "2099-01-01T00:00:00.000000Z");
        assert_eq!(
            parse_expiry("2099-01-01T01:00:00+01:00", now).expect("offset"),
            t
        );
        assert_eq!(parse_expiry("2099-01-01T00:00:00", now).expect("naive"), t);
        assert_eq!(parse_expiry("2099-01-01 00:00:00", now).expect("space"), t);
    }

    #[test]
    fn trust_bodies() {
        let body = Bytes::from_static(
            br#"{"trust": {"trustor_user_id": "a", "trustee_user_id": "b", "impersonation": true,
                "project_id": "", "roles": [{"name": "member"}], "remaining_uses": 2}}"#,
        );
        let new = parse_new_trust(&body, 0).expect("accepted");
        assert_eq!(new.trust.project_id, None);
        assert_eq!(new.trust.remaining_uses, Some(2));
        assert_eq!(new.requested_roles.len(), 1);
        let refused = |body: &'static str| {
            parse_new_trust(&Bytes::from_static(body.as_bytes()), 0)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            refused(r#"{"trust": {"trustor_user_id": "a", "trustee_user_id": "b"}}"#).as_deref(),
            Some("'impersonation' is a required property.")
        );
        assert_eq!(
            refused(
                r#"{"trust": {"trustor_user_id": "a", "trustee_user_id": "b",
                    "impersonation": false, "remaining_uses": 0}}"#
            )
            .as_deref(),
            Some("Invalid input for field 'remaining_uses': must be an integer of at least 1.")
        );
        assert_eq!(
            refused(
                r#"{"trust": {"trustor_user_id": "a", "trustee_user_id": "b",
                    "impersonation": false, "roles": ["member"]}}"#
            )
            .as_deref(),
            Some("Invalid input for field 'roles[0]': not an object.")
        );
    }
}
