//! One virtual machine: KVM VM with irqchip, guest memory, devices, vCPU
//! threads and the device/event thread.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_pit_config};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{self, BootEntry, BootError};
use super::bus::{Bus, BusError, lock};
use super::console::Console;
use super::cpu::{self, Completion, CpuError};
use super::devices::legacy::acpi_pm::{AcpiSleep, GED_POWER_BUTTON, Ged, GedTrigger};
use super::devices::legacy::boot_timer::{BootTimer, BootTimes};
use super::devices::legacy::i8042::I8042;
use super::devices::legacy::rtc::Rtc;
use super::devices::legacy::serial::SerialDevice;
use super::devices::legacy::{EventSender, VmEvent};
use super::devices::pci::{
    GsiRouting, MsixInterrupts, PciConfigIo, PciEcam, PciMmio, PciRoot, PciRootError,
};
use super::devices::virtio::DeviceStats;
use super::devices::virtio::pci::VirtioPciDevice;
use super::layout::*;
use super::snapshot::{self, SnapshotError, VcpuState, VmState};

/// The embedded probe guest (firmware/, built by build.rs).
pub static PROBE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.elf"));
/// The minimal PVH guest of the start-up benchmark (firmware/src/hello.rs).
pub static HELLO_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.elf"));
/// The echo guest (firmware/src/echo.rs): prints a ready line, echoes serial
/// input and powers off on the ACPI power button; idles in `hlt`.
pub static ECHO_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.elf"));

/// What the VM boots.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BootSource {
    /// A PVH ELF or bzImage.
    Kernel {
        /// Path of the image.
        path: PathBuf,
    },
    /// A PVH ELF firmware.
    Firmware {
        /// Path of the image.
        path: PathBuf,
    },
    /// The probe guest built into yunhe.
    Probe,
}

/// A disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DiskConfig {
    /// Raw image path.
    pub path: PathBuf,
    /// Attach read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Serial id the guest sees (defaults to the file name).
    #[serde(default)]
    pub serial: Option<String>,
    /// An already open file descriptor of the image, inherited from the spawner
    /// (used instead of opening `path`).
    #[serde(default)]
    pub fd: Option<i32>,
}

/// A network interface on a tap.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NetConfig {
    /// Name of an existing tap device.
    pub tap: String,
    /// MAC address; a random locally administered one when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// An already open tap file descriptor, inherited from the spawner (used
    /// instead of opening `tap`).
    #[serde(default)]
    pub fd: Option<i32>,
}

/// Everything needed to build a VM (also the `yunhe vmm` spec's `vm` part).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VmConfig {
    /// What to boot.
    pub boot: BootSource,
    /// Initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Guest memory, MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// vCPUs (1..=64).
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// Disks, in PCI slot order.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// Network interfaces.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Attach a virtio-rng.
    #[serde(default)]
    pub rng: bool,
    /// Console log file (size-capped).
    #[serde(default)]
    pub console_log: Option<PathBuf>,
    /// Print boot-timer records on stderr.
    #[serde(default)]
    pub log_boot_timer: bool,
}

fn default_memory() -> u64 {
    128
}
fn default_cpus() -> u8 {
    1
}

