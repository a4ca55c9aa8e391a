//! Networks (`/v2.0/networks`) and network IP availability.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::model::*;
use super::store::{self, Kind, Std};
use super::{
    Caller, CreateBody, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision,
    create_body, query, quotas, revision_constraint,
};
use crate::identity::Auth;
use crate::policy::Target;

/// The MTU of every network type yunhe has (no tunnel overhead).
pub const MAX_MTU: i64 = 1500;

impl Kind for Network {
    const KIND: &'static str = "network";
    const NOT_FOUND: &'static str = "NetworkNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn not_found_message(id: &str) -> String {
        format!("Network {id} could not be found.")
    }
}

/// The view of a network for a caller: `subnets`, and the provider
/// attributes only for who may read them.
pub fn view(
    caller: &Caller,
    net: &Network,
    subnets: Vec<String>,
    rbac: &[String],
) -> NetResult<Value> {
    let mut v = store::to_value(net)?;
    if let Value::Object(map) = &mut v {
        map.insert("subnets".into(), json!(subnets));
        if !net.shared && rbac.iter().any(|t| t == "*" || *t == caller.project) {
            map.insert("shared".into(), json!(true));
        }
        let target = Target::project(net.std.project_id.clone());
        if !caller.allows("get_network:provider:network_type", &target) {
            map.remove("provider:network_type");
            map.remove("provider:physical_network");
            map.remove("provider:segmentation_id");
        }
    }
    Ok(v)
}

const CREATE_ATTRS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
    "mtu",
    "port_security_enabled",
    "availability_zone_hints",
    "project_id",
    "tenant_id",
    "is_default",
    "dns_domain",
    "qos_policy_id",
];

fn zone_hints(body: &Object) -> NetResult<Option<Vec<String>>> {
    let hints = attrs::string_list(body, "availability_zone_hints", 16)?;
    if let Some(hints) = &hints {
        for h in hints {
            if h != ZONE {
                return Err(NetworkError::not_found(
                    "AvailabilityZoneNotFound",
                    format!("AvailabilityZone {h} could not be found."),
                ));
            }
        }
    }
    Ok(hints)
}

use crate::http::body::Object;

fn check_mtu(mtu: i64) -> NetResult<i64> {
    if mtu > MAX_MTU {
        return Err(NetworkError::invalid(
            "mtu",
            format!("Requested MTU is too big, maximum is {MAX_MTU}"),
        ));
    }
    Ok(mtu)
}

/// Checks the provider attributes and chooses a segment (a free VLAN id
/// when none is given).
fn provider(
    conn: &Connection,
    body: &Object,
    caller: &Caller,
    project: &str,
) -> NetResult<(String, Option<String>, Option<i64>)> {
    let ty = attrs::string(body, "provider:network_type", 32)?;
    let phys = attrs::string(body, "provider:physical_network", 64)?;
    let seg = attrs::integer(body, "provider:segmentation_id", 0, i64::from(u32::MAX))?;
    if ty.is_none() && phys.is_none() && seg.is_none() {
        return Ok(("local".into(), None, None));
    }
    caller.enforce(
        "create_network:provider:network_type",
        &Target::project(project.to_string()),
    )?;
    let ty =
        ty.ok_or_else(|| NetworkError::invalid("provider:network_type", "network_type required"))?;
    let others: Vec<Network> = store::all(conn)?;
    match ty.as_str() {
        "local" => {
            if phys.is_some() || seg.is_some() {
                return Err(NetworkError::bad(
                    "Invalid input for operation: provider:physical_network and provider:segmentation_id prohibited for local provider network.",
                ));
            }
            Ok((ty, None, None))
        }
        "flat" => {
            let phys = phys.ok_or_else(|| {
                NetworkError::bad(
                    "Invalid input for operation: physical_network required for flat provider network.",
                )
            })?;
            if seg.is_some() {
                return Err(NetworkError::bad(
                    "Invalid input for operation: segmentation_id prohibited for flat provider network.",
                ));
            }
            if others
                .iter()
                .any(|n| n.network_type == "flat" && n.physical_network.as_deref() == Some(&phys))
            {
                return Err(NetworkError::conflict(
                    "FlatNetworkInUse",
                    format!(
                        "Unable to create the flat network. Physical network {phys} is in use."
                    ),
                ));
            }
            Ok((ty, Some(phys), None))
        }
        "vlan" => {
            let phys = phys.ok_or_else(|| {
                NetworkError::bad(
                    "Invalid input for operation: physical_network required for VLAN provider network.",
                )
            })?;
            let used: Vec<i64> = others
                .iter()
                .filter(|n| {
                    n.network_type == "vlan" && n.physical_network.as_deref() == Some(&phys)
                })
                .filter_map(|n| n.segmentation_id)
                .collect();
            let seg = match seg {
                Some(s) if !(1..=4094).contains(&s) => {
                    return Err(NetworkError::bad(format!(
                        "Invalid input for operation: segmentation_id out of range (1 through 4094): {s}."
                    )));
                }
                Some(s) if used.contains(&s) => {
                    return Err(NetworkError::conflict(
                        "VlanIdInUse",
                        format!("Unable to create the network. The VLAN {s} on physical network {phys} is in use."),
                    ));
                }
                Some(s) => s,
                None => (1..=4094).find(|s| !used.contains(s)).ok_or_else(|| {
                    NetworkError::conflict(
                        "NoNetworkAvailable",
                        "Unable to create the network. No tenant network is available for allocation.",
                    )
                })?,
            };
            Ok((ty, Some(phys), Some(seg)))
        }
        other => Err(NetworkError::invalid(
            "provider:network_type",
            format!("network_type value '{other}' not supported"),
        )),
    }
}

