//! User administration and the audit query, with and without the
//! permissions they need.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn admin_endpoints_need_users_manage() {
    let s = TestServer::start().await;
    let session = s.user_session("plain").await;
    let token = session["access_token"].as_str().unwrap();
    let id = session["user_id"].as_str().unwrap();
    for r in [
        s.get_auth("/admin/users", token).await,
        s.get_auth(&format!("/admin/users/{id}"), token).await,
        s.patch_auth(
            &format!("/admin/users/{id}"),
            token,
            json!({"role": "admin"}),
        )
        .await,
        s.post_auth(&format!("/admin/users/{id}/unlock"), token, json!({}))
            .await,
        s.delete_auth(&format!("/admin/users/{id}"), token).await,
        s.get_auth("/admin/audit", token).await,
    ] {
        let err = expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        assert!(err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing permission"));
    }
    // Without any credential it is 401, not 403.
    let r = s.client.get(s.url("/admin/users")).send().await.unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "missing_credentials").await;
    // The admin gets through.
    let admin = s.admin_token().await;
    assert_eq!(
        s.get_auth("/admin/users", &admin).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        s.get_auth("/admin/audit", &admin).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_are_paged_by_cursor_and_searchable() {
    let s = TestServer::start().await;
    for name in ["anna", "bert", "carla", "dirk", "emma"] {
        s.register(name).await;
    }
    let admin = s.admin_token().await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/users?limit=2&cursor={c}"),
            None => "/admin/users?limit=2".to_string(),
        };
        let body: Value = s.get_auth(&path, &admin).await.json().await.unwrap();
        pages += 1;
        for item in body["items"].as_array().unwrap() {
            seen.push(item["username"].as_str().unwrap().to_string());
            assert!(item.get("password_hash").is_none());
            assert!(item["disabled"].is_boolean());
        }
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["admin", "anna", "bert", "carla", "dirk", "emma"]);
    assert_eq!(pages, 3);
    let body: Value = s
        .get_auth("/admin/users?q=RL", &admin)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carla"]);
    let body: Value = s
        .get_auth("/admin/users?q=%25", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["items"],
        json!([]),
        "% is a literal character, not a wildcard"
    );
    let r = s.get_auth("/admin/users?cursor=!!!", &admin).await;
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = s.get_auth("/admin/users?limit=many", &admin).await;
    expect_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
}

