//! Security groups and rules (`/v2.0/security-groups`,
//! `/v2.0/security-group-rules`), with Neutron's per-project `default`
//! group made on first use.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::Value;

use super::ipam::Cidr;
use super::model::*;
use super::store::{self, Kind, Std};
use super::{
    Caller, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision, query,
    quotas, revision_constraint,
};
use crate::http::body::Object;
use crate::identity::Auth;
use crate::policy::Target;

impl Kind for SecurityGroup {
    const KIND: &'static str = "security_group";
    const NOT_FOUND: &'static str = "SecurityGroupNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn not_found_message(id: &str) -> String {
        format!("Security group {id} does not exist")
    }
}

impl Kind for Rule {
    const KIND: &'static str = "security_group_rule";
    const NOT_FOUND: &'static str = "SecurityGroupRuleNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn parent(&self) -> Option<&str> {
        Some(&self.security_group_id)
    }
    fn not_found_message(id: &str) -> String {
        format!("Security group rule {id} does not exist")
    }
}

fn rule_view(r: &Rule) -> NetResult<Value> {
    let mut v = store::to_value(r)?;
    if let Value::Object(m) = &mut v {
        m.remove("tags");
    }
    Ok(v)
}

fn group_view(conn: &Connection, sg: &SecurityGroup) -> NetResult<Value> {
    let rules: Vec<Rule> = store::children(conn, &sg.std.id)?;
    let mut v = store::to_value(sg)?;
    if let Value::Object(m) = &mut v {
        let rules: NetResult<Vec<Value>> = rules.iter().map(rule_view).collect();
        m.insert("security_group_rules".into(), Value::Array(rules?));
    }
    Ok(v)
}

fn new_rule(
    sg: &SecurityGroup,
    direction: &str,
    ethertype: &str,
    remote_group: Option<String>,
) -> Rule {
    Rule {
        std: Std::new(&sg.std.project_id, String::new()),
        security_group_id: sg.std.id.clone(),
        direction: direction.into(),
        ethertype: ethertype.into(),
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id: remote_group,
        remote_address_group_id: None,
        normalized_cidr: None,
        belongs_to_default_sg: sg.name == "default",
    }
}

/// Makes a group with Neutron's two egress rules (and, for `default`, the
/// two ingress rules from the group itself).
fn make_group(
    conn: &Connection,
    project: &str,
    name: &str,
    description: &str,
    stateful: bool,
) -> NetResult<SecurityGroup> {
    let sg = SecurityGroup {
        std: Std::new(project, description.to_string()),
        name: name.to_string(),
        stateful,
        shared: false,
    };
    store::insert(conn, &sg)?;
    for eth in ["IPv4", "IPv6"] {
        store::insert(conn, &new_rule(&sg, "egress", eth, None))?;
        if name == "default" {
            store::insert(
                conn,
                &new_rule(&sg, "ingress", eth, Some(sg.std.id.clone())),
            )?;
        }
    }
    Ok(sg)
}

