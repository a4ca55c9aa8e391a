//! `os-volume_attachments` (Nova's volume attach and detach): a Cinder volume
//! reserved and marked attached through `volume::ops`, recorded in the
//! server's `volumes` so that every later boot (start, reboot, resize,
//! unshelve) has its disk after the root disk and the config drive, and
//! hot-added to a running VM through the driver (the VMM's PCI hotplug,
//! the backing file's descriptor passed along). A detach (202) asks the
//! guest to eject the disk in the background, then makes the volume
//! `available` again; a guest that does not eject keeps the disk and the
//! volume goes back to `in-use` (the instance action records the error).
//! Both record an instance action (`attach_volume`, `detach_volume`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::access::{check_unlocked, load_authorized};
use super::build::{finish_action, record_action};
use super::request::{self, Tag, Uuid, present};
use super::states::{Action, VmState};
use super::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::db::now_unix;
use crate::db::servers::{self as db, Server, ServerVolume};
use crate::db::volume as vstore;
use crate::http::{RequestId, json_response};
use crate::identity::Auth;
use crate::volume::{VolumeError, ops};

type S = Arc<ComputeState>;

/// The most volumes a server may have attached (virtio-blk slots stay for NICs).
pub const MAX_VOLUMES: usize = 16;

fn bad(message: impl Into<String>) -> ComputeError {
    ComputeError::BadRequest(message.into())
}

fn from_volume(e: VolumeError) -> ComputeError {
    match e {
        VolumeError::NotFound(m) => ComputeError::NotFound(m),
        VolumeError::BadRequest(m) => ComputeError::BadRequest(m),
        other => ComputeError::Internal(other.to_string()),
    }
}

/// What an attach asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachRequest {
    pub volume_id: String,
    pub device: Option<String>,
    pub tag: Option<String>,
    pub delete_on_termination: bool,
}

/// `POST /servers/{id}/os-volume_attachments`'s body (Nova's
/// `volumes.create_volume_attachment`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachBody {
    #[serde(rename = "volumeAttachment")]
    attachment: AttachArg,
}

/// `volumeAttachment`: the volume, an optional device path, `tag` from 2.49
/// and `delete_on_termination` from 2.79.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachArg {
    #[serde(rename = "volumeId")]
    volume_id: Uuid,
    #[serde(default)]
    device: Option<Device>,
    #[serde(default, deserialize_with = "present")]
    tag: Option<Tag>,
    #[serde(default, deserialize_with = "present")]
    delete_on_termination: Option<bool>,
}

/// A device path as Nova's pattern allows ([`valid_device`]).
#[derive(Debug)]
struct Device(String);

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(t) if valid_device(t) => Ok(Device(t.clone())),
            _ => Err(serde::de::Error::custom(format!(
                "{v}. {v} does not match '(^/dev/x{{0,1}}[a-z]{{0,1}}d{{0,1}})([a-z]+)[0-9]*$'"
            ))),
        }
    }
}

/// Reads an attach's body as Nova's schema: `volumeAttachment` with
/// `volumeId` (a UUID), `device` (a device path or null), `tag` from 2.49 and
/// `delete_on_termination` from 2.79.
pub fn parse_attach(mv: Mv, body: &[u8]) -> ComputeResult<AttachRequest> {
    let AttachBody { attachment: a } = request::body(body)?;
    if a.tag.is_some() && !mv.at_least(49) {
        return Err(request::unexpected("volumeAttachment", "tag"));
    }
    if a.delete_on_termination.is_some() && !mv.at_least(79) {
        return Err(request::unexpected(
            "volumeAttachment",
            "delete_on_termination",
        ));
    }
    Ok(AttachRequest {
        volume_id: a.volume_id.0,
        device: a.device.map(|d| d.0),
        tag: a.tag.map(|t| t.0),
        delete_on_termination: a.delete_on_termination.unwrap_or(false),
    })
}

