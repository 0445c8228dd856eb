//! Helpers for test suites that need a database of their own. Not used by
//! the server; public so every crate's tests share one way of doing it.

// Helpers for test suites only: a service the suite was told to require
// but cannot reach must stop the run loudly.
#![allow(clippy::panic, clippy::expect_used, reason = "test support, see above")]

use sqlx::{Connection, Executor, PgConnection};

use crate::{Store, StoreError};

/// Creates an empty PostgreSQL database next to the one `admin_url` names
/// and returns its URL, so concurrent test runs never see each other's rows.
pub async fn fresh_postgres_database(admin_url: &str) -> Result<String, StoreError> {
    let mut conn = PgConnection::connect(admin_url).await?;
    let name = format!("sg_test_{}", swarmgate_core::random::uuid_simple());
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    conn.close().await?;
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    Ok(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    })
}

/// A fresh SQLite URL under the system temp folder.
pub fn fresh_sqlite_url() -> String {
    let dir = std::env::temp_dir().join(format!(
        "swarmgate-test-{}",
        swarmgate_core::random::uuid_simple()
    ));
    format!("sqlite://{}/swarmgate.db", dir.display())
}

/// `TEST_DATABASE_URL`, or `None`. With `SWARMGATE_REQUIRE_SERVICES` set (as
/// `.ci/run` does for its service suites) a missing value is an
/// error: a PostgreSQL suite that silently skips would prove nothing.
pub fn test_database_url() -> Option<String> {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("SWARMGATE_REQUIRE_SERVICES").is_some() => {
            panic!("TEST_DATABASE_URL must be set when SWARMGATE_REQUIRE_SERVICES is set")
        }
        _ => None,
    }
}

impl Store {
    /// Runs one statement as is; for tests that check what the database
    /// itself refuses (such as rewriting the audit trail).
    #[doc(hidden)]
    pub async fn raw_execute_for_tests(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql)
            .execute(&mut *self.db().await?)
            .await?
            .rows_affected())
    }

    /// Opens a second pool on the same database (migrations run again).
    #[doc(hidden)]
    pub async fn reconnect_for_tests(&self) -> Result<Store, StoreError> {
        Store::connect(&self.url).await
    }
}
