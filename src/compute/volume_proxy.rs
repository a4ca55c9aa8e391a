//! Nova's Cinder proxies, removed at 2.36: `os-volumes` (list, detail,
//! create, show, delete) and `os-snapshots` (the same), in Nova's formats
//! (`displayName`, `availabilityZone`, `createdAt`, attachments with
//! `serverId`), and `os-volumes_boot`, the legacy name of server create
//! (which Nova keeps at every microversion).
//!
//! Each call checks Nova's rule first, then goes to the volume service's
//! domain functions as the caller (`volume::create_volume`,
//! `volume::load_volume`, `volume::ops::delete`, ...), so Cinder's own
//! policy, visibility, state checks and quotas hold; their errors are
//! answered with Nova's codes (over quota a 403, as Nova's proxy).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::request::{Integer, LooseBool, body, present};
use super::{ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, own_target};
use crate::db::volume::{self as vstore, Snapshot, Volume};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::volume::{self, VolumeError, VolumeState};

type S = Arc<ComputeState>;

/// The most items one proxy list returns (Nova's `osapi_max_limit`).
const MAX_LIMIT: usize = 1000;
/// Longest metadata key and value Cinder keeps.
const META_MAX: usize = 255;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-volumes", get(volume_list).post(volume_create))
        .route("/v2.1/os-volumes/detail", get(volume_detail))
        .route(
            "/v2.1/os-volumes/{id}",
            get(volume_show).delete(volume_delete),
        )
        .route(
            "/v2.1/os-snapshots",
            get(snapshot_list).post(snapshot_create),
        )
        .route("/v2.1/os-snapshots/detail", get(snapshot_detail))
        .route(
            "/v2.1/os-snapshots/{id}",
            get(snapshot_show).delete(snapshot_delete),
        )
        .route("/v2.1/os-volumes_boot", post(super::create::create))
}

/// 404 from 2.36 on, then Nova's `rule` on the caller's own project.
fn proxy_allowed(s: &ComputeState, ctx: &AuthContext, mv: Mv, rule: &str) -> ComputeResult<()> {
    super::proxy_available(
        mv,
        "The volume proxy APIs are gone from microversion 2.36 on; use the Block Storage service.",
    )?;
    authorize(s, ctx, rule, &own_target(ctx))
}

/// The volume service's errors as Nova's proxies answer them.
fn from_volume(e: VolumeError) -> ComputeError {
    match e {
        VolumeError::BadRequest(m) => ComputeError::BadRequest(m),
        VolumeError::Forbidden(m) | VolumeError::Unauthorized(m) => ComputeError::Forbidden(m),
        VolumeError::NotFound(m) => ComputeError::NotFound(m),
        VolumeError::Conflict(m) => ComputeError::Conflict(m),
        VolumeError::OverLimit(m) => ComputeError::QuotaExceeded(m),
        VolumeError::NotAcceptable(m) => ComputeError::BadRequest(m),
        VolumeError::Db(d) => ComputeError::Db(d),
        VolumeError::Io(e) => ComputeError::Internal(e.to_string()),
    }
}

fn cinder(s: &ComputeState) -> &Arc<VolumeState> {
    &s.volumes
}

// ------------------------------------------------------------------ requests

/// The body of `POST /os-volumes` (Nova's `volumes.create` schema).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreateBody {
    volume: VolumeCreate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreate {
    /// GiB: a number or a string of digits, at least 1.
    size: Integer,
    #[serde(default, deserialize_with = "present")]
    volume_type: Option<String>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    snapshot_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    availability_zone: Option<String>,
    #[serde(default, deserialize_with = "present")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    display_description: Option<String>,
}

/// The body of `POST /os-snapshots` (Nova's `snapshots.create` schema).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCreateBody {
    snapshot: SnapshotCreate,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotCreate {
    volume_id: String,
    #[serde(default, deserialize_with = "present")]
    force: Option<LooseBool>,
    #[serde(default, deserialize_with = "present")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    display_description: Option<String>,
}

/// Reads a volume create into the volume service's request.
fn parse_volume_create(bytes: &[u8]) -> ComputeResult<volume::NewVolume> {
    let VolumeCreateBody { volume: v } = body(bytes)?;
    let size = v.size.within("size", 1, i64::from(i32::MAX))?;
    let metadata = v.metadata.unwrap_or_default();
    if let Some((k, _)) = metadata.iter().find(|(k, val)| {
        k.is_empty() || k.chars().count() > META_MAX || val.chars().count() > META_MAX
    }) {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute metadata. Key or value of '{k}' is empty or longer than {META_MAX} characters."
        )));
    }
    Ok(volume::NewVolume {
        name: v.display_name,
        description: v.display_description,
        size: Some(size),
        volume_type: v.volume_type,
        availability_zone: v.availability_zone,
        metadata,
        snapshot_id: v.snapshot_id,
        ..volume::NewVolume::default()
    })
}

