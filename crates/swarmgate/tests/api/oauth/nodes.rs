//! The node flow of seed 004: node tokens, registration, heartbeats,
//! reports, staleness, and an operator stopping a node.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::common::*;

#[tokio::test]
async fn the_node_flow_end_to_end() {
    let s = TestServer::start_with_manual_clock(|c| c.nodes.stale_after_seconds = 1).await;
    let admin = s.admin_token().await;

    // Admin mints a node token (also at the seed-004 path).
    let r = s
        .post_auth("/auth/nodes/token", &admin, json!({"node_id": "worker-1"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let minted: Value = r.json().await.unwrap();
    assert_eq!(minted["node_id"], "worker-1");
    assert_eq!(minted["expires_in"], 1800);
    let node = minted["access_token"].as_str().unwrap().to_string();
    let r = s
        .post_auth(
            "/api/auth/node/token",
            &admin,
            json!({"node_id": "worker-2", "ttl_minutes": 5}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["expires_in"], 300);
    let me: Value = s.get_auth("/auth/me", &node).await.json().await.unwrap();
    assert_eq!(me["role"], "node");
    assert_eq!(me["node_id"], "worker-1");

    // A plain user may not mint, read nodes or report.
    let user = s.user_session("plain").await;
    let user = user["access_token"].as_str().unwrap();
    expect_error(
        s.post_auth("/auth/nodes/token", user, json!({"node_id": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.get_auth("/api/metrics/nodes", user).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            user,
            json!({"node_id": "worker-1", "metrics": {}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // A node may not mint tokens or read everyone.
    expect_error(
        s.post_auth("/auth/nodes/token", &node, json!({"node_id": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.get_auth("/api/metrics/nodes", &node).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    // The node registers and reports.
    let r = s
        .post_auth(
            "/nodes/register",
            &node,
            json!({"node_id": "worker-1", "address": "10.0.0.5:9000", "labels": {"zone": "a"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .post_auth("/nodes/heartbeat", &node, json!({"node_id": "worker-1"}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": {"cpu_percent": 12.5, "tasks": 3}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Only for itself, and at most 64 KiB.
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-2", "metrics": {}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    expect_error(
        s.post_auth("/nodes/register", &node, json!({"node_id": "worker-2"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let big = "x".repeat(70 * 1024);
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": {"blob": big}}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": [1]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // The admin reads it: fresh first, stale after the threshold.
    let nodes: Value = s
        .get_auth("/api/metrics/nodes", &admin)
        .await
        .json()
        .await
        .unwrap();
    let item = &nodes["items"][0];
    assert_eq!(item["node_id"], "worker-1");
    assert_eq!(item["address"], "10.0.0.5:9000");
    assert_eq!(item["labels"], json!({"zone": "a"}));
    assert_eq!(item["metrics"], json!({"cpu_percent": 12.5, "tasks": 3}));
    assert_eq!(item["stale"], false);
    assert!(item["last_report_at"].is_string());
    s.advance(std::time::Duration::from_millis(2100));
    let nodes: Value = s
        .get_auth("/api/metrics/nodes", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(nodes["items"][0]["stale"], true, "{nodes}");
    assert!(nodes["items"][0]["age_seconds"].as_i64().unwrap() >= 2);

    // Revoking the node token stops it.
    let (id, secret) = secret_client(&s, &admin, "client_secret_basic", &["tasks.read"]).await;
    let (status, _) = basic_form(&s, "/auth/revoke", &id, &secret, &[("token", &node)]).await;
    assert_eq!(status, StatusCode::OK);
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            &node,
            json!({"node_id": "worker-1", "metrics": {}}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
}

#[tokio::test]
async fn a_node_may_be_a_private_key_jwt_client() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let client = JwtClient::new(&s, &admin, ClientKey::p256()).await;
    let (status, body) = with_assertion(&s, &client.assertion(|_| {})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let r = s
        .post_auth(
            "/api/metrics/report",
            token,
            json!({"node_id": client.id, "metrics": {"load": 1}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        s.post_auth(
            "/api/metrics/report",
            token,
            json!({"node_id": "someone-else", "metrics": {}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn an_operator_stops_every_token_of_a_node_at_once() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let mint = |node: &'static str| {
        let (s, admin) = (&s, admin.clone());
        async move {
            let r = s
                .post_auth("/auth/nodes/token", &admin, json!({"node_id": node}))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let (first, second, other) = (
        mint("lost-1").await,
        mint("lost-1").await,
        mint("kept-1").await,
    );
    for token in [&first, &second, &other] {
        assert_eq!(s.get_auth("/auth/me", token).await.status(), StatusCode::OK);
    }
    // Only an operator may do it.
    expect_error(
        s.post_auth("/auth/nodes/lost-1/revoke", &first, json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let r = s
        .post_auth("/auth/nodes/lost-1/revoke", &admin, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for token in [&first, &second] {
        expect_error(
            s.get_auth("/auth/me", token).await,
            StatusCode::UNAUTHORIZED,
            "session_revoked",
        )
        .await;
    }
    assert_eq!(
        s.get_auth("/auth/me", &other).await.status(),
        StatusCode::OK
    );
    // A token minted afterwards, even within the same second, works, and a
    // second revocation right away still covers it.
    let fresh = mint("lost-1").await;
    assert_eq!(
        s.get_auth("/auth/me", &fresh).await.status(),
        StatusCode::OK
    );
    let r = s
        .post_auth("/auth/nodes/lost-1/revoke", &admin, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        s.get_auth("/auth/me", &fresh).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    let fresher = mint("lost-1").await;
    assert_eq!(
        s.get_auth("/auth/me", &fresher).await.status(),
        StatusCode::OK
    );
    expect_error(
        s.post_auth("/auth/nodes/bad id/revoke", &admin, json!({}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}
