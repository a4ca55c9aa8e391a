//! IPv6 router advertisements (RFC 4861) for SLAAC and DHCPv6 subnets, as
//! Neutron's L3 agent has radvd send them, written here: what each router
//! interface advertises (computed from the records, no kernel access), the
//! Router Advertisement it sends and the Router Solicitation it answers.
//! The sockets are in `ra_server`.
//!
//! As Neutron: only a router interface advertises, and only the prefixes of
//! its subnets with an `ipv6_ra_mode`; `slaac` and `dhcpv6-stateless`
//! prefixes are autonomous (A flag), `dhcpv6-stateful` ones are not and set
//! the M flag, `dhcpv6-stateless` sets O; the MTU option carries the
//! network's MTU, RDNSS the subnets' IPv6 `dns_nameservers` (at most 3).
//!
//! Parsing takes bytes from guests: every length is checked, nothing
//! panics (unit tests with malformed input and random bytes).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use super::netns::Ns;
use crate::network::model::{Network, OWNER_INTERFACE, Port, Subnet};

/// ICMPv6 types.
pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;

const OPT_SOURCE_LL: u8 = 1;
const OPT_PREFIX: u8 = 3;
const OPT_MTU: u8 = 5;
const OPT_RDNSS: u8 = 25;

/// Hop limit advertised for the guests' packets.
const CUR_HOP_LIMIT: u8 = 64;
/// Router lifetime, seconds (radvd's default: 3 × MaxRtrAdvInterval, with
/// Neutron's 100 s).
pub const ROUTER_LIFETIME: u16 = 300;
/// Prefix lifetimes, seconds (radvd's defaults).
pub const VALID_LIFETIME: u32 = 86400;
pub const PREFERRED_LIFETIME: u32 = 14400;
/// RDNSS lifetime, seconds (≥ MaxRtrAdvInterval, RFC 8106).
pub const RDNSS_LIFETIME: u32 = 300;
/// The most DNS servers advertised (as Neutron).
const MAX_DNS: usize = 3;
/// The most prefixes on one interface (bounds the message).
const MAX_PREFIXES: usize = 16;
/// The smallest IPv6 MTU; a smaller network MTU is not advertised.
const IPV6_MIN_MTU: u32 = 1280;

/// One advertised prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    pub prefix: Ipv6Addr,
    pub len: u8,
    /// The A flag: hosts make their own address in it (SLAAC).
    pub autonomous: bool,
}

/// What one router interface advertises.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaConfig {
    /// M: addresses from DHCPv6 (`dhcpv6-stateful`).
    pub managed: bool,
    /// O: other configuration from DHCPv6 (`dhcpv6-stateless`).
    pub other: bool,
    pub prefixes: Vec<Prefix>,
    /// The link MTU option (None: not sent).
    pub mtu: Option<u32>,
    pub dns: Vec<Ipv6Addr>,
    /// The interface's MAC (the source link-layer address option).
    pub mac: Option<[u8; 6]>,
}

/// A router interface that advertises: its namespace, its interface
/// (`yh-q<port>`) and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct RaIface {
    pub ns: Ns,
    pub name: String,
    pub port_id: String,
    pub config: RaConfig,
}

/// A router interface's IPv6 addresses (its subnets' gateway addresses).
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway6 {
    pub ns: Ns,
    pub name: String,
    pub addrs: Vec<(Ipv6Addr, u8)>,
}

/// An IPv6 CIDR.
pub fn parse_cidr6(text: &str) -> Option<(Ipv6Addr, u8)> {
    let (ip, len) = text.split_once('/')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 128).then_some((ip, len))
}

fn masked(ip: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(ip);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    Ipv6Addr::from(bits & mask)
}

