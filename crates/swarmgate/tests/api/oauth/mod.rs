//! Machine identities through the real server: OAuth2 clients with each
//! client authentication method, every RFC 7523 rejection, scope narrowing,
//! introspection (RFC 7662), revocation (RFC 7009), the RFC 8414 metadata,
//! and the node flow of seed 004.

mod assertions;
mod introspection;
mod nodes;
mod secrets;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::common::*;

/// A client's private key, with its public JWK.
enum ClientKey {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

impl ClientKey {
    fn ed25519() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        ClientKey::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    fn p256() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        ClientKey::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            ClientKey::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(k.public_key().as_ref())}),
            ClientKey::Ec(k) => {
                let point = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65])})
            }
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            ClientKey::Ed(_) => "EdDSA",
            ClientKey::Ec(_) => "ES256",
        }
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(&json!({"alg": self.alg(), "typ": "JWT", "kid": kid})),
            b64(claims)
        );
        let sig = match self {
            ClientKey::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            ClientKey::Ec(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

async fn create_client(s: &TestServer, admin: &str, body: Value) -> Value {
    let r = s.post_auth("/admin/clients", admin, body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json().await.unwrap()
}

async fn form(s: &TestServer, path: &str, fields: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = s
        .client
        .post(s.url(path))
        .form(fields)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn basic_form(
    s: &TestServer,
    path: &str,
    id: &str,
    secret: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, Value) {
    let r = s
        .client
        .post(s.url(path))
        .basic_auth(id, Some(secret))
        .form(fields)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// `grant_type=client_credentials` with HTTP Basic client authentication.
async fn basic_token(
    s: &TestServer,
    id: &str,
    secret: &str,
    scope: Option<&str>,
) -> (StatusCode, Value) {
    let mut fields = vec![("grant_type", "client_credentials")];
    fields.extend(scope.map(|scope| ("scope", scope)));
    basic_form(s, "/auth/token", id, secret, &fields).await
}

/// A secret client with `scopes`, and its id and secret.
async fn secret_client(
    s: &TestServer,
    admin: &str,
    method: &str,
    scopes: &[&str],
) -> (String, String) {
    let c = create_client(
        s,
        admin,
        json!({"name": "svc", "grant_types": ["client_credentials"], "scopes": scopes,
               "token_endpoint_auth_method": method}),
    )
    .await;
    (
        c["client_id"].as_str().unwrap().to_string(),
        c["client_secret"].as_str().unwrap().to_string(),
    )
}

async fn allowed_for(s: &TestServer, token: &str, permission: &str) -> bool {
    let r = s
        .post_auth(
            "/auth/verify-permission",
            token,
            json!({"permission": permission}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["allowed"] == json!(true)
}

/// A private_key_jwt client, its key, and a way to make assertions.
struct JwtClient {
    id: String,
    key: ClientKey,
    token_url: String,
}

impl JwtClient {
    async fn new(s: &TestServer, admin: &str, key: ClientKey) -> Self {
        let c = create_client(
            s,
            admin,
            json!({"name": "node-a", "grant_types": ["client_credentials"],
                   "scopes": ["metrics.report", "nodes.register", "nodes.heartbeat"],
                   "token_endpoint_auth_method": "private_key_jwt",
                   "jwks": {"keys": [key.jwk("k1")]}}),
        )
        .await;
        assert!(c.get("client_secret").is_none(), "{c}");
        Self {
            id: c["client_id"].as_str().unwrap().to_string(),
            key,
            token_url: s.url("/auth/token"),
        }
    }

    fn claims(&self) -> Value {
        json!({"iss": self.id, "sub": self.id, "aud": self.token_url,
               "exp": now() + 120, "iat": now(), "jti": swarmgate_core::random::uuid_string()})
    }

    fn assertion(&self, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.claims();
        change(&mut claims);
        self.key.sign("k1", &claims)
    }
}

async fn with_assertion(s: &TestServer, assertion: &str) -> (StatusCode, Value) {
    form(
        s,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ],
    )
    .await
}

/// Signs `claims` with the server's own key, to make an expired token.
async fn server_signed(s: &TestServer, claims: &Value) -> String {
    let (key, pair) = server_signing_key(s).await;
    let input = format!(
        "{}.{}",
        b64(&json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid})),
        b64(claims)
    );
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref())
    )
}

/// Serves whatever JWK Set is put in the returned cell, at /jwks.json on
/// 127.0.0.1, counting fetches.
async fn jwks_server() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Value>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let keys = std::sync::Arc::new(std::sync::Mutex::new(json!({"keys": []})));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (served, counted) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (served, counted) = (served.clone(), counted.clone());
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(served.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, keys, fetches)
}
