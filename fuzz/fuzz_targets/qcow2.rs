//! qcow2 conversion of arbitrary bytes: headers, L1/L2 tables, compressed clusters. Must never
//! panic, and the output stays within what the input can expand to.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yunhe_virtio_fuzz::qcow2_fuzz::entry::convert_bytes(data));
