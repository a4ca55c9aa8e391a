//! Security groups and port security in nftables, computed from the
//! records alone (pure; unit-tested here, applied by `reconcile` with the
//! rest of a namespace's tables in one batch).
//!
//! In each network's namespace, for the compute ports on its bridge with
//! `port_security_enabled`:
//!
//! - `bridge yunhe`, chain `prerouting` (priority -300, before the bridge's
//!   netfilter glue): a frame from port *i*'s tap goes through
//!   `spoof-<port>` (its MAC and fixed IPs, allowed address pairs, DHCP
//!   discover from 0.0.0.0, ARP whose sender is the port, IPv6 link-local;
//!   no DHCP server answers from a guest; anything else dropped), then the
//!   mark's low 16 bits are set to *i*. Chain `forward` (priority -200,
//!   before the bridge hands the frame to the IP hooks): a frame going out
//!   of port *j*'s tap gets *j* in the mark's high 16 bits.
//! - The bridge has `nf_call_iptables`/`nf_call_ip6tables` on (its own
//!   flag, not the host-wide sysctl), so bridged IP frames pass the
//!   namespace's IP forward hook with conntrack: `inet yunhe`, chain
//!   `forward`: unmarked (neither end filtered) accept; `ct state
//!   established,related` accept; `invalid` drop; low bits *i* jump
//!   `out-<port>` (DHCP and ICMPv6 neighbour discovery out, the egress
//!   rules of the port's groups `return`, else drop); high bits *j* jump
//!   `in-<port>` (ICMPv6 neighbour discovery, the ingress rules accept,
//!   else drop).
//! - `remote_group_id` is a lookup in a named set `v4-<group>` /
//!   `v6-<group>` holding the addresses of the group's ports (fixed IPs and
//!   single-address allowed address pairs), rewritten as members change.
//!
//! ARP is not IP: it is never filtered by rules (only anti-spoofed), as
//! Neutron. DHCP from the guest reaches yunhe's DHCP server on the bridge
//! itself (local delivery, not forwarding), so it is always allowed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::netns::{Ns, PREFIX};
use super::nft::{
    self, BASE_LINK, BASE_NETWORK, BASE_TRANSPORT, Chain, Expr, Hook, Op, Set, Table, Verdict,
};
use crate::network::model::{Network, PROTOCOLS, Port, Rule};

/// Protocols whose port range is a destination port range.
const PORTED: &[u8] = &[6, 17, 33, 132, 136];

const ETH_IP: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IP6: u16 = 0x86dd;

/// A rule's protocol as a number: None for any (`null`, `any`, `0`), Some
/// for a name or a number; Err for what is neither.
fn protocol_number(p: Option<&str>) -> Result<Option<u8>, ()> {
    let Some(p) = p else { return Ok(None) };
    let p = p.to_ascii_lowercase();
    if p == "any" || p == "0" {
        return Ok(None);
    }
    if let Ok(n) = p.parse::<u8>() {
        return Ok(Some(n));
    }
    // Neutron's names (network::model::PROTOCOLS); those meaning protocol 0
    // (`ip`, `hopopt`) are refused here, fail-closed, as before.
    PROTOCOLS
        .iter()
        .find(|(name, n)| *name == p && *n != 0)
        .map(|(_, n)| Some(*n))
        .ok_or(())
}

