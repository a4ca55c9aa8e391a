//! Subnets (`/v2.0/subnets`): IPv4 and IPv6 prefixes of a network, with
//! allocation pools, gateway, DNS servers, host routes and IPv6 modes.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::ipam::{self, Cidr, Pool};
use super::model::*;
use super::store::{self, Kind, Std};
use super::{
    Caller, CreateBody, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision,
    create_body, query, quotas, revision_constraint,
};
use crate::http::body::Object;
use crate::identity::Auth;
use crate::policy::Target;

/// Neutron's `max_dns_nameservers` and `max_subnet_host_routes`.
pub const MAX_DNS: usize = 5;
pub const MAX_ROUTES: usize = 20;
const IPV6_MODES: &[&str] = &["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

impl Kind for Subnet {
    const KIND: &'static str = "subnet";
    const NOT_FOUND: &'static str = "SubnetNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn parent(&self) -> Option<&str> {
        Some(&self.network_id)
    }
    fn not_found_message(id: &str) -> String {
        format!("Subnet {id} could not be found.")
    }
}

impl Subnet {
    pub fn cidr(&self) -> NetResult<Cidr> {
        Cidr::parse(&self.cidr, false).map_err(NetworkError::bad)
    }

    /// Whether addresses come from the MAC (SLAAC or DHCPv6-stateless).
    pub fn is_auto_address(&self) -> bool {
        matches!(
            self.ipv6_address_mode.as_deref(),
            Some("slaac") | Some("dhcpv6-stateless")
        )
    }
}

fn parse_addr(key: &str, text: &str, version: u8) -> NetResult<IpAddr> {
    match ipam::parse_ip(text) {
        Some(ip) if ipam::version_of(ip) == version => Ok(ip),
        _ => Err(NetworkError::invalid(
            key,
            format!("'{text}' is not a valid IP address"),
        )),
    }
}

fn dns_servers(body: &Object, version: u8) -> NetResult<Option<Vec<String>>> {
    let Some(list) = attrs::string_list(body, "dns_nameservers", 64)? else {
        return Ok(None);
    };
    if list.len() > MAX_DNS {
        return Err(NetworkError::bad(format!(
            "Number of DNS nameservers exceeds the limit {MAX_DNS}"
        )));
    }
    let mut seen = Vec::new();
    for d in &list {
        let ip = ipam::parse_ip(d).ok_or_else(|| {
            NetworkError::invalid(
                "dns_nameservers",
                format!("'{d}' is not a valid nameserver"),
            )
        })?;
        let _ = version;
        if seen.contains(&ip) {
            return Err(NetworkError::invalid(
                "dns_nameservers",
                format!("Duplicate nameserver '{d}'"),
            ));
        }
        seen.push(ip);
    }
    Ok(Some(list))
}

fn host_routes(body: &Object, cidr: &Cidr) -> NetResult<Option<Vec<HostRoute>>> {
    let Some(list) = attrs::object_list(body, "host_routes", 64)? else {
        return Ok(None);
    };
    if list.len() > MAX_ROUTES {
        return Err(NetworkError::bad(format!(
            "Number of host routes exceeds the limit {MAX_ROUTES}"
        )));
    }
    let mut out: Vec<HostRoute> = Vec::new();
    for r in list {
        let dest = attrs::string(&r, "destination", 64)?.unwrap_or_default();
        let hop = attrs::string(&r, "nexthop", 64)?.unwrap_or_default();
        let d = Cidr::parse(&dest, false).map_err(|e| NetworkError::invalid("host_routes", e))?;
        let h = ipam::parse_ip(&hop).ok_or_else(|| {
            NetworkError::invalid("host_routes", format!("'{hop}' is not a valid IP address"))
        })?;
        if d.version() != cidr.version() || ipam::version_of(h) != cidr.version() {
            return Err(NetworkError::bad(format!(
                "Invalid input for operation: Host route {dest} via {hop} does not match the subnet's IP version."
            )));
        }
        let route = HostRoute {
            destination: d.to_string(),
            nexthop: h.to_string(),
        };
        if out.contains(&route) {
            return Err(NetworkError::invalid(
                "host_routes",
                format!("Duplicate hostroute '{dest}'"),
            ));
        }
        out.push(route);
    }
    Ok(Some(out))
}