/// A rule's `port_range_min`/`port_range_max`: absent, or an integer in
/// 0..=65535 (Neutron's port converter, with its wording).
fn port_value(body: &Object, key: &str) -> NetResult<Option<i64>> {
    let raw = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = match raw {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (0..=65535).contains(&n) => Ok(Some(n)),
        _ => {
            let shown = match raw {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Err(NetworkError::BadRequest {
                kind: "InvalidInput",
                message: format!("Invalid input for operation: Invalid value for port {shown}."),
            })
        }
    }
}

/// The project's `default` group, made on first use.
pub fn ensure_default(conn: &Connection, project: &str) -> NetResult<String> {
    let groups: Vec<SecurityGroup> = store::all(conn)?;
    if let Some(sg) = groups
        .iter()
        .find(|g| g.name == "default" && g.std.project_id == project)
    {
        return Ok(sg.std.id.clone());
    }
    Ok(
        make_group(conn, project, "default", "Default security group", true)?
            .std
            .id,
    )
}

/// A group the caller may see, else 404.
pub fn visible_group(conn: &Connection, caller: &Caller, id: &str) -> NetResult<SecurityGroup> {
    let sg: SecurityGroup = store::must(conn, id)?;
    if caller.admin || sg.std.project_id == caller.project || sg.shared {
        Ok(sg)
    } else {
        Err(store::not_found::<SecurityGroup>(id))
    }
}

/// Creates a group in an open transaction (Neutron's checks, policy and
/// quota; the project's `default` made first), as `POST /security-groups`.
pub fn create_group_in(
    conn: &Connection,
    caller: &Caller,
    body: &Object,
) -> NetResult<SecurityGroup> {
    attrs::known(
        body,
        &["name", "description", "project_id", "tenant_id", "stateful"],
    )?;
    let project = caller.owner_for(body)?;
    caller.enforce("create_security_group", &Target::project(project.clone()))?;
    let (name, description) = attrs::name_description(body)?;
    let name = name.unwrap_or_default();
    if name == "default" {
        return Err(NetworkError::conflict(
            "SecurityGroupDefaultAlreadyExists",
            "Default security group already exists.",
        ));
    }
    let stateful = attrs::boolean(body, "stateful")?.unwrap_or(true);
    ensure_default(conn, &project)?;
    quotas::check(conn, &project, "security_group", 1)?;
    make_group(
        conn,
        &project,
        &name,
        &description.unwrap_or_default(),
        stateful,
    )
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "security_group")?;
    let v = s
        .write(move |tx| {
            let sg = create_group_in(tx, &caller, &body)?;
            group_view(tx, &sg)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "security_group",
        StatusCode::CREATED,
    ))
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    if !caller.project.is_empty() {
        let p = caller.project.clone();
        let has: bool = s
            .read(move |conn| {
                let groups: Vec<SecurityGroup> = store::all(conn)?;
                Ok(groups
                    .iter()
                    .any(|g| g.name == "default" && g.std.project_id == p))
            })
            .await?;
        if !has {
            let p = caller.project.clone();
            s.write(move |tx| ensure_default(tx, &p)).await?;
        }
    }
    let items = s
        .read(move |conn| {
            let groups: Vec<SecurityGroup> = store::all(conn)?;
            groups
                .iter()
                .filter(|g| caller.admin || g.std.project_id == caller.project || g.shared)
                .map(|g| group_view(conn, g))
                .collect()
        })
        .await?;
    let base = format!("{}/network/v2.0/security-groups", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "security_groups", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let v = s
        .read(move |conn| {
            let sg = visible_group(conn, &caller, &id)?;
            group_view(conn, &sg)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &query::ListQuery::new(raw),
        "security_group",
        StatusCode::OK,
    ))
}

/// Updates a group in an open transaction, as `PUT /security-groups/{id}`.
pub fn update_group_in(
    conn: &Connection,
    caller: &Caller,
    id: &str,
    body: &Object,
    expected: Option<i64>,
) -> NetResult<SecurityGroup> {
    attrs::known(body, &["name", "description", "stateful"])?;
    let mut sg = visible_group(conn, caller, id)?;
    caller.enforce(
        "update_security_group",
        &Target::project(sg.std.project_id.clone()),
    )?;
    check_revision(expected, sg.std.revision_number)?;
    let (name, description) = attrs::name_description(body)?;
    if let Some(n) = name {
        // Neutron's `name_not_default` validator: no group is renamed to
        // `default` (the default group's own name included).
        if n == "default" {
            return Err(NetworkError::conflict(
                "SecurityGroupDefaultAlreadyExists",
                "Default security group already exists.",
            ));
        }
        if sg.name == "default" {
            return Err(NetworkError::conflict(
                "SecurityGroupCannotUpdateDefault",
                "Updating default security group not allowed.",
            ));
        }
        sg.name = n;
    }
    if let Some(d) = description {
        sg.std.description = d;
    }
    if let Some(b) = attrs::boolean(body, "stateful")? {
        sg.stateful = b;
    }
    store::save(conn, &mut sg)?;
    Ok(sg)
}

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "security_group")?;
    let expected = revision_constraint(&headers)?;
    let v = s
        .write(move |tx| {
            let sg = update_group_in(tx, &caller, &id, &body, expected)?;
            group_view(tx, &sg)
        })
        .await?;
    Ok(query::respond_one(
        v,
        &Default::default(),
        "security_group",
        StatusCode::OK,
    ))
}

