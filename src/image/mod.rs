//! Glance (Image). For now only the version-discovery document at `/image`;
//! the service joins the catalog once its API works.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use crate::http::{ApiVersion, json_response};

const VERSION: ApiVersion<'static> = ApiVersion {
    id: "v2.0",
    status: "CURRENT",
    path: "/image/v2/",
    min_version: "",
    version: "",
    media_type: "application/vnd.openstack.image-v2+json",
    updated: "2024-01-01T00:00:00Z",
};

/// Routes of this service, at `/image`.
pub fn router(public_url: &str) -> Router {
    let doc = json!({"versions": [VERSION.to_json(public_url)]});
    let body = doc.clone();
    Router::new()
        .route(
            "/image",
            get(move || async move { json_response(StatusCode::OK, &doc) }),
        )
        .route(
            "/image/",
            get(move || async move { json_response(StatusCode::OK, &body) }),
        )
}
