//! Guest memory and booting: PVH ELF (Xen ELF note 18) or bzImage through the
//! 64-bit boot protocol, with the command line, an initrd and the memory map.

use std::fs::File;
use std::io::{Read, Seek};

use super::memory::GuestMemoryMmap;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, ReadVolatile,
};

use super::layout::*;

/// Errors while building guest memory or loading what the guest boots.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Guest memory size {0} MiB is out of range (16 MiB to 1 TiB)
    #[error("guest memory size {0} MiB is out of range (16 MiB to 1 TiB)")]
    MemorySize(u64),
    /// Cannot map guest memory: {0}
    #[error("cannot map guest memory: {0}")]
    Memory(#[from] super::memory::MemoryError),
    /// Cannot read {0}: {1}
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// The kernel is neither a PVH ELF nor a bzImage: {0}
    #[error("the kernel is neither a PVH ELF nor a bzImage: {0}")]
    KernelFormat(String),
    /// The ELF has no PVH entry point (Xen ELF note 18)
    #[error("the ELF has no PVH entry point (Xen ELF note 18)")]
    NoPvhEntry,
    /// The kernel command line is too long ({0} bytes)
    #[error("the kernel command line is too long ({0} bytes)")]
    CmdlineTooLong(usize),
    /// The initrd ({0} bytes) does not fit in guest memory
    #[error("the initrd ({0} bytes) does not fit in guest memory")]
    InitrdTooBig(u64),
    /// Writing boot data into guest memory failed: {0}
    #[error("writing boot data into guest memory failed: {0}")]
    GuestWrite(String),
}

/// How the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// 32-bit protected mode at `entry`, %ebx = start info (PVH).
    Pvh { entry: u64 },
    /// 64-bit mode at `entry`, %rsi = boot_params (Linux 64-bit boot protocol).
    Linux64 { entry: u64 },
}

/// The RAM ranges of a VM of `mem_bytes`, split around the 32-bit MMIO hole.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    let low = mem_bytes.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if mem_bytes > MMIO_HOLE_START {
        ranges.push((
            GuestAddress(FIRST_ADDR_PAST_32BITS),
            (mem_bytes - MMIO_HOLE_START) as usize,
        ));
    }
    ranges
}

/// Maps guest memory (anonymous, 2 MiB-aligned, lazily populated by the host kernel: nothing is
/// touched here), with transparent huge pages when `huge_pages` (see `vmm::memory`).
pub fn create_memory(mem_mib: u64, huge_pages: bool) -> Result<GuestMemoryMmap, BootError> {
    if !(16..=1 << 20).contains(&mem_mib) {
        return Err(BootError::MemorySize(mem_mib));
    }
    Ok(super::memory::map_guest_ram(
        &ram_ranges(mem_mib << 20),
        huge_pages,
    )?)
}

/// One memory-map entry: (start, size, type) with type 1 = RAM, 2 = reserved.
pub type MemMapEntry = (u64, u64, u32);

/// The memory map both boot protocols describe: RAM below the EBDA, the ACPI
/// area reserved, RAM from 1 MiB, the ECAM reserved, RAM above 4 GiB.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<MemMapEntry> {
    let mut map = vec![(0, EBDA_START, 1), (ACPI_START, ACPI_SIZE, 2)];
    let low_end = mem.last_addr().raw_value().min(MMIO_HOLE_START - 1) + 1;
    map.push((HIMEM_START, low_end - HIMEM_START, 1));
    map.push((ECAM_START, ECAM_SIZE, 2));
    if let Some(high) = mem
        .iter()
        .find(|r| r.start_addr().raw_value() >= FIRST_ADDR_PAST_32BITS)
    {
        map.push((high.start_addr().raw_value(), high.len(), 1));
    }
    map
}

