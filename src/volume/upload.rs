//! Cinder's upload-to-image: `os-volume_upload_image` on
//! `POST /v3/volumes/{id}/action` (`openstack image create --volume`).
//!
//! As Cinder's `copy_volume_to_image`: the volume goes `available` →
//! `uploading` in one transaction, a queued image is made in Glance as the
//! project's (with the volume's image metadata that is not Glance's own core
//! properties, minus the namespaces Glance reserves), the 202 answers, and in
//! the background the image goes `saving`, the volume's file is copied
//! (a reflink, else a sparse copy) and checked in (size, checksum, os_hash
//! as Glance computes them), `active`. The volume then goes back to
//! `available` (or `in-use` when it is attached), on failure too, and a
//! failed image is deleted, as Cinder's manager deletes an image left
//! `queued` or `saving`. A kill -9 meanwhile: the volume start-up repair
//! puts an `uploading` volume back the same way, the image service's puts
//! the image back to `queued` and removes the staged copy.
//!
//! Cinder's `enable_force_upload` defaults to False, and yunhe keeps that
//! default: `force` is read (and must be a boolean) but ignored, so only an
//! `available` volume is uploaded. Raw and qcow2 are written (qcow2 by
//! `image::qcow2_writer`, only the volume's data clusters); another
//! `disk_format` (vmdk, vdi, ...) is a 400 that says so. Glance's
//! `image_size_cap` bounds the stored file: a bigger one fails the upload
//! (the image is deleted, the volume goes back).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::backend::{self, GIB};
use super::{Mv, VolumeError, VolumeResult, VolumeState, authorize, is_admin, now_string};
use crate::db::volume::{self as store, Volume, VolumeType};
use crate::http::body::decode;
use crate::http::json_response;
use crate::identity::AuthContext;
use crate::image::service::NewImage;

type S = Arc<VolumeState>;

/// The rule for the action, and the one for a public image (admins only).
const UPLOAD_IMAGE_RULE: &str = "volume_extension:volume_actions:upload_image";
const UPLOAD_PUBLIC_RULE: &str = "volume_extension:volume_actions:upload_public";

/// Cinder's schema: the disk formats it converts to.
const DISK_FORMATS: &[&str] = &["raw", "vmdk", "vdi", "qcow2", "vhd", "vhdx", "ploop"];
/// What this backend writes.
const WRITTEN_DISK_FORMATS: &[&str] = &["raw", "qcow2"];
/// Cinder's schema (3.1): the visibilities.
const VISIBILITIES: &[&str] = &["community", "public", "private", "shared"];
/// Cinder's `glance_core_properties` default: volume image metadata under
/// these names is not copied to the new image (Glance sets its own).
const GLANCE_CORE_PROPERTIES: &[&str] = &[
    "checksum",
    "container_format",
    "disk_format",
    "image_name",
    "image_id",
    "min_disk",
    "min_ram",
    "name",
    "size",
];
/// Cinder's `GLANCE_RESERVED_NAMESPACES`: prefixes of properties Glance
/// owns, never copied (a signature would no longer match the data).
const RESERVED_NAMESPACES: &[&str] = &["os_glance", "img_signature", "signature_verified"];

/// The request body, `{"os-volume_upload_image": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadBody {
    #[serde(rename = "os-volume_upload_image")]
    upload: UploadRequest,
}

/// The action's argument, as Cinder's `volume_upload_image` schema (and its
/// 3.1 form with `visibility` and `protected`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    image_name: String,
    #[serde(default)]
    force: Option<Flag>,
    #[serde(default)]
    disk_format: Option<String>,
    #[serde(default)]
    container_format: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    protected: Option<Flag>,
}

/// Cinder's `parameter_types.boolean`: a JSON boolean or one of its names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Text(String),
}

impl Flag {
    fn value(&self, key: &str) -> VolumeResult<bool> {
        match self {
            Flag::Bool(b) => Ok(*b),
            Flag::Text(t) => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" | "y" | "t" => Ok(true),
                "false" | "0" | "off" | "no" | "n" | "f" => Ok(false),
                _ => Err(bad(format!(
                    "Invalid input for field/attribute {key}. Value: {t}. '{t}' is not one of the boolean values"
                ))),
            },
        }
    }
}

