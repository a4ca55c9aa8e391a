//! grub.cfg, BLS entries and extlinux.conf parsing on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yunhe_virtio_fuzz::diskboot::config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let g = config::parse_grub(&text);
    let _ = g.default_entry();
    let _ = config::parse_bls(&text);
    let _ = config::parse_extlinux(&text);
    let _ = config::version_cmp(&text, "6.1.0-13");
});
