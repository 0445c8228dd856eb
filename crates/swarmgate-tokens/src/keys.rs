//! Signing keys: Ed25519 pairs kept in the database (the default) or one
//! HS256 secret from the configuration for legacy services.

use std::collections::HashMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use swarmgate_core::SigningKeyRow;
use thiserror::Error;

/// The algorithms swarmgate signs with; the verifier accepts exactly the
/// configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    EdDSA,
    HS256,
}

impl Algorithm {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Algorithm::EdDSA),
            "HS256" => Some(Algorithm::HS256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::HS256 => "HS256",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

#[derive(Debug, Error)]
pub enum KeyRingError {
    #[error("no active signing key")]
    NoSigningKey,
    #[error("signing key {kid} is unusable: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

pub(crate) struct Signer {
    pub kid: String,
    pub key: EncodingKey,
}

/// The keys one instance signs and verifies with, and the JWKS it publishes.
pub struct KeyRing {
    algorithm: Algorithm,
    signer: Option<Signer>,
    verifiers: HashMap<String, DecodingKey>,
    jwks: Value,
}

impl KeyRing {
    /// Builds the ring from the database's Ed25519 keys (newest first).
    ///
    /// Every key is published and verifies at once, but signs only once it
    /// is `activation_delay_secs` old (unless it is the only key), so every
    /// instance has loaded it before any token signed with it is presented.
    /// Until then the previous key keeps signing. Retired keys verify (and
    /// stay in the JWKS) while `retired_at + keep_retired_secs` is in the
    /// future, so the tokens they signed live out their lifetime.
    pub fn ed25519(
        rows: &[SigningKeyRow],
        now: i64,
        keep_retired_secs: i64,
        activation_delay_secs: i64,
    ) -> Result<Self, KeyRingError> {
        let mut signer = None;
        let mut verifiers = HashMap::new();
        let mut published = Vec::new();
        for row in rows {
            if row.algorithm != Algorithm::EdDSA.as_str() {
                continue;
            }
            if let Some(retired) = row.retired_at {
                if retired + keep_retired_secs <= now {
                    continue;
                }
            }
            let bad = |reason: String| KeyRingError::BadKey {
                kid: row.kid.clone(),
                reason,
            };
            let decoding =
                DecodingKey::from_ed_components(&row.public_key).map_err(|e| bad(e.to_string()))?;
            verifiers.insert(row.kid.clone(), decoding);
            published.push(json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": row.public_key,
                "kid": row.kid,
                "alg": "EdDSA",
                "use": "sig",
            }));
            let active = row.created_at <= now - activation_delay_secs;
            if signer.is_none() && active {
                signer = Some(Self::signer_of(row)?);
            }
        }
        if signer.is_none() {
            // No key is old enough. On a fresh database the only key signs;
            // right after a rotation the previous key keeps signing (rows
            // come current first, then retired newest first).
            let usable: Vec<&SigningKeyRow> = rows
                .iter()
                .filter(|r| r.algorithm == Algorithm::EdDSA.as_str())
                .filter(|r| r.retired_at.is_none_or(|t| t + keep_retired_secs > now))
                .collect();
            if let Some(row) = usable.get(1).or(usable.first()) {
                signer = Some(Self::signer_of(row)?);
            }
        }
        Ok(Self {
            algorithm: Algorithm::EdDSA,
            signer,
            verifiers,
            jwks: json!({ "keys": published }),
        })
    }

    fn signer_of(row: &SigningKeyRow) -> Result<Signer, KeyRingError> {
        let bad = |reason: String| KeyRingError::BadKey {
            kid: row.kid.clone(),
            reason,
        };
        let pkcs8 = STANDARD
            .decode(&row.private_key)
            .map_err(|e| bad(e.to_string()))?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map_err(|e| bad(e.to_string()))?;
        Ok(Signer {
            kid: row.kid.clone(),
            key: EncodingKey::from_ed_der(&pkcs8),
        })
    }

    /// One shared secret. Symmetric keys are never published, so the JWKS
    /// is empty in this mode.
    pub fn hs256(secret: &[u8]) -> Self {
        let kid = format!("hs256-{}", &hex::encode(Sha256::digest(secret))[..12]);
        let mut verifiers = HashMap::new();
        verifiers.insert(kid.clone(), DecodingKey::from_secret(secret));
        Self {
            algorithm: Algorithm::HS256,
            signer: Some(Signer {
                kid,
                key: EncodingKey::from_secret(secret),
            }),
            verifiers,
            jwks: json!({ "keys": [] }),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn signer(&self) -> Result<&Signer, KeyRingError> {
        self.signer.as_ref().ok_or(KeyRingError::NoSigningKey)
    }

    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
    }

    pub(crate) fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers.get(kid)
    }

    pub fn jwks(&self) -> &Value {
        &self.jwks
    }
}

