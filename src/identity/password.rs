//! Password hashing with Argon2id (memory-hard), in PHC string format.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};

use super::{IdentityError, IdentityResult};

/// Hashes a password with a fresh random salt.
pub fn hash(password: &str) -> IdentityResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Internal(format!("password hashing failed: {e}")))
}

/// True when `password` matches the stored PHC hash.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_then_verify() {
        let stored = super::hash("s3cret").expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(super::verify("s3cret", &stored));
        assert!(!super::verify("S3cret", &stored));
        assert!(!super::verify("s3cret", "not a hash"));
    }
}
