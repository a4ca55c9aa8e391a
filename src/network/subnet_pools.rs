//! Subnet pools (`/v2.0/subnetpools`): prefixes subnets are carved from
//! when they ask for a prefix length instead of a CIDR.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rusqlite::Connection;
use serde_json::Value;

use super::ipam::{self, Cidr};
use super::model::*;
use super::store::{self, Kind, Std};
use super::{
    Caller, NetResult, NetworkError, NetworkState, attrs, body_member, check_revision, query,
    quotas, revision_constraint,
};
use crate::identity::Auth;
use crate::policy::Target;

impl Kind for SubnetPool {
    const KIND: &'static str = "subnetpool";
    const NOT_FOUND: &'static str = "SubnetPoolNotFound";
    fn std(&self) -> &Std {
        &self.std
    }
    fn std_mut(&mut self) -> &mut Std {
        &mut self.std
    }
    fn not_found_message(id: &str) -> String {
        format!("Subnet pool {id} could not be found.")
    }
}

fn visible(conn: &Connection, caller: &Caller, id: &str) -> NetResult<SubnetPool> {
    let p: SubnetPool = store::must(conn, id)?;
    if caller.admin || p.std.project_id == caller.project || p.shared {
        Ok(p)
    } else {
        Err(store::not_found::<SubnetPool>(id))
    }
}

/// Carves a CIDR for a new subnet out of a pool (the named one or the
/// default pool of the version): the lowest free block of the length.
pub fn allocate(
    conn: &Connection,
    caller: &Caller,
    pool_id: Option<String>,
    use_default: bool,
    version: u8,
    prefixlen: Option<i64>,
    _net_id: &str,
) -> NetResult<(Cidr, Option<String>)> {
    let pool = match pool_id {
        Some(id) => visible(conn, caller, &id)?,
        None if use_default => store::all::<SubnetPool>(conn)?
            .into_iter()
            .find(|p| p.is_default && p.ip_version == version)
            .ok_or_else(|| {
                NetworkError::bad(format!("No default subnetpool found for IPv{version}"))
            })?,
        None => {
            return Err(NetworkError::bad(
                "Bad subnets request: a cidr or a subnetpool_id must be specified.",
            ));
        }
    };
    if pool.ip_version != version {
        return Err(NetworkError::bad(format!(
            "Bad subnets request: Cannot allocate IPv{version} subnet from IPv{} subnet pool",
            pool.ip_version
        )));
    }
    let len = match prefixlen {
        Some(l) => u8::try_from(l).unwrap_or(u8::MAX),
        None => pool.default_prefixlen,
    };
    if len < pool.min_prefixlen || len > pool.max_prefixlen {
        return Err(NetworkError::bad(format!(
            "Illegal prefix bounds: prefixlen={len}, min_prefixlen={}, max_prefixlen={}",
            pool.min_prefixlen, pool.max_prefixlen
        )));
    }
    let used: Vec<Cidr> = store::all::<Subnet>(conn)?
        .iter()
        .filter(|s| s.subnetpool_id.as_deref() == Some(pool.std.id.as_str()))
        .filter_map(|s| s.cidr().ok())
        .collect();
    if let Some(q) = pool.default_quota {
        let mine = store::all::<Subnet>(conn)?
            .iter()
            .filter(|s| {
                s.subnetpool_id.as_deref() == Some(pool.std.id.as_str())
                    && s.std.project_id == caller.project
            })
            .filter_map(|s| s.cidr().ok())
            .map(|c| c.size())
            .sum::<u128>();
        let block = 1u128 << u32::from(if version == 4 { 32 } else { 128 } - len).min(127);
        if mine + block > u128::try_from(q).unwrap_or(0) {
            return Err(NetworkError::conflict(
                "SubnetPoolQuotaExceeded",
                "Per-tenant subnet pool prefix quota exceeded.",
            ));
        }
    }
    for prefix in &pool.prefixes {
        let p = Cidr::parse(prefix, false).map_err(NetworkError::bad)?;
        if len < p.prefix {
            continue;
        }
        let step = 1u128 << u32::from(if version == 4 { 32 } else { 128 } - len).min(127);
        let mut n = p.first();
        let mut tries = 0u32;
        while n <= p.last() && tries < 65_536 {
            let c = Cidr {
                addr: ipam::from_num(n, version),
                prefix: len,
            };
            if !used.iter().any(|u| u.overlaps(&c)) {
                return Ok((c, Some(pool.std.id.clone())));
            }
            n = match n.checked_add(step) {
                Some(v) => v,
                None => break,
            };
            tries += 1;
        }
    }
    Err(NetworkError::conflict(
        "SubnetAllocationError",
        "Failed to allocate subnet: Insufficient prefix space to allocate subnet size",
    ))
}

