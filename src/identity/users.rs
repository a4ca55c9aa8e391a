//! Users (with passwords) and groups (with their members).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::effective_roles;
use super::requests::{Name, member, not_null, nullable};
use super::targets::{
    default_domain_for, find_group, find_user, load_group, load_user, not_found, token_domain,
    with_group_target, with_user_target,
};
use super::views::{self, strip_reserved};
use super::{
    Auth, IdentityError, IdentityResult, IdentityState, admin_delete, admin_list, apply_filters,
    list_response, new_id,
};
use crate::db::identity::{self as store, Group, User};
use crate::db::now_unix;
use crate::http::body::BodyError;
use crate::http::body::Object;
use crate::http::{json_response, no_content};
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/users", get(list_users).post(create_user))
        .route(
            "/v3/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route(
            "/v3/users/{id}/password",
            axum::routing::post(change_password),
        )
        .route("/v3/users/{id}/projects", get(list_user_projects))
        .route("/v3/users/{id}/groups", get(list_user_groups))
        .route("/v3/groups", get(list_groups).post(create_group))
        .route(
            "/v3/groups/{id}",
            get(get_group).patch(update_group).delete(delete_group),
        )
        .route("/v3/groups/{id}/users", get(list_group_users))
        .route(
            "/v3/groups/{id}/users/{user_id}",
            get(check_member).put(add_member).delete(remove_member),
        )
}

/// Projects on which the user has any effective role, as JSON.
fn user_projects_json(conn: &Connection, user_id: &str, base: &str) -> IdentityResult<Vec<Value>> {
    effective_roles::user_projects(conn, user_id)?
        .iter()
        .map(|p| Ok(views::project(p, store::project_tags(conn, &p.id)?, base)))
        .collect()
}

// ------------------------------------------------------------------ users

async fn list_users(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(mut q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let domain = token_domain(&ctx);
    let target = Target::new().with_opt("target.domain_id", domain.clone());
    if let Some(domain) = domain {
        q.insert("domain_id".into(), domain);
    }
    s.authorize(&ctx, "identity:list_users", &target)?;
    // The rendered rows come from memory while no identity write happened
    // (`IdentityState::users_view`): this is the hot authenticated read.
    let rows = s.users_view().await?;
    let users = super::matching(
        &rows,
        &q,
        &["name", "enabled", "domain_id", "default_project_id", "id"],
    );
    Ok(json_response(
        StatusCode::OK,
        &UserList {
            links: ListLinks {
                self_url: format!("{}/users", s.v3_url()),
                previous: None,
                next: None,
            },
            users,
        },
    ))
}

/// The body of `GET /v3/users` (keys in the order the `Value` lists had).
#[derive(serde::Serialize)]
struct UserList<'a> {
    links: ListLinks,
    users: Vec<&'a Value>,
}

#[derive(serde::Serialize)]
struct ListLinks {
    next: Option<String>,
    previous: Option<String>,
    #[serde(rename = "self")]
    self_url: String,
}

async fn create_user(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    let request: UserRequest = member(&body, "user")?;
    let name = String::from(
        request
            .name
            .ok_or_else(|| BodyError::Missing("name".into()))?,
    );
    let domain_id = request
        .domain_id
        .unwrap_or_else(|| default_domain_for(&ctx));
    s.authorize(
        &ctx,
        "identity:create_user",
        &Target::new().with("target.user.domain_id", &domain_id),
    )?;
    let enabled = request.enabled.unwrap_or(true);
    let password = request.password;
    let default_project_id = request.default_project_id.flatten();
    let options = request.options.unwrap_or_default();
    let extra = strip_reserved(request.extra, USER_IGNORED);
    let password_hash = match password {
        Some(p) => Some(hash_off_runtime(&s, p).await?),
        None => None,
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_domain(tx, &domain_id)?.is_none() {
                return Err(not_found("domain", &domain_id));
            }
            let now = now_unix();
            let user = User {
                id: new_id(),
                name,
                domain_id,
                enabled,
                password_changed_at: password_hash.as_ref().map(|_| now),
                password_hash,
                password_expires_at: None,
                default_project_id,
                created_at: now,
                options,
                extra,
            };
            store::insert_user(tx, &user)?;
            Ok(views::user(&user, &base))
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &json!({"user": value})))
}

/// The `user` member of `POST /v3/users` and `PATCH /v3/users/{id}`
/// (Keystone's `user_create`/`user_update`: unknown attributes are kept).
#[derive(Debug, serde::Deserialize)]
struct UserRequest {
    /// Required on create.
    name: Option<Name>,
    domain_id: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    password: Option<String>,
    /// `null` clears it on update.
    #[serde(default, deserialize_with = "nullable")]
    default_project_id: Option<Option<String>>,
    options: Option<Object>,
    #[serde(flatten)]
    extra: Object,
}

