//! Availability zones, services, the backend's pool (scheduler stats),
//! capabilities and extensions: what the one host offers.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::backend::GIB;
use super::requests::{self, given};
use super::views::HOST;
use super::{VolumeError, VolumeResult, VolumeState, authorize, own_target, query_map};
use crate::db::volume as store;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<VolumeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v3/os-availability-zone", get(zones))
        .route("/v3/os-services", get(services))
        .route("/v3/os-services/{action}", put(service_action))
        .route("/v3/scheduler-stats/get_pools", get(pools))
        .route("/v3/capabilities/{host}", get(capabilities))
        .route("/v3/extensions", get(extensions))
}

async fn zones(State(_s): State<S>, Auth(_ctx): Auth) -> VolumeResult<Response> {
    Ok(json_response(
        StatusCode::OK,
        &json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}}]}),
    ))
}

#[derive(Serialize)]
struct ServiceView {
    binary: &'static str,
    host: &'static str,
    zone: &'static str,
    status: &'static str,
    state: &'static str,
    updated_at: String,
    disabled_reason: Option<String>,
    frozen: bool,
    replication_status: &'static str,
    active_backend_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Option<String>>,
    /// Only the volume service reports its backend's state, as Cinder.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_state: Option<&'static str>,
}

async fn services(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: super::Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "volume_extension:services:index",
        &own_target(&ctx),
    )?;
    let q = query_map(q);
    let now = super::now_string();
    let states = s.services.snapshot();
    let list: Vec<ServiceView> = SERVICES
        .iter()
        .zip(states)
        .filter(|((binary, host), _)| {
            q.get("binary").is_none_or(|b| b == binary)
                && q.get("host").is_none_or(|h| host_matches(host, h))
        })
        .map(|((binary, host), state)| ServiceView {
            binary,
            host,
            zone: "nova",
            status: if state.disabled {
                "disabled"
            } else {
                "enabled"
            },
            state: "up",
            updated_at: now.clone(),
            disabled_reason: state.disabled_reason,
            frozen: state.frozen,
            replication_status: "disabled",
            active_backend_id: None,
            cluster: mv.at_least(7).then_some(None),
            backend_state: (*binary == "cinder-volume").then_some("up"),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"services": list})))
}

/// The services this host runs: (binary, host), as Cinder names them.
const SERVICES: [(&str, &str); 3] = [
    ("cinder-scheduler", "yunhe"),
    ("cinder-volume", "yunhe@file"),
    ("cinder-backup", "yunhe"),
];

/// Cinder's host filter: `yunhe` names the host and every backend on it
/// (`yunhe@file`, `yunhe@file#pool`).
fn host_matches(host: &str, wanted: &str) -> bool {
    host == wanted
        || host
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with('@') || rest.starts_with('#'))
}

/// What an admin set on a service (disable, freeze).
#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub frozen: bool,
}

/// The services' states, in [`SERVICES`]' order. Kept in memory: a restart
/// enables and thaws them again (one host, no scheduler to steer).
#[derive(Debug, Default)]
pub struct ServiceStates(std::sync::Mutex<[ServiceState; 3]>);

impl ServiceStates {
    fn snapshot(&self) -> [ServiceState; 3] {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn change(&self, index: usize, f: impl FnOnce(&mut ServiceState)) {
        if let Ok(mut g) = self.0.lock()
            && let Some(state) = g.get_mut(index)
        {
            f(state);
        }
    }
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

/// The body of a service action: every member any action takes, each
/// action then refusing the ones it does not (a member given as `null`
/// counts as given there).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceBody {
    #[serde(default, deserialize_with = "given")]
    binary: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    host: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    cluster: Option<Option<IgnoredAny>>,
    #[serde(default, deserialize_with = "given")]
    service: Option<Option<String>>,
    #[serde(default, deserialize_with = "given")]
    disabled_reason: Option<Option<AnyText>>,
    #[serde(default, deserialize_with = "given")]
    backend_id: Option<Option<IgnoredAny>>,
}

impl ServiceBody {
    /// The members given, by name.
    fn given(&self) -> impl Iterator<Item = &'static str> {
        [
            ("binary", self.binary.is_some()),
            ("host", self.host.is_some()),
            ("cluster", self.cluster.is_some()),
            ("service", self.service.is_some()),
            ("disabled_reason", self.disabled_reason.is_some()),
            ("backend_id", self.backend_id.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
    }
}

/// A member of any JSON type, kept when it is a string (`disabled_reason`:
/// anything else gets the same refusal as a blank one).
#[derive(Debug)]
struct AnyText(Option<String>);

impl<'de> Deserialize<'de> for AnyText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(AnyText(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        }))
    }
}

