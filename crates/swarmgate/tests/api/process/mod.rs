//! Tests that start the real `swarmgate` binary: configuration from the
//! environment, the admin CLI, key rotation, secrets in logs and database,
//! two instances sharing PostgreSQL and Redis, Redis failing, shutdown.

mod cli;
mod durability;
mod failfast;
mod outage;
mod quickstart;
mod secrets;
mod shutdown;
mod slow_clients;
mod startup;

use reqwest::{Client, StatusCode};

pub(super) async fn me_status(client: &Client, base: &str, token: &str) -> StatusCode {
    client
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

pub(super) fn redis_url() -> Option<String> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("SWARMGATE_REQUIRE_SERVICES").is_some() => {
            panic!("TEST_REDIS_URL must be set when SWARMGATE_REQUIRE_SERVICES is set")
        }
        _ => None,
    }
}