/// Deletes a group in an open transaction (refused while a port or
/// another group's rule uses it), as `DELETE /security-groups/{id}`.
pub fn delete_group_in(conn: &Connection, caller: &Caller, id: &str) -> NetResult<()> {
    let sg = visible_group(conn, caller, id)?;
    caller.enforce(
        "delete_security_group",
        &Target::project(sg.std.project_id.clone()),
    )?;
    if sg.name == "default" && !caller.admin {
        return Err(NetworkError::conflict(
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        ));
    }
    let ports: Vec<Port> = store::all(conn)?;
    if ports.iter().any(|p| p.security_groups.contains(&sg.std.id)) {
        return Err(NetworkError::conflict(
            "SecurityGroupInUse",
            format!("Security Group {} in use.", sg.std.id),
        ));
    }
    // Rules of other groups naming it as their remote group go with it, as
    // Neutron's foreign key (ON DELETE CASCADE) takes them.
    let rules: Vec<Rule> = store::all(conn)?;
    for r in rules.iter().filter(|r| {
        r.security_group_id == sg.std.id || r.remote_group_id.as_deref() == Some(&sg.std.id)
    }) {
        store::remove::<Rule>(conn, &r.std.id)?;
    }
    store::remove::<SecurityGroup>(conn, &sg.std.id)
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| delete_group_in(tx, &caller, &id)).await?;
    Ok(crate::http::no_content())
}

// ------------------------------------------------------------------ rules

/// The protocol as a number, for comparing `tcp` with `6`.
fn protocol_number(p: &Option<String>) -> Option<u8> {
    let p = p.as_deref()?;
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, v)| *v)
        .or_else(|| p.parse().ok())
}

fn parse_protocol(body: &Object) -> NetResult<Option<String>> {
    let p = match body.get("protocol") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.to_lowercase(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    };
    if p == "any" {
        return Ok(None);
    }
    if PROTOCOLS.iter().any(|(n, _)| *n == p) || p.parse::<u8>().is_ok() {
        return Ok(Some(p));
    }
    let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
    Err(NetworkError::BadRequest {
        kind: "SecurityGroupRuleInvalidProtocol",
        message: format!(
            "Security group rule protocol {p} not supported. Only protocol values {names:?} and integer representations [0 to 255] are supported."
        ),
    })
}

const RULE_ATTRS: &[&str] = &[
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "description",
    "project_id",
    "tenant_id",
];

