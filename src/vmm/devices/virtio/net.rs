//! virtio-net (virtio 1.2 §5.1): one RX and one TX queue over a [`NetBackend`] (a tap).
//!
//! # Offloads
//!
//! When the backend carries a `virtio_net_hdr` in front of every frame (a tap opened with
//! `IFF_VNET_HDR`, as [`open_tap`] and the network dataplane open theirs; see
//! [`NetBackend::has_vnet_hdr`]), the device offers checksum offload and TCP segmentation
//! offload both ways (`CSUM`, `GUEST_CSUM`, `HOST_TSO4/6`, `GUEST_TSO4/6`, `HOST_ECN`,
//! `GUEST_ECN`) and passes the header through: the guest hands over 64-KiB TCP segments with a
//! partial checksum, the kernel carries them as such across the bridge to the other tap, and the
//! receiving guest gets them whole. Once the driver has chosen, the tap is told which of them the
//! guest takes on receive (`TUNSETOFFLOAD`), so the kernel segments and checksums for a guest
//! that takes none. A header that asks for an offload the driver did not negotiate is dropped in
//! both directions (a guest cannot make the device pass on what it never agreed to; the kernel
//! checks the rest of the header). Without such a backend (a datagram socket pair in tests) no
//! offload is offered and the device strips the header on TX and writes a zeroed one on RX.
//!
//! # Receive buffers
//!
//! With `MRG_RXBUF` a packet is spread over as many of the driver's buffers as it needs and the
//! first header's `num_buffers` says how many; the used entries of one packet are published
//! with one update of the used index, because Linux drops a packet whose later buffers it does
//! not find yet. Each packet is published as soon as it is placed (a driver polling the ring
//! takes it while the device goes on); the interrupt is decided once per pass. Without it a packet must fit the one buffer it gets (Linux then posts 64-KiB
//! buffers when it takes TSO) and is dropped otherwise, its buffer returned empty.
//!
//! The event loop watches [`VirtioDevice::backend_fd`] edge-triggered. The device reads a packet
//! only when it can place the one before; otherwise it keeps that packet (and the buffers
//! gathered for it so far) and stops, and the guest's next RX notification (new buffers)
//! resumes delivery.

use std::io;
use std::num::Wrapping;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{
    ActivateError, ChainError, DeviceError, DeviceStats, GuestMemory, Segment, VirtioDevice,
    VirtioInterrupt, VirtioInterruptKind, collect_chain, device_type, features, pop_chain,
    read_config_bytes,
};

/// Queue size offered to the guest.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: u16 = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: u16 = 1;
/// Size of `virtio_net_hdr` for a virtio 1.x device.
pub const NET_HDR_LEN: usize = 12;
/// Largest frame handled (a 64-KiB IP packet plus Ethernet and VLAN headers).
pub const MAX_FRAME_LEN: usize = 65536 + 18;

/// Feature bits of virtio-net (virtio 1.2 §5.1.3).
pub mod net_features {
    /// The device takes packets with a partial checksum (`NEEDS_CSUM`) from the driver.
    pub const CSUM: u64 = 1 << 0;
    /// The driver takes packets with a partial checksum, and `DATA_VALID`.
    pub const GUEST_CSUM: u64 = 1 << 1;
    /// The device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// The driver takes TCP/IPv4 segments larger than the MTU.
    pub const GUEST_TSO4: u64 = 1 << 7;
    /// The driver takes TCP/IPv6 segments larger than the MTU.
    pub const GUEST_TSO6: u64 = 1 << 8;
    /// The driver takes such segments with ECN.
    pub const GUEST_ECN: u64 = 1 << 9;
    /// The device takes TCP/IPv4 segments larger than the MTU.
    pub const HOST_TSO4: u64 = 1 << 11;
    /// The device takes TCP/IPv6 segments larger than the MTU.
    pub const HOST_TSO6: u64 = 1 << 12;
    /// The device takes such segments with ECN.
    pub const HOST_ECN: u64 = 1 << 13;
    /// A received packet may span several receive buffers.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// The configuration has a link status field.
    pub const STATUS: u64 = 1 << 16;
    /// What is offered when the backend carries a `virtio_net_hdr`.
    pub const OFFLOADS: u64 =
        CSUM | GUEST_CSUM | GUEST_TSO4 | GUEST_TSO6 | GUEST_ECN | HOST_TSO4 | HOST_TSO6 | HOST_ECN;
}

