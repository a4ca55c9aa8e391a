//! Disk boot on an arbitrary disk: partition tables, ext4, FAT, symlinks and boot
//! configurations read from hostile bytes. Must never panic, loop or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yunhe_virtio_fuzz::diskboot::{Limits, find, part};

fuzz_target!(|data: &[u8]| {
    let _ = part::partitions(&data);
    let _ = find(&data, Limits { initrd: 1 << 20 });
});
