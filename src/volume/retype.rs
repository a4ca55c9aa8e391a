//! `os-retype`: the simple case of Cinder's retype. There is one backend, so
//! a retype never migrates: it checks the new type's per-type quotas and
//! moves the volume to the new type in one transaction (usage is derived
//! from the volumes, so the old type's usage drops with the same write).

use std::sync::Arc;

use super::ops::effective_limits;
use super::{VolumeError, VolumeResult, VolumeState, now_string};
use crate::db::volume as store;

fn invalid(msg: String) -> VolumeError {
    VolumeError::BadRequest(format!("Invalid input received: {msg}"))
}

/// Whether a type's extra specs ask for multiattach (`<is> True`).
fn multiattach_spec(t: &store::VolumeType) -> bool {
    t.extra_specs
        .get("multiattach")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("<is> true"))
}

/// Changes volume `id` to the type named or identified by `new_type`.
pub async fn retype(s: &Arc<VolumeState>, id: &str, new_type: &str) -> VolumeResult<()> {
    let (id, new_type) = (id.to_string(), new_type.to_string());
    s.write(move |tx| {
        let target = match store::get_type(tx, &new_type)? {
            Some(t) => t,
            None => store::get_type_by_name(tx, &new_type)?.ok_or_else(|| {
                invalid(format!("Invalid volume_type passed: {new_type}."))
            })?,
        };
        let mut v = store::get_volume(tx, &id)?
            .ok_or_else(|| VolumeError::NotFound(format!("Volume {id} could not be found.")))?;
        let migrating = v
            .migration_status
            .as_deref()
            .is_some_and(|m| !["", "success", "error"].contains(&m));
        if !["available", "in-use"].contains(&v.status.as_str())
            || migrating
            || v.volume_type_id == target.id
        {
            return Err(VolumeError::BadRequest(
                "Invalid volume: Retype needs volume to be in available or in-use state, not be part of an active migration or a consistency group, requested type has to be different that the one from the volume, and for in-use volumes front-end qos specs cannot change.".into(),
            ));
        }
        let multiattach = multiattach_spec(&target);
        if multiattach != v.multiattach && v.status != "available" {
            return Err(invalid(format!(
                "Invalid volume_type passed, retypes affecting multiattach are only allowed on available volumes, the specified volume however currently has a status of: {}.",
                v.status
            )));
        }
        // Cinder reserves only the per-type figures of the new type.
        let limits = effective_limits(tx, &v.project_id)?;
        let used = store::usage(tx, &v.project_id)?;
        for (kind, delta) in [("volumes", 1), ("gigabytes", v.size)] {
            let key = format!("{kind}_{}", target.name);
            let limit = limits.get(&key).copied().unwrap_or(-1);
            let have = used.get(&key).copied().unwrap_or(0);
            if limit >= 0 && have + delta > limit {
                return Err(VolumeError::OverLimit(if kind == "gigabytes" {
                    format!(
                        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {key} quota. Requested {delta}G, quota is {limit}G and {have}G has been consumed."
                    )
                } else {
                    format!(
                        "VolumeLimitExceeded: Maximum number of volumes allowed ({limit}) exceeded for quota '{key}'."
                    )
                }));
            }
        }
        v.volume_type_id = target.id;
        v.multiattach = multiattach;
        v.updated_at = Some(now_string());
        store::put_volume(tx, &v)?;
        Ok(())
    })
    .await
}
