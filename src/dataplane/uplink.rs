//! Bridged external mode (`serve --external-interface IFACE`): an external
//! network that is a flat provider network on physical network
//! [`PHYSNET`] is the operator's LAN itself. Its bridge in the host's
//! namespace holds IFACE (or is IFACE, when IFACE is already a bridge, as
//! Proxmox's `vmbr0`), gets no address of the host's and no masquerade:
//! routers' gateways and floating IPs are addresses on that LAN, answered
//! by the routers' namespaces.
//!
//! The host's own addresses are never moved: a plain interface that holds
//! IPv4 addresses is refused at start (enslaving it would cut the host off
//! the LAN); the operator makes a bridge holding it and its addresses and
//! names that bridge instead (docs/network.md, "Bridged mode").

use std::io;

use super::desired::{Topology, bridge_name};
use super::netlink::{self, Socket};
use super::netns::Ns;
use super::nft;
use crate::network::model::Network;

/// The provider physical network bridged to `--external-interface`.
pub const PHYSNET: &str = "public";

/// The interface an external flat network on [`PHYSNET`] is bridged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub interface: String,
    /// IFACE is a bridge already: yunhe's ports go on it directly.
    pub is_bridge: bool,
}

/// Whether a network is bridged to the uplink (not NATed by the host).
pub fn bridged(net: &Network) -> bool {
    net.external && net.network_type == "flat" && net.physical_network.as_deref() == Some(PHYSNET)
}

/// Checks `--external-interface` in the host's namespace: it exists, is
/// not yunhe's own, and is a bridge or holds no IPv4 address.
pub fn check(interface: &str) -> Result<Uplink, String> {
    if interface.starts_with(super::reconcile::LINK_PREFIX) || interface == "lo" {
        return Err(format!(
            "--external-interface {interface}: not an interface yunhe may bridge"
        ));
    }
    let mut sock = Socket::open(netlink::NETLINK_ROUTE)
        .map_err(|e| format!("--external-interface: cannot read the interfaces: {e}"))?;
    let links = netlink::links(&mut sock)
        .map_err(|e| format!("--external-interface: cannot read the interfaces: {e}"))?;
    let Some(link) = links.iter().find(|l| l.name == interface) else {
        return Err(format!(
            "--external-interface {interface}: no such interface in the host's namespace"
        ));
    };
    let is_bridge = link.kind.as_deref() == Some("bridge");
    if !is_bridge {
        let held: Vec<String> = netlink::addrs(&mut sock)
            .map_err(|e| format!("--external-interface: cannot read the addresses: {e}"))?
            .into_iter()
            .filter(|a| a.index == link.index)
            .map(|a| format!("{}/{}", a.ip, a.prefix))
            .collect();
        if !held.is_empty() {
            return Err(format!(
                "--external-interface {interface} holds the host's address {}: bridging it would cut \
                 the host off its LAN. Make a bridge that holds {interface} and that address (as \
                 Proxmox's vmbr0) and pass the bridge, or use an interface without addresses",
                held.join(", ")
            ));
        }
    }
    Ok(Uplink {
        interface: interface.to_string(),
        is_bridge,
    })
}

/// Rewrites the topology of the records for the bridged networks: their
/// bridge has no address, the host does not masquerade their range, and
/// with a bridge for an uplink everything of theirs goes on that bridge.
pub fn rewrite(t: &mut Topology, networks: &[Network], uplink: &Uplink) {
    for net in networks.iter().filter(|n| bridged(n)) {
        let ours = bridge_name(net);
        let out = nft::oifname(&nft::ifname_exact(&ours), false);
        if let Some(tables) = t.tables.get_mut(&Ns::Root) {
            for table in tables.iter_mut() {
                for chain in &mut table.chains {
                    chain
                        .rules
                        .retain(|r| !r.windows(out.len()).any(|w| w == out.as_slice()));
                }
                table.chains.retain(|c| !c.rules.is_empty());
            }
            tables.retain(|tb| !tb.chains.is_empty());
        }
        let name = if uplink.is_bridge {
            uplink.interface.clone()
        } else {
            ours.clone()
        };
        for b in t.bridges.iter_mut().filter(|b| b.name == ours) {
            b.addrs.clear();
            b.name = name.clone();
        }
        for v in t.veths.iter_mut().filter(|v| v.bridge == ours) {
            v.bridge = name.clone();
        }
        for tap in t.taps.iter_mut().filter(|tap| tap.bridge == ours) {
            tap.bridge = name.clone();
        }
        for d in t.dhcp.iter_mut().filter(|d| d.bridge == ours) {
            d.bridge = name.clone();
        }
    }
    if t.tables.get(&Ns::Root).is_some_and(Vec::is_empty) {
        t.tables.remove(&Ns::Root);
    }
    // The host forwards only for networks it NATs.
    t.root_forwarding = t.tables.contains_key(&Ns::Root);
}

