//! What the API shows of a server's ports, read from the port records at
//! view time: `addresses`, the security groups of the server view, `ips`
//! and `os-interface`.

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::from_network;
use crate::compute::{ComputeResult, ComputeState, Mv};
use crate::db::servers::{Server, ServerPort};
use crate::network::model::{FloatingIp, Network, Port, SecurityGroup};
use crate::network::store;

/// One address of `addresses` (Nova's `OS-EXT-IPS` and `OS-EXT-IPS-MAC`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AddressView {
    pub version: u8,
    pub addr: String,
    #[serde(rename = "OS-EXT-IPS:type")]
    pub kind: &'static str,
    #[serde(rename = "OS-EXT-IPS-MAC:mac_addr")]
    pub mac_addr: String,
}

/// A server's addresses by network name.
pub type Addresses = BTreeMap<String, Vec<AddressView>>;

/// What a server's show and detail views say of its ports: `addresses`, and
/// the names of the security groups on them (Nova's `security_groups`, one
/// entry per group, left out of the view when there is none).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PortFacts {
    pub addresses: Addresses,
    pub security_groups: Vec<String>,
}

fn version_of(ip: &str) -> u8 {
    if ip.contains(':') { 6 } else { 4 }
}

/// Reads what the views need about many servers' ports at once.
pub(super) struct Lookup<'c> {
    conn: &'c Connection,
    networks: HashMap<String, Option<Network>>,
    floating: Option<HashMap<String, Vec<FloatingIp>>>,
    group_names: HashMap<String, Option<String>>,
}

impl<'c> Lookup<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Lookup {
            conn,
            networks: HashMap::new(),
            floating: None,
            group_names: HashMap::new(),
        }
    }

    fn group_name(&mut self, id: &str) -> ComputeResult<Option<String>> {
        if !self.group_names.contains_key(id) {
            let group = store::load::<SecurityGroup>(self.conn, id).map_err(from_network)?;
            self.group_names
                .insert(id.to_string(), group.map(|g| g.name));
        }
        Ok(self.group_names.get(id).cloned().flatten())
    }

    /// The addresses and the security groups' names of a server's ports.
    fn facts(&mut self, server: &Server) -> ComputeResult<PortFacts> {
        let ports = self.ports(server)?;
        let addresses = self.addresses_of_ports(&ports)?;
        let mut security_groups: Vec<String> = Vec::new();
        for (_, port) in &ports {
            for id in &port.security_groups {
                if let Some(name) = self.group_name(id)?
                    && !security_groups.contains(&name)
                {
                    security_groups.push(name);
                }
            }
        }
        Ok(PortFacts {
            addresses,
            security_groups,
        })
    }

    fn network_name(&mut self, id: &str) -> ComputeResult<String> {
        if !self.networks.contains_key(id) {
            let net = store::load::<Network>(self.conn, id).map_err(from_network)?;
            self.networks.insert(id.to_string(), net);
        }
        Ok(self
            .networks
            .get(id)
            .and_then(|n| n.as_ref())
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string()))
    }

    fn floating_of(&mut self, port_id: &str) -> ComputeResult<Vec<FloatingIp>> {
        if self.floating.is_none() {
            let mut map: HashMap<String, Vec<FloatingIp>> = HashMap::new();
            for f in store::all::<FloatingIp>(self.conn).map_err(from_network)? {
                if let Some(p) = f.port_id.clone() {
                    map.entry(p).or_default().push(f);
                }
            }
            self.floating = Some(map);
        }
        Ok(self
            .floating
            .as_ref()
            .and_then(|m| m.get(port_id).cloned())
            .unwrap_or_default())
    }

    /// The server's ports that still exist and are still its own.
    pub(super) fn ports(&self, server: &Server) -> ComputeResult<Vec<(ServerPort, Port)>> {
        let mut out = Vec::new();
        for sp in &server.ports {
            if let Some(port) = store::load::<Port>(self.conn, &sp.port_id).map_err(from_network)?
                && port.device_id == server.id
            {
                out.push((sp.clone(), port));
            }
        }
        Ok(out)
    }

    fn addresses(&mut self, server: &Server) -> ComputeResult<Addresses> {
        let ports = self.ports(server)?;
        self.addresses_of_ports(&ports)
    }

    fn addresses_of_ports(&mut self, ports: &[(ServerPort, Port)]) -> ComputeResult<Addresses> {
        let mut out = Addresses::new();
        for (_, port) in ports {
            let name = self.network_name(&port.network_id)?;
            let list = out.entry(name).or_default();
            for f in &port.fixed_ips {
                list.push(AddressView {
                    version: version_of(&f.ip_address),
                    addr: f.ip_address.clone(),
                    kind: "fixed",
                    mac_addr: port.mac_address.clone(),
                });
            }
            for f in self.floating_of(&port.std.id)? {
                list.push(AddressView {
                    version: 4,
                    addr: f.floating_ip_address.clone(),
                    kind: "floating",
                    mac_addr: port.mac_address.clone(),
                });
            }
        }
        Ok(out)
    }
}

