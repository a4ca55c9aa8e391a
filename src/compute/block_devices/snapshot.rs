//! createImage of a volume-backed server (a Cinder snapshot of its root
//! volume, image properties pointing at it) and the mappings such an image
//! carries.

use serde_json::{Map, Value};

use super::v2::{bool_like, int_like};
use super::{Mapping, S, Source};
use crate::compute::{ComputeError, ComputeResult};
use crate::db::servers::Server;
use crate::db::volume as vstore;
use crate::image::service::BootImage;
use crate::volume::ops;

/// Nova's image properties of a volume-backed server's snapshot.
pub const BDM_PROPERTY: &str = "block_device_mapping";

/// createImage of a volume-backed server, as Nova does it: a Cinder
/// snapshot of the root volume (taken even while attached), and image
/// properties that point at it (`block_device_mapping` with the snapshot as
/// the boot index 0 source, `bdm_v2`, `root_device_name`), so that booting
/// the image makes a new volume from the snapshot. The image holds no data.
pub async fn snapshot_properties(
    s: &S,
    server: &Server,
    name: &str,
    properties: &mut Map<String, Value>,
) -> ComputeResult<()> {
    let Some(root) = server.root_volume() else {
        return Ok(());
    };
    let vid = root.volume_id.clone();
    let volume = s
        .volumes
        .read(move |conn| Ok(vstore::get_volume(conn, &vid)?))
        .await
        .map_err(|e| ComputeError::Internal(e.to_string()))?
        .ok_or_else(|| ComputeError::Internal(format!("volume {} is gone", root.volume_id)))?;
    let now = crate::volume::now_string();
    let snapshot = vstore::Snapshot {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: server.project_id.clone(),
        user_id: server.user_id.clone(),
        volume_id: volume.id.clone(),
        name: Some(format!("snapshot for {name}")),
        description: Some(String::new()),
        size: volume.size,
        status: "creating".into(),
        volume_type_id: volume.volume_type_id.clone(),
        metadata: Default::default(),
        progress: "0%".into(),
        created_at: now.clone(),
        updated_at: Some(now),
    };
    let snapshot_id = snapshot.id.clone();
    ops::create_snapshot(&s.volumes, snapshot, true)
        .await
        .map_err(|e| ComputeError::BadRequest(e.to_string()))?;
    let mapping = serde_json::json!([{
        "source_type": "snapshot",
        "destination_type": "volume",
        "snapshot_id": snapshot_id,
        "volume_size": volume.size,
        "boot_index": 0,
        "device_name": "/dev/vda",
        "delete_on_termination": root.delete_on_termination,
        "tag": root.tag,
    }]);
    properties.insert(BDM_PROPERTY.into(), Value::String(mapping.to_string()));
    properties.insert("bdm_v2".into(), Value::String("True".into()));
    properties.insert("root_device_name".into(), Value::String("/dev/vda".into()));
    for (k, v) in &volume.image_metadata {
        if matches!(k.as_str(), "kernel_id" | "ramdisk_id" | "os_command_line") {
            properties
                .entry(k.clone())
                .or_insert_with(|| Value::String(v.clone()));
        }
    }
    Ok(())
}

/// The mappings an image made by [`snapshot_properties`] carries (a
/// snapshot as the root volume), when it carries any.
pub fn image_mappings(image: &BootImage) -> Option<Vec<Mapping>> {
    let text = image.properties.get(BDM_PROPERTY)?;
    let items: Vec<Value> = match text {
        Value::String(t) => serde_json::from_str(t).ok()?,
        Value::Array(items) => items.clone(),
        _ => return None,
    };
    let mappings: Vec<Mapping> = items
        .iter()
        .filter_map(|item| {
            let snapshot = item.get("snapshot_id")?.as_str()?.to_string();
            Some(Mapping {
                source: Source::Snapshot(snapshot),
                volume_size: item.get("volume_size").and_then(int_like),
                boot_index: item
                    .get("boot_index")
                    .and_then(int_like)
                    .filter(|b| *b >= 0),
                device_name: item
                    .get("device_name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                delete_on_termination: item
                    .get("delete_on_termination")
                    .and_then(bool_like)
                    .unwrap_or(false),
                tag: None,
                volume_type: None,
            })
        })
        .collect();
    mappings
        .iter()
        .any(|m| m.boot_index == Some(0))
        .then_some(mappings)
}