/// Makes a network in an open transaction (also used at start-up by a
/// later dataplane to create `public`/`private`).
pub fn create_network_in(conn: &Connection, caller: &Caller, body: &Object) -> NetResult<Network> {
    attrs::known(body, CREATE_ATTRS)?;
    let project = caller.owner_for(body)?;
    let target = Target::project(project.clone());
    caller.enforce("create_network", &target)?;
    let (name, description) = attrs::name_description(body)?;
    let shared = attrs::boolean(body, "shared")?.unwrap_or(false);
    if shared {
        caller.enforce("create_network:shared", &target)?;
    }
    let external = attrs::boolean(body, "router:external")?.unwrap_or(false);
    if external {
        caller.enforce("create_network:router:external", &target)?;
    }
    let is_default = attrs::boolean(body, "is_default")?.unwrap_or(false);
    if is_default {
        caller.enforce("create_network:is_default", &target)?;
    }
    let mtu = attrs::integer(body, "mtu", 68, i64::from(u32::MAX))?
        .map(check_mtu)
        .transpose()?
        .unwrap_or(MAX_MTU);
    let hints = zone_hints(body)?.unwrap_or_default();
    let (network_type, physical_network, segmentation_id) = provider(conn, body, caller, &project)?;
    quotas::check(conn, &project, "network", 1)?;
    let net = Network {
        std: Std::new(&project, description.unwrap_or_default()),
        name: name.unwrap_or_default(),
        admin_state_up: attrs::boolean(body, "admin_state_up")?.unwrap_or(true),
        status: "ACTIVE".into(),
        shared,
        external,
        network_type,
        physical_network,
        segmentation_id,
        mtu,
        port_security_enabled: attrs::boolean(body, "port_security_enabled")?.unwrap_or(true),
        availability_zone_hints: hints,
        availability_zones: vec![ZONE.into()],
        is_default,
        ipv4_address_scope: None,
        ipv6_address_scope: None,
        l2_adjacency: true,
    };
    store::insert(conn, &net)?;
    Ok(net)
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = match create_body(&bytes, "network", "networks")? {
        CreateBody::One(body) => body,
        CreateBody::Bulk(bodies) => {
            let c = caller.clone();
            let nets = s
                .write(move |tx| {
                    bodies
                        .iter()
                        .map(|b| create_network_in(tx, &c, b))
                        .collect::<NetResult<Vec<_>>>()
                })
                .await?;
            let views = nets
                .iter()
                .map(|n| view(&caller, n, Vec::new(), &[]))
                .collect::<NetResult<Vec<_>>>()?;
            return Ok(query::respond_many(views, "networks", StatusCode::CREATED));
        }
    };
    let c = caller.clone();
    let net = s.write(move |tx| create_network_in(tx, &c, &body)).await?;
    let v = view(&caller, &net, Vec::new(), &[])?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "network",
        StatusCode::CREATED,
    ))
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    caller
        .enforce("get_network", &Target::project(caller.project.clone()))
        .or_else(|e| {
            if caller.project.is_empty() {
                Err(e)
            } else {
                Ok(())
            }
        })?;
    let c = caller.clone();
    let items = s
        .read(move |conn| {
            let nets: Vec<Network> = store::all(conn)?;
            let subnets: Vec<Subnet> = store::all(conn)?;
            let mut out = Vec::new();
            for net in &nets {
                let rbac = super::lookup::rbac_targets(conn, &net.std.id)?;
                if !super::lookup::visible(&c, net, &rbac) {
                    continue;
                }
                let ids = subnets
                    .iter()
                    .filter(|sn| sn.network_id == net.std.id)
                    .map(|sn| sn.std.id.clone())
                    .collect();
                out.push(view(&c, net, ids, &rbac)?);
            }
            Ok(out)
        })
        .await?;
    let base = format!("{}/network/v2.0/networks", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "networks", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let c = caller.clone();
    let v = s
        .read(move |conn| {
            let net = super::lookup::visible_network(conn, &c, &id)?;
            let rbac = super::lookup::rbac_targets(conn, &id)?;
            let subnets: Vec<Subnet> = store::children(conn, &id)?;
            view(
                &c,
                &net,
                subnets.into_iter().map(|s| s.std.id).collect(),
                &rbac,
            )
        })
        .await?;
    Ok(query::respond_one(
        v,
        &query::ListQuery::new(raw),
        "network",
        StatusCode::OK,
    ))
}

