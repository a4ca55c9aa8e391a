//! What the identity handlers' declared request types share (a leaf: no
//! axum). Keystone wraps each resource in a member named after it
//! (`{"user": {...}}`) and validates that member alone, so [`member`] reads
//! the wrapper and decodes the member, and a wrong field is named by its
//! path inside the resource (`name`, not `user.name`), as Keystone names it.
//! Keystone keeps unknown attributes of most resources (users, groups,
//! projects, domains, roles, regions, services, endpoints) as "extra": their
//! types take them with `#[serde(flatten)] extra: Object`.

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

use crate::http::body::{BodyError, decode, is_valid_name, parse_object, take_object};

/// The object under `key` of a request body (`{"user": {...}}`), read as
/// `T`; a body without it, or with something else there, is refused as
/// before (`'user' is a required property.`, `'user' must be an object.`).
pub fn member<T: DeserializeOwned>(bytes: &[u8], key: &str) -> Result<T, BodyError> {
    let mut body = parse_object(bytes)?;
    decode(Value::Object(take_object(&mut body, key)?))
}

/// A whole request body (a JSON object) read as `T`, for the bodies that
/// are not wrapped in a resource member (`{"tenant_id": ...}`,
/// `{"tags": [...]}`, `{"config": {...}}`, the limits lists).
pub fn whole<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyError> {
    decode(Value::Object(parse_object(bytes)?))
}

/// For `#[serde(default, deserialize_with = "not_null")]` on an
/// `Option<T>`: absent is `None`, `null` is refused as the wrong type
/// (Keystone's schemas type `enabled` as a boolean, not a nullable one).
pub fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For `#[serde(default, deserialize_with = "nullable")]` on an
/// `Option<Option<T>>` of an update: absent is `None` (left alone), `null`
/// is `Some(None)` (cleared).
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A resource name: 1 to 255 characters, not blank
/// ([`crate::http::body::is_valid_name`]); any other string is refused as
/// `Invalid input for field 'name': must be 1 to 255 characters and not
/// blank.`
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Name(pub String);

impl TryFrom<String> for Name {
    type Error = &'static str;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        if is_valid_name(&name) {
            Ok(Name(name))
        } else {
            Err("must be 1 to 255 characters and not blank")
        }
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

/// What a handler answers to `body` read as the member `key` of type `T`
/// (Keystone's wording), for the handlers' unit tests.
#[cfg(test)]
pub fn refusal<T: DeserializeOwned + std::fmt::Debug>(body: &str, key: &str) -> String {
    match member::<T>(body.as_bytes(), key) {
        Ok(accepted) => panic!("{body} was accepted: {accepted:?}"),
        Err(e) => super::IdentityError::from(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::Object;

    #[derive(Debug, serde::Deserialize)]
    struct Thing {
        name: Name,
        #[serde(default, deserialize_with = "not_null")]
        enabled: Option<bool>,
        #[serde(default, deserialize_with = "nullable")]
        parent: Option<Option<String>>,
        #[serde(flatten)]
        extra: Object,
    }

    fn read(body: &str) -> Result<Thing, BodyError> {
        member(body.as_bytes(), "thing")
    }

    #[test]
    fn a_member_is_read_with_its_extras_and_paths_inside_it() {
        let t = read(r#"{"thing": {"name": "a", "colour": "red"}}"#).expect("accepted");
        assert_eq!(t.name, Name("a".into()));
        assert_eq!(t.enabled, None);
        assert_eq!(t.parent, None);
        assert_eq!(t.extra.get("colour"), Some(&Value::from("red")));
        assert!(!t.extra.contains_key("name"));
        let t = read(r#"{"thing": {"name": "a", "parent": null, "enabled": false}}"#)
            .expect("accepted");
        assert_eq!(t.parent, Some(None));
        assert_eq!(t.enabled, Some(false));
        assert_eq!(
            read(r#"{}"#).err(),
            Some(BodyError::Missing("thing".into()))
        );
        assert_eq!(
            read(r#"{"thing": 1}"#).err(),
            Some(BodyError::MemberNotAnObject("thing".into()))
        );
        assert_eq!(
            read(r#"{"thing": {}}"#).err(),
            Some(BodyError::Missing("name".into()))
        );
        assert_eq!(
            read(r#"{"thing": {"name": "a", "enabled": null}}"#).err(),
            Some(BodyError::WrongType {
                key: "enabled".into(),
                expected: "boolean"
            })
        );
        assert_eq!(
            read(r#"{"thing": {"name": "a", "parent": 3}}"#).err(),
            Some(BodyError::WrongType {
                key: "parent".into(),
                expected: "string"
            })
        );
        assert_eq!(
            read(r#"{"thing": {"name": "  "}}"#).err(),
            Some(BodyError::Invalid {
                key: "name".into(),
                reason: "must be 1 to 255 characters and not blank".into()
            })
        );
    }

    #[test]
    fn refusals_are_worded_as_keystone_words_them() {
        assert_eq!(
            refusal::<Thing>(r#"{"thing": {"name": ""}}"#, "thing"),
            "Invalid input for field 'name': must be 1 to 255 characters and not blank."
        );
        assert_eq!(
            refusal::<Thing>(r#"{"thing": {"name": "a", "enabled": 1}}"#, "thing"),
            "Invalid input for field 'enabled': not a boolean."
        );
        assert_eq!(
            refusal::<Thing>(r#"{"thing": {}}"#, "thing"),
            "'name' is a required property."
        );
        assert_eq!(
            refusal::<Thing>(r#"{"thing": []}"#, "thing"),
            "'thing' must be an object."
        );
    }
}
