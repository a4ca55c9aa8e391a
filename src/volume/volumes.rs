//! Volumes: create (blank, from an image, a snapshot or another volume),
//! show, update, delete, and the actions (extend, reset-status, force-delete, bootable,
//! read-only, image metadata, attach and detach). List, detail and summary
//! are in `volume_list`, metadata in `volume_metadata`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

use super::ops::{self, Source};
use super::requests::{
    self, MAX_METADATA, SchemaBool, Size, action_arg, given, present, text, truthy,
};
use super::views::{self, Extras};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, allows, authorize, empty, is_admin, now_string,
    own_target, project_of, project_target, query_map,
};
use crate::db::volume::{self as store, Volume};
use crate::http::body;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

/// The most items one list returns.
pub const MAX_LIMIT: usize = 1000;

/// Create, show, update, delete and the actions; list, detail and summary
/// have their routes in `volume_list`, metadata in `volume_metadata`.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/volumes", post(create))
        .route("/v3/volumes/{id}", get(show).put(update).delete(delete))
        .route("/v3/volumes/{id}/action", post(action))
}
pub fn not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("Volume {id} could not be found."))
}

/// Loads a volume the caller may see (its project's, or any for admins):
/// 404 otherwise, as Cinder's project-scoped lookups answer.
pub async fn load_for(s: &S, ctx: &AuthContext, id: &str, rule: &str) -> VolumeResult<Volume> {
    let wanted = id.to_string();
    let v = s
        .read(move |conn| Ok(store::get_volume(conn, &wanted)?))
        .await?
        .ok_or_else(|| not_found(id))?;
    if !is_admin(s, ctx) && ctx.project_id() != Some(v.project_id.as_str()) {
        return Err(not_found(id));
    }
    authorize(s, ctx, rule, &project_target(&v.project_id))?;
    Ok(v)
}

fn extras(s: &S, ctx: &AuthContext, project: &str) -> Extras {
    let target = project_target(project);
    Extras {
        tenant: allows(s, ctx, "volume_extension:volume_tenant_attribute", &target),
        host: allows(s, ctx, "volume_extension:volume_host_attribute", &target),
        migration: allows(
            s,
            ctx,
            "volume_extension:volume_mig_status_attribute",
            &target,
        ),
        image_metadata: allows(
            s,
            ctx,
            "volume_extension:volume_image_metadata:show",
            &target,
        ),
    }
}

pub(super) async fn type_names(s: &S) -> VolumeResult<HashMap<String, String>> {
    s.read(|conn| {
        Ok(store::list_types(conn)?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect())
    })
    .await
}

pub(super) fn render(
    s: &S,
    ctx: &AuthContext,
    v: &Volume,
    names: &HashMap<String, String>,
    mv: Mv,
) -> Value {
    let name = names.get(&v.volume_type_id).cloned().unwrap_or_default();
    serde_json::to_value(views::volume(
        s,
        v,
        &name,
        mv,
        extras(s, ctx, &v.project_id),
    ))
    .unwrap_or(Value::Null)
}

/// The view create and update answer with: Cinder adds the extension
/// attributes (tenant, host, migration, image metadata) to show and lists only.
fn render_plain(s: &S, v: &Volume, names: &HashMap<String, String>, mv: Mv) -> Value {
    let name = names.get(&v.volume_type_id).cloned().unwrap_or_default();
    serde_json::to_value(views::volume(s, v, &name, mv, Extras::default())).unwrap_or(Value::Null)
}

pub(super) fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

// ------------------------------------------------------------------ create

/// `POST /v3/volumes`'s `volume` (Cinder's `volumes.create` schema; the
/// group, consistency group and scheduler hint members are taken and not
/// used).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateVolume {
    #[serde(default)]
    size: Option<Size>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    display_description: Option<String>,
    #[serde(default)]
    volume_type: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    source_volid: Option<String>,
    #[serde(default, rename = "imageRef")]
    image_ref: Option<String>,
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    multiattach: Option<bool>,
    #[serde(default, rename = "consistencygroup_id")]
    _consistencygroup_id: Option<IgnoredAny>,
    #[serde(default, rename = "group_id")]
    _group_id: Option<IgnoredAny>,
    #[serde(default)]
    backup_id: Option<IgnoredAny>,
    #[serde(default, rename = "scheduler_hints")]
    _scheduler_hints: Option<IgnoredAny>,
}

