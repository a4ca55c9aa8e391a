//! A user's access rules (`/v3/users/{user_id}/access_rules`): the rules
//! their application credentials were made with, kept until deleted (a rule
//! an application credential still names cannot be), as Keystone does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::access_rules::rule_json;
use super::targets::{find_user, with_user_target};
use super::{Auth, AuthContext, IdentityError, IdentityResult, IdentityState, apply_filters};
use crate::db::identity::extensions as ext;
use crate::http::{json_response, no_content};
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/users/{user_id}/access_rules", get(list_rules))
        .route(
            "/v3/users/{user_id}/access_rules/{rule_id}",
            get(get_rule).delete(delete_rule),
        )
}

/// Keystone's target: the path's user (`target.user.*`).
async fn authorize(
    s: &Arc<IdentityState>,
    ctx: &AuthContext,
    rule: &str,
    user_id: &str,
) -> IdentityResult<()> {
    let user = find_user(s, user_id).await?;
    s.authorize(ctx, rule, &with_user_target(Target::new(), user.as_ref()))
}

fn not_found(id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find Access Rule: {id}."))
}

fn rule_view(rule: &ext::StoredAccessRule, base: &str) -> Value {
    let mut value = rule_json(rule);
    value["links"] =
        json!({"self": format!("{base}/users/{}/access_rules/{}", rule.user_id, rule.id)});
    value
}

async fn list_rules(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(user_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:list_access_rules", &user_id).await?;
    let base = s.v3_url();
    let self_url = format!("{base}/users/{user_id}/access_rules");
    let items = s
        .read(move |conn| {
            Ok(ext::list_access_rules(conn, &user_id)?
                .iter()
                .map(|r| rule_view(r, &base))
                .collect())
        })
        .await?;
    let items = apply_filters(items, &q, &["service", "path", "method"]);
    Ok(super::list_response("access_rules", items, self_url))
}

async fn get_rule(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((user_id, rule_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:get_access_rule", &user_id).await?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let rule = ext::get_access_rule(conn, &rule_id)?
                .filter(|r| r.user_id == user_id)
                .ok_or_else(|| not_found(&rule_id))?;
            Ok(rule_view(&rule, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"access_rule": value}),
    ))
}

async fn delete_rule(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((user_id, rule_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:delete_access_rule", &user_id).await?;
    s.write(move |tx| {
        ext::get_access_rule(tx, &rule_id)?
            .filter(|r| r.user_id == user_id)
            .ok_or_else(|| not_found(&rule_id))?;
        if ext::access_rule_in_use(tx, &rule_id)? {
            return Err(IdentityError::Forbidden(
                "identity:delete_access_rule (May not delete access rule in use)".into(),
            ));
        }
        ext::delete_access_rule(tx, &rule_id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}
