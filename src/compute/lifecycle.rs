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

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::access::{self, check_unlocked, load_tx};
use super::build::{
    boot_files, clean_timeout, config_drive_files, fault, finish_action, record_action,
    resolve_boot, spawn_delete, update_server,
};
use super::driver::VmmExit;
use super::network_proxy;
use super::servers::{self, view};
use super::states::{Action, CRASHED, NOSTATE, PAUSED, RUNNING, SHUTDOWN};
use super::{ComputeError, ComputeResult, ComputeState, Mv, empty, int_field, parse_body};
use crate::db::compute as store;
use crate::db::now_unix;
use crate::db::servers::{self as db, Server};
use crate::http::{RequestId, json_response};
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;
use crate::vmm::control::VmmState;

type S = Arc<ComputeState>;

// ---------------------------------------------------------------- actions

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
        .check(id, &server.vm_state, server.task_state.as_deref())
        .map_err(|e| ComputeError::Conflict(e.to_string()))?;
    server.task_state = task.map(|t| t.to_string());
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
                if sv.task_state.as_deref() != Some("deleting") {
                    sv.task_state = None;
                }
            })
            .await;
        }
        finish_action(&s, &id, &rid, None, ok, traceback).await;
    });
}

/// Sets the final state of an action.
async fn settle(s: &ComputeState, id: &str, vm_state: &'static str, power_state: i64) {
    update_server(s, id, move |sv| {
        sv.vm_state = vm_state.into();
        sv.power_state = power_state;
        if sv.task_state.as_deref() != Some("deleting") {
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

/// `POST /servers/{id}/action`.
pub async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    super::consoles::CallerToken(user_token): super::consoles::CallerToken,
    mv: Mv,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    body: Bytes,
) -> ComputeResult<Response> {
    let body = parse_body(&body)?;
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
    let rid = request_id.0.as_str();
    let accepted = || empty(StatusCode::ACCEPTED);
    match name.as_str() {
        "os-stop" => start(&s, &ctx, &id, rid, Action::Stop, stop_vm).await,
        "os-start" => start(&s, &ctx, &id, rid, Action::Start, start_vm).await,
        "reboot" => {
            let kind = arg
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_ascii_uppercase)
                .ok_or_else(|| {
                    ComputeError::BadRequest(
                        "Invalid input for field/attribute reboot. 'type' is a required property"
                            .into(),
                    )
                })?;
            match kind.as_str() {
                "HARD" => start(&s, &ctx, &id, rid, Action::RebootHard, reboot_hard_vm).await,
                "SOFT" => start(&s, &ctx, &id, rid, Action::RebootSoft, reboot_soft_vm).await,
                other => Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute type. Value: {other}. '{other}' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
                ))),
            }
        }
        "pause" => start(&s, &ctx, &id, rid, Action::Pause, pause_vm).await,
        "unpause" => start(&s, &ctx, &id, rid, Action::Unpause, unpause_vm).await,
        "suspend" => start(&s, &ctx, &id, rid, Action::Suspend, suspend_vm).await,
        "resume" => start(&s, &ctx, &id, rid, Action::Resume, resume_vm).await,
        "shelve" => start(&s, &ctx, &id, rid, Action::Shelve, shelve_vm).await,
        "shelveOffload" => {
            start(&s, &ctx, &id, rid, Action::ShelveOffload, shelve_offload_vm).await
        }
        "unshelve" => start(&s, &ctx, &id, rid, Action::Unshelve, unshelve_vm).await,
        "lock" => {
            let reason = match arg.get("locked_reason") {
                Some(Value::String(r)) if mv.at_least(73) => {
                    if r.chars().count() > 255 {
                        return Err(ComputeError::BadRequest(
                            "Invalid input for field/attribute locked_reason. Value is too long"
                                .into(),
                        ));
                    }
                    Some(r.clone())
                }
                Some(_) if !mv.at_least(73) => {
                    return Err(ComputeError::BadRequest(
                        "Invalid input for field/attribute lock. Additional properties are not allowed".into(),
                    ));
                }
                _ => None,
            };
            let project = ctx.project_id().map(str::to_string);
            set_sync(&s, &ctx, &id, rid, "lock", move |sv| {
                sv.locked = true;
                sv.locked_by = Some(locker(project.as_deref(), sv).into());
                sv.locked_reason = reason;
                Ok(())
            })
            .await?;
            Ok(accepted())
        }
        "unlock" => {
            let server = access::load(&s, &ctx, &id).await?;
            let override_rule = "os_compute_api:os-lock-server:unlock:unlock_override";
            let may_override = super::allows(
                &s,
                &ctx,
                override_rule,
                &Target::project(server.project_id.clone()),
            );
            let project = ctx.project_id().map(str::to_string);
            set_sync(&s, &ctx, &id, rid, "unlock", move |sv| {
                // Nova: a lock by someone else (owner vs admin) needs the
                // override rule; an unlocked server unlocks freely.
                if let Some(by) = &sv.locked_by
                    && by != locker(project.as_deref(), sv)
                    && !may_override
                {
                    return Err(super::policy_forbids(override_rule));
                }
                sv.locked = false;
                sv.locked_by = None;
                sv.locked_reason = None;
                Ok(())
            })
            .await?;
            Ok(accepted())
        }
        "os-resetState" => {
            let state = arg
                .get("state")
                .and_then(Value::as_str)
                .filter(|v| ["active", "error"].contains(v))
                .ok_or_else(|| {
                    ComputeError::BadRequest(
                        "Invalid input for field/attribute state. Value must be 'active' or 'error'".into(),
                    )
                })?
                .to_string();
            set_sync(&s, &ctx, &id, rid, "resetState", move |sv| {
                sv.vm_state = state;
                sv.task_state = None;
                Ok(())
            })
            .await?;
            Ok(accepted())
        }
        "injectNetworkInfo" | "resetNetwork" => {
            access::load(&s, &ctx, &id).await?;
            Ok(accepted())
        }
        "os-getConsoleOutput" => {
            let server = access::load(&s, &ctx, &id).await?;
            let length = match arg.get("length") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let n = int_field(v, "length", -1, i64::from(i32::MAX))?;
                    if n < 0 { None } else { Some(n as usize) }
                }
            };
            if server.vm_state == "building" && server.power_state == NOSTATE {
                return Err(ComputeError::Conflict(format!(
                    "Instance {id} is not ready"
                )));
            }
            let output = s.driver.console_output(&server.id, length).await;
            Ok(json_response(StatusCode::OK, &json!({"output": output})))
        }
        "os-getSerialConsole" => {
            let kind = arg.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "serial" {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute type. Value: {kind}. '{kind}' is not one of ['serial']"
                )));
            }
            let url = super::consoles::new_console_url(&s, &ctx, &user_token, &id).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"console": {"type": "serial", "url": url}}),
            ))
        }
        "os-getVNCConsole" | "os-getSPICEConsole" | "os-getRDPConsole" => {
            Err(ComputeError::BadRequest(
                "Unavailable console type: this cloud serves serial consoles only.".into(),
            ))
        }
        "createImage" => create_image(&s, &ctx, mv, &id, rid, &arg).await,
        "createBackup" => create_backup(&s, &ctx, mv, &id, rid, &arg).await,
        "rebuild" => rebuild(&s, &ctx, mv, &id, rid, arg).await,
        "resize" => resize(&s, &ctx, &id, rid, &arg).await,
        "confirmResize" => {
            begin(&s, &ctx, &id, rid, Action::ConfirmResize).await?;
            run(&s, &id, rid, confirm_resize_vm);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        "revertResize" => start(&s, &ctx, &id, rid, Action::RevertResize, revert_resize_vm).await,
        "forceDelete" | "restore" => {
            let server = access::load(&s, &ctx, &id).await?;
            Err(ComputeError::Conflict(format!(
                "Cannot '{name}' instance {id} while it is in vm_state {}",
                server.vm_state
            )))
        }
        "migrate" | "os-migrateLive" | "evacuate" => {
            access::load(&s, &ctx, &id).await?;
            Err(ComputeError::BadRequest(
                "No valid host was found. This cloud has one compute host.".into(),
            ))
        }
        "changePassword" => {
            access::load(&s, &ctx, &id).await?;
            Err(ComputeError::NotImplemented(
                "Unable to set password on instance: no guest agent.".into(),
            ))
        }
        "rescue" => rescue(&s, &ctx, mv, &id, rid, arg).await,
        "unrescue" => start(&s, &ctx, &id, rid, Action::Unrescue, unrescue_vm).await,
        "trigger_crash_dump" => {
            access::load(&s, &ctx, &id).await?;
            Err(ComputeError::NotImplemented(format!(
                "The {name} action is not implemented by this cloud's driver."
            )))
        }
        "addSecurityGroup" | "removeSecurityGroup" => {
            let add = name == "addSecurityGroup";
            network_proxy::security_group_action(&s, &ctx, &id, &arg, add).await
        }
        "addFloatingIp" => network_proxy::add_floating_ip(&s, &ctx, &id, &arg).await,
        "removeFloatingIp" => network_proxy::remove_floating_ip(&s, &ctx, &id, &arg).await,
        "addFixedIp" | "removeFixedIp" => {
            let add = name == "addFixedIp";
            network_proxy::fixed_ip_action(&s, &ctx, &id, &arg, add).await
        }
        other => {
            access::load(&s, &ctx, &id).await?;
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

// ------------------------------------------------- the actions' VMM sides

/// `os-stop`: power off (the guest gets its shutdown timeout).
async fn stop_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    settle(&s, &sv.id, "stopped", SHUTDOWN).await;
    Ok(())
}

/// `os-start`: boot again.
async fn start_vm(s: S, sv: Server) -> Result<(), String> {
    boot(&s, &sv, false).await?;
    settle(&s, &sv.id, "active", RUNNING).await;
    Ok(())
}

/// `reboot` HARD: reset a running VM, else boot it afresh. A server with
/// ports boots afresh too: a reset rebuilds the VM from the spec its VMM
/// started with, which lacks the NICs attached since (and has those
/// detached), while a new VMM gets one NIC per port as they are now.
async fn reboot_hard_vm(s: S, sv: Server) -> Result<(), String> {
    if s.driver.is_alive(&sv.id) && sv.vm_state != "paused" && sv.ports.is_empty() {
        s.driver.reset(&sv.id).await.map_err(|e| e.to_string())?;
    } else {
        s.driver.stop(&sv.id, None).await;
        s.driver.drop_saved_state(&sv.id).await;
        boot(&s, &sv, false).await?;
    }
    settle(&s, &sv.id, "active", RUNNING).await;
    Ok(())
}

/// `reboot` SOFT: a clean power-off, then boot.
async fn reboot_soft_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    boot(&s, &sv, false).await?;
    settle(&s, &sv.id, "active", RUNNING).await;
    Ok(())
}