/// Nova's device pattern: `/dev/` then an optional `x`, one letter, an
/// optional `d`, letters, digits (`/dev/vdb`, `/dev/sdc`, `/dev/xvdd`).
fn valid_device(d: &str) -> bool {
    let Some(rest) = d.strip_prefix("/dev/") else {
        return false;
    };
    let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    !letters.is_empty() && letters.len() <= 6 && letters.chars().all(|c| c.is_ascii_lowercase())
}

/// The device name a new volume gets: the first `/dev/vdX` after the root
/// disk (`vda`), the local swap and ephemeral disks and the config drive
/// that no attached volume has.
fn next_device(server: &Server) -> Option<String> {
    let first = 1 + server.local_disks.len() + usize::from(server.config_drive);
    (b'a'..=b'z')
        .skip(first)
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !server.volumes.iter().any(|v| &v.device == d))
}

/// One attachment as Nova shows it at `mv`.
#[derive(Debug, Serialize, PartialEq)]
pub struct AttachmentView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "serverId")]
    pub server_id: String,
    #[serde(rename = "volumeId")]
    pub volume_id: String,
    pub device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bdm_uuid: Option<String>,
}

/// The view of `v` on server `server_id`: `tag` from 2.70,
/// `delete_on_termination` from 2.79, and from 2.89 `attachment_id` and
/// `bdm_uuid` instead of `id`.
pub fn view(server_id: &str, v: &ServerVolume, mv: Mv) -> AttachmentView {
    AttachmentView {
        id: (!mv.at_least(89)).then(|| v.volume_id.clone()),
        server_id: server_id.to_string(),
        volume_id: v.volume_id.clone(),
        device: v.device.clone(),
        tag: mv.at_least(70).then(|| v.tag.clone()),
        delete_on_termination: mv.at_least(79).then_some(v.delete_on_termination),
        attachment_id: mv.at_least(89).then(|| v.attachment_id.clone()),
        bdm_uuid: mv.at_least(89).then(|| v.attachment_id.clone()),
    }
}

/// `GET /servers/{id}/os-volume_attachments`.
pub async fn list_handler(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server =
        load_authorized(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:index").await?;
    let items: Vec<AttachmentView> = server
        .volumes
        .iter()
        .map(|v| view(&server.id, v, mv))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "volumeAttachments": items }),
    ))
}

fn not_attached(volume_id: &str) -> ComputeError {
    ComputeError::NotFound(format!(
        "No volume Block Device Mapping with id {volume_id}."
    ))
}

/// `GET /servers/{id}/os-volume_attachments/{volume_id}`.
pub async fn show_handler(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, volume_id)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server =
        load_authorized(&s, &ctx, &id, "os_compute_api:os-volumes-attachments:show").await?;
    let v = server
        .volumes
        .iter()
        .find(|v| v.volume_id == volume_id)
        .ok_or_else(|| not_attached(&volume_id))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "volumeAttachment": view(&server.id, v, mv) }),
    ))
}

/// `POST /servers/{id}/os-volume_attachments`.
pub async fn attach_handler(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Extension(rid): Extension<RequestId>,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let server = load_authorized(
        &s,
        &ctx,
        &id,
        "os_compute_api:os-volumes-attachments:create",
    )
    .await?;
    before_shelved_offloaded(&server, mv, "attach_volume")?;
    let request = parse_attach(mv, &body)?;
    let admin = super::is_admin_context(&s, &ctx);
    let project = (!admin).then(|| ctx.project_id().unwrap_or_default().to_string());
    let attached = attach(&s, &server.id, admin, project, request, &rid.0).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "volumeAttachment": view(&server.id, &attached, mv) }),
    ))
}

