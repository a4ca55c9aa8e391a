//! `resize` (capacity and quota for the difference, the same fit check as
//! create), `confirmResize` and `revertResize`.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;

use super::{S, begin, boot, run, settle};
use crate::compute::access;
use crate::compute::build::{clean_timeout, update_server};
use crate::compute::request::{DiskConfig, action_arg};
use crate::compute::states::{Action, PowerState, TaskState, VmState};
use crate::compute::{ComputeError, ComputeResult, empty};
use crate::db::compute as store;
use crate::db::now_unix;
use crate::db::servers::{self as db, FlavorCopy, Server};
use crate::identity::AuthContext;

/// `confirmResize`: the old flavor is forgotten, the migration confirmed; 204.
pub(super) async fn confirm_resize(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    rid: &str,
) -> ComputeResult<Response> {
    begin(s, ctx, id, rid, Action::ConfirmResize).await?;
    run(s, id, rid, confirm_resize_vm);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// The argument of `resize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResizeArg {
    #[serde(rename = "flavorRef")]
    pub(super) flavor_ref: FlavorRef,
    /// Accepted and ignored: the root disk is always grown to the flavor.
    #[serde(rename = "OS-DCF:diskConfig", default)]
    pub(super) _disk_config: Option<DiskConfig>,
}

/// A flavor id or link (its last segment), or a number.
#[derive(Debug)]
pub(super) struct FlavorRef(pub(super) String);

impl<'de> Deserialize<'de> for FlavorRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(r) if !r.is_empty() => Ok(FlavorRef(
                r.trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )),
            Value::Number(n) => Ok(FlavorRef(n.to_string())),
            v => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

pub(super) async fn resize(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let ResizeArg {
        flavor_ref: FlavorRef(flavor_ref),
        ..
    } = action_arg("resize", arg.clone())?;
    let fid = flavor_ref.clone();
    let flavor = s
        .read(move |conn| Ok(store::get_flavor(conn, &fid)?))
        .await?
        .ok_or_else(|| {
            ComputeError::BadRequest(format!("Flavor {flavor_ref} could not be found."))
        })?;
    let current = access::load(s, ctx, id).await?;
    if current.flavor.id == flavor.id {
        return Err(ComputeError::BadRequest(
            "When resizing, instances must change flavor!".into(),
        ));
    }
    // Nova's libvirt driver: neither the root disk nor the ephemeral disks
    // (their sum) may shrink.
    let ephemeral_gb: i64 = current
        .local_disks
        .iter()
        .filter(|d| d.kind == crate::db::servers::LocalDiskKind::Ephemeral)
        .map(|d| d.size_mib / 1024)
        .sum();
    if (flavor.disk < current.flavor.disk && flavor.disk != 0) || flavor.ephemeral < ephemeral_gb {
        return Err(ComputeError::BadRequest(
            "Resize error: Unable to resize disk down.".into(),
        ));
    }
    // Capacity and quota for the difference.
    let (dv, dr) = (
        flavor.vcpus - current.flavor.vcpus,
        flavor.ram - current.flavor.ram,
    );
    let (project, user) = (current.project_id.clone(), current.user_id.clone());
    let ratios = s.config.ratios;
    let facts = crate::compute::hosts::capacity(&s.db.state_dir());
    let (fv, fr) = (flavor.vcpus, flavor.ram);
    let cur_id = current.id.clone();
    s.read(move |conn| {
        let usage = db::quota_usage(conn, &project, None)?;
        for (resource, delta) in [("cores", dv), ("ram", dr)] {
            if delta > 0 {
                crate::compute::quotas::enforce_limit(
                    conn,
                    &project,
                    Some(&user),
                    resource,
                    usage.get(resource).copied().unwrap_or(0),
                    delta,
                )?;
            }
        }
        // The server's own usage is left out: it moves to the new flavor.
        let others = db::host_usage(conn, Some(&cur_id))?;
        let demand = crate::compute::scheduler::Demand {
            vcpus: fv,
            ram_mb: fr,
            disk_gb: 0,
        };
        let fit = crate::compute::scheduler::fit(others, demand, &facts, ratios);
        if !(fit.cpu && fit.ram) {
            return Err(ComputeError::BadRequest(
                "No valid host was found. There are not enough hosts available.".into(),
            ));
        }
        Ok(())
    })
    .await?;
    begin(s, ctx, id, rid, Action::Resize).await?;
    let new = FlavorCopy::from(&flavor);
    run(s, id, rid, move |s, sv| resize_vm(s, sv, new));
    Ok(empty(StatusCode::ACCEPTED))
}

