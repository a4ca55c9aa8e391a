//! The entry point the qcow2 fuzz target calls (fuzz/fuzz_targets/qcow2.rs), shared with the
//! stable-Rust test below that feeds it every seed and every input the fuzzer once found a
//! bug with (fuzz/seeds/qcow2/, fuzz/regressions/qcow2/), so CI, which has no nightly
//! toolchain, still proves those inputs neither panic nor hang.
//!
//! The fuzz crate compiles this file with `super` re-exporting the qcow2 module
//! (fuzz/src/qcow2_fuzz.rs), so it names nothing but `super::`.

use super::{MAX_EXPANSION, convert};

/// Converts `data`; on success the bytes handed to the sink stay within what the input can
/// expand to (the conversion's own budget).
pub fn convert_bytes(data: &[u8]) {
    let mut written = 0u64;
    let r = convert(data, |_, d| {
        written += d.len() as u64;
        Ok(())
    });
    if r.is_ok() {
        assert!(written <= (data.len() as u64 + 1) * MAX_EXPANSION + (2 << 20));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn qcow2_seeds_and_regressions_do_not_panic() {
        let fuzz = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut n = 0;
        for kind in ["seeds", "regressions"] {
            let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join("qcow2")) else {
                continue;
            };
            let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                eprintln!("{}", p.display());
                let data = std::fs::read(&p).expect("read a fuzz input");
                super::convert_bytes(&data);
                n += 1;
            }
        }
        assert!(n >= 5, "fuzz/seeds/qcow2 is missing");
    }

    /// The seeds are real images: each converts.
    #[test]
    fn qcow2_seeds_convert() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/qcow2");
        for e in std::fs::read_dir(dir).expect("fuzz/seeds/qcow2").flatten() {
            let data = std::fs::read(e.path()).expect("read a seed");
            let r = super::convert(data.as_slice(), |_, _| Ok(()));
            assert!(r.is_ok(), "{}: {r:?}", e.path().display());
        }
    }
}
