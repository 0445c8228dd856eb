//! swarmgate's server: configuration, wiring, the identity service and its
//! HTTP API. The binary crate only parses the command line and calls in here.

pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod monitoring;
pub mod nodes;
pub mod quota;
pub mod telemetry;
pub mod usage;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use swarmgate_state::SharedState;
use swarmgate_store::Store;
use tokio::net::TcpListener;

pub use config::{Config, ConfigError, Settings};
pub use error::Error;
use identity::Identity;

/// A ready-to-serve instance: storage connected and migrated, shared state
/// reachable, signing keys loaded.
pub struct App {
    pub identity: Arc<Identity>,
    pub gateway: Arc<gateway::Gateway>,
    pub nodes: Arc<nodes::Nodes>,
    pub agents: Arc<quota::agents::Agents>,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url)
            .await
            .map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
        let state = match &settings.redis_url {
            None => SharedState::memory(),
            Some(url) => SharedState::redis(url, &settings.redis_namespace)
                .await
                .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
        };
        metrics::handle();
        let profiles = settings
            .anthropic
            .iter()
            .map(|p| (p.name.clone(), p.limits))
            .collect();
        let quota = Arc::new(quota::Quota::new(
            state.clone(),
            settings.quota.clone(),
            profiles,
        ));
        let gateway = Arc::new(gateway::Gateway::new(
            &settings,
            store.clone(),
            quota.clone(),
        ));
        let nodes = nodes::Nodes::new(store.clone(), settings.node_stale_after);
        let identity = Arc::new(Identity::new(store, state, Arc::new(settings)).await?);
        let agents = Arc::new(quota::agents::Agents::new(identity.clone(), quota));
        Ok(Self {
            identity,
            gateway,
            nodes,
            agents,
        })
    }

    /// Creates the first admin on an empty database; a generated password
    /// is printed once to stderr (not to the log, which may be shipped).
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        if let Some(password) = self.identity.bootstrap_admin().await? {
            eprintln!(
                "swarmgate: created user 'admin' with generated password: {password}\n\
                 swarmgate: it is shown only this once; set SWARMGATE_ADMIN_PASSWORD to choose it"
            );
        }
        Ok(())
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state())
    }

    fn state(&self) -> http::AppState {
        http::AppState {
            identity: self.identity.clone(),
            gateway: self.gateway.clone(),
            nodes: self.nodes.clone(),
            agents: self.agents.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reloader = {
            let identity = self.identity.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(identity.settings().key_reload);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = identity.keys().reload().await {
                        tracing::warn!(error = %e, "signing key reload failed");
                    }
                }
            })
        };
        let poller = tokio::spawn(self.identity.clone().revocation_poller());
        let metrics_upkeep = tokio::spawn(async {
            let mut tick = tokio::time::interval(metrics::UPKEEP_EVERY);
            loop {
                tick.tick().await;
                metrics::upkeep();
            }
        });
        let monitor = monitoring::start(self.identity.settings().metrics_interval).await;
        let metrics_server = match self.identity.settings().metrics_listen {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                tracing::info!(address = %addr, "unauthenticated /metrics listening");
                let gateway = self.gateway.clone();
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let gateway = gateway.clone();
                        async move { http::metrics_response(&gateway) }
                    }),
                );
                Some(tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }))
            }
        };
        let usage_flusher = {
            let usage = self.gateway.usage.clone();
            let every = self.identity.settings().usage_flush;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    usage.flush().await;
                }
            })
        };
        let agent_sweeper = {
            let agents = self.agents.clone();
            // Often enough that an idle session is released within a few
            // seconds of its deadline (its token stops at the deadline
            // itself; this gives the allocation back).
            let every = (self.identity.settings().quota.agent_idle / 4).clamp(
                std::time::Duration::from_millis(500),
                std::time::Duration::from_secs(30),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = agents.sweep().await {
                        tracing::warn!(error = %e, "agent session sweep failed");
                    }
                }
            })
        };
        let app = http::router(self.state()).into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        reloader.abort();
        poller.abort();
        metrics_upkeep.abort();
        monitor.abort();
        usage_flusher.abort();
        agent_sweeper.abort();
        if let Some(server) = metrics_server {
            server.abort();
        }
        self.gateway.usage.flush().await;
        // Batched writes (last_used_at, denial counts) must not be lost.
        self.identity.flush().await;
        result
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
