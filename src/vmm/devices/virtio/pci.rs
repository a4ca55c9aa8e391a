//! The virtio-pci modern transport (virtio 1.2 §4.1) with MSI-X.
//!
//! # PCI configuration space
//!
//! A type-0 header: vendor 0x1AF4, device `0x1040 + device type`, revision 1, subsystem
//! 0x1AF4/0x1100, INTA, one 64-bit non-prefetchable memory BAR (BAR 0, [`BAR0_SIZE`] bytes) and
//! this capability list:
//!
//! | offset | capability |
//! | --- | --- |
//! | 0x40 | MSI-X: `queues + 1` vectors, table at BAR 0 + 0x4000, PBA at BAR 0 + 0x5000 |
//! | 0x4C | virtio common configuration: BAR 0 + 0x0000 |
//! | 0x5C | virtio notifications: BAR 0 + 0x3000, `notify_off_multiplier` 4 (queue q at 0x3000 + 4q) |
//! | 0x70 | virtio ISR status: BAR 0 + 0x1000 |
//! | 0x80 | virtio device configuration: BAR 0 + 0x2000 |
//! | 0x90 | virtio PCI configuration access window |
//!
//! # What the core does with it
//!
//! * Put the device on its PCI bus and route config space accesses (CF8/CFC or ECAM) to
//!   [`VirtioPciDevice::config_read`] / [`VirtioPciDevice::config_write`]; MMIO in
//!   `[bar0_address, bar0_address + BAR0_SIZE)` to [`VirtioPciDevice::bar_read`] /
//!   [`VirtioPciDevice::bar_write`] (offsets relative to the BAR).
//! * Register one ioeventfd per entry of [`VirtioPciDevice::notify_addresses`] (MMIO, length 2
//!   or "any length", no datamatch) and, when it fires, call
//!   [`VirtioPciDevice::process_queue`] on the event thread. A notify write that still reaches
//!   `bar_write` (no ioeventfd bound) returns [`BarWriteOutcome::QueueNotify`]: do the same.
//! * When `config_write` returns [`ConfigWriteOutcome::Bar0Moved`] (the guest reprogrammed BAR 0
//!   and has memory decoding on), move the MMIO range and re-register the ioeventfds.
//! * Implement [`PciInterruptSink`]: `route_msix` when a vector's message changes (GSI routing),
//!   `signal_msix` to fire a vector. Masking and the pending bits are handled here.
//! * Wrap the device in a `Mutex`: the vCPU threads (MMIO) and the event thread share it.

use std::sync::{Arc, Mutex, MutexGuard};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::{
    DeviceError, GuestMemory, MsiMessage, PciInterruptSink, VirtioDevice, VirtioInterrupt,
    VirtioInterruptKind, device_type, features, status,
};

/// PCI vendor id of virtio devices.
pub const VIRTIO_PCI_VENDOR_ID: u16 = 0x1AF4;
/// Device id of a modern virtio device of type 0; add the device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;
/// Size of BAR 0 (a power of two, as every BAR).
pub const BAR0_SIZE: u64 = 0x8000;
/// Offset of the common configuration structure in BAR 0.
pub const COMMON_CFG_OFFSET: u64 = 0x0000;
/// Offset of the ISR status byte in BAR 0.
pub const ISR_OFFSET: u64 = 0x1000;
/// Offset of the device-specific configuration in BAR 0.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Offset of the notification area in BAR 0.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Offset of the MSI-X table in BAR 0.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// Offset of the MSI-X pending bit array in BAR 0.
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// "No MSI-X vector" in the common configuration's vector fields.
pub const NO_VECTOR: u16 = 0xFFFF;

const REGION_SIZE: u64 = 0x1000;
const COMMON_CFG_SIZE: u64 = 0x3C;
/// Bytes of one MSI-X table entry.
const MSIX_ENTRY_SIZE: u64 = 16;
/// At most this many vectors fit the 4-KiB table region.
const MAX_MSIX_VECTORS: usize = (REGION_SIZE / MSIX_ENTRY_SIZE) as usize;
/// At most this many queues fit the notify region.
const MAX_QUEUES: usize = (REGION_SIZE / NOTIFY_OFF_MULTIPLIER as u64) as usize;

const CONFIG_SPACE_SIZE: usize = 256;
const CAP_MSIX: usize = 0x40;
const CAP_COMMON: usize = 0x4C;
const CAP_NOTIFY: usize = 0x5C;
const CAP_ISR: usize = 0x70;
const CAP_DEVICE: usize = 0x80;
const CAP_PCI_CFG: usize = 0x90;
const CAP_PCI_CFG_LEN: usize = 20;

const PCI_CAP_ID_MSIX: u8 = 0x11;
const PCI_CAP_ID_VNDR: u8 = 0x09;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
const VIRTIO_PCI_CAP_DEVICE_CFG: u8 = 4;
const VIRTIO_PCI_CAP_PCI_CFG: u8 = 5;

const MSIX_CTRL_ENABLE: u16 = 1 << 15;
const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
const MSIX_ENTRY_MASKED: u32 = 1;

/// Errors building a virtio-pci device.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// The device has {0} queues; virtio-pci here supports 1 to 255
    #[error("the device has {0} queues; virtio-pci here supports 1 to 255")]
    QueueCount(usize),
    /// BAR 0 address {0:#x} is not aligned to its size
    #[error("BAR 0 address {0:#x} is not aligned to its size")]
    UnalignedBar(u64),
    /// Saved virtio-pci state does not fit this device: {0}
    #[error("saved virtio-pci state does not fit this device: {0}")]
    StateMismatch(&'static str),
}

