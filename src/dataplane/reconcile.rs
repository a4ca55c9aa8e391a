//! Makes the kernel match a [`Topology`]: reads what is there (namespaces
//! named `yunhe-*`, interfaces named `yh-*`, their addresses), makes what
//! is missing and removes what yunhe made and no longer needs. Nothing not
//! named so is touched. One failing object is logged and the pass goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsRawFd;

use super::desired::Topology;
use super::netlink::{self, Addr, Link, Socket};
use super::netns::{self, Ns};
use super::nft::{self, Table};

/// The prefix of every interface yunhe makes.
pub const LINK_PREFIX: &str = "yh-";

/// What a pass found in place afterwards.
#[derive(Debug, Default)]
pub struct Applied {
    /// Ports whose interface exists, on its bridge, with its namespace's
    /// nftables (security groups) written.
    pub plugged: BTreeSet<String>,
    /// Ports whose interface exists but could not be wired (bridge missing,
    /// link not set, nftables not written): `network-vif-plugged` `failed`.
    pub failed: BTreeSet<String>,
    /// Each network's bridge: namespace, index, MAC.
    pub bridges: BTreeMap<String, (Ns, i32, [u8; 6])>,
    /// The router end of each veth pair: (namespace, name) → index.
    pub veths: BTreeMap<(Ns, String), i32>,
}

fn warn(what: &str, ns: &Ns, name: &str, e: &io::Error) {
    tracing::warn!(%ns, name, error = %e, "dataplane: {what} failed");
}

fn dump(socks: &mut BTreeMap<Ns, Socket>) -> BTreeMap<Ns, BTreeMap<String, Link>> {
    let mut out = BTreeMap::new();
    for (ns, sock) in socks.iter_mut() {
        match netlink::links(sock) {
            Ok(ls) => {
                out.insert(
                    ns.clone(),
                    ls.into_iter().map(|l| (l.name.clone(), l)).collect(),
                );
            }
            Err(e) => warn("listing links", ns, "", &e),
        }
    }
    out
}

/// The nftables tables last written per namespace (empty: removed), so a
/// pass writes only what changed.
pub type TableCache = BTreeMap<Ns, Vec<Table>>;

