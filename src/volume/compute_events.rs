//! Cinder's events for Nova, in process: what Cinder sends to Nova's
//! `os-server-external-events` (today `volume-extended` after an online
//! extend), as the shared serde type [`ServerExternalEvent`] over a channel.
//!
//! Compute imports volume, never the other way (tests/module_cycles.rs), so
//! the volume service cannot call compute: it sends the event into the
//! channel that [`super::VolumeConfig`] carries, and compute (which gets the
//! same config) takes the receiving end once and handles each event as its
//! `os-server-external-events` handler would. A leaf: no HTTP, no service.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// `volume-extended`: an attached volume grew; `tag` is the volume's id.
pub const VOLUME_EXTENDED: &str = "volume-extended";

/// One event of Nova's `os-server-external-events` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerExternalEvent {
    /// `volume-extended`, `network-vif-plugged`, ...
    pub name: String,
    /// The server it is for.
    pub server_uuid: String,
    /// What it is about (a volume's id for `volume-extended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `completed` (or `failed`, `in-progress`).
    #[serde(default = "completed")]
    pub status: String,
}

fn completed() -> String {
    "completed".into()
}

impl ServerExternalEvent {
    /// `volume-extended` for `server` about `volume`.
    pub fn volume_extended(server: &str, volume: &str) -> Self {
        ServerExternalEvent {
            name: VOLUME_EXTENDED.into(),
            server_uuid: server.into(),
            tag: Some(volume.into()),
            status: completed(),
        }
    }
}

/// The channel from Cinder to Nova: clones share it. Sending never waits;
/// the receiving end is taken once (by compute's router).
#[derive(Clone)]
pub struct ComputeEvents {
    tx: mpsc::UnboundedSender<ServerExternalEvent>,
    rx: Arc<Mutex<Option<mpsc::UnboundedReceiver<ServerExternalEvent>>>>,
}

impl Default for ComputeEvents {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ComputeEvents {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl std::fmt::Debug for ComputeEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeEvents").finish_non_exhaustive()
    }
}

impl ComputeEvents {
    /// Tells compute; false when nobody listens (no compute service in
    /// this process, or it ended): Nova would not have heard either.
    pub fn send(&self, event: ServerExternalEvent) -> bool {
        self.tx.send(event).is_ok()
    }

    /// The receiving end, the first time it is asked for.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<ServerExternalEvent>> {
        self.rx.lock().ok().and_then(|mut r| r.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_novas_shape_and_reach_the_one_receiver() {
        let e = ServerExternalEvent::volume_extended("srv", "vol");
        assert_eq!(
            serde_json::to_value(&e).expect("json"),
            serde_json::json!({"name": "volume-extended", "server_uuid": "srv", "tag": "vol", "status": "completed"})
        );
        let back: ServerExternalEvent =
            serde_json::from_str(r#"{"name":"volume-extended","server_uuid":"s"}"#).expect("parse");
        assert_eq!(back.status, "completed");
        let events = ComputeEvents::default();
        let other = events.clone();
        let mut rx = other.take_receiver().expect("first take");
        assert!(events.take_receiver().is_none());
        assert!(events.send(e.clone()));
        assert_eq!(rx.try_recv().ok(), Some(e));
        drop(rx);
        assert!(!events.send(ServerExternalEvent::volume_extended("a", "b")));
    }
}
