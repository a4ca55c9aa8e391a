//! Confinement of the VMMs `yunhe serve` starts, after the model of
//! Firecracker's jailer (our own code; see docs/vmm.md, "The jail").
//!
//! Serve first makes the VMM's cgroup `yunhe/<server id>` with CPU, memory and
//! task limits from the VM's size ([`prepare_cgroup`]; cgroup v2, else the v1
//! controllers; logged and skipped when neither has them), then starts
//! `yunhe vmm --spec FILE` as pid 1 of a new PID namespace ([`spawn_vmm`]) and
//! puts a `jail` section in the spec. The VMM, still root and still
//! single-threaded, then confines itself ([`enter`]) before it creates any
//! thread or maps guest memory:
//!
//! 1. is in its cgroup: with v2 clone3 started it there (`CLONE_INTO_CGROUP`);
//!    with v1 it moves itself ([`join_cgroup`]);
//! 2. unshares its mount, IPC, UTS and network namespaces (the new network
//!    namespace is empty: the control socket is a path, which works across
//!    network namespaces);
//! 3. mounts a small read-only tmpfs as its new root holding only
//!    `/dev/kvm` (a fresh device node owned by the VMM's uid) and the server's
//!    directory, bind-mounted at its host path so every path in the spec stays
//!    valid (kernel, ramdisk, disk, config drive, console log, saved state),
//!    and `pivot_root`s into it, detaching the host's tree;
//! 4. drops every capability (bounding, ambient, inheritable, permitted,
//!    effective), switches to the server's own uid/gid with no supplementary
//!    groups, and sets `PR_SET_NO_NEW_PRIVS`.
//!
//! The control socket and the console log are opened before step 2, so serve
//! finds the socket at its host path; serve removes socket, mount point and
//! cgroup when the VMM has exited.
//!
//! Why the cgroup is joined this way (the jail's cost at boot): moving a
//! process into a cgroup by writing its pid into `cgroup.procs` write-locks
//! the kernel's global `cgroup_threadgroup_rwsem`, whose write side first
//! waits for an RCU grace period: 6–13 ms per VMM on the test host (cgroup
//! v1), a third of an echo guest's whole POST-to-ACTIVE time. The two ways
//! around it that need no lock at all:
//!
//! * cgroup v2: the VMM is born in its cgroup (clone3 `CLONE_INTO_CGROUP`,
//!   Linux 5.7), so nothing is ever migrated. If clone3 refuses the cgroup,
//!   serve starts the VMM without it and the VMM writes itself into
//!   `cgroup.procs` (correct, but it waits for the grace period).
//! * cgroup v1 (where clone3 cannot start a child in a cgroup): the VMM,
//!   while it has one thread, writes `0` into each controller's `tasks`: a
//!   thread moving itself is the one migration the kernel does without the
//!   lock (`cgroup_procs_write_start`); 0.02–0.08 ms. The order is unchanged:
//!   the VMM is in the cgroup before it maps guest memory, so the guest's
//!   pages are charged to the VM's memory cgroup (v1 does not move charges
//!   made before a migration; tests/security_jail.rs checks it).
//!
//! Rejected: serve moving the child by pid while the child execs and jails
//! itself (still a grace period per VMM on a host-wide lock, and the child
//! must wait on a handshake before it maps guest memory, which it reaches
//! 5–8 ms after its exec here: most of a 6–13 ms wait would remain);
//! `memory.move_charge_at_immigrate` (deprecated, and no help with the
//! lock); remounting the hierarchies with `favordynmods` (host-wide, and it
//! makes every fork and exit on the host slower).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The jail section of a `yunhe vmm` spec.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JailSpec {
    /// The uid the VMM runs as once confined.
    pub uid: u32,
    /// The gid the VMM runs as once confined.
    pub gid: u32,
    /// An empty host directory the VMM mounts its new root on (inside its own
    /// mount namespace, so the host never sees the mount).
    pub root_mount: PathBuf,
    /// The server's directory: the only host files the VMM can reach.
    pub instance_dir: PathBuf,
    /// The cgroup below the `yunhe` parent (the server id) that serve made
    /// and limited before starting the VMM ([`prepare_cgroup`]); none: no cgroup.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// Errors confining a VMM.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A step of the confinement failed: {0}: {1}
    #[error("jail: {0}: {1}")]
    Step(String, io::Error),
    /// The VMM is not pid 1 of its own PID namespace
    #[error("jail: the VMM is not pid 1 of its own PID namespace (start it with `yunhe serve`)")]
    NotPidOne,
    /// A path holds a NUL byte: {0}
    #[error("jail: a path holds a NUL byte: {0}")]
    BadPath(String),
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let what = what.into();
    move |e| JailError::Step(what, e)
}

/// Turns a libc return value into an io::Result.
fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cstring(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| JailError::BadPath(p.display().to_string()))
}

/// The first uid (and gid) of the range jailed VMMs run as: one per server,
/// `UID_BASE + n`, far above the uids of people and system services.
pub const UID_BASE: u32 = 900_000;
/// How many uids the range holds.
pub const UID_COUNT: u32 = 65_536;

/// The uid for server `id`: a hash of the id into the range, moved on past
/// uids a running process already has (two running VMMs never share one).
pub fn pick_uid(id: &str, taken: &std::collections::HashSet<u32>) -> u32 {
    // FNV-1a: stable across runs, so a server keeps its uid when nothing collides.
    let mut hash: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let running = running_uids();
    let start = hash % UID_COUNT;
    (0..UID_COUNT)
        .map(|i| UID_BASE + (start + i) % UID_COUNT)
        .find(|uid| !running.contains(uid) && !taken.contains(uid))
        .unwrap_or(UID_BASE + start)
}

