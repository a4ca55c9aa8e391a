//! The attachments API (3.27+; `os-complete` 3.44; `mode` 3.54): create
//! (a reservation, or with a connector straight to `attaching`), update
//! with the connector, complete, delete, show and list. Every step goes
//! through the `ops` seam (reserve, connect, attach, detach) the older
//! os-attach actions and Nova use too.
//!
//! The connection info of the file backend names the volume's file
//! (`driver_volume_type` "file"): the VMM on this host opens it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::requests::{self, given};
use super::volume_list::page;
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, authorize, empty, is_admin, own_target, project_of,
    project_target, query_map,
};
use crate::db::volume::{self as store, Attachment, Volume};
use crate::http::body::Object;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/attachments", get(list).post(create))
        .route("/v3/attachments/detail", get(list_detail))
        .route("/v3/attachments/{id}", get(show).put(update).delete(delete))
        .route("/v3/attachments/{id}/action", post(action))
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

/// The attachments API exists from 3.27 (404 below, as Cinder's router).
fn check_version(mv: Mv, minor: u16) -> VolumeResult<()> {
    if !mv.at_least(minor) {
        return Err(VolumeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct View<'a> {
    id: &'a str,
    status: &'a str,
    instance: Option<&'a str>,
    volume_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    attached_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detached_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attach_mode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_info: Option<Value>,
}

/// What a host needs to open the volume: its file, once a connector is set.
fn connection_info(s: &VolumeState, v: &Volume, a: &Attachment) -> Value {
    if a.connector.is_none() {
        return Value::Null;
    }
    json!({
        "driver_volume_type": "file",
        "data": {
            "device_path": super::ops::backing_file(s, &v.id).to_string_lossy(),
            "access_mode": a.attach_mode,
            "volume_id": v.id,
            "attachment_id": a.id,
            "name": format!("volume-{}", v.id),
        },
    })
}

fn render(s: &VolumeState, v: &Volume, a: &Attachment, detailed: bool) -> Value {
    serde_json::to_value(View {
        id: &a.id,
        status: &a.attach_status,
        instance: a.instance_uuid.as_deref(),
        volume_id: &v.id,
        attached_at: detailed.then_some(a.attached_at.as_deref().unwrap_or("")),
        detached_at: detailed.then_some(""),
        attach_mode: detailed.then_some(if a.attach_mode.is_empty() {
            "null"
        } else {
            a.attach_mode.as_str()
        }),
        connection_info: detailed.then(|| connection_info(s, v, a)),
    })
    .unwrap_or(Value::Null)
}

/// The attachment and its volume, if the caller may see the volume.
async fn load_for(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
) -> VolumeResult<(Volume, Attachment)> {
    let (v, a) = super::ops::find_attachment(s, id).await?;
    if !is_admin(s, ctx) && ctx.project_id() != Some(v.project_id.as_str()) {
        return Err(VolumeError::NotFound(format!(
            "Volume attachment could not be found with filter: attachment_id = {id}."
        )));
    }
    authorize(s, ctx, rule, &project_target(&v.project_id))?;
    Ok((v, a))
}

/// A host's connector (Cinder passes it to the driver as it came): kept
/// as given, bounded in size.
fn connector_of(connector: Option<Object>) -> VolumeResult<Option<Value>> {
    let Some(map) = connector else {
        return Ok(None);
    };
    let members = map.len();
    let c = Value::Object(map);
    if c.to_string().len() > 16 * 1024 || members > 64 {
        return Err(bad(
            "Invalid input for field/attribute connector. Value is too long",
        ));
    }
    Ok(Some(c))
}

/// An attachment's mode (3.54).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ReadWrite,
    ReadOnly,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "rw",
            Mode::ReadOnly => "ro",
        }
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = String::deserialize(d)?;
        match m.as_str() {
            "rw" => Ok(Mode::ReadWrite),
            "ro" => Ok(Mode::ReadOnly),
            _ => Err(serde::de::Error::custom(format!(
                "{m}. '{m}' is not one of ['rw', 'ro']"
            ))),
        }
    }
}

/// `POST /v3/attachments`'s `attachment`; `mode` is read at every
/// microversion and refused below 3.54.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAttachment {
    #[serde(default)]
    volume_uuid: Option<String>,
    #[serde(default)]
    instance_uuid: Option<String>,
    #[serde(default)]
    connector: Option<Object>,
    #[serde(default, deserialize_with = "given")]
    mode: Option<Option<Mode>>,
}

