//! Server create (`POST /servers`), in steps: [`parse_create`] reads the
//! body as Nova's schema; [`resolve`] checks the image and the flavor
//! against each other and finds what the image boots; [`record`] is the one
//! transaction that enforces quotas, plans the ports, schedules on this one
//! host and inserts the servers with their instance actions; [`start`] puts
//! the scheduled ones on the build path; [`accepted`] renders the 202.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::block_devices::{self, BdmV2, LegacyBdm, Mapping};
use super::build::{self, BootInfo};
use super::hosts::Capacity;
use super::iso_time;
use super::networking::{NetworksArg, SecurityGroupRef};
use super::quotas::{self, ServerRequest};
use super::request::{self, Boolean, DiskConfig, Integer, Text, checked, present, unexpected};
use super::states::{PowerState, TaskState, VmState};
use super::validate::{
    checked_create_name, checked_hostname, checked_ipv4, checked_ipv6, checked_len,
    checked_metadata, checked_tags, last_segment, sanitize_hostname,
};
use super::{AllocationRatios, ComputeError, ComputeResult, ComputeState, Mv, project_of};
use crate::db::compute::{self as store, Flavor};
use crate::db::now_unix;
use crate::db::servers::{self as db, FlavorCopy, Server};
use crate::http::{RequestId, json_response};
use crate::identity::Auth;

type S = Arc<ComputeState>;

fn random_password() -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Everything a create needs, validated.
#[derive(Debug)]
struct CreateRequest {
    name: String,
    /// The root disk's image; empty for a volume-backed server.
    image_id: String,
    /// The block device mappings to volumes.
    block_devices: Vec<Mapping>,
    /// The `blank → local` mappings (swap, ephemeral disks).
    local: Vec<block_devices::LocalRequest>,
    flavor_id: String,
    key_name: Option<String>,
    user_data: Option<String>,
    description: Option<String>,
    metadata: BTreeMap<String, String>,
    tags: Vec<String>,
    config_drive: bool,
    availability_zone: Option<String>,
    min_count: i64,
    max_count: i64,
    return_reservation_id: bool,
    admin_pass: Option<String>,
    access_ipv4: String,
    access_ipv6: String,
    group: Option<String>,
    hostname: Option<String>,
    networks: super::networking::Requested,
    security_groups: Vec<String>,
}

/// `POST /servers`'s body (Nova's `servers.create` and its microversion
/// variants). The scheduler hints sit beside `server`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    server: ServerCreate,
    #[serde(rename = "os:scheduler_hints", default)]
    hints: Option<SchedulerHints>,
    #[serde(rename = "OS-SCH-HNT:scheduler_hints", default)]
    legacy_hints: Option<SchedulerHints>,
}

/// Nova's `_hints`: other hints are accepted and left to a scheduler this
/// one-host cloud does not have.
#[derive(Debug, Default, Deserialize)]
struct SchedulerHints {
    /// The server group: its id, or a list whose first id counts.
    #[serde(default)]
    group: Option<GroupHint>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GroupHint {
    One(String),
    Many(Vec<String>),
}

/// A file injected into the guest (below 2.57): accepted and not injected
/// (the config drive carries user data instead).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonalityFile {
    #[serde(rename = "path")]
    _path: String,
    #[serde(rename = "contents")]
    _contents: String,
}