/// The port facts (addresses, security groups) of each server (by id),
/// read now from the port, floating IP and group records.
pub fn port_facts_many(
    conn: &Connection,
    servers: &[&Server],
) -> ComputeResult<HashMap<String, PortFacts>> {
    let mut lookup = Lookup::new(conn);
    let mut out = HashMap::new();
    for server in servers {
        if server.ports.is_empty() {
            continue;
        }
        out.insert(server.id.clone(), lookup.facts(server)?);
    }
    Ok(out)
}

/// The port facts of one server.
pub async fn port_facts_of(s: &ComputeState, server: &Server) -> ComputeResult<PortFacts> {
    if server.ports.is_empty() {
        return Ok(PortFacts::default());
    }
    let server = server.clone();
    s.read(move |conn| Lookup::new(conn).facts(&server)).await
}

/// The `addresses` of one server.
pub async fn addresses_of(s: &ComputeState, server: &Server) -> ComputeResult<Addresses> {
    if server.ports.is_empty() {
        return Ok(Addresses::new());
    }
    let server = server.clone();
    s.read(move |conn| Lookup::new(conn).addresses(&server))
        .await
}

/// `GET /servers/{id}/ips`: addresses without the extended keys.
pub fn ips_view(addresses: &Addresses) -> Value {
    let map: Map<String, Value> = addresses
        .iter()
        .map(|(name, list)| (name.clone(), basic_ips(list)))
        .collect();
    json!({ "addresses": map })
}

/// `GET /servers/{id}/ips/{network}`'s list.
pub fn basic_ips(list: &[AddressView]) -> Value {
    Value::Array(
        list.iter()
            .map(|a| json!({"version": a.version, "addr": a.addr}))
            .collect(),
    )
}

/// One interface attachment as Nova's os-interface shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceView {
    pub net_id: String,
    pub port_id: String,
    pub mac_addr: String,
    pub port_state: String,
    pub fixed_ips: Vec<crate::network::model::FixedIp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<Option<String>>,
}

/// The server's interface attachments, in NIC order.
pub async fn interfaces_of(
    s: &ComputeState,
    server: &Server,
    mv: Mv,
) -> ComputeResult<Vec<InterfaceView>> {
    if server.ports.is_empty() {
        return Ok(Vec::new());
    }
    let server = server.clone();
    let ports = s.read(move |conn| Lookup::new(conn).ports(&server)).await?;
    Ok(ports
        .into_iter()
        .map(|(sp, p)| InterfaceView {
            net_id: p.network_id,
            port_id: p.std.id,
            mac_addr: p.mac_address,
            port_state: p.status,
            fixed_ips: p.fixed_ips,
            tag: mv.at_least(70).then_some(sp.tag),
        })
        .collect())
}
