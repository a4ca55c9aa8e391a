//! One `block_device_mapping_v2` item, read with Nova's schema and
//! `block_device` checks, and the member forms the legacy mappings share.

use serde_json::Value;

use super::local::LocalRequest;
use super::{Mapping, Source, bad, invalid_bdm};
use crate::compute::{ComputeError, ComputeResult, Mv};

pub(super) fn schema(field: &str, value: &Value, why: &str) -> ComputeError {
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
pub(super) fn int_like(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(t) => t.trim().parse().ok(),
        _ => None,
    }
}

/// Nova's `parameter_types.boolean`.
pub(super) fn bool_like(value: &Value) -> Option<bool> {
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
pub(super) fn device_name(value: &Value) -> ComputeResult<String> {
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

/// What one `block_device_mapping_v2` item is.
pub(super) enum Item {
    /// A volume.
    Volume(Mapping),
    /// The image as the local root disk (as imageRef).
    ImageLocal(Mapping),
    /// A local swap or ephemeral disk.
    Local(LocalRequest),
}

/// One `block_device_mapping_v2` item.
pub(super) fn parse_v2(mv: Mv, item: &Value) -> ComputeResult<Item> {
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
