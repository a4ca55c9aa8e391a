//! The guest physical address map and I/O port map of a yunhe VM.
//!
//! ```text
//! 0x0000_0500  GDT            0x0000_7000  boot_params (zero page, bzImage boot)
//! 0x0000_0520  IDT            0x0000_9000  PML4, PDPT, PD (bzImage 64-bit boot)
//! 0x0000_6000  PVH start info 0x0002_0000  kernel command line (64 KiB max)
//! 0x0000_6040  PVH memory map 0x000e_0000  ACPI: RSDP, then XSDT, FADT, MADT, MCFG, DSDT
//! 0x0010_0000  kernel / PVH ELF           … RAM up to min(size, 3 GiB)
//! 0xc000_0000  PCI MMIO window (BARs, 512 MiB)
//! 0xe000_0000  PCI ECAM (bus 0, 1 MiB)
//! 0xfec0_0000  IOAPIC         0xfee0_0000  LAPIC
//! 0x1_0000_0000 RAM above 3 GiB, if any
//! ```

/// Global descriptor table used for the boot vCPU.
pub const GDT_ADDR: u64 = 0x500;
/// Interrupt descriptor table (empty) for the boot vCPU.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH memory map (array of `hvm_memmap_table_entry`).
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// Most memory-map entries we ever write.
pub const MAX_E820_ENTRIES: usize = 16;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for 64-bit bzImage boot.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page tables for 64-bit bzImage boot: PML4, PDPT, PD.
pub const PML4_ADDR: u64 = 0x9000;
/// See [`PML4_ADDR`].
pub const PDPT_ADDR: u64 = 0xa000;
/// See [`PML4_ADDR`].
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Longest kernel command line, including the NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the extended BIOS data area; RAM below 1 MiB ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live here (the RSDP at the start, where Linux also scans for it).
pub const ACPI_START: u64 = 0xe0000;
/// Size of the ACPI area.
pub const ACPI_SIZE: u64 = 0x20000;
/// Where high memory starts; kernels load here.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (RAM stops here and resumes at 4 GiB).
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First address above 32 bits.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
/// PCI 32-bit MMIO window for BARs.
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// Size of the PCI MMIO window.
pub const PCI_MMIO_SIZE: u64 = 0x2000_0000;
/// PCI Express enhanced configuration space (ECAM), bus 0 only.
pub const ECAM_START: u64 = 0xe000_0000;
/// ECAM size: one bus (32 devices × 8 functions × 4 KiB).
pub const ECAM_SIZE: u64 = 0x10_0000;
/// IOAPIC MMIO.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC MMIO.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM's TSS (three pages) on Intel hosts: just below the BIOS area at the top of 4 GiB.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's interrupt (ISA IRQ 4, IOAPIC pin 4).
pub const COM1_GSI: u32 = 4;
/// i8042 data and command ports.
pub const I8042_DATA_PORT: u16 = 0x60;
/// See [`I8042_DATA_PORT`].
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// CMOS RTC index and data ports.
pub const RTC_PORT: u16 = 0x70;
/// Boot-timer (debug) port: a guest write logs the time since the VMM started.
pub const BOOT_TIMER_PORT: u16 = 0x80;
/// ACPI sleep control register (hardware-reduced FADT).
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
/// ACPI sleep status register.
pub const SLEEP_STATUS_PORT: u16 = 0x3c1;
/// Generic Event Device: pending-event register, read by the DSDT's _EVT.
pub const GED_PORT: u16 = 0x3c4;
/// PCI hotplug registers (`devices::hotplug`): 16 ports.
pub const HOTPLUG_PORT: u16 = 0xae00;
/// GED interrupt (edge, active high).
pub const GED_GSI: u32 = 5;
/// PCI configuration mechanism #1.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;
/// First GSI handed out to MSI-X vectors (after the 24 IOAPIC pins).
pub const FIRST_MSI_GSI: u32 = 24;
/// The S5 sleep type the DSDT declares (`\_S5`).
pub const SLEEP_TYPE_S5: u8 = 5;
