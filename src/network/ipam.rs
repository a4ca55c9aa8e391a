//! IP address management: CIDRs, allocation pools and the choice of the
//! next free address, for IPv4 and IPv6 alike (addresses as `u128`).
//! Pure arithmetic: the allocations themselves are rows of
//! `net_ip_allocations`, taken by `ports` and `floating_ips` in the same
//! transaction as the record that owns them.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// A network prefix, normalized (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// One allocation pool, both ends included.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    pub start: String,
    pub end: String,
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn to_num(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A number back to an address of the given version.
pub fn from_num(n: u128, version: u8) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// The version (4 or 6) of an address.
pub fn version_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

/// Parses an address, refusing the forms Neutron refuses (zone ids, spaces).
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    if text.trim() != text || text.contains('%') {
        return None;
    }
    text.parse().ok()
}

impl Cidr {
    fn bits(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn version(&self) -> u8 {
        version_of(self.addr)
    }

    fn mask(bits: u8, prefix: u8) -> u128 {
        let host = u32::from(bits - prefix);
        let all = if bits == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        if host >= 128 {
            0
        } else {
            all & !((1u128 << host).wrapping_sub(1))
        }
    }

    /// Parses `addr/prefix`. With `strict`, host bits must be zero (the
    /// error then names the normalized form, as Neutron does).
    pub fn parse(text: &str, strict: bool) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip = parse_ip(addr).ok_or_else(|| format!("'{text}' is not a valid IP subnet"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("'{text}' is not a valid IP subnet"))?,
            None => bits,
        };
        let n = to_num(ip) & Cidr::mask(bits, prefix);
        let cidr = Cidr {
            addr: from_num(n, version_of(ip)),
            prefix,
        };
        if strict && n != to_num(ip) {
            return Err(format!(
                "'{text}' isn't a recommended CIDR, '{cidr}' is recommended"
            ));
        }
        Ok(cidr)
    }

    pub fn first(&self) -> u128 {
        to_num(self.addr)
    }

    pub fn last(&self) -> u128 {
        self.first() | !Cidr::mask(self.bits(), self.prefix) & self.all_ones()
    }

    fn all_ones(&self) -> u128 {
        if self.bits() == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        version_of(ip) == self.version() && (self.first()..=self.last()).contains(&to_num(ip))
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.version() == other.version()
            && self.first() <= other.last()
            && other.first() <= self.last()
    }

