//! Volume list, detail and summary (filters, sort, paging), and the list
//! helpers the other collections share: sort keys, markers and limits,
//! the `links` of a page.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::requests::truthy;
use super::views;
use super::volumes::{MAX_LIMIT, bad, render, type_names};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, authorize, is_admin, own_target, project_of,
    query_map,
};
use crate::db::volume::{self as store, Volume};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/volumes", get(list))
        .route("/v3/volumes/detail", get(list_detail))
        .route("/v3/volumes/summary", get(summary))
}

// -------------------------------------------------------------------- list

/// Keys a volume list may sort on.
const SORT_KEYS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "status",
    "size",
    "created_at",
    "updated_at",
    "availability_zone",
    "bootable",
    "volume_type",
    "project_id",
];

fn sort_value(v: &Volume, key: &str) -> Value {
    match key {
        "id" => json!(v.id),
        "name" | "display_name" => json!(v.name.clone().unwrap_or_default()),
        "status" => json!(v.status),
        "size" => json!(v.size),
        "created_at" => json!(v.created_at),
        "updated_at" => json!(v.updated_at),
        "availability_zone" => json!(v.availability_zone),
        "bootable" => json!(v.bootable),
        "volume_type" => json!(v.volume_type_id),
        "project_id" => json!(v.project_id),
        _ => Value::Null,
    }
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// `sort=key:dir,key2` or `sort_key`/`sort_dir`: (key, descending) pairs;
/// `created_at desc` then `id desc` by default, as Cinder.
pub fn sort_spec(q: &HashMap<String, String>, keys: &[&str]) -> VolumeResult<Vec<(String, bool)>> {
    let mut out = Vec::new();
    if let Some(sort) = q.get("sort") {
        if q.contains_key("sort_key") || q.contains_key("sort_dir") {
            return Err(bad(
                "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
            ));
        }
        for item in sort.split(',').filter(|i| !i.trim().is_empty()) {
            let (key, dir) = item.split_once(':').unwrap_or((item, "desc"));
            out.push((key.trim().to_string(), dir.trim().to_string()));
        }
    } else if let Some(key) = q.get("sort_key") {
        let dir = q.get("sort_dir").cloned().unwrap_or_else(|| "desc".into());
        out.push((key.clone(), dir));
    }
    let mut spec = Vec::new();
    for (key, dir) in out {
        if !keys.contains(&key.as_str()) {
            return Err(bad(format!(
                "Invalid input received: Invalid sort key {key}"
            )));
        }
        let desc = match dir.to_ascii_lowercase().as_str() {
            "desc" => true,
            "asc" => false,
            _ => {
                return Err(bad(
                    "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'"
                        .to_string(),
                ));
            }
        };
        spec.push((key, desc));
    }
    if spec.is_empty() {
        spec.push(("created_at".into(), true));
    }
    if !spec.iter().any(|(k, _)| k == "id") {
        let desc = spec[0].1;
        spec.push(("id".into(), desc));
    }
    Ok(spec)
}

/// `limit` (bounded by [`MAX_LIMIT`]) and `marker` paging over sorted items.
pub fn page<T>(
    items: Vec<T>,
    q: &HashMap<String, String>,
    id_of: impl Fn(&T) -> &str,
    what: &str,
) -> VolumeResult<(Vec<T>, bool)> {
    let limit = match q.get("limit") {
        Some(text) => {
            let n: i64 = text
                .parse()
                .map_err(|_| bad("Invalid input received: limit must be an integer".to_string()))?;
            if n < 0 {
                return Err(bad("Invalid input received: limit must be >= 0"));
            }
            (n as usize).min(MAX_LIMIT)
        }
        None => MAX_LIMIT,
    };
    let start = match q.get("marker") {
        Some(marker) => {
            items
                .iter()
                .position(|i| id_of(i) == marker)
                .ok_or_else(|| {
                    VolumeError::NotFound(format!("Marker {marker} could not be found."))
                })?
                + 1
        }
        None => 0,
    };
    let _ = what;
    // Cinder also takes `offset` (after the marker, if both).
    let offset = match q.get("offset") {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| bad("Invalid input received: offset must be a non-negative integer"))?,
        None => 0,
    };
    let taken: Vec<T> = items.into_iter().skip(start + offset).take(limit).collect();
    // Cinder adds a `next` link whenever a page is full (as many items as
    // the limit), even when it happens to be the last one.
    let more = limit > 0 && taken.len() == limit;
    Ok((taken, more))
}

/// One page of a volume, snapshot or backup list, as Cinder renders it.
pub struct ListPage<'a> {
    /// The collection's key: `volumes`, `snapshots`, `backups`.
    pub collection: &'a str,
    /// Whether this is the `/detail` list.
    pub detail: bool,
    /// The rendered items.
    pub items: Vec<Value>,
    /// The last item's id when a next page exists.
    pub next_marker: Option<&'a str>,
    /// How many items match the filters (all pages).
    pub count: usize,
}

/// `{collection: [...]}`, `{collection}_links` with the next link when there is a next page,
/// and `count` when asked for (`with_count`, 3.45+).
pub fn list_response(
    s: &S,
    project: Option<&str>,
    q: &HashMap<String, String>,
    mv: Mv,
    page: ListPage<'_>,
) -> Response {
    let mut out = Map::new();
    out.insert(page.collection.into(), Value::Array(page.items));
    if let Some(marker) = page.next_marker {
        let path = if page.detail {
            format!("{}/detail", page.collection)
        } else {
            page.collection.to_string()
        };
        out.insert(
            format!("{}_links", page.collection),
            next_link(s, project, &path, q, marker),
        );
    }
    if mv.at_least(45) && q.get("with_count").is_some_and(|v| truthy(v)) {
        out.insert("count".into(), json!(page.count));
    }
    json_response(StatusCode::OK, &out)
}