/// The IPv6 addresses and router advertisements of every router interface
/// (`interface_name` names the interface of a router port, `mtu` gives a
/// network's MTU).
pub fn desired(
    networks: &BTreeMap<String, Network>,
    subnets: &BTreeMap<String, Subnet>,
    ports: &[Port],
    router_ns: impl Fn(&str) -> Ns,
    interface_name: impl Fn(&str) -> String,
    mtu: impl Fn(&Network) -> u32,
) -> (Vec<Gateway6>, Vec<RaIface>) {
    let mut gateways = Vec::new();
    let mut ras = Vec::new();
    for port in ports.iter().filter(|p| p.device_owner == OWNER_INTERFACE) {
        let Some(net) = networks.get(&port.network_id) else {
            continue;
        };
        let mut addrs = Vec::new();
        let mut config = RaConfig {
            mac: super::netlink::parse_mac(&port.mac_address),
            ..Default::default()
        };
        let mut advertises = false;
        for f in &port.fixed_ips {
            let Some(subnet) = subnets.get(&f.subnet_id).filter(|s| s.ip_version == 6) else {
                continue;
            };
            let (Ok(ip), Some((base, len))) =
                (f.ip_address.parse::<Ipv6Addr>(), parse_cidr6(&subnet.cidr))
            else {
                continue;
            };
            addrs.push((ip, len));
            let Some(mode) = subnet.ipv6_ra_mode.as_deref() else {
                continue;
            };
            let autonomous = match mode {
                "slaac" => true,
                "dhcpv6-stateless" => {
                    config.other = true;
                    true
                }
                "dhcpv6-stateful" => {
                    config.managed = true;
                    false
                }
                _ => continue,
            };
            advertises = true;
            if config.prefixes.len() < MAX_PREFIXES {
                config.prefixes.push(Prefix {
                    prefix: masked(base, len),
                    len,
                    autonomous,
                });
            }
            for d in &subnet.dns_nameservers {
                if let Ok(d) = d.parse::<Ipv6Addr>()
                    && config.dns.len() < MAX_DNS
                    && !config.dns.contains(&d)
                {
                    config.dns.push(d);
                }
            }
        }
        if addrs.is_empty() {
            continue;
        }
        let ns = router_ns(&port.device_id);
        let name = interface_name(&port.std.id);
        if advertises {
            let m = mtu(net);
            config.mtu = (m >= IPV6_MIN_MTU).then_some(m);
            ras.push(RaIface {
                ns: ns.clone(),
                name: name.clone(),
                port_id: port.std.id.clone(),
                config,
            });
        }
        gateways.push(Gateway6 { ns, name, addrs });
    }
    (gateways, ras)
}

/// The ICMPv6 Router Advertisement message (the checksum left 0: the
/// kernel fills it for an ICMPv6 raw socket).
pub fn build_ra(c: &RaConfig) -> Vec<u8> {
    let mut m = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, CUR_HOP_LIMIT];
    m.push(if c.managed { 0x80 } else { 0 } | if c.other { 0x40 } else { 0 });
    m.extend_from_slice(&ROUTER_LIFETIME.to_be_bytes());
    m.extend_from_slice(&[0; 8]); // reachable time, retrans timer: unspecified
    if let Some(mac) = c.mac {
        m.extend_from_slice(&[OPT_SOURCE_LL, 1]);
        m.extend_from_slice(&mac);
    }
    if let Some(mtu) = c.mtu {
        m.extend_from_slice(&[OPT_MTU, 1, 0, 0]);
        m.extend_from_slice(&mtu.to_be_bytes());
    }
    for p in &c.prefixes {
        // On-link always; autonomous for SLAAC and DHCPv6-stateless.
        let flags = 0x80 | if p.autonomous { 0x40 } else { 0 };
        m.extend_from_slice(&[OPT_PREFIX, 4, p.len, flags]);
        m.extend_from_slice(&VALID_LIFETIME.to_be_bytes());
        m.extend_from_slice(&PREFERRED_LIFETIME.to_be_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&p.prefix.octets());
    }
    if !c.dns.is_empty() {
        let dns = &c.dns[..c.dns.len().min(MAX_DNS)];
        m.extend_from_slice(&[OPT_RDNSS, (1 + 2 * dns.len()) as u8, 0, 0]);
        m.extend_from_slice(&RDNSS_LIFETIME.to_be_bytes());
        for d in dns {
            m.extend_from_slice(&d.octets());
        }
    }
    m
}

