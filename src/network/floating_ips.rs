//! Floating IPs (`/v2.0/floatingips`): an address of an external network,
//! associated with a port whose subnet is attached to a router that has
//! its gateway on that network.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::Value;

use super::ipam;
use super::model::*;
use super::ports;
use super::routers;
use super::store::{self, Kind, Std};
use super::{
    Caller, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision, query,
    quotas, revision_constraint,
};
use crate::db::network as db;
use crate::http::body::Object;
use crate::identity::Auth;
use crate::policy::Target;

impl Kind for FloatingIp {
    const KIND: &'static str = "floatingip";
    const NOT_FOUND: &'static str = "FloatingIPNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn parent(&self) -> Option<&str> {
        Some(&self.floating_network_id)
    }
    fn not_found_message(id: &str) -> String {
        format!("Floating IP {id} could not be found")
    }
}

/// A floating IP the caller may see (its project's, or any for admins),
/// else 404.
pub fn visible(conn: &Connection, caller: &Caller, id: &str) -> NetResult<FloatingIp> {
    let f: FloatingIp = store::must(conn, id)?;
    if caller.admin || f.std.project_id == caller.project {
        Ok(f)
    } else {
        Err(store::not_found::<FloatingIp>(id))
    }
}

/// Associates `f` with a port (and one of its IPv4 addresses), finding the
/// router that connects the port's subnet to the floating network.
fn associate(
    conn: &Connection,
    caller: &Caller,
    f: &mut FloatingIp,
    port_id: &str,
    fixed: Option<String>,
) -> NetResult<()> {
    let port = ports::visible_port(conn, caller, port_id)?;
    if port.std.project_id != f.std.project_id && !caller.admin {
        return Err(store::not_found::<Port>(port_id));
    }
    if port.device_owner.starts_with("network:") {
        return Err(NetworkError::bad(format!(
            "Bad floatingip request: Port {port_id} has owner {} and therefore cannot be assigned to a floating IP.",
            port.device_owner
        )));
    }
    let v4: Vec<_> = port
        .fixed_ips
        .iter()
        .filter(|x| ipam::parse_ip(&x.ip_address).is_some_and(|i| i.is_ipv4()))
        .collect();
    let chosen = match &fixed {
        Some(ip) => v4
            .iter()
            .find(|x| &x.ip_address == ip)
            .copied()
            .ok_or_else(|| {
                NetworkError::bad(format!(
                    "Bad floatingip request: Port {port_id} does not have fixed ip {ip}."
                ))
            })?,
        None if v4.len() == 1 => v4[0],
        None if v4.is_empty() => {
            return Err(NetworkError::bad(format!(
                "Bad floatingip request: Port {port_id} does not have any IPv4 address. Can not associate with a floating IP."
            )));
        }
        None => {
            return Err(NetworkError::bad(format!(
                "Bad floatingip request: Port {port_id} has multiple fixed IPv4 addresses. Must provide a specific IPv4 address when assigning a floating IP."
            )));
        }
    };
    let others: Vec<FloatingIp> = store::all(conn)?;
    if let Some(o) = others.iter().find(|o| {
        o.std.id != f.std.id
            && o.port_id.as_deref() == Some(port_id)
            && o.fixed_ip_address.as_deref() == Some(chosen.ip_address.as_str())
    }) {
        return Err(NetworkError::conflict(
            "FloatingIPPortAlreadyAssociated",
            format!(
                "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {}, as that fixed IP already has a floating IP on external network {}.",
                f.floating_ip_address, f.std.id, chosen.ip_address, o.floating_network_id
            ),
        ));
    }
    // A router with its gateway on the floating network and an interface
    // on the port's subnet.
    let routers: Vec<Router> = store::all(conn)?;
    let router = routers.iter().find(|r| {
        r.external_gateway_info
            .as_ref()
            .is_some_and(|g| g.network_id == f.floating_network_id)
            && routers::router_ports(conn, &r.std.id, OWNER_INTERFACE).is_ok_and(|ps| {
                ps.iter()
                    .any(|p| p.fixed_ips.iter().any(|x| x.subnet_id == chosen.subnet_id))
            })
    });
    let Some(router) = router else {
        return Err(NetworkError::not_found(
            "ExternalGatewayForFloatingIPNotFound",
            format!(
                "External network {} is not reachable from subnet {}.  Therefore, cannot associate Port {port_id} with a Floating IP.",
                f.floating_network_id, chosen.subnet_id
            ),
        ));
    };
    f.port_id = Some(port.std.id.clone());
    f.fixed_ip_address = Some(chosen.ip_address.clone());
    f.router_id = Some(router.std.id.clone());
    f.status = "ACTIVE".into();
    Ok(())
}

