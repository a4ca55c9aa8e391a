//! Servers: update and delete, os-interface attach/detach and
//! os-volume_attachments routes, migrations and external events. Create is
//! `create` (field validators in `validate`), the read-only views have their
//! own files (`server_list`, `server_metadata`, `server_subresources`,
//! `instance_actions`), actions and the state machine live in `lifecycle`,
//! the VMM side in `virt`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::access::{check_unlocked, load_authorized, load_tx};
use super::build;
use super::request::{self, DiskConfig, present};
use super::server_views::view;
#[cfg(test)]
use super::validate::sanitize_hostname;
// The validators stay reachable as `servers::X` for the files that import them from here.
pub(super) use super::validate::{MAX_TAGS, bool_like, check_tag, last_segment};
use super::validate::{checked_hostname, checked_ipv4, checked_ipv6, checked_len, checked_name};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, empty, next_link, nova_time, paginate, query_map,
};
use crate::db::now_unix;
use crate::db::servers::{self as db, Server};
use crate::http::{RequestId, json_response};
use crate::identity::Auth;
use crate::server_events::{ServerEvent, VIF_DELETED, VOLUME_EXTENDED};

type S = Arc<ComputeState>;

/// Server create, update and delete, os-interface attach/detach and
/// os-volume_attachments, migrations and external events. The read-only
/// views (list, show, ips, metadata, tags, instance actions...) have their
/// own routes in `server_list`, `server_metadata`, `server_subresources`
/// and `instance_actions`, which import from this module.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/servers", post(super::create::create))
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

/// `POST /os-server-external-events`'s body (Nova's
/// `server_external_events.create`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsBody {
    events: Vec<EventArg>,
}

/// One event as given.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EventArg {
    server_uuid: String,
    name: EventName,
    /// Kept out of the reply's copy: [`EventReply`] says the outcome.
    #[serde(default, deserialize_with = "present", skip_serializing)]
    status: Option<EventStatus>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    tag: Option<String>,
}

/// The reply for one event: the event, its status and code.
#[derive(Debug, Serialize)]
struct EventReply {
    #[serde(flatten)]
    event: EventArg,
    status: EventStatus,
    code: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum EventStatus {
    Failed,
    Completed,
    InProgress,
}

impl EventStatus {
    fn as_str(self) -> &'static str {
        match self {
            EventStatus::Failed => "failed",
            EventStatus::Completed => "completed",
            EventStatus::InProgress => "in-progress",
        }
    }
}

/// The events Nova knows (`external_event_obj.EVENT_NAMES`).
const EVENT_NAMES: &[&str] = &[
    "network-changed",
    "network-vif-plugged",
    "network-vif-unplugged",
    "network-vif-deleted",
    "volume-extended",
    "power-update",
    "accelerator-request-bound",
    "volume-reimaged",
];

/// An event name of [`EVENT_NAMES`].
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct EventName(String);

impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.as_str() {
            Some(name) if EVENT_NAMES.contains(&name) => Ok(EventName(name.to_string())),
            _ => {
                let name = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                Err(serde::de::Error::custom(format!(
                    "{name}. '{name}' is not one of {EVENT_NAMES:?}"
                )))
            }
        }
    }
}

/// `POST /os-server-external-events` (admin or service): Neutron and Cinder
/// tell Nova about ports and volumes. Recorded as handled; 207 when some
/// servers are unknown, 404 when none is known.
async fn external_events(
    State(s): State<S>,
    Auth(ctx): Auth,
    Extension(rid): Extension<RequestId>,
    body: Bytes,
) -> ComputeResult<Response> {
    super::authorize(
        &s,
        &ctx,
        "os_compute_api:os-server-external-events:create",
        &super::own_target(&ctx),
    )?;
    let EventsBody { events } = request::body(&body)?;
    if events.is_empty() {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute events. Value: []. [] is too short".into(),
        ));
    }
    let parsed = events
        .iter()
        .map(|e| ServerEvent {
            name: e.name.0.clone(),
            server_uuid: e.server_uuid.clone(),
            tag: e.tag.clone(),
            status: e.status.unwrap_or(EventStatus::Completed).as_str().into(),
        })
        .collect();
    let known = handle_events(&s, parsed, &rid.0).await?;
    let out: Vec<EventReply> = events
        .into_iter()
        .zip(known)
        .map(|(event, known)| EventReply {
            status: if known {
                event.status.unwrap_or(EventStatus::Completed)
            } else {
                EventStatus::Failed
            },
            code: if known { 200 } else { 404 },
            event,
        })
        .collect();
    let found = out.iter().filter(|r| r.code == 200).count();
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

