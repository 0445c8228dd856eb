//! The policy enforcement point: a request on a configured route, or an
//! LLM call, is decided by the service crate's decision point and quota
//! coordinator, then forwarded with the caller's identity and a signed
//! assertion the upstream can verify offline. LLM responses are metered
//! on their way back and settled against the reservation.

mod llm;

pub use llm::{Dialect, LlmCall};

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue};
use http::Response;
use swarmgate_service::authz::{Action, Authz, Decision, Resource};
use swarmgate_service::identity::Identity;
use swarmgate_service::quota::{Call, Quota, RateHeaders, Ticket};
use swarmgate_service::usage::Usage;
use swarmgate_service::{Principal, Services, SharedClock};

use crate::body::Body;
use crate::forward::{ForwardError, Forwarder, Incoming, Target};
use crate::models::{Model, ModelTable, ProviderProfile};
use crate::routes::{RouteMatch, RouteTable};

/// Why the gateway did not forward, or what went wrong on the way.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Refused by a service: not allowed, over a limit, state unreachable.
    #[error(transparent)]
    Service(#[from] swarmgate_service::Error),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("this method is not served on this route")]
    MethodNotAllowed,
    /// A hosted provider refused the gateway's own key: the operator's
    /// problem, not the caller's credential.
    #[error("the provider refused the gateway's credentials (its status {0}); the operator must check the provider key")]
    ProviderAuth(u16),
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

/// Set on a response by the gateway: the route label for metrics, made
/// once per route.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

/// What the gateway is built from besides the services.
pub struct Tables {
    pub routes: Arc<RouteTable>,
    pub models: Arc<ModelTable>,
    pub anthropic: Option<Arc<ProviderProfile>>,
    pub forwarder: Forwarder,
}

pub struct Gateway {
    identity: Arc<Identity>,
    authz: Arc<Authz>,
    quota: Arc<Quota>,
    usage: Arc<Usage>,
    clock: SharedClock,
    routes: Arc<RouteTable>,
    models: Arc<ModelTable>,
    anthropic: Option<Arc<ProviderProfile>>,
    forwarder: Forwarder,
    /// Signed assertions, reused for half their 60 s life. Keyed by ids
    /// swarmgate issued and configured names (user, credential, role,
    /// audience), never by what a caller sends, so hashed with Fx rather
    /// than SipHash: it is looked up on every proxied request.
    assertions: moka::sync::Cache<String, HeaderValue, rustc_hash::FxBuildHasher>,
}

impl Gateway {
    pub fn new(services: &Services, tables: Tables) -> Self {
        Self {
            identity: services.identity.clone(),
            authz: services.authz.clone(),
            quota: services.quota.clone(),
            usage: services.usage.clone(),
            clock: services.clock.clone(),
            routes: tables.routes,
            models: tables.models,
            anthropic: tables.anthropic,
            forwarder: tables.forwarder,
            assertions: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(
                    swarmgate_tokens::ASSERTION_TTL_SECS.unsigned_abs() / 2,
                ))
                .build_with_hasher(rustc_hash::FxBuildHasher),
        }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn models(&self) -> &ModelTable {
        &self.models
    }

    /// The clock upstream health is judged by.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.forwarder.max_body_bytes()
    }

    /// The Anthropic profile, when `ANTHROPIC_API_KEY` (or
    /// `CLAUDE_API_KEY`) is set.
    pub fn anthropic(&self) -> Option<&ProviderProfile> {
        self.anthropic.as_deref()
    }

    /// Decides, then forwards.
    pub async fn proxy(
        &self,
        principal: &Principal,
        matched: RouteMatch<'_>,
        incoming: Incoming,
        started: Option<Instant>,
    ) -> Result<Response<Body>> {
        let route = matched.route;
        let Some(permission) = route.permission_for(&incoming.method) else {
            return Err(GatewayError::MethodNotAllowed);
        };
        let resource = matched
            .owner
            .as_ref()
            .map(|owner| format!("{}:{owner}", route.name));
        // An owner segment no resource could be named by is a 422.
        if let Some(resource) = &resource {
            swarmgate_service::authz::validate_resource(resource)?;
        }
        self.authz
            .authorize(
                principal,
                Action::Permission(permission),
                Resource::Route(resource.as_deref()),
            )
            .await
            .require()?;
        let who = self.who(principal, &route.name)?;
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

    /// The one gate in front of every model: whether `principal` may call
    /// the model `name` (its permission `models.NAME.invoke`, or
    /// `inference.invoke`; for a key or agent limited to a list of models,
    /// that list). A refusal is counted by the decision point.
    pub async fn may_invoke(
        &self,
        principal: &Principal,
        name: &str,
        permission: &str,
    ) -> Decision {
        let action = Action::InvokeModel {
            model: name,
            permission,
        };
        self.authz.authorize(principal, action, Resource::Any).await
    }

    /// The configured models `principal` may call (for `/v1/models`).
    pub async fn visible_models(&self, principal: &Principal) -> Vec<&Model> {
        let mut visible = Vec::new();
        for model in self.models.iter() {
            let invoke = Action::InvokeModel {
                model: &model.name,
                permission: model.permission(),
            };
            let decision = self
                .authz
                .authorize(principal, Action::View(&invoke), Resource::Any)
                .await;
            if decision.allowed() {
                visible.push(model);
            }
        }
        visible
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

    /// Forwards, tags the response with its label for the request metrics
    /// (`gateway:ROUTE`, `gateway:model:NAME`, `gateway:provider:NAME`),
    /// and records the gateway's overhead: the time to the response head
    /// minus the time measured around the upstream call.
    async fn send(
        &self,
        target: Target<'_>,
        incoming: Incoming,
        who: &crate::forward::Identity<'_>,
        label: Arc<str>,
        started: Option<Instant>,
    ) -> Result<Response<Body>> {
        let upstream_started = Instant::now();
        let clock = &self.clock;
        let result = self
            .forwarder
            .forward(target, incoming, who, || clock.now_ms())
            .await;
        let upstream = upstream_started.elapsed();
        let mut response = result?;
        response.extensions_mut().insert(RouteLabel(label));
        if let Some(started) = started {
            record_overhead(started.elapsed().saturating_sub(upstream).as_secs_f64());
        }
        Ok(response)
    }

    /// The identity headers for an upstream of `audience` (a route or
    /// model), with an assertion reused while it has half its life left:
    /// signing costs tens of microseconds, more than the rest of a proxied
    /// request.
    fn who<'p>(
        &self,
        principal: &'p Principal,
        audience: &str,
    ) -> Result<crate::forward::Identity<'p>> {
        // Joined, not `format!`ted: that was a measurable share of a
        // proxied call.
        let cache_key = [
            principal.user_id.as_str(),
            principal.credential_id(),
            principal.role.name.as_str(),
            audience,
        ]
        .join("\u{0}");
        let assertion = match self.assertions.get(&cache_key) {
            Some(assertion) => assertion,
            None => {
                let token = self.identity.sign_assertion(principal, audience)?;
                let value = HeaderValue::try_from(token).map_err(|e| {
                    swarmgate_service::Error::Internal(format!(
                        "assertion is not a header value: {e}"
                    ))
                })?;
                self.assertions.insert(cache_key, value.clone());
                value
            }
        };
        Ok(crate::forward::Identity {
            subject: &principal.user_id,
            role: &principal.role.name,
            auth_method: principal.auth_method().as_str(),
            assertion,
        })
    }
}

