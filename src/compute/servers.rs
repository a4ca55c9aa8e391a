//! Servers: list and `/detail` with Nova's filters and pagination,
//! show, update, delete; metadata, tags, ips, os-interface, instance actions,
//! server password and security groups (the field validators are `validate`).
//! Create is `create`, actions and the state machine `lifecycle`, the VMM
//! side `virt`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha224};

// `check_metadata` stays reachable as `servers::check_metadata` (lifecycle uses it).
use super::access::{check_unlocked, load, load_authorized, load_tx, server_target, visible};
use super::build;
use super::iso_time;
use super::networking::{Addresses, PortFacts};
use super::quotas;
pub use super::validate::check_metadata;
#[cfg(test)]
use super::validate::sanitize_hostname;
use super::validate::{
    MAX_TAGS, bool_like, check_hostname, check_name, check_tag, check_tags, last_segment, opt_str,
};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, empty, next_link, no_additional, nova_time,
    paginate, parse_body, project_of, query_map, take_object,
};
use crate::db::now_unix;
use crate::db::servers::{self as db, FlavorCopy, Server};
use crate::http::{RequestId, json_response};
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/servers", get(list).post(super::create::create))
        .route("/v2.1/servers/detail", get(list_detail))
        .route("/v2.1/servers/{id}", get(show).put(update).delete(delete))
        .route(
            "/v2.1/servers/{id}/metadata",
            get(metadata_list)
                .post(metadata_merge)
                .put(metadata_replace),
        )
        .route(
            "/v2.1/servers/{id}/metadata/{key}",
            get(metadata_show).put(metadata_set).delete(metadata_delete),
        )
        .route(
            "/v2.1/servers/{id}/tags",
            get(tags_list).put(tags_replace).delete(tags_clear),
        )
        .route(
            "/v2.1/servers/{id}/tags/{tag}",
            get(tag_check).put(tag_add).delete(tag_delete),
        )
        .route("/v2.1/servers/{id}/ips", get(ips))
        .route("/v2.1/servers/{id}/ips/{network}", get(ips_network))
        .route(
            "/v2.1/servers/{id}/os-interface",
            get(interfaces).post(super::interfaces::attach_handler),
        )
        .route(
            "/v2.1/servers/{id}/os-interface/{port}",
            get(interface_show).delete(super::interfaces::detach_handler),
        )
        .route("/v2.1/servers/{id}/os-instance-actions", get(actions_list))
        .route(
            "/v2.1/servers/{id}/os-instance-actions/{request_id}",
            get(action_show),
        )
        .route(
            "/v2.1/servers/{id}/os-server-password",
            get(password_show).delete(password_clear),
        )
        .route(
            "/v2.1/servers/{id}/os-security-groups",
            get(security_groups),
        )
        .route(
            "/v2.1/servers/{id}/os-volume_attachments",
            get(super::volumes::list_handler).post(super::volumes::attach_handler),
        )
        .route(
            "/v2.1/servers/{id}/os-volume_attachments/{volume_id}",
            get(super::volumes::show_handler).delete(super::volumes::detach_handler),
        )
        .route("/v2.1/servers/{id}/diagnostics", get(diagnostics))
        .route("/v2.1/servers/{id}/topology", get(topology))
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

use super::states::RUNNING;

/// Nova's status, from vm_state and task_state.
pub fn status_of(vm_state: &str, task_state: Option<&str>) -> &'static str {
    match (vm_state, task_state) {
        ("building", _) => "BUILD",
        ("active", Some("rebooting" | "reboot_pending" | "reboot_started")) => "REBOOT",
        ("active", Some("rebooting_hard" | "reboot_pending_hard" | "reboot_started_hard")) => {
            "HARD_REBOOT"
        }
        (
            "active" | "stopped" | "error",
            Some("rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning"),
        ) => "REBUILD",
        (
            "active" | "stopped",
            Some("resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish"),
        ) => "RESIZE",
        ("active", _) => "ACTIVE",
        ("stopped", _) => "SHUTOFF",
        ("paused", _) => "PAUSED",
        ("suspended", _) => "SUSPENDED",
        ("resized", Some("resize_reverting")) => "REVERT_RESIZE",
        ("resized", _) => "VERIFY_RESIZE",
        ("shelved", _) => "SHELVED",
        ("shelved_offloaded", _) => "SHELVED_OFFLOADED",
        ("error", _) => "ERROR",
        ("deleted", _) => "DELETED",
        ("soft-delete", _) => "SOFT_DELETED",
        ("rescued", _) => "RESCUE",
        _ => "UNKNOWN",
    }
}

/// The vm_states a `status` filter matches (Nova's reverse mapping).
fn vm_states_for_status(status: &str) -> Option<&'static [&'static str]> {
    Some(match status.to_ascii_uppercase().as_str() {
        "BUILD" => &["building"],
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "PASSWORD" | "MIGRATING" => &["active"],
        "SHUTOFF" => &["stopped"],
        "PAUSED" => &["paused"],
        "SUSPENDED" => &["suspended"],
        "VERIFY_RESIZE" | "REVERT_RESIZE" => &["resized"],
        "RESIZE" => &["active", "stopped"],
        "REBUILD" => &["active", "stopped", "error"],
        "SHELVED" => &["shelved"],
        "SHELVED_OFFLOADED" => &["shelved_offloaded"],
        "ERROR" => &["error"],
        "DELETED" => &["deleted"],
        "SOFT_DELETED" => &["soft-delete"],
        "RESCUE" => &["rescued"],
        _ => return None,
    })
}

// ------------------------------------------------------------------- views

