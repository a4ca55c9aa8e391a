//! Compute's answer to the metadata service (`dataplane::metadata::
//! InstanceSource`): what an instance's config drive says of it (uuid,
//! name, hostname, project, zone, key pair, launch index, metadata, user
//! data, `network_data.json`), read from the server record when a guest
//! asks. The dataplane does not import compute; server.rs hands this to it
//! once at start-up.

use std::sync::Arc;

use base64::Engine;

use crate::dataplane::metadata::{InstanceData, InstanceSource};
use crate::db::Db;
use crate::db::DbError;
use crate::db::servers::{self as db, Server};

/// Reads instances from the state file.
struct Records {
    db: Db,
}

/// The source server.rs hands to the dataplane.
pub fn source(db: Db) -> Arc<dyn InstanceSource> {
    Arc::new(Records { db })
}

/// What the metadata service serves about a server (as its config drive).
pub fn instance_data(server: &Server, network_data: Option<serde_json::Value>) -> InstanceData {
    let mut public_keys = std::collections::BTreeMap::new();
    if let (Some(name), Some(data)) = (&server.key_name, &server.key_data) {
        public_keys.insert(name.clone(), data.clone());
    }
    InstanceData {
        uuid: server.id.clone(),
        name: server.name.clone(),
        hostname: server.hostname.clone(),
        project_id: server.project_id.clone(),
        availability_zone: server
            .availability_zone
            .clone()
            .unwrap_or_else(|| super::hosts::ZONE.into()),
        launch_index: u32::try_from(server.launch_index).unwrap_or(0),
        instance_type: server.flavor.name.clone(),
        public_keys,
        meta: server.metadata.clone(),
        user_data: server.user_data.as_ref().and_then(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .ok()
        }),
        network_data,
    }
}

impl InstanceSource for Records {
    fn instance(&self, id: &str) -> Option<InstanceData> {
        let wanted = id.to_string();
        let found = self.db.read_blocking(move |conn| {
            let Some(server) = db::get_server(conn, &wanted)? else {
                return Ok(None);
            };
            if server.deleted {
                return Ok(None);
            }
            let network = super::networking::network_data(conn, &server)
                .map_err(|e| DbError::Task(e.to_string()))?;
            Ok(Some(instance_data(&server, Some(network))))
        });
        match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(server = %id, error = %e, "metadata: cannot read the server");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_data_is_the_config_drives() {
        let server = Server {
            id: "s1".into(),
            name: "vm".into(),
            hostname: "vm".into(),
            project_id: "p".into(),
            key_name: Some("k".into()),
            key_data: Some("ssh-ed25519 AAAA".into()),
            user_data: Some("aGVsbG8=".into()),
            launch_index: 2,
            ..Default::default()
        };
        let data = instance_data(&server, None);
        assert_eq!(data.uuid, "s1");
        assert_eq!(data.availability_zone, "nova");
        assert_eq!(data.launch_index, 2);
        assert_eq!(
            data.public_keys.get("k").map(String::as_str),
            Some("ssh-ed25519 AAAA")
        );
        assert_eq!(data.user_data.as_deref(), Some(&b"hello"[..]));
    }
}
