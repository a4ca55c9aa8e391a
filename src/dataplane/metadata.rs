//! The metadata service at 169.254.169.254:80, served by yunhe itself from
//! each router's namespace (the guests' DHCP lease routes 169.254.169.254
//! through their gateway, which is the router's interface): the address is
//! on the router namespace's `lo`, one listening socket per router. A
//! network with DHCP subnets that no router serves (Neutron's isolated
//! metadata) gets the same from its own namespace: the address is also on
//! its bridge, and the lease routes 169.254.169.254 on the link.
//!
//! A request is identified by the router (or network) it reached and its
//! source address: the port on one of the served subnets with that fixed
//! IP, whose `device_id` is the instance. What is served about the instance comes
//! from compute through [`InstanceSource`] (the seam: the dataplane does
//! not import compute); the addresses, MAC and floating IP come from the
//! network records. Formats: OpenStack (`/openstack/latest/meta_data.json`,
//! `user_data`, `network_data.json`, `vendor_data.json`,
//! `vendor_data2.json`) and EC2 (`/latest/meta-data/...`,
//! `/latest/user-data`, any dated version as `latest`).
//!
//! The HTTP here is the least a metadata client needs: one `GET` per
//! connection, request head at most 8 KiB, `Connection: close`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::netns::{self, Ns};
use crate::network::model::{FloatingIp, Network, OWNER_INTERFACE, Port, Subnet};

/// The metadata address (on `lo` of every router's namespace).
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
/// The most bytes of a request head.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections served at once per router.
const MAX_CONNECTIONS: usize = 64;

/// What compute must give the metadata service about an instance (the
/// same content as its config drive).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceData {
    /// The server's id (the ports' `device_id`).
    pub uuid: String,
    pub name: String,
    pub hostname: String,
    pub project_id: String,
    pub availability_zone: String,
    pub launch_index: u32,
    /// The flavor's name (EC2 `instance-type`).
    pub instance_type: String,
    /// Key pair name → public key (OpenSSH format).
    pub public_keys: BTreeMap<String, String>,
    /// The server's metadata (`meta` in meta_data.json).
    pub meta: BTreeMap<String, String>,
    /// The user data as given at create (decoded), if any.
    pub user_data: Option<Vec<u8>>,
    /// `network_data.json` as in the config drive; None: built here from
    /// the calling port.
    pub network_data: Option<Value>,
}

/// The seam compute fills: the data of an instance by id (None: unknown,
/// answered 404). Called off the async runtime; may read a database.
pub trait InstanceSource: Send + Sync {
    fn instance(&self, id: &str) -> Option<InstanceData>;
}

/// What the network records say about the calling port.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub device_id: String,
    pub port_id: String,
    pub network_id: String,
    pub mac: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub floating_ip: Option<Ipv4Addr>,
    pub mtu: u32,
    /// The port's host name (`dns_name`, else `host-10-0-0-5`) and project,
    /// for the answer when compute gives nothing.
    pub hostname: String,
    pub project_id: String,
}