/// Handles server external events, from `os-server-external-events` and
/// from the network and volume services in process (`server_events`)
/// alike: an event for a server that exists on this host goes to whatever
/// waits for it (a build waiting for `network-vif-plugged`;
/// `instance_events`) and is dropped otherwise, as Nova's compute manager
/// drops events nobody waits for; `volume-extended` then resizes the VM's
/// disk (`volume_events`) and `network-vif-deleted` takes the deleted
/// port's NIC out of the server (`interfaces::port_deleted`), after the
/// answer, as in Nova. Like Nova, no
/// instance action is recorded for network events (Nova records one only
/// for `volume-extended` and `power-update`). Returns, per event, whether
/// its server is known.
pub(super) async fn handle_events(
    s: &S,
    events: Vec<ServerEvent>,
    request_id: &str,
) -> ComputeResult<Vec<bool>> {
    let known = dispatch_events(s, &events).await?;
    for (event, known) in events.into_iter().zip(&known) {
        if *known && event.name == VOLUME_EXTENDED {
            let (s, rid) = (s.clone(), request_id.to_string());
            tokio::spawn(async move { super::volume_events::handle(&s, &event, &rid).await });
        } else if *known
            && event.name == VIF_DELETED
            && let Some(port) = event.tag.clone()
        {
            let s = s.clone();
            tokio::spawn(async move {
                super::interfaces::port_deleted(&s, &event.server_uuid, &port).await
            });
        }
    }
    Ok(known)
}

/// Hands each event for a server on this host to whatever waits for it;
/// returns, per event, whether its server is known.
async fn dispatch_events(s: &S, events: &[ServerEvent]) -> ComputeResult<Vec<bool>> {
    let ids: Vec<String> = events.iter().map(|e| e.server_uuid.clone()).collect();
    let hosted = s
        .read(move |conn| {
            let mut hosted = Vec::new();
            for id in ids {
                let server = db::get_server(conn, &id)?;
                hosted.push(server.is_some_and(|sv| sv.host.is_some() && !sv.deleted));
            }
            Ok(hosted)
        })
        .await?;
    for (event, known) in events.iter().zip(&hosted) {
        let waited = *known && s.instance_events.deliver(event);
        tracing::debug!(name = %event.name, server = %event.server_uuid, tag = ?event.tag,
            status = %event.status, known, waited, "server external event");
    }
    Ok(hosted)
}

/// Receives a service's in-process events (`server_events`) for as long
/// as the compute service exists.
pub(super) async fn receive_events(
    s: std::sync::Weak<ComputeState>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<ServerEvent>>,
) {
    while let Some(events) = rx.recv().await {
        let Some(s) = s.upgrade() else { return };
        let rid = format!("req-{}", uuid::Uuid::new_v4());
        if let Err(e) = handle_events(&s, events, &rid).await {
            tracing::warn!(error = %e, "cannot handle in-process server events");
        }
    }
}

// ------------------------------------------------------------------ states

// Nova's status and the server views are in server_views.rs.

// ---------------------------------------------------------------- list

// List and show are in server_list.rs.

// ------------------------------------------------------------ update / delete

