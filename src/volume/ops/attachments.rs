//! Attachments, the Nova seam of the volume domain: reserve, connect, attach,
//! detach and the detaching flag. Each is one transaction on the volume and
//! its attachment records, with no file work (so a crash leaves either the
//! state before or the state after).

use rusqlite::Connection;

use super::super::{VolumeError, VolumeResult, VolumeState, now_string};
use crate::db::volume::{self as store, Attachment, Volume};
fn load(conn: &Connection, id: &str) -> VolumeResult<Volume> {
    store::get_volume(conn, id)?
        .ok_or_else(|| VolumeError::NotFound(format!("Volume {id} could not be found.")))
}

/// Reserves a volume for an instance (`available` → `attaching`, or a
/// further attachment of a multiattach volume): returns the attachment id.
pub async fn reserve(
    s: &VolumeState,
    volume_id: &str,
    instance: Option<String>,
) -> VolumeResult<String> {
    let id = volume_id.to_string();
    s.write(move |tx| {
        let mut v = load(tx, &id)?;
        let ok = v.status == "available" || (v.multiattach && v.status == "in-use");
        if !ok {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {id} status must be available to reserve, but the current status is {}.",
                v.status
            )));
        }
        let attachment = Attachment {
            id: uuid::Uuid::new_v4().to_string(),
            instance_uuid: instance,
            attach_status: "reserved".into(),
            attach_mode: "rw".into(),
            ..Attachment::default()
        };
        let attachment_id = attachment.id.clone();
        v.attachments.push(attachment);
        if v.status == "available" {
            v.status = "reserved".into();
        }
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(attachment_id)
    })
    .await
}

/// Marks a reserved attachment attached (`in-use`).
pub async fn attach(
    s: &VolumeState,
    volume_id: &str,
    attachment_id: Option<String>,
    instance: Option<String>,
    host_name: Option<String>,
    mountpoint: Option<String>,
    mode: &str,
) -> VolumeResult<()> {
    let (id, mode) = (volume_id.to_string(), mode.to_string());
    s.write(move |tx| {
        let mut v = load(tx, &id)?;
        if !["available", "reserved", "attaching", "in-use"].contains(&v.status.as_str()) {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {id} status must be available or reserved to attach, currently {}.",
                v.status
            )));
        }
        if v.readonly == Some(true) && mode == "rw" {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {id} is read-only and cannot be attached read-write."
            )));
        }
        let found = v.attachments.iter().position(|a| {
            attachment_id.as_deref().map_or(
                a.attach_status != "attached" && (instance.is_none() || a.instance_uuid == instance),
                |wanted| a.id == wanted,
            )
        });
        let index = match found {
            Some(i) => i,
            None => {
                v.attachments.push(Attachment {
                    id: uuid::Uuid::new_v4().to_string(),
                    ..Attachment::default()
                });
                v.attachments.len() - 1
            }
        };
        let a = &mut v.attachments[index];
        a.attach_status = "attached".into();
        a.attach_mode = mode;
        if instance.is_some() {
            a.instance_uuid = instance;
        }
        a.host_name = host_name;
        a.mountpoint = mountpoint;
        a.attached_at = Some(now_string());
        v.status = "in-use".into();
        v.attach_status = "attached".into();
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(())
    })
    .await
}

/// Removes an attachment (all of them when `attachment_id` is `None` and
/// the volume has one): the volume is `available` again when none is left.
pub async fn detach(
    s: &VolumeState,
    volume_id: &str,
    attachment_id: Option<String>,
) -> VolumeResult<()> {
    let id = volume_id.to_string();
    s.write(move |tx| {
        let mut v = load(tx, &id)?;
        match &attachment_id {
            Some(a) => {
                let before = v.attachments.len();
                v.attachments.retain(|x| &x.id != a);
                if before == v.attachments.len() {
                    return Err(VolumeError::NotFound(format!(
                        "Volume attachment {a} could not be found."
                    )));
                }
            }
            None if v.attachments.len() <= 1 => v.attachments.clear(),
            None => {
                return Err(VolumeError::BadRequest(
                    "Invalid volume: Volume has more than one attachment: name the attachment_id."
                        .into(),
                ));
            }
        }
        if v.attachments.iter().all(|a| a.attach_status != "attached") {
            v.attach_status = "detached".into();
            v.status = if v.attachments.is_empty() {
                "available"
            } else {
                "reserved"
            }
            .into();
        } else {
            v.status = "in-use".into();
        }
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(())
    })
    .await
}

