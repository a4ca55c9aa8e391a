//! Building and deleting servers, and the records every server operation
//! keeps: instance actions and their events, state writes, faults. The
//! create handler (servers.rs), the actions and the monitor (lifecycle.rs)
//! all call these; nothing here knows HTTP.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::access::{check_unlocked, load_tx};
use super::driver::BootFiles;
use super::states::{PowerState, TaskState, VmState};
use super::{ComputeError, ComputeResult, ComputeState, iso_time};
use crate::db::compute as store;
use crate::db::now_unix;
use crate::db::servers::{self as db, ActionEvent, InstanceAction, Server};
use crate::identity::AuthContext;
use crate::image::service::BootImage;

type S = Arc<ComputeState>;

/// Nova's default time a guest gets to power off before it is forced.
pub const DEFAULT_SHUTDOWN_TIMEOUT: i64 = 60;

/// Boot details taken from the image at create time.
pub struct BootInfo {
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    pub cmdline: Option<String>,
    pub shutdown_timeout: Option<i64>,
}

/// What an image boots with: an aki image is its own kernel; any other
/// image names its kernel (and ramdisk) in properties. Those must be images
/// the server's project owns, public ones, or ones shared with it and
/// accepted (`ImageService::get_boot_asset`), admin or not: a property must
/// not make a server run a stranger's kernel.
pub async fn resolve_boot(
    s: &ComputeState,
    image: &BootImage,
    project: &str,
    _admin: bool,
) -> ComputeResult<BootInfo> {
    let kernel_id = if image.disk_format.as_deref() == Some("aki") {
        Some(image.id.clone())
    } else {
        image.kernel_id.clone()
    };
    for (what, id) in [("kernel", &kernel_id), ("ramdisk", &image.ramdisk_id)] {
        let Some(id) = id else { continue };
        // An aki booted as itself was checked as the server's image.
        if *id == image.id {
            continue;
        }
        match s.images.get_boot_asset(id, what, project).await {
            Ok(asset) if asset.status == "active" => {}
            Err(e @ crate::image::service::ImageServiceError::NotTrusted { .. }) => {
                return Err(ComputeError::BadRequest(e.to_string()));
            }
            Ok(_) | Err(_) => {
                return Err(ComputeError::BadRequest(format!(
                    "The image's {what} {id} could not be found or is not active."
                )));
            }
        }
    }
    let shutdown_timeout = image
        .properties
        .get("os_shutdown_timeout")
        .and_then(|v| match v {
            Value::String(t) => t.trim().parse::<i64>().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        });
    Ok(BootInfo {
        kernel_id,
        ramdisk_id: image.ramdisk_id.clone(),
        cmdline: image.os_command_line.clone(),
        shutdown_timeout,
    })
}

pub fn clean_timeout(server: &Server) -> Option<Duration> {
    // A paused or suspended guest cannot answer the power button.
    if server.vm_state != VmState::Active && server.vm_state != VmState::Resized {
        return None;
    }
    let secs = server.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    (secs > 0).then(|| Duration::from_secs(secs as u64))
}

// ------------------------------------------------------ instance actions

/// Records an instance action with its first event (started now).
pub fn record_action(
    tx: &rusqlite::Connection,
    server: &Server,
    request_id: &str,
    action: &str,
    now: i64,
) -> ComputeResult<()> {
    let event = match action {
        "create" => "compute__do_build_and_run_instance".to_string(),
        "delete" => "compute_terminate_instance".to_string(),
        "createImage" => "compute_snapshot_instance".to_string(),
        "confirmResize" => "compute_confirm_resize".to_string(),
        "revertResize" => "compute_revert_resize".to_string(),
        "attach_interface" => "compute_attach_interface".to_string(),
        "detach_interface" => "compute_detach_interface".to_string(),
        "extend_volume" => "compute_extend_volume".to_string(),
        other => format!("compute_{}_instance", other.to_ascii_lowercase()),
    };
    db::insert_action(
        tx,
        &InstanceAction {
            id: 0,
            instance_id: server.id.clone(),
            request_id: request_id.to_string(),
            action: action.to_string(),
            project_id: server.project_id.clone(),
            user_id: server.user_id.clone(),
            start_time: now,
            updated_at: now,
            message: None,
            events: vec![ActionEvent {
                event,
                start_time: now,
                finish_time: None,
                result: None,
                traceback: None,
            }],
        },
    )?;
    Ok(())
}

