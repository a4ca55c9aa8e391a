//! Device models of the VMM: legacy platform devices, the PCI host bridge and virtio.

pub mod factory;
pub mod hotplug;
pub mod legacy;
pub mod pci;
pub mod virtio;
