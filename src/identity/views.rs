//! JSON shapes of Keystone resources, as Keystone returns them.

use serde_json::{Map, Value, json};

use crate::db::identity::{Domain, Extra, Group, Project, Role, User};

/// Merges client-supplied extra attributes under the fixed ones.
fn with_extra(mut fixed: Value, extra: &Extra) -> Value {
    if let Some(map) = fixed.as_object_mut() {
        for (k, v) in extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    fixed
}

fn links(base: &str, collection: &str, id: &str) -> Value {
    json!({"self": format!("{base}/{collection}/{id}")})
}

pub fn domain(d: &Domain, base: &str) -> Value {
    with_extra(
        json!({
            "id": d.id,
            "name": d.name,
            "description": d.description,
            "enabled": d.enabled,
            "tags": [],
            "options": {},
            "links": links(base, "domains", &d.id),
        }),
        &d.extra,
    )
}

pub fn project(p: &Project, tags: Vec<String>, base: &str) -> Value {
    with_extra(
        json!({
            "id": p.id,
            "name": p.name,
            "domain_id": if p.is_domain { Value::Null } else { Value::String(p.domain_id.clone()) },
            "parent_id": if p.is_domain { None } else { Some(p.parent_id.clone().unwrap_or_else(|| p.domain_id.clone())) },
            "description": p.description,
            "enabled": p.enabled,
            "is_domain": p.is_domain,
            "tags": tags,
            "options": {},
            "links": links(base, "projects", &p.id),
        }),
        &p.extra,
    )
}

pub fn user(u: &User, base: &str) -> Value {
    let mut value = with_extra(
        json!({
            "id": u.id,
            "name": u.name,
            "domain_id": u.domain_id,
            "enabled": u.enabled,
            "password_expires_at": u.password_expires_at.map(|t| {
                chrono::DateTime::from_timestamp(t, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S.000000").to_string()
            }),
            "options": Value::Object(u.options.clone()),
            "links": links(base, "users", &u.id),
        }),
        &u.extra,
    );
    if let (Some(map), Some(project)) = (value.as_object_mut(), &u.default_project_id) {
        map.insert("default_project_id".into(), Value::String(project.clone()));
    }
    value
}

pub fn group(g: &Group, base: &str) -> Value {
    with_extra(
        json!({
            "id": g.id,
            "name": g.name,
            "domain_id": g.domain_id,
            "description": g.description,
            "links": links(base, "groups", &g.id),
        }),
        &g.extra,
    )
}

pub fn role(r: &Role, base: &str) -> Value {
    with_extra(
        json!({
            "id": r.id,
            "name": r.name,
            "domain_id": r.domain_id,
            "description": r.description,
            "options": Value::Object(r.options.clone()),
            "links": links(base, "roles", &r.id),
        }),
        &r.extra,
    )
}

/// The short role form used inside implied-role documents.
pub fn role_ref(r: &Role, base: &str) -> Value {
    json!({"id": r.id, "name": r.name, "links": links(base, "roles", &r.id)})
}

/// Attributes a client may not set through `extra`.
pub fn strip_reserved(mut obj: Map<String, Value>, reserved: &[&str]) -> Extra {
    for key in reserved {
        obj.remove(*key);
    }
    obj.remove("links");
    obj.remove("id");
    obj
}
