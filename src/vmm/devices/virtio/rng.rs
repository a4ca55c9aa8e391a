//! virtio-rng (virtio 1.2 §5.4): fills the guest's writable buffers from the host's
//! `getrandom(2)`.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::{
    ActivateError, DeviceError, DeviceStats, GuestMemory, Segment, VirtioDevice, VirtioInterrupt,
    VirtioInterruptKind, collect_chain, device_type, features, pop_chain,
};

/// Queue size offered to the guest.
pub const QUEUE_SIZE: u16 = 64;
/// Most bytes handed out per request: a guest asking for gigabytes gets this much.
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;

/// Errors of the entropy device.
#[derive(Debug, thiserror::Error)]
pub enum RngError {
    /// getrandom failed: {0}
    #[error("getrandom failed: {0}")]
    GetRandom(std::io::Error),
}

/// Fill `buf` from the kernel's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<(), RngError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RngError::GetRandom(e));
        }
        done += n as usize;
    }
    Ok(())
}

struct Active {
    mem: GuestMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
    queue: Queue,
}

/// An entropy device.
pub struct VirtioRng {
    queue_sizes: [u16; 1],
    active: Option<Active>,
    segs: Vec<Segment>,
    buf: Vec<u8>,
    stats: DeviceStats,
}

impl std::fmt::Debug for VirtioRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioRng")
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for VirtioRng {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtioRng {
    /// A new entropy device.
    pub fn new() -> Self {
        VirtioRng {
            queue_sizes: [QUEUE_SIZE],
            active: None,
            segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            buf: vec![0; MAX_BYTES_PER_REQUEST],
            stats: DeviceStats::default(),
        }
    }

    /// Fill one chain; returns the bytes written, or `None` for a malformed chain.
    fn fill_chain(
        segs: &mut Vec<Segment>,
        buf: &mut [u8],
        chain: virtio_queue::DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Option<u32> {
        if let Err(e) = collect_chain(chain, mem, segs, usize::from(QUEUE_SIZE)) {
            tracing::debug!("virtio-rng: {e}");
            return None;
        }
        let mut written = 0usize;
        for s in segs.iter().filter(|s| s.writable) {
            let n = (s.len as usize).min(buf.len() - written);
            if n == 0 {
                break;
            }
            let chunk = &mut buf[written..written + n];
            if fill_random(chunk).is_err() {
                return None;
            }
            let slice = mem.get_slice(GuestAddress(s.addr.0), n).ok()?;
            slice.copy_from(chunk);
            written += n;
        }
        u32::try_from(written).ok()
    }
}

impl VirtioDevice for VirtioRng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn device_features(&self) -> u64 {
        features::VERSION_1 | features::RING_INDIRECT_DESC
    }

    fn set_acked_features(&mut self, _features: u64) {}

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
        self.active = Some(Active {
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
    }

    fn process_queue(&mut self, queue_index: u16) -> Result<(), DeviceError> {
        if queue_index != 0 {
            return Err(DeviceError::NoSuchQueue(queue_index));
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mem = &active.mem;
        let q = &mut active.queue;
        let mut added = 0;
        while let Some(chain) = pop_chain(q, mem, 0)? {
            let head = chain.head_index();
            let len = Self::fill_chain(&mut self.segs, &mut self.buf, chain, mem);
            self.stats.requests += 1;
            match len {
                Some(n) => self.stats.bytes_to_guest += u64::from(n),
                None => self.stats.errors += 1,
            }
            q.add_used(mem, head, len.unwrap_or(0))
                .map_err(|e| DeviceError::Queue(0, e))?;
            added += 1;
        }
        if added > 0
            && q.needs_notification(mem)
                .map_err(|e| DeviceError::Queue(0, e))?
        {
            active.interrupt.trigger(VirtioInterruptKind::Queue(0));
        }
        Ok(())
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }

    fn queue_positions(&self) -> Vec<(u16, u16)> {
        super::positions(self.active.iter().map(|a| &a.queue))
    }
}
