//! The Neutron dataplane in the kernel, driven from Rust: a level-triggered
//! reconciler. Each pass reads the desired state from the network records
//! (`desired`), reads the kernel's (`reconcile`, over netlink), and makes
//! the difference; then it marks ports `ACTIVE`/`DOWN` as their interfaces
//! are wired (on their bridge, security groups written), tells compute
//! (`network-vif-plugged` on DOWN → ACTIVE, `failed` when a tap could not be
//! wired, `network-vif-unplugged` on ACTIVE → DOWN, through
//! `server_events`) and keeps the DHCP servers' lease tables current. A pass runs on
//! start (so a kill -9 or a reboot is repaired by construction), after
//! every network write (the `Notify` that server.rs hands to the network
//! service) and every few seconds (a tap made by compute shows up).
//!
//! Layout: `netlink` (message layer and rtnetlink requests), `netns`
//! (named namespaces), `desired` (records → topology), `reconcile`
//! (topology → kernel), `secgroups` (security groups and anti-spoofing →
//! nftables), `dhcp` (packets) and `dhcp_server` (sockets), `ra` (IPv6
//! router advertisements) and `ra_server` (their sockets, router
//! interfaces' IPv6 addresses), `metadata` (169.254.169.254), `bench` (the DHCP
//! server's answer time, for `yunhe bench network`).
//! Knows no HTTP; the network module does not import it.

pub mod bench;
pub mod desired;
pub mod dhcp;
mod dhcp_server;
pub mod metadata;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod ra;
mod ra_server;
pub mod reconcile;
pub mod secgroups;
pub mod uplink;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::{Db, DbError};
use crate::network::model::{Network, Port};
use crate::network::store;
use crate::server_events::{ServerEvent, ServerEvents, VIF_PLUGGED, VIF_UNPLUGGED};

/// How often a pass runs without a change (picks up taps made by compute).
const RESYNC: Duration = Duration::from_secs(3);

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A kernel request failed.
    #[error("dataplane: {0}")]
    Io(#[from] io::Error),
    /// The state file failed.
    #[error("dataplane: state file: {0}")]
    Db(#[from] DbError),
    /// A network record could not be read.
    #[error("dataplane: network records: {0}")]
    Records(String),
    /// The port does not exist (or has no network).
    #[error("dataplane: port {0} not found")]
    PortNotFound(String),
}

impl From<crate::network::NetworkError> for DataplaneError {
    fn from(e: crate::network::NetworkError) -> Self {
        DataplaneError::Records(e.to_string())
    }
}

struct DhcpTask {
    ns: netns::Ns,
    index: i32,
    leases: dhcp_server::Leases,
    task: tokio::task::JoinHandle<()>,
}

struct RaTask {
    index: i32,
    config: ra_server::Shared,
    task: tokio::task::JoinHandle<()>,
}

struct MetadataTask {
    callers: metadata::Callers,
    task: tokio::task::JoinHandle<()>,
}

/// The running dataplane.
pub struct Dataplane {
    db: Db,
    changed: Arc<Notify>,
    dhcp: std::sync::Mutex<BTreeMap<String, DhcpTask>>,
    metadata: std::sync::Mutex<BTreeMap<netns::Ns, MetadataTask>>,
    /// Router advertisements, by (router namespace, interface).
    ra: std::sync::Mutex<BTreeMap<(netns::Ns, String), RaTask>>,
    /// What compute says about instances (None: the records alone).
    instances: RwLock<Option<Arc<dyn metadata::InstanceSource>>>,
    tables: std::sync::Mutex<reconcile::TableCache>,
    /// Bridged external mode's interface (`--external-interface`), or none.
    uplink: Option<uplink::Uplink>,
    /// Where port events go (compute).
    notifier: ServerEvents,
    /// Ports whose wiring failure was reported (once until it changes).
    failed_reported: std::sync::Mutex<BTreeSet<String>>,
}

/// Starts the reconciler: a first pass now, then one after each change.
pub fn start(
    db: Db,
    changed: Arc<Notify>,
    uplink: Option<uplink::Uplink>,
    notifier: ServerEvents,
) -> Arc<Dataplane> {
    load_br_netfilter();
    let dp = Arc::new(Dataplane {
        db,
        changed,
        dhcp: std::sync::Mutex::new(BTreeMap::new()),
        metadata: std::sync::Mutex::new(BTreeMap::new()),
        ra: std::sync::Mutex::new(BTreeMap::new()),
        instances: RwLock::new(None),
        tables: std::sync::Mutex::new(BTreeMap::new()),
        uplink,
        notifier,
        failed_reported: std::sync::Mutex::new(BTreeSet::new()),
    });
    let runner = dp.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = runner.pass().await {
                tracing::warn!(error = %e, "dataplane pass failed");
            }
            tokio::select! {
                _ = runner.changed.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    });
    dp
}

