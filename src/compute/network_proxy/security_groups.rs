//! Nova's `os-security-groups` and `os-security-group-rules` proxies
//! (below 2.36), a server's security groups and the
//! `addSecurityGroup`/`removeSecurityGroup` actions.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{S, accepted, caller, changed, from_network, member, over_quota, proxy_allowed};
use crate::compute::access;
use crate::compute::networking::write_atomic;
use crate::compute::request::{action_arg, present};
use crate::compute::{ComputeError, ComputeResult, ComputeState, Mv};
use crate::db::servers::Server;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::network::model::{Port, Rule, SecurityGroup};
use crate::network::{self, NetworkError, store};

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
pub(super) struct RuleGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub(super) struct IpRange {
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
pub(super) fn rule_view(conn: &Connection, r: &Rule) -> ComputeResult<Option<NovaRule>> {
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

pub(super) fn group_view(conn: &Connection, sg: &SecurityGroup) -> ComputeResult<NovaGroup> {
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

pub(super) fn group_not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Security group {id} not found."))
}

/// The `security_group` of a create or update. Nova's schema leaves other
/// members free, and its `validate_property` (below) checks these two with
/// its own wording, so they are read as any JSON value.
#[derive(Debug, Deserialize)]
pub(super) struct GroupFields {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    description: Option<Value>,
}

/// The `security_group_rule` of a create. Nova's schema never checked the
/// ports, protocol or CIDR (`{}`); [`neutron_rule`] does, with the
/// wording of Nova's `_rule_args_to_dict`, and the group ids are checked
/// as UUIDs in `rule_create`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RuleFields {
    #[serde(default)]
    parent_group_id: Option<Value>,
    #[serde(default)]
    group_id: Option<Value>,
    #[serde(default)]
    ip_protocol: Option<Value>,
    #[serde(default)]
    from_port: Option<Value>,
    #[serde(default)]
    to_port: Option<Value>,
    #[serde(default)]
    cidr: Option<Value>,
}

/// The argument of `addSecurityGroup`/`removeSecurityGroup`, checked by
/// [`group_name`] with Nova's `_parse` wording.
#[derive(Debug, Deserialize)]
pub(super) struct GroupActionArg {
    #[serde(default, deserialize_with = "present")]
    name: Option<Value>,
}

/// Nova's `validate_property`: a string, 1 to 255 characters once stripped.
pub(super) fn group_property(value: Option<&Value>, key: &str) -> ComputeResult<String> {
    let Some(Value::String(v)) = value else {
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

pub(super) async fn group_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(query): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-security-groups:get")?;
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

pub(super) async fn group_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-security-groups:show")?;
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

pub(super) fn group_body(bytes: &Bytes) -> ComputeResult<Map<String, Value>> {
    let body: GroupFields = member(bytes, "security_group")?;
    let name = group_property(body.name.as_ref(), "name")?;
    let description = group_property(body.description.as_ref(), "description")?;
    let mut out = Map::new();
    out.insert("name".into(), Value::String(name));
    out.insert("description".into(), Value::String(description));
    Ok(out)
}

pub(super) async fn group_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-security-groups:create")?;
    let body = group_body(&bytes)?;
    let c = caller(&s, &ctx);
    let group = write_atomic(&s, move |tx| {
        let sg = network::create_group_in(tx, &c, &body)
            .map_err(over_quota("Quota exceeded, too many security groups."))?;
        group_view(tx, &sg)
    })
    .await?;
    changed(&s);
    Ok(json_response(
        StatusCode::OK,
        &json!({"security_group": group}),
    ))
}

pub(super) async fn group_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-security-groups:update")?;
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

pub(super) async fn group_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(&s, &ctx, mv, "os_compute_api:os-security-groups:delete")?;
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
pub(super) fn port_number(value: Option<&Value>, icmp: bool) -> ComputeResult<Option<i64>> {
    let bad = || {
        ComputeError::BadRequest(if icmp {
            "Type and Code must be integers for ICMP protocol type".into()
        } else {
            "To and From ports must be integers".into()
        })
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
        Some(Value::String(t)) => t.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// The Neutron rule body of a Nova rule (`_rule_args_to_dict`,
/// `_new_ingress_rule` and the conversion to Neutron's rule).
pub(super) fn neutron_rule(
    body: &RuleFields,
    parent: &str,
    group_id: Option<&str>,
) -> ComputeResult<Map<String, Value>> {
    let protocol = match &body.ip_protocol {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.is_empty() => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(other) => Some(other.to_string()),
    };
    let upper = protocol.as_deref().map(str::to_ascii_uppercase);
    let icmp = upper.as_deref() == Some("ICMP");
    let mut from = port_number(body.from_port.as_ref(), icmp)?;
    let mut to = port_number(body.to_port.as_ref(), icmp)?;
    let cidr = match &body.cidr {
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

pub(super) async fn rule_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> ComputeResult<Response> {
    proxy_allowed(
        &s,
        &ctx,
        mv,
        "os_compute_api:os-security-groups:rule:create",
    )?;
    let body: RuleFields = member(&bytes, "security_group_rule")?;
    let uuid_of = |value: &Option<Value>| -> ComputeResult<Option<String>> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) if uuid::Uuid::parse_str(t).is_ok() => Ok(Some(t.clone())),
            Some(other) => Err(ComputeError::BadRequest(format!(
                "Security group id should be uuid: {other}"
            ))),
        }
    };
    let parent = uuid_of(&body.parent_group_id)?
        .ok_or_else(|| ComputeError::BadRequest("Security group id should be uuid: None".into()))?;
    let group_id = uuid_of(&body.group_id)?;
    let c = caller(&s, &ctx);
    let rule = write_atomic(&s, move |tx| {
        network::visible_group(tx, &c, &parent).map_err(|_| group_not_found(&parent))?;
        if let Some(g) = &group_id {
            network::visible_group(tx, &c, g).map_err(|_| group_not_found(g))?;
        }
        let neutron = neutron_rule(&body, &parent, group_id.as_deref())?;
        let rule = network::create_rule_in(tx, &c, &neutron)
            .map_err(over_quota("Quota exceeded, too many security group rules."))?;
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

pub(super) async fn rule_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_allowed(
        &s,
        &ctx,
        mv,
        "os_compute_api:os-security-groups:rule:delete",
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
pub(super) fn server_ports(conn: &Connection, server: &Server) -> ComputeResult<Vec<Port>> {
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
pub(super) fn find_group(conn: &Connection, name: &str, project: &str) -> ComputeResult<String> {
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
pub(super) fn group_name(action: &str, arg: &Value) -> ComputeResult<String> {
    if !arg.is_object() {
        return Err(ComputeError::BadRequest("Missing parameter dict".into()));
    }
    let request: GroupActionArg = action_arg(action, arg.clone())?;
    let Some(name) = request.name else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> RuleFields {
        serde_json::from_value(v).unwrap_or_default()
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
        let b: GroupFields =
            serde_json::from_value(json!({"name": " web ", "description": "   ", "x": 1}))
                .expect("declared");
        assert_eq!(
            group_property(b.name.as_ref(), "name").ok().as_deref(),
            Some(" web ")
        );
        assert!(group_property(b.description.as_ref(), "description").is_err());
        assert_eq!(
            crate::compute::request::refused(group_property(Some(&json!(1)), "name")),
            "Security group name is not a string or unicode"
        );
        assert!(group_property(None, "name").is_err());
    }

    #[test]
    fn group_actions_name_a_group() {
        use crate::compute::request::refused;
        let action = "addSecurityGroup";
        assert_eq!(
            group_name(action, &json!({"name": "web", "x": 1}))
                .ok()
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            refused(group_name(action, &json!(["web"]))),
            "Missing parameter dict"
        );
        assert_eq!(
            refused(group_name(action, &json!({}))),
            "Security group not specified"
        );
        assert_eq!(
            refused(group_name(action, &json!({"name": null}))),
            "Invalid input for field/attribute addSecurityGroup. 'name' is not of type 'string'"
        );
        assert_eq!(
            refused(group_name(action, &json!({"name": " "}))),
            "Security group name cannot be empty"
        );
    }
}
