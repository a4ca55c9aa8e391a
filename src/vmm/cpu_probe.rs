//! Does this host's KVM run every instruction a modern guest uses?
//!
//! On hardware KVM (and on a nested KVM whose outer hypervisor runs guest code
//! natively or in full emulation, like the lab's QEMU TCG) guests execute
//! `popcnt` and the `xsave` family directly. Some nested, software-assisted
//! hosts (the development machines, some cloud VMs) instead hand guest code to
//! an instruction emulator that lacks them: KVM_RUN then fails with an
//! emulation error. Guests must not be offered POPCNT there (see
//! [`super::cpu::filter_cpuid`]), but everywhere else hiding it would cost real
//! guests dearly: x86-64-v2 distributions (RHEL 9 and its rebuilds) refuse to
//! start without it. (The XSAVE family stays hidden everywhere for now; see
//! `cpu.rs`.)
//!
//! So the VMM asks the host once per process: a throwaway VM with one vCPU in
//! real mode runs `popcnt` and halts. If it halts where expected
//! with the right result, the host runs them; anything else (an emulation
//! failure, an exception, a KVM error) means it does not, and the features stay
//! hidden, as before this probe existed. It costs one VM creation (about a
//! millisecond on hardware KVM).

use std::sync::OnceLock;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The probe's memory: 64 KiB from guest address 0.
const PROBE_MEM: usize = 0x1_0000;
/// Where the probe's code starts (CS = 0, real mode).
const CODE: u64 = 0x1000;
/// Every interrupt vector points here: a `hlt` that means "an exception".
const TRAP: u16 = 0x0600;

/// The probe program (16-bit real mode). It does not run `xsave`: that needs
/// CR4.OSXSAVE, which makes the host's KVM switch XCR0 around every entry, and
/// on the lab's emulated SVM that switching locked the lab up (docs/lab.md);
/// guests get no XSAVE anyway (`cpu.rs`).
fn probe_code() -> Vec<u8> {
    vec![
        0x66, 0xbb, 0xff, 0x00, 0x00, 0x00, // mov ebx, 0xff
        0x66, 0xf3, 0x0f, 0xb8, 0xc3, // popcnt eax, ebx
        0xf4, // hlt
    ]
}

/// Whether this host's KVM fails on instructions guests commonly use (POPCNT):
/// probed once per process.
pub fn host_lacks_instructions() -> bool {
    static LACKS: OnceLock<bool> = OnceLock::new();
    *LACKS.get_or_init(|| match run_probe() {
        Ok(()) => false,
        Err(why) => {
            tracing::debug!("CPU probe: {why}; POPCNT stays hidden from guests");
            true
        }
    })
}

/// Runs the probe VM; `Err` says what went wrong.
fn run_probe() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("supported CPUID: {e}"))?;
    let leaf1_ecx = supported
        .as_slice()
        .iter()
        .find(|e| e.function == 1)
        .map(|e| e.ecx)
        .unwrap_or(0);
    if leaf1_ecx & (1 << 23) == 0 {
        return Err("KVM offers no POPCNT".into());
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), PROBE_MEM)])
        .map_err(|e| format!("probe memory: {e}"))?;
    // The interrupt vector table: every vector to 0000:TRAP, which halts.
    for vector in 0..256u64 {
        mem.write_obj(u32::from(TRAP), GuestAddress(vector * 4))
            .map_err(|e| format!("probe IVT: {e}"))?;
    }
    mem.write_obj(0xf4u8, GuestAddress(u64::from(TRAP)))
        .map_err(|e| format!("probe trap: {e}"))?;
    let code = probe_code();
    mem.write_slice(&code, GuestAddress(CODE))
        .map_err(|e| format!("probe code: {e}"))?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| format!("probe memory address: {e}"))?;

    let vm = kvm.create_vm().map_err(|e| format!("VM: {e}"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: PROBE_MEM as u64,
        userspace_addr: host as u64,
    };
    // SAFETY: `region` describes `mem`'s one mapping, PROBE_MEM bytes at
    // `host`; `mem` outlives `vm` (declared before it, so dropped after it),
    // and nothing else maps or frees that memory meanwhile.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| format!("memory region: {e}"))?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("vCPU: {e}"))?;
    vcpu.set_cpuid2(&supported)
        .map_err(|e| format!("vCPU CPUID: {e}"))?;
    let mut sregs = vcpu.get_sregs().map_err(|e| format!("sregs: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| format!("sregs: {e}"))?;
    let regs = kvm_bindings::kvm_regs {
        rip: CODE,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|e| format!("regs: {e}"))?;
    let exit = match vcpu.run() {
        Ok(VcpuExit::Hlt) => None,
        Ok(other) => Some(format!("exit {other:?}")),
        Err(e) => Some(format!("KVM_RUN: {e}")),
    };
    if let Some(why) = exit {
        return Err(why);
    }
    let regs = vcpu.get_regs().map_err(|e| format!("regs: {e}"))?;
    let after_code = CODE + code.len() as u64;
    if regs.rip != after_code {
        return Err(format!(
            "halted at {:#x}, not {after_code:#x} (an exception)",
            regs.rip
        ));
    }
    if regs.rax & 0xffff_ffff != 8 {
        return Err(format!("popcnt(0xff) gave {}", regs.rax & 0xffff_ffff));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_code_halts_last() {
        let code = probe_code();
        assert_eq!(code.last(), Some(&0xf4));
    }

    #[test]
    fn the_probe_answers_and_agrees_with_itself() {
        if Kvm::new().is_err() {
            eprintln!("SKIPPED: /dev/kvm is not usable");
            return;
        }
        // Whatever this host is, the answer is stable within a process and a
        // second probe run agrees with it.
        let first = host_lacks_instructions();
        assert_eq!(host_lacks_instructions(), first);
        let again = run_probe();
        eprintln!("this host: {again:?}");
        assert_eq!(again.is_err(), first);
    }
}
