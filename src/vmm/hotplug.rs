//! Hot-adding and removing devices of a running VM (the control socket's `add_disk`,
//! `add_net` and `remove_device`): the device model is built from a descriptor the client
//! handed over, plugged into a free slot of bus 0 and announced through the hotplug controller
//! (`devices::hotplug`) and the GED; a removal asks the guest to eject the slot and waits for
//! its `_EJ0` (the eject itself unplugs the device, on the vCPU that wrote it). `resize_disk`
//! (no slot change) lets a disk take its grown image's size.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Duration;

use super::bus::lock;
use super::devices::hotplug::{MAX_SLOT, slot_bit};
use super::devices::legacy::acpi_pm::GED_PCI_HOTPLUG;
use super::devices::pci::{PciRoot, SlotConfig};
use super::devices::virtio::block::{RawFileBackend, VirtioBlock};
use super::devices::virtio::net::{FdBackend, VirtioNet};
use super::devices::virtio::{ResizeError, Resized, VirtioDevice};
use super::vm::RunningVm;
use super::vmm_config::{DiskConfig, NetConfig, VmConfig};

/// Longest device id.
pub use super::devices::factory::MAX_ID_LEN;
/// Longest disk serial (virtio-blk's id field).
pub const MAX_SERIAL_LEN: usize = 20;
/// How long a removal waits for the guest's eject when the request names no timeout.
pub const DEFAULT_EJECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest eject wait a request may ask for.
pub const MAX_EJECT_TIMEOUT_S: u64 = 120;

/// Why a hotplug request failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HotplugError {
    /// Every PCI slot of the VM is in use
    #[error("every PCI slot of the VM is in use")]
    NoFreeSlot,
    /// No device is called {0:?}
    #[error("no device is called {0:?}")]
    UnknownId(String),
    /// A device is already called {0:?}
    #[error("a device is already called {0:?}")]
    DuplicateId(String),
    /// Invalid request: {0}
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The guest did not eject {0:?} within {1} s (the removal stays requested: a later eject still completes it)
    #[error(
        "the guest did not eject {0:?} within {1} s (the removal stays requested: a later eject still completes it)"
    )]
    EjectTimeout(String, u64),
    /// The device cannot be set up: {0}
    #[error("the device cannot be set up: {0}")]
    Device(String),
}

impl HotplugError {
    /// The machine-readable kind of the error (`kind` of the refusal on the socket).
    pub fn kind(&self) -> &'static str {
        match self {
            HotplugError::NoFreeSlot => "no_free_slot",
            HotplugError::UnknownId(_) => "unknown_id",
            HotplugError::DuplicateId(_) => "duplicate_id",
            HotplugError::Invalid(_) => "invalid",
            HotplugError::EjectTimeout(..) => "eject_timeout",
            HotplugError::Device(_) => "device",
        }
    }
}

