//! The entry points the fuzz targets call (fuzz/fuzz_targets/diskboot.rs and boot_config.rs),
//! shared with the stable-Rust test below that feeds them every seed and every input the
//! fuzzer once found a bug with (fuzz/seeds/<target>/, fuzz/regressions/<target>/), so CI,
//! which has no nightly toolchain, still proves those inputs neither panic nor hang.
//!
//! The fuzz crate compiles this file with `super` re-exporting this module's parent
//! (fuzz/src/diskboot_fuzz.rs), so it names nothing but `super::`.

use super::{Limits, config, find, part};

/// A whole disk: the partition table, then everything `find` reads.
pub fn disk(data: &[u8]) {
    let _ = part::partitions(&data);
    let _ = find(&data, Limits { initrd: 1 << 20 });
}

/// One configuration file read as each of the formats.
pub fn boot_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let g = config::parse_grub(&text);
    let _ = g.default_entry();
    let _ = config::parse_bls(&text);
    let _ = config::parse_extlinux(&text);
    let _ = config::version_cmp(&text, "6.1.0-13");
}

#[cfg(test)]
mod corpus {
    use std::path::PathBuf;

    /// The files of fuzz/seeds/<target>/ and fuzz/regressions/<target>/.
    pub(crate) fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut out = Vec::new();
        for kind in ["seeds", "regressions"] {
            let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let data = std::fs::read(&p).expect("read a fuzz input");
                out.push((p, data));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::corpus::inputs;

    #[test]
    fn diskboot_seeds_and_regressions_do_not_panic() {
        let all = inputs("diskboot");
        assert!(all.len() >= 6, "fuzz/seeds/diskboot is missing");
        for (path, data) in all {
            eprintln!("{}", path.display());
            super::disk(&data);
        }
    }

    #[test]
    fn boot_config_seeds_and_regressions_do_not_panic() {
        let all = inputs("boot_config");
        assert!(all.len() >= 4, "fuzz/seeds/boot_config is missing");
        for (path, data) in all {
            eprintln!("{}", path.display());
            super::boot_config(&data);
        }
    }

    /// The seeds are real images: each one boots (the fuzzer starts from bootable disks).
    /// Not `whole-fat12-esp`: a FAT volume on the whole disk (no partition table) is taken
    /// for an MBR, as its boot sector ends in 0x55aa and mkfs.vfat's boot message fills the
    /// partition slots; it stays a seed for the FAT parser's bytes.
    #[test]
    fn diskboot_seeds_boot() {
        for (path, data) in inputs("diskboot") {
            let name = path.to_string_lossy();
            if !name.contains("/seeds/") || name.ends_with("whole-fat12-esp") {
                continue;
            }
            let found = super::find(&data.as_slice(), super::Limits { initrd: 1 << 20 });
            assert!(found.is_ok(), "{}: {found:?}", path.display());
        }
    }
}
