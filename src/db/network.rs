//! Neutron's tables.
//!
//! Every Neutron resource (network, subnet, port, router, security group,
//! rule, floating IP, subnet pool, RBAC policy) is one row of
//! `net_resources`: its kind, id, owning project, the network it belongs to
//! (when it has one) and its whole record as JSON, written and read by the
//! network service's serde types. Filters, sorting and paging are done by the
//! service over these records (every list is bounded by the quotas).
//!
//! What must be unique across records is kept in its own table so SQLite
//! enforces it: fixed IP addresses per network (`net_ip_allocations`) and
//! MAC addresses per network (`net_macs`). Quota overrides per project are
//! in `net_quotas`.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbResult;

/// The network tables (one migration).
pub const SCHEMA: &str = r#"
CREATE TABLE net_resources (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    project_id TEXT NOT NULL,
    parent_id TEXT,
    seq INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX net_resources_kind ON net_resources(kind, seq);
CREATE INDEX net_resources_seq ON net_resources(seq);
CREATE INDEX net_resources_parent ON net_resources(kind, parent_id);
CREATE TABLE net_ip_allocations (
    network_id TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    subnet_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    PRIMARY KEY (network_id, ip_address)
);
CREATE INDEX net_ip_allocations_subnet ON net_ip_allocations(subnet_id);
CREATE INDEX net_ip_allocations_owner ON net_ip_allocations(owner_id);
CREATE TABLE net_macs (
    network_id TEXT NOT NULL,
    mac_address TEXT NOT NULL,
    port_id TEXT NOT NULL,
    PRIMARY KEY (network_id, mac_address)
);
CREATE INDEX net_macs_port ON net_macs(port_id);
CREATE TABLE net_quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit INTEGER NOT NULL,
    PRIMARY KEY (project_id, resource)
);
"#;

/// One stored record.
#[derive(Debug, Clone)]
pub struct Record {
    pub project_id: String,
    pub doc: String,
}

fn record(row: &rusqlite::Row) -> rusqlite::Result<Record> {
    Ok(Record {
        project_id: row.get(0)?,
        doc: row.get(1)?,
    })
}

/// Inserts a record (its id must be new).
pub fn insert(
    conn: &Connection,
    kind: &str,
    id: &str,
    project_id: &str,
    parent_id: Option<&str>,
    doc: &str,
) -> DbResult<()> {
    conn.execute(
        "INSERT INTO net_resources (id, kind, project_id, parent_id, seq, doc)
         VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM net_resources), ?5)",
        params![id, kind, project_id, parent_id, doc],
    )?;
    Ok(())
}

/// Replaces a record's JSON; false when there is no such record.
pub fn update(conn: &Connection, kind: &str, id: &str, doc: &str) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE net_resources SET doc = ?3 WHERE kind = ?1 AND id = ?2",
        params![kind, id, doc],
    )?;
    Ok(n > 0)
}

/// Deletes a record; false when there was none.
pub fn delete(conn: &Connection, kind: &str, id: &str) -> DbResult<bool> {
    let n = conn.execute(
        "DELETE FROM net_resources WHERE kind = ?1 AND id = ?2",
        params![kind, id],
    )?;
    Ok(n > 0)
}

/// One record of a kind.
pub fn get(conn: &Connection, kind: &str, id: &str) -> DbResult<Option<Record>> {
    Ok(conn
        .query_row(
            "SELECT project_id, doc FROM net_resources WHERE kind = ?1 AND id = ?2",
            params![kind, id],
            record,
        )
        .optional()?)
}

/// Every record of a kind, oldest first.
pub fn list(conn: &Connection, kind: &str) -> DbResult<Vec<Record>> {
    let mut stmt = conn
        .prepare_cached("SELECT project_id, doc FROM net_resources WHERE kind = ?1 ORDER BY seq")?;
    let rows = stmt.query_map(params![kind], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The records of a kind below one parent (a network's subnets or ports, a
/// group's rules), oldest first.
pub fn list_by_parent(conn: &Connection, kind: &str, parent_id: &str) -> DbResult<Vec<Record>> {
    let mut stmt = conn.prepare_cached(
        "SELECT project_id, doc FROM net_resources
         WHERE kind = ?1 AND parent_id = ?2 ORDER BY seq",
    )?;
    let rows = stmt.query_map(params![kind, parent_id], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many records of a kind a project owns.
pub fn count_for_project(conn: &Connection, kind: &str, project_id: &str) -> DbResult<i64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM net_resources WHERE kind = ?1 AND project_id = ?2",
        params![kind, project_id],
        |row| row.get(0),
    )?)
}

/// Records an IP address for an owner (a port or a floating IP); false when
/// the address is already taken on the network.
pub fn allocate_ip(
    conn: &Connection,
    network_id: &str,
    ip: &str,
    subnet_id: &str,
    owner_id: &str,
) -> DbResult<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO net_ip_allocations (network_id, ip_address, subnet_id, owner_id)
         VALUES (?1, ?2, ?3, ?4)",
        params![network_id, ip, subnet_id, owner_id],
    )?;
    Ok(n > 0)
}

