//! Keystone's policy targets: the looked-up object, flattened under
//! `target.<kind>.` (an object that does not exist adds nothing, so the
//! caller is refused before learning whether it exists), and the lookups
//! that feed them. A leaf shared by the resource and role APIs.

use super::{IdentityResult, IdentityState};
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
