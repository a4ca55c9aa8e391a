//! The volumes of a server's mappings, made and attached at build time.

use super::{ALLOCATE_LIMIT, Mapping, S, Source};
use crate::compute::build::{self, fault, update_server};
use crate::compute::states::{PowerState, TaskState, VmState};
use crate::db::servers::ServerVolume;
use crate::db::volume as vstore;
use crate::volume::ops::{self, InstanceSource, InstanceVolume};

/// The device a mapping's volume gets: the one asked for, `/dev/vda` for
/// the root disk, else the first `/dev/vdX` after the root disk and the
/// `fixed` disks after it (local disks, the config drive) that no volume of
/// the server has.
fn choose_device(m: &Mapping, taken: &[ServerVolume], fixed: usize) -> String {
    if let Some(d) = &m.device_name
        && !taken.iter().any(|v| &v.device == d)
    {
        return d.clone();
    }
    if m.boot_index == Some(0) {
        return "/dev/vda".into();
    }
    (b'a'..=b'z')
        .skip(1 + fixed)
        .map(|c| format!("/dev/vd{}", c as char))
        .find(|d| !taken.iter().any(|v| &v.device == d) && m.device_name.as_ref() != Some(d))
        .unwrap_or_default()
}

/// Makes (or takes) the volume of one mapping and attaches it to server
/// `id`: returns its record, and whether the volume was made here.
async fn prepare_one(
    s: &S,
    id: &str,
    project: &str,
    user: &str,
    m: &Mapping,
    device: String,
) -> Result<ServerVolume, (String, Option<String>)> {
    let plain = |e: crate::volume::VolumeError| (e.to_string(), None);
    let (volume_id, made, read_only) = match &m.source {
        Source::Volume(vid) => {
            let id = vid.clone();
            let read_only = s
                .volumes
                .read(move |conn| Ok(vstore::get_volume(conn, &id)?))
                .await
                .map_err(plain)?
                .is_some_and(|v| v.readonly == Some(true));
            (vid.clone(), false, read_only)
        }
        other => {
            let source = match other {
                Source::Image(image) => InstanceSource::Image(image.clone()),
                Source::Snapshot(snap) => InstanceSource::Snapshot(snap.clone()),
                _ => InstanceSource::Blank,
            };
            let v = ops::create_for_instance(
                &s.volumes,
                InstanceVolume {
                    project_id: project.to_string(),
                    user_id: user.to_string(),
                    size: m.volume_size.unwrap_or(0),
                    source,
                    volume_type: m.volume_type.clone(),
                },
            )
            .await
            .map_err(plain)?;
            (v.id, true, false)
        }
    };
    let made_id = made.then(|| volume_id.clone());
    let with_made = |e: crate::volume::VolumeError| (e.to_string(), made_id.clone());
    if made {
        ops::wait_available(&s.volumes, &volume_id, ALLOCATE_LIMIT)
            .await
            .map_err(with_made)?;
    }
    let attachment_id = ops::reserve(&s.volumes, &volume_id, Some(id.to_string()))
        .await
        .map_err(with_made)?;
    let record = ServerVolume {
        volume_id: volume_id.clone(),
        attachment_id: attachment_id.clone(),
        device: device.clone(),
        path: ops::backing_file(&s.volumes, &volume_id),
        tag: m.tag.clone(),
        delete_on_termination: m.delete_on_termination,
        boot_index: m.boot_index,
        read_only,
    };
    let marked = ops::attach(
        &s.volumes,
        &volume_id,
        Some(attachment_id.clone()),
        Some(id.to_string()),
        Some(crate::compute::hosts::hostname()),
        Some(device),
        if read_only { "ro" } else { "rw" },
    )
    .await;
    if let Err(e) = marked {
        let _ = ops::detach(&s.volumes, &volume_id, Some(attachment_id)).await;
        return Err(with_made(e));
    }
    Ok(record)
}

