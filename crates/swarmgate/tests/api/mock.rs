//! `swarmgate mock-upstream` as a real process: the OpenAI-compatible
//! endpoints, SSE streaming chunk by chunk, exact token counts, echo,
//! latency and injected failures.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::common::free_port;

pub struct Mock {
    _child: tokio::process::Child,
    pub base: String,
}

impl Mock {
    pub async fn start(args: &[&str]) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"))
            .args(["mock-upstream", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env_clear()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self {
            _child: child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// POSTs `body` to `path` (with some `x-api-key`, which only
    /// `/v1/messages` asks for) and returns the JSON reply.
    async fn post(&self, path: &str, body: Value) -> Value {
        Client::new()
            .post(format!("{}{path}", self.base))
            .header("x-api-key", "any")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn models_chat_completions_and_embeddings_with_real_token_counts() {
    let m = Mock::start(&["--models", "phi-3.5-mini,big"]).await;
    let c = Client::new();
    let models: Value = c
        .get(format!("{}/v1/models", m.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["phi-3.5-mini", "big"]);

    let r = m
        .post(
            "/v1/chat/completions",
            json!({"model": "phi-3.5-mini", "messages": [{"role": "user", "content": "Hello there, friend"}]}),
        )
        .await;
    let reply = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(reply, "Mock reply: you said Hello there, friend.");
    // "Hello there , friend" = 4 tokens; the reply: Mock reply : you said Hello there , friend . = 10.
    assert_eq!(
        r["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 10, "total_tokens": 14})
    );

    let r = m
        .post(
            "/v1/completions",
            json!({"model": "big", "prompt": "Say hi"}),
        )
        .await;
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["usage"]["prompt_tokens"], 2);

    let r = m
        .post(
            "/v1/embeddings",
            json!({"model": "big", "input": ["one two", "three"]}),
        )
        .await;
    assert_eq!(r["data"].as_array().unwrap().len(), 2);
    assert_eq!(r["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(r["usage"]["prompt_tokens"], 3);

    let r = c
        .post(format!("{}/v1/chat/completions", m.base))
        .json(&json!({"model": "gpt-unknown", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn streaming_arrives_chunk_by_chunk_with_usage_only_when_asked() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    let c = Client::new();
    for include_usage in [true, false] {
        let mut body = json!({"model": "phi-3.5-mini", "stream": true,
                              "messages": [{"role": "user", "content": "one two three four"}]});
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let mut r = c
            .post(format!("{}/v1/chat/completions", m.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let started = Instant::now();
        let mut arrivals = Vec::new();
        let mut text = String::new();
        while let Some(chunk) = r.chunk().await.unwrap() {
            arrivals.push(started.elapsed());
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(arrivals.len() > 3, "several chunks, not one body");
        assert!(
            *arrivals.last().unwrap() - arrivals[0] >= Duration::from_millis(60),
            "spread over time"
        );
        assert!(text.trim_end().ends_with("data: [DONE]"));
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let content: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Mock reply: you said one two three four.");
        let usage = events.iter().find(|e| e["usage"].is_object());
        assert_eq!(usage.is_some(), include_usage);
        if let Some(u) = usage {
            assert_eq!(u["usage"]["prompt_tokens"], 4);
            assert_eq!(u["usage"]["completion_tokens"], 10);
        }
    }
}

#[tokio::test]
async fn other_paths_echo_the_request() {
    let m = Mock::start(&[]).await;
    let r: Value = Client::new()
        .put(format!("{}/tasks/7?verbose=1", m.base))
        .header("x-swarm-subject", "u1")
        .body("payload")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["method"], "PUT");
    assert_eq!(r["path"], "/tasks/7");
    assert_eq!(r["query"], "verbose=1");
    assert_eq!(r["headers"]["x-swarm-subject"], "u1");
    assert_eq!(r["body"], "payload");
}

#[tokio::test]
async fn latency_and_failure_rate_are_honoured() {
    let m = Mock::start(&["--latency-ms", "150", "--fail-rate", "0.5"]).await;
    let c = Client::new();
    let mut failures = 0;
    for _ in 0..4 {
        let started = Instant::now();
        let r = c.get(format!("{}/anything", m.base)).send().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        if r.status() == StatusCode::INTERNAL_SERVER_ERROR {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "exactly half, evenly spread");
    let (code, _, err) =
        crate::common::run_binary(&["mock-upstream", "--fail-rate", "2"], &[], None).await;
    assert_eq!(code, 2);
    assert!(err.contains("--fail-rate"));
}

#[tokio::test]
async fn replies_stop_at_max_tokens_as_a_real_server_does() {
    let m = Mock::start(&["--models", "m"]).await;
    let body = m
        .post(
            "/v1/chat/completions",
            json!({"model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": "one two"}]}),
        )
        .await;
    assert_eq!(body["choices"][0]["message"]["content"], "Mock reply:");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let body = m
        .post(
            "/v1/messages",
            json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "one two"}]}),
        )
        .await;
    assert_eq!(body["content"][0]["text"], "Mock reply: you");
    assert_eq!(body["usage"]["output_tokens"], 4);
}
