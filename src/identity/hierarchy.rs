//! The project hierarchy as `GET /v3/projects/{id}` expands it on request
//! (`parents_as_list`, `parents_as_ids`, `subtree_as_list`, `subtree_as_ids`,
//! `include_limits`), as Keystone answers: the lists hold only the projects
//! the caller has a role on, each wrapped as `{"project": …}` (with its
//! `limits` when asked); the id forms are nested maps of the whole
//! hierarchy, the domain (Keystone's root project) at the top of the parents.
//! A leaf used by the resource API.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{IdentityError, IdentityResult, effective_roles, views};
use crate::db::identity::{self as store, Project};

/// What the query asked to add to the project.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expansion {
    pub parents_as_list: bool,
    pub parents_as_ids: bool,
    pub subtree_as_list: bool,
    pub subtree_as_ids: bool,
    pub include_limits: bool,
}

/// A flag as Keystone reads it: present with no value, or a true word.
fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "" | "1" | "t" | "true" | "on" | "y" | "yes"
        )
    })
}

impl Expansion {
    /// Reads the flags; a list and an id form of the same relation together are refused.
    pub fn parse(query: &HashMap<String, String>) -> IdentityResult<Expansion> {
        let e = Expansion {
            parents_as_list: flag(query, "parents_as_list"),
            parents_as_ids: flag(query, "parents_as_ids"),
            subtree_as_list: flag(query, "subtree_as_list"),
            subtree_as_ids: flag(query, "subtree_as_ids"),
            include_limits: flag(query, "include_limits"),
        };
        if e.parents_as_list && e.parents_as_ids {
            return Err(IdentityError::BadRequest(
                "Cannot use parents_as_list and parents_as_ids query params at the same time."
                    .into(),
            ));
        }
        if e.subtree_as_list && e.subtree_as_ids {
            return Err(IdentityError::BadRequest(
                "Cannot use subtree_as_list and subtree_as_ids query params at the same time."
                    .into(),
            ));
        }
        Ok(e)
    }

    fn any(&self) -> bool {
        self.parents_as_list || self.parents_as_ids || self.subtree_as_list || self.subtree_as_ids
    }
}

/// The project's ancestors, nearest first (projects only; the domain is not one).
fn parents(conn: &Connection, project: &Project) -> IdentityResult<Vec<Project>> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([project.id.clone()]);
    let mut next = project.parent_id.clone();
    while let Some(id) = next {
        if !seen.insert(id.clone()) {
            break;
        }
        let Some(parent) = store::get_project(conn, &id)? else {
            break;
        };
        next = parent.parent_id.clone();
        out.push(parent);
    }
    Ok(out)
}

/// The project's descendants, level by level.
fn subtree(all: &[Project], root: &str) -> Vec<Project> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([root.to_string()]);
    let mut level = vec![root.to_string()];
    while !level.is_empty() {
        let children: Vec<&Project> = all
            .iter()
            .filter(|p| p.parent_id.as_ref().is_some_and(|id| level.contains(id)))
            .filter(|p| !seen.contains(&p.id))
            .collect();
        level = children.iter().map(|p| p.id.clone()).collect();
        seen.extend(level.iter().cloned());
        out.extend(children.into_iter().cloned());
    }
    out
}

/// `{parent: {grandparent: … {domain: null}}}`, or null for a domain.
fn parents_as_ids(chain: &[Project], project: &Project) -> Value {
    if project.is_domain {
        return Value::Null;
    }
    let domain = project.domain_id.clone();
    let mut value = json!({ domain: null });
    for p in chain.iter().rev() {
        value = json!({ p.id.clone(): value });
    }
    value
}

/// `{child: {grandchild: null, …}, …}`, or null when there are no children.
fn subtree_as_ids(all: &[Project], root: &str) -> Value {
    let children: Vec<&Project> = all
        .iter()
        .filter(|p| p.parent_id.as_deref() == Some(root))
        .collect();
    if children.is_empty() {
        return Value::Null;
    }
    let mut map = Map::new();
    for child in children {
        map.insert(child.id.clone(), subtree_as_ids(all, &child.id));
    }
    Value::Object(map)
}

