//! Tests that start the real `swarmgate` binary: configuration from the
//! environment, the admin CLI, key rotation, secrets in logs and database,
//! two instances sharing PostgreSQL and Redis, Redis failing, shutdown.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use swarmgate_store::testing::{fresh_postgres_database, test_database_url};

use crate::common::*;

async fn login(client: &Client, base: &str, username: &str, password: &str) -> Value {
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn me_status(client: &Client, base: &str, token: &str) -> StatusCode {
    client
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("SWARMGATE_REQUIRE_SERVICES").is_some() => {
            panic!("TEST_REDIS_URL must be set when SWARMGATE_REQUIRE_SERVICES is set")
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("JWT_ALGORITHM", "HS256"), ("JWT_SECRET_KEY", "too-short")],
            "JWT_SECRET_KEY",
        ),
        (&[("JWT_ALGORITHM", "RS512")], "JWT_ALGORITHM"),
        (&[("AUTH_PORT", "not-a-port")], "AUTH_PORT"),
        (
            &[("SWARMGATE_SECURITY__LOGIN_RATE_PER_MINUTE", "lots")],
            "security.login_rate_per_minute",
        ),
        (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
    ];
    for (env, named) in cases {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let (code, _, stderr) = run_binary(&["check-config"], &env, None).await;
        assert_eq!(code, 2, "{env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{named} not named in: {stderr}");
    }
    let (code, _, stderr) =
        run_binary(&["serve"], &[("JWT_ALGORITHM", "HS256".into())], None).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("JWT_SECRET_KEY"));
}

#[tokio::test]
async fn check_config_reads_the_file_and_the_environment() {
    let file =
        config_file("[server]\nlisten = \"127.0.0.1:9100\"\n[tokens]\naudience = \"swarm\"\n");
    let path = file.display().to_string();
    let (code, out, err) = run_binary(&["check-config", "--config", &path], &[], None).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("127.0.0.1:9100"), "{out}");
    // SWARMGATE_CONFIG names the file too; AUTH_PORT in the environment overrides the file's port.
    let (code, out, _) = run_binary(
        &["check-config"],
        &[
            ("SWARMGATE_CONFIG", path.clone()),
            ("AUTH_PORT", "9200".into()),
        ],
        None,
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        out.contains("127.0.0.1:9200"),
        "AUTH_PORT (environment) beats the file: {out}"
    );
    let (_, out, _) = run_binary(&["check-config"], &[("AUTH_PORT", "9200".into())], None).await;
    assert!(out.contains("127.0.0.1:9200"), "{out}");
    let (_, out, _) = run_binary(
        &["check-config"],
        &[
            ("AUTH_PORT", "9200".into()),
            ("SWARMGATE_LISTEN", "127.0.0.1:9300".into()),
        ],
        None,
    )
    .await;
    assert!(out.contains("127.0.0.1:9300"), "{out}");
    let (_, out, _) = run_binary(
        &["check-config"],
        &[
            ("SWARMGATE_CONFIG", path.clone()),
            ("AUTH_PORT", "9200".into()),
            ("SWARMGATE_LISTEN", "127.0.0.1:9300".into()),
        ],
        None,
    )
    .await;
    assert!(
        out.contains("127.0.0.1:9300"),
        "SWARMGATE_LISTEN wins over AUTH_PORT and the file: {out}"
    );
    let (code, _, err) = run_binary(
        &["check-config"],
        &[("SWARMGATE_SECURITY__LOCKOUT_MINUTES", "99999999999".into())],
        None,
    )
    .await;
    assert_eq!(code, 2, "huge values are refused, not overflowed: {err}");
    assert!(err.contains("lockout_minutes"), "{err}");
    // Unknown keys in the file are refused, naming them.
    std::fs::write(&file, "[server]\nlisten_on = \"x\"\n").unwrap();
    let (code, _, err) = run_binary(&["check-config", "--config", &path], &[], None).await;
    assert_eq!(code, 2);
    assert!(err.contains("listen_on"), "{err}");
    let (code, _, err) = run_binary(
        &["check-config", "--config", "/nonexistent.toml"],
        &[],
        None,
    )
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}

