//! One async lock per server: the lifecycle runs the operations on a server
//! (build, actions, delete, the monitor's checks) one at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The per-server operation locks.
#[derive(Default)]
pub struct ServerLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ServerLocks {
    /// The operation lock of server `id`.
    pub fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    /// Forgets the lock of a deleted server.
    pub fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
