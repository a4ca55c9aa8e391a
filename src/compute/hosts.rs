//! This host as Nova describes it: availability zones, the hypervisor (real
//! CPU count, RAM and disk), the services (nova-scheduler and nova-compute,
//! both on this host), simple tenant usage and the extensions list.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, nova_time, own_target, paginate,
    parse_body, query_map,
};
use crate::db::compute::{self as store, ComputeService};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::Auth;
use crate::policy::Target;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-availability-zone", get(zones))
        .route("/v2.1/os-availability-zone/detail", get(zones_detail))
        .route("/v2.1/os-hypervisors", get(hypervisors))
        .route("/v2.1/os-hypervisors/detail", get(hypervisors_detail))
        .route("/v2.1/os-hypervisors/statistics", get(statistics))
        .route("/v2.1/os-hypervisors/{id}", get(hypervisor_show))
        .route("/v2.1/os-hypervisors/{id}/uptime", get(hypervisor_uptime))
        .route("/v2.1/os-hypervisors/{id}/search", get(hypervisor_search))
        .route("/v2.1/os-hypervisors/{id}/servers", get(hypervisor_servers))
        .route("/v2.1/os-hosts", get(hosts_list))
        .route("/v2.1/os-hosts/{host}", get(host_show).put(host_update))
        .route("/v2.1/os-hosts/{host}/{action}", get(host_power))
        .route("/v2.1/os-services", get(services))
        .route(
            "/v2.1/os-services/{id}",
            put(service_update).delete(service_delete),
        )
        .route("/v2.1/os-instance_usage_audit_log", get(audit_list))
        .route(
            "/v2.1/os-instance_usage_audit_log/{before}",
            get(audit_show),
        )
        .route("/v2.1/os-simple-tenant-usage", get(usage_list))
        .route("/v2.1/os-simple-tenant-usage/{tenant}", get(usage_show))
        .route("/v2.1/extensions", get(extensions))
        .route("/v2.1/extensions/{alias}", get(extension_show))
}

/// The availability zone every server lands in.
pub const ZONE: &str = "nova";

// --------------------------------------------------------------- host facts

/// What the host has, read from /proc and statvfs of the state directory.
struct HostFacts {
    hostname: String,
    vcpus: i64,
    memory_mb: i64,
    disk_gb: i64,
    disk_free_gb: i64,
    uptime_secs: f64,
    load: String,
}

fn meminfo_kib(text: &str, key: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<i64>()
                .ok()
        })
        .unwrap_or(0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn host_facts(state_file: Option<&str>) -> HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let vcpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1) as i64;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_mb = meminfo_kib(&meminfo, "MemTotal:") / 1024;
    let dir = state_file
        .and_then(|p| std::path::Path::new(p).parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| std::path::PathBuf::from("/"));
    let (disk_gb, disk_free_gb) = match nix::sys::statvfs::statvfs(&dir) {
        Ok(st) => {
            let frag = st.fragment_size();
            let total = st.blocks() * frag;
            let free = st.blocks_available() * frag;
            ((total >> 30) as i64, (free >> 30) as i64)
        }
        Err(_) => (0, 0),
    };
    let uptime_secs = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    HostFacts {
        hostname: hostname(),
        vcpus,
        memory_mb,
        disk_gb,
        disk_free_gb,
        uptime_secs,
        load,
    }
}

/// What the scheduler may place on this host: vcpus, RAM (MiB) and disk (GiB)
/// of the host and of the state directory's filesystem.
pub struct Capacity {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
}

pub fn capacity(state_dir: &std::path::Path) -> Capacity {
    let state_file = state_dir.join("yunhe.db");
    let f = host_facts(Some(&state_file.to_string_lossy()));
    Capacity {
        vcpus: f.vcpus,
        memory_mb: f.memory_mb,
        disk_gb: f.disk_gb,
    }
}

/// A stable UUID-shaped id derived from a name.
fn stable_uuid(what: &str) -> String {
    let h = Sha256::digest(format!("yunhe:{what}").as_bytes());
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-4{}-a{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        &x[17..20],
        &x[20..32]
    )
}

/// Everything the hypervisor views need, read in one go.
struct HostState {
    facts: HostFacts,
    compute: Option<ComputeService>,
    /// Servers placed on this host: (uuid, name).
    servers: Vec<(String, String)>,
    /// Resources they hold: vcpus, RAM MiB, disk GiB.
    used: (i64, i64, i64),
}