/// Finishes the last event of the action `request_id` (a failure also sets
/// the action's message to "Error").
pub async fn finish_action_event(
    s: &ComputeState,
    id: &str,
    request_id: &str,
    event: &str,
    ok: bool,
) {
    finish_action(s, id, request_id, Some(event), ok, None).await;
}

pub async fn finish_action(
    s: &ComputeState,
    id: &str,
    request_id: &str,
    rename: Option<&str>,
    ok: bool,
    traceback: Option<String>,
) {
    let (id, rid, rename) = (
        id.to_string(),
        request_id.to_string(),
        rename.map(str::to_string),
    );
    let result = s
        .write(move |tx| finish_action_tx(tx, &id, &rid, rename, ok, traceback))
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot record an instance action's result");
    }
}

/// [`finish_action`] inside a caller's transaction.
fn finish_action_tx(
    tx: &rusqlite::Transaction,
    id: &str,
    request_id: &str,
    rename: Option<String>,
    ok: bool,
    traceback: Option<String>,
) -> ComputeResult<()> {
    let Some(mut action) = db::get_action(tx, id, request_id)? else {
        return Ok(());
    };
    let now = now_unix();
    if let Some(event) = action.events.last_mut() {
        if let Some(name) = rename {
            event.event = name;
        }
        event.finish_time = Some(now);
        event.result = Some(if ok { "Success" } else { "Error" }.into());
        event.traceback = traceback;
    }
    if !ok {
        action.message = Some("Error".into());
    }
    action.updated_at = now;
    db::update_action(tx, &action)?;
    Ok(())
}

// ------------------------------------------------------------ state writes

/// Applies `change` to the stored server (if it still exists) and stores it.
pub async fn update_server(
    s: &ComputeState,
    id: &str,
    change: impl FnOnce(&mut Server) + Send + 'static,
) -> Option<Server> {
    let id_owned = id.to_string();
    let result = s
        .write(move |tx| update_server_tx(tx, &id_owned, change))
        .await;
    match result {
        Ok(server) => server.inspect(|sv| s.config.events.server(&sv.id, &sv.project_id)),
        Err(e) => {
            tracing::error!(error = %e, server = %id, "cannot store a server's state");
            None
        }
    }
}

/// [`update_server`] inside a caller's transaction (no event sent).
fn update_server_tx(
    tx: &rusqlite::Transaction,
    id: &str,
    change: impl FnOnce(&mut Server),
) -> ComputeResult<Option<Server>> {
    let Some(mut server) = db::get_server(tx, id)? else {
        return Ok(None);
    };
    change(&mut server);
    server.updated_at = now_unix();
    db::update_server(tx, &server)?;
    Ok(Some(server))
}

/// The end of a build: the server's new state and the create action's event in one
/// transaction (one commit where there were two).
async fn finish_build(
    s: &ComputeState,
    id: &str,
    request_id: &str,
    ok: bool,
    change: impl FnOnce(&mut Server) + Send + 'static,
) {
    let (id_owned, rid) = (id.to_string(), request_id.to_string());
    let result = s
        .write(move |tx| {
            let server = update_server_tx(tx, &id_owned, change)?;
            finish_action_tx(
                tx,
                &id_owned,
                &rid,
                Some("compute__do_build_and_run_instance".into()),
                ok,
                None,
            )?;
            Ok(server)
        })
        .await;
    match result {
        Ok(Some(sv)) => s.config.events.server(&sv.id, &sv.project_id),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, server = %id, "cannot store the end of a server's build");
        }
    }
}

pub fn fault(message: &str, details: &str) -> Value {
    json!({
        "code": 500,
        "created": iso_time(now_unix()),
        "message": message,
        "details": details,
    })
}

// ------------------------------------------------------------------ build

