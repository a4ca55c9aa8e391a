//! The extensions list (`/v2.0/extensions`): exactly the extensions this
//! Neutron implements, so clients and tempest test only what works; and
//! the availability zones (`/v2.0/availability_zones`) and the agents
//! (`/v2.0/agents`: none, the dataplane is in serve itself).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::model::*;
use super::{NetResult, NetworkError, NetworkState, query, reply};
use crate::identity::Auth;

/// One entry of the extensions list.
#[derive(Serialize, Clone, Copy)]
pub struct Extension {
    pub alias: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub updated: &'static str,
    pub links: [(); 0],
}

const fn ext(alias: &'static str, name: &'static str, description: &'static str) -> Extension {
    Extension {
        alias,
        name,
        description,
        updated: "2024-01-01T00:00:00-00:00",
        links: [],
    }
}

/// Every extension that works here (also tempest's `api_extensions`).
pub const EXTENSIONS: &[Extension] = &[
    ext(
        "allowed-address-pairs",
        "Allowed Address Pairs",
        "Provides allowed address pairs",
    ),
    ext(
        "availability_zone",
        "Availability Zone",
        "The availability zone extension.",
    ),
    ext(
        "network_availability_zone",
        "Network Availability Zone",
        "Availability zone support for network.",
    ),
    ext(
        "router_availability_zone",
        "Router Availability Zone",
        "Availability zone support for router.",
    ),
    ext(
        "binding",
        "Port Binding",
        "Expose port bindings of a virtual port to external application",
    ),
    ext(
        "default-subnetpools",
        "Default Subnetpools",
        "Provides ability to mark and use a subnetpool as the default.",
    ),
    ext(
        "external-net",
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    ext(
        "extra_dhcp_opt",
        "Neutron Extra DHCP options",
        "Extra options configuration for DHCP.",
    ),
    ext(
        "extraroute",
        "Neutron Extra Route",
        "Extra routes configuration for L3 router",
    ),
    ext(
        "extraroute-atomic",
        "Atomically add/remove extra routes",
        "Edit extra routes of a router on server side by atomically adding/removing extra routes",
    ),
    ext(
        "ext-gw-mode",
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway",
    ),
    ext(
        "net-mtu",
        "Network MTU",
        "Provides MTU attribute for a network resource.",
    ),
    ext(
        "net-mtu-writable",
        "Network MTU (writable)",
        "Provides a writable MTU attribute for a network resource.",
    ),
    ext(
        "network-ip-availability",
        "Network IP Availability",
        "Provides IP availability data for each network and subnet.",
    ),
    ext(
        "pagination",
        "Pagination support",
        "Extension that indicates that pagination is enabled.",
    ),
    ext(
        "sorting",
        "Sorting support",
        "Extension that indicates that sorting is enabled.",
    ),
    ext("port-security", "Port Security", "Provides port security"),
    ext(
        "project-id",
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    ext(
        "provider",
        "Provider Network",
        "Expose mapping of virtual networks to physical networks",
    ),
    ext(
        "quotas",
        "Quota management support",
        "Expose functions for quotas management per project",
    ),
    ext(
        "quota_details",
        "Quota details management support",
        "Expose functions for quotas usage statistics per project",
    ),
    ext(
        "rbac-policies",
        "RBAC Policies",
        "Allows creation and modification of policies that control tenant access to resources.",
    ),
    ext(
        "revision-if-match",
        "If-Match constraints based on revision_number",
        "Extension indicating that If-Match based on revision_number is supported.",
    ),
    ext(
        "standard-attr-revisions",
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
    ext(
        "standard-attr-description",
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    ext(
        "standard-attr-timestamp",
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.",
    ),
    ext(
        "standard-attr-tag",
        "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip",
        "Enables to set tag on resources with standard attribute.",
    ),
    ext(
        "router",
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.",
    ),
    ext(
        "security-group",
        "security-group",
        "The security groups extension.",
    ),
    ext(
        "stateful-security-group",
        "Stateful security group",
        "Indicates if the security group is stateful or not",
    ),
    ext(
        "subnet-external-network",
        "Subnet External Network",
        "Provides subnet external network information.",
    ),
    ext(
        "subnet_allocation",
        "Subnet Allocation",
        "Enables allocation of subnets from a subnet pool",
    ),
];

pub async fn list(
    State(_s): State<Arc<NetworkState>>,
    Auth(_ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let fields = query::ListQuery::new(raw).fields();
    let items: Vec<serde_json::Value> = EXTENSIONS
        .iter()
        .filter_map(|e| serde_json::to_value(e).ok())
        .map(|v| query::select_fields(v, &fields))
        .collect();
    Ok(reply(
        StatusCode::OK,
        &serde_json::json!({ "extensions": items }),
    ))
}

pub async fn show(
    State(_s): State<Arc<NetworkState>>,
    Auth(_ctx): Auth,
    Path(alias): Path<String>,
) -> NetResult<Response> {
    match EXTENSIONS.iter().find(|e| e.alias == alias) {
        Some(e) => Ok(reply(
            StatusCode::OK,
            &serde_json::json!({ "extension": e }),
        )),
        None => Err(NetworkError::not_found(
            "ExtensionNotFound",
            format!("Extension with alias {alias} does not exist"),
        )),
    }
}

#[derive(Serialize)]
struct Zone {
    name: &'static str,
    resource: &'static str,
    state: &'static str,
}

pub async fn availability_zones(
    State(s): State<Arc<NetworkState>>,
    Auth(_ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let items: Vec<serde_json::Value> = ["network", "router"]
        .iter()
        .map(|r| Zone {
            name: ZONE,
            resource: r,
            state: "available",
        })
        .filter_map(|z| serde_json::to_value(z).ok())
        .collect();
    let base = format!("{}/network/v2.0/availability_zones", s.identity.public_url);
    query::respond(
        items,
        &query::ListQuery::new(raw),
        "availability_zones",
        &base,
    )
}

/// `GET /v2.0/agents`: there are no Neutron agents (the dataplane runs in
/// serve), so every caller sees an empty list, as a non-admin does under
/// Neutron. The `agent` extension is not listed.
pub async fn agents(
    State(s): State<Arc<NetworkState>>,
    Auth(_ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let base = format!("{}/network/v2.0/agents", s.identity.public_url);
    query::respond(Vec::new(), &query::ListQuery::new(raw), "agents", &base)
}

/// `GET /v2.0/agents/{id}`: never found.
pub async fn agent(Auth(_ctx): Auth, Path(id): Path<String>) -> NetResult<Response> {
    Err(NetworkError::not_found(
        "AgentNotFound",
        format!("Agent {id} could not be found."),
    ))
}
