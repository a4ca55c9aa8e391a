//! Image records: create, show, delete, deactivate/reactivate, tags; the
//! attribute rules PATCH applies; and who may see or change what. Listing
//! is in `image_list`, PATCH in `image_patch`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::requests::{self, nullable, present};
use super::{ImageError, ImageResult, ImageState, allows, authorize, context_is_admin};
use crate::db::image::{self as store, Image};
use crate::http::{json_response, no_content};
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

pub const DISK_FORMATS: &[&str] = &[
    "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop",
];
pub const CONTAINER_FORMATS: &[&str] = &[
    "ami",
    "ari",
    "aki",
    "bare",
    "ovf",
    "ova",
    "docker",
    "compressed",
];
pub const VISIBILITIES: &[&str] = &["public", "private", "shared", "community"];

/// Attributes the server owns: a client may not set, change or remove them.
const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "direct_url",
    "stores",
    "locations",
];

/// Base attributes that are columns, not extra properties.
pub(super) const BASE: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "owner",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "tags",
];

pub fn now_string() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The caller's project ('' when the token has no project scope).
pub fn caller_project(ctx: &AuthContext) -> String {
    ctx.project_id().unwrap_or("").to_string()
}

/// Glance's JSON view of an image.
pub fn view(image: &Image) -> Value {
    let mut obj = Map::new();
    for (k, v) in &image.properties {
        obj.insert(k.clone(), v.clone());
    }
    let base = json!({
        "id": image.id,
        "name": image.name,
        "status": image.status,
        "visibility": image.visibility,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "owner": image.owner,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "created_at": image.created_at,
        "updated_at": image.updated_at,
        "tags": image.tags,
        "self": format!("/v2/images/{}", image.id),
        "file": format!("/v2/images/{}/file", image.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(base) = base {
        obj.extend(base);
    }
    if image.status == "active" {
        obj.insert("stores".into(), json!("file"));
    }
    Value::Object(obj)
}

fn not_found(id: &str) -> ImageError {
    ImageError::NotFound(format!("No image found with ID {id}"))
}

/// True when the caller may see the image at all: Glance's database
/// scoping, where `admin` is the `context_is_admin` rule.
fn can_see(ctx: &AuthContext, admin: bool, image: &Image, member_status: Option<&str>) -> bool {
    if admin {
        return true;
    }
    let project = caller_project(ctx);
    if image.owner.as_deref() == Some(project.as_str()) && !project.is_empty() {
        return true;
    }
    match image.visibility.as_str() {
        "public" | "community" => true,
        "shared" => member_status.is_some(),
        _ => false,
    }
}

/// The image if the caller may see it, else 404 (`admin`: the
/// `context_is_admin` rule holds).
pub fn load_visible(
    conn: &Connection,
    ctx: &AuthContext,
    admin: bool,
    id: &str,
) -> ImageResult<Image> {
    let image = store::get_image(conn, id)?.ok_or_else(|| not_found(id))?;
    let project = caller_project(ctx);
    let membership = store::get_member(conn, id, &project)?;
    if can_see(
        ctx,
        admin,
        &image,
        membership.as_ref().map(|m| m.status.as_str()),
    ) {
        Ok(image)
    } else {
        Err(not_found(id))
    }
}

/// The target Glance's image rules read (its ImageTarget): the owner as
/// `project_id` and `owner`, the visibility, and as `member_id` the
/// caller's project when the image is shared and the caller not its
/// owner; then the image's other attributes and string properties.
pub fn image_target(ctx: &AuthContext, image: &Image) -> Target {
    let member = ctx
        .project_id()
        .filter(|p| image.visibility == "shared" && image.owner.as_deref() != Some(*p));
    let mut target = Target::new()
        .with_opt("project_id", image.owner.clone())
        .with_opt("owner", image.owner.clone())
        .with("visibility", image.visibility.clone())
        .with_opt("member_id", member)
        .with("id", image.id.clone())
        .with("image_id", image.id.clone())
        .with("status", image.status.clone())
        .with_opt("name", image.name.clone())
        .with("protected", if image.protected { "True" } else { "False" });
    for (key, value) in &image.properties {
        if let Some(value) = value.as_str() {
            target = target.with(key, value);
        }
    }
    target
}

/// Enforces an image rule on an image the caller can see, answering as
/// Glance does: 404 when the caller may not even `get_image` it, else 403.
pub fn authorize_image(
    s: &ImageState,
    ctx: &AuthContext,
    rule: &str,
    image: &Image,
) -> ImageResult<()> {
    let target = image_target(ctx, image);
    match authorize(s, ctx, rule, &target) {
        Ok(()) => Ok(()),
        Err(_) if rule == "get_image" || !allows(s, ctx, "get_image", &target) => {
            Err(not_found(&image.id))
        }
        Err(refused) => Err(refused),
    }
}

/// The image for an operation under `rule`: 404 when the caller cannot see
/// it, 403 when it can but the rule refuses.
pub fn load_for(
    conn: &Connection,
    s: &ImageState,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
) -> ImageResult<Image> {
    let image = load_visible(conn, ctx, context_is_admin(s, ctx), id)?;
    authorize_image(s, ctx, rule, &image)?;
    Ok(image)
}

/// What a change of attributes may need beyond `add_image`/`modify_image`:
/// Glance's visibility rules (`publicize_image`, `communitize_image`) and
/// `context_is_admin` for a new owner, on the image's target.
pub(super) struct Changer<'a> {
    pub(super) s: &'a ImageState,
    pub(super) ctx: &'a AuthContext,
    pub(super) target: Target,
}

fn check_visibility(changer: &Changer, visibility: &str) -> ImageResult<()> {
    if !VISIBILITIES.contains(&visibility) {
        return Err(ImageError::BadRequest(format!(
            "Invalid visibility value: {visibility}"
        )));
    }
    let rule = match visibility {
        "public" => "publicize_image",
        "community" => "communitize_image",
        _ => return Ok(()),
    };
    authorize(changer.s, changer.ctx, rule, &changer.target)
}

pub(super) fn check_read_only(key: &str) -> ImageResult<()> {
    if READ_ONLY.contains(&key) {
        return Err(ImageError::Forbidden(format!(
            "Attribute '{key}' is read-only."
        )));
    }
    if key.starts_with("os_glance") {
        return Err(ImageError::Forbidden(format!(
            "Attribute '{key}' is reserved."
        )));
    }
    Ok(())
}

fn as_int(key: &str, value: &Value) -> ImageResult<i64> {
    match value.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(ImageError::BadRequest(format!(
            "Invalid value for '{key}': must be a non-negative integer."
        ))),
    }
}

fn as_bool(key: &str, value: &Value) -> ImageResult<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(ImageError::BadRequest(format!(
            "Invalid value for '{key}': must be a boolean."
        ))),
    }
}

