//! Seccomp filters, one per thread kind, installed once the thread is set up.
//!
//! A system call outside a thread's list fails with EPERM (it does not kill
//! the VMM: a VMM that dies takes the guest with it, a refused call only
//! fails the request that made it). No list contains execve, open of new
//! files (except the control threads' /proc reads), socket creation or
//! ptrace, so a guest that took over a device model cannot reach them.
//!
//! | kind      | what it does                                              |
//! | --------- | --------------------------------------------------------- |
//! | vcpu      | KVM_RUN and register ioctls, device emulation on exits    |
//! | devices   | epoll loop: queue notifications, disk and tap I/O         |
//! | control   | control socket: accept, JSON lines, console streaming     |
//! | watchdog  | sleeps and kicks the vCPUs (tgkill); no ioctl at all      |
//! | main      | builds and rebuilds the VM, starts the others (their union)|
//!
//! `ioctl` is allowed only with the request numbers a kind uses (the KVM
//! system, VM and vCPU calls, the tun calls of a NIC, the terminal calls of `vm run`),
//! compared on the 32 bits the kernel reads.
//!
//! `YUNHE_NO_SECCOMP=1` turns the filters off (debugging only).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The kinds of VMM threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread.
    Vcpu,
    /// The device/event thread.
    Devices,
    /// The control-socket threads.
    Control,
    /// The watchdog that kicks vCPUs.
    Watchdog,
    /// The main thread of `yunhe vmm`: builds (and on reboot rebuilds) the VM
    /// and starts every other thread, so its list holds all of theirs.
    Main,
}

/// Errors building or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// Cannot build the {0:?} filter: {1}
    #[error("cannot build the {0:?} filter: {1}")]
    Build(ThreadKind, String),
    /// Cannot install the {0:?} filter: {1}
    #[error("cannot install the {0:?} filter: {1}")]
    Install(ThreadKind, String),
}

/// Calls every thread kind needs (memory, locks, time, signals, exit).
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mprotect,
    libc::SYS_futex,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_close,
    libc::SYS_getrandom,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
];

/// Disk and tap I/O done while processing queues (ioctl is listed per kind,
/// with its requests).
const DEVICE_IO: &[i64] = &[
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
];

// ioctl request numbers, encoded as <asm-generic/ioctl.h> does:
// direction (2 bits) | argument size (14 bits) | type (8 bits) | number (8 bits).
const IOC_NONE: u64 = 0;
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const KVMIO: u64 = 0xAE;

const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const fn kvm_io(nr: u64) -> u64 {
    ioc(IOC_NONE, KVMIO, nr, 0)
}
const fn kvm_ior<T>(nr: u64) -> u64 {
    ioc(IOC_READ, KVMIO, nr, std::mem::size_of::<T>())
}
const fn kvm_iow<T>(nr: u64) -> u64 {
    ioc(IOC_WRITE, KVMIO, nr, std::mem::size_of::<T>())
}
const fn kvm_iowr<T>(nr: u64) -> u64 {
    ioc(IOC_READ | IOC_WRITE, KVMIO, nr, std::mem::size_of::<T>())
}

use kvm_bindings as kb;

