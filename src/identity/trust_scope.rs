//! Trusts as tokens see them: whether a trust (and every trust it was
//! redelegated from) can still be used, who may use it, and which roles a
//! token issued from it carries. A leaf: no HTTP; token issue, token
//! validation and the OS-TRUST API share it.
//!
//! As Keystone: a trust's roles are checked against the roles the
//! *original* trustor (the root of a redelegation chain) holds on the
//! project now, implied roles included, so a trust's tokens stop working
//! as soon as the trustor loses any delegated role.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::effective_roles;
use crate::db::DbError;
use crate::db::identity::trusts::{self, Trust};
use crate::db::identity::{self as store};

/// Keystone's default `[trust] max_redelegation_count`.
pub const DEFAULT_MAX_REDELEGATION_COUNT: i64 = 3;

/// A redelegation chain longer than this is refused (a loop guard; the
/// configured depth is far smaller).
const MAX_CHAIN: usize = 64;

/// Why a trust cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustScopeError {
    /// The trust does not exist, has expired or has no uses left.
    #[error("Could not find trust: {0}.")]
    NotFound(String),
    /// A trust up the redelegation chain is gone, or its trustee is disabled.
    #[error("One of the trust agents is disabled or deleted")]
    AgentDisabled,
    /// The user asking for a token is not the trust's trustee.
    #[error("User is not a trustee.")]
    NotTrustee,
    /// The trustor is disabled, deleted or in a disabled domain.
    #[error("Trustor is disabled.")]
    TrustorDisabled,
    /// The trustor no longer holds every role the trust delegates.
    #[error("Trustee has no delegated roles.")]
    NoDelegatedRoles,
    /// The state file failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

pub type TrustScopeResult<T> = Result<T, TrustScopeError>;

/// True when the trust's expiry (if any) is still ahead.
pub fn unexpired(trust: &Trust, now_micros: i64) -> bool {
    trust.expires_at_micros.is_none_or(|t| t > now_micros)
}

fn user_enabled(conn: &Connection, user_id: &str) -> TrustScopeResult<bool> {
    let Some(user) = store::get_user(conn, user_id)? else {
        return Ok(false);
    };
    let domain_enabled = store::get_domain(conn, &user.domain_id)?.is_some_and(|d| d.enabled);
    Ok(user.enabled && domain_enabled)
}

/// A trust that exists and has not expired, whose ancestors (for a
/// redelegated trust) are all still there with enabled trustees.
/// `need_use`: a token is being issued, so a used-up trust is refused too
/// (tokens issued before the last use keep validating).
pub fn usable_trust(
    conn: &Connection,
    id: &str,
    now_micros: i64,
    need_use: bool,
) -> TrustScopeResult<Trust> {
    let not_found = || TrustScopeError::NotFound(id.to_string());
    let trust = trusts::get_trust(conn, id)?.ok_or_else(not_found)?;
    if !unexpired(&trust, now_micros) || (need_use && trust.remaining_uses.is_some_and(|n| n <= 0))
    {
        return Err(not_found());
    }
    let mut parent_id = trust.redelegated_trust_id.clone();
    let mut hops = 0;
    while let Some(pid) = parent_id {
        hops += 1;
        let parent = match trusts::get_trust(conn, &pid)? {
            Some(parent) if hops < MAX_CHAIN && unexpired(&parent, now_micros) => parent,
            _ => return Err(TrustScopeError::AgentDisabled),
        };
        if !user_enabled(conn, &parent.trustee_user_id)? {
            return Err(TrustScopeError::AgentDisabled);
        }
        parent_id = parent.redelegated_trust_id;
    }
    Ok(trust)
}

/// The chain from `trust` up to the original trust, `trust` first.
pub fn pedigree(conn: &Connection, trust: &Trust) -> TrustScopeResult<Vec<Trust>> {
    let mut chain = vec![trust.clone()];
    while let Some(pid) = chain.last().and_then(|t| t.redelegated_trust_id.clone()) {
        if chain.len() >= MAX_CHAIN {
            return Err(TrustScopeError::AgentDisabled);
        }
        let parent = trusts::get_trust(conn, &pid)?.ok_or(TrustScopeError::AgentDisabled)?;
        chain.push(parent);
    }
    Ok(chain)
}

/// The user whose roles the trust (or its chain) delegates.
pub fn original_trustor(conn: &Connection, trust: &Trust) -> TrustScopeResult<String> {
    Ok(pedigree(conn, trust)?.pop().map_or_else(
        || trust.trustor_user_id.clone(),
        |root| root.trustor_user_id,
    ))
}

/// Role ids the original trustor holds on the trust's project now
/// (implied roles included); none without a project.
pub fn trustor_role_ids(
    conn: &Connection,
    trustor_id: &str,
    project_id: Option<&str>,
) -> TrustScopeResult<Vec<String>> {
    match project_id {
        Some(project) => Ok(effective_roles::effective_role_ids(
            conn, trustor_id, "project", project,
        )?),
        None => Ok(Vec::new()),
    }
}

