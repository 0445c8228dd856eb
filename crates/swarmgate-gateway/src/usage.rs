//! Token accounting for LLM responses as they stream past.
//!
//! [`Metered`] wraps a response body: a JSON body passes through untouched
//! while its chunks are kept (shared, not copied) to read `usage` at the
//! end; an SSE body is relayed event by event, its final usage chunk read
//! (and removed when the caller had not asked for it). When the body ends, or is dropped because the
//! client went away, the usage seen is reported once; when no usage
//! arrived, it is estimated from the streamed text and marked so.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;

/// Tokens of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// True when no usage came from the upstream and these are estimates.
    pub estimated: bool,
}

/// Words and punctuation marks: the estimate used when an upstream reports
/// no usage (the same rule `mock-upstream` counts by): a run of letters and
/// digits is one, every other character but white space is one.
pub fn estimate_tokens(text: &str) -> u64 {
    if !text.is_ascii() {
        return tokens_by_char(text);
    }
    // Prompts are mostly ASCII: classed a byte at a time by a table,
    // without a branch per byte.
    let mut count = 0;
    let mut in_word = false;
    for &b in text.as_bytes() {
        // Never out of range (256 entries): the fallback is compiled away.
        let class = ASCII_CLASS.get(usize::from(b)).copied().unwrap_or(MARK);
        let word = class == WORD;
        count += u64::from(class == MARK) + u64::from(word && !in_word);
        in_word = word;
    }
    count
}

/// [`estimate_tokens`] a character at a time, for text beyond ASCII.
fn tokens_by_char(text: &str) -> u64 {
    let mut count = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                count += 1;
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                count += 1;
            }
        }
    }
    count
}

const SPACE: u8 = 0;
const WORD: u8 = 1;
const MARK: u8 = 2;

/// Each ASCII character's class, as `char::is_alphanumeric` and
/// `char::is_whitespace` answer for it. 256 entries, so that indexing by a
/// byte cannot fail; [`estimate_tokens`] uses it for ASCII text only.
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build"
)]
static ASCII_CLASS: [u8; 256] = {
    let mut table = [MARK; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            table[b] = WORD;
        } else if matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
            table[b] = SPACE;
        }
        b += 1;
    }
    table
};

/// Keys of a request body whose strings are not prompt.
pub(crate) const NOT_PROMPT: &[&str] = &["model", "role", "type", "stop", "stop_sequences", "id"];

/// One string's share of the prompt estimate: the larger of its words and
/// punctuation and a quarter of its bytes.
pub(crate) fn estimate_text(s: &str) -> u64 {
    estimate_tokens(s).max(s.len() as u64 / 4)
}

/// An upper estimate of a request body's prompt tokens, for reserving them
/// before the call: every string in it (messages, system, tools and their
/// schemas, tool results, documents), each counted as the larger of its
/// words and punctuation and a quarter of its bytes, so text a tokenizer
/// splits finely (code, base64 of an image or document) is not counted as
/// one word; and every number in a list, which is a prompt given as token
/// ids (`prompt: [1, 2, 3]`, embeddings of token arrays).
pub fn estimate_prompt(body: &Value) -> u64 {
    fn walk(value: &Value, total: &mut u64) {
        match value {
            Value::String(s) => *total = total.saturating_add(estimate_text(s)),
            Value::Array(items) => items.iter().for_each(|v| match v {
                Value::Number(_) => *total = total.saturating_add(1),
                other => walk(other, total),
            }),
            Value::Object(fields) => fields
                .iter()
                .filter(|(k, _)| !NOT_PROMPT.contains(&k.as_str()))
                .for_each(|(_, v)| walk(v, total)),
            _ => {}
        }
    }
    let mut total = 0;
    walk(body, &mut total);
    total
}