/// Attaches a volume to server `id` (already authorized). `project`: the
/// project whose volumes the caller sees (None: an admin, all). The volume
/// is reserved, recorded on the server, hot-added when the VM runs, then
/// marked attached (`in-use`); a failure on the way gives it back.
pub async fn attach(
    s: &S,
    id: &str,
    admin: bool,
    project: Option<String>,
    request: AttachRequest,
    request_id: &str,
) -> ComputeResult<ServerVolume> {
    let lock = s.locks.lock_for(id);
    let _guard = lock.lock().await;
    let vid = request.volume_id.clone();
    let volume = s
        .volumes
        .read(move |conn| Ok(vstore::get_volume(conn, &vid)?))
        .await
        .map_err(from_volume)?
        .filter(|v| project.as_deref().is_none_or(|p| p == v.project_id))
        .ok_or_else(|| {
            ComputeError::NotFound(format!("Volume {} could not be found.", request.volume_id))
        })?;
    if volume.status != "available" {
        return Err(bad(format!(
            "Invalid volume: volume {} status must be 'available'. Currently in '{}'",
            volume.id, volume.status
        )));
    }
    // The server's state and lock, and a device, before anything changes.
    let (id_owned, req) = (id.to_string(), request.clone());
    let device = s
        .read(move |conn| {
            let server = db::get_server(conn, &id_owned)?
                .filter(|sv| !sv.deleted)
                .ok_or_else(|| super::access::not_found(&id_owned))?;
            check_unlocked(admin, &server)?;
            Action::AttachVolume
                .check(&id_owned, server.vm_state, server.task_state)
                .map_err(|e| ComputeError::Conflict(e.to_string()))?;
            choose_device(&server, &req)
        })
        .await?;
    let attachment_id = ops::reserve(&s.volumes, &volume.id, Some(id.to_string()))
        .await
        .map_err(from_volume)?;
    let record = ServerVolume {
        volume_id: volume.id.clone(),
        attachment_id: attachment_id.clone(),
        device,
        path: ops::backing_file(&s.volumes, &volume.id),
        tag: request.tag.clone(),
        delete_on_termination: request.delete_on_termination,
        boot_index: None,
        read_only: volume.readonly == Some(true),
    };
    let (id_owned, rid, rec) = (id.to_string(), request_id.to_string(), record.clone());
    let stored = s
        .write(move |tx| {
            let mut server =
                super::access::load_for_action(tx, &id_owned, admin, Action::AttachVolume)?;
            if server.volumes.len() >= MAX_VOLUMES {
                return Err(ComputeError::Conflict(format!(
                    "Instance {id_owned} has the most volumes a server may have ({MAX_VOLUMES})."
                )));
            }
            server.volumes.push(rec);
            server.updated_at = now_unix();
            db::update_server(tx, &server)?;
            record_action(tx, &server, &rid, Action::AttachVolume.name(), now_unix())?;
            Ok(server)
        })
        .await;
    let server = match stored {
        Ok(server) => server,
        Err(e) => {
            let _ = ops::detach(&s.volumes, &volume.id, Some(attachment_id)).await;
            return Err(e);
        }
    };
    s.config.events.server(&server.id, &server.project_id);
    if server.vm_state == VmState::Active
        && let Err(e) = s.driver.attach_disk(id, &record).await
    {
        tracing::warn!(server = %id, volume = %volume.id, error = %e, "cannot hot-add a volume");
        forget(s, id, &volume.id).await;
        let _ = ops::detach(&s.volumes, &volume.id, Some(attachment_id)).await;
        finish_action(s, id, request_id, None, false, Some(e.to_string())).await;
        return Err(ComputeError::Internal(format!(
            "Failed to attach volume {} to {id}",
            volume.id
        )));
    }
    let marked = ops::attach(
        &s.volumes,
        &volume.id,
        Some(attachment_id),
        Some(id.to_string()),
        Some(server.host.clone().unwrap_or_else(super::hosts::hostname)),
        Some(record.device.clone()),
        if record.read_only { "ro" } else { "rw" },
    )
    .await;
    if let Err(e) = marked {
        tracing::error!(server = %id, volume = %volume.id, error = %e, "cannot mark a volume attached");
    }
    finish_action(s, id, request_id, None, true, None).await;
    Ok(record)
}

