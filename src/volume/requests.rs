//! Pieces the declared request types of the volume service share: reading a
//! body's member (`{"volume": {...}}`) or an action's argument into its
//! declared type, and the member types Cinder accepts in more than one JSON
//! form (a size as a number or a string of digits, a boolean or its name).
//! Each resource declares its own request structs next to its handlers;
//! what serde refuses is worded once, in `impl From<BodyError> for
//! VolumeError` (mod.rs). A leaf: it imports no handler module.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::Value;

use super::{VolumeError, VolumeResult};
use crate::http::body::{self, BodyError, Object, decode};

/// Most metadata items on one volume, snapshot or backup.
pub const MAX_METADATA: usize = 128;
/// The longest metadata key and value, in characters.
const META_KEY_MAX: usize = 255;
const META_VALUE_MAX: usize = 255;

use super::ops::MAX_SIZE_GB;

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

/// The whole body as an object.
pub fn object(bytes: &[u8]) -> VolumeResult<Object> {
    Ok(body::parse_object(bytes)?)
}

/// Reads a whole request body into its declared type.
pub fn whole<T: DeserializeOwned>(bytes: &[u8]) -> VolumeResult<T> {
    Ok(decode(Value::Object(object(bytes)?))?)
}

/// Takes the member `key` (an object) out of a body: Cinder's resource
/// wrapper (`{"volume": {...}}`).
pub fn take(bytes: &[u8], key: &str) -> VolumeResult<Object> {
    let mut req = object(bytes)?;
    Ok(body::take_object(&mut req, key)?)
}

/// Reads the member `parent` (already taken out of the body) into its type.
/// A member it lacks or one it does not declare is named under `parent`
/// (`Invalid input for field/attribute volume. Additional properties are
/// not allowed ('x' was unexpected)`), as Cinder's schema errors name them;
/// a member of the wrong type or value by its own name.
pub fn member<T: DeserializeOwned>(parent: &str, obj: Object) -> VolumeResult<T> {
    Ok(decode(Value::Object(obj)).map_err(|e| under(parent, e))?)
}

/// Reads a whole body, already parsed as an object, into its type.
pub fn member_of<T: DeserializeOwned>(obj: Object) -> VolumeResult<T> {
    Ok(decode(Value::Object(obj))?)
}

/// The argument of an action (the value under its name in
/// `{"os-extend": {...}}`) read into its type; `null` reads as `{}`.
pub fn action_arg<T: DeserializeOwned>(action: &str, arg: Value) -> VolumeResult<T> {
    let obj = match arg {
        Value::Object(m) => m,
        Value::Null => Object::new(),
        _ => return Err(BodyError::MemberNotAnObject(action.to_string()).into()),
    };
    member(action, obj)
}

/// `e` with a missing or unexpected member's name put under `parent`.
fn under(parent: &str, e: BodyError) -> BodyError {
    match e {
        BodyError::Missing(k) => BodyError::Missing(format!("{parent}.{k}")),
        BodyError::Unexpected(k) => BodyError::Unexpected(format!("{parent}.{k}")),
        other => other,
    }
}

/// For `#[serde(default, deserialize_with = "given")]`: a member whose
/// presence matters apart from its value (`"name": null` clears a name,
/// a left-out name keeps it): `Some(None)` for `null`, `None` when absent.
pub fn given<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// For `#[serde(default, deserialize_with = "present")]`: a member that may
/// be left out but, when given, must be a `T` (`null` is refused).
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A string member of at most `max` characters (the check Cinder's
/// `name`, `description` and id members share).
pub fn text(key: &str, value: Option<String>, max: usize) -> VolumeResult<Option<String>> {
    if let Some(v) = &value
        && v.chars().count() > max
    {
        return Err(bad(format!(
            "Invalid input for field/attribute {key}. Value: {v}. is too long"
        )));
    }
    Ok(value)
}

/// A size in GiB: a JSON integer or a string of digits, from 1 to
/// [`MAX_SIZE_GB`] (Cinder's `volume_size`: `['integer', 'string']`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub i64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let parsed = match &value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (1..=MAX_SIZE_GB).contains(&n) => Ok(Size(n)),
            _ => Err(de::Error::custom(format!(
                "{value}. {value} is not a valid size: an integer from 1 to {MAX_SIZE_GB} is required."
            ))),
        }
    }
}

