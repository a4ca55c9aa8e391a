//! One `block_device_mapping_v2` item, read with Nova's schema and
//! `block_device` checks, and the member forms the legacy mappings share.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny};
use serde_json::Value;

use super::local::LocalRequest;
use super::{Mapping, Source, bad, invalid_bdm};
use crate::compute::request::{Tag, Text, present, unexpected};
use crate::compute::{ComputeResult, Mv};

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

/// Reads a JSON value and keeps what `accept` makes of it; otherwise the
/// error of Nova's schema for the member (`Value: {shown}. {why}`, a string
/// shown bare), worded by `impl From<BodyError> for ComputeError`.
fn nova_checked<'de, D, T>(
    d: D,
    accept: impl FnOnce(&Value) -> Option<T>,
    why: impl FnOnce(&Value) -> String,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Value::deserialize(d)?;
    accept(&value).ok_or_else(|| {
        let shown = match &value {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        de::Error::custom(format!("{shown}. {}", why(&value)))
    })
}

/// Declares a member type read by [`nova_checked`].
macro_rules! nova_member {
    ($(#[$doc:meta])* $name:ident($inner:ty), $accept:expr, $why:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                nova_checked(d, |v| ($accept)(v).map($name), $why)
            }
        }
    };
}

const NOT_VALID: &str = "is not valid under any of the given schemas";

fn not_valid(_: &Value) -> String {
    NOT_VALID.to_string()
}

fn not_a_string(v: &Value) -> String {
    format!("{v} is not of type 'string'")
}

nova_member!(
    /// `source_type`: one of Nova's four.
    SourceType(&'static str),
    |v: &Value| ["volume", "image", "snapshot", "blank"]
        .into_iter()
        .find(|t| v.as_str() == Some(*t)),
    |v: &Value| format!("'{}' is not one of {SOURCE_TYPES}", v.as_str().unwrap_or(""))
);

nova_member!(
    /// `destination_type`: `local` or `volume`.
    DestinationType(&'static str),
    |v: &Value| ["local", "volume"]
        .into_iter()
        .find(|t| v.as_str() == Some(*t)),
    |v: &Value| format!(
        "'{}' is not one of {DESTINATION_TYPES}",
        v.as_str().unwrap_or("")
    )
);

nova_member!(
    /// `uuid`: 1 to 255 of letters, digits, `.`, `_` and `-`.
    BdmUuid(String),
    |v: &Value| match v {
        Value::String(t)
            if !t.is_empty()
                && t.len() <= 255
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
        {
            Some(t.clone())
        }
        _ => None,
    },
    |_: &Value| "does not match '^[a-zA-Z0-9._-]*$'".to_string()
);

nova_member!(
    /// `boot_index`: an integer or a string of one (negative: not bootable).
    BootIndex(i64),
    int_like,
    not_valid
);

nova_member!(
    /// `volume_size`: a non-negative integer or a string of one (0: none).
    VolumeSize(i64),
    |v: &Value| int_like(v).filter(|i| *i >= 0),
    not_valid
);

nova_member!(
    /// `delete_on_termination`: Nova's `parameter_types.boolean`.
    BdmBool(bool),
    bool_like,
    not_valid
);

nova_member!(
    /// A string of at most 255 characters (`volume_type`, `guest_format`).
    Text255(String),
    |v: &Value| match v {
        Value::String(t) if t.chars().count() <= 255 => Some(t.clone()),
        _ => None,
    },
    not_a_string
);

nova_member!(
    /// `device_name` as Nova's schema takes it; [`device_name`] then makes
    /// it one of this cloud's names.
    DeviceName(String),
    |v: &Value| match v {
        Value::String(t)
            if !t.is_empty()
                && t.len() <= 255
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')) =>
        {
            Some(t.clone())
        }
        _ => None,
    },
    |v: &Value| match v {
        Value::String(t) => format!("'{t}' does not match '^[a-zA-Z0-9._-r/]*$'"),
        other => not_a_string(other),
    }
);

/// `vdb`, `/dev/vdb`, `sdb`, `xvdb` → `/dev/vdb` (this cloud's disks are virtio).
pub(super) fn device_name(given: DeviceName) -> ComputeResult<String> {
    let text = given.0;
    let name = text.strip_prefix("/dev/").unwrap_or(&text);
    let letters = name
        .trim_start_matches("xv")
        .trim_start_matches(['v', 's', 'h']);
    let letters = letters.strip_prefix('d').unwrap_or(letters);
    let suffix = letters.trim_end_matches(|c: char| c.is_ascii_digit());
    if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_lowercase()) || suffix.len() > 2 {
        return Err(invalid_bdm(&format!("Device name {text} is not valid.")));
    }
    Ok(format!("/dev/vd{suffix}"))
}

/// One `block_device_mapping_v2` item (Nova's `_block_device_mapping_v2`:
/// the legacy members and `block_device_mapping_new_item`; `tag` from
/// 2.42 and `volume_type` from 2.67, checked after decoding). `null` is
/// taken as absent for every member, as Nova's `from_api` does.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdmV2 {
    #[serde(default)]
    source_type: Option<SourceType>,
    #[serde(default)]
    destination_type: Option<DestinationType>,
    #[serde(default)]
    uuid: Option<BdmUuid>,
    #[serde(default)]
    boot_index: Option<BootIndex>,
    #[serde(default)]
    volume_size: Option<VolumeSize>,
    #[serde(default)]
    delete_on_termination: Option<BdmBool>,
    #[serde(default)]
    device_name: Option<DeviceName>,
    #[serde(default)]
    tag: Option<Tag>,
    #[serde(default)]
    volume_type: Option<Text255>,
    #[serde(default)]
    guest_format: Option<Text255>,
    /// Members of Nova's schema this cloud has no use for: accepted and
    /// ignored.
    #[serde(rename = "virtual_name", default)]
    _virtual_name: Option<IgnoredAny>,
    #[serde(rename = "volume_id", default)]
    _volume_id: Option<IgnoredAny>,
    #[serde(rename = "snapshot_id", default)]
    _snapshot_id: Option<IgnoredAny>,
    #[serde(rename = "image_id", default)]
    _image_id: Option<IgnoredAny>,
    #[serde(rename = "no_device", default)]
    _no_device: Option<IgnoredAny>,
    #[serde(rename = "connection_info", default)]
    _connection_info: Option<IgnoredAny>,
    #[serde(rename = "device_type", default)]
    _device_type: Option<IgnoredAny>,
    #[serde(rename = "disk_bus", default)]
    _disk_bus: Option<IgnoredAny>,
}

