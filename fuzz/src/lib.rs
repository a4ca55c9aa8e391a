//! The VMM's virtio device models, compiled on their own so that the fuzz targets (and a quick
//! `cargo test` while the main crate is mid-edit) can reach them without a library target in
//! the main crate.

/// `crate::vmm::memory`, which the virtio devices use for guest memory.
pub mod vmm;

#[path = "../../src/vmm/devices/virtio/mod.rs"]
pub mod virtio;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use virtio::GuestMemory;

/// Where the fuzz input lands in guest memory.
pub const INPUT_BASE: u64 = 0x1000;
/// Descriptor table address.
pub const DESC: u64 = 0x1000;
/// Available ring address.
pub const AVAIL: u64 = 0x2000;
/// Used ring address.
pub const USED: u64 = 0x3000;
/// End of the first memory region; a second, small region sits after a hole.
pub const REGION0_END: u64 = 0x1_0000;
/// Start of the second region.
pub const REGION1: u64 = 0x2_0000;

/// Build guest memory and a ready queue from fuzz input:
/// byte 0 picks the queue size (1..=256), byte 1 the available index, byte 2 flags for the
/// caller, the rest fills guest memory from 0x1000 (descriptor table, avail ring entries, and
/// buffers). Two regions with a hole between them catch buffers that straddle regions.
pub fn layout(data: &[u8]) -> Option<(GuestMemory, Queue, u8)> {
    if data.len() < 3 {
        return None;
    }
    let size = 1u16 << (data[0] % 9);
    let avail_idx = u16::from(data[1]);
    let flags = data[2];
    let mem = GuestMemory::from_ranges(&[
        (GuestAddress(0), REGION0_END as usize),
        (GuestAddress(REGION1), 0x1000),
    ])
    .ok()?;
    let body = &data[3..];
    let n = body.len().min((REGION0_END - INPUT_BASE) as usize);
    mem.write_slice(&body[..n], GuestAddress(INPUT_BASE)).ok()?;
    // Avail flags and idx; the used ring starts clean.
    mem.write_obj(0u16, GuestAddress(AVAIL)).ok()?;
    mem.write_obj(avail_idx, GuestAddress(AVAIL + 2)).ok()?;
    mem.write_slice(&vec![0u8; 6 + 8 * usize::from(size)], GuestAddress(USED))
        .ok()?;
    let mut q = Queue::new(size).ok()?;
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_event_idx(flags & 1 != 0);
    q.set_ready(true);
    Some((mem, q, flags))
}

/// Disk boot's parsers (partitions, ext4, FAT, boot configurations).
#[path = "../../src/vmm/diskboot/mod.rs"]
pub mod diskboot;

/// The qcow2 reader.
#[path = "../../src/image/qcow2.rs"]
pub mod qcow2;

/// The entry points of the disk-boot fuzz targets.
pub mod diskboot_fuzz;

/// The entry point of the qcow2 fuzz target.
pub mod qcow2_fuzz;
