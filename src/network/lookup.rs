//! Lookups several resource modules need (who sees a network, which floating
//! IPs hang on a port, a network or a router interface). Imports only
//! `model`, `store` and `rbac`, so the resource modules call it instead of
//! each other.

use rusqlite::Connection;

use super::model::*;
use super::{Caller, NetResult, NetworkError, store};

/// The projects a network is shared with through RBAC (`*`: all).
pub fn rbac_targets(conn: &Connection, network_id: &str) -> NetResult<Vec<String>> {
    super::rbac::targets(conn, "network", network_id, "access_as_shared")
}

/// Whether the caller sees the network (owner, admin, shared, external,
/// or shared with its project through RBAC).
pub fn visible(caller: &Caller, net: &Network, rbac: &[String]) -> bool {
    caller.admin
        || net.std.project_id == caller.project
        || net.shared
        || net.external
        || rbac.iter().any(|t| t == "*" || *t == caller.project)
}

/// A network the caller may see, else 404.
pub fn visible_network(conn: &Connection, caller: &Caller, id: &str) -> NetResult<Network> {
    let net: Network = store::must(conn, id)?;
    let rbac = rbac_targets(conn, id)?;
    if visible(caller, &net, &rbac) {
        Ok(net)
    } else {
        Err(store::not_found::<Network>(id))
    }
}

/// Disassociates the floating IPs of a port being deleted.
pub fn disassociate_port(conn: &Connection, port_id: &str) -> NetResult<()> {
    for mut f in store::all::<FloatingIp>(conn)? {
        if f.port_id.as_deref() == Some(port_id) {
            f.port_id = None;
            f.fixed_ip_address = None;
            f.router_id = None;
            f.status = "DOWN".into();
            store::save(conn, &mut f)?;
        }
    }
    Ok(())
}

/// Refuses to detach a router from subnets its floating IPs go through.
pub fn check_interface_unused(
    conn: &Connection,
    router_id: &str,
    subnets: &[String],
) -> NetResult<()> {
    for f in store::all::<FloatingIp>(conn)? {
        if f.router_id.as_deref() != Some(router_id) {
            continue;
        }
        let Some(pid) = &f.port_id else { continue };
        let Some(port) = store::load::<Port>(conn, pid)? else {
            continue;
        };
        if let Some(fixed) = port.fixed_ips.iter().find(|x| {
            Some(&x.ip_address) == f.fixed_ip_address.as_ref() && subnets.contains(&x.subnet_id)
        }) {
            return Err(NetworkError::conflict(
                "RouterInterfaceInUseByFloatingIP",
                format!(
                    "Router interface for subnet {} on router {router_id} cannot be deleted, as it is required by one or more floating IPs.",
                    fixed.subnet_id
                ),
            ));
        }
    }
    Ok(())
}
