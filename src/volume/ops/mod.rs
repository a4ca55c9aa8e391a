//! The volume domain: create, delete, extend and attachment state changes,
//! quotas and capacity. No HTTP: the handlers and (later) Nova call these.
//!
//! Each change is one transaction that moves the record into a transitional
//! status (`creating`, `deleting`, `extending`), then the file work, then one
//! transaction that records the result. A crash between the two leaves the
//! transitional status, which `reconcile` settles at the next start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::Connection;

use super::backend::{Backend, GIB};
use super::{VolumeError, VolumeResult, VolumeState, now_string};
use crate::db::volume::{self as store, Snapshot, Volume};
use crate::server_events::ServerEvent;

mod attachments;
pub use attachments::{attach, connect, detach, find_attachment, reserve, set_detaching};

/// Cinder's default quotas (`quota_volumes`, `quota_gigabytes`, ...).
pub const DEFAULT_QUOTAS: &[(&str, i64)] = &[
    ("volumes", 10),
    ("snapshots", 10),
    ("gigabytes", 1000),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("groups", 10),
    ("per_volume_gigabytes", -1),
];

/// The largest volume accepted, in GiB (a sanity bound on top of quotas).
pub const MAX_SIZE_GB: i64 = 1 << 20;

/// The quota limits in force for a project: its own, else the `default`
/// class's, else Cinder's defaults; per type (`volumes_<type>`, ...) -1
/// unless set.
pub fn effective_limits(conn: &Connection, project: &str) -> VolumeResult<BTreeMap<String, i64>> {
    let class = store::quotas(conn, "class", "default")?;
    let own = store::quotas(conn, "project", project)?;
    let mut out = BTreeMap::new();
    for (name, default) in DEFAULT_QUOTAS {
        out.insert((*name).to_string(), *default);
    }
    for t in store::list_types(conn)? {
        for kind in ["volumes", "gigabytes", "snapshots"] {
            out.insert(format!("{kind}_{}", t.name), -1);
        }
    }
    out.extend(class);
    out.extend(own);
    Ok(out)
}

/// Refuses a change that would take the project past a limit, with
/// Cinder's wording (413).
pub fn enforce_quota(
    conn: &Connection,
    project: &str,
    type_name: &str,
    volumes: i64,
    snapshots: i64,
    gigabytes: i64,
) -> VolumeResult<()> {
    let limits = effective_limits(conn, project)?;
    let used = store::usage(conn, project)?;
    let per_volume = limits.get("per_volume_gigabytes").copied().unwrap_or(-1);
    if per_volume >= 0 && gigabytes > per_volume && (volumes > 0 || snapshots > 0) {
        return Err(VolumeError::OverLimit(format!(
            "VolumeSizeExceedsLimit: Requested volume size {gigabytes}G is larger than maximum allowed limit {per_volume}G."
        )));
    }
    let check = |key: String, delta: i64| -> VolumeResult<()> {
        if delta <= 0 {
            return Ok(());
        }
        let limit = limits.get(&key).copied().unwrap_or(-1);
        let have = used.get(&key).copied().unwrap_or(0);
        if limit >= 0 && have + delta > limit {
            return Err(VolumeError::OverLimit(if key.starts_with("gigabytes") {
                format!(
                    "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {key} quota. Requested {delta}G, quota is {limit}G and {have}G has been consumed."
                )
            } else if key.starts_with("snapshots") {
                format!(
                    "SnapshotLimitExceeded: Maximum number of snapshots allowed ({limit}) exceeded"
                )
            } else {
                format!(
                    "VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota '{key}'."
                )
            }));
        }
        Ok(())
    };
    check("volumes".into(), volumes)?;
    check(format!("volumes_{type_name}"), volumes)?;
    check("snapshots".into(), snapshots)?;
    check(format!("snapshots_{type_name}"), snapshots)?;
    check("gigabytes".into(), gigabytes)?;
    check(format!("gigabytes_{type_name}"), gigabytes)?;
    Ok(())
}

