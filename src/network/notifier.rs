//! Neutron's Nova notifier: the server external events (`network-vif-plugged`,
//! `network-vif-unplugged`) the network side tells compute about a port, as
//! Neutron POSTs them to Nova's `os-server-external-events`. Here both
//! services run in one process, so the events go through a channel: the
//! dataplane (or, with the dataplane off, compute's binding of a port, as
//! Neutron's noop agent) sends, and compute's receiver hands each event to
//! the same code its `os-server-external-events` handler runs.
//!
//! A leaf: the serde type both sides share and the channel; it imports
//! nothing of either side.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// `network-vif-plugged`: the port is wired (status `completed`) or could
/// not be (`failed`).
pub const VIF_PLUGGED: &str = "network-vif-plugged";
/// `network-vif-unplugged`: the port's interface went away.
pub const VIF_UNPLUGGED: &str = "network-vif-unplugged";

/// One event of Nova's `os-server-external-events` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEvent {
    pub name: String,
    pub server_uuid: String,
    /// The port id, for network events.
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
}

type Receiver = mpsc::UnboundedReceiver<Vec<ServerEvent>>;

/// The channel from the network side to compute. Cloned into whatever
/// sends; compute takes the receiving end once ([`Notifier::take_receiver`]).
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Vec<ServerEvent>>,
    rx: Arc<Mutex<Option<Receiver>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Notifier {
            tx,
            rx: Arc::new(Mutex::new(Some(rx))),
        }
    }
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// Sends events (nothing when empty; dropped when no one receives, as
    /// Neutron's notifier gives up on a Nova that is not there).
    pub fn send(&self, events: Vec<ServerEvent>) {
        if events.is_empty() {
            return;
        }
        for e in &events {
            tracing::debug!(name = %e.name, server = %e.server_uuid, port = ?e.tag, status = %e.status, "notifying compute");
        }
        let _ = self.tx.send(events);
    }

    /// The receiving end, once (None afterwards).
    pub fn take_receiver(&self) -> Option<Receiver> {
        self.rx.lock().ok().and_then(|mut r| r.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_novas_body() {
        let e: ServerEvent =
            serde_json::from_str(r#"{"name": "network-vif-plugged", "server_uuid": "s"}"#)
                .expect("parse");
        assert_eq!(e.status, "completed");
        assert_eq!(e.tag, None);
        let p = ServerEvent::port(VIF_PLUGGED, "s", "p", false);
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["tag"], "p");
        assert_eq!(v["status"], "failed");
    }

    #[tokio::test]
    async fn sent_events_reach_the_receiver_once_taken() {
        let n = Notifier::default();
        let mut rx = n.take_receiver().expect("first take");
        assert!(n.take_receiver().is_none());
        n.clone()
            .send(vec![ServerEvent::port(VIF_UNPLUGGED, "s", "p", true)]);
        n.send(Vec::new());
        let got = rx.recv().await.expect("event");
        assert_eq!(got[0].name, VIF_UNPLUGGED);
        assert!(rx.try_recv().is_err());
    }
}
