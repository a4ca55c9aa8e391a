//! `createImage` and `createBackup` (a snapshot of the root disk as a
//! Glance image, backups rotated), and the snapshot shelve takes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{S, begin, run};
use crate::compute::build::{finish_action, update_server};
use crate::compute::request::{Integer, action_arg, present};
use crate::compute::states::{Action, TaskState, VmState};
use crate::compute::validate::checked_metadata;
use crate::compute::{ComputeError, ComputeResult, Mv, empty};
use crate::db::servers::Server;
use crate::http::json_response;
use crate::identity::AuthContext;

/// `createImage`'s argument (Nova's `create_image.create_image`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImageArg {
    pub(super) name: String,
    #[serde(default, deserialize_with = "present")]
    pub(super) metadata: Option<BTreeMap<String, String>>,
}

/// `createBackup`'s argument (Nova's `create_backup.create_backup`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupArg {
    pub(super) name: String,
    pub(super) backup_type: String,
    pub(super) rotation: Integer,
    #[serde(default, deserialize_with = "present")]
    pub(super) metadata: Option<BTreeMap<String, String>>,
}

/// A snapshot's name (1-255 characters, not blank) and its checked
/// metadata.
pub(super) fn checked_image(
    action: &str,
    name: String,
    metadata: Option<BTreeMap<String, String>>,
) -> ComputeResult<(String, BTreeMap<String, String>)> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {action}. 'name' is a required property (1-255 characters)"
        )));
    }
    let metadata = checked_metadata(metadata.unwrap_or_default(), "metadata")?;
    Ok((name, metadata))
}

pub(super) async fn create_image(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let a: ImageArg = action_arg("createImage", arg.clone())?;
    let (name, metadata) = checked_image("createImage", a.name, a.metadata)?;
    create_image_as(s, ctx, mv, id, rid, name, metadata, "createImage").await
}

#[allow(clippy::too_many_arguments)]
async fn create_image_as(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    name: String,
    metadata: BTreeMap<String, String>,
    action: &'static str,
) -> ComputeResult<Response> {
    let table_action = if action == "createBackup" {
        Action::CreateBackup
    } else {
        Action::CreateImage
    };
    let server = begin(s, ctx, id, rid, table_action).await?;
    let source = s.images.get(&server.image_id, None).await.ok();
    let mut extra = Map::new();
    for (k, v) in &metadata {
        extra.insert(k.clone(), json!(v));
    }
    let backup = extra.get("image_type").cloned();
    let mut properties = snapshot_properties(&server, extra);
    if let Some(kind) = backup {
        properties.insert("image_type".into(), kind);
    }
    // Volume-backed: a Cinder snapshot of the root volume, the image points at it.
    let volume_backed = server.root_volume().is_some();
    if let Err(e) =
        crate::compute::block_devices::snapshot_properties(s, &server, &name, &mut properties).await
    {
        update_server(s, id, |sv| sv.task_state = None).await;
        finish_action(s, id, rid, None, false, Some(e.to_string())).await;
        return Err(e);
    }
    let min_ram = source.as_ref().map(|i| i.min_ram).unwrap_or(0);
    let image_id = match s
        .images
        .create_snapshot(
            &name,
            &server.project_id,
            properties,
            server.flavor.disk,
            min_ram,
        )
        .await
    {
        Ok(image_id) => image_id,
        Err(e) => {
            update_server(s, id, |sv| sv.task_state = None).await;
            finish_action(s, id, rid, None, false, Some(e.to_string())).await;
            return Err(ComputeError::Internal(e.to_string()));
        }
    };
    let snapshot_id = image_id.clone();
    run(s, id, rid, move |s, sv| async move {
        let running = s.driver.is_alive(&sv.id) && sv.vm_state == VmState::Active;
        update_server(&s, &sv.id, |x| {
            x.task_state = Some(TaskState::ImageUploading)
        })
        .await;
        if running {
            let _ = s.driver.pause(&sv.id).await;
        }
        let dest = s.images.snapshot_staging_path(&snapshot_id);
        let copied = if volume_backed {
            std::fs::File::create(&dest)
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            s.driver
                .copy_disk(&sv.id, dest.clone())
                .await
                .map_err(|e| e.to_string())
        };
        if running {
            let _ = s.driver.resume(&sv.id).await;
        }
        update_server(&s, &sv.id, |x| {
            if x.task_state != Some(TaskState::Deleting) {
                x.task_state = None;
            }
        })
        .await;
        match copied {
            Ok(()) => s
                .images
                .finish_snapshot(&snapshot_id, dest)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => {
                s.images.discard_snapshot(&snapshot_id).await;
                Err(e.to_string())
            }
        }
    });
    let location = format!("{}/image/v2/images/{image_id}", s.public_url);
    let mut response = if mv.at_least(45) {
        json_response(StatusCode::ACCEPTED, &json!({"image_id": image_id}))
    } else {
        empty(StatusCode::ACCEPTED)
    };
    if !mv.at_least(45)
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert("location", v);
    }
    response.extensions_mut().insert(SnapshotId(image_id));
    Ok(response)
}

