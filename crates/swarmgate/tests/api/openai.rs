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
        c.roles.insert(
            "phi-only".into(),
            swarmgate_server::config::RoleConfig {
                permissions: vec!["models.phi-3.5-mini.invoke".into()],
            },
        );
    })
    .await
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

#[tokio::test]
async fn the_upstream_api_key_is_sent_and_the_callers_is_not() {
    // The model's upstream path points at the mock's echo.
    let m = Mock::start(&[]).await;
    let var = format!("SG_TEST_KEY_{}", uuid::Uuid::new_v4().simple());
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
