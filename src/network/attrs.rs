//! Attribute checks of request bodies, worded as Neutron's validators.

use serde_json::Value;

use super::{NetResult, NetworkError};
use crate::http::body::Object;

/// Neutron's longest name and description.
pub const NAME_MAX: usize = 255;
pub const DESCRIPTION_MAX: usize = 255;

/// Refuses attributes the resource does not have (Neutron: 400
/// "Unrecognized attribute(s)").
pub fn known(body: &Object, allowed: &[&str]) -> NetResult<()> {
    let unknown: Vec<&str> = body
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(NetworkError::bad(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )))
    }
}

/// An optional string of at most `max` characters (`null` is absent).
pub fn string(body: &Object, key: &str, max: usize) -> NetResult<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(NetworkError::invalid(
            key,
            format!("'{s}' exceeds maximum length of {max}"),
        )),
        Some(other) => Err(NetworkError::invalid(
            key,
            format!("'{other}' is not a valid string"),
        )),
    }
}

/// An optional boolean; Neutron also takes "true"/"false" strings and 0/1.
pub fn boolean(body: &Object, key: &str) -> NetResult<Option<bool>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s == "1" => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s == "0" => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(other) => Err(NetworkError::invalid(
            key,
            format!("'{other}' cannot be converted to boolean"),
        )),
    }
}

/// An optional integer (numbers or numeric strings) within bounds.
pub fn integer(body: &Object, key: &str, min: i64, max: i64) -> NetResult<Option<i64>> {
    let n = match body.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Some(n) => Err(NetworkError::invalid(
            key,
            format!("'{n}' is not in range {min} through {max}"),
        )),
        None => Err(NetworkError::invalid(
            key,
            format!(
                "'{}' is not an integer",
                body.get(key).unwrap_or(&Value::Null)
            ),
        )),
    }
}

/// An optional list of strings (at most `max_items`, each at most 255).
pub fn string_list(body: &Object, key: &str, max_items: usize) -> NetResult<Option<Vec<String>>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= max_items => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) if s.len() <= 255 => out.push(s.clone()),
                    other => {
                        return Err(NetworkError::invalid(
                            key,
                            format!("'{other}' is not a valid string"),
                        ));
                    }
                }
            }
            Ok(Some(out))
        }
        Some(Value::Array(_)) => Err(NetworkError::invalid(
            key,
            format!("more than {max_items} items"),
        )),
        Some(other) => Err(NetworkError::invalid(
            key,
            format!("'{other}' is not a list"),
        )),
    }
}

/// An optional list of objects (at most `max_items`).
pub fn object_list(body: &Object, key: &str, max_items: usize) -> NetResult<Option<Vec<Object>>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.len() <= max_items => items
            .iter()
            .map(|item| match item {
                Value::Object(map) => Ok(map.clone()),
                other => Err(NetworkError::invalid(
                    key,
                    format!("'{other}' is not a dictionary"),
                )),
            })
            .collect::<NetResult<Vec<_>>>()
            .map(Some),
        Some(Value::Array(_)) => Err(NetworkError::invalid(
            key,
            format!("more than {max_items} items"),
        )),
        Some(other) => Err(NetworkError::invalid(
            key,
            format!("'{other}' is not a list"),
        )),
    }
}

/// `name` and `description` of a body (each at most 255 characters).
pub fn name_description(body: &Object) -> NetResult<(Option<String>, Option<String>)> {
    Ok((
        string(body, "name", NAME_MAX)?,
        string(body, "description", DESCRIPTION_MAX)?,
    ))
}

/// A UUID-shaped id (Neutron validates ids it is given).
pub fn uuid(body: &Object, key: &str) -> NetResult<Option<String>> {
    match string(body, key, 64)? {
        Some(s) if uuid::Uuid::parse_str(&s).is_ok() => Ok(Some(s)),
        Some(s) => Err(NetworkError::invalid(
            key,
            format!("'{s}' is not a valid UUID"),
        )),
        None => Ok(None),
    }
}
