//! `GET /servers`, `/servers/detail` (Nova's filters, sorting and
//! pagination) and `GET /servers/{id}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::access::load_authorized;
use super::server_cache::ViewKey;
use super::server_views::{ServerView, ViewRights, status_of, view, vm_states_for_status};
use super::servers::{bool_like, last_segment};
use super::states::TaskState;
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, next_link, paginate, project_of, query_map,
};
use crate::db::servers::{self as db, Server};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<ComputeState>;

/// `GET /servers`, `/servers/detail` and `/servers/{id}` (create, update
/// and delete are `servers`').
pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/servers", get(list))
        .route("/v2.1/servers/detail", get(list_detail))
        .route("/v2.1/servers/{id}", get(show))
}

const ADMIN_ONLY_FILTERS: &[&str] = &[
    "host",
    "node",
    "hostname",
    "uuid",
    "deleted",
    "project_id",
    "user_id",
    "launch_index",
    "kernel_id",
    "ramdisk_id",
    "reservation_id",
    "terminated_at",
    "power_state",
    "task_state",
    "vm_state",
    "launched_at",
];

/// Nova matches name filters as regular expressions (searching, not anchored).
fn regex_match(pattern: &str, text: &str) -> bool {
    match regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
    {
        Ok(re) => re.is_match(text),
        // Not a valid expression (or too big): match it as plain text.
        Err(_) => text.contains(pattern),
    }
}

pub(super) fn parse_changes_since(text: &str) -> ComputeResult<i64> {
    let trimmed = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(trimmed) {
        return Ok(t.timestamp());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(trimmed.trim_end_matches('Z'), fmt) {
            return Ok(t.and_utc().timestamp());
        }
    }
    Err(ComputeError::BadRequest(format!(
        "Invalid filter field: changes-since. Value: {text} is not a valid date-time"
    )))
}

/// A server's value for a sort key: text, or a number (Nova sorts the
/// columns; an absent value sorts as "" or 0).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortValue<'a> {
    Number(i64),
    Text(&'a str),
}

fn sort_value<'a>(sv: &'a Server, key: &str) -> SortValue<'a> {
    use SortValue::{Number, Text};
    match key {
        "display_name" => Text(&sv.name),
        "created_at" => Number(sv.created_at),
        "updated_at" => Number(sv.updated_at),
        "uuid" => Text(&sv.id),
        "vm_state" => Text(sv.vm_state.as_str()),
        "task_state" => Text(sv.task_state.map(TaskState::as_str).unwrap_or_default()),
        "power_state" => Number(sv.power_state.code()),
        "key_name" => Text(sv.key_name.as_deref().unwrap_or_default()),
        "project_id" => Text(&sv.project_id),
        "user_id" => Text(&sv.user_id),
        "image_ref" => Text(&sv.image_id),
        "hostname" => Text(&sv.hostname),
        "host" | "node" => Text(sv.host.as_deref().unwrap_or_default()),
        "launch_index" => Number(sv.launch_index),
        "launched_at" => Number(sv.launched_at.unwrap_or(0)),
        "locked" => Number(i64::from(sv.locked)),
        "display_description" => Text(sv.description.as_deref().unwrap_or_default()),
        "access_ip_v4" => Text(&sv.access_ipv4),
        "access_ip_v6" => Text(&sv.access_ipv6),
        _ => Text(""),
    }
}