#[tokio::test]
async fn get_and_patch_a_user() {
    let s = TestServer::start().await;
    let user = s.register("fred").await;
    let id = user["id"].as_str().unwrap();
    let admin = s.admin_token().await;
    let body: Value = s
        .get_auth(&format!("/admin/users/{id}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["username"], "fred");
    expect_error(
        s.get_auth("/admin/users/missing", &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let r = s
        .patch_auth(
            &format!("/admin/users/{id}"),
            &admin,
            json!({"role": "analyst", "full_name": "Fred F."}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["role"], "analyst");
    assert_eq!(body["full_name"], "Fred F.");
    let r = s
        .patch_auth(
            &format!("/admin/users/{id}"),
            &admin,
            json!({"full_name": null}),
        )
        .await;
    assert!(r.json::<Value>().await.unwrap()["full_name"].is_null());
    let r = s
        .patch_auth(
            &format!("/admin/users/{id}"),
            &admin,
            json!({"role": "emperor"}),
        )
        .await;
    let err = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(err["error"]["field"], "role");
    let r = s
        .patch_auth(
            &format!("/admin/users/{id}"),
            &admin,
            json!({"colour": "blue"}),
        )
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let r = s
        .patch_auth("/admin/users/missing", &admin, json!({"role": "user"}))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_user_manager_cannot_escalate_beyond_their_own_grants() {
    let s = TestServer::start_with(|c| {
        add_role(
            c,
            "usermgr",
            &[
                "users.manage",
                "tasks.*",
                "memory.*",
                "agents.*",
                "stats.read",
            ],
        );
    })
    .await;
    let admin = s.admin_token().await;
    let mgr = s.user_session("manager").await;
    s.set_role(&admin, mgr["user_id"].as_str().unwrap(), "usermgr")
        .await;
    let mgr_token = mgr["access_token"].as_str().unwrap();
    let target = s.register("target").await;
    let path = format!("/admin/users/{}", target["id"].as_str().unwrap());
    // Assigning a role within their grants is fine...
    assert_eq!(
        s.patch_auth(&path, mgr_token, json!({"role": "viewer"}))
            .await
            .status(),
        StatusCode::OK
    );
    // ...but not admin, nor themselves to admin, nor touching the admin.
    expect_error(
        s.patch_auth(&path, mgr_token, json!({"role": "admin"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let own = format!("/admin/users/{}", mgr["user_id"].as_str().unwrap());
    expect_error(
        s.patch_auth(&own, mgr_token, json!({"role": "admin"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let admin_id = s.login("admin", ADMIN_PASSWORD).await["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .patch_auth(
            &format!("/admin/users/{admin_id}"),
            mgr_token,
            json!({"disabled": true}),
        )
        .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    expect_error(
        s.delete_auth(&format!("/admin/users/{admin_id}"), mgr_token)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Nobody disables themselves or changes their own role (the only
    // admin would leave nobody to manage users); naming the role one has
    // is no change.
    for patch in [json!({"disabled": true}), json!({"role": "user"})] {
        expect_error(
            s.patch_auth(&format!("/admin/users/{admin_id}"), &admin, patch)
                .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    let same = s
        .patch_auth(
            &format!("/admin/users/{admin_id}"),
            &admin,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(same.status(), StatusCode::OK);
    let me: Value = s.get_auth("/auth/me", &admin).await.json().await.unwrap();
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn unlock_clears_a_lockout() {
    let s = TestServer::start().await;
    let user = s.register("gwen").await;
    for _ in 0..5 {
        s.post(
            "/auth/login",
            json!({"username": "gwen", "password": "Wrong!Pass1"}),
        )
        .await;
    }
    let r = s
        .post(
            "/auth/login",
            json!({"username": "gwen", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::LOCKED);
    let admin = s.admin_token().await;
    let r = s
        .post_auth(
            &format!("/admin/users/{}/unlock", user["id"].as_str().unwrap()),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    s.login("gwen", PASSWORD).await;
}

#[tokio::test]
async fn deleting_a_user_revokes_everything_of_theirs() {
    let s = TestServer::start().await;
    let session = s.user_session("hank").await;
    let token = session["access_token"].as_str().unwrap();
    let key = s.create_key(token, &["tasks.read"]).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = s.admin_token().await;
    let path = format!("/admin/users/{}", session["user_id"].as_str().unwrap());
    assert_eq!(
        s.delete_auth(&path, &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(
        s.get_auth("/auth/me", token).await,
        StatusCode::UNAUTHORIZED,
        "session_revoked",
    )
    .await;
    expect_error(
        s.verify(api_key(&key), "tasks.read", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    )
    .await;
    let r = s
        .post(
            "/auth/refresh",
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    expect_error(
        s.get_auth(&path, &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        s.delete_auth(&path, &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The name is free again.
    s.register("hank").await;
}

#[tokio::test]
async fn the_audit_query_filters_and_pages() {
    let s = TestServer::start().await;
    let user = s.register("ines").await;
    for _ in 0..3 {
        s.post(
            "/auth/login",
            json!({"username": "ines", "password": "Wrong!Pass1"}),
        )
        .await;
    }
    let admin = s.admin_token().await;
    let body: Value = s
        .get_auth("/admin/audit?event=login_failed&limit=2", &admin)
        .await
        .json()
        .await
        .unwrap();
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["event"], "login_failed");
        assert_eq!(item["ip"], "127.0.0.1");
        assert_eq!(item["user_id"], user["id"]);
        assert!(item["id"].is_i64() && item["at"].is_string() && item["detail"].is_object());
    }
    let cursor = body["next_cursor"].as_str().unwrap();
    let next: Value = s
        .get_auth(
            &format!("/admin/audit?event=login_failed&limit=2&cursor={cursor}"),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert!(next["next_cursor"].is_null());
    assert!(next["items"][0]["id"].as_i64() < items[1]["id"].as_i64());
    let by_user: Value = s
        .get_auth(
            &format!("/admin/audit?user_id={}", user["id"].as_str().unwrap()),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        by_user["items"].as_array().unwrap().len(),
        4,
        "registration and three failures"
    );
    let future: Value = s
        .get_auth("/admin/audit?since=2999-01-01T00:00:00Z", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["items"], json!([]));
    expect_error(
        s.get_auth("/admin/audit?since=yesterday", &admin).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
}