fn as_opt_string(key: &str, value: &Value, max: usize) -> ImageResult<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
        _ => Err(ImageError::BadRequest(format!(
            "Invalid value for '{key}': must be a string of at most {max} characters."
        ))),
    }
}

pub(super) fn check_tag(tag: &str) -> ImageResult<()> {
    if tag.chars().count() > 255 {
        return Err(ImageError::BadRequest(
            "Image tag must be at most 255 characters.".into(),
        ));
    }
    Ok(())
}

/// Sets one attribute (base or extra) on an image, with Glance's rules.
pub(super) fn set_attribute(
    changer: &Changer,
    image: &mut Image,
    key: &str,
    value: &Value,
) -> ImageResult<()> {
    check_read_only(key)?;
    match key {
        "name" => image.name = as_opt_string(key, value, 255)?,
        "visibility" => {
            let v = as_opt_string(key, value, 255)?.unwrap_or_default();
            check_visibility(changer, &v)?;
            image.visibility = v;
        }
        "protected" => image.protected = as_bool(key, value)?,
        "os_hidden" => image.os_hidden = as_bool(key, value)?,
        "owner" => {
            let owner = as_opt_string(key, value, 255)?;
            if owner.as_deref() != image.owner.as_deref()
                && !context_is_admin(changer.s, changer.ctx)
            {
                return Err(ImageError::Forbidden(
                    "You are not permitted to change the owner of an image.".into(),
                ));
            }
            image.owner = owner;
        }
        "disk_format" | "container_format" => {
            let v = as_opt_string(key, value, 255)?;
            let allowed = if key == "disk_format" {
                DISK_FORMATS
            } else {
                CONTAINER_FORMATS
            };
            if let Some(f) = &v
                && !allowed.contains(&f.as_str())
            {
                return Err(ImageError::BadRequest(format!(
                    "Invalid value '{f}' for '{key}'; it must be one of: {}",
                    allowed.join(", ")
                )));
            }
            let current = if key == "disk_format" {
                &mut image.disk_format
            } else {
                &mut image.container_format
            };
            if *current != v && image.status != "queued" {
                return Err(ImageError::Forbidden(format!(
                    "Attribute '{key}' can be only replaced for a queued image."
                )));
            }
            *current = v;
        }
        "min_disk" => image.min_disk = as_int(key, value)?,
        "min_ram" => image.min_ram = as_int(key, value)?,
        "tags" => {
            let Some(list) = value.as_array() else {
                return Err(ImageError::BadRequest("'tags' must be a list.".into()));
            };
            let mut tags: Vec<String> = Vec::new();
            for tag in list {
                let Some(tag) = tag.as_str() else {
                    return Err(ImageError::BadRequest("Tags must be strings.".into()));
                };
                check_tag(tag)?;
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_string());
                }
            }
            image.tags = tags;
        }
        _ => {
            if key.chars().count() > 255 || key.is_empty() {
                return Err(ImageError::BadRequest(format!(
                    "Invalid property name '{key}'."
                )));
            }
            match value {
                Value::String(s) if s.chars().count() <= 65535 => {
                    image.properties.insert(key.to_string(), value.clone());
                }
                Value::Null => {
                    image.properties.insert(key.to_string(), Value::Null);
                }
                _ => {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid value for property '{key}': must be a string."
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `POST /v2/images`: Glance's image schema, whose core attributes and
/// extra properties (`additionalProperties: {type: string}`) follow the
/// same rules as a PATCH of them ([`set_attribute`]), so they are kept as
/// the JSON they came as and checked there, in the body's order. `id` and
/// `owner` are read here: they are not attributes PATCH may set.
#[derive(Debug, Deserialize)]
struct NewImage {
    /// A caller-chosen id (a UUID; `null` is not one).
    #[serde(default, deserialize_with = "present")]
    id: Option<String>,
    /// Absent: the caller's project; `null`: no owner.
    #[serde(default, deserialize_with = "nullable")]
    owner: Option<Option<String>>,
    #[serde(flatten)]
    attributes: Map<String, Value>,
}

impl NewImage {
    fn parse(bytes: &[u8]) -> ImageResult<NewImage> {
        let mut request: NewImage = requests::body(bytes)?;
        if let Some(Some(owner)) = &request.owner
            && owner.chars().count() > 255
        {
            return Err(ImageError::BadRequest(
                "Invalid value for 'owner': must be a string of at most 255 characters.".into(),
            ));
        }
        if let Some(id) = &request.id {
            match uuid::Uuid::parse_str(id) {
                Ok(u) => request.id = Some(u.hyphenated().to_string()),
                Err(_) => {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid image id '{id}': must be a UUID."
                    )));
                }
            }
        }
        Ok(request)
    }
}

