//! A server's states as Nova names them (nova/compute/vm_states.py,
//! task_states.py, power_state.py) and the one table of which action may
//! start in which state (Nova's `check_instance_state` decorators in
//! nova/compute/api.py). No HTTP here: the lifecycle turns a refusal into
//! its 409.

pub use crate::db::server_states::{PowerState, TaskState, VmState};

/// Why an action may not start.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// Cannot '{action}' instance {id} while it is in {field} {state}
    #[error("Cannot '{action}' instance {id} while it is in {field} {state}")]
    Conflict {
        action: &'static str,
        id: String,
        field: &'static str,
        state: String,
    },
}

/// The server actions that go through the state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
    RebootSoft,
    RebootHard,
    Pause,
    Unpause,
    Suspend,
    Resume,
    Shelve,
    ShelveOffload,
    Unshelve,
    CreateImage,
    CreateBackup,
    Rebuild,
    Resize,
    ConfirmResize,
    RevertResize,
    Rescue,
    Unrescue,
    /// `os-interface` create: a NIC hot-added to a running VM, or recorded for a stopped one.
    AttachInterface,
    /// `os-interface` delete.
    DetachInterface,
    /// `os-volume_attachments` create: a disk hot-added to a running VM, or recorded.
    AttachVolume,
    /// `os-volume_attachments` delete.
    DetachVolume,
}

/// Where an action may start and what it sets.
pub struct Allowed {
    /// The vm_states it may start in (task_state must be none).
    pub vm_states: &'static [VmState],
    /// The task_state it sets while it runs.
    pub task: Option<TaskState>,
}

