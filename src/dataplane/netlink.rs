//! The small netlink layer: messages with their attributes (built and
//! parsed here, no C library), a socket that sends a request and collects
//! the answer, and the rtnetlink requests the dataplane needs (links,
//! addresses, routes). A socket acts on the network namespace it was
//! opened in (see `netns::open_socket`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub const NETLINK_ROUTE: i32 = 0;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_REPLACE: u16 = 0x100;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLA_F_NESTED: u16 = 0x8000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

const IFF_UP: u32 = 1;
const AF_INET: u8 = 2;
const AF_UNSPEC: u8 = 0;

/// The most bytes one answer datagram may hold (the kernel's dumps stay
/// well below; a bigger one is cut and refused).
const RECV_BUFFER: usize = 64 * 1024;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message being built: the header, a fixed part, attributes.
#[derive(Debug, Clone)]
pub struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A message of type `ty` with `flags`; length and sequence are set by
    /// [`Msg::finish`].
    pub fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// Appends raw bytes (a fixed header such as `ifinfomsg`), padded.
    pub fn put(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
    }

    /// Appends one attribute.
    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
    }

    pub fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    /// A NUL-terminated string.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(ty, &data);
    }

    /// Opens a nested attribute; close it with [`Msg::end`].
    pub fn begin(&mut self, ty: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn end(&mut self) {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// The bytes to send, with length and sequence number.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.end();
        }
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub ty: u16,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// Splits a datagram into messages; a truncated one ends the walk.
pub fn split(buf: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push(Reply {
            ty: u16::from_ne_bytes([buf[at + 4], buf[at + 5]]),
            seq: u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]),
            payload: buf[at + 16..at + len].to_vec(),
        });
        at += align(len);
    }
    out
}

/// The attributes in `buf`: (type without flags, payload); a malformed one
/// ends the walk.
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & 0x3fff;
        if len < 4 || at + len > buf.len() {
            break;
        }
        out.push((ty, &buf[at + 4..at + len]));
        at += align(len);
    }
    out
}

fn attr_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn attr_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
}

/// A netlink socket of one protocol, in the namespace it was opened in.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// Opens a socket of `protocol` in the calling thread's namespace.
    pub fn open(protocol: i32) -> io::Result<Socket> {
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr points to a sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: timeout is a timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Socket { fd, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, data: &[u8]) -> io::Result<()> {
        // SAFETY: data is a valid buffer of the length passed.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                data.as_ptr() as *const libc::c_void,
                data.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; RECV_BUFFER];
        // SAFETY: buf is a writable buffer of the length passed.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Sends one request and waits for its acknowledgement (or the end of
    /// its dump); returns the data messages of the answer.
    pub fn request(&mut self, msg: Msg) -> io::Result<Vec<Reply>> {
        let seq = self.next_seq();
        let data = msg.finish(seq);
        self.send(&data)?;
        self.collect(seq, seq)
    }

    /// Sends a netfilter batch (its first and last messages are the batch
    /// edges, which get no answer) in one datagram and waits until every
    /// message in between is acknowledged; the first error ends it.
    pub fn request_batch(&mut self, msgs: Vec<Msg>) -> io::Result<()> {
        let first = self.seq.wrapping_add(1);
        let count = msgs.len() as u32;
        let mut data = Vec::new();
        for m in msgs {
            let seq = self.next_seq();
            data.extend(m.finish(seq));
        }
        self.send(&data)?;
        if count < 3 {
            return Ok(());
        }
        // The last acknowledged message is the one before the end edge.
        self.collect(first, first.wrapping_add(count - 2)).map(drop)
    }

    fn collect(&mut self, first: u32, last: u32) -> io::Result<Vec<Reply>> {
        let mut out = Vec::new();
        loop {
            let buf = self.recv()?;
            for r in split(&buf) {
                if r.seq < first || r.seq > last {
                    continue;
                }
                match r.ty {
                    NLMSG_ERROR => {
                        let code = r
                            .payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        if r.seq == last {
                            return Ok(out);
                        }
                    }
                    NLMSG_DONE => {
                        if r.seq == last {
                            return Ok(out);
                        }
                    }
                    _ => out.push(r),
                }
            }
        }
    }
}

