//! Tags of any tagged resource: `/v2.0/{collection}/{id}/tags[/{tag}]`,
//! as Neutron's tag extension (replace all, clear, add, check, remove).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::{Caller, MAX_BODY, NetResult, NetworkError, NetworkState, reply, store};
use crate::db::network as db;
use crate::identity::Auth;
use crate::policy::Target;

/// The most tags one resource may carry.
pub const MAX_TAGS: usize = 100;
/// Neutron's longest tag.
pub const TAG_MAX: usize = 255;

/// The stored kind and 404 of a taggable collection.
fn kind_of(collection: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match collection {
        "networks" => ("network", "NetworkNotFound", "Network"),
        "subnets" => ("subnet", "SubnetNotFound", "Subnet"),
        "ports" => ("port", "PortNotFound", "Port"),
        "routers" => ("router", "RouterNotFound", "Router"),
        "floatingips" => ("floatingip", "FloatingIPNotFound", "Floating IP"),
        "security-groups" => ("security_group", "SecurityGroupNotFound", "Security group"),
        "subnetpools" => ("subnetpool", "SubnetPoolNotFound", "Subnet pool"),
        _ => return None,
    })
}

fn not_found(kind: &'static str, label: &str, id: &str) -> NetworkError {
    NetworkError::not_found(kind, format!("{label} {id} could not be found."))
}

/// Loads the tagged record's JSON if the caller may see it.
fn load(
    conn: &Connection,
    caller: &Caller,
    collection: &str,
    id: &str,
) -> NetResult<(&'static str, Value)> {
    let (kind, nf, label) = kind_of(collection).ok_or_else(|| {
        NetworkError::not_found("HTTPNotFound", "The resource could not be found.")
    })?;
    let rec = db::get(conn, kind, id)?.ok_or_else(|| not_found(nf, label, id))?;
    let doc: Value = serde_json::from_str(&rec.doc)?;
    let flag = |k: &str| doc.get(k).and_then(Value::as_bool).unwrap_or(false);
    let visible = caller.admin
        || rec.project_id == caller.project
        || (kind == "network" && (flag("shared") || flag("router:external")))
        || (kind == "subnetpool" && flag("shared"));
    if !visible {
        return Err(not_found(nf, label, id));
    }
    Ok((kind, doc))
}

fn may_change(caller: &Caller, kind: &str, doc: &Value) -> NetResult<()> {
    let project = doc
        .get("project_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let target = Target::project(project.to_string());
    let rule = format!("update_{kind}:tags");
    if caller.allows(&rule, &target) || caller.allows(&format!("update_{kind}"), &target) {
        Ok(())
    } else {
        Err(NetworkError::Forbidden(format!(
            "rule:{rule} is disallowed by policy"
        )))
    }
}

fn tags_of(doc: &Value) -> Vec<String> {
    doc.get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn check_tag(tag: &str) -> NetResult<()> {
    if tag.is_empty() || tag.chars().count() > TAG_MAX || tag.contains(',') || tag.contains('/') {
        return Err(NetworkError::invalid(
            "tags",
            format!("'{tag}' is not a valid tag"),
        ));
    }
    Ok(())
}

/// Writes the tags back, moving the revision and `updated_at` as Neutron does.
fn store_tags(
    conn: &Connection,
    kind: &str,
    id: &str,
    mut doc: Value,
    tags: Vec<String>,
) -> NetResult<()> {
    if let Value::Object(m) = &mut doc {
        let rev = m
            .get("revision_number")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        m.insert("tags".into(), json!(tags));
        m.insert("revision_number".into(), json!(rev + 1));
        m.insert("updated_at".into(), json!(store::now()));
    }
    db::update(conn, kind, id, &serde_json::to_string(&doc)?)?;
    Ok(())
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path((collection, id)): Path<(String, String)>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let tags = s
        .read(move |conn| Ok(tags_of(&load(conn, &caller, &collection, &id)?.1)))
        .await?;
    Ok(reply(StatusCode::OK, &json!({ "tags": tags })))
}

pub async fn check(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let t = tag.clone();
    let has = s
        .read(move |conn| Ok(tags_of(&load(conn, &caller, &collection, &id)?.1).contains(&t)))
        .await?;
    if has {
        Ok(crate::http::no_content())
    } else {
        Err(NetworkError::not_found(
            "TagNotFound",
            format!("Tag {tag} could not be found."),
        ))
    }
}

pub async fn replace(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path((collection, id)): Path<(String, String)>,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    if bytes.len() > MAX_BODY {
        return Err(NetworkError::TooLarge);
    }
    let body = crate::http::body::parse_object(&bytes)?;
    let tags = super::attrs::string_list(&body, "tags", MAX_TAGS)?
        .ok_or_else(|| NetworkError::bad("Invalid tags body"))?;
    let mut unique: Vec<String> = Vec::new();
    for t in tags {
        check_tag(&t)?;
        if !unique.contains(&t) {
            unique.push(t);
        }
    }
    let out = unique.clone();
    s.write(move |tx| {
        let (kind, doc) = load(tx, &caller, &collection, &id)?;
        may_change(&caller, kind, &doc)?;
        store_tags(tx, kind, &id, doc, unique)
    })
    .await?;
    Ok(reply(StatusCode::OK, &json!({ "tags": out })))
}

pub async fn clear(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path((collection, id)): Path<(String, String)>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let (kind, doc) = load(tx, &caller, &collection, &id)?;
        may_change(&caller, kind, &doc)?;
        store_tags(tx, kind, &id, doc, Vec::new())
    })
    .await?;
    Ok(crate::http::no_content())
}

pub async fn add(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    check_tag(&tag)?;
    s.write(move |tx| {
        let (kind, doc) = load(tx, &caller, &collection, &id)?;
        may_change(&caller, kind, &doc)?;
        let mut tags = tags_of(&doc);
        if !tags.contains(&tag) {
            if tags.len() >= MAX_TAGS {
                return Err(NetworkError::bad(format!(
                    "A resource may have at most {MAX_TAGS} tags"
                )));
            }
            tags.push(tag);
            store_tags(tx, kind, &id, doc, tags)?;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::CREATED.into_response_body())
}

trait Created {
    fn into_response_body(self) -> Response;
}

impl Created for StatusCode {
    fn into_response_body(self) -> Response {
        axum::response::IntoResponse::into_response(self)
    }
}

pub async fn remove(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let (kind, doc) = load(tx, &caller, &collection, &id)?;
        may_change(&caller, kind, &doc)?;
        let mut tags = tags_of(&doc);
        let Some(p) = tags.iter().position(|t| *t == tag) else {
            return Err(NetworkError::not_found(
                "TagNotFound",
                format!("Tag {tag} could not be found."),
            ));
        };
        tags.remove(p);
        store_tags(tx, kind, &id, doc, tags)
    })
    .await?;
    Ok(crate::http::no_content())
}
