//! Flavors: list and detail with filters, sort and pagination, show,
//! create/update/delete for admins, extra specs and flavor access.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::request::{Integer, LooseBool, body as decode_body, present};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, next_link, own_target,
    paginate, query_map,
};
use crate::db::compute::{self as store, Flavor};
use crate::db::now_unix;
use crate::http::body::{BodyError, decode};
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/flavors", get(list).post(create))
        .route("/v2.1/flavors/detail", get(list_detail))
        .route("/v2.1/flavors/{id}", get(show).put(update).delete(delete))
        .route("/v2.1/flavors/{id}/action", post(action))
        .route("/v2.1/flavors/{id}/os-flavor-access", get(access_list))
        .route(
            "/v2.1/flavors/{id}/os-extra_specs",
            get(specs_list).post(specs_create),
        )
        .route(
            "/v2.1/flavors/{id}/os-extra_specs/{key}",
            get(spec_show).put(spec_update).delete(spec_delete),
        )
}

fn not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Flavor {id} could not be found."))
}

/// The flavor's JSON at a microversion.
fn view(s: &ComputeState, f: &Flavor, mv: Mv, detail: bool, show_specs: bool) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(f.id));
    obj.insert("name".into(), json!(f.name));
    obj.insert("links".into(), s.links("flavors", &f.id));
    if mv.at_least(55) {
        obj.insert("description".into(), json!(f.description));
    }
    if !detail {
        return Value::Object(obj);
    }
    obj.insert("ram".into(), json!(f.ram));
    obj.insert("vcpus".into(), json!(f.vcpus));
    obj.insert("disk".into(), json!(f.disk));
    obj.insert("OS-FLV-EXT-DATA:ephemeral".into(), json!(f.ephemeral));
    obj.insert("OS-FLV-DISABLED:disabled".into(), json!(f.disabled));
    obj.insert(
        "swap".into(),
        if f.swap == 0 && !mv.at_least(75) {
            json!("")
        } else {
            json!(f.swap)
        },
    );
    obj.insert("rxtx_factor".into(), json!(f.rxtx_factor));
    obj.insert("os-flavor-access:is_public".into(), json!(f.is_public));
    if mv.at_least(61) && show_specs {
        // Nova shows extra specs to those os-flavor-extra-specs:index allows.
        obj.insert("extra_specs".into(), json!(f.extra_specs));
    }
    Value::Object(obj)
}

/// May this caller see this flavor? Admin contexts see private flavors.
fn visible(admin: bool, f: &Flavor, accessible: &[String]) -> bool {
    admin || f.is_public || accessible.contains(&f.id)
}

/// Whether flavor views carry `extra_specs` for this caller (2.61).
fn shows_specs(s: &ComputeState, ctx: &AuthContext) -> bool {
    super::allows(
        s,
        ctx,
        "os_compute_api:os-flavor-extra-specs:index",
        &own_target(ctx),
    )
}

/// Projects whose flavor access a [`FlavorCache`] holds at most (then it starts afresh).
const CACHED_PROJECTS: usize = 1000;

/// What `GET /flavors` and `/flavors/detail` read from the state file, kept in memory with the
/// state file's write generation ([`crate::db::Db::write_generation`]) it was read at: every
/// write (any service's) makes the next list read again, so a flavor created, changed, deleted
/// or shared shows in the next list. Visibility, policy and the query's filters still run per
/// request over it; what is kept of the rendering is each flavor's JSON text per view
/// ([`ViewKind`]), not which flavors a caller gets.
pub struct FlavorCache {
    generation: u64,
    flavors: Arc<Vec<Flavor>>,
    /// Each project's private flavors it was given access to.
    access: HashMap<String, Arc<Vec<String>>>,
    /// Each flavor's JSON text (in `flavors`' order) for each kind of view asked so far.
    rendered: HashMap<ViewKind, Arc<Vec<String>>>,
}