/// A boolean as Cinder's `boolean` schema type takes it: JSON `true` or
/// `false`, or one of the strings `true`, `false`, `True`, `False`, `1`,
/// `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaBool(pub bool);

impl<'de> Deserialize<'de> for SchemaBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match &value {
            Value::Bool(b) => Ok(SchemaBool(*b)),
            Value::String(t) if ["true", "True", "1"].contains(&t.as_str()) => Ok(SchemaBool(true)),
            Value::String(t) if ["false", "False", "0"].contains(&t.as_str()) => {
                Ok(SchemaBool(false))
            }
            _ => Err(de::Error::custom(format!(
                "{value}. {value} is not of type 'boolean'"
            ))),
        }
    }
}

/// A boolean as `strutils.bool_from_string(strict=True)` reads it: JSON
/// `true`/`false` or, in any case, `1 true yes t y on` / `0 false no f n
/// off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrictBool(pub bool);

impl<'de> Deserialize<'de> for StrictBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let parsed = match &value {
            Value::Bool(b) => Some(*b),
            Value::String(t) => match t.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "t" | "y" | "on" => Some(true),
                "0" | "false" | "no" | "f" | "n" | "off" => Some(false),
                _ => None,
            },
            _ => None,
        };
        let shown = match &value {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        };
        parsed
            .map(StrictBool)
            .ok_or_else(|| de::Error::custom(format!("{shown}. is not a boolean")))
    }
}

/// A boolean as `strutils.bool_from_string` (not strict) reads it: JSON
/// `true`/`false`, or any string, true when it is one of `1 true yes t y
/// on` in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LooseBool(pub bool);

impl<'de> Deserialize<'de> for LooseBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match &value {
            Value::Bool(b) => Ok(LooseBool(*b)),
            Value::String(t) => Ok(LooseBool(truthy(t))),
            _ => Err(de::Error::custom(format!(
                "{value}. {value} is not a boolean"
            ))),
        }
    }
}

/// True for the strings `strutils.bool_from_string` reads as true.
pub fn truthy(text: &str) -> bool {
    matches!(
        text.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "t" | "y" | "on"
    )
}

/// Metadata (a `metadata` or `meta` member, read as an object of strings):
/// at most [`MAX_METADATA`] items, keys of 1 to 255 characters, values of
/// at most 255.
pub fn metadata(map: BTreeMap<String, String>) -> VolumeResult<BTreeMap<String, String>> {
    if map.len() > MAX_METADATA {
        return Err(bad(format!(
            "Invalid input for field/attribute metadata: at most {MAX_METADATA} items."
        )));
    }
    for (k, v) in &map {
        if k.is_empty() || k.chars().count() > META_KEY_MAX {
            return Err(bad(
                "Invalid input for field/attribute metadata. Keys must be 1 to 255 characters.",
            ));
        }
        if v.chars().count() > META_VALUE_MAX {
            return Err(bad(
                "Invalid input for field/attribute metadata. Values must be at most 255 characters.",
            ));
        }
    }
    Ok(map)
}

