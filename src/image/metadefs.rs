//! Metadata definitions (`/v2/metadefs`): namespaces and, below each, its
//! objects, properties, tags and resource type associations. Horizon and
//! tempest use them to describe image properties; yunhe stores them as given.
//! Every operation is authorized by Glance's metadef rules (writes are for
//! `metadef_admin` by default).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::Connection;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::{Map, Value, json};

use super::images::{caller_project, now_string};
use super::{ImageError, ImageResult, ImageState, allows, authorize, context_is_admin, requests};
use crate::db::image as store;
use crate::http::body::{NAME_MAX, decode};
use crate::http::{json_response, no_content};
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

const RESOURCE_TYPES: &[&str] = &[
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Server",
    "OS::Nova::Aggregate",
];

/// The sub-collections of a namespace, by their URL segment.
const KINDS: &[&str] = &["objects", "properties", "tags", "resource_types"];

/// Reads a metadef write's body into its declared type; an empty body is
/// read as `{}`, as Glance does.
fn request<T: DeserializeOwned>(body: &[u8]) -> ImageResult<T> {
    if body.is_empty() {
        return Ok(decode(Value::Object(Map::new()))?);
    }
    requests::body(body)
}

/// A namespace as sent to create or replace it. The members yunhe checks or
/// fills in are declared; the rest (`display_name`, `description`, ...) is
/// stored as given, as Glance stores its namespace columns.
#[derive(Debug, Deserialize)]
struct NamespaceRequest {
    #[serde(default)]
    namespace: Option<String>,
    /// `public` or `private` (absent or `null`: private).
    #[serde(default)]
    visibility: Option<String>,
    /// Absent or `null`: false.
    #[serde(default)]
    protected: Option<bool>,
    /// Absent or `null`: the previous owner, or the caller's project.
    #[serde(default)]
    owner: Option<String>,
    /// Created with the namespace; not read by an update.
    #[serde(default)]
    resource_type_associations: Option<Vec<ItemRequest>>,
    /// Created with the namespace; not read by an update.
    #[serde(default)]
    tags: Option<Vec<ItemRequest>>,
    /// Glance creates these with the namespace too; yunhe does not (they
    /// are added one by one under `.../objects` and `.../properties`).
    #[serde(default, rename = "objects")]
    _objects: Option<IgnoredAny>,
    #[serde(default, rename = "properties")]
    _properties: Option<IgnoredAny>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// An item of a namespace as sent (an object, a property, a tag, a resource
/// type association): its name, and the rest (an object's `properties`, a
/// property's JSON-schema members) stored as given.
#[derive(Debug, Deserialize)]
struct ItemRequest {
    #[serde(default)]
    name: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl ItemRequest {
    /// The item's checked name and its document (name included).
    fn named(self) -> ImageResult<(String, Map<String, Value>)> {
        let name = required_name(self.name, "name")?;
        let mut obj = self.rest;
        obj.insert("name".into(), json!(name));
        Ok((name, obj))
    }
}

/// What a `POST .../{kind}` creates.
enum Created {
    /// The namespace's new set of tags.
    Tags(Vec<ItemRequest>),
    /// One object, property or resource type association.
    One(ItemRequest),
}

/// `POST .../tags`: the namespace's whole set of tags.
#[derive(Debug, Deserialize)]
struct TagsRequest {
    #[serde(default)]
    tags: Option<Vec<ItemRequest>>,
}

/// What is done to the items of a namespace.
#[derive(Clone, Copy)]
enum ItemOp {
    List,
    Create,
    DeleteAll,
    Show,
    CreateNamed,
    Update,
    Delete,
}

/// The Glance rule of an operation on a namespace's items (`kind` is one of
/// KINDS); the routes Glance lacks for resource types take the nearest rule.
fn item_rule(kind: &str, op: ItemOp) -> &'static str {
    use ItemOp::*;
    match (kind, op) {
        ("objects", List) => "get_metadef_objects",
        ("objects", Create | CreateNamed) => "add_metadef_object",
        // Glance deletes all objects or properties under the namespace's rule.
        ("objects" | "properties", DeleteAll) => "delete_metadef_namespace",
        ("objects", Show) => "get_metadef_object",
        ("objects", Update) => "modify_metadef_object",
        ("objects", Delete) => "delete_metadef_object",
        ("properties", List) => "get_metadef_properties",
        ("properties", Create | CreateNamed) => "add_metadef_property",
        ("properties", Show) => "get_metadef_property",
        ("properties", Update) => "modify_metadef_property",
        ("properties", Delete) => "remove_metadef_property",
        ("tags", List) => "get_metadef_tags",
        ("tags", Create) => "add_metadef_tags",
        ("tags", CreateNamed) => "add_metadef_tag",
        ("tags", DeleteAll) => "delete_metadef_tags",
        ("tags", Show) => "get_metadef_tag",
        ("tags", Update) => "modify_metadef_tag",
        ("tags", Delete) => "delete_metadef_tag",
        (_, List | Show) => "get_metadef_resource_type",
        (_, Create | CreateNamed | Update) => "add_metadef_resource_type_association",
        (_, DeleteAll | Delete) => "remove_metadef_resource_type_association",
    }
}

/// The target Glance's metadef rules read for a namespace: its owner as
/// `project_id` and its visibility.
fn namespace_target(body: &Value) -> Target {
    Target::new()
        .with_opt("project_id", body["owner"].as_str())
        .with_opt("visibility", body["visibility"].as_str())
}

/// The target of operations not on one namespace: the caller's project.
fn caller_target(ctx: &AuthContext) -> Target {
    Target::new().with_opt("project_id", ctx.project_id())
}

fn namespace_not_found(ns: &str) -> ImageError {
    ImageError::NotFound(format!("Metadata definition namespace={ns} was not found."))
}

fn check_kind(kind: &str) -> ImageResult<()> {
    if KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(ImageError::NotFound(
            "The resource could not be found.".into(),
        ))
    }
}

