//! The server state machine: server actions (`POST /servers/{id}/action`),
//! the build, delete, and the monitor that keeps the state file true to the
//! VMM processes (exits, vanished VMMs, re-attaching after a restart).
//!
//! Every action checks vm_state and task_state as Nova's
//! `check_instance_state` does (409 otherwise), sets the task state and
//! records an instance action inside one transaction, answers 202, and runs
//! the VMM side in a background task holding the server's operation lock.
//! The task ends by writing the final vm_state / power_state and the
//! action's event result.
//!
//! Layout: this file has the shared steps (`begin`, `run`, `settle`,
//! `boot`, `start`), each action's policy rule and [`action`], which only
//! dispatches by name. One function per action lives by concern:
//! `power` (stop, start, reboot, pause, suspend and their reverses),
//! `shelve`, `resize` (with confirm and revert), `rebuild`, `image`
//! (createImage, createBackup and the snapshot both shelve and they use),
//! `rescue`, `admin` (lock, unlock, resetState, injectNetworkInfo and the
//! actions this one-host cloud refuses), `console` (console output, the
//! serial console URL) and `monitor` (VMM exits, start-up re-attachment).

mod admin;
mod console;
mod image;
mod monitor;
mod power;
mod rebuild;
mod rescue;
mod resize;
mod shelve;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::access::{self, check_unlocked, load_tx};
use super::build::{finish_action, record_action, update_server};
use super::network_proxy;
use super::states::{Action, PowerState, TaskState, VmState};
use super::{ComputeError, ComputeResult, ComputeState, Mv, empty};
use crate::db::now_unix;
use crate::db::servers::{self as db, Server};
use crate::http::RequestId;
use crate::identity::{Auth, AuthContext};

pub use monitor::start_monitor;

type S = Arc<ComputeState>;

/// Checks the state for `action` against the table (states.rs) and starts
/// it: 409 unless it may start; sets its task state and records the action.
async fn begin(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    request_id: &str,
    action: Action,
) -> ComputeResult<Server> {
    let admin = super::is_admin_context(s, ctx);
    let ctx2 = ctx.clone();
    let (id2, rid) = (id.to_string(), request_id.to_string());
    s.write(move |tx| {
        let mut server = load_tx(tx, admin, &ctx2, &id2)?;
        check_unlocked(admin, &server)?;
        enter(&mut server, &id2, action)?;
        server.updated_at = now_unix();
        db::update_server(tx, &server)?;
        record_action(tx, &server, &rid, action.name(), now_unix())?;
        Ok(server)
    })
    .await
    .inspect(|server| s.config.events.server(&server.id, &server.project_id))
}

/// Puts the server into `action`'s task state, or refuses as Nova does.
fn enter(server: &mut Server, id: &str, action: Action) -> ComputeResult<()> {
    let task = action
        .check(id, server.vm_state, server.task_state)
        .map_err(|e| ComputeError::Conflict(e.to_string()))?;
    server.task_state = task;
    Ok(())
}

/// Runs an action's VMM side in the background under the server's lock.
/// `op` returns the error text on failure; the task state is then cleared
/// and the event marked Error.
fn run<F, Fut>(s: &S, id: &str, request_id: &str, op: F)
where
    F: FnOnce(S, Server) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (s, id, rid) = (s.clone(), id.to_string(), request_id.to_string());
    tokio::spawn(async move {
        let lock = s.locks.lock_for(&id);
        let guard = lock.lock().await;
        let id2 = id.clone();
        let server = s
            .read(move |conn| Ok(db::get_server(conn, &id2)?))
            .await
            .ok()
            .flatten();
        let Some(server) = server.filter(|sv| !sv.deleted) else {
            return;
        };
        let result = op(s.clone(), server).await;
        drop(guard);
        let ok = result.is_ok();
        let traceback = result.err();
        if let Some(error) = &traceback {
            tracing::warn!(server = %id, error = %error, "server action failed");
            update_server(&s, &id, |sv| {
                if sv.task_state != Some(TaskState::Deleting) {
                    sv.task_state = None;
                }
            })
            .await;
        }
        finish_action(&s, &id, &rid, None, ok, traceback).await;
    });
}

/// Sets the final state of an action.
async fn settle(s: &ComputeState, id: &str, vm_state: VmState, power_state: PowerState) {
    update_server(s, id, move |sv| {
        sv.vm_state = vm_state;
        sv.power_state = power_state;
        if sv.task_state != Some(TaskState::Deleting) {
            sv.task_state = None;
        }
    })
    .await;
}

