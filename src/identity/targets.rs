//! Keystone's policy targets: the looked-up object, flattened under
//! `target.<kind>.` (an object that does not exist adds nothing, so the
//! caller is refused before learning whether it exists), and the lookups
//! that feed them, and the scope defaults list and create calls use. A
//! leaf shared by the resource, user and role APIs.

use rusqlite::Connection;

use super::context::{AuthContext, Scope};
use super::{IdentityError, IdentityResult, IdentityState};
use crate::db::identity::{self as store, Domain, Group, Project, User};
use crate::policy::Target;

/// Adds `target.domain.*`.
pub fn with_domain_target(target: Target, domain: Option<&Domain>) -> Target {
    match domain {
        Some(d) => target
            .with("target.domain.id", &d.id)
            .with("target.domain.name", &d.name),
        None => target,
    }
}

/// Adds `target.project.*`.
pub fn with_project_target(target: Target, project: Option<&Project>) -> Target {
    match project {
        Some(p) => target
            .with("target.project.id", &p.id)
            .with("target.project.name", &p.name)
            .with("target.project.domain_id", &p.domain_id)
            .with(
                "target.project.parent_id",
                p.parent_id.as_deref().unwrap_or("None"),
            ),
        None => target,
    }
}

/// Adds `target.user.*`.
pub fn with_user_target(target: Target, user: Option<&User>) -> Target {
    match user {
        Some(u) => target
            .with("target.user.id", &u.id)
            .with("target.user.name", &u.name)
            .with("target.user.domain_id", &u.domain_id),
        None => target,
    }
}

/// Adds `target.group.*`.
pub fn with_group_target(target: Target, group: Option<&Group>) -> Target {
    match group {
        Some(g) => target
            .with("target.group.id", &g.id)
            .with("target.group.name", &g.name)
            .with("target.group.domain_id", &g.domain_id),
        None => target,
    }
}

pub async fn find_domain(s: &IdentityState, id: &str) -> IdentityResult<Option<Domain>> {
    let id = id.to_string();
    s.read(move |conn| Ok(store::get_domain(conn, &id)?)).await
}

pub async fn find_project(s: &IdentityState, id: &str) -> IdentityResult<Option<Project>> {
    let id = id.to_string();
    s.read(move |conn| Ok(store::get_project(conn, &id)?)).await
}

pub async fn find_user(s: &IdentityState, id: &str) -> IdentityResult<Option<User>> {
    let id = id.to_string();
    s.read(move |conn| Ok(store::get_user(conn, &id)?)).await
}

pub async fn find_group(s: &IdentityState, id: &str) -> IdentityResult<Option<Group>> {
    let id = id.to_string();
    s.read(move |conn| Ok(store::get_group(conn, &id)?)).await
}

// Lookups and scope defaults shared by the resource handlers.

/// The domain of a domain-scoped token: Keystone's list calls put it in the
/// target and show only that domain's objects.
pub fn token_domain(ctx: &AuthContext) -> Option<String> {
    match &ctx.scope {
        Scope::Domain { id, .. } => Some(id.clone()),
        _ => None,
    }
}

pub fn not_found(kind: &str, id: &str) -> IdentityError {
    IdentityError::NotFound(format!("Could not find {kind}: {id}."))
}

/// The domain new resources go to when the request names none.
pub fn default_domain_for(ctx: &AuthContext) -> String {
    match &ctx.scope {
        Scope::Domain { id, .. } => id.clone(),
        _ => "default".into(),
    }
}

/// Project and domain names: 1 to 64 characters, as Keystone's schema has them.
pub fn check_resource_name(name: &str) -> IdentityResult<()> {
    if name.chars().count() > 64 {
        return Err(IdentityError::BadRequest(
            "Invalid input for field 'name': longer than 64 characters.".into(),
        ));
    }
    Ok(())
}

pub fn load_domain(conn: &Connection, id: &str) -> IdentityResult<Domain> {
    store::get_domain(conn, id)?.ok_or_else(|| not_found("domain", id))
}

pub fn load_project(conn: &Connection, id: &str) -> IdentityResult<Project> {
    store::get_project(conn, id)?.ok_or_else(|| not_found("project", id))
}

pub fn load_user(conn: &Connection, id: &str) -> IdentityResult<User> {
    store::get_user(conn, id)?.ok_or_else(|| not_found("user", id))
}

pub fn load_group(conn: &Connection, id: &str) -> IdentityResult<Group> {
    store::get_group(conn, id)?.ok_or_else(|| not_found("group", id))
}
