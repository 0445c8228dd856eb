//! Clients with a secret: `client_secret_basic` and `client_secret_post`,
//! scope narrowing, and scopes never beyond the client's creator.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::common::*;

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
