//! Nova's network proxies: the server actions `addSecurityGroup`,
//! `removeSecurityGroup`, `addFloatingIp`, `removeFloatingIp` (and the
//! refused `addFixedIp`/`removeFixedIp`), `GET /servers/{id}/os-security-groups`,
//! and the proxy APIs Nova removed at 2.36 (`os-security-groups`,
//! `os-security-group-rules`, `os-floating-ips`, `os-floating-ip-pools`,
//! `os-networks`, `os-tenant-networks`).
//!
//! Each call goes to the network service's domain functions in one of
//! compute's transactions, as the caller (`network::Caller::with_policy`),
//! so Neutron's own checks, policy and quotas hold; Nova's rule is checked
//! first, and Nova's formats and error codes are answered. After a
//! committed change the network's `changed` notifier is told, so the
//! dataplane reconciles.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rusqlite::Connection;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::access;
use super::networking::{notify, write_atomic};
use super::{ComputeError, ComputeResult, ComputeState, Mv, authorize, own_target, parse_body};
use crate::db::servers::Server;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::network::model::{FloatingIp, Network, Port, Rule, SecurityGroup};
use crate::network::{self, Caller, NetworkError, store};

type S = Arc<ComputeState>;

/// The last microversion with `addFloatingIp`/`removeFloatingIp` and
/// `addFixedIp`/`removeFixedIp` (removed at 2.44).
pub const LAST_FLOATING_ACTION_MICROVERSION: u16 = 43;

pub fn routes() -> Router<S> {
    Router::new()
        .route(
            "/v2.1/os-security-groups",
            get(group_list).post(group_create),
        )
        .route(
            "/v2.1/os-security-groups/{id}",
            get(group_show).put(group_update).delete(group_delete),
        )
        .route("/v2.1/os-security-group-rules", post(rule_create))
        .route(
            "/v2.1/os-security-group-rules/{id}",
            axum::routing::delete(rule_delete),
        )
        .route(
            "/v2.1/os-floating-ips",
            get(floating_list).post(floating_create),
        )
        .route(
            "/v2.1/os-floating-ips/{id}",
            get(floating_show).delete(floating_delete),
        )
        .route("/v2.1/os-floating-ip-pools", get(pools))
        .route("/v2.1/os-networks", get(network_list).post(network_gone))
        .route("/v2.1/os-networks/add", post(network_gone))
        .route(
            "/v2.1/os-networks/{id}",
            get(network_show).delete(network_gone_id),
        )
        .route("/v2.1/os-networks/{id}/action", post(network_gone_id))
        .route(
            "/v2.1/os-tenant-networks",
            get(tenant_network_list).post(network_gone),
        )
        .route(
            "/v2.1/os-tenant-networks/{id}",
            get(tenant_network_show).delete(network_gone_id),
        )
}

/// 404 from 2.36 on, as Nova's removed proxies.
fn proxy_available(mv: Mv) -> ComputeResult<()> {
    super::proxy_available(
        mv,
        "The network proxy APIs are gone from microversion 2.36 on; use the Network service.",
    )
}

fn caller(s: &ComputeState, ctx: &AuthContext) -> Caller {
    Caller::with_policy(s.identity.policy.clone(), ctx)
}

/// The network service's errors as Nova's proxies answer them: its 409s
/// (in use, duplicates) are Nova's 400s, over quota Nova's 403.
fn from_network(e: NetworkError) -> ComputeError {
    match e {
        NetworkError::Db(d) => ComputeError::Db(d),
        NetworkError::Json(j) => ComputeError::Internal(j.to_string()),
        NetworkError::NotFound { message, .. } => ComputeError::NotFound(message),
        NetworkError::Forbidden(m) => ComputeError::Forbidden(m),
        NetworkError::Conflict {
            kind: "OverQuota",
            message,
        } => ComputeError::QuotaExceeded(message),
        other => ComputeError::BadRequest(other.to_string()),
    }
}

/// Tells the dataplane and the dashboard that network records changed.
fn changed(s: &ComputeState) {
    notify(s);
    s.config
        .events
        .publish(crate::events::Kind::Network, "", None);
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// `{"key": {...}}` of a body, else Nova's 400.
fn member(bytes: &Bytes, key: &str) -> ComputeResult<Map<String, Value>> {
    let mut body = parse_body(bytes)?;
    match body.remove(key) {
        Some(Value::Object(m)) => Ok(m),
        _ => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. '{key}' is a required property of type 'object'"
        ))),
    }
}

// ------------------------------------------------------ security groups

/// A rule in Nova's proxy format.
#[derive(Debug, Serialize)]
pub struct NovaRule {
    id: String,
    parent_group_id: String,
    ip_protocol: Option<String>,
    from_port: Option<i64>,
    to_port: Option<i64>,
    group: RuleGroup,
    ip_range: IpRange,
}

#[derive(Debug, Serialize, Default)]
struct RuleGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
}

