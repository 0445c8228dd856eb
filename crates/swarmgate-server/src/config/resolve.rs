//! Checking every value of a [`Config`] and resolving what depends on
//! others into [`Settings`]. A bad value is one line naming the setting
//! (and its environment variable) and what is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use swarmgate_core::password::{HashParams, MIN_ITERATIONS, MIN_MEMORY_KIB};
use swarmgate_core::roles::Roles;
use swarmgate_state::{LockoutPolicy, Rate};
use swarmgate_tokens::Algorithm;

use super::{Config, ConfigError, QuotaSettings, Secret, Settings};

type Checked<T> = Result<T, ConfigError>;

fn err<T>(message: impl Into<String>) -> Checked<T> {
    Err(ConfigError(message.into()))
}

/// What `[tokens]` resolves to.
struct Tokens {
    algorithm: Algorithm,
    secret: Option<Secret>,
}

impl Config {
    /// Checks every value and resolves defaults that depend on others.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let (listen, public_url) = self.addresses()?;
        self.check_backends()?;
        let tokens = self.check_tokens()?;
        self.check_security()?;
        self.check_api_keys()?;
        let overrides: BTreeMap<String, Vec<String>> = self
            .roles
            .iter()
            .map(|(name, role)| (name.clone(), role.permissions.clone()))
            .collect();
        let roles = Roles::with_overrides(&overrides).map_err(|e| ConfigError(e.0))?;
        let (routes, models) = self.gateway_tables()?;
        let metrics_listen = self.check_runtime()?;
        self.check_nodes()?;
        let quota = self.quota_settings(&roles)?;
        let anthropic = self.anthropic_profile()?;
        let service = self.service_settings(public_url, tokens, roles, quota, &anthropic);
        Ok(Settings {
            service: Arc::new(service),
            anthropic: anthropic.map(Arc::new),
            routes: Arc::new(routes),
            models: Arc::new(models),
            gateway: self.gateway.clone(),
            listen,
            worker_threads: self.server.worker_threads,
            connections: crate::serve::ConnectionLimits {
                header_timeout: Duration::from_millis(self.server.header_timeout_ms),
                body_timeout: Duration::from_millis(self.server.body_timeout_ms),
                shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
            },
            metrics_listen,
            log_json: self.logging.format == "json",
            log_level: self.logging.level.clone(),
        })
    }

    /// What the services run with, from values already checked.
    fn service_settings(
        &self,
        public_url: String,
        tokens: Tokens,
        roles: Roles,
        quota: QuotaSettings,
        anthropic: &Option<swarmgate_gateway::ProviderProfile>,
    ) -> swarmgate_service::Settings {
        let s = &self.security;
        let n = &self.nodes;
        let k = &self.api_keys;
        swarmgate_service::Settings {
            database_url: self.database.url.clone(),
            redis_url: self.redis.url.clone(),
            redis_namespace: self.redis.namespace.clone(),
            redis_timeout: Duration::from_millis(self.redis.timeout_ms),
            database_timeout: Duration::from_millis(self.database.timeout_ms),
            public_url,
            audience: self.tokens.audience.clone(),
            algorithm: tokens.algorithm,
            secret_key: tokens.secret,
            access_ttl_secs: i64::try_from(self.tokens.access_ttl_hours * 3600).unwrap_or(i64::MAX),
            refresh_ttl_secs: i64::try_from(self.tokens.refresh_ttl_days * 86_400)
                .unwrap_or(i64::MAX),
            key_reload: Duration::from_secs(self.tokens.key_reload_seconds),
            roles: Arc::new(roles),
            api_key_prefix: k.prefix.clone(),
            api_key_default_days: k.default_expiry_days,
            api_key_max_days: k.max_expiry_days,
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
            quota: Arc::new(quota),
            profiles: anthropic
                .iter()
                .map(|p| (p.name.clone(), p.limits))
                .collect(),
            node_stale_after: Duration::from_secs(n.stale_after_seconds),
            node_token_ttl: Duration::from_secs(n.token_ttl_minutes * 60),
            metrics_interval: Duration::from_secs(n.metrics_interval_seconds),
            usage_flush: Duration::from_millis(self.usage.flush_interval_ms),
        }
    }

    /// The address to listen on and the URL clients reach it at.
    fn addresses(&self) -> Checked<(SocketAddr, String)> {
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
        Ok((listen, public_url))
    }

    fn check_backends(&self) -> Checked<()> {
        let db = &self.database.url;
        if !(db.starts_with("sqlite://")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return err("database.url (DATABASE_URL): must be sqlite://PATH or postgres://… ");
        }
        if let Some(url) = &self.redis.url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return err("redis.url (REDIS_URL): must start with redis:// or rediss://");
            }
        }
        if !(10..=60_000).contains(&self.redis.timeout_ms) {
            return err("redis.timeout_ms: must be between 10 and 60000");
        }
        if !(10..=600_000).contains(&self.database.timeout_ms) {
            return err("database.timeout_ms: must be between 10 and 600000");
        }
        Ok(())
    }

    fn check_tokens(&self) -> Checked<Tokens> {
        let t = &self.tokens;
        let Some(algorithm) = Algorithm::parse(&t.algorithm) else {
            return err(format!(
                "tokens.algorithm (JWT_ALGORITHM): {:?} is not supported; use EdDSA or HS256",
                t.algorithm
            ));
        };
        let secret = t.secret_key.clone().filter(|s| !s.0.is_empty());
        if algorithm == Algorithm::HS256 {
            match &secret {
                None => {
                    return err(
                        "tokens.secret_key (JWT_SECRET_KEY): required when the algorithm is HS256",
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
        if !(1..=24 * 365).contains(&t.access_ttl_hours) {
            return err(
                "tokens.access_ttl_hours (JWT_EXPIRATION_HOURS): must be between 1 and 8760",
            );
        }
        if !(1..=3650).contains(&t.refresh_ttl_days) {
            return err(
                "tokens.refresh_ttl_days (REFRESH_TOKEN_EXPIRATION_DAYS): must be between 1 and 3650",
            );
        }
        if !(1..=3600).contains(&t.key_reload_seconds) {
            return err("tokens.key_reload_seconds: must be between 1 and 3600");
        }
        if t.audience.trim().is_empty() {
            return err("tokens.audience: must not be empty");
        }
        Ok(Tokens { algorithm, secret })
    }

    fn check_security(&self) -> Checked<()> {
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
            return err("security.argon2_*: values are implausibly large");
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
        if !matches!(self.logging.format.as_str(), "json" | "pretty") {
            return err(format!(
                "logging.format (SWARMGATE_LOG_FORMAT): {:?} is not json or pretty",
                self.logging.format
            ));
        }
        if let Some(pw) = &self.bootstrap.admin_password {
            if let Err(e) = swarmgate_core::password::check_policy("admin_password", &pw.0) {
                return err(format!(
                    "bootstrap.admin_password (SWARMGATE_ADMIN_PASSWORD): {}",
                    e.message
                ));
            }
        }
        Ok(())
    }

    fn check_api_keys(&self) -> Checked<()> {
        let k = &self.api_keys;
        let prefix_ok = (1..=16).contains(&k.prefix.len())
            && k.prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !prefix_ok {
            return err("api_keys.prefix: 1 to 16 of [A-Za-z0-9_]");
        }
        if !(1..=3650).contains(&k.max_expiry_days)
            || !(1..=k.max_expiry_days).contains(&k.default_expiry_days)
        {
            return err(
                "api_keys.default_expiry_days / max_expiry_days: need 1 <= default <= max <= 3650",
            );
        }
        // Bearer credentials are told apart by prefix: a key prefix that is
        // a prefix of (or starts with) a JWT's "eyJ" or a refresh token's
        // "sgr_" would send those down the wrong path.
        let clashes =
            |other: &str| k.prefix.starts_with(other) || other.starts_with(k.prefix.as_str());
        let refresh = swarmgate_service::identity::REFRESH_TOKEN_PREFIX;
        if k.prefix.len() < 3 || clashes("eyJ") || clashes(refresh) {
            return err("api_keys.prefix: at least 3 characters, and not the start of a JWT (eyJ) or a refresh token (sgr_)");
        }
        Ok(())
    }

    /// The route and model tables; routes may not shadow the server's own
    /// paths.
    fn gateway_tables(
        &self,
    ) -> Checked<(swarmgate_gateway::RouteTable, swarmgate_gateway::ModelTable)> {
        if self.gateway.max_body_bytes == 0 {
            return err("gateway.max_body_bytes: must be at least 1");
        }
        let routes = swarmgate_gateway::RouteTable::compile(
            &self.routes,
            &self.gateway,
            crate::http::OWN_PREFIXES,
        )
        .map_err(ConfigError)?;
        let models = swarmgate_gateway::ModelTable::compile(&self.models, &self.gateway, |var| {
            std::env::var(var).ok()
        })
        .map_err(ConfigError)?;
        Ok((routes, models))
    }

    /// Usage flushes, the metrics listener and serving threads.
    fn check_runtime(&self) -> Checked<Option<SocketAddr>> {
        if !(10..=60_000).contains(&self.usage.flush_interval_ms) {
            return err("usage.flush_interval_ms: must be between 10 and 60000");
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
            return err("server.worker_threads: must be between 1 and 1024");
        }
        for (name, ms) in [
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return err(format!("{name}: must be between 100 and 3600000"));
            }
        }
        if self.server.shutdown_grace_ms > 3_600_000 {
            return err("server.shutdown_grace_ms: must be at most 3600000");
        }
        Ok(metrics_listen)
    }

    fn check_nodes(&self) -> Checked<()> {
        let n = &self.nodes;
        if !(1..=86_400).contains(&n.stale_after_seconds) {
            return err("nodes.stale_after_seconds: must be between 1 and 86400");
        }
        if !(1..=7 * 24 * 60).contains(&n.token_ttl_minutes) {
            return err("nodes.token_ttl_minutes (MCP_TOKEN_EXPIRE): must be between 1 and 10080");
        }
        if !(1..=3600).contains(&n.metrics_interval_seconds) {
            return err(
                "nodes.metrics_interval_seconds (MCP_METRICS_INTERVAL): must be between 1 and 3600",
            );
        }
        Ok(())
    }

    fn anthropic_profile(&self) -> Checked<Option<swarmgate_gateway::ProviderProfile>> {
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
        Ok(Some(swarmgate_gateway::ProviderProfile {
            name: NAME.into(),
            mode: a.mode.clone(),
            upstream,
            limits: a.limits,
        }))
    }

    fn quota_settings(&self, roles: &Roles) -> Checked<QuotaSettings> {
        let l = &self.limits;
        for (role, set) in &l.roles {
            if roles.get(role).is_none() {
                return err(format!("limits.roles.{role}: there is no role {role:?}"));
            }
            set.validate(&format!("limits.roles.{role}"))
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        if !(1..=1_000_000).contains(&l.default_max_tokens) {
            return err("limits.default_max_tokens: must be between 1 and 1000000");
        }
        if l.queue_max_wait_ms > 600_000 {
            return err("limits.queue_max_wait_ms: must be at most 600000");
        }
        if !(10..=86_400).contains(&l.slot_lease_seconds) {
            return err("limits.slot_lease_seconds: must be between 10 and 86400");
        }
        let fail_open = match l.on_backend_error.as_str() {
            "closed" => false,
            "open" => true,
            other => {
                return err(format!(
                    "limits.on_backend_error: {other:?} is neither \"closed\" nor \"open\""
                ))
            }
        };
        let a = &self.agents;
        if !(a.idle_minutes > 0.0 && a.idle_minutes <= 7.0 * 24.0 * 60.0) {
            return err("agents.idle_minutes: must be more than 0 and at most 10080");
        }
        if !(1..=30 * 86_400).contains(&a.max_ttl_seconds)
            || !(1..=a.max_ttl_seconds).contains(&a.default_ttl_seconds)
        {
            return err(
                "agents.default_ttl_seconds and agents.max_ttl_seconds: 1 <= default <= max <= 2592000",
            );
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
