//! Nova's servers and instance actions.
//!
//! A server is stored as one JSON document (`doc`) next to the few columns
//! lists filter and sort on; the document is the whole record, loaded and
//! stored whole. Deleted servers stay as rows with `deleted = 1` (Nova's soft
//! delete) so usage reports and instance actions still find them.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::DbResult;
use super::server_states::{PowerState, TaskState, VmState};

/// The server tables (migration 4).
pub const SCHEMA: &str = r#"
CREATE TABLE compute_servers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX compute_servers_by_project ON compute_servers (project_id, deleted);
CREATE TABLE compute_instance_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    message TEXT,
    events TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX compute_instance_actions_by_instance ON compute_instance_actions (instance_id);
"#;

/// The flavor a server was built with, copied at build time as Nova does
/// (later changes to the flavor do not change the server).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct FlavorCopy {
    pub id: String,
    pub name: String,
    pub ram: i64,
    pub vcpus: i64,
    pub disk: i64,
    pub ephemeral: i64,
    pub swap: i64,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
}

impl From<&super::compute::Flavor> for FlavorCopy {
    fn from(f: &super::compute::Flavor) -> Self {
        FlavorCopy {
            id: f.id.clone(),
            name: f.name.clone(),
            ram: f.ram,
            vcpus: f.vcpus,
            disk: f.disk,
            ephemeral: f.ephemeral,
            swap: f.swap,
            extra_specs: f.extra_specs.clone(),
        }
    }
}

/// A resize of a server, as Nova records it in its migrations table.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MigrationRecord {
    pub id: i64,
    pub uuid: String,
    /// `resize`.
    pub kind: String,
    /// `finished`, `confirmed`, `reverted`, `error`.
    pub status: String,
    pub old_flavor_id: String,
    pub new_flavor_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a rescued server boots instead of its own image (Nova's rescue): the
/// rescue image's boot details; the server's own root disk is the second disk.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RescueBoot {
    pub image_id: String,
    #[serde(default)]
    pub kernel_id: Option<String>,
    #[serde(default)]
    pub ramdisk_id: Option<String>,
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Nova's stable device rescue (2.87+, an image with `hw_rescue_device`
    /// or `hw_rescue_bus`): the rescue disk comes after the server's disks.
    #[serde(default)]
    pub stable: bool,
}

/// One of a server's ports, as compute keeps it (the port record itself is
/// the network service's).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ServerPort {
    pub port_id: String,
    pub network_id: String,
    /// The port's MAC, which the guest's NIC gets.
    pub mac: String,
    /// Made by compute for this server (deleted with it), not passed in.
    #[serde(default)]
    pub created: bool,
    /// The device tag asked for (2.42+).
    #[serde(default)]
    pub tag: Option<String>,
}

/// A Cinder volume attached to a server (Nova's block device mapping of a
/// volume attached through `os-volume_attachments`): the file the VMM opens
/// is the volume service's, recorded here so every boot has the disk.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ServerVolume {
    pub volume_id: String,
    /// The volume's attachment record in Cinder.
    pub attachment_id: String,
    /// The device name reported (`/dev/vdX`).
    pub device: String,
    /// The volume's backing file.
    pub path: std::path::PathBuf,
    /// The device tag asked for (2.49+).
    #[serde(default)]
    pub tag: Option<String>,
    /// Delete the volume with the server (2.79+).
    #[serde(default)]
    pub delete_on_termination: bool,
    /// The block device mapping's boot index: `Some(0)` is the root disk of
    /// a volume-backed server; None for volumes attached later.
    #[serde(default)]
    pub boot_index: Option<i64>,
    /// Attached read-only (Cinder's `readonly` flag: attach mode `ro`).
    #[serde(default)]
    pub read_only: bool,
}

