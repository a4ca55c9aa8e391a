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

use super::{
    DeviceError, GuestMemory, MsiMessage, PciInterruptSink, ResizeError, Resized, VirtioDevice,
    VirtioInterrupt, VirtioInterruptKind, device_type, status,
};

mod bar;
mod common_cfg;
mod config_space;
mod snapshot;

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

    /// The disk's image grew: take its new size as the capacity and, when it changed, bump
    /// `config_generation` and send the configuration-change interrupt (MSI-X config vector, or
    /// ISR bit 1 on INTx) to a driver that is up, as virtio 1.2 §2.5.1 and §4.1.4.5 say. A
    /// driver not yet up reads the new capacity when it probes.
    pub fn resize(&mut self) -> Result<Resized, ResizeError> {
        let r = self.device.resize()?;
        if r.new != r.old {
            self.config_generation = self.config_generation.wrapping_add(1);
            if self.device_status & status::DRIVER_OK != 0 {
                self.interrupt().trigger(VirtioInterruptKind::Config);
            }
        }
        Ok(r)
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
}
