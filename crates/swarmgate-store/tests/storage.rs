//! The behavioural suite of the store, run against SQLite always and against
//! PostgreSQL when `TEST_DATABASE_URL` is set (each test in a database of
//! its own).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "tests: a failed unwrap or index is the failure report"
)]

use swarmgate_core::{ApiKey, AuditEvent, NewUser, SigningKeyRow};
use swarmgate_store::testing::{fresh_postgres_database, fresh_sqlite_url, test_database_url};
use swarmgate_store::{
    AuditFilter, Backend, RefreshOutcome, Session, Store, StoreError, UsageGroup, UsageRecord,
    UserUpdate,
};

async fn sqlite() -> Store {
    let store = Store::connect(&fresh_sqlite_url()).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store
}

async fn postgres() -> Option<Store> {
    let admin = test_database_url()?;
    let url = fresh_postgres_database(&admin).await.unwrap();
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    Some(store)
}

/// Runs one suite function on both engines.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite_suite {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite().await).await })*
        }
        mod postgres_suite {
            $(#[tokio::test] async fn $name() {
                match super::postgres().await {
                    Some(store) => super::$name(store).await,
                    None => eprintln!("TEST_DATABASE_URL unset: PostgreSQL suite not run"),
                }
            })*
        }
    };
}

on_both!(
    users_are_unique_case_insensitively,
    login_lookup_by_username_or_email,
    password_history_keeps_newest_first,
    refresh_rotation_and_reuse_detection,
    concurrent_refresh_rotates_exactly_once,
    revoking_user_sessions_keeps_the_current_one,
    signing_keys_first_key_is_created_once_and_rotation_retires,
    audit_is_append_only,
    migrations_are_idempotent,
    api_keys_are_found_by_hash_and_revoked,
    users_are_listed_by_keyset_and_searched,
    user_updates_and_deletes_are_recorded,
    a_disable_revokes_in_the_same_transaction,
    audit_query_filters_and_pages,
    usage_is_summed_by_group_and_caller,
);

fn new_user(name: &str, email: &str) -> NewUser {
    NewUser {
        id: swarmgate_core::random::uuid_string(),
        username: name.into(),
        email: email.into(),
        full_name: Some("Test User".into()),
        role: "user".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        created_at: 1_700_000_000,
    }
}

