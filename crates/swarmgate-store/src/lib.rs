//! Persistence for swarmgate: one [`Store`] over SQLite (the embedded
//! default) and PostgreSQL, chosen by the URL scheme.
//!
//! Both engines run the very same SQL through sqlx's `Any` driver (`$N`
//! placeholders work on both), so the two back ends cannot drift apart: only
//! the migrations are written per dialect. Times are unix seconds, ids text.
//! This crate owns all SQL; nothing above it writes a query.

mod admin;
mod agents;
mod api_keys;
mod clients;
mod error;
mod identity;
mod keys;
mod migrate;
pub mod testing;
mod usage;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Executor, Transaction};
use swarmgate_core::breaker::Breaker;

pub use admin::{AuditFilter, Revoked, UserUpdate};
pub use error::StoreError;
pub use identity::{RefreshOutcome, Session};
pub use usage::{UsageGroup, UsageRecord, UsageRow};

/// Which engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The storage interface of swarmgate. Cheap to clone (a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
    /// What the probe connects with while the breaker is open.
    options: AnyConnectOptions,
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// How long a request waits for a connection unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a probe asks a database that failed whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(200);

impl Store {
    /// Connects to `sqlite://RELATIVE`, `sqlite:///ABSOLUTE` or
    /// `postgres://…` and applies pending migrations. For SQLite the file and
    /// its folder are created when missing and the database is put in WAL mode.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_within(url, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect), with requests waiting at most `timeout`
    /// for a connection: a database that stops answering gives a prompt
    /// error, not a hang, and after one such failure requests fail at once
    /// until a probe finds it back.
    pub async fn connect_within(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let original = url.to_string();
        let (backend, url) = normalise_url(url)?;
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Config(format!("invalid database URL: {e}")))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await
            .map_err(StoreError::from)?;
        let store = Store {
            pool,
            backend,
            url: original,
            options,
            timeout,
            breaker: Arc::new(Breaker::default()),
        };
        migrate::run(&store.pool, backend).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A round trip to the database, for health checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A connection from the pool, or at once the failure that opened the
    /// breaker.
    async fn db(&self) -> Result<PoolConnection<Any>, StoreError> {
        self.guarded(self.pool.acquire()).await
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, StoreError> {
        self.guarded(self.pool.begin()).await
    }

    async fn guarded<T>(
        &self,
        acquire: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        if let Err(last) = self.breaker.check() {
            return Err(StoreError::Unavailable(last));
        }
        match acquire.await {
            Ok(connection) => Ok(connection),
            Err(e) if is_outage(&e) => {
                let error = e.to_string();
                if self.breaker.open(error.clone()) {
                    self.probe();
                }
                Err(StoreError::Unavailable(error))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the database on a connection of its own (not from the pool,
    /// which may only be busy) whether it answers, and closes the breaker
    /// when it does: a pool that was only exhausted reopens at once.
    fn probe(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                let answered = tokio::time::timeout(store.timeout, async {
                    let mut conn = store.options.connect().await?;
                    sqlx::query("SELECT 1").execute(&mut conn).await?;
                    conn.close().await
                })
                .await;
                if matches!(answered, Ok(Ok(()))) {
                    store.breaker.closed();
                    return;
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
        });
    }
}

/// Failures that say the database is unreachable or not answering, as
/// opposed to one statement's error.
fn is_outage(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// Checks the scheme and, for SQLite, creates the folder and asks sqlx to
/// create the file (`mode=rwc`).
fn normalise_url(url: &str) -> Result<(Backend, String), StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        if path.is_empty() {
            return Err(StoreError::Config(
                "DATABASE_URL: sqlite URL has no file path".into(),
            ));
        }
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Config(format!(
                        "DATABASE_URL: cannot create folder {}: {e}",
                        dir.display()
                    ))
                })?;
            }
        }
        let query = if query.contains("mode=") {
            query.to_string()
        } else if query.is_empty() {
            "mode=rwc".to_string()
        } else {
            format!("{query}&mode=rwc")
        };
        Ok((Backend::Sqlite, format!("sqlite://{path}?{query}")))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, url.to_string()))
    } else {
        Err(StoreError::Config(
            "DATABASE_URL: expected sqlite://PATH or postgres://… ".into(),
        ))
    }
}

/// A value for a JSON text column.
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Database(e.to_string()))
}

/// A value for a nullable JSON text column.
pub(crate) fn json_text_opt<T: serde::Serialize>(
    value: Option<&T>,
) -> Result<Option<String>, StoreError> {
    value.map(json_text).transpose()
}

/// A nullable JSON column (`limits`, …) read into its type; a value that no
/// longer parses is a corrupt row, reported by column name.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    value: Option<&str>,
    column: &str,
) -> Result<Option<T>, sqlx::Error> {
    value
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| sqlx::Error::Decode(format!("{column}: {e}").into()))
}
