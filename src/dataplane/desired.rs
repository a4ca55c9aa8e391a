//! What the kernel should hold, computed from the records alone (no
//! kernel access here, so it is tested against an in-memory state file):
//! the namespaces, bridges, veth pairs, addresses, routes and DHCP leases.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use rusqlite::Connection;

use super::dhcp::Lease;
use super::netns::{Ns, PREFIX};
use super::nft::{self, Chain, Expr, Table};
use crate::network::NetResult;
use crate::network::model::{
    FloatingIp, Network, OWNER_GATEWAY, OWNER_INTERFACE, Port, Router, Rule, Subnet,
};
use crate::network::store;

/// Neutron's DHCP lease time (dhcp_lease_duration), seconds.
pub const LEASE_SECONDS: u32 = 86400;
/// Neutron's default DNS domain.
pub const DNS_DOMAIN: &str = "openstacklocal";
/// The metadata address guests reach through option 121.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The ten hex digits of an id that name its interfaces (interface names
/// hold at most 15 bytes).
pub fn short(id: &str) -> String {
    id.chars().filter(|c| *c != '-').take(10).collect()
}

/// The namespace of a network: its own, or the root one for an external
/// network (which is what connects the host to the floating IPs).
pub fn network_ns(net: &Network) -> Ns {
    if net.external {
        Ns::Root
    } else {
        Ns::Named(format!("{PREFIX}n-{}", net.std.id))
    }
}

pub fn router_ns(router_id: &str) -> Ns {
    Ns::Named(format!("{PREFIX}r-{router_id}"))
}

/// The bridge of a network in its namespace.
pub fn bridge_name(net: &Network) -> String {
    if net.external {
        format!("yh-b{}", short(&net.std.id))
    } else {
        "yh-br".to_string()
    }
}

/// The interface of a compute port (a tap, made on demand).
pub fn tap_name(port_id: &str) -> String {
    format!("yh-t{}", short(port_id))
}

/// An IPv4 CIDR.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = text.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((ip, len))
}

pub use super::netlink::mask;

#[derive(Debug, Clone, PartialEq)]
pub struct Bridge {
    pub ns: Ns,
    pub name: String,
    pub mtu: u32,
    pub addrs: Vec<(Ipv4Addr, u8)>,
    pub network_id: String,
}

/// A veth pair from a router namespace to a network's bridge.
#[derive(Debug, Clone, PartialEq)]
pub struct Veth {
    pub ns: Ns,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub addrs: Vec<(Ipv4Addr, u8)>,
    pub peer_ns: Ns,
    pub peer_name: String,
    pub bridge: String,
    pub mtu: u32,
    pub port_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub ns: Ns,
    pub dst: Ipv4Addr,
    pub len: u8,
    pub gateway: Ipv4Addr,
}

/// A compute port's tap: where it goes when it exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Tap {
    pub ns: Ns,
    pub name: String,
    pub bridge: String,
    pub port_id: String,
    pub mtu: u32,
}

/// DHCP of one network.
#[derive(Debug, Clone, PartialEq)]
pub struct DhcpNet {
    pub network_id: String,
    pub ns: Ns,
    pub bridge: String,
    pub leases: BTreeMap<[u8; 6], Lease>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    pub namespaces: BTreeSet<String>,
    pub bridges: Vec<Bridge>,
    pub veths: Vec<Veth>,
    pub taps: Vec<Tap>,
    pub routes: Vec<Route>,
    pub routers: Vec<Ns>,
    pub dhcp: Vec<DhcpNet>,
    /// yunhe's nftables tables per namespace that needs them (absent:
    /// none): `ip yunhe` (NAT), `bridge yunhe` and `inet yunhe` (security
    /// groups, see `secgroups`).
    pub tables: BTreeMap<Ns, Vec<Table>>,
    /// Whether the root namespace forwards (default NAT mode with an
    /// external network).
    pub root_forwarding: bool,
    /// The metadata service of each router with an interface: its
    /// namespace and the ports it answers, by address.
    pub metadata: BTreeMap<Ns, BTreeMap<Ipv4Addr, super::metadata::Caller>>,
    /// Router interfaces' IPv6 gateway addresses (see `ra`).
    pub gateways6: Vec<super::ra::Gateway6>,
    /// Router interfaces that send router advertisements.
    pub ra: Vec<super::ra::RaIface>,
    /// Routes on a link without a gateway: an isolated network's subnets
    /// on its bridge, so its metadata service answers the guests.
    pub onlink_routes: Vec<OnLinkRoute>,
}

