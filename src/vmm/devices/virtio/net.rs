//! virtio-net (virtio 1.2 §5.1): one RX and one TX queue over a [`NetBackend`] (a tap).
//!
//! No offloads are offered, so every frame carries a 12-byte `virtio_net_hdr` that says
//! nothing: the device strips it on TX and writes a zeroed one (with `num_buffers` = 1) on RX.
//! The backend carries plain Ethernet frames: open the tap with `IFF_TAP | IFF_NO_PI` and
//! without `IFF_VNET_HDR` (as [`open_tap`] does).
//!
//! The event loop watches [`VirtioDevice::backend_fd`] edge-triggered. The device reads a frame
//! only when the guest has an RX buffer for it; otherwise it keeps that one frame and stops,
//! and the guest's next RX notification (new buffers) resumes delivery.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

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

/// Feature bits of virtio-net.
pub mod net_features {
    /// The device has a MAC address in its configuration.
    pub const MAC: u64 = 1 << 5;
    /// The configuration has a link status field.
    pub const STATUS: u64 = 1 << 16;
}

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
    /// Malformed descriptor chain: {0}
    #[error("malformed descriptor chain: {0}")]
    Chain(#[from] ChainError),
    /// Frame of {0} bytes does not fit
    #[error("frame of {0} bytes does not fit")]
    FrameSize(usize),
    /// Guest memory access failed
    #[error("guest memory access failed")]
    GuestMemory,
}

/// Where frames come from and go to.
pub trait NetBackend: Send {
    /// Read one frame into `buf`; `ErrorKind::WouldBlock` when there is none.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Send one frame.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()>;
    /// The fd to watch for readability.
    fn raw_fd(&self) -> RawFd;
}

/// A frame-preserving fd: a tap, or (tests) one end of a datagram socket pair.
#[derive(Debug)]
pub struct FdBackend {
    fd: OwnedFd,
}

impl FdBackend {
    /// Use `fd` (made non-blocking here).
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
        Ok(FdBackend { fd })
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
}

/// The tap flags of every tap whose fd this device is handed (`IFF_TAP |
/// IFF_NO_PI`, no `IFF_VNET_HDR`): plain Ethernet frames, no packet
/// information, no virtio-net header. Whoever opens a tap for a VMM (the
/// network dataplane too) opens it with exactly these; with a vnet header
/// the kernel would read the first bytes of every frame as one.
pub const TAP_FLAGS: libc::c_short = 0x0002 | 0x1000;