async fn host_state(s: &S) -> ComputeResult<HostState> {
    let (path, services, all) = s
        .read(|conn| {
            Ok((
                store::state_file_path(conn),
                store::list_services(conn)?,
                crate::db::servers::list_servers(conn, None, false)?,
            ))
        })
        .await?;
    let placed: Vec<crate::db::servers::Server> =
        all.into_iter().filter(|sv| sv.host.is_some()).collect();
    let usage = crate::db::servers::HostUsage::of(&placed);
    let used = (usage.vcpus, usage.ram_mb, usage.disk_gb);
    let servers = placed
        .into_iter()
        .map(|sv| {
            let name = format!("instance-{}", &sv.id.replace('-', "")[..8]);
            (sv.id, name)
        })
        .collect();
    let facts = tokio::task::spawn_blocking(move || host_facts(path.as_deref()))
        .await
        .map_err(|e| ComputeError::Internal(e.to_string()))?;
    let compute = services
        .into_iter()
        .find(|svc| svc.binary == "nova-compute");
    Ok(HostState {
        facts,
        compute,
        servers,
        used,
    })
}

fn uptime_text(f: &HostFacts) -> String {
    let secs = f.uptime_secs as u64;
    let now = chrono::Utc::now().format("%H:%M:%S");
    format!(
        " {now} up {} days, {:02}:{:02},  1 user,  load average: {}",
        secs / 86400,
        (secs % 86400) / 3600,
        (secs % 3600) / 60,
        f.load
    )
}

fn hypervisor_id(h: &HostState, mv: Mv) -> Value {
    if mv.at_least(53) {
        json!(stable_uuid(&format!("hypervisor:{}", h.facts.hostname)))
    } else {
        json!(1)
    }
}

fn service_id(svc: &ComputeService, mv: Mv) -> Value {
    if mv.at_least(53) {
        json!(svc.uuid)
    } else {
        json!(svc.id)
    }
}

fn servers_view(h: &HostState) -> Value {
    json!(
        h.servers
            .iter()
            .map(|(uuid, name)| json!({"uuid": uuid, "name": name}))
            .collect::<Vec<_>>()
    )
}

fn hypervisor_view(h: &HostState, mv: Mv, detail: bool, with_servers: bool) -> Value {
    let f = &h.facts;
    let disabled = h.compute.as_ref().is_some_and(|c| c.disabled);
    let down = h.compute.as_ref().is_some_and(|c| c.forced_down);
    let mut obj = Map::new();
    obj.insert("id".into(), hypervisor_id(h, mv));
    obj.insert("hypervisor_hostname".into(), json!(f.hostname));
    obj.insert("state".into(), json!(if down { "down" } else { "up" }));
    obj.insert(
        "status".into(),
        json!(if disabled { "disabled" } else { "enabled" }),
    );
    if with_servers {
        obj.insert("servers".into(), servers_view(h));
    }
    if !detail {
        return Value::Object(obj);
    }
    obj.insert("host_ip".into(), json!("127.0.0.1"));
    obj.insert("hypervisor_type".into(), json!("yunhe"));
    obj.insert("hypervisor_version".into(), json!(1000));
    let service = match &h.compute {
        Some(svc) => json!({
            "host": f.hostname,
            "id": service_id(svc, mv),
            "disabled_reason": svc.disabled_reason,
        }),
        None => json!({"host": f.hostname, "id": 0, "disabled_reason": null}),
    };
    obj.insert("service".into(), service);
    if mv.at_least(88) {
        obj.insert("uptime".into(), json!(uptime_text(f)));
        return Value::Object(obj);
    }
    let cpu_info = json!({
        "arch": std::env::consts::ARCH,
        "model": "host",
        "vendor": "yunhe",
        "topology": {"sockets": 1, "cores": f.vcpus, "threads": 1},
        "features": [],
    });
    obj.insert(
        "cpu_info".into(),
        if mv.at_least(28) {
            cpu_info
        } else {
            json!(cpu_info.to_string())
        },
    );
    obj.insert("current_workload".into(), json!(0));
    obj.insert("disk_available_least".into(), json!(f.disk_free_gb));
    let (vcpus_used, ram_used, disk_used) = h.used;
    obj.insert("free_disk_gb".into(), json!(f.disk_gb - disk_used));
    obj.insert("free_ram_mb".into(), json!(f.memory_mb - ram_used));
    obj.insert("local_gb".into(), json!(f.disk_gb));
    obj.insert("local_gb_used".into(), json!(disk_used));
    obj.insert("memory_mb".into(), json!(f.memory_mb));
    obj.insert("memory_mb_used".into(), json!(ram_used));
    obj.insert("running_vms".into(), json!(h.servers.len()));
    obj.insert("vcpus".into(), json!(f.vcpus));
    obj.insert("vcpus_used".into(), json!(vcpus_used));
    Value::Object(obj)
}

