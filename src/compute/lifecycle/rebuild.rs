//! `rebuild`: the server boots a (possibly new) image on a fresh root disk,
//! with name, metadata, description, user data and key pair replaced as
//! the microversion allows.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{S, begin, boot, run};
use crate::compute::access;
use crate::compute::build::{
    boot_files, clean_timeout, config_drive_files, fault, resolve_boot, update_server,
};
use crate::compute::request::{DiskConfig, action_arg, present, unexpected};
use crate::compute::server_views::view;
use crate::compute::states::{Action, PowerState, VmState};
use crate::compute::validate::{
    checked_hostname, checked_len, checked_metadata, checked_name, last_segment,
};
use crate::compute::{ComputeError, ComputeResult, Mv};
use crate::db::compute as store;
use crate::http::json_response;
use crate::identity::AuthContext;

/// `rebuild`'s argument (Nova's `servers.rebuild` and its microversion
/// variants: `description` from 2.19, `key_name` from 2.54, `user_data`
/// from 2.57 (when `personality` goes), `trusted_image_certificates` from
/// 2.63, `hostname` from 2.90).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RebuildArg {
    #[serde(rename = "imageRef")]
    pub(super) image_ref: String,
    #[serde(default, deserialize_with = "present")]
    pub(super) name: Option<String>,
    /// `null` as absent (a generated password).
    #[serde(rename = "adminPass", default)]
    pub(super) admin_pass: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(super) metadata: Option<BTreeMap<String, String>>,
    /// `null` as `false`.
    #[serde(default)]
    pub(super) preserve_ephemeral: Option<bool>,
    /// Accepted and ignored: the root disk is always the flavor's size.
    #[serde(rename = "OS-DCF:diskConfig", default)]
    _disk_config: Option<DiskConfig>,
    /// Accepted and ignored (a rebuild keeps the access addresses).
    #[serde(rename = "accessIPv4", default)]
    _access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6", default)]
    _access_ipv6: Option<String>,
    /// Accepted below 2.57 and ignored (no file injection).
    #[serde(default)]
    personality: Option<Vec<Value>>,
    /// Present, possibly `null` (cleared).
    #[serde(default, deserialize_with = "present")]
    pub(super) description: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) key_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) user_data: Option<Option<String>>,
    /// Accepted from 2.63 and ignored (no certificate validation).
    #[serde(default)]
    trusted_image_certificates: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    pub(super) hostname: Option<String>,
}

impl RebuildArg {
    /// Refuses the members the caller's microversion does not have.
    pub(super) fn check_microversion(&self, mv: Mv) -> ComputeResult<()> {
        let gated = [
            ("description", self.description.is_some(), mv.at_least(19)),
            ("key_name", self.key_name.is_some(), mv.at_least(54)),
            ("user_data", self.user_data.is_some(), mv.at_least(57)),
            ("personality", self.personality.is_some(), !mv.at_least(57)),
            (
                "trusted_image_certificates",
                self.trusted_image_certificates.is_some(),
                mv.at_least(63),
            ),
            ("hostname", self.hostname.is_some(), mv.at_least(90)),
        ];
        match gated.iter().find(|(_, given, allowed)| *given && !*allowed) {
            Some((member, _, _)) => Err(unexpected("rebuild", member)),
            None => Ok(()),
        }
    }
}

pub(super) async fn rebuild(
    s: &S,
    ctx: &Arc<AuthContext>,
    mv: Mv,
    id: &str,
    rid: &str,
    arg: Value,
) -> ComputeResult<Response> {
    let arg: RebuildArg = action_arg("rebuild", arg)?;
    arg.check_microversion(mv)?;
    let image_ref = last_segment(&arg.image_ref);
    if image_ref.is_empty() {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute rebuild. 'imageRef' is a required property".into(),
        ));
    }
    let project = crate::compute::project_of(ctx)?;
    let admin = crate::compute::is_admin_context(s, ctx);
    let image = s
        .images
        .get_active(&image_ref, if admin { None } else { Some(&project) })
        .await
        .map_err(|_| ComputeError::BadRequest(format!("Image {image_ref} could not be found.")))?;
    let boot_info = resolve_boot(s, &image, &project, admin).await?;
    let root = crate::compute::block_devices::check_rebuild(s, id, &image, mv).await?;
    let volume_backed = root != crate::compute::block_devices::RootRebuild::Image;
    let name = arg.name.map(checked_name).transpose()?;
    let metadata = arg
        .metadata
        .map(|m| checked_metadata(m, "metadata"))
        .transpose()?;
    let description = match arg.description {
        Some(d) => Some(checked_len("description", d, 255)?),
        None => None,
    };
    let user_data = arg.user_data;
    let key_name = arg.key_name;
    if let Some(h) = arg.hostname {
        // Checked as Nova checks it; the hostname itself is kept.
        checked_hostname(mv, h)?;
    }
    // Nova remakes the ephemeral disks unless asked to keep them.
    let preserve_ephemeral = arg.preserve_ephemeral.unwrap_or(false);
    let admin_pass = arg
        .admin_pass
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
    let was_running = server.vm_state == VmState::Active;
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
        if !preserve_ephemeral {
            s.driver.drop_local_disks(&sv.id).await;
        }
        let result = async {
            if let crate::compute::block_devices::RootRebuild::ReimageVolume(vid) = &root {
                crate::compute::block_devices::reimage_root(&s, vid, &image).await?;
            }
            let (files, disk_gb) = if volume_backed {
                (crate::compute::build::volume_boot_files(&s, &sv).await?, 0)
            } else {
                (boot_files(&s, &sv, &sv.image_id).await?.0, sv.flavor.disk)
            };
            let network = crate::compute::networking::network_data_of(&s, &sv)
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
                    x.vm_state = if was_running {
                        VmState::Active
                    } else {
                        VmState::Stopped
                    };
                    x.power_state = if was_running {
                        PowerState::Running
                    } else {
                        PowerState::Shutdown
                    };
                    x.task_state = None;
                    x.fault = None;
                })
                .await;
                Ok(())
            }
            Err(e) => {
                let msg = e.clone();
                update_server(&s, &sv.id, move |x| {
                    x.vm_state = VmState::Error;
                    x.power_state = PowerState::NoState;
                    x.task_state = None;
                    x.fault = Some(fault(&format!("Rebuild failed: {msg}"), &msg));
                })
                .await;
                Err(e)
            }
        }
    });
    let ports = crate::compute::networking::port_facts_of(s, &updated).await?;
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
