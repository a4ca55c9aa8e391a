//! Glance v2 (`/image`): image records in the state file, image data as files
//! under `<state-dir>/images/`.
//!
//! Layout: `images` holds the image routes (create, list, show, PATCH,
//! delete, actions, tags) and the visibility rules; `members` image sharing;
//! `data` upload, staging and download of image data; `format` the disk
//! format checks (qcow2 header parsing); `schemas` the JSON schemas and info
//! documents; `metadefs` metadata definitions; `tasks` the tasks API;
//! `cache` the image cache and `cache_api` its management API; `service` the
//! Rust API other services (Nova) use.

pub mod cache;
mod cache_api;
mod data;
pub mod format;
mod image_list;
mod image_patch;
pub(crate) mod images;
mod members;
mod metadefs;
pub mod qcow2;
pub mod qcow2_writer;
pub mod quota;
mod requests;
mod schemas;
pub mod service;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;

use crate::db::{Db, DbError};
use crate::http::body::BodyError;
use crate::http::{ApiVersion, json_response};
use crate::identity::{AuthContext, HasIdentity, IdentityState};
use crate::policy::{Service, Target};

/// Errors of the image service, rendered as Glance (webob) renders them.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The resource does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// The requested range cannot be satisfied.
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// The data goes past the size cap, a quota, or the store's free-space
    /// reserve (Glance's 413 for all three).
    #[error("{0}")]
    TooLarge(String),
    /// The content type of the request is not supported.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The image data does not match the declared disk format, or is unsafe.
    #[error("{0}")]
    BadImageData(String),
    /// The state file failed.
    #[error("internal error: {0}")]
    Db(#[from] DbError),
    /// The image store (files on disk) failed.
    #[error("image store error: {0}")]
    Io(#[from] std::io::Error),
    /// Authentication failed (from the identity service).
    #[error("{0}")]
    Unauthorized(String),
}

/// Glance's wording of a malformed request body.
impl From<BodyError> for ImageError {
    fn from(e: BodyError) -> Self {
        ImageError::BadRequest(match e {
            BodyError::Malformed(m) => format!("Malformed JSON in the request body: {m}"),
            BodyError::NotAnObject => "The request body must be a JSON object.".into(),
            BodyError::MemberNotAnObject(key) => format!("'{key}' must be an object."),
            BodyError::Missing(key) => format!("'{key}' is a required property."),
            BodyError::WrongType { key, expected } => {
                let article = if expected.starts_with(['a', 'e', 'i', 'o', 'u']) {
                    "an"
                } else {
                    "a"
                };
                format!("'{key}' is not {article} {expected}.")
            }
            BodyError::BadName(key) => {
                format!("'{key}' is a required property of at most 255 characters.")
            }
            BodyError::Unexpected(key) => {
                format!("Additional properties are not allowed ('{key}' was unexpected).")
            }
            BodyError::Invalid { key, reason } => format!("'{key}' is invalid: {reason}."),
        })
    }
}

pub type ImageResult<T> = Result<T, ImageError>;

impl From<crate::identity::IdentityError> for ImageError {
    fn from(e: crate::identity::IdentityError) -> Self {
        use crate::identity::IdentityError as I;
        match e {
            I::Unauthorized(m) => ImageError::Unauthorized(m),
            I::Forbidden(m) => ImageError::Forbidden(m),
            I::NotFound(m) => ImageError::NotFound(m),
            I::BadRequest(m) => ImageError::BadRequest(m),
            I::Conflict(m) => ImageError::Conflict(m),
            I::Db(d) => ImageError::Db(d),
            I::Internal(m) => ImageError::Io(std::io::Error::other(m)),
            I::TooManyRequests { message, .. } => ImageError::Io(std::io::Error::other(message)),
        }
    }
}

/// What an error response carries, so the Accept-aware middleware can
/// re-render it as JSON.
#[derive(Clone)]
struct ErrorInfo {
    status: StatusCode,
    message: String,
}

impl ImageError {
    fn status(&self) -> StatusCode {
        match self {
            ImageError::BadRequest(_) | ImageError::BadImageData(_) => StatusCode::BAD_REQUEST,
            ImageError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ImageError::Forbidden(_) => StatusCode::FORBIDDEN,
            ImageError::NotFound(_) => StatusCode::NOT_FOUND,
            ImageError::Conflict(_) => StatusCode::CONFLICT,
            ImageError::Db(e) if e.is_unique_violation() => StatusCode::CONFLICT,
            ImageError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            ImageError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ImageError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ImageError::Db(_) | ImageError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The reason phrase webob uses (it still says "Request Entity Too Large").
fn reason(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return "Request Entity Too Large";
    }
    status.canonical_reason().unwrap_or("Error")
}

fn status_line(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), reason(status))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl IntoResponse for ImageError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "image request failed");
        }
        let message = self.to_string();
        // webob's default error page (Glance answers browsers and curl with it).
        let line = status_line(status);
        let page = format!(
            "<html>\n <head>\n  <title>{line}</title>\n </head>\n <body>\n  <h1>{line}</h1>\n  {}<br /><br />\n\n\n\n </body>\n</html>",
            html_escape(&message)
        );
        let mut response = Response::new(Body::from(page));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        );
        // (A 401 gets `WWW-Authenticate` from `http::www_authenticate`.)
        response
            .extensions_mut()
            .insert(ErrorInfo { status, message });
        response
    }
}

