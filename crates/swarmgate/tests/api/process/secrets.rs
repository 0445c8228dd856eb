//! Signing keys rotated under a running server, and no secret in the
//! log or the database.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use super::*;
use crate::common::*;

#[tokio::test]
async fn keys_rotate_keeps_old_tokens_valid_and_publishes_both_keys() {
    let dir =
        std::env::temp_dir().join(format!("sg-rot-{}", swarmgate_core::random::uuid_simple()));
    let url = format!("sqlite://{}/swarmgate.db", dir.display());
    let p = Process::serve(&[
        ("DATABASE_URL", url.clone()),
        ("SWARMGATE_TOKENS__KEY_RELOAD_SECONDS", "1".into()),
    ])
    .await;
    let client = Client::new();
    let before = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    let (code, out, err) =
        run_binary(&["keys", "rotate"], &[("DATABASE_URL", url.clone())], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("new signing key"));
    assert!(
        err.contains("key_rotated"),
        "rotation reaches the structured log: {err}"
    );
    let audit = swarmgate_store::Store::connect(&url)
        .await
        .unwrap()
        .recent_audit(10)
        .await
        .unwrap();
    assert!(
        audit.iter().any(|e| e.event == "key_rotated"),
        "and the audit table"
    );
    let mut kids = Vec::new();
    for _ in 0..60 {
        let jwks: Value = client
            .get(format!("{}/.well-known/jwks.json", p.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        kids = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect();
        if kids.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kids.len(), 2, "old and new key published");
    let kid_of = |t: &Value| {
        use base64::Engine;
        let h = t["access_token"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_string();
        let h: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap();
        h["kid"].as_str().unwrap().to_string()
    };
    // The new key signs once every instance has had time to load it
    // (2 x key_reload_seconds); until then the old key keeps signing.
    let mut after = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    for _ in 0..80 {
        if kid_of(&after) != kid_of(&before) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    }
    assert_ne!(
        kid_of(&before),
        kid_of(&after),
        "new tokens are signed with the new key"
    );
    assert_eq!(
        me_status(&client, &p.base, before["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    assert_eq!(
        me_status(&client, &p.base, after["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn no_secret_reaches_the_log_or_the_database() {
    let p = Process::serve(&[
        ("SWARMGATE_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "debug".into()),
    ])
    .await;
    let client = Client::new();
    let base = &p.base;
    let password = "Sup3r!Secret-Value";
    let new_password = "An0ther!Secret-Val";
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": "sam", "email": "sam@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let wrong = "Wr0ng!Guess-Value";
    client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": "sam", "password": wrong}))
        .send()
        .await
        .unwrap();
    let first = login(&client, base, "sam", password).await;
    let second: Value = client
        .post(format!("{base}/auth/refresh"))
        .json(&json!({"refresh_token": first["refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = second["access_token"].as_str().unwrap();
    let r = client
        .post(format!("{base}/auth/change-password"))
        .bearer_auth(access)
        .json(&json!({"current_password": password, "new_password": new_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client
        .post(format!("{base}/auth/api-keys"))
        .bearer_auth(access)
        .json(&json!({"name": "secret-test", "permissions": ["tasks.read"]}))
        .send()
        .await
        .unwrap();
    let api_key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client
        .post(format!("{base}/auth/verify-permission"))
        .header("x-api-key", &api_key)
        .json(&json!({"permission": "tasks.read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    client
        .post(format!("{base}/auth/logout"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    // Let the log flush before reading it.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let log = p.stderr();
    assert!(
        log.contains("\"event\":\"password_changed\""),
        "the log is JSON with audit events: {log}"
    );
    let dir = p.stderr_path.parent().unwrap();
    let mut database = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("swarmgate.db") {
            database.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!database.is_empty());
    let database = String::from_utf8_lossy(&database);
    let secrets = [
        password,
        new_password,
        wrong,
        ADMIN_PASSWORD,
        first["access_token"].as_str().unwrap(),
        first["refresh_token"].as_str().unwrap(),
        second["access_token"].as_str().unwrap(),
        second["refresh_token"].as_str().unwrap(),
        api_key.as_str(),
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the log");
        assert!(!database.contains(secret), "a secret reached the database");
        // Nor a recognisable piece of it (the signature part of a JWT).
        let tail = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(tail) && !database.contains(tail));
    }
    assert!(!log.contains("$argon2"), "no password hash in the log");
    // The audit rows hold no hash either.
    for line in log.lines().filter(|l| l.contains("\"target\":\"audit\"")) {
        assert!(!line.contains("argon2") && !line.contains("sgr_"), "{line}");
    }
}
