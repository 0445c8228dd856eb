//! Opaque bearer secrets (refresh tokens): random, shown once, stored as a
//! SHA-256 hash. SHA-256 rather than a password hash is right here because
//! the secret has 256 bits of entropy, and it lets the database look the
//! token up by an index instead of scanning.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// A freshly minted secret and the hash to store.
pub struct OpaqueToken {
    pub token: String,
    pub hash: String,
}

impl std::fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueToken(..)")
    }
}

/// `prefix` plus 256 bits from the OS generator, base64url.
pub fn new_opaque(prefix: &str) -> OpaqueToken {
    let bytes: [u8; 32] = swarmgate_core::random::bytes();
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_opaque(&token);
    OpaqueToken { token, hash }
}

/// Hex SHA-256 of the whole presented string.
pub fn hash_opaque(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let a = new_opaque("sgr_");
        let b = new_opaque("sgr_");
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("sgr_") && a.token.len() == 4 + 43);
        assert_eq!(hash_opaque(&a.token), a.hash);
        assert_ne!(a.hash, b.hash);
    }
}
