//! Finding a server for a caller: visibility (Nova's `project_only`), the
//! rule check on the server, the lock check. No HTTP here.

use super::{ComputeError, ComputeResult, ComputeState};
use crate::db::servers::{self as db, Server};
use crate::identity::AuthContext;
use crate::policy::Target;

/// A server the caller may see, or 404: admin contexts read every
/// project's servers, others their own project's (Nova's `project_only`).
pub async fn load(s: &ComputeState, ctx: &AuthContext, id: &str) -> ComputeResult<Server> {
    let id_owned = id.to_string();
    let found = s
        .read(move |conn| Ok(db::get_server(conn, &id_owned)?))
        .await?;
    visible(super::is_admin_context(s, ctx), ctx, found, id)
}

/// The target of Nova's rules on a server: its project and user.
pub fn server_target(server: &Server) -> Target {
    super::owner_target(&server.project_id, &server.user_id)
}

/// A server the caller may see (else 404), once `rule` allows the caller
/// on it (else 403), as Nova's handlers load then check.
pub async fn load_authorized(
    s: &ComputeState,
    ctx: &AuthContext,
    id: &str,
    rule: &str,
) -> ComputeResult<Server> {
    let server = load(s, ctx, id).await?;
    super::authorize(s, ctx, rule, &server_target(&server))?;
    Ok(server)
}

/// The server if it exists, is not deleted and the caller may see it
/// (`admin`: the caller's is an admin context).
pub fn visible(
    admin: bool,
    ctx: &AuthContext,
    found: Option<Server>,
    id: &str,
) -> ComputeResult<Server> {
    match found {
        Some(server)
            if !server.deleted
                && (admin || ctx.project_id() == Some(server.project_id.as_str())) =>
        {
            Ok(server)
        }
        _ => Err(not_found(id)),
    }
}

pub fn not_found(id: &str) -> ComputeError {
    ComputeError::NotFound(format!("Instance {id} could not be found."))
}

/// Loads inside a write transaction (for read-modify-write).
pub fn load_tx(
    tx: &rusqlite::Transaction,
    admin: bool,
    ctx: &AuthContext,
    id: &str,
) -> ComputeResult<Server> {
    visible(admin, ctx, db::get_server(tx, id)?, id)
}

/// Loads a server inside a write transaction for `action`, whoever it
/// belongs to (the caller was authorized on it before): 404 when gone, 409
/// when locked (for a non-admin) or in a state `action` may not start in.
pub fn load_for_action(
    tx: &rusqlite::Transaction,
    id: &str,
    admin: bool,
    action: super::states::Action,
) -> ComputeResult<Server> {
    let server = db::get_server(tx, id)?
        .filter(|sv| !sv.deleted)
        .ok_or_else(|| not_found(id))?;
    check_unlocked(admin, &server)?;
    action
        .check(id, server.vm_state, server.task_state)
        .map_err(|e| ComputeError::Conflict(e.to_string()))?;
    Ok(server)
}

/// 409 when the server is locked and the caller's is not an admin context.
pub fn check_unlocked(admin: bool, server: &Server) -> ComputeResult<()> {
    if server.locked && !admin {
        return Err(ComputeError::Conflict(format!(
            "Instance {} is locked",
            server.id
        )));
    }
    Ok(())
}
