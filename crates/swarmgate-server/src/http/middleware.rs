//! Per-request context: a request id (kept when the client sent a sane one),
//! the client address, and one access-log line with the outcome. Neither
//! headers nor query strings are logged: they may carry credentials.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Checked to be short printable ASCII, so it reads as text.
    pub request_id: HeaderValue,
    pub client_addr: Option<IpAddr>,
    pub started: Instant,
}

impl RequestContext {
    /// The client's address (unspecified when unknown) and when the
    /// request arrived, as the gateway needs them.
    pub fn peer_and_start(extensions: &axum::http::Extensions) -> (IpAddr, Option<Instant>) {
        let context = extensions.get::<RequestContext>();
        let peer = context
            .and_then(|c| c.client_addr)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        (peer, context.map(|c| c.started))
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// Formatted only where it is written down (audit, logs, rate-limit
    /// keys), not for every request.
    pub fn client_ip(&self) -> Option<String> {
        self.client_addr.map(|ip| ip.to_string())
    }
}

/// Set on a response by the gateway: the route label for metrics, made
/// once per route.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

fn is_sane_request_id(value: &HeaderValue) -> bool {
    (1..=128).contains(&value.len())
        && value
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The context around swarmgate's own API, inside its router (where the
/// matched path is known for the metrics label).
pub async fn request_context(request: Request, next: Next) -> Response {
    in_context(request, |request| next.run(request)).await
}

/// Runs `inner` with the request's context: made and attached before it,
/// then the request id on the response, the metrics and the access log.
pub async fn in_context<F, Fut>(mut request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let context = RequestContext {
        request_id: request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| is_sane_request_id(v))
            .cloned()
            .unwrap_or_else(|| {
                HeaderValue::from_bytes(&crate::ids::next()).expect("hex digits are a header value")
            }),
        client_addr: request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip()),
        started: Instant::now(),
    };
    let method = request.method().clone();
    // Only the access log needs the path; most deployments log at warn.
    let access_log = tracing::enabled!(target: "access", tracing::Level::INFO);
    let path = access_log.then(|| request.uri().path().to_string());
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    request.extensions_mut().insert(context.clone());
    let (request, read_to_end) = ReadToEnd::watch(request);

    let mut response = inner(request).await;
    if read_to_end.is_some_and(|done| !done.load(Ordering::Relaxed)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let elapsed = context.started.elapsed();
    let status = response.status().as_u16();
    crate::monitoring::record_request(status, elapsed);
    response
        .headers_mut()
        .insert(REQUEST_ID, context.request_id.clone());
    let route = match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel(label)) => label,
        None => matched.as_ref().map_or("unmatched", |m| m.as_str()),
    };
    // Methods are a label: an invented one must not add a series.
    let method_label: &'static str = match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    crate::metrics::record_http(route, method_label, status, elapsed.as_secs_f64());
    if access_log {
        tracing::info!(
            target: "access",
            request_id = context.request_id(),
            client_ip = context.client_ip().unwrap_or_default(),
            method = %method,
            path = path.as_deref().unwrap_or(""),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    response
}

/// A request body that notes when it has been read to its end.
///
/// An HTTP/1.1 connection takes its next request only after the body of
/// this one: when a request is refused before its body was read
/// (unauthenticated, forbidden, too large), hyper closes the connection
/// after the response unless what is left is already buffered. A client
/// not told so sends its next request into the closed connection and gets
/// no answer at all (a real client hit this), so such a response says
/// `Connection: close` (RFC 9112 9.6) and the connection ends with it.
struct ReadToEnd {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl ReadToEnd {
    /// The request with its body watched, and the flag that says whether it
    /// was read to its end; as it is when there is no body (most GETs) or
    /// on HTTP/2, whose streams end on their own.
    fn watch(request: Request) -> (Request, Option<Arc<AtomicBool>>) {
        if request.version() > Version::HTTP_11 || request.body().is_end_stream() {
            return (request, None);
        }
        let done = Arc::new(AtomicBool::new(false));
        let watched = done.clone();
        let request = request.map(|inner| {
            Body::new(ReadToEnd {
                inner,
                done: watched,
            })
        });
        (request, Some(done))
    }
}

impl HttpBody for ReadToEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // A reader may stop at `is_end_stream` without polling for the end.
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