fn pools_of(body: &Object, cidr: &Cidr) -> NetResult<Option<Vec<Pool>>> {
    let Some(list) = attrs::object_list(body, "allocation_pools", 64)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for p in list {
        let start = attrs::string(&p, "start", 64)?;
        let end = attrs::string(&p, "end", 64)?;
        let (Some(start), Some(end)) = (start, end) else {
            return Err(NetworkError::invalid(
                "allocation_pools",
                "each pool needs a start and an end",
            ));
        };
        let pool = Pool { start, end };
        ipam::pool_range(cidr, &pool).map_err(NetworkError::bad)?;
        out.push(pool);
    }
    Ok(Some(out))
}

const CREATE_ATTRS: &[&str] = &[
    "name",
    "description",
    "network_id",
    "ip_version",
    "cidr",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "subnetpool_id",
    "prefixlen",
    "use_default_subnetpool",
    "service_types",
    "segment_id",
    "project_id",
    "tenant_id",
    "dns_publish_fixed_ip",
];

fn ipv6_modes(
    body: &Object,
    version: u8,
    cidr: &Cidr,
) -> NetResult<(Option<String>, Option<String>)> {
    let ra = attrs::string(body, "ipv6_ra_mode", 32)?;
    let addr = attrs::string(body, "ipv6_address_mode", 32)?;
    for (key, v) in [("ipv6_ra_mode", &ra), ("ipv6_address_mode", &addr)] {
        if let Some(v) = v {
            if !IPV6_MODES.contains(&v.as_str()) {
                return Err(NetworkError::invalid(
                    key,
                    format!("'{v}' is not in {IPV6_MODES:?}"),
                ));
            }
            if version != 6 {
                return Err(NetworkError::bad(
                    "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False.".replace(
                        "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
                        "ipv6_ra_mode and ipv6_address_mode cannot be set for an IPv4 subnet",
                    ),
                ));
            }
        }
    }
    if let (Some(r), Some(a)) = (&ra, &addr)
        && r != a
    {
        return Err(NetworkError::bad(format!(
            "Invalid input for operation: ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid. If both attributes are set, they must be the same value."
        )));
    }
    let auto = matches!(addr.as_deref(), Some("slaac") | Some("dhcpv6-stateless"))
        || (addr.is_none() && matches!(ra.as_deref(), Some("slaac") | Some("dhcpv6-stateless")));
    if auto && cidr.prefix != 64 {
        return Err(NetworkError::bad(format!(
            "Invalid input for operation: Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64."
        )));
    }
    Ok((ra, addr))
}

