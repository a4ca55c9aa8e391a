//! Ports (`/v2.0/ports`): a MAC and fixed IPs on a network, with binding
//! attributes, allowed address pairs, extra DHCP options, port security and
//! security groups. Without a dataplane a port is `DOWN` and `unbound`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Map, Value};

use super::ipam::{self, Cidr};
use super::model::*;
use super::store::{self, Kind, Std};
use super::{
    Caller, CreateBody, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision,
    create_body, query, quotas, revision_constraint, security_groups,
};
use crate::db::network as db;
use crate::http::body::Object;
use crate::identity::Auth;
use crate::policy::Target;
use crate::server_events::{ServerEvent, VIF_DELETED};

/// Neutron's `max_allowed_address_pair`.
pub const MAX_ADDRESS_PAIRS: usize = 10;
/// Fixed IPs a port may have.
pub const MAX_FIXED_IPS: usize = 32;
const VNIC_TYPES: &[&str] = &[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "remote-managed",
];

impl Kind for Port {
    const KIND: &'static str = "port";
    const NOT_FOUND: &'static str = "PortNotFound";
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
        format!("Port {id} could not be found.")
    }
}

/// Fixed IPs asked for: (subnet id, address), either may be absent.
pub type FixedIpRequest = Vec<(Option<String>, Option<String>)>;

/// `binding:host_id`, `binding:vnic_type` and `binding:profile` of a request.
type Binding = (Option<String>, Option<String>, Option<Map<String, Value>>);

/// What a new port asks for, once parsed (also how routers make their
/// interface and gateway ports).
#[derive(Debug, Clone, Default)]
pub struct PortSpec {
    pub name: String,
    pub description: String,
    pub mac_address: Option<String>,
    /// `None`: one address chosen automatically; `Some([])`: none.
    pub fixed_ips: Option<FixedIpRequest>,
    pub device_id: String,
    pub device_owner: String,
    pub admin_state_up: bool,
    pub security_groups: Option<Vec<String>>,
    pub port_security_enabled: Option<bool>,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub extra_dhcp_opts: Vec<DhcpOpt>,
    pub host_id: String,
    pub vnic_type: String,
    pub profile: Map<String, Value>,
}

fn generation_failure(net_id: &str) -> NetworkError {
    NetworkError::conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available on network {net_id}."),
    )
}

fn taken(conn: &Connection, subnet_id: &str) -> NetResult<HashSet<u128>> {
    Ok(db::subnet_ips(conn, subnet_id)?
        .iter()
        .filter_map(|t| ipam::parse_ip(t))
        .map(ipam::to_num)
        .collect())
}

/// Takes one address for `owner` on `sn` (a given one or the next free).
pub fn allocate(
    conn: &Connection,
    sn: &Subnet,
    ip: Option<std::net::IpAddr>,
    owner: &str,
    mac: &str,
) -> NetResult<FixedIp> {
    let cidr = sn.cidr()?;
    let ip = match ip {
        Some(ip) => {
            if !cidr.contains(ip) {
                return Err(NetworkError::BadRequest {
                    kind: "InvalidIpForSubnet",
                    message: format!("IP address {ip} is not a valid IP for the specified subnet."),
                });
            }
            ip
        }
        None if sn.is_auto_address() => {
            ipam::eui64(&cidr, mac).ok_or_else(|| generation_failure(&sn.network_id))?
        }
        None => {
            let taken = taken(conn, &sn.std.id)?;
            ipam::next_free(&cidr, &sn.allocation_pools, &taken)
                .ok_or_else(|| generation_failure(&sn.network_id))?
        }
    };
    let text = ip.to_string();
    if !db::allocate_ip(conn, &sn.network_id, &text, &sn.std.id, owner)? {
        return Err(NetworkError::conflict(
            "IpAddressAlreadyAllocated",
            format!(
                "IP address {text} already allocated in subnet {}",
                sn.std.id
            ),
        ));
    }
    Ok(FixedIp {
        subnet_id: sn.std.id.clone(),
        ip_address: text,
    })
}