/// A listed project as Keystone wraps it, with its limits when asked.
fn member(
    conn: &Connection,
    p: &Project,
    include_limits: bool,
    base: &str,
) -> IdentityResult<Value> {
    let mut value = views::project(p, store::project_tags(conn, &p.id)?, base);
    if include_limits {
        let limits: Vec<Value> = crate::db::limits::list_limits(conn)?
            .into_iter()
            .filter(|l| l.project_id.as_deref() == Some(p.id.as_str()))
            .map(|l| {
                json!({
                    "id": l.id,
                    "project_id": l.project_id,
                    "domain_id": l.domain_id,
                    "service_id": l.service_id,
                    "region_id": l.region_id,
                    "resource_name": l.resource_name,
                    "resource_limit": l.resource_limit,
                    "description": l.description,
                    "links": {"self": format!("{base}/limits/{}", l.id)},
                })
            })
            .collect();
        value["limits"] = Value::Array(limits);
    }
    Ok(json!({ "project": value }))
}

/// Adds `parents` and `subtree` to the rendered `value` of `project` as
/// `e` asks, the lists limited to the projects `user_id` has a role on.
pub fn expand(
    conn: &Connection,
    value: &mut Value,
    project: &Project,
    user_id: &str,
    e: Expansion,
    base: &str,
) -> IdentityResult<()> {
    if !e.any() {
        return Ok(());
    }
    let visible: HashSet<String> = if e.parents_as_list || e.subtree_as_list {
        effective_roles::user_projects(conn, user_id)?
            .into_iter()
            .map(|p| p.id)
            .collect()
    } else {
        HashSet::new()
    };
    if e.parents_as_list || e.parents_as_ids {
        let chain = parents(conn, project)?;
        value["parents"] = if e.parents_as_list {
            let mut list = Vec::new();
            for p in chain.iter().filter(|p| visible.contains(&p.id)) {
                list.push(member(conn, p, e.include_limits, base)?);
            }
            Value::Array(list)
        } else {
            parents_as_ids(&chain, project)
        };
    }
    if e.subtree_as_list || e.subtree_as_ids {
        let all = store::list_projects(conn)?;
        value["subtree"] = if e.subtree_as_list {
            let mut list = Vec::new();
            for p in subtree(&all, &project.id)
                .iter()
                .filter(|p| visible.contains(&p.id))
            {
                list.push(member(conn, p, e.include_limits, base)?);
            }
            Value::Array(list)
        } else {
            subtree_as_ids(&all, &project.id)
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &str, parent: Option<&str>) -> Project {
        Project {
            id: id.into(),
            name: id.into(),
            domain_id: "default".into(),
            parent_id: parent.map(str::to_string),
            description: String::new(),
            enabled: true,
            is_domain: false,
            extra: Map::new(),
        }
    }

    #[test]
    fn flags_read_as_keystone_reads_them() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let e = Expansion::parse(&q(&[("parents_as_list", ""), ("subtree_as_ids", "True")]))
            .expect("parse");
        assert!(e.parents_as_list && e.subtree_as_ids && !e.include_limits);
        assert!(
            !Expansion::parse(&q(&[("parents_as_list", "false")]))
                .expect("parse")
                .any()
        );
        assert!(Expansion::parse(&q(&[("parents_as_list", ""), ("parents_as_ids", "")])).is_err());
        assert!(Expansion::parse(&q(&[("subtree_as_list", ""), ("subtree_as_ids", "")])).is_err());
    }

    #[test]
    fn ids_nest_as_keystone_nests_them() {
        // A - B - {C, D}
        let all = vec![
            project("a", None),
            project("b", Some("a")),
            project("c", Some("b")),
            project("d", Some("b")),
        ];
        assert_eq!(
            subtree_as_ids(&all, "a"),
            json!({"b": {"c": null, "d": null}})
        );
        assert_eq!(subtree_as_ids(&all, "c"), Value::Null);
        let chain = vec![all[1].clone(), all[0].clone()];
        assert_eq!(
            parents_as_ids(&chain, &all[2]),
            json!({"b": {"a": {"default": null}}})
        );
        let ids: Vec<String> = subtree(&all, "a").into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["b", "c", "d"]);
    }
}