/// One legacy `block_device_mapping` item (Nova's
/// `_legacy_block_device_mapping`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyBdm {
    #[serde(default)]
    pub(super) volume_id: Option<Text>,
    #[serde(default)]
    pub(super) snapshot_id: Option<Text>,
    #[serde(default)]
    pub(super) volume_size: Option<VolumeSize>,
    #[serde(default)]
    pub(super) device_name: Option<DeviceName>,
    #[serde(default)]
    pub(super) delete_on_termination: Option<BdmBool>,
    /// Present (even `null`): the mapping maps nothing.
    #[serde(default, deserialize_with = "present")]
    pub(super) no_device: Option<Value>,
    #[serde(rename = "virtual_name", default)]
    _virtual_name: Option<IgnoredAny>,
    #[serde(rename = "connection_info", default)]
    _connection_info: Option<IgnoredAny>,
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
pub(super) fn parse_v2(mv: Mv, item: BdmV2) -> ComputeResult<Item> {
    for (key, given, min) in [
        ("tag", item.tag.is_some(), 42),
        ("volume_type", item.volume_type.is_some(), 67),
    ] {
        if given && !mv.at_least(min) {
            return Err(unexpected("block_device_mapping_v2", key));
        }
    }
    let Some(SourceType(source)) = item.source_type else {
        return Err(invalid_bdm("Invalid source_type field."));
    };
    let destination = match item.destination_type {
        None if matches!(source, "volume" | "snapshot") => "volume",
        None => "local",
        Some(DestinationType(d)) => d,
    };
    let uuid = item.uuid.map(|u| u.0);
    let boot_index = item.boot_index.map(|b| b.0).filter(|i| *i >= 0);
    let volume_size = item.volume_size.map(|v| v.0).filter(|v| *v > 0);
    let delete_on_termination = item.delete_on_termination.is_some_and(|b| b.0);
    let device_name = item.device_name.map(device_name).transpose()?;
    let tag = item.tag.map(|t| t.0);
    let volume_type = item.volume_type.map(|t| t.0);
    let guest_format = item.guest_format.map(|t| t.0);
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
