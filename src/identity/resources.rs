//! Domains and projects (with tags).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::requests::{Name, member, not_null, whole};
use super::targets::{
    check_resource_name, default_domain_for, find_domain, find_project, load_domain, load_project,
    not_found, token_domain, with_domain_target, with_project_target,
};
use super::views::{self, strip_reserved};
use super::{
    Auth, IdentityError, IdentityResult, IdentityState, admin_list, apply_filters, list_response,
    new_id,
};
use crate::db::identity::{self as store, Domain, Project};
use crate::http::body::{BodyError, Object};
use crate::http::{json_response, no_content};
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/domains", get(list_domains).post(create_domain))
        .route(
            "/v3/domains/{id}",
            get(get_domain).patch(update_domain).delete(delete_domain),
        )
        .route("/v3/projects", get(list_projects).post(create_project))
        .route(
            "/v3/projects/{id}",
            get(get_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route(
            "/v3/projects/{id}/tags",
            get(list_tags).put(replace_tags).delete(clear_tags),
        )
        .route(
            "/v3/projects/{id}/tags/{tag}",
            get(check_tag).put(add_tag).delete(remove_tag),
        )
}

// ------------------------------------------------------------------ domains

async fn list_domains(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(mut q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let domain = token_domain(&ctx);
    let target = Target::new().with_opt("target.domain.id", domain.clone());
    if let Some(domain) = domain {
        q.insert("id".into(), domain);
    }
    admin_list(
        &s,
        &ctx,
        ("identity:list_domains", &target),
        ("domains", "domains"),
        store::list_domains,
        views::domain,
        (&q, &["name", "enabled", "id"]),
    )
    .await
}

async fn create_domain(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_domain", &Target::new())?;
    let request: DomainRequest = member(&body, "domain")?;
    let domain = Domain {
        id: request.explicit_domain_id.unwrap_or_else(new_id),
        name: {
            let name = String::from(
                request
                    .name
                    .ok_or_else(|| BodyError::Missing("name".into()))?,
            );
            check_resource_name(&name)?;
            name
        },
        description: request.description.unwrap_or_default(),
        enabled: request.enabled.unwrap_or(true),
        extra: strip_reserved(request.extra, DOMAIN_IGNORED),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            store::insert_domain(tx, &domain)?;
            Ok(views::domain(&domain, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"domain": value}),
    ))
}

/// The `domain` member of `POST /v3/domains` and `PATCH /v3/domains/{id}`
/// (unknown attributes are kept as extra).
#[derive(Debug, serde::Deserialize)]
struct DomainRequest {
    /// Required on create.
    name: Option<Name>,
    description: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    /// Create only (Keystone's `explicit_domain_id`).
    explicit_domain_id: Option<String>,
    #[serde(flatten)]
    extra: Object,
}

/// Attributes of a domain a client may send but not set (nor keep as extra).
const DOMAIN_IGNORED: &[&str] = &["explicit_domain_id", "tags", "options"];

async fn get_domain(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_domain(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:get_domain",
        &with_domain_target(Target::new(), found.as_ref()),
    )?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(views::domain(&load_domain(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"domain": value})))
}

async fn update_domain(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_domain", &Target::new())?;
    let request: DomainRequest = member(&body, "domain")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut domain = load_domain(tx, &id)?;
            if let Some(name) = request.name {
                domain.name = name.into();
                check_resource_name(&domain.name)?;
            }
            if let Some(description) = request.description {
                domain.description = description;
            }
            if let Some(enabled) = request.enabled {
                domain.enabled = enabled;
            }
            // (An `explicit_domain_id` on update is kept as extra, as before.)
            let mut extra = request.extra;
            if let Some(explicit) = request.explicit_domain_id {
                extra.insert("explicit_domain_id".into(), Value::String(explicit));
            }
            domain
                .extra
                .extend(strip_reserved(extra, &["tags", "options"]));
            store::update_domain(tx, &domain)?;
            Ok(views::domain(&domain, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"domain": value})))
}