/// Fields of `virtio_net_hdr` (virtio 1.2 §5.1.6): `flags` is byte 0, `gso_type` byte 1,
/// `num_buffers` bytes 10–11 (little endian).
pub mod net_hdr {
    /// The packet's checksum is partial: `csum_start`/`csum_offset` say where to finish it.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The packet's checksum was checked.
    pub const F_DATA_VALID: u8 = 2;
    /// Not a segment to split.
    pub const GSO_NONE: u8 = 0;
    /// A TCP/IPv4 segment to split.
    pub const GSO_TCPV4: u8 = 1;
    /// A TCP/IPv6 segment to split.
    pub const GSO_TCPV6: u8 = 4;
    /// With one of the above: the TCP header has ECN's CWR set.
    pub const GSO_ECN: u8 = 0x80;
}

/// `TUNSETOFFLOAD` bits (`<linux/if_tun.h>`).
mod tun_offload {
    pub const CSUM: u32 = 0x01;
    pub const TSO4: u32 = 0x02;
    pub const TSO6: u32 = 0x04;
    pub const TSO_ECN: u32 = 0x08;
}

// tun ioctls (`<linux/if_tun.h>`), as <asm-generic/ioctl.h> encodes them.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `IFF_VNET_HDR`: every frame read or written carries a `virtio_net_hdr`.
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// The tun ioctl request numbers a VMM thread that handles a NIC may make: attaching and
/// inspecting a tap, its header size and its offloads (the seccomp lists take them from here).
pub const TUN_IOCTLS: &[u64] = &[TUNSETIFF, TUNSETOFFLOAD, TUNGETIFF, TUNSETVNETHDRSZ];

/// Errors of the network device and its backends.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Cannot open /dev/net/tun: {0}
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// Tap name {0:?} is empty or longer than 15 bytes
    #[error("tap name {0:?} is empty or longer than 15 bytes")]
    TapName(String),
    /// Cannot attach to tap {0}: {1}
    #[error("cannot attach to tap {0}: {1}")]
    AttachTap(String, io::Error),
    /// Cannot make the backend non-blocking: {0}
    #[error("cannot make the backend non-blocking: {0}")]
    NonBlocking(io::Error),
    /// Cannot set the tap's virtio-net header size or clear its offloads: {0}
    #[error("cannot set the tap's virtio-net header size or clear its offloads: {0}")]
    VnetHeaderSize(io::Error),
    /// Malformed descriptor chain: {0}
    #[error("malformed descriptor chain: {0}")]
    Chain(#[from] ChainError),
    /// Frame of {0} bytes does not fit
    #[error("frame of {0} bytes does not fit")]
    FrameSize(usize),
    /// The header asks for an offload that was not negotiated (flags {0:#x}, gso type {1:#x})
    #[error(
        "the header asks for an offload that was not negotiated (flags {0:#x}, gso type {1:#x})"
    )]
    Offload(u8, u8),
    /// Guest memory access failed
    #[error("guest memory access failed")]
    GuestMemory,
}

/// Where frames come from and go to.
pub trait NetBackend: Send {
    /// Read one frame into `buf`; `ErrorKind::WouldBlock` when there is none. With a vnet header
    /// ([`NetBackend::has_vnet_hdr`]) the frame is preceded by its 12-byte `virtio_net_hdr`.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Send one frame (preceded by its `virtio_net_hdr` when the backend has one).
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The fd to watch for readability.
    fn raw_fd(&self) -> RawFd;
    /// Whether every frame read and written carries a 12-byte `virtio_net_hdr`, so that
    /// checksum and segmentation offloads can pass through.
    fn has_vnet_hdr(&self) -> bool {
        false
    }
    /// Tell the backend which offloads the guest takes on receive (`TUNSETOFFLOAD` bits).
    fn set_offload(&mut self, _tun_offload: u32) -> io::Result<()> {
        Ok(())
    }
}

