//! Nova's side of Neutron: the `networks` (and `security_groups`) of a
//! server create, the ports made for a server and released with it, and
//! what the API shows of them (`addresses`, `os-interface`, `ips`,
//! `network_data.json`).
//!
//! Ports are made through the network service's seam (`network::new_port`)
//! inside the create's own transaction, which [`write_atomic`] rolls back
//! whole when any step fails: a create that fails leaves no port. The server
//! record keeps its ports in NIC order (`Server::ports`): those made for it
//! are deleted with it, those passed in are only unbound, as Nova does.
//! Views read the port records at view time, so they are never stale.

mod network_data;
mod views;

use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Map;

use super::request::{IpAddress, Tag, Uuid as RequestUuid, present, unexpected};
use super::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::db::DbError;
use crate::db::servers::{Server, ServerPort};
use crate::network::model::{Network, Port, SecurityGroup, Subnet};
use crate::network::{self, NetworkError, PortSpec, store};

pub use network_data::{network_data, network_data_of, nics};
pub use views::{
    Addresses, InterfaceView, PortFacts, addresses_of, basic_ips, interfaces_of, ips_view,
    port_facts_many, port_facts_of,
};

/// The most NICs a server may ask for (the VMM's PCI slots are few).
pub const MAX_NICS: usize = 16;
/// The most security groups a create may name.
const MAX_SECURITY_GROUPS: usize = 32;

/// What connects compute to the network service at run time: the
/// dataplane (with `serve --dataplane`), the `Notify` told after a port
/// changes, and the notifier the network side sends server external events
/// through (`network-vif-plugged`; compute receives them). Fixed at
/// start-up by server.rs.
#[derive(Clone, Default)]
pub struct NetworkHooks {
    pub dataplane: Option<Arc<crate::dataplane::Dataplane>>,
    pub changed: Option<Arc<tokio::sync::Notify>>,
    pub notifier: crate::server_events::ServerEvents,
}

impl std::fmt::Debug for NetworkHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkHooks")
            .field("dataplane", &self.dataplane.is_some())
            .finish()
    }
}

/// What `networks` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Requested {
    /// No key (below 2.37) or an empty list: the one network the project
    /// can use, if exactly one; none: no NIC.
    Absent,
    /// `none`: no NIC.
    None,
    /// `auto`: the one network the project can use (Nova's
    /// auto-allocation of a topology is not offered).
    Auto,
    /// Networks and ports, in NIC order.
    List(Vec<NetRequest>),
}

/// One item of a `networks` list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetRequest {
    pub network_id: Option<String>,
    pub port_id: Option<String>,
    pub fixed_ip: Option<String>,
    pub tag: Option<String>,
}

fn bad(message: impl Into<String>) -> ComputeError {
    ComputeError::BadRequest(message.into())
}

fn is_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}

/// The `networks` of a create as given: a list of networks and ports, or
/// (from 2.37) one of the words `none` and `auto`.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworksArg {
    List(Vec<NetworkItem>),
    Word(String),
}

