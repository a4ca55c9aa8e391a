//! The PCI host bridge (bus 0): configuration mechanism #1 on ports
//! 0xCF8/0xCFC, ECAM, the 32-bit MMIO window where virtio-pci BARs live, and
//! the MSI-X → irqfd → GSI routes of each device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::hotplug::MAX_SLOT;
use super::virtio::VirtioDevice;
use super::virtio::pci::{
    BAR0_SIZE, BarWriteOutcome, ConfigWriteOutcome, VirtioPciDevice, VirtioPciState,
};
use super::virtio::{MsiMessage, PciInterruptSink};
use crate::vmm::bus::{BusDevice, lock};
use crate::vmm::layout::*;
use crate::vmm::memory::GuestMemoryMmap;
use crate::vmm::vmm_config::{DiskConfig, NetConfig, VmConfig};

/// Errors wiring PCI devices.
#[derive(Debug, thiserror::Error)]
pub enum PciRootError {
    /// No free PCI slot or MMIO space for another device
    #[error("no free PCI slot or MMIO space for another device")]
    Full,
    /// Cannot create an eventfd: {0}
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// KVM refused {0}: {1}
    #[error("KVM refused {0}: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
}

/// The VM-wide GSI routing table: the legacy PIC/IOAPIC routes plus one MSI
/// route per programmed MSI-X vector. KVM_SET_GSI_ROUTING replaces the whole
/// table, so every change rewrites all of it.
pub struct GsiRouting {
    vm: Arc<VmFd>,
    msi: Mutex<BTreeMap<u32, MsiMessage>>,
}

impl GsiRouting {
    /// Routing for `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        GsiRouting {
            vm,
            msi: Mutex::new(BTreeMap::new()),
        }
    }

    fn set(&self, gsi: u32, message: Option<MsiMessage>) {
        let mut msi = lock(&self.msi);
        match message {
            Some(m) => {
                msi.insert(gsi, m);
            }
            None => {
                msi.remove(&gsi);
            }
        }
        let mut entries = Vec::with_capacity(40 + msi.len());
        for gsi in 0..24u32 {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip.irqchip = 2; // KVM_IRQCHIP_IOAPIC
            e.u.irqchip.pin = gsi;
            entries.push(e);
            if gsi < 16 {
                let mut e = kvm_irq_routing_entry {
                    gsi,
                    type_: KVM_IRQ_ROUTING_IRQCHIP,
                    ..Default::default()
                };
                e.u.irqchip.irqchip = if gsi < 8 { 0 } else { 1 };
                e.u.irqchip.pin = gsi % 8;
                entries.push(e);
            }
        }
        for (&gsi, m) in msi.iter() {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = m.address as u32;
            e.u.msi.address_hi = (m.address >> 32) as u32;
            e.u.msi.data = m.data;
            entries.push(e);
        }
        match KvmIrqRouting::from_entries(&entries) {
            Ok(table) => {
                if let Err(e) = self.vm.set_gsi_routing(&table) {
                    eprintln!("yunhe vmm: KVM_SET_GSI_ROUTING failed: {e}");
                }
            }
            Err(_) => eprintln!("yunhe vmm: GSI routing table too large"),
        }
    }
}

/// One device's MSI-X vectors: an irqfd each, on consecutive GSIs.
pub struct MsixInterrupts {
    base_gsi: u32,
    fds: Vec<EventFd>,
    routing: Arc<GsiRouting>,
}

impl MsixInterrupts {
    /// `vectors` irqfds on GSIs `base_gsi..`.
    pub fn new(
        vm: &VmFd,
        routing: Arc<GsiRouting>,
        base_gsi: u32,
        vectors: u16,
    ) -> Result<Self, PciRootError> {
        let mut fds = Vec::with_capacity(vectors as usize);
        for v in 0..u32::from(vectors) {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(PciRootError::EventFd)?;
            vm.register_irqfd(&fd, base_gsi + v)
                .map_err(|e| PciRootError::Kvm("an irqfd", e))?;
            fds.push(fd);
        }
        Ok(MsixInterrupts {
            base_gsi,
            fds,
            routing,
        })
    }
}

impl PciInterruptSink for MsixInterrupts {
    fn route_msix(&self, vector: u16, message: Option<MsiMessage>) {
        if usize::from(vector) < self.fds.len() {
            self.routing.set(self.base_gsi + u32::from(vector), message);
        }
    }

    fn signal_msix(&self, vector: u16) {
        if let Some(fd) = self.fds.get(usize::from(vector)) {
            let _ = fd.write(1);
        }
    }
}

