//! The fuzz entry point of the qcow2 reader (src/image/qcow2/fuzzing.rs), under a parent that
//! re-exports the qcow2 module as `super`.

pub use crate::qcow2::*;

/// `convert_bytes`.
#[path = "../../src/image/qcow2/fuzzing.rs"]
pub mod entry;