/// `struct ifinfomsg`.
fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = AF_UNSPEC;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub mtu: Option<u32>,
}

pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let head = payload.get(..16)?;
    let index = i32::from_ne_bytes(head[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(head[8..12].try_into().ok()?);
    let mut link = Link {
        index,
        name: String::new(),
        kind: None,
        master: None,
        mac: None,
        up: flags & IFF_UP != 0,
        mtu: None,
    };
    for (ty, data) in attrs(&payload[16..]) {
        match ty {
            IFLA_IFNAME => link.name = attr_string(data),
            IFLA_MASTER => link.master = attr_u32(data),
            IFLA_MTU => link.mtu = attr_u32(data),
            IFLA_ADDRESS => link.mac = data.try_into().ok(),
            IFLA_LINKINFO => {
                for (ity, idata) in attrs(data) {
                    if ity == IFLA_INFO_KIND {
                        link.kind = Some(attr_string(idata));
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// Every interface of the socket's namespace.
pub fn links(sock: &mut Socket) -> io::Result<Vec<Link>> {
    let mut m = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP);
    m.put(&ifinfo(0, 0, 0));
    Ok(sock
        .request(m)?
        .iter()
        .filter_map(|r| parse_link(&r.payload))
        .collect())
}

/// The request that makes a bridge.
pub fn new_bridge_msg(name: &str, mtu: u32) -> Msg {
    let mut m = Msg::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    );
    m.put(&ifinfo(0, 0, 0));
    m.attr_str(IFLA_IFNAME, name);
    m.attr_u32(IFLA_MTU, mtu);
    m.begin(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "bridge");
    m.end();
    m
}

/// The request that has a bridge hand its bridged IPv4/IPv6 frames to the
/// namespace's IP hooks (the bridge's own `nf_call_iptables` and
/// `nf_call_ip6tables`, not the host-wide sysctl), so the `inet yunhe`
/// table sees them with conntrack.
pub fn bridge_nf_msg(index: i32) -> Msg {
    const IFLA_BR_NF_CALL_IPTABLES: u16 = 36;
    const IFLA_BR_NF_CALL_IP6TABLES: u16 = 37;
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    m.put(&ifinfo(index, 0, 0));
    m.begin(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "bridge");
    m.begin(IFLA_INFO_DATA);
    m.attr(IFLA_BR_NF_CALL_IPTABLES, &[1]);
    m.attr(IFLA_BR_NF_CALL_IP6TABLES, &[1]);
    m.end();
    m.end();
    m
}

pub fn set_bridge_nf(sock: &mut Socket, index: i32) -> io::Result<()> {
    sock.request(bridge_nf_msg(index)).map(drop)
}

pub fn add_bridge(sock: &mut Socket, name: &str, mtu: u32) -> io::Result<()> {
    sock.request(new_bridge_msg(name, mtu)).map(drop)
}

/// The request that makes a veth pair: `name` here (with `mac`), `peer` in
/// the namespace of `peer_ns` (here when None).
pub fn new_veth_msg(
    name: &str,
    mac: Option<[u8; 6]>,
    peer: &str,
    peer_ns: Option<RawFd>,
    mtu: u32,
) -> Msg {
    let mut m = Msg::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    );
    m.put(&ifinfo(0, 0, 0));
    m.attr_str(IFLA_IFNAME, name);
    m.attr_u32(IFLA_MTU, mtu);
    if let Some(mac) = mac {
        m.attr(IFLA_ADDRESS, &mac);
    }
    m.begin(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "veth");
    m.begin(IFLA_INFO_DATA);
    m.begin(VETH_INFO_PEER);
    m.put(&ifinfo(0, 0, 0));
    m.attr_str(IFLA_IFNAME, peer);
    m.attr_u32(IFLA_MTU, mtu);
    if let Some(fd) = peer_ns {
        m.attr_u32(IFLA_NET_NS_FD, fd as u32);
    }
    m.end();
    m.end();
    m.end();
    m
}

pub fn add_veth(
    sock: &mut Socket,
    name: &str,
    mac: Option<[u8; 6]>,
    peer: &str,
    peer_ns: Option<RawFd>,
    mtu: u32,
) -> io::Result<()> {
    sock.request(new_veth_msg(name, mac, peer, peer_ns, mtu))
        .map(drop)
}

pub fn del_link(sock: &mut Socket, index: i32) -> io::Result<()> {
    let mut m = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK);
    m.put(&ifinfo(index, 0, 0));
    sock.request(m).map(drop)
}

/// The request that sets a link's master (0: none) and brings it up.
pub fn set_link_msg(index: i32, master: Option<u32>) -> Msg {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    m.put(&ifinfo(index, IFF_UP, IFF_UP));
    if let Some(master) = master {
        m.attr_u32(IFLA_MASTER, master);
    }
    m
}

/// Puts a link under `master` (when given) and brings it up.
pub fn set_link(sock: &mut Socket, index: i32, master: Option<u32>) -> io::Result<()> {
    sock.request(set_link_msg(index, master)).map(drop)
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub index: i32,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

fn ifaddr(index: i32, prefix: u8) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = AF_INET;
    b[1] = prefix;
    b[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    b
}

/// Every IPv4 address of the socket's namespace.
pub fn addrs(sock: &mut Socket) -> io::Result<Vec<Addr>> {
    let mut m = Msg::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
    m.put(&ifaddr(0, 0));
    let mut out = Vec::new();
    for r in sock.request(m)? {
        let Some(head) = r.payload.get(..8) else {
            continue;
        };
        if head[0] != AF_INET {
            continue;
        }
        let prefix = head[1];
        let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) as i32;
        let mut ip = None;
        for (ty, data) in attrs(&r.payload[8..]) {
            if (ty == IFA_LOCAL || (ty == IFA_ADDRESS && ip.is_none())) && data.len() == 4 {
                ip = Some(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            }
        }
        if let Some(ip) = ip {
            out.push(Addr { index, ip, prefix });
        }
    }
    Ok(out)
}

/// The request that adds (or removes) an IPv4 address.
pub fn addr_msg(add: bool, a: Addr) -> Msg {
    let (ty, flags) = if add {
        (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
    } else {
        (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
    };
    let mut m = Msg::new(ty, flags);
    m.put(&ifaddr(a.index, a.prefix));
    m.attr(IFA_LOCAL, &a.ip.octets());
    m.attr(IFA_ADDRESS, &a.ip.octets());
    m
}

pub fn add_addr(sock: &mut Socket, a: Addr) -> io::Result<()> {
    sock.request(addr_msg(true, a)).map(drop)
}

pub fn del_addr(sock: &mut Socket, a: Addr) -> io::Result<()> {
    sock.request(addr_msg(false, a)).map(drop)
}

const AF_INET6: u8 = 10;
/// `IFA_F_NODAD`: a gateway address is reserved for the router, usable at
/// once.
const IFA_F_NODAD: u8 = 0x02;

/// An IPv6 address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr6 {
    pub index: i32,
    pub ip: Ipv6Addr,
    pub prefix: u8,
}

impl Addr6 {
    /// In fe80::/10 (the kernel's own).
    pub fn link_local(&self) -> bool {
        self.ip.segments()[0] & 0xffc0 == 0xfe80
    }
}

fn ifaddr6(index: i32, prefix: u8, flags: u8) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = AF_INET6;
    b[1] = prefix;
    b[2] = flags;
    b[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    b
}

/// Every IPv6 address of the socket's namespace.
pub fn addrs6(sock: &mut Socket) -> io::Result<Vec<Addr6>> {
    let mut m = Msg::new(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP);
    m.put(&ifaddr6(0, 0, 0));
    let mut out = Vec::new();
    for r in sock.request(m)? {
        let Some(head) = r.payload.get(..8) else {
            continue;
        };
        if head[0] != AF_INET6 {
            continue;
        }
        let prefix = head[1];
        let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) as i32;
        for (ty, data) in attrs(&r.payload[8..]) {
            if ty == IFA_ADDRESS
                && let Ok(octets) = <[u8; 16]>::try_from(data)
            {
                out.push(Addr6 {
                    index,
                    ip: Ipv6Addr::from(octets),
                    prefix,
                });
            }
        }
    }
    Ok(out)
}

/// The request that adds (no duplicate address detection) or removes an
/// IPv6 address.
pub fn addr6_msg(add: bool, a: Addr6) -> Msg {
    let (ty, flags, ifa_flags) = if add {
        (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            IFA_F_NODAD,
        )
    } else {
        (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, 0)
    };
    let mut m = Msg::new(ty, flags);
    m.put(&ifaddr6(a.index, a.prefix, ifa_flags));
    m.attr(IFA_ADDRESS, &a.ip.octets());
    m
}

pub fn add_addr6(sock: &mut Socket, a: Addr6) -> io::Result<()> {
    sock.request(addr6_msg(true, a)).map(drop)
}

pub fn del_addr6(sock: &mut Socket, a: Addr6) -> io::Result<()> {
    sock.request(addr6_msg(false, a)).map(drop)
}

/// The request that sets (creates or replaces) an IPv4 route in the main
/// table: `dst/len` via `gateway`, or on link `oif`.
pub fn route_msg(dst: Ipv4Addr, len: u8, gateway: Option<Ipv4Addr>, oif: Option<i32>) -> Msg {
    let mut m = Msg::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    );
    // struct rtmsg: family, dst_len, src_len, tos, table (main), protocol
    // (static), scope (universe, or link without a gateway), type (unicast),
    // flags.
    let scope = if gateway.is_some() { 0 } else { 253 };
    m.put(&[AF_INET, len, 0, 0, 254, 4, scope, 1, 0, 0, 0, 0]);
    if len > 0 {
        m.attr(RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        m.attr(RTA_GATEWAY, &gw.octets());
    }
    if let Some(oif) = oif {
        m.attr_u32(RTA_OIF, oif as u32);
    }
    m
}

pub fn set_route(
    sock: &mut Socket,
    dst: Ipv4Addr,
    len: u8,
    gateway: Option<Ipv4Addr>,
    oif: Option<i32>,
) -> io::Result<()> {
    sock.request(route_msg(dst, len, gateway, oif)).map(drop)
}

/// The IPv4 netmask of a prefix length.
pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bridge_message_layout() {
        let data = new_bridge_msg("yh-br", 1500).finish(7);
        assert_eq!(data.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize,
            data.len()
        );
        assert_eq!(u16::from_ne_bytes([data[4], data[5]]), RTM_NEWLINK);
        assert_eq!(u32::from_ne_bytes(data[8..12].try_into().unwrap()), 7);
        let at = attrs(&data[32..]);
        assert_eq!(at[0], (IFLA_IFNAME, &b"yh-br\0"[..]));
        assert_eq!(at[1].0, IFLA_MTU);
        assert_eq!(at[2].0, IFLA_LINKINFO);
        let info = attrs(at[2].1);
        assert_eq!(info, vec![(IFLA_INFO_KIND, &b"bridge\0"[..])]);
        // The nested flag is set on the wire and masked when parsed.
        let raw_ty = u16::from_ne_bytes([data[32 + 12 + 8 + 2], data[32 + 12 + 8 + 3]]);
        assert_eq!(raw_ty, IFLA_LINKINFO | NLA_F_NESTED);
    }

    #[test]
    fn veth_peer_is_nested_with_its_namespace() {
        let data = new_veth_msg(
            "yh-q1",
            Some([0xfa, 0x16, 0x3e, 1, 2, 3]),
            "yh-q1",
            Some(9),
            1450,
        )
        .finish(1);
        let at = attrs(&data[32..]);
        let mac = at.iter().find(|(t, _)| *t == IFLA_ADDRESS).unwrap().1;
        assert_eq!(mac, &[0xfa, 0x16, 0x3e, 1, 2, 3]);
        let info = at.iter().find(|(t, _)| *t == IFLA_LINKINFO).unwrap().1;
        let info = attrs(info);
        assert_eq!(info[0], (IFLA_INFO_KIND, &b"veth\0"[..]));
        let peer = attrs(info[1].1);
        assert_eq!(peer[0].0, VETH_INFO_PEER);
        let peer_attrs = attrs(&peer[0].1[16..]);
        assert_eq!(peer_attrs[0], (IFLA_IFNAME, &b"yh-q1\0"[..]));
        assert_eq!(peer_attrs[2], (IFLA_NET_NS_FD, &9u32.to_ne_bytes()[..]));
    }

    #[test]
    fn link_round_trip_through_parser() {
        let mut m = Msg::new(RTM_NEWLINK, 0);
        m.put(&ifinfo(5, IFF_UP, 0));
        m.attr_str(IFLA_IFNAME, "yh-t0123456789");
        m.attr_u32(IFLA_MASTER, 3);
        m.attr(IFLA_ADDRESS, &[1, 2, 3, 4, 5, 6]);
        m.begin(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "tun");
        m.end();
        let data = m.finish(1);
        let replies = split(&data);
        assert_eq!(replies.len(), 1);
        let link = parse_link(&replies[0].payload).unwrap();
        assert_eq!(link.index, 5);
        assert_eq!(link.name, "yh-t0123456789");
        assert_eq!(link.master, Some(3));
        assert_eq!(link.mac, Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(link.kind.as_deref(), Some("tun"));
        assert!(link.up);
    }

    #[test]
    fn ipv6_address_messages() {
        let a = Addr6 {
            index: 7,
            ip: "fd00:6::1".parse().unwrap(),
            prefix: 64,
        };
        let data = addr6_msg(true, a).finish(1);
        assert_eq!(&data[16..19], &[AF_INET6, 64, IFA_F_NODAD]);
        assert_eq!(u32::from_ne_bytes(data[20..24].try_into().unwrap()), 7);
        assert_eq!(attrs(&data[24..])[0], (IFA_ADDRESS, &a.ip.octets()[..]));
        let data = addr6_msg(false, a).finish(2);
        assert_eq!(data[18], 0);
        assert!(!a.link_local());
        assert!(
            Addr6 {
                ip: "fe80::1".parse().unwrap(),
                ..a
            }
            .link_local()
        );
    }

    #[test]
    fn address_and_route_messages() {
        let data = addr_msg(
            true,
            Addr {
                index: 4,
                ip: Ipv4Addr::new(10, 0, 0, 1),
                prefix: 24,
            },
        )
        .finish(1);
        assert_eq!(data[16], AF_INET);
        assert_eq!(data[17], 24);
        assert_eq!(u32::from_ne_bytes(data[20..24].try_into().unwrap()), 4);
        assert_eq!(attrs(&data[24..])[0], (IFA_LOCAL, &[10, 0, 0, 1][..]));
        let data = route_msg(
            Ipv4Addr::UNSPECIFIED,
            0,
            Some(Ipv4Addr::new(172, 24, 4, 1)),
            None,
        )
        .finish(1);
        assert_eq!(&data[16..24], &[AF_INET, 0, 0, 0, 254, 4, 0, 1]);
        assert_eq!(
            attrs(&data[28..]),
            vec![(RTA_GATEWAY, &[172, 24, 4, 1][..])]
        );
    }

    #[test]
    fn hostile_answers_do_not_panic() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let len = (seed % 200) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(seed as u8);
            }
            for r in split(&buf) {
                let _ = parse_link(&r.payload);
                let _ = attrs(&r.payload);
            }
            let _ = attrs(&buf);
            let _ = parse_link(&buf);
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("fa:16:3e:00:0a:ff"),
            Some([0xfa, 0x16, 0x3e, 0, 10, 255])
        );
        assert_eq!(parse_mac("fa:16:3e:00:0a"), None);
        assert_eq!(parse_mac("fa:16:3e:00:0a:ff:01"), None);
        assert_eq!(parse_mac("zz:16:3e:00:0a:ff"), None);
    }
}
