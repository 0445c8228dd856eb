//! swarmgate's server: configuration, wiring, the identity service and its
//! HTTP API. The binary crate only parses the command line and calls in here.

pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod http;
pub mod identity;
mod ids;
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

    /// What each connection is served by: [`http::Front`], with the
    /// client's address.
    fn service(
        &self,
    ) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<http::Front, SocketAddr> {
        let state = http::AppState::new(http::Services {
            identity: self.identity.clone(),
            gateway: self.gateway.clone(),
            nodes: self.nodes.clone(),
            agents: self.agents.clone(),
        });
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info(
            http::Front::new(state),
        )
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = self.start_background().await?;
        let app = self.service();
        let result = axum::serve(without_nagle(listener), app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.finish(background).await;
        result
    }

    /// Serves each listener (sockets bound to one address with
    /// `SO_REUSEPORT`, see [`listen_per_thread`]) on a thread of its own,
    /// each with a single-threaded runtime: a request stays on one thread
    /// from accept through the upstream call to the reply, with no
    /// cross-thread wake-ups, as nginx's workers do. Background work runs
    /// on the caller's runtime.
    pub async fn serve_per_thread(
        self,
        listeners: Vec<std::net::TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = self.start_background().await?;
        let app = self.service();
        let (stop, _) = tokio::sync::watch::channel(false);
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        // A thread's runtime outlives its server until `release`: database
        // connections it opened are registered with it, and the final
        // flushes after the servers stop may still use them.
        let (release, _) = tokio::sync::watch::channel(false);
        let mut threads = Vec::with_capacity(listeners.len());
        let mut spawned = Ok(());
        for (i, listener) in listeners.into_iter().enumerate() {
            let app = app.clone();
            // Says the thread's server has stopped, however it ends (a
            // panic included), so the wait below cannot hang.
            let done = ThreadDone(done_tx.clone());
            let (mut stop, mut release) = (stop.subscribe(), release.subscribe());
            let thread = std::thread::Builder::new()
                .name(format!("swarmgate-http-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let served = runtime.block_on(async move {
                        let served = async {
                            listener.set_nonblocking(true)?;
                            axum::serve(without_nagle(TcpListener::from_std(listener)?), app)
                                .with_graceful_shutdown(async move {
                                    let _ = stop.wait_for(|s| *s).await;
                                })
                                .await
                        }
                        .await;
                        drop(done);
                        let _ = release.wait_for(|r| *r).await;
                        served
                    });
                    if let Err(e) = &served {
                        tracing::error!(error = %e, "HTTP serving thread stopped");
                    }
                    served
                });
            match thread {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    spawned = Err(e);
                    break;
                }
            }
        }
        drop(done_tx);
        let count = threads.len();
        // One thread ending by itself is a failure: stop them all.
        let mut stopped = if spawned.is_err() {
            0
        } else {
            tokio::select! {
                () = shutdown => 0,
                _ = done.recv() => {
                    tracing::error!("an HTTP serving thread stopped; shutting down");
                    1
                }
            }
        };
        let _ = stop.send(true);
        while stopped < count && done.recv().await.is_some() {
            stopped += 1;
        }
        self.finish(background).await;
        let _ = release.send(true);
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("HTTP thread panicked")))
                })
                .collect::<std::io::Result<Vec<()>>>()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        spawned.and(joined.map(drop))
    }

    /// Starts the work that runs beside the server: key reloads, the
    /// revocation poller, metrics upkeep and listener, the monitor, usage
    /// flushes and the agent sweep.
    async fn start_background(&self) -> std::io::Result<Background> {
        // Bound first: when it fails, nothing has started yet.
        let metrics_listener = match self.identity.settings().metrics_listen {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).await?),
        };
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
        let metrics_server = metrics_listener.map(|listener| {
            tracing::info!(address = ?listener.local_addr().ok(), "unauthenticated /metrics listening");
            let gateway = self.gateway.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let gateway = gateway.clone();
                    async move { http::metrics_response(&gateway) }
                }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            })
        });
        let mut tasks = vec![
            reloader,
            poller,
            metrics_upkeep,
            monitor,
            usage_flusher,
            agent_sweeper,
        ];
        tasks.extend(metrics_server);
        Ok(Background(tasks))
    }

    /// Stops the background work, then writes out what is batched.
    async fn finish(&self, background: Background) {
        for task in background.0 {
            task.abort();
        }
        self.gateway.usage.flush().await;
        // Batched writes (last_used_at, denial counts) must not be lost.
        self.identity.flush().await;
    }
}

struct Background(Vec<tokio::task::JoinHandle<()>>);

/// Sends one message when dropped.
struct ThreadDone(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for ThreadDone {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A listener whose connections have Nagle's algorithm off, as nginx's
/// `tcp_nodelay` does. A streamed response (LLM tokens as server-sent
/// events) is many small writes; with Nagle each waits until the client
/// acknowledges the one before, which a client that delays its ACKs sends up
/// to 40 ms later.
pub fn without_nagle(
    listener: TcpListener,
) -> axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)> {
    fn nodelay(stream: &mut tokio::net::TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    }
    axum::serve::ListenerExt::tap_io(listener, nodelay as fn(&mut tokio::net::TcpStream))
}

/// `threads` listening sockets on one address for
/// [`App::serve_per_thread`], with `SO_REUSEPORT` so the kernel spreads new
/// connections across them. Port 0 picks one free port for all of them.
/// Needs a runtime.
pub fn listen_per_thread(
    addr: SocketAddr,
    threads: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    // A port in use (say, by a second swarmgate, whose sockets would take
    // a share of the connections) is refused, as a plain bind would be.
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr)?);
    }
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(threads);
    // Elsewhere a second socket could not share the address.
    let threads = if cfg!(unix) { threads.max(1) } else { 1 };
    for _ in 0..threads {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// Resolves on Ctrl-C or SIGTERM. On Unix the handlers are installed when
/// this is called, not when the future is first polled: a signal that
/// comes as soon as the server answers must stop it cleanly, not kill it.
/// Needs a runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {},
                () = wait(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}