async fn list_hypervisors(
    s: S,
    ctx: Arc<crate::identity::AuthContext>,
    mv: Mv,
    q: Vec<(String, String)>,
    detail: bool,
) -> ComputeResult<Response> {
    let rule = if detail {
        "os_compute_api:os-hypervisors:list-detail"
    } else {
        "os_compute_api:os-hypervisors:list"
    };
    authorize(&s, &ctx, rule, &own_target(&ctx))?;
    let q = query_map(q);
    let h = host_state(&s).await?;
    let with_servers = mv.at_least(53)
        && q.get("with_servers")
            .is_some_and(|v| ["true", "1", "yes", "on"].contains(&v.to_ascii_lowercase().as_str()));
    let mut items = vec![&h];
    if mv.at_least(53)
        && let Some(pattern) = q.get("hypervisor_hostname_pattern")
    {
        if q.contains_key("limit") || q.contains_key("marker") {
            return Err(ComputeError::BadRequest(
                "Paging over hypervisors with the hypervisor_hostname_pattern query parameter is not supported.".into(),
            ));
        }
        if !h.facts.hostname.contains(pattern.as_str()) {
            return Err(ComputeError::NotFound(format!(
                "No hypervisor matching '{pattern}' could be found."
            )));
        }
    }
    if mv.at_least(33) {
        let id_of = |h: &&HostState| match hypervisor_id(h, mv) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let (page, _) = paginate(items, &q, id_of)?;
        items = page;
    }
    let views: Vec<Value> = items
        .iter()
        .map(|h| hypervisor_view(h, mv, detail, with_servers))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"hypervisors": views}),
    ))
}

async fn hypervisors(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_hypervisors(s, ctx, mv, q, false).await
}

async fn hypervisors_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_hypervisors(s, ctx, mv, q, true).await
}

fn gone() -> ComputeError {
    ComputeError::NotFound("The resource could not be found.".into())
}

async fn statistics(State(s): State<S>, Auth(ctx): Auth, mv: Mv) -> ComputeResult<Response> {
    if mv.at_least(88) {
        return Err(gone());
    }
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-hypervisors:statistics",
        &own_target(&ctx),
    )?;
    let h = host_state(&s).await?;
    let f = &h.facts;
    let (vcpus_used, ram_used, disk_used) = h.used;
    Ok(json_response(
        StatusCode::OK,
        &json!({"hypervisor_statistics": {
            "count": 1,
            "current_workload": 0,
            "disk_available_least": f.disk_free_gb,
            "free_disk_gb": f.disk_gb - disk_used,
            "free_ram_mb": f.memory_mb - ram_used,
            "local_gb": f.disk_gb,
            "local_gb_used": disk_used,
            "memory_mb": f.memory_mb,
            "memory_mb_used": ram_used,
            "running_vms": h.servers.len(),
            "vcpus": f.vcpus,
            "vcpus_used": vcpus_used,
        }}),
    ))
}

/// The hypervisor named by `id` at this microversion, or 404/400.
async fn find_hypervisor(s: &S, mv: Mv, id: &str) -> ComputeResult<HostState> {
    let h = host_state(s).await?;
    let matches = match hypervisor_id(&h, mv) {
        Value::String(uuid) => uuid == id,
        _ => id == "1",
    };
    if matches {
        Ok(h)
    } else {
        Err(ComputeError::NotFound(format!(
            "Hypervisor with ID '{id}' could not be found."
        )))
    }
}

async fn hypervisor_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-hypervisors:show",
        &own_target(&ctx),
    )?;
    let q = query_map(q);
    let with_servers = mv.at_least(53)
        && q.get("with_servers")
            .is_some_and(|v| ["true", "1", "yes", "on"].contains(&v.to_ascii_lowercase().as_str()));
    let h = find_hypervisor(&s, mv, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"hypervisor": hypervisor_view(&h, mv, true, with_servers)}),
    ))
}

async fn hypervisor_uptime(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    if mv.at_least(88) {
        return Err(gone());
    }
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-hypervisors:uptime",
        &own_target(&ctx),
    )?;
    let h = find_hypervisor(&s, mv, &id).await?;
    let mut view = hypervisor_view(&h, mv, false, false);
    if let Value::Object(map) = &mut view {
        map.insert("uptime".into(), json!(uptime_text(&h.facts)));
    }
    Ok(json_response(StatusCode::OK, &json!({"hypervisor": view})))
}

