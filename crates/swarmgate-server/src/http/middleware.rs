//! Per-request context: a request id (kept when the client sent a sane one),
//! the client address, and one access-log line with the outcome. Neither
//! headers nor query strings are logged: they may carry credentials.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::http::{header, HeaderName, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use swarmgate_gateway::RouteLabel;

use crate::http::error::{ErrorBody, ErrorDetail};
use crate::serve::BodyTimedOut;

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
                HeaderValue::from_bytes(&swarmgate_service::ids::next())
                    .unwrap_or_else(|_| HeaderValue::from_static("-"))
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
    let late = request.extensions().get::<BodyTimedOut>().cloned();
    let (request, body) = ReadToEnd::watch(request);

    let mut response = inner(request).await;
    if late.is_some_and(|late| late.is_set()) {
        response = body_too_late();
    }
    if let Some(body) = body {
        if !body.read_or_discarded().await {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    let elapsed = context.started.elapsed();
    let status = response.status().as_u16();
    swarmgate_service::monitoring::record_request(status, elapsed);
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

/// 408, and the connection closed: the rest of the body may still come.
fn body_too_late() -> Response {
    let body = ErrorBody {
        error: ErrorDetail::new(
            "request_timeout",
            "the request body did not arrive within [server] body_timeout_ms".into(),
        ),
    };
    let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The rest of a request body the handler did not read is discarded, up
/// to this much: a refused JSON request, say. A larger rest closes the
/// connection instead of being received for nothing.
const DISCARD_MAX_BYTES: u64 = 64 * 1024;
/// How long a response waits for the rest of a small body to arrive.
const DISCARD_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// A request body that notes when it has been read to its end, and keeps
/// what is left of it when it is dropped unread.
///
/// An HTTP/1.1 connection takes its next request only after the body of
/// this one. When a handler answers without reading the body (a 401, 403,
/// 413 or 429), what is left of a small body is read and dropped before the
/// response goes out, as nginx does; a larger or slower one makes the
/// response say `Connection: close` (RFC 9112 9.6). Without that, hyper
/// closed the connection unannounced and a keep-alive client's next
/// request got no answer at all (a real client hit this).
struct ReadToEnd {
    inner: Body,
    watch: Arc<BodyWatch>,
}

struct BodyWatch {
    done: AtomicBool,
    /// What was left of the body when it was dropped unread.
    rest: Mutex<Option<Body>>,
}

impl ReadToEnd {
    /// The request with its body watched; as it is when there is no body
    /// (most GETs) or on HTTP/2, whose streams end on their own.
    fn watch(request: Request) -> (Request, Option<Arc<BodyWatch>>) {
        if request.version() > Version::HTTP_11 || request.body().is_end_stream() {
            return (request, None);
        }
        let watch = Arc::new(BodyWatch {
            done: AtomicBool::new(false),
            rest: Mutex::new(None),
        });
        let watched = watch.clone();
        let request = request.map(|inner| {
            Body::new(ReadToEnd {
                inner,
                watch: watched,
            })
        });
        (request, Some(watch))
    }
}

impl BodyWatch {
    /// Whether the body was read to its end, or what was left of it could
    /// be read now (small, and arriving within [`DISCARD_WAIT`]).
    async fn read_or_discarded(&self) -> bool {
        if self.done.load(Ordering::Relaxed) {
            return true;
        }
        let rest = self
            .rest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Not dropped: still being read (a streamed upload), or held.
        let Some(mut rest) = rest else {
            return false;
        };
        if rest
            .size_hint()
            .upper()
            .is_none_or(|left| left > DISCARD_MAX_BYTES)
        {
            return false;
        }
        // A bounded rest is a Content-Length body, which hyper ends at that
        // length: nothing to count here.
        let discard = async {
            while let Some(frame) = http_body_util::BodyExt::frame(&mut rest).await {
                if frame.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(DISCARD_WAIT, discard)
            .await
            .unwrap_or(false)
    }
}

impl Drop for ReadToEnd {
    fn drop(&mut self) {
        if !self.watch.done.load(Ordering::Relaxed) {
            let rest = std::mem::replace(&mut self.inner, Body::empty());
            *self
                .watch
                .rest
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(rest);
        }
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
        // A reader may stop at `is_end_stream`, or after trailers, without
        // polling for the end.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers() || self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.watch.done.store(true, Ordering::Relaxed);
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
