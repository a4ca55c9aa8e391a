//! Who is calling: a validated token's scope and roles, as every service
//! sees it. A leaf: no HTTP, no database, no other identity module but the
//! access rules it carries.

use super::access_rules::AccessRule;

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Unscoped,
    Project {
        id: String,
        name: String,
        domain_id: String,
        domain_name: String,
    },
    Domain {
        id: String,
        name: String,
    },
    System,
}

/// The trust a token was issued from (Keystone's `OS-TRUST:trust`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrustInfo {
    pub id: String,
    pub trustor_user_id: String,
    pub trustee_user_id: String,
    pub impersonation: bool,
}

/// A validated token: who is calling, in which scope, with which roles.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub token_hash: String,
    pub user_id: String,
    pub user_name: String,
    pub user_domain_id: String,
    pub user_domain_name: String,
    pub scope: Scope,
    /// Effective roles (implied roles included) as (id, name).
    pub roles: Vec<(String, String)>,
    pub methods: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    pub expires_unix: i64,
    pub audit_ids: Vec<String>,
    /// The application credential the token came from: (id, name, unrestricted).
    pub app_cred: Option<(String, String, bool)>,
    /// That credential's access rules; empty when it has none (no restriction).
    pub access_rules: Vec<AccessRule>,
    /// The trust the token was issued from. `user_*` is then the trustor
    /// when the trust impersonates, else the trustee.
    pub trust: Option<TrustInfo>,
    /// For a user an identity provider made: Keystone's `OS-FEDERATION`.
    pub federation: Option<Federation>,
}

/// Where a federated user came from and the groups its login gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct Federation {
    pub idp_id: String,
    pub protocol_id: String,
    pub group_ids: Vec<String>,
}

impl AuthContext {
    /// The caller as the policy module sees it.
    pub fn credentials(&self) -> crate::policy::Credentials {
        let mut creds = crate::policy::Credentials {
            user_id: self.user_id.clone(),
            user_domain_id: self.user_domain_id.clone(),
            roles: self.roles.iter().map(|(_, name)| name.clone()).collect(),
            ..Default::default()
        };
        match &self.scope {
            Scope::Project { id, domain_id, .. } => {
                creds.project_id = Some(id.clone());
                creds.project_domain_id = Some(domain_id.clone());
            }
            Scope::Domain { id, .. } => creds.domain_id = Some(id.clone()),
            Scope::System => creds.system = true,
            Scope::Unscoped => {}
        }
        creds
    }

    pub fn project_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Project { id, .. } => Some(id),
            _ => None,
        }
    }
}
