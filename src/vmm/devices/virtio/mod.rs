//! Virtio device models and the virtio-pci modern (virtio 1.x) transport.
//!
//! # How the pieces fit
//!
//! ```text
//!  vCPU thread (MMIO exit)          device/event thread (epoll)
//!        │                                 │ ioeventfd of queue q fired
//!        ▼                                 ▼
//!  Mutex<VirtioPciDevice> ──────── VirtioPciDevice::process_queue(q)
//!    config_read/config_write              │   (also process_backend() when a
//!    bar_read/bar_write                    │    device's backend fd is readable)
//!        │                                 ▼
//!        │                       Box<dyn VirtioDevice>  (VirtioBlock, VirtioNet, VirtioRng)
//!        │                                 │ VirtioInterrupt::trigger(Queue(q))
//!        ▼                                 ▼
//!  MSI-X table, ISR, PBA  ───────►  Arc<dyn PciInterruptSink>  (the core: irqfd per vector)
//! ```
//!
//! * A device model implements [`VirtioDevice`]. It knows nothing about PCI or KVM: it gets the
//!   guest memory, its queues and a [`VirtioInterrupt`] when the driver sets DRIVER_OK, and
//!   processes a queue when told that the guest notified it.
//! * [`pci::VirtioPciDevice`] wraps one device and is the virtio-pci modern transport: PCI
//!   configuration space with the virtio capabilities and MSI-X, BAR 0 MMIO (common config, ISR,
//!   device config, notify, MSI-X table and PBA), feature negotiation, the status state machine
//!   and reset.
//! * The core implements [`PciInterruptSink`] (irqfd per MSI-X vector, GSI routes from the
//!   messages the guest programs, optional INTx) and binds one ioeventfd per queue at the
//!   addresses [`pci::VirtioPciDevice::notify_addresses`] lists.
//!
//! Nothing here opens `/dev/kvm`; every test runs with queues laid out in a `GuestMemoryMmap`.
//!
//! # Hostile guests
//!
//! Every descriptor address and length is checked against guest memory before use, chains are
//! bounded by the queue size (virtio-queue stops at a loop) and by 4 GiB in total, and a chain
//! that ends with a descriptor still announcing a `next` is treated as malformed. A malformed
//! request completes with an error status where the device has a status byte to write, and with a
//! used length of 0 otherwise. When the queue itself is unusable (ring outside guest memory, an
//! available index that jumps by more than the queue size, a used ring that cannot be written)
//! the device reports [`DeviceError::Queue`] and the transport sets `DEVICE_NEEDS_RESET` and sends
//! a configuration-change interrupt, as virtio 1.2 §2.1.2 says.

// The VMM core wires these types in step by step; until every item has a caller in the binary,
// unused-item warnings here are expected.
#![allow(dead_code)]

pub mod bench;
pub mod block;
pub mod net;
pub mod net_bench;
pub mod pci;
pub mod rng;
pub mod testing;

use std::os::fd::RawFd;
use std::sync::Arc;

use virtio_queue::Queue;
/// The guest memory type every device works on.
pub type GuestMemory = crate::vmm::memory::GuestMemoryMmap;

/// Virtio device types (virtio 1.2 §5). The PCI device id is `0x1040 + type`.
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Entropy source.
    pub const RNG: u32 = 4;
}

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive the device.
    pub const DRIVER: u8 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u8 = 4;
    /// The driver acknowledged the features it understands; negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The guest gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Feature bits common to every device (virtio 1.2 §6).
pub mod features {
    /// Descriptors may point at indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A virtio 1.x (non-legacy) device. Always offered, required from the driver.
    pub const VERSION_1: u64 = 1 << 32;
}

/// Which interrupt a device raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioInterruptKind {
    /// The device put buffers in the used ring of this queue.
    Queue(u16),
    /// The device configuration (or the device status, e.g. NEEDS_RESET) changed.
    Config,
}

/// What a device model calls to interrupt the guest.
///
/// The PCI transport implements it (ISR bits, queue → MSI-X vector mapping, masking and pending
/// bits) on top of the core's [`PciInterruptSink`]; device tests implement it with a counter.
pub trait VirtioInterrupt: Send + Sync {
    /// Raise the interrupt for `kind`. Failing to deliver is logged by the implementation: a lost
    /// interrupt is the guest's problem to time out on, never a reason to stop the device.
    fn trigger(&self, kind: VirtioInterruptKind);
}