/// Middleware: clients that ask for JSON (openstacksdk, tempest) get webob's
/// JSON error body `{"message", "code", "title"}` instead of the HTML page.
async fn error_format(req: Request, next: Next) -> Response {
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let mut response = next.run(req).await;
    if wants_json && let Some(info) = response.extensions_mut().remove::<ErrorInfo>() {
        let body = json!({
            "message": info.message,
            "code": status_line(info.status),
            "title": reason(info.status),
        });
        let mut json = json_response(info.status, &body);
        for (k, v) in response.headers() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                json.headers_mut().insert(k.clone(), v.clone());
            }
        }
        return json;
    }
    response
}

/// Where glance-direct keeps an image's staged data (written by `data`, removed with the
/// image by `images`).
pub(crate) fn staged_path(s: &ImageState, id: &str) -> PathBuf {
    s.dir.join(format!("{id}.staged"))
}

/// The interoperable import methods this Glance offers (`/v2/info/import`
/// and the `OpenStack-image-import-methods` header of a new image).
pub(crate) const IMPORT_METHODS: &[&str] = &["glance-direct", "glance-download"];

/// The image service's settings, from `yunhe serve`'s flags.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// Largest image accepted, in bytes (Glance's `image_size_cap`).
    pub size_cap: u64,
    /// Space uploads must leave free on the store's filesystem.
    pub min_free_space: quota::FreeSpaceReserve,
    /// The image cache's directory (`None`: `<state-dir>/image-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Whether the image cache (and its API) is on.
    pub cache_enabled: bool,
    /// Bytes the cache keeps before pruning the least recently used images
    /// (Glance's `image_cache_max_size`).
    pub cache_max_size: u64,
    /// Told after an image record is written (the dashboard's live updates).
    pub events: crate::events::Bus,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            size_cap: quota::DEFAULT_IMAGE_SIZE_CAP,
            min_free_space: quota::DEFAULT_MIN_FREE_SPACE,
            cache_dir: None,
            cache_enabled: true,
            cache_max_size: cache::DEFAULT_MAX_SIZE,
            events: Default::default(),
        }
    }
}

/// Shared state of the image service.
pub struct ImageState {
    pub identity: Arc<IdentityState>,
    pub db: Db,
    /// `<state-dir>/images`: one file per active image, named by its id.
    pub dir: PathBuf,
    pub config: ImageConfig,
    /// The image cache (`None` when turned off).
    pub cache: Option<Arc<cache::ImageCache>>,
}

impl HasIdentity for Arc<ImageState> {
    fn identity(&self) -> &Arc<IdentityState> {
        &self.identity
    }
}

impl ImageState {
    /// Runs a read on the state file.
    pub async fn read<F, T>(&self, f: F) -> ImageResult<T>
    where
        F: FnOnce(&rusqlite::Connection) -> ImageResult<T> + Send + 'static,
        T: Send + 'static,
    {
        match self.db.read(move |conn| Ok(f(conn))).await {
            Ok(inner) => inner,
            Err(e) => Err(ImageError::Db(e)),
        }
    }

