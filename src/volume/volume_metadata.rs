//! The metadata sub-resource volumes and snapshots share (Cinder's
//! `/v3/{volumes,snapshots}/{id}/metadata[/{key}]`): list, merge, replace,
//! show, put and delete one key. The handlers are written once, over a
//! [`MetadataOwner`] that loads its record for a caller and changes its
//! metadata in one transaction; [`Volumes`] is the volumes' owner, the
//! snapshots' is in `snapshots.rs`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::requests::{self, MAX_METADATA};
use super::volumes::{bad, load_for, not_found};
use super::{VolumeError, VolumeResult, VolumeState, empty, now_string};
use crate::db::volume as store;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

/// A change to a record's metadata, run inside its write transaction.
pub(super) type Change =
    Box<dyn FnOnce(&mut BTreeMap<String, String>) -> VolumeResult<()> + Send + 'static>;

/// A record with metadata: how it is loaded and changed, and its policy rules.
pub(super) trait MetadataOwner: Send + Sync + 'static {
    /// The collection's path, `/v3/volumes`.
    const PATH: &'static str;
    /// The record's name in the 404 of a missing key ("Volume").
    const NOUN: &'static str;
    /// The rule of list and show.
    const GET: &'static str;
    /// The rule of the merge (POST).
    const MERGE: &'static str;
    /// The rule of replace and put.
    const UPDATE: &'static str;
    /// The rule of delete.
    const DELETE: &'static str;

    /// The record `id` as the caller may see it under `rule`: its id and metadata.
    fn load(
        s: &S,
        ctx: &AuthContext,
        id: &str,
        rule: &'static str,
    ) -> impl Future<Output = VolumeResult<(String, BTreeMap<String, String>)>> + Send;

    /// Applies `change` to the stored metadata in one transaction; the metadata after it.
    fn write(
        s: &S,
        id: String,
        change: Change,
    ) -> impl Future<Output = VolumeResult<BTreeMap<String, String>>> + Send;
}

/// The metadata routes of `O`'s collection.
pub(super) fn routes_of<O: MetadataOwner>() -> Router<S> {
    Router::new()
        .route(
            &format!("{}/{{id}}/metadata", O::PATH),
            get(metadata_list::<O>)
                .post(metadata_merge::<O>)
                .put(metadata_replace::<O>),
        )
        .route(
            &format!("{}/{{id}}/metadata/{{key}}", O::PATH),
            get(metadata_show::<O>)
                .put(metadata_put::<O>)
                .delete(metadata_delete::<O>),
        )
}

/// The volumes' metadata routes.
pub fn routes() -> Router<S> {
    routes_of::<Volumes>()
}

/// Volumes as metadata owners.
pub(super) struct Volumes;

impl MetadataOwner for Volumes {
    const PATH: &'static str = "/v3/volumes";
    const NOUN: &'static str = "Volume";
    const GET: &'static str = "volume:get_volume_metadata";
    const MERGE: &'static str = "volume:create_volume_metadata";
    const UPDATE: &'static str = "volume:update_volume_metadata";
    const DELETE: &'static str = "volume:delete_volume_metadata";

    async fn load(
        s: &S,
        ctx: &AuthContext,
        id: &str,
        rule: &'static str,
    ) -> VolumeResult<(String, BTreeMap<String, String>)> {
        let v = load_for(s, ctx, id, rule).await?;
        Ok((v.id, v.metadata))
    }

    async fn write(s: &S, id: String, change: Change) -> VolumeResult<BTreeMap<String, String>> {
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
}

// ---------------------------------------------------------------- handlers

/// `{"metadata": {...}}`: the body of a merge or a replace (other members
/// are ignored, as they always were here).
#[derive(Debug, Deserialize)]
struct MetadataBody {
    metadata: BTreeMap<String, String>,
}

/// `{"meta": {key: value}}`: the body of a one-key update.
#[derive(Debug, Deserialize)]
struct MetaBody {
    meta: BTreeMap<String, String>,
}

async fn metadata_list<O: MetadataOwner>(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    let (_, metadata) = O::load(&s, &ctx, &id, O::GET).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"metadata": metadata}),
    ))
}

async fn metadata_merge<O: MetadataOwner>(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = requests::object(&bytes)?;
    let (id, _) = O::load(&s, &ctx, &id, O::MERGE).await?;
    let MetadataBody { metadata } = requests::member_of(req)?;
    let new = requests::metadata(metadata)?;
    let meta = O::write(
        &s,
        id,
        Box::new(move |m| {
            m.extend(new);
            Ok(())
        }),
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_replace<O: MetadataOwner>(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = requests::object(&bytes)?;
    let (id, _) = O::load(&s, &ctx, &id, O::UPDATE).await?;
    let MetadataBody { metadata } = requests::member_of(req)?;
    let new = requests::metadata(metadata)?;
    let meta = O::write(
        &s,
        id,
        Box::new(move |m| {
            *m = new;
            Ok(())
        }),
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"metadata": meta})))
}

async fn metadata_show<O: MetadataOwner>(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> VolumeResult<Response> {
    let (_, metadata) = O::load(&s, &ctx, &id, O::GET).await?;
    let value = metadata.get(&key).ok_or_else(|| {
        VolumeError::NotFound(format!("{} {id} has no metadata with key {key}.", O::NOUN))
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"meta": {key: value}}),
    ))
}

async fn metadata_put<O: MetadataOwner>(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    let req = requests::object(&bytes)?;
    let (id, _) = O::load(&s, &ctx, &id, O::UPDATE).await?;
    let MetaBody { meta } = requests::member_of(req)?;
    let meta = requests::metadata(meta)?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let echo = meta.clone();
    O::write(
        &s,
        id,
        Box::new(move |m| {
            m.extend(meta);
            Ok(())
        }),
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({"meta": echo})))
}

async fn metadata_delete<O: MetadataOwner>(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> VolumeResult<Response> {
    let (id, _) = O::load(&s, &ctx, &id, O::DELETE).await?;
    let owner = id.clone();
    O::write(
        &s,
        id,
        Box::new(move |m| {
            m.remove(&key).map(|_| ()).ok_or_else(|| {
                VolumeError::NotFound(format!(
                    "{} {owner} has no metadata with key {key}.",
                    O::NOUN
                ))
            })
        }),
    )
    .await?;
    Ok(empty(StatusCode::OK))
}
