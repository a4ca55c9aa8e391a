//! Availability zones, services, the backend's pool (scheduler stats),
//! capabilities and extensions: what the one host offers.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use super::backend::GIB;
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
    let all = [
        ("cinder-scheduler", "yunhe"),
        ("cinder-volume", "yunhe@file"),
        ("cinder-backup", "yunhe"),
    ];
    let list: Vec<ServiceView> = all
        .iter()
        .filter(|(binary, host)| {
            q.get("binary").is_none_or(|b| b == binary) && q.get("host").is_none_or(|h| h == host)
        })
        .map(|(binary, host)| ServiceView {
            binary,
            host,
            zone: "nova",
            status: "enabled",
            state: "up",
            updated_at: now.clone(),
            disabled_reason: None,
            frozen: false,
            replication_status: "disabled",
            active_backend_id: None,
            cluster: mv.at_least(7).then_some(None),
            backend_state: (*binary == "cinder-volume").then_some("up"),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"services": list})))
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
