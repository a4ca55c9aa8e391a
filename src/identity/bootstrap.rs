//! First start: the region, the default domain, the admin project, user and
//! roles, the catalog entries of working services, and the client files.
//! Every step is idempotent, so every start runs it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::Rng;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use super::{IdentityError, IdentityResult};
use crate::db::identity::{
    self as store, Assignment, Domain, Endpoint, Project, Region, Role, Service, User,
};
use crate::db::{Db, now_unix};

pub const REGION: &str = "RegionOne";
pub const DEFAULT_DOMAIN: &str = "default";

/// A service that answers on this server and belongs in the catalog.
pub struct CatalogEntry {
    pub kind: &'static str,
    pub name: &'static str,
    /// Path below the public URL, e.g. `/identity`.
    pub path: &'static str,
}

/// What bootstrap did, for the start-up message.
pub struct BootstrapReport {
    /// Set when the admin user was created now.
    pub created_admin: bool,
    pub clouds_yaml: PathBuf,
    pub openrc: PathBuf,
}

/// A stable id for an object yunhe manages itself.
fn managed_id(what: &str) -> String {
    hex::encode(&Sha256::digest(format!("yunhe-managed:{what}").as_bytes())[..16])
}

fn ensure_role(conn: &Connection, name: &str) -> crate::db::DbResult<String> {
    if let Some(role) = store::list_roles(conn)?
        .into_iter()
        .find(|r| r.name == name && r.domain_id.is_none())
    {
        return Ok(role.id);
    }
    let role = Role {
        id: super::new_id(),
        name: name.into(),
        domain_id: None,
        description: String::new(),
        options: Default::default(),
        extra: Default::default(),
    };
    store::insert_role(conn, &role)?;
    Ok(role.id)
}

/// Runs the idempotent bootstrap.
pub fn run(
    db: &Db,
    state_dir: &Path,
    public_url: &str,
    admin_password: Option<&str>,
    services: &[CatalogEntry],
    ca_file: Option<&Path>,
) -> IdentityResult<BootstrapReport> {
    let admin_exists = db.read_blocking(|conn| {
        Ok(store::get_user_by_name(conn, DEFAULT_DOMAIN, "admin")?.is_some())
    })?;
    // The password is hashed (slowly) only when the admin user is created.
    let new_password = if admin_exists {
        None
    } else {
        Some(match admin_password {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => {
                let mut bytes = [0u8; 18];
                rand::rng().fill_bytes(&mut bytes);
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            }
        })
    };
    let password_hash = new_password
        .as_deref()
        .map(super::password::hash)
        .transpose()?;
    let public_url = public_url.to_string();
    let entries: Vec<(String, String, String)> = services
        .iter()
        .map(|s| (s.kind.to_string(), s.name.to_string(), s.path.to_string()))
        .collect();
    db.write_blocking(|tx| {
        store::upsert_region(
            tx,
            &Region {
                id: REGION.into(),
                description: String::new(),
                parent_region_id: None,
                extra: Default::default(),
            },
        )?;
        if store::get_domain(tx, DEFAULT_DOMAIN)?.is_none() {
            store::insert_domain(
                tx,
                &Domain {
                    id: DEFAULT_DOMAIN.into(),
                    name: "Default".into(),
                    description: "The default domain".into(),
                    enabled: true,
                    extra: Default::default(),
                },
            )?;
        }
        let project_id = match store::get_project_by_name(tx, DEFAULT_DOMAIN, "admin")? {
            Some(p) => p.id,
            None => {
                let project = Project {
                    id: super::new_id(),
                    name: "admin".into(),
                    domain_id: DEFAULT_DOMAIN.into(),
                    parent_id: None,
                    description: "Bootstrap project for initializing the cloud.".into(),
                    enabled: true,
                    is_domain: false,
                    extra: Default::default(),
                };
                store::insert_project(tx, &project)?;
                project.id
            }
        };
        let admin_role = ensure_role(tx, "admin")?;
        let member_role = ensure_role(tx, "member")?;
        let reader_role = ensure_role(tx, "reader")?;
        // As keystone-manage bootstrap: admin => manager => member => reader, and service.
        let manager_role = ensure_role(tx, "manager")?;
        ensure_role(tx, "service")?;
        store::insert_implied_role(tx, &admin_role, &member_role)?;
        store::insert_implied_role(tx, &admin_role, &manager_role)?;
        store::insert_implied_role(tx, &manager_role, &member_role)?;
        store::insert_implied_role(tx, &member_role, &reader_role)?;
        let user_id = match store::get_user_by_name(tx, DEFAULT_DOMAIN, "admin")? {
            Some(u) => u.id,
            None => {
                let now = now_unix();
                let user = User {
                    id: super::new_id(),
                    name: "admin".into(),
                    domain_id: DEFAULT_DOMAIN.into(),
                    enabled: true,
                    password_hash: password_hash.clone(),
                    password_changed_at: Some(now),
                    password_expires_at: None,
                    default_project_id: Some(project_id.clone()),
                    created_at: now,
                    options: Default::default(),
                    extra: Default::default(),
                };
                store::insert_user(tx, &user)?;
                user.id
            }
        };
        for (target_type, target_id) in [("project", project_id.as_str()), ("system", "all")] {
            store::insert_assignment(
                tx,
                &Assignment {
                    actor_type: "user".into(),
                    actor_id: user_id.clone(),
                    target_type: target_type.into(),
                    target_id: target_id.into(),
                    role_id: admin_role.clone(),
                    inherited: false,
                },
            )?;
        }
        for (kind, name, path) in &entries {
            let service_id = managed_id(&format!("service:{kind}"));
            store::upsert_service(
                tx,
                &Service {
                    id: service_id.clone(),
                    kind: kind.clone(),
                    name: name.clone(),
                    description: String::new(),
                    enabled: true,
                    extra: Default::default(),
                },
            )?;
            for interface in ["public", "internal", "admin"] {
                store::upsert_endpoint(
                    tx,
                    &Endpoint {
                        id: managed_id(&format!("endpoint:{kind}:{interface}")),
                        service_id: service_id.clone(),
                        interface: interface.into(),
                        url: format!("{public_url}{path}"),
                        region_id: Some(REGION.into()),
                        enabled: true,
                        extra: Default::default(),
                    },
                )?;
            }
        }
        store::purge_expired_tokens(tx, now_unix())?;
        Ok(())
    })?;

    let clouds_yaml = state_dir.join("clouds.yaml");
    let openrc = state_dir.join("admin-openrc.sh");
    // The files are kept true to the current URL and CA on every start;
    // the password is known on first start, and read back from clouds.yaml
    // afterwards (the state file keeps only its hash).
    let password = new_password
        .clone()
        .or_else(|| password_in_clouds_yaml(&clouds_yaml));
    if let Some(password) = &password {
        write_client_files(&clouds_yaml, &openrc, &public_url, password, ca_file)?;
    }
    Ok(BootstrapReport {
        created_admin: new_password.is_some(),
        clouds_yaml,
        openrc,
    })
}

