//! Glance's tasks API (`/v2/tasks`): the image import tasks yunhe records
//! (`api_image_import`, made by `POST /v2/images/{id}/import`) listed and
//! shown as Glance shows them, for admins by default (`tasks_api_access`).
//!
//! Creating a task (`POST /v2/tasks`, the legacy `import` task that fetches
//! an image from a URL) is refused with 400: Glance deprecated it for the
//! interoperable import, and yunhe fetches nothing from URLs.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::requests::{self, present};
use super::{ImageError, ImageResult, ImageState, authorize, context_is_admin};
use crate::db::image::{self as store, Task};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

/// Task types in Glance's schema.
const TYPES: &[&str] = &["import", "api_image_import", "location_import"];
const STATUSES: &[&str] = &["pending", "processing", "success", "failure"];
const SORT_KEYS: &[&str] = &["created_at", "updated_at", "id", "status", "type"];
/// Glance's `limit_param_default` and `api_limit_max`.
const LIMIT_DEFAULT: usize = 25;
const LIMIT_MAX: usize = 1000;
/// yunhe records only interoperable-import tasks.
const TASK_TYPE: &str = "api_image_import";

fn target(ctx: &AuthContext) -> Target {
    Target::new().with_opt("project_id", ctx.project_id())
}

/// The whole task (`GET /v2/tasks/{id}`, `GET /v2/images/{id}/tasks`).
pub fn full_view(task: &Task) -> Value {
    json!({
        "id": task.id,
        "type": TASK_TYPE,
        "status": task.status,
        "owner": task.owner,
        "input": task.input,
        "result": {"image_id": task.image_id},
        "message": task.message,
        "image_id": task.image_id,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "self": format!("/v2/tasks/{}", task.id),
        "schema": "/v2/schemas/task",
    })
}

/// A list entry: no input, result or message.
fn stub_view(task: &Task) -> Value {
    json!({
        "id": task.id,
        "type": TASK_TYPE,
        "status": task.status,
        "owner": task.owner,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "self": format!("/v2/tasks/{}", task.id),
        "schema": "/v2/schemas/task",
    })
}

/// What the list query asked for.
#[derive(Debug, PartialEq)]
struct ListQuery {
    status: Option<String>,
    /// A `type` filter (none of yunhe's tasks is of the legacy type).
    kind: Option<String>,
    sort_key: String,
    descending: bool,
    limit: usize,
    marker: Option<String>,
}

fn parse_query(params: &[(String, String)]) -> ImageResult<ListQuery> {
    let mut query = ListQuery {
        status: None,
        kind: None,
        sort_key: "created_at".into(),
        descending: true,
        limit: LIMIT_DEFAULT,
        marker: None,
    };
    for (key, value) in params {
        match key.as_str() {
            "status" => {
                if !STATUSES.contains(&value.as_str()) {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid status value: {value}"
                    )));
                }
                query.status = Some(value.clone());
            }
            // Glance's filter accepts only the legacy type name.
            "type" => {
                if value != "import" {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid type value: {value}"
                    )));
                }
                query.kind = Some(value.clone());
            }
            "sort_key" => {
                if !SORT_KEYS.contains(&value.as_str()) {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid sort key: {value}. It is not in the list of sort keys."
                    )));
                }
                query.sort_key = value.clone();
            }
            "sort_dir" => {
                query.descending = match value.as_str() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(ImageError::BadRequest(format!(
                            "Invalid sort direction: {value}"
                        )));
                    }
                }
            }
            "limit" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| ImageError::BadRequest("limit param must be an integer".into()))?;
                if n < 0 {
                    return Err(ImageError::BadRequest(
                        "limit param must be positive".into(),
                    ));
                }
                query.limit = (n as usize).min(LIMIT_MAX);
            }
            "marker" => query.marker = Some(value.clone()),
            _ => {}
        }
    }
    Ok(query)
}

fn sort_value<'a>(task: &'a Task, key: &str) -> &'a str {
    match key {
        "updated_at" => &task.updated_at,
        "id" => &task.id,
        "status" => &task.status,
        "type" => TASK_TYPE,
        _ => &task.created_at,
    }
}

