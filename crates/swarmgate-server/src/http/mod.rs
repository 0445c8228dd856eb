//! HTTP surface: routes, extractors, middleware, the typed bodies, and
//! the error mapping. Handlers are short: parse into a typed body, call
//! one service function (which asks the decision point), map the result.

mod admin;
mod agents;
mod anthropic;
mod api_keys;
mod auth;
mod clients;
pub mod error;
pub mod extract;
mod gateway;
mod middleware;
mod monitoring;
mod nodes;
mod openai;
pub mod openapi;
pub mod page;
pub mod quota;
pub(crate) mod system;
pub mod time;
pub mod token;
mod usage;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, get, post, put};
use axum::Router;
use swarmgate_gateway::Gateway;
use swarmgate_service::identity::Identity;
use swarmgate_service::Services;

use crate::config::Settings;

pub use clients::ClientBody;
pub use middleware::RequestContext;
pub use system::metrics_response;

/// Bodies of the identity endpoints are small JSON documents.
const MAX_JSON_BODY: usize = 64 * 1024;

/// The path prefixes swarmgate answers itself; no configured route may
/// shadow them, and every other path goes straight to the gateway. Every
/// path of [`router`] is under one of these (a test checks it).
pub const OWN_PREFIXES: &[&str] = &[
    "/auth",
    "/admin",
    "/health",
    "/.well-known",
    "/api/auth",
    "/api/metrics",
    "/nodes",
    "/v1",
    "/usage",
    "/agents",
    "/quota",
    "/metrics",
    "/openapi.json",
];

/// What handlers of the identity API need.
pub type IdentityState = Arc<Identity>;

/// Everything the router serves from. One shared allocation: axum clones
/// the state for every request, and one reference count is cheaper to
/// move between cores than several.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub services: Services,
    pub gateway: Gateway,
    pub settings: Settings,
}

