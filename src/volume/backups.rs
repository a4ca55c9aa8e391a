//! Backups: full and incremental, of a volume or of one of its snapshots,
//! compressed and sparse-aware in the backup directory (`backup_files`);
//! restore to a new or an existing volume; export and import of the record;
//! the `backups` and `backup_gigabytes` quotas; the admin actions.
//!
//! Status machine as Cinder's: a backup is `creating` (its volume
//! `backing-up`, or its snapshot) until the data is written, then
//! `available` (or `error` with a `fail_reason`); `restoring` while it is
//! written to a volume (`restoring-backup`, then `available` or
//! `error_restoring`); `deleting` until its data and row are gone. Each step
//! is one transaction; a crash between two leaves a transitional status that
//! [`reconcile`] settles at start-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Value, json};

use super::backup_files::{BackupFiles, StoredData};
use super::volumes::{metadata_field, page, sort_spec};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, allows, authorize, empty, is_admin, now_string,
    own_target, project_of, project_target, query_map,
};
use crate::db::volume::{self as store, Volume};
use crate::db::volume_records::{self as bstore, Backup};
use crate::http::body::{self, Object};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

/// What export_record names as the service that holds the data.
const BACKUP_SERVICE: &str = "cinder.backup.drivers.posix.PosixBackupDriver";

/// The largest exported record accepted back (base64 text).
const MAX_RECORD: usize = 64 * 1024;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/backups", get(list).post(create))
        .route("/v3/backups/detail", get(list_detail))
        .route("/v3/backups/import_record", post(import_record))
        .route("/v3/backups/{id}", get(show).put(update).delete(delete))
        .route("/v3/backups/{id}/restore", post(restore))
        .route("/v3/backups/{id}/export_record", get(export_record))
        .route("/v3/backups/{id}/action", post(action))
}

fn not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("Backup {id} could not be found."))
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
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

/// Cinder's strict boolean (`strutils.bool_from_string(strict=True)`).
fn flag(obj: &Object, key: &str) -> VolumeResult<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(t)) => match t.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "t" | "y" | "on" => Ok(true),
            "0" | "false" | "no" | "f" | "n" | "off" => Ok(false),
            _ => Err(bad(format!("Invalid value for '{key}'."))),
        },
        Some(_) => Err(bad(format!("Invalid value for '{key}'."))),
    }
}

fn truthy(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "t" | "y" | "on"
    )
}

async fn load_for(s: &S, ctx: &AuthContext, id: &str, rule: &str) -> VolumeResult<Backup> {
    let wanted = id.to_string();
    let b = s
        .read(move |conn| Ok(bstore::get_backup(conn, &wanted)?))
        .await?
        .ok_or_else(|| not_found(id))?;
    if !is_admin(s, ctx) && ctx.project_id() != Some(b.project_id.as_str()) {
        return Err(not_found(id));
    }
    authorize(s, ctx, rule, &project_target(&b.project_id))?;
    Ok(b)
}

// ------------------------------------------------------------------ views

#[derive(Serialize)]
struct Summary<'a> {
    id: &'a str,
    name: Option<&'a str>,
    links: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Detail<'a> {
    id: &'a str,
    status: &'a str,
    size: i64,
    object_count: i64,
    availability_zone: &'a str,
    container: Option<&'a str>,
    created_at: &'a str,
    updated_at: Option<&'a str>,
    name: Option<&'a str>,
    description: Option<&'a str>,
    fail_reason: Option<&'a str>,
    volume_id: &'a str,
    links: Value,
    is_incremental: bool,
    has_dependent_backups: bool,
    snapshot_id: Option<&'a str>,
    data_timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(
        rename = "os-backup-project-attr:project_id",
        skip_serializing_if = "Option::is_none"
    )]
    project_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

fn summary(s: &S, b: &Backup, mv: Mv) -> Value {
    serde_json::to_value(Summary {
        id: &b.id,
        name: b.name.as_deref(),
        links: s.links(&b.project_id, "backups", &b.id),
        metadata: mv.at_least(43).then_some(&b.metadata),
    })
    .unwrap_or(Value::Null)
}

