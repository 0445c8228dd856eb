//! Fail-closed must also be fast: once Redis or the database is found
//! down (refusing, or accepting and never answering), requests answer 503
//! at once instead of each waiting out its own timeout, and service comes
//! back soon after the backing service does. The bounds below are far
//! above what the code needs (a few ms) and far below what it took before
//! (2.5 to 5.4 s per request), so they test the behaviour, not the speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use swarmgate_store::testing::{fresh_postgres_database, test_database_url};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;
use crate::common::*;

/// The most one request may take while its backing service is known down.
const FAST: Duration = Duration::from_millis(1000);

/// A redis-server of the test's own on `port`, which it may kill.
fn private_redis(port: u16) -> tokio::process::Child {
    tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed to run this test")
}

async fn wait_listening(port: u16) {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on {port}");
}

/// Sends each request `rounds` times and returns the slowest answer,
/// checking every one is a 503 naming `component`. `/auth/me` is asked
/// with `token` when there is one.
async fn slowest_503(p: &Process, token: Option<&str>, component: &str, rounds: usize) -> Duration {
    let client = Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..rounds {
        let mut requests = vec![
            client.get(format!("{}/health", p.base)),
            client
                .post(format!("{}/auth/login", p.base))
                .json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
        ];
        if let Some(token) = token {
            requests.push(client.get(format!("{}/auth/me", p.base)).bearer_auth(token));
        }
        for request in requests {
            let started = Instant::now();
            let r = request.send().await.unwrap();
            slowest = slowest.max(started.elapsed());
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            let body: Value = r.json().await.unwrap();
            assert!(body.to_string().contains(component), "{body}");
        }
    }
    slowest
}

/// How long after `since` `/health` first answers 200.
async fn healthy_after(p: &Process, since: Instant) -> Duration {
    let client = Client::new();
    loop {
        let r = client
            .get(format!("{}/health", p.base))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_refusing_is_answered_at_once_and_service_resumes() {
    let Some(_) = redis_url() else {
        eprintln!("TEST_REDIS_URL unset: Redis failure test not run");
        return;
    };
    let port = free_port();
    let mut redis = private_redis(port);
    wait_listening(port).await;
    let p = Process::serve(&[("REDIS_URL", format!("redis://127.0.0.1:{port}"))]).await;
    let client = Client::new();
    let session = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    let token = session["access_token"].as_str().unwrap().to_string();

    redis.kill().await.unwrap();
    redis.wait().await.unwrap();
    let first = Instant::now();
    assert_eq!(
        me_status(&client, &p.base, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let first = first.elapsed();
    let slowest = slowest_503(&p, Some(&token), "redis", 10).await;
    eprintln!("redis refusing: first 503 in {first:?}, slowest after it {slowest:?}");
    assert!(
        slowest < FAST,
        "a request waited {slowest:?} on a Redis known down"
    );

    let _redis = private_redis(port);
    wait_listening(port).await;
    let back = Instant::now();
    let resumed = healthy_after(&p, back).await;
    eprintln!("redis back: healthy {resumed:?} after it listened");
    assert!(resumed < Duration::from_secs(1), "{resumed:?}");
    // A Redis that lost its data is rebuilt from the database, then
    // trusted again.
    let since = Instant::now();
    while me_status(&client, &p.base, &token).await != StatusCode::OK {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "never served again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_redis_that_never_answers_is_bounded_by_timeout_ms() {
    // Accepts connections and reads nothing: a Redis that hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let started = Instant::now();
    let p = Process::serve_unready(&[
        ("REDIS_URL", format!("redis://127.0.0.1:{port}")),
        ("SWARMGATE_REDIS__TIMEOUT_MS", "200".into()),
    ])
    .await;
    eprintln!("started against a silent Redis in {:?}", started.elapsed());
    let slowest = slowest_503(&p, None, "redis", 10).await;
    eprintln!("redis silent: slowest 503 {slowest:?}");
    assert!(
        slowest < FAST,
        "a request waited {slowest:?} on a silent Redis"
    );

    held.abort();
    let _ = held.await;
    let _redis = private_redis(port);
    wait_listening(port).await;
    let back = Instant::now();
    let resumed = healthy_after(&p, back).await;
    eprintln!("redis back after silence: healthy {resumed:?} after it listened");
    assert!(resumed < Duration::from_secs(1), "{resumed:?}");
}

/// A TCP relay to `target` that can be frozen: while frozen it moves no
/// bytes either way and new connections get no answer, as from a database
/// server that stopped (SIGSTOP, a hung host).
struct Relay {
    port: u16,
    frozen: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = watch::channel(false);
        let watch = Arc::new(frozen.subscribe());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, watch) = (target.clone(), (*watch).clone());
                tokio::spawn(relay(client, target, watch));
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

async fn relay(client: TcpStream, target: String, mut frozen: watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = frozen.wait_for(|f| !*f).await;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let pipe = |mut from: tokio::net::tcp::OwnedReadHalf,
                mut to: tokio::net::tcp::OwnedWriteHalf,
                mut frozen: watch::Receiver<bool>| async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.wait_for(|f| !*f).await.is_err() {
                return;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let up = tokio::spawn(pipe(cr, sw, frozen.clone()));
    let down = tokio::spawn(pipe(sr, cw, frozen));
    let _ = tokio::join!(up, down);
}

#[tokio::test]
async fn a_database_that_stops_answering_is_answered_at_once() {
    let Some(admin_url) = test_database_url() else {
        eprintln!("TEST_DATABASE_URL unset: hung-database test not run");
        return;
    };
    let database = fresh_postgres_database(&admin_url).await.unwrap();
    let (authority, rest) = database
        .trim_start_matches("postgres://")
        .split_once('/')
        .unwrap();
    let (user, host) = authority.split_once('@').unwrap();
    let relay = Relay::start(host.to_string()).await;
    let through = format!("postgres://{user}@127.0.0.1:{}/{rest}", relay.port);
    let p = Process::serve(&[
        ("DATABASE_URL", through),
        ("SWARMGATE_DATABASE__TIMEOUT_MS", "500".into()),
    ])
    .await;
    let client = Client::new();
    let session = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    let token = session["access_token"].as_str().unwrap().to_string();

    relay.freeze(true);
    let first = Instant::now();
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    let first = first.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["database"]), "{health}");
    assert!(
        first < Duration::from_secs(3),
        "the first wait took {first:?}"
    );
    let slowest = slowest_503(&p, Some(&token), "database", 5).await;
    eprintln!("database hung: first 503 in {first:?}, slowest after it {slowest:?}");
    assert!(
        slowest < FAST,
        "a request waited {slowest:?} on a database known down"
    );

    let back = Instant::now();
    relay.freeze(false);
    let resumed = healthy_after(&p, back).await;
    eprintln!("database answering again: healthy in {resumed:?}");
    assert!(resumed < Duration::from_secs(1), "{resumed:?}");
    assert_eq!(me_status(&client, &p.base, &token).await, StatusCode::OK);
}
