//! Roles, implied roles, role assignments and the effective-role computation.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::context::Scope;
use super::requests::{Name, member};
use super::views::{self, strip_reserved};
use super::{
    Auth, IdentityError, IdentityResult, IdentityState, admin_delete, apply_filters, list_response,
    new_id,
};
use super::{effective_roles, targets};
use crate::db::DbResult;
use crate::db::identity::{self as store, Assignment, Role};
use crate::http::body::{BodyError, Object};
use crate::http::{json_response, no_content};
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    let mut router = Router::new()
        .route("/v3/roles", get(list_roles).post(create_role))
        .route(
            "/v3/roles/{id}",
            get(get_role).patch(update_role).delete(delete_role),
        )
        .route("/v3/roles/{id}/implies", get(list_implied))
        .route(
            "/v3/roles/{prior}/implies/{implied}",
            get(get_implied)
                .head(check_implied)
                .put(create_implied)
                .delete(delete_implied),
        )
        .route("/v3/role_inferences", get(list_inferences))
        .route("/v3/role_assignments", get(list_assignments));
    // Grants: /v3/{projects|domains}/{target}/{users|groups}/{actor}/roles[/{role}]
    // and the system's /v3/system/{users|groups}/{actor}/roles[/{role}].
    for target in ["projects", "domains"] {
        for actor in ["users", "groups"] {
            let t = target.trim_end_matches('s');
            let a = actor.trim_end_matches('s');
            router = router
                .route(
                    &format!("/v3/{target}/{{target}}/{actor}/{{actor}}/roles"),
                    get(move |s, c, Path((tid, aid)): Path<(String, String)>| {
                        list_grants(s, c, GrantPath::new(t, tid, a, aid, false))
                    }),
                )
                .route(
                    &format!("/v3/{target}/{{target}}/{actor}/{{actor}}/roles/{{role}}"),
                    get(move |s, c, Path((tid, aid, rid)): Path<(String, String, String)>| {
                        check_grant(s, c, GrantPath::new(t, tid, a, aid, false), rid)
                    })
                    .put(move |s, c, Path((tid, aid, rid)): Path<(String, String, String)>| {
                        create_grant(s, c, GrantPath::new(t, tid, a, aid, false), rid)
                    })
                    .delete(move |s, c, Path((tid, aid, rid)): Path<(String, String, String)>| {
                        delete_grant(s, c, GrantPath::new(t, tid, a, aid, false), rid)
                    }),
                )
                .route(
                    &format!("/v3/OS-INHERIT/{target}/{{target}}/{actor}/{{actor}}/roles/inherited_to_projects"),
                    get(move |s, c, Path((tid, aid)): Path<(String, String)>| {
                        list_grants(s, c, GrantPath::new(t, tid, a, aid, true))
                    }),
                )
                .route(
                    &format!(
                        "/v3/OS-INHERIT/{target}/{{target}}/{actor}/{{actor}}/roles/{{role}}/inherited_to_projects"
                    ),
                    get(move |s, c, Path((tid, aid, rid)): Path<(String, String, String)>| {
                        check_grant(s, c, GrantPath::new(t, tid, a, aid, true), rid)
                    })
                    .put(move |s, c, Path((tid, aid, rid)): Path<(String, String, String)>| {
                        create_grant(s, c, GrantPath::new(t, tid, a, aid, true), rid)
                    })
                    .delete(move |s, c, Path((tid, aid, rid)): Path<(String, String, String)>| {
                        delete_grant(s, c, GrantPath::new(t, tid, a, aid, true), rid)
                    }),
                );
        }
    }
    for actor in ["users", "groups"] {
        let a = actor.trim_end_matches('s');
        router = router
            .route(
                &format!("/v3/system/{actor}/{{actor}}/roles"),
                get(move |s, c, Path(aid): Path<String>| {
                    list_grants(s, c, GrantPath::new("system", "all".into(), a, aid, false))
                }),
            )
            .route(
                &format!("/v3/system/{actor}/{{actor}}/roles/{{role}}"),
                get(move |s, c, Path((aid, rid)): Path<(String, String)>| {
                    check_grant(
                        s,
                        c,
                        GrantPath::new("system", "all".into(), a, aid, false),
                        rid,
                    )
                })
                .put(move |s, c, Path((aid, rid)): Path<(String, String)>| {
                    create_grant(
                        s,
                        c,
                        GrantPath::new("system", "all".into(), a, aid, false),
                        rid,
                    )
                })
                .delete(move |s, c, Path((aid, rid)): Path<(String, String)>| {
                    delete_grant(
                        s,
                        c,
                        GrantPath::new("system", "all".into(), a, aid, false),
                        rid,
                    )
                }),
            );
    }
    router
}

