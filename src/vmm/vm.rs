//! One virtual machine: KVM VM with irqchip, guest memory, devices, vCPU
//! threads and the device/event thread.
//!
//! The parts: [`super::vmm_config`] says what to build, [`super::builder`] builds it
//! (`Vm::new`), [`super::vcpu`] runs the vCPU threads, [`super::persist`] saves a running VM;
//! this file holds the VM itself, starting it, its device thread and controls.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::memory::GuestMemoryMmap;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use serde::Serialize;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::boot::BootError;
use super::bus::{Bus, BusError, lock};
use super::console::Console;
use super::cpu::CpuError;
use super::devices::factory::FactoryError;
use super::devices::hotplug::HotplugHandle;
use super::devices::legacy::acpi_pm::{GED_POWER_BUTTON, GedTrigger};
use super::devices::legacy::boot_timer::BootTimes;
use super::devices::legacy::serial::SerialDevice;
use super::devices::legacy::{EventSender, VmEvent};
use super::devices::pci::{GsiRouting, PciRoot, PciRootError};
use super::devices::virtio::DeviceStats;
use super::devices::virtio::pci::VirtioPciDevice;
use super::snapshot::SnapshotError;
use super::vcpu::{
    RunState, VcpuContext, VcpuControl, VcpuSlot, VcpuStats, kick_handler, kick_signal, vcpu_loop,
};
use super::vmm_config::VmConfig;

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is not usable: {0}
    #[error("/dev/kvm is not usable: {0}")]
    Kvm(kvm_ioctls::Error),
    /// KVM refused {0}: {1}
    #[error("KVM refused {0}: {1}")]
    KvmCall(&'static str, kvm_ioctls::Error),
    /// {0} vCPUs requested; 1 to 64 are supported
    #[error("{0} vCPUs requested; 1 to 64 are supported")]
    CpuCount(u8),
    /// Boot: {0}
    #[error(transparent)]
    Boot(#[from] BootError),
    /// ACPI: {0}
    #[error(transparent)]
    Acpi(#[from] super::acpi::AcpiError),
    /// vCPU: {0}
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// Bus: {0}
    #[error(transparent)]
    Bus(#[from] BusError),
    /// PCI: {0}
    #[error(transparent)]
    Pci(#[from] PciRootError),
    /// Device {0}: {1}
    #[error("device {0}: {1}")]
    Device(String, String),
    /// Building the device models: {0}
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// Cannot open {0}: {1}
    #[error("cannot open {0}: {1}")]
    Open(String, std::io::Error),
    /// System call failed: {0}
    #[error("system call failed: {0}")]
    Io(#[from] std::io::Error),
    /// Save/restore: {0}
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// Disk boot: {0}
    #[error("disk boot: {0}")]
    DiskBoot(String),
}

/// A VM built and ready to run.
pub struct Vm {
    pub(super) config: VmConfig,
    pub(super) vm: Arc<VmFd>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) vcpus: Vec<VcpuFd>,
    pub(super) io_bus: Arc<Bus>,
    pub(super) mmio_bus: Arc<Bus>,
    pub(super) pci: Arc<Mutex<PciRoot>>,
    pub(super) routing: Arc<GsiRouting>,
    pub(super) hotplug: HotplugHandle,
    pub(super) serial: Arc<Mutex<SerialDevice>>,
    pub(super) console: Arc<Console>,
    pub(super) events_tx: EventSender,
    pub(super) events_rx: Receiver<VmEvent>,
    pub(super) ged: GedTrigger,
    pub(super) boot_times: BootTimes,
    // Keep the KVM handle and irqfds alive as long as the VM.
    pub(super) _kvm: Kvm,
    pub(super) _irqfds: Vec<Arc<EventFd>>,
}

impl Vm {
    /// Starts the vCPU threads and the device thread.
    pub fn start(self) -> Result<RunningVm, VmError> {
        // SAFETY-free: registering a no-op handler for the kick signal.
        vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| VmError::Io(std::io::Error::from_raw_os_error(e.errno())))?;
        let control = Arc::new(VcpuControl {
            state: Mutex::new(RunState::Running),
            cv: Condvar::new(),
            parked: Mutex::new(0),
            parked_cv: Condvar::new(),
        });
        let stop_fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let device_thread = {
            let pci = self.pci.clone();
            let stop = stop_fd.clone();
            thread("yunhe-devices").spawn(move || device_loop(&pci, &stop))?
        };
        let mut vcpu_stats = Vec::new();
        let mut saved = Vec::new();
        let mut threads = Vec::new();
        let count = self.vcpus.len();
        for (id, vcpu) in self.vcpus.into_iter().enumerate() {
            let stats = Arc::new(VcpuStats::default());
            vcpu_stats.push(stats.clone());
            let slot: VcpuSlot = Arc::new(Mutex::new(None));
            saved.push(slot.clone());
            let ctx = VcpuContext {
                saved: slot,
                id,
                io: self.io_bus.clone(),
                mmio: self.mmio_bus.clone(),
                mem: self.mem.clone(),
                control: control.clone(),
                events: self.events_tx.clone(),
                stats,
                count,
            };
            threads.push(thread(&format!("yunhe-vcpu{id}")).spawn(move || vcpu_loop(vcpu, ctx))?);
        }
        Ok(RunningVm {
            config: self.config,
            saved,
            vm: self.vm,
            mem: self.mem,
            pci: self.pci,
            routing: self.routing,
            hotplug: self.hotplug,
            hotplug_lock: Mutex::new(()),
            serial: self.serial,
            console: self.console,
            events_rx: Mutex::new(self.events_rx),
            events_tx: self.events_tx,
            ged: self.ged,
            boot_times: self.boot_times,
            control,
            threads: Mutex::new(threads),
            vcpu_stats,
            device_thread: Mutex::new(Some(device_thread)),
            stop_fd,
            stopped: AtomicBool::new(false),
            _irqfds: self._irqfds,
            _kvm: self._kvm,
        })
    }
}

const STOP_TOKEN: u64 = u64::MAX;
const BACKEND_FLAG: u64 = 1 << 40;

const CHANGED_TOKEN: u64 = u64::MAX - 1;

/// What the device thread watches: queue-notify eventfds and backend fds of the plugged devices.
#[derive(Default)]
struct Watched {
    fds: Vec<(Arc<EventFd>, usize, u16)>,
    devices: Vec<Arc<Mutex<VirtioPciDevice>>>,
    backends: Vec<std::os::fd::RawFd>,
}

impl Watched {
    /// Registers every plugged device's fds with `epoll`.
    fn load(pci: &Arc<Mutex<PciRoot>>, epoll: &Epoll) -> Self {
        let mut w = Watched::default();
        let root = lock(pci);
        for (i, (_, slot)) in root.slots().enumerate() {
            w.devices.push(slot.device.clone());
            for (fd, q) in &slot.notify {
                w.fds.push((fd.clone(), i, *q));
            }
            if let Some(backend) = lock(&slot.device).backend_fd() {
                let ev = EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    BACKEND_FLAG | i as u64,
                );
                let _ = epoll.ctl(ControlOperation::Add, backend, ev);
                w.backends.push(backend);
            }
        }
        for (n, (fd, _, _)) in w.fds.iter().enumerate() {
            let _ = epoll.ctl(
                ControlOperation::Add,
                fd.as_raw_fd(),
                EpollEvent::new(EventSet::IN, n as u64),
            );
        }
        w
    }

    /// Unregisters everything (while the fds are still open: this holds them).
    fn unload(self, epoll: &Epoll) {
        for (fd, _, _) in &self.fds {
            let _ = epoll.ctl(
                ControlOperation::Delete,
                fd.as_raw_fd(),
                EpollEvent::default(),
            );
        }
        for fd in &self.backends {
            let _ = epoll.ctl(ControlOperation::Delete, *fd, EpollEvent::default());
        }
    }
}

fn device_loop(pci: &Arc<Mutex<PciRoot>>, stop: &EventFd) {
    let Ok(epoll) = Epoll::new() else {
        eprintln!("yunhe vmm: cannot create the device epoll");
        return;
    };
    let changed = lock(pci).changed_fd();
    let _ = changed.read();
    let mut watched = Watched::load(pci, &epoll);
    let _ = epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, STOP_TOKEN),
    );
    let _ = epoll.ctl(
        ControlOperation::Add,
        changed.as_raw_fd(),
        EpollEvent::new(EventSet::IN, CHANGED_TOKEN),
    );
    if let Err(e) = super::seccomp::install(super::seccomp::ThreadKind::Devices) {
        eprintln!("yunhe vmm: {e}");
        return;
    }
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("yunhe vmm: device epoll failed: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            let token = ev.data();
            if token == STOP_TOKEN {
                return;
            }
            if token == CHANGED_TOKEN {
                // A device was plugged or unplugged: watch the bus as it is now (the rest of
                // this batch's tokens may name the old list; they are dropped).
                let _ = changed.read();
                std::mem::take(&mut watched).unload(&epoll);
                watched = Watched::load(pci, &epoll);
                break;
            }
            if token & BACKEND_FLAG != 0 {
                if let Some(d) = watched.devices.get((token & !BACKEND_FLAG) as usize) {
                    lock(d).process_backend();
                }
                continue;
            }
            if let Some((fd, dev, q)) = watched.fds.get(token as usize) {
                let _ = fd.read();
                if let Some(d) = watched.devices.get(*dev) {
                    lock(d).process_queue(*q);
                }
            }
        }
    }
}