/// Makes a subnet in an open transaction.
pub fn create_subnet_in(conn: &Connection, caller: &Caller, body: &Object) -> NetResult<Subnet> {
    attrs::known(body, CREATE_ATTRS)?;
    let net_id = attrs::uuid(body, "network_id")?.ok_or_else(|| {
        NetworkError::bad("Failed to parse request. Required attribute 'network_id' not specified")
    })?;
    let net = super::lookup::visible_network(conn, caller, &net_id)?;
    let project = caller.owner_for(body)?;
    let target =
        Target::project(project.clone()).with("network:project_id", net.std.project_id.clone());
    caller.enforce("create_subnet", &target)?;
    let version = match attrs::integer(body, "ip_version", 0, 100)? {
        Some(4) => 4u8,
        Some(6) => 6u8,
        Some(v) => {
            return Err(NetworkError::invalid(
                "ip_version",
                format!("'{v}' is not in [4, 6]"),
            ));
        }
        None => {
            return Err(NetworkError::bad(
                "Failed to parse request. Required attribute 'ip_version' not specified",
            ));
        }
    };
    let (cidr, pool_id) = match attrs::string(body, "cidr", 64)? {
        Some(text) => (
            Cidr::parse(&text, true).map_err(|e| NetworkError::invalid("cidr", e))?,
            attrs::uuid(body, "subnetpool_id")?,
        ),
        None => {
            let pool_id = attrs::uuid(body, "subnetpool_id")?;
            let use_default = attrs::boolean(body, "use_default_subnetpool")?.unwrap_or(false);
            let prefixlen = attrs::integer(body, "prefixlen", 0, 128)?;
            super::subnet_pools::allocate(
                conn,
                caller,
                pool_id,
                use_default,
                version,
                prefixlen,
                &net_id,
            )?
        }
    };
    if cidr.version() != version {
        return Err(NetworkError::bad(format!(
            "Invalid input for operation: Cidr {cidr} does not match ip_version {version}."
        )));
    }
    if cidr.prefix == 0 {
        return Err(NetworkError::bad(format!(
            "Invalid input for operation: 0 is not allowed as CIDR prefix length ({cidr})."
        )));
    }
    let existing: Vec<Subnet> = store::children(conn, &net_id)?;
    for other in &existing {
        if other.cidr()?.overlaps(&cidr) {
            return Err(NetworkError::bad(format!(
                "Invalid input for operation: Requested subnet with cidr: {cidr} for network: {net_id} overlaps with another subnet."
            )));
        }
    }
    let gateway = match body.get("gateway_ip") {
        None => ipam::default_gateway(&cidr),
        Some(Value::Null) => None,
        Some(Value::String(g)) => {
            let ip = parse_addr("gateway_ip", g, version)?;
            if !cidr.contains(ip) {
                return Err(NetworkError::bad(format!(
                    "Invalid input for operation: Gateway IP {ip} is not in subnet {cidr}."
                )));
            }
            Some(ip)
        }
        Some(other) => {
            return Err(NetworkError::invalid(
                "gateway_ip",
                format!("'{other}' is not a valid IP address"),
            ));
        }
    };
    let pools = match pools_of(body, &cidr)? {
        Some(pools) => pools,
        None => ipam::default_pools(&cidr, gateway),
    };
    ipam::validate_pools(&cidr, &pools, gateway).map_err(NetworkError::bad)?;
    let (ra, addr) = ipv6_modes(body, version, &cidr)?;
    let enable_dhcp = attrs::boolean(body, "enable_dhcp")?.unwrap_or(true);
    if !enable_dhcp && (ra.is_some() || addr.is_some()) && addr.as_deref() != Some("slaac") {
        return Err(NetworkError::bad(
            "Invalid input for operation: ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False.",
        ));
    }
    let (name, description) = attrs::name_description(body)?;
    quotas::check(conn, &project, "subnet", 1)?;
    let subnet = Subnet {
        std: Std::new(&project, description.unwrap_or_default()),
        name: name.unwrap_or_default(),
        network_id: net_id,
        ip_version: version,
        cidr: cidr.to_string(),
        gateway_ip: gateway.map(|g| g.to_string()),
        allocation_pools: pools,
        dns_nameservers: dns_servers(body, version)?.unwrap_or_default(),
        host_routes: host_routes(body, &cidr)?.unwrap_or_default(),
        enable_dhcp,
        ipv6_ra_mode: ra,
        ipv6_address_mode: addr,
        subnetpool_id: pool_id,
        service_types: attrs::string_list(body, "service_types", 16)?.unwrap_or_default(),
        segment_id: None,
        dns_publish_fixed_ip: false,
    };
    store::insert(conn, &subnet)?;
    let _ = net;
    Ok(subnet)
}

