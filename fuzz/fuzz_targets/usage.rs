//! The usage meter over a JSON or SSE response body, and the prompt
//! estimate of a request body.
//!
//! Input: a flags byte (bit 0: SSE; bit 1: strip the usage chunk; the
//! rest: the prompt estimate), a byte giving the size of the chunks the
//! body arrives in, then the body.
//!
//! Properties: the meter reports exactly once; it relays the body
//! unchanged (an SSE body cut off mid-event gets the blank line ending
//! the event), and only removes events when asked to strip the usage
//! chunk; a count it did not estimate is never more than the sum of every
//! number written in the body, and an estimate never more than that plus
//! one token per byte of the body; an estimated total is prompt plus
//! completion; a request body's prompt estimate is at most one token per
//! byte. The same bytes read as an LLM call's body: refused exactly when
//! they are not a JSON object or name a top-level field twice, read with
//! the model and stream flag a JSON parser sees, counted as the tree is;
//! asking for usage changes nothing but `stream_options`.

#![no_main]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use swarmgate_gateway::call_body::{BodyError, CallBody};
use swarmgate_gateway::usage::{estimate_prompt, Metered, Usage};

/// A body whose chunks are all there already.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// Every run of ASCII digits in `body` read as a number, summed: at least
/// any count a JSON integer in it can give, and any sum of distinct ones.
fn numbers_sum(body: &[u8]) -> u64 {
    body.split(|b| !b.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .map(|run| {
            run.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            })
        })
        .fold(0u64, u64::saturating_add)
}

fuzz_target!(|data: &[u8]| {
    let [flags, chunk, body @ ..] = data else {
        return;
    };
    let (sse, strip) = (flags & 1 != 0, flags & 2 != 0);
    let prompt_estimate = u64::from(flags >> 2);
    let size = usize::from(*chunk).max(1);
    let chunks = body.chunks(size).map(Bytes::copy_from_slice).collect();
    let reports: Arc<Mutex<Vec<Usage>>> = Arc::default();
    let seen = reports.clone();
    let mut metered = Metered::new(
        Chunks(chunks),
        sse,
        strip,
        prompt_estimate,
        Box::new(move |u| seen.lock().expect("not poisoned").push(u)),
    );
    let mut out = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match Pin::new(&mut metered).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                out.extend_from_slice(frame.data_ref().expect("only data frames"));
            }
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(e))) => match e {},
            Poll::Pending => panic!("a body that is all there never waits"),
        }
    }
    drop(metered);
    let reports = reports.lock().expect("not poisoned");
    let [usage] = reports.as_slice() else {
        panic!("reported {} times", reports.len());
    };
    let usage = *usage;

    if !strip || !sse {
        // A stream cut off mid-event is relayed with (some of) the blank
        // line that ends the event, so the client can read it.
        let added = out.strip_prefix(body).unwrap_or_else(|| {
            panic!(
                "relayed changed: {:?} became {:?}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(&out)
            )
        });
        assert!(
            added.is_empty() || (sse && (added == b"\n" || added == b"\n\n")),
            "{added:?} added"
        );
    } else {
        assert!(out.len() <= body.len() + 2, "relayed more than came");
    }

    let numbers = numbers_sum(body);
    let bytes = body.len() as u64;
    if usage.estimated {
        assert!(
            usage.prompt_tokens <= numbers.max(prompt_estimate),
            "{usage:?}"
        );
        assert!(
            usage.completion_tokens <= numbers.saturating_add(bytes),
            "{usage:?}"
        );
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens.saturating_add(usage.completion_tokens),
            "{usage:?}"
        );
    } else {
        for n in [
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
        ] {
            assert!(n <= numbers, "{usage:?} from numbers summing to {numbers}");
        }
    }

    let tree = serde_json::from_slice::<Value>(body).ok();
    if let Some(request) = &tree {
        assert!(estimate_prompt(request) <= bytes);
    }
    call_body(body, tree.as_ref());
});

/// The properties of [`CallBody`] over `body`, against the tree a JSON
/// parser makes of it (`None`: not JSON).
fn call_body(body: &[u8], tree: Option<&Value>) {
    let read = CallBody::parse(Bytes::copy_from_slice(body));
    let (call, object) = match (read, tree) {
        (Ok(call), Some(Value::Object(object))) => (call, object),
        (Err(BodyError::NotJson), None) | (Err(BodyError::NotAnObject), Some(_)) => return,
        (Err(BodyError::Duplicate(_)), Some(Value::Object(_))) => return,
        (read, tree) => panic!("{read:?} for {tree:?}"),
    };
    assert!(call.prompt_estimate <= body.len() as u64);
    assert_eq!(call.model.as_deref(), object.get("model").and_then(Value::as_str));
    assert_eq!(call.stream, object.get("stream") == Some(&Value::Bool(true)));
    let asked = call.with_usage_asked().expect("an object can ask for usage");
    let Ok(Value::Object(mut out)) = serde_json::from_slice::<Value>(&asked) else {
        panic!("not a JSON object: {:?}", String::from_utf8_lossy(&asked));
    };
    let options = out.remove("stream_options");
    assert_eq!(
        options.as_ref().and_then(|o| o.get("include_usage")),
        Some(&Value::Bool(true))
    );
    let mut before = object.clone();
    before.remove("stream_options");
    assert_eq!(out, before, "fields other than stream_options changed");
}