    /// Runs a write in one transaction, rolled back when `f` fails.
    pub async fn write<F, T>(&self, f: F) -> ImageResult<T>
    where
        F: FnOnce(&rusqlite::Transaction) -> ImageResult<T> + Send + 'static,
        T: Send + 'static,
    {
        // A failing closure must roll back, so it returns a DbError; the real
        // error travels through this slot.
        let slot: Arc<std::sync::Mutex<Option<ImageError>>> = Arc::default();
        let inner_slot = slot.clone();
        let result = self
            .db
            .write(move |tx| match f(tx) {
                Ok(value) => Ok(value),
                Err(ImageError::Db(e)) => Err(e),
                Err(other) => {
                    if let Ok(mut s) = inner_slot.lock() {
                        *s = Some(other);
                    }
                    Err(DbError::Task("rolled back".into()))
                }
            })
            .await;
        match result {
            Ok(value) => {
                self.config
                    .events
                    .publish(crate::events::Kind::Image, "", None);
                Ok(value)
            }
            Err(e) => match slot.lock().ok().and_then(|mut s| s.take()) {
                Some(other) => Err(other),
                None => Err(ImageError::Db(e)),
            },
        }
    }

    /// Path of an image's committed data file.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
}

const VERSIONS: &[(&str, &str)] = &[
    ("v2.0", "SUPPORTED"),
    ("v2.1", "SUPPORTED"),
    ("v2.2", "SUPPORTED"),
    ("v2.3", "SUPPORTED"),
    ("v2.4", "SUPPORTED"),
    ("v2.5", "SUPPORTED"),
    ("v2.6", "SUPPORTED"),
    ("v2.7", "SUPPORTED"),
    ("v2.8", "SUPPORTED"),
    ("v2.9", "CURRENT"),
];

fn versions_doc(public_url: &str) -> serde_json::Value {
    let versions: Vec<_> = VERSIONS
        .iter()
        .map(|(id, status)| {
            ApiVersion {
                id,
                status,
                path: "/image/v2/",
                min_version: "",
                version: "",
                media_type: "application/vnd.openstack.image-v2+json",
                updated: "2024-01-01T00:00:00Z",
            }
            .to_json(public_url)
        })
        .collect();
    json!({"versions": versions})
}

/// Makes the store directory and repairs what a crash left behind: images
/// stuck in `saving` (or a staged or running import) go back to `queued`,
/// their tasks fail, and partial and staged files are removed.
fn recover(db: &Db, dir: &std::path::Path) -> ImageResult<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(".partial") || name.ends_with(".staged") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let now = images::now_string();
    let stuck = db.write_blocking(move |tx| {
        let mut ids = Vec::new();
        for status in ["saving", "uploading", "importing"] {
            for id in crate::db::image::image_ids_with_status(tx, status)? {
                crate::db::image::requeue_image(tx, &id, status, &now)?;
                ids.push(id);
            }
        }
        crate::db::image::fail_processing_tasks(tx, &now)?;
        Ok(ids)
    })?;
    if !stuck.is_empty() {
        tracing::warn!(
            count = stuck.len(),
            "images interrupted mid-upload are queued again"
        );
    }
    Ok(())
}

/// Enforces a Glance rule (`get_image`, `add_image`, …) for the caller on
/// the target: 403 with Glance's message when refused.
pub fn authorize(
    s: &ImageState,
    ctx: &AuthContext,
    rule: &str,
    target: &Target,
) -> ImageResult<()> {
    s.identity
        .policy
        .enforce(Service::Image, &ctx.credentials(), rule, target)
        .map_err(|e| {
            ImageError::Forbidden(format!(
                "You are not authorized to complete {} action.",
                e.rule()
            ))
        })
}

/// Whether a Glance rule allows the caller (for lists filtered per object
/// and for choosing between 403 and 404).
pub fn allows(s: &ImageState, ctx: &AuthContext, rule: &str, target: &Target) -> bool {
    s.identity
        .policy
        .allows(Service::Image, &ctx.credentials(), rule, target)
}

