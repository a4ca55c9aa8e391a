//! ACPI PCI hotplug of bus 0 (the scheme QEMU's PIIX and Cloud Hypervisor use): a small
//! register block on I/O ports the DSDT's AML reads and writes, and the AML itself.
//!
//! ```text
//! port HOTPLUG_PORT + 0x0  PCIU  slots that came up since the last read (read clears)
//!                   + 0x4  PCID  slots whose removal was requested (read clears)
//!                   + 0x8  B0EJ  write: bitmap of slots the guest ejected (_EJ0)
//!                   + 0xc  PSEG  segment select: only segment 0 exists, reads 0
//! ```
//!
//! The VMM plugs a device into a slot, sets its PCIU bit and raises the GED's PCI-hotplug
//! event; the GED's `_EVT` calls `\_SB_.PCI0.PCNT`, which Notifies each slot in PCIU with
//! Device Check (the guest's acpiphp rescans the slot) and each slot in PCID with Eject
//! Request (acpiphp unbinds the driver, removes the device and calls the slot's `_EJ0`,
//! which writes the slot's bit into B0EJ). Only a slot whose removal the VMM requested can be
//! ejected: a guest writing B0EJ for any other slot (or writing PCIU, PCID, PSEG, or at odd
//! offsets and sizes) changes nothing.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use acpi_tables::Aml;
use acpi_tables::aml;

use crate::vmm::bus::{BusDevice, lock};
use crate::vmm::layout::HOTPLUG_PORT;

/// Highest PCI device number of bus 0 (device 0 is the host bridge).
pub const MAX_SLOT: u8 = 31;
/// Bits of the slot bitmaps that name a slot (1..=31).
pub const SLOT_MASK: u32 = !1;
/// Size of the register block, in ports.
pub const HOTPLUG_PORTS: u64 = 16;

const PCIU: u64 = 0x0;
const PCID: u64 = 0x4;
const B0EJ: u64 = 0x8;

/// The bit of `slot` in the bitmaps; 0 for slot 0 and for numbers past [`MAX_SLOT`].
pub fn slot_bit(slot: u8) -> u32 {
    if (1..=MAX_SLOT).contains(&slot) {
        1 << slot
    } else {
        0
    }
}

#[derive(Debug, Default)]
struct State {
    /// Slots plugged since the guest last read PCIU.
    up: u32,
    /// Slots whose removal was requested since the guest last read PCID.
    down: u32,
    /// Slots whose removal is requested and not yet ejected.
    removing: u32,
    /// Slots the guest ejected whose owner has not collected them yet.
    ejected: u32,
}

/// What the guest's eject of a slot should do, called on the vCPU thread that wrote B0EJ
/// (the VMM tears the device down there, so that no later config read finds it).
pub type EjectHandler = Box<dyn Fn(u8) + Send>;

/// The state shared by the register block (vCPU side) and the VMM's control side.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The guest-visible register block.
pub struct HotplugController {
    shared: Arc<Shared>,
    on_eject: Option<EjectHandler>,
}

/// The VMM's side: announce plugs, request removals, wait for ejects.
#[derive(Clone)]
pub struct HotplugHandle {
    shared: Arc<Shared>,
}

impl HotplugController {
    /// A controller and its handle. `on_eject` runs for each slot the guest ejects after the
    /// VMM requested its removal.
    pub fn new(on_eject: Option<EjectHandler>) -> (Self, HotplugHandle) {
        let shared = Arc::new(Shared::default());
        (
            HotplugController {
                shared: shared.clone(),
                on_eject,
            },
            HotplugHandle { shared },
        )
    }

    fn registers(&self) -> [u32; 4] {
        let st = lock(&self.shared.state);
        [st.up, st.down, 0, 0]
    }
}