#[derive(Debug, Serialize, Default)]
struct IpRange {
    #[serde(skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
}

/// A group in Nova's proxy format (its ingress rules only, as Nova shows).
#[derive(Debug, Serialize)]
pub struct NovaGroup {
    id: String,
    name: String,
    description: String,
    tenant_id: String,
    rules: Vec<NovaRule>,
}

/// Nova's view of a Neutron rule (`_convert_to_nova_security_group_rule_format`
/// then `_format_security_group_rule`); `None` for a rule whose remote
/// group is gone.
fn rule_view(conn: &Connection, r: &Rule) -> ComputeResult<Option<NovaRule>> {
    let (from_port, to_port) = match (&r.protocol, r.port_range_min, r.port_range_max) {
        (Some(p), None, None) if p.eq_ignore_ascii_case("tcp") || p.eq_ignore_ascii_case("udp") => {
            (Some(1), Some(65535))
        }
        (Some(_), None, None) => (Some(-1), Some(-1)),
        (_, min, max) => (min, max),
    };
    let mut group = RuleGroup::default();
    let mut ip_range = IpRange::default();
    match &r.remote_group_id {
        Some(g) => {
            let Some(remote) = store::load::<SecurityGroup>(conn, g).map_err(from_network)? else {
                return Ok(None);
            };
            group.name = Some(remote.name);
            group.tenant_id = Some(remote.std.project_id);
        }
        None => {
            ip_range.cidr = Some(r.remote_ip_prefix.clone().unwrap_or_else(|| {
                if r.ethertype == "IPv6" {
                    "::/0".into()
                } else {
                    "0.0.0.0/0".into()
                }
            }));
        }
    }
    Ok(Some(NovaRule {
        id: r.std.id.clone(),
        parent_group_id: r.security_group_id.clone(),
        ip_protocol: r.protocol.clone(),
        from_port,
        to_port,
        group,
        ip_range,
    }))
}

fn group_view(conn: &Connection, sg: &SecurityGroup) -> ComputeResult<NovaGroup> {
    let rules: Vec<Rule> = store::children(conn, &sg.std.id).map_err(from_network)?;
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| r.direction == "ingress") {
        if let Some(v) = rule_view(conn, r)? {
            out.push(v);
        }
    }
    Ok(NovaGroup {
        id: sg.std.id.clone(),
        name: sg.name.clone(),
        description: sg.std.description.clone(),
        tenant_id: sg.std.project_id.clone(),
        rules: out,
    })
}

fn group_not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Security group {id} not found."))
}

/// Nova's `validate_property`: a string, 1 to 255 characters once stripped.
fn group_property(body: &Map<String, Value>, key: &str) -> ComputeResult<String> {
    let Some(Value::String(v)) = body.get(key) else {
        return Err(ComputeError::BadRequest(format!(
            "Security group {key} is not a string or unicode"
        )));
    };
    // Checked stripped, kept as given (Nova's `validate_property`).
    let stripped = v.trim();
    if stripped.is_empty() || stripped.chars().count() > 255 {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for {key}: it must be 1 to 255 characters long."
        )));
    }
    Ok(v.clone())
}

async fn group_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(query): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:get",
        &own_target(&ctx),
    )?;
    let all_tenants = query.iter().any(|(k, v)| {
        k == "all_tenants" && !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "off")
    });
    let c = caller(&s, &ctx);
    let all = all_tenants && c.admin;
    if !c.project.is_empty() {
        // Neutron makes the project's default group on its first list.
        let project = c.project.clone();
        write_atomic(&s, move |tx| {
            network::ensure_default(tx, &project).map_err(from_network)
        })
        .await?;
    }
    let groups = s
        .read(move |conn| {
            let groups: Vec<SecurityGroup> = store::all(conn).map_err(from_network)?;
            groups
                .iter()
                .filter(|g| all || g.std.project_id == c.project)
                .map(|g| group_view(conn, g))
                .collect::<ComputeResult<Vec<_>>>()
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_groups": groups}),
    ))
}

async fn group_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:show",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let group = s
        .read(move |conn| {
            let sg = network::visible_group(conn, &c, &id).map_err(|_| group_not_found(&id))?;
            group_view(conn, &sg)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_group": group}),
    ))
}

fn group_body(bytes: &Bytes) -> ComputeResult<Map<String, Value>> {
    let body = member(bytes, "security_group")?;
    let name = group_property(&body, "name")?;
    let description = group_property(&body, "description")?;
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name));
    out.insert("description".into(), Value::String(description));
    Ok(out)
}

async fn group_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:create",
        &own_target(&ctx),
    )?;
    let body = group_body(&bytes)?;
    let c = caller(&s, &ctx);
    let group = write_atomic(&s, move |tx| {
        let sg = network::create_group_in(tx, &c, &body).map_err(|e| match e {
            NetworkError::Conflict {
                kind: "OverQuota", ..
            } => ComputeError::QuotaExceeded("Quota exceeded, too many security groups.".into()),
            other => from_network(other),
        })?;
        group_view(tx, &sg)
    })
    .await?;
    changed(&s);
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_group": group}),
    ))
}

