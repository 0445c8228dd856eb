//! Forwarding one request to an upstream of its route: credentials and
//! hop-by-hop headers stripped, `X-Forwarded-*` and identity headers set,
//! bodies streamed both ways over pooled keep-alive connections.
//!
//! A request that never reached an upstream (the connection failed) is
//! retried on the next one when its body can be sent again: no body, or a
//! small one (up to `REPLAYABLE_BYTES`, read first). A larger body streams
//! through and is not retried.

use std::net::IpAddr;
use std::time::Duration;

use crate::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::upstream::UpstreamPool;

/// Where a request goes: a pool of upstreams and the path to ask for.
pub struct Target<'a> {
    /// The route or model name, for messages and logs.
    pub name: &'a str,
    pub pool: &'a UpstreamPool,
    pub timeout: Duration,
    pub path: String,
    /// The credential header to send upstream (a model's or provider's
    /// API key: `Authorization` or Anthropic's `x-api-key`); the caller's
    /// own credentials never are.
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// A third party's API (a hosted LLM provider): it gets no identity
    /// headers, no assertion, no `X-Forwarded-*`, and of the caller's
    /// headers only those its API needs ([`PROVIDER_HEADERS`]); cookies it
    /// sets do not reach the caller.
    pub external: bool,
}

/// The caller's request headers a hosted provider's API is sent.
pub const PROVIDER_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "accept",
    "accept-encoding",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
];

/// Response headers of a hosted provider the caller is not shown.
const PROVIDER_RESPONSE_HIDDEN: &[&str] = &["set-cookie", "anthropic-organization-id"];

/// Bodies up to this size are read before sending so a failed connection
/// can be retried on another upstream.
pub const REPLAYABLE_BYTES: u64 = 64 * 1024;

