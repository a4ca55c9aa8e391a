//! Pieces the declared request types of compute share: reading a body
//! into one, and the member types Nova's schemas accept in more than one
//! JSON form (an integer or a string of digits, a boolean or its name).
//! Each resource declares its own request structs next to its handlers;
//! what serde refuses is worded once, in `impl From<BodyError> for
//! ComputeError` (mod.rs). A leaf: it imports no handler module.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::Value;

use super::{ComputeError, ComputeResult};
use crate::http::body::{BodyError, decode, parse_object};

/// Reads a whole request body (a JSON object) into its declared type.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> ComputeResult<T> {
    Ok(decode(Value::Object(parse_object(bytes)?))?)
}

/// Reads the argument of a server action (the value under the action's
/// name in `{"reboot": {...}}`) into its declared type, members named from
/// the action (`reboot.type`) as Nova's schemas name them.
pub fn action_arg<T: DeserializeOwned>(action: &str, arg: Value) -> ComputeResult<T> {
    Ok(decode(arg).map_err(|e| under(action, e))?)
}

/// `e` with its member path put under `parent`.
fn under(parent: &str, e: BodyError) -> BodyError {
    let join = |key: String| {
        if key.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{key}")
        }
    };
    match e {
        BodyError::MemberNotAnObject(k) => BodyError::MemberNotAnObject(join(k)),
        BodyError::Missing(k) => BodyError::Missing(join(k)),
        BodyError::WrongType { key, expected } => BodyError::WrongType {
            key: join(key),
            expected,
        },
        BodyError::BadName(k) => BodyError::BadName(join(k)),
        BodyError::Unexpected(k) => BodyError::Unexpected(join(k)),
        BodyError::Invalid { key, reason } => BodyError::Invalid {
            key: join(key),
            reason,
        },
        other => other,
    }
}

/// For `#[serde(default, deserialize_with = "present")]`: a member that may
/// be left out but, when given, must be a `T` (`null` is refused, as in
/// Nova's schemas that do not list `'null'` among the member's types).
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// An integer given as a JSON number or a string of digits (Nova's
/// `{'type': ['integer', 'string'], 'pattern': '^[0-9]*$'}` members). The
/// range is checked by [`Integer::within`] with the member's own bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer(pub i64);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let parsed = match &value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        parsed
            .map(Integer)
            .ok_or_else(|| de::Error::custom(format!("{value}. {value} is not an integer")))
    }
}

impl Integer {
    /// The value when `min <= value <= max`, else Nova's range error for
    /// the member `key`.
    pub fn within(self, key: &str, min: i64, max: i64) -> ComputeResult<i64> {
        let n = self.0;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute {key}. Value: {n}. {n} is not in the range {min}..{max}"
            )))
        }
    }
}

/// A boolean given as JSON `true`/`false` or the strings `"true"`/`"false"`
/// in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LooseBool(pub bool);

impl<'de> Deserialize<'de> for LooseBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match &value {
            Value::Bool(b) => Ok(LooseBool(*b)),
            Value::String(t) if t.eq_ignore_ascii_case("true") => Ok(LooseBool(true)),
            Value::String(t) if t.eq_ignore_ascii_case("false") => Ok(LooseBool(false)),
            _ => Err(de::Error::custom(format!("{value}."))),
        }
    }
}

/// `OS-DCF:diskConfig` (resize, rebuild, update): accepted and ignored,
/// the root disk is always grown to the flavor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DiskConfig {
    Auto,
    Manual,
}

/// A member `member` of the object at `parent` that the caller's
/// microversion does not have, refused as an undeclared member is (Nova's
/// schema for that microversion has `additionalProperties: False`).
pub fn unexpected(parent: &str, member: &str) -> ComputeError {
    let key = if parent.is_empty() {
        member.to_string()
    } else {
        format!("{parent}.{member}")
    };
    BodyError::Unexpected(key).into()
}

/// Reads a JSON value and keeps it when `accept` takes it; otherwise
/// refuses it with `"{value}. {value} {complaint}"`, the shape of Nova's
/// format and pattern errors.
pub fn checked<'de, D, T>(
    d: D,
    complaint: &str,
    accept: impl FnOnce(&Value) -> Option<T>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let value = Value::deserialize(d)?;
    accept(&value).ok_or_else(|| de::Error::custom(format!("{value}. {value} {complaint}")))
}