const UPDATE_ATTRS: &[&str] = &[
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "mtu",
    "port_security_enabled",
    "is_default",
    "dns_domain",
    "qos_policy_id",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
];

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "network")?;
    attrs::known(&body, UPDATE_ATTRS)?;
    let expected = revision_constraint(&headers)?;
    let c = caller.clone();
    let v = s
        .write(move |tx| {
            let mut net = super::lookup::visible_network(tx, &c, &id)?;
            let target = Target::project(net.std.project_id.clone());
            c.enforce("update_network", &target)
                .map_err(|_| store::not_found::<Network>(&id).or_forbidden(&c, &net))?;
            check_revision(expected, net.std.revision_number)?;
            for key in ["provider:network_type", "provider:physical_network", "provider:segmentation_id"] {
                if body.contains_key(key) {
                    c.enforce(&format!("update_network:{key}"), &target)?;
                    return Err(NetworkError::bad(
                        "Invalid input for operation: Plugin does not support updating provider attributes.",
                    ));
                }
            }
            let (name, description) = attrs::name_description(&body)?;
            if let Some(n) = name {
                net.name = n;
            }
            if let Some(d) = description {
                net.std.description = d;
            }
            if let Some(b) = attrs::boolean(&body, "admin_state_up")? {
                net.admin_state_up = b;
            }
            if let Some(b) = attrs::boolean(&body, "shared")? {
                c.enforce("update_network:shared", &target)?;
                if !b && net.shared {
                    in_use_by_others(tx, &net)?;
                }
                net.shared = b;
            }
            if let Some(b) = attrs::boolean(&body, "router:external")? {
                c.enforce("update_network:router:external", &target)?;
                net.external = b;
            }
            if let Some(b) = attrs::boolean(&body, "is_default")? {
                c.enforce("update_network:is_default", &target)?;
                net.is_default = b;
            }
            if let Some(m) = attrs::integer(&body, "mtu", 68, i64::from(u32::MAX))? {
                net.mtu = check_mtu(m)?;
            }
            if let Some(b) = attrs::boolean(&body, "port_security_enabled")? {
                net.port_security_enabled = b;
            }
            store::save(tx, &mut net)?;
            let rbac = super::lookup::rbac_targets(tx, &id)?;
            let subnets: Vec<Subnet> = store::children(tx, &id)?;
            view(&c, &net, subnets.into_iter().map(|s| s.std.id).collect(), &rbac)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "network",
        StatusCode::OK,
    ))
}

trait OrForbidden {
    fn or_forbidden(self, caller: &Caller, net: &Network) -> NetworkError;
}

impl OrForbidden for NetworkError {
    /// Owners and readers of a shared network get 403, strangers 404.
    fn or_forbidden(self, caller: &Caller, net: &Network) -> NetworkError {
        if net.std.project_id == caller.project || net.shared || net.external {
            NetworkError::Forbidden("rule:update_network is disallowed by policy".into())
        } else {
            self
        }
    }
}

