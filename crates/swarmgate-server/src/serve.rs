//! The accept loop: every connection served by hyper under the limits of
//! `[server]` (headers and bodies must arrive in time), and a stop that
//! lets requests in flight finish within a grace period.
//!
//! `axum::serve` has no header or body timeout and waits without bound for
//! open connections at shutdown: a slowloris client holds a connection
//! forever, and one endless stream keeps the process from exiting.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::http::Front;

/// How long each client may take, and how long a stop may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `listener` until `shutdown` resolves; then stops accepting, asks
/// every connection to close after its current request, and waits for
/// them at most the grace period.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let builder = builder(limits);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: the connections already
                    // open go on; try again shortly rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(nodelay(stream)),
                service(&front, peer, limits),
            )
            .into_owned();
        tokio::spawn(graceful.watch(connection));
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "the shutdown grace period is over; closing the connections still open"
        );
    }
}

fn builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Nagle's algorithm off, as nginx's `tcp_nodelay`: a streamed response
/// (LLM tokens as server-sent events) is many small writes, and with Nagle
/// each waits for the client's delayed ACK of the one before, up to 40 ms.
fn nodelay(stream: TcpStream) -> TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
    }
    stream
}

/// What hyper calls for each request of a connection: [`Front`], with the
/// client's address and the body's deadline.
fn service(
    front: &Front,
    peer: SocketAddr,
    limits: ConnectionLimits,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
> + Clone {
    let front = front.clone();
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let mut front = front.clone();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let body = if body.is_end_stream() {
            Body::new(body)
        } else {
            let body = Deadline::new(body, limits.body_timeout);
            parts.extensions.insert(body.timed_out.clone());
            Body::new(body)
        };
        let request = hyper::Request::from_parts(parts, body);
        tower::Service::call(&mut front, request)
    })
}

/// Set when a request's body did not arrive within `[server]
/// body_timeout_ms`; the request's context answers 408 then.
#[derive(Debug, Clone, Default)]
pub struct BodyTimedOut(Arc<AtomicBool>);

impl BodyTimedOut {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request body that fails once its whole length has not arrived by a
/// deadline counted from the request's arrival. A per-read timeout would
/// not do: a client trickling a byte a second never trips one.
struct Deadline {
    inner: hyper::body::Incoming,
    until: Instant,
    /// Made only when the body is waited for: most arrive with their head.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: BodyTimedOut,
}

impl Deadline {
    fn new(inner: hyper::body::Incoming, limit: Duration) -> Self {
        Self {
            inner,
            until: Instant::now() + limit,
            sleep: None,
            timed_out: BodyTimedOut::default(),
        }
    }
}

/// The error a late body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.timed_out.is_set() {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let until = self.until;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timed_out.0.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