/// The options of an ND message: (type, whole option bytes). None when one
/// is malformed (a zero length, or past the end): RFC 4861 drops the
/// message.
fn options(mut buf: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (&ty, rest) = buf.split_first()?;
        let len = usize::from(*rest.first()?) * 8;
        if len == 0 || len > buf.len() {
            return None;
        }
        out.push((ty, &buf[..len]));
        buf = &buf[len..];
    }
    Some(out)
}

/// A Router Solicitation, as much as the router uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solicitation {
    /// The sender's link-layer address option, if given.
    pub source_mac: Option<[u8; 6]>,
}

/// Parses an ICMPv6 Router Solicitation (the ICMPv6 message, as a raw
/// socket hands it over); None for anything else or anything malformed.
pub fn parse_rs(buf: &[u8]) -> Option<Solicitation> {
    if buf.len() < 8 || buf.len() > 1500 || buf[0] != ROUTER_SOLICITATION || buf[1] != 0 {
        return None;
    }
    let mut source_mac = None;
    for (ty, opt) in options(&buf[8..])? {
        if ty == OPT_SOURCE_LL {
            let mac: [u8; 6] = opt.get(2..8)?.try_into().ok()?;
            source_mac = Some(mac);
        }
    }
    Some(Solicitation { source_mac })
}

