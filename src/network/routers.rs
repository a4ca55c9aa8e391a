//! Routers (`/v2.0/routers`): an external gateway (SNAT on or off, its
//! fixed IPs), interfaces on subnets or ports, and extra routes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::ipam::{self, Cidr};
use super::model::*;
use super::ports::{self, FixedIpRequest, PortSpec};
use super::store::{self, Kind, Std};
use super::{
    Caller, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision, query,
    quotas, reply, revision_constraint,
};
use crate::http::body::Object;
use crate::identity::Auth;
use crate::policy::Target;

/// Neutron's `max_routes`.
pub const MAX_ROUTES: usize = 30;

/// A gateway asked for: the external network, SNAT, the fixed IPs asked for.
type GatewayRequest = (Network, bool, Option<FixedIpRequest>);

impl Kind for Router {
    const KIND: &'static str = "router";
    const NOT_FOUND: &'static str = "RouterNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn not_found_message(id: &str) -> String {
        format!("Router {id} could not be found")
    }
}

/// A router's ports of one kind.
pub fn router_ports(conn: &Connection, router_id: &str, owner: &str) -> NetResult<Vec<Port>> {
    Ok(store::all::<Port>(conn)?
        .into_iter()
        .filter(|p| p.device_id == router_id && p.device_owner == owner)
        .collect())
}

fn visible(conn: &Connection, caller: &Caller, id: &str) -> NetResult<Router> {
    let r: Router = store::must(conn, id)?;
    if caller.admin || r.std.project_id == caller.project {
        Ok(r)
    } else {
        Err(store::not_found::<Router>(id))
    }
}

fn view(caller: &Caller, r: &Router) -> NetResult<Value> {
    let mut v = store::to_value(r)?;
    if let Value::Object(m) = &mut v
        && !caller.allows(
            "get_router:distributed",
            &Target::project(r.std.project_id.clone()),
        )
    {
        m.remove("distributed");
        m.remove("ha");
    }
    Ok(v)
}

/// Parses `external_gateway_info`: `Ok(None)` to clear it.
fn parse_gateway(
    conn: &Connection,
    caller: &Caller,
    body: &Object,
    target: &Target,
    rule: &str,
) -> NetResult<Option<Option<GatewayRequest>>> {
    let info = match body.get("external_gateway_info") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(Value::Object(m)) if m.is_empty() => return Ok(Some(None)),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(NetworkError::invalid(
                "external_gateway_info",
                format!("'{other}' is not a dictionary"),
            ));
        }
    };
    attrs::known(
        &info,
        &[
            "network_id",
            "enable_snat",
            "external_fixed_ips",
            "qos_policy_id",
        ],
    )?;
    caller.enforce(&format!("{rule}:external_gateway_info"), target)?;
    let net_id = attrs::uuid(&info, "network_id")?
        .ok_or_else(|| NetworkError::invalid("external_gateway_info", "network_id is required"))?;
    let net = super::lookup::visible_network(conn, caller, &net_id)?;
    if !net.external {
        return Err(NetworkError::bad(format!(
            "Bad router request: Network {net_id} is not an external network."
        )));
    }
    let snat = attrs::boolean(&info, "enable_snat")?;
    if snat.is_some() {
        caller.enforce(&format!("{rule}:external_gateway_info:enable_snat"), target)?;
    }
    let ips = match attrs::object_list(&info, "external_fixed_ips", 8)? {
        Some(list) => {
            caller.enforce(
                &format!("{rule}:external_gateway_info:external_fixed_ips"),
                target,
            )?;
            let mut out = Vec::new();
            for item in list {
                out.push((
                    attrs::string(&item, "subnet_id", 64)?,
                    attrs::string(&item, "ip_address", 64)?,
                ));
            }
            Some(out)
        }
        None => None,
    };
    Ok(Some(Some((net, snat.unwrap_or(true), ips))))
}