async fn pause_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.pause(&sv.id).await.map_err(|e| e.to_string())?;
    settle(&s, &sv.id, "paused", PAUSED).await;
    Ok(())
}

async fn unpause_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.resume(&sv.id).await.map_err(|e| e.to_string())?;
    settle(&s, &sv.id, "active", RUNNING).await;
    Ok(())
}

/// `suspend`: the VM's whole state saved to disk; the VMM ends.
async fn suspend_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.save(&sv.id).await.map_err(|e| e.to_string())?;
    settle(&s, &sv.id, "suspended", SHUTDOWN).await;
    Ok(())
}

/// `resume`: back from the saved state (a fresh boot when there is none).
async fn resume_vm(s: S, sv: Server) -> Result<(), String> {
    let restore = s.driver.has_saved_state(&sv.id);
    boot(&s, &sv, restore).await?;
    s.driver.drop_saved_state(&sv.id).await;
    settle(&s, &sv.id, "active", RUNNING).await;
    Ok(())
}

/// `shelve`: as Nova offloads an image-backed server, its disk becomes the
/// image `<name>-shelved` (removed again by unshelve).
async fn shelve_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    s.driver.drop_saved_state(&sv.id).await;
    // A volume-backed server keeps its volumes attached, no image is made.
    let image = match sv.root_volume() {
        Some(_) => None,
        None => Some(
            snapshot_to_image(&s, &sv, &format!("{}-shelved", sv.name), Default::default()).await?,
        ),
    };
    update_server(&s, &sv.id, move |x| {
        x.vm_state = "shelved_offloaded".into();
        x.power_state = SHUTDOWN;
        x.task_state = None;
        x.host = None;
        x.shelved_image_id = image;
    })
    .await;
    Ok(())
}

async fn shelve_offload_vm(s: S, sv: Server) -> Result<(), String> {
    update_server(&s, &sv.id, |x| {
        x.vm_state = "shelved_offloaded".into();
        x.task_state = None;
        x.host = None;
    })
    .await;
    Ok(())
}

/// `unshelve`: the server is placed again, so it must fit next to the others
/// (the fit check create and resize use); when it does not, it stays
/// shelved_offloaded and the action fails with NoValidHost, as in Nova.
async fn unshelve_vm(s: S, sv: Server) -> Result<(), String> {
    let ratios = s.config.ratios;
    let facts = super::hosts::capacity(&s.db.state_dir());
    let (id, flavor) = (sv.id.clone(), sv.flavor.clone());
    let fit = s
        .read(move |conn| {
            let others = db::host_usage(conn, Some(&id))?;
            let demand = super::scheduler::Demand {
                vcpus: flavor.vcpus,
                ram_mb: flavor.ram,
                disk_gb: flavor.disk,
            };
            Ok(super::scheduler::fit(others, demand, &facts, ratios))
        })
        .await
        .map_err(|e| e.to_string())?;
    if !fit.all() {
        return Err("No valid host was found. There are not enough hosts available.".into());
    }
    let host = super::hosts::hostname();
    update_server(&s, &sv.id, move |x| {
        x.host = Some(host);
        x.shelved_image_id = None;
    })
    .await;
    if let Some(image) = &sv.shelved_image_id {
        s.images.discard_snapshot(image).await;
    }
    boot(&s, &sv, false).await?;
    settle(&s, &sv.id, "active", RUNNING).await;
    Ok(())
}