async fn delete_domain(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:delete_domain", &Target::new())?;
    s.write(move |tx| {
        let domain = load_domain(tx, &id)?;
        if domain.enabled {
            return Err(IdentityError::Forbidden(
                "delete_domain (cannot delete a domain that is enabled, please disable it first)"
                    .into(),
            ));
        }
        store::delete_domain(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ projects

fn project_json(conn: &Connection, p: &Project, base: &str) -> IdentityResult<Value> {
    Ok(views::project(p, store::project_tags(conn, &p.id)?, base))
}

fn tag_filter(item: &Value, q: &HashMap<String, String>) -> bool {
    let tags: HashSet<&str> = item
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let list = |key: &str| -> Option<Vec<String>> {
        q.get(key)
            .map(|v| v.split(',').map(str::to_string).collect())
    };
    if let Some(all) = list("tags")
        && !all.iter().all(|t| tags.contains(t.as_str()))
    {
        return false;
    }
    if let Some(any) = list("tags-any")
        && !any.iter().any(|t| tags.contains(t.as_str()))
    {
        return false;
    }
    if let Some(all) = list("not-tags")
        && all.iter().all(|t| tags.contains(t.as_str()))
    {
        return false;
    }
    if let Some(any) = list("not-tags-any")
        && any.iter().any(|t| tags.contains(t.as_str()))
    {
        return false;
    }
    true
}

async fn list_projects(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(mut q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let domain = token_domain(&ctx);
    s.authorize(
        &ctx,
        "identity:list_projects",
        &Target::new().with_opt("target.domain_id", domain.clone()),
    )?;
    if let Some(domain) = domain {
        q.insert("domain_id".into(), domain);
    }
    let base = s.v3_url();
    let items = s
        .read(move |conn| {
            store::list_projects(conn)?
                .iter()
                .map(|p| project_json(conn, p, &base))
                .collect()
        })
        .await?;
    let items: Vec<Value> = apply_filters(
        items,
        &q,
        &[
            "name",
            "enabled",
            "domain_id",
            "parent_id",
            "is_domain",
            "id",
        ],
    )
    .into_iter()
    .filter(|item| q.contains_key("is_domain") || item["is_domain"] != Value::Bool(true))
    .filter(|item| tag_filter(item, &q))
    .collect();
    Ok(list_response(
        "projects",
        items,
        format!("{}/projects", s.v3_url()),
    ))
}

/// A project's tags as sent (`tags` of a project or of `PUT .../tags`):
/// at most 80, each a valid tag.
fn check_tags(tags: Vec<String>) -> IdentityResult<Vec<String>> {
    for tag in &tags {
        check_tag_text(tag)?;
    }
    if tags.len() > 80 {
        return Err(IdentityError::BadRequest(
            "A project has at most 80 tags.".into(),
        ));
    }
    Ok(tags)
}

/// The `project` member of `POST /v3/projects` (unknown attributes are
/// kept as extra).
#[derive(Debug, serde::Deserialize)]
struct NewProject {
    name: Option<Name>,
    domain_id: Option<String>,
    parent_id: Option<String>,
    description: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "not_null")]
    is_domain: Option<bool>,
    tags: Option<Vec<String>>,
    #[serde(flatten)]
    extra: Object,
}

/// The `project` member of `PATCH /v3/projects/{id}`: `domain_id` and
/// `parent_id` may only repeat what they are, `is_domain` may not be sent.
#[derive(Debug, serde::Deserialize)]
struct ProjectUpdate {
    name: Option<Name>,
    domain_id: Option<String>,
    parent_id: Option<String>,
    description: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    /// Any value (even `null`) is refused.
    #[serde(default, deserialize_with = "not_null")]
    is_domain: Option<Value>,
    tags: Option<Vec<String>>,
    #[serde(flatten)]
    extra: Object,
}

/// The body of `PUT /v3/projects/{id}/tags`.
#[derive(Debug, serde::Deserialize)]
struct TagsRequest {
    tags: Option<Vec<String>>,
}

/// Attributes of a project a client may send but not keep as extra.
const PROJECT_IGNORED: &[&str] = &["options"];

fn check_tag_text(tag: &str) -> IdentityResult<()> {
    if tag.is_empty() || tag.chars().count() > 255 || tag.contains('/') || tag.contains(',') {
        return Err(IdentityError::BadRequest(format!("Invalid tag: {tag:?}.")));
    }
    Ok(())
}

async fn create_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    let request: NewProject = member(&body, "project")?;
    let name = String::from(
        request
            .name
            .ok_or_else(|| BodyError::Missing("name".into()))?,
    );
    let domain_id = request.domain_id;
    let parent_id = request.parent_id;
    // The domain the project will be in: named, else its parent's, else the token's.
    let target_domain = match (&domain_id, &parent_id) {
        (Some(domain), _) => domain.clone(),
        (None, Some(parent)) => find_project(&s, parent)
            .await?
            .map_or_else(|| parent.clone(), |p| p.domain_id),
        (None, None) => default_domain_for(&ctx),
    };
    s.authorize(
        &ctx,
        "identity:create_project",
        &Target::new().with("target.project.domain_id", target_domain),
    )?;
    let description = request.description.unwrap_or_default();
    let enabled = request.enabled.unwrap_or(true);
    let is_domain = request.is_domain.unwrap_or(false);
    check_resource_name(&name)?;
    let tags = check_tags(request.tags.unwrap_or_default())?;
    let extra = strip_reserved(request.extra, PROJECT_IGNORED);
    let fallback_domain = default_domain_for(&ctx);
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if is_domain {
                // A project acting as a domain: a domain row and a project row
                // share one id, as Keystone keeps them in one table.
                let domain = Domain {
                    id: new_id(),
                    name: name.clone(),
                    description: description.clone(),
                    enabled,
                    extra: Default::default(),
                };
                store::insert_domain(tx, &domain)?;
                let project = Project {
                    id: domain.id.clone(),
                    name,
                    domain_id: domain.id,
                    parent_id: None,
                    description,
                    enabled,
                    is_domain: true,
                    extra,
                };
                store::insert_project(tx, &project)?;
                store::set_project_tags(tx, &project.id, &tags)?;
                return project_json(tx, &project, &base);
            }
            let mut parent = None;
            if let Some(parent_id) = &parent_id {
                // A parent id may name a domain (top level) or a project.
                if store::get_domain(tx, parent_id)?.is_none() {
                    parent = Some(load_project(tx, parent_id)?);
                }
            }
            let domain_id = domain_id
                .or_else(|| parent.as_ref().map(|p| p.domain_id.clone()))
                .or_else(|| parent_id.clone().filter(|_| parent.is_none()))
                .unwrap_or(fallback_domain);
            if store::get_domain(tx, &domain_id)?.is_none() {
                return Err(not_found("domain", &domain_id));
            }
            if let Some(parent) = &parent
                && parent.domain_id != domain_id
            {
                return Err(IdentityError::BadRequest(
                    "A project's parent must be in the same domain.".into(),
                ));
            }
            let project = Project {
                id: new_id(),
                name,
                domain_id,
                parent_id: parent.map(|p| p.id),
                description,
                enabled,
                is_domain: false,
                extra,
            };
            store::insert_project(tx, &project)?;
            store::set_project_tags(tx, &project.id, &tags)?;
            project_json(tx, &project, &base)
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"project": value}),
    ))
}