/// `PUT /v3/attachments/{id}`'s `attachment`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateAttachment {
    #[serde(default)]
    connector: Option<Object>,
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    check_version(mv, 27)?;
    let obj = requests::take(&bytes, "attachment")?;
    let req: CreateAttachment = requests::member("attachment", obj)?;
    if req.mode.is_some() && !mv.at_least(54) {
        return Err(bad(
            "Invalid input for field/attribute attachment. Additional properties are not allowed ('mode' was unexpected)",
        ));
    }
    let volume_id = req.volume_uuid.ok_or_else(|| {
        bad("Invalid input for field/attribute attachment. 'volume_uuid' is a required property")
    })?;
    let instance = req.instance_uuid;
    if instance
        .as_deref()
        .is_some_and(|i| uuid::Uuid::parse_str(i).is_err())
    {
        return Err(bad(
            "Invalid input for field/attribute instance_uuid. Value is not a UUID.",
        ));
    }
    let mode = req.mode.flatten().map(|m| m.as_str().to_string());
    let connector = connector_of(req.connector)?;
    let volume = super::volumes::load_for(&s, &ctx, &volume_id, "volume:get").await?;
    authorize(
        &s,
        &ctx,
        "volume:attachment_create",
        &project_target(&volume.project_id),
    )?;
    let aid = super::ops::reserve(&s, &volume.id, instance).await?;
    let (v, a) = match connector {
        Some(c) => match super::ops::connect(&s, &aid, c, mode).await {
            Ok(found) => found,
            Err(e) => {
                // Nothing half-made: the reservation goes with the failure.
                let _ = super::ops::detach(&s, &volume.id, Some(aid)).await;
                return Err(e);
            }
        },
        None => super::ops::find_attachment(&s, &aid).await?,
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"attachment": render(&s, &v, &a, true)}),
    ))
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    check_version(mv, 27)?;
    let obj = requests::take(&bytes, "attachment")?;
    let req: UpdateAttachment = requests::member("attachment", obj)?;
    let connector = connector_of(req.connector)?.ok_or_else(|| {
        bad("Invalid input for field/attribute attachment. 'connector' is a required property")
    })?;
    let (_, a) = load_for(&s, &ctx, &id, "volume:attachment_update").await?;
    let (v, a) = super::ops::connect(&s, &a.id, connector, None).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"attachment": render(&s, &v, &a, true)}),
    ))
}

async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    check_version(mv, 44)?;
    let req = requests::object(&bytes)?;
    if !req.contains_key("os-complete") {
        return Err(bad("There is no such action"));
    }
    let (v, a) = load_for(&s, &ctx, &id, "volume:attachment_complete").await?;
    let mode = if a.attach_mode.is_empty() {
        "rw".to_string()
    } else {
        a.attach_mode.clone()
    };
    super::ops::attach(
        &s,
        &v.id,
        Some(a.id.clone()),
        a.instance_uuid.clone(),
        a.host_name.clone(),
        a.mountpoint.clone(),
        &mode,
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    check_version(mv, 27)?;
    let (v, a) = load_for(&s, &ctx, &id, "volume:attachment_delete").await?;
    super::ops::detach(&s, &v.id, Some(a.id.clone())).await?;
    let vid = v.id.clone();
    let after = s
        .read(move |conn| Ok(store::get_volume(conn, &vid)?))
        .await?;
    let state: &VolumeState = &s;
    let remaining: Vec<Value> = after
        .iter()
        .flat_map(|v| {
            v.attachments
                .iter()
                .map(move |a| render(state, v, a, false))
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"attachments": remaining}),
    ))
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    check_version(mv, 27)?;
    let (v, a) = load_for(&s, &ctx, &id, "volume:get").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"attachment": render(&s, &v, &a, true)}),
    ))
}

async fn list_common(
    s: S,
    ctx: &AuthContext,
    mv: Mv,
    q: HashMap<String, String>,
    detailed: bool,
) -> VolumeResult<Response> {
    check_version(mv, 27)?;
    let project = project_of(ctx)?;
    authorize(&s, ctx, "volume:get_all", &own_target(ctx))?;
    let all = q.get("all_tenants").is_some_and(|v| {
        v.is_empty() || matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
    }) && is_admin(&s, ctx);
    let scope = (!all).then_some(project);
    let volumes = s
        .read(move |conn| Ok(store::list_volumes(conn, scope.as_deref())?))
        .await?;
    let mut items: Vec<(Volume, Attachment)> = volumes
        .iter()
        .flat_map(|v| v.attachments.iter().map(move |a| (v.clone(), a.clone())))
        .filter(|(v, a)| {
            q.get("volume_id").is_none_or(|w| &v.id == w)
                && q.get("instance_id")
                    .is_none_or(|w| a.instance_uuid.as_deref() == Some(w.as_str()))
                && q.get("status").is_none_or(|w| &a.attach_status == w)
        })
        .collect();
    items.sort_by(|x, y| x.1.id.cmp(&y.1.id));
    let (page_items, _) = page(items, &q, |(_, a)| a.id.as_str(), "attachments")?;
    let rendered: Vec<Value> = page_items
        .iter()
        .map(|(v, a)| render(&s, v, a, detailed))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"attachments": rendered}),
    ))
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list_common(s, &ctx, mv, query_map(q), false).await
}

async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list_common(s, &ctx, mv, query_map(q), true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::requests::refused;

    fn create(v: Value) -> VolumeResult<CreateAttachment> {
        let Value::Object(obj) = v else {
            panic!("an object")
        };
        requests::member("attachment", obj)
    }

    #[test]
    fn create_reads_mode_and_connector() {
        let req = create(json!({"volume_uuid": "v", "mode": "ro", "connector": {"host": "h"}}))
            .expect("accepted");
        assert_eq!(req.mode, Some(Some(Mode::ReadOnly)));
        assert_eq!(
            connector_of(req.connector).expect("small"),
            Some(json!({"host": "h"}))
        );
        assert_eq!(
            refused(create(json!({"volume_uuid": "v", "mode": "rx"}))),
            "Invalid input for field/attribute mode. Value: rx. 'rx' is not one of ['rw', 'ro']"
        );
        assert_eq!(
            refused(create(json!({"volume_uuid": "v", "connector": "h"}))),
            "Invalid input for field/attribute connector. Value is not an object."
        );
        let big: Object = (0..65).map(|i| (i.to_string(), json!(i))).collect();
        assert!(connector_of(Some(big)).is_err());
    }
}
