//! Every way a forged or broken access token must fail: 401, never 500.
//!
//! Tokens are forged with the server's real private key (read from its
//! database) wherever the point is that the signature is fine and something
//! else is wrong, so each test isolates exactly one rule.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use ring::signature::Ed25519KeyPair;
use serde_json::{json, Value};

use crate::common::*;

struct Forge {
    server: TestServer,
    kid: String,
    x: String,
    pair: Ed25519KeyPair,
    /// Claims of a real token, to be altered one at a time.
    claims: Value,
    real_token: String,
}

impl Forge {
    async fn new() -> Self {
        let server = TestServer::start().await;
        let session = server.user_session("forger").await;
        let real_token = session["access_token"].as_str().unwrap().to_string();
        let payload = real_token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let (key, pair) = server_signing_key(&server).await;
        Self {
            server,
            kid: key.kid,
            x: key.public_key,
            pair,
            claims,
            real_token,
        }
    }

    fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid})
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn with_claim(&self, name: &str, value: Value) -> String {
        let mut claims = self.claims.clone();
        claims[name] = value;
        self.sign(&self.header(), &claims)
    }

    fn with_header(&self, name: &str, value: Value) -> String {
        let mut header = self.header();
        header[name] = value;
        self.sign(&header, &self.claims)
    }

    async fn status_of(&self, token: &str) -> (StatusCode, Value, String) {
        let r = self.server.get_auth("/auth/me", token).await;
        let status = r.status();
        let www = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, r.json().await.unwrap_or(Value::Null), www)
    }

    async fn accepts(&self, token: &str) {
        let (status, body, _) = self.status_of(token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn rejects(&self, token: &str) {
        let (status, body, www) = self.status_of(token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "invalid_token", "{body}");
        assert!(www.starts_with("Bearer"), "{www}");
    }
}

#[tokio::test]
async fn the_forging_harness_makes_tokens_the_server_accepts() {
    let f = Forge::new().await;
    f.accepts(&f.real_token).await;
    f.accepts(&f.sign(&f.header(), &f.claims)).await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let f = Forge::new().await;
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": f.kid});
    f.rejects(&format!("{}.{}.", b64(&header), b64(&f.claims)))
        .await;
    let header = json!({"alg": "None", "typ": "at+jwt", "kid": f.kid});
    f.rejects(&format!("{}.{}.", b64(&header), b64(&f.claims)))
        .await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_rejected() {
    let f = Forge::new().await;
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": f.kid});
    let input = format!("{}.{}", b64(&header), b64(&f.claims));
    for secret in [
        f.x.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(&f.x).unwrap(),
    ] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        f.rejects(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
            .await;
    }
}

#[tokio::test]
async fn an_unknown_kid_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_header("kid", json!("not-our-key"))).await;
    let mut header = f.header();
    header.as_object_mut().unwrap().remove("kid");
    f.rejects(&f.sign(&header, &f.claims)).await;
}

#[tokio::test]
async fn a_bad_signature_is_rejected() {
    let f = Forge::new().await;
    let (input, sig) = f.real_token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[0] ^= 1;
    f.rejects(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw)))
        .await;
    f.rejects(&format!("{input}.")).await;
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_our_kid_is_rejected() {
    let f = Forge::new().await;
    let rng = ring::rand::SystemRandom::new();
    let other = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let other = Ed25519KeyPair::from_pkcs8(other.as_ref()).unwrap();
    let input = format!("{}.{}", b64(&f.header()), b64(&f.claims));
    let sig = other.sign(input.as_bytes());
    f.rejects(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
        .await;
}

#[tokio::test]
async fn tampered_claims_are_rejected() {
    let f = Forge::new().await;
    let mut parts: Vec<String> = f.real_token.split('.').map(String::from).collect();
    let mut claims = f.claims.clone();
    claims["role"] = json!("admin");
    parts[1] = b64(&claims);
    f.rejects(&parts.join(".")).await;
}

#[tokio::test]
async fn an_expired_token_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_claim("exp", json!(now() - 120))).await;
}

#[tokio::test]
async fn leeway_is_sixty_seconds_at_most() {
    let f = Forge::new().await;
    f.accepts(&f.with_claim("exp", json!(now() - 20))).await;
    f.rejects(&f.with_claim("exp", json!(now() - 90))).await;
    f.accepts(&f.with_claim("nbf", json!(now() + 20))).await;
    f.rejects(&f.with_claim("nbf", json!(now() + 90))).await;
}

