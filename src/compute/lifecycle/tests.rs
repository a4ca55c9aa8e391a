//! Lifecycle transitions against the fake driver.

use super::monitor::reattach;
use super::power::*;
use super::rescue::{rescue_vm, unrescue_vm};
use super::resize::{confirm_resize_vm, resize_vm, revert_resize_vm};
use super::shelve::*;
use super::*;
use crate::compute::build::spawn_delete;
use crate::compute::driver::ComputeDriver;
use crate::compute::fake_driver::{FakeVm, TestCloud, active_server};
use crate::compute::states::{PowerState, TaskState, VmState};
use serde_json::Value;
use std::time::Duration;

type Cloud = TestCloud;

/// A compute state over a fresh state file and the fake driver, with
/// one ACTIVE server `srv` whose VM runs.
async fn cloud(name: &str) -> Cloud {
    let c = TestCloud::new(&format!("lifecycle-{name}"));
    c.add_server(&active_server(), true).await;
    c
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
    let task = server.task_state;
    update_server(&c.s, "srv", move |sv| sv.task_state = task).await;
    let server = stored(&c.s).await;
    op(c.s.clone(), server)
        .await
        .map_err(ComputeError::Internal)?;
    Ok(stored(&c.s).await)
}

fn states(sv: &Server) -> (&str, Option<&str>, PowerState) {
    (
        sv.vm_state.as_str(),
        sv.task_state.map(TaskState::as_str),
        sv.power_state,
    )
}

#[tokio::test]
async fn stop_start_pause_unpause_reboot() {
    let c = cloud("power").await;
    let sv = act(&c, Action::Stop, stop_vm).await.expect("stop");
    assert_eq!(states(&sv), ("stopped", None, PowerState::Shutdown));
    assert_eq!(c.fake.vm("srv"), None);
    // Refused as Nova refuses, in the words of today's 409.
    let refused = act(&c, Action::Pause, pause_vm).await.err();
    assert_eq!(
        refused.map(|e| e.to_string()).as_deref(),
        Some("Cannot 'pause' instance srv while it is in vm_state stopped")
    );
    let sv = act(&c, Action::Start, start_vm).await.expect("start");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    assert!(sv.vmm_pid.is_some());
    let sv = act(&c, Action::Pause, pause_vm).await.expect("pause");
    assert_eq!(states(&sv), ("paused", None, PowerState::Paused));
    assert_eq!(c.fake.vm("srv"), Some(FakeVm::Paused));
    assert!(matches!(
        act(&c, Action::RebootSoft, reboot_soft_vm).await,
        Err(ComputeError::Conflict(_))
    ));
    let sv = act(&c, Action::Unpause, unpause_vm).await.expect("unpause");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    let sv = act(&c, Action::RebootHard, reboot_hard_vm)
        .await
        .expect("hard reboot");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    let sv = act(&c, Action::RebootSoft, reboot_soft_vm)
        .await
        .expect("soft reboot");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
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
    assert_eq!(states(&sv), ("suspended", None, PowerState::Shutdown));
    assert!(c.fake.has_saved_state("srv"));
    assert!(c.fake.take_expected_exit("srv"));
    let sv = act(&c, Action::Resume, resume_vm).await.expect("resume");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    assert!(!c.fake.has_saved_state("srv"));
    assert_eq!(
        c.fake.calls().last().map(String::as_str),
        Some("restore srv")
    );
    // A task running: every action is refused with the task's name.
    update_server(&c.s, "srv", |sv| sv.task_state = Some(TaskState::Rebooting)).await;
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
    assert_eq!(
        (sv.vm_state.as_str(), sv.power_state),
        ("active", PowerState::Running)
    );
}

