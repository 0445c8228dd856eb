//! Quotas and agent sessions through the real gateway to a real mock
//! upstream. Every scenario runs in-process, and again on Redis when
//! `TEST_REDIS_URL` is set (each run with its own key namespace).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use swarmgate_gateway::{ModelConfig, RouteConfig};

use crate::common::*;
use crate::mock::Mock;

/// The back ends a scenario runs on: in-process always, Redis when given.
fn backends() -> Vec<Option<String>> {
    let mut all = vec![None];
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => all.push(Some(url)),
        _ if std::env::var_os("SWARMGATE_REQUIRE_SERVICES").is_some() => {
            panic!("TEST_REDIS_URL must be set when SWARMGATE_REQUIRE_SERVICES is set")
        }
        _ => eprintln!("TEST_REDIS_URL unset: quota scenarios run in-process only"),
    }
    all
}

fn namespace() -> String {
    format!("sgq{}", swarmgate_core::random::uuid_simple())
}

/// A gateway with one model and one echo route on `mock`, a role that may
/// use both and spawn agents, and the given state back end.
async fn server(
    mock: &Mock,
    redis: &Option<String>,
    ns: &str,
    adjust: impl FnOnce(&mut swarmgate_server::Config),
) -> TestServer {
    TestServer::start_with(configured(mock, redis, ns, adjust)).await
}

/// [`server`] on a manual clock the test moves.
async fn server_on_manual_clock(
    mock: &Mock,
    redis: &Option<String>,
    ns: &str,
    adjust: impl FnOnce(&mut swarmgate_server::Config),
) -> TestServer {
    TestServer::start_with_manual_clock(configured(mock, redis, ns, adjust)).await
}

fn configured(
    mock: &Mock,
    redis: &Option<String>,
    ns: &str,
    adjust: impl FnOnce(&mut swarmgate_server::Config),
) -> impl FnOnce(&mut swarmgate_server::Config) {
    let base = mock.base.clone();
    let redis = redis.clone();
    let ns = ns.to_string();
    move |c| {
        c.models = vec![ModelConfig {
            name: "phi-3.5-mini".into(),
            upstreams: vec![base.clone()],
            upstream_api_key_env: None,
            timeout_ms: 10_000,
        }];
        c.routes = vec![serde_json::from_value::<RouteConfig>(json!({
            "name": "tasks",
            "path_prefix": "/tasks",
            "upstreams": [base],
            "permission": "tasks.read",
        }))
        .unwrap()];
        add_role(
            c,
            "agent-owner",
            &["models.*", "tasks.read", "agents.spawn", "memory.read"],
        );
        c.usage.flush_interval_ms = 50;
        c.redis.url = redis;
        c.redis.namespace = ns;
        adjust(c);
    }
}

/// A user of role `agent-owner` with `limits`; returns (user id, token).
async fn limited_user(s: &TestServer, admin: &str, name: &str, limits: Value) -> (String, String) {
    let session = s.user_session(name).await;
    let id = session["user_id"].as_str().unwrap().to_string();
    s.set_role(admin, &id, "agent-owner").await;
    let r = s
        .client
        .put(s.url(&format!("/admin/users/{id}/limits")))
        .bearer_auth(admin)
        .json(&limits)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let token = session["access_token"].as_str().unwrap().to_string();
    (id, token)
}

fn chat(max_tokens: u64) -> Value {
    json!({
        "model": "phi-3.5-mini",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": max_tokens,
    })
}