/// Statistics of one device.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceStatsReport {
    /// The device's name.
    pub name: String,
    /// Requests completed.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Bytes the guest sent.
    pub bytes_from_guest: u64,
    /// Bytes written into the guest.
    pub bytes_to_guest: u64,
    /// A disk's capacity in bytes, as the guest is told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
}

/// Statistics of the VM (`stats` on the control socket).
#[derive(Clone, Debug, Serialize)]
pub struct VmStats {
    /// Seconds each vCPU spent in the guest (inside KVM_RUN).
    pub vcpu_seconds: Vec<f64>,
    /// Exits to the VMM per vCPU.
    pub vcpu_exits: Vec<u64>,
    /// Guest memory resident on the host (touched), bytes.
    pub guest_memory_touched: u64,
    /// The VMM process's resident set, bytes.
    pub vmm_rss: u64,
    /// Per device.
    pub devices: Vec<DeviceStatsReport>,
    /// Serial output bytes.
    pub console_bytes: u64,
    /// Boot-timer records: (value, ms since VMM start).
    pub boot_times: Vec<(u8, f64)>,
}

/// A VM whose vCPUs run.
pub struct RunningVm {
    pub(super) config: VmConfig,
    pub(super) saved: Vec<VcpuSlot>,
    pub(super) vm: Arc<VmFd>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) pci: Arc<Mutex<PciRoot>>,
    pub(super) routing: Arc<GsiRouting>,
    pub(super) hotplug: HotplugHandle,
    /// One hotplug request at a time (a removal waits for the guest without holding the bus).
    pub(super) hotplug_lock: Mutex<()>,
    pub(super) serial: Arc<Mutex<SerialDevice>>,
    console: Arc<Console>,
    events_rx: Mutex<Receiver<VmEvent>>,
    events_tx: EventSender,
    pub(super) ged: GedTrigger,
    boot_times: BootTimes,
    control: Arc<VcpuControl>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    vcpu_stats: Vec<Arc<VcpuStats>>,
    device_thread: Mutex<Option<JoinHandle<()>>>,
    stop_fd: Arc<EventFd>,
    stopped: AtomicBool,
    _irqfds: Vec<Arc<EventFd>>,
    _kvm: Kvm,
}