/// Whether the backend can take `gb` more GiB: provisioned space stays
/// within the over-subscription ratio, and the disk is not full.
pub fn backend_fits(
    conn: &Connection,
    backend: &Backend,
    gb: i64,
    data_bytes: u64,
) -> VolumeResult<Result<(), String>> {
    let capacity = backend.capacity()?;
    let provisioned = store::provisioned_gb(conn)?;
    let total_gb = capacity.total as f64 / GIB as f64;
    if (provisioned + gb) as f64 > total_gb * backend.over_subscription_ratio {
        return Ok(Err(format!(
            "No valid backend was found. Insufficient free virtual space ({:.0}GB) to accommodate thin provisioned {gb}GB volume on host {}.",
            (total_gb * backend.over_subscription_ratio - provisioned as f64).max(0.0),
            super::views::HOST
        )));
    }
    // Keep 1% of the disk (and at least the data to copy) free.
    let reserve = capacity.total / 100;
    if capacity.free < reserve.saturating_add(data_bytes) {
        return Ok(Err(format!(
            "No valid backend was found. Insufficient free space on {}: {} bytes free.",
            super::views::HOST,
            capacity.free
        )));
    }
    Ok(Ok(()))
}

/// What a volume made from `image` is filled with: the disk's bytes, and
/// whether the data is qcow2 (converted) rather than raw (copied). Raw (and
/// iso) images are copied; qcow2 ones are converted with the image module's
/// reader (no backing file, no encryption: it refuses those); other formats
/// are Cinder's 400.
pub fn image_data(image: &crate::image::service::BootImage) -> VolumeResult<(u64, bool)> {
    let format = image.disk_format.clone().unwrap_or_default();
    let size = image.size.unwrap_or(0).max(0) as u64;
    match format.as_str() {
        "raw" | "iso" | "" => Ok((size, false)),
        "qcow2" => Ok((image.virtual_size.unwrap_or(0).max(0) as u64, true)),
        _ => Err(VolumeError::BadRequest(format!(
            "Invalid image metadata: Image {} has disk_format {format}; this backend copies raw and qcow2 images only.",
            image.id
        ))),
    }
}

/// Where a new volume's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    Blank,
    /// An image's data file (with the bytes of the disk it holds); a qcow2
    /// image is converted into the volume by the image module's reader.
    Image {
        path: PathBuf,
        bytes: u64,
        qcow2: bool,
    },
    Snapshot(String),
    Volume(String),
}

/// Inserts the new volume (`creating`, or `error` when no backend fits, as
/// Cinder's scheduler leaves it) after the quota check, in one transaction;
/// then builds its file in the background. Returns the record as created.
pub async fn create(s: &Arc<VolumeState>, volume: Volume, source: Source) -> VolumeResult<Volume> {
    let backend = s.backend.clone();
    let data_bytes = match &source {
        Source::Image { bytes, .. } => *bytes,
        _ => 0,
    };
    let src = source.clone();
    let created = s
        .write(move |tx| {
            let mut v = volume;
            match &src {
                Source::Snapshot(id) => {
                    let snap = store::get_snapshot(tx, id)?.ok_or_else(|| {
                        VolumeError::NotFound(format!("Snapshot {id} could not be found."))
                    })?;
                    if snap.status != "available" {
                        return Err(VolumeError::BadRequest("Invalid snapshot: Originating snapshot status must be one of 'available' values".to_string()));
                    }
                }
                Source::Volume(id) => {
                    let source = store::get_volume(tx, id)?.ok_or_else(|| {
                        VolumeError::NotFound(format!("Volume {id} could not be found."))
                    })?;
                    if !["available", "in-use"].contains(&source.status.as_str()) {
                        return Err(VolumeError::BadRequest(format!(
                            "Invalid volume: Volume {id} status must be available or in-use, but current status is: {}.",
                            source.status
                        )));
                    }
                }
                _ => {}
            }
            let type_name = store::get_type(tx, &v.volume_type_id)?
                .map(|t| t.name)
                .unwrap_or_default();
            enforce_quota(tx, &v.project_id, &type_name, 1, 0, v.size)?;
            if let Err(why) = backend_fits(tx, &backend, v.size, data_bytes)? {
                tracing::warn!(volume = %v.id, reason = %why, "volume create: no backend fits");
                v.status = "error".into();
            }
            store::put_volume(tx, &v)?;
            Ok(v)
        })
        .await?;
    if created.status == "creating" {
        let s = s.clone();
        let v = created.clone();
        tokio::spawn(async move { build(s, v, source).await });
    }
    Ok(created)
}

