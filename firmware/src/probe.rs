//! The probe guest: a tiny PVH guest that yunhe's `selftest` boots.
//!
//! It prints a banner on COM1, writes the boot-timer port, lists PCI devices,
//! reads sector 0 of each virtio-blk disk, sends a DHCP DISCOVER on each
//! virtio-net, reads virtio-rng and powers off through the FADT's sleep control
//! register. With `count` on its command line it counts on COM1 forever
//! instead (used by the save/restore tests); with `reset-on-key` it prints its
//! command line, touches all of its RAM and resets the machine at the first key
//! (the reset tests).
//!
//! Every guest instruction is expensive under nested, software-assisted KVM
//! (about 1 µs each), so the code avoids `core::fmt` and keeps loops short.

#![no_std]
#![no_main]

mod io;
mod virtio;

use core::panic::PanicInfo;

use io::{inb, inl, outb, outl, print, print_dec, print_hex, putc};

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    movl %ebx, %esi
    /* zero the six page-table pages */
    movl $pt_pml4, %edi
    xorl %eax, %eax
    movl $(6 * 1024), %ecx
    rep stosl
    /* PML4[0] -> PDPT */
    movl $pt_pdpt, %eax
    orl $3, %eax
    movl %eax, pt_pml4
    /* PDPT[0..4] -> the four page directories */
    movl $pt_pd, %eax
    orl $3, %eax
    movl $pt_pdpt, %edi
    movl $4, %ecx
1:
    movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b
    /* 2048 2-MiB identity pages: the first 4 GiB */
    movl $pt_pd, %edi
    movl $0x83, %eax
    movl $2048, %ecx
2:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 2b
    /* PAE, long mode, paging */
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $pt_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    lgdt gdt_ptr
    ljmp $0x08, $long_entry

    .code64
long_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $stack_top, %rsp
    movl %esi, %edi
    call probe_main
3:
    hlt
    jmp 3b

    .section .rodata
    .balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
gdt_ptr:
    .word 23
    .long gdt

    .section .bss
    .balign 4096
pt_pml4:
    .skip 4096
pt_pdpt:
    .skip 4096
pt_pd:
    .skip 4 * 4096
stack_bottom:
    .skip 16384
stack_top:
    "#,
    options(att_syntax)
);

/// The hvm_start_info structure of the PVH boot protocol (xen/include/public/arch-x86/hvm/start_info.h).
#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

const PVH_MAGIC: u32 = 0x336e_c578;
/// The boot-timer port (written once the banner is out).
const BOOT_TIMER_PORT: u16 = 0x80;
/// Where the sleep control register is when no FADT can be found.
const DEFAULT_SLEEP_CONTROL_PORT: u16 = 0x3c0;

#[unsafe(no_mangle)]
extern "C" fn probe_main(start_info: u32) -> ! {
    print("yunhe probe: hello from the probe guest\n");
    outb(BOOT_TIMER_PORT, 0x41);

    // SAFETY: the PVH boot protocol hands over the physical address of the start
    // info in %ebx; all memory below 4 GiB is identity-mapped.
    let info = unsafe { &*(start_info as usize as *const HvmStartInfo) };
    if info.magic != PVH_MAGIC {
        print("probe: bad PVH start info magic\n");
    }
    if info.magic == PVH_MAGIC
        && info.cmdline_paddr != 0
        && cmdline_has(info.cmdline_paddr, b"count")
    {
        count_forever();
    }
    if info.magic == PVH_MAGIC
        && info.cmdline_paddr != 0
        && cmdline_has(info.cmdline_paddr, b"reset-on-key")
    {
        touch_then_reset_on_key(info);
    }

    let (ecx, edx) = cpuid1();
    print("probe: cpuid 1 ecx ");
    print_hex(ecx as u64, 8);
    print(" edx ");
    print_hex(edx as u64, 8);
    putc(b'\n');

    print("probe: memory map ");
    print_dec(info.memmap_entries as u64);
    print(" entries\n");

    let rsdp = if info.magic == PVH_MAGIC {
        info.rsdp_paddr
    } else {
        0
    };
    scan_pci();
    print("probe: done, powering off\n");
    power_off(rsdp);
}

/// CPUID leaf 1 (ECX, EDX).
fn cpuid1() -> (u32, u32) {
    // SAFETY: CPUID only reads processor identification.
    let r = unsafe { core::arch::x86_64::__cpuid(1) };
    (r.ecx, r.edx)
}