/// Attach to the existing (or a new) tap interface `name` with [`TAP_FLAGS`].
pub fn open_tap(name: &str) -> Result<FdBackend, NetError> {
    const TUNSETIFF: libc::c_ulong = 0x400454CA;
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
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
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

struct Active {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    rx: Queue,
    tx: Queue,
}

/// A network card.
pub struct VirtioNet {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    queue_sizes: [u16; 2],
    acked_features: u64,
    active: Option<Active>,
    /// A frame read from the backend that no RX buffer has taken yet.
    rx_frame: Vec<u8>,
    rx_pending: Option<usize>,
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
            rx_frame: vec![0; MAX_FRAME_LEN],
            rx_pending: None,
            tx_frame: Vec::with_capacity(NET_HDR_LEN + MAX_FRAME_LEN),
            segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            stats: DeviceStats::default(),
        }
    }

    /// Deliver frames from the backend into RX buffers while both last.
    fn process_rx(&mut self) -> Result<(), DeviceError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mem = &active.mem;
        let err = |e| DeviceError::Queue(RX_QUEUE, e);
        let mut added = 0u32;
        loop {
            active.rx.disable_notification(mem).map_err(err)?;
            loop {
                let len = match self.rx_pending {
                    Some(len) => len,
                    None => match self.backend.read_frame(&mut self.rx_frame) {
                        Ok(len) => len,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!("virtio-net: backend read failed: {e}");
                            break;
                        }
                    },
                };
                self.rx_pending = Some(len);
                let Some(chain) = pop_chain(&mut active.rx, mem, RX_QUEUE)? else {
                    // No buffer: keep the frame until the guest adds some.
                    break;
                };
                self.rx_pending = None;
                let head = chain.head_index();
                let frame = &self.rx_frame[..len];
                let used = match write_rx(&mut self.segs, chain, mem, frame) {
                    Ok(n) => {
                        self.stats.requests += 1;
                        self.stats.bytes_to_guest += len as u64;
                        n
                    }
                    Err(e) => {
                        tracing::debug!("virtio-net: RX frame dropped: {e}");
                        self.stats.errors += 1;
                        0
                    }
                };
                active.rx.add_used(mem, head, used).map_err(err)?;
                added += 1;
            }
            // Ask for a notification when buffers come (with EVENT_IDX this publishes
            // avail_event); if some came meanwhile and a frame waits, go on.
            let more_buffers = active.rx.enable_notification(mem).map_err(err)?;
            if !(more_buffers && self.rx_pending.is_some()) {
                break;
            }
        }
        if added > 0 && active.rx.needs_notification(mem).map_err(err)? {
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
        let mut added = 0u32;
        loop {
            active.tx.disable_notification(mem).map_err(err)?;
            while let Some(chain) = pop_chain(&mut active.tx, mem, TX_QUEUE)? {
                let head = chain.head_index();
                match read_tx(&mut self.segs, &mut self.tx_frame, chain, mem) {
                    Ok(()) => {
                        let frame = &self.tx_frame[NET_HDR_LEN..];
                        match self.backend.write_frame(frame) {
                            Ok(()) => {
                                self.stats.requests += 1;
                                self.stats.bytes_from_guest += frame.len() as u64;
                            }
                            Err(e) => {
                                // A full or downed tap drops the frame, as a wire would.
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

/// Write header + `frame` into the chain's writable buffers; returns the used length.
fn write_rx(
    segs: &mut Vec<Segment>,
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    frame: &[u8],
) -> Result<u32, NetError> {
    collect_chain(chain, mem, segs, usize::from(QUEUE_SIZE))?;
    let total = NET_HDR_LEN + frame.len();
    let room: u64 = segs
        .iter()
        .filter(|s| s.writable)
        .map(|s| u64::from(s.len))
        .sum();
    if room < total as u64 {
        return Err(NetError::FrameSize(frame.len()));
    }
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[10] = 1; // num_buffers
    let mut done = 0usize;
    for s in segs.iter().filter(|s| s.writable) {
        if done == total {
            break;
        }
        let n = (s.len as usize).min(total - done);
        let slice = mem
            .get_slice(GuestAddress(s.addr.0), n)
            .map_err(|_| NetError::GuestMemory)?;
        // The chunk [done, done + n) of hdr ++ frame.
        let mut off = 0;
        if done < NET_HDR_LEN {
            let h = (NET_HDR_LEN - done).min(n);
            slice
                .subslice(0, h)
                .map_err(|_| NetError::GuestMemory)?
                .copy_from(&hdr[done..done + h]);
            off = h;
        }
        if off < n {
            let f = done + off - NET_HDR_LEN;
            slice
                .subslice(off, n - off)
                .map_err(|_| NetError::GuestMemory)?
                .copy_from(&frame[f..f + (n - off)]);
        }
        done += n;
    }
    u32::try_from(total).map_err(|_| NetError::FrameSize(frame.len()))
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
        features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | net_features::MAC
            | net_features::STATUS
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
        self.rx_pending = None;
        self.acked_features = 0;
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
        super::positions(self.active.iter().flat_map(|a| [&a.rx, &a.tx]))
    }
}

/// Write a frame's bytes as a guest would see them after RX (header + frame); used by tests.
pub fn rx_header() -> [u8; NET_HDR_LEN] {
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr[10] = 1;
    hdr
}