// ------------------------------------------------------------ roles

fn load_role(conn: &Connection, id: &str) -> IdentityResult<Role> {
    store::get_role(conn, id)?
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find role: {id}.")))
}

/// Adds `target.role.*` (a global role's `domain_id` is Python's `None`).
fn with_role_target(target: Target, role: Option<&Role>) -> Target {
    match role {
        Some(r) => target
            .with("target.role.id", &r.id)
            .with("target.role.name", &r.name)
            .with(
                "target.role.domain_id",
                r.domain_id.as_deref().unwrap_or("None"),
            ),
        None => target,
    }
}

async fn find_role(s: &IdentityState, id: &str) -> IdentityResult<Option<Role>> {
    let id = id.to_string();
    s.read(move |conn| Ok(store::get_role(conn, &id)?)).await
}

async fn list_roles(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_roles", &Target::new())?;
    let base = s.v3_url();
    let want_domain = q.get("domain_id").cloned();
    let items = s
        .read(move |conn| {
            Ok(store::list_roles(conn)?
                .iter()
                // Without ?domain_id only global roles are listed, as Keystone does.
                .filter(|r| r.domain_id == want_domain)
                .map(|r| views::role(r, &base))
                .collect())
        })
        .await?;
    let items = apply_filters(items, &q, &["name", "id"]);
    Ok(list_response(
        "roles",
        items,
        format!("{}/roles", s.v3_url()),
    ))
}

async fn create_role(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_role", &Target::new())?;
    let request: RoleRequest = member(&body, "role")?;
    let name = String::from(
        request
            .name
            .ok_or_else(|| BodyError::Missing("name".into()))?,
    );
    let domain_id = request.domain_id;
    let description = request.description.unwrap_or_default();
    let options = request.options.unwrap_or_default();
    let extra = strip_reserved(request.extra, &[]);
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if let Some(domain) = &domain_id
                && store::get_domain(tx, domain)?.is_none()
            {
                return Err(IdentityError::NotFound(format!(
                    "Could not find domain: {domain}."
                )));
            }
            let role = Role {
                id: new_id(),
                name,
                domain_id,
                description,
                options,
                extra,
            };
            store::insert_role(tx, &role)?;
            Ok(views::role(&role, &base))
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &json!({"role": value})))
}

/// The `role` member of `POST /v3/roles` and `PATCH /v3/roles/{id}`
/// (unknown attributes are kept as extra; `domain_id` cannot change).
#[derive(Debug, serde::Deserialize)]
struct RoleRequest {
    /// Required on create.
    name: Option<Name>,
    domain_id: Option<String>,
    description: Option<String>,
    options: Option<Object>,
    #[serde(flatten)]
    extra: Object,
}

async fn get_role(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_role(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:get_role",
        &with_role_target(Target::new(), found.as_ref()),
    )?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(views::role(&load_role(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"role": value})))
}

async fn update_role(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_role", &Target::new())?;
    let request: RoleRequest = member(&body, "role")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut role = load_role(tx, &id)?;
            if let Some(name) = request.name {
                role.name = name.into();
            }
            if let Some(description) = request.description {
                role.description = description;
            }
            if let Some(options) = request.options {
                role.options.extend(options);
            }
            role.extra.extend(strip_reserved(request.extra, &[]));
            store::update_role(tx, &role)?;
            Ok(views::role(&role, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"role": value})))
}

async fn delete_role(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_role", &Target::new()),
        id,
        |tx, id| {
            load_role(tx, id)?;
            store::delete_role(tx, id)?;
            effective_roles::delete_app_creds_without_their_roles(tx)?;
            Ok(())
        },
    )
    .await
}

// ------------------------------------------------------------ implied roles