/// Chooses and takes a port's addresses: the ones asked for, or one from
/// the first IPv4 subnet with room, one from the first stateful IPv6
/// subnet, and the SLAAC address of every auto-address IPv6 subnet.
fn allocate_all(
    conn: &Connection,
    net: &Network,
    wanted: &Option<FixedIpRequest>,
    owner: &str,
    mac: &str,
    router_port: bool,
) -> NetResult<Vec<FixedIp>> {
    let subnets: Vec<Subnet> = store::children(conn, &net.std.id)?;
    let mut out = Vec::new();
    match wanted {
        Some(list) => {
            for (subnet_id, ip) in list {
                let ip = match ip {
                    Some(t) => Some(ipam::parse_ip(t).ok_or_else(|| {
                        NetworkError::invalid(
                            "fixed_ips",
                            format!("'{t}' is not a valid IP address"),
                        )
                    })?),
                    None => None,
                };
                let sn = match (subnet_id, ip) {
                    (Some(id), _) => subnets.iter().find(|s| &s.std.id == id).ok_or_else(|| {
                        NetworkError::bad(format!(
                            "Invalid input for operation: Failed to create port on network {}, because fixed_ips included invalid subnet {id}.",
                            net.std.id
                        ))
                    })?,
                    (None, Some(ip)) => subnets
                        .iter()
                        .find(|s| s.cidr().is_ok_and(|c| c.contains(ip)))
                        .ok_or_else(|| NetworkError::BadRequest {
                            kind: "InvalidIpForNetwork",
                            message: format!(
                                "IP address {ip} is not a valid IP for any of the subnets on the specified network."
                            ),
                        })?,
                    (None, None) => {
                        return Err(NetworkError::invalid(
                            "fixed_ips",
                            "a fixed IP needs a subnet_id or an ip_address",
                        ));
                    }
                };
                if sn.is_auto_address() && ip.is_some() && !router_port {
                    return Err(NetworkError::bad(format!(
                        "Invalid input for operation: IPv6 address {} can not be directly assigned to a port on subnet {} since the subnet is configured for automatic addresses.",
                        ip.map(|i| i.to_string()).unwrap_or_default(),
                        sn.std.id
                    )));
                }
                let ip = if router_port && ip.is_none() {
                    sn.gateway_ip
                        .as_deref()
                        .and_then(ipam::parse_ip)
                        .filter(|g| {
                            !taken(conn, &sn.std.id).is_ok_and(|t| t.contains(&ipam::to_num(*g)))
                        })
                } else {
                    ip
                };
                if router_port && sn.is_auto_address() && ip.is_none() {
                    let cidr = sn.cidr()?;
                    let taken = taken(conn, &sn.std.id)?;
                    let next = ipam::next_free(&cidr, &sn.allocation_pools, &taken)
                        .ok_or_else(|| generation_failure(&net.std.id))?;
                    out.push(allocate(conn, sn, Some(next), owner, mac)?);
                    continue;
                }
                out.push(allocate(conn, sn, ip, owner, mac)?);
            }
        }
        None => {
            let mut v4_done = false;
            let mut v6_done = false;
            let mut tried = false;
            for sn in &subnets {
                if sn.ip_version == 4 && !v4_done {
                    tried = true;
                    match allocate(conn, sn, None, owner, mac) {
                        Ok(f) => {
                            out.push(f);
                            v4_done = true;
                        }
                        Err(NetworkError::Conflict {
                            kind: "IpAddressGenerationFailure",
                            ..
                        }) => {}
                        Err(e) => return Err(e),
                    }
                } else if sn.ip_version == 6 && sn.is_auto_address() && !router_port {
                    out.push(allocate(conn, sn, None, owner, mac)?);
                } else if sn.ip_version == 6 && !v6_done && !sn.is_auto_address() {
                    tried = true;
                    match allocate(conn, sn, None, owner, mac) {
                        Ok(f) => {
                            out.push(f);
                            v6_done = true;
                        }
                        Err(NetworkError::Conflict {
                            kind: "IpAddressGenerationFailure",
                            ..
                        }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if tried && !v4_done && !v6_done {
                return Err(generation_failure(&net.std.id));
            }
        }
    }
    Ok(out)
}

/// Makes a port on `net` for `project` from a parsed spec (no policy
/// checks: the callers made them). Returns the port with its addresses.
pub fn new_port(
    conn: &Connection,
    net: &Network,
    project: &str,
    spec: PortSpec,
) -> NetResult<Port> {
    quotas::check(conn, project, "port", 1)?;
    let id = uuid::Uuid::new_v4().to_string();
    let mac = match &spec.mac_address {
        Some(mac) => {
            if !db::claim_mac(conn, &net.std.id, mac, &id)? {
                return Err(NetworkError::conflict(
                    "MacAddressInUse",
                    format!(
                        "Unable to complete operation for network {}. The mac address {mac} is in use.",
                        net.std.id
                    ),
                ));
            }
            mac.clone()
        }
        None => {
            let mut chosen = None;
            for _ in 0..16 {
                let mac = ipam::random_mac();
                if db::claim_mac(conn, &net.std.id, &mac, &id)? {
                    chosen = Some(mac);
                    break;
                }
            }
            chosen.ok_or_else(|| {
                NetworkError::conflict(
                    "MacAddressGenerationFailure",
                    format!("Unable to generate unique mac on network {}.", net.std.id),
                )
            })?
        }
    };
    let router_port = spec.device_owner.starts_with("network:router_interface");
    let fixed_ips = allocate_all(conn, net, &spec.fixed_ips, &id, &mac, router_port)?;
    let port_security = spec
        .port_security_enabled
        .unwrap_or(net.port_security_enabled);
    let network_owned = spec.device_owner.starts_with("network:");
    let security_groups = match spec.security_groups {
        Some(list) => list,
        None if port_security && !network_owned => {
            vec![security_groups::ensure_default(conn, project)?]
        }
        None => Vec::new(),
    };
    if !port_security && !security_groups.is_empty() {
        return Err(NetworkError::BadRequest {
            kind: "PortSecurityAndIPRequiredForSecurityGroups",
            message: "Port security must be enabled and port must have an IP address in order to use security groups.".into(),
        });
    }
    if !port_security && !spec.allowed_address_pairs.is_empty() {
        return Err(NetworkError::conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.",
        ));
    }
    let mut std = Std::new(project, spec.description);
    std.id = id;
    let port = Port {
        std,
        name: spec.name,
        network_id: net.std.id.clone(),
        mac_address: mac,
        admin_state_up: spec.admin_state_up,
        status: "DOWN".into(),
        device_id: spec.device_id,
        device_owner: spec.device_owner,
        fixed_ips,
        allowed_address_pairs: spec.allowed_address_pairs,
        extra_dhcp_opts: spec.extra_dhcp_opts,
        security_groups,
        port_security_enabled: port_security,
        host_id: spec.host_id,
        vnic_type: if spec.vnic_type.is_empty() {
            "normal".into()
        } else {
            spec.vnic_type
        },
        profile: spec.profile,
        vif_type: "unbound".into(),
        vif_details: Map::new(),
        dns_name: String::new(),
        propagate_uplink_status: false,
    };
    store::insert(conn, &port)?;
    Ok(port)
}

fn parse_fixed_ips(body: &Object) -> NetResult<Option<FixedIpRequest>> {
    let Some(list) = attrs::object_list(body, "fixed_ips", MAX_FIXED_IPS)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in list {
        attrs::known(&item, &["subnet_id", "ip_address"])
            .map_err(|_| NetworkError::invalid("fixed_ips", "only subnet_id and ip_address"))?;
        out.push((
            attrs::string(&item, "subnet_id", 64)?,
            attrs::string(&item, "ip_address", 64)?,
        ));
    }
    Ok(Some(out))
}

fn parse_pairs(body: &Object, mac: Option<&str>) -> NetResult<Option<Vec<AddressPair>>> {
    let Some(list) = attrs::object_list(body, "allowed_address_pairs", 64)? else {
        return Ok(None);
    };
    if list.len() > MAX_ADDRESS_PAIRS {
        return Err(NetworkError::BadRequest {
            kind: "AllowedAddressPairExhausted",
            message: format!(
                "The number of allowed address pair exceeds the maximum {MAX_ADDRESS_PAIRS}."
            ),
        });
    }
    let mut out: Vec<AddressPair> = Vec::new();
    for item in list {
        attrs::known(&item, &["ip_address", "mac_address"]).map_err(|_| {
            NetworkError::invalid("allowed_address_pairs", "unrecognized key in a pair")
        })?;
        let ip =
            attrs::string(&item, "ip_address", 64)?.ok_or_else(|| NetworkError::BadRequest {
                kind: "AllowedAddressPairsMissingIP",
                message: "AllowedAddressPair must contain ip_address".into(),
            })?;
        let cidr = Cidr::parse(&ip, false).map_err(|_| {
            NetworkError::invalid(
                "allowed_address_pairs",
                format!("'{ip}' is not a valid IP address"),
            )
        })?;
        let ip = if ip.contains('/') {
            cidr.to_string()
        } else {
            ip
        };
        let mac = match attrs::string(&item, "mac_address", 32)? {
            Some(m) => ipam::normalize_mac(&m).ok_or_else(|| {
                NetworkError::invalid(
                    "allowed_address_pairs",
                    format!("'{m}' is not a valid MAC address"),
                )
            })?,
            None => mac.unwrap_or_default().to_string(),
        };
        let pair = AddressPair {
            ip_address: ip,
            mac_address: mac,
        };
        if out.contains(&pair) {
            return Err(NetworkError::BadRequest {
                kind: "DuplicateAddressPairInRequest",
                message: format!(
                    "Request contains duplicate address pair: mac_address {} ip_address {}.",
                    pair.mac_address, pair.ip_address
                ),
            });
        }
        out.push(pair);
    }
    Ok(Some(out))
}

fn parse_dhcp_opts(body: &Object) -> NetResult<Option<Vec<DhcpOpt>>> {
    let Some(list) = attrs::object_list(body, "extra_dhcp_opts", 64)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in list {
        let name = attrs::string(&item, "opt_name", 64)?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| NetworkError::invalid("extra_dhcp_opts", "opt_name is required"))?;
        let value = attrs::string(&item, "opt_value", 255)?.unwrap_or_default();
        let version = attrs::integer(&item, "ip_version", 4, 6)?.unwrap_or(4);
        if version != 4 && version != 6 {
            return Err(NetworkError::invalid(
                "extra_dhcp_opts",
                "ip_version must be 4 or 6",
            ));
        }
        out.push(DhcpOpt {
            opt_name: name,
            opt_value: value,
            ip_version: version,
        });
    }
    Ok(Some(out))
}

fn parse_groups(
    conn: &Connection,
    caller: &Caller,
    body: &Object,
    project: &str,
) -> NetResult<Option<Vec<String>>> {
    let Some(list) = attrs::string_list(body, "security_groups", 64)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for id in list {
        let sg = security_groups::visible_group(conn, caller, &id)?;
        if sg.std.project_id != project && !caller.admin {
            return Err(store::not_found::<SecurityGroup>(&id));
        }
        if !out.contains(&sg.std.id) {
            out.push(sg.std.id);
        }
    }
    Ok(Some(out))
}

fn binding(
    body: &Object,
    caller: &Caller,
    target: &Target,
    rule_prefix: &str,
) -> NetResult<Binding> {
    let host = attrs::string(body, "binding:host_id", 255)?;
    if host.is_some() {
        caller.enforce(&format!("{rule_prefix}:binding:host_id"), target)?;
    }
    let vnic = attrs::string(body, "binding:vnic_type", 64)?;
    if let Some(v) = &vnic {
        if !VNIC_TYPES.contains(&v.as_str()) {
            return Err(NetworkError::invalid(
                "binding:vnic_type",
                format!("'{v}' is not in {VNIC_TYPES:?}"),
            ));
        }
        caller.enforce(&format!("{rule_prefix}:binding:vnic_type"), target)?;
    }
    let profile = match body.get("binding:profile") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            caller.enforce(&format!("{rule_prefix}:binding:profile"), target)?;
            if serde_json::to_string(m).map(|s| s.len()).unwrap_or(0) > 4096 {
                return Err(NetworkError::invalid("binding:profile", "too large"));
            }
            Some(m.clone())
        }
        Some(other) => {
            return Err(NetworkError::invalid(
                "binding:profile",
                format!("'{other}' is not a dictionary"),
            ));
        }
    };
    Ok((host, vnic, profile))
}

