//! Client authentication with a signed JWT (`private_key_jwt`, RFC 7523
//! section 3 and OpenID Connect Core section 9): the client signs a short
//! assertion with its private key; we verify it with the public key it
//! registered. The rules, each with its own error:
//! `iss` = `sub` = the client id, `aud` one of ours, `exp` present and at
//! most five minutes ahead, `jti` present (its single use is enforced by
//! the caller, which owns the shared replay cache), and only ES256, EdDSA
//! or RS256, never a key carried in the assertion itself.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

pub const ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far ahead an assertion's `exp` may lie.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated between client and server.
const SKEW_SECS: i64 = 10;
const ACCEPTED: [Algorithm; 3] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientAssertionError {
    #[error("client assertion is malformed")]
    Malformed,
    #[error("client assertion algorithm must be ES256, EdDSA or RS256")]
    Algorithm,
    #[error("client assertion may not carry its own key (jwk, jku, x5u, x5c)")]
    EmbeddedKey,
    #[error("client assertion iss and sub must both be the client id")]
    Subject,
    #[error("client assertion audience is not this server")]
    Audience,
    #[error("client assertion has expired")]
    Expired,
    #[error("client assertion exp is more than 5 minutes ahead")]
    TooLong,
    #[error("client assertion is missing {0}")]
    Missing(&'static str),
    #[error("client assertion signature does not verify with the client's registered keys")]
    Signature,
}

/// The unverified `iss`/`sub`, to find which client's keys to try.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeekedClaims {
    pub iss: Option<String>,
    pub sub: Option<String>,
}

/// Reads the claims without verifying anything: only for choosing keys.
pub fn peek_claims(token: &str) -> Result<PeekedClaims, ClientAssertionError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    if token.len() > crate::MAX_TOKEN_BYTES {
        return Err(ClientAssertionError::Malformed);
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or(ClientAssertionError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| ClientAssertionError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| ClientAssertionError::Malformed)
}

/// A client's registered public keys, checked at registration.
#[derive(Debug, Clone)]
pub struct ClientKeys {
    set: JwkSet,
}

impl ClientKeys {
    /// Parses a JWK Set, refusing keys that cannot verify an accepted
    /// algorithm (symmetric keys, curves other than P-256 and Ed25519) and
    /// any private key material (`d`, `p`, `q`…): a client that sent its
    /// private key has leaked it.
    pub fn parse(jwks: &serde_json::Value) -> Result<Self, String> {
        let keys = jwks
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("must be a JWK Set: {\"keys\": [...]}")?;
        if keys.is_empty() || keys.len() > 20 {
            return Err("must hold 1 to 20 keys".into());
        }
        for key in keys {
            if ["d", "p", "q", "dp", "dq", "qi", "k"]
                .iter()
                .any(|f| key.get(f).is_some())
            {
                return Err(
                    "holds private or symmetric key material; register only the public key".into(),
                );
            }
        }
        let set: JwkSet = serde_json::from_value(jwks.clone())
            .map_err(|e| format!("is not a valid JWK Set: {e}"))?;
        for jwk in &set.keys {
            match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {}
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {}
                AlgorithmParameters::RSA(p) => {
                    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
                    use base64::Engine;
                    let bits = URL_SAFE_NO_PAD
                        .decode(p.n.trim_end_matches('='))
                        .map(|n| n.iter().skip_while(|b| **b == 0).count() * 8)
                        .unwrap_or(0);
                    if bits < 2048 {
                        return Err("RSA keys must have at least 2048 bits".into());
                    }
                }
                _ => {
                    return Err(
                        "keys must be EC P-256 (ES256), OKP Ed25519 (EdDSA) or RSA (RS256)".into(),
                    )
                }
            }
            DecodingKey::from_jwk(jwk).map_err(|e| format!("holds an unusable key: {e}"))?;
        }
        Ok(Self { set })
    }

    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&Jwk> {
        self.set
            .keys
            .iter()
            .filter(|k| match kid {
                Some(kid) => k.common.key_id.as_deref() == Some(kid),
                None => true,
            })
            .filter(|k| fits(k, alg))
            .collect()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.set.find(kid).is_some()
    }
}

fn fits(key: &Jwk, alg: Algorithm) -> bool {
    matches!(
        (&key.algorithm, alg),
        (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
            | (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
            | (AlgorithmParameters::RSA(_), Algorithm::RS256)
    )
}

/// What a verified assertion tells the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAssertion {
    pub jti: String,
    pub exp: i64,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    jti: Option<String>,
}

/// Verifies `token` as an assertion of `client_id`, addressed to one of
/// `audiences`, at unix time `now`.
pub fn verify_client_assertion(
    token: &str,
    keys: &ClientKeys,
    client_id: &str,
    audiences: &[String],
    now: i64,
) -> Result<ClientAssertion, ClientAssertionError> {
    use jsonwebtoken::errors::ErrorKind;
    if token.len() > crate::MAX_TOKEN_BYTES {
        return Err(ClientAssertionError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| ClientAssertionError::Malformed)?;
    if header.jwk.is_some() || header.jku.is_some() || header.x5u.is_some() || header.x5c.is_some()
    {
        return Err(ClientAssertionError::EmbeddedKey);
    }
    if !ACCEPTED.contains(&header.alg) {
        return Err(ClientAssertionError::Algorithm);
    }
    let candidates = keys.candidates(header.kid.as_deref(), header.alg);
    if candidates.is_empty() {
        return Err(ClientAssertionError::Signature);
    }
    let mut validation = Validation::new(header.alg);
    validation.leeway = SKEW_SECS as u64;
    validation.validate_nbf = true;
    validation.set_audience(audiences);
    validation.required_spec_claims = ["exp", "aud"].into_iter().map(String::from).collect();
    let mut last = ClientAssertionError::Signature;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => {
                let c = data.claims;
                if c.iss.as_deref() != Some(client_id) || c.sub.as_deref() != Some(client_id) {
                    return Err(ClientAssertionError::Subject);
                }
                let exp = c.exp.ok_or(ClientAssertionError::Missing("exp"))?;
                if exp > now + MAX_ASSERTION_LIFETIME_SECS + SKEW_SECS {
                    return Err(ClientAssertionError::TooLong);
                }
                let jti = c
                    .jti
                    .filter(|j| !j.is_empty() && j.len() <= 256)
                    .ok_or(ClientAssertionError::Missing("jti"))?;
                return Ok(ClientAssertion { jti, exp });
            }
            Err(e) => {
                last = match e.into_kind() {
                    ErrorKind::InvalidSignature => ClientAssertionError::Signature,
                    ErrorKind::ExpiredSignature => return Err(ClientAssertionError::Expired),
                    ErrorKind::InvalidAudience => return Err(ClientAssertionError::Audience),
                    ErrorKind::ImmatureSignature => return Err(ClientAssertionError::Expired),
                    ErrorKind::MissingRequiredClaim(c) if c == "exp" => {
                        return Err(ClientAssertionError::Missing("exp"))
                    }
                    ErrorKind::MissingRequiredClaim(_) => {
                        return Err(ClientAssertionError::Missing("aud"))
                    }
                    ErrorKind::InvalidAlgorithm => ClientAssertionError::Signature,
                    _ => ClientAssertionError::Malformed,
                };
            }
        }
    }
    Err(last)
}