async fn search_common(s: &S, mv: Mv, pattern: &str, servers: bool) -> ComputeResult<Response> {
    if mv.at_least(53) {
        return Err(gone());
    }
    let h = host_state(s).await?;
    if !h.facts.hostname.contains(pattern) {
        return Err(ComputeError::NotFound(format!(
            "No hypervisor matching '{pattern}' could be found."
        )));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"hypervisors": [hypervisor_view(&h, mv, false, servers)]}),
    ))
}

async fn hypervisor_search(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(pattern): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-hypervisors:search",
        &own_target(&ctx),
    )?;
    search_common(&s, mv, &pattern, false).await
}

async fn hypervisor_servers(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(pattern): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-hypervisors:servers",
        &own_target(&ctx),
    )?;
    search_common(&s, mv, &pattern, true).await
}

// ----------------------------------------------------------------- services

fn service_view(svc: &ComputeService, host: &str, mv: Mv) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), service_id(svc, mv));
    obj.insert("binary".into(), json!(svc.binary));
    obj.insert("host".into(), json!(host));
    obj.insert(
        "zone".into(),
        json!(if svc.binary == "nova-compute" {
            ZONE
        } else {
            "internal"
        }),
    );
    obj.insert(
        "status".into(),
        json!(if svc.disabled { "disabled" } else { "enabled" }),
    );
    obj.insert(
        "state".into(),
        json!(if svc.forced_down { "down" } else { "up" }),
    );
    // The control plane is this process: while it answers, the services
    // are alive, so they report "now" as their heartbeat.
    obj.insert("updated_at".into(), json!(nova_time(now_unix())));
    obj.insert("disabled_reason".into(), json!(svc.disabled_reason));
    if mv.at_least(11) {
        obj.insert("forced_down".into(), json!(svc.forced_down));
    }
    Value::Object(obj)
}

async fn services(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-services:list",
        &own_target(&ctx),
    )?;
    let q: HashMap<String, String> = query_map(q);
    let list = s.read(|conn| Ok(store::list_services(conn)?)).await?;
    let host = hostname();
    let views: Vec<Value> = list
        .iter()
        .filter(|_| q.get("host").is_none_or(|h| *h == host))
        .filter(|svc| q.get("binary").is_none_or(|b| *b == svc.binary))
        .map(|svc| service_view(svc, &host, mv))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"services": views})))
}

fn string_field(obj: &Map<String, Value>, key: &str) -> ComputeResult<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(v)) if v.chars().count() <= 255 => Ok(Some(v.clone())),
        Some(v) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {v}."
        ))),
    }
}

async fn service_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-services:update",
        &own_target(&ctx),
    )?;
    let body = parse_body(&body)?;
    let host = hostname();
    let mut list = s.read(|conn| Ok(store::list_services(conn)?)).await?;
    let legacy_actions = ["enable", "disable", "disable-log-reason", "force-down"];
    let (svc, response) = if !mv.at_least(53) {
        if !legacy_actions.contains(&id.as_str()) || (id == "force-down" && !mv.at_least(11)) {
            return Err(ComputeError::NotFound(format!("Unknown action {id}")));
        }
        let wanted_host = string_field(&body, "host")?
            .ok_or_else(|| ComputeError::BadRequest("'host' is a required property".into()))?;
        let binary = string_field(&body, "binary")?
            .ok_or_else(|| ComputeError::BadRequest("'binary' is a required property".into()))?;
        let svc = list
            .iter_mut()
            .find(|svc| svc.binary == binary && wanted_host == host)
            .ok_or_else(|| {
                ComputeError::NotFound(format!(
                    "Service {binary} on host {wanted_host} could not be found."
                ))
            })?;
        let mut out = json!({"host": host, "binary": binary});
        match id.as_str() {
            "enable" => {
                svc.disabled = false;
                svc.disabled_reason = None;
                out["status"] = json!("enabled");
            }
            "disable" => {
                svc.disabled = true;
                out["status"] = json!("disabled");
            }
            "disable-log-reason" => {
                let reason = string_field(&body, "disabled_reason")?.ok_or_else(|| {
                    ComputeError::BadRequest("Missing disabled reason field".into())
                })?;
                svc.disabled = true;
                svc.disabled_reason = Some(reason.clone());
                out["status"] = json!("disabled");
                out["disabled_reason"] = json!(reason);
            }
            _ => {
                let forced = match body.get("forced_down") {
                    Some(Value::Bool(b)) => *b,
                    _ => {
                        return Err(ComputeError::BadRequest(
                            "Invalid input for field/attribute forced_down.".into(),
                        ));
                    }
                };
                svc.forced_down = forced;
                out["forced_down"] = json!(forced);
            }
        }
        (svc.clone(), out)
    } else {
        super::no_additional(&body, &["status", "disabled_reason", "forced_down"])?;
        let svc = list.iter_mut().find(|svc| svc.uuid == id).ok_or_else(|| {
            ComputeError::NotFound(format!("Service with ID {id} could not be found."))
        })?;
        let status = string_field(&body, "status")?;
        let reason = string_field(&body, "disabled_reason")?;
        let forced = match body.get("forced_down") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute forced_down. Value: {v}."
                )));
            }
        };
        if status.is_none() && forced.is_none() {
            return Err(ComputeError::BadRequest(
                "No updates were requested. Fields 'status' or 'forced_down' should be specified."
                    .into(),
            ));
        }
        if reason.is_some() && status.as_deref() != Some("disabled") {
            return Err(ComputeError::BadRequest(
                "Specifying 'disabled_reason' with status 'enabled' is invalid.".into(),
            ));
        }
        match status.as_deref() {
            Some("enabled") => {
                svc.disabled = false;
                svc.disabled_reason = None;
            }
            Some("disabled") => {
                svc.disabled = true;
                svc.disabled_reason = reason;
            }
            Some(other) => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute status. Value: {other}."
                )));
            }
            None => {}
        }
        if let Some(forced) = forced {
            svc.forced_down = forced;
        }
        let view = service_view(svc, &host, mv);
        (svc.clone(), view)
    };
    let mut stored = svc;
    stored.updated_at = now_unix();
    s.write(move |tx| Ok(store::update_service(tx, &stored)?))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"service": response})))
}