/// What a flavor's JSON depends on besides the flavor: the list's kind and the parts of the
/// microversion and of the caller's rights [`view`] looks at.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ViewKind {
    detail: bool,
    /// 2.55: `description`.
    description: bool,
    /// 2.61 and allowed `os-flavor-extra-specs:index`: `extra_specs`.
    specs: bool,
    /// 2.75: `swap` 0 as a number.
    swap_number: bool,
}

impl ViewKind {
    fn of(mv: Mv, detail: bool, show_specs: bool) -> ViewKind {
        ViewKind {
            detail,
            description: mv.at_least(55),
            specs: detail && mv.at_least(61) && show_specs,
            swap_number: detail && mv.at_least(75),
        }
    }
}

/// The flavors, the caller's project's flavor access, and the generation they were read at.
type Loaded = (Arc<Vec<Flavor>>, Arc<Vec<String>>, u64);

async fn load_visible(s: &S, ctx: &AuthContext) -> ComputeResult<Loaded> {
    let project = ctx.project_id().unwrap_or("").to_string();
    // Read before the state file: a write that commits meanwhile leaves the rows read now
    // under the old generation, so the next request reads again.
    let generation = s.db.write_generation();
    if let Ok(cache) = s.flavor_cache.lock()
        && let Some(c) = cache.as_ref()
        && c.generation == generation
        && let Some(access) = c.access.get(&project)
    {
        return Ok((c.flavors.clone(), access.clone(), generation));
    }
    let wanted = project.clone();
    let (flavors, accessible) = s
        .read(move |conn| {
            let flavors = store::list_flavors(conn)?;
            let accessible = store::flavors_of_project(conn, &wanted)?;
            Ok((Arc::new(flavors), Arc::new(accessible)))
        })
        .await?;
    if let Ok(mut cache) = s.flavor_cache.lock() {
        match cache.as_mut() {
            Some(c) if c.generation == generation && c.access.len() < CACHED_PROJECTS => {
                c.access.insert(project, accessible.clone());
            }
            Some(c) if c.generation > generation => {}
            _ => {
                *cache = Some(FlavorCache {
                    generation,
                    flavors: flavors.clone(),
                    access: HashMap::from([(project, accessible.clone())]),
                    rendered: HashMap::new(),
                })
            }
        }
    }
    Ok((flavors, accessible, generation))
}

/// Each of `flavors`' JSON text for views of `kind`: kept with the cache when `flavors` is
/// the cache's list (same generation), rendered afresh otherwise.
fn rendered_views(
    s: &ComputeState,
    flavors: &Arc<Vec<Flavor>>,
    generation: u64,
    kind: ViewKind,
    mv: Mv,
    show_specs: bool,
) -> Arc<Vec<String>> {
    let cached = |c: &FlavorCache| c.generation == generation && Arc::ptr_eq(&c.flavors, flavors);
    if let Ok(cache) = s.flavor_cache.lock()
        && let Some(c) = cache.as_ref()
        && cached(c)
        && let Some(views) = c.rendered.get(&kind)
    {
        return views.clone();
    }
    let views: Arc<Vec<String>> = Arc::new(
        flavors
            .iter()
            .map(|f| view(s, f, mv, kind.detail, show_specs).to_string())
            .collect(),
    );
    if let Ok(mut cache) = s.flavor_cache.lock()
        && let Some(c) = cache.as_mut()
        && cached(c)
    {
        c.rendered.insert(kind, views.clone());
    }
    views
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_flavors(s, ctx, mv, query_map(q), false).await
}

async fn list_detail(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    list_flavors(s, ctx, mv, query_map(q), true).await
}

fn parse_is_public(text: Option<&String>) -> ComputeResult<Option<bool>> {
    match text.map(|t| t.to_ascii_lowercase()) {
        None => Ok(Some(true)),
        Some(t) if t == "none" => Ok(None),
        Some(t) if ["true", "t", "1", "yes", "y", "on"].contains(&t.as_str()) => Ok(Some(true)),
        Some(t) if ["false", "f", "0", "no", "n", "off"].contains(&t.as_str()) => Ok(Some(false)),
        Some(t) => Err(ComputeError::BadRequest(format!(
            "Invalid is_public filter [{t}]"
        ))),
    }
}