fn build_rule(conn: &Connection, caller: &Caller, body: &Object) -> NetResult<Rule> {
    attrs::known(body, RULE_ATTRS)?;
    let sg_id = attrs::string(body, "security_group_id", 64)?.ok_or_else(|| {
        NetworkError::bad(
            "Failed to parse request. Required attribute 'security_group_id' not specified",
        )
    })?;
    let sg = visible_group(conn, caller, &sg_id)?;
    let project = caller
        .owner_for(body)
        .unwrap_or_else(|_| sg.std.project_id.clone());
    caller.enforce(
        "create_security_group_rule",
        &Target::project(sg.std.project_id.clone())
            .with("security_group:project_id", sg.std.project_id.clone()),
    )?;
    let direction = attrs::string(body, "direction", 16)?.ok_or_else(|| {
        NetworkError::bad("Failed to parse request. Required attribute 'direction' not specified")
    })?;
    if direction != "ingress" && direction != "egress" {
        return Err(NetworkError::invalid(
            "direction",
            format!("'{direction}' is not in ['ingress', 'egress']"),
        ));
    }
    let ethertype = match attrs::string(body, "ethertype", 16)? {
        None => "IPv4".to_string(),
        Some(e) if e.eq_ignore_ascii_case("ipv4") => "IPv4".into(),
        Some(e) if e.eq_ignore_ascii_case("ipv6") => "IPv6".into(),
        Some(e) => {
            return Err(NetworkError::invalid(
                "ethertype",
                format!("'{e}' is not in ['IPv4', 'IPv6']"),
            ));
        }
    };
    let protocol = parse_protocol(body)?;
    let min = port_value(body, "port_range_min")?;
    let max = port_value(body, "port_range_max")?;
    let number = protocol_number(&protocol);
    if (min.is_some() || max.is_some()) && protocol.is_none() {
        return Err(NetworkError::BadRequest {
            kind: "SecurityGroupProtocolRequiredWithPorts",
            message: "Must also specify protocol if port range is given.".into(),
        });
    }
    match number {
        Some(1) | Some(58) => {
            if let Some(m) = min
                && m > 255
            {
                return Err(NetworkError::BadRequest {
                    kind: "SecurityGroupInvalidIcmpValue",
                    message: format!(
                        "Invalid value for ICMP type (port_range_min) {m}. It must be 0 to 255."
                    ),
                });
            }
            if let Some(m) = max
                && m > 255
            {
                return Err(NetworkError::BadRequest {
                    kind: "SecurityGroupInvalidIcmpValue",
                    message: format!(
                        "Invalid value for ICMP code (port_range_max) {m}. It must be 0 to 255."
                    ),
                });
            }
            if min.is_none() && max.is_some() {
                return Err(NetworkError::BadRequest {
                    kind: "SecurityGroupMissingIcmpType",
                    message: format!(
                        "ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.",
                        max.unwrap_or_default()
                    ),
                });
            }
        }
        Some(6) | Some(17) | Some(132) | Some(33) | Some(136) => {
            // A range needs its lower end: max alone (or max < min) is refused;
            // min alone is filled below.
            let reversed = matches!((min, max), (Some(a), Some(b)) if a > b);
            if reversed || (min.is_none() && max.is_some()) {
                return Err(NetworkError::BadRequest {
                    kind: "SecurityGroupInvalidPortRange",
                    message: "For TCP/UDP protocols, port_range_min must be <= port_range_max"
                        .into(),
                });
            }
            if min == Some(0) || max == Some(0) {
                return Err(NetworkError::BadRequest {
                    kind: "SecurityGroupInvalidPortValue",
                    message: "Invalid value for port 0".into(),
                });
            }
        }
        _ if min.is_some() || max.is_some() => {
            return Err(NetworkError::BadRequest {
                kind: "SecurityGroupInvalidProtocolForPort",
                message: format!(
                    "Ports cannot be specified for protocol {}.",
                    protocol.clone().unwrap_or_default()
                ),
            });
        }
        _ => {}
    }
    let (min, max) = match (number, min, max) {
        // Neutron fills a one-sided TCP/UDP range.
        (Some(6 | 17 | 132 | 33 | 136), Some(a), None) => (Some(a), Some(a)),
        (Some(6 | 17 | 132 | 33 | 136), None, Some(b)) => (Some(b), Some(b)),
        other => (other.1, other.2),
    };
    if ethertype == "IPv4" && matches!(protocol.as_deref(), Some("ipv6-icmp") | Some("icmpv6")) {
        return Err(NetworkError::BadRequest {
            kind: "SecurityGroupEthertypeConflictWithProtocol",
            message: format!(
                "Ethertype IPv4 is not supported by protocol {}.",
                protocol.clone().unwrap_or_default()
            ),
        });
    }
    let prefix = attrs::string(body, "remote_ip_prefix", 64)?;
    let remote_group = attrs::string(body, "remote_group_id", 64)?;
    if prefix.is_some() && remote_group.is_some() {
        return Err(NetworkError::BadRequest {
            kind: "SecurityGroupRemoteGroupAndRemoteIpPrefix",
            message: "Only remote_ip_prefix or remote_group_id may be provided.".into(),
        });
    }
    let normalized = match &prefix {
        Some(p) => {
            let c =
                Cidr::parse(p, false).map_err(|e| NetworkError::invalid("remote_ip_prefix", e))?;
            let want = if ethertype == "IPv4" { 4 } else { 6 };
            if c.version() != want {
                return Err(NetworkError::BadRequest {
                    kind: "SecurityGroupRuleParameterConflict",
                    message: format!("Conflicting value ethertype {ethertype} for CIDR {p}"),
                });
            }
            Some(c.to_string())
        }
        None => None,
    };
    if let Some(g) = &remote_group {
        let _: SecurityGroup = store::must(conn, g)?;
    }
    let description = attrs::string(body, "description", attrs::DESCRIPTION_MAX)?;
    let prefix = match (&prefix, &normalized) {
        (Some(p), Some(n)) if !p.contains('/') => Some(n.clone()),
        _ => prefix,
    };
    let _ = project;
    Ok(Rule {
        std: Std::new(&sg.std.project_id, description.unwrap_or_default()),
        security_group_id: sg.std.id.clone(),
        direction,
        ethertype,
        protocol,
        port_range_min: min,
        port_range_max: max,
        remote_ip_prefix: prefix,
        remote_group_id: remote_group,
        remote_address_group_id: None,
        normalized_cidr: normalized,
        belongs_to_default_sg: sg.name == "default",
    })
}