/// The `server` of a create. Members a microversion adds or removes are
/// declared here and checked by [`ServerCreate::check_microversion`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerCreate {
    name: String,
    /// `null` or empty for a volume-backed server.
    #[serde(rename = "imageRef", default)]
    image_ref: Option<Text>,
    #[serde(rename = "flavorRef")]
    flavor_ref: FlavorRef,
    #[serde(rename = "adminPass", default)]
    admin_pass: Option<String>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "present")]
    networks: Option<NetworksArg>,
    /// Accepted and ignored: the root disk is always the flavor's size.
    #[serde(rename = "OS-DCF:diskConfig", default)]
    _disk_config: Option<DiskConfig>,
    #[serde(rename = "accessIPv4", default)]
    access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6", default)]
    access_ipv6: Option<String>,
    /// Below 2.57.
    #[serde(default, deserialize_with = "present")]
    personality: Option<Vec<PersonalityFile>>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default, deserialize_with = "present")]
    block_device_mapping: Option<Vec<LegacyBdm>>,
    #[serde(default, deserialize_with = "present")]
    block_device_mapping_v2: Option<Vec<BdmV2>>,
    #[serde(default)]
    config_drive: Option<Boolean>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    min_count: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    max_count: Option<Integer>,
    #[serde(default)]
    return_reservation_id: Option<Boolean>,
    #[serde(default, deserialize_with = "present")]
    security_groups: Option<Vec<SecurityGroupRef>>,
    #[serde(default)]
    user_data: Option<String>,
    /// From 2.19; present, possibly `null`.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    /// From 2.52.
    #[serde(default, deserialize_with = "present")]
    tags: Option<Vec<String>>,
    /// From 2.63; accepted and ignored (no certificate validation).
    #[serde(default, deserialize_with = "present")]
    trusted_image_certificates: Option<Option<Vec<String>>>,
    /// From 2.74; accepted and ignored (there is one host).
    #[serde(default, deserialize_with = "present")]
    host: Option<String>,
    #[serde(default, deserialize_with = "present")]
    hypervisor_hostname: Option<String>,
    /// From 2.90.
    #[serde(default, deserialize_with = "present")]
    hostname: Option<Option<String>>,
}

impl ServerCreate {
    /// Refuses the members the caller's microversion does not have.
    fn check_microversion(&self, mv: Mv) -> ComputeResult<()> {
        let gated = [
            ("description", self.description.is_some(), mv.at_least(19)),
            ("tags", self.tags.is_some(), mv.at_least(52)),
            ("personality", self.personality.is_some(), !mv.at_least(57)),
            (
                "trusted_image_certificates",
                self.trusted_image_certificates.is_some(),
                mv.at_least(63),
            ),
            ("host", self.host.is_some(), mv.at_least(74)),
            (
                "hypervisor_hostname",
                self.hypervisor_hostname.is_some(),
                mv.at_least(74),
            ),
            ("hostname", self.hostname.is_some(), mv.at_least(90)),
        ];
        match gated.iter().find(|(_, given, allowed)| *given && !*allowed) {
            Some((member, _, _)) => Err(unexpected("server", member)),
            None => Ok(()),
        }
    }
}

/// `flavorRef`: a flavor's id (or a link ending in one), or a number.
#[derive(Debug)]
struct FlavorRef(String);

impl<'de> Deserialize<'de> for FlavorRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "is not valid under any of the given schemas",
            |v| match v {
                Value::String(r) => Some(FlavorRef(last_segment(r))),
                Value::Number(n) => Some(FlavorRef(n.to_string())),
                _ => None,
            },
        )
    }
}

