//! Clients with `private_key_jwt` (RFC 7523): Ed25519 and ES256 keys,
//! every rejection, and a `jwks_uri` whose keys rotate.

use reqwest::StatusCode;
use serde_json::json;

use super::*;
use crate::common::*;

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