/// Builds a scheduled server in the background: disk, config drive, VMM.
pub fn spawn_build(s: S, id: String, request_id: String) {
    tokio::spawn(async move {
        let mut times = BuildTimes::start();
        let lock = s.locks.lock_for(&id);
        let _guard = lock.lock().await;
        times.step("lock");
        let Some(server) = update_server(&s, &id, |sv| {
            if sv.task_state != Some(TaskState::Deleting) {
                sv.task_state = Some(TaskState::Spawning);
            }
        })
        .await
        else {
            return;
        };
        times.step("spawning_write");
        if server.deleted || server.task_state == Some(TaskState::Deleting) {
            finish_action_event(
                &s,
                &id,
                &request_id,
                "compute__do_build_and_run_instance",
                false,
            )
            .await;
            return;
        }
        let result = build(&s, &server, &mut times).await;
        match result {
            Ok(pid) => {
                finish_build(&s, &id, &request_id, true, move |sv| {
                    sv.vm_state = VmState::Active;
                    sv.power_state = PowerState::Running;
                    if sv.task_state != Some(TaskState::Deleting) {
                        sv.task_state = None;
                    }
                    sv.launched_at = Some(now_unix());
                    sv.vmm_pid = Some(pid as i64);
                })
                .await;
                times.step("active_write");
            }
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "server build failed");
                s.driver.stop(&id, None).await;
                let message = e.to_string();
                finish_build(&s, &id, &request_id, false, move |sv| {
                    sv.vm_state = VmState::Error;
                    sv.power_state = PowerState::NoState;
                    if sv.task_state != Some(TaskState::Deleting) {
                        sv.task_state = None;
                    }
                    sv.fault = Some(fault(
                        &format!("Build of instance {} aborted: {message}", sv.id),
                        &message,
                    ));
                })
                .await;
                // As Nova after a failed build: the ports go.
                super::networking::release_failed_build(&s, &id).await;
            }
        }
        times.report(&id);
    });
}

/// How long each step of one build took (logged at debug level when it ends, for
/// docs/performance.md's launch profile).
pub struct BuildTimes {
    started: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, u64)>,
}

impl BuildTimes {
    pub fn start() -> BuildTimes {
        let now = std::time::Instant::now();
        BuildTimes {
            started: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Ends the step `name` (microseconds since the previous step ended).
    pub fn step(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps
            .push((name, now.duration_since(self.last).as_micros() as u64));
        self.last = now;
    }

    fn report(&self, id: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|(name, us)| format!("{name}={us}"))
                .collect();
            tracing::debug!(
                server = %id,
                total_us = self.started.elapsed().as_micros() as u64,
                steps = %steps.join(" "),
                "build timing"
            );
        }
    }
}

/// The files a server boots from, from Glance.
pub async fn boot_files(
    s: &ComputeState,
    server: &Server,
    image_id: &str,
) -> Result<(BootFiles, i64), String> {
    let image = s
        .images
        .get(image_id, None)
        .await
        .map_err(|e| e.to_string())?;
    if !["active", "deactivated"].contains(&image.status.as_str()) {
        return Err(format!("Image {image_id} is not active."));
    }
    // Checked again at every boot with the server's project: sharing may
    // have been withdrawn since the server was created. Without a kernel_id
    // the disk boots its own kernel (the VMM reads its boot configuration).
    let kernel_path = match server.kernel_id.clone() {
        None => None,
        Some(kernel_id) if kernel_id == image.id => Some(image.path.clone()),
        Some(kernel_id) => Some(
            s.images
                .get_boot_asset(&kernel_id, "kernel", &server.project_id)
                .await
                .map_err(|e| format!("Kernel image {kernel_id}: {e}"))?
                .path,
        ),
    };
    let ramdisk = match &server.ramdisk_id {
        Some(r) => Some(
            s.images
                .get_boot_asset(r, "ramdisk", &server.project_id)
                .await
                .map_err(|e| format!("Ramdisk image {r}: {e}"))?
                .path,
        ),
        None => None,
    };
    let disk_image = match image.disk_format.as_deref() {
        Some("aki" | "ari") if kernel_path.is_none() => {
            return Err(format!(
                "Image {image_id} is a {} image without a kernel to boot.",
                image.disk_format.as_deref().unwrap_or_default()
            ));
        }
        Some("aki" | "ari") => None,
        Some("qcow2") => Some(s.images.raw_base(&image).await.map_err(|e| e.to_string())?),
        Some("raw" | "ami" | "iso" | "img") | None => Some(image.path.clone()),
        Some(other) => return Err(format!("disk format {other} cannot be a root disk")),
    };
    let image_gb = (image.virtual_size.or(image.size).unwrap_or(0) + (1 << 30) - 1) >> 30;
    Ok((
        BootFiles {
            kernel: kernel_path,
            ramdisk,
            disk_image,
        },
        image_gb,
    ))
}

/// The boot files of a volume-backed server: the kernel and ramdisk its
/// boot volume's image named (checked again with the server's project), no
/// root disk copy (the VMM boots the volume's disk when there is no kernel).
pub async fn volume_boot_files(s: &ComputeState, server: &Server) -> Result<BootFiles, String> {
    let asset = |id: Option<String>, what: &'static str| async move {
        match id {
            Some(id) => s
                .images
                .get_boot_asset(&id, what, &server.project_id)
                .await
                .map(|a| Some(a.path))
                .map_err(|e| format!("{what} image {id}: {e}")),
            None => Ok(None),
        }
    };
    Ok(BootFiles {
        kernel: asset(server.kernel_id.clone(), "kernel").await?,
        ramdisk: asset(server.ramdisk_id.clone(), "ramdisk").await?,
        disk_image: None,
    })
}

