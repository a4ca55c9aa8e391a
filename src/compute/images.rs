//! The image proxy (`/v2.1/images`), which Nova removed at microversion
//! 2.36: older clients still list and show Glance images through Nova.
//! Reads go to Glance's Rust API (`crate::image::service`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::request;
use super::validate::checked_metadata;
use super::{ComputeError, ComputeResult, ComputeState, Mv, next_link, paginate, project_of};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::image::service::{BootImage, ImageService, ImageServiceError};
use crate::policy::{Service, Target};

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/images", get(list))
        .route("/v2.1/images/detail", get(list_detail))
        .route("/v2.1/images/{id}", get(show).delete(delete))
        .route(
            "/v2.1/images/{id}/metadata",
            get(metadata_list)
                .post(metadata_merge)
                .put(metadata_replace),
        )
        .route(
            "/v2.1/images/{id}/metadata/{key}",
            get(metadata_show).put(metadata_set).delete(metadata_delete),
        )
}

fn proxy_available(mv: Mv) -> ComputeResult<()> {
    super::proxy_available(
        mv,
        "The image proxy API is gone from microversion 2.36 on; use the Image service.",
    )
}

impl From<ImageServiceError> for ComputeError {
    fn from(e: ImageServiceError) -> Self {
        match e {
            ImageServiceError::NotFound(id) => {
                ComputeError::NotFound(format!("Image not found: {id}"))
            }
            ImageServiceError::Invalid(message) => ComputeError::Forbidden(message),
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
    let metadata = metadata_of(&image.properties);
    let status = nova_status(&image.status);
    let mut view = json!({
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
    });
    if let Some(server) = image
        .properties
        .get("instance_uuid")
        .and_then(Value::as_str)
    {
        view["server"] = json!({"id": server, "links": s.links("servers", server)});
    }
    view
}

fn metadata_of(properties: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    properties
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(text))
        })
        .collect()
}

/// Enforces the Glance rule the proxied call needs (Nova has no rule of its
/// own here: Glance decides, on the caller's token), then gives the project
/// whose view of Glance the caller gets (`None`: an admin context sees all,
/// as Glance's `context_is_admin` decides).
fn viewer(s: &ComputeState, ctx: &AuthContext, rule: &str) -> ComputeResult<Option<String>> {
    let policy = &s.identity.policy;
    let creds = ctx.credentials();
    let project = project_of(ctx)?;
    policy
        .enforce(
            Service::Image,
            &creds,
            rule,
            &Target::project(project.clone()),
        )
        .map_err(|e| ComputeError::Forbidden(format!("You are not authorized to {}.", e.rule())))?;
    if policy.allows(Service::Image, &creds, "context_is_admin", &Target::new()) {
        Ok(None)
    } else {
        Ok(Some(project))
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
    let mut images = service
        .list(viewer(&s, ctx, "get_images")?.as_deref())
        .await?;
    if let Some(name) = query.get("name") {
        images.retain(|i| i.name.as_deref() == Some(name.as_str()));
    }
    if let Some(status) = query.get("status") {
        images.retain(|i| nova_status(&i.status).eq_ignore_ascii_case(status));
    }
    let prop = |i: &BootImage, k: &str| {
        i.properties
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(server) = query.get("server") {
        let id = server
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        images.retain(|i| prop(i, "instance_uuid").as_deref() == Some(id.as_str()));
    }
    if let Some(kind) = query.get("type") {
        images.retain(|i| prop(i, "image_type").as_deref() == Some(kind.as_str()));
    }
    if let Some(min) = query.get("minDisk").and_then(|v| v.parse::<i64>().ok()) {
        images.retain(|i| i.min_disk >= min);
    }
    if let Some(min) = query.get("minRam").and_then(|v| v.parse::<i64>().ok()) {
        images.retain(|i| i.min_ram >= min);
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
    let image = service
        .get(&id, viewer(&s, &ctx, "get_image")?.as_deref())
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"image": detail(&s, &image)}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    s.images
        .delete(&id, viewer(&s, &ctx, "delete_image")?.as_deref())
        .await?;
    Ok(super::empty(StatusCode::NO_CONTENT))
}

async fn metadata_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let image = s
        .images
        .get(&id, viewer(&s, &ctx, "get_image")?.as_deref())
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"metadata": metadata_of(&image.properties)}),
    ))
}

/// The body of a metadata create or replace (Nova's
/// `image_metadata.create` / `update_all`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

/// The body of one item's update (Nova's `image_metadata.update`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaBody {
    meta: BTreeMap<String, String>,
}

