//! Dispatch of port I/O and MMIO exits to device models.

use std::sync::{Arc, Mutex, MutexGuard};

/// A device on the port I/O or MMIO bus. `offset` is relative to the range the
/// device was inserted at. Reads the device does not implement return zeros.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Locks a mutex, recovering the data if a thread panicked while holding it
/// (a device model stays usable; the panic itself is reported by its thread).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Range {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Range {0:#x}+{1:#x} overlaps another device
    #[error("range {0:#x}+{1:#x} overlaps another device")]
    Overlap(u64, u64),
}

/// A set of non-overlapping ranges, fixed once the VM runs.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<Range>,
}

impl Bus {
    /// Adds `device` at `base..base+len`.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).ok_or(BusError::Overlap(base, len))?;
        if len == 0
            || self
                .ranges
                .iter()
                .any(|r| base < r.base + r.len && r.base < end)
        {
            return Err(BusError::Overlap(base, len));
        }
        let at = self.ranges.partition_point(|r| r.base < base);
        self.ranges.insert(at, Range { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<&Range> {
        let i = self.ranges.partition_point(|r| r.base <= addr);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (addr - r.base < r.len).then_some(r)
    }

    /// Dispatches a read; returns false (and zero-fills) when nothing is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some(r) => {
                lock(&r.device).read(addr - r.base, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false when nothing is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some(r) => {
                lock(&r.device).write(addr - r.base, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let mut bus = Bus::default();
        bus.insert(Arc::new(Mutex::new(Echo(1))), 0x10, 8)
            .expect("insert");
        bus.insert(Arc::new(Mutex::new(Echo(5))), 0x20, 8)
            .expect("insert");
        assert!(bus.insert(Arc::new(Mutex::new(Echo(0))), 0x17, 2).is_err());
        assert!(
            bus.insert(Arc::new(Mutex::new(Echo(0))), u64::MAX, 2)
                .is_err()
        );
        let mut b = [0u8; 1];
        assert!(bus.read(0x12, &mut b));
        assert_eq!(b[0], 3);
        assert!(!bus.read(0x18, &mut b));
        assert!(bus.write(0x27, &[9]));
        assert!(bus.read(0x20, &mut b));
        assert_eq!(b[0], 9);
        assert!(!bus.read(0x0, &mut b));
    }
}
