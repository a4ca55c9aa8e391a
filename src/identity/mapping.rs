//! Keystone's federation mapping engine: remote attributes (an IdP's claims)
//! through a mapping's rules to a local user, groups and projects. A leaf:
//! no HTTP, no database.
//!
//! A rule applies when every one of its `remote` requirements holds: the
//! attribute (`type`) is present and, with `any_one_of`/`not_any_of`, one
//! (none) of its values is listed (`regex: true` makes the list regular
//! expressions, searched anywhere in the value). A requirement without those
//! adds the attribute's values, filtered by `whitelist`/`blacklist`, to the
//! direct maps that `{0}`, `{1}`… in the rule's `local` part are replaced
//! with (one value as itself, several as a list). The locals of every rule
//! that applies are merged: the first `user`, every `group` (by id, or name
//! and domain), `groups` (names, with a `domain`), `group_ids`, and the
//! `projects` to create. Values of an attribute are split on `;`, as
//! Keystone splits the environment Apache gives it.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Why a mapping is refused or does not map a login.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MappingError {
    /// The mapping does not follow Keystone's schema.
    #[error("Invalid mapping: {0}")]
    Invalid(String),
    /// No rule applied, or what applied names no user.
    #[error(
        "Could not map any federated user properties to identity values. Check debug logs or the mapping used for additional details."
    )]
    NoMatch,
    /// A local part refers to a remote match that does not exist.
    #[error(
        "Local section in mapping {0} refers to a remote match that doesn't exist (e.g. {{0}} in a local section)."
    )]
    DirectMapping(String),
    /// A `groups` local without the `domain` it needs.
    #[error("Invalid rule: {0}. Both 'groups' and 'domain' keywords must be specified.")]
    GroupsWithoutDomain(String),
}

/// Whether the mapped user is a shadow user made on first login or an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserType {
    Ephemeral,
    Local,
}

/// A domain named by id or by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DomainRef {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MappedUser {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub domain: Option<DomainRef>,
    pub kind: UserType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupName {
    pub name: String,
    pub domain: DomainRef,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MappedProject {
    pub name: String,
    pub roles: Vec<String>,
    pub domain: Option<DomainRef>,
}

/// What a login maps to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub user: MappedUser,
    pub group_ids: Vec<String>,
    pub group_names: Vec<GroupName>,
    pub projects: Vec<MappedProject>,
}

/// The schema versions Keystone knows.
pub const SCHEMA_VERSIONS: [&str; 3] = ["1.0", "2.0", "3.0"];

fn invalid(message: impl Into<String>) -> MappingError {
    MappingError::Invalid(message.into())
}

fn check_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), MappingError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(invalid(format!(
            "Additional properties are not allowed ('{extra}' was unexpected) in {what}"
        ))),
        None => Ok(()),
    }
}

