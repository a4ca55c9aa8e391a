//! What a guest is given of its ports: the VMM's NICs (one tap per port)
//! and `network_data.json` (config drive and metadata service).

use std::os::fd::{AsRawFd, OwnedFd};

use rusqlite::Connection;
use serde_json::{Value, json};

use super::from_network;
use super::views::Lookup;
use crate::compute::{ComputeResult, ComputeState};
use crate::db::servers::Server;
use crate::network::model::{Network, Subnet};
use crate::network::store;
use crate::vmm::vmm_config::NetConfig;

// ------------------------------------------------------------------ NICs

/// The NICs of a server's VMM, one per port in port order, MAC = the
/// port's, each on the port's tap from the dataplane (made persistent in
/// the network's namespace). The descriptors are returned open and
/// inheritable; the caller keeps them until the VMM has started (the VMM
/// closes every descriptor its spec does not name, so another VMM started
/// meanwhile does not keep them).
pub async fn nics(
    dataplane: &crate::dataplane::Dataplane,
    server: &Server,
) -> Result<(Vec<NetConfig>, Vec<OwnedFd>), String> {
    let mut nets = Vec::new();
    let mut fds = Vec::new();
    for sp in &server.ports {
        let fd = dataplane
            .tap_for_port(&sp.port_id)
            .await
            .map_err(|e| format!("port {}: {e}", sp.port_id))?;
        // SAFETY: F_SETFD on a descriptor this function owns.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) };
        if rc < 0 {
            return Err(format!(
                "port {}: {}",
                sp.port_id,
                std::io::Error::last_os_error()
            ));
        }
        nets.push(NetConfig {
            tap: crate::dataplane::desired::tap_name(&sp.port_id),
            mac: Some(sp.mac.clone()),
            fd: Some(fd.as_raw_fd()),
            // Named after its port, so that a detach finds it whatever its position.
            id: Some(crate::compute::driver::nic_device_id(&sp.port_id)),
        });
        fds.push(fd);
    }
    Ok((nets, fds))
}

// --------------------------------------------------------- network_data

/// The `network_data.json` of a server (config drive and metadata), as
/// Nova's `netutils.get_network_metadata` writes it: one link per port
/// (`tap<port id[:11]>`, MAC, MTU), one network per port and IP version
/// (`ipv4_dhcp` when the subnet has DHCP, else the static address, mask,
/// routes and DNS), and the DNS servers as services.
pub fn network_data(conn: &Connection, server: &Server) -> ComputeResult<Value> {
    let lookup = Lookup::new(conn);
    let mut links = Vec::new();
    let mut nets = Vec::new();
    let mut services: Vec<Value> = Vec::new();
    for (_, port) in lookup.ports(server)? {
        let Some(net) = store::load::<Network>(conn, &port.network_id).map_err(from_network)?
        else {
            continue;
        };
        let subnets: Vec<Subnet> = store::children(conn, &net.std.id).map_err(from_network)?;
        let link_id = format!("tap{}", port.std.id.chars().take(11).collect::<String>());
        let mut linked = false;
        for version in [4u8, 6] {
            let Some((sn, ip)) = port.fixed_ips.iter().find_map(|f| {
                subnets
                    .iter()
                    .find(|s| s.std.id == f.subnet_id && s.ip_version == version)
                    .map(|s| (s, f.ip_address.clone()))
            }) else {
                continue;
            };
            if !linked {
                links.push(json!({
                    "id": link_id,
                    "vif_id": port.std.id,
                    "type": "tap",
                    "mtu": net.mtu,
                    "ethernet_mac_address": port.mac_address,
                }));
                linked = true;
            }
            let dns: Vec<Value> = sn
                .dns_nameservers
                .iter()
                .map(|d| json!({"type": "dns", "address": d}))
                .collect();
            for d in &dns {
                if !services.contains(d) {
                    services.push(d.clone());
                }
            }
            let id = format!("network{}", nets.len());
            if sn.enable_dhcp && version == 4 {
                nets.push(json!({
                    "id": id,
                    "type": "ipv4_dhcp",
                    "link": link_id,
                    "network_id": net.std.id,
                }));
                continue;
            }
            let netmask = crate::network::ipam::Cidr::parse(&sn.cidr, false)
                .map(|c| mask_and_network(&c).0)
                .unwrap_or_default();
            let any = if version == 4 { "0.0.0.0" } else { "::" };
            let mut routes: Vec<Value> = sn
                .gateway_ip
                .iter()
                .map(|g| json!({"network": any, "netmask": any, "gateway": g}))
                .collect();
            for r in &sn.host_routes {
                if let Ok(c) = crate::network::ipam::Cidr::parse(&r.destination, false) {
                    let (mask, network) = mask_and_network(&c);
                    routes.push(json!({
                        "network": network,
                        "netmask": mask,
                        "gateway": r.nexthop,
                    }));
                }
            }
            let kind = if version == 6 {
                match sn.ipv6_address_mode.as_deref() {
                    Some(mode) => format!("ipv6_{mode}"),
                    None => "ipv6".into(),
                }
            } else {
                "ipv4".into()
            };
            nets.push(json!({
                "id": id,
                "type": kind,
                "link": link_id,
                "ip_address": ip,
                "netmask": netmask,
                "routes": routes,
                "network_id": net.std.id,
                "services": dns,
            }));
        }
    }
    Ok(json!({"links": links, "networks": nets, "services": services}))
}

/// A CIDR's netmask and network address, as text.
pub(super) fn mask_and_network(c: &crate::network::ipam::Cidr) -> (String, String) {
    use crate::network::ipam::{from_num, to_num};
    let version = c.version();
    let bits: u32 = if version == 4 { 32 } else { 128 };
    let ones: u128 = if version == 4 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let host = if u32::from(c.prefix) >= bits {
        0
    } else {
        ones >> u32::from(c.prefix)
    };
    let mask = ones & !host;
    (
        from_num(mask, version).to_string(),
        from_num(to_num(c.addr) & mask, version).to_string(),
    )
}

/// [`network_data`] read now for a server (an empty document without ports).
pub async fn network_data_of(s: &ComputeState, server: &Server) -> ComputeResult<Value> {
    if server.ports.is_empty() {
        return Ok(json!({"links": [], "networks": [], "services": []}));
    }
    let server = server.clone();
    s.read(move |conn| network_data(conn, &server)).await
}