pub async fn build(s: &S, server: &Server, times: &mut BuildTimes) -> Result<i32, String> {
    let files = if server.root_volume().is_some() {
        volume_boot_files(s, server).await?
    } else {
        boot_files(s, server, &server.image_id).await?.0
    };
    times.step("boot_files");
    let network = super::networking::network_data_of(s, server)
        .await
        .map_err(|e| e.to_string())?;
    times.step("network_data");
    let config = server
        .config_drive
        .then(|| config_drive_files(server, &network));
    // The flavor's root disk size does not apply to a volume-backed server.
    let disk_gb = if server.root_volume().is_some() {
        0
    } else {
        server.flavor.disk
    };
    s.driver
        .prepare(&server.id, files, disk_gb, config)
        .await
        .map_err(|e| e.to_string())?;
    times.step("prepare");
    plug_and_wait(s, server).await?;
    times.step("plug");
    let pid = s
        .driver
        .spawn(server, false)
        .await
        .map_err(|e| e.to_string())?;
    times.step("spawn");
    Ok(pid)
}

/// Plugs the server's ports and waits for their `network-vif-plugged`
/// before the guest starts, as Nova's libvirt driver starts the guest
/// paused and resumes it once the events came: the expectations are made
/// first (an event that comes at once is kept), only for the ports not
/// `ACTIVE` yet (Nova's `_get_neutron_events`: a port already up will not
/// change), bounded by `vif_plugging_timeout` (zero: no wait), and a
/// timeout or a `failed` event is fatal as `vif_plugging_is_fatal` says.
async fn plug_and_wait(s: &S, server: &Server) -> Result<(), String> {
    if server.ports.is_empty() {
        return Ok(());
    }
    let timeout = s.config.vif_plugging_timeout;
    let pending = if timeout.is_zero() {
        None
    } else {
        let ids: Vec<String> = server.ports.iter().map(|p| p.port_id.clone()).collect();
        let mut pending =
            s.instance_events
                .prepare(&server.id, crate::server_events::VIF_PLUGGED, &ids);
        let down = super::networking::ports_down(s, server)
            .await
            .map_err(|e| e.to_string())?;
        for id in ids.iter().filter(|id| !down.contains(id)) {
            pending.forget(id);
        }
        Some(pending)
    };
    super::networking::plug(s, server).await?;
    let Some(pending) = pending.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let result = pending.wait(timeout).await;
    tracing::debug!(server = %server.id, ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "waited for network-vif-plugged");
    super::instance_events::vif_plugging_outcome(&server.id, result, s.config.vif_plugging_is_fatal)
}

/// The config drive's files (openstack/latest/...), as Nova writes them.
pub fn config_drive_files(server: &Server, network: &Value) -> Vec<(String, Vec<u8>)> {
    use rand::RngExt;
    let mut seed = [0u8; 512];
    rand::rng().fill(&mut seed[..]);
    let mut public_keys = Map::new();
    let mut keys = Vec::new();
    if let (Some(name), Some(data)) = (&server.key_name, &server.key_data) {
        public_keys.insert(name.clone(), json!(data));
        keys.push(json!({"name": name, "type": "ssh", "data": data}));
    }
    let meta = json!({
        "uuid": server.id,
        "name": server.name,
        "hostname": server.hostname,
        "launch_index": server.launch_index,
        "availability_zone": server.availability_zone.clone().unwrap_or_else(|| super::hosts::ZONE.into()),
        "project_id": server.project_id,
        "public_keys": public_keys,
        "keys": keys,
        "meta": server.metadata,
        "devices": [],
        "random_seed": base64::engine::general_purpose::STANDARD.encode(seed),
    });
    let mut files = Vec::new();
    // Nova's EC2 metadata names the local disks (`ephemeral0`, `swap`):
    // cloud-init's config drive source finds them there for its `mounts`.
    if !server.local_disks.is_empty() {
        let mut mapping = Map::new();
        mapping.insert("ami".into(), json!("vda"));
        mapping.insert("root".into(), json!("/dev/vda"));
        let mut ephemeral = 0;
        for d in &server.local_disks {
            match d.kind {
                crate::db::servers::LocalDiskKind::Swap => {
                    mapping.insert("swap".into(), json!(d.device));
                }
                crate::db::servers::LocalDiskKind::Ephemeral => {
                    mapping.insert(format!("ephemeral{ephemeral}"), json!(d.device));
                    ephemeral += 1;
                }
            }
        }
        let ec2 = json!({
            "instance-id": server.id,
            "hostname": server.hostname,
            "local-hostname": server.hostname,
            "block-device-mapping": mapping,
        });
        for version in ["latest", "2009-04-04"] {
            files.push((
                format!("ec2/{version}/meta-data.json"),
                ec2.to_string().into_bytes(),
            ));
        }
    }
    for version in ["latest", "2018-08-27", "2012-08-10"] {
        files.push((
            format!("openstack/{version}/meta_data.json"),
            meta.to_string().into_bytes(),
        ));
        files.push((
            format!("openstack/{version}/network_data.json"),
            network.to_string().into_bytes(),
        ));
        files.push((
            format!("openstack/{version}/vendor_data.json"),
            b"{}".to_vec(),
        ));
        files.push((
            format!("openstack/{version}/vendor_data2.json"),
            b"{}".to_vec(),
        ));
        if let Some(data) = &server.user_data
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data.trim())
        {
            files.push((format!("openstack/{version}/user_data"), bytes));
        }
    }
    files
}

