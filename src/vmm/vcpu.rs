//! The vCPU threads (Firecracker's `vstate/vcpu`): the KVM_RUN loop and its exits, pausing
//! (a parked vCPU leaves its state for a save), the kick signal that interrupts KVM_RUN,
//! help for hypercalls and emulation failures the host never completes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use super::memory::GuestMemoryMmap;
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::bus::{Bus, lock};
use super::cpu::{self, Completion};
use super::devices::legacy::{EventSender, VmEvent};
use super::snapshot::VcpuState;

/// Per-vCPU counters.
#[derive(Default)]
pub struct VcpuStats {
    /// Nanoseconds spent inside KVM_RUN.
    pub run_ns: AtomicU64,
    /// Exits to the VMM.
    pub exits: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunState {
    Running,
    Paused,
    Stopping,
}

/// Tells the vCPU threads to run, park or stop, and counts the parked ones.
pub(super) struct VcpuControl {
    pub(super) state: Mutex<RunState>,
    pub(super) cv: Condvar,
    pub(super) parked: Mutex<usize>,
    pub(super) parked_cv: Condvar,
}

/// Print each vCPU's RIP when it is kicked (debugging aid: `YUNHE_TRACE_RIP=SECONDS`).
pub static TRACE_RIP: AtomicBool = AtomicBool::new(false);

pub(super) extern "C" fn kick_handler(
    _: libc::c_int,
    _: *mut libc::siginfo_t,
    _: *mut libc::c_void,
) {
}

pub(super) fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Where a paused vCPU leaves its state for `save`.
pub(super) type VcpuSlot = Arc<Mutex<Option<Result<VcpuState, String>>>>;

/// What one vCPU thread works with.
pub(super) struct VcpuContext {
    pub(super) saved: VcpuSlot,
    pub(super) id: usize,
    pub(super) io: Arc<Bus>,
    pub(super) mmio: Arc<Bus>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) control: Arc<VcpuControl>,
    pub(super) events: EventSender,
    pub(super) stats: Arc<VcpuStats>,
    pub(super) count: usize,
}

/// Parks the vCPU while paused; returns false when it must stop.
fn check_state(ctx: &VcpuContext, vcpu: &VcpuFd) -> bool {
    let mut st = lock(&ctx.control.state);
    loop {
        match *st {
            RunState::Running => return true,
            RunState::Stopping => return false,
            RunState::Paused => {
                // A paused vCPU is not in KVM_RUN: its state is consistent; keep it for `save`.
                *lock(&ctx.saved) = Some(VcpuState::capture(vcpu).map_err(|e| e.to_string()));
                *lock(&ctx.control.parked) += 1;
                ctx.control.parked_cv.notify_all();
                st = ctx.control.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                *lock(&ctx.control.parked) -= 1;
                if !matches!(*st, RunState::Paused) {
                    // Running again: what was captured goes stale now.
                    *lock(&ctx.saved) = None;
                }
            }
        }
    }
}