/// `rescue` (Nova's os-rescue): the rescue image (`rescue_image_ref`, else
/// the server's own image) boots with the server's root disk attached as
/// its second disk (with 2.87+ and an image with `hw_rescue_device` or
/// `hw_rescue_bus`, Nova's stable device rescue: the rescue disk is added
/// last and the server's disks keep their places). 200 with the admin
/// password Nova returns; this cloud has no guest agent to set it, so the
/// rescue image's own credentials (key pair, config drive) are what work.
async fn rescue(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: Value,
) -> ComputeResult<Response> {
    let arg = match arg {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute rescue. Value: must be an object or null".into(),
            ));
        }
    };
    if let Some(extra) = arg
        .keys()
        .find(|k| !["adminPass", "rescue_image_ref"].contains(&k.as_str()))
    {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute rescue. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let admin_pass = match arg.get("adminPass") {
        None => uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        Some(Value::String(p)) if p.chars().count() <= 255 => p.clone(),
        Some(_) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute adminPass.".into(),
            ));
        }
    };
    let requested = match arg.get("rescue_image_ref") {
        None => None,
        Some(Value::String(r)) if uuid::Uuid::parse_str(r).is_ok() => Some(r.clone()),
        Some(other) => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute rescue_image_ref. Value: {other}. {other} is not a 'uuid'"
            )));
        }
    };
    let server = access::load(s, ctx, id).await?;
    let image_id = requested.unwrap_or_else(|| server.image_id.clone());
    // The rescue image boots as the server's project: it must be one that
    // project may boot, whoever asks.
    let project = server.project_id.clone();
    let image = s
        .images
        .get_active(&image_id, Some(&project))
        .await
        .map_err(|_| ComputeError::BadRequest(format!("Image {image_id} could not be found.")))?;
    let boot_info = resolve_boot(s, &image, &project, false).await?;
    let stable = mv.at_least(87)
        && ["hw_rescue_device", "hw_rescue_bus"]
            .iter()
            .any(|k| image.properties.contains_key(*k));
    let rescue = crate::db::servers::RescueBoot {
        image_id: image.id.clone(),
        kernel_id: boot_info.kernel_id,
        ramdisk_id: boot_info.ramdisk_id,
        cmdline: boot_info.cmdline,
        stable,
    };
    begin(s, ctx, id, rid, Action::Rescue).await?;
    run(s, id, rid, move |s, sv| rescue_vm(s, sv, rescue));
    Ok(json_response(
        StatusCode::OK,
        &json!({ "adminPass": admin_pass }),
    ))
}

/// The VMM side of `rescue`: records what the server boots now, stops it,
/// makes the rescue disk and boots. A failure after the stop leaves the
/// server ERROR with the reason, as Nova's compute manager does.
async fn rescue_vm(s: S, sv: Server, rescue: crate::db::servers::RescueBoot) -> Result<(), String> {
    let mut as_rescue = sv.clone();
    as_rescue.kernel_id = rescue.kernel_id.clone();
    as_rescue.ramdisk_id = rescue.ramdisk_id.clone();
    let (files, _image_gb) = boot_files(&s, &as_rescue, &rescue.image_id).await?;
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    s.driver.drop_saved_state(&sv.id).await;
    let rescued = async {
        s.driver
            .prepare_rescue(&sv.id, files)
            .await
            .map_err(|e| e.to_string())?;
        let Some(rescued) = update_server(&s, &sv.id, move |x| x.rescue = Some(rescue)).await
        else {
            return Ok(());
        };
        boot(&s, &rescued, false).await
    }
    .await;
    match rescued {
        Ok(()) => {
            settle(&s, &sv.id, "rescued", RUNNING).await;
            Ok(())
        }
        Err(e) => {
            s.driver.drop_rescue(&sv.id).await;
            failed_after_stop(&s, &sv.id, "rescue", &e).await;
            Err(e)
        }
    }
}

/// `unrescue`: the rescue VM goes (at once, as Nova's), the server boots its
/// own image again.
async fn unrescue_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, None).await;
    let Some(back) = update_server(&s, &sv.id, |x| x.rescue = None).await else {
        return Ok(());
    };
    s.driver.drop_rescue(&sv.id).await;
    match boot(&s, &back, false).await {
        Ok(()) => {
            settle(&s, &sv.id, "active", RUNNING).await;
            Ok(())
        }
        Err(e) => {
            failed_after_stop(&s, &sv.id, "unrescue", &e).await;
            Err(e)
        }
    }
}

/// A rescue or unrescue that failed once the server's VM was stopped: the
/// server is ERROR (power off) with the reason as its fault.
async fn failed_after_stop(s: &S, id: &str, action: &str, error: &str) {
    let (message, details) = (
        format!("Failed to {action} the server: {error}"),
        error.to_string(),
    );
    update_server(s, id, move |x| {
        x.rescue = None;
        x.vm_state = "error".into();
        x.power_state = SHUTDOWN;
        x.vmm_pid = None;
        x.fault = Some(fault(&message, &details));
    })
    .await;
}

async fn confirm_resize_vm(s: S, sv: Server) -> Result<(), String> {
    let running = sv.power_state == RUNNING;
    update_server(&s, &sv.id, move |x| {
        x.old_flavor = None;
        x.vm_state = if running { "active" } else { "stopped" }.into();
        x.task_state = None;
        if let Some(m) = x.migrations.last_mut() {
            m.status = "confirmed".into();
            m.updated_at = now_unix();
        }
    })
    .await;
    Ok(())
}