/// `PUT /v3/volumes/{id}`'s `volume`: a member given as `null` clears it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateVolume {
    #[serde(default, deserialize_with = "given")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    display_description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<BTreeMap<String, String>>,
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let obj = requests::take(&bytes, "volume")?;
    project_of(&ctx)?;
    authorize(&s, &ctx, "volume:create", &own_target(&ctx))?;
    let req: CreateVolume = requests::member("volume", obj)?;
    let name = match text("name", req.name, 255)? {
        Some(n) => Some(n),
        None => text("display_name", req.display_name, 255)?,
    };
    let description = match text("description", req.description, 255)? {
        Some(d) => Some(d),
        None => text("display_description", req.display_description, 255)?,
    };
    let metadata = requests::metadata(req.metadata.unwrap_or_default())?;
    let availability_zone = text("availability_zone", req.availability_zone, 255)?;
    let multiattach = req.multiattach.unwrap_or(false);
    if req.backup_id.is_some() {
        return Err(bad(
            "Invalid input received: creating a volume from a backup is not supported here.",
        ));
    }
    let snapshot_id = text("snapshot_id", req.snapshot_id, 36)?;
    let source_volid = text("source_volid", req.source_volid, 36)?;
    let image_ref = match text("imageRef", req.image_ref, 255)? {
        Some(i) => Some(i),
        None => text("image_id", req.image_id, 255)?,
    };
    let size = req.size.map(|Size(n)| n);
    let wanted_type = text("volume_type", req.volume_type, 255)?;
    // The zone, the one-source and the size rules are create_volume's (Nova's proxy shares them).
    let created = create_volume(
        &s,
        &ctx,
        NewVolume {
            name,
            description,
            size,
            volume_type: wanted_type,
            availability_zone,
            metadata,
            multiattach,
            snapshot_id,
            source_volid,
            image_ref,
        },
    )
    .await?;
    let names = type_names(&s).await?;
    let view = render_plain(&s, &created, &names, mv);
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"volume": view}),
    ))
}

/// A volume to create, as Cinder's create reads it (and Nova's `os-volumes`
/// proxy asks for one).
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Required unless a snapshot or source volume is given.
    pub size: Option<i64>,
    /// A type's name or id; else the source's type, else the default.
    pub volume_type: Option<String>,
    /// `nova` (the only zone) when not given.
    pub availability_zone: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub multiattach: bool,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    pub image_ref: Option<String>,
}

