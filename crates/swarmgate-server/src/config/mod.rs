//! Configuration: a TOML file, then environment variables over it, then
//! validation into [`Settings`], the resolved values the server runs with.
//!
//! Sources, later ones winning:
//! 1. the file (`--config PATH` or `SWARMGATE_CONFIG`);
//! 2. the seed's variable names (`AUTH_PORT`, `DATABASE_URL`, `REDIS_URL`,
//!    `JWT_SECRET_KEY`, `JWT_ALGORITHM`, `JWT_EXPIRATION_HOURS`,
//!    `REFRESH_TOKEN_EXPIRATION_DAYS`);
//! 3. `SWARMGATE_LISTEN`, `SWARMGATE_ADMIN_PASSWORD`, `SWARMGATE_LOG_FORMAT`;
//! 4. `SWARMGATE_<SECTION>__<KEY>` for any setting of the file.
//!
//! A bad value is one line naming the setting and what is wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;
use swarmgate_core::password::{HashParams, MIN_ITERATIONS, MIN_MEMORY_KIB};
use swarmgate_core::roles::Roles;
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub tokens: TokensConfig,
    pub security: SecurityConfig,
    pub bootstrap: BootstrapConfig,
    pub logging: LoggingConfig,
    pub api_keys: ApiKeysConfig,
    /// Roles added, or built-in roles redefined: `[roles.NAME] permissions`.
    pub roles: BTreeMap<String, RoleConfig>,
    /// `[[routes]]`: paths proxied to upstream services.
    pub routes: Vec<swarmgate_gateway::RouteConfig>,
    /// `[[models]]`: LLMs behind the OpenAI-compatible API at /v1.
    pub models: Vec<swarmgate_gateway::ModelConfig>,
    pub gateway: swarmgate_gateway::GatewayConfig,
    pub usage: UsageConfig,
    pub metrics: MetricsConfig,
    pub nodes: NodesConfig,
    pub limits: LimitsConfig,
    pub agents: AgentsConfig,
    pub anthropic: AnthropicConfig,
}

/// `[anthropic]`: Anthropic's API behind `/v1/messages`, with the key held
/// by the gateway (seed 003's credential profiles).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnthropicConfig {
    /// `ANTHROPIC_API_KEY` or `CLAUDE_API_KEY`; unset: `/v1/messages` is
    /// not served.
    pub api_key: Option<Secret>,
    /// `ANTHROPIC_BASE_URL` or `CLAUDE_BASE_URL`.
    pub base_url: String,
    /// `api_key` or `subscription`: how the key is paid for (shown to
    /// operators; the limits below are what is enforced).
    pub mode: String,
    pub timeout_ms: u64,
    /// Limits on all traffic through the profile together: a daily token
    /// limit for a subscription, per-minute limits for an API key.
    pub limits: swarmgate_core::LimitSet,
}

impl Default for AnthropicConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: "https://api.anthropic.com".into(),
            mode: "api_key".into(),
            timeout_ms: 600_000,
            limits: Default::default(),
        }
    }
}

/// A provider's API reachable through the gateway with the gateway's key.
pub struct ProviderProfile {
    /// `anthropic`: also the scope of its limits (`profile:anthropic`).
    pub name: String,
    pub mode: String,
    pub upstream: swarmgate_gateway::Model,
    pub limits: swarmgate_core::LimitSet,
}