/// A frame-preserving fd: a tap, or (tests) one end of a datagram socket pair.
#[derive(Debug)]
pub struct FdBackend {
    fd: OwnedFd,
    vnet_hdr: bool,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl FdBackend {
    /// Use `fd` (made non-blocking here). A tap opened with `IFF_VNET_HDR` is found out
    /// (`TUNGETIFF`) and its header size set to virtio 1.x's 12 bytes; anything else (a tap
    /// without it, a socket) carries plain frames.
    pub fn new(fd: OwnedFd) -> Result<Self, NetError> {
        // SAFETY: F_GETFL/F_SETFL on an fd we own; no pointers involved.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        if flags < 0 {
            return Err(NetError::NonBlocking(io::Error::last_os_error()));
        }
        // SAFETY: as above.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if r < 0 {
            return Err(NetError::NonBlocking(io::Error::last_os_error()));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: TUNGETIFF writes a `struct ifreq` (40 bytes), which `req` is; on a file that
        // is not an attached tap it fails (ENOTTY, EBADFD) and writes nothing.
        let is_tap = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &mut req as *mut IfReq) } == 0;
        let vnet_hdr = is_tap && req.flags & IFF_VNET_HDR != 0;
        if vnet_hdr {
            let size = NET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which `size` is.
            let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &size as *const i32) };
            if r < 0 {
                return Err(NetError::VnetHeaderSize(io::Error::last_os_error()));
            }
        }
        let mut backend = FdBackend { fd, vnet_hdr };
        // A persistent tap keeps the offloads its last VMM set: none until this guest chooses.
        backend.set_offload(0).map_err(NetError::VnetHeaderSize)?;
        Ok(backend)
    }

    /// The descriptor (`yunhe vm ctl add-net` opens a tap and hands it to a VMM).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl NetBackend for FdBackend {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    fn set_offload(&mut self, tun_offload: u32) -> io::Result<()> {
        if !self.vnet_hdr {
            return Ok(());
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                TUNSETOFFLOAD,
                libc::c_ulong::from(tun_offload),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The tap flags of every tap whose fd this device is handed (`IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR`): Ethernet frames, no packet information, each behind a `virtio_net_hdr` so
/// that checksum and segmentation offloads pass through. Whoever opens a tap for a VMM (the
/// network dataplane too) opens it with exactly these; the VMM finds the header out with
/// `TUNGETIFF` ([`FdBackend::new`]).
pub const TAP_FLAGS: libc::c_short = 0x0002 | 0x1000 | IFF_VNET_HDR;

/// Attach to the existing (or a new) tap interface `name` with [`TAP_FLAGS`].
pub fn open_tap(name: &str) -> Result<FdBackend, NetError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(NetError::TapName(name.to_string()));
    }
    // SAFETY: opening a path with a NUL-terminated literal; the result is checked.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(NetError::OpenTun(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly opened fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: TAP_FLAGS,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes), which `req` is.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if r < 0 {
        return Err(NetError::AttachTap(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    FdBackend::new(fd)
}

/// Whether a header's `flags` and `gso_type` ask only for offloads in `acked`: towards the
/// guest (`to_guest`) the `GUEST_*` features, from it `CSUM` and the `HOST_*` ones.
fn offloads_negotiated(flags: u8, gso_type: u8, acked: u64, to_guest: bool) -> bool {
    use net_features as f;
    let (csum, tso4, tso6, ecn) = if to_guest {
        (f::GUEST_CSUM, f::GUEST_TSO4, f::GUEST_TSO6, f::GUEST_ECN)
    } else {
        (f::CSUM, f::HOST_TSO4, f::HOST_TSO6, f::HOST_ECN)
    };
    if flags & net_hdr::F_NEEDS_CSUM != 0 && acked & csum == 0 {
        return false;
    }
    let ecn_ok = gso_type & net_hdr::GSO_ECN == 0 || acked & ecn != 0;
    match gso_type & !net_hdr::GSO_ECN {
        net_hdr::GSO_NONE => gso_type == net_hdr::GSO_NONE,
        net_hdr::GSO_TCPV4 => ecn_ok && acked & tso4 != 0,
        net_hdr::GSO_TCPV6 => ecn_ok && acked & tso6 != 0,
        _ => false,
    }
}

/// The `TUNSETOFFLOAD` bits for what the driver takes on receive.
fn tun_offload_for(acked: u64) -> u32 {
    use net_features as f;
    if acked & f::GUEST_CSUM == 0 {
        return 0;
    }
    let mut o = tun_offload::CSUM;
    if acked & f::GUEST_TSO4 != 0 {
        o |= tun_offload::TSO4;
    }
    if acked & f::GUEST_TSO6 != 0 {
        o |= tun_offload::TSO6;
    }
    if acked & f::GUEST_ECN != 0 {
        o |= tun_offload::TSO_ECN;
    }
    o
}

struct Active {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
}

/// One receive buffer taken from the RX queue for the packet being placed.
#[derive(Clone, Copy, Debug)]
struct RxBuffer {
    head: u16,
    /// Its writable segments: `RxState::segs[first..end]`.
    first: usize,
    end: usize,
}

/// The packet read from the backend that is not placed yet, and the buffers gathered for it.
struct RxState {
    /// Header and frame of the packet (`len` bytes when `pending`).
    packet: Vec<u8>,
    pending: Option<usize>,
    buffers: Vec<RxBuffer>,
    segs: Vec<Segment>,
    /// Writable bytes of `buffers`.
    room: u64,
    /// Scratch for one chain's segments.
    chain_segs: Vec<Segment>,
    /// Used entries of the packet just placed (or dropped), published together.
    used: Vec<(u16, u32)>,
}

impl RxState {
    fn new() -> Self {
        RxState {
            packet: vec![0; NET_HDR_LEN + MAX_FRAME_LEN],
            pending: None,
            buffers: Vec::new(),
            segs: Vec::new(),
            room: 0,
            chain_segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            used: Vec::new(),
        }
    }

    /// Forget the packet and the buffers (a reset; the driver takes its buffers back).
    fn clear(&mut self) {
        self.pending = None;
        self.buffers.clear();
        self.segs.clear();
        self.room = 0;
        self.used.clear();
    }

    /// Return every gathered buffer to the guest empty.
    fn return_buffers_empty(&mut self) {
        for b in self.buffers.drain(..) {
            self.used.push((b.head, 0));
        }
        self.segs.clear();
        self.room = 0;
    }
}

/// What became of the packet being placed.
enum Placed {
    /// Written into the gathered buffers.
    Delivered,
    /// Dropped (its buffers, if any, returned empty).
    Dropped(NetError),
    /// The queue has no more buffers: wait for the guest's notification.
    NeedBuffers,
}

/// A network card.
pub struct VirtioNet {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    queue_sizes: [u16; 2],
    acked_features: u64,
    active: Option<Active>,
    rx: RxState,
    tx_frame: Vec<u8>,
    segs: Vec<Segment>,
    stats: DeviceStats,
}

impl std::fmt::Debug for VirtioNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNet")
            .field("mac", &self.mac)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioNet {
    /// A card with address `mac` over `backend`.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        VirtioNet {
            backend,
            mac,
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
            acked_features: 0,
            active: None,
            rx: RxState::new(),
            tx_frame: Vec::with_capacity(NET_HDR_LEN + MAX_FRAME_LEN),
            segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            stats: DeviceStats::default(),
        }
    }

    /// Read the next packet from the backend into `rx.packet` (header first, a zeroed one when
    /// the backend carries none); its length with the header.
    fn read_packet(&mut self) -> io::Result<usize> {
        let buf = &mut self.rx.packet;
        if self.backend.has_vnet_hdr() {
            self.backend.read_frame(buf)
        } else {
            let n = self.backend.read_frame(&mut buf[NET_HDR_LEN..])?;
            buf[..NET_HDR_LEN].fill(0);
            Ok(NET_HDR_LEN + n)
        }
    }

    /// Deliver packets from the backend into RX buffers while both last.
    fn process_rx(&mut self) -> Result<(), DeviceError> {
        let Some(active) = self.active.as_ref() else {
            return Ok(());
        };
        let err = |e| DeviceError::Queue(RX_QUEUE, e);
        let pass_start = Wrapping(active.rx.next_used());
        loop {
            if let Some(a) = self.active.as_mut() {
                a.rx.disable_notification(&a.mem).map_err(err)?;
            }
            loop {
                let len = match self.rx.pending {
                    Some(len) => len,
                    None => match self.read_packet() {
                        Ok(len) => len,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!("virtio-net: backend read failed: {e}");
                            break;
                        }
                    },
                };
                self.rx.pending = Some(len);
                let Some(active) = self.active.as_mut() else {
                    return Ok(());
                };
                match place_packet(
                    &mut active.rx,
                    &active.mem,
                    &mut self.rx,
                    len,
                    self.acked_features,
                )? {
                    Placed::NeedBuffers => break,
                    Placed::Delivered => {
                        self.stats.requests += 1;
                        self.stats.bytes_to_guest += len.saturating_sub(NET_HDR_LEN) as u64;
                    }
                    Placed::Dropped(e) => {
                        tracing::debug!("virtio-net: RX packet dropped: {e}");
                        self.stats.errors += 1;
                    }
                }
                self.rx.pending = None;
                // This packet's buffers go to the driver now, all at once: it may be polling
                // the used ring while the device goes on with the next packet.
                publish_used(&mut active.rx, &active.mem, &self.rx.used).map_err(err)?;
                self.rx.used.clear();
            }
            let Some(active) = self.active.as_mut() else {
                return Ok(());
            };
            // Ask for a notification when buffers come (with EVENT_IDX this publishes
            // avail_event); if some came meanwhile and a packet waits, go on.
            let more_buffers = active.rx.enable_notification(&active.mem).map_err(err)?;
            if !(more_buffers && self.rx.pending.is_some()) {
                break;
            }
        }
        // One interrupt for the pass, if the driver asked for one among its entries.
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if Wrapping(active.rx.next_used()) != pass_start
            && rx_needs_interrupt(&active.rx, &active.mem, pass_start).map_err(err)?
        {
            active
                .interrupt
                .trigger(VirtioInterruptKind::Queue(RX_QUEUE));
        }
        Ok(())
    }

    /// Send every frame the guest queued.
    fn process_tx(&mut self) -> Result<(), DeviceError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mem = &active.mem;
        let err = |e| DeviceError::Queue(TX_QUEUE, e);
        let vnet_hdr = self.backend.has_vnet_hdr();
        let mut added = 0u32;
        loop {
            active.tx.disable_notification(mem).map_err(err)?;
            while let Some(chain) = pop_chain(&mut active.tx, mem, TX_QUEUE)? {
                let head = chain.head_index();
                let checked =
                    read_tx(&mut self.segs, &mut self.tx_frame, chain, mem).and_then(|()| {
                        let (flags, gso) = (self.tx_frame[0], self.tx_frame[1]);
                        // Without a header on the backend nothing was offered, so nothing may be asked.
                        let acked = if vnet_hdr { self.acked_features } else { 0 };
                        if offloads_negotiated(flags, gso, acked, false) {
                            Ok(())
                        } else {
                            Err(NetError::Offload(flags, gso))
                        }
                    });
                match checked {
                    Ok(()) => {
                        let out = if vnet_hdr {
                            &self.tx_frame[..]
                        } else {
                            &self.tx_frame[NET_HDR_LEN..]
                        };
                        match self.backend.write_frame(out) {
                            Ok(()) => {
                                self.stats.requests += 1;
                                self.stats.bytes_from_guest +=
                                    (self.tx_frame.len() - NET_HDR_LEN) as u64;
                            }
                            Err(e) => {
                                // A full or downed tap drops the frame, as a wire would; the
                                // kernel refuses a header it finds inconsistent the same way.
                                tracing::debug!("virtio-net: TX frame dropped: {e}");
                                self.stats.errors += 1;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("virtio-net: bad TX chain: {e}");
                        self.stats.errors += 1;
                    }
                }
                active.tx.add_used(mem, head, 0).map_err(err)?;
                added += 1;
            }
            if !active.tx.enable_notification(mem).map_err(err)? {
                break;
            }
        }
        if added > 0 && active.tx.needs_notification(mem).map_err(err)? {
            active
                .interrupt
                .trigger(VirtioInterruptKind::Queue(TX_QUEUE));
        }
        Ok(())
    }
}

