//! The fallback handler: any path that is not swarmgate's own API is looked
//! up in the route table and proxied.

use axum::extract::{FromRequestParts, Request, State};
use axum::response::Response;
use swarmgate_gateway::forward::Incoming;
use swarmgate_service::{Error, Principal};

use crate::http::error::ApiResult as Result;
use crate::http::{AppState, RequestContext};

pub async fn proxy(State(state): State<AppState>, request: Request) -> Result<Response> {
    if swarmgate_gateway::routes::has_dot_segments(request.uri().path()) {
        return Err(Error::BadRequest("paths with . or .. segments are not proxied".into()).into());
    }
    // Authenticate before looking the path up, so an anonymous caller
    // cannot tell configured routes from unknown paths.
    let (mut parts, body) = request.into_parts();
    let principal = Principal::from_request_parts(&mut parts, &state).await?;
    let Some(matched) = state.gateway.routes().find(parts.uri.path()) else {
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