/// Checked metadata as image properties.
fn as_properties(
    metadata: BTreeMap<String, String>,
    key: &str,
) -> ComputeResult<serde_json::Map<String, Value>> {
    Ok(checked_metadata(metadata, key)?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

/// Applies `change` to an image's properties, within the metadata_items quota.
async fn change_metadata<F>(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    change: F,
) -> ComputeResult<serde_json::Map<String, Value>>
where
    F: FnOnce(&mut serde_json::Map<String, Value>) -> Result<(), String> + Send + 'static,
{
    let project = project_of(ctx)?;
    let limit = {
        let project = project.clone();
        s.read(move |conn| Ok(super::quotas::limits_for(conn, &project, None)?))
            .await?
            .get("metadata_items")
            .copied()
            .unwrap_or(128)
    };
    let properties = s
        .images
        .update_properties(id, viewer(s, ctx, "modify_image")?.as_deref(), move |p| {
            change(p)?;
            if limit >= 0 && p.len() as i64 > limit {
                return Err(format!(
                    "Quota exceeded for metadata_items: {} > {limit}",
                    p.len()
                ));
            }
            Ok(())
        })
        .await?;
    Ok(metadata_of(&properties))
}

async fn metadata_merge(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let MetadataBody { metadata } = request::body(&body)?;
    let new = as_properties(metadata, "metadata")?;
    let meta = change_metadata(&s, &ctx, &id, move |p| {
        p.extend(new);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_replace(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let MetadataBody { metadata } = request::body(&body)?;
    let new = as_properties(metadata, "metadata")?;
    let meta = change_metadata(&s, &ctx, &id, move |p| {
        // Boot properties are not user metadata to Nova, but they live in
        // Glance's properties too; keep them so the image still boots.
        let keep: Vec<(String, Value)> = p
            .iter()
            .filter(|(k, _)| ["kernel_id", "ramdisk_id", "os_command_line"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        *p = new;
        for (k, v) in keep {
            p.entry(k).or_insert(v);
        }
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let image = s
        .images
        .get(&id, viewer(&s, &ctx, "get_image")?.as_deref())
        .await?;
    let meta = metadata_of(&image.properties);
    match meta.get(&key) {
        Some(v) => Ok(json_response(StatusCode::OK, &json!({"meta": {key: v}}))),
        None => Err(ComputeError::NotFound(format!(
            "Image {id} has no metadata item {key}"
        ))),
    }
}

async fn metadata_set(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let MetaBody { meta } = request::body(&body)?;
    let meta = as_properties(meta, "meta")?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(ComputeError::BadRequest(
            "Request body and URI mismatch".into(),
        ));
    }
    let value = meta.get(&key).cloned().unwrap_or(Value::Null);
    let (k, v) = (key.clone(), value.clone());
    change_metadata(&s, &ctx, &id, move |p| {
        p.insert(k, v);
        Ok(())
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"meta": {key: value}}),
    ))
}

async fn metadata_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    proxy_available(mv)?;
    let image = s
        .images
        .get(&id, viewer(&s, &ctx, "get_image")?.as_deref())
        .await?;
    if !image.properties.contains_key(&key) {
        return Err(ComputeError::NotFound(format!(
            "Image {id} has no metadata item {key}"
        )));
    }
    change_metadata(&s, &ctx, &id, move |p| {
        p.remove(&key);
        Ok(())
    })
    .await?;
    Ok(super::empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_bodies_follow_novas_schema() {
        let m: MetadataBody = request::body(br#"{"metadata": {"k": "v"}}"#).expect("accepted");
        let p = as_properties(m.metadata, "metadata").expect("checked");
        assert_eq!(p.get("k"), Some(&json!("v")));
        let one: MetaBody = request::body(br#"{"meta": {"k": "v"}}"#).expect("accepted");
        assert_eq!(one.meta.len(), 1);
        assert_eq!(
            request::refused(request::body::<MetadataBody>(br#"{"meta": {}}"#)),
            "Additional properties are not allowed ('meta' was unexpected)"
        );
        assert_eq!(
            request::refused(request::body::<MetadataBody>(br#"{"metadata": {"k": 1}}"#)),
            "Invalid input for field/attribute k. Value is not a string."
        );
        assert!(request::body::<MetaBody>(br#"{"meta": []}"#).is_err());
        let long = BTreeMap::from([("k".to_string(), "v".repeat(256))]);
        assert!(as_properties(long, "metadata").is_err());
    }
}