/// An answer: status, content type, body.
pub type Answer = (u16, &'static str, Vec<u8>);

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

fn text(body: impl Into<String>) -> Option<Answer> {
    Some((200, TEXT, body.into().into_bytes()))
}

fn json_answer(v: &Value) -> Option<Answer> {
    Some((200, JSON, serde_json::to_vec(v).unwrap_or_default()))
}

/// The calling ports of one router, by source address.
pub type Callers = Arc<RwLock<BTreeMap<Ipv4Addr, Caller>>>;

/// What the records alone say of an instance when compute gives nothing
/// (no [`InstanceSource`] yet, or it does not know the id): its id and a
/// host name from the port, no keys, no user data.
pub fn from_records(c: &Caller, hostname: &str, project_id: &str) -> InstanceData {
    InstanceData {
        uuid: c.device_id.clone(),
        name: hostname.to_string(),
        hostname: hostname.to_string(),
        project_id: project_id.to_string(),
        availability_zone: "nova".into(),
        ..Default::default()
    }
}

/// Starts serving metadata in a router's namespace (its `lo` must hold
/// [`ADDRESS`]).
pub fn spawn(
    ns: Ns,
    callers: Callers,
    source: Option<Arc<dyn InstanceSource>>,
) -> io::Result<tokio::task::JoinHandle<()>> {
    let listener = netns::run_in(&ns, || {
        let l = std::net::TcpListener::bind(SocketAddr::from((ADDRESS, 80)))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue; // dropped: too many at once
            };
            let callers = callers.clone();
            let source = source.clone();
            tokio::spawn(async move {
                let _permit = permit;
                serve(stream, peer, callers, source).await;
            });
        }
    }))
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    callers: Callers,
    source: Option<Arc<dyn InstanceSource>>,
) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(io::Error::other("request head too long or cut"));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<(), io::Error>(())
    })
    .await;
    let (status, ctype, body) = match (read, request_path(&head)) {
        (Ok(Ok(())), Ok(path)) => answer(&path, peer.ip(), &callers, source).await,
        (Ok(Ok(())), Err(status)) => (status, TEXT, Vec::new()),
        _ => return,
    };
    let head_only = head.starts_with(b"HEAD ");
    let mut out = response(status, ctype, &body);
    if head_only {
        out.truncate(out.len() - body.len());
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

async fn answer(
    path: &str,
    peer: IpAddr,
    callers: &Callers,
    source: Option<Arc<dyn InstanceSource>>,
) -> Answer {
    let not_found = (404, TEXT, b"404 Not Found".to_vec());
    let IpAddr::V4(ip) = peer else {
        return not_found;
    };
    let Some(caller) = callers.read().ok().and_then(|c| c.get(&ip).cloned()) else {
        return not_found;
    };
    let id = caller.device_id.clone();
    let given = match source {
        Some(s) => tokio::task::spawn_blocking(move || s.instance(&id))
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let inst = given.unwrap_or_else(|| from_records(&caller, &caller.hostname, &caller.project_id));
    render(path, &inst, &caller).unwrap_or(not_found)
}

/// The ports a router serves metadata to, by address: the compute ports
/// with a fixed IPv4 address on a subnet the router has an interface on.
pub fn callers(
    router_id: &str,
    networks: &BTreeMap<String, Network>,
    subnets: &BTreeMap<String, Subnet>,
    ports: &[Port],
    fips: &[FloatingIp],
) -> BTreeMap<Ipv4Addr, Caller> {
    let served: Vec<&String> = ports
        .iter()
        .filter(|p| p.device_id == router_id && p.device_owner == OWNER_INTERFACE)
        .flat_map(|p| p.fixed_ips.iter().map(|f| &f.subnet_id))
        .collect();
    callers_on(&served, networks, subnets, ports, fips)
}

/// The compute ports with a fixed IPv4 address on one of `served` (a
/// router's subnets, or an isolated network's), by address.
pub fn callers_on(
    served: &[&String],
    networks: &BTreeMap<String, Network>,
    subnets: &BTreeMap<String, Subnet>,
    ports: &[Port],
    fips: &[FloatingIp],
) -> BTreeMap<Ipv4Addr, Caller> {
    let mut out = BTreeMap::new();
    for port in ports {
        if port.device_owner.starts_with("network:") || port.device_id.is_empty() {
            continue;
        }
        let Some(net) = networks.get(&port.network_id) else {
            continue;
        };
        for f in port
            .fixed_ips
            .iter()
            .filter(|f| served.contains(&&f.subnet_id))
        {
            let (Ok(ip), Some(subnet)) =
                (f.ip_address.parse::<Ipv4Addr>(), subnets.get(&f.subnet_id))
            else {
                continue;
            };
            let Some(prefix) = subnet
                .cidr
                .split_once('/')
                .and_then(|(_, len)| len.parse::<u8>().ok())
                .filter(|len| *len <= 32)
            else {
                continue;
            };
            let floating_ip = fips
                .iter()
                .find(|fip| {
                    fip.port_id.as_deref() == Some(port.std.id.as_str())
                        && fip.fixed_ip_address.as_deref() == Some(f.ip_address.as_str())
                })
                .and_then(|fip| fip.floating_ip_address.parse().ok());
            let hostname = if port.dns_name.is_empty() {
                format!("host-{}", ip.to_string().replace('.', "-"))
            } else {
                port.dns_name.clone()
            };
            out.insert(
                ip,
                Caller {
                    device_id: port.device_id.clone(),
                    port_id: port.std.id.clone(),
                    network_id: port.network_id.clone(),
                    mac: port.mac_address.clone(),
                    ip,
                    prefix,
                    gateway: subnet.gateway_ip.as_deref().and_then(|g| g.parse().ok()),
                    floating_ip,
                    mtu: u32::try_from(net.mtu).unwrap_or(1500),
                    hostname,
                    project_id: port.std.project_id.clone(),
                },
            );
        }
    }
    out
}

/// The OpenStack `network_data.json` of one port with DHCP.
pub fn network_data(c: &Caller) -> Value {
    let link = format!("tap{}", c.port_id.chars().take(11).collect::<String>());
    json!({
        "links": [{"id": link, "vif_id": c.port_id, "type": "ovs",
                   "mtu": c.mtu, "ethernet_mac_address": c.mac}],
        "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": link,
                      "network_id": c.network_id}],
        "services": [],
    })
}

