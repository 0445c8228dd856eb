//! The resolved settings the services run with. The server reads the
//! configuration file and environment, checks every value, and hands the
//! services these; nothing here parses or validates text.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use swarmgate_core::password::HashParams;
use swarmgate_core::roles::Roles;
use swarmgate_core::LimitSet;
use swarmgate_state::{LockoutPolicy, Rate};
use swarmgate_tokens::Algorithm;

/// A configured secret: never printed by `Debug`.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Quota and agent settings.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    pub role_limits: BTreeMap<String, LimitSet>,
    pub default_max_tokens: u64,
    pub queue_max_wait: Duration,
    pub slot_lease: Duration,
    pub fail_open: bool,
    pub agent_idle: Duration,
    pub agent_default_ttl: Duration,
    pub agent_max_ttl: Duration,
}

/// Everything the services need to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_namespace: String,
    /// The longest one call to Redis may wait.
    pub redis_timeout: Duration,
    /// The longest a request waits for a database connection.
    pub database_timeout: Duration,
    /// The URL clients reach this service at; tokens' `iss`.
    pub public_url: String,
    pub audience: String,
    pub algorithm: Algorithm,
    pub secret_key: Option<Secret>,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub key_reload: Duration,
    pub roles: Arc<Roles>,
    pub api_key_prefix: String,
    pub api_key_default_days: u32,
    pub api_key_max_days: u32,
    pub lockout: LockoutPolicy,
    pub login_rate: Rate,
    pub register_rate: Rate,
    pub hash_params: HashParams,
    pub admin_password: Option<Secret>,
    pub quota: Arc<QuotaSettings>,
    /// Limits of each provider profile (`anthropic`), shared by all its
    /// traffic.
    pub profiles: Vec<(String, LimitSet)>,
    pub node_stale_after: Duration,
    pub node_token_ttl: Duration,
    pub metrics_interval: Duration,
    pub usage_flush: Duration,
}