/// The roles, as (id, name), of a token issued from the trust: its roles
/// and the roles they imply, each of which the original trustor must still
/// hold on the project. Domain-specific roles never appear in tokens.
pub fn delegated_roles(
    conn: &Connection,
    trust: &Trust,
) -> TrustScopeResult<Vec<(String, String)>> {
    let Some(project_id) = trust.project_id.as_deref() else {
        return Ok(Vec::new());
    };
    let mut wanted: BTreeSet<String> = trust.roles.iter().cloned().collect();
    effective_roles::expand_implied(&mut wanted, &store::list_implied_roles(conn)?);
    let trustor = original_trustor(conn, trust)?;
    let held = trustor_role_ids(conn, &trustor, Some(project_id))?;
    if wanted.is_empty() || !wanted.iter().all(|id| held.contains(id)) {
        return Err(TrustScopeError::NoDelegatedRoles);
    }
    Ok(store::list_roles(conn)?
        .into_iter()
        .filter(|r| r.domain_id.is_none() && wanted.contains(&r.id))
        .map(|r| (r.id, r.name))
        .collect())
}

/// Checks that `user_id` may use the trust: it is the trustee, and the
/// trustor is still enabled.
pub fn check_trustee(conn: &Connection, trust: &Trust, user_id: &str) -> TrustScopeResult<()> {
    if trust.trustee_user_id != user_id {
        return Err(TrustScopeError::NotTrustee);
    }
    if !user_enabled(conn, &trust.trustor_user_id)? {
        return Err(TrustScopeError::TrustorDisabled);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::identity::test_connection;

    fn exec(conn: &Connection, sql: &str) {
        conn.execute_batch(sql).expect("setup SQL");
    }

    /// alice holds r1 (which implies r2) on p1; bob and carol are users.
    fn setup() -> Connection {
        let conn = test_connection();
        exec(
            &conn,
            "INSERT INTO domains (id, name) VALUES ('default', 'Default');
             INSERT INTO projects (id, name, domain_id) VALUES ('p1', 'p1', 'default');
             INSERT INTO users (id, name, domain_id, created_at) VALUES
                ('alice', 'alice', 'default', 0), ('bob', 'bob', 'default', 0),
                ('carol', 'carol', 'default', 0);
             INSERT INTO roles (id, name) VALUES ('r1', 'r1'), ('r2', 'r2'), ('r3', 'r3');
             INSERT INTO implied_roles VALUES ('r1', 'r2');
             INSERT INTO assignments (actor_type, actor_id, target_type, target_id, role_id)
                VALUES ('user', 'alice', 'project', 'p1', 'r1');",
        );
        conn
    }

    fn trust(id: &str, trustor: &str, trustee: &str, parent: Option<&str>) -> Trust {
        Trust {
            id: id.into(),
            trustor_user_id: trustor.into(),
            trustee_user_id: trustee.into(),
            project_id: Some("p1".into()),
            impersonation: false,
            expires_at_micros: None,
            remaining_uses: None,
            redelegation_count: 1,
            redelegated_trust_id: parent.map(str::to_string),
            roles: vec!["r1".into()],
        }
    }

    #[test]
    fn roles_follow_the_original_trustor() {
        let conn = setup();
        trusts::insert_trust(&conn, &trust("t1", "alice", "bob", None), 1).expect("t1");
        trusts::insert_trust(&conn, &trust("t2", "bob", "carol", Some("t1")), 2).expect("t2");
        let t2 = usable_trust(&conn, "t2", 0, true).expect("usable");
        assert_eq!(original_trustor(&conn, &t2).expect("root"), "alice");
        let names: Vec<String> = delegated_roles(&conn, &t2)
            .expect("roles")
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(names, vec!["r1".to_string(), "r2".to_string()]);
        exec(&conn, "DELETE FROM assignments");
        assert!(matches!(
            delegated_roles(&conn, &t2),
            Err(TrustScopeError::NoDelegatedRoles)
        ));
    }

    #[test]
    fn expiry_uses_and_chain() {
        let conn = setup();
        let mut t1 = trust("t1", "alice", "bob", None);
        t1.expires_at_micros = Some(100);
        trusts::insert_trust(&conn, &t1, 1).expect("t1");
        assert!(usable_trust(&conn, "t1", 99, true).is_ok());
        assert!(matches!(
            usable_trust(&conn, "t1", 100, true),
            Err(TrustScopeError::NotFound(_))
        ));
        let mut t3 = trust("t3", "alice", "bob", None);
        t3.remaining_uses = Some(0);
        trusts::insert_trust(&conn, &t3, 1).expect("t3");
        assert!(usable_trust(&conn, "t3", 0, true).is_err());
        assert!(usable_trust(&conn, "t3", 0, false).is_ok());
        trusts::insert_trust(&conn, &trust("t2", "bob", "carol", Some("t1")), 2).expect("t2");
        assert!(matches!(
            usable_trust(&conn, "t2", 200, false),
            Err(TrustScopeError::AgentDisabled)
        ));
        exec(&conn, "UPDATE users SET enabled = 0 WHERE id = 'bob'");
        assert!(matches!(
            usable_trust(&conn, "t2", 0, false),
            Err(TrustScopeError::AgentDisabled)
        ));
    }

    #[test]
    fn only_the_trustee_with_an_enabled_trustor() {
        let conn = setup();
        let t1 = trust("t1", "alice", "bob", None);
        trusts::insert_trust(&conn, &t1, 1).expect("t1");
        assert!(check_trustee(&conn, &t1, "bob").is_ok());
        assert!(matches!(
            check_trustee(&conn, &t1, "carol"),
            Err(TrustScopeError::NotTrustee)
        ));
        exec(&conn, "UPDATE users SET enabled = 0 WHERE id = 'alice'");
        assert!(matches!(
            check_trustee(&conn, &t1, "bob"),
            Err(TrustScopeError::TrustorDisabled)
        ));
    }
}