/// Prepares server `id`'s volumes before its build (under the server's
/// lock, task state `block_device_mapping`); each one is recorded on the
/// server as soon as it is attached, so a delete meanwhile finds it. On a
/// failure the server is ERROR with a fault naming the mapping, a volume
/// made for the failed mapping is deleted when its mapping says
/// `delete_on_termination` (the others stay attached: server delete
/// detaches or deletes them), and the create action fails. True: go on
/// with the build.
pub async fn prepare(s: &S, id: &str, mappings: &[Mapping], request_id: &str) -> bool {
    let lock = s.locks.lock_for(id);
    let guard = lock.lock().await;
    let Some(server) = update_server(s, id, |sv| {
        if sv.task_state != Some(TaskState::Deleting) {
            sv.task_state = Some(TaskState::BlockDeviceMapping);
        }
    })
    .await
    else {
        return false;
    };
    // Being deleted: the build path ends the create action.
    if server.deleted || server.task_state == Some(TaskState::Deleting) {
        return true;
    }
    let mut taken = server.volumes.clone();
    for (index, m) in mappings.iter().enumerate() {
        let fixed = server.local_disks.len() + usize::from(server.config_drive);
        let device = choose_device(m, &taken, fixed);
        match prepare_one(s, id, &server.project_id, &server.user_id, m, device).await {
            Ok(record) => {
                taken.push(record.clone());
                update_server(s, id, move |sv| sv.volumes.push(record)).await;
            }
            Err((why, made)) => {
                tracing::warn!(server = %id, mapping = index, error = %why, "block device mapping failed");
                if let Some(vid) = made
                    && m.delete_on_termination
                    && let Err(e) = ops::delete(&s.volumes, &vid, false, true).await
                {
                    tracing::warn!(volume = %vid, error = %e, "cannot delete a failed mapping's volume");
                }
                let detail = format!("{}: {why}", m.describe(index));
                update_server(s, id, move |sv| {
                    sv.vm_state = VmState::Error;
                    sv.power_state = PowerState::NoState;
                    if sv.task_state != Some(TaskState::Deleting) {
                        sv.task_state = None;
                    }
                    sv.fault = Some(fault(
                        &format!(
                            "Build of instance {} aborted: Block Device Mapping is Invalid.",
                            sv.id
                        ),
                        &detail,
                    ));
                })
                .await;
                crate::compute::networking::release_failed_build(s, id).await;
                drop(guard);
                build::finish_action(
                    s,
                    id,
                    request_id,
                    Some("compute__do_build_and_run_instance"),
                    false,
                    Some(why),
                )
                .await;
                s.config.events.server(id, &server.project_id);
                return false;
            }
        }
    }
    true
}