/// The volume holding an attachment, and the attachment.
pub async fn find_attachment(
    s: &VolumeState,
    attachment_id: &str,
) -> VolumeResult<(Volume, Attachment)> {
    let id = attachment_id.to_string();
    let found = s
        .read(move |conn| Ok(store::volume_with_attachment(conn, &id)?))
        .await?;
    found
        .and_then(|v| {
            let a = v
                .attachments
                .iter()
                .find(|a| a.id == attachment_id)?
                .clone();
            Some((v, a))
        })
        .ok_or_else(|| {
            VolumeError::NotFound(format!(
                "Volume attachment could not be found with filter: attachment_id = {attachment_id}."
            ))
        })
}

/// Gives a reserved attachment the host's connector (attachments API
/// create with a connector, or update): the attachment and a reserved
/// volume become `attaching`. `mode` (`rw`/`ro`) defaults to the volume's
/// read-only flag.
pub async fn connect(
    s: &VolumeState,
    attachment_id: &str,
    connector: serde_json::Value,
    mode: Option<String>,
) -> VolumeResult<(Volume, Attachment)> {
    let aid = attachment_id.to_string();
    s.write(move |tx| {
        let mut v = store::volume_with_attachment(tx, &aid)?.ok_or_else(|| {
            VolumeError::NotFound(format!(
                "Volume attachment could not be found with filter: attachment_id = {aid}."
            ))
        })?;
        let readonly = v.readonly == Some(true);
        let index = v
            .attachments
            .iter()
            .position(|a| a.id == aid)
            .ok_or_else(|| VolumeError::NotFound(format!("Volume attachment {aid} could not be found.")))?;
        let a = &mut v.attachments[index];
        if a.attach_status == "attached" {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: attachment {aid} is already attached; delete it to change its connector."
            )));
        }
        let mode = match mode.as_deref().or(connector.get("mode").and_then(|m| m.as_str())) {
            Some("ro") => "ro",
            Some("rw") if readonly => {
                return Err(VolumeError::BadRequest(format!(
                    "Invalid volume: Volume {} is read-only and cannot be attached read-write.",
                    v.id
                )));
            }
            Some("rw") => "rw",
            _ if readonly => "ro",
            _ => "rw",
        };
        a.attach_mode = mode.into();
        a.host_name = connector
            .get("host")
            .and_then(|h| h.as_str())
            .map(str::to_string);
        if let Some(m) = connector.get("mountpoint").and_then(|m| m.as_str()) {
            a.mountpoint = Some(m.to_string());
        }
        a.connector = Some(connector);
        a.attach_status = "attaching".into();
        let attachment = a.clone();
        if v.status == "reserved" {
            v.status = "attaching".into();
        }
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok((v, attachment))
    })
    .await
}

/// Moves a volume between `in-use` and `detaching` (os-begin_detaching and
/// os-roll_detaching).
pub async fn set_detaching(s: &VolumeState, volume_id: &str, begin: bool) -> VolumeResult<()> {
    let id = volume_id.to_string();
    s.write(move |tx| {
        let mut v = load(tx, &id)?;
        let (from, to) = if begin {
            ("in-use", "detaching")
        } else {
            ("detaching", "in-use")
        };
        if v.status == from {
            v.status = to.into();
            store::put_volume(tx, &v)?;
        } else if begin {
            return Err(VolumeError::BadRequest(format!(
                "Invalid volume: Volume {id} status must be in-use to begin detaching, currently {}.",
                v.status
            )));
        }
        Ok(())
    })
    .await
}
