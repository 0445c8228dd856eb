//! Slow and hostile clients: headers trickled a byte at a time (slowloris)
//! and bodies trickled slowly are cut off on the configured limits, and
//! meanwhile other clients are answered as usual.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Writes `bytes` one at a time, `every` apart, until the server closes
/// the connection; returns how long that took, or `None` when everything
/// was written.
async fn trickle(
    mut stream: TcpStream,
    bytes: Vec<u8>,
    every: Duration,
) -> (Option<Duration>, String) {
    let started = Instant::now();
    for byte in bytes {
        if stream.write_all(&[byte]).await.is_err() {
            return (Some(started.elapsed()), String::new());
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(every, stream.read(&mut buf)).await {
            Err(_) => {} // nothing from the server yet
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), String::new()),
            Ok(Ok(n)) => {
                let mut answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest))
                    .await;
                answer.push_str(&String::from_utf8_lossy(&rest));
                return (Some(started.elapsed()), answer);
            }
        }
    }
    (None, String::new())
}

/// Answers to `/health` on fresh connections while `during` runs, each
/// checked to be a prompt 200.
async fn others_are_answered<T>(base: &str, during: impl std::future::Future<Output = T>) -> T {
    let client = Client::new();
    tokio::pin!(during);
    let mut answered = 0;
    loop {
        tokio::select! {
            out = &mut during => {
                assert!(answered >= 5, "only {answered} other requests were answered");
                return out;
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let started = Instant::now();
                let r = client.get(format!("{base}/health")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
                answered += 1;
            }
        }
    }
}

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off() {
    let p = Process::serve(&[("SWARMGATE_SERVER__HEADER_TIMEOUT_MS", "1000".into())]).await;
    let addr = p.base.trim_start_matches("http://").to_string();
    let head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n".to_vec();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let stream = TcpStream::connect(&addr).await.unwrap();
        clients.push(tokio::spawn(trickle(
            stream,
            head.clone(),
            Duration::from_millis(100),
        )));
    }
    let cut = others_are_answered(&p.base, futures_util::future::join_all(clients)).await;
    for outcome in cut {
        let (cut_after, _) = outcome.unwrap();
        let cut_after = cut_after.expect("a trickled request head was read to its end");
        assert!(
            cut_after < Duration::from_secs(4),
            "cut off only after {cut_after:?}"
        );
    }
}

#[tokio::test]
async fn a_body_trickled_slowly_is_answered_408() {
    let p = Process::serve(&[("SWARMGATE_SERVER__BODY_TIMEOUT_MS", "1000".into())]).await;
    let addr = p.base.trim_start_matches("http://").to_string();
    let body = format!(r#"{{"username": "admin", "password": "{ADMIN_PASSWORD}"}}"#);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        clients.push(tokio::spawn(trickle(
            stream,
            body.clone().into_bytes(),
            Duration::from_millis(200),
        )));
    }
    let answers = others_are_answered(&p.base, futures_util::future::join_all(clients)).await;
    for outcome in answers {
        let (after, answer) = outcome.unwrap();
        let after = after.expect("a trickled body was read to its end");
        assert!(
            after < Duration::from_secs(4),
            "answered only after {after:?}"
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
}