/// Security groups see bridged IP frames only through `br_netfilter`'s
/// hooks (each network's bridge turns `nf_call_iptables` on; without the
/// module that switch is a flag nothing reads, and the filters would pass
/// everything). No request autoloads it, so it is loaded here, before the
/// first pass makes a bridge (the module hooks a namespace's bridges as they
/// are registered). Loading it makes the host-wide
/// `net.bridge.bridge-nf-call-*` sysctls appear, on (the kernel's default, as
/// with Docker or libvirt on the same host); yunhe does not change them.
fn load_br_netfilter() {
    if std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        return;
    }
    match std::process::Command::new("modprobe")
        .arg("br_netfilter")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => tracing::info!("dataplane: loaded br_netfilter"),
        Ok(out) => tracing::warn!(
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "dataplane: modprobe br_netfilter failed: security groups will not filter bridged traffic"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "dataplane: cannot run modprobe br_netfilter: security groups will not filter bridged traffic"
        ),
    }
}

impl Dataplane {
    /// One reconciliation pass.
    pub async fn pass(&self) -> Result<(), DataplaneError> {
        let up = self.uplink.clone();
        let (topology, networks) = self
            .db
            .read(move |conn| Ok(with_uplink(conn, up.as_ref())))
            .await?
            .map_err(DataplaneError::from)?;
        let t = topology.clone();
        let up = self.uplink.clone();
        let mut cache = self
            .tables
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        let (result, cache) = tokio::task::spawn_blocking(move || {
            let r = reconcile::apply(&t, &mut cache);
            if let Some(u) = &up
                && let Err(e) = uplink::enslave(&t, &networks, u)
            {
                tracing::warn!(interface = %u.interface, error = %e, "dataplane: bridging the uplink failed");
            }
            (r, cache)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        if let Ok(mut c) = self.tables.lock() {
            *c = cache;
        }
        let applied = result?;
        self.update_dhcp(&topology, &applied);
        self.update_metadata(&topology);
        self.update_ra(&topology, &applied);
        let ports: BTreeMap<String, bool> = topology
            .taps
            .iter()
            .map(|t| (t.port_id.clone(), applied.plugged.contains(&t.port_id)))
            .chain(
                topology
                    .veths
                    .iter()
                    .map(|v| (v.port_id.clone(), applied.plugged.contains(&v.port_id))),
            )
            .collect();
        let failed = self.newly_failed(&applied.failed);
        let events = self
            .db
            .write(move |tx| {
                mark_ports(tx, &ports, &failed).map_err(|e| DbError::Task(e.to_string()))
            })
            .await?;
        self.notifier.send(events);
        Ok(())
    }

    /// The failed ports not reported yet (a failure is reported once, until
    /// the port is wired or gone).
    fn newly_failed(&self, failed: &BTreeSet<String>) -> BTreeSet<String> {
        let Ok(mut reported) = self.failed_reported.lock() else {
            return BTreeSet::new();
        };
        reported.retain(|p| failed.contains(p));
        let new: BTreeSet<String> = failed.difference(&reported).cloned().collect();
        reported.extend(new.iter().cloned());
        new
    }

    fn update_dhcp(&self, t: &desired::Topology, applied: &reconcile::Applied) {
        let Ok(mut tasks) = self.dhcp.lock() else {
            return;
        };
        let wanted: BTreeSet<&String> = t.dhcp.iter().map(|d| &d.network_id).collect();
        tasks.retain(|id, task| {
            let keep = wanted.contains(id)
                && applied
                    .bridges
                    .get(id)
                    .is_some_and(|(ns, index, _)| *ns == task.ns && *index == task.index)
                && !task.task.is_finished();
            if !keep {
                task.task.abort();
            }
            keep
        });
        for d in &t.dhcp {
            let Some((ns, index, mac)) = applied.bridges.get(&d.network_id) else {
                continue;
            };
            if let Some(task) = tasks.get(&d.network_id) {
                if let Ok(mut l) = task.leases.write() {
                    *l = d.leases.clone();
                }
                continue;
            }
            let leases: dhcp_server::Leases = Arc::new(RwLock::new(d.leases.clone()));
            match dhcp_server::spawn(ns.clone(), *index, *mac, leases.clone()) {
                Ok(task) => {
                    tasks.insert(
                        d.network_id.clone(),
                        DhcpTask {
                            ns: ns.clone(),
                            index: *index,
                            leases,
                            task,
                        },
                    );
                }
                Err(e) => tracing::warn!(network = %d.network_id, error = %e, "dhcp: cannot start"),
            }
        }
    }

    /// One router-advertisement task per advertising router interface,
    /// restarted when its interface is made anew or what it advertises
    /// changes (so the change goes out at once, with the initial burst, as
    /// radvd does when Neutron reloads it).
    fn update_ra(&self, t: &desired::Topology, applied: &reconcile::Applied) {
        let Ok(mut tasks) = self.ra.lock() else {
            return;
        };
        let wanted: BTreeMap<(netns::Ns, String), &ra::RaIface> =
            t.ra.iter()
                .map(|r| ((r.ns.clone(), r.name.clone()), r))
                .collect();
        tasks.retain(|key, task| {
            let same = wanted
                .get(key)
                .is_some_and(|r| task.config.read().is_ok_and(|c| *c == r.config));
            let keep =
                same && applied.veths.get(key) == Some(&task.index) && !task.task.is_finished();
            if !keep {
                task.task.abort();
            }
            keep
        });
        for (key, r) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let Some(index) = applied.veths.get(&key) else {
                continue;
            };
            let config: ra_server::Shared = Arc::new(RwLock::new(r.config.clone()));
            match ra_server::spawn(r.ns.clone(), &r.name, *index, config.clone()) {
                Ok(task) => {
                    tasks.insert(
                        key,
                        RaTask {
                            index: *index,
                            config,
                            task,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(ns = %r.ns, name = %r.name, error = %e, "ra: cannot start")
                }
            }
        }
    }

    /// The seam for compute: where the metadata service gets an
    /// instance's data (running servers restart with it on the next pass;
    /// see docs/network.md, "Metadata").
    pub fn set_instance_source(&self, source: Arc<dyn metadata::InstanceSource>) {
        if let Ok(mut s) = self.instances.write() {
            *s = Some(source);
        }
        if let Ok(mut tasks) = self.metadata.lock() {
            // Restarted on the next pass with the source.
            for (_, t) in std::mem::take(&mut *tasks) {
                t.task.abort();
            }
        }
        self.changed.notify_one();
    }

    fn update_metadata(&self, t: &desired::Topology) {
        let Ok(mut tasks) = self.metadata.lock() else {
            return;
        };
        tasks.retain(|ns, task| {
            let keep = t.metadata.contains_key(ns) && !task.task.is_finished();
            if !keep {
                task.task.abort();
            }
            keep
        });
        let source = self.instances.read().ok().and_then(|s| s.clone());
        for (ns, callers) in &t.metadata {
            if let Some(task) = tasks.get(ns) {
                if let Ok(mut c) = task.callers.write() {
                    *c = callers.clone();
                }
                continue;
            }
            // The address on the router namespace's loopback (index 1 in
            // every namespace), then the listener. A network's namespace
            // (isolated metadata) has it on its bridge already (reconciled
            // with the bridge's addresses, so it goes when a router comes).
            let lo = netlink::Addr {
                index: 1,
                ip: metadata::ADDRESS,
                prefix: 32,
            };
            let network_ns = t.bridges.iter().any(|b| b.ns == *ns);
            let added = netns::run_in(ns, || {
                if network_ns {
                    return Ok(());
                }
                let mut sock = netlink::Socket::open(netlink::NETLINK_ROUTE)?;
                match netlink::add_addr(&mut sock, lo) {
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
                    _ => Ok(()),
                }
            });
            let shared: metadata::Callers = Arc::new(RwLock::new(callers.clone()));
            match added.and_then(|()| metadata::spawn(ns.clone(), shared.clone(), source.clone())) {
                Ok(task) => {
                    tasks.insert(
                        ns.clone(),
                        MetadataTask {
                            callers: shared,
                            task,
                        },
                    );
                }
                Err(e) => tracing::warn!(%ns, error = %e, "metadata: cannot start"),
            }
        }
    }

    /// The tap of a compute port, made (persistent, on the port's bridge)
    /// when missing and opened for a VMM: the fd carries the guest's
    /// frames as the VMM's virtio-net reads and writes them (its
    /// `TAP_FLAGS`: no packet information, a vnet header in front of each
    /// frame for the offloads). The seam for compute.
    pub async fn tap_for_port(&self, port_id: &str) -> Result<OwnedFd, DataplaneError> {
        let id = port_id.to_string();
        let found = self
            .db
            .read(move |conn| {
                let port =
                    store::load::<Port>(conn, &id).map_err(|e| DbError::Task(e.to_string()))?;
                let Some(port) = port else { return Ok(None) };
                let net = store::load::<Network>(conn, &port.network_id)
                    .map_err(|e| DbError::Task(e.to_string()))?;
                Ok(net.map(|n| (desired::network_ns(&n), desired::tap_name(&port.std.id))))
            })
            .await?;
        let (ns, name) = found.ok_or_else(|| DataplaneError::PortNotFound(port_id.to_string()))?;
        let fd = tokio::task::spawn_blocking(move || netns::run_in(&ns, || open_tap(&name)))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        self.changed.notify_one();
        Ok(fd)
    }

    /// Plugs a compute port before its VMM starts (Nova's `plug_vifs`): its
    /// tap is made (persistent) and a pass asked for, which wires it and
    /// sends `network-vif-plugged` when the port goes `ACTIVE`.
    pub async fn plug_port(&self, port_id: &str) -> Result<(), DataplaneError> {
        self.tap_for_port(port_id).await.map(drop)
    }
}

/// The topology of the records, rewritten for bridged external mode, and
/// the networks it was made of.
fn with_uplink(
    conn: &rusqlite::Connection,
    up: Option<&uplink::Uplink>,
) -> crate::network::NetResult<(desired::Topology, Vec<Network>)> {
    let mut t = desired::compute(conn)?;
    let networks = store::all::<Network>(conn)?;
    if let Some(u) = up {
        uplink::rewrite(&mut t, &networks, u);
    }
    Ok((t, networks))
}

/// Opens (making it when missing) the persistent tap `name` in the calling
/// thread's namespace.
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other("interface name too long"));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flags of an existing tap are replaced by these on attach, so a
    // tap an older serve made with other flags is corrected here.
    req.ifr_ifru.ifru_flags = crate::vmm::devices::virtio::net::TAP_FLAGS;
    let fd: OwnedFd = file.into();
    // SAFETY: req is an ifreq that outlives the call, as TUNSETIFF expects.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETPERSIST takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Ports plugged are `ACTIVE` (a compute port's binding is `tap`), others
/// `DOWN`; records change only when their state does. Returns the events
/// for compute: a bound compute port's status change, and `failed` for the
/// bound compute ports in `failed` that are not `ACTIVE`.
fn mark_ports(
    tx: &rusqlite::Transaction,
    ports: &BTreeMap<String, bool>,
    failed: &BTreeSet<String>,
) -> Result<Vec<ServerEvent>, DataplaneError> {
    let mut events = Vec::new();
    for (id, plugged) in ports {
        let Some(mut port) = store::load::<Port>(tx, id)? else {
            continue;
        };
        let status = if *plugged { "ACTIVE" } else { "DOWN" };
        let compute = !port.device_owner.starts_with("network:");
        let bound = compute && !port.device_id.is_empty();
        if bound && !*plugged && port.status != "ACTIVE" && failed.contains(id) {
            events.push(ServerEvent::port(VIF_PLUGGED, &port.device_id, id, false));
        }
        let vif = if *plugged { "tap" } else { "unbound" };
        let vif_changed = compute && port.vif_type != vif;
        if port.status == status && !vif_changed {
            continue;
        }
        if bound && port.status != status {
            let name = if *plugged { VIF_PLUGGED } else { VIF_UNPLUGGED };
            events.push(ServerEvent::port(name, &port.device_id, id, true));
        }
        port.status = status.to_string();
        if compute {
            port.vif_type = vif.to_string();
            port.vif_details = if *plugged {
                serde_json::json!({"port_filter": port.port_security_enabled, "connectivity": "l2"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            } else {
                serde_json::Map::new()
            };
        }
        store::save(tx, &mut port)?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Temp(std::path::PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mark(db: &Db, plugged: &[(&str, bool)], failed: &[&str]) -> Vec<ServerEvent> {
        let ports: BTreeMap<String, bool> =
            plugged.iter().map(|(p, b)| (p.to_string(), *b)).collect();
        let failed: BTreeSet<String> = failed.iter().map(|p| p.to_string()).collect();
        db.write_blocking(|tx| {
            mark_ports(tx, &ports, &failed).map_err(|e| DbError::Task(e.to_string()))
        })
        .expect("mark")
    }

    fn status(db: &Db, id: &str) -> String {
        let id = id.to_string();
        db.read_blocking(move |conn| {
            let p = store::load::<Port>(conn, &id).map_err(|e| DbError::Task(e.to_string()))?;
            Ok(p.map(|p| p.status).unwrap_or_default())
        })
        .expect("read")
    }

    /// Status changes of bound compute ports become Nova's events;
    /// unbound ports and router ports change status silently; a tap that
    /// cannot be wired is `failed` while the port is not ACTIVE.
    #[test]
    fn port_status_changes_become_vif_events() {
        let dir = std::env::temp_dir().join(format!("yunhe-dp-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _temp = Temp(dir.clone());
        let db = Db::open(&dir.join("yunhe.db")).expect("db");
        let port = desired::tests::port;
        db.write_blocking(|tx| {
            for p in [
                port("p1", "n", "compute:nova", "srv1", "s", "10.0.0.5"),
                port("p2", "n", "compute:nova", "", "s", "10.0.0.6"),
                port("p3", "n", "compute:nova", "srv1", "s", "10.0.0.7"),
                port("p4", "n", "network:router_interface", "r1", "s", "10.0.0.1"),
            ] {
                store::insert(tx, &p).map_err(|e| DbError::Task(e.to_string()))?;
            }
            Ok(())
        })
        .expect("ports");
        let events = mark(
            &db,
            &[("p1", true), ("p2", true), ("p3", false), ("p4", true)],
            &["p3"],
        );
        assert_eq!(
            events,
            vec![
                ServerEvent::port(VIF_PLUGGED, "srv1", "p1", true),
                ServerEvent::port(VIF_PLUGGED, "srv1", "p3", false),
            ]
        );
        assert_eq!(status(&db, "p1"), "ACTIVE");
        assert_eq!(status(&db, "p2"), "ACTIVE");
        assert_eq!(status(&db, "p3"), "DOWN");
        assert_eq!(status(&db, "p4"), "ACTIVE");
        // Nothing changed: nothing sent.
        assert!(mark(&db, &[("p1", true), ("p2", true)], &[]).is_empty());
        // The tap went: DOWN and unplugged.
        assert_eq!(
            mark(&db, &[("p1", false), ("p2", false)], &[]),
            vec![ServerEvent::port(VIF_UNPLUGGED, "srv1", "p1", true)]
        );
        assert_eq!(status(&db, "p1"), "DOWN");
        assert_eq!(status(&db, "p2"), "DOWN");
    }
}
