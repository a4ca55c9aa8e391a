//! Image data: `PUT .../file` (and `PUT .../stage` + `POST .../import` with
//! glance-direct) stream the body to a temporary file beside the store,
//! hashing as it goes, then check the format and rename it into place;
//! `GET .../file` streams it back, with Range support.
//!
//! Bounds: every write counts the data against Glance's `image_size_cap`,
//! the project's byte quota and the free-space reserve of the store's
//! filesystem (`quota::DataBudget`) and stops with 413 at the first one it
//! passes; the partial file is removed. The request's `Content-Length`, when
//! given, is checked against them before any byte is read.
//!
//! Crash safety: the temporary file is named `<id>.partial-<uuid>` and only
//! renamed to `<id>` once complete; the record goes `queued → saving →
//! active` around it. A crash leaves `saving` (or a staged import) and a
//! partial file, which the next start turns back into `queued` and removes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use md5::Md5;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha512};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::format::{self, FormatError};
use super::images::{authorize_image, caller_project, load_for, load_visible, now_string};
use super::quota::{self, DataBudget};
use super::{ImageError, ImageResult, ImageState, context_is_admin, staged_path};
use crate::db::image::{self as store, Image};
use crate::http::no_content;
use crate::identity::Auth;

/// What was learned while receiving image data.
struct Received {
    size: i64,
    md5: String,
    sha512: String,
    virtual_size: Option<i64>,
}

impl From<FormatError> for ImageError {
    fn from(e: FormatError) -> Self {
        match e {
            FormatError::Io(io) => ImageError::Io(io),
            other => ImageError::BadImageData(other.to_string()),
        }
    }
}

/// Streams the request body into `path`, hashing it and counting it against
/// `budget`; never holds it in memory.
async fn receive_to(
    path: &std::path::Path,
    body: Body,
    budget: &mut DataBudget,
) -> ImageResult<(i64, String, String)> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut md5 = Md5::new();
    let mut sha = Sha512::new();
    let mut size: i64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ImageError::BadRequest(format!("The image data could not be read: {e}"))
        })?;
        budget.admit(chunk.len())?;
        md5.update(&chunk);
        sha.update(&chunk);
        size += chunk.len() as i64;
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok((
        size,
        hex::encode(md5.finalize()),
        hex::encode(sha.finalize()),
    ))
}

/// Checks the file's format (on the blocking pool) and returns the virtual size.
async fn check_format(path: PathBuf, disk_format: Option<String>) -> ImageResult<Option<i64>> {
    let checked =
        tokio::task::spawn_blocking(move || format::check_file(&path, disk_format.as_deref()))
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e)))??;
    Ok(checked.map(|v| v as i64))
}

fn partial_path(s: &ImageState, id: &str) -> PathBuf {
    s.dir
        .join(format!("{id}.partial-{}", uuid::Uuid::new_v4().simple()))
}