/// The usage a reply's or an event's `usage` object reports, merged into
/// what earlier events of the same stream reported. OpenAI's shape (`prompt_tokens`,
/// `completion_tokens`) comes whole; Anthropic's (`input_tokens` in
/// `message_start`, a running `output_tokens` in `message_delta`) in parts.
/// The counts are the upstream's: sums saturate, since a wrapped sum would
/// charge an absurd count as almost nothing (and panic in a debug build).
fn usage_in(u: &Value, seen: Option<Usage>) -> Option<Usage> {
    if u.get("prompt_tokens").is_some() || u.get("completion_tokens").is_some() {
        let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
        let completion = u["completion_tokens"].as_u64().unwrap_or(0);
        return Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: u["total_tokens"]
                .as_u64()
                .unwrap_or(prompt.saturating_add(completion)),
            estimated: false,
        });
    }
    let input = u["input_tokens"].as_u64().map(|i| {
        // Cached prompt tokens are prompt tokens too.
        i.saturating_add(u["cache_creation_input_tokens"].as_u64().unwrap_or(0))
            .saturating_add(u["cache_read_input_tokens"].as_u64().unwrap_or(0))
    });
    let output = u["output_tokens"].as_u64();
    if input.is_none() && output.is_none() {
        return None;
    }
    let prompt = input.or(seen.map(|s| s.prompt_tokens)).unwrap_or(0);
    let completion = output.or(seen.map(|s| s.completion_tokens)).unwrap_or(0);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        estimated: false,
    })
}

/// Where a JSON reply carries its usage: `usage` (OpenAI, Anthropic) or
/// `message.usage`. Read without building the rest of the reply: serde
/// skips every other field.
#[derive(serde::Deserialize)]
struct UsageCarrier {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    message: Option<MessageCarrier>,
}

#[derive(serde::Deserialize)]
struct MessageCarrier {
    #[serde(default)]
    usage: Option<Value>,
}

/// The `usage` object of a reply or event: its own, or its message's.
fn usage_object(usage: Option<Value>, message: Option<MessageCarrier>) -> Option<Value> {
    usage
        .filter(Value::is_object)
        .or_else(|| message.and_then(|m| m.usage).filter(Value::is_object))
}

/// The usage a whole JSON reply reports.
fn reply_usage(reply: &[u8]) -> Option<Usage> {
    let carrier: UsageCarrier = serde_json::from_slice(reply).ok()?;
    usage_in(&usage_object(carrier.usage, carrier.message)?, None)
}

/// What metering needs of one streamed event.
struct EventRead {
    /// Its `usage` (or `message.usage`) object.
    usage: Option<Value>,
    /// Anthropic's `message_start`, whose output count is not final.
    message_start: bool,
    /// No `choices`, or none in it: an OpenAI usage chunk.
    no_choices: bool,
}

/// Reads an event's JSON, appending the text it carries to `text`. Events
/// of the usual shapes are read in place, their strings borrowed; any other
/// JSON is read whole as a tree, with the same result.
fn read_event(payload: &[u8], text: &mut String) -> Option<EventRead> {
    if let Ok(event) = serde_json::from_slice::<Event<'_>>(payload) {
        if let Some(delta) = &event.delta {
            for t in [&delta.text, &delta.thinking, &delta.partial_json]
                .into_iter()
                .flatten()
            {
                text.push_str(t);
            }
        }
        for choice in event.choices.iter().flatten() {
            if let Some(t) = choice.delta.as_ref().and_then(|d| d.content.as_ref()) {
                text.push_str(t);
            }
            if let Some(t) = &choice.text {
                text.push_str(t);
            }
        }
        return Some(EventRead {
            usage: usage_object(event.usage, event.message),
            message_start: event.kind.as_deref() == Some("message_start"),
            no_choices: event.choices.is_none_or(|c| c.is_empty()),
        });
    }
    let value = serde_json::from_slice::<Value>(payload).ok()?;
    text.push_str(&chunk_text(&value));
    Some(EventRead {
        usage: value
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| {
                value
                    .get("message")
                    .and_then(|m| m.get("usage"))
                    .filter(|u| u.is_object())
            })
            .cloned(),
        message_start: value.get("type").and_then(Value::as_str) == Some("message_start"),
        no_choices: value
            .get("choices")
            .and_then(Value::as_array)
            .is_none_or(|c| c.is_empty()),
    })
}

/// An event of the usual shapes (OpenAI's chunks, Anthropic's events);
/// every other field is skipped.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    message: Option<MessageCarrier>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChoiceDelta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChoiceDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

/// Anthropic's deltas: text, extended thinking, tool input being built.
#[derive(serde::Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
}