const ATTRS: &[&str] = &[
    "name",
    "description",
    "prefixes",
    "default_prefixlen",
    "min_prefixlen",
    "max_prefixlen",
    "shared",
    "is_default",
    "default_quota",
    "address_scope_id",
    "project_id",
    "tenant_id",
];

fn apply(
    p: &mut SubnetPool,
    body: &serde_json::Map<String, Value>,
    creating: bool,
) -> NetResult<()> {
    let (name, description) = attrs::name_description(body)?;
    if let Some(n) = name {
        p.name = n;
    }
    if let Some(d) = description {
        p.std.description = d;
    }
    if let Some(list) = attrs::string_list(body, "prefixes", 64)? {
        let mut out: Vec<String> = Vec::new();
        let mut version = None;
        for text in list {
            let c = Cidr::parse(&text, false).map_err(|e| NetworkError::invalid("prefixes", e))?;
            if version.is_some_and(|v| v != c.version()) {
                return Err(NetworkError::bad(
                    "Illegal subnetpool: prefixes of mixed IP versions",
                ));
            }
            version = Some(c.version());
            if !creating {
                let old: Vec<Cidr> = p
                    .prefixes
                    .iter()
                    .filter_map(|o| Cidr::parse(o, false).ok())
                    .collect();
                if c.version() != p.ip_version {
                    return Err(NetworkError::bad(
                        "Illegal subnetpool update: the IP version cannot change",
                    ));
                }
                let _ = old;
            }
            out.push(c.to_string());
        }
        if out.is_empty() {
            return Err(NetworkError::invalid(
                "prefixes",
                "at least one prefix is required",
            ));
        }
        if creating {
            p.ip_version = version.unwrap_or(4);
        } else {
            // Prefixes may only grow: every old prefix must stay covered.
            for old in &p.prefixes {
                let o = Cidr::parse(old, false).map_err(NetworkError::bad)?;
                let covered = out
                    .iter()
                    .filter_map(|n| Cidr::parse(n, false).ok())
                    .any(|n| n.first() <= o.first() && o.last() <= n.last());
                if !covered {
                    return Err(NetworkError::bad(format!(
                        "Illegal update to prefixes: {old} is removed"
                    )));
                }
            }
        }
        p.prefixes = out;
    }
    let max_len = if p.ip_version == 4 { 32 } else { 128 };
    if let Some(v) = attrs::integer(body, "min_prefixlen", 0, max_len)? {
        p.min_prefixlen = v as u8;
    } else if creating {
        p.min_prefixlen = if p.ip_version == 4 { 8 } else { 64 };
    }
    if let Some(v) = attrs::integer(body, "max_prefixlen", 0, max_len)? {
        p.max_prefixlen = v as u8;
    } else if creating {
        p.max_prefixlen = max_len as u8;
    }
    if let Some(v) = attrs::integer(body, "default_prefixlen", 0, max_len)? {
        p.default_prefixlen = v as u8;
    } else if creating {
        p.default_prefixlen = p.min_prefixlen;
    }
    if p.min_prefixlen > p.max_prefixlen
        || p.default_prefixlen < p.min_prefixlen
        || p.default_prefixlen > p.max_prefixlen
    {
        return Err(NetworkError::bad(format!(
            "Illegal prefix bounds: min_prefixlen={}, default_prefixlen={}, max_prefixlen={}",
            p.min_prefixlen, p.default_prefixlen, p.max_prefixlen
        )));
    }
    if body.contains_key("default_quota") {
        p.default_quota = attrs::integer(body, "default_quota", 0, i64::MAX)?;
    }
    Ok(())
}

