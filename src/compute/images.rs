//! The image proxy (`/v2.1/images`), which Nova removed at microversion
//! 2.36: older clients still list and show Glance images through Nova.
//! Reads go to Glance's Rust API (`crate::image::service`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::{ComputeError, ComputeResult, ComputeState, Mv, next_link, paginate, project_of};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::image::service::{BootImage, ImageService, ImageServiceError};

type S = Arc<ComputeState>;

/// The last microversion that has the proxy.
const LAST_PROXY_MICROVERSION: u16 = 35;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/images", get(list))
        .route("/v2.1/images/detail", get(list_detail))
        .route("/v2.1/images/{id}", get(show))
}

fn proxy_available(mv: Mv) -> ComputeResult<()> {
    if mv.at_least(LAST_PROXY_MICROVERSION + 1) {
        return Err(ComputeError::NotFound(
            "The image proxy API is gone from microversion 2.36 on; use the Image service.".into(),
        ));
    }
    Ok(())
}

impl From<ImageServiceError> for ComputeError {
    fn from(e: ImageServiceError) -> Self {
        match e {
            ImageServiceError::NotFound(id) => {
                ComputeError::NotFound(format!("Image not found: {id}"))
            }
            other => ComputeError::Internal(other.to_string()),
        }
    }
}

/// Nova's image status for a Glance status.
fn nova_status(glance: &str) -> &'static str {
    match glance {
        "active" => "ACTIVE",
        "queued" | "saving" | "uploading" | "importing" => "SAVING",
        "deleted" | "pending_delete" => "DELETED",
        "deactivated" => "INACTIVE",
        _ => "ERROR",
    }
}

fn links(s: &ComputeState, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{}/compute/v2.1/images/{id}", s.public_url)},
        {"rel": "bookmark", "href": format!("{}/compute/images/{id}", s.public_url)},
        {"rel": "alternate", "type": "application/vnd.openstack.image",
         "href": format!("{}/image/images/{id}", s.public_url)},
    ])
}

fn summary(s: &ComputeState, image: &BootImage) -> Value {
    json!({"id": image.id, "name": image.name, "links": links(s, &image.id)})
}

fn detail(s: &ComputeState, image: &BootImage) -> Value {
    let metadata: serde_json::Map<String, Value> = image
        .properties
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(text))
        })
        .collect();
    let status = nova_status(&image.status);
    json!({
        "id": image.id,
        "name": image.name,
        "status": status,
        "progress": if status == "ACTIVE" { 100 } else { 25 },
        "minDisk": image.min_disk,
        "minRam": image.min_ram,
        "created": image.created_at,
        "updated": image.updated_at,
        "metadata": metadata,
        "OS-EXT-IMG-SIZE:size": image.size,
        "links": links(s, &image.id),
    })
}

/// The project whose view of Glance the caller gets (`None`: an admin sees all).
fn viewer(ctx: &AuthContext) -> ComputeResult<Option<String>> {
    if ctx.is_admin() {
        Ok(None)
    } else {
        project_of(ctx).map(Some)
    }
}

async fn listing(
    s: S,
    ctx: &AuthContext,
    mv: Mv,
    query: HashMap<String, String>,
    detailed: bool,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let service = ImageService::new(s.db.clone());
    let mut images = service.list(viewer(ctx)?.as_deref()).await?;
    if let Some(name) = query.get("name") {
        images.retain(|i| i.name.as_deref() == Some(name.as_str()));
    }
    if let Some(status) = query.get("status") {
        images.retain(|i| nova_status(&i.status).eq_ignore_ascii_case(status));
    }
    let (page, more) = paginate(images, &query, |i| i.id.clone())?;
    let render = |i: &BootImage| {
        if detailed {
            detail(&s, i)
        } else {
            summary(&s, i)
        }
    };
    let mut body = json!({"images": page.iter().map(render).collect::<Vec<_>>()});
    if more && let Some(last) = page.last() {
        let path = if detailed { "images/detail" } else { "images" };
        body["images_links"] = next_link(&s, path, &query, &last.id);
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(query): Query<HashMap<String, String>>,
) -> ComputeResult<Response> {
    listing(s, &ctx, mv, query, false).await
}

async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(query): Query<HashMap<String, String>>,
) -> ComputeResult<Response> {
    listing(s, &ctx, mv, query, true).await
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let service = ImageService::new(s.db.clone());
    let image = service.get(&id, viewer(&ctx)?.as_deref()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"image": detail(&s, &image)}),
    ))
}