/// `meta_data.json`.
pub fn meta_data(i: &InstanceData) -> Value {
    let keys: Vec<Value> = i
        .public_keys
        .iter()
        .map(|(name, data)| json!({"name": name, "type": "ssh", "data": data}))
        .collect();
    json!({
        "uuid": i.uuid,
        "name": i.name,
        "hostname": i.hostname,
        "project_id": i.project_id,
        "availability_zone": i.availability_zone,
        "launch_index": i.launch_index,
        "public_keys": i.public_keys,
        "keys": keys,
        "meta": i.meta,
        "devices": [],
    })
}

fn ec2_meta(i: &InstanceData, c: &Caller, rest: &str) -> Option<Answer> {
    let keys: Vec<(&String, &String)> = i.public_keys.iter().collect();
    let mut items: Vec<(&str, String)> = vec![
        ("ami-id", "ami-00000000".into()),
        ("ami-launch-index", i.launch_index.to_string()),
        ("hostname", format!("{}.novalocal", i.hostname)),
        ("instance-id", format!("i-{}", i.uuid)),
        ("instance-type", i.instance_type.clone()),
        ("local-hostname", format!("{}.novalocal", i.hostname)),
        ("local-ipv4", c.ip.to_string()),
        ("mac", c.mac.clone()),
        ("reservation-id", format!("r-{}", i.uuid)),
    ];
    if let Some(f) = c.floating_ip {
        items.push(("public-ipv4", f.to_string()));
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        let mut names: Vec<String> = items.iter().map(|(k, _)| k.to_string()).collect();
        names.push("placement/".into());
        if !keys.is_empty() {
            names.push("public-keys/".into());
        }
        names.sort();
        return text(names.join("\n"));
    }
    if let Some((_, v)) = items.iter().find(|(k, _)| *k == rest) {
        return text(v.clone());
    }
    match rest {
        "placement" => text("availability-zone"),
        "placement/availability-zone" => text(i.availability_zone.clone()),
        "public-keys" if !keys.is_empty() => text(
            keys.iter()
                .enumerate()
                .map(|(n, (name, _))| format!("{n}={name}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => {
            let key = rest.strip_prefix("public-keys/")?;
            let (n, what) = key.split_once('/').unwrap_or((key, ""));
            let (_, data) = keys.get(n.parse::<usize>().ok()?)?;
            match what {
                "" => text("openssh-key"),
                "openssh-key" => text(data.to_string()),
                _ => None,
            }
        }
    }
}

/// The answer to `GET path` from the instance `i` on port `c` (None: 404).
pub fn render(path: &str, i: &InstanceData, c: &Caller) -> Option<Answer> {
    let path = path.split('?').next().unwrap_or_default();
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return text("latest\nopenstack");
    }
    if let Some(rest) = path.strip_prefix("openstack") {
        let rest = rest.trim_matches('/');
        if rest.is_empty() {
            return text("latest");
        }
        let (_version, file) = rest.split_once('/').unwrap_or((rest, ""));
        return match file.trim_end_matches('/') {
            "" => text(
                "meta_data.json\nnetwork_data.json\nuser_data\nvendor_data.json\nvendor_data2.json",
            ),
            "meta_data.json" => json_answer(&meta_data(i)),
            "network_data.json" => {
                json_answer(&i.network_data.clone().unwrap_or_else(|| network_data(c)))
            }
            "vendor_data.json" | "vendor_data2.json" => json_answer(&json!({})),
            "user_data" => i
                .user_data
                .as_ref()
                .map(|d| (200, "application/octet-stream", d.clone())),
            _ => None,
        };
    }
    // EC2: "<version>/meta-data/...", "<version>/user-data".
    let (_version, rest) = path.split_once('/').unwrap_or((path, ""));
    if rest.is_empty() {
        return text("meta-data/\nuser-data");
    }
    if rest == "user-data" {
        return i
            .user_data
            .as_ref()
            .map(|d| (200, "application/octet-stream", d.clone()));
    }
    let meta = rest.strip_prefix("meta-data")?;
    ec2_meta(i, c, meta.trim_start_matches('/'))
}

/// The request line's path of an HTTP request head (GET only).
pub fn request_path(head: &[u8]) -> Result<String, u16> {
    let line_end = head.windows(2).position(|w| w == b"\r\n").ok_or(400u16)?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| 400u16)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") || !path.starts_with('/') {
        return Err(400);
    }
    if method != "GET" && method != "HEAD" {
        return Err(405);
    }
    Ok(path.to_string())
}