fn parse_create(mv: Mv, body: &Bytes) -> ComputeResult<CreateRequest> {
    let CreateBody {
        server,
        hints,
        legacy_hints,
    } = request::body(body)?;
    server.check_microversion(mv)?;
    let name = checked_create_name(server.name)?;
    let image_id = server
        .image_ref
        .map(|r| last_segment(&r.0))
        .unwrap_or_default();
    let flavor_id = server.flavor_ref.0;
    if flavor_id.is_empty() {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute server. 'flavorRef' is a required property".into(),
        ));
    }
    let key_name = checked_len("key_name", server.key_name, 255)?;
    let user_data = match checked_len("user_data", server.user_data, 65535)? {
        Some(data) => {
            if base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .is_err()
            {
                return Err(ComputeError::BadRequest(
                    "Invalid input for field/attribute user_data. Value is not base64 encoded"
                        .into(),
                ));
            }
            Some(data)
        }
        None => None,
    };
    let description = checked_len("description", server.description.flatten(), 255)?;
    let metadata = match server.metadata {
        Some(m) => checked_metadata(m, "metadata")?,
        None => BTreeMap::new(),
    };
    let tags = match server.tags {
        Some(t) => checked_tags(t)?,
        None => Vec::new(),
    };
    let config_drive = server.config_drive.is_some_and(|b| b.0);
    let availability_zone =
        checked_len("availability_zone", server.availability_zone, 255)?.filter(|z| !z.is_empty());
    if let Some(zone) = &availability_zone {
        let zone_name = zone.split(':').next().unwrap_or("");
        if zone_name != super::hosts::ZONE {
            return Err(ComputeError::BadRequest(format!(
                "The requested availability zone is not available: {zone}"
            )));
        }
    }
    let min_count = match server.min_count {
        Some(v) => v.within("min_count", 1, 1000)?,
        None => 1,
    };
    let max_count = match server.max_count {
        Some(v) => v.within("max_count", 1, 1000)?,
        None => min_count,
    };
    if max_count < min_count {
        return Err(ComputeError::BadRequest(
            "min_count must be <= max_count".into(),
        ));
    }
    let given = block_devices::Given {
        v2: server.block_device_mapping_v2,
        legacy: server.block_device_mapping,
    };
    let block_devices = block_devices::parse(mv, given, &image_id, max_count)?;
    let networks = super::networking::parse(mv, server.networks, max_count)?;
    let security_groups = super::networking::parse_security_groups(server.security_groups)?;
    let return_reservation_id = server.return_reservation_id.is_some_and(|b| b.0);
    let admin_pass = checked_len("adminPass", server.admin_pass, 255)?;
    let access_ipv4 =
        checked_ipv4(checked_len("accessIPv4", server.access_ipv4, 64)?.unwrap_or_default())?;
    let access_ipv6 =
        checked_ipv6(checked_len("accessIPv6", server.access_ipv6, 64)?.unwrap_or_default())?;
    let group = match hints.or(legacy_hints).and_then(|h| h.group) {
        Some(GroupHint::One(g)) => Some(g),
        Some(GroupHint::Many(g)) => g.into_iter().next(),
        None => None,
    };
    let hostname = match server.hostname {
        Some(Some(h)) => Some(checked_hostname(mv, h)?),
        Some(None) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute hostname. Value: None. None is not of type 'string'"
                    .into(),
            ));
        }
        None => None,
    };
    if hostname.is_some() && max_count > 1 {
        return Err(ComputeError::BadRequest(
            "Unable to allocate a single hostname to multiple instances".into(),
        ));
    }
    Ok(CreateRequest {
        name,
        image_id: block_devices.image_id,
        block_devices: block_devices.mappings,
        local: block_devices.local,
        flavor_id,
        key_name,
        user_data,
        description,
        metadata,
        tags,
        config_drive,
        availability_zone,
        min_count,
        max_count,
        return_reservation_id,
        admin_pass,
        access_ipv4,
        access_ipv6,
        group,
        hostname,
        networks,
        security_groups,
    })
}

/// `POST /servers`.
pub async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Extension(request_id): Extension<RequestId>,
    body: Bytes,
) -> ComputeResult<Response> {
    let project = project_of(&ctx)?;
    let mut req = parse_create(mv, &body)?;
    super::authorize(
        &s,
        &ctx,
        "os_compute_api:servers:create",
        &super::owner_target(&project, &ctx.user_id),
    )?;
    let is_admin = super::is_admin_context(&s, &ctx);
    image_mappings(&s, &mut req, &project, is_admin).await;
    let resolved = resolve(&s, &req, &project, is_admin).await?;
    let local_disks =
        block_devices::local_disks(&req.local, resolved.flavor.swap, resolved.flavor.ephemeral)?;
    let admin_pass = req.admin_pass.clone().unwrap_or_else(random_password);
    let sg_names = req.security_groups.clone();
    let return_reservation_id = req.return_reservation_id;
    let block_devices = req.block_devices.clone();
    let plan = Plan {
        req,
        local_disks,
        flavor: resolved.flavor,
        boot: resolved.boot,
        project,
        user_id: ctx.user_id.clone(),
        is_admin,
        reservation_id: format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        now: now_unix(),
        host: super::hosts::hostname(),
        ratios: s.config.ratios,
        force_config_drive: s.config.force_config_drive,
        facts: super::hosts::capacity(&s.db.state_dir()),
        request_id: request_id.0.clone(),
    };
    let (servers, scheduled) =
        super::networking::write_atomic(&s, move |tx| record(tx, &plan)).await?;
    super::networking::notify(&s);
    start(&s, &servers, &scheduled, &block_devices, &request_id.0).await;
    accepted(&s, &servers, return_reservation_id, &admin_pass, &sg_names)
}

/// An image made by createImage of a volume-backed server carries the
/// mappings that boot it (a new volume from the snapshot as the root disk):
/// they take the image's place, as Nova merges an image's mappings.
async fn image_mappings(s: &S, req: &mut CreateRequest, project: &str, is_admin: bool) {
    if req.image_id.is_empty() || req.block_devices.iter().any(|m| m.boot_index == Some(0)) {
        return;
    }
    let Ok(image) = s
        .images
        .get(&req.image_id, if is_admin { None } else { Some(project) })
        .await
    else {
        return;
    };
    if let Some(mut mappings) = block_devices::image_mappings(&image) {
        mappings.append(&mut req.block_devices);
        req.block_devices = mappings;
        req.image_id.clear();
    }
}