async fn group_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:update",
        &own_target(&ctx),
    )?;
    let body = group_body(&bytes)?;
    let c = caller(&s, &ctx);
    let group = write_atomic(&s, move |tx| {
        network::visible_group(tx, &c, &id).map_err(|_| group_not_found(&id))?;
        let sg = network::update_group_in(tx, &c, &id, &body, None).map_err(from_network)?;
        group_view(tx, &sg)
    })
    .await?;
    changed(&s);
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_group": group}),
    ))
}

async fn group_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:delete",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    write_atomic(&s, move |tx| {
        network::visible_group(tx, &c, &id).map_err(|_| group_not_found(&id))?;
        network::delete_group_in(tx, &c, &id).map_err(from_network)
    })
    .await?;
    changed(&s);
    Ok(accepted())
}

/// An integer port of a rule (Nova accepts numbers and numeric strings).
fn port_number(body: &Map<String, Value>, key: &str, icmp: bool) -> ComputeResult<Option<i64>> {
    let bad = || {
        ComputeError::BadRequest(if icmp {
            "Type and Code must be integers for ICMP protocol type".into()
        } else {
            "To and From ports must be integers".into()
        })
    };
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
        Some(Value::String(t)) => t.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// The Neutron rule body of a Nova rule (`_rule_args_to_dict`,
/// `_new_ingress_rule` and the conversion to Neutron's rule).
fn neutron_rule(
    body: &Map<String, Value>,
    parent: &str,
    group_id: Option<&str>,
) -> ComputeResult<Map<String, Value>> {
    let protocol = match body.get("ip_protocol") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(other) => Some(other.to_string()),
    };
    let upper = protocol.as_deref().map(str::to_ascii_uppercase);
    let icmp = upper.as_deref() == Some("ICMP");
    let mut from = port_number(body, "from_port", icmp)?;
    let mut to = port_number(body, "to_port", icmp)?;
    let cidr = match body.get("cidr") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if c.is_empty() => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(other) => {
            return Err(ComputeError::BadRequest(format!("Invalid cidr {other}.")));
        }
    };
    let mut out = Map::new();
    let cidr = match group_id {
        Some(g) => {
            out.insert("remote_group_id".into(), json!(g));
            if from.is_none() && to.is_none() {
                match upper.as_deref() {
                    Some("ICMP") => (from, to) = (Some(-1), Some(-1)),
                    Some("TCP" | "UDP") => (from, to) = (Some(1), Some(65535)),
                    _ => {}
                }
            }
            None
        }
        None => {
            let cidr = cidr.unwrap_or_else(|| "0.0.0.0/0".into());
            if crate::network::ipam::Cidr::parse(&cidr, false).is_err() {
                return Err(ComputeError::BadRequest(format!("Invalid cidr {cidr}.")));
            }
            if let Some((net, len)) = cidr.split_once('/')
                && len == "0"
                && net != "0.0.0.0"
                && net != "::"
            {
                return Err(ComputeError::BadRequest(format!(
                    "Bad prefix for network in cidr {cidr}"
                )));
            }
            Some(cidr)
        }
    };
    match (&protocol, from, to) {
        (Some(p), Some(from), Some(to)) => {
            let up = p.to_ascii_uppercase();
            if !matches!(up.as_str(), "TCP" | "UDP" | "ICMP") {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid IP protocol {p}."
                )));
            }
            if up != "ICMP" && from > to {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid port range {from}:{to}. Former value cannot be greater than the later"
                )));
            }
            if up != "ICMP" && (from < 1 || to > 65535) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid port range {from}:{to}. Valid {up} ports should be between 1-65535"
                )));
            }
            if up == "ICMP" && !((-1..=255).contains(&from) && (-1..=255).contains(&to)) {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid port range {from}:{to}. For ICMP, the type:code must be valid"
                )));
            }
            out.insert("protocol".into(), json!(p.to_ascii_lowercase()));
            if from != -1 {
                out.insert("port_range_min".into(), json!(from));
            }
            if to != -1 {
                out.insert("port_range_max".into(), json!(to));
            }
        }
        _ if cidr.is_some() => {
            return Err(ComputeError::BadRequest(
                "Not enough parameters to build a valid rule.".into(),
            ));
        }
        _ => {}
    }
    let v6 = cidr.as_deref().is_some_and(|c| c.contains(':'));
    out.insert("ethertype".into(), json!(if v6 { "IPv6" } else { "IPv4" }));
    if let Some(c) = cidr {
        out.insert("remote_ip_prefix".into(), json!(c));
    }
    out.insert("direction".into(), json!("ingress"));
    out.insert("security_group_id".into(), json!(parent));
    Ok(out)
}

