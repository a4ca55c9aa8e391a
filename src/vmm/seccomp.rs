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
//!
//! `YUNHE_NO_SECCOMP=1` turns the filters off (debugging only).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// The kinds of VMM threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// A vCPU thread.
    Vcpu,
    /// The device/event thread.
    Devices,
    /// The control-socket threads.
    Control,
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

/// Disk and tap I/O done while processing queues.
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
    libc::SYS_ioctl,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_newfstatat,
];

fn syscalls(kind: ThreadKind) -> Vec<i64> {
    let mut v: Vec<i64> = COMMON.to_vec();
    match kind {
        ThreadKind::Vcpu => {
            // KVM ioctls, the kick signal, and queue processing triggered by MMIO writes.
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
        ThreadKind::Control => {
            v.extend_from_slice(&[
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
            ]);
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The compiled filter of `kind`.
pub fn filter(kind: ThreadKind) -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = syscalls(kind)
        .into_iter()
        .map(|s| (s, Vec::new()))
        .collect();
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
        for kind in [ThreadKind::Vcpu, ThreadKind::Devices, ThreadKind::Control] {
            assert!(filter(kind).is_ok());
            let calls = syscalls(kind);
            assert!(!calls.contains(&libc::SYS_execve));
            assert!(!calls.contains(&libc::SYS_socket));
            assert!(!calls.contains(&libc::SYS_ptrace));
        }
        assert!(!syscalls(ThreadKind::Vcpu).contains(&libc::SYS_openat));
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
