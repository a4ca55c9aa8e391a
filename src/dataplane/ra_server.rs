//! The kernel side of IPv6 on router interfaces: their gateway addresses
//! and forwarding (one call from each reconcile pass), and one task per
//! advertising interface with an ICMPv6 raw socket in the router's
//! namespace, bound to the interface: it sends unsolicited Router
//! Advertisements to all nodes (ff02::1, hop limit 255, from the
//! interface's link-local address as the kernel picks it for a link-local
//! destination) and answers Router Solicitations with one.
//!
//! Timing as RFC 4861 and radvd with Neutron's intervals: the first three
//! unsolicited ones 4 s apart, then one every 30 to 100 s (random); a
//! solicitation is answered (to all nodes) at once, but at most one RA per
//! 3 s (MIN_DELAY_BETWEEN_RAS), so a guest sending many gets no more.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use super::desired::Topology;
use super::netlink::{self, Addr6, Link, Socket};
use super::netns::{self, Ns};
use super::ra::{self, RaConfig};

pub type Shared = Arc<RwLock<RaConfig>>;

const INITIAL_INTERVAL: Duration = Duration::from_secs(4);
const INITIAL_COUNT: u32 = 3;
const MIN_INTERVAL_S: u64 = 30;
const MAX_INTERVAL_S: u64 = 100;
const MIN_DELAY_BETWEEN_RAS: Duration = Duration::from_secs(3);
/// `ICMP6_FILTER` (linux/icmpv6.h), at level `IPPROTO_ICMPV6`.
const ICMP6_FILTER: libc::c_int = 1;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

fn warn(what: &str, ns: &Ns, name: &str, e: &io::Error) {
    tracing::warn!(%ns, name, error = %e, "dataplane: {what} failed");
}

/// Puts the IPv6 gateway addresses on the router interfaces (removing
/// global IPv6 addresses yunhe no longer wants from its `yh-*` router
/// interfaces; link-local ones are the kernel's) and turns IPv6
/// forwarding on in each router namespace that has one.
pub fn apply_addrs(
    t: &Topology,
    links: &BTreeMap<Ns, BTreeMap<String, Link>>,
    socks: &mut BTreeMap<Ns, Socket>,
) {
    let mut want: BTreeMap<Ns, BTreeSet<Addr6>> = BTreeMap::new();
    for g in &t.gateways6 {
        let Some(link) = links.get(&g.ns).and_then(|l| l.get(&g.name)) else {
            continue;
        };
        let set = want.entry(g.ns.clone()).or_default();
        for (ip, prefix) in &g.addrs {
            set.insert(Addr6 {
                index: link.index,
                ip: *ip,
                prefix: *prefix,
            });
        }
    }
    for ns in &t.routers {
        let Some(sock) = socks.get_mut(ns) else {
            continue;
        };
        let ours: BTreeSet<i32> = links
            .get(ns)
            .map(|l| {
                l.values()
                    .filter(|l| l.name.starts_with("yh-q"))
                    .map(|l| l.index)
                    .collect()
            })
            .unwrap_or_default();
        let have: BTreeSet<Addr6> = match netlink::addrs6(sock) {
            Ok(a) => a
                .into_iter()
                .filter(|a| ours.contains(&a.index) && !a.link_local())
                .collect(),
            Err(e) => {
                warn("listing IPv6 addresses", ns, "", &e);
                continue;
            }
        };
        let wanted = want.remove(ns).unwrap_or_default();
        for a in have.difference(&wanted) {
            if let Err(e) = netlink::del_addr6(sock, *a) {
                warn("removing address", ns, &a.ip.to_string(), &e);
            }
        }
        for a in wanted.difference(&have) {
            if let Err(e) = netlink::add_addr6(sock, *a) {
                warn("adding address", ns, &a.ip.to_string(), &e);
            }
        }
        if !wanted.is_empty()
            && let Err(e) = netns::sysctl(ns, "net.ipv6.conf.all.forwarding", "1")
        {
            warn("enabling IPv6 forwarding", ns, "", &e);
        }
    }
    // A network's bridge hears its router's advertisements but is no host
    // on the network: it takes no address or route from them.
    let advertised: BTreeSet<&Ns> =
        t.ra.iter()
            .filter_map(|r| {
                t.veths
                    .iter()
                    .find(|v| v.ns == r.ns && v.name == r.name)
                    .map(|v| &v.peer_ns)
            })
            .collect();
    for b in t.bridges.iter().filter(|b| advertised.contains(&b.ns)) {
        let key = format!("net.ipv6.conf.{}.accept_ra", b.name);
        if let Err(e) = netns::sysctl(&b.ns, &key, "0") {
            warn("turning accept_ra off", &b.ns, &b.name, &e);
        }
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to a T of the size passed, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An ICMPv6 raw socket in `ns` on interface `name` (index `index`) that
/// receives only Router Solicitations and sends with hop limit 255.
fn open_socket(ns: &Ns, name: &str, index: i32) -> io::Result<OwnedFd> {
    let name = name.to_string();
    netns::run_in(ns, move || {
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMPV6,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifname = [0u8; libc::IFNAMSIZ];
        for (d, s) in ifname.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
            *d = s;
        }
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &ifname)?;
        // Block every ICMPv6 type but Router Solicitation.
        let mut filter = [u32::MAX; 8];
        let rs = usize::from(ra::ROUTER_SOLICITATION);
        filter[rs >> 5] &= !(1u32 << (rs & 31));
        setsockopt(&fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
        let hops: libc::c_int = 255;
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)?;
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops)?;
        let off: libc::c_int = 0;
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &off)?;
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)?;
        let join = libc::ipv6_mreq {
            ipv6mr_multiaddr: libc::in6_addr {
                s6_addr: ALL_ROUTERS.octets(),
            },
            ipv6mr_interface: index as u32,
        };
        setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &join)?;
        Ok(fd)
    })
}

