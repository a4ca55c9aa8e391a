//! Waiting for server external events, as Nova's
//! `ComputeVirtAPI.wait_for_instance_event`: a build prepares the events it
//! expects (`network-vif-plugged` per port) *before* it plugs the ports, so
//! an event that comes at once is kept; then waits for all of them, bounded
//! by `vif_plugging_timeout`. Events come from `os-server-external-events`
//! and from the network side's notifier (`network::notifier`), both through
//! `servers::dispatch_events`; one nobody waits for is dropped, as Nova does.
//!
//! A leaf: no axum, no database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::network::notifier::ServerEvent;

/// (server, event name, tag).
type Key = (String, String, String);

/// The events builds are waiting for.
#[derive(Debug, Default, Clone)]
pub struct InstanceEvents {
    waiting: Arc<Mutex<HashMap<Key, oneshot::Sender<String>>>>,
}

/// Why a wait ended without every event completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {secs} s waiting for {name} of {}", tags.join(", "))]
    Timeout {
        name: String,
        tags: Vec<String>,
        secs: u64,
    },
    #[error("{name} of {tag} failed")]
    Failed { name: String, tag: String },
}

/// Events one operation expects for one server.
#[derive(Debug)]
pub struct Pending {
    events: InstanceEvents,
    name: String,
    waits: Vec<(String, oneshot::Receiver<String>)>,
}

impl InstanceEvents {
    /// Starts expecting `name` with each of `tags` for `server`.
    pub fn prepare(&self, server: &str, name: &str, tags: &[String]) -> Pending {
        let mut waits = Vec::new();
        if let Ok(mut map) = self.waiting.lock() {
            for tag in tags {
                let (tx, rx) = oneshot::channel();
                map.insert((server.to_string(), name.to_string(), tag.clone()), tx);
                waits.push((tag.clone(), rx));
            }
        }
        Pending {
            events: self.clone(),
            name: name.to_string(),
            waits,
        }
    }

    /// Hands an event to whoever waits for it; false when nobody does.
    pub fn deliver(&self, event: &ServerEvent) -> bool {
        let key = (
            event.server_uuid.clone(),
            event.name.clone(),
            event.tag.clone().unwrap_or_default(),
        );
        let Some(tx) = self.waiting.lock().ok().and_then(|mut m| m.remove(&key)) else {
            return false;
        };
        tx.send(event.status.clone()).is_ok()
    }

    /// How many events are expected (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Pending {
    /// Stops expecting `tag` (a port already `ACTIVE`: Nova waits only for
    /// the ports it expects a DOWN → ACTIVE change of).
    pub fn forget(&mut self, tag: &str) {
        self.waits.retain(|(t, _)| t != tag);
        self.events.sweep();
    }

    /// Whether nothing is expected.
    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    /// Waits for every expected event, `timeout` in all. A `failed` status
    /// ends the wait at once.
    pub async fn wait(mut self, timeout: Duration) -> Result<(), WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing = Vec::new();
        for (tag, rx) in std::mem::take(&mut self.waits) {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(status)) if status == "failed" => {
                    return Err(WaitError::Failed {
                        name: self.name.clone(),
                        tag,
                    });
                }
                Ok(Ok(_)) => {}
                // Replaced by a later prepare, or timed out.
                Ok(Err(_)) | Err(_) => missing.push(tag),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(WaitError::Timeout {
                name: self.name.clone(),
                tags: missing,
                secs: timeout.as_secs(),
            })
        }
    }
}