impl fmt::Debug for ProviderProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderProfile")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Completion tokens reserved for an LLM call that names no
    /// `max_tokens` (settled to the real usage afterwards).
    pub default_max_tokens: u64,
    /// How long a request waits for capacity under `on_limit = "queue"`.
    pub queue_max_wait_ms: u64,
    /// A concurrency slot lapses after this even if its holder never
    /// released it (a crashed instance), in seconds.
    pub slot_lease_seconds: u64,
    /// When the quota state (Redis) is unreachable: `closed` answers 503,
    /// `open` lets requests through unmetered (and logs it).
    pub on_backend_error: String,
    /// `[limits.roles.NAME]`: the default limits of each user of a role.
    pub roles: BTreeMap<String, swarmgate_core::LimitSet>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            default_max_tokens: 1024,
            queue_max_wait_ms: 10_000,
            slot_lease_seconds: 900,
            on_backend_error: "closed".into(),
            roles: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// A session with no request or heartbeat for this long is released
    /// (fractions allowed).
    pub idle_minutes: f64,
    /// Lifetime of a session that asks for none, and the most it may ask.
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self {
            idle_minutes: 30.0,
            default_ttl_seconds: 3600,
            max_ttl_seconds: 86_400,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodesConfig {
    /// A node whose last report is older than this is shown as stale.
    pub stale_after_seconds: u64,
    /// Default lifetime of a node token (`MCP_TOKEN_EXPIRE`, minutes).
    pub token_ttl_minutes: u64,
    /// How often the system and application metrics are collected in the
    /// background (`MCP_METRICS_INTERVAL`, seconds).
    pub metrics_interval_seconds: u64,
}

impl Default for NodesConfig {
    fn default() -> Self {
        Self {
            stale_after_seconds: 180,
            token_ttl_minutes: 30,
            metrics_interval_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A second address serving `GET /metrics` without authentication (for
    /// a scraper on a private network). Unset: only the authenticated
    /// `/metrics` on the main address.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// How often recorded token usage is written to the database.
    pub flush_interval_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Put before every key so a leaked key is recognisable.
    pub prefix: String,
    pub default_expiry_days: u32,
    pub max_expiry_days: u32,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            prefix: "sgk_".into(),
            default_expiry_days: 90,
            max_expiry_days: 365,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `HOST:PORT`; wins over `port`.
    pub listen: Option<String>,
    /// The seed's `AUTH_PORT`, used with 127.0.0.1 when `listen` is unset.
    pub port: Option<u16>,
    /// The URL clients reach this service at; tokens' `iss`.
    pub public_url: Option<String>,
    /// Threads answering HTTP requests, each with its own runtime and
    /// listening socket; unset: one per core.
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://swarmgate-data/swarmgate.db".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Prefix of every key; instances that share state share it.
    pub namespace: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            namespace: "swarmgate".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub algorithm: String,
    pub secret_key: Option<Secret>,
    pub access_ttl_hours: u64,
    pub refresh_ttl_days: u64,
    pub audience: String,
    /// How often each instance re-reads signing keys from the database
    /// (so a rotation by any instance reaches all of them).
    pub key_reload_seconds: u64,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            algorithm: "EdDSA".into(),
            secret_key: None,
            access_ttl_hours: 24,
            refresh_ttl_days: 30,
            audience: "swarmgate".into(),
            key_reload_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub lockout_threshold: u32,
    pub lockout_window_minutes: u64,
    pub lockout_minutes: u64,
    pub login_rate_per_minute: u32,
    pub register_rate_per_hour: u32,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            lockout_threshold: 5,
            lockout_window_minutes: 15,
            lockout_minutes: 15,
            login_rate_per_minute: 5,
            register_rate_per_hour: 3,
            argon2_memory_kib: MIN_MEMORY_KIB,
            argon2_iterations: MIN_ITERATIONS,
            argon2_parallelism: 1,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Password of the `admin` user created on an empty database; generated
    /// and printed once when unset.
    pub admin_password: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `pretty` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `swarmgate=debug,info`.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

/// A configuration problem, one line, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// The seed's variable names and the setting each one sets. Their values are
/// taken verbatim (a secret or password that looks like a number stays a
/// string), numbers are checked here so the error names the variable.
const SEED_ENV: &[(&str, &str, Kind)] = &[
    ("AUTH_PORT", "server.port", Kind::Port),
    ("DATABASE_URL", "database.url", Kind::Text),
    ("REDIS_URL", "redis.url", Kind::Text),
    ("JWT_SECRET_KEY", "tokens.secret_key", Kind::Text),
    ("JWT_ALGORITHM", "tokens.algorithm", Kind::Text),
    (
        "JWT_EXPIRATION_HOURS",
        "tokens.access_ttl_hours",
        Kind::Count,
    ),
    (
        "REFRESH_TOKEN_EXPIRATION_DAYS",
        "tokens.refresh_ttl_days",
        Kind::Count,
    ),
    ("SWARMGATE_LISTEN", "server.listen", Kind::Text),
    (
        "SWARMGATE_ADMIN_PASSWORD",
        "bootstrap.admin_password",
        Kind::Text,
    ),
    ("SWARMGATE_LOG_FORMAT", "logging.format", Kind::Text),
    ("ANTHROPIC_API_KEY", "anthropic.api_key", Kind::Text),
    ("CLAUDE_API_KEY", "anthropic.api_key", Kind::Text),
    ("ANTHROPIC_BASE_URL", "anthropic.base_url", Kind::Text),
    ("CLAUDE_BASE_URL", "anthropic.base_url", Kind::Text),
    ("MCP_TOKEN_EXPIRE", "nodes.token_ttl_minutes", Kind::Count),
    (
        "MCP_METRICS_INTERVAL",
        "nodes.metrics_interval_seconds",
        Kind::Count,
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Port,
    Count,
}

impl Config {
    /// Reads the file (if any) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Each of these pairs names one setting: either may be set, but two
        // different values are a mistake to report, not to pick from.
        for (a, b) in [
            ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY"),
            ("ANTHROPIC_BASE_URL", "CLAUDE_BASE_URL"),
        ] {
            let set = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
            if let (Some(x), Some(y)) = (set(a), set(b)) {
                if x.trim() != y.trim() {
                    return Err(ConfigError(format!(
                        "{a} and {b} are both set and differ; set one (either sets both)"
                    )));
                }
            }
        }
        for (name, key, kind) in SEED_ENV {
            // Set but empty is unset (`ANTHROPIC_API_KEY=` beside a
            // `CLAUDE_API_KEY`), and a value read from a file loses its
            // trailing newline.
            let Some(value) = std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            figment = match kind {
                Kind::Text => figment.merge(Serialized::default(key, value)),
                Kind::Port => match value.trim().parse::<u16>() {
                    Ok(port) if port > 0 => figment.merge(Serialized::default(key, port)),
                    _ => {
                        return Err(ConfigError(format!(
                            "{name}: {value:?} is not a port number (1-65535)"
                        )))
                    }
                },
                Kind::Count => match value.trim().parse::<u64>() {
                    Ok(n) => figment.merge(Serialized::default(key, n)),
                    Err(_) => {
                        return Err(ConfigError(format!(
                            "{name}: {value:?} is not a whole number"
                        )))
                    }
                },
            };
        }
        figment = figment.merge(
            Env::prefixed("SWARMGATE_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let mut config = figment.extract::<Config>().map_err(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            ConfigError(format!("{key}{}{source}", e.kind))
        })?;
        // Environment over file: AUTH_PORT replaces the port of a listen
        // address that came from the file, unless a listen address was also
        // given in the environment (SWARMGATE_LISTEN wins over AUTH_PORT).
        let listen_in_env = std::env::var_os("SWARMGATE_LISTEN").is_some()
            || std::env::var_os("SWARMGATE_SERVER__LISTEN").is_some();
        if let (Some(port), Some(listen), false) = (
            std::env::var_os("AUTH_PORT"),
            &config.server.listen,
            listen_in_env,
        ) {
            let host = listen
                .rsplit_once(':')
                .map_or("127.0.0.1", |(host, _)| host);
            config.server.listen = Some(format!("{host}:{}", port.to_string_lossy().trim()));
        }
        Ok(config)
    }

    /// Checks every value and resolves defaults that depend on others.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let err = |msg: String| Err(ConfigError(msg));
        let listen_text = match (&self.server.listen, self.server.port) {
            (Some(listen), _) => listen.clone(),
            (None, Some(port)) => format!("127.0.0.1:{port}"),
            (None, None) => "127.0.0.1:8005".into(),
        };
        let Ok(listen) = listen_text.parse::<SocketAddr>() else {
            return err(format!(
                "server.listen (SWARMGATE_LISTEN): {listen_text:?} is not HOST:PORT with a numeric IP address"
            ));
        };
        let public_url = match &self.server.public_url {
            Some(url) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return err(format!(
                        "server.public_url: {url:?} must start with http:// or https://"
                    ));
                }
                url.trim_end_matches('/').to_string()
            }
            None => format!("http://{listen}"),
        };
        let db = &self.database.url;
        if !(db.starts_with("sqlite://")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return err(
                "database.url (DATABASE_URL): must be sqlite://PATH or postgres://… ".into(),
            );
        }
        if let Some(url) = &self.redis.url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return err("redis.url (REDIS_URL): must start with redis:// or rediss://".into());
            }
        }
        let Some(algorithm) = Algorithm::parse(&self.tokens.algorithm) else {
            return err(format!(
                "tokens.algorithm (JWT_ALGORITHM): {:?} is not supported; use EdDSA or HS256",
                self.tokens.algorithm
            ));
        };
        let secret = self.tokens.secret_key.clone().filter(|s| !s.0.is_empty());
        if algorithm == Algorithm::HS256 {
            match &secret {
                None => {
                    return err(
                        "tokens.secret_key (JWT_SECRET_KEY): required when the algorithm is HS256"
                            .into(),
                    )
                }
                Some(s) if s.0.len() < 32 => {
                    return err(format!(
                        "tokens.secret_key (JWT_SECRET_KEY): an HS256 secret must be at least 32 bytes, got {}",
                        s.0.len()
                    ))
                }
                Some(_) => {}
            }
        }
        if !(1..=24 * 365).contains(&self.tokens.access_ttl_hours) {
            return err(
                "tokens.access_ttl_hours (JWT_EXPIRATION_HOURS): must be between 1 and 8760".into(),
            );
        }
        if !(1..=3650).contains(&self.tokens.refresh_ttl_days) {
            return err(
                "tokens.refresh_ttl_days (REFRESH_TOKEN_EXPIRATION_DAYS): must be between 1 and 3650"
                    .into(),
            );
        }
        if !(1..=3600).contains(&self.tokens.key_reload_seconds) {
            return err("tokens.key_reload_seconds: must be between 1 and 3600".into());
        }
        if self.tokens.audience.trim().is_empty() {
            return err("tokens.audience: must not be empty".into());
        }
        let s = &self.security;
        for (name, value) in [
            ("security.lockout_threshold", u64::from(s.lockout_threshold)),
            ("security.lockout_window_minutes", s.lockout_window_minutes),
            ("security.lockout_minutes", s.lockout_minutes),
            (
                "security.login_rate_per_minute",
                u64::from(s.login_rate_per_minute),
            ),
            (
                "security.register_rate_per_hour",
                u64::from(s.register_rate_per_hour),
            ),
            (
                "security.argon2_parallelism",
                u64::from(s.argon2_parallelism),
            ),
        ] {
            if value == 0 {
                return err(format!("{name}: must be at least 1"));
            }
        }
        for (name, value) in [
            ("security.lockout_window_minutes", s.lockout_window_minutes),
            ("security.lockout_minutes", s.lockout_minutes),
        ] {
            if value > 7 * 24 * 60 {
                return err(format!("{name}: must be at most 10080 (one week)"));
            }
        }
        if s.argon2_memory_kib > 4 * 1024 * 1024
            || s.argon2_iterations > 100
            || s.argon2_parallelism > 64
        {
            return err("security.argon2_*: values are implausibly large".into());
        }
        if s.argon2_memory_kib < MIN_MEMORY_KIB {
            return err(format!(
                "security.argon2_memory_kib: must be at least {MIN_MEMORY_KIB}"
            ));
        }
        if s.argon2_iterations < MIN_ITERATIONS {
            return err(format!(
                "security.argon2_iterations: must be at least {MIN_ITERATIONS}"
            ));
        }
        let log_json = match self.logging.format.as_str() {
            "json" => true,
            "pretty" => false,
            other => {
                return err(format!(
                    "logging.format (SWARMGATE_LOG_FORMAT): {other:?} is not json or pretty"
                ))
            }
        };
        if let Some(pw) = &self.bootstrap.admin_password {
            if let Err(e) = swarmgate_core::password::check_policy("admin_password", &pw.0) {
                return err(format!(
                    "bootstrap.admin_password (SWARMGATE_ADMIN_PASSWORD): {}",
                    e.message
                ));
            }
        }
        let k = &self.api_keys;
        let prefix_ok = (1..=16).contains(&k.prefix.len())
            && k.prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !prefix_ok {
            return err("api_keys.prefix: 1 to 16 of [A-Za-z0-9_]".into());
        }
        if !(1..=3650).contains(&k.max_expiry_days)
            || !(1..=k.max_expiry_days).contains(&k.default_expiry_days)
        {
            return err(
                "api_keys.default_expiry_days / max_expiry_days: need 1 <= default <= max <= 3650"
                    .into(),
            );
        }
        // Bearer credentials are told apart by prefix: a key prefix that is
        // a prefix of (or starts with) a JWT's "eyJ" or a refresh token's
        // "sgr_" would send those down the wrong path.
        let clashes =
            |other: &str| k.prefix.starts_with(other) || other.starts_with(k.prefix.as_str());
        if k.prefix.len() < 3 || clashes("eyJ") || clashes(crate::identity::REFRESH_TOKEN_PREFIX) {
            return err("api_keys.prefix: at least 3 characters, and not the start of a JWT (eyJ) or a refresh token (sgr_)".into());
        }
        let overrides: BTreeMap<String, Vec<String>> = self
            .roles
            .iter()
            .map(|(name, role)| (name.clone(), role.permissions.clone()))
            .collect();
        let roles = Roles::with_overrides(&overrides).map_err(|e| ConfigError(e.0))?;
        if self.gateway.max_body_bytes == 0 {
            return err("gateway.max_body_bytes: must be at least 1".into());
        }
        let routes = swarmgate_gateway::RouteTable::compile(&self.routes, &self.gateway)
            .map_err(ConfigError)?;
        let models = swarmgate_gateway::ModelTable::compile(&self.models, &self.gateway, |var| {
            std::env::var(var).ok()
        })
        .map_err(ConfigError)?;
        if !(10..=60_000).contains(&self.usage.flush_interval_ms) {
            return err("usage.flush_interval_ms: must be between 10 and 60000".into());
        }
        let metrics_listen = match &self.metrics.listen {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                ConfigError(format!(
                    "metrics.listen: {text:?} is not HOST:PORT with a numeric IP address"
                ))
            })?),
        };
        if self
            .server
            .worker_threads
            .is_some_and(|n| !(1..=1024).contains(&n))
        {
            return err("server.worker_threads: must be between 1 and 1024".into());
        }
        let n = &self.nodes;
        if !(1..=86_400).contains(&n.stale_after_seconds) {
            return err("nodes.stale_after_seconds: must be between 1 and 86400".into());
        }
        if !(1..=7 * 24 * 60).contains(&n.token_ttl_minutes) {
            return err(
                "nodes.token_ttl_minutes (MCP_TOKEN_EXPIRE): must be between 1 and 10080".into(),
            );
        }
        if !(1..=3600).contains(&n.metrics_interval_seconds) {
            return err(
                "nodes.metrics_interval_seconds (MCP_METRICS_INTERVAL): must be between 1 and 3600"
                    .into(),
            );
        }
        let quota = self.quota_settings(&roles)?;
        let anthropic = self.anthropic_profile()?;
        Ok(Settings {
            anthropic: anthropic.map(Arc::new),
            quota: Arc::new(quota),
            node_stale_after: Duration::from_secs(n.stale_after_seconds),
            node_token_ttl: Duration::from_secs(n.token_ttl_minutes * 60),
            metrics_interval: Duration::from_secs(n.metrics_interval_seconds),
            worker_threads: self.server.worker_threads,
            metrics_listen,
            usage_flush: Duration::from_millis(self.usage.flush_interval_ms),
            models: Arc::new(models),
            routes: Arc::new(routes),
            gateway: self.gateway.clone(),
            roles: Arc::new(roles),
            api_key_prefix: k.prefix.clone(),
            api_key_default_days: k.default_expiry_days,
            api_key_max_days: k.max_expiry_days,
            listen,
            public_url,
            database_url: self.database.url.clone(),
            redis_url: self.redis.url.clone(),
            redis_namespace: self.redis.namespace.clone(),
            algorithm,
            secret_key: secret,
            access_ttl_secs: self.tokens.access_ttl_hours as i64 * 3600,
            refresh_ttl_secs: self.tokens.refresh_ttl_days as i64 * 86_400,
            audience: self.tokens.audience.clone(),
            key_reload: Duration::from_secs(self.tokens.key_reload_seconds),
            lockout: LockoutPolicy {
                threshold: s.lockout_threshold,
                window: Duration::from_secs(s.lockout_window_minutes * 60),
                lock_for: Duration::from_secs(s.lockout_minutes * 60),
            },
            login_rate: Rate::per_minute(s.login_rate_per_minute),
            register_rate: Rate::per_hour(s.register_rate_per_hour),
            hash_params: HashParams {
                memory_kib: s.argon2_memory_kib,
                iterations: s.argon2_iterations,
                parallelism: s.argon2_parallelism,
            },
            admin_password: self.bootstrap.admin_password.clone(),
            log_json,
            log_level: self.logging.level.clone(),
        })
    }
}

