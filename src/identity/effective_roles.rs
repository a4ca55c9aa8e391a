//! Role resolution: which roles a user holds on a target, from direct,
//! group and inherited assignments plus implied roles, and what follows
//! when roles go away. A leaf: no HTTP, only reads and writes through
//! `db::identity`, so tokens, credentials, resources and the role API all
//! share it without importing each other.

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::Connection;

use super::context::Scope;
use crate::db::DbResult;
use crate::db::identity::{self as store, Assignment, Project};

/// Adds every role implied (transitively) by the roles already in `ids`.
pub fn expand_implied(ids: &mut BTreeSet<String>, rules: &[(String, String)]) {
    let mut frontier: Vec<String> = ids.iter().cloned().collect();
    while let Some(role) = frontier.pop() {
        for (prior, implied) in rules {
            if *prior == role && ids.insert(implied.clone()) {
                frontier.push(implied.clone());
            }
        }
    }
}

/// Direct, group and inherited assignments of a user on one target, before
/// implied roles are added.
fn assigned_role_ids(
    conn: &Connection,
    assignments: &[Assignment],
    user_id: &str,
    target_type: &str,
    target_id: &str,
) -> DbResult<BTreeSet<String>> {
    let groups: HashSet<String> = store::groups_of_user(conn, user_id)?.into_iter().collect();
    let is_actor = |a: &Assignment| {
        (a.actor_type == "user" && a.actor_id == user_id)
            || (a.actor_type == "group" && groups.contains(&a.actor_id))
    };
    // Targets whose inherited assignments reach this one: the project's
    // domain and its ancestors.
    let mut inherited_from: Vec<(String, String)> = Vec::new();
    if target_type == "project" {
        let mut current = store::get_project(conn, target_id)?;
        if let Some(project) = &current {
            inherited_from.push(("domain".into(), project.domain_id.clone()));
        }
        let mut hops = 0;
        while let Some(project) = current {
            hops += 1;
            match project.parent_id {
                Some(parent) if hops < 64 => {
                    inherited_from.push(("project".into(), parent.clone()));
                    current = store::get_project(conn, &parent)?;
                }
                _ => break,
            }
        }
    }
    let mut ids = BTreeSet::new();
    for a in assignments.iter().filter(|a| is_actor(a)) {
        let direct = !a.inherited && a.target_type == target_type && a.target_id == target_id;
        let inherited = a.inherited
            && inherited_from
                .iter()
                .any(|(t, id)| *t == a.target_type && *id == a.target_id);
        if direct || inherited {
            ids.insert(a.role_id.clone());
        }
    }
    Ok(ids)
}

/// Effective role ids of a user on a target (implied roles included).
pub fn effective_role_ids(
    conn: &Connection,
    user_id: &str,
    target_type: &str,
    target_id: &str,
) -> DbResult<Vec<String>> {
    let assignments = store::list_assignments(conn)?;
    let mut ids = assigned_role_ids(conn, &assignments, user_id, target_type, target_id)?;
    expand_implied(&mut ids, &store::list_implied_roles(conn)?);
    Ok(ids.into_iter().collect())
}

/// Effective roles, as (id, name), for a token scope.
pub fn effective_roles_for_scope(
    conn: &Connection,
    user_id: &str,
    scope: &Scope,
) -> DbResult<Vec<(String, String)>> {
    let (target_type, target_id) = match scope {
        Scope::Project { id, .. } => ("project", id.as_str()),
        Scope::Domain { id, .. } => ("domain", id.as_str()),
        Scope::System => ("system", "all"),
        Scope::Unscoped => return Ok(Vec::new()),
    };
    let ids = effective_role_ids(conn, user_id, target_type, target_id)?;
    // Domain-specific roles never appear in tokens: only the global roles they imply.
    let names: HashMap<String, String> = store::list_roles(conn)?
        .into_iter()
        .filter(|r| r.domain_id.is_none())
        .map(|r| (r.id, r.name))
        .collect();
    Ok(ids
        .into_iter()
        .filter_map(|id| names.get(&id).map(|name| (id.clone(), name.clone())))
        .collect())
}

/// The projects on which a user has any effective role, in store order.
pub fn user_projects(conn: &Connection, user_id: &str) -> DbResult<Vec<Project>> {
    let assignments = store::list_assignments(conn)?;
    let mut out = Vec::new();
    for project in store::list_projects(conn)? {
        if !assigned_role_ids(conn, &assignments, user_id, "project", &project.id)?.is_empty() {
            out.push(project);
        }
    }
    Ok(out)
}

/// Deletes the application credentials whose user no longer holds every
/// role they were made with (Keystone deletes them when the role goes),
/// which also revokes their tokens. Called after any write that can take a
/// role away (unassignment, role or implied-role deletion, group changes).
pub fn delete_app_creds_without_their_roles(conn: &Connection) -> DbResult<()> {
    for cred in store::list_all_app_creds(conn)? {
        let held = effective_role_ids(conn, &cred.user_id, "project", &cred.project_id)?;
        if !cred.roles.iter().all(|role| held.contains(role)) {
            store::delete_app_cred(conn, &cred.id)?;
        }
    }
    Ok(())
}
