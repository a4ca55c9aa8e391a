//! Image listing: filters, sort keys and directions, markers and the
//! `next` link of `GET /v2/images`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::images::{VISIBILITIES, caller_project, image_target, view};
use super::{ImageError, ImageResult, ImageState, allows, authorize, context_is_admin};
use crate::db::image::{self as store, Image};
use crate::http::json_response;
use crate::identity::Auth;
use crate::policy::Target;

// ---------------------------------------------------------------- listing

/// A sortable value of one attribute.
#[derive(PartialEq, PartialOrd)]
enum SortValue {
    Null,
    Int(i64),
    Text(String),
}

const SORT_KEYS: &[&str] = &[
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "virtual_size",
    "id",
    "created_at",
    "updated_at",
    "min_disk",
    "min_ram",
    "owner",
    "visibility",
    "protected",
    "os_hidden",
];

fn sort_value(image: &Image, key: &str) -> SortValue {
    let text = |v: &Option<String>| v.clone().map_or(SortValue::Null, SortValue::Text);
    let int = |v: Option<i64>| v.map_or(SortValue::Null, SortValue::Int);
    match key {
        "name" => text(&image.name),
        "status" => SortValue::Text(image.status.clone()),
        "container_format" => text(&image.container_format),
        "disk_format" => text(&image.disk_format),
        "size" => int(image.size),
        "virtual_size" => int(image.virtual_size),
        "id" => SortValue::Text(image.id.clone()),
        "created_at" => SortValue::Text(image.created_at.clone()),
        "updated_at" => SortValue::Text(image.updated_at.clone()),
        "min_disk" => SortValue::Int(image.min_disk),
        "min_ram" => SortValue::Int(image.min_ram),
        "owner" => text(&image.owner),
        "visibility" => SortValue::Text(image.visibility.clone()),
        "protected" => SortValue::Int(image.protected as i64),
        "os_hidden" => SortValue::Int(image.os_hidden as i64),
        _ => SortValue::Null,
    }
}

fn parse_sort(params: &[(String, String)]) -> ImageResult<Vec<(String, bool)>> {
    let mut keys: Vec<(String, bool)> = Vec::new();
    let sort: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "sort")
        .map(|(_, v)| v.as_str())
        .collect();
    let sort_keys: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "sort_key")
        .map(|(_, v)| v.as_str())
        .collect();
    let sort_dirs: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "sort_dir")
        .map(|(_, v)| v.as_str())
        .collect();
    if !sort.is_empty() && (!sort_keys.is_empty() || !sort_dirs.is_empty()) {
        return Err(ImageError::BadRequest(
            "The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'.".into(),
        ));
    }
    let dir_of = |d: &str| -> ImageResult<bool> {
        match d {
            "asc" => Ok(true),
            "desc" => Ok(false),
            other => Err(ImageError::BadRequest(format!(
                "Invalid sort direction: {other}"
            ))),
        }
    };
    for spec in sort.iter().flat_map(|s| s.split(',')) {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let (key, dir) = match spec.split_once(':') {
            Some((k, d)) => (k, dir_of(d)?),
            None => (spec, false),
        };
        keys.push((key.to_string(), dir));
    }
    if !sort_keys.is_empty() {
        if sort_dirs.len() > 1 && sort_dirs.len() != sort_keys.len() {
            return Err(ImageError::BadRequest(
                "The number of sort_dir values must match the number of sort_key values.".into(),
            ));
        }
        for (i, key) in sort_keys.iter().enumerate() {
            let dir = match sort_dirs.get(i).or(sort_dirs.first()) {
                Some(d) => dir_of(d)?,
                None => false,
            };
            keys.push((key.to_string(), dir));
        }
    } else if let Some(d) = sort_dirs.first() {
        keys.push(("created_at".into(), dir_of(d)?));
    }
    for (key, _) in &keys {
        if !SORT_KEYS.contains(&key.as_str()) {
            return Err(ImageError::BadRequest(format!("Invalid sort key: {key}")));
        }
    }
    if keys.is_empty() {
        keys.push(("created_at".into(), false));
    }
    if !keys.iter().any(|(k, _)| k == "id") {
        let dir = keys.last().map(|(_, d)| *d).unwrap_or(false);
        keys.push(("id".into(), dir));
    }
    Ok(keys)
}

/// `in:a,b` matches any of the values; otherwise an exact match.
fn text_matches(actual: Option<&str>, wanted: &str) -> bool {
    match wanted.strip_prefix("in:") {
        Some(list) => list.split(',').any(|w| Some(w) == actual),
        None => actual == Some(wanted),
    }
}

fn parse_bool_param(key: &str, value: &str) -> ImageResult<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ImageError::BadRequest(format!(
            "Invalid value for '{key}': {value}"
        ))),
    }
}