fn host_id(server: &Server) -> String {
    thread_local! {
        /// hostId is a hash of project and host; a listing repeats the same few.
        static CACHE: std::cell::RefCell<HashMap<String, String>> = std::cell::RefCell::new(HashMap::new());
    }
    match &server.host {
        Some(host) => {
            let key = format!("{}{host}", server.project_id);
            CACHE.with(|cache| {
                let mut cache = cache.borrow_mut();
                if cache.len() > 4096 {
                    cache.clear();
                }
                cache
                    .entry(key)
                    .or_insert_with_key(|k| hex::encode(Sha224::digest(k.as_bytes())))
                    .clone()
            })
        }
        None => String::new(),
    }
}

/// `instance-0000001a`-style name from the id (stable, unique enough).
fn instance_name(server: &Server) -> String {
    format!("instance-{}", &server.id.replace('-', "")[..8])
}

fn flavor_view(s: &ComputeState, f: &FlavorCopy, mv: Mv) -> Value {
    if mv.at_least(47) {
        json!({
            "original_name": f.name,
            "vcpus": f.vcpus,
            "ram": f.ram,
            "disk": f.disk,
            "ephemeral": f.ephemeral,
            "swap": f.swap,
            "extra_specs": f.extra_specs,
        })
    } else {
        json!({
            "id": f.id,
            "links": [{"rel": "bookmark", "href": format!("{}/compute/flavors/{}", s.public_url, f.id)}],
        })
    }
}

/// A server as Nova shows it. `full` is the show/detail view; without it
/// the view of update and rebuild below 2.75 (no extended attributes).
pub fn view(
    s: &ComputeState,
    server: &Server,
    mv: Mv,
    ctx: &AuthContext,
    full: bool,
    ports: Option<&PortFacts>,
) -> Value {
    let shown = ServerView {
        s,
        server,
        mv,
        rights: ViewRights::of(s, ctx, &server.project_id),
        full,
        in_list: false,
        ports,
    };
    serde_json::to_value(&shown).unwrap_or(Value::Null)
}

/// The server view, serialised straight into the response: a 1,000-server
/// listing builds no intermediate `Value` tree.
/// What of a server the caller may see beyond the owner's view, as Nova's
/// rules decide.
#[derive(Debug, Clone, Copy)]
pub struct ViewRights {
    /// An admin context: fault details.
    pub admin: bool,
    /// `os_compute_api:os-extended-server-attributes`: OS-EXT-SRV-ATTR:*.
    pub extended: bool,
    /// `os_compute_api:servers:show:host_status` (2.16).
    pub host_status: bool,
}

impl ViewRights {
    /// The rights of the caller on servers of `project_id`.
    pub fn of(s: &ComputeState, ctx: &AuthContext, project_id: &str) -> ViewRights {
        let target = Target::project(project_id);
        ViewRights {
            admin: super::is_admin_context(s, ctx),
            extended: super::allows(
                s,
                ctx,
                "os_compute_api:os-extended-server-attributes",
                &target,
            ),
            host_status: super::allows(s, ctx, "os_compute_api:servers:show:host_status", &target),
        }
    }
}

pub struct ServerView<'a> {
    pub s: &'a ComputeState,
    pub server: &'a Server,
    pub mv: Mv,
    pub rights: ViewRights,
    pub full: bool,
    /// `/servers/detail` leaves out what only show, update and rebuild carry.
    pub in_list: bool,
    /// The server's addresses and security groups, read from its ports
    /// (None: no ports).
    pub ports: Option<&'a PortFacts>,
}

/// One entry of a server's `security_groups`.
#[derive(serde::Serialize)]
struct GroupName<'a> {
    name: &'a str,
}

impl serde::Serialize for ServerView<'_> {
    fn serialize<Z: serde::Serializer>(&self, z: Z) -> Result<Z::Ok, Z::Error> {
        use serde::ser::SerializeMap;
        let mut m = z.serialize_map(None)?;
        let (s, server, mv, rights) = (self.s, self.server, self.mv, self.rights);
        let full = self.full || mv.at_least(75);
        self.entries(&mut m, s, server, mv, rights, full)?;
        m.end()
    }
}

