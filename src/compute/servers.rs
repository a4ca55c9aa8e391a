//! Servers: create (with quota, scheduling on this one host and the build in
//! the background), list and `/detail` with Nova's filters and pagination,
//! show, update, delete; metadata, tags, ips, os-interface, instance actions,
//! server password and security groups. Actions and the state machine live
//! in `lifecycle`, the VMM side in `virt`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::access::{check_unlocked, load_authorized, load_tx};
use super::build;
use super::iso_time;
use super::quotas::{self, ServerRequest};
use super::server_views::view;
use super::states::NOSTATE;
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, empty, int_field, next_link, no_additional,
    nova_time, paginate, parse_body, project_of, query_map, take_object,
};
use crate::db::compute as store;
use crate::db::now_unix;
use crate::db::servers::{self as db, FlavorCopy, Server};
use crate::http::{RequestId, json_response};
use crate::identity::Auth;

type S = Arc<ComputeState>;

/// Server create, update and delete, os-interface attach/detach and
/// os-volume_attachments, migrations and external events. The read-only
/// views (list, show, ips, metadata, tags, instance actions...) have their
/// own routes in `server_list`, `server_metadata`, `server_subresources`
/// and `instance_actions`, which import from this module.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/servers", post(create))
        .route("/v2.1/servers/{id}", put(update).delete(delete))
        .route(
            "/v2.1/servers/{id}/os-interface",
            post(super::interfaces::attach_handler),
        )
        .route(
            "/v2.1/servers/{id}/os-interface/{port}",
            axum::routing::delete(super::interfaces::detach_handler),
        )
        .route(
            "/v2.1/servers/{id}/os-volume_attachments",
            get(super::volumes::list_handler).post(super::volumes::attach_handler),
        )
        .route(
            "/v2.1/servers/{id}/os-volume_attachments/{volume_id}",
            get(super::volumes::show_handler).delete(super::volumes::detach_handler),
        )
        .route("/v2.1/servers/{id}/migrations", get(server_migrations))
        .route("/v2.1/os-migrations", get(migrations_list))
        .route("/v2.1/os-server-external-events", post(external_events))
}

// ------------------------------------------------------------- migrations

fn migration_view(sv: &Server, m: &db::MigrationRecord, mv: Mv) -> Value {
    let host = sv.host.clone().unwrap_or_else(super::hosts::hostname);
    let mut o = json!({
        "id": m.id,
        "status": m.status,
        "instance_uuid": sv.id,
        "source_node": host,
        "source_compute": host,
        "dest_node": host,
        "dest_compute": host,
        "dest_host": "127.0.0.1",
        "old_instance_type_id": m.old_flavor_id.parse::<i64>().ok(),
        "new_instance_type_id": m.new_flavor_id.parse::<i64>().ok(),
        "created_at": nova_time(m.created_at),
        "updated_at": nova_time(m.updated_at),
    });
    if mv.at_least(23) {
        o["migration_type"] = json!(m.kind);
    }
    if mv.at_least(59) {
        o["uuid"] = json!(m.uuid);
    }
    if mv.at_least(80) {
        o["user_id"] = json!(sv.user_id);
        o["project_id"] = json!(sv.project_id);
    }
    o
}