/// Who the caller is, as the upstream is told.
pub struct Identity<'a> {
    pub subject: &'a str,
    pub role: &'a str,
    pub auth_method: &'static str,
    /// A short-lived JWT for the route's audience (`X-Swarm-Assertion`),
    /// as a header value: it is reused across requests, and a clone shares
    /// its bytes.
    pub assertion: HeaderValue,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("every upstream of {0} is ejected")]
    NoUpstream(String),
    #[error("upstream connection failed: {0}")]
    Connect(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream answered badly: {0}")]
    Upstream(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(u64),
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

// Names made once: a `&str` name is parsed again on every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_SWARM_SUBJECT: HeaderName = HeaderName::from_static("x-swarm-subject");
const X_SWARM_ROLE: HeaderName = HeaderName::from_static("x-swarm-role");
const X_SWARM_AUTH_METHOD: HeaderName = HeaderName::from_static("x-swarm-auth-method");
const X_SWARM_ASSERTION: HeaderName = HeaderName::from_static("x-swarm-assertion");

/// Headers a caller must never get to the upstream: credentials, and any
/// identity or forwarding header it might try to forge.
fn stripped_from_request(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(name)
        || n == "host"
        || n == "authorization"
        || n == "x-api-key"
        || n == "cookie"
        || n.starts_with("x-swarm-")
        || n.starts_with("x-forwarded-")
        || n == "forwarded"
        || n == "x-real-ip"
        || n == "true-client-ip"
}

fn remove_connection_listed(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
}

/// The names a `Connection` header lists (hop-by-hop for this hop only).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// The client address as a header value. A worker thread keeps the last
/// one it made: a connection's requests, and most traffic behind a load
/// balancer, come from one address, and formatting it was a measurable
/// share of a proxied request.
fn peer_header(peer: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((ip, value)) if *ip == peer => value.clone(),
        _ => {
            // An address's text is digits, dots, colons and hex letters.
            let value = HeaderValue::try_from(peer.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            *last = Some((peer, value.clone()));
            value
        }
    })
}

pub struct Forwarder {
    /// For `https://` upstreams (hosted providers); plain ones go through
    /// the per-thread pool ([`crate::pool`]).
    client: Client<HttpsConnector<HttpConnector>, Body>,
    trusted_proxies: Vec<IpAddr>,
    max_body_bytes: u64,
}

/// What the server hands over: the incoming request's parts.
pub struct Incoming {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Body,
    pub peer: IpAddr,
}

impl Forwarder {
    pub fn new(trusted_proxies: Vec<IpAddr>, max_body_bytes: u64) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.enforce_http(false);
        // Verified against the Mozilla roots.
        #[allow(
            clippy::expect_used,
            reason = "ring's provider supports the default TLS versions; this runs once, at start"
        )]
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports the default TLS versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self {
            client,
            trusted_proxies,
            max_body_bytes,
        }
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    /// The headers the upstream gets.
    fn upstream_headers(&self, incoming: &Incoming, identity: &Identity<'_>) -> HeaderMap {
        let trusted = self.trusted_proxies.contains(&incoming.peer);
        let listed = connection_listed(&incoming.headers);
        let mut headers = HeaderMap::with_capacity(incoming.headers.len() + 8);
        for (name, value) in &incoming.headers {
            if !stripped_from_request(name) && !listed.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let text = |name: &HeaderName| incoming.headers.get(name).and_then(|v| v.to_str().ok());
        let peer = peer_header(incoming.peer);
        let forwarded_for = match text(&X_FORWARDED_FOR) {
            Some(chain) if trusted => {
                HeaderValue::from_str(&format!("{chain}, {}", peer.to_str().unwrap_or_default()))
                    .ok()
            }
            _ => Some(peer),
        };
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        let proto = text(&X_FORWARDED_PROTO)
            .filter(|_| trusted)
            .unwrap_or("http");
        if let Ok(value) = HeaderValue::from_str(proto) {
            headers.insert(X_FORWARDED_PROTO, value);
        }
        let forwarded_host = incoming.headers.get(&X_FORWARDED_HOST).filter(|_| trusted);
        let host = [forwarded_host, incoming.headers.get(header::HOST)]
            .into_iter()
            .flatten()
            .find(|v| v.to_str().is_ok())
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""));
        headers.insert(X_FORWARDED_HOST, host);
        if let Ok(value) = HeaderValue::from_str(identity.subject) {
            headers.insert(X_SWARM_SUBJECT, value);
        }
        if let Ok(value) = HeaderValue::from_str(identity.role) {
            headers.insert(X_SWARM_ROLE, value);
        }
        headers.insert(
            X_SWARM_AUTH_METHOD,
            HeaderValue::from_static(identity.auth_method),
        );
        headers.insert(X_SWARM_ASSERTION, identity.assertion.clone());
        headers
    }

    pub async fn forward(
        &self,
        target: Target<'_>,
        incoming: Incoming,
        identity: &Identity<'_>,
        now_ms: impl Fn() -> i64,
    ) -> Result<Response<Body>, ForwardError> {
        let (mut headers, length, chunked) = self.request_head(&target, &incoming, identity)?;
        let Incoming {
            method, uri, body, ..
        } = incoming;
        let mut outgoing = self
            .outgoing(body, &method, length, chunked, &mut headers)
            .await?;
        let pool = target.pool;
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let picked = pool.pick(now_ms(), &tried);
            let Some((i, upstream)) = picked.and_then(|i| Some((i, pool.upstreams.get(i)?))) else {
                return Err(
                    last_error.unwrap_or_else(|| ForwardError::NoUpstream(target.name.to_string()))
                );
            };
            tried.push(i);
            // Copied only while another attempt could still need them.
            let may_retry = outgoing.replay.is_some() && tried.len() < pool.upstreams.len();
            let mut request = Request::builder()
                .method(method.clone())
                .uri(upstream_uri(upstream, &target.path, uri.query()))
                .body(outgoing.next())
                .map_err(|e| ForwardError::Upstream(e.to_string()))?;
            *request.headers_mut() = if may_retry {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            request
                .headers_mut()
                .insert(header::HOST, upstream.host.clone());
            let sent = tokio::time::timeout(target.timeout, self.send(upstream, request)).await;
            match sent {
                Err(_) => return Err(ForwardError::Timeout(target.timeout)),
                Ok(Ok(response)) => {
                    pool.succeeded(i);
                    return Ok(passed_back(response, target.external));
                }
                Ok(Err(SendFailure {
                    connect: true,
                    error: e,
                })) => {
                    pool.failed(i, now_ms());
                    tracing::warn!(target = %target.name, upstream = %upstream.base, error = %e, "upstream connection failed");
                    let error = ForwardError::Connect(e.to_string());
                    if outgoing.replay.is_none() {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
                Ok(Err(SendFailure { error: e, .. })) => {
                    if is_body_too_large(&*e) {
                        return Err(ForwardError::TooLarge(self.max_body_bytes));
                    }
                    return Err(ForwardError::Upstream(e.to_string()));
                }
            }
        }
    }

    /// The headers the upstream is sent, the body's declared length (when
    /// it can be trusted) and whether it is chunked.
    fn request_head(
        &self,
        target: &Target<'_>,
        incoming: &Incoming,
        identity: &Identity<'_>,
    ) -> Result<(HeaderMap, Option<u64>, bool), ForwardError> {
        // With Transfer-Encoding the declared length is not the body's
        // (RFC 9112 6.3): never trust it then.
        let chunked = incoming.headers.contains_key(header::TRANSFER_ENCODING);
        let length = incoming
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| !chunked);
        if length.is_some_and(|l| l > self.max_body_bytes) {
            return Err(ForwardError::TooLarge(self.max_body_bytes));
        }
        let mut headers = if target.external {
            provider_headers(&incoming.headers)
        } else {
            self.upstream_headers(incoming, identity)
        };
        if let Some((name, value)) = &target.credential {
            headers.insert(name.clone(), value.clone());
        }
        if chunked {
            headers.remove(header::CONTENT_LENGTH);
        }
        Ok((headers, length, chunked))
    }

    /// The body to send: none, a small one read now (so a failed
    /// connection can be retried on another upstream), or the caller's
    /// streamed through once.
    async fn outgoing(
        &self,
        body: Body,
        method: &Method,
        length: Option<u64>,
        chunked: bool,
        headers: &mut HeaderMap,
    ) -> Result<Outgoing, ForwardError> {
        let bodyless = length == Some(0)
            || (length.is_none()
                && !chunked
                && matches!(
                    *method,
                    Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
                ));
        if bodyless {
            return Ok(Outgoing::replayable(Bytes::new()));
        }
        if length.is_some_and(|l| l <= REPLAYABLE_BYTES) {
            let bytes = Limited::new(
                body,
                usize::try_from(REPLAYABLE_BYTES).unwrap_or(usize::MAX),
            )
            .collect()
            .await
            .map_err(|_| ForwardError::TooLarge(self.max_body_bytes))?
            .to_bytes();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            return Ok(Outgoing::replayable(bytes));
        }
        let max = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        Ok(Outgoing {
            replay: None,
            stream: Some(Body::new(Limited::new(body, max))),
        })
    }

    /// One attempt: over the thread's pool for a plain upstream, hyper's
    /// client (and its TLS) for an `https://` one.
    async fn send(
        &self,
        upstream: &crate::upstream::Upstream,
        request: Request<Body>,
    ) -> Result<Response<Body>, SendFailure> {
        match &upstream.plain {
            Some(authority) => crate::pool::send(authority, request)
                .await
                .map(|r| r.map(Body::new))
                .map_err(|e| SendFailure::new(e.is_connect(), e)),
            None => self
                .client
                .request(request)
                .await
                .map(|r| r.map(Body::new))
                .map_err(|e| SendFailure::new(e.is_connect(), e)),
        }
    }
}

