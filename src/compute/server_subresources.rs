//! A server's read-mostly sub-resources: ips, os-interface (list and show;
//! attach and detach are `interfaces`), os-security-groups,
//! os-server-password, topology and diagnostics.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::access::load_authorized;
use super::states::PowerState;
use super::{ComputeError, ComputeResult, ComputeState, Mv, empty};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<ComputeState>;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/servers/{id}/ips", get(ips))
        .route("/v2.1/servers/{id}/ips/{network}", get(ips_network))
        .route("/v2.1/servers/{id}/os-interface", get(interfaces))
        .route(
            "/v2.1/servers/{id}/os-interface/{port}",
            get(interface_show),
        )
        .route(
            "/v2.1/servers/{id}/os-server-password",
            get(password_show).delete(password_clear),
        )
        .route(
            "/v2.1/servers/{id}/os-security-groups",
            get(security_groups),
        )
        .route("/v2.1/servers/{id}/diagnostics", get(diagnostics))
        .route("/v2.1/servers/{id}/topology", get(topology))
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
            server.power_state.code()
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
                "state": if server.power_state == PowerState::Running { "running" } else { "paused" },
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
