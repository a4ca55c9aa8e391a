//! Snapshots: a copy of a volume's file (a reflink where the filesystem can,
//! else a sparse copy of its data extents), listed, shown, updated, deleted,
//! with metadata and the admin actions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::backend::Backend;
use super::volume_list::{page, sort_spec};
use super::volume_metadata::{Change, MetadataOwner, routes_of};
use super::volumes::metadata_field;
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, allows, authorize, empty, is_admin, now_string,
    own_target, project_of, project_target, query_map, views,
};
use crate::db::volume::{self as store, Snapshot};
use crate::http::body::{self, Object};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/snapshots", get(list).post(create))
        .route("/v3/snapshots/detail", get(list_detail))
        .route("/v3/snapshots/{id}", get(show).put(update).delete(delete))
        .route("/v3/snapshots/{id}/action", post(action))
        .merge(routes_of::<Snapshots>())
}

fn not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("Snapshot {id} could not be found."))
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

fn parse(bytes: &[u8]) -> VolumeResult<Object> {
    Ok(body::parse_object(bytes)?)
}

/// Loads a snapshot the caller may see (its project's, or any for admins),
/// then checks `rule` on its project.
pub async fn load_for(s: &S, ctx: &AuthContext, id: &str, rule: &str) -> VolumeResult<Snapshot> {
    let wanted = id.to_string();
    let snap = s
        .read(move |conn| Ok(store::get_snapshot(conn, &wanted)?))
        .await?
        .ok_or_else(|| not_found(id))?;
    if !is_admin(s, ctx) && ctx.project_id() != Some(snap.project_id.as_str()) {
        return Err(not_found(id));
    }
    authorize(s, ctx, rule, &project_target(&snap.project_id))?;
    Ok(snap)
}

fn render(s: &S, ctx: &AuthContext, snap: &Snapshot, mv: Mv) -> Value {
    let extended = allows(
        s,
        ctx,
        "volume_extension:extended_snapshot_attributes",
        &project_target(&snap.project_id),
    );
    serde_json::to_value(views::snapshot(snap, mv, extended)).unwrap_or(Value::Null)
}

/// Create and update answer without the extended attributes, as Cinder (its
/// extension decorates only show and detail).
fn render_plain(snap: &Snapshot, mv: Mv) -> Value {
    serde_json::to_value(views::snapshot(snap, mv, false)).unwrap_or(Value::Null)
}

fn text(obj: &Object, key: &str) -> VolumeResult<Option<String>> {
    let value = body::opt_string(obj, key)?;
    if value.as_ref().is_some_and(|v| v.chars().count() > 255) {
        return Err(bad(format!(
            "Invalid input for field/attribute {key}. Value is too long"
        )));
    }
    Ok(value)
}

fn truthy(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "t" | "y" | "on"
    )
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let mut req = parse(&bytes)?;
    let obj = body::take_object(&mut req, "snapshot")?;
    project_of(&ctx)?;
    const ALLOWED: &[&str] = &[
        "volume_id",
        "name",
        "description",
        "display_name",
        "display_description",
        "force",
        "metadata",
    ];
    if let Some(extra) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute snapshot. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    // Cinder looks a null volume_id up, and does not find it (404).
    let volume_id = match obj.get("volume_id") {
        None => {
            return Err(bad(
                "Invalid input for field/attribute snapshot. 'volume_id' is a required property",
            ));
        }
        Some(Value::Null) => return Err(super::volumes::not_found("None")),
        Some(_) => body::opt_string(&obj, "volume_id")?.unwrap_or_default(),
    };
    let force = match obj.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(t)) => truthy(t),
        Some(_) => return Err(bad("Invalid value for 'force'.")),
    };
    let name = match text(&obj, "name")? {
        Some(n) => Some(n),
        None => text(&obj, "display_name")?,
    };
    let description = match text(&obj, "description")? {
        Some(d) => Some(d),
        None => text(&obj, "display_description")?,
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(m) => metadata_field(m)?,
    };
    let snap = create_snapshot(
        &s,
        &ctx,
        NewSnapshot {
            volume_id,
            force: force || mv.at_least(66),
            name,
            description,
            metadata,
        },
    )
    .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"snapshot": render_plain(&snap, mv)}),
    ))
}

/// A snapshot to take, as Cinder's create reads it (and Nova's
/// `os-snapshots` proxy asks for one).
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    pub volume_id: String,
    /// Snapshot an `in-use` volume too (always so from 3.66).
    pub force: bool,
    pub name: Option<String>,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Takes a snapshot for the caller with Cinder's checks: the volume visible