async fn list_flavors(
    s: S,
    ctx: Arc<AuthContext>,
    mv: Mv,
    q: HashMap<String, String>,
    detail: bool,
) -> ComputeResult<Response> {
    let (flavors, accessible, generation) = load_visible(&s, &ctx).await?;
    let admin = super::is_admin_context(&s, &ctx);
    let is_public = parse_is_public(q.get("is_public"))?;
    let min_ram = match q.get("minRam") {
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ComputeError::BadRequest(format!("Invalid minRam filter [{v}]")))?,
        ),
        None => None,
    };
    let min_disk = match q.get("minDisk") {
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| ComputeError::BadRequest(format!("Invalid minDisk filter [{v}]")))?,
        ),
        None => None,
    };
    // Indices into `flavors`, whose rendered views are kept in the same order.
    let mut items: Vec<usize> = (0..flavors.len()).collect();
    items.retain(|&i| {
        let f = &flavors[i];
        let shown = if admin {
            is_public.is_none_or(|p| f.is_public == p)
        } else {
            // Non-admins see public flavors and the private ones shared
            // with their project, whatever is_public says, as Nova does.
            match is_public {
                Some(false) => !f.is_public && accessible.contains(&f.id),
                _ => f.is_public || accessible.contains(&f.id),
            }
        };
        shown && min_ram.is_none_or(|m| f.ram >= m) && min_disk.is_none_or(|m| f.disk >= m)
    });
    let sort_key = q.get("sort_key").map(String::as_str).unwrap_or("flavorid");
    let descending = match q.get("sort_dir").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid sort direction {other}"
            )));
        }
    };
    let cmp: fn(&&Flavor, &&Flavor) -> std::cmp::Ordering = match sort_key {
        "flavorid" | "id" => |a, b| a.id.cmp(&b.id),
        "name" => |a, b| a.name.cmp(&b.name),
        "memory_mb" => |a, b| a.ram.cmp(&b.ram).then(a.id.cmp(&b.id)),
        "vcpus" => |a, b| a.vcpus.cmp(&b.vcpus).then(a.id.cmp(&b.id)),
        "root_gb" => |a, b| a.disk.cmp(&b.disk).then(a.id.cmp(&b.id)),
        "ephemeral_gb" => |a, b| a.ephemeral.cmp(&b.ephemeral).then(a.id.cmp(&b.id)),
        "swap" => |a, b| a.swap.cmp(&b.swap).then(a.id.cmp(&b.id)),
        "rxtx_factor" => |a, b| {
            a.rxtx_factor
                .total_cmp(&b.rxtx_factor)
                .then(a.id.cmp(&b.id))
        },
        "created_at" => |a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)),
        "is_public" => |a, b| a.is_public.cmp(&b.is_public).then(a.id.cmp(&b.id)),
        "disabled" => |a, b| a.disabled.cmp(&b.disabled).then(a.id.cmp(&b.id)),
        "description" => |a, b| a.description.cmp(&b.description).then(a.id.cmp(&b.id)),
        other => {
            return Err(ComputeError::BadRequest(format!(
                "Invalid sort_key {other}"
            )));
        }
    };
    items.sort_by(|&a, &b| cmp(&&flavors[a], &&flavors[b]));
    if descending {
        items.reverse();
    }
    let (page, more) = paginate(items, &q, |&i| flavors[i].id.clone())?;
    let show_specs = shows_specs(&s, &ctx);
    let kind = ViewKind::of(mv, detail, show_specs);
    let views = rendered_views(&s, &flavors, generation, kind, mv, show_specs);
    // `{"flavors":[...],"flavors_links":[...]}`, as serde_json writes the same object (its
    // keys in order), from the kept texts.
    let mut body =
        String::with_capacity(16 + page.iter().map(|&i| views[i].len() + 1).sum::<usize>());
    body.push_str("{\"flavors\":[");
    for (n, &i) in page.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&views[i]);
    }
    body.push(']');
    if more && let Some(&last) = page.last() {
        let path = if detail { "flavors/detail" } else { "flavors" };
        body.push_str(",\"flavors_links\":");
        body.push_str(&next_link(&s, path, &q, &flavors[last].id).to_string());
    }
    body.push('}');
    Ok(crate::http::json_text_response(StatusCode::OK, body))
}

