//! The boot-timer port (0x80): a guest write records the milliseconds since
//! the VMM started, like Cloud Hypervisor's debug port or Firecracker's boot
//! timer. Linux also uses port 0x80 for I/O delays, so only the first write of
//! each value is kept (at most 256 records).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::vmm::bus::{BusDevice, lock};

/// `(value, milliseconds since VMM start)` in the order first seen.
pub type BootTimes = Arc<Mutex<Vec<(u8, f64)>>>;

/// The boot-timer port.
pub struct BootTimer {
    start: Instant,
    seen: [bool; 256],
    times: BootTimes,
    log: bool,
}

impl BootTimer {
    /// `start` is when the VMM process started; `log` prints each record on stderr.
    pub fn new(start: Instant, times: BootTimes, log: bool) -> Self {
        BootTimer {
            start,
            seen: [false; 256],
            times,
            log,
        }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if self.seen[v as usize] {
            return;
        }
        self.seen[v as usize] = true;
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if self.log {
            eprintln!("[yunhe boot timer] guest wrote {v:#04x} at {ms:.3} ms");
        }
        lock(&self.times).push((v, ms));
    }
}
