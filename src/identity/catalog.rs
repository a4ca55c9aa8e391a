//! The service catalog: regions, services and endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::requests::{member, not_null, nullable};
use super::views::strip_reserved;
use super::{
    Auth, IdentityError, IdentityResult, IdentityState, admin_delete, admin_list, apply_filters,
    list_response, new_id,
};
use crate::db::identity::{self as store, Endpoint, Region, Service};
use crate::http::body::{BodyError, Object};
use crate::http::{json_response, no_content};
use crate::policy::Target;

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route("/v3/regions", get(list_regions).post(create_region))
        .route(
            "/v3/regions/{id}",
            get(get_region)
                .patch(update_region)
                .delete(delete_region)
                .put(create_region_with_id),
        )
        .route("/v3/services", get(list_services).post(create_service))
        .route(
            "/v3/services/{id}",
            get(get_service)
                .patch(update_service)
                .delete(delete_service),
        )
        .route("/v3/endpoints", get(list_endpoints).post(create_endpoint))
        .route(
            "/v3/endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
}

fn with_extra(mut value: Value, extra: &Map<String, Value>) -> Value {
    if let Some(map) = value.as_object_mut() {
        for (k, v) in extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    value
}

fn region_json(r: &Region, base: &str) -> Value {
    with_extra(
        json!({"id": r.id, "description": r.description, "parent_region_id": r.parent_region_id,
               "links": {"self": format!("{base}/regions/{}", r.id)}}),
        &r.extra,
    )
}

fn service_json(s: &Service, base: &str) -> Value {
    with_extra(
        json!({"id": s.id, "type": s.kind, "name": s.name, "description": s.description, "enabled": s.enabled,
               "links": {"self": format!("{base}/services/{}", s.id)}}),
        &s.extra,
    )
}

fn endpoint_json(e: &Endpoint, base: &str) -> Value {
    with_extra(
        json!({"id": e.id, "service_id": e.service_id, "interface": e.interface, "url": e.url,
               "region": e.region_id, "region_id": e.region_id, "enabled": e.enabled,
               "links": {"self": format!("{base}/endpoints/{}", e.id)}}),
        &e.extra,
    )
}

fn find_region(conn: &Connection, id: &str) -> IdentityResult<Region> {
    store::list_regions(conn)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find region: {id}.")))
}

/// Endpoints may name a region that does not exist yet (the legacy
/// `region` field): Keystone creates it.
fn ensure_region(conn: &Connection, id: &str) -> IdentityResult<()> {
    if find_region(conn, id).is_err() {
        store::upsert_region(
            conn,
            &Region {
                id: id.to_string(),
                description: String::new(),
                parent_region_id: None,
                extra: Default::default(),
            },
        )?;
    }
    Ok(())
}

fn find_service(conn: &Connection, id: &str) -> IdentityResult<Service> {
    store::list_services(conn)?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find service: {id}.")))
}

fn find_endpoint(conn: &Connection, id: &str) -> IdentityResult<Endpoint> {
    store::list_endpoints(conn)?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find endpoint: {id}.")))
}

// ------------------------------------------------------------------ regions

async fn list_regions(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:list_regions", &Target::new())?;
    let base = s.v3_url();
    let items = s
        .read(move |conn| {
            Ok(store::list_regions(conn)?
                .iter()
                .map(|r| region_json(r, &base))
                .collect())
        })
        .await?;
    let items = apply_filters(items, &q, &["parent_region_id", "id"]);
    Ok(list_response(
        "regions",
        items,
        format!("{}/regions", s.v3_url()),
    ))
}

/// The `region` member of `POST /v3/regions`, `PUT` and `PATCH
/// /v3/regions/{id}` (unknown attributes are kept as extra).
#[derive(Debug, serde::Deserialize)]
struct RegionRequest {
    /// Create only; must match the URL's when both are given.
    id: Option<String>,
    description: Option<String>,
    /// `null` clears it on update.
    #[serde(default, deserialize_with = "nullable")]
    parent_region_id: Option<Option<String>>,
    #[serde(flatten)]
    extra: Object,
}

/// The `service` member of `POST /v3/services` and `PATCH
/// /v3/services/{id}` (unknown attributes are kept as extra).
#[derive(Debug, serde::Deserialize)]
struct ServiceRequest {
    /// Required on create, 1 to 255 bytes.
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    #[serde(flatten)]
    extra: Object,
}

/// The `endpoint` member of `POST /v3/endpoints` and `PATCH
/// /v3/endpoints/{id}` (unknown attributes are kept as extra; `region` is
/// the old name of `region_id`).
#[derive(Debug, serde::Deserialize)]
struct EndpointRequest {
    interface: Option<String>,
    url: Option<String>,
    service_id: Option<String>,
    region_id: Option<String>,
    region: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    #[serde(flatten)]
    extra: Object,
}

impl EndpointRequest {
    fn region(&mut self) -> Option<String> {
        self.region_id.take().or_else(|| self.region.take())
    }
}

async fn save_new_region(
    s: &Arc<IdentityState>,
    id: Option<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    let request: RegionRequest = member(&body, "region")?;
    let id = match (id, request.id) {
        (Some(path_id), Some(body_id)) if path_id != body_id => {
            return Err(IdentityError::BadRequest(
                "The region id in the body differs from the URL's.".into(),
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => new_id(),
    };
    let region = Region {
        id,
        description: request.description.unwrap_or_default(),
        parent_region_id: request.parent_region_id.flatten(),
        extra: strip_reserved(request.extra, &[]),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            if store::list_regions(tx)?.iter().any(|r| r.id == region.id) {
                return Err(IdentityError::Conflict(format!(
                    "Region {} already exists.",
                    region.id
                )));
            }
            if let Some(parent) = &region.parent_region_id {
                find_region(tx, parent).map_err(|_| {
                    IdentityError::NotFound(format!("Could not find region: {parent}."))
                })?;
            }
            store::upsert_region(tx, &region)?;
            Ok(region_json(&region, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"region": value}),
    ))
}

async fn create_region(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_region", &Target::new())?;
    save_new_region(&s, None, body).await
}

async fn create_region_with_id(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_region", &Target::new())?;
    save_new_region(&s, Some(id), body).await
}

async fn get_region(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_region", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(region_json(&find_region(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"region": value})))
}

async fn update_region(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_region", &Target::new())?;
    let request: RegionRequest = member(&body, "region")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut region = find_region(tx, &id)?;
            if let Some(description) = request.description {
                region.description = description;
            }
            if let Some(parent) = request.parent_region_id {
                if let Some(parent) = &parent {
                    if *parent == region.id {
                        return Err(IdentityError::BadRequest(
                            "A region cannot be its own parent.".into(),
                        ));
                    }
                    find_region(tx, parent)?;
                }
                region.parent_region_id = parent;
            }
            region.extra.extend(strip_reserved(request.extra, &[]));
            store::upsert_region(tx, &region)?;
            Ok(region_json(&region, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"region": value})))
}

async fn delete_region(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:delete_region", &Target::new())?;
    s.write(move |tx| {
        find_region(tx, &id)?;
        if store::list_regions(tx)?
            .iter()
            .any(|r| r.parent_region_id.as_deref() == Some(id.as_str()))
        {
            return Err(IdentityError::Forbidden(
                "delete_region (the region has child regions)".into(),
            ));
        }
        store::delete_region(tx, &id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------ services

async fn list_services(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_services", &Target::new()),
        ("services", "services"),
        store::list_services,
        service_json,
        (&q, &["type", "name", "enabled", "id"]),
    )
    .await
}

async fn create_service(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_service", &Target::new())?;
    let request: ServiceRequest = member(&body, "service")?;
    let kind = request
        .kind
        .filter(|t| !t.is_empty() && t.len() <= 255)
        .ok_or_else(|| BodyError::Missing("type".into()))?;
    let service = Service {
        id: new_id(),
        kind,
        name: request.name.unwrap_or_default(),
        description: request.description.unwrap_or_default(),
        enabled: request.enabled.unwrap_or(true),
        extra: strip_reserved(request.extra, &[]),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            store::upsert_service(tx, &service)?;
            Ok(service_json(&service, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"service": value}),
    ))
}

async fn get_service(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_service", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(service_json(&find_service(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"service": value})))
}

async fn update_service(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_service", &Target::new())?;
    let request: ServiceRequest = member(&body, "service")?;
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut service = find_service(tx, &id)?;
            if let Some(kind) = request.kind {
                service.kind = kind;
            }
            if let Some(name) = request.name {
                service.name = name;
            }
            if let Some(description) = request.description {
                service.description = description;
            }
            if let Some(enabled) = request.enabled {
                service.enabled = enabled;
            }
            service.extra.extend(strip_reserved(request.extra, &[]));
            store::upsert_service(tx, &service)?;
            Ok(service_json(&service, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"service": value})))
}

async fn delete_service(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_service", &Target::new()),
        id,
        |tx, id| {
            find_service(tx, id)?;
            store::delete_service(tx, id)?;
            Ok(())
        },
    )
    .await
}