/// The vCPU thread: runs the guest until it stops, powers off, resets or crashes.
pub(super) fn vcpu_loop(mut vcpu: VcpuFd, ctx: VcpuContext) {
    let _ = ctx.count;
    if let Err(e) = super::seccomp::install(super::seccomp::ThreadKind::Vcpu) {
        let _ = ctx.events.send(VmEvent::Crash(e.to_string()));
        return;
    }
    let mut last_kick_rip = 0u64;
    loop {
        if !check_state(&ctx, &vcpu) {
            return;
        }
        let t = Instant::now();
        let exit = vcpu.run();
        ctx.stats
            .run_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        ctx.stats.exits.fetch_add(1, Ordering::Relaxed);
        let event = match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                ctx.io.read(u64::from(port), data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.io.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                ctx.mmio.read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ctx.mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Hlt) => None,
            Ok(VcpuExit::Shutdown) => {
                // A triple fault: the guest cannot report it itself, so say where it happened.
                eprintln!(
                    "yunhe vmm: vCPU {} triple fault (the guest resets): {}",
                    ctx.id,
                    describe_cpu_state(&vcpu)
                );
                Some(VmEvent::Reset)
            }
            Ok(VcpuExit::SystemEvent(type_, _)) => match type_ {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => {
                    eprintln!("yunhe vmm: vCPU {} the guest asked for a reset", ctx.id);
                    Some(VmEvent::Reset)
                }
                _ => Some(VmEvent::PowerOff),
            },
            Ok(VcpuExit::InternalError) => handle_internal_error(&mut vcpu, &ctx),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(VmEvent::Crash(format!(
                "vCPU {} failed to enter the guest: reason {reason:#x} on cpu {cpu}",
                ctx.id
            ))),
            Ok(other) => Some(VmEvent::Crash(format!(
                "vCPU {}: unexpected exit {other:?}",
                ctx.id
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                complete_stuck_hypercall(&mut vcpu, &ctx, &mut last_kick_rip);
                if TRACE_RIP.load(Ordering::Relaxed)
                    && let Ok(r) = vcpu.get_regs()
                {
                    // The word at the stack pointer: usually the caller's return address.
                    let ret = vcpu
                        .translate_gva(r.rsp)
                        .ok()
                        .filter(|t| t.valid != 0)
                        .and_then(|t| {
                            vm_memory::Bytes::read_obj::<u64>(
                                &ctx.mem,
                                vm_memory::GuestAddress(t.physical_address),
                            )
                            .ok()
                        })
                        .unwrap_or(0);
                    eprintln!(
                        "[yunhe trace] vCPU {} rip {:#x} rsp {:#x} [rsp] {ret:#x}",
                        ctx.id, r.rip, r.rsp
                    );
                }
                None
            }
            Err(e) => Some(VmEvent::Crash(format!(
                "vCPU {}: KVM_RUN failed: {e}",
                ctx.id
            ))),
        };
        if let Some(ev) = event {
            let _ = ctx.events.send(ev);
            // Wait for the VMM to decide (stop or reset); do not run on.
            let mut st = lock(&ctx.control.state);
            while *st != RunState::Stopping {
                st = ctx.control.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
    }
}

/// On hosts whose instruction emulation never completes `vmcall` (KVM re-enters
/// the guest with RIP unchanged, forever), a vCPU found at the same `vmcall`
/// (or `vmmcall`) on two consecutive watchdog kicks gets the hypercall
/// completed as "not supported" (RAX = -KVM_ENOSYS, RIP past it).
///
/// A working host completes hypercalls at once, but a guest that spends most
/// of its time in a loop of hypercalls (slow exits on a nested host) can be
/// found at the same one on two kicks too. So only hypercalls whose failure
/// the guest survives are ever completed here ([`SKIPPABLE_HYPERCALLS`]): a
/// faked failure of KVM_HC_SEND_IPI or KVM_HC_KICK_CPU would lose an IPI or
/// a wake-up and hang the guest.
fn complete_stuck_hypercall(vcpu: &mut VcpuFd, ctx: &VcpuContext, last: &mut u64) {
    const KVM_ENOSYS: i64 = 1000;
    let Ok(mut regs) = vcpu.get_regs() else {
        return;
    };
    let stuck = regs.rip == *last;
    *last = regs.rip;
    if !stuck || !SKIPPABLE_HYPERCALLS.contains(&regs.rax) {
        return;
    }
    let Some(t) = vcpu.translate_gva(regs.rip).ok().filter(|t| t.valid != 0) else {
        return;
    };
    let mut insn = [0u8; 3];
    if vm_memory::Bytes::read_slice(
        &ctx.mem,
        &mut insn,
        vm_memory::GuestAddress(t.physical_address),
    )
    .is_err()
    {
        return;
    }
    if insn != [0x0f, 0x01, 0xc1] && insn != [0x0f, 0x01, 0xd9] {
        return;
    }
    regs.rax = (-KVM_ENOSYS) as u64;
    regs.rip = regs.rip.wrapping_add(3);
    if vcpu.set_regs(&regs).is_ok() {
        *last = 0;
        eprintln!(
            "[yunhe] vCPU {}: the hypercall at {:#x} never completed on this host; returned -ENOSYS",
            ctx.id,
            regs.rip - 3
        );
    }
}

/// The KVM hypercalls (number in RAX) a guest gets on with when they fail:
/// KVM_HC_VAPIC_POLL_IRQ (1, a no-op), KVM_HC_CLOCK_PAIRING (9, ptp_kvm then
/// does not load; the one seen stuck) and KVM_HC_SCHED_YIELD (11, a hint).
const SKIPPABLE_HYPERCALLS: [u64; 3] = [1, 9, 11];

/// The registers that tell why a vCPU stopped (for the log of a triple fault).
fn describe_cpu_state(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip {:#x} rsp {:#x} rflags {:#x} cs {:#x} cr0 {:#x} cr2 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} idt {:#x}/{:#x}",
            r.rip,
            r.rsp,
            r.rflags,
            s.cs.selector,
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.idt.base,
            s.idt.limit
        ),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}

fn handle_internal_error(vcpu: &mut VcpuFd, ctx: &VcpuContext) -> Option<VmEvent> {
    let (suberror, ndata, data) = {
        let run = vcpu.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
        // member of the union; it is plain data.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        (internal.suberror, internal.ndata, internal.data)
    };
    let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
    if suberror != kvm_bindings::KVM_INTERNAL_ERROR_EMULATION {
        return Some(VmEvent::Crash(format!(
            "vCPU {}: KVM internal error {suberror} at rip {rip:#x}, data {:x?}",
            ctx.id,
            &data[..(ndata as usize).min(16)]
        )));
    }
    let insn = cpu::failing_instruction(vcpu, &ctx.mem, &data, ndata, rip);
    match cpu::complete_emulation_failure(vcpu, &insn) {
        Completion::Resumed(_) => None,
        Completion::Fatal(why) => Some(VmEvent::Crash(format!(
            "vCPU {}: emulation failure at rip {rip:#x}: {why}",
            ctx.id
        ))),
    }
}