async fn get_visible(s: &S, ctx: &AuthContext, id: String) -> ComputeResult<Flavor> {
    let project = ctx.project_id().unwrap_or("").to_string();
    let wanted = id.clone();
    let (flavor, accessible) = s
        .read(move |conn| {
            Ok((
                store::get_flavor(conn, &wanted)?,
                store::flavors_of_project(conn, &project)?,
            ))
        })
        .await?;
    match flavor {
        Some(f) if visible(super::is_admin_context(s, ctx), &f, &accessible) => Ok(f),
        _ => Err(not_found(&id)),
    }
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let f = get_visible(&s, &ctx, id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"flavor": view(&s, &f, mv, true, shows_specs(&s, &ctx))}),
    ))
}

/// The body of `POST /flavors` (Nova's `flavor_manage.create` schemas;
/// `description` from 2.55).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorCreate {
    flavor: NewFlavor,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFlavor {
    name: String,
    ram: Integer,
    vcpus: Integer,
    disk: Integer,
    #[serde(default)]
    id: Option<FlavorId>,
    #[serde(
        rename = "OS-FLV-EXT-DATA:ephemeral",
        default,
        deserialize_with = "present"
    )]
    ephemeral: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    swap: Option<Integer>,
    #[serde(default, deserialize_with = "present")]
    rxtx_factor: Option<RxtxFactor>,
    #[serde(
        rename = "os-flavor-access:is_public",
        default,
        deserialize_with = "present"
    )]
    is_public: Option<LooseBool>,
    #[serde(default)]
    description: Option<String>,
}

impl NewFlavor {
    fn check_microversion(&self, mv: Mv) -> ComputeResult<()> {
        if self.description.is_some() && !mv.at_least(55) {
            return Err(BodyError::Unexpected("flavor.description".into()).into());
        }
        Ok(())
    }
}

/// A flavor id as given: a string, a number (kept as its digits), or
/// `null`/`"auto"` for a generated UUID.
#[derive(Debug)]
enum FlavorId {
    Auto,
    Given(String),
}

impl<'de> Deserialize<'de> for FlavorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(FlavorId::Auto),
            Value::String(t) if t == "auto" => Ok(FlavorId::Auto),
            Value::String(t) => Ok(FlavorId::Given(t)),
            Value::Number(n) => Ok(FlavorId::Given(n.to_string())),
            v => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

/// `rxtx_factor`: a positive float (or a string of one) up to a float's
/// largest value.
#[derive(Debug, Clone, Copy)]
struct RxtxFactor(f64);

impl<'de> Deserialize<'de> for RxtxFactor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let n = match &v {
            Value::Number(n) => n.as_f64(),
            Value::String(t) => t.parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n > 0.0 && n <= 3.40282e38 => Ok(RxtxFactor(n)),
            _ => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

/// The body of `PUT /flavors/{id}` (2.55): `description` required, `null`
/// allowed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorUpdate {
    flavor: FlavorDescription,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlavorDescription {
    #[serde(deserialize_with = "Option::deserialize")]
    description: Option<String>,
}

fn check_flavor_name(name: String) -> ComputeResult<String> {
    if name.is_empty()
        || name.chars().count() > 255
        || name.trim() != name
        || name.chars().any(|c| c.is_control())
    {
        return Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute name. Value: {name}. '{name}' does not match a valid flavor name"
        )));
    }
    Ok(name)
}

fn check_flavor_id(id: &str) -> ComputeResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 255
        && !id.starts_with(' ')
        && !id.ends_with(' ')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ". _-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ComputeError::BadRequest(format!(
            "Invalid input for field/attribute id. Value: {id}. '{id}' does not match a valid flavor id"
        )))
    }
}

fn check_description(description: Option<String>) -> ComputeResult<Option<String>> {
    match description {
        Some(d) if d.chars().count() > 65535 => Err(ComputeError::BadRequest(
            "Invalid input for field/attribute description.".into(),
        )),
        d => Ok(d),
    }
}