/// An MSI message as the guest programmed it into an MSI-X table entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Message address (64-bit: `addr_hi << 32 | addr_lo`).
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// What the VMM core implements for each virtio-pci device: the way out to the guest's interrupt
/// controller. Tests implement it with counters.
///
/// Calls come from the vCPU thread (MSI-X table and capability writes) and from the device/event
/// thread (`signal_msix`), hence `Send + Sync`.
pub trait PciInterruptSink: Send + Sync {
    /// MSI-X vector `vector` of this device changed. `Some(message)`: route the vector's irqfd to
    /// this message (KVM_SET_GSI_ROUTING); `None`: the vector is masked or MSI-X is disabled, so
    /// the route may be dropped (the transport keeps the pending bit and re-signals on unmask).
    fn route_msix(&self, vector: u16, message: Option<MsiMessage>);
    /// Deliver MSI-X vector `vector` now (write its irqfd). Only called for a routed vector.
    fn signal_msix(&self, vector: u16);
    /// Drive the legacy INTx line (only used while the guest has not enabled MSI-X). Level: the
    /// transport lowers it when the guest reads the ISR register. The default ignores it.
    fn set_intx(&self, _asserted: bool) {}
}

/// Device-level failure that makes the device unusable until the guest resets it.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Virtqueue {0} is broken: {1}
    #[error("virtqueue {0} is broken: {1}")]
    Queue(u16, virtio_queue::Error),
    /// Virtqueue {0} does not exist on this device
    #[error("virtqueue {0} does not exist on this device")]
    NoSuchQueue(u16),
    /// Backend I/O failed: {0}
    #[error("backend I/O failed: {0}")]
    Backend(std::io::Error),
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// Expected {expected} queues, got {got}
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// How many the device has.
        expected: usize,
        /// How many the transport passed.
        got: usize,
    },
    /// Virtqueue {0} is not ready or lies outside guest memory
    #[error("virtqueue {0} is not ready or lies outside guest memory")]
    InvalidQueue(u16),
    /// Device is already active
    #[error("device is already active")]
    AlreadyActive,
}

/// A disk's capacity before and after [`VirtioDevice::resize`], in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resized {
    /// The capacity the guest saw until now.
    pub old: u64,
    /// The capacity it sees from now on (the backing file's size).
    pub new: u64,
}

/// Why a device could not take its backend's new size.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// Only disks have a capacity
    #[error("only disks have a capacity")]
    NotADisk,
    /// The image shrank from {old} to {new} bytes: a disk never shrinks under a running guest
    #[error(
        "the image shrank from {old} to {new} bytes: a disk never shrinks under a running guest"
    )]
    Shrunk {
        /// The capacity the guest sees (kept).
        old: u64,
        /// The image's size now.
        new: u64,
    },
    /// Cannot read the image's size: {0}
    #[error("cannot read the image's size: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters a device keeps for the VMM's `stats` command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Requests (blk), frames (net) or buffers (rng) completed.
    pub requests: u64,
    /// Requests that failed (bad chain, out-of-range address, backend error).
    pub errors: u64,
    /// Bytes read from the guest (written by it: blk writes, net TX).
    pub bytes_from_guest: u64,
    /// Bytes written into guest memory (blk reads, net RX, rng).
    pub bytes_to_guest: u64,
}

/// A virtio device model, independent of the transport.
///
/// Lifecycle: created → (transport negotiates features: [`VirtioDevice::set_acked_features`]) →
/// [`VirtioDevice::activate`] at DRIVER_OK → [`VirtioDevice::process_queue`] on every guest
/// notification, [`VirtioDevice::process_backend`] when [`VirtioDevice::backend_fd`] is readable →
/// [`VirtioDevice::reset`] when the guest writes 0 to the status register (then it may be
/// activated again).
pub trait VirtioDevice: Send {
    /// Virtio device type ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (including [`features::VERSION_1`]).
    fn device_features(&self) -> u64;
    /// The features the driver accepted (a subset of [`VirtioDevice::device_features`]), set
    /// when the driver writes FEATURES_OK.
    fn set_acked_features(&mut self, features: u64);
    /// Read `data.len()` bytes of device configuration space at `offset`. Bytes past the end
    /// read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write device configuration space; read-only fields ignore writes.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Start the device: the driver set DRIVER_OK. `queues` has one entry per
    /// [`VirtioDevice::queue_max_sizes`] entry; queues the driver did not enable are not ready
    /// and are never processed.
    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError>;
    /// Whether [`VirtioDevice::activate`] succeeded and no reset happened since.
    fn is_activated(&self) -> bool;
    /// Drop the queues, memory and interrupt; the device returns to its created state (the
    /// backend, e.g. the disk file or the tap, is kept).
    fn reset(&mut self);
    /// The guest notified queue `queue_index`: process what it made available. A no-op before
    /// activation. `Err` means the device needs a reset.
    fn process_queue(&mut self, queue_index: u16) -> Result<(), DeviceError>;
    /// A host file descriptor the event loop should watch for readability (edge-triggered) and
    /// then call [`VirtioDevice::process_backend`]: the tap of a network card. `None` for most.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// The backend fd became readable.
    fn process_backend(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Counters for the `stats` command.
    fn stats(&self) -> DeviceStats;
    /// A disk's capacity in bytes (`None`: not a disk).
    fn capacity(&self) -> Option<u64> {
        None
    }
    /// Re-read the backend's size (the image grew) and take it as the new capacity. Only the
    /// backend is believed, never a size from elsewhere; a smaller size is refused. The transport
    /// tells the guest ([`pci::VirtioPciDevice::resize`]).
    fn resize(&mut self) -> Result<Resized, ResizeError> {
        Err(ResizeError::NotADisk)
    }
    /// Where each queue stands, `(next_avail, next_used)` in queue order, for saving the VM;
    /// empty when the device is not active.
    fn queue_positions(&self) -> Vec<(u16, u16)>;
}

/// `(next_avail, next_used)` of each queue.
pub(crate) fn positions<'a>(queues: impl IntoIterator<Item = &'a Queue>) -> Vec<(u16, u16)> {
    use virtio_queue::QueueT;
    queues
        .into_iter()
        .map(|q| (q.next_avail(), q.next_used()))
        .collect()
}