/// Glance's `context.is_admin`: the `context_is_admin` rule, which decides
/// whether database lookups see every project's images and namespaces.
pub fn context_is_admin(s: &ImageState, ctx: &AuthContext) -> bool {
    let target = Target::new().with_opt("project_id", ctx.project_id());
    allows(s, ctx, "context_is_admin", &target)
}

/// Routes of this service, at `/image`.
pub fn router(identity: Arc<IdentityState>, config: ImageConfig) -> Router {
    let db = identity.db.clone();
    let public_url = identity.public_url.clone();
    let dir = db.state_dir().join("images");
    if let Err(e) = recover(&db, &dir) {
        tracing::error!(error = %e, dir = %dir.display(), "image store recovery failed");
    }
    if let Err(e) = db.write_blocking(|tx| {
        crate::identity::limits::seed_registered_limits(
            tx,
            quota::SERVICE_TYPE,
            quota::DEFAULT_REGISTERED_LIMITS,
        )
    }) {
        tracing::error!(error = %e, "cannot register the image service's default limits");
    }
    let cache = if config.cache_enabled {
        let cache_dir = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| db.state_dir().join("image-cache"));
        match cache::ImageCache::start(
            db.clone(),
            dir.clone(),
            cache_dir.clone(),
            config.cache_max_size,
        ) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::error!(error = %e, dir = %cache_dir.display(), "image cache off: cannot open its directory");
                None
            }
        }
    } else {
        None
    };
    let state = Arc::new(ImageState {
        identity,
        db,
        dir,
        config,
        cache,
    });
    let doc = versions_doc(&public_url);
    let body = doc.clone();
    let body2 = doc.clone();
    let v2 = Router::new()
        .route(
            "/v2/images",
            get(image_list::list_images).post(images::create_image),
        )
        .route(
            "/v2/images/{id}",
            get(images::show_image)
                .patch(image_patch::update_image)
                .delete(images::delete_image),
        )
        .route(
            "/v2/images/{id}/actions/deactivate",
            post(images::deactivate),
        )
        .route(
            "/v2/images/{id}/actions/reactivate",
            post(images::reactivate),
        )
        .route(
            "/v2/images/{id}/tags/{tag}",
            put(images::add_tag).delete(images::delete_tag),
        )
        .route(
            "/v2/images/{id}/file",
            put(data::upload).get(data::download),
        )
        .route("/v2/images/{id}/stage", put(data::stage))
        .route("/v2/images/{id}/import", post(data::import))
        .route("/v2/images/{id}/tasks", get(data::list_tasks))
        .route("/v2/tasks", get(tasks::list_tasks).post(tasks::create_task))
        .route(
            "/v2/tasks/{id}",
            get(tasks::show_task).delete(tasks::delete_task),
        )
        .route(
            "/v2/cache",
            get(cache_api::cache_state).delete(cache_api::clear),
        )
        .route(
            "/v2/cache/{id}",
            put(cache_api::queue_image).delete(cache_api::delete_entry),
        )
        .route("/v2/cache/clean", post(cache_api::clean))
        .route("/v2/cache/prune", post(cache_api::prune))
        .route("/v2/cache/nodes/{id}", get(cache_api::cached_nodes))
        .route(
            "/v2/images/{id}/members",
            get(members::list_members).post(members::create_member),
        )
        .route(
            "/v2/images/{id}/members/{member}",
            get(members::show_member)
                .put(members::update_member)
                .delete(members::delete_member),
        )
        .route("/v2/schemas/{name}", get(schemas::schema))
        .route("/v2/schemas/metadefs/{name}", get(schemas::metadefs_schema))
        .route(
            "/v2/metadefs/resource_types",
            get(metadefs::list_resource_types),
        )
        .route(
            "/v2/metadefs/namespaces",
            get(metadefs::list_namespaces).post(metadefs::create_namespace),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}",
            get(metadefs::show_namespace)
                .put(metadefs::update_namespace)
                .delete(metadefs::delete_namespace),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/{kind}",
            get(metadefs::list_items)
                .post(metadefs::create_item)
                .delete(metadefs::delete_all_items),
        )
        .route(
            "/v2/metadefs/namespaces/{ns}/{kind}/{name}",
            get(metadefs::show_item)
                .post(metadefs::create_named_item)
                .put(metadefs::update_item)
                .delete(metadefs::delete_item),
        )
        .route("/v2/info/import", get(schemas::info_import))
        .route("/v2/info/stores", get(schemas::info_stores))
        .route("/v2/info/usage", get(schemas::info_usage))
        .route(
            "/v2",
            get(move || async move { json_response(StatusCode::OK, &body) }),
        )
        .route(
            "/v2/",
            get(move || async move { json_response(StatusCode::OK, &body2) }),
        )
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(error_format));
    let root = doc.clone();
    Router::new()
        .route(
            "/image",
            get(move || async move { json_response(StatusCode::OK, &doc) }),
        )
        // Glance answers version discovery with 300 Multiple Choices (tempest
        // insists); the bare `/image` keeps 200 for the server's root check.
        .route(
            "/image/",
            get(move || async move { json_response(StatusCode::MULTIPLE_CHOICES, &root) }),
        )
        .nest("/image", v2)
}