impl BusDevice for HotplugController {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let regs = self.registers();
        let mut bytes = [0u8; HOTPLUG_PORTS as usize];
        for (i, r) in regs.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| bytes.get(o as usize))
                .copied()
                .unwrap_or(0);
        }
        // A read of a whole register clears the bits it returned (only those: a plug
        // announced between the snapshot above and here stays pending).
        if data.len() == 4 && (offset == PCIU || offset == PCID) {
            let mut st = lock(&self.shared.state);
            if offset == PCIU {
                st.up &= !regs[0];
            } else {
                st.down &= !regs[1];
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != B0EJ || data.is_empty() || data.len() > 4 {
            return;
        }
        let mut raw = [0u8; 4];
        raw[..data.len()].copy_from_slice(data);
        let asked = u32::from_le_bytes(raw) & SLOT_MASK;
        let ejected = {
            let mut st = lock(&self.shared.state);
            let ejected = asked & st.removing;
            st.removing &= !ejected;
            st.down &= !ejected;
            ejected
        };
        if ejected == 0 {
            return;
        }
        if let Some(f) = &self.on_eject {
            for slot in 1..=MAX_SLOT {
                if ejected & slot_bit(slot) != 0 {
                    f(slot);
                }
            }
        }
        lock(&self.shared.state).ejected |= ejected;
        self.shared.changed.notify_all();
    }
}

impl HotplugHandle {
    /// Announces a device plugged into `slot` (the caller then raises the GED event).
    pub fn plugged(&self, slot: u8) {
        let bit = slot_bit(slot);
        let mut st = lock(&self.shared.state);
        st.up |= bit;
        st.ejected &= !bit;
    }

    /// Requests the removal of `slot`'s device (the caller then raises the GED event).
    pub fn request_removal(&self, slot: u8) {
        let bit = slot_bit(slot);
        let mut st = lock(&self.shared.state);
        st.up &= !bit;
        st.down |= bit;
        st.removing |= bit;
    }

    /// Whether the removal of `slot` is requested and not yet done.
    pub fn removing(&self, slot: u8) -> bool {
        lock(&self.shared.state).removing & slot_bit(slot) != 0
    }