/// The text a streamed chunk carries (chat deltas, completion text, or an
/// Anthropic `text_delta`).
fn chunk_text(value: &Value) -> String {
    let mut text = String::new();
    // Anthropic's deltas: text, extended thinking, tool input being built.
    for field in ["text", "thinking", "partial_json"] {
        if let Some(t) = value
            .get("delta")
            .and_then(|d| d.get(field))
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
    }
    if let Some(choices) = value.get("choices").and_then(Value::as_array) {
        for c in choices {
            if let Some(t) = c.pointer("/delta/content").and_then(Value::as_str) {
                text.push_str(t);
            }
            if let Some(t) = c["text"].as_str() {
                text.push_str(t);
            }
        }
    }
    text
}

/// A JSON reply larger than this is relayed without reading its usage
/// (which is then estimated).
const JSON_COPY_LIMIT: usize = 4 * 1024 * 1024;
/// An SSE event longer than this is not an LLM chunk: the rest of the
/// stream is relayed as it comes, unparsed.
const SSE_EVENT_LIMIT: usize = 1024 * 1024;

enum Mode {
    Json {
        /// The reply's chunks so far (shared with what is relayed, not
        /// copied), for reading its usage at the end.
        kept: Vec<Bytes>,
        kept_len: usize,
        overflow: bool,
    },
    Sse {
        pending: BytesMut,
        strip_usage: bool,
        text: String,
    },
}

type Report = Box<dyn FnOnce(Usage) + Send + Sync>;

pub struct Metered<B> {
    inner: B,
    mode: Mode,
    /// Text streamed before parsing stopped (see SSE_EVENT_LIMIT).
    streamed_text: String,
    out: VecDeque<Bytes>,
    found: Option<Usage>,
    /// The usage found so far is Anthropic's opening count (its
    /// `output_tokens` is not the final one yet).
    partial: bool,
    prompt_estimate: u64,
    report: Option<Report>,
    ended: bool,
}

impl<B> Metered<B> {
    /// `sse`: the response is an event stream; `strip_usage`: remove its
    /// usage chunk (the caller did not ask for it; we did).
    pub fn new(
        inner: B,
        sse: bool,
        strip_usage: bool,
        prompt_estimate: u64,
        report: Report,
    ) -> Self {
        let mode = if sse {
            Mode::Sse {
                pending: BytesMut::new(),
                strip_usage,
                text: String::new(),
            }
        } else {
            Mode::Json {
                kept: Vec::new(),
                kept_len: 0,
                overflow: false,
            }
        };
        Self {
            inner,
            mode,
            streamed_text: String::new(),
            out: VecDeque::new(),
            found: None,
            partial: false,
            prompt_estimate,
            report: Some(report),
            ended: false,
        }
    }

