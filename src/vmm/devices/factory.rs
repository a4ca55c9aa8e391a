//! Builds the virtio device models a [`VmConfig`] asks for.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::devices::virtio::block::{RawFileBackend, VirtioBlock};
use crate::vmm::devices::virtio::net::{FdBackend, VirtioNet, open_tap};
use crate::vmm::devices::virtio::rng::VirtioRng;
use crate::vmm::parse_mac;
use crate::vmm::vmm_config::VmConfig;

/// Errors building the device models.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// Device {0}: {1}
    #[error("device {0}: {1}")]
    Device(String, String),
}

/// Device models with their names (`disk0`, `net0`, `rng0`).
pub type NamedDevices = Vec<(String, Box<dyn VirtioDevice>)>;

/// A locally administered, unicast MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// Takes ownership of an inherited descriptor after checking that it is open.
fn inherited(fd: i32, name: &str) -> Result<OwnedFd, FactoryError> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(FactoryError::Device(
            name.into(),
            format!("inherited fd {fd} is not open"),
        ));
    }
    // SAFETY: the spawner handed this descriptor to this process for this device only; it
    // is open (checked above) and nothing else in the VMM owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Longest device name.
pub const MAX_ID_LEN: usize = 32;

/// Whether `id` can name a device: 1 to [`MAX_ID_LEN`] of `A-Z a-z 0-9 . _ -`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Disks first, then network cards, then the rng: the probe and the tests rely on this order.
pub fn build(config: &VmConfig) -> Result<NamedDevices, FactoryError> {
    let mut out: NamedDevices = Vec::new();
    for (i, d) in config.disks.iter().enumerate() {
        let name = match &d.id {
            Some(id) if !valid_id(id) => {
                return Err(FactoryError::Device(
                    format!("disk{i}"),
                    format!("a device id is 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -"),
                ));
            }
            Some(id) if out.iter().any(|(n, _)| n == id) => {
                return Err(FactoryError::Device(id.clone(), "a duplicate id".into()));
            }
            Some(id) => id.clone(),
            None => format!("disk{i}"),
        };
        let backend = match d.fd {
            Some(fd) => RawFileBackend::new(inherited(fd, &name)?.into()),
            None => RawFileBackend::open(&d.path, d.read_only),
        }
        .map_err(|e| {
            FactoryError::Device(format!("{name} ({})", d.path.display()), e.to_string())
        })?;
        let serial = d.serial.clone().unwrap_or_else(|| {
            d.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| name.clone())
        });
        out.push((
            name,
            Box::new(VirtioBlock::new(Box::new(backend), d.read_only, &serial)),
        ));
    }
    for (i, n) in config.nets.iter().enumerate() {
        let name = match &n.id {
            Some(id) if !valid_id(id) => {
                return Err(FactoryError::Device(
                    format!("net{i}"),
                    format!("a device id is 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -"),
                ));
            }
            Some(id) if out.iter().any(|(n, _)| n == id) => {
                return Err(FactoryError::Device(id.clone(), "a duplicate id".into()));
            }
            Some(id) => id.clone(),
            None => format!("net{i}"),
        };
        let mac = match &n.mac {
            Some(m) => parse_mac(m)
                .ok_or_else(|| FactoryError::Device(name.clone(), format!("bad MAC {m:?}")))?,
            None => random_mac(),
        };
        let tap = match n.fd {
            Some(fd) => FdBackend::new(inherited(fd, &name)?),
            None => open_tap(&n.tap),
        }
        .map_err(|e| FactoryError::Device(format!("{name} (tap {})", n.tap), e.to_string()))?;
        out.push((name, Box::new(VirtioNet::new(Box::new(tap), mac))));
    }
    if config.rng {
        out.push(("rng0".into(), Box::new(VirtioRng::new())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::vmm_config::{BootSource, NetConfig};
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixDatagram;

    /// A NIC on one end of a datagram pair (the other end returned, to keep it open).
    fn nic(id: Option<&str>) -> (NetConfig, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().expect("pair");
        let fd = OwnedFd::from(a).into_raw_fd();
        let config = NetConfig {
            tap: "t".into(),
            mac: None,
            fd: Some(fd),
            id: id.map(str::to_string),
        };
        (config, b)
    }

    fn config(nets: Vec<NetConfig>) -> VmConfig {
        VmConfig {
            boot: BootSource::Probe,
            initrd: None,
            cmdline: None,
            memory_mib: 64,
            cpus: 1,
            disks: Vec::new(),
            nets,
            rng: true,
            console_log: None,
            log_boot_timer: false,
            huge_pages: false,
        }
    }

    #[test]
    fn nics_take_their_id_as_name() {
        let (named, _a) = nic(Some("5c0d51e2b3a44f6d8e9a0b1c2d3e4f50"));
        let (plain, _b) = nic(None);
        let built = build(&config(vec![named, plain])).expect("devices");
        let names: Vec<&str> = built.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["5c0d51e2b3a44f6d8e9a0b1c2d3e4f50", "net1", "rng0"]);
    }

    #[test]
    fn bad_and_duplicate_ids_are_refused() {
        assert!(valid_id("net-1.a_b") && !valid_id("") && !valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(MAX_ID_LEN + 1)));
        let (bad, _a) = nic(Some("a b"));
        assert!(build(&config(vec![bad])).is_err());
        let (first, _b) = nic(Some("same"));
        let (second, _c) = nic(Some("same"));
        assert!(build(&config(vec![first, second])).is_err());
    }
}