// ----------------------------------------------------------------- delete

/// `DELETE /servers/{id}`: marks the server deleting and tears it down in the background.
pub async fn start_delete(
    s: &S,
    ctx: &Arc<AuthContext>,
    id: &str,
    request_id: &str,
) -> ComputeResult<()> {
    let admin = super::is_admin_context(s, ctx);
    let ctx2 = ctx.clone();
    let (id2, rid) = (id.to_string(), request_id.to_string());
    let project = s
        .write(move |tx| {
            let mut server = load_tx(tx, admin, &ctx2, &id2)?;
            check_unlocked(admin, &server)?;
            server.task_state = Some(TaskState::Deleting);
            server.updated_at = now_unix();
            db::update_server(tx, &server)?;
            record_action(tx, &server, &rid, "delete", now_unix())?;
            Ok(server.project_id)
        })
        .await?;
    s.config.events.server(id, &project);
    spawn_delete(s.clone(), id.to_string(), request_id.to_string());
    Ok(())
}

pub fn spawn_delete(s: S, id: String, request_id: String) {
    tokio::spawn(async move {
        let lock = s.locks.lock_for(&id);
        let guard = lock.lock().await;
        s.driver.stop(&id, None).await;
        s.driver.destroy_files(&id).await;
        s.locks.forget(&id);
        // Its volumes go back to Cinder (deleted when attached with delete_on_termination).
        let id3 = id.clone();
        let volumes = s
            .read(move |conn| Ok(db::get_server(conn, &id3)?))
            .await
            .ok()
            .flatten()
            .map(|sv| sv.volumes)
            .unwrap_or_default();
        // (Here, not in volumes.rs, which imports this module.)
        for v in &volumes {
            let detached =
                crate::volume::ops::detach(&s.volumes, &v.volume_id, Some(v.attachment_id.clone()))
                    .await;
            if let Err(e) = detached {
                tracing::warn!(volume = %v.volume_id, error = %e, "cannot detach a volume in Cinder");
            }
            if v.delete_on_termination
                && let Err(e) =
                    crate::volume::ops::delete(&s.volumes, &v.volume_id, false, false).await
            {
                tracing::warn!(volume = %v.volume_id, error = %e, "cannot delete a volume on termination");
            }
        }
        let id2 = id.clone();
        let result = s
            .write(move |tx| {
                let Some(mut server) = db::get_server(tx, &id2)? else {
                    return Ok(None);
                };
                let now = now_unix();
                server.deleted = true;
                server.vm_state = VmState::Deleted;
                server.task_state = None;
                server.power_state = PowerState::NoState;
                server.terminated_at = Some(now);
                server.updated_at = now;
                server.host = None;
                server.vmm_pid = None;
                super::networking::release(tx, &server)?;
                db::update_server(tx, &server)?;
                store::remove_server_group_member(tx, &id2)?;
                Ok(Some(server.project_id))
            })
            .await;
        drop(guard);
        super::networking::notify(&s);
        match result {
            Ok(project) => project.map_or((), |p| s.config.events.server(&id, &p)),
            Err(e) => tracing::error!(server = %id, error = %e, "cannot mark a server deleted"),
        }
        finish_action_event(&s, &id, &request_id, "compute_terminate_instance", true).await;
    });
}
