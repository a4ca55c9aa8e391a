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
use serde::Deserialize;
use serde_json::{Value, json};

use super::backend::Backend;
use super::requests::{self, LooseBool, given, truthy};
use super::volume_list::{page, sort_spec};
use super::volume_metadata::{Change, MetadataOwner, routes_of};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, allows, authorize, empty, is_admin, now_string,
    own_target, project_of, project_target, query_map, views,
};
use crate::db::volume::{self as store, Snapshot};
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

/// A name or description of at most 255 characters.
fn text(key: &str, value: Option<String>) -> VolumeResult<Option<String>> {
    if value.as_ref().is_some_and(|v| v.chars().count() > 255) {
        return Err(bad(format!(
            "Invalid input for field/attribute {key}. Value is too long"
        )));
    }
    Ok(value)
}

/// `POST /v3/snapshots`'s `snapshot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSnapshot {
    /// Required, but `null` is looked up (and not found), as Cinder does.
    #[serde(deserialize_with = "nullable")]
    volume_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    display_description: Option<String>,
    #[serde(default)]
    force: Option<LooseBool>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

/// A required member that may be `null`.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// `PUT /v3/snapshots/{id}`'s `snapshot`: a member given as `null` clears it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSnapshot {
    #[serde(default, deserialize_with = "given")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    display_description: Option<Option<String>>,
}

/// The argument of `os-reset_status` and `os-update_snapshot_status`
/// (other members are ignored, as they always were here).
#[derive(Debug, Deserialize)]
struct StatusArg {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    progress: Option<String>,
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let obj = requests::take(&bytes, "snapshot")?;
    project_of(&ctx)?;
    let req: CreateSnapshot = requests::member("snapshot", obj)?;
    // Cinder looks a null volume_id up, and does not find it (404).
    let volume_id = req
        .volume_id
        .ok_or_else(|| super::volumes::not_found("None"))?;
    let force = req.force.is_some_and(|LooseBool(b)| b);
    let name = match text("name", req.name)? {
        Some(n) => Some(n),
        None => text("display_name", req.display_name)?,
    };
    let description = match text("description", req.description)? {
        Some(d) => Some(d),
        None => text("display_description", req.display_description)?,
    };
    let metadata = requests::metadata(req.metadata.unwrap_or_default())?;
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
    let obj = requests::take(&bytes, "snapshot")?;
    let snap = load_for(&s, &ctx, &id, "volume:update_snapshot").await?;
    let empty_body = obj.is_empty();
    let req: UpdateSnapshot = requests::member("snapshot", obj)?;
    if empty_body {
        return Err(bad(
            "Invalid input for field/attribute snapshot. does not have enough properties",
        ));
    }
    let name = match (req.name, req.display_name) {
        (Some(n), _) => Some(text("name", n)?),
        (None, Some(n)) => Some(text("display_name", n)?),
        (None, None) => None,
    };
    let description = match (req.description, req.display_description) {
        (Some(d), _) => Some(text("description", d)?),
        (None, Some(d)) => Some(text("display_description", d)?),
        (None, None) => None,
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
    let mut req = requests::object(&bytes)?;
    if let Some(arg) = req.remove("os-reset_status") {
        let snap = load_for(
            &s,
            &ctx,
            &id,
            "volume_extension:snapshot_admin_actions:reset_status",
        )
        .await?;
        let arg: StatusArg = requests::action_arg("os-reset_status", arg)?;
        let status = arg.status.ok_or_else(|| bad("Must specify 'status'"))?;
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
    if let Some(arg) = req.remove("os-update_snapshot_status") {
        let snap = load_for(
            &s,
            &ctx,
            &id,
            "snapshot_extension:snapshot_actions:update_snapshot_status",
        )
        .await?;
        let StatusArg { status, progress } =
            requests::action_arg("os-update_snapshot_status", arg)?;
        let status = status.ok_or_else(|| bad("'status' must be specified."))?;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::volume::requests::refused;

    fn create(v: Value) -> VolumeResult<CreateSnapshot> {
        let Value::Object(obj) = v else {
            panic!("an object")
        };
        requests::member("snapshot", obj)
    }

    #[test]
    fn create_takes_force_as_a_boolean_or_any_string() {
        for (given, want) in [
            (json!(true), true),
            (json!("True"), true),
            (json!("on"), true),
            (json!("nonsense"), false),
            (json!(false), false),
        ] {
            let req = create(json!({"volume_id": "v", "force": given})).expect("accepted");
            assert_eq!(req.force, Some(LooseBool(want)));
        }
        assert!(
            refused(create(json!({"volume_id": "v", "force": 1}))).contains("is not a boolean")
        );
        assert_eq!(
            create(json!({"volume_id": null})).expect("null").volume_id,
            None
        );
        assert_eq!(
            refused(create(json!({"name": "n"}))),
            "Invalid input for field/attribute snapshot. 'volume_id' is a required property"
        );
        assert_eq!(
            refused(create(json!({"volume_id": "v", "size": 1}))),
            "Invalid input for field/attribute snapshot. Additional properties are not allowed ('size' was unexpected)"
        );
    }
}