/// What the loader found.
pub struct LoadedKernel {
    /// Where the boot vCPU starts.
    pub entry: BootEntry,
    /// First byte past the loaded image.
    pub kernel_end: u64,
    /// The bzImage's setup header, for the zero page.
    setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

/// Loads a PVH ELF or a bzImage from `image`.
pub fn load_kernel<F>(mem: &GuestMemoryMmap, image: &mut F) -> Result<LoadedKernel, BootError>
where
    F: Read + ReadVolatile + Seek,
{
    match Elf::load(mem, None, image, Some(GuestAddress(HIMEM_START))) {
        Ok(r) => {
            let PvhBootCapability::PvhEntryPresent(entry) = r.pvh_boot_cap else {
                return Err(BootError::NoPvhEntry);
            };
            Ok(LoadedKernel {
                entry: BootEntry::Pvh {
                    entry: entry.raw_value(),
                },
                kernel_end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(linux_loader::loader::Error::Elf(
            linux_loader::loader::elf::Error::InvalidElfMagicNumber,
        )) => {
            let r = BzImage::load(mem, None, image, Some(GuestAddress(HIMEM_START)))
                .map_err(|e| BootError::KernelFormat(e.to_string()))?;
            Ok(LoadedKernel {
                // startup_64 is 0x200 bytes into the protected-mode kernel.
                entry: BootEntry::Linux64 {
                    entry: r.kernel_load.raw_value() + 0x200,
                },
                kernel_end: r.kernel_end,
                setup_header: r.setup_header,
            })
        }
        Err(e) => Err(BootError::KernelFormat(e.to_string())),
    }
}

/// Loads the initrd at the top of low memory (page aligned); returns (address, size).
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    file: &mut File,
    kernel_end: u64,
) -> Result<(u64, u64), BootError> {
    let size = file
        .metadata()
        .map_err(|e| BootError::Read("initrd".into(), e))?
        .len();
    let low_end = mem.last_addr().raw_value().min(MMIO_HOLE_START - 1) + 1;
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end.max(HIMEM_START))
        .ok_or(BootError::InitrdTooBig(size))?;
    let mut left = size as usize;
    let mut at = GuestAddress(addr);
    while left > 0 {
        let n = mem
            .read_volatile_from(at, file, left)
            .map_err(|e| BootError::GuestWrite(format!("initrd: {e}")))?;
        if n == 0 {
            return Err(BootError::GuestWrite("initrd: short read".into()));
        }
        left -= n;
        at = at.unchecked_add(n as u64);
    }
    Ok((addr, size))
}

/// Loads an initrd held in memory at the top of low memory (page aligned);
/// returns (address, size).
pub fn load_initrd_bytes(
    mem: &GuestMemoryMmap,
    data: &[u8],
    kernel_end: u64,
) -> Result<(u64, u64), BootError> {
    let size = data.len() as u64;
    let low_end = mem.last_addr().raw_value().min(MMIO_HOLE_START - 1) + 1;
    let addr = low_end
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end.max(HIMEM_START))
        .ok_or(BootError::InitrdTooBig(size))?;
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|e| BootError::GuestWrite(format!("initrd: {e}")))?;
    Ok((addr, size))
}

/// Writes the NUL-terminated command line.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    let bytes = cmdline.as_bytes();
    if bytes.len() + 1 > CMDLINE_MAX_SIZE || bytes.contains(&0) {
        return Err(BootError::CmdlineTooLong(bytes.len()));
    }
    let mut buf = Vec::with_capacity(bytes.len() + 1);
    buf.extend_from_slice(bytes);
    buf.push(0);
    mem.write_slice(&buf, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| BootError::GuestWrite(format!("cmdline: {e}")))
}

