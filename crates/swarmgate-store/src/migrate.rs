//! Migrations are embedded per dialect and applied at start-up with sqlx's
//! migrator (which records them in `_sqlx_migrations` and takes a lock, so
//! several instances starting together apply each migration once).

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;

use crate::{Backend, StoreError};

const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "identity",
        include_str!("../migrations/sqlite/0001_identity.sql"),
    ),
    (
        2,
        "api_keys",
        include_str!("../migrations/sqlite/0002_api_keys.sql"),
    ),
    (
        3,
        "password_history_order",
        include_str!("../migrations/sqlite/0003_password_history_order.sql"),
    ),
    (
        4,
        "usage",
        include_str!("../migrations/sqlite/0004_usage.sql"),
    ),
    (
        5,
        "clients_nodes",
        include_str!("../migrations/sqlite/0005_clients_nodes.sql"),
    ),
    (
        6,
        "node_token_cutoffs",
        include_str!("../migrations/sqlite/0006_node_token_cutoffs.sql"),
    ),
    (
        7,
        "limits_agents",
        include_str!("../migrations/sqlite/0007_limits_agents.sql"),
    ),
];

const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "identity",
        include_str!("../migrations/postgres/0001_identity.sql"),
    ),
    (
        2,
        "api_keys",
        include_str!("../migrations/postgres/0002_api_keys.sql"),
    ),
    (
        3,
        "password_history_order",
        include_str!("../migrations/postgres/0003_password_history_order.sql"),
    ),
    (
        4,
        "usage",
        include_str!("../migrations/postgres/0004_usage.sql"),
    ),
    (
        5,
        "clients_nodes",
        include_str!("../migrations/postgres/0005_clients_nodes.sql"),
    ),
    (
        6,
        "node_token_cutoffs",
        include_str!("../migrations/postgres/0006_node_token_cutoffs.sql"),
    ),
    (
        7,
        "limits_agents",
        include_str!("../migrations/postgres/0007_limits_agents.sql"),
    ),
];

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let source = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let migrations = source
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    let mut migrator = Migrator::DEFAULT;
    migrator.migrations = Cow::Owned(migrations);
    migrator.run(pool).await?;
    Ok(())
}
