//! Start-up: configuration from the file and the environment, one line
//! naming a bad setting, the generated admin password.

use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::common::*;

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
