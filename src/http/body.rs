//! Request bodies as JSON objects: one parser and one set of field checks
//! for every service. What went wrong comes back as a [`BodyError`]; each
//! service turns it into its own error with the wording its OpenStack
//! counterpart uses (Keystone, Nova and Glance phrase the same mistakes
//! differently, and clients and tempest match on the text).
//!
//! A resource's request is a declared serde type read with [`decode`]: serde's
//! own errors (a missing field, a wrong type, an unknown field of a
//! `deny_unknown_fields` struct, a value a field's type refuses) become the
//! same [`BodyError`]s, named by the member's path (`server.flavorRef`), so a
//! service has one wording for both.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A JSON object as a request body or a member of one.
pub type Object = Map<String, Value>;

/// What is wrong with a request body, before a service words it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON; the parser's message.
    #[error("malformed JSON in the request body: {0}")]
    Malformed(String),
    /// The body is JSON but not an object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
    /// A member that must be an object is something else.
    #[error("'{0}' must be an object")]
    MemberNotAnObject(String),
    /// A required member is absent.
    #[error("'{0}' is a required property")]
    Missing(String),
    /// A member has the wrong JSON type (`expected`: "string", "boolean").
    #[error("'{key}' is not a {expected}")]
    WrongType { key: String, expected: &'static str },
    /// A name is blank or longer than [`NAME_MAX`] characters.
    #[error("'{0}' must be 1 to 255 characters and not blank")]
    BadName(String),
    /// A member the request type does not declare (`deny_unknown_fields`).
    #[error("additional properties are not allowed ('{0}' was unexpected)")]
    Unexpected(String),
    /// A member of the right JSON type whose value is refused (an unknown
    /// enum name, a number out of range, a field's own check); `reason` is
    /// serde's or the check's message.
    #[error("'{key}' is invalid: {reason}")]
    Invalid { key: String, reason: String },
}

/// The longest name OpenStack's schemas accept, in characters.
pub const NAME_MAX: usize = 255;

/// Parses a request body that must be a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Object, BodyError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError::NotAnObject),
        Err(e) => Err(BodyError::Malformed(e.to_string())),
    }
}

/// Reads a declared request type from `value` (a whole body, or a member
/// taken out of one), naming what is wrong by its path from `value`'s root.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, BodyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        classify(&path, &e.into_inner().to_string())
    })
}

/// Turns one of serde's data-error messages into a [`BodyError`]. serde's
/// default messages (`missing field `x``, `invalid type: ..., expected ...`,
/// `unknown field `x`, expected ...`) are the stable part of its
/// `de::Error` contract; anything else is an [`BodyError::Invalid`] with the
/// message kept.
fn classify(path: &str, message: &str) -> BodyError {
    // serde_path_to_error renders the root as ".".
    let at = |member: &str| match (path, member) {
        (".", m) => m.to_string(),
        (p, "") => p.to_string(),
        (p, m) => format!("{p}.{m}"),
    };
    let quoted = |rest: &str| rest.split('`').nth(1).unwrap_or_default().to_string();
    if let Some(rest) = message.strip_prefix("missing field ") {
        return BodyError::Missing(at(&quoted(rest)));
    }
    if message.starts_with("unknown field ") {
        // The path already ends with the unknown member.
        return BodyError::Unexpected(at(""));
    }
    let key = at("");
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.rsplit(", expected ").next().unwrap_or_default();
        return BodyError::WrongType {
            key,
            expected: json_kind(expected),
        };
    }
    // serde's derived structs also read an array positionally; one of the
    // wrong length is where an object was asked for. (One of the right
    // length is read: the members still pass every check of their types.)
    if message.starts_with("invalid length ") && message.contains("expected struct ") {
        return BodyError::WrongType {
            key,
            expected: "object",
        };
    }
    BodyError::Invalid {
        key,
        reason: message.to_string(),
    }
}

/// The JSON kind a serde `expected` phrase asks for, in the words of
/// OpenStack's JSON-schema messages.
fn json_kind(expected: &str) -> &'static str {
    let e = expected.to_ascii_lowercase();
    if e.contains("string") || e.contains("char") {
        "string"
    } else if e.contains("bool") {
        "boolean"
    } else if e.contains("float") || e.contains("f32") || e.contains("f64") {
        "number"
    } else if e.contains("integer") || e.starts_with('u') || e.starts_with('i') {
        "integer"
    } else if e.contains("sequence") || e.contains("array") || e.contains("tuple") {
        "array"
    } else {
        "object"
    }
}