/// Owners of the /proc/PID directories (each process's effective uid).
fn running_uids() -> std::collections::HashSet<u32> {
    let mut uids = std::collections::HashSet::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let is_pid = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if is_pid && let Ok(meta) = entry.metadata() {
                uids.insert(meta.uid());
            }
        }
    }
    uids
}

// ------------------------------------------------------------------ fds

/// Closes every descriptor from 3 up except those in `keep` (descriptors the
/// spec hands over), so nothing the spawner leaked stays open in the VMM.
pub fn close_inherited_fds(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 3).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from: u32 = 3;
    for fd in keep {
        let fd = fd as u32;
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd + 1;
    }
    close_range(from, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors; the ones closed here are
    // not owned by any Rust object yet (this runs before the VMM opens anything).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    if rc < 0 {
        // Kernels before 5.9: close one by one what /proc/self/fd lists.
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let fds: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd >= first && *fd <= last)
            .collect();
        for fd in fds {
            // SAFETY: as above; a descriptor that is already closed gives EBADF.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

// ------------------------------------------------------------------ cgroups

/// Resource limits of one VMM's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    /// CPU time per 100 ms period, in microseconds (`cpu.max` quota).
    pub cpu_quota_us: u64,
    /// Memory in bytes (`memory.max`).
    pub memory_bytes: u64,
    /// Tasks (threads) at most (`pids.max`).
    pub tasks: u64,
}

/// The CFS period the CPU quota is given for.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Memory the VMM needs beyond guest RAM: its binary, heap, thread stacks,
/// KVM's page tables and the page cache of disk and console writes it is
/// charged for. Measured at about 2 MiB for an idle echo guest (docs/vmm.md);
/// the rest is headroom for I/O bursts and larger guests' page tables.
pub const MEMORY_OVERHEAD_MIB: u64 = 64;
/// Tasks beyond one per vCPU: main, devices, watchdog, control, and two per
/// console or control client.
pub const EXTRA_TASKS: u64 = 64;

impl CgroupLimits {
    /// The limits of a VM of `cpus` vCPUs and `memory_mib` MiB.
    pub fn for_vm(cpus: u8, memory_mib: u64) -> CgroupLimits {
        CgroupLimits {
            cpu_quota_us: u64::from(cpus.max(1)) * CPU_PERIOD_US,
            memory_bytes: (memory_mib + MEMORY_OVERHEAD_MIB) << 20,
            tasks: u64::from(cpus) + EXTRA_TASKS,
        }
    }
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of every VMM's cgroup.
pub const CGROUP_PARENT: &str = "yunhe";
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Where this host's cgroup v2 hierarchy is, if it has the cpu, memory and
/// pids controllers: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
fn cgroup_v2_root() -> Option<PathBuf> {
    [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).is_ok_and(|text| {
                let have: Vec<&str> = text.split_whitespace().collect();
                CONTROLLERS.iter().all(|c| have.contains(c))
            })
        })
}

/// The directories of cgroup `name` below the yunhe parent: one for v2,
/// one per controller for v1 (those whose hierarchy is mounted).
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    match cgroup_v2_root() {
        Some(root) => vec![root.join(CGROUP_PARENT).join(name)],
        None => CONTROLLERS
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c))
            .filter(|d| d.join("cgroup.procs").exists())
            .map(|d| d.join(CGROUP_PARENT).join(name))
            .collect(),
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn check_cgroup_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad cgroup name {name:?}"),
        ));
    }
    Ok(())
}

/// A VMM's cgroup, made and limited by serve before the VMM starts.
#[derive(Debug)]
pub struct PreparedCgroup {
    /// cgroup v2: the directory, open for clone3's `CLONE_INTO_CGROUP`, so
    /// the VMM is born in it ([`spawn_vmm`]). None for v1, where the VMM
    /// moves itself ([`join_cgroup`]).
    pub v2_dir: Option<OwnedFd>,
}

/// Creates cgroup `name` below the yunhe parent and sets `limits`, for a VMM
/// about to be started: serve calls this, then starts the VMM into it (v2)
/// or lets the VMM join it (v1). Errors are for the caller to log: the VMM
/// then runs without limits rather than not at all.
pub fn prepare_cgroup(name: &str, limits: CgroupLimits) -> io::Result<PreparedCgroup> {
    check_cgroup_name(name)?;
    if let Some(root) = cgroup_v2_root() {
        let parent = root.join(CGROUP_PARENT);
        std::fs::create_dir_all(&parent)?;
        let enable = "+cpu +memory +pids";
        write_file(&root.join("cgroup.subtree_control"), enable)?;
        write_file(&parent.join("cgroup.subtree_control"), enable)?;
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir)?;
        write_file(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", limits.cpu_quota_us),
        )?;
        write_file(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        // No swap for guest memory: a VM over its limit is reclaimed or killed.
        let _ = write_file(&dir.join("memory.swap.max"), "0");
        write_file(&dir.join("pids.max"), &limits.tasks.to_string())?;
        let open = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        return Ok(PreparedCgroup {
            v2_dir: Some(open.into()),
        });
    }
    let dirs = cgroup_dirs(name);
    if dirs.len() < CONTROLLERS.len() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "neither cgroup v2 with cpu, memory and pids nor their v1 hierarchies are mounted",
        ));
    }
    for dir in &dirs {
        std::fs::create_dir_all(dir)?;
        match dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
        {
            Some(c) if c == "cpu" => {
                write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write_file(
                    &dir.join("cpu.cfs_quota_us"),
                    &limits.cpu_quota_us.to_string(),
                )?;
            }
            Some(c) if c == "memory" => {
                write_file(
                    &dir.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
            }
            Some(c) if c == "pids" => {
                write_file(&dir.join("pids.max"), &limits.tasks.to_string())?;
            }
            _ => {}
        }
    }
    Ok(PreparedCgroup { v2_dir: None })
}