/// Validated quota and agent settings.
#[derive(Debug, Clone)]
pub struct QuotaSettings {
    pub role_limits: BTreeMap<String, swarmgate_core::LimitSet>,
    pub default_max_tokens: u64,
    pub queue_max_wait: Duration,
    pub slot_lease: Duration,
    pub fail_open: bool,
    pub agent_idle: Duration,
    pub agent_default_ttl: Duration,
    pub agent_max_ttl: Duration,
}

impl Config {
    fn anthropic_profile(&self) -> Result<Option<ProviderProfile>, ConfigError> {
        let a = &self.anthropic;
        let Some(key) = a.api_key.as_ref().filter(|k| !k.0.is_empty()) else {
            return Ok(None);
        };
        let at = |m: String| ConfigError(format!("anthropic: {m}"));
        if !matches!(a.mode.as_str(), "api_key" | "subscription") {
            return Err(at(format!(
                "mode {:?} is neither \"api_key\" nor \"subscription\"",
                a.mode
            )));
        }
        a.limits
            .validate("anthropic.limits")
            .map_err(|e| ConfigError(e.to_string()))?;
        if a.limits.max_agents.is_some() {
            return Err(at("limits.max_agents does not apply to a profile".into()));
        }
        if !(1..=3_600_000).contains(&a.timeout_ms) {
            return Err(at("timeout_ms must be between 1 and 3600000".into()));
        }
        const NAME: &str = "anthropic";
        let upstream = swarmgate_gateway::Model::provider(
            NAME,
            &a.base_url,
            axum::http::HeaderName::from_static("x-api-key"),
            &key.0,
            Duration::from_millis(a.timeout_ms),
            &self.gateway,
        )
        .map_err(|e| {
            at(format!(
                "base_url (ANTHROPIC_BASE_URL / CLAUDE_BASE_URL): {e}"
            ))
        })?;
        Ok(Some(ProviderProfile {
            name: NAME.into(),
            mode: a.mode.clone(),
            upstream,
            limits: a.limits,
        }))
    }

