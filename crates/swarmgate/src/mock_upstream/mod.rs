//! `swarmgate mock-upstream`: a small OpenAI-compatible server for tests and
//! the demo. Chat and text completions (plain, and streamed as SSE in one
//! chunk per word, honouring `stream_options.include_usage`), embeddings and
//! the model list; Anthropic's `/v1/messages` (plain and streamed, in its
//! own event shape, with `x-api-key` required); every other path echoes the
//! request as JSON. Token counts
//! are real counts of the prompt and the reply under a simple tokenizer
//! (words and punctuation), so accounting can be checked exactly.

// A stand-in for an LLM server in tests and demos, not part of the
// gateway: it reads request JSON by indexing, which serde_json answers
// with `null` for anything missing (it never panics), and its one array
// index is taken modulo the array's length.
#![allow(clippy::indexing_slicing, reason = "see the comment above")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
// The mock counts tokens by the rule the gateway estimates by, so an
// estimate of a mock stream is exact.
use swarmgate_gateway::usage::estimate_tokens as count_tokens;

mod anthropic;

#[derive(Clone)]
pub struct MockConfig {
    pub models: Vec<String>,
    pub latency: Duration,
    pub fail_rate: f64,
    /// The `x-api-key` `/v1/messages` insists on (any key when unset; a
    /// missing one is always refused).
    pub anthropic_key: Option<String>,
    /// The pause before each word of a streamed reply.
    pub chunk_interval: Duration,
}

struct Mock {
    config: MockConfig,
    requests: AtomicU64,
}

type Shared = Arc<Mock>;

fn openai_error(status: StatusCode, message: &str, kind: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })),
    )
        .into_response()
}

impl Mock {
    /// Waits the configured latency and decides whether to fail this one.
    async fn delay_and_maybe_fail(&self) -> Option<Response> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // Deterministic and evenly spread: exactly `failing` of every 1000
        // requests fail (the n-th fails when the running quota ticks over).
        let failing = (self.config.fail_rate.clamp(0.0, 1.0) * 1000.0).round() as u64;
        if (n + 1) * failing / 1000 != n * failing / 1000 {
            return Some(openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected failure (--fail-rate)",
                "server_error",
            ));
        }
        None
    }

    /// The requested model, or the OpenAI-style 404 for one not served.
    /// An OpenAI request's body and model, after the configured latency
    /// and failures; or the error to answer with.
    async fn openai_request(&self, body: &Bytes) -> Result<(Value, String), Box<Response>> {
        if let Some(failure) = self.delay_and_maybe_fail().await {
            return Err(Box::new(failure));
        }
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return Err(Box::new(openai_error(
                StatusCode::BAD_REQUEST,
                "body is not JSON",
                "invalid_request_error",
            )));
        };
        let model = self.check_model(&body)?;
        Ok((body, model))
    }

    fn check_model(&self, body: &Value) -> Result<String, Box<Response>> {
        let model = body["model"].as_str().unwrap_or_default().to_string();
        if !self.config.models.contains(&model) {
            return Err(Box::new(openai_error(
                StatusCode::NOT_FOUND,
                &format!("The model `{model}` does not exist"),
                "invalid_request_error",
            )));
        }
        Ok(model)
    }
}