impl ServerView<'_> {
    #[allow(clippy::too_many_arguments)]
    fn entries<M: serde::ser::SerializeMap>(
        &self,
        m: &mut M,
        s: &ComputeState,
        server: &Server,
        mv: Mv,
        rights: ViewRights,
        full: bool,
    ) -> Result<(), M::Error> {
        let status = status_of(&server.vm_state, server.task_state.as_deref());
        m.serialize_entry("id", &server.id)?;
        m.serialize_entry("name", &server.name)?;
        m.serialize_entry("status", &status)?;
        m.serialize_entry("tenant_id", &server.project_id)?;
        m.serialize_entry("user_id", &server.user_id)?;
        m.serialize_entry("metadata", &server.metadata)?;
        m.serialize_entry("hostId", &host_id(server))?;
        m.serialize_entry("image", &if server.image_id.is_empty() {
            json!("")
        } else {
            json!({
                "id": server.image_id,
                "links": [{"rel": "bookmark", "href": format!("{}/compute/images/{}", s.public_url, server.image_id)}],
            })
        },)?;
        m.serialize_entry("flavor", &flavor_view(s, &server.flavor, mv))?;
        m.serialize_entry("created", &iso_time(server.created_at))?;
        m.serialize_entry("updated", &iso_time(server.updated_at))?;
        match self.ports {
            Some(p) => m.serialize_entry("addresses", &p.addresses)?,
            None => m.serialize_entry("addresses", &Addresses::new())?,
        }
        // Nova's show and detail (and update and rebuild from 2.75).
        if let Some(p) = self.ports
            && full
            && !p.security_groups.is_empty()
        {
            let groups: Vec<GroupName> = p
                .security_groups
                .iter()
                .map(|name| GroupName { name })
                .collect();
            m.serialize_entry("security_groups", &groups)?;
        }
        m.serialize_entry("accessIPv4", &server.access_ipv4)?;
        m.serialize_entry("accessIPv6", &server.access_ipv6)?;
        m.serialize_entry("links", &s.links("servers", &server.id))?;
        m.serialize_entry("OS-DCF:diskConfig", &"MANUAL")?;
        if [
            "ACTIVE",
            "BUILD",
            "REBUILD",
            "RESIZE",
            "VERIFY_RESIZE",
            "MIGRATING",
        ]
        .contains(&status)
        {
            let progress = if status == "BUILD" { 0 } else { 100 };
            m.serialize_entry("progress", &progress)?;
        }
        if let Some(fault) = &server.fault
            && (status == "ERROR" || status == "DELETED")
        {
            let mut f = fault.clone();
            if !rights.admin
                && let Some(obj) = f.as_object_mut()
            {
                obj.remove("details");
            }
            m.serialize_entry("fault", &f)?;
        }
        if full {
            m.serialize_entry("key_name", &server.key_name)?;
            m.serialize_entry(
                "OS-SRV-USG:launched_at",
                &json!(server.launched_at.map(nova_time)),
            )?;
            m.serialize_entry(
                "OS-SRV-USG:terminated_at",
                &json!(server.terminated_at.map(nova_time)),
            )?;
            m.serialize_entry(
                "OS-EXT-AZ:availability_zone",
                &json!(server.availability_zone.clone().unwrap_or_else(|| {
                    if server.host.is_some() {
                        super::hosts::ZONE.to_string()
                    } else {
                        String::new()
                    }
                })),
            )?;
            m.serialize_entry("OS-EXT-STS:task_state", &server.task_state)?;
            m.serialize_entry("OS-EXT-STS:vm_state", &server.vm_state)?;
            m.serialize_entry("OS-EXT-STS:power_state", &server.power_state)?;
            // Nova: each attached volume's id, and from 2.3 its delete_on_termination.
            let volumes: Vec<Value> = server
                .volumes
                .iter()
                .map(|v| {
                    if mv.at_least(3) {
                        json!({"id": v.volume_id, "delete_on_termination": v.delete_on_termination})
                    } else {
                        json!({"id": v.volume_id})
                    }
                })
                .collect();
            m.serialize_entry("os-extended-volumes:volumes_attached", &json!(volumes))?;
            m.serialize_entry(
                "config_drive",
                &json!(if server.config_drive { "True" } else { "" }),
            )?;
            if rights.extended {
                m.serialize_entry("OS-EXT-SRV-ATTR:host", &server.host)?;
                m.serialize_entry(
                    "OS-EXT-SRV-ATTR:instance_name",
                    &json!(instance_name(server)),
                )?;
                m.serialize_entry("OS-EXT-SRV-ATTR:hypervisor_hostname", &json!(server.host))?;
                if mv.at_least(3) {
                    m.serialize_entry(
                        "OS-EXT-SRV-ATTR:reservation_id",
                        &json!(server.reservation_id),
                    )?;
                    m.serialize_entry("OS-EXT-SRV-ATTR:launch_index", &json!(server.launch_index))?;
                    m.serialize_entry(
                        "OS-EXT-SRV-ATTR:kernel_id",
                        &json!(server.kernel_id.clone().unwrap_or_default()),
                    )?;
                    m.serialize_entry(
                        "OS-EXT-SRV-ATTR:ramdisk_id",
                        &json!(server.ramdisk_id.clone().unwrap_or_default()),
                    )?;
                    m.serialize_entry("OS-EXT-SRV-ATTR:root_device_name", &"/dev/vda")?;
                    m.serialize_entry("OS-EXT-SRV-ATTR:user_data", &server.user_data)?;
                }
            }
            if mv.at_least(3) && (rights.extended || mv.at_least(90)) {
                m.serialize_entry("OS-EXT-SRV-ATTR:hostname", &server.hostname)?;
            }
            if mv.at_least(16) && rights.host_status {
                let host_status = if server.host.is_some() { "UP" } else { "" };
                m.serialize_entry("host_status", &host_status)?;
            }
        }
        if mv.at_least(9) {
            m.serialize_entry("locked", &server.locked)?;
        }
        if mv.at_least(19) {
            m.serialize_entry("description", &server.description)?;
        }
        if mv.at_least(26) {
            m.serialize_entry("tags", &server.tags)?;
        }
        if mv.at_least(63) {
            m.serialize_entry("trusted_image_certificates", &Value::Null)?;
        }
        if mv.at_least(71) && full && !self.in_list {
            let groups: Vec<&String> = server.server_group.iter().collect();
            m.serialize_entry("server_groups", &groups)?;
        }
        if mv.at_least(73) {
            m.serialize_entry("locked_reason", &server.locked_reason)?;
        }
        if mv.at_least(96) {
            m.serialize_entry("pinned_availability_zone", &json!(server.availability_zone))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- list

const ADMIN_ONLY_FILTERS: &[&str] = &[
    "host",
    "node",
    "hostname",
    "uuid",
    "deleted",
    "project_id",
    "user_id",
    "launch_index",
    "kernel_id",
    "ramdisk_id",
    "reservation_id",
    "terminated_at",
    "power_state",
    "task_state",
    "vm_state",
    "launched_at",
];

/// Nova matches name filters as regular expressions (searching, not anchored).
fn regex_match(pattern: &str, text: &str) -> bool {
    match regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
    {
        Ok(re) => re.is_match(text),
        // Not a valid expression (or too big): match it as plain text.
        Err(_) => text.contains(pattern),
    }
}

fn parse_changes_since(text: &str) -> ComputeResult<i64> {
    let trimmed = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(trimmed) {
        return Ok(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(trimmed.trim_end_matches('Z'), fmt) {
            return Ok(t.and_utc().timestamp());
        }
    }
    Err(ComputeError::BadRequest(format!(
        "Invalid filter field: changes-since. Value: {text} is not a valid date-time"
    )))
}

async fn list_servers(
    s: S,
    ctx: Arc<AuthContext>,
    mv: Mv,
    q: Vec<(String, String)>,
    detail: bool,
) -> ComputeResult<Response> {
    let project = project_of(&ctx)?;
    let multi: HashMap<String, Vec<String>> = q.iter().fold(HashMap::new(), |mut m, (k, v)| {
        m.entry(k.clone()).or_default().push(v.clone());
        m
    });
    let q = query_map(q);
    let (rule, all_tenants_rule) = if detail {
        (
            "os_compute_api:servers:detail",
            "os_compute_api:servers:detail:get_all_tenants",
        )
    } else {
        (
            "os_compute_api:servers:index",
            "os_compute_api:servers:index:get_all_tenants",
        )
    };
    let own = super::owner_target(&project, &ctx.user_id);
    super::authorize(&s, &ctx, rule, &own)?;
    let admin = super::is_admin_context(&s, &ctx);
    let all_tenants = q
        .get("all_tenants")
        .is_some_and(|v| v.is_empty() || bool_like(&json!(v)).unwrap_or(true));
    if all_tenants {
        super::authorize(&s, &ctx, all_tenants_rule, &own)?;
    }
    let may_see_all = all_tenants || super::allows(&s, &ctx, all_tenants_rule, &own);
    let all_filters = super::allows(&s, &ctx, "os_compute_api:servers:allow_all_filters", &own);
    let tenant_filter = if may_see_all {
        q.get("tenant_id").or(q.get("project_id")).cloned()
    } else {
        None
    };
    let scope: Option<String> = if all_tenants || tenant_filter.is_some() {
        tenant_filter.clone()
    } else {
        Some(project.clone())
    };
    let include_deleted = q
        .get("deleted")
        .is_some_and(|v| bool_like(&json!(v)) == Some(true))
        && admin;
    let changes_since = match q.get("changes-since") {
        Some(t) => Some(parse_changes_since(t)?),
        None => None,
    };
    let changes_before = match q.get("changes-before") {
        Some(t) if mv.at_least(66) => Some(parse_changes_since(t)?),
        Some(_) => None,
        None => None,
    };
    if let (Some(a), Some(b)) = (changes_since, changes_before)
        && a > b
    {
        return Err(ComputeError::BadRequest(
            "The value of changes-since must be less than or equal to changes-before.".into(),
        ));
    }
    let scope_owned = scope.clone();
    let with_deleted = include_deleted || changes_since.is_some() || changes_before.is_some();
    let mut servers = s
        .read(move |conn| {
            Ok(db::list_servers(
                conn,
                scope_owned.as_deref(),
                with_deleted,
            )?)
        })
        .await?;
    // Filters.
    if let Some(status) = q.get("status") {
        match vm_states_for_status(status) {
            Some(states) => {
                let wanted = status.to_ascii_uppercase();
                servers.retain(|sv| {
                    states.contains(&sv.vm_state.as_str())
                        && (wanted == "ACTIVE"
                            || wanted == "RESIZE"
                            || wanted == "REBUILD"
                            || status_of(&sv.vm_state, sv.task_state.as_deref()) == wanted
                            || states.len() == 1)
                });
            }
            None if admin => servers.clear(),
            None => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid status value: {status}"
                )));
            }
        }
    }
    let filter_allowed = |key: &str| {
        all_filters
            || mv.at_least(83)
                && [
                    "availability_zone",
                    "config_drive",
                    "key_name",
                    "created_at",
                    "launched_at",
                    "terminated_at",
                    "power_state",
                    "task_state",
                    "vm_state",
                    "progress",
                    "user_id",
                ]
                .contains(&key)
    };
    for (key, value) in &q {
        match key.as_str() {
            "name" => servers.retain(|sv| regex_match(value, &sv.name)),
            "image" | "image_ref" => {
                let id = last_segment(value);
                servers.retain(|sv| sv.image_id == id)
            }
            "flavor" => {
                let id = last_segment(value);
                servers.retain(|sv| sv.flavor.id == id)
            }
            "ip" | "ip6" => servers.clear(),
            "locked" if mv.at_least(73) => {
                let want = bool_like(&json!(value)).ok_or_else(|| {
                    ComputeError::BadRequest(format!("Unrecognized value '{value}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"))
                })?;
                servers.retain(|sv| sv.locked == want)
            }
            "reservation_id" => servers.retain(|sv| &sv.reservation_id == value),
            "availability_zone" if filter_allowed(key) => servers.retain(|sv| {
                sv.availability_zone
                    .as_deref()
                    .unwrap_or(super::hosts::ZONE)
                    == value
            }),
            "host" | "node" if admin => {
                servers.retain(|sv| sv.host.as_deref() == Some(value.as_str()))
            }
            "hostname" if admin => servers.retain(|sv| regex_match(value, &sv.hostname)),
            "uuid" if admin => servers.retain(|sv| &sv.id == value),
            "user_id" if filter_allowed(key) => servers.retain(|sv| &sv.user_id == value),
            "key_name" if filter_allowed(key) => {
                servers.retain(|sv| sv.key_name.as_deref() == Some(value.as_str()))
            }
            "vm_state" if filter_allowed(key) => {
                let states = multi.get("vm_state").cloned().unwrap_or_default();
                servers.retain(|sv| states.contains(&sv.vm_state))
            }
            "task_state" if filter_allowed(key) => {
                let states = multi.get("task_state").cloned().unwrap_or_default();
                servers.retain(|sv| {
                    states
                        .iter()
                        .any(|t| sv.task_state.as_deref() == Some(t.as_str()))
                })
            }
            "power_state" if filter_allowed(key) => {
                let states = multi.get("power_state").cloned().unwrap_or_default();
                servers.retain(|sv| {
                    states
                        .iter()
                        .any(|p| p.parse::<i64>().ok() == Some(sv.power_state))
                })
            }
            "config_drive" if filter_allowed(key) => {
                let want = bool_like(&json!(value)).unwrap_or(false);
                servers.retain(|sv| sv.config_drive == want)
            }
            "tags" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| wanted.iter().all(|t| sv.tags.iter().any(|x| x == t)))
            }
            "tags-any" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| wanted.iter().any(|t| sv.tags.iter().any(|x| x == t)))
            }
            "not-tags" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| !wanted.iter().all(|t| sv.tags.iter().any(|x| x == t)))
            }
            "not-tags-any" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| !wanted.iter().any(|t| sv.tags.iter().any(|x| x == t)))
            }
            k if ADMIN_ONLY_FILTERS.contains(&k) && !admin => {
                // Nova ignores filters a non-admin may not use (before 2.83).
            }
            _ => {}
        }
    }
    if let Some(since) = changes_since {
        servers.retain(|sv| sv.updated_at >= since);
    }
    if let Some(before) = changes_before {
        servers.retain(|sv| sv.updated_at <= before);
    }
    // Sorting: created_at desc by default (Nova's default), then id.
    let sort_keys: Vec<String> = multi.get("sort_key").cloned().unwrap_or_default();
    let sort_dirs: Vec<String> = multi.get("sort_dir").cloned().unwrap_or_default();
    for key in &sort_keys {
        const SORTABLE: &[&str] = &[
            "access_ip_v4",
            "access_ip_v6",
            "auto_disk_config",
            "availability_zone",
            "config_drive",
            "created_at",
            "display_description",
            "display_name",
            "host",
            "hostname",
            "image_ref",
            "instance_type_id",
            "kernel_id",
            "key_name",
            "launch_index",
            "launched_at",
            "locked",
            "locked_by",
            "node",
            "power_state",
            "progress",
            "project_id",
            "ramdisk_id",
            "root_device_name",
            "task_state",
            "terminated_at",
            "updated_at",
            "user_id",
            "uuid",
            "vm_state",
        ];
        if !SORTABLE.contains(&key.as_str()) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for query parameters sort_key. Value: {key}. '{key}' is not one of the sortable keys"
            )));
        }
    }
    let key_of = |sv: &Server, key: &str| -> String {
        match key {
            "display_name" => sv.name.clone(),
            "created_at" => format!("{:020}", sv.created_at),
            "updated_at" => format!("{:020}", sv.updated_at),
            "uuid" => sv.id.clone(),
            "vm_state" => sv.vm_state.clone(),
            "task_state" => sv.task_state.clone().unwrap_or_default(),
            "power_state" => format!("{:05}", sv.power_state),
            "key_name" => sv.key_name.clone().unwrap_or_default(),
            "project_id" => sv.project_id.clone(),
            "user_id" => sv.user_id.clone(),
            "image_ref" => sv.image_id.clone(),
            "hostname" => sv.hostname.clone(),
            "host" | "node" => sv.host.clone().unwrap_or_default(),
            "launch_index" => format!("{:010}", sv.launch_index),
            "launched_at" => format!("{:020}", sv.launched_at.unwrap_or(0)),
            "locked" => sv.locked.to_string(),
            "display_description" => sv.description.clone().unwrap_or_default(),
            "access_ip_v4" => sv.access_ipv4.clone(),
            "access_ip_v6" => sv.access_ipv6.clone(),
            _ => String::new(),
        }
    };
    let mut keys: Vec<(String, bool)> = sort_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let desc = sort_dirs
                .get(i)
                .or(sort_dirs.first())
                .map(|d| d != "asc")
                .unwrap_or(true);
            (k.clone(), desc)
        })
        .collect();
    if keys.is_empty() {
        keys.push(("created_at".into(), true));
    }
    keys.push(("uuid".into(), keys.last().map(|k| k.1).unwrap_or(true)));
    // Keys computed once per server; descending keys compare reversed.
    let mut keyed: Vec<(Vec<(String, bool)>, Server)> = servers
        .into_iter()
        .map(|sv| {
            let k = keys
                .iter()
                .map(|(key, desc)| (key_of(&sv, key), *desc))
                .collect();
            (k, sv)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        for ((ka, desc), (kb, _)) in a.iter().zip(b.iter()) {
            let ord = ka.cmp(kb);
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
    let servers: Vec<Server> = keyed.into_iter().map(|(_, sv)| sv).collect();
    let (page, more) = paginate(servers, &q, |sv| sv.id.clone())?;
    let with_ports: Vec<Server> = if detail {
        page.iter()
            .filter(|sv| !sv.ports.is_empty())
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let addresses = if with_ports.is_empty() {
        HashMap::new()
    } else {
        s.read(move |conn| {
            let refs: Vec<&Server> = with_ports.iter().collect();
            super::networking::port_facts_many(conn, &refs)
        })
        .await?
    };
    let items: Vec<ServerItem> = page
        .iter()
        .map(|sv| {
            if detail {
                ServerItem::Detail(ServerView {
                    s: &s,
                    server: sv,
                    mv,
                    rights: ViewRights::of(&s, &ctx, &sv.project_id),
                    full: true,
                    in_list: true,
                    ports: addresses.get(&sv.id),
                })
            } else {
                ServerItem::Brief(
                    json!({"id": sv.id, "name": sv.name, "links": s.links("servers", &sv.id)}),
                )
            }
        })
        .collect();
    let links = match page.last() {
        Some(last) if more => {
            let path = if detail { "servers/detail" } else { "servers" };
            Some(next_link(&s, path, &q, &last.id))
        }
        _ => None,
    };
    let listing = ServerList {
        servers: items,
        servers_links: links,
    };
    match serde_json::to_vec(&listing) {
        Ok(bytes) => Ok(json_bytes_response(bytes)),
        Err(e) => Err(ComputeError::Internal(e.to_string())),
    }
}

/// One entry of a server listing.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum ServerItem<'a> {
    Detail(ServerView<'a>),
    Brief(Value),
}

#[derive(serde::Serialize)]
struct ServerList<'a> {
    servers: Vec<ServerItem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    servers_links: Option<Value>,
}

fn json_bytes_response(bytes: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(bytes));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_servers(s, ctx, mv, q, false).await
}

async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_servers(s, ctx, mv, q, true).await
}

