//! The VMM's virtio device models, compiled on their own so that the fuzz targets (and a quick
//! `cargo test` while the main crate is mid-edit) can reach them without a library target in
//! the main crate.

#[path = "../../src/vmm/devices/virtio/mod.rs"]
pub mod virtio;
