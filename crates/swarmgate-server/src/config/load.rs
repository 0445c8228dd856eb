//! Reading the configuration: the file, then the seed's environment
//! variables, then `SWARMGATE_<SECTION>__<KEY>`.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;

use super::{Config, ConfigError};

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
        figment = seed_env(figment)?;
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
}

/// The seed's environment variables over `figment`, each checked here so
/// the error names the variable.
fn seed_env(mut figment: Figment) -> Result<Figment, ConfigError> {
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
    Ok(figment)
}
