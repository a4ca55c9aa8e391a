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
use serde_json::{Value, json};

use super::access::{check_unlocked, load_authorized, load_tx};
use super::build;
use super::server_views::view;
// The validators stay reachable as `servers::X` for the files that import them from here.
#[cfg(test)]
use super::validate::sanitize_hostname;
pub(super) use super::validate::{MAX_TAGS, bool_like, check_metadata, check_tag, last_segment};
use super::validate::{check_hostname, check_name, opt_str};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, empty, next_link, no_additional, nova_time,
    paginate, parse_body, query_map, take_object,
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
    let mut parsed = Vec::new();
    for event in &events {
        let name = event.get("name").and_then(Value::as_str).unwrap_or("");
        if !NAMES.contains(&name) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute name. Value: {name}. '{name}' is not one of {NAMES:?}"
            )));
        }
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_string);
        parsed.push(ServerEvent {
            name: name.to_string(),
            server_uuid: text("server_uuid").unwrap_or_default(),
            tag: text("tag"),
            status: text("status").unwrap_or_else(|| "completed".into()),
        });
    }
    let known = handle_events(&s, parsed, &rid.0).await?;
    let mut out = Vec::new();
    let mut found = 0;
    for (event, known) in events.into_iter().zip(known) {
        let mut reply = event.clone();
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
    use serde_json::Map;

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