/// Creates a volume for the caller with Cinder's checks: the `volume:create`
/// rule (and `volume:create_from_image`), the zone, one source at most, the
/// source's visibility and size, the type's access, then quota and capacity
/// (in `ops::create`). Returns the record as created (`creating`).
pub async fn create_volume(s: &S, ctx: &AuthContext, req: NewVolume) -> VolumeResult<Volume> {
    let project = project_of(ctx)?;
    authorize(s, ctx, "volume:create", &own_target(ctx))?;
    let NewVolume {
        name,
        description,
        size,
        volume_type: wanted_type,
        availability_zone,
        metadata,
        multiattach,
        snapshot_id,
        source_volid,
        image_ref,
    } = req;
    let az = availability_zone.unwrap_or_else(|| "nova".into());
    if az != "nova" {
        return Err(bad(format!(
            "Invalid input received: Availability zone '{az}' is invalid."
        )));
    }
    let sources = [&snapshot_id, &source_volid, &image_ref]
        .iter()
        .filter(|x| x.is_some())
        .count();
    if sources > 1 {
        return Err(bad(
            "Invalid input received: only one of snapshot_id, source_volid and imageRef may be given.",
        ));
    }
    if size.is_none() && snapshot_id.is_none() && source_volid.is_none() {
        return Err(bad(
            "Invalid input received: size is required unless a snapshot or source volume is given.",
        ));
    }

    // The source: its size, type and what the new volume inherits.
    let now = now_string();
    let mut v = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project.clone(),
        user_id: ctx.user_id.clone(),
        name,
        description,
        size: size.unwrap_or(0),
        status: "creating".into(),
        attach_status: "detached".into(),
        availability_zone: az,
        multiattach,
        metadata,
        created_at: now.clone(),
        updated_at: Some(now),
        ..Volume::default()
    };
    let mut inherited_type: Option<String> = None;
    let source = if let Some(snap_id) = &snapshot_id {
        let snap = s
            .read({
                let id = snap_id.clone();
                move |conn| Ok(store::get_snapshot(conn, &id)?)
            })
            .await?
            .filter(|sn| is_admin(s, ctx) || sn.project_id == project)
            .ok_or_else(|| {
                VolumeError::NotFound(format!("Snapshot {snap_id} could not be found."))
            })?;
        let parent = s
            .read({
                let id = snap.volume_id.clone();
                move |conn| Ok(store::get_volume(conn, &id)?)
            })
            .await?;
        if size.is_none() {
            v.size = snap.size;
        } else if v.size < snap.size {
            return Err(bad(format!(
                "Invalid input received: Volume size '{}'GB cannot be smaller than the snapshot size {}GB. They must be >= original snapshot size.",
                v.size, snap.size
            )));
        }
        if let Some(parent) = parent {
            v.bootable = parent.bootable;
            v.image_metadata = parent.image_metadata;
        }
        inherited_type = Some(snap.volume_type_id.clone());
        v.snapshot_id = Some(snap.id.clone());
        Source::Snapshot(snap.id)
    } else if let Some(src_id) = &source_volid {
        let src = load_for(s, ctx, src_id, "volume:get").await?;
        if size.is_none() {
            v.size = src.size;
        } else if v.size < src.size {
            return Err(bad(format!(
                "Invalid input received: Volume size '{}'GB cannot be smaller than the source volume size {}GB. They must be >= original volume size.",
                v.size, src.size
            )));
        }
        v.bootable = src.bootable;
        v.image_metadata = src.image_metadata.clone();
        inherited_type = Some(src.volume_type_id.clone());
        v.source_volid = Some(src.id.clone());
        Source::Volume(src.id)
    } else if let Some(image_id) = &image_ref {
        authorize(s, ctx, "volume:create_from_image", &own_target(ctx))?;
        let scope = if is_admin(s, ctx) {
            None
        } else {
            Some(project.as_str())
        };
        let image = s.images.get_active(image_id, scope).await.map_err(|e| {
            bad(format!(
                "Invalid image identifier or unable to access requested image. ({e})"
            ))
        })?;
        let (bytes, qcow2) = super::ops::image_data(&image)?;
        let needed = (bytes.div_ceil(super::backend::GIB) as i64)
            .max(image.min_disk)
            .max(1);
        if v.size < needed {
            return Err(bad(format!(
                "Invalid input received: Size of specified image {}GB is larger than volume size {}GB.",
                needed, v.size
            )));
        }
        v.image_metadata = super::ops::image_metadata(&image);
        v.bootable = true;
        v.image_id = Some(image.id.clone());
        Source::Image {
            path: image.path.clone(),
            bytes,
            qcow2,
        }
    } else {
        Source::Blank
    };
    // The type: asked for, else the source's, else the default.
    let type_lookup = wanted_type.clone();
    let is_admin_caller = is_admin(s, ctx);
    let caller_project = project.clone();
    let vt = s
        .read(move |conn| {
            let t = match &type_lookup {
                Some(name_or_id) => match store::get_type(conn, name_or_id)? {
                    Some(t) => Some(t),
                    None => store::get_type_by_name(conn, name_or_id)?,
                },
                None => match &inherited_type {
                    Some(id) => store::get_type(conn, id)?,
                    None => store::get_type(conn, store::DEFAULT_TYPE_ID)?,
                },
            };
            Ok(match t {
                Some(t) if t.is_public || is_admin_caller => Some(t),
                Some(t) => {
                    let access = store::type_access(conn, &t.id)?;
                    access.contains(&caller_project).then_some(t)
                }
                None => None,
            })
        })
        .await?
        .ok_or_else(|| {
            VolumeError::NotFound(format!(
                "Volume type {} could not be found.",
                wanted_type.clone().unwrap_or_default()
            ))
        })?;
    v.volume_type_id = vt.id.clone();
    ops::create(s, v, source).await
}