fn write_private(path: &Path, text: &str) -> IdentityResult<()> {
    let io =
        |e: std::io::Error| IdentityError::Internal(format!("writing {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Single-quotes a string for POSIX shells.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The admin password in a clouds.yaml this bootstrap wrote.
fn password_in_clouds_yaml(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("password: "))?;
    serde_json::from_str(line.trim()).ok()
}

fn write_client_files(
    clouds_yaml: &Path,
    openrc: &Path,
    public_url: &str,
    password: &str,
    ca_file: Option<&Path>,
) -> IdentityResult<()> {
    let auth_url = format!("{public_url}/identity");
    // JSON strings are valid YAML double-quoted scalars.
    let quoted =
        serde_json::to_string(password).map_err(|e| IdentityError::Internal(e.to_string()))?;
    let yaml = format!(
        "clouds:\n  yunhe:\n    auth:\n      auth_url: {auth_url}\n      username: admin\n      password: {quoted}\n      \
         project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    \
         region_name: {REGION}\n    interface: public\n    identity_api_version: 3\n"
    );
    let (yaml_ca, rc_ca) = match ca_file {
        Some(ca) => {
            let ca = ca.display().to_string();
            let quoted =
                serde_json::to_string(&ca).map_err(|e| IdentityError::Internal(e.to_string()))?;
            (
                format!("    cacert: {quoted}\n"),
                format!("export OS_CACERT={}\n", shell_quote(&ca)),
            )
        }
        None => (String::new(), String::new()),
    };
    let yaml = yaml + &yaml_ca;
    if std::fs::read_to_string(clouds_yaml).is_ok_and(|old| old == yaml)
        && std::fs::read_to_string(openrc).is_ok_and(|old| old.ends_with(&rc_ca))
    {
        return Ok(());
    }
    write_private(clouds_yaml, &yaml)?;
    let rc = format!(
        "# Source this file to use the openstack CLI against yunhe as admin.\n\
         export OS_AUTH_URL={}\nexport OS_USERNAME=admin\nexport OS_PASSWORD={}\n\
         export OS_PROJECT_NAME=admin\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\n\
         export OS_REGION_NAME={REGION}\nexport OS_IDENTITY_API_VERSION=3\nexport OS_INTERFACE=public\n",
        shell_quote(&auth_url),
        shell_quote(password)
    ) + &rc_ca;
    write_private(openrc, &rc)
}
