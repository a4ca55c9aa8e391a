//! Nova's block device mappings (`block_device_mapping_v2` in a server
//! create) to Cinder volumes. Three steps:
//!
//! - [`parse`] reads the mappings into typed [`Mapping`]s with Nova's 400
//!   texts (schema, sources and destinations, sizes, the boot sequence);
//!   `image → local` stays the image-backed root disk, `blank → local` the
//!   flavor's disks ([`local_disks`]).
//! - [`resolve`] (at create, before anything is written) checks every source
//!   the caller named (volume, snapshot, image) and finds what a
//!   volume-backed server boots: the kernel and ramdisk its root volume's
//!   image named.
//! - `prepare` (at build time, task state `block_device_mapping`) makes the
//!   volumes (image → volume, blank → volume, snapshot → volume through
//!   `volume::ops`, waiting until they are available), reserves and attaches
//!   each one and records it on the server as `os-volume_attachments` does,
//!   so views show it, every boot has its disk (a boot index 0 volume is the
//!   root disk: its backing file, no copy of the image) and server delete
//!   detaches or deletes it as `delete_on_termination` says. A mapping that
//!   fails puts the server in ERROR with a fault naming the mapping.
//!
//! The files: `v2` (one `block_device_mapping_v2` item), `parse` (the
//! mappings of a create, legacy ones too), `local` (swap and ephemeral
//! disks), `resolve`, `prepare`, `snapshot` (createImage of a volume-backed
//! server and the mappings its image carries), `rebuild` (rebuild and
//! reimage of the root volume).

mod local;
mod parse;
mod prepare;
mod rebuild;
mod resolve;
mod snapshot;
mod v2;

use std::sync::Arc;
use std::time::Duration;

use super::{ComputeError, ComputeState};

pub use local::{LocalRequest, local_disks};
pub use parse::{Given, parse};
pub use prepare::spawn_build;
pub use rebuild::{RootRebuild, check_rebuild, reimage_root};
pub use resolve::resolve;
pub use snapshot::{image_mappings, snapshot_properties};
pub use v2::{BdmV2, LegacyBdm};

type S = Arc<ComputeState>;

/// How long a new volume may take to become available (Nova's
/// `block_device_allocate_retries` × interval, 60 × 3 s).
pub const ALLOCATE_LIMIT: Duration = Duration::from_secs(180);

/// Where a mapped volume comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An existing volume.
    Volume(String),
    /// A new volume from this image.
    Image(String),
    /// A new volume from this snapshot.
    Snapshot(String),
    /// A new empty volume.
    Blank,
}

/// One block device mapping to a volume, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub source: Source,
    /// GiB; required for image and blank sources.
    pub volume_size: Option<i64>,
    /// 0: the root disk; other non-negative values: bootable data disks;
    /// None (or -1 in the request): not bootable.
    pub boot_index: Option<i64>,
    /// The device name asked for, as `/dev/vdX`.
    pub device_name: Option<String>,
    pub delete_on_termination: bool,
    pub tag: Option<String>,
    /// The volume type (2.67+), a name or id.
    pub volume_type: Option<String>,
}

impl Mapping {
    /// How a fault names this mapping.
    pub fn describe(&self, index: usize) -> String {
        let source = match &self.source {
            Source::Volume(id) => format!("volume {id}"),
            Source::Image(id) => format!("image {id}"),
            Source::Snapshot(id) => format!("snapshot {id}"),
            Source::Blank => "blank".to_string(),
        };
        format!("block device mapping {index} ({source} -> volume)")
    }
}

/// What the mappings ask for: the image of an image-backed root disk
/// (empty for a volume-backed server) and the volumes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requested {
    pub image_id: String,
    pub mappings: Vec<Mapping>,
    /// The `blank → local` mappings (swap and ephemeral disks).
    pub local: Vec<LocalRequest>,
}

#[cfg(test)]
impl Requested {
    /// The mapping of the root disk when it is a volume.
    pub fn root(&self) -> Option<&Mapping> {
        self.mappings.iter().find(|m| m.boot_index == Some(0))
    }
}

fn bad(message: impl Into<String>) -> ComputeError {
    ComputeError::BadRequest(message.into())
}

fn invalid_bdm(detail: &str) -> ComputeError {
    bad(format!("Block Device Mapping is Invalid: {detail}"))
}
