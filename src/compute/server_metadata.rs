//! A server's metadata (`/servers/{id}/metadata`) and tags
//! (`/servers/{id}/tags`, 2.26): read-modify-write in one transaction, with
//! the metadata quota and the tag limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::access::{check_unlocked, load, load_authorized, load_tx};
use super::quotas;
use super::request::body as decode_body;
use super::servers::{MAX_TAGS, check_tag};
use super::validate::{checked_metadata, checked_tags};
use super::{ComputeError, ComputeResult, ComputeState, Mv, empty};
use crate::compute::states::{TaskState, VmState};
use crate::db::now_unix;
use crate::db::servers as db;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<ComputeState>;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route(
            "/v2.1/servers/{id}/metadata",
            get(metadata_list)
                .post(metadata_merge)
                .put(metadata_replace),
        )
        .route(
            "/v2.1/servers/{id}/metadata/{key}",
            get(metadata_show).put(metadata_set).delete(metadata_delete),
        )
        .route(
            "/v2.1/servers/{id}/tags",
            get(tags_list).put(tags_replace).delete(tags_clear),
        )
        .route(
            "/v2.1/servers/{id}/tags/{tag}",
            get(tag_check).put(tag_add).delete(tag_delete),
        )
}

// --------------------------------------------------------------- metadata

async fn metadata_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:server-metadata:index").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"metadata": server.metadata}),
    ))
}

/// Read-modify-write of a server's metadata, with the quota on items.
async fn write_metadata(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: String,
    rule: &str,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> ComputeResult<()> + Send + 'static,
) -> ComputeResult<BTreeMap<String, String>> {
    load_authorized(s, ctx, &id, rule).await?;
    let admin = super::is_admin_context(s, ctx);
    let ctx = ctx.clone();
    s.write(move |tx| {
        let mut server = load_tx(tx, admin, &ctx, &id)?;
        check_unlocked(admin, &server)?;
        if [VmState::Building, VmState::Deleted].contains(&server.vm_state)
            && server.task_state == Some(TaskState::Deleting)
        {
            return Err(ComputeError::Conflict(format!(
                "Cannot 'update metadata' instance {id} while it is in task_state deleting"
            )));
        }
        change(&mut server.metadata)?;
        quotas::enforce_limit(
            tx,
            &server.project_id,
            Some(&server.user_id),
            "metadata_items",
            0,
            server.metadata.len() as i64,
        )?;
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        Ok(server.metadata)
    })
    .await
}

/// The body of `POST` and `PUT /servers/{id}/metadata`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

/// The body of `PUT /servers/{id}/metadata/{key}`: one item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaBody {
    meta: BTreeMap<String, String>,
}

/// The body of `PUT /servers/{id}/tags`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    tags: Vec<String>,
}

async fn metadata_merge(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let new = checked_metadata(decode_body::<MetadataBody>(&body)?.metadata, "metadata")?;
    let meta = write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:create",
        move |m| {
            m.extend(new);
            Ok(())
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_replace(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let new = checked_metadata(decode_body::<MetadataBody>(&body)?.metadata, "metadata")?;
    let meta = write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:update_all",
        move |m| {
            *m = new;
            Ok(())
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:server-metadata:show").await?;
    match server.metadata.get(&key) {
        Some(v) => Ok(json_response(StatusCode::OK, &json!({"meta": {key: v}}))),
        None => Err(ComputeError::NotFound("Metadata item was not found".into())),
    }
}

async fn metadata_set(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> ComputeResult<Response> {
    let meta = checked_metadata(decode_body::<MetaBody>(&body)?.meta, "meta")?;
    if meta.len() != 1 {
        return Err(ComputeError::BadRequest(
            "Request body contains too many items".into(),
        ));
    }
    if !meta.contains_key(&key) {
        return Err(ComputeError::BadRequest(
            "Request body and URI mismatch".into(),
        ));
    }
    let value = meta.get(&key).cloned().unwrap_or_default();
    let (k, v) = (key.clone(), value.clone());
    write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:update",
        move |m| {
            m.insert(k, v);
            Ok(())
        },
    )
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"meta": {key: value}}),
    ))
}

async fn metadata_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    write_metadata(
        &s,
        &ctx,
        id,
        "os_compute_api:server-metadata:delete",
        move |m| {
            m.remove(&key)
                .map(|_| ())
                .ok_or_else(|| ComputeError::NotFound("Metadata item was not found".into()))
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

// -------------------------------------------------------------------- tags

fn tags_allowed(mv: Mv) -> ComputeResult<()> {
    if mv.at_least(26) {
        Ok(())
    } else {
        Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ))
    }
}