fn check_string(obj: &Map<String, Value>, key: &str, what: &str) -> Result<(), MappingError> {
    match obj.get(key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(other) => Err(invalid(format!(
            "{other} is not of type 'string' ('{key}' in {what})"
        ))),
    }
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, MappingError> {
    value
        .as_object()
        .ok_or_else(|| invalid(format!("{value} is not of type 'object' ({what})")))
}

fn check_domain(value: &Value) -> Result<(), MappingError> {
    let domain = object(value, "domain")?;
    check_keys(domain, &["id", "name"], "domain")?;
    check_string(domain, "id", "domain")?;
    check_string(domain, "name", "domain")
}

fn check_local(value: &Value, version: &str) -> Result<(), MappingError> {
    let local = object(value, "local")?;
    let mut allowed = vec!["user", "projects", "group", "groups", "group_ids", "domain"];
    if version == "3.0" {
        allowed.push("projects_json");
    }
    check_keys(local, &allowed, "local")?;
    if let Some(user) = local.get("user") {
        let user = object(user, "user")?;
        check_keys(user, &["id", "name", "email", "domain", "type"], "user")?;
        for key in ["id", "name", "email", "type"] {
            check_string(user, key, "user")?;
        }
        if let Some(kind) = user.get("type").and_then(Value::as_str)
            && !matches!(kind, "ephemeral" | "local")
        {
            return Err(invalid(format!(
                "'{kind}' is not one of ['ephemeral', 'local']"
            )));
        }
        if let Some(domain) = user.get("domain") {
            check_domain(domain)?;
        }
    }
    if let Some(group) = local.get("group") {
        let group = object(group, "group")?;
        let by_id = group.len() == 1 && group.get("id").is_some_and(Value::is_string);
        let by_name = group.len() == 2
            && group.get("name").is_some_and(Value::is_string)
            && group.get("domain").is_some_and(|d| check_domain(d).is_ok());
        if !(by_id || by_name) {
            return Err(invalid(format!(
                "{} is not valid under any of the given schemas (a group is {{\"id\"}} or {{\"name\", \"domain\"}})",
                Value::Object(group.clone())
            )));
        }
    }
    for key in ["groups", "group_ids", "projects_json"] {
        check_string(local, key, "local")?;
    }
    if let Some(domain) = local.get("domain") {
        check_domain(domain)?;
    }
    if let Some(projects) = local.get("projects") {
        let projects = projects
            .as_array()
            .ok_or_else(|| invalid("'projects' is not of type 'array'"))?;
        for project in projects {
            let project = object(project, "project")?;
            let mut allowed = vec!["name", "roles"];
            if version != "1.0" {
                allowed.push("domain");
            }
            check_keys(project, &allowed, "project")?;
            if !project.get("name").is_some_and(Value::is_string) {
                return Err(invalid("'name' is a required string property of a project"));
            }
            if let Some(domain) = project.get("domain") {
                check_domain(domain)?;
            }
            let roles = project
                .get("roles")
                .and_then(Value::as_array)
                .ok_or_else(|| invalid("'roles' is a required array property of a project"))?;
            for role in roles {
                let role = object(role, "role")?;
                check_keys(role, &["name"], "role")?;
                if !role.get("name").is_some_and(Value::is_string) {
                    return Err(invalid("'name' is a required string property of a role"));
                }
            }
        }
    }
    Ok(())
}

const EVAL_KEYS: [&str; 4] = ["any_one_of", "not_any_of", "blacklist", "whitelist"];

fn check_remote(value: &Value) -> Result<(), MappingError> {
    let remote = object(value, "remote")?;
    if !remote.get("type").is_some_and(Value::is_string) {
        return Err(invalid("'type' is a required string property of a remote"));
    }
    let evals: Vec<&str> = EVAL_KEYS
        .into_iter()
        .filter(|k| remote.contains_key(*k))
        .collect();
    let valid = match evals.as_slice() {
        [] => remote.len() == 1,
        [eval] => {
            remote.get(*eval).is_some_and(Value::is_array)
                && remote.get("regex").is_none_or(Value::is_boolean)
                && remote
                    .keys()
                    .all(|k| k == "type" || k == "regex" || k == eval)
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{value} is not valid under any of the given schemas"
        )))
    }
}

/// Checks a mapping (`{"rules": [...], "schema_version": ...}`) against
/// Keystone's schema for its version.
pub fn validate(mapping: &Value, version: &str) -> Result<(), MappingError> {
    if !SCHEMA_VERSIONS.contains(&version) {
        return Err(invalid(format!(
            "schema_version '{version}' is not one of {SCHEMA_VERSIONS:?}"
        )));
    }
    let rules = mapping
        .get("rules")
        .ok_or_else(|| invalid("'rules' is a required property"))?
        .as_array()
        .ok_or_else(|| invalid("'rules' is not of type 'array'"))?;
    if rules.is_empty() {
        return Err(invalid("[] is too short"));
    }
    for rule in rules {
        let rule = object(rule, "rule")?;
        check_keys(rule, &["local", "remote"], "rule")?;
        let local = rule
            .get("local")
            .ok_or_else(|| invalid("'local' is a required property"))?
            .as_array()
            .ok_or_else(|| invalid("'local' is not of type 'array'"))?;
        let remote = rule
            .get("remote")
            .ok_or_else(|| invalid("'remote' is a required property"))?
            .as_array()
            .ok_or_else(|| invalid("'remote' is not of type 'array'"))?;
        if remote.is_empty() {
            return Err(invalid("[] is too short ('remote')"));
        }
        for item in local {
            check_local(item, version)?;
        }
        for item in remote {
            check_remote(item)?;
        }
    }
    Ok(())
}

