//! Nova's block device mappings (`block_device_mapping_v2` in a server
//! create) to Cinder volumes. Three steps:
//!
//! - [`parse`] reads the mappings into typed [`Mapping`]s with Nova's 400
//!   texts (schema, sources and destinations, sizes, the boot sequence);
//!   `image → local` stays the image-backed root disk, `blank → local` the
//!   flavor's disks.
//! - [`resolve`] (at create, before anything is written) checks every source
//!   the caller named (volume, snapshot, image) and finds what a
//!   volume-backed server boots: the kernel and ramdisk its root volume's
//!   image named.
//! - [`prepare`] (at build time, task state `block_device_mapping`) makes the
//!   volumes (image → volume, blank → volume, snapshot → volume through
//!   `volume::ops`, waiting until they are available), reserves and attaches
//!   each one and records it on the server as `os-volume_attachments` does,
//!   so views show it, every boot has its disk (a boot index 0 volume is the
//!   root disk: its backing file, no copy of the image) and server delete
//!   detaches or deletes it as `delete_on_termination` says. A mapping that
//!   fails puts the server in ERROR with a fault naming the mapping.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::build::{self, BootInfo, fault, update_server};
use super::states::{PowerState, TaskState, VmState};
use super::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::db::servers::{LocalDisk, LocalDiskKind, Server, ServerVolume};
use crate::db::volume as vstore;
use crate::image::service::BootImage;
use crate::volume::ops::{self, InstanceSource, InstanceVolume};

type S = Arc<ComputeState>;

/// How long a new volume may take to become available (Nova's
/// `block_device_allocate_retries` × interval, 60 × 3 s).
pub const ALLOCATE_LIMIT: Duration = Duration::from_secs(180);

/// Where a mapped volume comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An existing volume.
    Volume(String),
    /// A new volume from this image.
    Image(String),
    /// A new volume from this snapshot.
    Snapshot(String),
    /// A new empty volume.
    Blank,
}

/// One block device mapping to a volume, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub source: Source,
    /// GiB; required for image and blank sources.
    pub volume_size: Option<i64>,
    /// 0: the root disk; other non-negative values: bootable data disks;
    /// None (or -1 in the request): not bootable.
    pub boot_index: Option<i64>,
    /// The device name asked for, as `/dev/vdX`.
    pub device_name: Option<String>,
    pub delete_on_termination: bool,
    pub tag: Option<String>,
    /// The volume type (2.67+), a name or id.
    pub volume_type: Option<String>,
}

impl Mapping {
    /// How a fault names this mapping.
    pub fn describe(&self, index: usize) -> String {
        let source = match &self.source {
            Source::Volume(id) => format!("volume {id}"),
            Source::Image(id) => format!("image {id}"),
            Source::Snapshot(id) => format!("snapshot {id}"),
            Source::Blank => "blank".to_string(),
        };
        format!("block device mapping {index} ({source} -> volume)")
    }
}

/// What the mappings ask for: the image of an image-backed root disk
/// (empty for a volume-backed server) and the volumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requested {
    pub image_id: String,
    pub mappings: Vec<Mapping>,
    /// The `blank → local` mappings (swap and ephemeral disks).
    pub local: Vec<LocalRequest>,
}

/// Nova's `max_local_block_devices` default.
pub const MAX_LOCAL_DEVICES: usize = 3;

/// The server's local disks from its `blank → local` mappings and the
/// flavor, with Nova's checks: at most one swap, no larger than the
/// flavor's; ephemeral disks (a mapping without a size takes the flavor's)
/// adding up to no more than the flavor's ephemeral size. The flavor's swap
/// and ephemeral disk come when no mapping asks for one of that kind.
/// Devices: ephemerals then swap, from `/dev/vdb` (after the root disk), in
/// the order the guest finds them (a `device_name` asked for is not kept).
pub fn local_disks(
    local: &[LocalRequest],
    flavor_swap_mib: i64,
    flavor_ephemeral_gb: i64,
) -> ComputeResult<Vec<LocalDisk>> {
    let ephemerals: Vec<&LocalRequest> = local.iter().filter(|l| !l.swap).collect();
    let swaps: Vec<&LocalRequest> = local.iter().filter(|l| l.swap).collect();
    if swaps.len() > 1 {
        return Err(invalid_bdm("More than one swap drive requested."));
    }
    let total: i64 = ephemerals
        .iter()
        .map(|l| l.size.unwrap_or(flavor_ephemeral_gb))
        .sum();
    if total > flavor_ephemeral_gb {
        return Err(bad(
            "Ephemeral disks requested are larger than the instance type allows. If no size is given in one block device mapping, flavor ephemeral size will be used.",
        ));
    }
    if swaps
        .first()
        .is_some_and(|l| l.size.unwrap_or(0) > flavor_swap_mib)
    {
        return Err(bad(
            "Swap drive requested is larger than instance type allows.",
        ));
    }
    let mut disks = Vec::new();
    if ephemerals.is_empty() {
        if flavor_ephemeral_gb > 0 {
            disks.push(LocalDisk {
                kind: LocalDiskKind::Ephemeral,
                size_mib: flavor_ephemeral_gb * 1024,
                device: String::new(),
                guest_format: None,
                from_flavor: true,
            });
        }
    } else {
        for l in &ephemerals {
            let size = l.size.unwrap_or(flavor_ephemeral_gb);
            if size <= 0 {
                continue;
            }
            disks.push(LocalDisk {
                kind: LocalDiskKind::Ephemeral,
                size_mib: size * 1024,
                device: String::new(),
                guest_format: l.guest_format.clone(),
                from_flavor: l.size.is_none(),
            });
        }
    }
    let swap = match swaps.first() {
        Some(l) => Some((l.size.unwrap_or(flavor_swap_mib), l.size.is_none())),
        None => (flavor_swap_mib > 0).then_some((flavor_swap_mib, true)),
    };
    if let Some((size, from_flavor)) = swap
        && size > 0
    {
        disks.push(LocalDisk {
            kind: LocalDiskKind::Swap,
            size_mib: size,
            device: String::new(),
            guest_format: Some("swap".into()),
            from_flavor,
        });
    }
    // Devices in the order the guest sees them: vdb, vdc, ... after the root.
    for (d, letter) in disks.iter_mut().zip(b'b'..=b'z') {
        d.device = format!("/dev/vd{}", letter as char);
    }
    Ok(disks)
}