/// Makes the new volume's file and records `available` (or `error`).
async fn build(s: Arc<VolumeState>, v: Volume, source: Source) {
    let backend = s.backend.clone();
    let (id, size) = (v.id.clone(), v.size.max(0) as u64);
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let dest = backend.volume_path(&id);
        match source {
            Source::Blank => backend.create_blank(&id, size),
            Source::Image {
                path, qcow2: true, ..
            } => backend.create_from_qcow2(&path, &dest, size),
            Source::Image { path, .. } => backend.create_copy(&path, &dest, size),
            Source::Snapshot(snap) => {
                backend.create_copy(&backend.snapshot_path(&snap), &dest, size)
            }
            Source::Volume(src) => backend.create_copy(&backend.volume_path(&src), &dest, size),
        }
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let ok = match &result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(volume = %v.id, error = %e, "volume create failed");
            let _ = Backend::remove(&s.backend.volume_path(&v.id));
            false
        }
    };
    let id = v.id.clone();
    let outcome = s
        .write(move |tx| {
            if let Some(mut current) = store::get_volume(tx, &id)?
                && current.status == "creating"
            {
                current.status = if ok { "available" } else { "error" }.into();
                current.updated_at = Some(now_string());
                store::put_volume(tx, &current)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = outcome {
        tracing::error!(volume = %v.id, error = %e, "cannot record the new volume's status");
    }
}

/// Statuses a volume may be deleted from (Cinder's).
pub const DELETABLE: &[&str] = &[
    "available",
    "error",
    "error_restoring",
    "error_extending",
    "error_managing",
];

/// Deletes a volume: `deleting` now, the file and the row after. With
/// `cascade` its snapshots go too; `force` (admins) skips the status check.
pub async fn delete(
    s: &Arc<VolumeState>,
    id: &str,
    cascade: bool,
    force: bool,
) -> VolumeResult<()> {
    let id_owned = id.to_string();
    let snapshots = s
        .write(move |tx| {
            let id = id_owned;
            let mut v = store::get_volume(tx, &id)?
                .ok_or_else(|| VolumeError::NotFound(format!("Volume {id} could not be found.")))?;
            if !force {
                let attached = v.attach_status == "attached" || !v.attachments.is_empty();
                if !DELETABLE.contains(&v.status.as_str()) || attached {
                    return Err(VolumeError::BadRequest(format!(
                        "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer. (current status: {})",
                        v.status
                    )));
                }
            }
            let snaps: Vec<Snapshot> = store::list_snapshots(tx, None)?
                .into_iter()
                .filter(|sn| sn.volume_id == id)
                .collect();
            if !snaps.is_empty() && !cascade && !force {
                return Err(VolumeError::BadRequest(format!(
                    "Invalid volume: Volume {id} still has {} dependent snapshots.",
                    snaps.len()
                )));
            }
            if cascade && snaps.iter().any(|sn| !["available", "error"].contains(&sn.status.as_str())) {
                return Err(VolumeError::BadRequest(
                    "Invalid volume: Snapshot of volume must be available or error to delete.".into(),
                ));
            }
            for mut snap in snaps.clone() {
                snap.status = "deleting".into();
                store::put_snapshot(tx, &snap)?;
            }
            v.status = "deleting".into();
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
            Ok(snaps.into_iter().map(|sn| sn.id).collect::<Vec<_>>())
        })
        .await?;
    let s = s.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(e) = finish_delete(&s, &id, &snapshots).await {
            tracing::error!(volume = %id, error = %e, "volume delete failed");
        }
    });
    Ok(())
}

