//! How fast yunhe's DHCP server answers (issue 12: "DHCP offer within 5 ms of the DISCOVER"),
//! for `yunhe bench network`.
//!
//! Everything happens inside a namespace of the benchmark's own (`yunhe-bench-dhcp-<pid>`,
//! removed at the end, with its interfaces): a veth pair, the real DHCP task of
//! [`super::dhcp_server`] on one end (as it runs on a network's bridge), and a client on the
//! other that sends DISCOVERs on a packet socket and times each OFFER. The baseline, measured in
//! the same run over the same pair, is a plain echo: a thread that sends every frame straight
//! back, i.e. the round trip of a frame through the kernel and two packet sockets that no DHCP
//! server can beat. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN).

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::dhcp::{self, Lease};
use super::netlink;
use super::netns::{self, Ns};

const SERVER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xbe, 0x00, 0x01];
const ETH_P_IP: u16 = 0x0800;

/// Result of [`dhcp_offer_latency`], in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct DhcpBenchResult {
    /// Median time from sending a DISCOVER to receiving its OFFER.
    pub offer_p50_ms: f64,
    /// The 99th percentile of the same.
    pub offer_p99_ms: f64,
    /// Baseline: median round trip of the same frame through an echo on the same pair.
    pub echo_p50_ms: f64,
    /// DISCOVERs sent (and OFFERs received: a missing one is an error).
    pub rounds: usize,
}

/// Times `rounds` DISCOVER → OFFER exchanges and as many echo round trips.
pub fn dhcp_offer_latency(rounds: usize) -> io::Result<DhcpBenchResult> {
    let name = format!("{}bench-dhcp-{}", netns::PREFIX, std::process::id());
    netns::create(&name)?;
    let result = measure(&Ns::Named(name.clone()), rounds);
    let removed = netns::remove(&name);
    let result = result?;
    removed?;
    Ok(result)
}

fn measure(ns: &Ns, rounds: usize) -> io::Result<DhcpBenchResult> {
    let (server_index, client_index, client_mac) = netns::run_in(ns, || {
        let mut sock = netlink::Socket::open(netlink::NETLINK_ROUTE)?;
        netlink::add_veth(&mut sock, "yb-srv", Some(SERVER_MAC), "yb-cli", None, 1500)?;
        let links = netlink::links(&mut sock)?;
        let find = |name: &str| {
            links
                .iter()
                .find(|l| l.name == name)
                .cloned()
                .ok_or_else(|| io::Error::other(format!("{name} missing after creation")))
        };
        let (server, client) = (find("yb-srv")?, find("yb-cli")?);
        netlink::set_link(&mut sock, server.index, None)?;
        netlink::set_link(&mut sock, client.index, None)?;
        let mac = client
            .mac
            .ok_or_else(|| io::Error::other("yb-cli has no MAC"))?;
        Ok((server.index, client.index, mac))
    })?;
    let client = packet_socket(ns, client_index)?;
    let discover = discover_frame(client_mac);

    // Baseline: an echo on the server's end.
    let echo_sock = packet_socket(ns, server_index)?;
    let stop = Arc::new(AtomicBool::new(false));
    let echo = {
        let stop = stop.clone();
        std::thread::spawn(move || echo_frames(&echo_sock, client_mac, &stop))
    };
    // Both ends need a moment after coming up (the veth's carrier).
    wait_until_passes(&client, &discover)?;
    let mut echo_times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        echo_times.push(round_trip(&client, &discover, |_| true)?);
    }
    stop.store(true, Ordering::Relaxed);
    echo.join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;

    // The DHCP server, as the dataplane runs it.
    let lease = Lease {
        ip: Ipv4Addr::new(10, 99, 0, 5),
        prefix: 24,
        server: Ipv4Addr::new(10, 99, 0, 2),
        gateway: Some(Ipv4Addr::new(10, 99, 0, 1)),
        dns: vec![Ipv4Addr::new(10, 99, 0, 1)],
        domain: "openstacklocal".into(),
        hostname: "bench".into(),
        mtu: 1450,
        routes: vec![(
            Ipv4Addr::new(169, 254, 169, 254),
            32,
            Ipv4Addr::new(10, 99, 0, 2),
        )],
        lease_seconds: 86400,
    };
    let leases = Arc::new(RwLock::new(BTreeMap::from([(client_mac, lease)])));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let task = {
        let _entered = runtime.enter();
        super::dhcp_server::spawn(ns.clone(), server_index, SERVER_MAC, leases)?
    };
    let mut offer_times = Vec::with_capacity(rounds);
    let mut failure = None;
    for _ in 0..rounds {
        match round_trip(&client, &discover, is_offer) {
            Ok(t) => offer_times.push(t),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    task.abort();
    drop(runtime);
    if let Some(e) = failure {
        return Err(e);
    }
    offer_times.sort_by(f64::total_cmp);
    echo_times.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(DhcpBenchResult {
        offer_p50_ms: at(&offer_times, 0.5),
        offer_p99_ms: at(&offer_times, 0.99),
        echo_p50_ms: at(&echo_times, 0.5),
        rounds,
    })
}

/// A blocking packet socket for IPv4 frames on interface `index` of `ns` (the DHCP server's
/// own kind), with a 1 s receive timeout.
fn packet_socket(ns: &Ns, index: i32) -> io::Result<OwnedFd> {
    let fd = super::dhcp_server::open_packet_socket(ns, index, true)?;
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: timeout is a timeval of the size passed and outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn send(fd: &OwnedFd, frame: &[u8]) -> io::Result<()> {
    // SAFETY: frame is a readable buffer of the length passed.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One frame into `buf`; `TimedOut`/`WouldBlock` after the socket's timeout.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a writable buffer of the length passed.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends `frame` and waits for a frame from the server's MAC that `accept` takes; returns ms.
fn round_trip(client: &OwnedFd, frame: &[u8], accept: impl Fn(&[u8]) -> bool) -> io::Result<f64> {
    let mut buf = vec![0u8; dhcp::MAX_FRAME];
    let start = Instant::now();
    send(client, frame)?;
    loop {
        let n = recv(client, &mut buf)?;
        let got = &buf[..n];
        // A packet socket also sees its own outgoing frames: take only the server's.
        if got.get(6..12) == Some(&SERVER_MAC[..]) && accept(got) {
            return Ok(start.elapsed().as_secs_f64() * 1000.0);
        }
        if start.elapsed() > Duration::from_secs(2) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no answer within 2 s",
            ));
        }
    }
}