// ------------------------------------------------------- show / update / delete

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:servers:show").await?;
    let ports = super::networking::port_facts_of(&s, &server).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server": view(&s, &server, mv, &ctx, true, Some(&ports))}),
    ))
}

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

// --------------------------------------------------------------- metadata

async fn metadata_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:server-metadata:index").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"metadata": server.metadata}),
    ))
}

/// Read-modify-write of a server's metadata, with the quota on items.
async fn write_metadata(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: String,
    rule: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> ComputeResult<()> + Send + 'static,
) -> ComputeResult<BTreeMap<String, String>> {
    load_authorized(s, ctx, &id, rule).await?;
    let admin = super::is_admin_context(s, ctx);
    let ctx = ctx.clone();
    s.write(move |tx| {
        let mut server = load_tx(tx, admin, &ctx, &id)?;
        check_unlocked(admin, &server)?;
        if ["building", "deleted"].contains(&server.vm_state.as_str())
            && server.task_state.as_deref() == Some("deleting")
        {
            return Err(ComputeError::Conflict(format!(
                "Cannot 'update metadata' instance {id} while it is in task_state deleting"
            )));
        }
        change(&mut server.metadata)?;
        quotas::enforce_limit(
            tx,
            &server.project_id,
            Some(&server.user_id),
            "metadata_items",
            0,
            server.metadata.len() as i64,
        )?;
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        Ok(server.metadata)
    })
    .await
}

