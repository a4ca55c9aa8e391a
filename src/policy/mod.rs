//! The one place that decides who may do what.
//!
//! Every API operation names an oslo.policy rule (`identity:get_user`,
//! `os_compute_api:servers:create`, `get_image`, …) and passes the target it
//! acts on; [`Policy::enforce`] answers. The default rules are those of the
//! current OpenStack releases, generated from the released packages into
//! `defaults.rs` (see `scripts/policy-defaults.py`), evaluated as oslo.policy
//! 6 does: new defaults only, and a rule's `scope_types` checked against the
//! token's scope (system, domain or project) before its check string.
//!
//! An operator overrides rules with `<state-dir>/policy.yaml` (or
//! `policy.json`), read at start: a flat mapping of rule name to check
//! string, as oslo.policy's files are. A name that is a default of a service
//! overrides it there (a base rule such as `context_is_admin` that several
//! services define is overridden in each); any other name is added to every
//! service, for `rule:` references. `yunhe policy list` prints the result.
//!
//! This module knows nothing of HTTP or of identity's types: services turn
//! their caller into [`Credentials`] and their object into a [`Target`].

mod check;
#[allow(dead_code)] // NETWORK and VOLUME wait for Neutron and Cinder.
pub mod defaults;
mod file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use check::Check;

/// One default rule as the OpenStack release ships it.
#[derive(Debug)]
pub struct DefaultRule {
    pub name: &'static str,
    pub check: &'static str,
    pub scope_types: &'static [&'static str],
    pub operations: &'static [(&'static str, &'static str)],
}

/// The services whose rules are kept apart, as each OpenStack service has
/// its own enforcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Compute,
    Image,
    Network,
    Volume,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Identity,
        Service::Compute,
        Service::Image,
        Service::Network,
        Service::Volume,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Compute => "compute",
            Service::Image => "image",
            Service::Network => "network",
            Service::Volume => "volume",
        }
    }

    fn defaults(self) -> &'static [DefaultRule] {
        match self {
            Service::Identity => defaults::IDENTITY,
            Service::Compute => defaults::COMPUTE,
            Service::Image => defaults::IMAGE,
            Service::Network => defaults::NETWORK,
            Service::Volume => defaults::VOLUME,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a policy could not be loaded, or why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error("policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The policy file is not a flat mapping of rule names to check strings.
    #[error("policy file {path}, line {line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
    /// A rule's check string does not parse.
    #[error("rule {rule}: {message}")]
    BadRule { rule: String, message: String },
    /// The rule does not allow the caller to act on the target.
    #[error("Policy doesn't allow {rule} to be performed.")]
    Denied { rule: String },
    /// The rule is not for tokens of the caller's scope.
    #[error("{rule} is not allowed with a {token_scope}-scoped token (allowed: {allowed}).")]
    Scope {
        rule: String,
        token_scope: &'static str,
        allowed: String,
    },
}

impl PolicyError {
    /// The rule a refusal names.
    pub fn rule(&self) -> &str {
        match self {
            PolicyError::Denied { rule }
            | PolicyError::Scope { rule, .. }
            | PolicyError::BadRule { rule, .. } => rule,
            PolicyError::Read { .. } | PolicyError::Syntax { .. } => "",
        }
    }
}

/// Who is calling, as oslo.policy's credentials dictionary has it.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub user_id: String,
    pub user_domain_id: String,
    pub project_id: Option<String>,
    pub project_domain_id: Option<String>,
    pub domain_id: Option<String>,
    /// A system-scoped token (`system_scope:all`).
    pub system: bool,
    /// Effective role names, implied roles included.
    pub roles: Vec<String>,
}

impl Credentials {
    /// The scope oslo.policy gives the token: system, then domain, else
    /// project (unscoped tokens count as project-scoped and match nothing
    /// that needs a project).
    pub fn token_scope(&self) -> &'static str {
        if self.system {
            "system"
        } else if self.domain_id.is_some() {
            "domain"
        } else {
            "project"
        }
    }

    /// A credential attribute for generic checks (`user_id:%(…)s`), as
    /// oslo's context gives them; an absent one is `None`, as Python's
    /// `str(None)` (Keystone's `domain_id:None` means "not domain-scoped").
    fn attribute(&self, name: &str) -> &str {
        let value = match name {
            "user_id" => Some(self.user_id.as_str()),
            "user_domain_id" => Some(self.user_domain_id.as_str()),
            "project_id" | "tenant" | "tenant_id" => self.project_id.as_deref(),
            "project_domain_id" | "token.project.domain.id" => self.project_domain_id.as_deref(),
            "domain_id" | "token.domain.id" => self.domain_id.as_deref(),
            "system_scope" => self.system.then_some("all"),
            // Without keystonemiddleware's admin_project settings every
            // project counts as the admin project (oslo.context's default).
            "is_admin_project" => Some("True"),
            _ => None,
        };
        value.unwrap_or("None")
    }
}