impl AppState {
    pub fn new(services: Services, gateway: Gateway, settings: Settings) -> Self {
        Self(Arc::new(Inner {
            services,
            gateway,
            settings,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FromRef<AppState> for IdentityState {
    fn from_ref(state: &AppState) -> Self {
        state.services.identity.clone()
    }
}

/// The service the server runs. A path under swarmgate's own API goes
/// through the router; any other path can only be the gateway's (routes
/// may not shadow the API), and goes straight to it with its request
/// context, instead of being matched against every route of the API and
/// then falling back to the gateway through two more boxed services.
#[derive(Clone)]
pub struct Front {
    state: AppState,
    router: Router,
}

impl Front {
    pub fn new(state: AppState) -> Self {
        Self {
            router: router(state.clone()),
            state,
        }
    }
}

impl tower::Service<axum::extract::Request> for Front {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        if swarmgate_gateway::routes::is_under(request.uri().path(), OWN_PREFIXES) {
            return Box::pin(tower::Service::call(&mut self.router, request));
        }
        let state = self.state.clone();
        Box::pin(async move {
            Ok(middleware::in_context(request, |request| async move {
                axum::response::IntoResponse::into_response(
                    gateway::proxy(axum::extract::State(state), request).await,
                )
            })
            .await)
        })
    }
}

/// swarmgate's own API; [`Front`] sends it the requests under its paths.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/api/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/api/auth/me", get(auth::me))
        .route("/auth/change-password", post(auth::change_password))
        .route("/auth/token", post(token::token))
        .route("/api/auth/token", post(token::token))
        .route("/auth/introspect", post(token::introspect))
        .route("/auth/revoke", post(token::revoke))
        .route("/auth/nodes/token", post(nodes::token))
        .route("/auth/nodes/{node_id}/revoke", post(nodes::revoke_tokens))
        .route("/api/auth/node/token", post(nodes::token))
        .route("/nodes/register", post(nodes::register))
        .route("/nodes/heartbeat", post(nodes::heartbeat))
        .route("/api/metrics/report", post(nodes::report))
        .route("/api/metrics/nodes", get(nodes::list))
        .route("/auth/verify-permission", post(auth::verify_permission))
        .route("/auth/roles", get(auth::roles))
        .route("/auth/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/auth/api-keys/{id}", delete(api_keys::revoke))
        .route("/admin/users", get(admin::list_users))
        .route(
            "/admin/users/{id}",
            get(admin::get_user)
                .patch(admin::update_user)
                .delete(admin::delete_user),
        )
        .route("/admin/users/{id}/unlock", post(admin::unlock_user))
        .route("/admin/users/{id}/limits", put(admin::set_limits))
        .route("/agents/sessions", post(agents::spawn).get(agents::list))
        .route(
            "/agents/sessions/{id}",
            get(agents::get).delete(agents::release),
        )
        .route("/agents/sessions/{id}/heartbeat", post(agents::heartbeat))
        .route("/quota", get(quota::status))
        .route("/quota/health", get(quota::health))
        .route("/admin/audit", get(admin::audit))
        .route("/admin/clients", post(clients::create).get(clients::list))
        .route("/admin/clients/{id}", delete(clients::delete))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::call))
        .route("/v1/completions", post(openai::call))
        .route("/v1/embeddings", post(openai::call))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/usage", get(usage::usage))
        .route("/metrics", get(system::metrics))
        .route("/health", get(system::health))
        .route("/api/metrics/health", get(monitoring::health))
        .route("/api/metrics/system", get(monitoring::system))
        .route("/api/metrics/application", get(monitoring::application))
        .route("/api/metrics/all", get(monitoring::all))
        .route("/.well-known/jwks.json", get(system::jwks))
        .route(
            "/.well-known/openid-configuration",
            get(system::openid_configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(system::authorization_server_metadata),
        )
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(gateway::proxy)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// The paths of [`super::router`], read from its source.
    fn routed_paths() -> Vec<&'static str> {
        let lines: Vec<&str> = include_str!("mod.rs").lines().map(str::trim).collect();
        lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                line.strip_prefix(".route(\"").or_else(|| {
                    // rustfmt puts a long route's path on the line after.
                    (i > 0 && lines[i - 1] == ".route(")
                        .then(|| line.strip_prefix('"'))
                        .flatten()
                })
            })
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn every_path_of_the_api_is_in_the_openapi_document() {
        let document = super::openapi::document();
        let paths = routed_paths();
        assert!(paths.len() > 50, "{paths:?}");
        for path in paths {
            assert!(
                document.paths.paths.contains_key(path),
                "{path} is not documented"
            );
        }
    }

    #[test]
    fn every_path_of_the_api_is_under_an_own_prefix() {
        let paths = routed_paths();
        assert!(paths.len() > 40, "{paths:?}");
        for path in paths {
            assert!(
                swarmgate_gateway::routes::is_under(path, super::OWN_PREFIXES),
                "{path} is not under OWN_PREFIXES"
            );
        }
    }

    /// A request's future is moved (copied) at each level it nests in,
    /// so a large one costs every request. A cold path of 6.6 KB (Redis
    /// connecting, inside every quota call) once made them 9.6 KB; boxed,
    /// 5.7 KB. Bounded with room for growth, not for another cold path.
    #[test]
    fn a_request_future_stays_small() {
        fn size2<A, B, F: Fn(A, B) -> Fut, Fut>(_: &F) -> usize {
            std::mem::size_of::<Fut>()
        }
        fn size3<A, B, C, F: Fn(A, B, C) -> Fut, Fut>(_: &F) -> usize {
            std::mem::size_of::<Fut>()
        }
        let proxied = size2(&super::gateway::proxy);
        let chat = size3(&super::openai::call);
        assert!(proxied < 7 * 1024, "{proxied} bytes");
        assert!(chat < 7 * 1024, "{chat} bytes");
    }
}