    /// Number of addresses.
    pub fn size(&self) -> u128 {
        self.last() - self.first() + 1
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The first usable address (Neutron's default gateway).
pub fn default_gateway(cidr: &Cidr) -> Option<IpAddr> {
    if cidr.size() < 2 {
        return None;
    }
    Some(from_num(cidr.first() + 1, cidr.version()))
}

/// The usable range of a CIDR: IPv4 leaves out the network and broadcast
/// addresses (for prefixes up to /30), IPv6 the subnet-router anycast one.
fn usable(cidr: &Cidr) -> (u128, u128) {
    if cidr.version() == 4 && cidr.prefix <= 30 {
        (cidr.first() + 1, cidr.last() - 1)
    } else if cidr.version() == 6 && cidr.prefix < 128 {
        (cidr.first() + 1, cidr.last())
    } else {
        (cidr.first(), cidr.last())
    }
}

/// Neutron's default pools: the usable range without the gateway.
pub fn default_pools(cidr: &Cidr, gateway: Option<IpAddr>) -> Vec<Pool> {
    let (lo, hi) = usable(cidr);
    let v = cidr.version();
    let mut ranges = vec![(lo, hi)];
    if let Some(gw) = gateway.filter(|g| cidr.contains(*g)) {
        let g = to_num(gw);
        ranges = ranges
            .into_iter()
            .flat_map(|(a, b)| {
                if g < a || g > b {
                    vec![(a, b)]
                } else {
                    let mut out = Vec::new();
                    if g > a {
                        out.push((a, g - 1));
                    }
                    if g < b {
                        out.push((g + 1, b));
                    }
                    out
                }
            })
            .collect();
    }
    ranges
        .into_iter()
        .filter(|(a, b)| a <= b)
        .map(|(a, b)| Pool {
            start: from_num(a, v).to_string(),
            end: from_num(b, v).to_string(),
        })
        .collect()
}

/// A pool as numbers, checked against the CIDR.
pub fn pool_range(cidr: &Cidr, pool: &Pool) -> Result<(u128, u128), String> {
    let start = parse_ip(&pool.start)
        .ok_or_else(|| format!("'{}' is not a valid IP address", pool.start))?;
    let end =
        parse_ip(&pool.end).ok_or_else(|| format!("'{}' is not a valid IP address", pool.end))?;
    if !cidr.contains(start) || !cidr.contains(end) {
        return Err(format!(
            "The allocation pool {}-{} spans beyond the subnet cidr {cidr}.",
            pool.start, pool.end
        ));
    }
    let (a, b) = (to_num(start), to_num(end));
    if a > b {
        return Err(format!(
            "Invalid allocation pool {}-{}: the start is after the end",
            pool.start, pool.end
        ));
    }
    Ok((a, b))
}

/// Checks a subnet's pools: inside the CIDR, ordered, not overlapping each
/// other, and not holding the gateway.
pub fn validate_pools(cidr: &Cidr, pools: &[Pool], gateway: Option<IpAddr>) -> Result<(), String> {
    let mut ranges = Vec::new();
    for pool in pools {
        ranges.push((pool_range(cidr, pool)?, pool));
    }
    for (i, ((a, b), p)) in ranges.iter().enumerate() {
        for ((c, d), q) in ranges.iter().skip(i + 1) {
            if a <= d && c <= b {
                return Err(format!(
                    "Found overlapping allocation pools: {}-{} and {}-{}",
                    p.start, p.end, q.start, q.end
                ));
            }
        }
        if let Some(gw) = gateway {
            let g = to_num(gw);
            if version_of(gw) == cidr.version() && *a <= g && g <= *b {
                return Err(format!(
                    "Gateway ip {gw} conflicts with allocation pool {}-{}",
                    p.start, p.end
                ));
            }
        }
    }
    Ok(())
}

/// Whether an address is in one of the pools.
pub fn in_pools(cidr: &Cidr, pools: &[Pool], ip: IpAddr) -> bool {
    let n = to_num(ip);
    pools
        .iter()
        .filter_map(|p| pool_range(cidr, p).ok())
        .any(|(a, b)| a <= n && n <= b)
}

/// The lowest free address of the pools.
pub fn next_free(cidr: &Cidr, pools: &[Pool], taken: &HashSet<u128>) -> Option<IpAddr> {
    for (a, b) in pools.iter().filter_map(|p| pool_range(cidr, p).ok()) {
        let mut n = a;
        loop {
            if !taken.contains(&n) {
                return Some(from_num(n, cidr.version()));
            }
            if n == b {
                break;
            }
            n += 1;
        }
    }
    None
}

/// How many addresses the pools hold.
pub fn pools_size(cidr: &Cidr, pools: &[Pool]) -> u128 {
    pools
        .iter()
        .filter_map(|p| pool_range(cidr, p).ok())
        .map(|(a, b)| b - a + 1)
        .sum()
}

/// The SLAAC (EUI-64) address of a MAC in an IPv6 /64.
pub fn eui64(cidr: &Cidr, mac: &str) -> Option<IpAddr> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if bytes.len() != 6 || cidr.version() != 6 {
        return None;
    }
    let iid = [
        bytes[0] ^ 0x02,
        bytes[1],
        bytes[2],
        0xff,
        0xfe,
        bytes[3],
        bytes[4],
        bytes[5],
    ];
    let low = u128::from(u64::from_be_bytes(iid));
    Some(from_num((cidr.first() & !u128::from(u64::MAX)) | low, 6))
}

/// A random MAC address in OpenStack's `fa:16:3e` prefix.
pub fn random_mac() -> String {
    let b: [u8; 3] = rand::random();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Checks and normalizes a MAC address (lower case, colon-separated, unicast).
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let bytes: Vec<u8> = parts
        .iter()
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if bytes[0] & 1 == 1 || bytes.iter().all(|b| *b == 0) {
        return None;
    }
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn cidrs_parse_and_normalize() {
        let c = Cidr::parse("10.0.0.0/24", true).expect("cidr");
        assert_eq!(c.size(), 256);
        assert!(c.contains(ip("10.0.0.255")));
        assert!(!c.contains(ip("10.0.1.0")));
        assert!(Cidr::parse("10.0.0.1/24", true).is_err());
        assert_eq!(
            Cidr::parse("10.0.0.1/24", false).expect("cidr").to_string(),
            "10.0.0.0/24"
        );
        assert!(Cidr::parse("10.0.0.0/33", true).is_err());
        assert!(Cidr::parse("nonsense", true).is_err());
        let v6 = Cidr::parse("2001:db8::/64", true).expect("v6");
        assert!(v6.overlaps(&Cidr::parse("2001:db8::/48", true).expect("v6")));
        assert!(!c.overlaps(&v6));
    }

    #[test]
    fn default_pools_leave_out_gateway_and_broadcast() {
        let c = Cidr::parse("10.0.0.0/24", true).expect("cidr");
        let pools = default_pools(&c, default_gateway(&c));
        assert_eq!(
            pools,
            [Pool {
                start: "10.0.0.2".into(),
                end: "10.0.0.254".into()
            }]
        );
        let pools = default_pools(&c, Some(ip("10.0.0.100")));
        assert_eq!(pools.len(), 2);
        assert!(validate_pools(&c, &pools, Some(ip("10.0.0.100"))).is_ok());
        assert!(validate_pools(&c, &pools, Some(ip("10.0.0.5"))).is_err());
    }

    #[test]
    fn next_free_skips_taken_and_ends() {
        let c = Cidr::parse("10.0.0.0/30", true).expect("cidr");
        let pools = default_pools(&c, None);
        let mut taken = HashSet::new();
        assert_eq!(next_free(&c, &pools, &taken), Some(ip("10.0.0.1")));
        taken.insert(to_num(ip("10.0.0.1")));
        taken.insert(to_num(ip("10.0.0.2")));
        assert_eq!(next_free(&c, &pools, &taken), None);
    }

    #[test]
    fn macs_and_slaac() {
        let c = Cidr::parse("2001:db8::/64", true).expect("v6");
        assert_eq!(
            eui64(&c, "fa:16:3e:00:00:01"),
            Some(ip("2001:db8::f816:3eff:fe00:1"))
        );
        assert!(random_mac().starts_with("fa:16:3e:"));
        assert_eq!(
            normalize_mac("FA-16-3E-00-00-01").as_deref(),
            Some("fa:16:3e:00:00:01")
        );
        assert!(normalize_mac("01:00:00:00:00:00").is_none());
    }
}