/// One queue's saved configuration and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueState {
    /// Size the driver chose.
    pub size: u16,
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    /// The driver enabled it.
    pub enabled: bool,
    /// MSI-X vector.
    pub vector: u16,
    /// Next available entry the device will read.
    pub next_avail: u16,
    /// Next used entry the device will write.
    pub next_used: u16,
}

/// The whole transport state of a [`VirtioPciDevice`]: enough, with guest memory, to resume the
/// device where it was (the device model keeps no other guest-visible state; a frame held by a
/// NIC for lack of RX buffers is dropped, as a wire may).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtioPciState {
    /// Virtio device type, checked on restore.
    pub device_type: u32,
    /// PCI configuration space (256 bytes).
    pub config_space: Vec<u8>,
    /// BAR 0 address in use.
    pub bar0: u64,
    /// `device_feature_select`.
    pub device_feature_select: u32,
    /// `driver_feature_select`.
    pub driver_feature_select: u32,
    /// Features the driver wrote.
    pub driver_features: u64,
    /// Device status.
    pub device_status: u8,
    /// Configuration generation.
    pub config_generation: u8,
    /// `queue_select`.
    pub queue_select: u16,
    /// Per-queue state.
    pub queues: Vec<QueueState>,
    /// MSI-X table entries `[addr_lo, addr_hi, data, control]`.
    pub msix_table: Vec<[u32; 4]>,
    /// MSI-X pending bits.
    pub msix_pending: Vec<bool>,
    /// MSI-X vector for configuration changes.
    pub config_vector: u16,
    /// ISR status bits not yet read by the guest.
    pub isr: u8,
}

/// What the core must do after a configuration space write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigWriteOutcome {
    /// Nothing.
    None,
    /// The guest moved BAR 0: move the MMIO range and re-bind the notify ioeventfds.
    Bar0Moved {
        /// Previous guest physical address.
        old: u64,
        /// New guest physical address.
        new: u64,
    },
    /// A write through the PCI configuration access capability hit the notify region.
    QueueNotify(u16),
}

/// What the core must do after a BAR 0 write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarWriteOutcome {
    /// Nothing.
    None,
    /// The guest notified this queue: call [`VirtioPciDevice::process_queue`].
    QueueNotify(u16),
}

/// One MSI-X table entry, as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MsixEntry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Default for MsixEntry {
    fn default() -> Self {
        // Entries come out of reset masked (PCI 3.0 §6.8.2.9).
        MsixEntry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            control: MSIX_ENTRY_MASKED,
        }
    }
}

impl MsixEntry {
    fn message(&self) -> MsiMessage {
        MsiMessage {
            address: (u64::from(self.addr_hi) << 32) | u64::from(self.addr_lo),
            data: self.data,
        }
    }

    fn masked(&self) -> bool {
        self.control & MSIX_ENTRY_MASKED != 0
    }
}

/// Interrupt state shared between the transport (vCPU threads) and the device (event thread).
#[derive(Debug)]
struct InterruptState {
    msix_enabled: bool,
    function_mask: bool,
    table: Vec<MsixEntry>,
    pending: Vec<bool>,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    isr: u8,
    intx: bool,
}

impl InterruptState {
    fn vector_for(&self, kind: VirtioInterruptKind) -> u16 {
        match kind {
            VirtioInterruptKind::Config => self.config_vector,
            VirtioInterruptKind::Queue(q) => self
                .queue_vectors
                .get(usize::from(q))
                .copied()
                .unwrap_or(NO_VECTOR),
        }
    }

    fn can_fire(&self, vector: usize) -> bool {
        self.msix_enabled
            && !self.function_mask
            && self.table.get(vector).is_some_and(|e| !e.masked())
    }
}

/// The transport's [`VirtioInterrupt`]: ISR bits, vector lookup, masking, pending bits.
struct PciInterrupt {
    state: Arc<Mutex<InterruptState>>,
    sink: Arc<dyn PciInterruptSink>,
}

fn lock(state: &Mutex<InterruptState>) -> MutexGuard<'_, InterruptState> {
    // A panic while holding this lock leaves plain data behind, still consistent enough to
    // deliver interrupts; never propagate the poison.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl VirtioInterrupt for PciInterrupt {
    fn trigger(&self, kind: VirtioInterruptKind) {
        let mut st = lock(&self.state);
        st.isr |= match kind {
            VirtioInterruptKind::Queue(_) => 1,
            VirtioInterruptKind::Config => 2,
        };
        if !st.msix_enabled {
            if !st.intx {
                st.intx = true;
                self.sink.set_intx(true);
            }
            return;
        }
        let vector = st.vector_for(kind);
        let v = usize::from(vector);
        if vector == NO_VECTOR || v >= st.table.len() {
            return;
        }
        if st.can_fire(v) {
            self.sink.signal_msix(vector);
        } else if let Some(p) = st.pending.get_mut(v) {
            *p = true;
        }
    }
}

/// Per-queue configuration as the driver wrote it through the common configuration.
#[derive(Clone, Copy, Debug)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    enabled: bool,
}

/// A virtio device on the PCI bus, modern (virtio 1.x) interface only.
pub struct VirtioPciDevice {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    sink: Arc<dyn PciInterruptSink>,
    interrupts: Arc<Mutex<InterruptState>>,
    config: [u8; CONFIG_SPACE_SIZE],
    write_mask: [u8; CONFIG_SPACE_SIZE],
    bar0: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    device_status: u8,
    config_generation: u8,
    queue_select: u16,
    queues: Vec<QueueConfig>,
}

