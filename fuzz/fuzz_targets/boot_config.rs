//! grub.cfg, BLS entries and extlinux.conf parsing on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yunhe_virtio_fuzz::diskboot_fuzz::entry::boot_config(data));