/// Removes the files of a volume (and of its snapshots) then the rows.
pub async fn finish_delete(s: &VolumeState, id: &str, snapshots: &[String]) -> VolumeResult<()> {
    let backend = s.backend.clone();
    let (vid, snaps) = (id.to_string(), snapshots.to_vec());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for snap in &snaps {
            Backend::remove(&backend.snapshot_path(snap))?;
        }
        Backend::remove(&backend.volume_path(&vid))
    })
    .await
    .map_err(|e| VolumeError::Io(std::io::Error::other(e)))??;
    let (vid, snaps) = (id.to_string(), snapshots.to_vec());
    s.write(move |tx| {
        for snap in &snaps {
            store::delete_snapshot(tx, snap)?;
        }
        crate::db::volume_records::delete_transfers_of_volume(tx, &vid)?;
        store::delete_volume(tx, &vid)?;
        Ok(())
    })
    .await
}

/// Grows a volume to `new_size` GiB: an `available` one, or with `attached`
/// (Cinder 3.42's online extend) an `in-use` one, whose servers Nova is then
/// told about (`volume-extended`, through `server_events`) so that their VMs see
/// the new size. The status goes `extending` and back (`error_extending`
/// when the file cannot grow).
pub async fn extend(
    s: &Arc<VolumeState>,
    id: &str,
    new_size: i64,
    attached: bool,
) -> VolumeResult<()> {
    let backend = s.backend.clone();
    let id_owned = id.to_string();
    let expected = if attached { "in-use" } else { "available" };
    s.write(move |tx| {
        let id = id_owned;
        let mut v = store::get_volume(tx, &id)?
            .ok_or_else(|| VolumeError::NotFound(format!("Volume {id} could not be found.")))?;
        if v.status != expected {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {id} status must be 'available' or 'in-use' to extend, currently {}.",
                v.status
            )));
        }
        if new_size <= v.size {
            return Err(VolumeError::BadRequest(format!(
                "Invalid input received: New size for extend must be greater than current size. (current: {}, extended: {new_size})."
                , v.size
            )));
        }
        if new_size > MAX_SIZE_GB {
            return Err(VolumeError::BadRequest(format!(
                "Invalid input received: new_size must be at most {MAX_SIZE_GB}."
            )));
        }
        let type_name = store::get_type(tx, &v.volume_type_id)?
            .map(|t| t.name)
            .unwrap_or_default();
        enforce_quota(tx, &v.project_id, &type_name, 0, 0, new_size - v.size)?;
        if let Err(why) = backend_fits(tx, &backend, new_size - v.size, 0)? {
            return Err(VolumeError::BadRequest(why));
        }
        v.status = "extending".into();
        store::put_volume(tx, &v)?;
        Ok(())
    })
    .await?;
    let backend = s.backend.clone();
    let file_id = id.to_string();
    let grown = tokio::task::spawn_blocking(move || backend.extend(&file_id, new_size as u64))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let ok = grown.is_ok();
    if let Err(e) = &grown {
        tracing::error!(volume = %id, error = %e, "volume extend failed");
    }
    let id_owned = id.to_string();
    let servers = s
        .write(move |tx| {
            let mut servers = Vec::new();
            if let Some(mut v) = store::get_volume(tx, &id_owned)?
                && v.status == "extending"
            {
                if ok {
                    v.size = new_size;
                    v.status = expected.into();
                    servers = attached_servers(&v);
                } else {
                    v.status = "error_extending".into();
                }
                v.updated_at = Some(now_string());
                store::put_volume(tx, &v)?;
            }
            Ok(servers)
        })
        .await?;
    let events: Vec<ServerEvent> = servers
        .iter()
        .map(|server| ServerEvent::volume_extended(server, id))
        .collect();
    if !s.compute_events.send(events) {
        tracing::warn!(volume = %id, "no compute service to tell of the extend");
    }
    Ok(())
}

