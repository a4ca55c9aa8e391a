//! Limits (`/limits`), quota sets (`/os-quota-sets`) and quota classes
//! (`/os-quota-class-sets`), and the enforcement helpers that creating
//! keypairs, server groups and (later) servers call inside their write
//! transaction.
//!
//! A limit comes from, in order: a per-user override, the project's limit,
//! the `default` quota class, the built-in default. -1 means unlimited.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use serde::Deserialize;

use super::request::{Integer, LooseBool, body as decode_body, present};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, own_target, project_of,
    query_map,
};
use crate::db::DbResult;
use crate::db::compute as store;
use crate::http::body::BodyError;
use crate::http::json_response;
use crate::identity::Auth;
use crate::policy::Target;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/limits", get(limits))
        .route(
            "/v2.1/os-quota-sets/{project}",
            get(show).put(update).delete(delete),
        )
        .route("/v2.1/os-quota-sets/{project}/defaults", get(defaults))
        .route("/v2.1/os-quota-sets/{project}/detail", get(detail))
        .route(
            "/v2.1/os-quota-class-sets/{class}",
            get(class_show).put(class_update),
        )
}

/// A quota resource: its built-in default and the microversions
/// (`from..until`) at which quota sets and quota class sets show it.
struct Resource {
    name: &'static str,
    default: i64,
    set_until: u16,
    class_from: u16,
    class_until: u16,
}

const NEVER: u16 = u16::MAX;

const RESOURCES: &[Resource] = &[
    Resource {
        name: "instances",
        default: 10,
        set_until: NEVER,
        class_from: 1,
        class_until: NEVER,
    },
    Resource {
        name: "cores",
        default: 20,
        set_until: NEVER,
        class_from: 1,
        class_until: NEVER,
    },
    Resource {
        name: "ram",
        default: 51200,
        set_until: NEVER,
        class_from: 1,
        class_until: NEVER,
    },
    Resource {
        name: "metadata_items",
        default: 128,
        set_until: NEVER,
        class_from: 1,
        class_until: NEVER,
    },
    Resource {
        name: "key_pairs",
        default: 100,
        set_until: NEVER,
        class_from: 1,
        class_until: NEVER,
    },
    Resource {
        name: "server_groups",
        default: 10,
        set_until: NEVER,
        class_from: 50,
        class_until: NEVER,
    },
    Resource {
        name: "server_group_members",
        default: 10,
        set_until: NEVER,
        class_from: 50,
        class_until: NEVER,
    },
    Resource {
        name: "injected_files",
        default: 5,
        set_until: 57,
        class_from: 1,
        class_until: 57,
    },
    Resource {
        name: "injected_file_content_bytes",
        default: 10240,
        set_until: 57,
        class_from: 1,
        class_until: 57,
    },
    Resource {
        name: "injected_file_path_bytes",
        default: 255,
        set_until: 57,
        class_from: 1,
        class_until: 57,
    },
    Resource {
        name: "floating_ips",
        default: 10,
        set_until: 36,
        class_from: 1,
        class_until: 50,
    },
    Resource {
        name: "fixed_ips",
        default: -1,
        set_until: 36,
        class_from: 1,
        class_until: 50,
    },
    Resource {
        name: "security_groups",
        default: 10,
        set_until: 36,
        class_from: 1,
        class_until: 50,
    },
    Resource {
        name: "security_group_rules",
        default: 20,
        set_until: 36,
        class_from: 1,
        class_until: 50,
    },
];

fn set_resources(mv: Mv) -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().filter(move |r| mv.0 < r.set_until)
}

fn class_resources(mv: Mv) -> impl Iterator<Item = &'static Resource> {
    RESOURCES
        .iter()
        .filter(move |r| mv.0 >= r.class_from && mv.0 < r.class_until)
}

/// Every resource's limit for a project (and user), fully resolved.
pub fn limits_for(
    conn: &Connection,
    project_id: &str,
    user_id: Option<&str>,
) -> DbResult<HashMap<String, i64>> {
    let class = store::get_quota_class(conn, "default")?;
    let project = store::get_quotas(conn, project_id, None)?;
    let user = match user_id {
        Some(u) => store::get_quotas(conn, project_id, Some(u))?,
        None => HashMap::new(),
    };
    Ok(RESOURCES
        .iter()
        .map(|r| {
            let limit = user
                .get(r.name)
                .or_else(|| project.get(r.name))
                .or_else(|| class.get(r.name))
                .copied()
                .unwrap_or(r.default);
            (r.name.to_string(), limit)
        })
        .collect())
}