fn detail(s: &S, ctx: &AuthContext, b: &Backup, dependents: bool, mv: Mv) -> Value {
    let attrs = allows(
        s,
        ctx,
        "backup:backup_project_attribute",
        &project_target(&b.project_id),
    );
    serde_json::to_value(Detail {
        id: &b.id,
        status: &b.status,
        size: b.size,
        object_count: b.object_count,
        availability_zone: &b.availability_zone,
        container: b.container.as_deref(),
        created_at: &b.created_at,
        updated_at: b.updated_at.as_deref(),
        name: b.name.as_deref(),
        description: b.description.as_deref(),
        fail_reason: b.fail_reason.as_deref(),
        volume_id: &b.volume_id,
        links: s.links(&b.project_id, "backups", &b.id),
        is_incremental: b.is_incremental,
        has_dependent_backups: dependents,
        snapshot_id: b.snapshot_id.as_deref(),
        data_timestamp: &b.data_timestamp,
        metadata: mv.at_least(43).then_some(&b.metadata),
        project_id: (mv.at_least(18) && attrs).then_some(b.project_id.as_str()),
        user_id: (mv.at_least(56) && attrs).then_some(b.user_id.as_str()),
    })
    .unwrap_or(Value::Null)
}

// ----------------------------------------------------------------- quotas

/// Refuses a backup that would take the project past `backups` or
/// `backup_gigabytes` (413, Cinder's wording).
fn enforce_backup_quota(conn: &Connection, project: &str, gigabytes: i64) -> VolumeResult<()> {
    let limits = super::ops::effective_limits(conn, project)?;
    let (count, used_gb) = bstore::usage(conn, project)?;
    let limit = limits.get("backups").copied().unwrap_or(-1);
    if limit >= 0 && count + 1 > limit {
        return Err(VolumeError::OverLimit(format!(
            "BackupLimitExceeded: Maximum number of backups allowed ({limit}) exceeded"
        )));
    }
    let limit = limits.get("backup_gigabytes").copied().unwrap_or(-1);
    if limit >= 0 && used_gb + gigabytes > limit {
        return Err(VolumeError::OverLimit(format!(
            "VolumeBackupSizeExceedsAvailableQuota: Requested backup exceeds allowed Backup gigabytes quota. Requested {gigabytes}G, quota is {limit}G and {used_gb}G has been consumed."
        )));
    }
    Ok(())
}