async fn list_servers(
    s: S,
    ctx: Arc<AuthContext>,
    mv: Mv,
    q: Vec<(String, String)>,
    detail: bool,
) -> ComputeResult<Response> {
    let project = project_of(&ctx)?;
    let multi: HashMap<String, Vec<String>> = q.iter().fold(HashMap::new(), |mut m, (k, v)| {
        m.entry(k.clone()).or_default().push(v.clone());
        m
    });
    let q = query_map(q);
    let (rule, all_tenants_rule) = if detail {
        (
            "os_compute_api:servers:detail",
            "os_compute_api:servers:detail:get_all_tenants",
        )
    } else {
        (
            "os_compute_api:servers:index",
            "os_compute_api:servers:index:get_all_tenants",
        )
    };
    let own = super::owner_target(&project, &ctx.user_id);
    super::authorize(&s, &ctx, rule, &own)?;
    let admin = super::is_admin_context(&s, &ctx);
    let all_tenants = q
        .get("all_tenants")
        .is_some_and(|v| v.is_empty() || bool_like(&json!(v)).unwrap_or(true));
    if all_tenants {
        super::authorize(&s, &ctx, all_tenants_rule, &own)?;
    }
    let may_see_all = all_tenants || super::allows(&s, &ctx, all_tenants_rule, &own);
    let all_filters = super::allows(&s, &ctx, "os_compute_api:servers:allow_all_filters", &own);
    let tenant_filter = if may_see_all {
        q.get("tenant_id").or(q.get("project_id")).cloned()
    } else {
        None
    };
    let scope: Option<String> = if all_tenants || tenant_filter.is_some() {
        tenant_filter.clone()
    } else {
        Some(project.clone())
    };
    let include_deleted = q
        .get("deleted")
        .is_some_and(|v| bool_like(&json!(v)) == Some(true))
        && admin;
    let changes_since = match q.get("changes-since") {
        Some(t) => Some(parse_changes_since(t)?),
        None => None,
    };
    let changes_before = match q.get("changes-before") {
        Some(t) if mv.at_least(66) => Some(parse_changes_since(t)?),
        Some(_) => None,
        None => None,
    };
    if let (Some(a), Some(b)) = (changes_since, changes_before)
        && a > b
    {
        return Err(ComputeError::BadRequest(
            "The value of changes-since must be less than or equal to changes-before.".into(),
        ));
    }
    let scope_owned = scope.clone();
    let with_deleted = include_deleted || changes_since.is_some() || changes_before.is_some();
    // Read before the state file: a write that commits meanwhile leaves
    // this read under the old generation, so the next listing reads again.
    let generation = s.db.write_generation();
    let kept = s
        .server_cache
        .listing(scope.as_deref(), with_deleted, generation);
    let mut servers: Vec<Arc<Server>> = match kept {
        Some(servers) => servers,
        None => {
            let cache = s.clone();
            // Each document is decoded only when it changed since it was last.
            let servers = s
                .read(move |conn| {
                    Ok(db::list_servers_with(
                        conn,
                        scope_owned.as_deref(),
                        with_deleted,
                        |id, doc| cache.server_cache.server(id, doc),
                    )?)
                })
                .await?;
            s.server_cache
                .keep_listing(scope.as_deref(), with_deleted, generation, &servers);
            servers
        }
    };
    // Filters.
    if let Some(status) = q.get("status") {
        match vm_states_for_status(status) {
            Some(states) => {
                let wanted = status.to_ascii_uppercase();
                servers.retain(|sv| {
                    states.contains(&sv.vm_state.as_str())
                        && (wanted == "ACTIVE"
                            || wanted == "RESIZE"
                            || wanted == "REBUILD"
                            || status_of(sv.vm_state, sv.task_state) == wanted
                            || states.len() == 1)
                });
            }
            None if admin => servers.clear(),
            None => {
                return Err(ComputeError::BadRequest(format!(
                    "Invalid status value: {status}"
                )));
            }
        }
    }
    let filter_allowed = |key: &str| {
        all_filters
            || mv.at_least(83)
                && [
                    "availability_zone",
                    "config_drive",
                    "key_name",
                    "created_at",
                    "launched_at",
                    "terminated_at",
                    "power_state",
                    "task_state",
                    "vm_state",
                    "progress",
                    "user_id",
                ]
                .contains(&key)
    };
    for (key, value) in &q {
        match key.as_str() {
            "name" => servers.retain(|sv| regex_match(value, &sv.name)),
            "image" | "image_ref" => {
                let id = last_segment(value);
                servers.retain(|sv| sv.image_id == id)
            }
            "flavor" => {
                let id = last_segment(value);
                servers.retain(|sv| sv.flavor.id == id)
            }
            "ip" | "ip6" => servers.clear(),
            "locked" if mv.at_least(73) => {
                let want = bool_like(&json!(value)).ok_or_else(|| {
                    ComputeError::BadRequest(format!("Unrecognized value '{value}', acceptable values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"))
                })?;
                servers.retain(|sv| sv.locked == want)
            }
            "reservation_id" => servers.retain(|sv| &sv.reservation_id == value),
            "availability_zone" if filter_allowed(key) => servers.retain(|sv| {
                sv.availability_zone
                    .as_deref()
                    .unwrap_or(super::hosts::ZONE)
                    == value
            }),
            "host" | "node" if admin => {
                servers.retain(|sv| sv.host.as_deref() == Some(value.as_str()))
            }
            "hostname" if admin => servers.retain(|sv| regex_match(value, &sv.hostname)),
            "uuid" if admin => servers.retain(|sv| &sv.id == value),
            "user_id" if filter_allowed(key) => servers.retain(|sv| &sv.user_id == value),
            "key_name" if filter_allowed(key) => {
                servers.retain(|sv| sv.key_name.as_deref() == Some(value.as_str()))
            }
            "vm_state" if filter_allowed(key) => {
                let states = multi.get("vm_state").cloned().unwrap_or_default();
                servers.retain(|sv| states.iter().any(|v| v == sv.vm_state.as_str()))
            }
            "task_state" if filter_allowed(key) => {
                let states = multi.get("task_state").cloned().unwrap_or_default();
                servers.retain(|sv| {
                    states
                        .iter()
                        .any(|t| sv.task_state.map(TaskState::as_str) == Some(t.as_str()))
                })
            }
            "power_state" if filter_allowed(key) => {
                let states = multi.get("power_state").cloned().unwrap_or_default();
                servers.retain(|sv| {
                    states
                        .iter()
                        .any(|p| p.parse::<i64>().ok() == Some(sv.power_state.code()))
                })
            }
            "config_drive" if filter_allowed(key) => {
                let want = bool_like(&json!(value)).unwrap_or(false);
                servers.retain(|sv| sv.config_drive == want)
            }
            "tags" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| wanted.iter().all(|t| sv.tags.iter().any(|x| x == t)))
            }
            "tags-any" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| wanted.iter().any(|t| sv.tags.iter().any(|x| x == t)))
            }
            "not-tags" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| !wanted.iter().all(|t| sv.tags.iter().any(|x| x == t)))
            }
            "not-tags-any" if mv.at_least(26) => {
                let wanted: Vec<&str> = value.split(',').collect();
                servers.retain(|sv| !wanted.iter().any(|t| sv.tags.iter().any(|x| x == t)))
            }
            k if ADMIN_ONLY_FILTERS.contains(&k) && !admin => {
                // Nova ignores filters a non-admin may not use (before 2.83).
            }
            _ => {}
        }
    }
    if let Some(since) = changes_since {
        servers.retain(|sv| sv.updated_at >= since);
    }
    if let Some(before) = changes_before {
        servers.retain(|sv| sv.updated_at <= before);
    }
    // Sorting: created_at desc by default (Nova's default), then id.
    let sort_keys: Vec<String> = multi.get("sort_key").cloned().unwrap_or_default();
    let sort_dirs: Vec<String> = multi.get("sort_dir").cloned().unwrap_or_default();
    for key in &sort_keys {
        const SORTABLE: &[&str] = &[
            "access_ip_v4",
            "access_ip_v6",
            "auto_disk_config",
            "availability_zone",
            "config_drive",
            "created_at",
            "display_description",
            "display_name",
            "host",
            "hostname",
            "image_ref",
            "instance_type_id",
            "kernel_id",
            "key_name",
            "launch_index",
            "launched_at",
            "locked",
            "locked_by",
            "node",
            "power_state",
            "progress",
            "project_id",
            "ramdisk_id",
            "root_device_name",
            "task_state",
            "terminated_at",
            "updated_at",
            "user_id",
            "uuid",
            "vm_state",
        ];
        if !SORTABLE.contains(&key.as_str()) {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for query parameters sort_key. Value: {key}. '{key}' is not one of the sortable keys"
            )));
        }
    }
    let mut keys: Vec<(String, bool)> = sort_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let desc = sort_dirs
                .get(i)
                .or(sort_dirs.first())
                .map(|d| d != "asc")
                .unwrap_or(true);
            (k.clone(), desc)
        })
        .collect();
    if keys.is_empty() {
        keys.push(("created_at".into(), true));
    }
    keys.push(("uuid".into(), keys.last().map(|k| k.1).unwrap_or(true)));
    // Descending keys compare reversed; the values are borrowed, not built.
    servers.sort_by(|a, b| {
        for (key, desc) in &keys {
            let ord = sort_value(a, key).cmp(&sort_value(b, key));
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
    let (page, more) = paginate(servers, &q, |sv| sv.id.clone())?;
    let with_ports: Vec<Arc<Server>> = if detail {
        page.iter()
            .filter(|sv| !sv.ports.is_empty())
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let addresses = if with_ports.is_empty() {
        HashMap::new()
    } else {
        s.read(move |conn| {
            let refs: Vec<&Server> = with_ports.iter().map(|sv| &**sv).collect();
            super::networking::port_facts_many(conn, &refs)
        })
        .await?
    };
    let links = match page.last() {
        Some(last) if more => {
            let path = if detail { "servers/detail" } else { "servers" };
            Some(next_link(&s, path, &q, &last.id))
        }
        _ => None,
    };
    // `{"servers": [...], "servers_links": [...]}`, as serde_json writes it,
    // from each server's kept (or now rendered) view.
    let mut body = Vec::with_capacity(64 + page.len() * if detail { 1536 } else { 192 });
    body.extend_from_slice(b"{\"servers\":[");
    let mut rights_of: HashMap<&str, ViewRights> = HashMap::new();
    for (i, sv) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if detail {
            let rights = *rights_of
                .entry(sv.project_id.as_str())
                .or_insert_with(|| ViewRights::of(&s, &ctx, &sv.project_id));
            let key = ViewKey {
                microversion: mv.0,
                rights: [rights.admin, rights.extended, rights.host_status],
                full: true,
                in_list: true,
            };
            let ports = addresses.get(&sv.id);
            let text = s.server_cache.view(sv, key, ports, || {
                serde_json::to_vec(&ServerView {
                    s: &s,
                    server: sv,
                    mv,
                    rights,
                    full: true,
                    in_list: true,
                    ports,
                })
            });
            body.extend_from_slice(&text.map_err(rendering)?);
        } else {
            let brief = json!({"id": sv.id, "name": sv.name, "links": s.links("servers", &sv.id)});
            serde_json::to_writer(&mut body, &brief).map_err(rendering)?;
        }
    }
    body.push(b']');
    if let Some(links) = links {
        body.extend_from_slice(b",\"servers_links\":");
        serde_json::to_writer(&mut body, &links).map_err(rendering)?;
    }
    body.push(b'}');
    Ok(json_bytes_response(body))
}

/// A view serde_json could not write (never for these types).
fn rendering(e: serde_json::Error) -> ComputeError {
    ComputeError::Internal(e.to_string())
}

fn json_bytes_response(bytes: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(bytes));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_servers(s, ctx, mv, q, false).await
}

async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_servers(s, ctx, mv, q, true).await
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let server = load_authorized(&s, &ctx, &id, "os_compute_api:servers:show").await?;
    let ports = super::networking::port_facts_of(&s, &server).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server": view(&s, &server, mv, &ctx, true, Some(&ports))}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_filters_match_like_nova_regexes() {
        assert!(regex_match("vm", "my-vm-1"));
        assert!(regex_match("^my", "my-vm-1"));
        assert!(!regex_match("^vm", "my-vm-1"));
        assert!(regex_match("1$", "my-vm-1"));
        assert!(regex_match("my.vm", "my-vm-1"));
        assert!(regex_match("^my.*1$", "my-vm-1"));
        assert!(!regex_match("2$", "my-vm-1"));
    }
}
