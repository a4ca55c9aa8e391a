//! `shelve`, `shelveOffload` and `unshelve`: a shelved server's disk
//! becomes an image and the server leaves the host; unshelve places it
//! again with the scheduler's fit check and boots it.

use super::image::snapshot_to_image;
use super::{S, boot, settle};
use crate::compute::build::{clean_timeout, update_server};
use crate::compute::states::{PowerState, VmState};
use crate::db::servers::{self as db, Server};

/// `shelve`: as Nova offloads an image-backed server, its disk becomes the
/// image `<name>-shelved` (removed again by unshelve).
pub(super) async fn shelve_vm(s: S, sv: Server) -> Result<(), String> {
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
        x.vm_state = VmState::ShelvedOffloaded;
        x.power_state = PowerState::Shutdown;
        x.task_state = None;
        x.host = None;
        x.shelved_image_id = image;
    })
    .await;
    Ok(())
}

/// `shelveOffload` of a shelved server: it leaves the host.
pub(super) async fn shelve_offload_vm(s: S, sv: Server) -> Result<(), String> {
    update_server(&s, &sv.id, |x| {
        x.vm_state = VmState::ShelvedOffloaded;
        x.task_state = None;
        x.host = None;
    })
    .await;
    Ok(())
}

/// `unshelve`: the server is placed again, so it must fit next to the others
/// (the fit check create and resize use); when it does not, it stays
/// shelved_offloaded and the action fails with NoValidHost, as in Nova.
pub(super) async fn unshelve_vm(s: S, sv: Server) -> Result<(), String> {
    let ratios = s.config.ratios;
    let facts = crate::compute::hosts::capacity(&s.db.state_dir());
    let (id, flavor) = (sv.id.clone(), sv.flavor.clone());
    let fit = s
        .read(move |conn| {
            let others = db::host_usage(conn, Some(&id))?;
            let demand = crate::compute::scheduler::Demand {
                vcpus: flavor.vcpus,
                ram_mb: flavor.ram,
                disk_gb: flavor.disk,
            };
            Ok(crate::compute::scheduler::fit(
                others, demand, &facts, ratios,
            ))
        })
        .await
        .map_err(|e| e.to_string())?;
    if !fit.all() {
        return Err("No valid host was found. There are not enough hosts available.".into());
    }
    let host = crate::compute::hosts::hostname();
    update_server(&s, &sv.id, move |x| {
        x.host = Some(host);
        x.shelved_image_id = None;
    })
    .await;
    if let Some(image) = &sv.shelved_image_id {
        s.images.discard_snapshot(image).await;
    }
    boot(&s, &sv, false).await?;
    settle(&s, &sv.id, VmState::Active, PowerState::Running).await;
    Ok(())
}
