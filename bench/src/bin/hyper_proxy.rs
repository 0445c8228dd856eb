//! The floor of the HTTP stack swarmgate is built on: a reverse proxy on
//! hyper and hyper-util's pooled client (as swarmgate's forwarder uses)
//! that checks nothing and adds nothing. `bench/proxy.sh` runs it beside
//! nginx and swarmgate, so the cost of swarmgate's own work (authentication,
//! the permission check, identity headers, metrics) and the cost of the
//! stack itself can be told apart.
//!
//!   hyper_proxy LISTEN_ADDR UPSTREAM_HOST:PORT [THREADS]

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Reply = Response<http_body_util::Either<Incoming, String>>;

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
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: String,
    mut request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("http://{upstream}{path}").parse() else {
        return Ok(failure(StatusCode::BAD_REQUEST));
    };
    *request.uri_mut() = uri;
    request.headers_mut().remove(hyper::header::HOST);
    Ok(match client.request(request).await {
        Ok(response) => response.map(http_body_util::Either::Left),
        Err(_) => failure(StatusCode::BAD_GATEWAY),
    })
}

fn failure(status: StatusCode) -> Reply {
    let mut response = Response::new(http_body_util::Either::Right(String::new()));
    *response.status_mut() = status;
    response
}
