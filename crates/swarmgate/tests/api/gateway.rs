//! The gateway through real upstream processes (`mock-upstream`): the
//! permission per method, `:own` path templates, what reaches the upstream,
//! the signed assertion, longest prefix, 413/502/503/504, failover and
//! streaming.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use swarmgate_gateway::{GatewayConfig, RouteConfig};

use crate::common::*;
use crate::mock::Mock;

fn route(name: &str, prefix: &str, upstreams: &[&str]) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        path_prefix: prefix.into(),
        upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
        permissions: BTreeMap::new(),
        permission: None,
        strip_prefix: false,
        timeout_ms: 5_000,
    }
}

fn tasks_route(upstream: &str) -> RouteConfig {
    let mut r = route("orchestrator", "/tasks", &[upstream]);
    for (m, p) in [
        ("GET", "tasks.read"),
        ("POST", "tasks.create"),
        ("DELETE", "tasks.delete"),
    ] {
        r.permissions.insert(m.into(), p.into());
    }
    r
}

fn dead_upstream() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn the_permission_of_each_method_is_enforced() {
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| c.routes = vec![tasks_route(&m.base)]).await;
    let session = s.user_session("uma").await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(s.get_auth("/tasks/1", token).await.status(), StatusCode::OK);
    assert_eq!(
        s.post_auth("/tasks", token, json!({"title": "x"}))
            .await
            .status(),
        StatusCode::OK
    );
    let admin = s.admin_token().await;
    s.set_role(&admin, session["user_id"].as_str().unwrap(), "viewer")
        .await;
    assert_eq!(s.get_auth("/tasks/1", token).await.status(), StatusCode::OK);
    let err = expect_error(
        s.post_auth("/tasks", token, json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tasks.create"));
    let r = s.patch_auth("/tasks/1", token, json!({})).await;
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let r = s.client.get(s.url("/tasks/1")).send().await.unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    let r = s.get_auth("/nowhere", token).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    // Anonymous callers learn nothing about which routes exist.
    let r = s.client.get(s.url("/nowhere")).send().await.unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    // Methods outside the standard set never fall back to a catch-all.
    let r = s
        .client
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            s.url("/tasks/1"),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn own_path_templates_admit_only_the_callers_id() {
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| {
        let mut r = route("memory", "/memory/{owner}", &[&m.base]);
        r.permission = Some("memory.read".into());
        c.routes = vec![r];
        add_role(c, "own-memory", &["memory.read:own"]);
    })
    .await;
    let session = s.user_session("vic").await;
    let admin = s.admin_token().await;
    let id = session["user_id"].as_str().unwrap();
    s.set_role(&admin, id, "own-memory").await;
    let token = session["access_token"].as_str().unwrap();
    let r = s.get_auth(&format!("/memory/{id}/notes"), token).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["path"],
        format!("/memory/{id}/notes")
    );
    let r = s.get_auth("/memory/someone-else/notes", token).await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    // Dot segments cannot smuggle another owner's path past the check (sent
    // raw: HTTP clients normalise them away before sending).
    for sneaky in [
        format!("/memory/{id}/../someone-else/notes"),
        format!("/memory/{id}/%2e%2e/someone-else"),
    ] {
        let response = raw_get(&s.base, &sneaky, token).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{sneaky}: {response}");
    }
    // An unscoped grant reaches every owner.
    assert_eq!(
        s.get_auth("/memory/someone-else/notes", &admin)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn credentials_are_stripped_and_identity_headers_added() {
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| c.routes = vec![tasks_route(&m.base)]).await;
    let session = s.user_session("wyn").await;
    let token = session["access_token"].as_str().unwrap();
    let key = s.create_key(token, &["tasks.read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    for (header, value, method) in [
        ("authorization", format!("Bearer {token}"), "jwt"),
        ("x-api-key", key.clone(), "api_key"),
    ] {
        let r = s
            .client
            .get(s.url("/tasks/9?q=1"))
            .header(header, &value)
            .header("x-swarm-subject", "forged-admin")
            .header("x-swarm-role", "admin")
            .header("x-forwarded-for", "10.9.9.9")
            .header("x-custom", "kept")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("x-request-id"));
        let echo: Value = r.json().await.unwrap();
        let h = &echo["headers"];
        assert!(
            h.get("authorization").is_none() && h.get("x-api-key").is_none(),
            "{h}"
        );
        assert!(!echo.to_string().contains(&key) && !echo.to_string().contains(token));
        assert_eq!(h["x-swarm-subject"], session["user_id"]);
        assert_eq!(h["x-swarm-role"], "user");
        assert_eq!(h["x-swarm-auth-method"], method);
        assert_eq!(
            h["x-forwarded-for"], "127.0.0.1",
            "untrusted peer: incoming chain dropped"
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h["x-forwarded-host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
        assert_eq!(h["x-custom"], "kept");
        assert_eq!(echo["query"], "q=1");
        assert!(h["x-swarm-assertion"].is_string());
    }
}

#[tokio::test]
async fn the_assertion_verifies_with_the_jwks_and_is_not_an_access_token() {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| c.routes = vec![tasks_route(&m.base)]).await;
    let session = s.user_session("xia").await;
    let token = session["access_token"].as_str().unwrap();
    let echo: Value = s.get_auth("/tasks", token).await.json().await.unwrap();
    let assertion = echo["headers"]["x-swarm-assertion"]
        .as_str()
        .unwrap()
        .to_string();
    let (input, sig) = assertion.rsplit_once('.').unwrap();
    let mut parts = input.split('.');
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["typ"], "swarm-assertion+jwt");
    assert_eq!(claims["aud"], "orchestrator");
    assert_eq!(claims["sub"], session["user_id"]);
    assert_eq!(claims["iss"], s.base);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
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
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap();
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    VerifyingKey::from_bytes(&x)
        .unwrap()
        .verify(
            input.as_bytes(),
            &Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap(),
        )
        .expect("the assertion verifies offline with the JWKS");
    let r = s.get_auth("/auth/me", &assertion).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn the_longest_prefix_wins_and_strip_prefix_rewrites() {
    let a = Mock::start(&[]).await;
    let b = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| {
        let mut admin = route("tasks-admin", "/tasks/admin", &[&b.base]);
        admin.permission = Some("tasks.read".into());
        admin.strip_prefix = true;
        c.routes = vec![tasks_route(&a.base), admin];
    })
    .await;
    let token = s.user_session("yan").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let echo: Value = s
        .get_auth("/tasks/admin/reset", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echo["path"], "/reset");
    let echo: Value = s
        .get_auth("/tasks/adminx", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        echo["path"], "/tasks/adminx",
        "segments, not string prefixes"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| {
        c.routes = vec![tasks_route(&m.base)];
        c.gateway = GatewayConfig {
            max_body_bytes: 1_000,
            ..GatewayConfig::default()
        };
    })
    .await;
    let token = s.user_session("zed").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .client
        .post(s.url("/tasks"))
        .bearer_auth(&token)
        .body("x".repeat(2_000))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // Without a Content-Length (streamed): refused as it passes the limit.
    let chunks = futures_stream(vec![vec![b'y'; 800], vec![b'y'; 800]]);
    let r = s
        .client
        .post(s.url("/tasks"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let r = s
        .client
        .post(s.url("/tasks"))
        .bearer_auth(&token)
        .body("x".repeat(900))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn a_refused_connection_is_502_then_503_once_ejected() {
    let dead = dead_upstream();
    let s = TestServer::start_with(|c| {
        c.routes = vec![tasks_route(&dead)];
        c.gateway = GatewayConfig {
            eject_after_failures: 2,
            probe_after_ms: 60_000,
            ..GatewayConfig::default()
        };
    })
    .await;
    let token = s.user_session("abe").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        expect_error(
            s.get_auth("/tasks", &token).await,
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
        )
        .await;
    }
    let r = s.get_auth("/tasks", &token).await;
    let body = expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "service_unavailable").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("upstream"));
}

#[tokio::test]
async fn a_slow_upstream_is_504() {
    let m = Mock::start(&["--latency-ms", "800"]).await;
    let s = TestServer::start_with(|c| {
        let mut r = tasks_route(&m.base);
        r.timeout_ms = 100;
        c.routes = vec![r];
    })
    .await;
    let token = s.user_session("bea").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    expect_error(
        s.get_auth("/tasks", &token).await,
        StatusCode::GATEWAY_TIMEOUT,
        "gateway_timeout",
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(700));
}

#[tokio::test]
async fn a_request_fails_over_to_the_next_upstream() {
    let alive = Mock::start(&[]).await;
    let dead = dead_upstream();
    let s = TestServer::start_with(|c| {
        let mut r = route("orchestrator", "/tasks", &[&dead, &alive.base]);
        r.permission = Some("tasks.read".into());
        c.routes = vec![r];
    })
    .await;
    let token = s.user_session("cal").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..6 {
        assert_eq!(s.get_auth("/tasks", &token).await.status(), StatusCode::OK);
        let r = s
            .client
            .post(s.url("/tasks"))
            .bearer_auth(&token)
            .json(&json!({"small": "body"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a small body is replayed on the next upstream"
        );
    }
}

#[tokio::test]
async fn a_streamed_response_arrives_chunk_by_chunk() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    let s = TestServer::start_with(|c| {
        let mut r = route("llm-raw", "/llm", &[&m.base]);
        r.permission = Some("tasks.read".into());
        r.strip_prefix = true;
        c.routes = vec![r];
    })
    .await;
    let token = s.user_session("dot").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut r = s
        .client
        .post(s.url("/llm/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({"model": "phi-3.5-mini", "stream": true,
                      "messages": [{"role": "user", "content": "a b c d e f"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        arrivals.push(started.elapsed());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(arrivals.len() > 5, "{} chunks", arrivals.len());
    assert!(
        *arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(100),
        "{arrivals:?}"
    );
    assert!(text.contains("data: [DONE]"));
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| {
        c.routes = vec![tasks_route(&m.base)];
        c.gateway = GatewayConfig {
            trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
            ..GatewayConfig::default()
        };
    })
    .await;
    let token = s.user_session("tess").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let echo: Value = s
        .client
        .get(s.url("/tasks"))
        .bearer_auth(&token)
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "gate.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &echo["headers"];
    assert_eq!(
        h["x-forwarded-for"], "203.0.113.7, 127.0.0.1",
        "the chain is kept and the peer appended"
    );
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "gate.example");
}

/// A GET sent byte for byte, so the path reaches the server unnormalised.
async fn raw_get(base: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// A refusal on a configured route (401 without credentials, 403 without
/// the permission) is counted under that route, not as `unmatched`.
#[tokio::test]
async fn refusals_on_a_route_are_counted_under_it() {
    let m = Mock::start(&[]).await;
    let s = TestServer::start_with(|c| {
        let mut r = route("labelled", "/labelled", &[&m.base]);
        r.permission = Some("labelled.use".into());
        c.routes = vec![r];
    })
    .await;
    let session = s.user_session("lena").await;
    let token = session["access_token"].as_str().unwrap();
    let r = s.get_auth("/labelled/x", token).await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = s.client.get(s.url("/labelled/x")).send().await.unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    let admin = s.admin_token().await;
    let text = s.get_auth("/metrics", &admin).await.text().await.unwrap();
    let counted = |status: &str| {
        text.lines().any(|l| {
            l.starts_with("swarmgate_http_requests_total{")
                && l.contains("route=\"gateway:labelled\"")
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(counted("403"), "no 403 under the route in:\n{text}");
    assert!(counted("401"), "no 401 under the route in:\n{text}");
}
