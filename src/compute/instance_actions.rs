//! `os-instance-actions`: a server's actions and their events, kept after
//! the server is deleted (2.21), paged from 2.58.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha224};

use super::access::{server_target, visible};
use super::server_list::parse_changes_since;
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, next_link, nova_time, paginate, query_map,
};
use crate::db::servers as db;
use crate::http::json_response;
use crate::identity::Auth;

type S = Arc<ComputeState>;

pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/servers/{id}/os-instance-actions", get(actions_list))
        .route(
            "/v2.1/servers/{id}/os-instance-actions/{request_id}",
            get(action_show),
        )
}

// --------------------------------------------------------- instance actions

fn action_view(a: &db::InstanceAction, with_events: bool, admin: bool, mv: Mv) -> Value {
    let mut o = json!({
        "action": a.action,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": nova_time(a.start_time),
        "message": a.message,
        "instance_uuid": a.instance_id,
    });
    if mv.at_least(58) {
        o["updated_at"] = json!(nova_time(a.updated_at));
    }
    if with_events {
        let events: Vec<Value> = a
            .events
            .iter()
            .map(|e| {
                let mut ev = json!({
                    "event": e.event,
                    "start_time": nova_time(e.start_time),
                    "finish_time": e.finish_time.map(nova_time),
                    "result": e.result,
                });
                if admin {
                    ev["traceback"] = json!(e.traceback);
                }
                if mv.at_least(62) {
                    if admin {
                        ev["host"] = json!(super::hosts::hostname());
                    }
                    ev["hostId"] = json!(hex::encode(Sha224::digest(format!(
                        "{}{}",
                        a.project_id,
                        super::hosts::hostname()
                    ))));
                }
                if mv.at_least(84) && admin {
                    ev["details"] = json!(e.traceback);
                }
                ev
            })
            .collect();
        o["events"] = json!(events);
    }
    o
}

async fn actions_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let id2 = id.clone();
    let (server, actions) = s
        .read(move |conn| Ok((db::get_server(conn, &id2)?, db::list_actions(conn, &id2)?)))
        .await?;
    // Deleted servers keep their actions (from 2.21 on).
    let admin = super::is_admin_context(&s, &ctx);
    let server = match server {
        Some(sv)
            if sv.deleted
                && mv.at_least(21)
                && (admin || ctx.project_id() == Some(sv.project_id.as_str())) =>
        {
            sv
        }
        other => visible(admin, &ctx, other, &id)?,
    };
    let target = server_target(&server);
    super::authorize(&s, &ctx, "os_compute_api:os-instance-actions:list", &target)?;
    let events = super::allows(
        &s,
        &ctx,
        "os_compute_api:os-instance-actions:events",
        &target,
    );
    let mut actions = actions;
    if mv.at_least(58) {
        if let Some(since) = q.get("changes-since") {
            let since = parse_changes_since(since)?;
            actions.retain(|a| a.updated_at >= since);
        }
        if mv.at_least(66)
            && let Some(before) = q.get("changes-before")
        {
            let before = parse_changes_since(before)?;
            actions.retain(|a| a.updated_at <= before);
        }
    }
    let (page, more) = if mv.at_least(58) {
        paginate(actions, &q, |a| a.request_id.clone())?
    } else {
        (actions, false)
    };
    let items: Vec<Value> = page
        .iter()
        .map(|a| action_view(a, false, events, mv))
        .collect();
    let mut body = json!({"instanceActions": items});
    if more && let Some(last) = page.last() {
        body["links"] = next_link(
            &s,
            &format!("servers/{id}/os-instance-actions"),
            &q,
            &last.request_id,
        );
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn action_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path((id, request_id)): Path<(String, String)>,
) -> ComputeResult<Response> {
    let id2 = id.clone();
    let rid = request_id.clone();
    let (server, action) = s
        .read(move |conn| {
            Ok((
                db::get_server(conn, &id2)?,
                db::get_action(conn, &id2, &rid)?,
            ))
        })
        .await?;
    let admin = super::is_admin_context(&s, &ctx);
    let server = match server {
        Some(sv)
            if sv.deleted
                && mv.at_least(21)
                && (admin || ctx.project_id() == Some(sv.project_id.as_str())) =>
        {
            sv
        }
        other => visible(admin, &ctx, other, &id)?,
    };
    let target = server_target(&server);
    super::authorize(&s, &ctx, "os_compute_api:os-instance-actions:show", &target)?;
    let events = super::allows(
        &s,
        &ctx,
        "os_compute_api:os-instance-actions:events",
        &target,
    );
    let action =
        action.ok_or_else(|| ComputeError::NotFound(format!("Action {request_id} not found")))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"instanceAction": action_view(&action, true, events, mv)}),
    ))
}