/// to the caller (`volume:get`), `volume:create_snapshot` on its project,
/// then its status and the quota (in `ops::create_snapshot`).
pub async fn create_snapshot(s: &S, ctx: &AuthContext, req: NewSnapshot) -> VolumeResult<Snapshot> {
    let project = project_of(ctx)?;
    let volume = super::volumes::load_for(s, ctx, &req.volume_id, "volume:get").await?;
    authorize(
        s,
        ctx,
        "volume:create_snapshot",
        &project_target(&volume.project_id),
    )?;
    let now = now_string();
    let snap = Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project,
        user_id: ctx.user_id.clone(),
        volume_id: volume.id.clone(),
        name: req.name,
        description: req.description,
        size: volume.size,
        status: "creating".into(),
        volume_type_id: volume.volume_type_id.clone(),
        metadata: req.metadata,
        progress: "0%".into(),
        created_at: now.clone(),
        updated_at: Some(now),
    };
    super::ops::create_snapshot(s, snap.clone(), req.force).await?;
    Ok(snap)
}

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
];

fn sort_value(sn: &Snapshot, key: &str) -> Value {
    match key {
        "id" => json!(sn.id),
        "name" | "display_name" => json!(sn.name.clone().unwrap_or_default()),
        "status" => json!(sn.status),
        "size" => json!(sn.size),
        "created_at" => json!(sn.created_at),
        "updated_at" => json!(sn.updated_at),
        "volume_id" => json!(sn.volume_id),
        "project_id" => json!(sn.project_id),
        _ => Value::Null,
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
    let project = project_of(ctx)?;
    authorize(
        s.as_ref(),
        ctx,
        "volume:get_all_snapshots",
        &own_target(ctx),
    )?;
    let all = q
        .get("all_tenants")
        .is_some_and(|v| v.is_empty() || truthy(v))
        && is_admin(&s, ctx);
    let scope = if all {
        q.get("project_id").cloned()
    } else {
        Some(project.clone())
    };
    let mut items = s
        .read(move |conn| Ok(store::list_snapshots(conn, scope.as_deref())?))
        .await?;
    for (key, wanted) in &q {
        let wanted = wanted.as_str();
        match key.as_str() {
            "name" | "display_name" => items.retain(|x| x.name.as_deref() == Some(wanted)),
            "status" => items.retain(|x| x.status == wanted),
            "volume_id" => items.retain(|x| x.volume_id == wanted),
            "metadata" => {
                let parsed: BTreeMap<String, String> =
                    serde_json::from_str::<BTreeMap<String, Value>>(&wanted.replace('\'', "\""))
                        .map_err(|_| bad(format!("Invalid filter value {wanted}.")))?
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect();
                items.retain(|x| parsed.iter().all(|(k, v)| x.metadata.get(k) == Some(v)));
            }
            _ => {}
        }
    }
    let spec = sort_spec(&q, SORT_KEYS)?;
    items.sort_by(|a, b| {
        for (key, desc) in &spec {
            let (x, y) = (sort_value(a, key), sort_value(b, key));
            let o = x.to_string().cmp(&y.to_string());
            let o = match (&x, &y) {
                (Value::Number(p), Value::Number(q)) => {
                    p.as_i64().unwrap_or(0).cmp(&q.as_i64().unwrap_or(0))
                }
                _ => o,
            };
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let count = items.len();
    let (page_items, more) = page(items, &q, |x| x.id.as_str(), "snapshots")?;
    let rendered: Vec<Value> = page_items
        .iter()
        .map(|x| {
            let mut v = render(&s, ctx, x, mv);
            if !detail && let Value::Object(map) = &mut v {
                map.retain(|k, _| !k.starts_with("os-extended-snapshot-attributes"));
            }
            v
        })
        .collect();
    let next_marker = page_items.last().filter(|_| more).map(|x| x.id.as_str());
    Ok(super::volume_list::list_response(
        &s,
        url.0.as_deref(),
        &q,
        mv,
        super::volume_list::ListPage {
            collection: "snapshots",
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

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let snap = load_for(&s, &ctx, &id, "volume:get_snapshot").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"snapshot": render(&s, &ctx, &snap, mv)}),
    ))
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let mut req = parse(&bytes)?;
    let obj = body::take_object(&mut req, "snapshot")?;
    let snap = load_for(&s, &ctx, &id, "volume:update_snapshot").await?;
    const ALLOWED: &[&str] = &["name", "description", "display_name", "display_description"];
    if let Some(extra) = obj.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute snapshot. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    if obj.is_empty() {
        return Err(bad(
            "Invalid input for field/attribute snapshot. does not have enough properties",
        ));
    }
    let name = if obj.contains_key("name") {
        Some(text(&obj, "name")?)
    } else if obj.contains_key("display_name") {
        Some(text(&obj, "display_name")?)
    } else {
        None
    };
    let description = if obj.contains_key("description") {
        Some(text(&obj, "description")?)
    } else if obj.contains_key("display_description") {
        Some(text(&obj, "display_description")?)
    } else {
        None
    };
    let sid = snap.id.clone();
    let updated = s
        .write(move |tx| {
            let mut snap = store::get_snapshot(tx, &sid)?.ok_or_else(|| not_found(&sid))?;
            if let Some(n) = name {
                snap.name = n;
            }
            if let Some(d) = description {
                snap.description = d;
            }
            snap.updated_at = Some(now_string());
            store::put_snapshot(tx, &snap)?;
            Ok(snap)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"snapshot": render_plain(&updated, mv)}),
    ))
}

/// `deleting` now; the file, then the row, in the background.
pub async fn start_delete(s: &S, id: &str, force: bool) -> VolumeResult<()> {
    let sid = id.to_string();
    s.write(move |tx| {
        let mut snap = store::get_snapshot(tx, &sid)?.ok_or_else(|| not_found(&sid))?;
        if !force && !["available", "error", "error_deleting"].contains(&snap.status.as_str()) {
            return Err(bad(format!(
                "Invalid snapshot: Volume Snapshot status must be available or error, but current status is: {}.",
                snap.status
            )));
        }
        snap.status = "deleting".into();
        snap.updated_at = Some(now_string());
        store::put_snapshot(tx, &snap)?;
        Ok(())
    })
    .await?;
    let worker = s.clone();
    let sid = id.to_string();
    tokio::spawn(async move {
        let path = worker.backend.snapshot_path(&sid);
        let removed = tokio::task::spawn_blocking(move || Backend::remove(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let ok = removed.is_ok();
        let result = worker
            .write(move |tx| {
                if ok {
                    store::delete_snapshot(tx, &sid)?;
                } else if let Some(mut snap) = store::get_snapshot(tx, &sid)? {
                    snap.status = "error_deleting".into();
                    store::put_snapshot(tx, &snap)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "snapshot delete failed");
        }
    });
    Ok(())
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let snap = load_for(&s, &ctx, &id, "volume:delete_snapshot").await?;
    start_delete(&s, &snap.id, false).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

const RESET_STATUSES: &[&str] = &[
    "available",
    "error",
    "creating",
    "deleting",
    "error_deleting",
];

async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = parse(&bytes)?;
    if let Some(arg) = req.get("os-reset_status") {
        let snap = load_for(
            &s,
            &ctx,
            &id,
            "volume_extension:snapshot_admin_actions:reset_status",
        )
        .await?;
        let status = arg
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad("Must specify 'status'"))?;
        if !RESET_STATUSES.contains(&status.as_str()) {
            return Err(bad(format!(
                "Invalid input received: Invalid status {status}."
            )));
        }
        let sid = snap.id.clone();
        s.write(move |tx| {
            let mut snap = store::get_snapshot(tx, &sid)?.ok_or_else(|| not_found(&sid))?;
            snap.status = status;
            snap.updated_at = Some(now_string());
            store::put_snapshot(tx, &snap)?;
            Ok(())
        })
        .await?;
        return Ok(empty(StatusCode::ACCEPTED));
    }
    if req.contains_key("os-force_delete") {
        let snap = load_for(
            &s,
            &ctx,
            &id,
            "volume_extension:snapshot_admin_actions:force_delete",
        )
        .await?;
        start_delete(&s, &snap.id, true).await?;
        return Ok(empty(StatusCode::ACCEPTED));
    }
    if let Some(arg) = req.get("os-update_snapshot_status") {
        let snap = load_for(
            &s,
            &ctx,
            &id,
            "snapshot_extension:snapshot_actions:update_snapshot_status",
        )
        .await?;
        let status = arg
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad("'status' must be specified."))?;
        let progress = arg
            .get("progress")
            .and_then(Value::as_str)
            .map(str::to_string);
        let sid = snap.id.clone();
        s.write(move |tx| {
            let mut snap = store::get_snapshot(tx, &sid)?.ok_or_else(|| not_found(&sid))?;
            snap.status = status;
            if let Some(p) = progress {
                snap.progress = p;
            }
            store::put_snapshot(tx, &snap)?;
            Ok(())
        })
        .await?;
        return Ok(empty(StatusCode::ACCEPTED));
    }
    Err(bad("There is no such action"))
}

// ---------------------------------------------------------------- metadata

/// Snapshots as metadata owners (the handlers are `volume_metadata`'s).
struct Snapshots;

impl MetadataOwner for Snapshots {
    const PATH: &'static str = "/v3/snapshots";
    const NOUN: &'static str = "Snapshot";
    const GET: &'static str = "volume:get_snapshot_metadata";
    const MERGE: &'static str = "volume:update_snapshot_metadata";
    const UPDATE: &'static str = "volume:update_snapshot_metadata";
    const DELETE: &'static str = "volume:delete_snapshot_metadata";

    async fn load(
        s: &S,
        ctx: &AuthContext,
        id: &str,
        rule: &'static str,
    ) -> VolumeResult<(String, BTreeMap<String, String>)> {
        let snap = load_for(s, ctx, id, rule).await?;
        Ok((snap.id, snap.metadata))
    }

    async fn write(s: &S, id: String, change: Change) -> VolumeResult<BTreeMap<String, String>> {
        s.write(move |tx| {
            let mut snap = store::get_snapshot(tx, &id)?.ok_or_else(|| not_found(&id))?;
            change(&mut snap.metadata)?;
            if snap.metadata.len() > 128 {
                return Err(bad("Invalid input received: at most 128 metadata items."));
            }
            store::put_snapshot(tx, &snap)?;
            Ok(snap.metadata)
        })
        .await
    }
}