async fn call(s: &TestServer, token: &str, body: &Value) -> reqwest::Response {
    s.client
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The caller's `/quota` entry for `scope`.
async fn quota_of(s: &TestServer, token: &str, scope: &str) -> Value {
    let r = s.get_auth("/quota", token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["scope"] == scope)
        .cloned()
        .unwrap_or_else(|| panic!("no scope {scope} in {body}"))
}

async fn settled_tokens(s: &TestServer, token: &str) -> i64 {
    let r = s.get_auth("/usage?group_by=user", token).await;
    let body: Value = r.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["total_tokens"].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn fifty_concurrent_calls_never_overshoot_a_token_budget() {
    let m = Mock::start(&["--models", "phi-3.5-mini", "--latency-ms", "50"]).await;
    for redis in backends() {
        let s = server(&m, &redis, &namespace(), |_| {}).await;
        let admin = s.admin_token().await;
        let (id, token) = limited_user(&s, &admin, "budget", json!({"tokens_per_day": 300})).await;
        // Each call reserves 2 + 16 + 20 = 38 tokens and uses 10.
        let calls = (0..50).map(|_| {
            let (s, token) = (&s, &token);
            async move { call(s, token, &chat(20)).await }
        });
        let responses = futures_util::future::join_all(calls).await;
        let mut ok = 0;
        for r in responses {
            match r.status() {
                StatusCode::OK => {
                    let _ = r.bytes().await.unwrap();
                    ok += 1;
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let body =
                        expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
                    assert_eq!(body["error"]["limit"], "tokens_per_day");
                    assert_eq!(body["error"]["scope"], format!("user:{id}"));
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert!(ok >= 7, "at least the budget's worth of worst cases: {ok}");
        assert!(ok < 50, "the budget must have stopped some of the 50");
        // What was settled is exactly what was used, and within the budget.
        let mut settled = 0;
        for _ in 0..100 {
            settled = settled_tokens(&s, &token).await;
            if settled == ok * 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(settled, ok * 10, "usage recorded for every admitted call");
        assert!(settled <= 300, "settled {settled} > budget");
        let mut day = Value::Null;
        for _ in 0..100 {
            day = quota_of(&s, &token, &format!("user:{id}")).await["tokens_per_day"].clone();
            if day["used"] == settled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(day["limit"], 300);
        assert_eq!(day["used"], settled, "reservations settled to real usage");
        s.stop().await;
    }
}

#[tokio::test]
async fn a_cancelled_stream_releases_its_slot_and_refusals_consume_no_rpm() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    for redis in backends() {
        let s = server(&m, &redis, &namespace(), |_| {}).await;
        let admin = s.admin_token().await;
        let (_, token) = limited_user(
            &s,
            &admin,
            "streamer",
            json!({"max_concurrent": 1, "rpm": 3}),
        )
        .await;
        let long = json!({
            "model": "phi-3.5-mini",
            "stream": true,
            "messages": [{"role": "user", "content": "one two three four five six seven eight nine ten eleven twelve"}],
        });
        let mut stream = call(&s, &token, &long).await;
        assert_eq!(stream.status(), StatusCode::OK);
        assert!(
            stream.chunk().await.unwrap().is_some(),
            "the first chunk arrives"
        );
        // While it streams, the one slot is taken: refused, at no rpm cost.
        for _ in 0..4 {
            let r = call(&s, &token, &chat(20)).await;
            let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
            assert_eq!(body["error"]["limit"], "max_concurrent");
        }
        // The client goes away mid-stream.
        drop(stream);
        let mut admitted = None;
        for _ in 0..100 {
            let r = call(&s, &token, &chat(20)).await;
            if r.status() == StatusCode::OK {
                admitted = Some(r);
                break;
            }
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["limit"], "max_concurrent", "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let r = admitted.expect("the slot of the cancelled stream was released");
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "1");
        let _ = r.bytes().await.unwrap();
        // rpm 3: the stream, that call, one more; the refusals cost nothing.
        let r = call(&s, &token, &chat(20)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let _ = r.bytes().await.unwrap();
        let r = call(&s, &token, &chat(20)).await;
        let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        assert_eq!(body["error"]["limit"], "rpm");
        s.stop().await;
    }
}

#[tokio::test]
async fn limited_responses_carry_openai_headers_and_retry_after() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    for redis in backends() {
        let s = server(&m, &redis, &namespace(), |c| {
            c.limits.roles.insert(
                "agent-owner".into(),
                swarmgate_core::LimitSet {
                    tpm: Some(1000),
                    ..Default::default()
                },
            );
        })
        .await;
        let admin = s.admin_token().await;
        let (_, token) = limited_user(&s, &admin, "headers", json!({})).await;
        // A key may not be looser than its owner; here it is tighter.
        let r = s
            .post_auth(
                "/auth/api-keys",
                &token,
                json!({"name": "loose", "permissions": ["models.*"], "limits": {"tpm": 5000}}),
            )
            .await;
        let body = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["error"]["field"], "limits.tpm");
        let r = s
            .post_auth(
                "/auth/api-keys",
                &token,
                json!({"name": "tight", "permissions": ["models.*"], "limits": {"rpm": 2}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let key: Value = r.json().await.unwrap();
        let key = key["key"].as_str().unwrap();

        let r = call(&s, key, &chat(20)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["x-ratelimit-limit-requests"], "2");
        assert_eq!(h["x-ratelimit-remaining-requests"], "1");
        assert_eq!(h["x-ratelimit-limit-tokens"], "1000");
        // 38 reserved of 1000 at the moment of admission.
        assert_eq!(h["x-ratelimit-remaining-tokens"], "962");
        let _ = r.bytes().await.unwrap();
        let r = call(&s, key, &chat(20)).await;
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
        let _ = r.bytes().await.unwrap();
        let r = call(&s, key, &chat(20)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers().clone();
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (29..=30).contains(&retry),
            "rpm 2: one every 30 s, got {retry}"
        );
        assert_eq!(h["x-ratelimit-limit-requests"], "2");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert!(body["error"]["scope"].as_str().unwrap().starts_with("key:"));
        // A call that could never fit the tpm limit says so, without Retry-After.
        let r = call(&s, &token, &chat(5000)).await;
        assert!(r.headers().get("retry-after").is_none());
        let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        assert_eq!(body["error"]["limit"], "tpm");
        assert_eq!(body["error"]["scope"], "role:agent-owner");
        s.stop().await;
    }
}

/// Waits (up to 10 s) for the sweep to release session `sid` for `reason`.
async fn released_as(s: &TestServer, token: &str, sid: &str, reason: &str) {
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = s
            .get_auth(&format!("/agents/sessions/{sid}"), token)
            .await
            .json()
            .await
            .unwrap();
        if seen["release_reason"] == reason {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["release_reason"], reason, "{seen}");
    assert_eq!(seen["live"], false);
}

async fn spawn(s: &TestServer, token: &str, body: Value) -> reqwest::Response {
    s.post_auth("/agents/sessions", token, body).await
}

#[tokio::test]
async fn an_agent_allocation_comes_out_of_the_parent_budget_and_back_on_release() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    for redis in backends() {
        let s = server(&m, &redis, &namespace(), |_| {}).await;
        let admin = s.admin_token().await;
        let (id, token) = limited_user(
            &s,
            &admin,
            "parent",
            json!({"tokens_per_day": 1000, "rpm": 100, "max_agents": 2}),
        )
        .await;
        let r = spawn(
            &s,
            &token,
            json!({"name": "researcher", "model": "phi-3.5-mini", "budget": {"tokens": 600, "rpm": 10}, "ttl_seconds": 600}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let agent: Value = r.json().await.unwrap();
        let env = &agent["env"];
        assert_eq!(env["SWARM_MAX_TOKENS_ALLOCATED"], "600");
        assert_eq!(env["SWARM_MAX_REQUESTS_PER_MINUTE"], "10");
        assert_eq!(env["SWARM_SESSION_ID"], agent["session_id"]);
        assert_eq!(env["SWARM_AGENT_ID"], agent["agent_id"]);
        assert_eq!(env["OPENAI_BASE_URL"], format!("{}/v1", s.base));
        assert_eq!(env["OPENAI_API_KEY"], agent["token"]);
        let parent_day = |q: Value| q["tokens_per_day"]["used"].as_u64().unwrap();
        assert_eq!(
            parent_day(quota_of(&s, &token, &format!("user:{id}")).await),
            600
        );
        // 400 left today: a second allocation of 500 does not fit.
        let r = spawn(
            &s,
            &token,
            json!({"name": "greedy", "budget": {"tokens": 500}}),
        )
        .await;
        let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        assert_eq!(body["error"]["limit"], "tokens_per_day");
        // An agent's rate may not exceed its parent's.
        let r = spawn(&s, &token, json!({"name": "fast", "budget": {"rpm": 101}})).await;
        let body = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(body["error"]["field"], "budget.rpm");

        // The agent calls the model with its own token: 10 tokens.
        let agent_token = agent["token"].as_str().unwrap();
        let r = call(&s, agent_token, &chat(20)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let _ = r.bytes().await.unwrap();
        let sid = agent["session_id"].as_str().unwrap();
        let mut seen = Value::Null;
        for _ in 0..50 {
            seen = s
                .get_auth(&format!("/agents/sessions/{sid}"), &token)
                .await
                .json()
                .await
                .unwrap();
            if seen["usage"]["tokens"] == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen["usage"]["tokens"], 10, "{seen}");
        assert_eq!(seen["remaining"]["tokens"], 590);
        let own = quota_of(
            &s,
            agent_token,
            &format!("agent:{}", agent["agent_id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(own["tokens"]["used"], 10);
        assert_eq!(own["rpm"]["limit"], 10);

        // Release: the token stops, the unused 590 go back to the parent.
        let r = s
            .delete_auth(&format!("/agents/sessions/{sid}"), &token)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let released: Value = r.json().await.unwrap();
        assert_eq!(released["release_reason"], "released");
        assert_eq!(released["live"], false);
        let r = call(&s, agent_token, &chat(20)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            parent_day(quota_of(&s, &token, &format!("user:{id}")).await),
            10
        );
        let r = spawn(
            &s,
            &token,
            json!({"name": "next", "budget": {"tokens": 900}}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "the allocation came back");
        s.stop().await;
    }
}

#[tokio::test]
async fn an_agent_stops_when_idle_and_never_exceeds_its_parent() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    for redis in backends() {
        let s = server_on_manual_clock(&m, &redis, &namespace(), |c| {
            // 1.2 s of the test's clock.
            c.agents.idle_minutes = 0.02;
        })
        .await;
        let admin = s.admin_token().await;
        let (id, token) = limited_user(&s, &admin, "owner", json!({"max_agents": 1})).await;
        let r = spawn(
            &s,
            &token,
            json!({"name": "too-strong", "permissions": ["users.manage"]}),
        )
        .await;
        expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        let r = spawn(
            &s,
            &token,
            json!({"name": "reader", "permissions": ["tasks.read", "models.*"]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let agent: Value = r.json().await.unwrap();
        let agent_token = agent["token"].as_str().unwrap().to_string();
        let sid = agent["session_id"].as_str().unwrap().to_string();
        // max_agents 1.
        let r = spawn(&s, &token, json!({"name": "second"})).await;
        let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
        assert_eq!(body["error"]["limit"], "max_agents");

        // It may do what it was given and its parent may: tasks.read yes,
        // memory.read (the parent's, not given) no.
        assert!(allowed(s.verify(bearer(&agent_token), "tasks.read", None).await).await);
        assert!(!allowed(s.verify(bearer(&agent_token), "memory.read", None).await).await);
        let r = s.get_auth("/tasks/1", &agent_token).await;
        assert_eq!(r.status(), StatusCode::OK);
        let echo: Value = r.json().await.unwrap();
        assert_eq!(echo["headers"]["x-swarm-auth-method"], "agent");
        assert_eq!(echo["headers"]["x-swarm-subject"], id);
        // Demoting the parent shrinks the agent at once.
        s.set_role(&admin, &id, "viewer").await;
        let r = call(&s, &agent_token, &chat(20)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        s.set_role(&admin, &id, "agent-owner").await;

        // Heartbeats keep it alive past the idle time...
        for _ in 0..3 {
            s.advance(Duration::from_millis(600));
            let r = s
                .post_auth(
                    &format!("/agents/sessions/{sid}/heartbeat"),
                    &token,
                    json!({}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert!(allowed(s.verify(bearer(&agent_token), "tasks.read", None).await).await);
        // ...and without them it is released.
        s.advance(Duration::from_millis(1500));
        let r = s.get_auth("/tasks/1", &agent_token).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        s.sweep_agents().await;
        released_as(&s, &token, &sid, "idle").await;
        let r = s
            .post_auth(
                &format!("/agents/sessions/{sid}/heartbeat"),
                &token,
                json!({}),
            )
            .await;
        expect_error(r, StatusCode::GONE, "gone").await;
        // Its agent slot is free again.
        let r = spawn(&s, &token, json!({"name": "second"})).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let list: Value = s
            .get_auth("/agents/sessions", &token)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        // An operator (agents.manage) sees everyone's by default.
        let all: Value = s
            .get_auth("/agents/sessions", &admin)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(all["items"][0]["parent_id"], id, "{all}");
        let own: Value = s
            .get_auth("/agents/sessions?all=false", &admin)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(own["items"].as_array().unwrap().len(), 0, "{own}");
        let health = s.get_auth("/quota/health", &admin).await;
        assert_eq!(health.status(), StatusCode::OK);
        let health: Value = health.json().await.unwrap();
        assert_eq!(health["active_agents"], 1);
        // The parent's own set: one agent of one allowed.
        let own = health["limit_sets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["scope"] == format!("user:{id}"))
            .cloned()
            .unwrap_or_else(|| panic!("{health}"));
        assert_eq!(own["user_id"], id);
        assert_eq!(own["max_agents"]["percent"], 100.0);
        expect_error(
            s.get_auth("/quota/health", &token).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn two_instances_on_one_redis_enforce_one_rpm_limit() {
    let Some(redis) = backends().pop().flatten() else {
        return;
    };
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    let ns = namespace();
    // One issuer, one database, one Redis: two replicas of one gateway.
    let issuer =
        |c: &mut swarmgate_server::Config| c.server.public_url = Some("http://gateway.test".into());
    let a = server(&m, &Some(redis.clone()), &ns, issuer).await;
    let database = a.database_url.clone();
    let b = server(&m, &Some(redis), &ns, move |c| {
        issuer(c);
        c.database.url = database;
    })
    .await;
    let admin = a.admin_token().await;
    let (_, token) = limited_user(&a, &admin, "spread", json!({"rpm": 5})).await;
    let calls = (0..20).map(|i| {
        let s = if i % 2 == 0 { &a } else { &b };
        let token = &token;
        async move { s.get_auth("/tasks/1", token).await.status() }
    });
    let statuses = futures_util::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (5, 15), "{statuses:?}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn on_limit_queue_waits_for_capacity_up_to_the_configured_time() {
    let m = Mock::start(&["--models", "phi-3.5-mini", "--latency-ms", "300"]).await;
    for (wait_ms, both_pass) in [(5_000, true), (100, false)] {
        let s = server(&m, &None, &namespace(), |c| {
            c.limits.queue_max_wait_ms = wait_ms;
        })
        .await;
        let admin = s.admin_token().await;
        let (_, token) = limited_user(
            &s,
            &admin,
            "queued",
            json!({"max_concurrent": 1, "on_limit": "queue"}),
        )
        .await;
        let body = chat(20);
        let (first, second) = tokio::join!(call(&s, &token, &body), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            call(&s, &token, &body).await
        });
        assert_eq!(first.status(), StatusCode::OK);
        if both_pass {
            assert_eq!(second.status(), StatusCode::OK, "waited for the slot");
        } else {
            let body = expect_error(second, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
            assert_eq!(body["error"]["limit"], "max_concurrent");
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn the_quota_and_auth_test_cli_see_what_a_running_gateway_counts() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    // Without Redis the counters are inside the server: the CLI says so.
    let (code, _, err) = run_binary(&["quota", "cleanup"], &[], None).await;
    assert_eq!(code, 1);
    assert!(err.contains("REDIS_URL"), "{err}");
    let Some(redis) = backends().pop().flatten() else {
        return;
    };
    let ns = namespace();
    let s = server(&m, &Some(redis.clone()), &ns, |_| {}).await;
    let admin = s.admin_token().await;
    let (id, token) = limited_user(&s, &admin, "cli-user", json!({"rpm": 5})).await;
    assert_eq!(
        s.get_auth("/tasks/1", &token).await.status(),
        StatusCode::OK
    );
    let r = spawn(&s, &token, json!({"name": "cli-agent"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let env = vec![
        ("DATABASE_URL", s.database_url.clone()),
        ("REDIS_URL", redis),
        ("SWARMGATE_REDIS__NAMESPACE", ns),
    ];
    let cli = |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            let (code, out, err) = run_binary(args, &env, None).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            out
        }
    };
    let info: Value =
        serde_json::from_str(&cli(&["quota", "--json", "info", "--user", "cli-user"]).await)
            .unwrap();
    let limits = info["limits"].as_array().unwrap();
    assert_eq!(limits[0]["scope"], format!("user:{id}"));
    assert_eq!(
        limits[0]["rpm"],
        json!({"limit": 5, "used": 1, "remaining": 4})
    );
    let status: Value = serde_json::from_str(&cli(&["quota", "--json", "status"]).await).unwrap();
    assert_eq!(status["active_agents"], 1);
    assert_eq!(status["shared_state"], "redis");
    assert_eq!(status["profiles"], json!([]), "no provider key configured");
    let cleaned: Value = serde_json::from_str(&cli(&["quota", "--json", "cleanup"]).await).unwrap();
    assert_eq!(cleaned["released"], 0, "the session is not idle");

    let key = s.create_key(&token, &["tasks.read"]).await;
    let key = key["key"].as_str().unwrap().to_string();
    let (code, out, err) = run_binary(
        &["auth", "test"],
        &[("SWARMGATE_URL", s.base.clone()), ("SWARMGATE_TOKEN", key)],
        None,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cli-user") && out.contains("by api_key"),
        "{out}"
    );
    assert!(out.contains("key permissions: tasks.read"), "{out}");
    assert!(out.contains(&format!("limits user:{id}: rpm")), "{out}");
    let (code, _, err) = run_binary(
        &["auth", "test"],
        &[
            ("SWARMGATE_URL", s.base.clone()),
            ("SWARMGATE_TOKEN", "sgk_not-a-key".into()),
        ],
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("refused the credential: 401"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn an_agent_spawned_with_a_key_is_bound_by_the_key_and_sees_only_itself() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    // Idle after 12 s: the sweep then runs every 3 s.
    let s = server(&m, &None, &namespace(), |c| c.agents.idle_minutes = 0.2).await;
    let admin = s.admin_token().await;
    let (user_id, token) = limited_user(&s, &admin, "keyed", json!({})).await;
    let r = s
        .post_auth(
            "/auth/api-keys",
            &token,
            json!({"name": "spawner", "permissions": ["agents.spawn", "models.*", "tasks.read"],
                   "limits": {"rpm": 3}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key: Value = r.json().await.unwrap();
    let (key_id, key) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let r = spawn(&s, key, json!({"name": "a", "model": "phi-3.5-mini"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let a: Value = r.json().await.unwrap();
    let r = spawn(&s, key, json!({"name": "b"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let b: Value = r.json().await.unwrap();
    let a_token = a["token"].as_str().unwrap();
    // The key's rpm of 3 binds its agents (the spawns did not use it).
    for _ in 0..3 {
        assert_eq!(
            s.get_auth("/tasks/1", a_token).await.status(),
            StatusCode::OK
        );
    }
    let r = s.get_auth("/tasks/1", a_token).await;
    let body = expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    assert_eq!(body["error"]["scope"], format!("key:{key_id}"));
    // An agent sees only its own session.
    let a_sid = a["session_id"].as_str().unwrap();
    let b_sid = b["session_id"].as_str().unwrap();
    assert_eq!(
        s.get_auth(&format!("/agents/sessions/{a_sid}"), a_token)
            .await
            .status(),
        StatusCode::OK
    );
    expect_error(
        s.get_auth(&format!("/agents/sessions/{b_sid}"), a_token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        s.delete_auth(&format!("/agents/sessions/{b_sid}"), a_token)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        s.get_auth("/agents/sessions", a_token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Introspection tells the agent's own grants and whom it acts for.
    let rs: Value = s
        .post_auth("/admin/clients", &admin, json!({"name": "resource-server", "grant_types": ["client_credentials"], "scopes": ["tasks.read"], "token_endpoint_auth_method": "client_secret_basic"}))
        .await
        .json()
        .await
        .unwrap();
    let r = s
        .client
        .post(s.url("/auth/introspect"))
        .basic_auth(
            rs["client_id"].as_str().unwrap(),
            rs["client_secret"].as_str(),
        )
        .form(&[("token", a_token)])
        .send()
        .await
        .unwrap();
    let info: Value = r.json().await.unwrap();
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["auth_method"], "agent");
    assert_eq!(
        info["sub"],
        format!("agent:{}", a["agent_id"].as_str().unwrap())
    );
    assert_eq!(info["act"]["sub"], user_id);
    assert_eq!(info["scope"], "agents.spawn models.* tasks.read");
    // Revoking the key stops every agent it spawned.
    let r = s
        .delete_auth(&format!("/auth/api-keys/{key_id}"), &token)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for agent in [&a, &b] {
        let t = agent["token"].as_str().unwrap();
        assert_eq!(
            s.get_auth("/quota", t).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // ...and the sweep ends their sessions, freeing what they held.
    released_as(&s, &token, b_sid, "key_revoked").await;
    s.stop().await;
}

#[tokio::test]
async fn two_gateway_processes_on_one_redis_admit_one_rpm_limit_between_them() {
    let Some(redis) = backends().pop().flatten() else {
        return;
    };
    let m = Mock::start(&[]).await;
    let config = config_file(&format!(
        "[[routes]]\nname = \"tasks\"\npath_prefix = \"/tasks\"\nupstreams = [\"{}\"]\npermission = \"tasks.read\"\n\n[limits.roles.admin]\nrpm = 5\n",
        m.base
    ));
    let ns = namespace();
    let env = |database: Option<String>| {
        let mut env = vec![
            ("SWARMGATE_CONFIG", config.display().to_string()),
            ("REDIS_URL", redis.clone()),
            ("SWARMGATE_REDIS__NAMESPACE", ns.clone()),
            (
                "SWARMGATE_SERVER__PUBLIC_URL",
                "http://gateway.test".to_string(),
            ),
        ];
        env.extend(database.map(|d| ("DATABASE_URL", d)));
        env
    };
    let a = Process::serve(&env(None)).await;
    let b = Process::serve(&env(Some(a.database_url()))).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{}/auth/login", a.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap();
    let calls = (0..20).map(|i| {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let request = client.get(format!("{base}/tasks/1")).bearer_auth(token);
        async move { request.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(calls).await;
    let ok = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    let limited: Vec<_> = responses
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        (ok, limited.len()),
        (5, 15),
        "one rpm of 5 across both processes"
    );
    for r in limited {
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=12).contains(&retry), "{retry}");
    }
}

#[tokio::test]
async fn a_queue_does_not_wait_for_what_its_longest_wait_cannot_cover() {
    let m = Mock::start(&["--models", "phi-3.5-mini"]).await;
    let s = server(&m, &None, &namespace(), |c| {
        c.limits.queue_max_wait_ms = 5_000
    })
    .await;
    let admin = s.admin_token().await;
    let (_, token) = limited_user(
        &s,
        &admin,
        "patient",
        json!({"rpm": 1, "on_limit": "queue"}),
    )
    .await;
    assert_eq!(
        s.get_auth("/tasks/1", &token).await.status(),
        StatusCode::OK
    );
    // The next request is a minute away: more than the 5 s a queue may wait.
    let asked = std::time::Instant::now();
    let r = s.get_auth("/tasks/1", &token).await;
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "refused without waiting"
    );
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 50, "{retry}");
    expect_error(r, StatusCode::TOO_MANY_REQUESTS, "quota_exceeded").await;
    s.stop().await;
}