async fn metadata_merge(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let mut body = parse_body(&body)?;
    let new = check_metadata(&body.remove("metadata").unwrap_or(Value::Null), "metadata")?;
    let meta = write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:create",
        move |m| {
            m.extend(new);
            Ok(())
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_replace(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let mut body = parse_body(&body)?;
    let new = check_metadata(&body.remove("metadata").unwrap_or(Value::Null), "metadata")?;
    let meta = write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:update_all",
        move |m| {
            *m = new;
            Ok(())
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:server-metadata:show").await?;
    match server.metadata.get(&key) {
        Some(v) => Ok(json_response(StatusCode::OK, &json!({"meta": {key: v}}))),
        None => Err(ComputeError::NotFound("Metadata item was not found".into())),
    }
}

async fn metadata_set(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> ComputeResult<Response> {
    let mut body = parse_body(&body)?;
    let meta = check_metadata(&body.remove("meta").unwrap_or(Value::Null), "meta")?;
    if meta.len() != 1 {
        return Err(ComputeError::BadRequest(
            "Request body contains too many items".into(),
        ));
    }
    if !meta.contains_key(&key) {
        return Err(ComputeError::BadRequest(
            "Request body and URI mismatch".into(),
        ));
    }
    let value = meta.get(&key).cloned().unwrap_or_default();
    let (k, v) = (key.clone(), value.clone());
    write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:update",
        move |m| {
            m.insert(k, v);
            Ok(())
        },
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"meta": {key: value}}),
    ))
}

