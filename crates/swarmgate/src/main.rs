//! The `swarmgate` command line: serve, check-config, admin, keys.

// glibc's allocator showed as the largest user-space cost of a proxied
// request under load (malloc/free/consolidate, about 12% of samples);
// mimalloc is measurably cheaper there (bench/proxy.sh).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod cli;
mod demo;
mod mock_upstream;
mod quota;

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use swarmgate_server::{telemetry, App, Config, Settings};
use swarmgate_service::audit::{Audit, Subject};
use swarmgate_service::identity::{Identity, NewAccount};
use swarmgate_service::{RequestMeta, Services, SystemClock};
use swarmgate_store::Store;

use cli::{AdminCommand, AuthCommand, Cli, Command, KeysCommand};
pub(crate) use cli::{ClientCommand, KeyCommand, QuotaCommand, UserCommand};

fn main() -> ExitCode {
    // Transparent huge pages off for this process: with them, mimalloc's
    // arenas are backed by 2 MiB pages, and a byte written to an idle
    // connection's buffer makes its whole huge page resident. bench/conns.sh
    // measured 28 KiB per idle keep-alive connection with them, 16 KiB
    // without (10,000 connections: 318 MiB against 194 MiB).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this
    // process; it reads no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
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
        chunk_interval_ms,
    } = &cli.command
    {
        // Needs no configuration: it stands in for an upstream, not for swarmgate.
        let config = mock_upstream::MockConfig {
            models: models.clone(),
            latency: std::time::Duration::from_millis(*latency_ms),
            fail_rate: *fail_rate,
            anthropic_key: anthropic_key.clone(),
            chunk_interval: std::time::Duration::from_millis(*chunk_interval_ms),
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
        Command::Admin { json, command } => admin_command(settings, command, json).await,
        Command::Keys {
            command: KeysCommand::Rotate,
        } => rotate_keys(settings).await,
        Command::MockUpstream { .. } => {
            bail!("mock-upstream starts before the configuration is read")
        }
        Command::Quota { json, command } => quota::run(settings, command, json).await,
        Command::Auth {
            command: AuthCommand::Test { url, token, json },
        } => {
            let url = url.unwrap_or_else(|| settings.public_url.clone());
            quota::auth_test(&url, &token, json).await
        }
    }
}

/// `swarmgate admin …` against the configured database.
async fn admin_command(
    settings: Settings,
    command: AdminCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateUser {
            username,
            email,
            role,
            full_name,
            password_stdin,
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
        AdminCommand::User { command } => {
            with_identity(settings, |id| admin::user(id, command, json)).await
        }
        AdminCommand::Key { command } => {
            with_identity(settings, |id| admin::key(id, command, json)).await
        }
        AdminCommand::Client { command } => {
            with_identity(settings, |id| admin::client(id, command, json)).await
        }
    }
}

/// Runs `work` on the identity service, then writes what it batched (a
/// refusal counted, say) before the process exits.
async fn with_identity<F, Fut>(settings: Settings, work: F) -> anyhow::Result<()>
where
    F: FnOnce(std::sync::Arc<Identity>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let identity = open_identity(settings).await?;
    let done = work(identity.clone()).await;
    identity.flush().await;
    done
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