/// Reads a snapshot create into the volume service's request.
fn parse_snapshot_create(bytes: &[u8]) -> ComputeResult<volume::NewSnapshot> {
    let SnapshotCreateBody { snapshot: sn } = body(bytes)?;
    Ok(volume::NewSnapshot {
        volume_id: sn.volume_id,
        force: sn.force.is_some_and(|f| f.0),
        name: sn.display_name,
        description: sn.display_description,
        metadata: BTreeMap::new(),
    })
}

// --------------------------------------------------------------------- views

/// A volume as Nova's proxy shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeView {
    id: String,
    status: String,
    size: i64,
    availability_zone: String,
    created_at: String,
    attachments: Vec<AttachmentView>,
    display_name: Option<String>,
    display_description: Option<String>,
    volume_type: Option<String>,
    snapshot_id: Option<String>,
    metadata: BTreeMap<String, String>,
}

/// Nova's attachment of a volume: the volume's id is the attachment's; a
/// volume not attached has one empty attachment (`[{}]`), as Nova shows.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentView {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
}

fn volume_view(v: &Volume, types: &HashMap<String, String>) -> VolumeView {
    let attached = (v.attach_status == "attached")
        .then(|| {
            v.attachments
                .iter()
                .find(|a| a.attach_status == "attached")
                .or(v.attachments.first())
        })
        .flatten();
    let attachment = match attached {
        Some(a) => AttachmentView {
            id: Some(v.id.clone()),
            volume_id: Some(v.id.clone()),
            server_id: a.instance_uuid.clone(),
            device: a.mountpoint.clone().filter(|m| !m.is_empty()),
        },
        None => AttachmentView::default(),
    };
    VolumeView {
        id: v.id.clone(),
        status: v.status.clone(),
        size: v.size,
        availability_zone: v.availability_zone.clone(),
        created_at: v.created_at.clone(),
        attachments: vec![attachment],
        display_name: v.name.clone(),
        display_description: v.description.clone(),
        volume_type: (!v.volume_type_id.is_empty()).then(|| {
            types
                .get(&v.volume_type_id)
                .cloned()
                .unwrap_or_else(|| v.volume_type_id.clone())
        }),
        snapshot_id: v.snapshot_id.clone(),
        metadata: v.metadata.clone(),
    }
}

/// A snapshot as Nova's proxy shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotView {
    id: String,
    volume_id: String,
    status: String,
    size: i64,
    created_at: String,
    display_name: Option<String>,
    display_description: Option<String>,
}

fn snapshot_view(sn: &Snapshot) -> SnapshotView {
    SnapshotView {
        id: sn.id.clone(),
        volume_id: sn.volume_id.clone(),
        status: sn.status.clone(),
        size: sn.size,
        created_at: sn.created_at.clone(),
        display_name: sn.name.clone(),
        display_description: sn.description.clone(),
    }
}

/// Volume type ids to names.
async fn type_names(s: &ComputeState) -> ComputeResult<HashMap<String, String>> {
    cinder(s)
        .read(|conn| {
            Ok(vstore::list_types(conn)?
                .into_iter()
                .map(|t| (t.id, t.name))
                .collect())
        })
        .await
        .map_err(from_volume)
}

/// Nova's `common.limited`: `offset` and `limit` (at most [`MAX_LIMIT`]).
fn limited<T>(items: Vec<T>, query: &HashMap<String, String>) -> ComputeResult<Vec<T>> {
    let number = |key: &str| -> ComputeResult<Option<usize>> {
        match query.get(key) {
            None => Ok(None),
            Some(text) => text
                .parse::<usize>()
                .map(Some)
                .map_err(|_| ComputeError::BadRequest(format!("{key} param must be an integer"))),
        }
    };
    let offset = number("offset")?.unwrap_or(0);
    let limit = number("limit")?.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
    Ok(items.into_iter().skip(offset).take(limit).collect())
}

fn with_location(mut response: Response, s: &ComputeState, path: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("{}/{path}", s.v21_url())) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

// ------------------------------------------------------------------- volumes

