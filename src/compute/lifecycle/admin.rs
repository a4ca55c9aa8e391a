//! Synchronous and refused actions: `lock`, `unlock`, `os-resetState`,
//! `injectNetworkInfo`/`resetNetwork`, and what this one-host cloud without
//! a guest agent refuses (`forceDelete`/`restore` outside soft delete,
//! `migrate`/`os-migrateLive`/`evacuate`, `changePassword`,
//! `trigger_crash_dump`).

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::S;
use crate::compute::access::{self, check_unlocked, load_tx};
use crate::compute::build::{finish_action, record_action};
use crate::compute::request::action_arg;
use crate::compute::states::VmState;
use crate::compute::{ComputeError, ComputeResult, Mv, empty};
use crate::db::now_unix;
use crate::db::servers::{self as db, Server};
use crate::http::body::BodyError;
use crate::identity::AuthContext;
use crate::policy::Target;

/// The argument of `lock` from 2.73.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LockArg {
    #[serde(default)]
    pub(super) locked_reason: Option<String>,
}

/// The argument of `os-resetState`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetStateArg {
    pub(super) state: ResetTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ResetTo {
    Active,
    Error,
}

/// `lock` (with `locked_reason` from 2.73).
pub(super) async fn lock(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let reason = if mv.at_least(73) {
        // 2.73's schema: `null` or an object with an optional reason.
        let arg: Option<LockArg> = action_arg("lock", arg.clone())?;
        match arg.and_then(|a| a.locked_reason) {
            Some(r) if r.chars().count() > 255 => {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute locked_reason. Value is too long".into(),
                ));
            }
            reason => reason,
        }
    } else {
        // Before 2.73 Nova has no schema for `lock`; only the reason is
        // refused, as not there yet.
        if arg.get("locked_reason").is_some() {
            return Err(BodyError::Unexpected("lock.locked_reason".into()).into());
        }
        None
    };
    let project = ctx.project_id().map(str::to_string);
    set_sync(s, ctx, id, rid, "lock", move |sv| {
        sv.locked = true;
        sv.locked_by = Some(locker(project.as_deref(), sv).into());
        sv.locked_reason = reason;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// `unlock`: a lock by someone else (owner vs admin) needs the override rule.
pub(super) async fn unlock(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    rid: &str,
) -> ComputeResult<Response> {
    let server = access::load(s, ctx, id).await?;
    let override_rule = "os_compute_api:os-lock-server:unlock:unlock_override";
    let may_override = crate::compute::allows(
        s,
        ctx,
        override_rule,
        &Target::project(server.project_id.clone()),
    );
    let project = ctx.project_id().map(str::to_string);
    set_sync(s, ctx, id, rid, "unlock", move |sv| {
        // Nova: a lock by someone else (owner vs admin) needs the
        // override rule; an unlocked server unlocks freely.
        if let Some(by) = &sv.locked_by
            && by != locker(project.as_deref(), sv)
            && !may_override
        {
            return Err(crate::compute::policy_forbids(override_rule));
        }
        sv.locked = false;
        sv.locked_by = None;
        sv.locked_reason = None;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// `os-resetState`: vm_state `active` or `error`, the task state cleared.
pub(super) async fn reset_state(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let ResetStateArg { state } = action_arg("os-resetState", arg.clone())?;
    let state = match state {
        ResetTo::Active => VmState::Active,
        ResetTo::Error => VmState::Error,
    };
    set_sync(s, ctx, id, rid, "resetState", move |sv| {
        sv.vm_state = state;
        sv.task_state = None;
        Ok(())
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// `injectNetworkInfo` and `resetNetwork`: nothing to do here; 202.
pub(super) async fn inject_network_info(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
) -> ComputeResult<Response> {
    access::load(s, ctx, id).await?;
    Ok(empty(StatusCode::ACCEPTED))
}

/// `forceDelete` and `restore`: only for soft-deleted servers, which this
/// cloud does not keep.
pub(super) async fn deferred_delete(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    name: &str,
) -> ComputeResult<Response> {
    let server = access::load(s, ctx, id).await?;
    Err(ComputeError::Conflict(format!(
        "Cannot '{name}' instance {id} while it is in vm_state {}",
        server.vm_state
    )))
}

/// `migrate`, `os-migrateLive`, `evacuate`: there is no other host.
pub(super) async fn migrate(s: &S, ctx: &Arc<AuthContext>, id: &str) -> ComputeResult<Response> {
    access::load(s, ctx, id).await?;
    Err(ComputeError::BadRequest(
        "No valid host was found. This cloud has one compute host.".into(),
    ))
}

/// `changePassword`: needs a guest agent.
pub(super) async fn change_password(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
) -> ComputeResult<Response> {
    access::load(s, ctx, id).await?;
    Err(ComputeError::NotImplemented(
        "Unable to set password on instance: no guest agent.".into(),
    ))
}

/// `trigger_crash_dump`: the driver has no NMI.
pub(super) async fn trigger_crash_dump(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    name: &str,
) -> ComputeResult<Response> {
    access::load(s, ctx, id).await?;
    Err(ComputeError::NotImplemented(format!(
        "The {name} action is not implemented by this cloud's driver."
    )))
}

/// Who a lock is by, as Nova records it: `owner` when the caller is in the
/// server's project, else `admin`.
fn locker(caller_project: Option<&str>, server: &Server) -> &'static str {
    if caller_project == Some(server.project_id.as_str()) {
        "owner"
    } else {
        "admin"
    }
}

/// A synchronous action: changes the server and records the action, done.
async fn set_sync(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    request_id: &str,
    action: &'static str,
    change: impl FnOnce(&mut Server) -> ComputeResult<()> + Send + 'static,
) -> ComputeResult<Server> {
    let admin = crate::compute::is_admin_context(s, ctx);
    let ctx2 = ctx.clone();
    let (id2, rid) = (id.to_string(), request_id.to_string());
    let server = s
        .write(move |tx| {
            let mut server = load_tx(tx, admin, &ctx2, &id2)?;
            if action != "unlock" && action != "resetState" {
                check_unlocked(admin, &server)?;
            }
            change(&mut server)?;
            server.updated_at = now_unix();
            db::update_server(tx, &server)?;
            record_action(tx, &server, &rid, action, now_unix())?;
            Ok(server)
        })
        .await?;
    s.config.events.server(&server.id, &server.project_id);
    finish_action(s, id, request_id, None, true, None).await;
    Ok(server)
}