/// True when this process has only one thread (reading /proc/self/task).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

/// Puts the calling VMM into cgroup `name`, which serve made and limited
/// ([`prepare_cgroup`]).
///
/// * cgroup v2: the VMM was started in it (`CLONE_INTO_CGROUP`); nothing to
///   do unless that failed, when it writes itself into `cgroup.procs`.
/// * cgroup v1: a single-threaded VMM writes `0` ("the calling thread") into
///   each controller's `tasks`. A thread moving itself is the one migration
///   the kernel makes without write-locking `cgroup_threadgroup_rwsem`
///   (`cgroup_procs_write_start`), whose write side first waits for an RCU
///   grace period: writing the pid into `cgroup.procs` took 6–13 ms here, the
///   `tasks` write 0.02–0.08 ms. With one thread, thread and process are the
///   same: every thread the VMM creates later, and its memory (charged to
///   the cgroup of the mm's owner, this thread), are in the cgroup.
pub fn join_cgroup(name: &str) -> io::Result<()> {
    check_cgroup_name(name)?;
    let dirs = cgroup_dirs(name);
    if let Some(dir) = dirs.first().filter(|_| cgroup_v2_root().is_some()) {
        let wanted = format!("/{CGROUP_PARENT}/{name}");
        let born_there = std::fs::read_to_string("/proc/self/cgroup").is_ok_and(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("0::"))
                .any(|path| path.ends_with(&wanted))
        });
        if !born_there {
            write_file(&dir.join("cgroup.procs"), "0")?;
        }
        return Ok(());
    }
    if dirs.len() < CONTROLLERS.len() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "neither cgroup v2 with cpu, memory and pids nor their v1 hierarchies are mounted",
        ));
    }
    // With other threads, moving only this one would leave them behind.
    let file = if single_threaded() {
        "tasks"
    } else {
        "cgroup.procs"
    };
    for dir in &dirs {
        write_file(&dir.join(file), "0")?;
    }
    Ok(())
}

