//! Application credential access rules, enforced as keystonemiddleware does.
//!
//! A token made from an application credential that has access rules may
//! only be used for requests that match one rule: the same method, the
//! service type of the API the request goes to, and a path pattern where
//! `*` and `{name}` stand for one path segment and `**` for any number.
//! Paths are relative to the service's mount point (`/compute`, `/image`,
//! `/identity`...), version included, as in Keystone's documentation
//! (`{"service": "compute", "method": "POST", "path": "/v2.1/servers"}`);
//! a pattern written with the mount point is accepted too. Validating a
//! token (`GET /identity/v3/auth/tokens`) is always allowed.

use serde_json::Value;

use super::{IdentityError, IdentityResult};
use crate::db::identity::extensions as ext;

/// One access rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRule {
    pub service: String,
    pub method: String,
    pub path: String,
}

const METHODS: &[&str] = &["DELETE", "GET", "HEAD", "PATCH", "POST", "PUT"];

/// One access rule of a new application credential as sent (Keystone's
/// schema: no other members).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccessRule {
    service: String,
    method: String,
    path: String,
    /// One of the user's stored rules, by id.
    id: Option<String>,
}

/// Checks the `access_rules` of a new application credential (Keystone's
/// schema: method one of the HTTP verbs, path starting with `/` of at most
/// 225 characters, service a non-empty id string) and gives them as they
/// are stored until bound (`bind_to_user`).
pub fn parse_new(rules: Option<Vec<NewAccessRule>>) -> IdentityResult<Value> {
    let mut out = Vec::new();
    for rule in rules.unwrap_or_default() {
        let NewAccessRule {
            service,
            method,
            path,
            id,
        } = rule;
        if service.is_empty() || service.len() > 64 {
            return Err(IdentityError::BadRequest(
                "Invalid access rule: 'service' must be 1 to 64 characters.".into(),
            ));
        }
        if !METHODS.contains(&method.as_str()) {
            return Err(IdentityError::BadRequest(format!(
                "Invalid access rule: 'method' must be one of {METHODS:?}."
            )));
        }
        if !path.starts_with('/') || path.chars().count() > 225 {
            return Err(IdentityError::BadRequest(
                "Invalid access rule: 'path' must start with '/' and have at most 225 characters."
                    .into(),
            ));
        }
        let id = id.unwrap_or_else(super::new_id);
        out.push(serde_json::json!({"id": id, "service": service, "method": method, "path": path}));
    }
    Ok(Value::Array(out))
}

/// Binds the parsed rules of a new application credential (`parse_new`) to
/// the user's stored rules, as Keystone does: a rule named by an id the user
/// owns is that rule (an id of another user's rule is not found), else the
/// user's rule with the same service, path and method is reused, else the
/// rule is stored as a new one of the user's. Returns the rules as they go
/// into the credential, each with its stored id.
pub fn bind_to_user(
    conn: &rusqlite::Connection,
    user_id: &str,
    parsed: &Value,
) -> IdentityResult<Value> {
    let mut out = Vec::new();
    for item in parsed.as_array().map(Vec::as_slice).unwrap_or_default() {
        let field = |key: &str| item.get(key).and_then(Value::as_str).unwrap_or("");
        let id = field("id");
        let by_id = ext::get_access_rule(conn, id)?;
        if let Some(found) = &by_id
            && found.user_id != user_id
        {
            return Err(IdentityError::NotFound(format!(
                "Could not find Access Rule: {id}."
            )));
        }
        let triple = (field("service"), field("path"), field("method"));
        let rule = match by_id {
            Some(found) => found,
            None => match ext::find_access_rule(conn, user_id, triple)? {
                Some(found) => found,
                None => {
                    let rule = ext::StoredAccessRule {
                        id: id.to_string(),
                        user_id: user_id.to_string(),
                        service: triple.0.to_string(),
                        path: triple.1.to_string(),
                        method: triple.2.to_string(),
                    };
                    ext::insert_access_rule(conn, &rule)?;
                    rule
                }
            },
        };
        out.push(rule_json(&rule));
    }
    Ok(Value::Array(out))
}

/// A stored rule as Keystone shows it.
pub fn rule_json(rule: &ext::StoredAccessRule) -> Value {
    serde_json::json!({"id": rule.id, "service": rule.service, "path": rule.path,
        "method": rule.method})
}

/// The rules stored with a credential; an empty list means no restriction.
pub fn from_stored(value: &Value) -> Vec<AccessRule> {
    let Some(items) = value.as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let field = |key: &str| {
                item.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            AccessRule {
                service: field("service"),
                method: field("method"),
                path: field("path"),
            }
        })
        .collect()
}

/// The service types a path's API answers to, and the path below its mount point.
fn service_of(path: &str) -> Option<(&'static [&'static str], &'static str, &str)> {
    const SERVICES: &[(&str, &[&str])] = &[
        ("/identity", &["identity"]),
        ("/compute", &["compute"]),
        ("/image", &["image"]),
        ("/network", &["network"]),
        ("/volume", &["block-storage", "volumev3", "volume"]),
    ];
    SERVICES.iter().find_map(|(mount, types)| {
        let rest = path.strip_prefix(mount)?;
        (rest.is_empty() || rest.starts_with('/')).then_some((*types, *mount, rest))
    })
}