#[tokio::test]
async fn unshelve_places_the_server_only_where_it_fits() {
    let c = cloud("unshelve").await;
    c.s.driver.stop("srv", None).await;
    let offload = |vcpus: i64| {
        move |sv: &mut Server| {
            sv.vm_state = VmState::ShelvedOffloaded;
            sv.power_state = PowerState::Shutdown;
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
    assert_eq!(sv.vm_state, VmState::ShelvedOffloaded);
    assert_eq!(sv.host, None);
    assert_eq!(c.fake.vm("srv"), None);
    // One vCPU fits: the server is placed and boots.
    update_server(&c.s, "srv", offload(1)).await;
    let sv = act(&c, Action::Unshelve, unshelve_vm)
        .await
        .expect("unshelve");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
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
        sv.vm_state = VmState::Rescued;
        sv.rescue = Some(crate::db::servers::RescueBoot {
            image_id: "img".into(),
            ..Default::default()
        });
    })
    .await;
    let sv = act(&c, Action::Unrescue, unrescue_vm)
        .await
        .expect("unrescue");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
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
    assert!(
        Action::Unrescue
            .check("srv", VmState::Active, None)
            .is_err()
    );
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
        sv.task_state = Some(TaskState::Rescuing);
        sv.rescue = Some(r);
    })
    .await;
    reattach(&c.s, &stored(&c.s).await).await;
    let sv = stored(&c.s).await;
    assert_eq!(states(&sv), ("rescued", None, PowerState::Running));

    // The rescue VM is gone: still rescued, powered off (unrescue follows).
    c.s.driver.stop("srv", None).await;
    reattach(&c.s, &stored(&c.s).await).await;
    let sv = stored(&c.s).await;
    assert_eq!(states(&sv), ("rescued", None, PowerState::Shutdown));
    assert!(sv.rescue.is_some());

    // Interrupted while rescuing with no VM: the rescue is dropped.
    update_server(&c.s, "srv", |sv| {
        sv.vm_state = VmState::Active;
        sv.task_state = Some(TaskState::Rescuing);
    })
    .await;
    reattach(&c.s, &stored(&c.s).await).await;
    let sv = stored(&c.s).await;
    assert_eq!(states(&sv), ("stopped", None, PowerState::Shutdown));
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
    assert_eq!(states(&sv), ("deleted", None, PowerState::NoState));
    assert_eq!(c.fake.vm("srv"), None);
    assert!(
        c.fake
            .calls()
            .ends_with(&["stop srv".to_string(), "destroy_files srv".to_string()])
    );
}

/// An image service in the catalog with Glance's default limits, so that
/// snapshots (shelve) may be made in the test's state file.
async fn allow_images(c: &Cloud) {
    std::fs::create_dir_all(c.dir.join("images")).expect("images dir");
    c.s.write(|tx| {
        crate::db::identity::upsert_service(
            tx,
            &crate::db::identity::Service {
                id: "glance".into(),
                kind: crate::image::quota::SERVICE_TYPE.into(),
                name: "glance".into(),
                description: String::new(),
                enabled: true,
                extra: Default::default(),
            },
        )?;
        crate::identity::limits::seed_registered_limits(
            tx,
            crate::image::quota::SERVICE_TYPE,
            crate::image::quota::DEFAULT_REGISTERED_LIMITS,
        )?;
        Ok(())
    })
    .await
    .expect("image limits");
}

#[tokio::test]
async fn shelve_offloads_to_an_image_and_unshelve_boots_from_it() {
    let c = cloud("shelve").await;
    allow_images(&c).await;
    update_server(&c.s, "srv", |sv| sv.host = Some("here".into())).await;
    let sv = act(&c, Action::Shelve, shelve_vm).await.expect("shelve");
    assert_eq!(
        states(&sv),
        ("shelved_offloaded", None, PowerState::Shutdown)
    );
    assert_eq!(sv.host, None);
    assert_eq!(c.fake.vm("srv"), None);
    let image_id = sv.shelved_image_id.clone().expect("shelved image");
    let image = c.s.images.get(&image_id, None).await.expect("image");
    assert_eq!(image.status, "active");
    assert_eq!(
        image
            .properties
            .get("instance_uuid")
            .and_then(Value::as_str),
        Some("srv")
    );
    assert!(
        c.fake
            .calls()
            .ends_with(&["stop_clean srv".to_string(), "copy_disk srv".to_string()]),
        "{:?}",
        c.fake.calls()
    );
    // Refused while offloaded, in Nova's words.
    assert!(matches!(
        act(&c, Action::Start, start_vm).await,
        Err(ComputeError::Conflict(_))
    ));

    let sv = act(&c, Action::Unshelve, unshelve_vm)
        .await
        .expect("unshelve");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    assert!(sv.host.is_some());
    assert_eq!(sv.shelved_image_id, None);
    assert_eq!(c.fake.vm("srv"), Some(FakeVm::Running));
    // The shelved image is gone again.
    assert!(c.s.images.get(&image_id, None).await.is_err());
}