impl RunningVm {
    /// Waits for the next VM event (power off, reset, crash); when the guest has run for
    /// [`SETTLE`] without one, gives back the resident pages of the code and read-only data
    /// that building and booting the VM touched ([`release_read_only_image`]), and again every
    /// [`RELEASE_EVERY`] while it runs, so an idle VMM keeps resident only what it runs
    /// afterwards.
    ///
    /// Once is not enough for a Linux guest: its boot goes on well past [`SETTLE`] (seconds on
    /// hardware, tens of seconds under emulated SVM) and faults back in the device models'
    /// set-up code (virtio feature negotiation, queue set-up, PCI and ACPI reads), which the
    /// guest then never runs again. A release costs a `madvise` over the mapped pages; the code
    /// the VMM still runs comes back with a minor fault per 64 KiB, a few dozen every
    /// [`RELEASE_EVERY`].
    pub fn wait_settled(&self) -> VmEvent {
        let mut quiet = SETTLE;
        loop {
            match lock(&self.events_rx).recv_timeout(quiet) {
                Ok(event) => return event,
                Err(RecvTimeoutError::Disconnected) => {
                    return VmEvent::Crash("all vCPUs are gone".into());
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            release_read_only_image();
            quiet = RELEASE_EVERY;
        }
    }

    /// Waits at most `timeout` for a VM event.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<VmEvent> {
        lock(&self.events_rx).recv_timeout(timeout).ok()
    }

    /// A sender that injects events (the control socket's `stop` and `reset`).
    pub fn event_sender(&self) -> EventSender {
        self.events_tx.clone()
    }

    /// Feeds user input to COM1; returns how many bytes it took.
    pub fn serial_input(&self, bytes: &[u8]) -> usize {
        lock(&self.serial).input(bytes)
    }

    /// Presses the ACPI power button.
    pub fn power_button(&self) -> std::io::Result<()> {
        self.ged.raise(GED_POWER_BUTTON)
    }

    /// Interrupts every vCPU's KVM_RUN once.
    pub fn kick_all(&self) {
        for t in lock(&self.threads).iter() {
            // SAFETY: the pthread handle is live (the JoinHandle is owned here); the
            // signal has a no-op handler that only interrupts KVM_RUN.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
    }

    /// Pauses every vCPU (returns once all are parked or after 2 s).
    pub fn pause(&self) {
        *lock(&self.control.state) = RunState::Paused;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            self.kick_all();
            let parked = lock(&self.control.parked);
            let alive = lock(&self.threads)
                .iter()
                .filter(|t| !t.is_finished())
                .count();
            if *parked >= alive || Instant::now() > deadline {
                return;
            }
            let _ = self
                .control
                .parked_cv
                .wait_timeout(parked, Duration::from_millis(5));
        }
    }
    /// Resumes paused vCPUs.
    pub fn resume(&self) {
        *lock(&self.control.state) = RunState::Running;
        self.control.cv.notify_all();
    }

    /// Whether the vCPUs are paused.
    pub fn is_paused(&self) -> bool {
        *lock(&self.control.state) == RunState::Paused
    }

    /// Stops every thread (the guest is gone afterwards).
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        *lock(&self.control.state) = RunState::Stopping;
        self.control.cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        while lock(&self.threads).iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            self.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in lock(&self.threads).drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let _ = self.stop_fd.write(1);
        let device_thread = lock(&self.device_thread).take();
        if let Some(t) = device_thread {
            let _ = t.join();
        }
    }