/// Sets (or replaces) a router's gateway port.
fn set_gateway(conn: &Connection, r: &mut Router, gw: Option<GatewayRequest>) -> NetResult<()> {
    match gw {
        None => {
            if r.external_gateway_info.is_some() {
                let fips: Vec<FloatingIp> = store::all(conn)?;
                if fips
                    .iter()
                    .any(|f| f.router_id.as_deref() == Some(r.std.id.as_str()))
                {
                    return Err(NetworkError::conflict(
                        "RouterExternalGatewayInUseByFloatingIp",
                        format!(
                            "Gateway cannot be updated for router {}, since a gateway to external network {} is required by one or more floating IPs.",
                            r.std.id,
                            r.external_gateway_info
                                .as_ref()
                                .map(|g| g.network_id.clone())
                                .unwrap_or_default()
                        ),
                    ));
                }
            }
            for p in router_ports(conn, &r.std.id, OWNER_GATEWAY)? {
                ports::delete_port_in(conn, &p)?;
            }
            r.external_gateway_info = None;
        }
        Some((net, snat, ips)) => {
            let same_net = r
                .external_gateway_info
                .as_ref()
                .is_some_and(|g| g.network_id == net.std.id);
            if same_net && ips.is_none() {
                if let Some(g) = &mut r.external_gateway_info {
                    g.enable_snat = snat;
                }
                return Ok(());
            }
            if !same_net && r.external_gateway_info.is_some() {
                set_gateway(conn, r, None)?;
            }
            for p in router_ports(conn, &r.std.id, OWNER_GATEWAY)? {
                ports::delete_port_in(conn, &p)?;
            }
            let port = ports::new_port(
                conn,
                &net,
                "",
                PortSpec {
                    fixed_ips: ips,
                    device_id: r.std.id.clone(),
                    device_owner: OWNER_GATEWAY.into(),
                    admin_state_up: true,
                    port_security_enabled: Some(false),
                    ..Default::default()
                },
            )?;
            r.external_gateway_info = Some(Gateway {
                network_id: net.std.id.clone(),
                enable_snat: snat,
                external_fixed_ips: port.fixed_ips.clone(),
            });
        }
    }
    Ok(())
}

