//! vCPU set-up (CPUID with topology, MSRs, FPU, LAPIC, boot registers) and the
//! completion of instructions the host's emulator cannot execute.

use super::memory::GuestMemoryMmap;
use kvm_bindings::{
    CpuId, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events,
};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::boot::BootEntry;
use super::layout::*;

/// Errors while setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// KVM refused the vCPU's {0}: {1}
    #[error("KVM refused the vCPU's {0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    /// Cannot build the MSR list: {0}
    #[error("cannot build the MSR list")]
    Msrs,
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;

const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;
const CR0_PE: u64 = 0x1;
const CR0_ET: u64 = 0x10;
const CR0_PG: u64 = 0x8000_0000;
const CR4_PAE: u64 = 0x20;

/// CPUID leaf 1 ECX: POPCNT, hidden from guests only on hosts whose
/// instruction emulator cannot run it ([`super::cpu_probe`]).
const LEAF1_ECX_POPCNT: u32 = 1 << 23;
/// CPUID leaf 1 ECX bits hidden from every guest for now: XSAVE, OSXSAVE, and
/// AVX, which needs XSAVE. Offered in the lab (docs/lab.md), Debian's kernel
/// found CPUID's XSAVE size (leaf 0xD) short of its features' ("XSAVE
/// consistency problem: size 832 != kernel_size 576") and turned XSAVE off
/// with a warning; until that is understood they stay hidden everywhere.
const LEAF1_ECX_XSAVE_FAMILY: u32 = (1 << 26) | (1 << 27) | (1 << 28);
/// CPUID leaf 7 EBX bits that depend on XSAVE state (AVX2, AVX-512 family).
const LEAF7_EBX_HIDDEN: u32 = (1 << 5)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);

/// Adapts KVM's supported CPUID to vCPU `id` of `count`: APIC ids and topology
/// (leaves 1, 4, 0xB), the hypervisor bit, the XSAVE family hidden (with the
/// XSAVE leaf 0xD), and POPCNT hidden when `host_lacks_instructions` (see
/// [`super::cpu_probe`]).
pub fn filter_cpuid(cpuid: &mut CpuId, id: u8, count: u8, host_lacks_instructions: bool) {
    let hide = host_lacks_instructions;
    let count = count.max(1);
    let shift = 32 - (u32::from(count) - 1).leading_zeros();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | u32::from(id) << 24 | u32::from(count) << 16;
                e.ecx &= !LEAF1_ECX_XSAVE_FAMILY;
                if hide {
                    e.ecx &= !LEAF1_ECX_POPCNT;
                }
                e.ecx |= 1 << 31;
                if count > 1 {
                    e.edx |= 1 << 28;
                }
            }
            4 if e.eax & 0x1f != 0 => {
                e.eax = (e.eax & 0x03ff_ffff) | (u32::from(count) - 1) << 26;
                e.eax &= !(0xfff << 14);
            }
            7 if e.index == 0 => {
                e.ebx &= !LEAF7_EBX_HIDDEN;
                e.ecx &= !((1 << 1)
                    | (1 << 6)
                    | (1 << 8)
                    | (1 << 9)
                    | (1 << 10)
                    | (1 << 11)
                    | (1 << 12)
                    | (1 << 14));
            }
            0xb => {
                e.edx = u32::from(id);
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        e.eax = shift;
                        e.ebx = u32::from(count);
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i;
                    }
                }
            }
            0xd => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0x1f => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = e.index;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

/// MSRs as Linux expects them at boot.
pub fn boot_msrs() -> Result<Msrs, CpuError> {
    let entry = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    Msrs::from_entries(&[
        entry(MSR_IA32_SYSENTER_CS, 0),
        entry(MSR_IA32_SYSENTER_ESP, 0),
        entry(MSR_IA32_SYSENTER_EIP, 0),
        entry(MSR_STAR, 0),
        entry(MSR_CSTAR, 0),
        entry(MSR_KERNEL_GS_BASE, 0),
        entry(MSR_SYSCALL_MASK, 0),
        entry(MSR_LSTAR, 0),
        entry(MSR_IA32_TSC, 0),
        entry(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ])
    .map_err(|_| CpuError::Msrs)
}

/// Per-vCPU state every vCPU gets: CPUID, MSRs, FPU, LAPIC LINT0/LINT1.
pub fn configure_vcpu(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<(), CpuError> {
    vcpu.set_cpuid2(cpuid)
        .map_err(|e| CpuError::Kvm("CPUID", e))?;
    vcpu.set_msrs(&boot_msrs()?)
        .map_err(|e| CpuError::Kvm("MSRs", e))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| CpuError::Kvm("FPU", e))?;
    let mut lapic = vcpu.get_lapic().map_err(|e| CpuError::Kvm("LAPIC", e))?;
    // LVT LINT0: ExtINT; LVT LINT1: NMI (delivery mode bits 8-10).
    let lint0 = (get_lapic_reg(&lapic.regs, 0x350) & !0x700) | 0x700;
    let lint1 = (get_lapic_reg(&lapic.regs, 0x360) & !0x700) | 0x400;
    set_lapic_reg(&mut lapic.regs, 0x350, lint0);
    set_lapic_reg(&mut lapic.regs, 0x360, lint1);
    vcpu.set_lapic(&lapic)
        .map_err(|e| CpuError::Kvm("LAPIC", e))
}

fn get_lapic_reg(regs: &[std::os::raw::c_char; 1024], off: usize) -> u32 {
    let b = |i: usize| regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], off: usize, v: u32) {
    for (i, byte) in v.to_le_bytes().iter().enumerate() {
        regs[off + i] = *byte as std::os::raw::c_char;
    }
}

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long || type_ < 8),
        s: 1,
        l: u8::from(long && type_ >= 8),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Registers of the boot vCPU for `entry`.
