//! The fuzz entry points of disk boot (src/vmm/diskboot/fuzzing.rs), under a parent that
//! re-exports the disk-boot module as `super`.

pub use crate::diskboot::*;

/// `disk` and `boot_config`.
#[path = "../../src/vmm/diskboot/fuzzing.rs"]
pub mod entry;