/// Whether the NUL-terminated command line at `paddr` contains `word`.
fn cmdline_has(paddr: u64, word: &[u8]) -> bool {
    let base = paddr as usize as *const u8;
    let mut len = 0;
    // SAFETY: the VMM wrote a NUL-terminated string there; cap the scan at 4 KiB.
    while len < 4096 && unsafe { core::ptr::read_volatile(base.add(len)) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` bytes were just read.
    let line = unsafe { core::slice::from_raw_parts(base, len) };
    line.windows(word.len()).any(|w| w == word)
}

/// The `reset-on-key` mode (the VMM's reset tests): prints its command line, writes every
/// page of RAM the memory map gives (each byte written is the one read, so nothing changes,
/// but the host must back all of it), then resets the machine at the first byte received on
/// COM1: through the i8042 (what the FADT's reset register names), or with `reset-via-bios`
/// by jumping to the reset vector, as Linux's BIOS reboot does.
fn touch_then_reset_on_key(info: &HvmStartInfo) -> ! {
    print("probe: cmdline ");
    let base = info.cmdline_paddr as usize as *const u8;
    let mut i = 0;
    // SAFETY: the VMM wrote a NUL-terminated string there; capped at 4 KiB.
    while i < 4096 && unsafe { core::ptr::read_volatile(base.add(i)) } != 0 {
        // SAFETY: as above.
        putc(unsafe { core::ptr::read_volatile(base.add(i)) });
        i += 1;
    }
    putc(b'\n');
    let mut pages: u64 = 0;
    let entries = (info.memmap_entries as u64).min(64);
    for e in 0..entries {
        let entry = info.memmap_paddr + e * 24;
        let (start, size, kind) = (phys_u64(entry), phys_u64(entry + 8), phys_u32(entry + 16));
        // RAM only, and only what the identity map reaches (the first 4 GiB).
        let end = start.saturating_add(size).min(0x1_0000_0000);
        if kind != 1 {
            continue;
        }
        let mut page = start;
        while page < end {
            let p = page as usize as *mut u8;
            // SAFETY: RAM from the memory map, identity-mapped; the same value is written back
            // (this code, its stack and its page tables included), with interrupts off.
            unsafe { core::ptr::write_volatile(p, core::ptr::read_volatile(p)) };
            pages += 1;
            page += 4096;
        }
    }
    print("probe: touched ");
    print_dec(pages / 256);
    print(" MiB; a key resets\n");
    while inb(0x3fd) & 1 == 0 {
        core::hint::spin_loop();
    }
    let _ = inb(0x3f8);
    if cmdline_has(info.cmdline_paddr, b"reset-via-bios") {
        // What Linux does on a hardware-reduced ACPI machine without EFI runtime services
        // (`machine_real_restart`): jump to the BIOS's reset vector and let it reset.
        print("probe: resetting through the reset vector\n");
        // SAFETY: 0xffff0 is identity-mapped; the VMM's code there never returns.
        unsafe { core::arch::asm!("cli", "jmp {0}", in(reg) 0xf_fff0u64, options(noreturn)) };
    }
    print("probe: resetting\n");
    outb(0x64, 0xfe);
    loop {
        // SAFETY: halting with interrupts off parks the vCPU until the VMM resets it.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

/// Prints an increasing counter about every few milliseconds, forever.
fn count_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        print("count ");
        print_dec(n);
        putc(b'\n');
        n += 1;
        for _ in 0..20_000 {
            core::hint::spin_loop();
        }
    }
}

fn pci_read(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    let addr = 0x8000_0000u32
        | (bus as u32) << 16
        | (dev as u32) << 11
        | (func as u32) << 8
        | (offset as u32 & 0xfc);
    outl(0xcf8, addr);
    inl(0xcfc)
}

fn pci_write(bus: u8, dev: u8, func: u8, offset: u8, value: u32) {
    let addr = 0x8000_0000u32
        | (bus as u32) << 16
        | (dev as u32) << 11
        | (func as u32) << 8
        | (offset as u32 & 0xfc);
    outl(0xcf8, addr);
    outl(0xcfc, value);
}

/// A PCI function's address on bus 0.
#[derive(Clone, Copy)]
pub struct PciAddr {
    pub dev: u8,
    pub func: u8,
}

impl PciAddr {
    pub fn read(self, offset: u8) -> u32 {
        pci_read(0, self.dev, self.func, offset)
    }
    pub fn write(self, offset: u8, value: u32) {
        pci_write(0, self.dev, self.func, offset, value)
    }
    fn print(self) {
        print("00:");
        print_hex(self.dev as u64, 2);
        putc(b'.');
        print_hex(self.func as u64, 1);
    }
}

fn scan_pci() {
    for dev in 0..32u8 {
        let id = pci_read(0, dev, 0, 0);
        if id & 0xffff == 0xffff {
            continue;
        }
        let header = (pci_read(0, dev, 0, 0x0c) >> 16) & 0xff;
        let funcs = if header & 0x80 != 0 { 8 } else { 1 };
        for func in 0..funcs {
            let addr = PciAddr { dev, func };
            let id = addr.read(0);
            if id & 0xffff == 0xffff {
                continue;
            }
            let class = addr.read(0x08) >> 8;
            print("pci ");
            addr.print();
            putc(b' ');
            print_hex((id & 0xffff) as u64, 4);
            putc(b':');
            print_hex((id >> 16) as u64, 4);
            print(" class ");
            print_hex(class as u64, 6);
            let vendor = id & 0xffff;
            let device = id >> 16;
            let kind = if vendor == 0x1af4 && (0x1040..0x107f).contains(&device) {
                device - 0x1040
            } else {
                0
            };
            match kind {
                1 => print(" virtio-net\n"),
                2 => print(" virtio-blk\n"),
                4 => print(" virtio-rng\n"),
                0 => putc(b'\n'),
                _ => print(" virtio\n"),
            }
            if kind != 0 {
                probe_virtio(addr, kind);
            }
        }
    }
}

fn probe_virtio(addr: PciAddr, kind: u32) {
    let Some(mut dev) = virtio::Device::open(addr) else {
        print("virtio ");
        addr.print();
        print(": no usable virtio 1.x capabilities\n");
        return;
    };
    match kind {
        2 => {
            print("blk ");
            addr.print();
            print(": ");
            match dev.blk_read_sector0() {
                Some((sectors, sum)) => {
                    print_dec(sectors);
                    print(" sectors, sector 0 fnv1a ");
                    print_hex(sum as u64, 8);
                    putc(b'\n');
                }
                None => print("read failed\n"),
            }
        }
        1 => {
            print("net ");
            addr.print();
            print(": ");
            dev.net_dhcp_discover();
        }
        4 => {
            print("rng ");
            addr.print();
            print(": ");
            match dev.rng_read() {
                Some(bytes) => {
                    for b in bytes {
                        print_hex(b as u64, 2);
                    }
                    putc(b'\n');
                }
                None => print("read failed\n"),
            }
        }
        _ => print("unknown virtio device\n"),
    }
    dev.reset();
}

/// Reads a little-endian u32/u64 at a physical address.
fn phys_u32(addr: u64) -> u32 {
    // SAFETY: identity-mapped memory below 4 GiB, addresses come from the ACPI tables.
    unsafe { core::ptr::read_unaligned(addr as usize as *const u32) }
}

fn phys_u64(addr: u64) -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_unaligned(addr as usize as *const u64) }
}

fn phys_u8(addr: u64) -> u8 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(addr as usize as *const u8) }
}

/// Finds the FADT's sleep control register (an I/O port) through RSDP → XSDT.
fn sleep_control_port(rsdp: u64) -> Option<u16> {
    if rsdp == 0 || rsdp >= 0x1_0000_0000 || phys_u64(rsdp) != u64::from_le_bytes(*b"RSD PTR ") {
        return None;
    }
    let xsdt = phys_u64(rsdp + 24);
    if xsdt == 0 || xsdt >= 0x1_0000_0000 || phys_u32(xsdt) != u32::from_le_bytes(*b"XSDT") {
        return None;
    }
    let len = phys_u32(xsdt + 4) as u64;
    let mut off = 36;
    while off + 8 <= len && off < 36 + 8 * 64 {
        let table = phys_u64(xsdt + off);
        if table != 0 && table < 0x1_0000_0000 && phys_u32(table) == u32::from_le_bytes(*b"FACP") {
            let flen = phys_u32(table + 4) as u64;
            if flen >= 256 && phys_u8(table + 244) == 1 {
                return Some(phys_u64(table + 248) as u16);
            }
            return None;
        }
        off += 8;
    }
    None
}

fn power_off(rsdp: u64) -> ! {
    let port = sleep_control_port(rsdp).unwrap_or_else(|| {
        print("probe: no FADT sleep control register, trying the default port\n");
        DEFAULT_SLEEP_CONTROL_PORT
    });
    // SLP_TYP = 5 (S5, matching the DSDT's _S5), SLP_EN.
    outb(port, (5 << 2) | (1 << 5));
    // The VMM stops the VM asynchronously; park until it does.
    loop {
        // SAFETY: halting with interrupts off just parks the vCPU.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    print("probe: panic\n");
    loop {
        // SAFETY: as in power_off.
        unsafe { core::arch::asm!("cli; hlt") };
    }
}

/// The host target's prebuilt `core` refers to this symbol; nothing unwinds here.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}
