//! Save and restore: a VM's whole state in a directory.
//!
//! ```text
//! DIR/state.json     format, version, the VmConfig, vCPUs, irqchip, PIT, clock, serial,
//!                    virtio-pci devices (queue positions), memory region list with SHA-256
//! DIR/state.sha256   SHA-256 of state.json (hex)
//! DIR/memory-N.raw   guest RAM region N, raw
//! ```
//!
//! Loading checks the format name and version, the state's checksum, every
//! memory file's size and checksum, and that the state fits the machine it is
//! restored into; anything else is a [`SnapshotError`], never a crash.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::memory::GuestMemoryMmap;
use kvm_bindings::{
    Msrs, kvm_clock_data, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

use super::devices::virtio::pci::VirtioPciState;
use super::vmm_config::VmConfig;

/// Format name in state.json.
pub const FORMAT: &str = "yunhe-vm-state";
/// Current format version.
pub const VERSION: u32 = 1;

/// Errors saving or loading a state directory.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Cannot write the state to {0}: {1}
    #[error("cannot write the state to {0}: {1}")]
    Write(String, std::io::Error),
    /// Cannot read the state from {0}: {1}
    #[error("cannot read the state from {0}: {1}")]
    Read(String, std::io::Error),
    /// The state directory is corrupt or truncated: {0}
    #[error("the state directory is corrupt or truncated: {0}")]
    Corrupt(String),
    /// The state directory is not a yunhe VM state of a supported version: {0}
    #[error("the state directory is not a yunhe VM state of a supported version: {0}")]
    Foreign(String),
    /// KVM refused {0}: {1}
    #[error("KVM refused {0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// The VM did not pause in time
    #[error("the VM did not pause in time")]
    NotPaused,
}

/// MSRs saved per vCPU (those KVM cannot read are skipped).
const SAVED_MSRS: &[u32] = &[
    0x10,        // TSC
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x1a0,       // MISC_ENABLE
    0x277,       // PAT
    0x6e0,       // TSC_DEADLINE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SYSCALL_MASK
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0103, // TSC_AUX
    0x4b56_4d00, // KVM wall clock
    0x4b56_4d01, // KVM system time
    0x4b56_4d02, // KVM async PF
    0x4b56_4d03, // KVM steal time
    0x4b56_4d04, // KVM PV EOI
];

/// One vCPU's state.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    lapic: kvm_lapic_state,
    mp_state: kvm_mp_state,
    events: kvm_vcpu_events,
    msrs: Vec<(u32, u64)>,
}

impl VcpuState {
    /// Reads the state of a stopped (not running) vCPU.
    pub fn capture(vcpu: &VcpuFd) -> Result<Self, SnapshotError> {
        let k = |what| move |e| SnapshotError::Kvm(what, e);
        let mut msrs = Vec::new();
        for &index in SAVED_MSRS {
            let Ok(mut m) = Msrs::from_entries(&[kvm_msr_entry {
                index,
                ..Default::default()
            }]) else {
                continue;
            };
            if vcpu.get_msrs(&mut m) == Ok(1)
                && let Some(e) = m.as_slice().first()
            {
                msrs.push((e.index, e.data));
            }
        }
        Ok(VcpuState {
            mp_state: vcpu.get_mp_state().map_err(k("mp_state"))?,
            regs: vcpu.get_regs().map_err(k("regs"))?,
            sregs: vcpu.get_sregs().map_err(k("sregs"))?,
            // SAFETY-free path: get_xsave allocates and fills a kvm_xsave.
            xsave: get_xsave(vcpu)?,
            xcrs: vcpu.get_xcrs().map_err(k("xcrs"))?,
            lapic: vcpu.get_lapic().map_err(k("lapic"))?,
            events: vcpu.get_vcpu_events().map_err(k("vcpu events"))?,
            msrs,
        })
    }

