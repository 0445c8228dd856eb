//! The policy enforcement point: a request on a configured route is
//! authenticated (by the handler), checked against the permission its
//! method needs on that route (with the `{owner}` segment as the resource
//! for `:own` grants), and forwarded with the caller's identity and a signed
//! assertion the upstream can verify offline.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use swarmgate_gateway::forward::Incoming;
use swarmgate_gateway::{
    ForwardError, Forwarder, Model, ModelTable, RouteMatch, RouteTable, Target,
};

use crate::clock::now_ms;
use crate::config::{ProviderProfile, Settings};
use crate::error::{Error, Result};
use crate::identity::{Credential, Identity, Principal};
use crate::quota::{Call, Quota, Ticket};
use crate::usage::UsageRecorder;

/// Tokens reserved on top of the prompt estimate and `max_tokens`: the
/// chat template's own tokens, which the estimate does not see.
const TEMPLATE_TOKENS: u64 = 16;
/// Choices (`n`) one call may ask for.
const MAX_CHOICES: u64 = 128;

pub struct Gateway {
    pub usage: Arc<UsageRecorder>,
    pub quota: Arc<Quota>,
    anthropic: Option<Arc<ProviderProfile>>,
    routes: Arc<RouteTable>,
    models: Arc<ModelTable>,
    forwarder: Forwarder,
}

