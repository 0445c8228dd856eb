//! API keys and the permission check.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn creating_a_key_returns_it_once_with_its_prefix() {
    let s = TestServer::start().await;
    let session = s.user_session("kate").await;
    let token = session["access_token"].as_str().unwrap();
    let r = s
        .post_auth(
            "/auth/api-keys",
            token,
            json!({"name": "ci bot", "permissions": ["tasks.read", "memory.read:own"], "models": ["phi-3.5-mini"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let key = body["key"].as_str().unwrap();
    assert!(key.starts_with("sgk_"));
    assert!(key.len() >= 4 + 43, "at least 256 bits: {key}");
    assert_eq!(body["prefix"].as_str().unwrap(), &key[..12]);
    assert_eq!(body["name"], "ci bot");
    assert_eq!(
        body["permissions"],
        json!(["tasks.read", "memory.read:own"])
    );
    assert_eq!(body["models"], json!(["phi-3.5-mini"]));
    for field in ["id", "created_at", "expires_at"] {
        assert!(body[field].is_string(), "{field}");
    }
    // Default lifetime: 90 days.
    let days = |t: &Value| {
        time::OffsetDateTime::parse(
            t.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let lifetime = days(&body["expires_at"]) - days(&body["created_at"]);
    assert_eq!(lifetime.whole_days(), 90);
    // The list never shows the secret.
    let r = s.get_auth("/auth/api-keys", token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    let item = &list["items"][0];
    assert_eq!(item["id"], body["id"]);
    assert_eq!(item["prefix"], body["prefix"]);
    assert_eq!(item["revoked"], false);
    assert!(item["last_used_at"].is_null());
    assert!(item.get("key").is_none() && !list.to_string().contains(key));
    // The database holds only a hash.
    let s2 = s.store().await;
    let stored = s2
        .api_key(body["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.key_hash, key);
    assert_eq!(stored.key_hash.len(), 64);
}

#[tokio::test]
async fn key_creation_validation_is_422() {
    let s = TestServer::start().await;
    let token = s.user_session("liam").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for (body, field) in [
        (json!({"name": "", "permissions": ["tasks.read"]}), "name"),
        (json!({"name": "k", "permissions": []}), "permissions"),
        (
            json!({"name": "k", "permissions": ["Tasks.Read"]}),
            "permissions",
        ),
        (
            json!({"name": "k", "permissions": ["tasks.read"], "expires_in_days": 0}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "permissions": ["tasks.read"], "expires_in_days": 366}),
            "expires_in_days",
        ),
        (
            json!({"name": "k", "permissions": ["tasks.read"], "models": [""]}),
            "models",
        ),
    ] {
        let r = s.post_auth("/auth/api-keys", &token, body.clone()).await;
        let err = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(err["error"]["field"], field, "{body}");
    }
    let r = s
        .post_auth(
            "/auth/api-keys",
            &token,
            json!({"name": "k", "permissions": ["tasks.read"], "expires_in_days": 365}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_key_asking_for_more_than_its_creator_holds_is_403_naming_it() {
    let s = TestServer::start().await;
    let token = s.user_session("mia").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for permission in ["models.load", "tasks.*", "*", "users.manage"] {
        let r = s
            .post_auth(
                "/auth/api-keys",
                &token,
                json!({"name": "k", "permissions": ["tasks.read", permission]}),
            )
            .await;
        let err = expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains(permission),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_key_works_through_both_headers() {
    let s = TestServer::start().await;
    let token = s.user_session("ned").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let key = s.create_key(&token, &["tasks.read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    for header in [api_key(&key), bearer(&key)] {
        let r = s.verify(header, "tasks.read", None).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["allowed"], true);
        assert_eq!(body["auth_method"], "api_key");
        assert_eq!(body["role"], "user");
        assert_eq!(body["permission"], "tasks.read");
        assert!(body["resource"].is_null());
        assert!(body["subject"].is_string());
    }
    // The key may do only what it was given, even where its owner may more.
    assert!(!allowed(s.verify(api_key(&key), "tasks.delete", None).await).await);
    assert!(allowed(s.verify(bearer(&token), "tasks.delete", None).await).await);
    // /auth/me answers for a key too.
    let r = s
        .client
        .get(s.url("/auth/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_cannot_create_keys_but_may_list_and_revoke_its_owners() {
    let s = TestServer::start().await;
    let token = s.user_session("olly").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let created = s.create_key(&token, &["tasks.read"]).await;
    let key = created["key"].as_str().unwrap();
    let r = s
        .client
        .post(s.url("/auth/api-keys"))
        .header("x-api-key", key)
        .json(&json!({"name": "child", "permissions": ["tasks.read"]}))
        .send()
        .await
        .unwrap();
    let err = expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot create"));
    let r = s
        .client
        .get(s.url("/auth/api-keys"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["items"][0]["id"], created["id"]);
    // A leaked key can revoke itself.
    let r = s
        .client
        .delete(s.url(&format!(
            "/auth/api-keys/{}",
            created["id"].as_str().unwrap()
        )))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        s.verify(api_key(key), "tasks.read", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn an_admin_key_holding_only_users_manage_cannot_make_admins() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    let manager_key = s.create_key(&admin, &["users.manage"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let target = s.register("climber").await;
    let path = format!("/admin/users/{}", target["id"].as_str().unwrap());
    let patch = |role: &'static str| {
        let client = s.client.clone();
        let url = s.url(&path);
        let key = manager_key.clone();
        async move {
            client
                .patch(url)
                .header("x-api-key", key)
                .json(&json!({ "role": role }))
                .send()
                .await
                .unwrap()
        }
    };
    // The key covers nothing beyond users.manage, so it may not hand out
    // any role with more, though its owner is an admin.
    expect_error(patch("admin").await, StatusCode::FORBIDDEN, "forbidden").await;
    expect_error(patch("viewer").await, StatusCode::FORBIDDEN, "forbidden").await;
    let admin_id = s.login("admin", ADMIN_PASSWORD).await["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .client
        .delete(s.url(&format!("/admin/users/{admin_id}")))
        .header("x-api-key", &manager_key)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn a_user_manager_cannot_revoke_keys_of_users_above_them() {
    let s = TestServer::start_with(|c| {
        add_role(c, "usermgr", &["users.manage", "tasks.read"]);
    })
    .await;
    let admin = s.admin_token().await;
    let admin_key = s.create_key(&admin, &["tasks.read"]).await;
    let mgr = s.user_session("mgr").await;
    s.set_role(&admin, mgr["user_id"].as_str().unwrap(), "usermgr")
        .await;
    let mgr_token = mgr["access_token"].as_str().unwrap();
    let r = s
        .delete_auth(
            &format!("/auth/api-keys/{}", admin_key["id"].as_str().unwrap()),
            mgr_token,
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let admin_id = s.login("admin", ADMIN_PASSWORD).await["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .post_auth(
            &format!("/admin/users/{admin_id}/unlock"),
            mgr_token,
            json!({}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn nul_bytes_in_ids_and_queries_are_400_not_500() {
    let s = TestServer::start().await;
    let admin = s.admin_token().await;
    for path in [
        "/auth/api-keys/%00",
        "/admin/users/%00",
        "/admin/users?q=%00",
        "/admin/audit?event=%00",
        "/admin/audit?user_id=%00",
    ] {
        let r = if path.starts_with("/auth/api-keys") {
            s.delete_auth(path, &admin).await
        } else {
            s.get_auth(path, &admin).await
        };
        assert!(
            r.status() == StatusCode::BAD_REQUEST
                || r.status() == StatusCode::NOT_FOUND
                || r.status() == StatusCode::OK,
            "{path}: {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn a_revoked_key_fails_at_once() {
    let s = TestServer::start().await;
    let token = s.user_session("pam").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let created = s.create_key(&token, &["tasks.read"]).await;
    let key = created["key"].as_str().unwrap();
    assert!(allowed(s.verify(api_key(key), "tasks.read", None).await).await);
    let r = s
        .delete_auth(
            &format!("/auth/api-keys/{}", created["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.verify(api_key(key), "tasks.read", None).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    let list: Value = s
        .get_auth("/auth/api-keys", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["revoked"], true);
    // Revoking again is fine; an unknown id is 404.
    let r = s
        .delete_auth(
            &format!("/auth/api-keys/{}", created["id"].as_str().unwrap()),
            &token,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.delete_auth("/auth/api-keys/nope", &token).await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn an_expired_key_fails() {
    let s = TestServer::start().await;
    let token = s.user_session("quinn").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let created = s.create_key(&token, &["tasks.read"]).await;
    s.store()
        .await
        .raw_execute_for_tests(&format!(
            "UPDATE api_keys SET expires_at = 1 WHERE id = '{}'",
            created["id"].as_str().unwrap()
        ))
        .await
        .unwrap();
    let r = s
        .verify(
            api_key(created["key"].as_str().unwrap()),
            "tasks.read",
            None,
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
}

#[tokio::test]
async fn unknown_and_malformed_keys_are_401() {
    let s = TestServer::start().await;
    for key in [
        "sgk_not-a-real-key",
        "sgk_",
        "nope",
        &format!("sgk_{}", "x".repeat(400)),
    ] {
        let r = s.verify(api_key(key), "tasks.read", None).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    }
}

#[tokio::test]
async fn disabling_the_owner_kills_the_key_at_once_and_enabling_does_not_revive_it() {
    let s = TestServer::start().await;
    let session = s.user_session("rosa").await;
    let token = session["access_token"].as_str().unwrap();
    let key = s.create_key(token, &["tasks.read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(allowed(s.verify(api_key(&key), "tasks.read", None).await).await);
    let admin = s.admin_token().await;
    let user_id = session["user_id"].as_str().unwrap();
    let r = s
        .patch_auth(
            &format!("/admin/users/{user_id}"),
            &admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["disabled"], true);
    expect_error(
        s.verify(api_key(&key), "tasks.read", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    expect_error(
        s.get_auth("/auth/me", token).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    let r = s
        .post(
            "/auth/login",
            json!({"username": "rosa", "password": PASSWORD}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "account_disabled").await;
    // Enabled again: she can log in, but the old key and session stay dead.
    s.patch_auth(
        &format!("/admin/users/{user_id}"),
        &admin,
        json!({"disabled": false}),
    )
    .await;
    expect_error(
        s.verify(api_key(&key), "tasks.read", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    expect_error(
        s.get_auth("/auth/me", token).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    s.login("rosa", PASSWORD).await;
}

#[tokio::test]
async fn demoting_the_owner_shrinks_the_key_and_the_session_at_once() {
    let s = TestServer::start().await;
    let session = s.user_session("sven").await;
    let admin = s.admin_token().await;
    let user_id = session["user_id"].as_str().unwrap();
    s.set_role(&admin, user_id, "developer").await;
    let token = session["access_token"].as_str().unwrap();
    let key = s.create_key(token, &["agents.spawn", "tasks.read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(allowed(s.verify(api_key(&key), "agents.spawn", None).await).await);
    assert!(allowed(s.verify(bearer(token), "agents.spawn", None).await).await);
    s.set_role(&admin, user_id, "user").await;
    // The key still lists agents.spawn, but its owner no longer has it.
    assert!(!allowed(s.verify(api_key(&key), "agents.spawn", None).await).await);
    assert!(allowed(s.verify(api_key(&key), "tasks.read", None).await).await);
    // The session's token still says "developer"; the current role wins.
    let r = s.verify(bearer(token), "agents.spawn", None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["allowed"], false);
    assert_eq!(body["role"], "user");
}

#[tokio::test]
async fn someone_elses_key_is_404_but_an_admin_may_revoke_it() {
    let s = TestServer::start().await;
    let owner = s.user_session("tara").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let other = s.user_session("ugo").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let created = s.create_key(&owner, &["tasks.read"]).await;
    let path = format!("/auth/api-keys/{}", created["id"].as_str().unwrap());
    expect_error(
        s.delete_auth(&path, &other).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let list: Value = s
        .get_auth("/auth/api-keys", &other)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    let admin = s.admin_token().await;
    assert_eq!(
        s.delete_auth(&path, &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(
        s.verify(
            api_key(created["key"].as_str().unwrap()),
            "tasks.read",
            None,
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn last_used_at_is_recorded_without_a_write_per_request() {
    let s = TestServer::start().await;
    let token = s.user_session("vera").await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let created = s.create_key(&token, &["tasks.read"]).await;

    for _ in 0..5 {
        s.verify(
            api_key(created["key"].as_str().unwrap()),
            "tasks.read",
            None,
        )
        .await;
    }
    // Uses are batched in memory (written every 10 s, when keys are listed,
    // and at shutdown), so a request never waits for a database write.
    // ...and written when listed (or every few seconds, or at shutdown).
    let list: Value = s
        .get_auth("/auth/api-keys", &token)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["items"][0]["last_used_at"].is_string(), "{list}");
}

#[tokio::test]
async fn verify_permission_shapes_and_errors() {
    let s = TestServer::start().await;
    let session = s.user_session("wes").await;
    let token = session["access_token"].as_str().unwrap();
    let user_id = session["user_id"].as_str().unwrap();
    let r = s
        .verify(bearer(token), "tasks.read", Some("tasks:123"))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"allowed": true, "permission": "tasks.read", "resource": "tasks:123",
               "subject": user_id, "role": "user", "auth_method": "jwt"})
    );
    assert!(!allowed(s.verify(bearer(token), "models.load", None).await).await);
    for bad in ["", "Tasks.Read", "tasks.*", "a..b", "x:own"] {
        let r = s.verify(bearer(token), bad, None).await;
        let err = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(err["error"]["field"], "permission");
    }
    let r = s
        .client
        .post(s.url("/auth/verify-permission"))
        .json(&json!({"permission": "tasks.read"}))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
}

#[tokio::test]
async fn own_scoped_grants_allow_only_the_callers_resources() {
    let s = TestServer::start_with(|c| {
        add_role(c, "notes", &["memory.read:own", "stats.read"]);
    })
    .await;
    let session = s.user_session("xena").await;
    let admin = s.admin_token().await;
    let user_id = session["user_id"].as_str().unwrap();
    s.set_role(&admin, user_id, "notes").await;
    let token = session["access_token"].as_str().unwrap();
    assert!(
        allowed(
            s.verify(
                bearer(token),
                "memory.read",
                Some(&format!("memory:{user_id}"))
            )
            .await
        )
        .await
    );
    assert!(
        allowed(
            s.verify(
                bearer(token),
                "memory.read",
                Some(&format!("memory:{user_id}/notes/7"))
            )
            .await
        )
        .await
    );
    assert!(
        !allowed(
            s.verify(bearer(token), "memory.read", Some("memory:someone-else"))
                .await
        )
        .await
    );
    assert!(!allowed(s.verify(bearer(token), "memory.read", None).await).await);
}

#[tokio::test]
async fn roles_are_listed_including_configured_ones() {
    let s = TestServer::start_with(|c| {
        add_role(c, "auditor", &["audit.read"]);
        add_role(c, "viewer", &["stats.read"]);
    })
    .await;
    let admin = s.admin_token().await;
    let r = s.get_auth("/auth/roles", &admin).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let roles = body["roles"].as_array().unwrap();
    let find = |name: &str| roles.iter().find(|r| r["name"] == name).cloned().unwrap();
    assert_eq!(find("admin")["permissions"], json!(["*"]));
    assert_eq!(find("auditor")["permissions"], json!(["audit.read"]));
    assert_eq!(
        find("viewer")["permissions"],
        json!(["stats.read"]),
        "a built-in role can be redefined"
    );
    assert_eq!(
        find("node")["permissions"],
        json!(["nodes.register", "metrics.report", "nodes.heartbeat"])
    );
    assert_eq!(roles.len(), 8);
    // A user given the configured role has exactly its grants.
    let session = s.user_session("yuri").await;
    s.set_role(&admin, session["user_id"].as_str().unwrap(), "auditor")
        .await;
    let token = session["access_token"].as_str().unwrap();
    assert!(allowed(s.verify(bearer(token), "audit.read", None).await).await);
    assert!(!allowed(s.verify(bearer(token), "tasks.read", None).await).await);
    assert_eq!(
        s.get_auth("/admin/audit", token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn denials_are_audited_in_aggregate() {
    let s = TestServer::start().await;
    let session = s.user_session("zoe").await;
    let token = session["access_token"].as_str().unwrap().to_string();
    for _ in 0..7 {
        assert!(!allowed(s.verify(bearer(&token), "models.load", None).await).await);
    }
    assert!(!allowed(s.verify(bearer(&token), "training.start", None).await).await);
    let url = s.database_url.clone();
    s.stop().await;
    let store = swarmgate_store::Store::connect(&url).await.unwrap();
    let rows: Vec<_> = store
        .recent_audit(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "permission_denied")
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "one row per subject and permission, not one per denial"
    );
    let load = rows
        .iter()
        .find(|e| e.detail["permission"] == "models.load")
        .unwrap();
    assert_eq!(load.detail["count"], 7);
    assert_eq!(load.user_id.as_deref(), session["user_id"].as_str());
}