#[tokio::test]
async fn shelve_offload_of_a_shelved_server_leaves_the_host() {
    let c = cloud("offload").await;
    c.s.driver.stop("srv", None).await;
    update_server(&c.s, "srv", |sv| {
        sv.vm_state = VmState::Shelved;
        sv.power_state = PowerState::Shutdown;
        sv.host = Some("here".into());
    })
    .await;
    let sv = act(&c, Action::ShelveOffload, shelve_offload_vm)
        .await
        .expect("offload");
    assert_eq!(
        states(&sv),
        ("shelved_offloaded", None, PowerState::Shutdown)
    );
    assert_eq!(sv.host, None);
}

#[tokio::test]
async fn resize_then_confirm_or_revert() {
    let c = cloud("resize").await;
    let small = crate::db::servers::FlavorCopy {
        id: "1".into(),
        vcpus: 1,
        ram: 512,
        disk: 1,
        ..Default::default()
    };
    let big = crate::db::servers::FlavorCopy {
        id: "2".into(),
        vcpus: 2,
        ram: 1024,
        disk: 2,
        ..Default::default()
    };
    let first = small.clone();
    update_server(&c.s, "srv", move |sv| sv.flavor = first).await;

    let to = big.clone();
    let sv = act(&c, Action::Resize, move |s, sv| resize_vm(s, sv, to))
        .await
        .expect("resize");
    assert_eq!(states(&sv), ("resized", None, PowerState::Running));
    assert_eq!(sv.flavor.id, "2");
    assert_eq!(sv.old_flavor.as_ref().map(|f| f.id.as_str()), Some("1"));
    let migration = sv.migrations.last().expect("migration");
    assert_eq!(
        (
            migration.old_flavor_id.as_str(),
            migration.new_flavor_id.as_str()
        ),
        ("1", "2")
    );
    assert_eq!(migration.status, "finished");
    assert!(
        c.fake.calls().ends_with(&[
            "stop_clean srv".to_string(),
            "grow_disk srv".to_string(),
            "spawn srv".to_string()
        ]),
        "{:?}",
        c.fake.calls()
    );
    // Only confirm or revert may follow.
    assert!(matches!(
        act(&c, Action::Stop, stop_vm).await,
        Err(ComputeError::Conflict(_))
    ));
    let sv = act(&c, Action::ConfirmResize, confirm_resize_vm)
        .await
        .expect("confirm");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    assert_eq!(sv.flavor.id, "2");
    assert_eq!(sv.old_flavor, None);
    assert_eq!(
        sv.migrations.last().map(|m| m.status.as_str()),
        Some("confirmed")
    );

    // Back down to the small flavor, and revert: the big one again.
    let sv = act(&c, Action::Resize, move |s, sv| resize_vm(s, sv, small))
        .await
        .expect("resize again");
    assert_eq!(sv.flavor.id, "1");
    let sv = act(&c, Action::RevertResize, revert_resize_vm)
        .await
        .expect("revert");
    assert_eq!(states(&sv), ("active", None, PowerState::Running));
    assert_eq!(sv.flavor.id, "2");
    assert_eq!(
        sv.migrations.last().map(|m| m.status.as_str()),
        Some("reverted")
    );
    assert_eq!(c.fake.vm("srv"), Some(FakeVm::Running));
}

/// The declared arguments of the actions: what is accepted, and Nova's
/// wording for what is not.
mod action_arguments {
    use serde_json::json;

