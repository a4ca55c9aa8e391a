//! Pieces the declared request types of the image service share: reading a
//! body into one, and the `deserialize_with` helpers for members that may be
//! absent, `null`, or must not be `null`. Each resource declares its own
//! request structs next to its handlers; what serde refuses is worded once,
//! in `impl From<BodyError> for ImageError` (mod.rs), with Glance's words.
//! A leaf: it imports no handler module.

use serde::de::{Deserialize, DeserializeOwned, Deserializer};
use serde_json::Value;

use super::ImageResult;
use crate::http::body::{decode, parse_object};

/// Reads a whole request body (a JSON object) into its declared type.
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> ImageResult<T> {
    Ok(decode(Value::Object(parse_object(bytes)?))?)
}

/// For `#[serde(default, deserialize_with = "present")]` on an `Option<T>`:
/// absent is `None`; when given the member must be a `T`, and `null` is a
/// `T` only if `T` itself takes it (`Value` does: a JSON-patch `value` of
/// `null` is a value, not a missing one).
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// For `#[serde(default, deserialize_with = "nullable")]` on an
/// `Option<Option<T>>`: absent is `None`, `null` is `Some(None)`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The message a refused request renders (tests of the request types).
#[cfg(test)]
pub(crate) fn refused<T: std::fmt::Debug>(r: ImageResult<T>) -> String {
    match r {
        Ok(v) => format!("accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}