/// KVM calls on the vCPU's own fd while it runs and is saved or restored.
const KVM_VCPU_IOCTLS: &[u64] = &[
    kvm_io(0x80),                          // KVM_RUN
    kvm_ior::<kb::kvm_regs>(0x81),         // KVM_GET_REGS
    kvm_iow::<kb::kvm_regs>(0x82),         // KVM_SET_REGS
    kvm_ior::<kb::kvm_sregs>(0x83),        // KVM_GET_SREGS
    kvm_iow::<kb::kvm_sregs>(0x84),        // KVM_SET_SREGS
    kvm_iowr::<kb::kvm_translation>(0x85), // KVM_TRANSLATE
    kvm_iowr::<kb::kvm_msrs>(0x88),        // KVM_GET_MSRS
    kvm_iow::<kb::kvm_msrs>(0x89),         // KVM_SET_MSRS
    kvm_ior::<kb::kvm_fpu>(0x8c),          // KVM_GET_FPU
    kvm_iow::<kb::kvm_fpu>(0x8d),          // KVM_SET_FPU
    kvm_ior::<kb::kvm_lapic_state>(0x8e),  // KVM_GET_LAPIC
    kvm_iow::<kb::kvm_lapic_state>(0x8f),  // KVM_SET_LAPIC
    kvm_iow::<kb::kvm_cpuid2>(0x90),       // KVM_SET_CPUID2
    kvm_ior::<kb::kvm_mp_state>(0x98),     // KVM_GET_MP_STATE
    kvm_iow::<kb::kvm_mp_state>(0x99),     // KVM_SET_MP_STATE
    kvm_ior::<kb::kvm_vcpu_events>(0x9f),  // KVM_GET_VCPU_EVENTS
    kvm_iow::<kb::kvm_vcpu_events>(0xa0),  // KVM_SET_VCPU_EVENTS
    kvm_ior::<kb::kvm_xsave>(0xa4),        // KVM_GET_XSAVE
    kvm_iow::<kb::kvm_xsave>(0xa5),        // KVM_SET_XSAVE
    kvm_ior::<kb::kvm_xcrs>(0xa6),         // KVM_GET_XCRS
    kvm_iow::<kb::kvm_xcrs>(0xa7),         // KVM_SET_XCRS
];

/// KVM calls on the VM fd that device emulation makes while the guest runs:
/// interrupts, MSI routes, irqfds and ioeventfds as the guest programs devices.
const KVM_VM_RUNTIME_IOCTLS: &[u64] = &[
    kvm_iow::<kb::kvm_irq_level>(0x61),   // KVM_IRQ_LINE
    kvm_iow::<kb::kvm_irq_routing>(0x6a), // KVM_SET_GSI_ROUTING
    kvm_iow::<kb::kvm_irqfd>(0x76),       // KVM_IRQFD
    kvm_iow::<kb::kvm_ioeventfd>(0x79),   // KVM_IOEVENTFD
    kvm_iow::<kb::kvm_msi>(0xa5),         // KVM_SIGNAL_MSI
];

/// VM-wide state read by `save` (control thread) and written on restore.
const KVM_VM_STATE_IOCTLS: &[u64] = &[
    kvm_iowr::<kb::kvm_irqchip>(0x62),   // KVM_GET_IRQCHIP
    kvm_ior::<kb::kvm_irqchip>(0x63),    // KVM_SET_IRQCHIP (_IOR in the kernel's header)
    kvm_iow::<kb::kvm_clock_data>(0x7b), // KVM_SET_CLOCK
    kvm_ior::<kb::kvm_clock_data>(0x7c), // KVM_GET_CLOCK
    kvm_ior::<kb::kvm_pit_state2>(0x9f), // KVM_GET_PIT2
    kvm_iow::<kb::kvm_pit_state2>(0xa0), // KVM_SET_PIT2
];

/// Building a VM: /dev/kvm and VM-fd set-up calls.
const KVM_SETUP_IOCTLS: &[u64] = &[
    kvm_io(0x00),                                     // KVM_GET_API_VERSION
    kvm_io(0x01),                                     // KVM_CREATE_VM
    kvm_iowr::<kb::kvm_msr_list>(0x02),               // KVM_GET_MSR_INDEX_LIST
    kvm_io(0x03),                                     // KVM_CHECK_EXTENSION
    kvm_io(0x04),                                     // KVM_GET_VCPU_MMAP_SIZE
    kvm_iowr::<kb::kvm_cpuid2>(0x05),                 // KVM_GET_SUPPORTED_CPUID
    kvm_io(0x41),                                     // KVM_CREATE_VCPU
    kvm_iow::<kb::kvm_userspace_memory_region>(0x46), // KVM_SET_USER_MEMORY_REGION
    kvm_io(0x47),                                     // KVM_SET_TSS_ADDR
    kvm_iow::<u64>(0x48),                             // KVM_SET_IDENTITY_MAP_ADDR
    kvm_io(0x60),                                     // KVM_CREATE_IRQCHIP
    kvm_iow::<kb::kvm_pit_config>(0x77),              // KVM_CREATE_PIT2
    kvm_iow::<kb::kvm_enable_cap>(0xa3),              // KVM_ENABLE_CAP
];