pub async fn create_image(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> ImageResult<Response> {
    let request = NewImage::parse(&body)?;
    let owner = match request.owner {
        Some(owner) => owner,
        None => ctx.project_id().map(str::to_string),
    };
    // Glance's target for an image not yet created.
    let target = Target::new()
        .with_opt("project_id", owner.clone())
        .with_opt("owner", owner.clone())
        .with(
            "visibility",
            request
                .attributes
                .get("visibility")
                .and_then(Value::as_str)
                .unwrap_or("private"),
        );
    if let Err(refused) = authorize(&s, &ctx, "add_image", &target) {
        if owner.as_deref() != ctx.project_id() {
            return Err(ImageError::Forbidden(format!(
                "You are not permitted to create images owned by '{}'.",
                owner.as_deref().unwrap_or("None")
            )));
        }
        return Err(refused);
    }
    let changer = Changer {
        s: &s,
        ctx: &ctx,
        target,
    };
    let now = now_string();
    let mut image = Image {
        id: uuid::Uuid::new_v4().to_string(),
        status: "queued".into(),
        visibility: "shared".into(),
        owner: owner.clone(),
        created_at: now.clone(),
        updated_at: now,
        ..Image::default()
    };
    if let Some(id) = request.id {
        image.id = id;
    }
    for (key, value) in &request.attributes {
        set_attribute(&changer, &mut image, key, value)?;
    }
    let view_image = image.clone();
    let quota_project = image
        .owner
        .clone()
        .filter(|o| !o.is_empty())
        .or_else(|| Some(caller_project(&ctx)).filter(|p| !p.is_empty()));
    s.write(move |tx| {
        // Ids are never reused: a deleted image keeps its row, so a
        // caller-chosen id cannot take over one that others still name
        // (kernel_id, ramdisk_id, block device mappings).
        if store::image_id_taken(tx, &image.id)? {
            return Err(ImageError::Conflict(format!(
                "Image with identifier {} already exists!",
                image.id
            )));
        }
        if let Some(project) = &quota_project {
            super::quota::enforce(tx, project, super::quota::IMAGE_COUNT_TOTAL, 1)?;
        }
        store::insert_image(tx, &image)?;
        Ok(())
    })
    .await?;
    let mut response = json_response(StatusCode::CREATED, &view(&view_image));
    if let Ok(v) = format!("/v2/images/{}", view_image.id).parse() {
        response.headers_mut().insert(header::LOCATION, v);
    }
    // Glance names its import methods on a new image; openstacksdk's
    // `image create --import` reads them there.
    if let Ok(v) = super::IMPORT_METHODS.join(",").parse() {
        response
            .headers_mut()
            .insert("OpenStack-image-import-methods", v);
    }
    Ok(response)
}

pub async fn show_image(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    let state = s.clone();
    let image = s
        .read(move |conn| load_for(conn, &state, &ctx, &id, "get_image"))
        .await?;
    Ok(json_response(StatusCode::OK, &view(&image)))
}

pub async fn delete_image(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    let path = s.data_path(&id);
    let state = s.clone();
    let staged = super::staged_path(&s, &id);
    let cache_id = id.clone();
    // A qcow2 image's raw base (servers' disks are copies: they keep theirs).
    let raw_base = super::qcow2::raw_base_path(&s.dir, &id);
    s.write(move |tx| {
        let image = load_for(tx, &state, &ctx, &id, "delete_image")?;
        if image.protected {
            return Err(ImageError::Forbidden(format!(
                "Image {id} is protected and cannot be deleted."
            )));
        }
        store::delete_image(tx, &id, &now_string())?;
        Ok(())
    })
    .await?;
    if let Some(cache) = &s.cache
        && let Err(e) = cache.delete(&cache_id).await
    {
        tracing::warn!(error = %e, image = %cache_id, "cannot drop a deleted image from the cache");
    }
    for path in [path, staged, raw_base] {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot remove image data")
            }
        }
    }
    Ok(no_content())
}