    fn take_in(&mut self, data: Bytes) {
        match &mut self.mode {
            Mode::Json {
                kept,
                kept_len,
                overflow,
            } => {
                if *overflow || *kept_len + data.len() > JSON_COPY_LIMIT {
                    *overflow = true;
                    kept.clear();
                } else {
                    *kept_len += data.len();
                    kept.push(data.clone());
                }
                self.out.push_back(data);
            }
            Mode::Sse {
                pending,
                strip_usage,
                text,
            } => {
                pending.extend_from_slice(&data);
                if pending.len() > SSE_EVENT_LIMIT && find_event_end(pending).is_none() {
                    // Not a stream we can read: stop parsing, relay the rest
                    // as it comes, and keep the streamed text for the estimate.
                    let raw = pending.split().freeze();
                    self.streamed_text = std::mem::take(text);
                    self.mode = Mode::Json {
                        kept: Vec::new(),
                        kept_len: 0,
                        overflow: true,
                    };
                    self.out.push_back(raw);
                    return;
                }
                // Relay every complete event; keep a partial one for later.
                while let Some(end) = find_event_end(pending) {
                    let event = pending.split_to(end).freeze();
                    let mut keep = true;
                    for line in event.split(|b| *b == b'\n') {
                        let Some(payload) = line.strip_prefix(b"data:") else {
                            continue;
                        };
                        let payload = payload.strip_prefix(b" ").unwrap_or(payload);
                        let Some(read) = read_event(payload, text) else {
                            continue;
                        };
                        if let Some(u) = read.usage.and_then(|u| usage_in(&u, self.found)) {
                            self.found = Some(u);
                            self.partial = read.message_start;
                            if *strip_usage && read.no_choices {
                                keep = false;
                            }
                        }
                    }
                    if keep {
                        self.out.push_back(event);
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(report) = self.report.take() {
            let usage = match (&self.mode, self.found) {
                // The stream stopped before Anthropic's final count: the
                // prompt is known, the reply is estimated from its text.
                (mode, Some(u)) if self.partial => {
                    let text = match mode {
                        Mode::Sse { text, .. } => text,
                        Mode::Json { .. } => &self.streamed_text,
                    };
                    let completion = estimate_tokens(text).max(u.completion_tokens);
                    Usage {
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: completion,
                        total_tokens: u.prompt_tokens.saturating_add(completion),
                        estimated: true,
                    }
                }
                (_, Some(u)) => u,
                (
                    Mode::Json {
                        kept,
                        overflow: false,
                        ..
                    },
                    None,
                ) => {
                    let found = match kept.as_slice() {
                        [one] => reply_usage(one),
                        parts => reply_usage(&parts.concat()),
                    };
                    found.unwrap_or_else(|| self.estimate(""))
                }
                (Mode::Sse { text, .. }, None) => self.estimate(text),
                (Mode::Json { .. }, None) => self.estimate(&self.streamed_text),
            };
            report(usage);
        }
    }

    fn estimate(&self, text: &str) -> Usage {
        let completion = estimate_tokens(text);
        Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: completion,
            total_tokens: self.prompt_estimate.saturating_add(completion),
            estimated: true,
        }
    }
}

/// End (exclusive) of the first complete SSE event: after a blank line.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2)
        .or_else(|| buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4))
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        // Ended normally, or the client went away mid-stream: either way
        // the caller is charged what the upstream produced.
        self.finish();
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        loop {
            if let Some(bytes) = self.out.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.ended = true;
                    // A trailing event without its blank line still counts.
                    if let Mode::Sse { pending, .. } = &mut self.mode {
                        if !pending.is_empty() {
                            let rest = pending.split().freeze();
                            let mut with_end = BytesMut::from(&rest[..]);
                            with_end.extend_from_slice(b"\n\n");
                            self.take_in(with_end.freeze());
                        }
                    }
                    self.finish();
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.take_in(data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.mode {
            Mode::Json { .. } => self.inner.size_hint(),
            Mode::Sse { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_ascii_table_counts_as_characters_do() {
        let all_ascii: String = (0u8..128).map(char::from).collect();
        let samples = [
            all_ascii.as_str(),
            "Hello, world! It's 42 o'clock.",
            "caf\u{e9} na\u{ef}ve \u{4e2d}\u{6587}\u{3000}\u{6f22}\u{5b57} \u{1f600}!\u{a0}x\u{2028}y",
            "\u{b}\u{c}\u{1c}\u{1f}\u{85} tabs\tand\r\nlines",
            "",
        ];
        for s in samples {
            assert_eq!(estimate_tokens(s), tokens_by_char(s), "{s:?}");
        }
        for b in 0u8..128 {
            let s = format!("a{}b", char::from(b));
            assert_eq!(estimate_tokens(&s), tokens_by_char(&s), "{b}");
        }
    }

    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn body_of(
        chunks: Vec<&'static str>,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
        StreamBody::new(tokio_stream::iter(frames))
    }

    async fn run(chunks: Vec<&'static str>, sse: bool, strip: bool) -> (String, Usage) {
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        let metered = Metered::new(
            body_of(chunks),
            sse,
            strip,
            3,
            Box::new(move |u| *s2.lock().unwrap() = Some(u)),
        );
        let out = metered.collect().await.unwrap().to_bytes();
        let usage = seen.lock().unwrap().expect("reported");
        (String::from_utf8(out.to_vec()).unwrap(), usage)
    }

    #[test]
    fn the_prompt_estimate_counts_every_string_but_names_and_roles() {
        let chat = serde_json::json!({
            "model": "some-very-long-model-name",
            "messages": [{"role": "user", "content": "hello there"}],
        });
        assert_eq!(estimate_prompt(&chat), 2);
        // Tool schemas, tool results and documents are prompt too; a long
        // unbroken string counts a token per four bytes.
        let tools = serde_json::json!({
            "system": "be brief",
            "tools": [{"name": "search", "description": "find pages", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [
                {"type": "tool_result", "content": "three small words"},
                {"type": "document", "source": {"data": "A".repeat(4000)}},
            ]}],
        });
        // "three small words": 3 words, 17 bytes, so 4.
        assert_eq!(estimate_prompt(&tools), 2 + 1 + 2 + 4 + 1000);
        // Prompts as token ids count one per id; settings do not count.
        let ids = serde_json::json!({"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 900, "temperature": 0.5});
        assert_eq!(estimate_prompt(&ids), 5);
    }

    #[tokio::test]
    async fn anthropic_usage_is_read_from_its_start_and_delta_events() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\n";
        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"one two three\"}}\n\n";
        let end = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n";
        let (out, usage) = run(vec![start, delta, end], true, false).await;
        assert_eq!(out, format!("{start}{delta}{end}"), "relayed untouched");
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 7,
                completion_tokens: 9,
                total_tokens: 16,
                estimated: false
            }
        );
        // Cut off before the final count: the reply is estimated.
        let (_, usage) = run(vec![start, delta], true, false).await;
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
        assert!(usage.estimated);
        // A whole (not streamed) message.
        let (_, usage) = run(
            vec![r#"{"type":"message","usage":{"input_tokens":4,"output_tokens":6}}"#],
            false,
            false,
        )
        .await;
        assert_eq!((usage.total_tokens, usage.estimated), (10, false));
    }

    #[tokio::test]
    async fn json_usage_is_read_and_the_body_unchanged() {
        let body =
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let (out, usage) = run(vec![&body[..20], &body[20..]], false, false).await;
        assert_eq!(out, body);
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 5,
                completion_tokens: 7,
                total_tokens: 12,
                estimated: false
            }
        );
    }

    #[tokio::test]
    async fn the_usage_chunk_is_read_and_removed_when_not_asked_for() {
        let chunks = vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi \"}}]}\n\ndata: {\"choi",
            "ces\":[{\"delta\":{\"content\":\"there\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2,\"total_tokens\":4}}\n\n",
            "data: [DONE]\n\n",
        ];
        let (out, usage) = run(chunks.clone(), true, true).await;
        assert!(!out.contains("usage"), "{out}");
        assert!(out.contains("there") && out.ends_with("data: [DONE]\n\n"));
        assert_eq!(usage.total_tokens, 4);
        assert!(!usage.estimated);
        let (out, _) = run(chunks, true, false).await;
        assert!(
            out.contains("\"usage\""),
            "kept when the caller asked for it"
        );
    }

    #[tokio::test]
    async fn without_usage_the_stream_is_estimated() {
        let chunks = vec![
            "data: {\"choices\":[{\"delta\":{\"content\":\"one two three\"}}]}\n\n",
            "data: [DONE]\n\n",
        ];
        let (_, usage) = run(chunks, true, true).await;
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 3,
                total_tokens: 6,
                estimated: true
            }
        );
    }