/// The servers a volume is attached to (each once), for Nova's events.
fn attached_servers(v: &Volume) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in &v.attachments {
        if a.attach_status == "attached"
            && let Some(server) = &a.instance_uuid
            && !out.contains(server)
        {
            out.push(server.clone());
        }
    }
    out
}

/// The file that backs a volume (what a VMM opens as its disk).
pub fn backing_file(s: &VolumeState, volume_id: &str) -> PathBuf {
    s.backend.volume_path(volume_id)
}

/// The `volume_image_metadata` a volume made from `image` carries (Cinder's
/// copy of the image's fields and properties).
pub fn image_metadata(image: &crate::image::service::BootImage) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("image_id".to_string(), image.id.clone());
    if let Some(n) = &image.name {
        meta.insert("image_name".into(), n.clone());
    }
    meta.insert(
        "disk_format".into(),
        image.disk_format.clone().unwrap_or_default(),
    );
    meta.insert("container_format".into(), "bare".into());
    meta.insert("min_disk".into(), image.min_disk.to_string());
    meta.insert("min_ram".into(), image.min_ram.to_string());
    meta.insert("size".into(), image.size.unwrap_or(0).max(0).to_string());
    for (k, val) in &image.properties {
        let text = match val {
            serde_json::Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        meta.insert(k.clone(), text);
    }
    meta
}

/// Where a volume Nova asks for (a block device mapping) comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceSource {
    Blank,
    Image(String),
    Snapshot(String),
}

/// A volume Nova makes for a server's block device mapping.
#[derive(Debug, Clone)]
pub struct InstanceVolume {
    pub project_id: String,
    pub user_id: String,
    /// GiB; a snapshot's volume is at least the snapshot's size.
    pub size: i64,
    pub source: InstanceSource,
    /// A volume type's name or id (the default type when None).
    pub volume_type: Option<String>,
}

/// Creates the volume of a block device mapping as Cinder's create would
/// (quota, capacity, the source's bootable flag and image metadata, the
/// type); returns the record (`creating`, or `error` when no backend fits).
/// Compute checked the caller may see the source.
pub async fn create_for_instance(
    s: &Arc<VolumeState>,
    request: InstanceVolume,
) -> VolumeResult<Volume> {
    let now = now_string();
    let mut v = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: request.project_id.clone(),
        user_id: request.user_id.clone(),
        name: Some(String::new()),
        description: Some(String::new()),
        size: request.size,
        status: "creating".into(),
        attach_status: "detached".into(),
        availability_zone: "nova".into(),
        created_at: now.clone(),
        updated_at: Some(now),
        ..Volume::default()
    };
    let mut inherited_type = None;
    let source = match &request.source {
        InstanceSource::Blank => Source::Blank,
        InstanceSource::Image(image_id) => {
            let image = s.images.get_active(image_id, None).await.map_err(|e| {
                VolumeError::BadRequest(format!(
                    "Invalid image identifier or unable to access requested image. ({e})"
                ))
            })?;
            let (bytes, qcow2) = image_data(&image)?;
            let needed = (bytes.div_ceil(GIB) as i64).max(image.min_disk).max(1);
            if v.size < needed {
                return Err(VolumeError::BadRequest(format!(
                    "Invalid input received: Size of specified image {needed}GB is larger than volume size {}GB.",
                    v.size
                )));
            }
            v.image_metadata = image_metadata(&image);
            v.bootable = true;
            v.image_id = Some(image.id.clone());
            Source::Image {
                path: image.path.clone(),
                bytes,
                qcow2,
            }
        }
        InstanceSource::Snapshot(snap_id) => {
            let id = snap_id.clone();
            let (snap, parent) = s
                .read(move |conn| {
                    let snap = store::get_snapshot(conn, &id)?;
                    let parent = match &snap {
                        Some(sn) => store::get_volume(conn, &sn.volume_id)?,
                        None => None,
                    };
                    Ok((snap, parent))
                })
                .await?;
            let snap = snap.ok_or_else(|| {
                VolumeError::NotFound(format!("Snapshot {snap_id} could not be found."))
            })?;
            v.size = v.size.max(snap.size);
            if let Some(parent) = parent {
                v.bootable = parent.bootable;
                v.image_metadata = parent.image_metadata;
            }
            inherited_type = Some(snap.volume_type_id.clone());
            v.snapshot_id = Some(snap.id.clone());
            Source::Snapshot(snap.id)
        }
    };
    let wanted = request.volume_type.clone();
    let vt = s
        .read(move |conn| {
            Ok(match &wanted {
                Some(name_or_id) => match store::get_type(conn, name_or_id)? {
                    Some(t) => Some(t),
                    None => store::get_type_by_name(conn, name_or_id)?,
                },
                None => match &inherited_type {
                    Some(id) => store::get_type(conn, id)?,
                    None => store::get_type(conn, store::DEFAULT_TYPE_ID)?,
                },
            })
        })
        .await?
        .ok_or_else(|| {
            VolumeError::NotFound(format!(
                "Volume type {} could not be found.",
                request.volume_type.clone().unwrap_or_default()
            ))
        })?;
    v.volume_type_id = vt.id;
    create(s, v, source).await
}