// ------------------------------------------------------------------ endpoints

async fn list_endpoints(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> IdentityResult<Response> {
    admin_list(
        &s,
        &ctx,
        ("identity:list_endpoints", &Target::new()),
        ("endpoints", "endpoints"),
        store::list_endpoints,
        endpoint_json,
        (
            &q,
            &["interface", "service_id", "region_id", "enabled", "id"],
        ),
    )
    .await
}

fn check_interface(interface: &str) -> IdentityResult<()> {
    if matches!(interface, "public" | "internal" | "admin") {
        Ok(())
    } else {
        Err(IdentityError::BadRequest(format!(
            "Invalid interface {interface:?}: must be public, internal or admin."
        )))
    }
}

fn check_url(url: &str) -> IdentityResult<()> {
    if url.is_empty() || url.len() > 225 {
        return Err(IdentityError::BadRequest("Invalid endpoint url.".into()));
    }
    Ok(())
}

async fn create_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:create_endpoint", &Target::new())?;
    let mut request: EndpointRequest = member(&body, "endpoint")?;
    let interface = request
        .interface
        .take()
        .ok_or_else(|| BodyError::Missing("interface".into()))?;
    check_interface(&interface)?;
    let url = request
        .url
        .take()
        .ok_or_else(|| BodyError::Missing("url".into()))?;
    check_url(&url)?;
    let service_id = request
        .service_id
        .take()
        .ok_or_else(|| BodyError::Missing("service_id".into()))?;
    let region_id = request.region();
    let endpoint = Endpoint {
        id: new_id(),
        service_id,
        interface,
        url,
        region_id,
        enabled: request.enabled.unwrap_or(true),
        extra: strip_reserved(request.extra, &[]),
    };
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            find_service(tx, &endpoint.service_id).map_err(|_| {
                IdentityError::BadRequest(format!(
                    "Could not find service: {}.",
                    endpoint.service_id
                ))
            })?;
            if let Some(region) = &endpoint.region_id {
                ensure_region(tx, region)?;
            }
            store::upsert_endpoint(tx, &endpoint)?;
            Ok(endpoint_json(&endpoint, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"endpoint": value}),
    ))
}