async fn service_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-services:delete",
        &own_target(&ctx),
    )?;
    let list = s.read(|conn| Ok(store::list_services(conn)?)).await?;
    let found = list.iter().any(|svc| {
        if mv.at_least(53) {
            svc.uuid == id
        } else {
            svc.id.to_string() == id
        }
    });
    if !found {
        if mv.at_least(53) && uuid::Uuid::parse_str(&id).is_err() {
            return Err(ComputeError::BadRequest(format!("Invalid uuid {id}")));
        }
        return Err(ComputeError::NotFound(format!(
            "Service {id} could not be found."
        )));
    }
    Err(ComputeError::Conflict(
        "This service runs inside yunhe itself and cannot be deleted.".into(),
    ))
}

// ------------------------------------------------------- os-hosts (< 2.43)

async fn hosts_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    if mv.at_least(43) {
        return Err(gone());
    }
    authorize(&s, &ctx, "os_compute_api:os-hosts:list", &own_target(&ctx))?;
    let q = query_map(q);
    let host = hostname();
    let hosts: Vec<Value> = [("scheduler", "internal"), ("compute", ZONE)]
        .iter()
        .filter(|(_, zone)| q.get("zone").is_none_or(|z| z.is_empty() || z == zone))
        .map(|(service, zone)| json!({"host_name": host, "service": service, "zone": zone}))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"hosts": hosts})))
}

/// 404 unless `host` is this host; checked after policy, as Nova does.
fn this_host(host: &str) -> ComputeResult<()> {
    if host == hostname() {
        Ok(())
    } else {
        Err(ComputeError::NotFound(format!(
            "Compute host {host} could not be found."
        )))
    }
}

async fn host_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(host): Path<String>,
) -> ComputeResult<Response> {
    if mv.at_least(43) {
        return Err(gone());
    }
    authorize(&s, &ctx, "os_compute_api:os-hosts:show", &own_target(&ctx))?;
    this_host(&host)?;
    let h = host_state(&s).await?;
    let f = &h.facts;
    let row = |project: &str, cpu: i64, memory_mb: i64, disk_gb: i64| {
        json!({"resource": {"host": host, "project": project, "cpu": cpu,
            "memory_mb": memory_mb, "disk_gb": disk_gb}})
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"host": [
            row("(total)", f.vcpus, f.memory_mb, f.disk_gb),
            row("(used_now)", 0, 0, 0),
            row("(used_max)", 0, 0, 0),
        ]}),
    ))
}

