//! The OpenAI-compatible API through the gateway to a real mock upstream.

use reqwest::StatusCode;
use serde_json::{json, Value};
use swarmgate_gateway::ModelConfig;

use crate::common::*;
use crate::mock::Mock;

fn model(name: &str, upstream: &str) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        upstreams: vec![upstream.into()],
        upstream_api_key_env: None,
        timeout_ms: 10_000,
    }
}

async fn llm_server(m: &Mock) -> TestServer {
    let base = m.base.clone();
    TestServer::start_with(move |c| {
        c.models = vec![model("phi-3.5-mini", &base), model("big", &base)];
        add_role(c, "phi-only", &["models.phi-3.5-mini.invoke"]);
    })
    .await
}

/// An API key that may use only `phi-3.5-mini`.
async fn phi_key(s: &TestServer, admin: &str) -> String {
    let r = s
        .post_auth(
            "/auth/api-keys",
            admin,
            json!({"name": "phi", "permissions": ["*"], "models": ["phi-3.5-mini"]}),
        )
        .await;
    r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn model_ids(s: &TestServer, header: (&str, String)) -> Vec<String> {
    let r = s
        .client
        .get(s.url("/v1/models"))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_model_list_shows_only_what_the_caller_may_use() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let s = llm_server(&m).await;
    let admin = s.admin_token().await;
    assert_eq!(model_ids(&s, bearer(&admin)).await, ["phi-3.5-mini", "big"]);
    let session = s.user_session("lena").await;
    let token = session["access_token"].as_str().unwrap().to_string();
    assert!(
        model_ids(&s, bearer(&token)).await.is_empty(),
        "role user has no model grant"
    );
    s.set_role(&admin, session["user_id"].as_str().unwrap(), "phi-only")
        .await;
    assert_eq!(model_ids(&s, bearer(&token)).await, ["phi-3.5-mini"]);
    s.set_role(&admin, session["user_id"].as_str().unwrap(), "ml-engineer")
        .await;
    assert_eq!(
        model_ids(&s, bearer(&token)).await,
        ["phi-3.5-mini", "big"],
        "inference.* / models.* grant every model"
    );
    // A key restricted to one model sees one model, whatever its owner may.
    let r = s
        .post_auth(
            "/auth/api-keys",
            &admin,
            json!({"name": "phi", "permissions": ["*"], "models": ["phi-3.5-mini"]}),
        )
        .await;
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(model_ids(&s, api_key(&key)).await, ["phi-3.5-mini"]);
}

#[tokio::test]
async fn completions_are_routed_by_model_with_403_and_404_in_openai_shape() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let s = llm_server(&m).await;
    let admin = s.admin_token().await;
    let key = phi_key(&s, &admin).await;
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "ping pong"}]});
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .json(&chat("phi-3.5-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply: you said ping pong."
    );
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("x-api-key", &key)
        .json(&chat("big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert!(body["error"]["message"].as_str().unwrap().contains("big"));
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&chat("gpt-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    for path in ["/v1/completions", "/v1/embeddings"] {
        let body = json!({"model": "big", "prompt": "hello", "input": "hello"});
        let r = s
            .client
            .post(s.url(path))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .body("not json")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&chat("big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// The body goes upstream as it came, so a field the gateway reads must
/// mean one thing: given twice, the gateway could check one model and the
/// upstream run the other.
#[tokio::test]
async fn a_body_naming_the_model_twice_is_refused() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let s = llm_server(&m).await;
    let admin = s.admin_token().await;
    let key = phi_key(&s, &admin).await;
    let messages = r#""messages":[{"role":"user","content":"ping"}]"#;
    for body in [
        format!(r#"{{"model":"phi-3.5-mini","model":"big",{messages}}}"#),
        format!(r#"{{"model":"big","model":"phi-3.5-mini",{messages}}}"#),
        format!(r#"{{"model":"phi-3.5-mini","stream":false,"stream":true,{messages}}}"#),
    ] {
        let r = s
            .client
            .post(s.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let e = expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains("more than once"), "{body}: {e}");
    }
    // Once each, and fields the gateway does not read, in any order: as sent.
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"user":"u1", {messages}, "model":"phi-3.5-mini" }}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap()["usage"]["prompt_tokens"],
        1
    );
}

#[tokio::test]
async fn the_upstream_api_key_is_sent_and_the_callers_is_not() {
    // The model's upstream path points at the mock's echo.
    let m = Mock::start(&[]).await;
    let var = format!("SG_TEST_KEY_{}", swarmgate_core::random::uuid_simple());
    // SAFETY of set_var: a unique name nobody else reads.
    std::env::set_var(&var, "upstream-secret");
    let base = format!("{}/echo", m.base);
    let var2 = var.clone();
    let s = TestServer::start_with(move |c| {
        c.models = vec![ModelConfig {
            upstream_api_key_env: Some(var2),
            ..model("vllm", &base)
        }];
    })
    .await;
    let admin = s.admin_token().await;
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&json!({"model": "vllm", "messages": []}))
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/echo/v1/chat/completions");
    assert_eq!(echo["headers"]["authorization"], "Bearer upstream-secret");
    assert!(!echo.to_string().contains(&admin));
    assert_eq!(echo["headers"]["x-swarm-auth-method"], "jwt");
}

async fn usage(s: &TestServer, token: &str, query: &str) -> Value {
    let r = s.get_auth(&format!("/usage{query}"), token).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn stream_text(s: &TestServer, token: &str, body: Value) -> String {
    let mut r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test]
async fn usage_is_recorded_for_plain_and_streamed_calls() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let s = llm_server(&m).await;
    let admin = s.admin_token().await;
    let msg = |stream: bool| json!({"model": "phi-3.5-mini", "stream": stream, "messages": [{"role": "user", "content": "count these words"}]});
    // Plain: prompt 3, reply "Mock reply: you said count these words." = 9.
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&msg(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Streamed without asking for usage: the gateway asks, reads it, and
    // removes the chunk from what the caller sees.
    let text = stream_text(&s, &admin, msg(true)).await;
    assert!(!text.contains("\"usage\":{"), "usage chunk removed: {text}");
    assert!(text.contains("data: [DONE]"));
    // Streamed asking for it: the chunk stays.
    let mut asked = msg(true);
    asked["stream_options"] = json!({"include_usage": true});
    let text = stream_text(&s, &admin, asked).await;
    assert!(text.contains("\"prompt_tokens\":3"), "{text}");
    let body = usage(&s, &admin, "?group_by=model").await;
    assert_eq!(
        body["items"],
        json!([{"group": "phi-3.5-mini", "requests": 3, "prompt_tokens": 9, "completion_tokens": 27, "total_tokens": 36}])
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_still_charged() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    let s = llm_server(&m).await;
    let admin = s.admin_token().await;
    let body = json!({"model": "phi-3.5-mini", "stream": true,
                      "messages": [{"role": "user", "content": "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"}]});
    let mut r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    // Read two chunks, then hang up.
    r.chunk().await.unwrap();
    r.chunk().await.unwrap();
    drop(r);
    let mut items = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        items = usage(&s, &admin, "").await["items"].clone();
        if items.as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
    }
    let row = &items[0];
    assert_eq!(row["requests"], 1);
    assert_eq!(
        row["prompt_tokens"], 10,
        "prompt estimated from the request"
    );
    assert!(
        row["completion_tokens"].as_i64().unwrap() < 15,
        "only what was produced before the hang-up: {row}"
    );
}

#[tokio::test]
async fn usage_is_per_caller_unless_allowed_to_read_all() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let s = llm_server(&m).await;
    let admin = s.admin_token().await;
    let session = s.user_session("ursa").await;
    s.set_role(&admin, session["user_id"].as_str().unwrap(), "ml-engineer")
        .await;
    let token = session["access_token"].as_str().unwrap().to_string();
    let key = s.create_key(&token, &["models.*"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let call = |cred: (&'static str, String), model: &'static str| {
        let client = s.client.clone();
        let url = s.url("/v1/chat/completions");
        async move {
            let r = client
                .post(url)
                .header(cred.0, cred.1)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    call(bearer(&admin), "big").await;
    call(bearer(&token), "phi-3.5-mini").await;
    call(api_key(&key), "big").await;
    let own = usage(&s, &token, "?group_by=model").await;
    let groups: Vec<&str> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["big", "phi-3.5-mini"], "only her own calls");
    let by_key = usage(&s, &token, "?group_by=key").await;
    assert_eq!(
        by_key["items"].as_array().unwrap().len(),
        2,
        "her session and her key"
    );
    // Paged one group at a time, the session's group (no key) included,
    // the pages end and hold the same groups.
    let mut paged = Vec::new();
    let mut query = "?group_by=key&limit=1".to_string();
    for _ in 0..5 {
        let page = usage(&s, &token, &query).await;
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?group_by=key&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(json!(paged), by_key["items"], "pages of one");
    let all = usage(&s, &admin, "?group_by=user").await;
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2,
        "the admin reads everyone's"
    );
    let future = usage(&s, &admin, "?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["items"], json!([]));
    expect_error(
        s.get_auth("/usage?group_by=colour", &admin).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    expect_error(
        s.get_auth("/usage?since=yesterday", &admin).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}

#[tokio::test]
async fn metrics_cover_requests_auth_denials_tokens_overhead_and_upstreams() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let metrics_port = free_port();
    let base = m.base.clone();
    let s = TestServer::start_with(move |c| {
        c.models = vec![model("metrics-model", &base)];
        c.metrics.listen = Some(format!("127.0.0.1:{metrics_port}"));
    })
    .await;
    let _ = m; // the mock serves "phi-3.5-mini" and "big"; metrics-model gets a 404 from it
    let admin = s.admin_token().await;
    let chat = json!({"model": "metrics-model", "messages": [{"role": "user", "content": "hi"}]});
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&chat)
        .send()
        .await
        .unwrap();
    let _ = s.get_auth("/auth/me", "not-a-token").await;
    let user = s.user_session("metra").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!allowed(s.verify(bearer(&user), "models.load", None).await).await);
    expect_error(
        s.get_auth("/metrics", &user).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let r = s.get_auth("/metrics", &admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for needle in [
        "swarmgate_http_requests_total{",
        "route=\"/auth/login\"",
        "swarmgate_http_request_duration_seconds_bucket",
        "swarmgate_gateway_overhead_seconds_bucket",
        "swarmgate_auth_total{method=\"jwt\",outcome=\"failure\"}",
        "swarmgate_permission_denied_total",
        "swarmgate_upstream_healthy{route=\"model:metrics-model\"",
        "route=\"gateway:model:metrics-model\"",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    // The separate listener needs no credentials.
    let r = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("swarmgate_http_requests_total"));
}

#[tokio::test]
async fn llm_token_counters_grow_with_usage() {
    let m = Mock::start(&["--models", "tok-model"]).await;
    let base = m.base.clone();
    let s = TestServer::start_with(move |c| c.models = vec![model("tok-model", &base)]).await;
    let admin = s.admin_token().await;
    let chat =
        json!({"model": "tok-model", "messages": [{"role": "user", "content": "one two three"}]});
    let r = s
        .client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap();
    let text = s.get_auth("/metrics", &admin).await.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("swarmgate_llm_tokens_total{")
                && l.contains("tok-model")
                && l.contains("prompt")
        })
        .unwrap_or_else(|| panic!("no prompt token counter:\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
}
