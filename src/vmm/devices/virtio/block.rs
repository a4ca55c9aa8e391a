//! virtio-blk (virtio 1.2 §5.2): one request queue over a [`BlockBackend`].
//!
//! Requests: read, write, flush, get-id (the serial), discard and write-zeroes. A read-only disk
//! fails writes, discards and write-zeroes with `VIRTIO_BLK_S_IOERR` and advertises
//! `VIRTIO_BLK_F_RO`. Several disks are several `VirtioBlock`s.
//!
//! A request is a descriptor chain: a 16-byte header (type, reserved, sector) in the readable
//! part, data (readable for writes, writable for reads), and a 1-byte status as the last
//! writable byte. The device makes no assumption about how the guest splits these over
//! descriptors (virtio 1.2 §2.6.4).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};

use super::{
    ActivateError, ChainError, DeviceError, DeviceStats, GuestMemory, ResizeError, Resized,
    Segment, VirtioDevice, VirtioInterrupt, VirtioInterruptKind, collect_chain, device_type,
    features, pop_chain, read_config_bytes,
};

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered to the guest.
pub const QUEUE_SIZE: u16 = 256;
/// Most buffers one request may have (`seg_max` + header + status).
pub const MAX_SEGMENTS: usize = QUEUE_SIZE as usize;
/// Most ranges in one discard or write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 32;
/// Length of the id returned by `VIRTIO_BLK_T_GET_ID`.
pub const ID_LEN: usize = 20;

/// Request types.
pub mod request_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Get the device id (serial).
    pub const GET_ID: u32 = 8;
    /// Discard ranges.
    pub const DISCARD: u32 = 11;
    /// Write zeroes over ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Request status values.
pub mod request_status {
    /// Success.
    pub const OK: u8 = 0;
    /// Error (bad request, out of range, read-only, backend failure).
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Feature bits of virtio-blk.
pub mod blk_features {
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// The disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Flush is supported.
    pub const FLUSH: u64 = 1 << 9;
    /// Discard is supported.
    pub const DISCARD: u64 = 1 << 13;
    /// Write-zeroes is supported.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Errors of virtio-blk: backends and requests.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Cannot open disk image {0}: {1}
    #[error("cannot open disk image {0}: {1}")]
    Open(std::path::PathBuf, io::Error),
    /// Cannot read the size of the disk image: {0}
    #[error("cannot read the size of the disk image: {0}")]
    Size(io::Error),
    /// Malformed descriptor chain: {0}
    #[error("malformed descriptor chain: {0}")]
    Chain(#[from] ChainError),
    /// The request has no header
    #[error("the request has no header")]
    NoHeader,
    /// The request has no status byte
    #[error("the request has no status byte")]
    NoStatus,
    /// Data length {0} is not a multiple of 512
    #[error("data length {0} is not a multiple of 512")]
    UnalignedLength(u64),
    /// Sectors {sector}+{bytes} bytes lie outside the disk
    #[error("sectors {sector}+{bytes} bytes lie outside the disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Length in bytes.
        bytes: u64,
    },
    /// The disk is read-only
    #[error("the disk is read-only")]
    ReadOnly,
    /// Unsupported request type {0}
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// Guest memory access failed
    #[error("guest memory access failed")]
    GuestMemory,
    /// Backend I/O failed: {0}
    #[error("backend I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl BlockError {
    fn status(&self) -> u8 {
        match self {
            BlockError::Unsupported(_) => request_status::UNSUPP,
            _ => request_status::IOERR,
        }
    }
}

/// Storage behind a virtio-blk device. Offsets and lengths are in bytes and already checked
/// against [`BlockBackend::capacity`].
pub trait BlockBackend: Send {
    /// Size in bytes (as last read: [`BlockBackend::size_now`] re-reads it).
    fn capacity(&self) -> u64;
    /// The storage's size now, read again from it (an image may have grown since it was
    /// opened). The default: the storage never changes size.
    fn size_now(&self) -> io::Result<u64> {
        Ok(self.capacity())
    }
    /// Take `bytes` (what [`BlockBackend::size_now`] returned, never smaller than the
    /// capacity) as the capacity.
    fn set_capacity(&mut self, _bytes: u64) {}
    /// Fill `dst` (guest memory) from `offset`.
    fn read_at(&mut self, offset: u64, dst: &VolatileSlice<'_>) -> io::Result<()>;
    /// Store `src` (guest memory) at `offset`.
    fn write_at(&mut self, offset: u64, src: &VolatileSlice<'_>) -> io::Result<()>;
    /// Make written data durable.
    fn flush(&mut self) -> io::Result<()>;
    /// The guest no longer needs `[offset, offset + len)`; it may read back anything.
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()>;
    /// `[offset, offset + len)` must read back as zeroes; `unmap` allows deallocating.
    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
}

fn range(offset: u64, len: u64, cap: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= cap)
        .ok_or(io::ErrorKind::InvalidInput)?;
    Ok(start..end)
}

/// A disk in host memory (tests and benchmarks).
#[derive(Debug)]
pub struct MemoryBackend {
    data: Vec<u8>,
    /// Flushes so far.
    pub flushes: u64,
}

impl MemoryBackend {
    /// A zeroed disk of `bytes` bytes.
    pub fn new(bytes: usize) -> Self {
        MemoryBackend {
            data: vec![0; bytes],
            flushes: 0,
        }
    }