const CREATE_ATTRS: &[&str] = &[
    "name",
    "description",
    "network_id",
    "mac_address",
    "fixed_ips",
    "device_id",
    "device_owner",
    "admin_state_up",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "binding:host_id",
    "binding:vnic_type",
    "binding:profile",
    "project_id",
    "tenant_id",
    "dns_name",
    "propagate_uplink_status",
    "qos_policy_id",
];

/// Creates a port through the API rules, in an open transaction.
pub fn create_port_in(conn: &Connection, caller: &Caller, body: &Object) -> NetResult<Port> {
    attrs::known(body, CREATE_ATTRS)?;
    let net_id = attrs::uuid(body, "network_id")?.ok_or_else(|| {
        NetworkError::bad("Failed to parse request. Required attribute 'network_id' not specified")
    })?;
    let net = super::lookup::visible_network(conn, caller, &net_id)?;
    let project = caller.owner_for(body)?;
    let target =
        Target::project(project.clone()).with("network:project_id", net.std.project_id.clone());
    let shared_to_caller = net.shared
        || super::lookup::rbac_targets(conn, &net_id)?
            .iter()
            .any(|t| t == "*" || *t == caller.project);
    let member_on_shared = shared_to_caller && caller.creds.roles.iter().any(|r| r == "member");
    if !(caller.allows("create_port", &target) || member_on_shared) {
        return Err(NetworkError::Forbidden(
            "rule:create_port is disallowed by policy".into(),
        ));
    }
    let (name, description) = attrs::name_description(body)?;
    let mac = match attrs::string(body, "mac_address", 32)? {
        Some(m) => {
            caller.enforce("create_port:mac_address", &target)?;
            Some(ipam::normalize_mac(&m).ok_or_else(|| {
                NetworkError::invalid("mac_address", format!("'{m}' is not a valid MAC address"))
            })?)
        }
        None => None,
    };
    let fixed_ips = parse_fixed_ips(body)?;
    if let Some(list) = &fixed_ips
        && list.iter().any(|(_, ip)| ip.is_some())
    {
        caller.enforce("create_port:fixed_ips:ip_address", &target)?;
    }
    let device_owner = attrs::string(body, "device_owner", 255)?.unwrap_or_default();
    if !device_owner.is_empty() && device_owner.starts_with("network:") {
        caller.enforce("create_port:device_owner", &target)?;
    }
    let port_security = attrs::boolean(body, "port_security_enabled")?;
    if port_security.is_some() {
        caller.enforce("create_port:port_security_enabled", &target)?;
    }
    let pairs = parse_pairs(body, mac.as_deref())?;
    if pairs.is_some() {
        caller.enforce("create_port:allowed_address_pairs", &target)?;
    }
    let (host, vnic, profile) = binding(body, caller, &target, "create_port")?;
    let spec = PortSpec {
        name: name.unwrap_or_default(),
        description: description.unwrap_or_default(),
        mac_address: mac,
        fixed_ips,
        device_id: attrs::string(body, "device_id", 255)?.unwrap_or_default(),
        device_owner,
        admin_state_up: attrs::boolean(body, "admin_state_up")?.unwrap_or(true),
        security_groups: parse_groups(conn, caller, body, &project)?,
        port_security_enabled: port_security,
        allowed_address_pairs: pairs.unwrap_or_default(),
        extra_dhcp_opts: parse_dhcp_opts(body)?.unwrap_or_default(),
        host_id: host.unwrap_or_default(),
        vnic_type: vnic.unwrap_or_default(),
        profile: profile.unwrap_or_default(),
    };
    let mut port = new_port(conn, &net, &project, spec)?;
    if port
        .allowed_address_pairs
        .iter()
        .any(|p| p.mac_address.is_empty())
    {
        for p in &mut port.allowed_address_pairs {
            if p.mac_address.is_empty() {
                p.mac_address = port.mac_address.clone();
            }
        }
        db::update(
            conn,
            Port::KIND,
            &port.std.id,
            &serde_json::to_string(&port)?,
        )?;
    }
    Ok(port)
}

