//! `/v2/schemas/*` (JSON schemas glanceclient and tempest read) and the
//! `/v2/info/*` documents.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::images::{CONTAINER_FORMATS, DISK_FORMATS, VISIBILITIES};
use super::{ImageError, ImageResult, ImageState};
use crate::http::json_response;
use crate::identity::Auth;

fn nullable_string(description: &str, max: u64) -> Value {
    json!({"type": ["null", "string"], "maxLength": max, "description": description})
}

fn image_schema() -> Value {
    let mut disk: Vec<Value> = vec![Value::Null];
    disk.extend(DISK_FORMATS.iter().map(|f| json!(f)));
    let mut container: Vec<Value> = vec![Value::Null];
    container.extend(CONTAINER_FORMATS.iter().map(|f| json!(f)));
    json!({
        "name": "image",
        "additionalProperties": {"type": "string"},
        "properties": {
            "id": {"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "description": "An identifier for the image"},
            "name": nullable_string("Descriptive name for the image", 255),
            "status": {"type": "string", "readOnly": true, "description": "Status of the image",
                "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"]},
            "visibility": {"type": "string", "enum": VISIBILITIES, "description": "Scope of image accessibility"},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": {"type": ["null", "string"], "readOnly": true, "maxLength": 32, "description": "md5 hash of image contents."},
            "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "maxLength": 64, "description": "Algorithm to calculate the os_hash_value"},
            "os_hash_value": {"type": ["null", "string"], "readOnly": true, "maxLength": 128, "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo"},
            "owner": nullable_string("Owner of the image", 255),
            "size": {"type": ["null", "integer"], "readOnly": true, "description": "Size of image file in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true, "description": "Virtual size of image in bytes"},
            "container_format": {"type": ["null", "string"], "enum": container, "description": "Format of the container"},
            "disk_format": {"type": ["null", "string"], "enum": disk, "description": "Format of the disk"},
            "created_at": {"type": "string", "readOnly": true, "description": "Date and time of image registration"},
            "updated_at": {"type": "string", "readOnly": true, "description": "Date and time of the last image modification"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}, "description": "List of strings related to the image"},
            "direct_url": {"type": "string", "readOnly": true, "description": "URL to access the image file kept in external store"},
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "self": {"type": "string", "readOnly": true, "description": "An image self url"},
            "file": {"type": "string", "readOnly": true, "description": "An image file url"},
            "stores": {"type": "string", "readOnly": true, "description": "Store in which image data resides."},
            "schema": {"type": "string", "readOnly": true, "description": "An image schema url"},
            "locations": {"type": "array", "items": {"type": "object"}, "description": "A set of URLs to access the image file kept in external store"},
            "kernel_id": {"type": ["null", "string"], "description": "ID of image stored in Glance that should be used as the kernel when booting an AMI-style image.", "is_base": false},
            "ramdisk_id": {"type": ["null", "string"], "description": "ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image.", "is_base": false},
            "os_command_line": {"type": "string", "description": "The kernel command line to be used by the libvirt driver, instead of the default.", "is_base": false},
            "architecture": {"type": "string", "is_base": false},
            "os_distro": {"type": "string", "is_base": false},
            "os_version": {"type": "string", "is_base": false},
            "instance_uuid": {"type": "string", "is_base": false},
        },
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    })
}

fn images_schema() -> Value {
    json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema()},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    })
}

fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "created_at": {"type": "string", "description": "Date and time of image member creation"},
            "image_id": {"type": "string", "description": "An identifier for the image"},
            "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
            "schema": {"type": "string", "readOnly": true},
            "status": {"type": "string", "enum": ["pending", "accepted", "rejected"], "description": "The status of this image member"},
            "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
        },
    })
}

pub async fn schema(Auth(_ctx): Auth, Path(name): Path<String>) -> ImageResult<Response> {
    let body = match name.as_str() {
        "image" => image_schema(),
        "images" => images_schema(),
        "member" => member_schema(),
        "members" => json!({
            "name": "members",
            "properties": {
                "members": {"type": "array", "items": member_schema()},
                "schema": {"type": "string"},
            },
            "links": [{"rel": "describedby", "href": "{schema}"}],
        }),
        _ => {
            return Err(ImageError::NotFound(format!("No schema named {name}.")));
        }
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// Metadata-definition schemas: served so clients can read them; the
/// metadefs catalog itself is not implemented.
pub async fn metadefs_schema(Auth(_ctx): Auth, Path(name): Path<String>) -> ImageResult<Response> {
    let (schema_name, plural) = match name.as_str() {
        "namespace" => ("namespace", false),
        "namespaces" => ("namespaces", true),
        "resource_type" => ("resource_type_association", false),
        "resource_types" => ("resource_type_associations", true),
        "object" => ("object", false),
        "objects" => ("objects", true),
        "property" => ("property", false),
        "properties" => ("properties", true),
        "tag" => ("tag", false),
        "tags" => ("tags", true),
        _ => {
            return Err(ImageError::NotFound(format!(
                "No metadefs schema named {name}."
            )));
        }
    };
    let item = json!({
        "name": {"type": "string", "maxLength": 255},
        "description": {"type": "string"},
        "created_at": {"type": "string", "readOnly": true, "format": "date-time"},
        "updated_at": {"type": "string", "readOnly": true, "format": "date-time"},
    });
    let body = if plural {
        json!({
            "name": schema_name,
            "properties": {
                "first": {"type": "string"}, "next": {"type": "string"}, "schema": {"type": "string"},
                name.as_str(): {"type": "array", "items": {"type": "object", "properties": item}},
            },
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"}, {"rel": "describedby", "href": "{schema}"}],
        })
    } else {
        json!({"name": schema_name, "properties": item, "additionalProperties": false})
    };
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn info_import(Auth(_ctx): Auth) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": super::IMPORT_METHODS,
        }}),
    )
}

pub async fn info_stores(Auth(_ctx): Auth) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"stores": [{"id": "file", "description": "Files in yunhe's state directory", "default": true}]}),
    )
}

pub async fn info_usage(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
) -> ImageResult<Response> {
    let project = super::images::caller_project(&ctx);
    let (count, size) = s
        .read(move |conn| {
            let images = crate::db::image::list_images(conn)?;
            let mine: Vec<_> = images
                .iter()
                .filter(|i| i.owner.as_deref() == Some(project.as_str()))
                .collect();
            Ok((
                mine.len() as i64,
                mine.iter().filter_map(|i| i.size).sum::<i64>(),
            ))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"usage": {
            "image_size_total": {"limit": -1, "usage": size},
            "image_count_total": {"limit": -1, "usage": count},
            "image_stage_total": {"limit": -1, "usage": 0},
            "image_count_uploading": {"limit": -1, "usage": 0},
        }}),
    ))
}