    /// The disk's contents.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The disk's contents, mutably.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl BlockBackend for MemoryBackend {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&mut self, offset: u64, dst: &VolatileSlice<'_>) -> io::Result<()> {
        let r = range(offset, dst.len() as u64, self.data.len())?;
        dst.copy_from(&self.data[r]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, src: &VolatileSlice<'_>) -> io::Result<()> {
        let r = range(offset, src.len() as u64, self.data.len())?;
        src.copy_to(&mut self.data[r]);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _unmap: bool) -> io::Result<()> {
        let r = range(offset, len, self.data.len())?;
        self.data[r].fill(0);
        Ok(())
    }
}

/// A raw disk image file (or block device). Reads and writes go straight between the file and
/// guest memory (`pread`/`pwrite`, no bounce buffer).
#[derive(Debug)]
pub struct RawFileBackend {
    file: File,
    size: u64,
}

impl RawFileBackend {
    /// Use an already open image (the control plane may hand over the fd).
    pub fn new(file: File) -> Result<Self, BlockError> {
        use std::io::{Seek, SeekFrom};
        let mut f = file;
        // Seeking to the end works for regular files and block devices alike.
        let size = f.seek(SeekFrom::End(0)).map_err(BlockError::Size)?;
        Ok(RawFileBackend { file: f, size })
    }

    /// Open the image at `path`, read-write or read-only.
    pub fn open(path: &std::path::Path, read_only: bool) -> Result<Self, BlockError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| BlockError::Open(path.to_path_buf(), e))?;
        Self::new(file)
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let len = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by `self.file`.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn write_zero_bytes(&self, mut offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let zeroes = [0u8; 64 * 1024];
        let end = offset.saturating_add(len);
        while offset < end {
            let n = (end - offset).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }
}

impl BlockBackend for RawFileBackend {
    fn capacity(&self) -> u64 {
        self.size
    }

    fn size_now(&self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        // As `new` does: the end of a regular file or a block device. Reads and writes use
        // explicit offsets, so moving the file position changes nothing.
        (&self.file).seek(SeekFrom::End(0))
    }

    fn set_capacity(&mut self, bytes: u64) {
        self.size = bytes;
    }

