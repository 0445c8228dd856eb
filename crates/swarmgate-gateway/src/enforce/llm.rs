//! LLM calls through the gateway: the body rewritten for the upstream (a
//! streamed OpenAI call made to report its usage), the worst case reserved
//! against every token limit, and the response metered on its way back
//! and settled to what it really used.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::Response;
use swarmgate_service::quota::{Call, Ticket};
use swarmgate_service::{Credential, Principal};

use super::{apply_rate_headers, nobody, provider_accepted, target_of, Gateway, Result};
use crate::body::Body;
use crate::call_body::CallBody;
use crate::forward::Incoming;
use crate::models::Model;

/// Tokens reserved on top of the prompt estimate and `max_tokens`: the
/// chat template's own tokens, which the estimate does not see.
const TEMPLATE_TOKENS: u64 = 16;
/// Choices (`n`) one call may ask for.
const MAX_CHOICES: u64 = 128;
const ANTHROPIC_VERSION: &str = "anthropic-version";

/// Which API an LLM call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    OpenAi,
    /// Anthropic's `/v1/messages`.
    Anthropic,
}

/// One LLM call: where it goes, in which dialect, and the request.
pub struct LlmCall<'a> {
    pub model: &'a Model,
    pub dialect: Dialect,
    pub incoming: Incoming,
    /// The body and what was read of it; it goes upstream as it came, with
    /// at most the usage asked for.
    pub body: CallBody,
    pub started: Option<Instant>,
}

impl Gateway {
    /// Forwards an LLM call to its upstream and meters the response. Its
    /// worst case is reserved against every token limit that applies (and
    /// the provider profile's, if it goes through one) and settled to the
    /// usage the response reports. A streamed OpenAI call is made to report
    /// its usage (`stream_options.include_usage`); when the caller had not
    /// asked for it, that chunk is read and removed on the way back.
    /// Anthropic's events carry usage already and pass through untouched.
    pub async fn call_model(
        &self,
        principal: &Principal,
        call: LlmCall<'_>,
    ) -> Result<Response<Body>> {
        let LlmCall {
            model,
            dialect,
            mut incoming,
            body,
            started,
        } = call;
        let rewritten = rewrite_for_upstream(&mut incoming, &body, dialect)?;
        let prompt_estimate = body.prompt_estimate;
        let call = Call::Llm {
            reserve: self.worst_case(&body, incoming.uri.path())?,
        };
        let ticket = match dialect {
            Dialect::OpenAi => self.quota.admit(principal, call).await?,
            Dialect::Anthropic => {
                self.quota
                    .admit_through(principal, call, &model.name)
                    .await?
            }
        };
        // Usage is kept by the model the caller asked for.
        let model_name = match dialect {
            Dialect::OpenAi => model.name.clone(),
            Dialect::Anthropic => body.model.clone().unwrap_or_default(),
        };
        let external = dialect == Dialect::Anthropic;
        let who = if external {
            nobody()
        } else {
            self.who(principal, &model.name)?
        };
        let target = target_of(model, &incoming, external);
        let mut response = self
            .send(target, incoming, &who, model.label.clone(), started)
            .await?;
        if external {
            provider_accepted(&response, &model.name)?;
        }
        apply_rate_headers(response.headers_mut(), &ticket.headers);
        if !response.status().is_success() {
            // Nothing was generated: the reservation goes back in full.
            return Ok(response);
        }
        // A provider's calls are counted by the model the caller named.
        let tokens = match dialect {
            Dialect::OpenAi => model.token_counters().clone(),
            Dialect::Anthropic => crate::models::token_counters(&model_name),
        };
        let meter = Meter {
            principal,
            ticket,
            tokens,
            model_name,
            streamed: rewritten.streamed,
            strip_usage: rewritten.strip_usage,
            prompt_estimate,
        };
        Ok(self.metered(response, meter))
    }