/// The device asked for when no volume of the server has it (409 when one
/// has), else the next free `/dev/vdX`.
fn choose_device(server: &Server, request: &AttachRequest) -> ComputeResult<String> {
    if server
        .volumes
        .iter()
        .any(|v| v.volume_id == request.volume_id)
    {
        return Err(bad(format!(
            "Invalid volume: volume {} is already attached to instance {}.",
            request.volume_id, server.id
        )));
    }
    match &request.device {
        Some(d) if server.volumes.iter().any(|v| &v.device == d) => Err(ComputeError::Conflict(
            format!("The supplied device path ({d}) is in use."),
        )),
        Some(d) => Ok(d.clone()),
        None => next_device(server).ok_or_else(|| {
            ComputeError::Conflict(format!(
                "Instance {} has no free device name left.",
                server.id
            ))
        }),
    }
}

/// Drops volume `volume_id` from server `id`'s record.
async fn forget(s: &S, id: &str, volume_id: &str) {
    let vid = volume_id.to_string();
    super::build::update_server(s, id, move |sv| {
        sv.volumes.retain(|v| v.volume_id != vid);
        sv.updated_at = now_unix();
    })
    .await;
}

/// `DELETE /servers/{id}/os-volume_attachments/{volume_id}`: 202, the disk
/// leaves in the background (the instance action says how it went).
pub async fn detach_handler(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Extension(rid): Extension<RequestId>,
    Path((id, volume_id)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server = load_authorized(
        &s,
        &ctx,
        &id,
        "os_compute_api:os-volumes-attachments:delete",
    )
    .await?;
    before_shelved_offloaded(&server, mv, "detach_volume")?;
    let admin = super::is_admin_context(&s, &ctx);
    begin_detach(&s, &server.id, admin, &volume_id, &rid.0).await?;
    Ok(super::empty(StatusCode::ACCEPTED))
}

/// Nova attaches and detaches volumes of a shelved-offloaded server from
/// 2.20 only; below, its 409.
fn before_shelved_offloaded(server: &Server, mv: Mv, action: &str) -> ComputeResult<()> {
    if server.vm_state == VmState::ShelvedOffloaded && !mv.at_least(20) {
        return Err(ComputeError::Conflict(format!(
            "Cannot '{action}' instance {} while it is in vm_state shelved_offloaded",
            server.id
        )));
    }
    Ok(())
}

/// Checks a detach (state, lock, attached), records its instance action and
/// moves the volume to `detaching`; the disk leaves in the background
/// ([`detach`]).
pub async fn begin_detach(
    s: &S,
    id: &str,
    admin: bool,
    volume_id: &str,
    request_id: &str,
) -> ComputeResult<()> {
    let (id_owned, rid, vid) = (
        id.to_string(),
        request_id.to_string(),
        volume_id.to_string(),
    );
    s.write(move |tx| {
        let server = super::access::load_for_action(tx, &id_owned, admin, Action::DetachVolume)?;
        if !server.volumes.iter().any(|v| v.volume_id == vid) {
            return Err(not_attached(&vid));
        }
        if server.root_volume().is_some_and(|v| v.volume_id == vid) {
            return Err(bad("Cannot detach a root device volume"));
        }
        record_action(tx, &server, &rid, Action::DetachVolume.name(), now_unix())?;
        Ok(())
    })
    .await?;
    if let Err(e) = ops::set_detaching(&s.volumes, volume_id, true).await {
        tracing::warn!(server = %id, volume = %volume_id, error = %e, "volume not in-use at detach");
    }
    let (s2, id2, vid2, rid2) = (
        s.clone(),
        id.to_string(),
        volume_id.to_string(),
        request_id.to_string(),
    );
    tokio::spawn(async move {
        let result = detach(&s2, &id2, &vid2).await;
        let ok = result.is_ok();
        if let Err(e) = &result {
            tracing::warn!(server = %id2, volume = %vid2, error = %e, "cannot detach a volume");
            let _ = ops::set_detaching(&s2.volumes, &vid2, false).await;
        }
        finish_action(&s2, &id2, &rid2, None, ok, result.err()).await;
    });
    Ok(())
}

/// Takes volume `volume_id`'s disk out of server `id` under the server's
/// lock: the guest's eject when the VM runs, then the record dropped and
/// the volume detached in Cinder (`available`). A guest that does not eject
/// keeps the disk and the attachment.
pub async fn detach(s: &S, id: &str, volume_id: &str) -> Result<(), String> {
    let lock = s.locks.lock_for(id);
    let _guard = lock.lock().await;
    let id_owned = id.to_string();
    let server = s
        .read(move |conn| Ok(db::get_server(conn, &id_owned)?))
        .await
        .map_err(|e| e.to_string())?
        .filter(|sv| !sv.deleted)
        .ok_or_else(|| format!("server {id} is gone"))?;
    let Some(record) = server
        .volumes
        .iter()
        .find(|v| v.volume_id == volume_id)
        .cloned()
    else {
        return Ok(());
    };
    if s.driver.is_alive(id) {
        s.driver
            .detach_disk(id, &record)
            .await
            .map_err(|e| e.to_string())?;
    }
    forget(s, id, volume_id).await;
    release(s, &record).await;
    s.config.events.server(id, &server.project_id);
    Ok(())
}

/// Gives a detached volume back to Cinder: its attachment removed (`available`).
/// (A deleted server's volumes are given back by `build::spawn_delete`.)
async fn release(s: &S, record: &ServerVolume) {
    let detached = ops::detach(
        &s.volumes,
        &record.volume_id,
        Some(record.attachment_id.clone()),
    )
    .await;
    if let Err(e) = detached {
        tracing::warn!(volume = %record.volume_id, error = %e, "cannot detach a volume in Cinder");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::driver::ComputeDriver;
    use crate::compute::fake_driver::{TestCloud, active_server};
    use crate::compute::states::{PowerState, TaskState};
    use crate::db::volume::Volume;
    use serde_json::json;

    const VOL: &str = "0b6f3c56-52b6-4d0e-9d8e-2f7a3f0d1a11";
    const OTHER: &str = "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c";

    type Cloud = TestCloud;

    /// A compute state over a fresh state file and the fake driver: one
    /// ACTIVE server `srv` of project `p` whose VM runs, volume [`VOL`] of `p`
    /// and [`OTHER`] of project `q`, both available.
    async fn cloud(name: &str) -> Cloud {
        let c = TestCloud::new(&format!("volattach-{name}"));
        let s = &c.s;
        for (id, project) in [(VOL, "p"), (OTHER, "q")] {
            let v = Volume {
                id: id.into(),
                project_id: project.into(),
                user_id: "u".into(),
                size: 1,
                status: "available".into(),
                attach_status: "detached".into(),
                ..Default::default()
            };
            s.volumes
                .write(move |tx| Ok(vstore::put_volume(tx, &v)?))
                .await
                .expect("volume");
        }
        c.add_server(&active_server(), true).await;
        c
    }

    async fn stored(s: &S) -> Server {
        s.read(|conn| Ok(db::get_server(conn, "srv")?))
            .await
            .expect("read")
            .expect("server")
    }

    async fn volume(s: &S, id: &str) -> Volume {
        let id = id.to_string();
        s.volumes
            .read(move |conn| Ok(vstore::get_volume(conn, &id)?))
            .await
            .expect("read")
            .expect("volume")
    }

    fn asked(id: &str) -> AttachRequest {
        AttachRequest {
            volume_id: id.into(),
            ..Default::default()
        }
    }

    async fn actions(s: &S) -> Vec<(String, Option<String>)> {
        s.read(|conn| Ok(db::list_actions(conn, "srv")?))
            .await
            .expect("actions")
            .into_iter()
            .map(|a| {
                let result = a.events.last().and_then(|e| e.result.clone());
                (a.action, result)
            })
            .collect()
    }

    #[test]
    fn attach_bodies_follow_novas_schema() {
        let p =
            |mv: u16, v: Value| parse_attach(Mv(mv), &serde_json::to_vec(&v).unwrap_or_default());
        assert_eq!(
            request::refused(p(
                48,
                json!({"volumeAttachment": {"volumeId": VOL, "tag": "t"}})
            )),
            "Invalid input for field/attribute volumeAttachment. Additional properties are not allowed ('tag' was unexpected)"
        );
        assert_eq!(
            request::refused(p(1, json!({"volumeAttachment": {}}))),
            "Invalid input for field/attribute volumeAttachment. 'volumeId' is a required property"
        );
        assert_eq!(
            request::refused(p(
                1,
                json!({"volumeAttachment": {"volumeId": VOL, "device": "vdb"}})
            )),
            "Invalid input for field/attribute device. Value: \"vdb\". \"vdb\" does not match '(^/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$'"
        );
        let ok = p(
            1,
            json!({"volumeAttachment": {"volumeId": VOL, "device": "/dev/vdc"}}),
        )
        .expect("valid");
        assert_eq!(ok.volume_id, VOL);
        assert_eq!(ok.device.as_deref(), Some("/dev/vdc"));
        assert!(
            p(
                1,
                json!({"volumeAttachment": {"volumeId": VOL, "device": null}})
            )
            .is_ok()
        );
        let full = p(
            79,
            json!({"volumeAttachment": {"volumeId": VOL, "tag": "data", "delete_on_termination": true}}),
        )
        .expect("valid");
        assert_eq!(full.tag.as_deref(), Some("data"));
        assert!(full.delete_on_termination);
        for (mv, bad) in [
            (1, json!({"volumeAttachment": {}})),
            (1, json!({"volumeAttachment": {"volumeId": "x"}})),
            (
                1,
                json!({"volumeAttachment": {"volumeId": VOL, "device": "vdb"}}),
            ),
            (
                48,
                json!({"volumeAttachment": {"volumeId": VOL, "tag": "t"}}),
            ),
            (
                78,
                json!({"volumeAttachment": {"volumeId": VOL, "delete_on_termination": true}}),
            ),
            (
                79,
                json!({"volumeAttachment": {"volumeId": VOL, "delete_on_termination": "yes"}}),
            ),
            (
                1,
                json!({"volumeAttachment": {"volumeId": VOL, "other": 1}}),
            ),
            (1, json!({"other": {}})),
        ] {
            assert!(p(mv, bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn views_follow_the_microversions() {
        let v = ServerVolume {
            volume_id: VOL.into(),
            attachment_id: "a".into(),
            device: "/dev/vdb".into(),
            ..Default::default()
        };
        let old = serde_json::to_value(view("srv", &v, Mv(1))).unwrap_or_default();
        assert_eq!(
            old,
            json!({"id": VOL, "serverId": "srv", "volumeId": VOL, "device": "/dev/vdb"})
        );
        let new = serde_json::to_value(view("srv", &v, Mv(89))).unwrap_or_default();
        assert_eq!(new.get("id"), None);
        assert_eq!(new["tag"], Value::Null);
        assert_eq!(new["delete_on_termination"], json!(false));
        assert_eq!(new["attachment_id"], json!("a"));
    }

    #[tokio::test]
    async fn attach_hot_adds_and_detach_ejects_and_frees_the_volume() {
        let c = cloud("flow").await;
        let got = attach(&c.s, "srv", false, Some("p".into()), asked(VOL), "req-1")
            .await
            .expect("attach");
        assert_eq!(got.device, "/dev/vdb");
        assert_eq!(
            c.fake.calls().last().cloned(),
            Some(format!("attach_disk srv {VOL}"))
        );
        let v = volume(&c.s, VOL).await;
        assert_eq!(v.status, "in-use");
        assert_eq!(v.attachments.len(), 1);
        assert_eq!(v.attachments[0].instance_uuid.as_deref(), Some("srv"));
        assert_eq!(v.attachments[0].mountpoint.as_deref(), Some("/dev/vdb"));
        assert_eq!(stored(&c.s).await.volumes, vec![got.clone()]);
        // Attached already: 400.
        assert!(matches!(
            attach(&c.s, "srv", false, Some("p".into()), asked(VOL), "req-2").await,
            Err(ComputeError::BadRequest(_))
        ));
        begin_detach(&c.s, "srv", false, VOL, "req-3")
            .await
            .expect("begin");
        assert_eq!(volume(&c.s, VOL).await.status, "detaching");
        detach(&c.s, "srv", VOL).await.expect("detach");
        assert!(c.fake.calls().contains(&format!("detach_disk srv {VOL}")));
        assert!(stored(&c.s).await.volumes.is_empty());
        let v = volume(&c.s, VOL).await;
        assert_eq!(v.status, "available");
        assert!(v.attachments.is_empty());
        let acts = actions(&c.s).await;
        assert!(
            acts.iter()
                .any(|(a, r)| a == "attach_volume" && r.as_deref() == Some("Success"))
        );
        assert!(acts.iter().any(|(a, _)| a == "detach_volume"));
    }

    #[tokio::test]
    async fn a_stopped_server_only_records_the_volume() {
        for vm_state in [
            VmState::Stopped,
            VmState::Shelved,
            VmState::ShelvedOffloaded,
        ] {
            let c = cloud("stopped").await;
            crate::compute::build::update_server(&c.s, "srv", move |sv| {
                sv.vm_state = vm_state;
                sv.power_state = PowerState::Shutdown;
                if vm_state == VmState::ShelvedOffloaded {
                    sv.host = None;
                }
            })
            .await;
            c.fake.stop("srv", None).await;
            let calls = c.fake.calls().len();
            attach(&c.s, "srv", false, Some("p".into()), asked(VOL), "r")
                .await
                .expect("attach");
            assert_eq!(c.fake.calls().len(), calls, "no driver call ({vm_state})");
            assert_eq!(volume(&c.s, VOL).await.status, "in-use");
            assert_eq!(stored(&c.s).await.volumes.len(), 1);
            begin_detach(&c.s, "srv", false, VOL, "r")
                .await
                .expect("detach allowed");
            detach(&c.s, "srv", VOL).await.expect("detach");
            assert_eq!(c.fake.calls().len(), calls, "no driver call ({vm_state})");
            assert_eq!(volume(&c.s, VOL).await.status, "available");
        }
    }

    #[test]
    fn shelved_offloaded_volumes_need_2_20() {
        let mut server = Server {
            id: "srv".into(),
            vm_state: VmState::ShelvedOffloaded,
            ..Server::default()
        };
        let refused = before_shelved_offloaded(&server, Mv(19), "attach_volume");
        assert!(
            matches!(&refused, Err(ComputeError::Conflict(m)) if m == "Cannot 'attach_volume' instance srv while it is in vm_state shelved_offloaded"),
            "{refused:?}"
        );
        assert!(before_shelved_offloaded(&server, Mv(20), "attach_volume").is_ok());
        server.vm_state = VmState::Stopped;
        assert!(before_shelved_offloaded(&server, Mv(1), "detach_volume").is_ok());
    }

    #[tokio::test]
    async fn refusals_are_novas() {
        let c = cloud("refusals").await;
        // Another project's volume, and one that does not exist: 404.
        for id in [OTHER, "7d3c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c"] {
            assert!(matches!(
                attach(&c.s, "srv", false, Some("p".into()), asked(id), "r").await,
                Err(ComputeError::NotFound(_))
            ));
        }
        // An admin sees it.
        attach(&c.s, "srv", true, None, asked(OTHER), "r")
            .await
            .expect("admin attach");
        // Not available: 400.
        assert!(matches!(
            attach(&c.s, "srv", true, None, asked(OTHER), "r").await,
            Err(ComputeError::BadRequest(_))
        ));
        for (vm_state, task, locked) in [
            (VmState::Paused, None, false),
            (VmState::Active, Some(TaskState::Rebooting), false),
            (VmState::Active, None, true),
            (VmState::Suspended, None, false),
        ] {
            crate::compute::build::update_server(&c.s, "srv", move |sv| {
                sv.vm_state = vm_state;
                sv.task_state = task;
                sv.locked = locked;
            })
            .await;
            let r = attach(&c.s, "srv", false, Some("p".into()), asked(VOL), "r").await;
            assert!(matches!(r, Err(ComputeError::Conflict(_))), "{vm_state}");
            assert!(matches!(
                begin_detach(&c.s, "srv", false, OTHER, "r").await,
                Err(ComputeError::Conflict(_))
            ));
        }
        assert_eq!(volume(&c.s, VOL).await.status, "available");
        crate::compute::build::update_server(&c.s, "srv", |sv| {
            sv.vm_state = VmState::Active;
            sv.task_state = None;
            sv.locked = false;
        })
        .await;
        // Not attached: 404.
        assert!(matches!(
            begin_detach(&c.s, "srv", false, VOL, "r").await,
            Err(ComputeError::NotFound(_))
        ));
        // A device in use: 409.
        let mut on_vdb = asked(VOL);
        on_vdb.device = Some("/dev/vdb".into());
        assert!(matches!(
            attach(&c.s, "srv", false, Some("p".into()), on_vdb, "r").await,
            Err(ComputeError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn failures_give_the_volume_back_or_keep_it() {
        let c = cloud("failing").await;
        c.fake.fail("attach_disk");
        let r = attach(&c.s, "srv", false, Some("p".into()), asked(VOL), "req-1").await;
        assert!(matches!(r, Err(ComputeError::Internal(_))));
        assert!(stored(&c.s).await.volumes.is_empty());
        assert_eq!(volume(&c.s, VOL).await.status, "available");
        assert!(volume(&c.s, VOL).await.attachments.is_empty());
        // A guest that does not eject keeps the disk and the attachment.
        let c = cloud("noeject").await;
        attach(&c.s, "srv", false, Some("p".into()), asked(VOL), "req-1")
            .await
            .expect("attach");
        c.fake.fail("detach_disk");
        assert!(detach(&c.s, "srv", VOL).await.is_err());
        assert_eq!(stored(&c.s).await.volumes.len(), 1);
        assert_eq!(volume(&c.s, VOL).await.attachments.len(), 1);
    }

    #[tokio::test]
    async fn a_deleted_servers_volumes_are_released() {
        let c = cloud("delete").await;
        attach(&c.s, "srv", true, None, asked(VOL), "r")
            .await
            .expect("attach");
        let mut gone = asked(OTHER);
        gone.delete_on_termination = true;
        attach(&c.s, "srv", true, None, gone, "r")
            .await
            .expect("attach");
        crate::compute::build::spawn_delete(c.s.clone(), "srv".into(), "r-del".into());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stored(&c.s).await.deleted {
            assert!(std::time::Instant::now() < deadline, "not deleted");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(volume(&c.s, VOL).await.status, "available");
        let other = OTHER.to_string();
        let left =
            c.s.volumes
                .read(move |conn| Ok(vstore::get_volume(conn, &other)?))
                .await
                .expect("read");
        assert!(left.is_none_or(|v| v.status == "deleting"));
    }
}