fn inference_json(prior: &Role, implied: &[Role], base: &str) -> Value {
    json!({
        "prior_role": views::role_ref(prior, base),
        "implies": implied.iter().map(|r| views::role_ref(r, base)).collect::<Vec<_>>(),
    })
}

async fn list_implied(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(prior): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_implied_roles", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let prior_role = load_role(conn, &prior)?;
            let implied: Vec<Role> = store::list_implied_roles(conn)?
                .into_iter()
                .filter(|(p, _)| *p == prior)
                .filter_map(|(_, i)| store::get_role(conn, &i).ok().flatten())
                .collect();
            Ok(inference_json(&prior_role, &implied, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"role_inference": value, "links": {"self": format!("{}/roles/{}/implies", s.v3_url(), value["prior_role"]["id"].as_str().unwrap_or_default())}}),
    ))
}

async fn get_implied(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((prior, implied)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_implied_role", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            let prior_role = load_role(conn, &prior)?;
            let implied_role = load_role(conn, &implied)?;
            if !store::list_implied_roles(conn)?.contains(&(prior.clone(), implied.clone())) {
                return Err(IdentityError::NotFound("Could not find the implied role rule.".into()));
            }
            Ok(json!({"prior_role": views::role_ref(&prior_role, &base), "implies": views::role_ref(&implied_role, &base)}))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"role_inference": value}),
    ))
}

/// `HEAD /v3/roles/{prior}/implies/{implied}`: 204 when the rule exists.
async fn check_implied(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((prior, implied)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:check_implied_role", &Target::new())?;
    let exists = s
        .read(move |conn| {
            load_role(conn, &prior)?;
            load_role(conn, &implied)?;
            Ok(store::list_implied_roles(conn)?.contains(&(prior, implied)))
        })
        .await?;
    if exists {
        Ok(no_content())
    } else {
        Err(IdentityError::NotFound(
            "Could not find the implied role rule.".into(),
        ))
    }
}

async fn create_implied(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((prior, implied)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_implied_role", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let prior_role = load_role(tx, &prior)?;
            let implied_role = load_role(tx, &implied)?;
            if prior_role.domain_id.is_none() && implied_role.domain_id.is_some() {
                return Err(IdentityError::Forbidden(
                    "create_implied_role (a global role cannot imply a domain-specific role)".into(),
                ));
            }
            // Refuse cycles: the implied role must not (transitively) imply the prior.
            let rules = store::list_implied_roles(tx)?;
            let mut reach = BTreeSet::from([implied.clone()]);
            effective_roles::expand_implied(&mut reach, &rules);
            if reach.contains(&prior) {
                return Err(IdentityError::Forbidden("create_implied_role (it would make a cycle)".into()));
            }
            store::insert_implied_role(tx, &prior, &implied)?;
            Ok(json!({"prior_role": views::role_ref(&prior_role, &base), "implies": views::role_ref(&implied_role, &base)}))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"role_inference": value}),
    ))
}