/// Whether Glance's database shows the namespace to the caller (`admin`:
/// the `context_is_admin` rule holds).
fn namespace_visible(ctx: &AuthContext, admin: bool, body: &Value) -> bool {
    let public = body["visibility"] == "public";
    let own = body["owner"].as_str() == Some(caller_project(ctx).as_str());
    admin || public || own
}

/// The namespace for an operation under `rule`: 404 when the caller cannot
/// see it (or may not `get_metadef_namespace` it), 403 when the rule refuses.
fn load_namespace(
    conn: &Connection,
    s: &ImageState,
    ctx: &AuthContext,
    ns: &str,
    rule: &str,
) -> ImageResult<Value> {
    let body = store::get_namespace(conn, ns)?.ok_or_else(|| namespace_not_found(ns))?;
    if !namespace_visible(ctx, context_is_admin(s, ctx), &body) {
        return Err(namespace_not_found(ns));
    }
    let target = namespace_target(&body);
    match authorize(s, ctx, rule, &target) {
        Ok(()) => Ok(body),
        Err(_)
            if rule == "get_metadef_namespace"
                || !allows(s, ctx, "get_metadef_namespace", &target) =>
        {
            Err(namespace_not_found(ns))
        }
        Err(refused) => Err(refused),
    }
}

fn required_name(name: Option<String>, key: &str) -> ImageResult<String> {
    match name {
        Some(name) if !name.is_empty() && name.chars().count() <= NAME_MAX => Ok(name),
        _ => Err(ImageError::BadRequest(format!(
            "'{key}' is a required property of at most 255 characters."
        ))),
    }
}