/// Place the packet `rx.packet[..len]` into receive buffers: check and fix its header for what
/// the driver negotiated, gather buffers until they hold it (one buffer without `MRG_RXBUF`),
/// write it and queue the buffers' used entries in `rx.used`.
fn place_packet(
    q: &mut Queue,
    mem: &GuestMemory,
    rx: &mut RxState,
    len: usize,
    acked: u64,
) -> Result<Placed, DeviceError> {
    let mergeable = acked & net_features::MRG_RXBUF != 0;
    let packet = &mut rx.packet[..len];
    if len < NET_HDR_LEN {
        rx.return_buffers_empty();
        return Ok(Placed::Dropped(NetError::FrameSize(len)));
    }
    let (flags, gso) = (packet[0], packet[1]);
    if !offloads_negotiated(flags, gso, acked, true) {
        rx.return_buffers_empty();
        return Ok(Placed::Dropped(NetError::Offload(flags, gso)));
    }
    packet[0] = if acked & net_features::GUEST_CSUM == 0 {
        0
    } else {
        flags & (net_hdr::F_NEEDS_CSUM | net_hdr::F_DATA_VALID)
    };
    while rx.room < len as u64 && (mergeable || rx.buffers.is_empty()) {
        if rx.buffers.len() >= usize::from(q.size()) {
            // Every buffer the ring can hold does not hold it.
            rx.return_buffers_empty();
            return Ok(Placed::Dropped(NetError::FrameSize(len - NET_HDR_LEN)));
        }
        let Some(chain) = pop_chain(q, mem, RX_QUEUE)? else {
            // Keep what was gathered: those buffers are the device's until it uses them.
            return Ok(Placed::NeedBuffers);
        };
        let head = chain.head_index();
        if let Err(e) = collect_chain(chain, mem, &mut rx.chain_segs, usize::from(QUEUE_SIZE)) {
            rx.used.push((head, 0));
            rx.return_buffers_empty();
            return Ok(Placed::Dropped(e.into()));
        }
        let first = rx.segs.len();
        for s in rx.chain_segs.iter().filter(|s| s.writable) {
            rx.segs.push(*s);
            rx.room += u64::from(s.len);
        }
        rx.buffers.push(RxBuffer {
            head,
            first,
            end: rx.segs.len(),
        });
    }
    if rx.room < len as u64 {
        rx.return_buffers_empty();
        return Ok(Placed::Dropped(NetError::FrameSize(len - NET_HDR_LEN)));
    }
    let count = u16::try_from(rx.buffers.len()).unwrap_or(u16::MAX);
    let packet = &mut rx.packet[..len];
    packet[10..12].copy_from_slice(&count.to_le_bytes());
    let queued_before = rx.used.len();
    let mut done = 0usize;
    for b in &rx.buffers {
        let mut written = 0u32;
        for s in &rx.segs[b.first..b.end] {
            if done == len {
                break;
            }
            let n = (s.len as usize).min(len - done);
            if mem.write_slice(&packet[done..done + n], s.addr).is_err() {
                // Return every buffer of this packet empty.
                rx.used.truncate(queued_before);
                rx.return_buffers_empty();
                return Ok(Placed::Dropped(NetError::GuestMemory));
            }
            done += n;
            // At most the packet's length, which fits in u32.
            written += n as u32;
        }
        rx.used.push((b.head, written));
    }
    rx.buffers.clear();
    rx.segs.clear();
    rx.room = 0;
    Ok(Placed::Delivered)
}

