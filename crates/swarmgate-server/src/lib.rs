//! swarmgate's server: configuration, the HTTP API over the services, and
//! wiring. The binary crate only parses the command line and calls in here.

pub mod config;
pub mod fetch;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use swarmgate_gateway::{Forwarder, Gateway, Tables};
use swarmgate_service::{Background, Services, SharedClock, SystemClock};
use tokio::net::TcpListener;

pub use config::{Config, ConfigError, Settings};
pub use swarmgate_service::Error;

/// A ready-to-serve instance: storage connected and migrated, shared state
/// reachable, signing keys loaded.
pub struct App {
    state: http::AppState,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, SystemClock::shared()).await
    }

    /// [`build`](Self::build) on a clock of the caller's (tests move a
    /// manual one instead of sleeping).
    pub async fn build_with_clock(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let fetch = Arc::new(fetch::HttpFetch::new());
        let services = Services::start(settings.service.clone(), clock, fetch).await?;
        metrics::handle();
        let tables = Tables {
            routes: settings.routes.clone(),
            models: settings.models.clone(),
            anthropic: settings.anthropic.clone(),
            forwarder: Forwarder::new(
                settings.gateway.trusted_proxies.clone(),
                settings.gateway.max_body_bytes,
            ),
        };
        let gateway = Gateway::new(&services, tables);
        Ok(Self {
            state: http::AppState::new(services, gateway, settings),
        })
    }

    /// The services this instance runs.
    pub fn services(&self) -> &Services {
        &self.state.services
    }

    /// A handle on the state every request is served from, kept by tests
    /// after the app is moved into its server.
    pub fn state(&self) -> http::AppState {
        self.state.clone()
    }

    /// Creates the first admin on an empty database; a generated password
    /// is printed once to stderr (not to the log, which may be shipped).
    pub async fn bootstrap(&self) -> anyhow::Result<()> {
        if let Some(password) = self.state.services.bootstrap().await? {
            eprintln!(
                "swarmgate: created user 'admin' with generated password: {password}\n\
                 swarmgate: it is shown only this once; set SWARMGATE_ADMIN_PASSWORD to choose it"
            );
        }
        Ok(())
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish within `[server] shutdown_grace_ms`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let background = self.start_background().await?;
        let front = http::Front::new(self.state.clone());
        serve::serve(listener, front, self.state.settings.connections, shutdown).await;
        self.finish(background).await;
        Ok(())
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
        let front = http::Front::new(self.state.clone());
        let limits = self.state.settings.connections;
        let (stop, _) = tokio::sync::watch::channel(false);
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
        // A thread's runtime outlives its server until `release`: database
        // connections it opened are registered with it, and the final
        // flushes after the servers stop may still use them.
        let (release, _) = tokio::sync::watch::channel(false);
        let mut threads = Vec::with_capacity(listeners.len());
        let mut spawned = Ok(());
        for (i, listener) in listeners.into_iter().enumerate() {
            let front = front.clone();
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
                            let listener = TcpListener::from_std(listener)?;
                            serve::serve(listener, front, limits, async move {
                                let _ = stop.wait_for(|s| *s).await;
                            })
                            .await;
                            Ok::<(), std::io::Error>(())
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

    /// Starts the work that runs beside the server: the services' own
    /// (key reloads, the revocation poller, the monitor, usage flushes, the
    /// agent sweep), metrics upkeep and the metrics listener.
    async fn start_background(&self) -> std::io::Result<Background> {
        // Bound first: when it fails, nothing has started yet.
        let metrics_listener = match self.state.settings.metrics_listen {
            None => None,
            Some(addr) => Some(TcpListener::bind(addr).await?),
        };
        let mut background = self.state.services.start_background().await;
        background.push(tokio::spawn(async {
            let mut tick = tokio::time::interval(metrics::UPKEEP_EVERY);
            loop {
                tick.tick().await;
                metrics::upkeep();
            }
        }));
        if let Some(listener) = metrics_listener {
            tracing::info!(address = ?listener.local_addr().ok(), "unauthenticated /metrics listening");
            let state = self.state.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let state = state.clone();
                    async move { http::metrics_response(&state.gateway) }
                }),
            );
            background.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        Ok(background)
    }

    /// Stops the background work, then writes out what is batched
    /// (usage, `last_used_at`, denial counts): none of it may be lost.
    async fn finish(&self, background: Background) {
        background.stop();
        self.state.services.flush().await;
    }
}

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