/// Refuses to unshare a network other projects have ports on.
fn in_use_by_others(conn: &Connection, net: &Network) -> NetResult<()> {
    let ports: Vec<Port> = store::children(conn, &net.std.id)?;
    if ports
        .iter()
        .any(|p| p.std.project_id != net.std.project_id && !p.device_owner.starts_with("network:"))
    {
        return Err(NetworkError::conflict(
            "InvalidSharedSetting",
            format!(
                "Unable to reconfigure sharing settings for network {}. Multiple tenants are using it.",
                net.std.id
            ),
        ));
    }
    Ok(())
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let net = super::lookup::visible_network(tx, &caller, &id)?;
        let target = Target::project(net.std.project_id.clone());
        if !caller.allows("delete_network", &target) {
            return Err(if net.std.project_id == caller.project {
                NetworkError::Forbidden("rule:delete_network is disallowed by policy".into())
            } else {
                store::not_found::<Network>(&id)
            });
        }
        delete_network_in(tx, &net)
    })
    .await?;
    Ok(crate::http::no_content())
}

/// Deletes a network with its subnets and floating IPs; refused while ports
/// (other than the network's own DHCP ports) use it.
pub fn delete_network_in(conn: &Connection, net: &Network) -> NetResult<()> {
    let ports: Vec<Port> = store::children(conn, &net.std.id)?;
    if ports
        .iter()
        .any(|p| !p.device_owner.starts_with("network:dhcp"))
    {
        return Err(NetworkError::conflict(
            "NetworkInUse",
            format!(
                "Unable to complete operation on network {}. There are one or more ports still in use on the network.",
                net.std.id
            ),
        ));
    }
    // Its floating IPs go with it (associated ones keep a router gateway port
    // here, refused above).
    super::floating_ips::delete_on_network_in(conn, &net.std.id)?;
    for p in ports {
        super::ports::delete_port_in(conn, &p)?;
    }
    let subnets: Vec<Subnet> = store::children(conn, &net.std.id)?;
    for sn in subnets {
        super::subnets::delete_subnet_in(conn, &sn)?;
    }
    super::rbac::delete_for_object(conn, &net.std.id)?;
    store::remove::<Network>(conn, &net.std.id)
}

// ------------------------------------------------ network IP availability

fn availability(conn: &Connection, net: &Network) -> NetResult<Value> {
    let subnets: Vec<Subnet> = store::children(conn, &net.std.id)?;
    let mut total: u128 = 0;
    let mut used: u128 = 0;
    let mut per = Vec::new();
    for sn in &subnets {
        let cidr = super::ipam::Cidr::parse(&sn.cidr, false).map_err(NetworkError::bad)?;
        let size = super::ipam::pools_size(&cidr, &sn.allocation_pools);
        let u = crate::db::network::subnet_ips(conn, &sn.std.id)?.len() as u128;
        total += size;
        used += u;
        per.push(json!({
            "subnet_id": sn.std.id,
            "subnet_name": sn.name,
            "cidr": sn.cidr,
            "ip_version": sn.ip_version,
            "total_ips": size.min(u128::from(u64::MAX)) as u64,
            "used_ips": u as u64,
        }));
    }
    Ok(json!({
        "network_id": net.std.id,
        "network_name": net.name,
        "project_id": net.std.project_id,
        "tenant_id": net.std.project_id,
        "total_ips": total.min(u128::from(u64::MAX)) as u64,
        "used_ips": used as u64,
        "subnet_ip_availability": per,
    }))
}

pub async fn list_availability(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    caller.enforce(
        "get_network_ip_availability",
        &Target::project(caller.project.clone()),
    )?;
    let items = s
        .read(move |conn| {
            let nets: Vec<Network> = store::all(conn)?;
            nets.iter().map(|n| availability(conn, n)).collect()
        })
        .await?;
    let base = format!(
        "{}/network/v2.0/network-ip-availabilities",
        s.identity.public_url
    );
    query::respond(
        items,
        &query::ListQuery::new(raw),
        "network_ip_availabilities",
        &base,
    )
}

pub async fn show_availability(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    caller.enforce(
        "get_network_ip_availability",
        &Target::project(caller.project.clone()),
    )?;
    let v = s
        .read(move |conn| {
            let net: Network = store::must(conn, &id)?;
            availability(conn, &net)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "network_ip_availability",
        StatusCode::OK,
    ))
}
