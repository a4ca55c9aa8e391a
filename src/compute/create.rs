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
use serde_json::{Value, json};

use super::block_devices::{self, Mapping};
use super::build::{self, BootInfo};
use super::hosts::Capacity;
use super::iso_time;
use super::quotas::{self, ServerRequest};
use super::states::{PowerState, TaskState, VmState};
use super::validate::{
    bool_like, check_hostname, check_metadata, check_name, check_tags, last_segment, opt_str,
    sanitize_hostname,
};
use super::{
    AllocationRatios, ComputeError, ComputeResult, ComputeState, Mv, int_field, parse_body,
    project_of, take_object,
};
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

fn parse_create(mv: Mv, body: &Bytes) -> ComputeResult<CreateRequest> {
    let mut body = parse_body(body)?;
    let hints = body
        .remove("os:scheduler_hints")
        .or_else(|| body.remove("OS-SCH-HNT:scheduler_hints"));
    let server = take_object(&mut body, "server")?;
    let name = check_name(server.get("name"))?;
    let image_id = match server.get("imageRef") {
        Some(Value::String(r)) => last_segment(r),
        None | Some(Value::Null) => String::new(),
        Some(other) => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute imageRef. Value: {other}. {other} is not of type 'string'"
            )));
        }
    };
    let flavor_id = match server.get("flavorRef") {
        Some(Value::String(r)) if !r.is_empty() => last_segment(r),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server. 'flavorRef' is a required property"
                    .into(),
            ));
        }
    };
    if mv.at_least(57) && server.contains_key("personality") {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed ('personality' was unexpected)".into(),
        ));
    }
    let key_name = opt_str(&server, "key_name", 255)?;
    let user_data = match opt_str(&server, "user_data", 65535)? {
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
    let description = if mv.at_least(19) {
        opt_str(&server, "description", 255)?
    } else if server.contains_key("description") {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)".into(),
        ));
    } else {
        None
    };
    let metadata = match server.get("metadata") {
        Some(v) => check_metadata(v, "metadata")?,
        None => BTreeMap::new(),
    };
    let tags = match server.get("tags") {
        Some(v) if mv.at_least(52) => check_tags(v)?,
        Some(_) => {
            return Err(ComputeError::BadRequest(
                "Invalid input for field/attribute server. Additional properties are not allowed ('tags' was unexpected)".into(),
            ));
        }
        None => Vec::new(),
    };
    let config_drive = match server.get("config_drive") {
        Some(v) => bool_like(v).ok_or_else(|| {
            ComputeError::BadRequest(format!(
                "Invalid input for field/attribute config_drive. Value: {v}. {v} is not a boolean"
            ))
        })?,
        None => false,
    };
    let availability_zone = opt_str(&server, "availability_zone", 255)?.filter(|z| !z.is_empty());
    if let Some(zone) = &availability_zone {
        let zone_name = zone.split(':').next().unwrap_or("");
        if zone_name != super::hosts::ZONE {
            return Err(ComputeError::BadRequest(format!(
                "The requested availability zone is not available: {zone}"
            )));
        }
    }
    let min_count = match server.get("min_count") {
        Some(v) => int_field(v, "min_count", 1, 1000)?,
        None => 1,
    };
    let max_count = match server.get("max_count") {
        Some(v) => int_field(v, "max_count", 1, 1000)?,
        None => min_count,
    };
    if max_count < min_count {
        return Err(ComputeError::BadRequest(
            "min_count must be <= max_count".into(),
        ));
    }
    let block_devices = super::block_devices::parse(mv, &server, &image_id, max_count)?;
    let networks = super::networking::parse(mv, &server, max_count)?;
    let security_groups = super::networking::parse_security_groups(&server)?;
    let return_reservation_id = server
        .get("return_reservation_id")
        .and_then(bool_like)
        .unwrap_or(false);
    let admin_pass = opt_str(&server, "adminPass", 255)?;
    let access_ipv4 = opt_str(&server, "accessIPv4", 64)?.unwrap_or_default();
    if !access_ipv4.is_empty() && access_ipv4.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute accessIPv4. Value: {access_ipv4}. '{access_ipv4}' is not a 'ipv4'"
        )));
    }
    let access_ipv6 = opt_str(&server, "accessIPv6", 64)?.unwrap_or_default();
    let access_ipv6 = if access_ipv6.is_empty() {
        access_ipv6
    } else {
        match access_ipv6.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid input for field/attribute accessIPv6. Value: {access_ipv6}. '{access_ipv6}' is not a 'ipv6'"
                )));
            }
        }
    };
    let group = hints
        .as_ref()
        .and_then(|h| h.get("group"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let hostname = if mv.at_least(90) {
        check_hostname(mv, &server)?
    } else {
        None
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