/// The caller's project's volumes, Cinder's `volume:get_all` checked.
async fn own_volumes(s: &ComputeState, ctx: &AuthContext) -> ComputeResult<Vec<Volume>> {
    let project = super::project_of(ctx)?;
    volume::authorize(cinder(s), ctx, "volume:get_all", &volume::own_target(ctx))
        .map_err(from_volume)?;
    cinder(s)
        .read(move |conn| Ok(vstore::list_volumes(conn, Some(&project))?))
        .await
        .map_err(from_volume)
}

async fn volume_index(
    s: S,
    ctx: Arc<AuthContext>,
    mv: Mv,
    q: Vec<(String, String)>,
    rule: &str,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, rule)?;
    let q = super::query_map(q);
    let list = limited(own_volumes(&s, &ctx).await?, &q)?;
    let types = type_names(&s).await?;
    let views: Vec<VolumeView> = list.iter().map(|v| volume_view(v, &types)).collect();
    Ok(json_response(StatusCode::OK, &json!({"volumes": views})))
}

async fn volume_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    volume_index(s, ctx, mv, q, "os_compute_api:os-volumes:list").await
}

async fn volume_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    volume_index(s, ctx, mv, q, "os_compute_api:os-volumes:detail").await
}

async fn volume_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-volumes:create")?;
    let req = parse_volume_create(&bytes)?;
    let created = volume::create_volume(cinder(&s), &ctx, req)
        .await
        .map_err(from_volume)?;
    let types = type_names(&s).await?;
    let response = json_response(
        StatusCode::OK,
        &json!({"volume": volume_view(&created, &types)}),
    );
    Ok(with_location(
        response,
        &s,
        &format!("os-volumes/{}", created.id),
    ))
}

async fn volume_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-volumes:show")?;
    let v = volume::load_volume(cinder(&s), &ctx, &id, "volume:get")
        .await
        .map_err(from_volume)?;
    let types = type_names(&s).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"volume": volume_view(&v, &types)}),
    ))
}

async fn volume_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-volumes:delete")?;
    let v = volume::load_volume(cinder(&s), &ctx, &id, "volume:delete")
        .await
        .map_err(from_volume)?;
    volume::ops::delete(cinder(&s), &v.id, false, false)
        .await
        .map_err(from_volume)?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ----------------------------------------------------------------- snapshots

async fn snapshot_index(
    s: S,
    ctx: Arc<AuthContext>,
    mv: Mv,
    q: Vec<(String, String)>,
    rule: &str,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, rule)?;
    let q = super::query_map(q);
    let project = super::project_of(&ctx)?;
    volume::authorize(
        cinder(&s),
        &ctx,
        "volume:get_all_snapshots",
        &volume::own_target(&ctx),
    )
    .map_err(from_volume)?;
    let list = cinder(&s)
        .read(move |conn| Ok(vstore::list_snapshots(conn, Some(&project))?))
        .await
        .map_err(from_volume)?;
    let views: Vec<SnapshotView> = limited(list, &q)?.iter().map(snapshot_view).collect();
    Ok(json_response(StatusCode::OK, &json!({"snapshots": views})))
}

async fn snapshot_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    snapshot_index(s, ctx, mv, q, "os_compute_api:os-volumes:snapshots:list").await
}

async fn snapshot_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    snapshot_index(s, ctx, mv, q, "os_compute_api:os-volumes:snapshots:detail").await
}

async fn snapshot_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-volumes:snapshots:create")?;
    let req = parse_snapshot_create(&bytes)?;
    let snap = volume::create_snapshot(cinder(&s), &ctx, req)
        .await
        .map_err(from_volume)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"snapshot": snapshot_view(&snap)}),
    ))
}

async fn snapshot_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-volumes:snapshots:show")?;
    let snap = volume::load_snapshot(cinder(&s), &ctx, &id, "volume:get_snapshot")
        .await
        .map_err(from_volume)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"snapshot": snapshot_view(&snap)}),
    ))
}

