//! The one source of randomness in swarmgate: the operating system's
//! generator, through `rand`'s `OsRng`. Secrets, salts, signing keys and
//! identifiers all come from here, so there is one thing to audit.

use rand::rngs::OsRng;
use rand::RngCore;

/// Fills `bytes` from the operating system's generator.
pub fn fill(bytes: &mut [u8]) {
    OsRng.fill_bytes(bytes);
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out);
    out
}

/// A random (version 4) UUID.
pub fn uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(bytes()).into_uuid()
}

/// A random UUID in its hyphenated form: ids of users, sessions, keys.
pub fn uuid_string() -> String {
    uuid().to_string()
}

/// A random UUID as 32 hex digits.
pub fn uuid_simple() -> String {
    uuid().simple().to_string()
}

/// The generator itself, for APIs that take one (password salts).
pub fn rng() -> OsRng {
    OsRng
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_are_version_4_and_distinct() {
        let (a, b) = (super::uuid(), super::uuid());
        assert_eq!(a.get_version_num(), 4);
        assert_ne!(a, b);
        assert_eq!(super::uuid_simple().len(), 32);
    }
}