/// Fills in the server-side fields of a namespace.
fn namespace_body(
    request: NamespaceRequest,
    ctx: &AuthContext,
    previous: Option<&Value>,
) -> ImageResult<(String, Value)> {
    let ns = required_name(request.namespace, "namespace")?;
    let visibility = request.visibility.unwrap_or_else(|| "private".into());
    if visibility != "public" && visibility != "private" {
        return Err(ImageError::BadRequest(format!(
            "Invalid visibility: {visibility}"
        )));
    }
    let protected = request.protected.unwrap_or(false);
    let now = now_string();
    let created = previous
        .and_then(|p| p["created_at"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| now.clone());
    let owner = request
        .owner
        .or_else(|| {
            previous
                .and_then(|p| p["owner"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| caller_project(ctx));
    // Sub-collections are stored as items, not inside the namespace.
    let mut obj = request.rest;
    obj.insert("namespace".into(), json!(ns));
    obj.insert("visibility".into(), json!(visibility));
    obj.insert("protected".into(), json!(protected));
    obj.insert("owner".into(), json!(owner));
    obj.insert("created_at".into(), json!(created));
    obj.insert("updated_at".into(), json!(now));
    obj.insert("schema".into(), json!("/v2/schemas/metadefs/namespace"));
    obj.insert(
        "self".into(),
        json!(format!("/v2/metadefs/namespaces/{ns}")),
    );
    Ok((ns, Value::Object(obj)))
}

/// An item of a namespace with its timestamps.
fn item_body(kind: &str, mut obj: Map<String, Value>, previous: Option<&Value>) -> Value {
    let now = now_string();
    let created = previous
        .and_then(|p| p["created_at"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| now.clone());
    obj.insert("created_at".into(), json!(created));
    obj.insert("updated_at".into(), json!(now));
    if kind == "objects" {
        obj.entry("required").or_insert(json!([]));
        obj.entry("properties").or_insert(json!({}));
    }
    if kind == "resource_types" {
        obj.entry("prefix").or_insert(Value::Null);
        obj.entry("properties_target").or_insert(Value::Null);
    }
    Value::Object(obj)
}

/// A namespace with its resource type associations, as Glance shows it.
fn namespace_view(conn: &Connection, ns: &str, mut body: Value) -> ImageResult<Value> {
    let associations: Vec<Value> = store::list_items(conn, ns, "resource_types")?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    if !associations.is_empty() {
        body["resource_type_associations"] = json!(associations);
    }
    Ok(body)
}

/// `GET /v2/metadefs/namespaces/{ns}`: the namespace with its resource type
/// associations, objects, properties (by name) and tags (names only), each
/// left out when empty, as Glance shows it.
fn namespace_detail(conn: &Connection, ns: &str, body: Value) -> ImageResult<Value> {
    let mut body = namespace_view(conn, ns, body)?;
    let objects: Vec<Value> = store::list_items(conn, ns, "objects")?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    if !objects.is_empty() {
        body["objects"] = json!(objects);
    }
    let mut properties = Map::new();
    for (name, mut property) in store::list_items(conn, ns, "properties")? {
        if let Some(p) = property.as_object_mut() {
            p.remove("name");
        }
        properties.insert(name, property);
    }
    if !properties.is_empty() {
        body["properties"] = Value::Object(properties);
    }
    let tags: Vec<Value> = store::list_items(conn, ns, "tags")?
        .into_iter()
        .map(|(name, _)| json!({"name": name}))
        .collect();
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    Ok(body)
}

pub async fn list_resource_types(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
) -> ImageResult<Response> {
    authorize(
        &s,
        &ctx,
        "list_metadef_resource_types",
        &caller_target(&ctx),
    )?;
    let now = "2024-01-01T00:00:00Z";
    let types: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|name| json!({"name": name, "created_at": now, "updated_at": now}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"resource_types": types}),
    ))
}

pub async fn list_namespaces(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "get_metadef_namespaces", &caller_target(&ctx))?;
    let admin = context_is_admin(&s, &ctx);
    let state = s.clone();
    let namespaces = s
        .read(move |conn| {
            let mut out = Vec::new();
            for body in store::list_namespaces(conn)? {
                let visible = namespace_visible(&ctx, admin, &body)
                    && allows(
                        &state,
                        &ctx,
                        "get_metadef_namespace",
                        &namespace_target(&body),
                    );
                if visible {
                    let ns = body["namespace"].as_str().unwrap_or_default().to_string();
                    out.push(namespace_view(conn, &ns, body)?);
                }
            }
            Ok(out)
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"namespaces": namespaces, "first": "/v2/metadefs/namespaces", "schema": "/v2/schemas/metadefs/namespaces"}),
    ))
}

pub async fn create_namespace(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    body: Bytes,
) -> ImageResult<Response> {
    authorize(&s, &ctx, "add_metadef_namespace", &caller_target(&ctx))?;
    let mut request: NamespaceRequest = request(&body)?;
    let named = |list: Option<Vec<ItemRequest>>| -> ImageResult<Vec<_>> {
        list.unwrap_or_default()
            .into_iter()
            .map(ItemRequest::named)
            .collect()
    };
    let associations = named(request.resource_type_associations.take())?;
    let tags = named(request.tags.take())?;
    let (ns, body) = namespace_body(request, &ctx, None)?;
    let view = s
        .write(move |tx| {
            if store::get_namespace(tx, &ns)?.is_some() {
                return Err(ImageError::Conflict(format!(
                    "A metadata definition namespace with name={ns} already exists."
                )));
            }
            store::put_namespace(tx, None, &ns, &body)?;
            for (kind, list) in [("resource_types", &associations), ("tags", &tags)] {
                for (name, obj) in list {
                    store::insert_item(tx, &ns, kind, name, &item_body(kind, obj.clone(), None))?;
                }
            }
            namespace_view(tx, &ns, body)
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &view))
}

pub async fn show_namespace(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(ns): Path<String>,
) -> ImageResult<Response> {
    let state = s.clone();
    let view = s
        .read(move |conn| {
            let body = load_namespace(conn, &state, &ctx, &ns, "get_metadef_namespace")?;
            namespace_detail(conn, &ns, body)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view))
}