#[cfg(test)]
impl Requested {
    /// The mapping of the root disk when it is a volume.
    pub fn root(&self) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.boot_index == Some(0))
    }
}

fn bad(message: impl Into<String>) -> ComputeError {
    ComputeError::BadRequest(message.into())
}

fn invalid_bdm(detail: &str) -> ComputeError {
    bad(format!("Block Device Mapping is Invalid: {detail}"))
}

fn schema(field: &str, value: &Value, why: &str) -> ComputeError {
    let shown = match value {
        Value::String(t) => t.clone(),
        other => other.to_string(),
    };
    bad(format!(
        "Invalid input for field/attribute {field}. Value: {shown}. {why}"
    ))
}

const SOURCE_TYPES: &str = "['volume', 'image', 'snapshot', 'blank']";
const DESTINATION_TYPES: &str = "['local', 'volume']";

/// An integer, or a string holding one (Nova's schemas take both).
fn int_like(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.trim().parse().ok(),
        _ => None,
    }
}

/// Nova's `parameter_types.boolean`.
fn bool_like(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(t) => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `vdb`, `/dev/vdb`, `sdb`, `xvdb` → `/dev/vdb` (this cloud's disks are virtio).
fn device_name(value: &Value) -> ComputeResult<String> {
    let Value::String(text) = value else {
        return Err(schema(
            "device_name",
            value,
            &format!("{value} is not of type 'string'"),
        ));
    };
    let name = text.strip_prefix("/dev/").unwrap_or(text);
    let letters = name
        .trim_start_matches("xv")
        .trim_start_matches(['v', 's', 'h']);
    let letters = letters.strip_prefix('d').unwrap_or(letters);
    let ok = !text.is_empty()
        && text.len() <= 255
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !ok {
        return Err(schema(
            "device_name",
            value,
            &format!("'{text}' does not match '^[a-zA-Z0-9._-r/]*$'"),
        ));
    }
    let suffix = letters.trim_end_matches(|c: char| c.is_ascii_digit());
    if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_lowercase()) || suffix.len() > 2 {
        return Err(invalid_bdm(&format!("Device name {text} is not valid.")));
    }
    Ok(format!("/dev/vd{suffix}"))
}

/// A `blank → local` mapping: a swap (`guest_format: swap`) or ephemeral
/// disk in the instance directory.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRequest {
    pub swap: bool,
    /// MiB for swap, GiB for an ephemeral disk (Nova's units); None: the
    /// flavor's size.
    pub size: Option<i64>,
    pub guest_format: Option<String>,
    pub device_name: Option<String>,
}

/// What one `block_device_mapping_v2` item is.
enum Item {
    /// A volume.
    Volume(Mapping),
    /// The image as the local root disk (as imageRef).
    ImageLocal(Mapping),
    /// A local swap or ephemeral disk.
    Local(LocalRequest),
}

