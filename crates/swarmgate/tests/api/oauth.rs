//! Machine identities through the real server: OAuth2 clients with each
//! client authentication method, every RFC 7523 rejection, scope narrowing,
//! introspection (RFC 7662), revocation (RFC 7009), the RFC 8414 metadata,
//! and the node flow of seed 004.

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

#[tokio::test]
async fn client_secret_basic_and_post_obtain_tokens_that_carry_client_claims() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (id, secret) = secret_client(
        &s,
        &admin,
        "client_secret_basic",
        &["tasks.read", "memory.*"],
    )
    .await;
    let (status, body) = basic_token(&s, &id, &secret, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "tasks.read memory.*");
    let token = body["access_token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], format!("client:{id}"));
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["scope"], "tasks.read memory.*");
    assert!(allowed_for(&s, token, "memory.write").await);
    assert!(!allowed_for(&s, token, "tasks.create").await);
    let me: Value = s.get_auth("/auth/me", token).await.json().await.unwrap();
    assert_eq!(me["auth_method"], "client");
    assert_eq!(me["client_id"], id.as_str());

    // Also served at the seed-004 path.
    let (status, _) = basic_form(
        &s,
        "/api/auth/token",
        &id,
        &secret,
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // The wrong secret, or the wrong method for this client.
    let (status, body) = basic_token(&s, &id, "sgc_wrong", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = form(
        &s,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");

    let (post_id, post_secret) =
        secret_client(&s, &admin, "client_secret_post", &["tasks.read"]).await;
    let (status, body) = form(
        &s,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &post_id),
            ("client_secret", &post_secret),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "tasks.read");
    // No client at all.
    let (status, body) = form(&s, "/auth/token", &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    // An unknown client.
    let (status, body) = basic_token(&s, "no-such-client", "x", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn scope_narrows_and_over_asking_is_invalid_scope() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (id, secret) = secret_client(
        &s,
        &admin,
        "client_secret_basic",
        &["tasks.*", "memory.read"],
    )
    .await;
    let (status, body) = basic_token(&s, &id, &secret, Some("tasks.read")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "tasks.read");
    let token = body["access_token"].as_str().unwrap();
    assert!(allowed_for(&s, token, "tasks.read").await);
    assert!(
        !allowed_for(&s, token, "tasks.create").await,
        "narrowed away"
    );
    assert!(
        !allowed_for(&s, token, "memory.read").await,
        "not asked for"
    );

    for over in ["memory.write", "tasks.read users.manage", "*"] {
        let (status, body) = basic_token(&s, &id, &secret, Some(over)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{over}: {body}");
        assert_eq!(body["error"], "invalid_scope", "{over}");
    }
}

#[tokio::test]
async fn a_clients_scopes_may_not_exceed_its_creator_and_input_is_checked() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let user = s.user_session("plain").await;
    let user_token = user["access_token"].as_str().unwrap();
    let body = json!({"name": "x", "grant_types": ["client_credentials"], "scopes": ["tasks.read"],
                      "token_endpoint_auth_method": "client_secret_basic"});
    expect_error(
        s.post_auth("/admin/clients", user_token, body.clone())
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    for (field, bad) in [
        ("token_endpoint_auth_method", json!("tls_client_auth")),
        ("grant_types", json!(["authorization_code"])),
        ("scopes", json!([])),
        ("scopes", json!(["not a permission!"])),
        ("name", json!("")),
    ] {
        let mut b = body.clone();
        b[field] = bad;
        expect_error(
            s.post_auth("/admin/clients", &admin, b).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
    }
    // private_key_jwt needs keys; a private key is refused.
    let mut b = body.clone();
    b["token_endpoint_auth_method"] = json!("private_key_jwt");
    expect_error(
        s.post_auth("/admin/clients", &admin, b.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let mut leaked = ClientKey::ed25519().jwk("k");
    leaked["d"] = json!("c2VjcmV0");
    b["jwks"] = json!({"keys": [leaked]});
    expect_error(
        s.post_auth("/admin/clients", &admin, b).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let list: Value = s
        .get_auth("/admin/clients", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
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

#[tokio::test]
async fn private_key_jwt_with_ed25519_and_es256() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    for key in [ClientKey::ed25519(), ClientKey::p256()] {
        let client = JwtClient::new(&s, &admin, key).await;
        let (status, body) = with_assertion(&s, &client.assertion(|_| {})).await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", client.key.alg());
        let token = body["access_token"].as_str().unwrap();
        assert!(allowed_for(&s, token, "metrics.report").await);
        // The issuer as audience is accepted too.
        let (status, body) =
            with_assertion(&s, &client.assertion(|c| c["aud"] = json!(s.base))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

#[tokio::test]
async fn every_rfc_7523_rejection() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let client = JwtClient::new(&s, &admin, ClientKey::ed25519()).await;
    let other_key = ClientKey::ed25519();
    let rejects = |assertion: String, why: &'static str| {
        let s = &s;
        async move {
            let (status, body) = with_assertion(s, &assertion).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
            assert_eq!(body["error"], "invalid_client", "{why}");
            body["error_description"].as_str().unwrap().to_string()
        }
    };
    let d = rejects(
        client.assertion(|c| c["aud"] = json!("https://elsewhere.example/token")),
        "wrong aud",
    )
    .await;
    assert!(d.contains("audience"), "{d}");
    let d = rejects(
        client.assertion(|c| c["exp"] = json!(now() - 120)),
        "expired",
    )
    .await;
    assert!(d.contains("expired"), "{d}");
    let d = rejects(
        client.assertion(|c| c["exp"] = json!(now() + 3600)),
        "exp too far",
    )
    .await;
    assert!(d.contains("5 minutes"), "{d}");
    let d = rejects(
        client.assertion(|c| c["iss"] = json!("someone-else")),
        "iss != sub",
    )
    .await;
    assert!(d.contains("iss and sub"), "{d}");
    let d = rejects(other_key.sign("k1", &client.claims()), "wrong key").await;
    assert!(d.contains("signature"), "{d}");
    let d = rejects(
        client.assertion(|c| {
            c["iss"] = json!("nobody");
            c["sub"] = json!("nobody");
        }),
        "unknown client",
    )
    .await;
    assert!(d.contains("unknown client"), "{d}");
    let d = rejects(
        client.assertion(|c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        "no jti",
    )
    .await;
    assert!(d.contains("jti"), "{d}");

    // Replay: the same assertion works once.
    let once = client.assertion(|_| {});
    let (status, _) = with_assertion(&s, &once).await;
    assert_eq!(status, StatusCode::OK);
    let d = rejects(once, "replayed jti").await;
    assert!(d.contains("replayed"), "{d}");

    // A client_id field that names another client.
    let (status, body) = form(
        &s,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "another"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", &client.assertion(|_| {})),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A wrong assertion type is a malformed request.
    let (status, body) = form(
        &s,
        "/auth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "jwt"),
            ("client_assertion", "x.y.z"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
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

#[tokio::test]
async fn introspection_of_active_expired_and_revoked_tokens_and_revocation() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (id, secret) = secret_client(&s, &admin, "client_secret_basic", &["tasks.read"]).await;
    let issue = || basic_token(&s, &id, &secret, None);
    let token = issue().await.1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let introspect = |t: String| {
        let (s, id, secret) = (&s, id.clone(), secret.clone());
        async move {
            let (status, body) =
                basic_form(s, "/auth/introspect", &id, &secret, &[("token", &t)]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let active = introspect(token.clone()).await;
    assert_eq!(active["active"], true, "{active}");
    assert_eq!(active["client_id"], id.as_str());
    assert_eq!(active["scope"], "tasks.read");
    assert_eq!(active["sub"], format!("client:{id}"));
    assert!(active["exp"].as_i64().unwrap() > now());

    // A user's token and refresh token introspect too.
    let session = s.user_session("introspected").await;
    let user = introspect(session["access_token"].as_str().unwrap().to_string()).await;
    assert_eq!(user["active"], true);
    assert_eq!(user["username"], "introspected");
    let refresh = introspect(session["refresh_token"].as_str().unwrap().to_string()).await;
    assert_eq!(refresh["active"], true);
    assert_eq!(refresh["token_type"], "refresh_token");

    // Expired (signed by the server, so only exp is wrong).
    let mut claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    claims["exp"] = json!(now() - 3600);
    claims["iat"] = json!(now() - 7200);
    claims["nbf"] = json!(now() - 7200);
    let expired = server_signed(&s, &claims).await;
    assert_eq!(introspect(expired).await, json!({"active": false}));
    assert_eq!(introspect("garbage".into()).await, json!({"active": false}));

    // Introspection needs client authentication.
    let (status, body) = form(&s, "/auth/introspect", &[("token", &token)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    // Revoked: the token stops at once and introspects inactive.
    assert_eq!(
        s.get_auth("/auth/me", &token).await.status(),
        StatusCode::OK
    );
    let (status, _) = basic_form(
        &s,
        "/auth/revoke",
        &id,
        &secret,
        &[("token", &token), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        s.get_auth("/auth/me", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(introspect(token.clone()).await["active"], false);
    // Revoking again, or something unknown, is still 200 (RFC 7009 2.2).
    let (status, _) = basic_form(&s, "/auth/revoke", &id, &secret, &[("token", &token)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = basic_form(&s, "/auth/revoke", &id, &secret, &[("token", "nonsense")]).await;
    assert_eq!(status, StatusCode::OK);

    // Another client cannot revoke this client's tokens.
    let fresh = issue().await.1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (other_id, other_secret) =
        secret_client(&s, &admin, "client_secret_basic", &["tasks.read"]).await;
    let (status, body) = basic_form(
        &s,
        "/auth/revoke",
        &other_id,
        &other_secret,
        &[("token", &fresh)],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
    assert_eq!(
        s.get_auth("/auth/me", &fresh).await.status(),
        StatusCode::OK
    );

    // A refresh token revoked ends its session.
    let (status, _) = form(
        &s,
        "/auth/revoke",
        &[("token", session["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let user_token = session["access_token"].as_str().unwrap();
    assert_eq!(
        s.get_auth("/auth/me", user_token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Deleting the client stops its tokens at once.
    let r = s.delete_auth(&format!("/admin/clients/{id}"), &admin).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get_auth("/auth/me", &fresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = basic_token(&s, &id, &secret, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = s.delete_auth(&format!("/admin/clients/{id}"), &admin).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metadata_lists_what_is_served_and_the_seed_aliases_work() {
    let s = TestServer::start().await;
    let meta: Value = s
        .client
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], s.base.as_str());
    assert_eq!(meta["token_endpoint"], s.url("/auth/token"));
    assert_eq!(meta["introspection_endpoint"], s.url("/auth/introspect"));
    assert_eq!(meta["revocation_endpoint"], s.url("/auth/revoke"));
    assert_eq!(
        meta["grant_types_supported"],
        json!(["password", "refresh_token", "client_credentials"])
    );
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    ] {
        assert!(meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(method)));
    }

    let r = s
        .post(
            "/api/auth/login",
            json!({"username": "admin", "password": ADMIN_PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let me: Value = s
        .get_auth("/api/auth/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "admin");
}

#[tokio::test]
async fn the_node_flow_end_to_end() {
    let s = TestServer::start_with_manual_clock(|c| c.nodes.stale_after_seconds = 1).await;
    let admin = s.admin_token().await;

    // Admin mints a node token (also at the seed-004 path).
    let r = s
        .post_auth("/auth/nodes/token", &admin, json!({"node_id": "worker-1"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let minted: Value = r.json().await.unwrap();
    assert_eq!(minted["node_id"], "worker-1");
    assert_eq!(minted["expires_in"], 1800);
    let node = minted["access_token"].as_str().unwrap().to_string();
    let r = s
        .post_auth(
            "/api/auth/node/token",
            &admin,
            json!({"node_id": "worker-2", "ttl_minutes": 5}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["expires_in"], 300);
    let me: Value = s.get_auth("/auth/me", &node).await.json().await.unwrap();
    assert_eq!(me["role"], "node");
    assert_eq!(me["node_id"], "worker-1");

    // A plain user may not mint, read nodes or report.
    let user = s.user_session("plain").await;
    let user = user["access_token"].as_str().unwrap();
    expect_error(
        s.post_auth("/auth/nodes/token", user, json!({"node_id": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.get_auth("/api/metrics/nodes", user).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            user,
            json!({"node_id": "worker-1", "metrics": {}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // A node may not mint tokens or read everyone.
    expect_error(
        s.post_auth("/auth/nodes/token", &node, json!({"node_id": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.get_auth("/api/metrics/nodes", &node).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // The node registers and reports.
    let r = s
        .post_auth(
            "/nodes/register",
            &node,
            json!({"node_id": "worker-1", "address": "10.0.0.5:9000", "labels": {"zone": "a"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .post_auth("/nodes/heartbeat", &node, json!({"node_id": "worker-1"}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": {"cpu_percent": 12.5, "tasks": 3}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Only for itself, and at most 64 KiB.
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-2", "metrics": {}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.post_auth("/nodes/register", &node, json!({"node_id": "worker-2"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let big = "x".repeat(70 * 1024);
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": {"blob": big}}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": [1]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // The admin reads it: fresh first, stale after the threshold.
    let nodes: Value = s
        .get_auth("/api/metrics/nodes", &admin)
        .await
        .json()
        .await
        .unwrap();
    let item = &nodes["items"][0];
    assert_eq!(item["node_id"], "worker-1");
    assert_eq!(item["address"], "10.0.0.5:9000");
    assert_eq!(item["labels"], json!({"zone": "a"}));
    assert_eq!(item["metrics"], json!({"cpu_percent": 12.5, "tasks": 3}));
    assert_eq!(item["stale"], false);
    assert!(item["last_report_at"].is_string());
    s.advance(std::time::Duration::from_millis(2100));
    let nodes: Value = s
        .get_auth("/api/metrics/nodes", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nodes["items"][0]["stale"], true, "{nodes}");
    assert!(nodes["items"][0]["age_seconds"].as_i64().unwrap() >= 2);

    // Revoking the node token stops it.
    let (id, secret) = secret_client(&s, &admin, "client_secret_basic", &["tasks.read"]).await;
    let (status, _) = basic_form(&s, "/auth/revoke", &id, &secret, &[("token", &node)]).await;
    assert_eq!(status, StatusCode::OK);
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": {}}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
}

#[tokio::test]
async fn a_node_may_be_a_private_key_jwt_client() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let client = JwtClient::new(&s, &admin, ClientKey::p256()).await;
    let (status, body) = with_assertion(&s, &client.assertion(|_| {})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let r = s
        .post_auth(
            "/api/metrics/report",
            token,
            json!({"node_id": client.id, "metrics": {"load": 1}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            token,
            json!({"node_id": "someone-else", "metrics": {}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn an_operator_stops_every_token_of_a_node_at_once() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mint = |node: &'static str| {
        let (s, admin) = (&s, admin.clone());
        async move {
            let r = s
                .post_auth("/auth/nodes/token", &admin, json!({"node_id": node}))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (first, second, other) = (
        mint("lost-1").await,
        mint("lost-1").await,
        mint("kept-1").await,
    );
    for token in [&first, &second, &other] {
        assert_eq!(s.get_auth("/auth/me", token).await.status(), StatusCode::OK);
    }
    // Only an operator may do it.
    expect_error(
        s.post_auth("/auth/nodes/lost-1/revoke", &first, json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let r = s
        .post_auth("/auth/nodes/lost-1/revoke", &admin, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for token in [&first, &second] {
        expect_error(
            s.get_auth("/auth/me", token).await,
            StatusCode::UNAUTHORIZED,
            "session_revoked",
        )
        .await;
    }
    assert_eq!(
        s.get_auth("/auth/me", &other).await.status(),
        StatusCode::OK
    );
    // A token minted afterwards, even within the same second, works, and a
    // second revocation right away still covers it.
    let fresh = mint("lost-1").await;
    assert_eq!(
        s.get_auth("/auth/me", &fresh).await.status(),
        StatusCode::OK
    );
    let r = s
        .post_auth("/auth/nodes/lost-1/revoke", &admin, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        s.get_auth("/auth/me", &fresh).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    let fresher = mint("lost-1").await;
    assert_eq!(
        s.get_auth("/auth/me", &fresher).await.status(),
        StatusCode::OK
    );
    expect_error(
        s.post_auth("/auth/nodes/bad id/revoke", &admin, json!({}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
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

#[tokio::test]
async fn private_key_jwt_with_a_jwks_uri_follows_key_rotation() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let (url, served, fetches) = jwks_server().await;
    let old = ClientKey::ed25519();
    *served.lock().unwrap() = json!({"keys": [old.jwk("old")]});
    let c = create_client(
        &s,
        &admin,
        json!({"name": "rotating", "grant_types": ["client_credentials"], "scopes": ["tasks.read"],
               "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": url}),
    )
    .await;
    let id = c["client_id"].as_str().unwrap().to_string();
    let claims = |id: &str| {
        json!({"iss": id, "sub": id, "aud": s.url("/auth/token"), "exp": now() + 60,
               "jti": swarmgate_core::random::uuid_string()})
    };
    let (status, body) = with_assertion(&s, &old.sign("old", &claims(&id))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = with_assertion(&s, &old.sign("old", &claims(&id))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached"
    );

    // The client rotates: its new key is fetched on first sight.
    let new = ClientKey::p256();
    *served.lock().unwrap() = json!({"keys": [new.jwk("new")]});
    let (status, body) = with_assertion(&s, &new.sign("new", &claims(&id))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Plain http elsewhere than this machine is refused at registration.
    let r = s
        .post_auth(
            "/admin/clients",
            &admin,
            json!({"name": "x", "grant_types": ["client_credentials"], "scopes": ["tasks.read"],
                   "token_endpoint_auth_method": "private_key_jwt",
                   "jwks_uri": "http://keys.example.com/jwks.json"}),
        )
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}