/// What [`resolve`] found: the flavor and what the image boots.
struct Resolved {
    flavor: Flavor,
    boot: BootInfo,
}

/// The image (visible to the caller and active) and the flavor (it exists,
/// and its memory and disk fit the image), and the image's boot details.
async fn resolve(
    s: &S,
    req: &CreateRequest,
    project: &str,
    is_admin: bool,
) -> ComputeResult<Resolved> {
    let volume_root = block_devices::resolve(
        s,
        &block_devices::Requested {
            image_id: req.image_id.clone(),
            mappings: req.block_devices.clone(),
            local: Vec::new(),
        },
        project,
        is_admin,
    )
    .await?;
    if let Some(root) = volume_root {
        // Volume-backed: the flavor's root disk size does not apply.
        let flavor = find_flavor(s, &req.flavor_id).await?;
        if flavor.ram < root.min_ram {
            return Err(ComputeError::BadRequest(
                "Flavor's memory is too small for requested image.".into(),
            ));
        }
        return Ok(Resolved {
            flavor,
            boot: root.boot,
        });
    }
    let image = match s
        .images
        .get(&req.image_id, if is_admin { None } else { Some(project) })
        .await
    {
        Ok(image) => image,
        Err(crate::image::service::ImageServiceError::NotFound(_)) => {
            return Err(ComputeError::BadRequest(format!(
                "Image {} could not be found.",
                req.image_id
            )));
        }
        Err(e) => return Err(ComputeError::Internal(e.to_string())),
    };
    if image.status != "active" {
        return Err(ComputeError::BadRequest(format!(
            "Image {} is not active.",
            image.id
        )));
    }
    let flavor = find_flavor(s, &req.flavor_id).await?;
    if flavor.ram < image.min_ram {
        return Err(ComputeError::BadRequest(
            "Flavor's memory is too small for requested image.".into(),
        ));
    }
    let image_gb = (image.virtual_size.or(image.size).unwrap_or(0) + (1 << 30) - 1) >> 30;
    if flavor.disk > 0 && (flavor.disk < image.min_disk || flavor.disk < image_gb) {
        return Err(ComputeError::BadRequest(
            "Flavor's disk is too small for requested image.".into(),
        ));
    }
    let boot = build::resolve_boot(s, &image, project, is_admin).await?;
    Ok(Resolved { flavor, boot })
}

async fn find_flavor(s: &S, id: &str) -> ComputeResult<Flavor> {
    let flavor_id = id.to_string();
    s.read(move |conn| Ok(store::get_flavor(conn, &flavor_id)?))
        .await?
        .ok_or_else(|| ComputeError::BadRequest(format!("Flavor {id} could not be found.")))
}

/// Everything [`record`] needs, moved into the write transaction.
struct Plan {
    req: CreateRequest,
    local_disks: Vec<crate::db::servers::LocalDisk>,
    flavor: Flavor,
    boot: BootInfo,
    project: String,
    user_id: String,
    is_admin: bool,
    reservation_id: String,
    now: i64,
    host: String,
    ratios: AllocationRatios,
    force_config_drive: bool,
    facts: Capacity,
    request_id: String,
}