/// Filters, sorts and pages the tasks; returns the page and whether more follow.
fn select(mut tasks: Vec<Task>, query: &ListQuery) -> ImageResult<(Vec<Task>, bool)> {
    if let Some(status) = &query.status {
        tasks.retain(|t| &t.status == status);
    }
    if query.kind.as_deref().is_some_and(|k| k != TASK_TYPE) {
        tasks.clear();
    }
    tasks.sort_by(|a, b| {
        let order = sort_value(a, &query.sort_key)
            .cmp(sort_value(b, &query.sort_key))
            .then_with(|| a.id.cmp(&b.id));
        if query.descending {
            order.reverse()
        } else {
            order
        }
    });
    let start = match &query.marker {
        Some(marker) => match tasks.iter().position(|t| &t.id == marker) {
            Some(i) => i + 1,
            None => {
                return Err(ImageError::BadRequest(format!(
                    "Invalid marker. Task {marker} could not be found."
                )));
            }
        },
        None => 0,
    };
    let more = tasks.len() > start + query.limit;
    let page = tasks.into_iter().skip(start).take(query.limit).collect();
    Ok((page, more))
}

/// `GET /v2/tasks`.
pub async fn list_tasks(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Query(params): Query<Vec<(String, String)>>,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "tasks_api_access", &target(&ctx))?;
    authorize(&s, &ctx, "get_tasks", &target(&ctx))?;
    let query = parse_query(&params)?;
    let owner = (!context_is_admin(&s, &ctx)).then(|| ctx.project_id().unwrap_or("").to_string());
    let tasks = s
        .read(move |conn| Ok(store::all_tasks(conn, owner.as_deref())?))
        .await?;
    let (page, more) = select(tasks, &query)?;
    let kept: Vec<(String, String)> = params.into_iter().filter(|(k, _)| k != "marker").collect();
    let encode = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let mut body = Map::new();
    body.insert(
        "tasks".into(),
        Value::Array(page.iter().map(stub_view).collect()),
    );
    let first = if kept.is_empty() {
        "/v2/tasks".to_string()
    } else {
        format!("/v2/tasks?{}", encode(&kept))
    };
    body.insert("first".into(), json!(first));
    body.insert("schema".into(), json!("/v2/schemas/tasks"));
    if more && let Some(last) = page.last() {
        let mut next = kept.clone();
        next.push(("marker".into(), last.id.clone()));
        body.insert("next".into(), json!(format!("/v2/tasks?{}", encode(&next))));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(body)))
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `GET /v2/tasks/{id}`.
pub async fn show_task(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "tasks_api_access", &target(&ctx))?;
    let admin = context_is_admin(&s, &ctx);
    let project = ctx.project_id().unwrap_or("").to_string();
    let lookup = id.clone();
    let task = s
        .read(move |conn| Ok(store::get_task(conn, &lookup)?))
        .await?
        .filter(|t| admin || t.owner.as_deref() == Some(project.as_str()))
        .ok_or_else(|| ImageError::NotFound(format!("Could not find task {id}")))?;
    let owner_target = Target::new().with_opt("project_id", task.owner.clone());
    authorize(&s, &ctx, "get_task", &owner_target)?;
    Ok(json_response(StatusCode::OK, &full_view(&task)))
}

/// `POST /v2/tasks`: a task of one of [`TYPES`] with its input.
#[derive(Debug, Deserialize)]
struct NewTask {
    #[serde(rename = "type", default, deserialize_with = "present")]
    kind: Option<String>,
    /// Any JSON, `null` included: only its absence is refused.
    #[serde(default, deserialize_with = "present")]
    input: Option<Value>,
}

impl NewTask {
    /// The task's type, once the body has both members and a known type.
    fn parse(bytes: &[u8]) -> ImageResult<String> {
        let task: NewTask = requests::body(bytes)?;
        let missing = |key: &str| {
            ImageError::BadRequest(format!("Unable to find `{key}` in the request body."))
        };
        let kind = task.kind.ok_or_else(|| missing("type"))?;
        task.input.ok_or_else(|| missing("input"))?;
        if !TYPES.contains(&kind.as_str()) {
            return Err(ImageError::BadRequest(format!(
                "Task type '{kind}' is not one of {TYPES:?}."
            )));
        }
        Ok(kind)
    }
}

