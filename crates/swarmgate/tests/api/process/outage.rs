//! Two instances on one PostgreSQL and Redis, and each of them going
//! away: answered 503 naming what is down, never trusted on faith.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use swarmgate_store::testing::{fresh_postgres_database, test_database_url};

use super::*;
use crate::common::*;

#[tokio::test]
async fn two_instances_on_one_postgres_and_redis_share_revocation() {
    let (Some(admin_url), Some(redis)) = (test_database_url(), redis_url()) else {
        eprintln!("TEST_DATABASE_URL/TEST_REDIS_URL unset: two-instance test not run");
        return;
    };
    let database = fresh_postgres_database(&admin_url).await.unwrap();
    let namespace = format!("sgtest-{}", swarmgate_core::random::uuid_simple());
    let shared = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("DATABASE_URL", database.clone()),
            ("REDIS_URL", redis.clone()),
            ("SWARMGATE_REDIS__NAMESPACE", namespace.clone()),
            (
                "SWARMGATE_SERVER__PUBLIC_URL",
                "http://swarmgate.test".to_string(),
            ),
        ];
        env.extend_from_slice(extra);
        env
    };
    let a = Process::serve(&shared(&[])).await;
    let b = Process::serve(&shared(&[])).await;
    let client = Client::new();
    let session = login(&client, &a.base, "admin", ADMIN_PASSWORD).await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(
        me_status(&client, &b.base, token).await,
        StatusCode::OK,
        "B accepts A's token"
    );
    let r = client
        .post(format!("{}/auth/logout", a.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let logged_out = std::time::Instant::now();
    // The very next request on B already fails: well inside the 1 s rule.
    let status = me_status(&client, &b.base, token).await;
    let elapsed = logged_out.elapsed();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    // A key revoked on A fails on B on the very next request.
    let fresh = login(&client, &a.base, "admin", ADMIN_PASSWORD).await;
    let r = client
        .post(format!("{}/auth/api-keys", a.base))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .json(&json!({"name": "shared", "permissions": ["tasks.read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let check = |base: String| {
        let client = client.clone();
        let key = created["key"].as_str().unwrap().to_string();
        async move {
            client
                .post(format!("{base}/auth/verify-permission"))
                .header("x-api-key", key)
                .json(&json!({"permission": "tasks.read"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(check(b.base.clone()).await, StatusCode::OK);
    let r = client
        .delete(format!(
            "{}/auth/api-keys/{}",
            a.base,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = std::time::Instant::now();
    assert_eq!(check(b.base.clone()).await, StatusCode::UNAUTHORIZED);
    assert!(revoked.elapsed() < Duration::from_secs(1));
    // Lockout and rate limits are shared too: five failures on A lock B.
    for _ in 0..5 {
        client
            .post(format!("{}/auth/login", a.base))
            .json(&json!({"username": "admin", "password": "Wrong!Pass1"}))
            .send()
            .await
            .unwrap();
    }
    let r = client
        .post(format!("{}/auth/login", b.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::LOCKED);
    // Both instances sign with the one key kept in the database.
    let ja: Value = client
        .get(format!("{}/.well-known/jwks.json", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jb: Value = client
        .get(format!("{}/.well-known/jwks.json", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ja, jb);
    let health: Value = client
        .get(format!("{}/health", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["redis"], "ok");
    assert_eq!(health["database"], "ok");
}

#[tokio::test]
async fn redis_down_fails_closed_with_503_and_health_says_why() {
    let Some(_) = redis_url() else {
        eprintln!("TEST_REDIS_URL unset: Redis failure test not run");
        return;
    };
    // A private Redis we are allowed to kill.
    let port = free_port();
    let mut redis = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed to run this test");
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = Process::serve(&[("REDIS_URL", url)]).await;
    let client = Client::new();
    let session = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(me_status(&client, &p.base, token).await, StatusCode::OK);

    redis.kill().await.unwrap();
    redis.wait().await.unwrap();

    let r = client
        .get(format!("{}/auth/me", p.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("redis"),
        "{body}"
    );
    let r = client
        .post(format!("{}/auth/login", p.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "login fails closed as well"
    );
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["redis"]));
    assert!(
        health["redis"].as_str().unwrap().starts_with("error"),
        "{health}"
    );
    assert_eq!(health["database"], "ok");
}

#[tokio::test]
async fn redis_unreachable_at_start_still_starts_and_fails_closed() {
    let port = free_port();
    let p = Process::serve_unready(&[("REDIS_URL", format!("redis://127.0.0.1:{port}"))]).await;
    let client = Client::new();
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["redis"]));
    let r = client
        .post(format!("{}/auth/login", p.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn database_down_is_503_naming_the_database() {
    let Some(admin_url) = test_database_url() else {
        eprintln!("TEST_DATABASE_URL unset: database failure test not run");
        return;
    };
    let database = fresh_postgres_database(&admin_url).await.unwrap();
    let name = database
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let p = Process::serve(&[("DATABASE_URL", database.clone())]).await;
    let client = Client::new();
    let session = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    // Take the database away: no new connections, existing ones killed.
    let admin =
        swarmgate_store::Store::connect(&fresh_postgres_database(&admin_url).await.unwrap())
            .await
            .unwrap();
    admin
        .raw_execute_for_tests(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .raw_execute_for_tests(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["database"]));
    let r = client
        .get(format!("{}/auth/me", p.base))
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("database"));
    admin
        .raw_execute_for_tests(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
}
