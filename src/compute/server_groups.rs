//! Server groups: create (with the quota), list (own or all projects), show,
//! delete. Policies affinity and anti-affinity, soft-* from 2.15, the
//! single `policy` with `rules` from 2.64. Membership is filled in by
//! server create.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::request::{Integer, body as decode_body, present};
use super::{
    ComputeError, ComputeResult, ComputeState, Mv, authorize, empty, project_of, query_map,
};
use crate::db::compute::{self as store, ServerGroup};
use crate::db::now_unix;
use crate::http::body::BodyError;
use crate::http::json_response;
use crate::identity::{Auth, AuthContext};
use crate::policy::Target;

type S = Arc<ComputeState>;

pub fn routes() -> Router<S> {
    Router::new()
        .route("/v2.1/os-server-groups", get(list).post(create))
        .route("/v2.1/os-server-groups/{id}", get(show).delete(delete))
}

fn view(g: &ServerGroup, mv: Mv) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(g.id));
    obj.insert("name".into(), json!(g.name));
    if mv.at_least(64) {
        obj.insert("policy".into(), json!(g.policy));
        let rules = if g.rules.is_object() {
            g.rules.clone()
        } else {
            json!({})
        };
        obj.insert("rules".into(), rules);
    } else {
        obj.insert("policies".into(), json!([g.policy]));
        obj.insert("metadata".into(), json!({}));
    }
    obj.insert("members".into(), json!(g.members));
    if mv.at_least(13) {
        obj.insert("project_id".into(), json!(g.project_id));
        obj.insert("user_id".into(), json!(g.user_id));
    }
    Value::Object(obj)
}

/// The body of `POST /os-server-groups`: `name` and `policies` (one
/// item) before 2.64, `name`, `policy` and optional `rules` from 2.64.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerGroupCreate {
    server_group: NewServerGroup,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServerGroup {
    name: GroupName,
    #[serde(default, deserialize_with = "present")]
    policies: Option<Vec<Policy>>,
    #[serde(default, deserialize_with = "present")]
    policy: Option<Policy>,
    #[serde(default, deserialize_with = "present")]
    rules: Option<Rules>,
}

/// A group name: 1 to 255 characters without leading or trailing spaces.
#[derive(Debug)]
struct GroupName(String);

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(n) if !n.is_empty() && n.chars().count() <= 255 && n.trim() == n => {
                Ok(GroupName(n))
            }
            v => Err(de::Error::custom(format!("{v}."))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Policy {
    Affinity,
    AntiAffinity,
    SoftAffinity,
    SoftAntiAffinity,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Affinity => "affinity",
            Policy::AntiAffinity => "anti-affinity",
            Policy::SoftAffinity => "soft-affinity",
            Policy::SoftAntiAffinity => "soft-anti-affinity",
        }
    }

    /// The soft policies came with 2.15.
    fn available(self, mv: Mv) -> bool {
        mv.at_least(15) || matches!(self, Policy::Affinity | Policy::AntiAffinity)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rules {
    #[serde(default, deserialize_with = "present")]
    max_server_per_host: Option<Integer>,
}

fn bad(field: &str, value: &Value) -> ComputeError {
    ComputeError::BadRequest(format!(
        "Invalid input for field/attribute {field}. Value: {value}."
    ))
}

impl NewServerGroup {
    /// The name, policy and rules asked for, checked against `mv`'s schema.
    fn checked(self, mv: Mv) -> ComputeResult<(String, String, Value)> {
        let refuse = |member: &str| -> ComputeError {
            BodyError::Unexpected(format!("server_group.{member}")).into()
        };
        let available = |p: Policy, field: &str| {
            if p.available(mv) {
                Ok(p.as_str().to_string())
            } else {
                Err(bad(field, &json!(p.as_str())))
            }
        };
        if mv.at_least(64) {
            if self.policies.is_some() {
                return Err(refuse("policies"));
            }
            let policy = self
                .policy
                .ok_or_else(|| BodyError::Missing("server_group.policy".into()))?;
            let policy = available(policy, "policy")?;
            let rules = match self.rules.and_then(|r| r.max_server_per_host) {
                None => json!({}),
                Some(_) if policy != "anti-affinity" => {
                    return Err(ComputeError::BadRequest(format!(
                        "Only anti-affinity policy supports \"max_server_per_host\" rule. Policy given: {policy}"
                    )));
                }
                Some(n) => {
                    let n = n.within("max_server_per_host", 1, i32::MAX as i64)?;
                    json!({"max_server_per_host": n})
                }
            };
            Ok((self.name.0, policy, rules))
        } else {
            if self.policy.is_some() {
                return Err(refuse("policy"));
            }
            if self.rules.is_some() {
                return Err(refuse("rules"));
            }
            let policies = self
                .policies
                .ok_or_else(|| BodyError::Missing("server_group.policies".into()))?;
            let policy = match policies.as_slice() {
                [one] => available(*one, "policies")?,
                many => {
                    let names: Vec<&str> = many.iter().map(|p| p.as_str()).collect();
                    return Err(bad("policies", &json!(names)));
                }
            };
            Ok((self.name.0, policy, json!({})))
        }
    }
}

async fn create(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    body: Bytes,
) -> ComputeResult<Response> {
    let project = project_of(&ctx)?;
    let request = decode_body::<ServerGroupCreate>(&body)?.server_group;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-server-groups:create",
        &super::owner_target(&project, &ctx.user_id),
    )?;
    let (name, policy, rules) = request.checked(mv)?;
    let group = ServerGroup {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        project_id: project.clone(),
        user_id: ctx.user_id.clone(),
        policy,
        rules,
        created_at: now_unix(),
        members: Vec::new(),
    };
    let stored = group.clone();
    s.write(move |tx| {
        let used = store::count_server_groups(tx, &project)?;
        super::quotas::enforce_limit(
            tx,
            &project,
            Some(&stored.user_id),
            "server_groups",
            used,
            1,
        )
        .map_err(|e| match e {
            ComputeError::QuotaExceeded(_) => {
                ComputeError::Forbidden("Quota exceeded, too many server groups.".into())
            }
            other => other,
        })?;
        Ok(store::insert_server_group(tx, &stored)?)
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server_group": view(&group, mv)}),
    ))
}