async fn get_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:get_project",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    let expansion = super::hierarchy::Expansion::parse(&q)?;
    let base = s.v3_url();
    let user_id = ctx.user_id.clone();
    let value = s
        .read(move |conn| {
            let project = load_project(conn, &id)?;
            let mut value = project_json(conn, &project, &base)?;
            super::hierarchy::expand(conn, &mut value, &project, &user_id, expansion, &base)?;
            Ok(value)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"project": value})))
}

async fn update_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:update_project",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    let request: ProjectUpdate = member(&body, "project")?;
    let tags = request.tags.map(check_tags).transpose()?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut project = load_project(tx, &id)?;
            if let Some(name) = request.name {
                project.name = name.into();
                check_resource_name(&project.name)?;
            }
            if let Some(domain_id) = request.domain_id
                && domain_id != project.domain_id
            {
                return Err(IdentityError::BadRequest(
                    "A project's domain_id cannot be changed.".into(),
                ));
            }
            if request.is_domain.is_some() {
                return Err(IdentityError::BadRequest(
                    "'is_domain' cannot be changed.".into(),
                ));
            }
            if let Some(parent) = request.parent_id {
                let current = project
                    .parent_id
                    .clone()
                    .unwrap_or_else(|| project.domain_id.clone());
                if parent != current {
                    return Err(IdentityError::Forbidden(
                        "update_project (the parent cannot be changed)".into(),
                    ));
                }
            }
            if let Some(description) = request.description {
                project.description = description;
            }
            if let Some(enabled) = request.enabled {
                project.enabled = enabled;
            }
            if let Some(tags) = &tags {
                store::set_project_tags(tx, &project.id, tags)?;
            }
            project
                .extra
                .extend(strip_reserved(request.extra, PROJECT_IGNORED));
            store::update_project(tx, &project)?;
            if project.is_domain
                && let Some(mut domain) = store::get_domain(tx, &project.id)?
            {
                domain.name = project.name.clone();
                domain.description = project.description.clone();
                domain.enabled = project.enabled;
                store::update_domain(tx, &domain)?;
            }
            project_json(tx, &project, &base)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"project": value})))
}