impl<'de> Deserialize<'de> for NetworksArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = NetworksArg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NetworksArg, E> {
                Ok(NetworksArg::Word(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<NetworksArg, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(NetworksArg::List(items))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// One item of a `networks` list (Nova's schema; `tag` at 2.32 and from
/// 2.42, checked after decoding).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkItem {
    #[serde(default, deserialize_with = "present")]
    fixed_ip: Option<IpAddress>,
    /// `null` as absent.
    #[serde(default)]
    port: Option<RequestUuid>,
    /// A UUID from 2.37; below, anything else is refused by the check of
    /// `_get_requested_networks`, with its wording.
    #[serde(default, deserialize_with = "present")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    tag: Option<Tag>,
}

/// One item of a create's `security_groups`: a group's name or id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRef {
    name: String,
}

/// Reads `networks` as Nova's schemas and `_get_requested_networks` do.
pub fn parse(mv: Mv, networks: Option<NetworksArg>, max_count: i64) -> ComputeResult<Requested> {
    let items = match networks {
        None if mv.at_least(37) => {
            return Err(bad(
                "Invalid input for field/attribute server. 'networks' is a required property",
            ));
        }
        None => return Ok(Requested::Absent),
        Some(NetworksArg::Word(word)) if mv.at_least(37) => {
            return match word.as_str() {
                "none" => Ok(Requested::None),
                "auto" => Ok(Requested::Auto),
                _ => Err(bad(format!(
                    "Invalid input for field/attribute networks. Value: {word}. '{word}' is not one of ['none', 'auto']"
                ))),
            };
        }
        Some(NetworksArg::List(items)) => items,
        Some(NetworksArg::Word(word)) => {
            return Err(bad(format!(
                "Invalid input for field/attribute networks. Value: {word}. '{word}' is not of type 'array'"
            )));
        }
    };
    if items.is_empty() {
        return Ok(Requested::Absent);
    }
    if items.len() > MAX_NICS {
        return Err(bad(format!(
            "Invalid input for field/attribute networks. A server has at most {MAX_NICS} networks."
        )));
    }
    let tags = mv.0 == 32 || mv.at_least(42);
    let mut out: Vec<NetRequest> = Vec::new();
    for item in items {
        if item.tag.is_some() && !tags {
            return Err(unexpected("networks", "tag"));
        }
        let fixed_ip = item.fixed_ip.map(|ip| ip.0);
        let port_id = item.port.map(|p| p.0);
        let network_id = item.uuid;
        if let Some(n) = &network_id
            && mv.at_least(37)
            && !is_uuid(n)
        {
            return Err(bad(format!(
                "Invalid input for field/attribute uuid. Value: {n}. '{n}' is not a 'uuid'"
            )));
        }
        let tag = item.tag.map(|t| t.0);
        let request = match (port_id, network_id) {
            (Some(port), _) => {
                if out.iter().any(|r| r.port_id.as_ref() == Some(&port)) {
                    return Err(bad(format!(
                        "Port ID '{port}' was specified twice: you cannot attach a port multiple times."
                    )));
                }
                if let Some(addr) = &fixed_ip {
                    return Err(bad(format!(
                        "Specified Fixed IP '{addr}' cannot be used with port '{port}': the two cannot be specified together."
                    )));
                }
                NetRequest {
                    network_id: None,
                    port_id: Some(port),
                    fixed_ip: None,
                    tag,
                }
            }
            (None, Some(net)) => {
                if !is_uuid(&net) {
                    return Err(bad(format!(
                        "Bad networks format: network uuid is not in proper format ({net})"
                    )));
                }
                NetRequest {
                    network_id: Some(net),
                    port_id: None,
                    fixed_ip,
                    tag,
                }
            }
            (None, None) => return Err(bad("Bad network format: missing 'uuid'")),
        };
        out.push(request);
    }
    if max_count > 1 {
        if out.iter().any(|r| r.fixed_ip.is_some()) {
            return Err(bad(
                "Failed to launch instances: max_count cannot be greater than 1 if an fixed_ip is specified.",
            ));
        }
        if out.iter().any(|r| r.port_id.is_some()) {
            return Err(bad(
                "Failed to launch instances: Unable to launch multiple instances with a single configured port ID. Please launch your instance one by one with different ports.",
            ));
        }
    }
    Ok(Requested::List(out))
}

/// The `security_groups` of a create (names or ids), `default` when absent.
pub fn parse_security_groups(groups: Option<Vec<SecurityGroupRef>>) -> ComputeResult<Vec<String>> {
    let Some(items) = groups else {
        return Ok(vec!["default".into()]);
    };
    if items.len() > MAX_SECURITY_GROUPS {
        return Err(bad(format!(
            "Invalid input for field/attribute security_groups. At most {MAX_SECURITY_GROUPS} security groups."
        )));
    }
    let mut names: Vec<String> = Vec::new();
    for SecurityGroupRef { name } in items {
        if name.is_empty() || name.chars().count() > 255 {
            return Err(bad(format!(
                "Invalid input for field/attribute name. Value: {name}. '{name}' is not a valid name"
            )));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        names.push("default".into());
    }
    Ok(names)
}

/// One NIC of a create, resolved and checked (nothing written yet).
#[derive(Debug, Clone)]
enum PlannedNic {
    Network {
        net: Box<Network>,
        fixed_ip: Option<String>,
        tag: Option<String>,
    },
    Port {
        port_id: String,
        tag: Option<String>,
    },
}

/// The NICs of each server of a create.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    nics: Vec<PlannedNic>,
    security_groups: Vec<String>,
}

impl Plan {
    /// Ports to make per server.
    pub fn ports_per_server(&self) -> i64 {
        self.nics
            .iter()
            .filter(|n| matches!(n, PlannedNic::Network { .. }))
            .count() as i64
    }
}

/// Maps the network service's errors to Nova's answers.
fn from_network(e: NetworkError) -> ComputeError {
    match e {
        NetworkError::Db(d) => ComputeError::Db(d),
        NetworkError::Json(j) => ComputeError::Internal(j.to_string()),
        NetworkError::Conflict {
            kind: "OverQuota", ..
        } => ComputeError::QuotaExceeded("Maximum number of ports exceeded".into()),
        NetworkError::Conflict {
            kind: "IpAddressGenerationFailure" | "MacAddressGenerationFailure",
            message,
        } => ComputeError::Conflict(message),
        NetworkError::Conflict { message, .. } | NetworkError::BadRequest { message, .. } => {
            ComputeError::BadRequest(message)
        }
        NetworkError::NotFound { message, .. } => ComputeError::BadRequest(message),
        other => ComputeError::BadRequest(other.to_string()),
    }
}

/// Whether a project may put a server on a network (Neutron's visibility:
/// owner, shared, RBAC-shared, or external; admins everything).
fn usable(conn: &Connection, net: &Network, project: &str, admin: bool) -> ComputeResult<bool> {
    if admin || net.std.project_id == project || net.shared || net.external {
        return Ok(true);
    }
    let targets = network::rbac_targets(conn, &net.std.id).map_err(from_network)?;
    Ok(targets.iter().any(|t| t == "*" || t == project))
}

/// The networks `auto` (and an absent `networks`) may choose from: the
/// project's own and those shared with it, not external (Nova's
/// `_get_available_networks`, with external networks left out).
fn available(conn: &Connection, project: &str) -> ComputeResult<Vec<Network>> {
    let mut out = Vec::new();
    for net in store::all::<Network>(conn).map_err(from_network)? {
        if net.external {
            continue;
        }
        if net.std.project_id == project || net.shared || usable(conn, &net, project, false)? {
            out.push(net);
        }
    }
    Ok(out)
}

fn require_subnet(conn: &Connection, net: &Network) -> ComputeResult<()> {
    if store::children::<Subnet>(conn, &net.std.id)
        .map_err(from_network)?
        .is_empty()
    {
        return Err(bad(format!(
            "Network {} requires a subnet in order to boot instances on.",
            net.std.id
        )));
    }
    Ok(())
}

/// Resolves the security groups by id or name (within the project).
fn resolve_groups(
    conn: &Connection,
    names: &[String],
    project: &str,
    admin: bool,
) -> ComputeResult<Vec<String>> {
    let groups: Vec<SecurityGroup> = store::all(conn).map_err(from_network)?;
    let mut ids = Vec::new();
    for name in names {
        let by_id = groups
            .iter()
            .find(|g| &g.std.id == name && (admin || g.std.project_id == project || g.shared));
        let id = match by_id {
            Some(g) => g.std.id.clone(),
            None => {
                let matching: Vec<&SecurityGroup> = groups
                    .iter()
                    .filter(|g| &g.name == name && g.std.project_id == project)
                    .collect();
                match matching.as_slice() {
                    [one] => one.std.id.clone(),
                    [] if name == "default" => {
                        network::ensure_default(conn, project).map_err(from_network)?
                    }
                    [] => {
                        return Err(bad(format!("Security group {name} not found.")));
                    }
                    _ => {
                        return Err(ComputeError::Conflict(format!(
                            "Multiple security groups found matching '{name}'. Use an ID to be more specific."
                        )));
                    }
                }
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Checks a create's `networks` against the records, as Nova's
/// `validate_networks` does, without writing anything.
pub fn plan(
    conn: &Connection,
    requested: &Requested,
    security_groups: &[String],
    project: &str,
    admin: bool,
) -> ComputeResult<Plan> {
    let mut nics = Vec::new();
    match requested {
        Requested::None => {}
        Requested::Absent | Requested::Auto => {
            let nets = available(conn, project)?;
            match nets.as_slice() {
                [] if *requested == Requested::Auto => {
                    return Err(bad(format!(
                        "Unable to automatically allocate a network for project {project}"
                    )));
                }
                [] => {}
                [net] => {
                    require_subnet(conn, net)?;
                    nics.push(PlannedNic::Network {
                        net: Box::new(net.clone()),
                        fixed_ip: None,
                        tag: None,
                    });
                }
                _ => {
                    return Err(ComputeError::Conflict(
                        "Multiple possible networks found, use a Network ID to be more specific."
                            .into(),
                    ));
                }
            }
        }
        Requested::List(items) => {
            for item in items {
                if let Some(port_id) = &item.port_id {
                    let port = store::load::<Port>(conn, port_id)
                        .map_err(from_network)?
                        .filter(|p| admin || p.std.project_id == project)
                        .ok_or_else(|| bad(format!("Port id {port_id} could not be found.")))?;
                    if !port.device_id.is_empty() {
                        return Err(ComputeError::Conflict(format!(
                            "Port {port_id} is still in use."
                        )));
                    }
                    if port.fixed_ips.is_empty() {
                        return Err(bad(format!(
                            "Port {port_id} requires a FixedIP in order to be used."
                        )));
                    }
                    nics.push(PlannedNic::Port {
                        port_id: port_id.clone(),
                        tag: item.tag.clone(),
                    });
                    continue;
                }
                let Some(net_id) = &item.network_id else {
                    return Err(bad("Bad network format: missing 'uuid'"));
                };
                let net = match store::load::<Network>(conn, net_id).map_err(from_network)? {
                    Some(net) if usable(conn, &net, project, admin)? => net,
                    _ => return Err(bad(format!("Network {net_id} could not be found."))),
                };
                if net.external && !net.shared && !admin {
                    return Err(ComputeError::Forbidden(format!(
                        "It is not allowed to create an interface on external network {net_id}"
                    )));
                }
                require_subnet(conn, &net)?;
                if let Some(ip) = &item.fixed_ip {
                    let ports: Vec<Port> =
                        store::children(conn, &net.std.id).map_err(from_network)?;
                    if let Some(p) = ports
                        .iter()
                        .find(|p| p.fixed_ips.iter().any(|f| &f.ip_address == ip))
                    {
                        return Err(bad(format!(
                            "Fixed IP address {ip} is already in use on instance {}.",
                            p.device_id
                        )));
                    }
                }
                nics.push(PlannedNic::Network {
                    net: Box::new(net),
                    fixed_ip: item.fixed_ip.clone(),
                    tag: item.tag.clone(),
                });
            }
        }
    }
    let plan = Plan {
        nics,
        security_groups: Vec::new(),
    };
    let security_groups = if plan.ports_per_server() > 0 {
        resolve_groups(conn, security_groups, project, admin)?
    } else {
        Vec::new()
    };
    Ok(Plan {
        security_groups,
        ..plan
    })
}

/// Checks an `os-interface` attach as Nova's does: an unknown (or unseen)
/// port or network is 404, a port in use or an address taken 409, the rest
/// as a create's `networks` (400). With neither a port nor a network, the
/// one network the project can use. The plan has exactly one NIC.
pub fn plan_attach(
    conn: &Connection,
    request: &NetRequest,
    project: &str,
    admin: bool,
) -> ComputeResult<Plan> {
    if let Some(port_id) = &request.port_id {
        let port = store::load::<Port>(conn, port_id)
            .map_err(from_network)?
            .filter(|p| admin || p.std.project_id == project)
            .ok_or_else(|| {
                ComputeError::NotFound(format!("Port id {port_id} could not be found."))
            })?;
        if !port.device_id.is_empty() {
            return Err(ComputeError::Conflict(format!(
                "Port {port_id} is still in use."
            )));
        }
    }
    if let Some(net_id) = &request.network_id {
        let seen = match store::load::<Network>(conn, net_id).map_err(from_network)? {
            Some(net) => usable(conn, &net, project, admin)?,
            None => false,
        };
        if !seen {
            return Err(ComputeError::NotFound(format!(
                "Network {net_id} could not be found."
            )));
        }
        if let Some(ip) = &request.fixed_ip {
            let ports: Vec<Port> = store::children(conn, net_id).map_err(from_network)?;
            if let Some(p) = ports
                .iter()
                .find(|p| p.fixed_ips.iter().any(|f| &f.ip_address == ip))
            {
                return Err(ComputeError::Conflict(format!(
                    "Fixed IP address {ip} is already in use on instance {}.",
                    p.device_id
                )));
            }
        }
    }
    let requested = if request.port_id.is_none() && request.network_id.is_none() {
        Requested::Absent
    } else {
        Requested::List(vec![request.clone()])
    };
    let plan = plan(conn, &requested, &["default".to_string()], project, admin)?;
    if plan.nics.len() != 1 {
        return Err(bad(format!(
            "No specific network was requested and none are available for project '{project}'."
        )));
    }
    Ok(plan)
}

/// How many servers (between `min` and `count`) the project's port quota
/// leaves room for; Nova's PortLimitExceeded (403) below `min`.
pub fn fit_port_quota(
    conn: &Connection,
    plan: &Plan,
    project: &str,
    min: i64,
    count: i64,
) -> ComputeResult<i64> {
    let per = plan.ports_per_server();
    if per == 0 {
        return Ok(count);
    }
    let Some(free) = network::headroom(conn, project, "port").map_err(from_network)? else {
        return Ok(count);
    };
    let fits = (free / per).min(count);
    if fits < min {
        return Err(ComputeError::QuotaExceeded(
            "Maximum number of ports exceeded".into(),
        ));
    }
    Ok(fits)
}

/// Makes (or binds) the ports of one server, in NIC order.
pub fn make_ports(
    conn: &Connection,
    plan: &Plan,
    server: &Server,
    host: &str,
) -> ComputeResult<Vec<ServerPort>> {
    let zone = server
        .availability_zone
        .clone()
        .unwrap_or_else(|| super::hosts::ZONE.to_string());
    let owner = format!("compute:{zone}");
    let mut out = Vec::new();
    for nic in &plan.nics {
        match nic {
            PlannedNic::Network { net, fixed_ip, tag } => {
                let spec = PortSpec {
                    fixed_ips: fixed_ip.as_ref().map(|ip| vec![(None, Some(ip.clone()))]),
                    device_id: server.id.clone(),
                    device_owner: owner.clone(),
                    admin_state_up: true,
                    security_groups: net
                        .port_security_enabled
                        .then(|| plan.security_groups.clone()),
                    host_id: host.to_string(),
                    vnic_type: "normal".into(),
                    ..Default::default()
                };
                let port =
                    network::new_port(conn, net, &server.project_id, spec).map_err(
                        |e| match e {
                            NetworkError::Conflict {
                                kind: "IpAddressAlreadyAllocated",
                                ..
                            } => bad(format!(
                                "Fixed IP address {} is already in use on instance .",
                                fixed_ip.clone().unwrap_or_default()
                            )),
                            other => from_network(other),
                        },
                    )?;
                out.push(ServerPort {
                    port_id: port.std.id.clone(),
                    network_id: port.network_id.clone(),
                    mac: port.mac_address.clone(),
                    created: true,
                    tag: tag.clone(),
                });
            }
            PlannedNic::Port { port_id, tag } => {
                let mut port: Port = store::must(conn, port_id).map_err(from_network)?;
                if !port.device_id.is_empty() {
                    return Err(ComputeError::Conflict(format!(
                        "Port {port_id} is still in use."
                    )));
                }
                port.device_id = server.id.clone();
                port.device_owner = owner.clone();
                port.host_id = host.to_string();
                store::save(conn, &mut port).map_err(from_network)?;
                out.push(ServerPort {
                    port_id: port.std.id.clone(),
                    network_id: port.network_id.clone(),
                    mac: port.mac_address.clone(),
                    created: false,
                    tag: tag.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Releases a server's ports (on delete and on a failed build): the ones
/// made for it are deleted, the ones passed in unbound (device, owner and
/// binding cleared), as Nova's `deallocate_for_instance`.
pub fn release(conn: &Connection, server: &Server) -> ComputeResult<()> {
    for sp in &server.ports {
        let Some(mut port) = store::load::<Port>(conn, &sp.port_id).map_err(from_network)? else {
            continue;
        };
        if port.device_id != server.id {
            continue;
        }
        if sp.created {
            network::delete_port_in(conn, &port).map_err(from_network)?;
        } else {
            port.device_id.clear();
            port.device_owner.clear();
            port.host_id.clear();
            port.profile = Map::new();
            port.vif_type = "unbound".into();
            port.vif_details = Map::new();
            port.status = "DOWN".into();
            store::save(conn, &mut port).map_err(from_network)?;
        }
    }
    Ok(())
}

/// After a failed build: the server's ports are released and forgotten
/// (it stays in ERROR without addresses, as Nova leaves it).
pub async fn release_failed_build(s: &ComputeState, id: &str) {
    let id_owned = id.to_string();
    let result = s
        .write(move |tx| {
            let Some(mut server) = crate::db::servers::get_server(tx, &id_owned)? else {
                return Ok(());
            };
            if server.ports.is_empty() {
                return Ok(());
            }
            release(tx, &server)?;
            server.ports.clear();
            crate::db::servers::update_server(tx, &server)?;
            Ok(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(server = %id, error = %e, "cannot release a failed build's ports");
    }
    notify(s);
}

/// Runs a write in one transaction, rolled back whatever the error (the
/// compute service's own `write` commits what a non-database error left):
/// a create that fails half way leaves no server and no port.
pub async fn write_atomic<F, T>(s: &ComputeState, f: F) -> ComputeResult<T>
where
    F: FnOnce(&rusqlite::Transaction) -> ComputeResult<T> + Send + 'static,
    T: Send + 'static,
{
    let slot: Arc<Mutex<Option<ComputeError>>> = Arc::default();
    let inner = slot.clone();
    let result =
        s.db.write(move |tx| match f(tx) {
            Ok(value) => Ok(value),
            Err(ComputeError::Db(e)) => Err(e),
            Err(other) => {
                if let Ok(mut s) = inner.lock() {
                    *s = Some(other);
                }
                Err(DbError::Task("rolled back".into()))
            }
        })
        .await;
    match result {
        Ok(value) => Ok(value),
        Err(e) => match slot.lock().ok().and_then(|mut s| s.take()) {
            Some(other) => Err(other),
            None => Err(ComputeError::Db(e)),
        },
    }
}

/// Plugs a server's ports before its VMM starts, as Nova's `plug_vifs`:
/// with the dataplane, each port's tap is made and the dataplane wires it
/// (and sends `network-vif-plugged` as the port goes `ACTIVE`); without,
/// the ports bound to the server go `ACTIVE` here and their
/// `network-vif-plugged` is sent, as Neutron's noop agent would (there is
/// nothing to wire).
pub async fn plug(s: &ComputeState, server: &Server) -> Result<(), String> {
    if let Some(dp) = &s.config.network.dataplane {
        for sp in &server.ports {
            dp.plug_port(&sp.port_id)
                .await
                .map_err(|e| format!("port {}: {e}", sp.port_id))?;
        }
        return Ok(());
    }
    let server_id = server.id.clone();
    let ids: Vec<String> = server.ports.iter().map(|p| p.port_id.clone()).collect();
    let events = s
        .write(move |tx| {
            let mut events = Vec::new();
            for id in ids {
                let Some(mut port) = store::load::<Port>(tx, &id).map_err(from_network)? else {
                    continue;
                };
                if port.device_id != server_id || port.status == "ACTIVE" {
                    continue;
                }
                port.status = "ACTIVE".into();
                store::save(tx, &mut port).map_err(from_network)?;
                events.push(crate::server_events::ServerEvent::port(
                    crate::server_events::VIF_PLUGGED,
                    &server_id,
                    &id,
                    true,
                ));
            }
            Ok(events)
        })
        .await
        .map_err(|e| e.to_string())?;
    s.config.network.notifier.send(events);
    Ok(())
}

/// The server's ports that are not `ACTIVE` (those a build waits for).
pub async fn ports_down(s: &ComputeState, server: &Server) -> ComputeResult<Vec<String>> {
    let ids: Vec<String> = server.ports.iter().map(|p| p.port_id.clone()).collect();
    s.read(move |conn| {
        let mut down = Vec::new();
        for id in ids {
            let port = store::load::<Port>(conn, &id).map_err(from_network)?;
            if port.is_some_and(|p| p.status != "ACTIVE") {
                down.push(id);
            }
        }
        Ok(down)
    })
    .await
}

/// Tells the dataplane that ports changed (when it runs).
pub fn notify(s: &ComputeState) {
    if let Some(n) = &s.config.network.changed {
        n.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::network_data::mask_and_network;
    use super::*;
    use serde_json::json;

    use crate::compute::request::refused;
    use serde_json::Value;

    /// `networks` (under `server`, as a create reads it) and the parse.
    fn p(mv: u16, v: Value, max: i64) -> ComputeResult<Requested> {
        #[derive(serde::Deserialize)]
        struct Server {
            #[serde(default, deserialize_with = "present")]
            networks: Option<NetworksArg>,
        }
        #[derive(serde::Deserialize)]
        struct Body {
            server: Server,
        }
        let body: Body =
            crate::compute::request::body(json!({"server": v}).to_string().as_bytes())?;
        parse(Mv(mv), body.server.networks, max)
    }

    #[test]
    fn networks_forms_follow_novas_schemas() {
        assert_eq!(p(36, json!({}), 1).ok(), Some(Requested::Absent));
        assert!(p(37, json!({}), 1).is_err());
        assert_eq!(
            p(37, json!({"networks": "none"}), 1).ok(),
            Some(Requested::None)
        );
        assert_eq!(
            p(37, json!({"networks": "auto"}), 1).ok(),
            Some(Requested::Auto)
        );
        assert!(p(36, json!({"networks": "auto"}), 1).is_err());
        assert!(p(37, json!({"networks": "all"}), 1).is_err());
        assert_eq!(
            p(2, json!({"networks": []}), 1).ok(),
            Some(Requested::Absent)
        );
        let net = "4f1c1fd5-7a57-4d4f-9f4a-0c1b2c3d4e5f";
        let Ok(Requested::List(list)) = p(
            37,
            json!({"networks": [{"uuid": net, "fixed_ip": "10.0.0.5"}, {"port": net}, {"uuid": net, "port": null}]}),
            1,
        ) else {
            panic!("a list");
        };
        assert_eq!(list[0].network_id.as_deref(), Some(net));
        assert_eq!(list[0].fixed_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(list[1].port_id.as_deref(), Some(net));
        assert_eq!(list[2].network_id.as_deref(), Some(net));
        for bad in [
            json!({"networks": [{"uuid": "x"}]}),
            json!({"networks": [{"uuid": net, "fixed_ip": "10.0.0"}]}),
            json!({"networks": [{"port": "x"}]}),
            json!({"networks": [{"port": net}, {"port": net}]}),
            json!({"networks": [{"port": net, "fixed_ip": "10.0.0.5"}]}),
            json!({"networks": [{"fixed_ip": "10.0.0.5"}]}),
            json!({"networks": [{"uuid": net, "tag": "a"}]}),
            json!({"networks": [{"uuid": net, "other": 1}]}),
            json!({"networks": [3]}),
            json!({"networks": {"uuid": net}}),
            json!({"networks": null}),
            json!({"networks": vec![json!({"uuid": net}); 17]}),
        ] {
            assert!(p(37, bad.clone(), 1).is_err(), "{bad}");
        }
        assert!(p(36, json!({"networks": [{"uuid": "x"}]}), 1).is_err());
        assert!(p(42, json!({"networks": [{"uuid": net, "tag": "a"}]}), 1).is_ok());
        assert!(p(32, json!({"networks": [{"uuid": net, "tag": "a"}]}), 1).is_ok());
        assert!(p(42, json!({"networks": [{"uuid": net, "tag": "a/b"}]}), 1).is_err());
        assert!(p(37, json!({"networks": [{"port": net}]}), 2).is_err());
        assert!(
            p(
                37,
                json!({"networks": [{"uuid": net, "fixed_ip": "10.0.0.5"}]}),
                2
            )
            .is_err()
        );
        assert!(p(37, json!({"networks": [{"uuid": net}]}), 2).is_ok());
        // Nova's wording, the member named without its list index.
        assert_eq!(
            refused(p(37, json!({}), 1)),
            "Invalid input for field/attribute server. 'networks' is a required property"
        );
        assert_eq!(
            refused(p(37, json!({"networks": [{"uuid": net, "other": 1}]}), 1)),
            "Invalid input for field/attribute networks. Additional properties are not allowed ('other' was unexpected)"
        );
        assert_eq!(
            refused(p(37, json!({"networks": [{"uuid": net, "tag": "a"}]}), 1)),
            "Invalid input for field/attribute networks. Additional properties are not allowed ('tag' was unexpected)"
        );
        assert_eq!(
            refused(p(37, json!({"networks": [{"port": "x"}]}), 1)),
            "Invalid input for field/attribute port. Value: \"x\". \"x\" is not a 'uuid'"
        );
        assert_eq!(
            refused(p(37, json!({"networks": [{"uuid": "x"}]}), 1)),
            "Invalid input for field/attribute uuid. Value: x. 'x' is not a 'uuid'"
        );
        assert_eq!(
            refused(p(36, json!({"networks": [{"uuid": "x"}]}), 1)),
            "Bad networks format: network uuid is not in proper format (x)"
        );
    }

    #[test]
    fn security_groups_default_and_dedup() {
        #[derive(serde::Deserialize)]
        struct Server {
            #[serde(default)]
            security_groups: Option<Vec<SecurityGroupRef>>,
        }
        let groups = |v: Value| -> ComputeResult<Vec<String>> {
            let server: Server =
                crate::compute::request::action_arg("server", json!({ "security_groups": v }))?;
            parse_security_groups(server.security_groups)
        };
        assert_eq!(groups(Value::Null).ok(), Some(vec!["default".to_string()]));
        assert_eq!(
            groups(json!([{"name": "a"}, {"name": "a"}, {"name": "b"}])).ok(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            refused(groups(json!([{}]))),
            "Invalid input for field/attribute security_groups. 'name' is a required property"
        );
        assert!(groups(json!([{"name": "a", "x": 1}])).is_err());
        assert!(groups(json!([{"name": ""}])).is_err());
    }

    #[test]
    fn netmasks_and_networks() {
        let c = crate::network::ipam::Cidr::parse("10.1.2.3/24", false).expect("cidr");
        assert_eq!(
            mask_and_network(&c),
            ("255.255.255.0".into(), "10.1.2.0".into())
        );
        let c = crate::network::ipam::Cidr::parse("2001:db8::/64", false).expect("cidr");
        assert_eq!(mask_and_network(&c).0, "ffff:ffff:ffff:ffff::");
        let c = crate::network::ipam::Cidr::parse("0.0.0.0/0", false).expect("cidr");
        assert_eq!(mask_and_network(&c).0, "0.0.0.0");
    }
}