/// An IdP's claims as the attributes rules see: strings as they are,
/// numbers and booleans as text, lists of those joined with `;`. Each claim
/// is also offered as `OIDC-<claim>`, the name mod_auth_openidc gives it,
/// so mappings written for Keystone behind Apache work unchanged.
pub fn attributes_from_claims(claims: &Map<String, Value>) -> HashMap<String, String> {
    fn text(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().filter_map(text).collect();
                (!parts.is_empty()).then(|| parts.join(";"))
            }
            _ => None,
        }
    }
    let mut out = HashMap::new();
    for (name, value) in claims {
        if let Some(text) = text(value) {
            out.insert(format!("OIDC-{name}"), text.clone());
            out.insert(name.clone(), text);
        }
    }
    out
}

/// The remote matches a rule's local part is formatted with.
type DirectMaps = Vec<Vec<String>>;

/// Python's `repr` of a list of strings, which Keystone puts in for a
/// multi-valued match and reads back with `ast.literal_eval`.
fn list_repr(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| {
            if v.contains('\'') && !v.contains('"') {
                format!("\"{}\"", v.replace('\\', "\\\\"))
            } else {
                format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Reads a list written by [`list_repr`] back; anything else is one value.
fn literal_list(value: &str) -> Vec<String> {
    fn parse(value: &str) -> Option<Vec<String>> {
        let inner = value.trim().strip_prefix('[')?.strip_suffix(']')?;
        let mut out = Vec::new();
        let mut chars = inner.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(quote) = chars.next() else {
                return Some(out);
            };
            if quote != '\'' && quote != '"' {
                return None;
            }
            let mut item = String::new();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    c if c == quote => break,
                    c => item.push(c),
                }
            }
            out.push(item);
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                None => return Some(out),
                Some(',') => {}
                Some(_) => return None,
            }
        }
    }
    parse(value).unwrap_or_else(|| vec![value.to_string()])
}

/// `str.format(*direct_maps)` for `{0}`, `{1}`… and `{}`, `{{` and `}}`.
fn format_with(
    template: &str,
    maps: &DirectMaps,
    mapping_id: &str,
) -> Result<String, MappingError> {
    let missing = || MappingError::DirectMapping(mapping_id.to_string());
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    let mut auto = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut field = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => field.push(c),
                        None => return Err(missing()),
                    }
                }
                let index = if field.is_empty() {
                    auto += 1;
                    auto - 1
                } else {
                    field.parse::<usize>().map_err(|_| missing())?
                };
                let values = maps.get(index).ok_or_else(missing)?;
                match values.as_slice() {
                    [one] => out.push_str(one),
                    many => out.push_str(&list_repr(many)),
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn substitute(value: &Value, maps: &DirectMaps, mapping_id: &str) -> Result<Value, MappingError> {
    Ok(match value {
        Value::String(s) => Value::String(format_with(s, maps, mapping_id)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| substitute(item, maps, mapping_id))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), substitute(v, maps, mapping_id)?)))
                .collect::<Result<_, MappingError>>()?,
        ),
        other => other.clone(),
    })
}

/// Filters `values` by the requirement's list: (matched, the rest).
fn partition(list: &[Value], values: &[String], regex: bool) -> (Vec<String>, Vec<String>) {
    let wanted: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    let patterns: Vec<regex::Regex> = if regex {
        wanted
            .iter()
            .filter_map(|p| regex::Regex::new(p).ok())
            .collect()
    } else {
        Vec::new()
    };
    let hit = |v: &String| {
        if regex {
            patterns.iter().any(|p| p.is_match(v))
        } else {
            wanted.contains(&v.as_str())
        }
    };
    let mut matched = Vec::new();
    let mut rest = Vec::new();
    for v in values {
        if hit(v) {
            if !matched.contains(v) {
                matched.push(v.clone());
            }
        } else if !rest.contains(v) {
            rest.push(v.clone());
        }
    }
    (matched, rest)
}