/// Put `used` in the used ring and then move the used index past all of them at once, so that
/// the driver never sees a packet's first buffer without the others.
fn publish_used(
    q: &mut Queue,
    mem: &GuestMemory,
    used: &[(u16, u32)],
) -> Result<(), virtio_queue::Error> {
    if used.is_empty() {
        return Ok(());
    }
    let size = q.size();
    let ring = q.used_ring();
    let mut next = Wrapping(q.next_used());
    for &(head, len) in used {
        let slot = u64::from(next.0 % size);
        let addr = ring
            .checked_add(4 + slot * 8)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(addr))
            .map_err(virtio_queue::Error::GuestMemory)?;
        next += Wrapping(1);
    }
    let idx_addr = ring
        .checked_add(2)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    mem.store(
        u16::to_le(next.0),
        GuestAddress(idx_addr),
        Ordering::Release,
    )
    .map_err(virtio_queue::Error::GuestMemory)?;
    q.set_next_used(next.0);
    Ok(())
}

/// Whether the driver wants an interrupt for the used entries published since `old_used`: with
/// EVENT_IDX when `used_event` lies among them (as Linux's `vring_need_event`), else always.
fn rx_needs_interrupt(
    q: &Queue,
    mem: &GuestMemory,
    old_used: Wrapping<u16>,
) -> Result<bool, virtio_queue::Error> {
    // The used entries must be visible before the driver's used_event is read.
    fence(Ordering::SeqCst);
    if !q.event_idx_enabled() {
        return Ok(true);
    }
    let new_used = Wrapping(q.next_used());
    let addr = q
        .avail_ring()
        .checked_add(4 + 2 * u64::from(q.size()))
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    let used_event: u16 = mem
        .load(GuestAddress(addr), Ordering::Relaxed)
        .map(u16::from_le)
        .map_err(virtio_queue::Error::GuestMemory)?;
    Ok(new_used - Wrapping(used_event) - Wrapping(1) < new_used - old_used)
}