/// Removes the VMM cgroups under the yunhe parent that hold no process and
/// were made more than `min_age` ago: those of VMMs killed together with
/// their serve (SIGKILL leaves nobody to remove them). The age keeps a
/// cgroup that a VMM is about to join. Returns how many were removed.
pub fn sweep_empty_cgroups(min_age: std::time::Duration) -> usize {
    let parents: Vec<PathBuf> = match cgroup_v2_root() {
        Some(root) => vec![root.join(CGROUP_PARENT)],
        None => CONTROLLERS
            .iter()
            .map(|c| Path::new(CGROUP_ROOT).join(c).join(CGROUP_PARENT))
            .collect(),
    };
    let mut removed = 0;
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let old_enough = entry
                .metadata()
                .ok()
                .filter(|m| m.is_dir())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            let empty = std::fs::read_to_string(dir.join("cgroup.procs"))
                .is_ok_and(|procs| procs.trim().is_empty());
            if old_enough && empty && std::fs::remove_dir(&dir).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Removes cgroup `name` once its processes are gone (retries for up to a
/// second while the last task is still being torn down).
pub fn remove_cgroup(name: &str) {
    if check_cgroup_name(name).is_err() {
        return;
    }
    for dir in cgroup_dirs(name) {
        for _ in 0..100 {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

// ------------------------------------------------------------------ the jail

/// Confines the calling VMM process as `jail` says (see the module
/// documentation). Must run before the process has any other thread.
/// Returns the process's pid as the host sees it.
pub fn enter(jail: &JailSpec) -> Result<u32, JailError> {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return Err(JailError::NotPidOne);
    }
    // The host's /proc still answers for the host's PID namespace.
    let host_pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or(1);
    if let Some(name) = &jail.cgroup
        && let Err(e) = join_cgroup(name)
    {
        eprintln!("yunhe vmm: no cgroup limits: {e}");
    }
    // `stats` reports the VMM's RSS from /proc/self/statm, which the new root lacks.
    if let Ok(statm) = std::fs::File::open("/proc/self/statm") {
        let _ = super::vm::STATM.set(statm);
    }
    let kvm = std::fs::metadata("/dev/kvm").map_err(step("/dev/kvm"))?;
    let tun = std::fs::metadata("/dev/net/tun").ok();

    // SAFETY: unshare only changes this (single-threaded) process's namespaces.
    check(unsafe {
        libc::unshare(
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET,
        )
    } as libc::c_long)
    .map_err(step("unshare"))?;
    let hostname = b"yunhe-vmm";
    // SAFETY: the pointer and length describe `hostname`.
    check(unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } as libc::c_long)
        .map_err(step("sethostname"))?;
    // Nothing mounted from here on propagates to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(step("making / private"))?;

    let root = &jail.root_mount;
    std::fs::create_dir_all(root).map_err(step(format!("{}", root.display())))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )
    .map_err(step("mounting the root tmpfs"))?;

    // The server's directory, at its host path inside the root.
    let relative = jail
        .instance_dir
        .strip_prefix("/")
        .map_err(|_| JailError::BadPath(jail.instance_dir.display().to_string()))?;
    let inside = root.join(relative);
    std::fs::create_dir_all(&inside).map_err(step("creating the instance mount point"))?;
    mount(
        Some(path_str(&jail.instance_dir)?),
        &inside,
        None,
        libc::MS_BIND,
        None,
    )
    .map_err(step("binding the instance directory"))?;
    mount(
        None,
        &inside,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(step("remounting the instance directory"))?;

    // Device nodes: /dev/kvm always, /dev/net/tun when the host has one.
    std::fs::create_dir_all(root.join("dev/net")).map_err(step("creating /dev"))?;
    make_device(&root.join("dev/kvm"), kvm.rdev(), jail)?;
    if let Some(tun) = tun {
        make_device(&root.join("dev/net/tun"), tun.rdev(), jail)?;
    }

    // pivot_root(".", "."): the old root ends up stacked on the new one and is
    // then detached, leaving no path to the host's tree.
    std::env::set_current_dir(root).map_err(step("chdir to the new root"))?;
    // SAFETY: both arguments are NUL-terminated literals.
    match check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }) {
        Ok(_) => {
            // SAFETY: a NUL-terminated literal; detaching the old root only affects this namespace.
            check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } as libc::c_long)
                .map_err(step("detaching the old root"))?;
        }
        // A host running from its initramfs (rootfs: an appliance booted from
        // the network, the lab) has a root pivot_root cannot move (EINVAL).
        // Then, as switch_root does, the new root is moved over / and made the
        // process's root with chroot. The host's tree stays below it in this
        // mount namespace, with no path to it; getting out of a chroot takes
        // CAP_SYS_CHROOT, which drop_privileges removes with every other one.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && root_is_rootfs() => {
            mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)
                .map_err(step("moving the new root over the initramfs"))?;
            // SAFETY: a NUL-terminated literal; chroot changes only this process's root.
            check(unsafe { libc::chroot(c".".as_ptr()) } as libc::c_long)
                .map_err(step("chroot into the new root"))?;
        }
        Err(e) => return Err(step("pivot_root")(e)),
    }
    std::env::set_current_dir("/").map_err(step("chdir /"))?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        None,
    )
    .map_err(step("making the root read-only"))?;

    drop_privileges(jail.uid, jail.gid)?;
    Ok(host_pid)
}

/// Whether this process's root is the initramfs (`rootfs`), which pivot_root
/// refuses to move: the last mount on `/` in /proc/self/mountinfo is the one
/// the process sees.
fn root_is_rootfs() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| mountinfo_root_is_rootfs(&m))
}

fn mountinfo_root_is_rootfs(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split_once(" - "))
        .is_some_and(|(_, fs)| fs.split(' ').next() == Some("rootfs"))
}

fn path_str(p: &Path) -> Result<&str, JailError> {
    p.to_str()
        .ok_or_else(|| JailError::BadPath(p.display().to_string()))
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let cs = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let source = source.map(cs).transpose()?;
    let fstype = fstype.map(cs).transpose()?;
    let data = data.map(cs).transpose()?;
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // lives until the call returns.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    } as libc::c_long)
    .map(|_| ())
}

fn make_device(path: &Path, rdev: u64, jail: &JailSpec) -> Result<(), JailError> {
    let c = cstring(path)?;
    // SAFETY: `c` is a NUL-terminated path; mknod creates one character device node.
    check(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, rdev) } as libc::c_long)
        .map_err(step(format!("mknod {}", path.display())))?;
    // SAFETY: as above; chown changes the owner of the node just created.
    check(unsafe { libc::chown(c.as_ptr(), jail.uid, jail.gid) } as libc::c_long)
        .map_err(step(format!("chown {}", path.display())))?;
    Ok(())
}

/// Linux capability numbers go up to CAP_LAST_CAP (40 on 6.x); the loop
/// below asks for more and stops at the first the kernel does not know.
const MAX_CAPABILITY: libc::c_ulong = 63;

/// Empties the bounding and ambient sets, switches to `uid`/`gid` with no
/// supplementary groups (which clears the permitted and effective sets),
/// clears the inheritable set and sets no-new-privileges.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), JailError> {
    for cap in 0..=MAX_CAPABILITY {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the last capability this kernel knows
            }
            return Err(JailError::Step(format!("dropping capability {cap}"), e));
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } as libc::c_long)
    .map_err(step("clearing ambient capabilities"))?;
    // SAFETY: an empty list: no pointer is read.
    check(unsafe { libc::setgroups(0, std::ptr::null()) } as libc::c_long)
        .map_err(step("setgroups"))?;
    // SAFETY: setresgid/setresuid take plain ids.
    check(unsafe { libc::setresgid(gid, gid, gid) } as libc::c_long).map_err(step("setresgid"))?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(uid, uid, uid) } as libc::c_long).map_err(step("setresuid"))?;
    clear_capabilities()?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as libc::c_long)
        .map_err(step("PR_SET_NO_NEW_PRIVS"))?;
    Ok(())
}