/// The default Linux command line. (It once ended in `noapictimer=0`, which Linux reads as
/// `noapictimer`: no local APIC timer, so a guest's sleeps never ended.)
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

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
    /// Cannot open {0}: {1}
    #[error("cannot open {0}: {1}")]
    Open(String, std::io::Error),
    /// System call failed: {0}
    #[error("system call failed: {0}")]
    Io(#[from] std::io::Error),
    /// Save/restore: {0}
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Builds the virtio devices of `config` (blk, net, rng) as transport-independent models.
pub type DeviceFactory = fn(&VmConfig) -> Result<super::devices::factory::NamedDevices, VmError>;

/// Per-vCPU counters.
#[derive(Default)]
pub struct VcpuStats {
    /// Nanoseconds spent inside KVM_RUN.
    pub run_ns: AtomicU64,
    /// Exits to the VMM.
    pub exits: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    Paused,
    Stopping,
}

struct VcpuControl {
    state: Mutex<RunState>,
    cv: Condvar,
    parked: Mutex<usize>,
    parked_cv: Condvar,
}

/// A VM built and ready to run.
pub struct Vm {
    config: VmConfig,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    pci: Arc<Mutex<PciRoot>>,
    device_names: Vec<String>,
    serial: Arc<Mutex<SerialDevice>>,
    console: Arc<Console>,
    events_tx: EventSender,
    events_rx: Receiver<VmEvent>,
    ged: GedTrigger,
    boot_times: BootTimes,
    // Keep the KVM handle and irqfds alive as long as the VM.
    _kvm: Kvm,
    _irqfds: Vec<Arc<EventFd>>,
}

/// Print each vCPU's RIP when it is kicked (debugging aid: `YUNHE_TRACE_RIP=SECONDS`).
pub static TRACE_RIP: AtomicBool = AtomicBool::new(false);

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

impl Vm {
    /// Builds the VM: memory, kernel, ACPI, devices, vCPUs. `start` is when the VMM started.
    pub fn new(
        config: &VmConfig,
        console: Arc<Console>,
        devices: DeviceFactory,
        start: Instant,
        restore: Option<(&Path, &VmState)>,
    ) -> Result<Vm, VmError> {
        if config.cpus == 0 || config.cpus > 64 {
            return Err(VmError::CpuCount(config.cpus));
        }
        let kvm = Kvm::new().map_err(VmError::Kvm)?;
        let vm = Arc::new(
            kvm.create_vm()
                .map_err(|e| VmError::KvmCall("creating the VM", e))?,
        );
        vm.set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(|e| VmError::KvmCall("the TSS address", e))?;
        vm.create_irq_chip()
            .map_err(|e| VmError::KvmCall("the irqchip", e))?;
        vm.create_pit2(kvm_pit_config {
            flags: 1,
            ..Default::default()
        })
        .map_err(|e| VmError::KvmCall("the PIT", e))?;

        let mem = boot::create_memory(config.memory_mib)?;
        for (slot, region) in mem.iter().enumerate() {
            let r = kvm_bindings::kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the Vm keeps
            // for as long as the VM fd exists.
            unsafe { vm.set_user_memory_region(r) }
                .map_err(|e| VmError::KvmCall("guest memory", e))?;
        }

        // Kernel, command line, initrd, ACPI, boot protocol structures (or a saved state).
        let boot_entry = match restore {
            Some((dir, state)) => {
                snapshot::check_memory(dir, state, &mem)?;
                snapshot::load_memory(dir, state, &mem)?;
                None
            }
            None => Some(Self::load_boot(config, &mem)?),
        };

        // Legacy devices.
        let (events_tx, events_rx) = channel();
        let mut io_bus = Bus::default();
        let mut mmio_bus = Bus::default();
        let com1_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        vm.register_irqfd(&com1_irq, COM1_GSI)
            .map_err(|e| VmError::KvmCall("the COM1 irqfd", e))?;
        let ged_irq = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        vm.register_irqfd(&ged_irq, GED_GSI)
            .map_err(|e| VmError::KvmCall("the GED irqfd", e))?;
        let serial = match restore {
            Some((_, state)) => SerialDevice::from_state(
                console.clone(),
                com1_irq.clone(),
                &state.serial.to_state(),
            )
            .ok_or_else(|| VmError::Snapshot(SnapshotError::Corrupt("serial state".into())))?,
            None => SerialDevice::new(console.clone(), com1_irq.clone()),
        };
        let serial = Arc::new(Mutex::new(serial));
        io_bus.insert(serial.clone(), u64::from(COM1_PORT), 8)?;
        io_bus.insert(
            Arc::new(Mutex::new(I8042::new(events_tx.clone()))),
            u64::from(I8042_DATA_PORT),
            1,
        )?;
        io_bus.insert(
            Arc::new(Mutex::new(I8042Command(I8042::new(events_tx.clone())))),
            u64::from(I8042_COMMAND_PORT),
            1,
        )?;
        io_bus.insert(Arc::new(Mutex::new(Rtc::default())), u64::from(RTC_PORT), 2)?;
        let boot_times: BootTimes = Arc::default();
        io_bus.insert(
            Arc::new(Mutex::new(BootTimer::new(
                start,
                boot_times.clone(),
                config.log_boot_timer,
            ))),
            u64::from(BOOT_TIMER_PORT),
            1,
        )?;
        io_bus.insert(
            Arc::new(Mutex::new(AcpiSleep::new(events_tx.clone()))),
            u64::from(SLEEP_CONTROL_PORT),
            2,
        )?;
        let (ged, ged_trigger) = Ged::new(ged_irq.clone());
        io_bus.insert(Arc::new(Mutex::new(ged)), u64::from(GED_PORT), 1)?;

        // PCI.
        let pci = Arc::new(Mutex::new(PciRoot::new(vm.clone())));
        let routing = Arc::new(GsiRouting::new(vm.clone()));
        let mut next_gsi = FIRST_MSI_GSI;
        let mut device_names = Vec::new();
        let built = devices(config)?;
        if let Some((_, state)) = restore
            && state.devices.len() != built.len()
        {
            return Err(VmError::Snapshot(SnapshotError::Corrupt(
                "device count".into(),
            )));
        }
        for (slot, (name, dev)) in built.into_iter().enumerate() {
            let vectors = dev.queue_max_sizes().len() as u16 + 1;
            let sink = Arc::new(MsixInterrupts::new(
                &vm,
                routing.clone(),
                next_gsi,
                vectors,
            )?);
            next_gsi += u32::from(vectors);
            let bar0 = lock(&pci).next_bar0()?;
            let pdev = match restore.and_then(|(_, st)| st.devices.get(slot)) {
                Some(st) => VirtioPciDevice::restore(dev, mem.clone(), sink, st),
                None => VirtioPciDevice::new(dev, mem.clone(), sink, bar0),
            }
            .map_err(|e| VmError::Device(name.clone(), e.to_string()))?;
            lock(&pci).add(pdev)?;
            device_names.push(name);
        }
        io_bus.insert(
            Arc::new(Mutex::new(PciConfigIo(pci.clone()))),
            u64::from(PCI_CONFIG_PORT),
            8,
        )?;
        mmio_bus.insert(
            Arc::new(Mutex::new(PciEcam(pci.clone()))),
            ECAM_START,
            ECAM_SIZE,
        )?;
        mmio_bus.insert(
            Arc::new(Mutex::new(PciMmio(pci.clone()))),
            PCI_MMIO_START,
            PCI_MMIO_SIZE,
        )?;

        // vCPUs.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::KvmCall("the supported CPUID", e))?;
        let mut vcpus = Vec::with_capacity(config.cpus as usize);
        for id in 0..config.cpus {
            let vcpu = vm
                .create_vcpu(u64::from(id))
                .map_err(|e| VmError::KvmCall("a vCPU", e))?;
            let mut cpuid = supported.clone();
            cpu::filter_cpuid(&mut cpuid, id, config.cpus);
            cpu::configure_vcpu(&vcpu, &cpuid)?;
            match (restore, boot_entry) {
                (Some((_, state)), _) => state
                    .vcpus
                    .get(usize::from(id))
                    .ok_or_else(|| SnapshotError::Corrupt("vCPU count".into()))?
                    .apply(&vcpu)?,
                (None, Some(entry)) if id == 0 => cpu::setup_boot_vcpu(&vcpu, entry)?,
                _ => {}
            }
            vcpus.push(vcpu);
        }
        if let Some((_, state)) = restore {
            if state.vcpus.len() != vcpus.len() {
                return Err(VmError::Snapshot(SnapshotError::Corrupt(
                    "vCPU count".into(),
                )));
            }
            snapshot::apply_vm(&vm, state)?;
        }

        Ok(Vm {
            config: config.clone(),
            vm,
            mem,
            vcpus,
            io_bus: Arc::new(io_bus),
            mmio_bus: Arc::new(mmio_bus),
            pci,
            device_names,
            serial,
            console,
            events_tx,
            events_rx,
            ged: ged_trigger,
            boot_times,
            _kvm: kvm,
            _irqfds: vec![com1_irq, ged_irq],
        })
    }

    /// Loads the kernel or firmware, command line, initrd, ACPI tables and boot structures.
    fn load_boot(config: &VmConfig, mem: &GuestMemoryMmap) -> Result<BootEntry, VmError> {
        let loaded = match &config.boot {
            BootSource::Probe => boot::load_kernel(mem, &mut std::io::Cursor::new(PROBE_ELF))?,
            BootSource::Kernel { path } | BootSource::Firmware { path } => {
                let mut f =
                    File::open(path).map_err(|e| VmError::Open(path.display().to_string(), e))?;
                boot::load_kernel(mem, &mut f)?
            }
        };
        let cmdline = config.cmdline.clone().unwrap_or_else(|| match config.boot {
            BootSource::Kernel { .. } => DEFAULT_CMDLINE.to_string(),
            _ => String::new(),
        });
        boot::write_cmdline(mem, &cmdline)?;
        let initrd = match &config.initrd {
            Some(p) => {
                let mut f = File::open(p).map_err(|e| VmError::Open(p.display().to_string(), e))?;
                Some(boot::load_initrd(mem, &mut f, loaded.kernel_end)?)
            }
            None => None,
        };
        let rsdp = super::acpi::write_tables(mem, config.cpus)?;
        let map = boot::memory_map(mem);
        match loaded.entry {
            BootEntry::Pvh { .. } => boot::write_pvh(mem, &map, rsdp, initrd)?,
            BootEntry::Linux64 { .. } => {
                let p = boot::linux_boot_params(&loaded, &map, cmdline.len() + 1, rsdp, initrd);
                boot::write_linux64(mem, &p)?;
            }
        }
        boot::write_gdt(mem, &boot::gdt(loaded.entry))?;
        Ok(loaded.entry)
    }

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
            std::thread::Builder::new()
                .name("yunhe-devices".into())
                .spawn(move || device_loop(&pci, &stop))?
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
            threads.push(
                std::thread::Builder::new()
                    .name(format!("yunhe-vcpu{id}"))
                    .spawn(move || vcpu_loop(vcpu, ctx))?,
            );
        }
        Ok(RunningVm {
            config: self.config,
            saved,
            vm: self.vm,
            mem: self.mem,
            pci: self.pci,
            device_names: self.device_names,
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

/// i8042 command port adapter (offset 4 of the controller).
struct I8042Command(I8042);

impl super::bus::BusDevice for I8042Command {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        self.0.read(4, data);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.0.write(4, data);
    }
}

/// Where a paused vCPU leaves its state for `save`.
type VcpuSlot = Arc<Mutex<Option<Result<VcpuState, String>>>>;

struct VcpuContext {
    saved: VcpuSlot,
    id: usize,
    io: Arc<Bus>,
    mmio: Arc<Bus>,
    mem: GuestMemoryMmap,
    control: Arc<VcpuControl>,
    events: EventSender,
    stats: Arc<VcpuStats>,
    count: usize,
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

fn vcpu_loop(mut vcpu: VcpuFd, ctx: VcpuContext) {
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
/// completed as "not supported" (RAX = -KVM_ENOSYS, RIP past it). A working
/// host completes hypercalls at once, so it never trips this.
fn complete_stuck_hypercall(vcpu: &mut VcpuFd, ctx: &VcpuContext, last: &mut u64) {
    const KVM_ENOSYS: i64 = 1000;
    let Ok(mut regs) = vcpu.get_regs() else {
        return;
    };
    let stuck = regs.rip == *last;
    *last = regs.rip;
    if !stuck {
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

/// The registers that tell why a vCPU stopped (for the log of a triple fault).
fn describe_cpu_state(vcpu: &VcpuFd) -> String {
    let regs = vcpu.get_regs();
    let sregs = vcpu.get_sregs();
    match (regs, sregs) {
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

const STOP_TOKEN: u64 = u64::MAX;
const BACKEND_FLAG: u64 = 1 << 40;

fn device_loop(pci: &Arc<Mutex<PciRoot>>, stop: &EventFd) {
    let Ok(epoll) = Epoll::new() else {
        eprintln!("yunhe vmm: cannot create the device epoll");
        return;
    };
    let mut fds: Vec<(Arc<EventFd>, usize, u16)> = Vec::new();
    let mut devices = Vec::new();
    {
        let root = lock(pci);
        for (i, slot) in root.slots().iter().enumerate() {
            devices.push(slot.device.clone());
            for (fd, q) in &slot.notify {
                fds.push((fd.clone(), i, *q));
            }
            if let Some(backend) = lock(&slot.device).backend_fd() {
                let ev = EpollEvent::new(
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    BACKEND_FLAG | i as u64,
                );
                let _ = epoll.ctl(ControlOperation::Add, backend, ev);
            }
        }
    }
    for (n, (fd, _, _)) in fds.iter().enumerate() {
        let _ = epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, n as u64),
        );
    }
    let _ = epoll.ctl(
        ControlOperation::Add,
        stop.as_raw_fd(),
        EpollEvent::new(EventSet::IN, STOP_TOKEN),
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
            if token & BACKEND_FLAG != 0 {
                if let Some(d) = devices.get((token & !BACKEND_FLAG) as usize) {
                    lock(d).process_backend();
                }
                continue;
            }
            if let Some((fd, dev, q)) = fds.get(token as usize) {
                let _ = fd.read();
                if let Some(d) = devices.get(*dev) {
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
    config: VmConfig,
    saved: Vec<VcpuSlot>,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    pci: Arc<Mutex<PciRoot>>,
    device_names: Vec<String>,
    serial: Arc<Mutex<SerialDevice>>,
    console: Arc<Console>,
    events_rx: Mutex<Receiver<VmEvent>>,
    events_tx: EventSender,
    ged: GedTrigger,
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
    /// Waits for the next VM event (power off, reset, crash).
    pub fn wait(&self) -> VmEvent {
        lock(&self.events_rx)
            .recv()
            .unwrap_or(VmEvent::Crash("all vCPUs are gone".into()))
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

    /// Saves the whole VM into `dir` (pausing it; it stays paused). Each parked vCPU left its
    /// state in its slot when it parked and clears it when it runs again, so a VM paused
    /// before the save (the `pause` command) is saved too. (Clearing the slots here, as
    /// before, failed every save of a VM already paused: its parked vCPUs never refilled them.)
    pub fn save(&self, dir: &Path) -> Result<(), SnapshotError> {
        self.pause();
        let mut vcpus = Vec::new();
        for s in &self.saved {
            match lock(s).take() {
                Some(Ok(v)) => vcpus.push(v),
                Some(Err(e)) => return Err(SnapshotError::Corrupt(format!("vCPU state: {e}"))),
                None => return Err(SnapshotError::NotPaused),
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| SnapshotError::Write(dir.display().to_string(), e))?;
        let (irqchips, pit, clock) = snapshot::capture_vm(&self.vm)?;
        let clock_read_at = snapshot::unix_now_ns();
        let serial = snapshot::SerialSnapshot::from_state(&lock(&self.serial).state());
        let devices = lock(&self.pci)
            .slots()
            .iter()
            .map(|s| lock(&s.device).save_state())
            .collect();
        let memory = snapshot::save_memory(&self.mem, dir)?;
        let state = VmState {
            format: snapshot::FORMAT.into(),
            version: snapshot::VERSION,
            config: self.config.clone(),
            vcpus,
            irqchips,
            pit,
            clock,
            saved_at_unix_ns: clock_read_at,
            serial,
            devices,
            memory,
        };
        snapshot::write_state(dir, &state)
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
            .iter()
            .zip(&self.device_names)
            .map(|(s, name)| {
                let st: DeviceStats = lock(&s.device).device().stats();
                DeviceStatsReport {
                    name: name.clone(),
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

/// Kicks every vCPU out of KVM_RUN every `period` while `vm` lives, so that
/// vCPUs stuck in an instruction the host never completes can be helped
/// ([`complete_stuck_hypercall`]).
pub fn start_watchdog(vm: &Arc<RunningVm>, period: Duration) {
    let weak = Arc::downgrade(vm);
    let _ = std::thread::Builder::new()
        .name("yunhe-watchdog".into())
        .spawn(move || {
            if let Err(e) = super::seccomp::install(super::seccomp::ThreadKind::Watchdog) {
                eprintln!("yunhe vmm: {e}");
                return;
            }
            loop {
                std::thread::sleep(period);
                match weak.upgrade() {
                    Some(vm) if !vm.stopped.load(Ordering::SeqCst) && !vm.is_paused() => {
                        vm.kick_all()
                    }
                    Some(_) => {}
                    None => return,
                }
            }
        });
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

#[cfg(test)]
mod tests {
    use super::DEFAULT_CMDLINE;

    /// Regression (lab: tiny under micro hung in its first `sleep` with the default command
    /// line): Linux matches `__setup` parameters by prefix, so `noapictimer=0` disabled the
    /// local APIC timer. The default line must not switch off timers or interrupt sources.
    #[test]
    fn default_cmdline_disables_nothing() {
        for word in DEFAULT_CMDLINE.split_whitespace() {
            let name = word.split('=').next().unwrap_or(word);
            assert!(
                !name.starts_with("no") && name != "nolapic" && name != "noapic",
                "{word} in the default command line"
            );
        }
        assert!(DEFAULT_CMDLINE.contains("console=ttyS0"));
    }
}