/// Tries a round trip until one passes (the veth pair's carrier comes up asynchronously).
fn wait_until_passes(client: &OwnedFd, frame: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match round_trip(client, frame, |_| true) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {}
        }
    }
}

/// Sends every frame from `client_mac` back with the addresses swapped, until `stop`.
fn echo_frames(sock: &OwnedFd, client_mac: [u8; 6], stop: &AtomicBool) -> io::Result<()> {
    let mut buf = vec![0u8; dhcp::MAX_FRAME];
    while !stop.load(Ordering::Relaxed) {
        let n = match recv(sock, &mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        if n < 14 || buf[6..12] != client_mac {
            continue;
        }
        buf[0..6].copy_from_slice(&client_mac);
        buf[6..12].copy_from_slice(&SERVER_MAC);
        send(sock, &buf[..n])?;
    }
    Ok(())
}

/// Whether `frame` is a DHCP OFFER (Ethernet, IPv4, UDP to port 68, option 53 = 2).
fn is_offer(frame: &[u8]) -> bool {
    let Some(ip) = frame.get(14..) else {
        return false;
    };
    let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    let Some(udp) = ip.get(ihl..) else {
        return false;
    };
    if udp.get(2..4) != Some(&[0, 68][..]) {
        return false;
    }
    // BOOTP (236 bytes), the magic cookie, then options: the server puts 53 first.
    udp.get(8 + 236 + 4..8 + 236 + 7) == Some(&[53, 1, dhcp::OFFER][..])
}

/// A broadcast DISCOVER from `mac`, as a client without an address sends it.
fn discover_frame(mac: [u8; 6]) -> Vec<u8> {
    let mut bootp = vec![0u8; 236];
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    bootp[4..8].copy_from_slice(&0x5955_4e48u32.to_be_bytes());
    bootp[10] = 0x80; // broadcast
    bootp[28..34].copy_from_slice(&mac);
    bootp.extend_from_slice(&[99, 130, 83, 99, 53, 1, dhcp::DISCOVER, 255]);
    let udp_len = 8 + bootp.len();
    let mut f = Vec::with_capacity(14 + 20 + udp_len);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&Ipv4Addr::BROADCAST.octets());
    let mut sum = 0u32;
    for pair in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(&bootp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discover_parses_as_one_and_an_offer_is_recognised() {
        let mac = [2, 0, 0, 0, 0, 9];
        let frame = discover_frame(mac);
        let m = dhcp::parse_frame(&frame).expect("a DISCOVER");
        assert_eq!(m.msg_type, dhcp::DISCOVER);
        assert_eq!(m.chaddr, mac);
        let lease = Lease {
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            server: Ipv4Addr::new(10, 0, 0, 2),
            gateway: None,
            dns: vec![],
            domain: String::new(),
            hostname: "h".into(),
            mtu: 1500,
            routes: vec![],
            lease_seconds: 60,
        };
        let (reply, text) = dhcp::answer(&m, Some(&lease)).expect("answered");
        let offer = dhcp::build_frame(&m, reply, &lease, text, SERVER_MAC);
        assert!(is_offer(&offer));
        assert!(!is_offer(&frame));
        assert!(!is_offer(&[]));
    }
}
