//! Backup list (with filters, sort and pagination), show and update.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::backup_common::{bad, detail, load_for, not_found, summary, text};
use super::requests::{self, given, present, truthy};
use super::volume_list::{page, sort_spec};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, authorize, is_admin, now_string, own_target,
    project_of, query_map,
};
use crate::db::volume_records::{self as bstore, Backup};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

// ------------------------------------------------------------ list, show

const SORT_KEYS: &[&str] = &[
    "id",
    "name",
    "display_name",
    "status",
    "size",
    "created_at",
    "updated_at",
    "volume_id",
    "project_id",
    "data_timestamp",
];

fn sort_value(b: &Backup, key: &str) -> Value {
    match key {
        "id" => json!(b.id),
        "name" | "display_name" => json!(b.name.clone().unwrap_or_default()),
        "status" => json!(b.status),
        "size" => json!(b.size),
        "created_at" => json!(b.created_at),
        "updated_at" => json!(b.updated_at),
        "volume_id" => json!(b.volume_id),
        "project_id" => json!(b.project_id),
        "data_timestamp" => json!(b.data_timestamp),
        _ => Value::Null,
    }
}

async fn list_common(
    s: S,
    ctx: &AuthContext,
    q: HashMap<String, String>,
    mv: Mv,
    is_detail: bool,
    url: super::UrlPrefix,
) -> VolumeResult<Response> {
    let project = project_of(ctx)?;
    authorize(&s, ctx, "backup:get_all", &own_target(ctx))?;
    let all = q
        .get("all_tenants")
        .is_some_and(|v| v.is_empty() || truthy(v))
        && is_admin(&s, ctx);
    let scope = if all {
        q.get("project_id").cloned()
    } else {
        Some(project)
    };
    let (mut items, parents) = s
        .read(move |conn| {
            let items = bstore::list_backups(conn, scope.as_deref())?;
            let parents: std::collections::HashSet<String> = bstore::list_backups(conn, None)?
                .into_iter()
                .filter_map(|b| b.parent_id)
                .collect();
            Ok((items, parents))
        })
        .await?;
    for (key, wanted) in &q {
        let wanted = wanted.as_str();
        match key.as_str() {
            "name" | "display_name" => items.retain(|x| x.name.as_deref() == Some(wanted)),
            "status" => items.retain(|x| x.status == wanted),
            "volume_id" => items.retain(|x| x.volume_id == wanted),
            _ => {}
        }
    }
    let spec = sort_spec(&q, SORT_KEYS)?;
    items.sort_by(|a, b| {
        for (key, desc) in &spec {
            let (x, y) = (sort_value(a, key), sort_value(b, key));
            let o = match (&x, &y) {
                (Value::Number(p), Value::Number(q)) => {
                    p.as_i64().unwrap_or(0).cmp(&q.as_i64().unwrap_or(0))
                }
                _ => x.to_string().cmp(&y.to_string()),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let count = items.len();
    let (page_items, more) = page(items, &q, |x| x.id.as_str(), "backups")?;
    let rendered: Vec<Value> = page_items
        .iter()
        .map(|b| {
            if is_detail {
                detail(&s, ctx, b, parents.contains(&b.id), mv)
            } else {
                let mut v = summary(&s, b, mv);
                if let Value::Object(map) = &mut v {
                    map.remove("metadata");
                }
                v
            }
        })
        .collect();
    let next_marker = page_items.last().filter(|_| more).map(|x| x.id.as_str());
    Ok(super::volume_list::list_response(
        &s,
        url.0.as_deref(),
        &q,
        mv,
        super::volume_list::ListPage {
            collection: "backups",
            detail: is_detail,
            items: rendered,
            next_marker,
            count,
        },
    ))
}

pub(super) async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list_common(s, &ctx, query_map(q), mv, false, url).await
}

pub(super) async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list_common(s, &ctx, query_map(q), mv, true, url).await
}

pub(super) async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let b = load_for(&s, &ctx, &id, "backup:get").await?;
    let bid = b.id.clone();
    let dependents = s
        .read(move |conn| Ok(bstore::has_dependents(conn, &bid)?))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"backup": detail(&s, &ctx, &b, dependents, mv)}),
    ))
}

/// `PUT /backups/{id}`'s `backup`: a name or description given as `null`
/// clears it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBackup {
    #[serde(default, deserialize_with = "given")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<BTreeMap<String, String>>,
}

/// `PUT /backups/{id}` (3.9): name, description, and metadata from 3.43.
pub(super) async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    if !mv.at_least(9) {
        return Err(VolumeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    let obj = requests::take(&bytes, "backup")?;
    let b = load_for(&s, &ctx, &id, "backup:update").await?;
    let req: UpdateBackup = requests::member("backup", obj)?;
    // `metadata` is a member from 3.43.
    if req.metadata.is_some() && !mv.at_least(43) {
        return Err(bad(
            "Invalid input for field/attribute backup. Additional properties are not allowed ('metadata' was unexpected)",
        ));
    }
    let name = req.name.map(|n| text("name", n)).transpose()?;
    let description = req
        .description
        .map(|d| text("description", d))
        .transpose()?;
    let metadata = req.metadata.map(requests::metadata).transpose()?;
    let bid = b.id.clone();
    let updated = s
        .write(move |tx| {
            let mut b = bstore::get_backup(tx, &bid)?.ok_or_else(|| not_found(&bid))?;
            if let Some(n) = name {
                b.name = n;
            }
            if let Some(d) = description {
                b.description = d;
            }
            if let Some(m) = metadata {
                b.metadata = m;
            }
            b.updated_at = Some(now_string());
            bstore::put_backup(tx, &b)?;
            Ok(b)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"backup": summary(&s, &updated, mv)}),
    ))
}