async fn metadata_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:delete",
        move |m| {
            m.remove(&key)
                .map(|_| ())
                .ok_or_else(|| ComputeError::NotFound("Metadata item was not found".into()))
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// -------------------------------------------------------------------- tags

fn tags_allowed(mv: Mv) -> ComputeResult<()> {
    if mv.at_least(26) {
        Ok(())
    } else {
        Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ))
    }
}

async fn write_tags(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: String,
    rule: &str,
    change: impl FnOnce(&mut Vec<String>) -> ComputeResult<()> + Send + 'static,
) -> ComputeResult<Vec<String>> {
    load_authorized(s, ctx, &id, rule).await?;
    let admin = super::is_admin_context(s, ctx);
    let ctx = ctx.clone();
    s.write(move |tx| {
        let mut server = load_tx(tx, admin, &ctx, &id)?;
        if ![
            "active",
            "paused",
            "suspended",
            "stopped",
            "shelved",
            "shelved_offloaded",
        ]
        .contains(&server.vm_state.as_str())
        {
            return Err(ComputeError::Conflict(format!(
                "Cannot 'update tags' instance {id} while it is in vm_state {}",
                server.vm_state
            )));
        }
        change(&mut server.tags)?;
        if server.tags.len() > MAX_TAGS {
            return Err(ComputeError::BadRequest(format!(
                "The number of tags exceeds the per-server limit {MAX_TAGS}"
            )));
        }
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        Ok(server.tags)
    })
    .await
}

async fn tags_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-server-tags:index").await?;
    Ok(json_response(StatusCode::OK, &json!({"tags": server.tags})))
}

async fn tags_replace(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let mut body = parse_body(&body)?;
    let tags = check_tags(&body.remove("tags").unwrap_or(Value::Null))?;
    let stored = write_tags(
        &s,
        &ctx,
        id,
        "os_compute_api:os-server-tags:update_all",
        move |t| {
            *t = tags;
            Ok(())
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"tags": stored})))
}

