//! Volume transfers: `os-volume-transfer` and, from 3.55, `volume-transfers`
//! (with `no_snapshots`; 3.57 shows the projects and `accepted`).
//!
//! A project offers an `available` volume (it becomes `awaiting-transfer`)
//! and gets an auth key once; another project accepts with the transfer id
//! and the key: in one transaction the volume (and, unless `no_snapshots`,
//! its snapshots) changes project, the accepting project's quotas are
//! checked and the giving project's usage drops with it, and the offer goes.
//! Deleting the offer makes the volume `available` again. The key is never
//! stored, only a salted SHA-256 of it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::requests::{self, present};
use super::volume_list::{next_link, page};
use super::{
    Mv, VolumeError, VolumeResult, VolumeState, authorize, empty, is_admin, now_string, own_target,
    project_of, project_target, query_map,
};
use crate::db::volume as store;
use crate::db::volume_records::{self as tstore, Transfer};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<VolumeState>;

/// The two URL families: the legacy extension and the 3.55 resource.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Legacy,
    V355,
}

impl Api {
    fn collection(self) -> &'static str {
        match self {
            Api::Legacy => "os-volume-transfer",
            Api::V355 => "volume-transfers",
        }
    }
}

pub fn routes() -> Router<S> {
    Router::new()
        .route(
            "/v3/os-volume-transfer",
            get(list_legacy).post(create_legacy),
        )
        .route("/v3/os-volume-transfer/detail", get(detail_legacy))
        .route(
            "/v3/os-volume-transfer/{id}",
            get(show_legacy).delete(delete_legacy),
        )
        .route("/v3/os-volume-transfer/{id}/accept", post(accept_legacy))
        .route("/v3/volume-transfers", get(list_new).post(create_new))
        .route("/v3/volume-transfers/detail", get(detail_new))
        .route(
            "/v3/volume-transfers/{id}",
            get(show_new).delete(delete_new),
        )
        .route("/v3/volume-transfers/{id}/accept", post(accept_new))
}

fn not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("Transfer {id} could not be found."))
}

fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

/// The 3.55 resource answers only from 3.55.
fn check_api(api: Api, mv: Mv) -> VolumeResult<()> {
    if api == Api::V355 && !mv.at_least(55) {
        return Err(VolumeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    Ok(())
}

/// `n` random hex digits.
fn random_hex(n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        let u = uuid::Uuid::new_v4().simple().to_string();
        // Skip the version and variant digits (positions 12 and 16).
        out.push_str(&u[..12]);
        out.push_str(&u[20..]);
    }
    out.truncate(n);
    out
}

fn crypt_hash(salt: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Serialize)]
struct View<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<&'a str>,
    name: Option<&'a str>,
    volume_id: &'a str,
    links: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_project_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination_project_id: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted: Option<bool>,
}

fn render(s: &S, api: Api, t: &Transfer, mv: Mv, detailed: bool, auth_key: Option<&str>) -> Value {
    let extra = detailed && api == Api::V355 && mv.at_least(57);
    serde_json::to_value(View {
        id: &t.id,
        created_at: detailed.then_some(t.created_at.as_str()),
        name: t.name.as_deref(),
        volume_id: &t.volume_id,
        links: s.links(&t.project_id, api.collection(), &t.id),
        auth_key,
        source_project_id: extra.then_some(t.project_id.as_str()),
        destination_project_id: extra.then_some(None),
        accepted: extra.then_some(false),
    })
    .unwrap_or(Value::Null)
}

/// A transfer the caller may see: its project's, or any for admins.
async fn load_for(s: &S, ctx: &AuthContext, id: &str, rule: &str) -> VolumeResult<Transfer> {
    let wanted = id.to_string();
    let t = s
        .read(move |conn| Ok(tstore::get_transfer(conn, &wanted)?))
        .await?
        .ok_or_else(|| not_found(id))?;
    if !is_admin(s, ctx) && ctx.project_id() != Some(t.project_id.as_str()) {
        return Err(not_found(id));
    }
    authorize(s, ctx, rule, &project_target(&t.project_id))?;
    Ok(t)
}

/// `POST /v3/{os-,}volume-transfer`'s `transfer`; `no_snapshots` is read
/// at both APIs and refused below 3.55's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTransfer {
    #[serde(default)]
    volume_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    no_snapshots: Option<bool>,
}

/// The `accept` of a transfer (other members are ignored, as they always
/// were here).
#[derive(Debug, Deserialize)]
struct Accept {
    #[serde(default)]
    auth_key: Option<String>,
}