pub fn boot_registers(entry: BootEntry, sregs: &mut kvm_sregs) -> kvm_regs {
    let long = matches!(entry, BootEntry::Linux64 { .. });
    sregs.cs = segment(0x08, 0xb, long);
    let data = segment(0x10, 0x3, long);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: 0x18,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 4 * 8 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    match entry {
        BootEntry::Pvh { entry } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            kvm_regs {
                rflags: 2,
                rip: entry,
                rbx: PVH_INFO_ADDR,
                ..Default::default()
            }
        }
        BootEntry::Linux64 { entry } => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            kvm_regs {
                rflags: 2,
                rip: entry,
                rsp: BOOT_STACK_POINTER,
                rbp: BOOT_STACK_POINTER,
                rsi: ZERO_PAGE_ADDR,
                ..Default::default()
            }
        }
    }
}

/// Sets the boot vCPU's registers.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, entry: BootEntry) -> Result<(), CpuError> {
    let mut sregs = vcpu.get_sregs().map_err(|e| CpuError::Kvm("sregs", e))?;
    let regs = boot_registers(entry, &mut sregs);
    vcpu.set_sregs(&sregs)
        .map_err(|e| CpuError::Kvm("sregs", e))?;
    vcpu.set_regs(&regs).map_err(|e| CpuError::Kvm("regs", e))
}

/// What the VMM did about an emulation failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Completion {
    /// The instruction was completed; resume the vCPU.
    Resumed(&'static str),
    /// Nothing to be done: the VM cannot continue.
    Fatal(String),
}

/// The instruction bytes of an emulation failure: from KVM when it provides
/// them, else read at RIP through the vCPU's page tables.
pub fn failing_instruction(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    data: &[u64; 16],
    ndata: u32,
    rip: u64,
) -> Vec<u8> {
    const FLAG_INSTRUCTION_BYTES: u64 = 1;
    if ndata >= 3 && data[0] & FLAG_INSTRUCTION_BYTES != 0 {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&data[1].to_le_bytes());
        raw[8..].copy_from_slice(&data[2].to_le_bytes());
        let n = (raw[0] as usize).min(15);
        return raw[1..1 + n].to_vec();
    }
    let Ok(t) = vcpu.translate_gva(rip) else {
        return Vec::new();
    };
    if t.valid == 0 {
        return Vec::new();
    }
    let mut bytes = vec![0u8; 15];
    match mem.read_slice(&mut bytes, GuestAddress(t.physical_address)) {
        Ok(()) => bytes,
        Err(_) => {
            // The instruction may straddle the end of a region: take what exists.
            let mut n = 0;
            while n < 15
                && mem
                    .read_obj::<u8>(GuestAddress(t.physical_address + n as u64))
                    .is_ok()
            {
                n += 1;
            }
            bytes.truncate(n);
            bytes
        }
    }
}

/// A decoded `popcnt r, r/m` with a register source.
#[derive(Debug, PartialEq, Eq)]
pub struct Popcnt {
    /// Destination register number (0 = rax … 15 = r15).
    pub dst: u8,
    /// Source register number.
    pub src: u8,
    /// Operand size in bytes (2, 4 or 8).
    pub size: u8,
    /// Instruction length.
    pub len: u64,
}

