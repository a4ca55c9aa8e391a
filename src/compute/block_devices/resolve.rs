//! Checks, at create, every source the mappings name and finds what a
//! volume-backed server boots.

use serde_json::{Map, Value};

use super::{Requested, S, Source, bad, invalid_bdm};
use crate::compute::build::{self, BootInfo};
use crate::compute::{ComputeError, ComputeResult};
use crate::db::volume as vstore;
use crate::image::service::BootImage;

/// What a volume-backed server boots, from its root volume's image.
pub struct VolumeRoot {
    pub boot: BootInfo,
    /// The image's min_ram (MiB) and min_disk (GiB), for the flavor check.
    pub min_ram: i64,
}

fn visible(project: &str, is_admin: bool, owner: &str) -> bool {
    is_admin || owner == project
}

/// Checks every source the mappings name (the caller must see it, a volume
/// must be available, a root volume bootable) and returns what a
/// volume-backed server boots (None when the root disk is an image).
pub async fn resolve(
    s: &S,
    requested: &Requested,
    project: &str,
    is_admin: bool,
) -> ComputeResult<Option<VolumeRoot>> {
    let mut root = None;
    for m in &requested.mappings {
        let is_root = m.boot_index == Some(0);
        // The image whose boot details a root volume carries.
        let image: Option<BootImage> = match &m.source {
            Source::Blank => {
                if is_root {
                    return Err(invalid_bdm("a blank volume cannot be the root disk."));
                }
                None
            }
            Source::Image(id) => {
                let scope = (!is_admin).then_some(project);
                let image = s
                    .images
                    .get_active(id, scope)
                    .await
                    .map_err(|_| invalid_bdm(&format!("failed to get image {id}.")))?;
                // the disk's bytes: a raw image's size, a qcow2 image's virtual size
                // (the volume service converts it); other formats are refused
                let bytes = match crate::volume::ops::image_data(&image) {
                    Ok((bytes, _qcow2)) => i64::try_from(bytes).unwrap_or(i64::MAX),
                    Err(_) => {
                        let format = image.disk_format.clone().unwrap_or_default();
                        return Err(invalid_bdm(&format!(
                            "image {id} has disk_format {format}; volumes are made from raw and qcow2 images only."
                        )));
                    }
                };
                let size_gb = m.volume_size.unwrap_or(0);
                let needed = ((bytes + (1 << 30) - 1) >> 30).max(image.min_disk);
                if size_gb < needed {
                    return Err(bad(format!(
                        "Volume is smaller than the minimum size specified in image metadata. Volume size is {} bytes, minimum size is {} bytes.",
                        size_gb << 30,
                        needed << 30
                    )));
                }
                Some(image)
            }
            Source::Volume(id) => {
                let vid = id.clone();
                let v = s
                    .volumes
                    .read(move |conn| Ok(vstore::get_volume(conn, &vid)?))
                    .await
                    .map_err(|e| ComputeError::Internal(e.to_string()))?
                    .filter(|v| visible(project, is_admin, &v.project_id))
                    .ok_or_else(|| invalid_bdm(&format!("failed to get volume {id}.")))?;
                if v.status != "available" {
                    return Err(bad(format!(
                        "Invalid volume: volume '{id}' status must be 'available'. Currently in '{}'",
                        v.status
                    )));
                }
                if is_root && !v.bootable {
                    return Err(bad(format!("Block Device {id} is not bootable.")));
                }
                image_of_metadata(&v.image_metadata)
            }
            Source::Snapshot(id) => {
                let sid = id.clone();
                let (snap, parent) = s
                    .volumes
                    .read(move |conn| {
                        let snap = vstore::get_snapshot(conn, &sid)?;
                        let parent = match &snap {
                            Some(sn) => vstore::get_volume(conn, &sn.volume_id)?,
                            None => None,
                        };
                        Ok((snap, parent))
                    })
                    .await
                    .map_err(|e| ComputeError::Internal(e.to_string()))?;
                let snap = snap
                    .filter(|sn| visible(project, is_admin, &sn.project_id))
                    .ok_or_else(|| invalid_bdm(&format!("failed to get snapshot {id}.")))?;
                if snap.status != "available" {
                    return Err(bad(format!(
                        "Invalid snapshot: snapshot '{id}' status must be 'available'. Currently in '{}'",
                        snap.status
                    )));
                }
                if m.volume_size.is_some_and(|size| size < snap.size) {
                    return Err(invalid_bdm(&format!(
                        "Volume size {}GB cannot be smaller than the snapshot size {}GB.",
                        m.volume_size.unwrap_or(0),
                        snap.size
                    )));
                }
                parent.and_then(|p| image_of_metadata(&p.image_metadata))
            }
        };
        if is_root {
            root = Some(match image {
                Some(image) => VolumeRoot {
                    boot: build::resolve_boot(s, &image, project, is_admin).await?,
                    min_ram: image.min_ram,
                },
                // A bootable volume without image metadata boots the kernel its disk declares.
                None => VolumeRoot {
                    boot: BootInfo {
                        kernel_id: None,
                        ramdisk_id: None,
                        cmdline: None,
                        shutdown_timeout: None,
                    },
                    min_ram: 0,
                },
            });
        }
    }
    Ok(root)
}

/// The boot details a volume's `volume_image_metadata` carries, as an image
/// record (no data file: only its kernel, ramdisk and command line count).
fn image_of_metadata(meta: &std::collections::BTreeMap<String, String>) -> Option<BootImage> {
    let id = meta.get("image_id")?.clone();
    let number = |k: &str| meta.get(k).and_then(|t| t.parse().ok()).unwrap_or(0);
    let properties: Map<String, Value> = meta
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Some(BootImage {
        id,
        name: meta.get("image_name").cloned(),
        status: "active".into(),
        disk_format: meta.get("disk_format").cloned(),
        size: None,
        virtual_size: None,
        min_disk: number("min_disk"),
        min_ram: number("min_ram"),
        path: std::path::PathBuf::new(),
        kernel_id: meta.get("kernel_id").cloned(),
        ramdisk_id: meta.get("ramdisk_id").cloned(),
        os_command_line: meta.get("os_command_line").cloned(),
        properties,
        created_at: String::new(),
        updated_at: String::new(),
    })
}
