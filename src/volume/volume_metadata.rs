//! Volume metadata: list, merge, replace, show, put and delete one key.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::volumes::{MAX_METADATA, bad, load_for, metadata_field, not_found, parse};
use super::{VolumeError, VolumeResult, VolumeState, empty, now_string};
use crate::db::volume as store;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<VolumeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route(
            "/v3/volumes/{id}/metadata",
            get(metadata_list)
                .post(metadata_merge)
                .put(metadata_replace),
        )
        .route(
            "/v3/volumes/{id}/metadata/{key}",
            get(metadata_show).put(metadata_put).delete(metadata_delete),
        )
}

// ---------------------------------------------------------------- metadata

async fn metadata_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let v = load_for(&s, &ctx, &id, "volume:get_volume_metadata").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"metadata": v.metadata}),
    ))
}

async fn write_metadata(
    s: &S,
    id: String,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> VolumeResult<()> + Send + 'static,
) -> VolumeResult<BTreeMap<String, String>> {
    s.write(move |tx| {
        let mut v = store::get_volume(tx, &id)?.ok_or_else(|| not_found(&id))?;
        if v.status == "maintenance" {
            return Err(bad(format!(
                "Invalid volume: Volume {id} is in maintenance."
            )));
        }
        change(&mut v.metadata)?;
        if v.metadata.len() > MAX_METADATA {
            return Err(bad(format!(
                "Invalid input received: at most {MAX_METADATA} metadata items."
            )));
        }
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(v.metadata)
    })
    .await
}

async fn metadata_merge(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = parse(&bytes)?;
    let v = load_for(&s, &ctx, &id, "volume:create_volume_metadata").await?;
    let new = metadata_field(req.get("metadata").unwrap_or(&Value::Null))?;
    let meta = write_metadata(&s, v.id, move |m| {
        m.extend(new);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_replace(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = parse(&bytes)?;
    let v = load_for(&s, &ctx, &id, "volume:update_volume_metadata").await?;
    let new = metadata_field(req.get("metadata").unwrap_or(&Value::Null))?;
    let meta = write_metadata(&s, v.id, move |m| {
        *m = new;
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> VolumeResult<Response> {
    let v = load_for(&s, &ctx, &id, "volume:get_volume_metadata").await?;
    let value = v.metadata.get(&key).ok_or_else(|| {
        VolumeError::NotFound(format!("Volume {id} has no metadata with key {key}."))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"meta": {key: value}}),
    ))
}

async fn metadata_put(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = parse(&bytes)?;
    let v = load_for(&s, &ctx, &id, "volume:update_volume_metadata").await?;
    let meta = metadata_field(req.get("meta").unwrap_or(&Value::Null))?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let echo = meta.clone();
    write_metadata(&s, v.id, move |m| {
        m.extend(meta);
        Ok(())
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"meta": echo})))
}

async fn metadata_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> VolumeResult<Response> {
    let v = load_for(&s, &ctx, &id, "volume:delete_volume_metadata").await?;
    let vid = v.id.clone();
    write_metadata(&s, v.id, move |m| {
        m.remove(&key).map(|_| ()).ok_or_else(|| {
            VolumeError::NotFound(format!("Volume {vid} has no metadata with key {key}."))
        })
    })
    .await?;
    Ok(empty(StatusCode::OK))
}