async fn delete_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:delete_project",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    s.write(move |tx| {
        let project = load_project(tx, &id)?;
        if store::list_projects(tx)?
            .iter()
            .any(|p| p.parent_id.as_deref() == Some(id.as_str()))
        {
            return Err(IdentityError::Forbidden(
                "delete_project (the project has children)".into(),
            ));
        }
        if project.is_domain {
            if project.enabled {
                return Err(IdentityError::Forbidden(
                    "delete_project (disable a project acting as a domain first)".into(),
                ));
            }
            store::delete_domain(tx, &id)?;
        } else {
            store::delete_project(tx, &id)?;
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn list_tags(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:list_project_tags",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    let tags = s
        .read(move |conn| {
            load_project(conn, &id)?;
            Ok(store::project_tags(conn, &id)?)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"tags": tags})))
}

async fn replace_tags(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:update_project_tags",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    let request: TagsRequest = whole(&body)?;
    let tags = check_tags(request.tags.unwrap_or_default())?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let project = load_project(tx, &id)?;
            store::set_project_tags(tx, &id, &tags)?;
            project_json(tx, &project, &base)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"project": value, "tags": value["tags"]}),
    ))
}

async fn clear_tags(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:delete_project_tags",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    s.write(move |tx| {
        load_project(tx, &id)?;
        store::set_project_tags(tx, &id, &[])?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn check_tag(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:get_project_tag",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    let present = s
        .read(move |conn| {
            load_project(conn, &id)?;
            Ok(store::project_tags(conn, &id)?.contains(&tag))
        })
        .await?;
    if present {
        Ok(no_content())
    } else {
        Err(IdentityError::NotFound(
            "The tag is not on the project.".into(),
        ))
    }
}

async fn add_tag(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:create_project_tag",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    check_tag_text(&tag)?;
    s.write(move |tx| {
        load_project(tx, &id)?;
        let mut tags = store::project_tags(tx, &id)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        if tags.len() > 80 {
            return Err(IdentityError::BadRequest(
                "A project has at most 80 tags.".into(),
            ));
        }
        store::set_project_tags(tx, &id, &tags)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED.into_response())
}

async fn remove_tag(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> IdentityResult<Response> {
    let found = find_project(&s, &id).await?;
    s.authorize(
        &ctx,
        "identity:delete_project_tag",
        &with_project_target(Target::new(), found.as_ref()),
    )?;
    s.write(move |tx| {
        load_project(tx, &id)?;
        let mut tags = store::project_tags(tx, &id)?;
        if !tags.contains(&tag) {
            return Err(IdentityError::NotFound(
                "The tag is not on the project.".into(),
            ));
        }
        tags.retain(|t| *t != tag);
        store::set_project_tags(tx, &id, &tags)?;
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
    fn domain_bodies_keep_extras() {
        let domain: DomainRequest = member(
            br#"{"domain": {"name": "d", "enabled": true, "tags": ["x"], "colour": 1}}"#,
            "domain",
        )
        .expect("accepted");
        let extra = strip_reserved(domain.extra, DOMAIN_IGNORED);
        assert_eq!(extra.get("colour"), Some(&json!(1)));
        assert_eq!(extra.len(), 1, "{extra:?}");
        assert_eq!(
            refusal::<DomainRequest>(r#"{"domain": {"name": "d", "enabled": "no"}}"#, "domain"),
            "Invalid input for field 'enabled': not a boolean."
        );
    }

    #[test]
    fn project_bodies_and_tags() {
        let project: NewProject = member(
            br#"{"project": {"name": "p", "is_domain": false, "tags": ["a"], "x": 1}}"#,
            "project",
        )
        .expect("accepted");
        assert_eq!(project.tags, Some(vec!["a".to_string()]));
        assert_eq!(project.extra.len(), 1);
        assert_eq!(
            refusal::<NewProject>(r#"{"project": {"name": "p", "tags": "a"}}"#, "project"),
            "Invalid input for field 'tags': not an array."
        );
        assert_eq!(
            refusal::<NewProject>(r#"{"project": {"name": "p", "tags": [1]}}"#, "project"),
            "Invalid input for field 'tags[0]': not a string."
        );
        let update: ProjectUpdate =
            member(br#"{"project": {"is_domain": null}}"#, "project").expect("accepted");
        assert!(update.is_domain.is_some(), "is_domain sent, to be refused");
        assert!(check_tags(vec!["a/b".into()]).is_err());
        assert!(check_tags((0..81).map(|i| i.to_string()).collect()).is_err());
        assert_eq!(check_tags(vec!["a".into()]).expect("valid").len(), 1);
    }
}
