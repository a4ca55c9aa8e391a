//! A minimal i8042 keyboard controller: only its reset line (command 0xFE on
//! port 0x64) matters; port 0x60 reads as empty.

use super::{EventSender, VmEvent};
use crate::vmm::bus::BusDevice;

const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 at ports 0x60 (offset 0) and 0x64 (offset 4).
pub struct I8042 {
    events: EventSender,
}

impl I8042 {
    /// A controller that sends [`VmEvent::Reset`] on a CPU reset command.
    pub fn new(events: EventSender) -> Self {
        I8042 { events }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty, system flag.
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = 0x04;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.first() == Some(&CMD_RESET_CPU) {
            let _ = self.events.send(VmEvent::Reset);
        }
    }
}
