//! Glance's cache management API (`/v2/cache`, API 2.14+): list the cached
//! and queued images, queue one, take one out, clear, clean and prune. The
//! cache itself is `cache::ImageCache`; every call is for admins by default
//! (`cache_list`, `cache_image`, `cache_delete`, `cache_clean`,
//! `cache_prune`). With the cache turned off (`--no-image-cache`) the API
//! answers 404 as Glance does without `image_cache_dir`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::cache::{CacheError, ClearTarget, ImageCache};
use super::images::{image_target, load_visible};
use super::{ImageError, ImageResult, ImageState, authorize, context_is_admin};
use crate::db::image::Image;
use crate::http::{json_response, no_content};
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

impl From<CacheError> for ImageError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Db(d) => ImageError::Db(d),
            CacheError::Io(io) => ImageError::Io(io),
            other => ImageError::Io(std::io::Error::other(other.to_string())),
        }
    }
}

/// One cached image as Glance lists it.
#[derive(Serialize)]
struct CachedImageView {
    image_id: String,
    hits: i64,
    last_accessed: f64,
    last_modified: f64,
    size: i64,
}

/// `GET /v2/cache`.
#[derive(Serialize)]
struct CacheStateView {
    cached_images: Vec<CachedImageView>,
    queued_images: Vec<String>,
}

/// `POST /v2/cache/prune`.
#[derive(Serialize)]
struct PruneView {
    total_files_pruned: usize,
    total_bytes_pruned: u64,
}

fn caller_target(ctx: &AuthContext) -> Target {
    Target::new().with_opt("project_id", ctx.project_id())
}

/// The cache, or Glance's 404 for a site without one.
fn enabled(s: &ImageState) -> ImageResult<&Arc<ImageCache>> {
    s.cache.as_ref().ok_or_else(|| {
        ImageError::NotFound("Caching via API is not supported at this site.".into())
    })
}

/// `GET /v2/cache`: cached images (with hits and times) and the queue.
pub async fn cache_state(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "cache_list", &caller_target(&ctx))?;
    let cache = enabled(&s)?;
    let (cached, queued) = cache.state().await?;
    let view = CacheStateView {
        cached_images: cached
            .into_iter()
            .map(|e| CachedImageView {
                image_id: e.image_id,
                hits: e.hits,
                last_accessed: e.last_accessed,
                last_modified: e.last_modified,
                size: e.size,
            })
            .collect(),
        queued_images: queued,
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// The image as the caller sees it (`None`: absent or not visible).
async fn visible_image(
    s: &Arc<ImageState>,
    ctx: &Arc<AuthContext>,
    id: &str,
) -> ImageResult<Option<Image>> {
    let (state, ctx, id) = (s.clone(), ctx.clone(), id.to_string());
    s.read(move |conn| {
        let admin = context_is_admin(&state, &ctx);
        match load_visible(conn, &ctx, admin, &id) {
            Ok(image) => Ok(Some(image)),
            Err(ImageError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    })
    .await
}

/// `PUT /v2/cache/{image_id}`: queues an active image; 202.
pub async fn queue_image(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    let image = visible_image(&s, &ctx, &id)
        .await?
        .ok_or_else(|| ImageError::NotFound(format!("Image {id} not found.")))?;
    authorize(&s, &ctx, "cache_image", &image_target(&ctx, &image))?;
    let cache = enabled(&s)?;
    if image.status != "active" {
        return Err(ImageError::BadRequest(
            "Only images with status active can be targeted for queueing".into(),
        ));
    }
    cache.queue(&image.id).await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::ACCEPTED,
    ))
}

/// `DELETE /v2/cache/{image_id}`: takes an image out of the cache and the
/// queue (also one whose image record is gone); 204.
pub async fn delete_entry(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    let image = visible_image(&s, &ctx, &id).await?;
    let cache = enabled(&s)?;
    let target = match &image {
        Some(image) => image_target(&ctx, image),
        None => {
            if !cache.contains(&id).await? {
                return Err(ImageError::NotFound(format!("Image {id} not found.")));
            }
            caller_target(&ctx)
        }
    };
    authorize(&s, &ctx, "cache_delete", &target)?;
    cache.delete(&id).await?;
    Ok(no_content())
}

/// `DELETE /v2/cache`: clears the cache, the queue (header
/// `x-image-cache-clear-target: cache|queue`) or both; 204.
pub async fn clear(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    headers: HeaderMap,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "cache_delete", &caller_target(&ctx))?;
    let cache = enabled(&s)?;
    let target = headers
        .get("x-image-cache-clear-target")
        .map(|v| v.to_str().unwrap_or("invalid").to_ascii_lowercase());
    let target = match target.as_deref() {
        None | Some("") => ClearTarget::Both,
        Some("cache") => ClearTarget::Cache,
        Some("queue") => ClearTarget::Queue,
        Some(_) => {
            return Err(ImageError::BadRequest(
                "If provided 'x-image-cache-clear-target' must be 'cache', 'queue' or empty string."
                    .into(),
            ));
        }
    };
    cache.clear(target).await?;
    Ok(no_content())
}

/// `POST /v2/cache/clean`: drops stalled copies and entries whose file is gone.
pub async fn clean(State(s): State<Arc<ImageState>>, Auth(ctx): Auth) -> ImageResult<Response> {
    authorize(&s, &ctx, "cache_clean", &caller_target(&ctx))?;
    enabled(&s)?.clean().await?;
    Ok(axum::response::IntoResponse::into_response(StatusCode::OK))
}

/// `POST /v2/cache/prune`: shrinks the cache to its maximum size.
pub async fn prune(State(s): State<Arc<ImageState>>, Auth(ctx): Auth) -> ImageResult<Response> {
    authorize(&s, &ctx, "cache_prune", &caller_target(&ctx))?;
    let (files, bytes) = enabled(&s)?.prune().await?;
    Ok(json_response(
        StatusCode::OK,
        &PruneView {
            total_files_pruned: files,
            total_bytes_pruned: bytes,
        },
    ))
}

/// `GET /v2/cache/nodes/{image_id}`: Glance answers it only with its
/// centralized cache driver; yunhe is one node.
pub async fn cached_nodes(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(_id): Path<String>,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "list_cached_nodes", &caller_target(&ctx))?;
    enabled(&s)?;
    Err(ImageError::Conflict(
        "Centralized caching is not enabled".into(),
    ))
}
