//! A server's states as Nova names them (nova/compute/vm_states.py,
//! task_states.py, power_state.py), the types of the server record's
//! `vm_state`, `task_state` and `power_state`. A leaf: the record (`db::servers`)
//! stores them and compute (`compute::states`, with the table of which action may
//! start in which state) decides with them. In the stored document vm_state and
//! task_state are Nova's names and power_state its number; a name or number that
//! is none of these fails the decoding (`DbError::Json`) instead of passing through.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a string enum: `as_str`, `Display`, `FromStr` and serde all use
/// the names given.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            #[cfg(test)]
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// Nova's name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;

            fn from_str(text: &str) -> Result<Self, UnknownState> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownState(other.to_string())),
                }
            }
        }
    };
}

/// A string that names no state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown state {0}")]
pub struct UnknownState(pub String);

named! {
    /// Nova's vm_state: what the server is (a new record's: building).
    #[derive(Default)]
    VmState {
        Active = "active",
        #[default]
        Building = "building",
        Paused = "paused",
        Suspended = "suspended",
        Stopped = "stopped",
        Rescued = "rescued",
        Resized = "resized",
        SoftDeleted = "soft-delete",
        Deleted = "deleted",
        Error = "error",
        Shelved = "shelved",
        ShelvedOffloaded = "shelved_offloaded",
    }
}

named! {
    /// Nova's task_state: what is being done to the server.
    TaskState {
        Scheduling = "scheduling",
        BlockDeviceMapping = "block_device_mapping",
        Spawning = "spawning",
        PoweringOff = "powering-off",
        PoweringOn = "powering-on",
        Rebooting = "rebooting",
        RebootingHard = "rebooting_hard",
        Pausing = "pausing",
        Unpausing = "unpausing",
        Suspending = "suspending",
        Resuming = "resuming",
        Shelving = "shelving",
        ShelvingOffloading = "shelving_offloading",
        Unshelving = "unshelving",
        ImageSnapshot = "image_snapshot",
        ImageUploading = "image_uploading",
        Rebuilding = "rebuilding",
        ResizePrep = "resize_prep",
        ResizeMigrating = "resize_migrating",
        ResizeFinish = "resize_finish",
        ResizeReverting = "resize_reverting",
        Rescuing = "rescuing",
        Unrescuing = "unrescuing",
        Deleting = "deleting",
    }
}

/// Nova's power_state, stored as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PowerState {
    /// A new record's.
    #[default]
    NoState = 0,
    Running = 1,
    Paused = 3,
    Shutdown = 4,
    Crashed = 6,
    /// Nova's; this cloud shows a suspended server as SHUTDOWN, as Nova's libvirt driver does.
    #[cfg_attr(not(test), allow(dead_code))]
    Suspended = 7,
}

impl PowerState {
    /// The number Nova stores and shows (`OS-EXT-STS:power_state`).
    pub const fn code(self) -> i64 {
        self as i64
    }

    /// The state of a stored number (None for a number Nova does not define).
    pub fn from_code(code: i64) -> Option<PowerState> {
        [
            PowerState::NoState,
            PowerState::Running,
            PowerState::Paused,
            PowerState::Shutdown,
            PowerState::Crashed,
            PowerState::Suspended,
        ]
        .into_iter()
        .find(|p| p.code() == code)
    }
}

/// Stored and shown as Nova's number.
impl Serialize for PowerState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i64(self.code())
    }
}

impl<'de> Deserialize<'de> for PowerState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = i64::deserialize(deserializer)?;
        PowerState::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown power_state {code}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record keeps Nova's names and numbers; anything else fails to decode.
    #[test]
    fn stored_forms() {
        assert_eq!(
            serde_json::to_string(&PowerState::Shutdown).expect("json"),
            "4"
        );
        assert_eq!(
            serde_json::from_str::<PowerState>("1").expect("running"),
            PowerState::Running
        );
        let err = serde_json::from_str::<PowerState>("2").expect_err("no state 2");
        assert!(err.to_string().contains("unknown power_state 2"), "{err}");
        assert_eq!(
            serde_json::from_str::<VmState>("\"soft-delete\"").expect("soft-delete"),
            VmState::SoftDeleted
        );
        assert!(serde_json::from_str::<VmState>("\"ACTIVE\"").is_err());
        assert_eq!(
            serde_json::from_str::<Option<TaskState>>("\"scheduling\"").expect("task"),
            Some(TaskState::Scheduling)
        );
    }
}