/// Checks a device id: 1 to [`MAX_ID_LEN`] of `A-Z a-z 0-9 . _ -`.
pub fn check_id(id: &str) -> Result<(), HotplugError> {
    if !super::devices::factory::valid_id(id) {
        return Err(HotplugError::Invalid(format!(
            "a device id is 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn check_serial(serial: &str) -> Result<(), HotplugError> {
    if serial.len() > MAX_SERIAL_LEN || !serial.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HotplugError::Invalid(format!(
            "a disk serial is at most {MAX_SERIAL_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

/// A locally administered, unicast MAC address.
fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Whether `fd` was opened for writing.
fn writable(fd: &impl std::os::fd::AsRawFd) -> bool {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    flags >= 0 && flags & libc::O_ACCMODE != libc::O_RDONLY
}

/// A device the control socket added: its name, slot and (NICs) MAC.
#[derive(Clone, Debug, PartialEq)]
pub struct Added {
    /// The id to remove it by.
    pub id: String,
    /// Its PCI slot (device number on bus 0; the guest's `/sys/bus/pci/slots/N`).
    pub slot: u8,
    /// A NIC's MAC address.
    pub mac: Option<String>,
}

/// A disk to hot-add.
pub struct DiskRequest {
    /// The image, opened by the client.
    pub file: File,
    /// Attach read-only.
    pub read_only: bool,
    /// The serial the guest sees (the id when absent).
    pub serial: Option<String>,
    /// The id (`disk<N>` when absent).
    pub id: Option<String>,
    /// The image's path as the client knows it (recorded in a saved configuration).
    pub path: Option<PathBuf>,
}

/// A NIC to hot-add.
pub struct NetRequest {
    /// The tap, opened by the client.
    pub tap_fd: OwnedFd,
    /// The tap's name (recorded in a saved configuration).
    pub tap: Option<String>,
    /// MAC address (a random local one when absent).
    pub mac: Option<String>,
    /// The id (`net<N>` when absent).
    pub id: Option<String>,
}

impl RunningVm {
    /// The configuration of the VM as its bus is now, and each device's name and slot in the
    /// factory's order (disks, network cards, rng): what `save` records.
    pub fn current_config(&self, root: &PciRoot) -> (VmConfig, Vec<(String, u8)>) {
        let mut config = self.config.clone();
        let mut disks = Vec::new();
        let mut nets = Vec::new();
        let mut rng = Vec::new();
        for (slot, s) in root.slots() {
            match &s.kind {
                SlotConfig::Disk(d) => disks.push((d.clone(), (s.name.clone(), slot))),
                SlotConfig::Net(n) => {
                    let mut n = n.clone();
                    n.id = Some(s.name.clone());
                    nets.push((n, (s.name.clone(), slot)))
                }
                SlotConfig::Rng => rng.push((s.name.clone(), slot)),
                SlotConfig::Other => {}
            }
        }
        let mut order = Vec::new();
        config.disks = disks
            .into_iter()
            .map(|(d, p)| {
                order.push(p);
                d
            })
            .collect();
        config.nets = nets
            .into_iter()
            .map(|(n, p)| {
                order.push(p);
                n
            })
            .collect();
        config.rng = !rng.is_empty();
        order.extend(rng.into_iter().take(1));
        (config, order)
    }

    /// The configuration a reboot of this VM (a guest reset) builds its next boot from: the
    /// devices on the bus now (hot-added ones included, removed ones left out), each under its
    /// current name and with the descriptor `descriptors` holds for that name (the one its
    /// boot or its hot-add handed over, kept open by the caller); a device without one is
    /// opened by its path, as a restore does.
    pub fn reboot_config(&self, descriptors: &HashMap<String, RawFd>) -> VmConfig {
        let (mut config, order) = self.current_config(&lock(&self.pci));
        let mut names = order.into_iter().map(|(name, _)| name);
        for d in &mut config.disks {
            let name = names.next();
            d.fd = name.as_ref().and_then(|n| descriptors.get(n).copied());
            d.id = name;
        }
        for n in &mut config.nets {
            let name = names.next();
            n.fd = name.as_ref().and_then(|n| descriptors.get(n).copied());
            n.id = name;
        }
        config
    }

    fn unused_name(root: &PciRoot, prefix: &str) -> String {
        (0..=u32::from(MAX_SLOT) + 1)
            .map(|i| format!("{prefix}{i}"))
            .find(|n| root.find(n).is_none())
            .unwrap_or_else(|| format!("{prefix}x"))
    }

    /// Plugs `dev` into a free slot and tells the guest.
    fn hot_add(
        &self,
        id: Option<String>,
        prefix: &str,
        kind: SlotConfig,
        dev: Box<dyn VirtioDevice>,
    ) -> Result<(String, u8), HotplugError> {
        let _one = lock(&self.hotplug_lock);
        let (name, slot) = {
            let root = lock(&self.pci);
            let name = match id {
                Some(id) => {
                    check_id(&id)?;
                    if root.find(&id).is_some() {
                        return Err(HotplugError::DuplicateId(id));
                    }
                    id
                }
                None => Self::unused_name(&root, prefix),
            };
            // A slot whose eject is still awaited is not free, even if it looks empty.
            let slot = (1..=MAX_SLOT)
                .find(|s| {
                    root.slots().all(|(t, _)| t != *s) && !self.hotplug.removing(*s) && {
                        slot_bit(*s) != 0
                    }
                })
                .ok_or(HotplugError::NoFreeSlot)?;
            (name, slot)
        };
        let (pdev, irqs) = super::devices::pci::plug_device(
            &self.vm,
            &self.routing,
            &self.mem,
            dev,
            slot,
            None,
            true,
        )
        .map_err(HotplugError::Device)?;
        if let Err(e) = lock(&self.pci).add_at(slot, name.clone(), kind, pdev, Some(irqs.clone())) {
            irqs.release(&self.vm);
            return Err(HotplugError::Device(e.to_string()));
        }
        self.hotplug.plugged(slot);
        if let Err(e) = self.ged.raise(GED_PCI_HOTPLUG) {
            eprintln!("yunhe vmm: cannot raise the hotplug event: {e}");
        }
        Ok((name, slot))
    }

    /// Hot-adds a virtio-blk disk.
    pub fn add_disk(&self, req: DiskRequest) -> Result<Added, HotplugError> {
        if let Some(s) = &req.serial {
            check_serial(s)?;
        }
        if !req.read_only && !writable(&req.file) {
            return Err(HotplugError::Invalid(
                "the disk's descriptor is read-only: add it with read_only".into(),
            ));
        }
        let backend =
            RawFileBackend::new(req.file).map_err(|e| HotplugError::Device(e.to_string()))?;
        let config = DiskConfig {
            path: req.path.unwrap_or_default(),
            read_only: req.read_only,
            serial: req.serial.clone(),
            fd: None,
            id: None,
        };
        // The serial defaults to the id, which is only known once it is chosen: build the
        // model with a placeholder and fix the serial below (VirtioBlock takes it at creation).
        let id = match req.id {
            Some(id) => id,
            None => Self::unused_name(&lock(&self.pci), "disk"),
        };
        check_id(&id)?;
        let serial = req
            .serial
            .unwrap_or_else(|| id.chars().take(MAX_SERIAL_LEN).collect());
        let mut config = config;
        config.serial = Some(serial.clone());
        let dev = Box::new(VirtioBlock::new(Box::new(backend), req.read_only, &serial));
        let (id, slot) = self.hot_add(Some(id), "disk", SlotConfig::Disk(config), dev)?;
        Ok(Added {
            id,
            slot,
            mac: None,
        })
    }

    /// Hot-adds a virtio-net NIC on a tap.
    pub fn add_net(&self, req: NetRequest) -> Result<Added, HotplugError> {
        let mac = match &req.mac {
            Some(m) => super::parse_mac(m)
                .ok_or_else(|| HotplugError::Invalid(format!("bad MAC address {m:?}")))?,
            None => random_mac(),
        };
        if let Some(t) = &req.tap
            && (t.is_empty() || t.len() >= libc::IFNAMSIZ)
        {
            return Err(HotplugError::Invalid(format!("bad tap name {t:?}")));
        }
        let backend =
            FdBackend::new(req.tap_fd).map_err(|e| HotplugError::Device(e.to_string()))?;
        let mac_text = format_mac(&mac);
        let config = NetConfig {
            tap: req.tap.unwrap_or_default(),
            mac: Some(mac_text.clone()),
            fd: None,
            // `current_config` records the name the slot gets.
            id: None,
        };
        let dev = Box::new(VirtioNet::new(Box::new(backend), mac));
        let (id, slot) = self.hot_add(req.id, "net", SlotConfig::Net(config), dev)?;
        Ok(Added {
            id,
            slot,
            mac: Some(mac_text),
        })
    }

    /// Disk `id`'s image grew: the disk takes the image's size now (never a size from the
    /// caller: the file is the truth) and tells the guest (configuration change). A smaller
    /// image is refused and the disk keeps its capacity.
    pub fn resize_disk(&self, id: &str) -> Result<Resized, HotplugError> {
        let device = {
            let root = lock(&self.pci);
            let (_, s) = root
                .slots()
                .find(|(_, s)| s.name == id)
                .ok_or_else(|| HotplugError::UnknownId(id.into()))?;
            if !matches!(s.kind, SlotConfig::Disk(_)) {
                return Err(HotplugError::Invalid(format!("{id:?} is not a disk")));
            }
            s.device.clone()
        };
        let mut dev = lock(&device);
        dev.resize().map_err(|e| match e {
            ResizeError::Io(e) => HotplugError::Device(e.to_string()),
            other => HotplugError::Invalid(other.to_string()),
        })
    }

    /// Asks the guest to eject device `id` and waits (at most `timeout`) for it; the eject
    /// unplugs the device. Returns its slot.
    pub fn remove_device(&self, id: &str, timeout: Duration) -> Result<u8, HotplugError> {
        let _one = lock(&self.hotplug_lock);
        let slot = {
            let root = lock(&self.pci);
            let slot = root
                .find(id)
                .ok_or_else(|| HotplugError::UnknownId(id.into()))?;
            if let Some((_, s)) = root.slots().find(|(s, _)| *s == slot)
                && matches!(s.kind, SlotConfig::Rng)
            {
                return Err(HotplugError::Invalid(
                    "only disks and network cards can be removed".into(),
                ));
            }
            slot
        };
        self.hotplug.request_removal(slot);
        if let Err(e) = self.ged.raise(GED_PCI_HOTPLUG) {
            eprintln!("yunhe vmm: cannot raise the hotplug event: {e}");
        }
        if self.hotplug.wait_ejected(slot, timeout) {
            Ok(slot)
        } else {
            Err(HotplugError::EjectTimeout(id.into(), timeout.as_secs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_serials_are_checked() {
        assert!(check_id("vol-1.a_b").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a/b").is_err());
        assert!(check_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(check_serial("config-2").is_ok());
        assert!(check_serial("has space").is_err());
        assert!(check_serial(&"s".repeat(21)).is_err());
        assert_eq!(HotplugError::NoFreeSlot.kind(), "no_free_slot");
        assert_eq!(format_mac(&[2, 0, 0, 0xab, 0, 1]), "02:00:00:ab:00:01");
        assert_eq!(random_mac()[0] & 3, 2);
    }
}
