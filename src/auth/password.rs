//! Password hashing with argon2id, and the dummy hash that makes "no such user" cost as much as
//! "wrong password", so response times do not reveal which addresses have accounts.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::distributions::{Alphanumeric, DistString};

/// Shortest password accepted for a new account.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest accepted: argon2 takes any length, but a request body should not buy CPU.
pub const MAX_PASSWORD_LEN: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters")]
    Policy,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes and verifies passwords with one set of argon2id parameters. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    /// A hash of a random password with the current parameters, verified against when the
    /// account does not exist.
    dummy: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(memory_kib: u32, iterations: u32) -> Result<Self, PasswordError> {
        let params = Params::new(memory_kib, iterations, 1, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let mut hasher = Self {
            params,
            dummy: String::new(),
        };
        hasher.dummy = hasher.hash_unchecked(&generate_password())?;
        Ok(hasher)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// Hashes a new password after checking it against the policy. Slow on purpose: call it
    /// off the async workers (`spawn_blocking`).
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        check_policy(password)?;
        self.hash_unchecked(password)
    }

    fn hash_unchecked(&self, password: &str) -> Result<String, PasswordError> {
        self.argon2()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// True when `password` matches `hash`; `None` as the hash verifies against the dummy
    /// (and answers false) so both paths cost the same.
    pub fn verify(&self, password: &str, hash: Option<&str>) -> bool {
        let matched = self.verify_one(password, hash.unwrap_or(&self.dummy));
        matched && hash.is_some()
    }

    fn verify_one(&self, password: &str, hash: &str) -> bool {
        // An unparseable stored hash still costs a real verification.
        let parsed = PasswordHash::new(hash).or_else(|_| PasswordHash::new(&self.dummy));
        match parsed {
            Ok(parsed) => self
                .argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }
}

impl PasswordHasher {
    /// `hash` on the blocking pool, so argon2 never stalls an async worker.
    pub async fn hash_off_thread(&self, password: String) -> Result<String, PasswordError> {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.hash(&password))
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?
    }

    /// `verify` on the blocking pool.
    pub async fn verify_off_thread(&self, password: String, hash: Option<String>) -> bool {
        let hasher = self.clone();
        tokio::task::spawn_blocking(move || hasher.verify(&password, hash.as_deref()))
            .await
            .unwrap_or(false)
    }
}

/// Checks a new password against the length policy.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
        Ok(())
    } else {
        Err(PasswordError::Policy)
    }
}

/// A random 24-character alphanumeric password (about 142 bits), for accounts created without one.
pub fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_only_with_the_right_password() {
        let hasher = PasswordHasher::new(64, 1).unwrap();
        let hash = hasher.hash("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse battery", Some(&hash)));
        assert!(!hasher.verify("wrong horse battery", Some(&hash)));
        assert!(!hasher.verify("correct horse battery", None));
        assert!(!hasher.verify("correct horse battery", Some("not a hash")));
    }

    #[test]
    fn short_passwords_are_refused_and_generated_ones_pass() {
        let hasher = PasswordHasher::new(64, 1).unwrap();
        assert!(matches!(hasher.hash("short"), Err(PasswordError::Policy)));
        let generated = generate_password();
        assert_eq!(generated.len(), 24);
        assert!(check_policy(&generated).is_ok());
    }
}