/// capset with all three sets empty (version 3: two 32-bit words per set).
fn clear_capabilities() -> Result<(), JailError> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are the layouts capset(2) reads for version 3.
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    })
    .map_err(step("capset"))?;
    Ok(())
}

// ------------------------------------------------------------------ spawning

/// A VMM process started by [`spawn_vmm`]: its pid and a pidfd to wait on.
pub struct VmmProcess {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// Why it was not started in the cgroup it was given (clone3 refused
    /// `CLONE_INTO_CGROUP`; the VMM then joins by itself): None when it was
    /// or when none was given.
    pub cgroup_refused: Option<io::Error>,
}

/// `CLONE_INTO_CGROUP` from linux/sched.h (Linux 5.7): start the child in the
/// cgroup v2 directory `clone_args.cgroup` names (libc's constant is an
/// overflowing `c_int`).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Starts `exe args...` with the given standard descriptors, as pid 1 of a
/// new PID namespace when `new_pid_namespace`, and returns its pid and a
/// pidfd. With `cgroup` (an open cgroup v2 directory) the child starts in
/// that cgroup, so it is never migrated (no wait on the cgroup lock); if the
/// kernel refuses that, the child starts in this process's cgroups and
/// [`VmmProcess::cgroup_refused`] says why. The child only calls
/// async-signal-safe functions between clone and exec (the parent is
/// multi-threaded).
pub fn spawn_vmm(
    exe: &Path,
    args: &[&OsStr],
    stdin: &OwnedFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    new_pid_namespace: bool,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<VmmProcess> {
    let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let exe_c = CString::new(exe.as_os_str().as_bytes()).map_err(invalid)?;
    let mut argv_c = vec![exe_c.clone()];
    for a in args {
        argv_c.push(CString::new(a.as_bytes()).map_err(invalid)?);
    }
    let env_c: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let fds = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
    let child = Exec {
        fds: &fds,
        exe: exe_c.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    let mut cgroup_refused = None;
    if let Some(dir) = cgroup {
        match clone_and_exec(&child, new_pid_namespace, Some(dir)) {
            Ok((pid, pidfd)) => {
                return Ok(VmmProcess {
                    pid,
                    pidfd,
                    cgroup_refused,
                });
            }
            Err(e) => cgroup_refused = Some(e),
        }
    }
    let (pid, pidfd) = clone_and_exec(&child, new_pid_namespace, None)?;
    Ok(VmmProcess {
        pid,
        pidfd,
        cgroup_refused,
    })
}

/// What the child of [`clone_and_exec`] runs: pointers into memory the
/// caller of [`spawn_vmm`] keeps alive.
struct Exec<'a> {
    fds: &'a [RawFd; 3],
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

/// The stack the child of [`clone_and_exec`] runs on until its execve: it
/// shares serve's memory (`CLONE_VM`), so it cannot use the stack of the
/// thread that cloned it. The child only calls a handful of system call
/// wrappers; 64 KiB is far more than they use.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// One clone3 of [`spawn_vmm`]: the child execs `child`, the parent gets the
/// child's pid and pidfd.
///
/// The child shares this address space until its execve (`CLONE_VM |
/// CLONE_VFORK`, as `posix_spawn` does) instead of getting a copy of it: a
/// copy (fork) costs a copy of serve's page tables for every VMM and then a
/// copy-on-write fault for every page serve writes afterwards, 500–700
/// minor faults per VMM in a launch burst (docs/performance.md). The calling
/// thread waits until the child has exec'd or exited; other threads go on.
/// Every signal is blocked across the clone, so no handler of serve's ever
/// runs on the child's stack; the child puts every handled signal back to
/// its default before it unblocks them (what `posix_spawn` does).
fn clone_and_exec(
    child: &Exec<'_>,
    new_pid_namespace: bool,
    cgroup: Option<BorrowedFd<'_>>,
) -> io::Result<(i32, OwnedFd)> {
    let mut flags = (libc::CLONE_PIDFD | libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    if new_pid_namespace {
        flags |= libc::CLONE_NEWPID as u64;
    }
    if cgroup.is_some() {
        flags |= CLONE_INTO_CGROUP;
    }
    // u128 elements: the stack's base, and so its top, is 16-byte aligned,
    // as the x86-64 ABI wants at a call.
    let mut stack = vec![0u128; CHILD_STACK_BYTES / std::mem::size_of::<u128>()];
    let mut pidfd: libc::c_int = -1;
    let mut args = libc::clone_args {
        flags,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: (stack.len() * std::mem::size_of::<u128>()) as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
    };
    // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask only
    // write into the sets given.
    let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    // SAFETY: `args` is a valid clone_args whose stack is `stack`, alive and
    // unused until this returns: with CLONE_VFORK the call returns in the
    // parent only once the child has exec'd (or exited), so nothing of the
    // child runs on it afterwards. `child` outlives the call for the same
    // reason; vfork_child only calls async-signal-safe functions on it.
    let pid = unsafe {
        clone3_on_stack(
            &mut args,
            vfork_child,
            child as *const Exec<'_> as *const libc::c_void,
        )
    };
    // SAFETY: restores this thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
    drop(stack);
    let pid = pid? as i32;
    // SAFETY: the kernel stored a fresh pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((pid, pidfd))
}

/// clone3 whose child starts on the stack `args` names and calls
/// `entry(arg)`, which never returns; in the parent the child's pid, or the
/// error clone3 returned.
///
/// # Safety
/// `args` must be a valid clone_args with a stack (lowest address and size,
/// the top 16-byte aligned) that nothing else uses while the child runs on
/// it; with `CLONE_VM` the child shares this address space, so `entry` may
/// only call async-signal-safe functions and must end in execve or _exit.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_on_stack(
    args: &mut libc::clone_args,
    entry: unsafe extern "C" fn(*const libc::c_void) -> !,
    arg: *const libc::c_void,
) -> io::Result<libc::c_long> {
    let ret: libc::c_long;
    // SAFETY: the raw clone3 system call (the caller vouches for `args`).
    // In the parent it returns like any syscall (rcx and r11 clobbered). The
    // child resumes after the same instruction with the registers copied
    // and rsp at the top of its own stack: it never returns from this
    // function (its stack holds no frame to return to), it calls `entry`
    // with the argument kept in r12, and `entry` never returns (ud2 traps if
    // it ever did). The child's frame pointer is cleared so no unwinder walks
    // into the parent's stack.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut libc::clone_args,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret)
}

/// The child of [`clone_and_exec`], on its own stack in serve's memory.
///
/// # Safety
/// `arg` points to the parent's [`Exec`], alive while the parent is
/// suspended (`CLONE_VFORK`).
unsafe extern "C" fn vfork_child(arg: *const libc::c_void) -> ! {
    // SAFETY: the caller's guarantee.
    let child = unsafe { &*(arg as *const Exec<'_>) };
    // SAFETY: only async-signal-safe calls on memory prepared by spawn_vmm,
    // then execve or _exit; it never returns into Rust code.
    unsafe { exec_child(child.fds, child.exe, child.argv, child.envp) }
}

/// The child side of [`spawn_vmm`]: every signal is blocked on entry.
///
/// # Safety
/// Only to be called in the child right after clone; all pointers must be
/// valid NUL-terminated strings / NULL-terminated arrays.
unsafe fn exec_child(
    fds: &[RawFd; 3],
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // SAFETY: dup2, sigaction, sigprocmask, execve and _exit are
    // async-signal-safe system call wrappers; the caller guarantees the
    // pointers. Without CLONE_SIGHAND the child's handler table is its own
    // copy, so resetting it leaves serve's handlers alone.
    unsafe {
        for (target, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                libc::_exit(127);
            }
        }
        // A handler of serve's must not run here (it would run on serve's
        // memory from this stack): every handled signal back to its default
        // while all are blocked; ignored ones stay ignored (execve keeps
        // them), except SIGPIPE, which the VMM expects at its default.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=libc::SIGRTMAX() {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let ignored = current.sa_sigaction == libc::SIG_IGN && signal != libc::SIGPIPE;
            if current.sa_sigaction != libc::SIG_DFL && !ignored {
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(exe, argv, envp);
        libc::_exit(127)
    }
}

/// Waits (without blocking a thread) until the process behind `pidfd` exits
/// and reaps it: its exit code, or None when a signal ended it.
pub async fn wait_exit(pidfd: OwnedFd) -> io::Result<Option<i32>> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, so the descriptor stays
    // open and the same until the AsyncFd is dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)?;
    let _ready = fd.readable().await?;
    const P_PIDFD: libc::idtype_t = 3;
    // SAFETY: siginfo_t is plain data the kernel fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`; the pidfd is open (owned by `fd`).
    let rc = unsafe {
        libc::waitid(
            P_PIDFD,
            fd.get_ref().as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        )
    };
    check(rc as libc::c_long)?;
    // SAFETY: after waitid with WEXITED the status field is set.
    let status = unsafe { info.si_status() };
    Ok((info.si_code == libc::CLD_EXITED).then_some(status))
}

/// Checks that `dir` is a directory (not a symlink) owned by this process's
/// user and writable by nobody else: a socket directory someone else created
/// first, or may write into, could let them intercept or replace the sockets.
pub fn check_private_dir(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} {why}; remove it or fix its owner and mode",
                dir.display()
            ),
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("is not a directory".into());
    }
    if meta.uid() != me {
        return refuse(format!("is owned by uid {}, not {me}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn rootfs_root_is_recognised_from_mountinfo() {
        // the lab: booted from its initramfs
        let lab = "1 1 0:2 / / rw - rootfs rootfs rw,size=1468408k\n\
                   22 1 0:20 / /proc rw,nosuid,nodev,noexec - proc proc rw\n\
                   25 1 0:23 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw\n";
        assert!(mountinfo_root_is_rootfs(lab));
        // a disk-booted host
        let host = "29 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    30 29 0:5 / /dev rw,nosuid - devtmpfs udev rw\n";
        assert!(!mountinfo_root_is_rootfs(host));
        // an initramfs that switched root: the last mount on / counts
        let switched = "1 1 0:2 / / rw - rootfs rootfs rw\n\
                        40 1 0:30 / / rw - tmpfs tmpfs rw\n";
        assert!(!mountinfo_root_is_rootfs(switched));
        assert!(!mountinfo_root_is_rootfs(""));
    }

    #[test]
    fn limits_follow_the_flavor() {
        let l = CgroupLimits::for_vm(2, 512);
        assert_eq!(l.cpu_quota_us, 200_000);
        assert_eq!(l.memory_bytes, (512 + MEMORY_OVERHEAD_MIB) << 20);
        assert_eq!(l.tasks, 2 + EXTRA_TASKS);
    }

    #[test]
    fn uids_stay_in_the_range_and_avoid_taken_ones() {
        let none = std::collections::HashSet::new();
        let a = pick_uid("3f2a0c1e-0000-4000-8000-000000000001", &none);
        assert!((UID_BASE..UID_BASE + UID_COUNT).contains(&a));
        assert_eq!(a, pick_uid("3f2a0c1e-0000-4000-8000-000000000001", &none));
        let taken: std::collections::HashSet<u32> = [a].into_iter().collect();
        let b = pick_uid("3f2a0c1e-0000-4000-8000-000000000001", &taken);
        assert_ne!(a, b);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// `sleep 30` started by spawn_vmm in `cgroup`; the caller kills it.
    fn spawn_sleep(cgroup: Option<BorrowedFd<'_>>) -> VmmProcess {
        let null = |write: bool| -> OwnedFd {
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .open("/dev/null")
                .expect("/dev/null")
                .into()
        };
        spawn_vmm(
            Path::new("/bin/sleep"),
            &["30".as_ref()],
            &null(false),
            &null(true),
            &null(true),
            false,
            cgroup,
        )
        .expect("spawn sleep")
    }

    fn kill_and_reap(pid: i32) {
        // SAFETY: kill and waitpid on a child this test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    /// The child's cgroup v2 path ("0::" line of /proc/PID/cgroup).
    fn v2_path(pid: i32) -> String {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .expect("cgroup")
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("")
            .to_string()
    }

    /// Runs `/bin/sh -c script` through spawn_vmm with stdout on a pipe:
    /// its output and exit status (None when there is no /bin/sh).
    fn spawn_shell(script: &str) -> Option<(String, i32)> {
        if !Path::new("/bin/sh").exists() {
            return None;
        }
        let mut ends = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into `ends`.
        let rc = unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0);
        // SAFETY: both are fresh descriptors owned by nothing else.
        let (read, write) =
            unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        let null: OwnedFd = std::fs::File::open("/dev/null").expect("/dev/null").into();
        let child = spawn_vmm(
            Path::new("/bin/sh"),
            &[
                "-c".as_ref(),
                script.as_ref(),
                "first one".as_ref(),
                "second".as_ref(),
            ],
            &null,
            &write,
            &write,
            false,
            None,
        )
        .expect("spawn sh");
        drop(write);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut out).expect("read");
        let mut status = 0;
        // SAFETY: waitpid on the child this test started.
        let reaped = unsafe { libc::waitpid(child.pid, &mut status, 0) };
        assert_eq!(reaped, child.pid);
        assert!(libc::WIFEXITED(status), "sh did not exit: {status:#x}");
        Some((out, libc::WEXITSTATUS(status)))
    }

    /// The child shares serve's memory until its execve: what it runs must
    /// be exactly what was asked, with the descriptors given, no signal
    /// blocked, SIGPIPE at its default (Rust ignores it in serve), and the
    /// caller's own signal mask unchanged afterwards.
    #[test]
    fn spawn_runs_the_program_with_its_arguments_descriptors_and_signals() {
        // SAFETY: sigset_t is plain data; the calls only touch these sets.
        let blocked_before = unsafe {
            let mut usr1: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut usr1);
            libc::sigaddset(&mut usr1, libc::SIGUSR1);
            libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, std::ptr::null_mut());
            usr1
        };
        let Some((out, status)) =
            spawn_shell("echo \"args=$0,$1\"; grep -E '^Sig(Blk|Ign)' /proc/self/status; exit 7")
        else {
            eprintln!("SKIPPED: needs /bin/sh");
            return;
        };
        // SAFETY: reads this thread's mask into `now`, then unblocks SIGUSR1.
        let still_blocked = unsafe {
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut now);
            let usr1 = libc::sigismember(&now, libc::SIGUSR1) == 1;
            let other = libc::sigismember(&now, libc::SIGUSR2) == 1;
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &blocked_before, std::ptr::null_mut());
            (usr1, other)
        };
        assert_eq!(status, 7, "{out}");
        assert!(out.contains("args=first one,second"), "{out}");
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
                .expect("field")
        };
        assert_eq!(
            field("SigBlk:"),
            0,
            "the child started with signals blocked: {out}"
        );
        let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(
            field("SigIgn:") & sigpipe_bit,
            0,
            "SIGPIPE ignored in the child: {out}"
        );
        assert_eq!(
            still_blocked,
            (true, false),
            "the caller's signal mask changed"
        );
    }

    /// A program that cannot be executed: the child exits 127 and serve's
    /// side goes on (its thread is not left suspended).
    #[test]
    fn spawn_of_a_missing_program_exits_127() {
        let null: OwnedFd = std::fs::File::open("/dev/null").expect("/dev/null").into();
        let child = spawn_vmm(
            Path::new("/nonexistent/yunhe-jail-test"),
            &[],
            &null,
            &null,
            &null,
            false,
            None,
        )
        .expect("clone itself works");
        let mut status = 0;
        // SAFETY: waitpid on the child this test started.
        let reaped = unsafe { libc::waitpid(child.pid, &mut status, 0) };
        assert_eq!(reaped, child.pid);
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 127);
    }

    /// CLONE_INTO_CGROUP itself: needs any cgroup v2 mount, with or without
    /// controllers (a hybrid host's /sys/fs/cgroup/unified will do).
    #[test]
    fn spawn_starts_the_child_in_the_cgroup_it_is_given() {
        let root = [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
            .iter()
            .map(PathBuf::from)
            .find(|r| r.join("cgroup.controllers").exists());
        let Some(root) = root.filter(|_| is_root() && Path::new("/bin/sleep").exists()) else {
            eprintln!("SKIPPED: needs root, /bin/sleep and a cgroup v2 mount");
            return;
        };
        let name = format!("yunhe-jail-test-{}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).expect("mkdir the test cgroup");
        let fd: OwnedFd = std::fs::File::open(&dir).expect("open the cgroup").into();
        let child = spawn_sleep(Some(fd.as_fd()));
        let path = v2_path(child.pid);
        let refused = child.cgroup_refused.as_ref().map(|e| e.to_string());
        kill_and_reap(child.pid);
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(refused, None, "clone3 refused the cgroup");
        assert_eq!(path, format!("/{name}"));
    }

    /// A descriptor clone3 refuses as a cgroup (here: a plain directory):
    /// the child starts anyway, outside it, and the refusal is reported.
    #[test]
    fn spawn_without_the_cgroup_when_clone3_refuses_it() {
        if !Path::new("/bin/sleep").exists() {
            eprintln!("SKIPPED: needs /bin/sleep");
            return;
        }
        let not_a_cgroup: OwnedFd = std::fs::File::open("/").expect("open /").into();
        let child = spawn_sleep(Some(not_a_cgroup.as_fd()));
        let refused = child.cgroup_refused.is_some();
        let mine = v2_path(std::process::id() as i32);
        let its = v2_path(child.pid);
        kill_and_reap(child.pid);
        assert!(refused, "clone3 took a plain directory as a cgroup");
        assert_eq!(its, mine, "the child is not in the parent's cgroup");
    }

    /// serve's side on a cgroup v2 host: the cgroup carries the limits before
    /// the VMM starts inside it.
    #[test]
    fn prepared_v2_cgroup_has_the_limits_and_the_child() {
        if cgroup_v2_root().is_none() || !is_root() || !Path::new("/bin/sleep").exists() {
            eprintln!(
                "SKIPPED: needs root, /bin/sleep and cgroup v2 with the cpu, memory and pids \
                 controllers (this host: {})",
                if cgroup_v2_root().is_none() {
                    "cgroup v2 lacks some of them"
                } else {
                    "not root or no /bin/sleep"
                }
            );
            return;
        }
        let name = format!("jail-test-{}", std::process::id());
        let limits = CgroupLimits::for_vm(2, 128);
        let cgroup = prepare_cgroup(&name, limits).expect("prepare the cgroup");
        let dir = cgroup_dirs(&name)[0].clone();
        let child = spawn_sleep(cgroup.v2_dir.as_ref().map(|fd| fd.as_fd()));
        let path = v2_path(child.pid);
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let (cpu, memory, pids) = (read("cpu.max"), read("memory.max"), read("pids.max"));
        kill_and_reap(child.pid);
        drop(cgroup);
        remove_cgroup(&name);
        assert_eq!(path, format!("/{CGROUP_PARENT}/{name}"));
        assert_eq!(cpu, "200000 100000");
        assert_eq!(memory, limits.memory_bytes.to_string());
        assert_eq!(pids, limits.tasks.to_string());
    }

    /// serve's side on a cgroup v1 host: every controller's directory exists
    /// with its limit before the VMM starts (and joins it by itself).
    #[test]
    fn prepared_v1_cgroup_has_the_limits() {
        if cgroup_v2_root().is_some() || cgroup_dirs("x").len() < CONTROLLERS.len() || !is_root() {
            eprintln!("SKIPPED: needs root and the cpu, memory and pids controllers on cgroup v1");
            return;
        }
        let name = format!("jail-test-{}", std::process::id());
        let limits = CgroupLimits::for_vm(1, 64);
        let cgroup = prepare_cgroup(&name, limits).expect("prepare the cgroup");
        assert!(cgroup.v2_dir.is_none());
        let read = |c: &str, f: &str| {
            std::fs::read_to_string(
                Path::new(CGROUP_ROOT)
                    .join(c)
                    .join(CGROUP_PARENT)
                    .join(&name)
                    .join(f),
            )
            .unwrap_or_default()
            .trim()
            .to_string()
        };
        let found = [
            read("cpu", "cpu.cfs_quota_us"),
            read("cpu", "cpu.cfs_period_us"),
            read("memory", "memory.limit_in_bytes"),
            read("pids", "pids.max"),
        ];
        remove_cgroup(&name);
        assert_eq!(
            found,
            [
                "100000".to_string(),
                "100000".to_string(),
                limits.memory_bytes.to_string(),
                limits.tasks.to_string()
            ]
        );
        assert!(
            cgroup_dirs(&name).iter().all(|d| !d.exists()),
            "not removed"
        );
    }

    #[test]
    fn cgroup_names_stay_below_the_parent() {
        for bad in ["", "a/b", "..", ".hidden"] {
            assert!(prepare_cgroup(bad, CgroupLimits::for_vm(1, 16)).is_err());
            assert!(join_cgroup(bad).is_err());
        }
    }

    #[test]
    fn private_dir_check_refuses_shared_directories() {
        let dir = std::env::temp_dir().join(format!("yunhe-jail-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(check_private_dir(&dir).is_ok());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(check_private_dir(&dir).is_err());
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(check_private_dir(&link).is_err());
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