/// Copies a stopped server's root disk into a new active image (shelve).
pub(super) async fn snapshot_to_image(
    s: &S,
    sv: &Server,
    name: &str,
    extra: Map<String, Value>,
) -> Result<String, String> {
    let properties = snapshot_properties(sv, extra);
    let image = s
        .images
        .create_snapshot(name, &sv.project_id, properties, sv.flavor.disk, 0)
        .await
        .map_err(|e| e.to_string())?;
    let dest = s.images.snapshot_staging_path(&image);
    if let Err(e) = s.driver.copy_disk(&sv.id, dest.clone()).await {
        s.images.discard_snapshot(&image).await;
        return Err(e.to_string());
    }
    s.images
        .finish_snapshot(&image, dest)
        .await
        .map_err(|e| e.to_string())?;
    Ok(image)
}

/// Image properties of a server snapshot: what it takes to boot it again.
fn snapshot_properties(server: &Server, extra: Map<String, Value>) -> Map<String, Value> {
    let mut properties = extra;
    properties.insert("image_type".into(), json!("snapshot"));
    properties.insert("instance_uuid".into(), json!(server.id));
    properties.insert("base_image_ref".into(), json!(server.image_id));
    properties.insert("user_id".into(), json!(server.user_id));
    if let Some(k) = &server.kernel_id {
        properties.insert("kernel_id".into(), json!(k));
    }
    if let Some(r) = &server.ramdisk_id {
        properties.insert("ramdisk_id".into(), json!(r));
    }
    if let Some(c) = &server.cmdline {
        properties.insert("os_command_line".into(), json!(c));
    }
    if let Some(t) = server.shutdown_timeout {
        properties.insert("os_shutdown_timeout".into(), json!(t.to_string()));
    }
    properties
}

/// `createBackup`: a snapshot typed `backup`, keeping the newest `rotation`
/// backups of that type for the server.
pub(super) async fn create_backup(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let a: BackupArg = action_arg("createBackup", arg.clone())?;
    let rotation = a.rotation.within("rotation", 0, i64::from(i32::MAX))?;
    let backup_type = a.backup_type;
    let (name, mut metadata) = checked_image("createBackup", a.name, a.metadata)?;
    metadata.insert("image_type".into(), "backup".into());
    metadata.insert("backup_type".into(), backup_type.clone());
    let response = create_image_as(s, ctx, mv, id, rid, name, metadata, "createBackup").await?;
    // Rotation, as Nova does once the backup is taken: keep the newest
    // `rotation` backups of this type (the new one included).
    let new_id = backup_image_id(&response);
    // The backups this rotation may remove are those that exist now: a
    // rotation that runs late (it waits for the snapshot's lock) must never
    // count a backup taken after this one as older.
    let is_backup = |i: &crate::image::service::BootImage| {
        Some(i.id.as_str()) != new_id.as_deref()
            && i.properties.get("instance_uuid").and_then(Value::as_str) == Some(id)
            && i.properties.get("image_type").and_then(Value::as_str) == Some("backup")
            && i.properties.get("backup_type").and_then(Value::as_str) == Some(backup_type.as_str())
    };
    let candidates: std::collections::HashSet<String> = s
        .images
        .list(None)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|i| is_backup(i))
        .map(|i| i.id.clone())
        .collect();
    let (s2, server_id) = (s.clone(), id.to_string());
    tokio::spawn(async move {
        // Nova rotates once the new backup is uploaded, and not at all when
        // the backup failed. Waiting for the server's lock alone is not
        // enough: this task may take it before the snapshot does.
        if let Some(new_id) = &new_id {
            let deadline = std::time::Instant::now() + Duration::from_secs(3600);
            loop {
                match s2.images.get(new_id, None).await {
                    Ok(image) if image.status == "active" => break,
                    Ok(image)
                        if image.status == "queued" && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => return,
                }
            }
        }
        let lock = s2.locks.lock_for(&server_id);
        drop(lock.lock().await);
        let mut older: Vec<_> = s2
            .images
            .list(None)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|i| candidates.contains(&i.id))
            .collect();
        // Oldest first; keep rotation - 1 besides the new one.
        older.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let keep = (rotation.max(1) - 1) as usize;
        let excess = older.len().saturating_sub(keep);
        for old in older.iter().take(excess) {
            s2.images.discard_snapshot(&old.id).await;
        }
    });
    Ok(response)
}

/// The image id a createImage/createBackup response names (body or Location).
fn backup_image_id(response: &Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.rsplit('/').next())
        .map(str::to_string)
        .or_else(|| {
            response
                .extensions()
                .get::<SnapshotId>()
                .map(|i| i.0.clone())
        })
}

/// The new image's id, carried on the createImage response for createBackup.
#[derive(Clone)]
struct SnapshotId(String);