/// One `block_device_mapping_v2` item.
fn parse_v2(mv: Mv, item: &Value) -> ComputeResult<Item> {
    let Value::Object(obj) = item else {
        return Err(schema(
            "block_device_mapping_v2",
            item,
            &format!("{item} is not of type 'object'"),
        ));
    };
    for (key, min) in [("tag", 42), ("volume_type", 67)] {
        if obj.contains_key(key) && !mv.at_least(min) {
            return Err(bad(format!(
                "Invalid input for field/attribute block_device_mapping_v2. Additional properties are not allowed ('{key}' was unexpected)"
            )));
        }
    }
    let source = match obj.get("source_type") {
        None | Some(Value::Null) => {
            return Err(invalid_bdm("Invalid source_type field."));
        }
        Some(Value::String(t))
            if ["volume", "image", "snapshot", "blank"].contains(&t.as_str()) =>
        {
            t.as_str()
        }
        Some(other) => {
            return Err(schema(
                "source_type",
                other,
                &format!(
                    "'{}' is not one of {SOURCE_TYPES}",
                    other.as_str().unwrap_or("")
                ),
            ));
        }
    };
    let destination = match obj.get("destination_type") {
        None | Some(Value::Null) => {
            if matches!(source, "volume" | "snapshot") {
                "volume"
            } else {
                "local"
            }
        }
        Some(Value::String(t)) if ["local", "volume"].contains(&t.as_str()) => t.as_str(),
        Some(other) => {
            return Err(schema(
                "destination_type",
                other,
                &format!(
                    "'{}' is not one of {DESTINATION_TYPES}",
                    other.as_str().unwrap_or("")
                ),
            ));
        }
    };
    let uuid = match obj.get("uuid") {
        None | Some(Value::Null) => None,
        Some(Value::String(t))
            if !t.is_empty()
                && t.len() <= 255
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
        {
            Some(t.clone())
        }
        Some(other) => {
            return Err(schema("uuid", other, "does not match '^[a-zA-Z0-9._-]*$'"));
        }
    };
    let boot_index = match obj.get("boot_index") {
        None | Some(Value::Null) => None,
        Some(v) => match int_like(v) {
            Some(i) if i < 0 => None,
            Some(i) => Some(i),
            None => {
                return Err(schema(
                    "boot_index",
                    v,
                    "is not valid under any of the given schemas",
                ));
            }
        },
    };
    let volume_size = match obj.get("volume_size") {
        None | Some(Value::Null) => None,
        Some(v) => match int_like(v) {
            Some(0) => None,
            Some(i) if i > 0 => Some(i),
            _ => {
                return Err(schema(
                    "volume_size",
                    v,
                    "is not valid under any of the given schemas",
                ));
            }
        },
    };
    let delete_on_termination = match obj.get("delete_on_termination") {
        None | Some(Value::Null) => false,
        Some(v) => bool_like(v).ok_or_else(|| {
            schema(
                "delete_on_termination",
                v,
                "is not valid under any of the given schemas",
            )
        })?,
    };
    let device_name = match obj.get("device_name") {
        None | Some(Value::Null) => None,
        Some(v) => Some(device_name(v)?),
    };
    let tag = match obj.get("tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(t))
            if !t.is_empty() && t.chars().count() <= 60 && !t.contains(['/', ',']) =>
        {
            Some(t.clone())
        }
        Some(other) => return Err(schema("tag", other, "does not match '^[^,/]*$'")),
    };
    let volume_type = match obj.get("volume_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.chars().count() <= 255 => Some(t.clone()),
        Some(other) => {
            return Err(schema(
                "volume_type",
                other,
                &format!("{other} is not of type 'string'"),
            ));
        }
    };
    let guest_format = match obj.get("guest_format") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.chars().count() <= 255 => Some(t.clone()),
        Some(other) => {
            return Err(schema(
                "guest_format",
                other,
                &format!("{other} is not of type 'string'"),
            ));
        }
    };
    if source != "blank" && uuid.is_none() {
        return Err(invalid_bdm("Missing device UUID."));
    }
    if destination == "local" {
        if volume_type.is_some() {
            return Err(invalid_bdm(
                "Specifying a volume_type with destination_type=local is not supported.",
            ));
        }
        return match source {
            // The image as the local root disk: the same as imageRef.
            "image" if boot_index == Some(0) => Ok(Item::ImageLocal(Mapping {
                source: Source::Image(uuid.unwrap_or_default()),
                volume_size,
                boot_index,
                device_name,
                delete_on_termination,
                tag,
                volume_type,
            })),
            "image" => Err(invalid_bdm("Mapping image to local is not supported.")),
            // A local disk is never the root disk.
            "blank" if boot_index == Some(0) => Err(invalid_bdm(
                "Boot sequence for the instance and image/block device mapping combination is not valid.",
            )),
            // Local ephemeral or swap disks (sizes checked against the flavor at create).
            "blank" => Ok(Item::Local(LocalRequest {
                swap: guest_format.as_deref() == Some("swap"),
                size: volume_size,
                guest_format,
                device_name,
            })),
            _ => Err(invalid_bdm(&format!(
                "Mapping {source} to local is not supported."
            ))),
        };
    }
    let source = match source {
        "volume" => Source::Volume(uuid.unwrap_or_default()),
        "snapshot" => Source::Snapshot(uuid.unwrap_or_default()),
        "image" => {
            if volume_size.is_none() {
                return Err(bad(
                    "Images with destination_type 'volume' need to have a non-zero size specified",
                ));
            }
            Source::Image(uuid.unwrap_or_default())
        }
        _ => {
            if volume_size.is_none() {
                return Err(bad(
                    "Blank volumes (source: 'blank', dest: 'volume') need to have non-zero size",
                ));
            }
            Source::Blank
        }
    };
    Ok(Item::Volume(Mapping {
        source,
        volume_size,
        boot_index,
        device_name,
        delete_on_termination,
        tag,
        volume_type,
    }))
}

/// One legacy `block_device_mapping` item (`volume_id` or `snapshot_id`
/// with `device_name`): the root disk when it names `vda`.
fn parse_legacy(item: &Value) -> ComputeResult<Option<Mapping>> {
    let Value::Object(obj) = item else {
        return Err(schema(
            "block_device_mapping",
            item,
            &format!("{item} is not of type 'object'"),
        ));
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let source = match (text("volume_id"), text("snapshot_id")) {
        (Some(v), _) => Source::Volume(v),
        (None, Some(s)) => Source::Snapshot(s),
        (None, None) if obj.get("no_device").is_some() => return Ok(None),
        (None, None) => return Err(invalid_bdm("Missing device UUID.")),
    };
    let device = match obj.get("device_name") {
        None | Some(Value::Null) => None,
        Some(v) => Some(device_name(v)?),
    };
    let root = device.as_deref() == Some("/dev/vda");
    Ok(Some(Mapping {
        source,
        volume_size: obj.get("volume_size").and_then(int_like).filter(|s| *s > 0),
        boot_index: root.then_some(0),
        device_name: device,
        delete_on_termination: obj
            .get("delete_on_termination")
            .and_then(bool_like)
            .unwrap_or(false),
        tag: None,
        volume_type: None,
    }))
}

/// Reads the mappings of a create's `server` object as Nova does, given
/// its `imageRef` (may be empty) and `max_count`.
pub fn parse(
    mv: Mv,
    server: &Map<String, Value>,
    image_ref: &str,
    max_count: i64,
) -> ComputeResult<Requested> {
    let mut image_id = image_ref.to_string();
    let mut mappings = Vec::new();
    let mut local = Vec::new();
    let mut image_local = false;
    let mut boot_indexes = Vec::new();
    if let Some(items) = server.get("block_device_mapping_v2") {
        let Value::Array(items) = items else {
            return Err(schema(
                "block_device_mapping_v2",
                items,
                &format!("{items} is not of type 'array'"),
            ));
        };
        for item in items {
            match parse_v2(mv, item)? {
                Item::Local(l) => local.push(l),
                Item::ImageLocal(mapping) => {
                    boot_indexes.extend(mapping.boot_index);
                    image_local = true;
                    if let Source::Image(id) = mapping.source
                        && image_id.is_empty()
                    {
                        image_id = id;
                    }
                }
                Item::Volume(mapping) => {
                    boot_indexes.extend(mapping.boot_index);
                    mappings.push(mapping);
                }
            }
        }
    } else if let Some(Value::Array(items)) = server.get("block_device_mapping") {
        for item in items {
            if let Some(mapping) = parse_legacy(item)? {
                boot_indexes.extend(mapping.boot_index);
                mappings.push(mapping);
            }
        }
    }
    if image_id.is_empty() && mappings.is_empty() {
        return Err(bad("Missing imageRef attribute"));
    }
    // The boot sequence: 0, 1, 2, ... without gaps, and a root disk (an
    // image given without a boot index 0 mapping is the root).
    let volume_root = mappings.iter().any(|m| m.boot_index == Some(0));
    if !volume_root && !image_id.is_empty() && !boot_indexes.contains(&0) {
        boot_indexes.push(0);
    }
    boot_indexes.sort_unstable();
    let in_sequence = boot_indexes.iter().enumerate().all(|(i, b)| *b == i as i64);
    if boot_indexes.is_empty() || !in_sequence {
        return Err(invalid_bdm(
            "Boot sequence for the instance and image/block device mapping combination is not valid.",
        ));
    }
    if max_count > 1
        && mappings
            .iter()
            .any(|m| matches!(m.source, Source::Volume(_)))
    {
        return Err(bad(
            "Cannot attach one or more volumes to multiple instances",
        ));
    }
    // Nova's max_local_block_devices (3): the local root disk counts.
    let locals = local.len() + usize::from(image_local || (!volume_root && !image_id.is_empty()));
    if locals > MAX_LOCAL_DEVICES {
        return Err(bad(
            "Block Device Mapping is Invalid: You specified more local devices than the limit allows",
        ));
    }
    if local.iter().filter(|l| l.swap).count() > 1 {
        return Err(invalid_bdm("More than one swap drive requested."));
    }
    let mut names: Vec<&str> = mappings
        .iter()
        .filter_map(|m| m.device_name.as_deref())
        .chain(local.iter().filter_map(|l| l.device_name.as_deref()))
        .collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid_bdm(&format!(
            "Device name {} is used more than once.",
            w[0]
        )));
    }
    if volume_root {
        image_id.clear();
    }
    if mappings.len() > super::volumes::MAX_VOLUMES {
        return Err(bad(format!(
            "The maximum allowed number of block devices is {}.",
            super::volumes::MAX_VOLUMES
        )));
    }
    Ok(Requested {
        image_id,
        mappings,
        local,
    })
}

