//! Virtqueue descriptor-chain parsing: arbitrary descriptor tables, indirect tables, avail
//! rings and buffer addresses. Every accepted buffer must lie inside one guest memory region;
//! processing always terminates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryBackend;
use yunhe_virtio_fuzz::layout;
use yunhe_virtio_fuzz::virtio::{Segment, collect_chain, pop_chain};

fuzz_target!(|data: &[u8]| {
    let Some((mem, mut q, flags)) = layout(data) else {
        return;
    };
    let max = if flags & 2 != 0 { 4 } else { 1024 };
    let mut segs: Vec<Segment> = Vec::new();
    let mut popped = 0u32;
    while let Ok(Some(chain)) = pop_chain(&mut q, &mem, 0) {
        popped += 1;
        assert!(popped <= 256, "more chains than the queue holds");
        let head = chain.head_index();
        let len = match collect_chain(chain, &mem, &mut segs, max) {
            Ok(()) => {
                assert!(segs.len() <= max);
                let mut seen_writable = false;
                for s in &segs {
                    assert!(s.len > 0);
                    assert!(mem.get_slice(s.addr, s.len as usize).is_ok());
                    assert!(!seen_writable || s.writable);
                    seen_writable |= s.writable;
                }
                segs.iter()
                    .filter(|s| s.writable)
                    .map(|s| s.len)
                    .sum::<u32>()
            }
            Err(_) => 0,
        };
        if q.add_used(&mem, head, len).is_err() {
            break;
        }
    }
    let _ = q.needs_notification(&mem);
});
