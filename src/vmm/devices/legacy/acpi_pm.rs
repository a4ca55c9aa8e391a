//! Hardware-reduced ACPI registers: the sleep control register (writing
//! SLP_TYP=S5 with SLP_EN powers off), the sleep status register, and the
//! Generic Event Device's pending-event register (bit 0: power button, bit 1: PCI hotplug).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use vmm_sys_util::eventfd::EventFd;

use super::{EventSender, VmEvent};
use crate::vmm::bus::BusDevice;
use crate::vmm::layout::SLEEP_TYPE_S5;

const SLP_EN: u8 = 1 << 5;

/// Sleep control (offset 0) and status (offset 1) registers.
pub struct AcpiSleep {
    events: EventSender,
}

impl AcpiSleep {
    /// Registers that send [`VmEvent::PowerOff`] on an S5 request.
    pub fn new(events: EventSender) -> Self {
        AcpiSleep { events }
    }
}

impl BusDevice for AcpiSleep {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset == 0 && v & SLP_EN != 0 && (v >> 2) & 7 == SLEEP_TYPE_S5 {
            let _ = self.events.send(VmEvent::PowerOff);
        }
    }
}

/// GED event bit of the power button.
pub const GED_POWER_BUTTON: u8 = 1;
/// GED event bit of PCI hotplug (the DSDT's `_EVT` calls `\_SB_.PCI0.PCNT`).
pub const GED_PCI_HOTPLUG: u8 = 2;

/// The Generic Event Device: a pending-event register read (and cleared) by
/// the DSDT's `_EVT` method, and an edge interrupt.
pub struct Ged {
    pending: Arc<AtomicU8>,
}

/// The VMM's handle to raise GED events.
#[derive(Clone)]
pub struct GedTrigger {
    pending: Arc<AtomicU8>,
    irq: Arc<EventFd>,
}

impl GedTrigger {
    /// Records `event` and interrupts the guest.
    pub fn raise(&self, event: u8) -> std::io::Result<()> {
        self.pending.fetch_or(event, Ordering::SeqCst);
        self.irq.write(1)
    }
}

impl Ged {
    /// A GED whose interrupt is `irq` (an irqfd).
    pub fn new(irq: Arc<EventFd>) -> (Self, GedTrigger) {
        let pending = Arc::new(AtomicU8::new(0));
        (
            Ged {
                pending: pending.clone(),
            },
            GedTrigger { pending, irq },
        )
    }
}

impl BusDevice for Ged {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.pending.swap(0, Ordering::SeqCst);
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_other_values_do_not() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = AcpiSleep::new(tx);
        s.write(0, &[(3 << 2) | SLP_EN]);
        s.write(0, &[5 << 2]);
        assert!(rx.try_recv().is_err());
        s.write(0, &[(5 << 2) | SLP_EN]);
        assert_eq!(rx.try_recv(), Ok(VmEvent::PowerOff));
    }

    #[test]
    fn ged_reports_and_clears() {
        let fd = Arc::new(EventFd::new(0).expect("eventfd"));
        let (mut ged, trig) = Ged::new(fd.clone());
        trig.raise(GED_POWER_BUTTON).expect("raise");
        assert_eq!(fd.read().expect("irq"), 1);
        let mut b = [0u8];
        ged.read(0, &mut b);
        assert_eq!(b[0], GED_POWER_BUTTON);
        ged.read(0, &mut b);
        assert_eq!(b[0], 0);
    }
}
