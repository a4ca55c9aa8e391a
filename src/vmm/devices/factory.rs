//! Builds the virtio device models a [`VmConfig`] asks for.

use crate::vmm::devices::virtio::VirtioDevice;
use crate::vmm::vm::{VmConfig, VmError};

/// Disks first, then network cards, then the rng: the probe and the tests rely on this order.
pub fn build(config: &VmConfig) -> Result<Vec<(String, Box<dyn VirtioDevice>)>, VmError> {
    let out: Vec<(String, Box<dyn VirtioDevice>)> = Vec::new();
    if !config.disks.is_empty() || !config.nets.is_empty() || config.rng {
        return Err(VmError::Device(
            "virtio".into(),
            "virtio devices are not wired yet".into(),
        ));
    }
    Ok(out)
}