async fn tags_clear(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    write_tags(
        &s,
        &ctx,
        id,
        "os_compute_api:os-server-tags:delete_all",
        |t| {
            t.clear();
            Ok(())
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn tag_check(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, tag)): Path<(String, String)>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-server-tags:show").await?;
    if server.tags.contains(&tag) {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(ComputeError::NotFound(format!(
            "Tag {tag} could not be found for instance {id}."
        )))
    }
}

async fn tag_add(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, tag)): Path<(String, String)>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    check_tag(&tag)?;
    let t2 = tag.clone();
    let mut existed = false;
    let before = load(&s, &ctx, &id).await?;
    if before.tags.contains(&tag) {
        existed = true;
    }
    write_tags(
        &s,
        &ctx,
        id.clone(),
        "os_compute_api:os-server-tags:update",
        move |t| {
            if !t.contains(&t2) {
                t.push(t2);
            }
            Ok(())
        },
    )
    .await?;
    let mut response = empty(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    });
    if let Ok(location) = HeaderValue::from_str(&format!("{}/servers/{id}/tags/{tag}", s.v21_url()))
    {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

async fn tag_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, tag)): Path<(String, String)>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let id2 = id.clone();
    write_tags(
        &s,
        &ctx,
        id,
        "os_compute_api:os-server-tags:delete",
        move |t| {
            let before = t.len();
            t.retain(|x| *x != tag);
            if t.len() == before {
                return Err(ComputeError::NotFound(format!(
                    "Tag {tag} could not be found for instance {id2}."
                )));
            }
            Ok(())
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// ------------------------------------------------ addresses and interfaces

/// A fixed answer about a server the caller may see (sub-resources that
/// stay empty until networking and volumes exist).
async fn fixed(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
    body: Value,
) -> ComputeResult<Response> {
    load_authorized(s, ctx, id, rule).await?;
    Ok(json_response(StatusCode::OK, &body))
}

async fn ips(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:ips:index").await?;
    let addresses = super::networking::addresses_of(&s, &server).await?;
    Ok(json_response(
        StatusCode::OK,
        &super::networking::ips_view(&addresses),
    ))
}

async fn ips_network(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, network)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:ips:show").await?;
    let addresses = super::networking::addresses_of(&s, &server).await?;
    let Some(list) = addresses.get(&network) else {
        return Err(ComputeError::NotFound(
            "Instance is not a member of specified network".into(),
        ));
    };
    let mut body = Map::new();
    body.insert(network, super::networking::basic_ips(list));
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

async fn interfaces(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:list").await?;
    let list = super::networking::interfaces_of(&s, &server, mv).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "interfaceAttachments": list }),
    ))
}

async fn interface_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, port)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-attach-interfaces:show").await?;
    let list = super::networking::interfaces_of(&s, &server, mv).await?;
    match list.into_iter().find(|i| i.port_id == port) {
        Some(found) => Ok(json_response(
            StatusCode::OK,
            &json!({ "interfaceAttachment": found }),
        )),
        None => Err(ComputeError::NotFound(format!(
            "Instance {id} does not have a port with id {port}"
        ))),
    }
}

async fn security_groups(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-security-groups:list").await?;
    super::network_proxy::server_groups(&s, &server).await
}

async fn password_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    fixed(
        &s,
        &ctx,
        &id,
        "os_compute_api:os-server-password:show",
        json!({"password": ""}),
    )
    .await
}

async fn password_clear(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    load_authorized(&s, &ctx, &id, "os_compute_api:os-server-password:clear").await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn topology(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    if !mv.at_least(78) {
        return Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    load_authorized(&s, &ctx, &id, "compute:server:topology:index").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"nodes": [], "pagesize_kb": null}),
    ))
}

