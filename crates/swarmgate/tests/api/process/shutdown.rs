//! Stopping: SIGTERM ends the server cleanly, lets a request in flight
//! finish, and writes what was batched.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use swarmgate_store::testing::{fresh_postgres_database, test_database_url};

use crate::common::*;

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let mut p = Process::serve(&[]).await;
    let pid = p.pid();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(p.stderr().contains("swarmgate stopped"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut p = Process::serve(&[]).await;
    let body =
        serde_json::to_string(&json!({"username": "admin", "password": ADMIN_PASSWORD})).unwrap();
    let mut stream = tokio::net::TcpStream::connect(p.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // Half the request is in; then the server is told to stop.
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = p.pid().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("access_token"));
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops after the request")
        .unwrap();
    assert!(exit.success());
}

/// Each HTTP thread of `serve` has a runtime of its own, and database
/// connections opened while answering belong to it: usage still batched
/// when SIGTERM comes is written before the process exits, on PostgreSQL
/// too when `TEST_DATABASE_URL` is set.
#[tokio::test]
async fn usage_batched_at_sigterm_is_written_before_exit() {
    let m = crate::mock::Mock::start(&["--models", "exit-model"]).await;
    let config = config_file(&format!(
        "[[models]]\nname = \"exit-model\"\nupstreams = [\"{}\"]\n",
        m.base
    ));
    let mut env = vec![
        ("SWARMGATE_CONFIG", config.display().to_string()),
        // Only the flush at shutdown writes.
        ("SWARMGATE_USAGE__FLUSH_INTERVAL_MS", "60000".to_string()),
        ("SWARMGATE_SERVER__WORKER_THREADS", "2".to_string()),
    ];
    if let Some(admin) = test_database_url() {
        env.push((
            "DATABASE_URL",
            fresh_postgres_database(&admin).await.unwrap(),
        ));
    }
    let mut first = Process::serve(&env).await;
    if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
        env.push(("DATABASE_URL", first.database_url()));
    }
    let client = Client::new();
    let chat =
        json!({"model": "exit-model", "messages": [{"role": "user", "content": "one two three"}]});
    // Separate connections, so both threads are likely to answer some.
    for _ in 0..6 {
        let token = login(&Client::new(), &first.base, "admin", ADMIN_PASSWORD).await
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = Client::new()
            .post(format!("{}/v1/chat/completions", first.base))
            .bearer_auth(&token)
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    tokio::process::Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), first.child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(exit.success(), "{exit:?}\n{}", first.stderr());

    let second = Process::serve(&env).await;
    let token = login(&client, &second.base, "admin", ADMIN_PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let usage: Value = client
        .get(format!("{}/usage?group_by=model", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["items"][0]["group"], "exit-model", "{usage}");
    assert_eq!(usage["items"][0]["requests"], 6, "{usage}");
}

/// An upstream streaming one event every `every`, `events` of them
/// (`None`: without end).
async fn streaming_upstream(events: Option<usize>, every: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        let stream = futures_util::stream::unfold(0usize, move |i| async move {
            if events.is_some_and(|n| i >= n) {
                return None;
            }
            tokio::time::sleep(every).await;
            let event = axum::body::Bytes::from(format!("data: {i}\n\n"));
            Some((Ok::<_, std::io::Error>(event), i + 1))
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(stream))
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A swarmgate with the route `/stream` to `upstream`, and a response
/// from it whose first event has arrived.
async fn open_stream(upstream: &str, env: &[(&str, String)]) -> (Process, reqwest::Response) {
    let config = config_file(&format!(
        "[[routes]]\nname = \"stream\"\npath_prefix = \"/stream\"\nupstreams = [\"{upstream}\"]\npermission = \"stream.read\"\ntimeout_ms = 60000\n"
    ));
    let mut env = env.to_vec();
    env.push(("SWARMGATE_CONFIG", config.display().to_string()));
    let p = Process::serve(&env).await;
    let client = Client::new();
    let token = login(&client, &p.base, "admin", ADMIN_PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut r = client
        .get(format!("{}/stream/events", p.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: 0"), "{first:?}");
    (p, r)
}

async fn sigterm(p: &Process) {
    tokio::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .await
        .unwrap();
}

#[tokio::test]
async fn sigterm_lets_an_open_stream_finish() {
    let upstream = streaming_upstream(Some(10), Duration::from_millis(150)).await;
    let (mut p, mut stream) = open_stream(&upstream, &[]).await;
    sigterm(&p).await;
    // No new connection is accepted meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Client::new()
            .get(format!("{}/health", p.base))
            .send()
            .await
            .is_err(),
        "a stopping server accepted a new connection"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = stream.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.ends_with("data: 9\n\n"),
        "the stream was cut: {rest:?}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops once the stream has ended")
        .unwrap();
    assert!(exit.success(), "{exit:?}\n{}", p.stderr());
}

#[tokio::test]
async fn an_endless_stream_is_cut_when_the_grace_period_is_over() {
    let upstream = streaming_upstream(None, Duration::from_millis(100)).await;
    let grace = [("SWARMGATE_SERVER__SHUTDOWN_GRACE_MS", "1000".to_string())];
    let (mut p, mut stream) = open_stream(&upstream, &grace).await;
    let stopping = std::time::Instant::now();
    sigterm(&p).await;
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops when the grace period is over")
        .unwrap();
    let took = stopping.elapsed();
    assert!(exit.success(), "{exit:?}\n{}", p.stderr());
    assert!(
        took >= Duration::from_millis(900),
        "stopped before the grace period: {took:?}"
    );
    assert!(
        p.stderr().contains("grace period is over"),
        "{}",
        p.stderr()
    );
    // The stream ran until then, and ends (cut) instead of hanging.
    let mut events = 0;
    while let Ok(Some(_)) = stream.chunk().await {
        events += 1;
    }
    assert!(events >= 5, "{events} events after the first");
}