fn parse_routes(body: &Object) -> NetResult<Option<Vec<HostRoute>>> {
    // `"routes": null` is an empty list (Neutron converts None to []): it clears them.
    if matches!(body.get("routes"), Some(Value::Null)) {
        return Ok(Some(Vec::new()));
    }
    let Some(list) = attrs::object_list(body, "routes", 64)? else {
        return Ok(None);
    };
    if list.len() > MAX_ROUTES {
        return Err(NetworkError::BadRequest {
            kind: "RoutesExhausted",
            message: format!(
                "Unable to complete operation for router. The number of routes exceeds the maximum {MAX_ROUTES}."
            ),
        });
    }
    let mut out: Vec<HostRoute> = Vec::new();
    for item in list {
        let dest = attrs::string(&item, "destination", 64)?.unwrap_or_default();
        let hop = attrs::string(&item, "nexthop", 64)?.unwrap_or_default();
        let d = Cidr::parse(&dest, false).map_err(|e| NetworkError::invalid("routes", e))?;
        let h = ipam::parse_ip(&hop).ok_or_else(|| {
            NetworkError::invalid("routes", format!("'{hop}' is not a valid IP address"))
        })?;
        let r = HostRoute {
            destination: d.to_string(),
            nexthop: h.to_string(),
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(Some(out))
}

/// Every nexthop must be on a subnet the router is connected to.
fn check_routes(conn: &Connection, r: &Router, routes: &[HostRoute]) -> NetResult<()> {
    let mut cidrs = Vec::new();
    for p in router_ports(conn, &r.std.id, OWNER_INTERFACE)? {
        for f in &p.fixed_ips {
            if let Some(sn) = store::load::<Subnet>(conn, &f.subnet_id)? {
                cidrs.push((sn.cidr()?, f.ip_address.clone()));
            }
        }
    }
    for route in routes {
        let Some(hop) = ipam::parse_ip(&route.nexthop) else {
            continue;
        };
        let on_link = cidrs
            .iter()
            .any(|(c, own)| c.contains(hop) && *own != route.nexthop);
        if !on_link {
            return Err(NetworkError::BadRequest {
                kind: "InvalidRoutes",
                message: format!(
                    "Invalid format for routes: [{{'destination': '{}', 'nexthop': '{}'}}], the nexthop is not connected with router",
                    route.destination, route.nexthop
                ),
            });
        }
    }
    Ok(())
}

/// Makes a router in an open transaction (the handler's body; also used at
/// first start for `router1`).
pub fn create_router_in(conn: &Connection, c: &Caller, body: &Object) -> NetResult<Router> {
    attrs::known(
        body,
        &[
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "distributed",
            "ha",
            "availability_zone_hints",
            "project_id",
            "tenant_id",
            "flavor_id",
            "enable_ndp_proxy",
        ],
    )?;
    let project = c.owner_for(body)?;
    let target = Target::project(project.clone());
    c.enforce("create_router", &target)?;
    for key in ["distributed", "ha"] {
        if attrs::boolean(body, key)? == Some(true) {
            c.enforce(&format!("create_router:{key}"), &target)?;
            return Err(NetworkError::bad(format!(
                "Invalid input for operation: {key} routers are not supported."
            )));
        }
    }
    let hints = attrs::string_list(body, "availability_zone_hints", 16)?.unwrap_or_default();
    if let Some(h) = hints.iter().find(|h| *h != ZONE) {
        return Err(NetworkError::not_found(
            "AvailabilityZoneNotFound",
            format!("AvailabilityZone {h} could not be found."),
        ));
    }
    let gw = parse_gateway(conn, c, body, &target, "create_router")?;
    let (name, description) = attrs::name_description(body)?;
    quotas::check(conn, &project, "router", 1)?;
    let mut r = Router {
        std: Std::new(&project, description.unwrap_or_default()),
        name: name.unwrap_or_default(),
        admin_state_up: attrs::boolean(body, "admin_state_up")?.unwrap_or(true),
        status: "ACTIVE".into(),
        external_gateway_info: None,
        routes: Vec::new(),
        distributed: false,
        ha: false,
        availability_zone_hints: hints,
        availability_zones: vec![ZONE.into()],
        flavor_id: None,
    };
    store::insert(conn, &r)?;
    if let Some(gw) = gw {
        set_gateway(conn, &mut r, gw)?;
        let doc = serde_json::to_string(&r)?;
        crate::db::network::update(conn, Router::KIND, &r.std.id, &doc)?;
    }
    Ok(r)
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "router")?;
    let c = caller.clone();
    let r = s.write(move |tx| create_router_in(tx, &c, &body)).await?;
    Ok(query::respond_one(
        view(&caller, &r)?,
        &Default::default(),
        "router",
        StatusCode::CREATED,
    ))
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let items = s
        .read(move |conn| {
            let all: Vec<Router> = store::all(conn)?;
            all.iter()
                .filter(|r| caller.admin || r.std.project_id == caller.project)
                .map(|r| view(&caller, r))
                .collect()
        })
        .await?;
    let base = format!("{}/network/v2.0/routers", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "routers", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let c = caller.clone();
    let r = s.read(move |conn| visible(conn, &c, &id)).await?;
    Ok(query::respond_one(
        view(&caller, &r)?,
        &query::ListQuery::new(raw),
        "router",
        StatusCode::OK,
    ))
}

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "router")?;
    attrs::known(
        &body,
        &[
            "name",
            "description",
            "admin_state_up",
            "external_gateway_info",
            "routes",
            "distributed",
            "ha",
            "enable_ndp_proxy",
        ],
    )?;
    let expected = revision_constraint(&headers)?;
    let c = caller.clone();
    let r = s
        .write(move |tx| {
            let mut r = visible(tx, &c, &id)?;
            let target = Target::project(r.std.project_id.clone());
            c.enforce("update_router", &target)?;
            check_revision(expected, r.std.revision_number)?;
            let (name, description) = attrs::name_description(&body)?;
            if let Some(n) = name {
                r.name = n;
            }
            if let Some(d) = description {
                r.std.description = d;
            }
            if let Some(b) = attrs::boolean(&body, "admin_state_up")? {
                r.admin_state_up = b;
            }
            if let Some(gw) = parse_gateway(tx, &c, &body, &target, "update_router")? {
                set_gateway(tx, &mut r, gw)?;
            }
            if let Some(routes) = parse_routes(&body)? {
                check_routes(tx, &r, &routes)?;
                r.routes = routes;
            }
            store::save(tx, &mut r)?;
            Ok(r)
        })
        .await?;
    Ok(query::respond_one(
        view(&caller, &r)?,
        &Default::default(),
        "router",
        StatusCode::OK,
    ))
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let mut r = visible(tx, &caller, &id)?;
        caller.enforce("delete_router", &Target::project(r.std.project_id.clone()))?;
        if !router_ports(tx, &id, OWNER_INTERFACE)?.is_empty() {
            return Err(NetworkError::conflict(
                "RouterInUse",
                format!("Router {id} still has ports"),
            ));
        }
        set_gateway(tx, &mut r, None)?;
        store::remove::<Router>(tx, &id)
    })
    .await?;
    Ok(crate::http::no_content())
}

fn interface_info(r: &Router, port: &Port) -> Value {
    let subnets: Vec<&str> = port
        .fixed_ips
        .iter()
        .map(|f| f.subnet_id.as_str())
        .collect();
    json!({
        "id": r.std.id,
        "tenant_id": r.std.project_id,
        "project_id": r.std.project_id,
        "port_id": port.std.id,
        "network_id": port.network_id,
        "subnet_id": subnets.first().copied().unwrap_or_default(),
        "subnet_ids": subnets,
    })
}