/// Takes the object under `key` (e.g. `{"user": {...}}`) out of `body`.
pub fn take_object(body: &mut Object, key: &str) -> Result<Object, BodyError> {
    match body.remove(key) {
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(BodyError::MemberNotAnObject(key.to_string())),
        None => Err(BodyError::Missing(key.to_string())),
    }
}

/// True for a name of 1 to [`NAME_MAX`] characters that is not only
/// whitespace: the rule every service starts from (Nova then also refuses
/// leading or trailing spaces, keypairs a character set).
pub fn is_valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= NAME_MAX
}

/// `name` (the member `key`) when [`is_valid_name`] holds.
pub fn check_name(name: &str, key: &str) -> Result<String, BodyError> {
    if is_valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(BodyError::BadName(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            _ => Object::new(),
        }
    }

    #[test]
    fn a_body_must_be_a_json_object() {
        assert!(parse_object(br#"{"a": 1}"#).is_ok());
        assert_eq!(parse_object(b"[1]"), Err(BodyError::NotAnObject));
        assert!(matches!(parse_object(b"{"), Err(BodyError::Malformed(_))));
    }

    #[test]
    fn members_are_taken_by_kind() {
        let mut body = object(json!({"user": {"name": "a"}, "x": 1}));
        assert!(take_object(&mut body, "user").is_ok());
        assert!(!body.contains_key("user"));
        assert_eq!(
            take_object(&mut body, "x"),
            Err(BodyError::MemberNotAnObject("x".into()))
        );
        assert_eq!(
            take_object(&mut body, "y"),
            Err(BodyError::Missing("y".into()))
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // the fields are read by Debug only
    struct Flavor {
        name: String,
        vcpus: u32,
        #[serde(default)]
        public: Option<bool>,
        kind: Option<Kind>,
        extra: Option<Extra>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Small,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Extra {
        tags: Vec<String>,
    }

    #[test]
    fn declared_types_report_serde_errors_by_member_path() {
        let ok: Result<Flavor, _> = decode(json!({"name": "a", "vcpus": 2}));
        assert!(ok.is_ok());
        let err = |v: Value| decode::<Flavor>(v).err();
        assert_eq!(
            err(json!({"vcpus": 2})),
            Some(BodyError::Missing("name".into()))
        );
        assert_eq!(
            err(json!({"name": 3, "vcpus": 2})),
            Some(BodyError::WrongType {
                key: "name".into(),
                expected: "string"
            })
        );
        assert_eq!(
            err(json!({"name": "a", "vcpus": "two"})),
            Some(BodyError::WrongType {
                key: "vcpus".into(),
                expected: "integer"
            })
        );
        assert_eq!(
            err(json!({"name": "a", "vcpus": 1, "public": "yes"})),
            Some(BodyError::WrongType {
                key: "public".into(),
                expected: "boolean"
            })
        );
        assert_eq!(
            err(json!({"name": "a", "vcpus": 1, "disk": 1})),
            Some(BodyError::Unexpected("disk".into()))
        );
        assert_eq!(
            err(json!({"name": "a", "vcpus": 1, "extra": {}})),
            Some(BodyError::Missing("extra.tags".into()))
        );
        assert_eq!(
            err(json!({"name": "a", "vcpus": 1, "extra": {"tags": "x"}})),
            Some(BodyError::WrongType {
                key: "extra.tags".into(),
                expected: "array"
            })
        );
        assert_eq!(
            err(json!({"name": "a", "vcpus": 1, "extra": []})),
            Some(BodyError::WrongType {
                key: "extra".into(),
                expected: "object"
            })
        );
        assert!(matches!(
            err(json!({"name": "a", "vcpus": -1})),
            Some(BodyError::Invalid { key, .. }) if key == "vcpus"
        ));
        assert!(matches!(
            err(json!({"name": "a", "vcpus": 1, "kind": "huge"})),
            Some(BodyError::Invalid { key, .. }) if key == "kind"
        ));
        assert_eq!(
            decode::<Flavor>(json!("flavor")).err(),
            Some(BodyError::WrongType {
                key: String::new(),
                expected: "object"
            })
        );
    }

    #[test]
    fn names_are_one_to_255_characters_not_blank() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name(&"é".repeat(255)));
        assert!(!is_valid_name(&"a".repeat(256)));
        assert!(!is_valid_name("   "));
        assert!(!is_valid_name(""));
        assert_eq!(
            check_name(" ", "name"),
            Err(BodyError::BadName("name".into()))
        );
        assert_eq!(check_name("ok", "other"), Ok("ok".into()));
    }
}
