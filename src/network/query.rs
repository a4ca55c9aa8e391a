//! Lists as Neutron serves them: filters on any attribute (repeat a key for
//! "any of"), tag filters, `fields`, `sort_key`/`sort_dir`, and
//! `limit`/`marker`/`page_reverse` paging with `<collection>_links`.

use std::cmp::Ordering;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{NetResult, NetworkError, reply};

/// The most records one response carries when the client gives no
/// `limit`; the rest is reached through the `next` link.
pub const MAX_PAGE: usize = 5000;

/// Parameters that are not attribute filters.
const RESERVED: &[&str] = &[
    "fields",
    "sort_key",
    "sort_dir",
    "limit",
    "marker",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "verbose",
];

/// A parsed list query.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub raw: Vec<(String, String)>,
}

impl ListQuery {
    pub fn new(raw: Vec<(String, String)>) -> ListQuery {
        ListQuery { raw }
    }

    fn values(&self, key: &str) -> Vec<&str> {
        self.raw
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, key: &str) -> Option<&str> {
        self.raw
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `fields` asked for (empty: all).
    pub fn fields(&self) -> Vec<String> {
        self.values("fields")
            .iter()
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Whether a stored attribute matches one filter value.
fn value_matches(actual: &Value, wanted: &str) -> bool {
    match actual {
        Value::Null => wanted.is_empty() || wanted == "None" || wanted == "null",
        Value::String(s) => s == wanted,
        Value::Bool(b) => match wanted.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => *b,
            "false" | "0" | "no" | "off" => !*b,
            _ => false,
        },
        Value::Number(n) => n.to_string() == wanted,
        Value::Array(items) => {
            // `fixed_ips=ip_address=10.0.0.3` and friends match a member's key.
            if let Some((k, v)) = wanted.split_once('=') {
                items
                    .iter()
                    .any(|item| item.get(k).is_some_and(|inner| value_matches(inner, v)))
            } else {
                items.iter().any(|item| value_matches(item, wanted))
            }
        }
        Value::Object(map) => map.get(wanted).is_some(),
    }
}

fn tags_of(item: &Value) -> Vec<&str> {
    item.get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn split_tags(values: Vec<&str>) -> Vec<&str> {
    values
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether an item passes every filter of the query.
pub fn matches(item: &Value, q: &ListQuery) -> bool {
    let mut keys: Vec<&str> = Vec::new();
    for (k, _) in &q.raw {
        if !RESERVED.contains(&k.as_str()) && !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    for key in keys {
        let Some(actual) = item.get(key) else {
            // Neutron ignores filters on attributes the resource lacks.
            continue;
        };
        if !q.values(key).iter().any(|w| value_matches(actual, w)) {
            return false;
        }
    }
    let tags = tags_of(item);
    let all = split_tags(q.values("tags"));
    if !all.is_empty() && !all.iter().all(|t| tags.contains(t)) {
        return false;
    }
    let any = split_tags(q.values("tags-any"));
    if !any.is_empty() && !any.iter().any(|t| tags.contains(t)) {
        return false;
    }
    let not_all = split_tags(q.values("not-tags"));
    if !not_all.is_empty() && not_all.iter().all(|t| tags.contains(t)) {
        return false;
    }
    let not_any = split_tags(q.values("not-tags-any"));
    if !not_any.is_empty() && not_any.iter().any(|t| tags.contains(t)) {
        return false;
    }
    true
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ if rank(a) != rank(b) => rank(a).cmp(&rank(b)),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Keeps only the asked-for fields of a view.
pub fn select_fields(item: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return item;
    }
    match item {
        Value::Object(map) => {
            let kept: Map<String, Value> = map
                .into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect();
            Value::Object(kept)
        }
        other => other,
    }
}

fn link(base: &str, q: &ListQuery, limit: usize, marker: &str, reverse: bool) -> String {
    let mut parts: Vec<String> = q
        .raw
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "limit" | "marker" | "page_reverse"))
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    parts.push(format!("limit={limit}"));
    parts.push(format!("marker={}", encode(marker)));
    if reverse {
        parts.push("page_reverse=True".into());
    }
    format!("{base}?{}", parts.join("&"))
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_bool(text: &str) -> bool {
    matches!(text.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// Filters, sorts, pages and trims `items` (the caller's full views) and
/// renders `{collection: [...], collection_links: [...]}`. `base` is the
/// collection's URL for the links.
pub fn respond(
    items: Vec<Value>,
    q: &ListQuery,
    collection: &str,
    base: &str,
) -> NetResult<Response> {
    let mut items: Vec<Value> = items.into_iter().filter(|i| matches(i, q)).collect();
    let sort_keys = q.values("sort_key");
    let sort_dirs = q.values("sort_dir");
    if !sort_dirs.is_empty() && sort_dirs.len() != sort_keys.len() {
        return Err(NetworkError::bad(
            "The number of sort_keys and sort_dirs must be same",
        ));
    }
    for dir in &sort_dirs {
        if *dir != "asc" && *dir != "desc" {
            return Err(NetworkError::bad(format!(
                "{dir} is invalid value for sort_dirs, valid value is 'asc' and 'desc'"
            )));
        }
    }
    if let Some(first) = items.first() {
        for key in &sort_keys {
            if first.get(*key).is_none() {
                return Err(NetworkError::bad(format!(
                    "{key} is an invalid attribute for sort_keys"
                )));
            }
        }
    }
    let limit = match q.one("limit") {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n < 0 => {
                return Err(NetworkError::bad(format!(
                    "Limit must be an integer 0 or greater and not '{n}'"
                )));
            }
            Ok(0) => None,
            Ok(n) => Some(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
            Err(_) => {
                return Err(NetworkError::bad(format!(
                    "Limit must be an integer 0 or greater and not '{text}'"
                )));
            }
        },
    };
    let marker = q.one("marker").map(str::to_string);
    let reverse = q.one("page_reverse").is_some_and(parse_bool);
    let paging = limit.is_some() || marker.is_some();
    let mut keys: Vec<(String, bool)> = sort_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k.to_string(),
                sort_dirs.get(i).is_some_and(|d| *d == "desc"),
            )
        })
        .collect();
    if paging && !keys.iter().any(|(k, _)| k == "id") {
        keys.push(("id".into(), false));
    }
    if !keys.is_empty() {
        items.sort_by(|a, b| {
            for (key, desc) in &keys {
                let null = Value::Null;
                let ord = compare(a.get(key).unwrap_or(&null), b.get(key).unwrap_or(&null));
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
    }
    if reverse {
        items.reverse();
    }
    if let Some(marker) = &marker {
        match items
            .iter()
            .position(|i| i.get("id").and_then(Value::as_str) == Some(marker.as_str()))
        {
            Some(p) => {
                items.drain(..=p);
            }
            None => {
                return Err(NetworkError::not_found(
                    "HTTPNotFound",
                    format!("Marker {marker} could not be found."),
                ));
            }
        }
    }
    let page = limit.unwrap_or(MAX_PAGE);
    let has_more = items.len() > page;
    items.truncate(page);
    if reverse {
        items.reverse();
    }
    let id_of = |v: Option<&Value>| {
        v.and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let first = id_of(items.first());
    let last = id_of(items.last());
    let mut links = Vec::new();
    if !items.is_empty() {
        let (more_rel, back_rel) = if reverse {
            ("previous", "next")
        } else {
            ("next", "previous")
        };
        if has_more {
            let (m, r) = if reverse {
                (&first, true)
            } else {
                (&last, false)
            };
            links.push(json!({"rel": more_rel, "href": link(base, q, page, m, r)}));
        }
        if marker.is_some() {
            let (m, r) = if reverse {
                (&last, false)
            } else {
                (&first, true)
            };
            links.push(json!({"rel": back_rel, "href": link(base, q, page, m, r)}));
        }
    }
    let fields = q.fields();
    let items: Vec<Value> = items
        .into_iter()
        .map(|i| select_fields(i, &fields))
        .collect();
    let mut body = Map::new();
    body.insert(collection.to_string(), Value::Array(items));
    if !links.is_empty() {
        body.insert(format!("{collection}_links"), Value::Array(links));
    }
    Ok(reply(StatusCode::OK, &Value::Object(body)))
}

/// Renders one view under its member name, trimmed to `fields`.
pub fn respond_one(item: Value, q: &ListQuery, member: &str, status: StatusCode) -> Response {
    let item = select_fields(item, &q.fields());
    let mut body = Map::new();
    body.insert(member.to_string(), item);
    reply(status, &Value::Object(body))
}

/// The answer to a bulk create: `{"<plural>": [...]}`.
pub fn respond_many(items: Vec<Value>, plural: &str, status: StatusCode) -> Response {
    let mut body = Map::new();
    body.insert(plural.to_string(), Value::Array(items));
    reply(status, &Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> ListQuery {
        ListQuery::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn filters_match_any_value_and_tags() {
        let item = json!({"name": "a", "shared": false, "tags": ["x", "y"],
                          "fixed_ips": [{"ip_address": "10.0.0.3"}]});
        assert!(matches(&item, &q(&[("name", "b"), ("name", "a")])));
        assert!(!matches(&item, &q(&[("name", "b")])));
        assert!(matches(&item, &q(&[("shared", "False")])));
        assert!(matches(&item, &q(&[("fixed_ips", "ip_address=10.0.0.3")])));
        assert!(matches(&item, &q(&[("tags", "x,y")])));
        assert!(!matches(&item, &q(&[("tags", "x,z")])));
        assert!(matches(&item, &q(&[("tags-any", "z,y")])));
        assert!(!matches(&item, &q(&[("not-tags-any", "y")])));
        assert!(matches(&item, &q(&[("unknown", "1")])));
    }

    #[test]
    fn compares_across_types() {
        assert_eq!(compare(&json!(1), &json!(2)), Ordering::Less);
        assert_eq!(compare(&json!(null), &json!("a")), Ordering::Less);
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
