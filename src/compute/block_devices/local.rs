//! The `blank → local` mappings: the server's swap and ephemeral disks,
//! with the flavor's.

use super::{bad, invalid_bdm};
use crate::compute::ComputeResult;
use crate::db::servers::{LocalDisk, LocalDiskKind};

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
mod tests {
    use super::*;
    use crate::compute::ComputeError;

    fn local(swap: bool, size: Option<i64>) -> LocalRequest {
        LocalRequest {
            swap,
            size,
            guest_format: swap.then(|| "swap".to_string()),
            device_name: None,
        }
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
}