    /// Writes the state into a freshly created, configured vCPU.
    pub fn apply(&self, vcpu: &VcpuFd) -> Result<(), SnapshotError> {
        let k = |what| move |e| SnapshotError::Kvm(what, e);
        vcpu.set_sregs(&self.sregs).map_err(k("sregs"))?;
        vcpu.set_regs(&self.regs).map_err(k("regs"))?;
        // SAFETY: the kvm_xsave comes from KVM_GET_XSAVE of the same kind of vCPU; KVM
        // validates its contents and the size is the fixed 4 KiB legacy region.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(k("xsave"))?;
        vcpu.set_xcrs(&self.xcrs).map_err(k("xcrs"))?;
        let entries: Vec<kvm_msr_entry> = self
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries)
            .map_err(|_| SnapshotError::Corrupt("too many MSRs".into()))?;
        vcpu.set_msrs(&msrs).map_err(k("msrs"))?;
        vcpu.set_lapic(&self.lapic).map_err(k("lapic"))?;
        vcpu.set_mp_state(self.mp_state).map_err(k("mp_state"))?;
        vcpu.set_vcpu_events(&self.events).map_err(k("vcpu events"))
    }
}

fn get_xsave(vcpu: &VcpuFd) -> Result<kvm_xsave, SnapshotError> {
    vcpu.get_xsave().map_err(|e| SnapshotError::Kvm("xsave", e))
}

/// The 16550's registers (vm-superio's `SerialState`, which has no serde).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SerialSnapshot {
    regs: [u8; 9],
    in_buffer: Vec<u8>,
}

impl SerialSnapshot {
    /// From vm-superio's state.
    pub fn from_state(s: &vm_superio::serial::SerialState) -> Self {
        SerialSnapshot {
            regs: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer.clone(),
        }
    }

    /// Back to vm-superio's state.
    pub fn to_state(&self) -> vm_superio::serial::SerialState {
        let r = self.regs;
        vm_superio::serial::SerialState {
            baud_divisor_low: r[0],
            baud_divisor_high: r[1],
            interrupt_enable: r[2],
            interrupt_identification: r[3],
            line_control: r[4],
            line_status: r[5],
            modem_control: r[6],
            modem_status: r[7],
            scratch: r[8],
            in_buffer: self.in_buffer.clone(),
        }
    }
}

/// A saved memory region.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemoryFile {
    /// Guest physical start.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// File name inside the directory.
    pub file: String,
    /// SHA-256 of the file (hex).
    pub sha256: String,
}

/// The whole VM.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The machine's configuration.
    pub config: VmConfig,
    /// One per vCPU.
    pub vcpus: Vec<VcpuState>,
    /// PIC master, PIC slave, IOAPIC.
    pub irqchips: Vec<kvm_irqchip>,
    /// The PIT.
    pub pit: kvm_pit_state2,
    /// kvmclock.
    pub clock: kvm_clock_data,
    /// The host's wall clock (ns since the Unix epoch) when `clock` was read; 0 in older states.
    #[serde(default)]
    pub saved_at_unix_ns: u64,
    /// COM1.
    pub serial: SerialSnapshot,
    /// virtio-pci devices in the order the device factory builds the configuration's
    /// (disks, network cards, rng).
    pub devices: Vec<VirtioPciState>,
    /// Each device's name and PCI slot, in the order of `devices` (empty in states saved before
    /// hotplug: device `i` is then in slot `i + 1` with the factory's name).
    #[serde(default)]
    pub placement: Vec<(String, u8)>,
    /// RAM regions.
    pub memory: Vec<MemoryFile>,
}

/// Reads the VM-wide KVM state (irqchips, PIT, clock).
pub fn capture_vm(
    vm: &VmFd,
) -> Result<(Vec<kvm_irqchip>, kvm_pit_state2, kvm_clock_data), SnapshotError> {
    let mut chips = Vec::new();
    for chip_id in 0..3 {
        let mut c = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut c)
            .map_err(|e| SnapshotError::Kvm("irqchip", e))?;
        chips.push(c);
    }
    let pit = vm.get_pit2().map_err(|e| SnapshotError::Kvm("PIT", e))?;
    let clock = vm.get_clock().map_err(|e| SnapshotError::Kvm("clock", e))?;
    Ok((chips, pit, clock))
}