impl Action {
    /// Every action.
    #[cfg(test)]
    pub const ALL: &'static [Action] = &[
        Action::Stop,
        Action::Start,
        Action::RebootSoft,
        Action::RebootHard,
        Action::Pause,
        Action::Unpause,
        Action::Suspend,
        Action::Resume,
        Action::Shelve,
        Action::ShelveOffload,
        Action::Unshelve,
        Action::CreateImage,
        Action::CreateBackup,
        Action::Rebuild,
        Action::Resize,
        Action::ConfirmResize,
        Action::RevertResize,
        Action::Rescue,
        Action::Unrescue,
        Action::AttachInterface,
        Action::DetachInterface,
        Action::AttachVolume,
        Action::DetachVolume,
    ];

    /// The name Nova records (instance actions) and quotes in a refusal.
    pub fn name(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::RebootSoft | Action::RebootHard => "reboot",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Shelve => "shelve",
            Action::ShelveOffload => "shelveOffload",
            Action::Unshelve => "unshelve",
            Action::CreateImage => "createImage",
            Action::CreateBackup => "createBackup",
            Action::Rebuild => "rebuild",
            Action::Resize => "resize",
            Action::ConfirmResize => "confirmResize",
            Action::RevertResize => "revertResize",
            Action::Rescue => "rescue",
            Action::Unrescue => "unrescue",
            Action::AttachInterface => "attach_interface",
            Action::DetachInterface => "detach_interface",
            Action::AttachVolume => "attach_volume",
            Action::DetachVolume => "detach_volume",
        }
    }

    /// The table: the vm_states each action may start in (with no task
    /// running) and the task_state it sets.
    pub fn allowed(self) -> Allowed {
        use TaskState as T;
        use VmState::*;
        let (vm_states, task): (&'static [VmState], Option<TaskState>) = match self {
            Action::Stop => (&[Active, Error], Some(T::PoweringOff)),
            Action::Start => (&[Stopped], Some(T::PoweringOn)),
            Action::RebootSoft => (&[Active], Some(T::Rebooting)),
            Action::RebootHard => (
                &[Active, Stopped, Paused, Suspended, Error],
                Some(T::RebootingHard),
            ),
            Action::Pause => (&[Active], Some(T::Pausing)),
            Action::Unpause => (&[Paused], Some(T::Unpausing)),
            Action::Suspend => (&[Active], Some(T::Suspending)),
            Action::Resume => (&[Suspended], Some(T::Resuming)),
            Action::Shelve => (&[Active, Stopped, Paused, Suspended], Some(T::Shelving)),
            Action::ShelveOffload => (&[Shelved], Some(T::ShelvingOffloading)),
            Action::Unshelve => (&[Shelved, ShelvedOffloaded], Some(T::Unshelving)),
            Action::CreateImage => (
                &[
                    Active,
                    Stopped,
                    Paused,
                    Suspended,
                    Shelved,
                    ShelvedOffloaded,
                ],
                Some(T::ImageSnapshot),
            ),
            Action::CreateBackup => (&[Active, Stopped], Some(T::ImageSnapshot)),
            Action::Rebuild => (&[Active, Stopped, Error], Some(T::Rebuilding)),
            Action::Resize => (&[Active, Stopped], Some(T::ResizePrep)),
            Action::ConfirmResize => (&[Resized], None),
            Action::RevertResize => (&[Resized], Some(T::ResizeReverting)),
            Action::Rescue => (&[Active, Stopped, Error], Some(T::Rescuing)),
            Action::Unrescue => (&[Rescued], Some(T::Unrescuing)),
            // Nova allows PAUSED too; a paused guest cannot answer the hotplug event (its
            // eject would never come), so this cloud does not.
            Action::AttachInterface | Action::DetachInterface => (&[Active, Stopped], None),
            // Nova allows paused and suspended too; here the VM must either run (a
            // hotplug) or not exist (the next boot, or unshelve, has the disk). Shelved
            // offloaded from 2.20 only (volumes.rs checks the microversion).
            Action::AttachVolume | Action::DetachVolume => {
                (&[Active, Stopped, Shelved, ShelvedOffloaded], None)
            }
        };
        Allowed { vm_states, task }
    }

    /// Checks that the action may start on server `id` in these states;
    /// returns the task_state to set. The refusal is Nova's 409 text.
    pub fn check(
        self,
        id: &str,
        vm_state: VmState,
        task_state: Option<TaskState>,
    ) -> Result<Option<TaskState>, StateError> {
        let allowed = self.allowed();
        if !allowed.vm_states.contains(&vm_state) {
            return Err(StateError::Conflict {
                action: self.name(),
                id: id.to_string(),
                field: "vm_state",
                state: vm_state.to_string(),
            });
        }
        if let Some(task) = task_state {
            return Err(StateError::Conflict {
                action: self.name(),
                id: id.to_string(),
                field: "task_state",
                state: task.to_string(),
            });
        }
        Ok(allowed.task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for v in VmState::ALL {
            assert_eq!(v.as_str().parse::<VmState>(), Ok(*v));
            assert_eq!(
                serde_json::to_string(v).expect("json"),
                format!("\"{}\"", v.as_str())
            );
        }
        for t in TaskState::ALL {
            assert_eq!(t.to_string().parse::<TaskState>(), Ok(*t));
        }
        assert_eq!(
            "shelved_offloaded".parse::<VmState>(),
            Ok(VmState::ShelvedOffloaded)
        );
        assert!("ACTIVE".parse::<VmState>().is_err());
        for p in [0, 1, 3, 4, 6, 7] {
            assert_eq!(PowerState::from_code(p).map(PowerState::code), Some(p));
        }
        assert_eq!(PowerState::from_code(2), None);
    }

    /// The table is Nova's `check_instance_state` for these actions.
    #[test]
    fn the_state_table() {
        use VmState::*;
        let may = |a: Action, v: VmState| a.check("x", v, None).is_ok();
        let from_active: Vec<&str> = Action::ALL
            .iter()
            .filter(|a| may(**a, Active))
            .map(|a| a.name())
            .collect();
        assert_eq!(
            from_active,
            [
                "stop",
                "reboot",
                "reboot",
                "pause",
                "suspend",
                "shelve",
                "createImage",
                "createBackup",
                "rebuild",
                "resize",
                "rescue",
                "attach_interface",
                "detach_interface",
                "attach_volume",
                "detach_volume"
            ]
        );
        let from_rescued: Vec<&str> = Action::ALL
            .iter()
            .filter(|a| may(**a, Rescued))
            .map(|a| a.name())
            .collect();
        assert_eq!(from_rescued, ["unrescue"]);
        assert!(may(Action::Rescue, Stopped) && may(Action::Rescue, Error));
        assert!(!may(Action::Rescue, Paused) && !may(Action::Rescue, Rescued));
        assert!(may(Action::Start, Stopped) && !may(Action::Start, Active));
        assert!(may(Action::RebootHard, Paused) && !may(Action::RebootSoft, Paused));
        assert!(may(Action::Unpause, Paused) && !may(Action::Pause, Paused));
        assert!(may(Action::Resume, Suspended) && !may(Action::Suspend, Suspended));
        assert!(may(Action::Unshelve, ShelvedOffloaded) && !may(Action::Shelve, Shelved));
        assert!(may(Action::ConfirmResize, Resized) && may(Action::RevertResize, Resized));
        for a in Action::ALL {
            assert!(!may(*a, Building) && !may(*a, Deleted), "{a:?}");
        }
        assert_eq!(
            Action::Stop.check("x", Active, None),
            Ok(Some(TaskState::PoweringOff))
        );
        assert_eq!(Action::ConfirmResize.check("x", Resized, None), Ok(None));
    }

    #[test]
    fn refusals_read_as_nova_writes_them() {
        let refuse = |a: Action, v: VmState, t: Option<TaskState>| {
            a.check("i-1", v, t).err().map(|e| e.to_string())
        };
        assert_eq!(
            refuse(Action::Pause, VmState::Stopped, None).as_deref(),
            Some("Cannot 'pause' instance i-1 while it is in vm_state stopped")
        );
        assert_eq!(
            refuse(Action::Stop, VmState::Active, Some(TaskState::Rebooting)).as_deref(),
            Some("Cannot 'stop' instance i-1 while it is in task_state rebooting")
        );
        assert_eq!(
            refuse(Action::Start, VmState::SoftDeleted, None).as_deref(),
            Some("Cannot 'start' instance i-1 while it is in vm_state soft-delete")
        );
    }
}