/// The create's one transaction: flavor access, key pair, server group,
/// quotas (as many servers as fit between min_count and max_count), the
/// networks, scheduling on this one host, then each server with its ports,
/// group membership and `create` instance action. Returns the servers made
/// and the ids of those scheduled (the others are ERROR with NoValidHost).
fn record(tx: &rusqlite::Transaction, plan: &Plan) -> ComputeResult<(Vec<Server>, Vec<String>)> {
    let Plan {
        req,
        local_disks,
        flavor,
        boot,
        project,
        user_id,
        is_admin,
        reservation_id,
        now,
        host,
        ratios,
        force_config_drive,
        facts,
        request_id: rid,
    } = plan;
    let (is_admin, now, ratios, force_config_drive) =
        (*is_admin, *now, *ratios, *force_config_drive);
    let flavor_copy = FlavorCopy::from(flavor);
    if !flavor.is_public && !is_admin && !store::flavor_projects(tx, &flavor.id)?.contains(project)
    {
        return Err(ComputeError::BadRequest(format!(
            "Flavor {} could not be found.",
            flavor.id
        )));
    }
    let key_data = match &req.key_name {
        Some(name) => Some(
            store::get_keypair(tx, user_id, name)?
                .ok_or_else(|| ComputeError::BadRequest("Invalid key_name provided.".into()))?
                .public_key,
        ),
        None => None,
    };
    if let Some(group_id) = &req.group {
        let group = store::get_server_group(tx, group_id)?
            .ok_or_else(|| ComputeError::BadRequest(format!("Invalid server group {group_id}")))?;
        if group.project_id != *project && !is_admin {
            return Err(ComputeError::BadRequest(format!(
                "Invalid server group {group_id}"
            )));
        }
        quotas::enforce_group_members(tx, project, user_id, group_id, req.min_count)?;
    }
    // Quotas: as many as fit between min_count and max_count.
    let in_use = db::quota_usage(tx, project, None)?;
    let mut count = req.max_count;
    loop {
        let request = ServerRequest {
            count,
            vcpus: flavor.vcpus,
            ram_mb: flavor.ram,
            metadata_items: req.metadata.len() as i64,
        };
        match quotas::enforce_server_create(tx, project, user_id, &in_use, &request) {
            Ok(()) => break,
            Err(e) if count <= req.min_count => return Err(e),
            Err(_) => count -= 1,
        }
    }
    // Networks as Nova's validate_networks: checked before anything
    // is written; the port quota may lower the count.
    let net_plan =
        super::networking::plan(tx, &req.networks, &req.security_groups, project, is_admin)?;
    let count = super::networking::fit_port_quota(tx, &net_plan, project, req.min_count, count)?;
    // Scheduling on this one host.
    let used = db::host_usage(tx, None)?;
    let group = match &req.group {
        Some(g) => store::get_server_group(tx, g)?,
        None => None,
    };
    // All or nothing, as Nova's scheduler: when the request's servers
    // do not all fit, every one of them fails with NoValidHost.
    let fit = super::scheduler::fit(
        used,
        super::scheduler::Demand {
            vcpus: count * flavor.vcpus,
            ram_mb: count * flavor.ram,
            // A volume-backed server has no local root disk; swap and
            // ephemeral disks are local either way.
            disk_gb: count
                * (if req.image_id.is_empty() {
                    0
                } else {
                    flavor.disk
                } + flavor.ephemeral
                    + flavor.swap / 1024),
        },
        facts,
        ratios,
    );
    let anti_affinity_broken = group
        .as_ref()
        .is_some_and(|g| g.policy == "anti-affinity" && (!g.members.is_empty() || count > 1));
    let fits = fit.all() && !anti_affinity_broken;
    let mut created = Vec::new();
    let mut scheduled = Vec::new();
    for index in 0..count {
        let name = if count > 1 {
            format!("{}-{}", req.name, index + 1)
        } else {
            req.name.clone()
        };
        let id = uuid::Uuid::new_v4().to_string();
        let mut server = Server {
            id: id.clone(),
            name: name.clone(),
            project_id: project.clone(),
            user_id: user_id.clone(),
            image_id: req.image_id.clone(),
            flavor: flavor_copy.clone(),
            old_flavor: None,
            key_name: req.key_name.clone(),
            key_data: key_data.clone(),
            user_data: req.user_data.clone(),
            description: req.description.clone(),
            hostname: req
                .hostname
                .clone()
                .unwrap_or_else(|| sanitize_hostname(&name, &id)),
            metadata: req.metadata.clone(),
            tags: req.tags.clone(),
            vm_state: if fits { VmState::Building } else { VmState::Error },
            task_state: if fits { Some(TaskState::Scheduling) } else { None },
            power_state: PowerState::NoState,
            locked: false,
            locked_by: None,
            locked_reason: None,
            fault: (!fits).then(|| {
                json!({
                    "code": 500,
                    "created": iso_time(now),
                    "message": "No valid host was found. There are not enough hosts available.",
                    "details": format!(
                        "{}{}",
                        fit.describe(host, facts, ratios),
                        if anti_affinity_broken { ", anti-affinity group already has a member on the only host" } else { "" }
                    ),
                })
            }),
            config_drive: req.config_drive || force_config_drive,
            availability_zone: req
                .availability_zone
                .as_ref()
                .map(|z| z.split(':').next().unwrap_or("").to_string()),
            access_ipv4: req.access_ipv4.clone(),
            access_ipv6: req.access_ipv6.clone(),
            reservation_id: reservation_id.clone(),
            launch_index: index,
            server_group: req.group.clone(),
            host: fits.then(|| host.clone()),
            kernel_id: boot.kernel_id.clone(),
            ramdisk_id: boot.ramdisk_id.clone(),
            cmdline: boot.cmdline.clone(),
            shutdown_timeout: boot.shutdown_timeout,
            shelved_image_id: None,
            migrations: Vec::new(),
            vmm_pid: None,
            ports: Vec::new(),
            volumes: Vec::new(),
            local_disks: local_disks.clone(),
            rescue: None,
            created_at: now,
            updated_at: now,
            launched_at: None,
            terminated_at: None,
            deleted: false,
        };
        if fits {
            server.ports = super::networking::make_ports(tx, &net_plan, &server, host)?;
        }
        db::insert_server(tx, &server)?;
        if let Some(g) = &req.group {
            store::add_server_group_member(tx, g, &id)?;
        }
        build::record_action(tx, &server, rid, "create", now)?;
        if fits {
            scheduled.push(id.clone());
        }
        created.push(server);
    }
    Ok((created, scheduled))
}

