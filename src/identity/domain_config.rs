//! Domain-specific configuration (`/v3/domains/{id}/config[/{group}[/{option}]]`
//! and `/v3/domains/config[/{group}[/{option}]]/default`), stored and returned as Keystone does:
//! only the `identity` and `ldap` groups and Keystone's whitelisted options
//! (`ldap.password` is kept but never shown). yunhe has only its SQL
//! identity backend: an `ldap` driver configured here is stored, not used.
//! The `security_compliance` group reads the default domain's password rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use super::requests::whole;
use super::targets::{find_domain, load_domain};
use super::{Auth, AuthContext, IdentityError, IdentityState};
use crate::db::DbError;
use crate::db::identity::extensions::{self as ext, DomainConfigOption};
use crate::http::body::Object;
use crate::http::{json_response, no_content};
use crate::policy::Target;

/// Errors of the domain configuration API, rendered as Keystone renders them.
#[derive(Debug, thiserror::Error)]
pub enum DomainConfigError {
    /// The group, option or request is not one Keystone supports (403, as in Keystone).
    #[error("Invalid domain specific configuration: {0}.")]
    Invalid(String),
    /// Nothing is stored for the domain, group or option.
    #[error("Could not find {what} in domain configuration for domain {domain_id}.")]
    NotFound { what: String, domain_id: String },
    /// The identity service failed (authentication, policy, a missing domain).
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The state file failed.
    #[error("internal error: {0}")]
    Db(#[from] DbError),
}

type ConfigResult<T> = Result<T, DomainConfigError>;

impl IntoResponse for DomainConfigError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            DomainConfigError::Identity(_) => {
                if let DomainConfigError::Identity(inner) = self {
                    return inner.into_response();
                }
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            DomainConfigError::Invalid(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            DomainConfigError::NotFound { .. } => (StatusCode::NOT_FOUND, "Not Found"),
            DomainConfigError::Db(_) => {
                tracing::error!(error = %self, "domain config request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        };
        let body = json!({"error": {"code": status.as_u16(), "title": title, "message": self.to_string()}});
        json_response(status, &body)
    }
}

/// Keystone's whitelisted options, with the defaults Keystone reports.
const IDENTITY_OPTIONS: &[&str] = &["driver", "list_limit"];
const LDAP_OPTIONS: &[&str] = &[
    "url",
    "user",
    "suffix",
    "query_scope",
    "page_size",
    "alias_dereferencing",
    "debug_level",
    "chase_referrals",
    "user_tree_dn",
    "user_filter",
    "user_objectclass",
    "user_id_attribute",
    "user_name_attribute",
    "user_mail_attribute",
    "user_description_attribute",
    "user_pass_attribute",
    "user_enabled_attribute",
    "user_enabled_invert",
    "user_enabled_mask",
    "user_enabled_default",
    "user_attribute_ignore",
    "user_default_project_id_attribute",
    "user_enabled_emulation",
    "user_enabled_emulation_dn",
    "user_enabled_emulation_use_group_config",
    "user_additional_attribute_mapping",
    "group_tree_dn",
    "group_filter",
    "group_objectclass",
    "group_id_attribute",
    "group_name_attribute",
    "group_members_are_ids",
    "group_member_attribute",
    "group_desc_attribute",
    "group_attribute_ignore",
    "group_additional_attribute_mapping",
    "tls_cacertfile",
    "tls_cacertdir",
    "use_tls",
    "tls_req_cert",
    "use_pool",
    "pool_size",
    "pool_retry_max",
    "pool_retry_delay",
    "pool_connection_timeout",
    "pool_connection_lifetime",
    "use_auth_pool",
    "auth_pool_size",
    "auth_pool_connection_lifetime",
];
/// Options stored but never returned.
const SENSITIVE: &[(&str, &str)] = &[("ldap", "password")];

fn whitelisted(group: &str) -> Option<&'static [&'static str]> {
    match group {
        "identity" => Some(IDENTITY_OPTIONS),
        "ldap" => Some(LDAP_OPTIONS),
        _ => None,
    }
}

fn is_sensitive(group: &str, option: &str) -> bool {
    SENSITIVE.contains(&(group, option))
}

/// The value yunhe's identity service runs with (the SQL backend, Keystone's ldap defaults).
fn default_value(group: &str, option: &str) -> Value {
    match (group, option) {
        ("identity", "driver") => json!("sql"),
        ("identity", "list_limit") => Value::Null,
        ("ldap", "url") => json!("ldap://localhost"),
        ("ldap", "suffix") => json!("cn=example,cn=com"),
        ("ldap", "query_scope") => json!("one"),
        ("ldap", "page_size") => json!(0),
        ("ldap", "alias_dereferencing") => json!("default"),
        ("ldap", "user_objectclass") => json!("inetOrgPerson"),
        ("ldap", "user_id_attribute") | ("ldap", "group_id_attribute") => json!("cn"),
        ("ldap", "user_name_attribute") => json!("sn"),
        ("ldap", "user_mail_attribute") => json!("mail"),
        ("ldap", "user_description_attribute") | ("ldap", "group_desc_attribute") => {
            json!("description")
        }
        ("ldap", "user_pass_attribute") => json!("userPassword"),
        ("ldap", "user_enabled_attribute") => json!("enabled"),
        ("ldap", "user_enabled_invert")
        | ("ldap", "user_enabled_emulation")
        | ("ldap", "user_enabled_emulation_use_group_config")
        | ("ldap", "group_members_are_ids")
        | ("ldap", "use_tls") => json!(false),
        ("ldap", "user_enabled_mask") => json!(0),
        ("ldap", "user_enabled_default") => json!("True"),
        ("ldap", "user_attribute_ignore") => json!(["default_project_id"]),
        ("ldap", "user_additional_attribute_mapping")
        | ("ldap", "group_attribute_ignore")
        | ("ldap", "group_additional_attribute_mapping") => json!([]),
        ("ldap", "group_objectclass") => json!("groupOfNames"),
        ("ldap", "group_name_attribute") => json!("ou"),
        ("ldap", "group_member_attribute") => json!("member"),
        ("ldap", "tls_req_cert") => json!("demand"),
        ("ldap", "use_pool") | ("ldap", "use_auth_pool") => json!(true),
        ("ldap", "pool_size") => json!(10),
        ("ldap", "pool_retry_max") => json!(3),
        ("ldap", "pool_retry_delay") => json!(0.1),
        ("ldap", "pool_connection_timeout") => json!(-1),
        ("ldap", "pool_connection_lifetime") => json!(600),
        ("ldap", "auth_pool_size") => json!(100),
        ("ldap", "auth_pool_connection_lifetime") => json!(60),
        _ => Value::Null,
    }
}

/// Keystone's check of a group and option named in a path or a body.
fn check_group_and_option(group: Option<&str>, option: Option<&str>) -> ConfigResult<()> {
    let Some(group) = group else {
        return Ok(());
    };
    let Some(options) = whitelisted(group) else {
        return Err(DomainConfigError::Invalid(format!(
            "Group {group} is not supported for domain specific configurations"
        )));
    };
    if let Some(option) = option
        && !options.contains(&option)
        && !is_sensitive(group, option)
    {
        return Err(DomainConfigError::Invalid(format!(
            "Option {option} in group {group} is not supported for domain specific configurations"
        )));
    }
    Ok(())
}

/// A request's `config` as a list of options, checked as Keystone checks it.
fn parse_config(config: &Map<String, Value>) -> ConfigResult<Vec<DomainConfigOption>> {
    if config.is_empty() {
        return Err(DomainConfigError::Invalid("No options specified".into()));
    }
    let mut out = Vec::new();
    for (group, options) in config {
        let options = options.as_object().filter(|o| !o.is_empty()).ok_or_else(|| {
            DomainConfigError::Invalid(format!(
                "The value of group {group} specified in the config should be a dictionary of options"
            ))
        })?;
        for (option, value) in options {
            check_group_and_option(Some(group), Some(option))?;
            out.push(DomainConfigOption {
                group: group.clone(),
                option: option.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(out)
}

/// The body of `PUT` and `PATCH /v3/domains/{id}/config[/{group}[/{option}]]`.
/// `config` maps groups (or, below a group and option, options) to what
/// they hold: its keys are the operator's, so it stays a map, checked
/// against the whitelist by [`parse_config`]. Other members are ignored.
#[derive(Debug, serde::Deserialize)]
struct ConfigBody {
    config: Option<Object>,
}

/// The body's `config` object (missing means empty, as in Keystone).
fn body_config(body: &[u8]) -> ConfigResult<Object> {
    let request: ConfigBody = whole(body).map_err(IdentityError::from)?;
    Ok(request.config.unwrap_or_default())
}

/// `{group: {option: value}}` of the shown (not sensitive) options.
fn to_config(options: &[DomainConfigOption]) -> Value {
    let mut groups: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for o in options
        .iter()
        .filter(|o| !is_sensitive(&o.group, &o.option))
    {
        groups
            .entry(&o.group)
            .or_default()
            .insert(o.option.clone(), o.value.clone());
    }
    json!(groups)
}

fn what(group: Option<&str>, option: Option<&str>) -> String {
    match (group, option) {
        (Some(g), Some(o)) => format!("option {o} in group {g}"),
        (Some(g), None) => format!("group {g}"),
        _ => "any options".into(),
    }
}

fn not_found(domain_id: &str, group: Option<&str>, option: Option<&str>) -> DomainConfigError {
    DomainConfigError::NotFound {
        what: what(group, option),
        domain_id: domain_id.to_string(),
    }
}

/// The shown config of a domain, of a group (`{group: {…}}`) or of an option (`{option: value}`).
fn shown(
    conn: &Connection,
    domain_id: &str,
    group: Option<&str>,
    option: Option<&str>,
) -> ConfigResult<Value> {
    let options: Vec<DomainConfigOption> = ext::list_domain_config(conn, domain_id, group, option)?
        .into_iter()
        .filter(|o| !is_sensitive(&o.group, &o.option))
        .collect();
    if options.is_empty() {
        return Err(not_found(domain_id, group, option));
    }
    Ok(match (option, options.first()) {
        (Some(option), Some(first)) => json!({ option: first.value }),
        _ => to_config(&options),
    })
}

pub fn routes() -> Router<Arc<IdentityState>> {
    Router::new()
        .route(
            "/v3/domains/{domain_id}/config",
            get(get_config)
                .put(create_config)
                .patch(update_config)
                .delete(delete_config),
        )
        .route(
            "/v3/domains/{domain_id}/config/{group}",
            get(get_group).patch(update_group).delete(delete_group),
        )
        .route(
            "/v3/domains/{domain_id}/config/{group}/{option}",
            get(get_option).patch(update_option).delete(delete_option),
        )
        .route("/v3/domains/config/default", get(default_all))
        .route("/v3/domains/config/{group}/default", get(default_group))
        .route(
            "/v3/domains/config/{group}/{option}/default",
            get(default_option),
        )
}

fn authorize(s: &IdentityState, ctx: &AuthContext, rule: &str) -> ConfigResult<()> {
    Ok(s.authorize(ctx, rule, &Target::new())?)
}

fn config_response(status: StatusCode, config: Value) -> Response {
    json_response(status, &json!({ "config": config }))
}

// ------------------------------------------------------------------ reads

async fn read_config(
    s: Arc<IdentityState>,
    ctx: &AuthContext,
    domain_id: String,
    group: Option<String>,
    option: Option<String>,
) -> ConfigResult<Response> {
    // The domain's existence is told only after the policy check.
    let domain = find_domain(&s, &domain_id).await?;
    if group.as_deref() == Some("security_compliance") {
        authorize(&s, ctx, "identity:get_security_compliance_domain_config")?;
        return security_compliance(&domain_id, option.as_deref());
    }
    authorize(&s, ctx, "identity:get_domain_config")?;
    check_group_and_option(group.as_deref(), option.as_deref())?;
    if domain.is_none() {
        return Err(IdentityError::NotFound(format!("Could not find domain: {domain_id}.")).into());
    }
    let config = s
        .read(move |conn| Ok(shown(conn, &domain_id, group.as_deref(), option.as_deref())))
        .await??;
    Ok(config_response(StatusCode::OK, config))
}

/// yunhe has no password regex: Keystone's two readable options, unset.
fn security_compliance(domain_id: &str, option: Option<&str>) -> ConfigResult<Response> {
    if domain_id != "default" {
        return Err(DomainConfigError::Invalid(
            "Reading security compliance information for any domain other than the default domain is not allowed or supported.".into(),
        ));
    }
    const READABLE: [&str; 2] = ["password_regex", "password_regex_description"];
    let config = match option {
        Some(option) if READABLE.contains(&option) => json!({ option: null }),
        Some(_) => {
            return Err(DomainConfigError::Invalid(
                "Reading security compliance values other than password_regex and password_regex_description is not allowed.".into(),
            ));
        }
        None => {
            json!({"security_compliance": {"password_regex": null, "password_regex_description": null}})
        }
    };
    Ok(config_response(StatusCode::OK, config))
}

async fn get_config(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(domain_id): Path<String>,
) -> ConfigResult<Response> {
    read_config(s, &ctx, domain_id, None, None).await
}

async fn get_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((domain_id, group)): Path<(String, String)>,
) -> ConfigResult<Response> {
    read_config(s, &ctx, domain_id, Some(group), None).await
}

async fn get_option(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((domain_id, group, option)): Path<(String, String, String)>,
) -> ConfigResult<Response> {
    read_config(s, &ctx, domain_id, Some(group), Some(option)).await
}

// ------------------------------------------------------------------ writes

async fn create_config(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(domain_id): Path<String>,
    body: Bytes,
) -> ConfigResult<Response> {
    authorize(&s, &ctx, "identity:create_domain_config")?;
    let config = body_config(&body)?;
    let (created, value) = s
        .write(move |tx| {
            load_domain(tx, &domain_id)?;
            Ok((|| {
                let options = parse_config(&config)?;
                let had_config = !ext::list_domain_config(tx, &domain_id, None, None)?.is_empty();
                ext::delete_domain_config(tx, &domain_id, None, None)?;
                for option in &options {
                    ext::set_domain_config_option(tx, &domain_id, option)?;
                }
                let stored = ext::list_domain_config(tx, &domain_id, None, None)?;
                Ok::<_, DomainConfigError>((!had_config, to_config(&stored)))
            })())
        })
        .await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(config_response(status, value))
}

async fn write_update(
    s: Arc<IdentityState>,
    ctx: &AuthContext,
    domain_id: String,
    (group, option): (Option<String>, Option<String>),
    body: Bytes,
) -> ConfigResult<Response> {
    authorize(&s, ctx, "identity:update_domain_config")?;
    let mut config = body_config(&body)?;
    if let (Some(group), Some(_)) = (&group, &option) {
        config = Map::from_iter([(group.clone(), Value::Object(config))]);
    }
    let value = s
        .write(move |tx| {
            load_domain(tx, &domain_id)?;
            Ok((|| {
                let options = parse_config(&config)?;
                check_group_and_option(group.as_deref(), option.as_deref())?;
                if let Some(group) = group.as_deref() {
                    check_update_target(&config, group, option.as_deref())?;
                    if ext::list_domain_config(tx, &domain_id, Some(group), option.as_deref())?
                        .is_empty()
                    {
                        return Err(not_found(&domain_id, Some(group), option.as_deref()));
                    }
                }
                for o in &options {
                    ext::set_domain_config_option(tx, &domain_id, o)?;
                }
                shown(tx, &domain_id, None, None)
            })())
        })
        .await??;
    Ok(config_response(StatusCode::OK, value))
}

/// An update of one group (or option) must carry that group (option) only.
fn check_update_target(
    config: &Map<String, Value>,
    group: &str,
    option: Option<&str>,
) -> ConfigResult<()> {
    let options = config.get(group).and_then(Value::as_object);
    let only_one = config.len() == 1 && (option.is_none() || options.is_some_and(|o| o.len() == 1));
    if !only_one {
        return Err(DomainConfigError::Invalid(match option {
            Some(option) => format!(
                "Trying to update option {option} in group {group}, so that, and only that, option must be specified  in the config"
            ),
            None => format!(
                "Trying to update group {group}, so that, and only that, group must be specified in the config"
            ),
        }));
    }
    let Some(options) = options else {
        let other = config.keys().next().cloned().unwrap_or_default();
        return Err(DomainConfigError::Invalid(format!(
            "request to update group {group}, but config provided contains group {other} instead"
        )));
    };
    if let Some(option) = option
        && !options.contains_key(option)
    {
        let other = options.keys().next().cloned().unwrap_or_default();
        return Err(DomainConfigError::Invalid(format!(
            "Trying to update option {option} in group {group}, but config provided contains option {other} instead"
        )));
    }
    Ok(())
}

async fn update_config(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(domain_id): Path<String>,
    body: Bytes,
) -> ConfigResult<Response> {
    write_update(s, &ctx, domain_id, (None, None), body).await
}

async fn update_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((domain_id, group)): Path<(String, String)>,
    body: Bytes,
) -> ConfigResult<Response> {
    write_update(s, &ctx, domain_id, (Some(group), None), body).await
}

async fn update_option(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((domain_id, group, option)): Path<(String, String, String)>,
    body: Bytes,
) -> ConfigResult<Response> {
    write_update(s, &ctx, domain_id, (Some(group), Some(option)), body).await
}

async fn write_delete(
    s: Arc<IdentityState>,
    ctx: &AuthContext,
    domain_id: String,
    group: Option<String>,
    option: Option<String>,
) -> ConfigResult<Response> {
    authorize(&s, ctx, "identity:delete_domain_config")?;
    s.write(move |tx| {
        load_domain(tx, &domain_id)?;
        Ok((|| {
            check_group_and_option(group.as_deref(), option.as_deref())?;
            if group.is_some()
                && ext::list_domain_config(tx, &domain_id, group.as_deref(), option.as_deref())?
                    .is_empty()
            {
                return Err(not_found(&domain_id, group.as_deref(), option.as_deref()));
            }
            ext::delete_domain_config(tx, &domain_id, group.as_deref(), option.as_deref())?;
            Ok(())
        })())
    })
    .await??;
    Ok(no_content())
}

async fn delete_config(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(domain_id): Path<String>,
) -> ConfigResult<Response> {
    write_delete(s, &ctx, domain_id, None, None).await
}

async fn delete_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((domain_id, group)): Path<(String, String)>,
) -> ConfigResult<Response> {
    write_delete(s, &ctx, domain_id, Some(group), None).await
}

async fn delete_option(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((domain_id, group, option)): Path<(String, String, String)>,
) -> ConfigResult<Response> {
    write_delete(s, &ctx, domain_id, Some(group), Some(option)).await
}

// ------------------------------------------------------------------ defaults

/// Keystone's `get_config_default`: every whitelisted option's value.
fn default_config(group: Option<&str>, option: Option<&str>) -> ConfigResult<Value> {
    check_group_and_option(group, option)?;
    let groups: Vec<&str> = match group {
        Some(group) => vec![group],
        None => vec!["identity", "ldap"],
    };
    if let (Some(group), Some(option)) = (group, option) {
        if !whitelisted(group).is_some_and(|o| o.contains(&option)) {
            return Err(DomainConfigError::Invalid(format!(
                "Reading the default for option {option} in group {group} is not supported"
            )));
        }
        return Ok(json!({ option: default_value(group, option) }));
    }
    let mut out = Map::new();
    for group in groups {
        let options: Map<String, Value> = whitelisted(group)
            .unwrap_or_default()
            .iter()
            .map(|o| (o.to_string(), default_value(group, o)))
            .collect();
        out.insert(group.to_string(), Value::Object(options));
    }
    Ok(Value::Object(out))
}

async fn default_all(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
) -> ConfigResult<Response> {
    authorize(&s, &ctx, "identity:get_domain_config_default")?;
    Ok(config_response(StatusCode::OK, default_config(None, None)?))
}

async fn default_group(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path(group): Path<String>,
) -> ConfigResult<Response> {
    authorize(&s, &ctx, "identity:get_domain_config_default")?;
    Ok(config_response(
        StatusCode::OK,
        default_config(Some(&group), None)?,
    ))
}

async fn default_option(
    State(s): State<Arc<IdentityState>>,
    Auth(ctx): Auth,
    Path((group, option)): Path<(String, String)>,
) -> ConfigResult<Response> {
    authorize(&s, &ctx, "identity:get_domain_config_default")?;
    Ok(config_response(
        StatusCode::OK,
        default_config(Some(&group), Some(&option))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keystones_groups_and_options_are_accepted() {
        assert!(check_group_and_option(Some("ldap"), Some("url")).is_ok());
        assert!(check_group_and_option(Some("ldap"), Some("password")).is_ok());
        assert!(check_group_and_option(Some("identity"), Some("driver")).is_ok());
        assert!(check_group_and_option(Some("catalog"), None).is_err());
        assert!(check_group_and_option(Some("ldap"), Some("color")).is_err());
        let config = json!({"identity": {"driver": "ldap"}, "ldap": {"url": "ldap://x"}});
        let map = config.as_object().expect("object");
        assert_eq!(parse_config(map).expect("valid").len(), 2);
        assert!(parse_config(&Map::new()).is_err());
        let empty_group = json!({"ldap": {}});
        assert!(parse_config(empty_group.as_object().expect("object")).is_err());
    }

    #[test]
    fn sensitive_options_are_never_shown() {
        let options = vec![
            DomainConfigOption {
                group: "ldap".into(),
                option: "password".into(),
                value: json!("secret"),
            },
            DomainConfigOption {
                group: "ldap".into(),
                option: "url".into(),
                value: json!("ldap://x"),
            },
        ];
        assert_eq!(to_config(&options), json!({"ldap": {"url": "ldap://x"}}));
    }

    #[test]
    fn defaults_cover_the_whitelist() {
        let all = default_config(None, None).expect("defaults");
        assert_eq!(all["identity"]["driver"], "sql");
        assert_eq!(
            all["ldap"].as_object().map(Map::len),
            Some(LDAP_OPTIONS.len())
        );
        assert_eq!(
            default_config(Some("ldap"), Some("url")).expect("url"),
            json!({"url": "ldap://localhost"})
        );
        assert!(default_config(Some("ldap"), Some("password")).is_err());
        assert!(
            check_update_target(
                json!({"ldap": {"url": "x"}}).as_object().expect("object"),
                "ldap",
                Some("url")
            )
            .is_ok()
        );
        assert!(
            check_update_target(
                json!({"identity": {"driver": "x"}})
                    .as_object()
                    .expect("object"),
                "ldap",
                None
            )
            .is_err()
        );
    }
}