async fn host_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(host): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    if mv.at_least(43) {
        return Err(gone());
    }
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-hosts:update",
        &own_target(&ctx),
    )?;
    let body = parse_body(&body)?;
    super::no_additional(&body, &["status", "maintenance_mode"])?;
    let parse = |key: &str| -> ComputeResult<Option<bool>> {
        match body.get(key) {
            None => Ok(None),
            Some(Value::String(v)) if v.eq_ignore_ascii_case("enable") => Ok(Some(true)),
            Some(Value::String(v)) if v.eq_ignore_ascii_case("disable") => Ok(Some(false)),
            Some(v) => Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Value: {v}."
            ))),
        }
    };
    let status = parse("status")?;
    let maintenance = parse("maintenance_mode")?;
    if status.is_none() && maintenance.is_none() {
        return Err(ComputeError::BadRequest(
            "'status' or 'maintenance_mode' needed for host update".into(),
        ));
    }
    this_host(&host)?;
    if maintenance.is_some() {
        return Err(ComputeError::NotImplemented(
            "Maintenance mode is not supported by this host.".into(),
        ));
    }
    let enable = status.unwrap_or(true);
    s.write(move |tx| {
        if let Some(mut svc) = store::list_services(tx)?
            .into_iter()
            .find(|svc| svc.binary == "nova-compute")
        {
            svc.disabled = !enable;
            svc.disabled_reason = None;
            svc.updated_at = now_unix();
            store::update_service(tx, &svc)?;
        }
        Ok(())
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"host": host, "status": if enable { "enabled" } else { "disabled" }}),
    ))
}

async fn host_power(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((host, action)): Path<(String, String)>,
) -> ComputeResult<Response> {
    if mv.at_least(43) || !["startup", "shutdown", "reboot"].contains(&action.as_str()) {
        return Err(gone());
    }
    let rule = match action.as_str() {
        "startup" => "os_compute_api:os-hosts:start",
        "shutdown" => "os_compute_api:os-hosts:shutdown",
        _ => "os_compute_api:os-hosts:reboot",
    };
    authorize(&s, &ctx, rule, &own_target(&ctx))?;
    this_host(&host)?;
    Err(ComputeError::NotImplemented(
        "yunhe does not power the host it runs on up or down.".into(),
    ))
}

// -------------------------------------------------------- availability zone

async fn zones(State(s): State<S>, Auth(ctx): Auth) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-availability-zone:list",
        &own_target(&ctx),
    )?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"availabilityZoneInfo": [
            {"zoneName": ZONE, "zoneState": {"available": true}, "hosts": null}
        ]}),
    ))
}

async fn zones_detail(State(s): State<S>, Auth(ctx): Auth) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-availability-zone:detail",
        &own_target(&ctx),
    )?;
    let list = s.read(|conn| Ok(store::list_services(conn)?)).await?;
    let host = hostname();
    let now = nova_time(now_unix());
    let entry = |binary: &str| {
        list.iter().find(|svc| svc.binary == binary).map(|svc| {
            json!({binary: {"available": !svc.disabled, "active": !svc.forced_down, "updated_at": now}})
        })
    };
    let mut zones = Vec::new();
    if let Some(sched) = entry("nova-scheduler") {
        zones.push(json!({"zoneName": "internal", "zoneState": {"available": true}, "hosts": {host.clone(): sched}}));
    }
    if let Some(compute) = entry("nova-compute") {
        zones.push(json!({"zoneName": ZONE, "zoneState": {"available": true}, "hosts": {host.clone(): compute}}));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"availabilityZoneInfo": zones}),
    ))
}

// ------------------------------------------------------ simple tenant usage

/// Parses a `start`/`end` query value (Nova accepts these forms).
fn parse_time(value: Option<&String>, key: &str, default: i64) -> ComputeResult<i64> {
    let Some(text) = value else {
        return Ok(default);
    };
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp());
        }
    }
    Err(ComputeError::BadRequest(format!(
        "Invalid {key} time. The time must be in ISO 8601 format: {text}"
    )))
}

fn usage_window(q: &HashMap<String, String>) -> ComputeResult<(i64, i64)> {
    let now = now_unix();
    let start = parse_time(q.get("start"), "start", now)?;
    let end = parse_time(q.get("end"), "end", now)?;
    if start > end {
        return Err(ComputeError::BadRequest(
            "Invalid start time. The start time cannot occur after the end time.".into(),
        ));
    }
    Ok((start, end))
}

