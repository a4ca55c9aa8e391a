//! COM1: vm-superio's 16550 model, its output into the [`Console`] and its
//! interrupt through an irqfd.

use std::io;
use std::sync::Arc;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::vmm::bus::BusDevice;
use crate::vmm::console::Console;

/// Interrupt trigger: an eventfd registered as an irqfd.
pub struct IrqTrigger(pub Arc<EventFd>);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// `io::Write` into the console.
pub struct ConsoleWriter(pub Arc<Console>);

impl io::Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.output(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The 16550 UART on COM1.
pub struct SerialDevice {
    serial: Serial<IrqTrigger, NoEvents, ConsoleWriter>,
}

impl SerialDevice {
    /// A UART writing into `console` and interrupting through `irq`.
    pub fn new(console: Arc<Console>, irq: Arc<EventFd>) -> Self {
        SerialDevice {
            serial: Serial::new(IrqTrigger(irq), ConsoleWriter(console)),
        }
    }

    /// A UART restored from a saved state (`None` when the state does not fit).
    pub fn from_state(
        console: Arc<Console>,
        irq: Arc<EventFd>,
        state: &vm_superio::serial::SerialState,
    ) -> Option<Self> {
        Serial::from_state(state, IrqTrigger(irq), NoEvents, ConsoleWriter(console))
            .ok()
            .map(|serial| SerialDevice { serial })
    }

    /// The UART's registers and FIFO, for save.
    pub fn state(&self) -> vm_superio::serial::SerialState {
        self.serial.state()
    }

    /// Input from the user; returns how many bytes the FIFO took.
    pub fn input(&mut self, bytes: &[u8]) -> usize {
        self.serial.enqueue_raw_bytes(bytes).unwrap_or(0)
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.serial.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&v), Ok(off)) = (data.first(), u8::try_from(offset)) {
            let _ = self.serial.write(off, v);
        }
    }
}
