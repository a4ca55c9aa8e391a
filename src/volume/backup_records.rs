//! Export and import of a backup's record (base64 JSON), so another
//! deployment, or this one after the row is lost, can restore its data.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::backup_common::{bad, load_for, summary};
use super::requests;
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, authorize, now_string, own_target, project_of,
};
use crate::db::volume_records::{self as bstore, Backup};
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<VolumeState>;

/// What export_record names as the service that holds the data.
const BACKUP_SERVICE: &str = "cinder.backup.drivers.posix.PosixBackupDriver";

/// The largest exported record accepted back (base64 text).
const MAX_RECORD: usize = 64 * 1024;

// -------------------------------------------------------- export, import

pub(super) async fn export_record(
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

/// `POST /v3/backups/import_record`'s `backup-record` (other members are
/// ignored, as they always were here).
#[derive(Debug, Deserialize)]
struct ImportRecord {
    #[serde(default)]
    backup_service: Option<String>,
    #[serde(default)]
    backup_url: Option<String>,
}

pub(super) async fn import_record(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let obj = requests::take(&bytes, "backup-record")?;
    authorize(&s, &ctx, "backup:backup-import", &own_target(&ctx))?;
    let project = project_of(&ctx)?;
    let req: ImportRecord = requests::member("backup-record", obj)?;
    let service = req.backup_service.ok_or_else(|| {
        bad("Invalid input for field/attribute backup-record. 'backup_service' is a required property")
    })?;
    let url = req.backup_url.ok_or_else(|| {
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
