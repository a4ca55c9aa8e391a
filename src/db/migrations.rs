//! Versioned schema migrations, applied in order at start-up.
//!
//! `PRAGMA user_version` records how many migrations have run. A migration
//! is never edited once released: add a new one instead.

use rusqlite::Connection;

use super::{DbError, DbResult};

/// Every migration, in order. Index + 1 is the schema version it produces.
const MIGRATIONS: &[&str] = &[
    // 1: Keystone.
    super::identity::SCHEMA,
    // 2: Glance.
    super::image::SCHEMA,
    // 3: Nova.
    super::compute::SCHEMA,
    // 4: Nova servers and instance actions.
    super::servers::SCHEMA,
    // 5: Glance keeps deleted images (ids are never reused).
    super::image::SOFT_DELETE,
    // 6: Keystone's unified limits (registered limits and project limits).
    super::limits::SCHEMA,
    // 7: Keystone's lockout counters on users.
    super::identity::LOCKOUT_SCHEMA,
    // 8: Glance's image cache (queued and cached images).
    super::image_cache::SCHEMA,
    // 9: Keystone's access rules, OS-EP-FILTER associations, domain configs, password history.
    super::identity::extensions::SCHEMA,
    // 10: Keystone's OS-FEDERATION (identity providers, mappings, shadow users).
    super::identity::FEDERATION_SCHEMA,
    // 11: Keystone's trusts (OS-TRUST).
    super::identity::trusts::SCHEMA,
    // 12: Neutron (networks, subnets, ports, routers, security groups, IPAM).
    super::network::SCHEMA,
    // 13: Cinder's volumes, snapshots, volume types, QoS specs and quotas.
    super::volume::SCHEMA,
    // 14: Cinder's backups and volume transfers.
    super::volume_records::SCHEMA,
    // 15: yunhe's own settings (the first-start networks' marker).
    super::settings::SCHEMA,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration the file has not seen yet, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> DbResult<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