/// Receives, checks and moves data into place for `image`.
async fn store_data(
    s: &ImageState,
    image: &Image,
    body: Body,
    mut budget: DataBudget,
) -> ImageResult<Received> {
    let tmp = partial_path(s, &image.id);
    let result = async {
        let (size, md5, sha512) = receive_to(&tmp, body, &mut budget).await?;
        let virtual_size = check_format(tmp.clone(), image.disk_format.clone()).await?;
        tokio::fs::rename(&tmp, s.data_path(&image.id)).await?;
        Ok(Received {
            size,
            md5,
            sha512,
            virtual_size,
        })
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Marks the image active with what was received; if it vanished meanwhile,
/// its data goes too.
async fn activate(
    s: &ImageState,
    id: String,
    from: &'static str,
    got: Received,
) -> ImageResult<()> {
    let path = s.data_path(&id);
    let done = s
        .write(move |tx| {
            let Some(mut image) = store::get_image(tx, &id)? else {
                return Ok(false);
            };
            if image.status != from {
                return Ok(false);
            }
            image.status = "active".into();
            image.size = Some(got.size);
            image.virtual_size = got.virtual_size;
            image.checksum = Some(got.md5);
            image.os_hash_algo = Some("sha512".into());
            image.os_hash_value = Some(got.sha512);
            image.updated_at = now_string();
            store::update_image(tx, &image)?;
            Ok(true)
        })
        .await?;
    if !done {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(ImageError::Conflict(
            "The image was deleted or changed during the upload.".into(),
        ));
    }
    Ok(())
}

async fn back_to_queued(s: &ImageState, id: String, from: &'static str) {
    let now = now_string();
    if let Err(e) = s
        .write(move |tx| Ok(store::requeue_image(tx, &id, from, &now)?))
        .await
    {
        tracing::error!(error = %e, "cannot requeue an image after a failed upload");
    }
}

/// The project whose quotas an image's data counts against: its owner, else
/// the caller's project (`None`: neither, nothing to count against).
fn quota_project(ctx: &crate::identity::AuthContext, image: &Image) -> Option<String> {
    image
        .owner
        .clone()
        .filter(|o| !o.is_empty())
        .or_else(|| Some(caller_project(ctx)).filter(|p| !p.is_empty()))
}

/// The body length the client declared, if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Moves a queued image to `to` if `rule` allows the caller, or explains
/// why it cannot take data: the
/// byte quota `resource` (with the declared length), the size cap and the
/// free space are checked first and `image_count_uploading` after the move,
/// as Glance does; a refusal leaves the image queued.
async fn begin(
    s: &Arc<ImageState>,
    ctx: Arc<crate::identity::AuthContext>,
    id: String,
    rule: &'static str,
    to: &'static str,
    (resource, declared): (&'static str, Option<u64>),
) -> ImageResult<(Image, DataBudget)> {
    let state = s.clone();
    let dir = s.dir.clone();
    s.write(move |tx| {
        let image = load_for(tx, &state, &ctx, &id, rule)?;
        if image.status != "queued" {
            return Err(ImageError::Conflict(format!(
                "Image status transition from {} to {to} is not allowed",
                image.status
            )));
        }
        let project = quota_project(&ctx, &image);
        let byte_quota = match &project {
            Some(p) => Some(quota::byte_quota(tx, p, resource)?),
            None => None,
        };
        let mut budget = DataBudget::new(&dir, byte_quota, &state.config);
        budget.check_declared(declared)?;
        store::transition_status(tx, &id, "queued", to, &now_string())?;
        if let Some(p) = &project {
            quota::enforce(tx, p, quota::IMAGE_COUNT_UPLOADING, 0)?;
        }
        Ok((image, budget))
    })
    .await
}

pub async fn upload(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ImageResult<Response> {
    let declared = declared_length(&headers);
    let (image, budget) = begin(
        &s,
        ctx,
        id.clone(),
        "upload_image",
        "saving",
        (quota::IMAGE_SIZE_TOTAL, declared),
    )
    .await?;
    match store_data(&s, &image, body, budget).await {
        Ok(got) => {
            activate(&s, id, "saving", got).await?;
            Ok(no_content())
        }
        Err(e) => {
            back_to_queued(&s, id, "saving").await;
            Err(e)
        }
    }
}

/// `PUT .../stage`: the first half of glance-direct import.
pub async fn stage(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ImageResult<Response> {
    // Glance has no rule of its own for staging: it is modify_image.
    let declared = declared_length(&headers);
    let (_, mut budget) = begin(
        &s,
        ctx,
        id.clone(),
        "modify_image",
        "uploading",
        (quota::IMAGE_STAGE_TOTAL, declared),
    )
    .await?;
    let tmp = partial_path(&s, &id);
    let result = async {
        let (size, _, _) = receive_to(&tmp, body, &mut budget).await?;
        tokio::fs::rename(&tmp, staged_path(&s, &id)).await?;
        // Glance records the staged size: it counts towards image_stage_total.
        let (image_id, now) = (id.clone(), now_string());
        s.write(move |tx| Ok(store::set_staged_size(tx, &image_id, size, &now)?))
            .await?;
        Ok::<(), ImageError>(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        let _ = tokio::fs::remove_file(staged_path(&s, &id)).await;
        back_to_queued(&s, id, "uploading").await;
        return Err(e);
    }
    Ok(no_content())
}

/// Image properties glance-download copies from the source image (Glance's
/// default `glance_download_properties`).
fn copied_by_download(key: &str) -> bool {
    key.starts_with("hw_")
        || key.starts_with("trait:")
        || ["os_distro", "os_secure_boot", "os_type"].contains(&key)
}

/// `POST .../import`'s body: `{"method": {"name": ..., ...}}` and, for
/// multi-store clouds, `stores`/`all_stores` (one store here: not read).
#[derive(Debug, Deserialize)]
struct ImportRequest {
    #[serde(default)]
    method: MethodRequest,
}

/// The `method` member as sent; [`ImportRequest::parse`] makes it an
/// [`ImportMethod`]. Members of other methods (`uri` of web-download) are
/// ignored, as Glance's import schema allows.
#[derive(Debug, Default, Deserialize)]
struct MethodRequest {
    #[serde(default)]
    name: String,
    glance_image_id: Option<String>,
    glance_region: Option<String>,
    glance_service_interface: Option<String>,
}

/// An import method this cloud runs.
#[derive(Debug, PartialEq, Eq)]
enum ImportMethod {
    /// Activates the data staged with `PUT .../stage`.
    GlanceDirect,
    /// Copies an image of a region of this cloud.
    GlanceDownload {
        image_id: String,
        region: String,
        interface: String,
    },
}

impl ImportRequest {
    fn parse(request: Value) -> ImageResult<ImportMethod> {
        let method = crate::http::body::decode::<ImportRequest>(request)?.method;
        match method.name.as_str() {
            "glance-direct" => Ok(ImportMethod::GlanceDirect),
            "glance-download" => {
                let image_id = method.glance_image_id.unwrap_or_default();
                if uuid::Uuid::parse_str(&image_id).is_err() {
                    return Err(ImageError::BadRequest(format!(
                        "Source image id does not look like a UUID: {image_id}"
                    )));
                }
                Ok(ImportMethod::GlanceDownload {
                    image_id,
                    region: method.glance_region.unwrap_or_default(),
                    interface: method
                        .glance_service_interface
                        .unwrap_or_else(|| "public".into()),
                })
            }
            other => Err(ImageError::BadRequest(format!(
                "Import method '{other}' is not supported; this cloud offers glance-direct and glance-download."
            ))),
        }
    }
}

impl ImportMethod {
    fn name(&self) -> &'static str {
        match self {
            ImportMethod::GlanceDirect => "glance-direct",
            ImportMethod::GlanceDownload { .. } => "glance-download",
        }
    }
}

/// `POST .../import`: glance-direct (activates the staged data) or
/// glance-download (copies an image of this cloud's region into this one).
/// Both run as a task (`GET .../tasks`) after the 202.
pub async fn import(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ImageResult<Response> {
    let request = Value::Object(crate::http::body::parse_object(&body)?);
    let method = ImportRequest::parse(request.clone())?;
    let (from, source) = match &method {
        ImportMethod::GlanceDirect => ("uploading", None),
        ImportMethod::GlanceDownload {
            image_id,
            region,
            interface,
        } => (
            "queued",
            Some((image_id.clone(), region.clone(), interface.clone())),
        ),
    };
    let method = method.name();
    let now = now_string();
    let task = store::Task {
        id: uuid::Uuid::new_v4().to_string(),
        image_id: id.clone(),
        status: "processing".into(),
        message: String::new(),
        input: request.clone(),
        owner: ctx.project_id().map(str::to_string),
        created_at: now.clone(),
        updated_at: now,
    };
    let task_id = task.id.clone();
    let image = {
        let id = id.clone();
        let ctx = ctx.clone();
        let state = s.clone();
        s.write(move |tx| {
            // Glance: copy-image has copy_image; every other method needs
            // the caller to be allowed to modify the image.
            let image = load_for(tx, &state, &ctx, &id, "modify_image")?;
            // Glance checks image_size_total (delta 0) before an import.
            if let Some(p) = quota_project(&ctx, &image) {
                quota::enforce(tx, &p, quota::IMAGE_SIZE_TOTAL, 0)?;
            }
            if image.status != from {
                return Err(ImageError::Conflict(format!(
                    "Image {id} is in status '{}'; {method} needs '{from}'.",
                    image.status
                )));
            }
            store::transition_status(tx, &id, from, "importing", &now_string())?;
            store::insert_task(tx, &task)?;
            Ok(image)
        })
        .await?
    };
    let state = s.clone();
    tokio::spawn(async move {
        let result = match source {
            None => import_staged(&state, image).await,
            Some((source, region, interface)) => {
                download_from_region(&state, ctx, image, &source, &region, &interface).await
            }
        };
        let (status, message) = match &result {
            Ok(()) => ("success", String::new()),
            Err(e) => {
                tracing::warn!(error = %e, image = %id, "image import failed");
                back_to_queued(&state, id.clone(), "importing").await;
                ("failure", e.to_string())
            }
        };
        let now = now_string();
        if let Err(e) = state
            .write(move |tx| Ok(store::finish_task(tx, &task_id, status, &message, &now)?))
            .await
        {
            tracing::error!(error = %e, "cannot record the outcome of an import task");
        }
    });
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::ACCEPTED,
    ))
}

/// glance-direct: checks the staged data and moves it into the store.
async fn import_staged(state: &ImageState, image: Image) -> ImageResult<()> {
    let staged = staged_path(state, &image.id);
    let result = async {
        let file = tokio::fs::File::open(&staged).await?;
        let body = Body::from_stream(tokio_file_stream(file, u64::MAX));
        // The staged bytes were counted against image_stage_total already;
        // the copy still needs room on the disk and fits the cap.
        let budget = DataBudget::new(&state.dir, None, &state.config);
        let got = store_data(state, &image, body, budget).await?;
        activate(state, image.id.clone(), "importing", got).await
    }
    .await;
    let _ = tokio::fs::remove_file(&staged).await;
    result
}

/// glance-download: this cloud has one region, so the source is an image of
/// this very store that the caller may see.
async fn download_from_region(
    state: &Arc<ImageState>,
    ctx: Arc<crate::identity::AuthContext>,
    image: Image,
    source: &str,
    region: &str,
    interface: &str,
) -> ImageResult<()> {
    if region != crate::identity::bootstrap::REGION
        || !["public", "internal", "admin"].contains(&interface)
    {
        return Err(ImageError::NotFound(format!(
            "No image service endpoint in region '{region}' with interface '{interface}'."
        )));
    }
    let source_id = source.to_string();
    let policy_state = state.clone();
    let src = state
        .read(move |conn| {
            // The source is read as the remote Glance would serve it to
            // the caller's token: its data needs download_image.
            let src = load_for(conn, &policy_state, &ctx, &source_id, "download_image")?;
            if src.status != "active" {
                return Err(ImageError::Conflict(format!(
                    "Source image {source_id} is not active."
                )));
            }
            Ok(src)
        })
        .await?;
    // Formats and the copied properties first, as Glance's download task does.
    let dst_id = image.id.clone();
    let src_copy = src.clone();
    let image = state
        .write(move |tx| {
            let mut dst = store::get_image(tx, &dst_id)?
                .ok_or_else(|| ImageError::NotFound(format!("No image found with ID {dst_id}")))?;
            dst.disk_format = src_copy.disk_format.clone();
            dst.container_format = src_copy.container_format.clone();
            for (k, v) in &src_copy.properties {
                if copied_by_download(k) {
                    dst.properties.insert(k.clone(), v.clone());
                }
            }
            dst.updated_at = now_string();
            store::update_image(tx, &dst)?;
            Ok(dst)
        })
        .await?;
    let owner = image.owner.clone().unwrap_or_default();
    let byte_quota = if owner.is_empty() {
        None
    } else {
        Some(
            state
                .read(move |conn| quota::byte_quota(conn, &owner, quota::IMAGE_SIZE_TOTAL))
                .await?,
        )
    };
    let mut budget = DataBudget::new(&state.dir, byte_quota, &state.config);
    budget.check_declared(src.size.and_then(|n| u64::try_from(n).ok()))?;
    let file = tokio::fs::File::open(state.data_path(&src.id)).await?;
    let body = Body::from_stream(tokio_file_stream(file, u64::MAX));
    let got = store_data(state, &image, body, budget).await?;
    activate(state, image.id.clone(), "importing", got).await
}

/// `GET .../tasks`: the import tasks of an image.
pub async fn list_tasks(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    let state = s.clone();
    let tasks = s
        .read(move |conn| {
            load_for(conn, &state, &ctx, &id, "get_image")?;
            Ok(store::list_tasks(conn, &id)?)
        })
        .await?;
    let tasks: Vec<Value> = tasks.iter().map(super::tasks::full_view).collect();
    Ok(crate::http::json_response(
        StatusCode::OK,
        &serde_json::json!({"tasks": tasks}),
    ))
}

/// Reads up to `len` bytes of a file as a stream of chunks.
fn tokio_file_stream(
    file: tokio::fs::File,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = left.min(256 * 1024) as usize;
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}

/// Parses `Range: bytes=a-b` (one range) against a file of `size` bytes.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.trim().is_empty() {
        let n: u64 = b.trim().parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size.checked_sub(1)?)
    } else {
        let start: u64 = a.trim().parse().ok()?;
        let end: u64 = if b.trim().is_empty() {
            size.checked_sub(1)?
        } else {
            b.trim().parse::<u64>().ok()?.min(size.checked_sub(1)?)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

pub async fn download(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ImageResult<Response> {
    let state = s.clone();
    let image = s
        .read(move |conn| {
            let admin = context_is_admin(&state, &ctx);
            let image = load_visible(conn, &ctx, admin, &id)?;
            if image.status == "deactivated" && !admin {
                return Err(ImageError::Forbidden(
                    "The requested image has been deactivated. Image data download is forbidden."
                        .into(),
                ));
            }
            authorize_image(&state, &ctx, "download_image", &image)?;
            Ok(image)
        })
        .await?;
    if image.status != "active" && image.status != "deactivated" {
        return Ok(no_content());
    }
    // A cached copy is read in place of the store's file (counting a hit).
    let cached = match &s.cache {
        Some(cache) => cache.open_for_read(&image.id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "image cache lookup failed; reading the store");
            None
        }),
        None => None,
    };
    let path = cached.unwrap_or_else(|| s.data_path(&image.id));
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::NotFound(format!(
                "Image {} has no data.",
                image.id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let size = file.metadata().await?.len();
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes");
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, start, len) = match range {
        Some(r) => match parse_range(&r, size) {
            Some((start, end)) => {
                builder =
                    builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            None => {
                let mut response = ImageError::RangeNotSatisfiable(format!(
                    "Requested range {r} not satisfiable for an image of {size} bytes."
                ))
                .into_response_with_range(size);
                response
                    .headers_mut()
                    .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                return Ok(response);
            }
        },
        None => {
            if let Some(md5) = &image.checksum {
                builder = builder.header("Content-MD5", md5.as_str());
            }
            (StatusCode::OK, 0, size)
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await?;
    }
    let body = Body::from_stream(tokio_file_stream(file, len));
    builder
        .status(status)
        .header(header::CONTENT_LENGTH, len)
        .body(body)
        .map_err(|e| ImageError::Io(std::io::Error::other(e)))
}

impl ImageError {
    /// A 416 response naming the full size, as RFC 9110 asks.
    fn into_response_with_range(self, size: u64) -> Response {
        let mut response = axum::response::IntoResponse::into_response(self);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::image::requests::refused;

    #[test]
    fn an_import_names_a_method_this_cloud_runs() {
        assert_eq!(
            ImportRequest::parse(json!({"method": {"name": "glance-direct"}, "all_stores": false}))
                .ok(),
            Some(ImportMethod::GlanceDirect)
        );
        let id = "0b5a3c6e-2bd5-4a3c-9a4f-1d2e3f405060";
        assert_eq!(
            ImportRequest::parse(json!({"method": {"name": "glance-download",
                "glance_image_id": id, "glance_region": "RegionOne"}}))
            .ok(),
            Some(ImportMethod::GlanceDownload {
                image_id: id.into(),
                region: "RegionOne".into(),
                interface: "public".into(),
            })
        );
        assert_eq!(
            refused(ImportRequest::parse(
                json!({"method": {"name": "glance-download",
                "glance_image_id": "foo"}})
            )),
            "Source image id does not look like a UUID: foo"
        );
        assert!(
            refused(ImportRequest::parse(
                json!({"method": {"name": "web-download",
                "uri": "http://x"}})
            ))
            .starts_with("Import method 'web-download' is not supported")
        );
        assert!(
            refused(ImportRequest::parse(json!({})))
                .starts_with("Import method '' is not supported")
        );
        assert_eq!(
            refused(ImportRequest::parse(json!({"method": {"name": 1}}))),
            "'method.name' is not a string."
        );
    }
}
