//! The mock's Anthropic Messages API: `/v1/messages` (plain and streamed,
//! in Anthropic's own event shape) and `/v1/messages/count_tokens`, with
//! `x-api-key` required.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{at_most, count_tokens, message_text, reply_to, sse_response, Mock, Shared};

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "type": "error", "error": { "type": kind, "message": message } })),
    )
        .into_response()
}

/// Whether the request carries the `x-api-key` this mock insists on.
fn anthropic_key_accepted(mock: &Mock, headers: &HeaderMap) -> bool {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    match (&mock.config.anthropic_key, key) {
        (_, None) => false,
        (Some(expected), Some(given)) => expected == given,
        (None, Some(_)) => true,
    }
}

/// The prompt of an Anthropic request: system and every turn.
fn anthropic_prompt(body: &Value) -> String {
    let turns = body["messages"].as_array().cloned().unwrap_or_default();
    let mut prompt = vec![message_text(&body["system"])];
    prompt.extend(turns.iter().map(|m| message_text(&m["content"])));
    prompt.join("\n")
}

/// An Anthropic request's body, its key checked (and, for a call that
/// generates, after the configured latency and failures); or the error to
/// answer with.
async fn anthropic_request(
    mock: &Mock,
    headers: &HeaderMap,
    body: &Bytes,
    generates: bool,
) -> Result<Value, Box<Response>> {
    if !anthropic_key_accepted(mock, headers) {
        return Err(Box::new(anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        )));
    }
    if generates {
        if let Some(failure) = mock.delay_and_maybe_fail().await {
            return Err(Box::new(failure));
        }
    }
    serde_json::from_slice::<Value>(body).map_err(|_| {
        Box::new(anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "body is not JSON",
        ))
    })
}

/// Anthropic's token counting: the prompt's tokens, as `/v1/messages`
/// would report them.
pub(super) async fn count_message_tokens(
    State(mock): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match anthropic_request(&mock, &headers, &body, false).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    Json(json!({ "input_tokens": count_tokens(&anthropic_prompt(&body)) })).into_response()
}

/// Anthropic's Messages API: the reply says what the last user turn said.
pub(super) async fn messages(
    State(mock): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match anthropic_request(&mock, &headers, &body, true).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let model = body["model"].as_str().unwrap_or_default().to_string();
    if !mock.config.models.contains(&model) {
        return anthropic_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            &format!("model: {model}"),
        );
    }
    let turns = body["messages"].as_array().cloned().unwrap_or_default();
    let prompt = anthropic_prompt(&body);
    let last = turns
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| message_text(&m["content"]))
        .unwrap_or_default();
    let reply = at_most(reply_to(&last), body["max_tokens"].as_u64());
    let (input, output) = (count_tokens(&prompt), count_tokens(&reply));
    let id = format!("msg_mock_{}", mock.requests.load(Ordering::Relaxed));
    if body["stream"] != json!(true) {
        return Json(json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{ "type": "text", "text": reply }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": input, "output_tokens": output },
        }))
        .into_response();
    }
    stream_message(
        id,
        model,
        reply,
        (input, output),
        mock.config.chunk_interval,
    )
}

/// Anthropic's events for `reply`: the message, one delta per word (each
/// after `interval`), and the end with the usage (`tokens`: input, output).
fn stream_message(
    id: String,
    model: String,
    reply: String,
    (input, output): (u64, u64),
    interval: Duration,
) -> Response {
    let words: Vec<String> = reply.split_inclusive(' ').map(str::to_string).collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let event = |name: &str, v: Value| Bytes::from(format!("event: {name}\ndata: {v}\n\n"));
        let start = json!({ "type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": input, "output_tokens": 1 } } });
        let block = json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } });
        for (name, v) in [("message_start", start), ("content_block_start", block)] {
            if tx.send(Ok(event(name, v))).await.is_err() {
                return;
            }
        }
        for word in &words {
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let delta = json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": word } });
            if tx
                .send(Ok(event("content_block_delta", delta)))
                .await
                .is_err()
            {
                return; // the client went away
            }
        }
        let end = [
            (
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": 0 }),
            ),
            (
                "message_delta",
                json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null }, "usage": { "output_tokens": output } }),
            ),
            ("message_stop", json!({ "type": "message_stop" })),
        ];
        for (name, v) in end {
            let _ = tx.send(Ok(event(name, v))).await;
        }
    });
    sse_response(rx)
}
