//! DHCPv4 (RFC 2131/2132, option 121 of RFC 3442) as yunhe serves it:
//! frames in, frames out. Parsing takes whole Ethernet frames from a packet
//! socket and refuses anything malformed without panicking; answers are
//! built as whole frames (Ethernet, IPv4, UDP, BOOTP), so the network needs
//! no address of the server's.

use std::net::Ipv4Addr;

pub const DISCOVER: u8 = 1;
pub const OFFER: u8 = 2;
pub const REQUEST: u8 = 3;
pub const DECLINE: u8 = 4;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
pub const RELEASE: u8 = 7;
pub const INFORM: u8 = 8;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const BOOTP_LEN: usize = 236;
/// The largest frame looked at (a DHCP message fits in one MTU).
pub const MAX_FRAME: usize = 1600;

/// What a port gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    /// The server identifier (option 54) and the reply's source.
    pub server: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: String,
    pub hostname: String,
    pub mtu: u16,
    /// Classless static routes (destination, length, next hop).
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub lease_seconds: u32,
}

/// A client's message, as much as the server uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub msg_type: u8,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
}

fn ip4(b: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

/// Parses an Ethernet frame carrying a BOOTREQUEST to port 67.
pub fn parse_frame(frame: &[u8]) -> Option<Message> {
    if frame.len() > MAX_FRAME || frame.len() < 14 {
        return None;
    }
    if frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if *ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != 17 {
        return None;
    }
    // Fragments are not reassembled.
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    if frag & 0x3fff != 0 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if udp.get(2..4)? != [0, 67] {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let payload = udp.get(8..udp_len.max(8).min(udp.len()))?;
    parse_bootp(payload)
}

/// Parses a BOOTP/DHCP request (the UDP payload).
pub fn parse_bootp(p: &[u8]) -> Option<Message> {
    if p.len() < BOOTP_LEN + 4 || p[0] != 1 || p[1] != 1 || p[2] != 6 {
        return None;
    }
    if p[BOOTP_LEN..BOOTP_LEN + 4] != MAGIC {
        return None;
    }
    let mut m = Message {
        xid: u32::from_be_bytes(p[4..8].try_into().ok()?),
        flags: u16::from_be_bytes([p[10], p[11]]),
        ciaddr: ip4(&p[12..16])?,
        giaddr: ip4(&p[24..28])?,
        chaddr: p[28..34].try_into().ok()?,
        msg_type: 0,
        requested: None,
        server_id: None,
    };
    let mut at = BOOTP_LEN + 4;
    while at < p.len() {
        let code = p[at];
        if code == 255 {
            break;
        }
        if code == 0 {
            at += 1;
            continue;
        }
        let len = usize::from(*p.get(at + 1)?);
        let data = p.get(at + 2..at + 2 + len)?;
        match code {
            53 if len == 1 => m.msg_type = data[0],
            50 if len == 4 => m.requested = ip4(data),
            54 if len == 4 => m.server_id = ip4(data),
            _ => {}
        }
        at += 2 + len;
    }
    (m.msg_type != 0).then_some(m)
}

/// What the server answers to `m` with `lease` (None: stay silent).
pub fn answer(m: &Message, lease: Option<&Lease>) -> Option<(u8, &'static str)> {
    let lease = lease?;
    match m.msg_type {
        DISCOVER => Some((OFFER, "")),
        REQUEST => {
            if let Some(sid) = m.server_id
                && sid != lease.server
            {
                // The client took another server's offer.
                return None;
            }
            let wanted = m.requested.unwrap_or(m.ciaddr);
            if wanted == lease.ip {
                Some((ACK, ""))
            } else {
                Some((NAK, "address not available"))
            }
        }
        INFORM => Some((ACK, "")),
        // The address stays the port's: nothing to free or mark.
        RELEASE | DECLINE => None,
        _ => None,
    }
}

fn opt(out: &mut Vec<u8>, code: u8, data: &[u8]) {
    // Options longer than 255 bytes are split (RFC 3396).
    for chunk in data.chunks(255) {
        out.push(code);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

/// Option 121's encoding of one route.
pub fn classless_route(out: &mut Vec<u8>, dst: Ipv4Addr, len: u8, via: Ipv4Addr) {
    let len = len.min(32);
    out.push(len);
    let significant = usize::from(len).div_ceil(8);
    out.extend_from_slice(&dst.octets()[..significant]);
    out.extend_from_slice(&via.octets());
}

/// The BOOTREPLY payload of type `reply` for `m`.
pub fn build_bootp(m: &Message, reply: u8, lease: &Lease, text: &str) -> Vec<u8> {
    let mut p = vec![0u8; BOOTP_LEN];
    p[0] = 2;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&m.xid.to_be_bytes());
    p[10..12].copy_from_slice(&m.flags.to_be_bytes());
    p[12..16].copy_from_slice(&m.ciaddr.octets());
    if reply != NAK && m.msg_type != INFORM {
        p[16..20].copy_from_slice(&lease.ip.octets());
    }
    p[24..28].copy_from_slice(&m.giaddr.octets());
    p[28..34].copy_from_slice(&m.chaddr);
    p.extend_from_slice(&MAGIC);
    opt(&mut p, 53, &[reply]);
    opt(&mut p, 54, &lease.server.octets());
    if reply == NAK {
        if !text.is_empty() {
            opt(&mut p, 56, text.as_bytes());
        }
        p.push(255);
        return p;
    }
    if m.msg_type != INFORM {
        opt(&mut p, 51, &lease.lease_seconds.to_be_bytes());
        opt(&mut p, 58, &(lease.lease_seconds / 2).to_be_bytes());
        opt(&mut p, 59, &(lease.lease_seconds / 8 * 7).to_be_bytes());
    }
    opt(&mut p, 1, &super::netlink::mask(lease.prefix).to_be_bytes());
    if let Some(gw) = lease.gateway {
        opt(&mut p, 3, &gw.octets());
    }
    if !lease.dns.is_empty() {
        let dns: Vec<u8> = lease.dns.iter().flat_map(|d| d.octets()).collect();
        opt(&mut p, 6, &dns);
    }
    if !lease.hostname.is_empty() {
        opt(&mut p, 12, lease.hostname.as_bytes());
    }
    if !lease.domain.is_empty() {
        opt(&mut p, 15, lease.domain.as_bytes());
    }
    opt(&mut p, 26, &lease.mtu.to_be_bytes());
    if !lease.routes.is_empty() {
        let mut routes = Vec::new();
        for (dst, len, via) in &lease.routes {
            classless_route(&mut routes, *dst, *len, *via);
        }
        opt(&mut p, 121, &routes);
    }
    p.push(255);
    // Some clients want at least a BOOTP-sized message.
    if p.len() < 300 {
        p.resize(300, 0);
    }
    p
}

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for pair in data.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The whole frame of an answer, from the server's MAC `src_mac`:
/// broadcast when the client asked for it (or was refused), else to its
/// MAC and new address.
pub fn build_frame(m: &Message, reply: u8, lease: &Lease, text: &str, src_mac: [u8; 6]) -> Vec<u8> {
    let payload = build_bootp(m, reply, lease, text);
    let broadcast = m.flags & 0x8000 != 0 || reply == NAK;
    let (dst_mac, dst_ip) = if broadcast {
        ([0xff; 6], Ipv4Addr::BROADCAST)
    } else if m.msg_type == INFORM && !m.ciaddr.is_unspecified() {
        (m.chaddr, m.ciaddr)
    } else {
        (m.chaddr, lease.ip)
    };
    let src_ip = lease.server;
    let udp_len = 8 + payload.len();
    let mut f = Vec::with_capacity(14 + 20 + udp_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&67u16.to_be_bytes());
    udp.extend_from_slice(&68u16.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    let mut pseudo = 0u32;
    for w in [src_ip.octets(), dst_ip.octets()] {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    pseudo += 17 + udp_len as u32;
    let mut sum = checksum(&udp, pseudo);
    if sum == 0 {
        sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            server: Ipv4Addr::new(10, 0, 0, 1),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dns: vec![Ipv4Addr::new(8, 8, 8, 8)],
            domain: "openstacklocal".into(),
            hostname: "host-10-0-0-5".into(),
            mtu: 1450,
            routes: vec![
                (
                    Ipv4Addr::new(169, 254, 169, 254),
                    32,
                    Ipv4Addr::new(10, 0, 0, 1),
                ),
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 0, 0, 1)),
            ],
            lease_seconds: 86400,
        }
    }

    /// A client's frame, as udhcpc sends it.
    fn discover(msg_type: u8, requested: Option<Ipv4Addr>) -> Vec<u8> {
        let mut p = vec![0u8; BOOTP_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        // The broadcast flag, as a client without an address asks.
        p[10] = 0x80;
        p[28..34].copy_from_slice(&[0xfa, 0x16, 0x3e, 1, 2, 3]);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&[53, 1, msg_type]);
        if let Some(r) = requested {
            p.extend_from_slice(&[50, 4]);
            p.extend_from_slice(&r.octets());
        }
        p.push(255);
        let m = Message {
            xid: 0,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0xfa, 0x16, 0x3e, 1, 2, 3],
            msg_type,
            requested: None,
            server_id: None,
        };
        // Reuse the frame builder for the headers, then swap the payload
        // and ports in.
        let mut l = lease();
        l.server = Ipv4Addr::UNSPECIFIED;
        let mut f = build_frame(&m, OFFER, &l, "", m.chaddr);
        f.truncate(14 + 20 + 8);
        f[34..36].copy_from_slice(&68u16.to_be_bytes());
        f[36..38].copy_from_slice(&67u16.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + p.len()) as u16).to_be_bytes());
        f.extend_from_slice(&p);
        f
    }

    #[test]
    fn discover_gets_an_offer_with_every_option() {
        let m = parse_frame(&discover(DISCOVER, None)).expect("parsed");
        assert_eq!(m.msg_type, DISCOVER);
        assert_eq!(m.xid, 0x1234_5678);
        assert_eq!(m.chaddr, [0xfa, 0x16, 0x3e, 1, 2, 3]);
        let l = lease();
        let (reply, text) = answer(&m, Some(&l)).expect("answered");
        assert_eq!(reply, OFFER);
        let p = build_bootp(&m, reply, &l, text);
        assert_eq!(p[0], 2);
        assert_eq!(&p[16..20], &[10, 0, 0, 5]);
        let opts = &p[BOOTP_LEN + 4..];
        let find = |code: u8| -> Option<Vec<u8>> {
            let mut at = 0;
            while at < opts.len() && opts[at] != 255 {
                let len = usize::from(opts[at + 1]);
                if opts[at] == code {
                    return Some(opts[at + 2..at + 2 + len].to_vec());
                }
                at += 2 + len;
            }
            None
        };
        assert_eq!(find(53), Some(vec![OFFER]));
        assert_eq!(find(54), Some(vec![10, 0, 0, 1]));
        assert_eq!(find(51), Some(86400u32.to_be_bytes().to_vec()));
        assert_eq!(find(1), Some(vec![255, 255, 255, 0]));
        assert_eq!(find(3), Some(vec![10, 0, 0, 1]));
        assert_eq!(find(6), Some(vec![8, 8, 8, 8]));
        assert_eq!(find(12), Some(b"host-10-0-0-5".to_vec()));
        assert_eq!(find(15), Some(b"openstacklocal".to_vec()));
        assert_eq!(find(26), Some(1450u16.to_be_bytes().to_vec()));
        assert_eq!(
            find(121),
            Some(vec![32, 169, 254, 169, 254, 10, 0, 0, 1, 0, 10, 0, 0, 1])
        );
    }

    #[test]
    fn request_is_acked_only_for_the_ports_address() {
        let l = lease();
        let m = parse_frame(&discover(REQUEST, Some(l.ip))).expect("parsed");
        assert_eq!(answer(&m, Some(&l)), Some((ACK, "")));
        let m = parse_frame(&discover(REQUEST, Some(Ipv4Addr::new(10, 0, 0, 9)))).expect("parsed");
        assert_eq!(answer(&m, Some(&l)).map(|a| a.0), Some(NAK));
        // Unknown MACs get nothing: leases only for the network's ports.
        assert_eq!(answer(&m, None), None);
        let mut other = m.clone();
        other.server_id = Some(Ipv4Addr::new(10, 0, 0, 2));
        other.requested = Some(l.ip);
        assert_eq!(answer(&other, Some(&l)), None);
    }

    #[test]
    fn frame_checksums_verify() {
        let l = lease();
        let m = parse_frame(&discover(DISCOVER, None)).expect("parsed");
        let f = build_frame(&m, OFFER, &l, "", [2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[0..6], &[0xff; 6], "broadcast flag honoured");
        assert_eq!(checksum(&f[14..34], 0), 0, "IP header checksum");
        let udp = &f[34..];
        let mut pseudo = 0u32;
        for w in [&f[26..30], &f[30..34]] {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
            pseudo += u32::from(u16::from_be_bytes([w[2], w[3]]));
        }
        pseudo += 17 + udp.len() as u32;
        assert_eq!(checksum(udp, pseudo), 0, "UDP checksum");
        // Without the broadcast flag: to the client's MAC and new address.
        let mut uni = m.clone();
        uni.flags = 0;
        let f = build_frame(&uni, OFFER, &l, "", [2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[0..6], &uni.chaddr);
        assert_eq!(&f[30..34], &[10, 0, 0, 5]);
    }

    #[test]
    fn classless_routes_encode_significant_octets() {
        let mut out = Vec::new();
        classless_route(
            &mut out,
            Ipv4Addr::new(10, 20, 0, 0),
            16,
            Ipv4Addr::new(10, 0, 0, 1),
        );
        classless_route(
            &mut out,
            Ipv4Addr::new(192, 168, 1, 128),
            25,
            Ipv4Addr::new(10, 0, 0, 2),
        );
        assert_eq!(
            out,
            vec![16, 10, 20, 10, 0, 0, 1, 25, 192, 168, 1, 128, 10, 0, 0, 2]
        );
    }

    #[test]
    fn truncated_and_hostile_frames_are_refused() {
        let good = discover(DISCOVER, None);
        for cut in 0..good.len() - 1 {
            let _ = parse_frame(&good[..cut]);
        }
        // Options that run past the end.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] = 12;
        bad.push(200);
        assert!(parse_frame(&bad).is_some() || parse_frame(&bad).is_none());
        assert_eq!(parse_frame(&vec![0u8; 4000]), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let good = discover(REQUEST, Some(Ipv4Addr::new(10, 0, 0, 5)));
        for round in 0..20_000 {
            let mut f = if round % 2 == 0 {
                let len = (next() % 700) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                // Mutate a valid frame so the parser gets deep.
                let mut f = good.clone();
                for _ in 0..(next() % 8) {
                    let at = (next() as usize) % f.len();
                    f[at] = next() as u8;
                }
                f
            };
            if round % 3 == 0 {
                let keep = (next() as usize) % (f.len() + 1);
                f.truncate(keep);
            }
            if let Some(m) = parse_frame(&f) {
                let l = lease();
                if let Some((reply, text)) = answer(&m, Some(&l)) {
                    let _ = build_frame(&m, reply, &l, text, [2, 0, 0, 0, 0, 1]);
                }
            }
        }
    }
}