pub async fn update_namespace(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(ns): Path<String>,
    body: Bytes,
) -> ImageResult<Response> {
    let request: NamespaceRequest = request(&body)?;
    let state = s.clone();
    let view = s
        .write(move |tx| {
            let previous = load_namespace(tx, &state, &ctx, &ns, "modify_metadef_namespace")?;
            let (new_ns, body) = namespace_body(request, &ctx, Some(&previous))?;
            if new_ns != ns && store::get_namespace(tx, &new_ns)?.is_some() {
                return Err(ImageError::Conflict(format!(
                    "A metadata definition namespace with name={new_ns} already exists."
                )));
            }
            store::put_namespace(tx, Some(&ns), &new_ns, &body)?;
            namespace_view(tx, &new_ns, body)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view))
}

pub async fn delete_namespace(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path(ns): Path<String>,
) -> ImageResult<Response> {
    let state = s.clone();
    s.write(move |tx| {
        let body = load_namespace(tx, &state, &ctx, &ns, "delete_metadef_namespace")?;
        if body["protected"] == true {
            return Err(ImageError::Forbidden(format!(
                "Metadata definition namespace {ns} is protected and cannot be deleted."
            )));
        }
        store::delete_namespace(tx, &ns)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

fn list_view(kind: &str, items: Vec<(String, Value)>) -> Value {
    match kind {
        "properties" => {
            let map: Map<String, Value> = items.into_iter().collect();
            json!({"properties": map})
        }
        "resource_types" => {
            json!({"resource_type_associations": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>()})
        }
        other => {
            json!({other: items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(), "schema": format!("/v2/schemas/metadefs/{other}")})
        }
    }
}

pub async fn list_items(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind)): Path<(String, String)>,
) -> ImageResult<Response> {
    check_kind(&kind)?;
    let state = s.clone();
    let view = s
        .read(move |conn| {
            load_namespace(conn, &state, &ctx, &ns, item_rule(&kind, ItemOp::List))?;
            Ok(list_view(&kind, store::list_items(conn, &ns, &kind)?))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST .../{kind}`: one new item, or (for tags) the whole set replaced.
pub async fn create_item(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind)): Path<(String, String)>,
    body: Bytes,
) -> ImageResult<Response> {
    check_kind(&kind)?;
    // Tags come as a set to replace them all, the other kinds one by one.
    let created = if kind == "tags" {
        Created::Tags(request::<TagsRequest>(&body)?.tags.unwrap_or_default())
    } else {
        Created::One(request(&body)?)
    };
    let state = s.clone();
    let view = s
        .write(move |tx| {
            load_namespace(tx, &state, &ctx, &ns, item_rule(&kind, ItemOp::Create))?;
            let item = match created {
                Created::One(item) => item,
                Created::Tags(tags) => {
                    store::delete_items(tx, &ns, "tags", None)?;
                    let mut out = Vec::new();
                    for tag in tags {
                        let (name, tag) = tag.named()?;
                        let body = item_body("tags", tag, None);
                        store::insert_item(tx, &ns, "tags", &name, &body)?;
                        out.push(body);
                    }
                    return Ok(json!({"tags": out}));
                }
            };
            let (name, obj) = item.named()?;
            if store::get_item(tx, &ns, &kind, &name)?.is_some() {
                return Err(ImageError::Conflict(format!(
                    "{name} already exists in namespace {ns}."
                )));
            }
            let body = item_body(&kind, obj, None);
            store::insert_item(tx, &ns, &kind, &name, &body)?;
            Ok(body)
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &view))
}

pub async fn delete_all_items(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind)): Path<(String, String)>,
) -> ImageResult<Response> {
    check_kind(&kind)?;
    let state = s.clone();
    s.write(move |tx| {
        load_namespace(tx, &state, &ctx, &ns, item_rule(&kind, ItemOp::DeleteAll))?;
        store::delete_items(tx, &ns, &kind, None)?;
        Ok(())
    })
    .await?;
    Ok(no_content())
}

fn item_not_found(ns: &str, name: &str) -> ImageError {
    ImageError::NotFound(format!("{name} was not found in namespace {ns}."))
}

pub async fn show_item(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> ImageResult<Response> {
    check_kind(&kind)?;
    let state = s.clone();
    let view = s
        .read(move |conn| {
            load_namespace(conn, &state, &ctx, &ns, item_rule(&kind, ItemOp::Show))?;
            store::get_item(conn, &ns, &kind, &name)?.ok_or_else(|| item_not_found(&ns, &name))
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST .../tags/{name}`: one tag by name.
pub async fn create_named_item(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> ImageResult<Response> {
    if kind != "tags" {
        return Err(ImageError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    let state = s.clone();
    let view = s
        .write(move |tx| {
            load_namespace(tx, &state, &ctx, &ns, item_rule(&kind, ItemOp::CreateNamed))?;
            if store::get_item(tx, &ns, "tags", &name)?.is_some() {
                return Err(ImageError::Conflict(format!(
                    "Tag {name} already exists in namespace {ns}."
                )));
            }
            let mut obj = Map::new();
            obj.insert("name".into(), json!(name));
            let body = item_body("tags", obj, None);
            store::insert_item(tx, &ns, "tags", &name, &body)?;
            Ok(body)
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &view))
}

pub async fn update_item(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ImageResult<Response> {
    check_kind(&kind)?;
    let item: ItemRequest = request(&body)?;
    let state = s.clone();
    let view = s
        .write(move |tx| {
            load_namespace(tx, &state, &ctx, &ns, item_rule(&kind, ItemOp::Update))?;
            let previous = store::get_item(tx, &ns, &kind, &name)?
                .ok_or_else(|| item_not_found(&ns, &name))?;
            let (new_name, obj) = item.named()?;
            if new_name != name && store::get_item(tx, &ns, &kind, &new_name)?.is_some() {
                return Err(ImageError::Conflict(format!(
                    "{new_name} already exists in namespace {ns}."
                )));
            }
            let body = item_body(&kind, obj, Some(&previous));
            store::delete_items(tx, &ns, &kind, Some(&name))?;
            store::insert_item(tx, &ns, &kind, &new_name, &body)?;
            Ok(body)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &view))
}

pub async fn delete_item(
    State(s): State<Arc<ImageState>>,
    Auth(ctx): Auth,
    Path((ns, kind, name)): Path<(String, String, String)>,
) -> ImageResult<Response> {
    check_kind(&kind)?;
    let state = s.clone();
    s.write(move |tx| {
        load_namespace(tx, &state, &ctx, &ns, item_rule(&kind, ItemOp::Delete))?;
        if store::delete_items(tx, &ns, &kind, Some(&name))? == 0 {
            return Err(item_not_found(&ns, &name));
        }
        Ok(())
    })
    .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::requests::refused;

    fn parse<T: DeserializeOwned>(body: &str) -> ImageResult<T> {
        request(body.as_bytes())
    }

    #[test]
    fn a_namespace_declares_what_yunhe_reads_and_keeps_the_rest() {
        let ns: NamespaceRequest = parse(
            r#"{"namespace": "OS::X", "display_name": "X", "protected": null,
                "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "x_"}],
                "objects": [{"name": "o"}], "properties": {"p": {"type": "string"}}}"#,
        )
        .expect("valid namespace");
        assert_eq!(ns.namespace.as_deref(), Some("OS::X"));
        assert_eq!(ns.protected, None);
        assert_eq!(ns.rest.get("display_name"), Some(&json!("X")));
        assert!(!ns.rest.contains_key("objects") && !ns.rest.contains_key("properties"));
        let associations = ns.resource_type_associations.unwrap_or_default();
        let (name, obj) = associations
            .into_iter()
            .next()
            .map(ItemRequest::named)
            .transpose()
            .expect("named")
            .expect("one");
        assert_eq!(name, "OS::Glance::Image");
        assert_eq!(obj.get("prefix"), Some(&json!("x_")));
        let empty: NamespaceRequest = parse("").expect("empty body");
        assert_eq!(
            refused(required_name(empty.namespace, "namespace")),
            "'namespace' is a required property of at most 255 characters."
        );
    }

    #[test]
    fn malformed_metadefs_are_refused() {
        assert_eq!(
            refused(parse::<NamespaceRequest>(r#"{"protected": "yes"}"#)),
            "'protected' is not a boolean."
        );
        assert_eq!(
            refused(parse::<NamespaceRequest>(r#"{"tags": [3]}"#)),
            "'tags[0]' is not an object."
        );
        let tags: TagsRequest = parse(r#"{"tags": [{"name": ""}]}"#).expect("tags");
        let first = tags
            .tags
            .unwrap_or_default()
            .into_iter()
            .next()
            .expect("tag");
        assert_eq!(
            refused(first.named()),
            "'name' is a required property of at most 255 characters."
        );
        assert_eq!(
            refused(parse::<ItemRequest>(r#"{"name": 7}"#)),
            "'name' is not a string."
        );
        assert_eq!(
            refused(parse::<ItemRequest>("[]")),
            "The request body must be a JSON object."
        );
    }
}