async fn list(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Query(q): Query<Vec<(String, String)>>,
) -> ComputeResult<Response> {
    let q = query_map(q);
    let own = project_of(&ctx)?;
    authorize(
        &s,
        &ctx,
        "os_compute_api:os-server-groups:index",
        &Target::project(own.clone()),
    )?;
    let all = q
        .get("all_projects")
        .is_some_and(|v| !["false", "0", "no", "off"].contains(&v.to_ascii_lowercase().as_str()))
        && super::allows(
            &s,
            &ctx,
            "os_compute_api:os-server-groups:index:all_projects",
            &Target::project(own.clone()),
        );
    let project = if all { None } else { Some(own) };
    let groups = s
        .read(move |conn| Ok(store::list_server_groups(conn, project.as_deref())?))
        .await?;
    let parse = |key: &str, min: usize| -> ComputeResult<Option<usize>> {
        match q.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(ComputeError::BadRequest(format!(
                    "Invalid input for query parameters {key}. Value: {v}."
                ))),
            },
        }
    };
    let offset = parse("offset", 0)?.unwrap_or(0);
    let limit = parse("limit", 1)?;
    let views: Vec<Value> = groups
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|g| view(g, mv))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"server_groups": views}),
    ))
}

/// The group if the caller's context may read it (admin contexts read
/// every project's, as Nova's query does), then `rule` on its project.
async fn get_owned(s: &S, ctx: &AuthContext, id: String, rule: &str) -> ComputeResult<ServerGroup> {
    let wanted = id.clone();
    let group = s
        .read(move |conn| Ok(store::get_server_group(conn, &wanted)?))
        .await?;
    let admin = super::is_admin_context(s, ctx);
    match group {
        Some(g) if admin || ctx.project_id() == Some(g.project_id.as_str()) => {
            authorize(s, ctx, rule, &Target::project(g.project_id.clone()))?;
            Ok(g)
        }
        _ => Err(ComputeError::NotFound(format!(
            "Instance group {id} could not be found."
        ))),
    }
}

async fn show(
    State(s): State<S>,
    Auth(ctx): Auth,
    mv: Mv,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let g = get_owned(&s, &ctx, id, "os_compute_api:os-server-groups:show").await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"server_group": view(&g, mv)}),
    ))
}

async fn delete(
    State(s): State<S>,
    Auth(ctx): Auth,
    Path(id): Path<String>,
) -> ComputeResult<Response> {
    let g = get_owned(&s, &ctx, id, "os_compute_api:os-server-groups:delete").await?;
    s.write(move |tx| Ok(store::delete_server_group(tx, &g.id)?))
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn checked(group: Value, mv: u16) -> ComputeResult<(String, String, Value)> {
        decode_body::<ServerGroupCreate>(json!({ "server_group": group }).to_string().as_bytes())?
            .server_group
            .checked(Mv(mv))
    }

    fn refused(r: ComputeResult<(String, String, Value)>) -> String {
        match r {
            Err(ComputeError::BadRequest(m)) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn server_groups_follow_the_microversion() {
        assert_eq!(
            checked(json!({"name": "g", "policies": ["anti-affinity"]}), 1).expect("accepted"),
            ("g".into(), "anti-affinity".into(), json!({}))
        );
        assert_eq!(
            checked(
                json!({"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": "2"}}),
                64
            )
            .expect("accepted"),
            (
                "g".into(),
                "anti-affinity".into(),
                json!({"max_server_per_host": 2})
            )
        );
        assert_eq!(
            refused(checked(
                json!({"name": "g", "policies": ["soft-affinity"]}),
                14
            )),
            "Invalid input for field/attribute policies. Value: \"soft-affinity\"."
        );
        assert_eq!(
            refused(checked(json!({"name": "g", "policies": ["affinity"]}), 64)),
            "Invalid input for field/attribute server_group. Additional properties are not allowed ('policies' was unexpected)"
        );
        assert_eq!(
            refused(checked(json!({"name": "g"}), 64)),
            "Invalid input for field/attribute server_group. 'policy' is a required property"
        );
        assert_eq!(
            refused(checked(
                json!({"name": "g", "policy": "affinity", "rules": {"max_server_per_host": 2}}),
                64
            )),
            "Only anti-affinity policy supports \"max_server_per_host\" rule. Policy given: affinity"
        );
        assert_eq!(
            refused(checked(json!({"name": " g", "policies": ["affinity"]}), 1)),
            "Invalid input for field/attribute name. Value: \" g\"."
        );
        assert!(
            refused(checked(json!({"name": "g", "policies": ["bogus"]}), 1)).starts_with(
                "Invalid input for field/attribute policies[0]. Value: unknown variant"
            )
        );
    }
}