/// `GET /os-migrations` (admin): every server's resizes, newest first.
async fn migrations_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    super::authorize(
        &s,
        &ctx,
        "os_compute_api:os-migrations:index",
        &super::own_target(&ctx),
    )?;
    let q = query_map(q);
    let servers = s
        .read(|conn| Ok(db::list_servers(conn, None, true)?))
        .await?;
    let mut items: Vec<(i64, Value, String)> = Vec::new();
    for sv in &servers {
        if q.get("instance_uuid").is_some_and(|u| *u != sv.id) {
            continue;
        }
        for m in &sv.migrations {
            if q.get("status").is_some_and(|st| *st != m.status)
                || q.get("migration_type").is_some_and(|t| *t != m.kind)
            {
                continue;
            }
            items.push((m.created_at, migration_view(sv, m, mv), m.uuid.clone()));
        }
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.0));
    let (page, more) = if mv.at_least(59) {
        paginate(items, &q, |i| i.2.clone())?
    } else {
        (items, false)
    };
    let mut body = json!({"migrations": page.iter().map(|i| i.1.clone()).collect::<Vec<_>>()});
    if more && let Some(last) = page.last() {
        body["migrations_links"] = next_link(&s, "os-migrations", &q, &last.2);
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /servers/{id}/migrations`: in-progress live migrations; there are none on one host.
async fn server_migrations(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    if !mv.at_least(23) {
        return Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    load_authorized(&s, &ctx, &id, "os_compute_api:servers:migrations:index").await?;
    Ok(json_response(StatusCode::OK, &json!({"migrations": []})))
}

/// `POST /os-server-external-events` (admin or service): Neutron and Cinder
/// tell Nova about ports and volumes. Recorded as handled; 207 when some
/// servers are unknown, 404 when none is known.
async fn external_events(
    State(s): State<S>,
    Auth(ctx): Auth,
    body: Bytes,
) -> ComputeResult<Response> {
    super::authorize(
        &s,
        &ctx,
        "os_compute_api:os-server-external-events:create",
        &super::own_target(&ctx),
    )?;
    let mut body = parse_body(&body)?;
    let Some(Value::Array(events)) = body.remove("events") else {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute events. 'events' is a required property".into(),
        ));
    };
    const NAMES: &[&str] = &[
        "network-changed",
        "network-vif-plugged",
        "network-vif-unplugged",
        "network-vif-deleted",
        "volume-extended",
        "power-update",
        "accelerator-request-bound",
        "volume-reimaged",
    ];
    let servers = s
        .read(|conn| Ok(db::list_servers(conn, None, false)?))
        .await?;
    let mut out = Vec::new();
    let mut found = 0;
    for event in events {
        let name = event.get("name").and_then(Value::as_str).unwrap_or("");
        if !NAMES.contains(&name) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute name. Value: {name}. '{name}' is not one of {NAMES:?}"
            )));
        }
        let uuid = event
            .get("server_uuid")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut reply = event.clone();
        let known = servers.iter().any(|sv| sv.id == uuid && sv.host.is_some());
        if known {
            found += 1;
            reply["code"] = json!(200);
            reply["status"] = json!(
                event
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("completed")
            );
        } else {
            reply["code"] = json!(404);
            reply["status"] = json!("failed");
        }
        out.push(reply);
    }
    if found == 0 {
        return Err(ComputeError::NotFound(
            "No instances found for any event".into(),
        ));
    }
    let status = if found == out.len() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok(json_response(status, &json!({"events": out})))
}

// ------------------------------------------------------------------ states

// Nova's status and the server views are in server_views.rs.

// ------------------------------------------------------------------ create

pub(super) fn last_segment(text: &str) -> String {
    text.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

fn opt_str(obj: &Map<String, Value>, key: &str, max: usize) -> ComputeResult<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.chars().count() <= max => Ok(Some(text.clone())),
        Some(Value::String(_)) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value is too long (at most {max} characters)."
        ))),
        Some(other) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not of type 'string'"
        ))),
    }
}

/// A server name: 1–255 characters, not only spaces.
fn check_name(value: Option<&Value>) -> ComputeResult<String> {
    match value {
        Some(Value::String(name))
            if !name.trim().is_empty()
                && name.chars().count() <= 255
                && name.trim() == name.as_str() =>
        {
            Ok(name.clone())
        }
        Some(Value::String(name)) if !name.trim().is_empty() && name.chars().count() <= 255 => {
            Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute name. Value: {name}. '{name}' does not match '^(?! )[\\S ]*(?<! )$'"
            )))
        }
        Some(other) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute name. Value: {other}. {other} is not a valid name (1-255 characters, not only spaces)"
        ))),
        None => Err(ComputeError::BadRequest(
            "Invalid input for field/attribute server. 'name' is a required property".into(),
        )),
    }
}

/// Metadata: an object of string keys (1–255) to string values (≤ 255).
pub fn check_metadata(value: &Value, key: &str) -> ComputeResult<BTreeMap<String, String>> {
    let Value::Object(map) = value else {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {value}. {value} is not of type 'object'"
        )));
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Metadata keys must be 1-255 characters: '{k}'"
            )));
        }
        let Value::String(text) = v else {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Value: {v}. {v} is not of type 'string'"
            )));
        };
        if text.chars().count() > 255 {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Value for '{k}' is too long"
            )));
        }
        out.insert(k.clone(), text.clone());
    }
    Ok(out)
}

/// Tags: strings of 1–60 characters without '/' or ','; at most 50.
pub fn check_tag(tag: &str) -> ComputeResult<()> {
    if tag.is_empty() || tag.chars().count() > 60 || tag.contains('/') || tag.contains(',') {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute tags. Value: {tag}. '{tag}' is not a valid tag"
        )));
    }
    Ok(())
}

pub const MAX_TAGS: usize = 50;

pub(super) fn check_tags(value: &Value) -> ComputeResult<Vec<String>> {
    let Value::Array(items) = value else {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute tags. Value is not of type 'array'".into(),
        ));
    };
    let mut tags = Vec::new();
    for item in items {
        let Value::String(tag) = item else {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute tags. Value: {item}. {item} is not of type 'string'"
            )));
        };
        check_tag(tag)?;
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute tags. The number of tags exceeds the per-server limit {MAX_TAGS}"
        )));
    }
    Ok(tags)
}

pub(super) fn bool_like(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
            "false" | "0" | "no" | "off" | "f" | "n" | "" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|v| v != 0),
        Value::Null => Some(false),
        _ => None,
    }
}

/// A hostname from a display name, as Nova's `sanitize_hostname` makes it:
/// characters beyond U+00FF dropped, cut to 63 characters, space, `_` and
/// `.` made `-`, anything else but letters, digits and `-` dropped, lower
/// case, `-` trimmed from both ends. Stricter than Nova in one point: the
/// Latin-1 letters Nova keeps (`é`) are dropped too, so that the result is
/// always an RFC 1123 host name. Empty: `Server-<uuid>`, as Nova names it.
pub fn sanitize_hostname(name: &str, server_id: &str) -> String {
    let cut: String = name
        .chars()
        .filter(|c| u32::from(*c) <= 0xFF)
        .take(63)
        .collect();
    let host: String = cut
        .chars()
        .filter_map(|c| match c {
            ' ' | '_' | '.' => Some('-'),
            c if c.is_ascii_alphanumeric() || c == '-' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let host = host.trim_matches(['-', '.']);
    if host.is_empty() {
        format!("Server-{server_id}")
    } else {
        host.to_string()
    }
}

/// Nova's `hostname` schema (2.90–2.93): an RFC 1123 host name, 2–63 characters.
const HOSTNAME_PATTERN: &str = "^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$";
/// Nova's `fqdn` schema (2.94+): 1–255 of letters, digits, `-`, `.` and `_`.
const FQDN_PATTERN: &str = "^[a-zA-Z0-9-._]*$";

/// The `hostname` of a create or update, checked as Nova's JSON schema for
/// the microversion checks it (a 400 with its message otherwise).
fn check_hostname(mv: Mv, obj: &Map<String, Value>) -> ComputeResult<Option<String>> {
    let invalid = |value: &dyn std::fmt::Display, why: String| {
        ComputeError::BadRequest(format!(
            "Invalid input for field/attribute hostname. Value: {value}. {why}"
        ))
    };
    let text = match obj.get("hostname") {
        None => return Ok(None),
        Some(Value::String(text)) => text,
        Some(Value::Null) => {
            return Err(invalid(&"None", "None is not of type 'string'".into()));
        }
        Some(other) => return Err(invalid(other, format!("{other} is not of type 'string'"))),
    };
    let fqdn = mv.at_least(94);
    let fits_pattern = if fqdn {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    } else {
        let bytes = text.as_bytes();
        bytes.len() >= 2
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    let (min, max, pattern) = if fqdn {
        (1, 255, FQDN_PATTERN)
    } else {
        (2, 63, HOSTNAME_PATTERN)
    };
    let length = text.chars().count();
    if !fits_pattern {
        return Err(invalid(
            text,
            format!("'{text}' does not match '{pattern}'"),
        ));
    }
    if length < min {
        return Err(invalid(text, format!("'{text}' is too short")));
    }
    if length > max {
        return Err(invalid(text, format!("'{text}' is too long")));
    }
    Ok(Some(text.clone()))
}

fn random_password() -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Everything a create needs, validated.
struct CreateRequest {
    name: String,
    image_id: String,
    flavor_id: String,
    key_name: Option<String>,
    user_data: Option<String>,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    tags: Vec<String>,
    config_drive: bool,
    availability_zone: Option<String>,
    min_count: i64,
    max_count: i64,
    return_reservation_id: bool,
    admin_pass: Option<String>,
    access_ipv4: String,
    access_ipv6: String,
    group: Option<String>,
    hostname: Option<String>,
    networks: super::networking::Requested,
    security_groups: Vec<String>,
}

fn parse_create(mv: Mv, body: &Bytes) -> ComputeResult<CreateRequest> {
    let mut body = parse_body(body)?;
    let hints = body
        .remove("os:scheduler_hints")
        .or_else(|| body.remove("OS-SCH-HNT:scheduler_hints"));
    let server = take_object(&mut body, "server")?;
    let name = check_name(server.get("name"))?;
    let image_id = match server.get("imageRef") {
        Some(Value::String(r)) => last_segment(r),
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute imageRef. Value: {other}. {other} is not of type 'string'"
            )));
        }
    };
    let flavor_id = match server.get("flavorRef") {
        Some(Value::String(r)) if !r.is_empty() => last_segment(r),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server. 'flavorRef' is a required property"
                    .into(),
            ));
        }
    };
    let mut image_id = image_id;
    if let Some(bdms) = server
        .get("block_device_mapping_v2")
        .or_else(|| server.get("block_device_mapping"))
        .and_then(Value::as_array)
    {
        for bdm in bdms {
            let source = bdm.get("source_type").and_then(Value::as_str).unwrap_or("");
            let dest = bdm
                .get("destination_type")
                .and_then(Value::as_str)
                .unwrap_or("local");
            match (source, dest) {
                // The image as local root disk: the same as imageRef.
                ("image", "local") => {
                    if let Some(uuid) = bdm.get("uuid").and_then(Value::as_str)
                        && image_id.is_empty()
                    {
                        image_id = uuid.to_string();
                    }
                }
                // Local ephemeral or swap disks: the flavor's sizes apply.
                ("blank", "local") => {}
                _ => {
                    return Err(ComputeError::BadRequest(
                        "Block device mappings to volumes need the volume service, which this cloud does not have yet."
                            .into(),
                    ));
                }
            }
        }
    }
    if image_id.is_empty() {
        return Err(ComputeError::BadRequest(
            "Missing imageRef attribute".into(),
        ));
    }
    if mv.at_least(57) && server.contains_key("personality") {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed ('personality' was unexpected)".into(),
        ));
    }
    let key_name = opt_str(&server, "key_name", 255)?;
    let user_data = match opt_str(&server, "user_data", 65535)? {
        Some(data) => {
            if base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .is_err()
            {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute user_data. Value is not base64 encoded"
                        .into(),
                ));
            }
            Some(data)
        }
        None => None,
    };
    let description = if mv.at_least(19) {
        opt_str(&server, "description", 255)?
    } else if server.contains_key("description") {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)".into(),
        ));
    } else {
        None
    };
    let metadata = match server.get("metadata") {
        Some(v) => check_metadata(v, "metadata")?,
        None => BTreeMap::new(),
    };
    let tags = match server.get("tags") {
        Some(v) if mv.at_least(52) => check_tags(v)?,
        Some(_) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server. Additional properties are not allowed ('tags' was unexpected)".into(),
            ));
        }
        None => Vec::new(),
    };
    let config_drive = match server.get("config_drive") {
        Some(v) => bool_like(v).ok_or_else(|| {
            ComputeError::BadRequest(format!(
                "Invalid input for field/attribute config_drive. Value: {v}. {v} is not a boolean"
            ))
        })?,
        None => false,
    };
    let availability_zone = opt_str(&server, "availability_zone", 255)?.filter(|z| !z.is_empty());
    if let Some(zone) = &availability_zone {
        let zone_name = zone.split(':').next().unwrap_or("");
        if zone_name != super::hosts::ZONE {
            return Err(ComputeError::BadRequest(format!(
                "The requested availability zone is not available: {zone}"
            )));
        }
    }
    let min_count = match server.get("min_count") {
        Some(v) => int_field(v, "min_count", 1, 1000)?,
        None => 1,
    };
    let max_count = match server.get("max_count") {
        Some(v) => int_field(v, "max_count", 1, 1000)?,
        None => min_count,
    };
    if max_count < min_count {
        return Err(ComputeError::BadRequest(
            "min_count must be <= max_count".into(),
        ));
    }
    let networks = super::networking::parse(mv, &server, max_count)?;
    let security_groups = super::networking::parse_security_groups(&server)?;
    let return_reservation_id = server
        .get("return_reservation_id")
        .and_then(bool_like)
        .unwrap_or(false);
    let admin_pass = opt_str(&server, "adminPass", 255)?;
    let access_ipv4 = opt_str(&server, "accessIPv4", 64)?.unwrap_or_default();
    if !access_ipv4.is_empty() && access_ipv4.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute accessIPv4. Value: {access_ipv4}. '{access_ipv4}' is not a 'ipv4'"
        )));
    }
    let access_ipv6 = opt_str(&server, "accessIPv6", 64)?.unwrap_or_default();
    let access_ipv6 = if access_ipv6.is_empty() {
        access_ipv6
    } else {
        match access_ipv6.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute accessIPv6. Value: {access_ipv6}. '{access_ipv6}' is not a 'ipv6'"
                )));
            }
        }
    };
    let group = hints
        .as_ref()
        .and_then(|h| h.get("group"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let hostname = if mv.at_least(90) {
        check_hostname(mv, &server)?
    } else {
        None
    };
    if hostname.is_some() && max_count > 1 {
        return Err(ComputeError::BadRequest(
            "Unable to allocate a single hostname to multiple instances".into(),
        ));
    }
    Ok(CreateRequest {
        name,
        image_id,
        flavor_id,
        key_name,
        user_data,
        description,
        metadata,
        tags,
        config_drive,
        availability_zone,
        min_count,
        max_count,
        return_reservation_id,
        admin_pass,
        access_ipv4,
        access_ipv6,
        group,
        hostname,
        networks,
        security_groups,
    })
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Extension(request_id): Extension<RequestId>,
    body: Bytes,
) -> ComputeResult<Response> {
    let project = project_of(&ctx)?;
    let req = parse_create(mv, &body)?;
    super::authorize(
        &s,
        &ctx,
        "os_compute_api:servers:create",
        &super::owner_target(&project, &ctx.user_id),
    )?;
    let is_admin = super::is_admin_context(&s, &ctx);
    let image = match s
        .images
        .get(&req.image_id, if is_admin { None } else { Some(&project) })
        .await
    {
        Ok(image) => image,
        Err(crate::image::service::ImageServiceError::NotFound(_)) => {
            return Err(ComputeError::BadRequest(format!(
                "Image {} could not be found.",
                req.image_id
            )));
        }
        Err(e) => return Err(ComputeError::Internal(e.to_string())),
    };
    if image.status != "active" {
        return Err(ComputeError::BadRequest(format!(
            "Image {} is not active.",
            image.id
        )));
    }
    let flavor_id = req.flavor_id.clone();
    let flavor = s
        .read(move |conn| Ok(store::get_flavor(conn, &flavor_id)?))
        .await?
        .ok_or_else(|| {
            ComputeError::BadRequest(format!("Flavor {} could not be found.", req.flavor_id))
        })?;
    if flavor.ram < image.min_ram {
        return Err(ComputeError::BadRequest(
            "Flavor's memory is too small for requested image.".into(),
        ));
    }
    let image_gb = (image.virtual_size.or(image.size).unwrap_or(0) + (1 << 30) - 1) >> 30;
    if flavor.disk > 0 && (flavor.disk < image.min_disk || flavor.disk < image_gb) {
        return Err(ComputeError::BadRequest(
            "Flavor's disk is too small for requested image.".into(),
        ));
    }
    let boot = build::resolve_boot(&s, &image, &project, is_admin).await?;
    let admin_pass = req.admin_pass.clone().unwrap_or_else(random_password);
    let reservation_id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let user_id = ctx.user_id.clone();
    let now = now_unix();
    let flavor_copy = FlavorCopy::from(&flavor);
    let host = super::hosts::hostname();
    let ratios = s.config.ratios;
    let force_config_drive = s.config.force_config_drive;
    let facts = super::hosts::capacity(&s.db.state_dir());
    let rid = request_id.0.clone();
    let sg_names = req.security_groups.clone();
    let (servers, scheduled) = super::networking::write_atomic(&s, move |tx| {
            if !flavor.is_public
                && !is_admin
                && !store::flavor_projects(tx, &flavor.id)?.contains(&project)
            {
                return Err(ComputeError::BadRequest(format!(
                    "Flavor {} could not be found.",
                    flavor.id
                )));
            }
            let key_data = match &req.key_name {
                Some(name) => Some(
                    store::get_keypair(tx, &user_id, name)?
                        .ok_or_else(|| {
                            ComputeError::BadRequest("Invalid key_name provided.".into())
                        })?
                        .public_key,
                ),
                None => None,
            };
            if let Some(group_id) = &req.group {
                let group = store::get_server_group(tx, group_id)?.ok_or_else(|| {
                    ComputeError::BadRequest(format!("Invalid server group {group_id}"))
                })?;
                if group.project_id != project && !is_admin {
                    return Err(ComputeError::BadRequest(format!(
                        "Invalid server group {group_id}"
                    )));
                }
                quotas::enforce_group_members(tx, &project, &user_id, group_id, req.min_count)?;
            }
            // Quotas: as many as fit between min_count and max_count.
            let in_use = db::quota_usage(tx, &project, None)?;
            let mut count = req.max_count;
            loop {
                let request = ServerRequest {
                    count,
                    vcpus: flavor.vcpus,
                    ram_mb: flavor.ram,
                    metadata_items: req.metadata.len() as i64,
                };
                match quotas::enforce_server_create(tx, &project, &user_id, &in_use, &request) {
                    Ok(()) => break,
                    Err(e) if count <= req.min_count => return Err(e),
                    Err(_) => count -= 1,
                }
            }
            // Networks as Nova's validate_networks: checked before anything
            // is written; the port quota may lower the count.
            let plan = super::networking::plan(
                tx,
                &req.networks,
                &req.security_groups,
                &project,
                is_admin,
            )?;
            let count =
                super::networking::fit_port_quota(tx, &plan, &project, req.min_count, count)?;
            // Scheduling on this one host.
            let used = db::host_usage(tx, None)?;
            let group = match &req.group {
                Some(g) => store::get_server_group(tx, g)?,
                None => None,
            };
            // All or nothing, as Nova's scheduler: when the request's servers
            // do not all fit, every one of them fails with NoValidHost.
            let fit = super::scheduler::fit(
                used,
                super::scheduler::Demand {
                    vcpus: count * flavor.vcpus,
                    ram_mb: count * flavor.ram,
                    disk_gb: count * flavor.disk,
                },
                &facts,
                ratios,
            );
            let anti_affinity_broken = group.as_ref().is_some_and(|g| {
                g.policy == "anti-affinity" && (!g.members.is_empty() || count > 1)
            });
            let fits = fit.all() && !anti_affinity_broken;
            let mut created = Vec::new();
            let mut scheduled = Vec::new();
            for index in 0..count {
                let name = if count > 1 {
                    format!("{}-{}", req.name, index + 1)
                } else {
                    req.name.clone()
                };
                let id = uuid::Uuid::new_v4().to_string();
                let mut server = Server {
                    id: id.clone(),
                    name: name.clone(),
                    project_id: project.clone(),
                    user_id: user_id.clone(),
                    image_id: req.image_id.clone(),
                    flavor: flavor_copy.clone(),
                    old_flavor: None,
                    key_name: req.key_name.clone(),
                    key_data: key_data.clone(),
                    user_data: req.user_data.clone(),
                    description: req.description.clone(),
                    hostname: req
                        .hostname
                        .clone()
                        .unwrap_or_else(|| sanitize_hostname(&name, &id)),
                    metadata: req.metadata.clone(),
                    tags: req.tags.clone(),
                    vm_state: if fits { "building" } else { "error" }.into(),
                    task_state: if fits { Some("scheduling".into()) } else { None },
                    power_state: NOSTATE,
                    locked: false,
                    locked_by: None,
                    locked_reason: None,
                    fault: (!fits).then(|| {
                        json!({
                            "code": 500,
                            "created": iso_time(now),
                            "message": "No valid host was found. There are not enough hosts available.",
                            "details": format!(
                                "{}{}",
                                fit.describe(&host, &facts, ratios),
                                if anti_affinity_broken { ", anti-affinity group already has a member on the only host" } else { "" }
                            ),
                        })
                    }),
                    config_drive: req.config_drive || force_config_drive,
                    availability_zone: req.availability_zone.as_ref().map(|z| z.split(':').next().unwrap_or("").to_string()),
                    access_ipv4: req.access_ipv4.clone(),
                    access_ipv6: req.access_ipv6.clone(),
                    reservation_id: reservation_id.clone(),
                    launch_index: index,
                    server_group: req.group.clone(),
                    host: fits.then(|| host.clone()),
                    kernel_id: boot.kernel_id.clone(),
                    ramdisk_id: boot.ramdisk_id.clone(),
                    cmdline: boot.cmdline.clone(),
                    shutdown_timeout: boot.shutdown_timeout,
                    shelved_image_id: None,
                    migrations: Vec::new(),
                    vmm_pid: None,
                    ports: Vec::new(),
                    volumes: Vec::new(),
                    rescue: None,
                    created_at: now,
                    updated_at: now,
                    launched_at: None,
                    terminated_at: None,
                    deleted: false,
                };
                if fits {
                    server.ports = super::networking::make_ports(tx, &plan, &server, &host)?;
                }
                db::insert_server(tx, &server)?;
                if let Some(g) = &req.group {
                    store::add_server_group_member(tx, g, &id)?;
                }
                build::record_action(tx, &server, &rid, "create", now)?;
                if fits {
                    scheduled.push(id.clone());
                }
                created.push(server);
            }
            Ok((created, scheduled))
        })
        .await?;
    super::networking::notify(&s);
    for server in &servers {
        if scheduled.contains(&server.id) {
            build::spawn_build(s.clone(), server.id.clone(), request_id.0.clone());
        } else {
            build::finish_action_event(
                &s,
                &server.id,
                &request_id.0,
                "compute__schedule_instances",
                false,
            )
            .await;
        }
    }
    if req.return_reservation_id {
        let reservation = servers
            .first()
            .map(|sv| sv.reservation_id.clone())
            .unwrap_or_default();
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"reservation_id": reservation}),
        ));
    }
    let Some(first) = servers.first() else {
        return Err(ComputeError::Internal("no server was created".into()));
    };
    let body = json!({
        "id": first.id,
        "links": s.links("servers", &first.id),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": sg_names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "adminPass": admin_pass,
    });
    let mut response = json_response(StatusCode::ACCEPTED, &json!({"server": body}));
    if let Ok(location) = HeaderValue::from_str(&format!("{}/servers/{}", s.v21_url(), first.id)) {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

// ---------------------------------------------------------------- list

// List and show are in server_list.rs.

// ------------------------------------------------------------ update / delete

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let mut body = parse_body(&body)?;
    let changes = take_object(&mut body, "server")?;
    let mut allowed = vec!["name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"];
    if mv.at_least(19) {
        allowed.push("description");
    }
    if mv.at_least(90) {
        allowed.push("hostname");
    }
    no_additional(&changes, &allowed)?;
    let name = match changes.get("name") {
        Some(v) => Some(check_name(Some(v))?),
        None => None,
    };
    let description = if changes.contains_key("description") {
        Some(opt_str(&changes, "description", 255)?)
    } else {
        None
    };
    let v4 = opt_str(&changes, "accessIPv4", 64)?;
    if let Some(ip) = &v4
        && !ip.is_empty()
        && ip.parse::<std::net::Ipv4Addr>().is_err()
    {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute accessIPv4. Value: {ip}. '{ip}' is not a 'ipv4'"
        )));
    }
    let v6 = opt_str(&changes, "accessIPv6", 64)?;
    if let Some(ip) = &v6
        && !ip.is_empty()
        && ip.parse::<std::net::Ipv6Addr>().is_err()
    {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute accessIPv6. Value: {ip}. '{ip}' is not a 'ipv6'"
        )));
    }
    let hostname = check_hostname(mv, &changes)?;
    load_authorized(&s, &ctx, &id, "os_compute_api:servers:update").await?;
    let admin = super::is_admin_context(&s, &ctx);
    let ctx2 = ctx.clone();
    let server = s
        .write(move |tx| {
            let mut server = load_tx(tx, admin, &ctx2, &id)?;
            check_unlocked(admin, &server)?;
            if let Some(name) = name {
                server.name = name;
            }
            if let Some(d) = description {
                server.description = d;
            }
            if let Some(ip) = v4 {
                server.access_ipv4 = ip;
            }
            if let Some(ip) = v6 {
                server.access_ipv6 = ip
                    .parse::<std::net::Ipv6Addr>()
                    .map(|a| a.to_string())
                    .unwrap_or(ip);
            }
            if let Some(h) = hostname {
                server.hostname = h;
            }
            server.updated_at = now_unix();
            db::update_server(tx, &server)?;
            Ok(server)
        })
        .await?;
    let ports = super::networking::port_facts_of(&s, &server).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server": view(&s, &server, mv, &ctx, false, Some(&ports))}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
) -> ComputeResult<Response> {
    load_authorized(&s, &ctx, &id, "os_compute_api:servers:delete").await?;
    build::start_delete(&s, &ctx, &id, &request_id.0).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_sanitised() {
        assert_eq!(sanitize_hostname("My Server_1", "u"), "my-server-1");
        assert_eq!(sanitize_hostname("***", "u"), "Server-u");
        assert_eq!(sanitize_hostname("..a.b..", "u"), "a-b");
        assert_eq!(sanitize_hostname("café\n;rm -rf /", "u"), "cafrm--rf");
        assert_eq!(sanitize_hostname("名前", "u"), "Server-u");
        // Cut to 63 characters before anything is dropped, as Nova does.
        let long = format!("{}x", "*".repeat(63));
        assert_eq!(sanitize_hostname(&long, "u"), "Server-u");
        assert_eq!(sanitize_hostname(&"a".repeat(100), "u").len(), 63);
    }

    #[test]
    fn hostnames_follow_novas_schemas() {
        let body = |h: Value| -> Map<String, Value> {
            let mut m = Map::new();
            m.insert("hostname".into(), h);
            m
        };
        let ok = |mv: u16, h: &str| check_hostname(Mv(mv), &body(json!(h))).is_ok();
        assert!(ok(90, "web-1"));
        assert!(ok(90, "a1"));
        assert!(!ok(90, "a"));
        assert!(!ok(90, "-web"));
        assert!(!ok(90, "web-"));
        assert!(!ok(90, "web.example.org"));
        assert!(!ok(90, "web_1"));
        assert!(!ok(90, "web 1"));
        assert!(!ok(90, "web\n1"));
        assert!(!ok(90, &"a".repeat(64)));
        assert!(ok(94, "web.example.org"));
        assert!(ok(94, "a"));
        assert!(!ok(94, "web;reboot"));
        assert!(!ok(94, &"a".repeat(256)));
        assert!(check_hostname(Mv(90), &body(Value::Null)).is_err());
        assert!(check_hostname(Mv(90), &body(json!(5))).is_err());
        let Err(ComputeError::BadRequest(message)) = check_hostname(Mv(92), &body(json!("a_b")))
        else {
            panic!("a_b accepted");
        };
        assert_eq!(
            message,
            "Invalid input for field/attribute hostname. Value: a_b. 'a_b' does not match '^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$'"
        );
    }
}