async fn users_are_unique_case_insensitively(store: Store) {
    let user = store
        .create_user(&new_user("Alice", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(user.username, "Alice");
    assert!(!user.disabled);
    assert_eq!(store.count_users().await.unwrap(), 1);
    match store
        .create_user(&new_user("alice", "other@example.com"))
        .await
    {
        Err(StoreError::Conflict { field }) => assert_eq!(field, "username"),
        other => panic!("expected username conflict, got {other:?}"),
    }
    match store
        .create_user(&new_user("bob", "ALICE@example.com"))
        .await
    {
        Err(StoreError::Conflict { field }) => assert_eq!(field, "email"),
        other => panic!("expected email conflict, got {other:?}"),
    }
    assert_eq!(store.count_users().await.unwrap(), 1);
    store.set_user_disabled(&user.id, true, 5).await.unwrap();
    assert!(store.get_user(&user.id).await.unwrap().disabled);
    assert!(matches!(
        store.get_user("nope").await,
        Err(StoreError::NotFound)
    ));
}

async fn login_lookup_by_username_or_email(store: Store) {
    let user = store
        .create_user(&new_user("carol", "carol@example.com"))
        .await
        .unwrap();
    for login in ["carol", "CAROL", "carol@example.com", "Carol@Example.com"] {
        let found = store.find_user_by_login(login).await.unwrap().unwrap();
        assert_eq!(found.id, user.id, "{login}");
    }
    assert!(store.find_user_by_login("nobody").await.unwrap().is_none());
}

async fn password_history_keeps_newest_first(store: Store) {
    let user = store
        .create_user(&new_user("dave", "dave@example.com"))
        .await
        .unwrap();
    for (i, hash) in ["h1", "h2", "h3"].iter().enumerate() {
        store
            .set_password(&user.id, hash, 1_700_000_100 + i as i64)
            .await
            .unwrap();
    }
    let recent = store.recent_password_hashes(&user.id, 2).await.unwrap();
    assert_eq!(recent, vec!["h3".to_string(), "h2".to_string()]);
    // Several changes within one second keep their order.
    for hash in ["s1", "s2", "s3", "s4", "s5", "s6"] {
        store
            .set_password(&user.id, hash, 1_700_000_500)
            .await
            .unwrap();
    }
    let recent = store.recent_password_hashes(&user.id, 5).await.unwrap();
    assert_eq!(recent, ["s6", "s5", "s4", "s3", "s2"]);
    assert_eq!(store.get_user(&user.id).await.unwrap().password_hash, "s6");
    assert!(matches!(
        store.set_password("missing", "h", 1).await,
        Err(StoreError::NotFound)
    ));
}

async fn session_for(store: &Store, user_id: &str, refresh_hash: &str) -> Session {
    let session = Session {
        id: swarmgate_core::random::uuid_string(),
        user_id: user_id.into(),
        created_at: 1_000,
        expires_at: 10_000,
        revoked_at: None,
    };
    store
        .create_session(&session, refresh_hash, 10_000)
        .await
        .unwrap();
    session
}

async fn refresh_rotation_and_reuse_detection(store: Store) {
    let user = store
        .create_user(&new_user("erin", "erin@example.com"))
        .await
        .unwrap();
    let session = session_for(&store, &user.id, "r1").await;

    let rotated = store
        .rotate_refresh_token("r1", "r2", 2_000, 9_000)
        .await
        .unwrap();
    assert_eq!(
        rotated,
        RefreshOutcome::Rotated {
            session_id: session.id.clone(),
            user_id: user.id.clone()
        }
    );
    // r1 again: reuse, and the whole session is revoked.
    let reused = store
        .rotate_refresh_token("r1", "r3", 2_100, 9_000)
        .await
        .unwrap();
    assert_eq!(
        reused,
        RefreshOutcome::Reused {
            session_id: session.id.clone(),
            user_id: user.id.clone()
        }
    );
    assert_eq!(
        store.get_session(&session.id).await.unwrap().revoked_at,
        Some(2_100)
    );
    // r2 was current but its session is gone now.
    assert_eq!(
        store
            .rotate_refresh_token("r2", "r4", 2_200, 9_000)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        store
            .rotate_refresh_token("unknown", "r5", 2_200, 9_000)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // Expired tokens are refused without counting as reuse.
    let other = session_for(&store, &user.id, "x1").await;
    assert_eq!(
        store
            .rotate_refresh_token("x1", "x2", 10_000, 20_000)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(store.get_session(&other.id).await.unwrap().revoked_at, None);
    let revoked = store.sessions_revoked_since(2_000).await.unwrap();
    assert_eq!(revoked, vec![(session.id, 2_100)]);
}

async fn concurrent_refresh_rotates_exactly_once(store: Store) {
    let user = store
        .create_user(&new_user("frank", "frank@example.com"))
        .await
        .unwrap();
    session_for(&store, &user.id, "c0").await;
    let attempts = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .rotate_refresh_token("c0", &format!("c1-{i}"), 2_000, 9_000)
                .await
        })
    });
    let mut rotated = 0;
    for handle in attempts {
        if let RefreshOutcome::Rotated { .. } = handle.await.unwrap().unwrap() {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);
}

async fn revoking_user_sessions_keeps_the_current_one(store: Store) {
    let user = store
        .create_user(&new_user("grace", "grace@example.com"))
        .await
        .unwrap();
    let keep = session_for(&store, &user.id, "g1").await;
    let a = session_for(&store, &user.id, "g2").await;
    let b = session_for(&store, &user.id, "g3").await;
    let mut revoked = store
        .revoke_user_sessions(&user.id, Some(&keep.id), "password_changed", 3_000)
        .await
        .unwrap();
    revoked.sort();
    let mut expected = vec![a.id.clone(), b.id.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(store.get_session(&keep.id).await.unwrap().revoked_at, None);
    assert_eq!(
        store.get_session(&a.id).await.unwrap().revoked_at,
        Some(3_000)
    );
    // Idempotent: the first revocation time stays.
    store.revoke_session(&a.id, "logout", 4_000).await.unwrap();
    assert_eq!(
        store.get_session(&a.id).await.unwrap().revoked_at,
        Some(3_000)
    );
}

fn key(kid: &str, created_at: i64) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.into(),
        algorithm: "EdDSA".into(),
        private_key: format!("private-{kid}"),
        public_key: format!("public-{kid}"),
        created_at,
        retired_at: None,
    }
}