/// Puts a plain uplink on the bridged network's bridge (after a pass made
/// the bridge). Deleting the network deletes the bridge, which lets the
/// uplink go.
pub fn enslave(t: &Topology, networks: &[Network], uplink: &Uplink) -> io::Result<()> {
    if uplink.is_bridge {
        return Ok(());
    }
    let Some(net) = networks.iter().find(|n| bridged(n)) else {
        return Ok(());
    };
    let bridge = bridge_name(net);
    if !t.bridges.iter().any(|b| b.name == bridge) {
        return Ok(());
    }
    let mut sock = Socket::open(netlink::NETLINK_ROUTE)?;
    let links = netlink::links(&mut sock)?;
    let (Some(lan), Some(br)) = (
        links.iter().find(|l| l.name == uplink.interface),
        links.iter().find(|l| l.name == bridge),
    ) else {
        return Err(io::Error::other(format!(
            "uplink {} or bridge {bridge} missing",
            uplink.interface
        )));
    };
    if lan.master != Some(br.index as u32) || !lan.up {
        netlink::set_link(&mut sock, lan.index, Some(br.index as u32))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::network::model::{Port, Router, Subnet};

    fn records() -> (
        BTreeMap<String, Network>,
        BTreeMap<String, Subnet>,
        Vec<Port>,
    ) {
        let net: Network = serde_json::from_value(serde_json::json!({
            "id": "11111111-1111-1111-1111-111111111111", "project_id": "p", "tenant_id": "p",
            "description": "", "tags": [], "created_at": "", "updated_at": "", "revision_number": 0,
            "name": "public", "admin_state_up": true, "status": "ACTIVE", "shared": false,
            "router:external": true, "provider:network_type": "flat",
            "provider:physical_network": "public", "provider:segmentation_id": null,
            "mtu": 1500, "port_security_enabled": true, "availability_zone_hints": [],
            "availability_zones": ["nova"], "is_default": false, "ipv4_address_scope": null,
            "ipv6_address_scope": null, "l2_adjacency": true
        }))
        .expect("network");
        let sn: Subnet = serde_json::from_value(serde_json::json!({
            "id": "22222222-2222-2222-2222-222222222222", "project_id": "p", "tenant_id": "p",
            "description": "", "tags": [], "created_at": "", "updated_at": "", "revision_number": 0,
            "name": "public-subnet", "network_id": net.std.id, "ip_version": 4,
            "cidr": "192.0.2.0/24", "gateway_ip": "192.0.2.1",
            "allocation_pools": [{"start": "192.0.2.100", "end": "192.0.2.150"}],
            "dns_nameservers": [], "host_routes": [], "enable_dhcp": false,
            "ipv6_ra_mode": null, "ipv6_address_mode": null, "subnetpool_id": null,
            "service_types": [], "segment_id": null, "dns_publish_fixed_ip": false
        }))
        .expect("subnet");
        let mut nets = BTreeMap::new();
        nets.insert(net.std.id.clone(), net);
        let mut sns = BTreeMap::new();
        sns.insert(sn.std.id.clone(), sn);
        (nets, sns, Vec::new())
    }

    #[test]
    fn a_bridged_network_gets_no_host_address_and_no_masquerade() {
        let (nets, sns, ports) = records();
        let routers: Vec<Router> = Vec::new();
        let mut t = crate::dataplane::desired::build(&nets, &sns, &ports, &routers, &[]);
        // NAT mode would give the bridge 192.0.2.1 and masquerade the range.
        assert!(t.root_forwarding);
        assert!(t.tables.contains_key(&Ns::Root));
        let list: Vec<Network> = nets.values().cloned().collect();
        let plain = Uplink {
            interface: "lan0".into(),
            is_bridge: false,
        };
        rewrite(&mut t, &list, &plain);
        assert!(!t.root_forwarding);
        assert!(!t.tables.contains_key(&Ns::Root));
        let b = &t.bridges[0];
        assert_eq!(b.name, "yh-b1111111111");
        assert!(b.addrs.is_empty());
    }

    #[test]
    fn a_bridge_uplink_takes_the_networks_place() {
        let (nets, sns, ports) = records();
        let mut t = crate::dataplane::desired::build(&nets, &sns, &ports, &[], &[]);
        let list: Vec<Network> = nets.values().cloned().collect();
        let br = Uplink {
            interface: "vmbr0".into(),
            is_bridge: true,
        };
        rewrite(&mut t, &list, &br);
        assert_eq!(t.bridges[0].name, "vmbr0");
        assert!(t.bridges[0].addrs.is_empty());
    }

    #[test]
    fn nat_networks_are_left_alone() {
        let (mut nets, sns, ports) = records();
        for n in nets.values_mut() {
            n.network_type = "local".into();
            n.physical_network = None;
        }
        let mut t = crate::dataplane::desired::build(&nets, &sns, &ports, &[], &[]);
        let before = t.clone();
        let list: Vec<Network> = nets.values().cloned().collect();
        rewrite(
            &mut t,
            &list,
            &Uplink {
                interface: "lan0".into(),
                is_bridge: false,
            },
        );
        assert_eq!(t, before);
    }
}
