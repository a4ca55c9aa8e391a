//! The driver's side of a split virtqueue, for tests, fuzzing and benchmarks: lays out a
//! descriptor table and rings in a `GuestMemoryMmap` and publishes chains as a guest would.

use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::{GuestMemory, VirtioInterrupt, VirtioInterruptKind};

/// `VRING_DESC_F_NEXT`.
pub const F_NEXT: u16 = 1;
/// `VRING_DESC_F_WRITE`.
pub const F_WRITE: u16 = 2;
/// `VRING_DESC_F_INDIRECT`.
pub const F_INDIRECT: u16 = 4;

/// A split virtqueue as the driver sees it.
#[derive(Clone, Copy, Debug)]
pub struct DriverQueue {
    /// Queue size.
    pub size: u16,
    /// Descriptor table address.
    pub desc: GuestAddress,
    /// Available ring address.
    pub avail: GuestAddress,
    /// Used ring address.
    pub used: GuestAddress,
    next_free: u16,
    avail_idx: u16,
}

impl DriverQueue {
    /// Lay out a queue of `size` entries at `base` (16-byte aligned), with zeroed rings.
    pub fn new(mem: &GuestMemory, base: GuestAddress, size: u16) -> Self {
        let desc = base;
        let avail = GuestAddress(base.0 + 16 * u64::from(size));
        let used_unaligned = avail.0 + 6 + 2 * u64::from(size);
        let used = GuestAddress(used_unaligned.div_ceil(4) * 4);
        let end = used.0 + 6 + 8 * u64::from(size);
        let zeroes = vec![0u8; (end - base.0) as usize];
        // Test setup: a failure here is a broken test, not guest input.
        mem.write_slice(&zeroes, base).ok();
        DriverQueue {
            size,
            desc,
            avail,
            used,
            next_free: 0,
            avail_idx: 0,
        }
    }

    /// The device's view of this queue, ready for processing.
    pub fn device_queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap_or_else(|_| panic!("bad test queue size"));
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc.0 as u32), Some((self.desc.0 >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail.0 as u32), Some((self.avail.0 >> 32) as u32));
        q.set_used_ring_address(Some(self.used.0 as u32), Some((self.used.0 >> 32) as u32));
        q.set_ready(true);
        q
    }

    /// Write descriptor `index` of the table.
    pub fn write_desc(
        &self,
        mem: &GuestMemory,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        write_desc_at(mem, self.desc, index, addr, len, flags, next);
    }

    /// Write a chain of consecutive descriptors `(addr, len, writable)` starting at the next
    /// free table slot, publish it in the available ring and return its head.
    pub fn add_chain(&mut self, mem: &GuestMemory, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_free;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let mut flags = if writable { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            self.write_desc(mem, idx, addr, len, flags, (idx + 1) % self.size);
        }
        self.next_free = (head + bufs.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// Put `head` in the available ring and bump its index.
    pub fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(self.avail.0 + 4 + 2 * slot))
            .ok();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail.0 + 2))
            .ok();
    }

    /// Set the available index directly (to fake a hostile driver).
    pub fn set_avail_idx(&mut self, mem: &GuestMemory, idx: u16) {
        self.avail_idx = idx;
        mem.write_obj(idx, GuestAddress(self.avail.0 + 2)).ok();
    }

    /// The used ring's index.
    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap_or(0)
    }

    /// Used ring element `i`: `(descriptor head, bytes written)`.
    pub fn used_elem(&self, mem: &GuestMemory, i: u16) -> (u32, u32) {
        let at = self.used.0 + 4 + 8 * u64::from(i % self.size);
        let id: u32 = mem.read_obj(GuestAddress(at)).unwrap_or(u32::MAX);
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).unwrap_or(u32::MAX);
        (id, len)
    }
}

/// Write a 16-byte split descriptor at `table + 16 * index`.
pub fn write_desc_at(
    mem: &GuestMemory,
    table: GuestAddress,
    index: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(table.0 + 16 * u64::from(index)))
        .ok();
}

/// A [`VirtioInterrupt`] that counts.
#[derive(Debug, Default)]
pub struct CountingInterrupt {
    /// Queue interrupts.
    pub queue: AtomicU64,
    /// Configuration interrupts.
    pub config: AtomicU64,
}

impl CountingInterrupt {
    /// Queue interrupts so far.
    pub fn queue_count(&self) -> u64 {
        self.queue.load(Ordering::Relaxed)
    }
}

impl VirtioInterrupt for CountingInterrupt {
    fn trigger(&self, kind: VirtioInterruptKind) {
        match kind {
            VirtioInterruptKind::Queue(_) => self.queue.fetch_add(1, Ordering::Relaxed),
            VirtioInterruptKind::Config => self.config.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Guest memory of `size` bytes at address 0 (tests only: panics if the host is out of memory).
pub fn guest_memory(size: usize) -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), size)])
        .unwrap_or_else(|e| panic!("cannot map test guest memory: {e}"))
}