/// Starts the server's VMM (from saved state with `restore`) and records its pid.
async fn boot(s: &S, server: &Server, restore: bool) -> Result<(), String> {
    let pid = s
        .driver
        .spawn(server, restore)
        .await
        .map_err(|e| e.to_string())?;
    update_server(s, &server.id, move |sv| sv.vmm_pid = Some(pid as i64)).await;
    Ok(())
}

/// The rule Nova enforces for a server action, on the server's project and
/// user. `None` for the serial console (its own handler enforces
/// os-remote-consoles) and for names that are no action.
fn action_rule(name: &str) -> Option<&'static str> {
    Some(match name {
        "os-stop" => "os_compute_api:servers:stop",
        "os-start" => "os_compute_api:servers:start",
        "reboot" => "os_compute_api:servers:reboot",
        "pause" => "os_compute_api:os-pause-server:pause",
        "unpause" => "os_compute_api:os-pause-server:unpause",
        "suspend" => "os_compute_api:os-suspend-server:suspend",
        "resume" => "os_compute_api:os-suspend-server:resume",
        "shelve" => "os_compute_api:os-shelve:shelve",
        "shelveOffload" => "os_compute_api:os-shelve:shelve_offload",
        "unshelve" => "os_compute_api:os-shelve:unshelve",
        "lock" => "os_compute_api:os-lock-server:lock",
        "unlock" => "os_compute_api:os-lock-server:unlock",
        "os-resetState" => "os_compute_api:os-admin-actions:reset_state",
        "injectNetworkInfo" => "os_compute_api:os-admin-actions:inject_network_info",
        "resetNetwork" => "os_compute_api:os-admin-actions:inject_network_info",
        "os-getConsoleOutput" => "os_compute_api:os-console-output",
        "os-getVNCConsole" | "os-getSPICEConsole" | "os-getRDPConsole" => {
            "os_compute_api:os-remote-consoles"
        }
        "createImage" => "os_compute_api:servers:create_image",
        "createBackup" => "os_compute_api:os-create-backup",
        "rebuild" => "os_compute_api:servers:rebuild",
        "resize" => "os_compute_api:servers:resize",
        "confirmResize" => "os_compute_api:servers:confirm_resize",
        "revertResize" => "os_compute_api:servers:revert_resize",
        "forceDelete" => "os_compute_api:os-deferred-delete:force",
        "restore" => "os_compute_api:os-deferred-delete:restore",
        "migrate" => "os_compute_api:os-migrate-server:migrate",
        "os-migrateLive" => "os_compute_api:os-migrate-server:migrate_live",
        "evacuate" => "os_compute_api:os-evacuate",
        "changePassword" => "os_compute_api:os-admin-password",
        "rescue" => "os_compute_api:os-rescue",
        "unrescue" => "os_compute_api:os-unrescue",
        "trigger_crash_dump" => "os_compute_api:servers:trigger_crash_dump",
        "addSecurityGroup" => "os_compute_api:os-security-groups:add",
        "removeSecurityGroup" => "os_compute_api:os-security-groups:remove",
        "addFixedIp" => "os_compute_api:os-multinic:add",
        "removeFixedIp" => "os_compute_api:os-multinic:remove",
        "addFloatingIp" => "os_compute_api:os-floating-ips:add",
        "removeFloatingIp" => "os_compute_api:os-floating-ips:remove",
        _ => return None,
    })
}