fn parse_int_param(key: &str, value: &str) -> ImageResult<i64> {
    value
        .parse()
        .map_err(|_| ImageError::BadRequest(format!("Invalid value for '{key}': {value}")))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn list_images(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Query(params): Query<Vec<(String, String)>>,
) -> ImageResult<Response> {
    let sort = parse_sort(&params)?;
    let mut limit: usize = 25;
    let mut marker: Option<String> = None;
    let mut visibility: Option<String> = None;
    let mut member_status = "accepted".to_string();
    let mut os_hidden: Option<bool> = None;
    let mut filters: Vec<(String, String)> = Vec::new();
    for (key, value) in &params {
        match key.as_str() {
            "limit" => {
                let n = parse_int_param(key, value)?;
                if n < 0 {
                    return Err(ImageError::BadRequest(
                        "limit param must be positive".into(),
                    ));
                }
                limit = (n as usize).min(1000);
            }
            "marker" => marker = Some(value.clone()),
            "sort" | "sort_key" | "sort_dir" => {}
            "visibility" => {
                if !VISIBILITIES.contains(&value.as_str()) && value != "all" {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid visibility value: {value}"
                    )));
                }
                visibility = Some(value.clone());
            }
            "member_status" => {
                if !["pending", "accepted", "rejected", "all"].contains(&value.as_str()) {
                    return Err(ImageError::BadRequest(format!(
                        "Invalid status value: {value}"
                    )));
                }
                member_status = value.clone();
            }
            "os_hidden" => os_hidden = Some(parse_bool_param(key, value)?),
            "size_min" | "size_max" => {
                parse_int_param(key, value)?;
                filters.push((key.clone(), value.clone()));
            }
            "protected" => {
                parse_bool_param(key, value)?;
                filters.push((key.clone(), value.clone()));
            }
            _ => filters.push((key.clone(), value.clone())),
        }
    }
    let project = caller_project(&ctx);
    // Glance's "may you list images at all"; each image is then checked
    // against get_image.
    authorize(
        &s,
        &ctx,
        "get_images",
        &Target::new().with_opt("project_id", ctx.project_id()),
    )?;
    let admin = context_is_admin(&s, &ctx);
    let (images, memberships) = {
        let project = project.clone();
        s.read(move |conn| {
            let images = store::list_images(conn)?;
            let memberships: HashMap<String, String> =
                store::memberships_of(conn, &project)?.into_iter().collect();
            Ok((images, memberships))
        })
        .await?
    };
    let mut selected: Vec<Image> = images
        .into_iter()
        .filter(|image| {
            let own = !project.is_empty() && image.owner.as_deref() == Some(project.as_str());
            let membership = memberships.get(&image.id).map(String::as_str);
            let member_ok = match membership {
                Some(st) => member_status == "all" || st == member_status,
                None => false,
            };
            let visible = match visibility.as_deref() {
                None => {
                    admin
                        || own
                        || image.visibility == "public"
                        || (image.visibility == "shared" && member_ok)
                }
                Some("all") => {
                    admin
                        || own
                        || image.visibility == "public"
                        || image.visibility == "community"
                        || (image.visibility == "shared" && member_ok)
                }
                Some("public") => image.visibility == "public",
                Some("community") => image.visibility == "community",
                Some("private") => image.visibility == "private" && (admin || own),
                Some("shared") => image.visibility == "shared" && (admin || own || member_ok),
                Some(_) => false,
            };
            if !visible || !allows(&s, &ctx, "get_image", &image_target(&ctx, image)) {
                return false;
            }
            if image.os_hidden != os_hidden.unwrap_or(false) && os_hidden.is_some() {
                return false;
            }
            if os_hidden.is_none() && image.os_hidden {
                return false;
            }
            filters.iter().all(|(key, wanted)| match key.as_str() {
                "name" => text_matches(image.name.as_deref(), wanted),
                "status" => text_matches(Some(&image.status), wanted),
                "owner" => text_matches(image.owner.as_deref(), wanted),
                "id" => text_matches(Some(&image.id), wanted),
                "disk_format" => text_matches(image.disk_format.as_deref(), wanted),
                "container_format" => text_matches(image.container_format.as_deref(), wanted),
                "tag" => image.tags.iter().any(|t| t == wanted),
                "size_min" => image
                    .size
                    .is_some_and(|sz| wanted.parse::<i64>().is_ok_and(|w| sz >= w)),
                "size_max" => image
                    .size
                    .is_some_and(|sz| wanted.parse::<i64>().is_ok_and(|w| sz <= w)),
                "protected" => parse_bool_param(key, wanted).is_ok_and(|w| w == image.protected),
                "size" => wanted.parse::<i64>().is_ok_and(|w| Some(w) == image.size),
                "virtual_size" => wanted
                    .parse::<i64>()
                    .is_ok_and(|w| Some(w) == image.virtual_size),
                "min_disk" => wanted.parse::<i64>().is_ok_and(|w| w == image.min_disk),
                "min_ram" => wanted.parse::<i64>().is_ok_and(|w| w == image.min_ram),
                "checksum" => text_matches(image.checksum.as_deref(), wanted),
                "os_hash_value" => text_matches(image.os_hash_value.as_deref(), wanted),
                "created_at" | "updated_at" => true,
                other => image
                    .properties
                    .get(other)
                    .and_then(Value::as_str)
                    .is_some_and(|v| text_matches(Some(v), wanted)),
            })
        })
        .collect();
    selected.sort_by(|a, b| {
        for (key, asc) in &sort {
            let ord = sort_value(a, key)
                .partial_cmp(&sort_value(b, key))
                .unwrap_or(Ordering::Equal);
            let ord = if *asc { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    let start = match &marker {
        Some(m) => match selected.iter().position(|i| &i.id == m) {
            Some(p) => p + 1,
            None => {
                return Err(ImageError::BadRequest(format!(
                    "Invalid marker. Image {m} could not be found."
                )));
            }
        },
        None => 0,
    };
    let page: Vec<&Image> = selected.iter().skip(start).take(limit).collect();
    let mut body = json!({
        "images": page.iter().map(|i| view(i)).collect::<Vec<_>>(),
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    });
    if limit > 0
        && page.len() == limit
        && start + limit < selected.len()
        && let Some(last) = page.last()
    {
        let mut query: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "marker")
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        query.push(format!("marker={}", last.id));
        body["next"] = json!(format!("/v2/images?{}", query.join("&")));
    }
    Ok(json_response(StatusCode::OK, &body))
}