/// The subnets a router is attached to, with their CIDRs.
fn attached(conn: &Connection, router_id: &str) -> NetResult<Vec<Subnet>> {
    let mut out = Vec::new();
    for p in router_ports(conn, router_id, OWNER_INTERFACE)? {
        for f in &p.fixed_ips {
            if let Some(sn) = store::load::<Subnet>(conn, &f.subnet_id)? {
                out.push(sn);
            }
        }
    }
    Ok(out)
}

fn check_overlap(conn: &Connection, r: &Router, new: &[Subnet]) -> NetResult<()> {
    let existing = attached(conn, &r.std.id)?;
    for n in new {
        let nc = n.cidr()?;
        for e in &existing {
            if e.std.id == n.std.id {
                return Err(NetworkError::bad(format!(
                    "Bad router request: Router already has a port on subnet {}.",
                    n.std.id
                )));
            }
            if e.cidr()?.overlaps(&nc) {
                return Err(NetworkError::bad(format!(
                    "Bad router request: Cidr {} of subnet {} overlaps with cidr {} of subnet {}.",
                    n.cidr, n.std.id, e.cidr, e.std.id
                )));
            }
        }
    }
    Ok(())
}

/// Adds an interface (by `subnet_id` or `port_id`) to a router in an open
/// transaction; answers Neutron's interface info (also used at first start).
pub fn add_interface_in(
    tx: &Connection,
    caller: &Caller,
    id: &str,
    body: &Object,
) -> NetResult<Value> {
    let r = visible(tx, caller, id)?;
    caller.enforce(
        "add_router_interface",
        &Target::project(r.std.project_id.clone()),
    )?;
    let subnet_id = attrs::string(body, "subnet_id", 64)?;
    let port_id = attrs::string(body, "port_id", 64)?;
    let port = match (subnet_id, port_id) {
        (Some(_), Some(_)) => {
            return Err(NetworkError::bad(
                "Bad router request: Cannot specify both subnet-id and port-id.",
            ));
        }
        (None, None) => {
            return Err(NetworkError::bad(
                "Bad router request: Either subnet_id or port_id must be specified.",
            ));
        }
        (Some(sid), None) => {
            let sn: Subnet =
                store::load(tx, &sid)?.ok_or_else(|| store::not_found::<Subnet>(&sid))?;
            let net = super::lookup::visible_network(tx, caller, &sn.network_id)
                .map_err(|_| store::not_found::<Subnet>(&sid))?;
            if !caller.admin && net.std.project_id != caller.project && !net.shared {
                return Err(store::not_found::<Subnet>(&sid));
            }
            if sn.gateway_ip.is_none() {
                return Err(NetworkError::bad(format!(
                    "Bad router request: Subnet {sid} does not have a gateway IP."
                )));
            }
            if r.external_gateway_info
                .as_ref()
                .is_some_and(|g| g.network_id == sn.network_id)
            {
                return Err(NetworkError::bad(format!(
                    "Bad router request: Router {} has a gateway on network {}.",
                    r.std.id, sn.network_id
                )));
            }
            check_overlap(tx, &r, std::slice::from_ref(&sn))?;
            ports::new_port(
                tx,
                &net,
                &r.std.project_id,
                PortSpec {
                    fixed_ips: Some(vec![(Some(sid.clone()), sn.gateway_ip.clone())]),
                    device_id: r.std.id.clone(),
                    device_owner: OWNER_INTERFACE.into(),
                    admin_state_up: true,
                    port_security_enabled: Some(false),
                    ..Default::default()
                },
            )?
        }
        (None, Some(pid)) => {
            let mut port = ports::visible_port(tx, caller, &pid)?;
            if !port.device_id.is_empty() || !port.device_owner.is_empty() {
                return Err(NetworkError::conflict(
                    "PortInUse",
                    format!(
                        "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                        port.network_id, port.device_id
                    ),
                ));
            }
            if port.fixed_ips.is_empty() {
                return Err(NetworkError::bad(
                    "Bad router request: Router port must have at least one fixed IP.",
                ));
            }
            let mut sns = Vec::new();
            for f in &port.fixed_ips {
                if let Some(sn) = store::load::<Subnet>(tx, &f.subnet_id)? {
                    sns.push(sn);
                }
            }
            check_overlap(tx, &r, &sns)?;
            port.device_id = r.std.id.clone();
            port.device_owner = OWNER_INTERFACE.into();
            store::save(tx, &mut port)?;
            port
        }
    };
    Ok(interface_info(&r, &port))
}