/// The build of a server with volume mappings: the volumes first, then the
/// usual build.
pub fn spawn_build(s: S, id: String, mappings: Vec<Mapping>, request_id: String) {
    tokio::spawn(async move {
        if prepare(&s, &id, &mappings, &request_id).await {
            build::spawn_build(s, id, request_id);
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compute::ComputeState;

    #[test]
    fn devices_follow_the_root_and_the_config_drive() {
        let data = Mapping {
            source: Source::Blank,
            volume_size: Some(1),
            boot_index: None,
            device_name: None,
            delete_on_termination: false,
            tag: None,
            volume_type: None,
        };
        let root = Mapping {
            boot_index: Some(0),
            ..data.clone()
        };
        assert_eq!(choose_device(&root, &[], 0), "/dev/vda");
        assert_eq!(choose_device(&data, &[], 0), "/dev/vdb");
        assert_eq!(choose_device(&data, &[], 1), "/dev/vdc");
        assert_eq!(choose_device(&data, &[], 3), "/dev/vde");
        let taken = vec![ServerVolume {
            device: "/dev/vdb".into(),
            ..Default::default()
        }];
        assert_eq!(choose_device(&data, &taken, 0), "/dev/vdc");
        let named = Mapping {
            device_name: Some("/dev/vdf".into()),
            ..data
        };
        assert_eq!(choose_device(&named, &taken, 0), "/dev/vdf");
    }

    mod prepared {
        use super::*;
        use crate::compute::fake_driver::FakeDriver;
        use crate::db::servers::{self as db, Server};

        struct Cloud {
            s: S,
            dir: std::path::PathBuf,
        }

        impl Drop for Cloud {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }

        /// A compute state over a fresh state file and the fake driver, with
        /// one BUILD server `srv` of project `p`.
        async fn cloud(name: &str) -> Cloud {
            let dir = std::env::temp_dir().join(format!("yunhe-bdm-{name}-{}", std::process::id()));
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
            let s = ComputeState::new(
                identity,
                Default::default(),
                Arc::new(FakeDriver::default()),
            );
            s.volumes.backend.prepare().expect("volume dir");
            let server = Server {
                id: "srv".into(),
                name: "vm".into(),
                project_id: "p".into(),
                user_id: "u".into(),
                vm_state: VmState::Building,
                task_state: Some(TaskState::Scheduling),
                reservation_id: "r-1".into(),
                hostname: "vm".into(),
                ..Default::default()
            };
            s.write(move |tx| {
                db::insert_server(tx, &server)?;
                crate::compute::build::record_action(tx, &server, "req", "create", 0)?;
                Ok(())
            })
            .await
            .expect("insert");
            Cloud { s, dir }
        }

        async fn stored(s: &S) -> Server {
            s.read(|conn| Ok(db::get_server(conn, "srv")?))
                .await
                .expect("read")
                .expect("server")
        }

        async fn volume(s: &S, id: &str) -> Option<vstore::Volume> {
            let id = id.to_string();
            s.volumes
                .read(move |conn| Ok(vstore::get_volume(conn, &id)?))
                .await
                .expect("read")
        }

        fn blank(size: i64, boot_index: Option<i64>, delete: bool) -> Mapping {
            Mapping {
                source: Source::Blank,
                volume_size: Some(size),
                boot_index,
                device_name: None,
                delete_on_termination: delete,
                tag: None,
                volume_type: None,
            }
        }

        #[tokio::test]
        async fn new_volumes_are_attached_and_recorded() {
            let c = cloud("made").await;
            let mut named = blank(2, None, true);
            named.device_name = Some("/dev/vdd".into());
            assert!(prepare(&c.s, "srv", &[blank(1, None, false), named], "req").await);
            let sv = stored(&c.s).await;
            assert_eq!(sv.task_state, Some(TaskState::BlockDeviceMapping));
            assert_eq!(sv.volumes.len(), 2);
            assert_eq!(sv.volumes[0].device, "/dev/vdb");
            assert_eq!(sv.volumes[1].device, "/dev/vdd");
            assert!(sv.volumes[1].delete_on_termination);
            assert!(sv.root_volume().is_none());
            for (v, size) in sv.volumes.iter().zip([1, 2]) {
                let got = volume(&c.s, &v.volume_id).await.expect("volume");
                assert_eq!(got.status, "in-use");
                assert_eq!(got.size, size);
                assert_eq!(got.attachments.len(), 1);
                assert_eq!(got.attachments[0].instance_uuid.as_deref(), Some("srv"));
                assert!(v.path.exists(), "{}", v.path.display());
            }
        }

        #[tokio::test]
        async fn a_failed_mapping_is_a_fault_and_its_volume_goes() {
            let c = cloud("failed").await;
            let missing = Mapping {
                source: Source::Snapshot("no-such-snapshot".into()),
                ..blank(1, None, true)
            };
            assert!(!prepare(&c.s, "srv", &[blank(1, Some(0), false), missing], "req").await);
            let sv = stored(&c.s).await;
            assert_eq!(sv.vm_state, VmState::Error);
            let fault = sv.fault.expect("fault");
            let details = fault["details"].as_str().unwrap_or_default();
            assert!(
                details.starts_with("block device mapping 1 (snapshot no-such-snapshot -> volume)"),
                "{details}"
            );
            // The one made before stays attached (server delete settles it).
            assert_eq!(sv.volumes.len(), 1);
            assert_eq!(sv.volumes[0].boot_index, Some(0));
            assert_eq!(sv.volumes[0].device, "/dev/vda");
            let action =
                c.s.read(|conn| Ok(db::get_action(conn, "srv", "req")?))
                    .await
                    .expect("read")
                    .expect("action");
            assert_eq!(action.message.as_deref(), Some("Error"));
        }
    }
}
