//! The monitor: follows VMM exits, checks every second that each running
//! server's VMM is still there, and at start-up re-attaches to the VMMs
//! that outlived a restart and finishes what a killed control plane left
//! half done.

use std::time::Duration;

use super::S;
use crate::compute::build::{fault, spawn_delete, update_server};
use crate::compute::driver::VmmExit;
use crate::compute::states::{PowerState, TaskState, VmState};
use crate::db::now_unix;
use crate::db::servers::{self as db, Server};
use crate::vmm::control::VmmState;

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
        || ![
            VmState::Active,
            VmState::Paused,
            VmState::Resized,
            VmState::Rescued,
        ]
        .contains(&server.vm_state)
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
    let resized_kept = |sv: &Server| [VmState::Resized, VmState::Rescued].contains(&sv.vm_state);
    update_server(s, id, move |sv| {
        sv.vmm_pid = None;
        if failed {
            sv.vm_state = VmState::Error;
            sv.power_state = PowerState::Crashed;
            sv.fault = Some(fault(
                &format!("The server stopped unexpectedly: {text}"),
                &text,
            ));
        } else {
            if !resized_kept(sv) {
                sv.vm_state = VmState::Stopped;
            }
            sv.power_state = PowerState::Shutdown;
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
        if ![
            VmState::Active,
            VmState::Paused,
            VmState::Resized,
            VmState::Rescued,
        ]
        .contains(&server.vm_state)
            || server.power_state == PowerState::Shutdown
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
pub(super) async fn reattach(s: &S, server: &Server) {
    let id = server.id.clone();
    let status = s.driver.status(&id).await;
    let vmm_state = status.as_ref().map(|st| st.state);
    if let Some(state) = &vmm_state {
        tracing::info!(server = %id, vmm = %state, "re-attached to a running VMM");
    }
    match (server.vm_state, server.task_state) {
        (_, Some(TaskState::Deleting)) => {
            spawn_delete(s.clone(), id, format!("req-{}", uuid::Uuid::new_v4()));
        }
        (VmState::Building, _) => match resume_or_attach(s, &id, vmm_state.is_some()).await {
            Interrupted::Running => {
                update_server(s, &id, |sv| {
                    sv.vm_state = VmState::Active;
                    sv.power_state = PowerState::Running;
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
                crate::compute::build::spawn_build(s.clone(), id, request_id);
            }
            Interrupted::Resume | Interrupted::Unsafe => {
                update_server(s, &id, |sv| {
                    sv.vm_state = VmState::Error;
                    sv.power_state = PowerState::NoState;
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
            let expected_running = [
                VmState::Active,
                VmState::Paused,
                VmState::Resized,
                VmState::Rescued,
            ]
            .contains(&vm);
            // An interrupted rescue: what runs (if anything) is the rescue VM
            // once the record says so; without a VM the rescue is dropped.
            let interrupted_rescue = task == Some(TaskState::Rescuing);
            match vmm_state {
                Some(state) => {
                    let paused = state == VmmState::Paused;
                    update_server(s, &id, move |sv| {
                        sv.task_state = None;
                        if sv.vm_state == VmState::Stopped
                            || sv.vm_state == VmState::Suspended
                            || sv.vm_state == VmState::Error
                        {
                            sv.vm_state = VmState::Active;
                        }
                        if sv.vm_state == VmState::Active && paused {
                            sv.vm_state = VmState::Paused;
                        } else if sv.vm_state == VmState::Paused && !paused {
                            sv.vm_state = VmState::Active;
                        }
                        sv.power_state = if paused {
                            PowerState::Paused
                        } else {
                            PowerState::Running
                        };
                        if sv.rescue.is_some() {
                            sv.vm_state = VmState::Rescued;
                        }
                    })
                    .await;
                }
                None if expected_running || task.is_some() => {
                    let suspended = s.driver.has_saved_state(&id) && vm == VmState::Suspended;
                    update_server(s, &id, move |sv| {
                        sv.task_state = None;
                        sv.vmm_pid = None;
                        if suspended {
                            return;
                        }
                        if interrupted_rescue {
                            sv.rescue = None;
                        } else if sv.rescue.is_some() {
                            sv.vm_state = VmState::Rescued;
                        }
                        if [VmState::Active, VmState::Paused].contains(&sv.vm_state) {
                            sv.vm_state = VmState::Stopped;
                        }
                        sv.power_state = PowerState::Shutdown;
                    })
                    .await;
                }
                None => {}
            }
        }
    }
}