/// True when a request (`method`, full `path` as the client sent it) is
/// allowed by `rules`. No rules means no restriction.
pub fn allows(rules: &[AccessRule], method: &str, path: &str) -> bool {
    if rules.is_empty() {
        return true;
    }
    let Some((types, mount, relative)) = service_of(path) else {
        return false;
    };
    if types == ["identity"] && method == "GET" && relative.ends_with("/v3/auth/tokens") {
        return true;
    }
    rules.iter().any(|rule| {
        rule.method == method
            && types.contains(&rule.service.as_str())
            && (path_matches(relative, &rule.path)
                || (rule.path.starts_with(mount) && path_matches(path, &rule.path)))
    })
}

#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Literal(&'a str),
    /// `*` or `{name}`: one or more characters other than `/`.
    Segment,
    /// `**`: anything, `/` included.
    Any,
}

fn pieces(pattern: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("**") {
            out.push(Piece::Any);
            rest = after;
        } else if let Some(after) = rest.strip_prefix('*') {
            out.push(Piece::Segment);
            rest = after;
        } else if rest.starts_with('{')
            && let Some(end) = rest.find('}')
        {
            out.push(Piece::Segment);
            rest = &rest[end + 1..];
        } else {
            let end = rest
                .char_indices()
                .skip(1)
                .find(|(_, c)| *c == '*' || *c == '{')
                .map_or(rest.len(), |(i, _)| i);
            out.push(Piece::Literal(&rest[..end]));
            rest = &rest[end..];
        }
    }
    out
}

/// Matches a whole path against a pattern (`*`, `{tag}`, `**`).
pub fn path_matches(path: &str, pattern: &str) -> bool {
    fn go(path: &str, pieces: &[Piece<'_>]) -> bool {
        let Some((first, rest)) = pieces.split_first() else {
            return path.is_empty();
        };
        match first {
            Piece::Literal(text) => path.strip_prefix(text).is_some_and(|after| go(after, rest)),
            Piece::Segment => {
                let limit = path.find('/').unwrap_or(path.len());
                (1..=limit)
                    .rev()
                    .filter(|&n| path.is_char_boundary(n))
                    .any(|n| go(&path[n..], rest))
            }
            Piece::Any => (0..=path.len())
                .filter(|&n| path.is_char_boundary(n))
                .any(|n| go(&path[n..], rest)),
        }
    }
    go(path, &pieces(pattern))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(service: &str, method: &str, path: &str) -> AccessRule {
        AccessRule {
            service: service.into(),
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn wildcards_match_as_keystonemiddleware_does() {
        assert!(path_matches("/v2.1/servers", "/v2.1/servers"));
        assert!(!path_matches("/v2.1/servers/x", "/v2.1/servers"));
        assert!(path_matches("/v2.1/servers/abc/ips", "/v2.1/servers/*/ips"));
        assert!(path_matches(
            "/v2.1/servers/abc/ips",
            "/v2.1/servers/{id}/ips"
        ));
        assert!(!path_matches(
            "/v2.1/servers/a/b/ips",
            "/v2.1/servers/*/ips"
        ));
        assert!(!path_matches("/v2.1/servers//ips", "/v2.1/servers/*/ips"));
        assert!(path_matches("/v2.1/servers/a/b/ips", "/v2.1/servers/**"));
        assert!(path_matches("/v2/images", "/v2/images**"));
        assert!(path_matches("/v2/images/x/file", "/v2/**/file"));
    }

    #[test]
    fn requests_are_matched_by_service_method_and_path() {
        let rules = vec![rule("image", "GET", "/v2/images")];
        assert!(allows(&rules, "GET", "/image/v2/images"));
        assert!(!allows(&rules, "POST", "/image/v2/images"));
        assert!(!allows(&rules, "GET", "/image/v2/images/abc"));
        assert!(!allows(&rules, "GET", "/compute/v2/images"));
        assert!(!allows(&rules, "GET", "/imagev2/images"));
        assert!(
            allows(&rules, "GET", "/identity/v3/auth/tokens"),
            "validation is always allowed"
        );
        assert!(!allows(&rules, "DELETE", "/identity/v3/auth/tokens"));
        assert!(allows(&[], "DELETE", "/anything"));
        let full = vec![rule("compute", "GET", "/compute/v2.1/servers")];
        assert!(allows(&full, "GET", "/compute/v2.1/servers"));
    }

    #[test]
    fn new_rules_are_checked() {
        let read = |v: serde_json::Value| {
            crate::http::body::decode::<Vec<NewAccessRule>>(v).map(|rules| parse_new(Some(rules)))
        };
        let ok = serde_json::json!([{"service": "image", "method": "GET", "path": "/v2/images"}]);
        let parsed = read(ok).expect("declared").expect("valid");
        assert!(parsed[0]["id"].is_string());
        assert_eq!(parse_new(None).expect("none"), serde_json::json!([]));
        for bad in [
            serde_json::json!([{"service": "image", "method": "FETCH", "path": "/"}]),
            serde_json::json!([{"service": "image", "method": "GET", "path": "v2"}]),
            serde_json::json!([{"service": "", "method": "GET", "path": "/"}]),
        ] {
            assert!(read(bad.clone()).expect("declared").is_err(), "{bad}");
        }
        for refused in [
            serde_json::json!([{"service": "image", "method": "GET"}]),
            serde_json::json!([{"service": "image", "method": "GET", "path": "/", "x": 1}]),
            serde_json::json!({"service": "image"}),
        ] {
            assert!(read(refused.clone()).is_err(), "{refused}");
        }
    }
}