/// Builds the PVH `hvm_start_info` and memory map.
pub fn pvh_start_info(
    map: &[MemMapEntry],
    rsdp: u64,
    initrd: Option<(u64, u64)>,
) -> (hvm_start_info, Vec<hvm_memmap_table_entry>) {
    let entries: Vec<hvm_memmap_table_entry> = map
        .iter()
        .take(MAX_E820_ENTRIES)
        .map(|&(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let mut info = hvm_start_info {
        magic: 0x336e_c578,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: rsdp,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: entries.len() as u32,
        ..Default::default()
    };
    if initrd.is_some() {
        // The module list follows the memory map.
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MEMMAP_ADDR + (MAX_E820_ENTRIES * 24) as u64;
    }
    (info, entries)
}

/// Writes the PVH start info, memory map and (optional) initrd module entry.
pub fn write_pvh(
    mem: &GuestMemoryMmap,
    map: &[MemMapEntry],
    rsdp: u64,
    initrd: Option<(u64, u64)>,
) -> Result<(), BootError> {
    let (info, entries) = pvh_start_info(map, rsdp, initrd);
    let mut params = BootParams::new::<hvm_start_info>(&info, GuestAddress(PVH_INFO_ADDR));
    params.set_sections::<hvm_memmap_table_entry>(&entries, GuestAddress(PVH_MEMMAP_ADDR));
    if let Some((addr, size)) = initrd {
        let module = linux_loader::loader::elf::start_info::hvm_modlist_entry {
            paddr: addr,
            size,
            cmdline_paddr: 0,
            reserved: 0,
        };
        params.set_modules(&[module], GuestAddress(info.modlist_paddr));
    }
    PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)
        .map_err(|e| BootError::GuestWrite(format!("PVH start info: {e}")))
}

/// Builds Linux's `boot_params` for the 64-bit boot protocol (Documentation/arch/x86/boot.rst).
pub fn linux_boot_params(
    kernel: &LoadedKernel,
    map: &[MemMapEntry],
    cmdline_len: usize,
    rsdp: u64,
    initrd: Option<(u64, u64)>,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = 0xff;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    params.hdr.loadflags |= 0x01; // LOADED_HIGH
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = rsdp;
    for (i, &(addr, size, type_)) in map.iter().take(params.e820_table.len()).enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
        params.e820_entries = i as u8 + 1;
    }
    params
}

/// Writes the zero page and the identity page tables for 64-bit boot (first 1 GiB, 2 MiB pages).
pub fn write_linux64(mem: &GuestMemoryMmap, params: &boot_params) -> Result<(), BootError> {
    let w = |e: vm_memory::GuestMemoryError| BootError::GuestWrite(e.to_string());
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(w)?;
    mem.write_obj(PDPT_ADDR | 0x03, GuestAddress(PML4_ADDR))
        .map_err(w)?;
    mem.write_obj(PD_ADDR | 0x03, GuestAddress(PDPT_ADDR))
        .map_err(w)?;
    let mut pd = vec![0u8; 4096];
    for (i, e) in pd.chunks_exact_mut(8).enumerate() {
        e.copy_from_slice(&(((i as u64) << 21) | 0x83).to_le_bytes());
    }
    mem.write_slice(&pd, GuestAddress(PD_ADDR)).map_err(w)?;
    Ok(())
}

/// The boot GDT: null, 64-bit code (0x08), data (0x10), TSS (0x18), and for
/// PVH the 32-bit code segment is used at 0x08 instead.
pub fn gdt(entry: BootEntry) -> [u64; 4] {
    let code = match entry {
        BootEntry::Pvh { .. } => 0x00cf_9b00_0000_ffff,
        BootEntry::Linux64 { .. } => 0x00af_9b00_0000_ffff,
    };
    [0, code, 0x00cf_9300_0000_ffff, 0x0000_8b00_0000_0067]
}

/// Writes the GDT and an empty IDT.
pub fn write_gdt(mem: &GuestMemoryMmap, table: &[u64; 4]) -> Result<(), BootError> {
    let w = |e: vm_memory::GuestMemoryError| BootError::GuestWrite(e.to_string());
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(GDT_ADDR + 8 * i as u64))
            .map_err(w)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR)).map_err(w)
}

/// Where a PC's CPU starts after reset, and where Linux jumps for a BIOS reboot
/// (`machine_real_restart`: `ljmp $0xf000, $0xfff0` in real mode).
pub const RESET_VECTOR: u64 = 0xf_fff0;

/// The reset vector's code: `cli; mov al, 0xfe; out 0x64, al; hlt; jmp .-3` (the i8042's
/// CPU reset, as a BIOS's reset path ends; the same bytes in 16-, 32- and 64-bit mode).
pub const RESET_VECTOR_CODE: [u8; 8] = [0xfa, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd];

