//! Neutron (Network). For now only the version-discovery document at `/network`;
//! the service joins the catalog once its API works.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

use crate::http::{ApiVersion, json_response};

const VERSION: ApiVersion<'static> = ApiVersion {
    id: "v2.0",
    status: "CURRENT",
    path: "/network/v2.0/",
    min_version: "",
    version: "",
    media_type: "application/vnd.openstack.network+json",
    updated: "2024-01-01T00:00:00Z",
};

/// Routes of this service, at `/network`.
pub fn router(public_url: &str) -> Router {
    let doc = json!({"versions": [VERSION.to_json(public_url)]});
    let body = doc.clone();
    Router::new()
        .route(
            "/network",
            get(move || async move { json_response(StatusCode::OK, &doc) }),
        )
        .route(
            "/network/",
            get(move || async move { json_response(StatusCode::OK, &body) }),
        )
}