/// A string in UUID form (Nova's `'format': 'uuid'` members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uuid(pub String);

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "is not a 'uuid'", |v| match v {
            Value::String(t) if uuid::Uuid::parse_str(t).is_ok() => Some(Uuid(t.clone())),
            _ => None,
        })
    }
}

/// An IPv4 or IPv6 address (Nova's `'format': 'ip-address'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAddress(pub String);

impl<'de> Deserialize<'de> for IpAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "is not a 'ip-address'", |v| match v {
            Value::String(t) if t.parse::<std::net::IpAddr>().is_ok() => Some(IpAddress(t.clone())),
            _ => None,
        })
    }
}

/// A device tag (Nova's `parameter_types.tag`: 1 to 60 characters, no `/`
/// or `,`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub String);

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "does not match '^[^,/]*$'", |v| match v {
            Value::String(t)
                if !t.is_empty() && t.chars().count() <= 60 && !t.contains(['/', ',']) =>
            {
                Some(Tag(t.clone()))
            }
            _ => None,
        })
    }
}

/// Nova's `parameter_types.boolean`: JSON `true`/`false`, the strings
/// `true`/`false`/`1`/`0`/`yes`/`no`/`on`/`off`/`t`/`f`/`y`/`n` (and `""`,
/// false) in any case, or a number (non-zero is true); refused as
/// `"{value}. {value} is not a boolean"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boolean(pub bool);

impl<'de> Deserialize<'de> for Boolean {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "is not a boolean", |v| match v {
            Value::Bool(b) => Some(Boolean(*b)),
            Value::String(t) => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => Some(Boolean(true)),
                "false" | "0" | "no" | "off" | "f" | "n" | "" => Some(Boolean(false)),
                _ => None,
            },
            Value::Number(n) => n.as_i64().map(|i| Boolean(i != 0)),
            _ => None,
        })
    }
}

/// A member that must be a JSON string (Nova's `{'type': 'string'}` with
/// no other rule), refused as `"{value}. {value} is not of type 'string'"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "is not of type 'string'", |v| match v {
            Value::String(t) => Some(Text(t.clone())),
            _ => None,
        })
    }
}

/// A member that must be a non-empty JSON string, refused as
/// `"{value}. {value} is not valid"` (the network proxies' actions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty(pub String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(d, "is not valid", |v| match v {
            Value::String(t) if !t.is_empty() => Some(NonEmpty(t.clone())),
            _ => None,
        })
    }
}

/// The message of a 400, for the request types' tests.
#[cfg(test)]
pub(crate) fn refused<T: std::fmt::Debug>(r: ComputeResult<T>) -> String {
    match r {
        Err(ComputeError::BadRequest(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Probe {
        n: Integer,
        #[serde(default, deserialize_with = "present")]
        m: Option<Integer>,
        #[serde(default)]
        b: Option<LooseBool>,
    }

    fn message(value: Value) -> String {
        match body::<Probe>(value.to_string().as_bytes()) {
            Err(ComputeError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn integers_are_numbers_or_digit_strings() {
        let p: Probe = body(br#"{"n": " 12 ", "m": 3, "b": "TRUE"}"#).expect("accepted");
        assert_eq!(
            (p.n, p.m, p.b),
            (Integer(12), Some(Integer(3)), Some(LooseBool(true)))
        );
        assert_eq!(
            message(json!({"n": true})),
            "Invalid input for field/attribute n. Value: true. true is not an integer"
        );
        assert_eq!(
            message(json!({"n": 1, "m": null})),
            "Invalid input for field/attribute m. Value: null. null is not an integer"
        );
        assert_eq!(
            message(json!({"n": 1, "b": "maybe"})),
            "Invalid input for field/attribute b. Value: \"maybe\"."
        );
        assert_eq!(
            message(json!({})),
            "Invalid input for field/attribute n: 'n' is a required property"
        );
        assert_eq!(
            message(json!({"n": 1, "x": 1})),
            "Additional properties are not allowed ('x' was unexpected)"
        );
        assert!(Integer(0).within("ram", 1, 5).is_err());
        let arg = |v: Value| match action_arg::<Probe>("act", v) {
            Err(ComputeError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        };
        assert_eq!(
            arg(json!({})),
            "Invalid input for field/attribute act. 'n' is a required property"
        );
        assert_eq!(
            arg(json!({"n": 1, "x": 1})),
            "Invalid input for field/attribute act. Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            arg(json!(3)),
            "Invalid input for field/attribute act. Value is not an object."
        );
        assert_eq!(Integer(5).within("ram", 1, 5).ok(), Some(5));
    }
}
