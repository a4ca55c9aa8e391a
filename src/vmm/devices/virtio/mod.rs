//! Virtio device models (owned by the virtio helper).