/// A port the caller may see (its own, or on a network it owns), else 404.
pub fn visible_port(conn: &Connection, caller: &Caller, id: &str) -> NetResult<Port> {
    let port: Port = store::must(conn, id)?;
    if caller.admin || port.std.project_id == caller.project {
        return Ok(port);
    }
    let net: Option<Network> = store::load(conn, &port.network_id)?;
    if net.is_some_and(|n| n.std.project_id == caller.project) {
        return Ok(port);
    }
    Err(store::not_found::<Port>(id))
}

/// The view of a port: binding attributes only for who may read them.
pub fn view(caller: &Caller, port: &Port) -> NetResult<Value> {
    let mut v = store::to_value(port)?;
    if let Value::Object(map) = &mut v
        && !caller.allows(
            "get_port:binding:vif_type",
            &Target::project(port.std.project_id.clone()),
        )
    {
        for key in [
            "binding:host_id",
            "binding:profile",
            "binding:vif_type",
            "binding:vif_details",
        ] {
            map.remove(key);
        }
    }
    Ok(v)
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = match create_body(&bytes, "port", "ports")? {
        CreateBody::One(body) => body,
        CreateBody::Bulk(bodies) => {
            let c = caller.clone();
            let ports = s
                .write(move |tx| {
                    bodies
                        .iter()
                        .map(|b| create_port_in(tx, &c, b))
                        .collect::<NetResult<Vec<_>>>()
                })
                .await?;
            let views = ports
                .iter()
                .map(|p| view(&caller, p))
                .collect::<NetResult<Vec<_>>>()?;
            return Ok(query::respond_many(views, "ports", StatusCode::CREATED));
        }
    };
    let c = caller.clone();
    let port = s.write(move |tx| create_port_in(tx, &c, &body)).await?;
    Ok(query::respond_one(
        view(&caller, &port)?,
        &Default::default(),
        "port",
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
            let ports: Vec<Port> = store::all(conn)?;
            let owned: HashSet<String> = if caller.admin {
                HashSet::new()
            } else {
                store::all::<Network>(conn)?
                    .into_iter()
                    .filter(|n| n.std.project_id == caller.project)
                    .map(|n| n.std.id)
                    .collect()
            };
            ports
                .iter()
                .filter(|p| {
                    caller.admin
                        || p.std.project_id == caller.project
                        || owned.contains(&p.network_id)
                })
                .map(|p| view(&caller, p))
                .collect()
        })
        .await?;
    let base = format!("{}/network/v2.0/ports", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "ports", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let c = caller.clone();
    let port = s.read(move |conn| visible_port(conn, &c, &id)).await?;
    Ok(query::respond_one(
        view(&caller, &port)?,
        &query::ListQuery::new(raw),
        "port",
        StatusCode::OK,
    ))
}

const UPDATE_ATTRS: &[&str] = &[
    "name",
    "description",
    "mac_address",
    "fixed_ips",
    "device_id",
    "device_owner",
    "admin_state_up",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "binding:host_id",
    "binding:vnic_type",
    "binding:profile",
    "dns_name",
    "propagate_uplink_status",
    "qos_policy_id",
];

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "port")?;
    for ro in ["network_id", "project_id", "tenant_id"] {
        if body.contains_key(ro) {
            return Err(NetworkError::bad(format!(
                "Cannot update read-only attribute {ro}"
            )));
        }
    }
    attrs::known(&body, UPDATE_ATTRS)?;
    let expected = revision_constraint(&headers)?;
    let c = caller.clone();
    let port = s
        .write(move |tx| {
            let mut port = visible_port(tx, &c, &id)?;
            let net: Network = store::must(tx, &port.network_id)?;
            let target = Target::project(port.std.project_id.clone())
                .with("network:project_id", net.std.project_id.clone());
            c.enforce("update_port", &target)?;
            check_revision(expected, port.std.revision_number)?;
            let (name, description) = attrs::name_description(&body)?;
            if let Some(n) = name {
                port.name = n;
            }
            if let Some(d) = description {
                port.std.description = d;
            }
            if let Some(b) = attrs::boolean(&body, "admin_state_up")? {
                port.admin_state_up = b;
            }
            if let Some(d) = attrs::string(&body, "device_id", 255)? {
                port.device_id = d;
            }
            if let Some(d) = attrs::string(&body, "device_owner", 255)? {
                port.device_owner = d;
            }
            if let Some(m) = attrs::string(&body, "mac_address", 32)? {
                c.enforce("update_port:mac_address", &target)?;
                let mac = ipam::normalize_mac(&m).ok_or_else(|| {
                    NetworkError::invalid("mac_address", format!("'{m}' is not a valid MAC address"))
                })?;
                if mac != port.mac_address {
                    if port.vif_type != "unbound" {
                        return Err(NetworkError::conflict("PortBound", format!("Unable to complete operation on port {}, port is already bound.", port.std.id)));
                    }
                    db::release_mac(tx, &port.std.id)?;
                    if !db::claim_mac(tx, &net.std.id, &mac, &port.std.id)? {
                        return Err(NetworkError::conflict("MacAddressInUse", format!(
                            "Unable to complete operation for network {}. The mac address {mac} is in use.",
                            net.std.id
                        )));
                    }
                    port.mac_address = mac;
                }
            }
            if let Some(wanted) = parse_fixed_ips(&body)? {
                if wanted.iter().any(|(_, ip)| ip.is_some()) {
                    c.enforce("update_port:fixed_ips:ip_address", &target)?;
                }
                // Keep the addresses asked for again, take the new ones.
                let keep: Vec<FixedIp> = port
                    .fixed_ips
                    .iter()
                    .filter(|f| {
                        wanted.iter().any(|(sid, ip)| {
                            ip.as_deref() == Some(f.ip_address.as_str())
                                && sid.as_deref().is_none_or(|s| s == f.subnet_id)
                        })
                    })
                    .cloned()
                    .collect();
                for f in &port.fixed_ips {
                    if !keep.contains(f) {
                        db::release_ip(tx, &port.std.id, &f.ip_address)?;
                    }
                }
                let fresh: Vec<(Option<String>, Option<String>)> = wanted
                    .into_iter()
                    .filter(|(_, ip)| !keep.iter().any(|k| Some(&k.ip_address) == ip.as_ref()))
                    .collect();
                let router = port.device_owner.starts_with("network:router_interface");
                let mut ips = keep;
                ips.extend(allocate_all(tx, &net, &Some(fresh), &port.std.id, &port.mac_address, router)?);
                port.fixed_ips = ips;
            }
            if let Some(b) = attrs::boolean(&body, "port_security_enabled")? {
                c.enforce("update_port:port_security_enabled", &target)?;
                port.port_security_enabled = b;
            }
            if let Some(groups) = parse_groups(tx, &c, &body, &port.std.project_id)? {
                port.security_groups = groups;
            }
            if !port.port_security_enabled && !port.security_groups.is_empty() {
                return Err(NetworkError::conflict(
                    "PortSecurityPortHasSecurityGroup",
                    "Port has security group associated. Cannot disable port security or ip address until security group is removed",
                ));
            }
            if let Some(pairs) = parse_pairs(&body, Some(&port.mac_address))? {
                c.enforce("update_port:allowed_address_pairs", &target)?;
                port.allowed_address_pairs = pairs;
            }
            if !port.port_security_enabled && !port.allowed_address_pairs.is_empty() {
                return Err(NetworkError::conflict(
                    "AddressPairAndPortSecurityRequired",
                    "Port Security must be enabled in order to have allowed address pairs on a port.",
                ));
            }
            if let Some(opts) = parse_dhcp_opts(&body)? {
                port.extra_dhcp_opts = opts;
            }
            let (host, vnic, profile) = binding(&body, &c, &target, "update_port")?;
            if let Some(h) = host {
                port.host_id = h;
            }
            if let Some(v) = vnic {
                port.vnic_type = v;
            }
            if let Some(p) = profile {
                port.profile = p;
            }
            if let Some(d) = attrs::string(&body, "dns_name", 255)? {
                port.dns_name = d;
            }
            store::save(tx, &mut port)?;
            Ok(port)
        })
        .await?;
    Ok(query::respond_one(
        view(&caller, &port)?,
        &Default::default(),
        "port",
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
        let port = visible_port(tx, &caller, &id)?;
        let net: Option<Network> = store::load(tx, &port.network_id)?;
        let target = Target::project(port.std.project_id.clone()).with(
            "network:project_id",
            net.map(|n| n.std.project_id).unwrap_or_default(),
        );
        caller.enforce("delete_port", &target)?;
        if port.device_owner == "network:router_interface"
            || port.device_owner == "network:router_gateway"
        {
            return Err(NetworkError::conflict(
                "L3PortInUse",
                format!(
                    "Port {} cannot be deleted directly via the port API: has device owner {}.",
                    port.std.id, port.device_owner
                ),
            ));
        }
        delete_port_in(tx, &port)?;
        Ok(port)
    })
    .await
    .map(|port| {
        // Neutron tells Nova when a port bound to a server goes, and Nova
        // takes the NIC out of the guest.
        if port.device_owner.starts_with("compute:") && !port.device_id.is_empty() {
            s.server_events.send(vec![ServerEvent::port(
                VIF_DELETED,
                &port.device_id,
                &port.std.id,
                true,
            )]);
        }
    })?;
    Ok(crate::http::no_content())
}

/// Deletes a port, freeing its addresses and MAC and disassociating its
/// floating IPs.
pub fn delete_port_in(conn: &Connection, port: &Port) -> NetResult<()> {
    db::release_ips(conn, &port.std.id)?;
    db::release_mac(conn, &port.std.id)?;
    super::lookup::disassociate_port(conn, &port.std.id)?;
    store::remove::<Port>(conn, &port.std.id)
}