async fn signing_keys_first_key_is_created_once_and_rotation_retires(store: Store) {
    assert!(store.add_first_signing_key(&key("k1", 100)).await.unwrap());
    assert!(!store.add_first_signing_key(&key("k2", 101)).await.unwrap());
    store.add_signing_key(&key("k3", 200)).await.unwrap();
    let keys = store.signing_keys("EdDSA").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, "k3");
    assert_eq!(keys[0].retired_at, None);
    assert_eq!(keys[1].kid, "k1");
    assert_eq!(keys[1].retired_at, Some(200));
    assert!(store.signing_keys("HS256").await.unwrap().is_empty());
}

async fn audit_is_append_only(store: Store) {
    let event = AuditEvent {
        at: 42,
        event: "login_failed".into(),
        user_id: None,
        username: Some("mallory".into()),
        client_ip: Some("192.0.2.1".into()),
        request_id: Some("req-1".into()),
        outcome: "denied".into(),
        detail: serde_json::json!({ "reason": "unknown_user" }),
    };
    store.append_audit(&event).await.unwrap();
    let rows = store.recent_audit(10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event, "login_failed");
    assert_eq!(rows[0].detail["reason"], "unknown_user");
    assert_eq!(rows[0].client_ip.as_deref(), Some("192.0.2.1"));
    // The database itself refuses to rewrite history.
    assert!(store
        .raw_execute_for_tests("UPDATE audit_events SET outcome = 'x'")
        .await
        .is_err());
    assert!(store
        .raw_execute_for_tests("DELETE FROM audit_events")
        .await
        .is_err());
    assert_eq!(store.recent_audit(10).await.unwrap().len(), 1);
}

async fn migrations_are_idempotent(store: Store) {
    store
        .create_user(&new_user("heidi", "heidi@example.com"))
        .await
        .unwrap();
    store.ping().await.unwrap();
    // Connecting again to the same database applies nothing twice and keeps data.
    let again = store.reconnect_for_tests().await.unwrap();
    assert_eq!(again.count_users().await.unwrap(), 1);
}

fn api_key(id: &str, user_id: &str, hash: &str) -> ApiKey {
    ApiKey {
        id: id.into(),
        user_id: user_id.into(),
        name: format!("key {id}"),
        prefix: "sgk_abcdefgh".into(),
        key_hash: hash.into(),
        permissions: vec!["tasks.read".into(), "memory.read:own".into()],
        models: Some(vec!["phi-3.5-mini".into()]),
        limits: Some(swarmgate_core::LimitSet {
            rpm: Some(5),
            tokens_per_day: Some(1000),
            ..Default::default()
        }),
        created_at: 100,
        expires_at: 10_000,
        last_used_at: None,
        revoked_at: None,
    }
}

async fn api_keys_are_found_by_hash_and_revoked(store: Store) {
    let user = store
        .create_user(&new_user("ivan", "ivan@example.com"))
        .await
        .unwrap();
    store
        .create_api_key(&api_key("k1", &user.id, "h1"))
        .await
        .unwrap();
    store
        .create_api_key(&ApiKey {
            models: None,
            created_at: 200,
            ..api_key("k2", &user.id, "h2")
        })
        .await
        .unwrap();
    let found = store.api_key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(found, api_key("k1", &user.id, "h1"));
    assert!(store.api_key_by_hash("nope").await.unwrap().is_none());
    assert!(
        store
            .create_api_key(&api_key("k3", &user.id, "h1"))
            .await
            .is_err(),
        "hashes are unique"
    );
    let listed: Vec<String> = store
        .list_api_keys(&user.id, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, ["k2", "k1"]);
    assert_eq!(store.api_key("k2").await.unwrap().unwrap().models, None);

    store
        .touch_api_keys(&[("k1".into(), 500), ("k2".into(), 400)])
        .await
        .unwrap();
    store.touch_api_keys(&[("k1".into(), 450)]).await.unwrap();
    assert_eq!(
        store.api_key("k1").await.unwrap().unwrap().last_used_at,
        Some(500),
        "never backwards"
    );

    assert!(store.revoke_api_key("k1", 600).await.unwrap());
    assert!(
        !store.revoke_api_key("k1", 700).await.unwrap(),
        "already revoked"
    );
    assert_eq!(
        store.api_key("k1").await.unwrap().unwrap().revoked_at,
        Some(600)
    );
    assert_eq!(
        store.revoke_user_api_keys(&user.id, 800).await.unwrap(),
        ["k2"]
    );
    let mut revoked = store.api_keys_revoked_since(600).await.unwrap();
    revoked.sort();
    assert_eq!(
        revoked,
        [("k1".to_string(), 10_000), ("k2".to_string(), 10_000)]
    );
    assert_eq!(store.api_keys_revoked_since(700).await.unwrap().len(), 1);
}