/// Gather the chain's readable buffers (header + frame) into `out`.
fn read_tx(
    segs: &mut Vec<Segment>,
    out: &mut Vec<u8>,
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> Result<(), NetError> {
    collect_chain(chain, mem, segs, usize::from(QUEUE_SIZE))?;
    let total: u64 = segs
        .iter()
        .filter(|s| !s.writable)
        .map(|s| u64::from(s.len))
        .sum();
    if total < NET_HDR_LEN as u64 || total > (NET_HDR_LEN + MAX_FRAME_LEN) as u64 {
        return Err(NetError::FrameSize(total as usize));
    }
    out.clear();
    out.resize(total as usize, 0);
    let mut done = 0usize;
    for s in segs.iter().filter(|s| !s.writable) {
        let n = s.len as usize;
        mem.read_slice(&mut out[done..done + n], s.addr)
            .map_err(|_| NetError::GuestMemory)?;
        done += n;
    }
    Ok(())
}

impl VirtioDevice for VirtioNet {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        let offloads = if self.backend.has_vnet_hdr() {
            net_features::OFFLOADS
        } else {
            0
        };
        features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | net_features::MAC
            | net_features::STATUS
            | net_features::MRG_RXBUF
            | offloads
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac);
        c[6] = 1; // status: VIRTIO_NET_S_LINK_UP
        read_config_bytes(&c, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        interrupt: Arc<dyn VirtioInterrupt>,
        queues: Vec<Queue>,
    ) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let got = queues.len();
        let mut it = queues.into_iter();
        let (Some(rx), Some(tx), None) = (it.next(), it.next(), it.next()) else {
            return Err(ActivateError::QueueCount { expected: 2, got });
        };
        for (i, q) in [&rx, &tx].into_iter().enumerate() {
            if q.ready() && !q.is_valid(&mem) {
                return Err(ActivateError::InvalidQueue(i as u16));
            }
        }
        // What the kernel may hand this guest from now on; a packet queued before that does
        // not fit what was negotiated is dropped on delivery.
        if let Err(e) = self
            .backend
            .set_offload(tun_offload_for(self.acked_features))
        {
            tracing::warn!("virtio-net: cannot set the tap's offloads: {e}");
        }
        self.active = Some(Active {
            mem,
            interrupt,
            rx,
            tx,
        });
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx.clear();
        self.acked_features = 0;
        if let Err(e) = self.backend.set_offload(0) {
            tracing::warn!("virtio-net: cannot clear the tap's offloads: {e}");
        }
    }

    fn process_queue(&mut self, queue_index: u16) -> Result<(), DeviceError> {
        match queue_index {
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => self.process_tx(),
            q => Err(DeviceError::NoSuchQueue(q)),
        }
    }

    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.backend.raw_fd())
    }

    fn process_backend(&mut self) -> Result<(), DeviceError> {
        self.process_rx()
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }

    fn queue_positions(&self) -> Vec<(u16, u16)> {
        let Some(a) = self.active.as_ref() else {
            return Vec::new();
        };
        // Buffers gathered for a packet not yet placed go back to the ring's available part:
        // a restored VMM takes them again (the packet itself is lost, as on a wire).
        let held = u16::try_from(self.rx.buffers.len()).unwrap_or(0);
        vec![
            (a.rx.next_avail().wrapping_sub(held), a.rx.next_used()),
            (a.tx.next_avail(), a.tx.next_used()),
        ]
    }
}

/// The header a driver without offloads finds in front of a received frame (one buffer); used
/// by tests.
pub fn rx_header() -> [u8; NET_HDR_LEN] {
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[10] = 1;
    hdr
}
