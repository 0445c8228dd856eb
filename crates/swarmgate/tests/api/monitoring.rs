//! The JSON monitoring API (`/api/metrics/*`): real figures from the
//! collector, request counting through the middleware, and who may read.
//!
//! The snapshot and the request counters are process-wide, and other tests
//! run servers in this process at the same time, so counts are compared
//! with "at least", never "exactly".

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

async fn fast_collector() -> TestServer {
    TestServer::start_with(|config| config.nodes.metrics_interval_seconds = 1).await
}

async fn get_json(s: &TestServer, path: &str, token: &str) -> Value {
    let r = s.get_auth(path, token).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

/// Polls `path` until `done` holds for its body; the collector refreshes
/// every second here, so 5 s is plenty.
async fn wait_for(s: &TestServer, path: &str, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let body = get_json(s, path, token).await;
        if done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never satisfied the condition; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_needs_no_credentials() {
    let s = fast_collector().await;
    let r = s
        .client
        .get(s.url("/api/metrics/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["uptime_seconds"].is_u64(), "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn system_metrics_are_real() {
    let s = fast_collector().await;
    let admin = s.admin_token().await;
    let body = get_json(&s, "/api/metrics/system", &admin).await;
    assert!(body["cpu"]["count"].as_u64().unwrap() >= 1, "{body}");
    let memory = &body["memory"];
    let total = memory["total"].as_u64().unwrap();
    assert!(total > 0, "{body}");
    assert!(memory["available"].as_u64().unwrap() <= total);
    assert_eq!(
        memory["used"].as_u64().unwrap() + memory["available"].as_u64().unwrap(),
        total
    );
    let disk = &body["disk"];
    assert!(disk["total"].as_u64().unwrap() > 0, "{body}");
    assert!(disk["free"].as_u64().unwrap() <= disk["total"].as_u64().unwrap());
    assert!((0.0..=100.0).contains(&disk["percent"].as_f64().unwrap()));
    assert!(body["network"]["connections"].is_u64(), "{body}");
    assert!(body["platform"]["system"].is_string(), "{body}");
    assert!(body["uptime_seconds"].as_u64().unwrap() > 0, "{body}");
    time::OffsetDateTime::parse(
        body["collected_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    if cfg!(target_os = "linux") {
        // This test's own connection to the server is one of them.
        assert!(
            body["network"]["connections"].as_u64().unwrap() >= 1,
            "{body}"
        );
    }
    // CPU usage needs two readings; the collector's warm-up pass gives it.
    let body = wait_for(&s, "/api/metrics/system", &admin, |b| {
        b["cpu"]["percent"].is_number()
    })
    .await;
    let cpu = body["cpu"]["percent"].as_f64().unwrap();
    assert!(cpu >= 0.0, "{body}");
}

#[tokio::test]
async fn application_metrics_count_requests() {
    let s = fast_collector().await;
    let admin = s.admin_token().await;
    let before = get_json(&s, "/api/metrics/application", &admin).await;
    let process = &before["process"];
    assert!(
        process["memory_rss_bytes"].as_u64().unwrap() > 0,
        "{before}"
    );
    assert!(
        process["memory_virtual_bytes"].as_u64().unwrap()
            >= process["memory_rss_bytes"].as_u64().unwrap()
    );
    if cfg!(target_os = "linux") {
        assert!(process["threads"].as_u64().unwrap() >= 1, "{before}");
        assert!(process["open_files"].as_u64().unwrap() >= 1, "{before}");
    }
    assert_eq!(process["pid"], std::process::id());

    let total_before = before["requests"]["total"].as_u64().unwrap();
    let errors_before = before["requests"]["errors"].as_u64().unwrap();
    for _ in 0..5 {
        assert_eq!(
            s.get_auth("/auth/me", &admin).await.status(),
            StatusCode::OK
        );
    }
    // Two 404s: errors are responses of 400 and more.
    for _ in 0..2 {
        let r = s.get_auth("/admin/users/no-such-user", &admin).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let after = wait_for(&s, "/api/metrics/application", &admin, |b| {
        b["requests"]["total"].as_u64().unwrap() >= total_before + 7
    })
    .await;
    assert!(
        after["requests"]["errors"].as_u64().unwrap() >= errors_before + 2,
        "{after}"
    );
    assert!(
        after["requests"]["server_errors"].as_u64().unwrap()
            <= after["requests"]["errors"].as_u64().unwrap()
    );

    let timed = wait_for(&s, "/api/metrics/application", &admin, |b| {
        b["response_time_ms"]["count"].as_u64().unwrap() > 0
    })
    .await;
    let times = &timed["response_time_ms"];
    let p50 = times["p50"].as_f64().unwrap();
    let p90 = times["p90"].as_f64().unwrap();
    let p99 = times["p99"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99, "{timed}");
    assert!(times["window_seconds"].as_f64().unwrap() > 0.0, "{timed}");
}

#[tokio::test]
async fn all_has_both_parts() {
    let s = fast_collector().await;
    let admin = s.admin_token().await;
    let body = get_json(&s, "/api/metrics/all", &admin).await;
    assert!(
        body["system"]["memory"]["total"].as_u64().unwrap() > 0,
        "{body}"
    );
    assert!(
        body["application"]["process"]["memory_rss_bytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{body}"
    );
    assert!(body["application"]["requests"]["total"].is_u64(), "{body}");
}

#[tokio::test]
async fn reading_metrics_needs_metrics_read() {
    let s = fast_collector().await;
    let paths = [
        "/api/metrics/system",
        "/api/metrics/application",
        "/api/metrics/all",
    ];
    for path in paths {
        let r = s.client.get(s.url(path)).send().await.unwrap();
        expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    }
    let session = s.user_session("plain").await;
    let user = session["access_token"].as_str().unwrap();
    for path in paths {
        let err = expect_error(
            s.get_auth(path, user).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert!(err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metrics.read"));
    }
    // A key narrowed to metrics.read is enough; an admin's key without it
    // is not.
    let admin = s.admin_token().await;
    let reader = s.create_key(&admin, &["metrics.read"]).await;
    let reader = reader["key"].as_str().unwrap();
    let other = s.create_key(&admin, &["users.manage"]).await;
    let other = other["key"].as_str().unwrap();
    for path in paths {
        assert_eq!(
            s.get_auth(path, reader).await.status(),
            StatusCode::OK,
            "{path}"
        );
        expect_error(
            s.get_auth(path, other).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
}
