//! The configuration of one VM (Firecracker's `vmm_config`): what it boots, its disks,
//! network cards and size. Plain serde types with no behaviour, shared by the builder, the
//! snapshot format, the device factory and the `yunhe vmm` spec.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the VM boots.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BootSource {
    /// A PVH ELF or bzImage.
    Kernel {
        /// Path of the image.
        path: PathBuf,
    },
    /// A PVH ELF firmware.
    Firmware {
        /// Path of the image.
        path: PathBuf,
    },
    /// The probe guest built into yunhe.
    Probe,
    /// The kernel, initrd and command line that a disk of the VM declares
    /// (its boot loader's configuration, read at every boot: see
    /// `vmm::diskboot`). The config's `initrd` is not used; its `cmdline`,
    /// when set, is appended to the disk's.
    Disk {
        /// Index into `disks`.
        disk: usize,
    },
}

/// A disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DiskConfig {
    /// Raw image path.
    pub path: PathBuf,
    /// Attach read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Serial id the guest sees (defaults to the file name).
    #[serde(default)]
    pub serial: Option<String>,
    /// An already open file descriptor of the image, inherited from the spawner
    /// (used instead of opening `path`).
    #[serde(default)]
    pub fd: Option<i32>,
    /// The device's name on the bus (`disk<N>` when absent): what `remove_device` takes.
    /// Compute names each attached volume's disk after the volume, so that it can detach
    /// it whatever its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A network interface on a tap.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NetConfig {
    /// Name of an existing tap device.
    pub tap: String,
    /// MAC address; a random locally administered one when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// An already open tap file descriptor, inherited from the spawner (used
    /// instead of opening `tap`).
    #[serde(default)]
    pub fd: Option<i32>,
    /// The device's name on the bus (`net<N>` when absent): what `remove_device` takes.
    /// Compute names each NIC after its port, so that it can detach the NIC whatever
    /// its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Everything needed to build a VM (also the `yunhe vmm` spec's `vm` part).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VmConfig {
    /// What to boot.
    pub boot: BootSource,
    /// Initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Guest memory, MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// vCPUs (1..=64).
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// Disks, in PCI slot order.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Network interfaces.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Attach a virtio-rng.
    #[serde(default)]
    pub rng: bool,
    /// Console log file (size-capped).
    #[serde(default)]
    pub console_log: Option<PathBuf>,
    /// Print boot-timer records on stderr.
    #[serde(default)]
    pub log_boot_timer: bool,
    /// Back guest RAM with transparent huge pages (`MADV_HUGEPAGE`): far fewer nested page
    /// faults, but a touched 2 MiB page is resident whole (see `vmm::memory`).
    #[serde(default)]
    pub huge_pages: bool,
}

fn default_memory() -> u64 {
    128
}
fn default_cpus() -> u8 {
    1
}

/// The default Linux command line. (It once ended in `noapictimer=0`, which Linux reads as
/// `noapictimer`: no local APIC timer, so a guest's sleeps never ended.)
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

#[cfg(test)]
mod tests {
    use super::DEFAULT_CMDLINE;

    /// Regression (lab: tiny under micro hung in its first `sleep` with the default command
    /// line): Linux matches `__setup` parameters by prefix, so `noapictimer=0` disabled the
    /// local APIC timer. The default line must not switch off timers or interrupt sources.
    #[test]
    fn default_cmdline_disables_nothing() {
        for word in DEFAULT_CMDLINE.split_whitespace() {
            let name = word.split('=').next().unwrap_or(word);
            assert!(
                !name.starts_with("no") && name != "nolapic" && name != "noapic",
                "{word} in the default command line"
            );
        }
        assert!(DEFAULT_CMDLINE.contains("console=ttyS0"));
    }
}