async fn get_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:get_endpoint", &Target::new())?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| Ok(endpoint_json(&find_endpoint(conn, &id)?, &base)))
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"endpoint": value})))
}

async fn update_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> IdentityResult<Response> {
    s.authorize(&ctx, "identity:update_endpoint", &Target::new())?;
    let mut request: EndpointRequest = member(&body, "endpoint")?;
    let region = request.region();
    let base = s.v3_url();
    let value = s
        .write(move |tx| {
            let mut endpoint = find_endpoint(tx, &id)?;
            if let Some(interface) = request.interface {
                check_interface(&interface)?;
                endpoint.interface = interface;
            }
            if let Some(url) = request.url {
                check_url(&url)?;
                endpoint.url = url;
            }
            if let Some(service_id) = request.service_id {
                find_service(tx, &service_id)?;
                endpoint.service_id = service_id;
            }
            if let Some(region) = region {
                ensure_region(tx, &region)?;
                endpoint.region_id = Some(region);
            }
            if let Some(enabled) = request.enabled {
                endpoint.enabled = enabled;
            }
            endpoint.extra.extend(strip_reserved(request.extra, &[]));
            store::upsert_endpoint(tx, &endpoint)?;
            Ok(endpoint_json(&endpoint, &base))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"endpoint": value})))
}

async fn delete_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> IdentityResult<Response> {
    admin_delete(
        &s,
        &ctx,
        ("identity:delete_endpoint", &Target::new()),
        id,
        |tx, id| {
            find_endpoint(tx, id)?;
            store::delete_endpoint(tx, id)?;
            Ok(())
        },
    )
    .await
}

#[cfg(test)]
mod request_tests {
    use super::*;
    use crate::identity::requests::refusal;

    #[test]
    fn region_service_and_endpoint_bodies() {
        let region: RegionRequest = member(
            br#"{"region": {"parent_region_id": null, "x": 1}}"#,
            "region",
        )
        .expect("accepted");
        assert_eq!(region.parent_region_id, Some(None));
        assert_eq!(region.extra.len(), 1);
        let service: ServiceRequest =
            member(br#"{"service": {"type": "compute", "x": 1}}"#, "service").expect("accepted");
        assert_eq!(service.kind.as_deref(), Some("compute"));
        assert_eq!(
            refusal::<ServiceRequest>(r#"{"service": {"type": "c", "enabled": 0}}"#, "service"),
            "Invalid input for field 'enabled': not a boolean."
        );
        let mut endpoint: EndpointRequest = member(
            br#"{"endpoint": {"interface": "public", "url": "http://x", "service_id": "s",
                "region": "r1", "x": 1}}"#,
            "endpoint",
        )
        .expect("accepted");
        assert_eq!(endpoint.region().as_deref(), Some("r1"));
        assert_eq!(endpoint.extra.len(), 1);
        assert_eq!(
            refusal::<EndpointRequest>(r#"{"endpoint": {"url": 1}}"#, "endpoint"),
            "Invalid input for field 'url': not a string."
        );
    }
}