    use super::super::admin::{LockArg, ResetStateArg, ResetTo};
    use super::super::console::{ConsoleOutputArg, ConsoleType, SerialConsoleArg};
    use super::super::image::{BackupArg, ImageArg, checked_image};
    use super::super::power::{RebootArg, RebootType};
    use super::super::rebuild::RebuildArg;
    use super::super::rescue::RescueArg;
    use super::super::resize::ResizeArg;
    use crate::compute::Mv;
    use crate::compute::request::{Integer, action_arg, refused};

    #[test]
    fn reboot_takes_either_type_in_any_case() {
        let arg: RebootArg = action_arg("reboot", json!({"type": "hArD"})).expect("accepted");
        assert_eq!(arg.kind, RebootType::Hard);
        assert_eq!(
            refused(action_arg::<RebootArg>("reboot", json!({}))),
            "Invalid input for field/attribute reboot. 'type' is a required property"
        );
        assert_eq!(
            refused(action_arg::<RebootArg>("reboot", json!({"type": "warm"}))),
            "Invalid input for field/attribute type. Value: warm. 'warm' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']"
        );
    }

    #[test]
    fn admin_and_console_arguments() {
        let lock: Option<LockArg> = action_arg("lock", json!(null)).expect("null is allowed");
        assert!(lock.is_none());
        let lock: Option<LockArg> =
            action_arg("lock", json!({"locked_reason": "r"})).expect("accepted");
        assert_eq!(lock.and_then(|l| l.locked_reason).as_deref(), Some("r"));
        assert_eq!(
            refused(action_arg::<Option<LockArg>>("lock", json!({"why": "r"}))),
            "Invalid input for field/attribute lock. Additional properties are not allowed ('why' was unexpected)"
        );
        let reset: ResetStateArg =
            action_arg("os-resetState", json!({"state": "error"})).expect("accepted");
        assert_eq!(reset.state, ResetTo::Error);
        assert!(action_arg::<ResetStateArg>("os-resetState", json!({"state": "paused"})).is_err());
        let out: Option<ConsoleOutputArg> =
            action_arg("os-getConsoleOutput", json!({"length": "-1"})).expect("accepted");
        assert_eq!(out.and_then(|o| o.length), Some(Integer(-1)));
        let out: Option<ConsoleOutputArg> =
            action_arg("os-getConsoleOutput", json!(null)).expect("null is allowed");
        assert!(out.is_none());
        assert_eq!(
            refused(action_arg::<Option<ConsoleOutputArg>>(
                "os-getConsoleOutput",
                json!({"length": "all"})
            )),
            "Invalid input for field/attribute length. Value: \"all\". \"all\" is not an integer"
        );
        let serial: SerialConsoleArg =
            action_arg("os-getSerialConsole", json!({"type": "serial"})).expect("accepted");
        assert_eq!(serial.kind, ConsoleType::Serial);
        assert!(
            action_arg::<SerialConsoleArg>("os-getSerialConsole", json!({"type": "novnc"}))
                .is_err()
        );
    }

    #[test]
    fn resize_and_rescue_arguments() {
        let r: ResizeArg = action_arg(
            "resize",
            json!({"flavorRef": "http://x/flavors/42", "OS-DCF:diskConfig": "AUTO"}),
        )
        .expect("accepted");
        assert_eq!(r.flavor_ref.0, "42");
        let r: ResizeArg = action_arg("resize", json!({"flavorRef": 7})).expect("accepted");
        assert_eq!(r.flavor_ref.0, "7");
        assert_eq!(
            refused(action_arg::<ResizeArg>("resize", json!({}))),
            "Invalid input for field/attribute resize. 'flavorRef' is a required property"
        );
        assert_eq!(
            refused(action_arg::<ResizeArg>("resize", json!({"flavorRef": ""}))),
            "Invalid input for field/attribute flavorRef. Value: \"\"."
        );
        let r: Option<RescueArg> = action_arg("rescue", json!(null)).expect("null is allowed");
        assert!(r.is_none());
        let r: Option<RescueArg> =
            action_arg("rescue", json!({"adminPass": "p"})).expect("accepted");
        assert_eq!(r.and_then(|r| r.admin_pass).as_deref(), Some("p"));
        assert_eq!(
            refused(action_arg::<Option<RescueArg>>("rescue", json!({"x": 1}))),
            "Invalid input for field/attribute rescue. Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            refused(action_arg::<Option<RescueArg>>("rescue", json!(3))),
            "Invalid input for field/attribute rescue. Value is not an object."
        );
    }