    fn read_at(&mut self, offset: u64, dst: &VolatileSlice<'_>) -> io::Result<()> {
        let guard = dst.ptr_guard_mut();
        let ptr = guard.as_ptr();
        let mut done = 0usize;
        while done < dst.len() {
            let off = libc::off_t::try_from(offset + done as u64)
                .map_err(|_| io::ErrorKind::InvalidInput)?;
            // SAFETY: `ptr..ptr + dst.len()` is mapped guest memory (the VolatileSlice was made
            // by a bounds-checked `get_slice`); the kernel writes at most `dst.len() - done`
            // bytes at `ptr + done`.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    ptr.add(done).cast(),
                    dst.len() - done,
                    off,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => {
                    // The file shrank under us: the rest reads as zeroes.
                    if let Ok(rest) = dst.subslice(done, dst.len() - done) {
                        rest.copy_from(&vec![0u8; dst.len() - done]);
                    }
                    break;
                }
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, src: &VolatileSlice<'_>) -> io::Result<()> {
        let guard = src.ptr_guard();
        let ptr = guard.as_ptr();
        let mut done = 0usize;
        while done < src.len() {
            let off = libc::off_t::try_from(offset + done as u64)
                .map_err(|_| io::ErrorKind::InvalidInput)?;
            // SAFETY: `ptr..ptr + src.len()` is mapped guest memory (bounds-checked
            // `get_slice`); the kernel reads at most `src.len() - done` bytes at `ptr + done`.
            let n = unsafe {
                libc::pwrite(
                    self.file.as_raw_fd(),
                    ptr.add(done).cast(),
                    src.len() - done,
                    off,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => return Err(io::ErrorKind::WriteZero.into()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Best effort: a file system without hole punching simply keeps the data.
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
            r => r,
        }
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, unmap: bool) -> io::Result<()> {
        let mode = if unmap {
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        } else {
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
        };
        match self.fallocate(mode, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENODEV)) => {
                self.write_zero_bytes(offset, len)
            }
            Err(e) => Err(e),
        }
    }
}

/// What a request did, for the used ring and the statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestOutcome {
    /// Status byte written (`None` when the chain had nowhere to put it).
    pub status: Option<u8>,
    /// Bytes written into the writable part of the chain (the used length).
    pub used_len: u32,
    /// Bytes moved from the guest to the disk.
    pub bytes_from_guest: u64,
    /// Bytes moved from the disk to the guest.
    pub bytes_to_guest: u64,
}

/// Where a byte stream offset lands in a list of segments.
fn locate(segs: &[Segment], mut offset: u64) -> Option<(usize, u64)> {
    for (i, s) in segs.iter().enumerate() {
        if offset < u64::from(s.len) {
            return Some((i, offset));
        }
        offset -= u64::from(s.len);
    }
    None
}

/// Read exactly `buf.len()` bytes at `offset` of the byte stream formed by `segs`.
fn read_stream(
    mem: &GuestMemory,
    segs: &[Segment],
    offset: u64,
    buf: &mut [u8],
) -> Result<(), BlockError> {
    let Some((mut i, mut at)) = locate(segs, offset) else {
        return Err(BlockError::NoHeader);
    };
    let mut done = 0;
    while done < buf.len() {
        let s = segs.get(i).ok_or(BlockError::NoHeader)?;
        let n = (u64::from(s.len) - at).min((buf.len() - done) as u64) as usize;
        mem.read_slice(&mut buf[done..done + n], GuestAddress(s.addr.0 + at))
            .map_err(|_| BlockError::GuestMemory)?;
        done += n;
        i += 1;
        at = 0;
    }
    Ok(())
}

fn stream_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| u64::from(s.len)).sum()
}

/// Call `f(disk_offset, slice)` over `[start, start + len)` of the byte stream `segs`.
fn for_each_slice<F>(
    mem: &GuestMemory,
    segs: &[Segment],
    start: u64,
    len: u64,
    disk_offset: u64,
    mut f: F,
) -> Result<(), BlockError>
where
    F: FnMut(u64, &VolatileSlice<'_>) -> io::Result<()>,
{
    if len == 0 {
        return Ok(());
    }
    let Some((mut i, mut at)) = locate(segs, start) else {
        return Err(BlockError::GuestMemory);
    };
    let mut done = 0u64;
    while done < len {
        let s = segs.get(i).ok_or(BlockError::GuestMemory)?;
        let n = (u64::from(s.len) - at).min(len - done);
        let slice = mem
            .get_slice(GuestAddress(s.addr.0 + at), n as usize)
            .map_err(|_| BlockError::GuestMemory)?;
        f(disk_offset + done, &slice)?;
        done += n;
        i += 1;
        at = 0;
    }
    Ok(())
}

/// The request-processing core of virtio-blk, separate from the queue plumbing so that it can
/// be fuzzed and benchmarked on its own.
pub struct BlockRequestHandler {
    backend: Box<dyn BlockBackend>,
    read_only: bool,
    id: [u8; ID_LEN],
    segs: Vec<Segment>,
}

impl std::fmt::Debug for BlockRequestHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockRequestHandler")
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl BlockRequestHandler {
    /// A handler over `backend`.
    pub fn new(backend: Box<dyn BlockBackend>, read_only: bool, id: [u8; ID_LEN]) -> Self {
        BlockRequestHandler {
            backend,
            read_only,
            id,
            segs: Vec::with_capacity(MAX_SEGMENTS),
        }
    }

    /// The backend (tests look at the disk through it).
    pub fn backend(&self) -> &dyn BlockBackend {
        self.backend.as_ref()
    }

    fn capacity_sectors(&self) -> u64 {
        self.backend.capacity() / SECTOR_SIZE
    }

    fn check_range(&self, sector: u64, bytes: u64) -> Result<u64, BlockError> {
        let oor = BlockError::OutOfRange { sector, bytes };
        let offset = sector
            .checked_mul(SECTOR_SIZE)
            .ok_or_else(|| oor_copy(&oor))?;
        let end = offset.checked_add(bytes).ok_or_else(|| oor_copy(&oor))?;
        if end > self.capacity_sectors() * SECTOR_SIZE {
            return Err(oor);
        }
        Ok(offset)
    }

    /// Handle one descriptor chain: parse, run against the backend, write the status byte.
    pub fn handle_chain(
        &mut self,
        chain: virtio_queue::DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> RequestOutcome {
        let mut segs = std::mem::take(&mut self.segs);
        let outcome = self.handle_segments(&mut segs, chain, mem);
        self.segs = segs;
        outcome
    }

    fn handle_segments(
        &mut self,
        segs: &mut Vec<Segment>,
        chain: virtio_queue::DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> RequestOutcome {
        if let Err(e) = collect_chain(chain, mem, segs, MAX_SEGMENTS) {
            tracing::debug!("virtio-blk: {e}");
            // Nothing of a malformed chain is trusted, not even where its status byte would
            // be: complete it with a used length of 0 and leave guest memory alone.
            return RequestOutcome::default();
        }
        let split = segs.iter().position(|s| s.writable).unwrap_or(segs.len());
        let (readable, writable) = segs.split_at(split);
        // The status byte: the last writable byte.
        let Some(last) = writable.last() else {
            tracing::debug!("virtio-blk: {}", BlockError::NoStatus);
            return RequestOutcome::default();
        };
        let status_addr = GuestAddress(last.addr.0 + u64::from(last.len) - 1);
        let data_in_len = stream_len(writable) - 1;

        let mut out = RequestOutcome::default();
        let result = self.execute(mem, readable, writable, data_in_len, &mut out);
        let status = match result {
            Ok(()) => request_status::OK,
            Err(e) => {
                tracing::debug!("virtio-blk request failed: {e}");
                e.status()
            }
        };
        if mem.write_obj(status, status_addr).is_err() {
            return RequestOutcome::default();
        }
        out.status = Some(status);
        // The used length counts the data written for reads and ids plus the status byte.
        out.used_len = out.used_len.saturating_add(1);
        out
    }

    fn execute(
        &mut self,
        mem: &GuestMemory,
        readable: &[Segment],
        writable: &[Segment],
        data_in_len: u64,
        out: &mut RequestOutcome,
    ) -> Result<(), BlockError> {
        let mut header = [0u8; 16];
        read_stream(mem, readable, 0, &mut header)?;
        let req_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes([
            header[8], header[9], header[10], header[11], header[12], header[13], header[14],
            header[15],
        ]);
        let data_out_len = stream_len(readable) - 16;
        match req_type {
            request_type::IN => {
                if !data_in_len.is_multiple_of(SECTOR_SIZE) {
                    return Err(BlockError::UnalignedLength(data_in_len));
                }
                let offset = self.check_range(sector, data_in_len)?;
                let backend = &mut self.backend;
                for_each_slice(mem, writable, 0, data_in_len, offset, |o, s| {
                    backend.read_at(o, s)
                })?;
                out.used_len = u32::try_from(data_in_len).unwrap_or(u32::MAX);
                out.bytes_to_guest = data_in_len;
                Ok(())
            }
            request_type::OUT => {
                if self.read_only {
                    return Err(BlockError::ReadOnly);
                }
                if !data_out_len.is_multiple_of(SECTOR_SIZE) {
                    return Err(BlockError::UnalignedLength(data_out_len));
                }
                let offset = self.check_range(sector, data_out_len)?;
                let backend = &mut self.backend;
                for_each_slice(mem, readable, 16, data_out_len, offset, |o, s| {
                    backend.write_at(o, s)
                })?;
                out.bytes_from_guest = data_out_len;
                Ok(())
            }
            request_type::FLUSH => Ok(self.backend.flush()?),
            request_type::GET_ID => {
                let n = data_in_len.min(ID_LEN as u64);
                let id = self.id;
                let mut written = 0u64;
                for_each_slice(mem, writable, 0, n, 0, |o, s| {
                    let start = o as usize;
                    s.copy_from(&id[start..start + s.len()]);
                    written += s.len() as u64;
                    Ok(())
                })?;
                out.used_len = written as u32;
                out.bytes_to_guest = written;
                Ok(())
            }
            request_type::DISCARD | request_type::WRITE_ZEROES => {
                if self.read_only {
                    return Err(BlockError::ReadOnly);
                }
                if data_out_len == 0 || !data_out_len.is_multiple_of(16) {
                    return Err(BlockError::UnalignedLength(data_out_len));
                }
                let count = data_out_len / 16;
                if count > u64::from(MAX_DISCARD_SEGMENTS) {
                    return Err(BlockError::Unsupported(req_type));
                }
                for i in 0..count {
                    let mut range = [0u8; 16];
                    read_stream(mem, readable, 16 + i * 16, &mut range)?;
                    let start = u64::from_le_bytes([
                        range[0], range[1], range[2], range[3], range[4], range[5], range[6],
                        range[7],
                    ]);
                    let sectors = u32::from_le_bytes([range[8], range[9], range[10], range[11]]);
                    let flags = u32::from_le_bytes([range[12], range[13], range[14], range[15]]);
                    let unmap = flags & 1 != 0;
                    if flags & !1 != 0 || (req_type == request_type::DISCARD && unmap) {
                        return Err(BlockError::Unsupported(req_type));
                    }
                    let bytes = u64::from(sectors) * SECTOR_SIZE;
                    let offset = self.check_range(start, bytes)?;
                    if req_type == request_type::DISCARD {
                        self.backend.discard(offset, bytes)?;
                    } else {
                        self.backend.write_zeroes(offset, bytes, unmap)?;
                    }
                }
                Ok(())
            }
            other => Err(BlockError::Unsupported(other)),
        }
    }
}

fn oor_copy(e: &BlockError) -> BlockError {
    match e {
        BlockError::OutOfRange { sector, bytes } => BlockError::OutOfRange {
            sector: *sector,
            bytes: *bytes,
        },
        _ => BlockError::GuestMemory,
    }
}

struct ActiveQueue {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// A virtio-blk device.
pub struct VirtioBlock {
    handler: BlockRequestHandler,
    acked_features: u64,
    queue_sizes: [u16; 1],
    active: Option<ActiveQueue>,
    stats: DeviceStats,
}

impl std::fmt::Debug for VirtioBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioBlock")
            .field("read_only", &self.handler.read_only)
            .field("capacity", &self.handler.backend.capacity())
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl VirtioBlock {
    /// A disk over `backend`; `serial` is what the guest sees as the id (at most 20 bytes, cut
    /// longer).
    pub fn new(backend: Box<dyn BlockBackend>, read_only: bool, serial: &str) -> Self {
        let mut id = [0u8; ID_LEN];
        let n = serial.len().min(ID_LEN);
        id[..n].copy_from_slice(&serial.as_bytes()[..n]);
        VirtioBlock {
            handler: BlockRequestHandler::new(backend, read_only, id),
            acked_features: 0,
            queue_sizes: [QUEUE_SIZE],
            active: None,
            stats: DeviceStats::default(),
        }
    }

    /// The request handler (and through it the backend).
    pub fn handler(&self) -> &BlockRequestHandler {
        &self.handler
    }

    fn config_bytes(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        let put32 = |c: &mut [u8; 60], at: usize, v: u32| {
            c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        c[0..8].copy_from_slice(&self.handler.capacity_sectors().to_le_bytes());
        put32(&mut c, 12, (MAX_SEGMENTS - 2) as u32); // seg_max
        put32(&mut c, 20, SECTOR_SIZE as u32); // blk_size
        put32(&mut c, 36, u32::MAX / SECTOR_SIZE as u32); // max_discard_sectors
        put32(&mut c, 40, MAX_DISCARD_SEGMENTS); // max_discard_seg
        put32(&mut c, 44, 1); // discard_sector_alignment
        put32(&mut c, 48, u32::MAX / SECTOR_SIZE as u32); // max_write_zeroes_sectors
        put32(&mut c, 52, MAX_DISCARD_SEGMENTS); // max_write_zeroes_seg
        c[56] = 1; // write_zeroes_may_unmap
        c
    }

    fn process(&mut self) -> Result<(), DeviceError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mem = &active.mem;
        let q = &mut active.queue;
        let err = |e| DeviceError::Queue(0, e);
        let mut added = 0u32;
        loop {
            q.disable_notification(mem).map_err(err)?;
            while let Some(chain) = pop_chain(q, mem, 0)? {
                let head = chain.head_index();
                let out = self.handler.handle_chain(chain, mem);
                q.add_used(mem, head, out.used_len).map_err(err)?;
                added += 1;
                self.stats.requests += 1;
                if out.status != Some(request_status::OK) {
                    self.stats.errors += 1;
                }
                self.stats.bytes_from_guest += out.bytes_from_guest;
                self.stats.bytes_to_guest += out.bytes_to_guest;
            }
            if !q.enable_notification(mem).map_err(err)? {
                break;
            }
        }
        if added > 0 && q.needs_notification(mem).map_err(err)? {
            active.interrupt.trigger(VirtioInterruptKind::Queue(0));
        }
        Ok(())
    }
}

impl VirtioDevice for VirtioBlock {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        let mut f = features::VERSION_1
            | features::RING_INDIRECT_DESC
            | features::RING_EVENT_IDX
            | blk_features::SEG_MAX
            | blk_features::BLK_SIZE
            | blk_features::FLUSH;
        if self.handler.read_only {
            f |= blk_features::RO;
        } else {
            f |= blk_features::DISCARD | blk_features::WRITE_ZEROES;
        }
        f
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_bytes(), offset, data);
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
        let Some(queue) = queues.into_iter().next().filter(|_| got == 1) else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        if queue.ready() && !queue.is_valid(&mem) {
            return Err(ActivateError::InvalidQueue(0));
        }
        self.active = Some(ActiveQueue {
            mem,
            interrupt,
            queue,
        });
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    fn process_queue(&mut self, queue_index: u16) -> Result<(), DeviceError> {
        if queue_index != 0 {
            return Err(DeviceError::NoSuchQueue(queue_index));
        }
        self.process()
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }

    fn capacity(&self) -> Option<u64> {
        Some(self.handler.backend.capacity())
    }

    fn resize(&mut self) -> Result<Resized, ResizeError> {
        let old = self.handler.backend.capacity();
        let new = self.handler.backend.size_now()?;
        if new < old {
            return Err(ResizeError::Shrunk { old, new });
        }
        self.handler.backend.set_capacity(new);
        Ok(Resized { old, new })
    }

    fn queue_positions(&self) -> Vec<(u16, u16)> {
        super::positions(self.active.iter().map(|a| &a.queue))
    }
}