/// A local disk of a server besides its root (Nova's `blank → local` block
/// device mappings and the flavor's `swap` and `OS-FLV-EXT-DATA:ephemeral`):
/// a sparse file in the instance directory, attached after the root disk.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct LocalDisk {
    /// `swap`, or `ephemeral` (its index among the server's ephemeral disks
    /// names its file: `disk.eph0`, `disk.eph1`, ...).
    pub kind: LocalDiskKind,
    /// MiB (swap sizes are MiB in Nova; ephemeral GiB × 1024).
    pub size_mib: i64,
    /// The device name reported (`/dev/vdX`).
    pub device: String,
    /// The `guest_format` asked for (`swap`, or a filesystem the guest makes).
    #[serde(default)]
    pub guest_format: Option<String>,
    /// Sized by the flavor (no mapping named a size): a resize follows the
    /// new flavor.
    #[serde(default)]
    pub from_flavor: bool,
}

/// What a [`LocalDisk`] is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocalDiskKind {
    #[default]
    Ephemeral,
    Swap,
}

impl LocalDisk {
    /// The file's name in the instance directory, given the disk's place
    /// among the server's local disks.
    pub fn file_name(disks: &[LocalDisk], index: usize) -> String {
        match disks.get(index).map(|d| d.kind) {
            Some(LocalDiskKind::Swap) => "disk.swap".into(),
            _ => {
                let n = disks[..index.min(disks.len())]
                    .iter()
                    .filter(|d| d.kind == LocalDiskKind::Ephemeral)
                    .count();
                format!("disk.eph{n}")
            }
        }
    }
}

/// One server, whole.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    /// Empty when the server boots from a volume.
    pub image_id: String,
    pub flavor: FlavorCopy,
    /// The flavor before a resize, until it is confirmed or reverted.
    #[serde(default)]
    pub old_flavor: Option<FlavorCopy>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(default)]
    pub key_data: Option<String>,
    /// Base64 user data as given.
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Nova's vm_state (stored as its name).
    pub vm_state: VmState,
    #[serde(default)]
    pub task_state: Option<TaskState>,
    /// Nova's power_state (stored as its number).
    pub power_state: PowerState,
    #[serde(default)]
    pub locked: bool,
    /// `owner` or `admin`: who locked it.
    #[serde(default)]
    pub locked_by: Option<String>,
    #[serde(default)]
    pub locked_reason: Option<String>,
    /// `{"code", "message", "details", "created"}` when in ERROR.
    #[serde(default)]
    pub fault: Option<Value>,
    #[serde(default)]
    pub config_drive: bool,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub access_ipv4: String,
    #[serde(default)]
    pub access_ipv6: String,
    pub reservation_id: String,
    #[serde(default)]
    pub launch_index: i64,
    #[serde(default)]
    pub server_group: Option<String>,
    /// The host holding the server's resources (None: not scheduled, or offloaded).
    #[serde(default)]
    pub host: Option<String>,
    /// Boot details resolved from the image at build time.
    #[serde(default)]
    pub kernel_id: Option<String>,
    #[serde(default)]
    pub ramdisk_id: Option<String>,
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Seconds the guest gets to power off cleanly (image `os_shutdown_timeout`).
    #[serde(default)]
    pub shutdown_timeout: Option<i64>,
    /// The image holding the disk of a shelved (offloaded) server.
    #[serde(default)]
    pub shelved_image_id: Option<String>,
    /// Resizes, oldest first.
    #[serde(default)]
    pub migrations: Vec<MigrationRecord>,
    /// Pid of the server's VMM while it runs.
    #[serde(default)]
    pub vmm_pid: Option<i64>,
    /// The server's Neutron ports, in NIC order: those made for it at
    /// create are deleted with it, those the user passed in only unbound.
    #[serde(default)]
    pub ports: Vec<ServerPort>,
    /// Volumes attached (os-volume_attachments), in attach order: every boot
    /// has them after the root disk and the config drive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServerVolume>,
    /// Local swap and ephemeral disks, in device order (ephemerals, then
    /// swap): after the root disk, before the config drive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_disks: Vec<LocalDisk>,
    /// Set while the server is rescued (or being rescued): what it boots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescue: Option<RescueBoot>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub launched_at: Option<i64>,
    #[serde(default)]
    pub terminated_at: Option<i64>,
    #[serde(default)]
    pub deleted: bool,
}