async fn revert_resize_vm(s: S, sv: Server) -> Result<(), String> {
    let running = sv.power_state == RUNNING;
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    let Some(back) = update_server(&s, &sv.id, |x| {
        if let Some(old) = x.old_flavor.take() {
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
        if running { "active" } else { "stopped" },
        if running { RUNNING } else { SHUTDOWN },
    )
    .await;
    Ok(())
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
    let admin = super::is_admin_context(s, ctx);
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

async fn create_image(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    create_image_as(s, ctx, mv, id, rid, arg, "createImage").await
}

async fn create_image_as(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: &Value,
    action: &'static str,
) -> ComputeResult<Response> {
    let name = match arg.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 255 => n.clone(),
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute createImage. 'name' is a required property (1-255 characters)".into(),
            ));
        }
    };
    let metadata = match arg.get("metadata") {
        Some(v) => servers::check_metadata(v, "metadata")?,
        None => Default::default(),
    };
    let table_action = if action == "createBackup" {
        Action::CreateBackup
    } else {
        Action::CreateImage
    };
    let server = begin(s, ctx, id, rid, table_action).await?;
    let source = s.images.get(&server.image_id, None).await.ok();
    let mut extra = Map::new();
    for (k, v) in &metadata {
        extra.insert(k.clone(), json!(v));
    }
    let backup = extra.get("image_type").cloned();
    let mut properties = snapshot_properties(&server, extra);
    if let Some(kind) = backup {
        properties.insert("image_type".into(), kind);
    }
    // Volume-backed: a Cinder snapshot of the root volume, the image points at it.
    let volume_backed = server.root_volume().is_some();
    if let Err(e) =
        super::block_devices::snapshot_properties(s, &server, &name, &mut properties).await
    {
        update_server(s, id, |sv| sv.task_state = None).await;
        finish_action(s, id, rid, None, false, Some(e.to_string())).await;
        return Err(e);
    }
    let min_ram = source.as_ref().map(|i| i.min_ram).unwrap_or(0);
    let image_id = match s
        .images
        .create_snapshot(
            &name,
            &server.project_id,
            properties,
            server.flavor.disk,
            min_ram,
        )
        .await
    {
        Ok(image_id) => image_id,
        Err(e) => {
            update_server(s, id, |sv| sv.task_state = None).await;
            finish_action(s, id, rid, None, false, Some(e.to_string())).await;
            return Err(ComputeError::Internal(e.to_string()));
        }
    };
    let snapshot_id = image_id.clone();
    run(s, id, rid, move |s, sv| async move {
        let running = s.driver.is_alive(&sv.id) && sv.vm_state == "active";
        update_server(&s, &sv.id, |x| {
            x.task_state = Some("image_uploading".into())
        })
        .await;
        if running {
            let _ = s.driver.pause(&sv.id).await;
        }
        let dest = s.images.snapshot_staging_path(&snapshot_id);
        let copied = if volume_backed {
            std::fs::File::create(&dest)
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            s.driver
                .copy_disk(&sv.id, dest.clone())
                .await
                .map_err(|e| e.to_string())
        };
        if running {
            let _ = s.driver.resume(&sv.id).await;
        }
        update_server(&s, &sv.id, |x| {
            if x.task_state.as_deref() != Some("deleting") {
                x.task_state = None;
            }
        })
        .await;
        match copied {
            Ok(()) => s
                .images
                .finish_snapshot(&snapshot_id, dest)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => {
                s.images.discard_snapshot(&snapshot_id).await;
                Err(e.to_string())
            }
        }
    });
    let location = format!("{}/image/v2/images/{image_id}", s.public_url);
    let mut response = if mv.at_least(45) {
        json_response(StatusCode::ACCEPTED, &json!({"image_id": image_id}))
    } else {
        empty(StatusCode::ACCEPTED)
    };
    if !mv.at_least(45)
        && let Ok(v) = HeaderValue::from_str(&location)
    {
        response.headers_mut().insert("location", v);
    }
    response.extensions_mut().insert(SnapshotId(image_id));
    Ok(response)
}

/// Copies a stopped server's root disk into a new active image (shelve).
async fn snapshot_to_image(
    s: &S,
    sv: &Server,
    name: &str,
    extra: Map<String, Value>,
) -> Result<String, String> {
    let properties = snapshot_properties(sv, extra);
    let image = s
        .images
        .create_snapshot(name, &sv.project_id, properties, sv.flavor.disk, 0)
        .await
        .map_err(|e| e.to_string())?;
    let dest = s.images.snapshot_staging_path(&image);
    if let Err(e) = s.driver.copy_disk(&sv.id, dest.clone()).await {
        s.images.discard_snapshot(&image).await;
        return Err(e.to_string());
    }
    s.images
        .finish_snapshot(&image, dest)
        .await
        .map_err(|e| e.to_string())?;
    Ok(image)
}

/// Image properties of a server snapshot: what it takes to boot it again.
fn snapshot_properties(server: &Server, extra: Map<String, Value>) -> Map<String, Value> {
    let mut properties = extra;
    properties.insert("image_type".into(), json!("snapshot"));
    properties.insert("instance_uuid".into(), json!(server.id));
    properties.insert("base_image_ref".into(), json!(server.image_id));
    properties.insert("user_id".into(), json!(server.user_id));
    if let Some(k) = &server.kernel_id {
        properties.insert("kernel_id".into(), json!(k));
    }
    if let Some(r) = &server.ramdisk_id {
        properties.insert("ramdisk_id".into(), json!(r));
    }
    if let Some(c) = &server.cmdline {
        properties.insert("os_command_line".into(), json!(c));
    }
    if let Some(t) = server.shutdown_timeout {
        properties.insert("os_shutdown_timeout".into(), json!(t.to_string()));
    }
    properties
}

/// `createBackup`: a snapshot typed `backup`, keeping the newest `rotation`
/// backups of that type for the server.
async fn create_backup(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let backup_type = arg
        .get("backup_type")
        .and_then(Value::as_str)
        .ok_or_else(|| ComputeError::BadRequest("Invalid input for field/attribute createBackup. 'backup_type' is a required property".into()))?
        .to_string();
    let rotation = match arg.get("rotation") {
        Some(v) => int_field(v, "rotation", 0, i64::from(i32::MAX))?,
        None => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute createBackup. 'rotation' is a required property"
                    .into(),
            ));
        }
    };
    let mut args = arg.clone();
    if let Some(obj) = args.as_object_mut() {
        let mut meta = obj.get("metadata").cloned().unwrap_or(json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert("image_type".into(), json!("backup"));
            m.insert("backup_type".into(), json!(backup_type));
        }
        obj.insert("metadata".into(), meta);
    }
    let response = create_image_as(s, ctx, mv, id, rid, &args, "createBackup").await?;
    // Rotation, as Nova does once the backup is taken: keep the newest
    // `rotation` backups of this type (the new one included).
    let new_id = backup_image_id(&response);
    // The backups this rotation may remove are those that exist now: a
    // rotation that runs late (it waits for the snapshot's lock) must never
    // count a backup taken after this one as older.
    let is_backup = |i: &crate::image::service::BootImage| {
        Some(i.id.as_str()) != new_id.as_deref()
            && i.properties.get("instance_uuid").and_then(Value::as_str) == Some(id)
            && i.properties.get("image_type").and_then(Value::as_str) == Some("backup")
            && i.properties.get("backup_type").and_then(Value::as_str) == Some(backup_type.as_str())
    };
    let candidates: std::collections::HashSet<String> = s
        .images
        .list(None)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|i| is_backup(i))
        .map(|i| i.id.clone())
        .collect();
    let (s2, server_id) = (s.clone(), id.to_string());
    tokio::spawn(async move {
        // Nova rotates once the new backup is uploaded, and not at all when
        // the backup failed. Waiting for the server's lock alone is not
        // enough: this task may take it before the snapshot does.
        if let Some(new_id) = &new_id {
            let deadline = std::time::Instant::now() + Duration::from_secs(3600);
            loop {
                match s2.images.get(new_id, None).await {
                    Ok(image) if image.status == "active" => break,
                    Ok(image)
                        if image.status == "queued" && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    _ => return,
                }
            }
        }
        let lock = s2.locks.lock_for(&server_id);
        drop(lock.lock().await);
        let mut older: Vec<_> = s2
            .images
            .list(None)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|i| candidates.contains(&i.id))
            .collect();
        // Oldest first; keep rotation - 1 besides the new one.
        older.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        let keep = (rotation.max(1) - 1) as usize;
        let excess = older.len().saturating_sub(keep);
        for old in older.iter().take(excess) {
            s2.images.discard_snapshot(&old.id).await;
        }
    });
    Ok(response)
}