async fn create(s: S, ctx: &AuthContext, mv: Mv, api: Api, bytes: Bytes) -> VolumeResult<Response> {
    check_api(api, mv)?;
    let obj = requests::take(&bytes, "transfer")?;
    let req: CreateTransfer = requests::member("transfer", obj)?;
    // `no_snapshots` is a member of the 3.55 API only.
    if req.no_snapshots.is_some() && api != Api::V355 {
        return Err(bad(
            "Invalid input for field/attribute transfer. Additional properties are not allowed ('no_snapshots' was unexpected)",
        ));
    }
    let volume_id = req.volume_id.ok_or_else(|| {
        bad("Invalid input for field/attribute transfer. 'volume_id' is a required property")
    })?;
    let name = req.name;
    if name.as_ref().is_some_and(|n| n.chars().count() > 255) {
        return Err(bad(
            "Invalid input for field/attribute name. Value is too long",
        ));
    }
    let no_snapshots = req.no_snapshots.unwrap_or(false);
    let volume = super::volumes::load_for(&s, ctx, &volume_id, "volume:get").await?;
    authorize(
        &s,
        ctx,
        "volume:create_transfer",
        &project_target(&volume.project_id),
    )?;
    let salt = random_hex(8);
    let auth_key = random_hex(16);
    let transfer = Transfer {
        id: uuid::Uuid::new_v4().to_string(),
        volume_id: volume.id.clone(),
        project_id: volume.project_id.clone(),
        name,
        crypt_hash: crypt_hash(&salt, &auth_key),
        salt,
        no_snapshots,
        created_at: now_string(),
    };
    let stored = transfer.clone();
    s.write(move |tx| {
        let mut v = store::get_volume(tx, &stored.volume_id)?
            .ok_or_else(|| super::volumes::not_found(&stored.volume_id))?;
        if v.status != "available" {
            return Err(bad("Invalid volume: status must be available"));
        }
        if !stored.no_snapshots
            && let Some(snap) = store::list_snapshots(tx, None)?
                .into_iter()
                .find(|sn| sn.volume_id == v.id && sn.status != "available")
        {
            return Err(bad(format!(
                "Invalid volume: snapshot: {} status must be available",
                snap.id
            )));
        }
        v.status = "awaiting-transfer".into();
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        tstore::put_transfer(tx, &stored)?;
        Ok(())
    })
    .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"transfer": render(&s, api, &transfer, mv, true, Some(&auth_key))}),
    ))
}

async fn list(
    s: S,
    ctx: &AuthContext,
    mv: Mv,
    api: Api,
    q: HashMap<String, String>,
    detailed: bool,
    url: super::UrlPrefix,
) -> VolumeResult<Response> {
    check_api(api, mv)?;
    let project = project_of(ctx)?;
    authorize(&s, ctx, "volume:get_all_transfers", &own_target(ctx))?;
    let all = q.get("all_tenants").is_some_and(|v| {
        v.is_empty() || matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")
    }) && is_admin(&s, ctx);
    let scope = (!all).then_some(project);
    let mut items = s
        .read(move |conn| Ok(tstore::list_transfers(conn, scope.as_deref())?))
        .await?;
    for (key, wanted) in &q {
        match key.as_str() {
            "name" => items.retain(|t| t.name.as_deref() == Some(wanted.as_str())),
            "volume_id" => items.retain(|t| &t.volume_id == wanted),
            _ => {}
        }
    }
    items.reverse();
    let (page_items, more) = page(items, &q, |t| t.id.as_str(), "transfers")?;
    let rendered: Vec<Value> = page_items
        .iter()
        .map(|t| render(&s, api, t, mv, detailed, None))
        .collect();
    let mut out = Map::new();
    out.insert("transfers".into(), Value::Array(rendered));
    if more && let Some(last) = page_items.last() {
        let path = if detailed {
            format!("{}/detail", api.collection())
        } else {
            api.collection().to_string()
        };
        out.insert(
            "transfers_links".into(),
            next_link(&s, url.0.as_deref(), &path, &q, &last.id),
        );
    }
    Ok(json_response(StatusCode::OK, &out))
}

async fn show(s: S, ctx: &AuthContext, mv: Mv, api: Api, id: String) -> VolumeResult<Response> {
    check_api(api, mv)?;
    let t = load_for(&s, ctx, &id, "volume:get_transfer").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"transfer": render(&s, api, &t, mv, true, None)}),
    ))
}