fn default_limits(conn: &Connection) -> DbResult<HashMap<String, i64>> {
    let class = store::get_quota_class(conn, "default")?;
    Ok(RESOURCES
        .iter()
        .map(|r| {
            (
                r.name.to_string(),
                class.get(r.name).copied().unwrap_or(r.default),
            )
        })
        .collect())
}

/// Resources in use by a project (or one user of it).
pub fn usage_for(
    conn: &Connection,
    project_id: &str,
    user_id: Option<&str>,
) -> DbResult<HashMap<String, i64>> {
    let mut usage: HashMap<String, i64> =
        RESOURCES.iter().map(|r| (r.name.to_string(), 0)).collect();
    usage.extend(crate::db::servers::quota_usage(conn, project_id, user_id)?);
    usage.insert(
        "server_groups".into(),
        store::count_server_groups(conn, project_id)?,
    );
    if let Some(user) = user_id {
        usage.insert("key_pairs".into(), store::count_keypairs(conn, user)?);
    }
    Ok(usage)
}

/// Checks that `used + delta` stays within `resource`'s limit.
pub fn enforce_limit(
    conn: &Connection,
    project_id: &str,
    user_id: Option<&str>,
    resource: &str,
    used: i64,
    delta: i64,
) -> ComputeResult<()> {
    let limit = limits_for(conn, project_id, user_id)?
        .get(resource)
        .copied()
        .unwrap_or(-1);
    if limit >= 0 && used + delta > limit {
        return Err(ComputeError::QuotaExceeded(format!(
            "Quota exceeded for {resource}: Requested {delta}, but already used {used} of {limit} {resource}"
        )));
    }
    Ok(())
}

/// What one server create asks for, checked by [`enforce_server_create`].
pub struct ServerRequest {
    pub count: i64,
    pub vcpus: i64,
    pub ram_mb: i64,
    pub metadata_items: i64,
}

/// Quota check for creating servers, inside the create transaction:
/// instances, cores, ram (with `in_use` from the servers table) and metadata items.
pub fn enforce_server_create(
    conn: &Connection,
    project_id: &str,
    user_id: &str,
    in_use: &HashMap<String, i64>,
    request: &ServerRequest,
) -> ComputeResult<()> {
    let used = |r: &str| in_use.get(r).copied().unwrap_or(0);
    for (resource, delta) in [
        ("instances", request.count),
        ("cores", request.vcpus * request.count),
        ("ram", request.ram_mb * request.count),
    ] {
        enforce_limit(
            conn,
            project_id,
            Some(user_id),
            resource,
            used(resource),
            delta,
        )?;
    }
    enforce_limit(
        conn,
        project_id,
        Some(user_id),
        "metadata_items",
        0,
        request.metadata_items,
    )
}

/// Quota check for adding `adding` servers to a server group, inside the
/// server create transaction (`server_group_members` counts per group).
pub fn enforce_group_members(
    conn: &Connection,
    project_id: &str,
    user_id: &str,
    group_id: &str,
    adding: i64,
) -> ComputeResult<()> {
    let members = store::get_server_group(conn, group_id)?
        .map(|g| g.members.len() as i64)
        .unwrap_or(0);
    enforce_limit(
        conn,
        project_id,
        Some(user_id),
        "server_group_members",
        members,
        adding,
    )
}

// -------------------------------------------------------------------- views

fn set_view(
    mv: Mv,
    limits: &HashMap<String, i64>,
    usage: Option<&HashMap<String, i64>>,
    id: Option<&str>,
) -> Value {
    let mut obj = Map::new();
    if let Some(id) = id {
        obj.insert("id".into(), json!(id));
    }
    for r in set_resources(mv) {
        let limit = limits.get(r.name).copied().unwrap_or(r.default);
        let value = match usage {
            Some(u) => json!({
                "limit": limit,
                "in_use": u.get(r.name).copied().unwrap_or(0),
                "reserved": 0,
            }),
            None => json!(limit),
        };
        obj.insert(r.name.into(), value);
    }
    Value::Object(obj)
}

