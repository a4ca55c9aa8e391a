//! PATCH of an image: the v2.0/v2.1 JSON-patch forms parsed and applied
//! through the attribute rules in `images`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::images::{
    BASE, Changer, check_read_only, check_tag, image_target, load_for, now_string, set_attribute,
    view,
};
use super::requests::present;
use super::{ImageError, ImageResult, ImageState};
use crate::db::image::{self as store, Image};
use crate::http::body::decode;
use crate::http::json_response;
use crate::identity::Auth;

// ----------------------------------------------------------------- PATCH

/// A JSON-patch operation's verb (Glance's `op`: add, replace, remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

impl Op {
    const ALL: [Op; 3] = [Op::Add, Op::Replace, Op::Remove];

    fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Replace => "replace",
            Op::Remove => "remove",
        }
    }

    fn parse(name: &str) -> ImageResult<Op> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| ImageError::BadRequest(format!("Operation '{name}' is not supported.")))
    }
}

/// One operation as sent: the v2.1 form (`{"op": "add", "path": "/x",
/// "value": ...}`) or the v2.0 one (`{"add": "/x", "value": ...}`).
#[derive(Debug, Deserialize)]
struct WireOp {
    #[serde(default, deserialize_with = "present")]
    op: Option<String>,
    #[serde(default, deserialize_with = "present")]
    path: Option<String>,
    #[serde(default, deserialize_with = "present")]
    add: Option<String>,
    #[serde(default, deserialize_with = "present")]
    replace: Option<String>,
    #[serde(default, deserialize_with = "present")]
    remove: Option<String>,
    /// `null` is a value (it clears `name`), so only absence is `None`.
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
}

/// One JSON-patch operation after normalising the v2.0 and v2.1 forms.
#[derive(Debug)]
struct PatchOp {
    op: Op,
    path: String,
    value: Option<Value>,
}

impl TryFrom<WireOp> for PatchOp {
    type Error = ImageError;

    fn try_from(wire: WireOp) -> ImageResult<PatchOp> {
        let (op, path) = match wire.op {
            Some(op) => {
                let path = wire
                    .path
                    .ok_or_else(|| ImageError::BadRequest("Operation has no 'path'.".into()))?;
                (Op::parse(&op)?, path)
            }
            // v2.0: the verb is the member's name (the last one given wins).
            None => [
                (Op::Add, wire.add),
                (Op::Replace, wire.replace),
                (Op::Remove, wire.remove),
            ]
            .into_iter()
            .rev()
            .find_map(|(op, path)| path.map(|p| (op, p)))
            .ok_or_else(|| {
                ImageError::BadRequest(
                    "Operations must have exactly one of 'add', 'remove' or 'replace'.".into(),
                )
            })?,
        };
        if op != Op::Remove && wire.value.is_none() {
            return Err(ImageError::BadRequest(format!(
                "Operation '{}' needs a 'value'.",
                op.name()
            )));
        }
        Ok(PatchOp {
            op,
            path,
            value: wire.value,
        })
    }
}

fn parse_patch(content_type: &str, body: &[u8]) -> ImageResult<Vec<PatchOp>> {
    let v21 = content_type.starts_with("application/openstack-images-v2.1-json-patch");
    let v20 = content_type.starts_with("application/openstack-images-v2.0-json-patch");
    if !v21 && !v20 {
        return Err(ImageError::UnsupportedMediaType(format!(
            "Unsupported Content-Type: {content_type}; use application/openstack-images-v2.1-json-patch"
        )));
    }
    let not_a_list = |e: String| {
        ImageError::BadRequest(format!(
            "Request body must be a JSON array of operation objects: {e}"
        ))
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| not_a_list(e.to_string()))?;
    if !value.is_array() {
        return Err(not_a_list("not an array".into()));
    }
    let ops: Vec<WireOp> = decode(value)?;
    ops.into_iter().map(PatchOp::try_from).collect()
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
            if key == "tags" && op.op == Op::Add {
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
        match op.op {
            Op::Remove => {
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
                if other == Op::Replace
                    && !BASE.contains(&key)
                    && !image.properties.contains_key(key)
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::image::requests::refused;

    const V21: &str = "application/openstack-images-v2.1-json-patch";

    fn parse(body: Value) -> ImageResult<Vec<PatchOp>> {
        parse_patch(V21, body.to_string().as_bytes())
    }

    #[test]
    fn both_patch_forms_are_read() {
        let ops = parse(json!([
            {"op": "replace", "path": "/name", "value": null},
            {"op": "remove", "path": "/x"},
            {"add": "/tags/-", "value": "t"},
            {"replace": "/min_ram", "value": 5}
        ]))
        .expect("valid patch");
        let got: Vec<(Op, &str, Option<&Value>)> = ops
            .iter()
            .map(|o| (o.op, o.path.as_str(), o.value.as_ref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Op::Replace, "/name", Some(&Value::Null)),
                (Op::Remove, "/x", None),
                (Op::Add, "/tags/-", Some(&json!("t"))),
                (Op::Replace, "/min_ram", Some(&json!(5))),
            ]
        );
        let v20 = "application/openstack-images-v2.0-json-patch";
        assert!(parse_patch(v20, b"[]").is_ok());
    }

    #[test]
    fn malformed_patches_are_refused_in_glance_words() {
        let msg = |body: Value| refused(parse(body));
        assert_eq!(
            msg(json!([{"op": "move", "path": "/a", "value": 1}])),
            "Operation 'move' is not supported."
        );
        assert_eq!(
            msg(json!([{"op": "add", "value": 1}])),
            "Operation has no 'path'."
        );
        assert_eq!(
            msg(json!([{"op": "add", "path": "/a"}])),
            "Operation 'add' needs a 'value'."
        );
        assert_eq!(
            msg(json!([{"path": "/a", "value": 1}])),
            "Operations must have exactly one of 'add', 'remove' or 'replace'."
        );
        assert_eq!(
            msg(json!([{"op": 3, "path": "/a"}])),
            "'[0].op' is not a string."
        );
        assert!(msg(json!({"op": "add"})).starts_with("Request body must be a JSON array"));
        assert!(refused(parse_patch(V21, b"[")).starts_with("Request body must be a JSON array"));
        assert!(matches!(
            parse_patch("application/json", b"[]"),
            Err(ImageError::UnsupportedMediaType(_))
        ));
    }
}