/// A route to `dst/len` on the link `dev` of `ns`.
#[derive(Debug, Clone, PartialEq)]
pub struct OnLinkRoute {
    pub ns: Ns,
    pub dev: String,
    pub dst: Ipv4Addr,
    pub len: u8,
}

/// The IPv4 subnets with DHCP and no router interface, on networks that
/// are not external (Neutron's isolated subnets): their metadata is served
/// from the network's own namespace (`enable_isolated_metadata`).
pub fn isolated_subnets(
    networks: &BTreeMap<String, Network>,
    subnets: &BTreeMap<String, Subnet>,
    ports: &[Port],
) -> BTreeSet<String> {
    let routed: BTreeSet<&String> = ports
        .iter()
        .filter(|p| p.device_owner == OWNER_INTERFACE)
        .flat_map(|p| p.fixed_ips.iter().map(|f| &f.subnet_id))
        .collect();
    subnets
        .values()
        .filter(|s| {
            s.ip_version == 4
                && s.enable_dhcp
                && !routed.contains(&s.std.id)
                && networks.get(&s.network_id).is_some_and(|n| !n.external)
        })
        .map(|s| s.std.id.clone())
        .collect()
}

fn port_v4(port: &Port, subnets: &BTreeMap<String, Subnet>) -> Vec<(Ipv4Addr, u8)> {
    port.fixed_ips
        .iter()
        .filter_map(|f| {
            let ip: Ipv4Addr = f.ip_address.parse().ok()?;
            let (_, len) = parse_cidr(&subnets.get(&f.subnet_id)?.cidr)?;
            Some((ip, len))
        })
        .collect()
}

fn mtu_of(net: &Network) -> u32 {
    u32::try_from(net.mtu)
        .ok()
        .filter(|m| (68..=9000).contains(m))
        .unwrap_or(1500)
}

/// The topology the records call for.
pub fn compute(conn: &Connection) -> NetResult<Topology> {
    let networks: BTreeMap<String, Network> = store::all::<Network>(conn)?
        .into_iter()
        .map(|n| (n.std.id.clone(), n))
        .collect();
    let subnets: BTreeMap<String, Subnet> = store::all::<Subnet>(conn)?
        .into_iter()
        .map(|s| (s.std.id.clone(), s))
        .collect();
    let ports = store::all::<Port>(conn)?;
    let routers = store::all::<Router>(conn)?;
    let fips = store::all::<FloatingIp>(conn)?;
    let rules = store::all::<Rule>(conn)?;
    let mut t = build(&networks, &subnets, &ports, &routers, &fips);
    super::secgroups::add(&mut t.tables, &networks, &ports, &rules);
    for router in &routers {
        let has_interface = ports
            .iter()
            .any(|p| p.device_id == router.std.id && p.device_owner == OWNER_INTERFACE);
        if has_interface {
            let callers =
                super::metadata::callers(&router.std.id, &networks, &subnets, &ports, &fips);
            t.metadata.insert(router_ns(&router.std.id), callers);
        }
    }
    // Isolated metadata: served in the network's namespace.
    let isolated = isolated_subnets(&networks, &subnets, &ports);
    for net in networks.values() {
        let on: Vec<&String> = subnets
            .values()
            .filter(|s| s.network_id == net.std.id && isolated.contains(&s.std.id))
            .map(|s| &s.std.id)
            .collect();
        if !on.is_empty() {
            let callers = super::metadata::callers_on(&on, &networks, &subnets, &ports, &fips);
            t.metadata.insert(network_ns(net), callers);
        }
    }
    Ok(t)
}