/// The next link of a paged list.
pub fn next_link(
    s: &S,
    project: Option<&str>,
    path: &str,
    q: &HashMap<String, String>,
    marker: &str,
) -> Value {
    let mut params: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| k.as_str() != "marker")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort();
    params.push(("marker".into(), marker.to_string()));
    let qs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let base = match project {
        Some(p) => format!("{}/{p}", s.v3_url()),
        None => s.v3_url(),
    };
    json!([{"rel": "next", "href": format!("{base}/{path}?{}", qs.join("&"))}])
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The volumes a list shows: the caller's project, or with `all_tenants`
/// (admins) every project or the one `project_id` names.
async fn listed(
    s: &S,
    ctx: &AuthContext,
    q: &HashMap<String, String>,
) -> VolumeResult<Vec<Volume>> {
    let project = project_of(ctx)?;
    authorize(s, ctx, "volume:get_all", &own_target(ctx))?;
    let all = q
        .get("all_tenants")
        .is_some_and(|v| truthy(v) || v.is_empty())
        && is_admin(s, ctx);
    let scope = if all {
        q.get("project_id").cloned()
    } else {
        Some(project)
    };
    let mut items = s
        .read(move |conn| Ok(store::list_volumes(conn, scope.as_deref())?))
        .await?;
    let names = type_names(s).await?;
    // Filters Cinder accepts on volumes.
    for (key, wanted) in q {
        let wanted = wanted.as_str();
        match key.as_str() {
            "name" | "display_name" => items.retain(|v| v.name.as_deref() == Some(wanted)),
            "name~" => items.retain(|v| v.name.as_deref().is_some_and(|n| n.contains(wanted))),
            "status" => items.retain(|v| v.status == wanted),
            "bootable" => {
                let b = truthy(wanted);
                items.retain(|v| v.bootable == b)
            }
            "availability_zone" => items.retain(|v| v.availability_zone == wanted),
            "size" => items.retain(|v| v.size.to_string() == wanted),
            "volume_type" => items.retain(|v| {
                v.volume_type_id == wanted
                    || names.get(&v.volume_type_id).map(String::as_str) == Some(wanted)
            }),
            "metadata" => {
                let parsed = parse_dict(wanted)?;
                items.retain(|v| parsed.iter().all(|(k, val)| v.metadata.get(k) == Some(val)));
            }
            "glance_metadata" | "volume_image_metadata" => {
                let parsed = parse_dict(wanted)?;
                items.retain(|v| {
                    parsed
                        .iter()
                        .all(|(k, val)| v.image_metadata.get(k) == Some(val))
                });
            }
            "multiattach" => {
                let b = truthy(wanted);
                items.retain(|v| v.multiattach == b)
            }
            _ => {}
        }
    }
    let spec = sort_spec(q, SORT_KEYS)?;
    items.sort_by(|a, b| {
        for (key, desc) in &spec {
            let o = compare(&sort_value(a, key), &sort_value(b, key));
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    Ok(items)
}

/// `{'k': 'v'}` as Cinder takes a dict in a query (Python or JSON).
fn parse_dict(text: &str) -> VolumeResult<BTreeMap<String, String>> {
    let json_text = text.replace('\'', "\"");
    match serde_json::from_str::<Value>(&json_text) {
        Ok(Value::Object(map)) => Ok(map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect()),
        _ => Err(bad(format!(
            "Invalid input received: Invalid filter value {text}."
        ))),
    }
}

async fn list_common(
    s: S,
    ctx: &AuthContext,
    q: HashMap<String, String>,
    mv: Mv,
    detail: bool,
    url: super::UrlPrefix,
) -> VolumeResult<Response> {
    let items = listed(&s, ctx, &q).await?;
    let count = items.len();
    let (page_items, more) = page(items, &q, |v| v.id.as_str(), "volumes")?;
    let names = type_names(&s).await?;
    let rendered: Vec<Value> = page_items
        .iter()
        .map(|v| {
            if detail {
                render(&s, ctx, v, &names, mv)
            } else {
                serde_json::to_value(views::VolumeSummary {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    links: s.links(&v.project_id, "volumes", &v.id),
                })
                .unwrap_or(Value::Null)
            }
        })
        .collect();
    let next_marker = page_items.last().filter(|_| more).map(|v| v.id.as_str());
    Ok(list_response(
        &s,
        url.0.as_deref(),
        &q,
        mv,
        ListPage {
            collection: "volumes",
            detail,
            items: rendered,
            next_marker,
            count,
        },
    ))
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list_common(s, &ctx, query_map(q), mv, false, url).await
}

async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list_common(s, &ctx, query_map(q), mv, true, url).await
}

/// `GET /volumes/summary` (3.12; metadata from 3.36).
async fn summary(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    if !mv.at_least(12) {
        return Err(VolumeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    let q = query_map(q);
    let items = listed(&s, &ctx, &q).await?;
    let total_size: i64 = items.iter().map(|v| v.size).sum();
    let mut out = json!({"total_size": total_size, "total_count": items.len()});
    if mv.at_least(36) {
        let mut meta: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in &items {
            for (k, val) in &v.metadata {
                let list = meta.entry(k.clone()).or_default();
                if !list.contains(val) {
                    list.push(val.clone());
                }
            }
        }
        out["metadata"] = json!(meta);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume-summary": out}),
    ))
}
