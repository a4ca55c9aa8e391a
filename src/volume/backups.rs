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
//!
//! This file has create, delete, the actions and the start-up repair; list,
//! show and update are in `backup_list`, restore in `backup_restore`, export
//! and import in `backup_records`, the shared lookups and views in
//! `backup_common`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::json;

use super::backup_common::{bad, load_for, not_found, summary, text};
use super::backup_files::{BackupFiles, StoredData};
use super::backup_list::{list, list_detail, show, update};
use super::backup_records::{export_record, import_record};
use super::backup_restore::restore;
use super::requests::{self, StrictBool, given};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, authorize, empty, now_string, project_of,
    project_target,
};
use crate::db::volume as store;
use crate::db::volume_records::{self as bstore, Backup};
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<VolumeState>;

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

/// `POST /v3/backups`'s `backup`. `metadata` and `availability_zone` are
/// read at every microversion and refused below theirs; a member given as
/// `null` counts as given there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBackup {
    #[serde(default)]
    volume_id: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    incremental: Option<StrictBool>,
    #[serde(default)]
    force: Option<StrictBool>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default, deserialize_with = "given")]
    metadata: Option<Option<BTreeMap<String, String>>>,
    #[serde(default, deserialize_with = "given")]
    availability_zone: Option<Option<String>>,
}

/// The argument of `os-reset_status` (other members are ignored, as they
/// always were here).
#[derive(Debug, Deserialize)]
struct ResetStatus {
    #[serde(default)]
    status: Option<String>,
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let obj = requests::take(&bytes, "backup")?;
    let project = project_of(&ctx)?;
    let req: CreateBackup = requests::member("backup", obj)?;
    // `metadata` is a member from 3.43, `availability_zone` from 3.51.
    for (given, name, minor) in [
        (req.metadata.is_some(), "metadata", 43),
        (req.availability_zone.is_some(), "availability_zone", 51),
    ] {
        if given && !mv.at_least(minor) {
            return Err(bad(format!(
                "Invalid input for field/attribute backup. Additional properties are not allowed ('{name}' was unexpected)"
            )));
        }
    }
    let volume_id = req.volume_id.ok_or_else(|| {
        bad("Invalid input for field/attribute backup. 'volume_id' is a required property")
    })?;
    let name = text("name", req.name)?;
    let description = text("description", req.description)?;
    let container = text("container", req.container)?;
    let snapshot_id = req.snapshot_id;
    let incremental = req.incremental.is_some_and(|StrictBool(b)| b);
    let force = req.force.is_some_and(|StrictBool(b)| b);
    let metadata = requests::metadata(req.metadata.flatten().unwrap_or_default())?;
    if let Some(az) = text("availability_zone", req.availability_zone.flatten())?
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
    let mut req = requests::object(&bytes)?;
    if let Some(arg) = req.remove("os-reset_status") {
        let b = load_for(
            &s,
            &ctx,
            &id,
            "volume_extension:backup_admin_actions:reset_status",
        )
        .await?;
        let arg: ResetStatus = requests::action_arg("os-reset_status", arg)?;
        let status = arg
            .status
            .map(|st| st.to_ascii_lowercase())
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::volume::requests::refused;

    fn create(v: Value) -> VolumeResult<CreateBackup> {
        let Value::Object(obj) = v else {
            panic!("an object")
        };
        requests::member("backup", obj)
    }

    #[test]
    fn create_takes_strict_booleans_and_notes_gated_members() {
        for (given, want) in [
            (json!(true), true),
            (json!("YES"), true),
            (json!("0"), false),
            (json!("off"), false),
        ] {
            let req = create(json!({"volume_id": "v", "incremental": given})).expect("accepted");
            assert_eq!(req.incremental, Some(StrictBool(want)));
        }
        assert_eq!(
            refused(create(json!({"volume_id": "v", "force": "maybe"}))),
            "Invalid input for field/attribute force. Value: maybe. is not a boolean"
        );
        assert!(
            refused(create(json!({"volume_id": "v", "force": 1}))).contains("is not a boolean")
        );
        let req = create(json!({"volume_id": "v", "metadata": null})).expect("null metadata");
        assert_eq!(req.metadata, Some(None));
        assert_eq!(req.availability_zone, None);
        assert_eq!(
            refused(create(json!({"volume_id": "v", "bogus": 1}))),
            "Invalid input for field/attribute backup. Additional properties are not allowed ('bogus' was unexpected)"
        );
    }
}