    fn quota_settings(&self, roles: &Roles) -> Result<QuotaSettings, ConfigError> {
        let l = &self.limits;
        for (role, set) in &l.roles {
            if roles.get(role).is_none() {
                return Err(ConfigError(format!(
                    "limits.roles.{role}: there is no role {role:?}"
                )));
            }
            set.validate(&format!("limits.roles.{role}"))
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        if !(1..=1_000_000).contains(&l.default_max_tokens) {
            return Err(ConfigError(
                "limits.default_max_tokens: must be between 1 and 1000000".into(),
            ));
        }
        if l.queue_max_wait_ms > 600_000 {
            return Err(ConfigError(
                "limits.queue_max_wait_ms: must be at most 600000".into(),
            ));
        }
        if !(10..=86_400).contains(&l.slot_lease_seconds) {
            return Err(ConfigError(
                "limits.slot_lease_seconds: must be between 10 and 86400".into(),
            ));
        }
        let fail_open = match l.on_backend_error.as_str() {
            "closed" => false,
            "open" => true,
            other => {
                return Err(ConfigError(format!(
                    "limits.on_backend_error: {other:?} is neither \"closed\" nor \"open\""
                )))
            }
        };
        let a = &self.agents;
        if !(a.idle_minutes > 0.0 && a.idle_minutes <= 7.0 * 24.0 * 60.0) {
            return Err(ConfigError(
                "agents.idle_minutes: must be more than 0 and at most 10080".into(),
            ));
        }
        if !(1..=30 * 86_400).contains(&a.max_ttl_seconds)
            || !(1..=a.max_ttl_seconds).contains(&a.default_ttl_seconds)
        {
            return Err(ConfigError(
                "agents.default_ttl_seconds and agents.max_ttl_seconds: 1 <= default <= max <= 2592000"
                    .into(),
            ));
        }
        Ok(QuotaSettings {
            role_limits: l.roles.clone(),
            default_max_tokens: l.default_max_tokens,
            queue_max_wait: Duration::from_millis(l.queue_max_wait_ms),
            slot_lease: Duration::from_secs(l.slot_lease_seconds),
            fail_open,
            agent_idle: Duration::from_secs_f64(a.idle_minutes * 60.0),
            agent_default_ttl: Duration::from_secs(a.default_ttl_seconds),
            agent_max_ttl: Duration::from_secs(a.max_ttl_seconds),
        })
    }
}

/// Validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quota: Arc<QuotaSettings>,
    pub anthropic: Option<Arc<ProviderProfile>>,
    pub node_stale_after: Duration,
    pub node_token_ttl: Duration,
    pub metrics_interval: Duration,
    pub worker_threads: Option<usize>,
    pub metrics_listen: Option<SocketAddr>,
    pub usage_flush: Duration,
    pub routes: Arc<swarmgate_gateway::RouteTable>,
    pub models: Arc<swarmgate_gateway::ModelTable>,
    pub gateway: swarmgate_gateway::GatewayConfig,
    pub roles: Arc<Roles>,
    pub api_key_prefix: String,
    pub api_key_default_days: u32,
    pub api_key_max_days: u32,
    pub listen: SocketAddr,
    pub public_url: String,
    pub database_url: String,
    pub redis_url: Option<String>,
    pub redis_namespace: String,
    pub algorithm: Algorithm,
    pub secret_key: Option<Secret>,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub audience: String,
    pub key_reload: Duration,
    pub lockout: LockoutPolicy,
    pub login_rate: Rate,
    pub register_rate: Rate,
    pub hash_params: HashParams,
    pub admin_password: Option<Secret>,
    pub log_json: bool,
    pub log_level: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let s = Config::default().resolve().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8005");
        assert_eq!(s.public_url, "http://127.0.0.1:8005");
        assert_eq!(s.algorithm, Algorithm::EdDSA);
        assert_eq!(s.access_ttl_secs, 86_400);
        assert_eq!(s.refresh_ttl_secs, 30 * 86_400);
        assert_eq!(s.lockout.threshold, 5);
        assert_eq!(s.login_rate, Rate::per_minute(5));
    }

    #[test]
    fn listen_wins_over_port() {
        let mut c = Config::default();
        c.server.port = Some(9000);
        assert_eq!(c.resolve().unwrap().listen.to_string(), "127.0.0.1:9000");
        c.server.listen = Some("0.0.0.0:7000".into());
        assert_eq!(c.resolve().unwrap().listen.to_string(), "0.0.0.0:7000");
    }

    #[test]
    fn short_hs256_secret_is_refused_naming_the_setting() {
        let mut c = Config::default();
        c.tokens.algorithm = "HS256".into();
        c.tokens.secret_key = Some(Secret("short".into()));
        let e = c.resolve().unwrap_err().0;
        assert!(
            e.contains("JWT_SECRET_KEY") && e.contains("32 bytes"),
            "{e}"
        );
        c.tokens.secret_key = Some(Secret("x".repeat(32)));
        assert!(c.resolve().is_ok());
    }

    #[test]
    fn config_roles_are_compiled_and_bad_grants_named() {
        let mut c = Config::default();
        c.roles.insert(
            "auditor".into(),
            RoleConfig {
                permissions: vec!["audit.read".into()],
            },
        );
        let s = c.resolve().unwrap();
        assert!(s
            .roles
            .get("auditor")
            .unwrap()
            .grants
            .allows("audit.read", None, "u"));
        assert!(s.roles.get("admin").is_some());
        c.roles.insert(
            "broken".into(),
            RoleConfig {
                permissions: vec!["tasks.**".into()],
            },
        );
        let e = c.resolve().unwrap_err().0;
        assert!(e.contains("roles.broken") && e.contains("tasks.**"), "{e}");
    }

    #[test]
    fn key_prefixes_that_clash_with_other_credentials_are_refused() {
        for bad in ["e", "ey", "eyJ", "eyJx", "sg", "sgr_", "sgr_x", "a!", ""] {
            let mut c = Config::default();
            c.api_keys.prefix = bad.into();
            assert!(c.resolve().is_err(), "{bad:?}");
        }
        let mut c = Config::default();
        c.api_keys.prefix = "swarm_".into();
        assert!(c.resolve().is_ok());
    }

    #[test]
    fn weak_argon2_and_bad_algorithm_are_refused() {
        let mut c = Config::default();
        c.security.argon2_memory_kib = 1024;
        assert!(c.resolve().unwrap_err().0.contains("argon2_memory_kib"));
        let mut c = Config::default();
        c.tokens.algorithm = "none".into();
        assert!(c.resolve().unwrap_err().0.contains("JWT_ALGORITHM"));
    }
}

#[cfg(test)]
mod example_file {
    use figment::providers::{Format, Toml};
    use figment::Figment;

    use super::Config;

    #[test]
    fn the_example_file_parses_and_matches_the_defaults() {
        let text = include_str!("../../../swarmgate.example.toml");
        let parsed: Config = Figment::from(Toml::string(text)).extract().unwrap();
        let from_file = parsed.resolve().unwrap();
        let defaults = Config::default().resolve().unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }
}