/// Nova asks Keystone whether the project exists and refuses unknown ones.
fn verify_project(conn: &Connection, project: &str) -> ComputeResult<()> {
    if crate::db::identity::get_project(conn, project)?.is_some() {
        Ok(())
    } else {
        Err(ComputeError::BadRequest(format!(
            "Project ID {project} is not a valid project."
        )))
    }
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(project): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-sets:show",
        &Target::project(project.clone()),
    )?;
    let user = query_map(q).remove("user_id");
    let p = project.clone();
    let limits = s
        .read(move |conn| {
            verify_project(conn, &p)?;
            Ok(limits_for(conn, &p, user.as_deref())?)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_set": set_view(mv, &limits, None, Some(&project))}),
    ))
}

async fn detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(project): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-sets:detail",
        &Target::project(project.clone()),
    )?;
    let user = query_map(q).remove("user_id");
    let p = project.clone();
    let (limits, usage) = s
        .read(move |conn| {
            verify_project(conn, &p)?;
            Ok((
                limits_for(conn, &p, user.as_deref())?,
                usage_for(conn, &p, user.as_deref())?,
            ))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_set": set_view(mv, &limits, Some(&usage), Some(&project))}),
    ))
}

async fn defaults(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(project): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-sets:defaults",
        &Target::new(),
    )?;
    let limits = s.read(|conn| Ok(default_limits(conn)?)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_set": set_view(mv, &limits, None, Some(&project))}),
    ))
}

/// The body of `PUT /os-quota-sets/{project}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaSetUpdate {
    quota_set: QuotaMembers,
}

/// The body of `PUT /os-quota-class-sets/{class}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaClassSetUpdate {
    quota_class_set: QuotaMembers,
}

/// Every member a quota (class) set body has at some microversion: each
/// limit a number or a string of digits, and `force` (quota sets only).
/// Which limits a request may name is [`RESOURCES`]' table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaMembers {
    #[serde(default, deserialize_with = "present")]
    force: Option<LooseBool>,
    #[serde(default, deserialize_with = "present")]
    instances: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    cores: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    ram: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    metadata_items: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    key_pairs: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    server_groups: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    server_group_members: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    injected_files: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    injected_file_content_bytes: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    injected_file_path_bytes: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    floating_ips: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    fixed_ips: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    security_groups: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    security_group_rules: Option<Integer>,
}