// ------------------------------------------------------ show/update/delete

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let v = load_for(&s, &ctx, &id, "volume:get").await?;
    let names = type_names(&s).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume": render(&s, &ctx, &v, &names, mv)}),
    ))
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let obj = requests::take(&bytes, "volume")?;
    let v = load_for(&s, &ctx, &id, "volume:update").await?;
    let empty_body = obj.is_empty();
    let req: UpdateVolume = requests::member("volume", obj)?;
    if empty_body {
        return Err(bad(
            "Invalid input for field/attribute volume. Value: {}. {} does not have enough properties",
        ));
    }
    let name = match (req.name, req.display_name) {
        (Some(n), _) => Some(text("name", n, 255)?),
        (None, Some(n)) => Some(text("display_name", n, 255)?),
        (None, None) => None,
    };
    let description = match (req.description, req.display_description) {
        (Some(d), _) => Some(text("description", d, 255)?),
        (None, Some(d)) => Some(text("display_description", d, 255)?),
        (None, None) => None,
    };
    let metadata = req.metadata.map(requests::metadata).transpose()?;
    let vid = v.id.clone();
    let updated = s
        .write(move |tx| {
            let mut v = store::get_volume(tx, &vid)?.ok_or_else(|| not_found(&vid))?;
            if let Some(n) = name {
                v.name = n;
            }
            if let Some(d) = description {
                v.description = d;
            }
            if let Some(m) = metadata {
                v.metadata = m;
            }
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
            Ok(v)
        })
        .await?;
    let names = type_names(&s).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume": render_plain(&s, &updated, &names, mv)}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    let q = query_map(q);
    let v = load_for(&s, &ctx, &id, "volume:delete").await?;
    let cascade = q.get("cascade").is_some_and(|c| truthy(c));
    let force = mv.at_least(23) && q.get("force").is_some_and(|f| truthy(f));
    if force {
        authorize(
            &s,
            &ctx,
            "volume:force_delete",
            &project_target(&v.project_id),
        )?;
    }
    ops::delete(&s, &v.id, cascade, force).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ----------------------------------------------------------------- actions

/// Statuses an admin may set with os-reset_status.
const RESET_STATUSES: &[&str] = &[
    "available",
    "error",
    "creating",
    "deleting",
    "in-use",
    "attaching",
    "detaching",
    "error_deleting",
    "maintenance",
    "reserved",
    "error_extending",
    "extending",
    "error_restoring",
];