async fn users_are_listed_by_keyset_and_searched(store: Store) {
    for name in ["delta", "Alpha", "charlie", "bravo", "a_b"] {
        store
            .create_user(&new_user(name, &format!("{name}@corp.example")))
            .await
            .unwrap();
    }
    let names = |users: Vec<swarmgate_core::User>| {
        users.into_iter().map(|u| u.username).collect::<Vec<_>>()
    };
    assert_eq!(
        names(store.list_users(None, None, 2).await.unwrap()),
        ["a_b", "Alpha"]
    );
    assert_eq!(
        names(store.list_users(None, Some("alpha"), 2).await.unwrap()),
        ["bravo", "charlie"]
    );
    assert_eq!(
        names(store.list_users(None, Some("charlie"), 10).await.unwrap()),
        ["delta"]
    );
    assert_eq!(
        names(store.list_users(Some("ARL"), None, 10).await.unwrap()),
        ["charlie"]
    );
    assert_eq!(
        names(store.list_users(Some("_"), None, 10).await.unwrap()),
        ["a_b"],
        "_ is literal"
    );
    assert_eq!(
        names(store.list_users(Some("%"), None, 10).await.unwrap()).len(),
        0
    );
    assert_eq!(
        store
            .list_users(Some("corp.example"), None, 10)
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn user_updates_and_deletes_are_recorded(store: Store) {
    let user = store
        .create_user(&new_user("jack", "jack@example.com"))
        .await
        .unwrap();
    let updated = store
        .update_user(
            &user.id,
            &UserUpdate {
                role: Some("analyst".into()),
                disabled: Some(true),
                full_name: Some(None),
                limits: Some(Some(swarmgate_core::LimitSet {
                    max_concurrent: Some(2),
                    ..Default::default()
                })),
            },
            900,
        )
        .await
        .unwrap();
    assert_eq!(updated.role, "analyst");
    assert!(updated.disabled);
    assert_eq!(updated.full_name, None);
    assert_eq!(updated.limits.and_then(|l| l.max_concurrent), Some(2));
    assert_eq!(updated.updated_at, 900);
    let unchanged = store
        .update_user(&user.id, &UserUpdate::default(), 950)
        .await
        .unwrap();
    assert_eq!(unchanged.role, "analyst");
    assert!(unchanged.disabled);
    assert_eq!(
        unchanged.limits, updated.limits,
        "left alone when not named"
    );
    let renamed = store
        .update_user(
            &user.id,
            &UserUpdate {
                full_name: Some(Some("Jack J.".into())),
                ..UserUpdate::default()
            },
            960,
        )
        .await
        .unwrap();
    assert_eq!(renamed.full_name.as_deref(), Some("Jack J."));
    assert_eq!(
        store.users_changed_since(900).await.unwrap(),
        vec![user.id.clone()]
    );
    assert!(store.users_changed_since(1_000).await.unwrap().is_empty());
    assert!(matches!(
        store.update_user("nope", &UserUpdate::default(), 1).await,
        Err(StoreError::NotFound)
    ));

    let session = session_for(&store, &user.id, "jr1").await;
    store
        .create_api_key(&api_key("jk", &user.id, "jh"))
        .await
        .unwrap();
    store.delete_user(&user.id, 1_100).await.unwrap();
    assert!(matches!(
        store.get_user(&user.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.get_session(&session.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(store.api_key("jk").await.unwrap().is_none());
    assert_eq!(
        store.users_changed_since(1_100).await.unwrap(),
        vec![user.id.clone()]
    );
    assert!(matches!(
        store.delete_user(&user.id, 1_200).await,
        Err(StoreError::NotFound)
    ));
}

async fn a_disable_revokes_in_the_same_transaction(store: Store) {
    let user = store
        .create_user(&new_user("dora", "dora@example.com"))
        .await
        .unwrap();
    let session = session_for(&store, &user.id, "dr1").await;
    store
        .create_api_key(&api_key("dk", &user.id, "dh"))
        .await
        .unwrap();
    let disable = UserUpdate {
        disabled: Some(true),
        ..UserUpdate::default()
    };
    let (user, revoked) = store
        .update_user_revoking(&user.id, &disable, Some("user_disabled"), 2_000)
        .await
        .unwrap();
    assert!(user.disabled);
    assert_eq!(revoked.sessions, vec![session.id.clone()]);
    assert_eq!(revoked.keys, vec!["dk".to_string()]);
    assert!(store
        .get_session(&session.id)
        .await
        .unwrap()
        .revoked_at
        .is_some());
    assert!(store
        .api_key("dk")
        .await
        .unwrap()
        .unwrap()
        .revoked_at
        .is_some());
    // A second disable finds nothing left to revoke.
    let (_, again) = store
        .update_user_revoking(&user.id, &disable, Some("user_disabled"), 2_100)
        .await
        .unwrap();
    assert!(again.sessions.is_empty() && again.keys.is_empty());
}

async fn audit_query_filters_and_pages(store: Store) {
    for (at, event, user) in [
        (10, "login_failed", "u1"),
        (20, "login_succeeded", "u1"),
        (30, "login_failed", "u2"),
        (40, "login_failed", "u1"),
    ] {
        store
            .append_audit(&AuditEvent {
                at,
                event: event.into(),
                user_id: Some(user.into()),
                username: None,
                client_ip: None,
                request_id: None,
                outcome: "x".into(),
                detail: serde_json::json!({}),
            })
            .await
            .unwrap();
    }
    let all = store
        .query_audit(&AuditFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|(_, e)| e.at).collect::<Vec<_>>(),
        [40, 30, 20, 10]
    );
    let failed = AuditFilter {
        event: Some("login_failed".into()),
        ..AuditFilter::default()
    };
    let page = store.query_audit(&failed, 2).await.unwrap();
    assert_eq!(page.iter().map(|(_, e)| e.at).collect::<Vec<_>>(), [40, 30]);
    let next = AuditFilter {
        before_id: Some(page[1].0),
        ..failed.clone()
    };
    assert_eq!(
        store
            .query_audit(&next, 2)
            .await
            .unwrap()
            .iter()
            .map(|(_, e)| e.at)
            .collect::<Vec<_>>(),
        [10]
    );
    let u1_since = AuditFilter {
        user_id: Some("u1".into()),
        since: Some(20),
        ..AuditFilter::default()
    };
    assert_eq!(
        store
            .query_audit(&u1_since, 10)
            .await
            .unwrap()
            .iter()
            .map(|(_, e)| e.at)
            .collect::<Vec<_>>(),
        [40, 20]
    );
}

async fn usage_is_summed_by_group_and_caller(store: Store) {
    let rec = |at: i64, user: &str, key: Option<&str>, model: &str, p: i64, c: i64| UsageRecord {
        at,
        user_id: user.into(),
        key_id: key.map(String::from),
        model: model.into(),
        prompt_tokens: p,
        completion_tokens: c,
        total_tokens: p + c,
        estimated: false,
        streamed: false,
    };
    store
        .insert_usage(&[
            rec(10, "u1", None, "m1", 3, 4),
            rec(20, "u1", Some("k1"), "m2", 5, 6),
            rec(30, "u2", None, "m1", 1, 1),
            rec(40, "u1", Some("k1"), "m1", 2, 2),
        ])
        .await
        .unwrap();
    let by_model = store
        .usage_summary(None, 0, 100, UsageGroup::Model, None, 1000)
        .await
        .unwrap();
    assert_eq!(by_model.len(), 2);
    assert_eq!(by_model[0].group.as_deref(), Some("m1"));
    assert_eq!(
        (
            by_model[0].requests,
            by_model[0].prompt_tokens,
            by_model[0].completion_tokens,
            by_model[0].total_tokens
        ),
        (3, 6, 7, 13)
    );
    let own = store
        .usage_summary(Some("u1"), 15, 100, UsageGroup::Key, None, 1000)
        .await
        .unwrap();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].group.as_deref(), Some("k1"));
    assert_eq!(own[0].requests, 2);
    let users = store
        .usage_summary(None, 0, 35, UsageGroup::User, None, 1000)
        .await
        .unwrap();
    assert_eq!(users.iter().map(|r| r.requests).collect::<Vec<_>>(), [2, 1]);
    store.insert_usage(&[]).await.unwrap();
    // One key's total (an agent's usage so far), zero for a key never used.
    assert_eq!(store.usage_total_of_key("k1").await.unwrap(), 15);
    assert_eq!(store.usage_total_of_key("agent:none").await.unwrap(), 0);
}
