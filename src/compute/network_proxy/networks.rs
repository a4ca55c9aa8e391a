//! Nova's `os-networks` and `os-tenant-networks` proxies (below 2.36):
//! Neutron's networks as Nova showed them; creating and changing them is
//! gone.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::{S, caller, from_network, proxy_allowed, proxy_available};
use crate::compute::{ComputeError, ComputeResult, Mv};
use crate::http::json_response;
use crate::identity::Auth;
use crate::network::model::Network;
use crate::network::{self, Caller, store};

/// A network as Nova's `os-networks` shows one from Neutron: the id and
/// label; the nova-network fields are null (admins see the admin fields,
/// null too).
pub(super) fn network_view(net: &Network, admin: bool) -> Value {
    const FIELDS: &[&str] = &[
        "cidr",
        "netmask",
        "gateway",
        "broadcast",
        "dns1",
        "dns2",
        "cidr_v6",
        "gateway_v6",
        "netmask_v6",
    ];
    const ADMIN_FIELDS: &[&str] = &[
        "created_at",
        "updated_at",
        "deleted_at",
        "deleted",
        "injected",
        "bridge",
        "vlan",
        "vpn_public_address",
        "vpn_public_port",
        "vpn_private_address",
        "dhcp_start",
        "project_id",
        "host",
        "bridge_interface",
        "multi_host",
        "priority",
        "rxtx_base",
        "mtu",
        "dhcp_server",
        "enable_dhcp",
        "share_address",
    ];
    let mut out = Map::new();
    out.insert("id".into(), json!(net.std.id));
    out.insert("label".into(), json!(net.name));
    for f in FIELDS {
        out.insert((*f).into(), Value::Null);
    }
    if admin {
        for f in ADMIN_FIELDS {
            out.insert((*f).into(), Value::Null);
        }
    }
    Value::Object(out)
}

/// The networks the caller sees (`own`: only its project's and the shared
/// ones, as os-tenant-networks).
pub(super) fn visible_networks(
    conn: &Connection,
    c: &Caller,
    own: bool,
) -> ComputeResult<Vec<Network>> {
    let nets: Vec<Network> = store::all(conn).map_err(from_network)?;
    let mut out = Vec::new();
    for n in nets {
        if own && n.std.project_id != c.project && !n.shared {
            continue;
        }
        if network::visible_network(conn, c, &n.std.id).is_ok() {
            out.push(n);
        }
    }
    Ok(out)
}

pub(super) fn network_not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Network {id} could not be found."))
}

pub(super) async fn network_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-networks:list")?;
    let c = caller(&s, &ctx);
    let admin = crate::compute::is_admin_context(&s, &ctx);
    let list = s
        .read(move |conn| {
            Ok(visible_networks(conn, &c, false)?
                .iter()
                .map(|n| network_view(n, admin))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"networks": list})))
}

pub(super) async fn network_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-networks:show")?;
    let c = caller(&s, &ctx);
    let admin = crate::compute::is_admin_context(&s, &ctx);
    let view = s
        .read(move |conn| {
            let net =
                network::visible_network(conn, &c, &id).map_err(|_| network_not_found(&id))?;
            Ok(network_view(&net, admin))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"network": view})))
}

/// os-tenant-networks' view (Nova's `network_dict`: the cidr is the text
/// `None` for a Neutron network).
pub(super) fn tenant_network_view(net: &Network) -> Value {
    json!({"id": net.std.id, "label": net.name, "cidr": "None"})
}

pub(super) async fn tenant_network_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-tenant-networks:list")?;
    let c = caller(&s, &ctx);
    let list = s
        .read(move |conn| {
            Ok(visible_networks(conn, &c, true)?
                .iter()
                .map(tenant_network_view)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"networks": list})))
}

pub(super) async fn tenant_network_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-tenant-networks:show")?;
    let c = caller(&s, &ctx);
    let view = s
        .read(move |conn| {
            let net = visible_networks(conn, &c, true)?
                .into_iter()
                .find(|n| n.std.id == id)
                .ok_or_else(|| network_not_found(&id))?;
            Ok(tenant_network_view(&net))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"network": view})))
}

/// What Nova answers for nova-network's admin actions (create, delete,
/// add, associate) since nova-network was removed: 410.
pub(super) fn gone() -> ComputeResult<Response> {
    Err(ComputeError::Gone(
        "This API is no longer supported: nova-network was removed; use the Network service."
            .into(),
    ))
}

pub(super) async fn network_gone(Auth(_): Auth, mv: Mv) -> ComputeResult<Response> {
    proxy_available(mv)?;
    gone()
}

pub(super) async fn network_gone_id(
    Auth(_): Auth,
    mv: Mv,
    Path(_id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    gone()
}
