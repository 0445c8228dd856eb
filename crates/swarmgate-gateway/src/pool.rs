//! Keep-alive HTTP/1 connections to plain `http://` upstreams, pooled per
//! thread.
//!
//! hyper-util's pooled client does this for any scheme, through a shared,
//! locked pool keyed by a SipHash of scheme and authority, with a future
//! per request watching for the connection's return. Here each thread keeps
//! a short list of idle connections per upstream address; a connection goes
//! back on it when its response body ends, and is checked when taken. That
//! is a measurable share less work per proxied request (`bench/proxy.sh`).
//! `https://` upstreams (hosted providers) keep hyper-util's client and its
//! TLS.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// An idle connection unused this long is closed, not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections a thread keeps per upstream address.
const MAX_IDLE: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<Arc<str>, Vec<Idle>>> = RefCell::default();
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing reached the upstream.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The connection failed once the request was on its way.
    #[error("{0}")]
    Request(#[source] hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// The newest idle connection ready for a request. A closed or stale one
/// is dropped; one still busy (its request body still going out after an
/// early response, say) is left for later rather than waited on.
fn take_idle(authority: &str) -> Option<SendRequest<Body>> {
    IDLE.with_borrow_mut(|idle| {
        let list = idle.get_mut(authority)?;
        // Read the clock once, not once per idle connection.
        let stale = Instant::now().checked_sub(IDLE_TIMEOUT);
        list.retain(|entry| !entry.sender.is_closed() && stale.is_none_or(|s| entry.since > s));
        let ready = list.iter().rposition(|entry| entry.sender.is_ready())?;
        Some(list.remove(ready).sender)
    })
}

fn put_idle(authority: &Arc<str>, sender: SendRequest<Body>) {
    IDLE.with_borrow_mut(|idle| {
        let entry = Idle {
            sender,
            since: Instant::now(),
        };
        match idle.get_mut(&**authority) {
            Some(list) if list.len() < MAX_IDLE => list.push(entry),
            Some(_) => {}
            None => {
                idle.insert(authority.clone(), vec![entry]);
            }
        }
    });
}

async fn connect(authority: &str) -> Result<SendRequest<Body>, SendError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
        .map_err(|_| {
            SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })?
        .map_err(SendError::Connect)?;
    stream.set_nodelay(true).map_err(SendError::Connect)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    Ok(sender)
}

/// Sends `request` (origin-form URI, `Host` set) to `authority`
/// (`host:port`) on an idle connection of this thread, or a new one. A
/// request an idle connection turned down before sending (it had just
/// closed) goes on another.
pub async fn send(
    authority: &Arc<str>,
    mut request: Request<Body>,
) -> Result<Response<ReturnsConnection>, SendError> {
    loop {
        let (mut sender, fresh) = match take_idle(authority) {
            Some(sender) => (sender, false),
            None => (connect(authority).await?, true),
        };
        if sender.ready().await.is_err() {
            if fresh {
                return Err(SendError::Connect(std::io::Error::other(
                    "upstream closed the connection at once",
                )));
            }
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                // A body that is already over is never read.
                let home = if response.body().is_end_stream() {
                    put_idle(authority, sender);
                    None
                } else {
                    Some((authority.clone(), sender))
                };
                return Ok(response.map(|body| ReturnsConnection { body, home }));
            }
            Err(mut e) => match e.take_message() {
                // Never sent: the idle connection had closed meanwhile.
                Some(unsent) if !fresh => request = unsent,
                _ => return Err(SendError::Request(e.into_error())),
            },
        }
    }
}

/// A response body that puts its connection back in the thread's idle
/// list once read to the end; one dropped before then closes with it.
pub struct ReturnsConnection {
    body: Incoming,
    home: Option<(Arc<str>, SendRequest<Body>)>,
}

impl HttpBody for ReturnsConnection {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // The reader stops asking once `is_end_stream` says so (a body of
        // known length), so the end is seen here, not only at `None`.
        let over = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.body.is_end_stream(),
            _ => false,
        };
        if over {
            if let Some((authority, sender)) = self.home.take() {
                put_idle(&authority, sender);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A raw upstream answering each connection's first request at once,
    /// before reading its body; then it closes the connection, or, with
    /// `keep_open`, reads on without answering.
    async fn raw_upstream(keep_open: bool) -> Arc<str> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await;
                    while keep_open && matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        addr.to_string().into()
    }

    fn get(authority: &str) -> Request<Body> {
        Request::builder()
            .uri("/")
            .header("host", authority)
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        // As one with a very short keep-alive timeout does.
        let authority = raw_upstream(false).await;
        for _ in 0..3 {
            let response = send(&authority, get(&authority)).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"ok");
            // The close reaches the idle connection before the next take.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Arc<str> = listener.local_addr().unwrap().to_string().into();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Body::from("ok")))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        for i in 0..6 {
            let mut body = send(&authority, get(&authority)).await.unwrap().into_body();
            if i % 2 == 0 {
                body.collect().await.unwrap();
            } else {
                // As hyper's server reads a body of known length: it stops
                // at `is_end_stream`, never asking for the end.
                while !body.is_end_stream() {
                    body.frame().await.unwrap().unwrap();
                }
            }
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// An upstream may answer before it has read the request body; the
    /// connection then stays busy sending it, and the next request must
    /// not wait for that.
    #[tokio::test]
    async fn a_connection_still_sending_a_body_is_not_waited_on() {
        let authority = raw_upstream(true).await;
        let endless = tokio_stream::StreamExt::chain(
            tokio_stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"chunk"))]),
            tokio_stream::pending(),
        );
        let upload = Request::builder()
            .method("POST")
            .uri("/")
            .header("host", &*authority)
            .header("transfer-encoding", "chunked")
            .body(Body::new(http_body_util::StreamBody::new(
                tokio_stream::StreamExt::map(endless, |chunk| chunk.map(Frame::data)),
            )))
            .unwrap();
        let first = send(&authority, upload).await.unwrap();
        first.into_body().collect().await.unwrap();
        let second =
            tokio::time::timeout(Duration::from_secs(2), send(&authority, get(&authority)))
                .await
                .expect("not stuck behind the busy connection")
                .unwrap();
        let body = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority: Arc<str> = listener.local_addr().unwrap().to_string().into();
        drop(listener);
        let result = send(&authority, get(&authority)).await;
        assert!(matches!(result, Err(SendError::Connect(_))));
    }
}