async fn rule_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:rule:create",
        &own_target(&ctx),
    )?;
    let body = member(&bytes, "security_group_rule")?;
    let uuid_of = |key: &str| -> ComputeResult<Option<String>> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) if uuid::Uuid::parse_str(t).is_ok() => Ok(Some(t.clone())),
            Some(other) => Err(ComputeError::BadRequest(format!(
                "Security group id should be uuid: {other}"
            ))),
        }
    };
    let parent = uuid_of("parent_group_id")?
        .ok_or_else(|| ComputeError::BadRequest("Security group id should be uuid: None".into()))?;
    let group_id = uuid_of("group_id")?;
    let c = caller(&s, &ctx);
    let rule = write_atomic(&s, move |tx| {
        network::visible_group(tx, &c, &parent).map_err(|_| group_not_found(&parent))?;
        if let Some(g) = &group_id {
            network::visible_group(tx, &c, g).map_err(|_| group_not_found(g))?;
        }
        let neutron = neutron_rule(&body, &parent, group_id.as_deref())?;
        let rule = network::create_rule_in(tx, &c, &neutron).map_err(|e| match e {
            NetworkError::Conflict {
                kind: "OverQuota", ..
            } => {
                ComputeError::QuotaExceeded("Quota exceeded, too many security group rules.".into())
            }
            other => from_network(other),
        })?;
        rule_view(tx, &rule)?
            .ok_or_else(|| ComputeError::Internal("the remote group vanished".into()))
    })
    .await?;
    changed(&s);
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_group_rule": rule}),
    ))
}

async fn rule_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-security-groups:rule:delete",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    write_atomic(&s, move |tx| {
        network::delete_rule_in(tx, &c, &id).map_err(|e| match e {
            NetworkError::NotFound { .. } => {
                ComputeError::NotFound(format!("Security group rule {id} could not be found."))
            }
            other => from_network(other),
        })
    })
    .await?;
    changed(&s);
    Ok(accepted())
}

// ------------------------------------------- a server's security groups

/// The server's ports that are still its own.
fn server_ports(conn: &Connection, server: &Server) -> ComputeResult<Vec<Port>> {
    let mut out = Vec::new();
    for sp in &server.ports {
        if let Some(port) = store::load::<Port>(conn, &sp.port_id).map_err(from_network)?
            && port.device_id == server.id
        {
            out.push(port);
        }
    }
    Ok(out)
}

/// `GET /servers/{id}/os-security-groups`: the groups on the server's
/// ports, in Nova's format.
pub async fn server_groups(s: &ComputeState, server: &Server) -> ComputeResult<Response> {
    let server = server.clone();
    let groups = s
        .read(move |conn| {
            let mut ids: Vec<String> = Vec::new();
            for port in server_ports(conn, &server)? {
                for g in port.security_groups {
                    if !ids.contains(&g) {
                        ids.push(g);
                    }
                }
            }
            let mut out = Vec::new();
            for id in ids {
                if let Some(sg) = store::load::<SecurityGroup>(conn, &id).map_err(from_network)? {
                    out.push(group_view(conn, &sg)?);
                }
            }
            Ok(out)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_groups": groups}),
    ))
}

/// The group a server action names, by id or name, in the server's
/// project (Neutron's `find_resourceid_by_name_or_id`).
fn find_group(conn: &Connection, name: &str, project: &str) -> ComputeResult<String> {
    let groups: Vec<SecurityGroup> = store::all(conn).map_err(from_network)?;
    if let Some(g) = groups
        .iter()
        .find(|g| g.std.id == name && (g.std.project_id == project || g.shared))
    {
        return Ok(g.std.id.clone());
    }
    let matching: Vec<&SecurityGroup> = groups
        .iter()
        .filter(|g| g.name == name && g.std.project_id == project)
        .collect();
    match matching.as_slice() {
        [one] => Ok(one.std.id.clone()),
        [] if name == "default" => network::ensure_default(conn, project).map_err(from_network),
        [] => Err(group_not_found(name)),
        _ => Err(ComputeError::Conflict(format!(
            "Multiple security_group matches found for name '{name}', use an ID to be more specific."
        ))),
    }
}

/// The `name` of an add/removeSecurityGroup body (Nova's `_parse`).
fn group_name(action: &str, arg: &Value) -> ComputeResult<String> {
    let Some(obj) = arg.as_object() else {
        return Err(ComputeError::BadRequest("Missing parameter dict".into()));
    };
    let Some(name) = obj.get("name") else {
        return Err(ComputeError::BadRequest(
            "Security group not specified".into(),
        ));
    };
    let Some(name) = name.as_str() else {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {action}. 'name' is not of type 'string'"
        )));
    };
    if name.trim().is_empty() {
        return Err(ComputeError::BadRequest(
            "Security group name cannot be empty".into(),
        ));
    }
    Ok(name.to_string())
}

