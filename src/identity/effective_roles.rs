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

#[cfg(test)]
mod tests {
    //! Role resolution against a real (in-memory) state file: one domain
    //! `d1` with project `p` and its child `c`; users alice and bob, bob in
    //! group `g`; roles reader < member < admin by implication, and `ds`,
    //! a role of domain `d1` that implies reader.

    use rusqlite::Connection;
    use serde_json::{Map, Value};

    use super::*;
    use crate::db::identity::{AppCredential, Domain, Group, Role, User, test_connection};

    fn domain(conn: &Connection, id: &str) {
        store::insert_domain(
            conn,
            &Domain {
                id: id.into(),
                name: format!("{id}-name"),
                description: String::new(),
                enabled: true,
                extra: Map::new(),
            },
        )
        .expect("domain");
    }

    fn project(conn: &Connection, id: &str, parent: Option<&str>) {
        store::insert_project(
            conn,
            &Project {
                id: id.into(),
                name: format!("{id}-name"),
                domain_id: "d1".into(),
                parent_id: parent.map(str::to_string),
                description: String::new(),
                enabled: true,
                is_domain: false,
                extra: Map::new(),
            },
        )
        .expect("project");
    }

    fn user(conn: &Connection, id: &str) {
        store::insert_user(
            conn,
            &User {
                id: id.into(),
                name: id.into(),
                domain_id: "d1".into(),
                enabled: true,
                password_hash: None,
                password_changed_at: None,
                password_expires_at: None,
                default_project_id: None,
                created_at: 0,
                options: Map::new(),
                extra: Map::new(),
            },
        )
        .expect("user");
    }

    fn role(conn: &Connection, id: &str, domain_id: Option<&str>) {
        store::insert_role(
            conn,
            &Role {
                id: id.into(),
                name: format!("{id}-name"),
                domain_id: domain_id.map(str::to_string),
                description: String::new(),
                options: Map::new(),
                extra: Map::new(),
            },
        )
        .expect("role");
    }

    fn assign(conn: &Connection, actor: (&str, &str), target: (&str, &str), role: &str) {
        grant(conn, actor, target, role, false);
    }

    fn grant(
        conn: &Connection,
        (actor_type, actor_id): (&str, &str),
        (target_type, target_id): (&str, &str),
        role_id: &str,
        inherited: bool,
    ) {
        store::insert_assignment(
            conn,
            &Assignment {
                actor_type: actor_type.into(),
                actor_id: actor_id.into(),
                target_type: target_type.into(),
                target_id: target_id.into(),
                role_id: role_id.into(),
                inherited,
            },
        )
        .expect("assignment");
    }

    fn world() -> Connection {
        let conn = test_connection();
        domain(&conn, "d1");
        domain(&conn, "d2");
        project(&conn, "p", None);
        project(&conn, "c", Some("p"));
        user(&conn, "alice");
        user(&conn, "bob");
        store::insert_group(
            &conn,
            &Group {
                id: "g".into(),
                name: "g".into(),
                domain_id: "d1".into(),
                description: String::new(),
                extra: Map::new(),
            },
        )
        .expect("group");
        store::add_group_member(&conn, "g", "bob").expect("member");
        for id in ["reader", "member", "admin"] {
            role(&conn, id, None);
        }
        role(&conn, "ds", Some("d1"));
        store::insert_implied_role(&conn, "admin", "member").expect("implies");
        store::insert_implied_role(&conn, "member", "reader").expect("implies");
        store::insert_implied_role(&conn, "ds", "reader").expect("implies");
        conn
    }

    fn ids(conn: &Connection, user: &str, target: (&str, &str)) -> Vec<String> {
        effective_role_ids(conn, user, target.0, target.1).expect("effective roles")
    }

    fn names(conn: &Connection, user: &str, scope: &Scope) -> Vec<String> {
        effective_roles_for_scope(conn, user, scope)
            .expect("scope roles")
            .into_iter()
            .map(|(_, name)| name)
            .collect()
    }

    fn project_scope(id: &str) -> Scope {
        Scope::Project {
            id: id.into(),
            name: format!("{id}-name"),
            domain_id: "d1".into(),
            domain_name: "d1-name".into(),
        }
    }

    #[test]
    fn a_direct_assignment_brings_its_implied_roles_on_that_target_only() {
        let conn = world();
        assign(&conn, ("user", "alice"), ("project", "p"), "member");
        assert_eq!(ids(&conn, "alice", ("project", "p")), ["member", "reader"]);
        assert!(ids(&conn, "alice", ("project", "c")).is_empty());
        assert!(ids(&conn, "alice", ("domain", "d1")).is_empty());
        assert!(ids(&conn, "bob", ("project", "p")).is_empty());
    }

    #[test]
    fn implied_roles_are_followed_transitively() {
        let conn = world();
        assign(&conn, ("user", "alice"), ("project", "p"), "admin");
        assert_eq!(
            ids(&conn, "alice", ("project", "p")),
            ["admin", "member", "reader"]
        );
    }