impl Gateway {
    pub fn new(settings: &Settings, store: swarmgate_store::Store, quota: Arc<Quota>) -> Self {
        Self {
            usage: Arc::new(UsageRecorder::new(store)),
            quota,
            anthropic: settings.anthropic.clone(),
            routes: settings.routes.clone(),
            models: settings.models.clone(),
            forwarder: Forwarder::new(
                settings.gateway.trusted_proxies.clone(),
                settings.gateway.max_body_bytes,
            ),
        }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Decides, then forwards.
    pub async fn proxy(
        &self,
        identity: &Identity,
        principal: &Principal,
        matched: RouteMatch<'_>,
        incoming: Incoming,
        started: Option<Instant>,
    ) -> Result<Response<Body>> {
        let route = matched.route;
        let Some(permission) = route.permission_for(&incoming.method) else {
            return Err(Error::MethodNotAllowed);
        };
        let resource = matched
            .owner
            .as_ref()
            .map(|owner| format!("{}:{owner}", route.name));
        if !identity.check_permission(principal, permission, resource.as_deref())? {
            return Err(Error::Forbidden(match &resource {
                Some(r) => format!("missing permission {permission} on {r}"),
                None => format!("missing permission {permission}"),
            }));
        }
        let who = who(identity, principal, &route.name)?;
        let ticket = self.quota.admit(principal, Call::Request).await?;
        let target = Target {
            name: &route.name,
            pool: &route.upstreams,
            timeout: route.timeout,
            path: matched.upstream_path,
            credential: None,
            external: false,
        };
        let response = self
            .send(target, incoming, &who, route.label.clone(), started)
            .await?;
        Ok(held_until_done(response, ticket))
    }

    /// Forwards, tags the response with its label for the request metrics
    /// (`gateway:ROUTE`, `gateway:model:NAME`, `gateway:provider:NAME`),
    /// and records the gateway's overhead: the time to the response head
    /// minus the time measured around the upstream call.
    async fn send(
        &self,
        target: Target<'_>,
        incoming: Incoming,
        who: &swarmgate_gateway::Identity<'_>,
        label: std::sync::Arc<str>,
        started: Option<Instant>,
    ) -> Result<Response<Body>> {
        let upstream_started = Instant::now();
        let result = self.forwarder.forward(target, incoming, who, now_ms).await;
        let upstream = upstream_started.elapsed();
        let mut response = result.map_err(forward_error)?;
        response
            .extensions_mut()
            .insert(crate::http::RouteLabel(label));
        if let Some(started) = started {
            crate::metrics::record_gateway_overhead(
                started.elapsed().saturating_sub(upstream).as_secs_f64(),
            );
        }
        Ok(response)
    }

    /// The most tokens a call can cost: the prompt (estimated, plus the
    /// template's share) and every token it may generate (`max_tokens`, or
    /// the configured default when it names none; nothing for embeddings).
    fn worst_case(
        &self,
        body: &serde_json::Value,
        path: &str,
        prompt_estimate: u64,
    ) -> Result<u64> {
        let completion = if path.ends_with("/embeddings") {
            0
        } else {
            body["max_completion_tokens"]
                .as_u64()
                .or_else(|| body["max_tokens"].as_u64())
                .unwrap_or(self.quota.settings().default_max_tokens)
        };
        let choices = match &body["n"] {
            serde_json::Value::Null => 1,
            n => n
                .as_u64()
                .filter(|n| (1..=MAX_CHOICES).contains(n))
                .ok_or_else(|| {
                    swarmgate_core::ValidationError::new(
                        "n",
                        format!("must be a whole number from 1 to {MAX_CHOICES}"),
                    )
                })?,
        };
        // Beyond any limit anyway; kept finite so no meter overflows.
        Ok(prompt_estimate
            .saturating_add(TEMPLATE_TOKENS)
            .saturating_add(completion.saturating_mul(choices))
            .min(swarmgate_core::limits::MAX_LIMIT))
    }

    pub fn models(&self) -> &ModelTable {
        &self.models
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.forwarder.max_body_bytes()
    }

    /// Whether `principal` may call `model`: the permission
    /// `models.NAME.invoke`, or `inference.invoke` (so `inference.*` grants
    /// every model, as `models.*` does), and, for a key restricted to a
    /// list of models, that list.
    pub fn may_use(&self, principal: &Principal, model: &Model) -> bool {
        self.may_use_named(principal, &model.name, model.permission())
    }

    /// [`may_use`](Self::may_use) for a model known only by name (one
    /// served by a provider profile).
    pub fn may_use_named(&self, principal: &Principal, name: &str, permission: &str) -> bool {
        let permitted =
            principal.allows(permission, None) || principal.allows("inference.invoke", None);
        let listed = match &principal.credential {
            Credential::ApiKey {
                models: Some(list), ..
            } => list.iter().any(|m| m == name),
            Credential::Agent { claims, .. } => claims
                .models
                .as_ref()
                .is_none_or(|list| list.iter().any(|m| m == name)),
            _ => true,
        };
        permitted && listed
    }

    /// A provider call that generates nothing (Anthropic's
    /// `count_tokens`): counted against the caller's and the profile's
    /// request limits, no tokens reserved or metered.
    pub async fn call_provider_plain(
        &self,
        principal: &Principal,
        profile: &ProviderProfile,
        incoming: Incoming,
        started: Option<Instant>,
    ) -> Result<Response<Body>> {
        let ticket = self
            .quota
            .admit_through(principal, Call::Request, &profile.name)
            .await?;
        let upstream = &profile.upstream;
        let target = target_of(upstream, &incoming, true);
        let response = self
            .send(target, incoming, &nobody(), upstream.label.clone(), started)
            .await?;
        provider_accepted(&response, &upstream.name)?;
        Ok(held_until_done(response, ticket))
    }

    /// The Anthropic profile, when `ANTHROPIC_API_KEY` (or
    /// `CLAUDE_API_KEY`) is set.
    pub fn anthropic(&self) -> Option<&ProviderProfile> {
        self.anthropic.as_deref()
    }

    /// Forwards an LLM call to its upstream and meters the response. Its
    /// worst case is reserved against every token limit that applies (and
    /// the provider profile's, if it goes through one) and settled to the
    /// usage the response reports. A streamed OpenAI call is made to report
    /// its usage (`stream_options.include_usage`); when the caller had not
    /// asked for it, that chunk is read and removed on the way back.
    /// Anthropic's events carry usage already and pass through untouched.
    pub async fn call_model(
        &self,
        identity: &Identity,
        principal: &Principal,
        call: LlmCall<'_>,
    ) -> Result<Response<Body>> {
        let LlmCall {
            model,
            dialect,
            mut incoming,
            mut body,
            started,
        } = call;
        let streamed = body["stream"] == serde_json::json!(true);
        let asked = body["stream_options"]["include_usage"] == serde_json::json!(true);
        let strip_usage = dialect == Dialect::OpenAi && streamed && !asked;
        if strip_usage {
            if !body["stream_options"].is_object() {
                body["stream_options"] = serde_json::json!({});
            }
            body["stream_options"]["include_usage"] = serde_json::json!(true);
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
        // The body is rewritten whole: its length is now known, and any
        // framing the caller used no longer applies.
        incoming
            .headers
            .remove(axum::http::header::TRANSFER_ENCODING);
        incoming.headers.insert(
            axum::http::header::CONTENT_LENGTH,
            axum::http::HeaderValue::from(bytes.len()),
        );
        incoming.body = Body::from(bytes);
        // A compressed reply could not be read for its usage.
        incoming.headers.insert(
            axum::http::header::ACCEPT_ENCODING,
            axum::http::HeaderValue::from_static("identity"),
        );
        if dialect == Dialect::Anthropic && !incoming.headers.contains_key(ANTHROPIC_VERSION) {
            incoming.headers.insert(
                ANTHROPIC_VERSION,
                axum::http::HeaderValue::from_static("2023-06-01"),
            );
        }
        let prompt_estimate = swarmgate_gateway::usage::estimate_prompt(&body);
        let call = Call::Llm {
            reserve: self.worst_case(&body, incoming.uri.path(), prompt_estimate)?,
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
            Dialect::Anthropic => body["model"].as_str().unwrap_or_default().to_string(),
        };

        let external = dialect == Dialect::Anthropic;
        let who = if external {
            nobody()
        } else {
            who(identity, principal, &model.name)?
        };
        let target = target_of(model, &incoming, external);
        let mut response = self
            .send(target, incoming, &who, model.label.clone(), started)
            .await?;
        if external {
            provider_accepted(&response, &model.name)?;
        }
        ticket.headers.apply(response.headers_mut());
        if !response.status().is_success() {
            // Nothing was generated: the reservation goes back in full.
            return Ok(response);
        }
        let sse = response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let (mut parts, inner) = response.into_parts();
        if sse {
            // Events are re-framed on the way (usage chunk removed, a final
            // event terminated), so the upstream's length may not hold.
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        }
        let recorder = self.usage.clone();
        let user_id = principal.user_id.clone();
        let key_id = match &principal.credential {
            Credential::ApiKey { key_id, .. } => Some(key_id.clone()),
            Credential::Agent { agent_id, .. } => Some(format!("agent:{agent_id}")),
            _ => None,
        };
        let report = Box::new(move |u: swarmgate_gateway::usage::Usage| {
            ticket.settle(Some(u.total_tokens));
            metrics::counter!("swarmgate_llm_tokens_total", "model" => model_name.clone(), "kind" => "prompt")
                .increment(u.prompt_tokens);
            metrics::counter!("swarmgate_llm_tokens_total", "model" => model_name.clone(), "kind" => "completion")
                .increment(u.completion_tokens);
            recorder.record(swarmgate_store::UsageRecord {
                at: crate::clock::now_secs(),
                user_id,
                key_id,
                model: model_name,
                prompt_tokens: u.prompt_tokens as i64,
                completion_tokens: u.completion_tokens as i64,
                total_tokens: u.total_tokens as i64,
                estimated: u.estimated,
                streamed,
            });
        });
        let metered = swarmgate_gateway::usage::Metered::new(
            inner,
            sse,
            strip_usage,
            prompt_estimate,
            report,
        );
        Ok(Response::from_parts(parts, Body::new(metered)))
    }
}

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
    /// The parsed body; what is sent upstream is written back from it.
    pub body: serde_json::Value,
    pub started: Option<Instant>,
}

/// The response, holding what `ticket` holds (concurrency slots) until its
/// body is done; as it is when the ticket holds nothing.
fn held_until_done(response: Response<Body>, ticket: Ticket) -> Response<Body> {
    if !ticket.is_metered() {
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(swarmgate_gateway::guarded::Guarded::new(body, ticket)),
    )
}

/// What a third party is told of the caller: nothing (see
/// `Target::external`).
fn nobody() -> swarmgate_gateway::Identity<'static> {
    swarmgate_gateway::Identity {
        subject: "",
        role: "",
        auth_method: "",
        assertion: axum::http::HeaderValue::from_static(""),
    }
}