/// One pass.
pub fn apply(t: &Topology, cache: &mut TableCache) -> io::Result<Applied> {
    // Namespaces.
    let existing: BTreeSet<String> = netns::list()?.into_iter().collect();
    for name in t.namespaces.difference(&existing) {
        cache.remove(&Ns::Named(name.clone()));
        if let Err(e) = netns::create(name) {
            warn("creating namespace", &Ns::Named(name.clone()), name, &e);
        }
    }
    for name in existing.difference(&t.namespaces) {
        if let Err(e) = netns::remove(name) {
            warn("removing namespace", &Ns::Named(name.clone()), name, &e);
        }
    }
    let mut socks: BTreeMap<Ns, Socket> = BTreeMap::new();
    let all_ns = std::iter::once(Ns::Root).chain(t.namespaces.iter().cloned().map(Ns::Named));
    for ns in all_ns {
        match netns::run_in(&ns, || Socket::open(netlink::NETLINK_ROUTE)) {
            Ok(s) => {
                socks.insert(ns, s);
            }
            Err(e) => warn("opening netlink", &ns, "", &e),
        }
    }

    // Interfaces yunhe no longer needs.
    let mut wanted: BTreeMap<Ns, BTreeSet<String>> = BTreeMap::new();
    for b in &t.bridges {
        wanted
            .entry(b.ns.clone())
            .or_default()
            .insert(b.name.clone());
    }
    for v in &t.veths {
        wanted
            .entry(v.ns.clone())
            .or_default()
            .insert(v.name.clone());
        wanted
            .entry(v.peer_ns.clone())
            .or_default()
            .insert(v.peer_name.clone());
    }
    for tap in &t.taps {
        wanted
            .entry(tap.ns.clone())
            .or_default()
            .insert(tap.name.clone());
    }
    let links = dump(&mut socks);
    for (ns, by_name) in &links {
        let keep = wanted.get(ns);
        for link in by_name.values() {
            if link.name.starts_with(LINK_PREFIX)
                && !keep.is_some_and(|k| k.contains(&link.name))
                && let Some(sock) = socks.get_mut(ns)
                && let Err(e) = netlink::del_link(sock, link.index)
                // A veth goes with its peer: the other end may be gone already.
                && e.raw_os_error() != Some(libc::ENODEV)
            {
                warn("removing link", ns, &link.name, &e);
            }
        }
    }

    // Bridges and veth pairs that are missing.
    for b in &t.bridges {
        let exists = links.get(&b.ns).is_some_and(|l| l.contains_key(&b.name));
        if !exists
            && let Some(sock) = socks.get_mut(&b.ns)
            && let Err(e) = netlink::add_bridge(sock, &b.name, b.mtu)
        {
            warn("creating bridge", &b.ns, &b.name, &e);
        }
    }
    for v in &t.veths {
        let exists = links.get(&v.ns).is_some_and(|l| l.contains_key(&v.name));
        if exists {
            continue;
        }
        if let Some(stale) = links.get(&v.peer_ns).and_then(|l| l.get(&v.peer_name))
            && let Some(sock) = socks.get_mut(&v.peer_ns)
        {
            let _ = netlink::del_link(sock, stale.index);
        }
        let result = netns::open(&v.peer_ns).and_then(|peer| {
            let sock = socks
                .get_mut(&v.ns)
                .ok_or_else(|| io::Error::other("no socket in the router namespace"))?;
            netlink::add_veth(
                sock,
                &v.name,
                v.mac,
                &v.peer_name,
                Some(peer.as_raw_fd()),
                v.mtu,
            )
        });
        if let Err(e) = result {
            warn("creating veth", &v.ns, &v.name, &e);
        }
    }

    // Masters, up, addresses.
    let links = dump(&mut socks);
    let mut applied = Applied::default();
    let mut want_addrs: BTreeMap<Ns, BTreeSet<Addr>> = BTreeMap::new();
    let enslave = |ns: &Ns,
                   name: &str,
                   bridge: Option<&str>,
                   socks: &mut BTreeMap<Ns, Socket>|
     -> Option<i32> {
        let l = links.get(ns)?;
        let link = l.get(name)?;
        let master = bridge.and_then(|b| l.get(b)).map(|b| b.index as u32);
        if bridge.is_some() && master.is_none() {
            // Not on its bridge: not wired.
            return None;
        }
        if (!link.up || (master.is_some() && link.master != master))
            && let Some(sock) = socks.get_mut(ns)
            && let Err(e) = netlink::set_link(sock, link.index, master)
        {
            warn("setting link up", ns, name, &e);
            if bridge.is_some() {
                return None;
            }
        }
        Some(link.index)
    };
    for b in &t.bridges {
        if let Some(index) = enslave(&b.ns, &b.name, None, &mut socks) {
            // A network's own bridge hands IP frames to its namespace's
            // hooks (security groups); never the external bridges in the
            // host's namespace.
            if matches!(b.ns, Ns::Named(_))
                && let Some(sock) = socks.get_mut(&b.ns)
                && let Err(e) = netlink::set_bridge_nf(sock, index)
            {
                warn("setting bridge nf_call_iptables", &b.ns, &b.name, &e);
            }
            let mac = links
                .get(&b.ns)
                .and_then(|l| l.get(&b.name))
                .and_then(|l| l.mac)
                .unwrap_or([0; 6]);
            applied
                .bridges
                .insert(b.network_id.clone(), (b.ns.clone(), index, mac));
            for (ip, prefix) in &b.addrs {
                want_addrs.entry(b.ns.clone()).or_default().insert(Addr {
                    index,
                    ip: *ip,
                    prefix: *prefix,
                });
            }
        }
    }
    for v in &t.veths {
        let own = enslave(&v.ns, &v.name, None, &mut socks);
        let peer = enslave(&v.peer_ns, &v.peer_name, Some(&v.bridge), &mut socks);
        if let Some(index) = own {
            applied.veths.insert((v.ns.clone(), v.name.clone()), index);
            for (ip, prefix) in &v.addrs {
                want_addrs.entry(v.ns.clone()).or_default().insert(Addr {
                    index,
                    ip: *ip,
                    prefix: *prefix,
                });
            }
            if peer.is_some() {
                applied.plugged.insert(v.port_id.clone());
            }
        }
    }
    for tap in &t.taps {
        if enslave(&tap.ns, &tap.name, Some(&tap.bridge), &mut socks).is_some() {
            applied.plugged.insert(tap.port_id.clone());
        } else if links
            .get(&tap.ns)
            .is_some_and(|l| l.contains_key(&tap.name))
        {
            // The tap is there (compute made it) but is not wired.
            applied.failed.insert(tap.port_id.clone());
        }
    }
    for (ns, sock) in socks.iter_mut() {
        let ours: BTreeSet<i32> = links
            .get(ns)
            .map(|l| {
                l.values()
                    .filter(|l| l.name.starts_with(LINK_PREFIX))
                    .map(|l| l.index)
                    .collect()
            })
            .unwrap_or_default();
        let have: BTreeSet<Addr> = match netlink::addrs(sock) {
            Ok(a) => a.into_iter().filter(|a| ours.contains(&a.index)).collect(),
            Err(e) => {
                warn("listing addresses", ns, "", &e);
                continue;
            }
        };
        let want = want_addrs.remove(ns).unwrap_or_default();
        for a in have.difference(&want) {
            if let Err(e) = netlink::del_addr(sock, *a) {
                warn("removing address", ns, &a.ip.to_string(), &e);
            }
        }
        for a in want.difference(&have) {
            if let Err(e) = netlink::add_addr(sock, *a) {
                warn("adding address", ns, &a.ip.to_string(), &e);
            }
        }
    }

    // IPv6 on router interfaces (gateway addresses, forwarding).
    super::ra_server::apply_addrs(t, &links, &mut socks);

    // nftables: yunhe's table where one is wanted, none elsewhere.
    if t.root_forwarding
        && let Err(e) = netns::sysctl(&Ns::Root, "net.ipv4.ip_forward", "1")
    {
        warn("enabling forwarding", &Ns::Root, "", &e);
    }
    cache.retain(|ns, _| socks.contains_key(ns));
    for ns in socks.keys() {
        let want: &[Table] = t.tables.get(ns).map(Vec::as_slice).unwrap_or_default();
        if cache.get(ns).is_some_and(|had| had.as_slice() == want) {
            continue;
        }
        let result = netns::run_in(ns, || Socket::open(nft::NETLINK_NETFILTER))
            .and_then(|mut sock| nft::apply(&mut sock, want));
        match result {
            Ok(()) => {
                cache.insert(ns.clone(), want.to_vec());
            }
            Err(e) => {
                warn("writing nftables table", ns, nft::TABLE, &e);
                // A port is wired only with its security groups applied.
                for tap in t.taps.iter().filter(|tap| tap.ns == *ns) {
                    if applied.plugged.remove(&tap.port_id) {
                        applied.failed.insert(tap.port_id.clone());
                    }
                }
            }
        }
    }

    // Routers forward; their routes.
    for ns in &t.routers {
        if let Err(e) = netns::sysctl(ns, "net.ipv4.ip_forward", "1") {
            warn("enabling forwarding", ns, "", &e);
        }
    }
    for r in &t.routes {
        if let Some(sock) = socks.get_mut(&r.ns)
            && let Err(e) = netlink::set_route(sock, r.dst, r.len, Some(r.gateway), None)
        {
            warn("setting route", &r.ns, &format!("{}/{}", r.dst, r.len), &e);
        }
    }
    for r in &t.onlink_routes {
        if let Some(link) = links.get(&r.ns).and_then(|l| l.get(&r.dev))
            && let Some(sock) = socks.get_mut(&r.ns)
            && let Err(e) = netlink::set_route(sock, r.dst, r.len, None, Some(link.index))
        {
            warn("setting route", &r.ns, &format!("{}/{}", r.dst, r.len), &e);
        }
    }
    Ok(applied)
}