/// What the checks made of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadPlan {
    pub image_name: String,
    pub disk_format: String,
    pub container_format: String,
    pub visibility: String,
    pub protected: bool,
    /// Asked for; ignored, as Cinder's `enable_force_upload = False`.
    pub force: bool,
}

fn bad(message: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(message.into())
}

/// Cinder's checks of the argument at microversion `mv`; no state is read.
pub fn plan(request: UploadRequest, mv: Mv) -> VolumeResult<UploadPlan> {
    let name_len = request.image_name.chars().count();
    if name_len == 0 || name_len > 255 {
        return Err(bad(format!(
            "Invalid input for field/attribute image_name. Value: {}. must be 1 to 255 characters",
            request.image_name
        )));
    }
    let force = match &request.force {
        Some(f) => f.value("force")?,
        None => false,
    };
    // Below 3.1 the schema has no visibility or protected.
    if !mv.at_least(1) {
        for (key, given) in [
            ("visibility", request.visibility.is_some()),
            ("protected", request.protected.is_some()),
        ] {
            if given {
                return Err(bad(format!(
                    "Additional properties are not allowed ('{key}' was unexpected)"
                )));
            }
        }
    }
    let disk_format = request.disk_format.unwrap_or_else(|| "raw".into());
    if !DISK_FORMATS.contains(&disk_format.as_str()) {
        return Err(bad(format!(
            "Invalid input for field/attribute disk_format. Value: {disk_format}. '{disk_format}' is not one of {DISK_FORMATS:?}"
        )));
    }
    if !WRITTEN_DISK_FORMATS.contains(&disk_format.as_str()) {
        return Err(bad(format!(
            "Invalid input received: disk_format {disk_format} is not supported by this backend: it uploads raw and qcow2 images only (no {disk_format} writer)."
        )));
    }
    let container_format = request.container_format.unwrap_or_else(|| "bare".into());
    match container_format.as_str() {
        "bare" => {}
        // Cinder's allow_compression_on_image_upload defaults to False.
        "compressed" => {
            return Err(bad(
                "Image compression upload disallowed, but container_format is compressed.",
            ));
        }
        other => {
            return Err(bad(format!(
                "Invalid input received: container_format {other} is not supported: a volume is uploaded as a bare image."
            )));
        }
    }
    let visibility = request.visibility.unwrap_or_else(|| "private".into());
    if !VISIBILITIES.contains(&visibility.as_str()) {
        return Err(bad(format!(
            "Invalid input for field/attribute visibility. Value: {visibility}. '{visibility}' is not one of {VISIBILITIES:?}"
        )));
    }
    let protected = match &request.protected {
        Some(f) => f.value("protected")?,
        None => false,
    };
    Ok(UploadPlan {
        image_name: request.image_name,
        disk_format,
        container_format,
        visibility,
        protected,
        force,
    })
}

/// The volume's image metadata the new image gets as properties: all but
/// Glance's core properties and its reserved namespaces (Cinder's
/// `_merge_volume_image_meta` and `filter_out_reserved_namespaces_metadata`).
pub fn image_properties(meta: &BTreeMap<String, String>) -> serde_json::Map<String, Value> {
    meta.iter()
        .filter(|(k, _)| !GLANCE_CORE_PROPERTIES.contains(&k.as_str()))
        .filter(|(k, _)| !RESERVED_NAMESPACES.iter().any(|ns| k.starts_with(ns)))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

/// The status a volume goes back to after an upload: Cinder's
/// `volume_update_status_based_on_attachment`.
pub fn settled_status(v: &Volume) -> &'static str {
    if v.attach_status == "attached" || !v.attachments.is_empty() {
        "in-use"
    } else {
        "available"
    }
}

/// The volume type as Cinder's response renders the object.
#[derive(Debug, Serialize)]
struct TypeObject {
    id: String,
    name: String,
    description: Option<String>,
    is_public: bool,
    extra_specs: BTreeMap<String, String>,
    qos_specs_id: Option<String>,
    created_at: String,
    updated_at: Option<String>,
    deleted: bool,
    deleted_at: Option<String>,
}

