//! The networks of a first start, as DevStack makes them: `public`
//! (external, not shared, subnet `public-subnet` 172.24.4.0/24 without
//! DHCP, floating IPs from .2 to .254) and, for the admin project,
//! `private` (subnet `private-subnet` 10.0.0.0/26 with DHCP) joined to
//! `public` by router `router1`.
//!
//! Made once per state file, through the same domain functions as the API
//! (policy, quotas, IPAM), in one transaction: all of it or nothing. A
//! `settings` row remembers that it ran, so what the operator deletes stays
//! deleted; a state file that already has networks gets none (the row says
//! so too).

use std::net::IpAddr;
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Value, json};

use super::model::{Network, Router, Subnet};
use super::{Caller, NetResult, NetworkError, networks, routers, store, subnets};
use crate::db::{Db, DbError};
use crate::http::body::Object;

/// The `settings` key that records a first start's networks.
pub const MARKER: &str = "initial_networks";

/// Neutron's limit on a subnet's DNS servers.
const MAX_DNS: usize = 5;

/// What the first start makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `public-subnet`'s CIDR, gateway and floating-IP pool.
    pub public_cidr: String,
    pub public_gateway: String,
    pub public_pool: (String, String),
    /// `private-subnet`'s DNS servers (the host's, when not loopback).
    pub dns_nameservers: Vec<String>,
    /// Bridged external mode: `public` is a flat provider network on this
    /// physical network (none: NAT mode, the host routes for it).
    pub physical_network: Option<String>,
}

impl Plan {
    /// Bridged external mode's `public`: the operator's LAN `cidr` with
    /// its `gateway`, floating IPs from `pool` (`START-END`), a flat
    /// network on `physical_network`. Refuses values that do not fit.
    pub fn bridged(
        cidr: &str,
        gateway: &str,
        pool: &str,
        physical_network: &str,
    ) -> Result<Plan, String> {
        let net = super::ipam::Cidr::parse(cidr, false)
            .map_err(|e| format!("--external-cidr {cidr}: {e}"))?;
        if net.version() != 4 || net.prefix > 30 {
            return Err(format!(
                "--external-cidr {cidr}: an IPv4 network of at least 4 addresses"
            ));
        }
        let base = super::ipam::from_num(net.first(), 4);
        let inside = |text: &str, what: &str| -> Result<u128, String> {
            let ip = super::ipam::parse_ip(text)
                .filter(|ip| ip.is_ipv4())
                .ok_or_else(|| format!("{what} {text}: not an IPv4 address"))?;
            let n = super::ipam::to_num(ip);
            if !net.contains(ip) || n == net.first() || n == net.last() {
                return Err(format!(
                    "{what} {text}: not a host address of {base}/{}",
                    net.prefix
                ));
            }
            Ok(n)
        };
        let gw = inside(gateway, "--external-gateway")?;
        let (start, end) = pool.split_once('-').ok_or_else(|| {
            format!("--external-pool {pool}: expected START-END (e.g. 192.168.1.200-192.168.1.239)")
        })?;
        let (lo, hi) = (
            inside(start.trim(), "--external-pool")?,
            inside(end.trim(), "--external-pool")?,
        );
        if lo > hi {
            return Err(format!("--external-pool {pool}: START is after END"));
        }
        if (lo..=hi).contains(&gw) {
            return Err(format!(
                "--external-pool {pool} holds the gateway {gateway}"
            ));
        }
        Ok(Plan {
            public_cidr: format!("{base}/{}", net.prefix),
            public_gateway: super::ipam::from_num(gw, 4).to_string(),
            public_pool: (
                super::ipam::from_num(lo, 4).to_string(),
                super::ipam::from_num(hi, 4).to_string(),
            ),
            dns_nameservers: Vec::new(),
            physical_network: Some(physical_network.to_string()),
        })
    }
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            public_cidr: "172.24.4.0/24".into(),
            public_gateway: "172.24.4.1".into(),
            public_pool: ("172.24.4.2".into(), "172.24.4.254".into()),
            dns_nameservers: Vec::new(),
            physical_network: None,
        }
    }
}

/// What a start did about the first-start networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made now.
    Created(Made),
    /// Made (or skipped) at an earlier start: nothing done.
    AlreadyDone,
    /// The state file had networks already: nothing made, and never will be.
    Skipped,
    /// The admin project does not exist (bootstrap runs first): nothing made.
    NoAdminProject,
}

