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

use super::virtio::pci::{BAR0_SIZE, BarWriteOutcome, ConfigWriteOutcome, VirtioPciDevice};
use super::virtio::{MsiMessage, PciInterruptSink};
use crate::vmm::bus::{BusDevice, lock};
use crate::vmm::layout::*;

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

/// A virtio-pci function plugged into the root, with its queue-notify eventfds.
pub struct PciSlot {
    /// The device (shared with the event thread).
    pub device: Arc<Mutex<VirtioPciDevice>>,
    /// One eventfd per queue: `(fd, queue index)`.
    pub notify: Vec<(Arc<EventFd>, u16)>,
}

/// Vendor/device id of the host bridge (Intel, as Cloud Hypervisor and QEMU use for theirs).
const HOST_BRIDGE_ID: u32 = 0x0d57_8086;

/// The host bridge and bus 0.
pub struct PciRoot {
    vm: Arc<VmFd>,
    config_address: u32,
    /// Device `n` of bus 0 is `slots[n - 1]` (device 0 is the host bridge).
    slots: Vec<PciSlot>,
}

impl PciRoot {
    /// An empty bus.
    pub fn new(vm: Arc<VmFd>) -> Self {
        PciRoot {
            vm,
            config_address: 0,
            slots: Vec::new(),
        }
    }

    /// The BAR 0 address the next device gets.
    pub fn next_bar0(&self) -> Result<u64, PciRootError> {
        let addr = PCI_MMIO_START + self.slots.len() as u64 * BAR0_SIZE;
        if self.slots.len() >= 31 || addr + BAR0_SIZE > PCI_MMIO_START + PCI_MMIO_SIZE {
            return Err(PciRootError::Full);
        }
        Ok(addr)
    }

    /// Plugs `device` into the next slot and binds an ioeventfd to each queue's notify address.
    pub fn add(&mut self, device: VirtioPciDevice) -> Result<(), PciRootError> {
        if self.slots.len() >= 31 {
            return Err(PciRootError::Full);
        }
        let mut notify = Vec::new();
        for (addr, q) in device.notify_addresses() {
            let fd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(PciRootError::EventFd)?);
            self.vm
                .register_ioevent(&fd, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(|e| PciRootError::Kvm("an ioeventfd", e))?;
            notify.push((fd, q));
        }
        self.slots.push(PciSlot {
            device: Arc::new(Mutex::new(device)),
            notify,
        });
        Ok(())
    }

    /// The plugged devices.
    pub fn slots(&self) -> &[PciSlot] {
        &self.slots
    }

    fn rebind(&self, slot: usize, old: u64, new: u64) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        for (fd, q) in &s.notify {
            let off = u64::from(*q) * u64::from(super::virtio::pci::NOTIFY_OFF_MULTIPLIER)
                + super::virtio::pci::NOTIFY_OFFSET;
            let _ = self
                .vm
                .unregister_ioevent(fd, &IoEventAddress::Mmio(old + off), NoDatamatch);
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
        if let Some(s) = self.slots.get(usize::from(dev) - 1) {
            lock(&s.device).config_read(offset, data);
        }
    }

    fn config_write(&mut self, dev: u8, func: u8, offset: u64, data: &[u8]) {
        if func != 0 || dev == 0 || offset >= 4096 {
            return;
        }
        let slot = usize::from(dev) - 1;
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let outcome = lock(&s.device).config_write(offset, data);
        match outcome {
            ConfigWriteOutcome::None => {}
            ConfigWriteOutcome::Bar0Moved { old, new } => self.rebind(slot, old, new),
            ConfigWriteOutcome::QueueNotify(q) => lock(&s.device).process_queue(q),
        }
    }

    fn mmio(&mut self, addr: u64) -> Option<(usize, u64)> {
        self.slots
            .iter()
            .position(|s| {
                let base = lock(&s.device).bar0_address();
                base != 0 && addr >= base && addr - base < BAR0_SIZE
            })
            .map(|i| {
                let base = lock(&self.slots[i].device).bar0_address();
                (i, addr - base)
            })
    }
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
            Some((i, off)) => lock(&root.slots[i].device).bar_read(off, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock(&self.0);
        if let Some((i, off)) = root.mmio(PCI_MMIO_START + offset) {
            let dev = root.slots[i].device.clone();
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
