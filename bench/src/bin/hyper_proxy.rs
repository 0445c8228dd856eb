//! The floor of the HTTP stack swarmgate is built on: a reverse proxy on
//! hyper, served as swarmgate serves and sending through swarmgate's own
//! per-thread upstream pool (`swarmgate_gateway::pool`), that checks
//! nothing and adds nothing. `bench/proxy.sh` runs it beside
//! nginx and swarmgate, so the cost of swarmgate's own work (authentication,
//! the permission check, identity headers, metrics) and the cost of the
//! stack itself can be told apart.
//!
//!   hyper_proxy LISTEN_ADDR UPSTREAM_HOST:PORT [THREADS]

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use swarmgate_gateway::pool::{self, ReturnsConnection};
use swarmgate_gateway::Body;
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Reply = Response<http_body_util::Either<ReturnsConnection, String>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream)) = (args.get(1).cloned(), args.get(2).cloned()) else {
        return Err("usage: hyper_proxy LISTEN_ADDR UPSTREAM_HOST:PORT [THREADS]".into());
    };
    let listen: std::net::SocketAddr = listen.parse()?;
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    // As swarmgate serves: one single-threaded runtime per thread, each
    // with its own SO_REUSEPORT socket and its own pooled client.
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let upstream = upstream.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.set_reuseport(true)?;
                    socket.bind(listen)?;
                    serve(socket.listen(1024)?, upstream).await
                })
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| "a thread panicked")??;
    }
    Ok(())
}

async fn serve(listener: TcpListener, upstream: String) -> std::io::Result<()> {
    let upstream: Arc<str> = upstream.into();
    let host = hyper::header::HeaderValue::from_str(&upstream)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    loop {
        let (stream, _) = listener.accept().await?;
        // As swarmgate's connections (`swarmgate_server::without_nagle`).
        stream.set_nodelay(true)?;
        let (upstream, host) = (upstream.clone(), host.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(upstream.clone(), host.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    upstream: Arc<str>,
    host: hyper::header::HeaderValue,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let (mut parts, body) = request.into_parts();
    parts.headers.insert(hyper::header::HOST, host);
    let request = Request::from_parts(parts, Body::new(body));
    Ok(match pool::send(&upstream, request).await {
        Ok(response) => response.map(http_body_util::Either::Left),
        Err(_) => failure(StatusCode::BAD_GATEWAY),
    })
}

fn failure(status: StatusCode) -> Reply {
    let mut response = Response::new(http_body_util::Either::Right(String::new()));
    *response.status_mut() = status;
    response
}