/// OpenAI's rate-limit headers: the tightest request and token limits.
pub fn apply_rate_headers(headers: &mut HeaderMap, rate: &RateHeaders) {
    let pairs = [
        (
            rate.requests,
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
        ),
        (
            rate.tokens,
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
        ),
    ];
    for (value, limit_name, remaining_name) in pairs {
        if let Some((limit, remaining)) = value {
            headers.insert(limit_name, limit.into());
            headers.insert(remaining_name, remaining.into());
        }
    }
}

/// `swarmgate_gateway_overhead_seconds`, its one series kept per thread:
/// the facade's macro hashes its name on every call.
fn record_overhead(seconds: f64) {
    thread_local! {
        static OVERHEAD: metrics::Histogram = metrics::histogram!("swarmgate_gateway_overhead_seconds");
    }
    OVERHEAD.with(|overhead| overhead.record(seconds));
}

/// The response, holding what `ticket` holds (concurrency slots) until its
/// body is done; as it is when the ticket holds nothing.
fn held_until_done(response: Response<Body>, ticket: Ticket) -> Response<Body> {
    if !ticket.is_metered() {
        return response;
    }
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::new(crate::guarded::Guarded::new(body, ticket)))
}

/// What a third party is told of the caller: nothing (see
/// `Target::external`).
fn nobody() -> crate::forward::Identity<'static> {
    crate::forward::Identity {
        subject: "",
        role: "",
        auth_method: "",
        assertion: HeaderValue::from_static(""),
    }
}

/// A provider's 401 or 403 is about the gateway's key, not the caller's
/// credential: a 502 for the caller, an error for the operator's log.
fn provider_accepted(response: &Response<Body>, provider: &str) -> Result<()> {
    let status = response.status().as_u16();
    if matches!(status, 401 | 403) {
        tracing::error!(status, provider, "the provider refused the gateway's key");
        return Err(GatewayError::ProviderAuth(status));
    }
    Ok(())
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
