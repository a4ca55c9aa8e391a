//! The virtio-pci transport as a hostile guest drives it: arbitrary sequences of PCI config
//! space and BAR 0 reads and writes (any offset, any width), with queue notifications honoured.
//! Must never panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vm_memory::GuestAddress;
use yunhe_virtio_fuzz::virtio::block::{MemoryBackend, VirtioBlock};
use yunhe_virtio_fuzz::virtio::pci::{BarWriteOutcome, ConfigWriteOutcome, VirtioPciDevice};
use yunhe_virtio_fuzz::virtio::{GuestMemory, MsiMessage, PciInterruptSink};

struct NullSink;

impl PciInterruptSink for NullSink {
    fn route_msix(&self, _vector: u16, _message: Option<MsiMessage>) {}
    fn signal_msix(&self, _vector: u16) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(mem) = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]) else {
        return;
    };
    let blk = VirtioBlock::new(Box::new(MemoryBackend::new(8192)), false, "fuzz");
    let Ok(mut dev) = VirtioPciDevice::new(Box::new(blk), mem, Arc::new(NullSink), 0xE000_0000)
    else {
        return;
    };
    // Each operation: kind, offset (2 bytes), width, value (8 bytes).
    for op in data.chunks_exact(12) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]));
        let width = [1usize, 2, 4, 8, 3, 0][usize::from(op[3]) % 6];
        let value = &op[4..4 + width.min(8)];
        let mut buf = [0u8; 8];
        match op[0] % 4 {
            0 => dev.config_read(offset % 0x1000, &mut buf[..width]),
            1 => {
                if let ConfigWriteOutcome::QueueNotify(q) = dev.config_write(offset % 0x1000, value)
                {
                    dev.process_queue(q);
                }
            }
            2 => dev.bar_read(offset, &mut buf[..width]),
            _ => {
                if let BarWriteOutcome::QueueNotify(q) = dev.bar_write(offset, value) {
                    dev.process_queue(q);
                }
            }
        }
    }
    let _ = dev.save_state();
});