/// Attributes of a user a client may send but not set.
const USER_IGNORED: &[&str] = &["federated", "password_expires_at"];

/// The `user` member of `POST /v3/users/{id}/password`.
#[derive(Debug, serde::Deserialize)]
struct PasswordChange {
    original_password: Option<String>,
    password: Option<String>,
}

/// The `group` member of `POST /v3/groups` and `PATCH /v3/groups/{id}`
/// (unknown attributes are kept; `domain_id` cannot change).
#[derive(Debug, serde::Deserialize)]
struct GroupRequest {
    /// Required on create.
    name: Option<Name>,
    domain_id: Option<String>,
    description: Option<String>,
    #[serde(flatten)]
    extra: Object,
}

/// Hashes a password on the bounded Argon2 pool (deliberately slow).
async fn hash_off_runtime(s: &IdentityState, password: String) -> IdentityResult<String> {
    super::login::hash_secret(s, &password).await
}

async fn get_user(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_user(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:get_user",
        &with_user_target(Target::new().with("user_id", &id), found.as_ref()),
    )?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(views::user(&load_user(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"user": value})))
}

async fn update_user(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let found = find_user(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:update_user",
        &with_user_target(Target::new().with("user_id", &id), found.as_ref()),
    )?;
    let request: UserRequest = member(&body, "user")?;
    let password_hash = match request.password {
        Some(p) => Some(hash_off_runtime(&s, p).await?),
        None => None,
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut user = load_user(tx, &id)?;
            let mut revoke = false;
            if let Some(name) = request.name {
                user.name = name.into();
            }
            if let Some(domain_id) = request.domain_id
                && domain_id != user.domain_id
            {
                return Err(IdentityError::BadRequest(
                    "A user's domain_id cannot be changed.".into(),
                ));
            }
            if let Some(enabled) = request.enabled {
                revoke |= user.enabled && !enabled;
                user.enabled = enabled;
            }
            if let Some(default_project_id) = request.default_project_id {
                user.default_project_id = default_project_id;
            }
            if let Some(options) = request.options {
                user.options.extend(options);
            }
            if let Some(hash) = password_hash {
                user.password_hash = Some(hash);
                user.password_changed_at = Some(now_unix());
                revoke = true;
            }
            user.extra
                .extend(strip_reserved(request.extra, USER_IGNORED));
            store::update_user(tx, &user)?;
            if user.enabled {
                // As Keystone: updating an enabled user (re-enabling it,
                // resetting its password) lifts a lockout.
                store::set_auth_failures(tx, &user.id, 0, None)?;
            }
            if revoke {
                store::revoke_user_tokens(tx, &user.id)?;
            }
            Ok(views::user(&user, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"user": value})))
}

async fn delete_user(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_user(&s, &id).await?;
    let target = with_user_target(Target::new().with("user_id", &id), found.as_ref());
    admin_delete(&s, &ctx, ("identity:delete_user", &target), id, |tx, id| {
        load_user(tx, id)?;
        store::delete_user(tx, id)?;
        Ok(())
    })
    .await
}

