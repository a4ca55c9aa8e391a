//! Nova (Compute). For now only the version-discovery document at `/compute`;
//! the service joins the catalog once its API works.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use crate::http::{ApiVersion, json_response};

const VERSION: ApiVersion<'static> = ApiVersion {
    id: "v2.1",
    status: "CURRENT",
    path: "/compute/v2.1/",
    min_version: "2.1",
    version: "2.1",
    media_type: "application/vnd.openstack.compute+json;version=2.1",
    updated: "2024-01-01T00:00:00Z",
};

/// Routes of this service, at `/compute`.
pub fn router(public_url: &str) -> Router {
    let doc = json!({"versions": [VERSION.to_json(public_url)]});
    let body = doc.clone();
    Router::new()
        .route(
            "/compute",
            get(move || async move { json_response(StatusCode::OK, &doc) }),
        )
        .route(
            "/compute/",
            get(move || async move { json_response(StatusCode::OK, &body) }),
        )
}