/// The direct maps of a rule whose requirements all hold, or None.
fn verify(requirements: &[Value], assertion: &HashMap<String, Vec<String>>) -> Option<DirectMaps> {
    let mut maps = Vec::new();
    for requirement in requirements {
        let kind = requirement.get("type")?.as_str()?;
        let values = assertion.get(kind).filter(|v| !v.is_empty())?;
        let regex = requirement
            .get("regex")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let list = |key: &str| requirement.get(key).and_then(Value::as_array);
        if let Some(any) = list("any_one_of") {
            if partition(any, values, regex).0.is_empty() {
                return None;
            }
            continue;
        }
        if let Some(none) = list("not_any_of") {
            if !partition(none, values, regex).0.is_empty() {
                return None;
            }
            continue;
        }
        let kept = if let Some(black) = list("blacklist") {
            partition(black, values, regex).1
        } else if let Some(white) = list("whitelist") {
            partition(white, values, regex).0
        } else {
            values.clone()
        };
        maps.push(kept);
    }
    Some(maps)
}

fn domain_ref(value: Option<&Value>) -> Option<DomainRef> {
    let obj = value?.as_object()?;
    let field = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    Some(DomainRef {
        id: field("id"),
        name: field("name"),
    })
}

/// Maps a login's attributes (`name -> value`, values split on `;`) through
/// a mapping's rules.
pub fn process(
    mapping_id: &str,
    rules: &Value,
    attributes: &HashMap<String, String>,
) -> Result<Mapped, MappingError> {
    let assertion: HashMap<String, Vec<String>> = attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.split(';').map(str::to_string).collect()))
        .collect();
    let mut locals: Vec<Value> = Vec::new();
    for rule in rules.as_array().map(Vec::as_slice).unwrap_or_default() {
        let remote = rule
            .get("remote")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let Some(maps) = verify(remote, &assertion) else {
            continue;
        };
        for local in rule
            .get("local")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            locals.push(if maps.is_empty() {
                local.clone()
            } else {
                substitute(local, &maps, mapping_id)?
            });
        }
    }
    if locals.is_empty() {
        return Err(MappingError::NoMatch);
    }
    let mut user: Option<&Map<String, Value>> = None;
    let mut group_ids: Vec<String> = Vec::new();
    let mut group_names: Vec<GroupName> = Vec::new();
    let mut projects = Vec::new();
    let mut add_name = |g: GroupName| {
        if !group_names.contains(&g) {
            group_names.push(g);
        }
    };
    for local in &locals {
        if user.is_none() {
            user = local.get("user").and_then(Value::as_object);
        }
        if let Some(group) = local.get("group") {
            if let Some(id) = group.get("id").and_then(Value::as_str) {
                group_ids.push(id.to_string());
            } else if let (Some(name), Some(domain)) = (
                group.get("name").and_then(Value::as_str),
                domain_ref(group.get("domain")),
            ) {
                add_name(GroupName {
                    name: name.to_string(),
                    domain,
                });
            }
        }
        if let Some(groups) = local.get("groups").and_then(Value::as_str) {
            let domain = domain_ref(local.get("domain"))
                .ok_or_else(|| MappingError::GroupsWithoutDomain(local.to_string()))?;
            for name in literal_list(groups) {
                add_name(GroupName {
                    name,
                    domain: domain.clone(),
                });
            }
        }
        if let Some(ids) = local.get("group_ids").and_then(Value::as_str) {
            group_ids.extend(literal_list(ids));
        }
        if let Some(list) = local.get("projects").and_then(Value::as_array) {
            projects = list
                .iter()
                .filter_map(|p| {
                    Some(MappedProject {
                        name: p.get("name")?.as_str()?.to_string(),
                        roles: p
                            .get("roles")?
                            .as_array()?
                            .iter()
                            .filter_map(|r| r.get("name")?.as_str().map(str::to_string))
                            .collect(),
                        domain: domain_ref(p.get("domain")),
                    })
                })
                .collect();
        }
    }
    group_ids.sort();
    group_ids.dedup();
    let field = |k: &str| {
        user.and_then(|u| u.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let kind = match field("type").as_deref() {
        Some("local") => UserType::Local,
        _ => UserType::Ephemeral,
    };
    Ok(Mapped {
        user: MappedUser {
            id: field("id"),
            name: field("name"),
            email: field("email"),
            domain: domain_ref(user.and_then(|u| u.get("domain"))),
            kind,
        },
        group_ids,
        group_names,
        projects,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(rules: Value, pairs: &[(&str, &str)]) -> Result<Mapped, MappingError> {
        validate(&json!({ "rules": rules }), "1.0").expect("valid mapping");
        process("m", &rules, &attrs(pairs))
    }

    #[test]
    fn direct_maps_fill_the_user_and_default_to_ephemeral() {
        let rules = json!([{
            "local": [{"user": {"name": "{0}", "email": "{1}"}}],
            "remote": [{"type": "preferred_username"}, {"type": "email"}]
        }]);
        let mapped = run(rules, &[("preferred_username", "bob"), ("email", "b@x")]).expect("maps");
        assert_eq!(mapped.user.name.as_deref(), Some("bob"));
        assert_eq!(mapped.user.email.as_deref(), Some("b@x"));
        assert_eq!(mapped.user.kind, UserType::Ephemeral);
        assert!(mapped.group_ids.is_empty());
    }

    #[test]
    fn a_rule_needs_every_remote_attribute() {
        let rules = json!([{
            "local": [{"user": {"name": "{0}"}}],
            "remote": [{"type": "sub"}, {"type": "missing"}]
        }]);
        assert_eq!(run(rules, &[("sub", "x")]), Err(MappingError::NoMatch));
    }

    #[test]
    fn any_one_of_and_not_any_of_gate_a_rule() {
        let rules = json!([
            {"local": [{"user": {"name": "{0}"}}], "remote": [{"type": "sub"}]},
            {"local": [{"group": {"id": "admins"}}],
             "remote": [{"type": "groups", "any_one_of": ["admin", "ops"]}]},
            {"local": [{"group": {"id": "guests"}}],
             "remote": [{"type": "groups", "not_any_of": ["staff"]}]}
        ]);
        let mapped = run(rules.clone(), &[("sub", "u"), ("groups", "dev;ops")]).expect("maps");
        assert_eq!(mapped.group_ids, ["admins", "guests"]);
        let mapped = run(rules, &[("sub", "u"), ("groups", "staff")]).expect("maps");
        assert!(mapped.group_ids.is_empty());
    }

    #[test]
    fn regex_requirements_search_the_values() {
        let rules = json!([
            {"local": [{"user": {"name": "{0}"}, "group": {"id": "g"}}],
             "remote": [{"type": "sub"}, {"type": "email", "any_one_of": [".*@example\\.org$"], "regex": true}]}
        ]);
        assert!(run(rules.clone(), &[("sub", "a"), ("email", "a@example.org")]).is_ok());
        assert_eq!(
            run(rules, &[("sub", "a"), ("email", "a@example.com")]),
            Err(MappingError::NoMatch)
        );
    }

    #[test]
    fn whitelist_and_blacklist_filter_group_names() {
        let rules = json!([
            {"local": [{"user": {"name": "{0}"}}, {"groups": "{1}", "domain": {"id": "d"}}],
             "remote": [{"type": "sub"}, {"type": "groups", "whitelist": ["dev", "ops"]}]}
        ]);
        let mapped = run(rules, &[("sub", "u"), ("groups", "dev;ops;hr")]).expect("maps");
        let names: Vec<&str> = mapped.group_names.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["dev", "ops"]);
        assert_eq!(mapped.group_names[0].domain.id.as_deref(), Some("d"));

        let rules = json!([
            {"local": [{"user": {"name": "{0}"}}, {"groups": "{1}", "domain": {"name": "D"}}],
             "remote": [{"type": "sub"}, {"type": "groups", "blacklist": ["hr"]}]}
        ]);
        let mapped = run(rules, &[("sub", "u"), ("groups", "hr;it")]).expect("maps");
        assert_eq!(mapped.group_names.len(), 1);
        assert_eq!(mapped.group_names[0].name, "it");
    }

    #[test]
    fn groups_need_a_domain() {
        let rules = json!([
            {"local": [{"user": {"name": "{0}"}}, {"groups": "{0}"}], "remote": [{"type": "sub"}]}
        ]);
        assert!(matches!(
            run(rules, &[("sub", "u")]),
            Err(MappingError::GroupsWithoutDomain(_))
        ));
    }

    #[test]
    fn group_by_name_group_ids_and_local_users() {
        let rules = json!([
            {"local": [
                {"user": {"name": "{0}", "domain": {"name": "Default"}, "type": "local"}},
                {"group": {"name": "devs", "domain": {"id": "default"}}},
                {"group_ids": "{1}"}
             ],
             "remote": [{"type": "sub"}, {"type": "gid"}]}
        ]);
        let mapped = run(rules, &[("sub", "alice"), ("gid", "a;b")]).expect("maps");
        assert_eq!(mapped.user.kind, UserType::Local);
        assert_eq!(
            mapped.user.domain.as_ref().and_then(|d| d.name.as_deref()),
            Some("Default")
        );
        assert_eq!(mapped.group_names[0].name, "devs");
        assert_eq!(mapped.group_ids, ["a", "b"]);
    }

    #[test]
    fn projects_are_mapped_with_their_roles() {
        let rules = json!([
            {"local": [{"user": {"name": "{0}"}, "projects": [{"name": "p-{0}", "roles": [{"name": "member"}]}]}],
             "remote": [{"type": "sub"}]}
        ]);
        let mapped = run(rules, &[("sub", "u")]).expect("maps");
        assert_eq!(mapped.projects[0].name, "p-u");
        assert_eq!(mapped.projects[0].roles, ["member"]);
    }

    #[test]
    fn a_local_part_cannot_refer_to_a_missing_match() {
        let rules = json!([{"local": [{"user": {"name": "{1}"}}], "remote": [{"type": "sub"}]}]);
        assert_eq!(
            run(rules, &[("sub", "u")]),
            Err(MappingError::DirectMapping("m".into()))
        );
    }

    #[test]
    fn the_schema_is_keystones() {
        for bad in [
            json!({}),
            json!({"rules": []}),
            json!({"rules": [{"local": []}]}),
            json!({"rules": [{"local": [], "remote": []}]}),
            json!({"rules": [{"local": [], "remote": [{"type": "a"}], "extra": 1}]}),
            json!({"rules": [{"local": [{"bogus": 1}], "remote": [{"type": "a"}]}]}),
            json!({"rules": [{"local": [{"user": {"type": "other"}}], "remote": [{"type": "a"}]}]}),
            json!({"rules": [{"local": [{"group": {"name": "x"}}], "remote": [{"type": "a"}]}]}),
            json!({"rules": [{"local": [], "remote": [{"type": "a", "any_one_of": ["x"], "not_any_of": ["y"]}]}]}),
            json!({"rules": [{"local": [], "remote": [{"type": "a", "regex": true}]}]}),
            json!({"rules": [{"local": [], "remote": [{"any_one_of": ["x"]}]}]}),
        ] {
            assert!(validate(&bad, "1.0").is_err(), "{bad}");
        }
        let good = json!({"rules": [{"local": [{"user": {"name": "{0}"}}],
            "remote": [{"type": "a", "any_one_of": ["x"], "regex": false}]}]});
        assert!(validate(&good, "1.0").is_ok());
        assert!(validate(&good, "9.9").is_err());
    }

    #[test]
    fn claims_become_attributes() {
        let claims = json!({"sub": "u", "groups": ["a", "b"], "email_verified": true, "n": 3});
        let attributes = attributes_from_claims(claims.as_object().expect("object"));
        assert_eq!(attributes["groups"], "a;b");
        assert_eq!(attributes["OIDC-sub"], "u");
        assert_eq!(attributes["email_verified"], "true");
        assert_eq!(attributes["n"], "3");
    }

    #[test]
    fn list_values_round_trip() {
        let values = vec!["a'b".to_string(), "c".to_string()];
        assert_eq!(literal_list(&list_repr(&values)), values);
        assert_eq!(literal_list("plain"), ["plain"]);
    }
}