impl QuotaMembers {
    fn given(&self) -> [(&'static str, Option<Integer>); 14] {
        [
            ("instances", self.instances),
            ("cores", self.cores),
            ("ram", self.ram),
            ("metadata_items", self.metadata_items),
            ("key_pairs", self.key_pairs),
            ("server_groups", self.server_groups),
            ("server_group_members", self.server_group_members),
            ("injected_files", self.injected_files),
            (
                "injected_file_content_bytes",
                self.injected_file_content_bytes,
            ),
            ("injected_file_path_bytes", self.injected_file_path_bytes),
            ("floating_ips", self.floating_ips),
            ("fixed_ips", self.fixed_ips),
            ("security_groups", self.security_groups),
            ("security_group_rules", self.security_group_rules),
        ]
    }

    /// The limits given, each one of the resources `visible` at the
    /// request's microversion (else unexpected in `key`) and within
    /// -1..=2147483647.
    fn changes(&self, key: &str, visible: &[&'static str]) -> ComputeResult<Vec<(String, i64)>> {
        let mut out = Vec::new();
        for (name, value) in self.given() {
            let Some(value) = value else { continue };
            if !visible.contains(&name) {
                return Err(BodyError::Unexpected(format!("{key}.{name}")).into());
            }
            out.push((name.to_string(), value.within(name, -1, i32::MAX as i64)?));
        }
        Ok(out)
    }
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(project): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-sets:update",
        &Target::project(project.clone()),
    )?;
    let user = query_map(q).remove("user_id");
    let visible: Vec<&'static str> = set_resources(mv).map(|r| r.name).collect();
    let members = decode_body::<QuotaSetUpdate>(&body)?.quota_set;
    let changes = members.changes("quota_set", &visible)?;
    let force = members.force.is_some_and(|f| f.0);
    let p = project.clone();
    let limits = s
        .write(move |tx| {
            verify_project(tx, &p)?;
            let usage = usage_for(tx, &p, user.as_deref())?;
            let project_limits = limits_for(tx, &p, None)?;
            for (resource, limit) in &changes {
                let used = usage.get(resource).copied().unwrap_or(0);
                if !force && *limit >= 0 && *limit < used {
                    return Err(ComputeError::BadRequest(format!(
                        "Quota limit {limit} for {resource} must be greater than or equal to already used and reserved {used}."
                    )));
                }
                if user.is_some() {
                    let maximum = project_limits.get(resource).copied().unwrap_or(-1);
                    if maximum >= 0 && (*limit > maximum || *limit == -1) {
                        return Err(ComputeError::BadRequest(format!(
                            "Quota limit {limit} for {resource} must be less than or equal to {maximum}."
                        )));
                    }
                }
            }
            for (resource, limit) in &changes {
                store::set_quota(tx, &p, user.as_deref(), resource, *limit)?;
            }
            Ok(limits_for(tx, &p, user.as_deref())?)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_set": set_view(mv, &limits, None, None)}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(project): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-sets:delete",
        &Target::project(project.clone()),
    )?;
    let user = query_map(q).remove("user_id");
    s.write(move |tx| Ok(store::delete_quotas(tx, &project, user.as_deref())?))
        .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ------------------------------------------------------------ quota classes

fn class_view(mv: Mv, limits: &HashMap<String, i64>, id: Option<&str>) -> Value {
    let mut obj = Map::new();
    if let Some(id) = id {
        obj.insert("id".into(), json!(id));
    }
    for r in class_resources(mv) {
        obj.insert(
            r.name.into(),
            json!(limits.get(r.name).copied().unwrap_or(r.default)),
        );
    }
    Value::Object(obj)
}

fn class_limits(conn: &Connection, class: &str) -> DbResult<HashMap<String, i64>> {
    let stored = store::get_quota_class(conn, class)?;
    let defaults = default_limits(conn)?;
    Ok(RESOURCES
        .iter()
        .map(|r| {
            let v = stored
                .get(r.name)
                .or_else(|| defaults.get(r.name))
                .copied()
                .unwrap_or(r.default);
            (r.name.to_string(), v)
        })
        .collect())
}

async fn class_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(class): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-class-sets:show",
        &own_target(&ctx),
    )?;
    let c = class.clone();
    let limits = s.read(move |conn| Ok(class_limits(conn, &c)?)).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_class_set": class_view(mv, &limits, Some(&class))}),
    ))
}

async fn class_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(class): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-quota-class-sets:update",
        &own_target(&ctx),
    )?;
    if class.is_empty() || class.len() > 255 {
        return Err(ComputeError::BadRequest("Invalid quota class name.".into()));
    }
    let visible: Vec<&'static str> = class_resources(mv).map(|r| r.name).collect();
    let members = decode_body::<QuotaClassSetUpdate>(&body)?.quota_class_set;
    if members.force.is_some() {
        return Err(BodyError::Unexpected("quota_class_set.force".into()).into());
    }
    let changes = members.changes("quota_class_set", &visible)?;
    let limits = s
        .write(move |tx| {
            for (resource, limit) in &changes {
                store::set_quota_class(tx, &class, resource, *limit)?;
            }
            Ok(class_limits(tx, &class)?)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"quota_class_set": class_view(mv, &limits, None)}),
    ))
}

// ------------------------------------------------------------------- limits