/// Copy `data` into `out` as if `data` were a byte array at offset 0 of a config space: the part
/// of `out` that lies past `data` is zero-filled. Used by devices' `read_config`.
pub(crate) fn read_config_bytes(data: &[u8], offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| data.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// One buffer of a descriptor chain, already checked to lie inside one guest memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: vm_memory::GuestAddress,
    /// Length in bytes (never 0: empty descriptors are dropped).
    pub len: u32,
    /// Device-writable (the guest reads what the device puts there).
    pub writable: bool,
}

/// Why a descriptor chain is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The chain has no descriptors (bad head index or unreadable table)
    #[error("the chain has no descriptors (bad head index or unreadable table)")]
    Empty,
    /// The chain stops at a descriptor that announces a next one (loop, bad index, bad indirect table or over 4 GiB)
    #[error(
        "the chain stops at a descriptor that announces a next one (loop, bad index, bad indirect table or over 4 GiB)"
    )]
    Truncated,
    /// A device-readable descriptor follows a device-writable one
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    /// The chain has more than {0} buffers
    #[error("the chain has more than {0} buffers")]
    TooManySegments(usize),
    /// Buffer {addr:#x}+{len:#x} is not inside guest memory
    #[error("buffer {addr:#x}+{len:#x} is not inside guest memory")]
    OutOfRange {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// Walk a descriptor chain (virtio-queue does the parsing, including indirect tables and the
/// loop bound) and check every buffer against guest memory. `out` is cleared and receives the
/// non-empty buffers, readable ones first.
pub fn collect_chain(
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    out: &mut Vec<Segment>,
    max_segments: usize,
) -> Result<(), ChainError> {
    use vm_memory::GuestMemoryBackend;

    out.clear();
    let mut seen_any = false;
    let mut last_has_next = false;
    let mut seen_writable = false;
    for desc in chain {
        seen_any = true;
        last_has_next = desc.has_next();
        let writable = desc.is_write_only();
        if !writable && seen_writable {
            return Err(ChainError::ReadableAfterWritable);
        }
        seen_writable |= writable;
        if desc.len() == 0 {
            continue;
        }
        if out.len() >= max_segments {
            return Err(ChainError::TooManySegments(max_segments));
        }
        let len = desc.len();
        if mem.get_slice(desc.addr(), len as usize).is_err() {
            return Err(ChainError::OutOfRange {
                addr: desc.addr().0,
                len,
            });
        }
        out.push(Segment {
            addr: desc.addr(),
            len,
            writable,
        });
    }
    if !seen_any {
        return Err(ChainError::Empty);
    }
    if last_has_next {
        return Err(ChainError::Truncated);
    }
    Ok(())
}

/// Pop the next available chain of `queue`. `Ok(None)`: nothing available (or the queue is not
/// ready). `Err`: the available ring is unusable (the device needs a reset).
pub fn pop_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemory,
    index: u16,
) -> Result<Option<virtio_queue::DescriptorChain<&'m GuestMemory>>, DeviceError> {
    use virtio_queue::{QueueOwnedT, QueueT};
    if !queue.ready() {
        return Ok(None);
    }
    let mut iter = queue.iter(mem).map_err(|e| DeviceError::Queue(index, e))?;
    Ok(iter.next())
}

#[cfg(test)]
mod tests;
