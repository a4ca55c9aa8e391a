//! The part of the main crate's `vmm` module the virtio devices name (`crate::vmm::memory`).

/// Guest RAM mappings.
#[path = "../../src/vmm/memory.rs"]
pub mod memory;
