//! The shared-state rules against a real Redis (`TEST_REDIS_URL`), with two
//! independent handles standing in for two swarmgate instances. Each test
//! uses its own key namespace.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "tests: a failed unwrap or index is the failure report"
)]

use std::time::Duration;

use swarmgate_state::{LockoutPolicy, LoginGate, Rate, RateDecision, SharedState, StateError};

fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("SWARMGATE_REQUIRE_SERVICES").is_some() => {
            panic!("TEST_REDIS_URL must be set when SWARMGATE_REQUIRE_SERVICES is set")
        }
        _ => {
            eprintln!("TEST_REDIS_URL unset: Redis suite not run");
            None
        }
    }
}

/// Two handles on one namespace: what two instances would hold.
async fn two_instances() -> Option<(SharedState, SharedState)> {
    let url = redis_url()?;
    let ns = format!("sgtest-{}", swarmgate_core::random::uuid_simple());
    let a = SharedState::redis(&url, &ns, Duration::from_millis(300))
        .await
        .unwrap();
    let b = SharedState::redis(&url, &ns, Duration::from_millis(300))
        .await
        .unwrap();
    a.mark_complete().await.unwrap();
    Some((a, b))
}

#[tokio::test]
async fn revocation_is_seen_by_the_other_instance_and_expires() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    assert!(!b.is_session_revoked("s1", 0).await.unwrap());
    a.revoke_session("s1", 1_000_300, 1_000_000).await.unwrap();
    assert!(b.is_session_revoked("s1", 1_000_000).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!b.is_session_revoked("s1", 1_000_400).await.unwrap());
}

#[tokio::test]
async fn gcra_burst_is_shared_not_multiplied() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let rate = Rate::per_minute(5);
    let mut allowed = 0;
    for i in 0..10 {
        let state = if i % 2 == 0 { &a } else { &b };
        if state.rate_limit("ip", rate, 50_000).await.unwrap() == RateDecision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5, "two instances must share one limit of 5");
    assert_eq!(
        a.rate_limit("ip", rate, 50_000).await.unwrap(),
        RateDecision::Limited {
            retry_after_ms: 12_000
        }
    );
    assert_eq!(
        b.rate_limit("ip", rate, 62_000).await.unwrap(),
        RateDecision::Allowed
    );
}

#[tokio::test]
async fn parallel_login_attempts_never_exceed_the_threshold() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let policy = LockoutPolicy {
        threshold: 5,
        window: Duration::from_secs(900),
        lock_for: Duration::from_secs(900),
    };
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let state = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { state.login_attempt("user:x", policy, 0).await.unwrap() })
        })
        .collect();
    let mut proceeded = 0;
    for t in tasks {
        if t.await.unwrap() == LoginGate::Proceed {
            proceeded += 1;
        }
    }
    assert_eq!(proceeded, 5);
    let mut engaged = 0;
    for _ in 0..5 {
        engaged += usize::from(a.login_failed("user:x", policy, 0).await.unwrap());
    }
    assert_eq!(engaged, 1, "the lock engages exactly once");
    match b.login_attempt("user:x", policy, 0).await.unwrap() {
        LoginGate::Locked { retry_after_ms } => assert!(retry_after_ms > 890_000),
        other => panic!("expected locked, got {other:?}"),
    }
    b.login_succeeded("user:y").await.unwrap();
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_an_allow() {
    // A port nothing listens on: the handle is created (so a server can
    // start and report it), but every decision fails and says why.
    let state = SharedState::redis("redis://127.0.0.1:1/", "x", Duration::from_millis(300))
        .await
        .unwrap();
    let policy = LockoutPolicy {
        threshold: 5,
        window: Duration::from_secs(60),
        lock_for: Duration::from_secs(60),
    };
    assert!(matches!(
        state.ping().await,
        Err(StateError::Unavailable(_))
    ));
    assert!(matches!(
        state.is_session_revoked("s", 0).await,
        Err(StateError::Unavailable(_))
    ));
    assert!(matches!(
        state.rate_limit("k", Rate::per_minute(5), 0).await,
        Err(StateError::Unavailable(_))
    ));
    assert!(matches!(
        state.login_attempt("k", policy, 0).await,
        Err(StateError::Unavailable(_))
    ));
    match SharedState::redis("http://not-redis", "x", Duration::from_millis(300)).await {
        Err(StateError::Config(_)) => {}
        other => panic!(
            "a malformed URL is a configuration error: {:?}",
            other.is_ok()
        ),
    }
}

#[tokio::test]
async fn key_revocations_and_user_versions_are_shared() {
    use swarmgate_state::Revocable;
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let status = b
        .credential_status(Revocable::ApiKey, "k1", "u1", 0)
        .await
        .unwrap();
    assert!(!status.revoked);
    assert_eq!(status.user_version, 0);
    a.revoke(Revocable::ApiKey, "k1", 60_000, 0).await.unwrap();
    a.bump_user("u1").await.unwrap();
    let status = b
        .credential_status(Revocable::ApiKey, "k1", "u1", 0)
        .await
        .unwrap();
    assert!(status.revoked);
    assert_eq!(status.user_version, 1);
    // A session with the same id is a different credential.
    assert!(
        !b.credential_status(Revocable::Session, "k1", "u1", 0)
            .await
            .unwrap()
            .revoked
    );
    b.unlock("nothing-locked").await.unwrap();
}

#[tokio::test]
async fn a_redis_that_lost_its_state_fails_closed_until_marked_complete() {
    use swarmgate_state::Revocable;
    let Some(url) = redis_url() else {
        return;
    };
    let ns = format!("sgtest-{}", swarmgate_core::random::uuid_simple());
    let state = SharedState::redis(&url, &ns, Duration::from_millis(300))
        .await
        .unwrap();
    // A fresh namespace looks exactly like a Redis that restarted empty.
    assert!(state.lost_state().await.unwrap());
    assert!(matches!(
        state
            .credential_status(Revocable::Session, "s", "u", 0)
            .await,
        Err(StateError::Unavailable(_))
    ));
    state.mark_complete().await.unwrap();
    assert!(!state.lost_state().await.unwrap());
    assert!(
        !state
            .credential_status(Revocable::Session, "s", "u", 0)
            .await
            .unwrap()
            .revoked
    );
}

#[tokio::test]
async fn a_claim_is_won_by_exactly_one_instance_until_it_expires() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    assert!(a.claim_once("jti:c:1", 1_000_300, 1_000_000).await.unwrap());
    assert!(!b.claim_once("jti:c:1", 1_000_300, 1_000_000).await.unwrap());
    assert!(!a.claim_once("jti:c:1", 1_000_300, 1_000_000).await.unwrap());
    assert!(b.claim_once("jti:c:2", 1_000_300, 1_000_000).await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.claim_once("jti:c:1", 1_000_700, 1_000_400).await.unwrap());
}