    /// The response with its body metered: when it ends, the ticket is
    /// settled to the tokens used and the usage recorded.
    fn metered(&self, response: Response<Body>, meter: Meter<'_>) -> Response<Body> {
        let sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let (mut parts, inner) = response.into_parts();
        if sse {
            // Events are re-framed on the way (usage chunk removed, a final
            // event terminated), so the upstream's length may not hold.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let Meter {
            principal,
            ticket,
            tokens: (prompt, completion),
            model_name,
            streamed,
            strip_usage,
            prompt_estimate,
        } = meter;
        let usage = self.usage.clone();
        let clock = self.clock.clone();
        let user_id = principal.user_id.clone();
        let key_id = match &principal.credential {
            Credential::ApiKey { key_id, .. } => Some(key_id.clone()),
            Credential::Agent { agent_id, .. } => Some(format!("agent:{agent_id}")),
            _ => None,
        };
        let report = Box::new(move |u: crate::usage::Usage| {
            ticket.settle(Some(u.total_tokens));
            prompt.increment(u.prompt_tokens);
            completion.increment(u.completion_tokens);
            usage.record(swarmgate_store::UsageRecord {
                at: clock.now_secs(),
                user_id,
                key_id,
                model: model_name,
                prompt_tokens: i64::try_from(u.prompt_tokens).unwrap_or(i64::MAX),
                completion_tokens: i64::try_from(u.completion_tokens).unwrap_or(i64::MAX),
                total_tokens: i64::try_from(u.total_tokens).unwrap_or(i64::MAX),
                estimated: u.estimated,
                streamed,
            });
        });
        let metered = crate::usage::Metered::new(inner, sse, strip_usage, prompt_estimate, report);
        Response::from_parts(parts, Body::new(metered))
    }

    /// The most tokens a call can cost: the prompt (estimated, plus the
    /// template's share) and every token it may generate (`max_tokens`, or
    /// the configured default when it names none; nothing for embeddings).
    fn worst_case(&self, body: &CallBody, path: &str) -> Result<u64> {
        let completion = if path.ends_with("/embeddings") {
            0
        } else {
            body.max_completion_tokens
                .or(body.max_tokens)
                .unwrap_or(self.quota.settings().default_max_tokens)
        };
        let choices = match &body.n {
            None | Some(serde_json::Value::Null) => 1,
            Some(n) => n
                .as_u64()
                .filter(|n| (1..=MAX_CHOICES).contains(n))
                .ok_or_else(|| {
                    swarmgate_service::Error::from(swarmgate_core::ValidationError::new(
                        "n",
                        format!("must be a whole number from 1 to {MAX_CHOICES}"),
                    ))
                })?,
        };
        // Beyond any limit anyway; kept finite so no meter overflows.
        Ok(body
            .prompt_estimate
            .saturating_add(TEMPLATE_TOKENS)
            .saturating_add(completion.saturating_mul(choices))
            .min(swarmgate_core::limits::MAX_LIMIT))
    }
}

/// What metering a response needs to know of its call.
struct Meter<'a> {
    principal: &'a Principal,
    ticket: Ticket,
    /// `swarmgate_llm_tokens_total`: prompt, completion.
    tokens: (metrics::Counter, metrics::Counter),
    model_name: String,
    streamed: bool,
    strip_usage: bool,
    prompt_estimate: u64,
}

/// How the body of an LLM call was rewritten for its upstream.
struct Rewritten {
    streamed: bool,
    /// The caller did not ask for the usage chunk the gateway asked for.
    strip_usage: bool,
}

/// Sets the call's body for its upstream (a streamed OpenAI call is made to
/// report its usage) and the headers that go with it.
fn rewrite_for_upstream(
    incoming: &mut Incoming,
    body: &CallBody,
    dialect: Dialect,
) -> Result<Rewritten> {
    let streamed = body.stream;
    let strip_usage = dialect == Dialect::OpenAi && streamed && !body.asked_for_usage();
    let bytes = if strip_usage {
        body.with_usage_asked()
            .map_err(|e| swarmgate_service::Error::BadRequest(e.to_string()))?
    } else {
        body.bytes().clone()
    };
    // The body was read whole: its length is known, and any framing the
    // caller used no longer applies.
    incoming.headers.remove(header::TRANSFER_ENCODING);
    incoming
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    incoming.body = Body::from(bytes);
    // A compressed reply could not be read for its usage.
    incoming.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if dialect == Dialect::Anthropic && !incoming.headers.contains_key(ANTHROPIC_VERSION) {
        incoming
            .headers
            .insert(ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
    }
    Ok(Rewritten {
        streamed,
        strip_usage,
    })
}
