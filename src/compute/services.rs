//! `os-services` (nova-scheduler and nova-compute, both on this host:
//! list, enable/disable/force-down, delete) and `os-hosts` below 2.43.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use serde_json::{Map, Value, json};

use super::hosts::{ZONE, gone, host_state, hostname, service_id};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::request::{body as decode_body, present};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, nova_time, own_target, query_map,
};
use crate::db::compute::{self as store, ComputeService};
use crate::db::now_unix;
use crate::http::body::BodyError;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<ComputeState>;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-hosts", get(hosts_list))
        .route("/v2.1/os-hosts/{host}", get(host_show).put(host_update))
        .route("/v2.1/os-hosts/{host}/{action}", get(host_power))
        .route("/v2.1/os-services", get(services))
        .route(
            "/v2.1/os-services/{id}",
            put(service_update).delete(service_delete),
        )
}

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

/// The body of `PUT /os-services/{action}` before 2.53 (`forced_down`
/// from 2.11, for `force-down`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyServiceUpdate {
    #[serde(default)]
    host: Option<ShortText>,
    #[serde(default)]
    binary: Option<ShortText>,
    #[serde(default)]
    disabled_reason: Option<ShortText>,
    #[serde(default)]
    forced_down: Option<bool>,
}

/// The body of `PUT /os-services/{id}` from 2.53.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceUpdate {
    #[serde(default)]
    status: Option<ServiceStatus>,
    #[serde(default)]
    disabled_reason: Option<ShortText>,
    #[serde(default, deserialize_with = "present")]
    forced_down: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ServiceStatus {
    Enabled,
    Disabled,
}

/// A string of at most 255 characters.
#[derive(Debug, Clone)]
struct ShortText(String);

impl<'de> Deserialize<'de> for ShortText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(v) if v.chars().count() <= 255 => Ok(ShortText(v)),
            v => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

/// The body of `PUT /os-hosts/{host}` (before 2.43).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostUpdate {
    #[serde(default, deserialize_with = "present")]
    status: Option<EnableDisable>,
    #[serde(default, deserialize_with = "present")]
    maintenance_mode: Option<EnableDisable>,
}

/// `"enable"` or `"disable"`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EnableDisable(bool);

impl<'de> Deserialize<'de> for EnableDisable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(v) if v.eq_ignore_ascii_case("enable") => Ok(EnableDisable(true)),
            Value::String(v) if v.eq_ignore_ascii_case("disable") => Ok(EnableDisable(false)),
            v => Err(de::Error::custom(format!("{v}."))),
        }
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
    let host = hostname();
    let mut list = s.read(|conn| Ok(store::list_services(conn)?)).await?;
    let legacy_actions = ["enable", "disable", "disable-log-reason", "force-down"];
    let (svc, response) = if !mv.at_least(53) {
        if !legacy_actions.contains(&id.as_str()) || (id == "force-down" && !mv.at_least(11)) {
            return Err(ComputeError::NotFound(format!("Unknown action {id}")));
        }
        let body: LegacyServiceUpdate = decode_body(&body)?;
        if body.forced_down.is_some() && !mv.at_least(11) {
            return Err(BodyError::Unexpected("forced_down".into()).into());
        }
        let wanted_host = body
            .host
            .ok_or_else(|| ComputeError::BadRequest("'host' is a required property".into()))?
            .0;
        let binary = body
            .binary
            .ok_or_else(|| ComputeError::BadRequest("'binary' is a required property".into()))?
            .0;
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
                let reason = body
                    .disabled_reason
                    .ok_or_else(|| {
                        ComputeError::BadRequest("Missing disabled reason field".into())
                    })?
                    .0;
                svc.disabled = true;
                svc.disabled_reason = Some(reason.clone());
                out["status"] = json!("disabled");
                out["disabled_reason"] = json!(reason);
            }
            _ => {
                let forced = body.forced_down.ok_or_else(|| {
                    ComputeError::BadRequest(
                        "Invalid input for field/attribute forced_down.".into(),
                    )
                })?;
                svc.forced_down = forced;
                out["forced_down"] = json!(forced);
            }
        }
        (svc.clone(), out)
    } else {
        let body: ServiceUpdate = decode_body(&body)?;
        let svc = list.iter_mut().find(|svc| svc.uuid == id).ok_or_else(|| {
            ComputeError::NotFound(format!("Service with ID {id} could not be found."))
        })?;
        let (status, reason, forced) = (body.status, body.disabled_reason, body.forced_down);
        if status.is_none() && forced.is_none() {
            return Err(ComputeError::BadRequest(
                "No updates were requested. Fields 'status' or 'forced_down' should be specified."
                    .into(),
            ));
        }
        if reason.is_some() && status != Some(ServiceStatus::Disabled) {
            return Err(ComputeError::BadRequest(
                "Specifying 'disabled_reason' with status 'enabled' is invalid.".into(),
            ));
        }
        match status {
            Some(ServiceStatus::Enabled) => {
                svc.disabled = false;
                svc.disabled_reason = None;
            }
            Some(ServiceStatus::Disabled) => {
                svc.disabled = true;
                svc.disabled_reason = reason.map(|r| r.0);
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
    let body: HostUpdate = decode_body(&body)?;
    let status = body.status.map(|s| s.0);
    let maintenance = body.maintenance_mode.map(|m| m.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::request::refused;

    #[test]
    fn service_and_host_bodies() {
        let u: ServiceUpdate =
            decode_body(br#"{"status": "disabled", "disabled_reason": "r", "forced_down": true}"#)
                .expect("accepted");
        assert_eq!(u.status, Some(ServiceStatus::Disabled));
        assert_eq!(u.forced_down, Some(true));
        assert_eq!(
            refused(decode_body::<ServiceUpdate>(br#"{"forced_down": "yes"}"#)),
            "Invalid input for field/attribute forced_down. Value is not a boolean."
        );
        assert_eq!(
            refused(decode_body::<ServiceUpdate>(br#"{"host": "h"}"#)),
            "Additional properties are not allowed ('host' was unexpected)"
        );
        let legacy: LegacyServiceUpdate =
            decode_body(br#"{"host": "h", "binary": "nova-compute"}"#).expect("accepted");
        assert_eq!(legacy.binary.map(|b| b.0).as_deref(), Some("nova-compute"));
        assert_eq!(
            refused(decode_body::<LegacyServiceUpdate>(br#"{"host": 1}"#)),
            "Invalid input for field/attribute host. Value: 1."
        );
        let h: HostUpdate = decode_body(br#"{"status": "ENABLE"}"#).expect("accepted");
        assert_eq!(h.status, Some(EnableDisable(true)));
        assert_eq!(
            refused(decode_body::<HostUpdate>(br#"{"maintenance_mode": "on"}"#)),
            "Invalid input for field/attribute maintenance_mode. Value: \"on\"."
        );
    }
}
