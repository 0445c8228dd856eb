//! Per-request context: a request id (kept when the client sent a sane one),
//! the client address, and one access-log line with the outcome. Neither
//! headers nor query strings are logged: they may carry credentials.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const REQUEST_ID: &str = "x-request-id";

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub client_ip: Option<String>,
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
}

/// A request id: a per-process random prefix and a counter run through a
/// random odd multiplier (a bijection, so ids stay unique without asking
/// the kernel for randomness per request, and do not reveal the count).
fn new_request_id() -> String {
    static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (prefix, multiplier) = *KEYS.get_or_init(|| {
        let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
        (a, b | 1)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}{:016x}", n.wrapping_mul(multiplier))
}

/// Set on a response by the gateway: the route label for metrics.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| text.to_string())
}

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(new_request_id);
    let client_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let client_ip = client_addr.map(|ip| ip.to_string());
    let method = request.method().clone();
    // Only the access log needs the path; most deployments log at warn.
    let path = tracing::enabled!(target: "access", tracing::Level::INFO)
        .then(|| request.uri().path().to_string());
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string());
    request.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        client_ip: client_ip.clone(),
        client_addr,
        started,
    });

    let mut response = next.run(request).await;
    crate::monitoring::record_request(response.status().as_u16(), started.elapsed());

    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|l| l.0.clone())
        .or(matched)
        .unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16().to_string();
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
    metrics::counter!("swarmgate_http_requests_total", "route" => route.clone(), "method" => method_label, "status" => status)
        .increment(1);
    metrics::histogram!("swarmgate_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        target: "access",
        request_id = %request_id,
        client_ip = client_ip.as_deref().unwrap_or(""),
        method = %method,
        path = path.as_deref().unwrap_or(""),
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
