//! Cinder (Block Storage). For now only the version-discovery document at `/volume`;
//! the service joins the catalog once its API works.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use crate::http::{ApiVersion, json_response};

const VERSION: ApiVersion<'static> = ApiVersion {
    id: "v3.0",
    status: "CURRENT",
    path: "/volume/v3/",
    min_version: "3.0",
    version: "3.0",
    media_type: "application/vnd.openstack.volume+json;version=3",
    updated: "2024-01-01T00:00:00Z",
};

/// Routes of this service, at `/volume`.
pub fn router(public_url: &str) -> Router {
    let doc = json!({"versions": [VERSION.to_json(public_url)]});
    let body = doc.clone();
    Router::new()
        .route(
            "/volume",
            get(move || async move { json_response(StatusCode::OK, &doc) }),
        )
        .route(
            "/volume/",
            get(move || async move { json_response(StatusCode::OK, &body) }),
        )
}
