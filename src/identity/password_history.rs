//! Keystone's password history (`unique_last_password_count`): a
//! self-service password change may not reuse the current password or the
//! ones it replaced, up to the count; an admin's reset is not checked. The
//! replaced hashes are recorded by the state file itself (a trigger, see
//! `db::identity::extensions`). A leaf used by the users API.

use super::{IdentityError, IdentityResult, IdentityState};
use crate::db::identity::extensions as ext;

/// Refuses `new` (400) when it matches the user's `current` hash or one of
/// the previous `unique_last_password_count - 1`.
pub async fn check(
    s: &IdentityState,
    user_id: &str,
    current: &str,
    new: &str,
) -> IdentityResult<()> {
    let count = s.limits.unique_last_password_count as usize;
    if count == 0 {
        return Ok(());
    }
    let user = user_id.to_string();
    let mut hashes = vec![current.to_string()];
    hashes.extend(
        s.read(move |conn| Ok(ext::previous_password_hashes(conn, &user, count - 1)?))
            .await?,
    );
    for hash in &hashes {
        if s.passwords.verify(new, Some(hash)).await? {
            return Err(IdentityError::BadRequest(format!(
                "The new password cannot be identical to a previous password. The total number which includes the new password must be unique is {count}."
            )));
        }
    }
    Ok(())
}
