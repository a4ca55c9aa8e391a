//! `rescue` and `unrescue` (Nova's os-rescue): a rescue image boots with
//! the server's disk attached; unrescue boots the server's own image again.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{S, begin, boot, run, settle};
use crate::compute::access;
use crate::compute::build::{boot_files, clean_timeout, fault, resolve_boot, update_server};
use crate::compute::request::{action_arg, present};
use crate::compute::states::{Action, PowerState, VmState};
use crate::compute::{ComputeError, ComputeResult, Mv};
use crate::db::servers::Server;
use crate::http::json_response;
use crate::identity::AuthContext;

/// `rescue` (Nova's os-rescue): the rescue image (`rescue_image_ref`, else
/// the server's own image) boots with the server's root disk attached as
/// its second disk (with 2.87+ and an image with `hw_rescue_device` or
/// `hw_rescue_bus`, Nova's stable device rescue: the rescue disk is added
/// last and the server's disks keep their places). 200 with the admin
/// password Nova returns; this cloud has no guest agent to set it, so the
/// rescue image's own credentials (key pair, config drive) are what work.
/// The argument of `rescue`: `null` or an object.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RescueArg {
    #[serde(rename = "adminPass", default, deserialize_with = "present")]
    pub(super) admin_pass: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) rescue_image_ref: Option<String>,
}

pub(super) async fn rescue(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: Value,
) -> ComputeResult<Response> {
    let arg: RescueArg = action_arg::<Option<RescueArg>>("rescue", arg)?.unwrap_or_default();
    let admin_pass = match arg.admin_pass {
        None => uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
        Some(p) if p.chars().count() <= 255 => p,
        Some(_) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute adminPass.".into(),
            ));
        }
    };
    let requested = match arg.rescue_image_ref {
        None => None,
        Some(r) if uuid::Uuid::parse_str(&r).is_ok() => Some(r),
        Some(other) => {
            let other = Value::String(other);
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
pub(super) async fn rescue_vm(
    s: S,
    sv: Server,
    rescue: crate::db::servers::RescueBoot,
) -> Result<(), String> {
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
            settle(&s, &sv.id, VmState::Rescued, PowerState::Running).await;
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
pub(super) async fn unrescue_vm(s: S, sv: Server) -> Result<(), String> {
    s.driver.stop(&sv.id, None).await;
    let Some(back) = update_server(&s, &sv.id, |x| x.rescue = None).await else {
        return Ok(());
    };
    s.driver.drop_rescue(&sv.id).await;
    match boot(&s, &back, false).await {
        Ok(()) => {
            settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
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
        x.vm_state = VmState::Error;
        x.power_state = PowerState::Shutdown;
        x.vmm_pid = None;
        x.fault = Some(fault(&message, &details));
    })
    .await;
}