/// `addSecurityGroup` (`add`) and `removeSecurityGroup`: the group is put
/// on (taken off) every port of the server.
pub async fn security_group_action(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
    add: bool,
) -> ComputeResult<Response> {
    let action = if add {
        "addSecurityGroup"
    } else {
        "removeSecurityGroup"
    };
    let name = group_name(action, arg)?;
    let server = access::load(s, ctx, id).await?;
    write_atomic(s, move |tx| {
        let group = find_group(tx, &name, &server.project_id)?;
        let ports = server_ports(tx, &server)?;
        if ports.is_empty() {
            return Err(ComputeError::NotFound(format!(
                "instance_id {} could not be found as device id on any ports",
                server.id
            )));
        }
        if add {
            for mut port in ports {
                if !port.port_security_enabled || port.fixed_ips.is_empty() {
                    return Err(ComputeError::BadRequest(
                        "Network requires port_security_enabled and subnet associated in order to apply security groups.".into(),
                    ));
                }
                if !port.security_groups.contains(&group) {
                    port.security_groups.push(group.clone());
                    store::save(tx, &mut port).map_err(from_network)?;
                }
            }
        } else {
            let mut found = false;
            for mut port in ports {
                if port.security_groups.contains(&group) {
                    port.security_groups.retain(|g| g != &group);
                    store::save(tx, &mut port).map_err(from_network)?;
                    found = true;
                }
            }
            if !found {
                return Err(ComputeError::NotFound(format!(
                    "Security group {name} not associated with the instance {}",
                    server.id
                )));
            }
        }
        Ok(())
    })
    .await?;
    changed(s);
    Ok(accepted())
}

// ----------------------------------------------------------- floating IPs

/// A floating IP in Nova's proxy format.
#[derive(Debug, Serialize)]
struct NovaFloatingIp {
    id: String,
    ip: String,
    pool: String,
    fixed_ip: Option<String>,
    instance_id: Option<String>,
}

fn floating_view(conn: &Connection, f: &FloatingIp) -> ComputeResult<NovaFloatingIp> {
    let pool = store::load::<Network>(conn, &f.floating_network_id)
        .map_err(from_network)?
        .map_or_else(|| f.floating_network_id.clone(), |n| n.name);
    let instance_id = match &f.port_id {
        Some(p) => store::load::<Port>(conn, p)
            .map_err(from_network)?
            .map(|p| p.device_id)
            .filter(|d| !d.is_empty()),
        None => None,
    };
    Ok(NovaFloatingIp {
        id: f.std.id.clone(),
        ip: f.floating_ip_address.clone(),
        pool,
        fixed_ip: f.fixed_ip_address.clone(),
        instance_id,
    })
}

fn floating_not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Floating IP not found for ID {id}"))
}

/// The caller's floating IP with this address (Nova's
/// `get_floating_ip_by_address`), else 404.
fn floating_by_address(conn: &Connection, c: &Caller, address: &str) -> ComputeResult<FloatingIp> {
    let all: Vec<FloatingIp> = store::all(conn).map_err(from_network)?;
    all.into_iter()
        .find(|f| f.floating_ip_address == address && (c.admin || f.std.project_id == c.project))
        .ok_or_else(|| ComputeError::NotFound("floating IP not found".into()))
}

async fn floating_list(State(s): State<S>, Auth(ctx): Auth, mv: Mv) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-floating-ips:list",
        &own_target(&ctx),
    )?;
    let project = ctx.project_id().unwrap_or_default().to_string();
    let list = s
        .read(move |conn| {
            let all: Vec<FloatingIp> = store::all(conn).map_err(from_network)?;
            all.iter()
                .filter(|f| f.std.project_id == project)
                .map(|f| floating_view(conn, f))
                .collect::<ComputeResult<Vec<_>>>()
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"floating_ips": list}),
    ))
}

async fn floating_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-floating-ips:show",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let view = s
        .read(move |conn| {
            let f =
                network::visible_floating_ip(conn, &c, &id).map_err(|_| floating_not_found(&id))?;
            floating_view(conn, &f)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"floating_ip": view})))
}

/// The external network a pool names (name or id); without one, the
/// network named `nova` (Nova's `default_floating_pool`) or else the only
/// external network.
fn pool_network(conn: &Connection, c: &Caller, pool: Option<&str>) -> ComputeResult<Network> {
    let not_found = || ComputeError::NotFound("Floating IP pool not found.".into());
    let nets: Vec<Network> = store::all(conn).map_err(from_network)?;
    let mut external = Vec::new();
    for n in nets.into_iter().filter(|n| n.external) {
        if network::visible_network(conn, c, &n.std.id).is_ok() {
            external.push(n);
        }
    }
    let chosen: Vec<&Network> = match pool {
        Some(p) => {
            let by_id: Vec<&Network> = external.iter().filter(|n| n.std.id == p).collect();
            if by_id.is_empty() {
                external.iter().filter(|n| n.name == p).collect()
            } else {
                by_id
            }
        }
        None => {
            let nova: Vec<&Network> = external.iter().filter(|n| n.name == "nova").collect();
            if nova.is_empty() && external.len() == 1 {
                external.iter().collect()
            } else {
                nova
            }
        }
    };
    match chosen.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_found()),
        _ => Err(ComputeError::Conflict(format!(
            "Multiple floating IP pools matches found for name '{}'",
            pool.unwrap_or("nova")
        ))),
    }
}

