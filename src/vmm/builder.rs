//! Builds a VM (Firecracker's `builder`): KVM VM with irqchip and PIT, guest memory, the
//! kernel or firmware with its boot structures and ACPI tables (or the memory and device
//! state of a snapshot), legacy and virtio-pci devices, vCPUs configured to boot.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::memory::GuestMemoryMmap;
use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_pit_config};
use kvm_ioctls::Kvm;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::boot::{self, BootEntry};
use super::bus::{Bus, lock};
use super::console::Console;
use super::cpu;
use super::devices::factory::NamedDevices;
use super::devices::hotplug::{HOTPLUG_PORTS, HotplugController};
use super::devices::legacy::acpi_pm::{AcpiSleep, Ged};
use super::devices::legacy::boot_timer::{BootTimer, BootTimes};
use super::devices::legacy::i8042::I8042;
use super::devices::legacy::rtc::Rtc;
use super::devices::legacy::serial::SerialDevice;
use super::devices::pci::{
    GsiRouting, PciConfigIo, PciEcam, PciMmio, PciRoot, SlotConfig, plug_device,
};
use super::guests::PROBE_ELF;
use super::layout::*;
use super::snapshot::{self, SnapshotError, VmState};
use super::vm::{Vm, VmError};
use super::vmm_config::{BootSource, DEFAULT_CMDLINE, VmConfig};

/// Builds the virtio devices of `config` (blk, net, rng) as transport-independent models.
pub type DeviceFactory = fn(&VmConfig) -> Result<NamedDevices, VmError>;

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

        let mem = boot::create_memory(config.memory_mib, config.huge_pages)?;
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

        // PCI, and its hotplug controller (a guest's eject unplugs the device at once).
        let pci = Arc::new(Mutex::new(PciRoot::new(vm.clone())?));
        let routing = Arc::new(GsiRouting::new(vm.clone()));
        let (hotplug, hotplug_handle) = {
            let pci = pci.clone();
            HotplugController::new(Some(Box::new(move |slot| {
                lock(&pci).remove(slot);
            })))
        };
        io_bus.insert(
            Arc::new(Mutex::new(hotplug)),
            u64::from(HOTPLUG_PORT),
            HOTPLUG_PORTS,
        )?;
        let built = devices(config)?;
        let kinds = SlotConfig::of(config);
        let placement: Vec<(String, u8)> = match restore {
            Some((_, state)) => {
                if state.devices.len() != built.len()
                    || !(state.placement.is_empty() || state.placement.len() == built.len())
                {
                    return Err(VmError::Snapshot(SnapshotError::Corrupt(
                        "device count".into(),
                    )));
                }
                state.placement.clone()
            }
            None => Vec::new(),
        };
        for (i, (name, dev)) in built.into_iter().enumerate() {
            let (name, slot) = match placement.get(i) {
                Some((n, s)) => (n.clone(), *s),
                None => (name, lock(&pci).free_slot()?),
            };
            let pdev = plug_device(
                &vm,
                &routing,
                &mem,
                dev,
                slot,
                restore.and_then(|(_, st)| st.devices.get(i)),
                false,
            )
            .map_err(|e| VmError::Device(name.clone(), e))?;
            let kind = kinds.get(i).cloned().unwrap_or(SlotConfig::Other);
            lock(&pci).add_at(slot, name, kind, pdev.0, Some(pdev.1))?;
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
            cpu::filter_cpuid(
                &mut cpuid,
                id,
                config.cpus,
                super::cpu_probe::host_lacks_instructions(),
            );
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
            // The saved APICs now hold what they held; only now can the devices' catch-up
            // interrupts reach the guest (docs on `resume_after_restore`).
            for (_, slot) in lock(&pci).slots() {
                lock(&slot.device).resume_after_restore();
            }
        }

        Ok(Vm {
            config: config.clone(),
            vm,
            mem,
            vcpus,
            io_bus: Arc::new(io_bus),
            mmio_bus: Arc::new(mmio_bus),
            pci,
            routing,
            hotplug: hotplug_handle,
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
        let (loaded, cmdline, initrd) = match &config.boot {
            BootSource::Disk { disk } => Self::load_from_disk(config, mem, *disk)?,
            other => {
                let loaded = match other {
                    BootSource::Kernel { path } | BootSource::Firmware { path } => {
                        let mut f = File::open(path)
                            .map_err(|e| VmError::Open(path.display().to_string(), e))?;
                        boot::load_kernel(mem, &mut f)?
                    }
                    _ => boot::load_kernel(mem, &mut std::io::Cursor::new(PROBE_ELF))?,
                };
                let cmdline = config.cmdline.clone().unwrap_or_else(|| match config.boot {
                    BootSource::Kernel { .. } => DEFAULT_CMDLINE.to_string(),
                    _ => String::new(),
                });
                boot::write_cmdline(mem, &cmdline)?;
                let initrd = match &config.initrd {
                    Some(p) => {
                        let mut f =
                            File::open(p).map_err(|e| VmError::Open(p.display().to_string(), e))?;
                        Some(boot::load_initrd(mem, &mut f, loaded.kernel_end)?)
                    }
                    None => None,
                };
                (loaded, cmdline, initrd)
            }
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
        boot::write_reset_vector(mem)?;
        Ok(loaded.entry)
    }

    /// Disk boot: the kernel, initrd and command line the disk declares,
    /// found by `diskboot` (in this jailed, filtered process) at every boot.
    fn load_from_disk(
        config: &VmConfig,
        mem: &GuestMemoryMmap,
        index: usize,
    ) -> Result<LoadedBoot, VmError> {
        use super::diskboot;
        let d = config
            .disks
            .get(index)
            .ok_or_else(|| VmError::DiskBoot(format!("there is no disk {index}")))?;
        let limits = diskboot::Limits {
            initrd: (config.memory_mib << 20) / 2,
        };
        let file = match d.fd {
            Some(fd) => {
                // SAFETY: the descriptor was handed over for this disk and stays
                // open for the VMM's life; it is only borrowed to duplicate it.
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                File::from(borrowed.try_clone_to_owned()?)
            }
            None => {
                File::open(&d.path).map_err(|e| VmError::Open(d.path.display().to_string(), e))?
            }
        };
        let found = diskboot::find(&file, limits).map_err(|e| VmError::DiskBoot(e.to_string()))?;
        tracing::info!(source = %found.source, cmdline = %found.cmdline, "disk boot");
        let loaded = boot::load_kernel(mem, &mut std::io::Cursor::new(found.kernel.as_slice()))
            .map_err(|e| VmError::DiskBoot(format!("{}: {e}", found.source)))?;
        let mut cmdline = found.cmdline;
        if let Some(extra) = &config.cmdline {
            cmdline.push(' ');
            cmdline.push_str(extra);
        }
        boot::write_cmdline(mem, &cmdline)?;
        let initrd = match &found.initrd {
            Some(data) => Some(boot::load_initrd_bytes(mem, data, loaded.kernel_end)?),
            None => None,
        };
        Ok((loaded, cmdline, initrd))
    }
}

/// The loaded kernel, the command line written and the initrd's (address, size).
type LoadedBoot = (boot::LoadedKernel, String, Option<(u64, u64)>);

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