/// Writes the VM-wide KVM state back.
pub fn apply_vm(vm: &VmFd, state: &VmState) -> Result<(), SnapshotError> {
    if state.irqchips.len() != 3 {
        return Err(SnapshotError::Corrupt("irqchip count".into()));
    }
    for c in &state.irqchips {
        vm.set_irqchip(c)
            .map_err(|e| SnapshotError::Kvm("irqchip", e))?;
    }
    vm.set_pit2(&state.pit)
        .map_err(|e| SnapshotError::Kvm("PIT", e))?;
    let clock = kvm_clock_data {
        clock: restored_clock(state.clock.clock, state.saved_at_unix_ns, unix_now_ns()),
        ..Default::default()
    };
    vm.set_clock(&clock)
        .map_err(|e| SnapshotError::Kvm("clock", e))
}

/// The host's wall clock in ns since the Unix epoch (0 if it is before 1970).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The kvmclock value to restore: the saved one moved on by the wall-clock time the VM spent
/// saved, so the guest's wall clock (which Linux only reads at boot, then keeps with kvmclock)
/// is right again after a restore, as it is after a pause. A state without a save time, or a
/// host clock that went backwards, restores the saved value as it is.
pub fn restored_clock(saved_clock: u64, saved_at_unix_ns: u64, now_unix_ns: u64) -> u64 {
    if saved_at_unix_ns == 0 || now_unix_ns <= saved_at_unix_ns {
        return saved_clock;
    }
    saved_clock.saturating_add(now_unix_ns - saved_at_unix_ns)
}

fn hex_digest(d: Sha256) -> String {
    hex::encode(d.finalize())
}

