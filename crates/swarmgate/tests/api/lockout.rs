//! Brute-force defences: indistinguishable failures, per-username lockout
//! that also covers unknown names, and atomic counting under a race.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn unknown_user_and_wrong_password_look_identical() {
    let s = TestServer::start().await;
    s.register("nina").await;
    let wrong = s
        .post(
            "/auth/login",
            json!({"username": "nina", "password": "Wrong!Pass1"}),
        )
        .await;
    let unknown = s
        .post(
            "/auth/login",
            json!({"username": "nobody-here", "password": "Wrong!Pass1"}),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), wrong.status());
    assert_eq!(
        wrong.headers()["www-authenticate"],
        unknown.headers()["www-authenticate"]
    );
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"]["code"], "invalid_credentials");
}

#[tokio::test]
async fn lockout_triggers_for_an_unknown_username_too() {
    let s = TestServer::start().await;
    for _ in 0..5 {
        let r = s
            .post(
                "/auth/login",
                json!({"username": "ghost", "password": "Wrong!Pass1"}),
            )
            .await;
        expect_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let r = s
        .post(
            "/auth/login",
            json!({"username": "ghost", "password": "Wrong!Pass1"}),
        )
        .await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((14 * 60..=15 * 60).contains(&retry), "{retry}");
    expect_error(r, StatusCode::LOCKED, "account_locked").await;
}

#[tokio::test]
async fn lockout_of_a_real_user_refuses_even_the_right_password() {
    let s = TestServer::start().await;
    s.register("olga").await;
    for _ in 0..5 {
        let r = s
            .post(
                "/auth/login",
                json!({"username": "olga", "password": "Wrong!Pass1"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // By email too: the lock is on the account, not the spelling.
    for login in ["olga", "olga@example.com"] {
        let r = s
            .post(
                "/auth/login",
                json!({"username": login, "password": PASSWORD}),
            )
            .await;
        expect_error(r, StatusCode::LOCKED, "account_locked").await;
    }
    let events = s.store().await.recent_audit(100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event == "account_locked")
            .count(),
        1
    );
}

#[tokio::test]
async fn twenty_parallel_wrong_passwords_evaluate_at_most_the_threshold() {
    let s = TestServer::start().await;
    s.register("pete").await;
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let client = s.client.clone();
            let url = s.url("/auth/login");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"username": "pete", "password": "Wrong!Pass1"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut evaluated = 0;
    let mut locked = 0;
    for a in attempts {
        match a.await.unwrap() {
            StatusCode::UNAUTHORIZED => evaluated += 1,
            StatusCode::LOCKED => locked += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(evaluated <= 5, "{evaluated} passwords were evaluated");
    assert_eq!(evaluated + locked, 20);
    // The audit trail agrees: no more than five wrong-password evaluations.
    let events = s.store().await.recent_audit(200).await.unwrap();
    let wrong = events
        .iter()
        .filter(|e| e.event == "login_failed" && e.detail["reason"] == "wrong_password")
        .count();
    assert!(wrong <= 5, "{wrong} evaluations in the audit trail");
    let r = s
        .post(
            "/auth/login",
            json!({"username": "pete", "password": PASSWORD}),
        )
        .await;
    expect_error(r, StatusCode::LOCKED, "account_locked").await;
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_count() {
    let s = TestServer::start().await;
    s.register("quin").await;
    for _ in 0..4 {
        s.post(
            "/auth/login",
            json!({"username": "quin", "password": "Wrong!Pass1"}),
        )
        .await;
    }
    s.login("quin", PASSWORD).await;
    for _ in 0..4 {
        let r = s
            .post(
                "/auth/login",
                json!({"username": "quin", "password": "Wrong!Pass1"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    s.login("quin", PASSWORD).await;
}