/// The message of a 400, for the request types' tests.
#[cfg(test)]
pub(crate) fn refused<T: std::fmt::Debug>(r: VolumeResult<T>) -> String {
    match r {
        Err(VolumeError::BadRequest(m)) => m,
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
        #[serde(default)]
        size: Option<Size>,
        #[serde(default)]
        s: Option<SchemaBool>,
        #[serde(default)]
        strict: Option<StrictBool>,
        #[serde(default)]
        loose: Option<LooseBool>,
        #[serde(default, deserialize_with = "given")]
        name: Option<Option<String>>,
        #[serde(default)]
        metadata: Option<BTreeMap<String, String>>,
    }

    fn probe(v: Value) -> VolumeResult<Probe> {
        match v {
            Value::Object(m) => member("probe", m),
            other => action_arg("probe", other),
        }
    }

    #[test]
    fn sizes_are_integers_or_digit_strings_from_one() {
        for (given, want) in [(json!(1), 1), (json!(" 12 "), 12), (json!("3"), 3)] {
            let p = probe(json!({ "size": given })).expect("accepted");
            assert_eq!(p.size, Some(Size(want)));
        }
        assert_eq!(probe(json!({"size": null})).expect("null").size, None);
        for refused_size in [
            json!(0),
            json!(-1),
            json!("1.5"),
            json!(1.5),
            json!(true),
            json!("x"),
        ] {
            let m = refused(probe(json!({ "size": refused_size })));
            assert!(
                m.starts_with("Invalid input for field/attribute size. Value: ")
                    && m.ends_with(
                        "is not a valid size: an integer from 1 to 1048576 is required."
                    ),
                "{m}"
            );
        }
    }

    #[test]
    fn booleans_in_their_three_forms() {
        for (given, want) in [
            (json!(true), true),
            (json!("True"), true),
            (json!("0"), false),
        ] {
            let p = probe(json!({ "s": given })).expect("accepted");
            assert_eq!(p.s, Some(SchemaBool(want)));
        }
        assert_eq!(
            refused(probe(json!({"s": "yes"}))),
            "Invalid input for field/attribute s. Value: \"yes\". \"yes\" is not of type 'boolean'"
        );
        for (given, want) in [
            (json!("YES"), true),
            (json!("off"), false),
            (json!(false), false),
        ] {
            let p = probe(json!({ "strict": given })).expect("accepted");
            assert_eq!(p.strict, Some(StrictBool(want)));
        }
        assert_eq!(
            refused(probe(json!({"strict": "maybe"}))),
            "Invalid input for field/attribute strict. Value: maybe. is not a boolean"
        );
        assert!(refused(probe(json!({"strict": 1}))).contains("is not a boolean"));
        for (given, want) in [
            (json!("on"), true),
            (json!("maybe"), false),
            (json!(true), true),
        ] {
            let p = probe(json!({ "loose": given })).expect("accepted");
            assert_eq!(p.loose, Some(LooseBool(want)));
        }
        assert!(refused(probe(json!({"loose": 1}))).contains("is not a boolean"));
    }

    #[test]
    fn members_are_named_under_their_parent() {
        assert_eq!(
            refused(probe(json!({"x": 1}))),
            "Invalid input for field/attribute probe. Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            refused(probe(json!(3))),
            "Invalid input for field/attribute probe. Value is not an object."
        );
        let p = probe(Value::Null).expect("null reads as {}");
        assert_eq!(p.name, None);
        assert_eq!(probe(json!({"name": null})).expect("null").name, Some(None));
        assert_eq!(
            refused(probe(json!({"name": 1}))),
            "Invalid input for field/attribute name. Value is not a string."
        );
        assert!(text("name", Some("x".repeat(256)), 255).is_err());
        assert_eq!(
            text("name", Some("x".into()), 255).ok(),
            Some(Some("x".into()))
        );
    }

    #[test]
    fn metadata_is_an_object_of_bounded_strings() {
        let p = probe(json!({"metadata": {"a": "b"}})).expect("accepted");
        assert!(metadata(p.metadata.unwrap_or_default()).is_ok());
        assert_eq!(
            refused(probe(json!({"metadata": []}))),
            "Invalid input for field/attribute metadata. Value is not an object."
        );
        assert!(refused(probe(json!({"metadata": {"a": 1}}))).contains("is not a string"));
        let long: BTreeMap<String, String> = [("k".to_string(), "v".repeat(256))].into();
        assert!(metadata(long).is_err());
        let empty_key: BTreeMap<String, String> = [(String::new(), "v".into())].into();
        assert!(metadata(empty_key).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_METADATA)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        assert!(metadata(many).is_err());
    }
}
