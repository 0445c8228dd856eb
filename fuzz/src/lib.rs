//! What the fuzz targets share: fixed key material (so the committed seeds
//! under `fuzz/seeds/` stay validly signed from run to run) and a way to
//! run a future that never waits.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use swarmgate_core::SigningKeyRow;
use swarmgate_tokens::{AccessClaims, AccessTokens, ClientKeys, KeyRing};

pub const ISSUER: &str = "https://fuzz.swarmgate.test";
pub const AUDIENCE: &str = "swarmgate";
/// The HS256 secret the seed `credential/bearer-hs256` is signed with.
pub const HS256_SECRET: &[u8] = b"swarmgate-fuzz-hs256-secret-32-bytes-long";
/// PKCS#8 v1 of the Ed25519 key whose seed is the bytes 1 to 32.
const ED25519_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g";
/// Its public half, as a JWK `x`.
pub const ED25519_X: &str = "ebVWLo_mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ";
/// Far enough ahead that the seeds outlive the project, and a valid
/// client assertion's `exp` (at most five minutes after [`ASSERTION_NOW`]).
pub const EXP: i64 = 4_102_444_800;
pub const ASSERTION_NOW: i64 = EXP - 60;
pub const CLIENT_ID: &str = "fuzz-client";
pub const CLIENT_KID: &str = "fuzz-client-key";
pub const ASSERTION_JTI: &str = "fuzz-assertion-1";

/// The claims of every token the seeds carry: the only claims a token
/// that verifies can have, since no other token was ever signed with
/// these keys.
pub fn access_claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "00000000-0000-4000-8000-000000000001".into(),
        exp: EXP,
        iat: 1_700_000_000,
        nbf: 1_700_000_000,
        jti: "fuzz-jti".into(),
        sid: "fuzz-session".into(),
        role: "admin".into(),
        username: "fuzz".into(),
        ..AccessClaims::default()
    }
}

/// A verifier per algorithm swarmgate signs with: HS256 and EdDSA.
pub fn access_tokens() -> &'static [AccessTokens; 2] {
    static TOKENS: OnceLock<[AccessTokens; 2]> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let row = SigningKeyRow {
            kid: "fuzz-ed25519".into(),
            algorithm: "EdDSA".into(),
            private_key: ED25519_PKCS8.into(),
            public_key: ED25519_X.into(),
            created_at: 0,
            retired_at: None,
        };
        let ed25519 = KeyRing::ed25519(&[row], 1, 0, 0).expect("the fixed key is valid");
        [
            AccessTokens::new(KeyRing::hs256(HS256_SECRET), ISSUER, AUDIENCE),
            AccessTokens::new(ed25519, ISSUER, AUDIENCE),
        ]
    })
}

/// The registered keys of the client `fuzz-client`: the same Ed25519 key.
pub fn client_keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": ED25519_X, "kid": CLIENT_KID, "alg": "EdDSA"}
        ]});
        ClientKeys::parse(&jwks).expect("the fixed JWK Set is valid")
    })
}

/// Runs a future that completes without waiting on anything (an extractor
/// reading a body that is already in memory).
pub fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a future over an in-memory body kept waiting")
}

/// Percent-encodes every byte but the unreserved ones, a space as `+`, as
/// a client form-encodes a Basic credential part (RFC 6749 section 2.3.1).
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