    /// Counters for the control socket's `stats`.
    pub fn stats(&self) -> VmStats {
        let root = lock(&self.pci);
        let devices = root
            .slots()
            .map(|(_, s)| {
                let dev = lock(&s.device);
                let st: DeviceStats = dev.device().stats();
                DeviceStatsReport {
                    capacity: dev.device().capacity(),
                    name: s.name.clone(),
                    requests: st.requests,
                    errors: st.errors,
                    bytes_from_guest: st.bytes_from_guest,
                    bytes_to_guest: st.bytes_to_guest,
                }
            })
            .collect();
        VmStats {
            vcpu_seconds: self
                .vcpu_stats
                .iter()
                .map(|s| s.run_ns.load(Ordering::Relaxed) as f64 / 1e9)
                .collect(),
            vcpu_exits: self
                .vcpu_stats
                .iter()
                .map(|s| s.exits.load(Ordering::Relaxed))
                .collect(),
            guest_memory_touched: resident_bytes(&self.mem),
            vmm_rss: process_rss(),
            devices,
            console_bytes: self.console.total(),
            boot_times: lock(&self.boot_times).clone(),
        }
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Drops a stopped VM, and with it its guest memory, before the caller boots the next one
/// (a reset): waits up to 2 s for threads that still hold it for a moment (a control client,
/// the watchdog) so that the old RAM is unmapped when this returns.
pub fn release(vm: Arc<RunningVm>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut vm = vm;
    loop {
        match Arc::try_unwrap(vm) {
            Ok(last) => {
                drop(last);
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                vm = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => {
                eprintln!(
                    "yunhe vmm: the reset VM is still referenced: its memory stays until then"
                );
                return;
            }
        }
    }
}

/// Kicks every vCPU out of KVM_RUN every `period` while `vm` lives, so that
/// vCPUs stuck in an instruction the host never completes can be helped
/// ([`super::vcpu`] completes hypercalls stuck there).
///
/// It runs on every host for now. Turned off where the CPU probe finds a host
/// that runs guest code itself ([`super::cpu_probe`]), the lab's first compute
/// run locked a lab CPU inside KVM_RUN for minutes (docs/lab.md); the kicks are
/// not shown to matter there, but they were on in every run that passed.
pub fn start_watchdog(vm: &Arc<RunningVm>, period: Duration) {
    if std::env::var_os("YUNHE_VCPU_WATCHDOG").is_some_and(|v| v == "0") {
        return;
    }
    let weak = Arc::downgrade(vm);
    let _ = thread("yunhe-watchdog").spawn(move || {
        if let Err(e) = super::seccomp::install(super::seccomp::ThreadKind::Watchdog) {
            eprintln!("yunhe vmm: {e}");
            return;
        }
        loop {
            std::thread::sleep(period);
            match weak.upgrade() {
                Some(vm) if !vm.stopped.load(Ordering::SeqCst) && !vm.is_paused() => vm.kick_all(),
                Some(_) => {}
                None => return,
            }
        }
    });
}

/// The stack of every thread the VMM starts (vCPUs, devices, watchdog, control, console):
/// 1 MiB, where Rust's default is 2 MiB. A thread stack of exactly 2 MiB that the kernel happens
/// to place on a 2 MiB boundary is backed by one transparent huge page on hosts with THP
/// `always` (Debian's kernels), so the first touch makes all 2 MiB resident: seen in the lab as a
/// 2,048 KiB anonymous mapping, 40 % of a Linux guest's VMM memory beyond guest RAM. A mapping
/// smaller than 2 MiB never gets a huge page. The VMM's threads keep no large buffers on the
/// stack (the largest are 4 KiB).
pub const THREAD_STACK: usize = 1 << 20;

/// A thread builder with the VMM's name and [`THREAD_STACK`].
pub fn thread(name: &str) -> std::thread::Builder {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
}

/// How long a guest runs before [`RunningVm::wait_settled`] gives back the start-up code's pages.
pub const SETTLE: Duration = Duration::from_secs(2);

/// How often [`RunningVm::wait_settled`] gives those pages back again while the guest runs.
pub const RELEASE_EVERY: Duration = Duration::from_secs(10);

/// Drops this process's mappings of the pages of its executable's read-only segments (code,
/// constants, unwind tables: every `PT_LOAD` without write permission) and hands the allocator's
/// free memory back to the kernel.
///
/// Parsing the spec, entering the jail and building and booting the VM run code (and fault in
/// the pages around it, 64 KiB at a time) that an idle VMM never runs again: about 9 MiB of a
/// lone VMM's RSS. The pages stay in the page cache (nothing is evicted; other VMMs and serve
/// keep theirs); the next instruction on a dropped page maps it again with a minor fault. Only
/// segments that cannot be written are dropped, so no data is lost: a private read-only page is
/// always the file's own content.
fn release_read_only_image() {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        _data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid `dl_phdr_info` whose `dlpi_phdr` points at
        // `dlpi_phnum` program headers, for the duration of this call.
        let (base, headers) = unsafe {
            let info = &*info;
            (
                info.dlpi_addr as usize,
                std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)),
            )
        };
        let page = 4096usize;
        for h in headers {
            if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_W != 0 {
                continue;
            }
            // Only whole pages inside the segment: a page shared with a writable neighbour stays.
            let start = (base + h.p_vaddr as usize).next_multiple_of(page);
            let end = (base + h.p_vaddr as usize + h.p_memsz as usize) / page * page;
            if end > start {
                // SAFETY: [start, end) lies inside a loaded read-only segment of this
                // executable; MADV_DONTNEED on a private file mapping that was never written
                // only drops page-table entries, and the pages fault back in from the file.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
        // The first object is the executable itself (static: the only one besides the vDSO).
        1
    }
    // SAFETY: the callback only reads what dl_iterate_phdr hands it; malloc_trim only returns
    // free heap memory to the kernel.
    unsafe {
        libc::dl_iterate_phdr(Some(each), std::ptr::null_mut());
        libc::malloc_trim(0);
    }
}

/// Bytes of guest memory resident on the host (mincore over each region).
pub fn resident_bytes(mem: &GuestMemoryMmap) -> u64 {
    let page = 4096usize;
    let mut total = 0u64;
    for r in mem.iter() {
        let len = r.len() as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: the region is a live mapping of `len` bytes; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(r.as_ptr().cast(), len, vec.as_mut_ptr()) };
        if rc == 0 {
            total += vec.iter().filter(|b| **b & 1 != 0).count() as u64 * page as u64;
        }
    }
    total
}

/// /proc/self/statm, opened before the jail hides /proc (jail.rs keeps it here).
pub static STATM: std::sync::OnceLock<File> = std::sync::OnceLock::new();

/// The process's resident set size in bytes.
pub fn process_rss() -> u64 {
    let text = match STATM.get() {
        Some(file) => {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 256];
            file.read_at(&mut buf, 0)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        None => std::fs::read_to_string("/proc/self/statm").ok(),
    };
    text.and_then(|s| {
        s.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
    })
    .map(|pages| pages * 4096)
    .unwrap_or(0)
}

/// Opens a console log file for appending, rotated and capped as
/// [`super::console::open_log`] says.
pub fn open_console_log(path: &std::path::Path) -> Result<File, VmError> {
    super::console::open_log(path).map_err(|e| VmError::Open(path.display().to_string(), e))
}