/// A provider's 401 or 403 is about the gateway's key, not the caller's
/// credential: a 502 for the caller, an error for the operator's log.
fn provider_accepted(response: &Response<Body>, provider: &str) -> Result<()> {
    let status = response.status().as_u16();
    if matches!(status, 401 | 403) {
        tracing::error!(status, provider, "the provider refused the gateway's key");
        return Err(Error::ProviderAuth(status));
    }
    Ok(())
}

/// The identity headers for an upstream of `audience` (a route or model).
fn who<'p>(
    identity: &Identity,
    principal: &'p Principal,
    audience: &str,
) -> Result<swarmgate_gateway::Identity<'p>> {
    Ok(swarmgate_gateway::Identity {
        subject: &principal.user_id,
        role: &principal.role.name,
        auth_method: principal.auth_method().as_str(),
        assertion: identity.issue_assertion(principal, audience)?,
    })
}

/// Where a call to `model` goes: its upstreams, at the path asked for.
fn target_of<'m>(model: &'m Model, incoming: &Incoming, external: bool) -> Target<'m> {
    Target {
        name: &model.name,
        pool: &model.upstreams,
        timeout: model.timeout,
        path: incoming.uri.path().to_string(),
        credential: model.credential.clone(),
        external,
    }
}

fn forward_error(e: ForwardError) -> Error {
    match e {
        ForwardError::NoUpstream(name) => Error::Unavailable {
            component: "upstream",
            detail: format!("every upstream of {name} is ejected"),
        },
        ForwardError::Timeout(after) => Error::GatewayTimeout(after),
        ForwardError::TooLarge(_) => Error::PayloadTooLarge,
        ForwardError::Connect(detail) | ForwardError::Upstream(detail) => Error::BadGateway(detail),
    }
}