/// Waits until volume `id` leaves `creating`: the record when it is
/// `available`, else an error saying what it became (or that it did not
/// finish within `limit`).
pub async fn wait_available(
    s: &VolumeState,
    id: &str,
    limit: std::time::Duration,
) -> VolumeResult<Volume> {
    let start = std::time::Instant::now();
    loop {
        let vid = id.to_string();
        let v = s
            .read(move |conn| Ok(store::get_volume(conn, &vid)?))
            .await?
            .ok_or_else(|| VolumeError::NotFound(format!("Volume {id} could not be found.")))?;
        match v.status.as_str() {
            "available" => return Ok(v),
            "creating" | "downloading" if start.elapsed() < limit => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => {
                return Err(VolumeError::BadRequest(format!(
                    "Volume {id} did not finish being created even after we waited {} seconds. And its status is {other}.",
                    start.elapsed().as_secs()
                )));
            }
        }
    }
}

/// Takes snapshot `snap` of its volume (`available`, or `in-use` when
/// `in_use_ok`: Cinder's force, or 3.66+) after the quota and capacity
/// checks, in one transaction; the copy runs in the background and makes
/// the snapshot `available` (or `error`).
pub async fn create_snapshot(
    s: &Arc<VolumeState>,
    snap: Snapshot,
    in_use_ok: bool,
) -> VolumeResult<()> {
    let stored = snap.clone();
    let backend = s.backend.clone();
    s.write(move |tx| {
        let v = store::get_volume(tx, &stored.volume_id)?.ok_or_else(|| {
            VolumeError::NotFound(format!("Volume {} could not be found.", stored.volume_id))
        })?;
        if !(v.status == "available" || (v.status == "in-use" && in_use_ok)) {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {} status must be available, but current status is: {}.",
                v.id, v.status
            )));
        }
        let type_name = store::get_type(tx, &v.volume_type_id)?
            .map(|t| t.name)
            .unwrap_or_default();
        enforce_quota(tx, &v.project_id, &type_name, 0, 1, v.size)?;
        if let Err(why) = backend_fits(tx, &backend, v.size, 0)? {
            return Err(VolumeError::BadRequest(why));
        }
        store::put_snapshot(tx, &stored)?;
        Ok(())
    })
    .await?;
    let worker = s.clone();
    let (sid, vid) = (snap.id.clone(), snap.volume_id.clone());
    let size = snap.size.max(0) as u64;
    tokio::spawn(async move {
        let backend = worker.backend.clone();
        let (src, dest) = (backend.volume_path(&vid), backend.snapshot_path(&sid));
        let copied = tokio::task::spawn_blocking(move || backend.create_copy(&src, &dest, size))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = &copied {
            tracing::error!(snapshot = %sid, error = %e, "snapshot failed");
        }
        let ok = copied.is_ok();
        let result = worker
            .write(move |tx| {
                if let Some(mut snap) = store::get_snapshot(tx, &sid)?
                    && snap.status == "creating"
                {
                    snap.status = if ok { "available" } else { "error" }.into();
                    snap.progress = if ok { "100%" } else { "0%" }.into();
                    snap.updated_at = Some(now_string());
                    store::put_snapshot(tx, &snap)?;
                }
                Ok(())
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot record a snapshot's status");
        }
    });
    Ok(())
}