/// A new Ed25519 key pair as a database row; `kid` is its RFC 7638 JWK
/// thumbprint, so the same key always has the same id.
pub fn generate_ed25519(now: i64) -> Result<SigningKeyRow, KeyRingError> {
    let bad = |reason: String| KeyRingError::BadKey {
        kid: String::new(),
        reason,
    };
    let seed: [u8; 32] = swarmgate_core::random::bytes();
    let public = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| bad(e.to_string()))?;
    let pkcs8 = pkcs8_v2(&seed, public.public_key().as_ref());
    // ring checks the document and that its public key matches the seed.
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| bad(e.to_string()))?;
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
    Ok(SigningKeyRow {
        kid,
        algorithm: Algorithm::EdDSA.as_str().to_string(),
        private_key: STANDARD.encode(&pkcs8),
        public_key: x,
        created_at: now,
        retired_at: None,
    })
}

/// The PKCS#8 v2 document (RFC 8410, RFC 5958) of an Ed25519 key, as
/// ring's own generator lays it out: made here so the seed comes from
/// swarmgate's one source of randomness, not a second generator.
fn pkcs8_v2(seed: &[u8; 32], public: &[u8]) -> Vec<u8> {
    const HEAD: [u8; 16] = [
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const PUBLIC: [u8; 5] = [0xa1, 0x23, 0x03, 0x21, 0x00];
    let mut der = Vec::with_capacity(HEAD.len() + 32 + PUBLIC.len() + public.len());
    der.extend_from_slice(&HEAD);
    der.extend_from_slice(seed);
    der.extend_from_slice(&PUBLIC);
    der.extend_from_slice(public);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kids(ring: &KeyRing) -> Vec<String> {
        let mut kids: Vec<String> = ring.verifiers.keys().cloned().collect();
        kids.sort();
        kids
    }

    #[test]
    fn rotation_publishes_at_once_and_signs_after_the_delay() {
        let mut old = generate_ed25519(1_000).unwrap();
        // Fresh database: the only key signs at once.
        let ring = KeyRing::ed25519(std::slice::from_ref(&old), 1_000, 100, 2).unwrap();
        assert_eq!(ring.signing_kid(), Some(old.kid.as_str()));
        // Rotation in the same second: both verify, the old one signs.
        let new = generate_ed25519(1_000).unwrap();
        old.retired_at = Some(1_000);
        let rows = [new.clone(), old.clone()];
        let ring = KeyRing::ed25519(&rows, 1_001, 100, 2).unwrap();
        assert_eq!(ring.signing_kid(), Some(old.kid.as_str()));
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        // Once every instance has had time to load it, the new key signs.
        let ring = KeyRing::ed25519(&rows, 1_002, 100, 2).unwrap();
        assert_eq!(ring.signing_kid(), Some(new.kid.as_str()));
        // The retired key leaves the JWKS when its tokens have expired.
        let ring = KeyRing::ed25519(&rows, 1_100, 100, 2).unwrap();
        assert_eq!(kids(&ring), vec![new.kid.clone()]);
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 1);
    }
}