fn nat_chain(name: &str, hook: u32, priority: i32, rules: Vec<Vec<Expr>>) -> Chain {
    Chain {
        name: name.to_string(),
        hook: Some(nft::Hook {
            kind: "nat",
            num: hook,
            priority,
            accept: true,
        }),
        rules,
    }
}

/// The topology of these records.
pub fn build(
    networks: &BTreeMap<String, Network>,
    subnets: &BTreeMap<String, Subnet>,
    ports: &[Port],
    routers: &[Router],
    fips: &[FloatingIp],
) -> Topology {
    let mut t = Topology::default();
    let mut root_masq = Vec::new();
    let isolated = isolated_subnets(networks, subnets, ports);
    for net in networks.values() {
        let ns = network_ns(net);
        if let Ns::Named(name) = &ns {
            t.namespaces.insert(name.clone());
        }
        let mut addrs = Vec::new();
        if net.external {
            // Default NAT mode: the host is the upstream router of the
            // external network, at its subnets' gateway addresses.
            for s in subnets.values().filter(|s| s.network_id == net.std.id) {
                if let (Some(gw), Some((base, len))) = (
                    s.gateway_ip.as_deref().and_then(|g| g.parse().ok()),
                    parse_cidr(&s.cidr),
                ) {
                    addrs.push((gw, len));
                    // Out of the host's default route, as the host.
                    let mut rule = nft::ip_in(true, base, len);
                    rule.extend(nft::oifname(&nft::ifname_exact(&bridge_name(net)), false));
                    rule.push(Expr::Masquerade);
                    root_masq.push(rule);
                }
            }
        }
        // An isolated network's metadata address, and routes back to its
        // guests (the namespace has no other address on their subnets).
        for s in subnets
            .values()
            .filter(|s| s.network_id == net.std.id && isolated.contains(&s.std.id))
        {
            if !addrs.contains(&(METADATA_IP, 32)) {
                addrs.push((METADATA_IP, 32));
            }
            if let Some((base, len)) = parse_cidr(&s.cidr) {
                t.onlink_routes.push(OnLinkRoute {
                    ns: ns.clone(),
                    dev: bridge_name(net),
                    dst: Ipv4Addr::from(u32::from(base) & mask(len)),
                    len,
                });
            }
        }
        t.bridges.push(Bridge {
            ns,
            name: bridge_name(net),
            mtu: mtu_of(net),
            addrs,
            network_id: net.std.id.clone(),
        });
    }
    for router in routers {
        let rns = router_ns(&router.std.id);
        if let Ns::Named(name) = &rns {
            t.namespaces.insert(name.clone());
        }
        t.routers.push(rns.clone());
        for port in ports.iter().filter(|p| p.device_id == router.std.id) {
            let Some(net) = networks.get(&port.network_id) else {
                continue;
            };
            let name = match port.device_owner.as_str() {
                OWNER_INTERFACE => format!("yh-q{}", short(&port.std.id)),
                OWNER_GATEWAY => format!("yh-g{}", short(&port.std.id)),
                _ => continue,
            };
            t.veths.push(Veth {
                ns: rns.clone(),
                name: name.clone(),
                mac: super::netlink::parse_mac(&port.mac_address),
                addrs: port_v4(port, subnets),
                peer_ns: network_ns(net),
                peer_name: name.clone(),
                bridge: bridge_name(net),
                mtu: mtu_of(net),
                port_id: port.std.id.clone(),
            });
            if port.device_owner == OWNER_GATEWAY {
                let mut snat = Vec::new();
                let mut dnat = Vec::new();
                let out = nft::ifname_exact(&name);
                let gw_veth = t.veths.len() - 1;
                for fip in fips.iter().filter(|f| {
                    f.router_id.as_deref() == Some(router.std.id.as_str()) && f.port_id.is_some()
                }) {
                    let (Ok(public), Some(Ok(fixed))) = (
                        fip.floating_ip_address.parse::<Ipv4Addr>(),
                        fip.fixed_ip_address.as_deref().map(str::parse::<Ipv4Addr>),
                    ) else {
                        continue;
                    };
                    t.veths[gw_veth].addrs.push((public, 32));
                    let mut rule = nft::oifname(&out, true);
                    rule.extend(nft::ip_in(true, fixed, 32));
                    rule.push(Expr::Nat {
                        source: true,
                        to: public,
                    });
                    snat.push(rule);
                    let mut rule = nft::ip_in(false, public, 32);
                    rule.push(Expr::Nat {
                        source: false,
                        to: fixed,
                    });
                    dnat.push(rule);
                }
                let enable_snat = router
                    .external_gateway_info
                    .as_ref()
                    .is_none_or(|g| g.enable_snat);
                if enable_snat && let Some((gw_ip, _)) = port_v4(port, subnets).first() {
                    let mut rule = nft::oifname(&out, true);
                    rule.push(Expr::Nat {
                        source: true,
                        to: *gw_ip,
                    });
                    snat.push(rule);
                }
                let mut chains = Vec::new();
                if !dnat.is_empty() {
                    chains.push(nat_chain("prerouting", nft::HOOK_PREROUTING, -100, dnat));
                }
                if !snat.is_empty() {
                    chains.push(nat_chain("postrouting", nft::HOOK_POSTROUTING, 100, snat));
                }
                if !chains.is_empty() {
                    t.tables
                        .entry(rns.clone())
                        .or_default()
                        .push(Table::new(nft::NFPROTO_IPV4, chains));
                }
                for f in &port.fixed_ips {
                    let gw = subnets
                        .get(&f.subnet_id)
                        .and_then(|s| s.gateway_ip.as_deref())
                        .and_then(|g| g.parse::<Ipv4Addr>().ok());
                    if let Some(gateway) = gw {
                        t.routes.push(Route {
                            ns: rns.clone(),
                            dst: Ipv4Addr::UNSPECIFIED,
                            len: 0,
                            gateway,
                        });
                        break;
                    }
                }
            }
        }
        for r in &router.routes {
            if let (Some((dst, len)), Ok(gateway)) =
                (parse_cidr(&r.destination), r.nexthop.parse::<Ipv4Addr>())
            {
                t.routes.push(Route {
                    ns: rns.clone(),
                    dst: Ipv4Addr::from(u32::from(dst) & mask(len)),
                    len,
                    gateway,
                });
            }
        }
    }
    if !root_masq.is_empty() {
        t.root_forwarding = true;
        t.tables.entry(Ns::Root).or_default().push(Table::new(
            nft::NFPROTO_IPV4,
            vec![nat_chain(
                "postrouting",
                nft::HOOK_POSTROUTING,
                100,
                root_masq,
            )],
        ));
    }
    for port in ports {
        if port.device_owner.starts_with("network:") {
            continue;
        }
        let Some(net) = networks.get(&port.network_id) else {
            continue;
        };
        t.taps.push(Tap {
            ns: network_ns(net),
            name: tap_name(&port.std.id),
            bridge: bridge_name(net),
            port_id: port.std.id.clone(),
            mtu: mtu_of(net),
        });
    }
    for net in networks.values() {
        let mut leases = BTreeMap::new();
        for port in ports.iter().filter(|p| p.network_id == net.std.id) {
            if port.device_owner.starts_with("network:") {
                continue;
            }
            let Some(mac) = super::netlink::parse_mac(&port.mac_address) else {
                continue;
            };
            for f in &port.fixed_ips {
                let Some(subnet) = subnets.get(&f.subnet_id) else {
                    continue;
                };
                if !subnet.enable_dhcp || subnet.ip_version != 4 {
                    continue;
                }
                if let Some(mut lease) = lease_for(net, subnet, port, &f.ip_address) {
                    if isolated.contains(&subnet.std.id) {
                        // No router: 169.254.169.254 is on the link (the
                        // network's bridge), RFC 3442's router 0.0.0.0.
                        let gw = lease.gateway;
                        lease
                            .routes
                            .retain(|r| !(r.0 == METADATA_IP && r.1 == 32 && Some(r.2) == gw));
                        if !lease.routes.iter().any(|r| r.0 == METADATA_IP && r.1 == 32) {
                            lease
                                .routes
                                .insert(0, (METADATA_IP, 32, Ipv4Addr::UNSPECIFIED));
                        }
                    }
                    leases.insert(mac, lease);
                    break;
                }
            }
        }
        let has_dhcp = subnets
            .values()
            .any(|s| s.network_id == net.std.id && s.enable_dhcp && s.ip_version == 4);
        if has_dhcp {
            t.dhcp.push(DhcpNet {
                network_id: net.std.id.clone(),
                ns: network_ns(net),
                bridge: bridge_name(net),
                leases,
            });
        }
    }
    let (gateways6, ra) = super::ra::desired(
        networks,
        subnets,
        ports,
        router_ns,
        |port_id| format!("yh-q{}", short(port_id)),
        mtu_of,
    );
    t.gateways6 = gateways6;
    t.ra = ra;
    t
}

