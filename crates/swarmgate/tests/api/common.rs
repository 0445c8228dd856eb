//! The harness: an in-process server on a real socket, and helpers to start
//! the real `swarmgate` binary.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};
use swarmgate_server::http::AppState;
use swarmgate_server::{App, Config};
use swarmgate_service::{ManualClock, SharedClock, SystemClock};
use swarmgate_store::testing::fresh_sqlite_url;
use swarmgate_store::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_PASSWORD: &str = "Adm1n!Bootstrap-Pass";
pub const PASSWORD: &str = "Tr1cky!Horse-Battery";

pub struct TestServer {
    pub base: String,
    pub client: Client,
    pub database_url: String,
    /// The server's clock when the test asked for one it can move.
    clock: Option<Arc<ManualClock>>,
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Generous limits so tests that are not about limits never hit them.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.database.url = fresh_sqlite_url();
    config.security.login_rate_per_minute = 10_000;
    config.security.register_rate_per_hour = 10_000;
    config.bootstrap.admin_password = Some(swarmgate_server::config::Secret(ADMIN_PASSWORD.into()));
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_clock(adjust, None).await
    }

    /// A server whose services read `clock`: the test moves time forward
    /// ([`advance`](Self::advance)) instead of sleeping through a window.
    pub async fn start_with_manual_clock(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_clock(adjust, Some(ManualClock::starting_now())).await
    }

    async fn start_with_clock(
        adjust: impl FnOnce(&mut Config),
        clock: Option<Arc<ManualClock>>,
    ) -> Self {
        let mut config = test_config();
        let default_database = config.database.url.clone();
        adjust(&mut config);
        // SWARMGATE_TEST_API_DATABASE=postgres runs the same API tests on a
        // fresh PostgreSQL database each (TEST_DATABASE_URL names the server).
        if config.database.url == default_database
            && std::env::var("SWARMGATE_TEST_API_DATABASE").as_deref() == Ok("postgres")
        {
            let admin = swarmgate_store::testing::test_database_url()
                .expect("SWARMGATE_TEST_API_DATABASE=postgres needs TEST_DATABASE_URL");
            config.database.url = swarmgate_store::testing::fresh_postgres_database(&admin)
                .await
                .unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        if config.server.public_url.is_none() {
            config.server.public_url = Some(format!("http://{addr}"));
        }
        let database_url = config.database.url.clone();
        let settings = config.resolve().unwrap();
        let shared: SharedClock = match &clock {
            Some(manual) => manual.clone(),
            None => SystemClock::shared(),
        };
        let app = App::build_with_clock(settings, shared).await.unwrap();
        app.bootstrap().await.unwrap();
        let state = app.state();
        let (tx, rx) = oneshot::channel::<()>();
        let served = tokio::spawn(app.serve(listener, async {
            let _ = rx.await;
        }));
        Self {
            base: format!("http://{addr}"),
            client: Client::new(),
            database_url,
            clock,
            state,
            shutdown: Some(tx),
            served: Some(served),
        }
    }

    /// Shuts down gracefully and waits until batched writes are flushed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
    }

    /// Moves the server's manual clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock
            .as_ref()
            .expect("started with start_with_manual_clock")
            .advance(by);
    }

    /// Runs the agent sweep now, as the background task would on its next
    /// tick; returns how many sessions it released.
    pub async fn sweep_agents(&self) -> usize {
        self.state.services.agents.sweep().await.unwrap()
    }

    /// Logs in as the bootstrap admin; returns the access token.
    pub async fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn patch_auth(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /auth/verify-permission` with any credential header.
    pub async fn verify(
        &self,
        header: (&str, String),
        permission: &str,
        resource: Option<&str>,
    ) -> Response {
        let mut body = json!({ "permission": permission });
        if let Some(r) = resource {
            body["resource"] = json!(r);
        }
        self.client
            .post(self.url("/auth/verify-permission"))
            .header(header.0, header.1)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Creates an API key with the given session token; returns the body.
    pub async fn create_key(&self, token: &str, permissions: &[&str]) -> Value {
        let r = self
            .post_auth(
                "/auth/api-keys",
                token,
                json!({ "name": "test key", "permissions": permissions }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    /// Sets a user's role through the admin API.
    pub async fn set_role(&self, admin: &str, user_id: &str, role: &str) {
        let r = self
            .patch_auth(
                &format!("/admin/users/{user_id}"),
                admin,
                json!({ "role": role }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A second connection to the server's database, for white-box checks.
    pub async fn store(&self) -> Store {
        Store::connect(&self.database_url).await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn register(&self, username: &str) -> Value {
        let response = self
            .post(
                "/auth/register",
                json!({
                    "username": username,
                    "email": format!("{username}@example.com"),
                    "password": PASSWORD,
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> Value {
        let response = self
            .post(
                "/auth/login",
                json!({ "username": username, "password": password }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "login of {username}");
        response.json().await.unwrap()
    }

    /// Registers and logs in; returns the login body.
    pub async fn user_session(&self, username: &str) -> Value {
        self.register(username).await;
        self.login(username, PASSWORD).await
    }
}

/// Logs in at a server started as a process; returns the login body.
pub async fn login(client: &Client, base: &str, username: &str, password: &str) -> Value {
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// Asserts status and error code of a DESIGN.md error body; returns the body.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    body
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `toml` written to a `swarmgate.toml` in a fresh directory of its own.
pub fn config_file(toml: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sg-cfg-{}", swarmgate_core::random::uuid_simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("swarmgate.toml");
    std::fs::write(&file, toml).unwrap();
    file
}

/// The real binary, started with a clean environment plus `env`.
pub struct Process {
    pub child: tokio::process::Child,
    pub base: String,
    pub stderr_path: std::path::PathBuf,
}

impl Process {
    pub async fn serve(env: &[(&str, String)]) -> Self {
        let process = Self::serve_unready(env).await;
        process.wait_ready(true).await;
        process
    }

    /// Starts and waits until it answers `/health` at all (any status).
    pub async fn serve_unready(env: &[(&str, String)]) -> Self {
        let process = Self::spawn(env);
        process.wait_ready(false).await;
        process
    }

    fn spawn(env: &[(&str, String)]) -> Self {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "swarmgate-proc-{}",
            swarmgate_core::random::uuid_simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let stderr_path = dir.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SWARMGATE_LISTEN", addr.to_string())
            .env("SWARMGATE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env(
                "DATABASE_URL",
                format!("sqlite://{}/swarmgate.db", dir.display()),
            )
            .env("SWARMGATE_SECURITY__LOGIN_RATE_PER_MINUTE", "10000")
            .env("SWARMGATE_SECURITY__REGISTER_RATE_PER_HOUR", "10000")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        Self {
            child,
            base: format!("http://{addr}"),
            stderr_path,
        }
    }

    async fn wait_ready(&self, healthy: bool) {
        let client = Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() || !healthy {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("swarmgate did not become ready; stderr:\n{}", self.stderr());
    }

    /// The SQLite database the process serves from, for the CLI to share.
    pub fn database_url(&self) -> String {
        format!(
            "sqlite://{}/swarmgate.db",
            self.stderr_path.parent().unwrap().display()
        )
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// Runs the binary to completion (for one-shot subcommands).
pub async fn run_binary(
    args: &[&str],
    env: &[(&str, String)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

pub fn api_key(key: &str) -> (&'static str, String) {
    ("x-api-key", key.to_string())
}

/// `allowed` of a verify-permission response that must be 200.
pub async fn allowed(response: Response) -> bool {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["allowed"].as_bool().unwrap()
}

/// A JSON value as a JWT segment.
pub fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The server's current Ed25519 signing key, read from its database: its
/// row (kid, public key) and the key pair, for forging tokens in tests.
pub async fn server_signing_key(
    server: &TestServer,
) -> (
    swarmgate_core::SigningKeyRow,
    ring::signature::Ed25519KeyPair,
) {
    use base64::Engine;
    let key = server
        .store()
        .await
        .signing_keys("EdDSA")
        .await
        .unwrap()
        .remove(0);
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode(&key.private_key)
        .unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
    (key, pair)
}

/// Waits until `url` answers at all (any status), for up to ten seconds.
pub async fn wait_until_answering(url: &str) {
    let client = Client::new();
    for _ in 0..200 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds (or redefines) a role in a test server's configuration.
pub fn add_role(config: &mut Config, name: &str, permissions: &[&str]) {
    config.roles.insert(
        name.into(),
        swarmgate_server::config::RoleConfig {
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
        },
    );
}
