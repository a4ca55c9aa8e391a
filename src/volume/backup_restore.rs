//! Restore of a backup to a new or an existing volume.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::backup_common::{bad, load_for, not_found, text};
use super::requests;
use super::{VolumeResult, VolumeState, now_string, project_of};
use crate::db::volume::{self as store, Volume};
use crate::db::volume_records::{self as bstore, Backup};
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<VolumeState>;

// ---------------------------------------------------------------- restore

/// `POST /v3/backups/{id}/restore`'s `restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Restore {
    #[serde(default)]
    volume_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

pub(super) async fn restore(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let obj = requests::take(&bytes, "restore")?;
    let req: Restore = requests::member("restore", obj)?;
    let b = load_for(&s, &ctx, &id, "backup:restore").await?;
    let target = req.volume_id;
    let name = text("name", req.name)?;
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
