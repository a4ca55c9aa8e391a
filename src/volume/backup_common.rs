//! What the backup handlers share: the error helpers, the text check,
//! the lookup under a policy rule, and the summary and detail views.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::{
    Mv, VolumeError, VolumeResult, VolumeState, allows, authorize, is_admin, project_target,
};
use crate::db::volume_records::{self as bstore, Backup};
use crate::identity::AuthContext;

type S = Arc<VolumeState>;

pub(super) fn not_found(id: &str) -> VolumeError {
    VolumeError::NotFound(format!("Backup {id} could not be found."))
}

pub(super) fn bad(msg: impl Into<String>) -> VolumeError {
    VolumeError::BadRequest(msg.into())
}

/// A backup's name, description or container: at most 255 characters.
pub(super) fn text(key: &str, value: Option<String>) -> VolumeResult<Option<String>> {
    if value.as_ref().is_some_and(|v| v.chars().count() > 255) {
        return Err(bad(format!(
            "Invalid input for field/attribute {key}. Value is too long"
        )));
    }
    Ok(value)
}

pub(super) async fn load_for(
    s: &S,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
) -> VolumeResult<Backup> {
    let wanted = id.to_string();
    let b = s
        .read(move |conn| Ok(bstore::get_backup(conn, &wanted)?))
        .await?
        .ok_or_else(|| not_found(id))?;
    if !is_admin(s, ctx) && ctx.project_id() != Some(b.project_id.as_str()) {
        return Err(not_found(id));
    }
    authorize(s, ctx, rule, &project_target(&b.project_id))?;
    Ok(b)
}

// ------------------------------------------------------------------ views

#[derive(Serialize)]
struct Summary<'a> {
    id: &'a str,
    name: Option<&'a str>,
    links: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Detail<'a> {
    id: &'a str,
    status: &'a str,
    size: i64,
    object_count: i64,
    availability_zone: &'a str,
    container: Option<&'a str>,
    created_at: &'a str,
    updated_at: Option<&'a str>,
    name: Option<&'a str>,
    description: Option<&'a str>,
    fail_reason: Option<&'a str>,
    volume_id: &'a str,
    links: Value,
    is_incremental: bool,
    has_dependent_backups: bool,
    snapshot_id: Option<&'a str>,
    data_timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(
        rename = "os-backup-project-attr:project_id",
        skip_serializing_if = "Option::is_none"
    )]
    project_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

pub(super) fn summary(s: &S, b: &Backup, mv: Mv) -> Value {
    serde_json::to_value(Summary {
        id: &b.id,
        name: b.name.as_deref(),
        links: s.links(&b.project_id, "backups", &b.id),
        metadata: mv.at_least(43).then_some(&b.metadata),
    })
    .unwrap_or(Value::Null)
}

pub(super) fn detail(s: &S, ctx: &AuthContext, b: &Backup, dependents: bool, mv: Mv) -> Value {
    let attrs = allows(
        s,
        ctx,
        "backup:backup_project_attribute",
        &project_target(&b.project_id),
    );
    serde_json::to_value(Detail {
        id: &b.id,
        status: &b.status,
        size: b.size,
        object_count: b.object_count,
        availability_zone: &b.availability_zone,
        container: b.container.as_deref(),
        created_at: &b.created_at,
        updated_at: b.updated_at.as_deref(),
        name: b.name.as_deref(),
        description: b.description.as_deref(),
        fail_reason: b.fail_reason.as_deref(),
        volume_id: &b.volume_id,
        links: s.links(&b.project_id, "backups", &b.id),
        is_incremental: b.is_incremental,
        has_dependent_backups: dependents,
        snapshot_id: b.snapshot_id.as_deref(),
        data_timestamp: &b.data_timestamp,
        metadata: mv.at_least(43).then_some(&b.metadata),
        project_id: (mv.at_least(18) && attrs).then_some(b.project_id.as_str()),
        user_id: (mv.at_least(56) && attrs).then_some(b.user_id.as_str()),
    })
    .unwrap_or(Value::Null)
}