/// Decodes `[66] F3 [REX] 0F B8 /r` with a register operand (ModRM.mod = 3).
pub fn decode_popcnt(insn: &[u8]) -> Option<Popcnt> {
    let mut i = 0;
    let mut opsize16 = false;
    let mut rep = false;
    while let Some(&b) = insn.get(i) {
        match b {
            0x66 => opsize16 = true,
            0xf3 => rep = true,
            _ => break,
        }
        i += 1;
    }
    let mut rex = 0u8;
    if let Some(&b) = insn.get(i).filter(|b| *b & 0xf0 == 0x40) {
        rex = b;
        i += 1;
    }
    if !rep || insn.get(i) != Some(&0x0f) || insn.get(i + 1) != Some(&0xb8) {
        return None;
    }
    let modrm = *insn.get(i + 2)?;
    if modrm >> 6 != 3 {
        return None;
    }
    let size = if rex & 8 != 0 {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    Some(Popcnt {
        dst: ((modrm >> 3) & 7) | ((rex & 4) << 1),
        src: (modrm & 7) | ((rex & 1) << 3),
        size,
        len: (i + 3) as u64,
    })
}

fn reg_mut(regs: &mut kvm_regs, n: u8) -> &mut u64 {
    match n {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    }
}

/// Executes a decoded register `popcnt` on `regs`: result, ZF, the other
/// arithmetic flags cleared, RIP advanced.
pub fn execute_popcnt(regs: &mut kvm_regs, p: &Popcnt) {
    const FLAGS: u64 = 0x8d5; // CF PF AF ZF SF OF
    const ZF: u64 = 0x40;
    let src = *reg_mut(regs, p.src);
    let value = match p.size {
        2 => src & 0xffff,
        4 => src & 0xffff_ffff,
        _ => src,
    };
    let count = u64::from(value.count_ones());
    let dst = reg_mut(regs, p.dst);
    *dst = match p.size {
        2 => (*dst & !0xffff) | count,
        _ => count, // 32-bit writes zero-extend
    };
    regs.rflags &= !FLAGS;
    if value == 0 {
        regs.rflags |= ZF;
    }
    regs.rip = regs.rip.wrapping_add(p.len);
}

/// Completes an instruction the host's emulator gave up on.
///
/// `int3`: advance RIP past it and inject #BP (vector 3), as the CPU would.
/// `popcnt` with a register source: compute it and write the result and flags.
/// `clac`/`stac`: update EFLAGS.AC.
pub fn complete_emulation_failure(vcpu: &mut VcpuFd, insn: &[u8]) -> Completion {
    if let Some(p) = decode_popcnt(insn) {
        let mut regs = match vcpu.get_regs() {
            Ok(r) => r,
            Err(e) => return Completion::Fatal(format!("reading registers: {e}")),
        };
        execute_popcnt(&mut regs, &p);
        return match vcpu.set_regs(&regs) {
            Ok(()) => Completion::Resumed("popcnt"),
            Err(e) => Completion::Fatal(format!("writing registers: {e}")),
        };
    }
    // clac / stac: clear or set EFLAGS.AC.
    if let [0x0f, 0x01, op @ (0xca | 0xcb), ..] = insn {
        let mut regs = match vcpu.get_regs() {
            Ok(r) => r,
            Err(e) => return Completion::Fatal(format!("reading registers: {e}")),
        };
        const AC: u64 = 1 << 18;
        if *op == 0xca {
            regs.rflags &= !AC;
        } else {
            regs.rflags |= AC;
        }
        regs.rip = regs.rip.wrapping_add(3);
        return match vcpu.set_regs(&regs) {
            Ok(()) => Completion::Resumed("clac/stac"),
            Err(e) => Completion::Fatal(format!("writing registers: {e}")),
        };
    }
    let rip_len = match insn.first() {
        Some(0xcc) => 1,
        Some(0xcd) if insn.get(1) == Some(&3) => 2,
        _ => {
            let hint = if insn.windows(2).any(|w| w == [0x0f, 0xae]) {
                " (an XSAVE-family instruction: boot Linux with `noxsave` on this host)"
            } else {
                ""
            };
            return Completion::Fatal(format!("cannot complete the instruction {insn:02x?}{hint}"));
        }
    };
    let mut regs = match vcpu.get_regs() {
        Ok(r) => r,
        Err(e) => return Completion::Fatal(format!("reading registers: {e}")),
    };
    regs.rip = regs.rip.wrapping_add(rip_len);
    if let Err(e) = vcpu.set_regs(&regs) {
        return Completion::Fatal(format!("writing registers: {e}"));
    }
    let mut events = match vcpu.get_vcpu_events() {
        Ok(e) => e,
        Err(e) => return Completion::Fatal(format!("reading vCPU events: {e}")),
    };
    events.exception.injected = 1;
    events.exception.nr = 3;
    events.exception.has_error_code = 0;
    events.exception.pending = 0;
    events.exception.error_code = 0;
    events.flags = 0;
    let ev: kvm_vcpu_events = events;
    match vcpu.set_vcpu_events(&ev) {
        Ok(()) => Completion::Resumed("int3"),
        Err(e) => Completion::Fatal(format!("injecting #BP: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_registers_follow_the_protocol() {
        let mut sregs = kvm_sregs::default();
        let regs = boot_registers(BootEntry::Pvh { entry: 0x100020 }, &mut sregs);
        // xen/docs/misc/pvh.pandoc: 32-bit protected mode, paging off, ebx = start info.
        assert_eq!(regs.rip, 0x100020);
        assert_eq!(regs.rbx, PVH_INFO_ADDR);
        assert_eq!(sregs.cr0 & CR0_PG, 0);
        assert_eq!(sregs.cr0 & CR0_PE, 1);
        assert_eq!(sregs.cs.db, 1);
        assert_eq!(sregs.cs.l, 0);
        assert_eq!(sregs.cs.limit, 0xffff_ffff);
        assert_eq!(sregs.ds.type_, 3);
    }

    #[test]
    fn popcnt_is_decoded_and_executed() {
        // popcnt %rdi, %rax
        let p = decode_popcnt(&[0xf3, 0x48, 0x0f, 0xb8, 0xc7, 0x90]).expect("decode");
        assert_eq!(
            p,
            Popcnt {
                dst: 0,
                src: 7,
                size: 8,
                len: 5
            }
        );
        let mut regs = kvm_regs {
            rdi: 0xf0f0,
            rax: 99,
            rflags: 0x2 | 0x1,
            rip: 0x1000,
            ..Default::default()
        };
        execute_popcnt(&mut regs, &p);
        assert_eq!(regs.rax, 8);
        assert_eq!(regs.rflags, 0x2);
        assert_eq!(regs.rip, 0x1005);
        // popcnt %r9d, %r10d with a zero source sets ZF.
        let p = decode_popcnt(&[0xf3, 0x45, 0x0f, 0xb8, 0xd1]).expect("decode");
        assert_eq!((p.dst, p.src, p.size), (10, 9, 4));
        let mut regs = kvm_regs {
            r9: 0xffff_ffff_0000_0000,
            r10: u64::MAX,
            ..Default::default()
        };
        execute_popcnt(&mut regs, &p);
        assert_eq!(regs.r10, 0);
        assert_eq!(regs.rflags & 0x40, 0x40);
        // Memory operands and other opcodes are not handled.
        assert!(decode_popcnt(&[0xf3, 0x48, 0x0f, 0xb8, 0x07]).is_none());
        assert!(decode_popcnt(&[0x48, 0x0f, 0xb8, 0xc7]).is_none());
        assert!(decode_popcnt(&[0xcc]).is_none());
        assert!(decode_popcnt(&[]).is_none());
    }

    #[test]
    fn linux64_registers_follow_the_protocol() {
        let mut sregs = kvm_sregs::default();
        let regs = boot_registers(BootEntry::Linux64 { entry: 0x100200 }, &mut sregs);
        assert_eq!(regs.rsi, ZERO_PAGE_ADDR);
        assert_eq!(sregs.efer & EFER_LMA, EFER_LMA);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.cs.db, 0);
        assert_eq!(sregs.cr3, PML4_ADDR);
    }
}

#[cfg(test)]
mod kvm_tests {
    use super::*;

    #[test]
    fn cpuid_filter_hides_features() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("SKIPPED: /dev/kvm is not usable");
            return;
        };
        let mut cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .expect("cpuid");
        let offered = cpuid.clone();
        let leaf = |c: &CpuId, f: u32| {
            *c.as_slice()
                .iter()
                .find(|e| e.function == f && e.index == 0)
                .expect("leaf")
        };
        filter_cpuid(&mut cpuid, 3, 4, true);
        let leaf1 = leaf(&cpuid, 1);
        assert_eq!(leaf1.ecx & (LEAF1_ECX_XSAVE_FAMILY | LEAF1_ECX_POPCNT), 0);
        assert_eq!(leaf1.ebx >> 24, 3);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_eq!(leaf1.ecx >> 31, 1, "the hypervisor bit");

        // A host that runs every instruction: POPCNT as KVM offers it, XSAVE still hidden.
        let mut full = offered.clone();
        filter_cpuid(&mut full, 3, 4, false);
        let leaf1 = leaf(&full, 1);
        assert_eq!(
            leaf1.ecx & LEAF1_ECX_POPCNT,
            leaf(&offered, 1).ecx & LEAF1_ECX_POPCNT
        );
        assert_eq!(leaf1.ecx & LEAF1_ECX_XSAVE_FAMILY, 0);
        assert_eq!(leaf1.ebx >> 24, 3);
    }
}