async fn snapshot_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-volumes:snapshots:delete")?;
    let snap = volume::load_snapshot(cinder(&s), &ctx, &id, "volume:delete_snapshot")
        .await
        .map_err(from_volume)?;
    volume::delete_snapshot(cinder(&s), &snap.id, false)
        .await
        .map_err(from_volume)?;
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::request::refused;

    #[test]
    fn volume_create_reads_novas_members() {
        let v = parse_volume_create(
            br#"{"volume": {"size": "2", "display_name": "d", "display_description": "x",
                "volume_type": "lvm", "metadata": {"a": "b"}, "availability_zone": "nova",
                "snapshot_id": "s"}}"#,
        )
        .expect("accepted");
        assert_eq!(v.size, Some(2));
        assert_eq!(v.name.as_deref(), Some("d"));
        assert_eq!(v.description.as_deref(), Some("x"));
        assert_eq!(v.volume_type.as_deref(), Some("lvm"));
        assert_eq!(v.availability_zone.as_deref(), Some("nova"));
        assert_eq!(v.snapshot_id.as_deref(), Some("s"));
        assert_eq!(v.metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(
            parse_volume_create(br#"{"volume": {"size": 1}}"#)
                .expect("accepted")
                .size,
            Some(1)
        );
    }

    #[test]
    fn volume_create_refusals() {
        let msg = |b: &[u8]| refused(parse_volume_create(b));
        assert!(msg(br#"{"volume": {}}"#).contains("'size' is a required property"));
        assert!(msg(br#"{}"#).contains("'volume' is a required property"));
        assert!(msg(br#"{"volume": {"size": 0}}"#).contains("0 is not in the range"));
        assert!(msg(br#"{"volume": {"size": "x"}}"#).contains("is not an integer"));
        assert!(
            msg(br#"{"volume": {"size": 1, "name": "n"}}"#)
                .contains("Additional properties are not allowed ('name' was unexpected)")
        );
        assert!(msg(br#"{"volume": {"size": 1, "display_name": 3}}"#).contains("not a string"));
        assert!(msg(br#"{"volume": {"size": 1, "display_name": null}}"#).contains("not a string"));
        assert!(msg(br#"{"volume": {"size": 1, "metadata": {"k": 1}}}"#).contains("not a string"));
        let long = format!(
            r#"{{"volume": {{"size": 1, "metadata": {{"k": "{}"}}}}}}"#,
            "v".repeat(256)
        );
        assert!(msg(long.as_bytes()).contains("metadata"));
    }

    #[test]
    fn snapshot_create_reads_novas_members() {
        let sn = parse_snapshot_create(
            br#"{"snapshot": {"volume_id": "v", "force": "True", "display_name": "n",
                "display_description": "d"}}"#,
        )
        .expect("accepted");
        assert_eq!(sn.volume_id, "v");
        assert!(sn.force);
        assert_eq!(sn.name.as_deref(), Some("n"));
        assert_eq!(sn.description.as_deref(), Some("d"));
        assert!(
            !parse_snapshot_create(br#"{"snapshot": {"volume_id": "v"}}"#)
                .expect("accepted")
                .force
        );
        let msg = |b: &[u8]| refused(parse_snapshot_create(b));
        assert!(msg(br#"{"snapshot": {}}"#).contains("'volume_id' is a required property"));
        assert!(msg(br#"{"snapshot": {"volume_id": "v", "force": "maybe"}}"#).contains("force"));
        assert!(
            msg(br#"{"snapshot": {"volume_id": "v", "name": "n"}}"#)
                .contains("('name' was unexpected)")
        );
    }

    #[test]
    fn views_use_novas_keys() {
        let mut v = Volume {
            id: "vol".into(),
            name: Some("n".into()),
            size: 3,
            status: "in-use".into(),
            attach_status: "attached".into(),
            availability_zone: "nova".into(),
            volume_type_id: "t1".into(),
            created_at: "2026-01-01T00:00:00.000000".into(),
            ..Volume::default()
        };
        v.attachments.push(vstore::Attachment {
            instance_uuid: Some("srv".into()),
            mountpoint: Some("/dev/vdb".into()),
            attach_status: "attached".into(),
            ..vstore::Attachment::default()
        });
        let types = HashMap::from([("t1".to_string(), "lvm".to_string())]);
        let view = serde_json::to_value(volume_view(&v, &types)).expect("json");
        assert_eq!(view["displayName"], "n");
        assert_eq!(view["availabilityZone"], "nova");
        assert_eq!(view["createdAt"], "2026-01-01T00:00:00.000000");
        assert_eq!(view["volumeType"], "lvm");
        assert_eq!(
            view["attachments"],
            json!([{"id": "vol", "volumeId": "vol", "serverId": "srv", "device": "/dev/vdb"}])
        );
        v.attach_status = "detached".into();
        let view = serde_json::to_value(volume_view(&v, &types)).expect("json");
        assert_eq!(view["attachments"], json!([{}]));
        assert!(view["snapshotId"].is_null());
    }

    #[test]
    fn limited_takes_offset_and_limit() {
        let q = HashMap::from([
            ("offset".to_string(), "1".to_string()),
            ("limit".to_string(), "2".to_string()),
        ]);
        assert_eq!(limited(vec![1, 2, 3, 4], &q).expect("ok"), vec![2, 3]);
        let bad = HashMap::from([("limit".to_string(), "x".to_string())]);
        assert!(limited(vec![1], &bad).is_err());
    }
}