/// An address or CIDR (a bare address is a host prefix).
pub fn parse_net(text: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn prefix_mask(bytes: usize, len: u8) -> Vec<u8> {
    (0..bytes)
        .map(|i| {
            let bits = (usize::from(len)).saturating_sub(i * 8).min(8);
            if bits == 0 { 0 } else { 0xffu8 << (8 - bits) }
        })
        .collect()
}

fn cmp(op: Op, data: Vec<u8>) -> Expr {
    Expr::Compare { op, data }
}

/// Loaded value (register 1) is `data`.
fn eq(data: Vec<u8>) -> Expr {
    cmp(Op::Eq, data)
}

fn payload(base: u32, offset: u32, len: u32) -> Expr {
    Expr::Payload { base, offset, len }
}

/// `meta nfproto ipv4|ipv6`.
fn nfproto(v6: bool) -> Vec<Expr> {
    let p = if v6 {
        nft::NFPROTO_IPV6
    } else {
        nft::NFPROTO_IPV4
    };
    vec![Expr::Meta(nft::META_NFPROTO), eq(vec![p])]
}

fn l4proto(n: u8) -> Vec<Expr> {
    vec![Expr::Meta(nft::META_L4PROTO), eq(vec![n])]
}

/// Register 1 (an address of `bytes` bytes) lies in `ip/len`.
fn in_net(load: Expr, ip: IpAddr, len: u8) -> Vec<Expr> {
    let bytes = ip_bytes(ip);
    let n = bytes.len();
    if len == 0 {
        return Vec::new();
    }
    let mask = prefix_mask(n, len);
    let net: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
    let mut v = vec![load];
    if usize::from(len) < n * 8 {
        v.push(Expr::Bitwise {
            mask,
            xor: vec![0; n],
        });
    }
    v.push(eq(net));
    v
}

/// The source (or destination) address of an IPv4/IPv6 packet.
fn addr(v6: bool, source: bool) -> Expr {
    match (v6, source) {
        (false, true) => payload(BASE_NETWORK, 12, 4),
        (false, false) => payload(BASE_NETWORK, 16, 4),
        (true, true) => payload(BASE_NETWORK, 8, 16),
        (true, false) => payload(BASE_NETWORK, 24, 16),
    }
}

/// The set of a remote group's addresses of one IP version.
pub fn set_name(v6: bool, group_id: &str) -> String {
    format!("{}-{group_id}", if v6 { "v6" } else { "v4" })
}

/// The expressions that match a rule's traffic (no verdict), in the
/// port's direction: for `ingress` the remote side is the source. None
/// when the rule cannot be expressed (then it allows nothing: fail closed).
/// Remote groups name their set in `sets` (name → id, added on first use).
pub fn rule_match(rule: &Rule, sets: &mut BTreeMap<String, u32>) -> Option<Vec<Expr>> {
    let v6 = match rule.ethertype.as_str() {
        "IPv4" => false,
        "IPv6" => true,
        _ => return None,
    };
    let ingress = rule.direction == "ingress";
    if rule.remote_address_group_id.is_some() {
        return None;
    }
    let mut m = nfproto(v6);
    let mut proto = protocol_number(rule.protocol.as_deref()).ok()?;
    // Neutron takes `icmp` on an IPv6 rule for ICMPv6.
    if v6 && proto == Some(1) {
        proto = Some(58);
    }
    if let Some(p) = proto {
        m.extend(l4proto(p));
        let (min, max) = (rule.port_range_min, rule.port_range_max);
        if PORTED.contains(&p) {
            if let Some(min) = min {
                let min = u16::try_from(min).ok()?;
                let max = u16::try_from(max.unwrap_or(i64::from(min))).ok()?;
                m.push(payload(BASE_TRANSPORT, 2, 2));
                if min == max {
                    m.push(eq(min.to_be_bytes().to_vec()));
                } else {
                    m.push(cmp(Op::Gte, min.to_be_bytes().to_vec()));
                    m.push(cmp(Op::Lte, max.to_be_bytes().to_vec()));
                }
            }
        } else if p == 1 || p == 58 {
            // ICMP: port_range_min is the type, port_range_max the code.
            if let Some(ty) = min {
                m.push(payload(BASE_TRANSPORT, 0, 1));
                m.push(eq(vec![u8::try_from(ty).ok()?]));
                if let Some(code) = max {
                    m.push(payload(BASE_TRANSPORT, 1, 1));
                    m.push(eq(vec![u8::try_from(code).ok()?]));
                }
            }
        }
    }
    if let Some(prefix) = &rule.remote_ip_prefix {
        let (ip, len) = parse_net(prefix)?;
        if ip.is_ipv6() != v6 {
            return None;
        }
        m.extend(in_net(addr(v6, ingress), ip, len));
    }
    if let Some(group) = &rule.remote_group_id {
        let name = set_name(v6, group);
        let next = sets.len() as u32 + 1;
        let id = *sets.entry(name.clone()).or_insert(next);
        m.push(addr(v6, ingress));
        m.push(Expr::Lookup {
            set: name,
            id,
            invert: false,
        });
    }
    Some(m)
}

fn ifname(output: bool, name: &str) -> Vec<Expr> {
    vec![Expr::IfName { output }, eq(nft::ifname_exact(name))]
}

fn verdict(mut m: Vec<Expr>, v: Verdict) -> Vec<Expr> {
    m.push(Expr::Verdict(v));
    m
}

fn mark_is(mask: u32, value: u32) -> Vec<Expr> {
    let mut v = vec![Expr::Meta(nft::META_MARK)];
    if mask != u32::MAX {
        v.push(Expr::Bitwise {
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
    }
    v.push(eq(value.to_ne_bytes().to_vec()));
    v
}

fn ct_has(bits: u32) -> Vec<Expr> {
    vec![
        Expr::CtState,
        Expr::Bitwise {
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        cmp(Op::Neq, vec![0; 4]),
    ]
}

fn ether_src(mac: [u8; 6]) -> Vec<Expr> {
    vec![payload(BASE_LINK, 6, 6), eq(mac.to_vec())]
}

fn ether_type(t: u16) -> Vec<Expr> {
    vec![payload(BASE_LINK, 12, 2), eq(t.to_be_bytes().to_vec())]
}

fn base(num: u32, priority: i32) -> Option<Hook> {
    Some(Hook {
        kind: "filter",
        num,
        priority,
        accept: true,
    })
}

/// The anti-spoofing chain of a port: what its guest may send from.
pub fn spoof_chain(name: String, port: &Port) -> Chain {
    let own = super::netlink::parse_mac(&port.mac_address);
    let mut pairs: Vec<([u8; 6], IpAddr, u8)> = Vec::new();
    if let Some(mac) = own {
        for f in &port.fixed_ips {
            if let Some((ip, len)) = parse_net(&f.ip_address) {
                pairs.push((mac, ip, len));
            }
        }
    }
    for p in &port.allowed_address_pairs {
        let mac = if p.mac_address.is_empty() {
            own
        } else {
            super::netlink::parse_mac(&p.mac_address)
        };
        if let (Some(mac), Some((ip, len))) = (mac, parse_net(&p.ip_address)) {
            pairs.push((mac, ip, len));
        }
    }
    let macs: BTreeSet<[u8; 6]> = pairs.iter().map(|p| p.0).chain(own).collect();
    let mut rules = Vec::new();
    // A guest is no DHCP server.
    let mut r = ether_type(ETH_IP);
    r.extend(l4proto(17));
    r.push(payload(BASE_TRANSPORT, 0, 2));
    r.push(eq(67u16.to_be_bytes().to_vec()));
    rules.push(verdict(r, Verdict::Drop));
    for (mac, ip, len) in &pairs {
        let mut r = ether_src(*mac);
        if ip.is_ipv4() {
            r.extend(ether_type(ETH_IP));
            r.extend(in_net(addr(false, true), *ip, *len));
            rules.push(verdict(r, Verdict::Return));
            let mut r = ether_src(*mac);
            r.extend(ether_type(ETH_ARP));
            r.push(payload(BASE_NETWORK, 8, 6)); // ARP sender MAC
            r.push(eq(mac.to_vec()));
            r.extend(in_net(payload(BASE_NETWORK, 14, 4), *ip, *len)); // sender IP
            rules.push(verdict(r, Verdict::Return));
        } else {
            r.extend(ether_type(ETH_IP6));
            r.extend(in_net(addr(true, true), *ip, *len));
            rules.push(verdict(r, Verdict::Return));
        }
    }
    for mac in &macs {
        // DHCP discover/request before the guest has its address.
        let mut r = ether_src(*mac);
        r.extend(ether_type(ETH_IP));
        r.push(addr(false, true));
        r.push(eq(vec![0; 4]));
        r.extend(l4proto(17));
        r.push(payload(BASE_TRANSPORT, 2, 2));
        r.push(eq(67u16.to_be_bytes().to_vec()));
        rules.push(verdict(r, Verdict::Return));
        // ARP probes (sender 0.0.0.0).
        let mut r = ether_src(*mac);
        r.extend(ether_type(ETH_ARP));
        r.push(payload(BASE_NETWORK, 8, 6));
        r.push(eq(mac.to_vec()));
        r.push(payload(BASE_NETWORK, 14, 4));
        r.push(eq(vec![0; 4]));
        rules.push(verdict(r, Verdict::Return));
        // IPv6 link-local and the unspecified address (DAD).
        let mut r = ether_src(*mac);
        r.extend(ether_type(ETH_IP6));
        r.extend(in_net(
            addr(true, true),
            IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
            64,
        ));
        rules.push(verdict(r, Verdict::Return));
        let mut r = ether_src(*mac);
        r.extend(ether_type(ETH_IP6));
        r.push(addr(true, true));
        r.push(eq(vec![0; 16]));
        rules.push(verdict(r, Verdict::Return));
    }
    rules.push(vec![Expr::Verdict(Verdict::Drop)]);
    Chain {
        name,
        hook: None,
        rules,
    }
}

/// ICMPv6 neighbour discovery and MLD a port may send (`egress`: not
/// router advertisements) or receive.
fn icmpv6_nd(egress: bool, v: Verdict) -> Vec<Vec<Expr>> {
    let ranges: &[(u8, u8)] = if egress {
        &[(130, 133), (135, 136), (143, 143)]
    } else {
        &[(130, 136), (143, 143)]
    };
    ranges
        .iter()
        .map(|(lo, hi)| {
            let mut r = nfproto(true);
            r.extend(l4proto(58));
            r.push(payload(BASE_TRANSPORT, 0, 1));
            if lo == hi {
                r.push(eq(vec![*lo]));
            } else {
                r.push(cmp(Op::Gte, vec![*lo]));
                r.push(cmp(Op::Lte, vec![*hi]));
            }
            verdict(r, v.clone())
        })
        .collect()
}

/// DHCP client traffic (v4 68→67, v6 546→547).
fn dhcp_client(v: Verdict) -> Vec<Vec<Expr>> {
    [(false, 68u16, 67u16), (true, 546, 547)]
        .iter()
        .map(|(v6, sport, dport)| {
            let mut r = nfproto(*v6);
            r.extend(l4proto(17));
            r.push(payload(BASE_TRANSPORT, 0, 4));
            let mut ports = sport.to_be_bytes().to_vec();
            ports.extend(dport.to_be_bytes());
            r.push(eq(ports));
            verdict(r, v.clone())
        })
        .collect()
}

/// The addresses of each security group's ports, per IP version.
fn members(ports: &[Port]) -> BTreeMap<(bool, String), BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<(bool, String), BTreeSet<Vec<u8>>> = BTreeMap::new();
    for port in ports {
        let addrs: Vec<IpAddr> = port
            .fixed_ips
            .iter()
            .map(|f| f.ip_address.as_str())
            .chain(
                port.allowed_address_pairs
                    .iter()
                    .map(|p| p.ip_address.as_str()),
            )
            .filter_map(parse_net)
            .filter(|(ip, len)| *len == if ip.is_ipv4() { 32 } else { 128 })
            .map(|(ip, _)| ip)
            .collect();
        for g in &port.security_groups {
            for ip in &addrs {
                out.entry((ip.is_ipv6(), g.clone()))
                    .or_default()
                    .insert(ip_bytes(*ip));
            }
        }
    }
    out
}

/// Whether the dataplane filters this port: a compute port with port
/// security on a (non-external) network's own bridge.
pub fn filtered(port: &Port, net: &Network) -> bool {
    port.port_security_enabled && !port.device_owner.starts_with("network:") && !net.external
}

/// A port's tap (as `desired::tap_name`; not imported: desired uses this
/// module).
fn tap_name(port_id: &str) -> String {
    let short: String = port_id.chars().filter(|c| *c != '-').take(10).collect();
    format!("yh-t{short}")
}

/// Adds the security-group tables of every network's namespace to
/// `tables` (a topology's tables by namespace).
pub fn add(
    tables: &mut BTreeMap<Ns, Vec<Table>>,
    networks: &BTreeMap<String, Network>,
    ports: &[Port],
    rules: &[Rule],
) {
    let mut by_group: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    for r in rules {
        by_group.entry(&r.security_group_id).or_default().push(r);
    }
    let members = members(ports);
    for net in networks.values() {
        let list: Vec<&Port> = ports
            .iter()
            .filter(|p| p.network_id == net.std.id && filtered(p, net))
            .take(0xffff)
            .collect();
        if list.is_empty() {
            continue;
        }
        let mut sets: BTreeMap<String, u32> = BTreeMap::new();
        let mut pre = Vec::new();
        let mut fwd = Vec::new();
        let mut bridge_chains = Vec::new();
        let mut inet_fwd = vec![
            verdict(mark_is(u32::MAX, 0), Verdict::Accept),
            verdict(
                ct_has(nft::CT_ESTABLISHED | nft::CT_RELATED),
                Verdict::Accept,
            ),
            verdict(ct_has(nft::CT_INVALID), Verdict::Drop),
        ];
        let mut ingress_jumps = Vec::new();
        let mut inet_chains = Vec::new();
        for (i, port) in list.iter().enumerate() {
            let index = i as u32 + 1;
            let tap = tap_name(&port.std.id);
            let spoof = format!("spoof-{}", port.std.id);
            pre.push(verdict(ifname(false, &tap), Verdict::Jump(spoof.clone())));
            let mut r = ifname(false, &tap);
            r.push(Expr::Load(index.to_ne_bytes().to_vec()));
            r.push(Expr::SetMark);
            pre.push(r);
            bridge_chains.push(spoof_chain(spoof, port));
            let mut r = ifname(true, &tap);
            r.push(Expr::Meta(nft::META_MARK));
            r.push(Expr::Bitwise {
                mask: 0xffffu32.to_ne_bytes().to_vec(),
                xor: (index << 16).to_ne_bytes().to_vec(),
            });
            r.push(Expr::SetMark);
            fwd.push(r);

            let out = format!("out-{}", port.std.id);
            let inn = format!("in-{}", port.std.id);
            inet_fwd.push(verdict(mark_is(0xffff, index), Verdict::Jump(out.clone())));
            ingress_jumps.push(verdict(
                mark_is(0xffff_0000, index << 16),
                Verdict::Jump(inn.clone()),
            ));
            let mut out_rules = dhcp_client(Verdict::Return);
            out_rules.extend(icmpv6_nd(true, Verdict::Return));
            let mut in_rules = icmpv6_nd(false, Verdict::Accept);
            let groups: BTreeSet<&str> = port.security_groups.iter().map(String::as_str).collect();
            for g in groups {
                for rule in by_group.get(g).into_iter().flatten() {
                    let Some(m) = rule_match(rule, &mut sets) else {
                        continue;
                    };
                    if rule.direction == "ingress" {
                        in_rules.push(verdict(m, Verdict::Accept));
                    } else {
                        out_rules.push(verdict(m, Verdict::Return));
                    }
                }
            }
            out_rules.push(vec![Expr::Verdict(Verdict::Drop)]);
            in_rules.push(vec![Expr::Verdict(Verdict::Drop)]);
            inet_chains.push(Chain {
                name: out,
                hook: None,
                rules: out_rules,
            });
            inet_chains.push(Chain {
                name: inn,
                hook: None,
                rules: in_rules,
            });
        }
        inet_fwd.extend(ingress_jumps);
        let mut bridge = vec![
            Chain {
                name: "prerouting".into(),
                hook: base(nft::HOOK_PREROUTING, -300),
                rules: pre,
            },
            Chain {
                name: "forward".into(),
                hook: base(nft::HOOK_FORWARD, -200),
                rules: fwd,
            },
        ];
        bridge.extend(bridge_chains);
        let mut inet = vec![Chain {
            name: "forward".into(),
            hook: base(nft::HOOK_FORWARD, 0),
            rules: inet_fwd,
        }];
        inet.extend(inet_chains);
        let sets = sets
            .into_iter()
            .map(|(name, id)| {
                let v6 = name.starts_with("v6-");
                let group = name[3..].to_string();
                Set {
                    elements: members
                        .get(&(v6, group))
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                    name,
                    id,
                    key_type: if v6 { 8 } else { 7 },
                    key_len: if v6 { 16 } else { 4 },
                }
            })
            .collect();
        let ns = Ns::Named(format!("{PREFIX}n-{}", net.std.id));
        let ns_tables = tables.entry(ns).or_default();
        ns_tables.push(Table::new(nft::NFPROTO_BRIDGE, bridge));
        ns_tables.push(Table {
            family: nft::NFPROTO_INET,
            sets,
            chains: inet,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::super::desired::Topology;
    use super::*;

    fn with_std(id: &str, mut v: Value) -> Value {
        let std = json!({"id": id, "project_id": "p", "tenant_id": "p", "description": "",
               "created_at": "", "updated_at": "", "revision_number": 0});
        if let (Some(o), Some(s)) = (v.as_object_mut(), std.as_object()) {
            for (k, x) in s {
                o.insert(k.clone(), x.clone());
            }
        }
        v
    }

    fn rule(fields: Value) -> Rule {
        let mut base = json!({
            "security_group_id": "g1", "direction": "ingress", "ethertype": "IPv4",
            "protocol": null, "port_range_min": null, "port_range_max": null,
            "remote_ip_prefix": null, "remote_group_id": null,
            "remote_address_group_id": null, "normalized_cidr": null,
            "belongs_to_default_sg": false});
        if let (Some(o), Some(f)) = (base.as_object_mut(), fields.as_object()) {
            for (k, x) in f {
                o.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(with_std("r", base)).unwrap()
    }

    fn network(id: &str, external: bool) -> Network {
        serde_json::from_value(with_std(
            id,
            json!({
            "name": id, "admin_state_up": true, "status": "ACTIVE", "shared": false,
            "router:external": external, "provider:network_type": "local", "mtu": 1500,
            "port_security_enabled": true, "availability_zone_hints": [],
            "availability_zones": [], "is_default": false, "l2_adjacency": true}),
        ))
        .unwrap()
    }

    fn port(id: &str, owner: &str, mac: &str, ip: &str, groups: &[&str], security: bool) -> Port {
        serde_json::from_value(with_std(
            id,
            json!({
            "name": "", "network_id": "n1", "mac_address": mac,
            "admin_state_up": true, "status": "DOWN", "device_id": "d",
            "device_owner": owner, "fixed_ips": [{"subnet_id": "s1", "ip_address": ip}],
            "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": groups,
            "port_security_enabled": security, "binding:host_id": "", "binding:vnic_type": "normal",
            "binding:profile": {}, "binding:vif_type": "unbound", "binding:vif_details": {},
            "dns_name": "", "propagate_uplink_status": false}),
        ))
        .unwrap()
    }

    fn nfproto4() -> Vec<Expr> {
        vec![Expr::Meta(nft::META_NFPROTO), eq(vec![2])]
    }

    #[test]
    fn protocols_by_name_and_number() {
        assert_eq!(protocol_number(Some("tcp")), Ok(Some(6)));
        assert_eq!(protocol_number(Some("UDP")), Ok(Some(17)));
        assert_eq!(protocol_number(Some("ipv6-icmp")), Ok(Some(58)));
        assert_eq!(protocol_number(Some("132")), Ok(Some(132)));
        assert_eq!(protocol_number(Some("any")), Ok(None));
        assert_eq!(protocol_number(Some("0")), Ok(None));
        assert_eq!(protocol_number(None), Ok(None));
        assert_eq!(protocol_number(Some("bogus")), Err(()));
        assert_eq!(protocol_number(Some("256")), Err(()));
    }

    #[test]
    fn tcp_port_range_from_a_prefix() {
        let r = rule(
            json!({"protocol": "tcp", "port_range_min": 8000, "port_range_max": 8100,
                            "remote_ip_prefix": "10.0.0.0/24"}),
        );
        let mut sets = BTreeMap::new();
        let m = rule_match(&r, &mut sets).unwrap();
        let mut want = nfproto4();
        want.extend([
            Expr::Meta(nft::META_L4PROTO),
            eq(vec![6]),
            payload(BASE_TRANSPORT, 2, 2),
            cmp(Op::Gte, vec![0x1f, 0x40]),
            cmp(Op::Lte, vec![0x1f, 0xa4]),
            // ingress: the remote side is the source
            payload(BASE_NETWORK, 12, 4),
            Expr::Bitwise {
                mask: vec![255, 255, 255, 0],
                xor: vec![0; 4],
            },
            eq(vec![10, 0, 0, 0]),
        ]);
        assert_eq!(m, want);
        assert!(sets.is_empty());
    }

    #[test]
    fn single_port_egress_matches_the_destination() {
        let r = rule(
            json!({"direction": "egress", "protocol": "17", "port_range_min": 53,
                            "port_range_max": 53, "remote_ip_prefix": "192.168.1.7"}),
        );
        let m = rule_match(&r, &mut BTreeMap::new()).unwrap();
        let tail = &m[m.len() - 4..];
        assert_eq!(tail[0], payload(BASE_TRANSPORT, 2, 2));
        assert_eq!(tail[1], eq(vec![0, 53]));
        // a host prefix needs no mask; egress: the destination address
        assert_eq!(tail[2], payload(BASE_NETWORK, 16, 4));
        assert_eq!(tail[3], eq(vec![192, 168, 1, 7]));
    }

    #[test]
    fn icmp_type_and_code() {
        let r = rule(json!({"protocol": "icmp", "port_range_min": 8, "port_range_max": 0}));
        let m = rule_match(&r, &mut BTreeMap::new()).unwrap();
        let mut want = nfproto4();
        want.extend([
            Expr::Meta(nft::META_L4PROTO),
            eq(vec![1]),
            payload(BASE_TRANSPORT, 0, 1),
            eq(vec![8]),
            payload(BASE_TRANSPORT, 1, 1),
            eq(vec![0]),
        ]);
        assert_eq!(m, want);
    }

    #[test]
    fn ipv6_icmp_any_prefix_and_any_protocol() {
        let r = rule(json!({"ethertype": "IPv6", "protocol": "icmp", "remote_ip_prefix": "::/0"}));
        let m = rule_match(&r, &mut BTreeMap::new()).unwrap();
        assert_eq!(
            m,
            vec![
                Expr::Meta(nft::META_NFPROTO),
                eq(vec![10]),
                Expr::Meta(nft::META_L4PROTO),
                eq(vec![58]),
            ]
        );
        let any = rule(json!({"protocol": "any"}));
        assert_eq!(rule_match(&any, &mut BTreeMap::new()).unwrap(), nfproto4());
        let v6 = rule(json!({"ethertype": "IPv6", "remote_ip_prefix": "2001:db8::/32"}));
        let m = rule_match(&v6, &mut BTreeMap::new()).unwrap();
        assert_eq!(m[2], payload(BASE_NETWORK, 8, 16));
        let mut mask = vec![255; 4];
        mask.extend([0; 12]);
        assert_eq!(
            m[3],
            Expr::Bitwise {
                mask,
                xor: vec![0; 16]
            }
        );
    }

    #[test]
    fn remote_group_is_a_set_lookup() {
        let r = rule(json!({"remote_group_id": "g9"}));
        let egress = rule(json!({"direction": "egress", "ethertype": "IPv6",
                                 "remote_group_id": "g9"}));
        let mut sets = BTreeMap::new();
        let m = rule_match(&r, &mut sets).unwrap();
        assert_eq!(
            &m[2..],
            &[
                payload(BASE_NETWORK, 12, 4),
                Expr::Lookup {
                    set: "v4-g9".into(),
                    id: 1,
                    invert: false
                }
            ]
        );
        let m = rule_match(&egress, &mut sets).unwrap();
        assert_eq!(m[2], payload(BASE_NETWORK, 24, 16));
        assert_eq!(sets.get("v6-g9"), Some(&2));
        // The same set again keeps its id.
        rule_match(&r, &mut sets).unwrap();
        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn what_cannot_be_expressed_matches_nothing() {
        for bad in [
            json!({"remote_address_group_id": "ag"}),
            json!({"ethertype": "IPX"}),
            json!({"protocol": "bogus"}),
            json!({"remote_ip_prefix": "2001:db8::/32"}),
            json!({"protocol": "tcp", "port_range_min": 70000}),
        ] {
            assert!(
                rule_match(&rule(bad.clone()), &mut BTreeMap::new()).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn spoof_chain_allows_own_addresses_and_pairs_then_drops() {
        let mut p = port(
            "p1",
            "compute:nova",
            "fa:16:3e:00:00:01",
            "10.0.0.5",
            &[],
            true,
        );
        p.allowed_address_pairs = serde_json::from_value(json!([
            {"ip_address": "10.0.0.128/25", "mac_address": "fa:16:3e:00:00:99"}]))
        .unwrap();
        let c = spoof_chain("spoof-p1".into(), &p);
        assert!(c.hook.is_none());
        assert_eq!(c.rules.last().unwrap(), &vec![Expr::Verdict(Verdict::Drop)]);
        // First: no DHCP server answers from a guest.
        assert_eq!(c.rules[0].last().unwrap(), &Expr::Verdict(Verdict::Drop));
        let own_ip = c.rules.iter().any(|r| {
            r.starts_with(&ether_src([0xfa, 0x16, 0x3e, 0, 0, 1]))
                && r.contains(&eq(vec![10, 0, 0, 5]))
                && r.last() == Some(&Expr::Verdict(Verdict::Return))
        });
        assert!(own_ip);
        let pair = c.rules.iter().any(|r| {
            r.starts_with(&ether_src([0xfa, 0x16, 0x3e, 0, 0, 0x99]))
                && r.contains(&eq(vec![10, 0, 0, 128]))
                && r.contains(&Expr::Bitwise {
                    mask: vec![255, 255, 255, 128],
                    xor: vec![0; 4],
                })
        });
        assert!(pair);
        // ARP: the sender must be the port (MAC at 8, IP at 14).
        let arp = c.rules.iter().any(|r| {
            r.contains(&eq(ETH_ARP.to_be_bytes().to_vec()))
                && r.contains(&payload(BASE_NETWORK, 14, 4))
                && r.contains(&eq(vec![10, 0, 0, 5]))
        });
        assert!(arp);
    }

    #[test]
    fn topology_filters_secured_compute_ports_only() {
        let nets: BTreeMap<String, Network> = [network("n1", false)]
            .into_iter()
            .map(|n| (n.std.id.clone(), n))
            .collect();
        let ports = vec![
            port(
                "p1",
                "compute:nova",
                "fa:16:3e:00:00:01",
                "10.0.0.5",
                &["def"],
                true,
            ),
            port(
                "p2",
                "compute:nova",
                "fa:16:3e:00:00:02",
                "10.0.0.6",
                &["def"],
                true,
            ),
            port(
                "p3",
                "compute:nova",
                "fa:16:3e:00:00:03",
                "10.0.0.7",
                &[],
                false,
            ),
            port(
                "rq",
                "network:router_interface",
                "fa:16:3e:00:00:04",
                "10.0.0.1",
                &[],
                true,
            ),
        ];
        let rules = vec![
            rule(json!({"security_group_id": "def", "direction": "egress"})),
            rule(json!({"security_group_id": "def", "remote_group_id": "def"})),
        ];
        let mut t = Topology::default();
        add(&mut t.tables, &nets, &ports, &rules);
        let tables = t.tables.get(&Ns::Named("yunhe-n-n1".into())).unwrap();
        assert_eq!(tables.len(), 2);
        let bridge = &tables[0];
        assert_eq!(bridge.family, nft::NFPROTO_BRIDGE);
        let names: Vec<&str> = bridge.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["prerouting", "forward", "spoof-p1", "spoof-p2"]);
        // Per port: jump to its spoof chain, then mark its index.
        assert_eq!(bridge.chains[0].rules.len(), 4);
        assert_eq!(
            bridge.chains[0].rules[0].last().unwrap(),
            &Expr::Verdict(Verdict::Jump("spoof-p1".into()))
        );
        assert_eq!(bridge.chains[0].hook.as_ref().unwrap().priority, -300);
        let inet = &tables[1];
        assert_eq!(inet.family, nft::NFPROTO_INET);
        let names: Vec<&str> = inet.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["forward", "out-p1", "in-p1", "out-p2", "in-p2"]);
        // forward: unmarked, established, invalid, 2 egress and 2 ingress jumps
        assert_eq!(inet.chains[0].rules.len(), 7);
        // The default group's set holds both members' addresses.
        assert_eq!(inet.sets.len(), 1);
        assert_eq!(inet.sets[0].name, "v4-def");
        assert_eq!(
            inet.sets[0].elements,
            vec![vec![10, 0, 0, 5], vec![10, 0, 0, 6]]
        );
        // in-p1: ICMPv6 ND (2), the remote-group rule, drop.
        let in_p1 = &inet.chains[2];
        assert_eq!(in_p1.rules.len(), 4);
        assert!(in_p1.rules[2].contains(&Expr::Lookup {
            set: "v4-def".into(),
            id: 1,
            invert: false
        }));
        assert_eq!(
            in_p1.rules[2].last().unwrap(),
            &Expr::Verdict(Verdict::Accept)
        );
        // out-p1: DHCP (2), ICMPv6 ND (3), the egress rule returns, drop.
        let out_p1 = &inet.chains[1];
        assert_eq!(out_p1.rules.len(), 7);
        assert_eq!(
            out_p1.rules[5],
            vec![
                Expr::Meta(nft::META_NFPROTO),
                eq(vec![2]),
                Expr::Verdict(Verdict::Return)
            ]
        );
    }

    #[test]
    fn no_tables_without_secured_ports() {
        let nets: BTreeMap<String, Network> = [network("n1", false), network("ext", true)]
            .into_iter()
            .map(|n| (n.std.id.clone(), n))
            .collect();
        let mut on_ext = port(
            "p1",
            "compute:nova",
            "fa:16:3e:00:00:01",
            "172.24.4.5",
            &[],
            true,
        );
        on_ext.network_id = "ext".into();
        let ports = vec![
            port(
                "p3",
                "compute:nova",
                "fa:16:3e:00:00:03",
                "10.0.0.7",
                &[],
                false,
            ),
            on_ext,
        ];
        let mut t = Topology::default();
        add(&mut t.tables, &nets, &ports, &[]);
        assert!(t.tables.is_empty());
    }

    #[test]
    fn batch_makes_sets_before_chains_and_jumps_resolve() {
        let nets: BTreeMap<String, Network> = [network("n1", false)]
            .into_iter()
            .map(|n| (n.std.id.clone(), n))
            .collect();
        let ports = vec![port(
            "p1",
            "compute:nova",
            "fa:16:3e:00:00:01",
            "10.0.0.5",
            &["def"],
            true,
        )];
        let rules = vec![rule(
            json!({"security_group_id": "def", "remote_group_id": "def"}),
        )];
        let mut t = Topology::default();
        add(&mut t.tables, &nets, &ports, &rules);
        let tables = t.tables.values().next().unwrap();
        let msgs = nft::batch(tables);
        let types: Vec<u16> = msgs
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let d = m.finish(i as u32);
                u16::from_ne_bytes([d[4], d[5]]) & 0xff
            })
            .collect();
        // inet: table, set, element, chains (forward, out, in), then rules.
        let inet_start = types.iter().rposition(|t| *t == 0).unwrap();
        assert_eq!(&types[inet_start..inet_start + 6], &[0, 9, 12, 3, 3, 3]);
        assert!(
            types[inet_start + 6..types.len() - 1]
                .iter()
                .all(|t| *t == 6)
        );
    }
}
