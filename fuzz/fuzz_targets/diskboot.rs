//! Disk boot on an arbitrary disk: partition tables, ext4, FAT, symlinks and boot
//! configurations read from hostile bytes. Must never panic, loop or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yunhe_virtio_fuzz::diskboot_fuzz::entry::disk(data));