async fn limits(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let own = project_of(&ctx)?;
    let project = match q.get("tenant_id") {
        Some(p) if *p != own => {
            authorize(
                &s,
                &ctx,
                "os_compute_api:limits:other_project",
                &Target::project(p.clone()),
            )?;
            p.clone()
        }
        _ => {
            authorize(&s, &ctx, "os_compute_api:limits", &own_target(&ctx))?;
            own
        }
    };
    let user = ctx.user_id.clone();
    let (limits, usage) = s
        .read(move |conn| {
            Ok((
                limits_for(conn, &project, Some(&user))?,
                usage_for(conn, &project, None)?,
            ))
        })
        .await?;
    let l = |r: &str| limits.get(r).copied().unwrap_or(-1);
    let u = |r: &str| usage.get(r).copied().unwrap_or(0);
    let mut abs = Map::new();
    abs.insert("maxServerMeta".into(), json!(l("metadata_items")));
    abs.insert("maxTotalCores".into(), json!(l("cores")));
    abs.insert("maxTotalInstances".into(), json!(l("instances")));
    abs.insert("maxTotalRAMSize".into(), json!(l("ram")));
    abs.insert("maxTotalKeypairs".into(), json!(l("key_pairs")));
    abs.insert("maxServerGroups".into(), json!(l("server_groups")));
    abs.insert(
        "maxServerGroupMembers".into(),
        json!(l("server_group_members")),
    );
    abs.insert("totalCoresUsed".into(), json!(u("cores")));
    abs.insert("totalInstancesUsed".into(), json!(u("instances")));
    abs.insert("totalRAMUsed".into(), json!(u("ram")));
    abs.insert("totalServerGroupsUsed".into(), json!(u("server_groups")));
    if !mv.at_least(39) {
        abs.insert("maxImageMeta".into(), json!(l("metadata_items")));
    }
    if !mv.at_least(57) {
        abs.insert("maxPersonality".into(), json!(l("injected_files")));
        abs.insert(
            "maxPersonalitySize".into(),
            json!(l("injected_file_content_bytes")),
        );
    }
    if !mv.at_least(36) {
        abs.insert("maxSecurityGroups".into(), json!(l("security_groups")));
        abs.insert(
            "maxSecurityGroupRules".into(),
            json!(l("security_group_rules")),
        );
        abs.insert("maxTotalFloatingIps".into(), json!(l("floating_ips")));
        abs.insert("totalFloatingIpsUsed".into(), json!(0));
        abs.insert("totalSecurityGroupsUsed".into(), json!(0));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"limits": {"rate": [], "absolute": abs}}),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::compute::request::refused;

    fn set(body: Value) -> ComputeResult<QuotaMembers> {
        decode_body::<QuotaSetUpdate>(body.to_string().as_bytes()).map(|b| b.quota_set)
    }

    #[test]
    fn quota_sets_take_numbers_or_digit_strings() {
        let visible: Vec<&'static str> = set_resources(Mv(1)).map(|r| r.name).collect();
        let m = set(json!({"quota_set": {"cores": "20", "ram": -1, "force": "True"}}))
            .expect("accepted");
        assert_eq!(m.force, Some(LooseBool(true)));
        let mut changes = m.changes("quota_set", &visible).expect("visible");
        changes.sort();
        assert_eq!(changes, vec![("cores".into(), 20), ("ram".into(), -1)]);
    }

    #[test]
    fn quota_sets_refuse_with_novas_wording() {
        assert_eq!(
            refused(
                set(json!({"quota_set": {"cores": -2}}))
                    .and_then(|m| m.changes("quota_set", &["cores"]))
            ),
            "Invalid input for field/attribute cores. Value: -2. -2 is not in the range -1..2147483647"
        );
        assert_eq!(
            refused(set(json!({"quota_set": {"cores": "many"}}))),
            "Invalid input for field/attribute cores. Value: \"many\". \"many\" is not an integer"
        );
        let visible: Vec<&'static str> = set_resources(Mv(36)).map(|r| r.name).collect();
        assert_eq!(
            refused(
                set(json!({"quota_set": {"floating_ips": 1}}))
                    .and_then(|m| m.changes("quota_set", &visible))
            ),
            "Invalid input for field/attribute quota_set. Additional properties are not allowed ('floating_ips' was unexpected)"
        );
        assert_eq!(
            refused(set(json!({"quota_set": {"bogus": 1}}))),
            "Invalid input for field/attribute quota_set. Additional properties are not allowed ('bogus' was unexpected)"
        );
        assert_eq!(
            refused(set(json!({"quota_set": {"force": 1}}))),
            "Invalid input for field/attribute force. Value: 1."
        );
    }
}
