//! Nova's side of Cinder's `volume-extended` (an attached volume grew
//! online, Cinder 3.42): the server's running VM is asked to re-read the
//! volume's disk size (the VMM's `resize_disk`, which tells the guest with a
//! configuration-change interrupt). Events come from Cinder in process
//! (`server_events`) and from `os-server-external-events`, both through
//! `servers::handle_events`. Each is recorded as the instance
//! action `extend_volume` (event `compute_extend_volume`); a VM that cannot
//! resize leaves an Error there and in the log, never a failed request. A
//! server whose VM does not run has nothing to do: its next boot opens the
//! grown file. (The process-per-VM driver's `resize_disk` is in virt.rs.)

use std::sync::Arc;

use super::ComputeState;
use super::build::{finish_action, record_action};
use super::states::VmState;
use crate::db::now_unix;
use crate::db::servers as db;
use crate::server_events::{ServerEvent, VOLUME_EXTENDED};

type S = Arc<ComputeState>;

/// The instance action an extend event records.
pub const ACTION: &str = "extend_volume";

/// Acts on one external event (only `volume-extended` asks anything of the
/// VM; the others are recorded by the API as handled).
pub async fn handle(s: &S, event: &ServerEvent, request_id: &str) {
    if event.name != VOLUME_EXTENDED {
        return;
    }
    let Some(volume_id) = event.tag.as_deref() else {
        tracing::warn!(server = %event.server_uuid, "volume-extended without a volume id (tag)");
        return;
    };
    volume_extended(s, &event.server_uuid, volume_id, request_id).await;
}

/// The volume `volume_id` attached to server `id` grew: the VM takes the new
/// size when it runs. Returns whether the action succeeded.
pub async fn volume_extended(s: &S, id: &str, volume_id: &str, request_id: &str) -> bool {
    let lock = s.locks.lock_for(id);
    let _guard = lock.lock().await;
    let (id_owned, rid) = (id.to_string(), request_id.to_string());
    let server = s
        .write(move |tx| {
            let Some(server) = db::get_server(tx, &id_owned)?.filter(|sv| !sv.deleted) else {
                return Ok(None);
            };
            record_action(tx, &server, &rid, ACTION, now_unix())?;
            Ok(Some(server))
        })
        .await;
    let server = match server {
        Ok(Some(server)) => server,
        Ok(None) => {
            tracing::info!(server = %id, volume = %volume_id, "volume-extended for a server that is gone");
            return false;
        }
        Err(e) => {
            tracing::error!(server = %id, volume = %volume_id, error = %e, "cannot record a volume extend");
            return false;
        }
    };
    let Some(record) = server.volumes.iter().find(|v| v.volume_id == volume_id) else {
        let why = format!("volume {volume_id} is not attached to server {id}");
        tracing::warn!(server = %id, volume = %volume_id, "volume-extended: {why}");
        finish_action(s, id, request_id, None, false, Some(why)).await;
        return false;
    };
    if !matches!(server.vm_state, VmState::Active | VmState::Paused) {
        // No VM runs: the next boot opens the grown file.
        finish_action(s, id, request_id, None, true, None).await;
        return true;
    }
    match s.driver.resize_disk(id, record).await {
        Ok(capacity) => {
            tracing::info!(server = %id, volume = %volume_id, capacity, "the VM sees the extended volume");
            finish_action(s, id, request_id, None, true, None).await;
            true
        }
        Err(e) => {
            tracing::warn!(server = %id, volume = %volume_id, error = %e, "the VM cannot take the extended volume's size");
            finish_action(s, id, request_id, None, false, Some(e.to_string())).await;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::fake_driver::{TestCloud, active_server};
    use crate::compute::states::PowerState;
    use crate::db::servers::ServerVolume;

    const VOL: &str = "0b6f3c56-52b6-4d0e-9d8e-2f7a3f0d1a11";

    type Cloud = TestCloud;

    /// Server `srv` (running, or stopped) with volume [`VOL`] attached.
    async fn cloud(name: &str, running: bool) -> Cloud {
        let c = TestCloud::new(&format!("volextend-{name}"));
        let mut server = active_server();
        if !running {
            server.vm_state = VmState::Stopped;
            server.power_state = PowerState::Shutdown;
        }
        server.volumes = vec![ServerVolume {
            volume_id: VOL.into(),
            attachment_id: "att".into(),
            device: "/dev/vdb".into(),
            path: c.dir.join("vol"),
            ..Default::default()
        }];
        c.add_server(&server, running).await;
        c
    }

    async fn actions(s: &S) -> Vec<(String, String, Option<String>)> {
        s.read(|conn| Ok(db::list_actions(conn, "srv")?))
            .await
            .expect("actions")
            .into_iter()
            .map(|a| {
                let e = a.events.last().cloned().expect("event");
                (a.action, e.event, e.result)
            })
            .collect()
    }

    fn extended(volume: &str) -> ServerEvent {
        ServerEvent::volume_extended("srv", volume)
    }

    #[tokio::test]
    async fn a_running_vm_resizes_the_disk_and_the_action_says_so() {
        let c = cloud("run", true).await;
        handle(&c.s, &extended(VOL), "req-1").await;
        assert!(c.fake.calls().contains(&format!("resize_disk srv {VOL}")));
        assert_eq!(
            actions(&c.s).await,
            vec![(
                "extend_volume".to_string(),
                "compute_extend_volume".to_string(),
                Some("Success".to_string())
            )]
        );
    }

    #[tokio::test]
    async fn a_failure_is_an_error_event_not_a_panic() {
        let c = cloud("fail", true).await;
        c.fake.fail("resize_disk");
        assert!(!volume_extended(&c.s, "srv", VOL, "req-2").await);
        assert_eq!(actions(&c.s).await[0].2.as_deref(), Some("Error"));
        // A volume the server does not have is an error too.
        assert!(!volume_extended(&c.s, "srv", "other", "req-3").await);
        // A server that is gone: nothing recorded, nothing asked.
        assert!(!volume_extended(&c.s, "gone", VOL, "req-4").await);
        assert_eq!(actions(&c.s).await.len(), 2);
    }

    #[tokio::test]
    async fn a_stopped_server_has_nothing_to_do() {
        let c = cloud("stopped", false).await;
        assert!(volume_extended(&c.s, "srv", VOL, "req-5").await);
        assert!(!c.fake.calls().iter().any(|c| c.starts_with("resize_disk")));
        assert_eq!(actions(&c.s).await[0].2.as_deref(), Some("Success"));
        // Other events ask nothing of the VM.
        let mut e = extended(VOL);
        e.name = "network-changed".into();
        handle(&c.s, &e, "req-6").await;
        assert_eq!(actions(&c.s).await.len(), 1);
    }
}