/// MSI-X GSIs each slot owns: slot `n` has `FIRST_MSI_GSI + (n - 1) * GSIS_PER_SLOT ..`.
pub const GSIS_PER_SLOT: u32 = 16;

/// The first GSI of slot `slot`'s MSI-X vectors.
pub fn slot_gsi_base(slot: u8) -> u32 {
    FIRST_MSI_GSI + u32::from(slot.saturating_sub(1)) * GSIS_PER_SLOT
}

impl MsixInterrupts {
    /// Detaches the irqfds and drops the MSI routes (the device is being unplugged).
    pub fn release(&self, vm: &VmFd) {
        for (v, fd) in self.fds.iter().enumerate() {
            let _ = vm.unregister_irqfd(fd, self.base_gsi + v as u32);
            self.routing.set(self.base_gsi + v as u32, None);
        }
    }
}

/// What a slot's device is, as a saved configuration records it.
#[derive(Clone, Debug)]
pub enum SlotConfig {
    /// A disk.
    Disk(DiskConfig),
    /// A network card.
    Net(NetConfig),
    /// The rng.
    Rng,
    /// Anything else (tests' devices).
    Other,
}

impl SlotConfig {
    /// One per device the factory builds from `config`, in its order (disks, nets, rng).
    pub fn of(config: &VmConfig) -> Vec<SlotConfig> {
        config
            .disks
            .iter()
            .cloned()
            .map(SlotConfig::Disk)
            .chain(config.nets.iter().cloned().map(SlotConfig::Net))
            .chain(config.rng.then_some(SlotConfig::Rng))
            .collect()
    }
}

/// A virtio-pci function plugged into the root, with its queue-notify eventfds.
pub struct PciSlot {
    /// The device's name (`disk0`, `net1`, or the id it was hot-added with).
    pub name: String,
    /// What it is, for a saved configuration.
    pub kind: SlotConfig,
    /// The device (shared with the event thread).
    pub device: Arc<Mutex<VirtioPciDevice>>,
    /// One eventfd per queue: `(fd, queue index)`.
    pub notify: Vec<(Arc<EventFd>, u16)>,
    /// Its MSI-X irqfds (released when it is unplugged).
    pub interrupts: Option<Arc<MsixInterrupts>>,
}

/// Vendor/device id of the host bridge (Intel, as Cloud Hypervisor and QEMU use for theirs).
const HOST_BRIDGE_ID: u32 = 0x0d57_8086;

/// The host bridge and bus 0.
pub struct PciRoot {
    vm: Arc<VmFd>,
    config_address: u32,
    /// Device `n` of bus 0 is `slots[n - 1]` (device 0 is the host bridge).
    slots: Vec<Option<PciSlot>>,
    /// Written when a device is plugged or unplugged: the device thread re-reads the slots.
    changed: Arc<EventFd>,
}