/// The records a first start made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub public: String,
    pub public_subnet: String,
    pub private: String,
    pub private_subnet: String,
    pub router: String,
    /// The subnets' CIDRs, for the start-up message.
    pub public_cidr: String,
    pub private_cidr: String,
}

/// The DNS servers of a resolv.conf's text that a guest can use: IPv4
/// `nameserver` lines, not loopback (systemd-resolved's 127.0.0.53 means
/// nothing inside a guest), at most five.
pub fn nameservers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .filter(|ip| ip.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified())
        .map(|ip| ip.to_string())
        .take(MAX_DNS)
        .collect()
}

fn object(value: Value) -> Object {
    match value {
        Value::Object(map) => map,
        _ => Object::new(),
    }
}

/// Makes the first-start networks unless the state file had them (or any
/// network) before. One transaction: an error leaves nothing behind.
pub fn ensure(db: &Db, policy: Arc<crate::policy::Policy>, plan: &Plan) -> NetResult<Outcome> {
    let mut failure: Option<NetworkError> = None;
    let result = db.write_blocking(|tx| match make(tx, policy, plan) {
        Ok(outcome) => Ok(outcome),
        Err(NetworkError::Db(e)) => Err(e),
        Err(other) => {
            failure = Some(other);
            Err(DbError::Task("rolled back".into()))
        }
    });
    match (result, failure) {
        (Ok(outcome), _) => Ok(outcome),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(NetworkError::Db(e)),
    }
}