pub async fn create(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "subnetpool")?;
    attrs::known(&body, ATTRS)?;
    if !body.contains_key("prefixes") {
        return Err(NetworkError::bad(
            "Failed to parse request. Required attribute 'prefixes' not specified",
        ));
    }
    let p = s
        .write(move |tx| {
            let project = caller.owner_for(&body)?;
            let target = Target::project(project.clone());
            caller.enforce("create_subnetpool", &target)?;
            let shared = attrs::boolean(&body, "shared")?.unwrap_or(false);
            if shared {
                caller.enforce("create_subnetpool:shared", &target)?;
            }
            let is_default = attrs::boolean(&body, "is_default")?.unwrap_or(false);
            if is_default {
                caller.enforce("create_subnetpool:is_default", &target)?;
            }
            let mut p = SubnetPool {
                std: Std::new(&project, String::new()),
                name: String::new(),
                prefixes: Vec::new(),
                ip_version: 4,
                default_prefixlen: 0,
                min_prefixlen: 0,
                max_prefixlen: 0,
                shared,
                is_default,
                default_quota: None,
                address_scope_id: None,
            };
            apply(&mut p, &body, true)?;
            if is_default && store::all::<SubnetPool>(tx)?.iter().any(|o| o.is_default && o.ip_version == p.ip_version) {
                return Err(NetworkError::bad("Invalid input for operation: A default subnetpool for this IP family has already been set. Only one default may exist per IP family."));
            }
            quotas::check(tx, &project, "subnetpool", 1)?;
            store::insert(tx, &p)?;
            Ok(p)
        })
        .await?;
    Ok(query::respond_one(
        store::to_value(&p)?,
        &Default::default(),
        "subnetpool",
        StatusCode::CREATED,
    ))
}

pub async fn list(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let items = s
        .read(move |conn| {
            let all: Vec<SubnetPool> = store::all(conn)?;
            all.iter()
                .filter(|p| caller.admin || p.std.project_id == caller.project || p.shared)
                .map(store::to_value)
                .collect()
        })
        .await?;
    let base = format!("{}/network/v2.0/subnetpools", s.identity.public_url);
    query::respond(items, &query::ListQuery::new(raw), "subnetpools", &base)
}

pub async fn show(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let p = s.read(move |conn| visible(conn, &caller, &id)).await?;
    Ok(query::respond_one(
        store::to_value(&p)?,
        &query::ListQuery::new(raw),
        "subnetpool",
        StatusCode::OK,
    ))
}

pub async fn update(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    let body = body_member(&bytes, "subnetpool")?;
    attrs::known(&body, ATTRS)?;
    let expected = revision_constraint(&headers)?;
    let p = s
        .write(move |tx| {
            let mut p = visible(tx, &caller, &id)?;
            let target = Target::project(p.std.project_id.clone());
            caller.enforce("update_subnetpool", &target)?;
            check_revision(expected, p.std.revision_number)?;
            if let Some(d) = attrs::boolean(&body, "is_default")? {
                caller.enforce("update_subnetpool:is_default", &target)?;
                p.is_default = d;
            }
            apply(&mut p, &body, false)?;
            store::save(tx, &mut p)?;
            Ok(p)
        })
        .await?;
    Ok(query::respond_one(
        store::to_value(&p)?,
        &Default::default(),
        "subnetpool",
        StatusCode::OK,
    ))
}

pub async fn delete(
    State(s): State<Arc<NetworkState>>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> NetResult<Response> {
    let caller = Caller::new(&s, &ctx);
    s.write(move |tx| {
        let p = visible(tx, &caller, &id)?;
        caller.enforce(
            "delete_subnetpool",
            &Target::project(p.std.project_id.clone()),
        )?;
        if store::all::<Subnet>(tx)?
            .iter()
            .any(|s| s.subnetpool_id.as_deref() == Some(p.std.id.as_str()))
        {
            return Err(NetworkError::conflict(
                "SubnetPoolInUse",
                format!(
                    "Subnet pool {} cannot be deleted: subnets are allocated from it.",
                    p.std.id
                ),
            ));
        }
        store::remove::<SubnetPool>(tx, &p.std.id)
    })
    .await?;
    Ok(crate::http::no_content())
}
