//! The `[anthropic]` profile: Anthropic's Messages API through the gateway
//! to a real mock upstream that insists on the provider key.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;
use crate::mock::Mock;

const PROVIDER_KEY: &str = "sk-ant-only-the-gateway-knows";

async fn server(m: &Mock, limits: Value) -> TestServer {
    let base = m.base.clone();
    TestServer::start_with(move |c| {
        c.anthropic.api_key = Some(swarmgate_server::config::Secret(PROVIDER_KEY.into()));
        c.anthropic.base_url = base;
        c.anthropic.mode = "subscription".into();
        c.anthropic.limits = serde_json::from_value(limits).unwrap();
        c.usage.flush_interval_ms = 50;
    })
    .await
}

fn message(stream: bool) -> Value {
    json!({
        "model": "claude-mock",
        "max_tokens": 20,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello there"}],
    })
}

async fn send(s: &TestServer, key: &str, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_go_through_with_the_gateways_key_and_are_metered() {
    let m = Mock::start(&["--models", "claude-mock", "--anthropic-key", PROVIDER_KEY]).await;
    // 2 + 16 + 20 = 38 reserved per call, 9 used (2 in, 7 out).
    let s = server(&m, json!({"tokens_per_day": 60})).await;
    let admin = s.admin_token().await;
    let key = s.create_key(&admin, &["models.claude-mock.invoke"]).await;
    let key = key["key"].as_str().unwrap();

    let r = send(&s, key, &message(false)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["content"][0]["text"],
        "Mock reply: you said hello there."
    );
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 2, "output_tokens": 8})
    );

    let r = send(&s, key, &message(true)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"));

    // The profile's day: 20 used, 40 left; a worst case of 38 still fits,
    // then nothing does.
    let r = send(&s, key, &message(false)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await.unwrap();
    let r = send(&s, key, &message(false)).await;
    let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    assert_eq!(body["error"]["scope"], "profile:anthropic");
    assert_eq!(body["error"]["limit"], "tokens_per_day");

    // Usage is kept under the model asked for, from Anthropic's counts.
    let mut total = 0;
    for _ in 0..100 {
        let usage: Value = s
            .get_auth("/usage?group_by=model", &admin)
            .await
            .json()
            .await
            .unwrap();
        total = usage["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["group"] == "claude-mock")
            .map(|i| i["total_tokens"].as_i64().unwrap())
            .sum();
        if total == 30 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(total, 30, "three calls of 10 tokens");
    let quota: Value = s.get_auth("/quota", &admin).await.json().await.unwrap();
    let profile = quota["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["scope"] == "profile:anthropic")
        .cloned()
        .unwrap();
    assert_eq!(profile["tokens_per_day"]["used"], 30);

    // Counting tokens is free at the provider: no tokens are reserved or
    // metered, even with the profile's day spent.
    let r = s
        .client
        .post(s.url("/v1/messages/count_tokens"))
        .header("x-api-key", key)
        .json(&json!({"model": "claude-mock", "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"input_tokens": 2}));

    // Without the model's permission: Anthropic's 403 shape.
    let session = s.user_session("no-claude").await;
    let key = s
        .create_key(session["access_token"].as_str().unwrap(), &["tasks.read"])
        .await;
    let r = send(&s, key["key"].as_str().unwrap(), &message(false)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    s.stop().await;
}

#[tokio::test]
async fn without_a_provider_key_messages_are_not_served() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let key = s.create_key(&admin, &["*"]).await;
    let r = send(&s, key["key"].as_str().unwrap(), &message(false)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn anthropic_and_claude_variables_are_one_setting() {
    let env = |key: &str, claude: &str| {
        vec![
            ("ANTHROPIC_API_KEY", key.to_string()),
            ("CLAUDE_API_KEY", claude.to_string()),
            ("CLAUDE_BASE_URL", "http://127.0.0.1:9".to_string()),
        ]
    };
    let (code, out, err) = run_binary(&["check-config"], &env("sk-a", "sk-a"), None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration ok"), "{out}");
    let (code, _, err) = run_binary(&["check-config"], &env("sk-a", "sk-b"), None).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("ANTHROPIC_API_KEY and CLAUDE_API_KEY are both set and differ"),
        "{err}"
    );
    let (code, _, err) = run_binary(
        &["check-config"],
        &[
            ("CLAUDE_API_KEY", "sk-a".into()),
            ("ANTHROPIC_BASE_URL", "ftp://example.com".into()),
        ],
        None,
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("ANTHROPIC_BASE_URL"), "{err}");
}

#[tokio::test]
async fn the_provider_sees_its_key_and_nothing_of_the_caller() {
    // The profile pointed at the mock's echo: the reply is what arrived.
    let m = Mock::start(&[]).await;
    let base = format!("{}/echo", m.base);
    let s = TestServer::start_with(move |c| {
        c.anthropic.api_key = Some(swarmgate_server::config::Secret(PROVIDER_KEY.into()));
        c.anthropic.base_url = base;
    })
    .await;
    let admin = s.admin_token().await;
    let key = s.create_key(&admin, &["*"]).await;
    let r = s
        .client
        .post(s.url("/v1/messages"))
        .header("x-api-key", key["key"].as_str().unwrap())
        .header("cookie", "session=secret")
        .header("x-custom-trace", "internal")
        .header("anthropic-beta", "tools-2024-04-04")
        .json(&message(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/echo/v1/messages");
    let headers = echo["headers"].as_object().unwrap();
    assert_eq!(headers["x-api-key"], PROVIDER_KEY);
    assert_eq!(
        headers["anthropic-version"], "2023-06-01",
        "added when absent"
    );
    assert_eq!(headers["anthropic-beta"], "tools-2024-04-04");
    for name in headers.keys() {
        assert!(
            !name.starts_with("x-swarm-")
                && !name.starts_with("x-forwarded-")
                && !["authorization", "cookie", "x-custom-trace"].contains(&name.as_str()),
            "{name} reached the provider"
        );
    }
    // A model name that could not be one is refused before any lookup.
    let mut body = message(false);
    body["model"] = json!("x".repeat(300));
    let r = send(&s, key["key"].as_str().unwrap(), &body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_provider_refusing_the_gateways_key_is_a_502_not_the_callers_401() {
    let m = Mock::start(&["--models", "claude-mock", "--anthropic-key", PROVIDER_KEY]).await;
    let base = m.base.clone();
    let s = TestServer::start_with(move |c| {
        c.anthropic.api_key = Some(swarmgate_server::config::Secret("sk-ant-stale".into()));
        c.anthropic.base_url = base;
    })
    .await;
    let admin = s.admin_token().await;
    let key = s.create_key(&admin, &["*"]).await;
    let r = send(&s, key["key"].as_str().unwrap(), &message(false)).await;
    let body = expect_error(r, StatusCode::BAD_GATEWAY, "provider_auth_failed").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("provider key"));
}