/// The image id a createImage/createBackup response names (body or Location).
fn backup_image_id(response: &Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| l.rsplit('/').next())
        .map(str::to_string)
        .or_else(|| {
            response
                .extensions()
                .get::<SnapshotId>()
                .map(|i| i.0.clone())
        })
}

/// The new image's id, carried on the createImage response for createBackup.
#[derive(Clone)]
struct SnapshotId(String);

async fn rebuild(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: Value,
) -> ComputeResult<Response> {
    let Value::Object(arg) = arg else {
        return Err(ComputeError::BadRequest("rebuild must be an object".into()));
    };
    let image_ref = arg
        .get("imageRef")
        .and_then(Value::as_str)
        .map(|r| {
            r.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ComputeError::BadRequest(
                "Invalid input for field/attribute rebuild. 'imageRef' is a required property"
                    .into(),
            )
        })?;
    let project = super::project_of(ctx)?;
    let admin = super::is_admin_context(s, ctx);
    let image = s
        .images
        .get_active(&image_ref, if admin { None } else { Some(&project) })
        .await
        .map_err(|_| ComputeError::BadRequest(format!("Image {image_ref} could not be found.")))?;
    let boot_info = resolve_boot(s, &image, &project, admin).await?;
    let volume_backed = super::block_devices::check_rebuild(s, id, &image.id).await?;
    let name = match arg.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.chars().count() <= 255 => {
            Some(n.clone())
        }
        Some(_) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute name.".into(),
            ));
        }
        None => None,
    };
    let metadata = match arg.get("metadata") {
        Some(v) => Some(servers::check_metadata(v, "metadata")?),
        None => None,
    };
    let description = if mv.at_least(19) && arg.contains_key("description") {
        Some(
            arg.get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
        )
    } else {
        None
    };
    let user_data = if mv.at_least(57) && arg.contains_key("user_data") {
        Some(
            arg.get("user_data")
                .and_then(Value::as_str)
                .map(str::to_string),
        )
    } else {
        None
    };
    let key_name = if mv.at_least(54) && arg.contains_key("key_name") {
        Some(
            arg.get("key_name")
                .and_then(Value::as_str)
                .map(str::to_string),
        )
    } else {
        None
    };
    let admin_pass = arg
        .get("adminPass")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    let user_id = ctx.user_id.clone();
    let key_data = match &key_name {
        Some(Some(k)) => {
            let (u, k2) = (user_id.clone(), k.clone());
            Some(Some(
                s.read(move |conn| Ok(store::get_keypair(conn, &u, &k2)?))
                    .await?
                    .ok_or_else(|| ComputeError::BadRequest("Invalid key_name provided.".into()))?
                    .public_key,
            ))
        }
        Some(None) => Some(None),
        None => None,
    };
    let server = begin(s, ctx, id, rid, Action::Rebuild).await?;
    let was_running = server.vm_state == "active";
    let image_id = if volume_backed {
        String::new()
    } else {
        image.id.clone()
    };
    let updated = update_server(s, id, move |sv| {
        sv.image_id = image_id;
        sv.kernel_id = boot_info.kernel_id;
        sv.ramdisk_id = boot_info.ramdisk_id;
        sv.cmdline = boot_info.cmdline;
        sv.shutdown_timeout = boot_info.shutdown_timeout;
        if let Some(n) = name {
            sv.name = n;
        }
        if let Some(m) = metadata {
            sv.metadata = m;
        }
        if let Some(d) = description {
            sv.description = d;
        }
        if let Some(u) = user_data {
            sv.user_data = u;
        }
        if let Some(k) = key_name {
            sv.key_name = k;
        }
        if let Some(k) = key_data {
            sv.key_data = k;
        }
    })
    .await
    .ok_or_else(|| access::not_found(id))?;
    run(s, id, rid, move |s, sv| async move {
        s.driver.stop(&sv.id, clean_timeout(&sv)).await;
        s.driver.drop_saved_state(&sv.id).await;
        let result = async {
            let (files, disk_gb) = if volume_backed {
                (super::build::volume_boot_files(&s, &sv).await?, 0)
            } else {
                (boot_files(&s, &sv, &sv.image_id).await?.0, sv.flavor.disk)
            };
            let network = super::networking::network_data_of(&s, &sv)
                .await
                .map_err(|e| e.to_string())?;
            let config = sv.config_drive.then(|| config_drive_files(&sv, &network));
            s.driver
                .prepare(&sv.id, files, disk_gb, config)
                .await
                .map_err(|e| e.to_string())?;
            if was_running {
                boot(&s, &sv, false).await?;
            }
            Ok::<(), String>(())
        }
        .await;
        match result {
            Ok(()) => {
                update_server(&s, &sv.id, move |x| {
                    x.vm_state = if was_running { "active" } else { "stopped" }.into();
                    x.power_state = if was_running { RUNNING } else { SHUTDOWN };
                    x.task_state = None;
                    x.fault = None;
                })
                .await;
                Ok(())
            }
            Err(e) => {
                let msg = e.clone();
                update_server(&s, &sv.id, move |x| {
                    x.vm_state = "error".into();
                    x.power_state = NOSTATE;
                    x.task_state = None;
                    x.fault = Some(fault(&format!("Rebuild failed: {msg}"), &msg));
                })
                .await;
                Err(e)
            }
        }
    });
    let ports = super::networking::port_facts_of(s, &updated).await?;
    let mut shown = view(s, &updated, mv, ctx, false, Some(&ports));
    if let Some(obj) = shown.as_object_mut() {
        obj.insert("adminPass".into(), json!(admin_pass));
        if mv.at_least(54) {
            obj.insert("key_name".into(), json!(updated.key_name));
        }
        if mv.at_least(57) {
            obj.insert("user_data".into(), json!(updated.user_data));
            obj.remove("OS-EXT-SRV-ATTR:user_data");
        }
    }
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"server": shown}),
    ))
}