fn hash_file(path: &Path) -> Result<(u64, String), SnapshotError> {
    let mut f = File::open(path).map_err(|e| SnapshotError::Read(path.display().to_string(), e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| SnapshotError::Read(path.display().to_string(), e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((total, hex_digest(h)))
}

/// Writes guest memory to `dir`; returns the region list.
pub fn save_memory(mem: &GuestMemoryMmap, dir: &Path) -> Result<Vec<MemoryFile>, SnapshotError> {
    let mut out = Vec::new();
    for (i, r) in mem.iter().enumerate() {
        let name = format!("memory-{i}.raw");
        let path = dir.join(&name);
        let werr = |e: std::io::Error| SnapshotError::Write(path.display().to_string(), e);
        let mut f = File::create(&path).map_err(werr)?;
        let start = r.start_addr();
        mem.write_all_volatile_to(start, &mut f, r.len() as usize)
            .map_err(|e| {
                SnapshotError::Write(
                    path.display().to_string(),
                    std::io::Error::other(e.to_string()),
                )
            })?;
        f.sync_all().map_err(werr)?;
        let (size, sha256) = hash_file(&path)?;
        out.push(MemoryFile {
            start: start.0,
            size,
            file: name,
            sha256,
        });
    }
    Ok(out)
}

/// Writes `state` (whose `memory` is already filled) to `dir`.
pub fn write_state(dir: &Path, state: &VmState) -> Result<(), SnapshotError> {
    let path = dir.join("state.json");
    let werr = |e: std::io::Error| SnapshotError::Write(path.display().to_string(), e);
    let json = serde_json::to_vec(state).map_err(|e| werr(std::io::Error::other(e)))?;
    let mut f = File::create(&path).map_err(werr)?;
    f.write_all(&json).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    let mut h = Sha256::new();
    h.update(&json);
    std::fs::write(dir.join("state.sha256"), hex_digest(h)).map_err(werr)
}

/// Reads and checks `dir/state.json` (not the memory files; see [`check_memory`]).
pub fn read_state(dir: &Path) -> Result<VmState, SnapshotError> {
    let path = dir.join("state.json");
    let json =
        std::fs::read(&path).map_err(|e| SnapshotError::Read(path.display().to_string(), e))?;
    let want = std::fs::read_to_string(dir.join("state.sha256"))
        .map_err(|e| SnapshotError::Read(dir.join("state.sha256").display().to_string(), e))?;
    let mut h = Sha256::new();
    h.update(&json);
    if hex_digest(h) != want.trim() {
        return Err(SnapshotError::Corrupt(
            "state.json does not match state.sha256".into(),
        ));
    }
    let probe: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| SnapshotError::Corrupt(format!("state.json: {e}")))?;
    if probe.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
        return Err(SnapshotError::Foreign("wrong format name".into()));
    }
    if probe.get("version").and_then(|v| v.as_u64()) != Some(u64::from(VERSION)) {
        return Err(SnapshotError::Foreign(format!(
            "version {:?}, this yunhe reads {VERSION}",
            probe.get("version")
        )));
    }
    serde_json::from_value(probe).map_err(|e| SnapshotError::Corrupt(format!("state.json: {e}")))
}

/// Checks every memory file against the state (size and SHA-256) and the guest memory layout.
pub fn check_memory(
    dir: &Path,
    state: &VmState,
    mem: &GuestMemoryMmap,
) -> Result<(), SnapshotError> {
    let regions: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    if regions.len() != state.memory.len() {
        return Err(SnapshotError::Corrupt("memory region count".into()));
    }
    for (m, (start, len)) in state.memory.iter().zip(regions) {
        if m.start != start || m.size != len || m.file.contains('/') || m.file.contains("..") {
            return Err(SnapshotError::Corrupt(format!(
                "memory region {} does not fit the machine",
                m.file
            )));
        }
        let (size, sha) = hash_file(&dir.join(&m.file))?;
        if size != m.size {
            return Err(SnapshotError::Corrupt(format!(
                "{} is {size} bytes, expected {}",
                m.file, m.size
            )));
        }
        if sha != m.sha256 {
            return Err(SnapshotError::Corrupt(format!(
                "{} checksum mismatch",
                m.file
            )));
        }
    }
    Ok(())
}

/// Loads the (checked) memory files into guest memory.
pub fn load_memory(
    dir: &Path,
    state: &VmState,
    mem: &GuestMemoryMmap,
) -> Result<(), SnapshotError> {
    for m in &state.memory {
        let path: PathBuf = dir.join(&m.file);
        let mut f =
            File::open(&path).map_err(|e| SnapshotError::Read(path.display().to_string(), e))?;
        mem.read_exact_volatile_from(vm_memory::GuestAddress(m.start), &mut f, m.size as usize)
            .map_err(|e| SnapshotError::Corrupt(format!("{}: {e}", m.file)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Regression (lab: a restored Linux guest's wall clock lagged by the time it spent saved):
    /// kvmclock moves on by the wall-clock time between save and restore.
    #[test]
    fn restored_clock_moves_on_by_the_time_saved() {
        let s = 1_000_000_000_000_000_000u64;
        assert_eq!(restored_clock(5_000, s, s + 7_000_000_000), 7_000_005_000);
        // an old state without a save time, or a host clock that went backwards
        assert_eq!(restored_clock(5_000, 0, s), 5_000);
        assert_eq!(restored_clock(5_000, s, s - 1), 5_000);
        assert_eq!(restored_clock(u64::MAX - 1, 1, 10), u64::MAX);
    }

    use super::*;

    #[test]
    fn serial_state_round_trips() {
        let s = vm_superio::serial::SerialState {
            scratch: 7,
            in_buffer: vec![1, 2],
            ..Default::default()
        };
        let back = SerialSnapshot::from_state(&s).to_state();
        assert_eq!(back.scratch, 7);
        assert_eq!(back.in_buffer, vec![1, 2]);
    }

    #[test]
    fn foreign_and_corrupt_directories_are_refused() {
        let dir = std::env::temp_dir().join(format!("yunhe-snap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(matches!(read_state(&dir), Err(SnapshotError::Read(..))));
        let body = br#"{"format":"something-else","version":1}"#;
        std::fs::write(dir.join("state.json"), body).expect("write");
        let mut h = Sha256::new();
        h.update(body);
        std::fs::write(dir.join("state.sha256"), hex_digest(h)).expect("write");
        assert!(matches!(read_state(&dir), Err(SnapshotError::Foreign(_))));
        std::fs::write(dir.join("state.json"), &body[..10]).expect("truncate");
        assert!(matches!(read_state(&dir), Err(SnapshotError::Corrupt(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