async fn floating_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-floating-ips:create",
        &own_target(&ctx),
    )?;
    let pool = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match parse_body(&bytes)?.remove("pool") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(p),
            Some(other) => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute pool. Value: {other}. {other} is not of type 'string'"
                )));
            }
        }
    };
    let c = caller(&s, &ctx);
    let view = write_atomic(&s, move |tx| {
        let net = pool_network(tx, &c, pool.as_deref())?;
        let mut body = Map::new();
        body.insert("floating_network_id".into(), json!(net.std.id));
        let f = network::create_floating_ip_in(tx, &c, &body).map_err(|e| match e {
            NetworkError::Conflict {
                kind: "OverQuota", ..
            } => ComputeError::QuotaExceeded(format!(
                "IP allocation over quota in pool {}.",
                net.name
            )),
            NetworkError::Conflict {
                kind: "IpAddressGenerationFailure",
                ..
            } => ComputeError::NotFound(format!("No more floating IPs in pool {}.", net.name)),
            other => from_network(other),
        })?;
        floating_view(tx, &f)
    })
    .await?;
    changed(&s);
    Ok(json_response(StatusCode::OK, &json!({"floating_ip": view})))
}

async fn floating_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-floating-ips:delete",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    write_atomic(&s, move |tx| {
        network::visible_floating_ip(tx, &c, &id).map_err(|_| floating_not_found(&id))?;
        network::delete_floating_ip_in(tx, &c, &id).map_err(from_network)
    })
    .await?;
    changed(&s);
    Ok(accepted())
}

async fn pools(State(s): State<S>, Auth(ctx): Auth, mv: Mv) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-floating-ip-pools",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let names = s
        .read(move |conn| {
            let nets: Vec<Network> = store::all(conn).map_err(from_network)?;
            Ok(nets
                .into_iter()
                .filter(|n| n.external && network::visible_network(conn, &c, &n.std.id).is_ok())
                .map(|n| json!({"name": n.name}))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"floating_ip_pools": names}),
    ))
}

/// The text member `key` of an action's argument, else Nova's 400.
fn action_text(action: &str, arg: &Value, key: &str) -> ComputeResult<String> {
    match arg.get(key) {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
        Some(other) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not valid"
        ))),
        None => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {action}. '{key}' is a required property"
        ))),
    }
}

fn ipv4(text: &str, key: &str) -> ComputeResult<()> {
    if text.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value: {text}. '{text}' is not a 'ipv4'"
        )));
    }
    Ok(())
}

/// `addFloatingIp`: the project's floating IP `address` goes to the
/// server's port holding `fixed_address` (else its first fixed IPv4).
pub async fn add_floating_ip(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let action = "addFloatingIp";
    let address = action_text(action, arg, "address")?;
    ipv4(&address, "address")?;
    let fixed_address = match arg.get("fixed_address") {
        None => None,
        Some(_) => {
            let f = action_text(action, arg, "fixed_address")?;
            if f.parse::<std::net::IpAddr>().is_err() {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute fixed_address. Value: {f}. '{f}' is not a 'ip-address'"
                )));
            }
            Some(f)
        }
    };
    let server = access::load(s, ctx, id).await?;
    let c = caller(s, ctx);
    write_atomic(s, move |tx| {
        let ports = server_ports(tx, &server)?;
        if ports.is_empty() {
            return Err(ComputeError::BadRequest(
                "Instance network is not ready yet".into(),
            ));
        }
        let fixed: Vec<(&Port, &str)> = ports
            .iter()
            .flat_map(|p| p.fixed_ips.iter().map(move |f| (p, f.ip_address.as_str())))
            .collect();
        if fixed.is_empty() {
            return Err(ComputeError::BadRequest(
                "No fixed IPs associated to instance".into(),
            ));
        }
        let (port, chosen) = match &fixed_address {
            Some(want) => *fixed.iter().find(|(_, ip)| ip == want).ok_or_else(|| {
                ComputeError::BadRequest("Specified fixed address not assigned to instance".into())
            })?,
            None => *fixed
                .iter()
                .find(|(_, ip)| ip.parse::<std::net::Ipv4Addr>().is_ok())
                .ok_or_else(|| {
                    ComputeError::BadRequest(format!(
                        "Unable to associate floating IP {address} to any fixed IPs for instance {}. Instance has no fixed IPv4 addresses to associate.",
                        server.id
                    ))
                })?,
        };
        let f = floating_by_address(tx, &c, &address)?;
        network::set_floating_ip_port_in(
            tx,
            &c,
            &f.std.id,
            Some((&port.std.id, Some(chosen.to_string()))),
        )
        .map_err(|e| match e {
            NetworkError::Db(d) => ComputeError::Db(d),
            NetworkError::Forbidden(m) => ComputeError::Forbidden(m),
            other => ComputeError::BadRequest(format!(
                "Unable to associate floating IP {address} to fixed IP {chosen} for instance {}. Error: {other}",
                server.id
            )),
        })?;
        Ok(())
    })
    .await?;
    changed(s);
    Ok(accepted())
}