impl std::fmt::Debug for VirtioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciDevice")
            .field("device_type", &self.device.device_type())
            .field("bar0", &format_args!("{:#x}", self.bar0))
            .field("status", &self.device_status)
            .finish_non_exhaustive()
    }
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(s) = buf.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(s) = buf.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn get_u16(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = buf.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_le_bytes(b)
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn le_store(value: u64, out: &mut [u8]) {
    let b = value.to_le_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        *o = b.get(i).copied().unwrap_or(0);
    }
}

/// Replace bytes `[at, at + data.len())` of a little-endian field of `width` bytes.
fn merge_field(old: u64, width: u64, at: u64, data: &[u8]) -> u64 {
    let mut b = old.to_le_bytes();
    for (i, d) in data.iter().enumerate() {
        let pos = at as usize + i;
        if (pos as u64) < width && pos < 8 {
            b[pos] = *d;
        }
    }
    u64::from_le_bytes(b)
}

/// PCI class code (class, subclass, prog-if) for a virtio device type.
fn class_code(device_type: u32) -> [u8; 3] {
    match device_type {
        device_type::NET => [0x02, 0x00, 0x00],
        device_type::BLOCK => [0x01, 0x00, 0x00],
        _ => [0xFF, 0x00, 0x00],
    }
}

