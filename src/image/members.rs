//! Image members: sharing an image of visibility `shared` with other
//! projects, which accept or reject it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::images::{caller_project, load_visible, now_string, owns};
use super::{ImageError, ImageResult, ImageState};
use crate::db::image::{self as store, Member};
use crate::http::{json_response, no_content};
use crate::identity::Auth;

fn view(member: &Member) -> Value {
    json!({
        "image_id": member.image_id,
        "member_id": member.member_id,
        "status": member.status,
        "created_at": member.created_at,
        "updated_at": member.updated_at,
        "schema": "/v2/schemas/member",
    })
}

fn body_field(body: &[u8], key: &str) -> ImageResult<String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ImageError::BadRequest(format!("Malformed JSON in the request body: {e}")))?;
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ImageError::BadRequest(format!("'{key}' is a required property.")))
}

fn member_not_found(id: &str, member: &str) -> ImageError {
    ImageError::NotFound(format!("{member} is not a member of image {id}"))
}

pub async fn create_member(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ImageResult<Response> {
    let member_id = body_field(&body, "member")?;
    if member_id.is_empty() || member_id.chars().count() > 255 {
        return Err(ImageError::BadRequest("Invalid member id.".into()));
    }
    let member = s
        .write(move |tx| {
            let image = load_visible(tx, &ctx, &id)?;
            if !owns(&ctx, &image) {
                return Err(ImageError::Forbidden(
                    "You are not permitted to create image members for the image.".into(),
                ));
            }
            if image.visibility != "shared" {
                return Err(ImageError::Forbidden(format!(
                    "Image {id} is not shared: only images with visibility 'shared' have members."
                )));
            }
            if store::get_member(tx, &id, &member_id)?.is_some() {
                return Err(ImageError::Conflict(format!(
                    "Member {member_id} is already associated with image {id}."
                )));
            }
            let now = now_string();
            let member = Member {
                image_id: id,
                member_id,
                status: "pending".into(),
                created_at: now.clone(),
                updated_at: now,
            };
            store::insert_member(tx, &member)?;
            Ok(member)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view(&member)))
}

pub async fn list_members(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    let members = s
        .read(move |conn| {
            let image = load_visible(conn, &ctx, &id)?;
            if image.visibility != "shared" {
                return Err(ImageError::Forbidden(format!(
                    "Image {id} is not shared: only images with visibility 'shared' have members."
                )));
            }
            let mut members = store::list_members(conn, &id)?;
            if !owns(&ctx, &image) {
                let project = caller_project(&ctx);
                members.retain(|m| m.member_id == project);
            }
            Ok(members)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "members": members.iter().map(view).collect::<Vec<_>>(),
            "schema": "/v2/schemas/members",
        }),
    ))
}

pub async fn show_member(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((id, member_id)): Path<(String, String)>,
) -> ImageResult<Response> {
    let member = s
        .read(move |conn| {
            let image = load_visible(conn, &ctx, &id)?;
            if !owns(&ctx, &image) && caller_project(&ctx) != member_id {
                return Err(member_not_found(&id, &member_id));
            }
            store::get_member(conn, &id, &member_id)?
                .ok_or_else(|| member_not_found(&id, &member_id))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view(&member)))
}

pub async fn update_member(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((id, member_id)): Path<(String, String)>,
    body: Bytes,
) -> ImageResult<Response> {
    let status = body_field(&body, "status")?;
    if !["pending", "accepted", "rejected"].contains(&status.as_str()) {
        return Err(ImageError::BadRequest(format!(
            "Invalid status: {status}; it must be pending, accepted or rejected."
        )));
    }
    let member = s
        .write(move |tx| {
            load_visible(tx, &ctx, &id)?;
            let existing = store::get_member(tx, &id, &member_id)?
                .ok_or_else(|| member_not_found(&id, &member_id))?;
            if caller_project(&ctx) != member_id {
                return Err(ImageError::Forbidden(
                    "Only the member itself may change its membership status.".into(),
                ));
            }
            let now = now_string();
            store::update_member_status(tx, &id, &member_id, &status, &now)?;
            Ok(Member {
                status,
                updated_at: now,
                ..existing
            })
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view(&member)))
}

pub async fn delete_member(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((id, member_id)): Path<(String, String)>,
) -> ImageResult<Response> {
    s.write(move |tx| {
        let image = load_visible(tx, &ctx, &id)?;
        if !owns(&ctx, &image) {
            return Err(ImageError::Forbidden(
                "You are not permitted to delete image members for the image.".into(),
            ));
        }
        if !store::delete_member(tx, &id, &member_id)? {
            return Err(member_not_found(&id, &member_id));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}