/// Taps: attaching one (`--net tap=NAME` opens /dev/net/tun), finding out whether an inherited
/// or hot-added one carries a vnet header, its size, and the offloads a guest negotiated (set on
/// the vCPU thread that activates or resets the NIC).
const TAP_IOCTLS: &[u64] = crate::vmm::devices::virtio::net::TUN_IOCTLS;

/// Terminal calls of `vm run`'s raw mode and `is_terminal` checks:
/// TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ.
const TERMINAL_IOCTLS: &[u64] = &[0x5401, 0x5402, 0x5403, 0x5404, 0x5413];

/// The ioctl requests a thread kind may make (on any descriptor: the kernel
/// refuses a KVM request on a file that is not a KVM fd).
fn ioctls(kind: ThreadKind) -> Vec<u64> {
    let mut v: Vec<u64> = Vec::new();
    match kind {
        ThreadKind::Vcpu => {
            v.extend_from_slice(KVM_VCPU_IOCTLS);
            v.extend_from_slice(KVM_VM_RUNTIME_IOCTLS);
            v.extend_from_slice(TAP_IOCTLS);
        }
        ThreadKind::Devices => v.extend_from_slice(KVM_VM_RUNTIME_IOCTLS),
        ThreadKind::Control => {
            v.extend_from_slice(KVM_VM_RUNTIME_IOCTLS);
            v.extend_from_slice(KVM_VM_STATE_IOCTLS);
            v.extend_from_slice(TAP_IOCTLS);
        }
        ThreadKind::Watchdog => {}
        ThreadKind::Main => {
            v.extend_from_slice(KVM_SETUP_IOCTLS);
            v.extend_from_slice(KVM_VCPU_IOCTLS);
            v.extend_from_slice(KVM_VM_RUNTIME_IOCTLS);
            v.extend_from_slice(KVM_VM_STATE_IOCTLS);
            v.extend_from_slice(TAP_IOCTLS);
            v.extend_from_slice(TERMINAL_IOCTLS);
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn syscalls(kind: ThreadKind) -> Vec<i64> {
    let mut v: Vec<i64> = COMMON.to_vec();
    match kind {
        ThreadKind::Vcpu => {
            // The kick signal, and queue processing triggered by MMIO writes.
            v.extend_from_slice(DEVICE_IO);
            v.extend_from_slice(&[libc::SYS_tgkill]);
        }
        ThreadKind::Devices => {
            v.extend_from_slice(DEVICE_IO);
            v.extend_from_slice(&[
                libc::SYS_epoll_wait,
                libc::SYS_epoll_pwait,
                libc::SYS_epoll_ctl,
            ]);
        }
        ThreadKind::Control => v.extend_from_slice(CONTROL),
        ThreadKind::Watchdog => v.extend_from_slice(&[libc::SYS_tgkill]),
        ThreadKind::Main => {
            // Everything the threads it starts need (their filters stack on
            // this one), plus building the VM: opening /dev/kvm, the kernel,
            // disks, taps; eventfds, epoll, threads, the kick signal's handler.
            for k in [
                ThreadKind::Vcpu,
                ThreadKind::Devices,
                ThreadKind::Control,
                ThreadKind::Watchdog,
            ] {
                v.extend(syscalls(k));
            }
            v.extend_from_slice(&[
                libc::SYS_openat,
                libc::SYS_eventfd2,
                libc::SYS_epoll_create1,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_rt_sigaction,
                libc::SYS_prctl,
                libc::SYS_unlink,
                libc::SYS_unlinkat,
                libc::SYS_sched_setaffinity,
                // Each thread it starts adds its own filter (which can only narrow).
                libc::SYS_seccomp,
            ]);
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The control threads: socket I/O, thread start per client, stats, save.
const CONTROL: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_fcntl,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_prctl,
    // stats: /proc/self/statm and mincore over guest memory.
    libc::SYS_openat,
    libc::SYS_pread64,
    libc::SYS_mincore,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
    // pause/stop kick the vCPUs.
    libc::SYS_tgkill,
    libc::SYS_ioctl,
    libc::SYS_eventfd2,
    // save: the state directory.
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_lseek,
];

/// The compiled filter of `kind`: its calls, ioctl only with its requests.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let build = |e: seccompiler::BackendError| SeccompError::Build(kind, e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = syscalls(kind)
        .into_iter()
        .filter(|s| *s != libc::SYS_ioctl)
        .map(|s| (s, Vec::new()))
        .collect();
    let requests = ioctls(kind);
    if !requests.is_empty() {
        let mut ioctl_rules = Vec::new();
        for request in requests {
            // The kernel takes the request as a 32-bit `unsigned int`.
            let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                .map_err(build)?;
            ioctl_rules.push(SeccompRule::new(vec![cond]).map_err(build)?);
        }
        rules.insert(libc::SYS_ioctl, ioctl_rules);
    }
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(kind, e.to_string()))?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(kind, e.to_string()))
}

/// Installs the filter of `kind` on the calling thread (and the threads it creates later).
pub fn install(kind: ThreadKind) -> Result<(), SeccompError> {
    if std::env::var("YUNHE_NO_SECCOMP").as_deref() == Ok("1") {
        return Ok(());
    }
    let bpf = filter(kind)?;
    seccompiler::apply_filter(&bpf).map_err(|e| SeccompError::Install(kind, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_and_refuse_exec() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::Devices,
            ThreadKind::Control,
            ThreadKind::Watchdog,
            ThreadKind::Main,
        ] {
            assert!(filter(kind).is_ok());
            let calls = syscalls(kind);
            assert!(!calls.contains(&libc::SYS_execve));
            assert!(!calls.contains(&libc::SYS_socket));
            assert!(!calls.contains(&libc::SYS_ptrace));
        }
        assert!(!syscalls(ThreadKind::Vcpu).contains(&libc::SYS_openat));
        assert!(ioctls(ThreadKind::Watchdog).is_empty());
        // The request numbers match the kernel's (values from <linux/kvm.h>).
        assert!(KVM_VCPU_IOCTLS.contains(&0xae80)); // KVM_RUN
        assert!(KVM_VCPU_IOCTLS.contains(&0x8090_ae81)); // KVM_GET_REGS
        assert!(KVM_VCPU_IOCTLS.contains(&0xc008_ae88)); // KVM_GET_MSRS
        assert!(KVM_VM_RUNTIME_IOCTLS.contains(&0x4020_ae76)); // KVM_IRQFD
        assert!(KVM_SETUP_IOCTLS.contains(&0x4020_ae46)); // KVM_SET_USER_MEMORY_REGION
        // TUNSETIFF, TUNSETOFFLOAD, TUNGETIFF, TUNSETVNETHDRSZ (values from <linux/if_tun.h>).
        assert_eq!(
            TAP_IOCTLS,
            &[0x4004_54ca, 0x4004_54d0, 0x8004_54d2, 0x4004_54d8]
        );
        assert!(ioctls(ThreadKind::Vcpu).contains(&0x4004_54d0));
        assert!(!ioctls(ThreadKind::Devices).contains(&0x4004_54ca));
    }

    #[test]
    fn installed_filter_refuses_other_ioctls() {
        let handle = std::thread::spawn(|| {
            install(ThreadKind::Vcpu).expect("install");
            let mut size = [0u16; 4];
            // SAFETY: TIOCGWINSZ writes a struct winsize (4 u16) into `size`.
            let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, size.as_mut_ptr()) };
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(handle.join().expect("thread"), (-1, Some(libc::EPERM)));
    }

    #[test]
    fn installed_filter_refuses_other_calls() {
        let handle = std::thread::spawn(|| {
            install(ThreadKind::Devices).expect("install");
            // openat is not on the devices list.
            std::fs::File::open("/proc/self/statm")
                .err()
                .and_then(|e| e.raw_os_error())
        });
        assert_eq!(handle.join().expect("thread"), Some(libc::EPERM));
    }
}