/// What an operation acts on: `%(key)s` values for the check strings
/// (`project_id`, `user_id`, `target.user.domain_id`, …).
#[derive(Debug, Clone, Default)]
pub struct Target {
    values: Vec<(String, String)>,
}

impl Target {
    pub fn new() -> Target {
        Target::default()
    }

    /// Adds a value (the first value of a key wins).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Target {
        self.values.push((key.to_string(), value.into()));
        self
    }

    /// Adds a value when there is one.
    pub fn with_opt(self, key: &str, value: Option<impl Into<String>>) -> Target {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// The target Nova, Glance and most Keystone rules read: the owning
    /// project (and user, when known).
    pub fn project(project_id: impl Into<String>) -> Target {
        Target::new().with("project_id", project_id)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One effective rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub check_text: String,
    pub scope_types: Vec<String>,
    pub operations: Vec<(String, String)>,
    /// Set by the operator's policy file.
    pub overridden: bool,
    check: Check,
}

#[derive(Debug, Default)]
struct RuleSet {
    rules: HashMap<String, Rule>,
    order: Vec<String>,
}

impl check::RuleLookup for RuleSet {
    fn rule(&self, name: &str) -> Option<&Check> {
        self.rules.get(name).map(|r| &r.check)
    }
}

impl RuleSet {
    fn insert(&mut self, rule: Rule) {
        if !self.rules.contains_key(&rule.name) {
            self.order.push(rule.name.clone());
        }
        self.rules.insert(rule.name.clone(), rule);
    }
}

/// The effective rules of every service.
#[derive(Debug)]
pub struct Policy {
    services: Vec<RuleSet>,
    /// The operator's file, when one was read.
    pub source: Option<PathBuf>,
}

impl Policy {
    /// The release defaults alone.
    pub fn defaults() -> Result<Policy, PolicyError> {
        let mut services = Vec::new();
        for service in Service::ALL {
            let mut set = RuleSet::default();
            for default in service.defaults() {
                let check =
                    check::parse(default.check).map_err(|message| PolicyError::BadRule {
                        rule: default.name.to_string(),
                        message,
                    })?;
                set.insert(Rule {
                    name: default.name.to_string(),
                    check_text: default.check.to_string(),
                    scope_types: default.scope_types.iter().map(|s| s.to_string()).collect(),
                    operations: default
                        .operations
                        .iter()
                        .map(|(m, p)| (m.to_string(), p.to_string()))
                        .collect(),
                    overridden: false,
                    check,
                });
            }
            services.push(set);
        }
        Ok(Policy {
            services,
            source: None,
        })
    }

    /// The defaults with `policy.yaml` (or `policy.json`) from the state
    /// directory applied, when there is one.
    pub fn load(state_dir: &Path) -> Result<Policy, PolicyError> {
        let mut policy = Policy::defaults()?;
        for name in ["policy.yaml", "policy.yml", "policy.json"] {
            let path = state_dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(PolicyError::Read {
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
            let overrides = file::parse(&text).map_err(|(line, message)| PolicyError::Syntax {
                path: path.display().to_string(),
                line,
                message,
            })?;
            policy.apply(overrides)?;
            policy.source = Some(path);
            break;
        }
        Ok(policy)
    }

    /// Applies overrides: (rule name, check string) pairs.
    pub fn apply(&mut self, overrides: Vec<(String, String)>) -> Result<(), PolicyError> {
        for (name, text) in overrides {
            let check = check::parse(&text).map_err(|message| PolicyError::BadRule {
                rule: name.clone(),
                message,
            })?;
            let known = self.services.iter().any(|s| s.rules.contains_key(&name));
            for set in &mut self.services {
                let (scope_types, operations) = match set.rules.get(&name) {
                    Some(rule) => (rule.scope_types.clone(), rule.operations.clone()),
                    None if known => continue,
                    None => (Vec::new(), Vec::new()),
                };
                set.insert(Rule {
                    name: name.clone(),
                    check_text: text.clone(),
                    scope_types,
                    operations,
                    overridden: true,
                    check: check.clone(),
                });
            }
        }
        Ok(())
    }

    /// Allows or refuses `rule` of `service` for the caller on the target.
    /// A rule that does not exist refuses (fails closed).
    pub fn enforce(
        &self,
        service: Service,
        creds: &Credentials,
        rule: &str,
        target: &Target,
    ) -> Result<(), PolicyError> {
        let set = &self.services[service.index()];
        let denied = || PolicyError::Denied {
            rule: rule.to_string(),
        };
        let Some(found) = set.rules.get(rule) else {
            tracing::error!(rule, service = service.name(), "no such policy rule");
            return Err(denied());
        };
        let token_scope = creds.token_scope();
        if !found.scope_types.is_empty() && !found.scope_types.iter().any(|s| s == token_scope) {
            return Err(PolicyError::Scope {
                rule: rule.to_string(),
                token_scope,
                allowed: found.scope_types.join(", "),
            });
        }
        if check::holds(&found.check, creds, target, set, 0) {
            Ok(())
        } else {
            Err(denied())
        }
    }

    /// Whether the rule allows the caller (for views that show more to
    /// those who may see it).
    pub fn allows(
        &self,
        service: Service,
        creds: &Credentials,
        rule: &str,
        target: &Target,
    ) -> bool {
        self.enforce(service, creds, rule, target).is_ok()
    }

    /// The effective rules of a service, in the release's order (the
    /// operator's added rules last).
    pub fn rules(&self, service: Service) -> impl Iterator<Item = &Rule> {
        let set = &self.services[service.index()];
        set.order.iter().filter_map(|name| set.rules.get(name))
    }

    /// Whether a service defines the rule.
    #[cfg(test)]
    pub fn has_rule(&self, service: Service, name: &str) -> bool {
        self.services[service.index()].rules.contains_key(name)
    }
}

/// `yunhe policy list`: the effective rules as `name: "check"  # scope …`.
pub fn list_main(state_dir: &Path, only: Option<&str>) -> std::process::ExitCode {
    let policy = match Policy::load(state_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("yunhe: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match &policy.source {
        Some(path) => println!("# defaults with overrides from {}", path.display()),
        None => println!(
            "# release defaults (no policy.yaml in {})",
            state_dir.display()
        ),
    }
    for service in Service::ALL {
        if only.is_some_and(|o| o != service.name()) {
            continue;
        }
        println!("\n# {}", service.name());
        for rule in policy.rules(service) {
            let mut notes = Vec::new();
            if !rule.scope_types.is_empty() {
                notes.push(format!("scope: {}", rule.scope_types.join(",")));
            }
            if rule.overridden {
                notes.push("overridden".to_string());
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!("  # {}", notes.join("; "))
            };
            println!("{:?}: {:?}{notes}", rule.name, rule.check_text);
        }
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(project: &str, roles: &[&str]) -> Credentials {
        Credentials {
            user_id: "u1".into(),
            user_domain_id: "default".into(),
            project_id: Some(project.into()),
            project_domain_id: Some("default".into()),
            domain_id: None,
            system: false,
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn every_default_rule_parses_and_references_exist() {
        let policy = Policy::defaults().expect("defaults parse");
        for service in Service::ALL {
            for rule in policy.rules(service) {
                let mut names = Vec::new();
                collect_rule_refs(&rule.check, &mut names);
                for name in names {
                    assert!(
                        policy.has_rule(service, &name),
                        "{}: {} refers to missing rule:{name}",
                        service.name(),
                        rule.name
                    );
                }
            }
        }
    }

    fn collect_rule_refs(check: &Check, out: &mut Vec<String>) {
        match check {
            Check::Rule(name) => out.push(name.clone()),
            Check::Not(inner) => collect_rule_refs(inner, out),
            Check::And(terms) | Check::Or(terms) => {
                terms.iter().for_each(|t| collect_rule_refs(t, out))
            }
            _ => {}
        }
    }

    #[test]
    fn nova_server_create_needs_member_on_the_project() {
        let policy = Policy::defaults().expect("defaults");
        let rule = "os_compute_api:servers:create";
        let target = Target::project("p1").with("user_id", "u1");
        assert!(
            policy
                .enforce(
                    Service::Compute,
                    &creds("p1", &["member", "reader"]),
                    rule,
                    &target
                )
                .is_ok()
        );
        assert!(
            policy
                .enforce(Service::Compute, &creds("p1", &["reader"]), rule, &target)
                .is_err()
        );
        assert!(
            policy
                .enforce(Service::Compute, &creds("p2", &["member"]), rule, &target)
                .is_err()
        );
    }

    #[test]
    fn scope_types_are_enforced() {
        let policy = Policy::defaults().expect("defaults");
        // Nova's rules are for project-scoped tokens only.
        let rule = "os_compute_api:servers:index";
        let project_admin = creds("p1", &["admin", "member", "reader"]);
        let target = Target::project("p1");
        assert!(
            policy
                .enforce(Service::Compute, &project_admin, rule, &target)
                .is_ok()
        );
        let system_admin = Credentials {
            project_id: None,
            project_domain_id: None,
            system: true,
            ..project_admin
        };
        let err = policy
            .enforce(Service::Compute, &system_admin, rule, &target)
            .expect_err("a system token may not list servers");
        assert!(matches!(err, PolicyError::Scope { .. }));
        // Keystone: a system reader reads users; a project reader only itself.
        let rule = "identity:get_user";
        let target = Target::new()
            .with("target.user.id", "someone")
            .with("target.user.domain_id", "default");
        let system_reader = Credentials {
            roles: vec!["reader".into()],
            ..system_admin
        };
        assert!(
            policy
                .enforce(Service::Identity, &system_reader, rule, &target)
                .is_ok()
        );
        let project_reader = creds("p1", &["reader"]);
        assert!(
            policy
                .enforce(Service::Identity, &project_reader, rule, &target)
                .is_err()
        );
        let own = Target::new()
            .with("target.user.id", "u1")
            .with("target.user.domain_id", "default");
        assert!(
            policy
                .enforce(Service::Identity, &project_reader, rule, &own)
                .is_ok()
        );
    }

    #[test]
    fn none_reads_as_python_does() {
        let policy = Policy::defaults().expect("defaults");
        // `not None:%(target.project.domain_id)s`, `domain_id:None`.
        let mut overrides = Policy::defaults().expect("defaults");
        overrides
            .apply(vec![
                ("not_domain_scoped".into(), "domain_id:None".into()),
                ("has_parent".into(), "not None:%(parent)s".into()),
            ])
            .expect("parse");
        let project = creds("p1", &["reader"]);
        assert!(overrides.allows(
            Service::Image,
            &project,
            "not_domain_scoped",
            &Target::new()
        ));
        assert!(!overrides.allows(
            Service::Image,
            &project,
            "has_parent",
            &Target::new().with("parent", "None")
        ));
        assert!(overrides.allows(
            Service::Image,
            &project,
            "has_parent",
            &Target::new().with("parent", "p0")
        ));
        // Nova's admin_api is `is_admin:True`, from context_is_admin.
        assert!(policy.allows(
            Service::Compute,
            &creds("p1", &["admin"]),
            "admin_api",
            &Target::new()
        ));
        assert!(!policy.allows(Service::Compute, &project, "admin_api", &Target::new()));
    }

    #[test]
    fn unknown_rules_fail_closed_and_overrides_apply() {
        let mut policy = Policy::defaults().expect("defaults");
        let admin = creds("p1", &["admin"]);
        assert!(
            policy
                .enforce(Service::Compute, &admin, "no:such:rule", &Target::new())
                .is_err()
        );
        policy
            .apply(vec![
                ("os_compute_api:os-keypairs:index".into(), "!".into()),
                ("my_helper".into(), "role:auditor".into()),
                ("get_images".into(), "rule:my_helper".into()),
            ])
            .expect("overrides parse");
        let target = Target::project("p1").with("user_id", "u1");
        assert!(
            policy
                .enforce(
                    Service::Compute,
                    &admin,
                    "os_compute_api:os-keypairs:index",
                    &target
                )
                .is_err()
        );
        assert!(
            policy
                .enforce(
                    Service::Image,
                    &creds("p1", &["auditor"]),
                    "get_images",
                    &target
                )
                .is_ok()
        );
        assert!(
            policy
                .enforce(
                    Service::Image,
                    &creds("p1", &["member"]),
                    "get_images",
                    &target
                )
                .is_err()
        );
    }

    #[test]
    fn rule_loops_fail_closed() {
        let mut policy = Policy::defaults().expect("defaults");
        policy
            .apply(vec![
                ("loop_a".into(), "rule:loop_b".into()),
                ("loop_b".into(), "rule:loop_a or role:nobody".into()),
            ])
            .expect("parse");
        assert!(
            policy
                .enforce(
                    Service::Image,
                    &creds("p1", &["admin"]),
                    "loop_a",
                    &Target::new()
                )
                .is_err()
        );
    }
}
