//! Nova's server external events, in process: what Neutron and Cinder POST
//! to Nova's `os-server-external-events` (`network-vif-plugged`,
//! `network-vif-unplugged` and `network-vif-deleted` about a port,
//! `volume-extended` about a volume).
//! Here every service runs in one process, so the network side (the
//! dataplane, or compute's binding of a port without it, as Neutron's noop
//! agent) and the volume service send them through a channel instead, and
//! compute takes the receiving end and handles each event as its
//! `os-server-external-events` handler does.
//!
//! A leaf shared by network, dataplane, volume and compute: the serde type
//! of one event and the channel. It imports none of them, so none of them
//! imports another for it.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// `network-vif-plugged`: the port is wired (status `completed`) or could
/// not be (`failed`); `tag` is the port's id.
pub const VIF_PLUGGED: &str = "network-vif-plugged";
/// `network-vif-unplugged`: the port's interface went away.
pub const VIF_UNPLUGGED: &str = "network-vif-unplugged";
/// `network-vif-deleted`: the port bound to the server was deleted through
/// the network API; compute takes its NIC out of the server.
pub const VIF_DELETED: &str = "network-vif-deleted";
/// `volume-extended`: an attached volume grew; `tag` is the volume's id.
pub const VOLUME_EXTENDED: &str = "volume-extended";

/// One event of Nova's `os-server-external-events` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEvent {
    /// `network-vif-plugged`, `volume-extended`, ...
    pub name: String,
    /// The server it is for.
    pub server_uuid: String,
    /// What it is about: a port's id, a volume's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `completed` (Nova's default), `failed` or `in-progress`.
    #[serde(default = "completed")]
    pub status: String,
}

fn completed() -> String {
    "completed".into()
}

impl ServerEvent {
    /// A port's event for the server it is bound to.
    pub fn port(name: &str, server: &str, port: &str, ok: bool) -> ServerEvent {
        ServerEvent {
            name: name.to_string(),
            server_uuid: server.to_string(),
            tag: Some(port.to_string()),
            status: if ok { completed() } else { "failed".into() },
        }
    }

    /// `volume-extended` for `server` about `volume`.
    pub fn volume_extended(server: &str, volume: &str) -> ServerEvent {
        ServerEvent {
            name: VOLUME_EXTENDED.into(),
            server_uuid: server.into(),
            tag: Some(volume.into()),
            status: completed(),
        }
    }
}

type Receiver = mpsc::UnboundedReceiver<Vec<ServerEvent>>;

/// The channel from a service to compute. Clones share it; compute takes
/// the receiving end once ([`ServerEvents::take_receiver`]).
#[derive(Clone)]
pub struct ServerEvents {
    tx: mpsc::UnboundedSender<Vec<ServerEvent>>,
    rx: Arc<Mutex<Option<Receiver>>>,
}

impl Default for ServerEvents {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ServerEvents {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl std::fmt::Debug for ServerEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEvents").finish_non_exhaustive()
    }
}

impl ServerEvents {
    /// Sends events without waiting. Nothing is sent when `events` is
    /// empty; false when nobody receives (no compute service in this
    /// process, or it ended): Neutron's and Cinder's notifiers give up on a
    /// Nova that is not there too.
    pub fn send(&self, events: Vec<ServerEvent>) -> bool {
        if events.is_empty() {
            return true;
        }
        for e in &events {
            tracing::debug!(name = %e.name, server = %e.server_uuid, tag = ?e.tag,
                status = %e.status, "notifying compute");
        }
        self.tx.send(events).is_ok()
    }

    /// The receiving end, the first time it is asked for (None afterwards).
    pub fn take_receiver(&self) -> Option<Receiver> {
        self.rx.lock().ok().and_then(|mut r| r.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_and_write_as_novas_body() {
        let e: ServerEvent =
            serde_json::from_str(r#"{"name": "network-vif-plugged", "server_uuid": "s"}"#)
                .expect("parse");
        assert_eq!(e.status, "completed");
        assert_eq!(e.tag, None);
        let p = ServerEvent::port(VIF_PLUGGED, "s", "p", false);
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["tag"], "p");
        assert_eq!(v["status"], "failed");
        assert_eq!(
            serde_json::to_value(ServerEvent::volume_extended("srv", "vol")).expect("json"),
            serde_json::json!({"name": "volume-extended", "server_uuid": "srv", "tag": "vol", "status": "completed"})
        );
    }

    #[tokio::test]
    async fn sent_events_reach_the_one_receiver() {
        let events = ServerEvents::default();
        let mut rx = events.clone().take_receiver().expect("first take");
        assert!(events.take_receiver().is_none());
        assert!(events.send(vec![ServerEvent::port(VIF_UNPLUGGED, "s", "p", true)]));
        assert!(events.send(Vec::new()));
        let got = rx.recv().await.expect("event");
        assert_eq!(got[0].name, VIF_UNPLUGGED);
        assert!(rx.try_recv().is_err());
        drop(rx);
        assert!(!events.send(vec![ServerEvent::volume_extended("a", "b")]));
    }
}