async fn set_active_state(
    s: &Arc<ImageState>,
    ctx: Arc<AuthContext>,
    id: String,
    deactivate: bool,
) -> ImageResult<Response> {
    let state = s.clone();
    s.write(move |tx| {
        let rule = if deactivate {
            "deactivate"
        } else {
            "reactivate"
        };
        let mut image = load_for(tx, &state, &ctx, &id, rule)?;
        let (target, from) = if deactivate {
            ("deactivated", "active")
        } else {
            ("active", "deactivated")
        };
        if image.status == target {
            return Ok(());
        }
        if image.status != from {
            return Err(ImageError::Forbidden(format!(
                "Not allowed to {} image in status '{}'",
                if deactivate {
                    "deactivate"
                } else {
                    "reactivate"
                },
                image.status
            )));
        }
        image.status = target.into();
        image.updated_at = now_string();
        store::update_image(tx, &image)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

pub async fn deactivate(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    set_active_state(&s, ctx, id, true).await
}

pub async fn reactivate(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    set_active_state(&s, ctx, id, false).await
}

pub async fn add_tag(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> ImageResult<Response> {
    check_tag(&tag)?;
    let state = s.clone();
    s.write(move |tx| {
        let mut image = load_for(tx, &state, &ctx, &id, "modify_image")?;
        if !image.tags.contains(&tag) {
            image.tags.push(tag);
            image.updated_at = now_string();
            store::update_image(tx, &image)?;
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

pub async fn delete_tag(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> ImageResult<Response> {
    let state = s.clone();
    s.write(move |tx| {
        let mut image = load_for(tx, &state, &ctx, &id, "modify_image")?;
        let before = image.tags.len();
        image.tags.retain(|t| t != &tag);
        if image.tags.len() == before {
            return Err(ImageError::NotFound(format!(
                "Tag {tag} not found on image {id}."
            )));
        }
        image.updated_at = now_string();
        store::update_image(tx, &image)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::requests::refused;

    #[test]
    fn a_new_image_keeps_its_attributes_in_order_and_reads_id_and_owner() {
        let id = "0B5A3C6E-2BD5-4A3C-9A4F-1D2E3F405060";
        let body =
            format!(r#"{{"id": "{id}", "owner": null, "name": "n", "min_ram": 5, "hw_x": "y"}}"#);
        let request = NewImage::parse(body.as_bytes()).expect("valid image");
        assert_eq!(
            request.id.as_deref(),
            Some("0b5a3c6e-2bd5-4a3c-9a4f-1d2e3f405060")
        );
        assert_eq!(request.owner, Some(None));
        let keys: Vec<&str> = request.attributes.keys().map(String::as_str).collect();
        assert_eq!(keys, ["hw_x", "min_ram", "name"]);
        let plain = NewImage::parse(b"{}").expect("empty image");
        assert_eq!((plain.id, plain.owner), (None, None));
        assert_eq!(
            NewImage::parse(br#"{"owner": "p"}"#)
                .ok()
                .and_then(|r| r.owner),
            Some(Some("p".into()))
        );
    }

    #[test]
    fn a_new_image_refuses_a_bad_id_or_owner() {
        let msg = |body: &str| refused(NewImage::parse(body.as_bytes()));
        assert_eq!(
            msg(r#"{"id": "nope"}"#),
            "Invalid image id 'nope': must be a UUID."
        );
        assert_eq!(msg(r#"{"id": null}"#), "'id' is not a string.");
        assert_eq!(msg(r#"{"owner": 3}"#), "'owner' is not a string.");
        assert_eq!(
            msg(&format!(r#"{{"owner": "{}"}}"#, "o".repeat(256))),
            "Invalid value for 'owner': must be a string of at most 255 characters."
        );
        assert_eq!(msg("[]"), "The request body must be a JSON object.");
    }
}
