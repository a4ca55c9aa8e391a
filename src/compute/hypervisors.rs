//! `os-hypervisors`: this host as Nova's one hypervisor (real CPU count,
//! RAM and disk, its servers), with statistics below 2.88, uptime, search.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::hosts::{HostState, gone, host_state, hypervisor_id, service_id, uptime_text};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, own_target, paginate, query_map,
};
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<ComputeState>;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-hypervisors", get(hypervisors))
        .route("/v2.1/os-hypervisors/detail", get(hypervisors_detail))
        .route("/v2.1/os-hypervisors/statistics", get(statistics))
        .route("/v2.1/os-hypervisors/{id}", get(hypervisor_show))
        .route("/v2.1/os-hypervisors/{id}/uptime", get(hypervisor_uptime))
        .route("/v2.1/os-hypervisors/{id}/search", get(hypervisor_search))
        .route("/v2.1/os-hypervisors/{id}/servers", get(hypervisor_servers))
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
