//! The `swarmgate` command line: serve, check-config, admin, keys.

// glibc's allocator showed as the largest user-space cost of a proxied
// request under load (malloc/free/consolidate, about 12% of samples);
// mimalloc is measurably cheaper there (bench/proxy.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod demo;
mod mock_upstream;
mod quota;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::json;
use swarmgate_server::{telemetry, App, Config, Settings};
use swarmgate_service::audit::{Audit, Subject};
use swarmgate_service::identity::{Identity, NewAccount};
use swarmgate_service::{RequestMeta, Services, SystemClock};
use swarmgate_store::Store;

#[derive(Parser)]
#[command(
    name = "swarmgate",
    version,
    about = "The zero-trust front door of an AI agent swarm"
)]
struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(long, global = true, env = "SWARMGATE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve,
    /// Run the server with a mock LLM upstream started in the same process,
    /// the model `demo-model` (which role `user` may call) and the route
    /// `/demo` (echo) configured: the README's quick start.
    Demo,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Administrative tasks against the configured database.
    Admin {
        /// Print JSON instead of a readable table or sentence.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// An OpenAI-compatible test server (models, chat and text completions
    /// with SSE streaming, embeddings; any other path echoes the request).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Delay every response by this much.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Fraction (0 to 1) of requests answered with a 500.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Models served, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "mock-model")]
        models: Vec<String>,
        /// The `x-api-key` Anthropic's `/v1/messages` requires (default:
        /// any, but one must be sent).
        #[arg(long)]
        anthropic_key: Option<String>,
    },
    /// Limits and agent sessions: status, one caller's standing, cleanup
    /// (against the configured database and Redis).
    Quota {
        /// Print JSON instead of readable lines.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Credentials against a running gateway.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// Signing-key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum QuotaCommand {
    /// Health of the quota state, live agent sessions, role limits.
    Status,
    /// The limit sets of one user, key or agent session and what each has
    /// used and has left.
    Info {
        /// A user by name, email or id.
        #[arg(long, group = "subject")]
        user: Option<String>,
        /// An API key by id.
        #[arg(long, group = "subject")]
        key: Option<String>,
        /// An agent session by id.
        #[arg(long, group = "subject")]
        agent: Option<String>,
    },
    /// Release idle and expired agent sessions now.
    Cleanup,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Check a credential (JWT, API key or agent token) against a running
    /// gateway: who it is, what it may do, which limits apply.
    Test {
        /// The gateway's base URL (default: the configured public URL).
        #[arg(long, env = "SWARMGATE_URL")]
        url: Option<String>,
        /// The credential; read from SWARMGATE_TOKEN so it stays out of
        /// the process list.
        #[arg(long, env = "SWARMGATE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users: list, change role, disable, enable, unlock, delete.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API keys of a named user: create, list, revoke.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// OAuth2 clients: create, list, delete.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Create a user with any role (password from a prompt or stdin).
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long)]
        full_name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// List users (optionally matching part of a username or email).
    List {
        #[arg(long)]
        q: Option<String>,
        /// Users per page (at most 200).
        #[arg(long, default_value_t = 200)]
        limit: i64,
        /// Continue after the page that printed this cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Give a user another role.
    SetRole { user: String, role: String },
    /// Disable a user: every session and key of theirs stops working now.
    Disable { user: String },
    /// Enable a user again (revoked sessions and keys stay revoked).
    Enable { user: String },
    /// Clear a login lockout.
    Unlock { user: String },
    /// Delete a user and everything of theirs.
    Delete { user: String },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key for a user; the key is printed once.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// A grant; repeat for several.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// A model the key may call; repeat for several.
        #[arg(long = "model")]
        models: Vec<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a user's keys (never the secrets).
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register an OAuth2 client; a client secret is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// A permission the client's tokens may carry; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// An allowed grant type; repeat for several.
        #[arg(long = "grant-type", default_value = "client_credentials")]
        grant_types: Vec<String>,
        /// client_secret_basic, client_secret_post or private_key_jwt.
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// private_key_jwt: a file holding the client's public JWK Set.
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// private_key_jwt: where the client publishes its JWK Set.
        #[arg(long)]
        jwks_uri: Option<String>,
    },
    /// List the clients (never their secrets).
    List,
    /// Delete a client by id; its tokens stop working at once.
    Delete { id: String },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new Ed25519 signing key; the old public key stays in the JWKS
    /// until the tokens it signed have expired.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Admin { .. } | Command::Quota { .. } | Command::Auth { .. } | Command::CheckConfig
    ) {
        // Commands that print for a person or a pipe: `| head` ends them
        // quietly, as any Unix tool, instead of a panic on a closed stdout.
        // (The servers keep Rust's default, which turns a closed socket
        // into an error to handle, not a signal.)
        #[cfg(unix)]
        // SAFETY: called before any thread is started; restores the
        // default disposition of one signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::MockUpstream {
        listen,
        latency_ms,
        fail_rate,
        models,
        anthropic_key,
    } = &cli.command
    {
        // Needs no configuration: it stands in for an upstream, not for swarmgate.
        let config = mock_upstream::MockConfig {
            models: models.clone(),
            latency: std::time::Duration::from_millis(*latency_ms),
            fail_rate: *fail_rate,
            anthropic_key: anthropic_key.clone(),
        };
        return run_mock(*listen, config);
    }
    let mut demo_upstream = None;
    let config = Config::load(cli.config.as_deref()).and_then(|mut config| {
        if matches!(cli.command, Command::Demo) {
            let listener = demo::add_to(&mut config)
                .map_err(|e| swarmgate_server::ConfigError(format!("demo upstream: {e}")))?;
            demo_upstream = Some(listener);
        }
        Ok(config)
    });
    let settings = match config.and_then(|c| c.resolve()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("swarmgate: {e}");
            return ExitCode::from(2);
        }
    };
    // `serve` answers requests on threads of its own (`[server]
    // worker_threads`); this runtime does the background work and the
    // other commands.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swarmgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(listener) = demo_upstream {
        runtime.spawn(demo::serve_upstream(listener));
    }
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_mock(listen: std::net::SocketAddr, config: mock_upstream::MockConfig) -> ExitCode {
    telemetry::init(false, "info");
    if !(0.0..=1.0).contains(&config.fail_rate) {
        eprintln!("swarmgate: --fail-rate must be between 0 and 1");
        return ExitCode::from(2);
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(mock_upstream::serve(listen, config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarmgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    telemetry::init(settings.log_json, &settings.log_level);
    match command {
        Command::Serve | Command::Demo => serve(settings).await,
        Command::CheckConfig => {
            println!(
                "configuration ok: listen {}, database {}, shared state {}, algorithm {}",
                settings.listen,
                if settings.database_url.starts_with("sqlite") {
                    "sqlite"
                } else {
                    "postgres"
                },
                if settings.redis_url.is_some() {
                    "redis"
                } else {
                    "in-process"
                },
                settings.algorithm.as_str()
            );
            Ok(())
        }
        Command::Admin {
            json,
            command:
                AdminCommand::CreateUser {
                    username,
                    email,
                    role,
                    full_name,
                    password_stdin,
                },
        } => {
            let account = NewAccount {
                password: read_password(password_stdin)?,
                username,
                email,
                full_name,
                role,
            };
            create_user(settings, account, json).await
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => rotate_keys(settings).await,
        Command::MockUpstream { .. } => {
            bail!("mock-upstream starts before the configuration is read")
        }
        Command::Admin {
            json,
            command: AdminCommand::User { command },
        } => admin::user(open_identity(settings).await?, command, json).await,
        Command::Admin {
            json,
            command: AdminCommand::Key { command },
        } => admin::key(open_identity(settings).await?, command, json).await,
        Command::Admin {
            json,
            command: AdminCommand::Client { command },
        } => admin::client(open_identity(settings).await?, command, json).await,
        Command::Quota { json, command } => quota::run(settings, command, json).await,
        Command::Auth {
            command: AuthCommand::Test { url, token, json },
        } => {
            let url = url.unwrap_or_else(|| settings.public_url.clone());
            quota::auth_test(&url, &token, json).await
        }
    }
}

/// `admin create-user`: an account of any role.
async fn create_user(settings: Settings, account: NewAccount, json: bool) -> anyhow::Result<()> {
    let identity = open_identity(settings).await?;
    let user = identity
        .create_user(account, &RequestMeta::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&admin::user_json(&user))?
        );
    } else {
        println!(
            "created user {} ({}) with role {}",
            user.username, user.id, user.role
        );
    }
    Ok(())
}

/// The identity service against the configured database, and the
/// configured Redis when there is one (so changes reach running instances
/// at once; without Redis they pick changes up from the database within
/// seconds).
async fn open_identity(settings: Settings) -> anyhow::Result<std::sync::Arc<Identity>> {
    let services = Services::start(
        settings.service.clone(),
        SystemClock::shared(),
        std::sync::Arc::new(swarmgate_service::fetch::NoFetch),
    )
    .await?;
    Ok(services.identity)
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.listen;
    let threads = settings
        .worker_threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let app = App::build(settings).await?;
    app.bootstrap().await?;
    let listeners = swarmgate_server::listen_per_thread(listen, threads)
        .with_context(|| format!("cannot listen on {listen}"))?;
    if let Some(first) = listeners.first() {
        tracing::info!(address = %first.local_addr()?, threads = listeners.len(), "swarmgate listening");
    }
    app.serve_per_thread(listeners, swarmgate_server::shutdown_signal())
        .await?;
    tracing::info!("swarmgate stopped");
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(password);
    }
    let first = rpassword::prompt_password("Password: ")?;
    let second = rpassword::prompt_password("Repeat password: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

async fn rotate_keys(settings: Settings) -> anyhow::Result<()> {
    if settings.algorithm != swarmgate_tokens::Algorithm::EdDSA {
        bail!("keys rotate applies to EdDSA keys; with HS256 change JWT_SECRET_KEY instead");
    }
    let store = Store::connect(&settings.database_url).await?;
    let clock = SystemClock::shared();
    let key = swarmgate_tokens::generate_ed25519(clock.now_secs())?;
    store.add_signing_key(&key).await?;
    Audit::new(store, clock)
        .record(
            "key_rotated",
            "success",
            Subject::default(),
            &RequestMeta::default(),
            json!({ "kid": key.kid, "algorithm": "EdDSA" }),
        )
        .await;
    println!(
        "new signing key {}: published at once, signing new tokens within {} seconds",
        key.kid,
        3 * settings.key_reload.as_secs()
    );
    Ok(())
}