async fn write_tags(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: String,
    rule: &str,
    change: impl FnOnce(&mut Vec<String>) -> ComputeResult<()> + Send + 'static,
) -> ComputeResult<Vec<String>> {
    load_authorized(s, ctx, &id, rule).await?;
    let admin = super::is_admin_context(s, ctx);
    let ctx = ctx.clone();
    s.write(move |tx| {
        let mut server = load_tx(tx, admin, &ctx, &id)?;
        if ![
            VmState::Active,
            VmState::Paused,
            VmState::Suspended,
            VmState::Stopped,
            VmState::Shelved,
            VmState::ShelvedOffloaded,
        ]
        .contains(&server.vm_state)
        {
            return Err(ComputeError::Conflict(format!(
                "Cannot 'update tags' instance {id} while it is in vm_state {}",
                server.vm_state
            )));
        }
        change(&mut server.tags)?;
        if server.tags.len() > MAX_TAGS {
            return Err(ComputeError::BadRequest(format!(
                "The number of tags exceeds the per-server limit {MAX_TAGS}"
            )));
        }
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        Ok(server.tags)
    })
    .await
}

async fn tags_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-server-tags:index").await?;
    Ok(json_response(StatusCode::OK, &json!({"tags": server.tags})))
}

async fn tags_replace(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let tags = checked_tags(decode_body::<TagsBody>(&body)?.tags)?;
    let stored = write_tags(
        &s,
        &ctx,
        id,
        "os_compute_api:os-server-tags:update_all",
        move |t| {
            *t = tags;
            Ok(())
        },
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"tags": stored})))
}

async fn tags_clear(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    write_tags(
        &s,
        &ctx,
        id,
        "os_compute_api:os-server-tags:delete_all",
        |t| {
            t.clear();
            Ok(())
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn tag_check(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, tag)): Path<(String, String)>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:os-server-tags:show").await?;
    if server.tags.contains(&tag) {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(ComputeError::NotFound(format!(
            "Tag {tag} could not be found for instance {id}."
        )))
    }
}

async fn tag_add(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, tag)): Path<(String, String)>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    check_tag(&tag)?;
    let t2 = tag.clone();
    let mut existed = false;
    let before = load(&s, &ctx, &id).await?;
    if before.tags.contains(&tag) {
        existed = true;
    }
    write_tags(
        &s,
        &ctx,
        id.clone(),
        "os_compute_api:os-server-tags:update",
        move |t| {
            if !t.contains(&t2) {
                t.push(t2);
            }
            Ok(())
        },
    )
    .await?;
    let mut response = empty(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    });
    if let Ok(location) = HeaderValue::from_str(&format!("{}/servers/{id}/tags/{tag}", s.v21_url()))
    {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

async fn tag_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, tag)): Path<(String, String)>,
) -> ComputeResult<Response> {
    tags_allowed(mv)?;
    let id2 = id.clone();
    write_tags(
        &s,
        &ctx,
        id,
        "os_compute_api:os-server-tags:delete",
        move |t| {
            let before = t.len();
            t.retain(|x| *x != tag);
            if t.len() == before {
                return Err(ComputeError::NotFound(format!(
                    "Tag {tag} could not be found for instance {id2}."
                )));
            }
            Ok(())
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::compute::request::refused;

    #[test]
    fn metadata_and_tag_bodies() {
        let body = json!({"metadata": {"a": "1"}}).to_string();
        let m = decode_body::<MetadataBody>(body.as_bytes()).expect("accepted");
        assert_eq!(
            checked_metadata(m.metadata, "metadata")
                .expect("valid")
                .len(),
            1
        );
        assert_eq!(
            refused(decode_body::<MetadataBody>(b"{}")),
            "Invalid input for field/attribute metadata: 'metadata' is a required property"
        );
        assert_eq!(
            refused(decode_body::<MetadataBody>(br#"{"metadata": {"a": 1}}"#)),
            "Invalid input for field/attribute a. Value is not a string."
        );
        assert_eq!(
            refused(decode_body::<MetaBody>(br#"{"meta": []}"#)),
            "Invalid input for field/attribute meta. Value is not an object."
        );
        let long = json!({"meta": {"a": "v".repeat(256)}}).to_string();
        let m = decode_body::<MetaBody>(long.as_bytes()).expect("decoded");
        assert_eq!(
            refused(checked_metadata(m.meta, "meta")),
            "Invalid input for field/attribute meta. Value for 'a' is too long"
        );
        let t = decode_body::<TagsBody>(br#"{"tags": ["a", "a", "b"]}"#).expect("accepted");
        assert_eq!(checked_tags(t.tags).expect("valid"), vec!["a", "b"]);
        assert_eq!(
            refused(decode_body::<TagsBody>(br#"{"tags": "a"}"#)),
            "Invalid input for field/attribute tags. Value is not an array."
        );
        let t = decode_body::<TagsBody>(br#"{"tags": ["a/b"]}"#).expect("decoded");
        assert_eq!(
            refused(checked_tags(t.tags)),
            "Invalid input for field/attribute tags. Value: a/b. 'a/b' is not a valid tag"
        );
    }
}