// ------------------------------------------------------------- resolve

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
                let bytes = image.size.unwrap_or(0).max(0);
                let size_gb = m.volume_size.unwrap_or(0);
                let needed = ((bytes + (1 << 30) - 1) >> 30).max(image.min_disk);
                if size_gb < needed {
                    return Err(bad(format!(
                        "Volume is smaller than the minimum size specified in image metadata. Volume size is {} bytes, minimum size is {} bytes.",
                        size_gb << 30,
                        needed << 30
                    )));
                }
                let format = image.disk_format.clone().unwrap_or_default();
                if !["raw", "iso", ""].contains(&format.as_str()) {
                    return Err(invalid_bdm(&format!(
                        "image {id} has disk_format {format}; volumes are made from raw images only."
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

// ------------------------------------------------------------- prepare

/// The device a mapping's volume gets: the one asked for, `/dev/vda` for
/// the root disk, else the first `/dev/vdX` after the root disk and the
/// `fixed` disks after it (local disks, the config drive) that no volume of
/// the server has.
fn choose_device(m: &Mapping, taken: &[ServerVolume], fixed: usize) -> String {
    if let Some(d) = &m.device_name
        && !taken.iter().any(|v| &v.device == d)
    {
        return d.clone();
    }
    if m.boot_index == Some(0) {
        return "/dev/vda".into();
    }
    (b'a'..=b'z')
        .skip(1 + fixed)
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !taken.iter().any(|v| &v.device == d) && m.device_name.as_ref() != Some(d))
        .unwrap_or_default()
}

/// Makes (or takes) the volume of one mapping and attaches it to server
/// `id`: returns its record, and whether the volume was made here.
async fn prepare_one(
    s: &S,
    id: &str,
    project: &str,
    user: &str,
    m: &Mapping,
    device: String,
) -> Result<ServerVolume, (String, Option<String>)> {
    let plain = |e: crate::volume::VolumeError| (e.to_string(), None);
    let (volume_id, made, read_only) = match &m.source {
        Source::Volume(vid) => {
            let id = vid.clone();
            let read_only = s
                .volumes
                .read(move |conn| Ok(vstore::get_volume(conn, &id)?))
                .await
                .map_err(plain)?
                .is_some_and(|v| v.readonly == Some(true));
            (vid.clone(), false, read_only)
        }
        other => {
            let source = match other {
                Source::Image(image) => InstanceSource::Image(image.clone()),
                Source::Snapshot(snap) => InstanceSource::Snapshot(snap.clone()),
                _ => InstanceSource::Blank,
            };
            let v = ops::create_for_instance(
                &s.volumes,
                InstanceVolume {
                    project_id: project.to_string(),
                    user_id: user.to_string(),
                    size: m.volume_size.unwrap_or(0),
                    source,
                    volume_type: m.volume_type.clone(),
                },
            )
            .await
            .map_err(plain)?;
            (v.id, true, false)
        }
    };
    let made_id = made.then(|| volume_id.clone());
    let with_made = |e: crate::volume::VolumeError| (e.to_string(), made_id.clone());
    if made {
        ops::wait_available(&s.volumes, &volume_id, ALLOCATE_LIMIT)
            .await
            .map_err(with_made)?;
    }
    let attachment_id = ops::reserve(&s.volumes, &volume_id, Some(id.to_string()))
        .await
        .map_err(with_made)?;
    let record = ServerVolume {
        volume_id: volume_id.clone(),
        attachment_id: attachment_id.clone(),
        device: device.clone(),
        path: ops::backing_file(&s.volumes, &volume_id),
        tag: m.tag.clone(),
        delete_on_termination: m.delete_on_termination,
        boot_index: m.boot_index,
        read_only,
    };
    let marked = ops::attach(
        &s.volumes,
        &volume_id,
        Some(attachment_id.clone()),
        Some(id.to_string()),
        Some(super::hosts::hostname()),
        Some(device),
        if read_only { "ro" } else { "rw" },
    )
    .await;
    if let Err(e) = marked {
        let _ = ops::detach(&s.volumes, &volume_id, Some(attachment_id)).await;
        return Err(with_made(e));
    }
    Ok(record)
}

/// Prepares server `id`'s volumes before its build (under the server's
/// lock, task state `block_device_mapping`); each one is recorded on the
/// server as soon as it is attached, so a delete meanwhile finds it. On a
/// failure the server is ERROR with a fault naming the mapping, a volume
/// made for the failed mapping is deleted when its mapping says
/// `delete_on_termination` (the others stay attached: server delete
/// detaches or deletes them), and the create action fails. True: go on
/// with the build.
pub async fn prepare(s: &S, id: &str, mappings: &[Mapping], request_id: &str) -> bool {
    let lock = s.locks.lock_for(id);
    let guard = lock.lock().await;
    let Some(server) = update_server(s, id, |sv| {
        if sv.task_state != Some(TaskState::Deleting) {
            sv.task_state = Some(TaskState::BlockDeviceMapping);
        }
    })
    .await
    else {
        return false;
    };
    // Being deleted: the build path ends the create action.
    if server.deleted || server.task_state == Some(TaskState::Deleting) {
        return true;
    }
    let mut taken = server.volumes.clone();
    for (index, m) in mappings.iter().enumerate() {
        let fixed = server.local_disks.len() + usize::from(server.config_drive);
        let device = choose_device(m, &taken, fixed);
        match prepare_one(s, id, &server.project_id, &server.user_id, m, device).await {
            Ok(record) => {
                taken.push(record.clone());
                update_server(s, id, move |sv| sv.volumes.push(record)).await;
            }
            Err((why, made)) => {
                tracing::warn!(server = %id, mapping = index, error = %why, "block device mapping failed");
                if let Some(vid) = made
                    && m.delete_on_termination
                    && let Err(e) = ops::delete(&s.volumes, &vid, false, true).await
                {
                    tracing::warn!(volume = %vid, error = %e, "cannot delete a failed mapping's volume");
                }
                let detail = format!("{}: {why}", m.describe(index));
                update_server(s, id, move |sv| {
                    sv.vm_state = VmState::Error;
                    sv.power_state = PowerState::NoState;
                    if sv.task_state != Some(TaskState::Deleting) {
                        sv.task_state = None;
                    }
                    sv.fault = Some(fault(
                        &format!(
                            "Build of instance {} aborted: Block Device Mapping is Invalid.",
                            sv.id
                        ),
                        &detail,
                    ));
                })
                .await;
                super::networking::release_failed_build(s, id).await;
                drop(guard);
                build::finish_action(
                    s,
                    id,
                    request_id,
                    Some("compute__do_build_and_run_instance"),
                    false,
                    Some(why),
                )
                .await;
                s.config.events.server(id, &server.project_id);
                return false;
            }
        }
    }
    true
}

/// The build of a server with volume mappings: the volumes first, then the
/// usual build.
pub fn spawn_build(s: S, id: String, mappings: Vec<Mapping>, request_id: String) {
    tokio::spawn(async move {
        if prepare(&s, &id, &mappings, &request_id).await {
            build::spawn_build(s, id, request_id);
        }
    });
}

// ------------------------------------------------ snapshots and rebuild

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

/// What a rebuild does with a server's root disk.
#[derive(Debug, Clone, PartialEq)]
pub enum RootRebuild {
    /// An image-backed server: a fresh root disk from the image.
    Image,
    /// A volume-backed server below 2.93: the root volume is kept (the
    /// image must be the one it was booted from).
    KeepVolume,
    /// A volume-backed server at 2.93+: the root volume is reimaged
    /// (Cinder's `os-reimage`, 3.68) from the image.
    ReimageVolume(String),
}

/// How a rebuild of server `id` with `image` treats its root disk, with
/// Nova's checks: before 2.93 a volume-backed server is rebuilt only with
/// the image it was booted from (its root volume's `volume_image_metadata`);
/// from 2.93 its root volume is reimaged, and the image must fit it.
pub async fn check_rebuild(
    s: &S,
    id: &str,
    image: &BootImage,
    mv: Mv,
) -> ComputeResult<RootRebuild> {
    let id_owned = id.to_string();
    let Some(server) = s
        .read(move |conn| Ok(crate::db::servers::get_server(conn, &id_owned)?))
        .await?
    else {
        return Ok(RootRebuild::Image);
    };
    let Some(root) = server.root_volume() else {
        return Ok(RootRebuild::Image);
    };
    let vid = root.volume_id.clone();
    let volume = s
        .volumes
        .read(move |conn| Ok(vstore::get_volume(conn, &vid)?))
        .await
        .map_err(|e| ComputeError::Internal(e.to_string()))?;
    if !mv.at_least(93) {
        let booted_from = volume.and_then(|v| v.image_metadata.get("image_id").cloned());
        if booted_from.as_deref() != Some(image.id.as_str()) {
            return Err(bad(
                "Unable to rebuild with a different image for a volume-backed server.",
            ));
        }
        return Ok(RootRebuild::KeepVolume);
    }
    let volume = volume
        .ok_or_else(|| ComputeError::Internal(format!("volume {} is gone", root.volume_id)))?;
    let bytes = image.size.unwrap_or(0).max(0);
    let needed = ((bytes + (1 << 30) - 1) >> 30).max(image.min_disk);
    if volume.size < needed {
        return Err(bad(format!(
            "Volume is smaller than the minimum size specified in image metadata. Volume size is {} bytes, minimum size is {} bytes.",
            volume.size << 30,
            needed << 30
        )));
    }
    let format = image.disk_format.clone().unwrap_or_default();
    if !["raw", "iso", ""].contains(&format.as_str()) {
        return Err(bad(format!(
            "Image {} has disk_format {format}; volumes are reimaged from raw images only.",
            image.id
        )));
    }
    Ok(RootRebuild::ReimageVolume(volume.id))
}

/// The reimage of a stopped volume-backed server's root volume (a rebuild
/// at 2.93): through the volume service as Cinder's `os-reimage` with
/// `reimage_reserved` (the volume `downloading` meanwhile, then `in-use`
/// again), the volume's data is the image's.
pub async fn reimage_root(s: &S, volume_id: &str, image: &BootImage) -> Result<(), String> {
    let before = ops::begin_reimage(&s.volumes, volume_id, image, ops::ReimageFrom::Rebuild)
        .await
        .map_err(|e| e.to_string())?;
    ops::finish_reimage(&s.volumes, volume_id, image, before)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VOL: &str = "0b6f3c56-52b6-4d0e-9d8e-2f7a3f0d1a11";
    const IMG: &str = "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c";

    fn server(bdms: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("block_device_mapping_v2".into(), bdms);
        m
    }

    fn parsed(mv: u16, image: &str, bdms: Value) -> ComputeResult<Requested> {
        parse(Mv(mv), &server(bdms), image, 1)
    }

    fn message(r: ComputeResult<Requested>) -> String {
        match r {
            Err(ComputeError::BadRequest(m)) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn boot_from_volume_needs_no_image() {
        let r = parsed(
            1,
            "",
            json!([{"source_type": "volume", "destination_type": "volume", "uuid": VOL,
                    "boot_index": "0", "delete_on_termination": "true"}]),
        )
        .expect("valid");
        assert_eq!(r.image_id, "");
        assert_eq!(r.mappings.len(), 1);
        let root = r.root().expect("root");
        assert_eq!(root.source, Source::Volume(VOL.into()));
        assert!(root.delete_on_termination);
        // The image goes when a volume is the root disk.
        let r = parsed(
            1,
            IMG,
            json!([{"source_type": "image", "destination_type": "volume", "uuid": IMG,
                    "boot_index": 0, "volume_size": 1}]),
        )
        .expect("valid");
        assert_eq!(r.image_id, "");
        assert_eq!(r.root().map(|m| m.volume_size), Some(Some(1)));
    }

    #[test]
    fn image_backed_servers_keep_their_image_and_get_data_volumes() {
        let r = parsed(
            79,
            "",
            json!([
                {"source_type": "image", "destination_type": "local", "uuid": IMG, "boot_index": 0},
                {"source_type": "blank", "destination_type": "volume", "volume_size": 2,
                 "boot_index": -1, "device_name": "vdc", "tag": "data"},
                {"source_type": "snapshot", "uuid": VOL, "boot_index": 1},
                {"source_type": "blank", "destination_type": "local", "guest_format": "swap"}
            ]),
        )
        .expect("valid");
        assert_eq!(r.image_id, IMG);
        assert_eq!(r.mappings.len(), 2);
        assert!(r.root().is_none());
        assert_eq!(r.mappings[0].device_name.as_deref(), Some("/dev/vdc"));
        assert_eq!(r.mappings[0].boot_index, None);
        assert_eq!(r.mappings[0].tag.as_deref(), Some("data"));
        assert_eq!(r.mappings[1].source, Source::Snapshot(VOL.into()));
        // imageRef with a data volume: the image is the root disk.
        let r = parsed(
            1,
            IMG,
            json!([{"source_type": "volume", "uuid": VOL, "boot_index": -1}]),
        )
        .expect("valid");
        assert_eq!(r.image_id, IMG);
    }

    #[test]
    fn refusals_carry_novas_texts() {
        let cases = [
            (
                json!([{"source_type": "image", "destination_type": "volume", "uuid": IMG, "boot_index": 0}]),
                "Images with destination_type 'volume' need to have a non-zero size specified",
            ),
            (
                json!([{"source_type": "blank", "destination_type": "volume", "boot_index": -1}]),
                "Blank volumes (source: 'blank', dest: 'volume') need to have non-zero size",
            ),
            (
                json!([{"source_type": "volume", "destination_type": "volume", "boot_index": 0}]),
                "Block Device Mapping is Invalid: Missing device UUID.",
            ),
            (
                json!([{"source_type": "volume", "uuid": VOL, "boot_index": 1}]),
                "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.",
            ),
            (
                json!([{"source_type": "volume", "uuid": VOL}]),
                "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid.",
            ),
            (
                json!([{"source_type": "image", "destination_type": "local", "uuid": IMG, "boot_index": 1}]),
                "Block Device Mapping is Invalid: Mapping image to local is not supported.",
            ),
            (
                json!([{"source_type": "disk", "uuid": VOL, "boot_index": 0}]),
                "Invalid input for field/attribute source_type. Value: disk. 'disk' is not one of ['volume', 'image', 'snapshot', 'blank']",
            ),
            (
                json!([{"source_type": "volume", "destination_type": "remote", "uuid": VOL, "boot_index": 0}]),
                "Invalid input for field/attribute destination_type. Value: remote. 'remote' is not one of ['local', 'volume']",
            ),
            (
                json!([{"source_type": "volume", "uuid": VOL, "boot_index": "first"}]),
                "Invalid input for field/attribute boot_index. Value: first. is not valid under any of the given schemas",
            ),
            (
                json!([{"source_type": "volume", "uuid": VOL, "boot_index": 0, "delete_on_termination": "maybe"}]),
                "Invalid input for field/attribute delete_on_termination. Value: maybe. is not valid under any of the given schemas",
            ),
        ];
        for (bdms, text) in cases {
            assert_eq!(message(parsed(79, "", bdms.clone())), text, "{bdms}");
        }
        assert_eq!(
            message(parsed(1, "", json!([]))),
            "Missing imageRef attribute"
        );
        // tag from 2.42, volume_type from 2.67.
        let tagged =
            json!([{"source_type": "volume", "uuid": VOL, "boot_index": 0, "tag": "root"}]);
        assert!(parsed(41, "", tagged.clone()).is_err());
        assert!(parsed(42, "", tagged).is_ok());
        let typed =
            json!([{"source_type": "volume", "uuid": VOL, "boot_index": 0, "volume_type": "x"}]);
        assert!(parsed(66, "", typed.clone()).is_err());
        assert!(parsed(67, "", typed).is_ok());
        // One existing volume cannot go to several servers.
        let one = json!([{"source_type": "volume", "uuid": VOL, "boot_index": 0}]);
        assert_eq!(
            message(parse(Mv(1), &server(one), "", 2)),
            "Cannot attach one or more volumes to multiple instances"
        );
        // The same device twice.
        let twice = json!([
            {"source_type": "volume", "uuid": VOL, "boot_index": 0, "device_name": "/dev/vdb"},
            {"source_type": "blank", "destination_type": "volume", "volume_size": 1, "device_name": "vdb"}
        ]);
        assert!(message(parsed(1, "", twice)).contains("used more than once"));
    }

    fn local(swap: bool, size: Option<i64>) -> LocalRequest {
        LocalRequest {
            swap,
            size,
            guest_format: swap.then(|| "swap".to_string()),
            device_name: None,
        }
    }

    #[test]
    fn blank_local_mappings_are_swap_and_ephemeral_disks() {
        let r = parsed(
            79,
            IMG,
            json!([
                {"source_type": "blank", "destination_type": "local", "volume_size": 1,
                 "guest_format": "ext4", "boot_index": -1},
                {"source_type": "blank", "destination_type": "local", "guest_format": "swap",
                 "volume_size": "512"}
            ]),
        )
        .expect("valid");
        assert!(r.mappings.is_empty());
        assert_eq!(r.local.len(), 2);
        assert!(!r.local[0].swap);
        assert_eq!(r.local[0].size, Some(1));
        assert_eq!(r.local[0].guest_format.as_deref(), Some("ext4"));
        assert!(r.local[1].swap);
        assert_eq!(r.local[1].size, Some(512));
        let blank = |extra: Value| {
            let mut m = json!({"source_type": "blank", "destination_type": "local"});
            if let (Some(o), Value::Object(e)) = (m.as_object_mut(), extra) {
                o.extend(e);
            }
            m
        };
        // At most one swap; a local disk is never the root; three local disks at most (the
        // image's root disk counts).
        let swap = blank(json!({"guest_format": "swap"}));
        assert_eq!(
            message(parsed(79, IMG, json!([swap, swap]))),
            "Block Device Mapping is Invalid: More than one swap drive requested."
        );
        assert_eq!(
            message(parsed(79, IMG, json!([blank(json!({"boot_index": 0}))]))),
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping combination is not valid."
        );
        let e = blank(json!({}));
        assert_eq!(
            message(parsed(79, IMG, json!([e, e, swap]))),
            "Block Device Mapping is Invalid: You specified more local devices than the limit allows"
        );
        assert!(parsed(79, IMG, json!([e, swap])).is_ok());
        // Volume-backed: no local root disk, three local disks fit.
        let vol = json!({"source_type": "volume", "uuid": VOL, "boot_index": 0});
        assert!(parsed(79, "", json!([vol, e, e, swap])).is_ok());
        assert!(parsed(79, IMG, json!([blank(json!({"guest_format": 5}))])).is_err());
    }

    #[test]
    fn local_disks_follow_novas_flavor_checks() {
        // No mapping: the flavor's ephemeral disk and swap, in that order.
        let disks = local_disks(&[], 512, 2).expect("valid");
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].kind, LocalDiskKind::Ephemeral);
        assert_eq!(disks[0].size_mib, 2048);
        assert_eq!(disks[0].device, "/dev/vdb");
        assert!(disks[0].from_flavor);
        assert_eq!(disks[1].kind, LocalDiskKind::Swap);
        assert_eq!(disks[1].size_mib, 512);
        assert_eq!(disks[1].device, "/dev/vdc");
        assert!(local_disks(&[], 0, 0).expect("valid").is_empty());
        // Mappings: their sizes, ephemerals first whatever the order asked.
        let disks = local_disks(
            &[
                local(true, Some(128)),
                local(false, Some(1)),
                local(false, Some(1)),
            ],
            512,
            2,
        )
        .expect("valid");
        let shown: Vec<(LocalDiskKind, i64, &str)> = disks
            .iter()
            .map(|d| (d.kind, d.size_mib, d.device.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                (LocalDiskKind::Ephemeral, 1024, "/dev/vdb"),
                (LocalDiskKind::Ephemeral, 1024, "/dev/vdc"),
                (LocalDiskKind::Swap, 128, "/dev/vdd"),
            ]
        );
        assert_eq!(LocalDisk::file_name(&disks, 0), "disk.eph0");
        assert_eq!(LocalDisk::file_name(&disks, 1), "disk.eph1");
        assert_eq!(LocalDisk::file_name(&disks, 2), "disk.swap");
        // A swap mapping replaces the flavor's swap; an ephemeral mapping the flavor's disk.
        let disks = local_disks(&[local(false, None)], 256, 2).expect("valid");
        assert_eq!(disks.len(), 2);
        assert_eq!(disks[0].size_mib, 2048);
        assert!(disks[0].from_flavor);
        let disks = local_disks(&[local(true, Some(64))], 256, 0).expect("valid");
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].size_mib, 64);
        assert!(!disks[0].from_flavor);
        // Refusals.
        let refused = |l: &[LocalRequest], swap: i64, eph: i64| match local_disks(l, swap, eph) {
            Err(ComputeError::BadRequest(m)) => m,
            other => panic!("not a 400: {other:?}"),
        };
        assert_eq!(
            refused(&[local(true, Some(1024))], 512, 0),
            "Swap drive requested is larger than instance type allows."
        );
        assert!(refused(&[local(true, Some(1))], 0, 0).starts_with("Swap drive requested"));
        assert!(
            refused(&[local(false, Some(2)), local(false, Some(1))], 0, 2)
                .starts_with("Ephemeral disks requested are larger than the instance type allows.")
        );
        // Without a size each takes the flavor's: two of them are too much.
        assert!(refused(&[local(false, None), local(false, None)], 0, 2).starts_with("Ephemeral"));
        assert!(refused(&[local(false, Some(1))], 0, 0).starts_with("Ephemeral"));
        assert_eq!(
            refused(&[local(true, None), local(true, None)], 512, 0),
            "Block Device Mapping is Invalid: More than one swap drive requested."
        );
    }

    #[test]
    fn legacy_mappings_name_their_root_by_device() {
        let mut m = Map::new();
        m.insert(
            "block_device_mapping".into(),
            json!([{"volume_id": VOL, "device_name": "vda", "delete_on_termination": true}]),
        );
        let r = parse(Mv(1), &m, "", 1).expect("valid");
        assert_eq!(r.image_id, "");
        assert_eq!(
            r.root().map(|m| m.source.clone()),
            Some(Source::Volume(VOL.into()))
        );
    }

    #[test]
    fn devices_follow_the_root_and_the_config_drive() {
        let data = Mapping {
            source: Source::Blank,
            volume_size: Some(1),
            boot_index: None,
            device_name: None,
            delete_on_termination: false,
            tag: None,
            volume_type: None,
        };
        let root = Mapping {
            boot_index: Some(0),
            ..data.clone()
        };
        assert_eq!(choose_device(&root, &[], 0), "/dev/vda");
        assert_eq!(choose_device(&data, &[], 0), "/dev/vdb");
        assert_eq!(choose_device(&data, &[], 1), "/dev/vdc");
        assert_eq!(choose_device(&data, &[], 3), "/dev/vde");
        let taken = vec![ServerVolume {
            device: "/dev/vdb".into(),
            ..Default::default()
        }];
        assert_eq!(choose_device(&data, &taken, 0), "/dev/vdc");
        let named = Mapping {
            device_name: Some("/dev/vdf".into()),
            ..data
        };
        assert_eq!(choose_device(&named, &taken, 0), "/dev/vdf");
    }

    mod prepared {
        use super::*;
        use crate::compute::fake_driver::FakeDriver;
        use crate::db::servers::{self as db, Server};

        struct Cloud {
            s: S,
            dir: std::path::PathBuf,
        }

        impl Drop for Cloud {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        /// A compute state over a fresh state file and the fake driver, with
        /// one BUILD server `srv` of project `p`.
        async fn cloud(name: &str) -> Cloud {
            let dir = std::env::temp_dir().join(format!("yunhe-bdm-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let db = crate::db::Db::open(&dir.join("yunhe.db")).expect("db");
            let identity = crate::identity::IdentityState::new(
                db,
                "http://127.0.0.1:1".into(),
                Arc::new(crate::policy::Policy::defaults().expect("policy")),
                Default::default(),
            )
            .expect("identity");
            let s = ComputeState::new(
                identity,
                Default::default(),
                Arc::new(FakeDriver::default()),
            );
            s.volumes.backend.prepare().expect("volume dir");
            let server = Server {
                id: "srv".into(),
                name: "vm".into(),
                project_id: "p".into(),
                user_id: "u".into(),
                vm_state: VmState::Building,
                task_state: Some(TaskState::Scheduling),
                reservation_id: "r-1".into(),
                hostname: "vm".into(),
                ..Default::default()
            };
            s.write(move |tx| {
                db::insert_server(tx, &server)?;
                crate::compute::build::record_action(tx, &server, "req", "create", 0)?;
                Ok(())
            })
            .await
            .expect("insert");
            Cloud { s, dir }
        }

        async fn stored(s: &S) -> Server {
            s.read(|conn| Ok(db::get_server(conn, "srv")?))
                .await
                .expect("read")
                .expect("server")
        }

        async fn volume(s: &S, id: &str) -> Option<vstore::Volume> {
            let id = id.to_string();
            s.volumes
                .read(move |conn| Ok(vstore::get_volume(conn, &id)?))
                .await
                .expect("read")
        }

        fn blank(size: i64, boot_index: Option<i64>, delete: bool) -> Mapping {
            Mapping {
                source: Source::Blank,
                volume_size: Some(size),
                boot_index,
                device_name: None,
                delete_on_termination: delete,
                tag: None,
                volume_type: None,
            }
        }

        #[tokio::test]
        async fn new_volumes_are_attached_and_recorded() {
            let c = cloud("made").await;
            let mut named = blank(2, None, true);
            named.device_name = Some("/dev/vdd".into());
            assert!(prepare(&c.s, "srv", &[blank(1, None, false), named], "req").await);
            let sv = stored(&c.s).await;
            assert_eq!(sv.task_state, Some(TaskState::BlockDeviceMapping));
            assert_eq!(sv.volumes.len(), 2);
            assert_eq!(sv.volumes[0].device, "/dev/vdb");
            assert_eq!(sv.volumes[1].device, "/dev/vdd");
            assert!(sv.volumes[1].delete_on_termination);
            assert!(sv.root_volume().is_none());
            for (v, size) in sv.volumes.iter().zip([1, 2]) {
                let got = volume(&c.s, &v.volume_id).await.expect("volume");
                assert_eq!(got.status, "in-use");
                assert_eq!(got.size, size);
                assert_eq!(got.attachments.len(), 1);
                assert_eq!(got.attachments[0].instance_uuid.as_deref(), Some("srv"));
                assert!(v.path.exists(), "{}", v.path.display());
            }
        }

        #[tokio::test]
        async fn a_failed_mapping_is_a_fault_and_its_volume_goes() {
            let c = cloud("failed").await;
            let missing = Mapping {
                source: Source::Snapshot("no-such-snapshot".into()),
                ..blank(1, None, true)
            };
            assert!(!prepare(&c.s, "srv", &[blank(1, Some(0), false), missing], "req").await);
            let sv = stored(&c.s).await;
            assert_eq!(sv.vm_state, VmState::Error);
            let fault = sv.fault.expect("fault");
            let details = fault["details"].as_str().unwrap_or_default();
            assert!(
                details.starts_with("block device mapping 1 (snapshot no-such-snapshot -> volume)"),
                "{details}"
            );
            // The one made before stays attached (server delete settles it).
            assert_eq!(sv.volumes.len(), 1);
            assert_eq!(sv.volumes[0].boot_index, Some(0));
            assert_eq!(sv.volumes[0].device, "/dev/vda");
            let action =
                c.s.read(|conn| Ok(db::get_action(conn, "srv", "req")?))
                    .await
                    .expect("read")
                    .expect("action");
            assert_eq!(action.message.as_deref(), Some("Error"));
        }
    }
}