#[tokio::test]
async fn environment_settings_reach_the_running_server() {
    let p = Process::serve(&[
        ("SWARMGATE_SECURITY__LOGIN_RATE_PER_MINUTE", "2".into()),
        ("JWT_EXPIRATION_HOURS", "2".into()),
    ])
    .await;
    let client = Client::new();
    let body = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    assert_eq!(body["expires_in"], 7200);
    login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    let r = client
        .post(format!("{}/auth/login", p.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn admin_create_user_works_against_the_configured_database() {
    let dir = std::env::temp_dir().join(format!(
        "sg-admin-{}",
        swarmgate_core::random::uuid_simple()
    ));
    let url = format!("sqlite://{}/swarmgate.db", dir.display());
    let env = [("DATABASE_URL", url.clone())];
    let (code, out, err) = run_binary(
        &[
            "admin",
            "create-user",
            "--username",
            "mlops",
            "--email",
            "ml@example.com",
            "--role",
            "ml-engineer",
            "--password-stdin",
        ],
        &env,
        Some("Ml!Engineer-Pass9\n"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ml-engineer"), "{out}");
    let (code, _, err) = run_binary(
        &[
            "admin",
            "create-user",
            "--username",
            "bad",
            "--email",
            "b@example.com",
            "--role",
            "emperor",
            "--password-stdin",
        ],
        &env,
        Some("Ml!Engineer-Pass9\n"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("role"), "{err}");
    // A role defined in the configuration is as good as a built-in one.
    let config = dir.join("roles.toml");
    std::fs::write(&config, "[roles.auditor]\npermissions = [\"audit.read\"]\n").unwrap();
    let (code, out, err) = run_binary(
        &[
            "admin",
            "create-user",
            "--username",
            "aud",
            "--email",
            "aud@example.com",
            "--role",
            "auditor",
            "--password-stdin",
        ],
        &[
            ("DATABASE_URL", url.clone()),
            ("SWARMGATE_CONFIG", config.display().to_string()),
        ],
        Some("Aud!tor-Pass-42x\n"),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("auditor"), "{out}");
    let p = Process::serve(&[("DATABASE_URL", url)]).await;
    let body = login(&Client::new(), &p.base, "mlops", "Ml!Engineer-Pass9").await;
    assert_eq!(body["role"], "ml-engineer");
}

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

#[tokio::test]
async fn two_instances_on_one_postgres_and_redis_share_revocation() {
    let (Some(admin_url), Some(redis)) = (test_database_url(), redis_url()) else {
        eprintln!("TEST_DATABASE_URL/TEST_REDIS_URL unset: two-instance test not run");
        return;
    };
    let database = fresh_postgres_database(&admin_url).await.unwrap();
    let namespace = format!("sgtest-{}", swarmgate_core::random::uuid_simple());
    let shared = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("DATABASE_URL", database.clone()),
            ("REDIS_URL", redis.clone()),
            ("SWARMGATE_REDIS__NAMESPACE", namespace.clone()),
            (
                "SWARMGATE_SERVER__PUBLIC_URL",
                "http://swarmgate.test".to_string(),
            ),
        ];
        env.extend_from_slice(extra);
        env
    };
    let a = Process::serve(&shared(&[])).await;
    let b = Process::serve(&shared(&[])).await;
    let client = Client::new();
    let session = login(&client, &a.base, "admin", ADMIN_PASSWORD).await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(
        me_status(&client, &b.base, token).await,
        StatusCode::OK,
        "B accepts A's token"
    );
    let r = client
        .post(format!("{}/auth/logout", a.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let logged_out = std::time::Instant::now();
    // The very next request on B already fails: well inside the 1 s rule.
    let status = me_status(&client, &b.base, token).await;
    let elapsed = logged_out.elapsed();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    // A key revoked on A fails on B on the very next request.
    let fresh = login(&client, &a.base, "admin", ADMIN_PASSWORD).await;
    let r = client
        .post(format!("{}/auth/api-keys", a.base))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .json(&json!({"name": "shared", "permissions": ["tasks.read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let check = |base: String| {
        let client = client.clone();
        let key = created["key"].as_str().unwrap().to_string();
        async move {
            client
                .post(format!("{base}/auth/verify-permission"))
                .header("x-api-key", key)
                .json(&json!({"permission": "tasks.read"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(check(b.base.clone()).await, StatusCode::OK);
    let r = client
        .delete(format!(
            "{}/auth/api-keys/{}",
            a.base,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = std::time::Instant::now();
    assert_eq!(check(b.base.clone()).await, StatusCode::UNAUTHORIZED);
    assert!(revoked.elapsed() < Duration::from_secs(1));
    // Lockout and rate limits are shared too: five failures on A lock B.
    for _ in 0..5 {
        client
            .post(format!("{}/auth/login", a.base))
            .json(&json!({"username": "admin", "password": "Wrong!Pass1"}))
            .send()
            .await
            .unwrap();
    }
    let r = client
        .post(format!("{}/auth/login", b.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::LOCKED);
    // Both instances sign with the one key kept in the database.
    let ja: Value = client
        .get(format!("{}/.well-known/jwks.json", a.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jb: Value = client
        .get(format!("{}/.well-known/jwks.json", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ja, jb);
    let health: Value = client
        .get(format!("{}/health", b.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["redis"], "ok");
    assert_eq!(health["database"], "ok");
}

#[tokio::test]
async fn redis_down_fails_closed_with_503_and_health_says_why() {
    let Some(_) = redis_url() else {
        eprintln!("TEST_REDIS_URL unset: Redis failure test not run");
        return;
    };
    // A private Redis we are allowed to kill.
    let port = free_port();
    let mut redis = tokio::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server must be installed to run this test");
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let p = Process::serve(&[("REDIS_URL", url)]).await;
    let client = Client::new();
    let session = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(me_status(&client, &p.base, token).await, StatusCode::OK);

    redis.kill().await.unwrap();
    redis.wait().await.unwrap();

    let r = client
        .get(format!("{}/auth/me", p.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("redis"),
        "{body}"
    );
    let r = client
        .post(format!("{}/auth/login", p.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "login fails closed as well"
    );
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["redis"]));
    assert!(
        health["redis"].as_str().unwrap().starts_with("error"),
        "{health}"
    );
    assert_eq!(health["database"], "ok");
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let mut p = Process::serve(&[]).await;
    let pid = p.pid();
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(p.stderr().contains("swarmgate stopped"));
}

#[tokio::test]
async fn first_start_generates_and_prints_an_admin_password_once() {
    let dir =
        std::env::temp_dir().join(format!("sg-boot-{}", swarmgate_core::random::uuid_simple()));
    let url = format!("sqlite://{}/swarmgate.db", dir.display());
    let port = free_port();
    let start = || {
        let url = url.clone();
        async move {
            let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"))
                .arg("serve")
                .env_clear()
                .env("DATABASE_URL", url)
                .env("SWARMGATE_LISTEN", format!("127.0.0.1:{port}"))
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            wait_until_answering(&format!("http://127.0.0.1:{port}/health")).await;
            child.start_kill().unwrap();
            let out = child.wait_with_output().await.unwrap();
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    };
    let first = start().await;
    let line = first
        .lines()
        .find(|l| l.contains("generated password"))
        .expect("password printed");
    let password = line.rsplit(' ').next().unwrap().to_string();
    let second = start().await;
    assert!(!second.contains("generated password"), "printed only once");
    let p = Process::serve(&[("DATABASE_URL", url)]).await;
    let body = login(&Client::new(), &p.base, "admin", &password).await;
    assert_eq!(body["role"], "admin");
}

#[tokio::test]
async fn redis_unreachable_at_start_still_starts_and_fails_closed() {
    let port = free_port();
    let p = Process::serve_unready(&[("REDIS_URL", format!("redis://127.0.0.1:{port}"))]).await;
    let client = Client::new();
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["redis"]));
    let r = client
        .post(format!("{}/auth/login", p.base))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut p = Process::serve(&[]).await;
    let body =
        serde_json::to_string(&json!({"username": "admin", "password": ADMIN_PASSWORD})).unwrap();
    let mut stream = tokio::net::TcpStream::connect(p.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // Half the request is in; then the server is told to stop.
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = p.pid().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("access_token"));
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .expect("stops after the request")
        .unwrap();
    assert!(exit.success());
}

#[tokio::test]
async fn database_down_is_503_naming_the_database() {
    let Some(admin_url) = test_database_url() else {
        eprintln!("TEST_DATABASE_URL unset: database failure test not run");
        return;
    };
    let database = fresh_postgres_database(&admin_url).await.unwrap();
    let name = database
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let p = Process::serve(&[("DATABASE_URL", database.clone())]).await;
    let client = Client::new();
    let session = login(&client, &p.base, "admin", ADMIN_PASSWORD).await;
    // Take the database away: no new connections, existing ones killed.
    let admin =
        swarmgate_store::Store::connect(&fresh_postgres_database(&admin_url).await.unwrap())
            .await
            .unwrap();
    admin
        .raw_execute_for_tests(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .raw_execute_for_tests(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let r = client
        .get(format!("{}/health", p.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["failing"], json!(["database"]));
    let r = client
        .get(format!("{}/auth/me", p.base))
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("database"));
    admin
        .raw_execute_for_tests(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_admin_cli_acts_on_a_running_server_through_the_database() {
    // No Redis: the server picks up CLI changes from the database (the
    // revocation poller runs every 2 s).
    let p = Process::serve(&[]).await;
    let client = Client::new();
    let env = [("DATABASE_URL", p.database_url())];
    let cli = |args: &'static [&'static str]| {
        let env = env.clone();
        async move {
            let (code, out, err) = run_binary(args, &env, None).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            out
        }
    };
    let password = "Cl1!User-Password";
    let r = client
        .post(format!("{}/auth/register", p.base))
        .json(&json!({"username": "cli-user", "email": "cli@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let session = login(&client, &p.base, "cli-user", password).await;
    let token = session["access_token"].as_str().unwrap().to_string();

    let listed: Value =
        serde_json::from_str(&cli(&["admin", "user", "list", "--json"]).await).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    assert!(listed["next_cursor"].is_null());
    let page: Value =
        serde_json::from_str(&cli(&["admin", "user", "list", "--limit", "1", "--json"]).await)
            .unwrap();
    assert_eq!(page["items"][0]["username"], "admin");
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest, _) = run_binary(
        &["admin", "user", "list", "--json", "--cursor", &cursor],
        &env,
        None,
    )
    .await;
    let rest: Value = serde_json::from_str(&rest).unwrap();
    assert_eq!(rest["items"][0]["username"], "cli-user");
    let table = cli(&["admin", "user", "list"]).await;
    assert!(
        table.lines().next().unwrap().starts_with("USERNAME"),
        "{table}"
    );
    assert!(table.contains("cli-user"));

    let created: Value = serde_json::from_str(
        &cli(&[
            "admin",
            "key",
            "create",
            "--user",
            "cli-user",
            "--name",
            "from cli",
            "--permission",
            "tasks.read",
            "--permission",
            "memory.write",
            "--json",
        ])
        .await,
    )
    .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let keys = cli(&["admin", "key", "list", "--user", "cli-user"]).await;
    assert!(keys.contains("from cli") && !keys.contains(&key), "{keys}");
    let (code, _, err) = run_binary(
        &[
            "admin",
            "key",
            "create",
            "--user",
            "cli-user",
            "--name",
            "greedy",
            "--permission",
            "models.load",
        ],
        &env,
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("models.load"), "{err}");

    let check = |credential: (&'static str, String), permission: &'static str| {
        let client = client.clone();
        let base = p.base.clone();
        async move {
            let r = client
                .post(format!("{base}/auth/verify-permission"))
                .header(credential.0, credential.1)
                .json(&json!({ "permission": permission }))
                .send()
                .await
                .unwrap();
            match r.status() {
                StatusCode::OK => Some(
                    r.json::<Value>().await.unwrap()["allowed"]
                        .as_bool()
                        .unwrap(),
                ),
                _ => None,
            }
        }
    };
    /// Polls until `probe` gives `want` (the server sees CLI changes within
    /// one poll interval).
    async fn eventually<F, Fut>(mut probe: F, want: Option<bool>) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<bool>>,
    {
        for _ in 0..60 {
            if probe().await == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    assert_eq!(
        check(("x-api-key", key.clone()), "memory.write").await,
        Some(true)
    );

    // Demotion through the CLI shrinks the key on the running server.
    let out: Value = serde_json::from_str(
        &cli(&["admin", "user", "set-role", "cli-user", "viewer", "--json"]).await,
    )
    .unwrap();
    assert_eq!(out["role"], "viewer");
    assert!(
        eventually(
            || check(("x-api-key", key.clone()), "memory.write"),
            Some(false)
        )
        .await
    );
    assert_eq!(
        check(("x-api-key", key.clone()), "tasks.read").await,
        Some(true)
    );

    // A lockout cleared by the CLI is cleared on the running server.
    for _ in 0..5 {
        client
            .post(format!("{}/auth/login", p.base))
            .json(&json!({"username": "cli-user", "password": "Wrong!Pass1"}))
            .send()
            .await
            .unwrap();
    }
    let locked = |base: String| {
        let client = client.clone();
        async move {
            let r = client
                .post(format!("{base}/auth/login"))
                .json(&json!({"username": "cli-user", "password": "Cl1!User-Password"}))
                .send()
                .await
                .unwrap();
            Some(r.status() == StatusCode::LOCKED)
        }
    };
    assert_eq!(locked(p.base.clone()).await, Some(true));
    cli(&["admin", "user", "unlock", "cli-user"]).await;
    assert!(
        eventually(|| locked(p.base.clone()), Some(false)).await,
        "unlock reached the server"
    );

    // Disabling kills the key and the session; enabling does not revive them.
    cli(&["admin", "user", "disable", "cli-user"]).await;
    assert!(eventually(|| check(("x-api-key", key.clone()), "tasks.read"), None).await);
    assert!(
        eventually(
            || check(("authorization", format!("Bearer {token}")), "tasks.read"),
            None
        )
        .await
    );
    cli(&["admin", "user", "enable", "cli-user"]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(check(("x-api-key", key.clone()), "tasks.read").await, None);

    let revoked: Value = serde_json::from_str(&{
        let (_, out, _) = run_binary(
            &[
                "admin",
                "key",
                "revoke",
                created["id"].as_str().unwrap(),
                "--json",
            ],
            &env,
            None,
        )
        .await;
        out
    })
    .unwrap();
    assert_eq!(revoked["revoked"], created["id"]);
    let (code, _, err) =
        run_binary(&["admin", "user", "delete", "nobody-at-all"], &env, None).await;
    assert_eq!(code, 1);
    assert!(err.contains("nobody-at-all"));
    let out = cli(&["admin", "user", "delete", "cli-user"]).await;
    assert!(out.contains("deleted"));
}

#[tokio::test]
async fn the_readme_quick_start_runs_against_swarmgate_demo() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("curl is needed to run the README's quick start");
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## Quick start").nth(1).unwrap();
    let script = section
        .split("```bash\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let port = free_port();
    let dir =
        std::env::temp_dir().join(format!("sg-demo-{}", swarmgate_core::random::uuid_simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"))
        .arg("demo")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SWARMGATE_LISTEN", format!("127.0.0.1:{port}"))
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_answering(&format!("http://127.0.0.1:{port}/health")).await;
    let script = script.replace("127.0.0.1:8005", &format!("127.0.0.1:{port}"));
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"username\":\"john_doe\""), "{stdout}");
    assert!(
        stdout.contains("Mock reply: you said Hello, gateway!."),
        "plain completion: {stdout}"
    );
    assert!(
        stdout.contains("data: [DONE]"),
        "streamed completion: {stdout}"
    );
    assert!(
        stdout.contains("\"group\":\"demo-model\"") && stdout.contains("\"requests\":2"),
        "usage: {stdout}"
    );
    assert!(stdout.contains("\n204\n"), "logout: {stdout}");
    assert!(
        stdout
            .trim_end()
            .ends_with("\"session_revoked\",\"message\":\"session has been revoked\"}}"),
        "{stdout}"
    );
    demo.start_kill().unwrap();
    let _ = demo.wait().await;
}

#[tokio::test]
async fn the_client_cli_creates_lists_and_deletes_clients_a_running_server_honours() {
    let p = Process::serve(&[]).await;
    let client = Client::new();
    let env = [("DATABASE_URL", p.database_url())];
    let cli = |args: Vec<String>| {
        let env = env.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, out, err) = run_binary(&args, &env, None).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            out
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let created: Value = serde_json::from_str(
        &cli(args(&[
            "admin",
            "--json",
            "client",
            "create",
            "--name",
            "cli-svc",
            "--scope",
            "tasks.read",
        ]))
        .await,
    )
    .unwrap();
    let id = created["client_id"].as_str().unwrap().to_string();
    let secret = created["client_secret"].as_str().unwrap().to_string();
    assert_eq!(created["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(created["grant_types"], json!(["client_credentials"]));

    // A private_key_jwt client, its public key read from a file.
    let jwks_path = p.stderr_path.parent().unwrap().join("client-jwks.json");
    let public = {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            pair.public_key().as_ref(),
        )
    };
    std::fs::write(
        &jwks_path,
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": public}]}).to_string(),
    )
    .unwrap();
    let keyed: Value = serde_json::from_str(
        &cli(args(&[
            "admin",
            "--json",
            "client",
            "create",
            "--name",
            "cli-node",
            "--scope",
            "metrics.report",
            "--auth-method",
            "private_key_jwt",
            "--jwks-file",
            jwks_path.to_str().unwrap(),
        ]))
        .await,
    )
    .unwrap();
    assert!(keyed.get("client_secret").is_none(), "{keyed}");
    assert_eq!(keyed["jwks"]["keys"][0]["x"], public.as_str());
    cli(args(&[
        "admin",
        "client",
        "delete",
        keyed["client_id"].as_str().unwrap(),
    ]))
    .await;

    let table = cli(args(&["admin", "client", "list"])).await;
    assert!(table.starts_with("CLIENT_ID"), "{table}");
    assert!(table.contains("cli-svc"), "{table}");
    assert!(!table.contains(&secret), "a secret is never listed");

    let r = client
        .post(format!("{}/auth/token", p.base))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(me_status(&client, &p.base, &token).await, StatusCode::OK);

    cli(args(&["admin", "client", "delete", &id])).await;
    // The server learns of it from the database within a poll.
    let mut status = StatusCode::OK;
    for _ in 0..50 {
        status = me_status(&client, &p.base, &token).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let listed: Value =
        serde_json::from_str(&cli(args(&["admin", "--json", "client", "list"])).await).unwrap();
    assert_eq!(listed["items"], json!([]));
    let (code, _, err) = run_binary(&["admin", "client", "delete", &id], &env, None).await;
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
}

/// Each HTTP thread of `serve` has a runtime of its own, and database
/// connections opened while answering belong to it: usage still batched
/// when SIGTERM comes is written before the process exits, on PostgreSQL
/// too when `TEST_DATABASE_URL` is set.
#[tokio::test]
async fn usage_batched_at_sigterm_is_written_before_exit() {
    let m = crate::mock::Mock::start(&["--models", "exit-model"]).await;
    let config = config_file(&format!(
        "[[models]]\nname = \"exit-model\"\nupstreams = [\"{}\"]\n",
        m.base
    ));
    let mut env = vec![
        ("SWARMGATE_CONFIG", config.display().to_string()),
        // Only the flush at shutdown writes.
        ("SWARMGATE_USAGE__FLUSH_INTERVAL_MS", "60000".to_string()),
        ("SWARMGATE_SERVER__WORKER_THREADS", "2".to_string()),
    ];
    if let Some(admin) = test_database_url() {
        env.push((
            "DATABASE_URL",
            fresh_postgres_database(&admin).await.unwrap(),
        ));
    }
    let mut first = Process::serve(&env).await;
    if !env.iter().any(|(k, _)| *k == "DATABASE_URL") {
        env.push(("DATABASE_URL", first.database_url()));
    }
    let client = Client::new();
    let chat =
        json!({"model": "exit-model", "messages": [{"role": "user", "content": "one two three"}]});
    // Separate connections, so both threads are likely to answer some.
    for _ in 0..6 {
        let token = login(&Client::new(), &first.base, "admin", ADMIN_PASSWORD).await
            ["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = Client::new()
            .post(format!("{}/v1/chat/completions", first.base))
            .bearer_auth(&token)
            .json(&chat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    tokio::process::Command::new("kill")
        .args(["-TERM", &first.pid().to_string()])
        .status()
        .await
        .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), first.child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(exit.success(), "{exit:?}\n{}", first.stderr());

    let second = Process::serve(&env).await;
    let token = login(&client, &second.base, "admin", ADMIN_PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let usage: Value = client
        .get(format!("{}/usage?group_by=model", second.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["items"][0]["group"], "exit-model", "{usage}");
    assert_eq!(usage["items"][0]["requests"], 6, "{usage}");
}
