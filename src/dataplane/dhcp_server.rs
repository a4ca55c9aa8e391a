//! One DHCP task per network: a packet socket on the network's bridge,
//! opened inside the network's namespace, answering from the network's
//! lease table (kept current by the reconciler).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, RwLock};

use tokio::io::unix::AsyncFd;

use super::dhcp::{self, Lease};
use super::netns::{self, Ns};

pub type Leases = Arc<RwLock<BTreeMap<[u8; 6], Lease>>>;

const ETH_P_IP: u16 = 0x0800;

/// A packet socket on interface `index` of `ns`, for IPv4 frames (non-blocking unless
/// `blocking`: the benchmark's client waits on it).
pub(super) fn open_packet_socket(ns: &Ns, index: i32, blocking: bool) -> io::Result<OwnedFd> {
    let mode = if blocking { 0 } else { libc::SOCK_NONBLOCK };
    netns::run_in(ns, move || {
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | mode | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = index;
        // SAFETY: addr points to a sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    })
}

/// Starts serving DHCP on a bridge.
pub fn spawn(
    ns: Ns,
    index: i32,
    mac: [u8; 6],
    leases: Leases,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let sock = open_packet_socket(&ns, index, false)?;
    // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and
    // the same descriptor for its whole life.
    let fd = unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; dhcp::MAX_FRAME + 1];
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
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
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let n = match received {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::warn!(%ns, error = %e, "dhcp: receive failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                Err(_would_block) => continue,
            };
            let Some(msg) = dhcp::parse_frame(&buf[..n]) else {
                continue;
            };
            let lease = leases.read().ok().and_then(|l| l.get(&msg.chaddr).cloned());
            let Some((reply, text)) = dhcp::answer(&msg, lease.as_ref()) else {
                continue;
            };
            let Some(lease) = lease else { continue };
            let frame = dhcp::build_frame(&msg, reply, &lease, text, mac);
            // SAFETY: frame is a readable buffer of the length passed.
            let sent = unsafe {
                libc::send(
                    fd.get_ref().as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                )
            };
            if sent < 0 {
                tracing::warn!(%ns, error = %io::Error::last_os_error(), "dhcp: send failed");
            } else {
                tracing::debug!(%ns, ip = %lease.ip, reply, "dhcp: answered");
            }
        }
    }))
}