/// What a request sends upstream: bytes it can send again, or a stream
/// that goes with the first attempt, which is then the last.
struct Outgoing {
    replay: Option<Bytes>,
    stream: Option<Body>,
}

impl Outgoing {
    fn replayable(bytes: Bytes) -> Self {
        Self {
            replay: Some(bytes),
            stream: None,
        }
    }

    /// The body of the next attempt.
    fn next(&mut self) -> Body {
        match &self.replay {
            Some(bytes) => Body::from(bytes.clone()),
            None => self.stream.take().unwrap_or_default(),
        }
    }
}

/// The caller's headers a hosted provider's API is sent.
fn provider_headers(incoming: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(PROVIDER_HEADERS.len() + 1);
    for name in PROVIDER_HEADERS {
        for value in incoming.get_all(*name) {
            headers.append(*name, value.clone());
        }
    }
    headers
}

/// The URI an upstream is asked for: its prefix, the path, the query.
fn upstream_uri(upstream: &crate::upstream::Upstream, path: &str, query: Option<&str>) -> String {
    let mut uri = String::with_capacity(upstream.prefix.len() + path.len() + 64);
    uri.push_str(&upstream.prefix);
    uri.push_str(path);
    if uri.is_empty() {
        uri.push('/');
    }
    if let Some(query) = query {
        uri.push('?');
        uri.push_str(query);
    }
    uri
}

/// The upstream's response as the caller gets it: without hop-by-hop
/// headers, and without what a hosted provider should not show.
fn passed_back(response: Response<Body>, external: bool) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    remove_connection_listed(&mut parts.headers);
    for name in &HOP_BY_HOP {
        parts.headers.remove(name);
    }
    if external {
        for name in PROVIDER_RESPONSE_HIDDEN {
            parts.headers.remove(*name);
        }
    }
    Response::from_parts(parts, body)
}

/// Why a send failed, and whether for want of a connection (nothing
/// reached the upstream, so another may be tried).
struct SendFailure {
    connect: bool,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl SendFailure {
    fn new(connect: bool, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            connect,
            error: Box::new(error),
        }
    }
}

fn is_body_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}