/// The 202 body's member, as Cinder's `copy_volume_to_image` returns it.
#[derive(Debug, Serialize)]
struct UploadView {
    id: String,
    updated_at: Option<String>,
    status: &'static str,
    display_description: Option<String>,
    size: i64,
    volume_type: Option<TypeObject>,
    image_id: String,
    container_format: String,
    disk_format: String,
    image_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    protected: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    visibility: Option<String>,
}

#[derive(Debug, Serialize)]
struct UploadReply {
    #[serde(rename = "os-volume_upload_image")]
    upload: UploadView,
}

/// The action: checks, the volume `uploading`, the image queued, the copy
/// started; answers 202.
pub async fn upload(
    s: &S,
    ctx: &AuthContext,
    mv: Mv,
    id: &str,
    arg: Value,
) -> VolumeResult<Response> {
    let body: UploadBody =
        decode(serde_json::json!({ "os-volume_upload_image": arg })).map_err(VolumeError::from)?;
    let wanted = id.to_string();
    let found = s
        .read(move |conn| Ok(store::get_volume(conn, &wanted)?))
        .await?;
    let v = match found {
        Some(v) if is_admin(s, ctx) || ctx.project_id() == Some(v.project_id.as_str()) => v,
        _ => {
            return Err(VolumeError::NotFound(format!(
                "Volume {id} could not be found."
            )));
        }
    };
    let target = super::project_target(&v.project_id);
    authorize(s, ctx, UPLOAD_IMAGE_RULE, &target)?;
    let plan = plan(body.upload, mv)?;
    if mv.at_least(1) && plan.visibility == "public" {
        authorize(s, ctx, UPLOAD_PUBLIC_RULE, &target)?;
    }
    // The conditional update: available → uploading (force is ignored).
    let vid = v.id.clone();
    let (v, vtype) = s
        .write(move |tx| {
            let mut v = store::get_volume(tx, &vid)?.ok_or_else(|| {
                VolumeError::NotFound(format!("Volume {vid} could not be found."))
            })?;
            if v.status != "available" {
                return Err(bad(format!(
                    "Invalid volume: Volume {vid} status must be available"
                )));
            }
            v.status = "uploading".into();
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
            let vtype = store::get_type(tx, &v.volume_type_id)?;
            Ok((v, vtype))
        })
        .await?;
    let size_bytes = (v.size.max(0) as u64).saturating_mul(GIB);
    let created = s
        .images
        .create_queued(NewImage {
            name: plan.image_name.clone(),
            owner: v.project_id.clone(),
            disk_format: plan.disk_format.clone(),
            container_format: plan.container_format.clone(),
            visibility: if mv.at_least(1) {
                plan.visibility.clone()
            } else {
                "private".into()
            },
            protected: plan.protected,
            properties: image_properties(&v.image_metadata),
            min_disk: 0,
            min_ram: 0,
            data_bytes: Some(size_bytes),
        })
        .await;
    let image_id = match created {
        Ok(image_id) => image_id,
        Err(e) => {
            // Cinder rolls the status back when the image cannot be made.
            settle(s, &v.id).await;
            return Err(bad(e.to_string()));
        }
    };
    let (s2, vid, iid) = (s.clone(), v.id.clone(), image_id.clone());
    let format = plan.disk_format.clone();
    tokio::spawn(async move {
        if let Err(e) = copy_to_image(&s2, &vid, &iid, &format).await {
            tracing::warn!(volume = %vid, image = %iid, error = %e, "upload to image failed");
            s2.images.discard_snapshot(&iid).await;
            let _ = tokio::fs::remove_file(s2.images.staging_path(&iid)).await;
        }
        settle(&s2, &vid).await;
    });
    let reply = UploadReply {
        upload: UploadView {
            id: v.id.clone(),
            updated_at: v.updated_at.clone(),
            status: "uploading",
            display_description: v.description.clone(),
            size: v.size,
            volume_type: vtype.map(type_object),
            image_id,
            container_format: plan.container_format,
            disk_format: plan.disk_format,
            image_name: plan.image_name,
            protected: mv.at_least(1).then_some(plan.protected),
            visibility: mv.at_least(1).then_some(plan.visibility),
        },
    };
    Ok(json_response(
        StatusCode::ACCEPTED,
        &serde_json::to_value(reply).unwrap_or(Value::Null),
    ))
}

