//! Image members: sharing an image of visibility `shared` with other
//! projects, which accept or reject it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::images::{authorize_image, caller_project, load_visible, now_string};
use super::{ImageError, ImageResult, ImageState, context_is_admin, requests};
use crate::db::image::{self as store, Image, Member};
use crate::http::{json_response, no_content};
use crate::identity::{Auth, AuthContext};

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

/// `POST /v2/images/{id}/members`: the project to share the image with.
#[derive(Debug, Deserialize)]
struct NewMember {
    member: String,
}

impl NewMember {
    fn parse(bytes: &[u8]) -> ImageResult<String> {
        let member = requests::body::<NewMember>(bytes)?.member;
        if member.is_empty() || member.chars().count() > 255 {
            return Err(ImageError::BadRequest("Invalid member id.".into()));
        }
        Ok(member)
    }
}

/// A membership's status: the member's answer to the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberStatus {
    Pending,
    Accepted,
    Rejected,
}

impl MemberStatus {
    fn name(self) -> &'static str {
        match self {
            MemberStatus::Pending => "pending",
            MemberStatus::Accepted => "accepted",
            MemberStatus::Rejected => "rejected",
        }
    }
}

/// `PUT /v2/images/{id}/members/{member}`: the member's answer.
#[derive(Debug, Deserialize)]
struct MemberUpdate {
    status: String,
}

impl MemberUpdate {
    fn parse(bytes: &[u8]) -> ImageResult<MemberStatus> {
        let status = requests::body::<MemberUpdate>(bytes)?.status;
        [
            MemberStatus::Pending,
            MemberStatus::Accepted,
            MemberStatus::Rejected,
        ]
        .into_iter()
        .find(|s| s.name() == status)
        .ok_or_else(|| {
            ImageError::BadRequest(format!(
                "Invalid status: {status}; it must be pending, accepted or rejected."
            ))
        })
    }
}

fn member_not_found(id: &str, member: &str) -> ImageError {
    ImageError::NotFound(format!("{member} is not a member of image {id}"))
}

/// Whether the caller's member lookups see every member of the image, as
/// Glance's database scopes them: for `context_is_admin` and the image's
/// owner; anyone else sees only its own project's membership.
fn sees_all_members(admin: bool, ctx: &AuthContext, image: &Image) -> bool {
    admin || (ctx.project_id().is_some() && image.owner.as_deref() == ctx.project_id())
}

/// The image of a member operation: 404 when invisible, 403 when the rule
/// refuses (Glance checks get_image first, then the member rule).
fn load_image_for(
    conn: &rusqlite::Connection,
    s: &ImageState,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
) -> ImageResult<(Image, bool)> {
    let admin = context_is_admin(s, ctx);
    let image = load_visible(conn, ctx, admin, id)?;
    authorize_image(s, ctx, rule, &image)?;
    let sees_all = sees_all_members(admin, ctx, &image);
    Ok((image, sees_all))
}

pub async fn create_member(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ImageResult<Response> {
    let member_id = NewMember::parse(&body)?;
    let state = s.clone();
    let member = s
        .write(move |tx| {
            let (image, _) = load_image_for(tx, &state, &ctx, &id, "add_member")?;
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
    let state = s.clone();
    let members = s
        .read(move |conn| {
            let (image, sees_all) = load_image_for(conn, &state, &ctx, &id, "get_members")?;
            if image.visibility != "shared" {
                return Err(ImageError::Forbidden(format!(
                    "Image {id} is not shared: only images with visibility 'shared' have members."
                )));
            }
            let mut members = store::list_members(conn, &id)?;
            if !sees_all {
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
    let state = s.clone();
    let member = s
        .read(move |conn| {
            // Glance answers a refused member lookup with 404.
            let (_, sees_all) = load_image_for(conn, &state, &ctx, &id, "get_member")
                .map_err(|_| member_not_found(&id, &member_id))?;
            if !sees_all && caller_project(&ctx) != member_id {
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
    let status = MemberUpdate::parse(&body)?.name().to_string();
    let state = s.clone();
    let member = s
        .write(move |tx| {
            let admin = context_is_admin(&state, &ctx);
            let image = load_visible(tx, &ctx, admin, &id)?;
            if !sees_all_members(admin, &ctx, &image) && caller_project(&ctx) != member_id {
                return Err(member_not_found(&id, &member_id));
            }
            let existing = store::get_member(tx, &id, &member_id)?
                .ok_or_else(|| member_not_found(&id, &member_id))?;
            // The rule reads the caller's own membership (member_id): the
            // owner may not answer for its members.
            authorize_image(&state, &ctx, "modify_member", &image)?;
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
    let state = s.clone();
    s.write(move |tx| {
        let (_, sees_all) = load_image_for(tx, &state, &ctx, &id, "delete_member")?;
        if !sees_all && caller_project(&ctx) != member_id {
            return Err(member_not_found(&id, &member_id));
        }
        if !store::delete_member(tx, &id, &member_id)? {
            return Err(member_not_found(&id, &member_id));
        }
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
    fn a_new_member_is_a_project_id() {
        assert_eq!(
            NewMember::parse(br#"{"member": "p1"}"#).ok(),
            Some("p1".into())
        );
        assert_eq!(
            refused(NewMember::parse(b"{}")),
            "'member' is a required property."
        );
        assert_eq!(
            refused(NewMember::parse(br#"{"member": 1}"#)),
            "'member' is not a string."
        );
        assert_eq!(
            refused(NewMember::parse(br#"{"member": ""}"#)),
            "Invalid member id."
        );
        assert_eq!(
            refused(NewMember::parse(b"[]")),
            "The request body must be a JSON object."
        );
    }

    #[test]
    fn a_member_answers_with_one_of_three_statuses() {
        assert_eq!(
            MemberUpdate::parse(br#"{"status": "accepted"}"#).ok(),
            Some(MemberStatus::Accepted)
        );
        assert_eq!(
            MemberUpdate::parse(br#"{"status": "rejected"}"#).ok(),
            Some(MemberStatus::Rejected)
        );
        assert_eq!(
            refused(MemberUpdate::parse(br#"{"status": "bogus"}"#)),
            "Invalid status: bogus; it must be pending, accepted or rejected."
        );
        assert_eq!(
            refused(MemberUpdate::parse(b"{}")),
            "'status' is a required property."
        );
    }
}
