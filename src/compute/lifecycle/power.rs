//! Power actions: `os-stop`, `os-start`, `reboot` (HARD and SOFT),
//! `pause`/`unpause`, `suspend`/`resume`: each one's VMM side, run by
//! `start` in the background once the state check passed.

use std::sync::Arc;

use axum::response::Response;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::Value;

use super::{S, boot, settle, start};
use crate::compute::ComputeResult;
use crate::compute::build::clean_timeout;
use crate::compute::request::action_arg;
use crate::compute::states::{Action, PowerState, VmState};
use crate::db::servers::Server;
use crate::identity::AuthContext;

/// `reboot`: HARD or SOFT, as the body's `type` says.
pub(super) async fn reboot(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    rid: &str,
    arg: &Value,
) -> ComputeResult<Response> {
    let RebootArg { kind } = action_arg("reboot", arg.clone())?;
    match kind {
        RebootType::Hard => start(s, ctx, id, rid, Action::RebootHard, reboot_hard_vm).await,
        RebootType::Soft => start(s, ctx, id, rid, Action::RebootSoft, reboot_soft_vm).await,
    }
}

/// The argument of `reboot`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RebootArg {
    #[serde(rename = "type")]
    pub(super) kind: RebootType,
}

/// `HARD` or `SOFT`, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RebootType {
    Hard,
    Soft,
}

impl<'de> Deserialize<'de> for RebootType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("HARD") => Ok(RebootType::Hard),
            Some("SOFT") => Ok(RebootType::Soft),
            _ => {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                Err(de::Error::custom(format!(
                    "{text}. '{text}' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
                )))
            }
        }
    }
}

/// `os-stop`: power off (the guest gets its shutdown timeout).
pub(super) async fn stop_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    settle(&s, &sv.id, VmState::Stopped, PowerState::Shutdown).await;
    Ok(())
}

/// `os-start`: boot again.
pub(super) async fn start_vm(s: S, sv: Server) -> Result<(), String> {
    boot(&s, &sv, false).await?;
    settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
    Ok(())
}

/// `reboot` HARD: reset a running VM, else boot it afresh. A server with
/// ports boots afresh too: a reset rebuilds the VM from the spec its VMM
/// started with, which lacks the NICs attached since (and has those
/// detached), while a new VMM gets one NIC per port as they are now.
pub(super) async fn reboot_hard_vm(s: S, sv: Server) -> Result<(), String> {
    if s.driver.is_alive(&sv.id) && sv.vm_state != VmState::Paused && sv.ports.is_empty() {
        s.driver.reset(&sv.id).await.map_err(|e| e.to_string())?;
    } else {
        s.driver.stop(&sv.id, None).await;
        s.driver.drop_saved_state(&sv.id).await;
        boot(&s, &sv, false).await?;
    }
    settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
    Ok(())
}

/// `reboot` SOFT: a clean power-off, then boot.
pub(super) async fn reboot_soft_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, clean_timeout(&sv)).await;
    boot(&s, &sv, false).await?;
    settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
    Ok(())
}

/// `pause`: the vCPUs stop, the VMM stays.
pub(super) async fn pause_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.pause(&sv.id).await.map_err(|e| e.to_string())?;
    settle(&s, &sv.id, VmState::Paused, PowerState::Paused).await;
    Ok(())
}

/// `unpause`.
pub(super) async fn unpause_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.resume(&sv.id).await.map_err(|e| e.to_string())?;
    settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
    Ok(())
}

/// `suspend`: the VM's whole state saved to disk; the VMM ends.
pub(super) async fn suspend_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.save(&sv.id).await.map_err(|e| e.to_string())?;
    settle(&s, &sv.id, VmState::Suspended, PowerState::Shutdown).await;
    Ok(())
}

/// `resume`: back from the saved state (a fresh boot when there is none).
pub(super) async fn resume_vm(s: S, sv: Server) -> Result<(), String> {
    let restore = s.driver.has_saved_state(&sv.id);
    boot(&s, &sv, restore).await?;
    s.driver.drop_saved_state(&sv.id).await;
    settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
    Ok(())
}