/// The subnets the caller may see, each with its network's visibility.
fn visible_subnet(conn: &Connection, caller: &Caller, id: &str) -> NetResult<Subnet> {
    let sn: Subnet = store::must(conn, id)?;
    if sn.std.project_id == caller.project || caller.admin {
        return Ok(sn);
    }
    match super::lookup::visible_network(conn, caller, &sn.network_id) {
        Ok(_) => Ok(sn),
        Err(_) => Err(store::not_found::<Subnet>(id)),
    }
}

/// A subnet as shown: its record plus `router:external`, its network's
/// (the `subnet-external-network` extension).
pub fn view(conn: &Connection, sn: &Subnet) -> NetResult<Value> {
    let external = store::load::<Network>(conn, &sn.network_id)?.is_some_and(|n| n.external);
    let mut v = store::to_value(sn)?;
    if let Value::Object(map) = &mut v {
        map.insert("router:external".into(), Value::Bool(external));
    }
    Ok(v)
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = match create_body(&bytes, "subnet", "subnets")? {
        CreateBody::One(body) => body,
        CreateBody::Bulk(bodies) => {
            let views = s
                .write(move |tx| {
                    bodies
                        .iter()
                        .map(|b| create_subnet_in(tx, &caller, b).and_then(|sn| view(tx, &sn)))
                        .collect::<NetResult<Vec<_>>>()
                })
                .await?;
            return Ok(query::respond_many(views, "subnets", StatusCode::CREATED));
        }
    };
    let v = s
        .write(move |tx| {
            let sn = create_subnet_in(tx, &caller, &body)?;
            view(tx, &sn)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "subnet",
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
            let nets: Vec<Network> = store::all(conn)?;
            let mut seen = std::collections::HashMap::new();
            for n in &nets {
                let rbac = super::lookup::rbac_targets(conn, &n.std.id)?;
                seen.insert(n.std.id.clone(), super::lookup::visible(&caller, n, &rbac));
            }
            let subnets: Vec<Subnet> = store::all(conn)?;
            subnets
                .iter()
                .filter(|sn| {
                    caller.admin
                        || sn.std.project_id == caller.project
                        || seen.get(&sn.network_id).copied().unwrap_or(false)
                })
                .map(|sn| view(conn, sn))
                .collect()
        })
        .await?;
    let base = format!("{}/network/v2.0/subnets", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "subnets", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let v = s
        .read(move |conn| {
            let sn = visible_subnet(conn, &caller, &id)?;
            view(conn, &sn)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &query::ListQuery::new(raw),
        "subnet",
        StatusCode::OK,
    ))
}

const UPDATE_ATTRS: &[&str] = &[
    "name",
    "description",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "service_types",
    "segment_id",
    "dns_publish_fixed_ip",
];

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "subnet")?;
    for ro in [
        "cidr",
        "ip_version",
        "network_id",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "subnetpool_id",
        "project_id",
        "tenant_id",
    ] {
        if body.contains_key(ro) {
            return Err(NetworkError::bad(format!(
                "Cannot update read-only attribute {ro}"
            )));
        }
    }
    attrs::known(&body, UPDATE_ATTRS)?;
    let expected = revision_constraint(&headers)?;
    let v = s
        .write(move |tx| {
            let mut sn = visible_subnet(tx, &caller, &id)?;
            let net: Network = store::must(tx, &sn.network_id)?;
            let target = Target::project(sn.std.project_id.clone())
                .with("network:project_id", net.std.project_id.clone());
            caller.enforce("update_subnet", &target)?;
            check_revision(expected, sn.std.revision_number)?;
            let cidr = sn.cidr()?;
            let (name, description) = attrs::name_description(&body)?;
            if let Some(n) = name {
                sn.name = n;
            }
            if let Some(d) = description {
                sn.std.description = d;
            }
            let mut gateway = sn.gateway_ip.as_deref().and_then(ipam::parse_ip);
            match body.get("gateway_ip") {
                None => {}
                Some(Value::Null) => gateway = None,
                Some(Value::String(g)) => {
                    let ip = parse_addr("gateway_ip", g, sn.ip_version)?;
                    if !cidr.contains(ip) {
                        return Err(NetworkError::bad(format!(
                            "Invalid input for operation: Gateway IP {ip} is not in subnet {cidr}."
                        )));
                    }
                    gateway = Some(ip);
                }
                Some(other) => {
                    return Err(NetworkError::invalid(
                        "gateway_ip",
                        format!("'{other}' is not a valid IP address"),
                    ));
                }
            }
            if let Some(pools) = pools_of(&body, &cidr)? {
                let taken = crate::db::network::subnet_ips(tx, &sn.std.id)?;
                for ip in taken.iter().filter_map(|t| ipam::parse_ip(t)) {
                    if !ipam::in_pools(&cidr, &pools, ip) && Some(ip) != gateway {
                        return Err(NetworkError::conflict(
                            "SubnetInUse",
                            format!("Unable to complete operation on subnet {}: an allocated address {ip} is outside the new allocation pools.", sn.std.id),
                        ));
                    }
                }
                sn.allocation_pools = pools;
            }
            ipam::validate_pools(&cidr, &sn.allocation_pools, gateway).map_err(NetworkError::bad)?;
            sn.gateway_ip = gateway.map(|g| g.to_string());
            if let Some(d) = dns_servers(&body, sn.ip_version)? {
                sn.dns_nameservers = d;
            }
            if let Some(r) = host_routes(&body, &cidr)? {
                sn.host_routes = r;
            }
            if let Some(b) = attrs::boolean(&body, "enable_dhcp")? {
                sn.enable_dhcp = b;
            }
            if let Some(t) = attrs::string_list(&body, "service_types", 16)? {
                sn.service_types = t;
            }
            store::save(tx, &mut sn)?;
            view(tx, &sn)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "subnet",
        StatusCode::OK,
    ))
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let sn = visible_subnet(tx, &caller, &id)?;
        let net: Network = store::must(tx, &sn.network_id)?;
        let target = Target::project(sn.std.project_id.clone())
            .with("network:project_id", net.std.project_id.clone());
        caller.enforce("delete_subnet", &target)?;
        delete_subnet_in(tx, &sn)
    })
    .await?;
    Ok(crate::http::no_content())
}