const INT_MAX: i64 = i32::MAX as i64;

/// The flavor a create body asks for, every member checked.
fn new_flavor(body: &[u8], mv: Mv) -> ComputeResult<Flavor> {
    let f = decode_body::<FlavorCreate>(body)?.flavor;
    f.check_microversion(mv)?;
    let name = check_flavor_name(f.name)?;
    let ram = f.ram.within("ram", 1, INT_MAX)?;
    let vcpus = f.vcpus.within("vcpus", 1, INT_MAX)?;
    let disk = f.disk.within("disk", 0, INT_MAX)?;
    let opt_int = |value: Option<Integer>, key: &str| match value {
        None => Ok(0),
        Some(v) => v.within(key, 0, INT_MAX),
    };
    let ephemeral = opt_int(f.ephemeral, "OS-FLV-EXT-DATA:ephemeral")?;
    let swap = opt_int(f.swap, "swap")?;
    let rxtx_factor = f.rxtx_factor.map_or(1.0, |r| r.0);
    let is_public = f.is_public.is_none_or(|p| p.0);
    let id = match f.id.unwrap_or(FlavorId::Auto) {
        FlavorId::Auto => uuid::Uuid::new_v4().to_string(),
        FlavorId::Given(t) => {
            check_flavor_id(&t)?;
            t
        }
    };
    let description = check_description(f.description)?;
    Ok(Flavor {
        id,
        name,
        ram,
        vcpus,
        disk,
        ephemeral,
        swap,
        rxtx_factor,
        is_public,
        disabled: false,
        description,
        created_at: now_unix(),
        extra_specs: BTreeMap::new(),
    })
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-manage:create",
        &own_target(&ctx),
    )?;
    let flavor = new_flavor(&body, mv)?;
    let stored = flavor.clone();
    s.write(move |tx| Ok(store::insert_flavor(tx, &stored)?))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"flavor": view(&s, &flavor, mv, true, shows_specs(&s, &ctx))}),
    ))
}

async fn update(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    if !mv.at_least(55) {
        return Err(ComputeError::NotFound(
            "The resource could not be found.".into(),
        ));
    }
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-manage:update",
        &own_target(&ctx),
    )?;
    let f = decode_body::<FlavorUpdate>(&body)?.flavor;
    let description = check_description(f.description)?;
    let wanted = id.clone();
    let flavor = s
        .write(move |tx| {
            if !store::update_flavor_description(tx, &wanted, description.as_deref())? {
                return Err(not_found(&wanted));
            }
            store::get_flavor(tx, &wanted)?.ok_or_else(|| not_found(&wanted))
        })
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"flavor": view(&s, &flavor, mv, true, shows_specs(&s, &ctx))}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-manage:delete",
        &own_target(&ctx),
    )?;
    s.write(move |tx| {
        if store::delete_flavor(tx, &id)? {
            Ok(())
        } else {
            Err(not_found(&id))
        }
    })
    .await?;
    Ok(empty(StatusCode::ACCEPTED))
}

// ------------------------------------------------------------ flavor access

fn access_json(flavor_id: &str, projects: &[String]) -> Value {
    let list: Vec<Value> = projects
        .iter()
        .map(|p| json!({"flavor_id": flavor_id, "tenant_id": p}))
        .collect();
    json!({"flavor_access": list})
}

async fn access_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-access",
        &own_target(&ctx),
    )?;
    let wanted = id.clone();
    let (flavor, projects) = s
        .read(move |conn| {
            Ok((
                store::get_flavor(conn, &wanted)?,
                store::flavor_projects(conn, &wanted)?,
            ))
        })
        .await?;
    let flavor = flavor.ok_or_else(|| not_found(&id))?;
    if flavor.is_public {
        return Err(ComputeError::NotFound(
            "Access list not available for public flavors.".into(),
        ));
    }
    Ok(json_response(StatusCode::OK, &access_json(&id, &projects)))
}