    #[test]
    fn implication_cycles_terminate() {
        let mut set: BTreeSet<String> = ["a".to_string()].into();
        let rules = [
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "a".to_string()),
            ("b".to_string(), "c".to_string()),
        ];
        expand_implied(&mut set, &rules);
        assert_eq!(set.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn a_group_assignment_reaches_its_members_only() {
        let conn = world();
        assign(&conn, ("group", "g"), ("project", "p"), "member");
        assert_eq!(ids(&conn, "bob", ("project", "p")), ["member", "reader"]);
        assert!(ids(&conn, "alice", ("project", "p")).is_empty());
        store::remove_group_member(&conn, "g", "bob").expect("remove");
        assert!(ids(&conn, "bob", ("project", "p")).is_empty());
    }

    #[test]
    fn an_inherited_domain_assignment_reaches_its_projects_not_the_domain() {
        let conn = world();
        grant(&conn, ("user", "alice"), ("domain", "d1"), "member", true);
        assert_eq!(ids(&conn, "alice", ("project", "p")), ["member", "reader"]);
        assert_eq!(ids(&conn, "alice", ("project", "c")), ["member", "reader"]);
        assert!(ids(&conn, "alice", ("domain", "d1")).is_empty());
    }

    #[test]
    fn an_inherited_project_assignment_reaches_the_subtree_not_the_project() {
        let conn = world();
        grant(&conn, ("group", "g"), ("project", "p"), "reader", true);
        assert_eq!(ids(&conn, "bob", ("project", "c")), ["reader"]);
        assert!(ids(&conn, "bob", ("project", "p")).is_empty());
    }

    #[test]
    fn an_inherited_assignment_elsewhere_reaches_nothing_here() {
        let conn = world();
        grant(&conn, ("user", "alice"), ("domain", "d2"), "admin", true);
        assert!(ids(&conn, "alice", ("project", "p")).is_empty());
    }

    #[test]
    fn each_scope_reads_its_own_target() {
        let conn = world();
        assign(&conn, ("user", "alice"), ("system", "all"), "admin");
        assign(&conn, ("user", "alice"), ("domain", "d1"), "reader");
        assign(&conn, ("user", "alice"), ("project", "c"), "member");
        assert_eq!(
            names(&conn, "alice", &Scope::System),
            ["admin-name", "member-name", "reader-name"]
        );
        let d1 = Scope::Domain {
            id: "d1".into(),
            name: "d1-name".into(),
        };
        assert_eq!(names(&conn, "alice", &d1), ["reader-name"]);
        assert_eq!(
            names(&conn, "alice", &project_scope("c")),
            ["member-name", "reader-name"]
        );
        assert!(names(&conn, "alice", &project_scope("p")).is_empty());
        assert!(names(&conn, "alice", &Scope::Unscoped).is_empty());
    }

    #[test]
    fn a_domain_specific_role_gives_only_the_global_roles_it_implies() {
        let conn = world();
        assign(&conn, ("user", "alice"), ("project", "p"), "ds");
        assert_eq!(ids(&conn, "alice", ("project", "p")), ["ds", "reader"]);
        assert_eq!(names(&conn, "alice", &project_scope("p")), ["reader-name"]);
    }

    #[test]
    fn user_projects_are_those_with_any_effective_role() {
        let conn = world();
        project(&conn, "other", None);
        grant(&conn, ("group", "g"), ("project", "p"), "reader", true);
        let listed: Vec<String> = user_projects(&conn, "bob")
            .expect("projects")
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(listed, ["c"]);
        assert!(user_projects(&conn, "alice").expect("projects").is_empty());
    }

    #[test]
    fn application_credentials_go_with_the_roles_they_were_made_with() {
        let conn = world();
        assign(&conn, ("group", "g"), ("project", "p"), "member");
        for (id, roles) in [("keeps", vec!["reader"]), ("loses", vec!["member"])] {
            store::insert_app_cred(
                &conn,
                &AppCredential {
                    id: id.into(),
                    name: id.into(),
                    user_id: "bob".into(),
                    project_id: "p".into(),
                    secret_hash: String::new(),
                    description: None,
                    expires_at_micros: None,
                    unrestricted: false,
                    roles: roles.into_iter().map(str::to_string).collect(),
                    access_rules: Value::Array(Vec::new()),
                },
            )
            .expect("app cred");
        }
        delete_app_creds_without_their_roles(&conn).expect("sweep");
        assert_eq!(store::list_all_app_creds(&conn).expect("list").len(), 2);
        // Bob leaves the group and gets reader back directly: only the
        // credential that needs member goes.
        store::remove_group_member(&conn, "g", "bob").expect("remove");
        assign(&conn, ("user", "bob"), ("project", "p"), "reader");
        delete_app_creds_without_their_roles(&conn).expect("sweep");
        let left: Vec<String> = store::list_all_app_creds(&conn)
            .expect("list")
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(left, ["keeps"]);
    }
}
