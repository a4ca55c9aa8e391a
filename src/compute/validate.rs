//! Validators of server fields that create (`create.rs`), update and
//! tags (`servers.rs`) and rebuild share, applied to the members of their
//! declared request types, with Nova's 400 texts. A leaf: it imports
//! neither of them.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ComputeError, ComputeResult, Mv};

pub fn last_segment(text: &str) -> String {
    text.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

/// The name of a server create: 1–255 characters, not only spaces
/// (leading and trailing spaces are kept, as this cloud always took them).
pub fn checked_create_name(name: String) -> ComputeResult<String> {
    if name.trim().is_empty() || name.chars().count() > 255 {
        let v = Value::String(name);
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute name. Value: {v}. {v} is not a valid name (1-255 characters, not only spaces)"
        )));
    }
    Ok(name)
}

/// A server name already read as a string (a declared body's member):
/// 1–255 characters, not only spaces, no leading or trailing space.
pub fn checked_name(name: String) -> ComputeResult<String> {
    let name = checked_create_name(name)?;
    if name.trim() != name.as_str() {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute name. Value: {name}. '{name}' does not match '^(?! )[\\S ]*(?<! )$'"
        )));
    }
    Ok(name)
}

/// A string member of at most `max` characters (`None` stays `None`).
pub fn checked_len(key: &str, text: Option<String>, max: usize) -> ComputeResult<Option<String>> {
    match text {
        Some(t) if t.chars().count() > max => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value is too long (at most {max} characters)."
        ))),
        other => Ok(other),
    }
}

/// `accessIPv4`: empty, or an IPv4 address.
pub fn checked_ipv4(ip: String) -> ComputeResult<String> {
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute accessIPv4. Value: {ip}. '{ip}' is not a 'ipv4'"
        )));
    }
    Ok(ip)
}

/// `accessIPv6`: empty, or an IPv6 address (kept in its canonical form).
pub fn checked_ipv6(ip: String) -> ComputeResult<String> {
    if ip.is_empty() {
        return Ok(ip);
    }
    match ip.parse::<std::net::Ipv6Addr>() {
        Ok(a) => Ok(a.to_string()),
        Err(_) => Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute accessIPv6. Value: {ip}. '{ip}' is not a 'ipv6'"
        ))),
    }
}

/// Metadata already read as strings (a declared body's member `key`):
/// keys of 1–255 characters, values of at most 255.
pub fn checked_metadata(
    map: BTreeMap<String, String>,
    key: &str,
) -> ComputeResult<BTreeMap<String, String>> {
    for (k, text) in &map {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Metadata keys must be 1-255 characters: '{k}'"
            )));
        }
        if text.chars().count() > 255 {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Value for '{k}' is too long"
            )));
        }
    }
    Ok(map)
}

/// Tags: strings of 1–60 characters without '/' or ','; at most 50.
pub fn check_tag(tag: &str) -> ComputeResult<()> {
    if tag.is_empty() || tag.chars().count() > 60 || tag.contains('/') || tag.contains(',') {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute tags. Value: {tag}. '{tag}' is not a valid tag"
        )));
    }
    Ok(())
}

pub const MAX_TAGS: usize = 50;

/// Tags already read as strings: each valid, duplicates dropped, at most
/// [`MAX_TAGS`].
pub fn checked_tags(given: Vec<String>) -> ComputeResult<Vec<String>> {
    let mut tags: Vec<String> = Vec::new();
    for tag in given {
        check_tag(&tag)?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute tags. The number of tags exceeds the per-server limit {MAX_TAGS}"
        )));
    }
    Ok(tags)
}

pub fn bool_like(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
            "false" | "0" | "no" | "off" | "f" | "n" | "" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|v| v != 0),
        Value::Null => Some(false),
        _ => None,
    }
}

/// A hostname from a display name, as Nova's `sanitize_hostname` makes it:
/// characters beyond U+00FF dropped, cut to 63 characters, space, `_` and
/// `.` made `-`, anything else but letters, digits and `-` dropped, lower
/// case, `-` trimmed from both ends. Stricter than Nova in one point: the
/// Latin-1 letters Nova keeps (`é`) are dropped too, so that the result is
/// always an RFC 1123 host name. Empty: `Server-<uuid>`, as Nova names it.
pub fn sanitize_hostname(name: &str, server_id: &str) -> String {
    let cut: String = name
        .chars()
        .filter(|c| u32::from(*c) <= 0xFF)
        .take(63)
        .collect();
    let host: String = cut
        .chars()
        .filter_map(|c| match c {
            ' ' | '_' | '.' => Some('-'),
            c if c.is_ascii_alphanumeric() || c == '-' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let host = host.trim_matches(['-', '.']);
    if host.is_empty() {
        format!("Server-{server_id}")
    } else {
        host.to_string()
    }
}

/// Nova's `hostname` schema (2.90–2.93): an RFC 1123 host name, 2–63 characters.
const HOSTNAME_PATTERN: &str = "^[a-zA-Z0-9]+[a-zA-Z0-9-]*[a-zA-Z0-9]+$";
/// Nova's `fqdn` schema (2.94+): 1–255 of letters, digits, `-`, `.` and `_`.
const FQDN_PATTERN: &str = "^[a-zA-Z0-9-._]*$";

/// A `hostname` already read as a string, checked as Nova's schema for the
/// microversion checks it.
pub fn checked_hostname(mv: Mv, text: String) -> ComputeResult<String> {
    let invalid = |value: &dyn std::fmt::Display, why: String| {
        ComputeError::BadRequest(format!(
            "Invalid input for field/attribute hostname. Value: {value}. {why}"
        ))
    };
    let fqdn = mv.at_least(94);
    let fits_pattern = if fqdn {
        text.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    } else {
        let bytes = text.as_bytes();
        bytes.len() >= 2
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    let (min, max, pattern) = if fqdn {
        (1, 255, FQDN_PATTERN)
    } else {
        (2, 63, HOSTNAME_PATTERN)
    };
    let length = text.chars().count();
    if !fits_pattern {
        return Err(invalid(
            &text,
            format!("'{text}' does not match '{pattern}'"),
        ));
    }
    if length < min {
        return Err(invalid(&text, format!("'{text}' is too short")));
    }
    if length > max {
        return Err(invalid(&text, format!("'{text}' is too long")));
    }
    Ok(text)
}