/// Puts each scheduled server on the build path (its volumes first when it
/// has block device mappings); the others' create actions end failed at
/// the scheduling event.
async fn start(
    s: &S,
    servers: &[Server],
    scheduled: &[String],
    block_devices: &[Mapping],
    request_id: &str,
) {
    for server in servers {
        if scheduled.contains(&server.id) && !block_devices.is_empty() {
            block_devices::spawn_build(
                s.clone(),
                server.id.clone(),
                block_devices.to_vec(),
                request_id.to_string(),
            );
        } else if scheduled.contains(&server.id) {
            build::spawn_build(s.clone(), server.id.clone(), request_id.to_string());
        } else {
            build::finish_action_event(
                s,
                &server.id,
                request_id,
                "compute__schedule_instances",
                false,
            )
            .await;
        }
    }
}

/// The 202: the reservation id when asked for, else the first server with
/// its admin password and a `location` header.
fn accepted(
    s: &S,
    servers: &[Server],
    return_reservation_id: bool,
    admin_pass: &str,
    sg_names: &[String],
) -> ComputeResult<Response> {
    if return_reservation_id {
        let reservation = servers
            .first()
            .map(|sv| sv.reservation_id.clone())
            .unwrap_or_default();
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"reservation_id": reservation}),
        ));
    }
    let Some(first) = servers.first() else {
        return Err(ComputeError::Internal("no server was created".into()));
    };
    let body = json!({
        "id": first.id,
        "links": s.links("servers", &first.id),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": sg_names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "adminPass": admin_pass,
    });
    let mut response = json_response(StatusCode::ACCEPTED, &json!({"server": body}));
    if let Ok(location) = HeaderValue::from_str(&format!("{}/servers/{}", s.v21_url(), first.id)) {
        response.headers_mut().insert("location", location);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::request::refused;

    const IMG: &str = "5f0c1a4e-2d7b-4b8f-9a3c-6e1d2f3a4b5c";
    const GROUP: &str = "0a2b9f3e-7c55-4a6e-8d0a-2f5e1c3b4d6f";

    /// A create of `server` merged over a minimal valid one.
    fn create(mv: u16, server: Value) -> ComputeResult<CreateRequest> {
        let mut base = json!({"name": "web", "imageRef": IMG, "flavorRef": "1"});
        if mv >= 37 {
            base["networks"] = json!("none");
        }
        if let (Some(b), Value::Object(extra)) = (base.as_object_mut(), server) {
            b.extend(extra);
        }
        whole(mv, json!({ "server": base }))
    }

    fn whole(mv: u16, body: Value) -> ComputeResult<CreateRequest> {
        parse_create(Mv(mv), &Bytes::from(body.to_string()))
    }

    #[test]
    fn a_minimal_create_is_read_with_its_defaults() {
        let r = create(1, json!({})).expect("accepted");
        assert_eq!((r.name.as_str(), r.image_id.as_str()), ("web", IMG));
        assert_eq!(r.flavor_id, "1");
        assert_eq!((r.min_count, r.max_count), (1, 1));
        assert_eq!(r.security_groups, vec!["default".to_string()]);
        assert_eq!(r.networks, super::super::networking::Requested::Absent);
        assert!(!r.config_drive && !r.return_reservation_id);
        let r = create(
            1,
            json!({"flavorRef": "http://h/compute/v2.1/flavors/7", "imageRef": format!("http://h/images/{IMG}"),
                   "min_count": "2", "max_count": 3, "config_drive": "true",
                   "return_reservation_id": "1", "metadata": {"a": "b"},
                   "accessIPv4": "10.0.0.1", "accessIPv6": "2001:DB8::1",
                   "OS-DCF:diskConfig": "AUTO", "security_groups": [{"name": "web"}],
                   "personality": [{"path": "/etc/motd", "contents": "aGk="}],
                   "user_data": "aGk=", "key_name": "k", "availability_zone": "nova",
                   "block_device_mapping_v2": [{"source_type": "blank", "destination_type": "local",
                                                "guest_format": "swap"}]}),
        )
        .expect("accepted");
        assert_eq!((r.flavor_id.as_str(), r.image_id.as_str()), ("7", IMG));
        assert_eq!((r.min_count, r.max_count), (2, 3));
        assert!(r.config_drive && r.return_reservation_id);
        assert_eq!(r.metadata.get("a").map(String::as_str), Some("b"));
        assert_eq!(r.access_ipv6, "2001:db8::1");
        assert_eq!(r.security_groups, vec!["web".to_string()]);
        assert_eq!(r.local.len(), 1);
        assert_eq!(r.availability_zone.as_deref(), Some("nova"));
        let r = create(1, json!({"flavorRef": 2})).expect("a number");
        assert_eq!(r.flavor_id, "2");
    }

    #[test]
    fn scheduler_hints_name_the_group() {
        let hinted = |hints: Value| {
            let mut body = json!({"server": {"name": "a", "imageRef": IMG, "flavorRef": "1"}});
            if let (Some(b), Value::Object(h)) = (body.as_object_mut(), hints) {
                b.extend(h);
            }
            whole(1, body).map(|r| r.group)
        };
        assert_eq!(
            hinted(json!({"os:scheduler_hints": {"group": GROUP, "same_host": []}})).ok(),
            Some(Some(GROUP.to_string()))
        );
        assert_eq!(
            hinted(json!({"OS-SCH-HNT:scheduler_hints": {"group": [GROUP]}})).ok(),
            Some(Some(GROUP.to_string()))
        );
        assert_eq!(hinted(json!({"os:scheduler_hints": {}})).ok(), Some(None));
        assert_eq!(
            refused(hinted(json!({"scheduler_hints": {}}))),
            "Additional properties are not allowed ('scheduler_hints' was unexpected)"
        );
    }

    #[test]
    fn members_follow_the_microversion() {
        let gated = [
            (json!({"description": "d"}), 19),
            (json!({"tags": ["a"]}), 52),
            (json!({"trusted_image_certificates": ["c"]}), 63),
            (json!({"host": "h"}), 74),
            (json!({"hypervisor_hostname": "h"}), 74),
            (json!({"hostname": "web-1"}), 90),
        ];
        for (member, from) in gated {
            let name = member
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            assert_eq!(
                refused(create(from - 1, member.clone())),
                format!(
                    "Invalid input for field/attribute server. Additional properties are not allowed ('{name}' was unexpected)"
                ),
                "{member}"
            );
            assert!(create(from, member.clone()).is_ok(), "{member}");
        }
        let personality = json!({"personality": []});
        assert!(create(56, personality.clone()).is_ok());
        assert!(create(57, personality).is_err());
        assert_eq!(
            create(52, json!({"tags": ["a", "a", "b"]}))
                .map(|r| r.tags)
                .ok(),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            create(19, json!({"description": null}))
                .map(|r| r.description)
                .ok(),
            Some(None)
        );
        assert_eq!(
            create(90, json!({"hostname": "web-1"}))
                .map(|r| r.hostname)
                .ok(),
            Some(Some("web-1".to_string()))
        );
        assert_eq!(
            refused(create(90, json!({"hostname": null}))),
            "Invalid input for field/attribute hostname. Value: None. None is not of type 'string'"
        );
        assert_eq!(
            refused(create(90, json!({"hostname": "web-1", "max_count": 2}))),
            "Unable to allocate a single hostname to multiple instances"
        );
    }

    #[test]
    fn refusals_keep_novas_texts() {
        let cases = [
            (
                json!({"server": {"imageRef": IMG, "flavorRef": "1"}}),
                "Invalid input for field/attribute server. 'name' is a required property",
            ),
            (
                json!({"server": {"name": "a", "imageRef": IMG}}),
                "Invalid input for field/attribute server. 'flavorRef' is a required property",
            ),
            (
                json!({"server": {"name": "a", "imageRef": IMG, "flavorRef": ""}}),
                "Invalid input for field/attribute server. 'flavorRef' is a required property",
            ),
            (
                json!({}),
                "Invalid input for field/attribute server: 'server' is a required property",
            ),
            (
                json!({"server": {"name": "a", "flavorRef": "1", "imageRef": 5}}),
                "Invalid input for field/attribute imageRef. Value: 5. 5 is not of type 'string'",
            ),
            (
                json!({"server": {"name": "a", "flavorRef": "1", "bogus": 1}}),
                "Invalid input for field/attribute server. Additional properties are not allowed ('bogus' was unexpected)",
            ),
        ];
        for (body, text) in cases {
            assert_eq!(refused(whole(1, body.clone())), text, "{body}");
        }
        let cases = [
            (
                json!({"name": "  "}),
                "Invalid input for field/attribute name. Value: \"  \". \"  \" is not a valid name (1-255 characters, not only spaces)",
            ),
            (
                json!({"min_count": "x"}),
                "Invalid input for field/attribute min_count. Value: \"x\". \"x\" is not an integer",
            ),
            (
                json!({"max_count": 0}),
                "Invalid input for field/attribute max_count. Value: 0. 0 is not in the range 1..1000",
            ),
            (
                json!({"min_count": 3, "max_count": 2}),
                "min_count must be <= max_count",
            ),
            (
                json!({"config_drive": "maybe"}),
                "Invalid input for field/attribute config_drive. Value: \"maybe\". \"maybe\" is not a boolean",
            ),
            (
                json!({"user_data": "not base64!"}),
                "Invalid input for field/attribute user_data. Value is not base64 encoded",
            ),
            (
                json!({"accessIPv4": "10.0.0.300"}),
                "Invalid input for field/attribute accessIPv4. Value: 10.0.0.300. '10.0.0.300' is not a 'ipv4'",
            ),
            (
                json!({"availability_zone": "elsewhere"}),
                "The requested availability zone is not available: elsewhere",
            ),
            (
                json!({"key_name": "k".repeat(256)}),
                "Invalid input for field/attribute key_name. Value is too long (at most 255 characters).",
            ),
            (
                json!({"metadata": {"a": 1}}),
                "Invalid input for field/attribute a. Value is not a string.",
            ),
            (
                json!({"personality": [{"path": "/a"}]}),
                "Invalid input for field/attribute personality. 'contents' is a required property",
            ),
            (json!({"imageRef": ""}), "Missing imageRef attribute"),
            (
                json!({"block_device_mapping_v2": [{"source_type": "disk"}]}),
                "Invalid input for field/attribute source_type. Value: disk. 'disk' is not one of ['volume', 'image', 'snapshot', 'blank']",
            ),
            (
                json!({"block_device_mapping_v2": [{"source_type": "blank", "bogus": 1}]}),
                "Invalid input for field/attribute block_device_mapping_v2. Additional properties are not allowed ('bogus' was unexpected)",
            ),
            (
                json!({"block_device_mapping": [{"volume_id": IMG, "device_name": "vda", "boot_index": 0}]}),
                "Invalid input for field/attribute block_device_mapping. Additional properties are not allowed ('boot_index' was unexpected)",
            ),
        ];
        for (server, text) in cases {
            assert_eq!(refused(create(1, server.clone())), text, "{server}");
        }
        assert_eq!(
            refused(create(37, json!({"networks": "all"}))),
            "Invalid input for field/attribute networks. Value: all. 'all' is not one of ['none', 'auto']"
        );
        assert_eq!(
            refused(whole(
                37,
                json!({"server": {"name": "a", "imageRef": IMG, "flavorRef": "1"}})
            )),
            "Invalid input for field/attribute server. 'networks' is a required property"
        );
    }
}
