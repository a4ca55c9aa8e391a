//! HTTP machinery shared by every service: request ids, version discovery
//! documents and small helpers for JSON bodies and list filters.

pub mod body;
pub mod ratelimit;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The request's id (`req-<uuid>`), set by [`request_id`] as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// Middleware: gives every request an id and returns it on every response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::debug_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = tracing::Instrument::instrument(next.run(req), span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Middleware: every 401 names where to authenticate, as keystonemiddleware
/// does for each OpenStack service: `WWW-Authenticate: Keystone uri="<auth_uri>"`
/// (the state is the identity service's public URL).
pub async fn www_authenticate(
    axum::extract::State(auth_uri): axum::extract::State<std::sync::Arc<str>>,
    req: Request,
    next: Next,
) -> Response {
    let mut response = next.run(req).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && !response.headers().contains_key(header::WWW_AUTHENTICATE)
        && let Ok(value) = HeaderValue::from_str(&format!("Keystone uri=\"{auth_uri}\""))
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// A JSON response with the given status (the body a `Value` or any
/// serializable view; one that cannot be serialized answers 500).
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let (status, text) = match serde_json::to_string(body) {
        Ok(text) => (status, text),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a response body");
            (StatusCode::INTERNAL_SERVER_ERROR, "{}".to_string())
        }
    };
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON response from text already serialized (kept rendered views).
pub fn json_text_response(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A 204 No Content response.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// One entry of a service's version-discovery document.
pub struct ApiVersion<'a> {
    pub id: &'a str,
    pub status: &'a str,
    /// Path of the versioned endpoint below the public URL, e.g. `/compute/v2.1/`.
    pub path: &'a str,
    pub min_version: &'a str,
    pub version: &'a str,
    pub media_type: &'a str,
    pub updated: &'a str,
}

impl ApiVersion<'_> {
    /// The JSON object keystoneauth and openstacksdk parse.
    pub fn to_json(&self, public_url: &str) -> Value {
        serde_json::json!({
            "id": self.id,
            "status": self.status,
            "min_version": self.min_version,
            "version": self.version,
            "updated": self.updated,
            "links": [{"rel": "self", "href": format!("{public_url}{}", self.path)}],
            "media-types": [{"base": "application/json", "type": self.media_type}],
        })
    }
}

/// Splits a list-filter query key such as `name__icontains` into the
/// attribute and its comparison.
pub fn split_filter_key(key: &str) -> (&str, &str) {
    for op in [
        "__icontains",
        "__contains",
        "__istartswith",
        "__startswith",
        "__iendswith",
        "__endswith",
    ] {
        if let Some(attr) = key.strip_suffix(op) {
            return (attr, &op[2..]);
        }
    }
    (key, "equals")
}

/// True when a JSON attribute matches a query-string filter value.
pub fn filter_matches(actual: Option<&Value>, op: &str, wanted: &str) -> bool {
    let text = match actual {
        None | Some(Value::Null) => return wanted.is_empty() && op == "equals",
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => {
            let wanted_bool = !matches!(
                wanted.to_ascii_lowercase().as_str(),
                "false" | "0" | "no" | "off"
            );
            return op == "equals" && *b == wanted_bool;
        }
        Some(other) => other.to_string(),
    };
    match op {
        "equals" => text == wanted,
        "contains" => text.contains(wanted),
        "icontains" => text.to_lowercase().contains(&wanted.to_lowercase()),
        "startswith" => text.starts_with(wanted),
        "istartswith" => text.to_lowercase().starts_with(&wanted.to_lowercase()),
        "endswith" => text.ends_with(wanted),
        "iendswith" => text.to_lowercase().ends_with(&wanted.to_lowercase()),
        _ => false,
    }
}