/// Frees every address of an owner.
pub fn release_ips(conn: &Connection, owner_id: &str) -> DbResult<()> {
    conn.execute(
        "DELETE FROM net_ip_allocations WHERE owner_id = ?1",
        params![owner_id],
    )?;
    Ok(())
}

/// Frees one address of an owner.
pub fn release_ip(conn: &Connection, owner_id: &str, ip: &str) -> DbResult<()> {
    conn.execute(
        "DELETE FROM net_ip_allocations WHERE owner_id = ?1 AND ip_address = ?2",
        params![owner_id, ip],
    )?;
    Ok(())
}

/// The addresses allocated in a subnet.
pub fn subnet_ips(conn: &Connection, subnet_id: &str) -> DbResult<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT ip_address FROM net_ip_allocations WHERE subnet_id = ?1")?;
    let rows = stmt.query_map(params![subnet_id], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records a MAC address for a port; false when the network has it already.
pub fn claim_mac(conn: &Connection, network_id: &str, mac: &str, port_id: &str) -> DbResult<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO net_macs (network_id, mac_address, port_id) VALUES (?1, ?2, ?3)",
        params![network_id, mac, port_id],
    )?;
    Ok(n > 0)
}

/// Frees a port's MAC address.
pub fn release_mac(conn: &Connection, port_id: &str) -> DbResult<()> {
    conn.execute("DELETE FROM net_macs WHERE port_id = ?1", params![port_id])?;
    Ok(())
}

/// A project's quota overrides as (resource, limit).
pub fn quotas(conn: &Connection, project_id: &str) -> DbResult<Vec<(String, i64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT resource, hard_limit FROM net_quotas WHERE project_id = ?1")?;
    let rows = stmt.query_map(params![project_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every project with a quota override.
pub fn quota_projects(conn: &Connection) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT project_id FROM net_quotas")?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets one quota override.
pub fn set_quota(conn: &Connection, project_id: &str, resource: &str, limit: i64) -> DbResult<()> {
    conn.execute(
        "INSERT INTO net_quotas (project_id, resource, hard_limit) VALUES (?1, ?2, ?3)
         ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        params![project_id, resource, limit],
    )?;
    Ok(())
}

/// Drops a project's overrides (back to the defaults).
pub fn delete_quotas(conn: &Connection, project_id: &str) -> DbResult<()> {
    conn.execute(
        "DELETE FROM net_quotas WHERE project_id = ?1",
        params![project_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(SCHEMA).expect("schema");
        conn
    }

    #[test]
    fn records_round_trip_in_order() {
        let c = conn();
        insert(&c, "network", "n1", "p", None, "{}").expect("insert");
        insert(&c, "subnet", "s1", "p", Some("n1"), "{\"a\":1}").expect("insert");
        insert(&c, "network", "n2", "p", None, "{}").expect("insert");
        insert(&c, "network", "n3", "q", None, "{\"b\":2}").expect("insert");
        let owners: Vec<_> = list(&c, "network")
            .expect("list")
            .into_iter()
            .map(|r| r.project_id)
            .collect();
        assert_eq!(owners, ["p", "p", "q"]);
        assert_eq!(list_by_parent(&c, "subnet", "n1").expect("list").len(), 1);
        assert!(update(&c, "subnet", "s1", "{}").expect("update"));
        assert!(delete(&c, "network", "n2").expect("delete"));
        assert!(!delete(&c, "network", "n2").expect("delete"));
        assert_eq!(count_for_project(&c, "network", "p").expect("count"), 1);
    }

    #[test]
    fn an_address_is_taken_once_per_network() {
        let c = conn();
        assert!(allocate_ip(&c, "n", "10.0.0.2", "s", "port1").expect("alloc"));
        assert!(!allocate_ip(&c, "n", "10.0.0.2", "s", "port2").expect("alloc"));
        assert!(allocate_ip(&c, "m", "10.0.0.2", "s2", "port2").expect("alloc"));
        assert_eq!(subnet_ips(&c, "s").expect("ips"), ["10.0.0.2"]);
        release_ips(&c, "port1").expect("release");
        assert!(subnet_ips(&c, "s").expect("ips").is_empty());
        assert!(claim_mac(&c, "n", "fa:16:3e:00:00:01", "p1").expect("mac"));
        assert!(!claim_mac(&c, "n", "fa:16:3e:00:00:01", "p2").expect("mac"));
    }
}
