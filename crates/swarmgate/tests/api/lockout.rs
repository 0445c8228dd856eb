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
    let r = s
        .post(
            "/auth/login",
            json!({"username": "OLGA", "password": PASSWORD}),
        )
        .await;
    expect_error(r, StatusCode::LOCKED, "account_locked").await;
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
async fn a_lock_reveals_nothing_about_which_emails_exist() {
    // Lockout is per login name as typed: locking "olga" must not make her
    // email answer differently from an email that belongs to nobody.
    let s = TestServer::start().await;
    s.register("olga").await;
    for _ in 0..5 {
        s.post(
            "/auth/login",
            json!({"username": "olga", "password": "Wrong!Pass1"}),
        )
        .await;
    }
    let real = s
        .post(
            "/auth/login",
            json!({"username": "olga@example.com", "password": "Wrong!Pass1"}),
        )
        .await;
    let fake = s
        .post(
            "/auth/login",
            json!({"username": "nobody@example.com", "password": "Wrong!Pass1"}),
        )
        .await;
    assert_eq!(real.status(), fake.status());
    assert_eq!(
        real.json::<Value>().await.unwrap(),
        fake.json::<Value>().await.unwrap()
    );
}

#[tokio::test]
async fn login_names_no_account_can_have_are_401_not_500() {
    let s = TestServer::start().await;
    for name in ["nul\u{0}byte", "\u{7}bell", &"x".repeat(300), ""] {
        let r = s
            .post(
                "/auth/login",
                json!({"username": name, "password": "Wrong!Pass1"}),
            )
            .await;
        expect_error(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // A password typed into the username box is not written to the audit trail.
    let events = s.store().await.recent_audit(50).await.unwrap();
    assert!(events
        .iter()
        .all(|e| e.username.as_deref().is_none_or(|u| !u.contains('\u{0}'))));
}

#[tokio::test]
async fn wrong_current_passwords_lock_password_change() {
    let s = TestServer::start().await;
    let session = s.user_session("rita").await;
    let token = session["access_token"].as_str().unwrap();
    for _ in 0..5 {
        let r = s
            .post_auth(
                "/auth/change-password",
                token,
                json!({"current_password": "Wrong!Pass1", "new_password": "N3w!Password-Rita"}),
            )
            .await;
        expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let r = s
        .post_auth(
            "/auth/change-password",
            token,
            json!({"current_password": PASSWORD, "new_password": "N3w!Password-Rita"}),
        )
        .await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, StatusCode::LOCKED, "account_locked").await;
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