fn type_object(t: VolumeType) -> TypeObject {
    TypeObject {
        id: t.id,
        name: t.name,
        description: t.description,
        is_public: t.is_public,
        extra_specs: t.extra_specs,
        qos_specs_id: t.qos_specs_id,
        created_at: t.created_at,
        updated_at: None,
        deleted: false,
        deleted_at: None,
    }
}

/// Why a copy failed.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error("the image is gone or no longer queued")]
    ImageGone,
    #[error("{0}")]
    Image(#[from] crate::image::service::ImageServiceError),
    #[error("copying the volume's data: {0}")]
    Io(#[from] std::io::Error),
    #[error("the image would be larger than image_size_cap ({0} bytes)")]
    OverCap(u64),
    #[error("{0}")]
    Qcow2(#[from] crate::image::qcow2_writer::Qcow2WriteError),
}

/// The background half: `saving`, the copy (raw: a reflink or sparse copy;
/// qcow2: the writer, which stops at the size cap), the check-in (`active`,
/// `virtual_size` the volume's bytes).
async fn copy_to_image(
    s: &S,
    volume_id: &str,
    image_id: &str,
    disk_format: &str,
) -> Result<(), CopyError> {
    if !s.images.mark_saving(image_id).await? {
        return Err(CopyError::ImageGone);
    }
    let src = s.backend.volume_path(volume_id);
    let staged = s.images.staging_path(image_id);
    let dest = staged.clone();
    let cap = s.image_size_cap;
    let qcow2 = disk_format == "qcow2";
    let virtual_size = tokio::task::spawn_blocking(move || -> Result<u64, CopyError> {
        let len = std::fs::metadata(&src)?.len();
        if qcow2 {
            crate::image::qcow2_writer::write_file(&src, &dest, cap).map_err(|e| match e {
                crate::image::qcow2_writer::Qcow2WriteError::OverLimit(cap) => {
                    CopyError::OverCap(cap)
                }
                e => e.into(),
            })?;
        } else {
            // Glance refuses data over the cap; the raw image is the volume's size.
            if len > cap {
                return Err(CopyError::OverCap(cap));
            }
            backend::clone_file(&src, &dest)?;
        }
        Ok(len)
    })
    .await
    .map_err(|e| CopyError::Io(std::io::Error::other(e)))??;
    s.images
        .finish_upload(image_id, staged, Some(virtual_size))
        .await?;
    Ok(())
}

/// Puts an `uploading` volume back to `available` or `in-use`.
async fn settle(s: &S, volume_id: &str) {
    let vid = volume_id.to_string();
    let result = s
        .write(move |tx| {
            if let Some(mut v) = store::get_volume(tx, &vid)?
                && v.status == "uploading"
            {
                v.status = settled_status(&v).into();
                v.updated_at = Some(now_string());
                store::put_volume(tx, &v)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(volume = %volume_id, error = %e, "could not end an upload's status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(arg: Value) -> VolumeResult<UploadRequest> {
        let body: UploadBody = decode(json!({ "os-volume_upload_image": arg }))?;
        Ok(body.upload)
    }

    fn planned(arg: Value, mv: u16) -> VolumeResult<UploadPlan> {
        plan(request(arg)?, Mv(mv))
    }

    /// The 400's message for a refused argument.
    fn refused(arg: Value, mv: u16) -> String {
        match planned(arg, mv) {
            Err(VolumeError::BadRequest(m)) => m,
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_cinders() {
        let p = planned(json!({"image_name": "img"}), 0).expect("plan");
        assert_eq!(
            p,
            UploadPlan {
                image_name: "img".into(),
                disk_format: "raw".into(),
                container_format: "bare".into(),
                visibility: "private".into(),
                protected: false,
                force: false,
            }
        );
        let p = planned(
            json!({"image_name": "img", "force": "True", "visibility": "public", "protected": "yes",
                   "disk_format": "raw", "container_format": "bare"}),
            1,
        )
        .expect("plan");
        assert!(p.force && p.protected);
        assert_eq!(p.visibility, "public");
        // Nulls, as openstacksdk's v2 proxy sends them, are the defaults.
        let p = planned(
            json!({"image_name": "img", "disk_format": null, "container_format": null}),
            0,
        )
        .expect("plan");
        assert_eq!(
            (p.disk_format.as_str(), p.container_format.as_str()),
            ("raw", "bare")
        );
    }

    #[test]
    fn refusals_name_the_member() {
        let missing = refused(json!({"force": true}), 3);
        assert!(
            missing.contains("'image_name' is a required property"),
            "{missing}"
        );
        let extra = refused(json!({"image_name": "i", "size": 1}), 3);
        assert!(extra.contains("Additional properties"), "{extra}");
        let blank = refused(json!({"image_name": ""}), 3);
        assert!(blank.contains("image_name"), "{blank}");
        let long = refused(json!({"image_name": "x".repeat(256)}), 3);
        assert!(long.contains("image_name"), "{long}");
        let force = refused(json!({"image_name": "i", "force": "maybe"}), 3);
        assert!(force.contains("force"), "{force}");
        let fmt = refused(json!({"image_name": "i", "disk_format": "iso"}), 3);
        assert!(
            fmt.contains("disk_format") && fmt.contains("is not one of"),
            "{fmt}"
        );
        let vmdk = refused(json!({"image_name": "i", "disk_format": "vmdk"}), 3);
        assert!(vmdk.contains("raw and qcow2 images only"), "{vmdk}");
        let qcow2 = planned(json!({"image_name": "i", "disk_format": "qcow2"}), 3);
        assert_eq!(qcow2.expect("qcow2").disk_format, "qcow2");
        let compressed = refused(
            json!({"image_name": "i", "container_format": "compressed"}),
            3,
        );
        assert!(compressed.contains("compression"), "{compressed}");
        let ovf = refused(json!({"image_name": "i", "container_format": "ovf"}), 3);
        assert!(ovf.contains("container_format"), "{ovf}");
        let vis = refused(json!({"image_name": "i", "visibility": "everyone"}), 3);
        assert!(vis.contains("visibility"), "{vis}");
        // visibility and protected arrive with 3.1.
        let old = refused(json!({"image_name": "i", "visibility": "private"}), 0);
        assert!(old.contains("'visibility' was unexpected"), "{old}");
        let old = refused(json!({"image_name": "i", "protected": false}), 0);
        assert!(old.contains("'protected' was unexpected"), "{old}");
    }

    #[test]
    fn properties_drop_core_and_reserved_names() {
        let meta: BTreeMap<String, String> = [
            ("image_id", "abc"),
            ("image_name", "cirros"),
            ("checksum", "00"),
            ("container_format", "bare"),
            ("disk_format", "raw"),
            ("min_disk", "1"),
            ("min_ram", "0"),
            ("size", "10"),
            ("kernel_id", "k"),
            ("ramdisk_id", "r"),
            ("hw_disk_bus", "virtio"),
            ("os_glance_importer", "x"),
            ("img_signature", "sig"),
            ("img_signature_hash_method", "SHA-256"),
            ("signature_verified", "True"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let props = image_properties(&meta);
        let keys: Vec<&str> = props.keys().map(String::as_str).collect();
        assert_eq!(keys, ["hw_disk_bus", "kernel_id", "ramdisk_id"]);
        assert_eq!(props["kernel_id"], "k");
    }

    #[test]
    fn an_upload_ends_where_the_attachments_say() {
        let mut v = Volume {
            status: "uploading".into(),
            attach_status: "detached".into(),
            ..Volume::default()
        };
        assert_eq!(settled_status(&v), "available");
        v.attach_status = "attached".into();
        assert_eq!(settled_status(&v), "in-use");
    }
}
