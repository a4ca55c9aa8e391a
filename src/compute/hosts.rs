//! This host as Nova describes it: availability zones, the hypervisor (real
//! CPU count, RAM and disk), the services (nova-scheduler and nova-compute,
//! both on this host), simple tenant usage and the extensions list.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ComputeError, ComputeResult, ComputeState, Mv, authorize, nova_time, own_target};
use crate::db::compute::{self as store, ComputeService};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<ComputeState>;

/// Availability zones and the extensions list; the hypervisor, services,
/// os-hosts and usage APIs have their routes in `hypervisors`, `services`
/// and `tenant_usage`.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-availability-zone", get(zones))
        .route("/v2.1/os-availability-zone/detail", get(zones_detail))
        .route("/v2.1/extensions", get(extensions))
        .route("/v2.1/extensions/{alias}", get(extension_show))
}

/// The availability zone every server lands in.
pub const ZONE: &str = "nova";

// --------------------------------------------------------------- host facts

/// What the host has, read from /proc and statvfs of the state directory.
pub(super) struct HostFacts {
    pub(super) hostname: String,
    pub(super) vcpus: i64,
    pub(super) memory_mb: i64,
    pub(super) disk_gb: i64,
    pub(super) disk_free_gb: i64,
    pub(super) uptime_secs: f64,
    pub(super) load: String,
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
pub(super) struct HostState {
    pub(super) facts: HostFacts,
    pub(super) compute: Option<ComputeService>,
    /// Servers placed on this host: (uuid, name).
    pub(super) servers: Vec<(String, String)>,
    /// Resources they hold: vcpus, RAM MiB, disk GiB.
    pub(super) used: (i64, i64, i64),
}

pub(super) async fn host_state(s: &S) -> ComputeResult<HostState> {
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

pub(super) fn uptime_text(f: &HostFacts) -> String {
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

pub(super) fn hypervisor_id(h: &HostState, mv: Mv) -> Value {
    if mv.at_least(53) {
        json!(stable_uuid(&format!("hypervisor:{}", h.facts.hostname)))
    } else {
        json!(1)
    }
}

pub(super) fn service_id(svc: &ComputeService, mv: Mv) -> Value {
    if mv.at_least(53) {
        json!(svc.uuid)
    } else {
        json!(svc.id)
    }
}

pub(super) fn gone() -> ComputeError {
    ComputeError::NotFound("The resource could not be found.".into())
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
