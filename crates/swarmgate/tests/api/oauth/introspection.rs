//! Introspection (RFC 7662), revocation (RFC 7009) and the RFC 8414
//! metadata.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::common::*;

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