fn disassociate(f: &mut FloatingIp) {
    f.port_id = None;
    f.fixed_ip_address = None;
    f.router_id = None;
    f.status = "DOWN".into();
}

const CREATE_ATTRS: &[&str] = &[
    "floating_network_id",
    "floating_ip_address",
    "subnet_id",
    "port_id",
    "fixed_ip_address",
    "description",
    "project_id",
    "tenant_id",
    "dns_domain",
    "dns_name",
    "qos_policy_id",
];

/// Allocates a floating IP in an open transaction (policy, quota, the
/// address), as `POST /floatingips`.
pub fn create_in(conn: &Connection, caller: &Caller, body: &Object) -> NetResult<FloatingIp> {
    attrs::known(body, CREATE_ATTRS)?;
    let project = caller.owner_for(body)?;
    let target = Target::project(project.clone());
    caller.enforce("create_floatingip", &target)?;
    let net_id = attrs::uuid(body, "floating_network_id")?.ok_or_else(|| {
        NetworkError::bad(
            "Failed to parse request. Required attribute 'floating_network_id' not specified",
        )
    })?;
    let net: Network = super::lookup::visible_network(conn, caller, &net_id)?;
    if !net.external {
        return Err(NetworkError::bad(format!(
            "Bad floatingip request: Network {net_id} is not a valid external network."
        )));
    }
    let wanted_ip = attrs::string(body, "floating_ip_address", 64)?;
    if wanted_ip.is_some() {
        caller.enforce("create_floatingip:floating_ip_address", &target)?;
    }
    let subnet_id = attrs::uuid(body, "subnet_id")?;
    quotas::check(conn, &project, "floatingip", 1)?;
    let mut std = Std::new(
        &project,
        attrs::string(body, "description", attrs::DESCRIPTION_MAX)?.unwrap_or_default(),
    );
    let id = std.id.clone();
    let subnets: Vec<Subnet> = store::children(conn, &net_id)?;
    let candidates: Vec<&Subnet> = subnets
        .iter()
        .filter(|s| s.ip_version == 4 && subnet_id.as_ref().is_none_or(|w| *w == s.std.id))
        .collect();
    if let Some(w) = &subnet_id
        && candidates.is_empty()
    {
        return Err(NetworkError::bad(format!(
            "Bad floatingip request: Subnet {w} is not an IPv4 subnet of network {net_id}."
        )));
    }
    let mut address = None;
    match &wanted_ip {
        Some(text) => {
            let ip = ipam::parse_ip(text).ok_or_else(|| {
                NetworkError::invalid(
                    "floating_ip_address",
                    format!("'{text}' is not a valid IP address"),
                )
            })?;
            let sn = candidates
                .iter()
                .find(|s| s.cidr().is_ok_and(|c| c.contains(ip)))
                .ok_or_else(|| NetworkError::BadRequest {
                    kind: "InvalidIpForNetwork",
                    message: format!("IP address {ip} is not a valid IP for any of the subnets on the specified network."),
                })?;
            address = Some(ports::allocate(conn, sn, Some(ip), &id, "")?.ip_address);
        }
        None => {
            for sn in &candidates {
                match ports::allocate(conn, sn, None, &id, "") {
                    Ok(f) => {
                        address = Some(f.ip_address);
                        break;
                    }
                    Err(NetworkError::Conflict {
                        kind: "IpAddressGenerationFailure",
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let address = address.ok_or_else(|| {
        NetworkError::conflict(
            "IpAddressGenerationFailure",
            format!("No more IP addresses available on network {net_id}."),
        )
    })?;
    std.id = id;
    let mut f = FloatingIp {
        std,
        floating_ip_address: address,
        floating_network_id: net_id,
        router_id: None,
        port_id: None,
        fixed_ip_address: None,
        status: "DOWN".into(),
        dns_domain: String::new(),
        dns_name: String::new(),
        port_forwardings: Vec::new(),
    };
    if let Some(pid) = attrs::string(body, "port_id", 64)? {
        let fixed = attrs::string(body, "fixed_ip_address", 64)?;
        associate(conn, caller, &mut f, &pid, fixed)?;
    }
    store::insert(conn, &f)?;
    Ok(f)
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "floatingip")?;
    let f = s.write(move |tx| create_in(tx, &caller, &body)).await?;
    Ok(query::respond_one(
        store::to_value(&f)?,
        &Default::default(),
        "floatingip",
        StatusCode::CREATED,
    ))
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let items = s
        .read(move |conn| {
            let all: Vec<FloatingIp> = store::all(conn)?;
            all.iter()
                .filter(|f| caller.admin || f.std.project_id == caller.project)
                .map(store::to_value)
                .collect()
        })
        .await?;
    let base = format!("{}/network/v2.0/floatingips", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "floatingips", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let f = s.read(move |conn| visible(conn, &caller, &id)).await?;
    Ok(query::respond_one(
        store::to_value(&f)?,
        &query::ListQuery::new(raw),
        "floatingip",
        StatusCode::OK,
    ))
}

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "floatingip")?;
    attrs::known(
        &body,
        &[
            "port_id",
            "fixed_ip_address",
            "description",
            "qos_policy_id",
        ],
    )?;
    let expected = revision_constraint(&headers)?;
    let f = s
        .write(move |tx| {
            let mut f = visible(tx, &caller, &id)?;
            caller.enforce(
                "update_floatingip",
                &Target::project(f.std.project_id.clone()),
            )?;
            check_revision(expected, f.std.revision_number)?;
            if let Some(d) = attrs::string(&body, "description", attrs::DESCRIPTION_MAX)? {
                f.std.description = d;
            }
            match body.get("port_id") {
                None => {
                    if let Some(fixed) = attrs::string(&body, "fixed_ip_address", 64)?
                        && let Some(pid) = f.port_id.clone()
                    {
                        associate(tx, &caller, &mut f, &pid, Some(fixed))?;
                    }
                }
                Some(Value::Null) => disassociate(&mut f),
                Some(Value::String(pid)) => {
                    let fixed = attrs::string(&body, "fixed_ip_address", 64)?;
                    associate(tx, &caller, &mut f, pid, fixed)?;
                }
                Some(other) => {
                    return Err(NetworkError::invalid(
                        "port_id",
                        format!("'{other}' is not a valid UUID"),
                    ));
                }
            }
            store::save(tx, &mut f)?;
            Ok(f)
        })
        .await?;
    Ok(query::respond_one(
        store::to_value(&f)?,
        &Default::default(),
        "floatingip",
        StatusCode::OK,
    ))
}

/// Points a floating IP at a port (and one of its fixed IPv4 addresses) or,
/// with `None`, at nothing, in an open transaction, as
/// `PUT /floatingips/{id}` with `port_id`.
pub fn set_port_in(
    conn: &Connection,
    caller: &Caller,
    id: &str,
    port: Option<(&str, Option<String>)>,
) -> NetResult<FloatingIp> {
    let mut f = visible(conn, caller, id)?;
    caller.enforce(
        "update_floatingip",
        &Target::project(f.std.project_id.clone()),
    )?;
    match port {
        Some((port_id, fixed)) => associate(conn, caller, &mut f, port_id, fixed)?,
        None => disassociate(&mut f),
    }
    store::save(conn, &mut f)?;
    Ok(f)
}

/// Releases every floating IP of an external network being deleted (as
/// Neutron does; the network's delete is what was authorized). An associated
/// one cannot be left: its router's gateway port keeps the network in use.
pub fn delete_on_network_in(conn: &Connection, network_id: &str) -> NetResult<()> {
    for f in store::children::<FloatingIp>(conn, network_id)? {
        db::release_ips(conn, &f.std.id)?;
        store::remove::<FloatingIp>(conn, &f.std.id)?;
    }
    Ok(())
}

/// Releases a floating IP in an open transaction, as
/// `DELETE /floatingips/{id}`.
pub fn delete_in(conn: &Connection, caller: &Caller, id: &str) -> NetResult<()> {
    let f = visible(conn, caller, id)?;
    caller.enforce(
        "delete_floatingip",
        &Target::project(f.std.project_id.clone()),
    )?;
    db::release_ips(conn, &f.std.id)?;
    store::remove::<FloatingIp>(conn, &f.std.id)
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| delete_in(tx, &caller, &id)).await?;
    Ok(crate::http::no_content())
}