async fn delete(s: S, ctx: &AuthContext, mv: Mv, api: Api, id: String) -> VolumeResult<Response> {
    check_api(api, mv)?;
    let t = load_for(&s, ctx, &id, "volume:delete_transfer").await?;
    s.write(move |tx| {
        if let Some(mut v) = store::get_volume(tx, &t.volume_id)?
            && v.status == "awaiting-transfer"
        {
            v.status = "available".into();
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
        }
        tstore::delete_transfer(tx, &t.id)?;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

async fn accept(
    s: S,
    ctx: &AuthContext,
    mv: Mv,
    api: Api,
    id: String,
    bytes: Bytes,
) -> VolumeResult<Response> {
    check_api(api, mv)?;
    let obj = requests::take(&bytes, "accept")?;
    let req: Accept = requests::member("accept", obj)?;
    let auth_key = req.auth_key.ok_or_else(|| {
        bad("Invalid input for field/attribute accept. 'auth_key' is a required property")
    })?;
    let project = project_of(ctx)?;
    authorize(&s, ctx, "volume:accept_transfer", &own_target(ctx))?;
    let user = ctx.user_id.clone();
    let tid = id.clone();
    let accepted = s
        .write(move |tx| {
            let t = tstore::get_transfer(tx, &tid)?.ok_or_else(|| not_found(&tid))?;
            if !same(&crypt_hash(&t.salt, &auth_key), &t.crypt_hash) {
                return Err(bad(format!(
                    "Invalid auth key: Attempt to transfer {tid} with invalid auth key."
                )));
            }
            let mut v = store::get_volume(tx, &t.volume_id)?
                .ok_or_else(|| super::volumes::not_found(&t.volume_id))?;
            if v.status != "awaiting-transfer" {
                return Err(bad(format!(
                    "Invalid volume: Transfer {tid}: volume id {} in unexpected state {}, expected awaiting-transfer",
                    v.id, v.status
                )));
            }
            let type_name = store::get_type(tx, &v.volume_type_id)?
                .map(|t| t.name)
                .unwrap_or_default();
            let snapshots: Vec<_> = if t.no_snapshots {
                Vec::new()
            } else {
                store::list_snapshots(tx, None)?
                    .into_iter()
                    .filter(|sn| sn.volume_id == v.id)
                    .collect()
            };
            if v.project_id != project {
                super::ops::enforce_quota(tx, &project, &type_name, 1, 0, v.size)?;
                if !snapshots.is_empty() {
                    let gb: i64 = snapshots.iter().map(|sn| sn.size).sum();
                    super::ops::enforce_quota(
                        tx,
                        &project,
                        &type_name,
                        0,
                        snapshots.len() as i64,
                        gb,
                    )?;
                }
            }
            for mut snap in snapshots {
                snap.project_id = project.clone();
                snap.user_id = user.clone();
                store::put_snapshot(tx, &snap)?;
            }
            v.project_id = project.clone();
            v.user_id = user.clone();
            v.status = "available".into();
            v.updated_at = Some(now_string());
            store::put_volume(tx, &v)?;
            tstore::delete_transfer(tx, &t.id)?;
            Ok(t)
        })
        .await?;
    let mut view = render(&s, api, &accepted, mv, false, None);
    if let Value::Object(map) = &mut view {
        map.remove("created_at");
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"transfer": view}),
    ))
}

// ------------------------------------------------------- axum entry points

async fn create_legacy(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    create(s, &ctx, mv, Api::Legacy, bytes).await
}

async fn create_new(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    bytes: Bytes,
) -> VolumeResult<Response> {
    create(s, &ctx, mv, Api::V355, bytes).await
}

async fn list_legacy(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list(s, &ctx, mv, Api::Legacy, query_map(q), false, url).await
}

async fn detail_legacy(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list(s, &ctx, mv, Api::Legacy, query_map(q), true, url).await
}

async fn list_new(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list(s, &ctx, mv, Api::V355, query_map(q), false, url).await
}

async fn detail_new(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    url: super::UrlPrefix,
    Query(q): Query<Vec<(String, String)>>,
) -> VolumeResult<Response> {
    list(s, &ctx, mv, Api::V355, query_map(q), true, url).await
}

async fn show_legacy(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    show(s, &ctx, mv, Api::Legacy, id).await
}

async fn show_new(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    show(s, &ctx, mv, Api::V355, id).await
}

async fn delete_legacy(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    delete(s, &ctx, mv, Api::Legacy, id).await
}

async fn delete_new(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> VolumeResult<Response> {
    delete(s, &ctx, mv, Api::V355, id).await
}

async fn accept_legacy(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    accept(s, &ctx, mv, Api::Legacy, id, bytes).await
}

async fn accept_new(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    bytes: Bytes,
) -> VolumeResult<Response> {
    accept(s, &ctx, mv, Api::V355, id, bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_hex_and_checked_by_their_salted_hash() {
        let a = random_hex(16);
        let b = random_hex(16);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let h = crypt_hash("salt", &a);
        assert!(same(&h, &crypt_hash("salt", &a)));
        assert!(!same(&h, &crypt_hash("salt", &b)));
        assert!(!same(&h, &crypt_hash("pepper", &a)));
    }

    #[test]
    fn create_takes_no_snapshots_as_a_json_boolean_only() {
        let read = |v: Value| -> VolumeResult<CreateTransfer> {
            let Value::Object(obj) = v else {
                panic!("an object")
            };
            requests::member("transfer", obj)
        };
        let req = read(json!({"volume_id": "v", "no_snapshots": true})).expect("accepted");
        assert_eq!(req.no_snapshots, Some(true));
        for refused_value in [json!(null), json!("true"), json!(1)] {
            assert_eq!(
                crate::volume::requests::refused(read(
                    json!({"volume_id": "v", "no_snapshots": refused_value})
                )),
                "Invalid input for field/attribute no_snapshots. Value is not a boolean."
            );
        }
    }
}