/// `removeFloatingIp`: 409 unless the address is on one of the server's
/// ports.
pub async fn remove_floating_ip(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let address = action_text("removeFloatingIp", arg, "address")?;
    ipv4(&address, "address")?;
    let server = access::load(s, ctx, id).await?;
    let c = caller(s, ctx);
    write_atomic(s, move |tx| {
        let f = floating_by_address(tx, &c, &address)?;
        let ports = server_ports(tx, &server)?;
        let on_server = f
            .port_id
            .as_ref()
            .is_some_and(|p| ports.iter().any(|port| &port.std.id == p));
        if !on_server {
            return Err(ComputeError::Conflict(format!(
                "Floating IP {address} is not associated with instance {}.",
                server.id
            )));
        }
        network::set_floating_ip_port_in(tx, &c, &f.std.id, None).map_err(from_network)?;
        Ok(())
    })
    .await?;
    changed(s);
    Ok(accepted())
}

/// `addFixedIp`/`removeFixedIp`: a new address means a new NIC in a
/// running guest (Nova's neutron driver makes a port on the network and
/// plugs it), and taking one off changes a NIC under a running guest; the
/// VMM cannot hot-plug PCI devices yet, so both answer 409 as Nova does
/// when the hypervisor cannot attach an interface.
pub async fn fixed_ip_action(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    arg: &Value,
    add: bool,
) -> ComputeResult<Response> {
    if add {
        match arg.get("networkId") {
            Some(Value::String(_)) | Some(Value::Number(_)) => {}
            _ => {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute addFixedIp. 'networkId' is a required property"
                        .into(),
                ));
            }
        }
    } else {
        let address = action_text("removeFixedIp", arg, "address")?;
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute address. Value: {address}. '{address}' is not a 'ip-address'"
            )));
        }
    }
    let server = access::load(s, ctx, id).await?;
    Err(ComputeError::Conflict(if add {
        format!(
            "Adding a fixed IP needs a new interface plugged into instance {}, and this cloud's hypervisor cannot hot-plug interfaces yet; attach the server to the network at create time.",
            server.id
        )
    } else {
        format!(
            "Removing a fixed IP changes an interface of instance {} while it runs, and this cloud's hypervisor cannot hot-plug interfaces yet; change the port through the Network service.",
            server.id
        )
    }))
}

// ---------------------------------------------------------------- networks

/// A network as Nova's `os-networks` shows one from Neutron: the id and
/// label; the nova-network fields are null (admins see the admin fields,
/// null too).
fn network_view(net: &Network, admin: bool) -> Value {
    const FIELDS: &[&str] = &[
        "cidr",
        "netmask",
        "gateway",
        "broadcast",
        "dns1",
        "dns2",
        "cidr_v6",
        "gateway_v6",
        "netmask_v6",
    ];
    const ADMIN_FIELDS: &[&str] = &[
        "created_at",
        "updated_at",
        "deleted_at",
        "deleted",
        "injected",
        "bridge",
        "vlan",
        "vpn_public_address",
        "vpn_public_port",
        "vpn_private_address",
        "dhcp_start",
        "project_id",
        "host",
        "bridge_interface",
        "multi_host",
        "priority",
        "rxtx_base",
        "mtu",
        "dhcp_server",
        "enable_dhcp",
        "share_address",
    ];
    let mut out = Map::new();
    out.insert("id".into(), json!(net.std.id));
    out.insert("label".into(), json!(net.name));
    for f in FIELDS {
        out.insert((*f).into(), Value::Null);
    }
    if admin {
        for f in ADMIN_FIELDS {
            out.insert((*f).into(), Value::Null);
        }
    }
    Value::Object(out)
}

/// The networks the caller sees (`own`: only its project's and the shared
/// ones, as os-tenant-networks).
fn visible_networks(conn: &Connection, c: &Caller, own: bool) -> ComputeResult<Vec<Network>> {
    let nets: Vec<Network> = store::all(conn).map_err(from_network)?;
    let mut out = Vec::new();
    for n in nets {
        if own && n.std.project_id != c.project && !n.shared {
            continue;
        }
        if network::visible_network(conn, c, &n.std.id).is_ok() {
            out.push(n);
        }
    }
    Ok(out)
}

fn network_not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Network {id} could not be found."))
}

async fn network_list(State(s): State<S>, Auth(ctx): Auth, mv: Mv) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-networks:list",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let admin = super::is_admin_context(&s, &ctx);
    let list = s
        .read(move |conn| {
            Ok(visible_networks(conn, &c, false)?
                .iter()
                .map(|n| network_view(n, admin))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"networks": list})))
}