async fn action(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    let body: Map<String, Value> = decode_body(&body)?;
    let (name, add) = if body.contains_key("addTenantAccess") {
        ("addTenantAccess", true)
    } else if body.contains_key("removeTenantAccess") {
        ("removeTenantAccess", false)
    } else {
        return Err(ComputeError::BadRequest("There is no such action.".into()));
    };
    let rule = if add {
        "os_compute_api:os-flavor-access:add_tenant_access"
    } else {
        "os_compute_api:os-flavor-access:remove_tenant_access"
    };
    authorize(&s, &ctx, rule, &own_target(&ctx))?;
    let request: AccessAction = decode(Value::Object(body))?;
    let Some(TenantAccess { tenant }) = request.add.or(request.remove) else {
        return Err(BodyError::Missing(name.into()).into());
    };
    if tenant.is_empty() || tenant.len() > 255 {
        return Err(ComputeError::BadRequest(
            "Invalid input for field/attribute tenant.".into(),
        ));
    }
    let flavor_id = id.clone();
    let projects = s
        .write(move |tx| {
            let flavor = store::get_flavor(tx, &flavor_id)?.ok_or_else(|| not_found(&flavor_id))?;
            if add {
                if flavor.is_public {
                    return Err(ComputeError::Conflict(
                        "Can not add access to a public flavor.".into(),
                    ));
                }
                if !store::add_flavor_project(tx, &flavor_id, &tenant)? {
                    return Err(ComputeError::Conflict(format!(
                        "Flavor access already exists for flavor {flavor_id} and project {tenant} combination."
                    )));
                }
            } else if !store::remove_flavor_project(tx, &flavor_id, &tenant)? {
                return Err(ComputeError::NotFound(format!(
                    "Flavor access not found for {flavor_id} / {tenant} combination."
                )));
            }
            Ok(store::flavor_projects(tx, &flavor_id)?)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &access_json(&id, &projects)))
}

// -------------------------------------------------------------- extra specs

/// `addTenantAccess` / `removeTenantAccess` (the one the body names; add
/// wins if both are there).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessAction {
    #[serde(rename = "addTenantAccess", default, deserialize_with = "present")]
    add: Option<TenantAccess>,
    #[serde(rename = "removeTenantAccess", default, deserialize_with = "present")]
    remove: Option<TenantAccess>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantAccess {
    tenant: String,
}

/// The body of `POST /flavors/{id}/os-extra_specs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecsCreate {
    extra_specs: BTreeMap<String, SpecValue>,
}

/// An extra spec's value: a string of at most 255 characters, or a number
/// or boolean kept as its text (`True`/`False`, as Nova stores them).
#[derive(Debug, Clone)]
struct SpecValue(String);

impl<'de> Deserialize<'de> for SpecValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(v) if v.chars().count() <= 255 => Ok(SpecValue(v)),
            Value::Number(n) => Ok(SpecValue(n.to_string())),
            Value::Bool(b) => Ok(SpecValue(if b { "True" } else { "False" }.into())),
            other => Err(de::Error::custom(format!("{other}."))),
        }
    }
}

fn check_specs(specs: BTreeMap<String, SpecValue>) -> ComputeResult<BTreeMap<String, String>> {
    let mut checked = BTreeMap::new();
    for (key, SpecValue(value)) in specs {
        let key_ok = !key.is_empty()
            && key.len() <= 255
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
        if !key_ok {
            return Err(ComputeError::BadRequest(format!(
                "Invalid input for field/attribute extra_specs. Key '{key}' is not valid."
            )));
        }
        checked.insert(key, value);
    }
    Ok(checked)
}

async fn specs_list(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-extra-specs:index",
        &own_target(&ctx),
    )?;
    let f = get_visible(&s, &ctx, id).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"extra_specs": f.extra_specs}),
    ))
}

async fn specs_create(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-extra-specs:create",
        &own_target(&ctx),
    )?;
    let specs = check_specs(decode_body::<SpecsCreate>(&body)?.extra_specs)?;
    let given = specs.clone();
    s.write(move |tx| {
        store::get_flavor(tx, &id)?.ok_or_else(|| not_found(&id))?;
        Ok(store::set_extra_specs(tx, &id, &specs)?)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"extra_specs": given}),
    ))
}

