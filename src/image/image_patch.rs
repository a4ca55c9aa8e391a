//! PATCH of an image: the v2.0/v2.1 JSON-patch forms parsed and applied
//! through the attribute rules in `images`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};

use super::images::{
    BASE, Changer, check_read_only, check_tag, image_target, load_for, now_string, set_attribute,
    view,
};
use super::{ImageError, ImageResult, ImageState};
use crate::db::image::{self as store, Image};
use crate::http::json_response;
use crate::identity::Auth;

// ----------------------------------------------------------------- PATCH

/// One JSON-patch operation after normalising the v2.0 and v2.1 forms.
struct PatchOp {
    op: String,
    path: String,
    value: Option<Value>,
}

fn parse_patch(content_type: &str, body: &[u8]) -> ImageResult<Vec<PatchOp>> {
    let v21 = content_type.starts_with("application/openstack-images-v2.1-json-patch");
    let v20 = content_type.starts_with("application/openstack-images-v2.0-json-patch");
    if !v21 && !v20 {
        return Err(ImageError::UnsupportedMediaType(format!(
            "Unsupported Content-Type: {content_type}; use application/openstack-images-v2.1-json-patch"
        )));
    }
    let ops: Vec<Map<String, Value>> = serde_json::from_slice(body).map_err(|e| {
        ImageError::BadRequest(format!(
            "Request body must be a JSON array of operation objects: {e}"
        ))
    })?;
    let mut out = Vec::new();
    for mut obj in ops {
        let (op, path) = if let Some(Value::String(op)) = obj.get("op").cloned() {
            let path = obj
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| ImageError::BadRequest("Operation has no 'path'.".into()))?
                .to_string();
            (op, path)
        } else {
            let mut found = None;
            for op in ["add", "replace", "remove"] {
                if let Some(Value::String(p)) = obj.get(op) {
                    found = Some((op.to_string(), p.clone()));
                }
            }
            found.ok_or_else(|| {
                ImageError::BadRequest(
                    "Operations must have exactly one of 'add', 'remove' or 'replace'.".into(),
                )
            })?
        };
        if !["add", "replace", "remove"].contains(&op.as_str()) {
            return Err(ImageError::BadRequest(format!(
                "Operation '{op}' is not supported."
            )));
        }
        let value = obj.remove("value");
        if op != "remove" && value.is_none() {
            return Err(ImageError::BadRequest(format!(
                "Operation '{op}' needs a 'value'."
            )));
        }
        out.push(PatchOp { op, path, value });
    }
    Ok(out)
}

fn apply_patch(changer: &Changer, image: &mut Image, ops: &[PatchOp]) -> ImageResult<()> {
    for op in ops {
        let raw = op.path.strip_prefix('/').ok_or_else(|| {
            ImageError::BadRequest(format!("Json path should start with a '/': {}", op.path))
        })?;
        let parts: Vec<String> = raw
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let key = parts[0].as_str();
        if parts.len() > 1 {
            // Only /tags/- style paths have two levels.
            if key == "tags" && op.op == "add" {
                let tag = op
                    .value
                    .as_ref()
                    .and_then(Value::as_str)
                    .ok_or_else(|| ImageError::BadRequest("Tags must be strings.".into()))?;
                check_tag(tag)?;
                if !image.tags.iter().any(|t| t == tag) {
                    image.tags.push(tag.to_string());
                }
                continue;
            }
            return Err(ImageError::BadRequest(format!(
                "Invalid JSON pointer for this resource: '{}'",
                op.path
            )));
        }
        check_read_only(key)?;
        match op.op.as_str() {
            "remove" => {
                if BASE.contains(&key) {
                    return Err(ImageError::Forbidden(format!(
                        "Attribute '{key}' cannot be removed."
                    )));
                }
                if image.properties.remove(key).is_none() {
                    return Err(ImageError::Conflict(format!(
                        "Property {key} does not exist."
                    )));
                }
            }
            other => {
                if other == "replace" && !BASE.contains(&key) && !image.properties.contains_key(key)
                {
                    return Err(ImageError::Conflict(format!(
                        "Property {key} does not exist."
                    )));
                }
                let value = op.value.clone().unwrap_or(Value::Null);
                set_attribute(changer, image, key, &value)?;
            }
        }
    }
    Ok(())
}

pub async fn update_image(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ImageResult<Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ops = parse_patch(&content_type, &body)?;
    let state = s.clone();
    let image = s
        .write(move |tx| {
            let mut image = load_for(tx, &state, &ctx, &id, "modify_image")?;
            let changer = Changer {
                s: &state,
                ctx: &ctx,
                target: image_target(&ctx, &image),
            };
            apply_patch(&changer, &mut image, &ops)?;
            image.updated_at = now_string();
            store::update_image(tx, &image)?;
            Ok(image)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view(&image)))
}
