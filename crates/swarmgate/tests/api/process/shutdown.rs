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