impl PciRoot {
    /// An empty bus.
    pub fn new(vm: Arc<VmFd>) -> Result<Self, PciRootError> {
        Ok(PciRoot {
            vm,
            config_address: 0,
            slots: (0..MAX_SLOT).map(|_| None).collect(),
            changed: Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(PciRootError::EventFd)?),
        })
    }

    /// The eventfd written on every plug and unplug.
    pub fn changed_fd(&self) -> Arc<EventFd> {
        self.changed.clone()
    }

    /// The BAR 0 address a device cold-plugged into `slot` gets.
    pub fn bar0_for(slot: u8) -> Result<u64, PciRootError> {
        let addr = PCI_MMIO_START + u64::from(slot.saturating_sub(1)) * BAR0_SIZE;
        if !(1..=MAX_SLOT).contains(&slot) || addr + BAR0_SIZE > PCI_MMIO_START + PCI_MMIO_SIZE {
            return Err(PciRootError::Full);
        }
        Ok(addr)
    }

    /// The first free slot.
    pub fn free_slot(&self) -> Result<u8, PciRootError> {
        self.slots
            .iter()
            .position(Option::is_none)
            .map(|i| i as u8 + 1)
            .ok_or(PciRootError::Full)
    }

    /// Plugs `device` into `slot` and binds an ioeventfd to each queue's notify address (a
    /// hot-added device's BAR 0 is 0, unassigned, until the guest programs it: its eventfds
    /// are bound then).
    pub fn add_at(
        &mut self,
        slot: u8,
        name: String,
        kind: SlotConfig,
        device: VirtioPciDevice,
        interrupts: Option<Arc<MsixInterrupts>>,
    ) -> Result<(), PciRootError> {
        let entry = self
            .slots
            .get_mut(usize::from(slot).wrapping_sub(1))
            .ok_or(PciRootError::Full)?;
        if entry.is_some() {
            return Err(PciRootError::Full);
        }
        let bar0 = device.bar0_address();
        let mut notify = Vec::new();
        for (addr, q) in device.notify_addresses() {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(PciRootError::EventFd)?;
            if bar0 != 0
                && let Err(e) =
                    self.vm
                        .register_ioevent(&fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            {
                for (fd, q) in &notify {
                    let _ = self.vm.unregister_ioevent(
                        fd,
                        &IoEventAddress::Mmio(notify_address(bar0, *q)),
                        NoDatamatch,
                    );
                }
                return Err(PciRootError::Kvm("an ioeventfd", e));
            }
            notify.push((fd, q));
        }
        let notify = notify
            .into_iter()
            .map(|(fd, q)| (Arc::new(fd), q))
            .collect();
        *entry = Some(PciSlot {
            name,
            kind,
            device: Arc::new(Mutex::new(device)),
            notify,
            interrupts,
        });
        let _ = self.changed.write(1);
        Ok(())
    }

    /// Unplugs `slot`'s device: its notify ioeventfds and irqfds are released and the device
    /// thread told to drop it. Returns the slot's contents.
    pub fn remove(&mut self, slot: u8) -> Option<PciSlot> {
        let s = self
            .slots
            .get_mut(usize::from(slot).wrapping_sub(1))?
            .take()?;
        let bar0 = lock(&s.device).bar0_address();
        if bar0 != 0 {
            for (fd, q) in &s.notify {
                let _ = self.vm.unregister_ioevent(
                    fd,
                    &IoEventAddress::Mmio(notify_address(bar0, *q)),
                    NoDatamatch,
                );
            }
        }
        if let Some(irq) = &s.interrupts {
            irq.release(&self.vm);
        }
        let _ = self.changed.write(1);
        Some(s)
    }

    /// The plugged devices with their slot numbers, in slot order.
    pub fn slots(&self) -> impl Iterator<Item = (u8, &PciSlot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as u8 + 1, s)))
    }

    /// The slot of the device named `name`.
    pub fn find(&self, name: &str) -> Option<u8> {
        self.slots()
            .find(|(_, s)| s.name == name)
            .map(|(slot, _)| slot)
    }

    fn rebind(&self, slot: usize, old: u64, new: u64) {
        let Some(Some(s)) = self.slots.get(slot) else {
            return;
        };
        for (fd, q) in &s.notify {
            let off = notify_address(0, *q);
            if old != 0 {
                let _ =
                    self.vm
                        .unregister_ioevent(fd, &IoEventAddress::Mmio(old + off), NoDatamatch);
            }
            if new == 0 {
                continue;
            }
            if let Err(e) =
                self.vm
                    .register_ioevent(fd, &IoEventAddress::Mmio(new + off), NoDatamatch)
            {
                eprintln!("yunhe vmm: cannot re-bind a queue notify ioeventfd: {e}");
            }
        }
    }

    fn config_read(&mut self, dev: u8, func: u8, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if func != 0 || offset >= 4096 {
            return;
        }
        if dev == 0 {
            let reg = match offset & !3 {
                0x00 => HOST_BRIDGE_ID,
                0x08 => 0x0600_0000, // class: host bridge
                0x0c => 0,
                0x2c => HOST_BRIDGE_ID,
                o if o < 0x40 => 0,
                _ => 0,
            };
            let bytes = reg.to_le_bytes();
            let start = (offset & 3) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        if let Some(Some(s)) = self.slots.get(usize::from(dev) - 1) {
            lock(&s.device).config_read(offset, data);
        }
    }

    fn config_write(&mut self, dev: u8, func: u8, offset: u64, data: &[u8]) {
        if func != 0 || dev == 0 || offset >= 4096 {
            return;
        }
        let slot = usize::from(dev) - 1;
        let Some(Some(s)) = self.slots.get(slot) else {
            return;
        };
        let outcome = lock(&s.device).config_write(offset, data);
        match outcome {
            ConfigWriteOutcome::None => {}
            ConfigWriteOutcome::Bar0Moved { old, new } => self.rebind(slot, old, new),
            ConfigWriteOutcome::QueueNotify(q) => lock(&s.device).process_queue(q),
        }
    }

    /// The device whose BAR 0 holds `addr`, with the offset into the BAR.
    fn mmio(&mut self, addr: u64) -> Option<(Arc<Mutex<VirtioPciDevice>>, u64)> {
        self.slots.iter().flatten().find_map(|s| {
            let base = lock(&s.device).bar0_address();
            (base != 0 && addr >= base && addr - base < BAR0_SIZE)
                .then(|| (s.device.clone(), addr - base))
        })
    }
}