/// `GET .../diagnostics` (admin): the VMM's statistics.
async fn diagnostics(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-server-diagnostics").await?;
    let st = s.driver.stats(&server.id).await.map_err(|_| {
        ComputeError::Conflict(format!(
            "Cannot 'get_diagnostics' instance {id} while it is in power_state {}",
            server.power_state
        ))
    })?;
    let cpu: Vec<Value> = st
        .get("vcpu_seconds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, t)| json!({"id": i, "time": (t.as_f64().unwrap_or(0.0) * 1e9) as i64, "utilisation": null}))
                .collect()
        })
        .unwrap_or_default();
    // The VMM names its devices disk0.., net0.. (vmm/devices/factory.rs).
    let devices: Vec<&Value> = st
        .get("devices")
        .and_then(Value::as_array)
        .map(|d| d.iter().collect())
        .unwrap_or_default();
    let named = |prefix: &str| -> Vec<&Value> {
        devices
            .iter()
            .copied()
            .filter(|d| {
                d.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect()
    };
    let (disks, nics) = (named("disk"), named("net"));
    let counter = |d: &Value, key: &str| d.get(key).and_then(Value::as_u64).unwrap_or(0);
    if mv.at_least(48) {
        let disk_details: Vec<Value> = disks
            .iter()
            .map(|d| {
                json!({
                    "read_bytes": counter(d, "bytes_to_guest"),
                    "read_requests": null,
                    "write_bytes": counter(d, "bytes_from_guest"),
                    "write_requests": null,
                    "errors_count": counter(d, "errors"),
                })
            })
            .collect();
        return Ok(json_response(
            StatusCode::OK,
            &json!({
                "state": if server.power_state == RUNNING { "running" } else { "paused" },
                // Nova's API schema allows only these driver names; clients
                // validate it. The hypervisor field names yunhe.
                "driver": "libvirt",
                "hypervisor": "yunhe",
                "hypervisor_os": "linux",
                "uptime": server.launched_at.map(|t| now_unix() - t).unwrap_or(0),
                "config_drive": server.config_drive,
                "num_cpus": server.flavor.vcpus,
                "num_nics": nics.len(),
                "num_disks": disks.len(),
                "cpu_details": cpu,
                "nic_details": [],
                "disk_details": disk_details,
                "memory_details": {"maximum": server.flavor.ram, "used": st.get("guest_memory_touched").and_then(Value::as_i64).unwrap_or(0) >> 20},
            }),
        ));
    }
    let mut out = Map::new();
    for (i, c) in cpu.iter().enumerate() {
        out.insert(format!("cpu{i}_time"), c["time"].clone());
    }
    out.insert("memory".into(), json!(server.flavor.ram * 1024));
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

// --------------------------------------------------------- instance actions

fn action_view(a: &db::InstanceAction, with_events: bool, admin: bool, mv: Mv) -> Value {
    let mut o = json!({
        "action": a.action,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": nova_time(a.start_time),
        "message": a.message,
        "instance_uuid": a.instance_id,
    });
    if mv.at_least(58) {
        o["updated_at"] = json!(nova_time(a.updated_at));
    }
    if with_events {
        let events: Vec<Value> = a
            .events
            .iter()
            .map(|e| {
                let mut ev = json!({
                    "event": e.event,
                    "start_time": nova_time(e.start_time),
                    "finish_time": e.finish_time.map(nova_time),
                    "result": e.result,
                });
                if admin {
                    ev["traceback"] = json!(e.traceback);
                }
                if mv.at_least(62) {
                    if admin {
                        ev["host"] = json!(super::hosts::hostname());
                    }
                    ev["hostId"] = json!(hex::encode(Sha224::digest(format!(
                        "{}{}",
                        a.project_id,
                        super::hosts::hostname()
                    ))));
                }
                if mv.at_least(84) && admin {
                    ev["details"] = json!(e.traceback);
                }
                ev
            })
            .collect();
        o["events"] = json!(events);
    }
    o
}

async fn actions_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let id2 = id.clone();
    let (server, actions) = s
        .read(move |conn| Ok((db::get_server(conn, &id2)?, db::list_actions(conn, &id2)?)))
        .await?;
    // Deleted servers keep their actions (from 2.21 on).
    let admin = super::is_admin_context(&s, &ctx);
    let server = match server {
        Some(sv)
            if sv.deleted
                && mv.at_least(21)
                && (admin || ctx.project_id() == Some(sv.project_id.as_str())) =>
        {
            sv
        }
        other => visible(admin, &ctx, other, &id)?,
    };
    let target = server_target(&server);
    super::authorize(&s, &ctx, "os_compute_api:os-instance-actions:list", &target)?;
    let events = super::allows(
        &s,
        &ctx,
        "os_compute_api:os-instance-actions:events",
        &target,
    );
    let mut actions = actions;
    if mv.at_least(58) {
        if let Some(since) = q.get("changes-since") {
            let since = parse_changes_since(since)?;
            actions.retain(|a| a.updated_at >= since);
        }
        if mv.at_least(66)
            && let Some(before) = q.get("changes-before")
        {
            let before = parse_changes_since(before)?;
            actions.retain(|a| a.updated_at <= before);
        }
    }
    let (page, more) = if mv.at_least(58) {
        paginate(actions, &q, |a| a.request_id.clone())?
    } else {
        (actions, false)
    };
    let items: Vec<Value> = page
        .iter()
        .map(|a| action_view(a, false, events, mv))
        .collect();
    let mut body = json!({"instanceActions": items});
    if more && let Some(last) = page.last() {
        body["links"] = next_link(
            &s,
            &format!("servers/{id}/os-instance-actions"),
            &q,
            &last.request_id,
        );
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn action_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, request_id)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let id2 = id.clone();
    let rid = request_id.clone();
    let (server, action) = s
        .read(move |conn| {
            Ok((
                db::get_server(conn, &id2)?,
                db::get_action(conn, &id2, &rid)?,
            ))
        })
        .await?;
    let admin = super::is_admin_context(&s, &ctx);
    let server = match server {
        Some(sv)
            if sv.deleted
                && mv.at_least(21)
                && (admin || ctx.project_id() == Some(sv.project_id.as_str())) =>
        {
            sv
        }
        other => visible(admin, &ctx, other, &id)?,
    };
    let target = server_target(&server);
    super::authorize(&s, &ctx, "os_compute_api:os-instance-actions:show", &target)?;
    let events = super::allows(
        &s,
        &ctx,
        "os_compute_api:os-instance-actions:events",
        &target,
    );
    let action =
        action.ok_or_else(|| ComputeError::NotFound(format!("Action {request_id} not found")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"instanceAction": action_view(&action, true, events, mv)}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_vm_and_task_state() {
        assert_eq!(status_of("active", None), "ACTIVE");
        assert_eq!(status_of("active", Some("rebooting_hard")), "HARD_REBOOT");
        assert_eq!(status_of("stopped", None), "SHUTOFF");
        assert_eq!(status_of("resized", None), "VERIFY_RESIZE");
        assert_eq!(status_of("error", Some("rebuilding")), "REBUILD");
        assert_eq!(status_of("building", Some("spawning")), "BUILD");
    }

    #[test]
    fn name_filters_match_like_nova_regexes() {
        assert!(regex_match("vm", "my-vm-1"));
        assert!(regex_match("^my", "my-vm-1"));
        assert!(!regex_match("^vm", "my-vm-1"));
        assert!(regex_match("1$", "my-vm-1"));
        assert!(regex_match("my.vm", "my-vm-1"));
        assert!(regex_match("^my.*1$", "my-vm-1"));
        assert!(!regex_match("2$", "my-vm-1"));
    }

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
