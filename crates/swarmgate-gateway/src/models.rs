//! LLM models reachable through the OpenAI-compatible API: each a pool of
//! upstreams, an optional API key the caller never sees, and the name used
//! in its permission `models.NAME.invoke`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use metrics::Counter;
use serde::Deserialize;

use crate::config::GatewayConfig;
use crate::upstream::UpstreamPool;

/// `[[models]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    pub upstreams: Vec<String>,
    /// Environment variable holding the upstream's API key, if it needs one.
    #[serde(default)]
    pub upstream_api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    300_000
}

pub struct Model {
    pub name: String,
    /// `models.NAME.invoke`, NAME lower-cased, with every character
    /// outside `[a-z0-9_.-]` turned into `-` (`Qwen/Qwen2-7B` becomes
    /// `models.qwen-qwen2-7b.invoke`); worked out once, at start.
    permission: String,
    pub upstreams: Arc<UpstreamPool>,
    /// The header that carries the upstream's API key, if it needs one.
    pub credential: Option<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    /// The route label of its calls' metrics, made once:
    /// `gateway:model:NAME`, or `gateway:provider:NAME` for a provider.
    pub label: Arc<str>,
    /// Its `swarmgate_llm_tokens_total` series (prompt, completion), made
    /// at its first call: the facade's macro would hash the name and the
    /// labels again on every call.
    tokens: OnceLock<(Counter, Counter)>,
}

impl Model {
    pub fn permission(&self) -> &str {
        &self.permission
    }

    /// The prompt and completion token counters of calls to this model.
    pub fn token_counters(&self) -> &(Counter, Counter) {
        self.tokens.get_or_init(|| token_counters(&self.name))
    }

    /// A hosted provider's API as one upstream (`base_url`, `http://` or
    /// `https://`), its key sent in `header`. Its own permission is
    /// unused: calls are allowed by the requested model's name.
    pub fn provider(
        name: &str,
        base_url: &str,
        header: HeaderName,
        key: &str,
        timeout: Duration,
        gateway: &GatewayConfig,
    ) -> Result<Self, String> {
        let upstreams =
            UpstreamPool::from_config(&[base_url.to_string()], gateway, "http(s)://HOST[:PORT]")?;
        let mut value = HeaderValue::from_str(key)
            .map_err(|_| "the API key holds characters not allowed in a header".to_string())?;
        value.set_sensitive(true);
        Ok(Self {
            name: name.to_string(),
            permission: model_permission(name),
            upstreams: Arc::new(upstreams),
            credential: Some((header, value)),
            timeout,
            label: format!("gateway:provider:{name}").into(),
            tokens: OnceLock::new(),
        })
    }
}

/// A provider's API reachable through the gateway with the gateway's key
/// (seed 003's credential profiles).
pub struct ProviderProfile {
    /// `anthropic`: also the scope of its limits (`profile:anthropic`).
    pub name: String,
    /// `api_key` or `subscription`: how the key is paid for.
    pub mode: String,
    pub upstream: Model,
    pub limits: swarmgate_core::LimitSet,
}

impl std::fmt::Debug for ProviderProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderProfile")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

pub struct ModelTable {
    models: Vec<Model>,
}

impl std::fmt::Debug for ModelTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.models.iter().map(|m| &m.name))
            .finish()
    }
}

/// `swarmgate_llm_tokens_total` of `model`: prompt, completion.
pub fn token_counters(model: &str) -> (Counter, Counter) {
    let series = |kind: &'static str| metrics::counter!("swarmgate_llm_tokens_total", "model" => model.to_string(), "kind" => kind);
    (series("prompt"), series("completion"))
}

/// The permission that lets a caller use `model`: `models.NAME.invoke`.
pub fn model_permission(model: &str) -> String {
    format!("models.{}.invoke", permission_name(model))
}

pub fn permission_name(model: &str) -> String {
    let mapped: String = model
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Empty segments (leading, trailing or doubled dots) are not allowed in
    // a permission; fold them away.
    mapped
        .split('.')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

impl ModelTable {
    /// `env` reads an environment variable (a parameter, for tests).
    pub fn compile(
        models: &[ModelConfig],
        gateway: &GatewayConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut compiled = Vec::new();
        for m in models {
            let at = |msg: String| format!("models.{}: {msg}", m.name);
            if m.name.is_empty() || compiled.iter().any(|c: &Model| c.name == m.name) {
                return Err(format!(
                    "models: names must be present and unique ({:?})",
                    m.name
                ));
            }
            let permission_name = permission_name(&m.name);
            if permission_name.is_empty() {
                return Err(at("the name has no letters or digits".into()));
            }
            let upstreams =
                UpstreamPool::from_config(&m.upstreams, gateway, "http://HOST:PORT").map_err(at)?;
            let credential = match &m.upstream_api_key_env {
                None => None,
                Some(var) => {
                    let key = env(var)
                        .ok_or_else(|| at(format!("upstream_api_key_env: {var} is not set")))?;
                    let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                        at(format!("{var} holds characters not allowed in a header"))
                    })?;
                    Some((http::header::AUTHORIZATION, value))
                }
            };
            compiled.push(Model {
                name: m.name.clone(),
                permission: model_permission(&m.name),
                upstreams: Arc::new(upstreams),
                credential,
                timeout: Duration::from_millis(m.timeout_ms.max(1)),
                label: format!("gateway:model:{}", m.name).into(),
                tokens: OnceLock::new(),
            });
        }
        Ok(Self { models: compiled })
    }

    pub fn get(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Model> {
        self.models.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_map_to_permission_segments() {
        assert_eq!(permission_name("phi-3.5-mini"), "phi-3.5-mini");
        assert_eq!(permission_name("Qwen/Qwen2-7B"), "qwen-qwen2-7b");
        assert_eq!(permission_name("a..b."), "a.b");
    }

    #[test]
    fn a_missing_key_variable_is_named() {
        let cfg = ModelConfig {
            name: "m".into(),
            upstreams: vec!["http://127.0.0.1:1".into()],
            upstream_api_key_env: Some("NOPE".into()),
            timeout_ms: 1,
        };
        let e = ModelTable::compile(
            std::slice::from_ref(&cfg),
            &GatewayConfig::default(),
            |_| None,
        )
        .unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
        let t =
            ModelTable::compile(&[cfg], &GatewayConfig::default(), |_| Some("k".into())).unwrap();
        assert_eq!(
            &t.get("m").unwrap().credential.as_ref().unwrap().1,
            "Bearer k"
        );
        assert_eq!(t.get("m").unwrap().permission(), "models.m.invoke");
    }
}