async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = requests::object(&bytes)?;
    if req.len() != 1 {
        return Err(bad("There is no such action"));
    }
    let Some((name, arg)) = req.into_iter().next() else {
        return Err(bad("There is no such action"));
    };
    match name.as_str() {
        "os-extend" => {
            let v = load_for(&s, &ctx, &id, "volume:extend").await?;
            let Extend {
                new_size: Size(new_size),
            } = action_arg(&name, arg)?;
            // 3.42: an attached volume grows online (Nova is told); below, only
            // an available one (a 400 for `in-use`, as Cinder).
            let attached = mv.at_least(42) && v.status == "in-use";
            if attached {
                authorize(
                    &s,
                    &ctx,
                    "volume:extend_attached_volume",
                    &project_target(&v.project_id),
                )?;
            }
            ops::extend(&s, &v.id, new_size, attached).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-retype" => {
            let v = load_for(&s, &ctx, &id, "volume:retype").await?;
            let req: Retype = action_arg(&name, arg)?;
            let new_type = body::check_name(&req.new_type, "new_type")?;
            // Only a host-local backend here: `on-demand` and `never` both
            // retype in place.
            let _ = req.migration_policy;
            super::retype::retype(&s, &v.id, new_type.trim()).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-reset_status" => {
            let v = load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_admin_actions:reset_status",
            )
            .await?;
            let ResetStatus {
                status,
                attach_status,
                migration_status,
            } = action_arg(&name, arg)?;
            if status.is_none() && attach_status.is_none() && migration_status.is_none() {
                return Err(bad(
                    "Must specify 'status', 'attach_status' or 'migration_status' for update.",
                ));
            }
            if let Some(st) = &status
                && !RESET_STATUSES.contains(&st.as_str())
            {
                return Err(bad(format!("Invalid input received: Invalid status {st}.")));
            }
            if let Some(a) = &attach_status
                && !["attached", "detached"].contains(&a.as_str())
            {
                return Err(bad(format!(
                    "Invalid input received: Invalid attach_status {a}."
                )));
            }
            let vid = v.id.clone();
            s.write(move |tx| {
                let mut v = store::get_volume(tx, &vid)?.ok_or_else(|| not_found(&vid))?;
                if let Some(st) = status {
                    v.status = st;
                }
                if let Some(a) = attach_status {
                    if a == "detached" {
                        v.attachments.clear();
                    }
                    v.attach_status = a;
                }
                if let Some(m) = migration_status {
                    v.migration_status = if m == "none" { None } else { Some(m) };
                }
                v.updated_at = Some(now_string());
                store::put_volume(tx, &v)?;
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-force_delete" => {
            let v = load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_admin_actions:force_delete",
            )
            .await?;
            ops::delete(&s, &v.id, true, true).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-set_bootable" => {
            let v = load_for(&s, &ctx, &id, "volume:update").await?;
            let SetBootable {
                bootable: SchemaBool(bootable),
            } = action_arg(&name, arg)?;
            set_flag(&s, v.id, move |v| v.bootable = bootable).await?;
            Ok(empty(StatusCode::OK))
        }
        "os-update_readonly_flag" => {
            let v = load_for(&s, &ctx, &id, "volume:update_readonly_flag").await?;
            let SetReadonly {
                readonly: SchemaBool(readonly),
            } = action_arg(&name, arg)?;
            if v.status != "available" {
                return Err(bad(format!(
                    "Invalid volume: Volume {id} status must be available to update readonly flag, but current status is: {}.",
                    v.status
                )));
            }
            set_flag(&s, v.id, move |v| v.readonly = Some(readonly)).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-set_image_metadata" => {
            let v = load_for(&s, &ctx, &id, "volume_extension:volume_image_metadata:set").await?;
            let req: SetImageMetadata = action_arg(&name, arg)?;
            let meta = requests::metadata(req.metadata)?;
            let vid = v.id.clone();
            let all = s
                .write(move |tx| {
                    let mut v = store::get_volume(tx, &vid)?.ok_or_else(|| not_found(&vid))?;
                    v.image_metadata.extend(meta);
                    if v.image_metadata.len() > MAX_METADATA {
                        return Err(bad(
                            "Invalid input received: too many image metadata items.",
                        ));
                    }
                    store::put_volume(tx, &v)?;
                    Ok(v.image_metadata)
                })
                .await?;
            Ok(json_response(StatusCode::OK, &json!({"metadata": all})))
        }
        "os-unset_image_metadata" => {
            let v = load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_image_metadata:remove",
            )
            .await?;
            let req: UnsetImageMetadata = action_arg(&name, arg)?;
            let key = req.key.ok_or_else(|| {
                bad("Invalid input for field/attribute key. 'key' is a required property")
            })?;
            let vid = v.id.clone();
            s.write(move |tx| {
                let mut v = store::get_volume(tx, &vid)?.ok_or_else(|| not_found(&vid))?;
                if v.image_metadata.remove(&key).is_none() {
                    return Err(VolumeError::NotFound(format!(
                        "Glance metadata for volume {vid} with key {key} cannot be found."
                    )));
                }
                store::put_volume(tx, &v)?;
                Ok(())
            })
            .await?;
            Ok(empty(StatusCode::OK))
        }
        "os-show_image_metadata" => {
            let v = load_for(&s, &ctx, &id, "volume_extension:volume_image_metadata:show").await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"metadata": v.image_metadata}),
            ))
        }
        "os-reserve" => {
            let v = load_for(&s, &ctx, &id, "volume_extension:volume_actions:reserve").await?;
            ops::reserve(&s, &v.id, None).await?;
            set_flag(&s, v.id, |v| {
                if v.status == "reserved" {
                    v.status = "attaching".into();
                }
            })
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-unreserve" => {
            let v = load_for(&s, &ctx, &id, "volume_extension:volume_actions:unreserve").await?;
            if v.status == "attaching" || v.status == "reserved" {
                let pending = v
                    .attachments
                    .iter()
                    .find(|a| a.attach_status != "attached")
                    .map(|a| a.id.clone());
                if let Some(a) = pending {
                    ops::detach(&s, &v.id, Some(a)).await?;
                }
            }
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-attach" => {
            let v = load_for(&s, &ctx, &id, "volume_extension:volume_actions:attach").await?;
            let Attach {
                instance_uuid: instance,
                host_name: host,
                mountpoint,
                mode,
            } = action_arg(&name, arg)?;
            if instance.is_none() && host.is_none() {
                return Err(bad("Invalid request to attach volume to an invalid target"));
            }
            let mode = mode.unwrap_or_else(|| "rw".into());
            if !["rw", "ro"].contains(&mode.as_str()) {
                return Err(bad(
                    "Invalid request to attach volume with an invalid mode. Attaching mode should be 'rw' or 'ro'",
                ));
            }
            ops::attach(&s, &v.id, None, instance, host, mountpoint, &mode).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-detach" => {
            let v = load_for(&s, &ctx, &id, "volume_extension:volume_actions:detach").await?;
            let Detach {
                attachment_id: attachment,
            } = action_arg(&name, arg)?;
            ops::detach(&s, &v.id, attachment).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-begin_detaching" => {
            let v = load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_actions:begin_detaching",
            )
            .await?;
            ops::set_detaching(&s, &v.id, true).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-roll_detaching" => {
            let v = load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_actions:roll_detaching",
            )
            .await?;
            ops::set_detaching(&s, &v.id, false).await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-initialize_connection" => {
            let v = load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_actions:initialize_connection",
            )
            .await?;
            let info = json!({"connection_info": {
                "driver_volume_type": "file",
                "data": {"device_path": ops::backing_file(&s, &v.id).display().to_string(),
                          "name": format!("volume-{}", v.id), "access_mode": if v.readonly == Some(true) {"ro"} else {"rw"},
                          "volume_id": v.id},
            }});
            let _ = mv;
            Ok(json_response(StatusCode::OK, &info))
        }
        "os-terminate_connection" => {
            load_for(
                &s,
                &ctx,
                &id,
                "volume_extension:volume_actions:terminate_connection",
            )
            .await?;
            Ok(empty(StatusCode::ACCEPTED))
        }
        // 3.68: the volume's data replaced by an image's (Nova's rebuild of
        // a volume-backed server at 2.93 does the same from compute).
        "os-reimage" if mv.at_least(68) => {
            let v = load_for(&s, &ctx, &id, "volume:reimage").await?;
            let req: Reimage = action_arg(&name, arg)?;
            let image_id = body::check_name(&req.image_id, "image_id")?;
            let reserved = req.reimage_reserved.is_some_and(|SchemaBool(b)| b);
            if reserved {
                authorize(
                    &s,
                    &ctx,
                    "volume:reimage_reserved",
                    &project_target(&v.project_id),
                )?;
            }
            let scope = if is_admin(&s, &ctx) {
                None
            } else {
                ctx.project_id().map(str::to_string)
            };
            let image = s
                .images
                .get_active(image_id.trim(), scope.as_deref())
                .await
                .map_err(|_| {
                    VolumeError::NotFound(format!("Image {} could not be found.", image_id.trim()))
                })?;
            let before =
                ops::begin_reimage(&s, &v.id, &image, ops::ReimageFrom::Api { reserved }).await?;
            let (s2, vid) = (s.clone(), v.id.clone());
            tokio::spawn(async move {
                let _ = ops::finish_reimage(&s2, &vid, &image, before).await;
            });
            Ok(empty(StatusCode::ACCEPTED))
        }
        "os-volume_upload_image" => super::upload::upload(&s, &ctx, mv, &id, arg).await,
        _ => Err(bad(
            "There is no such action: {name}".replace("{name}", &name)
        )),
    }
}