    /// Waits until the guest ejected `slot` (true, and the eject is collected) or `timeout`
    /// passed (false; the removal stays requested, so a later eject still completes it).
    pub fn wait_ejected(&self, slot: u8, timeout: Duration) -> bool {
        let bit = slot_bit(slot);
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        loop {
            if st.ejected & bit != 0 {
                st.ejected &= !bit;
                return true;
            }
            let now = Instant::now();
            if now >= deadline || bit == 0 {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// The AML name of slot `n`'s device under `\_SB_.PCI0`.
pub fn slot_name(n: u8) -> String {
    format!("S{n:03}")
}

/// The AML that goes inside `\_SB_.PCI0`: the register block as a field, `PCEJ` (eject a
/// slot), one device per slot 1..=[`MAX_SLOT`] with `_ADR`, `_SUN` and `_EJ0`, `DVNT`
/// (notify the slots of a bitmap) and `PCNT` (the GED's entry point).
pub fn pci0_aml(out: &mut Vec<u8>) {
    aml::OpRegion::new(
        "PCST".into(),
        aml::OpRegionSpace::SystemIO,
        &(HOTPLUG_PORT as usize),
        &(HOTPLUG_PORTS as usize),
    )
    .to_aml_bytes(out);
    aml::Field::new(
        "PCST".into(),
        aml::FieldAccessType::DWord,
        aml::FieldLockRule::NoLock,
        aml::FieldUpdateRule::WriteAsZeroes,
        vec![
            aml::FieldEntry::Named(*b"PCIU", 32),
            aml::FieldEntry::Named(*b"PCID", 32),
            aml::FieldEntry::Named(*b"B0EJ", 32),
            aml::FieldEntry::Named(*b"PSEG", 32),
        ],
    )
    .to_aml_bytes(out);
    // PCEJ(slot): B0EJ = 1 << slot.
    aml::Method::new(
        "PCEJ".into(),
        1,
        true,
        vec![&aml::ShiftLeft::new(
            &aml::Path::new("B0EJ"),
            &aml::ONE,
            &aml::Arg(0),
        )],
    )
    .to_aml_bytes(out);
    for n in 1..=MAX_SLOT {
        let adr = u32::from(n) << 16;
        let sun = u32::from(n);
        let sun_path = aml::Path::new("_SUN");
        let eject = aml::MethodCall::new("PCEJ".into(), vec![&sun_path]);
        aml::Device::new(
            slot_name(n).as_str().into(),
            vec![
                &aml::Name::new("_ADR".into(), &adr),
                &aml::Name::new("_SUN".into(), &sun),
                &aml::Method::new("_EJ0".into(), 1, false, vec![&eject]),
            ],
        )
        .to_aml_bytes(out);
    }
    // DVNT(bitmap, event): Notify(Snnn, event) for each slot in the bitmap.
    let masks: Vec<u32> = (1..=MAX_SLOT).map(|n| 1u32 << n).collect();
    let paths: Vec<aml::Path> = (1..=MAX_SLOT)
        .map(|n| aml::Path::new(&slot_name(n)))
        .collect();
    let notifies: Vec<aml::Notify> = paths
        .iter()
        .map(|p| aml::Notify::new(p, &aml::Arg(1)))
        .collect();
    let ands: Vec<aml::And> = masks
        .iter()
        .map(|m| aml::And::new(&aml::ZERO, &aml::Arg(0), m))
        .collect();
    let ifs: Vec<aml::If> = ands
        .iter()
        .zip(&notifies)
        .map(|(a, n)| aml::If::new(a, vec![n]))
        .collect();
    let body: Vec<&dyn Aml> = ifs.iter().map(|i| i as &dyn Aml).collect();
    aml::Method::new("DVNT".into(), 2, true, body).to_aml_bytes(out);
    // PCNT: Device Check (1) for the slots that came up, Eject Request (3) for the others.
    let (pciu, pcid) = (aml::Path::new("PCIU"), aml::Path::new("PCID"));
    let up = aml::MethodCall::new("DVNT".into(), vec![&pciu, &aml::ONE]);
    let down = aml::MethodCall::new("DVNT".into(), vec![&pcid, &3u8]);
    aml::Method::new("PCNT".into(), 0, true, vec![&up, &down]).to_aml_bytes(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn read32(c: &mut HotplugController, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        c.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn controller() -> (HotplugController, HotplugHandle, Arc<AtomicU32>) {
        let torn = Arc::new(AtomicU32::new(0));
        let t = torn.clone();
        let (c, h) = HotplugController::new(Some(Box::new(move |slot| {
            t.fetch_or(1 << slot, Ordering::SeqCst);
        })));
        (c, h, torn)
    }

    #[test]
    fn plug_is_reported_once() {
        let (mut c, h, _) = controller();
        h.plugged(3);
        h.plugged(5);
        assert_eq!(read32(&mut c, PCIU), (1 << 3) | (1 << 5));
        assert_eq!(read32(&mut c, PCIU), 0, "a read clears");
        assert_eq!(read32(&mut c, PCID), 0);
    }

    #[test]
    fn removal_completes_on_eject_only() {
        let (mut c, h, torn) = controller();
        h.request_removal(4);
        assert!(h.removing(4));
        assert_eq!(read32(&mut c, PCID), 1 << 4);
        assert_eq!(read32(&mut c, PCID), 0);
        c.write(B0EJ, &(1u32 << 4).to_le_bytes());
        assert_eq!(torn.load(Ordering::SeqCst), 1 << 4);
        assert!(!h.removing(4));
        assert!(h.wait_ejected(4, Duration::from_millis(1)));
        assert!(
            !h.wait_ejected(4, Duration::from_millis(1)),
            "collected once"
        );
    }

    #[test]
    fn eject_wait_times_out_and_a_late_eject_still_counts() {
        let (mut c, h, torn) = controller();
        h.request_removal(7);
        assert!(!h.wait_ejected(7, Duration::from_millis(20)));
        assert!(h.removing(7));
        c.write(B0EJ, &(1u32 << 7).to_le_bytes());
        assert_eq!(torn.load(Ordering::SeqCst), 1 << 7);
        assert!(h.wait_ejected(7, Duration::from_millis(1)));
    }

    #[test]
    fn a_waiter_is_woken_by_the_eject() {
        let (mut c, h, _) = controller();
        h.request_removal(9);
        let h2 = h.clone();
        let t = std::thread::spawn(move || h2.wait_ejected(9, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        c.write(B0EJ, &(1u32 << 9).to_le_bytes());
        assert!(t.join().expect("waiter"));
    }

    /// Hostile guest: garbage anywhere in the block ejects nothing that was not asked for,
    /// never slot 0 (the host bridge), and never panics.
    #[test]
    fn garbage_from_the_guest_changes_nothing() {
        let (mut c, h, torn) = controller();
        h.plugged(2);
        h.request_removal(6);
        for offset in 0..HOTPLUG_PORTS + 8 {
            for len in [1usize, 2, 4, 8] {
                let data = vec![0xffu8; len];
                if offset == B0EJ && len <= 4 {
                    continue;
                }
                c.write(offset, &data);
                let mut out = vec![0u8; len];
                // Unaligned reads (which clear nothing), also past the block's end.
                c.read(offset | 1, &mut out);
                c.read(u64::MAX - offset, &mut out);
            }
        }
        // Ejects of slots not being removed, of slot 0 and of every slot at once.
        c.write(B0EJ, &1u32.to_le_bytes());
        c.write(B0EJ, &(1u32 << 2).to_le_bytes());
        assert_eq!(torn.load(Ordering::SeqCst), 0);
        c.write(B0EJ, &u32::MAX.to_le_bytes());
        assert_eq!(
            torn.load(Ordering::SeqCst),
            1 << 6,
            "only the slot asked for"
        );
        c.write(B0EJ, &u32::MAX.to_le_bytes());
        assert_eq!(torn.load(Ordering::SeqCst), 1 << 6, "once");
        // Partial reads do not clear; the plug is still reported whole.
        let mut b = [0u8; 1];
        c.read(PCIU, &mut b);
        assert_eq!(read32(&mut c, PCIU), 1 << 2);
        // Slot numbers out of range are ignored by the handle too.
        h.plugged(0);
        h.plugged(32);
        h.request_removal(200);
        assert_eq!(read32(&mut c, PCIU), 0);
        assert_eq!(read32(&mut c, PCID), 0);
        assert!(!h.wait_ejected(0, Duration::from_millis(1)));
    }

    #[test]
    fn aml_names_every_slot_and_method() {
        let mut out = Vec::new();
        pci0_aml(&mut out);
        let has = |s: &[u8]| out.windows(s.len()).any(|w| w == s);
        for name in [
            &b"PCST"[..],
            b"PCIU",
            b"PCID",
            b"B0EJ",
            b"PSEG",
            b"PCEJ",
            b"DVNT",
            b"PCNT",
            b"_EJ0",
            b"_SUN",
        ] {
            assert!(has(name), "{}", String::from_utf8_lossy(name));
        }
        for n in 1..=MAX_SLOT {
            assert!(has(slot_name(n).as_bytes()), "slot {n}");
        }
        assert!(!has(b"S000") && !has(b"S032"));
        // The operation region: OpRegionOp (5b 80) "PCST" SystemIO (01) at the port.
        let port = HOTPLUG_PORT.to_le_bytes();
        let region = [
            0x5b, 0x80, b'P', b'C', b'S', b'T', 0x01, 0x0b, port[0], port[1],
        ];
        assert!(has(&region), "the register block's region");
    }
}
