//! virtio-blk request parsing and execution on an in-memory disk: arbitrary chains, headers,
//! sectors, lengths, discard ranges; read-only or not. Must never panic nor loop.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use yunhe_virtio_fuzz::layout;
use yunhe_virtio_fuzz::virtio::VirtioDevice;
use yunhe_virtio_fuzz::virtio::block::{MemoryBackend, VirtioBlock};
use yunhe_virtio_fuzz::virtio::testing::CountingInterrupt;

fuzz_target!(|data: &[u8]| {
    let Some((mem, q, flags)) = layout(data) else {
        return;
    };
    let read_only = flags & 4 != 0;
    let mut dev = VirtioBlock::new(Box::new(MemoryBackend::new(64 * 1024)), read_only, "fuzz");
    let irq = Arc::new(CountingInterrupt::default());
    if dev.activate(mem, irq, vec![q]).is_err() {
        return;
    }
    let _ = dev.process_queue(0);
    // A second notification with nothing new must be harmless.
    let _ = dev.process_queue(0);
    let s = dev.stats();
    assert!(s.requests <= 512);
});