/// `POST /v3/users/{id}/password`: the user changes their own password.
/// It needs no token, so the original password is checked as a login is:
/// rate limits, lockout, the bounded Argon2 pool.
async fn change_password(
    State(s): State<Arc<IdentityState>>,
    client: super::throttle::ClientAddr,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let request: PasswordChange = member(&body, "user")?;
    let original = request
        .original_password
        .ok_or_else(|| BodyError::Missing("original_password".into()))?;
    let new = request
        .password
        .ok_or_else(|| BodyError::Missing("password".into()))?;
    let lookup = id.clone();
    let verified = super::login::check_password(
        &s,
        &client,
        format!("id:{id}"),
        move |conn| Ok(store::get_user(conn, &lookup)?),
        &original,
    )
    .await
    .map_err(|e| match e {
        IdentityError::Unauthorized(m) if m.starts_with("The account is locked") => {
            IdentityError::Unauthorized(m)
        }
        IdentityError::Unauthorized(_) => {
            IdentityError::Unauthorized("The password is not correct.".into())
        }
        other => other,
    })?;
    super::password_history::check(&s, &id, &verified.password_hash, &new).await?;
    let hash = hash_off_runtime(&s, new).await?;
    s.write(move |tx| {
        let mut user = load_user(tx, &id)?;
        if user.password_hash.as_deref() != Some(verified.password_hash.as_str()) {
            return Err(IdentityError::Unauthorized(
                "The password is not correct.".into(),
            ));
        }
        super::login::clear_failures(tx, &id)?;
        user.password_hash = Some(hash);
        user.password_changed_at = Some(now_unix());
        store::update_user(tx, &user)?;
        store::revoke_user_tokens(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn list_user_projects(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let found = find_user(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:list_user_projects",
        &with_user_target(Target::new().with("user_id", &id), found.as_ref()),
    )?;
    let base = s.v3_url();
    let self_url = format!("{}/users/{id}/projects", s.v3_url());
    let items = s
        .read(move |conn| {
            load_user(conn, &id)?;
            user_projects_json(conn, &id, &base)
        })
        .await?;
    let items = apply_filters(items, &q, &["name", "enabled", "domain_id"]);
    Ok(list_response("projects", items, self_url))
}

async fn list_user_groups(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_user(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:list_groups_for_user",
        &with_user_target(Target::new().with("user_id", &id), found.as_ref()),
    )?;
    let base = s.v3_url();
    let self_url = format!("{}/users/{id}/groups", s.v3_url());
    let items = s
        .read(move |conn| {
            load_user(conn, &id)?;
            let mine: HashSet<String> = store::groups_of_user(conn, &id)?.into_iter().collect();
            Ok(store::list_groups(conn)?
                .iter()
                .filter(|g| mine.contains(&g.id))
                .map(|g| {
                    let mut v = views::group(g, &base);
                    if let Some(map) = v.as_object_mut() {
                        map.insert("membership_expires_at".into(), Value::Null);
                    }
                    v
                })
                .collect())
        })
        .await?;
    Ok(list_response("groups", items, self_url))
}

// ------------------------------------------------------------------ groups

async fn list_groups(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(mut q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let domain = token_domain(&ctx);
    let target = Target::new().with_opt("target.group.domain_id", domain.clone());
    if let Some(domain) = domain {
        q.insert("domain_id".into(), domain);
    }
    admin_list(
        &s,
        &ctx,
        ("identity:list_groups", &target),
        ("groups", "groups"),
        store::list_groups,
        views::group,
        (&q, &["name", "domain_id", "id"]),
    )
    .await
}

async fn create_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    let request: GroupRequest = member(&body, "group")?;
    let name = String::from(
        request
            .name
            .ok_or_else(|| BodyError::Missing("name".into()))?,
    );
    let domain_id = request
        .domain_id
        .unwrap_or_else(|| default_domain_for(&ctx));
    s.authorize(
        &ctx,
        "identity:create_group",
        &Target::new().with("target.group.domain_id", &domain_id),
    )?;
    let description = request.description.unwrap_or_default();
    let extra = strip_reserved(request.extra, &[]);
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::get_domain(tx, &domain_id)?.is_none() {
                return Err(not_found("domain", &domain_id));
            }
            let group = Group {
                id: new_id(),
                name,
                domain_id,
                description,
                extra,
            };
            store::insert_group(tx, &group)?;
            Ok(views::group(&group, &base))
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &json!({"group": value})))
}

async fn get_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_group(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:get_group",
        &with_group_target(Target::new(), found.as_ref()),
    )?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(views::group(&load_group(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"group": value})))
}

async fn update_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let found = find_group(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:update_group",
        &with_group_target(Target::new(), found.as_ref()),
    )?;
    let request: GroupRequest = member(&body, "group")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut group = load_group(tx, &id)?;
            if let Some(name) = request.name {
                group.name = name.into();
            }
            if let Some(description) = request.description {
                group.description = description;
            }
            group.extra.extend(strip_reserved(request.extra, &[]));
            store::update_group(tx, &group)?;
            Ok(views::group(&group, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"group": value})))
}

async fn delete_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_group(&s, &id).await?;
    let target = with_group_target(Target::new(), found.as_ref());
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_group", &target),
        id,
        |tx, id| {
            load_group(tx, id)?;
            store::delete_group(tx, id)?;
            effective_roles::delete_app_creds_without_their_roles(tx)?;
            Ok(())
        },
    )
    .await
}