async fn not_found(_req: Request) -> ImageError {
    ImageError::NotFound("The resource could not be found.".into())
}

#[cfg(test)]
mod tests {
    use crate::policy::{Policy, Service};

    /// The image sources whose handlers name Glance rules.
    const SOURCES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("mod.rs")),
        ("images.rs", include_str!("images.rs")),
        ("data.rs", include_str!("data.rs")),
        ("members.rs", include_str!("members.rs")),
        ("metadefs.rs", include_str!("metadefs.rs")),
    ];

    /// Calls that take a rule name: their first string literal argument.
    const RULE_CALLS: &[&str] = &[
        "authorize(",
        "allows(",
        "authorize_image(",
        "load_for(",
        "load_image_for(",
        "load_namespace(",
        "begin(",
    ];

    /// The string literals in `text` outside any nested parentheses or
    /// brackets (a call's own arguments, not those of calls inside it).
    fn literals(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut depth = 0;
        let mut current: Option<String> = None;
        for c in text.chars() {
            match (&mut current, c) {
                (Some(lit), '"') => {
                    if depth == 0 {
                        out.push(std::mem::take(lit));
                    }
                    current = None;
                }
                (Some(lit), c) => lit.push(c),
                (None, '"') => current = Some(String::new()),
                (None, '(' | '[' | '{') => depth += 1,
                (None, ')' | ']' | '}') => depth -= 1,
                (None, _) => {}
            }
        }
        out
    }

    /// The argument text of each call of `name` (up to its closing paren).
    fn call_arguments<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find(name) {
            let preceded_by_ident = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let args = &rest[at + name.len()..];
            let mut depth = 1;
            let mut end = args.len();
            for (i, c) in args.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            if !preceded_by_ident {
                out.push(&args[..end]);
            }
            rest = &args[end..];
        }
        out
    }

    /// The source without its test module (whose literals are not rules).
    fn code(text: &str) -> &str {
        text.split("#[cfg(test)]").next().unwrap_or(text)
    }

    #[test]
    fn every_rule_the_handlers_name_is_a_glance_default() {
        let policy = Policy::defaults().expect("defaults");
        let mut seen = 0;
        for (file, text) in SOURCES {
            let text = code(text);
            let mut rules = Vec::new();
            for call in RULE_CALLS {
                for args in call_arguments(text, call) {
                    rules.extend(literals(args).into_iter().take(1));
                }
            }
            // The metadef item rules are a table.
            if let Some(table) = text.split("fn item_rule(").nth(1) {
                // From the opening brace of the body to its closing one.
                let body = table.split_once('{').map_or("", |(_, b)| b);
                let body = body.split("\n}\n").next().unwrap_or("");
                let kinds = ["objects", "properties", "tags", "resource_types"];
                let table: String = body.replace(['{', '}'], " ");
                rules.extend(
                    literals(&table)
                        .into_iter()
                        .filter(|l| !kinds.contains(&l.as_str())),
                );
            }
            for rule in rules {
                seen += 1;
                assert!(
                    policy.has_rule(Service::Image, &rule),
                    "{file}: '{rule}' is not one of Glance's default rules"
                );
            }
        }
        // Every handler names one: far more than a handful.
        assert!(
            seen > 40,
            "only {seen} rule names found: the scan is broken"
        );
    }
}