pub async fn add_interface(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    if bytes.len() > super::MAX_BODY {
        return Err(NetworkError::TooLarge);
    }
    let body = crate::http::body::parse_object(&bytes)?;
    let info = s
        .write(move |tx| add_interface_in(tx, &caller, &id, &body))
        .await?;
    Ok(reply(StatusCode::OK, &info))
}

pub async fn remove_interface(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    if bytes.len() > super::MAX_BODY {
        return Err(NetworkError::TooLarge);
    }
    let body = crate::http::body::parse_object(&bytes)?;
    let info = s
        .write(move |tx| {
            let r = visible(tx, &caller, &id)?;
            caller.enforce(
                "remove_router_interface",
                &Target::project(r.std.project_id.clone()),
            )?;
            let subnet_id = attrs::string(&body, "subnet_id", 64)?;
            let port_id = attrs::string(&body, "port_id", 64)?;
            let ifaces = router_ports(tx, &r.std.id, OWNER_INTERFACE)?;
            let port = match (&subnet_id, &port_id) {
                (None, None) => {
                    return Err(NetworkError::bad(
                        "Bad router request: Either subnet_id or port_id must be specified.",
                    ));
                }
                (_, Some(pid)) => ifaces
                    .iter()
                    .find(|p| &p.std.id == pid)
                    .cloned()
                    .ok_or_else(|| {
                        NetworkError::not_found(
                            "RouterInterfaceNotFound",
                            format!(
                                "Router {} does not have an interface with id {pid}",
                                r.std.id
                            ),
                        )
                    })?,
                (Some(sid), None) => {
                    let _: Subnet = store::must(tx, sid)?;
                    ifaces
                        .iter()
                        .find(|p| p.fixed_ips.iter().any(|f| &f.subnet_id == sid))
                        .cloned()
                        .ok_or_else(|| {
                            NetworkError::not_found(
                                "RouterInterfaceNotFoundForSubnet",
                                format!("Router {} has no interface on subnet {sid}", r.std.id),
                            )
                        })?
                }
            };
            if let (Some(sid), Some(_)) = (&subnet_id, &port_id)
                && !port.fixed_ips.iter().any(|f| &f.subnet_id == sid)
            {
                return Err(NetworkError::bad(format!(
                    "Bad router request: Subnet {sid} is not on port {}.",
                    port.std.id
                )));
            }
            let subnets: Vec<String> = port.fixed_ips.iter().map(|f| f.subnet_id.clone()).collect();
            super::lookup::check_interface_unused(tx, &r.std.id, &subnets)?;
            let info = interface_info(&r, &port);
            ports::delete_port_in(tx, &port)?;
            Ok(info)
        })
        .await?;
    Ok(reply(StatusCode::OK, &info))
}

async fn change_routes(
    s: Arc<NetworkState>,
    ctx: Arc<crate::identity::AuthContext>,
    id: String,
    bytes: Bytes,
    add: bool,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "router")?;
    let routes =
        parse_routes(&body)?.ok_or_else(|| NetworkError::bad("Invalid input for routes"))?;
    let c = caller.clone();
    let r = s
        .write(move |tx| {
            let mut r = visible(tx, &c, &id)?;
            c.enforce(if add { "add_extraroutes" } else { "remove_extraroutes" }, &Target::project(r.std.project_id.clone()))?;
            if add {
                check_routes(tx, &r, &routes)?;
                for route in routes {
                    if !r.routes.contains(&route) {
                        r.routes.push(route);
                    }
                }
                if r.routes.len() > MAX_ROUTES {
                    return Err(NetworkError::BadRequest {
                        kind: "RoutesExhausted",
                        message: format!("Unable to complete operation for {}. The number of routes exceeds the maximum {MAX_ROUTES}.", r.std.id),
                    });
                }
            } else {
                r.routes.retain(|x| !routes.contains(x));
            }
            store::save(tx, &mut r)?;
            Ok(r)
        })
        .await?;
    Ok(query::respond_one(
        view(&caller, &r)?,
        &Default::default(),
        "router",
        StatusCode::OK,
    ))
}

pub async fn add_routes(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> NetResult<Response> {
    change_routes(s, ctx, id, bytes, true).await
}

pub async fn remove_routes(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> NetResult<Response> {
    change_routes(s, ctx, id, bytes, false).await
}