async fn list_group_users(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let found = find_group(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:list_users_in_group",
        &with_group_target(Target::new(), found.as_ref()),
    )?;
    let base = s.v3_url();
    let self_url = format!("{}/groups/{id}/users", s.v3_url());
    let items = s
        .read(move |conn| {
            load_group(conn, &id)?;
            let members: HashSet<String> = store::list_group_members(conn)?
                .into_iter()
                .filter(|(g, _)| *g == id)
                .map(|(_, u)| u)
                .collect();
            Ok(store::list_users(conn)?
                .iter()
                .filter(|u| members.contains(&u.id))
                .map(|u| views::user(u, &base))
                .collect())
        })
        .await?;
    let items = apply_filters(items, &q, &["name", "enabled", "domain_id"]);
    Ok(list_response("users", items, self_url))
}

async fn check_member(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group_id, user_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let target = with_group_target(Target::new(), find_group(&s, &group_id).await?.as_ref());
    let target = with_user_target(target, find_user(&s, &user_id).await?.as_ref());
    s.authorize(&ctx, "identity:check_user_in_group", &target)?;
    let member = s
        .read(move |conn| {
            load_group(conn, &group_id)?;
            load_user(conn, &user_id)?;
            Ok(store::groups_of_user(conn, &user_id)?.contains(&group_id))
        })
        .await?;
    if member {
        Ok(no_content())
    } else {
        Err(IdentityError::NotFound(
            "The user is not in the group.".into(),
        ))
    }
}

async fn add_member(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group_id, user_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let target = with_group_target(Target::new(), find_group(&s, &group_id).await?.as_ref());
    let target = with_user_target(target, find_user(&s, &user_id).await?.as_ref());
    s.authorize(&ctx, "identity:add_user_to_group", &target)?;
    s.write(move |tx| {
        load_group(tx, &group_id)?;
        load_user(tx, &user_id)?;
        store::add_group_member(tx, &group_id, &user_id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn remove_member(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group_id, user_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let target = with_group_target(Target::new(), find_group(&s, &group_id).await?.as_ref());
    let target = with_user_target(target, find_user(&s, &user_id).await?.as_ref());
    s.authorize(&ctx, "identity:remove_user_from_group", &target)?;
    s.write(move |tx| {
        load_group(tx, &group_id)?;
        load_user(tx, &user_id)?;
        if !store::remove_group_member(tx, &group_id, &user_id)? {
            return Err(IdentityError::NotFound(
                "The user is not in the group.".into(),
            ));
        }
        effective_roles::delete_app_creds_without_their_roles(tx)?;
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
    fn user_bodies_keep_extras_and_refuse_wrong_types() {
        let body = br#"{"user": {"name": "a", "email": "a@x", "enabled": false,
            "default_project_id": null, "options": {"k": 1}, "federated": [], "id": "x"}}"#;
        let user: UserRequest = member(body, "user").expect("accepted");
        assert_eq!(user.name, Some(Name("a".into())));
        assert_eq!(user.enabled, Some(false));
        assert_eq!(user.default_project_id, Some(None));
        assert_eq!(user.options.map(|o| o.len()), Some(1));
        let extra = strip_reserved(user.extra, USER_IGNORED);
        assert_eq!(extra.get("email"), Some(&json!("a@x")));
        assert_eq!(extra.len(), 1, "{extra:?}");
        let refused = |body: &str| refusal::<UserRequest>(body, "user");
        assert_eq!(
            refused(r#"{"user": {"name": "a", "enabled": null}}"#),
            "Invalid input for field 'enabled': not a boolean."
        );
        assert_eq!(
            refused(r#"{"user": {"name": " "}}"#),
            "Invalid input for field 'name': must be 1 to 255 characters and not blank."
        );
        assert_eq!(
            refused(r#"{"user": {"name": "a", "options": []}}"#),
            "Invalid input for field 'options': not an object."
        );
        assert_eq!(
            refused(r#"{"user": {"name": "a", "password": 7}}"#),
            "Invalid input for field 'password': not a string."
        );
        assert_eq!(refused(r#"{"usr": {}}"#), "'user' is a required property.");
    }

    #[test]
    fn password_change_and_group_bodies() {
        let change: PasswordChange = member(
            br#"{"user": {"original_password": "a", "password": "b"}}"#,
            "user",
        )
        .expect("accepted");
        assert_eq!(change.password.as_deref(), Some("b"));
        assert_eq!(
            refusal::<PasswordChange>(r#"{"user": {"password": false}}"#, "user"),
            "Invalid input for field 'password': not a string."
        );
        let group: GroupRequest =
            member(br#"{"group": {"name": "g", "colour": "red"}}"#, "group").expect("accepted");
        assert_eq!(group.extra.get("colour"), Some(&json!("red")));
        assert_eq!(
            refusal::<GroupRequest>(r#"{"group": {"name": "g", "description": 1}}"#, "group"),
            "Invalid input for field 'description': not a string."
        );
    }
}