/// Usage of each project's servers that overlap [start, end], as Nova's
/// simple tenant usage computes it (hours up to the window's end or the
/// server's termination).
async fn usages(
    s: &S,
    project: Option<String>,
    start: i64,
    end: i64,
) -> ComputeResult<std::collections::BTreeMap<String, (Value, Vec<Value>)>> {
    let servers = s
        .read(move |conn| {
            Ok(crate::db::servers::list_servers(
                conn,
                project.as_deref(),
                true,
            )?)
        })
        .await?;
    let mut by_project: std::collections::BTreeMap<String, (f64, f64, f64, f64, Vec<Value>)> =
        Default::default();
    let now = now_unix();
    for sv in servers {
        let began = sv.launched_at.unwrap_or(sv.created_at);
        let ended = sv.terminated_at;
        if began > end || ended.is_some_and(|t| t < start) {
            continue;
        }
        let from = began.max(start);
        let to = ended.unwrap_or(now).min(end);
        let hours = ((to - from).max(0) as f64) / 3600.0;
        let f = &sv.flavor;
        let local_gb = f.disk + f.ephemeral;
        let state = if sv.deleted {
            "terminated".to_string()
        } else {
            sv.vm_state.clone()
        };
        let entry = by_project.entry(sv.project_id.clone()).or_default();
        entry.0 += hours;
        entry.1 += hours * local_gb as f64;
        entry.2 += hours * f.ram as f64;
        entry.3 += hours * f.vcpus as f64;
        entry.4.push(json!({
            "instance_id": sv.id,
            "name": sv.name,
            "hours": hours,
            "memory_mb": f.ram,
            "local_gb": local_gb,
            "vcpus": f.vcpus,
            "tenant_id": sv.project_id,
            "flavor": f.name,
            "started_at": nova_time(began),
            "ended_at": ended.map(nova_time),
            "state": state,
            "uptime": (ended.unwrap_or(now) - began).max(0),
        }));
    }
    Ok(by_project
        .into_iter()
        .map(|(project, (h, gb, mb, cpu, list))| {
            (
                project.clone(),
                (
                    json!({
                        "tenant_id": project,
                        "start": nova_time(start),
                        "stop": nova_time(end),
                        "total_hours": h,
                        "total_local_gb_usage": gb,
                        "total_memory_mb_usage": mb,
                        "total_vcpus_usage": cpu,
                    }),
                    list,
                ),
            )
        })
        .collect())
}

async fn usage_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-simple-tenant-usage:list",
        &own_target(&ctx),
    )?;
    let q = query_map(q);
    let (start, end) = usage_window(&q)?;
    let detailed = q
        .get("detailed")
        .is_some_and(|d| d == "1" || d.eq_ignore_ascii_case("true"));
    let items: Vec<Value> = usages(&s, None, start, end)
        .await?
        .into_values()
        .map(|(mut total, list)| {
            if detailed {
                total["server_usages"] = json!(list);
            }
            total
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"tenant_usages": items}),
    ))
}

async fn usage_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(tenant): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-simple-tenant-usage:show",
        &Target::project(tenant.clone()),
    )?;
    let q = query_map(q);
    let (start, end) = usage_window(&q)?;
    let usage = match usages(&s, Some(tenant.clone()), start, end)
        .await?
        .remove(&tenant)
    {
        Some((mut total, list)) => {
            total["server_usages"] = json!(list);
            total
        }
        None => json!({}),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"tenant_usage": usage}),
    ))
}

// ---------------------------------------------- instance usage audit log

/// The monthly audit period that ends before `before`, as Nova computes it.
fn audit_period(before: chrono::NaiveDateTime) -> (String, String) {
    use chrono::Datelike;
    let date = before.date();
    let end = chrono::NaiveDate::from_ymd_opt(date.year(), date.month(), 1).unwrap_or(date);
    let begin = end
        .checked_sub_months(chrono::Months::new(1))
        .unwrap_or(end);
    let fmt = |d: chrono::NaiveDate| format!("{} 00:00:00", d.format("%Y-%m-%d"));
    (fmt(begin), fmt(end))
}

/// No audit task runs on this host yet (there are no instances to audit),
/// so every period reports the host as not run, as a fresh Nova does.
fn audit_view(before: chrono::NaiveDateTime) -> Value {
    let (begin, end) = audit_period(before);
    json!({
        "hosts_not_run": [hostname()],
        "log": {},
        "num_hosts": 1,
        "num_hosts_done": 0,
        "num_hosts_not_run": 1,
        "num_hosts_running": 0,
        "overall_status": "0 of 1 hosts done. 0 errors.",
        "period_beginning": begin,
        "period_ending": end,
        "total_errors": 0,
        "total_instances": 0,
    })
}

async fn audit_list(State(s): State<S>, Auth(ctx): Auth) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-instance-usage-audit-log:list",
        &own_target(&ctx),
    )?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"instance_usage_audit_logs": audit_view(chrono::Utc::now().naive_utc())}),
    ))
}

