//! The floor of the HTTP stack swarmgate is built on: a reverse proxy on
//! hyper and hyper-util's pooled client (as swarmgate's forwarder uses)
//! that checks nothing and adds nothing. `bench/proxy.sh` runs it beside
//! nginx and swarmgate, so the cost of swarmgate's own work (authentication,
//! the permission check, identity headers, metrics) and the cost of the
//! stack itself can be told apart.
//!
//!   hyper_proxy LISTEN_ADDR UPSTREAM_HOST:PORT [WORKER_THREADS]

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
        return Err("usage: hyper_proxy LISTEN_ADDR UPSTREAM_HOST:PORT [WORKER_THREADS]".into());
    };
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    if args.get(4).map(String::as_str) == Some("percore") {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (listen, upstream) = (listen.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        let socket = tokio::net::TcpSocket::new_v4().unwrap();
                        socket.set_reuseport(true).unwrap();
                        socket.bind(listen.parse().unwrap()).unwrap();
                        let listener = socket.listen(1024).unwrap();
                        serve(listener, upstream).await
                    })
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        serve(listener, upstream).await
    })?;
    Ok(())
}

async fn serve(listener: TcpListener, upstream: String) -> Result<(), std::io::Error> {
    {
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
