//! The fallback handler: any path that is not swarmgate's own API is looked
//! up in the route table and proxied.

use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use swarmgate_gateway::forward::Incoming;
use swarmgate_gateway::RouteLabel;
use swarmgate_service::{Error, Principal};

use crate::http::error::{ApiError, ApiResult as Result};
use crate::http::{AppState, RequestContext};

pub async fn proxy(State(state): State<AppState>, request: Request) -> Result<Response> {
    if swarmgate_gateway::routes::has_dot_segments(request.uri().path()) {
        return Err(Error::BadRequest("paths with . or .. segments are not proxied".into()).into());
    }
    let matched = state.gateway.routes().find(request.uri().path());
    // Every answer once the route is known (a 401, a 403, a 429, an
    // upstream's error) is counted under the route, not as unmatched.
    let label = matched.as_ref().map(|m| m.route.label.clone());
    let answer = forward(&state, matched, request).await;
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    if let Some(label) = label {
        let extensions = response.extensions_mut();
        if extensions.get::<RouteLabel>().is_none() {
            extensions.insert(RouteLabel(label));
        }
    }
    Ok(response)
}

async fn forward(
    state: &AppState,
    matched: Option<swarmgate_gateway::routes::RouteMatch<'_>>,
    request: Request,
) -> std::result::Result<Response, ApiError> {
    // Authenticate before saying whether the path is a route, so an
    // anonymous caller cannot tell configured routes from unknown paths.
    let (mut parts, body) = request.into_parts();
    let principal = Principal::from_request_parts(&mut parts, state).await?;
    let Some(matched) = matched else {
        return Err(Error::NotFound.into());
    };
    let (peer, started) = RequestContext::peer_and_start(&parts.extensions);
    let incoming = Incoming {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: swarmgate_gateway::Body::new(body),
        peer,
    };
    let response = state
        .gateway
        .proxy(&principal, matched, incoming, started)
        .await?;
    Ok(response.map(axum::body::Body::new))
}