impl InstanceEvents {
    /// Drops the expectations whose waiter is gone.
    fn sweep(&self) {
        if let Ok(mut map) = self.waiting.lock() {
            map.retain(|_, tx| !tx.is_closed());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.waits.clear();
        self.events.sweep();
    }
}

/// Nova's `VirtualInterfaceCreateException`.
pub const VIF_CREATE_FAILED: &str = "Virtual Interface creation failed";

/// What a build does with the end of its wait for `network-vif-plugged`:
/// with `vif_plugging_is_fatal` a timeout or a `failed` event fails the
/// build with Nova's "Virtual Interface creation failed"; without, it is
/// logged and the build goes on.
pub fn vif_plugging_outcome(
    server: &str,
    result: Result<(), WaitError>,
    fatal: bool,
) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if fatal => {
            tracing::warn!(server, error = %e, "{VIF_CREATE_FAILED}");
            Err(VIF_CREATE_FAILED.to_string())
        }
        Err(e) => {
            tracing::warn!(server, error = %e, "vif_plugging_is_fatal is off: going on");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::notifier::VIF_PLUGGED;

    fn plugged(server: &str, port: &str, ok: bool) -> ServerEvent {
        ServerEvent::port(VIF_PLUGGED, server, port, ok)
    }

    fn ports(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn an_event_before_the_wait_is_kept() {
        let events = InstanceEvents::default();
        let pending = events.prepare("s1", VIF_PLUGGED, &ports(&["p1", "p2"]));
        assert!(events.deliver(&plugged("s1", "p1", true)));
        assert!(events.deliver(&plugged("s1", "p2", true)));
        // Nobody waits for these: dropped.
        assert!(!events.deliver(&plugged("s1", "p1", true)));
        assert!(!events.deliver(&plugged("s2", "p1", true)));
        let started = std::time::Instant::now();
        assert_eq!(pending.wait(Duration::from_secs(5)).await, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(events.len(), 0);
    }

    #[tokio::test]
    async fn an_event_after_the_wait_started_ends_it() {
        let events = InstanceEvents::default();
        let pending = events.prepare("s1", VIF_PLUGGED, &ports(&["p1"]));
        let sender = events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.deliver(&plugged("s1", "p1", true));
        });
        assert_eq!(pending.wait(Duration::from_secs(5)).await, Ok(()));
    }

    #[tokio::test]
    async fn a_missing_event_times_out_naming_the_port() {
        let events = InstanceEvents::default();
        let pending = events.prepare("s1", VIF_PLUGGED, &ports(&["p1", "p2"]));
        events.deliver(&plugged("s1", "p1", true));
        let err = pending
            .wait(Duration::from_millis(30))
            .await
            .expect_err("timeout");
        assert_eq!(
            err,
            WaitError::Timeout {
                name: VIF_PLUGGED.into(),
                tags: ports(&["p2"]),
                secs: 0
            }
        );
        // The expectation went with the waiter.
        assert_eq!(events.len(), 0);
        assert!(!events.deliver(&plugged("s1", "p2", true)));
    }

    #[tokio::test]
    async fn a_timeout_is_fatal_or_not_as_configured() {
        let events = InstanceEvents::default();
        let timed_out = events
            .prepare("s1", VIF_PLUGGED, &ports(&["p1"]))
            .wait(Duration::from_millis(5))
            .await;
        assert!(timed_out.is_err());
        assert_eq!(
            vif_plugging_outcome("s1", timed_out.clone(), true),
            Err(VIF_CREATE_FAILED.to_string())
        );
        assert_eq!(vif_plugging_outcome("s1", timed_out, false), Ok(()));
        assert_eq!(vif_plugging_outcome("s1", Ok(()), true), Ok(()));
        let failed = Err(WaitError::Failed {
            name: VIF_PLUGGED.into(),
            tag: "p1".into(),
        });
        assert!(vif_plugging_outcome("s1", failed.clone(), true).is_err());
        assert_eq!(vif_plugging_outcome("s1", failed, false), Ok(()));
    }

    #[tokio::test]
    async fn a_failed_event_ends_the_wait() {
        let events = InstanceEvents::default();
        let pending = events.prepare("s1", VIF_PLUGGED, &ports(&["p1"]));
        events.deliver(&plugged("s1", "p1", false));
        assert_eq!(
            pending.wait(Duration::from_secs(5)).await,
            Err(WaitError::Failed {
                name: VIF_PLUGGED.into(),
                tag: "p1".into()
            })
        );
    }

    #[tokio::test]
    async fn forgotten_and_dropped_expectations_go() {
        let events = InstanceEvents::default();
        let mut pending = events.prepare("s1", VIF_PLUGGED, &ports(&["p1", "p2"]));
        pending.forget("p1");
        assert_eq!(events.len(), 1);
        assert!(!pending.is_empty());
        pending.forget("p2");
        assert!(pending.is_empty());
        assert_eq!(pending.wait(Duration::from_millis(1)).await, Ok(()));
        let pending = events.prepare("s1", VIF_PLUGGED, &ports(&["p1"]));
        drop(pending);
        assert_eq!(events.len(), 0);
    }
}