// The actions' arguments. Cinder's schemas close most of them
// (`additionalProperties: False`); this service has always taken extra
// members and ignored them, so they are not refused here either.

#[derive(Debug, Deserialize)]
struct Extend {
    new_size: Size,
}

/// `os-retype`'s `migration_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MigrationPolicy {
    Never,
    OnDemand,
}

impl<'de> Deserialize<'de> for MigrationPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = String::deserialize(d)?;
        match p.as_str() {
            "never" => Ok(MigrationPolicy::Never),
            "on-demand" => Ok(MigrationPolicy::OnDemand),
            _ => Err(serde::de::Error::custom(format!(
                "{p}. '{p}' is not one of ['on-demand', 'never']"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Retype {
    new_type: String,
    #[serde(default)]
    migration_policy: Option<MigrationPolicy>,
}

#[derive(Debug, Deserialize)]
struct ResetStatus {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    attach_status: Option<String>,
    #[serde(default)]
    migration_status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SetBootable {
    bootable: SchemaBool,
}

#[derive(Debug, Deserialize)]
struct SetReadonly {
    readonly: SchemaBool,
}

#[derive(Debug, Deserialize)]
struct SetImageMetadata {
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct UnsetImageMetadata {
    #[serde(default)]
    key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Attach {
    #[serde(default)]
    instance_uuid: Option<String>,
    #[serde(default)]
    host_name: Option<String>,
    #[serde(default)]
    mountpoint: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Detach {
    #[serde(default)]
    attachment_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Reimage {
    image_id: String,
    #[serde(default)]
    reimage_reserved: Option<SchemaBool>,
}

async fn set_flag(
    s: &S,
    id: String,
    change: impl FnOnce(&mut Volume) + Send + 'static,
) -> VolumeResult<()> {
    s.write(move |tx| {
        let mut v = store::get_volume(tx, &id)?.ok_or_else(|| not_found(&id))?;
        change(&mut v);
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::volume::requests::refused;

    fn create(v: Value) -> VolumeResult<CreateVolume> {
        let Value::Object(obj) = v else {
            panic!("an object")
        };
        requests::member("volume", obj)
    }

    #[test]
    fn create_takes_sizes_as_numbers_or_digit_strings() {
        for (given, want) in [(json!(1), 1), (json!("10"), 10), (json!(" 2 "), 2)] {
            let req = create(json!({ "size": given, "multiattach": true })).expect("accepted");
            assert_eq!((req.size, req.multiattach), (Some(Size(want)), Some(true)));
        }
        let req = create(json!({"size": null, "consistencygroup_id": 3, "scheduler_hints": {}}))
            .expect("ignored members");
        assert_eq!(req.size, None);
        for size in [json!(0), json!("1.5"), json!(2.5), json!(false)] {
            assert!(refused(create(json!({ "size": size }))).contains("is not a valid size"));
        }
        assert_eq!(
            refused(create(json!({"size": 1, "multiattach": "yes"}))),
            "Invalid input for field/attribute multiattach. Value is not a boolean."
        );
        assert_eq!(
            refused(create(json!({"size": 1, "bogus": 1}))),
            "Invalid input for field/attribute volume. Additional properties are not allowed ('bogus' was unexpected)"
        );
        assert_eq!(
            refused(create(json!({"metadata": {"k": 1}}))),
            "Invalid input for field/attribute metadata.k. Value is not a string."
        );
    }

    #[test]
    fn update_tells_null_from_absent() {
        let Value::Object(obj) = json!({"name": null, "display_description": "d"}) else {
            panic!("an object")
        };
        let req: UpdateVolume = requests::member("volume", obj).expect("accepted");
        assert_eq!(req.name, Some(None));
        assert_eq!(req.display_description, Some(Some("d".into())));
        assert_eq!(req.description, None);
        let Value::Object(obj) = json!({"metadata": null}) else {
            panic!("an object")
        };
        assert_eq!(
            refused(requests::member::<UpdateVolume>("volume", obj)),
            "Invalid input for field/attribute metadata. Value is not an object."
        );
    }

    #[test]
    fn action_arguments_in_their_accepted_forms() {
        let Extend { new_size } = action_arg("os-extend", json!({"new_size": "3"})).expect("size");
        assert_eq!(new_size, Size(3));
        assert_eq!(
            refused(action_arg::<Extend>("os-extend", json!({}))),
            "Invalid input for field/attribute os-extend. 'new_size' is a required property"
        );
        for (given, want) in [
            (json!(true), true),
            (json!("False"), false),
            (json!("1"), true),
        ] {
            let SetBootable { bootable } =
                action_arg("os-set_bootable", json!({ "bootable": given })).expect("accepted");
            assert_eq!(bootable, SchemaBool(want));
        }
        assert_eq!(
            refused(action_arg::<SetReadonly>(
                "os-update_readonly_flag",
                json!({"readonly": "yes"})
            )),
            "Invalid input for field/attribute readonly. Value: \"yes\". \"yes\" is not of type 'boolean'"
        );
        let r: Retype = action_arg(
            "os-retype",
            json!({"new_type": "t", "migration_policy": "on-demand"}),
        )
        .expect("accepted");
        assert_eq!(r.migration_policy, Some(MigrationPolicy::OnDemand));
        assert_eq!(
            refused(action_arg::<Retype>(
                "os-retype",
                json!({"new_type": "t", "migration_policy": "x"})
            )),
            "Invalid input for field/attribute migration_policy. Value: x. 'x' is not one of ['on-demand', 'never']"
        );
        assert_eq!(
            refused(action_arg::<Detach>("os-detach", json!("a"))),
            "Invalid input for field/attribute os-detach. Value is not an object."
        );
        let d: Detach = action_arg("os-detach", Value::Null).expect("null reads as {}");
        assert_eq!(d.attachment_id, None);
    }
}