/// `PUT /servers/{id}`'s body (Nova's `servers.update`, `description` from
/// 2.19, `hostname` from 2.90).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    server: UpdateArg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateArg {
    #[serde(default, deserialize_with = "present")]
    name: Option<String>,
    /// Present (`Some`), possibly `null` (`Some(None)`, no description).
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    /// `null` as absent.
    #[serde(rename = "accessIPv4", default)]
    access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6", default)]
    access_ipv6: Option<String>,
    /// Accepted and ignored, as in resize.
    #[serde(rename = "OS-DCF:diskConfig", default)]
    _disk_config: Option<DiskConfig>,
    #[serde(default, deserialize_with = "present")]
    hostname: Option<String>,
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let UpdateBody { server: changes } = request::body(&body)?;
    if changes.description.is_some() && !mv.at_least(19) {
        return Err(request::unexpected("server", "description"));
    }
    if changes.hostname.is_some() && !mv.at_least(90) {
        return Err(request::unexpected("server", "hostname"));
    }
    let name = changes.name.map(checked_name).transpose()?;
    let description = match changes.description {
        Some(d) => Some(checked_len("description", d, 255)?),
        None => None,
    };
    let v4 = checked_len("accessIPv4", changes.access_ipv4, 64)?
        .map(checked_ipv4)
        .transpose()?;
    let v6 = checked_len("accessIPv6", changes.access_ipv6, 64)?;
    if let Some(ip) = &v6 {
        checked_ipv6(ip.clone())?;
    }
    let hostname = changes
        .hostname
        .map(|h| checked_hostname(mv, h))
        .transpose()?;
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
    fn update_bodies_follow_novas_schema() {
        let read = |mv: u16, v: Value| -> ComputeResult<UpdateArg> {
            let UpdateBody { server } = request::body(v.to_string().as_bytes())?;
            if server.description.is_some() && !Mv(mv).at_least(19) {
                return Err(request::unexpected("server", "description"));
            }
            Ok(server)
        };
        let ok = read(
            19,
            json!({"server": {"name": "n", "description": null, "accessIPv4": null,
                   "OS-DCF:diskConfig": "AUTO"}}),
        )
        .expect("accepted");
        assert_eq!(ok.name.as_deref(), Some("n"));
        assert_eq!(ok.description, Some(None));
        assert_eq!(ok.access_ipv4, None);
        assert_eq!(
            request::refused(read(18, json!({"server": {"description": "d"}}))),
            "Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)"
        );
        assert_eq!(
            request::refused(read(90, json!({"server": {"flavorRef": "1"}}))),
            "Invalid input for field/attribute server. Additional properties are not allowed ('flavorRef' was unexpected)"
        );
        assert_eq!(
            request::refused(read(1, json!({"server": {"name": 5}}))),
            "Invalid input for field/attribute name. Value is not a string."
        );
        assert!(read(1, json!({"server": {"OS-DCF:diskConfig": "auto"}})).is_err());
        assert!(read(1, json!({"server": {"hostname": null}})).is_err());
        assert!(read(1, json!({"name": "n"})).is_err());
        assert_eq!(
            request::refused(checked_name(" n".into())),
            "Invalid input for field/attribute name. Value:  n. ' n' does not match '^(?! )[\\S ]*(?<! )$'"
        );
        assert!(checked_name("  ".into()).is_err());
        assert!(checked_ipv4("10.0.0.300".into()).is_err());
        assert_eq!(
            checked_ipv6("2001:DB8::1".into()).ok().as_deref(),
            Some("2001:db8::1")
        );
        assert!(checked_len("description", Some("x".repeat(256)), 255).is_err());
    }

    #[test]
    fn external_event_bodies_follow_novas_schema() {
        let read = |v: Value| request::body::<EventsBody>(v.to_string().as_bytes());
        let ok = read(json!({"events": [
            {"name": "network-vif-plugged", "server_uuid": "s", "tag": "p"},
            {"name": "volume-extended", "server_uuid": "s", "status": "in-progress"}
        ]}))
        .expect("accepted");
        assert_eq!(ok.events[1].status, Some(EventStatus::InProgress));
        let reply = EventReply {
            status: EventStatus::Completed,
            code: 200,
            event: ok.events.into_iter().next().expect("one event"),
        };
        assert_eq!(
            serde_json::to_value(&reply).ok(),
            Some(
                json!({"name": "network-vif-plugged", "server_uuid": "s", "tag": "p",
                        "status": "completed", "code": 200})
            )
        );
        let message =
            request::refused(read(json!({"events": [{"name": "x", "server_uuid": "s"}]})));
        assert!(
            message.starts_with(
                "Invalid input for field/attribute name. Value: x. 'x' is not one of [\"network-changed\""
            ),
            "{message}"
        );
        assert!(read(json!({"events": [{"name": "power-update"}]})).is_err());
        assert!(
            read(json!({"events": [{"name": "power-update", "server_uuid": "s", "x": 1}]}))
                .is_err()
        );
        assert!(read(json!({"events": {}})).is_err());
    }

    #[test]
    fn hostnames_follow_novas_schemas() {
        let ok = |mv: u16, h: &str| checked_hostname(Mv(mv), h.to_string()).is_ok();
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
        let Err(ComputeError::BadRequest(message)) = checked_hostname(Mv(92), "a_b".into()) else {
            panic!("a_b accepted");
        };
        assert_eq!(
            message,
            "Invalid input for field/attribute hostname. Value: a_b. 'a_b' does not match '^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$'"
        );
    }
}