/// Who asks for a reimage, and so which statuses the volume may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReimageFrom {
    /// Cinder's `os-reimage` (3.68): `available` or `error`, and `reserved`
    /// with `reimage_reserved`.
    Api { reserved: bool },
    /// Nova's rebuild of a volume-backed server (2.93), whose root volume
    /// stays attached to the stopped server: `in-use` (or `reserved`).
    Rebuild,
}

/// Checks and starts a reimage of volume `id` from `image` (Cinder's
/// `os-reimage`): the volume goes `downloading`; returns its status before,
/// which [`finish_reimage`] restores.
pub async fn begin_reimage(
    s: &VolumeState,
    id: &str,
    image: &crate::image::service::BootImage,
    from: ReimageFrom,
) -> VolumeResult<String> {
    let (bytes, _qcow2) = image_data(image)?;
    let needed = (bytes.div_ceil(GIB) as i64).max(image.min_disk);
    let vid = id.to_string();
    s.write(move |tx| {
        let mut v = store::get_volume(tx, &vid)?
            .ok_or_else(|| VolumeError::NotFound(format!("Volume {vid} could not be found.")))?;
        let allowed: &[&str] = match from {
            ReimageFrom::Api { reserved: false } => &["available", "error"],
            ReimageFrom::Api { reserved: true } => &["available", "error", "reserved"],
            ReimageFrom::Rebuild => &["in-use", "reserved"],
        };
        if !allowed.contains(&v.status.as_str()) {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {vid} status must be {}, but current status is: {}.",
                allowed.join(" or "),
                v.status
            )));
        }
        if v.size < needed {
            return Err(VolumeError::BadRequest(format!(
                "Invalid input received: Size of specified image {needed}GB is larger than volume size {}GB.",
                v.size
            )));
        }
        let before = v.status.clone();
        v.status = "downloading".into();
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(before)
    })
    .await
}

/// The copy of a reimage begun by [`begin_reimage`]: the volume's file is
/// replaced by the image's bytes (grown to the volume's size; no data: a
/// blank volume), the image metadata is the new image's and the status is
/// `before` again (`error` when the copy failed; the old file stays then).
pub async fn finish_reimage(
    s: &VolumeState,
    id: &str,
    image: &crate::image::service::BootImage,
    before: String,
) -> VolumeResult<()> {
    let vid = id.to_string();
    let size = s
        .read(move |conn| Ok(store::get_volume(conn, &vid)?))
        .await?
        .map(|v| v.size.max(0) as u64)
        .unwrap_or(0);
    let backend = s.backend.clone();
    let (src, vid) = (image.path.clone(), id.to_string());
    // begin_reimage accepted only what image_data does: raw (copied) or qcow2 (converted)
    let qcow2 = image.disk_format.as_deref() == Some("qcow2");
    let copied = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let dest = backend.volume_path(&vid);
        if src.as_os_str().is_empty() || !src.exists() {
            return backend.create_blank(&vid, size);
        }
        if qcow2 {
            return backend.create_from_qcow2(&src, &dest, size);
        }
        backend.create_copy(&src, &dest, size)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = &copied {
        tracing::error!(volume = %id, error = %e, "volume reimage failed");
    }
    let meta = image_metadata(image);
    let image_id = image.id.clone();
    let ok = copied.is_ok();
    let vid = id.to_string();
    s.write(move |tx| {
        if let Some(mut v) = store::get_volume(tx, &vid)?
            && v.status == "downloading"
        {
            if ok {
                v.status = before;
                v.image_metadata = meta;
                v.image_id = Some(image_id);
                v.bootable = true;
            } else {
                v.status = "error".into();
            }
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
        }
        Ok(())
    })
    .await?;
    copied.map_err(VolumeError::Io)
}
