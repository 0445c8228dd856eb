//! Every endpoint of the identity service and every status it names.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn register_returns_201_with_the_user() {
    let s = TestServer::start().await;
    let r = s
        .post(
            "/auth/register",
            json!({"username": "john_doe", "email": "john@example.com",
                   "password": "SecurePassword123!", "full_name": "John Doe"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["username"], "john_doe");
    assert_eq!(body["email"], "john@example.com");
    assert_eq!(body["full_name"], "John Doe");
    assert_eq!(body["role"], "user");
    assert!(body["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(body["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6, "no password or hash in the body: {body}");
}

#[tokio::test]
async fn register_conflicts_are_409_case_insensitive() {
    let s = TestServer::start().await;
    s.register("alice").await;
    let r = s
        .post(
            "/auth/register",
            json!({"username": "ALICE", "email": "new@example.com", "password": PASSWORD}),
        )
        .await;
    let body = expect_error(r, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(body["error"]["field"], "username");
    let r = s
        .post(
            "/auth/register",
            json!({"username": "alice2", "email": "Alice@Example.com", "password": PASSWORD}),
        )
        .await;
    let body = expect_error(r, StatusCode::CONFLICT, "conflict").await;
    assert_eq!(body["error"]["field"], "email");
}

#[tokio::test]
async fn register_validation_is_422_naming_the_field() {
    let s = TestServer::start().await;
    for (body, field) in [
        (
            json!({"username": "ab", "email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "bad name", "email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "okname", "email": "not-an-email", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"username": "okname", "email": "a@example.com", "password": "short1!"}),
            "password",
        ),
        (
            json!({"username": "okname", "email": "a@example.com", "password": "alllowercase1!"}),
            "password",
        ),
        (
            json!({"username": "okname", "email": "a@example.com", "password": "Password123!"}),
            "password",
        ),
        (
            json!({"username": "okname", "email": "a@example.com"}),
            "password",
        ),
        (
            json!({"username": 5, "email": "a@example.com", "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "okname", "email": "a@example.com", "password": PASSWORD, "admin": true}),
            "admin",
        ),
        (json!("not an object"), "body"),
    ] {
        let r = s.post("/auth/register", body.clone()).await;
        let err = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(err["error"]["field"], field, "{body}");
    }
}

#[tokio::test]
async fn common_password_is_refused_with_a_reason() {
    let s = TestServer::start().await;
    let r = s
        .post(
            "/auth/register",
            json!({"username": "okname", "email": "a@example.com", "password": "Password123!"}),
        )
        .await;
    let err = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(err["error"]["message"].as_str().unwrap().contains("common"));
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_400_and_413() {
    let s = TestServer::start().await;
    let r = s
        .client
        .post(s.url("/auth/register"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = s
        .client
        .post(s.url("/auth/login"))
        .body("username=x")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let huge = format!(r#"{{"username":"{}","password":"x"}}"#, "a".repeat(200_000));
    let r = s
        .client
        .post(s.url("/auth/login"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn register_rate_limit_is_429_with_retry_after() {
    let s = TestServer::start_with(|c| c.security.register_rate_per_hour = 3).await;
    for i in 0..3 {
        s.register(&format!("user{i}")).await;
    }
    let r = s
        .post(
            "/auth/register",
            json!({"username": "user9", "email": "u9@example.com", "password": PASSWORD}),
        )
        .await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn login_returns_the_token_body() {
    let s = TestServer::start().await;
    let user = s.register("bob").await;
    for login in ["bob", "BOB", "bob@example.com"] {
        let body = s.login(login, PASSWORD).await;
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 86_400);
        assert_eq!(body["user_id"], user["id"]);
        assert_eq!(body["username"], "bob");
        assert_eq!(body["role"], "user");
        assert!(body["access_token"].as_str().unwrap().split('.').count() == 3);
        assert!(body["refresh_token"].as_str().unwrap().starts_with("sgr_"));
    }
}

#[tokio::test]
async fn login_rate_limit_is_429_with_retry_after() {
    let s = TestServer::start_with(|c| c.security.login_rate_per_minute = 5).await;
    s.register("carl").await;
    // Five may come at once (some failing), the sixth is refused.
    for _ in 0..5 {
        let r = s
            .post(
                "/auth/login",
                json!({"username": "carl", "password": "Wrong!Pass1"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = s
        .post(
            "/auth/login",
            json!({"username": "carl", "password": PASSWORD}),
        )
        .await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn disabled_account_is_403_only_with_the_right_password() {
    let s = TestServer::start().await;
    let user = s.register("dora").await;
    s.store()
        .await
        .set_user_disabled(user["id"].as_str().unwrap(), true, 1)
        .await
        .unwrap();
    let r = s
        .post(
            "/auth/login",
            json!({"username": "dora", "password": PASSWORD}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "account_disabled").await;
    let r = s
        .post(
            "/auth/login",
            json!({"username": "dora", "password": "Wrong!Pass1"}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[tokio::test]
async fn me_returns_the_user_with_permissions() {
    let s = TestServer::start().await;
    let session = s.user_session("erin").await;
    let r = s
        .get_auth("/auth/me", session["access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["username"], "erin");
    assert_eq!(me["email"], "erin@example.com");
    assert_eq!(me["role"], "user");
    assert_eq!(me["id"], session["user_id"]);
    assert!(me["created_at"].is_string());
    assert!(me["full_name"].is_null());
    let perms: Vec<&str> = me["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(perms.contains(&"tasks.read") && perms.contains(&"memory.write"));

    let admin = s.login("admin", ADMIN_PASSWORD).await;
    let me: Value = s
        .get_auth("/auth/me", admin["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["permissions"], json!(["*"]));
}

#[tokio::test]
async fn protected_endpoints_without_credentials_are_401_with_www_authenticate() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("GET", "/auth/me"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/change-password"),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    }
    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_stops_working() {
    let s = TestServer::start().await;
    let first = s.user_session("fay").await;
    let old = first["refresh_token"].as_str().unwrap();
    let r = s.post("/auth/refresh", json!({"refresh_token": old})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(second["token_type"], "bearer");
    assert_eq!(second["user_id"], first["user_id"]);
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(
        s.get_auth("/auth/me", access).await.status(),
        StatusCode::OK
    );
    // The successor works once more.
    let r = s.post("/auth/refresh", json!({"refresh_token": new})).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Garbage and unknown tokens.
    for bad in ["", "sgr_unknown", "nonsense"] {
        let r = s.post("/auth/refresh", json!({"refresh_token": bad})).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
}

#[tokio::test]
async fn refresh_token_reuse_revokes_the_whole_session() {
    let s = TestServer::start().await;
    let first = s.user_session("gus").await;
    let old = first["refresh_token"].as_str().unwrap();
    let second: Value = s
        .post("/auth/refresh", json!({"refresh_token": old}))
        .await
        .json()
        .await
        .unwrap();
    // The old token again: an attacker (or the victim) replays it.
    let r = s.post("/auth/refresh", json!({"refresh_token": old})).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    // Every token of that session is dead now, including the newest ones.
    let r = s
        .post(
            "/auth/refresh",
            json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    for access in [&first["access_token"], &second["access_token"]] {
        let r = s.get_auth("/auth/me", access.as_str().unwrap()).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "session_revoked").await;
    }
    let audit = s.store().await.recent_audit(50).await.unwrap();
    assert!(audit.iter().any(|e| e.event == "refresh_token_reuse"));
}

#[tokio::test]
async fn logout_kills_access_and_refresh_token_at_once() {
    let s = TestServer::start().await;
    let session = s.user_session("hal").await;
    let other = s.login("hal", PASSWORD).await;
    let access = session["access_token"].as_str().unwrap();
    let r = s.post_auth("/auth/logout", access, json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.get_auth("/auth/me", access).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    expect_error(r, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let r = s
        .post(
            "/auth/refresh",
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // Another session of the same user is untouched.
    let r = s
        .get_auth("/auth/me", other["access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn revocations_survive_a_restart_of_in_process_state() {
    let s = TestServer::start().await;
    let session = s.user_session("ivy").await;
    let access = session["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.post_auth("/auth/logout", &access, json!({}))
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    // A new instance on the same database starts with empty in-process state.
    let url = s.database_url.clone();
    let public = s.base.clone();
    drop(s);
    let restarted = TestServer::start_with(|c| {
        c.database.url = url;
        c.server.public_url = Some(public);
    })
    .await;
    let r = restarted.get_auth("/auth/me", &access).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "session_revoked").await;
}

#[tokio::test]
async fn change_password_revokes_other_sessions_and_keeps_the_callers() {
    let s = TestServer::start().await;
    let mine = s.user_session("jan").await;
    let other = s.login("jan", PASSWORD).await;
    let token = mine["access_token"].as_str().unwrap();
    let new_password = "N3w!Passw0rd-Jan";
    let r = s
        .post_auth(
            "/auth/change-password",
            token,
            json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get_auth("/auth/me", token).await.status(), StatusCode::OK);
    let r = s
        .post(
            "/auth/refresh",
            json!({"refresh_token": mine["refresh_token"]}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the caller's own refresh token continues"
    );
    let r = s
        .get_auth("/auth/me", other["access_token"].as_str().unwrap())
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let r = s
        .post(
            "/auth/refresh",
            json!({"refresh_token": other["refresh_token"]}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let r = s
        .post(
            "/auth/login",
            json!({"username": "jan", "password": PASSWORD}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    s.login("jan", new_password).await;
}

#[tokio::test]
async fn change_password_errors_are_403_and_422() {
    let s = TestServer::start().await;
    let session = s.user_session("kim").await;
    let token = session["access_token"].as_str().unwrap();
    let r = s
        .post_auth(
            "/auth/change-password",
            token,
            json!({"current_password": "Wrong!Pass1", "new_password": "An0ther!Good-One"}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s
        .post_auth(
            "/auth/change-password",
            token,
            json!({"current_password": PASSWORD, "new_password": "weak"}),
        )
        .await;
    let body = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["error"]["field"], "new_password");
}

#[tokio::test]
async fn new_password_must_differ_from_the_last_five() {
    let s = TestServer::start().await;
    let session = s.user_session("lou").await;
    let token = session["access_token"].as_str().unwrap();
    let mut history = vec![PASSWORD.to_string()];
    for i in 1..=5 {
        let next = format!("Hist0ry!Pass-{i}x");
        let r = s
            .post_auth(
                "/auth/change-password",
                token,
                json!({"current_password": history.last().unwrap(), "new_password": next}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        history.push(next);
    }
    let current = history.last().unwrap().clone();
    // The last five (including the current one) are refused...
    for old in &history[1..] {
        let r = s
            .post_auth(
                "/auth/change-password",
                token,
                json!({"current_password": current, "new_password": old}),
            )
            .await;
        let body = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["error"]["field"], "new_password");
    }
    // ...the sixth-newest is allowed again.
    let r = s
        .post_auth(
            "/auth/change-password",
            token,
            json!({"current_password": current, "new_password": history[0]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn health_reports_components() {
    let s = TestServer::start().await;
    let r = s.client.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["redis"], "not configured");
    assert!(body["version"].is_string());
}

#[tokio::test]
async fn discovery_documents_describe_the_issuer() {
    let s = TestServer::start().await;
    let config: Value = s
        .client
        .get(s.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["issuer"], s.base);
    assert_eq!(
        config["jwks_uri"],
        format!("{}/.well-known/jwks.json", s.base)
    );
    assert_eq!(config["token_endpoint"], format!("{}/auth/token", s.base));
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["EdDSA"])
    );
    let jwks: Value = s
        .client
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key["kid"].is_string() && key["x"].is_string());
    assert!(
        key.get("d").is_none(),
        "private key material must never be published"
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
    let s = TestServer::start().await;
    let r = s
        .client
        .get(s.url("/health"))
        .header("x-request-id", "abc-123_X.y:z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123_X.y:z");
    let r = s
        .client
        .get(s.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id with spaces");
    assert_eq!(id.len(), 32);
    let r = s.client.get(s.url("/nowhere")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    // Unknown paths need credentials first (no route discovery).
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    let admin = s.admin_token().await;
    let r = s.get_auth("/nowhere", &admin).await;
    assert!(r.headers().contains_key("x-request-id"));
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn audit_trail_records_the_security_events() {
    let s = TestServer::start().await;
    let session = s.user_session("max").await;
    let _ = s
        .post(
            "/auth/login",
            json!({"username": "max", "password": "Wrong!Pass1"}),
        )
        .await;
    let token = session["access_token"].as_str().unwrap();
    s.post_auth(
        "/auth/change-password",
        token,
        json!({"current_password": PASSWORD, "new_password": "Aud1t!Trail-Max"}),
    )
    .await;
    s.post_auth("/auth/logout", token, json!({})).await;
    let events = s.store().await.recent_audit(100).await.unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    for expected in [
        "user_registered",
        "login_succeeded",
        "login_failed",
        "password_changed",
        "logout",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let failed = events.iter().find(|e| e.event == "login_failed").unwrap();
    assert_eq!(failed.detail["reason"], "wrong_password");
    assert_eq!(failed.client_ip.as_deref(), Some("127.0.0.1"));
    assert!(failed.request_id.is_some());
}

#[tokio::test]
async fn oauth2_token_endpoint_serves_password_and_refresh_grants() {
    let s = TestServer::start().await;
    s.register("olaf").await;
    let r = s
        .client
        .post(s.url("/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "olaf"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86_400);
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        s.get_auth("/auth/me", access).await.status(),
        StatusCode::OK
    );
    let refresh = body["refresh_token"].as_str().unwrap();
    let r = s
        .client
        .post(s.url("/api/auth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // RFC 6749 error bodies.
    for (form, status, error) in [
        (
            vec![
                ("grant_type", "password"),
                ("username", "olaf"),
                ("password", "Wrong!Pass1"),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![("grant_type", "refresh_token"), ("refresh_token", refresh)],
            400,
            "invalid_grant",
        ),
        (
            vec![("grant_type", "password"), ("username", "olaf")],
            400,
            "invalid_request",
        ),
        (
            vec![("grant_type", "authorization_code"), ("code", "x")],
            400,
            "unsupported_grant_type",
        ),
        (vec![("username", "olaf")], 400, "invalid_request"),
    ] {
        let r = s
            .client
            .post(s.url("/auth/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{form:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], error, "{form:?}");
        assert!(body["error_description"].is_string());
    }
    let r = s
        .post("/auth/token", json!({"grant_type": "password"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

/// Sends one POST on `stream` and reads the response (head and
/// `Content-Length` body); returns the head.
async fn raw_post(stream: &mut tokio::net::TcpStream, auth: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /auth/verify-permission HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // The server may answer, and close, before it has all of a large body.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response: {received:?}");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if received.len() >= end + 4 + length {
                return head;
            }
        }
    }
}

#[tokio::test]
async fn a_refused_body_is_discarded_when_small_and_closes_the_connection_when_large() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start().await;
    let token = s.admin_token().await;
    let addr = s.base.trim_start_matches("http://").to_string();

    // Read and answered: the connection takes the next request.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let small = r#"{"permission":"tasks.read"}"#;
    for _ in 0..2 {
        let head = raw_post(&mut stream, &auth, small).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("\r\nconnection: close"), "{head}");
    }

    // Refused before its small body was read (no credentials): the rest is
    // read and dropped, and the connection takes the next request.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = raw_post(&mut stream, "", small).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(!head.contains("\r\nconnection: close"), "{head}");
    let head = raw_post(&mut stream, &auth, small).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");

    // Refused before its 200 kB body was read: not received for nothing;
    // the connection ends, and the response says so instead of leaving the
    // client to find out with its next request.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let large = format!(r#"{{"permission":"{}"}}"#, "a".repeat(200_000));
    let head = raw_post(&mut stream, "", &large).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    let mut rest = Vec::new();
    // Ok or a reset: both close it (the rest of the body was never read).
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut rest),
    )
    .await
    .expect("the server closes the connection");
    assert!(rest.is_empty(), "nothing follows the response");
}