async fn delete_implied(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((prior, implied)): Path<(String, String)>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:delete_implied_role", &Target::new())?;
    s.write(move |tx| {
        load_role(tx, &prior)?;
        load_role(tx, &implied)?;
        if !store::delete_implied_role(tx, &prior, &implied)? {
            return Err(IdentityError::NotFound(
                "Could not find the implied role rule.".into(),
            ));
        }
        effective_roles::delete_app_creds_without_their_roles(tx)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn list_inferences(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_role_inference_rules", &Target::new())?;
    let base = s.v3_url();
    let items = s
        .read(move |conn| {
            let roles: HashMap<String, Role> = store::list_roles(conn)?
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect();
            let mut by_prior: std::collections::BTreeMap<String, Vec<Role>> = Default::default();
            for (prior, implied) in store::list_implied_roles(conn)? {
                if let Some(role) = roles.get(&implied) {
                    by_prior.entry(prior).or_default().push(role.clone());
                }
            }
            Ok(by_prior
                .into_iter()
                .filter_map(|(prior, implied)| {
                    roles
                        .get(&prior)
                        .map(|p| inference_json(p, &implied, &base))
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"role_inferences": items, "links": {"self": format!("{}/role_inferences", s.v3_url()), "previous": null, "next": null}}),
    ))
}

// ------------------------------------------------------------ grants

/// One grant path: a target and an actor.
struct GrantPath {
    target_type: &'static str,
    target_id: String,
    actor_type: &'static str,
    actor_id: String,
    inherited: bool,
}

impl GrantPath {
    fn new(
        target_type: &'static str,
        target_id: String,
        actor_type: &'static str,
        actor_id: String,
        inherited: bool,
    ) -> Self {
        GrantPath {
            target_type,
            target_id,
            actor_type,
            actor_id,
            inherited,
        }
    }

    fn assignment(&self, role_id: &str) -> Assignment {
        Assignment {
            actor_type: self.actor_type.into(),
            actor_id: self.actor_id.clone(),
            target_type: self.target_type.into(),
            target_id: self.target_id.clone(),
            role_id: role_id.into(),
            inherited: self.inherited,
        }
    }

    /// The rule Keystone enforces for `verb` (list, check, create, revoke)
    /// on this kind of grant.
    fn rule(&self, verb: &str) -> &'static str {
        match (self.target_type, self.actor_type, verb) {
            ("system", "user", "list") => "identity:list_system_grants_for_user",
            ("system", "user", "check") => "identity:check_system_grant_for_user",
            ("system", "user", "create") => "identity:create_system_grant_for_user",
            ("system", "user", "revoke") => "identity:revoke_system_grant_for_user",
            ("system", _, "list") => "identity:list_system_grants_for_group",
            ("system", _, "check") => "identity:check_system_grant_for_group",
            ("system", _, "create") => "identity:create_system_grant_for_group",
            ("system", _, "revoke") => "identity:revoke_system_grant_for_group",
            (_, _, "list") => "identity:list_grants",
            (_, _, "check") => "identity:check_grant",
            (_, _, "create") => "identity:create_grant",
            _ => "identity:revoke_grant",
        }
    }

    /// Keystone's target for a grant: the looked-up project or domain, user
    /// or group, and role (objects that do not exist add nothing).
    async fn target(&self, s: &IdentityState, role_id: Option<&str>) -> IdentityResult<Target> {
        let mut target = Target::new();
        match self.target_type {
            "project" => {
                let project = targets::find_project(s, &self.target_id).await?;
                target = targets::with_project_target(target, project.as_ref());
            }
            "domain" => {
                let domain = targets::find_domain(s, &self.target_id).await?;
                target = targets::with_domain_target(target, domain.as_ref());
            }
            _ => {}
        }
        target = if self.actor_type == "user" {
            let user = targets::find_user(s, &self.actor_id).await?;
            targets::with_user_target(target, user.as_ref())
        } else {
            let group = targets::find_group(s, &self.actor_id).await?;
            targets::with_group_target(target, group.as_ref())
        };
        if let Some(role_id) = role_id {
            target = with_role_target(target, find_role(s, role_id).await?.as_ref());
        }
        Ok(target)
    }

    /// Checks that the target and the actor exist.
    fn check_exists(&self, conn: &Connection) -> IdentityResult<()> {
        let target_ok = match self.target_type {
            "project" => store::get_project(conn, &self.target_id)?.is_some(),
            "domain" => store::get_domain(conn, &self.target_id)?.is_some(),
            _ => true,
        };
        if !target_ok {
            return Err(IdentityError::NotFound(format!(
                "Could not find {}: {}.",
                self.target_type, self.target_id
            )));
        }
        let actor_ok = match self.actor_type {
            "user" => store::get_user(conn, &self.actor_id)?.is_some(),
            _ => store::get_group(conn, &self.actor_id)?.is_some(),
        };
        if !actor_ok {
            return Err(IdentityError::NotFound(format!(
                "Could not find {}: {}.",
                self.actor_type, self.actor_id
            )));
        }
        Ok(())
    }
}

async fn list_grants(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    path: GrantPath,
) -> IdentityResult<Response> {
    s.authorize(&ctx, path.rule("list"), &path.target(&s, None).await?)?;
    let base = s.v3_url();
    let self_url = format!(
        "{}/{}s/{}/{}s/{}/roles",
        s.v3_url(),
        path.target_type,
        path.target_id,
        path.actor_type,
        path.actor_id
    );
    let items = s
        .read(move |conn| {
            path.check_exists(conn)?;
            let ids: HashSet<String> = store::list_assignments(conn)?
                .into_iter()
                .filter(|a| {
                    a.actor_type == path.actor_type
                        && a.actor_id == path.actor_id
                        && a.target_type == path.target_type
                        && a.target_id == path.target_id
                        && a.inherited == path.inherited
                })
                .map(|a| a.role_id)
                .collect();
            Ok(store::list_roles(conn)?
                .iter()
                .filter(|r| ids.contains(&r.id))
                .map(|r| views::role(r, &base))
                .collect())
        })
        .await?;
    Ok(list_response("roles", items, self_url))
}

async fn check_grant(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    path: GrantPath,
    role_id: String,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        path.rule("check"),
        &path.target(&s, Some(&role_id)).await?,
    )?;
    let found = s
        .read(move |conn| {
            path.check_exists(conn)?;
            load_role(conn, &role_id)?;
            Ok(store::list_assignments(conn)?.contains(&path.assignment(&role_id)))
        })
        .await?;
    if found {
        Ok(no_content())
    } else {
        Err(IdentityError::NotFound(
            "Could not find the role assignment.".into(),
        ))
    }
}

async fn create_grant(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    path: GrantPath,
    role_id: String,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        path.rule("create"),
        &path.target(&s, Some(&role_id)).await?,
    )?;
    s.write(move |tx| {
        path.check_exists(tx)?;
        let role = load_role(tx, &role_id)?;
        if let Some(domain) = &role.domain_id {
            let target_domain = match path.target_type {
                "project" => store::get_project(tx, &path.target_id)?.map(|p| p.domain_id),
                "domain" => Some(path.target_id.clone()),
                _ => None,
            };
            if target_domain.as_ref() != Some(domain) {
                return Err(IdentityError::Forbidden(
                    "create_grant (a domain-specific role can only be granted within its domain)"
                        .into(),
                ));
            }
        }
        store::insert_assignment(tx, &path.assignment(&role_id))?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn delete_grant(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    path: GrantPath,
    role_id: String,
) -> IdentityResult<Response> {
    s.authorize(
        &ctx,
        path.rule("revoke"),
        &path.target(&s, Some(&role_id)).await?,
    )?;
    s.write(move |tx| {
        path.check_exists(tx)?;
        load_role(tx, &role_id)?;
        if !store::delete_assignment(tx, &path.assignment(&role_id))? {
            return Err(IdentityError::NotFound(
                "Could not find the role assignment.".into(),
            ));
        }
        effective_roles::delete_app_creds_without_their_roles(tx)?;
        // Tokens of the affected users in that scope stop working, as Keystone revokes them.
        let users: Vec<String> = if path.actor_type == "user" {
            vec![path.actor_id.clone()]
        } else {
            store::list_group_members(tx)?
                .into_iter()
                .filter(|(g, _)| *g == path.actor_id)
                .map(|(_, u)| u)
                .collect()
        };
        for user in users {
            store::revoke_user_scope_tokens(tx, &user, &path.target_id)?;
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------ role assignments

fn assignment_json(
    a: &Assignment,
    role: Option<&Role>,
    names: Option<&Names>,
    base: &str,
    via_group: Option<&str>,
) -> Value {
    let mut value = json!({});
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    let mut role_json = json!({"id": a.role_id});
    if let (Some(names), Some(role)) = (names, role) {
        role_json["name"] = json!(role.name);
        if let Some(domain) = &role.domain_id {
            role_json["domain"] = names.domain(domain);
        }
    }
    map.insert("role".into(), role_json);
    let mut actor = json!({"id": a.actor_id});
    if let Some(names) = names {
        names.describe_actor(a.actor_type.as_str(), &a.actor_id, &mut actor);
    }
    map.insert(a.actor_type.clone(), actor);
    let scope = match a.target_type.as_str() {
        "system" => json!({"system": {"all": true}}),
        t => {
            let mut target = json!({"id": a.target_id});
            if let Some(names) = names {
                names.describe_target(t, &a.target_id, &mut target);
            }
            let mut scope = json!({t: target});
            if a.inherited {
                scope["OS-INHERIT:inherited_to"] = json!("projects");
            }
            scope
        }
    };
    map.insert("scope".into(), scope);
    let link = match a.target_type.as_str() {
        "system" => format!(
            "{base}/system/{}s/{}/roles/{}",
            a.actor_type, a.actor_id, a.role_id
        ),
        t => format!(
            "{base}/{t}s/{}/{}s/{}/roles/{}",
            a.target_id, a.actor_type, a.actor_id, a.role_id
        ),
    };
    let mut links = json!({"assignment": link});
    if let Some(group) = via_group {
        links["membership"] = json!(format!("{base}/groups/{group}/users/{}", a.actor_id));
    }
    map.insert("links".into(), links);
    value
}

/// Names of everything an assignment can mention, for `include_names`.
struct Names {
    users: HashMap<String, (String, String)>,
    groups: HashMap<String, (String, String)>,
    projects: HashMap<String, (String, String)>,
    domains: HashMap<String, String>,
}

impl Names {
    fn load(conn: &Connection) -> DbResult<Names> {
        Ok(Names {
            users: store::list_users(conn)?
                .into_iter()
                .map(|u| (u.id, (u.name, u.domain_id)))
                .collect(),
            groups: store::list_groups(conn)?
                .into_iter()
                .map(|g| (g.id, (g.name, g.domain_id)))
                .collect(),
            projects: store::list_projects(conn)?
                .into_iter()
                .map(|p| (p.id, (p.name, p.domain_id)))
                .collect(),
            domains: store::list_domains(conn)?
                .into_iter()
                .map(|d| (d.id, d.name))
                .collect(),
        })
    }

    fn domain(&self, id: &str) -> Value {
        json!({"id": id, "name": self.domains.get(id).cloned().unwrap_or_default()})
    }

    fn describe_actor(&self, kind: &str, id: &str, out: &mut Value) {
        let table = if kind == "user" {
            &self.users
        } else {
            &self.groups
        };
        if let Some((name, domain)) = table.get(id) {
            out["name"] = json!(name);
            out["domain"] = self.domain(domain);
        }
    }

    fn describe_target(&self, kind: &str, id: &str, out: &mut Value) {
        if kind == "project" {
            if let Some((name, domain)) = self.projects.get(id) {
                out["name"] = json!(name);
                out["domain"] = self.domain(domain);
            }
        } else if let Some(name) = self.domains.get(id) {
            out["name"] = json!(name);
        }
    }
}

fn query_flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key)
        .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "0" | "no"))
}

/// `GET /v3/role_assignments` with Keystone's filters, `effective` and `include_names`.
async fn list_assignments(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    // A domain-scoped reader sees only its domain's assignments, as Keystone filters them.
    let scope_domain = match &ctx.scope {
        Scope::Domain { id, .. } => Some(id.clone()),
        _ => None,
    };
    s.authorize(
        &ctx,
        "identity:list_role_assignments",
        &Target::new().with_opt("target.domain_id", scope_domain.clone()),
    )?;
    let base = s.v3_url();
    let self_url = format!("{}/role_assignments", s.v3_url());
    let items = s
        .read(move |conn| {
            let effective = query_flag(&q, "effective");
            let include_names = query_flag(&q, "include_names");
            let roles: HashMap<String, Role> = store::list_roles(conn)?
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect();
            let names = if include_names {
                Some(Names::load(conn)?)
            } else {
                None
            };
            let mut rows: Vec<(Assignment, Option<String>)> = store::list_assignments(conn)?
                .into_iter()
                .map(|a| (a, None))
                .collect();
            if effective {
                rows = effective_rows(conn, rows)?;
                // Domain-specific roles only stand for the global roles they imply.
                rows.retain(|(a, _)| roles.get(&a.role_id).is_none_or(|r| r.domain_id.is_none()));
            }
            if let Some(domain) = &scope_domain {
                let in_domain: HashSet<String> = store::list_projects(conn)?
                    .into_iter()
                    .filter(|p| p.domain_id == *domain)
                    .map(|p| p.id)
                    .collect();
                rows.retain(|(a, _)| match a.target_type.as_str() {
                    "domain" => a.target_id == *domain,
                    "project" => in_domain.contains(&a.target_id),
                    _ => false,
                });
            }
            let inherited_only = q.contains_key("scope.OS-INHERIT:inherited_to");
            let out = rows
                .into_iter()
                .filter(|(a, _)| {
                    let eq = |key: &str, actual: &str| q.get(key).is_none_or(|v| v == actual);
                    let typed = |key: &str, kind: &str, id: &str| {
                        q.get(key).is_none_or(|v| a_matches(kind, id, key, v))
                    };
                    eq("role.id", &a.role_id)
                        && typed("user.id", &a.actor_type, &a.actor_id)
                        && typed("group.id", &a.actor_type, &a.actor_id)
                        && typed("scope.project.id", &a.target_type, &a.target_id)
                        && typed("scope.domain.id", &a.target_type, &a.target_id)
                        && (!q.contains_key("scope.system") || a.target_type == "system")
                        && (!inherited_only || a.inherited)
                })
                .map(|(a, via)| {
                    assignment_json(
                        &a,
                        roles.get(&a.role_id),
                        names.as_ref(),
                        &base,
                        via.as_deref(),
                    )
                })
                .collect::<Vec<_>>();
            Ok(out)
        })
        .await?;
    Ok(list_response("role_assignments", items, self_url))
}

/// True when `key` (e.g. `user.id`) applies to an assignment of this kind and id.
fn a_matches(kind: &str, id: &str, key: &str, wanted: &str) -> bool {
    let key_kind = key.trim_end_matches(".id").trim_start_matches("scope.");
    key_kind == kind && id == wanted
}

/// Expands group assignments into per-user ones, inherited assignments onto
/// the projects they reach, and adds implied roles.
fn effective_rows(
    conn: &Connection,
    rows: Vec<(Assignment, Option<String>)>,
) -> DbResult<Vec<(Assignment, Option<String>)>> {
    let members = store::list_group_members(conn)?;
    let projects = store::list_projects(conn)?;
    let rules = store::list_implied_roles(conn)?;
    let mut out: Vec<(Assignment, Option<String>)> = Vec::new();
    for (a, _) in rows {
        // Targets this assignment really applies to.
        let targets: Vec<(String, String)> = if a.inherited {
            projects
                .iter()
                .filter(|p| {
                    (a.target_type == "domain" && p.domain_id == a.target_id)
                        || (a.target_type == "project"
                            && p.parent_id.as_deref() == Some(a.target_id.as_str()))
                })
                .map(|p| ("project".to_string(), p.id.clone()))
                .collect()
        } else {
            vec![(a.target_type.clone(), a.target_id.clone())]
        };
        let actors: Vec<(String, Option<String>)> = if a.actor_type == "group" {
            members
                .iter()
                .filter(|(g, _)| *g == a.actor_id)
                .map(|(g, u)| (u.clone(), Some(g.clone())))
                .collect()
        } else {
            vec![(a.actor_id.clone(), None)]
        };
        let mut role_ids = BTreeSet::from([a.role_id.clone()]);
        effective_roles::expand_implied(&mut role_ids, &rules);
        for (target_type, target_id) in &targets {
            for (user, via) in &actors {
                for role in &role_ids {
                    let row = Assignment {
                        actor_type: "user".into(),
                        actor_id: user.clone(),
                        target_type: target_type.clone(),
                        target_id: target_id.clone(),
                        role_id: role.clone(),
                        inherited: false,
                    };
                    if !out.iter().any(|(r, _)| *r == row) {
                        out.push((row, via.clone()));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::identity::requests::refusal;

    #[test]
    fn role_bodies() {
        let role: RoleRequest = member(
            br#"{"role": {"name": "r", "options": {"immutable": true}, "x": 1}}"#,
            "role",
        )
        .expect("accepted");
        assert_eq!(role.name, Some(Name("r".into())));
        assert_eq!(role.extra.len(), 1);
        assert_eq!(
            refusal::<RoleRequest>(r#"{"role": {"name": "r", "options": 1}}"#, "role"),
            "Invalid input for field 'options': not an object."
        );
        assert_eq!(
            refusal::<RoleRequest>(r#"{"role": {"name": ""}}"#, "role"),
            "Invalid input for field 'name': must be 1 to 255 characters and not blank."
        );
    }
}
