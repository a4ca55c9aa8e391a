//! Issued tokens (by hash) and their revocation.

use rusqlite::{Connection, OptionalExtension, params};

use crate::db::DbResult;

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub token_hash: String,
    pub user_id: String,
    /// "project", "domain", "system" or "unscoped".
    pub scope_type: String,
    pub scope_id: String,
    pub methods: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    pub expires_unix: i64,
    pub audit_ids: Vec<String>,
    pub app_cred_id: Option<String>,
    pub revoked: bool,
}

pub fn insert_token(conn: &Connection, t: &TokenRecord) -> DbResult<()> {
    conn.execute(
        "INSERT INTO tokens (token_hash, user_id, scope_type, scope_id, methods, issued_at, expires_at,
            expires_unix, audit_ids, app_cred_id, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            t.token_hash,
            t.user_id,
            t.scope_type,
            t.scope_id,
            serde_json::to_string(&t.methods)?,
            t.issued_at,
            t.expires_at,
            t.expires_unix,
            serde_json::to_string(&t.audit_ids)?,
            t.app_cred_id,
            t.revoked
        ],
    )?;
    Ok(())
}

pub fn get_token(conn: &Connection, token_hash: &str) -> DbResult<Option<TokenRecord>> {
    let row = conn
        .query_row(
            "SELECT token_hash, user_id, scope_type, scope_id, methods, issued_at, expires_at,
                expires_unix, audit_ids, app_cred_id, revoked FROM tokens WHERE token_hash = ?1",
            [token_hash],
            |r| {
                Ok((
                    TokenRecord {
                        token_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        scope_type: r.get(2)?,
                        scope_id: r.get(3)?,
                        methods: Vec::new(),
                        issued_at: r.get(5)?,
                        expires_at: r.get(6)?,
                        expires_unix: r.get(7)?,
                        audit_ids: Vec::new(),
                        app_cred_id: r.get(9)?,
                        revoked: r.get(10)?,
                    },
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(8)?,
                ))
            },
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((mut token, methods, audit)) => {
            token.methods = serde_json::from_str(&methods)?;
            token.audit_ids = serde_json::from_str(&audit)?;
            Ok(Some(token))
        }
    }
}

pub fn revoke_token(conn: &Connection, token_hash: &str) -> DbResult<bool> {
    Ok(conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE token_hash = ?1",
        [token_hash],
    )? > 0)
}

/// Revokes a user's tokens, and (as Keystone's revocation events match a
/// trustor too) the tokens issued from the trusts the user is trustor of.
pub fn revoke_user_tokens(conn: &Connection, user_id: &str) -> DbResult<()> {
    conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE user_id = ?1
            OR (scope_type = 'trust'
                AND scope_id IN (SELECT id FROM trusts WHERE trustor_user_id = ?1))",
        [user_id],
    )?;
    Ok(())
}

/// Revokes the tokens of a user scoped to one project or domain.
pub fn revoke_user_scope_tokens(conn: &Connection, user_id: &str, scope_id: &str) -> DbResult<()> {
    conn.execute(
        "UPDATE tokens SET revoked = 1 WHERE user_id = ?1 AND scope_id = ?2",
        [user_id, scope_id],
    )?;
    Ok(())
}

/// Forgets tokens whose expiry has passed. An expired token fails
/// validation whether its row exists or not, and a revoked one stays
/// (with its `revoked` flag) until it expires.
pub fn purge_expired_tokens(conn: &Connection, now: i64) -> DbResult<usize> {
    Ok(conn.execute("DELETE FROM tokens WHERE expires_unix <= ?1", [now])?)
}