impl Server {
    /// The volume that is this server's root disk (boot index 0), when the
    /// server is volume-backed.
    pub fn root_volume(&self) -> Option<&ServerVolume> {
        self.volumes.iter().find(|v| v.boot_index == Some(0))
    }
}

/// Inserts a new server.
pub fn insert_server(conn: &Connection, server: &Server) -> DbResult<()> {
    conn.execute(
        "INSERT INTO compute_servers (id, project_id, user_id, deleted, created_at, doc) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            server.id,
            server.project_id,
            server.user_id,
            server.deleted,
            server.created_at,
            serde_json::to_string(server)?
        ],
    )?;
    Ok(())
}

/// Stores a server whole; false when it does not exist.
pub fn update_server(conn: &Connection, server: &Server) -> DbResult<bool> {
    let n = conn.execute(
        "UPDATE compute_servers SET deleted = ?2, doc = ?3 WHERE id = ?1",
        params![server.id, server.deleted, serde_json::to_string(server)?],
    )?;
    Ok(n > 0)
}

/// A server by id, deleted ones included.
pub fn get_server(conn: &Connection, id: &str) -> DbResult<Option<Server>> {
    let doc: Option<String> = conn
        .query_row(
            "SELECT doc FROM compute_servers WHERE id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()?;
    doc.as_deref().map(decode_server).transpose()
}

/// Servers, oldest first: one project's (or every project's with `None`),
/// deleted ones only when asked.
pub fn list_servers(
    conn: &Connection,
    project_id: Option<&str>,
    include_deleted: bool,
) -> DbResult<Vec<Server>> {
    list_servers_with(conn, project_id, include_deleted, |_, doc| {
        decode_server(doc)
    })
}

/// The servers [`list_servers`] returns, in its order, each handed to `each`
/// as its id and stored document text, borrowed from SQLite (no copy): a
/// caller that keeps decoded servers decodes only the documents that changed.
pub fn list_servers_with<T>(
    conn: &Connection,
    project_id: Option<&str>,
    include_deleted: bool,
    mut each: impl FnMut(&str, &str) -> DbResult<T>,
) -> DbResult<Vec<T>> {
    let mut sql = String::from("SELECT id, doc FROM compute_servers WHERE 1 = 1");
    if project_id.is_some() {
        sql.push_str(" AND project_id = ?1");
    }
    if !include_deleted {
        sql.push_str(" AND deleted = 0");
    }
    sql.push_str(" ORDER BY created_at, rowid");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = match project_id {
        Some(p) => stmt.query(params![p])?,
        None => stmt.query([])?,
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id = row.get_ref(0)?.as_str().map_err(text_column)?;
        let doc = row.get_ref(1)?.as_str().map_err(text_column)?;
        out.push(each(id, doc)?);
    }
    Ok(out)
}

/// A server from its stored document text.
pub fn decode_server(doc: &str) -> DbResult<Server> {
    Ok(serde_json::from_str(doc)?)
}

/// A TEXT column that held something else (or invalid UTF-8).
fn text_column(e: rusqlite::types::FromSqlError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

// ---------------------------------------------------------- instance actions

/// One event of an instance action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionEvent {
    pub event: String,
    pub start_time: i64,
    #[serde(default)]
    pub finish_time: Option<i64>,
    /// `Success` or `Error`, none while running.
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
}

/// One instance action (create, stop, reboot, ...).
#[derive(Debug, Clone)]
pub struct InstanceAction {
    pub id: i64,
    pub instance_id: String,
    pub request_id: String,
    pub action: String,
    pub project_id: String,
    pub user_id: String,
    pub start_time: i64,
    pub updated_at: i64,
    pub message: Option<String>,
    pub events: Vec<ActionEvent>,
}

/// Records a new action; returns its row id.
pub fn insert_action(conn: &Connection, a: &InstanceAction) -> DbResult<i64> {
    conn.execute(
        "INSERT INTO compute_instance_actions \
         (instance_id, request_id, action, project_id, user_id, start_time, updated_at, message, events) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            a.instance_id,
            a.request_id,
            a.action,
            a.project_id,
            a.user_id,
            a.start_time,
            a.updated_at,
            a.message,
            serde_json::to_string(&a.events)?
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Stores an action's events, message and update time.
pub fn update_action(conn: &Connection, a: &InstanceAction) -> DbResult<()> {
    conn.execute(
        "UPDATE compute_instance_actions SET updated_at = ?2, message = ?3, events = ?4 WHERE id = ?1",
        params![a.id, a.updated_at, a.message, serde_json::to_string(&a.events)?],
    )?;
    Ok(())
}

fn action_from_row(row: &rusqlite::Row) -> rusqlite::Result<(InstanceAction, String)> {
    Ok((
        InstanceAction {
            id: row.get(0)?,
            instance_id: row.get(1)?,
            request_id: row.get(2)?,
            action: row.get(3)?,
            project_id: row.get(4)?,
            user_id: row.get(5)?,
            start_time: row.get(6)?,
            updated_at: row.get(7)?,
            message: row.get(8)?,
            events: Vec::new(),
        },
        row.get(9)?,
    ))
}

const ACTION_COLUMNS: &str = "id, instance_id, request_id, action, project_id, user_id, \
    start_time, updated_at, message, events";

/// A server's actions, newest first.
pub fn list_actions(conn: &Connection, instance_id: &str) -> DbResult<Vec<InstanceAction>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ACTION_COLUMNS} FROM compute_instance_actions WHERE instance_id = ?1 \
         ORDER BY start_time DESC, id DESC"
    ))?;
    let rows: Vec<(InstanceAction, String)> = stmt
        .query_map(params![instance_id], action_from_row)?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(mut a, events)| {
            a.events = serde_json::from_str(&events)?;
            Ok(a)
        })
        .collect()
}