/// The VMM side of `resize`: the server stops, moves to the new flavor
/// (the old one kept for revert, a migration recorded), its disk grows and
/// it boots again when it ran; VERIFY_RESIZE follows.
pub(super) async fn resize_vm(s: S, sv: Server, new: FlavorCopy) -> Result<(), String> {
    let running = sv.vm_state == VmState::Active;
    update_server(&s, &sv.id, |x| {
        x.task_state = Some(TaskState::ResizeMigrating)
    })
    .await;
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    let disk = new.disk;
    let Some(resized) = update_server(&s, &sv.id, move |x| {
        let now = now_unix();
        x.migrations.push(crate::db::servers::MigrationRecord {
            id: i64::from(rand::random::<u32>() >> 1),
            uuid: uuid::Uuid::new_v4().to_string(),
            kind: "resize".into(),
            status: "finished".into(),
            old_flavor_id: x.flavor.id.clone(),
            new_flavor_id: new.id.clone(),
            created_at: now,
            updated_at: now,
        });
        x.old_flavor = Some(x.flavor.clone());
        follow_flavor(&mut x.local_disks, &new);
        x.flavor = new;
        x.task_state = Some(TaskState::ResizeFinish);
    })
    .await
    else {
        return Ok(());
    };
    s.driver
        .grow_disk(&sv.id, disk)
        .await
        .map_err(|e| e.to_string())?;
    if running {
        boot(&s, &resized, false).await?;
    }
    settle(
        &s,
        &sv.id,
        VmState::Resized,
        if running {
            PowerState::Running
        } else {
            PowerState::Shutdown
        },
    )
    .await;
    Ok(())
}

/// The VMM side of `confirmResize`: the old flavor is dropped, the
/// migration confirmed; the server runs on as it was.
pub(super) async fn confirm_resize_vm(s: S, sv: Server) -> Result<(), String> {
    let running = sv.power_state == PowerState::Running;
    update_server(&s, &sv.id, move |x| {
        x.old_flavor = None;
        x.vm_state = if running {
            VmState::Active
        } else {
            VmState::Stopped
        };
        x.task_state = None;
        if let Some(m) = x.migrations.last_mut() {
            m.status = "confirmed".into();
            m.updated_at = now_unix();
        }
    })
    .await;
    Ok(())
}

/// `revertResize`: the old flavor back, the server booted again if it ran.
pub(super) async fn revert_resize_vm(s: S, sv: Server) -> Result<(), String> {
    let running = sv.power_state == PowerState::Running;
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    let Some(back) = update_server(&s, &sv.id, |x| {
        if let Some(old) = x.old_flavor.take() {
            follow_flavor(&mut x.local_disks, &old);
            x.flavor = old;
        }
        if let Some(m) = x.migrations.last_mut() {
            m.status = "reverted".into();
            m.updated_at = now_unix();
        }
    })
    .await
    else {
        return Ok(());
    };
    if running {
        boot(&s, &back, false).await?;
    }
    settle(
        &s,
        &sv.id,
        if running {
            VmState::Active
        } else {
            VmState::Stopped
        },
        if running {
            PowerState::Running
        } else {
            PowerState::Shutdown
        },
    )
    .await;
    Ok(())
}

/// The local disks sized by the flavor take `flavor`'s sizes (the next boot
/// grows an ephemeral disk, never shrinking it, and remakes a swap disk of
/// another size). A resize neither adds nor removes local disks: that would
/// move the attached volumes to other devices.
fn follow_flavor(disks: &mut [crate::db::servers::LocalDisk], flavor: &FlavorCopy) {
    use crate::db::servers::LocalDiskKind;
    for d in disks.iter_mut().filter(|d| d.from_flavor) {
        match d.kind {
            LocalDiskKind::Ephemeral if flavor.ephemeral > 0 => {
                d.size_mib = flavor.ephemeral * 1024;
            }
            LocalDiskKind::Swap if flavor.swap > 0 => d.size_mib = flavor.swap,
            _ => {}
        }
    }
}
