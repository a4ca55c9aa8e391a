//! Checking a user's password or an application credential's secret with
//! every protection around it: rate limits, Keystone's lockout, the bounded
//! Argon2 pool, a dummy hash for unknown names.
//!
//! The order is: take rate-limit tokens (429 when empty) → look the user up
//! on a reader connection → refuse a locked account → verify on the pool
//! (outside any transaction) → count a failure, or give the tokens back.
//! The caller then does its own write (issue a token, change the password),
//! which must check that the hash it verified is still the stored one.

use std::sync::Arc;

use rusqlite::Connection;
use serde_json::Value;

use super::throttle::ClientAddr;
use super::{IdentityError, IdentityResult, IdentityState};
use crate::db::identity::{self as store, AppCredential, User};
use crate::db::now_unix;

fn unauthorized() -> IdentityError {
    IdentityError::Unauthorized("The request you have made requires authentication.".into())
}

fn rate_limited(wait: u64) -> IdentityError {
    IdentityError::TooManyRequests {
        message: "Too many failed authentication attempts; try again later.".into(),
        retry_after: wait,
    }
}

/// True when an admin set Keystone's `ignore_lockout_failure_attempts` on the user.
fn ignores_lockout(user: &User) -> bool {
    user.options.get("ignore_lockout_failure_attempts") == Some(&Value::Bool(true))
}

/// A user whose password was checked; `password_hash` is the hash that matched.
pub struct VerifiedUser {
    pub user: User,
    pub password_hash: String,
}

/// Checks `password` for the user `find` returns (None: no such user).
/// `user_key` names the user as the client did, for the per-user bucket.
pub async fn check_password<F>(
    state: &Arc<IdentityState>,
    source: &ClientAddr,
    user_key: String,
    find: F,
    password: &str,
) -> IdentityResult<VerifiedUser>
where
    F: FnOnce(&Connection) -> IdentityResult<Option<User>> + Send + 'static,
{
    let reservation = state
        .throttle
        .reserve(source, Some(user_key))
        .map_err(rate_limited)?;
    if let Err(busy) = state.passwords.check_room() {
        state.throttle.release(&reservation);
        return Err(busy.into());
    }
    let found = state
        .read(move |conn| {
            let Some(user) = find(conn)? else {
                return Ok(None);
            };
            let failures = store::auth_failures(conn, &user.id)?;
            Ok(Some((user, failures)))
        })
        .await?;
    let now = now_unix();
    if let Some((user, (failures, last))) = &found
        && !ignores_lockout(user)
        && state.limits.is_locked(*failures, *last, now)
    {
        return Err(IdentityError::Unauthorized(format!(
            "The account is locked for user: {}.",
            user.id
        )));
    }
    let stored = found
        .as_ref()
        .and_then(|(user, _)| user.password_hash.clone());
    let matched = match state.passwords.verify(password, stored.as_deref()).await {
        Ok(matched) => matched,
        Err(e) => {
            // A full pool is no failed guess.
            state.throttle.release(&reservation);
            return Err(e.into());
        }
    };
    match (found, stored) {
        (Some((user, _)), Some(password_hash)) if matched => {
            state.throttle.release(&reservation);
            Ok(VerifiedUser {
                user,
                password_hash,
            })
        }
        (Some((user, _)), _) => {
            if state.limits.lockout_failure_attempts > 0 && !ignores_lockout(&user) {
                record_failure(state, user.id).await?;
            }
            Err(unauthorized())
        }
        (None, _) => Err(unauthorized()),
    }
}

/// Counts one failed password check (restarting the count when an
/// earlier lock has run out, as Keystone does).
async fn record_failure(state: &Arc<IdentityState>, user_id: String) -> IdentityResult<()> {
    let limits = state.limits.clone();
    state
        .write_keeping_cache(move |tx| {
            let now = now_unix();
            let (mut count, last) = store::auth_failures(tx, &user_id)?;
            if count >= limits.lockout_failure_attempts && !limits.is_locked(count, last, now) {
                count = 0;
            }
            store::set_auth_failures(tx, &user_id, count.saturating_add(1), Some(now))?;
            Ok(())
        })
        .await
}

/// Clears a user's failure count after a successful check (inside the
/// caller's write transaction).
pub fn clear_failures(conn: &Connection, user_id: &str) -> IdentityResult<()> {
    if store::auth_failures(conn, user_id)?.0 > 0 {
        store::set_auth_failures(conn, user_id, 0, None)?;
    }
    Ok(())
}

/// Checks an application credential's secret. `find` returns the
/// credential (None: unknown); `key` names it as the client did.
pub async fn check_app_cred_secret<F>(
    state: &Arc<IdentityState>,
    source: &ClientAddr,
    key: String,
    find: F,
    secret: &str,
) -> IdentityResult<AppCredential>
where
    F: FnOnce(&Connection) -> IdentityResult<Option<AppCredential>> + Send + 'static,
{
    let reservation = state
        .throttle
        .reserve(source, Some(key))
        .map_err(rate_limited)?;
    if let Err(busy) = state.passwords.check_room() {
        state.throttle.release(&reservation);
        return Err(busy.into());
    }
    let found = state.read(find).await?;
    let stored = found.as_ref().map(|c| c.secret_hash.clone());
    let matched = match state.passwords.verify(secret, stored.as_deref()).await {
        Ok(matched) => matched,
        Err(e) => {
            state.throttle.release(&reservation);
            return Err(e.into());
        }
    };
    match found {
        Some(cred) if matched => {
            state.throttle.release(&reservation);
            Ok(cred)
        }
        _ => Err(unauthorized()),
    }
}

/// Hashes a new password or secret on the pool.
pub async fn hash_secret(state: &IdentityState, secret: &str) -> IdentityResult<String> {
    match state.passwords.hash(secret).await {
        Err(super::password::PasswordError::Hashing(m)) => Err(IdentityError::BadRequest(m)),
        other => Ok(other?),
    }
}
