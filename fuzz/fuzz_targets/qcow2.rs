//! qcow2 conversion of arbitrary bytes: headers, L1/L2 tables, compressed clusters. Must never
//! panic, and the output stays within what the input can expand to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yunhe_virtio_fuzz::qcow2;

fuzz_target!(|data: &[u8]| {
    let mut written = 0u64;
    let r = qcow2::convert(data, |_, d| {
        written += d.len() as u64;
        Ok(())
    });
    if r.is_ok() {
        assert!(written <= (data.len() as u64 + 1) * 1032 + (2 << 20));
    }
});