/// The `host` (a string of at most 255 characters) of an action's body.
fn body_host(host: Option<String>) -> VolumeResult<Option<String>> {
    if host.as_ref().is_some_and(|h| h.chars().count() > 255) {
        return Err(bad(
            "Invalid input for field/attribute host. Value is too long",
        ));
    }
    Ok(host)
}

/// `PUT /os-services/{enable,disable,disable-log-reason,freeze,thaw,failover_host}`.
async fn service_action(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(action): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    const ACTIONS: &[&str] = &[
        "enable",
        "disable",
        "disable-log-reason",
        "freeze",
        "thaw",
        "failover_host",
        "failover",
    ];
    if !ACTIONS.contains(&action.as_str()) {
        return Err(VolumeError::NotFound("Unknown action".into()));
    }
    authorize(
        &s,
        &ctx,
        "volume_extension:services:update",
        &own_target(&ctx),
    )?;
    let req: ServiceBody = requests::whole(&bytes)?;
    let allowed: &[&str] = match action.as_str() {
        "enable" | "disable" => &["binary", "host", "cluster", "service"],
        "disable-log-reason" => &["binary", "host", "cluster", "service", "disabled_reason"],
        "freeze" | "thaw" => &["host", "cluster"],
        _ => &["host", "backend_id", "cluster"],
    };
    if let Some(extra) = req.given().find(|k| !allowed.contains(k)) {
        return Err(bad(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let host = body_host(req.host.flatten())?;
    match action.as_str() {
        "freeze" | "thaw" | "failover_host" | "failover" => {
            let host = host.ok_or_else(|| bad("Host field is missing."))?;
            if !SERVICES
                .iter()
                .any(|(b, h)| *b == "cinder-volume" && host_matches(h, &host))
            {
                return Err(bad(format!(
                    "Invalid input received: Service {host} could not be found."
                )));
            }
            if action == "freeze" || action == "thaw" {
                let frozen = action == "freeze";
                s.services.change(1, |st| st.frozen = frozen);
                return Ok(json_response(StatusCode::OK, &json!({})));
            }
            // One backend, no replication target to fail over to.
            Err(bad(
                "Invalid input received: failover is not supported: the file backend has no replication target.",
            ))
        }
        _ => {
            let host = host.ok_or_else(|| bad("Host field is missing."))?;
            let binary = req.binary.flatten().unwrap_or_default();
            let service = req.service.flatten().unwrap_or_default();
            let key = if binary.is_empty() { &service } else { &binary };
            if key.is_empty() || key.chars().count() > 255 {
                return Err(bad(
                    "Invalid input for field/attribute binary. 'binary' is a required property",
                ));
            }
            let reason = if action == "disable-log-reason" {
                match req.disabled_reason.flatten() {
                    Some(AnyText(Some(r))) if !r.trim().is_empty() && r.chars().count() <= 255 => {
                        Some(r)
                    }
                    _ => {
                        return Err(bad(
                            "Invalid input for field/attribute disabled_reason. Disabled reason contains invalid characters or is too long",
                        ));
                    }
                }
            } else {
                None
            };
            let index = SERVICES
                .iter()
                .position(|(b, h)| *b == key.as_str() && *h == host.as_str())
                .ok_or_else(|| {
                    VolumeError::NotFound(format!(
                        "Service {key} could not be found on host {host}."
                    ))
                })?;
            let disabled = action != "enable";
            s.services.change(index, |st| {
                st.disabled = disabled;
                st.disabled_reason = if disabled { reason.clone() } else { None };
            });
            let mut out = json!({
                "host": host,
                "service": service,
                "binary": binary,
                "status": if disabled { "disabled" } else { "enabled" },
                "disabled": disabled,
            });
            if action == "disable-log-reason" {
                out["disabled_reason"] = json!(reason);
            }
            Ok(json_response(StatusCode::OK, &out))
        }
    }
}

/// The pool's capacity figures, as Cinder's scheduler reports them.
async fn pool_capabilities(s: &S) -> VolumeResult<serde_json::Value> {
    let backend = s.backend.clone();
    let capacity = tokio::task::spawn_blocking(move || backend.capacity())
        .await
        .map_err(|e| VolumeError::Io(std::io::Error::other(e)))??;
    let provisioned = s.read(|conn| Ok(store::provisioned_gb(conn)?)).await?;
    let gb = |b: u64| (b as f64 / GIB as f64 * 100.0).round() / 100.0;
    Ok(json!({
        "volume_backend_name": "file",
        "vendor_name": "yunhe",
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": "file",
        "total_capacity_gb": gb(capacity.total),
        "free_capacity_gb": gb(capacity.free),
        "allocated_capacity_gb": provisioned,
        "provisioned_capacity_gb": provisioned,
        "max_over_subscription_ratio": s.backend.over_subscription_ratio.to_string(),
        "reserved_percentage": 1,
        "thin_provisioning_support": true,
        "thick_provisioning_support": false,
        "multiattach": true,
        "QoS_support": false,
        "timestamp": super::now_string(),
    }))
}

async fn pools(
    State(s): State<S>,
    Auth(ctx): Auth,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    authorize(
        &s,
        &ctx,
        "scheduler_extension:scheduler_stats:get_pools",
        &own_target(&ctx),
    )?;
    let q = query_map(q);
    let detail = q
        .get("detail")
        .is_some_and(|d| matches!(d.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    let pool = if detail {
        json!({"name": HOST, "capabilities": pool_capabilities(&s).await?})
    } else {
        json!({"name": HOST})
    };
    Ok(json_response(StatusCode::OK, &json!({"pools": [pool]})))
}

async fn capabilities(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(host): Path<String>,
) -> VolumeResult<Response> {
    authorize(&s, &ctx, "volume_extension:capabilities", &own_target(&ctx))?;
    if host != "yunhe@file" && host != HOST {
        return Err(VolumeError::NotFound(format!(
            "Service {host} could not be found."
        )));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "namespace": "OS::Storage::Capabilities::yunhe@file",
            "vendor_name": "yunhe",
            "volume_backend_name": "file",
            "pool_name": "file",
            "driver_version": env!("CARGO_PKG_VERSION"),
            "storage_protocol": "file",
            "display_name": "yunhe file backend",
            "description": "Sparse files with reflink or sparse copies",
            "visibility": "public",
            "replication_targets": [],
            "properties": {"thin_provisioning": {"title": "Thin Provisioning", "description": "Sets thin provisioning.", "type": "boolean"}},
        }),
    ))
}

async fn extensions(Auth(_ctx): Auth) -> VolumeResult<Response> {
    let ext = |alias: &str, name: &str, description: &str| {
        json!({"alias": alias, "name": name, "description": description,
               "namespace": "https://docs.openstack.org/volume/api/v3", "updated": "2024-01-01T00:00:00+00:00", "links": []})
    };
    let list = vec![
        ext(
            "os-availability-zone",
            "AvailabilityZones",
            "Describe Availability Zones.",
        ),
        ext(
            "os-extended-snapshot-attributes",
            "ExtendedSnapshotAttributes",
            "Extended SnapshotAttributes support.",
        ),
        ext("os-quota-sets", "Quotas", "Quota management support."),
        ext(
            "os-quota-class-sets",
            "QuotaClasses",
            "Quota classes management support.",
        ),
        ext("os-services", "Services", "Services support."),
        ext("os-types-manage", "TypesManage", "Types manage support."),
        ext(
            "os-types-extra-specs",
            "TypesExtraSpecs",
            "Type extra specs support.",
        ),
        ext(
            "os-volume-type-access",
            "VolumeTypeAccess",
            "Volume type access support.",
        ),
        ext("qos-specs", "Qos_specs_manage", "QoS specs support."),
        ext(
            "os-vol-tenant-attr",
            "VolumeTenantAttribute",
            "Expose the internal project_id as an attribute of a volume.",
        ),
        ext(
            "os-vol-host-attr",
            "VolumeHostAttribute",
            "Expose host as an attribute of a volume.",
        ),
        ext(
            "os-vol-image-meta",
            "VolumeImageMetadata",
            "Show image metadata associated with the volume.",
        ),
        ext(
            "os-vol-mig-status-attr",
            "VolumeMigStatusAttribute",
            "Expose migration_status as an attribute of a volume.",
        ),
        ext(
            "os-volume-actions",
            "VolumeActions",
            "Enable volume actions.",
        ),
        ext("os-admin-actions", "AdminActions", "Enable admin actions."),
        ext(
            "scheduler-stats",
            "Scheduler_stats",
            "Scheduler stats support.",
        ),
        ext("capabilities", "Capabilities", "Capabilities support."),
    ];
    Ok(json_response(StatusCode::OK, &json!({"extensions": list})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_bodies_name_what_they_give() {
        let req: ServiceBody = serde_json::from_value(
            json!({"host": "h", "binary": null, "backend_id": 3, "disabled_reason": 5}),
        )
        .expect("accepted");
        assert_eq!(
            req.given().collect::<Vec<_>>(),
            ["binary", "host", "disabled_reason", "backend_id"]
        );
        assert!(matches!(req.disabled_reason, Some(Some(AnyText(None)))));
        assert!(serde_json::from_value::<ServiceBody>(json!({"bogus": 1})).is_err());
    }
}