// ----------------------------------------------------------------- create

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let mut req = body::parse_object(&bytes)?;
    let obj = body::take_object(&mut req, "backup")?;
    let project = project_of(&ctx)?;
    let mut allowed = vec![
        "volume_id",
        "container",
        "description",
        "incremental",
        "force",
        "name",
        "snapshot_id",
    ];
    if mv.at_least(43) {
        allowed.push("metadata");
    }
    if mv.at_least(51) {
        allowed.push("availability_zone");
    }
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute backup. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let volume_id = body::opt_string(&obj, "volume_id")?.ok_or_else(|| {
        bad("Invalid input for field/attribute backup. 'volume_id' is a required property")
    })?;
    let name = text(&obj, "name")?;
    let description = text(&obj, "description")?;
    let container = text(&obj, "container")?;
    let snapshot_id = body::opt_string(&obj, "snapshot_id")?;
    let incremental = flag(&obj, "incremental")?;
    let force = flag(&obj, "force")?;
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(m) => metadata_field(m)?,
    };
    if let Some(az) = text(&obj, "availability_zone")?
        && az != "nova"
    {
        return Err(bad(format!(
            "Invalid input received: Availability zone '{az}' is invalid."
        )));
    }
    let volume = super::volumes::load_for(&s, &ctx, &volume_id, "volume:get").await?;
    authorize(
        &s,
        &ctx,
        "backup:create",
        &project_target(&volume.project_id),
    )?;
    let now = now_string();
    let id = uuid::Uuid::new_v4().to_string();
    let record = Backup {
        id: id.clone(),
        project_id: project,
        user_id: ctx.user_id.clone(),
        volume_id: volume.id.clone(),
        snapshot_id: snapshot_id.clone(),
        name,
        description,
        status: "creating".into(),
        size: volume.size,
        availability_zone: "nova".into(),
        container: Some(container.unwrap_or_else(|| "backups".into())),
        is_incremental: incremental,
        data_id: id.clone(),
        data_timestamp: now.clone(),
        metadata,
        volume_metadata: volume.metadata.clone(),
        volume_image_metadata: volume.image_metadata.clone(),
        bootable: volume.bootable,
        created_at: now.clone(),
        updated_at: Some(now),
        ..Backup::default()
    };
    let (created, previous) = s
        .write(move |tx| {
            let mut b = record;
            let mut v = store::get_volume(tx, &b.volume_id)?
                .ok_or_else(|| super::volumes::not_found(&b.volume_id))?;
            let previous = v.status.clone();
            if let Some(sid) = &b.snapshot_id {
                let mut snap = store::get_snapshot(tx, sid)?.ok_or_else(|| {
                    VolumeError::NotFound(format!("Snapshot {sid} could not be found."))
                })?;
                if snap.volume_id != v.id {
                    return Err(bad(format!(
                        "Invalid volume: Volume {} does not match with snapshot.volume_id {}.",
                        v.id, snap.volume_id
                    )));
                }
                if snap.status != "available" {
                    return Err(bad(format!(
                        "Invalid snapshot: Snapshot to be backed up must be available, but the current status is \"{}\".",
                        snap.status
                    )));
                }
                b.data_timestamp = snap.created_at.clone();
                snap.status = "backing-up".into();
                store::put_snapshot(tx, &snap)?;
            } else if !["available", "in-use"].contains(&v.status.as_str()) {
                return Err(bad(format!(
                    "Invalid volume: Volume to be backed up must be available or in-use, but the current status is \"{}\".",
                    v.status
                )));
            } else if v.status == "in-use" && !force {
                return Err(bad(
                    "Invalid volume: Backing up an in-use volume must use the force flag.",
                ));
            }
            enforce_backup_quota(tx, &b.project_id, v.size)?;
            if b.is_incremental {
                let snapshot_time = b.snapshot_id.as_ref().map(|_| b.data_timestamp.clone());
                let parent = bstore::backups_of_volume(tx, &v.id)?
                    .into_iter()
                    .filter(|p| p.project_id == b.project_id && p.status == "available")
                    .filter(|p| snapshot_time.as_ref().is_none_or(|t| p.data_timestamp < *t))
                    .max_by(|x, y| x.data_timestamp.cmp(&y.data_timestamp))
                    .ok_or_else(|| {
                        bad("Invalid backup: No backups available to do an incremental backup.")
                    })?;
                b.parent_id = Some(parent.id);
            }
            if b.snapshot_id.is_none() {
                v.status = "backing-up".into();
                v.updated_at = Some(now_string());
                store::put_volume(tx, &v)?;
            }
            b.volume_previous_status = Some(previous.clone());
            bstore::put_backup(tx, &b)?;
            Ok((b, previous))
        })
        .await?;
    let worker = s.clone();
    let job = created.clone();
    tokio::spawn(async move { run_backup(worker, job, previous).await });
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"backup": summary(&s, &created, mv)}),
    ))
}