/// The newest action of a server with this request id, else of this kind.
pub fn get_action(
    conn: &Connection,
    instance_id: &str,
    request_id: &str,
) -> DbResult<Option<InstanceAction>> {
    Ok(list_actions(conn, instance_id)?
        .into_iter()
        .find(|a| a.request_id == request_id))
}

// ------------------------------------------------------------------ usage

/// What the servers placed on a host use: vCPUs, RAM (MiB), disk (GiB).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostUsage {
    pub vcpus: i64,
    pub ram_mb: i64,
    pub disk_gb: i64,
}

impl HostUsage {
    /// The usage of those of `servers` that are placed (have a host) and not deleted.
    pub fn of(servers: &[Server]) -> HostUsage {
        servers
            .iter()
            .filter(|s| !s.deleted && s.host.is_some())
            .fold(HostUsage::default(), |u, s| {
                let f = &s.flavor;
                // A volume-backed server's root disk is a volume, not host disk.
                let root = if s.root_volume().is_some() { 0 } else { f.disk };
                HostUsage {
                    vcpus: u.vcpus + f.vcpus,
                    ram_mb: u.ram_mb + f.ram,
                    disk_gb: u.disk_gb + root + f.ephemeral + f.swap / 1024,
                }
            })
    }
}

/// The host's usage by every placed server but `except`.
pub fn host_usage(conn: &Connection, except: Option<&str>) -> DbResult<HostUsage> {
    let servers: Vec<Server> = list_servers(conn, None, false)?
        .into_iter()
        .filter(|s| except != Some(s.id.as_str()))
        .collect();
    Ok(HostUsage::of(&servers))
}

/// Quota usage of a project (or one user of it): instances, cores, ram.
pub fn quota_usage(
    conn: &Connection,
    project_id: &str,
    user_id: Option<&str>,
) -> DbResult<HashMap<String, i64>> {
    let servers = list_servers(conn, Some(project_id), false)?;
    let mut instances = 0;
    let mut cores = 0;
    let mut ram = 0;
    for s in servers
        .iter()
        .filter(|s| user_id.is_none_or(|u| s.user_id == u))
    {
        instances += 1;
        cores += s.flavor.vcpus;
        ram += s.flavor.ram;
    }
    Ok(HashMap::from([
        ("instances".to_string(), instances),
        ("cores".to_string(), cores),
        ("ram".to_string(), ram),
    ]))
}