fn make(tx: &Connection, policy: Arc<crate::policy::Policy>, plan: &Plan) -> NetResult<Outcome> {
    if crate::db::settings::get(tx, MARKER)?.is_some() {
        return Ok(Outcome::AlreadyDone);
    }
    let Some(project) = crate::db::identity::get_project_by_name(tx, "default", "admin")? else {
        return Ok(Outcome::NoAdminProject);
    };
    if !store::all::<Network>(tx)?.is_empty() {
        crate::db::settings::set(tx, MARKER, "skipped: the state file had networks")?;
        return Ok(Outcome::Skipped);
    }
    let caller = Caller::operator(policy, &project.id);
    let mut public_body =
        object(json!({"name": "public", "router:external": true, "shared": false}));
    if let Some(physnet) = &plan.physical_network {
        public_body.insert("provider:network_type".into(), json!("flat"));
        public_body.insert("provider:physical_network".into(), json!(physnet));
    }
    let public = networks::create_network_in(tx, &caller, &public_body)?;
    let public_subnet = subnets::create_subnet_in(
        tx,
        &caller,
        &object(json!({
            "name": "public-subnet",
            "network_id": public.std.id,
            "ip_version": 4,
            "cidr": plan.public_cidr,
            "gateway_ip": plan.public_gateway,
            "enable_dhcp": false,
            "allocation_pools": [{"start": plan.public_pool.0, "end": plan.public_pool.1}],
        })),
    )?;
    let private = networks::create_network_in(tx, &caller, &object(json!({"name": "private"})))?;
    let private_subnet: Subnet = subnets::create_subnet_in(
        tx,
        &caller,
        &object(json!({
            "name": "private-subnet",
            "network_id": private.std.id,
            "ip_version": 4,
            "cidr": "10.0.0.0/26",
            "enable_dhcp": true,
            "dns_nameservers": plan.dns_nameservers,
        })),
    )?;
    let router: Router = routers::create_router_in(
        tx,
        &caller,
        &object(json!({
            "name": "router1",
            "external_gateway_info": {"network_id": public.std.id},
        })),
    )?;
    routers::add_interface_in(
        tx,
        &caller,
        &router.std.id,
        &object(json!({"subnet_id": private_subnet.std.id})),
    )?;
    crate::db::settings::set(tx, MARKER, "created")?;
    Ok(Outcome::Created(Made {
        public: public.std.id,
        public_subnet: public_subnet.std.id,
        private: private.std.id,
        private_subnet: private_subnet.std.id,
        router: router.std.id,
        public_cidr: public_subnet.cidr,
        private_cidr: private_subnet.cidr,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::model::Port;

    struct Temp(std::path::PathBuf);
    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A state file with the admin project, as bootstrap leaves it.
    fn state(name: &str) -> (Temp, Db, Arc<crate::policy::Policy>) {
        let dir = std::env::temp_dir().join(format!("yunhe-initial-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = Db::open(&dir.join("yunhe.db")).expect("db");
        db.write_blocking(|tx| {
            crate::db::identity::insert_domain(
                tx,
                &crate::db::identity::Domain {
                    id: "default".into(),
                    name: "Default".into(),
                    description: String::new(),
                    enabled: true,
                    extra: Default::default(),
                },
            )?;
            crate::db::identity::insert_project(
                tx,
                &crate::db::identity::Project {
                    id: "adminproject".into(),
                    name: "admin".into(),
                    domain_id: "default".into(),
                    parent_id: None,
                    description: String::new(),
                    enabled: true,
                    is_domain: false,
                    extra: Default::default(),
                },
            )
        })
        .expect("project");
        let policy = Arc::new(crate::policy::Policy::defaults().expect("policy"));
        (Temp(dir), db, policy)
    }

    fn all<T: store::Kind>(db: &Db) -> Vec<T> {
        db.read_blocking(|conn| store::all::<T>(conn).map_err(|e| DbError::Task(e.to_string())))
            .expect("read")
    }

    #[test]
    fn first_start_makes_devstacks_networks() {
        let (_dir, db, policy) = state("make");
        let plan = Plan {
            dns_nameservers: vec!["192.0.2.53".into()],
            ..Plan::default()
        };
        let Outcome::Created(made) = ensure(&db, policy, &plan).expect("ensure") else {
            panic!("nothing made");
        };
        let nets: Vec<Network> = all(&db);
        assert_eq!(nets.len(), 2);
        let public = nets.iter().find(|n| n.name == "public").expect("public");
        assert!(public.external && !public.shared);
        assert_eq!(public.std.id, made.public);
        let private = nets.iter().find(|n| n.name == "private").expect("private");
        assert!(!private.external);
        assert_eq!(private.std.project_id, "adminproject");
        let subnets: Vec<Subnet> = all(&db);
        let ps = subnets
            .iter()
            .find(|s| s.name == "public-subnet")
            .expect("public-subnet");
        assert_eq!(ps.cidr, "172.24.4.0/24");
        assert_eq!(ps.gateway_ip.as_deref(), Some("172.24.4.1"));
        assert!(!ps.enable_dhcp);
        assert_eq!(ps.allocation_pools[0].start, "172.24.4.2");
        assert_eq!(ps.allocation_pools[0].end, "172.24.4.254");
        let vs = subnets
            .iter()
            .find(|s| s.name == "private-subnet")
            .expect("private-subnet");
        assert_eq!(vs.cidr, "10.0.0.0/26");
        assert!(vs.enable_dhcp);
        assert_eq!(vs.gateway_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(vs.dns_nameservers, vec!["192.0.2.53".to_string()]);
        let routers: Vec<Router> = all(&db);
        assert_eq!(routers.len(), 1);
        assert_eq!(routers[0].name, "router1");
        let gw = routers[0]
            .external_gateway_info
            .as_ref()
            .expect("router1 has a gateway");
        assert_eq!(gw.network_id, made.public);
        assert!(gw.enable_snat);
        let ports: Vec<Port> = all(&db);
        let interface = ports
            .iter()
            .find(|p| p.device_owner == "network:router_interface")
            .expect("an interface on private-subnet");
        assert_eq!(interface.device_id, made.router);
        assert_eq!(interface.fixed_ips[0].ip_address, "10.0.0.1");
        assert!(
            ports
                .iter()
                .any(|p| p.device_owner == "network:router_gateway" && p.network_id == made.public)
        );
    }

    #[test]
    fn a_second_start_makes_nothing_and_deleted_stays_deleted() {
        let (_dir, db, policy) = state("once");
        let plan = Plan::default();
        assert!(matches!(
            ensure(&db, policy.clone(), &plan).expect("first"),
            Outcome::Created(_)
        ));
        assert_eq!(
            ensure(&db, policy.clone(), &plan).expect("second"),
            Outcome::AlreadyDone
        );
        assert_eq!(all::<Network>(&db).len(), 2);
        // The operator deletes every record; the next start leaves it so.
        db.write_blocking(|tx| {
            tx.execute_batch(
                "DELETE FROM net_ip_allocations; DELETE FROM net_macs; DELETE FROM net_resources;",
            )?;
            Ok(())
        })
        .expect("delete");
        assert_eq!(
            ensure(&db, policy, &plan).expect("third"),
            Outcome::AlreadyDone
        );
        assert!(all::<Network>(&db).is_empty());
        assert!(all::<Router>(&db).is_empty());
    }

    #[test]
    fn a_state_file_with_networks_gets_none() {
        let (_dir, db, policy) = state("existing");
        let caller = Caller::operator(policy.clone(), "adminproject");
        db.write_blocking(|tx| {
            networks::create_network_in(tx, &caller, &object(json!({"name": "mine"})))
                .map_err(|e| DbError::Task(e.to_string()))
        })
        .expect("network");
        let plan = Plan::default();
        assert_eq!(
            ensure(&db, policy.clone(), &plan).expect("ensure"),
            Outcome::Skipped
        );
        assert_eq!(all::<Network>(&db).len(), 1);
        assert_eq!(
            ensure(&db, policy, &plan).expect("again"),
            Outcome::AlreadyDone
        );
    }

    #[test]
    fn a_failure_leaves_nothing_half_made() {
        let (_dir, db, policy) = state("atomic");
        // A public range the pool does not fit: the subnet fails after the
        // network was made; the transaction takes the network back too.
        let plan = Plan {
            public_pool: ("10.9.9.2".into(), "10.9.9.9".into()),
            ..Plan::default()
        };
        assert!(ensure(&db, policy.clone(), &plan).is_err());
        assert!(all::<Network>(&db).is_empty());
        assert!(matches!(
            ensure(&db, policy, &Plan::default()).expect("then"),
            Outcome::Created(_)
        ));
    }

    #[test]
    fn bridged_plans_check_the_lan() {
        let plan = Plan::bridged(
            "192.0.2.0/24",
            "192.0.2.1",
            "192.0.2.100-192.0.2.150",
            "public",
        )
        .expect("plan");
        assert_eq!(plan.public_cidr, "192.0.2.0/24");
        assert_eq!(plan.public_gateway, "192.0.2.1");
        assert_eq!(
            plan.public_pool,
            ("192.0.2.100".to_string(), "192.0.2.150".to_string())
        );
        assert_eq!(plan.physical_network.as_deref(), Some("public"));
        for (cidr, gw, pool) in [
            ("192.0.2.0/33", "192.0.2.1", "192.0.2.100-192.0.2.150"),
            ("2001:db8::/64", "2001:db8::1", "2001:db8::5-2001:db8::9"),
            ("192.0.2.0/24", "198.51.100.1", "192.0.2.100-192.0.2.150"),
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.100"),
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.150-192.0.2.100"),
            ("192.0.2.0/24", "192.0.2.120", "192.0.2.100-192.0.2.150"),
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.100-192.0.3.1"),
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.0-192.0.2.9"),
        ] {
            assert!(
                Plan::bridged(cidr, gw, pool, "public").is_err(),
                "{cidr} {gw} {pool}"
            );
        }
    }

    #[test]
    fn a_bridged_first_start_makes_public_flat_on_the_lan() {
        let (_dir, db, policy) = state("bridged");
        let plan = Plan::bridged(
            "192.0.2.0/24",
            "192.0.2.1",
            "192.0.2.100-192.0.2.150",
            "public",
        )
        .expect("plan");
        assert!(matches!(
            ensure(&db, policy, &plan).expect("ensure"),
            Outcome::Created(_)
        ));
        let nets: Vec<Network> = all(&db);
        let public = nets.iter().find(|n| n.name == "public").expect("public");
        assert_eq!(public.network_type, "flat");
        assert_eq!(public.physical_network.as_deref(), Some("public"));
        let routers: Vec<Router> = all(&db);
        let gw = &routers[0]
            .external_gateway_info
            .as_ref()
            .expect("gateway")
            .external_fixed_ips;
        assert_eq!(gw[0].ip_address, "192.0.2.100");
    }

    #[test]
    fn nameservers_skip_loopback_and_ipv6() {
        let text = "# a comment\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 2001:db8::1\nnameserver 192.0.2.1\nsearch lan\nnameserver 198.51.100.7 # x\n";
        assert_eq!(nameservers(text), vec!["192.0.2.1", "198.51.100.7"]);
        assert!(nameservers("nameserver 127.0.0.1\n").is_empty());
        assert!(nameservers("").is_empty());
    }
}