/// Writes the backup's data, then records `available` (or `error`) and
/// gives the volume (or snapshot) its status back.
async fn run_backup(s: S, b: Backup, previous: String) {
    let files = s.backups.clone();
    let backend = s.backend.clone();
    let parent_data = match &b.parent_id {
        Some(pid) => {
            let pid = pid.clone();
            s.read(move |conn| Ok(bstore::get_backup(conn, &pid)?.map(|p| p.data_id)))
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    let job = b.clone();
    let in_use = previous == "in-use";
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<(i64, bool)> {
        let parent = match &parent_data {
            Some(data) => Some(files.manifest(data)?),
            None => None,
        };
        // An in-use volume is copied first (a reflink where the filesystem
        // can), so the backup reads one point in time.
        let (src, temp) = match &job.snapshot_id {
            Some(sid) => (backend.snapshot_path(sid), None),
            None if in_use => {
                let temp = backend
                    .dir
                    .join(format!("backup-source-{}.partial", job.id));
                super::backend::clone_file(&backend.volume_path(&job.volume_id), &temp)?;
                (temp.clone(), Some(temp))
            }
            None => (backend.volume_path(&job.volume_id), None),
        };
        let result = files.write(&src, &job.data_id, parent.as_ref());
        if let Some(temp) = temp {
            let _ = std::fs::remove_file(temp);
        }
        let (manifest, stored) = result?;
        Ok((stored as i64, manifest.chunks.is_empty()))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let outcome = match &written {
        Ok((count, _)) => Ok(*count),
        Err(e) => {
            tracing::error!(backup = %b.id, error = %e, "backup failed");
            Err(e.to_string())
        }
    };
    let recorded = s
        .write(move |tx| {
            if let Some(mut current) = bstore::get_backup(tx, &b.id)?
                && current.status == "creating"
            {
                match &outcome {
                    Ok(count) => {
                        current.status = "available".into();
                        current.object_count = *count;
                    }
                    Err(why) => {
                        current.status = "error".into();
                        current.fail_reason = Some(why.clone());
                    }
                }
                current.updated_at = Some(now_string());
                bstore::put_backup(tx, &current)?;
            }
            give_back(tx, &b, &previous)?;
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "cannot record a backup's status");
    }
}

/// The volume (or snapshot) a backup was taken from leaves `backing-up`.
fn give_back(tx: &Connection, b: &Backup, previous: &str) -> VolumeResult<()> {
    match &b.snapshot_id {
        Some(sid) => {
            if let Some(mut snap) = store::get_snapshot(tx, sid)?
                && snap.status == "backing-up"
            {
                snap.status = "available".into();
                store::put_snapshot(tx, &snap)?;
            }
        }
        None => {
            if let Some(mut v) = store::get_volume(tx, &b.volume_id)?
                && v.status == "backing-up"
            {
                v.status = if previous == "in-use" {
                    "in-use"
                } else {
                    "available"
                }
                .into();
                v.updated_at = Some(now_string());
                store::put_volume(tx, &v)?;
            }
        }
    }
    Ok(())
}

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
    Ok(super::volumes::list_response(
        &s,
        url.0.as_deref(),
        &q,
        mv,
        super::volumes::ListPage {
            collection: "backups",
            detail: is_detail,
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

/// `PUT /backups/{id}` (3.9): name, description, and metadata from 3.43.
async fn update(
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
    let mut req = body::parse_object(&bytes)?;
    let obj = body::take_object(&mut req, "backup")?;
    let b = load_for(&s, &ctx, &id, "backup:update").await?;
    let mut allowed = vec!["name", "description"];
    if mv.at_least(43) {
        allowed.push("metadata");
    }
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute backup. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let name = if obj.contains_key("name") {
        Some(text(&obj, "name")?)
    } else {
        None
    };
    let description = if obj.contains_key("description") {
        Some(text(&obj, "description")?)
    } else {
        None
    };
    let metadata = match obj.get("metadata") {
        None => None,
        Some(m) => Some(metadata_field(m)?),
    };
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

// ----------------------------------------------------------------- delete

/// `deleting` now; the data (unless another record shares it), then the
/// row, in the background.
async fn start_delete(s: &S, id: &str, force: bool) -> VolumeResult<()> {
    let bid = id.to_string();
    s.write(move |tx| {
        let mut b = bstore::get_backup(tx, &bid)?.ok_or_else(|| not_found(&bid))?;
        if !force && !["available", "error"].contains(&b.status.as_str()) {
            return Err(bad(
                "Invalid backup: Backup status must be available or error",
            ));
        }
        if force && ["creating", "restoring"].contains(&b.status.as_str()) {
            return Err(bad(format!(
                "Invalid backup: Backup status must be available or error or error_deleting, not {}: its data is being used.",
                b.status
            )));
        }
        if bstore::has_dependents(tx, &b.id)? {
            return Err(bad(
                "Invalid backup: Incremental backups exist for this backup.",
            ));
        }
        b.status = "deleting".into();
        b.updated_at = Some(now_string());
        bstore::put_backup(tx, &b)?;
        Ok(())
    })
    .await?;
    let worker = s.clone();
    let bid = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = finish_delete(&worker, &bid).await {
            tracing::error!(backup = %bid, error = %e, "backup delete failed");
            let bid2 = bid.clone();
            let _ = worker
                .write(move |tx| {
                    if let Some(mut b) = bstore::get_backup(tx, &bid2)? {
                        b.status = "error_deleting".into();
                        bstore::put_backup(tx, &b)?;
                    }
                    Ok(())
                })
                .await;
        }
    });
    Ok(())
}

/// Removes a deleting backup's data (when no other record shares it), then
/// its row.
async fn finish_delete(s: &VolumeState, id: &str) -> VolumeResult<()> {
    let bid = id.to_string();
    let data = s
        .read(move |conn| {
            let Some(b) = bstore::get_backup(conn, &bid)? else {
                return Ok(None);
            };
            let shared = bstore::data_users(conn, &b.data_id)? > 1;
            Ok(Some((b.data_id, shared)))
        })
        .await?;
    let Some((data_id, shared)) = data else {
        return Ok(());
    };
    if !shared {
        let files = s.backups.clone();
        tokio::task::spawn_blocking(move || files.remove(&data_id))
            .await
            .map_err(|e| VolumeError::Io(std::io::Error::other(e)))??;
    }
    let bid = id.to_string();
    s.write(move |tx| {
        bstore::delete_backup(tx, &bid)?;
        Ok(())
    })
    .await
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let b = load_for(&s, &ctx, &id, "backup:delete").await?;
    start_delete(&s, &b.id, false).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = body::parse_object(&bytes)?;
    if let Some(arg) = req.get("os-reset_status") {
        let b = load_for(
            &s,
            &ctx,
            &id,
            "volume_extension:backup_admin_actions:reset_status",
        )
        .await?;
        let status = arg
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| bad("Must specify 'status'"))?;
        if !["available", "error"].contains(&status.as_str()) {
            return Err(bad(format!(
                "Invalid input for field/attribute status. Value: {status}. '{status}' is not one of ['available', 'error']"
            )));
        }
        let bid = b.id.clone();
        s.write(move |tx| {
            let mut b = bstore::get_backup(tx, &bid)?.ok_or_else(|| not_found(&bid))?;
            b.status = status;
            b.updated_at = Some(now_string());
            bstore::put_backup(tx, &b)?;
            Ok(())
        })
        .await?;
        return Ok(empty(StatusCode::ACCEPTED));
    }
    if req.contains_key("os-force_delete") {
        let b = load_for(
            &s,
            &ctx,
            &id,
            "volume_extension:backup_admin_actions:force_delete",
        )
        .await?;
        start_delete(&s, &b.id, true).await?;
        return Ok(empty(StatusCode::ACCEPTED));
    }
    Err(bad("There is no such action"))
}

// ---------------------------------------------------------------- restore

async fn restore(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let mut req = body::parse_object(&bytes)?;
    let obj = body::take_object(&mut req, "restore")?;
    if let Some(extra) = obj
        .keys()
        .find(|k| !["volume_id", "name"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "Invalid input for field/attribute restore. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let b = load_for(&s, &ctx, &id, "backup:restore").await?;
    let target = body::opt_string(&obj, "volume_id")?;
    let name = text(&obj, "name")?;
    let project = project_of(&ctx)?;
    if let Some(vid) = &target {
        super::volumes::load_for(&s, &ctx, vid, "volume:get").await?;
    }
    let now = now_string();
    let new_volume = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project,
        user_id: ctx.user_id.clone(),
        name: Some(name.unwrap_or_else(|| format!("restore_backup_{}", b.id))),
        description: Some("auto-created_from_restore_from_backup".into()),
        size: b.size,
        status: "restoring-backup".into(),
        attach_status: "detached".into(),
        availability_zone: "nova".into(),
        volume_type_id: store::DEFAULT_TYPE_ID.into(),
        created_at: now.clone(),
        updated_at: Some(now),
        ..Volume::default()
    };
    let backend = s.backend.clone();
    let bid = b.id.clone();
    let (volume, is_new) = s
        .write(move |tx| {
            let mut b = bstore::get_backup(tx, &bid)?.ok_or_else(|| not_found(&bid))?;
            if b.status != "available" {
                return Err(bad("Invalid backup: Backup status must be available"));
            }
            let (mut v, is_new) = match &target {
                Some(vid) => {
                    let v = store::get_volume(tx, vid)?
                        .ok_or_else(|| super::volumes::not_found(vid))?;
                    if v.status != "available" {
                        return Err(bad(
                            "Invalid volume: Volume to be restored to must be available",
                        ));
                    }
                    if b.size > v.size {
                        return Err(bad(format!(
                            "Invalid volume: volume size {} is too small to restore backup of size {}.",
                            v.size, b.size
                        )));
                    }
                    (v, false)
                }
                None => {
                    let v = new_volume;
                    let type_name = store::get_type(tx, &v.volume_type_id)?
                        .map(|t| t.name)
                        .unwrap_or_default();
                    super::ops::enforce_quota(tx, &v.project_id, &type_name, 1, 0, v.size)?;
                    if let Err(why) = super::ops::backend_fits(tx, &backend, v.size, 0)? {
                        return Err(bad(format!("Invalid volume: {why}")));
                    }
                    (v, true)
                }
            };
            v.status = "restoring-backup".into();
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
            b.status = "restoring".into();
            b.restore_volume_id = Some(v.id.clone());
            b.updated_at = Some(now_string());
            bstore::put_backup(tx, &b)?;
            Ok((v, is_new))
        })
        .await?;
    let worker = s.clone();
    let (job, vid, size) = (b.clone(), volume.id.clone(), volume.size);
    tokio::spawn(async move { run_restore(worker, job, vid, size, is_new).await });
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"restore": {
            "backup_id": b.id,
            "volume_id": volume.id,
            "volume_name": volume.name.clone().unwrap_or_default(),
        }}),
    ))
}

/// Writes the backup over the volume's file, then records the outcome.
async fn run_restore(s: S, b: Backup, volume_id: String, size_gb: i64, is_new: bool) {
    let files = s.backups.clone();
    let dest = s.backend.volume_path(&volume_id);
    let data_id = b.data_id.clone();
    let size = u64::try_from(size_gb).unwrap_or(0) * super::backend::GIB;
    let written = tokio::task::spawn_blocking(move || {
        let manifest = files.manifest(&data_id)?;
        files.restore(&manifest, &dest, size)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = &written {
        tracing::error!(backup = %b.id, volume = %volume_id, error = %e, "restore failed");
    }
    let ok = written.is_ok();
    let recorded = s
        .write(move |tx| {
            if let Some(mut v) = store::get_volume(tx, &volume_id)?
                && v.status == "restoring-backup"
            {
                if ok {
                    v.status = "available".into();
                    v.bootable = b.bootable;
                    v.metadata.extend(b.volume_metadata.clone());
                    if is_new {
                        v.image_metadata = b.volume_image_metadata.clone();
                    }
                } else {
                    v.status = "error_restoring".into();
                }
                v.updated_at = Some(now_string());
                store::put_volume(tx, &v)?;
            }
            if let Some(mut current) = bstore::get_backup(tx, &b.id)?
                && current.status == "restoring"
            {
                current.status = "available".into();
                current.restore_volume_id = None;
                current.updated_at = Some(now_string());
                bstore::put_backup(tx, &current)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "cannot record a restore's outcome");
    }
}

// -------------------------------------------------------- export, import

async fn export_record(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let b = load_for(&s, &ctx, &id, "backup:export-import").await?;
    if b.status != "available" {
        return Err(bad(format!(
            "Invalid backup: Backup status must be available and not {}.",
            b.status
        )));
    }
    let mut record = b;
    record.restore_volume_id = None;
    let text = serde_json::to_vec(&record).map_err(|e| VolumeError::Io(e.into()))?;
    let url = base64::engine::general_purpose::STANDARD.encode(text);
    Ok(json_response(
        StatusCode::OK,
        &json!({"backup-record": {"backup_service": BACKUP_SERVICE, "backup_url": url}}),
    ))
}

async fn import_record(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let mut req = body::parse_object(&bytes)?;
    let obj = body::take_object(&mut req, "backup-record")?;
    authorize(&s, &ctx, "backup:backup-import", &own_target(&ctx))?;
    let project = project_of(&ctx)?;
    let service = body::opt_string(&obj, "backup_service")?.ok_or_else(|| {
        bad("Invalid input for field/attribute backup-record. 'backup_service' is a required property")
    })?;
    let url = body::opt_string(&obj, "backup_url")?.ok_or_else(|| {
        bad("Invalid input for field/attribute backup-record. 'backup_url' is a required property")
    })?;
    if !service.starts_with("cinder.backup.drivers.posix") {
        return Err(VolumeError::NotFound(format!(
            "Service {service} could not be found."
        )));
    }
    if url.len() > MAX_RECORD {
        return Err(bad("Invalid backup: the backup record is too long."));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(url.trim())
        .map_err(|_| bad("Invalid backup: Can't parse backup record."))?;
    let mut record: Backup = serde_json::from_slice(&decoded)
        .map_err(|_| bad("Invalid backup: Can't parse backup record."))?;
    if uuid::Uuid::parse_str(&record.id).is_err() {
        return Err(bad(
            "Invalid backup: Provided backup record is missing an id",
        ));
    }
    if record.size < 0 || record.data_id.is_empty() || record.data_id.contains(['/', '.']) {
        return Err(bad("Invalid backup: Can't parse backup record."));
    }
    let files = s.backups.clone();
    let data_id = record.data_id.clone();
    let present = tokio::task::spawn_blocking(move || files.exists(&data_id))
        .await
        .unwrap_or(false);
    let now = now_string();
    record.project_id = project;
    record.user_id = ctx.user_id.clone();
    record.restore_volume_id = None;
    record.status = if present { "available" } else { "error" }.into();
    record.fail_reason =
        (!present).then(|| "The backup's data is not in the backup directory.".into());
    record.updated_at = Some(now);
    let imported = s
        .write(move |tx| {
            if bstore::get_backup(tx, &record.id)?.is_some() {
                return Err(bad("Invalid backup: Backup already exists in database."));
            }
            if let Some(pid) = &record.parent_id
                && bstore::get_backup(tx, pid)?.is_none()
            {
                record.parent_id = None;
            }
            bstore::put_backup(tx, &record)?;
            Ok(record)
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"backup": summary(&s, &imported, mv)}),
    ))
}

// ------------------------------------------------------------- start-up

/// Settles what a crash interrupted (Cinder's backup manager does the same
/// at its start): `creating` → `error` (the volume or snapshot gets its
/// status back, the partial data goes), `restoring` → `available` with its
/// volume `error_restoring`, `deleting` is finished; data directories no
/// record points at are removed. Runs before the volume repair.
pub fn reconcile(s: &VolumeState) -> VolumeResult<usize> {
    s.backups.prepare()?;
    let now = now_string();
    let (deleting, changed) = s.db.write_blocking(|tx| {
        let mut changed = 0;
        let mut deleting = Vec::new();
        for mut b in bstore::list_backups(tx, None)? {
            match b.status.as_str() {
                "creating" => {
                    let previous = b
                        .volume_previous_status
                        .clone()
                        .unwrap_or_else(|| "available".into());
                    b.status = "error".into();
                    b.fail_reason = Some("interrupted by a restart of the service".into());
                    b.updated_at = Some(now.clone());
                    bstore::put_backup(tx, &b)?;
                    give_back(tx, &b, &previous)
                        .map_err(|e| crate::db::DbError::Task(e.to_string()))?;
                    changed += 1;
                }
                "restoring" => {
                    if let Some(vid) = &b.restore_volume_id
                        && let Some(mut v) = store::get_volume(tx, vid)?
                        && v.status == "restoring-backup"
                    {
                        v.status = "error_restoring".into();
                        v.updated_at = Some(now.clone());
                        store::put_volume(tx, &v)?;
                    }
                    b.status = "available".into();
                    b.restore_volume_id = None;
                    b.updated_at = Some(now.clone());
                    bstore::put_backup(tx, &b)?;
                    changed += 1;
                }
                "deleting" => deleting.push(b.id.clone()),
                _ => {}
            }
        }
        Ok((deleting, changed))
    })?;
    for id in &deleting {
        let bid = id.clone();
        let data = s.db.read_blocking(move |conn| {
            let Some(b) = bstore::get_backup(conn, &bid)? else {
                return Ok(None);
            };
            let users = bstore::data_users(conn, &b.data_id)?;
            Ok(Some((b.data_id, users)))
        })?;
        if let Some((data_id, users)) = data
            && users <= 1
        {
            s.backups.remove(&data_id)?;
        }
        let bid = id.clone();
        s.db.write_blocking(move |tx| {
            bstore::delete_backup(tx, &bid)?;
            Ok(())
        })?;
    }
    let referenced: std::collections::HashSet<String> = s.db.read_blocking(|conn| {
        Ok(bstore::list_backups(conn, None)?
            .into_iter()
            .map(|b| b.data_id)
            .collect())
    })?;
    let mut removed = 0;
    for entry in s.backups.entries()? {
        let path = match entry {
            StoredData::Stray(path) => path,
            StoredData::Complete(id) if !referenced.contains(&id) => s.backups.data_dir(&id),
            StoredData::Complete(_) => continue,
        };
        BackupFiles::remove_stray(&path)?;
        removed += 1;
    }
    let total = changed + deleting.len() + removed;
    if total > 0 {
        tracing::warn!(
            changed,
            finished_deletes = deleting.len(),
            removed,
            "backups repaired after an interrupted run"
        );
    }
    Ok(total)
}
