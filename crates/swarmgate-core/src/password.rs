//! Password policy and argon2id hashing.
//!
//! Hashing is CPU-bound (tens of milliseconds by design), so callers on an
//! async runtime must run [`hash`] and [`verify`] on a blocking thread.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::validate::ValidationError;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

/// OWASP's floor for argon2id; configuration may raise it, never lower it.
pub const MIN_MEMORY_KIB: u32 = 19_456;
pub const MIN_ITERATIONS: u32 = 2;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty())
        .collect()
});

/// Number of entries in the shipped common-password list.
pub fn common_list_len() -> usize {
    COMMON.len()
}

/// Checks the policy of seed 001 (upper, lower, digit, special, 8..=128
/// characters) and refuses common passwords, including the usual
/// decorations of one (`Password123!` is `password123` plus a `!`, and
/// `Dragon2024!` is `dragon` plus digits and a symbol).
pub fn check_policy(field: &'static str, password: &str) -> Result<(), ValidationError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at least {MIN_LEN} characters long"),
        ));
    }
    if len > MAX_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_LEN} characters long"),
        ));
    }
    let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
    if !has(|c| c.is_uppercase()) {
        return Err(ValidationError::new(
            field,
            "must contain an upper-case letter",
        ));
    }
    if !has(|c| c.is_lowercase()) {
        return Err(ValidationError::new(
            field,
            "must contain a lower-case letter",
        ));
    }
    if !has(char::is_ascii_digit) {
        return Err(ValidationError::new(field, "must contain a digit"));
    }
    if !has(|c| !c.is_alphanumeric() && !c.is_whitespace()) {
        return Err(ValidationError::new(
            field,
            "must contain a special character",
        ));
    }
    if is_common(password) {
        return Err(ValidationError::new(
            field,
            "is too common; choose a password that is not on a list of common passwords",
        ));
    }
    Ok(())
}

fn is_common(password: &str) -> bool {
    let lower = password.to_lowercase();
    let no_symbols = lower.trim_end_matches(|c: char| !c.is_alphanumeric());
    let bare = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    [lower.as_str(), no_symbols, bare]
        .iter()
        .any(|candidate| candidate.len() >= 4 && COMMON.contains(candidate))
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: MIN_MEMORY_KIB,
            iterations: MIN_ITERATIONS,
            parallelism: 1,
        }
    }
}

impl HashParams {
    fn argon2(&self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes with a fresh random salt into a PHC string.
pub fn hash(password: &str, params: HashParams) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut crate::random::rng());
    params
        .argon2()
        .map_err(|e| HashError(e.to_string()))?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Verifies against a PHC string with the parameters recorded in it. A
/// malformed stored hash verifies as false rather than erroring, so a broken
/// row can never be told apart from a wrong password by a caller.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_requires_every_class() {
        assert!(check_policy("password", "Zq7!mVx2").is_ok());
        for (bad, why) in [
            ("Zq7!mVx", "short"),
            ("zq7!mvx2k", "upper"),
            ("ZQ7!MVX2K", "lower"),
            ("Zqx!mVxak", "digit"),
            ("Zq7zmVx2k", "special"),
        ] {
            let err = check_policy("password", bad).unwrap_err();
            assert_eq!(err.field, "password", "{why}");
        }
        assert!(check_policy("password", &format!("Aa1!{}", "x".repeat(125))).is_err());
    }

    #[test]
    fn common_passwords_are_refused() {
        assert!(common_list_len() >= 10_000);
        for bad in ["Password123!", "Qwerty123!", "Dragon2024!", "Letmein1!"] {
            let err = check_policy("password", bad).unwrap_err();
            assert!(err.message.contains("common"), "{bad}: {}", err.message);
        }
        assert!(check_policy("password", "SecurePassword123!").is_ok());
    }

    #[test]
    fn hash_roundtrip_is_argon2id_phc() {
        let phc = hash("Zq7!mVx2", HashParams::default()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("Zq7!mVx2", &phc));
        assert!(!verify("Zq7!mVx3", &phc));
        assert!(!verify("Zq7!mVx2", "not a phc string"));
    }
}