/// `POST /v2/tasks`: the body is checked as Glance does, then the legacy
/// URL import is refused.
pub async fn create_task(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "tasks_api_access", &target(&ctx))?;
    authorize(&s, &ctx, "add_task", &target(&ctx))?;
    if body.is_empty() {
        return Err(ImageError::BadRequest("Body expected in request.".into()));
    }
    let kind = NewTask::parse(&body)?;
    Err(ImageError::BadRequest(format!(
        "Task type '{kind}' cannot be created here: yunhe does not fetch images from URLs. Upload \
         the data (PUT /v2/images/{{id}}/file) or use the interoperable import with glance-direct \
         (PUT .../stage, POST .../import)."
    )))
}

/// `DELETE /v2/tasks/{id}`: Glance refuses it (405).
pub async fn delete_task(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(_id): Path<String>,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "tasks_api_access", &target(&ctx))?;
    let mut response = json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"message": "This operation is currently not permitted on Glance Tasks. They are auto deleted after reaching the time based on their expires_at property."}),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    Ok(response)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::requests::refused;

    #[test]
    fn a_task_needs_a_known_type_and_an_input() {
        let parse = |body: &str| NewTask::parse(body.as_bytes());
        assert_eq!(
            parse(r#"{"type": "import", "input": {"import_from": "x"}}"#).ok(),
            Some("import".into())
        );
        assert_eq!(
            parse(r#"{"type": "api_image_import", "input": null}"#).ok(),
            Some("api_image_import".into())
        );
        assert_eq!(
            refused(parse(r#"{"input": {}}"#)),
            "Unable to find `type` in the request body."
        );
        assert_eq!(
            refused(parse(r#"{"type": "import"}"#)),
            "Unable to find `input` in the request body."
        );
        assert!(
            refused(parse(r#"{"type": "bogus", "input": {}}"#))
                .starts_with("Task type 'bogus' is not one of")
        );
        assert_eq!(
            refused(parse(r#"{"type": 1, "input": {}}"#)),
            "'type' is not a string."
        );
    }

    fn task(id: &str, created: &str, status: &str) -> Task {
        Task {
            id: id.into(),
            image_id: "img".into(),
            status: status.into(),
            message: String::new(),
            input: Value::Null,
            owner: Some("p".into()),
            created_at: created.into(),
            updated_at: created.into(),
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_is_checked_as_glance_does() {
        assert!(parse_query(&params(&[("status", "bogus")])).is_err());
        assert!(parse_query(&params(&[("sort_dir", "up")])).is_err());
        assert!(parse_query(&params(&[("limit", "-1")])).is_err());
        assert!(parse_query(&params(&[("limit", "x")])).is_err());
        assert!(parse_query(&params(&[("sort_key", "owner")])).is_err());
        let q = parse_query(&params(&[("limit", "5000"), ("sort_dir", "asc")])).unwrap();
        assert_eq!((q.limit, q.descending), (LIMIT_MAX, false));
    }

    #[test]
    fn newest_first_with_pages() {
        let tasks = vec![
            task("a", "2026-01-01T00:00:01Z", "success"),
            task("b", "2026-01-01T00:00:03Z", "failure"),
            task("c", "2026-01-01T00:00:02Z", "success"),
        ];
        let q = parse_query(&params(&[("limit", "2")])).unwrap();
        let (page, more) = select(tasks.clone(), &q).unwrap();
        let ids: Vec<_> = page.iter().map(|t| t.id.as_str()).collect();
        assert_eq!((ids, more), (vec!["b", "c"], true));
        let q = parse_query(&params(&[("limit", "2"), ("marker", "c")])).unwrap();
        let (page, more) = select(tasks.clone(), &q).unwrap();
        assert_eq!((page.len(), page[0].id.as_str(), more), (1, "a", false));
        let q = parse_query(&params(&[("status", "success")])).unwrap();
        assert_eq!(select(tasks.clone(), &q).unwrap().0.len(), 2);
        let q = parse_query(&params(&[("marker", "zz")])).unwrap();
        assert!(select(tasks, &q).is_err());
    }
}