/// Writes [`RESET_VECTOR_CODE`] at [`RESET_VECTOR`] (the reserved area below 1 MiB, after the
/// ACPI tables). Linux on a hardware-reduced ACPI machine reboots through EFI when built with
/// EFI support (Debian's kernels: `reboot_init` picks `BOOT_EFI`), and without EFI runtime
/// services falls back to the BIOS: a jump to the reset vector, where there was nothing but
/// zeros, so such a guest's `reboot` spun there for ever instead of resetting.
pub fn write_reset_vector(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    mem.write_slice(&RESET_VECTOR_CODE, GuestAddress(RESET_VECTOR))
        .map_err(|e| BootError::GuestWrite(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_splits_around_the_mmio_hole() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), 0xc000_0000));
        assert_eq!(r[1], (GuestAddress(1 << 32), 1 << 30));
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn pvh_start_info_follows_the_protocol() {
        let mem = create_memory(128, false).expect("memory");
        let map = memory_map(&mem);
        let (info, entries) = pvh_start_info(&map, ACPI_START, Some((0x700_0000, 0x1000)));
        // xen/include/public/arch-x86/hvm/start_info.h
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.memmap_entries as usize, entries.len());
        assert_eq!(info.nr_modules, 1);
        assert_eq!(std::mem::size_of::<hvm_start_info>(), 56);
        assert_eq!(std::mem::size_of::<hvm_memmap_table_entry>(), 24);
        assert_eq!(entries[0].addr, 0);
        assert_eq!(entries[0].type_, 1);
        let ram_top = entries
            .iter()
            .filter(|e| e.type_ == 1)
            .map(|e| e.addr + e.size)
            .max();
        assert_eq!(ram_top, Some(128 << 20));
        write_pvh(&mem, &map, ACPI_START, Some((0x700_0000, 0x1000))).expect("write");
        let magic: u32 = mem.read_obj(GuestAddress(PVH_INFO_ADDR)).expect("read");
        assert_eq!(magic, 0x336e_c578);
        let rsdp: u64 = mem
            .read_obj(GuestAddress(PVH_INFO_ADDR + 32))
            .expect("read");
        assert_eq!(rsdp, ACPI_START);
    }

    #[test]
    fn boot_params_follow_the_protocol() {
        let mem = create_memory(64, true).expect("memory");
        let map = memory_map(&mem);
        let kernel = LoadedKernel {
            entry: BootEntry::Linux64 { entry: 0x100200 },
            kernel_end: 0x200000,
            setup_header: None,
        };
        let p = linux_boot_params(&kernel, &map, 20, ACPI_START, Some((0x300_0000, 0x4000)));
        // Documentation/arch/x86/boot.rst: offsets within boot_params.
        let bytes = vm_memory::ByteValued::as_slice(&p);
        assert_eq!(bytes.len(), 4096);
        assert_eq!(u16::from_le_bytes([bytes[0x1fe], bytes[0x1ff]]), 0xaa55);
        assert_eq!(&bytes[0x202..0x206], b"HdrS");
        assert_eq!(bytes[0x210], 0xff, "type_of_loader");
        assert_eq!(
            u32::from_le_bytes(bytes[0x218..0x21c].try_into().expect("4")),
            0x300_0000
        );
        assert_eq!(
            u32::from_le_bytes(bytes[0x21c..0x220].try_into().expect("4")),
            0x4000
        );
        assert_eq!(
            u32::from_le_bytes(bytes[0x228..0x22c].try_into().expect("4")),
            CMDLINE_ADDR as u32
        );
        assert_eq!(
            u64::from_le_bytes(bytes[0x070..0x078].try_into().expect("8")),
            ACPI_START
        );
        assert_eq!(bytes[0x1e8] as usize, map.len(), "e820_entries");
        // First e820 entry at 0x2d0: addr, size, type.
        assert_eq!(
            u64::from_le_bytes(bytes[0x2d0..0x2d8].try_into().expect("8")),
            0
        );
        assert_eq!(
            u64::from_le_bytes(bytes[0x2d8..0x2e0].try_into().expect("8")),
            EBDA_START
        );
        assert_eq!(
            u32::from_le_bytes(bytes[0x2e0..0x2e4].try_into().expect("4")),
            1
        );
        write_linux64(&mem, &p).expect("write");
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).expect("read");
        assert_eq!(pml4, PDPT_ADDR | 3);
        let pd1: u64 = mem.read_obj(GuestAddress(PD_ADDR + 8)).expect("read");
        assert_eq!(pd1, 0x20_0083);
    }
}