/// Parses a Router Advertisement back into what it advertises (what the
/// tests check the encoding with); None when malformed.
#[cfg(test)]
pub fn parse_ra(buf: &[u8]) -> Option<(RaConfig, u16)> {
    if buf.len() < 16 || buf[0] != ROUTER_ADVERTISEMENT || buf[1] != 0 {
        return None;
    }
    let mut c = RaConfig {
        managed: buf[5] & 0x80 != 0,
        other: buf[5] & 0x40 != 0,
        ..Default::default()
    };
    let lifetime = u16::from_be_bytes([buf[6], buf[7]]);
    for (ty, opt) in options(&buf[16..])? {
        match ty {
            OPT_SOURCE_LL => c.mac = Some(opt.get(2..8)?.try_into().ok()?),
            OPT_MTU => c.mtu = Some(u32::from_be_bytes(opt.get(4..8)?.try_into().ok()?)),
            OPT_PREFIX => {
                if opt.len() != 32 {
                    return None;
                }
                let octets: [u8; 16] = opt.get(16..32)?.try_into().ok()?;
                c.prefixes.push(Prefix {
                    prefix: Ipv6Addr::from(octets),
                    len: opt[2],
                    autonomous: opt[3] & 0x40 != 0,
                });
            }
            OPT_RDNSS => {
                for chunk in opt.get(8..)?.chunks(16) {
                    let octets: [u8; 16] = chunk.try_into().ok()?;
                    c.dns.push(Ipv6Addr::from(octets));
                }
            }
            _ => {}
        }
    }
    Some((c, lifetime))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> RaConfig {
        RaConfig {
            managed: false,
            other: true,
            prefixes: vec![Prefix {
                prefix: "fd00:6::".parse().unwrap(),
                len: 64,
                autonomous: true,
            }],
            mtu: Some(1450),
            dns: vec!["fd00:6::53".parse().unwrap()],
            mac: Some([0xfa, 0x16, 0x3e, 0, 0, 1]),
        }
    }

    #[test]
    fn ra_encoding() {
        let m = build_ra(&config());
        // Header 16, SLLA 8, MTU 8, prefix 32, RDNSS 24.
        assert_eq!(m.len(), 16 + 8 + 8 + 32 + 24);
        assert_eq!(&m[..8], &[134, 0, 0, 0, 64, 0x40, 0x01, 0x2c]);
        assert_eq!(&m[16..24], &[1, 1, 0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(&m[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0xaa]);
        // Prefix: length 64, L and A, lifetimes 86400/14400.
        assert_eq!(
            &m[32..44],
            &[3, 4, 64, 0xc0, 0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40]
        );
        assert_eq!(&m[48..50], &[0xfd, 0x00]);
        assert_eq!(&m[64..68], &[25, 3, 0, 0]);
        let (back, lifetime) = parse_ra(&m).unwrap();
        assert_eq!(back, config());
        assert_eq!(lifetime, 300);
    }

    #[test]
    fn stateful_sets_m_and_no_a() {
        let c = RaConfig {
            managed: true,
            prefixes: vec![Prefix {
                prefix: "2001:db8::".parse().unwrap(),
                len: 64,
                autonomous: false,
            }],
            ..Default::default()
        };
        let m = build_ra(&c);
        assert_eq!(m[5], 0x80);
        assert_eq!(m[16 + 3], 0x80); // L only
        assert_eq!(parse_ra(&m).unwrap().0, c);
    }

    #[test]
    fn rs_parsing() {
        assert_eq!(
            parse_rs(&[133, 0, 0, 0, 0, 0, 0, 0]),
            Some(Solicitation { source_mac: None })
        );
        let with_mac = [133, 0, 0x12, 0x34, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 9];
        assert_eq!(
            parse_rs(&with_mac).unwrap().source_mac,
            Some([2, 0, 0, 0, 0, 9])
        );
        // An unknown option is skipped.
        let unknown = [133, 0, 0, 0, 0, 0, 0, 0, 99, 1, 0, 0, 0, 0, 0, 0];
        assert!(parse_rs(&unknown).is_some());
    }

    #[test]
    fn malformed_rs_is_dropped() {
        assert_eq!(parse_rs(&[]), None);
        assert_eq!(parse_rs(&[133]), None);
        assert_eq!(parse_rs(&[133, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(parse_rs(&[134, 0, 0, 0, 0, 0, 0, 0]), None); // not an RS
        assert_eq!(parse_rs(&[133, 1, 0, 0, 0, 0, 0, 0]), None); // code 1
        // A zero-length option (would loop forever).
        assert_eq!(parse_rs(&[133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]), None);
        // An option longer than the message.
        assert_eq!(
            parse_rs(&[133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0]),
            None
        );
        // A cut option header.
        assert_eq!(parse_rs(&[133, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        // Too big.
        let mut big = vec![133, 0, 0, 0, 0, 0, 0, 0];
        big.resize(1600, 0);
        assert_eq!(parse_rs(&big), None);
        assert_eq!(parse_ra(&[134, 0, 0]), None);
        assert_eq!(
            parse_ra(&[
                134, 0, 0, 0, 64, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0
            ]),
            None // a prefix option of 8 bytes
        );
    }

    /// Random bytes (and random bytes behind a valid RS header) never
    /// panic the parsers.
    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for round in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && buf.len() >= 8 {
                buf[0] = ROUTER_SOLICITATION;
                buf[1] = 0;
            }
            if parse_rs(&buf).is_some() {
                accepted += 1;
            }
            let _ = parse_ra(&buf);
        }
        // Some well-formed ones by chance (no options, or lucky lengths).
        assert!(accepted > 0);
    }

    fn port(id: &str, net: &str, device: &str, fixed: &[(&str, &str)]) -> Port {
        let ips: Vec<serde_json::Value> = fixed
            .iter()
            .map(|(s, ip)| serde_json::json!({"subnet_id": s, "ip_address": ip}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": id, "project_id": "p", "tenant_id": "p", "description": "",
            "created_at": "", "updated_at": "", "revision_number": 0,
            "name": "", "network_id": net, "mac_address": "fa:16:3e:00:00:01",
            "admin_state_up": true, "status": "DOWN", "device_id": device,
            "device_owner": OWNER_INTERFACE, "fixed_ips": ips,
            "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": [],
            "port_security_enabled": true, "binding:host_id": "", "binding:vnic_type": "normal",
            "binding:profile": {}, "binding:vif_type": "unbound", "binding:vif_details": {},
            "dns_name": "", "propagate_uplink_status": false}))
        .unwrap()
    }

    fn subnet6(id: &str, cidr: &str, mode: Option<&str>) -> Subnet {
        serde_json::from_value(serde_json::json!({
            "id": id, "project_id": "p", "tenant_id": "p", "description": "",
            "created_at": "", "updated_at": "", "revision_number": 0,
            "name": id, "network_id": "n6", "ip_version": 6, "cidr": cidr,
            "gateway_ip": null, "allocation_pools": [], "dns_nameservers": ["fd00:6::53", "10.0.0.53"],
            "host_routes": [], "enable_dhcp": true, "service_types": [],
            "dns_publish_fixed_ip": false, "ipv6_ra_mode": mode, "ipv6_address_mode": mode}))
        .unwrap()
    }

    #[test]
    fn router_interfaces_advertise_their_ra_subnets() {
        let net: Network = serde_json::from_value(serde_json::json!({
            "id": "n6", "project_id": "p", "tenant_id": "p", "description": "",
            "created_at": "", "updated_at": "", "revision_number": 0,
            "name": "n6", "admin_state_up": true, "status": "ACTIVE", "shared": false,
            "router:external": false, "provider:network_type": "local", "mtu": 1450,
            "port_security_enabled": true, "availability_zone_hints": [],
            "availability_zones": [], "is_default": false, "l2_adjacency": true}))
        .unwrap();
        let nets: BTreeMap<String, Network> = [("n6".to_string(), net)].into_iter().collect();
        let subs: BTreeMap<String, Subnet> = [
            subnet6("slaac", "fd00:6::/64", Some("slaac")),
            subnet6("plain", "fd00:7::/64", None),
            subnet6("stateful", "fd00:8::/64", Some("dhcpv6-stateful")),
        ]
        .into_iter()
        .map(|s| (s.std.id.clone(), s))
        .collect();
        let ports = vec![
            port(
                "q1",
                "n6",
                "r1",
                &[("slaac", "fd00:6::1"), ("stateful", "fd00:8::1")],
            ),
            port("q2", "n6", "r2", &[("plain", "fd00:7::1")]),
        ];
        let (gws, ras) = desired(
            &nets,
            &subs,
            &ports,
            |r| Ns::Named(format!("yunhe-r-{r}")),
            |p| format!("yh-q{p}"),
            |n| u32::try_from(n.mtu).unwrap_or(1500),
        );
        assert_eq!(gws.len(), 2);
        assert_eq!(
            gws[0].addrs,
            vec![
                ("fd00:6::1".parse().unwrap(), 64),
                ("fd00:8::1".parse().unwrap(), 64)
            ]
        );
        // Only r1's interface advertises (r2's subnet has no RA mode).
        assert_eq!(ras.len(), 1);
        let ra = &ras[0];
        assert_eq!(
            (ra.ns.clone(), ra.name.as_str()),
            (Ns::Named("yunhe-r-r1".into()), "yh-qq1")
        );
        assert!(ra.config.managed && !ra.config.other);
        assert_eq!(ra.config.mtu, Some(1450));
        assert_eq!(
            ra.config.dns,
            vec!["fd00:6::53".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(ra.config.prefixes.len(), 2);
        assert!(ra.config.prefixes[0].autonomous);
        assert!(!ra.config.prefixes[1].autonomous);
        assert_eq!(ra.config.mac, Some([0xfa, 0x16, 0x3e, 0, 0, 1]));
    }
}
