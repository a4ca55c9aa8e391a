//! The mappings of a server create: `block_device_mapping_v2` (each item
//! in `v2`) or the legacy `block_device_mapping`, and Nova's checks across
//! them (one root, the boot sequence, the local devices, `max_count`).

use super::local::MAX_LOCAL_DEVICES;
use super::v2::{BdmV2, Item, LegacyBdm, device_name, parse_v2};
use super::{Mapping, Requested, Source, bad, invalid_bdm};
use crate::compute::{ComputeResult, Mv};

/// One legacy `block_device_mapping` item (`volume_id` or `snapshot_id`
/// with `device_name`): the root disk when it names `vda`.
fn parse_legacy(item: LegacyBdm) -> ComputeResult<Option<Mapping>> {
    let source = match (item.volume_id, item.snapshot_id) {
        (Some(v), _) => Source::Volume(v.0),
        (None, Some(s)) => Source::Snapshot(s.0),
        (None, None) if item.no_device.is_some() => return Ok(None),
        (None, None) => return Err(invalid_bdm("Missing device UUID.")),
    };
    let device = item.device_name.map(device_name).transpose()?;
    let root = device.as_deref() == Some("/dev/vda");
    Ok(Some(Mapping {
        source,
        volume_size: item.volume_size.map(|s| s.0).filter(|s| *s > 0),
        boot_index: root.then_some(0),
        device_name: device,
        delete_on_termination: item.delete_on_termination.is_some_and(|b| b.0),
        tag: None,
        volume_type: None,
    }))
}

/// The mappings a create gives: `block_device_mapping_v2`, else the legacy
/// `block_device_mapping`.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub v2: Option<Vec<BdmV2>>,
    pub legacy: Option<Vec<LegacyBdm>>,
}

/// Reads the mappings of a create as Nova does, given its `imageRef` (may
/// be empty) and `max_count`.
pub fn parse(mv: Mv, given: Given, image_ref: &str, max_count: i64) -> ComputeResult<Requested> {
    let mut image_id = image_ref.to_string();
    let mut mappings = Vec::new();
    let mut local = Vec::new();
    let mut image_local = false;
    let mut boot_indexes = Vec::new();
    if let Some(items) = given.v2 {
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
    } else if let Some(items) = given.legacy {
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
    if mappings.len() > crate::compute::volumes::MAX_VOLUMES {
        return Err(bad(format!(
            "The maximum allowed number of block devices is {}.",
            crate::compute::volumes::MAX_VOLUMES
        )));
    }
    Ok(Requested {
        image_id,
        mappings,
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::ComputeError;
    use serde_json::{Value, json};

    const VOL: &str = "0b6f3c56-52b6-4d0e-9d8e-2f7a3f0d1a11";
    const IMG: &str = "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c";

    /// The mappings as a create's body gives them.
    fn given(key: &str, bdms: Value) -> ComputeResult<Given> {
        #[derive(serde::Deserialize)]
        struct Server {
            #[serde(default)]
            block_device_mapping_v2: Option<Vec<BdmV2>>,
            #[serde(default)]
            block_device_mapping: Option<Vec<LegacyBdm>>,
        }
        let server: Server = crate::compute::request::action_arg("server", json!({ key: bdms }))?;
        Ok(Given {
            v2: server.block_device_mapping_v2,
            legacy: server.block_device_mapping,
        })
    }

    fn parsed(mv: u16, image: &str, bdms: Value) -> ComputeResult<Requested> {
        parse(Mv(mv), given("block_device_mapping_v2", bdms)?, image, 1)
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
            message(parse(
                Mv(1),
                given("block_device_mapping_v2", one).expect("given"),
                "",
                2
            )),
            "Cannot attach one or more volumes to multiple instances"
        );
        // The same device twice.
        let twice = json!([
            {"source_type": "volume", "uuid": VOL, "boot_index": 0, "device_name": "/dev/vdb"},
            {"source_type": "blank", "destination_type": "volume", "volume_size": 1, "device_name": "vdb"}
        ]);
        assert!(message(parsed(1, "", twice)).contains("used more than once"));
    }

    #[test]
    fn legacy_mappings_name_their_root_by_device() {
        let legacy = given(
            "block_device_mapping",
            json!([{"volume_id": VOL, "device_name": "vda", "delete_on_termination": true}]),
        )
        .expect("given");
        let r = parse(Mv(1), legacy, "", 1).expect("valid");
        assert_eq!(r.image_id, "");
        assert_eq!(
            r.root().map(|m| m.source.clone()),
            Some(Source::Volume(VOL.into()))
        );
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
}
