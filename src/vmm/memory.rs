//! Guest RAM: anonymous private mappings, one per RAM range, each starting on a 2 MiB boundary
//! and, when the VM asks for huge pages, marked `MADV_HUGEPAGE`.
//!
//! Why our own mapping: vm-memory maps guest RAM wherever `mmap` puts it, which on the kernels
//! we run on (before 6.7) is only 4 KiB-aligned, so neither the host's transparent huge pages nor
//! KVM's 2 MiB stage-2 (NPT/EPT) mappings can cover it: every 4 KiB of guest RAM the guest
//! touches is a nested page fault. In the lab a Linux boot took 22.9k of them under yunhe against
//! 0.86k under QEMU, which aligns and madvises its RAM (docs/lab.md). With huge pages on, one
//! fault maps 2 MiB.
//!
//! The cost: a 2 MiB page is resident whole once any byte of it is touched. A guest that touches
//! little memory in many places (the echo guest, tiny firmware) would grow from a few hundred KiB
//! to several MiB, so huge pages are a per-VM choice (`VmConfig::huge_pages`, off by default;
//! compute turns it on for flavors with `hw:mem_page_size` = `large`, `2MB`/`2048` or `any`).
//! The alignment itself costs nothing and is always done.
//!
//! Ownership: vm-memory keeps one "bitmap" value beside each region and drops it with the
//! region. [`RamMapping`] is that value: it tracks no dirty pages and unmaps the range it owns
//! when the last clone of the guest memory that holds the region is gone, so no device can
//! still reach the memory.

use std::io;

use vm_memory::bitmap::{Bitmap, NewBitmap, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestRegionMmap};

/// The host's huge page size on x86-64 (a PMD).
pub const HUGE_PAGE: usize = 2 << 20;

/// Guest memory as the VMM builds it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<RamMapping>;

/// Errors of mapping guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap of {0} bytes of guest RAM failed: {1}
    #[error("mmap of {0} bytes of guest RAM failed: {1}")]
    Map(usize, io::Error),
    /// A guest RAM range of {0} bytes is empty or too large
    #[error("a guest RAM range of {0} bytes is empty or too large")]
    Size(usize),
    /// vm-memory refused the mapping: {0}
    #[error("vm-memory refused the mapping: {0}")]
    Region(String),
    /// Guest RAM ranges overlap or are out of order
    #[error("guest RAM ranges overlap or are out of order")]
    Layout,
}

/// Owns one guest-RAM mapping (see the module docs); the default owns nothing.
#[derive(Debug, Default)]
pub struct RamMapping {
    addr: usize,
    len: usize,
}

impl Drop for RamMapping {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: [addr, addr + len) is a mapping this value made and owns alone; it is dropped
        // with the vm-memory region that was the only way to reach that memory.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
        #[cfg(test)]
        tests::UNMAPPED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.addr);
    }
}

impl WithBitmapSlice<'_> for RamMapping {
    type S = ();
}

impl Bitmap for RamMapping {
    fn mark_dirty(&self, _offset: usize, _len: usize) {}

    fn dirty_at(&self, _offset: usize) -> bool {
        false
    }

    fn slice_at(&self, _offset: usize) {}
}

impl NewBitmap for RamMapping {
    /// For memory vm-memory maps itself (tests): it owns that mapping, so this owns nothing.
    fn with_len(_len: usize) -> Self {
        RamMapping::default()
    }
}