async fn audit_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(before): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-instance-usage-audit-log:show",
        &own_target(&ctx),
    )?;
    let parsed = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(&before, f).ok())
    .ok_or_else(|| ComputeError::BadRequest(format!("Invalid timestamp for date {before}")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"instance_usage_audit_log": audit_view(parsed)}),
    ))
}

// --------------------------------------------------------------- extensions

/// Nova froze `/extensions` into a static list when v2.1 replaced
/// extensions by microversions; clients (and tempest) look for some of its
/// entries, so the list follows Nova's, whatever is served behind it.
const EXTENSIONS: &[(&str, &str, &str)] = &[
    (
        "os-admin-actions",
        "AdminActions",
        "Enable admin-only server actions.",
    ),
    (
        "os-aggregates",
        "Aggregates",
        "Admin-only aggregate administration.",
    ),
    ("os-consoles", "Consoles", "Interactive Console support."),
    (
        "os-console-output",
        "ConsoleOutput",
        "Console log output support.",
    ),
    (
        "os-extended-availability-zone",
        "ExtendedAvailabilityZone",
        "Extended Availability Zone support.",
    ),
    ("os-hosts", "Hosts", "Admin-only host administration."),
    (
        "os-instance-actions",
        "InstanceActions",
        "View a log of actions and events taken on an instance.",
    ),
    (
        "os-lock-server",
        "LockServer",
        "Enable lock/unlock server actions.",
    ),
    (
        "os-pause-server",
        "PauseServer",
        "Enable pause/unpause server actions.",
    ),
    (
        "os-remote-consoles",
        "RemoteConsoles",
        "Interactive Console support.",
    ),
    ("os-server-tags", "ServerTags", "Server tags support."),
    ("os-shelve", "Shelve", "Instance shelve mode."),
    (
        "os-suspend-server",
        "SuspendServer",
        "Enable suspend/resume server actions.",
    ),
    (
        "os-availability-zone",
        "AvailabilityZone",
        "1. Add availability_zone to the Create Server API.\n2. Add availability zones describing.",
    ),
    ("os-flavor-access", "FlavorAccess", "Flavor access support."),
    (
        "os-flavor-extra-specs",
        "FlavorExtraSpecs",
        "Flavors extra specs support.",
    ),
    (
        "os-flavor-manage",
        "FlavorManage",
        "Flavor create/delete API support.",
    ),
    (
        "OS-FLV-DISABLED",
        "FlavorDisabled",
        "Support to show the disabled status of a flavor.",
    ),
    (
        "OS-FLV-EXT-DATA",
        "FlavorExtraData",
        "Provide additional data for flavors.",
    ),
    (
        "os-hypervisors",
        "Hypervisors",
        "Admin-only hypervisor administration.",
    ),
    ("os-keypairs", "Keypairs", "Keypair Support."),
    ("os-quota-sets", "Quotas", "Quotas management support."),
    (
        "os-quota-class-sets",
        "QuotaClasses",
        "Quota classes management support.",
    ),
    ("os-server-groups", "ServerGroups", "Server group support."),
    ("os-services", "Services", "Services support."),
    (
        "os-simple-tenant-usage",
        "SimpleTenantUsage",
        "Simple tenant usage extension.",
    ),
    (
        "os-used-limits",
        "UsedLimits",
        "Provide data on limited resources that are being used.",
    ),
];

fn extension_view(alias: &str, name: &str, description: &str) -> Value {
    json!({
        "alias": alias,
        "name": name,
        "description": description,
        "namespace": format!("http://docs.openstack.org/compute/ext/fake_xml"),
        "updated": "2014-12-03T00:00:00Z",
        "links": [],
    })
}

async fn extensions(State(s): State<S>, Auth(ctx): Auth) -> ComputeResult<Response> {
    authorize(&s, &ctx, "os_compute_api:extensions", &own_target(&ctx))?;
    let list: Vec<Value> = EXTENSIONS
        .iter()
        .map(|(a, n, d)| extension_view(a, n, d))
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"extensions": list})))
}

async fn extension_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(alias): Path<String>,
) -> ComputeResult<Response> {
    authorize(&s, &ctx, "os_compute_api:extensions", &own_target(&ctx))?;
    match EXTENSIONS.iter().find(|(a, _, _)| *a == alias) {
        Some((a, n, d)) => Ok(json_response(
            StatusCode::OK,
            &json!({"extension": extension_view(a, n, d)}),
        )),
        None => Err(ComputeError::NotFound(format!(
            "Extension {alias} could not be found."
        ))),
    }
}