/// `POST /servers/{id}/action`: the body names one action; this checks the
/// action's policy rule on the server and hands over to its function.
pub async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    super::consoles::CallerToken(user_token): super::consoles::CallerToken,
    mv: Mv,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    body: Bytes,
) -> ComputeResult<Response> {
    // `{action: argument}`, one member; the argument is read into the
    // action's declared type by the action.
    let body: serde_json::Map<String, serde_json::Value> = super::request::body(&body)?;
    if body.len() != 1 {
        return Err(ComputeError::BadRequest(
            "There is no such action: the body must name exactly one action".into(),
        ));
    }
    let Some((name, arg)) = body.into_iter().next() else {
        return Err(ComputeError::BadRequest("There is no such action".into()));
    };
    let removed_at_2_44 = matches!(
        name.as_str(),
        "addFloatingIp" | "removeFloatingIp" | "addFixedIp" | "removeFixedIp"
    );
    if removed_at_2_44 && mv.at_least(network_proxy::LAST_FLOATING_ACTION_MICROVERSION + 1) {
        return Err(ComputeError::NotFound(format!(
            "There is no such action: {name}"
        )));
    }
    if let Some(rule) = action_rule(&name) {
        access::load_authorized(&s, &ctx, &id, rule).await?;
    }
    let (s, ctx, id, rid) = (&s, &ctx, id.as_str(), request_id.0.as_str());
    match name.as_str() {
        "os-stop" => start(s, ctx, id, rid, Action::Stop, power::stop_vm).await,
        "os-start" => start(s, ctx, id, rid, Action::Start, power::start_vm).await,
        "reboot" => power::reboot(s, ctx, id, rid, &arg).await,
        "pause" => start(s, ctx, id, rid, Action::Pause, power::pause_vm).await,
        "unpause" => start(s, ctx, id, rid, Action::Unpause, power::unpause_vm).await,
        "suspend" => start(s, ctx, id, rid, Action::Suspend, power::suspend_vm).await,
        "resume" => start(s, ctx, id, rid, Action::Resume, power::resume_vm).await,
        "shelve" => start(s, ctx, id, rid, Action::Shelve, shelve::shelve_vm).await,
        "shelveOffload" => {
            start(
                s,
                ctx,
                id,
                rid,
                Action::ShelveOffload,
                shelve::shelve_offload_vm,
            )
            .await
        }
        "unshelve" => start(s, ctx, id, rid, Action::Unshelve, shelve::unshelve_vm).await,
        "lock" => admin::lock(s, ctx, mv, id, rid, &arg).await,
        "unlock" => admin::unlock(s, ctx, id, rid).await,
        "os-resetState" => admin::reset_state(s, ctx, id, rid, &arg).await,
        "injectNetworkInfo" | "resetNetwork" => admin::inject_network_info(s, ctx, id).await,
        "os-getConsoleOutput" => console::console_output(s, ctx, id, &arg).await,
        "os-getSerialConsole" => console::serial_console(s, ctx, &user_token, id, &arg).await,
        "os-getVNCConsole" | "os-getSPICEConsole" | "os-getRDPConsole" => {
            console::graphical_console()
        }
        "createImage" => image::create_image(s, ctx, mv, id, rid, &arg).await,
        "createBackup" => image::create_backup(s, ctx, mv, id, rid, &arg).await,
        "rebuild" => rebuild::rebuild(s, ctx, mv, id, rid, arg).await,
        "resize" => resize::resize(s, ctx, id, rid, &arg).await,
        "confirmResize" => resize::confirm_resize(s, ctx, id, rid).await,
        "revertResize" => {
            start(
                s,
                ctx,
                id,
                rid,
                Action::RevertResize,
                resize::revert_resize_vm,
            )
            .await
        }
        "forceDelete" | "restore" => admin::deferred_delete(s, ctx, id, &name).await,
        "migrate" | "os-migrateLive" | "evacuate" => admin::migrate(s, ctx, id).await,
        "changePassword" => admin::change_password(s, ctx, id).await,
        "rescue" => rescue::rescue(s, ctx, mv, id, rid, arg).await,
        "unrescue" => start(s, ctx, id, rid, Action::Unrescue, rescue::unrescue_vm).await,
        "trigger_crash_dump" => admin::trigger_crash_dump(s, ctx, id, &name).await,
        "addSecurityGroup" | "removeSecurityGroup" => {
            let add = name == "addSecurityGroup";
            network_proxy::security_group_action(s, ctx, id, &arg, add).await
        }
        "addFloatingIp" => network_proxy::add_floating_ip(s, ctx, id, &arg).await,
        "removeFloatingIp" => network_proxy::remove_floating_ip(s, ctx, id, &arg).await,
        "addFixedIp" | "removeFixedIp" => {
            let add = name == "addFixedIp";
            network_proxy::fixed_ip_action(s, ctx, id, &arg, add).await
        }
        other => {
            access::load(s, ctx, id).await?;
            Err(ComputeError::BadRequest(format!(
                "There is no such action: {other}"
            )))
        }
    }
}

/// Starts `action` (state check, task state, instance action) and runs
/// `op`, its VMM side, in the background: 202.
async fn start<F, Fut>(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    request_id: &str,
    action: Action,
    op: F,
) -> ComputeResult<Response>
where
    F: FnOnce(S, Server) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    begin(s, ctx, id, request_id, action).await?;
    run(s, id, request_id, op);
    Ok(empty(StatusCode::ACCEPTED))
}

#[cfg(test)]
mod tests;