/// Maps guest RAM for `ranges` (guest address, bytes; sorted, not overlapping): each range
/// 2 MiB-aligned in the host's address space, lazily populated (nothing is touched here), with
/// `MADV_HUGEPAGE` when `huge_pages`.
pub fn map_guest_ram(
    ranges: &[(GuestAddress, usize)],
    huge_pages: bool,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::with_capacity(ranges.len());
    for &(guest, len) in ranges {
        let region = map_range(len, huge_pages)?;
        regions.push(GuestRegionMmap::new(region, guest).ok_or(MemoryError::Layout)?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|_| MemoryError::Layout)
}

fn map_range(
    len: usize,
    huge_pages: bool,
) -> Result<vm_memory::MmapRegion<RamMapping>, MemoryError> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let padded = len
        .checked_add(HUGE_PAGE)
        .filter(|_| len != 0)
        .ok_or(MemoryError::Size(len))?;
    // SAFETY: a new anonymous mapping at an address the kernel picks; nothing is overwritten.
    let raw = unsafe { libc::mmap(std::ptr::null_mut(), padded, prot, flags, -1, 0) };
    if raw == libc::MAP_FAILED {
        return Err(MemoryError::Map(len, io::Error::last_os_error()));
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let head = aligned - start;
    let tail = padded - head - len;
    // SAFETY: both pieces lie inside the mapping made above, outside [aligned, aligned + len),
    // and nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    // From here the owner unmaps [aligned, aligned + len) on every path.
    let owner = RamMapping { addr: aligned, len };
    if huge_pages {
        // SAFETY: advice on a range this function mapped; it changes no memory contents. A
        // kernel without transparent huge pages answers EINVAL, and the guest runs on 4 KiB
        // pages as before.
        unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    }
    let builder = MmapRegionBuilder::new_with_bitmap(len, owner)
        .with_mmap_prot(prot)
        .with_mmap_flags(flags);
    // SAFETY: [aligned, aligned + len) is a live mapping of exactly `len` bytes that the
    // region's bitmap (the owner) keeps alive until the region is dropped.
    let builder = unsafe { builder.with_raw_mmap_pointer(aligned as *mut u8) };
    builder
        .build()
        .map_err(|e| MemoryError::Region(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    /// Start addresses [`RamMapping`]s unmapped (tests run in parallel: an address is checked,
    /// not whether it is mapped, which another test's mmap could change).
    pub(super) static UNMAPPED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    fn unmapped(addr: usize) -> bool {
        UNMAPPED.lock().expect("test").contains(&addr)
    }

    #[test]
    fn ranges_are_2mib_aligned_readable_writable_and_where_asked() {
        let mem = map_guest_ram(
            &[(GuestAddress(0), 6 << 20), (GuestAddress(1 << 32), 3 << 20)],
            true,
        )
        .expect("test");
        assert_eq!(mem.num_regions(), 2);
        for r in mem.iter() {
            let host = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .expect("test");
            assert_eq!(host as usize % HUGE_PAGE, 0);
        }
        mem.write_obj(0xdead_beef_u32, GuestAddress((1 << 32) + 4096))
            .expect("test");
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress((1 << 32) + 4096))
                .expect("test"),
            0xdead_beef
        );
        // Fresh anonymous memory reads as zero; the gap between the ranges is no memory.
        assert_eq!(mem.read_obj::<u64>(GuestAddress(5 << 20)).expect("test"), 0);
        assert!(mem.read_obj::<u8>(GuestAddress(7 << 20)).is_err());
    }

    #[test]
    fn dropping_the_memory_unmaps_it() {
        let mem = map_guest_ram(&[(GuestAddress(0), 4 << 20)], false).expect("test");
        let host = mem
            .iter()
            .next()
            .expect("test")
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .expect("test") as usize;
        let clone = mem.clone();
        drop(mem);
        // Still mapped: a clone holds the region.
        assert_eq!(clone.read_obj::<u8>(GuestAddress(4095)).expect("test"), 0);
        drop(clone);
        assert!(unmapped(host));
    }

    #[test]
    fn empty_and_overlapping_ranges_are_refused() {
        assert!(matches!(
            map_guest_ram(&[(GuestAddress(0), 0)], false),
            Err(MemoryError::Size(0))
        ));
        assert!(matches!(
            map_guest_ram(
                &[(GuestAddress(0), 4 << 20), (GuestAddress(2 << 20), 4 << 20)],
                false
            ),
            Err(MemoryError::Layout)
        ));
    }
}
