//! OS-EP-FILTER associations: endpoints and endpoint groups tied to
//! projects (`/v3/OS-EP-FILTER/projects/…`, `/endpoints/{id}/projects`,
//! `/endpoint_groups/{id}/projects|endpoints`). A project's token catalog
//! holds only its associated endpoints when it has any
//! (`service_catalog`); the endpoint groups themselves are `policies`'.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Value, json};

use super::service_catalog::{group_matches, project_endpoint_ids};
use super::targets::load_project;
use super::{
    Auth, AuthContext, IdentityError, IdentityResult, IdentityState, list_response, views,
};
use crate::db::identity::{self as store, Endpoint, EndpointGroup, extensions as ext};
use crate::http::{json_response, no_content};
use crate::policy::Target;

const PREFIX: &str = "/v3/OS-EP-FILTER";

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route(
            &format!("{PREFIX}/projects/{{project_id}}/endpoints/{{endpoint_id}}"),
            get(check_endpoint)
                .put(add_endpoint)
                .delete(remove_endpoint),
        )
        .route(
            &format!("{PREFIX}/projects/{{project_id}}/endpoints"),
            get(endpoints_for_project),
        )
        .route(
            &format!("{PREFIX}/endpoints/{{endpoint_id}}/projects"),
            get(projects_for_endpoint),
        )
        .route(
            &format!("{PREFIX}/projects/{{project_id}}/endpoint_groups"),
            get(groups_for_project),
        )
        .route(
            &format!("{PREFIX}/endpoint_groups/{{id}}/projects"),
            get(projects_for_group),
        )
        .route(
            &format!("{PREFIX}/endpoint_groups/{{id}}/endpoints"),
            get(endpoints_for_group),
        )
        .route(
            &format!("{PREFIX}/endpoint_groups/{{id}}/projects/{{project_id}}"),
            get(get_group_project)
                .put(add_group_project)
                .delete(remove_group_project),
        )
}