async fn models(State(mock): State<Shared>) -> Response {
    if let Some(failure) = mock.delay_and_maybe_fail().await {
        return failure;
    }
    let data: Vec<Value> = mock
        .config
        .models
        .iter()
        .map(|m| json!({ "id": m, "object": "model", "created": 0, "owned_by": "swarmgate-mock" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

/// The reply cut to at most `max` tokens, as a real server stops at
/// `max_tokens`.
fn at_most(reply: String, max: Option<u64>) -> String {
    let Some(max) = max else {
        return reply;
    };
    // Pieces end at a space, so their counts add up.
    let mut kept = String::new();
    let mut count = 0;
    for piece in reply.split_inclusive(' ') {
        count += count_tokens(piece);
        if count > max {
            break;
        }
        kept.push_str(piece);
    }
    kept.trim_end().to_string()
}

/// The reply to a prompt: it says what it heard.
fn reply_to(prompt: &str) -> String {
    let heard: String = prompt
        .split_whitespace()
        .take(12)
        .collect::<Vec<_>>()
        .join(" ");
    format!("Mock reply: you said {heard}.")
}

/// The text of a message's `content` (OpenAI) or of Anthropic's `system`
/// or `content`: a string, or parts/blocks with `text`.
fn message_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn completion_parts(kind: &str, body: &Value) -> (String, String) {
    if kind == "chat" {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let prompt: Vec<String> = messages
            .iter()
            .map(|m| message_text(&m["content"]))
            .collect();
        let last = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| message_text(&m["content"]))
            .unwrap_or_default();
        (prompt.join("\n"), reply_to(&last))
    } else {
        let prompt = match &body["prompt"] {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        };
        let reply = reply_to(&prompt);
        (prompt, reply)
    }
}

fn usage(prompt: &str, reply: &str) -> Value {
    let p = count_tokens(prompt);
    let c = count_tokens(reply);
    json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c })
}

async fn completion(mock: Shared, kind: &'static str, body: Bytes) -> Response {
    let (body, model) = match mock.openai_request(&body).await {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let (prompt, reply) = completion_parts(kind, &body);
    let max = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64());
    let reply = at_most(reply, max);
    let id = format!("mock-{}", mock.requests.load(Ordering::Relaxed));
    let object = if kind == "chat" {
        "chat.completion"
    } else {
        "text_completion"
    };
    if body["stream"] != json!(true) {
        let choice = if kind == "chat" {
            json!({ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" })
        } else {
            json!({ "index": 0, "text": reply, "finish_reason": "stop", "logprobs": null })
        };
        return Json(json!({
            "id": id, "object": object, "created": 0, "model": model,
            "choices": [choice], "usage": usage(&prompt, &reply),
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let interval = mock.config.chunk_interval;
    stream_reply(kind, id, model, prompt, reply, include_usage, interval)
}

/// SSE in several chunks, one per word, each after `interval` (20 ms by
/// default) so a client can tell streaming from a body delivered at the end.
fn stream_reply(
    kind: &'static str,
    id: String,
    model: String,
    prompt: String,
    reply: String,
    include_usage: bool,
    interval: Duration,
) -> Response {
    let object = if kind == "chat" {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let words: Vec<String> = reply.split_inclusive(' ').map(str::to_string).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let event = |v: Value| Bytes::from(format!("data: {v}\n\n"));
        let choice = |text: &str, finish: Option<&str>| {
            if kind == "chat" {
                json!({ "index": 0, "delta": { "content": text }, "finish_reason": finish })
            } else {
                json!({ "index": 0, "text": text, "finish_reason": finish, "logprobs": null })
            }
        };
        let chunk = |choices: Value, usage: Value| json!({ "id": id, "object": object, "created": 0, "model": model, "choices": choices, "usage": usage });
        if kind == "chat" {
            let first = json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }]);
            if tx.send(Ok(event(chunk(first, Value::Null)))).await.is_err() {
                return;
            }
        }
        for word in &words {
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx
                .send(Ok(event(chunk(json!([choice(word, None)]), Value::Null))))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
        let _ = tx
            .send(Ok(event(chunk(
                json!([choice("", Some("stop"))]),
                Value::Null,
            ))))
            .await;
        if include_usage {
            let _ = tx
                .send(Ok(event(chunk(json!([]), usage(&prompt, &reply)))))
                .await;
        }
        let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
    });
    sse_response(rx)
}

/// An event stream of what the sender task writes into `rx`.
fn sse_response(rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn chat(State(mock): State<Shared>, body: Bytes) -> Response {
    completion(mock, "chat", body).await
}

async fn text(State(mock): State<Shared>, body: Bytes) -> Response {
    completion(mock, "text", body).await
}

async fn embeddings(State(mock): State<Shared>, body: Bytes) -> Response {
    let (body, model) = match mock.openai_request(&body).await {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let tokens: u64 = inputs.iter().map(|i| count_tokens(i)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            // A deterministic 8-dimensional vector from the text's bytes.
            let mut v = [0f32; 8];
            for (j, b) in text.bytes().enumerate() {
                v[j % 8] += f32::from(b) / 255.0;
            }
            json!({ "object": "embedding", "index": i, "embedding": v })
        })
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response()
}

/// Any other path: the request as JSON, so tests can see what arrived.
async fn echo(
    State(mock): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Request,
) -> Response {
    if let Some(failure) = mock.delay_and_maybe_fail().await {
        return failure;
    }
    let body = axum::body::to_bytes(request.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    Json(Echo {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: EchoHeaders(&headers),
        body: String::from_utf8_lossy(&body),
    })
    .into_response()
}

/// What the echo answers, serialized from the request as it is: the proxy
/// benchmark runs through here, and building a `serde_json::Value` first
/// made the upstream's cost grow with every header the gateway adds.
#[derive(serde::Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: EchoHeaders<'a>,
    body: std::borrow::Cow<'a, str>,
}

/// Each header name once, with its last value (a repeated header shows
/// as the one sent last).
struct EchoHeaders<'a>(&'a HeaderMap);

impl serde::Serialize for EchoHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.keys().map(|name| {
            let value = self.0.get_all(name).iter().next_back();
            (
                name.as_str(),
                value.and_then(|v| v.to_str().ok()).unwrap_or(""),
            )
        }))
    }
}

pub fn router(config: MockConfig) -> Router {
    let mock = Arc::new(Mock {
        config,
        requests: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(text))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(anthropic::count_message_tokens),
        )
        .fallback(echo)
        .with_state(mock)
}

pub async fn serve(listen: SocketAddr, config: MockConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, models = ?config.models, "mock upstream listening");
    axum::serve(swarmgate_server::without_nagle(listener), router(config))
        .with_graceful_shutdown(swarmgate_server::shutdown_signal())
        .await?;
    Ok(())
}