/// Wraps `dev` for PCI slot `slot` with its MSI-X irqfds (the slot's GSI block): from `state`
/// when restoring; BAR 0 at the slot's cold-plug address, or unassigned (0) for a `hot` add,
/// which the guest's PCI core then assigns.
pub fn plug_device(
    vm: &Arc<VmFd>,
    routing: &Arc<GsiRouting>,
    mem: &GuestMemoryMmap,
    dev: Box<dyn VirtioDevice>,
    slot: u8,
    state: Option<&VirtioPciState>,
    hot: bool,
) -> Result<(VirtioPciDevice, Arc<MsixInterrupts>), String> {
    let vectors = dev.queue_max_sizes().len() + 1;
    if vectors > GSIS_PER_SLOT as usize {
        return Err(format!(
            "{vectors} interrupt vectors (at most {GSIS_PER_SLOT})"
        ));
    }
    let sink = Arc::new(
        MsixInterrupts::new(vm, routing.clone(), slot_gsi_base(slot), vectors as u16)
            .map_err(|e| e.to_string())?,
    );
    let bar0 = if hot {
        0
    } else {
        PciRoot::bar0_for(slot).map_err(|e| e.to_string())?
    };
    let pdev = match state {
        Some(st) => VirtioPciDevice::restore(dev, mem.clone(), sink.clone(), st),
        None => VirtioPciDevice::new(dev, mem.clone(), sink.clone(), bar0),
    };
    match pdev {
        Ok(p) => Ok((p, sink)),
        Err(e) => {
            sink.release(vm);
            Err(e.to_string())
        }
    }
}

/// The notify address of queue `q` in a BAR 0 at `bar0`.
fn notify_address(bar0: u64, q: u16) -> u64 {
    bar0 + super::virtio::pci::NOTIFY_OFFSET
        + u64::from(q) * u64::from(super::virtio::pci::NOTIFY_OFF_MULTIPLIER)
}

/// Decodes a bus-0 ECAM offset into (device, function, register offset).
fn ecam_decode(offset: u64) -> Option<(u8, u8, u64)> {
    if offset >= ECAM_SIZE {
        return None;
    }
    Some((
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 7) as u8,
        offset & 0xfff,
    ))
}

/// Ports 0xCF8..0xD00.
pub struct PciConfigIo(pub Arc<Mutex<PciRoot>>);

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut root = lock(&self.0);
        if offset < 4 {
            let bytes = root.config_address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(offset as usize + i).copied().unwrap_or(0);
            }
            return;
        }
        let a = root.config_address;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xff != 0 {
            data.fill(0xff);
            return;
        }
        let reg = u64::from(a & 0xfc) | ((u64::from(a) >> 16) & 0xf00) | (offset - 4);
        root.config_read(((a >> 11) & 0x1f) as u8, ((a >> 8) & 7) as u8, reg, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock(&self.0);
        if offset == 0 && data.len() == 4 {
            let mut b = [0u8; 4];
            b.copy_from_slice(data);
            root.config_address = u32::from_le_bytes(b);
            return;
        }
        if offset < 4 {
            return;
        }
        let a = root.config_address;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xff != 0 {
            return;
        }
        let reg = u64::from(a & 0xfc) | ((u64::from(a) >> 16) & 0xf00) | (offset - 4);
        root.config_write(((a >> 11) & 0x1f) as u8, ((a >> 8) & 7) as u8, reg, data);
    }
}

/// The ECAM window (bus 0).
pub struct PciEcam(pub Arc<Mutex<PciRoot>>);

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match ecam_decode(offset) {
            Some((d, f, o)) => lock(&self.0).config_read(d, f, o, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((d, f, o)) = ecam_decode(offset) {
            lock(&self.0).config_write(d, f, o, data);
        }
    }
}

/// The 32-bit MMIO window: BAR accesses go to whichever device's BAR 0 holds the address.
pub struct PciMmio(pub Arc<Mutex<PciRoot>>);

impl BusDevice for PciMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut root = lock(&self.0);
        match root.mmio(PCI_MMIO_START + offset) {
            Some((dev, off)) => lock(&dev).bar_read(off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock(&self.0);
        if let Some((dev, off)) = root.mmio(PCI_MMIO_START + offset) {
            let outcome = lock(&dev).bar_write(off, data);
            if let BarWriteOutcome::QueueNotify(q) = outcome {
                lock(&dev).process_queue(q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecam_offsets_decode() {
        assert_eq!(ecam_decode(0), Some((0, 0, 0)));
        assert_eq!(
            ecam_decode((3 << 15) | (1 << 12) | 0x44),
            Some((3, 1, 0x44))
        );
        assert_eq!(ecam_decode(ECAM_SIZE), None);
    }
}