/// The lease of a port's address on a subnet.
pub fn lease_for(net: &Network, subnet: &Subnet, port: &Port, ip: &str) -> Option<Lease> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    let (base, len) = parse_cidr(&subnet.cidr)?;
    let gateway: Option<Ipv4Addr> = subnet.gateway_ip.as_deref().and_then(|g| g.parse().ok());
    let server = gateway.unwrap_or(Ipv4Addr::from(
        (u32::from(base) & mask(len)).wrapping_add(1),
    ));
    let mut routes: Vec<(Ipv4Addr, u8, Ipv4Addr)> = subnet
        .host_routes
        .iter()
        .filter_map(|r| {
            let (dst, len) = parse_cidr(&r.destination)?;
            Some((dst, len, r.nexthop.parse().ok()?))
        })
        .collect();
    if let Some(gw) = gateway {
        if !routes.iter().any(|r| r.0 == METADATA_IP && r.1 == 32) {
            routes.push((METADATA_IP, 32, gw));
        }
        if !routes.iter().any(|r| r.1 == 0) {
            routes.push((Ipv4Addr::UNSPECIFIED, 0, gw));
        }
    }
    let dns = subnet
        .dns_nameservers
        .iter()
        .filter_map(|d| d.parse().ok())
        .collect();
    let hostname = if port.dns_name.is_empty() {
        format!("host-{}", ip.to_string().replace('.', "-"))
    } else {
        port.dns_name.clone()
    };
    Some(Lease {
        ip,
        prefix: len,
        server,
        gateway,
        dns,
        domain: DNS_DOMAIN.to_string(),
        hostname,
        mtu: mtu_of(net) as u16,
        routes,
        lease_seconds: LEASE_SECONDS,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn std(id: &str) -> Value {
        json!({"id": id, "project_id": "p", "tenant_id": "p", "description": "",
               "created_at": "", "updated_at": "", "revision_number": 0})
    }

    fn merge(mut a: Value, b: Value) -> Value {
        if let (Some(a), Some(b)) = (a.as_object_mut(), b.as_object()) {
            for (k, v) in b {
                a.insert(k.clone(), v.clone());
            }
        }
        a
    }

    fn network(id: &str, external: bool) -> Network {
        serde_json::from_value(merge(
            std(id),
            json!({
            "name": id, "admin_state_up": true, "status": "ACTIVE", "shared": false,
            "router:external": external, "provider:network_type": "local", "mtu": 1450,
            "port_security_enabled": true, "availability_zone_hints": [],
            "availability_zones": [], "is_default": false, "l2_adjacency": true}),
        ))
        .unwrap()
    }

    fn subnet(id: &str, net: &str, cidr: &str, gw: &str, dhcp: bool) -> Subnet {
        serde_json::from_value(merge(
            std(id),
            json!({
            "name": id, "network_id": net, "ip_version": 4, "cidr": cidr, "gateway_ip": gw,
            "allocation_pools": [], "dns_nameservers": ["10.9.9.9"],
            "host_routes": [{"destination": "10.20.0.0/16", "nexthop": "10.0.0.254"}],
            "enable_dhcp": dhcp, "service_types": [], "dns_publish_fixed_ip": false}),
        ))
        .unwrap()
    }

    pub(in crate::dataplane) fn port(
        id: &str,
        net: &str,
        owner: &str,
        device: &str,
        subnet: &str,
        ip: &str,
    ) -> Port {
        serde_json::from_value(merge(
            std(id),
            json!({
            "name": "", "network_id": net, "mac_address": "fa:16:3e:00:00:01",
            "admin_state_up": true, "status": "DOWN", "device_id": device,
            "device_owner": owner, "fixed_ips": [{"subnet_id": subnet, "ip_address": ip}],
            "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": [],
            "port_security_enabled": true, "binding:host_id": "", "binding:vnic_type": "normal",
            "binding:profile": {}, "binding:vif_type": "unbound", "binding:vif_details": {},
            "dns_name": "", "propagate_uplink_status": false}),
        ))
        .unwrap()
    }

    fn router(id: &str) -> Router {
        serde_json::from_value(merge(std(id), json!({
            "name": id, "admin_state_up": true, "status": "ACTIVE",
            "external_gateway_info": null, "routes": [{"destination": "10.30.0.0/16", "nexthop": "10.0.0.9"}],
            "distributed": false, "ha": false, "availability_zone_hints": [],
            "availability_zones": []})))
        .unwrap()
    }

    #[test]
    fn topology_of_a_network_a_router_and_an_external_network() {
        let nets: BTreeMap<String, Network> = [network("n1", false), network("ext", true)]
            .into_iter()
            .map(|n| (n.std.id.clone(), n))
            .collect();
        let subs: BTreeMap<String, Subnet> = [
            subnet("s1", "n1", "10.0.0.0/24", "10.0.0.1", true),
            subnet("se", "ext", "172.24.4.0/24", "172.24.4.1", false),
        ]
        .into_iter()
        .map(|s| (s.std.id.clone(), s))
        .collect();
        let ports = vec![
            port("vm-port-0001", "n1", "compute:nova", "vm", "s1", "10.0.0.5"),
            port(
                "rq-port-0001",
                "n1",
                OWNER_INTERFACE,
                "r1",
                "s1",
                "10.0.0.1",
            ),
            port(
                "rg-port-0001",
                "ext",
                OWNER_GATEWAY,
                "r1",
                "se",
                "172.24.4.10",
            ),
        ];
        let t = build(&nets, &subs, &ports, &[router("r1")], &[]);
        assert_eq!(
            t.namespaces.iter().cloned().collect::<Vec<_>>(),
            vec!["yunhe-n-n1".to_string(), "yunhe-r-r1".to_string()]
        );
        let ext = t.bridges.iter().find(|b| b.network_id == "ext").unwrap();
        assert_eq!(ext.ns, Ns::Root);
        assert_eq!(ext.name, "yh-bext");
        assert_eq!(ext.addrs, vec![(Ipv4Addr::new(172, 24, 4, 1), 24)]);
        let n1 = t.bridges.iter().find(|b| b.network_id == "n1").unwrap();
        assert_eq!((n1.name.as_str(), n1.mtu), ("yh-br", 1450));
        assert!(n1.addrs.is_empty());
        assert_eq!(t.veths.len(), 2);
        let qr = t.veths.iter().find(|v| v.name == "yh-qrqport0001").unwrap();
        assert_eq!(qr.ns, Ns::Named("yunhe-r-r1".into()));
        assert_eq!(qr.peer_ns, Ns::Named("yunhe-n-n1".into()));
        assert_eq!(qr.addrs, vec![(Ipv4Addr::new(10, 0, 0, 1), 24)]);
        let gw = t.veths.iter().find(|v| v.name == "yh-grgport0001").unwrap();
        assert_eq!(gw.peer_ns, Ns::Root);
        assert_eq!(gw.bridge, "yh-bext");
        assert!(t.routes.contains(&Route {
            ns: Ns::Named("yunhe-r-r1".into()),
            dst: Ipv4Addr::UNSPECIFIED,
            len: 0,
            gateway: Ipv4Addr::new(172, 24, 4, 1),
        }));
        assert!(
            t.routes
                .iter()
                .any(|r| r.len == 16 && r.gateway == Ipv4Addr::new(10, 0, 0, 9))
        );
        assert_eq!(t.taps.len(), 1);
        assert_eq!(t.taps[0].name, "yh-tvmport0001");
        // DHCP: only the compute port, with every option.
        assert_eq!(t.dhcp.len(), 1);
        let lease = t.dhcp[0].leases.values().next().unwrap();
        assert_eq!(lease.ip, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(lease.server, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(lease.mtu, 1450);
        assert_eq!(lease.hostname, "host-10-0-0-5");
        assert_eq!(lease.lease_seconds, 86400);
        assert!(
            lease
                .routes
                .contains(&(METADATA_IP, 32, Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(lease.routes.contains(&(
            Ipv4Addr::new(10, 20, 0, 0),
            16,
            Ipv4Addr::new(10, 0, 0, 254)
        )));
        assert!(
            lease
                .routes
                .contains(&(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 0, 0, 1)))
        );
    }

    #[test]
    fn isolated_network_serves_metadata_on_its_bridge() {
        let nets: BTreeMap<String, Network> = [network("n2", false), network("n1", false)]
            .into_iter()
            .map(|n| (n.std.id.clone(), n))
            .collect();
        let subs: BTreeMap<String, Subnet> = [
            subnet("s2", "n2", "10.1.0.0/24", "10.1.0.1", true),
            subnet("s1", "n1", "10.0.0.0/24", "10.0.0.1", true),
        ]
        .into_iter()
        .map(|s| (s.std.id.clone(), s))
        .collect();
        let ports = vec![
            port("vm-port-0002", "n2", "compute:nova", "vm", "s2", "10.1.0.5"),
            port("vm-port-0001", "n1", "compute:nova", "vm", "s1", "10.0.0.5"),
            port(
                "rq-port-0001",
                "n1",
                OWNER_INTERFACE,
                "r1",
                "s1",
                "10.0.0.1",
            ),
        ];
        assert_eq!(
            isolated_subnets(&nets, &subs, &ports),
            ["s2".to_string()].into_iter().collect()
        );
        let t = build(&nets, &subs, &ports, &[router("r1")], &[]);
        let n2 = t.bridges.iter().find(|b| b.network_id == "n2").unwrap();
        assert_eq!(n2.addrs, vec![(METADATA_IP, 32)]);
        let n1 = t.bridges.iter().find(|b| b.network_id == "n1").unwrap();
        assert!(n1.addrs.is_empty());
        assert_eq!(
            t.onlink_routes,
            vec![OnLinkRoute {
                ns: Ns::Named("yunhe-n-n2".into()),
                dev: "yh-br".into(),
                dst: Ipv4Addr::new(10, 1, 0, 0),
                len: 24,
            }]
        );
        let lease = |net: &str| {
            let d = t.dhcp.iter().find(|d| d.network_id == net).unwrap();
            d.leases.values().next().unwrap().clone()
        };
        // Isolated: on the link (router 0.0.0.0), not via the gateway; the
        // default route stays.
        let l2 = lease("n2");
        assert!(
            l2.routes
                .contains(&(METADATA_IP, 32, Ipv4Addr::UNSPECIFIED))
        );
        assert!(
            !l2.routes
                .contains(&(METADATA_IP, 32, Ipv4Addr::new(10, 1, 0, 1)))
        );
        assert!(
            l2.routes
                .contains(&(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 1, 0, 1)))
        );
        // Routed: through the router, as before.
        assert!(
            lease("n1")
                .routes
                .contains(&(METADATA_IP, 32, Ipv4Addr::new(10, 0, 0, 1)))
        );
        // No router interface on an IPv6 subnet: nothing of IPv6.
        assert!(t.gateways6.is_empty() && t.ra.is_empty());
    }

    #[test]
    fn nothing_wanted_without_records() {
        let t = build(&BTreeMap::new(), &BTreeMap::new(), &[], &[], &[]);
        assert_eq!(t, Topology::default());
    }
}
