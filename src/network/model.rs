//! The records of every Neutron resource as they are kept (serde types over
//! `store`), shared by the resource modules; a leaf: it imports no resource
//! module, so they never import each other for a type.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ipam::Pool;
use super::store::Std;

/// A network as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Network {
    #[serde(flatten)]
    pub std: Std,
    pub name: String,
    pub admin_state_up: bool,
    pub status: String,
    pub shared: bool,
    #[serde(rename = "router:external")]
    pub external: bool,
    #[serde(rename = "provider:network_type")]
    pub network_type: String,
    #[serde(rename = "provider:physical_network")]
    pub physical_network: Option<String>,
    #[serde(rename = "provider:segmentation_id")]
    pub segmentation_id: Option<i64>,
    pub mtu: i64,
    pub port_security_enabled: bool,
    pub availability_zone_hints: Vec<String>,
    pub availability_zones: Vec<String>,
    pub is_default: bool,
    pub ipv4_address_scope: Option<String>,
    pub ipv6_address_scope: Option<String>,
    pub l2_adjacency: bool,
}

/// The only availability zone.
pub const ZONE: &str = "nova";

/// One host route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostRoute {
    pub destination: String,
    pub nexthop: String,
}

/// A subnet as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subnet {
    #[serde(flatten)]
    pub std: Std,
    pub name: String,
    pub network_id: String,
    pub ip_version: u8,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub allocation_pools: Vec<Pool>,
    pub dns_nameservers: Vec<String>,
    pub host_routes: Vec<HostRoute>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    pub subnetpool_id: Option<String>,
    pub service_types: Vec<String>,
    pub segment_id: Option<String>,
    pub dns_publish_fixed_ip: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AddressPair {
    pub ip_address: String,
    pub mac_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DhcpOpt {
    pub opt_name: String,
    pub opt_value: String,
    pub ip_version: i64,
}

/// A port as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Port {
    #[serde(flatten)]
    pub std: Std,
    pub name: String,
    pub network_id: String,
    pub mac_address: String,
    pub admin_state_up: bool,
    pub status: String,
    pub device_id: String,
    pub device_owner: String,
    pub fixed_ips: Vec<FixedIp>,
    pub allowed_address_pairs: Vec<AddressPair>,
    pub extra_dhcp_opts: Vec<DhcpOpt>,
    pub security_groups: Vec<String>,
    pub port_security_enabled: bool,
    #[serde(rename = "binding:host_id")]
    pub host_id: String,
    #[serde(rename = "binding:vnic_type")]
    pub vnic_type: String,
    #[serde(rename = "binding:profile")]
    pub profile: Map<String, Value>,
    #[serde(rename = "binding:vif_type")]
    pub vif_type: String,
    #[serde(rename = "binding:vif_details")]
    pub vif_details: Map<String, Value>,
    pub dns_name: String,
    pub propagate_uplink_status: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gateway {
    pub network_id: String,
    pub enable_snat: bool,
    pub external_fixed_ips: Vec<FixedIp>,
}

/// A router as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Router {
    #[serde(flatten)]
    pub std: Std,
    pub name: String,
    pub admin_state_up: bool,
    pub status: String,
    pub external_gateway_info: Option<Gateway>,
    pub routes: Vec<HostRoute>,
    pub distributed: bool,
    pub ha: bool,
    pub availability_zone_hints: Vec<String>,
    pub availability_zones: Vec<String>,
    pub flavor_id: Option<String>,
}

pub const OWNER_INTERFACE: &str = "network:router_interface";

pub const OWNER_GATEWAY: &str = "network:router_gateway";

/// A floating IP as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloatingIp {
    #[serde(flatten)]
    pub std: Std,
    pub floating_ip_address: String,
    pub floating_network_id: String,
    pub router_id: Option<String>,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<String>,
    pub status: String,
    pub dns_domain: String,
    pub dns_name: String,
    pub port_forwardings: Vec<Value>,
}

/// A security group as kept (its rules are their own records).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityGroup {
    #[serde(flatten)]
    pub std: Std,
    pub name: String,
    pub stateful: bool,
    pub shared: bool,
}

/// A rule as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rule {
    #[serde(flatten)]
    pub std: Std,
    pub security_group_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub remote_address_group_id: Option<String>,
    pub normalized_cidr: Option<String>,
    pub belongs_to_default_sg: bool,
}

/// An RBAC policy as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RbacPolicy {
    #[serde(flatten)]
    pub std: Std,
    pub object_type: String,
    pub object_id: String,
    pub action: String,
    pub target_tenant: String,
}

/// A subnet pool as kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubnetPool {
    #[serde(flatten)]
    pub std: Std,
    pub name: String,
    pub prefixes: Vec<String>,
    pub ip_version: u8,
    pub default_prefixlen: u8,
    pub min_prefixlen: u8,
    pub max_prefixlen: u8,
    pub shared: bool,
    pub is_default: bool,
    pub default_quota: Option<i64>,
    pub address_scope_id: Option<String>,
}

/// The protocol names Neutron accepts, with their numbers.
pub const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ip", 0),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];