fn same(a: &Rule, b: &Rule) -> bool {
    a.security_group_id == b.security_group_id
        && a.direction == b.direction
        && a.ethertype == b.ethertype
        && protocol_number(&a.protocol) == protocol_number(&b.protocol)
        && a.port_range_min == b.port_range_min
        && a.port_range_max == b.port_range_max
        && a.normalized_cidr == b.normalized_cidr
        && a.remote_group_id == b.remote_group_id
}

/// Creates a rule in an open transaction (refusing duplicates).
pub fn create_rule_in(conn: &Connection, caller: &Caller, body: &Object) -> NetResult<Rule> {
    let rule = build_rule(conn, caller, body)?;
    let existing: Vec<Rule> = store::children(conn, &rule.security_group_id)?;
    if let Some(dup) = existing.iter().find(|r| same(r, &rule)) {
        return Err(NetworkError::conflict(
            "SecurityGroupRuleExists",
            format!(
                "Security group rule already exists. Rule id is {}.",
                dup.std.id
            ),
        ));
    }
    quotas::check(conn, &rule.std.project_id, "security_group_rule", 1)?;
    store::insert(conn, &rule)?;
    Ok(rule)
}

pub async fn create_rule(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "security_group_rule")?;
    let rule = s
        .write(move |tx| create_rule_in(tx, &caller, &body))
        .await?;
    Ok(query::respond_one(
        rule_view(&rule)?,
        &Default::default(),
        "security_group_rule",
        StatusCode::CREATED,
    ))
}

pub async fn list_rules(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let items = s
        .read(move |conn| {
            let groups: Vec<SecurityGroup> = store::all(conn)?;
            let rules: Vec<Rule> = store::all(conn)?;
            rules
                .iter()
                .filter(|r| {
                    caller.admin
                        || r.std.project_id == caller.project
                        || groups.iter().any(|g| {
                            g.std.id == r.security_group_id
                                && (g.std.project_id == caller.project || g.shared)
                        })
                })
                .map(rule_view)
                .collect()
        })
        .await?;
    let base = format!(
        "{}/network/v2.0/security-group-rules",
        s.identity.public_url
    );
    query::respond(
        items,
        &query::ListQuery::new(raw),
        "security_group_rules",
        &base,
    )
}

fn visible_rule(conn: &Connection, caller: &Caller, id: &str) -> NetResult<Rule> {
    let rule: Rule = store::must(conn, id)?;
    if caller.admin || rule.std.project_id == caller.project {
        return Ok(rule);
    }
    match visible_group(conn, caller, &rule.security_group_id) {
        Ok(_) => Ok(rule),
        Err(_) => Err(store::not_found::<Rule>(id)),
    }
}

pub async fn show_rule(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let rule = s.read(move |conn| visible_rule(conn, &caller, &id)).await?;
    Ok(query::respond_one(
        rule_view(&rule)?,
        &query::ListQuery::new(raw),
        "security_group_rule",
        StatusCode::OK,
    ))
}

/// Deletes a rule in an open transaction, as
/// `DELETE /security-group-rules/{id}`.
pub fn delete_rule_in(conn: &Connection, caller: &Caller, id: &str) -> NetResult<()> {
    let rule = visible_rule(conn, caller, id)?;
    caller.enforce(
        "delete_security_group_rule",
        &Target::project(rule.std.project_id.clone())
            .with("security_group:project_id", rule.std.project_id.clone()),
    )?;
    store::remove::<Rule>(conn, &rule.std.id)
}

pub async fn delete_rule(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| delete_rule_in(tx, &caller, &id)).await?;
    Ok(crate::http::no_content())
}