    #[tokio::test]
    async fn an_unreadable_stream_is_relayed_whole_and_estimated() {
        let huge: &'static str = Box::leak("x".repeat(SSE_EVENT_LIMIT + 10).into_boxed_str());
        let (out, usage) = run(vec![huge, "tail"], true, true).await;
        assert_eq!(out.len(), huge.len() + 4, "nothing lost");
        assert!(usage.estimated);
    }

    /// Found by `fuzz/` (target `usage`): counts near `u64::MAX` from an
    /// upstream overflowed the sums (a panic in a debug build, a wrapped,
    /// tiny total in a release one).
    #[tokio::test]
    async fn counts_too_large_to_add_saturate() {
        let (_, usage) = run(
            vec![r#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1}}"#],
            false,
            false,
        )
        .await;
        assert_eq!(usage.total_tokens, u64::MAX);
        let start = "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":18446744073709551615,\"cache_read_input_tokens\":2}}}\n\n";
        let delta = "data: {\"delta\":{\"text\":\"one two\"}}\n\n";
        let (_, usage) = run(vec![start, delta], true, false).await;
        assert_eq!(
            (usage.prompt_tokens, usage.total_tokens, usage.estimated),
            (u64::MAX, u64::MAX, true)
        );
    }

    #[test]
    fn a_dropped_stream_still_reports_what_it_saw() {
        let seen = Arc::new(Mutex::new(None));
        let s2 = seen.clone();
        let mut metered = Metered::new(
            body_of(vec![]),
            true,
            true,
            1,
            Box::new(move |u| *s2.lock().unwrap() = Some(u)),
        );
        metered.take_in(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a b\"}}]}\n\n",
        ));
        drop(metered);
        let usage = seen.lock().unwrap().unwrap();
        assert!(usage.estimated);
        assert_eq!(usage.completion_tokens, 2);
    }
}
