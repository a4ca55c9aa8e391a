//! The catalog: regions, services and endpoints; endpoint groups and policy blobs.

use rusqlite::{Connection, params};
use serde_json::{Map, Value};

use super::{Extra, extra_text, finish};
use crate::db::DbResult;

// ---------------------------------------------------------------- catalog

#[derive(Debug, Clone)]
pub struct Region {
    pub id: String,
    pub description: String,
    pub parent_region_id: Option<String>,
    pub extra: Extra,
}

pub fn upsert_region(conn: &Connection, r: &Region) -> DbResult<()> {
    conn.execute(
        "INSERT INTO regions (id, description, parent_region_id, extra) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET description = ?2, parent_region_id = ?3, extra = ?4",
        params![
            r.id,
            r.description,
            r.parent_region_id,
            extra_text(&r.extra)
        ],
    )?;
    Ok(())
}

pub fn list_regions(conn: &Connection) -> DbResult<Vec<Region>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, description, parent_region_id, extra FROM regions ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Region {
                id: r.get(0)?,
                description: r.get(1)?,
                parent_region_id: r.get(2)?,
                extra: Map::new(),
            },
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_region(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM regions WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone)]
pub struct Service {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub extra: Extra,
}

pub fn upsert_service(conn: &Connection, s: &Service) -> DbResult<()> {
    conn.execute(
        "INSERT INTO services (id, type, name, description, enabled, extra) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET type = ?2, name = ?3, description = ?4, enabled = ?5, extra = ?6",
        params![s.id, s.kind, s.name, s.description, s.enabled, extra_text(&s.extra)],
    )?;
    Ok(())
}

pub fn list_services(conn: &Connection) -> DbResult<Vec<Service>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, type, name, description, enabled, extra FROM services ORDER BY type, id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Service {
                id: r.get(0)?,
                kind: r.get(1)?,
                name: r.get(2)?,
                description: r.get(3)?,
                enabled: r.get(4)?,
                extra: Map::new(),
            },
            r.get::<_, String>(5)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_service(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM services WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub url: String,
    pub region_id: Option<String>,
    pub enabled: bool,
    pub extra: Extra,
}

pub fn upsert_endpoint(conn: &Connection, e: &Endpoint) -> DbResult<()> {
    conn.execute(
        "INSERT INTO endpoints (id, service_id, interface, url, region_id, enabled, extra)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET service_id = ?2, interface = ?3, url = ?4, region_id = ?5,
            enabled = ?6, extra = ?7",
        params![
            e.id,
            e.service_id,
            e.interface,
            e.url,
            e.region_id,
            e.enabled,
            extra_text(&e.extra)
        ],
    )?;
    Ok(())
}

pub fn list_endpoints(conn: &Connection) -> DbResult<Vec<Endpoint>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, service_id, interface, url, region_id, enabled, extra FROM endpoints ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Endpoint {
                id: r.get(0)?,
                service_id: r.get(1)?,
                interface: r.get(2)?,
                url: r.get(3)?,
                region_id: r.get(4)?,
                enabled: r.get(5)?,
                extra: Map::new(),
            },
            r.get::<_, String>(6)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_endpoint(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM endpoints WHERE id = ?1", [id])? > 0)
}

// ---------------------------------------------------------------- policies and endpoint groups

#[derive(Debug, Clone)]
pub struct Policy {
    pub id: String,
    pub kind: String,
    pub blob: String,
    pub extra: Extra,
}

pub fn upsert_policy(conn: &Connection, p: &Policy) -> DbResult<()> {
    conn.execute(
        "INSERT INTO policies (id, type, blob, extra) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET type = ?2, blob = ?3, extra = ?4",
        params![p.id, p.kind, p.blob, extra_text(&p.extra)],
    )?;
    Ok(())
}

pub fn list_policies(conn: &Connection) -> DbResult<Vec<Policy>> {
    let mut stmt = conn.prepare_cached("SELECT id, type, blob, extra FROM policies ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            Policy {
                id: r.get(0)?,
                kind: r.get(1)?,
                blob: r.get(2)?,
                extra: Map::new(),
            },
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| finish(r?, |d, e| d.extra = e)).collect()
}

pub fn delete_policy(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM policies WHERE id = ?1", [id])? > 0)
}

#[derive(Debug, Clone)]
pub struct EndpointGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub filters: Value,
}

pub fn upsert_endpoint_group(conn: &Connection, g: &EndpointGroup) -> DbResult<()> {
    conn.execute(
        "INSERT INTO endpoint_groups (id, name, description, filters) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(id) DO UPDATE SET name = ?2, description = ?3, filters = ?4",
        params![g.id, g.name, g.description, g.filters.to_string()],
    )?;
    Ok(())
}

pub fn list_endpoint_groups(conn: &Connection) -> DbResult<Vec<EndpointGroup>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, name, description, filters FROM endpoint_groups ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            EndpointGroup {
                id: r.get(0)?,
                name: r.get(1)?,
                description: r.get(2)?,
                filters: Value::Null,
            },
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|r| {
        let (mut group, filters) = r?;
        group.filters = serde_json::from_str(&filters)?;
        Ok(group)
    })
    .collect()
}

pub fn delete_endpoint_group(conn: &Connection, id: &str) -> DbResult<bool> {
    Ok(conn.execute("DELETE FROM endpoint_groups WHERE id = ?1", [id])? > 0)
}
