//! The one decision point: every kind of refusal (a route, a model, an
//! admin action, an agent spawned beyond its parent, a key beyond its
//! owner) is counted in `swarmgate_permission_denied_total` and written to
//! the audit trail the same way. Run against the real binary, whose
//! metrics are its own: in-process servers of this test binary share one
//! metrics recorder.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

/// Each kind of refusal, the request that provokes it, and the status the
/// caller gets.
const KINDS: [&str; 5] = ["route", "model", "admin", "agent", "api_key"];

/// `swarmgate_permission_denied_total{action="KIND"}` of a scrape.
fn denied(metrics: &str, kind: &str) -> u64 {
    let series = format!("swarmgate_permission_denied_total{{action=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_kind_of_refusal_is_counted_and_audited_alike() {
    let m = crate::mock::Mock::start(&["--models", "open-model,closed-model"]).await;
    let config = config_file(&format!(
        r#"
[roles.worker]
permissions = ["tasks.read", "models.open-model.invoke", "agents.spawn"]
[roles.user-manager]
permissions = ["users.manage"]

[[routes]]
name = "tasks"
path_prefix = "/tasks"
upstreams = ["{base}"]
permissions = {{ GET = "tasks.read", POST = "tasks.create" }}

[[models]]
name = "open-model"
upstreams = ["{base}"]
[[models]]
name = "closed-model"
upstreams = ["{base}"]
"#,
        base = m.base
    ));
    let mut p = Process::serve(&[("SWARMGATE_CONFIG", config.display().to_string())]).await;
    let s = Client::new();
    let url = |path: &str| format!("{}{path}", p.base);
    let admin_login = login(&s, &p.base, "admin", ADMIN_PASSWORD).await;
    let admin = admin_login["access_token"].as_str().unwrap().to_string();
    let admin_id = admin_login["user_id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (name, role) in [("wendy", "worker"), ("uma", "user-manager")] {
        let r = s
            .post(url("/auth/register"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = s
            .patch(url(&format!("/admin/users/{id}")))
            .bearer_auth(&admin)
            .json(&json!({"role": role}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        ids.push(id);
    }
    let worker = login(&s, &p.base, "wendy", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let manager = login(&s, &p.base, "uma", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let before = scrape(&s, &url("/metrics"), &admin).await;
    // A route: POST /tasks needs tasks.create.
    let route = s
        .post(url("/tasks"))
        .bearer_auth(&worker)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    // A model the worker may not call.
    let model = s
        .post(url("/v1/chat/completions"))
        .bearer_auth(&worker)
        .json(&json!({"model": "closed-model", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    // An admin action over a role beyond the manager's own grants.
    let admin_action = s
        .patch(url(&format!("/admin/users/{admin_id}")))
        .bearer_auth(&manager)
        .json(&json!({"full_name": "Not You"}))
        .send()
        .await
        .unwrap();
    // An agent given more than its parent holds.
    let agent = s
        .post(url("/agents/sessions"))
        .bearer_auth(&worker)
        .json(&json!({"name": "greedy", "permissions": ["users.manage"]}))
        .send()
        .await
        .unwrap();
    // A key beyond its owner.
    let key = s
        .post(url("/auth/api-keys"))
        .bearer_auth(&worker)
        .json(&json!({"name": "greedy", "permissions": ["tasks.read", "users.manage"]}))
        .send()
        .await
        .unwrap();
    for r in [route, model, admin_action, agent, key] {
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{:?}", r.url().path());
    }
    let after = scrape(&s, &url("/metrics"), &admin).await;
    for kind in KINDS {
        assert_eq!(
            denied(&after, kind),
            denied(&before, kind) + 1,
            "{kind} counted once:\n{after}"
        );
    }

    // The aggregated rows are written at shutdown, as at each minute.
    tokio::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    let store = swarmgate_store::Store::connect(&p.database_url())
        .await
        .unwrap();
    let rows: Vec<_> = store
        .recent_audit(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "permission_denied")
        .collect();
    let (worker_id, manager_id) = (&ids[0], &ids[1]);
    for (kind, subject, asked) in [
        ("route", worker_id, "tasks.create"),
        ("model", worker_id, "models.closed-model.invoke"),
        ("admin", manager_id, "role:admin"),
        ("agent", worker_id, "users.manage"),
        ("api_key", worker_id, "users.manage"),
    ] {
        let row = rows
            .iter()
            .find(|e| e.detail["action"] == kind)
            .unwrap_or_else(|| panic!("no {kind} row in {rows:?}"));
        assert_eq!(row.user_id.as_deref(), Some(subject.as_str()), "{row:?}");
        assert_eq!(row.detail["permission"], asked, "{row:?}");
        assert_eq!(row.detail["count"], 1, "{row:?}");
        assert_eq!(row.outcome, "denied");
    }
}

async fn scrape(s: &Client, url: &str, token: &str) -> String {
    let r = s.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}