/// Deletes a subnet; refused while a port holds one of its addresses. As
/// Neutron, the auto-addresses (SLAAC, DHCPv6-stateless) of ordinary ports do
/// not hold an auto-address subnet: they are taken off those ports with it
/// (router ports still hold it).
pub fn delete_subnet_in(conn: &Connection, sn: &Subnet) -> NetResult<()> {
    let ports: Vec<Port> = store::children(conn, &sn.network_id)?;
    let holds = |p: &Port| p.fixed_ips.iter().any(|f| f.subnet_id == sn.std.id);
    let auto_only =
        |p: &Port| sn.is_auto_address() && !p.device_owner.starts_with("network:router");
    if ports
        .iter()
        .any(|p| !p.device_owner.starts_with("network:dhcp") && holds(p) && !auto_only(p))
    {
        return Err(NetworkError::conflict(
            "SubnetInUse",
            format!(
                "Unable to complete operation on subnet {}: One or more ports have an IP allocation from this subnet.",
                sn.std.id
            ),
        ));
    }
    for mut port in ports {
        if port.device_owner.starts_with("network:dhcp") || !holds(&port) || !auto_only(&port) {
            continue;
        }
        let (gone, kept): (Vec<FixedIp>, Vec<FixedIp>) = std::mem::take(&mut port.fixed_ips)
            .into_iter()
            .partition(|f| f.subnet_id == sn.std.id);
        port.fixed_ips = kept;
        for f in gone {
            crate::db::network::release_ip(conn, &port.std.id, &f.ip_address)?;
        }
        store::save(conn, &mut port)?;
    }
    store::remove::<Subnet>(conn, &sn.std.id)?;
    let _ = json!(null);
    Ok(())
}
