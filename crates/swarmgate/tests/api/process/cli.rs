//! The command line against the configured database, acting on a running
//! server: users, keys, clients.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use super::*;
use crate::common::*;

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