fn send_ra(fd: &OwnedFd, index: i32, config: &RaConfig) -> io::Result<()> {
    let msg = ra::build_ra(config);
    // SAFETY: sockaddr_in6 is plain data; all zeroes is a valid value.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr = libc::in6_addr {
        s6_addr: ALL_NODES.octets(),
    };
    to.sin6_scope_id = index as u32;
    // SAFETY: msg and to are readable buffers of the lengths passed.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &to as *const libc::sockaddr_in6 as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn random_interval() -> Duration {
    let mut b = [0u8; 2];
    rand::rng().fill_bytes(&mut b);
    let span = MAX_INTERVAL_S - MIN_INTERVAL_S;
    Duration::from_secs(MIN_INTERVAL_S + u64::from(u16::from_ne_bytes(b)) % (span + 1))
}

/// Starts advertising on interface `name` (index `index`) of `ns`.
pub fn spawn(
    ns: Ns,
    name: &str,
    index: i32,
    config: Shared,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let sock = open_socket(&ns, name, index)?;
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and
    // the same descriptor for its whole life.
    let fd = unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    let name = name.to_string();
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 1501];
        let mut next = Instant::now() + Duration::from_millis(200);
        let mut last: Option<Instant> = None;
        let mut unsolicited = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {
                    let c = config.read().map(|c| c.clone()).unwrap_or_default();
                    let now = Instant::now();
                    match send_ra(fd.get_ref(), index, &c) {
                        Ok(()) => {
                            last = Some(now);
                            unsolicited = unsolicited.saturating_add(1);
                            next = now + if unsolicited < INITIAL_COUNT {
                                INITIAL_INTERVAL
                            } else {
                                random_interval()
                            };
                        }
                        Err(e) => {
                            // The link-local address may still be tentative.
                            tracing::debug!(%ns, name, error = %e, "ra: send failed");
                            next = now + Duration::from_secs(1);
                        }
                    }
                }
                ready = fd.readable() => {
                    let Ok(mut guard) = ready else { return };
                    let received = guard.try_io(|inner| {
                        // SAFETY: buf is a writable buffer of the length passed.
                        let n = unsafe {
                            libc::recv(
                                inner.get_ref().as_raw_fd(),
                                buf.as_mut_ptr() as *mut libc::c_void,
                                buf.len(),
                                0,
                            )
                        };
                        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
                    });
                    match received {
                        Ok(Ok(n)) => {
                            if ra::parse_rs(&buf[..n]).is_some() {
                                let now = Instant::now();
                                let at = last.map_or(now, |l| (l + MIN_DELAY_BETWEEN_RAS).max(now));
                                next = next.min(at);
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%ns, name, error = %e, "ra: receive failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_would_block) => {}
                    }
                }
            }
        }
    }))
}