/// A whole HTTP/1.1 response.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn inst() -> InstanceData {
        InstanceData {
            uuid: "0b9c3d4e-0000-4000-8000-000000000001".into(),
            name: "vm1".into(),
            hostname: "vm1".into(),
            project_id: "p".into(),
            availability_zone: "nova".into(),
            instance_type: "m1.tiny".into(),
            public_keys: [("mykey".to_string(), "ssh-ed25519 AAAA me".to_string())]
                .into_iter()
                .collect(),
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            ..Default::default()
        }
    }

    fn caller() -> Caller {
        Caller {
            device_id: "0b9c3d4e-0000-4000-8000-000000000001".into(),
            port_id: "5d1e0f2a-1111-4000-8000-000000000002".into(),
            network_id: "n1".into(),
            mac: "fa:16:3e:00:00:01".into(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            floating_ip: Some(Ipv4Addr::new(172, 24, 4, 7)),
            mtu: 1450,
            hostname: "host-10-0-0-5".into(),
            project_id: "p".into(),
        }
    }

    fn body(path: &str) -> Option<String> {
        render(path, &inst(), &caller()).map(|(_, _, b)| String::from_utf8(b).unwrap())
    }

    #[test]
    fn openstack_format() {
        let md: Value =
            serde_json::from_str(&body("/openstack/latest/meta_data.json").unwrap()).unwrap();
        assert_eq!(md["uuid"], "0b9c3d4e-0000-4000-8000-000000000001");
        assert_eq!(md["public_keys"]["mykey"], "ssh-ed25519 AAAA me");
        assert_eq!(md["keys"][0]["type"], "ssh");
        assert_eq!(
            body("/openstack/latest/user_data").unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        let nd: Value =
            serde_json::from_str(&body("/openstack/2018-08-27/network_data.json").unwrap())
                .unwrap();
        assert_eq!(nd["links"][0]["ethernet_mac_address"], "fa:16:3e:00:00:01");
        assert_eq!(nd["networks"][0]["type"], "ipv4_dhcp");
        assert_eq!(body("/openstack/latest/vendor_data2.json").unwrap(), "{}");
        assert!(body("/openstack/latest/nothing").is_none());
        assert!(body("/openstack").unwrap().contains("latest"));
    }

    #[test]
    fn ec2_format() {
        let list = body("/latest/meta-data/").unwrap();
        for k in [
            "instance-id",
            "local-ipv4",
            "public-ipv4",
            "public-keys/",
            "placement/",
        ] {
            assert!(list.lines().any(|l| l == k), "{k} in {list}");
        }
        assert_eq!(
            body("/latest/meta-data/instance-id").unwrap(),
            "i-0b9c3d4e-0000-4000-8000-000000000001"
        );
        assert_eq!(
            body("/2009-04-04/meta-data/local-ipv4").unwrap(),
            "10.0.0.5"
        );
        assert_eq!(body("/latest/meta-data/public-ipv4").unwrap(), "172.24.4.7");
        assert_eq!(body("/latest/meta-data/public-keys/").unwrap(), "0=mykey");
        assert_eq!(
            body("/latest/meta-data/public-keys/0/openssh-key").unwrap(),
            "ssh-ed25519 AAAA me"
        );
        assert_eq!(
            body("/latest/meta-data/placement/availability-zone").unwrap(),
            "nova"
        );
        assert_eq!(body("/latest/user-data").unwrap(), "#!/bin/sh\necho hi\n");
        assert!(body("/latest/meta-data/public-keys/7/openssh-key").is_none());
        assert!(body("/latest/meta-data/nope").is_none());
    }

    #[test]
    fn no_user_data_is_404() {
        let mut i = inst();
        i.user_data = None;
        assert!(render("/latest/user-data", &i, &caller()).is_none());
        assert!(render("/openstack/latest/user_data", &i, &caller()).is_none());
    }

    #[test]
    fn request_heads() {
        assert_eq!(
            request_path(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok("/latest/meta-data/".into())
        );
        assert_eq!(request_path(b"POST / HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(request_path(b"GET nothttp\r\n\r\n"), Err(400));
        assert_eq!(request_path(b"GET / HTTP/1.1"), Err(400));
        assert_eq!(request_path(&[0xff, b'\r', b'\n']), Err(400));
        let r = response(200, TEXT, b"hi");
        assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(r.ends_with(b"\r\n\r\nhi"));
    }
}