    #[test]
    fn image_and_backup_arguments() {
        let a: ImageArg = action_arg(
            "createImage",
            json!({"name": "snap", "metadata": {"k": "v"}}),
        )
        .expect("accepted");
        let (name, meta) = checked_image("createImage", a.name, a.metadata).expect("checked");
        assert_eq!(
            (name.as_str(), meta.get("k").map(String::as_str)),
            ("snap", Some("v"))
        );
        assert_eq!(
            refused(action_arg::<ImageArg>(
                "createImage",
                json!({"name": "s", "x": 1})
            )),
            "Invalid input for field/attribute createImage. Additional properties are not allowed ('x' was unexpected)"
        );
        assert_eq!(
            refused(action_arg::<ImageArg>(
                "createImage",
                json!({"metadata": {}})
            )),
            "Invalid input for field/attribute createImage. 'name' is a required property"
        );
        assert_eq!(
            refused(checked_image("createImage", " ".into(), None)),
            "Invalid input for field/attribute createImage. 'name' is a required property (1-255 characters)"
        );
        assert!(
            action_arg::<ImageArg>("createImage", json!({"name": "s", "metadata": {"k": 1}}))
                .is_err()
        );
        let b: BackupArg = action_arg(
            "createBackup",
            json!({"name": "b", "backup_type": "daily", "rotation": "2"}),
        )
        .expect("accepted");
        assert_eq!((b.backup_type.as_str(), b.rotation), ("daily", Integer(2)));
        assert_eq!(
            refused(action_arg::<BackupArg>(
                "createBackup",
                json!({"name": "b", "backup_type": "daily"})
            )),
            "Invalid input for field/attribute createBackup. 'rotation' is a required property"
        );
        assert_eq!(
            refused(Integer(-1).within("rotation", 0, 5)),
            "Invalid input for field/attribute rotation. Value: -1. -1 is not in the range 0..5"
        );
    }

    #[test]
    fn rebuild_arguments_by_microversion() {
        let read = |mv: u16, v: serde_json::Value| {
            action_arg::<RebuildArg>("rebuild", v).and_then(|a| {
                a.check_microversion(Mv(mv))?;
                Ok(a)
            })
        };
        let a = read(
            57,
            json!({"imageRef": "http://x/images/abc", "name": "n", "adminPass": null,
                   "metadata": {"k": "v"}, "preserve_ephemeral": true,
                   "OS-DCF:diskConfig": "MANUAL", "description": null,
                   "key_name": "k", "user_data": null}),
        )
        .expect("accepted");
        assert_eq!(a.image_ref, "http://x/images/abc");
        assert_eq!(a.description, Some(None));
        assert_eq!(a.key_name, Some(Some("k".into())));
        assert_eq!(a.user_data, Some(None));
        assert_eq!(a.preserve_ephemeral, Some(true));
        assert_eq!(
            refused(read(1, json!({"name": "n"}))),
            "Invalid input for field/attribute rebuild. 'imageRef' is a required property"
        );
        assert_eq!(
            refused(read(53, json!({"imageRef": "i", "key_name": "k"}))),
            "Invalid input for field/attribute rebuild. Additional properties are not allowed ('key_name' was unexpected)"
        );
        assert_eq!(
            refused(read(57, json!({"imageRef": "i", "personality": []}))),
            "Invalid input for field/attribute rebuild. Additional properties are not allowed ('personality' was unexpected)"
        );
        assert!(read(56, json!({"imageRef": "i", "personality": []})).is_ok());
        assert_eq!(
            refused(read(90, json!({"imageRef": "i", "other": 1}))),
            "Invalid input for field/attribute rebuild. Additional properties are not allowed ('other' was unexpected)"
        );
        assert!(read(1, json!({"imageRef": "i", "preserve_ephemeral": "yes"})).is_err());
    }
}