async fn network_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-networks:show",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let admin = super::is_admin_context(&s, &ctx);
    let view = s
        .read(move |conn| {
            let net =
                network::visible_network(conn, &c, &id).map_err(|_| network_not_found(&id))?;
            Ok(network_view(&net, admin))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"network": view})))
}

/// os-tenant-networks' view (Nova's `network_dict`: the cidr is the text
/// `None` for a Neutron network).
fn tenant_network_view(net: &Network) -> Value {
    json!({"id": net.std.id, "label": net.name, "cidr": "None"})
}

async fn tenant_network_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-tenant-networks:list",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let list = s
        .read(move |conn| {
            Ok(visible_networks(conn, &c, true)?
                .iter()
                .map(tenant_network_view)
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"networks": list})))
}

async fn tenant_network_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-tenant-networks:show",
        &own_target(&ctx),
    )?;
    let c = caller(&s, &ctx);
    let view = s
        .read(move |conn| {
            let net = visible_networks(conn, &c, true)?
                .into_iter()
                .find(|n| n.std.id == id)
                .ok_or_else(|| network_not_found(&id))?;
            Ok(tenant_network_view(&net))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"network": view})))
}

/// What Nova answers for nova-network's admin actions (create, delete,
/// add, associate) since nova-network was removed: 410.
fn gone() -> ComputeResult<Response> {
    Err(ComputeError::Gone(
        "This API is no longer supported: nova-network was removed; use the Network service."
            .into(),
    ))
}

async fn network_gone(Auth(_): Auth, mv: Mv) -> ComputeResult<Response> {
    proxy_available(mv)?;
    gone()
}

async fn network_gone_id(
    Auth(_): Auth,
    mv: Mv,
    Path(_id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    gone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    const SG: &str = "0a2b9f3e-7c55-4a6e-8d0a-2f5e1c3b4d6f";

    #[test]
    fn nova_rules_become_neutron_ingress_rules() {
        let r = neutron_rule(
            &body(json!({"ip_protocol": "TCP", "from_port": "22", "to_port": 22, "cidr": "10.0.0.0/8"})),
            SG,
            None,
        )
        .expect("rule");
        assert_eq!(r["direction"], "ingress");
        assert_eq!(r["protocol"], "tcp");
        assert_eq!(r["port_range_min"], 22);
        assert_eq!(r["remote_ip_prefix"], "10.0.0.0/8");
        assert_eq!(r["ethertype"], "IPv4");
        let v6 = neutron_rule(
            &body(json!({"ip_protocol": "udp", "from_port": 53, "to_port": 53, "cidr": "2001:db8::/32"})),
            SG,
            None,
        )
        .expect("rule");
        assert_eq!(v6["ethertype"], "IPv6");
        // ICMP -1 means any: no port range in Neutron.
        let icmp = neutron_rule(
            &body(json!({"ip_protocol": "icmp", "from_port": -1, "to_port": -1})),
            SG,
            None,
        )
        .expect("rule");
        assert!(icmp.get("port_range_min").is_none());
        assert_eq!(icmp["remote_ip_prefix"], "0.0.0.0/0");
        // A group rule without ports: tcp opens everything.
        let group = neutron_rule(&body(json!({"ip_protocol": "tcp"})), SG, Some(SG)).expect("rule");
        assert_eq!(group["port_range_min"], 1);
        assert_eq!(group["port_range_max"], 65535);
        assert_eq!(group["remote_group_id"], SG);
        assert!(group.get("remote_ip_prefix").is_none());
        for bad in [
            json!({"ip_protocol": "tcp", "from_port": 2, "to_port": 1}),
            json!({"ip_protocol": "tcp", "from_port": 0, "to_port": 1}),
            json!({"ip_protocol": "tcp", "from_port": 1, "to_port": 65536}),
            json!({"ip_protocol": "icmp", "from_port": 256, "to_port": 0}),
            json!({"ip_protocol": "gre", "from_port": 1, "to_port": 1}),
            json!({"ip_protocol": "tcp", "from_port": "x", "to_port": 1}),
            json!({"cidr": "10.0.0.0/8"}),
            json!({"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "cidr": "10.0.0.0/0"}),
            json!({"ip_protocol": "tcp", "from_port": 1, "to_port": 2, "cidr": "nope"}),
        ] {
            assert!(neutron_rule(&body(bad.clone()), SG, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn group_properties_are_checked_stripped_and_kept_as_given() {
        let b = body(json!({"name": " web ", "description": "   "}));
        assert_eq!(group_property(&b, "name").ok().as_deref(), Some(" web "));
        assert!(group_property(&b, "description").is_err());
        assert!(group_property(&body(json!({"name": 1})), "name").is_err());
        assert!(group_property(&body(json!({})), "name").is_err());
    }
}
