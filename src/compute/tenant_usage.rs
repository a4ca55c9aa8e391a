//! `os-simple-tenant-usage` (server hours, vCPU, RAM and disk hours per
//! project over a window) and `os-instance_usage_audit_log`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::hosts::hostname;
use super::{
    ComputeError, ComputeResult, ComputeState, authorize, nova_time, own_target, query_map,
};
use crate::db::now_unix;
use crate::http::json_response;
use crate::identity::Auth;
use crate::policy::Target;

type S = Arc<ComputeState>;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-instance_usage_audit_log", get(audit_list))
        .route(
            "/v2.1/os-instance_usage_audit_log/{before}",
            get(audit_show),
        )
        .route("/v2.1/os-simple-tenant-usage", get(usage_list))
        .route("/v2.1/os-simple-tenant-usage/{tenant}", get(usage_show))
}

/// Parses a `start`/`end` query value (Nova accepts these forms).
fn parse_time(value: Option<&String>, key: &str, default: i64) -> ComputeResult<i64> {
    let Some(text) = value else {
        return Ok(default);
    };
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp());
        }
    }
    Err(ComputeError::BadRequest(format!(
        "Invalid {key} time. The time must be in ISO 8601 format: {text}"
    )))
}

fn usage_window(q: &HashMap<String, String>) -> ComputeResult<(i64, i64)> {
    let now = now_unix();
    let start = parse_time(q.get("start"), "start", now)?;
    let end = parse_time(q.get("end"), "end", now)?;
    if start > end {
        return Err(ComputeError::BadRequest(
            "Invalid start time. The start time cannot occur after the end time.".into(),
        ));
    }
    Ok((start, end))
}

/// Usage of each project's servers that overlap [start, end], as Nova's
/// simple tenant usage computes it (hours up to the window's end or the
/// server's termination).
async fn usages(
    s: &S,
    project: Option<String>,
    start: i64,
    end: i64,
) -> ComputeResult<std::collections::BTreeMap<String, (Value, Vec<Value>)>> {
    let servers = s
        .read(move |conn| {
            Ok(crate::db::servers::list_servers(
                conn,
                project.as_deref(),
                true,
            )?)
        })
        .await?;
    let mut by_project: std::collections::BTreeMap<String, (f64, f64, f64, f64, Vec<Value>)> =
        Default::default();
    let now = now_unix();
    for sv in servers {
        let began = sv.launched_at.unwrap_or(sv.created_at);
        let ended = sv.terminated_at;
        if began > end || ended.is_some_and(|t| t < start) {
            continue;
        }
        let from = began.max(start);
        let to = ended.unwrap_or(now).min(end);
        let hours = ((to - from).max(0) as f64) / 3600.0;
        let f = &sv.flavor;
        let local_gb = f.disk + f.ephemeral;
        let state = if sv.deleted {
            "terminated".to_string()
        } else {
            sv.vm_state.to_string()
        };
        let entry = by_project.entry(sv.project_id.clone()).or_default();
        entry.0 += hours;
        entry.1 += hours * local_gb as f64;
        entry.2 += hours * f.ram as f64;
        entry.3 += hours * f.vcpus as f64;
        entry.4.push(json!({
            "instance_id": sv.id,
            "name": sv.name,
            "hours": hours,
            "memory_mb": f.ram,
            "local_gb": local_gb,
            "vcpus": f.vcpus,
            "tenant_id": sv.project_id,
            "flavor": f.name,
            "started_at": nova_time(began),
            "ended_at": ended.map(nova_time),
            "state": state,
            "uptime": (ended.unwrap_or(now) - began).max(0),
        }));
    }
    Ok(by_project
        .into_iter()
        .map(|(project, (h, gb, mb, cpu, list))| {
            (
                project.clone(),
                (
                    json!({
                        "tenant_id": project,
                        "start": nova_time(start),
                        "stop": nova_time(end),
                        "total_hours": h,
                        "total_local_gb_usage": gb,
                        "total_memory_mb_usage": mb,
                        "total_vcpus_usage": cpu,
                    }),
                    list,
                ),
            )
        })
        .collect())
}

async fn usage_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-simple-tenant-usage:list",
        &own_target(&ctx),
    )?;
    let q = query_map(q);
    let (start, end) = usage_window(&q)?;
    let detailed = q
        .get("detailed")
        .is_some_and(|d| d == "1" || d.eq_ignore_ascii_case("true"));
    let items: Vec<Value> = usages(&s, None, start, end)
        .await?
        .into_values()
        .map(|(mut total, list)| {
            if detailed {
                total["server_usages"] = json!(list);
            }
            total
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"tenant_usages": items}),
    ))
}

async fn usage_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(tenant): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-simple-tenant-usage:show",
        &Target::project(tenant.clone()),
    )?;
    let q = query_map(q);
    let (start, end) = usage_window(&q)?;
    let usage = match usages(&s, Some(tenant.clone()), start, end)
        .await?
        .remove(&tenant)
    {
        Some((mut total, list)) => {
            total["server_usages"] = json!(list);
            total
        }
        None => json!({}),
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({"tenant_usage": usage}),
    ))
}

// ---------------------------------------------- instance usage audit log

/// The monthly audit period that ends before `before`, as Nova computes it.
fn audit_period(before: chrono::NaiveDateTime) -> (String, String) {
    use chrono::Datelike;
    let date = before.date();
    let end = chrono::NaiveDate::from_ymd_opt(date.year(), date.month(), 1).unwrap_or(date);
    let begin = end
        .checked_sub_months(chrono::Months::new(1))
        .unwrap_or(end);
    let fmt = |d: chrono::NaiveDate| format!("{} 00:00:00", d.format("%Y-%m-%d"));
    (fmt(begin), fmt(end))
}

/// No audit task runs on this host yet (there are no instances to audit),
/// so every period reports the host as not run, as a fresh Nova does.
fn audit_view(before: chrono::NaiveDateTime) -> Value {
    let (begin, end) = audit_period(before);
    json!({
        "hosts_not_run": [hostname()],
        "log": {},
        "num_hosts": 1,
        "num_hosts_done": 0,
        "num_hosts_not_run": 1,
        "num_hosts_running": 0,
        "overall_status": "0 of 1 hosts done. 0 errors.",
        "period_beginning": begin,
        "period_ending": end,
        "total_errors": 0,
        "total_instances": 0,
    })
}

async fn audit_list(State(s): State<S>, Auth(ctx): Auth) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-instance-usage-audit-log:list",
        &own_target(&ctx),
    )?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"instance_usage_audit_logs": audit_view(chrono::Utc::now().naive_utc())}),
    ))
}

async fn audit_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(before): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-instance-usage-audit-log:show",
        &own_target(&ctx),
    )?;
    let parsed = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(&before, f).ok())
    .ok_or_else(|| ComputeError::BadRequest(format!("Invalid timestamp for date {before}")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"instance_usage_audit_log": audit_view(parsed)}),
    ))
}
