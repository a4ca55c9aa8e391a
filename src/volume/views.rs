//! Cinder's JSON shapes, as serde structs.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Mv, VolumeState};
use crate::db::volume::{QosSpecs, Snapshot, Volume, VolumeType};

/// A volume in a summary list.
#[derive(Serialize)]
pub struct VolumeSummary {
    pub id: String,
    pub name: Option<String>,
    pub links: Value,
}

#[derive(Serialize)]
pub struct AttachmentView {
    pub id: String,
    pub attachment_id: String,
    pub volume_id: String,
    pub server_id: Option<String>,
    pub host_name: Option<String>,
    pub device: Option<String>,
    pub attached_at: Option<String>,
}

/// A volume in detail.
#[derive(Serialize)]
pub struct VolumeView {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: i64,
    pub status: String,
    pub availability_zone: String,
    pub bootable: &'static str,
    pub encrypted: bool,
    pub multiattach: bool,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub volume_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_type_id: Option<String>,
    pub user_id: String,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub attachments: Vec<AttachmentView>,
    pub links: Value,
    pub replication_status: &'static str,
    pub consistencygroup_id: Option<String>,
    pub migration_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_image_metadata: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "os-vol-tenant-attr:tenant_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub tenant_id: Option<String>,
    #[serde(
        rename = "os-vol-host-attr:host",
        skip_serializing_if = "Option::is_none"
    )]
    pub host: Option<String>,
    #[serde(
        rename = "os-vol-mig-status-attr:migstat",
        skip_serializing_if = "Option::is_none"
    )]
    pub migstat: Option<Option<String>>,
    #[serde(
        rename = "os-vol-mig-status-attr:name_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub name_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_targets: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumes_quota: Option<bool>,
}

/// The host@backend#pool the file backend reports.
pub const HOST: &str = "yunhe@file#file";
/// The service id of cinder-volume (stable across restarts).
pub const SERVICE_UUID: &str = "8b0b8a9d-8f0a-4d54-9f29-9a1f3c0e7a11";

/// What the caller may see beyond the basics.
#[derive(Clone, Copy, Default)]
pub struct Extras {
    pub tenant: bool,
    pub host: bool,
    pub migration: bool,
    pub image_metadata: bool,
}

/// The user metadata plus Cinder's `readonly` admin metadata when set.
fn shown_metadata(v: &Volume) -> BTreeMap<String, String> {
    let mut metadata = v.metadata.clone();
    if let Some(readonly) = v.readonly {
        metadata.insert(
            "readonly".into(),
            if readonly { "True" } else { "False" }.into(),
        );
    }
    metadata
}

pub fn volume(s: &VolumeState, v: &Volume, type_name: &str, mv: Mv, x: Extras) -> VolumeView {
    let attachments = v
        .attachments
        .iter()
        .filter(|a| a.attach_status == "attached")
        .map(|a| AttachmentView {
            id: v.id.clone(),
            attachment_id: a.id.clone(),
            volume_id: v.id.clone(),
            server_id: a.instance_uuid.clone(),
            host_name: a.host_name.clone(),
            device: a.mountpoint.clone(),
            attached_at: a.attached_at.clone(),
        })
        .collect();
    VolumeView {
        id: v.id.clone(),
        name: v.name.clone(),
        description: v.description.clone(),
        size: v.size,
        status: v.status.clone(),
        availability_zone: v.availability_zone.clone(),
        bootable: if v.bootable { "true" } else { "false" },
        encrypted: false,
        multiattach: v.multiattach,
        snapshot_id: v.snapshot_id.clone(),
        source_volid: v.source_volid.clone(),
        metadata: shown_metadata(v),
        volume_type: type_name.to_string(),
        volume_type_id: mv.at_least(63).then(|| v.volume_type_id.clone()),
        user_id: v.user_id.clone(),
        created_at: v.created_at.clone(),
        updated_at: v.updated_at.clone(),
        attachments,
        links: s.links(&v.project_id, "volumes", &v.id),
        replication_status: "disabled",
        consistencygroup_id: None,
        migration_status: v.migration_status.clone(),
        volume_image_metadata: (x.image_metadata && !v.image_metadata.is_empty())
            .then(|| v.image_metadata.clone()),
        tenant_id: x.tenant.then(|| v.project_id.clone()),
        host: x.host.then(|| HOST.to_string()),
        migstat: x.migration.then(|| v.migration_status.clone()),
        name_id: x.migration.then_some(None),
        group_id: mv.at_least(13).then_some(None),
        provider_id: mv.at_least(21).then_some(None),
        service_uuid: mv.at_least(48).then(|| SERVICE_UUID.to_string()),
        shared_targets: mv.at_least(48).then_some(false),
        cluster_name: mv.at_least(61).then_some(None),
        consumes_quota: mv.at_least(65).then_some(true),
    }
}

#[derive(Serialize)]
pub struct SnapshotView {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub volume_id: String,
    pub size: i64,
    pub status: String,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_snapshot_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumes_quota: Option<bool>,
    #[serde(
        rename = "os-extended-snapshot-attributes:project_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub project_id: Option<String>,
    #[serde(
        rename = "os-extended-snapshot-attributes:progress",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress: Option<String>,
}

pub fn snapshot(snap: &Snapshot, mv: Mv, extended: bool) -> SnapshotView {
    SnapshotView {
        id: snap.id.clone(),
        name: snap.name.clone(),
        description: snap.description.clone(),
        volume_id: snap.volume_id.clone(),
        size: snap.size,
        status: snap.status.clone(),
        metadata: snap.metadata.clone(),
        created_at: snap.created_at.clone(),
        updated_at: snap.updated_at.clone(),
        user_id: mv.at_least(41).then(|| snap.user_id.clone()),
        group_snapshot_id: mv.at_least(14).then_some(None),
        consumes_quota: mv.at_least(65).then_some(true),
        project_id: extended.then(|| snap.project_id.clone()),
        progress: extended.then(|| snap.progress.clone()),
    }
}

#[derive(Serialize)]
pub struct TypeView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
    #[serde(rename = "os-volume-type-access:is_public")]
    pub access_is_public: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_specs: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_specs_id: Option<Option<String>>,
}

pub fn volume_type(t: &VolumeType, specs: bool, qos: bool) -> TypeView {
    TypeView {
        id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        is_public: t.is_public,
        access_is_public: t.is_public,
        extra_specs: specs.then(|| t.extra_specs.clone()),
        qos_specs_id: qos.then(|| t.qos_specs_id.clone()),
    }
}

#[derive(Serialize)]
pub struct QosView {
    pub id: String,
    pub name: String,
    pub consumer: String,
    pub specs: BTreeMap<String, String>,
}

pub fn qos(q: &QosSpecs) -> QosView {
    QosView {
        id: q.id.clone(),
        name: q.name.clone(),
        consumer: q.consumer.clone(),
        specs: q.specs.clone(),
    }
}