fn endpoint_json(e: &Endpoint, base: &str) -> Value {
    let mut value = json!({"id": e.id, "service_id": e.service_id, "interface": e.interface,
        "url": e.url, "region": e.region_id, "region_id": e.region_id, "enabled": e.enabled,
        "links": {"self": format!("{base}/endpoints/{}", e.id)}});
    if let Some(map) = value.as_object_mut() {
        for (k, v) in &e.extra {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    value
}

fn group_json(g: &EndpointGroup, base: &str) -> Value {
    json!({"id": g.id, "name": g.name, "description": g.description, "filters": g.filters,
        "links": {"self": format!("{base}/OS-EP-FILTER/endpoint_groups/{}", g.id)}})
}

fn load_endpoint(conn: &Connection, id: &str) -> IdentityResult<Endpoint> {
    store::list_endpoints(conn)?
        .into_iter()
        .find(|e| e.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find endpoint: {id}.")))
}

fn load_group(conn: &Connection, id: &str) -> IdentityResult<EndpointGroup> {
    store::list_endpoint_groups(conn)?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| IdentityError::NotFound(format!("Could not find Endpoint Group: {id}.")))
}

fn projects_json(conn: &Connection, ids: &[String], base: &str) -> IdentityResult<Vec<Value>> {
    let mut out = Vec::new();
    for id in ids {
        let project = load_project(conn, id)?;
        out.push(views::project(
            &project,
            store::project_tags(conn, id)?,
            base,
        ));
    }
    Ok(out)
}

/// Every call here is the admin's (Keystone's rules have no target).
fn authorize(s: &IdentityState, ctx: &AuthContext, rule: &str) -> IdentityResult<()> {
    s.authorize(ctx, rule, &Target::new())
}

async fn check_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:check_endpoint_in_project")?;
    s.read(move |conn| {
        load_endpoint(conn, &endpoint_id)?;
        load_project(conn, &project_id)?;
        if !ext::project_endpoint_exists(conn, &project_id, &endpoint_id)? {
            return Err(IdentityError::NotFound(format!(
                "Endpoint {endpoint_id} not found in project {project_id}"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn add_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:add_endpoint_to_project")?;
    s.write(move |tx| {
        load_endpoint(tx, &endpoint_id)?;
        load_project(tx, &project_id)?;
        ext::add_project_endpoint(tx, &project_id, &endpoint_id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn remove_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((project_id, endpoint_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:remove_endpoint_from_project")?;
    s.write(move |tx| {
        if !ext::remove_project_endpoint(tx, &project_id, &endpoint_id)? {
            return Err(IdentityError::NotFound(format!(
                "Endpoint {endpoint_id} not found in project {project_id}"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn endpoints_for_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(project_id): Path<String>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:list_endpoints_for_project")?;
    let base = s.v3_url();
    let self_url = format!("{base}/OS-EP-FILTER/projects/{project_id}/endpoints");
    let items = s
        .read(move |conn| {
            load_project(conn, &project_id)?;
            let endpoints = store::list_endpoints(conn)?;
            let ids = project_endpoint_ids(conn, &endpoints, &project_id)?;
            Ok(endpoints
                .iter()
                .filter(|e| ids.contains(&e.id))
                .map(|e| endpoint_json(e, &base))
                .collect())
        })
        .await?;
    Ok(list_response("endpoints", items, self_url))
}

async fn projects_for_endpoint(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(endpoint_id): Path<String>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:list_projects_for_endpoint")?;
    let base = s.v3_url();
    let self_url = format!("{base}/OS-EP-FILTER/endpoints/{endpoint_id}/projects");
    let items = s
        .read(move |conn| {
            load_endpoint(conn, &endpoint_id)?;
            projects_json(conn, &ext::projects_of_endpoint(conn, &endpoint_id)?, &base)
        })
        .await?;
    Ok(list_response("projects", items, self_url))
}

async fn groups_for_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(project_id): Path<String>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:list_endpoint_groups_for_project")?;
    let base = s.v3_url();
    let self_url = format!("{base}/OS-EP-FILTER/projects/{project_id}/endpoint_groups");
    let items = s
        .read(move |conn| {
            load_project(conn, &project_id)?;
            let ids = ext::endpoint_groups_of_project(conn, &project_id)?;
            Ok(store::list_endpoint_groups(conn)?
                .iter()
                .filter(|g| ids.contains(&g.id))
                .map(|g| group_json(g, &base))
                .collect())
        })
        .await?;
    Ok(list_response("endpoint_groups", items, self_url))
}

async fn projects_for_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(group_id): Path<String>,
) -> IdentityResult<Response> {
    authorize(
        &s,
        &ctx,
        "identity:list_projects_associated_with_endpoint_group",
    )?;
    let base = s.v3_url();
    let self_url = format!("{base}/OS-EP-FILTER/endpoint_groups/{group_id}/projects");
    let items = s
        .read(move |conn| {
            load_group(conn, &group_id)?;
            projects_json(
                conn,
                &ext::projects_of_endpoint_group(conn, &group_id)?,
                &base,
            )
        })
        .await?;
    Ok(list_response("projects", items, self_url))
}

async fn endpoints_for_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(group_id): Path<String>,
) -> IdentityResult<Response> {
    authorize(
        &s,
        &ctx,
        "identity:list_endpoints_associated_with_endpoint_group",
    )?;
    let base = s.v3_url();
    let self_url = format!("{base}/OS-EP-FILTER/endpoint_groups/{group_id}/endpoints");
    let items = s
        .read(move |conn| {
            let group = load_group(conn, &group_id)?;
            Ok(store::list_endpoints(conn)?
                .iter()
                .filter(|e| group_matches(&group.filters, e))
                .map(|e| endpoint_json(e, &base))
                .collect())
        })
        .await?;
    Ok(list_response("endpoints", items, self_url))
}

fn association_json(group_id: &str, project_id: &str, base: &str) -> Value {
    json!({"endpoint_group_id": group_id, "project_id": project_id,
        "links": {"self": format!("{base}/OS-EP-FILTER/endpoint_groups/{group_id}/projects/{project_id}")}})
}

fn no_association() -> IdentityError {
    IdentityError::NotFound("Endpoint Group Project Association not found".into())
}

async fn get_group_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group_id, project_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:get_endpoint_group_in_project")?;
    let base = s.v3_url();
    let value = s
        .read(move |conn| {
            load_project(conn, &project_id)?;
            load_group(conn, &group_id)?;
            if !ext::projects_of_endpoint_group(conn, &group_id)?.contains(&project_id) {
                return Err(no_association());
            }
            Ok(association_json(&group_id, &project_id, &base))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"project_endpoint_group": value}),
    ))
}

async fn add_group_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group_id, project_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:add_endpoint_group_to_project")?;
    s.write(move |tx| {
        load_project(tx, &project_id)?;
        load_group(tx, &group_id)?;
        ext::add_project_endpoint_group(tx, &group_id, &project_id)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

async fn remove_group_project(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group_id, project_id)): Path<(String, String)>,
) -> IdentityResult<Response> {
    authorize(&s, &ctx, "identity:remove_endpoint_group_from_project")?;
    s.write(move |tx| {
        load_project(tx, &project_id)?;
        load_group(tx, &group_id)?;
        if !ext::remove_project_endpoint_group(tx, &group_id, &project_id)? {
            return Err(no_association());
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}