impl VirtioPciDevice {
    /// Wrap `device` for the PCI bus with BAR 0 at `bar0_address` (aligned to [`BAR0_SIZE`],
    /// inside the host bridge's MMIO window; the core chooses it).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        sink: Arc<dyn PciInterruptSink>,
        bar0_address: u64,
    ) -> Result<Self, PciError> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.is_empty() || sizes.len() >= MAX_MSIX_VECTORS.min(MAX_QUEUES) {
            return Err(PciError::QueueCount(sizes.len()));
        }
        if !bar0_address.is_multiple_of(BAR0_SIZE) {
            return Err(PciError::UnalignedBar(bar0_address));
        }
        let vectors = sizes.len() + 1;
        let interrupts = Arc::new(Mutex::new(InterruptState {
            msix_enabled: false,
            function_mask: false,
            table: vec![MsixEntry::default(); vectors],
            pending: vec![false; vectors],
            config_vector: NO_VECTOR,
            queue_vectors: vec![NO_VECTOR; sizes.len()],
            isr: 0,
            intx: false,
        }));
        let queues = sizes
            .iter()
            .map(|&max| QueueConfig {
                max_size: max,
                size: max,
                desc: 0,
                avail: 0,
                used: 0,
                enabled: false,
            })
            .collect();
        let mut dev = VirtioPciDevice {
            device,
            mem,
            sink,
            interrupts,
            config: [0; CONFIG_SPACE_SIZE],
            write_mask: [0; CONFIG_SPACE_SIZE],
            bar0: bar0_address,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            device_status: 0,
            config_generation: 0,
            queue_select: 0,
            queues,
        };
        dev.build_config_space(vectors);
        Ok(dev)
    }

    fn build_config_space(&mut self, vectors: usize) {
        let ty = self.device.device_type();
        let c = &mut self.config;
        let m = &mut self.write_mask;
        put_u16(c, 0x00, VIRTIO_PCI_VENDOR_ID);
        // Device types are small; saturate rather than wrap for a nonsense type.
        let ty16 = u16::try_from(ty).unwrap_or(0xFF);
        put_u16(c, 0x02, VIRTIO_PCI_DEVICE_ID_BASE.saturating_add(ty16));
        // Command: I/O space, memory space, bus master, INTx disable are writable.
        put_u16(m, 0x04, 0x0407);
        // Status: capabilities list.
        put_u16(c, 0x06, 1 << 4);
        c[0x08] = 1; // revision: modern device
        let cc = class_code(ty);
        c[0x09] = cc[2];
        c[0x0A] = cc[1];
        c[0x0B] = cc[0];
        c[0x0E] = 0; // header type 0, single function
        // BAR 0: 64-bit memory, not prefetchable.
        let bar_lo = (self.bar0 as u32 & 0xFFFF_FFF0) | 0b100;
        put_u32(c, 0x10, bar_lo);
        put_u32(c, 0x14, (self.bar0 >> 32) as u32);
        put_u32(m, 0x10, !(BAR0_SIZE as u32 - 1) & 0xFFFF_FFF0);
        put_u32(m, 0x14, 0xFFFF_FFFF);
        put_u16(c, 0x2C, VIRTIO_PCI_VENDOR_ID);
        put_u16(c, 0x2E, 0x1100);
        c[0x34] = CAP_MSIX as u8;
        m[0x3C] = 0xFF; // interrupt line
        c[0x3D] = 1; // INTA

        // MSI-X.
        c[CAP_MSIX] = PCI_CAP_ID_MSIX;
        c[CAP_MSIX + 1] = CAP_COMMON as u8;
        put_u16(c, CAP_MSIX + 2, (vectors - 1) as u16);
        put_u16(m, CAP_MSIX + 2, MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK);
        put_u32(c, CAP_MSIX + 4, MSIX_TABLE_OFFSET as u32); // BIR 0
        put_u32(c, CAP_MSIX + 8, MSIX_PBA_OFFSET as u32); // BIR 0

        let vendor_cap = |c: &mut [u8; CONFIG_SPACE_SIZE],
                          at: usize,
                          next: usize,
                          len: usize,
                          cfg_type: u8,
                          offset: u64,
                          length: u64| {
            c[at] = PCI_CAP_ID_VNDR;
            c[at + 1] = next as u8;
            c[at + 2] = len as u8;
            c[at + 3] = cfg_type;
            c[at + 4] = 0; // BAR 0
            put_u32(c, at + 8, offset as u32);
            put_u32(c, at + 12, length as u32);
        };
        vendor_cap(
            c,
            CAP_COMMON,
            CAP_NOTIFY,
            16,
            VIRTIO_PCI_CAP_COMMON_CFG,
            COMMON_CFG_OFFSET,
            COMMON_CFG_SIZE,
        );
        vendor_cap(
            c,
            CAP_NOTIFY,
            CAP_ISR,
            20,
            VIRTIO_PCI_CAP_NOTIFY_CFG,
            NOTIFY_OFFSET,
            REGION_SIZE,
        );
        put_u32(c, CAP_NOTIFY + 16, NOTIFY_OFF_MULTIPLIER);
        vendor_cap(
            c,
            CAP_ISR,
            CAP_DEVICE,
            16,
            VIRTIO_PCI_CAP_ISR_CFG,
            ISR_OFFSET,
            1,
        );
        vendor_cap(
            c,
            CAP_DEVICE,
            CAP_PCI_CFG,
            16,
            VIRTIO_PCI_CAP_DEVICE_CFG,
            DEVICE_CFG_OFFSET,
            REGION_SIZE,
        );
        vendor_cap(
            c,
            CAP_PCI_CFG,
            0,
            CAP_PCI_CFG_LEN,
            VIRTIO_PCI_CAP_PCI_CFG,
            0,
            0,
        );
        // The access window: bar, offset, length and data are the driver's to write.
        m[CAP_PCI_CFG + 4] = 0xFF;
        put_u32(m, CAP_PCI_CFG + 8, 0xFFFF_FFFF);
        put_u32(m, CAP_PCI_CFG + 12, 0xFFFF_FFFF);
        put_u32(m, CAP_PCI_CFG + 16, 0xFFFF_FFFF);
    }

    /// The wrapped device model (for stats).
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The wrapped device model, mutably.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// Current guest physical address of BAR 0.
    pub fn bar0_address(&self) -> u64 {
        self.bar0
    }

    /// Number of MSI-X vectors (queues + 1 for configuration changes).
    pub fn msix_vectors(&self) -> u16 {
        // At most MAX_MSIX_VECTORS (256) entries, checked in `new`.
        lock(&self.interrupts).table.len() as u16
    }

    /// The device status register (virtio 1.2 §2.1).
    pub fn device_status(&self) -> u8 {
        self.device_status
    }

    /// `(guest physical address, queue index)` for each queue's notify register: bind an
    /// ioeventfd to each and call [`VirtioPciDevice::process_queue`] with the index.
    pub fn notify_addresses(&self) -> Vec<(u64, u16)> {
        (0..self.queues.len())
            .map(|q| {
                let addr = self.bar0 + NOTIFY_OFFSET + q as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
                (addr, q as u16)
            })
            .collect()
    }

    /// A host fd the event loop should watch (edge-triggered) for the device's backend, e.g. a
    /// tap; call [`VirtioPciDevice::process_backend`] when it is readable.
    pub fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.backend_fd()
    }

    /// Process queue `queue` after a guest notification. Errors are absorbed here: the device
    /// is marked `DEVICE_NEEDS_RESET` and the guest gets a configuration interrupt.
    pub fn process_queue(&mut self, queue: u16) {
        if !self.device.is_activated() || self.device_status & status::DEVICE_NEEDS_RESET != 0 {
            return;
        }
        if let Err(e) = self.device.process_queue(queue) {
            self.needs_reset(&e);
        }
    }

    /// The backend fd became readable.
    pub fn process_backend(&mut self) {
        if !self.device.is_activated() || self.device_status & status::DEVICE_NEEDS_RESET != 0 {
            return;
        }
        if let Err(e) = self.device.process_backend() {
            self.needs_reset(&e);
        }
    }

    fn needs_reset(&mut self, e: &DeviceError) {
        tracing::warn!(
            device_type = self.device.device_type(),
            "virtio device needs reset: {e}"
        );
        self.device_status |= status::DEVICE_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt().trigger(VirtioInterruptKind::Config);
    }

    fn interrupt(&self) -> Arc<dyn VirtioInterrupt> {
        Arc::new(PciInterrupt {
            state: self.interrupts.clone(),
            sink: self.sink.clone(),
        })
    }

    // ----- save and restore -----

    /// Snapshot the transport and the queue positions. Call with the VM paused (no vCPU or
    /// event-thread activity), so that queues are quiescent.
    pub fn save_state(&self) -> VirtioPciState {
        let st = lock(&self.interrupts);
        let positions = self.device.queue_positions();
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let (next_avail, next_used) = positions.get(i).copied().unwrap_or((0, 0));
                QueueState {
                    size: q.size,
                    desc: q.desc,
                    avail: q.avail,
                    used: q.used,
                    enabled: q.enabled,
                    vector: st.queue_vectors.get(i).copied().unwrap_or(NO_VECTOR),
                    next_avail,
                    next_used,
                }
            })
            .collect();
        VirtioPciState {
            device_type: self.device.device_type(),
            config_space: self.config.to_vec(),
            bar0: self.bar0,
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            device_status: self.device_status,
            config_generation: self.config_generation,
            queue_select: self.queue_select,
            queues,
            msix_table: st
                .table
                .iter()
                .map(|e| [e.addr_lo, e.addr_hi, e.data, e.control])
                .collect(),
            msix_pending: st.pending.clone(),
            config_vector: st.config_vector,
            isr: st.isr,
        }
    }

    /// Rebuild a device from [`VirtioPciDevice::save_state`]: `device` must be the same kind of
    /// device (same type and queues), freshly created over the same backend. Re-routes the
    /// MSI-X vectors through `sink` and reactivates the device where the driver had it running.
    /// A state that does not fit (corrupt or from another device) is refused.
    pub fn restore(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        sink: Arc<dyn PciInterruptSink>,
        state: &VirtioPciState,
    ) -> Result<Self, PciError> {
        let mismatch = PciError::StateMismatch;
        if state.device_type != device.device_type() {
            return Err(mismatch("device type"));
        }
        let mut dev = Self::new(device, mem, sink, state.bar0)?;
        let config: [u8; CONFIG_SPACE_SIZE] = state
            .config_space
            .as_slice()
            .try_into()
            .map_err(|_| mismatch("configuration space size"))?;
        // Read-only identity and capability bytes must be what this device would present.
        for (i, (&new, &old)) in config.iter().zip(dev.config.iter()).enumerate() {
            if (new ^ old) & !dev.write_mask[i] != 0 {
                return Err(mismatch("configuration space contents"));
            }
        }
        if state.queues.len() != dev.queues.len()
            || state.msix_table.len() != state.msix_pending.len()
        {
            return Err(mismatch("queue count"));
        }
        {
            let st = lock(&dev.interrupts);
            if state.msix_table.len() != st.table.len() {
                return Err(mismatch("MSI-X table size"));
            }
        }
        let vectors = state.msix_table.len();
        let valid_vector = |v: u16| v == NO_VECTOR || usize::from(v) < vectors;
        for (q, s) in dev.queues.iter_mut().zip(&state.queues) {
            if s.size == 0 || s.size > q.max_size || !s.size.is_power_of_two() {
                return Err(mismatch("queue size"));
            }
            if !valid_vector(s.vector) {
                return Err(mismatch("queue vector"));
            }
            q.size = s.size;
            q.desc = s.desc;
            q.avail = s.avail;
            q.used = s.used;
            q.enabled = s.enabled;
        }
        if !valid_vector(state.config_vector) {
            return Err(mismatch("config vector"));
        }
        dev.config = config;
        dev.bar0 = state.bar0;
        dev.device_feature_select = state.device_feature_select;
        dev.driver_feature_select = state.driver_feature_select;
        dev.driver_features = state.driver_features;
        dev.device_status = state.device_status;
        dev.config_generation = state.config_generation;
        dev.queue_select = state.queue_select;
        {
            let ctrl = get_u16(&dev.config, CAP_MSIX + 2);
            let mut st = lock(&dev.interrupts);
            st.msix_enabled = ctrl & MSIX_CTRL_ENABLE != 0;
            st.function_mask = ctrl & MSIX_CTRL_FUNCTION_MASK != 0;
            for (e, w) in st.table.iter_mut().zip(&state.msix_table) {
                *e = MsixEntry {
                    addr_lo: w[0],
                    addr_hi: w[1],
                    data: w[2],
                    control: w[3] & MSIX_ENTRY_MASKED,
                };
            }
            st.pending.copy_from_slice(&state.msix_pending);
            st.config_vector = state.config_vector;
            for (v, s) in st.queue_vectors.iter_mut().zip(&state.queues) {
                *v = s.vector;
            }
            st.isr = state.isr;
            if st.msix_enabled {
                for (v, e) in st.table.iter().enumerate() {
                    dev.sink.route_msix(v as u16, Some(e.message()));
                }
            }
        }
        let s = dev.device_status;
        if s & status::FEATURES_OK != 0 {
            if dev.driver_features & !dev.device.device_features() != 0 {
                return Err(mismatch("negotiated features"));
            }
            dev.device.set_acked_features(dev.driver_features);
        }
        if s & status::DRIVER_OK != 0
            && s & status::FEATURES_OK != 0
            && s & (status::FAILED | status::DEVICE_NEEDS_RESET) == 0
        {
            let positions: Vec<(u16, u16)> = state
                .queues
                .iter()
                .map(|q| (q.next_avail, q.next_used))
                .collect();
            dev.activate_at(&positions);
        }
        Ok(dev)
    }

    /// Call once the restored VM's vCPUs and interrupt controllers hold their saved state, before
    /// any vCPU runs: processes every queue once, as if notified, and then interrupts every
    /// enabled queue once.
    ///
    /// Processing covers buffers the driver made available before the save that the old VMM
    /// never served (it had taken the notification and paused, or, with EVENT_IDX, the driver
    /// will not notify again for buffers it already announced). The interrupts cover those the
    /// old VMM raised between its vCPUs parking (when their local APIC state was taken) and the
    /// save: they are in the saved used rings but in no saved APIC, and with EVENT_IDX a lost
    /// interrupt is never repeated (the device interrupts again only when the used index passes
    /// the driver's used_event, which waits for the lost one), so that queue would stay silent
    /// for good. A virtio driver takes an interrupt with nothing new as a no-op. Both were seen
    /// in the lab: a restored Linux guest whose network stayed silent while disk and console
    /// worked. Interrupts raised inside [`VirtioPciDevice::restore`] itself would be lost the
    /// same way (no vCPU exists yet), which is why this is a separate step.
    pub fn resume_after_restore(&mut self) {
        if !self.device.is_activated() || self.device_status & status::DEVICE_NEEDS_RESET != 0 {
            return;
        }
        let interrupt = self.interrupt();
        for queue in 0..self.queues.len() as u16 {
            self.process_queue(queue);
            if self.queues[usize::from(queue)].enabled {
                interrupt.trigger(VirtioInterruptKind::Queue(queue));
            }
        }
    }

    // ----- PCI configuration space -----

    /// Read PCI configuration space (`offset` within the function's 4-KiB ECAM window; bytes
    /// past the first 256 read as 0).
    pub fn config_read(&mut self, offset: u64, data: &mut [u8]) {
        let data_reg = (CAP_PCI_CFG + 16) as u64;
        if offset >= data_reg && offset < data_reg + 4 {
            self.pci_cfg_window_read(offset - data_reg, data);
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    /// Write PCI configuration space.
    pub fn config_write(&mut self, offset: u64, data: &[u8]) -> ConfigWriteOutcome {
        let Some(end) = offset.checked_add(data.len() as u64) else {
            return ConfigWriteOutcome::None;
        };
        if end > CONFIG_SPACE_SIZE as u64 {
            return ConfigWriteOutcome::None;
        }
        let start = offset as usize;
        let data_reg = CAP_PCI_CFG + 16;
        if start >= data_reg && start < data_reg + 4 {
            return self.pci_cfg_window_write((start - data_reg) as u64, data);
        }
        for (i, &d) in data.iter().enumerate() {
            let o = start + i;
            let m = self.write_mask[o];
            self.config[o] = (self.config[o] & !m) | (d & m);
        }
        let overlaps = |lo: usize, hi: usize| start < hi && end as usize > lo;
        if overlaps(CAP_MSIX + 2, CAP_MSIX + 4) {
            self.msix_control_changed();
        }
        // BAR 0 moves when the guest has memory decoding on and the programmed address differs
        // from the one in use: sizing probes (done with decoding off) never move it.
        let memory_decode = get_u16(&self.config, 0x04) & 0x2 != 0;
        let programmed = self.programmed_bar0();
        if memory_decode && programmed != self.bar0 {
            let old = self.bar0;
            self.bar0 = programmed;
            return ConfigWriteOutcome::Bar0Moved {
                old,
                new: programmed,
            };
        }
        ConfigWriteOutcome::None
    }

    fn programmed_bar0(&self) -> u64 {
        let lo = u64::from(get_u32(&self.config, 0x10) & 0xFFFF_FFF0);
        let hi = u64::from(get_u32(&self.config, 0x14));
        (hi << 32) | lo
    }

    /// Whether the guest enabled memory decoding (command register bit 1). MMIO to BAR 0 while
    /// it is off should not reach the device.
    pub fn memory_decode_enabled(&self) -> bool {
        get_u16(&self.config, 0x04) & 0x2 != 0
    }

    fn msix_control_changed(&mut self) {
        let ctrl = get_u16(&self.config, CAP_MSIX + 2);
        let enabled = ctrl & MSIX_CTRL_ENABLE != 0;
        let fmask = ctrl & MSIX_CTRL_FUNCTION_MASK != 0;
        let mut st = lock(&self.interrupts);
        let was_enabled = st.msix_enabled;
        st.msix_enabled = enabled;
        st.function_mask = fmask;
        if enabled != was_enabled {
            for (v, e) in st.table.iter().enumerate() {
                self.sink.route_msix(v as u16, enabled.then(|| e.message()));
            }
            if enabled && st.intx {
                st.intx = false;
                self.sink.set_intx(false);
            }
        }
        self.flush_pending(&mut st);
    }

    fn flush_pending(&self, st: &mut InterruptState) {
        for v in 0..st.table.len() {
            if st.pending[v] && st.can_fire(v) {
                st.pending[v] = false;
                self.sink.signal_msix(v as u16);
            }
        }
    }

    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let bar = self.config[CAP_PCI_CFG + 4];
        let off = u64::from(get_u32(&self.config, CAP_PCI_CFG + 8));
        let len = get_u32(&self.config, CAP_PCI_CFG + 12) as usize;
        (bar == 0 && matches!(len, 1 | 2 | 4)).then_some((off, len))
    }

    fn pci_cfg_window_read(&mut self, at: u64, data: &mut [u8]) {
        let mut window = [0u8; 4];
        if let Some((off, len)) = self.pci_cfg_window() {
            self.bar_read(off, &mut window[..len]);
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = window.get(at as usize + i).copied().unwrap_or(0);
        }
    }

    fn pci_cfg_window_write(&mut self, at: u64, data: &[u8]) -> ConfigWriteOutcome {
        let mut window = [0u8; 4];
        for (i, d) in data.iter().enumerate() {
            if let Some(w) = window.get_mut(at as usize + i) {
                *w = *d;
            }
        }
        match self.pci_cfg_window() {
            Some((off, len)) => match self.bar_write(off, &window[..len]) {
                BarWriteOutcome::QueueNotify(q) => ConfigWriteOutcome::QueueNotify(q),
                BarWriteOutcome::None => ConfigWriteOutcome::None,
            },
            None => ConfigWriteOutcome::None,
        }
    }

    // ----- BAR 0 -----

    /// Read from BAR 0 at `offset` (relative to the BAR).
    pub fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || offset.checked_add(len).is_none_or(|e| e > BAR0_SIZE) {
            return;
        }
        let region = offset / REGION_SIZE * REGION_SIZE;
        let at = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_read(at, data),
            ISR_OFFSET if at == 0 => {
                let mut st = lock(&self.interrupts);
                data[0] = st.isr;
                st.isr = 0;
                if st.intx {
                    st.intx = false;
                    self.sink.set_intx(false);
                }
            }
            DEVICE_CFG_OFFSET => self.device.read_config(at, data),
            MSIX_TABLE_OFFSET => self.msix_table_read(at, data),
            MSIX_PBA_OFFSET => {
                let st = lock(&self.interrupts);
                let mut v = 0u64;
                let first = (at / 8) * 64;
                for bit in 0..64u64 {
                    if st.pending.get((first + bit) as usize) == Some(&true) {
                        v |= 1 << bit;
                    }
                }
                let shift = (at % 8) * 8;
                le_store(v >> shift, data);
            }
            _ => {}
        }
    }

    /// Write to BAR 0 at `offset` (relative to the BAR).
    pub fn bar_write(&mut self, offset: u64, data: &[u8]) -> BarWriteOutcome {
        let len = data.len() as u64;
        if !matches!(len, 1 | 2 | 4 | 8) || offset.checked_add(len).is_none_or(|e| e > BAR0_SIZE) {
            return BarWriteOutcome::None;
        }
        let region = offset / REGION_SIZE * REGION_SIZE;
        let at = offset - region;
        match region {
            COMMON_CFG_OFFSET => self.common_write(at, data),
            DEVICE_CFG_OFFSET => {
                self.device.write_config(at, data);
            }
            NOTIFY_OFFSET => {
                let q = at / u64::from(NOTIFY_OFF_MULTIPLIER);
                if (q as usize) < self.queues.len() {
                    return BarWriteOutcome::QueueNotify(q as u16);
                }
            }
            MSIX_TABLE_OFFSET => self.msix_table_write(at, data),
            _ => {}
        }
        BarWriteOutcome::None
    }

    fn msix_table_read(&self, at: u64, data: &mut [u8]) {
        let st = lock(&self.interrupts);
        let idx = (at / MSIX_ENTRY_SIZE) as usize;
        let Some(e) = st.table.get(idx) else {
            return;
        };
        let words = [e.addr_lo, e.addr_hi, e.data, e.control];
        let mut bytes = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        let o = (at % MSIX_ENTRY_SIZE) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(o + i).copied().unwrap_or(0);
        }
    }

    fn msix_table_write(&mut self, at: u64, data: &[u8]) {
        let mut st = lock(&self.interrupts);
        let idx = (at / MSIX_ENTRY_SIZE) as usize;
        let o = (at % MSIX_ENTRY_SIZE) as usize;
        // Entries are accessed as aligned dwords or qwords (PCI 3.0 §6.8.2).
        if !o.is_multiple_of(4) || data.len() < 4 || o + data.len() > MSIX_ENTRY_SIZE as usize {
            return;
        }
        let Some(old) = st.table.get(idx).copied() else {
            return;
        };
        let mut bytes = [0u8; 16];
        for (i, w) in [old.addr_lo, old.addr_hi, old.data, old.control]
            .iter()
            .enumerate()
        {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        bytes[o..o + data.len()].copy_from_slice(data);
        let new = MsixEntry {
            addr_lo: get_u32(&bytes, 0),
            addr_hi: get_u32(&bytes, 4),
            data: get_u32(&bytes, 8),
            // Only the mask bit of vector control is defined.
            control: get_u32(&bytes, 12) & MSIX_ENTRY_MASKED,
        };
        st.table[idx] = new;
        if st.msix_enabled && new.message() != old.message() {
            self.sink.route_msix(idx as u16, Some(new.message()));
        }
        self.flush_pending(&mut st);
    }

    // ----- common configuration -----

    fn selected_queue(&self) -> Option<&QueueConfig> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// (field start, field width) of the common configuration field containing `at`.
    fn common_field(at: u64) -> Option<(u64, u64)> {
        const FIELDS: [(u64, u64); 18] = [
            (0x00, 4),
            (0x04, 4),
            (0x08, 4),
            (0x0C, 4),
            (0x10, 2),
            (0x12, 2),
            (0x14, 1),
            (0x15, 1),
            (0x16, 2),
            (0x18, 2),
            (0x1A, 2),
            (0x1C, 2),
            (0x1E, 2),
            (0x20, 8),
            (0x28, 8),
            (0x30, 8),
            (0x38, 2),
            (0x3A, 2),
        ];
        FIELDS.iter().copied().find(|&(s, w)| at >= s && at < s + w)
    }

    fn common_value(&self, field: u64) -> u64 {
        let q = self.selected_queue();
        match field {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.device.device_features() & 0xFFFF_FFFF,
                1 => self.device.device_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0C => match self.driver_feature_select {
                0 => self.driver_features & 0xFFFF_FFFF,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(lock(&self.interrupts).config_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.device_status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_select),
            0x18 => q.map_or(0, |q| u64::from(q.size)),
            0x1A => u64::from(
                lock(&self.interrupts)
                    .queue_vectors
                    .get(usize::from(self.queue_select))
                    .copied()
                    .unwrap_or(NO_VECTOR),
            ),
            0x1C => q.map_or(0, |q| u64::from(q.enabled)),
            // queue_notify_off: queue q notifies at NOTIFY_OFFSET + q * multiplier.
            0x1E => q.map_or(0, |_| u64::from(self.queue_select)),
            0x20 => q.map_or(0, |q| q.desc),
            0x28 => q.map_or(0, |q| q.avail),
            0x30 => q.map_or(0, |q| q.used),
            _ => 0,
        }
    }

    fn common_read(&self, at: u64, data: &mut [u8]) {
        let Some((field, width)) = Self::common_field(at) else {
            return;
        };
        if at + data.len() as u64 > field + width {
            return;
        }
        let v = self.common_value(field) >> ((at - field) * 8);
        le_store(v, data);
    }

    fn common_write(&mut self, at: u64, data: &[u8]) {
        let Some((field, width)) = Self::common_field(at) else {
            return;
        };
        if at + data.len() as u64 > field + width {
            return;
        }
        let v = merge_field(self.common_value(field), width, at - field, data);
        let driver_ok = self.device_status & status::DRIVER_OK != 0;
        let features_ok = self.device_status & status::FEATURES_OK != 0;
        let qi = usize::from(self.queue_select);
        let vectors = lock(&self.interrupts).table.len();
        let valid_vector = |v: u16| {
            if usize::from(v) < vectors {
                v
            } else {
                NO_VECTOR
            }
        };
        match field {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0C if !features_ok => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xFFFF_FFFF) | (v & 0xFFFF_FFFF)
                }
                1 => self.driver_features = (self.driver_features & 0xFFFF_FFFF) | (v << 32),
                _ => {}
            },
            0x10 => lock(&self.interrupts).config_vector = valid_vector(v as u16),
            0x14 => self.write_status(v as u8),
            0x16 => self.queue_select = v as u16,
            0x1A => {
                let mut st = lock(&self.interrupts);
                if let Some(slot) = st.queue_vectors.get_mut(qi) {
                    *slot = valid_vector(v as u16);
                }
            }
            _ => {
                if driver_ok {
                    return;
                }
                let Some(q) = self.queues.get_mut(qi) else {
                    return;
                };
                if q.enabled {
                    // A live queue's layout is fixed until reset.
                    return;
                }
                match field {
                    0x18 => {
                        let s = v as u16;
                        if s != 0 && s <= q.max_size && s.is_power_of_two() {
                            q.size = s;
                        }
                    }
                    0x1C => q.enabled = v & 1 == 1,
                    0x20 => q.desc = v,
                    0x28 => q.avail = v,
                    0x30 => q.used = v,
                    _ => {}
                }
            }
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.device_status;
        // The driver cannot clear bits (other than by a full reset) nor set NEEDS_RESET.
        let mut new =
            (old | value) & !status::DEVICE_NEEDS_RESET | (old & status::DEVICE_NEEDS_RESET);
        if new & status::FEATURES_OK != 0 && old & status::FEATURES_OK == 0 {
            let offered = self.device.device_features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & features::VERSION_1 != 0;
            if ok {
                self.device.set_acked_features(self.driver_features);
            } else {
                new &= !status::FEATURES_OK;
            }
        }
        self.device_status = new;
        if new & status::DRIVER_OK != 0
            && old & status::DRIVER_OK == 0
            && new & status::FEATURES_OK != 0
            && new & status::FAILED == 0
        {
            self.activate();
        }
    }

    fn activate(&mut self) {
        self.activate_at(&[]);
    }

    /// Activate with queues resuming at `positions` (`(next_avail, next_used)`; empty: at 0).
    fn activate_at(&mut self, positions: &[(u16, u16)]) {
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, qc) in self.queues.iter().enumerate() {
            match build_queue(qc, event_idx, &self.mem) {
                Some(mut q) => {
                    if let Some(&(avail, used)) = positions.get(i) {
                        q.set_next_avail(avail);
                        q.set_next_used(used);
                    }
                    queues.push(q)
                }
                None => {
                    let e = DeviceError::Queue(i as u16, virtio_queue::Error::QueueNotReady);
                    self.needs_reset(&e);
                    return;
                }
            }
        }
        let interrupt = self.interrupt();
        if let Err(e) = self.device.activate(self.mem.clone(), interrupt, queues) {
            tracing::warn!("virtio device activation failed: {e}");
            self.device_status |= status::DEVICE_NEEDS_RESET;
            self.interrupt().trigger(VirtioInterruptKind::Config);
        }
    }

    /// Device reset (the driver wrote 0 to the status register).
    fn reset(&mut self) {
        self.device.reset();
        self.device_status = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                size: q.max_size,
                desc: 0,
                avail: 0,
                used: 0,
                enabled: false,
            };
        }
        let mut st = lock(&self.interrupts);
        st.config_vector = NO_VECTOR;
        st.queue_vectors.fill(NO_VECTOR);
        st.isr = 0;
        if st.intx {
            st.intx = false;
            self.sink.set_intx(false);
        }
    }
}

/// Turn the driver's queue configuration into a virtio-queue [`Queue`]. A disabled queue comes
/// back not ready (never processed); an enabled one must lie in guest memory and be aligned.
fn build_queue(qc: &QueueConfig, event_idx: bool, mem: &GuestMemory) -> Option<Queue> {
    let mut q = Queue::new(qc.max_size).ok()?;
    if !qc.enabled {
        return Some(q);
    }
    q.try_set_size(qc.size).ok()?;
    q.try_set_desc_table_address(GuestAddress(qc.desc)).ok()?;
    q.try_set_avail_ring_address(GuestAddress(qc.avail)).ok()?;
    q.try_set_used_ring_address(GuestAddress(qc.used)).ok()?;
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q.is_valid(mem).then_some(q)
}