#[tokio::test]
async fn a_not_yet_valid_token_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_claim("nbf", json!(now() + 600))).await;
}

#[tokio::test]
async fn a_wrong_issuer_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_claim("iss", json!("https://evil.example")))
        .await;
}

#[tokio::test]
async fn a_wrong_audience_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_claim("aud", json!("another-service")))
        .await;
}

#[tokio::test]
async fn missing_required_claims_are_rejected() {
    let f = Forge::new().await;
    for claim in ["exp", "nbf", "iss", "aud", "sub", "sid"] {
        let mut claims = f.claims.clone();
        claims.as_object_mut().unwrap().remove(claim);
        f.rejects(&f.sign(&f.header(), &claims)).await;
    }
}

#[tokio::test]
async fn a_token_whose_typ_is_not_at_jwt_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_header("typ", json!("JWT"))).await;
    let mut header = f.header();
    header.as_object_mut().unwrap().remove("typ");
    f.rejects(&f.sign(&header, &f.claims)).await;
}

#[tokio::test]
async fn an_embedded_jwk_is_rejected() {
    let f = Forge::new().await;
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": f.x});
    f.rejects(&f.with_header("jwk", jwk)).await;
}

#[tokio::test]
async fn a_jku_header_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_header("jku", json!("https://evil.example/jwks.json")))
        .await;
}

#[tokio::test]
async fn an_x5u_header_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_header("x5u", json!("https://evil.example/cert.pem")))
        .await;
}

#[tokio::test]
async fn an_x5c_header_is_rejected() {
    let f = Forge::new().await;
    f.rejects(&f.with_header(
        "x5c",
        json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
    ))
    .await;
}

#[tokio::test]
async fn a_token_over_8_kib_is_rejected() {
    let f = Forge::new().await;
    let token = f.with_claim("padding", json!("p".repeat(9 * 1024)));
    assert!(token.len() > 8 * 1024);
    f.rejects(&token).await;
}

#[tokio::test]
async fn garbage_is_rejected() {
    let f = Forge::new().await;
    for junk in [
        "x",
        "a.b.c",
        "....",
        "eyJhbGciOiJFZERTQSJ9",
        "eyJ.eyJ.",
        &"A".repeat(5000),
        "eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCJ9.bm90IGpzb24.c2ln",
    ] {
        f.rejects(junk).await;
    }
}

#[tokio::test]
async fn an_independent_ed25519_implementation_verifies_issued_tokens_with_the_jwks() {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let f = Forge::new().await;
    let jwks: Value = f
        .server
        .client
        .get(f.server.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (input, sig) = f.real_token.rsplit_once('.').unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(input.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid in JWKS");
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = VerifyingKey::from_bytes(&x).unwrap();
    let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    key.verify(input.as_bytes(), &signature)
        .expect("signature verifies with the published key");
    for claim in [
        "iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "role", "username",
    ] {
        assert!(f.claims.get(claim).is_some(), "claim {claim} missing");
    }
    assert_eq!(f.claims["iss"], f.server.base);
    assert_eq!(f.claims["aud"], "swarmgate");
}

#[tokio::test]
async fn hs256_mode_issues_and_verifies_and_refuses_eddsa() {
    let s = TestServer::start_with(|c| {
        c.tokens.algorithm = "HS256".into();
        c.tokens.secret_key = Some(swarmgate_server::config::Secret("k".repeat(40)));
    })
    .await;
    let session = s.user_session("legacy").await;
    let token = session["access_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    assert_eq!(s.get_auth("/auth/me", token).await.status(), StatusCode::OK);
    let jwks: Value = s
        .client
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"],
        json!([]),
        "a shared secret is never published"
    );
    // An EdDSA token with everything else right (this server's kid, iss,
    // aud and a live session) is still the wrong algorithm here.
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let eddsa_header = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": header["kid"]});
    let rng = ring::rand::SystemRandom::new();
    let pair = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pair.as_ref()).unwrap();
    let input = format!("{}.{}", b64(&eddsa_header), b64(&claims));
    let forged = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref())
    );
    let r = s.get_auth("/auth/me", &forged).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_token").await;
    // And the same claims under alg none.
    let none = json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]});
    let r = s
        .get_auth("/auth/me", &format!("{}.{}.", b64(&none), b64(&claims)))
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_token").await;
}