async fn resize(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let flavor_ref = match arg.get("flavorRef") {
        Some(Value::String(r)) if !r.is_empty() => r
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute resize. 'flavorRef' is a required property"
                    .into(),
            ));
        }
    };
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
    if flavor.disk < current.flavor.disk && flavor.disk != 0 {
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
    let facts = super::hosts::capacity(&s.db.state_dir());
    let (fv, fr) = (flavor.vcpus, flavor.ram);
    let cur_id = current.id.clone();
    s.read(move |conn| {
        let usage = db::quota_usage(conn, &project, None)?;
        for (resource, delta) in [("cores", dv), ("ram", dr)] {
            if delta > 0 {
                super::quotas::enforce_limit(
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
        let demand = super::scheduler::Demand {
            vcpus: fv,
            ram_mb: fr,
            disk_gb: 0,
        };
        let fit = super::scheduler::fit(others, demand, &facts, ratios);
        if !(fit.cpu && fit.ram) {
            return Err(ComputeError::BadRequest(
                "No valid host was found. There are not enough hosts available.".into(),
            ));
        }
        Ok(())
    })
    .await?;
    begin(s, ctx, id, rid, Action::Resize).await?;
    let new = crate::db::servers::FlavorCopy::from(&flavor);
    run(s, id, rid, move |s, sv| async move {
        let running = sv.vm_state == "active";
        update_server(&s, &sv.id, |x| {
            x.task_state = Some("resize_migrating".into())
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
            x.flavor = new;
            x.task_state = Some("resize_finish".into());
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
            "resized",
            if running { RUNNING } else { SHUTDOWN },
        )
        .await;
        Ok(())
    });
    Ok(empty(StatusCode::ACCEPTED))
}

// ---------------------------------------------------------------- monitor

/// Starts the monitor: first re-attaches to the VMMs still running and fixes
/// the servers whose VMM is gone, then follows VMM exits and checks every
/// second that each running server's VMM is still there.
pub fn start_monitor(s: S, mut exits: tokio::sync::mpsc::UnboundedReceiver<VmmExit>) {
    tokio::spawn(async move {
        reconcile(&s, true).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                exit = exits.recv() => match exit {
                    Some((id, code)) => on_exit(&s, id, code).await,
                    None => return,
                },
                _ = tick.tick() => reconcile(&s, false).await,
            }
        }
    });
}

/// A VMM we spawned exited.
async fn on_exit(s: &S, id: String, code: Option<i32>) {
    if s.driver.take_expected_exit(&id) {
        return;
    }
    let lock = s.locks.lock_for(&id);
    let _guard = lock.lock().await;
    if s.driver.is_alive(&id) {
        return;
    }
    let id2 = id.clone();
    let Ok(Some(server)) = s.read(move |conn| Ok(db::get_server(conn, &id2)?)).await else {
        return;
    };
    if server.deleted
        || !["active", "paused", "resized", "rescued"].contains(&server.vm_state.as_str())
    {
        return;
    }
    let tail = s.driver.log_tail(&id);
    vanished(s, &id, code, &tail, true).await;
}

/// Records that a server's VMM is gone: SHUTOFF when the guest powered off
/// (or we cannot tell), ERROR with a fault when the VMM failed.
async fn vanished(s: &S, id: &str, code: Option<i32>, log: &str, from_child: bool) {
    // A guest power-off (exit 0) or a VMM killed from outside leaves the
    // server SHUTOFF, as Nova's power sync does when qemu dies; a VMM that
    // exits with an error (the VM crashed or could not run) is an ERROR.
    let failed = from_child && matches!(code, Some(c) if c != 0);
    let text = match code {
        Some(0) => "the guest powered off".to_string(),
        Some(c) => format!("the VMM exited with status {c}: {log}"),
        None if from_child => "the VMM was killed by a signal".to_string(),
        None => "the VMM is gone".to_string(),
    };
    tracing::info!(server = %id, reason = %text, "server stopped outside of an action");
    // A resized or rescued server stays so (confirm/revert, unrescue follow).
    let resized_kept = |sv: &Server| ["resized", "rescued"].contains(&sv.vm_state.as_str());
    update_server(s, id, move |sv| {
        sv.vmm_pid = None;
        if failed {
            sv.vm_state = "error".into();
            sv.power_state = CRASHED;
            sv.fault = Some(fault(
                &format!("The server stopped unexpectedly: {text}"),
                &text,
            ));
        } else {
            if !resized_kept(sv) {
                sv.vm_state = "stopped".into();
            }
            sv.power_state = SHUTDOWN;
        }
    })
    .await;
}

/// Compares the state file with the VMM processes. At start-up it also
/// re-attaches, and finishes what a killed control plane left half done.
async fn reconcile(s: &S, startup: bool) {
    let servers = match s
        .read(|conn| Ok(db::list_servers(conn, None, false)?))
        .await
    {
        Ok(list) => list,
        Err(e) => {
            tracing::error!(error = %e, "monitor cannot read the servers");
            return;
        }
    };
    for server in servers {
        let id = server.id.clone();
        let lock = s.locks.lock_for(&id);
        let Ok(guard) = lock.try_lock() else {
            continue; // an action is running; it owns the state
        };
        if startup {
            reattach(s, &server).await;
            drop(guard);
            continue;
        }
        if server.task_state.is_some() {
            continue;
        }
        if !["active", "paused", "resized", "rescued"].contains(&server.vm_state.as_str())
            || server.power_state == SHUTDOWN
        {
            continue;
        }
        if s.driver.is_alive(&id) || s.driver.is_child(&id) {
            continue;
        }
        if s.driver.known_pid(&id).is_none() && s.driver.status(&id).await.is_some() {
            continue;
        }
        vanished(s, &id, None, "", false).await;
        drop(guard);
    }
}

/// What start-up does with a server a killed control plane left in BUILD.
enum Interrupted {
    /// Its VMM runs and answers: the build got that far.
    Running,
    /// No VMM was ever started (or none is left): build it again.
    Resume,
    /// A VMM process was there but did not answer: it was stopped, and
    /// building again over whatever it did is not safe.
    Unsafe,
}

/// How long a VMM found starting at start-up has to answer on its socket.
const STARTING_VMM_GRACE: Duration = Duration::from_secs(10);

async fn resume_or_attach(s: &S, id: &str, answered: bool) -> Interrupted {
    if answered {
        return Interrupted::Running;
    }
    // The killed control plane may have started the VMM a moment before it
    // died: that process still boots. Give it the time to answer; never
    // start a second VMM on the same disk next to it.
    if s.driver.adopt_unknown_vm(id).is_none() {
        return Interrupted::Resume;
    }
    let deadline = tokio::time::Instant::now() + STARTING_VMM_GRACE;
    while tokio::time::Instant::now() < deadline {
        if s.driver.status(id).await.is_some() {
            return Interrupted::Running;
        }
        if !s.driver.is_alive(id) {
            return Interrupted::Resume;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(server = %id, "a VMM found starting after a restart never answered; stopping it");
    s.driver.stop(id, None).await;
    Interrupted::Unsafe
}

/// Start-up handling of one server.
async fn reattach(s: &S, server: &Server) {
    let id = server.id.clone();
    let status = s.driver.status(&id).await;
    let vmm_state = status.as_ref().map(|st| st.state);
    if let Some(state) = &vmm_state {
        tracing::info!(server = %id, vmm = %state, "re-attached to a running VMM");
    }
    match (server.vm_state.as_str(), server.task_state.as_deref()) {
        (_, Some("deleting")) => {
            spawn_delete(s.clone(), id, format!("req-{}", uuid::Uuid::new_v4()));
        }
        ("building", _) => match resume_or_attach(s, &id, vmm_state.is_some()).await {
            Interrupted::Running => {
                update_server(s, &id, |sv| {
                    sv.vm_state = "active".into();
                    sv.power_state = RUNNING;
                    sv.task_state = None;
                    sv.launched_at.get_or_insert(now_unix());
                })
                .await;
            }
            Interrupted::Resume if server.host.is_some() => {
                // Beyond Nova (which sets such a server to ERROR): the build
                // runs again, on the ports and with the disk and config drive
                // the create wrote (each step of the build starts afresh).
                let id2 = id.clone();
                let request_id = s
                    .read(move |conn| Ok(db::list_actions(conn, &id2)?))
                    .await
                    .ok()
                    .and_then(|actions| {
                        actions
                            .into_iter()
                            .find(|a| a.action == "create")
                            .map(|a| a.request_id)
                    })
                    .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()));
                tracing::info!(server = %id, "resuming a build a restart of the control plane interrupted");
                super::build::spawn_build(s.clone(), id, request_id);
            }
            Interrupted::Resume | Interrupted::Unsafe => {
                update_server(s, &id, |sv| {
                    sv.vm_state = "error".into();
                    sv.power_state = NOSTATE;
                    sv.task_state = None;
                    sv.fault = Some(fault(
                        "The build was interrupted by a restart of yunhe.",
                        "the control plane restarted while the server was being built, \
                         and its VMM was starting but never answered",
                    ));
                })
                .await;
            }
        },
        (vm, task) => {
            let expected_running = ["active", "paused", "resized", "rescued"].contains(&vm);
            // An interrupted rescue: what runs (if anything) is the rescue VM
            // once the record says so; without a VM the rescue is dropped.
            let interrupted_rescue = task == Some("rescuing");
            match vmm_state {
                Some(state) => {
                    let paused = state == VmmState::Paused;
                    update_server(s, &id, move |sv| {
                        sv.task_state = None;
                        if sv.vm_state == "stopped"
                            || sv.vm_state == "suspended"
                            || sv.vm_state == "error"
                        {
                            sv.vm_state = "active".into();
                        }
                        if sv.vm_state == "active" && paused {
                            sv.vm_state = "paused".into();
                        } else if sv.vm_state == "paused" && !paused {
                            sv.vm_state = "active".into();
                        }
                        sv.power_state = if paused { PAUSED } else { RUNNING };
                        if sv.rescue.is_some() {
                            sv.vm_state = "rescued".into();
                        }
                    })
                    .await;
                }
                None if expected_running || task.is_some() => {
                    let suspended = s.driver.has_saved_state(&id) && vm == "suspended";
                    update_server(s, &id, move |sv| {
                        sv.task_state = None;
                        sv.vmm_pid = None;
                        if suspended {
                            return;
                        }
                        if interrupted_rescue {
                            sv.rescue = None;
                        } else if sv.rescue.is_some() {
                            sv.vm_state = "rescued".into();
                        }
                        if ["active", "paused"].contains(&sv.vm_state.as_str()) {
                            sv.vm_state = "stopped".into();
                        }
                        sv.power_state = SHUTDOWN;
                    })
                    .await;
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::driver::ComputeDriver;
    use crate::compute::fake_driver::{FakeDriver, FakeVm};

    struct Cloud {
        s: S,
        fake: Arc<FakeDriver>,
        dir: std::path::PathBuf,
    }

    impl Drop for Cloud {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A compute state over a fresh state file and the fake driver, with
    /// one ACTIVE server `srv` whose VM runs.
    async fn cloud(name: &str) -> Cloud {
        let dir =
            std::env::temp_dir().join(format!("yunhe-lifecycle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = crate::db::Db::open(&dir.join("yunhe.db")).expect("db");
        let identity = crate::identity::IdentityState::new(
            db,
            "http://127.0.0.1:1".into(),
            Arc::new(crate::policy::Policy::defaults().expect("policy")),
            Default::default(),
        )
        .expect("identity");
        let fake = Arc::new(FakeDriver::default());
        let s = ComputeState::new(identity, Default::default(), fake.clone());
        let server = Server {
            id: "srv".into(),
            name: "vm".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            vm_state: "active".into(),
            power_state: RUNNING,
            reservation_id: "r-1".into(),
            hostname: "vm".into(),
            ..Default::default()
        };
        let stored = server.clone();
        s.write(move |tx| Ok(db::insert_server(tx, &stored)?))
            .await
            .expect("insert");
        fake.spawn(&server, false).await.expect("spawn");
        Cloud { s, fake, dir }
    }

    async fn stored(s: &S) -> Server {
        s.read(|conn| Ok(db::get_server(conn, "srv")?))
            .await
            .expect("read")
            .expect("server")
    }

    /// Starts `action` as the API does (state check, task state) and runs
    /// its VMM side; returns the server afterwards.
    async fn act<F, Fut>(c: &Cloud, action: Action, op: F) -> ComputeResult<Server>
    where
        F: FnOnce(S, Server) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut server = stored(&c.s).await;
        enter(&mut server, "srv", action)?;
        let task = server.task_state.clone();
        update_server(&c.s, "srv", move |sv| sv.task_state = task).await;
        let server = stored(&c.s).await;
        op(c.s.clone(), server)
            .await
            .map_err(ComputeError::Internal)?;
        Ok(stored(&c.s).await)
    }

    fn states(sv: &Server) -> (&str, Option<&str>, i64) {
        (
            sv.vm_state.as_str(),
            sv.task_state.as_deref(),
            sv.power_state,
        )
    }

    #[tokio::test]
    async fn stop_start_pause_unpause_reboot() {
        let c = cloud("power").await;
        let sv = act(&c, Action::Stop, stop_vm).await.expect("stop");
        assert_eq!(states(&sv), ("stopped", None, SHUTDOWN));
        assert_eq!(c.fake.vm("srv"), None);
        // Refused as Nova refuses, in the words of today's 409.
        let refused = act(&c, Action::Pause, pause_vm).await.err();
        assert_eq!(
            refused.map(|e| e.to_string()).as_deref(),
            Some("Cannot 'pause' instance srv while it is in vm_state stopped")
        );
        let sv = act(&c, Action::Start, start_vm).await.expect("start");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        assert!(sv.vmm_pid.is_some());
        let sv = act(&c, Action::Pause, pause_vm).await.expect("pause");
        assert_eq!(states(&sv), ("paused", None, PAUSED));
        assert_eq!(c.fake.vm("srv"), Some(FakeVm::Paused));
        assert!(matches!(
            act(&c, Action::RebootSoft, reboot_soft_vm).await,
            Err(ComputeError::Conflict(_))
        ));
        let sv = act(&c, Action::Unpause, unpause_vm).await.expect("unpause");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        let sv = act(&c, Action::RebootHard, reboot_hard_vm)
            .await
            .expect("hard reboot");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        let sv = act(&c, Action::RebootSoft, reboot_soft_vm)
            .await
            .expect("soft reboot");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        let calls = c.fake.calls();
        assert_eq!(
            &calls[1..],
            [
                "stop_clean srv",
                "spawn srv",
                "pause srv",
                "resume srv",
                "reset srv",
                "stop_clean srv",
                "spawn srv"
            ]
        );
    }

    #[tokio::test]
    async fn suspend_resume_and_a_busy_server() {
        let c = cloud("suspend").await;
        let sv = act(&c, Action::Suspend, suspend_vm).await.expect("suspend");
        assert_eq!(states(&sv), ("suspended", None, SHUTDOWN));
        assert!(c.fake.has_saved_state("srv"));
        assert!(c.fake.take_expected_exit("srv"));
        let sv = act(&c, Action::Resume, resume_vm).await.expect("resume");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        assert!(!c.fake.has_saved_state("srv"));
        assert_eq!(
            c.fake.calls().last().map(String::as_str),
            Some("restore srv")
        );
        // A task running: every action is refused with the task's name.
        update_server(&c.s, "srv", |sv| sv.task_state = Some("rebooting".into())).await;
        let refused = act(&c, Action::Stop, stop_vm).await.err();
        assert_eq!(
            refused.map(|e| e.to_string()).as_deref(),
            Some("Cannot 'stop' instance srv while it is in task_state rebooting")
        );
    }

    #[tokio::test]
    async fn a_failing_vmm_leaves_the_state_and_reports() {
        let c = cloud("fail").await;
        c.fake.fail("pause");
        let failed = act(&c, Action::Pause, pause_vm).await.err();
        assert_eq!(
            failed.map(|e| e.to_string()).as_deref(),
            Some("Unexpected API Error: VMM control: pause refused")
        );
        // run() clears the task state on failure; the vm_state is untouched.
        let sv = stored(&c.s).await;
        assert_eq!((sv.vm_state.as_str(), sv.power_state), ("active", RUNNING));
    }

    #[tokio::test]
    async fn unshelve_places_the_server_only_where_it_fits() {
        let c = cloud("unshelve").await;
        c.s.driver.stop("srv", None).await;
        let offload = |vcpus: i64| {
            move |sv: &mut Server| {
                sv.vm_state = "shelved_offloaded".into();
                sv.power_state = SHUTDOWN;
                sv.host = None;
                sv.flavor.vcpus = vcpus;
                // (run() clears the task state of a failed action.)
                sv.task_state = None;
            }
        };
        // Far more vCPUs than this host has, even overcommitted: NoValidHost,
        // and the server stays offloaded.
        update_server(&c.s, "srv", offload(1_000_000)).await;
        let refused = act(&c, Action::Unshelve, unshelve_vm).await.err();
        assert!(
            refused
                .map(|e| e.to_string())
                .is_some_and(|e| e.contains("No valid host was found")),
        );
        let sv = stored(&c.s).await;
        assert_eq!(sv.vm_state, "shelved_offloaded");
        assert_eq!(sv.host, None);
        assert_eq!(c.fake.vm("srv"), None);
        // One vCPU fits: the server is placed and boots.
        update_server(&c.s, "srv", offload(1)).await;
        let sv = act(&c, Action::Unshelve, unshelve_vm)
            .await
            .expect("unshelve");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        assert!(sv.host.is_some());
        assert_eq!(c.fake.vm("srv"), Some(FakeVm::Running));
    }

    #[tokio::test]
    async fn rescue_needs_its_image_and_unrescue_boots_the_server_again() {
        let c = cloud("rescue").await;
        // A rescue image that is gone by the time the VMM side runs: the
        // server is left as it was (still running, not rescued).
        let missing = crate::db::servers::RescueBoot {
            image_id: "no-such-image".into(),
            ..Default::default()
        };
        let failed = act(&c, Action::Rescue, move |s, sv| rescue_vm(s, sv, missing))
            .await
            .err();
        assert!(failed.is_some());
        let sv = stored(&c.s).await;
        assert_eq!(sv.rescue, None);
        assert_eq!(c.fake.vm("srv"), Some(FakeVm::Running));
        assert!(!c.fake.calls().iter().any(|call| call.starts_with("stop")));
        // (run() clears the task state of a failed action.)
        update_server(&c.s, "srv", |sv| sv.task_state = None).await;

        // A rescued server: unrescue stops the rescue VM, drops its files and
        // boots the server's own image.
        update_server(&c.s, "srv", |sv| {
            sv.vm_state = "rescued".into();
            sv.rescue = Some(crate::db::servers::RescueBoot {
                image_id: "img".into(),
                ..Default::default()
            });
        })
        .await;
        let sv = act(&c, Action::Unrescue, unrescue_vm)
            .await
            .expect("unrescue");
        assert_eq!(states(&sv), ("active", None, RUNNING));
        assert_eq!(sv.rescue, None);
        let calls = c.fake.calls();
        assert!(
            calls.ends_with(&[
                "stop srv".to_string(),
                "drop_rescue srv".to_string(),
                "spawn srv".to_string()
            ]),
            "{calls:?}"
        );
        assert!(Action::Unrescue.check("srv", "active", None).is_err());
    }

    #[tokio::test]
    async fn a_restart_settles_rescues() {
        let c = cloud("rescue-restart").await;
        let rescue = crate::db::servers::RescueBoot {
            image_id: "img".into(),
            ..Default::default()
        };
        // The rescue VM was running when serve stopped: rescued.
        let r = rescue.clone();
        update_server(&c.s, "srv", move |sv| {
            sv.task_state = Some("rescuing".into());
            sv.rescue = Some(r);
        })
        .await;
        reattach(&c.s, &stored(&c.s).await).await;
        let sv = stored(&c.s).await;
        assert_eq!(states(&sv), ("rescued", None, RUNNING));

        // The rescue VM is gone: still rescued, powered off (unrescue follows).
        c.s.driver.stop("srv", None).await;
        reattach(&c.s, &stored(&c.s).await).await;
        let sv = stored(&c.s).await;
        assert_eq!(states(&sv), ("rescued", None, SHUTDOWN));
        assert!(sv.rescue.is_some());

        // Interrupted while rescuing with no VM: the rescue is dropped.
        update_server(&c.s, "srv", |sv| {
            sv.vm_state = "active".into();
            sv.task_state = Some("rescuing".into());
        })
        .await;
        reattach(&c.s, &stored(&c.s).await).await;
        let sv = stored(&c.s).await;
        assert_eq!(states(&sv), ("stopped", None, SHUTDOWN));
        assert_eq!(sv.rescue, None);
    }

    #[tokio::test]
    async fn delete_tears_down() {
        let c = cloud("delete").await;
        spawn_delete(c.s.clone(), "srv".into(), "req-1".into());
        let mut sv = stored(&c.s).await;
        for _ in 0..200 {
            if sv.deleted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            sv = stored(&c.s).await;
        }
        assert!(sv.deleted);
        assert_eq!(states(&sv), ("deleted", None, NOSTATE));
        assert_eq!(c.fake.vm("srv"), None);
        assert!(
            c.fake
                .calls()
                .ends_with(&["stop srv".to_string(), "destroy_files srv".to_string()])
        );
    }
}