async fn spec_show(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-extra-specs:show",
        &own_target(&ctx),
    )?;
    let f = get_visible(&s, &ctx, id.clone()).await?;
    match f.extra_specs.get(&key) {
        Some(value) => Ok(json_response(StatusCode::OK, &json!({key: value}))),
        None => Err(ComputeError::NotFound(format!(
            "Flavor {id} has no extra specs with key {key}."
        ))),
    }
}

async fn spec_update(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-extra-specs:update",
        &own_target(&ctx),
    )?;
    // An extra spec's body is `{key: value}` with the key the URI's.
    let body: Map<String, Value> = decode_body(&body)?;
    if body.len() != 1 {
        return Err(ComputeError::BadRequest(
            "Request body contains too many items".into(),
        ));
    }
    if !body.contains_key(&key) {
        return Err(ComputeError::BadRequest(
            "Request body and URI mismatch".into(),
        ));
    }
    let specs = check_specs(decode(Value::Object(body))?)?;
    let given = specs.clone();
    s.write(move |tx| {
        store::get_flavor(tx, &id)?.ok_or_else(|| not_found(&id))?;
        Ok(store::set_extra_specs(tx, &id, &specs)?)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &json!(given)))
}

async fn spec_delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path((id, key)): Path<(String, String)>,
) -> ComputeResult<Response> {
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-flavor-extra-specs:delete",
        &own_target(&ctx),
    )?;
    s.write(move |tx| {
        store::get_flavor(tx, &id)?.ok_or_else(|| not_found(&id))?;
        if store::delete_extra_spec(tx, &id, &key)? {
            Ok(())
        } else {
            Err(ComputeError::NotFound(format!(
                "Flavor {id} has no extra specs with key {key}."
            )))
        }
    })
    .await?;
    Ok(empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::request::refused;

    #[test]
    fn flavor_ids_follow_nova_rules() {
        assert!(check_flavor_id("m1.nano-2_x").is_ok());
        assert!(check_flavor_id(" lead").is_err());
        assert!(check_flavor_id("a/b").is_err());
        assert!(check_flavor_id("").is_err());
    }

    #[test]
    fn flavor_create_accepts_novas_forms() {
        let body = json!({"flavor": {
            "name": "m1.x", "ram": "512", "vcpus": 2, "disk": "0", "id": 7,
            "swap": "0", "rxtx_factor": "1.5", "os-flavor-access:is_public": "False",
            "OS-FLV-EXT-DATA:ephemeral": 1, "description": "d"
        }});
        let f = new_flavor(body.to_string().as_bytes(), Mv(55)).expect("accepted");
        assert_eq!((f.id.as_str(), f.ram, f.vcpus, f.disk), ("7", 512, 2, 0));
        assert_eq!((f.ephemeral, f.swap, f.rxtx_factor), (1, 0, 1.5));
        assert!(!f.is_public);
        assert_eq!(f.description.as_deref(), Some("d"));
        let minimal = json!({"flavor": {"name": "a", "ram": 1, "vcpus": 1, "disk": 0, "id": null}});
        let f = new_flavor(minimal.to_string().as_bytes(), Mv(1)).expect("accepted");
        assert!(f.is_public && f.rxtx_factor == 1.0 && f.id.len() == 36);
    }

    #[test]
    fn flavor_create_refuses_with_novas_wording() {
        let create = |flavor: Value, mv: u16| {
            refused(new_flavor(
                json!({"flavor": flavor}).to_string().as_bytes(),
                Mv(mv),
            ))
        };
        let base = json!({"name": "a", "ram": 1, "vcpus": 1, "disk": 0});
        let with = |key: &str, value: Value| {
            let mut f = base.clone();
            f[key] = value;
            f
        };
        assert_eq!(
            create(json!({"ram": 1, "vcpus": 1, "disk": 0}), 1),
            "Invalid input for field/attribute flavor. 'name' is a required property"
        );
        assert_eq!(
            create(with("ram", json!(0)), 1),
            "Invalid input for field/attribute ram. Value: 0. 0 is not in the range 1..2147483647"
        );
        assert_eq!(
            create(with("vcpus", json!("x")), 1),
            "Invalid input for field/attribute vcpus. Value: \"x\". \"x\" is not an integer"
        );
        assert_eq!(
            create(with("swap", Value::Null), 1),
            "Invalid input for field/attribute swap. Value: null. null is not an integer"
        );
        assert_eq!(
            create(with("rxtx_factor", json!(0)), 1),
            "Invalid input for field/attribute rxtx_factor. Value: 0."
        );
        assert_eq!(
            create(with("os-flavor-access:is_public", json!(1)), 1),
            "Invalid input for field/attribute os-flavor-access:is_public. Value: 1."
        );
        assert_eq!(
            create(with("id", json!("a/b")), 1),
            "Invalid input for field/attribute id. Value: a/b. 'a/b' does not match a valid flavor id"
        );
        assert_eq!(
            create(with("name", json!(" a")), 1),
            "Invalid input for field/attribute name. Value:  a. ' a' does not match a valid flavor name"
        );
        assert_eq!(
            create(with("name", json!(1)), 1),
            "Invalid input for field/attribute name. Value is not a string."
        );
        assert_eq!(
            create(with("description", json!("d")), 54),
            "Invalid input for field/attribute flavor. Additional properties are not allowed ('description' was unexpected)"
        );
        assert_eq!(
            create(with("bogus", json!(1)), 55),
            "Invalid input for field/attribute flavor. Additional properties are not allowed ('bogus' was unexpected)"
        );
        assert_eq!(
            refused(new_flavor(br#"{"flavor": 1}"#, Mv(1))),
            "Invalid input for field/attribute flavor. Value is not an object."
        );
    }

    #[test]
    fn flavor_update_needs_a_description() {
        let update = |body: Value| decode_body::<FlavorUpdate>(body.to_string().as_bytes());
        assert_eq!(
            update(json!({"flavor": {"description": null}}))
                .expect("null is allowed")
                .flavor
                .description,
            None
        );
        assert_eq!(
            refused(update(json!({"flavor": {}}))),
            "Invalid input for field/attribute flavor. 'description' is a required property"
        );
    }

    #[test]
    fn access_and_extra_specs_bodies() {
        let access: AccessAction =
            decode(json!({"removeTenantAccess": {"tenant": "p"}})).expect("accepted");
        assert_eq!(access.remove.map(|t| t.tenant).as_deref(), Some("p"));
        assert_eq!(
            refused(decode::<AccessAction>(json!({"addTenantAccess": {}})).map_err(Into::into)),
            "Invalid input for field/attribute addTenantAccess. 'tenant' is a required property"
        );
        let specs: SpecsCreate =
            decode(json!({"extra_specs": {"a": "x", "b": 2, "c": true}})).expect("accepted");
        let specs = check_specs(specs.extra_specs).expect("valid keys");
        assert_eq!(specs.get("b").map(String::as_str), Some("2"));
        assert_eq!(specs.get("c").map(String::as_str), Some("True"));
        assert_eq!(
            refused(decode::<SpecsCreate>(json!({"extra_specs": {"a": [1]}})).map_err(Into::into)),
            "Invalid input for field/attribute a. Value: [1]."
        );
        let bad_key: BTreeMap<String, SpecValue> = decode(json!({"a/b": "x"})).expect("decoded");
        assert_eq!(
            refused(check_specs(bad_key)),
            "Invalid input for field/attribute extra_specs. Key 'a/b' is not valid."
        );
    }

    #[test]
    fn is_public_filter_parses() {
        assert_eq!(parse_is_public(None).ok(), Some(Some(true)));
        assert_eq!(parse_is_public(Some(&"None".into())).ok(), Some(None));
        assert_eq!(
            parse_is_public(Some(&"false".into())).ok(),
            Some(Some(false))
        );
        assert!(parse_is_public(Some(&"maybe".into())).is_err());
    }
}
